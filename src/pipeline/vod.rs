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
//! Why one file (about 2,200 lines): none good. It holds six jobs (probe, plan, transcode,
//! thumbnail, storyboard, WebM) that issue #20 splits into `pipeline/vod/`, one file each, with
//! its pure parts (ISO-BMFF scanning, the plan, WebVTT) unit-tested apart. Not done yet.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_pbutils::prelude::*;
use gstreamer as gst;
use gstreamer_app as gst_app;
use gstreamer_pbutils as gst_pbutils;

use super::ladder::{self, Rendition, Tuning};
use crate::media::{SOURCE_RENDITION, Segment};

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

// ---------------------------------------------------------------------------------------------
// probe

#[derive(Clone, Debug, PartialEq)]
pub struct VideoInfo {
    /// Short codec name: h264, h265, vp8, vp9, av1, mpeg2, ...
    pub codec: String,
    /// Display size: coded size corrected for pixel aspect ratio and for a 90/270 degree
    /// rotation tag, i.e. what the transcode outputs (and what `plan()` is given).
    pub width: u32,
    pub height: u32,
    /// Average frame rate; None when the container does not say (variable rate).
    pub fps: Option<f64>,
    /// Clockwise rotation from the container (0, 90, 180, 270); applied when transcoding.
    pub rotation: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AudioInfo {
    /// Short codec name: aac, mp3, opus, vorbis, flac, ac3, pcm, ...
    pub codec: String,
    pub channels: u32,
    pub rate: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Probe {
    pub duration_s: f64,
    pub video: Option<VideoInfo>,
    pub audio: Option<AudioInfo>,
    /// mp4, mov, m4a, mkv, webm, avi, ts, flv, ogg, ... or the codec for bare streams (mp3).
    pub container: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ProbeError {
    /// Unrecognised or empty file; the detail says which.
    NotMedia(String),
    /// A container without any audio or video stream.
    NoStreams,
    /// Data ends before the container says the media ends. `index_missing`: an MP4/MOV
    /// whose moov atom (the sample index, written last by most encoders) is absent, so
    /// nothing at all is playable.
    Truncated {
        at_s: f64,
        index_missing: bool,
    },
    /// No decoder installed for this codec.
    UnsupportedCodec(String),
    /// Recognised, but the demuxer/decoder failed (damaged file).
    Corrupt(String),
    Timeout(Duration),
    Io(String),
}

/// `HH:MM:SS`, truncated (a file that ends at 72.9 s is "truncated at 00:01:12").
pub fn hms(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeError::NotMedia(d) => write!(f, "not a media file ({d})"),
            ProbeError::NoStreams => write!(f, "no video or audio stream found"),
            ProbeError::Truncated {
                at_s,
                index_missing: false,
            } => write!(f, "file truncated at {}", hms(*at_s)),
            ProbeError::Truncated {
                at_s,
                index_missing: true,
            } => write!(
                f,
                "file truncated at {} (the MP4 index is missing, nothing is playable)",
                hms(*at_s)
            ),
            ProbeError::UnsupportedCodec(c) => write!(f, "unsupported codec {c}"),
            ProbeError::Corrupt(d) => write!(f, "damaged media file ({d})"),
            ProbeError::Timeout(t) => write!(f, "probe timed out after {t:?}"),
            ProbeError::Io(d) => write!(f, "cannot read file: {d}"),
        }
    }
}
impl std::error::Error for ProbeError {}

/// Inspects a local file: streams and duration via GStreamer's Discoverer, then a truncation
/// check (see [`check_truncation`]). Bounded by `timeout` as a whole (Discoverer's own timeout
/// plus the truncation check's deadline).
pub fn probe(path: &Path, timeout: Duration) -> Result<Probe, ProbeError> {
    let deadline = Instant::now() + timeout;
    let meta = std::fs::metadata(path).map_err(|e| ProbeError::Io(e.to_string()))?;
    if !meta.is_file() {
        return Err(ProbeError::Io("not a regular file".into()));
    }
    if meta.len() == 0 {
        return Err(ProbeError::NotMedia("the file is empty".into()));
    }
    // Must run before the Discoverer: qtdemux waits for a moov that never comes, so a
    // cut-off MP4 without its index would otherwise only end with the Discoverer timeout.
    let bmff = isobmff_scan(path, meta.len()).map_err(|e| ProbeError::Io(e.to_string()))?;
    if bmff == Bmff::MoovMissing {
        return Err(ProbeError::Truncated {
            at_s: 0.0,
            index_missing: true,
        });
    }
    gst::init().map_err(|e| ProbeError::Io(format!("gstreamer init: {e}")))?;
    let uri = file_uri(path).map_err(ProbeError::Io)?;
    let (info, err) = discover(&uri, timeout)?;
    use gst_pbutils::DiscovererResult as R;
    match info.result() {
        R::Ok => {}
        R::Timeout => return Err(ProbeError::Timeout(timeout)),
        R::MissingPlugins => {
            return Err(ProbeError::UnsupportedCodec(missing_codec(&info)));
        }
        _ => return Err(classify_error(err)),
    }
    let p = probe_from_info(&info);
    if p.video.is_none() && p.audio.is_none() {
        return Err(ProbeError::NoStreams);
    }
    check_truncation(path, &p, bmff == Bmff::BoxCut, deadline, timeout)?;
    Ok(p)
}

fn file_uri(path: &Path) -> Result<String, String> {
    let abs = std::fs::canonicalize(path).map_err(|e| e.to_string())?;
    glib::filename_to_uri(&abs, None)
        .map(|u| u.to_string())
        .map_err(|e| e.to_string())
}

/// Runs the Discoverer asynchronously on a private main context: the synchronous
/// `discover_uri` binding drops the `DiscovererInfo` when there is an error, and with it the
/// missing-plugin details that name the unsupported codec.
fn discover(
    uri: &str,
    timeout: Duration,
) -> Result<(gst_pbutils::DiscovererInfo, Option<glib::Error>), ProbeError> {
    type Slot = Arc<Mutex<Option<(gst_pbutils::DiscovererInfo, Option<glib::Error>)>>>;
    let ctx = glib::MainContext::new();
    let res = ctx.with_thread_default(|| {
        let d =
            gst_pbutils::Discoverer::new(gst::ClockTime::from_nseconds(timeout.as_nanos() as u64))
                .map_err(|e| ProbeError::Io(format!("discoverer: {e}")))?;
        let slot: Slot = Arc::default();
        let s = slot.clone();
        d.connect_discovered(move |_, info, err| {
            *s.lock().unwrap() = Some((info.clone(), err.cloned()));
        });
        d.start();
        d.discover_uri_async(uri)
            .map_err(|e| ProbeError::Io(format!("discoverer: {e}")))?;
        // The Discoverer's own timeout fires on this context; the extra margin only guards
        // against it never firing.
        let expired = Arc::new(AtomicBool::new(false));
        let e = expired.clone();
        let guard = glib::timeout_source_new(
            timeout + Duration::from_secs(5),
            None,
            glib::Priority::DEFAULT,
            move || {
                e.store(true, Ordering::SeqCst);
                glib::ControlFlow::Break
            },
        );
        guard.attach(Some(&ctx));
        while slot.lock().unwrap().is_none() && !expired.load(Ordering::SeqCst) {
            ctx.iteration(true);
        }
        guard.destroy();
        d.stop();
        let r = slot.lock().unwrap().take();
        r.ok_or(ProbeError::Timeout(timeout))
    });
    res.map_err(|e| ProbeError::Io(format!("main context: {e}")))?
}

fn classify_error(err: Option<glib::Error>) -> ProbeError {
    let Some(e) = err else {
        return ProbeError::Corrupt("unknown error".into());
    };
    match e.kind::<gst::StreamError>() {
        Some(gst::StreamError::TypeNotFound) | Some(gst::StreamError::WrongType) => {
            ProbeError::NotMedia(e.message().to_string())
        }
        Some(gst::StreamError::CodecNotFound) => {
            ProbeError::UnsupportedCodec(e.message().to_string())
        }
        _ => ProbeError::Corrupt(e.message().to_string()),
    }
}

/// Installer detail strings look like `gstreamer|1.0|app|Snow decoder|decoder-video/x-snow`;
/// the caps at the end give a short codec name, the description a readable one.
fn missing_codec(info: &gst_pbutils::DiscovererInfo) -> String {
    let details = info.missing_elements_installer_details();
    let names: Vec<String> = details
        .iter()
        .map(|d| {
            let fields: Vec<&str> = d.split('|').collect();
            let caps = fields
                .get(4)
                .and_then(|f| f.split_once('-').map(|(_, c)| c))
                .and_then(|c| gst::Caps::from_str(c).ok());
            match caps {
                Some(c) => codec_name(&c),
                None => fields.get(3).unwrap_or(&"unknown").to_string(),
            }
        })
        .collect();
    if names.is_empty() {
        "unknown".into()
    } else {
        names.join(", ")
    }
}

/// Short codec name from caps (what `ffprobe` would call it).
fn codec_name(caps: &gst::CapsRef) -> String {
    let Some(s) = caps.structure(0) else {
        return "unknown".into();
    };
    let n = s.name().as_str();
    let ver = s.get::<i32>("mpegversion").ok();
    let simple = match n {
        "video/x-h264" => "h264",
        "video/x-h265" => "h265",
        "video/x-vp8" => "vp8",
        "video/x-vp9" => "vp9",
        "video/x-av1" => "av1",
        "video/x-theora" => "theora",
        "video/x-prores" => "prores",
        "video/mpeg" => match ver {
            Some(1) => "mpeg1",
            Some(2) => "mpeg2",
            Some(4) => "mpeg4",
            _ => "mpeg",
        },
        "audio/mpeg" => match ver {
            Some(2) | Some(4) => "aac",
            _ => match s.get::<i32>("layer").ok() {
                Some(2) => "mp2",
                _ => "mp3",
            },
        },
        "audio/x-opus" => "opus",
        "audio/x-vorbis" => "vorbis",
        "audio/x-flac" => "flac",
        "audio/x-ac3" => "ac3",
        "audio/x-eac3" => "eac3",
        "audio/x-alac" => "alac",
        "audio/x-raw" => "pcm",
        _ => "",
    };
    if !simple.is_empty() {
        return simple.into();
    }
    // matroskademux: video/x-unknown, codec-id=V_SNOW
    if let Ok(id) = s.get::<&str>("codec-id") {
        let id = id
            .strip_prefix("V_")
            .or_else(|| id.strip_prefix("A_"))
            .unwrap_or(id);
        return id.to_lowercase();
    }
    n.trim_start_matches("video/")
        .trim_start_matches("audio/")
        .trim_start_matches("x-")
        .to_string()
}

fn container_name(caps: &gst::CapsRef) -> Option<String> {
    let s = caps.structure(0)?;
    Some(
        match s.name().as_str() {
            "video/quicktime" => match s.get::<&str>("variant").ok() {
                Some("apple") | None => "mov",
                _ => "mp4",
            },
            "audio/x-m4a" => "m4a",
            "video/x-matroska" | "audio/x-matroska" => "mkv",
            "video/webm" | "audio/webm" => "webm",
            "video/x-msvideo" => "avi",
            "video/mpegts" => "ts",
            "video/x-flv" => "flv",
            "application/ogg" | "audio/ogg" | "video/ogg" => "ogg",
            "audio/x-wav" => "wav",
            "video/x-ms-asf" => "asf",
            _ => return None,
        }
        .to_string(),
    )
}

fn probe_from_info(info: &gst_pbutils::DiscovererInfo) -> Probe {
    let video = info.video_streams().into_iter().next().map(|v| {
        let rotation = v
            .tags()
            .and_then(|t| {
                t.get::<gst::tags::ImageOrientation>()
                    .map(|o| o.get().to_string())
            })
            .map(|o| rotation_deg(&o))
            .unwrap_or(0);
        let par = v.par();
        let (mut w, mut h) = (v.width(), v.height());
        if par.numer() > 0 && par.denom() > 0 && par.numer() != par.denom() {
            w = (w as f64 * par.numer() as f64 / par.denom() as f64).round() as u32;
        }
        if rotation == 90 || rotation == 270 {
            std::mem::swap(&mut w, &mut h);
        }
        let fr = v.framerate();
        VideoInfo {
            codec: v
                .caps()
                .map(|c| codec_name(&c))
                .unwrap_or_else(|| "unknown".into()),
            width: w,
            height: h,
            fps: (fr.numer() > 0 && fr.denom() > 0).then(|| fr.numer() as f64 / fr.denom() as f64),
            rotation,
        }
    });
    let audio = info.audio_streams().into_iter().next().map(|a| AudioInfo {
        codec: a
            .caps()
            .map(|c| codec_name(&c))
            .unwrap_or_else(|| "unknown".into()),
        channels: a.channels(),
        rate: a.sample_rate(),
    });
    // The first recognised container in the topology (mp3 files start with an "id3" node).
    let mut container = None;
    let mut node = info.stream_info();
    while let Some(si) = node {
        if let Some(c) = si.caps().and_then(|c| container_name(&c)) {
            container = Some(c);
            break;
        }
        node = si.next();
    }
    let container = container.unwrap_or_else(|| {
        audio
            .as_ref()
            .map(|a| a.codec.clone())
            .or_else(|| video.as_ref().map(|v| v.codec.clone()))
            .unwrap_or_default()
    });
    Probe {
        duration_s: info
            .duration()
            .map(|d| d.nseconds() as f64 / 1e9)
            .unwrap_or(0.0),
        video,
        audio,
        container,
    }
}

fn rotation_deg(orientation: &str) -> u32 {
    match orientation {
        "rotate-90" | "flip-rotate-90" => 90,
        "rotate-180" | "flip-rotate-180" => 180,
        "rotate-270" | "flip-rotate-270" => 270,
        _ => 0,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Bmff {
    /// Not ISO-BMFF (MP4/MOV/M4A); nothing to say.
    Other,
    Complete,
    /// A top-level box extends past the end of the file.
    BoxCut,
    /// No moov (and no moof, so not fragmented): the index was never written.
    MoovMissing,
}

/// Walks the top-level ISO-BMFF boxes (a few reads, no parsing beyond box headers).
fn isobmff_scan(path: &Path, len: u64) -> std::io::Result<Bmff> {
    let mut f = std::fs::File::open(path)?;
    let mut hdr = [0u8; 16];
    let n = f.read(&mut hdr)?;
    const TOP: [&[u8; 4]; 7] = [
        b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot",
    ];
    if n < 8 || !TOP.iter().any(|t| &hdr[4..8] == *t) {
        return Ok(Bmff::Other);
    }
    let (mut off, mut moov, mut moof) = (0u64, false, false);
    while off + 8 <= len {
        f.seek(SeekFrom::Start(off))?;
        let got = f.read(&mut hdr)?;
        if got < 8 {
            break;
        }
        let mut size = u32::from_be_bytes(hdr[0..4].try_into().unwrap()) as u64;
        let kind = &hdr[4..8];
        if size == 1 {
            if got < 16 {
                return Ok(Bmff::BoxCut);
            }
            size = u64::from_be_bytes(hdr[8..16].try_into().unwrap());
        } else if size == 0 {
            size = len - off; // "extends to end of file"
        }
        if size < 8 {
            break; // not a box structure we understand; leave it to the demuxer
        }
        if off + size > len {
            // A cut moov is as bad as none: the index is incomplete.
            return Ok(if kind != b"moov" && (moov || moof) {
                Bmff::BoxCut
            } else {
                Bmff::MoovMissing
            });
        }
        moov |= kind == b"moov";
        moof |= kind == b"moof";
        off += size;
    }
    Ok(if moov || moof {
        Bmff::Complete
    } else {
        Bmff::MoovMissing
    })
}

/// Truncation check. Demux only (parsebin into fakesinks, no decoding), so it costs little:
/// 1. unless the MP4 box scan already found a cut box, seek to 3 s before the container's
///    duration and read to the end: if the data reaches (within [`TAIL_TOLERANCE`]) the
///    duration, the file is complete. O(1) in the file size.
/// 2. otherwise read the whole file from the start, demux only, and report the last
///    timestamp reached: "file truncated at HH:MM:SS".
///
/// Decode errors in the middle of an otherwise complete file are not looked for here: they
/// surface as transcode errors.
fn check_truncation(
    path: &Path,
    p: &Probe,
    known_cut: bool,
    deadline: Instant,
    timeout: Duration,
) -> Result<(), ProbeError> {
    if p.duration_s <= 0.0 {
        return Ok(()); // no claim to check against (e.g. raw streams without an index)
    }
    let dur = Duration::from_secs_f64(p.duration_s);
    if !known_cut {
        let from = dur.saturating_sub(Duration::from_secs(3));
        let end = demux_end(path, from, deadline, timeout)?;
        if end + TAIL_TOLERANCE >= dur {
            return Ok(());
        }
    }
    let end = demux_end(path, Duration::ZERO, deadline, timeout)?;
    if end + TAIL_TOLERANCE >= dur {
        return Ok(());
    }
    Err(ProbeError::Truncated {
        at_s: end.as_secs_f64(),
        index_missing: false,
    })
}

/// Demuxes from `from` to EOS or the first error and returns the largest stream-time end
/// (pts + duration) seen on any elementary stream.
fn demux_end(
    path: &Path,
    from: Duration,
    deadline: Instant,
    timeout: Duration,
) -> Result<Duration, ProbeError> {
    let gerr = |e: glib::BoolError| ProbeError::Io(format!("gstreamer: {e}"));
    let p = gst::Pipeline::new();
    p.use_clock(None::<&gst::Clock>);
    let src = gst::ElementFactory::make("filesrc")
        .property("location", path.to_string_lossy().to_string())
        .build()
        .map_err(gerr)?;
    let pb = gst::ElementFactory::make("parsebin")
        .build()
        .map_err(gerr)?;
    p.add_many([&src, &pb]).map_err(gerr)?;
    src.link(&pb).map_err(gerr)?;
    let max_end = Arc::new(AtomicU64::new(0));
    let pw = p.downgrade();
    let me = max_end.clone();
    pb.connect_pad_added(move |_, pad| {
        let Some(p) = pw.upgrade() else { return };
        // A queue per stream: the demuxer pushes all streams from one thread, and the first
        // fakesink to preroll would otherwise block it before the others get data.
        let (Ok(q), Ok(sink)) = (
            gst::ElementFactory::make("queue").build(),
            gst::ElementFactory::make("fakesink")
                .property("sync", false)
                .build(),
        ) else {
            return;
        };
        if p.add_many([&q, &sink]).is_err() || q.link(&sink).is_err() {
            return;
        }
        let _ = sink.sync_state_with_parent();
        let _ = q.sync_state_with_parent();
        let sinkpad = sink.static_pad("sink").unwrap();
        let me = me.clone();
        let seg: Mutex<Option<gst::FormattedSegment<gst::ClockTime>>> = Mutex::new(None);
        sinkpad.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
            move |_, info| {
                match &info.data {
                    Some(gst::PadProbeData::Event(ev)) => {
                        if let gst::EventView::Segment(s) = ev.view() {
                            *seg.lock().unwrap() =
                                s.segment().downcast_ref::<gst::ClockTime>().cloned();
                        }
                    }
                    Some(gst::PadProbeData::Buffer(b)) => {
                        if let (Some(pts), Some(s)) = (b.pts(), seg.lock().unwrap().as_ref()) {
                            let end = pts + b.duration().unwrap_or(gst::ClockTime::ZERO);
                            if let Some(st) = s.to_stream_time(end) {
                                me.fetch_max(st.nseconds(), Ordering::SeqCst);
                            }
                        }
                    }
                    _ => {}
                }
                gst::PadProbeReturn::Ok
            },
        );
        let _ = pad.link(&q.static_pad("sink").unwrap());
    });
    let bus = p.bus().unwrap();
    let wait = |what: &str| -> Result<bool, ProbeError> {
        // Ok(true): reached `what`; Ok(false): EOS/error (stream ended) before it.
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ProbeError::Timeout(timeout));
            }
            let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(left.as_millis() as u64))
            else {
                continue;
            };
            match msg.view() {
                gst::MessageView::AsyncDone(_) if what == "async-done" => return Ok(true),
                gst::MessageView::Eos(_) | gst::MessageView::Error(_) => return Ok(false),
                _ => {}
            }
        }
    };
    let run = || -> Result<(), ProbeError> {
        if p.set_state(gst::State::Paused).is_err() {
            return Ok(());
        }
        if !wait("async-done")? {
            return Ok(());
        }
        if !from.is_zero() {
            max_end.store(0, Ordering::SeqCst);
            let _ = p.seek_simple(
                gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT | gst::SeekFlags::SNAP_BEFORE,
                gst::ClockTime::from_nseconds(from.as_nanos() as u64),
            );
        }
        if p.set_state(gst::State::Playing).is_err() {
            return Ok(());
        }
        wait("eos")?;
        Ok(())
    };
    let r = run();
    let _ = p.set_state(gst::State::Null);
    r?;
    Ok(Duration::from_nanos(max_end.load(Ordering::SeqCst)))
}

