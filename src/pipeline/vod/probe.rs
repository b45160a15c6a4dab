//! Probing a file: its streams (GStreamer's discoverer), whether it was cut short (the
//! ISO-BMFF box layout, then a demux of its end), in a bounded time.

use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_pbutils::prelude::*;
use gstreamer as gst;
use gstreamer_pbutils as gst_pbutils;

use super::*;
use crate::media::isobmff::{self, Layout};
use crate::pipeline::gst::wait_for;

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
/// check (see `check_truncation`). Bounded by `timeout` as a whole (Discoverer's own timeout
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
    let bmff = std::fs::File::open(path)
        .and_then(|mut f| isobmff::scan(&mut f, meta.len()))
        .map_err(|e| ProbeError::Io(e.to_string()))?;
    if bmff == Layout::MoovMissing {
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
    check_truncation(path, &p, bmff == Layout::BoxCut, deadline, timeout)?;
    Ok(p)
}

pub(super) fn file_uri(path: &Path) -> Result<String, String> {
    let abs = std::fs::canonicalize(path).map_err(|e| e.to_string())?;
    glib::filename_to_uri(&abs, None)
        .map(|u| u.to_string())
        .map_err(|e| e.to_string())
}

/// Runs the Discoverer asynchronously on a private main context: the synchronous
/// `discover_uri` binding drops the `DiscovererInfo` when there is an error, and with it the
/// missing-plugin details that name the unsupported codec.
pub(super) fn discover(
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

pub(super) fn classify_error(err: Option<glib::Error>) -> ProbeError {
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
pub(super) fn missing_codec(info: &gst_pbutils::DiscovererInfo) -> String {
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
pub(super) fn codec_name(caps: &gst::CapsRef) -> String {
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

pub(super) fn container_name(caps: &gst::CapsRef) -> Option<String> {
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

pub(super) fn probe_from_info(info: &gst_pbutils::DiscovererInfo) -> Probe {
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

pub(super) fn rotation_deg(orientation: &str) -> u32 {
    match orientation {
        "rotate-90" | "flip-rotate-90" => 90,
        "rotate-180" | "flip-rotate-180" => 180,
        "rotate-270" | "flip-rotate-270" => 270,
        _ => 0,
    }
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
pub(super) fn check_truncation(
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
pub(super) fn demux_end(
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
        wait_for(&bus, deadline, |msg| match msg.view() {
            gst::MessageView::AsyncDone(_) if what == "async-done" => Some(true),
            gst::MessageView::Eos(_) | gst::MessageView::Error(_) => Some(false),
            _ => None,
        })
        .ok_or(ProbeError::Timeout(timeout))
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
    fn rotations() {
        assert_eq!(rotation_deg("rotate-90"), 90);
        assert_eq!(rotation_deg("flip-rotate-270"), 270);
        assert_eq!(rotation_deg("rotate-0"), 0);
    }
}
