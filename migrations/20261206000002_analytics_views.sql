-- Viewer analytics: one row per view (a play attempt), written by the aggregator when the
-- view ends and every `analytics.flush_s` while it is open. The metrics are Mux Data's
-- (src/analytics/view.rs); `summary` holds them all as JSON, `events` the player's events
-- (the view's timeline) until `analytics.raw_retention_days` after the view.
CREATE TABLE analytics_views (
    tenant_id              TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id                     TEXT NOT NULL,
    playback_id            TEXT NOT NULL,
    viewer_id              TEXT,
    started_at             BIGINT NOT NULL,
    ended_at               BIGINT NOT NULL,
    finished               BIGINT NOT NULL,
    -- 1 when the viewer asked to play (or a player requested media): what counts as a view.
    play_requested         BIGINT NOT NULL,
    video_startup_time_ms  BIGINT,
    watch_time_ms          BIGINT NOT NULL,
    playing_time_ms        BIGINT NOT NULL,
    rebuffer_count         BIGINT NOT NULL,
    rebuffer_duration_ms   BIGINT NOT NULL,
    exit_before_video_start BIGINT NOT NULL,
    startup_failure        BIGINT NOT NULL,
    playback_failure       BIGINT NOT NULL,
    business_exception     BIGINT NOT NULL,
    -- Time-weighted fractions (0.5 = 50 %) and bits per second.
    upscale                DOUBLE PRECISION NOT NULL,
    downscale              DOUBLE PRECISION NOT NULL,
    max_upscale            DOUBLE PRECISION NOT NULL,
    weighted_bitrate       DOUBLE PRECISION,
    -- VOD: 1 when 90 % was reached; NULL for live.
    completed              BIGINT,
    country                TEXT,
    browser                TEXT NOT NULL,
    os                     TEXT NOT NULL,
    device_type            TEXT NOT NULL,
    player                 TEXT NOT NULL,
    sources                TEXT NOT NULL,
    summary                TEXT NOT NULL,
    events                 TEXT,
    updated_at             BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX analytics_views_by_playback ON analytics_views (tenant_id, playback_id, started_at);
CREATE INDEX analytics_views_by_viewer ON analytics_views (tenant_id, viewer_id);
CREATE INDEX analytics_views_by_end ON analytics_views (ended_at);
CREATE INDEX analytics_views_by_time ON analytics_views (tenant_id, started_at);
