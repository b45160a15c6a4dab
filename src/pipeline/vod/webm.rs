//! A VP9/Opus WebM download, from the file, unclocked.

use std::path::Path;
use std::time::{Duration, Instant};

use gst::prelude::*;
use gstreamer as gst;

use super::*;
use crate::pipeline::gst::{drain_pad, link_request, make, queue_raw, queue_time, wait_for};

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
pub fn webm(path: &Path, out: &Path, height: u32, video_bitrate_kbps: u32) -> Result<(), VodError> {
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
            _ => drain_pad(&p, pad),
        }
    });

    let deadline = Instant::now() + STALL_TIMEOUT + Duration::from_secs_f64(pr.duration_s * 2.0);
    let bus = p.bus().unwrap();
    let res = (|| -> Result<(), VodError> {
        p.set_state(gst::State::Playing)
            .map_err(|_| "cannot start webm pipeline".to_string())?;
        wait_for(&bus, deadline, |msg| match msg.view() {
            gst::MessageView::Eos(_) => Some(Ok(())),
            gst::MessageView::Error(e) => Some(Err(e.error().to_string().into())),
            _ => None,
        })
        .unwrap_or_else(|| Err("webm timed out".into()))
    })();
    let _ = p.set_state(gst::State::Null);
    if res.is_err() {
        let _ = std::fs::remove_file(out);
    }
    res
}
