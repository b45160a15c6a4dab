//! Webhook endpoints: the URLs a tenant's events are posted to, signed the Standard Webhooks
//! way, each with its delivery log and a way to send one delivery again. The events
//! themselves are committed with the changes they tell (`db::webhooks`) and sent by
//! `webhooks::Dispatcher`; [`ApiRender`] shows their objects as this API does.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Tenant;
use super::{AppState, Json, List, Page, Path, Query, rfc3339};
use crate::db::{self, EVENT_TYPES, EndpointChanges, EventObject};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::webhooks::{self, sign, target};

/// Longest endpoint description.
const MAX_DESCRIPTION: usize = 500;
/// Longest overlap of a rotated secret: 7 days.
const MAX_OVERLAP_S: i64 = 7 * 86_400;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    /// `https://` (or `http://`) URL the events are POSTed to. Loopback, private,
    /// link-local and metadata addresses are refused unless the server allows them
    /// (`webhooks.allow_private_targets`).
    #[schema(max_length = 2048)]
    pub url: String,
    /// Event types to send, or `["*"]` for all of them.
    #[schema(min_items = 1, max_items = 30)]
    pub events: Vec<String>,
    #[schema(max_length = 500)]
    pub description: Option<String>,
    /// Default true.
    pub enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEndpoint {
    #[schema(max_length = 2048)]
    pub url: Option<String>,
    #[schema(min_items = 1, max_items = 30)]
    pub events: Option<Vec<String>>,
    /// An empty string removes it.
    #[schema(max_length = 500)]
    pub description: Option<String>,
    /// `true` enables a disabled endpoint again (and forgets its failures).
    pub enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// Seconds the current secret keeps signing beside the new one (default 86400, at
    /// most 604800). Deliveries carry both signatures meanwhile.
    #[schema(minimum = 0, maximum = 604800)]
    pub overlap_s: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"id": "01a24fc2-f063-779f-8bd1-4622f568ed9a", "url": "https://example.com/ferrocast/webhooks", "description": "production receiver", "events": ["asset.ready", "live_stream.active"], "enabled": true, "disabled_reason": null, "failing_since": null, "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "previous_secret_expires_at": null, "created_at": "2026-12-07T09:08:25.316Z", "updated_at": "2026-12-07T09:08:25.316Z"}))]
pub struct WebhookEndpointView {
    pub id: String,
    pub url: String,
    pub description: Option<String>,
    pub events: Vec<String>,
    pub enabled: bool,
    /// Why it is disabled, if it is.
    pub disabled_reason: Option<String>,
    /// Since when every attempt has failed.
    pub failing_since: Option<String>,
    /// The signing secret (`whsec_…`): shown once, when made or rotated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Until when the secret before the last rotation still signs.
    pub previous_secret_expires_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

fn endpoint_view(e: db::WebhookEndpoint, secret: Option<String>) -> WebhookEndpointView {
    WebhookEndpointView {
        events: e.event_types(),
        id: e.id,
        url: e.url,
        description: e.description,
        enabled: e.enabled != 0,
        disabled_reason: e.disabled_reason,
        failing_since: e.failing_since.map(rfc3339),
        secret,
        previous_secret_expires_at: e
            .previous_until
            .filter(|&t| t > crate::clock::now_ms())
            .map(rfc3339),
        created_at: rfc3339(e.created_at),
        updated_at: rfc3339(e.updated_at),
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"id": "01a24fc3-0925-7539-916d-ea9d81044f3a", "event_id": "01a24fc3-0921-7000-8000-5ec24db101cb", "event_type": "asset.ready", "object_id": "01a24fc3-9a88-71ec-b9e8-97db0e87782c", "status": "pending", "attempts": 2, "next_attempt_at": "2026-12-07T09:10:31.000Z", "last_attempt_at": "2026-12-07T09:10:01.000Z", "last_status": 503, "last_latency_ms": 84, "last_response": "{\"error\":\"maintenance\"}", "last_error": "answered 503 Service Unavailable", "delivered_at": null, "created_at": "2026-12-07T09:09:51.000Z"}))]
pub struct DeliveryView {
    pub id: String,
    /// The event's id: the `webhook-id` of every attempt.
    pub event_id: String,
    pub event_type: String,
    /// The id of the object the event is about.
    pub object_id: String,
    /// `pending`, `delivered` or `failed` (given up).
    pub status: String,
    pub attempts: i64,
    /// When the next attempt is due, while pending.
    pub next_attempt_at: Option<String>,
    pub last_attempt_at: Option<String>,
    /// The HTTP status the endpoint answered last.
    pub last_status: Option<i64>,
    pub last_latency_ms: Option<i64>,
    /// The start of the last answer's body (up to 1 KiB).
    pub last_response: Option<String>,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
    pub delivered_at: Option<String>,
    pub created_at: String,
}

