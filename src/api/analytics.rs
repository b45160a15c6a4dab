//! Viewer analytics over HTTP: beacons in (public, checked field by field, queued without
//! waiting on SQL) and a tenant's views out.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::access::{ClientIp, viewer_country};
use super::auth::Tenant;
use super::{AppState, Json, List, Page, Path, Query, rfc3339};
use crate::analytics::view::Summary;
use crate::analytics::{Arrival, Dimensions, agent, beacon};
use crate::db::StoredView;
use crate::error::{ApiError, ApiResult, ErrorBody};

/// Accepted: the batch is queued.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    pub accepted: usize,
}

/// Record a player's events (the `/player/ferrocast-data.js` script sends them): one view's
/// batch of up to 300 events and 500 KB, as JSON (`text/plain` too, so no preflight).
/// Public: the playback id must exist. 202 once queued; 503 when the queue is full.
#[utoipa::path(post, path = "/v1/beacons", tag = "analytics",
    responses((status = 202, body = Accepted), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn beacons(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let taken = match body {
        Ok(body) => take_beacons(&state, ip.as_deref(), &headers, &body).await,
        // Past the route's body limit the body is refused unread.
        Err(_) => Err(too_large()),
    };
    let mut response = match taken {
        Ok(accepted) => (StatusCode::ACCEPTED, Json(accepted)).into_response(),
        Err(e) => e.into_response(),
    };
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

fn too_large() -> ApiError {
    ApiError::PayloadTooLarge(format!("a batch is {} bytes at most", beacon::MAX_BYTES))
}

async fn take_beacons(
    state: &AppState,
    ip: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Accepted> {
    if body.len() > beacon::MAX_BYTES {
        return Err(too_large());
    }
    let now = crate::clock::now_ms();
    let batch = beacon::parse(body, now).map_err(|e| ApiError::invalid(e.to_string()))?;
    let target = state
        .jobs
        .db
        .playback_target(&batch.playback_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("unknown playback_id".into()))?;
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (browser, os, device_type) = agent::parse(agent);
    let dims = Dimensions {
        country: viewer_country(state, headers, ip),
        browser,
        os,
        device_type,
    };
    let accepted = batch.events.len();
    state
        .analytics
        .offer(Arrival {
            tenant_id: target.tenant_id,
            batch,
            dims,
            received_ms: now,
        })
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(Accepted { accepted })
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ViewFilter {
    pub playback_id: Option<String>,
    pub viewer: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// Scores of a view, 0 to 100, by Mux's formulas; none for a view that never started.
#[derive(Debug, Serialize, ToSchema)]
pub struct Scores {
    pub startup: Option<f64>,
    pub smoothness: Option<f64>,
    pub quality: Option<f64>,
}

/// A view: one play attempt, with its metrics.
#[derive(Debug, Serialize, ToSchema)]
pub struct ViewView {
    pub id: String,
    pub playback_id: String,
    pub viewer_id: Option<String>,
    pub started_at: String,
    pub ended_at: String,
    /// Ended (`viewend`, a fatal error, or 60 minutes silent); else still open.
    pub finished: bool,
    pub video_startup_time_ms: Option<i64>,
    pub watch_time_ms: i64,
    pub playing_time_ms: i64,
    pub rebuffer_count: i64,
    pub rebuffer_duration_ms: i64,
    pub rebuffer_percentage: f64,
    pub rebuffer_frequency: f64,
    pub exit_before_video_start: bool,
    pub startup_failure: bool,
    pub playback_failure: bool,
    pub business_exception: bool,
    pub error: Option<String>,
    pub upscale_percentage: f64,
    pub downscale_percentage: f64,
    pub max_upscale_percentage: f64,
    pub weighted_average_bitrate: Option<f64>,
    /// VOD: the playhead reached 90 % of the asset.
    pub completed: Option<bool>,
    pub country: Option<String>,
    pub browser: String,
    pub os: String,
    pub device_type: String,
    pub player: String,
    /// What fed the view: `beacon`, `cmcd`, `server`.
    pub sources: Vec<String>,
    pub scores: Scores,
}

/// A view with its player events, in order.
#[derive(Debug, Serialize, ToSchema)]
pub struct ViewDetail {
    #[serde(flatten)]
    pub view: ViewView,
    /// Null once `analytics.raw_retention_days` have passed.
    #[schema(value_type = Option<Vec<Object>>)]
    pub events: Option<serde_json::Value>,
}

impl From<&StoredView> for ViewView {
    fn from(v: &StoredView) -> Self {
        let s: Summary = serde_json::from_str(&v.summary).unwrap_or_default();
        Self {
            id: v.id.clone(),
            playback_id: v.playback_id.clone(),
            viewer_id: v.viewer_id.clone(),
            started_at: rfc3339(v.started_at),
            ended_at: rfc3339(v.ended_at),
            finished: v.finished != 0,
            video_startup_time_ms: v.video_startup_time_ms,
            watch_time_ms: v.watch_time_ms,
            playing_time_ms: v.playing_time_ms,
            rebuffer_count: v.rebuffer_count,
            rebuffer_duration_ms: v.rebuffer_duration_ms,
            rebuffer_percentage: s.rebuffer_percentage() * 100.0,
            rebuffer_frequency: s.rebuffer_frequency(),
            exit_before_video_start: s.exit_before_video_start,
            startup_failure: s.startup_failure,
            playback_failure: s.playback_failure,
            business_exception: s.business_exception,
            error: s.error.clone(),
            upscale_percentage: s.upscale * 100.0,
            downscale_percentage: s.downscale * 100.0,
            max_upscale_percentage: s.max_upscale * 100.0,
            weighted_average_bitrate: s.weighted_bitrate,
            completed: s.completed,
            country: v.country.clone(),
            browser: v.browser.clone(),
            os: v.os.clone(),
            device_type: v.device_type.clone(),
            player: v.player.clone(),
            sources: v.sources.split(',').map(str::to_string).collect(),
            scores: Scores {
                startup: s.startup_score(),
                smoothness: s.smoothness_score(),
                quality: s.quality_score(),
            },
        }
    }
}

/// List the tenant's views, optionally of one playback id and/or viewer.
#[utoipa::path(get, path = "/v1/analytics/views", tag = "analytics", params(ViewFilter),
    security(("api_key" = [])), responses((status = 200, body = List<ViewView>)))]
pub async fn list_views(
    State(state): State<AppState>,
    caller: Tenant,
    Query(f): Query<ViewFilter>,
) -> ApiResult<Json<List<ViewView>>> {
    let limit = Page {
        limit: f.limit,
        cursor: None,
    }
    .limit()?;
    let rows = state
        .jobs
        .db
        .list_views(
            &caller.tenant_id,
            f.playback_id.as_deref(),
            f.viewer.as_deref(),
            f.cursor.as_deref(),
            limit,
        )
        .await?;
    let views: Vec<ViewView> = rows.iter().map(ViewView::from).collect();
    Ok(Json(List::new(views, limit, |v| &v.id)))
}

/// One of the tenant's views, with its event timeline.
#[utoipa::path(get, path = "/v1/analytics/views/{id}", tag = "analytics",
    security(("api_key" = [])),
    responses((status = 200, body = ViewDetail), (status = 404, body = ErrorBody)))]
pub async fn get_view(
    State(state): State<AppState>,
    caller: Tenant,
    Path(id): Path<String>,
) -> ApiResult<Json<ViewDetail>> {
    let row = state
        .jobs
        .db
        .get_view(&caller.tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound("view not found".into()))?;
    Ok(Json(ViewDetail {
        view: ViewView::from(&row),
        events: row
            .events
            .as_deref()
            .and_then(|e| serde_json::from_str(e).ok()),
    }))
}
