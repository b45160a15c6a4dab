-- Ended broadcasts that are not kept as recordings: their final playlists (with ENDLIST) and
-- segments stay for `live.ended_retention_s` so viewers behind the live edge play to the end,
-- then a cleaner deletes them. Kept here so that a restart loses no clean-up. No foreign keys:
-- the objects must go even if the stream or its tenant was deleted meanwhile.
CREATE TABLE live_cleanups (
    -- The broadcast's storage prefix (also the scope of its content keys).
    prefix          TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL,
    live_stream_id  TEXT NOT NULL,
    -- Unix milliseconds after which the objects and keys are deleted.
    delete_after    BIGINT NOT NULL
);
CREATE INDEX live_cleanups_due ON live_cleanups (delete_after);
