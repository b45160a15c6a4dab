//! Ingest: network protocols in, elementary streams out. RTMP is parsed by a sans-IO
//! connection (`rtmp`), and its audio/video payloads become an FLV stream (`flv`) for the
//! pipeline.

pub mod rtmp;
