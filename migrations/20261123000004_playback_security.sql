-- Playback security: tenants' token signing keys (public halves only), the key-delivery
-- audit log, viewers' entitlements, and which playback ids need one.

CREATE TABLE signing_keys (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    algorithm   TEXT NOT NULL CHECK (algorithm IN ('RS256', 'ES256')),
    public_key  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX signing_keys_by_tenant ON signing_keys (tenant_id, id);

CREATE TABLE audit_events (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    type         TEXT NOT NULL,
    playback_id  TEXT,
    key_id       TEXT,
    viewer       TEXT,
    client_ip    TEXT,
    result       TEXT NOT NULL CHECK (result IN ('granted', 'denied')),
    reason       TEXT,
    at           BIGINT NOT NULL
);
CREATE INDEX audit_events_by_tenant ON audit_events (tenant_id, type, id);

CREATE TABLE entitlements (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    playback_id  TEXT NOT NULL,
    viewer       TEXT NOT NULL,
    expires_at   BIGINT,
    created_at   BIGINT NOT NULL,
    revoked_at   BIGINT
);
CREATE INDEX entitlements_lookup ON entitlements (playback_id, viewer);
CREATE INDEX entitlements_by_tenant ON entitlements (tenant_id, id);

ALTER TABLE live_streams ADD COLUMN requires_entitlement BIGINT NOT NULL DEFAULT 0;
ALTER TABLE assets ADD COLUMN requires_entitlement BIGINT NOT NULL DEFAULT 0;
