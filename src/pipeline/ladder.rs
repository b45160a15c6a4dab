//! Why one file (1,155 lines, 82 of them tests): it is one pipeline, built in the two steps
//! below, whose pad callbacks, branch builder and bus loop share `Shared` and its locks;
//! split by job, each part would reach into the others' state. Its pure part (`plan`,
//! `validate`) is unit-tested at the end; what it shares with the other pipelines is in
//! `gst.rs`.
//!
//! Live FLV -> ABR ladder of in-memory MPEG-TS HLS segments, on GStreamer 1.22.
//!
//! Topology (built in two steps, see `build_branches`):
//!
//! ```text
//! appsrc(video/x-flv, max-bytes, block=false) ! flvdemux
//!   flvdemux.video ! queue ! h264parse ! capsfilter(byte-stream,au) ! tee vtee   [buffers blocked until built]
//!   flvdemux.audio ! queue ! aacparse ! tee atee                                 [buffers blocked until built]
//! on (h264parse src caps known && flvdemux no-more-pads):
//!   vtee ! queue ! mpegtsmux ! appsink name=seg-source     (passthrough, no re-encode)
//!   vtee ! queue ! avdec_h264 ! videoconvert ! video/x-raw,format=I420 ! tee rawtee
//!   rawtee ! queue ! x264enc ! video/x-h264,profile=P ! mpegtsmux ! appsink   (same size: no scaler)
//!   rawtee ! queue ! videoscale ! WxH ! tee t480 ; t480 ! queue ! x264enc ! .. ! mpegtsmux ! appsink
//!   t480   ! queue ! videoscale ! WxH ! tee t360 ; ...   (chained: each rung scaled from the next larger)
//!   atee ! queue ! mpegtsmux (of every rendition)        (AAC copied into every rendition)
//! ```
//! Each rendition's continuous transport stream is cut at keyframes by a
//! [`TsSegmenter`](crate::media::segmenter::TsSegmenter) in the appsink's streaming thread; finished
//! segments go to a queue and a `ladder-segment` bus message tells the bus thread to send one.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gst::prelude::*;
use gstreamer as gst;
use gstreamer_app as gst_app;

use tokio::sync::mpsc;

use super::PipelineEvent;
use super::gst::{
    GstError, error_text, h264_access_units, make, make_named, next_message, post_error, queue_raw,
    queue_time,
};
use crate::media::segmenter::TsSegmenter;
use crate::media::{Part, RenditionOut, SOURCE_RENDITION, Segment, SourceSummary};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendition {
    pub name: String,
    /// Nominal size. `min(width, height)` is the rung ("480p" = 480); the output keeps the
    /// source aspect ratio, so only that short side is honoured (see [`plan`]).
    pub width: u32,
    pub height: u32,
    pub video_bitrate_kbps: u32,
    /// baseline | main | high (x264enc picks it from downstream caps)
    pub profile: String,
    /// x264 speed preset nick: ultrafast .. veryslow
    pub x264_preset: String,
}

impl Rendition {
    /// The rendition as produced: [`SOURCE_RENDITION`] is the source copied (no bitrate of
    /// its own), any other an encode at its target bitrate.
    pub fn out(&self, frame_rate: Option<f64>) -> RenditionOut {
        let passthrough = self.name == SOURCE_RENDITION;
        RenditionOut {
            name: self.name.clone(),
            width: self.width,
            height: self.height,
            bitrate_kbps: (!passthrough).then_some(self.video_bitrate_kbps),
            frame_rate,
            passthrough,
        }
    }
}

/// Performance levers; defaults are the best configuration measured (`benches/ladder.rs`).
#[derive(Clone, Debug)]
pub struct Tuning {
    /// videoscale `method` nick: nearest-neighbour, bilinear, 4-tap, lanczos, ...
    pub scale_method: String,
    /// videoscale `n-threads`
    pub scale_threads: u32,
    /// scale each rung from the next larger rung instead of from the source
    pub chained_scaling: bool,
    /// x264enc `threads` (0 = auto). 1 is the cheapest in CPU-s (no slice-thread sync; the
    /// renditions already run in parallel); use 0 if one stream must use several cores.
    pub x264_threads: u32,
    /// x264enc tune=zerolatency (no lookahead, sliced threads)
    pub zerolatency: bool,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            scale_method: "bilinear".into(),
            scale_threads: 1,
            chained_scaling: true,
            x264_threads: 1,
            zerolatency: true,
        }
    }
}

#[derive(Clone, Debug)]
pub struct LadderSpec {
    pub passthrough: bool,
    pub renditions: Vec<Rendition>,
    pub segment_duration_s: u32,
    /// Overrides the frame rate from the stream caps (used for key-int-max).
    pub fps_hint: Option<(i32, i32)>,
    /// appsrc max-bytes: `push` is refused beyond this many queued input bytes.
    pub max_buffered_input_bytes: u64,
    /// No segment for this long while input flows is reported as a stall.
    pub stall_timeout: Duration,
    /// Also hand out parts of each segment about this often (LL-HLS).
    pub part_ns: Option<u64>,
    pub tuning: Tuning,
}

