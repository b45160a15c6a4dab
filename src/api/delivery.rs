//! Playback: HLS playlists and segments from storage, and content keys. A `signed` playback
//! id needs a token (query `token`, `Authorization: Bearer` or the `ferrocast_token` cookie);
//! the token is carried into every URI of the playlists served, so players need nothing else.
//! Who may have what is decided in `drm::access`, with facts gathered by `api::access`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::access::{
    ClientIp, KeyRefusal, Shown, TokenQuery, authorize, key_access, token_from, token_in_header,
};
use super::delivery_cache::CachedObject;
use super::{AppState, Path, Query};
use crate::db::{PlaybackPolicy, PlaybackTarget};
use crate::drm::access::DenialKind;
use crate::drm::audit::Decision;
use crate::drm::{AUD_VIDEO, PlaybackClaims};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::packager::output::CMAF_BESIDE;
use crate::storage::ObjectKey;

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
    let master = match state.jobs.store.get(&key, None).await {
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
    // Percent-encoded: whatever the token holds stays inside its URI.
    let token: String = url::form_urlencoded::byte_serialize(token.as_bytes()).collect();
    let add = |uri: &str| {
        // A URI of another scheme is not fetched from here: a key id in a `data:` URI
        // (CMAF's ClearKey, Widevine's pssh), FairPlay's `skd:` content id.
        let scheme = uri
            .split_once(':')
            .map(|(s, _)| s)
            .filter(|s| !s.contains('/'));
        if scheme
            .is_some_and(|s| !s.eq_ignore_ascii_case("http") && !s.eq_ignore_ascii_case("https"))
        {
            return uri.to_string();
        }
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

/// A playlist that will not change: ENDLIST, or a static DASH manifest.
fn has_endlist(playlist: &[u8]) -> bool {
    playlist.windows(14).any(|w| w == b"#EXT-X-ENDLIST")
        || playlist.windows(15).any(|w| w == b"type=\"static\"")
}

/// A manifest to rewrite per viewer: an HLS playlist or the DASH manifest.
fn is_manifest(path: &str) -> bool {
    path.ends_with(".m3u8") || path.ends_with(".mpd")
}

pub(super) async fn serve_object(
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
    let is_playlist = is_manifest(path);
    if !is_playlist && state.jobs.config.delivery.redirect_segments {
        let expiry = std::time::Duration::from_secs(state.jobs.config.delivery.redirect_expiry_s);
        let url = state.jobs.store.presign_get(&key, expiry).await?;
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
            let object = state
                .jobs
                .store
                .get(&key, None)
                .await
                .map_err(|e| match e {
                    crate::storage::StorageError::NotFound(_) => {
                        ApiError::NotFound(format!("{path} not found"))
                    }
                    other => other.into(),
                })?;
            // Segments never change once written. Playlists may (a publisher back within
            // the reconnect window, subtitles added), so they are kept only briefly, and a
            // live media playlist, which changes with every segment, not at all.
            let live_media =
                is_playlist && !path.ends_with("master.m3u8") && !has_endlist(&object.body);
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
    // (The DASH manifest is rewritten by its own handler, `dash::manifest`.)
    let body = if path.ends_with(".m3u8") && (token.is_some() || max_lines.is_some()) {
        let mut text = String::from_utf8_lossy(&object.body).into_owned();
        if let Some(max) = max_lines {
            text = limit_master(&text, max);
            if !text.contains("#EXT-X-STREAM-INF:") && path.ends_with("master.m3u8") {
                return Err(ApiError::Forbidden(format!(
                    "no rendition of this video is within what this viewer may watch ({max}p)"
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

/// The most lines this viewer may watch: the token's `max_resolution`, and for media that
/// needs an entitlement, the best tier the viewer bought (an SD price plays SD).
/// `playlist`: asked for a playlist, which looks the tier up afresh.
pub(super) async fn viewer_max_lines(
    state: &AppState,
    target: &PlaybackTarget,
    playback_id: &str,
    claims: Option<&PlaybackClaims>,
    playlist: bool,
) -> ApiResult<Option<u32>> {
    let token = claims.and_then(PlaybackClaims::max_lines);
    let bought = match claims.and_then(|c| c.viewer.as_deref()) {
        Some(viewer) if target.requires_entitlement => {
            state
                .bought_caps
                .get(state, target, playback_id, viewer, playlist)
                .await?
        }
        _ => None,
    };
    Ok(match (token, bought) {
        (Some(t), Some(b)) => Some(t.min(b)),
        (t, b) => t.or(b),
    })
}

/// The tiers viewers bought, by (playback id, viewer). Playlists look them up afresh (and
/// leave them here); segments, which come several times as often, take what a playlist
/// left if it is at most a few seconds old, which keeps them off the database. Keys are
/// still decided on the entitlements as they are (access.rs).
#[derive(Default)]
pub struct BoughtCaps(std::sync::Mutex<HashMap<ViewerOf, (Option<u32>, Instant)>>);

/// (playback id, viewer).
type ViewerOf = (String, String);

/// How long a looked-up tier is trusted.
const BOUGHT_CAP_TTL: Duration = Duration::from_secs(10);
/// The most (playback id, viewer) pairs kept.
const BOUGHT_CAPS_MAX: usize = 100_000;

impl BoughtCaps {
    async fn get(
        &self,
        state: &AppState,
        target: &PlaybackTarget,
        playback_id: &str,
        viewer: &str,
        fresh: bool,
    ) -> ApiResult<Option<u32>> {
        let key = (playback_id.to_string(), viewer.to_string());
        if !fresh
            && let Some((cap, at)) = self.0.lock().expect("caps").get(&key)
            && at.elapsed() < BOUGHT_CAP_TTL
        {
            return Ok(*cap);
        }
        let cap = state
            .jobs
            .db
            .entitlement_max_lines(
                &target.tenant_id,
                playback_id,
                target.prefix.as_deref(),
                viewer,
            )
            .await?;
        let mut caps = self.0.lock().expect("caps");
        if caps.len() >= BOUGHT_CAPS_MAX {
            caps.retain(|_, (_, at)| at.elapsed() < BOUGHT_CAP_TTL);
            if caps.len() >= BOUGHT_CAPS_MAX {
                caps.clear();
            }
        }
        caps.insert(key, (cap, Instant::now()));
        Ok(cap)
    }
}

/// `GET /hls/{playback_id}/master.m3u8`
#[utoipa::path(get, path = "/hls/{playback_id}/master.m3u8", tag = "playback",
    params(("token" = Option<String>, Query, description = "The playback token (or `Authorization: Bearer`, or the `ferrocast_token` cookie); none for public media"), ("CMCD" = Option<String>, Query, description = "CMCD data (query mode), for analytics")),
    responses((status = 200, description = "The master playlist; a token in the query is carried into its URIs",
            content_type = "application/vnd.apple.mpegurl", body = String),
        (status = 401, body = ErrorBody, description = "No token, or one that does not verify"), (status = 403, body = ErrorBody, description = "A token that does not allow this (audience, referrer, country, entitlement, tier)"), (status = 429, body = ErrorBody)))]
pub async fn master_playlist(
    State(state): State<AppState>,
    Path(playback_id): Path<String>,
    Query(q): Query<TokenQuery>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let v = manifest_viewer(&state, &playback_id, &q, ip.as_deref(), &headers).await?;
    let carried = v.carried.as_deref();
    serve_object(
        &state,
        &v.target,
        v.private,
        "master.m3u8",
        carried,
        v.max_lines,
    )
    .await
}

/// `GET /hls/{playback_id}/cmaf/master.m3u8`: the CMAF set of media packaged as `both`.
#[utoipa::path(get, path = "/hls/{playback_id}/cmaf/master.m3u8", tag = "playback",
    params(("token" = Option<String>, Query, description = "The playback token (or `Authorization: Bearer`, or the `ferrocast_token` cookie); none for public media"), ("CMCD" = Option<String>, Query, description = "CMCD data (query mode), for analytics")),
    responses((status = 200, description = "The master playlist of the CMAF set (fMP4, SAMPLE-AES ClearKey, LL-HLS while live) of media packaged as `both`, whose MPEG-TS set is at `/hls/{playback_id}/master.m3u8`; a token in the query is carried into its URIs",
            content_type = "application/vnd.apple.mpegurl", body = String),
        (status = 401, body = ErrorBody, description = "No token, or one that does not verify"), (status = 403, body = ErrorBody, description = "A token that does not allow this (audience, referrer, country, entitlement, tier)"),
        (status = 404, body = ErrorBody, description = "No such playback id, offline, or not packaged as `both`"), (status = 429, body = ErrorBody)))]
pub async fn cmaf_master_playlist(
    State(state): State<AppState>,
    Path(playback_id): Path<String>,
    Query(q): Query<TokenQuery>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let v = manifest_viewer(&state, &playback_id, &q, ip.as_deref(), &headers).await?;
    let path = format!("{CMAF_BESIDE}master.m3u8");
    serve_object(
        &state,
        &v.target,
        v.private,
        &path,
        v.carried.as_deref(),
        v.max_lines,
    )
    .await
}

/// Who asks for a top manifest (the HLS master playlist, the DASH manifest), as its
/// answer needs to know.
pub(super) struct ManifestViewer {
    pub target: PlaybackTarget,
    pub private: bool,
    /// The most lines this viewer may watch (see [`viewer_max_lines`]).
    pub max_lines: Option<u32>,
    /// The token to carry into the manifest's URIs: only one that verified (public media
    /// verify none), and not one the player sends in a header anyway.
    pub carried: Option<String>,
}

/// Authorizes a top manifest request and notes its CMCD.
pub(super) async fn manifest_viewer(
    state: &AppState,
    playback_id: &str,
    q: &TokenQuery,
    ip: Option<&str>,
    headers: &HeaderMap,
) -> ApiResult<ManifestViewer> {
    let token = token_from(q, headers);
    let (target, claims) = authorize(
        state,
        playback_id,
        token.as_deref(),
        AUD_VIDEO,
        Shown::Protected,
        headers,
        ip,
    )
    .await?;
    super::analytics::observe_cmcd(
        state,
        &target.tenant_id,
        playback_id,
        q.cmcd.as_deref(),
        headers,
        ip,
    );
    let max_lines = viewer_max_lines(state, &target, playback_id, claims.as_ref(), true).await?;
    let carried = claims
        .as_ref()
        .and(token)
        .filter(|_| !token_in_header(q, headers));
    Ok(ManifestViewer {
        private: target.policy == PlaybackPolicy::Signed,
        target,
        max_lines,
        carried,
    })
}

/// `GET /hls/{playback_id}/{rendition}/{file}`: media playlists and segments.
#[utoipa::path(get, path = "/hls/{playback_id}/{rendition}/{file}", tag = "playback",
    params(("token" = Option<String>, Query, description = "The playback token (or `Authorization: Bearer`, or the `ferrocast_token` cookie); none for public media"), ("CMCD" = Option<String>, Query, description = "CMCD data (query mode), for analytics"),
        ("_HLS_msn" = Option<u64>, Query, description = "LL-HLS blocking reload: answer once the playlist holds this media sequence number"),
        ("_HLS_part" = Option<u64>, Query, description = "LL-HLS blocking reload: and this part of it (needs `_HLS_msn`)"),
        ("_HLS_skip" = Option<String>, Query, description = "LL-HLS delta update: `YES` skips the segments older than `CAN-SKIP-UNTIL`")),
    responses((status = 200, description = "A media playlist (`index.m3u8`; for a live CMAF stream an LL-HLS playlist, `_HLS_msn`/`_HLS_part` holding the request until it has that part, `_HLS_skip=YES` its delta form) or an encrypted segment or part",
            content((String = "application/vnd.apple.mpegurl"), (String = "video/mp2t"))),
        (status = 302, description = "The segment at a presigned storage URL (`delivery.redirect_segments`)"),
        (status = 400, body = ErrorBody, description = "An LL-HLS blocking request that is malformed or too far ahead"),
        (status = 401, body = ErrorBody, description = "No token, or one that does not verify"), (status = 403, body = ErrorBody, description = "A token that does not allow this (audience, referrer, country, entitlement, tier)"), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "An LL-HLS blocking request not satisfied within three target durations")))]
pub async fn rendition_file(
    state: State<AppState>,
    Path((playback_id, rendition, file)): Path<(String, String, String)>,
    q: Query<TokenQuery>,
    ll: Query<super::llhls::LlQuery>,
    ip: ClientIp,
    headers: HeaderMap,
) -> ApiResult<Response> {
    serve_rendition_file(state, "", playback_id, rendition, file, q, ll, ip, headers).await
}

/// `GET /hls/{playback_id}/cmaf/{rendition}/{file}`: the CMAF set's media playlists and
/// fragments, for media packaged as `both`.
#[utoipa::path(get, path = "/hls/{playback_id}/cmaf/{rendition}/{file}", tag = "playback",
    params(("token" = Option<String>, Query, description = "The playback token (or `Authorization: Bearer`, or the `ferrocast_token` cookie); none for public media"), ("CMCD" = Option<String>, Query, description = "CMCD data (query mode), for analytics"),
        ("_HLS_msn" = Option<u64>, Query, description = "LL-HLS blocking reload: answer once the playlist holds this media sequence number"),
        ("_HLS_part" = Option<u64>, Query, description = "LL-HLS blocking reload: and this part of it (needs `_HLS_msn`)"),
        ("_HLS_skip" = Option<String>, Query, description = "LL-HLS delta update: `YES` skips the segments older than `CAN-SKIP-UNTIL`")),
    responses((status = 200, description = "A media playlist of the CMAF set (LL-HLS while live), an init segment, a fragment or a part",
            content((String = "application/vnd.apple.mpegurl"), (String = "video/mp4"), (String = "audio/mp4"))),
        (status = 302, description = "The fragment at a presigned storage URL (`delivery.redirect_segments`)"),
        (status = 400, body = ErrorBody, description = "An LL-HLS blocking request that is malformed or too far ahead"),
        (status = 401, body = ErrorBody, description = "No token, or one that does not verify"), (status = 403, body = ErrorBody, description = "A token that does not allow this (audience, referrer, country, entitlement, tier)"), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "An LL-HLS blocking request not satisfied within three target durations")))]
