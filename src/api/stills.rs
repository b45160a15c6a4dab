//! Stills: thumbnails (a frame of an asset at a time, rendered on first request and kept) and
//! storyboards (the scrubbing-preview sprite and its WebVTT), under the same access rules as
//! the video. Renders are bounded: times snap to a grid of at most [`TIME_STEPS`] steps over
//! the video, widths to [`WIDTHS`] capped at the source's, so an asset has at most
//! 201 × 9 thumbnails kept; and renders are rate-limited per address and run a few at once.

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::access::{ClientIp, Shown, TokenQuery, authorize, token_from};
use super::{AppState, Path, Query};
use crate::db::{PlaybackPolicy, PlaybackTarget};
use crate::drm::{AUD_STORYBOARD, AUD_THUMBNAIL};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::storage::ObjectKey;

#[derive(Debug, Default, Deserialize)]
pub struct ThumbnailQuery {
    token: Option<String>,
    /// Seconds into the media; none: the poster.
    time: Option<f64>,
    /// Pixels wide (height follows the aspect ratio), 16 to 1920; default 640.
    width: Option<u32>,
}

/// Widths a thumbnail is rendered at: a request gets the first at or above what it asked,
/// no wider than the source.
pub const WIDTHS: [u32; 9] = [80, 160, 240, 320, 480, 640, 960, 1280, 1920];
/// Steps a video's duration is cut into for thumbnails (each at least a second long).
pub const TIME_STEPS: u64 = 200;

/// The frame a thumbnail request is served: `(milliseconds, width)` on the grid, or why none.
pub fn snap(
    time_s: f64,
    width: u32,
    duration_ms: Option<u64>,
    source_width: Option<u32>,
) -> Result<(u64, u32), String> {
    if !(16..=1920).contains(&width) {
        return Err("width must be 16 to 1920".into());
    }
    if !time_s.is_finite() || time_s < 0.0 {
        return Err("time must be a number of seconds, 0 or more".into());
    }
    let ms = (time_s * 1000.0).round() as u64;
    let step = match duration_ms {
        Some(d) if ms > d => {
            return Err(format!(
                "time is past the end of the video ({:.3} s)",
                d as f64 / 1000.0
            ));
        }
        Some(d) => d.div_ceil(TIME_STEPS).max(1000),
        None => 1000,
    };
    let width = WIDTHS.into_iter().find(|w| *w >= width).unwrap_or(1920);
    let width = source_width.map_or(width, |s| width.min(s.max(16)) & !1);
    Ok((ms / step * step, width))
}

/// How many thumbnails are rendered: per address (`playback.thumbnail_renders_per_ip`), and
/// at once on this server (one per core: the rest wait their turn).
#[derive(Debug)]
pub struct RenderLimits {
    per_ip: crate::drm::ratelimit::RateLimiter,
    at_once: std::sync::Arc<tokio::sync::Semaphore>,
}

impl RenderLimits {
    pub fn new(c: &crate::config::PlaybackConfig) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            per_ip: crate::drm::ratelimit::RateLimiter::new(
                c.thumbnail_renders_per_ip,
                c.thumbnail_render_burst_per_ip,
            ),
            at_once: std::sync::Arc::new(tokio::sync::Semaphore::new(cores)),
        }
    }
}

/// The displayed width of an asset's video, from its media info (turned by its rotation).
fn source_width(asset: &crate::db::Asset) -> Option<u32> {
    let info: serde_json::Value = serde_json::from_str(asset.media_info.as_deref()?).ok()?;
    let video = info.get("video")?;
    let (w, h) = (
        video.get("width")?.as_u64()?,
        video.get("height")?.as_u64()?,
    );
    let turned = matches!(
        video.get("rotation").and_then(|r| r.as_i64()),
        Some(90 | 270 | -90)
    );
    u32::try_from(if turned { h } else { w }).ok()
}

/// `GET /thumbnails/{playback_id}.jpg?time=12.5&width=320`: a frame of an asset, rendered on
/// first request from the original and kept in storage for the next. Times snap to the grid
/// and widths to [`WIDTHS`] ([`snap`]).
#[utoipa::path(get, path = "/thumbnails/{file}", tag = "playback",
    params(("file" = String, Path, description = "`{playback_id}.jpg`"), ("token" = Option<String>, Query, description = "The playback token (or `Authorization: Bearer`, or the `ferrocast_token` cookie); none for public media"),
        ("time" = Option<f64>, Query, description = "Seconds into the media; none: the poster"),
        ("width" = Option<u32>, Query, description = "Pixels wide, 16 to 1920 (default 640)")),
    responses((status = 200, content_type = "image/jpeg", body = String),
        (status = 401, body = ErrorBody, description = "No token, or one that does not verify"), (status = 403, body = ErrorBody, description = "A token that does not allow this (audience, referrer, country, entitlement, tier)"), (status = 429, body = ErrorBody)))]
