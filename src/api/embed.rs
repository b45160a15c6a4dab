//! Embedding: the iframe snippet of a playback id (for the creator), and oEmbed (for a CMS
//! such as WordPress that is given a `/play` or `/embed` link). The snippet's URL is built
//! from this server's public URL and a playback id that exists, never copied from the
//! request.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::access::target_of;
use super::auth::Tenant;
use super::{AppState, Json, Path, Query, escape_html};
use crate::db::PlaybackPolicy;
use crate::drm::AUD_VIDEO;
use crate::error::{ApiError, ApiResult, ErrorBody};

const DEFAULT_WIDTH: u32 = 640;
const MIN_SIDE: u32 = 16;
const MAX_SIDE: u32 = 3840;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EmbedQuery {
    /// The iframe's width in pixels, 16 to 3840 (default 640).
    pub width: Option<u32>,
    /// Its height (default: 16:9 of the width).
    pub height: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"playback_id": "8f3a9c2e41d04b7f", "url": "https://video.example.com/embed/8f3a9c2e41d04b7f",
    "html": "<iframe src=\"https://video.example.com/embed/8f3a9c2e41d04b7f\" width=\"640\" height=\"360\" title=\"Video\" allow=\"autoplay; fullscreen; encrypted-media; picture-in-picture\" allowfullscreen></iframe>",
    "oembed_url": "https://video.example.com/oembed?url=https%3A%2F%2Fvideo.example.com%2Fplay%2F8f3a9c2e41d04b7f",
    "width": 640, "height": 360, "signed": false}))]
pub struct EmbedView {
    pub playback_id: String,
    /// The embed page: the player alone, filling its frame.
    pub url: String,
    /// An `<iframe>` to paste into a page. For a signed playback id, add `?token=` with a
    /// playback token to its `src`.
    pub html: String,
    /// The oEmbed URL of the playback id's page.
    pub oembed_url: String,
    pub width: u32,
    pub height: u32,
    /// Whether the playback id needs a token (so the snippet does too).
    pub signed: bool,
}

fn size(width: Option<u32>, height: Option<u32>) -> ApiResult<(u32, u32)> {
    let width = width.unwrap_or(DEFAULT_WIDTH);
    let height = height.unwrap_or(width.saturating_mul(9) / 16);
    for side in [width, height] {
        if !(MIN_SIDE..=MAX_SIDE).contains(&side) {
            return Err(ApiError::invalid(format!(
                "width and height must be {MIN_SIDE} to {MAX_SIDE} pixels"
            )));
        }
    }
    Ok((width, height))
}

fn iframe(src: &str, width: u32, height: u32, title: &str) -> String {
    format!(
        r#"<iframe src="{}" width="{width}" height="{height}" title="{}" allow="autoplay; fullscreen; encrypted-media; picture-in-picture" allowfullscreen></iframe>"#,
        escape_html(src),
        escape_html(title)
    )
}

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The iframe snippet that embeds a playback id's player in another site.
#[utoipa::path(get, path = "/v1/playback-ids/{playback_id}/embed", tag = "playback", params(EmbedQuery),
    security(("api_key" = [])),
    responses((status = 200, body = EmbedView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn snippet(
    State(state): State<AppState>,
    caller: Tenant,
    Path(playback_id): Path<String>,
    Query(q): Query<EmbedQuery>,
) -> ApiResult<Json<EmbedView>> {
    let (width, height) = size(q.width, q.height)?;
    let target = target_of(&state, &playback_id).await?;
    if target.tenant_id != caller.tenant_id {
        return Err(ApiError::NotFound("playback id not found".into()));
    }
    let base = &state.jobs.public_url;
    let url = format!("{base}/embed/{playback_id}");
    let title = state
        .jobs
        .db
        .branding(&caller.tenant_id)
        .await?
        .name
        .unwrap_or_else(|| "Video".into());
    Ok(Json(EmbedView {
        html: iframe(&url, width, height, &title),
        oembed_url: format!(
            "{base}/oembed?url={}",
            encode(&format!("{base}/play/{playback_id}"))
        ),
        url,
        width,
        height,
        signed: target.policy == PlaybackPolicy::Signed,
        playback_id,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OEmbedQuery {
    /// A `/play/{playback_id}` or `/embed/{playback_id}` URL of this server (with `?token=`
    /// for a signed playback id).
    pub url: String,
    pub maxwidth: Option<u32>,
    pub maxheight: Option<u32>,
    /// `json` (the default). `xml` is not served (501, as oEmbed says); anything else is 400.
    #[param(pattern = "^(json)?$")]
    pub format: Option<String>,
}

/// An oEmbed 1.0 `video` response.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"version": "1.0", "type": "video", "provider_name": "Acme TV",
    "provider_url": "https://video.example.com", "title": "Acme TV",
    "html": "<iframe src=\"https://video.example.com/embed/8f3a9c2e41d04b7f\" width=\"640\" height=\"360\" title=\"Acme TV\" allow=\"autoplay; fullscreen; encrypted-media; picture-in-picture\" allowfullscreen></iframe>",
    "width": 640, "height": 360}))]
pub struct OEmbed {
    pub version: &'static str,
    pub r#type: &'static str,
    pub provider_name: String,
    pub provider_url: String,
    pub title: String,
    pub html: String,
    pub width: u32,
    pub height: u32,
}

/// oEmbed for this server's player links: the iframe of the player, as large as the
/// consumer's `maxwidth`/`maxheight` allow (16:9, 640×360 at most by default). A signed
/// playback id's URL must carry a token that plays it (401 otherwise).
#[utoipa::path(get, path = "/oembed", tag = "playback", params(OEmbedQuery),
    responses((status = 200, body = OEmbed), (status = 401, body = ErrorBody, description = "A signed playback id, without a token that plays it"),
        (status = 404, body = ErrorBody, description = "Not a player URL of this server, or no such playback id"),
        (status = 501, body = ErrorBody, description = "`format=xml`: not served")))]
