//! Assets: uploaded files and recorded broadcasts, with their processing state.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::Tenant;
use super::{AppState, Json, List, Page, Path, Query, rfc3339};
use crate::db::{self, AssetStatus, JobStatus, PlaybackPolicy};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::media::Packaging;
use crate::media::cenc::Scheme;
use crate::storage::Prefix;

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"id": "01a24fc3-9a88-71ec-b9e8-97db0e87782c", "status": "ready", "source": "upload", "live_stream_id": null, "playback_id": "0a7b59a23c8ab62419f88b50adf92c5e", "playback_policy": "signed", "duration_s": 63.4, "size_bytes": 48213990, "filename": "keynote.mp4", "ladder": "default", "packaging": "both", "cenc_scheme": null, "media_info": {"duration_s": 63.4, "video": {"codec": "h264", "width": 1920, "height": 1080, "fps": 30.0}, "audio": {"codec": "aac", "channels": 2, "sample_rate": 48000}}, "progress": null, "eta_s": null, "error": null, "created_at": "2026-12-07T09:08:26.199Z"}))]
pub struct AssetView {
    pub id: String,
    /// `uploading`, `queued`, `processing`, `ready` or `errored`.
    pub status: AssetStatus,
    /// `upload` or `live` (a recorded broadcast).
    pub source: String,
    pub live_stream_id: Option<String>,
    pub playback_id: String,
    pub playback_policy: PlaybackPolicy,
    pub duration_s: Option<f64>,
    pub size_bytes: Option<i64>,
    pub filename: Option<String>,
    /// The ladder preset it was (or will be) transcoded with; none for a recording.
    pub ladder: Option<String>,
    /// `ts`, `cmaf` or `both`, as asked at upload, or the broadcast's for a recording; `null`:
    /// the ladder preset's.
    pub packaging: Option<Packaging>,
    /// `cbcs` or `cenc` for CMAF, as asked; `null`: the ladder preset's.
    pub cenc_scheme: Option<Scheme>,
    /// What probing found: duration, streams, codecs, resolution.
    #[schema(value_type = Option<Object>)]
    pub media_info: Option<serde_json::Value>,
    /// Percent done while processing.
    pub progress: Option<f64>,
    /// Seconds left while processing, estimated from progress so far.
    pub eta_s: Option<f64>,
    /// Why processing failed, in words.
    pub error: Option<String>,
    pub created_at: String,
}

async fn view(state: &AppState, a: db::Asset) -> ApiResult<AssetView> {
    let (progress, eta_s) = if a.status == AssetStatus::Processing {
        match state.jobs.db.latest_job_for_asset(&a.id).await? {
            Some(job) if job.status == JobStatus::Running => {
                let fraction = job.progress_permille as f64 / 1000.0;
                let started = job.started_at.unwrap_or(job.updated_at);
                let elapsed = (crate::clock::now_ms() - started).max(0) as f64 / 1000.0;
                let eta = (fraction > 0.02).then(|| (elapsed / fraction - elapsed).max(0.0));
                (Some((fraction * 1000.0).round() / 10.0), eta)
            }
            _ => (Some(0.0), None),
        }
    } else {
        (None, None)
    };
    Ok(asset_view(a, progress, eta_s))
}

/// `a` as the API shows it, with its progress and ETA if processing.
pub(super) fn asset_view(a: db::Asset, progress: Option<f64>, eta_s: Option<f64>) -> AssetView {
    AssetView {
        playback_policy: if a.playback_policy == "public" {
            PlaybackPolicy::Public
        } else {
            PlaybackPolicy::Signed
        },
        id: a.id,
        status: a.status,
        source: a.source,
        live_stream_id: a.live_stream_id,
        playback_id: a.playback_id,
        duration_s: a.duration_ms.map(|ms| ms as f64 / 1000.0),
        size_bytes: a.size_bytes,
        filename: a.filename,
        ladder: a.ladder,
        packaging: a.packaging.as_deref().and_then(Packaging::parse),
        cenc_scheme: a.cenc_scheme.as_deref().and_then(Scheme::parse),
        media_info: a.media_info.and_then(|j| serde_json::from_str(&j).ok()),
        progress,
        eta_s,
        error: a.error,
        created_at: rfc3339(a.created_at),
    }
}

