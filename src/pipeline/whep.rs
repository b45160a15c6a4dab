//! WHEP playback: one fan-out pipeline per broadcast, started when its first WebRTC viewer
//! arrives, fed with the broadcast's FLV tags (whatever the publisher used: RTMP or WHIP).
//!
//! ```text
//! appsrc(FLV) ! flvdemux
//!   video: queue ! h264parse ! tee vtee          (H.264 copied: never re-encoded)
//!   audio: queue ! aacparse ! avdec_aac ! audioconvert ! audioresample ! opusenc ! tee atee
//! or, for a WebRTC publisher's own VP8 and Opus (copied too; the FLV's track is dropped):
//!   appsrc(VP8) ! tee vtee;  appsrc(Opus) ! tee atee
//! per viewer:
//!   vtee ! queue(leaky) ! rtph264pay|rtpvp8pay ! rtprtxqueue ! webrtcbin.sink_V
//!   atee ! queue(leaky) ! rtpopuspay ! webrtcbin.sink_A
//! ```
//! Demuxing, parsing and the one AAC→Opus encode are shared by every viewer; each viewer costs
//! only RTP packetisation, SRTP and its ICE/DTLS session.
//!
//! A viewer that lost packets sends RTCP NACK: each viewer's `rtprtxqueue` keeps its last
//! second of video packets and sends the ones asked for again, unchanged (RFC 4585 plain
//! retransmission, no RTX stream). A viewer that cannot decode (it joined between keyframes,
//! or a loss was not repaired in time) sends RTCP PLI; `webrtcbin` turns it into an upstream
//! force-key-unit event, which reaches the video tee and is handed to the caller's
//! `keyframe_wanted` (the broadcast asks its publisher).
//!
//! A viewer that goes away without `DELETE` is dropped when its connection fails or closes, or
//! when it has sent nothing (its receiver reports come every second) for [`PEER_SILENCE`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use gst::prelude::*;
use gstreamer as gst;
use gstreamer_app as gst_app;
use gstreamer_webrtc as gst_webrtc;

use super::gst::make;
use super::webrtc::{
    IceSettings, RawCodec, RawFrame, allow_plain_resends, chain, forward_resend_requests,
    simulate_send_loss, since_start_ms, track_peer_activity, watch_connection,
};
use crate::media::sdp::Offer;

/// How long a viewer may send nothing at all before it counts as gone.
pub const PEER_SILENCE: Duration = Duration::from_secs(10);

type Gone = Arc<dyn Fn(String) + Send + Sync>;

struct Viewer {
    webrtc: gst::Element,
    /// (tee request pad, the branch elements after it)
    branches: Vec<(gst::Pad, Vec<gst::Element>)>,
    /// When the viewer last sent anything ([`since_start_ms`]).
    heard: Arc<AtomicU64>,
    gone: Gone,
    /// Its video branch's retransmission queue.
    resender: Option<gst::Element>,
}

pub struct WhepFanout {
    pipeline: gst::Pipeline,
    appsrc: gst_app::AppSrc,
    /// Where a WebRTC publisher's Opus and VP8 come in (those that are copied).
    raw_srcs: [Option<gst_app::AppSrc>; 2],
    vtee: gst::Element,
    atee: gst::Element,
    viewers: Mutex<HashMap<String, Viewer>>,
    dropped: AtomicU64,
    /// A VP8 frame was dropped: its successors cannot be decoded until a keyframe.
    vp8_broken: std::sync::atomic::AtomicBool,
    keyframe_wanted: Arc<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for WhepFanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhepFanout")
            .field("viewers", &self.viewers.lock().unwrap().len())
            .finish_non_exhaustive()
    }
}

