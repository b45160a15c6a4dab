//! The packager: Rust between the pipeline and storage. It encrypts segments with AES-128
//! and writes HLS media and master playlists. `hls` is the pure state machine (with `crypto`
//! and `playlist`); `output` drives it, creating content keys and handing its objects to the
//! bounded `uploader`. No GStreamer here.

pub mod cmaf;
pub mod crypto;
pub mod dash;
pub mod hls;
pub mod llhls;
pub mod output;
pub mod playlist;
pub mod subtitles;
pub mod uploader;
