//! WHIP ingest on GStreamer's `webrtcbin`: ICE, DTLS and SRTP there; depayloaded media becomes
//! the same FLV stream an RTMP publisher produces, so a WebRTC publish feeds the same
//! broadcast (ladder, packager, recording) as RTMP.
//!
//! ```text
//! webrtcbin (answering the narrowed offer, host candidates, no trickle)
//!   H.264: rtph264depay ! h264parse ! video/x-h264,stream-format=avc ! flvmux.video
//!   VP8:   rtpvp8depay ! vp8dec ! videoconvert ! x264enc (zerolatency) ! h264parse ! flvmux.video
//!   Opus:  rtpopusdepay ! opusdec ! audioconvert ! audioresample ! avenc_aac ! aacparse ! flvmux.audio
//!   (VP8 and Opus also leave the depayloader as they are, to the caller, for WHEP viewers)
//! flvmux (streamable) ! appsink  -> FLV tags -> the caller's channel
//! ```
//!
//! Why one file (about 850 lines): one `webrtcbin` session, whose pad and connection
//! callbacks share its state, and the WebRTC helpers `whep.rs` takes from it (ICE settings,
//! negotiation, resend handling).
//!
//! Lost packets are asked for again (NACK, on every transceiver) and come back on the offer's
//! RTX stream; depayloaders ask for keyframes (RTCP PLI) when the stream starts or a loss the
//! resends could not repair breaks the picture; H.264 publishers are also asked every
//! `webrtc.keyframe_interval_s`, and any publisher whenever a WHEP viewer needs a keyframe.
//! The session ends when the peer connection fails or closes, or the caller stops it.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gst::prelude::*;
use gstreamer as gst;
use gstreamer_app as gst_app;
use gstreamer_sdp as gst_sdp;
use gstreamer_webrtc as gst_webrtc;
use tokio::sync::{mpsc, watch};

use super::gst::{make, next_message};
use crate::media::flv;
use crate::media::sdp::Offer;

/// What the session reports to its owner.
#[derive(Debug)]
pub enum WhipEvent {
    Tag(flv::Tag),
    /// Media as the publisher sent it, besides (for WHEP viewers).
    Raw(RawFrame),
}

/// What a WebRTC publisher sends that WHEP viewers can take as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawCodec {
    Opus,
    Vp8,
}

impl RawCodec {
    /// A small index, for arrays with one slot per codec.
    pub fn index(self) -> usize {
        match self {
            RawCodec::Opus => 0,
            RawCodec::Vp8 => 1,
        }
    }
}

/// An Opus packet or a VP8 frame as the publisher sent it (depayloaded), timed on the clock
/// of the FLV tags the same session makes, so that WHEP viewers get it without a second
/// encode and in step with the rest.
#[derive(Debug, Clone)]
pub struct RawFrame {
    pub codec: RawCodec,
    pub timestamp_ms: u32,
    pub data: Bytes,
    /// A frame that decodes on its own (always, for audio).
    pub keyframe: bool,
}

/// Network settings for the ICE agent.
#[derive(Debug, Clone, Default)]
pub struct IceSettings {
    /// `stun://host:port`, or empty.
    pub stun_server: String,
    /// `turn(s)://user:pass@host:port` URLs.
    pub turn_servers: Vec<String>,
    /// UDP port range for media (0, 0: any).
    pub port_range: (u16, u16),
    /// Public addresses to put in host candidates (a server behind 1:1 NAT).
    pub public_ips: Vec<String>,
    /// Local addresses to gather host candidates on (empty: every interface).
    pub interface_ips: Vec<String>,
    /// How often an H.264 publisher is asked for a keyframe (`webrtc.keyframe_interval_s`).
    pub keyframe_interval: Duration,
    /// Testing only: drop every Nth video RTP packet (see `webrtc.simulate_loss_every`).
    pub simulate_loss_every: u32,
}

