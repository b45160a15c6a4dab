//! Media formats and types, pure Rust over bytes: nothing here does I/O or names GStreamer.
//! Every layer above (ingest, pipeline, packager) shares them.
//!
//! - `flv`: FLV tags, as RTMP carries them and the pipeline reads them.
//! - `sdp`: SDP offers narrowed for WHIP/WHEP, and answers with public addresses.
//! - `isobmff`: the top-level box layout of MP4 files (complete, cut, index missing).
//! - `codec`: parameter sets (avcC, SPS, AudioSpecificConfig) and RFC 6381 codec strings.
//! - `webvtt`: WebVTT files (subtitles, storyboard previews).
//! - `tsmux`, `segmenter`, `pool`: MPEG-TS written in Rust, cut at keyframes into segments
//!   whose buffers are reused.
//! - `tsdemux`, `fmp4`, `cmaf`: those segments read back and re-wrapped as CMAF (fragmented
//!   MP4, one track per file) for HLS and DASH.

pub mod cenc;
pub mod cmaf;
pub mod codec;
pub mod flv;
pub mod fmp4;
pub mod isobmff;
pub mod pool;
pub mod sdp;
pub mod segmenter;
pub mod tsdemux;
pub mod tsmux;
pub mod webvtt;

pub use pool::SegmentBuf;

/// Media bytes that do not parse, and what is wrong with them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

impl From<String> for Malformed {
    fn from(text: String) -> Self {
        Self(text)
    }
}

impl From<&str> for Malformed {
    fn from(text: &str) -> Self {
        Self(text.to_string())
    }
}

/// How an output is packaged for players.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Packaging {
    /// MPEG-TS segments, each encrypted whole with AES-128: HLS for every player.
    #[default]
    Ts,
    /// CMAF (fragmented MP4) with common encryption (cbcs), listed by HLS and DASH from the
    /// same files; keys through the ClearKey licence.
    Cmaf,
    /// Both from one encode: MPEG-TS at the usual URLs, for every player, and CMAF beside
    /// it (`/hls/{playback_id}/cmaf/master.m3u8`, and the DASH manifest).
    Both,
}

impl Packaging {
    /// Whether a CMAF set is written (`cmaf` or `both`).
    pub fn cmaf(self) -> bool {
        self != Packaging::Ts
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Packaging::Ts => "ts",
            Packaging::Cmaf => "cmaf",
            Packaging::Both => "both",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "ts" => Some(Packaging::Ts),
            "cmaf" => Some(Packaging::Cmaf),
            "both" => Some(Packaging::Both),
            _ => None,
        }
    }
}

/// Name of the rendition that copies the source without re-encoding.
pub const SOURCE_RENDITION: &str = "source";

/// A rendition as produced for this source.
#[derive(Debug, Clone, PartialEq)]
pub struct RenditionOut {
    pub name: String,
    pub width: u32,
    pub height: u32,
    /// Target video bitrate of an encoded rendition; `None` for the copied source.
    pub bitrate_kbps: Option<u32>,
    pub frame_rate: Option<f64>,
    /// The source, copied without re-encoding.
    pub passthrough: bool,
}

/// The source as the pipeline sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSummary {
    pub width: u32,
    pub height: u32,
    pub video_codec: String,
    /// `None`: no audio track.
    pub audio_codec: Option<String>,
    /// Frames between keyframes of the encoded renditions.
    pub gop_frames: u32,
}

/// A piece of one rendition's open segment (an LL-HLS part), in clear: the segment that
/// follows is the concatenation of its parts.
#[derive(Debug, Clone)]
pub struct Part {
    pub rendition: String,
    pub bytes: Vec<u8>,
    /// It starts with a keyframe.
    pub independent: bool,
}

/// One finished MPEG-TS segment of one rendition, in clear.
#[derive(Debug, Clone)]
pub struct Segment {
    pub rendition: String,
    pub duration_s: f64,
    pub bytes: SegmentBuf,
}
