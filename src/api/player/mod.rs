//! The viewer pages: `/play/{playback_id}` (the player, with chat beside a live stream) and
//! `/embed/{playback_id}` (the player alone, for an iframe), with the tenant's branding, and
//! their scripts. A page that cannot play says why, in words, with the HTTP status that says
//! it too: not found, offline, not in your country, purchase required (with a buy button
//! into the checkout), link expired.
//!
//! The pages run no inline script: their settings are a JSON block the script reads, and
//! their Content-Security-Policy allows scripts from this server only, and styles from it and
//! the one block (the tenant's sanitised CSS) that carries the page's nonce.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;

use super::access::{ClientIp, Rental, Shown, TokenQuery, judge, token_from};
use super::branding::{is_colour, logo_origin};
use super::{AppState, Path, Query, escape_html};
use crate::commerce::money::Currency;
use crate::db::{Branding, LiveState, Offer};
use crate::drm::access::{Denial, DenialKind};
use crate::drm::{AUD_VIDEO, TokenError};
use crate::error::{ApiResult, ErrorBody};

/// Which page: the full one, or the player alone for an iframe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chrome {
    Page,
    Embed,
}

/// `GET /play/{playback_id}`: the player page. A live stream's page says whether the
/// broadcast is live, ended (its final playlists are still there) or offline (it starts
/// playing when the broadcaster goes live), and has the chat beside the video. A page that
/// cannot play says why: not found (404), a link needed or expired (401/403), another
/// country or site (403), a purchase needed (403, with a buy button when the tenant sells
/// it), too many requests (429).
#[utoipa::path(get, path = "/play/{playback_id}", tag = "playback", params(("token" = Option<String>, Query, description = "The playback token (or `Authorization: Bearer`, or the `ferrocast_token` cookie); none for public media")),
    responses((status = 200, content_type = "text/html", body = String),
        (status = 404, content_type = "text/html", body = String, description = "No such playback id: a page that says so"),
        (status = 401, content_type = "text/html", body = String, description = "No token, or one that does not verify: a page that says a link is needed"),
        (status = 403, content_type = "text/html", body = String, description = "Expired link, another country or site, or a purchase needed: a page that says which"),
        (status = 429, content_type = "text/html", body = String, description = "Too many requests: a page that says when to try again")))]
pub async fn player_page(
    State(state): State<AppState>,
    Path(playback_id): Path<String>,
    Query(q): Query<TokenQuery>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> ApiResult<Response> {
    viewer_page(
        &state,
        &playback_id,
        &q,
        ip.as_deref(),
        &headers,
        Chrome::Page,
    )
    .await
}

/// `GET /embed/{playback_id}`: the player alone, filling its frame, for an `<iframe>` on any
/// site (the token's referrer rules still decide what plays). The same states as `/play`.
#[utoipa::path(get, path = "/embed/{playback_id}", tag = "playback", params(("token" = Option<String>, Query, description = "The playback token (or the `ferrocast_token` cookie); none for public media")),
    responses((status = 200, content_type = "text/html", body = String),
        (status = 404, content_type = "text/html", body = String, description = "No such playback id"),
        (status = 401, content_type = "text/html", body = String, description = "No token, or one that does not verify"),
        (status = 403, content_type = "text/html", body = String, description = "Expired link, another country or site, or a purchase needed"),
        (status = 429, content_type = "text/html", body = String, description = "Too many requests")))]
pub async fn embed_page(
    State(state): State<AppState>,
    Path(playback_id): Path<String>,
    Query(q): Query<TokenQuery>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> ApiResult<Response> {
    viewer_page(
        &state,
        &playback_id,
        &q,
        ip.as_deref(),
        &headers,
        Chrome::Embed,
    )
    .await
}

/// Whether `id` could be a playback id at all (checked before any lookup).
pub(super) fn plausible_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric())
}

/// What the page shows instead of a player, and its status.
struct Notice {
    state: &'static str,
    status: StatusCode,
    title: String,
    text: String,
}