impl IceSettings {
    pub fn from_config(w: &crate::config::WebrtcConfig) -> Self {
        let list = |v: &str| {
            crate::config::comma_list(v)
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        Self {
            stun_server: w.stun_server.clone(),
            turn_servers: list(&w.turn_servers),
            port_range: (w.port_min, w.port_max),
            public_ips: list(&w.nat_1to1_ips),
            interface_ips: list(&w.interface_ips),
            keyframe_interval: Duration::from_secs(w.keyframe_interval_s.max(1)),
            simulate_loss_every: w.simulate_loss_every,
        }
    }
}

/// A running WHIP session. Dropping it stops the pipeline.
pub struct WhipSession {
    pipeline: gst::Pipeline,
    stopped: Arc<Mutex<bool>>,
    /// Why the session is over (peer gone, failure), once it is. Subscribed when the session
    /// starts, so that its clones see an end that came before they were made.
    ended: watch::Receiver<Option<String>>,
    /// Where keyframe requests go in: the end of the video chain, once the track is linked.
    video_out: KeyframeTarget,
}

type KeyframeTarget = Arc<Mutex<Option<glib::WeakRef<gst::Element>>>>;

impl std::fmt::Debug for WhipSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WhipSession")
    }
}

pub(super) fn chain(
    pipeline: &gst::Pipeline,
    factories: &[&str],
) -> anyhow::Result<Vec<gst::Element>> {
    let elements = factories
        .iter()
        .map(|f| make(f).map_err(anyhow::Error::from))
        .collect::<anyhow::Result<Vec<_>>>()?;
    pipeline.add_many(&elements)?;
    gst::Element::link_many(&elements)?;
    Ok(elements)
}

