-- Dashboard sign-ins: a session made from a tenant API key, held by an HttpOnly cookie.
-- It lasts as long as its key (revoking the key ends it) and at most `expires_at`.
CREATE TABLE dashboard_sessions (
    -- SHA-256 of the cookie's secret, hex: the secret itself is never stored.
    id_hash     TEXT PRIMARY KEY,
    api_key_id  TEXT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    -- The token a page sends back in X-CSRF-Token (or a form's csrf field) with every change.
    csrf        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX dashboard_sessions_by_expiry ON dashboard_sessions (expires_at);
