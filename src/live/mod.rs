//! Live broadcasts: which publisher feeds which live stream, and each broadcast's lifecycle
//! (pipeline → packager → storage, ENDLIST on stop, continuation on reconnect within the
//! window, and at the end a recording asset or, after a retention period, a clean-up).

pub mod cleanup;
mod session;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use crate::config::LiveConfig;
use crate::db::Db;
use crate::drm::ContentKeys;
use crate::media::flv::{self, TagKind};
use crate::pipeline::preset::Presets;
use crate::pipeline::webrtc::{RawCodec, RawFrame};
use crate::pipeline::whep::WhepFanout;
use crate::storage::DynStore;

/// What a publisher sends into a broadcast.
#[derive(Debug)]
pub enum IngestMessage {
    /// `onMetaData` fields the publisher announced (width, framerate, videodatarate, …).
    Metadata(serde_json::Map<String, serde_json::Value>),
    /// An FLV video tag body and its timestamp.
    Video { timestamp_ms: u32, body: Bytes },
    /// An FLV audio tag body and its timestamp.
    Audio { timestamp_ms: u32, body: Bytes },
    /// A WebRTC publisher's Opus packet or VP8 frame, timed like the tags: for WHEP viewers
    /// only (the broadcast itself has the same media as AAC and H.264).
    Raw(RawFrame),
}

/// Why a publish was refused. RTMP answers with a NetStream status code, WHIP with an HTTP
/// status (each protocol maps it); the text is what the publisher is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PublishRefusal {
    #[error("unknown stream key")]
    UnknownKey,
    #[error("this stream already has a publisher")]
    AlreadyLive,
    #[error("the previous broadcast is closing; try again in a moment")]
    PreviousClosing,
    #[error("the server cannot accept streams right now")]
    Unavailable,
    /// Too many wrong stream keys from this client this minute.
    #[error("too many wrong stream keys from this address; try again in a minute")]
    TooManyWrongKeys,
}

/// A publisher's end of a broadcast. Dropping it (or `finish`) ends the publish.
#[derive(Debug)]
pub struct Publisher {
    pub live_stream_id: String,
    pub tenant_id: String,
    media: mpsc::Sender<IngestMessage>,
    /// Becomes `Some(reason)` when the broadcast wants the publisher gone.
    stop: watch::Receiver<Option<String>>,
    /// Counts the broadcast's requests for a keyframe (a WebRTC viewer needs one).
    keyframes: watch::Receiver<u64>,
    /// Whether the broadcast copies what the publisher sends of its own (`IngestMessage::Raw`).
    copying: Arc<AtomicBool>,
}

impl Publisher {
    /// Sends media, waiting while the broadcast is busy (backpressure to the socket).
    /// Fails once the broadcast has ended, with the reason.
    pub async fn send(&mut self, message: IngestMessage) -> Result<(), String> {
        if let Some(reason) = self.stop.borrow().clone() {
            return Err(reason);
        }
        self.media.send(message).await.map_err(|_| {
            self.stop
                .borrow()
                .clone()
                .unwrap_or_else(|| "broadcast ended".into())
        })
    }

    /// Changes each time a viewer needs a keyframe that the publisher should send as soon as
    /// it can. Publishers that cannot be asked (RTMP) never look.
    pub fn keyframe_requests(&self) -> watch::Receiver<u64> {
        self.keyframes.clone()
    }

    /// True once the broadcast wants `IngestMessage::Raw` (the first WHEP viewer started a
    /// fan-out that copies the publisher's own media); before, sending it is wasted.
    pub fn copying(&self) -> Arc<AtomicBool> {
        self.copying.clone()
    }

    /// Resolves when the broadcast asks the publisher to go (stream deleted, key reset, error).
    /// The future does not borrow the publisher, so a connection can keep one while it sends.
    pub fn stopped(&self) -> impl Future<Output = String> + Send + 'static {
        let mut stop = self.stop.clone();
        async move {
            loop {
                if let Some(reason) = stop.borrow_and_update().clone() {
                    return reason;
                }
                if stop.changed().await.is_err() {
                    return "broadcast ended".into();
                }
            }
        }
    }
}

