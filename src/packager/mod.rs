//! The packager: pure Rust between the pipeline and storage. It encrypts segments with
//! AES-128 and writes HLS media and master playlists. No sockets, files or GStreamer here.

pub mod crypto;
pub mod playlist;
