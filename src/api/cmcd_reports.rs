//! `POST /v1/cmcd`: CMCD v2 event reports (hls.js `cmcd.eventTargets`), read into the same
//! views as the beacons (`analytics::cmcd_events`).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::access::ClientIp;
use super::analytics::{any_origin, dimensions, too_large};
use crate::analytics::{Arrival, beacon, cmcd_events};
use crate::error::{ApiError, ApiResult, ErrorBody};

/// Record a player's CMCD v2 event reports: lines of CMCD (`application/cmcd`), one event
/// each, up to 300 and 500 KB; each names its view (`sid`) and playback id (`cid`). Public:
/// the playback id must exist. 204 once queued; 503 when the queue is full (a reporter
/// retries).
#[utoipa::path(post, path = "/v1/cmcd", tag = "analytics",
    request_body(content = String, description = "CMCD event lines", content_type = "application/cmcd",
        example = json!("e=ps,sta=p,ts=1796632000000,sid=\"6e2fb550-c457-11e9-bb97-0800200c9a66\",cid=\"8f2c1d0e4b6a49f3a1c2d3e4f5a6b7c8\"")),
    responses((status = 204, description = "Queued"), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn report(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let taken = match body {
        Ok(body) => take(&state, ip.as_deref(), &headers, &body).await,
        Err(_) => Err(too_large()),
    };
    any_origin(match taken {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    })
}

async fn take(
    state: &AppState,
    ip: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<()> {
    if body.len() > beacon::MAX_BYTES {
        return Err(too_large());
    }
    let now = crate::clock::now_ms();
    let batches = cmcd_events::parse(body, now).map_err(|e| ApiError::invalid(e.to_string()))?;
    if state.jobs.config.analytics.discard_beacons {
        return Ok(());
    }
    // Every playback id is checked before any event is queued: a report is taken whole.
    let mut arrivals = Vec::with_capacity(batches.len());
    for batch in batches {
        let target = state
            .jobs
            .db
            .playback_target(&batch.playback_id)
            .await?
            .ok_or_else(|| ApiError::NotFound("unknown playback id (cid)".into()))?;
        arrivals.push(Arrival {
            tenant_id: target.tenant_id,
            source: "cmcd",
            batch,
            dims: dimensions(state, headers, ip),
            received_ms: now,
        });
    }
    for arrival in arrivals {
        state
            .analytics
            .offer(arrival)
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    }
    Ok(())
}
