-- Resumable uploads (tus 1.0) and the transcode job queue. Portable SQL (SQLite and
-- PostgreSQL); times are Unix milliseconds.

CREATE TABLE uploads (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    asset_id     TEXT NOT NULL,
    length       BIGINT NOT NULL,
    received     BIGINT NOT NULL,
    -- JSON object of the tus Upload-Metadata pairs (filename, filetype, …).
    metadata     TEXT NOT NULL,
    expires_at   BIGINT NOT NULL,
    completed_at BIGINT,
    created_at   BIGINT NOT NULL
);
CREATE INDEX uploads_by_tenant ON uploads (tenant_id, id);

CREATE TABLE jobs (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    asset_id          TEXT NOT NULL,
    kind              TEXT NOT NULL,
    -- queued → running → done | failed (queued again, later, while attempts remain)
    status            TEXT NOT NULL,
    attempts          BIGINT NOT NULL,
    max_attempts      BIGINT NOT NULL,
    run_after         BIGINT NOT NULL,
    lease_owner       TEXT,
    lease_expires_at  BIGINT,
    -- When the current attempt started.
    started_at        BIGINT,
    -- Per-mille done, so both backends store an integer.
    progress_permille BIGINT NOT NULL,
    error             TEXT,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);
CREATE INDEX jobs_ready ON jobs (status, run_after);
CREATE INDEX jobs_by_asset ON jobs (asset_id);

ALTER TABLE assets ADD COLUMN size_bytes BIGINT;
-- JSON: what probing found (duration, streams, codecs, resolution).
ALTER TABLE assets ADD COLUMN media_info TEXT;
ALTER TABLE assets ADD COLUMN filename TEXT;
-- Ladder preset the asset is transcoded with (pipelines/NAME.toml).
ALTER TABLE assets ADD COLUMN ladder TEXT;
