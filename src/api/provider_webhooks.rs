//! Payment provider events in: `POST /v1/webhooks/{provider}/{tenant_id}` for Stripe
//! (`Stripe-Signature`), PayPal (verified with PayPal) and Coinbase Commerce
//! (`X-CC-Webhook-Signature`). Every delivery is stored raw with its verification result; a
//! verified event is processed once by its id (a second copy, concurrent or late, is
//! answered 200 and changes nothing), and events may come in any order
//! (commerce/fulfil.rs). A failed processing answers 500 (or 503 when a provider call it
//! needs failed) so the provider retries, and the retry takes the event over. Stored events
//! can be listed and replayed.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::Tenant;
use super::orders::{provider_error, provider_of};
use super::{AppState, Json, List, Page, Path, Query, rfc3339};
use crate::commerce::fulfil::{self, FulfilError};
use crate::commerce::provider::{NAMES, PaymentProvider, ProviderEvent, VerifyError};
use crate::db;
use crate::error::{ApiError, ApiResult, ErrorBody};

/// The largest delivery taken (providers' events are a few KiB).
pub const MAX_BYTES: usize = 256 * 1024;
/// What is kept of a delivery that failed verification.
const UNVERIFIED_KEEP: usize = 16 * 1024;
/// How many deliveries that fail verification are stored per tenant and provider: one a
/// second on average, 30 at once. A flood of forged deliveries past that is refused
/// unrecorded (and counted in `ferrocast_webhooks_in_total`).
pub fn unverified_webhook_limiter() -> crate::drm::ratelimit::RateLimiter {
    crate::drm::ratelimit::RateLimiter::new(1.0, 30)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Received {
    pub received: bool,
    /// The event was seen before: nothing was done again.
    pub duplicate: bool,
    /// What processing did.
    pub result: Option<String>,
}

/// A provider's events for a tenant: `stripe`, `paypal` or `coinbase`, each verified by
/// its own scheme against the tenant's settings.
#[utoipa::path(post, path = "/v1/webhooks/{provider}/{tenant_id}", tag = "commerce",
    request_body(content = String, description = "An event, as the provider sends it",
        example = json!("{\"id\":\"evt_1\",\"type\":\"checkout.session.completed\",\"data\":{\"object\":{}}}")),
    responses((status = 200, body = Received), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn receive(
    State(state): State<AppState>,
    Path((provider, tenant_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Received>> {
    let db = &state.jobs.db;
    if !NAMES.contains(&provider.as_str()) {
        return Err(ApiError::NotFound("no such payment provider".into()));
    }
    let client = match provider_of(&state, &tenant_id, &provider).await {
        Ok(c) => c,
        Err(ApiError::Conflict(_)) => {
            return Err(ApiError::NotFound(format!(
                "no {provider} account is set up here"
            )));
        }
        Err(e) => return Err(e),
    };
    let name = client.name();
    let text = String::from_utf8_lossy(&body);
    let now_s = crate::clock::now_ms() / 1000;
    let refuse = async |error: &str| -> ApiResult<()> {
        metrics::counter!("ferrocast_webhooks_in_total", "provider" => name, "result" => "unverified")
            .increment(1);
        if state
            .unverified_webhooks
            .check(&format!("{tenant_id}/{name}"))
            .is_err()
        {
            return Ok(());
        }
        let kept: String = text.chars().take(UNVERIFIED_KEEP).collect();
        db.store_unverified_event(&tenant_id, name, &kept, error)
            .await?;
        Ok(())
    };
    match client.verify(&headers, &body, now_s).await {
        Ok(()) => {}
        Err(VerifyError::Invalid(e)) => {
            refuse(&e).await?;
            return Err(ApiError::invalid(format!("signature: {e}")));
        }
        Err(VerifyError::Unavailable(e)) => {
            tracing::warn!(provider = name, error = %e, "webhook verification unavailable; the provider retries");
            return Err(ApiError::Unavailable(format!(
                "the delivery could not be verified now: {e}"
            )));
        }
    }
    let Some(event) = client.parse(&body) else {
        refuse(&format!("not a {name} event")).await?;
        return Err(ApiError::invalid(format!("the body is not a {name} event")));
    };
    let claim = db
        .claim_event(&tenant_id, name, &event.id, &event.kind, &text)
        .await?;
    let id = match claim {
        db::Inbox::Duplicate => {
            metrics::counter!("ferrocast_webhooks_in_total", "provider" => name, "result" => "duplicate")
                .increment(1);
            return Ok(Json(Received {
                received: true,
                duplicate: true,
                result: None,
            }));
        }
        db::Inbox::Claimed(id) | db::Inbox::Reclaimed(id) => id,
    };
    process(&state, client.as_ref(), &tenant_id, &id, &event)
        .await
        .map(|result| {
            Json(Received {
                received: true,
                duplicate: false,
                result: Some(result),
            })
        })
}

/// Applies a claimed event and records the outcome; an error leaves it to be claimed again.
async fn process(
    state: &AppState,
    provider: &dyn PaymentProvider,
    tenant_id: &str,
    id: &str,
    event: &ProviderEvent,
) -> ApiResult<String> {
    let db = &state.jobs.db;
    let name = provider.name();
    let grace_ms = state
        .jobs
        .config
        .commerce
        .subscription_grace_s
        .min(365 * 86400) as i64
        * 1000;
    match fulfil::apply(db, provider, tenant_id, event, grace_ms).await {
        Ok(result) => {
            db.finish_event(id, true, &result).await?;
            tracing::info!(provider = name, event = %event.id, kind = %event.kind, %result, "provider event processed");
            metrics::counter!("ferrocast_webhooks_in_total", "provider" => name, "result" => "processed")
                .increment(1);
            Ok(result)
        }
        Err(e) => {
            let message = format!("failed: {e}");
            let _ = db.finish_event(id, false, &message).await;
            tracing::warn!(provider = name, event = %event.id, error = %e, "provider event failed; the retry takes it");
            metrics::counter!("ferrocast_webhooks_in_total", "provider" => name, "result" => "failed")
                .increment(1);
            Err(match e {
                FulfilError::Db(e) => e.into(),
                FulfilError::Provider(e) => provider_error(e),
                FulfilError::NotYet(m) => ApiError::Unavailable(m),
            })
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookEventView {
    pub id: String,
    pub provider: String,
    /// The provider's event id (none for a delivery that failed verification).
    pub event_id: Option<String>,
    pub r#type: Option<String>,
    pub verified: bool,
    /// Why verification failed.
    pub error: Option<String>,
    pub received_at: String,
    pub processed_at: Option<String>,
    pub result: Option<String>,
}

impl From<db::WebhookEvent> for WebhookEventView {
    fn from(e: db::WebhookEvent) -> Self {
        Self {
            id: e.id,
            provider: e.provider,
            event_id: e.event_id,
            r#type: e.r#type,
            verified: e.verified != 0,
            error: e.error,
            received_at: rfc3339(e.received_at),
            processed_at: e.processed_at.map(rfc3339),
            result: e.result,
        }
    }
}

/// The payment provider events received, verified or not.
#[utoipa::path(get, path = "/v1/webhook-events", tag = "commerce", params(Page), security(("api_key" = [])),
    responses((status = 200, body = List<WebhookEventView>)))]
pub async fn list_events(
    State(state): State<AppState>,
    caller: Tenant,
    Query(page): Query<Page>,
) -> ApiResult<Json<List<WebhookEventView>>> {
    let limit = page.limit()?;
    let items = state
        .jobs
        .db
        .list_webhook_events(&caller.tenant_id, page.cursor.as_deref(), limit)
        .await?;
    let views: Vec<WebhookEventView> = items.into_iter().map(Into::into).collect();
    Ok(Json(List::new(views, limit, |e| &e.id)))
}

/// Process a stored, verified event again (after fixing what made it fail). Processing is
/// idempotent: a replay of a processed event changes nothing.
#[utoipa::path(post, path = "/v1/webhook-events/{id}/replay", tag = "commerce", security(("api_key" = [])),
    responses((status = 200, body = WebhookEventView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn replay(
    State(state): State<AppState>,
    caller: Tenant,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<WebhookEventView>)> {
    let db = &state.jobs.db;
    let stored = db.claim_for_replay(&caller.tenant_id, &id).await?;
    let client = provider_of(&state, &caller.tenant_id, &stored.provider).await?;
    let Some(event) = client.parse(stored.body.as_bytes()) else {
        db.finish_event(&id, true, "not an event of its provider")
            .await?;
        return Err(ApiError::Conflict(
            "the stored body is not an event of its provider".into(),
        ));
    };
    process(&state, client.as_ref(), &caller.tenant_id, &id, &event).await?;
    Ok((
        StatusCode::OK,
        Json(db.get_webhook_event(&caller.tenant_id, &id).await?.into()),
    ))
}
