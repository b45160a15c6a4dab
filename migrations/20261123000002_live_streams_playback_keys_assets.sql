-- Live streams, the assets their recordings become, playback ids that name what a viewer
-- may play, and content keys (stored wrapped, never in clear). Portable SQL (SQLite and
-- PostgreSQL); times are Unix milliseconds; binary values are base64 TEXT.

CREATE TABLE live_streams (
    id                  TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    stream_key          TEXT NOT NULL UNIQUE,
    playback_id         TEXT NOT NULL UNIQUE,
    ladder              TEXT NOT NULL,
    playback_policy     TEXT NOT NULL CHECK (playback_policy IN ('public', 'signed')),
    reconnect_window_s  BIGINT NOT NULL,
    record              BIGINT NOT NULL CHECK (record IN (0, 1)),
    status              TEXT NOT NULL CHECK (status IN ('idle', 'active')),
    -- Storage prefix of the current (or last) broadcast's HLS output.
    current_prefix      TEXT,
    -- JSON: codec, resolution, fps, bitrate and renditions of the current ingest.
    ingest              TEXT,
    last_error          TEXT,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
);
CREATE INDEX live_streams_by_tenant ON live_streams (tenant_id, id);

CREATE TABLE assets (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    source           TEXT NOT NULL CHECK (source IN ('live', 'upload')),
    live_stream_id   TEXT,
    playback_id      TEXT NOT NULL UNIQUE,
    playback_policy  TEXT NOT NULL CHECK (playback_policy IN ('public', 'signed')),
    status           TEXT NOT NULL,
    storage_prefix   TEXT NOT NULL,
    duration_ms      BIGINT,
    error            TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX assets_by_tenant ON assets (tenant_id, id);

CREATE TABLE content_keys (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- What the key encrypts: a live broadcast's storage prefix (shared by its recording).
    scope       TEXT NOT NULL,
    -- AES-256-GCM(KEK, key): base64 of nonce || ciphertext || tag.
    wrapped     TEXT NOT NULL,
    kek_id      TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX content_keys_by_scope ON content_keys (scope);
