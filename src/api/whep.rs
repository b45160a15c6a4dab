//! WHEP: a viewer plays a live stream over WebRTC with sub-second latency, one HTTP request.
//! The broadcast's H.264 is copied (never re-encoded), its audio encoded to Opus once; every
//! viewer of a stream shares that one fan-out pipeline. Playback rules apply as for HLS: a
//! `signed` playback id needs a token (`Authorization: Bearer` or `?token=`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::access::{ClientIp, Shown, TokenQuery, authorize, token_from};
use super::whip::{check_sdp_content_type, with_cors};
use super::{AppState, Path, Query};
use crate::drm::AUD_VIDEO;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::media::sdp::{OfferError, WHEP_VIDEO, prepare_offer};
use crate::pipeline::webrtc::IceSettings;
use crate::pipeline::whep::WhepFanout;

/// Viewers on this server: session id -> the fan-out serving it.
pub type WhepViewers = Arc<Mutex<HashMap<String, Weak<WhepFanout>>>>;

/// `POST /whep/{playback_id}`: an SDP offer in, `201` with the answer out.
#[utoipa::path(post, path = "/whep/{playback_id}", tag = "playback", request_body(content = String, content_type = "application/sdp",
    description = "The SDP offer, with all its candidates", example = json!("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\na=rtpmap:96 H264/90000\r\n")), params(("token" = Option<String>, Query, description = "The playback token (or `Authorization: Bearer`, or the `ferrocast_token` cookie); none for public media")),
    responses((status = 201, content_type = "application/sdp", body = String, description = "The SDP answer; `Location` is the session, `ETag` its tag", headers(("Location" = String), ("ETag" = String))),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The stream is not live"),
        (status = 422, body = ErrorBody, description = "An offer the server cannot answer")))]
pub async fn play(
    State(state): State<AppState>,
    Path(playback_id): Path<String>,
    Query(q): Query<TokenQuery>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    with_cors(play_inner(state, playback_id, q, ip, headers, body).await)
}

async fn play_inner(
    state: AppState,
    playback_id: String,
    q: TokenQuery,
    ip: Option<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    check_sdp_content_type(&headers)?;
    let token = token_from(&q, &headers);
    authorize(
        &state,
        &playback_id,
        token.as_deref(),
        AUD_VIDEO,
        Shown::Clear,
        &headers,
        ip.as_deref(),
    )
    .await?;
    let text =
        std::str::from_utf8(&body).map_err(|_| ApiError::invalid("the offer is not UTF-8 text"))?;
    prepare_offer(text, WHEP_VIDEO).map_err(|e| match e {
        OfferError::Malformed(_) => ApiError::invalid(e.to_string()),
        OfferError::Unsupported(_) => ApiError::Unprocessable(e.to_string()),
    })?;
    let stream_id = state
        .jobs
        .db
        .live_stream_id_for_playback(&playback_id)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound("WebRTC playback is for live streams; play assets over HLS".into())
        })?;
    let tap = state
        .live
        .tap(&stream_id)
        .ok_or_else(|| ApiError::Conflict("the stream is not live right now".into()))?;
    let ice = IceSettings::from_config(&state.jobs.config.webrtc);
    let viewers = state.whep.clone();
    let text = text.to_string();
    let added = tokio::task::spawn_blocking(move || {
        let fanout = tap.fanout()?;
        // The video is copied: the viewer gets the codec the stream has.
        let codec = fanout.video_codec();
        let offer = prepare_offer(&text, &[codec]).map_err(|_| {
            anyhow::anyhow!("this stream's video is {codec}, and the offer does not take it")
        })?;
        let weak = Arc::downgrade(&fanout);
        let registry = viewers.clone();
        let (id, answer) = fanout.add_viewer(&offer, &ice, move |id| {
            forget(&registry, &id);
            let weak = weak.clone();
            // Not from the element's own signal: tear down on a thread of our own.
            std::thread::spawn(move || {
                if let Some(f) = weak.upgrade() {
                    f.remove_viewer(&id);
                }
            });
        })?;
        let mut registry = viewers.lock().unwrap();
        registry.insert(id.clone(), Arc::downgrade(&fanout));
        metrics::gauge!("ferrocast_whep_viewers").set(registry.len() as f64);
        drop(registry);
        anyhow::Ok((id, answer))
    })
    .await
    .map_err(|e| ApiError::Internal(e.into()))?;
    let (id, answer) = added.map_err(|e| {
        tracing::warn!(error = %e, "WHEP viewer not added");
        ApiError::Unprocessable(format!("could not answer this offer: {e:#}"))
    })?;
    tracing::info!(live_stream = %stream_id, viewer = %id, "WHEP viewer joined");
    let mut response = Response::new(Body::from(answer));
    *response.status_mut() = StatusCode::CREATED;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(&format!("/whep/sessions/{id}")).expect("url-safe id"),
    );
    Ok(response)
}

/// `DELETE /whep/sessions/{id}`: the viewer is done.
#[utoipa::path(delete, path = "/whep/sessions/{id}", tag = "playback",
    responses((status = 200, description = "The viewer is dropped")))]
pub async fn end_session(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let fanout = forget(&state.whep, &id);
    with_cors(match fanout {
        Some(weak) => {
            if let Some(f) = weak.upgrade() {
                let _ = tokio::task::spawn_blocking(move || f.remove_viewer(&id)).await;
            }
            Ok(StatusCode::OK.into_response())
        }
        None => Err(ApiError::NotFound("no such WHEP session".into())),
    })
}

/// Takes a viewer out of the registry; returns its fan-out if it was there.
fn forget(viewers: &WhepViewers, id: &str) -> Option<Weak<WhepFanout>> {
    let mut registry = viewers.lock().unwrap();
    let fanout = registry.remove(id);
    metrics::gauge!("ferrocast_whep_viewers").set(registry.len() as f64);
    fanout
}

/// `PATCH /whep/sessions/{id}`: trickle ICE is not supported, as for WHIP.
#[utoipa::path(patch, path = "/whep/sessions/{id}", tag = "playback",
    responses((status = 405, body = ErrorBody, description = "Trickle ICE is not supported")))]
pub async fn patch_session() -> Response {
    super::whip::patch_session().await
}