impl WhipSession {
    /// Starts a session for `offer` (already narrowed by [`crate::media::sdp::prepare_offer`]);
    /// returns it and the SDP answer with its ICE candidates. Media goes to `events`: FLV tags
    /// always, the depayloaded Opus and VP8 while `copy_wanted` is set. Blocks for up to a few
    /// seconds (candidate gathering): call it off the async runtime.
    pub fn start(
        offer: &Offer,
        ice: &IceSettings,
        events: mpsc::Sender<WhipEvent>,
        copy_wanted: Arc<AtomicBool>,
    ) -> anyhow::Result<(Self, String)> {
        gst::init()?;
        let pipeline = gst::Pipeline::with_name("whip");
        let webrtc = make("webrtcbin")?;
        webrtc.set_property_from_str("bundle-policy", "max-bundle");
        configure_ice(&webrtc, ice);
        // Lost packets are asked for again (NACK; RTX where the offer has it) before the
        // jitter buffer gives up on them.
        webrtc.connect("on-new-transceiver", false, |args| {
            if let Ok(t) = args[1].get::<gst_webrtc::WebRTCRTPTransceiver>() {
                t.set_property("do-nack", true);
            }
            None
        });
        if let Some(video) = offer.video.as_ref().filter(|_| ice.simulate_loss_every > 0) {
            simulate_loss(&webrtc, video.payload_type, ice.simulate_loss_every);
        }
        let flvmux = make("flvmux")?;
        flvmux.set_property("streamable", true);
        // Time for the audio (decoded and encoded to AAC here) to catch up with the video:
        // flvmux stamps a tag that comes after a later one of the other track with that later
        // time. Without it, the first 13 audio tags of a Chromium publisher came 86-150 ms
        // late; with it none do, and the video waits no longer than the audio takes.
        flvmux.set_property("latency", 200_000_000u64);
        let sink = gst_app::AppSink::builder()
            .sync(false)
            .enable_last_sample(false)
            .build();
        pipeline.add_many([&webrtc, &flvmux, sink.upcast_ref()])?;
        flvmux.link(&sink)?;

        // Muxer inputs exist before media arrives, one per negotiated track.
        let video_pad = match &offer.video {
            Some(_) => Some(
                flvmux
                    .request_pad_simple("video")
                    .ok_or_else(|| anyhow::anyhow!("flvmux video pad"))?,
            ),
            None => None,
        };
        let audio_pad = match &offer.audio {
            Some(_) => Some(
                flvmux
                    .request_pad_simple("audio")
                    .ok_or_else(|| anyhow::anyhow!("flvmux audio pad"))?,
            ),
            None => None,
        };

        let stopped = Arc::new(Mutex::new(false));
        // The end is told apart from the media: a full event queue cannot lose it.
        let (ended_tx, ended) = watch::channel(None);
        let end = {
            let stopped = stopped.clone();
            move |reason: String| {
                let mut s = stopped.lock().unwrap();
                if !*s {
                    *s = true;
                    ended_tx.send_replace(Some(reason));
                }
            }
        };
        let end = Arc::new(end);

        // FLV out: tags to the caller, in order, waiting when it is behind.
        let reader = Mutex::new(flv::Reader::default());
        let (tx, end_a) = (events.clone(), end.clone());
        let flv_clock = FlvClock::default();
        let clock = flv_clock.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let Some(buf) = sample.buffer() else {
                        return Ok(gst::FlowSuccess::Ok);
                    };
                    let running_ms = buf
                        .pts()
                        .and_then(|pts| running_time(sample.segment()?, pts))
                        .map(|t| t.mseconds() as i64);
                    let map = buf.map_readable().map_err(|_| gst::FlowError::Error)?;
                    let tags = match reader.lock().unwrap().push(&map) {
                        Ok(t) => t,
                        Err(e) => {
                            end_a(format!("muxer output: {e}"));
                            return Err(gst::FlowError::Error);
                        }
                    };
                    for tag in tags {
                        if tag.kind == 8 || tag.kind == 9 {
                            // Video only: flvmux stamps an audio tag with the last video
                            // tag's time, not its own.
                            if let (Some(ms), 9) = (running_ms, tag.kind) {
                                let _ = clock.set(i64::from(tag.timestamp_ms) - ms);
                            }
                            tx.blocking_send(WhipEvent::Tag(tag))
                                .map_err(|_| gst::FlowError::Flushing)?;
                        }
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );

        // Media from the peer: one depayload chain per track.
        let pw = pipeline.downgrade();
        let (vcodec, acodec) = (
            offer.video.as_ref().map(|c| c.name.clone()),
            offer.audio.as_ref().map(|c| c.name.clone()),
        );
        let end_p = end.clone();
        let schedule = KeyframeSchedule {
            every: ice.keyframe_interval,
            stopped: stopped.clone(),
        };
        let video_out = KeyframeTarget::default();
        let video_out_p = video_out.clone();
        let raw_out = RawOut {
            events: events.clone(),
            clock: flv_clock,
            wanted: copy_wanted,
        };
        webrtc.connect_pad_added(move |_, pad| {
            let Some(pipeline) = pw.upgrade() else { return };
            if pad.direction() != gst::PadDirection::Src {
                return;
            }
            let media = pad
                .current_caps()
                .and_then(|c| c.structure(0).and_then(|s| s.get::<String>("media").ok()));
            let result = match media.as_deref() {
                Some("video") => link_video(
                    &pipeline,
                    pad,
                    vcodec.as_deref(),
                    video_pad.as_ref(),
                    &schedule,
                    &video_out_p,
                    &raw_out,
                ),
                Some("audio") => link_audio(
                    &pipeline,
                    pad,
                    acodec.as_deref(),
                    audio_pad.as_ref(),
                    &raw_out,
                ),
                other => Err(anyhow::anyhow!("unexpected media {other:?}")),
            };
            if let Err(e) = result {
                end_p(format!("linking received media: {e:#}"));
            }
        });

        let end_s = end.clone();
        watch_connection(&webrtc, move |reason| end_s(reason));

        // Errors end the session.
        let bus = pipeline.bus().expect("bus");
        let end_b = end.clone();
        let stopped_b = stopped.clone();
        std::thread::Builder::new()
            .name("whip-bus".into())
            .spawn(move || {
                while !*stopped_b.lock().unwrap() {
                    let Some(msg) = next_message(&bus, Duration::from_millis(200)) else {
                        continue;
                    };
                    if let gst::MessageView::Error(e) = msg.view() {
                        end_b(format!("{} ({})", e.error(), e.debug().unwrap_or_default()));
                    }
                }
            })?;

        pipeline.set_state(gst::State::Playing)?;
        let session = WhipSession {
            pipeline,
            stopped,
            ended,
            video_out,
        };
        let answer =
            crate::media::sdp::with_public_ips(&negotiate(&webrtc, &offer.sdp)?, &ice.public_ips);
        Ok((session, answer))
    }

