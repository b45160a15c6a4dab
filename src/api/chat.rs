//! Live chat: a WebSocket per live stream at `/chat/{playback_id}`. The REST side a creator
//! moderates with is [`chat_moderation`](super::chat_moderation).
//!
//! Messages are JSON text frames (the `chat` tag of the OpenAPI document lists them). Texts
//! are plain text: clients show them as text. Moderators (viewers the creator names) send
//! `hide`, `timeout` and `ban` over the same socket, and are exempt from flood control,
//! slow mode and entitled-only mode.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use axum::http::HeaderMap;

use super::access::{ClientIp, Shown, TokenQuery, authorize, token_from};
use super::{AppState, Path, Query, rfc3339};
use crate::chat::{self, JoinRefusal, Membership};
use crate::db::ChatMessage;
use crate::drm::AUD_VIDEO;
use crate::error::{ApiError, ApiResult, ErrorBody};

/// A peer silent (no frame, no pong) this long is gone.
const SILENCE: Duration = Duration::from_secs(60);
const PING: Duration = Duration::from_secs(20);
/// A frame the peer does not take within this is a peer too slow to keep.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChatQuery {
    /// The stream's playback token (or the `ferrocast_token` cookie): needed for a signed
    /// stream; its `viewer` is the name shown. Without one, an anonymous name.
    pub token: Option<String>,
}

/// A chat message as the API and the WebSocket show it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"id": "01a24fd0-6f1e-7d2a-9c41-0b2f6c8e1a11", "name": "ana", "color": "#3ecf8e",
    "text": "what a goal!", "at": "2026-12-07T09:55:12.345Z", "at_ms": 1796637312345_i64, "hidden": false,
    "badges": ["supporter"]}))]
pub struct ChatMessageView {
    pub id: String,
    pub name: String,
    pub color: String,
    pub text: String,
    /// When it was sent, on the broadcast's clock (`EXT-X-PROGRAM-DATE-TIME`).
    pub at: String,
    pub at_ms: i64,
    /// Hidden by moderation (listed to the creator only).
    pub hidden: bool,
    /// `moderator`, `supporter` (the sender holds an entitlement to the stream).
    pub badges: Vec<String>,
}

impl From<&ChatMessage> for ChatMessageView {
    fn from(m: &ChatMessage) -> Self {
        Self {
            id: m.id.clone(),
            name: m.name.clone(),
            color: m.color.clone(),
            text: m.text.clone(),
            at: rfc3339(m.at),
            at_ms: m.at,
            hidden: m.hidden_at.is_some(),
            badges: m
                .badges
                .split(',')
                .filter(|b| !b.is_empty())
                .map(str::to_string)
                .collect(),
        }
    }
}

/// Who is chatting on one connection.
pub(super) struct Chatter {
    pub(super) tenant_id: String,
    pub(super) live_stream_id: String,
    playback_id: String,
    prefix: Option<String>,
    viewer: String,
    /// Whom flood control, slow mode and bans count: `viewer:<id>` for a token's viewer,
    /// `address:<hash>` for an anonymous one.
    sender: String,
    /// `address:<hash>` of this connection, whoever it is.
    address: String,
    name: String,
    color: &'static str,
    /// Named by the creator in the stream's chat rules.
    moderator: bool,
    /// Holds an entitlement to the stream (bought it).
    supporter: bool,
}

impl Chatter {
    fn badges(&self) -> String {
        let mut b = Vec::new();
        if self.moderator {
            b.push("moderator");
        }
        if self.supporter {
            b.push("supporter");
        }
        b.join(",")
    }
}

/// Join a live stream's chat (WebSocket).
#[utoipa::path(get, path = "/chat/{playback_id}", tag = "chat", params(ChatQuery),
    responses((status = 101, description = "The WebSocket: JSON text frames (see the tag's description)"),
        (status = 401, body = ErrorBody, description = "A signed stream without a valid token"),
        (status = 403, body = ErrorBody, description = "A token that does not allow this (referrer, country, entitlement), or the cookie's token from another site's page"),
        (status = 429, body = ErrorBody, description = "Too many connections from this address"),
        (status = 503, body = ErrorBody, description = "The room is full")))]
