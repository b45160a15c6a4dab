//! Subscriptions bought at checkout: listed as their provider last described them, and
//! canceled through it (at the period's end by default: the subscriber keeps what they paid
//! for; the provider's `customer.subscription.deleted` then ends the access).

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Tenant;
use super::orders::{provider_error, provider_of};
use super::{AppState, Json, List, Page, Path, Query, rfc3339};
use crate::db;
use crate::error::{ApiResult, ErrorBody};

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"id": "01a24fa8-d6c0-7000-8000-230d6e5d3b99", "order_id": "01a24fa8-19c9-71b3-8de8-068bc561d804", "customer_id": "01a24fa8-d69c-7735-8a8d-432404f0ec3b", "provider": "stripe", "provider_subscription": "sub_1QxYz2", "status": "active", "current_period_end": "2027-01-06T08:40:33Z", "cancel_at_period_end": false, "created_at": "2026-12-07T08:39:54.814Z"}))]
pub struct SubscriptionView {
    pub id: String,
    pub order_id: String,
    pub customer_id: String,
    pub provider: String,
    /// The provider's id (`sub_…`).
    pub provider_subscription: String,
    /// The provider's status: `trialing`, `active`, `past_due`, `canceled`, …
    pub status: String,
    /// The end of the period paid for.
    pub current_period_end: Option<String>,
    pub cancel_at_period_end: bool,
    pub created_at: String,
}

impl From<db::Subscription> for SubscriptionView {
    fn from(s: db::Subscription) -> Self {
        Self {
            id: s.id,
            order_id: s.order_id,
            customer_id: s.customer_id,
            provider: s.provider,
            provider_subscription: s.provider_ref,
            status: s.status,
            current_period_end: s.current_period_end.map(rfc3339),
            cancel_at_period_end: s.cancel_at_period_end != 0,
            created_at: rfc3339(s.created_at),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SubscriptionFilter {
    pub customer_id: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/subscriptions", tag = "commerce", params(SubscriptionFilter),
    security(("api_key" = [])), responses((status = 200, body = List<SubscriptionView>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Tenant,
    Query(f): Query<SubscriptionFilter>,
) -> ApiResult<Json<List<SubscriptionView>>> {
    let limit = Page {
        limit: f.limit,
        cursor: None,
    }
    .limit()?;
    let items = state
        .jobs
        .db
        .list_subscriptions(
            &caller.tenant_id,
            f.customer_id.as_deref(),
            f.cursor.as_deref(),
            limit,
        )
        .await?;
    let views: Vec<SubscriptionView> = items.into_iter().map(Into::into).collect();
    Ok(Json(List::new(views, limit, |s| &s.id)))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Cancel {
    /// `true` (default): at the end of the period paid for; `false`: now.
    pub at_period_end: Option<bool>,
}

/// Cancel a subscription through its provider.
#[utoipa::path(post, path = "/v1/subscriptions/{id}/cancel", tag = "commerce",
    request_body(content = Cancel, example = json!({"at_period_end": true})),
    security(("api_key" = [])),
    responses((status = 200, body = SubscriptionView), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Tenant,
    Path(id): Path<String>,
    Json(body): Json<Cancel>,
) -> ApiResult<Json<SubscriptionView>> {
    let db = &state.jobs.db;
    let sub = db.get_subscription(&caller.tenant_id, &id).await?;
    let client = provider_of(&state, &caller.tenant_id, &sub.provider).await?;
    let (status, at_end) = client
        .cancel_subscription(&sub.provider_ref, body.at_period_end.unwrap_or(true))
        .await
        .map_err(provider_error)?;
    db.set_subscription_cancel(&sub.id, &status, at_end).await?;
    let sub = db.get_subscription(&caller.tenant_id, &id).await?;
    if sub.status == "canceled" {
        let grace = state.jobs.config.commerce.subscription_grace_s as i64 * 1000;
        db.apply_subscription_access(&sub, grace).await?;
    }
    Ok(Json(sub.into()))
}
