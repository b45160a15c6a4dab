//! The chat's REST side: the creator reads a stream's chat, hides messages, times out and
//! bans their senders, and sets the chat's rules (slow mode, entitled-only, moderators); a
//! recording's player fetches the chat of its broadcast to replay it. Moderators do the same
//! over the WebSocket (`api::chat`), through the functions here.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::access::{ClientIp, Shown, TokenQuery, authorize, token_from};
use super::auth::Tenant;
use super::chat::ChatMessageView;
use super::{AppState, Json, List, Page, Path, Query, rfc3339};
use crate::db::{ChatBan, ChatRules};
use crate::error::{ApiError, ApiResult, ErrorBody};

/// The longest slow mode: an hour between messages.
const MAX_SLOW_MODE_S: i64 = 3600;
/// Moderators one stream may name.
const MAX_MODERATORS: usize = 100;
/// The longest timeout: a week (longer is a ban).
const MAX_TIMEOUT_S: i64 = 7 * 86_400;
/// Messages one replay page holds.
const REPLAY_PAGE: i64 = 500;

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

/// Hides message `id`: it disappears for everyone in the chat at once.
pub(super) async fn hide_message(
    state: &AppState,
    tenant_id: &str,
    live_stream_id: &str,
    id: &str,
) -> ApiResult<ChatMessageView> {
    let message = state
        .jobs
        .db
        .hide_chat_message(tenant_id, live_stream_id, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("chat message not found".into()))?;
    state
        .chat
        .send(live_stream_id, &json!({"type": "hidden", "id": message.id}));
    tracing::info!(live_stream = %live_stream_id, message = %message.id, "chat message hidden");
    Ok(ChatMessageView::from(&message))
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
    Ok(Json(
        hide_message(&state, &caller.tenant_id, &id, &message_id).await?,
    ))
}

/// Times out (`timeout_s`) or bans (`None`) the sender of message `message_id`, hides their
/// messages, and tells the room. A moderator (`by_moderator`) cannot ban another moderator.
pub(super) async fn ban_by_message(
    state: &AppState,
    tenant_id: &str,
    live_stream_id: &str,
    message_id: &str,
    timeout_s: Option<i64>,
    reason: Option<&str>,
    by_moderator: bool,
) -> ApiResult<ChatBan> {
    if let Some(s) = timeout_s
        && !(1..=MAX_TIMEOUT_S).contains(&s)
    {
        return Err(ApiError::invalid(format!(
            "a timeout lasts 1 to {MAX_TIMEOUT_S} s (longer: a ban)"
        )));
    }
    if let Some(r) = reason
        && r.chars().count() > 500
    {
        return Err(ApiError::invalid("reason has at most 500 characters"));
    }
    let db = &state.jobs.db;
    let message = db
        .chat_message(tenant_id, live_stream_id, message_id)
        .await?
        .filter(|m| !m.sender.is_empty())
        .ok_or_else(|| ApiError::NotFound("chat message not found".into()))?;
    let moderates = |rules: &ChatRules| {
        message
            .sender
            .strip_prefix("viewer:")
            .is_some_and(|v| rules.moderators.iter().any(|m| m == v))
    };
    if by_moderator && moderates(&db.chat_rules(live_stream_id).await?) {
        return Err(ApiError::Forbidden(
            "moderators cannot ban moderators: the creator can".into(),
        ));
    }
    let until = timeout_s.map(|s| crate::clock::now_ms() + s * 1000);
    let ban = db
        .ban_chat_sender(
            tenant_id,
            live_stream_id,
            &message.sender,
            &message.address,
            &message.name,
            until,
            reason,
            by_moderator,
        )
        .await?;
    let hidden = db
        .hide_chat_messages_of(tenant_id, live_stream_id, &message.sender)
        .await?;
    for id in &hidden {
        state
            .chat
            .send(live_stream_id, &json!({"type": "hidden", "id": id}));
    }
    let action = if until.is_some() { "timeout" } else { "ban" };
    state.chat.send(
        live_stream_id,
        &json!({"type": "moderation", "action": action, "name": message.name,
            "until": until.map(rfc3339)}),
    );
    tracing::info!(live_stream = %live_stream_id, %action, hidden = hidden.len(), "chat sender banned");
    Ok(ban)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBan {
    /// A message of the viewer to ban: its sender is banned (signed-in viewers by their
    /// `viewer`, anonymous ones by their address).
    pub message_id: String,
    /// Seconds of timeout (1 to 604800); none: a ban until lifted.
    pub duration_s: Option<i64>,
    #[schema(max_length = 500)]
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"id": "01a25a4e-1c3d-7e0f-8a9b-0c1d2e3f4a5b", "name": "viewer-Xq2P",
    "until": "2026-12-07T10:05:00Z", "reason": "spam", "created_at": "2026-12-07T09:55:00Z"}))]
