//! Ingest: publishers in. RTMP is parsed by a sans-IO connection (`rtmp`), WHIP is a WebRTC
//! session (`whip`); both feed a live broadcast (`live`) the same FLV tags.

pub mod rtmp;
pub mod whip;
