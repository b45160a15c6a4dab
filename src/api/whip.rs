//! WHIP (RFC 9725): a browser publishes into a live stream with one HTTP request. The offer
//! is narrowed to the codecs Ferrocast takes, answered by a `webrtcbin` session, and the media
//! feeds the live stream's broadcast exactly as an RTMP publisher's would.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::{AppState, Path};
use crate::error::{ApiError, ApiResult};
use crate::live::IngestMessage;
use crate::media::sdp::{Offer, OfferError, WHIP_VIDEO, prepare_offer};
use crate::pipeline::webrtc::{IceSettings, RawCodec, WhipEvent, WhipSession};

/// Sessions in progress on this server: id -> a switch that ends it.
pub type WhipSessions = Arc<Mutex<HashMap<String, watch::Sender<bool>>>>;

/// Seconds without media before a publisher counts as gone (first media: connecting too).
const FIRST_MEDIA: Duration = Duration::from_secs(20);
const MEDIA_GAP: Duration = Duration::from_secs(10);

fn cors(h: &mut HeaderMap) {
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, Link, ETag"),
    );
}

fn ice_links(state: &AppState) -> Vec<String> {
    let w = &state.config.webrtc;
    let mut links = Vec::new();
    if !w.stun_server.is_empty() {
        let url = w.stun_server.replacen("stun://", "stun:", 1);
        links.push(format!("<{url}>; rel=\"ice-server\""));
    }
    for turn in w
        .turn_servers
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        // turn://user:pass@host:port -> <turn:host:port>; username=…; credential=…
        if let Ok(u) = url::Url::parse(turn) {
            let host = format!(
                "{}:{}",
                u.host_str().unwrap_or(""),
                u.port().unwrap_or(3478)
            );
            let scheme = if u.scheme() == "turns" {
                "turns"
            } else {
                "turn"
            };
            links.push(format!(
                "<{scheme}:{host}>; rel=\"ice-server\"; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"",
                u.username(),
                u.password().unwrap_or("")
            ));
        }
    }
    links
}

/// `OPTIONS /whip`, `/whip/{stream_key}`: CORS preflight and what may be posted.
pub async fn options(State(state): State<AppState>) -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    cors(h);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, DELETE, PATCH, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, If-Match"),
    );
    h.insert("accept-post", HeaderValue::from_static("application/sdp"));
    for link in ice_links(&state) {
        if let Ok(v) = HeaderValue::from_str(&link) {
            h.append(header::LINK, v);
        }
    }
    r
}

/// `POST /whip/{stream_key}`: publish with an SDP offer; answers 201 with the SDP answer.
pub async fn publish_with_key(
    State(state): State<AppState>,
    Path(stream_key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    with_cors(publish(state, stream_key, headers, body).await)
}

/// `POST /whip` with `Authorization: Bearer <stream key>`.
pub async fn publish_with_bearer(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    match key {
        Some(key) => with_cors(publish(state, key, headers, body).await),
        None => with_cors(Err(ApiError::Unauthorized(
            "send the stream key as Authorization: Bearer, or POST /whip/{stream_key}".into(),
        ))),
    }
}

/// WHIP and WHEP offers are `application/sdp`.
pub(super) fn check_sdp_content_type(headers: &HeaderMap) -> ApiResult<()> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/sdp") {
        return Err(ApiError::UnsupportedMediaType(
            "a WebRTC offer is Content-Type: application/sdp".into(),
        ));
    }
    Ok(())
}

pub(super) fn with_cors(r: ApiResult<Response>) -> Response {
    let mut r = r.unwrap_or_else(IntoResponse::into_response);
    cors(r.headers_mut());
    r
}

async fn publish(
    state: AppState,
    stream_key: String,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    check_sdp_content_type(&headers)?;
    let text =
        std::str::from_utf8(&body).map_err(|_| ApiError::invalid("the offer is not UTF-8 text"))?;
    let offer = prepare_offer(text, WHIP_VIDEO).map_err(|e| match e {
        OfferError::Malformed(_) => ApiError::invalid(e.to_string()),
        OfferError::Unsupported(_) => ApiError::Unprocessable(e.to_string()),
    })?;
    // The broadcast outlives this request: start it outside the request's span, in its own
    // (as RTMP publishes are in their connection's).
    let mut publisher = state
        .live
        .publish(&stream_key, &raw_supplies(&offer))
        .instrument(tracing::info_span!(parent: None, "whip"))
        .await
        .map_err(|r| {
            if r.description.contains("unknown") {
                ApiError::Unauthorized(r.description)
            } else if r.description.contains("already") {
                ApiError::Conflict(r.description)
            } else {
                ApiError::Unavailable(r.description)
            }
        })?;
    let ice = IceSettings::from_config(&state.config.webrtc);
    let (events_tx, mut events) = mpsc::channel(256);
    let copying = publisher.copying();
    let started =
        tokio::task::spawn_blocking(move || WhipSession::start(&offer, &ice, events_tx, copying))
            .await
            .map_err(|e| ApiError::Internal(e.into()))?;
    let (session, answer) = match started {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "WHIP session did not start");
            return Err(ApiError::invalid(format!(
                "could not answer this offer: {e:#}"
            )));
        }
    };
    let id = crate::ids::random_secret(16);
    let (stop_tx, mut stop_rx) = watch::channel(false);
    state.whip.lock().unwrap().insert(id.clone(), stop_tx);
    tracing::info!(live_stream = %publisher.live_stream_id, session = %id, "WHIP publish started");

    let sessions = state.whip.clone();
    let session_id = id.clone();
    tokio::spawn(async move {
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
    });

    let mut response = Response::new(Body::from(answer));
    *response.status_mut() = StatusCode::CREATED;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(&format!("/whip/sessions/{id}")).expect("url-safe id"),
    );
    for link in ice_links(&state) {
        if let Ok(v) = HeaderValue::from_str(&link) {
            h.append(header::LINK, v);
        }
    }
    Ok(response)
}

/// `DELETE /whip/sessions/{id}`: the publisher is done.
pub async fn end_session(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let stop = state.whip.lock().unwrap().remove(&id);
    with_cors(match stop {
        Some(stop) => {
            let _ = stop.send(true);
            Ok(StatusCode::OK.into_response())
        }
        None => Err(ApiError::NotFound("no such WHIP session".into())),
    })
}

/// `PATCH /whip/sessions/{id}`: trickle ICE is not supported (RFC 9725 allows 405).
pub async fn patch_session() -> Response {
    let mut r = ApiError::MethodNotAllowed(
        "trickle ICE is not supported: send an offer with all candidates".into(),
    )
    .into_response();
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("DELETE, OPTIONS"));
    cors(r.headers_mut());
    r
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
