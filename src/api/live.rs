//! Live streams (a stream key to publish with, a playback id to watch) and playback tokens.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Tenant;
use super::{AppState, Json, List, Page, Path, Query, rfc3339};
use crate::db::{self, LiveStatus, NewLiveStream, PlaybackPolicy};
use crate::drm::{AUD_STORYBOARD, AUD_THUMBNAIL, AUD_VIDEO, PlaybackClaims};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::ids::{new_playback_id, random_secret};
use crate::media::Packaging;
use crate::media::cenc::Scheme;

/// Longest a playback token may live, in seconds (7 days).

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLiveStream {
    /// Ladder preset name (`pipelines/NAME.toml`); default `default`.
    pub ladder: Option<String>,
    /// `signed` (default): playback needs a token. `public`: anyone with the URL.
    pub playback_policy: Option<PlaybackPolicy>,
    /// Seconds a disconnected publisher may come back and continue the same broadcast (default 60).
    pub reconnect_window_s: Option<i64>,
    /// Keep the broadcast as an on-demand asset when it ends (default true).
    pub record: Option<bool>,
    /// `ts`: MPEG-TS segments with AES-128 (HLS, every player). `cmaf`: fragmented MP4 with
    /// common encryption, as HLS (`/hls/…`, LL-HLS while live) and DASH
    /// (`/dash/{playback_id}/manifest.mpd`) from the same files, keys through
    /// `/licenses/clearkey/{playback_id}`. `both`: the two from one encode, MPEG-TS at
    /// `/hls/{playback_id}/master.m3u8` and CMAF at `/hls/{playback_id}/cmaf/master.m3u8` (and
    /// the DASH manifest). Default: the ladder preset's (`ts` for the shipped ones).
    pub packaging: Option<Packaging>,
    /// The common-encryption scheme of CMAF output: `cbcs` (default; what Apple devices and
    /// every current DRM take) or `cenc` (AES-CTR). Default: the ladder preset's.
    pub cenc_scheme: Option<Scheme>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"id": "01a24fb6-f5e7-7729-ac9b-5ec24db101cb", "stream_key": "mZnSJ0RSK9q4w_hrnX237d6p1n-_aYu4", "playback_id": "8f2c1d0e4b6a49f3a1c2d3e4f5a6b7c8", "rtmp_url": "rtmp://127.0.0.1:1935/live", "status": "active", "ladder": "default", "playback_policy": "signed", "reconnect_window_s": 60, "record": true, "packaging": "ts", "cenc_scheme": "cbcs", "ingest": {"video_codec": "h264", "audio_codec": "aac", "width": 1280, "height": 720, "fps": 30, "renditions": ["720p", "480p", "360p"]}, "last_error": null, "created_at": "2026-12-07T08:55:20.312Z"}))]
pub struct LiveStreamView {
    pub id: String,
    /// The RTMP stream name to publish with. A secret: anyone holding it can broadcast.
    pub stream_key: String,
    pub playback_id: String,
    /// RTMP server URL; publish to `{rtmp_url}/{stream_key}`.
    pub rtmp_url: String,
    /// Whether a publisher is live now.
    pub status: LiveStatus,
    pub ladder: String,
    pub playback_policy: PlaybackPolicy,
    pub reconnect_window_s: i64,
    pub record: bool,
    pub packaging: Packaging,
    pub cenc_scheme: Scheme,
    /// What the publisher is sending while active: codecs, resolution, fps, bitrate, renditions.
    #[schema(value_type = Option<Object>)]
    pub ingest: Option<serde_json::Value>,
    /// Why the last broadcast ended abnormally, if it did.
    pub last_error: Option<String>,
    pub created_at: String,
}

impl LiveStreamView {
    pub(super) fn new(s: db::LiveStream, rtmp_url: &str) -> Self {
        Self {
            id: s.id,
            stream_key: s.stream_key,
            playback_id: s.playback_id,
            rtmp_url: rtmp_url.to_string(),
            status: s.status,
            ladder: s.ladder,
            playback_policy: s.playback_policy,
            reconnect_window_s: s.reconnect_window_s,
            record: s.record,
            packaging: s.packaging,
            cenc_scheme: s.cenc_scheme,
            ingest: s.ingest.and_then(|j| serde_json::from_str(&j).ok()),
            last_error: s.last_error,
            created_at: rfc3339(s.created_at),
        }
    }
}