/// A broadcast's media, available to WebRTC viewers (WHEP): the codec configuration seen so
/// far and, once a first viewer asked, the fan-out pipeline fed with every tag. Viewers' needs
/// for a keyframe go the other way, to the publisher.
#[derive(Default)]
pub struct Tap {
    keyframes: Arc<KeyframeRequests>,
    /// (video, audio) sequence-header tag bodies.
    preamble: Mutex<(Option<Bytes>, Option<Bytes>)>,
    fanout: Mutex<Option<Arc<WhepFanout>>>,
    /// (timestamp of the first tag fed to the fan-out, the fan-out's running time then):
    /// tags are re-timed onto the fan-out's clock, so its network sinks neither wait nor drop.
    base_ms: Mutex<Option<(u32, u32)>>,
    /// What the current publisher sends of its own besides the FLV tags (a WebRTC
    /// publisher's Opus, and VP8): what the fan-out copies.
    supplied: Mutex<Vec<RawCodec>>,
    /// Whether a fan-out copies what the publisher sends of its own. Until the first WHEP
    /// viewer starts one, the publisher keeps it to itself (about 80 messages a second of a
    /// WebRTC publisher); the fan-out then lasts as long as the broadcast.
    copying: Arc<AtomicBool>,
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tap")
    }
}

/// Keyframe requests from viewers to the publisher, at most one per [`KEYFRAME_REQUEST_GAP`]:
/// a keyframe costs the publisher's bitrate, and viewers joining together need only one.
#[derive(Default)]
struct KeyframeRequests {
    count: watch::Sender<u64>,
    last: Mutex<Option<std::time::Instant>>,
}

const KEYFRAME_REQUEST_GAP: std::time::Duration = std::time::Duration::from_millis(500);

impl KeyframeRequests {
    fn request(&self) {
        let now = std::time::Instant::now();
        {
            let mut last = self.last.lock().unwrap();
            if last.is_some_and(|t| now.duration_since(t) < KEYFRAME_REQUEST_GAP) {
                return;
            }
            *last = Some(now);
        }
        self.count.send_modify(|n| *n += 1);
        metrics::counter!("ferrocast_whep_keyframe_requests_total").increment(1);
    }
}

impl Tap {
    /// Every tag of the broadcast passes here.
    pub(crate) fn feed(&self, kind: TagKind, timestamp_ms: u32, body: &Bytes) {
        match kind {
            TagKind::Video
                if matches!(flv::video_tag(body), flv::VideoTag::AvcSequenceHeader(_)) =>
            {
                self.preamble.lock().unwrap().0 = Some(body.clone());
            }
            TagKind::Audio
                if matches!(flv::audio_tag(body), flv::AudioTag::AacSequenceHeader(_)) =>
            {
                self.preamble.lock().unwrap().1 = Some(body.clone());
            }
            _ => {}
        }
        let fanout = self.fanout.lock().unwrap().clone();
        let Some(fanout) = fanout else { return };
        let mut base = self.base_ms.lock().unwrap();
        let (first, offset) =
            *base.get_or_insert_with(|| (timestamp_ms, fanout.running_time_ms() + 100));
        drop(base);
        fanout.push(flv::tag(
            kind,
            fanout_time(first, offset, timestamp_ms),
            body,
        ));
    }

    /// A WebRTC publisher's own Opus packets and VP8 frames: WHEP viewers get them as they
    /// are. They wait for the first FLV tag to set the fan-out's clock (the FLV tags, which
    /// come out of a muxer, are later).
    pub(crate) fn feed_raw(&self, frame: &RawFrame) {
        let fanout = self.fanout.lock().unwrap().clone();
        let Some(fanout) = fanout.filter(|f| f.copies(frame.codec)) else {
            return;
        };
        let Some((first, offset)) = *self.base_ms.lock().unwrap() else {
            return;
        };
        if frame.timestamp_ms >= first {
            fanout.push_raw(frame, fanout_time(first, offset, frame.timestamp_ms));
        }
    }