pub struct ChatBanView {
    pub id: String,
    /// The name they chatted under.
    pub name: String,
    /// The end of a timeout; null for a ban.
    pub until: Option<String>,
    pub reason: Option<String>,
    pub created_at: String,
}

impl From<ChatBan> for ChatBanView {
    fn from(b: ChatBan) -> Self {
        Self {
            id: b.id,
            name: b.name,
            until: b.until.map(rfc3339),
            reason: b.reason,
            created_at: rfc3339(b.created_at),
        }
    }
}

/// Time out or ban the sender of a message: their messages are hidden, and they can no longer
/// write (they can still read).
#[utoipa::path(post, path = "/v1/live-streams/{id}/chat/bans", tag = "chat",
    request_body(content = CreateBan, example = json!({"message_id": "01a24fd0-6f1e-7d2a-9c41-0b2f6c8e1a11", "duration_s": 600, "reason": "spam"})),
    security(("api_key" = [])),
    responses((status = 201, body = ChatBanView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn create_ban(
    State(state): State<AppState>,
    caller: Tenant,
    Path(id): Path<String>,
    Json(body): Json<CreateBan>,
) -> ApiResult<(StatusCode, Json<ChatBanView>)> {
    state
        .jobs
        .db
        .get_live_stream(&caller.tenant_id, &id)
        .await?;
    let ban = ban_by_message(
        &state,
        &caller.tenant_id,
        &id,
        &body.message_id,
        body.duration_s,
        body.reason.as_deref(),
        false,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(ban.into())))
}

/// The bans and timeouts in force, newest first.
#[utoipa::path(get, path = "/v1/live-streams/{id}/chat/bans", tag = "chat",
    security(("api_key" = [])),
    responses((status = 200, body = Vec<ChatBanView>), (status = 404, body = ErrorBody)))]
pub async fn list_bans(
    State(state): State<AppState>,
    caller: Tenant,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<ChatBanView>>> {
    let db = &state.jobs.db;
    db.get_live_stream(&caller.tenant_id, &id).await?;
    let bans = db.chat_bans(&caller.tenant_id, &id).await?;
    Ok(Json(bans.into_iter().map(ChatBanView::from).collect()))
}

/// Lift a ban or timeout.
#[utoipa::path(delete, path = "/v1/live-streams/{id}/chat/bans/{ban_id}", tag = "chat",
    security(("api_key" = [])),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn lift_ban(
    State(state): State<AppState>,
    caller: Tenant,
    Path((id, ban_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    if state
        .jobs
        .db
        .lift_chat_ban(&caller.tenant_id, &id, &ban_id)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("ban not found".into()))
    }
}

/// A stream's chat rules.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"slow_mode_s": 10, "entitled_only": false, "moderators": ["cus_42"]}))]
pub struct ChatRulesBody {
    /// Seconds each viewer waits between messages, 0 (off) to 3600.
    pub slow_mode_s: i64,
    /// Only viewers holding an entitlement to the stream may write.
    pub entitled_only: bool,
    /// Viewer ids (tokens' `viewer`) who moderate: they hide messages, time out and ban
    /// over the WebSocket, and are exempt from the limits. At most 100.
    pub moderators: Vec<String>,
}

impl From<ChatRules> for ChatRulesBody {
    fn from(r: ChatRules) -> Self {
        Self {
            slow_mode_s: r.slow_mode_s,
            entitled_only: r.entitled_only,
            moderators: r.moderators,
        }
    }
}

/// The stream's chat rules.
#[utoipa::path(get, path = "/v1/live-streams/{id}/chat/rules", tag = "chat",
    security(("api_key" = [])),
    responses((status = 200, body = ChatRulesBody), (status = 404, body = ErrorBody)))]