    /// Changes once, to why the session is over (peer gone, failure).
    pub fn ended(&self) -> watch::Receiver<Option<String>> {
        self.ended.clone()
    }

    /// Asks the publisher for a keyframe now (RTCP PLI).
    /// Does nothing before the video track is linked.
    pub fn request_keyframe(&self) {
        let target = self
            .video_out
            .lock()
            .unwrap()
            .as_ref()
            .and_then(|w| w.upgrade());
        if let Some(element) = target {
            request_keyframe(&element);
        }
    }

    pub fn stop(&self) {
        *self.stopped.lock().unwrap() = true;
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

impl Drop for WhipSession {
    fn drop(&mut self) {
        self.stop();
    }
}

/// STUN/TURN servers and the media port range of a `webrtcbin`.
pub(super) fn configure_ice(webrtc: &gst::Element, ice: &IceSettings) {
    if !ice.stun_server.is_empty() {
        webrtc.set_property("stun-server", &ice.stun_server);
    }
    for turn in &ice.turn_servers {
        let _ = webrtc.emit_by_name::<bool>("add-turn-server", &[turn]);
    }
    let Some(agent) = webrtc.property::<Option<glib::Object>>("ice-agent") else {
        return;
    };
    if ice.port_range != (0, 0) && agent.has_property("min-rtp-port") {
        agent.set_property("min-rtp-port", u32::from(ice.port_range.0));
        agent.set_property("max-rtp-port", u32::from(ice.port_range.1));
    }
    // Naming addresses stops gathering on every other interface.
    for ip in &ice.interface_ips {
        if !agent.emit_by_name::<bool>("add-local-ip-address", &[ip]) {
            tracing::warn!(%ip, "webrtc.interface_ips: not a usable local address");
        }
    }
}

/// Testing only: drops every `every`th received RTP packet of payload type `pt`, on the
/// receiving pads of `webrtcbin`'s internal `rtpbin` (after SRTP). Retransmissions have their
/// own payload type and pass.
fn simulate_loss(webrtc: &gst::Element, pt: u8, every: u32) {
    const PAD_PREFIX: &str = "recv_rtp_sink_";
    let Some(rtpbin) = webrtc.downcast_ref::<gst::Bin>().and_then(|b| {
        b.iterate_recurse()
            .into_iter()
            .flatten()
            .find(|e| e.factory().is_some_and(|f| f.name() == "rtpbin"))
    }) else {
        tracing::warn!("simulate_loss: no rtpbin inside webrtcbin");
        return;
    };
    tracing::warn!(
        every,
        "simulating received RTP packet loss (webrtc.simulate_loss_every)"
    );
    let seen = Arc::new(AtomicU32::new(0));
    let probe = move |pad: &gst::Pad| {
        let seen = seen.clone();
        drop_buffers(pad, move |b| {
            b.len() > 12
                && b[1] & 0x7f == pt
                && seen.fetch_add(1, Ordering::Relaxed) % every == every - 1
        });
    };
    for pad in rtpbin.pads() {
        if pad.name().starts_with(PAD_PREFIX) {
            probe(&pad);
        }
    }
    rtpbin.connect_pad_added(move |_, pad| {
        if pad.name().starts_with(PAD_PREFIX) {
            probe(pad);
        }
    });
}

/// Testing only: drops every `every`th video RTP packet (payload type `pt`) that `webrtcbin`
/// sends, as it leaves for the network (after SRTP, whose header is in the clear), the first
/// time only: a resend of the same packet passes, as one answering a NACK would.
pub(super) fn simulate_send_loss(webrtc: &gst::Element, pt: u8, every: u32) {
    tracing::warn!(
        every,
        "simulating sent RTP packet loss (webrtc.simulate_loss_every)"
    );
    on_transport_element(webrtc, "nicesink", move |sink| {
        // (first transmissions seen, sequence numbers dropped and not yet resent)
        let state = Mutex::new((0u32, std::collections::HashSet::<u16>::new()));
        drop_buffers(&sink.static_pad("sink").unwrap(), move |b| {
            if b.len() <= 12 || b[0] >> 6 != 2 || b[1] & 0x7f != pt {
                return false;
            }
            let seq = u16::from_be_bytes([b[2], b[3]]);
            let (count, dropped) = &mut *state.lock().unwrap();
            if dropped.remove(&seq) {
                return false;
            }
            *count += 1;
            if *count % every != 0 {
                return false;
            }
            if dropped.len() > 512 {
                dropped.clear();
            }
            dropped.insert(seq);
            true
        });
    });
}

/// Testing only: a probe on `pad` that drops the buffers `lose` picks by their bytes.
fn drop_buffers(pad: &gst::Pad, lose: impl Fn(&[u8]) -> bool + Send + Sync + 'static) {
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
        move |_, info| {
            let lose = |buf: &gst::BufferRef| buf.map_readable().is_ok_and(|m| lose(&m));
            match &mut info.data {
                Some(gst::PadProbeData::Buffer(buf)) if lose(buf) => {
                    // Consumed here ("handled"): the pad must not unref it again.
                    info.data = None;
                    gst::PadProbeReturn::Handled
                }
                Some(gst::PadProbeData::BufferList(list)) => {
                    let doomed: Vec<usize> = list
                        .iter()
                        .enumerate()
                        .filter(|(_, b)| lose(b))
                        .map(|(i, _)| i)
                        .collect();
                    if !doomed.is_empty() {
                        let list = list.make_mut();
                        for i in doomed.into_iter().rev() {
                            list.remove(i..i + 1);
                        }
                    }
                    gst::PadProbeReturn::Ok
                }
                _ => gst::PadProbeReturn::Ok,
            }
        },
    );
}

/// Calls `f` with each element made by `factory` inside `webrtcbin` (its transports are made
/// when a description is set): those there already, and those added later.
fn on_transport_element(
    webrtc: &gst::Element,
    factory: &'static str,
    f: impl Fn(&gst::Element) + Send + Sync + 'static,
) {
    let is_it = move |e: &gst::Element| e.factory().is_some_and(|x| x.name() == factory);
    let bin = webrtc
        .downcast_ref::<gst::Bin>()
        .expect("webrtcbin is a bin");
    for e in bin.iterate_recurse().into_iter().flatten() {
        if is_it(&e) {
            f(&e);
        }
    }
    bin.connect_deep_element_added(move |_, _, e| {
        if is_it(e) {
            f(e);
        }
    });
}

/// Lets SRTP send a packet again under its own sequence number. `srtpenc` refuses that by
/// default (replay protection); a plain NACK answer (RFC 4585, no RTX stream) needs it, and
/// is safe because the resent packet is byte for byte the one sent before.
pub(super) fn allow_plain_resends(webrtc: &gst::Element) {
    on_transport_element(webrtc, "srtpenc", |enc| {
        enc.set_property("allow-repeat-tx", true);
    });
}

/// Passes the retransmission requests of `webrtcbin`'s RTP session (one per packet a peer's
/// NACK asks for) to `resender`, an `rtprtxqueue` before `webrtcbin`, which sends those packets
/// again as they were. `webrtcbin` 1.22 puts an `rtprtxsend` in front of its session even when
/// no RTX stream was negotiated, and that element swallows the requests: they are taken off
/// there. Only video is asked for (the offers' audio has no NACK).
pub(super) fn forward_resend_requests(webrtc: &gst::Element, resender: &gst::Element) {
    let target = resender.static_pad("src").unwrap().downgrade();
    on_transport_element(webrtc, "rtprtxsend", move |rtxsend| {
        let target = target.clone();
        rtxsend.static_pad("src").unwrap().add_probe(
            gst::PadProbeType::EVENT_UPSTREAM,
            move |_, info| {
                let Some(event) = info.event() else {
                    return gst::PadProbeReturn::Ok;
                };
                if !event.has_name("GstRTPRetransmissionRequest") {
                    return gst::PadProbeReturn::Ok;
                }
                if let Some(pad) = target.upgrade() {
                    pad.send_event(event.clone());
                }
                // Consumed here: the pad must not release it again.
                info.data = None;
                gst::PadProbeReturn::Handled
            },
        );
    });
}

/// When the peer last sent anything on the connection (DTLS, SRTP or SRTCP), in milliseconds
/// of [`since_start_ms`]. A receive-only viewer's receiver reports come every second or so.
/// Stands in for ICE consent freshness (RFC 7675), which GStreamer 1.22 enables only with a
/// newer libnice than Debian 12's 0.1.21.
pub(super) fn track_peer_activity(webrtc: &gst::Element) -> Arc<AtomicU64> {
    let heard = Arc::new(AtomicU64::new(since_start_ms()));
    let h = heard.clone();
    on_transport_element(webrtc, "nicesrc", move |src| {
        let h = h.clone();
        src.static_pad("src").unwrap().add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
            move |_, _| {
                h.store(since_start_ms(), Ordering::Relaxed);
                gst::PadProbeReturn::Ok
            },
        );
    });
    heard
}

