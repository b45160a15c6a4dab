-- A view's events, packed (src/analytics/timeline.rs): about a tenth of their JSON. Views
-- written before this keep their JSON in `events`, read until it is pruned; views written
-- from now on leave `events` NULL. BYTEA has no special meaning to SQLite, which stores
-- the bytes as a BLOB.
ALTER TABLE analytics_views ADD COLUMN timeline BYTEA;

-- Key fetch time: the part of a view's startup spent fetching keys or licences
-- (src/analytics/view.rs), per view and summed in the roll-ups.
ALTER TABLE analytics_views ADD COLUMN key_fetch_time_ms BIGINT;
-- The roll-ups gain the key fetch sums and a dimension, the rendition a view played longest
-- ('' when unknown; older rows keep ''). A new dimension is part of the primary key, so the
-- table is made again and its rows copied (SQLite cannot change a primary key in place).
CREATE TABLE analytics_minutes_new (
    tenant_id                TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    minute                   BIGINT NOT NULL,
    playback_id              TEXT NOT NULL,
    country                  TEXT NOT NULL,
    browser                  TEXT NOT NULL,
    os                       TEXT NOT NULL,
    device_type              TEXT NOT NULL,
    player                   TEXT NOT NULL,
    sources                  TEXT NOT NULL,
    rendition                TEXT NOT NULL,
    views                    BIGINT NOT NULL,
    started_views            BIGINT NOT NULL,
    startup_time_ms          BIGINT NOT NULL,
    watch_time_ms            BIGINT NOT NULL,
    playing_time_ms          BIGINT NOT NULL,
    rebuffer_count           BIGINT NOT NULL,
    rebuffer_duration_ms     BIGINT NOT NULL,
    exits_before_video_start BIGINT NOT NULL,
    startup_failures         BIGINT NOT NULL,
    playback_failures        BIGINT NOT NULL,
    business_exceptions      BIGINT NOT NULL,
    vod_views                BIGINT NOT NULL,
    completed_views          BIGINT NOT NULL,
    upscale_ms               DOUBLE PRECISION NOT NULL,
    downscale_ms             DOUBLE PRECISION NOT NULL,
    bitrate_playing_ms       BIGINT NOT NULL,
    bitrate_ms               DOUBLE PRECISION NOT NULL,
    startup_score            DOUBLE PRECISION NOT NULL,
    smoothness_score         DOUBLE PRECISION NOT NULL,
    quality_score            DOUBLE PRECISION NOT NULL,
    success_score            DOUBLE PRECISION NOT NULL,
    scored_views             BIGINT NOT NULL,
    experience_score         DOUBLE PRECISION NOT NULL,
    latency_views            BIGINT NOT NULL,
    live_latency_ms          BIGINT NOT NULL,
    -- Started views that fetched a key before their first frame, and their key fetch times.
    key_views                BIGINT NOT NULL,
    key_fetch_time_ms        BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, minute, playback_id, country, browser, os, device_type, player,
                 sources, rendition)
);
INSERT INTO analytics_minutes_new (tenant_id, minute, playback_id, country, browser, os, device_type, player, sources, views, started_views, startup_time_ms, watch_time_ms, playing_time_ms, rebuffer_count, rebuffer_duration_ms, exits_before_video_start, startup_failures, playback_failures, business_exceptions, vod_views, completed_views, upscale_ms, downscale_ms, bitrate_playing_ms, bitrate_ms, startup_score, smoothness_score, quality_score, success_score, scored_views, experience_score, latency_views, live_latency_ms, rendition, key_views, key_fetch_time_ms)
SELECT tenant_id, minute, playback_id, country, browser, os, device_type, player, sources, views, started_views, startup_time_ms, watch_time_ms, playing_time_ms, rebuffer_count, rebuffer_duration_ms, exits_before_video_start, startup_failures, playback_failures, business_exceptions, vod_views, completed_views, upscale_ms, downscale_ms, bitrate_playing_ms, bitrate_ms, startup_score, smoothness_score, quality_score, success_score, scored_views, experience_score, latency_views, live_latency_ms, '', 0, 0 FROM analytics_minutes;
DROP TABLE analytics_minutes;
ALTER TABLE analytics_minutes_new RENAME TO analytics_minutes;
ALTER TABLE analytics_views ADD COLUMN rendition TEXT NOT NULL DEFAULT '';

-- Peak concurrent viewers per minute, per playback id and (playback_id '') per tenant: the
-- largest count of the aggregator's samples (every `analytics.flush_s`) within the minute.
CREATE TABLE analytics_concurrency (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    minute      BIGINT NOT NULL,
    playback_id TEXT NOT NULL,
    peak        BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, playback_id, minute)
);

-- Audience retention: the percents of a VOD asset each view played (a 100-bit set, 16
-- bytes), summed over an asset's views for its retention curve.
ALTER TABLE analytics_views ADD COLUMN watched BYTEA;