pub async fn connect(
    State(state): State<AppState>,
    Path(playback_id): Path<String>,
    Query(q): Query<ChatQuery>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let db = &state.jobs.db;
    let live_stream_id = db
        .live_stream_id_for_playback(&playback_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("chat is for live streams".into()))?;
    // Who may watch may chat: the stream's rules (token, referrer, country) decide. The
    // token as a player sends it: query, bearer or cookie.
    let query = TokenQuery {
        token: q.token.clone(),
        cmcd: None,
    };
    let token = token_from(&query, &headers);
    // A token the browser sent by itself (the cookie) speaks only for pages of this server:
    // another site's page must not chat, or moderate, as the viewer.
    let from_cookie = token.is_some()
        && q.token.as_deref().is_none_or(str::is_empty)
        && !super::access::token_in_header(&query, &headers);
    if from_cookie && !super::same_origin(&headers) {
        return Err(ApiError::Forbidden(
            "the chat takes the cookie's token only from this server's pages".into(),
        ));
    }
    let token = token.as_deref();
    let (target, claims) = authorize(
        &state,
        &playback_id,
        token,
        AUD_VIDEO,
        // What paid media says in its chat is for those who bought it, as the media is.
        Shown::Clear,
        &headers,
        ip.as_deref(),
    )
    .await?;
    // On a public stream the token is not needed, but names the viewer when it verifies.
    let claims = match (claims, token) {
        (Some(c), _) => Some(c),
        (None, Some(t)) => state
            .tokens
            .verify(t, Some(&playback_id), AUD_VIDEO)
            .await
            .ok()
            .filter(|v| {
                v.signed_by_tenant
                    .as_ref()
                    .is_none_or(|s| *s == target.tenant_id)
            })
            .map(|v| v.claims),
        (None, None) => None,
    };
    let viewer = claims.and_then(|c| c.viewer);
    let ws = ws.map_err(|_| {
        ApiError::invalid("this is a WebSocket endpoint: connect with Upgrade: websocket")
    })?;
    // An address that does not read as one counts in one shared bucket, never in none.
    let address = chat::bucket(
        ip.and_then(|a| a.parse::<IpAddr>().ok())
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
    );
    let signed_in = viewer.is_some();
    // The address itself is not kept: a hash of it with the stream.
    let address_key = format!(
        "address:{}",
        &crate::api::auth::hash_hex(&format!("{live_stream_id}|{address}"))[..32]
    );
    let (viewer, name, sender) = match viewer {
        Some(v) => (v.clone(), chat::display_name(&v), format!("viewer:{v}")),
        None => {
            let id = crate::ids::random_secret(9);
            let short: String = id
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(4)
                .collect();
            (
                format!("anon:{id}"),
                format!("viewer-{short}"),
                address_key.clone(),
            )
        }
    };
    let rules = db.chat_rules(&live_stream_id).await?;
    let moderator = signed_in && rules.moderators.contains(&viewer);
    let supporter = signed_in
        && db
            .has_entitlement_to_media(
                &target.tenant_id,
                &playback_id,
                target.prefix.as_deref(),
                &viewer,
                false,
            )
            .await?;
    let (membership, rx) = state
        .chat
        .join(&live_stream_id, Some(address))
        .map_err(|refusal| match refusal {
            JoinRefusal::TooManyFromAddress => ApiError::TooManyRequests(10),
            JoinRefusal::RoomFull => ApiError::Unavailable("this chat is full".into()),
        })?;
    let chatter = Chatter {
        tenant_id: target.tenant_id,
        live_stream_id,
        playback_id,
        prefix: target.prefix,
        color: chat::color(&viewer),
        viewer,
        sender,
        address: address_key,
        name,
        moderator,
        supporter,
    };
    Ok(ws
        .max_message_size(8 * 1024)
        .max_frame_size(8 * 1024)
        .on_upgrade(move |socket| run(state, socket, chatter, membership, rx))
        .into_response())
}

async fn send(socket: &mut WebSocket, text: String) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(text.into()))).await,
        Ok(Ok(()))
    )
}

