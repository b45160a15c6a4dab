//! The transcode: one pipeline from the file to the HLS ladder, with the MP4 download and the
//! storyboard tiles off the same decode, sending its segments as events.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gstreamer as gst;

use tokio::sync::mpsc;

use super::*;
use crate::media::{SOURCE_RENDITION, Segment};
use crate::pipeline::gst::{
    drain_pad, error_text, h264_access_units, link_request, make, next_message, queue_raw,
    queue_time,
};
use crate::pipeline::ladder::{self};

pub(super) type FragBuf = Arc<Mutex<Vec<u8>>>;

/// `Write` target handed to hlssink2 (via gio::WriteOutputStream) for one fragment.
pub(super) struct FragWriter(FragBuf);
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
pub(super) struct Fragments {
    pub(super) queues: Mutex<HashMap<String, VecDeque<FragBuf>>>,
    pub(super) cv: Condvar,
    pub(super) closing: AtomicBool,
}

impl Fragments {
    pub(super) fn open(&self, rend: &str) -> FragBuf {
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
    pub(super) fn take(&self, rend: &str) -> Option<FragBuf> {
        let b = self.queues.lock().unwrap().get_mut(rend)?.pop_front();
        self.cv.notify_all();
        b
    }
    /// Unblocks any waiting streaming thread (before the pipeline goes to NULL).
    pub(super) fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.cv.notify_all();
    }
}

/// hlssink2 cutting one rendition at keyframes into in-memory fragments (its playlist is
/// discarded: the packager writes playlists), with the blocking fragment FIFO.
pub(super) fn make_hls(
    frags: &Arc<Fragments>,
    name: &str,
    seg_s: u32,
) -> Result<gst::Element, VodError> {
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

pub(super) struct Built {
    pub(super) pipeline: gst::Pipeline,
    pub(super) mp4: Option<(PathBuf, PathBuf)>, // (file, faststart scratch file)
    pub(super) linked: Arc<AtomicU32>,
    pub(super) tiles: Option<TileBranch>,
}

pub(super) static MP4_SEQ: AtomicU64 = AtomicU64::new(0);

pub(super) fn build(
    path: &Path,
    spec: &TranscodeSpec,
    plan: &Plan,
    duration_s: f64,
    frags: &Arc<Fragments>,
) -> Result<Built, VodError> {
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
    let attach_mp4_video = |from: &gst::Element| -> Result<(), VodError> {
        let mux = mp4mux.as_ref().unwrap();
        let q = queue_time(10)?;
        let parse = make("h264parse")?;
        add(&[&q, &parse])?;
        link(&[from, &q, &parse])?;
        link_request(&parse, mux, "video_%u").map_err(VodError::from)
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
            let [parse, cf] = h264_access_units()?;
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
        drain_pad(&p, pad);
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

/// The events of one transcode. Sending waits while the consumer is behind (back-pressure on
/// the whole pipeline), and stops once the job is cancelled or the consumer is gone.
pub(super) struct Tx<'a> {
    pub(super) events: &'a mpsc::Sender<VodEvent>,
    pub(super) cancel: &'a AtomicBool,
}

impl Tx<'_> {
    pub(super) fn send(&self, ev: VodEvent) -> Result<(), VodError> {
        if self.cancel.load(Ordering::SeqCst) {
            return Err(VodError::Cancelled);
        }
        self.events
            .blocking_send(ev)
            .map_err(|_| VodError::ReceiverGone)
    }

    /// The last event: delivered unless the consumer is gone.
    pub(super) fn send_final(&self, ev: VodEvent) {
        let _ = self.events.blocking_send(ev);
    }
}

/// Tears the pipeline down on every exit path: waiting streaming threads are released first,
/// otherwise the NULL state change would wait for them forever.
pub(super) struct Teardown<'a> {
    pub(super) pipeline: &'a gst::Pipeline,
    pub(super) frags: &'a Fragments,
    pub(super) mp4: Option<(PathBuf, PathBuf)>,
    pub(super) keep_mp4: bool,
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
/// [`VodEvent::Error`] unless the consumer dropped its receiver. Returns when everything is
/// finished. Blocks: call it from a thread of its own (`spawn_blocking`).
pub fn transcode(
    path: &Path,
    spec: &TranscodeSpec,
    events: mpsc::Sender<VodEvent>,
    cancel: Arc<AtomicBool>,
) -> Result<(), VodError> {
    let tx = Tx {
        events: &events,
        cancel: &cancel,
    };
    let r = run(path, spec, &tx);
    match &r {
        Ok(()) => tx.send_final(VodEvent::Done),
        Err(e) => tx.send_final(VodEvent::Error(e.to_string())),
    }
    r
}

pub(super) fn run(path: &Path, spec: &TranscodeSpec, tx: &Tx) -> Result<(), VodError> {
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
    let fps = probe.video.as_ref().and_then(|v| v.fps);
    let renditions = plan.outputs.iter().map(|r| r.out(fps)).collect();
    tx.send(VodEvent::Renditions(renditions))?;
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

pub(super) fn rendition_of(msg: &gst::Message) -> Option<String> {
    // Source is hlssink2's internal splitmuxsink; its parent is our "hls-<name>".
    let parent = msg.src()?.parent()?;
    parent.name().strip_prefix("hls-").map(str::to_string)
}

pub(super) fn bus_loop(
    p: &gst::Pipeline,
    frags: &Fragments,
    tx: &Tx,
    duration: Duration,
) -> Result<(), VodError> {
    let bus = p.bus().ok_or("pipeline without bus")?;
    let mut opened: HashMap<String, u64> = HashMap::new();
    let mut last_fraction = 0.0f64;
    let mut last_query = Instant::now();
    let mut last_activity = Instant::now();
    loop {
        if tx.cancel.load(Ordering::SeqCst) {
            return Err("cancelled".into());
        }
        if let Some(msg) = next_message(&bus, Duration::from_millis(100)) {
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
                M::Error(_) => return Err(error_text(&msg).unwrap_or_default().into()),
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
            return Err(VodError::Stalled(STALL_TIMEOUT.as_secs()));
        }
    }
}