pub async fn get_rules(
    State(state): State<AppState>,
    caller: Tenant,
    Path(id): Path<String>,
) -> ApiResult<Json<ChatRulesBody>> {
    let db = &state.jobs.db;
    db.get_live_stream(&caller.tenant_id, &id).await?;
    Ok(Json(db.chat_rules(&id).await?.into()))
}

/// Set the stream's chat rules; every viewer in the chat is told at once.
#[utoipa::path(put, path = "/v1/live-streams/{id}/chat/rules", tag = "chat", request_body = ChatRulesBody,
    security(("api_key" = [])),
    responses((status = 200, body = ChatRulesBody), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn put_rules(
    State(state): State<AppState>,
    caller: Tenant,
    Path(id): Path<String>,
    Json(body): Json<ChatRulesBody>,
) -> ApiResult<Json<ChatRulesBody>> {
    if !(0..=MAX_SLOW_MODE_S).contains(&body.slow_mode_s) {
        return Err(ApiError::invalid(format!(
            "slow_mode_s must be 0 to {MAX_SLOW_MODE_S}"
        )));
    }
    let mut moderators = body.moderators;
    moderators.sort();
    moderators.dedup();
    if moderators.len() > MAX_MODERATORS
        || moderators
            .iter()
            .any(|m| m.is_empty() || m.len() > 200 || m.chars().any(char::is_control))
    {
        return Err(ApiError::invalid(format!(
            "at most {MAX_MODERATORS} moderators, each a viewer id of 1 to 200 characters"
        )));
    }
    let db = &state.jobs.db;
    db.get_live_stream(&caller.tenant_id, &id).await?;
    let rules = ChatRules {
        slow_mode_s: body.slow_mode_s,
        entitled_only: body.entitled_only,
        moderators,
    };
    db.set_chat_rules(&caller.tenant_id, &id, &rules).await?;
    state.chat.send(
        &id,
        &json!({"type": "rules", "slow_mode_s": rules.slow_mode_s, "entitled_only": rules.entitled_only}),
    );
    Ok(Json(rules.into()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReplayQuery {
    /// The playback token, for a signed recording.
    pub token: Option<String>,
    /// The last message id of the page before.
    pub after: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Replay {
    /// Visible messages in the order sent, with `at_ms` on the broadcast's clock (its
    /// `EXT-X-PROGRAM-DATE-TIME`): a player shows each when the video reaches that time.
    pub messages: Vec<ChatMessageView>,
    /// Pass as `after` for the next page; null on the last.
    pub next_after: Option<String>,
}

/// The chat of the broadcast a playback id plays (a recording, or a live stream's current or
/// last broadcast), for replaying in step with the video: allowed to whoever may play it.
#[utoipa::path(get, path = "/chat/{playback_id}/replay", tag = "chat", params(ReplayQuery),
    responses((status = 200, body = Replay), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn replay(
    State(state): State<AppState>,
    Path(playback_id): Path<String>,
    Query(q): Query<ReplayQuery>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> ApiResult<Json<Replay>> {
    let token = TokenQuery {
        token: q.token.clone(),
        cmcd: None,
    };
    // What paid media says in its chat is for those who bought it, as the media is.
    let token = token_from(&token, &headers);
    let (target, _) = authorize(
        &state,
        &playback_id,
        token.as_deref(),
        crate::drm::AUD_VIDEO,
        Shown::Clear,
        &headers,
        ip.as_deref(),
    )
    .await?;
    let messages = match &target.prefix {
        Some(prefix) => {
            state
                .jobs
                .db
                .broadcast_chat(prefix, q.after.as_deref(), REPLAY_PAGE)
                .await?
        }
        None => Vec::new(),
    };
    let next_after = (messages.len() as i64 == REPLAY_PAGE)
        .then(|| messages.last().map(|m| m.id.clone()))
        .flatten();
    Ok(Json(Replay {
        messages: messages.iter().map(ChatMessageView::from).collect(),
        next_after,
    }))
}
