//! Playback: HLS playlists and segments from storage, content keys, and a player page.
//! A `signed` playback id needs a token (query `token`, or `Authorization: Bearer`); the
//! token is carried into every URI of the playlists served, so players need nothing else.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use super::{AppState, Path, Query};
use crate::db::{PlaybackPolicy, PlaybackTarget};
use crate::drm::TokenError;
use crate::error::{ApiError, ApiResult};
use crate::storage::ObjectKey;

#[derive(Debug, Default, Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

/// Cookie a site may set so that its players need no token in URLs.
const TOKEN_COOKIE: &str = "ferrocast_token";

/// The playback token: `?token=`, else `Authorization: Bearer`, else the `ferrocast_token` cookie.
fn token_from(query: &TokenQuery, headers: &HeaderMap) -> Option<String> {
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
    match e {
        TokenError::Invalid => ApiError::Unauthorized(e.to_string()),
        TokenError::Expired | TokenError::WrongPlaybackId => ApiError::Forbidden(e.to_string()),
    }
}

/// The playback target, if the request may play it.
async fn authorize(
    state: &AppState,
    playback_id: &str,
    token: Option<&str>,
) -> ApiResult<PlaybackTarget> {
    let target = state
        .db
        .find_playback_target(playback_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("playback id not found".into()))?;
    if target.policy == PlaybackPolicy::Signed {
        let token =
            token.ok_or_else(|| ApiError::Unauthorized("a playback token is required".into()))?;
        state
            .tokens
            .verify(token, playback_id)
            .map_err(token_denied)?;
    }
    Ok(target)
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

async fn serve_object(
    state: &AppState,
    target: &PlaybackTarget,
    policy_private: bool,
    path: &str,
    token: Option<&str>,
) -> ApiResult<Response> {
    let prefix = target
        .prefix
        .as_deref()
        .ok_or_else(|| ApiError::NotFound("this stream has not been live yet".into()))?;
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
    let object = state.store.get(&key, None).await.map_err(|e| match e {
        crate::storage::StorageError::NotFound(_) => {
            ApiError::NotFound(format!("{path} not found"))
        }
        other => other.into(),
    })?;
    let cache = match (is_playlist, policy_private) {
        // Live playlists change every segment; finished ones only when re-packaged.
        (true, _) if !object.body.windows(14).any(|w| w == b"#EXT-X-ENDLIST") => {
            "no-cache".to_string()
        }
        (true, true) => "private, max-age=60".into(),
        (true, false) => "public, max-age=60".into(),
        // Segments never change once written.
        (false, true) => "private, max-age=86400, immutable".into(),
        (false, false) => "public, max-age=31536000, immutable".into(),
    };
    let body = match (is_playlist, token) {
        (true, Some(t)) => Body::from(with_token(&String::from_utf8_lossy(&object.body), t)),
        _ => Body::from(object.body),
    };
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&object.meta.content_type).expect("ascii"),
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
    headers: HeaderMap,
) -> ApiResult<Response> {
    let token = token_from(&q, &headers);
    let target = authorize(&state, &playback_id, token.as_deref()).await?;
    let private = target.policy == PlaybackPolicy::Signed;
    serve_object(&state, &target, private, "master.m3u8", token.as_deref()).await
}

/// `GET /hls/{playback_id}/{rendition}/{file}`: media playlists and segments.
pub async fn rendition_file(
    State(state): State<AppState>,
    Path((playback_id, rendition, file)): Path<(String, String, String)>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let token = token_from(&q, &headers);
    let target = authorize(&state, &playback_id, token.as_deref()).await?;
    let private = target.policy == PlaybackPolicy::Signed;
    serve_object(
        &state,
        &target,
        private,
        &format!("{rendition}/{file}"),
        token.as_deref(),
    )
    .await
}

/// `GET /keys/{key_id}`: the 16-byte content key, to a valid token for media it encrypts
/// (or to anyone, when that media is public).
pub async fn content_key(
    State(state): State<AppState>,
    Path(key_id): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (stored, key) = state
        .content_keys
        .get(&key_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("key not found".into()))?;
    match token_from(&q, &headers) {
        Some(token) => {
            let claims = state.tokens.verify_any(&token).map_err(token_denied)?;
            let target = state.db.find_playback_target(&claims.sub).await?;
            if target.and_then(|t| t.prefix) != Some(stored.scope.clone()) {
                tracing::info!(key_id = %key_id, playback_id = %claims.sub, "key denied: token for other media");
                return Err(token_denied(TokenError::WrongPlaybackId));
            }
        }
        None => {
            if !state.db.scope_is_public(&stored.scope).await? {
                return Err(ApiError::Unauthorized(
                    "a playback token is required".into(),
                ));
            }
        }
    }
    let mut response = Response::new(Body::from(key.to_vec()));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, private"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    Ok(response)
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
    let target = authorize(&state, playback_id, token.as_deref()).await?;
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
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (playback_id, ext) = file
        .rsplit_once('.')
        .ok_or_else(|| ApiError::NotFound("storyboards are .vtt or .jpg".into()))?;
    if ext != "vtt" && ext != "jpg" {
        return Err(ApiError::NotFound("storyboards are .vtt or .jpg".into()));
    }
    let token = token_from(&q, &headers);
    let target = authorize(&state, playback_id, token.as_deref()).await?;
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

/// `GET /play/{playback_id}`: a minimal hls.js player for the stream.
pub async fn player_page(
    Path(playback_id): Path<String>,
    Query(q): Query<TokenQuery>,
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
    Ok(Html(format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Ferrocast player</title>
<style>body{{margin:0;background:#000}}video{{width:100vw;height:100vh}}#status{{position:fixed;top:4px;left:6px;color:#ccc;font:12px monospace}}</style>
</head><body>
<video id="video" controls autoplay muted playsinline></video>
<div id="status">loading</div>
<script src="/play/hls.min.js"></script>
<script>
const src = "/hls/{playback_id}/master.m3u8{query}";
const video = document.getElementById("video");
const status = document.getElementById("status");
window.player = {{ errors: [], keyLoaded: false, fatal: null, subtitleTracks: 0 }};
if (window.Hls && Hls.isSupported()) {{
  const hls = new Hls({{ lowLatencyMode: false }});
  hls.on(Hls.Events.KEY_LOADED, () => {{ window.player.keyLoaded = true; }});
  hls.on(Hls.Events.SUBTITLE_TRACKS_UPDATED, (_, data) => {{ window.player.subtitleTracks = data.subtitleTracks.length; }});
  hls.on(Hls.Events.ERROR, (_, data) => {{
    window.player.errors.push(data.details);
    if (data.fatal) {{ window.player.fatal = data.details; status.textContent = "error: " + data.details; }}
  }});
  hls.loadSource(src);
  hls.attachMedia(video);
  window.hls = hls;
}} else if (video.canPlayType("application/vnd.apple.mpegurl")) {{
  video.src = src;
}} else {{
  status.textContent = "this browser cannot play HLS";
}}
video.addEventListener("playing", () => {{ status.textContent = "playing"; }});
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
