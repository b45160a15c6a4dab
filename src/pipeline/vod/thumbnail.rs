//! One JPEG frame of a file at a time, scaled to a width (posters, `/thumbnails`).

use std::path::Path;
use std::time::{Duration, Instant};

use gst::prelude::*;
use gstreamer as gst;
use gstreamer_app as gst_app;

use super::*;
use crate::pipeline::gst::{drain_pad, make, wait_for};
use crate::pipeline::ladder::{self};

/// One JPEG frame at `time_s` (clamped into the media), `width` wide (rounded to even), the
/// height following the display aspect ratio (rotation tags applied) rounded to even. Accurate
/// seek: decodes from the preceding keyframe, so cost grows with the source GOP length.
pub fn thumbnail(path_or_uri: &str, time_s: f64, width: u32) -> Result<Vec<u8>, VodError> {
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
        } else {
            drain_pad(&p, pad);
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
    let wait_preroll = || -> Result<(), VodError> {
        wait_for(&bus, deadline, |msg| match msg.view() {
            gst::MessageView::AsyncDone(_) => Some(Ok(())),
            gst::MessageView::Error(e) => Some(Err(e.error().to_string().into())),
            gst::MessageView::Eos(_) => Some(Err("no video frame".into())),
            _ => None,
        })
        .unwrap_or_else(|| Err("thumbnail timed out".into()))
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