    /// Says what the publisher that just started sends of its own; a fan-out that copies
    /// something else (the previous publisher's) is stopped, and its viewers' sessions end.
    pub(crate) fn set_supplied(&self, codecs: &[RawCodec]) {
        *self.supplied.lock().unwrap() = codecs.to_vec();
        let stale = {
            let mut slot = self.fanout.lock().unwrap();
            if slot.as_ref().is_some_and(|f| !f.copies_exactly(codecs)) {
                self.copying.store(false, Ordering::Relaxed);
                slot.take()
            } else {
                None
            }
        };
        if let Some(old) = stale {
            tracing::info!("the new publisher sends other media: WHEP viewers start again");
            // Stopping a pipeline blocks: not on this task.
            std::thread::spawn(move || drop(old));
        }
    }

    /// The fan-out, if a viewer started one.
    pub fn current_fanout(&self) -> Option<Arc<WhepFanout>> {
        self.fanout.lock().unwrap().clone()
    }

    /// The fan-out, started now if this is the first viewer.
    pub fn fanout(&self) -> anyhow::Result<Arc<WhepFanout>> {
        let mut slot = self.fanout.lock().unwrap();
        if let Some(f) = slot.as_ref() {
            return Ok(f.clone());
        }
        let (video, audio) = self.preamble.lock().unwrap().clone();
        let video = video.ok_or_else(|| anyhow::anyhow!("the stream has sent no video yet"))?;
        let mut preamble = vec![flv::header(), flv::tag(TagKind::Video, 0, &video)];
        if let Some(audio) = audio {
            preamble.push(flv::tag(TagKind::Audio, 0, &audio));
        }
        *self.base_ms.lock().unwrap() = None;
        let keyframes = self.keyframes.clone();
        let copied = self.supplied.lock().unwrap().clone();
        let fanout = WhepFanout::start(&preamble, &copied, move || keyframes.request())?;
        self.copying.store(!copied.is_empty(), Ordering::Relaxed);
        *slot = Some(fanout.clone());
        Ok(fanout)
    }
}

/// A broadcast timestamp on the fan-out's clock (milliseconds of its running time), given the
/// first tag's timestamp and the fan-out's running time then.
fn fanout_time(first: u32, offset: u32, timestamp_ms: u32) -> u32 {
    timestamp_ms.saturating_sub(first).saturating_add(offset)
}

/// Taps of the broadcasts on this server, by live stream id.
pub type Taps = Arc<Mutex<HashMap<String, Arc<Tap>>>>;

/// Everything a broadcast needs from the rest of the server.
#[derive(Clone)]
pub struct LiveDeps {
    pub db: Db,
    pub store: DynStore,
    pub content_keys: ContentKeys,
    pub presets: Arc<Presets>,
    pub config: LiveConfig,
    /// Base URL of this server, for key URIs in playlists.
    pub public_url: String,
    pub taps: Taps,
    /// Wakes the clean-up of ended broadcasts (`cleanup::run`) when one is scheduled.
    pub cleanup_wakeup: Arc<tokio::sync::Notify>,
    /// CMAF broadcasts' LL-HLS playlists and parts, shared with the delivery.
    pub low_latency: crate::packager::llhls::Registry,
    /// The key server CMAF broadcasts take their keys from (`[licences] speke_url`).
    pub key_provider: Option<Arc<dyn crate::drm::speke::ContentKeyProvider>>,
    /// Wrong keys per client, shared with the API's key checks.
    pub bad_keys: Arc<crate::admission::BadKeys>,
}

/// A broadcast in progress (publishing, or waiting for its publisher to come back).
struct Broadcast {
    tap: Arc<Tap>,
    /// Hands a reconnecting publisher's media channel to the broadcast task.
    reconnect: mpsc::Sender<(mpsc::Receiver<IngestMessage>, watch::Sender<Option<String>>)>,
    /// Ends the broadcast now (stream deleted or key reset), with the reason.
    cancel: watch::Sender<Option<String>>,
    publishing: bool,
}

