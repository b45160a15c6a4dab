//! Revenue in the analytics query API: `GET /v1/analytics/revenue?group_by=…&timeframe=…`,
//! from paid orders' frozen lines (commerce/revenue.rs), with conversion (buyers per view) per
//! playback id from the viewer analytics roll-ups.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::analytics::{Timeframe, timeframe};
use super::auth::Tenant;
use super::{AppState, Json, Query, rfc3339};
use crate::commerce::revenue::{GroupBy, group};
use crate::error::{ApiError, ApiResult, ErrorBody};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RevenueQuery {
    /// `product` (default), `day` (UTC) or `playback_id`.
    pub group_by: Option<String>,
    /// `24h`, `7d`, `30d`, or `FROM..TO` in RFC 3339 (default `30d`): orders paid in it.
    pub timeframe: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RevenueRow {
    /// The product id, the day (`2026-12-07`) or the playback id (`*`: all-content products).
    pub key: String,
    pub name: Option<String>,
    /// Amounts are in this currency's minor units; currencies are never added together.
    pub currency: String,
    pub orders: i64,
    /// Distinct buyers.
    pub purchases: i64,
    pub gross: i64,
    pub refunded: i64,
    pub net: i64,
    /// By playback id: views started in the timeframe, and purchases ÷ views.
    pub views: Option<i64>,
    pub conversion: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RevenueReport {
    pub group_by: String,
    pub timeframe: Timeframe,
    pub data: Vec<RevenueRow>,
}

/// Revenue, refunds and conversion.
#[utoipa::path(get, path = "/v1/analytics/revenue", tag = "analytics", params(RevenueQuery),
    security(("api_key" = [])),
    responses((status = 200, body = RevenueReport), (status = 400, body = ErrorBody)))]
pub async fn revenue(
    State(state): State<AppState>,
    caller: Tenant,
    Query(q): Query<RevenueQuery>,
) -> ApiResult<Json<RevenueReport>> {
    let by_name = q.group_by.as_deref().unwrap_or("product");
    let by = GroupBy::parse(by_name)
        .ok_or_else(|| ApiError::invalid("group_by must be product, day or playback_id"))?;
    let (from, to) = timeframe(
        Some(q.timeframe.as_deref().unwrap_or("30d")),
        crate::clock::now_ms(),
    )?;
    let db = &state.jobs.db;
    let lines = db.revenue_lines(&caller.tenant_id, from, to).await?;
    let grants = if by == GroupBy::PlaybackId {
        db.product_playback_ids(&caller.tenant_id).await?
    } else {
        Vec::new()
    };
    let views: std::collections::HashMap<String, i64> = if by == GroupBy::PlaybackId {
        db.views_by_playback_id(&caller.tenant_id, from, to)
            .await?
            .into_iter()
            .collect()
    } else {
        Default::default()
    };
    let data = group(&lines, by, &grants)
        .into_iter()
        .map(|r| {
            let v = (by == GroupBy::PlaybackId).then(|| views.get(&r.key).copied().unwrap_or(0));
            RevenueRow {
                conversion: v.filter(|v| *v > 0).map(|v| r.purchases as f64 / v as f64),
                views: v,
                key: r.key,
                name: r.name,
                currency: r.currency.to_ascii_lowercase(),
                orders: r.orders,
                purchases: r.purchases,
                gross: r.gross,
                refunded: r.refunded,
                net: r.net,
            }
        })
        .collect();
    Ok(Json(RevenueReport {
        group_by: by_name.to_string(),
        timeframe: Timeframe {
            from: rfc3339(from),
            to: rfc3339(to),
        },
        data,
    }))
}
