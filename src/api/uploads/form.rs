//! `POST /v1/assets` with `multipart/form-data`: a small file in one request, checked
//! against the limits as it streams to a temporary file, then stored and queued.

use super::*;

/// `POST /v1/assets` with `multipart/form-data`: a small file in one request (field `file`;
/// optional fields `playback_policy`, `ladder`, `packaging`, `cenc_scheme`). Answers the
/// asset, already queued.
#[utoipa::path(post, path = "/v1/assets", tag = "assets", security(("api_key" = [])),
    request_body(content = UploadForm, content_type = "multipart/form-data",
        example = json!({"file": "(the file's bytes)", "playback_policy": "public", "ladder": "default"})),
    responses((status = 201, body = AssetQueued),
        (status = 422, body = ErrorBody, description = "Not playable media")))]
pub async fn multipart_upload(
    State(state): State<AppState>,
    caller: Tenant,
    mut form: axum::extract::Multipart,
) -> ApiResult<(StatusCode, axum::Json<serde_json::Value>)> {
    let dir = state.jobs.config.data_dir.join("uploads");
    tokio::fs::create_dir_all(&dir).await.map_err(|e| {
        ApiError::Internal(anyhow::Error::new(e).context("creating the uploads folder"))
    })?;
    let temp = dir.join(format!("{}.form", uuid::Uuid::new_v4()));
    let result = receive_form(&state, &caller.tenant_id, &mut form, &temp).await;
    let _ = tokio::fs::remove_file(&temp).await;
    result
}

async fn receive_form(
    state: &AppState,
    tenant_id: &str,
    form: &mut axum::extract::Multipart,
    temp: &std::path::Path,
) -> ApiResult<(StatusCode, axum::Json<serde_json::Value>)> {
    let bad = |e: axum::extract::multipart::MultipartError| {
        ApiError::invalid(format!("multipart body: {}", e.body_text()))
    };
    let io =
        |e: std::io::Error| ApiError::Internal(anyhow::Error::new(e).context("writing an upload"));
    let limit = state.jobs.config.uploads.max_size_bytes;
    let mut policy = PlaybackPolicy::Signed;
    let (mut ladder, mut packaging, mut cenc_scheme) = (None, None, None);
    let mut file: Option<(Option<String>, u64)> = None;
    while let Some(mut field) = form.next_field().await.map_err(bad)? {
        match field.name() {
            Some("playback_policy") => {
                policy = match small_text(&mut field).await?.as_str() {
                    "public" => PlaybackPolicy::Public,
                    "signed" => PlaybackPolicy::Signed,
                    other => {
                        return Err(ApiError::invalid(format!(
                            "playback_policy {other:?} must be public or signed"
                        )));
                    }
                }
            }
            Some("ladder") => ladder = Some(small_text(&mut field).await?),
            Some("packaging") => packaging = Some(small_text(&mut field).await?),
            Some("cenc_scheme") => cenc_scheme = Some(small_text(&mut field).await?),
            Some("file") => {
                let filename = field.file_name().map(str::to_string);
                let mut out = tokio::fs::File::create(temp).await.map_err(io)?;
                let mut size = 0u64;
                while let Some(chunk) = field.chunk().await.map_err(bad)? {
                    size += chunk.len() as u64;
                    if size > limit {
                        return Err(ApiError::PayloadTooLarge(format!(
                            "the file is larger than the limit of {limit} bytes"
                        )));
                    }
                    out.write_all(&chunk).await.map_err(io)?;
                }
                out.sync_data().await.map_err(io)?;
                file = Some((filename, size));
            }
            _ => {}
        }
    }
    let (filename, size) = file.ok_or_else(|| ApiError::invalid("the form has no `file` field"))?;
    let choice = output_choice(
        state,
        ladder.as_deref(),
        packaging.as_deref(),
        cenc_scheme.as_deref(),
    )?;
    let quota = state.jobs.config.uploads.tenant_quota_bytes;
    if quota > 0 && state.jobs.db.tenant_upload_bytes(tenant_id).await?.max(0) as u64 + size > quota
    {
        return Err(ApiError::PayloadTooLarge(
            "this upload would exceed the tenant's quota".into(),
        ));
    }
    let asset =
        new_upload_asset(state, tenant_id, policy, size, filename.as_deref(), &choice).await?;
    let key = ObjectKey::parse(&format!("{}original", asset.storage_prefix))?;
    state
        .jobs
        .store
        .put_file(&key, temp, "application/octet-stream")
        .await?;
    queue_transcode(state, tenant_id, &asset.id).await?;
    tracing::info!(asset = %asset.id, bytes = size, "form upload stored; transcode queued");
    Ok((
        StatusCode::CREATED,
        axum::Json(
            serde_json::json!({"asset_id": asset.id, "playback_id": asset.playback_id, "status": "queued"}),
        ),
    ))
}

/// Bytes a form's text field (not the file) may hold.
const FORM_TEXT_MAX: usize = 4 * 1024;

/// A text field of a form, read up to [`FORM_TEXT_MAX`] bytes: a longer one is refused as
/// soon as it passes the limit, never buffered whole.
async fn small_text(field: &mut axum::extract::multipart::Field<'_>) -> ApiResult<String> {
    let name = field.name().unwrap_or_default().to_string();
    let mut text = Vec::new();
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| ApiError::invalid(format!("multipart body: {}", e.body_text())))?
    {
        if text.len() + chunk.len() > FORM_TEXT_MAX {
            return Err(ApiError::invalid(format!(
                "the form field {name} is longer than {FORM_TEXT_MAX} bytes"
            )));
        }
        text.extend_from_slice(&chunk);
    }
    String::from_utf8(text)
        .map_err(|_| ApiError::invalid(format!("the form field {name} is not UTF-8 text")))
}

/// A file in one `multipart/form-data` request.
#[derive(Debug, utoipa::ToSchema)]
pub struct UploadForm {
    /// The media file (up to `uploads.max_size_bytes`).
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
    /// `public` or `signed` (default).
    pub playback_policy: Option<PlaybackPolicy>,
    /// A ladder preset (default `default`).
    pub ladder: Option<String>,
    /// `ts`, `cmaf` or `both`; default: the ladder preset's.
    pub packaging: Option<String>,
    /// For CMAF: `cbcs` (default) or `cenc`.
    pub cenc_scheme: Option<String>,
}