async fn run(
    state: AppState,
    mut socket: WebSocket,
    mut chatter: Chatter,
    membership: Membership,
    mut rx: tokio::sync::mpsc::Receiver<std::sync::Arc<str>>,
) {
    let history = match state
        .jobs
        .db
        .recent_chat(&chatter.live_stream_id, chat::HISTORY)
        .await
    {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, "reading chat history");
            Vec::new()
        }
    };
    let views: Vec<ChatMessageView> = history.iter().map(ChatMessageView::from).collect();
    let rules = state
        .jobs
        .db
        .chat_rules(&chatter.live_stream_id)
        .await
        .unwrap_or_default();
    let hello = json!({"type": "welcome", "name": chatter.name, "color": chatter.color,
        "moderator": chatter.moderator, "supporter": chatter.supporter,
        "rules": {"slow_mode_s": rules.slow_mode_s, "entitled_only": rules.entitled_only}});
    if !send(&mut socket, hello.to_string()).await
        || !send(
            &mut socket,
            json!({"type": "history", "messages": views}).to_string(),
        )
        .await
    {
        return;
    }
    let mut ping = tokio::time::interval(PING);
    let mut heard = Instant::now();
    let mut budget = chat::FrameBudget::new(heard);
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(text) => if !send(&mut socket, text.to_string()).await { break },
                None => {
                    // Dropped by the room: this reader could not keep up.
                    let close = Message::Close(Some(axum::extract::ws::CloseFrame {
                        code: 1008,
                        reason: "too slow to keep up with the chat".into(),
                    }));
                    let _ = tokio::time::timeout(SEND_TIMEOUT, socket.send(close)).await;
                    break;
                }
            },
            frame = socket.recv() => {
                let Some(Ok(frame)) = frame else { break };
                if matches!(frame, Message::Close(_)) {
                    break;
                }
                heard = Instant::now();
                // Every frame counts against the socket's budget first: a flood is dropped
                // unread, then closed.
                match budget.take(heard) {
                    chat::FrameVerdict::Read => {}
                    // A dropped frame costs nothing more; the first of a run is answered.
                    chat::FrameVerdict::Dropped { first: false } => continue,
                    chat::FrameVerdict::Dropped { first: true } => {
                        let e = error("flooding", "too many frames: those past ten a second are dropped unread");
                        if !send(&mut socket, e.to_string()).await { break }
                        continue;
                    }
                    chat::FrameVerdict::Close => {
                        tracing::warn!(sender = ?chatter.sender, address = ?chatter.address, "chat socket closed: a flood of frames");
                        let close = Message::Close(Some(axum::extract::ws::CloseFrame {
                            code: 1008,
                            reason: "flooding: too many frames".into(),
                        }));
                        let _ = tokio::time::timeout(SEND_TIMEOUT, socket.send(close)).await;
                        break;
                    }
                }
                match frame {
                    Message::Text(text) => {
                        if let Some(answer) = receive(&state, &mut chatter, &membership, &text).await
                            && !send(&mut socket, answer.to_string()).await
                        {
                            break;
                        }
                    }
                    Message::Binary(_) => {
                        let e = json!({"type": "error", "code": "invalid", "message": "send JSON text frames"});
                        if !send(&mut socket, e.to_string()).await { break }
                    }
                    Message::Ping(_) | Message::Pong(_) | Message::Close(_) => {}
                }
            },
            _ = ping.tick() => {
                if heard.elapsed() > SILENCE { break }
                let ping = socket.send(Message::Ping(Default::default()));
                if !matches!(tokio::time::timeout(SEND_TIMEOUT, ping).await, Ok(Ok(()))) { break }
            }
        }
    }
}

#[derive(Deserialize)]
struct Incoming {
    r#type: String,
    text: Option<String>,
    /// A message's id (`hide`, `timeout`, `ban`).
    id: Option<String>,
    /// `timeout`: seconds (default 600).
    duration_s: Option<i64>,
}

fn error(code: &str, message: &str) -> serde_json::Value {
    json!({"type": "error", "code": code, "message": message})
}

/// What the sender is told, if anything, about frame `text`.
async fn receive(
    state: &AppState,
    chatter: &mut Chatter,
    membership: &Membership,
    text: &str,
) -> Option<serde_json::Value> {
    let Ok(incoming) = serde_json::from_str::<Incoming>(text) else {
        return Some(error(
            "invalid",
            "send {\"type\": \"send\", \"text\": \"…\"}",
        ));
    };
    match incoming.r#type.as_str() {
        "send" => send_message(state, chatter, membership, incoming.text.as_deref()).await,
        "hide" | "timeout" | "ban" => {
            // Judged by the rules now: a moderator the creator removed moderates no more.
            chatter.moderator = !chatter.viewer.starts_with("anon:")
                && state
                    .jobs
                    .db
                    .chat_rules(&chatter.live_stream_id)
                    .await
                    .is_ok_and(|r| r.moderators.contains(&chatter.viewer));
            if !chatter.moderator {
                return Some(error("forbidden", "only moderators may do that"));
            }
            let Some(id) = incoming.id.as_deref() else {
                return Some(error("invalid", "name the message: id"));
            };
            let done = match incoming.r#type.as_str() {
                "hide" => super::chat_moderation::hide_message(
                    state,
                    &chatter.tenant_id,
                    &chatter.live_stream_id,
                    id,
                )
                .await
                .map(|_| ()),
                kind => {
                    let until = (kind == "timeout").then(|| incoming.duration_s.unwrap_or(600));
                    super::chat_moderation::ban_by_message(
                        state,
                        &chatter.tenant_id,
                        &chatter.live_stream_id,
                        id,
                        until,
                        None,
                        true,
                    )
                    .await
                    .map(|_| ())
                }
            };
            match done {
                Ok(()) => None,
                Err(e) => Some(error("invalid", &e.to_string())),
            }
        }
        _ => Some(error("invalid", "unknown message type")),
    }
}