impl WhepFanout {
    /// Starts the shared part; `preamble` is the FLV header and the codec configuration tags.
    /// What is `copied` comes by [`Self::push_raw`] instead of the FLV's AAC or H.264.
    /// `keyframe_wanted` is called (on a streaming thread) each time a viewer asks for a
    /// keyframe.
    pub fn start(
        preamble: &[Bytes],
        copied: &[RawCodec],
        keyframe_wanted: impl Fn() + Send + Sync + 'static,
    ) -> anyhow::Result<Arc<Self>> {
        let keyframe_wanted: Arc<dyn Fn() + Send + Sync> = Arc::new(keyframe_wanted);
        let wanted = keyframe_wanted.clone();
        gst::init()?;
        let pipeline = gst::Pipeline::with_name("whep-fanout");
        let appsrc = gst_app::AppSrc::builder()
            .caps(&gst::Caps::builder("video/x-flv").build())
            .format(gst::Format::Bytes)
            .is_live(true)
            .block(false)
            .max_bytes(4 << 20)
            .build();
        let demux = make("flvdemux")?;
        pipeline.add_many([appsrc.upcast_ref(), &demux])?;
        appsrc.link(&demux)?;
        let mut raw_srcs = [None, None];
        let video = if copied.contains(&RawCodec::Vp8) {
            let (elements, src) = raw_input(&pipeline, gst::Caps::builder("video/x-vp8").build())?;
            raw_srcs[1] = Some(src);
            elements
        } else {
            let video = chain(&pipeline, &["queue", "h264parse", "capsfilter", "tee"])?;
            video[1].set_property("config-interval", -1i32);
            video[2].set_property(
                "caps",
                gst::Caps::builder("video/x-h264")
                    .field("stream-format", "byte-stream")
                    .field("alignment", "au")
                    .build(),
            );
            video
        };
        let audio = if copied.contains(&RawCodec::Opus) {
            let caps = gst::Caps::builder("audio/x-opus")
                .field("channel-mapping-family", 0i32)
                .field("channels", 2i32)
                .field("rate", 48000i32)
                .build();
            let (elements, src) = raw_input(&pipeline, caps)?;
            raw_srcs[0] = Some(src);
            elements
        } else {
            chain(
                &pipeline,
                &[
                    "queue",
                    "aacparse",
                    "avdec_aac",
                    "audioconvert",
                    "audioresample",
                    "opusenc",
                    "tee",
                ],
            )?
        };
        let (vtee, atee) = (video.last().unwrap().clone(), audio.last().unwrap().clone());
        for tee in [&vtee, &atee] {
            tee.set_property("allow-not-linked", true);
        }
        // The shared chain cannot make a keyframe (the video is copied): the request ends
        // here and goes to the publisher.
        vtee.static_pad("sink").unwrap().add_probe(
            gst::PadProbeType::EVENT_UPSTREAM,
            move |_, info| match info.event() {
                Some(e) if gstreamer_video::UpstreamForceKeyUnitEvent::parse(e).is_ok() => {
                    wanted();
                    // Consumed here: the pad must not release it again.
                    info.data = None;
                    gst::PadProbeReturn::Handled
                }
                _ => gst::PadProbeReturn::Ok,
            },
        );
        let (vsink, asink) = (
            video[0].static_pad("sink").unwrap(),
            audio[0].static_pad("sink").unwrap(),
        );
        demux.connect_pad_added(move |_, pad| {
            let target = if pad.name().starts_with("video") {
                &vsink
            } else if pad.name().starts_with("audio") {
                &asink
            } else {
                return;
            };
            if let Err(e) = pad.link(target) {
                tracing::warn!(pad = %pad.name(), error = ?e, "WHEP fan-out cannot take this track");
            }
        });
        pipeline.set_state(gst::State::Playing)?;
        let fanout = Arc::new(Self {
            pipeline,
            appsrc,
            raw_srcs,
            vtee,
            atee,
            viewers: Mutex::new(HashMap::new()),
            dropped: Default::default(),
            vp8_broken: Default::default(),
            keyframe_wanted,
        });
        for bytes in preamble {
            fanout.push(bytes.clone());
        }
        let weak = Arc::downgrade(&fanout);
        std::thread::Builder::new()
            .name("whep-silence".into())
            .spawn(move || drop_silent_viewers(weak))?;
        Ok(fanout)
    }

    /// Queues FLV bytes; never blocks the broadcast (a full queue drops, and says so).
    pub fn push(&self, flv: Bytes) {
        if self.has_room(&self.appsrc, flv.len()) {
            let _ = self.appsrc.push_buffer(gst::Buffer::from_slice(flv));
        }
    }

    /// Whether `src` can take `len` more bytes; if not, the drop is counted and said.
    fn has_room(&self, src: &gst_app::AppSrc, len: usize) -> bool {
        if src.current_level_bytes() + len as u64 <= src.max_bytes() {
            return true;
        }
        let n = self.dropped.fetch_add(1, Ordering::Relaxed);
        if n.is_multiple_of(100) {
            tracing::warn!(dropped = n + 1, "WHEP fan-out is behind; dropping input");
        }
        metrics::counter!("ferrocast_whep_fanout_dropped_total").increment(1);
        false
    }

