-- 'both' joins 'ts' and 'cmaf' as a live stream's packaging; which common-encryption
-- scheme a CMAF output uses ('cbcs' or 'cenc'); and the same two choices per asset
-- (NULL: the asset's ladder preset decides).
ALTER TABLE live_streams ADD COLUMN cenc_scheme TEXT NOT NULL DEFAULT 'cbcs';
ALTER TABLE assets ADD COLUMN packaging TEXT;
ALTER TABLE assets ADD COLUMN cenc_scheme TEXT;