async fn send_message(
    state: &AppState,
    chatter: &mut Chatter,
    membership: &Membership,
    text: Option<&str>,
) -> Option<serde_json::Value> {
    let Some(text) = text.and_then(chat::clean_text) else {
        return Some(error(
            "invalid",
            &format!("a message has 1 to {} characters", chat::MAX_TEXT),
        ));
    };
    let db = &state.jobs.db;
    let unavailable = || {
        Some(error(
            "unavailable",
            "the message could not be kept; send it again",
        ))
    };
    match db
        .chat_ban_of(&chatter.live_stream_id, &chatter.sender)
        .await
    {
        Ok(None) => {}
        Ok(Some(ban)) => {
            let mut e = error(
                "banned",
                if ban.until.is_some() {
                    "you are timed out of this chat"
                } else {
                    "you are banned from this chat"
                },
            );
            if let Some(until) = ban.until {
                e["until"] = json!(rfc3339(until));
                e["retry_after_s"] = json!(((until - crate::clock::now_ms()).max(0) + 999) / 1000);
            }
            return Some(e);
        }
        Err(_) => return unavailable(),
    }
    let Ok(rules) = db.chat_rules(&chatter.live_stream_id).await else {
        return unavailable();
    };
    chatter.moderator =
        !chatter.viewer.starts_with("anon:") && rules.moderators.contains(&chatter.viewer);
    if !chatter.moderator {
        if rules.entitled_only && !chatter.supporter {
            // Bought since joining?
            chatter.supporter = !chatter.viewer.starts_with("anon:")
                && db
                    .has_entitlement_to_media(
                        &chatter.tenant_id,
                        &chatter.playback_id,
                        chatter.prefix.as_deref(),
                        &chatter.viewer,
                        false,
                    )
                    .await
                    .unwrap_or(false);
            if !chatter.supporter {
                return Some(error(
                    "entitled_only",
                    "only viewers who bought access may write in this chat",
                ));
            }
        }
        let slow = std::time::Duration::from_secs(rules.slow_mode_s.max(0).unsigned_abs());
        match membership.pace(&chatter.sender, slow, Instant::now()) {
            Ok(()) => {}
            Err(chat::Wait::Flood(wait)) => {
                return Some(json!({"type": "error", "code": "slow_down",
                    "message": "too many messages: wait a moment", "retry_after_s": wait.as_secs_f64().ceil()}));
            }
            Err(chat::Wait::SlowMode(wait)) => {
                return Some(json!({"type": "error", "code": "slow_mode",
                    "message": format!("slow mode: one message every {} s", rules.slow_mode_s),
                    "retry_after_s": wait.as_secs_f64().ceil()}));
            }
        }
    }
    let broadcast = db
        .get_live_stream(&chatter.tenant_id, &chatter.live_stream_id)
        .await
        .ok()
        .and_then(|s| s.current_prefix);
    let message = ChatMessage {
        id: crate::ids::new_id(),
        tenant_id: chatter.tenant_id.clone(),
        live_stream_id: chatter.live_stream_id.clone(),
        broadcast,
        viewer: chatter.viewer.clone(),
        name: chatter.name.clone(),
        color: chatter.color.to_string(),
        text,
        at: crate::clock::now_ms(),
        hidden_at: None,
        sender: chatter.sender.clone(),
        address: chatter.address.clone(),
        badges: chatter.badges(),
    };
    if let Err(e) = db.insert_chat_message(&message).await {
        tracing::warn!(error = %e, "storing a chat message");
        return unavailable();
    }
    let mut out = serde_json::to_value(ChatMessageView::from(&message)).expect("serializes");
    out["type"] = json!("message");
    state.chat.send(&chatter.live_stream_id, &out);
    None
}
