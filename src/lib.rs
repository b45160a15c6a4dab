//! Ferrocast: a media streaming and transcoding server.
//!
//! The binary (`main.rs`) only wires these parts together; tests use them directly.

pub mod api;
pub mod clock;
pub mod config;
pub mod db;
pub mod drm;
pub mod error;
pub mod ingest;
pub mod keys;
pub mod live;
pub mod packager;
pub mod pipeline;
pub mod server;
pub mod storage;
pub mod vod;
