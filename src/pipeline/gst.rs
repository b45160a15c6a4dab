//! What every GStreamer pipeline here shares: making elements, the two kinds of queue, the
//! text of an error message, and waiting on a bus with a deadline.

use std::time::{Duration, Instant};

use gst::prelude::*;
use gstreamer as gst;

/// A pipeline could not be built or run; the text names the element and the cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GstError(pub String);

impl GstError {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }
}

impl From<glib::BoolError> for GstError {
    fn from(e: glib::BoolError) -> Self {
        Self(e.to_string())
    }
}

impl From<gst::StateChangeError> for GstError {
    fn from(e: gst::StateChangeError) -> Self {
        Self(format!("state change failed: {e}"))
    }
}

impl From<gst::PadLinkError> for GstError {
    fn from(e: gst::PadLinkError) -> Self {
        Self(format!("pad link failed: {e:?}"))
    }
}

impl From<GstError> for String {
    fn from(e: GstError) -> String {
        e.0
    }
}

/// An element of `factory`; the error names a missing plugin.
pub fn make(factory: &str) -> Result<gst::Element, GstError> {
    gst::ElementFactory::make(factory)
        .build()
        .map_err(|e| GstError(format!("cannot create {factory}: {e}")))
}

/// An element of `factory` called `name` (names find elements again, in messages too).
pub fn make_named(factory: &str, name: &str) -> Result<gst::Element, GstError> {
    gst::ElementFactory::make(factory)
        .name(name)
        .build()
        .map_err(|e| GstError(format!("cannot create {factory}: {e}")))
}

/// A queue for compressed video or audio: bounded by time (and a 64 MiB cap), never by
/// buffer count.
pub fn queue_time(secs: u64) -> Result<gst::Element, GstError> {
    let q = make("queue")?;
    q.set_property("max-size-buffers", 0u32);
    q.set_property("max-size-bytes", 64u32 << 20);
    q.set_property("max-size-time", secs * 1_000_000_000);
    Ok(q)
}

/// A queue for raw video: a few frames only (memory), enough to decouple threads.
pub fn queue_raw() -> Result<gst::Element, GstError> {
    let q = make("queue")?;
    q.set_property("max-size-buffers", 4u32);
    q.set_property("max-size-bytes", 0u32);
    q.set_property("max-size-time", 0u64);
    Ok(q)
}

/// Links `src`'s static src pad to a new request pad of `sink` from `template`.
pub fn link_request(
    src: &gst::Element,
    sink: &gst::Element,
    template: &str,
) -> Result<(), GstError> {
    let pad = sink
        .request_pad_simple(template)
        .ok_or_else(|| GstError(format!("no {template} pad on {}", sink.name())))?;
    src.static_pad("src")
        .ok_or_else(|| GstError(format!("{} has no src pad", src.name())))?
        .link(&pad)
        .map(|_| ())
        .map_err(|e| GstError(format!("link to {}.{template}: {e:?}", sink.name())))
}

/// Links `pad` to a new fakesink in `pipeline`: a stream nobody uses, drained so that it
/// never holds the others back.
pub fn drain_pad(pipeline: &gst::Pipeline, pad: &gst::Pad) {
    if let Ok(fs) = gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .property("async", false)
        .build()
        && pipeline.add(&fs).is_ok()
    {
        let _ = fs.sync_state_with_parent();
        if let Some(sink) = fs.static_pad("sink") {
            let _ = pad.link(&sink);
        }
    }
}

/// `h264parse ! video/x-h264,stream-format=byte-stream,alignment=au`, with the SPS and PPS
/// re-inserted before every IDR so that each segment cut at a keyframe decodes on its own
/// (FLV and MP4 carry them only in codec data).
pub fn h264_access_units() -> Result<[gst::Element; 2], GstError> {
    let parse = make("h264parse")?;
    parse.set_property("config-interval", -1i32);
    let caps = make("capsfilter")?;
    caps.set_property(
        "caps",
        gst::Caps::builder("video/x-h264")
            .field("stream-format", "byte-stream")
            .field("alignment", "au")
            .build(),
    );
    Ok([parse, caps])
}

/// Posts an error on `pipeline`'s bus, as an element would (from a callback that cannot
/// return one).
pub fn post_error(pipeline: &gst::Pipeline, text: &str) {
    let msg = gst::message::Error::builder(gst::CoreError::Failed, text)
        .src(pipeline)
        .build();
    let _ = pipeline.post_message(msg);
}

/// The text of an error message, `element path: error (debug detail)`; `None` for any
/// other message.
pub fn error_text(msg: &gst::Message) -> Option<String> {
    let gst::MessageView::Error(err) = msg.view() else {
        return None;
    };
    let src = msg
        .src()
        .map(|s| s.path_string().to_string())
        .unwrap_or_default();
    Some(format!(
        "{src}: {} ({})",
        err.error(),
        err.debug().unwrap_or_default()
    ))
}

/// Pops messages from `bus` until `pick` returns something for one, or `deadline` passes
/// (`None`).
pub fn wait_for<T>(
    bus: &gst::Bus,
    deadline: Instant,
    mut pick: impl FnMut(&gst::Message) -> Option<T>,
) -> Option<T> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_nseconds(left.as_nanos() as u64)) else {
            continue;
        };
        if let Some(found) = pick(&msg) {
            return Some(found);
        }
    }
}

/// The next message on `bus` within `within`, for loops that also watch something else.
pub fn next_message(bus: &gst::Bus, within: Duration) -> Option<gst::Message> {
    wait_for(bus, Instant::now() + within, |m| Some(m.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_picks_the_message_asked_for_or_times_out() {
        gst::init().unwrap();
        let pipeline = gst::Pipeline::new();
        let bus = pipeline.bus().unwrap();
        post_error(&pipeline, "one");
        let _ = pipeline.post_message(gst::message::Eos::builder().src(&pipeline).build());
        let eos = wait_for(&bus, Instant::now() + Duration::from_secs(1), |m| {
            matches!(m.view(), gst::MessageView::Eos(_)).then_some("eos")
        });
        assert_eq!(eos, Some("eos"), "the error before it was skipped");
        let started = Instant::now();
        assert!(next_message(&bus, Duration::from_millis(50)).is_none());
        assert!(started.elapsed() >= Duration::from_millis(50));
        post_error(&pipeline, "two");
        let text = next_message(&bus, Duration::from_secs(1))
            .as_ref()
            .and_then(error_text)
            .unwrap();
        assert!(text.contains("two"), "{text}");
        assert!(
            make("no-such-element")
                .unwrap_err()
                .0
                .contains("no-such-element")
        );
    }
}