impl Notice {
    fn of(denial: &Denial, brand: &str) -> Self {
        let status = match denial.kind() {
            DenialKind::Unauthenticated => StatusCode::UNAUTHORIZED,
            DenialKind::Forbidden => StatusCode::FORBIDDEN,
            DenialKind::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
        };
        let (state, title, text) = match denial {
            Denial::Token(TokenError::Expired) => (
                "token_expired",
                "This link has expired".to_string(),
                "Go back to the page you came from and open the video again for a fresh link."
                    .to_string(),
            ),
            Denial::CountryNotAllowed | Denial::CountryUnknown => (
                "geo_blocked",
                "Not available in your country".to_string(),
                "The owner of this video has limited where it can be watched.".to_string(),
            ),
            Denial::ReferrerNotAllowed => (
                "site_not_allowed",
                "This video cannot be played here".to_string(),
                "Its owner allows it only on their own sites.".to_string(),
            ),
            Denial::NoViewer | Denial::NoEntitlement => (
                "purchase_required",
                "Purchase required".to_string(),
                if matches!(denial, Denial::NoViewer) {
                    format!("Sign in on {brand}'s site to buy access to this video.")
                } else {
                    "Buy access to watch this video.".to_string()
                },
            ),
            Denial::RateLimited(wait) => (
                "rate_limited",
                "Too many requests".to_string(),
                format!("Try again in {wait} s."),
            ),
            _ => (
                "token_required",
                "This video is private".to_string(),
                "It plays only from a link with a valid access token.".to_string(),
            ),
        };
        Self {
            state,
            status,
            title,
            text,
        }
    }
}

async fn viewer_page(
    state: &AppState,
    playback_id: &str,
    q: &TokenQuery,
    ip: Option<&str>,
    headers: &HeaderMap,
    chrome: Chrome,
) -> ApiResult<Response> {
    let target = if plausible_id(playback_id) {
        state.jobs.db.playback_target(playback_id).await?
    } else {
        None
    };
    let Some(target) = target else {
        return Ok(not_found(chrome));
    };
    let branding = state.jobs.db.branding(&target.tenant_id).await?;
    let brand = branding.name.clone().unwrap_or_else(|| "Ferrocast".into());
    // Only a token of token characters is used or carried into the page's URLs.
    let token = token_from(q, headers).filter(|t| {
        t.len() <= 4096
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    });
    let in_query = q
        .token
        .as_deref()
        .is_some_and(|t| Some(t) == token.as_deref());
    let query = match (&token, in_query) {
        (Some(t), true) => format!("?token={t}"),
        _ => String::new(),
    };
    let tenant_id = target.tenant_id.clone();
    let decision = judge(
        state,
        playback_id,
        target,
        token.as_deref(),
        AUD_VIDEO,
        Shown::Clear,
        headers,
        ip,
        Rental::Look,
    )
    .await?;
    let mut config = json!({
        "playbackId": playback_id,
        "query": query,
        "embed": chrome == Chrome::Embed,
    });
    let mut retry_after = None;
    let (status, page_state, label, body) = match decision {
        Ok((target, claims)) => {
            let live = state.jobs.db.live_state_for_playback(playback_id).await?;
            let (page_state, label) = match live {
                Some(LiveState::Live) => ("live", "loading"),
                Some(LiveState::Ended) => ("ended", "ended"),
                Some(LiveState::Offline) => ("offline", "offline"),
                None => ("video", "loading"),
            };
            config["live"] = json!(live.is_some());
            if live.is_none() {
                // Stills take tokens of their own audiences: the page's token, re-minted for
                // them with the same claims (a viewer who may play may see them).
                let still = |audience: &str| match &claims {
                    Some(c) => format!(
                        "?token={}",
                        state.tokens.mint(&crate::drm::PlaybackClaims {
                            aud: audience.to_string(),
                            ..c.clone()
                        })
                    ),
                    None => String::new(),
                };
                config["poster"] = json!(format!(
                    "/thumbnails/{playback_id}.jpg{}",
                    still(crate::drm::AUD_THUMBNAIL)
                ));
                config["storyboard"] = json!(format!(
                    "/storyboards/{playback_id}.vtt{}",
                    still(crate::drm::AUD_STORYBOARD)
                ));
            }
            // A live stream chats; an ended broadcast or a recording replays its chat.
            let chat = match (live, chrome, &target.prefix) {
                (_, Chrome::Embed, _) => None,
                (Some(LiveState::Live | LiveState::Offline), _, _) => Some(ChatMode::Live),
                (Some(LiveState::Ended) | None, _, Some(prefix))
                    if state.jobs.db.has_broadcast_chat(prefix).await? =>
                {
                    Some(ChatMode::Replay)
                }
                (Some(LiveState::Ended), _, _) => Some(ChatMode::Live),
                (None, _, _) => None,
            };
            (
                StatusCode::OK,
                page_state,
                label,
                player_markup(playback_id, &query, live, chat),
            )
        }
        Err(denial) => {
            let notice = Notice::of(&denial, &brand);
            let mut body = notice_markup(&notice);
            if let Denial::RateLimited(wait) = denial {
                retry_after = Some(wait);
            }
            if notice.state == "purchase_required" {
                let offers = state
                    .jobs
                    .db
                    .offers_for_playback(&tenant_id, playback_id)
                    .await?;
                body.push_str(&offers_markup(&offers, &branding, &denial, token.is_some()));
                if let (Some(key), Some(provider), Some(token)) = (
                    &branding.publishable_key,
                    &branding.checkout_provider,
                    &token,
                ) && matches!(denial, Denial::NoEntitlement)
                {
                    config["checkout"] = json!({"key": key, "provider": provider, "token": token});
                }
            }
            body.push_str("</div></div>");
            (notice.status, notice.state, notice.state, body)
        }
    };
    config["state"] = json!(page_state);
    let mut response = page(
        status,
        chrome,
        &branding,
        &brand,
        page_state,
        label,
        &body,
        &config,
        Some(playback_id),
        &state.jobs.public_url,
        state.jobs.config.delivery.redirect_segments,
    );
    if let Some(wait) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait));
    }
    Ok(response)
}

