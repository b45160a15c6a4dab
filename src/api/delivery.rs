//! Playback: HLS playlists and segments from storage, content keys, and a player page.
//! A `signed` playback id needs a token (query `token`, or `Authorization: Bearer`); the
//! token is carried into every URI of the playlists served, so players need nothing else.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use super::delivery_cache::CachedObject;
use super::{AppState, Path, Query};
use crate::db::{LiveState, PlaybackPolicy, PlaybackTarget};
use crate::drm::audit::Decision;
use crate::drm::{AUD_STORYBOARD, AUD_THUMBNAIL, AUD_VIDEO, PlaybackClaims, TokenError};
use crate::error::{ApiError, ApiResult};
use crate::storage::ObjectKey;

#[derive(Debug, Default, Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

/// Cookie a site may set so that its players need no token in URLs.
const TOKEN_COOKIE: &str = "ferrocast_token";

/// The playback token: `?token=`, else `Authorization: Bearer`, else the `ferrocast_token` cookie.
pub(super) fn token_from(query: &TokenQuery, headers: &HeaderMap) -> Option<String> {
    let header_str = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    query
        .token
        .clone()
        .filter(|t| !t.is_empty())
        .or_else(|| {
            header_str(header::AUTHORIZATION)?
                .strip_prefix("Bearer ")
                .map(str::to_string)
        })
        .or_else(|| {
            header_str(header::COOKIE)?
                .split(';')
                .filter_map(|c| c.trim().split_once('='))
                .find(|(name, _)| *name == TOKEN_COOKIE)
                .map(|(_, v)| v.to_string())
        })
}

fn token_denied(e: TokenError) -> ApiError {
    if e.is_forbidden() {
        ApiError::Forbidden(e.to_string())
    } else {
        ApiError::Unauthorized(e.to_string())
    }
}

/// A request that may not have what it asked for: the API error and a short reason for
/// the audit log.
struct Denied(ApiError, &'static str);

impl From<TokenError> for Denied {
    fn from(e: TokenError) -> Self {
        let reason = e.reason();
        Denied(token_denied(e), reason)
    }
}

/// The client's address: the configured proxy header's first entry, else the TCP peer.
pub struct ClientIp(pub Option<String>);

impl axum::extract::FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header_name = &state.config.playback.client_ip_header;
        let from_header = (!header_name.is_empty())
            .then(|| parts.headers.get(header_name.as_str()))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty());
        let peer = || {
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip().to_string())
        };
        Ok(ClientIp(from_header.or_else(peer)))
    }
}

/// The host a page was served from, from `Origin` or `Referer`.
fn page_host(headers: &HeaderMap) -> Option<String> {
    [header::ORIGIN, header::REFERER]
        .iter()
        .filter_map(|h| headers.get(h)?.to_str().ok())
        .filter_map(|v| url::Url::parse(v).ok())
        .find_map(|u| u.host_str().map(str::to_ascii_lowercase))
}

/// `example.com` allows exactly that host; `*.example.com` any host below it. Entries may be
/// written as origins (`https://example.com`).
fn referrer_allowed(allowed: &[String], host: &str) -> bool {
    allowed.iter().any(|entry| {
        let entry = entry.trim().to_ascii_lowercase();
        let entry = url::Url::parse(&entry)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or(entry);
        match entry.strip_prefix("*.") {
            Some(domain) => host.ends_with(&format!(".{domain}")),
            None => entry == host,
        }
    })
}

/// The viewer's country: the trusted header if configured and present, else the GeoIP
/// database's answer for the client address.
fn viewer_country(
    state: &AppState,
    headers: &HeaderMap,
    client_ip: Option<&str>,
) -> Option<String> {
    let header_name = &state.config.playback.country_header;
    let from_header = (!header_name.is_empty())
        .then(|| headers.get(header_name.as_str()))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .map(|c| c.trim().to_ascii_uppercase())
        .filter(|c| !c.is_empty());
    from_header.or_else(|| {
        let ip: std::net::IpAddr = client_ip?.parse().ok()?;
        let found: maxminddb::geoip2::Country = state.geoip.as_ref()?.lookup(ip).ok()??;
        Some(found.country?.iso_code?.to_ascii_uppercase())
    })
}