/// Milliseconds since this process first asked (a monotonic clock for atomics).
pub(super) fn since_start_ms() -> u64 {
    static START: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);
    START.elapsed().as_millis() as u64
}

/// Calls `gone` (once per state change to it) when the peer connection fails or closes.
pub(super) fn watch_connection(
    webrtc: &gst::Element,
    gone: impl Fn(String) + Send + Sync + 'static,
) {
    webrtc.connect_notify(Some("connection-state"), move |w, _| {
        use gst_webrtc::WebRTCPeerConnectionState as S;
        let state = w.property::<S>("connection-state");
        tracing::debug!(?state, "WebRTC connection state");
        match state {
            S::Failed => gone("the connection failed (ICE/DTLS timeout)".into()),
            S::Closed => gone("the connection closed".into()),
            _ => {}
        }
    });
}

/// Remote offer in, local answer out (after candidate gathering: no trickle).
pub(super) fn negotiate(webrtc: &gst::Element, offer_sdp: &str) -> anyhow::Result<String> {
    let sdp = gst_sdp::SDPMessage::parse_buffer(offer_sdp.as_bytes())
        .map_err(|_| anyhow::anyhow!("the offer does not parse"))?;
    let offer = gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Offer, sdp);
    let promise = gst::Promise::new();
    webrtc.emit_by_name::<()>("set-remote-description", &[&offer, &promise]);
    promise.wait();
    if let Some(reply) = promise.get_reply()
        && let Ok(err) = reply.get::<glib::Error>("error")
    {
        anyhow::bail!("the offer was not accepted: {err}");
    }
    answer(webrtc)
}

