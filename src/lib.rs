//! Ferrocast: a media streaming and transcoding server.
//!
//! The binary (`main.rs`) only wires these parts together; tests use them directly.
//!
//! The modules below are in layers, top to bottom. A module uses only modules in the layers
//! below its own, never one beside it or above it (`tests/layers.rs` holds the code to that,
//! reading this file). A live byte goes down and back up through them: `ingest` (RTMP socket,
//! WHIP handler) → `live` (one session per broadcast) → `pipeline` (GStreamer ladder, or the
//! Rust copy engine) → `packager` (encrypted segments, playlists) → `storage` (S3 or a
//! folder). A key request is decided in `drm::access`, called by `api`.

// -- fuzz targets: every parser of outside bytes, one function each (fuzz/, tests/fuzz_corpora.rs)
pub mod fuzzing;

// -- wiring: the server, its listeners and background tasks
pub mod server;

// -- HTTP: routes and handlers
pub mod api;

// -- the error type handlers answer with, and its extractors
pub mod error;

// -- ingest protocols: RTMP and WHIP publishers in
pub mod ingest;

// -- services: live broadcasts, VOD jobs, viewer analytics, commerce, webhooks out, chat
pub mod analytics;
pub mod chat;
pub mod commerce;
pub mod live;
pub mod vod;
pub mod webhooks;

// -- media engines: GStreamer pipelines and the HLS packager
pub mod packager;
pub mod pipeline;

// -- keys and tokens: content keys, playback tokens, access decisions
pub mod drm;

// -- master keys: the keys that wrap content keys and sign tokens
pub mod keys;

// -- persistence: SQL metadata and object storage
pub mod db;
pub mod storage;

// -- foundations: media formats, configuration, time, ids, connection admission
pub mod admission;
pub mod clock;
pub mod config;
pub mod ids;
pub mod media;
