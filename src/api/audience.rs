//! Audience over time: the peak of concurrent viewers per minute (hour, day), and a VOD
//! asset's audience retention curve; and the viewers of one stream now, for its player.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::access::{ClientIp, TokenQuery, authorize_playback};
use super::analytics::{Timeframe, granularity, timeframe};
use super::auth::Tenant;
use super::{AppState, Json, Path, Query, rfc3339};
use crate::error::{ApiError, ApiResult, ErrorBody};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConcurrencyQuery {
    /// `24h` (default), `30m`, `7d`, or an RFC 3339 range `FROM..TO`.
    pub timeframe: Option<String>,
    /// One stream or asset; without it, the whole tenant.
    pub playback_id: Option<String>,
    /// `minute`, `hour` (default) or `day`: the peak of each.
    pub granularity: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PeakPoint {
    pub time: String,
    pub peak_concurrent_viewers: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Concurrency {
    /// Null: every stream and asset of the tenant together.
    pub playback_id: Option<String>,
    pub granularity: String,
    /// Periods with viewers, in time order.
    pub data: Vec<PeakPoint>,
    pub timeframe: Timeframe,
}

/// The peak of concurrent viewers in each minute, hour or day: the largest of the counts
/// sampled every `analytics.flush_s` (as `GET /v1/analytics/realtime` counts them).
#[utoipa::path(get, path = "/v1/analytics/concurrency", tag = "analytics",
    params(ConcurrencyQuery), security(("api_key" = [])),
    responses((status = 200, body = Concurrency), (status = 400, body = ErrorBody)))]
pub async fn concurrency(
    State(state): State<AppState>,
    caller: Tenant,
    Query(q): Query<ConcurrencyQuery>,
) -> ApiResult<Json<Concurrency>> {
    let (from, to) = timeframe(q.timeframe.as_deref(), crate::clock::now_ms())?;
    let (granularity, bucket) = granularity(q.granularity.as_deref(), from, to)?;
    if let Some(pb) = &q.playback_id {
        playback_id_shaped(pb)?;
    }
    let peaks = state
        .jobs
        .db
        .peaks(
            &caller.tenant_id,
            q.playback_id.as_deref().unwrap_or(""),
            from,
            to,
            bucket,
        )
        .await?;
    Ok(Json(Concurrency {
        playback_id: q.playback_id,
        granularity,
        data: peaks
            .into_iter()
            .map(|(at, peak)| PeakPoint {
                time: rfc3339(at),
                peak_concurrent_viewers: peak,
            })
            .collect(),
        timeframe: Timeframe {
            from: rfc3339(from),
            to: rfc3339(to),
        },
    }))
}

fn playback_id_shaped(pb: &str) -> ApiResult<()> {
    if pb.is_empty() || pb.len() > 64 || !pb.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ApiError::invalid(
            "playback_id is 1 to 64 letters and digits",
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RetentionQuery {
    /// `30d` (default), `24h`, or an RFC 3339 range `FROM..TO`: views that started in it.
    pub timeframe: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RetentionPoint {
    /// 0 to 99: this percent of the duration.
    pub percent: u32,
    /// The share of views (0 to 1) that played this part.
    pub share: f64,
    pub views: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Retention {
    pub playback_id: String,
    pub duration_ms: Option<i64>,
    /// Views that asked to play it (the curve's 100 %).
    pub views: i64,
    /// One point per percent of the duration; empty without views.
    pub data: Vec<RetentionPoint>,
    pub timeframe: Timeframe,
}

/// A VOD asset's audience retention curve: for each percent of its duration, the share of
/// its views that played that part (the playhead moving through it while playing; a part
/// skipped by seeking is not played). Views from the player script; live streams have none.
#[utoipa::path(get, path = "/v1/analytics/retention/{playback_id}", tag = "analytics",
    params(("playback_id" = String, Path), RetentionQuery), security(("api_key" = [])),
    responses((status = 200, body = Retention), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn retention(
    State(state): State<AppState>,
    caller: Tenant,
    Path(playback_id): Path<String>,
    Query(q): Query<RetentionQuery>,
) -> ApiResult<Json<Retention>> {
    playback_id_shaped(&playback_id)?;
    let (from, to) = timeframe(
        Some(q.timeframe.as_deref().unwrap_or("30d")),
        crate::clock::now_ms(),
    )?;
    let db = &state.jobs.db;
    let asset = db
        .asset_by_playback_id(&playback_id)
        .await?
        .filter(|a| a.tenant_id == caller.tenant_id)
        .ok_or_else(|| ApiError::NotFound("no asset has this playback id".into()))?;
    let (views, counts) = db
        .retention(&caller.tenant_id, &playback_id, from, to)
        .await?;
    let data = if views == 0 {
        Vec::new()
    } else {
        (0u32..)
            .zip(counts)
            .map(|(percent, n)| RetentionPoint {
                percent,
                share: n as f64 / views as f64,
                views: n,
            })
            .collect()
    };
    Ok(Json(Retention {
        playback_id,
        duration_ms: asset.duration_ms,
        views,
        data,
        timeframe: Timeframe {
            from: rfc3339(from),
            to: rfc3339(to),
        },
    }))
}

/// Concurrent viewers of one playback id, as its player page shows them.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"playback_id": "8f3a9c2e41d04b7f", "concurrent_viewers": 1284}))]
pub struct Watching {
    pub playback_id: String,
    pub concurrent_viewers: u64,
}

/// A tenant's realtime counts, kept a few seconds: every viewer's page asks, and one answer
/// serves them all.
#[derive(Default)]
pub struct ViewerCounts(std::sync::Mutex<HashMap<String, (Instant, Counts)>>);

/// Viewers now, by playback id.
type Counts = Arc<BTreeMap<String, u64>>;

const COUNTS_TTL: Duration = Duration::from_secs(5);
/// Tenants whose counts are kept at once; past it, expired ones are forgotten.
const COUNTS_KEPT: usize = 10_000;

impl ViewerCounts {
    async fn of(&self, state: &AppState, tenant_id: &str) -> Counts {
        if let Some((at, counts)) = self.0.lock().unwrap().get(tenant_id)
            && at.elapsed() < COUNTS_TTL
        {
            return counts.clone();
        }
        let counts = Arc::new(state.analytics.realtime(tenant_id).await);
        let mut kept = self.0.lock().unwrap();
        if kept.len() >= COUNTS_KEPT {
            kept.retain(|_, (at, _)| at.elapsed() < COUNTS_TTL);
        }
        if kept.len() < COUNTS_KEPT {
            kept.insert(tenant_id.to_string(), (Instant::now(), counts.clone()));
        }
        counts
    }
}

/// Viewers of one stream or asset now (as `/v1/analytics/realtime` counts them, at most
/// 5 s old), for its player: allowed to whoever may open its page (a token for signed media).
#[utoipa::path(get, path = "/v1/analytics/realtime/{playback_id}", tag = "analytics",
    params(("token" = Option<String>, Query, description = "The playback token (or `Authorization: Bearer`, or the `ferrocast_token` cookie); none for public media")),
    responses((status = 200, body = Watching), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn realtime_one(
    State(state): State<AppState>,
    Path(playback_id): Path<String>,
    Query(q): Query<TokenQuery>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> ApiResult<Json<Watching>> {
    let (target, _) = authorize_playback(&state, &playback_id, &q, &headers, ip.as_deref()).await?;
    let counts = state.viewer_counts.of(&state, &target.tenant_id).await;
    Ok(Json(Watching {
        concurrent_viewers: counts.get(&playback_id).copied().unwrap_or(0),
        playback_id,
    }))
}
