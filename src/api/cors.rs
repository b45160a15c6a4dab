//! Cross-origin use: players on creators' sites fetch playlists, segments, keys and stills
//! with the token in an `Authorization` header, and browser apps call `/v1` (carts and
//! checkout with a publishable key, beacons). CORS never decides access here: tokens (and
//! their `referrer` claim) and API keys do. Any origin may ask, without credentials: an
//! answer that allows `*` is never readable by another origin's script when the request
//! carried cookies (the `ferrocast_token` cookie stays the site's own). This layer answers
//! every preflight on a route and marks every answer to a cross-origin request, exposing the
//! headers players and apps read.
//!
//! The WHIP/WHEP routes answer their own preflights (their protocol's headers), and so do
//! beacons; this layer leaves those to them. tus's capability `OPTIONS` (no
//! `Access-Control-Request-Method`) still reaches its handler.

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Request headers a cross-origin caller may send.
const ALLOWED_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "range",
    "idempotency-key",
    "x-request-id",
    "cmcd-request",
    "cmcd-object",
    "cmcd-session",
    "cmcd-status",
    // tus uploads from a browser (tus-js-client).
    "tus-resumable",
    "upload-length",
    "upload-offset",
    "upload-metadata",
    "upload-defer-length",
    "upload-checksum",
    "x-http-method-override",
];

/// Response headers a cross-origin caller may read: sizes and ranges for players, `Date`
/// for their clock, and what the API's answers carry.
const EXPOSED: &str = "Content-Length, Content-Range, Accept-Ranges, Date, ETag, Last-Modified, \
     Location, Retry-After, RateLimit, RateLimit-Policy, Idempotent-Replayed, X-Request-Id, \
     Upload-Offset, Upload-Length, Upload-Expires, Upload-Metadata, Tus-Resumable, Tus-Version, \
     Tus-Extension, Tus-Max-Size";

/// Routes with their own preflight answers, and the operator's (health, readiness, metrics:
/// no page of another origin reads those).
fn answers_its_own(path: &str) -> bool {
    [
        "/whip",
        "/whep",
        "/v1/beacons",
        "/v1/cmcd",
        "/healthz",
        "/readyz",
        "/metrics",
    ]
    .iter()
    .any(|p| {
        path.strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// The methods a route's family takes: playback is read only, but for licence requests.
fn methods(path: &str) -> &'static str {
    if path.starts_with("/v1/") {
        "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
    } else if path.starts_with("/licenses/") {
        "POST, OPTIONS"
    } else {
        "GET, HEAD, OPTIONS"
    }
}

/// The requested headers that are allowed, as a preflight answer lists them.
fn allowed(requested: Option<&HeaderValue>) -> String {
    requested
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| ALLOWED_HEADERS.contains(&h.as_str()))
        .take(ALLOWED_HEADERS.len())
        .collect::<Vec<_>>()
        .join(", ")
}

fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

pub async fn cors(req: Request, next: Next) -> Response {
    let path = req.uri().path();
    // No such route: its 404 as for anyone.
    if answers_its_own(path) || req.extensions().get::<MatchedPath>().is_none() {
        return next.run(req).await;
    }
    let methods = methods(path);
    if is_preflight(req.method(), req.headers()) {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let h = response.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(methods),
        );
        let headers = allowed(req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS));
        if !headers.is_empty() {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_str(&headers).expect("allow-listed names"),
            );
        }
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("86400"),
        );
        return response;
    }
    allow_cross_origin(req, next).await
}

/// The cross-origin headers on an answer to a request from another origin, if it has none
/// yet. Alone, outermost, it covers the answers made around [`cors`]: the request
/// deadline's 503 and a caught panic's 500.
pub async fn answers(req: Request, next: Next) -> Response {
    if answers_its_own(req.uri().path()) || req.extensions().get::<MatchedPath>().is_none() {
        return next.run(req).await;
    }
    allow_cross_origin(req, next).await
}

async fn allow_cross_origin(req: Request, next: Next) -> Response {
    let cross_origin = req.headers().contains_key(header::ORIGIN);
    let mut response = next.run(req).await;
    if cross_origin {
        let h = response.headers_mut();
        h.entry(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .or_insert(HeaderValue::from_static("*"));
        h.entry(header::ACCESS_CONTROL_EXPOSE_HEADERS)
            .or_insert(HeaderValue::from_static(EXPOSED));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allow_listed_request_headers_are_allowed() {
        let v = HeaderValue::from_static("Authorization, X-Evil, range , Content-Type");
        assert_eq!(allowed(Some(&v)), "authorization, range, content-type");
        assert_eq!(allowed(None), "");
    }

    #[test]
    fn protocol_routes_answer_their_own_preflights() {
        assert!(answers_its_own("/whip/abc"));
        assert!(answers_its_own("/v1/beacons"));
        assert!(!answers_its_own("/v1/beaconsx"));
        assert!(!answers_its_own("/hls/x/master.m3u8"));
        assert_eq!(methods("/keys/k"), "GET, HEAD, OPTIONS");
        assert_eq!(methods("/licenses/clearkey/p"), "POST, OPTIONS");
    }
}