/// How the chat beside the video runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChatMode {
    Live,
    /// A recording's: the broadcast's messages, each shown when the video reaches it.
    Replay,
}

/// The video, its controls and (for a live page, or a recording with chat) the chat.
fn player_markup(
    playback_id: &str,
    query: &str,
    live: Option<LiveState>,
    chat: Option<ChatMode>,
) -> String {
    let offline = matches!(live, Some(LiveState::Offline));
    let mut out = format!(
        r#"<div class="fc-stage" id="stage">
<video id="video" playsinline muted></video>
<div class="fc-top"><span id="live-badge" class="fc-live" hidden>LIVE</span><span id="viewers" class="fc-viewers" hidden></span></div>
<div id="notice" class="fc-notice" data-state="offline"{hidden}><h1 id="notice-title">The stream is offline</h1><p id="notice-text">It starts here when the broadcaster goes live.</p></div>
<div class="fc-controls" id="controls">
<button id="play-toggle" class="fc-btn" type="button" aria-label="Play"><svg class="fc-icon-play" viewBox="0 0 24 24" aria-hidden="true"><path d="M8 5v14l11-7z"/></svg><svg class="fc-icon-pause" viewBox="0 0 24 24" aria-hidden="true"><path d="M6 5h4v14H6zM14 5h4v14h-4z"/></svg></button>
<div id="seek" class="fc-seek" role="slider" aria-label="Seek" tabindex="0"><div id="seek-fill" class="fc-seek-fill"></div><div id="preview" class="fc-preview" hidden><div id="preview-image" class="fc-preview-image"></div><span id="preview-time"></span></div></div>
<span id="time" class="fc-time">0:00</span>
<button id="back-to-live" class="fc-btn fc-text-btn" type="button" hidden>Back to live</button>
<label class="fc-menu" id="quality-menu" hidden><span class="fc-sr">Quality</span><select id="quality"></select></label>
<label class="fc-menu" id="captions-menu" hidden><span class="fc-sr">Captions</span><select id="captions"></select></label>
<button id="mute" class="fc-btn" type="button" aria-label="Unmute"><svg class="fc-icon-muted" viewBox="0 0 24 24" aria-hidden="true"><path d="M4 9v6h4l5 5V4L8 9H4zm12.6 3 2.7-2.7-1.4-1.4-2.7 2.7-2.7-2.7-1.4 1.4 2.7 2.7-2.7 2.7 1.4 1.4 2.7-2.7 2.7 2.7 1.4-1.4z"/></svg><svg class="fc-icon-sound" viewBox="0 0 24 24" aria-hidden="true"><path d="M4 9v6h4l5 5V4L8 9H4zm12.5 3A4.5 4.5 0 0 0 14 8v8a4.5 4.5 0 0 0 2.5-4zM14 3.2v2.1a7 7 0 0 1 0 13.4v2.1a9 9 0 0 0 0-17.6z"/></svg></button>
<button id="fullscreen" class="fc-btn" type="button" aria-label="Full screen"><svg viewBox="0 0 24 24" aria-hidden="true"><path d="M5 5h5v2H7v3H5zm9 0h5v5h-2V7h-3zM5 14h2v3h3v2H5zm12 0h2v5h-5v-2h3z"/></svg></button>
</div>
</div>"#,
        hidden = if offline { "" } else { " hidden" },
    );
    match chat {
        Some(ChatMode::Live) => out.push_str(&format!(
            r#"<aside id="chat" data-playback-id="{playback_id}" data-query="{query}" data-mode="live">
<h2 class="fc-chat-title">Live chat <span id="chat-rules" class="fc-chat-rules"></span></h2>
<ol id="chat-messages" aria-live="polite"></ol>
<p id="chat-status" role="status"></p>
<form id="chat-form"><input id="chat-text" maxlength="500" autocomplete="off" placeholder="Chat"><button type="submit">Send</button></form>
</aside>"#
        )),
        Some(ChatMode::Replay) => out.push_str(&format!(
            r#"<aside id="chat" data-playback-id="{playback_id}" data-query="{query}" data-mode="replay">
<h2 class="fc-chat-title">Chat replay</h2>
<ol id="chat-messages" aria-live="polite"></ol>
<p id="chat-status" role="status"></p>
<form id="chat-form" hidden><input id="chat-text"></form>
</aside>"#
        )),
        None => {}
    }
    out
}

