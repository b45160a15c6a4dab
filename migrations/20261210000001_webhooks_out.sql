-- Webhooks out: a tenant's endpoints, the events its changes committed (a transactional
-- outbox: each is inserted in the transaction of the change it tells), and one delivery per
-- event and subscribed endpoint, retried until delivered or given up.

CREATE TABLE webhook_endpoints (
    id                     TEXT PRIMARY KEY,
    tenant_id              TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    url                    TEXT NOT NULL,
    description            TEXT,
    -- JSON array of event types; ["*"] for all.
    events                 TEXT NOT NULL,
    enabled                BIGINT NOT NULL,
    -- The signing secret, sealed under key-encryption key `kek_id`.
    kek_id                 TEXT NOT NULL,
    secret                 TEXT NOT NULL,
    -- The secret before the last rotation, still signed with until `previous_until`.
    previous_kek_id        TEXT,
    previous_secret        TEXT,
    previous_until         BIGINT,
    -- Since when every attempt has failed (NULL: the last one succeeded).
    failing_since          BIGINT,
    disabled_reason        TEXT,
    created_at             BIGINT NOT NULL,
    updated_at             BIGINT NOT NULL
);
CREATE INDEX webhook_endpoints_by_tenant ON webhook_endpoints (tenant_id, id);

CREATE TABLE outbox_events (
    -- UUIDv7; ties of `seq` go by it.
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    type        TEXT NOT NULL,
    object_id   TEXT NOT NULL,
    -- The event's place among its object's events, taken in the transaction of the change
    -- (which holds the object's row): the order deliveries keep, whatever the nodes' clocks.
    seq         BIGINT NOT NULL,
    -- The object as it was in the transaction (JSON); rendered as the API shows it.
    data        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    -- 1 once a delivery was made for every endpoint subscribed when it was fanned out.
    fanned_out  BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX outbox_events_to_fan_out ON outbox_events (fanned_out, id);
CREATE INDEX outbox_events_by_object ON outbox_events (object_id, seq);

CREATE TABLE webhook_deliveries (
    id               TEXT PRIMARY KEY,
    endpoint_id      TEXT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id         TEXT NOT NULL REFERENCES outbox_events (id) ON DELETE CASCADE,
    tenant_id        TEXT NOT NULL,
    object_id        TEXT NOT NULL,
    event_seq        BIGINT NOT NULL,
    -- pending, delivered or failed (given up; a retry makes it pending again).
    status           TEXT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    -- A node is sending it until then; its outcome is recorded only under the same token.
    lease_until      BIGINT,
    lease_token      TEXT,
    last_attempt_at  BIGINT,
    last_status      BIGINT,
    last_latency_ms  BIGINT,
    last_response    TEXT,
    last_error       TEXT,
    delivered_at     BIGINT,
    created_at       BIGINT NOT NULL,
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_by_object ON webhook_deliveries (endpoint_id, object_id, status, event_seq);
CREATE INDEX webhook_deliveries_by_event ON webhook_deliveries (event_id);
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, id);
