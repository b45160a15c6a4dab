-- Live chat: the messages of each live stream, kept with the wall clock they were sent at
-- (the clock of the broadcast's EXT-X-PROGRAM-DATE-TIME, so a recording can replay them in
-- step) and the broadcast they were sent during.
CREATE TABLE chat_messages (
    -- UUIDv7: in sending order.
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    live_stream_id  TEXT NOT NULL,
    -- The broadcast's storage prefix (its recording's too), if one was live.
    broadcast       TEXT,
    -- Who sent it: the token's viewer, or `anon:` and a random id.
    viewer          TEXT NOT NULL,
    name            TEXT NOT NULL,
    color           TEXT NOT NULL,
    text            TEXT NOT NULL,
    at              BIGINT NOT NULL,
    -- Hidden by the creator or a moderator: no longer shown to anyone.
    hidden_at       BIGINT
);
CREATE INDEX chat_messages_by_stream ON chat_messages (live_stream_id, id);
CREATE INDEX chat_messages_by_broadcast ON chat_messages (broadcast, at);
