-- Live: the median latency a view's player reported (its clock, corrected by the view's
-- clock skew, less the playhead's EXT-X-PROGRAM-DATE-TIME).
ALTER TABLE analytics_views ADD COLUMN live_latency_ms BIGINT;

-- Per-minute roll-ups of views: one row per (tenant, minute the views started in, playback
-- id, dimension values), with sums from which every metric but the startup-time percentiles
-- is computed (src/analytics/rollup.rs). The aggregator adds each view's change in the same
-- transaction that writes the view, so a view flushed many times counts once. Metric queries
-- read these rows, never the events. On SQLite, Db::connect adds a covering index of every
-- column (src/db/analytics.rs: PostgreSQL allows 32 columns in an index, and does not need it).
CREATE TABLE analytics_minutes (
    tenant_id                TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    minute                   BIGINT NOT NULL,
    playback_id              TEXT NOT NULL,
    -- '' when unknown.
    country                  TEXT NOT NULL,
    browser                  TEXT NOT NULL,
    os                       TEXT NOT NULL,
    device_type              TEXT NOT NULL,
    player                   TEXT NOT NULL,
    sources                  TEXT NOT NULL,
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
    -- Sums of a view's value × its playing time in ms.
    upscale_ms               DOUBLE PRECISION NOT NULL,
    downscale_ms             DOUBLE PRECISION NOT NULL,
    bitrate_playing_ms       BIGINT NOT NULL,
    bitrate_ms               DOUBLE PRECISION NOT NULL,
    -- Sums of the views' scores, and how many views have each.
    startup_score            DOUBLE PRECISION NOT NULL,
    smoothness_score         DOUBLE PRECISION NOT NULL,
    quality_score            DOUBLE PRECISION NOT NULL,
    success_score            DOUBLE PRECISION NOT NULL,
    scored_views             BIGINT NOT NULL,
    experience_score         DOUBLE PRECISION NOT NULL,
    -- Live views that reported a latency, and the sum of their latencies.
    latency_views            BIGINT NOT NULL,
    live_latency_ms          BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, minute, playback_id, country, browser, os, device_type, player, sources)
);
