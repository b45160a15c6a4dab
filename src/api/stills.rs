//! Stills: thumbnails (a frame of an asset at a time, rendered on first request and kept) and
//! storyboards (the scrubbing-preview sprite and its WebVTT), under the same access rules as
//! the video.

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::access::{ClientIp, Shown, TokenQuery, authorize, token_from};
use super::{AppState, Path, Query};
use crate::db::{PlaybackPolicy, PlaybackTarget};
use crate::drm::{AUD_STORYBOARD, AUD_THUMBNAIL};
use crate::error::{ApiError, ApiResult};
use crate::storage::ObjectKey;

#[derive(Debug, Default, Deserialize)]
pub struct ThumbnailQuery {
    token: Option<String>,
    /// Seconds into the media; none: the poster.
    time: Option<f64>,
    /// Pixels wide (height follows the aspect ratio), 16 to 1920; default 640.
    width: Option<u32>,
}

/// `GET /thumbnails/{playback_id}.jpg?time=12.5&width=320`: a frame of an asset, rendered on
/// first request from the original and kept in storage for the next.
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
    let width = q.width.unwrap_or(640);
    if !(16..=1920).contains(&width) {
        return Err(ApiError::invalid("width must be 16 to 1920"));
    }
    let name = match q.time {
        None if q.width.is_none() => "poster.jpg".to_string(),
        time => {
            let t = time.unwrap_or(0.0);
            if !t.is_finite() || t < 0.0 {
                return Err(ApiError::invalid(
                    "time must be a number of seconds, 0 or more",
                ));
            }
            format!("thumbnails/{}_{width}.jpg", (t * 1000.0).round() as u64)
        }
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
            let time = q.time.unwrap_or(0.0);
            let jpeg = tokio::task::spawn_blocking(move || {
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
    let cache = if target.policy == PlaybackPolicy::Signed {
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