/// Get an asset, with progress and an ETA while it is processing.
#[utoipa::path(get, path = "/v1/assets/{id}", tag = "assets", security(("api_key" = [])),
    responses((status = 200, body = AssetView), (status = 404, body = ErrorBody)))]
pub async fn get_asset(
    State(state): State<AppState>,
    caller: Tenant,
    Path(id): Path<String>,
) -> ApiResult<Json<AssetView>> {
    let asset = state.jobs.db.get_asset(&caller.tenant_id, &id).await?;
    Ok(Json(view(&state, asset).await?))
}

/// List assets.
#[utoipa::path(get, path = "/v1/assets", tag = "assets", params(Page), security(("api_key" = [])),
    responses((status = 200, body = List<AssetView>)))]
pub async fn list_assets(
    State(state): State<AppState>,
    caller: Tenant,
    Query(page): Query<Page>,
) -> ApiResult<Json<List<AssetView>>> {
    let limit = page.limit()?;
    let assets = state
        .jobs
        .db
        .list_assets(&caller.tenant_id, page.cursor.as_deref(), limit)
        .await?;
    let list = List::new(assets, limit, |a| &a.id);
    let mut data = Vec::with_capacity(list.data.len());
    for a in list.data {
        data.push(view(&state, a).await?);
    }
    Ok(Json(List {
        data,
        next_cursor: list.next_cursor,
    }))
}

/// One Server-Sent Event of `GET /v1/assets/{id}/events`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AssetEvent {
    /// `asset`.
    pub event: String,
    /// The asset as JSON, as `GET /v1/assets/{id}` answers it.
    pub data: String,
}

/// Progress as Server-Sent Events: an `asset` event with the asset (status, progress, ETA)
/// whenever it changes, ending once it is `ready` or `errored`.
#[utoipa::path(get, path = "/v1/assets/{id}/events", tag = "assets", security(("api_key" = [])),
    responses((status = 200, content_type = "text/event-stream", body = AssetEvent,
            description = "`event: asset` with the asset as `GET /v1/assets/{id}` shows it, at each change"),
        (status = 404, body = ErrorBody)))]