pub async fn oembed(
    State(state): State<AppState>,
    Query(q): Query<OEmbedQuery>,
) -> ApiResult<Response> {
    match q.format.as_deref() {
        None | Some("" | "json") => {}
        Some("xml") => {
            return Ok((
                StatusCode::NOT_IMPLEMENTED,
                Json(ErrorBody {
                    error: crate::error::ErrorDetail {
                        code: "not_implemented".into(),
                        message: "only format=json is served".into(),
                    },
                }),
            )
                .into_response());
        }
        Some(_) => return Err(ApiError::invalid("format must be json")),
    }
    let base = &state.jobs.public_url;
    let not_ours = || ApiError::NotFound("not a player URL of this server".into());
    let asked = url::Url::parse(&q.url).map_err(|_| not_ours())?;
    let ours = url::Url::parse(base).map_err(|_| not_ours())?;
    if asked.origin() != ours.origin() {
        return Err(not_ours());
    }
    let mut segments = asked.path_segments().ok_or_else(not_ours)?;
    let (Some("play" | "embed"), Some(playback_id), None) =
        (segments.next(), segments.next(), segments.next())
    else {
        return Err(not_ours());
    };
    let target = target_of(&state, playback_id).await?;
    let mut src = format!("{base}/embed/{playback_id}");
    if target.policy == PlaybackPolicy::Signed {
        // Only a token that plays this id is carried into the snippet.
        let token = asked
            .query_pairs()
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
            .ok_or_else(|| ApiError::Unauthorized("this video needs a playback token".into()))?;
        let verified = state
            .tokens
            .verify(&token, Some(playback_id), AUD_VIDEO)
            .await
            .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
        if verified
            .signed_by_tenant
            .is_some_and(|t| t != target.tenant_id)
        {
            return Err(ApiError::Unauthorized(
                "playback token is signed by another tenant's key".into(),
            ));
        }
        src.push_str(&format!("?token={}", encode(&token)));
    }
    let (mut width, mut height) = (DEFAULT_WIDTH, DEFAULT_WIDTH * 9 / 16);
    if let Some(w) = q.maxwidth.filter(|w| *w < width) {
        width = w.max(MIN_SIDE);
        height = width * 9 / 16;
    }
    if let Some(h) = q.maxheight.filter(|h| *h < height) {
        height = h.max(MIN_SIDE);
        width = height * 16 / 9;
    }
    let name = state
        .jobs
        .db
        .branding(&target.tenant_id)
        .await?
        .name
        .unwrap_or_else(|| "Ferrocast".into());
    Ok(Json(OEmbed {
        version: "1.0",
        r#type: "video",
        html: iframe(&src, width, height, &name),
        provider_url: base.clone(),
        provider_name: name.clone(),
        title: name,
        width,
        height,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_snippets() {
        assert_eq!(size(None, None).unwrap(), (640, 360));
        assert_eq!(size(Some(1280), None).unwrap(), (1280, 720));
        assert!(size(Some(0), None).is_err());
        assert!(size(Some(640), Some(100_000)).is_err());
        assert!(size(Some(u32::MAX), None).is_err());
        let html = iframe(
            "https://v.example/embed/a?token=x&y",
            640,
            360,
            "A \"B\" <C>",
        );
        assert!(
            html.contains(r#"src="https://v.example/embed/a?token=x&amp;y""#),
            "{html}"
        );
        assert!(
            html.contains(r#"title="A &quot;B&quot; &lt;C&gt;""#),
            "{html}"
        );
    }
}
