-- Chat moderation: who sent each message (for bans by message), its badges, each stream's
-- chat rules (slow mode, entitled-only, moderators) and its bans and timeouts.

-- `viewer:<id>` for a token's viewer, `address:<hash>` for an anonymous one (a SHA-256 of
-- the stream and the address, /64 for IPv6: the address itself is not kept).
ALTER TABLE chat_messages ADD COLUMN sender TEXT NOT NULL DEFAULT '';
-- `address:<hash>` of the connection it came from, also for a token's viewer: banning a
-- signed-in viewer bans that address from chatting anonymously too.
ALTER TABLE chat_messages ADD COLUMN address TEXT NOT NULL DEFAULT '';
-- Comma-separated: moderator, supporter.
ALTER TABLE chat_messages ADD COLUMN badges TEXT NOT NULL DEFAULT '';
CREATE INDEX chat_messages_by_sender ON chat_messages (live_stream_id, sender);

CREATE TABLE chat_rules (
    live_stream_id  TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- Seconds a viewer waits between messages (0: off).
    slow_mode_s     BIGINT NOT NULL,
    -- 1: only viewers with an entitlement to the stream may write.
    entitled_only   BIGINT NOT NULL,
    -- A JSON array of the viewer ids (tokens' `viewer`) who moderate.
    moderators      TEXT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE TABLE chat_bans (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    live_stream_id  TEXT NOT NULL,
    sender          TEXT NOT NULL,
    -- The address the banned message came from (`address:<hash>`): anonymous connections
    -- from it are banned too.
    address         TEXT NOT NULL,
    -- The name they chatted under, for the list.
    name            TEXT NOT NULL,
    -- NULL: banned; else timed out until then (ms).
    until           BIGINT,
    reason          TEXT,
    created_at      BIGINT NOT NULL,
    UNIQUE (live_stream_id, sender)
);
CREATE INDEX chat_bans_by_address ON chat_bans (live_stream_id, address);
CREATE INDEX chat_messages_by_broadcast_id ON chat_messages (broadcast, id);