fn notice_markup(notice: &Notice) -> String {
    format!(
        r#"<div class="fc-stage fc-stage-notice"><div id="notice" class="fc-notice" data-state="{}"><h1 id="notice-title">{}</h1><p id="notice-text">{}</p>"#,
        notice.state,
        escape_html(&notice.title),
        escape_html(&notice.text)
    )
}

/// What a viewer who must buy can buy, closing the notice; buttons when the page can open
/// the checkout (a publishable key and provider set, a token naming the viewer).
fn offers_markup(
    offers: &[Offer],
    branding: &Branding,
    denial: &Denial,
    has_token: bool,
) -> String {
    let can_buy = branding.publishable_key.is_some()
        && branding.checkout_provider.is_some()
        && has_token
        && matches!(denial, Denial::NoEntitlement);
    let mut out = String::from(r#"<ul id="offers" class="fc-offers">"#);
    for o in offers {
        let amount = Currency::parse(&o.currency)
            .map(|c| {
                format!(
                    "{} {}",
                    c.format(o.unit_amount),
                    o.currency.to_ascii_uppercase()
                )
            })
            .unwrap_or_default();
        let per = match (
            o.r#type.as_str(),
            o.rental_hours,
            o.billing_interval.as_deref(),
        ) {
            ("rental", Some(h), _) => format!(" · {h} h rental"),
            ("recurring", _, Some(i)) => format!(" / {i}"),
            _ => String::new(),
        };
        let button = if can_buy {
            format!(
                r#" <button class="fc-buy" type="button" data-price="{}" data-currency="{}">Buy</button>"#,
                escape_html(&o.price_id),
                escape_html(&o.currency.to_ascii_lowercase())
            )
        } else {
            String::new()
        };
        out.push_str(&format!(
            r#"<li><span class="fc-offer-name">{}</span> <span class="fc-offer-price">{}{}</span>{button}</li>"#,
            escape_html(&o.product_name),
            escape_html(&amount),
            escape_html(&per)
        ));
    }
    out.push_str(r#"</ul><p id="buy-status" class="fc-buy-status" role="status"></p>"#);
    out
}

/// The whole page around `body`.
#[allow(clippy::too_many_arguments)]
fn page(
    status: StatusCode,
    chrome: Chrome,
    branding: &Branding,
    brand: &str,
    page_state: &str,
    label: &str,
    body: &str,
    config: &serde_json::Value,
    playback_id: Option<&str>,
    public_url: &str,
    redirect_segments: bool,
) -> Response {
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let mut vars = String::new();
    for (name, value) in [
        ("--fc-bg", &branding.background),
        ("--fc-text", &branding.text_color),
        ("--fc-accent", &branding.accent),
    ] {
        if let Some(v) = value.as_deref().filter(|v| is_colour(v)) {
            vars.push_str(&format!("{name}: {v}; "));
        }
    }
    let logo = branding
        .logo_url
        .as_deref()
        .and_then(|u| Some((u, logo_origin(u)?)));
    let header = match (chrome, &logo) {
        (Chrome::Page, Some((url, _))) => format!(
            r#"<header class="fc-header"><img class="fc-logo" src="{}" alt=""><span class="fc-title">{}</span></header>"#,
            escape_html(url),
            escape_html(brand)
        ),
        (Chrome::Page, None) => format!(
            r#"<header class="fc-header"><span class="fc-title">{}</span></header>"#,
            escape_html(brand)
        ),
        (Chrome::Embed, _) => String::new(),
    };
    // JSON in a script block: `<`, `>` and `&` escaped, so nothing in it closes the block.
    let config = config
        .to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026");
    let oembed = match playback_id {
        Some(id) => format!(
            r#"<link rel="alternate" type="application/json+oembed" href="{}" title="{}">"#,
            escape_html(&format!(
                "{public_url}/oembed?url={}",
                url::form_urlencoded::byte_serialize(format!("{public_url}/play/{id}").as_bytes())
                    .collect::<String>()
            )),
            escape_html(brand)
        ),
        None => String::new(),
    };
    let html = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
{oembed}
<link rel="stylesheet" href="/player/ferrocast-player.css">
<style nonce="{nonce}">:root {{ {vars}}}
{custom}</style>
<script type="application/json" id="fc-config">{config}</script>
</head><body class="fc-body{embed_class}">
{header}<main class="fc-main">
{body}
</main>
<div id="status" class="fc-status" data-state="{page_state}">{label}</div>
<script src="/play/hls.min.js"></script>
<script src="/player/ferrocast-data.js"></script>
<script src="/player/ferrocast-player.js"></script>
<script src="/player/ferrocast-chat.js"></script>
</body></html>
"#,
        title = escape_html(brand),
        custom = branding.custom_css,
        embed_class = if chrome == Chrome::Embed {
            " fc-embed"
        } else {
            ""
        },
    );
    let img = match logo {
        Some((_, origin)) => format!("'self' data: {origin}"),
        None => "'self' data:".to_string(),
    };
    let ancestors = match chrome {
        Chrome::Page => "'self'",
        Chrome::Embed => "*",
    };
    // Segments redirected to presigned storage URLs come from storage's origin.
    let storage = if redirect_segments {
        " https: http:"
    } else {
        ""
    };
    let csp = format!(
        "default-src 'none'; script-src 'self'; style-src 'self' 'nonce-{nonce}'; img-src {img}; \
         media-src 'self' blob:{storage}; connect-src 'self'{storage}; worker-src 'self' blob:; \
         base-uri 'none'; form-action 'none'; frame-ancestors {ancestors}"
    );
    let mut response = (status, Html(html)).into_response();
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("strict-origin-when-cross-origin"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// An id that plays nothing says so, in a page, not a black player.
fn not_found(chrome: Chrome) -> Response {
    page(
        StatusCode::NOT_FOUND,
        chrome,
        &Branding::default(),
        "Not found · Ferrocast",
        "not_found",
        "not_found",
        r#"<div class="fc-stage fc-stage-notice"><div id="notice" class="fc-notice" data-state="not_found"><h1 id="not-found">This video does not exist</h1><p>The link may be mistyped, or the video was deleted.</p></div></div>"#,
        &json!({"state": "not_found"}),
        None,
        "",
        false,
    )
}

/// `GET /player/ferrocast-player.js`: the viewer pages' player.
#[utoipa::path(get, path = "/player/ferrocast-player.js", tag = "playback",
    responses((status = 200, content_type = "text/javascript", body = String)))]
pub async fn player_js() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("player.js"))
}

/// `GET /player/ferrocast-player.css`: the viewer pages' look (a tenant's branding is laid
/// over it).
#[utoipa::path(get, path = "/player/ferrocast-player.css", tag = "playback",
    responses((status = 200, content_type = "text/css", body = String)))]
pub async fn player_css() -> Response {
    asset("text/css; charset=utf-8", include_str!("player.css"))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
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
        include_str!("data.js"),
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
        include_str!("chat.js"),
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
