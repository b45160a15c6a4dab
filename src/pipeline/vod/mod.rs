//! VOD: local media file -> the same in-memory MPEG-TS HLS segments as the live ladder
//! (`ladder.rs`), plus an optional faststart MP4 download, a JPEG poster and a storyboard
//! sprite, on GStreamer 1.22.
//!
//! Topology (everything is built before PLAYING because [`probe`] already told us the streams;
//! only the parsebin/decodebin pads are linked dynamically):
//!
//! ```text
//! filesrc ! parsebin
//!   parsebin.video ! queue(10 s) [! tee ctee]                          first video stream only
//!     ctee ! queue ! h264parse(config-interval=-1) ! byte-stream,au [! tee] ! hlssink2 hls-source
//!     ctee ! queue ! decodebin ! videoconvert ! videorate ! videoflip(auto) ! videoscale
//!          ! video/x-raw,I420,WxH,par=1/1,framerate=F ! tee rawtee
//!   rawtee ! queue ! x264enc ! video/x-h264,profile ! [tee !] queue ! hlssink2 hls-720p
//!   rawtee ! queue ! videoscale ! WxH ! tee t480 ; t480 ! queue ! x264enc ... ! hlssink2 hls-480p
//!   t480   ! queue ! videoscale ! WxH ! tee t360 ; ...   (chained like the live ladder)
//!   parsebin.audio ! queue(10 s) ! decodebin ! audioconvert ! audioresample
//!          ! audio/x-raw,channels=[1,2] ! avenc_aac ! aacparse ! tee atee
//!   atee ! queue ! hls-*.audio                              (one AAC encode, muxed everywhere)
//!   <mp4 rung tee> ! queue ! h264parse ! mp4mux(faststart) ! filesink ; atee ! queue ! mp4mux
//!   <smallest rung tee> ! queue [frames at tile times only] ! videoscale ! RGBx ! appsink
//!                                                    (storyboard tiles: no second decode)
//!   other parsebin pads (subtitles, 2nd audio, data) ! fakesink
//! ```
//! Audio-only inputs get one rendition named [`AUDIO_RENDITION`] (hlssink2 with only its audio
//! pad: splitmuxsink then splits on time, every AAC frame being a key unit).
//!
//! The pipeline has no clock (`use_clock(None)`), so no sink synchronises: it runs as fast as
//! the CPUs allow. Memory is bounded: raw queues hold 4 frames, compressed queues 10 s, and
//! `get-fragment-stream` blocks while a rendition already has [`MAX_PENDING_FRAGMENTS`] in-memory
//! fragments not yet handed to the event consumer, which back-pressures the whole pipeline.
//!
//!
//! One file per job: `probe`, `plan` (pure), `transcode`, `thumbnail`, `storyboard`, `webm`.

mod plan;
mod probe;
mod storyboard;
mod thumbnail;
mod transcode;
mod webm;

use std::time::Duration;

pub use plan::{Mp4Source, Mp4Spec, TranscodeSpec, VodEvent};
pub use probe::{AudioInfo, Probe, ProbeError, VideoInfo, hms, probe};
pub use storyboard::{MAX_STORYBOARD_TILES, Storyboard, StoryboardSpec, storyboard_vtt};
pub use thumbnail::thumbnail;
pub use transcode::transcode;
pub use webm::webm;

use plan::*;
use probe::*;
use storyboard::*;

/// Name of the single rendition produced for inputs without video.
pub const AUDIO_RENDITION: &str = "audio";

/// In-memory fragments per rendition that may exist before the consumer took them (the open
/// one included). 2 is the minimum that cannot deadlock; 3 leaves slack for bus latency.
pub const MAX_PENDING_FRAGMENTS: usize = 3;

/// A stream counts as complete when data reaches within this of the container's duration
/// (container durations and last-frame ends legitimately differ by a frame or an AAC packet).
const TAIL_TOLERANCE: Duration = Duration::from_secs(1);

/// Highest output frame rate; faster sources (slow-motion phone clips) are decimated.
const MAX_FPS: f64 = 60.0;

/// No progress and no segment for this long = stalled pipeline (reported as an error).
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a VOD pipeline (transcode, thumbnail, storyboard, WebM) failed; the text is what an
/// asset's `error` says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VodError {
    /// The job was cancelled (its lease lost, a storage write failed).
    #[error("cancelled")]
    Cancelled,
    /// The job stopped reading the transcode's events.
    #[error("event receiver dropped")]
    ReceiverGone,
    #[error("stalled: no progress for {0}s")]
    Stalled(u64),
    #[error("{0}")]
    Failed(String),
}

impl From<String> for VodError {
    fn from(text: String) -> Self {
        Self::Failed(text)
    }
}

impl From<&str> for VodError {
    fn from(text: &str) -> Self {
        Self::Failed(text.to_string())
    }
}

impl From<crate::pipeline::gst::GstError> for VodError {
    fn from(e: crate::pipeline::gst::GstError) -> Self {
        Self::Failed(e.0)
    }
}

/// A GStreamer failure as the text VOD errors carry.
fn gerr(e: impl std::fmt::Display) -> String {
    format!("gstreamer: {e}")
}
