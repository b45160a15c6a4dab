//! Viewer analytics over HTTP: beacons in (public, checked field by field, queued without
//! waiting on SQL) and a tenant's views out.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::access::{ClientIp, viewer_country};
use super::auth::Tenant;
use super::{AppState, Json, List, Page, Path, Query, rfc3339};
use crate::analytics::metrics::{self, Metric};
use crate::analytics::view::Summary;
use crate::analytics::{
    Arrival, CmcdArrival, Dimensions, KeyArrival, ServerArrival, agent, beacon, cmcd,
};
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
    request_body(content = String, description = "The batch as JSON: {view_id, viewer_id?, playback_id, player?, events}", content_type = "text/plain",
        example = json!("{\"view_id\":\"9b1d2c3e-0000-4000-8000-000000000001\",\"playback_id\":\"8f2c1d0e4b6a49f3a1c2d3e4f5a6b7c8\",\"events\":[{\"type\":\"playing\",\"at\":1796632000000,\"playhead_ms\":0}]}")),
    responses((status = 202, body = Accepted), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
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
    any_origin(match taken {
        Ok(accepted) => (StatusCode::ACCEPTED, Json(accepted)).into_response(),
        Err(e) => e.into_response(),
    })
}

/// A public report endpoint's answer, readable by a page of any origin.
pub(super) fn any_origin(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

/// Where a request comes from, as views are broken down.
pub(super) fn dimensions(state: &AppState, headers: &HeaderMap, ip: Option<&str>) -> Dimensions {
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (browser, os, device_type) = agent::parse(agent);
    Dimensions {
        country: viewer_country(state, headers, ip),
        browser,
        os,
        device_type,
    }
}

/// Hands a media request's CMCD (query mode, or the `CMCD-*` headers) to the aggregator when
/// its session id can name a view; returns whether it did. Called after access was granted;
/// it changes nothing about the answer.
pub(super) fn observe_cmcd(
    state: &AppState,
    tenant_id: &str,
    playback_id: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    ip: Option<&str>,
) -> bool {
    let Some(cmcd) = request_cmcd(query, headers) else {
        return false;
    };
    state.analytics.observe(CmcdArrival {
        ip: ip.map(str::to_string),
        tenant_id: tenant_id.to_string(),
        playback_id: playback_id.to_string(),
        cmcd,
        dims: dimensions(state, headers, ip),
        received_ms: crate::clock::now_ms(),
    });
    true
}

/// A request's CMCD, when its session id can name a view.
fn request_cmcd(query: Option<&str>, headers: &HeaderMap) -> Option<cmcd::Cmcd> {
    let from_headers = ["cmcd-request", "cmcd-object", "cmcd-status", "cmcd-session"]
        .iter()
        .filter_map(|h| headers.get(*h)?.to_str().ok());
    let cmcd = cmcd::parse(query.into_iter().chain(from_headers))?;
    cmcd.sid
        .as_deref()
        .is_some_and(beacon::id_shaped)
        .then_some(cmcd)
}

/// Hands the answer to a key request whose CMCD session id names a view to the aggregator:
/// the key server's side of that view (a key granted, or refused with 403: by policy,
/// entitlement or country). It changes nothing about the answer.
pub(super) fn observe_key(
    state: &AppState,
    tenant_id: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    granted: bool,
    forbidden: bool,
) {
    if let Some(cmcd) = request_cmcd(query, headers) {
        state.analytics.observe_key(KeyArrival {
            tenant_id: tenant_id.to_string(),
            view_id: cmcd.sid.unwrap_or_default(),
            granted,
            forbidden,
            received_ms: crate::clock::now_ms(),
        });
    }
}

/// Counts a media segment fetched without a view id toward its client's server view. Its
/// duration comes from the rendition playlist (`playlist_key`), read from storage when not
/// known; that happens off the request, which never waits for it.
pub(super) fn observe_server(
    state: &AppState,
    tenant_id: &str,
    playback_id: &str,
    playlist_key: crate::storage::ObjectKey,
    segment: &str,
    headers: &HeaderMap,
    ip: Option<&str>,
) {
    use std::hash::{Hash, Hasher};
    let durations = &state.analytics.durations;
    // Known or known absent: no task, no storage read; a segment the playlist does not name
    // counts for nothing.
    let known = durations.lookup(playlist_key.as_str(), segment);
    if known == Some(None) {
        return;
    }
    let agent = headers
        .get(header::USER_AGENT)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    agent.hash(&mut hasher);
    let arrival = ServerArrival {
        ip: ip.map(str::to_string),
        tenant_id: tenant_id.to_string(),
        playback_id: playback_id.to_string(),
        agent_hash: hasher.finish(),
        dims: dimensions(state, headers, ip),
        segment: segment.to_string(),
        media_ms: known.flatten().unwrap_or(0),
        received_ms: crate::clock::now_ms(),
    };
    if known.is_some() {
        state.analytics.observe_server(arrival);
        return;
    }
    let state = state.clone();
    tokio::spawn(async move {
        let durations = &state.analytics.durations;
        let text = match state.jobs.store.get(&playlist_key, None).await {
            Ok(object) => String::from_utf8_lossy(&object.body).into_owned(),
            Err(e) => {
                tracing::debug!(error = %e, "reading a playlist for a server view");
                // Remembered as naming nothing: read again a second later at most.
                String::new()
            }
        };
        durations.remember(playlist_key.as_str(), &text);
        if let Some(media_ms) = durations
            .lookup(playlist_key.as_str(), &arrival.segment)
            .flatten()
        {
            state.analytics.observe_server(ServerArrival {
                media_ms,
                ..arrival
            });
        }
    });
}

/// `OPTIONS /v1/beacons` and `/v1/cmcd`: the preflight of a page that posts
/// `application/json` or `application/cmcd` from another origin (`text/plain` needs none).
pub async fn beacons_preflight() -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            (header::ACCESS_CONTROL_ALLOW_METHODS, "POST, OPTIONS"),
            (header::ACCESS_CONTROL_ALLOW_HEADERS, "content-type"),
            (header::ACCESS_CONTROL_MAX_AGE, "86400"),
        ],
    )
        .into_response()
}

