-- How a live stream's broadcasts are packaged: 'ts' (MPEG-TS, AES-128) or 'cmaf'
-- (fragmented MP4 with common encryption, HLS and DASH).
ALTER TABLE live_streams ADD COLUMN packaging TEXT NOT NULL DEFAULT 'ts';