    /// Queues one of the publisher's own packets or frames, `pts_ms` on the fan-out's clock.
    /// After a VP8 frame is dropped, the frames that depend on it are too, and the publisher
    /// is asked for a keyframe.
    pub fn push_raw(&self, frame: &RawFrame, pts_ms: u32) {
        let Some(src) = &self.raw_srcs[frame.codec.index()] else {
            return;
        };
        let video = frame.codec == RawCodec::Vp8;
        if video && frame.keyframe {
            self.vp8_broken.store(false, Ordering::Relaxed);
        }
        if video && self.vp8_broken.load(Ordering::Relaxed) {
            return;
        }
        if !self.has_room(src, frame.data.len()) {
            if video && !self.vp8_broken.swap(true, Ordering::Relaxed) {
                (self.keyframe_wanted)();
            }
            return;
        }
        let mut buf = gst::Buffer::from_slice(frame.data.clone());
        let b = buf.get_mut().expect("a new buffer");
        b.set_pts(gst::ClockTime::from_mseconds(pts_ms.into()));
        if !frame.keyframe {
            b.set_flags(gst::BufferFlags::DELTA_UNIT);
        }
        let _ = src.push_buffer(buf);
    }

    /// Whether viewers get the publisher's own `codec` (not an encode of the broadcast's).
    pub fn copies(&self, codec: RawCodec) -> bool {
        self.raw_srcs[codec.index()].is_some()
    }

    /// Whether viewers get exactly `codecs` of the publisher's own.
    pub fn copies_exactly(&self, codecs: &[RawCodec]) -> bool {
        [RawCodec::Opus, RawCodec::Vp8]
            .into_iter()
            .all(|c| self.copies(c) == codecs.contains(&c))
    }