impl From<db::Delivery> for DeliveryView {
    fn from(d: db::Delivery) -> Self {
        Self {
            next_attempt_at: (d.status == "pending").then(|| rfc3339(d.next_attempt_at)),
            id: d.id,
            event_id: d.event_id,
            event_type: d.event_type,
            object_id: d.object_id,
            status: d.status,
            attempts: d.attempts,
            last_attempt_at: d.last_attempt_at.map(rfc3339),
            last_status: d.last_status,
            last_latency_ms: d.last_latency_ms,
            last_response: d.last_response,
            last_error: d.last_error,
            delivered_at: d.delivered_at.map(rfc3339),
            created_at: rfc3339(d.created_at),
        }
    }
}

/// The data of `upload.completed`: an upload that has all its bytes.
#[derive(Debug, Serialize, ToSchema)]
pub struct UploadView {
    pub id: String,
    /// The asset the file becomes.
    pub asset_id: String,
    pub size_bytes: i64,
    pub created_at: String,
    pub completed_at: Option<String>,
}

/// Event types checked and deduplicated, as stored (a JSON array).
fn event_list(events: &[String]) -> Result<String, ApiError> {
    if events.is_empty() {
        return Err(ApiError::invalid(
            "events must name at least one event type, or \"*\"",
        ));
    }
    let mut list: Vec<&str> = Vec::new();
    for e in events {
        if e != "*" && !EVENT_TYPES.contains(&e.as_str()) {
            return Err(ApiError::invalid(format!(
                "events: unknown event type; one of \"*\", {}",
                EVENT_TYPES.join(", ")
            )));
        }
        if !list.contains(&e.as_str()) {
            list.push(e);
        }
    }
    if list.contains(&"*") {
        list = vec!["*"];
    }
    Ok(serde_json::to_string(&list).expect("strings serialize"))
}

async fn checked_url(state: &AppState, raw: &str) -> Result<String, ApiError> {
    let allow = state.jobs.config.webhooks.allow_private_targets;
    let url = target::check_url(raw, allow).map_err(ApiError::invalid)?;
    target::check_resolved(&url, allow)
        .await
        .map_err(ApiError::invalid)?;
    Ok(url.to_string())
}

fn checked_description(d: Option<String>) -> Result<Option<String>, ApiError> {
    match d {
        Some(d) if d.chars().count() > MAX_DESCRIPTION => Err(ApiError::invalid(format!(
            "description is longer than {MAX_DESCRIPTION} characters"
        ))),
        Some(d) if d.is_empty() => Ok(None),
        d => Ok(d),
    }
}

/// Add an endpoint; its signing secret is in this answer only.
#[utoipa::path(post, path = "/v1/webhook-endpoints", tag = "webhooks",
    request_body(content = CreateEndpoint,
        example = json!({"url": "https://example.com/ferrocast/webhooks", "events": ["asset.ready", "live_stream.active"]})),
    security(("api_key" = [])),
    responses((status = 201, body = WebhookEndpointView), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Tenant,
    Json(body): Json<CreateEndpoint>,
) -> ApiResult<(StatusCode, Json<WebhookEndpointView>)> {
    let url = checked_url(&state, &body.url).await?;
    let events = event_list(&body.events)?;
    let description = checked_description(body.description)?;
    let id = crate::ids::new_id();
    let secret = sign::new_secret();
    let (kek_id, sealed) = state
        .jobs
        .content_keys
        .seal_secret(&webhooks::secret_aad(&id), secret.as_bytes());
    let now = crate::clock::now_ms();
    let endpoint = db::WebhookEndpoint {
        id,
        tenant_id: caller.tenant_id.clone(),
        url,
        description,
        events,
        enabled: i64::from(body.enabled.unwrap_or(true)),
        kek_id,
        secret: sealed,
        previous_kek_id: None,
        previous_secret: None,
        previous_until: None,
        failing_since: None,
        disabled_reason: None,
        created_at: now,
        updated_at: now,
    };
    state.jobs.db.create_webhook_endpoint(&endpoint).await?;
    tracing::info!(endpoint = %endpoint.id, "webhook endpoint created");
    Ok((
        StatusCode::CREATED,
        Json(endpoint_view(endpoint, Some(secret))),
    ))
}