// ---------------------------------------------------------------------------------------------
// transcode: spec and events

/// Which H.264 stream the MP4 download is muxed from.
#[derive(Clone, Debug, PartialEq)]
pub enum Mp4Source {
    /// The largest encoded rendition (tee after its encoder: no extra encode).
    Largest,
    /// A rendition by name ([`SOURCE_RENDITION`] = the passthrough copy, no encode at all).
    /// A name that is not produced for this source (dropped: no upscaling) falls back to
    /// [`Mp4Source::Largest`].
    Rendition(String),
    /// A dedicated encode with its own size/bitrate (planned like a rung: never upscaled).
    Own(Rendition),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Mp4Spec {
    pub source: Mp4Source,
    /// Directory for the MP4 (and mp4mux's faststart scratch file); default: the system temp
    /// directory. The file is handed over in [`VodEvent::Mp4`]; the receiver owns it.
    pub dir: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct TranscodeSpec {
    /// Ladder rungs, as for the live pipeline (`ladder::plan`: by short side, no upscale).
    /// When no rung fits (tiny source) the smallest rung is produced at the source size.
    pub renditions: Vec<Rendition>,
    pub segment_duration_s: u32,
    /// Copy the source video as rendition [`SOURCE_RENDITION`] when it is H.264 (not when it
    /// carries a rotation tag: MPEG-TS cannot express it). Audio is the common AAC encode.
    pub passthrough_h264: bool,
    pub mp4: Option<Mp4Spec>,
    pub poster_at_s: Option<f64>,
    /// Scrubbing-preview sprite from the transcode's own frames ([`VodEvent::Storyboard`]).
    pub storyboard: Option<StoryboardSpec>,
    pub audio_bitrate_kbps: u32,
    /// Same levers as the live ladder; `zerolatency` is off by default for VOD.
    pub tuning: Tuning,
    pub probe_timeout: Duration,
}

impl TranscodeSpec {
    pub fn new(renditions: Vec<Rendition>, segment_duration_s: u32) -> Self {
        TranscodeSpec {
            renditions,
            segment_duration_s,
            passthrough_h264: false,
            mp4: None,
            poster_at_s: None,
            storyboard: None,
            audio_bitrate_kbps: 128,
            tuning: Tuning {
                // VOD has no latency budget: let x264 use its lookahead/mbtree (better quality
                // per bit); the GOP stays fixed so segments still line up across renditions.
                zerolatency: false,
                ..Tuning::default()
            },
            probe_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Debug)]
pub enum VodEvent {
    /// 0..1 by position / duration; non-decreasing.
    Progress {
        fraction: f64,
    },
    /// What will be produced, in order (passthrough first), with real sizes. Sent once, before
    /// any segment. Audio-only inputs: one rendition named [`AUDIO_RENDITION`], size 0x0.
    Renditions(Vec<Rendition>),
    /// In order per rendition (renditions interleave).
    Segment(Segment),
    /// Finished faststart MP4; the receiver owns (moves/deletes) the file.
    Mp4(PathBuf),
    Poster(bytes::Bytes),
    /// The scrubbing-preview sprite, after the last segment (when [`TranscodeSpec::storyboard`]
    /// asked and the input has video).
    Storyboard(Storyboard),
    /// Non-fatal: e.g. the poster could not be made, or no MP4 for an audio-only input.
    Warning(String),
    /// Terminal, success.
    Done,
    /// Terminal, failure (also sent for cancellation: "cancelled").
    Error(String),
}

// ---------------------------------------------------------------------------------------------
// transcode: plan

struct Encode {
    r: Rendition,
    hls: bool,
    mp4: bool,
}

struct Plan {
    outputs: Vec<Rendition>,
    /// Video encodes, largest first (scaling chain order).
    encodes: Vec<Encode>,
    passthrough: bool,
    mp4_from_source: bool,
    audio: bool,
    video: bool,
    size: (u32, u32),
    fps: (i32, i32),
    gop: u32,
}

/// Nominal fraction for a probed average rate: NTSC rates become n*1000/1001, others are
/// rounded to an integer; unknown -> 30; capped at [`MAX_FPS`].
fn fps_fraction(fps: Option<f64>) -> (i32, i32) {
    let f = fps.filter(|f| f.is_finite() && *f >= 1.0).unwrap_or(30.0);
    if f > MAX_FPS {
        return (MAX_FPS as i32, 1);
    }
    let ntsc = (f * 1.001).round();
    if (f - ntsc / 1.001).abs() < 0.005 && (f - f.round()).abs() > 0.005 {
        return (ntsc as i32 * 1000, 1001);
    }
    (f.round().max(1.0) as i32, 1)
}

fn make_plan(probe: &Probe, spec: &TranscodeSpec) -> Result<Plan, String> {
    let audio = probe.audio.is_some();
    let Some(v) = &probe.video else {
        return Ok(Plan {
            outputs: vec![Rendition {
                name: AUDIO_RENDITION.into(),
                width: 0,
                height: 0,
                video_bitrate_kbps: 0,
                profile: String::new(),
                x264_preset: String::new(),
            }],
            encodes: Vec::new(),
            passthrough: false,
            mp4_from_source: false,
            audio,
            video: false,
            size: (0, 0),
            fps: (30, 1),
            gop: 1,
        });
    };
    let (w, h) = ((v.width & !1).max(2), (v.height & !1).max(2));
    let lspec = ladder::LadderSpec::new(false, spec.renditions.clone(), spec.segment_duration_s);
    let mut planned = ladder::plan(&lspec, w, h);
    if planned.is_empty() {
        let smallest = spec
            .renditions
            .iter()
            .min_by_key(|r| r.width.min(r.height))
            .ok_or("no renditions in the spec")?;
        planned.push(Rendition {
            width: w,
            height: h,
            ..smallest.clone()
        });
    }
    let passthrough = spec.passthrough_h264 && v.codec == "h264" && v.rotation == 0;
    let fps = fps_fraction(v.fps);
    let gop = ((fps.0 as f64 / fps.1 as f64) * spec.segment_duration_s as f64)
        .round()
        .max(1.0) as u32;

    let mut encodes: Vec<Encode> = planned
        .iter()
        .map(|r| Encode {
            r: r.clone(),
            hls: true,
            mp4: false,
        })
        .collect();
    encodes.sort_by_key(|e| std::cmp::Reverse(e.r.width as u64 * e.r.height as u64));
    let mut mp4_from_source = false;
    if let Some(m) = &spec.mp4 {
        match &m.source {
            Mp4Source::Rendition(n) if n == SOURCE_RENDITION && passthrough => {
                mp4_from_source = true
            }
            Mp4Source::Rendition(n) if encodes.iter().any(|e| &e.r.name == n) => {
                encodes.iter_mut().find(|e| &e.r.name == n).unwrap().mp4 = true
            }
            Mp4Source::Own(r) => {
                let own = ladder::plan(
                    &ladder::LadderSpec::new(false, vec![r.clone()], spec.segment_duration_s),
                    w,
                    h,
                )
                .pop()
                .unwrap_or(Rendition {
                    width: w,
                    height: h,
                    ..r.clone()
                });
                encodes.push(Encode {
                    r: own,
                    hls: false,
                    mp4: true,
                });
                encodes.sort_by_key(|e| std::cmp::Reverse(e.r.width as u64 * e.r.height as u64));
            }
            _ => encodes[0].mp4 = true,
        }
    }
    let mut outputs = Vec::new();
    if passthrough {
        outputs.push(Rendition {
            name: SOURCE_RENDITION.into(),
            width: w,
            height: h,
            video_bitrate_kbps: 0,
            profile: String::new(),
            x264_preset: String::new(),
        });
    }
    outputs.extend(planned);
    Ok(Plan {
        outputs,
        encodes,
        passthrough,
        mp4_from_source,
        audio,
        video: true,
        size: (w, h),
        fps,
        gop,
    })
}

fn validate(spec: &TranscodeSpec) -> Result<(), String> {
    let l = ladder::LadderSpec::new(false, spec.renditions.clone(), spec.segment_duration_s);
    ladder::validate(&l).map_err(|e| e.to_string())?;
    if spec.renditions.iter().any(|r| r.name == AUDIO_RENDITION) {
        return Err(format!("rendition name {AUDIO_RENDITION:?} is reserved"));
    }
    if let Some(Mp4Spec {
        source: Mp4Source::Own(r),
        ..
    }) = &spec.mp4
    {
        let l = ladder::LadderSpec::new(false, vec![r.clone()], spec.segment_duration_s);
        ladder::validate(&l).map_err(|e| format!("mp4: {e}"))?;
    }
    if spec.audio_bitrate_kbps == 0 {
        return Err("audio bitrate 0".into());
    }
    if let Some(sb) = &spec.storyboard {
        sb.check()?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// transcode: fragments handed out by hlssink2

type FragBuf = Arc<Mutex<Vec<u8>>>;

/// `Write` target handed to hlssink2 (via gio::WriteOutputStream) for one fragment.
struct FragWriter(FragBuf);
impl Write for FragWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Per-rendition FIFOs of fragment buffers, in get-fragment-stream order. Opening blocks
/// (in the muxer's streaming thread) while the rendition has [`MAX_PENDING_FRAGMENTS`] not yet
/// taken: that is the back-pressure that keeps memory bounded when the consumer is slow.
#[derive(Default)]
struct Fragments {
    queues: Mutex<HashMap<String, VecDeque<FragBuf>>>,
    cv: Condvar,
    closing: AtomicBool,
}

impl Fragments {
    fn open(&self, rend: &str) -> FragBuf {
        let mut q = self.queues.lock().unwrap();
        while q.get(rend).map_or(0, |f| f.len()) >= MAX_PENDING_FRAGMENTS
            && !self.closing.load(Ordering::SeqCst)
        {
            q = self
                .cv
                .wait_timeout(q, Duration::from_millis(50))
                .unwrap()
                .0;
        }
        let buf: FragBuf = Arc::new(Mutex::new(Vec::with_capacity(1 << 20)));
        q.entry(rend.to_string())
            .or_default()
            .push_back(buf.clone());
        buf
    }
    fn take(&self, rend: &str) -> Option<FragBuf> {
        let b = self.queues.lock().unwrap().get_mut(rend)?.pop_front();
        self.cv.notify_all();
        b
    }
    /// Unblocks any waiting streaming thread (before the pipeline goes to NULL).
    fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.cv.notify_all();
    }
}

// ---------------------------------------------------------------------------------------------
// transcode: pipeline

fn make(factory: &str) -> Result<gst::Element, String> {
    gst::ElementFactory::make(factory)
        .build()
        .map_err(|e| format!("cannot create {factory}: {e}"))
}

/// Compressed/audio queue: bounded by time (a byte cap as a safety net), not buffer count.
fn queue_time(secs: u64) -> Result<gst::Element, String> {
    let q = make("queue")?;
    q.set_property("max-size-buffers", 0u32);
    q.set_property("max-size-bytes", 64u32 << 20);
    q.set_property("max-size-time", secs * 1_000_000_000);
    Ok(q)
}

/// Raw-video queue: a few frames only (memory), enough to decouple threads.
fn queue_raw() -> Result<gst::Element, String> {
    let q = make("queue")?;
    q.set_property("max-size-buffers", 4u32);
    q.set_property("max-size-bytes", 0u32);
    q.set_property("max-size-time", 0u64);
    Ok(q)
}

fn gerr(e: impl std::fmt::Display) -> String {
    format!("gstreamer: {e}")
}

/// hlssink2 as in the live ladder (in-memory fragments, playlist discarded: the packager
/// writes playlists), with the blocking fragment FIFO.
fn make_hls(frags: &Arc<Fragments>, name: &str, seg_s: u32) -> Result<gst::Element, String> {
    let hls = gst::ElementFactory::make("hlssink2")
        .name(format!("hls-{name}"))
        .build()
        .map_err(gerr)?;
    hls.set_property("target-duration", seg_s);
    hls.set_property("send-keyframe-requests", false);
    hls.set_property("playlist-length", 3u32);
    hls.set_property("max-files", 3u32);
    hls.set_property("location", format!("{name}-%05d.ts"));
    hls.connect("delete-fragment", false, |_| None);
    hls.connect("get-playlist-stream", false, |_| {
        let s = gio::WriteOutputStream::new(std::io::sink());
        Some(s.upcast::<gio::OutputStream>().to_value())
    });
    let (f, n) = (frags.clone(), name.to_string());
    hls.connect("get-fragment-stream", false, move |_| {
        let s = gio::WriteOutputStream::new(FragWriter(f.open(&n)));
        Some(s.upcast::<gio::OutputStream>().to_value())
    });
    Ok(hls)
}

struct Built {
    pipeline: gst::Pipeline,
    mp4: Option<(PathBuf, PathBuf)>, // (file, faststart scratch file)
    linked: Arc<AtomicU32>,
    tiles: Option<TileBranch>,
}

fn link_request(src: &gst::Element, sink: &gst::Element, template: &str) -> Result<(), String> {
    let pad = sink
        .request_pad_simple(template)
        .ok_or_else(|| format!("no {template} pad on {}", sink.name()))?;
    src.static_pad("src")
        .unwrap()
        .link(&pad)
        .map(|_| ())
        .map_err(|e| format!("link to {}.{template}: {e:?}", sink.name()))
}

static MP4_SEQ: AtomicU64 = AtomicU64::new(0);

fn build(
    path: &Path,
    spec: &TranscodeSpec,
    plan: &Plan,
    duration_s: f64,
    frags: &Arc<Fragments>,
) -> Result<Built, String> {
    let p = gst::Pipeline::with_name("vod");
    // No clock: nothing synchronises to it, so the file is processed as fast as possible.
    p.use_clock(None::<&gst::Clock>);
    let add = |els: &[&gst::Element]| p.add_many(els.iter().copied()).map_err(gerr);
    let link = |els: &[&gst::Element]| gst::Element::link_many(els.iter().copied()).map_err(gerr);

    let src = make("filesrc")?;
    src.set_property(
        "location",
        path.to_str().ok_or("path is not valid UTF-8")?.to_string(),
    );
    let pb = make("parsebin")?;
    add(&[&src, &pb])?;
    link(&[&src, &pb])?;

    let seg_s = spec.segment_duration_s;
    let mut hls_of: HashMap<String, gst::Element> = HashMap::new();
    for r in &plan.outputs {
        let h = make_hls(frags, &r.name, seg_s)?;
        add(&[&h])?;
        hls_of.insert(r.name.clone(), h);
    }

    // MP4 muxer (video required).
    let mut mp4 = None;
    let mut mp4mux = None;
    if let (Some(m), true) = (&spec.mp4, plan.video) {
        let dir = m.dir.clone().unwrap_or_else(std::env::temp_dir);
        let stem = format!(
            "vod-{}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0),
            MP4_SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let file = dir.join(format!("{stem}.mp4"));
        let scratch = dir.join(format!("{stem}.mdat.tmp"));
        let mux = make("mp4mux")?;
        // faststart: mp4mux spools the media data to `faststart-file` and at EOS writes
        // ftyp, moov, then mdat sequentially, so the output does not even need seeking.
        mux.set_property("faststart", true);
        mux.set_property("faststart-file", scratch.to_string_lossy().to_string());
        let sink = make("filesink")?;
        sink.set_property("location", file.to_string_lossy().to_string());
        sink.set_property("sync", false);
        add(&[&mux, &sink])?;
        link(&[&mux, &sink])?;
        mp4 = Some((file, scratch));
        mp4mux = Some(mux);
    }
    // Adds queue ! h264parse ! mp4mux.video_%u after `from`.
    let attach_mp4_video = |from: &gst::Element| -> Result<(), String> {
        let mux = mp4mux.as_ref().unwrap();
        let q = queue_time(10)?;
        let parse = make("h264parse")?;
        add(&[&q, &parse])?;
        link(&[from, &q, &parse])?;
        link_request(&parse, mux, "video_%u")
    };

    let linked = Arc::new(AtomicU32::new(0));
    let mut entries: Vec<(&'static str, gst::Element)> = Vec::new();
    let mut tiles = None;

    // ---- video
    if plan.video {
        let entry = queue_time(10)?;
        add(&[&entry])?;
        entries.push(("video/", entry.clone()));
        let dec_in = if plan.passthrough {
            let ctee = make("tee")?;
            let q = queue_time(10)?;
            let parse = make("h264parse")?;
            // Re-insert SPS/PPS before every IDR so each passthrough segment decodes alone.
            parse.set_property("config-interval", -1i32);
            let cf = make("capsfilter")?;
            cf.set_property(
                "caps",
                gst::Caps::builder("video/x-h264")
                    .field("stream-format", "byte-stream")
                    .field("alignment", "au")
                    .build(),
            );
            add(&[&ctee, &q, &parse, &cf])?;
            link(&[&entry, &ctee, &q, &parse, &cf])?;
            let out = if plan.mp4_from_source {
                let t = make("tee")?;
                add(&[&t])?;
                link(&[&cf, &t])?;
                attach_mp4_video(&t)?;
                t
            } else {
                cf
            };
            let hq = queue_time(10)?;
            add(&[&hq])?;
            link(&[&out, &hq])?;
            link_request(&hq, &hls_of[SOURCE_RENDITION], "video")?;
            let dq = queue_time(10)?;
            add(&[&dq])?;
            link(&[&ctee, &dq])?;
            dq
        } else {
            entry
        };
        let dec = make("decodebin")?;
        let conv = make("videoconvert")?;
        let rate = make("videorate")?;
        // Start at the first frame: by default videorate first emits the initial frames and
        // then back-fills from the segment start (0) with earlier timestamps, which shifts the
        // encoder's GOP grid (a first segment of 58 frames for an MKV whose video starts at
        // 21 ms).
        rate.set_property("skip-to-first", true);
        let flip = make("videoflip")?;
        flip.set_property_from_str("video-direction", "auto");
        let scale = make("videoscale")?;
        scale.set_property_from_str("method", &spec.tuning.scale_method);
        scale.set_property("n-threads", spec.tuning.scale_threads);
        scale.set_property("add-borders", false);
        let cf = make("capsfilter")?;
        let (w, h) = plan.size;
        cf.set_property(
            "caps",
            gst::Caps::builder("video/x-raw")
                .field("format", "I420")
                .field("width", w as i32)
                .field("height", h as i32)
                .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
                .field("framerate", gst::Fraction::new(plan.fps.0, plan.fps.1))
                .build(),
        );
        let rawtee = make("tee")?;
        add(&[&dec, &conv, &rate, &flip, &scale, &cf, &rawtee])?;
        link(&[&dec_in, &dec])?;
        link(&[&conv, &rate, &flip, &scale, &cf, &rawtee])?;
        let conv_w = conv.downgrade();
        dec.connect_pad_added(move |_, pad| {
            let is_video = pad
                .current_caps()
                .and_then(|c| c.structure(0).map(|s| s.name().starts_with("video/")))
                .unwrap_or(false);
            if let (true, Some(conv)) = (is_video, conv_w.upgrade()) {
                let sink = conv.static_pad("sink").unwrap();
                if !sink.is_linked() {
                    let _ = pad.link(&sink);
                }
            }
        });

        // Chained scaling, largest first, exactly like the live ladder.
        let mut parent = (rawtee.clone(), w, h);
        for e in &plan.encodes {
            let r = &e.r;
            let (ptee, pw, ph) = if spec.tuning.chained_scaling {
                parent.clone()
            } else {
                (rawtee.clone(), w, h)
            };
            let rtee = if (r.width, r.height) == (w, h) {
                rawtee.clone()
            } else if (r.width, r.height) == (pw, ph) {
                ptee.clone()
            } else {
                let q = queue_raw()?;
                let (scale, cf) =
                    ladder::scaler(&spec.tuning, r.width, r.height).map_err(|e| e.to_string())?;
                let t = make("tee")?;
                add(&[&q, &scale, &cf, &t])?;
                link(&[&ptee, &q, &scale, &cf, &t])?;
                t
            };
            let q = queue_raw()?;
            let (enc, ecf) =
                ladder::x264_encoder(r, plan.gop, &spec.tuning).map_err(|e| e.to_string())?;
            add(&[&q, &enc, &ecf])?;
            link(&[&rtee, &q, &enc, &ecf])?;
            let out = if e.mp4 && e.hls {
                let t = make("tee")?;
                add(&[&t])?;
                link(&[&ecf, &t])?;
                t
            } else {
                ecf
            };
            if e.mp4 {
                attach_mp4_video(&out)?;
            }
            if e.hls {
                let hq = queue_time(10)?;
                add(&[&hq])?;
                link(&[&out, &hq])?;
                link_request(&hq, &hls_of[&r.name], "video")?;
            }
            parent = (rtee, r.width, r.height);
        }
        // Storyboard tiles from the smallest rung's frames: the file is decoded only once.
        // Without a duration there are no tile times to pick (and no cue ends to write).
        if let (Some(sb), true) = (&spec.storyboard, duration_s > 0.0) {
            let (from, pw, ph) = &parent;
            tiles = Some(TileBranch::attach(&p, from, (*pw, *ph), sb, duration_s)?);
        }
    }

    // ---- audio: one AAC encode for every output
    if plan.audio {
        let entry = queue_time(10)?;
        let dec = make("decodebin")?;
        let conv = make("audioconvert")?;
        let res = make("audioresample")?;
        let cf = make("capsfilter")?;
        // Down-mix to stereo at most: web players and HLS audio renditions expect it.
        cf.set_property(
            "caps",
            gst::Caps::builder("audio/x-raw")
                .field("channels", gst::IntRange::new(1, 2))
                .build(),
        );
        let enc = make("avenc_aac")?;
        enc.set_property("bitrate", spec.audio_bitrate_kbps as i32 * 1000);
        let parse = make("aacparse")?;
        let atee = make("tee")?;
        add(&[&entry, &dec, &conv, &res, &cf, &enc, &parse, &atee])?;
        link(&[&entry, &dec])?;
        link(&[&conv, &res, &cf, &enc, &parse, &atee])?;
        entries.push(("audio/", entry));
        let conv_w = conv.downgrade();
        dec.connect_pad_added(move |_, pad| {
            let is_audio = pad
                .current_caps()
                .and_then(|c| c.structure(0).map(|s| s.name().starts_with("audio/")))
                .unwrap_or(false);
            if let (true, Some(conv)) = (is_audio, conv_w.upgrade()) {
                let sink = conv.static_pad("sink").unwrap();
                if !sink.is_linked() {
                    let _ = pad.link(&sink);
                }
            }
        });
        for h in hls_of.values() {
            let q = queue_time(10)?;
            add(&[&q])?;
            link(&[&atee, &q])?;
            link_request(&q, h, "audio")?;
        }
        if let Some(mux) = &mp4mux {
            let q = queue_time(10)?;
            add(&[&q])?;
            link(&[&atee, &q])?;
            link_request(&q, mux, "audio_%u")?;
        }
    }

    // ---- parsebin pads: first video and first audio stream to their entries, rest discarded
    let pw = p.downgrade();
    let (entries_pa, linked_pa) = (entries.clone(), linked.clone());
    pb.connect_pad_added(move |_, pad| {
        let Some(p) = pw.upgrade() else { return };
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let media = caps
            .structure(0)
            .map(|s| s.name().to_string())
            .unwrap_or_default();
        for (prefix, entry) in &entries_pa {
            let sink = entry.static_pad("sink").unwrap();
            if media.starts_with(prefix) && !sink.is_linked() && pad.link(&sink).is_ok() {
                linked_pa.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
        if let Ok(fs) = gst::ElementFactory::make("fakesink")
            .property("sync", false)
            .property("async", false)
            .build()
            && p.add(&fs).is_ok()
        {
            let _ = fs.sync_state_with_parent();
            let _ = pad.link(&fs.static_pad("sink").unwrap());
        }
    });
    // An expected stream that parsebin never exposes would leave its muxer pads waiting
    // forever: end those branches instead.
    let entries_nm = entries;
    pb.connect_no_more_pads(move |_| {
        for (_, entry) in &entries_nm {
            let sink = entry.static_pad("sink").unwrap();
            if !sink.is_linked() {
                sink.send_event(gst::event::Eos::new());
            }
        }
    });
    Ok(Built {
        pipeline: p,
        mp4,
        linked,
        tiles,
    })
}

// ---------------------------------------------------------------------------------------------
// transcode: run

/// Event sender that blocks (back-pressure) but gives up on cancel or a dropped receiver.
struct Tx<'a> {
    events: &'a SyncSender<VodEvent>,
    cancel: &'a AtomicBool,
}

impl Tx<'_> {
    fn send(&self, mut ev: VodEvent) -> Result<(), String> {
        loop {
            match self.events.try_send(ev) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Disconnected(_)) => return Err("event receiver dropped".into()),
                Err(TrySendError::Full(back)) => {
                    if self.cancel.load(Ordering::SeqCst) {
                        return Err("cancelled".into());
                    }
                    ev = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    /// Terminal event: delivered even after cancellation if there is room within 1 s.
    fn send_final(&self, mut ev: VodEvent) {
        let until = Instant::now() + Duration::from_secs(1);
        loop {
            match self.events.try_send(ev) {
                Err(TrySendError::Full(back)) if Instant::now() < until => {
                    ev = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                _ => return,
            }
        }
    }
}

/// Tears the pipeline down on every exit path: waiting streaming threads are released first,
/// otherwise the NULL state change would wait for them forever.
struct Teardown<'a> {
    pipeline: &'a gst::Pipeline,
    frags: &'a Fragments,
    mp4: Option<(PathBuf, PathBuf)>,
    keep_mp4: bool,
}

impl Drop for Teardown<'_> {
    fn drop(&mut self) {
        self.frags.close();
        let _ = self.pipeline.set_state(gst::State::Null);
        if let Some((file, scratch)) = &self.mp4 {
            let _ = std::fs::remove_file(scratch);
            if !self.keep_mp4 {
                let _ = std::fs::remove_file(file);
            }
        }
    }
}

/// Transcodes a local file to the HLS ladder (+ MP4, poster, storyboard) on the calling
/// thread, sending events as it goes; always ends with [`VodEvent::Done`] or
/// [`VodEvent::Error`] (best effort when cancelled and the channel is full). Returns when
/// everything is finished.
pub fn transcode(
    path: &Path,
    spec: &TranscodeSpec,
    events: SyncSender<VodEvent>,
    cancel: Arc<AtomicBool>,
) -> Result<(), String> {
    let tx = Tx {
        events: &events,
        cancel: &cancel,
    };
    let r = run(path, spec, &tx);
    match &r {
        Ok(()) => tx.send_final(VodEvent::Done),
        Err(e) => tx.send_final(VodEvent::Error(e.clone())),
    }
    r
}

fn run(path: &Path, spec: &TranscodeSpec, tx: &Tx) -> Result<(), String> {
    validate(spec)?;
    gst::init().map_err(gerr)?;
    let probe = probe(path, spec.probe_timeout).map_err(|e| e.to_string())?;
    let plan = make_plan(&probe, spec)?;
    let frags = Arc::new(Fragments::default());
    let built = build(path, spec, &plan, probe.duration_s, &frags)?;
    let mut guard = Teardown {
        pipeline: &built.pipeline,
        frags: &frags,
        mp4: built.mp4.clone(),
        keep_mp4: false,
    };
    tx.send(VodEvent::Renditions(plan.outputs.clone()))?;
    if spec.mp4.is_some() && !plan.video {
        tx.send(VodEvent::Warning("no video stream: no MP4 download".into()))?;
    }
    built
        .pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| format!("cannot start pipeline: {e}"))?;
    let duration = Duration::from_secs_f64(probe.duration_s);
    bus_loop(&built.pipeline, &frags, tx, duration)?;
    if built.linked.load(Ordering::SeqCst) == 0 {
        return Err("no stream could be demuxed".into());
    }
    // Finalise the MP4 (filesink closes its file on the way to NULL) before handing it over.
    frags.close();
    let _ = built.pipeline.set_state(gst::State::Null);
    if let Some((file, _)) = &built.mp4 {
        guard.keep_mp4 = true;
        tx.send(VodEvent::Mp4(file.clone()))?;
    }
    if let Some(tiles) = &built.tiles {
        match tiles.finish() {
            Ok(board) => tx.send(VodEvent::Storyboard(board))?,
            Err(e) => tx.send(VodEvent::Warning(format!("storyboard: {e}")))?,
        }
    }
    if let (Some(t), Some(top)) = (spec.poster_at_s, plan.encodes.first()) {
        let t = t.min(probe.duration_s - 0.1).max(0.0);
        let path_s = path.to_string_lossy();
        match thumbnail(&path_s, t, top.r.width) {
            Ok(jpeg) => tx.send(VodEvent::Poster(jpeg.into()))?,
            Err(e) => tx.send(VodEvent::Warning(format!("poster: {e}")))?,
        }
    }
    tx.send(VodEvent::Progress { fraction: 1.0 })?;
    Ok(())
}

fn rendition_of(msg: &gst::Message) -> Option<String> {
    // Source is hlssink2's internal splitmuxsink; its parent is our "hls-<name>".
    let parent = msg.src()?.parent()?;
    parent.name().strip_prefix("hls-").map(str::to_string)
}

fn bus_loop(
    p: &gst::Pipeline,
    frags: &Fragments,
    tx: &Tx,
    duration: Duration,
) -> Result<(), String> {
    let bus = p.bus().ok_or("pipeline without bus")?;
    let mut opened: HashMap<String, u64> = HashMap::new();
    let mut last_fraction = 0.0f64;
    let mut last_query = Instant::now();
    let mut last_activity = Instant::now();
    loop {
        if tx.cancel.load(Ordering::SeqCst) {
            return Err("cancelled".into());
        }
        if let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) {
            use gst::MessageView as M;
            match msg.view() {
                M::Element(e) => {
                    let Some(s) = e.structure() else { continue };
                    let name = s.name();
                    if name != "splitmuxsink-fragment-opened"
                        && name != "splitmuxsink-fragment-closed"
                    {
                        continue;
                    }
                    let Some(rend) = rendition_of(&msg) else {
                        continue;
                    };
                    let rt = s.get::<u64>("running-time").unwrap_or(0);
                    if name == "splitmuxsink-fragment-opened" {
                        opened.insert(rend, rt);
                        continue;
                    }
                    let start = opened.remove(&rend).unwrap_or(rt);
                    let buf = frags
                        .take(&rend)
                        .ok_or_else(|| format!("{rend}: fragment closed but no fragment stream"))?;
                    let bytes = std::mem::take(&mut *buf.lock().unwrap());
                    let seg = Segment {
                        rendition: rend,
                        duration_s: rt.saturating_sub(start) as f64 / 1e9,
                        bytes: bytes.into(),
                    };
                    last_activity = Instant::now();
                    tx.send(VodEvent::Segment(seg))?;
                }
                M::Error(err) => {
                    let src = msg
                        .src()
                        .map(|s| s.path_string().to_string())
                        .unwrap_or_default();
                    return Err(format!(
                        "{src}: {} ({})",
                        err.error(),
                        err.debug().unwrap_or_default()
                    ));
                }
                M::Eos(_) => return Ok(()),
                _ => {}
            }
        }
        if last_query.elapsed() >= Duration::from_millis(250) && !duration.is_zero() {
            last_query = Instant::now();
            // Position of the pipeline = the furthest sink; the < 1.0 cap keeps 1.0 for "done".
            if let Some(pos) = p.query_position::<gst::ClockTime>() {
                let f = (pos.nseconds() as f64 / duration.as_nanos() as f64).clamp(0.0, 0.99);
                if f > last_fraction + 0.001 {
                    last_fraction = f;
                    last_activity = Instant::now();
                    tx.send(VodEvent::Progress { fraction: f })?;
                }
            }
        }
        if last_activity.elapsed() > STALL_TIMEOUT {
            return Err(format!(
                "stalled: no progress for {}s",
                STALL_TIMEOUT.as_secs()
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// thumbnail

/// One JPEG frame at `time_s` (clamped into the media), `width` wide (rounded to even), the
/// height following the display aspect ratio (rotation tags applied) rounded to even. Accurate
/// seek: decodes from the preceding keyframe, so cost grows with the source GOP length.
pub fn thumbnail(path_or_uri: &str, time_s: f64, width: u32) -> Result<Vec<u8>, String> {
    gst::init().map_err(gerr)?;
    let uri = if path_or_uri.contains("://") {
        path_or_uri.to_string()
    } else {
        file_uri(Path::new(path_or_uri))?
    };
    let width = (width & !1).max(2);
    let p = gst::Pipeline::new();
    p.use_clock(None::<&gst::Clock>);
    let dec = gst::ElementFactory::make("uridecodebin")
        .property("uri", &uri)
        .build()
        .map_err(gerr)?;
    // Decode video only: other streams are exposed still compressed and discarded. (The
    // `caps` property cannot do this: a stream it cannot turn into video/x-raw is reported as
    // a missing plugin, which is an error.)
    dec.connect("autoplug-continue", false, |args| {
        let caps = args[2].get::<gst::Caps>().ok();
        let audio_or_text = caps
            .as_ref()
            .and_then(|c| c.structure(0))
            .map(|s| !s.name().starts_with("video/"))
            .unwrap_or(false);
        Some((!audio_or_text).to_value())
    });
    let conv = make("videoconvert")?;
    let flip = make("videoflip")?;
    flip.set_property_from_str("video-direction", "auto");
    let scale = make("videoscale")?;
    let cf = make("capsfilter")?;
    let jpeg = make("jpegenc")?;
    let sink = gst_app::AppSink::builder()
        .sync(false)
        .max_buffers(1)
        .build();
    p.add_many([&dec, &conv, &flip, &scale, &cf, &jpeg, sink.upcast_ref()])
        .map_err(gerr)?;
    gst::Element::link_many([&conv, &flip, &scale, &cf, &jpeg, sink.upcast_ref()]).map_err(gerr)?;
    // The output height is only known once the (rotated) input caps are.
    ladder::follow_input_caps(&scale, &cf, move |input| {
        let s = input.structure(0)?;
        let (w, h) = (s.get::<i32>("width").ok()?, s.get::<i32>("height").ok()?);
        let par = s
            .get::<gst::Fraction>("pixel-aspect-ratio")
            .unwrap_or(gst::Fraction::new(1, 1));
        let dw = w as f64 * par.numer() as f64 / par.denom().max(1) as f64;
        let hh = ((width as f64 * h as f64 / dw / 2.0).round() as i32 * 2).max(2);
        Some(
            gst::Caps::builder("video/x-raw")
                .field("width", width as i32)
                .field("height", hh)
                .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
                .build(),
        )
    });
    let conv_w = conv.downgrade();
    let pw = p.downgrade();
    dec.connect_pad_added(move |_, pad| {
        let (Some(conv), Some(p)) = (conv_w.upgrade(), pw.upgrade()) else {
            return;
        };
        let raw_video = pad
            .current_caps()
            .and_then(|c| c.structure(0).map(|s| s.name() == "video/x-raw"))
            .unwrap_or(false);
        let sink = conv.static_pad("sink").unwrap();
        if raw_video && !sink.is_linked() {
            let _ = pad.link(&sink);
        } else if let Ok(fs) = gst::ElementFactory::make("fakesink")
            .property("sync", false)
            .property("async", false)
            .build()
            && p.add(&fs).is_ok()
        {
            let _ = fs.sync_state_with_parent();
            let _ = pad.link(&fs.static_pad("sink").unwrap());
        }
    });
    // Without a video stream the appsink would never preroll: fail as soon as that is known.
    let conv_w = conv.downgrade();
    let pw = p.downgrade();
    dec.connect_no_more_pads(move |_| {
        if let (Some(conv), Some(p)) = (conv_w.upgrade(), pw.upgrade())
            && !conv.static_pad("sink").unwrap().is_linked()
        {
            let msg = gst::message::Error::builder(gst::StreamError::WrongType, "no video stream")
                .src(&p)
                .build();
            let _ = p.post_message(msg);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let bus = p.bus().unwrap();
    let wait_preroll = || -> Result<(), String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("thumbnail timed out".into());
            }
            let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(left.as_millis() as u64))
            else {
                continue;
            };
            match msg.view() {
                gst::MessageView::AsyncDone(_) => return Ok(()),
                gst::MessageView::Error(e) => return Err(e.error().to_string()),
                gst::MessageView::Eos(_) => return Err("no video frame".into()),
                _ => {}
            }
        }
    };
    let res = (|| {
        p.set_state(gst::State::Paused)
            .map_err(|_| "cannot open media for thumbnail".to_string())?;
        wait_preroll()?;
        let mut t = time_s.max(0.0);
        if let Some(d) = p.query_duration::<gst::ClockTime>() {
            t = t.min((d.nseconds() as f64 / 1e9 - 0.1).max(0.0));
        }
        if t > 0.0 {
            p.seek_simple(
                gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE,
                gst::ClockTime::from_nseconds((t * 1e9) as u64),
            )
            .map_err(|e| format!("seek: {e}"))?;
            wait_preroll()?;
        }
        let sample = sink
            .try_pull_preroll(gst::ClockTime::from_seconds(5))
            .ok_or("no frame decoded")?;
        let buf = sample.buffer().ok_or("empty sample")?;
        let map = buf.map_readable().map_err(gerr)?;
        Ok(map.as_slice().to_vec())
    })();
    let _ = p.set_state(gst::State::Null);
    res
}

// ---------------------------------------------------------------------------------------------
// storyboard (scrubbing previews) and WebM download

/// Most tiles in one storyboard sprite; longer media get a wider interval.
pub const MAX_STORYBOARD_TILES: usize = 100;

/// A frames sprite for player scrubbing previews (see [`storyboard_vtt`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Storyboard {
    /// The sprite, JPEG; `min(tiles, columns)` tiles wide, rows of `columns`.
    pub jpeg: Vec<u8>,
    pub tile_width: u32,
    pub tile_height: u32,
    /// Per tile, in time order: (start s, end s, x, y) with x/y the tile's top-left pixel.
    pub tiles: Vec<(f64, f64, u32, u32)>,
}

/// A frame within this of a tile's time counts as that tile's frame (timestamp rounding).
const TILE_TOLERANCE_S: f64 = 0.005;

/// Frame time in stream time (what `duration_s` and the tile times are in).
fn stream_time_s(seg: &gst::FormattedSegment<gst::ClockTime>, pts: gst::ClockTime) -> f64 {
    seg.to_stream_time(pts).unwrap_or(pts).nseconds() as f64 / 1e9
}

/// Tile start times: every `interval_s` from 0 while before `duration_s`, at most
/// [`MAX_STORYBOARD_TILES`] (the interval widened to fit).
fn tile_times(duration_s: f64, interval_s: f64) -> Vec<f64> {
    let mut n = (duration_s / interval_s - 1e-9).ceil().max(1.0) as usize;
    let mut interval = interval_s;
    if n > MAX_STORYBOARD_TILES {
        n = MAX_STORYBOARD_TILES;
        interval = duration_s / n as f64;
    }
    (0..n).map(|k| k as f64 * interval).collect()
}

/// Storyboard tiles to take from a transcode's own decoded frames (no second decode of the
/// file): one every `interval_s` seconds, `tile_width` wide, rows of `columns`.
#[derive(Clone, Debug, PartialEq)]
pub struct StoryboardSpec {
    pub interval_s: f64,
    pub tile_width: u32,
    pub columns: u32,
}

impl StoryboardSpec {
    fn check(&self) -> Result<(), String> {
        if self.interval_s.is_nan()
            || self.interval_s <= 0.0
            || self.tile_width < 2
            || self.columns == 0
        {
            return Err("storyboard: bad interval, width or columns".into());
        }
        Ok(())
    }
}

/// Lets through, on `pad`, only the first frame at or after each tile time; every other
/// buffer is consumed before it costs a conversion. (`Handled`, not `Drop`: the bindings
/// release the buffer and core 1.22.0 then unrefs NULL on `Drop`.)
fn pick_tile_frames(pad: &gst::Pad, times: Arc<Vec<f64>>) {
    let state = Mutex::new((gst::FormattedSegment::<gst::ClockTime>::new(), 0usize));
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
        move |_, info| match &info.data {
            Some(gst::PadProbeData::Event(ev)) => {
                if let gst::EventView::Segment(s) = ev.view()
                    && let Ok(s) = s.segment().clone().downcast::<gst::ClockTime>()
                {
                    state.lock().unwrap().0 = s;
                }
                gst::PadProbeReturn::Ok
            }
            Some(gst::PadProbeData::Buffer(b)) => {
                let Some(pts) = b.pts() else {
                    return gst::PadProbeReturn::Handled;
                };
                let (seg, next) = &mut *state.lock().unwrap();
                let st = stream_time_s(seg, pts);
                if *next < times.len() && times[*next] <= st + TILE_TOLERANCE_S {
                    while *next < times.len() && times[*next] <= st + TILE_TOLERANCE_S {
                        *next += 1;
                    }
                    gst::PadProbeReturn::Ok
                } else {
                    gst::PadProbeReturn::Handled
                }
            }
            _ => gst::PadProbeReturn::Ok,
        },
    );
}

/// Tile frames collected so far: packed RGBx, one per tile time in order (a frame repeats
/// when the media has a gap longer than the interval).
#[derive(Default)]
struct Tiles {
    frames: Vec<Vec<u8>>,
    height: u32,
}

impl Tiles {
    /// Takes one picked frame (RGBx, `tile_width` wide) for every tile due by its time.
    fn take(&mut self, sample: &gst::Sample, times: &[f64], tile_width: u32) -> Result<(), String> {
        let caps = sample.caps().ok_or("frame without caps")?;
        let vi = gstreamer_video::VideoInfo::from_caps(caps).map_err(gerr)?;
        let buf = sample.buffer().ok_or("empty sample")?;
        let st = match (sample.segment(), buf.pts()) {
            (Some(s), Some(pts)) => match s.downcast_ref::<gst::ClockTime>() {
                Some(s) => stream_time_s(s, pts),
                None => pts.nseconds() as f64 / 1e9,
            },
            _ => return Ok(()),
        };
        self.height = vi.height();
        let map = buf.map_readable().map_err(gerr)?;
        // Packed rows of tile_width * 4 bytes (the stride may be padded).
        let stride = vi.stride()[0] as usize;
        let row = tile_width as usize * 4;
        let mut px = Vec::with_capacity(row * self.height as usize);
        for y in 0..self.height as usize {
            px.extend_from_slice(&map[y * stride..y * stride + row]);
        }
        while self.frames.len() < times.len() && times[self.frames.len()] <= st + TILE_TOLERANCE_S {
            self.frames.push(px.clone());
        }
        Ok(())
    }

    /// The sprite: tiles copied into a canvas (RGBx, black background), JPEG-encoded.
    fn compose(
        &self,
        times: &[f64],
        duration_s: f64,
        tile_width: u32,
        columns: u32,
    ) -> Result<Storyboard, String> {
        if self.frames.is_empty() {
            return Err("no video frame decoded".into());
        }
        let interval = if times.len() > 1 {
            times[1]
        } else {
            duration_s
        };
        let (tw, th) = (tile_width, self.height);
        let n = self.frames.len() as u32;
        let cols = columns.min(n);
        let rows = n.div_ceil(columns);
        let (cw, ch) = (cols * tw, rows * th);
        let mut canvas = vec![0u8; (cw * ch * 4) as usize];
        let mut tiles = Vec::with_capacity(n as usize);
        for (k, px) in self.frames.iter().enumerate() {
            let (x, y) = ((k as u32 % columns) * tw, (k as u32 / columns) * th);
            let row = tw as usize * 4;
            for r in 0..th as usize {
                let dst = ((y as usize + r) * cw as usize + x as usize) * 4;
                canvas[dst..dst + row].copy_from_slice(&px[r * row..(r + 1) * row]);
            }
            let start = times[k];
            let end = times
                .get(k + 1)
                .copied()
                .unwrap_or(duration_s)
                .min(duration_s);
            let end = if end > start { end } else { start + interval };
            tiles.push((start, end, x, y));
        }
        let jpeg = encode_jpeg(canvas, cw, ch)?;
        Ok(Storyboard {
            jpeg,
            tile_width: tw,
            tile_height: th,
            tiles,
        })
    }
}

/// A storyboard branch on a running transcode: `from` is a tee of raw I420 frames of
/// `width`x`height` (display-oriented, square pixels). Only the picked frames are scaled and
/// converted:
///
/// ```text
/// from ! queue [probe: frames at tile times] ! videoscale ! videoconvert
///      ! video/x-raw,RGBx,tile WxH ! appsink
/// ```
struct TileBranch {
    times: Arc<Vec<f64>>,
    tiles: Arc<Mutex<Tiles>>,
    tile_width: u32,
    columns: u32,
    duration_s: f64,
}

impl TileBranch {
    fn attach(
        p: &gst::Pipeline,
        from: &gst::Element,
        (width, height): (u32, u32),
        spec: &StoryboardSpec,
        duration_s: f64,
    ) -> Result<Self, String> {
        let tw = spec.tile_width & !1;
        let th =
            ((tw as f64 * height as f64 / width.max(1) as f64 / 2.0).round() as i32 * 2).max(2);
        let times = Arc::new(tile_times(duration_s, spec.interval_s));
        let q = queue_raw()?;
        let scale = make("videoscale")?;
        let conv = make("videoconvert")?;
        let cf = make("capsfilter")?;
        cf.set_property(
            "caps",
            gst::Caps::builder("video/x-raw")
                .field("format", "RGBx")
                .field("width", tw as i32)
                .field("height", th)
                .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
                .build(),
        );
        let tiles = Arc::new(Mutex::new(Tiles::default()));
        let sink = gst_app::AppSink::builder()
            .sync(false)
            .enable_last_sample(false)
            .build();
        // Does not hold up the pipeline's start (it may see its first frame only after the
        // other sinks prerolled); the t = 0 tile still waits in it until PLAYING.
        sink.set_property("async", false);
        let (t, frames) = (times.clone(), tiles.clone());
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    if let Err(e) = frames.lock().unwrap().take(&sample, &t, tw) {
                        tracing::warn!(error = %e, "storyboard frame skipped");
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        p.add_many([&q, &scale, &conv, &cf, sink.upcast_ref()])
            .map_err(gerr)?;
        gst::Element::link_many([from, &q, &scale, &conv, &cf, sink.upcast_ref()]).map_err(gerr)?;
        pick_tile_frames(&q.static_pad("sink").unwrap(), times.clone());
        Ok(TileBranch {
            times,
            tiles,
            tile_width: tw,
            columns: spec.columns,
            duration_s,
        })
    }

    fn finish(&self) -> Result<Storyboard, String> {
        self.tiles.lock().unwrap().compose(
            &self.times,
            self.duration_s,
            self.tile_width,
            self.columns,
        )
    }
}

fn fake_sink_pad(p: &gst::Pipeline, pad: &gst::Pad) {
    if let Ok(fs) = gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .property("async", false)
        .build()
        && p.add(&fs).is_ok()
    {
        let _ = fs.sync_state_with_parent();
        let _ = pad.link(&fs.static_pad("sink").unwrap());
    }
}

/// `appsrc ! videoconvert ! jpegenc ! appsink` on one RGBx image.
fn encode_jpeg(rgbx: Vec<u8>, width: u32, height: u32) -> Result<Vec<u8>, String> {
    let p = gst::Pipeline::new();
    p.use_clock(None::<&gst::Clock>);
    let caps = gst::Caps::builder("video/x-raw")
        .field("format", "RGBx")
        .field("width", width as i32)
        .field("height", height as i32)
        .field("framerate", gst::Fraction::new(0, 1))
        .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
        .build();
    let src = gst_app::AppSrc::builder()
        .caps(&caps)
        .format(gst::Format::Time)
        .build();
    let conv = make("videoconvert")?;
    let enc = make("jpegenc")?;
    let sink = gst_app::AppSink::builder().sync(false).build();
    p.add_many([src.upcast_ref(), &conv, &enc, sink.upcast_ref()])
        .map_err(gerr)?;
    gst::Element::link_many([src.upcast_ref(), &conv, &enc, sink.upcast_ref()]).map_err(gerr)?;
    let res = (|| -> Result<Vec<u8>, String> {
        p.set_state(gst::State::Playing)
            .map_err(|_| "cannot start jpeg encoder".to_string())?;
        let mut buf = gst::Buffer::from_mut_slice(rgbx);
        buf.get_mut().unwrap().set_pts(gst::ClockTime::ZERO);
        src.push_buffer(buf).map_err(gerr)?;
        let _ = src.end_of_stream();
        let sample = sink
            .try_pull_sample(gst::ClockTime::from_seconds(20))
            .ok_or_else(|| {
                match p
                    .bus()
                    .and_then(|b| b.pop_filtered(&[gst::MessageType::Error]))
                {
                    Some(m) => match m.view() {
                        gst::MessageView::Error(e) => format!("jpegenc: {}", e.error()),
                        _ => "jpegenc: no output".into(),
                    },
                    None => "jpegenc: no output".into(),
                }
            })?;
        let map = sample
            .buffer()
            .ok_or("empty jpeg")?
            .map_readable()
            .map_err(gerr)?;
        Ok(map.as_slice().to_vec())
    })();
    let _ = p.set_state(gst::State::Null);
    res
}

/// WebVTT for player scrubbing previews: one cue per tile pointing into the sprite
/// (`{image_uri}#xywh=x,y,w,h`, the media-fragment syntax players such as video.js,
/// JW Player and Plyr read).
pub fn storyboard_vtt(sb: &Storyboard, image_uri: &str) -> String {
    fn ts(s: f64) -> String {
        let ms = (s.max(0.0) * 1000.0).round() as u64;
        format!(
            "{:02}:{:02}:{:02}.{:03}",
            ms / 3_600_000,
            ms / 60_000 % 60,
            ms / 1000 % 60,
            ms % 1000
        )
    }
    let mut v = String::from("WEBVTT\n");
    for (start, end, x, y) in &sb.tiles {
        v.push_str(&format!(
            "\n{} --> {}\n{image_uri}#xywh={x},{y},{},{}\n",
            ts(*start),
            ts(*end),
            sb.tile_width,
            sb.tile_height
        ));
    }
    v
}

/// A VP9/Opus WebM download at `height` (aspect kept, even, never upscaled). Streams come from
/// [`probe`]; either may be absent. Runs unclocked (as fast as the CPUs go).
///
/// ```text
/// uridecodebin
///   video ! queue ! videoconvert ! videoflip(auto) ! videoscale ! I420,WxH,par=1/1
///         ! vp9enc(realtime, cpu-used=8) ! queue ! webmmux
///   audio ! queue ! audioconvert ! audioresample ! opusenc ! queue ! webmmux
///   webmmux ! filesink
/// ```
pub fn webm(path: &Path, out: &Path, height: u32, video_bitrate_kbps: u32) -> Result<(), String> {
    let pr = probe(path, Duration::from_secs(20)).map_err(|e| e.to_string())?;
    let uri = file_uri(path)?;
    let p = gst::Pipeline::new();
    p.use_clock(None::<&gst::Clock>);
    let dec = gst::ElementFactory::make("uridecodebin")
        .property("uri", &uri)
        .build()
        .map_err(gerr)?;
    let mux = make("webmmux")?;
    let fsink = gst::ElementFactory::make("filesink")
        .property("location", out.to_string_lossy().as_ref())
        .build()
        .map_err(gerr)?;
    p.add_many([&dec, &mux, &fsink]).map_err(gerr)?;
    mux.link(&fsink).map_err(gerr)?;

    let mut vhead = None;
    if let Some(v) = &pr.video {
        let h = (height.min(v.height) & !1).max(2);
        let w = ((v.width as f64 * h as f64 / v.height as f64 / 2.0).round() as u32 * 2).max(2);
        let q = queue_raw()?;
        let conv = make("videoconvert")?;
        let flip = make("videoflip")?;
        flip.set_property_from_str("video-direction", "auto");
        let scale = make("videoscale")?;
        let cf = gst::ElementFactory::make("capsfilter")
            .property(
                "caps",
                gst::Caps::builder("video/x-raw")
                    .field("format", "I420")
                    .field("width", w as i32)
                    .field("height", h as i32)
                    .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
                    .build(),
            )
            .build()
            .map_err(gerr)?;
        let enc = make("vp9enc")?;
        enc.set_property("target-bitrate", (video_bitrate_kbps * 1000) as i32);
        enc.set_property("deadline", 1i64);
        enc.set_property("cpu-used", 8i32);
        enc.set_property("threads", 2i32);
        enc.set_property("row-mt", true);
        enc.set_property("lag-in-frames", 0i32);
        enc.set_property_from_str("end-usage", "vbr");
        enc.set_property("keyframe-max-dist", 150i32);
        let q2 = queue_time(10)?;
        p.add_many([&q, &conv, &flip, &scale, &cf, &enc, &q2])
            .map_err(gerr)?;
        gst::Element::link_many([&q, &conv, &flip, &scale, &cf, &enc, &q2]).map_err(gerr)?;
        link_request(&q2, &mux, "video_%u")?;
        vhead = Some(q);
    }
    let mut ahead = None;
    if pr.audio.is_some() {
        let q = queue_time(10)?;
        let conv = make("audioconvert")?;
        let res = make("audioresample")?;
        let cf = gst::ElementFactory::make("capsfilter")
            .property(
                "caps",
                gst::Caps::builder("audio/x-raw")
                    .field("channels", gst::IntRange::new(1, 2))
                    .build(),
            )
            .build()
            .map_err(gerr)?;
        let enc = make("opusenc")?;
        enc.set_property("bitrate", 96_000i32);
        let q2 = queue_time(10)?;
        p.add_many([&q, &conv, &res, &cf, &enc, &q2])
            .map_err(gerr)?;
        gst::Element::link_many([&q, &conv, &res, &cf, &enc, &q2]).map_err(gerr)?;
        link_request(&q2, &mux, "audio_%u")?;
        ahead = Some(q);
    }
    let pw = p.downgrade();
    dec.connect_pad_added(move |_, pad| {
        let Some(p) = pw.upgrade() else { return };
        let name = pad
            .current_caps()
            .and_then(|c| c.structure(0).map(|s| s.name().to_string()))
            .unwrap_or_default();
        let head = match name.as_str() {
            "video/x-raw" => vhead.as_ref(),
            "audio/x-raw" => ahead.as_ref(),
            _ => None,
        };
        match head.map(|h| h.static_pad("sink").unwrap()) {
            Some(s) if !s.is_linked() => {
                let _ = pad.link(&s);
            }
            _ => fake_sink_pad(&p, pad),
        }
    });

    let deadline = Instant::now() + STALL_TIMEOUT + Duration::from_secs_f64(pr.duration_s * 2.0);
    let bus = p.bus().unwrap();
    let res = (|| -> Result<(), String> {
        p.set_state(gst::State::Playing)
            .map_err(|_| "cannot start webm pipeline".to_string())?;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("webm timed out".into());
            }
            let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(left.as_millis() as u64))
            else {
                continue;
            };
            match msg.view() {
                gst::MessageView::Eos(_) => return Ok(()),
                gst::MessageView::Error(e) => return Err(e.error().to_string()),
                _ => {}
            }
        }
    })();
    let _ = p.set_state(gst::State::Null);
    if res.is_err() {
        let _ = std::fs::remove_file(out);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hms_truncates() {
        assert_eq!(hms(72.9), "00:01:12");
        assert_eq!(hms(3661.0), "01:01:01");
        assert_eq!(hms(-1.0), "00:00:00");
    }

    #[test]
    fn fps_fractions() {
        assert_eq!(fps_fraction(Some(30.0)), (30, 1));
        assert_eq!(fps_fraction(Some(29.97002997)), (30000, 1001));
        assert_eq!(fps_fraction(Some(23.976)), (24000, 1001));
        assert_eq!(fps_fraction(Some(25.0)), (25, 1));
        assert_eq!(fps_fraction(Some(240.0)), (60, 1));
        assert_eq!(fps_fraction(None), (30, 1));
        assert_eq!(fps_fraction(Some(0.0)), (30, 1));
    }

    fn rung(name: &str, w: u32, h: u32) -> Rendition {
        Rendition {
            name: name.into(),
            width: w,
            height: h,
            video_bitrate_kbps: 1000,
            profile: "main".into(),
            x264_preset: "veryfast".into(),
        }
    }

    fn probe_v(codec: &str, w: u32, h: u32, rotation: u32) -> Probe {
        Probe {
            duration_s: 10.0,
            video: Some(VideoInfo {
                codec: codec.into(),
                width: w,
                height: h,
                fps: Some(29.97),
                rotation,
            }),
            audio: None,
            container: "mp4".into(),
        }
    }

    fn names(p: &Plan) -> Vec<(&str, u32, u32, bool, bool)> {
        p.encodes
            .iter()
            .map(|e| (e.r.name.as_str(), e.r.width, e.r.height, e.hls, e.mp4))
            .collect()
    }

    #[test]
    fn plans() {
        let mut spec = TranscodeSpec::new(vec![rung("480p", 854, 480), rung("720p", 1280, 720)], 2);
        spec.passthrough_h264 = true;
        spec.mp4 = Some(Mp4Spec {
            source: Mp4Source::Rendition("1080p".into()), // not produced: falls back to largest
            dir: None,
        });
        let p = make_plan(&probe_v("h264", 1280, 720, 0), &spec).unwrap();
        assert_eq!((p.fps, p.gop, p.passthrough), ((30000, 1001), 60, true));
        assert_eq!(
            names(&p),
            [
                ("720p", 1280, 720, true, true),
                ("480p", 854, 480, true, false)
            ]
        );
        let out: Vec<&str> = p.outputs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(out, ["source", "480p", "720p"]); // passthrough first, then spec order
        // rotated: no passthrough; tiny source: smallest rung at source size
        let p = make_plan(&probe_v("h264", 201, 301, 90), &spec).unwrap();
        assert!(!p.passthrough);
        assert_eq!(names(&p), [("480p", 200, 300, true, true)]);
        // own MP4 rendition: extra encode, never upscaled, in chain order
        spec.mp4.as_mut().unwrap().source = Mp4Source::Own(rung("dl", 1920, 1080));
        let p = make_plan(&probe_v("vp9", 1280, 720, 0), &spec).unwrap();
        assert_eq!(
            names(&p),
            [
                ("720p", 1280, 720, true, false),
                ("dl", 1280, 720, false, true),
                ("480p", 854, 480, true, false)
            ]
        );
        // audio only
        let a = Probe {
            video: None,
            audio: Some(AudioInfo {
                codec: "mp3".into(),
                channels: 2,
                rate: 44100,
            }),
            ..probe_v("h264", 1, 1, 0)
        };
        let p = make_plan(&a, &spec).unwrap();
        assert!(p.encodes.is_empty() && p.audio && !p.video);
        assert_eq!(p.outputs[0].name, AUDIO_RENDITION);
    }

    #[test]
    fn isobmff_boxes() {
        let bx = |kind: &[u8; 4], len: u32| {
            let mut v = len.to_be_bytes().to_vec();
            v.extend_from_slice(kind);
            v.resize(len as usize, 0);
            v
        };
        let scan = |data: &[u8]| {
            let f = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(f.path(), data).unwrap();
            isobmff_scan(f.path(), data.len() as u64).unwrap()
        };
        let (ftyp, moov, mdat) = (bx(b"ftyp", 24), bx(b"moov", 100), bx(b"mdat", 1000));
        let fast = [ftyp.clone(), moov.clone(), mdat.clone()].concat();
        let slow = [ftyp.clone(), mdat.clone(), moov.clone()].concat();
        assert_eq!(scan(&fast), Bmff::Complete);
        assert_eq!(scan(&slow), Bmff::Complete);
        assert_eq!(scan(&fast[..500]), Bmff::BoxCut);
        assert_eq!(scan(&slow[..500]), Bmff::MoovMissing);
        assert_eq!(scan(&slow[..1024]), Bmff::MoovMissing);
        assert_eq!(scan(&slow[..1040]), Bmff::MoovMissing); // moov header present, body cut
        assert_eq!(scan(b"hello world, not a box"), Bmff::Other);
    }

    #[test]
    fn rotations() {
        assert_eq!(rotation_deg("rotate-90"), 90);
        assert_eq!(rotation_deg("flip-rotate-270"), 270);
        assert_eq!(rotation_deg("rotate-0"), 0);
    }
}
