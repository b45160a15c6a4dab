//! The player page: a minimal hls.js player for one playback id, and hls.js itself as `make`
//! installed it.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::access::{ClientIp, Shown, TokenQuery, authorize};
use super::{AppState, Path, Query};
use crate::db::LiveState;
use crate::drm::AUD_VIDEO;
use crate::error::{ApiError, ApiResult, ErrorBody};

/// `GET /play/{playback_id}`: a minimal hls.js player for the stream. For a live stream it
/// says whether the broadcast is live, ended (its final playlists are still there) or offline
/// (nothing to play; it starts playing when the broadcaster goes live); of a signed stream
/// only to a viewer whose token would play it.
#[utoipa::path(get, path = "/play/{playback_id}", tag = "playback", params(("token" = Option<String>, Query, description = "The playback token (or `Authorization: Bearer`, or the `ferrocast_token` cookie); none for public media")),
    responses((status = 200, content_type = "text/html", body = String),
        (status = 404, content_type = "text/html", body = String, description = "No such playback id: a page that says so"), (status = 401, body = ErrorBody, description = "No token, or one that does not verify"), (status = 403, body = ErrorBody, description = "A token that does not allow this (audience, referrer, country, entitlement, tier)")))]
pub async fn player_page(
    State(state): State<AppState>,
    Path(playback_id): Path<String>,
    Query(q): Query<TokenQuery>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> ApiResult<Response> {
    // An id that plays nothing says so, in a page, not a black player.
    if !playback_id.chars().all(|c| c.is_ascii_alphanumeric())
        || playback_id.len() > 64
        || state.jobs.db.playback_target(&playback_id).await?.is_none()
    {
        return Ok((
            StatusCode::NOT_FOUND,
            Html(
                "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Not found · Ferrocast</title>\n\
                 <style>body{margin:0;min-height:100vh;display:grid;place-items:center;background:#0f1115;color:#e6e8ee;\
                 font:16px system-ui,sans-serif}p{color:#8b93a7}</style></head>\n\
                 <body><main><h1 id=\"not-found\">This video does not exist</h1>\
                 <p>The link may be mistyped, or the video was deleted.</p></main></body></html>\n",
            ),
        )
            .into_response());
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
        Shown::Protected,
        &headers,
        ip.as_deref(),
    )
    .await
    .is_ok();
    let live = if allowed {
        state.jobs.db.live_state_for_playback(&playback_id).await?
    } else {
        None
    };
    let (page_state, label) = match live {
        Some(LiveState::Live) => ("live", "loading"),
        Some(LiveState::Ended) => ("ended", "ended"),
        Some(LiveState::Offline) => ("offline", "offline: starts when the broadcaster goes live"),
        None => ("video", "loading"),
    };
    // A live stream's page has its chat beside the video.
    let chat = if live.is_some() {
        format!(
            r#"<aside id="chat" data-playback-id="{playback_id}" data-query="{query}">
<ol id="chat-messages" aria-live="polite"></ol>
<p id="chat-status" role="status"></p>
<form id="chat-form"><input id="chat-text" maxlength="500" autocomplete="off" placeholder="Chat"><button type="submit">Send</button></form>
</aside>
<script src="/player/ferrocast-chat.js"></script>"#
        )
    } else {
        String::new()
    };
    Ok(Html(format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Ferrocast player</title>
<style>body{{margin:0;background:#000;display:flex;height:100vh;overflow:hidden}}video{{flex:1;min-width:0;height:100vh}}#status{{position:fixed;top:4px;left:6px;color:#ccc;font:12px monospace}}
#chat{{width:320px;display:flex;flex-direction:column;background:#0f1115;color:#e6e8ee;font:14px/1.4 system-ui,sans-serif;border-left:1px solid #262b36}}
#chat-messages{{flex:1;overflow-y:auto;margin:0;padding:10px 12px;list-style:none}}#chat-messages li{{margin:0 0 6px;word-wrap:break-word}}
#chat-messages .name{{font-weight:600}}#chat-status{{margin:0;padding:0 12px;color:#ffb020;font-size:12px;min-height:16px}}
#chat-form{{display:flex;gap:6px;padding:10px 12px;border-top:1px solid #262b36}}#chat-text{{flex:1;background:#171a21;color:#e6e8ee;border:1px solid #262b36;border-radius:6px;padding:8px}}
#chat-form button{{background:#ff5a36;color:#fff;border:0;border-radius:6px;padding:8px 12px}}</style>
</head><body>
<video id="video" controls muted playsinline></video>
<div id="status" data-state="{page_state}">{label}</div>
{chat}
<script src="/play/hls.min.js"></script>
<script src="/player/ferrocast-data.js"></script>
<script>
const src = "/hls/{playback_id}/master.m3u8{query}";
const video = document.getElementById("video");
const status = document.getElementById("status");
window.player = {{ state: "{page_state}", errors: [], keyLoaded: false, fatal: null, subtitleTracks: 0, ended: false, viewId: null, playAt: null, startupMs: null }};
// The page's own measure of startup: from the play request to the first frame.
video.addEventListener("play", () => {{ if (window.player.playAt === null) window.player.playAt = Date.now(); }});
video.addEventListener("playing", () => {{
  if (window.player.startupMs === null) window.player.startupMs = Date.now() - window.player.playAt;
}}, {{ once: true }});
function monitor(hls, viewId) {{
  if (hls && !viewId) return;
  const data = window.FerrocastData && FerrocastData.monitor(video, {{ playbackId: "{playback_id}", hls, viewId }});
  if (data) window.player.viewId = data.viewId;
}}
function show(state, text) {{
  window.player.state = state;
  status.dataset.state = state;
  status.textContent = text;
}}
function start() {{
  if (window.Hls && Hls.isSupported()) {{
    // One view id for the beacons and for CMCD on every media request (query mode: no
    // preflight).
    // None under Do Not Track: then neither beacons nor CMCD.
    const viewId = window.FerrocastData ? FerrocastData.newViewId() : null;
    const cmcd = viewId ? {{ sessionId: viewId, contentId: "{playback_id}", useHeaders: false }} : undefined;
    const hls = new Hls({{ lowLatencyMode: false, cmcd }});
    hls.on(Hls.Events.KEY_LOADED, () => {{ window.player.keyLoaded = true; }});
    hls.on(Hls.Events.SUBTITLE_TRACKS_UPDATED, (_, data) => {{ window.player.subtitleTracks = data.subtitleTracks.length; }});
    hls.on(Hls.Events.ERROR, (_, data) => {{
      window.player.errors.push(data.details);
      if (data.fatal) {{ window.player.fatal = data.details; show("error", "error: " + data.details); }}
    }});
    monitor(hls, viewId);
    hls.loadSource(src);
    hls.attachMedia(video);
    window.hls = hls;
    video.play().catch(() => {{}});
  }} else if (video.canPlayType("application/vnd.apple.mpegurl")) {{
    monitor(null);
    video.src = src;
    video.play().catch(() => {{}});
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
    ))
    .into_response())
}

/// `GET /player/ferrocast-data.js`: the analytics script players embed (no build step): it
/// reports a view's events to `POST /v1/beacons`.
#[utoipa::path(get, path = "/player/ferrocast-data.js", tag = "playback",
    responses((status = 200, content_type = "text/javascript", body = String)))]
pub async fn data_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        include_str!("ferrocast-data.js"),
    )
        .into_response()
}

/// `GET /player/ferrocast-chat.js`: the chat beside the player of a live stream.
#[utoipa::path(get, path = "/player/ferrocast-chat.js", tag = "playback",
    responses((status = 200, content_type = "text/javascript", body = String)))]
pub async fn chat_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("ferrocast-chat.js"),
    )
        .into_response()
}

/// `GET /play/hls.min.js`: hls.js as installed from npm by `make` (not vendored here).
#[utoipa::path(get, path = "/play/hls.min.js", tag = "playback",
    responses((status = 200, content_type = "text/javascript", body = String),
        (status = 404, body = ErrorBody, description = "hls.js is not installed on this server")))]
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
