//! DRM licences. `POST /licenses/clearkey/{playback_id}`: the W3C Encrypted Media
//! Extensions ClearKey licence, the keys a browser's ClearKey CDM asks for by key id, given
//! by exactly the rules of `/keys` (token, referrer, country, entitlement, rate limits) and
//! audited the same way. Key ids are the content-key store's (16 random bytes, base64url).
//!
//! `POST /licenses/{widevine|playready|fairplay}/{playback_id}`: the licence proxy. The
//! player's challenge goes to the DRM vendor's licence server (`[licences]`) only for a
//! viewer the playback rules allow (token, referrer, country, entitlement, rate limits),
//! and the vendor's answer comes back as it is; every decision is audited.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::access::{ClientIp, TokenQuery, target_of};
use super::delivery::{grant_key, no_store};
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
    no_store(outcome.map(|l| Json(l).into_response()))
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

/// Most bytes of a licence challenge (Widevine's are about 2 KiB, FairPlay's SPC ~10 KiB).
const MAX_CHALLENGE_BYTES: usize = 64 << 10;
/// How long the vendor's licence server may take.
const VENDOR_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn vendor_client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(VENDOR_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a client with a timeout builds")
    })
}

/// A Widevine, PlayReady or FairPlay licence, from the vendor's licence server, for a
/// viewer the playback rules allow.
#[utoipa::path(post, path = "/licenses/{system}/{playback_id}", tag = "playback",
    params(("system" = String, Path, description = "`widevine`, `playready` or `fairplay`"),
        ("token" = Option<String>, Query, description = "The playback token (or `Authorization: Bearer`, or the `ferrocast_token` cookie); none for public media")),
    request_body(content = String, content_type = "application/octet-stream",
        description = "The CDM's licence challenge, forwarded as it is (at most 64 KiB)", example = json!("(the CDM's challenge bytes)")),
    responses((status = 200, description = "The vendor's licence, as it answered", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, body = ErrorBody, description = "An empty or oversized challenge"),
        (status = 401, body = ErrorBody, description = "No token, or one that does not verify"),
        (status = 403, body = ErrorBody, description = "A token that does not allow this (audience, referrer, country, entitlement)"),
        (status = 404, body = ErrorBody, description = "Unknown playback id, or no licence server configured for that system"),
        (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "The vendor's licence server did not answer")))]
pub async fn proxy(
    State(state): State<AppState>,
    Path((system, playback_id)): Path<(String, String)>,
    Query(q): Query<TokenQuery>,
    ClientIp(client_ip): ClientIp,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    no_store(forward(&state, &system, &playback_id, &q, client_ip, &headers, body).await)
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    state: &AppState,
    system: &str,
    playback_id: &str,
    q: &TokenQuery,
    client_ip: Option<String>,
    headers: &HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let config = &state.jobs.config.licences;
    let url = match system {
        "widevine" => &config.widevine_url,
        "playready" => &config.playready_url,
        "fairplay" => &config.fairplay_url,
        _ => return Err(ApiError::NotFound(format!("no licence system {system:?}"))),
    };
    if url.is_empty() {
        return Err(ApiError::NotFound(format!(
            "no {system} licence server is configured ([licences] {system}_url)"
        )));
    }
    if body.is_empty() || body.len() > MAX_CHALLENGE_BYTES {
        return Err(ApiError::invalid("a licence challenge is 1 byte to 64 KiB"));
    }
    super::delivery::per_ip_key_limit(state, client_ip.as_deref())?;
    let target = target_of(state, playback_id).await?;
    let mut decision = crate::drm::audit::Decision {
        tenant_id: target.tenant_id.clone(),
        playback_id: Some(playback_id.to_string()),
        client_ip: client_ip.clone(),
        ..Default::default()
    };
    let token = super::access::token_from(q, headers);
    let judged = super::access::judge(
        state,
        playback_id,
        target,
        token.as_deref(),
        crate::drm::AUD_VIDEO,
        super::access::Shown::Clear,
        headers,
        client_ip.as_deref(),
        super::access::Rental::Start,
    )
    .await?;
    let claims = match judged {
        Ok((_, claims)) => claims,
        Err(denial) => {
            decision.denied = Some(format!("{system}: {}", denial.reason()));
            state.audit.key(decision).await;
            return Err(denial.into());
        }
    };
    decision.viewer = claims.as_ref().and_then(|c| c.viewer.clone());
    let mut request = vendor_client()
        .post(url)
        .header("x-ferrocast-playback-id", playback_id)
        .body(body);
    if let Some(kind) = headers.get(header::CONTENT_TYPE) {
        request = request.header(header::CONTENT_TYPE, kind);
    }
    if let Some(viewer) = &decision.viewer {
        request = request.header("x-ferrocast-viewer", viewer);
    }
    if let Some((name, value)) = config.auth_header.expose().split_once(':') {
        request = request.header(name.trim(), value.trim());
    }
    let answer = async {
        let r = request.send().await?;
        let status = r.status();
        let kind = r.headers().get(header::CONTENT_TYPE).cloned();
        let bytes = r.bytes().await?;
        Ok::<_, reqwest::Error>((status, kind, bytes))
    }
    .await;
    let (status, kind, bytes) = match answer {
        Ok(a) => a,
        Err(e) => {
            decision.denied = Some(format!("{system}: licence server unreachable"));
            state.audit.key(decision).await;
            tracing::warn!(%system, error = %e, "licence server did not answer");
            return Err(ApiError::Unavailable(format!(
                "the {system} licence server did not answer; try again"
            )));
        }
    };
    decision.denied = (!status.is_success()).then(|| format!("{system}: vendor answered {status}"));
    state.audit.key(decision).await;
    let mut response = Response::new(axum::body::Body::from(bytes));
    *response.status_mut() = axum::http::StatusCode::from_u16(status.as_u16())
        .unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        kind.and_then(|k| HeaderValue::from_bytes(k.as_bytes()).ok())
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    Ok(response)
}
