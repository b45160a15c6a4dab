//! WHIP (RFC 9725) publishing, beside RTMP: a WebRTC session for an offer already narrowed to
//! the codecs Ferrocast takes, whose media feeds the live stream's broadcast exactly as an
//! RTMP publisher's does. The HTTP handler (`api::whip`) reads the request and answers; the
//! publish itself, and its loop, are here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::live::{IngestMessage, LiveHub, PublishRefusal};
use crate::media::sdp::Offer;
use crate::pipeline::webrtc::{IceSettings, RawCodec, WhipEvent, WhipSession};

/// Sessions in progress on this server: id -> a switch that ends it.
pub type WhipSessions = Arc<Mutex<HashMap<String, watch::Sender<bool>>>>;

/// Seconds without media before a publisher counts as gone (first media: connecting too).
const FIRST_MEDIA: Duration = Duration::from_secs(20);
const MEDIA_GAP: Duration = Duration::from_secs(10);

/// Why a WHIP publish did not start.
#[derive(Debug, thiserror::Error)]
pub enum WhipError {
    #[error(transparent)]
    Refused(#[from] PublishRefusal),
    /// The offer could not be answered (no session was made of it).
    #[error("could not answer this offer: {0}")]
    Offer(String),
    #[error("starting the WebRTC session: {0}")]
    Internal(String),
}

/// A publish that started: its session id (for `DELETE`) and the SDP answer.
pub struct Started {
    pub id: String,
    pub answer: String,
}

/// Publishes into the live stream of `stream_key` with `offer`. The broadcast outlives the
/// request that asked: it runs on its own task until the peer goes, sends no media for a
/// while, is deleted through `sessions`, or the broadcast is stopped.
pub async fn publish(
    live: &LiveHub,
    sessions: &WhipSessions,
    stream_key: &str,
    offer: Offer,
    ice: IceSettings,
    client: Option<std::net::IpAddr>,
) -> Result<Started, WhipError> {
    // Started outside the request's span, in its own (as RTMP publishes are in their
    // connection's).
    let publisher = live
        .publish(stream_key, &raw_supplies(&offer), client)
        .instrument(tracing::info_span!(parent: None, "whip"))
        .await?;
    let (events_tx, events) = mpsc::channel(256);
    let copying = publisher.copying();
    let started =
        tokio::task::spawn_blocking(move || WhipSession::start(&offer, &ice, events_tx, copying))
            .await
            .map_err(|e| WhipError::Internal(e.to_string()))?;
    let (session, answer) = match started {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "WHIP session did not start");
            return Err(WhipError::Offer(format!("{e:#}")));
        }
    };
    let id = crate::ids::random_secret(16);
    let (stop_tx, stop_rx) = watch::channel(false);
    sessions.lock().unwrap().insert(id.clone(), stop_tx);
    tracing::info!(live_stream = %publisher.live_stream_id, session = %id, "WHIP publish started");
    tokio::spawn(run(
        publisher,
        session,
        events,
        stop_rx,
        sessions.clone(),
        id.clone(),
    ));
    Ok(Started { id, answer })
}

/// Feeds the session's media to the broadcast until one side ends.
async fn run(
    mut publisher: crate::live::Publisher,
    session: WhipSession,
    mut events: mpsc::Receiver<WhipEvent>,
    mut stop_rx: watch::Receiver<bool>,
    sessions: WhipSessions,
    session_id: String,
) {
    let mut wait = FIRST_MEDIA;
    let mut deadline = tokio::time::Instant::now() + wait;
    let mut keyframes = publisher.keyframe_requests();
    let mut ended = session.ended();
    // Kept across turns: a new one per media message would clone the watch each time.
    let stopped = publisher.stopped();
    tokio::pin!(stopped);
    let reason = loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(WhipEvent::Tag(tag)) => {
                    wait = MEDIA_GAP;
                    deadline = tokio::time::Instant::now() + wait;
                    let message = if tag.kind == 9 {
                        IngestMessage::Video { timestamp_ms: tag.timestamp_ms, body: tag.body }
                    } else {
                        IngestMessage::Audio { timestamp_ms: tag.timestamp_ms, body: tag.body }
                    };
                    if let Err(e) = publisher.send(message).await {
                        break e;
                    }
                }
                Some(WhipEvent::Raw(frame)) => {
                    if let Err(e) = publisher.send(IngestMessage::Raw(frame)).await {
                        break e;
                    }
                }
                None => break "the session stopped".to_string(),
            },
            Ok(()) = ended.changed() => {
                break ended.borrow().clone().unwrap_or_else(|| "the session ended".into());
            }
            _ = tokio::time::sleep_until(deadline) => {
                break format!("no media for {} s", wait.as_secs());
            }
            // A WHEP viewer needs a keyframe: ask the browser for one now.
            Ok(()) = keyframes.changed() => session.request_keyframe(),
            reason = &mut stopped => break reason,
            _ = stop_rx.changed() => break "the publisher ended the session (DELETE)".to_string(),
        }
    };
    tracing::info!(session = %session_id, %reason, "WHIP publish ended");
    sessions.lock().unwrap().remove(&session_id);
    drop(publisher);
    // Tearing down joins GStreamer threads: off the runtime.
    let _ = tokio::task::spawn_blocking(move || drop(session)).await;
}

/// What a WHIP session for `offer` sends as it came, for WHEP viewers: Opus, and VP8 (H.264
/// is in the FLV tags as it came already).
fn raw_supplies(offer: &Offer) -> Vec<RawCodec> {
    let mut codecs = Vec::new();
    if offer.audio.as_ref().is_some_and(|c| c.name == "OPUS") {
        codecs.push(RawCodec::Opus);
    }
    if offer.video.as_ref().is_some_and(|c| c.name == "VP8") {
        codecs.push(RawCodec::Vp8);
    }
    codecs
}