    /// The video codec viewers get: `H264` (the broadcast's, copied) or `VP8` (a WebRTC
    /// publisher's, copied).
    pub fn video_codec(&self) -> &'static str {
        if self.copies(RawCodec::Vp8) {
            "VP8"
        } else {
            "H264"
        }
    }

    /// Milliseconds the fan-out has been playing (its running time).
    pub fn running_time_ms(&self) -> u32 {
        self.pipeline
            .current_running_time()
            .map_or(0, |t| t.mseconds() as u32)
    }

    pub fn viewer_count(&self) -> usize {
        self.viewers.lock().unwrap().len()
    }

    /// Adds a viewer for `offer` (narrowed to [`Self::video_codec`] and Opus); returns its id
    /// and the answer.
    /// `gone` is called with the id once its connection fails or closes. Blocks while ICE
    /// candidates are gathered: call off the async runtime.
    pub fn add_viewer(
        self: &Arc<Self>,
        offer: &Offer,
        ice: &IceSettings,
        gone: impl Fn(String) + Send + Sync + 'static,
    ) -> anyhow::Result<(String, String)> {
        let id = crate::ids::random_secret(16);
        let gone: Gone = Arc::new(gone);
        let webrtc = make("webrtcbin")?;
        webrtc.set_property_from_str("bundle-policy", "max-bundle");
        super::webrtc::configure_ice(&webrtc, ice);
        allow_plain_resends(&webrtc);
        let heard = track_peer_activity(&webrtc);
        if let Some(video) = offer.video.as_ref().filter(|_| ice.simulate_loss_every > 0) {
            simulate_send_loss(&webrtc, video.payload_type, ice.simulate_loss_every);
        }
        self.pipeline.add(&webrtc)?;
        webrtc.sync_state_with_parent()?;
        let mut branches = Vec::new();
        let mut resender = None;
        for (index, kind) in offer.mlines.iter().enumerate() {
            let (tee, pay, caps) = match kind.as_str() {
                "video" => {
                    let pt = offer.video.as_ref().map_or(96, |c| c.payload_type);
                    let codec = self.video_codec();
                    (
                        &self.vtee,
                        if codec == "VP8" {
                            "rtpvp8pay"
                        } else {
                            "rtph264pay"
                        },
                        gst::Caps::builder("application/x-rtp")
                            .field("media", "video")
                            .field("encoding-name", codec)
                            .field("clock-rate", 90000i32)
                            .field("payload", i32::from(pt))
                            .build(),
                    )
                }
                "audio" => {
                    let pt = offer.audio.as_ref().map_or(111, |c| c.payload_type);
                    (
                        &self.atee,
                        "rtpopuspay",
                        gst::Caps::builder("application/x-rtp")
                            .field("media", "audio")
                            .field("encoding-name", "OPUS")
                            .field("clock-rate", 48000i32)
                            .field("payload", i32::from(pt))
                            .build(),
                    )
                }
                _ => continue,
            };
            let queue = make("queue")?;
            queue.set_property_from_str("leaky", "downstream");
            queue.set_property("max-size-buffers", 0u32);
            queue.set_property("max-size-bytes", 0u32);
            queue.set_property("max-size-time", 1_000_000_000u64);
            let payloader = make(pay)?;
            let pt = caps
                .structure(0)
                .and_then(|s| s.get::<i32>("payload").ok())
                .unwrap_or(96);
            payloader.set_property("pt", pt as u32);
            if payloader.has_property("config-interval") {
                payloader.set_property("config-interval", -1i32);
            }
            if payloader.has_property("picture-id-mode") {
                payloader.set_property_from_str("picture-id-mode", "15-bit");
            }
            if payloader.has_property("aggregate-mode") {
                payloader.set_property_from_str("aggregate-mode", "zero-latency");
            }
            let filter = make("capsfilter")?;
            filter.set_property("caps", &caps);
            let mut elements = vec![queue, payloader];
            if kind == "video" {
                // The last second of packets, for the viewer's NACKs.
                let rtx = make("rtprtxqueue")?;
                rtx.set_property("max-size-time", 1000u32);
                rtx.set_property("max-size-packets", 1000u32);
                resender = Some(rtx.clone());
                elements.push(rtx);
            }
            elements.push(filter);
            self.pipeline.add_many(&elements)?;
            gst::Element::link_many(&elements)?;
            // A sending transceiver per m-line, made before the offer is set so that the
            // offer's m-lines are matched to them (by kind and codec).
            let sink = webrtc
                .request_pad_simple(&format!("sink_{index}"))
                .ok_or_else(|| anyhow::anyhow!("no webrtcbin sink for m-line {index}"))?;
            let transceiver = sink.property::<gst_webrtc::WebRTCRTPTransceiver>("transceiver");
            transceiver.set_property(
                "direction",
                gst_webrtc::WebRTCRTPTransceiverDirection::Sendonly,
            );
            transceiver.set_property("codec-preferences", &caps);
            // Not `do-nack`: that negotiates an RTX stream, and Chromium (156) viewers of
            // webrtcbin 1.22's RTX decode a visibly degraded picture (the clock test in
            // tests/webrtc.rs could no longer read it). NACKs are answered by the
            // rtprtxqueue above, on the stream itself.
            let last = elements.last().unwrap();
            last.static_pad("src").unwrap().link(&sink)?;
            for e in elements.iter().rev() {
                e.sync_state_with_parent()?;
            }
            let tee_pad = tee
                .request_pad_simple("src_%u")
                .ok_or_else(|| anyhow::anyhow!("tee pad"))?;
            tee_pad.link(&elements[0].static_pad("sink").unwrap())?;
            branches.push((tee_pad, elements));
        }
        if let Some(rtx) = &resender {
            forward_resend_requests(&webrtc, rtx);
        }
        let sdp = gstreamer_sdp::SDPMessage::parse_buffer(offer.sdp.as_bytes())
            .map_err(|_| anyhow::anyhow!("the offer does not parse"))?;
        let remote =
            gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Offer, sdp);
        let promise = gst::Promise::new();
        webrtc.emit_by_name::<()>("set-remote-description", &[&remote, &promise]);
        promise.wait();
        if let Some(reply) = promise.get_reply() {
            anyhow::bail!("the offer was not accepted: {reply}");
        }

        let answer =
            crate::media::sdp::with_public_ips(&super::webrtc::answer(&webrtc)?, &ice.public_ips);
        // Its silence counts from now: gathering candidates took a while.
        heard.store(since_start_ms(), Ordering::Relaxed);
        let (viewer_id, g) = (id.clone(), gone.clone());
        watch_connection(&webrtc, move |reason| {
            tracing::info!(viewer = %viewer_id, %reason, "WHEP viewer gone");
            g(viewer_id.clone());
        });
        self.viewers.lock().unwrap().insert(
            id.clone(),
            Viewer {
                webrtc,
                branches,
                heard,
                gone,
                resender,
            },
        );
        Ok((id, answer))
    }

    /// Takes a viewer's branch out of the running pipeline.
    pub fn remove_viewer(&self, id: &str) -> bool {
        let Some(viewer) = self.viewers.lock().unwrap().remove(id) else {
            return false;
        };
        viewer.count_resends(id);
        for (tee_pad, _) in &viewer.branches {
            if let Some(peer) = tee_pad.peer() {
                let _ = tee_pad.unlink(&peer);
            }
            if let Some(tee) = tee_pad.parent_element() {
                tee.release_request_pad(tee_pad);
            }
        }
        // `webrtcbin` first: until DTLS is up it holds the branches' media back, and a
        // branch's queue cannot stop while its thread waits in there (a viewer that never
        // connected would hang here).
        let _ = viewer.webrtc.set_state(gst::State::Null);
        let _ = self.pipeline.remove(&viewer.webrtc);
        for (_, elements) in viewer.branches {
            for e in elements {
                let _ = e.set_state(gst::State::Null);
                let _ = self.pipeline.remove(&e);
            }
        }
        true
    }
}