/// Creates and sets the local answer to the remote offer already set; returns it with its
/// candidates once gathering completes (or after 5 s).
pub(super) fn answer(webrtc: &gst::Element) -> anyhow::Result<String> {
    let promise = gst::Promise::new();
    webrtc.emit_by_name::<()>("create-answer", &[&None::<gst::Structure>, &promise]);
    promise.wait();
    let answer = promise
        .get_reply()
        .and_then(|r| r.get::<gst_webrtc::WebRTCSessionDescription>("answer").ok())
        .ok_or_else(|| anyhow::anyhow!("no answer could be made for this offer"))?;
    webrtc.emit_by_name::<()>("set-local-description", &[&answer, &None::<gst::Promise>]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while webrtc.property::<gst_webrtc::WebRTCICEGatheringState>("ice-gathering-state")
        != gst_webrtc::WebRTCICEGatheringState::Complete
    {
        if Instant::now() > deadline {
            tracing::warn!("ICE gathering not complete after 5 s; answering with what there is");
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let local = webrtc
        .property::<Option<gst_webrtc::WebRTCSessionDescription>>("local-description")
        .ok_or_else(|| anyhow::anyhow!("no local description"))?;
    local
        .sdp()
        .as_text()
        .map_err(|e| anyhow::anyhow!("answer to text: {e}"))
}

fn keyframe_requests(depay: &gst::Element) {
    for (name, value) in [("request-keyframe", true), ("wait-for-keyframe", true)] {
        if depay.has_property(name) {
            depay.set_property(name, value);
        }
    }
}

/// Sends a force-key-unit request upstream from `element`: the depayloader turns it into an
/// RTCP PLI to the publisher.
fn request_keyframe(element: &gst::Element) {
    let event = gstreamer_video::UpstreamForceKeyUnitEvent::builder()
        .all_headers(true)
        .build();
    element.send_event(event);
}

fn link_video(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    codec: Option<&str>,
    mux_pad: Option<&gst::Pad>,
    schedule: &KeyframeSchedule,
    video_out: &KeyframeTarget,
    raw_out: &RawOut,
) -> anyhow::Result<()> {
    let mux_pad = mux_pad.ok_or_else(|| anyhow::anyhow!("video was not negotiated"))?;
    let elements = match codec {
        Some("H264") => chain(
            pipeline,
            &["queue", "rtph264depay", "h264parse", "capsfilter"],
        )?,
        Some("VP8") => {
            let els = chain(
                pipeline,
                &[
                    "queue",
                    "rtpvp8depay",
                    "vp8dec",
                    "videoconvert",
                    "x264enc",
                    "h264parse",
                    "capsfilter",
                ],
            )?;
            let enc = &els[4];
            enc.set_property_from_str("tune", "zerolatency");
            enc.set_property_from_str("speed-preset", "veryfast");
            enc.set_property("key-int-max", 60u32);
            enc.set_property("bitrate", 2500u32);
            // WHEP viewers get the VP8 as it came.
            raw_out.tap(&els[1], RawCodec::Vp8);
            els
        }
        other => anyhow::bail!("video codec {other:?} was not negotiated"),
    };
    keyframe_requests(&elements[1]);
    elements.last().unwrap().set_property(
        "caps",
        gst::Caps::builder("video/x-h264")
            .field("stream-format", "avc")
            .field("alignment", "au")
            .build(),
    );
    for e in &elements {
        e.sync_state_with_parent()?;
    }
    elements
        .last()
        .unwrap()
        .static_pad("src")
        .unwrap()
        .link(mux_pad)?;
    pad.link(&elements[0].static_pad("sink").unwrap())?;
    // Keyframe requests for WHEP viewers go to the browser (PLI) through the depayloader:
    // viewers get its H.264 or VP8 as it came (not the VP8 re-encode).
    let target = if codec == Some("VP8") {
        &elements[2]
    } else {
        elements.last().unwrap()
    };
    *video_out.lock().unwrap() = Some(target.downgrade());
    if codec == Some("H264") {
        // Browsers send an H.264 keyframe only when asked; the copied source rendition
        // needs one per segment, so ask (RTCP PLI) on that rhythm.
        let target = elements.last().unwrap().downgrade();
        let (every, stopped) = (schedule.every, schedule.stopped.clone());
        std::thread::Builder::new()
            .name("whip-keyframes".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(every);
                    if *stopped.lock().unwrap() {
                        return;
                    }
                    let Some(element) = target.upgrade() else {
                        return;
                    };
                    request_keyframe(&element);
                }
            })?;
    }
    Ok(())
}

/// Milliseconds to add to a running time of a WHIP pipeline to get the FLV timestamp of the
/// same instant; known once flvmux has put out its first media tag.
type FlvClock = Arc<std::sync::OnceLock<i64>>;

/// How often an H.264 publisher is asked for a keyframe, until the session stops.
struct KeyframeSchedule {
    every: Duration,
    stopped: Arc<Mutex<bool>>,
}

/// Where depayloaded media goes out as it is.
struct RawOut {
    events: mpsc::Sender<WhipEvent>,
    clock: FlvClock,
    /// Whether anyone takes the frames now (a WHEP fan-out copies them).
    wanted: Arc<AtomicBool>,
}

impl RawOut {
    /// Sends every buffer leaving `depay` to the caller as a [`RawFrame`], once the FLV clock
    /// is known, waiting (as the FLV tags do) when the caller is behind: a VP8 frame lost
    /// here would break the picture until the next keyframe.
    fn tap(&self, depay: &gst::Element, codec: RawCodec) {
        let (tx, clock, wanted) = (self.events.clone(), self.clock.clone(), self.wanted.clone());
        depay
            .static_pad("src")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
                let Some(&offset) = clock.get().filter(|_| wanted.load(Ordering::Relaxed)) else {
                    return gst::PadProbeReturn::Ok;
                };
                let Some(buf) = info.buffer() else {
                    return gst::PadProbeReturn::Ok;
                };
                let running = buf.pts().and_then(|pts| {
                    let segment = pad.sticky_event::<gst::event::Segment>(0)?;
                    running_time(segment.segment(), pts)
                });
                if let (Some(t), Ok(map)) = (running, buf.map_readable()) {
                    let _ = tx.blocking_send(WhipEvent::Raw(RawFrame {
                        codec,
                        timestamp_ms: (t.mseconds() as i64 + offset).clamp(0, u32::MAX.into())
                            as u32,
                        data: Bytes::copy_from_slice(&map),
                        keyframe: !buf.flags().contains(gst::BufferFlags::DELTA_UNIT),
                    }));
                }
                gst::PadProbeReturn::Ok
            });
    }
}