pub async fn cmaf_rendition_file(
    state: State<AppState>,
    Path((playback_id, rendition, file)): Path<(String, String, String)>,
    q: Query<TokenQuery>,
    ll: Query<super::llhls::LlQuery>,
    ip: ClientIp,
    headers: HeaderMap,
) -> ApiResult<Response> {
    if !matches!(file.rsplit_once('.'), Some((_, "m3u8" | "m4s" | "mp4"))) {
        return Err(ApiError::NotFound("not found".into()));
    }
    serve_rendition_file(
        state,
        CMAF_BESIDE,
        playback_id,
        rendition,
        file,
        q,
        ll,
        ip,
        headers,
    )
    .await
}

/// A file of one rendition, in the output's main set (`set` empty) or the CMAF set beside
/// it (`set` = [`CMAF_BESIDE`]).
#[allow(clippy::too_many_arguments)]
pub(super) async fn serve_rendition_file(
    State(state): State<AppState>,
    set: &str,
    playback_id: String,
    rendition: String,
    file: String,
    Query(q): Query<TokenQuery>,
    Query(ll): Query<super::llhls::LlQuery>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> ApiResult<Response> {
    // Playlists, segments and subtitles only: the stills beside them (thumbnails) show the
    // content in the clear and have their own route and rules.
    let kind = file.rsplit_once('.').map(|(_, ext)| ext);
    if !matches!(kind, Some("m3u8" | "ts" | "m4s" | "mp4" | "aac" | "vtt")) {
        return Err(ApiError::NotFound("not found".into()));
    }
    let token = token_from(&q, &headers);
    let (target, claims) = authorize(
        &state,
        &playback_id,
        token.as_deref(),
        AUD_VIDEO,
        Shown::Protected,
        &headers,
        ip.as_deref(),
    )
    .await?;
    let named_a_view = super::analytics::observe_cmcd(
        &state,
        &target.tenant_id,
        &playback_id,
        q.cmcd.as_deref(),
        &headers,
        ip.as_deref(),
    );
    if let Some(max) = viewer_max_lines(
        &state,
        &target,
        &playback_id,
        claims.as_ref(),
        kind == Some("m3u8"),
    )
    .await?
        && let Some(prefix) = target.prefix.as_deref()
        && rendition_lines(&state, prefix, &rendition)
            .await?
            .is_some_and(|l| l > max)
    {
        return Err(ApiError::Forbidden(format!(
            "rendition {rendition} is above what this viewer may watch ({max}p: the token's \
             max_resolution, or the tier bought)"
        )));
    }
    let private = target.policy == PlaybackPolicy::Signed;
    // Only a token that verified is carried into the playlist (public media verify none),
    // and not one the player sends in a header anyway.
    let carried = claims
        .as_ref()
        .and(token.as_deref())
        .filter(|_| !token_in_header(&q, &headers));
    // A live low-latency (CMAF) track: its playlist and parts are in memory.
    let live = target.prefix.as_deref().and_then(|prefix| {
        state
            .live
            .low_latency()
            .watch(&format!("{prefix}{set}"), &rendition)
    });
    let from_memory = match live {
        Some(rx) if file == "index.m3u8" => super::llhls::playlist(rx, &ll, carried).await?,
        Some(rx) if kind == Some("m4s") => super::llhls::part(rx, &file, private).await?,
        _ => None,
    };
    let response = match from_memory {
        Some(r) => r,
        None => {
            serve_object(
                &state,
                &target,
                private,
                &format!("{set}{rendition}/{file}"),
                carried,
                None,
            )
            .await?
        }
    };
    // A segment served (or redirected to) without a view id counts toward a server view.
    if !named_a_view
        && matches!(kind, Some("ts" | "m4s" | "aac"))
        && let Some(prefix) = target.prefix.as_deref()
        && let Ok(playlist) = ObjectKey::parse(&format!("{prefix}{set}{rendition}/index.m3u8"))
    {
        super::analytics::observe_server(
            &state,
            &target.tenant_id,
            &playback_id,
            playlist,
            &file,
            &headers,
            ip.as_deref(),
        );
    }
    Ok(response)
}

/// `GET /keys/{key_id}`: the 16-byte content key, to a valid token for media it encrypts
/// (or to anyone, when that media is public and needs no entitlement). Rate-limited per
/// client address and per viewer; every decision on an existing key is audited.
#[utoipa::path(get, path = "/keys/{key_id}", tag = "playback", params(("token" = Option<String>, Query, description = "The playback token (or `Authorization: Bearer`, or the `ferrocast_token` cookie); none for public media")),
    responses((status = 200, description = "The 16-byte AES-128 key", content_type = "application/octet-stream",
            body = String),
        (status = 401, body = ErrorBody, description = "No token, or one that does not verify"), (status = 403, body = ErrorBody, description = "A token that does not allow this (audience, referrer, country, entitlement, tier)"), (status = 429, body = ErrorBody, description = "Too many key requests; `Retry-After`")))]