impl Drop for WhepFanout {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
        // The broadcast is over, and so is every viewer's session.
        let viewers = std::mem::take(&mut *self.viewers.lock().unwrap());
        for (id, viewer) in viewers {
            viewer.count_resends(&id);
            (viewer.gone)(id);
        }
    }
}

impl Viewer {
    /// Adds what the viewer's NACKs asked for, and what was resent, to the metrics.
    fn count_resends(&self, id: &str) {
        if let Some(rtx) = &self.resender {
            let (asked, resent) = (
                rtx.property::<u32>("requests"),
                rtx.property::<u32>("fulfilled-requests"),
            );
            tracing::debug!(viewer = %id, asked, resent, "WHEP viewer's NACKs");
            metrics::counter!("ferrocast_whep_nacked_packets_total").increment(asked.into());
            metrics::counter!("ferrocast_whep_resent_packets_total").increment(resent.into());
        }
    }
}

/// Drops the viewers of `fanout` that have sent nothing for [`PEER_SILENCE`]: a browser that
/// vanished (killed, or its network gone) says no goodbye. Ends with the fan-out.
fn drop_silent_viewers(fanout: Weak<WhepFanout>) {
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let Some(f) = fanout.upgrade() else { return };
        let now = since_start_ms();
        let silent: Vec<(String, Gone)> = f
            .viewers
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, v)| {
                now.saturating_sub(v.heard.load(Ordering::Relaxed))
                    > PEER_SILENCE.as_millis() as u64
            })
            .map(|(id, v)| (id.clone(), v.gone.clone()))
            .collect();
        drop(f);
        for (id, gone) in silent {
            tracing::info!(viewer = %id, "WHEP viewer gone: nothing heard from it for {} s", PEER_SILENCE.as_secs());
            gone(id);
        }
    }
}

/// An input for a publisher's own media (`caps`) ending in a tee; the FLV demuxer's track
/// it replaces goes to the first element, a sink that drops it.
fn raw_input(
    pipeline: &gst::Pipeline,
    caps: gst::Caps,
) -> anyhow::Result<(Vec<gst::Element>, gst_app::AppSrc)> {
    let src = gst_app::AppSrc::builder()
        .caps(&caps)
        .format(gst::Format::Time)
        .is_live(true)
        .block(false)
        .max_bytes(1 << 20)
        .build();
    let tee = make("tee")?;
    let sink = make("fakesink")?;
    sink.set_property("sync", false);
    sink.set_property("async", false);
    pipeline.add_many([src.upcast_ref(), &tee, &sink])?;
    src.link(&tee)?;
    // Each new viewer's branch asks upstream to reconfigure; an appsrc would renegotiate
    // and query its allocation through every branch, waiting for a viewer not yet connected
    // (its media is held until DTLS is up). The caps are fixed: nothing to reconfigure.
    tee.static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::EVENT_UPSTREAM, |_, info| {
            match info.event() {
                Some(e) if e.type_() == gst::EventType::Reconfigure => gst::PadProbeReturn::Drop,
                _ => gst::PadProbeReturn::Ok,
            }
        });
    Ok((vec![sink, tee], src))
}