/// Create a live stream.
#[utoipa::path(post, path = "/v1/live-streams", tag = "live", request_body(content = CreateLiveStream,
        example = json!({"playback_policy": "signed", "ladder": "default", "reconnect_window_s": 60, "record": true})),
    security(("api_key" = [])),
    responses((status = 201, body = LiveStreamView), (status = 400, body = ErrorBody)))]
pub async fn create_live_stream(
    State(state): State<AppState>,
    caller: Tenant,
    Json(body): Json<CreateLiveStream>,
) -> ApiResult<(StatusCode, Json<LiveStreamView>)> {
    let ladder = body.ladder.unwrap_or_else(|| "default".into());
    let Some(preset) = state.jobs.presets.get(&ladder) else {
        let known: Vec<_> = state.jobs.presets.names().collect();
        return Err(ApiError::invalid(format!(
            "unknown ladder {ladder:?}; presets: {}",
            known.join(", ")
        )));
    };
    let packaging = body.packaging.unwrap_or(preset.packaging);
    let cenc_scheme = body.cenc_scheme.unwrap_or(preset.cenc_scheme);
    let reconnect_window_s = body.reconnect_window_s.unwrap_or(60);
    if !(0..=1800).contains(&reconnect_window_s) {
        return Err(ApiError::invalid("reconnect_window_s must be 0 to 1800"));
    }
    let stream = state
        .jobs
        .db
        .create_live_stream(&NewLiveStream {
            tenant_id: &caller.tenant_id,
            stream_key: &random_secret(24),
            playback_id: &new_playback_id(),
            ladder: &ladder,
            playback_policy: body.playback_policy.unwrap_or(PlaybackPolicy::Signed),
            reconnect_window_s,
            record: body.record.unwrap_or(true),
            packaging,
            cenc_scheme,
        })
        .await?;
    tracing::info!(live_stream = %stream.id, "live stream created");
    Ok((
        StatusCode::CREATED,
        Json(LiveStreamView::new(stream, &state.rtmp_url)),
    ))
}

/// List live streams.
#[utoipa::path(get, path = "/v1/live-streams", tag = "live", params(Page),
    security(("api_key" = [])), responses((status = 200, body = List<LiveStreamView>)))]
pub async fn list_live_streams(
    State(state): State<AppState>,
    caller: Tenant,
    Query(page): Query<Page>,
) -> ApiResult<Json<List<LiveStreamView>>> {
    let limit = page.limit()?;
    let streams = state
        .jobs
        .db
        .list_live_streams(&caller.tenant_id, page.cursor.as_deref(), limit)
        .await?;
    let list = List::new(streams, limit, |s| &s.id);
    Ok(Json(List {
        data: list
            .data
            .into_iter()
            .map(|s| LiveStreamView::new(s, &state.rtmp_url))
            .collect(),
        next_cursor: list.next_cursor,
    }))
}

/// Get a live stream, with what its publisher is sending while active.
#[utoipa::path(get, path = "/v1/live-streams/{id}", tag = "live",
    security(("api_key" = [])),
    responses((status = 200, body = LiveStreamView), (status = 404, body = ErrorBody)))]
pub async fn get_live_stream(
    State(state): State<AppState>,
    caller: Tenant,
    Path(id): Path<String>,
) -> ApiResult<Json<LiveStreamView>> {
    let stream = state
        .jobs
        .db
        .get_live_stream(&caller.tenant_id, &id)
        .await?;
    Ok(Json(LiveStreamView::new(stream, &state.rtmp_url)))
}

/// Delete a live stream; a publisher on it is disconnected.
#[utoipa::path(delete, path = "/v1/live-streams/{id}", tag = "live",
    security(("api_key" = [])),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_live_stream(
    State(state): State<AppState>,
    caller: Tenant,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state
        .jobs
        .db
        .delete_live_stream(&caller.tenant_id, &id)
        .await?;
    state.live.disconnect(&id);
    Ok(StatusCode::NO_CONTENT)
}