#[utoipa::path(get, path = "/v1/webhook-endpoints", tag = "webhooks", params(Page),
    security(("api_key" = [])), responses((status = 200, body = List<WebhookEndpointView>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Tenant,
    Query(page): Query<Page>,
) -> ApiResult<Json<List<WebhookEndpointView>>> {
    let limit = page.limit()?;
    let items = state
        .jobs
        .db
        .list_webhook_endpoints(&caller.tenant_id, page.cursor.as_deref(), limit)
        .await?;
    let views = items.into_iter().map(|e| endpoint_view(e, None)).collect();
    Ok(Json(List::new(views, limit, |e| &e.id)))
}

#[utoipa::path(get, path = "/v1/webhook-endpoints/{id}", tag = "webhooks",
    security(("api_key" = [])),
    responses((status = 200, body = WebhookEndpointView), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Tenant,
    Path(id): Path<String>,
) -> ApiResult<Json<WebhookEndpointView>> {
    let e = state
        .jobs
        .db
        .get_webhook_endpoint(&caller.tenant_id, &id)
        .await?;
    Ok(Json(endpoint_view(e, None)))
}

/// Change an endpoint's URL, events or description, or disable and enable it.
#[utoipa::path(patch, path = "/v1/webhook-endpoints/{id}", tag = "webhooks",
    request_body(content = UpdateEndpoint, example = json!({"enabled": true})),
    security(("api_key" = [])),
    responses((status = 200, body = WebhookEndpointView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    caller: Tenant,
    Path(id): Path<String>,
    Json(body): Json<UpdateEndpoint>,
) -> ApiResult<Json<WebhookEndpointView>> {
    let url = match &body.url {
        Some(u) => Some(checked_url(&state, u).await?),
        None => None,
    };
    let events = body.events.as_deref().map(event_list).transpose()?;
    let description = match body.description {
        Some(d) => Some(checked_description(Some(d))?),
        None => None,
    };
    let changes = EndpointChanges {
        url: url.as_deref(),
        events: events.as_deref(),
        description: description.as_ref().map(Option::as_deref),
        enabled: body.enabled,
    };
    let e = state
        .jobs
        .db
        .update_webhook_endpoint(&caller.tenant_id, &id, &changes)
        .await?;
    Ok(Json(endpoint_view(e, None)))
}

/// Delete an endpoint with its delivery log; nothing more is sent to it.
#[utoipa::path(delete, path = "/v1/webhook-endpoints/{id}", tag = "webhooks",
    security(("api_key" = [])),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Tenant,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state
        .jobs
        .db
        .delete_webhook_endpoint(&caller.tenant_id, &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new signing secret (in this answer only); the current one keeps signing beside it
/// for `overlap_s`.
#[utoipa::path(post, path = "/v1/webhook-endpoints/{id}/rotate-secret", tag = "webhooks",
    request_body(content = RotateSecret, example = json!({"overlap_s": 86400})),
    security(("api_key" = [])),
    responses((status = 200, body = WebhookEndpointView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    caller: Tenant,
    Path(id): Path<String>,
    Json(body): Json<RotateSecret>,
) -> ApiResult<Json<WebhookEndpointView>> {
    let overlap = body.overlap_s.unwrap_or(86_400);
    if !(0..=MAX_OVERLAP_S).contains(&overlap) {
        return Err(ApiError::invalid(format!(
            "overlap_s must be between 0 and {MAX_OVERLAP_S}"
        )));
    }
    let db = &state.jobs.db;
    db.get_webhook_endpoint(&caller.tenant_id, &id).await?;
    let secret = sign::new_secret();
    let (kek_id, sealed) = state
        .jobs
        .content_keys
        .seal_secret(&webhooks::secret_aad(&id), secret.as_bytes());
    let until = crate::clock::now_ms() + overlap * 1000;
    let e = db
        .rotate_webhook_secret(&caller.tenant_id, &id, &kek_id, &sealed, until)
        .await?;
    tracing::info!(endpoint = %id, overlap_s = overlap, "webhook secret rotated");
    Ok(Json(endpoint_view(e, Some(secret))))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryFilter {
    /// Only deliveries with this status.
    #[param(inline)]
    pub status: Option<DeliveryStatus>,
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
}

/// An endpoint's delivery log, oldest first.
#[utoipa::path(get, path = "/v1/webhook-endpoints/{id}/deliveries", tag = "webhooks",
    params(DeliveryFilter), security(("api_key" = [])),
    responses((status = 200, body = List<DeliveryView>), (status = 404, body = ErrorBody)))]
pub async fn deliveries(
    State(state): State<AppState>,
    caller: Tenant,
    Path(id): Path<String>,
    Query(f): Query<DeliveryFilter>,
) -> ApiResult<Json<List<DeliveryView>>> {
    let limit = Page {
        limit: f.limit,
        cursor: None,
    }
    .limit()?;
    let db = &state.jobs.db;
    db.get_webhook_endpoint(&caller.tenant_id, &id).await?;
    let status = f.status.map(|s| match s {
        DeliveryStatus::Pending => "pending",
        DeliveryStatus::Delivered => "delivered",
        DeliveryStatus::Failed => "failed",
    });
    let items = db
        .list_deliveries(&id, status, f.cursor.as_deref(), limit)
        .await?;
    let views = items.into_iter().map(DeliveryView::from).collect();
    Ok(Json(List::new(views, limit, |d| &d.id)))
}

#[utoipa::path(get, path = "/v1/webhook-endpoints/{id}/deliveries/{delivery_id}",
    tag = "webhooks", security(("api_key" = [])),
    responses((status = 200, body = DeliveryView), (status = 404, body = ErrorBody)))]
pub async fn delivery(
    State(state): State<AppState>,
    caller: Tenant,
    Path((id, delivery_id)): Path<(String, String)>,
) -> ApiResult<Json<DeliveryView>> {
    let db = &state.jobs.db;
    db.get_webhook_endpoint(&caller.tenant_id, &id).await?;
    Ok(Json(db.get_delivery(&id, &delivery_id).await?.into()))
}

/// Send one delivery again now (delivered or not), with the same event and `webhook-id`.
#[utoipa::path(post, path = "/v1/webhook-endpoints/{id}/deliveries/{delivery_id}/retry",
    tag = "webhooks", security(("api_key" = [])),
    responses((status = 202, body = DeliveryView), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn retry(
    State(state): State<AppState>,
    caller: Tenant,
    Path((id, delivery_id)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<DeliveryView>)> {
    let db = &state.jobs.db;
    let endpoint = db.get_webhook_endpoint(&caller.tenant_id, &id).await?;
    if endpoint.enabled == 0 {
        return Err(ApiError::Conflict(
            "the endpoint is disabled: enable it first (PATCH enabled: true)".into(),
        ));
    }
    let d = db.retry_delivery(&id, &delivery_id).await?;
    Ok((StatusCode::ACCEPTED, Json(d.into())))
}

/// Shows events' objects as the API's own answers do.
pub struct ApiRender {
    pub rtmp_url: String,
}

impl webhooks::Render for ApiRender {
    fn data(&self, object: &EventObject) -> serde_json::Value {
        let value = match object.clone() {
            EventObject::Asset(a) => serde_json::to_value(super::assets::asset_view(a, None, None)),
            // Without its stream key: a secret that lets anyone broadcast has no place in a
            // message sent to another server and kept in its logs.
            EventObject::LiveStream(s) => {
                serde_json::to_value(super::live::LiveStreamView::new(s, &self.rtmp_url)).map(
                    |mut v| {
                        if let Some(o) = v.as_object_mut() {
                            o.remove("stream_key");
                        }
                        v
                    },
                )
            }
            EventObject::Upload(u) => serde_json::to_value(UploadView {
                id: u.id,
                asset_id: u.asset_id,
                size_bytes: u.length,
                created_at: rfc3339(u.created_at),
                completed_at: u.completed_at.map(rfc3339),
            }),
            EventObject::Order { order, lines } => {
                serde_json::to_value(super::orders::order_view_of(order, lines))
            }
            EventObject::Subscription(s) => {
                serde_json::to_value(super::subscriptions::SubscriptionView::from(s))
            }
            EventObject::Entitlement(e) => {
                serde_json::to_value(super::security::EntitlementView::from(e))
            }
            EventObject::WebhookEndpoint(e) => serde_json::to_value(endpoint_view(e, None)),
        };
        value.expect("views serialize")
    }
}
