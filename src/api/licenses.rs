//! DRM licences. `POST /licenses/clearkey/{playback_id}`: the W3C Encrypted Media
//! Extensions ClearKey licence, the keys a browser's ClearKey CDM asks for by key id, given
//! by exactly the rules of `/keys` (token, referrer, country, entitlement, rate limits) and
//! audited the same way. Key ids are the content-key store's (16 random bytes, base64url).

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::access::{ClientIp, TokenQuery, target_of};
use super::delivery::grant_key;
use super::{AppState, Json, Path, Query};
use crate::error::{ApiError, ApiResult, ErrorBody};

/// Key ids one licence request may ask for.
const MAX_KIDS: usize = 16;
/// 16 key ids of 22 characters each take well under 1 KiB.
const MAX_REQUEST_BYTES: usize = 8 << 10;

/// A ClearKey licence request, as the CDM writes it.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"kids": ["nrQFDeRLSAKTLifXUIPiZg"], "type": "temporary"}))]
pub struct ClearKeyRequest {
    /// Key ids, base64url without padding (16 bytes each).
    pub kids: Vec<String>,
    /// `temporary` (the only type served).
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// One key of a licence: a JSON Web Key.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClearKeyJwk {
    /// `oct`.
    pub kty: &'static str,
    pub kid: String,
    /// The 16-byte key, base64url without padding.
    pub k: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"keys": [{"kty": "oct", "kid": "nrQFDeRLSAKTLifXUIPiZg", "k": "FmY0xnWCPCNaSpRG-tUuTQ"}], "type": "temporary"}))]
pub struct ClearKeyLicense {
    pub keys: Vec<ClearKeyJwk>,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// The ClearKey licence for key ids of a playback id's media: every key asked for, or the
/// reason one is refused (nothing is given then). The token is the playback token, as for
/// `/keys` (`?token=`, `Authorization: Bearer` or the `ferrocast_token` cookie).
#[utoipa::path(post, path = "/licenses/clearkey/{playback_id}", tag = "playback",
    params(("token" = Option<String>, Query, description = "The playback token (or `Authorization: Bearer`, or the `ferrocast_token` cookie); none for public media")),
    request_body(content = ClearKeyRequest),
    responses((status = 200, body = ClearKeyLicense), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody, description = "No token, or one that does not verify"),
        (status = 403, body = ErrorBody, description = "A key of other media, or a token that does not allow this (audience, referrer, country, entitlement)"),
        (status = 404, body = ErrorBody, description = "No such playback id or key"),
        (status = 429, body = ErrorBody, description = "Too many key requests; `Retry-After`")))]
pub async fn clearkey(
    State(state): State<AppState>,
    Path(playback_id): Path<String>,
    Query(q): Query<TokenQuery>,
    ClientIp(client_ip): ClientIp,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    // The CDM's message as the browser made it: players post it as it is (hls.js sends
    // the bytes with no Content-Type), so the JSON is read whatever the header says.
    let request = if body.len() > MAX_REQUEST_BYTES {
        Err(ApiError::invalid(
            "a ClearKey licence request is at most 8 KiB",
        ))
    } else {
        serde_json::from_slice::<ClearKeyRequest>(&body)
            .map_err(|e| ApiError::invalid(format!("not a ClearKey licence request: {e}")))
    };
    let outcome = match request {
        Ok(body) => license(&state, &playback_id, &q, client_ip, &headers, body).await,
        Err(e) => Err(e),
    };
    let mut response = match outcome {
        Ok(l) => Json(l).into_response(),
        Err(e) => e.into_response(),
    };
    // Neither keys nor refusals may be kept by a cache.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, private"),
    );
    response
}

async fn license(
    state: &AppState,
    playback_id: &str,
    q: &TokenQuery,
    client_ip: Option<String>,
    headers: &HeaderMap,
    body: ClearKeyRequest,
) -> ApiResult<ClearKeyLicense> {
    if body.kind.as_deref().is_some_and(|t| t != "temporary") {
        return Err(ApiError::invalid("only temporary licences are served"));
    }
    if body.kids.is_empty() || body.kids.len() > MAX_KIDS {
        return Err(ApiError::invalid(format!(
            "kids must list 1 to {MAX_KIDS} key ids"
        )));
    }
    if let Some(bad) = body
        .kids
        .iter()
        .find(|k| URL_SAFE_NO_PAD.decode(k).map_or(true, |b| b.len() != 16))
    {
        return Err(ApiError::invalid(format!(
            "{:?} is not a key id (16 bytes, base64url without padding)",
            bad.chars().take(40).collect::<String>()
        )));
    }
    // Only keys of the media this playback id plays.
    let media = target_of(state, playback_id)
        .await?
        .prefix
        .ok_or_else(|| ApiError::NotFound("this playback id has no media yet".into()))?;
    let mut keys = Vec::with_capacity(body.kids.len());
    for kid in body.kids {
        let (_, key) = grant_key(
            state,
            kid.clone(),
            q,
            client_ip.clone(),
            headers,
            Some(&media),
        )
        .await?;
        keys.push(ClearKeyJwk {
            kty: "oct",
            kid,
            k: URL_SAFE_NO_PAD.encode(key),
        });
    }
    Ok(ClearKeyLicense {
        keys,
        kind: "temporary",
    })
}
