//! Live chat: a WebSocket per live stream at `/chat/{playback_id}`, and the REST side a
//! creator moderates with (history, hiding a message).
//!
//! Messages are JSON text frames. The client sends `{"type": "send", "text": "…"}`; the
//! server sends `welcome` (the viewer's name and colour), `history` (the last 50 visible
//! messages), `message`, `hidden` (a message to remove) and `error` (`invalid`,
//! `slow_down` with `retry_after_s`). Texts are plain text: clients show them as text.

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

use super::access::{ClientIp, Shown, authorize};
use super::auth::Tenant;
use super::{AppState, Json, List, Page, Path, Query, rfc3339};
use crate::chat::{self, Flood, JoinRefusal, Membership};
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
    /// The stream's playback token: needed for a signed stream; its `viewer` is the name
    /// shown. Without one, an anonymous name.
    pub token: Option<String>,
}

/// A chat message as the API and the WebSocket show it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"id": "01a24fd0-6f1e-7d2a-9c41-0b2f6c8e1a11", "name": "ana", "color": "#3ecf8e",
    "text": "what a goal!", "at": "2026-12-07T09:55:12.345Z", "at_ms": 1796637312345_i64, "hidden": false}))]
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
        }
    }
}

/// Who is chatting on one connection.
struct Chatter {
    tenant_id: String,
    live_stream_id: String,
    viewer: String,
    name: String,
    color: &'static str,
}

/// Join a live stream's chat (WebSocket).
#[utoipa::path(get, path = "/chat/{playback_id}", tag = "chat", params(ChatQuery),
    responses((status = 101, description = "The WebSocket: JSON text frames (see the tag's description)"),
        (status = 401, body = ErrorBody, description = "A signed stream without a valid token"),
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
    // Who may watch may chat: the stream's rules (token, referrer, country) decide.
    let token = q.token.as_deref();
    let (target, claims) = authorize(
        &state,
        &playback_id,
        token,
        AUD_VIDEO,
        Shown::Protected,
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
    let (viewer, name) = match viewer {
        Some(v) => (v.clone(), chat::display_name(&v)),
        None => {
            let id = crate::ids::random_secret(9);
            let short: String = id
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(4)
                .collect();
            (format!("anon:{id}"), format!("viewer-{short}"))
        }
    };
    // An address that does not read as one counts in one shared bucket, never in none.
    let address = Some(
        ip.and_then(|a| a.parse::<IpAddr>().ok())
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
    );
    let (membership, rx) = state
        .chat
        .join(&live_stream_id, address)
        .map_err(|refusal| match refusal {
            JoinRefusal::TooManyFromAddress => ApiError::TooManyRequests(10),
            JoinRefusal::RoomFull => ApiError::Unavailable("this chat is full".into()),
        })?;
    let chatter = Chatter {
        tenant_id: target.tenant_id,
        live_stream_id,
        color: chat::color(&viewer),
        viewer,
        name,
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
    chatter: Chatter,
    _membership: Membership,
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
    let hello = json!({"type": "welcome", "name": chatter.name, "color": chatter.color});
    if !send(&mut socket, hello.to_string()).await
        || !send(
            &mut socket,
            json!({"type": "history", "messages": views}).to_string(),
        )
        .await
    {
        return;
    }
    let mut flood = Flood::default();
    let mut ping = tokio::time::interval(PING);
    let mut heard = Instant::now();
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
            frame = socket.recv() => match frame {
                Some(Ok(Message::Text(text))) => {
                    heard = Instant::now();
                    if let Some(answer) = receive(&state, &chatter, &mut flood, &text).await
                        && !send(&mut socket, answer.to_string()).await
                    {
                        break;
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    let e = json!({"type": "error", "code": "invalid", "message": "send JSON text frames"});
                    if !send(&mut socket, e.to_string()).await { break }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => heard = Instant::now(),
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
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
}

/// What the sender is told, if anything, about frame `text`.
async fn receive(
    state: &AppState,
    chatter: &Chatter,
    flood: &mut Flood,
    text: &str,
) -> Option<serde_json::Value> {
    let invalid =
        |message: &str| Some(json!({"type": "error", "code": "invalid", "message": message}));
    let Ok(incoming) = serde_json::from_str::<Incoming>(text) else {
        return invalid("send {\"type\": \"send\", \"text\": \"…\"}");
    };
    if incoming.r#type != "send" {
        return invalid("unknown message type");
    }
    let Some(text) = incoming.text.as_deref().and_then(chat::clean_text) else {
        return invalid(&format!("a message has 1 to {} characters", chat::MAX_TEXT));
    };
    if let Err(wait) = flood.allow(Instant::now()) {
        return Some(json!({"type": "error", "code": "slow_down",
            "message": "too many messages: wait a moment", "retry_after_s": wait.as_secs_f64().ceil()}));
    }
    let db = &state.jobs.db;
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
    };
    if let Err(e) = db.insert_chat_message(&message).await {
        tracing::warn!(error = %e, "storing a chat message");
        return Some(
            json!({"type": "error", "code": "unavailable", "message": "the message could not be kept; send it again"}),
        );
    }
    let mut out = serde_json::to_value(ChatMessageView::from(&message)).expect("serializes");
    out["type"] = json!("message");
    state.chat.send(&chatter.live_stream_id, &out);
    None
}

/// A live stream's chat, hidden messages included, oldest first.
#[utoipa::path(get, path = "/v1/live-streams/{id}/chat/messages", tag = "chat", params(Page),
    security(("api_key" = [])),
    responses((status = 200, body = List<ChatMessageView>), (status = 404, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Tenant,
    Path(id): Path<String>,
    Query(page): Query<Page>,
) -> ApiResult<Json<List<ChatMessageView>>> {
    let limit = page.limit()?;
    let db = &state.jobs.db;
    db.get_live_stream(&caller.tenant_id, &id).await?;
    let items = db
        .list_chat(&caller.tenant_id, &id, page.cursor.as_deref(), limit)
        .await?;
    let views = items.iter().map(ChatMessageView::from).collect();
    Ok(Json(List::new(views, limit, |m| &m.id)))
}

/// Hide a message: it disappears for everyone in the chat at once, and from its history.
#[utoipa::path(post, path = "/v1/live-streams/{id}/chat/messages/{message_id}/hide", tag = "chat",
    security(("api_key" = [])),
    responses((status = 200, body = ChatMessageView), (status = 404, body = ErrorBody)))]
pub async fn hide(
    State(state): State<AppState>,
    caller: Tenant,
    Path((id, message_id)): Path<(String, String)>,
) -> ApiResult<Json<ChatMessageView>> {
    let message = state
        .jobs
        .db
        .hide_chat_message(&caller.tenant_id, &id, &message_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("chat message not found".into()))?;
    state
        .chat
        .send(&id, &json!({"type": "hidden", "id": message.id}));
    tracing::info!(live_stream = %id, message = %message.id, "chat message hidden");
    Ok(Json(ChatMessageView::from(&message)))
}