pub async fn content_key(
    State(state): State<AppState>,
    Path(key_id): Path<String>,
    Query(q): Query<TokenQuery>,
    ClientIp(client_ip): ClientIp,
    headers: HeaderMap,
) -> Response {
    no_store(serve_key(&state, key_id, &q, client_ip, &headers).await)
}

/// A key or licence answer, or its refusal: neither may be kept by a cache.
pub(super) fn no_store(outcome: ApiResult<Response>) -> Response {
    let mut response = outcome.unwrap_or_else(IntoResponse::into_response);
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
    let (_, key) = grant_key(state, key_id, q, client_ip, headers, None).await?;
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

/// Content key `key_id` for this request, if its rules allow (rate limits, token,
/// entitlement), and, with `media`, only if the key encrypts that storage prefix. Every
/// decision on an existing key is audited and counted, whatever asks: `/keys` or a licence.
/// The key endpoints' limit per client address (keys and licences): 429 past it.
pub(super) fn per_ip_key_limit(state: &AppState, client_ip: Option<&str>) -> ApiResult<()> {
    if let Some(ip) = client_ip
        && let Err(wait) = state.key_limits.per_ip.check(ip)
    {
        metrics::counter!("ferrocast_key_rate_limited_total", "by" => "ip").increment(1);
        return Err(ApiError::TooManyRequests(
            (wait.as_secs_f64().ceil() as u64).max(1),
        ));
    }
    Ok(())
}

pub(super) async fn grant_key(
    state: &AppState,
    key_id: String,
    q: &TokenQuery,
    client_ip: Option<String>,
    headers: &HeaderMap,
    media: Option<&str>,
) -> ApiResult<(crate::db::StoredContentKey, crate::drm::Key128)> {
    per_ip_key_limit(state, client_ip.as_deref())?;
    let (stored, key) = state
        .jobs
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
    let result = match media {
        Some(m) if m != stored.scope => {
            Err(KeyRefusal::Denied(crate::drm::access::Denial::OtherMedia))
        }
        _ => key_access(state, &stored, q, headers, &mut decision).await,
    };
    decision.denied = match &result {
        Ok(()) => None,
        Err(KeyRefusal::Denied(d)) => Some(d.reason().to_string()),
        Err(KeyRefusal::Failed(_)) => Some("internal_error".to_string()),
    };
    state.audit.key(decision).await;
    let outcome = if result.is_ok() { "granted" } else { "denied" };
    metrics::counter!("ferrocast_key_requests_total", "result" => outcome).increment(1);
    let forbidden =
        matches!(&result, Err(KeyRefusal::Denied(d)) if d.kind() == DenialKind::Forbidden);
    super::analytics::observe_key(
        state,
        &stored.tenant_id,
        q.cmcd.as_deref(),
        headers,
        result.is_ok(),
        forbidden,
    );
    match result {
        Ok(()) => Ok((stored, key)),
        Err(KeyRefusal::Denied(d)) => Err(d.into()),
        Err(KeyRefusal::Failed(e)) => Err(e),
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
        let keys = "#EXT-X-KEY:METHOD=SAMPLE-AES,URI=\"data:text/plain;base64,AAAA\"\n\
                    #EXT-X-KEY:METHOD=SAMPLE-AES,URI=\"skd://key42\"\n\
                    #EXT-X-MAP:URI=\"https://cdn.example/init.mp4\"\n";
        assert_eq!(
            with_token(keys, "T"),
            keys.replace("init.mp4", "init.mp4?token=T"),
            "data: and skd: URIs are left as they are"
        );
        let master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n720p/index.m3u8\n";
        assert!(with_token(master, "T").ends_with("720p/index.m3u8?token=T\n"));
        // A JWT is carried as it is; anything else cannot leave its URI.
        assert!(with_token(master, "a-b_c.d").ends_with("?token=a-b_c.d\n"));
        let evil = "x\n#EXT-X-STREAM-INF:BANDWIDTH=9\nhttps://evil.example/s.m3u8\"&";
        let out = with_token(master, evil);
        assert_eq!(out.lines().count(), 3, "{out}");
        assert!(
            out.ends_with(
                "?token=x%0A%23EXT-X-STREAM-INF%3ABANDWIDTH%3D9%0Ahttps%3A%2F%2Fevil.example%2Fs.m3u8%22%26\n"
            ),
            "{out}"
        );
    }
}