pub async fn thumbnail(
    State(state): State<AppState>,
    Path(file): Path<String>,
    Query(q): Query<ThumbnailQuery>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let playback_id = file
        .strip_suffix(".jpg")
        .ok_or_else(|| ApiError::NotFound("thumbnails are .jpg".into()))?;
    let token = token_from(
        &TokenQuery {
            token: q.token.clone(),
            cmcd: None,
        },
        &headers,
    );
    // The poster is the one frame shown before a purchase; any other is the content itself.
    let poster = q.time.is_none() && q.width.is_none();
    let shown = if poster {
        Shown::Protected
    } else {
        Shown::Clear
    };
    let (target, _) = authorize(
        &state,
        playback_id,
        token.as_deref(),
        AUD_THUMBNAIL,
        shown,
        &headers,
        ip.as_deref(),
    )
    .await?;
    let prefix = target
        .prefix
        .as_deref()
        .ok_or_else(|| ApiError::NotFound("nothing to show yet".into()))?;
    let asset = if poster {
        None
    } else {
        state.jobs.db.asset_by_playback_id(playback_id).await?
    };
    // The grid needs the duration: an asset still being prepared has no frames to give.
    if asset.as_ref().is_some_and(|a| a.duration_ms.is_none()) {
        return Err(ApiError::Conflict(
            "the asset is still being prepared; thumbnails come once it is ready".into(),
        ));
    }
    let (time_ms, width) = snap(
        q.time.unwrap_or(0.0),
        q.width.unwrap_or(640),
        asset
            .as_ref()
            .and_then(|a| a.duration_ms)
            .map(|d| d.max(0) as u64),
        asset.as_ref().and_then(source_width),
    )
    .map_err(ApiError::invalid)?;
    let name = if poster {
        "poster.jpg".to_string()
    } else {
        format!("thumbnails/{time_ms}_{width}.jpg")
    };
    let key = ObjectKey::parse(&format!("{prefix}{name}"))?;
    let jpeg = match state.jobs.store.get(&key, None).await {
        Ok(o) => o.body,
        Err(crate::storage::StorageError::NotFound(_)) if name != "poster.jpg" => {
            let original = ObjectKey::parse(&format!("{prefix}original"))?;
            let source = match state
                .jobs
                .store
                .presign_get(&original, std::time::Duration::from_secs(300))
                .await
            {
                Ok(url) if state.jobs.store.head(&original).await.is_ok() => url,
                _ => {
                    return Err(ApiError::NotFound(
                        "thumbnails are made from uploaded originals; this has none".into(),
                    ));
                }
            };
            if let Some(ip) = &ip
                && let Err(wait) = state.renders.per_ip.check(ip)
            {
                metrics::counter!("ferrocast_thumbnail_renders_limited_total").increment(1);
                return Err(ApiError::TooManyRequests(
                    (wait.as_secs_f64().ceil() as u64).max(1),
                ));
            }
            // Held by the render itself: a request cut short does not free its turn early.
            let turn = state
                .renders
                .at_once
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| ApiError::Internal(e.into()))?;
            let time = time_ms as f64 / 1000.0;
            let jpeg = tokio::task::spawn_blocking(move || {
                let _turn = turn;
                crate::pipeline::vod::thumbnail(&source, time, width)
            })
            .await
            .map_err(|e| ApiError::Internal(e.into()))?
            .map_err(|e| ApiError::Unprocessable(format!("could not render a thumbnail: {e}")))?;
            let jpeg = bytes::Bytes::from(jpeg);
            state
                .jobs
                .store
                .put(&key, jpeg.clone(), "image/jpeg")
                .await?;
            jpeg
        }
        Err(e) => return Err(e.into()),
    };
    Ok(still_response(&target, "image/jpeg", jpeg))
}

/// Thumbnails and storyboards: immutable once made, cacheable by who may see them.
fn still_response(
    target: &PlaybackTarget,
    content_type: &'static str,
    body: bytes::Bytes,
) -> Response {
    let cache = if target.policy == PlaybackPolicy::Signed || target.requires_entitlement {
        "private, max-age=3600"
    } else {
        "public, max-age=86400"
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, cache),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        body,
    )
        .into_response()
}

