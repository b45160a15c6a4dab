//! `Idempotency-Key` on `POST /v1/…`, as Stripe's API has it: the first successful answer to
//! a key is kept for 24 hours (db/idempotency.rs) and the same request under the key gets
//! it again (`Idempotent-Replayed: true`) without running twice; the key with another
//! request is `409`, and so is a second request while the first is still running (a request
//! cut off before it answered gives its key up after the request deadline). Keys belong to
//! the API key that sent them, which must be valid when the key is claimed or replayed.
//! A request that fails (4xx, 5xx) keeps nothing: it may be sent again with its key.
//!
//! Answers often hold secrets (a stream key, a new API key, a signing key's private half):
//! they are kept sealed with AES-256-GCM under a key derived from the caller's own API key,
//! which the server does not keep, so only a request bearing that API key can open them.
//!
//! Not covered: publishable keys (every viewer of a shop shares one, so their keys would
//! collide), unauthenticated routes (beacons, provider webhooks: once-only rules of their
//! own), multipart uploads (`POST /v1/assets`: too large to hash and keep) and tus uploads
//! (`/v1/uploads`: described by headers; tus resumes by its own protocol).

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::AppState;
use crate::db::{IdempotencyClaim, StoredResponse};
use crate::error::ApiError;

/// The largest answer kept for replay (creates answer with one object).
const MAX_KEPT: usize = 1024 * 1024;

/// The cipher that seals the answers kept for `credential`.
fn sealer(credential: &str) -> Aes256Gcm {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(credential.as_bytes()).expect("any key length");
    mac.update(b"ferrocast idempotent answers v1");
    Aes256Gcm::new(&mac.finalize().into_bytes())
}

fn seal(credential: &str, body: &[u8]) -> Vec<u8> {
    let nonce: [u8; 12] = rand::random();
    let mut out = nonce.to_vec();
    out.extend(
        sealer(credential)
            .encrypt(Nonce::from_slice(&nonce), body)
            .expect("AES-GCM seals any length"),
    );
    out
}

fn open(credential: &str, sealed: &[u8]) -> Option<Vec<u8>> {
    let (nonce, body) = sealed.split_at_checked(12)?;
    sealer(credential)
        .decrypt(Nonce::from_slice(nonce), body)
        .ok()
}

fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())
}

pub async fn idempotent(State(state): State<AppState>, req: Request, next: Next) -> Response {
    // tus creates (`/v1/uploads`) are described by headers, not a body, and resume by their
    // own protocol.
    let path = req.uri().path();
    if req.method() != Method::POST || !path.starts_with("/v1/") || path.starts_with("/v1/uploads")
    {
        return next.run(req).await;
    }
    let Some(key) = req.headers().get("idempotency-key") else {
        return next.run(req).await;
    };
    let key = match key.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()) => {
            k.to_string()
        }
        _ => {
            return ApiError::invalid(
                "Idempotency-Key must be 1 to 255 printable ASCII characters",
            )
            .into_response();
        }
    };
    let credential = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(super::auth::bearer)
        .map(str::to_string);
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("multipart/"));
    let Some(credential) = credential.filter(|c| !multipart && !c.starts_with("fcp_")) else {
        return next.run(req).await;
    };
    // Only a valid API key claims or replays (a revoked one gets its 401 from the handler).
    match super::auth::is_active_api_key(&state, &credential).await {
        Ok(true) => {}
        Ok(false) => return next.run(req).await,
        Err(e) => return e.into_response(),
    }
    let scope = sha256_hex(&[credential.as_bytes()]);
    let (parts, body) = req.into_parts();
    let limit = state.jobs.config.http.max_body_bytes;
    let bytes = match to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::PayloadTooLarge(format!("the body is over {limit} bytes"))
                .into_response();
        }
    };
    let target = parts
        .uri
        .path_and_query()
        .map_or("", |p| p.as_str())
        .as_bytes();
    let request_hash = sha256_hex(&[parts.method.as_str().as_bytes(), target, &bytes]);
    let db = &state.jobs.db;
    // A claim outlives its request's deadline only when the request was cut off.
    let lease_ms = (state.jobs.config.http.request_timeout_s as i64 + 5) * 1000;
    match db
        .claim_idempotency_key(&scope, &key, &request_hash, lease_ms)
        .await
    {
        Err(e) => return ApiError::from(e).into_response(),
        Ok(IdempotencyClaim::Mismatch) => {
            return ApiError::Conflict(
                "this Idempotency-Key was used with another request: use a new key".into(),
            )
            .into_response();
        }
        Ok(IdempotencyClaim::InFlight) => {
            return ApiError::Conflict(
                "a request with this Idempotency-Key is still running: retry once it has answered"
                    .into(),
            )
            .into_response();
        }
        Ok(IdempotencyClaim::Replay(stored)) => return replay(&credential, stored),
        Ok(IdempotencyClaim::New) => {}
    }
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    if !response.status().is_success() {
        if let Err(e) = db.release_idempotency_key(&scope, &key).await {
            tracing::warn!(error = %e, "an idempotency key could not be released");
        }
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = match to_bytes(body, MAX_KEPT).await {
        Ok(b) => b,
        Err(e) => {
            let _ = db.release_idempotency_key(&scope, &key).await;
            return ApiError::Internal(anyhow::anyhow!("an answer over {MAX_KEPT} bytes: {e}"))
                .into_response();
        }
    };
    let header_text = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(String::from)
    };
    let stored = StoredResponse {
        status: parts.status.as_u16(),
        content_type: header_text(header::CONTENT_TYPE),
        location: header_text(header::LOCATION),
        body: seal(&credential, &bytes),
    };
    if let Err(e) = db.complete_idempotency_key(&scope, &key, &stored).await {
        tracing::warn!(error = %e, "an idempotent answer could not be kept; the key is freed");
        let _ = db.release_idempotency_key(&scope, &key).await;
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// The kept answer, opened and marked as a replay.
fn replay(credential: &str, stored: StoredResponse) -> Response {
    let Some(body) = open(credential, &stored.body) else {
        return ApiError::Internal(anyhow::anyhow!("a kept idempotent answer does not open"))
            .into_response();
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let h = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, stored.content_type),
        (header::LOCATION, stored.location),
    ] {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            h.insert(name, v);
        }
    }
    h.insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_answers_open_only_with_their_credential() {
        let sealed = seal("fck_a", b"{\"stream_key\":\"secret\"}");
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            open("fck_a", &sealed).as_deref(),
            Some(&b"{\"stream_key\":\"secret\"}"[..])
        );
        assert_eq!(open("fck_b", &sealed), None);
        assert_eq!(open("fck_a", &sealed[..8]), None);
    }
}
