-- A price's tier on what it grants: an entitlement from an SD price plays renditions up to
-- its lines (360 for "360p"); NULL plays every rendition.
ALTER TABLE entitlements ADD COLUMN max_lines BIGINT;
