-- A price's tier on what it grants: an entitlement from an SD price plays renditions up to
-- its lines (360 for "360p"); NULL plays every rendition.
ALTER TABLE entitlements ADD COLUMN max_lines BIGINT;

-- When the provider said the subscription's status (its event's time): an older event that
-- arrives later does not undo a newer status (an old "active" after "unpaid").
ALTER TABLE subscriptions ADD COLUMN status_at BIGINT;

-- A checkout that gives an email buys as the tenant's customer with that email, if any.
CREATE INDEX customers_by_email ON customers (tenant_id, lower(email));

-- Idempotency-Key on creates: the first answer to a (credential, key) is kept 24 h and
-- replayed for the same request; `response_status` is NULL while the first is in flight.
CREATE TABLE idempotency_keys (
    -- SHA-256 of the credential (API or publishable key) that sent it, hex.
    scope            TEXT NOT NULL,
    key              TEXT NOT NULL,
    -- SHA-256 of method, path and body, hex.
    request_hash     TEXT NOT NULL,
    response_status  BIGINT,
    content_type     TEXT,
    location         TEXT,
    body             BYTEA,
    created_at       BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);

-- A tenant's API rate-limit tier (free, starter, pro, enterprise); NULL: the configured
-- default (rate_limits.default_tier).
ALTER TABLE tenants ADD COLUMN tier TEXT;

-- API rate-limit token buckets shared by every node, used with PostgreSQL (with SQLite each
-- node counts in memory).
CREATE TABLE rate_buckets (
    key         TEXT PRIMARY KEY,
    tokens      DOUBLE PRECISION NOT NULL,
    -- The bucket's size when last used: a larger tier credits the difference at once.
    capacity    DOUBLE PRECISION NOT NULL,
    updated_at  BIGINT NOT NULL,
    -- Whether the last request took a token (1) or was refused (0).
    last_ok     BIGINT NOT NULL
);