pub async fn asset_events(
    State(state): State<AppState>,
    caller: Tenant,
    Path(id): Path<String>,
) -> ApiResult<
    axum::response::sse::Sse<
        impl futures::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
    >,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    state.jobs.db.get_asset(&caller.tenant_id, &id).await?;
    let tenant = caller.tenant_id;
    let stream =
        futures::stream::unfold((state, String::new(), false), move |(state, last, done)| {
            let (tenant, id) = (tenant.clone(), id.clone());
            async move {
                if done {
                    return None;
                }
                loop {
                    let asset = match state.jobs.db.get_asset(&tenant, &id).await {
                        Ok(a) => a,
                        Err(_) => {
                            return Some((
                                Ok(Event::default().event("deleted").data("{}")),
                                (state, last, true),
                            ));
                        }
                    };
                    let Ok(v) = view(&state, asset).await else {
                        return None;
                    };
                    let text = serde_json::to_string(&v).unwrap_or_default();
                    let finished = matches!(v.status, AssetStatus::Ready | AssetStatus::Errored);
                    if text != last {
                        return Some((
                            Ok(Event::default().event("asset").data(text.clone())),
                            (state, text, finished),
                        ));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddSubtitles {
    /// BCP 47 language code, e.g. `en`, `pt-BR`.
    pub language: String,
    /// Label players show; default: the language code.
    pub name: Option<String>,
    /// The subtitle file, SRT or WebVTT.
    pub content: String,
}

#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct SubtitleTrack {
    pub language: String,
    pub name: String,
    pub cues: usize,
}

/// Add (or replace) a subtitle track: SRT or WebVTT, stored as WebVTT and offered by the
/// master playlist as a SUBTITLES group. A bad file is refused with the line at fault.
#[utoipa::path(post, path = "/v1/assets/{id}/subtitles", tag = "assets", request_body(content = AddSubtitles,
        example = json!({"language": "en", "name": "English", "content": "WEBVTT\n\n00:00.000 --> 00:02.000\nHello\n"})),
    security(("api_key" = [])),
    responses((status = 201, body = SubtitleTrack), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn add_subtitles(
    State(state): State<AppState>,
    caller: Tenant,
    Path(id): Path<String>,
    Json(body): Json<AddSubtitles>,
) -> ApiResult<(StatusCode, Json<SubtitleTrack>)> {
    use crate::packager::subtitles;
    use crate::storage::ObjectKey;
    let asset = state.jobs.db.get_asset(&caller.tenant_id, &id).await?;
    if asset.status != AssetStatus::Ready {
        return Err(ApiError::Conflict(format!(
            "the asset is {}; add subtitles once it is ready",
            asset.status
        )));
    }
    let lang = subtitles::check_language(&body.language).map_err(ApiError::invalid)?;
    let name = match &body.name {
        Some(n) if !n.trim().is_empty() => subtitles::check_name(n).map_err(ApiError::invalid)?,
        _ => lang,
    }
    .to_string();
    let cues = subtitles::parse(&body.content)
        .map_err(|e| ApiError::Unprocessable(format!("subtitles {e}")))?;
    let prefix = &asset.storage_prefix;
    let key = |name: &str| ObjectKey::parse(&format!("{prefix}{name}"));
    let duration = asset.duration_ms.unwrap_or(0) as f64 / 1000.0;
    state
        .jobs
        .store
        .put(
            &key(&format!("subtitles/{lang}.vtt"))?,
            subtitles::to_webvtt(&cues).into(),
            "text/vtt",
        )
        .await?;
    state
        .jobs
        .store
        .put(
            &key(&format!("subtitles/{lang}.m3u8"))?,
            subtitles::subtitle_playlist(&format!("{lang}.vtt"), duration).into(),
            "application/vnd.apple.mpegurl",
        )
        .await?;
    // The track list lives beside the tracks; the master playlist is rebuilt from it.
    let tracks_key = key("subtitles/tracks.json")?;
    let mut tracks: Vec<SubtitleTrack> = match state.jobs.store.get(&tracks_key, None).await {
        Ok(o) => serde_json::from_slice(&o.body).unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    tracks.retain(|t| t.language != lang);
    tracks.push(SubtitleTrack {
        language: lang.to_string(),
        name: name.clone(),
        cues: cues.len(),
    });
    let master_key = key("master.m3u8")?;
    let master = state.jobs.store.get(&master_key, None).await?;
    let listed: Vec<subtitles::Track> = tracks
        .iter()
        .map(|t| subtitles::Track {
            language: t.language.clone(),
            name: t.name.clone(),
            uri: format!("subtitles/{}.m3u8", t.language),
        })
        .collect();
    let master = subtitles::master_with_subtitles(&String::from_utf8_lossy(&master.body), &listed)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!(e)))?;
    state
        .jobs
        .store
        .put(
            &tracks_key,
            serde_json::to_vec(&tracks)
                .map_err(|e| ApiError::Internal(e.into()))?
                .into(),
            "application/json",
        )
        .await?;
    state
        .jobs
        .store
        .put(&master_key, master.into(), "application/vnd.apple.mpegurl")
        .await?;
    // Viewers of this node see the new track at once (others within the playlist TTL).
    state.delivery_cache.forget(master_key.as_str());
    Ok((
        StatusCode::CREATED,
        Json(SubtitleTrack {
            language: lang.to_string(),
            name,
            cues: cues.len(),
        }),
    ))
}

/// Delete an asset and every object and key stored for it.
#[utoipa::path(delete, path = "/v1/assets/{id}", tag = "assets", security(("api_key" = [])),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_asset(
    State(state): State<AppState>,
    caller: Tenant,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let asset = state.jobs.db.get_asset(&caller.tenant_id, &id).await?;
    // Objects first: if storage fails, the asset remains and the delete can be retried.
    let removed = state
        .jobs
        .store
        .delete_prefix(&Prefix::parse(&asset.storage_prefix)?)
        .await?;
    state
        .jobs
        .db
        .delete_content_keys(&asset.storage_prefix)
        .await?;
    state.jobs.db.delete_jobs_for_asset(&asset.id).await?;
    state.jobs.db.delete_asset(&caller.tenant_id, &id).await?;
    tracing::info!(asset = %id, objects = removed, "asset deleted");
    Ok(StatusCode::NO_CONTENT)
}