/// Checks a token for `target` (and `playback_id`, when the request names one), for one
/// audience, including its referrer and country restrictions.
async fn check_token(
    state: &AppState,
    target: &PlaybackTarget,
    token: &str,
    playback_id: Option<&str>,
    audience: &str,
    headers: &HeaderMap,
    client_ip: Option<&str>,
) -> Result<PlaybackClaims, Denied> {
    let verified = state.tokens.verify(token, playback_id, audience).await?;
    if let Some(signer) = &verified.signed_by_tenant
        && *signer != target.tenant_id
    {
        return Err(Denied(
            ApiError::Unauthorized("playback token is signed by another tenant's key".into()),
            "foreign_signing_key",
        ));
    }
    let claims = verified.claims;
    if let Some(allowed) = &claims.referrer {
        match page_host(headers) {
            Some(host) if referrer_allowed(allowed, &host) => {}
            _ => {
                return Err(Denied(
                    ApiError::Forbidden("this page is not allowed to play this video".into()),
                    "referrer_not_allowed",
                ));
            }
        }
    }
    if let Some(allowed) = &claims.country {
        let country = viewer_country(state, headers, client_ip);
        match country {
            Some(c) if allowed.iter().any(|a| a.eq_ignore_ascii_case(&c)) => {}
            Some(_) => {
                return Err(Denied(
                    ApiError::Forbidden("not available in your country".into()),
                    "country_not_allowed",
                ));
            }
            None => {
                return Err(Denied(
                    ApiError::Forbidden(
                        "this video is limited to some countries and yours is unknown".into(),
                    ),
                    "country_unknown",
                ));
            }
        }
    }
    Ok(claims)
}

/// The playback target, if the request may play it, and the token's claims (signed policy).
pub(super) async fn authorize(
    state: &AppState,
    playback_id: &str,
    token: Option<&str>,
    audience: &str,
    headers: &HeaderMap,
    client_ip: Option<&str>,
) -> ApiResult<(PlaybackTarget, Option<PlaybackClaims>)> {
    let target = state
        .db
        .playback_target(playback_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("playback id not found".into()))?;
    if target.policy != PlaybackPolicy::Signed {
        return Ok((target, None));
    }
    let token =
        token.ok_or_else(|| ApiError::Unauthorized("a playback token is required".into()))?;
    let claims = check_token(
        state,
        &target,
        token,
        Some(playback_id),
        audience,
        headers,
        client_ip,
    )
    .await
    .map_err(|d| d.0)?;
    Ok((target, Some(claims)))
}

/// Lines of a `RESOLUTION=WxH` attribute: the short side.
fn resolution_lines(line: &str) -> Option<u32> {
    let v = line.split("RESOLUTION=").nth(1)?;
    let v = v.split(',').next()?;
    let (w, h) = v.split_once('x')?;
    Some(w.trim().parse::<u32>().ok()?.min(h.trim().parse().ok()?))
}

