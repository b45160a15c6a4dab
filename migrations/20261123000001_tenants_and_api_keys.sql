-- Tenants own every resource; API keys authenticate them (admin keys have no tenant).
-- Portable SQL: the same file runs on SQLite and PostgreSQL. Times are Unix milliseconds.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT REFERENCES tenants (id) ON DELETE CASCADE,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'tenant')),
    name          TEXT NOT NULL,
    prefix        TEXT NOT NULL,
    secret_hash   TEXT NOT NULL UNIQUE,
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT,
    revoked_at    BIGINT,
    CHECK ((role = 'admin') = (tenant_id IS NULL))
);

CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, id);