impl LadderSpec {
    pub fn new(passthrough: bool, renditions: Vec<Rendition>, segment_duration_s: u32) -> Self {
        LadderSpec {
            passthrough,
            renditions,
            segment_duration_s,
            fps_hint: None,
            max_buffered_input_bytes: 8 << 20,
            stall_timeout: Duration::from_secs(3 * u64::from(segment_duration_s)),
            part_ns: None,
            tuning: Tuning::default(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct SourceInfo {
    pub width: u32,
    pub height: u32,
    pub fps: Option<(i32, i32)>,
    pub video_codec: String,
    /// None = no audio; Some("mp3") etc. = present but not AAC, hence not muxed.
    pub audio_codec: Option<String>,
    /// What is actually produced (passthrough first as [`SOURCE_RENDITION`]), real sizes.
    pub renditions: Vec<Rendition>,
    pub gop_frames: u32,
}

impl SourceInfo {
    /// What the pipeline reports once the source is known: the source, then the renditions.
    fn events(&self) -> [PipelineEvent; 2] {
        let fps = self
            .fps
            .filter(|(_, d)| *d > 0)
            .map(|(n, d)| f64::from(n) / f64::from(d));
        let renditions = self.renditions.iter().map(|r| r.out(fps)).collect();
        [
            PipelineEvent::Source(SourceSummary {
                width: self.width,
                height: self.height,
                video_codec: self.video_codec.clone(),
                audio_codec: self.audio_codec.clone(),
                gop_frames: self.gop_frames,
            }),
            PipelineEvent::Renditions(renditions),
        ]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid ladder spec: {0}")]
    InvalidSpec(String),
    #[error("gstreamer: {0}")]
    Gst(String),
    /// Input queue full: retry later (or drop the publisher). Nothing was queued.
    #[error("input backpressure: {queued_bytes} bytes queued (limit {limit})")]
    Backpressure { queued_bytes: u64, limit: u64 },
    /// The pipeline failed or is finishing; no more input accepted.
    #[error("pipeline closed")]
    Closed,
    /// The first bytes pushed are not an FLV header.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("timeout: {0}")]
    Timeout(String),
}

impl From<glib::BoolError> for Error {
    fn from(e: glib::BoolError) -> Self {
        Error::Gst(e.to_string())
    }
}

impl From<GstError> for Error {
    fn from(e: GstError) -> Self {
        Error::Gst(e.0)
    }
}

fn even(x: f64) -> u32 {
    (((x / 2.0).round() as u32) * 2).max(2)
}

/// Pure ladder decision. Drops renditions whose rung (short side) exceeds the source's short
/// side (never upscale); the kept ones get the source aspect ratio with even dimensions,
/// oriented like the source (a 480p rung of a 720x1280 portrait source is 480x854).
/// Spec order is preserved.
pub fn plan(spec: &LadderSpec, source_width: u32, source_height: u32) -> Vec<Rendition> {
    if source_width == 0 || source_height == 0 {
        return Vec::new();
    }
    let (sw, sh) = (source_width as f64, source_height as f64);
    let src_short = source_width.min(source_height);
    spec.renditions
        .iter()
        .filter_map(|r| {
            let rung = r.width.min(r.height);
            if rung == 0 || rung > src_short {
                return None;
            }
            let (w, h) = if source_width >= source_height {
                (
                    even(rung as f64 * sw / sh).min(source_width & !1),
                    even(rung as f64),
                )
            } else {
                (
                    even(rung as f64),
                    even(rung as f64 * sh / sw).min(source_height & !1),
                )
            };
            let (w, h) = if rung == src_short {
                (source_width & !1, source_height & !1)
            } else {
                (w, h)
            };
            Some(Rendition {
                width: w.max(2),
                height: h.max(2),
                ..r.clone()
            })
        })
        .collect()
}

const PRESETS: &[&str] = &[
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
];
const PROFILES: &[&str] = &["baseline", "constrained-baseline", "main", "high"];

pub(crate) fn validate(spec: &LadderSpec) -> Result<(), Error> {
    let bad = |s: String| Err(Error::InvalidSpec(s));
    if spec.segment_duration_s == 0 {
        return bad("segment_duration_s must be > 0".into());
    }
    if !spec.passthrough && spec.renditions.is_empty() {
        return bad("no outputs".into());
    }
    let mut names = std::collections::HashSet::new();
    for r in &spec.renditions {
        if r.name.is_empty()
            || r.name == SOURCE_RENDITION
            || !r
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return bad(format!("bad rendition name {:?}", r.name));
        }
        if !names.insert(r.name.clone()) {
            return bad(format!("duplicate rendition name {:?}", r.name));
        }
        if !PRESETS.contains(&r.x264_preset.as_str()) {
            return bad(format!(
                "{}: unknown x264 preset {:?}",
                r.name, r.x264_preset
            ));
        }
        if !PROFILES.contains(&r.profile.as_str()) {
            return bad(format!("{}: unknown profile {:?}", r.name, r.profile));
        }
        if r.video_bitrate_kbps == 0 {
            return bad(format!("{}: bitrate 0", r.name));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct VideoCaps {
    width: u32,
    height: u32,
    fps: Option<(i32, i32)>,
}

#[derive(Default)]
struct BuildState {
    video: Option<VideoCaps>,
    video_pad_seen: bool,
    audio_codec: Option<String>,
    aac_branch: bool,
    no_more_pads: bool,
    built: bool,
    blocks: Vec<(gst::Pad, gst::PadProbeId)>,
}

struct Shared {
    spec: LadderSpec,
    build: Mutex<BuildState>,
    source_info: Mutex<Option<SourceInfo>>,
    /// Finished segments and parts, oldest first; one `ladder-segment` bus message was
    /// posted for each.
    segments: Mutex<VecDeque<PipelineEvent>>,
    failed: AtomicBool,
    finishing: AtomicBool,
    epoch: Instant,
    first_push_ms: AtomicU64, // 0 = never (stored as ms since epoch + 1)
    last_push_ms: AtomicU64,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }
}

type Done = Arc<(Mutex<Option<Result<(), String>>>, Condvar)>;

pub struct LivePipeline {
    pipeline: gst::Pipeline,
    appsrc: gst_app::AppSrc,
    shared: Arc<Shared>,
    done: Done,
    stop: Arc<AtomicBool>,
    bus_thread: Option<JoinHandle<()>>,
}

impl LivePipeline {
    pub fn start(spec: LadderSpec, events: mpsc::Sender<PipelineEvent>) -> Result<Self, Error> {
        validate(&spec)?;
        gst::init().map_err(|e| Error::Gst(e.to_string()))?;
        let pipeline = gst::Pipeline::with_name("ladder");
        let appsrc = gst_app::AppSrc::builder()
            .name("src")
            .caps(&gst::Caps::builder("video/x-flv").build())
            .format(gst::Format::Bytes)
            .is_live(false)
            .block(false)
            .max_bytes(spec.max_buffered_input_bytes)
            .build();
        let demux = make_named("flvdemux", "demux")?;
        pipeline.add_many([appsrc.upcast_ref(), &demux])?;
        appsrc.link(&demux)?;

        let shared = Arc::new(Shared {
            spec,
            build: Mutex::new(BuildState::default()),
            source_info: Mutex::new(None),
            segments: Mutex::new(VecDeque::new()),
            failed: AtomicBool::new(false),
            finishing: AtomicBool::new(false),
            epoch: Instant::now(),
            first_push_ms: AtomicU64::new(0),
            last_push_ms: AtomicU64::new(0),
        });

        let (sh, pw) = (shared.clone(), pipeline.downgrade());
        demux.connect_pad_added(move |_, pad| {
            let Some(p) = pw.upgrade() else { return };
            if let Err(e) = on_demux_pad(&p, &sh, pad) {
                post_error(&p, &format!("linking flvdemux pad {}: {e}", pad.name()));
            }
        });
        let (sh, pw) = (shared.clone(), pipeline.downgrade());
        demux.connect_no_more_pads(move |_| {
            let Some(p) = pw.upgrade() else { return };
            let no_video = {
                let mut st = sh.build.lock().unwrap();
                st.no_more_pads = true;
                !st.video_pad_seen
            };
            if no_video {
                post_error(&p, "FLV stream has no video");
            } else {
                try_build(&p, &sh);
            }
        });

        let done: Done = Arc::new((Mutex::new(None), Condvar::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let bus = pipeline.bus().expect("pipeline bus");
        let (sh, d, st) = (shared.clone(), done.clone(), stop.clone());
        let bus_thread = std::thread::Builder::new()
            .name("ladder-bus".into())
            .spawn(move || bus_loop(bus, sh, events, d, st))
            .map_err(|e| Error::Gst(format!("spawn bus thread: {e}")))?;

        let this = LivePipeline {
            pipeline,
            appsrc,
            shared,
            done,
            stop,
            bus_thread: Some(bus_thread),
        };
        this.pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| Error::Gst(format!("set PLAYING: {e}")))?;
        Ok(this)
    }

    /// Queue FLV bytes. Never blocks and never queues beyond `max_buffered_input_bytes`:
    /// returns `Error::Backpressure` (nothing queued) when full. Single producer expected.
    pub fn push(&self, flv_bytes: bytes::Bytes) -> Result<(), Error> {
        if self.shared.failed.load(Ordering::SeqCst) || self.shared.finishing.load(Ordering::SeqCst)
        {
            return Err(Error::Closed);
        }
        let now = self.shared.now_ms();
        if self.shared.first_push_ms.load(Ordering::SeqCst) == 0
            && flv_bytes.len() >= 3
            && &flv_bytes[..3] != b"FLV"
        {
            return Err(Error::InvalidInput(
                "stream does not start with an FLV header".into(),
            ));
        }
        let _ =
            self.shared
                .first_push_ms
                .compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst);
        self.shared.last_push_ms.store(now, Ordering::SeqCst);
        let limit = self.shared.spec.max_buffered_input_bytes;
        let queued = self.appsrc.current_level_bytes();
        if queued > 0 && queued + flv_bytes.len() as u64 > limit {
            return Err(Error::Backpressure {
                queued_bytes: queued,
                limit,
            });
        }
        self.appsrc
            .push_buffer(gst::Buffer::from_slice(flv_bytes))
            .map(|_| ())
            .map_err(|e| Error::Gst(format!("appsrc push: {e:?}")))
    }

    /// EOS, wait up to `timeout` for the final segments + Eos event, then tear down. Never
    /// call it from the task that reads the events: the events wait for their reader.
    pub fn finish_with_timeout(mut self, timeout: Duration) -> Result<(), Error> {
        self.shared.finishing.store(true, Ordering::SeqCst);
        let _ = self.appsrc.end_of_stream();
        let (lock, cv) = &*self.done;
        let res = {
            let g = lock.lock().unwrap();
            let (g, _) = cv.wait_timeout_while(g, timeout, |r| r.is_none()).unwrap();
            g.clone()
        };
        self.shutdown();
        match res {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(Error::Gst(e)),
            None => Err(Error::Timeout(format!("no EOS within {timeout:?}"))),
        }
    }

    fn shutdown(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.bus_thread.take() {
            let _ = t.join();
        }
        // Break the (closure -> Shared -> pad) references.
        self.shared.build.lock().unwrap().blocks.clear();
    }
}

impl Drop for LivePipeline {
    fn drop(&mut self) {
        if self.bus_thread.is_some() {
            self.shutdown();
        }
    }
}

// --- dynamic part ----------------------------------------------------------------------------

fn on_demux_pad(p: &gst::Pipeline, sh: &Arc<Shared>, pad: &gst::Pad) -> Result<(), Error> {
    let caps = pad
        .current_caps()
        .ok_or_else(|| Error::Gst("pad without caps".into()))?;
    let s = caps
        .structure(0)
        .ok_or_else(|| Error::Gst("empty caps".into()))?;
    let media = s.name().to_string();
    let block = |tee: &gst::Element| -> Result<(), Error> {
        let sinkpad = tee.static_pad("sink").unwrap();
        let id = sinkpad
            .add_probe(
                gst::PadProbeType::BLOCK
                    | gst::PadProbeType::BUFFER
                    | gst::PadProbeType::BUFFER_LIST,
                |_, _| gst::PadProbeReturn::Ok,
            )
            .ok_or_else(|| Error::Gst("add probe".into()))?;
        sh.build.lock().unwrap().blocks.push((sinkpad, id));
        Ok(())
    };
    if pad.name().starts_with("video") {
        if media != "video/x-h264" {
            return Err(Error::Gst(format!(
                "unsupported video codec {media} (need H.264)"
            )));
        }
        sh.build.lock().unwrap().video_pad_seen = true;
        // > flvdemux's 6 s no-more-pads timeout (header announces audio that never comes),
        // otherwise the blocked video would stop flvdemux before it gives up waiting.
        let q = queue_time(10)?;
        let [parse, cf] = h264_access_units()?;
        let tee = make_named("tee", "vtee")?;
        p.add_many([&q, &parse, &cf, &tee])?;
        gst::Element::link_many([&q, &parse, &cf, &tee])?;
        block(&tee)?;
        let (sh2, pw) = (sh.clone(), p.downgrade());
        parse.static_pad("src").unwrap().add_probe(
            gst::PadProbeType::EVENT_DOWNSTREAM,
            move |_, info| {
                if let Some(gst::PadProbeData::Event(ev)) = &info.data
                    && let gst::EventView::Caps(c) = ev.view()
                    && let Some(s) = c.caps().structure(0)
                    && let (Ok(w), Ok(h)) = (s.get::<i32>("width"), s.get::<i32>("height"))
                {
                    let fps = s
                        .get::<gst::Fraction>("framerate")
                        .ok()
                        // A variable-rate source (WebRTC) may claim 1e9 fps from its
                        // timestamps' time base: only a plausible rate is a frame rate.
                        .filter(|f| {
                            f.numer() > 0
                                && f.denom() > 0
                                && (1.0..=240.0).contains(&(f.numer() as f64 / f.denom() as f64))
                        });
                    let first = {
                        let mut st = sh2.build.lock().unwrap();
                        let first = st.video.is_none();
                        if first {
                            st.video = Some(VideoCaps {
                                width: w as u32,
                                height: h as u32,
                                fps: fps.map(|f| (f.numer(), f.denom())),
                            });
                        }
                        first
                    };
                    if first && let Some(p) = pw.upgrade() {
                        try_build(&p, &sh2);
                    }
                }
                gst::PadProbeReturn::Ok
            },
        );
        for e in [&tee, &cf, &parse, &q] {
            e.sync_state_with_parent()?;
        }
        pad.link(&q.static_pad("sink").unwrap())
            .map_err(|e| Error::Gst(format!("{e:?}")))?;
    } else if pad.name().starts_with("audio") {
        let is_aac = media == "audio/mpeg" && s.get::<i32>("mpegversion").ok() == Some(4);
        let codec = if is_aac {
            "aac".to_string()
        } else if media == "audio/mpeg" {
            "mp3".to_string()
        } else {
            media.clone()
        };
        let chain: Vec<gst::Element> = if is_aac {
            let tee = make_named("tee", "atee")?;
            vec![queue_time(10)?, make("aacparse")?, tee]
        } else {
            vec![make("fakesink")?] // non-AAC audio is not muxed (not supported here)
        };
        p.add_many(chain.iter())?;
        gst::Element::link_many(chain.iter())?;
        let mut probe = if is_aac {
            let tee_sink = chain[2].static_pad("sink").unwrap();
            let id = tee_sink
                .add_probe(
                    gst::PadProbeType::BLOCK
                        | gst::PadProbeType::BUFFER
                        | gst::PadProbeType::BUFFER_LIST,
                    |_, _| gst::PadProbeReturn::Ok,
                )
                .ok_or_else(|| Error::Gst("add probe".into()))?;
            Some((tee_sink, id))
        } else {
            None
        };
        // Register atomically with the build decision: audio that shows up after the branches
        // were built (flvdemux stops waiting for it after 6 s) cannot join running muxers, so
        // it is dropped instead of blocking the demuxer.
        let late = {
            let mut st = sh.build.lock().unwrap();
            st.audio_codec = Some(codec);
            if st.built {
                true
            } else {
                st.aac_branch = is_aac;
                if let Some(b) = probe.take() {
                    st.blocks.push(b);
                }
                false
            }
        };
        if late && let Some((pad, id)) = probe {
            pad.remove_probe(id);
            chain[2].set_property("allow-not-linked", true);
        }
        for e in chain.iter().rev() {
            e.sync_state_with_parent()?;
        }
        pad.link(&chain[0].static_pad("sink").unwrap())
            .map_err(|e| Error::Gst(format!("{e:?}")))?;
    }
    Ok(())
}

/// Builds the output branches once both the video size and the full set of pads are known.
/// The decision is taken under the lock, the GStreamer work is done outside it.
fn try_build(p: &gst::Pipeline, sh: &Arc<Shared>) {
    let ready = {
        let mut st = sh.build.lock().unwrap();
        if st.built || !st.no_more_pads || st.video.is_none() {
            None
        } else {
            st.built = true;
            Some((
                st.video.clone().unwrap(),
                st.aac_branch,
                st.audio_codec.clone(),
            ))
        }
    };
    let Some((video, aac, audio_codec)) = ready else {
        return;
    };
    match build_branches(p, sh, &video, aac) {
        Ok((renditions, gop_frames)) => {
            *sh.source_info.lock().unwrap() = Some(SourceInfo {
                width: video.width,
                height: video.height,
                fps: video.fps,
                video_codec: "h264".into(),
                audio_codec,
                renditions,
                gop_frames,
            });
            let _ = p.post_message(
                gst::message::Application::builder(gst::Structure::new_empty("ladder-source-info"))
                    .src(p)
                    .build(),
            );
        }
        Err(e) => post_error(p, &format!("building ladder: {e}")),
    }
    let blocks = std::mem::take(&mut sh.build.lock().unwrap().blocks);
    for (pad, id) in blocks {
        pad.remove_probe(id);
    }
}

/// `mpegtsmux ! appsink` for one rendition; returns the muxer (link its request pads).
fn make_output(
    p: &gst::Pipeline,
    sh: &Arc<Shared>,
    name: &str,
    frame_ns: u64,
) -> Result<(gst::Element, gst::Element), Error> {
    let mux = make_named("mpegtsmux", &format!("mux-{name}"))?;
    // mpegtsmux pushes each muxed frame as a list of 188-byte packet buffers: taking the list
    // whole makes one callback per frame instead of one per packet (37 times fewer).
    let sink = gst_app::AppSink::builder()
        .name(format!("seg-{name}"))
        .sync(false)
        .enable_last_sample(false)
        .buffer_list(true)
        .build();
    let target_ns = u64::from(sh.spec.segment_duration_s) * 1_000_000_000;
    let mut segmenter = TsSegmenter::new(target_ns, frame_ns);
    if let Some(part_ns) = sh.spec.part_ns {
        segmenter = segmenter.with_parts(part_ns);
    }
    let segmenter = Arc::new(Mutex::new(segmenter));
    // Hands out the parts cut so far, then the segment (if one was finished).
    let hand_out = {
        let (sh, pw, name) = (sh.clone(), p.downgrade(), name.to_string());
        move |parts: Vec<crate::media::segmenter::TsPart>,
              seg: Option<crate::media::segmenter::TsSegment>| {
            let mut events: Vec<PipelineEvent> = parts
                .into_iter()
                .map(|part| {
                    PipelineEvent::Part(Part {
                        rendition: name.clone(),
                        bytes: part.bytes,
                        independent: part.independent,
                    })
                })
                .collect();
            if let Some(seg) = seg {
                tracing::debug!(rendition = %name, duration_s = seg.duration_s, "segment cut");
                events.push(PipelineEvent::Segment(Segment {
                    rendition: name.clone(),
                    duration_s: seg.duration_s,
                    bytes: seg.bytes,
                }));
            }
            if events.is_empty() {
                return;
            }
            let count = events.len();
            sh.segments.lock().unwrap().extend(events);
            if let Some(p) = pw.upgrade() {
                for _ in 0..count {
                    let _ = p.post_message(
                        gst::message::Application::builder(gst::Structure::new_empty(
                            "ladder-segment",
                        ))
                        .src(&p)
                        .build(),
                    );
                }
            }
        }
    };
    let hand_out = Arc::new(hand_out);
    let (seg_a, out_a) = (segmenter.clone(), hand_out.clone());
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let mut segmenter = seg_a.lock().unwrap();
                let mut push = |buf: &gst::BufferRef| -> Result<(), gst::FlowError> {
                    let map = buf.map_readable().map_err(|_| gst::FlowError::Error)?;
                    let key = !buf.flags().contains(gst::BufferFlags::DELTA_UNIT);
                    let pts = buf.pts().map(|t| t.nseconds());
                    let seg = segmenter.push(&map, pts, key);
                    let parts = segmenter.take_parts();
                    if seg.is_some() || !parts.is_empty() {
                        out_a(parts, seg);
                    }
                    Ok(())
                };
                if let Some(list) = sample.buffer_list() {
                    for buf in list.iter() {
                        push(buf)?;
                    }
                } else if let Some(buf) = sample.buffer() {
                    push(buf)?;
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .eos(move |_| {
                let mut segmenter = segmenter.lock().unwrap();
                let seg = segmenter.finish();
                hand_out(segmenter.take_parts(), seg);
            })
            .build(),
    );
    Ok((mux, sink.upcast()))
}

fn build_branches(
    p: &gst::Pipeline,
    sh: &Arc<Shared>,
    v: &VideoCaps,
    aac: bool,
) -> Result<(Vec<Rendition>, u32), Error> {
    let spec = &sh.spec;
    let tun = &spec.tuning;
    let planned = plan(spec, v.width, v.height);
    if planned.is_empty() && !spec.passthrough {
        return Err(Error::InvalidSpec(format!(
            "no rendition fits a {}x{} source and passthrough is off",
            v.width, v.height
        )));
    }
    let (fn_, fd) = spec.fps_hint.or(v.fps).unwrap_or((30, 1));
    let gop = ((fn_ as f64 / fd as f64) * spec.segment_duration_s as f64)
        .round()
        .max(1.0) as u32;
    let frame_ns = (1e9 * fd as f64 / fn_ as f64) as u64;
    let vtee = p
        .by_name("vtee")
        .ok_or_else(|| Error::Gst("no vtee".into()))?;
    let atee = if aac { p.by_name("atee") } else { None };

    let mut added: Vec<gst::Element> = Vec::new();
    let mut add = |els: &[&gst::Element]| -> Result<(), Error> {
        p.add_many(els.iter().copied())?;
        added.extend(els.iter().map(|e| (*e).clone()));
        Ok(())
    };
    let attach_audio =
        |mux: &gst::Element, add: &mut dyn FnMut(&[&gst::Element]) -> Result<(), Error>| {
            if let Some(atee) = &atee {
                let q = queue_time(10)?;
                add(&[&q])?;
                atee.link(&q)?;
                q.link(mux)?;
            }
            Ok::<(), Error>(())
        };

    let mut outputs = Vec::new();
    if spec.passthrough {
        let (mux, sink) = make_output(p, sh, SOURCE_RENDITION, frame_ns)?;
        let q = queue_time(5)?;
        add(&[&q, &mux, &sink])?;
        vtee.link(&q)?;
        q.link(&mux)?;
        mux.link(&sink)?;
        attach_audio(&mux, &mut add)?;
        outputs.push(Rendition {
            name: SOURCE_RENDITION.into(),
            width: v.width,
            height: v.height,
            video_bitrate_kbps: 0,
            profile: String::new(),
            x264_preset: String::new(),
        });
    }
    if !planned.is_empty() {
        let q = queue_time(5)?;
        let dec = make("avdec_h264")?;
        let conv = make("videoconvert")?; // passthrough when the decoder gives I420
        let cf = make("capsfilter")?;
        cf.set_property(
            "caps",
            gst::Caps::builder("video/x-raw")
                .field("format", "I420")
                .build(),
        );
        let rawtee = make("tee")?;
        add(&[&q, &dec, &conv, &cf, &rawtee])?;
        vtee.link(&q)?;
        gst::Element::link_many([&q, &dec, &conv, &cf, &rawtee])?;

        let mut order: Vec<&Rendition> = planned.iter().collect();
        order.sort_by_key(|r| std::cmp::Reverse(r.width as u64 * r.height as u64));
        let mut parent = (rawtee.clone(), v.width, v.height);
        for r in order {
            let (ptee, pw, ph) = if tun.chained_scaling {
                parent.clone()
            } else {
                (rawtee.clone(), v.width, v.height)
            };
            let rtee = if (r.width, r.height) == (v.width, v.height) {
                rawtee.clone()
            } else if (r.width, r.height) == (pw, ph) {
                ptee.clone()
            } else {
                let q = queue_raw()?;
                let (scale, cf) = scaler(tun, r.width, r.height)?;
                let t = make("tee")?;
                add(&[&q, &scale, &cf, &t])?;
                ptee.link(&q)?;
                gst::Element::link_many([&q, &scale, &cf, &t])?;
                t
            };
            let q = queue_raw()?;
            let (enc, cf) = x264_encoder(r, gop, tun)?;
            let (mux, sink) = make_output(p, sh, &r.name, frame_ns)?;
            add(&[&q, &enc, &cf, &mux, &sink])?;
            rtee.link(&q)?;
            gst::Element::link_many([&q, &enc, &cf])?;
            cf.link(&mux)?;
            mux.link(&sink)?;
            attach_audio(&mux, &mut add)?;
            outputs.push(r.clone());
            parent = (rtee, r.width, r.height);
        }
    }
    for e in added.iter().rev() {
        e.sync_state_with_parent()?;
    }
    Ok((outputs, gop))
}

/// `videoscale ! capsfilter` to `width`x`height`, square pixels, keeping the input's colour
/// matrix. Caps without colorimetry (what avdec_h264 gives for a stream that does not signal
/// it) default by frame size in GStreamer 1.22: BT.709 above 576 lines, BT.601 up to them.
/// Left alone, a 480p rung scaled from 720p frames would be converted pixel by pixel from one
/// matrix to the other, which more than doubled the scaler's CPU (measured with gst-launch:
/// 5.5 against 2.3 CPU-s for 60 s of 720p to 480p), and which ffmpeg's scaler does not do.
/// (Later GStreamer versions default 2160 lines and more to BT.2020, which this would then
/// carry into every rung of an untagged 4K source.)
pub(crate) fn scaler(
    tun: &Tuning,
    width: u32,
    height: u32,
) -> Result<(gst::Element, gst::Element), Error> {
    let scale = make("videoscale")?;
    scale.set_property_from_str("method", &tun.scale_method);
    scale.set_property("n-threads", tun.scale_threads);
    scale.set_property("add-borders", false);
    let cf = make("capsfilter")?;
    let caps = move |colorimetry: Option<&str>| {
        let mut b = gst::Caps::builder("video/x-raw")
            .field("width", width as i32)
            .field("height", height as i32)
            .field("pixel-aspect-ratio", gst::Fraction::new(1, 1));
        if let Some(c) = colorimetry {
            b = b.field("colorimetry", c);
        }
        b.build()
    };
    cf.set_property("caps", caps(None));
    // The input's colorimetry is known only when its caps arrive.
    follow_input_caps(&scale, &cf, move |input| {
        let input = gstreamer_video::VideoInfo::from_caps(input).ok()?;
        Some(caps(Some(&input.colorimetry().to_string())))
    });
    Ok((scale, cf))
}

/// Sets `filter`'s caps from the caps entering `element`, before `element` negotiates its
/// output: for outputs that depend on the input (its colorimetry, its display aspect ratio).
/// `output` returning `None` leaves the filter as it is.
pub(crate) fn follow_input_caps(
    element: &gst::Element,
    filter: &gst::Element,
    output: impl Fn(&gst::CapsRef) -> Option<gst::Caps> + Send + Sync + 'static,
) {
    let filter = filter.downgrade();
    element.static_pad("sink").unwrap().add_probe(
        gst::PadProbeType::EVENT_DOWNSTREAM,
        move |_, info| {
            if let Some(gst::PadProbeData::Event(ev)) = &info.data
                && let gst::EventView::Caps(c) = ev.view()
                && let Some(filter) = filter.upgrade()
                && let Some(caps) = output(c.caps())
            {
                filter.set_property("caps", caps);
            }
            gst::PadProbeReturn::Ok
        },
    );
}

/// x264enc + profile capsfilter for one rung. Shared with the VOD pipeline (`vod/transcode.rs`) so that
/// live and VOD renditions are encoded identically (fixed GOP of `gop` frames, no B-frames, no
/// scenecut: every segment starts with an IDR at the same frame index in every rendition).
pub(crate) fn x264_encoder(
    r: &Rendition,
    gop: u32,
    tun: &Tuning,
) -> Result<(gst::Element, gst::Element), Error> {
    let enc = make("x264enc")?;
    enc.set_property("bitrate", r.video_bitrate_kbps);
    enc.set_property_from_str("speed-preset", &r.x264_preset);
    if tun.zerolatency {
        enc.set_property_from_str("tune", "zerolatency");
    }
    enc.set_property("key-int-max", gop);
    enc.set_property("bframes", 0u32);
    enc.set_property("threads", tun.x264_threads);
    enc.set_property("option-string", format!("scenecut=0:min-keyint={gop}"));
    let cf = make("capsfilter")?;
    cf.set_property(
        "caps",
        gst::Caps::builder("video/x-h264")
            .field("profile", r.profile.as_str())
            .field("stream-format", "byte-stream")
            .field("alignment", "au")
            .build(),
    );
    Ok((enc, cf))
}

// --- bus thread ------------------------------------------------------------------------------

fn bus_loop(
    bus: gst::Bus,
    sh: Arc<Shared>,
    events: mpsc::Sender<PipelineEvent>,
    done: Done,
    stop: Arc<AtomicBool>,
) {
    let stall_ms = sh.spec.stall_timeout.as_millis() as u64;
    let mut last_segment_ms = 0u64;
    let mut stall_reported = false;
    let mut ended = false;
    let set_done = |r: Result<(), String>| {
        let (l, cv) = &*done;
        let mut g = l.lock().unwrap();
        if g.is_none() {
            *g = Some(r);
        }
        cv.notify_all();
    };
    // Waits while the consumer is behind (finished segments wait in `Shared::segments`
    // meanwhile, as they did before). A consumer that is gone ends the sending, not the loop.
    // So the consumer must keep reading, or drop its receiver, until `finish_with_timeout`
    // or the drop that stops this thread returns (the live session does both).
    let send = |ev: PipelineEvent| {
        let _ = events.blocking_send(ev);
    };
    while !stop.load(Ordering::SeqCst) {
        if let Some(msg) = next_message(&bus, Duration::from_millis(100)) {
            use gst::MessageView as M;
            match msg.view() {
                M::Application(a)
                    if a.structure().map(|s| s.name() == "ladder-segment") == Some(true) =>
                {
                    let Some(event) = sh.segments.lock().unwrap().pop_front() else {
                        continue;
                    };
                    if matches!(event, PipelineEvent::Segment(_)) {
                        last_segment_ms = sh.now_ms();
                        stall_reported = false;
                    }
                    send(event);
                }
                M::Application(a)
                    if a.structure().map(|s| s.name() == "ladder-source-info") == Some(true) =>
                {
                    if let Some(info) = sh.source_info.lock().unwrap().take() {
                        info.events().into_iter().for_each(send);
                    }
                }
                M::Error(_) => {
                    let text = error_text(&msg).unwrap_or_default();
                    sh.failed.store(true, Ordering::SeqCst);
                    ended = true;
                    send(PipelineEvent::Failed(text.clone()));
                    set_done(Err(text));
                }
                M::Eos(_) => {
                    ended = true;
                    send(PipelineEvent::Finished);
                    set_done(Ok(()));
                }
                _ => {}
            }
        }
        // Stall watchdog: input flowing (pushed recently) but no segment for 3x segment duration.
        let (first, last) = (
            sh.first_push_ms.load(Ordering::SeqCst),
            sh.last_push_ms.load(Ordering::SeqCst),
        );
        if !ended && !stall_reported && first > 0 && !sh.finishing.load(Ordering::SeqCst) {
            let now = sh.now_ms();
            let since = last_segment_ms.max(first);
            if now - since > stall_ms && now - last < stall_ms {
                stall_reported = true;
                send(PipelineEvent::Failed(format!(
                    "stall: no segment for {:.1}s while input is flowing",
                    (now - since) as f64 / 1000.0
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, w: u32, h: u32) -> Rendition {
        Rendition {
            name: name.into(),
            width: w,
            height: h,
            video_bitrate_kbps: 1000,
            profile: "main".into(),
            x264_preset: "veryfast".into(),
        }
    }
    fn spec() -> LadderSpec {
        LadderSpec::new(
            true,
            vec![
                r("1080p", 1920, 1080),
                r("720p", 1280, 720),
                r("480p", 854, 480),
                r("360p", 640, 360),
            ],
            2,
        )
    }
    fn dims(v: &[Rendition]) -> Vec<(&str, u32, u32)> {
        v.iter()
            .map(|r| (r.name.as_str(), r.width, r.height))
            .collect()
    }

    #[test]
    fn landscape_720_drops_1080() {
        assert_eq!(
            dims(&plan(&spec(), 1280, 720)),
            [("720p", 1280, 720), ("480p", 854, 480), ("360p", 640, 360)]
        );
    }
    #[test]
    fn portrait_keeps_orientation() {
        assert_eq!(
            dims(&plan(&spec(), 720, 1280)),
            [("720p", 720, 1280), ("480p", 480, 854), ("360p", 360, 640)]
        );
    }
    #[test]
    fn four_by_three() {
        assert_eq!(
            dims(&plan(&spec(), 640, 480)),
            [("480p", 640, 480), ("360p", 480, 360)]
        );
    }
    #[test]
    fn odd_and_tiny_sources() {
        assert_eq!(
            dims(&plan(&spec(), 1279, 719)),
            [("480p", 854, 480), ("360p", 640, 360)]
        );
        assert_eq!(dims(&plan(&spec(), 1920, 1080))[0], ("1080p", 1920, 1080));
        assert!(plan(&spec(), 320, 240).is_empty());
        assert!(plan(&spec(), 0, 0).is_empty());
        for (w, h) in [(1366, 768), (1000, 562), (562, 1000), (1920, 800)] {
            for x in plan(&spec(), w, h) {
                assert!(
                    x.width % 2 == 0 && x.height % 2 == 0 && x.width <= w && x.height <= h,
                    "{x:?}"
                );
            }
        }
    }
    #[test]
    fn validation() {
        let mut s = spec();
        s.renditions[1].name = "480p".into();
        assert!(matches!(validate(&s), Err(Error::InvalidSpec(_))));
        let mut s = spec();
        s.renditions[0].x264_preset = "warp".into();
        assert!(validate(&s).is_err());
        assert!(validate(&spec()).is_ok());
    }
}