/// `GET /storyboards/{playback_id}.vtt` and `.jpg`: scrubbing previews of an asset, a WebVTT
/// whose cues point into one sprite image (`#xywh=`); a query token is carried into them.
#[utoipa::path(get, path = "/storyboards/{file}", tag = "playback",
    params(("file" = String, Path, description = "`{playback_id}.vtt` or `{playback_id}.jpg`"), ("token" = Option<String>, Query, description = "The playback token (or `Authorization: Bearer`, or the `ferrocast_token` cookie); none for public media")),
    responses((status = 200, description = "WebVTT cues into the sprite, or the sprite",
            content((String = "text/vtt"), (String = "image/jpeg"))),
        (status = 401, body = ErrorBody, description = "No token, or one that does not verify"), (status = 403, body = ErrorBody, description = "A token that does not allow this (audience, referrer, country, entitlement, tier)"), (status = 429, body = ErrorBody)))]
pub async fn storyboard(
    State(state): State<AppState>,
    Path(file): Path<String>,
    Query(q): Query<TokenQuery>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (playback_id, ext) = file
        .rsplit_once('.')
        .ok_or_else(|| ApiError::NotFound("storyboards are .vtt or .jpg".into()))?;
    if ext != "vtt" && ext != "jpg" {
        return Err(ApiError::NotFound("storyboards are .vtt or .jpg".into()));
    }
    let token = token_from(&q, &headers);
    let (target, claims) = authorize(
        &state,
        playback_id,
        token.as_deref(),
        AUD_STORYBOARD,
        Shown::Clear,
        &headers,
        ip.as_deref(),
    )
    .await?;
    let prefix = target
        .prefix
        .as_deref()
        .ok_or_else(|| ApiError::NotFound("no storyboard".into()))?;
    let key = ObjectKey::parse(&format!("{prefix}storyboard.{ext}"))?;
    let object = state
        .jobs
        .store
        .get(&key, None)
        .await
        .map_err(|e| match e {
            crate::storage::StorageError::NotFound(_) => {
                ApiError::NotFound("this asset has no storyboard".into())
            }
            other => other.into(),
        })?;
    // A query token is carried into the cues only once it verified (public media verify
    // none), and percent-encoded: whatever it holds stays inside the cue's URI.
    let carried = claims
        .as_ref()
        .and(q.token.as_deref())
        .filter(|t| !t.is_empty());
    let body = match (ext, carried) {
        ("vtt", Some(t)) => {
            let t: String = url::form_urlencoded::byte_serialize(t.as_bytes()).collect();
            String::from_utf8_lossy(&object.body)
                .replace(".jpg#xywh=", &format!(".jpg?token={t}#xywh="))
                .into()
        }
        _ => object.body,
    };
    let content_type = if ext == "vtt" {
        "text/vtt"
    } else {
        "image/jpeg"
    };
    Ok(still_response(&target, content_type, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnails_snap_to_a_bounded_grid() {
        let ten_s = Some(10_000);
        assert_eq!(snap(5.0, 320, ten_s, Some(1280)), Ok((5000, 320)));
        assert_eq!(snap(5.4, 300, ten_s, Some(1280)), Ok((5000, 320)));
        assert_eq!(snap(5.0, 1920, ten_s, Some(1280)), Ok((5000, 1280)));
        assert_eq!(snap(0.0, 1920, ten_s, Some(853)), Ok((0, 852)));
        assert_eq!(snap(10.0, 16, ten_s, None), Ok((10_000, 80)));
        assert!(
            snap(10.5, 320, ten_s, None)
                .unwrap_err()
                .contains("past the end")
        );
        assert!(snap(-1.0, 320, ten_s, None).is_err());
        assert!(snap(f64::NAN, 320, ten_s, None).is_err());
        assert!(snap(1.0, 2000, ten_s, None).is_err());
        // A two-hour video: 36 s steps, so at most 201 times.
        let two_h = 7_200_000;
        let times: std::collections::HashSet<u64> = (0..=7200)
            .map(|t| snap(t as f64, 320, Some(two_h), None).unwrap().0)
            .collect();
        assert_eq!(times.len(), 201);
        let widths: std::collections::HashSet<u32> = (16..=1920)
            .map(|w| snap(0.0, w, None, None).unwrap().1)
            .collect();
        assert_eq!(widths.len(), WIDTHS.len());
    }
}
