-- What broadcasts that are not recorded leave in storage. A row is made when such a broadcast
-- starts (pending: `delete_after` NULL) and given its time when the broadcast ends: its final
-- playlists (with ENDLIST) and segments stay for `live.ended_retention_s`, so viewers behind
-- the live edge play to the end, then a cleaner deletes them and their content keys. Kept
-- here so that a restart loses no clean-up. No foreign keys: the objects must go even if the
-- stream or its tenant was deleted meanwhile.
CREATE TABLE live_cleanups (
    -- The broadcast's storage prefix (also the scope of its content keys).
    prefix          TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL,
    live_stream_id  TEXT NOT NULL,
    -- Unix milliseconds after which the objects and keys are deleted; NULL while the
    -- broadcast runs or waits for its publisher.
    delete_after    BIGINT
);
CREATE INDEX live_cleanups_due ON live_cleanups (delete_after);

-- Broadcasts that ended before this table existed were deleted at once: their streams have
-- nothing left to play.
UPDATE live_streams SET current_prefix = NULL
WHERE status = 'idle' AND record = 0 AND current_prefix IS NOT NULL
  AND current_prefix NOT IN (SELECT storage_prefix FROM assets);