/// A master playlist without the variants above `max_lines`.
pub fn limit_master(master: &str, max_lines: u32) -> String {
    let mut out = String::with_capacity(master.len());
    let mut skip_next_uri = false;
    for line in master.lines() {
        if skip_next_uri && !line.starts_with('#') && !line.is_empty() {
            skip_next_uri = false;
            continue;
        }
        let too_big = resolution_lines(line).is_some_and(|l| l > max_lines);
        if line.starts_with("#EXT-X-STREAM-INF:") && too_big {
            skip_next_uri = true;
            continue;
        }
        if line.starts_with("#EXT-X-I-FRAME-STREAM-INF:") && too_big {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The lines (short side) of a rendition, from the master playlist's variant that plays it.
async fn rendition_lines(
    state: &AppState,
    prefix: &str,
    rendition: &str,
) -> ApiResult<Option<u32>> {
    let key = ObjectKey::parse(&format!("{prefix}master.m3u8"))?;
    let master = match state.store.get(&key, None).await {
        Ok(o) => String::from_utf8_lossy(&o.body).into_owned(),
        Err(crate::storage::StorageError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut last = None;
    for line in master.lines() {
        if line.starts_with("#EXT-X-STREAM-INF:") {
            last = resolution_lines(line);
        } else if !line.starts_with('#') && line.starts_with(&format!("{rendition}/")) {
            return Ok(last);
        }
    }
    Ok(None)
}

/// Adds `token=` to every URI in a playlist (segment lines, EXT-X-KEY and EXT-X-MEDIA URIs).
pub fn with_token(playlist: &str, token: &str) -> String {
    let add = |uri: &str| {
        let sep = if uri.contains('?') { '&' } else { '?' };
        format!("{uri}{sep}token={token}")
    };
    let mut out = String::with_capacity(playlist.len() + 64);
    for line in playlist.lines() {
        if line.is_empty() {
        } else if !line.starts_with('#') {
            out.push_str(&add(line));
        } else if let Some(start) = line.find("URI=\"") {
            let start = start + 5;
            match line[start..].find('"') {
                Some(len) => {
                    out.push_str(&line[..start]);
                    out.push_str(&add(&line[start..start + len]));
                    out.push_str(&line[start + len..]);
                }
                None => out.push_str(line),
            }
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

fn has_endlist(playlist: &[u8]) -> bool {
    playlist.windows(14).any(|w| w == b"#EXT-X-ENDLIST")
}

async fn serve_object(
    state: &AppState,
    target: &PlaybackTarget,
    policy_private: bool,
    path: &str,
    token: Option<&str>,
    max_lines: Option<u32>,
) -> ApiResult<Response> {
    let prefix = target
        .prefix
        .as_deref()
        .ok_or_else(|| ApiError::NotFound("this stream is offline".into()))?;
    let key = ObjectKey::parse(&format!("{prefix}{path}"))?;
    let is_playlist = path.ends_with(".m3u8");
    if !is_playlist && state.config.delivery.redirect_segments {
        let expiry = std::time::Duration::from_secs(state.config.delivery.redirect_expiry_s);
        let url = state.store.presign_get(&key, expiry).await?;
        let mut response = StatusCode::FOUND.into_response();
        let h = response.headers_mut();
        h.insert(
            header::LOCATION,
            HeaderValue::from_str(&url).map_err(|e| ApiError::Internal(e.into()))?,
        );
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-store"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        return Ok(response);
    }
    let object = match state.delivery_cache.object(key.as_str()) {
        Some(hit) => hit,
        None => {
            let object = state.store.get(&key, None).await.map_err(|e| match e {
                crate::storage::StorageError::NotFound(_) => {
                    ApiError::NotFound(format!("{path} not found"))
                }
                other => other.into(),
            })?;
            // Segments never change once written. Playlists may (a publisher back within
            // the reconnect window, subtitles added), so they are kept only briefly, and a
            // live media playlist, which changes with every segment, not at all.
            let live_media = is_playlist && path != "master.m3u8" && !has_endlist(&object.body);
            let object = CachedObject {
                body: object.body,
                content_type: object.meta.content_type,
                expires: is_playlist
                    .then(|| std::time::Instant::now() + super::delivery_cache::PLAYLIST_TTL),
            };
            if !live_media {
                state
                    .delivery_cache
                    .put_object(key.as_str(), object.clone());
            }
            object
        }
    };
    let cache = match (is_playlist, policy_private) {
        // Live playlists change every segment; finished ones only when re-packaged.
        (true, _) if !has_endlist(&object.body) => "no-cache".to_string(),
        (true, true) => "private, max-age=60".into(),
        (true, false) => "public, max-age=60".into(),
        // Segments never change once written.
        (false, true) => "private, max-age=86400, immutable".into(),
        (false, false) => "public, max-age=31536000, immutable".into(),
    };
    let body = if is_playlist && (token.is_some() || max_lines.is_some()) {
        let mut text = String::from_utf8_lossy(&object.body).into_owned();
        if let Some(max) = max_lines {
            text = limit_master(&text, max);
            if !text.contains("#EXT-X-STREAM-INF:") && path == "master.m3u8" {
                return Err(ApiError::Forbidden(format!(
                    "no rendition of this video is within the token's max_resolution ({max}p)"
                )));
            }
        }
        if let Some(t) = token {
            text = with_token(&text, t);
        }
        Body::from(text)
    } else {
        Body::from(object.body)
    };
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&object.content_type).expect("ascii"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_str(&cache).expect("ascii"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    Ok(response)
}

/// `GET /hls/{playback_id}/master.m3u8`
pub async fn master_playlist(
    State(state): State<AppState>,
    Path(playback_id): Path<String>,
    Query(q): Query<TokenQuery>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let token = token_from(&q, &headers);
    let (target, claims) = authorize(
        &state,
        &playback_id,
        token.as_deref(),
        AUD_VIDEO,
        &headers,
        ip.as_deref(),
    )
    .await?;
    let private = target.policy == PlaybackPolicy::Signed;
    let max_lines = claims.as_ref().and_then(PlaybackClaims::max_lines);
    serve_object(
        &state,
        &target,
        private,
        "master.m3u8",
        token.as_deref(),
        max_lines,
    )
    .await
}

/// `GET /hls/{playback_id}/{rendition}/{file}`: media playlists and segments.
pub async fn rendition_file(
    State(state): State<AppState>,
    Path((playback_id, rendition, file)): Path<(String, String, String)>,
    Query(q): Query<TokenQuery>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let token = token_from(&q, &headers);
    let (target, claims) = authorize(
        &state,
        &playback_id,
        token.as_deref(),
        AUD_VIDEO,
        &headers,
        ip.as_deref(),
    )
    .await?;
    if let Some(max) = claims.as_ref().and_then(PlaybackClaims::max_lines)
        && let Some(prefix) = target.prefix.as_deref()
        && rendition_lines(&state, prefix, &rendition)
            .await?
            .is_some_and(|l| l > max)
    {
        return Err(ApiError::Forbidden(format!(
            "rendition {rendition} is above the token's max_resolution ({max}p)"
        )));
    }
    let private = target.policy == PlaybackPolicy::Signed;
    serve_object(
        &state,
        &target,
        private,
        &format!("{rendition}/{file}"),
        token.as_deref(),
        None,
    )
    .await
}

/// `GET /keys/{key_id}`: the 16-byte content key, to a valid token for media it encrypts
/// (or to anyone, when that media is public and needs no entitlement). Rate-limited per
/// client address and per viewer; every decision on an existing key is audited.
pub async fn content_key(
    State(state): State<AppState>,
    Path(key_id): Path<String>,
    Query(q): Query<TokenQuery>,
    ClientIp(client_ip): ClientIp,
    headers: HeaderMap,
) -> Response {
    let mut response = match serve_key(&state, key_id, &q, client_ip, &headers).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    // Neither keys nor refusals may be kept by a cache.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, private"),
    );
    response
}

async fn serve_key(
    state: &AppState,
    key_id: String,
    q: &TokenQuery,
    client_ip: Option<String>,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    if let Some(ip) = &client_ip
        && let Err(wait) = state.key_limits.per_ip.check(ip)
    {
        metrics::counter!("ferrocast_key_rate_limited_total", "by" => "ip").increment(1);
        return Err(ApiError::TooManyRequests(
            (wait.as_secs_f64().ceil() as u64).max(1),
        ));
    }
    let (stored, key) = state
        .content_keys
        .get(&key_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("key not found".into()))?;
    let mut decision = Decision {
        tenant_id: stored.tenant_id.clone(),
        key_id: Some(key_id.clone()),
        client_ip,
        ..Decision::default()
    };
    let result = key_decision(state, &stored, q, headers, &mut decision).await;
    decision.denied = result.as_ref().err().map(|d| d.1.to_string());
    state.audit.key(decision).await;
    let outcome = if result.is_ok() { "granted" } else { "denied" };
    metrics::counter!("ferrocast_key_requests_total", "result" => outcome).increment(1);
    result.map_err(|d| d.0)?;
    let mut response = Response::new(Body::from(key.to_vec()));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    Ok(response)
}

/// Whether the key may be handed out; fills in who asked, for the audit log.
async fn key_decision(
    state: &AppState,
    stored: &crate::db::StoredContentKey,
    q: &TokenQuery,
    headers: &HeaderMap,
    decision: &mut Decision,
) -> Result<(), Denied> {
    let Some(token) = token_from(q, headers) else {
        if state
            .db
            .scope_is_public(&stored.scope)
            .await
            .map_err(internal)?
        {
            return Ok(());
        }
        return Err(Denied(
            ApiError::Unauthorized("a playback token is required".into()),
            "no_token",
        ));
    };
    // The token names a playback id; find it first, to check the token against its owner.
    let playback_id = jsonwebtoken::dangerous::insecure_decode::<PlaybackClaims>(&token)
        .map(|d| d.claims.sub)
        .map_err(|_| Denied::from(TokenError::Invalid))?;
    decision.playback_id = Some(playback_id.clone());
    let target = state
        .db
        .find_playback_target(&playback_id)
        .await
        .map_err(internal)?
        .filter(|t| t.tenant_id == stored.tenant_id)
        .ok_or(Denied::from(TokenError::WrongPlaybackId))?;
    let client_ip = decision.client_ip.clone();
    let claims = check_token(
        state,
        &target,
        &token,
        Some(&playback_id),
        AUD_VIDEO,
        headers,
        client_ip.as_deref(),
    )
    .await?;
    decision.viewer = claims.viewer.clone();
    if target.prefix.as_deref() != Some(stored.scope.as_str()) {
        tracing::info!(key_id = %stored.id, playback_id = %claims.sub, "key denied: token for other media");
        return Err(TokenError::WrongPlaybackId.into());
    }
    if let Some(viewer) = &claims.viewer
        && let Err(wait) = state.key_limits.per_viewer.check(viewer)
    {
        metrics::counter!("ferrocast_key_rate_limited_total", "by" => "viewer").increment(1);
        return Err(Denied(
            ApiError::TooManyRequests((wait.as_secs_f64().ceil() as u64).max(1)),
            "rate_limited",
        ));
    }
    if target.requires_entitlement {
        let Some(viewer) = &claims.viewer else {
            return Err(Denied(
                ApiError::Forbidden(
                    "this video needs an entitlement; the token names no viewer".into(),
                ),
                "no_viewer",
            ));
        };
        if !state
            .db
            .has_entitlement(&target.tenant_id, &claims.sub, viewer)
            .await
            .map_err(internal)?
        {
            return Err(Denied(
                ApiError::Forbidden("this viewer has no entitlement to this video".into()),
                "no_entitlement",
            ));
        }
    }
    Ok(())
}

fn internal(e: crate::db::DbError) -> Denied {
    Denied(e.into(), "internal_error")
}

#[derive(Debug, Default, Deserialize)]
pub struct ThumbnailQuery {
    token: Option<String>,
    /// Seconds into the media; none: the poster.
    time: Option<f64>,
    /// Pixels wide (height follows the aspect ratio), 16 to 1920; default 640.
    width: Option<u32>,
}

/// `GET /thumbnails/{playback_id}.jpg?time=12.5&width=320`: a frame of an asset, rendered on
/// first request from the original and kept in storage for the next.
pub async fn thumbnail(
    State(state): State<AppState>,
    Path(file): Path<String>,
    Query(q): Query<ThumbnailQuery>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let playback_id = file
        .strip_suffix(".jpg")
        .ok_or_else(|| ApiError::NotFound("thumbnails are .jpg".into()))?;
    let token = token_from(
        &TokenQuery {
            token: q.token.clone(),
        },
        &headers,
    );
    let (target, _) = authorize(
        &state,
        playback_id,
        token.as_deref(),
        AUD_THUMBNAIL,
        &headers,
        ip.as_deref(),
    )
    .await?;
    let prefix = target
        .prefix
        .as_deref()
        .ok_or_else(|| ApiError::NotFound("nothing to show yet".into()))?;
    let width = q.width.unwrap_or(640);
    if !(16..=1920).contains(&width) {
        return Err(ApiError::invalid("width must be 16 to 1920"));
    }
    let name = match q.time {
        None if q.width.is_none() => "poster.jpg".to_string(),
        time => {
            let t = time.unwrap_or(0.0);
            if !t.is_finite() || t < 0.0 {
                return Err(ApiError::invalid(
                    "time must be a number of seconds, 0 or more",
                ));
            }
            format!("thumbnails/{}_{width}.jpg", (t * 1000.0).round() as u64)
        }
    };
    let key = ObjectKey::parse(&format!("{prefix}{name}"))?;
    let jpeg = match state.store.get(&key, None).await {
        Ok(o) => o.body,
        Err(crate::storage::StorageError::NotFound(_)) if name != "poster.jpg" => {
            let original = ObjectKey::parse(&format!("{prefix}original"))?;
            let source = match state
                .store
                .presign_get(&original, std::time::Duration::from_secs(300))
                .await
            {
                Ok(url) if state.store.head(&original).await.is_ok() => url,
                _ => {
                    return Err(ApiError::NotFound(
                        "thumbnails are made from uploaded originals; this has none".into(),
                    ));
                }
            };
            let time = q.time.unwrap_or(0.0);
            let jpeg = tokio::task::spawn_blocking(move || {
                crate::pipeline::vod::thumbnail(&source, time, width)
            })
            .await
            .map_err(|e| ApiError::Internal(e.into()))?
            .map_err(|e| ApiError::Unprocessable(format!("could not render a thumbnail: {e}")))?;
            let jpeg = bytes::Bytes::from(jpeg);
            state.store.put(&key, jpeg.clone(), "image/jpeg").await?;
            jpeg
        }
        Err(e) => return Err(e.into()),
    };
    Ok(still_response(&target, "image/jpeg", jpeg))
}

/// Thumbnails and storyboards: immutable once made, cacheable by who may see them.
fn still_response(
    target: &PlaybackTarget,
    content_type: &'static str,
    body: bytes::Bytes,
) -> Response {
    let cache = if target.policy == PlaybackPolicy::Signed {
        "private, max-age=3600"
    } else {
        "public, max-age=86400"
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, cache),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        body,
    )
        .into_response()
}

/// `GET /storyboards/{playback_id}.vtt` and `.jpg`: scrubbing previews of an asset, a WebVTT
/// whose cues point into one sprite image (`#xywh=`); a query token is carried into them.
pub async fn storyboard(
    State(state): State<AppState>,
    Path(file): Path<String>,
    Query(q): Query<TokenQuery>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (playback_id, ext) = file
        .rsplit_once('.')
        .ok_or_else(|| ApiError::NotFound("storyboards are .vtt or .jpg".into()))?;
    if ext != "vtt" && ext != "jpg" {
        return Err(ApiError::NotFound("storyboards are .vtt or .jpg".into()));
    }
    let token = token_from(&q, &headers);
    let (target, _) = authorize(
        &state,
        playback_id,
        token.as_deref(),
        AUD_STORYBOARD,
        &headers,
        ip.as_deref(),
    )
    .await?;
    let prefix = target
        .prefix
        .as_deref()
        .ok_or_else(|| ApiError::NotFound("no storyboard".into()))?;
    let key = ObjectKey::parse(&format!("{prefix}storyboard.{ext}"))?;
    let object = state.store.get(&key, None).await.map_err(|e| match e {
        crate::storage::StorageError::NotFound(_) => {
            ApiError::NotFound("this asset has no storyboard".into())
        }
        other => other.into(),
    })?;
    let body = match (ext, q.token.as_deref().filter(|t| !t.is_empty())) {
        ("vtt", Some(t)) => String::from_utf8_lossy(&object.body)
            .replace(".jpg#xywh=", &format!(".jpg?token={t}#xywh="))
            .into(),
        _ => object.body,
    };
    let content_type = if ext == "vtt" {
        "text/vtt"
    } else {
        "image/jpeg"
    };
    Ok(still_response(&target, content_type, body))
}

/// `GET /play/{playback_id}`: a minimal hls.js player for the stream. For a live stream it
/// says whether the broadcast is live, ended (its final playlists are still there) or offline
/// (nothing to play; it starts playing when the broadcaster goes live); of a signed stream
/// only to a viewer whose token would play it.
pub async fn player_page(
    State(state): State<AppState>,
    Path(playback_id): Path<String>,
    Query(q): Query<TokenQuery>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> ApiResult<Html<String>> {
    if !playback_id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(ApiError::NotFound("playback id not found".into()));
    }
    let token = q.token.unwrap_or_default();
    if !token
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(ApiError::invalid("malformed token"));
    }
    let query = if token.is_empty() {
        String::new()
    } else {
        format!("?token={token}")
    };
    let allowed = authorize(
        &state,
        &playback_id,
        (!token.is_empty()).then_some(token.as_str()),
        AUD_VIDEO,
        &headers,
        ip.as_deref(),
    )
    .await
    .is_ok();
    let live = if allowed {
        state.db.live_state_for_playback(&playback_id).await?
    } else {
        None
    };
    let (page_state, label) = match live {
        Some(LiveState::Live) => ("live", "loading"),
        Some(LiveState::Ended) => ("ended", "ended"),
        Some(LiveState::Offline) => ("offline", "offline: starts when the broadcaster goes live"),
        None => ("video", "loading"),
    };
    Ok(Html(format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Ferrocast player</title>
<style>body{{margin:0;background:#000}}video{{width:100vw;height:100vh}}#status{{position:fixed;top:4px;left:6px;color:#ccc;font:12px monospace}}</style>
</head><body>
<video id="video" controls autoplay muted playsinline></video>
<div id="status" data-state="{page_state}">{label}</div>
<script src="/play/hls.min.js"></script>
<script>
const src = "/hls/{playback_id}/master.m3u8{query}";
const video = document.getElementById("video");
const status = document.getElementById("status");
window.player = {{ state: "{page_state}", errors: [], keyLoaded: false, fatal: null, subtitleTracks: 0, ended: false }};
function show(state, text) {{
  window.player.state = state;
  status.dataset.state = state;
  status.textContent = text;
}}
function start() {{
  if (window.Hls && Hls.isSupported()) {{
    const hls = new Hls({{ lowLatencyMode: false }});
    hls.on(Hls.Events.KEY_LOADED, () => {{ window.player.keyLoaded = true; }});
    hls.on(Hls.Events.SUBTITLE_TRACKS_UPDATED, (_, data) => {{ window.player.subtitleTracks = data.subtitleTracks.length; }});
    hls.on(Hls.Events.ERROR, (_, data) => {{
      window.player.errors.push(data.details);
      if (data.fatal) {{ window.player.fatal = data.details; show("error", "error: " + data.details); }}
    }});
    hls.loadSource(src);
    hls.attachMedia(video);
    window.hls = hls;
  }} else if (video.canPlayType("application/vnd.apple.mpegurl")) {{
    video.src = src;
  }} else {{
    show("error", "this browser cannot play HLS");
  }}
}}
// Offline: look every 5 s (each look bounded) and start when the broadcast does.
async function waitForBroadcast() {{
  try {{
    const r = await fetch(src, {{ cache: "no-store", signal: AbortSignal.timeout(5000) }});
    if (r.ok) {{ show("live", "loading"); start(); return; }}
  }} catch (e) {{}}
  setTimeout(waitForBroadcast, 5000);
}}
video.addEventListener("playing", () => {{
  if (window.player.state !== "ended") show("playing", "playing");
}});
video.addEventListener("ended", () => {{ window.player.ended = true; show("ended", "ended"); }});
if (window.player.state === "offline") setTimeout(waitForBroadcast, 5000); else start();
</script>
</body></html>"#
    )))
}

/// `GET /play/hls.min.js`: hls.js as installed from npm by `make` (not vendored here).
pub async fn hls_js(State(state): State<AppState>) -> Response {
    match &state.hlsjs {
        Some(js) => (
            [
                (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                (header::CACHE_CONTROL, "public, max-age=86400"),
            ],
            js.clone(),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            "console.error('hls.js is not installed on this server: run make (npm install hls.js) or set delivery.hlsjs_path');",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_resolution_drops_higher_variants() {
        let master = "#EXTM3U\n\
#EXT-X-STREAM-INF:BANDWIDTH=5,RESOLUTION=1920x1080\n1080p/index.m3u8\n\
#EXT-X-STREAM-INF:BANDWIDTH=3,RESOLUTION=1280x720\n720p/index.m3u8\n\
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=1,RESOLUTION=1920x1080,URI=\"1080p/i.m3u8\"\n\
#EXT-X-STREAM-INF:BANDWIDTH=1,RESOLUTION=360x640\n360p/index.m3u8\n";
        let out = limit_master(master, 720);
        assert!(!out.contains("1080"), "{out}");
        assert!(out.contains("720p/index.m3u8") && out.contains("360p/index.m3u8"));
        assert_eq!(
            resolution_lines("#X:RESOLUTION=360x640,CODECS=\"a\""),
            Some(360)
        );
        assert_eq!(limit_master(master, 2000), master);
    }

    #[test]
    fn referrers_match_hosts_wildcards_and_origins() {
        let allowed = vec![
            "video.example.com".to_string(),
            "*.acme.tv".into(),
            "https://x.org".into(),
        ];
        assert!(referrer_allowed(&allowed, "video.example.com"));
        assert!(!referrer_allowed(&allowed, "evil-video.example.com"));
        assert!(referrer_allowed(&allowed, "www.acme.tv"));
        assert!(!referrer_allowed(&allowed, "acme.tv.evil.com"));
        assert!(!referrer_allowed(&allowed, "notacme.tv"));
        assert!(referrer_allowed(&allowed, "x.org"));
        let mut h = HeaderMap::new();
        h.insert(
            header::REFERER,
            HeaderValue::from_static("https://Video.Example.com/page?x"),
        );
        assert_eq!(page_host(&h).as_deref(), Some("video.example.com"));
    }

    #[test]
    fn tokens_are_carried_into_every_uri() {
        let media = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-KEY:METHOD=AES-128,URI=\"http://h/keys/abc\",IV=0x01\n#EXTINF:2,\n0.ts\n#EXTINF:2,\n1.ts?x=1\n";
        let out = with_token(media, "T");
        assert!(
            out.contains("URI=\"http://h/keys/abc?token=T\",IV=0x01"),
            "{out}"
        );
        assert!(out.contains("\n0.ts?token=T\n"));
        assert!(out.contains("\n1.ts?x=1&token=T\n"));
        assert!(out.contains("#EXT-X-TARGETDURATION:2\n"));
        let master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n720p/index.m3u8\n";
        assert!(with_token(master, "T").ends_with("720p/index.m3u8?token=T\n"));
    }
}
