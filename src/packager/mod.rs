//! The packager: Rust between the pipeline and storage. It encrypts segments with AES-128
//! and writes HLS media and master playlists (`crypto` and `playlist` are pure; `output`
//! drives them and hands objects to the bounded `uploader`). No GStreamer here.

pub mod crypto;
pub mod output;
pub mod playlist;
pub mod subtitles;
pub mod uploader;
