-- A view's events, packed (src/analytics/timeline.rs): about a tenth of their JSON. Views
-- written before this keep their JSON in `events`, read until it is pruned; views written
-- from now on leave `events` NULL. BYTEA has no special meaning to SQLite, which stores
-- the bytes as a BLOB.
ALTER TABLE analytics_views ADD COLUMN timeline BYTEA;

-- Key fetch time: the part of a view's startup spent fetching keys or licences
-- (src/analytics/view.rs), per view and summed in the roll-ups.
ALTER TABLE analytics_views ADD COLUMN key_fetch_time_ms BIGINT;
ALTER TABLE analytics_minutes ADD COLUMN key_views BIGINT NOT NULL DEFAULT 0;
ALTER TABLE analytics_minutes ADD COLUMN key_fetch_time_ms BIGINT NOT NULL DEFAULT 0;

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