/// The registry of broadcasts on this server.
#[derive(Clone)]
pub struct LiveHub {
    deps: LiveDeps,
    broadcasts: Arc<Mutex<HashMap<String, Broadcast>>>,
}

/// Messages a publisher may have in flight before it must wait.
const INGEST_QUEUE: usize = 256;

impl LiveHub {
    pub fn new(deps: LiveDeps) -> Self {
        Self {
            deps,
            broadcasts: Arc::default(),
        }
    }

    /// CMAF broadcasts' live LL-HLS playlists and parts (for the delivery).
    pub fn low_latency(&self) -> &crate::packager::llhls::Registry {
        &self.deps.low_latency
    }

    /// Notified when a broadcast schedules a clean-up (for `cleanup::run`).
    pub fn cleanup_wakeup(&self) -> Arc<tokio::sync::Notify> {
        self.deps.cleanup_wakeup.clone()
    }

    /// The media tap of a live stream's broadcast in progress.
    pub fn tap(&self, live_stream_id: &str) -> Option<Arc<Tap>> {
        self.deps.taps.lock().unwrap().get(live_stream_id).cloned()
    }

    /// Authenticates a stream key and starts (or resumes, within the reconnect window) the
    /// stream's broadcast. `supplies` is what the publisher sends of its own besides FLV tags
    /// (a WebRTC publisher's Opus and VP8, for WHEP viewers).
    /// A client (`client`: its address) that sent too many wrong keys this minute is refused
    /// before its key is looked up.
    pub async fn publish(
        &self,
        stream_key: &str,
        supplies: &[RawCodec],
        client: Option<std::net::IpAddr>,
    ) -> Result<Publisher, PublishRefusal> {
        if let Some(ip) = client
            && self.deps.bad_keys.check(ip).is_err()
        {
            return Err(PublishRefusal::TooManyWrongKeys);
        }
        let stream = match self.deps.db.find_live_stream_by_key(stream_key).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                if let Some(ip) = client {
                    self.deps.bad_keys.failed(ip, "stream key");
                }
                return Err(PublishRefusal::UnknownKey);
            }
            Err(e) => {
                tracing::error!(error = %e, "looking up a stream key");
                return Err(PublishRefusal::Unavailable);
            }
        };
        let (media_tx, media_rx) = mpsc::channel(INGEST_QUEUE);
        let (stop_tx, stop_rx) = watch::channel(None);
        let publisher = |tap: &Tap| {
            tap.set_supplied(supplies);
            Publisher {
                live_stream_id: stream.id.clone(),
                tenant_id: stream.tenant_id.clone(),
                media: media_tx.clone(),
                stop: stop_rx.clone(),
                keyframes: tap.keyframes.count.subscribe(),
                copying: tap.copying.clone(),
            }
        };
        let already = PublishRefusal::AlreadyLive;
        // Resume a broadcast waiting in its reconnect window.
        let resume = {
            let mut map = self.broadcasts.lock().expect("lock");
            match map.get_mut(&stream.id) {
                Some(b) if b.publishing => return Err(already),
                Some(b) => {
                    b.publishing = true;
                    Some((b.reconnect.clone(), publisher(&b.tap)))
                }
                None => None,
            }
        };
        if let Some((reconnect, publisher)) = resume {
            if reconnect.send((media_rx, stop_tx)).await.is_ok() {
                tracing::info!(live_stream = %stream.id, "publisher reconnected within the window");
                return Ok(publisher);
            }
            return Err(PublishRefusal::PreviousClosing);
        }

        let broadcast_id = crate::ids::new_id();
        let prefix = format!(
            "tenants/{}/live/{}/{}/",
            stream.tenant_id, stream.id, broadcast_id
        );
        match self
            .deps
            .db
            .try_activate_live_stream(&stream.id, &prefix)
            .await
        {
            Ok(true) => {}
            Ok(false) => return Err(already),
            Err(e) => {
                tracing::error!(error = %e, "activating a live stream");
                return Err(PublishRefusal::Unavailable);
            }
        }
        if !stream.record
            && let Err(e) = self
                .deps
                .db
                .add_pending_live_cleanup(&prefix, &stream.tenant_id, &stream.id)
                .await
        {
            // The broadcast goes on; its end schedules the clean-up all the same.
            tracing::warn!(error = %e, "recording the broadcast's future clean-up");
        }
        let (reconnect_tx, reconnect_rx) = mpsc::channel(1);
        let (cancel_tx, cancel_rx) = watch::channel(None);
        let tap = Arc::new(Tap::default());
        let publisher = publisher(&tap);
        self.deps
            .taps
            .lock()
            .unwrap()
            .insert(stream.id.clone(), tap.clone());
        self.broadcasts.lock().expect("lock").insert(
            stream.id.clone(),
            Broadcast {
                tap: tap.clone(),
                reconnect: reconnect_tx,
                cancel: cancel_tx,
                publishing: true,
            },
        );
        let hub = self.clone();
        let stream_id = stream.id.clone();
        let span =
            tracing::info_span!("broadcast", live_stream = %stream.id, tenant = %stream.tenant_id);
        let task = async move {
            session::run(
                hub.deps.clone(),
                stream,
                tap,
                prefix,
                (media_rx, stop_tx),
                reconnect_rx,
                cancel_rx,
                hub.clone(),
            )
            .await;
            hub.broadcasts.lock().expect("lock").remove(&stream_id);
        };
        tokio::spawn(tracing::Instrument::instrument(task, span));
        Ok(publisher)
    }

    /// The publisher of `live_stream_id` went away; the broadcast waits for it to return.
    fn publisher_gone(&self, live_stream_id: &str) {
        if let Some(b) = self
            .broadcasts
            .lock()
            .expect("lock")
            .get_mut(live_stream_id)
        {
            b.publishing = false;
        }
    }

    /// Ends a stream's broadcast now: its publisher is disconnected and it is finalized.
    pub fn disconnect(&self, live_stream_id: &str) {
        if let Some(b) = self.broadcasts.lock().expect("lock").get(live_stream_id) {
            let _ = b.cancel.send(Some(
                "the live stream was deleted or its key was reset".into(),
            ));
        }
    }

    /// Ends every broadcast (server shutdown) and waits up to `grace` for them to finish
    /// writing their playlists.
    pub async fn shutdown_all(&self, grace: std::time::Duration) {
        for b in self.broadcasts.lock().expect("lock").values() {
            let _ = b.cancel.send(Some("the server is shutting down".into()));
        }
        let deadline = tokio::time::Instant::now() + grace;
        while self.broadcasts() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Ends the broadcasts of these streams (their keys were already retired, so none can
    /// start again) and waits up to `grace` for them to finish writing; false if some are
    /// still writing then.
    pub async fn end_all_of(&self, live_stream_ids: &[String], grace: std::time::Duration) -> bool {
        for id in live_stream_ids {
            self.disconnect(id);
        }
        let deadline = tokio::time::Instant::now() + grace;
        let running = || {
            let broadcasts = self.broadcasts.lock().expect("lock");
            live_stream_ids.iter().any(|id| broadcasts.contains_key(id))
        };
        while running() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        !running()
    }

    /// How many broadcasts are in progress (publishing or in their reconnect window).
    pub fn broadcasts(&self) -> usize {
        self.broadcasts.lock().expect("lock").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewers_asking_together_cost_the_publisher_one_keyframe() {
        let requests = KeyframeRequests::default();
        let seen = requests.count.subscribe();
        for _ in 0..5 {
            requests.request();
        }
        assert_eq!(*seen.borrow(), 1);
        *requests.last.lock().unwrap() = Some(std::time::Instant::now() - KEYFRAME_REQUEST_GAP);
        requests.request();
        assert_eq!(*seen.borrow(), 2);
    }
}