fn running_time(segment: &gst::Segment, pts: gst::ClockTime) -> Option<gst::ClockTime> {
    segment
        .downcast_ref::<gst::ClockTime>()?
        .to_running_time(pts)
}

fn link_audio(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    codec: Option<&str>,
    mux_pad: Option<&gst::Pad>,
    raw_out: &RawOut,
) -> anyhow::Result<()> {
    let mux_pad = mux_pad.ok_or_else(|| anyhow::anyhow!("audio was not negotiated"))?;
    if codec != Some("OPUS") {
        anyhow::bail!("audio codec {codec:?} was not negotiated");
    }
    let elements = chain(
        pipeline,
        &[
            "queue",
            "rtpopusdepay",
            "opusdec",
            "audioconvert",
            "audioresample",
            "avenc_aac",
            "aacparse",
        ],
    )?;
    elements[5].set_property("bitrate", 128_000i32);
    // The packets as the browser sent them, besides, for WHEP viewers.
    raw_out.tap(&elements[1], RawCodec::Opus);
    for e in &elements {
        e.sync_state_with_parent()?;
    }
    elements
        .last()
        .unwrap()
        .static_pad("src")
        .unwrap()
        .link(mux_pad)?;
    pad.link(&elements[0].static_pad("sink").unwrap())?;
    Ok(())
}