/// Replace the stream key; a publisher using the old key is disconnected.
#[utoipa::path(post, path = "/v1/live-streams/{id}/reset-stream-key", tag = "live",
    security(("api_key" = [])),
    responses((status = 200, body = LiveStreamView), (status = 404, body = ErrorBody)))]
pub async fn reset_stream_key(
    State(state): State<AppState>,
    caller: Tenant,
    Path(id): Path<String>,
) -> ApiResult<Json<LiveStreamView>> {
    let stream = state
        .jobs
        .db
        .set_stream_key(&caller.tenant_id, &id, &random_secret(24))
        .await?;
    state.live.disconnect(&id);
    Ok(Json(LiveStreamView::new(stream, &state.rtmp_url)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePlaybackToken {
    pub playback_id: String,
    /// Lifetime in seconds (default 3600, at most `playback.max_token_lifetime_s`).
    pub expires_in: Option<u64>,
    /// `v` (default: playlists, segments, keys), `t` (thumbnails) or `s` (storyboards).
    pub audience: Option<String>,
    /// An id of the viewer, carried in the token (for entitlements and analytics).
    pub viewer: Option<String>,
    /// Hosts of the pages allowed to play (checked against Referer/Origin).
    pub referrer: Option<Vec<String>>,
    /// ISO 3166-1 alpha-2 countries allowed to play.
    pub country: Option<Vec<String>>,
    /// Highest rendition offered, e.g. "720p".
    pub max_resolution: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"token": "eyJhbGciOiJFUzI1NiIsImtpZCI6IjAxYTI0In0.eyJzdWIiOiI4ZjJjIn0.c2lnbmF0dXJl", "expires_at": "2026-12-07T10:21:27Z"}))]
pub struct PlaybackToken {
    pub token: String,
    pub expires_at: String,
}

/// Mint a signed playback token for one of the tenant's playback ids.
#[utoipa::path(post, path = "/v1/playback-tokens", tag = "live", request_body(content = CreatePlaybackToken,
        example = json!({"playback_id": "8f2c1d0e4b6a49f3a1c2d3e4f5a6b7c8", "expires_in": 3600, "viewer": "cus_42", "referrer": ["example.com"], "country": ["FR", "DE"]})),
    security(("api_key" = [])),
    responses((status = 201, body = PlaybackToken), (status = 404, body = ErrorBody)))]
pub async fn create_playback_token(
    State(state): State<AppState>,
    caller: Tenant,
    Json(body): Json<CreatePlaybackToken>,
) -> ApiResult<(StatusCode, Json<PlaybackToken>)> {
    let lifetime = body.expires_in.unwrap_or(3600);
    let max = state.tokens.max_lifetime_s();
    if lifetime == 0 || lifetime > max {
        return Err(ApiError::invalid(format!("expires_in must be 1 to {max}")));
    }
    let audience = body.audience.unwrap_or_else(|| AUD_VIDEO.into());
    if ![AUD_VIDEO, AUD_THUMBNAIL, AUD_STORYBOARD].contains(&audience.as_str()) {
        return Err(ApiError::invalid("audience must be v, t or s"));
    }
    if let Some(r) = &body.max_resolution
        && crate::drm::resolution_lines(r).is_none()
    {
        return Err(ApiError::invalid("max_resolution must look like 720p"));
    }
    match state
        .jobs
        .db
        .find_playback_target(&body.playback_id)
        .await?
    {
        Some(target) if target.tenant_id == caller.tenant_id => {}
        _ => return Err(ApiError::NotFound("playback id not found".into())),
    }
    let expires_at = crate::clock::unix_now() + lifetime;
    let mut claims = PlaybackClaims::new(&body.playback_id, &audience, expires_at);
    claims.viewer = body.viewer;
    claims.referrer = body.referrer;
    claims.country = body.country;
    claims.max_resolution = body.max_resolution;
    let token = state.tokens.mint(&claims);
    Ok((
        StatusCode::CREATED,
        Json(PlaybackToken {
            token,
            expires_at: rfc3339(expires_at as i64 * 1000),
        }),
    ))
}