pub(super) fn too_large() -> ApiError {
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
    if state.jobs.config.analytics.discard_beacons {
        return Ok(Accepted {
            accepted: batch.events.len(),
        });
    }
    let target = state
        .jobs
        .db
        .playback_target(&batch.playback_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("unknown playback_id".into()))?;
    let dims = dimensions(state, headers, ip);
    let accepted = batch.events.len();
    state
        .analytics
        .offer(Arrival {
            tenant_id: target.tenant_id,
            source: "beacon",
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
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// Scores of a view, 0 to 100, by Mux's formulas; none for a view that never started.
#[derive(Debug, Serialize, ToSchema)]
pub struct Scores {
    pub startup: Option<f64>,
    pub smoothness: Option<f64>,
    pub quality: Option<f64>,
    pub playback_success: Option<f64>,
    /// The overall Viewer Experience Score.
    pub viewer_experience: Option<f64>,
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
    /// The part of the startup time spent fetching keys or licences (None: none fetched
    /// before the first frame).
    pub key_fetch_time_ms: Option<i64>,
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
    /// Live: the median latency the player reported (from the playlist's
    /// `EXT-X-PROGRAM-DATE-TIME`), corrected by its clock's offset from the server's.
    pub live_latency_ms: Option<i64>,
    pub country: Option<String>,
    pub browser: String,
    pub os: String,
    pub device_type: String,
    pub player: String,
    /// What fed the view: `beacon`, `cmcd`, `server`.
    pub sources: Vec<String>,
    /// The rendition it played longest (`720p`); null when none was reported.
    pub rendition: Option<String>,
    pub scores: Scores,
    /// What the player's CMCD said over the view's requests, when it sent any.
    #[schema(value_type = Option<Object>)]
    pub cmcd: Option<serde_json::Value>,
    /// Server views: the distinct segments fetched and their media time.
    #[schema(value_type = Option<Object>)]
    pub server: Option<serde_json::Value>,
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
        let mut summary: serde_json::Value = serde_json::from_str(&v.summary).unwrap_or_default();
        let cmcd = summary.get_mut("cmcd").map(serde_json::Value::take);
        let server = summary.get_mut("server").map(serde_json::Value::take);
        let s: Summary = serde_json::from_value(summary).unwrap_or_default();
        Self {
            id: v.id.clone(),
            playback_id: v.playback_id.clone(),
            viewer_id: v.viewer_id.clone(),
            started_at: rfc3339(v.started_at),
            ended_at: rfc3339(v.ended_at),
            finished: v.finished != 0,
            video_startup_time_ms: v.video_startup_time_ms,
            key_fetch_time_ms: v.key_fetch_time_ms,
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
            live_latency_ms: v.live_latency_ms,
            country: v.country.clone(),
            browser: v.browser.clone(),
            os: v.os.clone(),
            device_type: v.device_type.clone(),
            player: v.player.clone(),
            sources: v.sources.split(',').map(str::to_string).collect(),
            rendition: Some(v.rendition.clone()).filter(|r| !r.is_empty()),
            scores: Scores {
                startup: s.startup_score(),
                smoothness: s.smoothness_score(),
                quality: s.quality_score(),
                playback_success: s.success_score(),
                viewer_experience: s.experience_score(),
            },
            cmcd,
            server,
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
        events: match crate::analytics::timeline::stored(&row) {
            _ if row.timeline.is_none() && row.events.is_none() => None,
            Ok(events) => Some(serde_json::to_value(events).expect("events serialize")),
            Err(e) => {
                tracing::warn!(error = %e, view = %row.id, "a view's stored events");
                None
            }
        },
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MetricQuery {
    /// `24h` (default), `30m`, `7d` (up to 366 days back from now), or an RFC 3339 range
    /// `2026-12-01T00:00:00Z..2026-12-06T00:00:00Z`. Views count by when they started.
    pub timeframe: Option<String>,
    /// `country:DE,browser:Chrome`: dimensions `playback_id`, `country`, `browser`, `os`,
    /// `device_type`, `player`, `sources` (as a view lists them: `beacon,cmcd`), `rendition`
    /// (the one a view played longest: `720p`).
    pub filters: Option<String>,
    /// Breakdown: one to three dimensions, comma-separated.
    pub group_by: Option<String>,
    /// Timeseries: `minute`, `hour` (default) or `day`.
    pub granularity: Option<String>,
}

/// The period a query covers (RFC 3339).
#[derive(Debug, Serialize, ToSchema)]
pub struct Timeframe {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Overall {
    pub metric: String,
    /// Null when no view in the timeframe has a value for the metric.
    pub value: Option<f64>,
    pub views: i64,
    pub timeframe: Timeframe,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Group {
    #[schema(value_type = Object)]
    pub dimensions: serde_json::Map<String, serde_json::Value>,
    pub value: Option<f64>,
    pub views: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Breakdown {
    pub metric: String,
    pub group_by: Vec<String>,
    /// Largest groups (by views) first.
    pub data: Vec<Group>,
    pub timeframe: Timeframe,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Point {
    pub time: String,
    pub value: Option<f64>,
    pub views: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Timeseries {
    pub metric: String,
    pub granularity: String,
    pub data: Vec<Point>,
    pub timeframe: Timeframe,
}

/// The longest timeframe a query covers.
const MAX_SPAN_MS: i64 = 366 * 86_400_000;

/// Points a timeseries may have at most.
const MAX_POINTS: i64 = 10_000;

/// A query's `timeframe` (default `24h`) as (from, to) in ms.
pub(super) fn timeframe(text: Option<&str>, now: i64) -> ApiResult<(i64, i64)> {
    let text = text.unwrap_or("24h");
    if let Some((from, to)) = text.split_once("..") {
        let at = |s: &str| {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
                .map_err(|_| ApiError::invalid("timeframe times must be RFC 3339"))
        };
        let (from, to) = (at(from)?, at(to)?);
        if from >= to {
            return Err(ApiError::invalid("timeframe must start before it ends"));
        }
        if to - from > MAX_SPAN_MS {
            return Err(ApiError::invalid("a timeframe spans 366 days at most"));
        }
        return Ok((from, to));
    }
    if !text.is_ascii() || text.len() < 2 {
        return Err(ApiError::invalid(
            "timeframe must be like 24h, 30m, 7d or FROM..TO",
        ));
    }
    let (n, unit) = text.split_at(text.len() - 1);
    let n: i64 = n
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ApiError::invalid("timeframe must be like 24h, 30m, 7d or FROM..TO"))?;
    let unit_ms = match unit {
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(ApiError::invalid("timeframe units are m, h or d")),
    };
    let span = n.saturating_mul(unit_ms);
    if span > MAX_SPAN_MS {
        return Err(ApiError::invalid("timeframe reaches back 366 days at most"));
    }
    Ok((now - span, now + 1))
}

fn filters(q: &MetricQuery) -> ApiResult<Vec<(&'static str, String)>> {
    let mut out = Vec::new();
    for part in q
        .filters
        .as_deref()
        .unwrap_or("")
        .split(',')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = part
            .split_once(':')
            .ok_or_else(|| ApiError::invalid("filters are dimension:value, comma-separated"))?;
        let column = crate::db::FILTER_COLUMNS
            .iter()
            .find(|c| **c == name)
            .ok_or_else(|| ApiError::invalid(format!("no dimension {:?}", cut(name))))?;
        out.push((*column, value.to_string()));
    }
    if out.len() > crate::db::FILTER_COLUMNS.len() {
        return Err(ApiError::invalid("too many filters"));
    }
    Ok(out)
}

fn cut(s: &str) -> String {
    s.chars().take(40).collect()
}

fn metric(name: &str) -> ApiResult<Metric> {
    Metric::parse(name).ok_or_else(|| {
        let known: Vec<&str> = Metric::ALL.iter().map(|(n, _)| *n).collect();
        ApiError::NotFound(format!(
            "no metric {:?}; metrics: {}",
            cut(name),
            known.join(", ")
        ))
    })
}

/// The metric for each group (`(period start, dimension values)`) of the tenant's views in
/// the query's timeframe and filters, with the group's view count; groups without views are
/// left out.
async fn groups(
    state: &AppState,
    tenant_id: &str,
    m: Metric,
    q: &MetricQuery,
    group_by: &[&'static str],
    bucket_ms: Option<i64>,
) -> ApiResult<(Vec<(i64, Vec<String>, Option<f64>, i64)>, Timeframe)> {
    let (from, to) = timeframe(q.timeframe.as_deref(), crate::clock::now_ms())?;
    let filters = filters(q)?;
    let db = &state.jobs.db;
    let rollups = db
        .rollups(
            tenant_id,
            from,
            to,
            &filters,
            group_by,
            bucket_ms,
            Some(m.sums()),
        )
        .await?;
    let mut samples: BTreeMap<(i64, Vec<String>), Vec<i64>> = BTreeMap::new();
    if m.quantile().is_some() {
        for s in db
            .startup_times(tenant_id, from, to, &filters, group_by, bucket_ms)
            .await?
        {
            samples.entry((s.at, s.key)).or_default().push(s.startup_ms);
        }
    }
    let data = rollups
        .into_iter()
        .map(|g| {
            let value = match m.quantile() {
                Some(q) => samples
                    .get_mut(&(g.at, g.key.clone()))
                    .and_then(|times| metrics::percentile(times, q)),
                None => m.value(&g.sums),
            };
            (g.at, g.key, value, g.sums.views)
        })
        .collect();
    Ok((
        data,
        Timeframe {
            from: rfc3339(from),
            to: rfc3339(to),
        },
    ))
}

/// A metric over every view in the timeframe that matches the filters.
#[utoipa::path(get, path = "/v1/analytics/metrics/{metric}/overall", tag = "analytics",
    params(MetricQuery), security(("api_key" = [])),
    responses((status = 200, body = Overall), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn overall(
    State(state): State<AppState>,
    caller: Tenant,
    Path(name): Path<String>,
    Query(q): Query<MetricQuery>,
) -> ApiResult<Json<Overall>> {
    let m = metric(&name)?;
    let (data, timeframe) = groups(&state, &caller.tenant_id, m, &q, &[], None).await?;
    let (value, views) = data
        .into_iter()
        .next()
        .map_or((m.value(&Default::default()), 0), |(_, _, v, n)| (v, n));
    Ok(Json(Overall {
        metric: name,
        value,
        views,
        timeframe,
    }))
}

/// A metric for each combination of the `group_by` dimensions' values.
#[utoipa::path(get, path = "/v1/analytics/metrics/{metric}/breakdown", tag = "analytics",
    params(MetricQuery), security(("api_key" = [])),
    responses((status = 200, body = Breakdown), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn breakdown(
    State(state): State<AppState>,
    caller: Tenant,
    Path(name): Path<String>,
    Query(q): Query<MetricQuery>,
) -> ApiResult<Json<Breakdown>> {
    let m = metric(&name)?;
    let dims: Vec<&'static str> = q
        .group_by
        .as_deref()
        .unwrap_or("")
        .split(',')
        .filter(|d| !d.is_empty())
        .map(|d| {
            crate::db::FILTER_COLUMNS
                .iter()
                .find(|c| **c == d)
                .copied()
                .ok_or_else(|| ApiError::invalid(format!("no dimension {:?}", cut(d))))
        })
        .collect::<ApiResult<_>>()?;
    if dims.is_empty() || dims.len() > 3 {
        return Err(ApiError::invalid("group_by names one to three dimensions"));
    }
    let (data, timeframe) = groups(&state, &caller.tenant_id, m, &q, &dims, None).await?;
    let mut data: Vec<Group> = data
        .into_iter()
        .map(|(_, key, value, views)| Group {
            dimensions: dims
                .iter()
                .zip(key)
                .map(|(d, v)| (d.to_string(), v.into()))
                .collect(),
            value,
            views,
        })
        .collect();
    data.sort_by_key(|g| std::cmp::Reverse(g.views));
    Ok(Json(Breakdown {
        metric: name,
        group_by: dims.iter().map(|d| d.to_string()).collect(),
        data,
        timeframe,
    }))
}

/// A metric per minute, hour or day (by when views started); periods without views are left
/// out.
#[utoipa::path(get, path = "/v1/analytics/metrics/{metric}/timeseries", tag = "analytics",
    params(MetricQuery), security(("api_key" = [])),
    responses((status = 200, body = Timeseries), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn timeseries(
    State(state): State<AppState>,
    caller: Tenant,
    Path(name): Path<String>,
    Query(q): Query<MetricQuery>,
) -> ApiResult<Json<Timeseries>> {
    let m = metric(&name)?;
    let (from, to) = timeframe(q.timeframe.as_deref(), crate::clock::now_ms())?;
    let (granularity, bucket) = granularity(q.granularity.as_deref(), from, to)?;
    let (mut data, timeframe) = groups(&state, &caller.tenant_id, m, &q, &[], Some(bucket)).await?;
    data.sort_by_key(|(at, ..)| *at);
    let data: Vec<Point> = data
        .into_iter()
        .map(|(at, _, value, views)| Point {
            time: rfc3339(at),
            value,
            views,
        })
        .collect();
    Ok(Json(Timeseries {
        metric: name,
        granularity,
        data,
        timeframe,
    }))
}

/// A timeseries' `granularity` (default `hour`) and its period in ms, for a timeframe.
pub(super) fn granularity(text: Option<&str>, from: i64, to: i64) -> ApiResult<(String, i64)> {
    let granularity = text.unwrap_or("hour");
    let bucket = match granularity {
        "minute" => 60_000,
        "hour" => 3_600_000,
        "day" => 86_400_000,
        _ => return Err(ApiError::invalid("granularity is minute, hour or day")),
    };
    if (to - from) / bucket > MAX_POINTS {
        return Err(ApiError::invalid(format!(
            "more than {MAX_POINTS} points: use a coarser granularity or a shorter timeframe"
        )));
    }
    Ok((granularity.to_string(), bucket))
}

/// Concurrent viewers of one playback id.
#[derive(Debug, Serialize, ToSchema)]
pub struct Concurrent {
    pub playback_id: String,
    pub concurrent_viewers: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Realtime {
    /// Viewers now, in every stream and asset of the tenant.
    pub concurrent_viewers: u64,
    /// By playback id, most watched first.
    pub data: Vec<Concurrent>,
}

/// Concurrent viewers now: views heard from in the last 30 s whose viewer is starting,
/// playing, rebuffering or seeking (paused ones do not count), per playback id.
#[utoipa::path(get, path = "/v1/analytics/realtime", tag = "analytics",
    security(("api_key" = [])), responses((status = 200, body = Realtime)))]
pub async fn realtime(State(state): State<AppState>, caller: Tenant) -> Json<Realtime> {
    let counts = state.analytics.realtime(&caller.tenant_id).await;
    let mut data: Vec<Concurrent> = counts
        .into_iter()
        .map(|(playback_id, concurrent_viewers)| Concurrent {
            playback_id,
            concurrent_viewers,
        })
        .collect();
    data.sort_by_key(|c| std::cmp::Reverse(c.concurrent_viewers));
    Json(Realtime {
        concurrent_viewers: data.iter().map(|c| c.concurrent_viewers).sum(),
        data,
    })
}
