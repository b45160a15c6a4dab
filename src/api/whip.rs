//! WHIP (RFC 9725) over HTTP: a browser publishes into a live stream with one request. The
//! offer is narrowed to the codecs Ferrocast takes here; the publish itself is
//! `ingest::whip`'s, and a refusal becomes an HTTP status.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::access::ClientIp;
use super::{AppState, Path};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::ingest::whip::{self, Started, WhipError};
use crate::live::PublishRefusal;
use crate::media::sdp::{OfferError, WHIP_VIDEO, prepare_offer};
use crate::pipeline::webrtc::IceSettings;

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
    let w = &state.jobs.config.webrtc;
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
#[utoipa::path(post, path = "/whip/{stream_key}", tag = "live", request_body(content = String, content_type = "application/sdp",
    description = "The SDP offer, with all its candidates", example = json!("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\na=rtpmap:96 H264/90000\r\n")),
    responses((status = 201, content_type = "application/sdp", body = String, description = "The SDP answer; `Location` is the session, `ETag` its tag", headers(("Location" = String), ("ETag" = String))),
        (status = 401, body = ErrorBody, description = "An unknown stream key"),
        (status = 409, body = ErrorBody, description = "The stream is already live"),
        (status = 422, body = ErrorBody, description = "Codecs the server does not take"),
        (status = 429, body = ErrorBody, description = "Too many wrong stream keys from this address this minute; `Retry-After`")))]
pub async fn publish_with_key(
    State(state): State<AppState>,
    Path(stream_key): Path<String>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    with_cors(publish(state, stream_key, ip, headers, body).await)
}

/// `POST /whip` with `Authorization: Bearer <stream key>`.
#[utoipa::path(post, path = "/whip", tag = "live", request_body(content = String, content_type = "application/sdp",
    description = "The SDP offer, with all its candidates", example = json!("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\na=rtpmap:96 H264/90000\r\n")),
    params(("Authorization" = String, Header, description = "`Bearer <stream key>`")),
    responses((status = 201, content_type = "application/sdp", body = String, description = "The SDP answer; `Location` is the session, `ETag` its tag", headers(("Location" = String), ("ETag" = String))),
        (status = 401, body = ErrorBody, description = "No or an unknown stream key"),
        (status = 409, body = ErrorBody, description = "The stream is already live"),
        (status = 422, body = ErrorBody, description = "Codecs the server does not take"),
        (status = 429, body = ErrorBody, description = "Too many wrong stream keys from this address this minute; `Retry-After`")))]
pub async fn publish_with_bearer(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    match key {
        Some(key) => with_cors(publish(state, key, ip, headers, body).await),
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
    client: Option<String>,
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
    let ice = IceSettings::from_config(&state.jobs.config.webrtc);
    let client = client.and_then(|c| c.parse().ok());
    let Started { id, answer } =
        whip::publish(&state.live, &state.whip, &stream_key, offer, ice, client)
            .await
            .map_err(|e| match e {
                WhipError::Refused(r @ PublishRefusal::UnknownKey) => {
                    ApiError::Unauthorized(r.to_string())
                }
                WhipError::Refused(r @ PublishRefusal::AlreadyLive) => {
                    ApiError::Conflict(r.to_string())
                }
                WhipError::Refused(
                    r @ (PublishRefusal::PreviousClosing | PublishRefusal::Unavailable),
                ) => ApiError::Unavailable(r.to_string()),
                WhipError::Refused(PublishRefusal::TooManyWrongKeys) => {
                    ApiError::TooManyRequests(60)
                }
                WhipError::Offer(_) => ApiError::invalid(e.to_string()),
                WhipError::Internal(e) => ApiError::Internal(anyhow::anyhow!(e)),
            })?;
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
#[utoipa::path(delete, path = "/whip/sessions/{id}", tag = "live",
    responses((status = 200, description = "The broadcast ends (or waits out its reconnect window)")))]
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
#[utoipa::path(patch, path = "/whip/sessions/{id}", tag = "live",
    responses((status = 405, body = ErrorBody, description = "Trickle ICE is not supported")))]
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
