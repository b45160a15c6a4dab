//! Direct uploads (`POST /v1/direct-uploads`): the client sends the file straight to S3
//! with presigned part URLs, then asks Ferrocast to assemble it and queue the transcode.

use super::*;

/// One part's presigned URL.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct DirectPart {
    pub part_number: i64,
    /// PUT the part's bytes here; keep the answer's `ETag`.
    pub url: String,
}

/// A direct upload: PUT each part to its URL, then POST the parts' ETags to `complete_url`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct DirectUpload {
    pub upload_id: String,
    pub asset_id: String,
    pub playback_id: String,
    pub part_size: u64,
    pub parts: Vec<DirectPart>,
    pub complete_url: String,
    pub expires_at: String,
}

#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDirectUpload {
    pub size: u64,
    pub filename: Option<String>,
    pub playback_policy: Option<PlaybackPolicy>,
    pub ladder: Option<String>,
    /// `ts`, `cmaf` or `both`; default: the ladder preset's (`ts` for the shipped ones).
    pub packaging: Option<Packaging>,
    /// For CMAF: `cbcs` (default) or `cenc`.
    pub cenc_scheme: Option<Scheme>,
}

/// `POST /v1/direct-uploads` `{size, filename?, playback_policy?}`: the client uploads straight
/// to S3 with presigned part URLs (Mux-style direct upload), then calls `complete_url`.
#[utoipa::path(post, path = "/v1/direct-uploads", tag = "assets", security(("api_key" = [])),
    request_body(content = CreateDirectUpload,
        example = json!({"size": 104857600, "filename": "talk.mp4", "playback_policy": "signed"})),
    responses((status = 201, body = DirectUpload),
        (status = 409, body = ErrorBody, description = "Storage is not S3: use tus")))]
pub async fn create_direct(
    State(state): State<AppState>,
    caller: Tenant,
    Json(body): Json<CreateDirectUpload>,
) -> ApiResult<(StatusCode, axum::Json<serde_json::Value>)> {
    if body.size == 0 {
        return Err(ApiError::invalid("size must be at least 1 byte"));
    }
    check_size(&state, &caller.tenant_id, body.size).await?;
    let mut choice = output_choice(&state, body.ladder.as_deref(), None, None)?;
    choice.packaging = body.packaging;
    choice.cenc_scheme = body.cenc_scheme;
    let policy = body.playback_policy.unwrap_or(PlaybackPolicy::Signed);
    let asset = new_upload_asset(
        &state,
        &caller.tenant_id,
        policy,
        body.size,
        body.filename.as_deref(),
        &choice,
    )
    .await?;
    let key = ObjectKey::parse(&format!("{}original", asset.storage_prefix))?;
    // S3 allows 10 000 parts of at least 5 MiB.
    let part_size = (8u64 << 20).max(body.size.div_ceil(10_000));
    let expires_ms = state.jobs.config.uploads.expiry_hours as i64 * 3_600_000;
    let direct = match state
        .jobs
        .store
        .create_direct_upload(
            &key,
            body.size,
            part_size,
            std::time::Duration::from_millis(expires_ms as u64),
        )
        .await
    {
        Ok(d) => d,
        Err(e) => {
            state
                .jobs
                .db
                .delete_asset(&caller.tenant_id, &asset.id)
                .await?;
            return Err(e.into());
        }
    };
    let metadata =
        serde_json::json!({"filename": body.filename, "direct_upload_id": direct.upload_id});
    let upload = state
        .jobs
        .db
        .create_upload(
            &caller.tenant_id,
            &asset.id,
            body.size as i64,
            &metadata.to_string(),
            now_ms() + expires_ms,
        )
        .await?;
    let parts: Vec<_> = direct
        .part_urls
        .iter()
        .enumerate()
        .map(|(i, url)| serde_json::json!({"part_number": i + 1, "url": url}))
        .collect();
    Ok((
        StatusCode::CREATED,
        axum::Json(serde_json::json!({
            "upload_id": upload.id,
            "asset_id": asset.id,
            "playback_id": asset.playback_id,
            "part_size": direct.part_size,
            "parts": parts,
            "complete_url": format!("{}/v1/direct-uploads/{}/complete", state.jobs.public_url, upload.id),
            "expires_at": super::super::rfc3339(upload.expires_at),
        })),
    ))
}

#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
pub struct CompletedPart {
    pub part_number: i32,
    pub etag: String,
}

#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteDirectUpload {
    pub parts: Vec<CompletedPart>,
}

/// `POST /v1/direct-uploads/{id}/complete` `{parts: [{part_number, etag}]}`: the client has
/// sent every part; the upload is assembled in S3 and the transcode queued.
#[utoipa::path(post, path = "/v1/direct-uploads/{id}/complete", tag = "assets",
    security(("api_key" = [])),
    request_body(content = CompleteDirectUpload,
        example = json!({"parts": [{"part_number": 1, "etag": "\"9b2cf535f27731c974343645a3985328\""}]})),
    responses((status = 200, body = AssetQueued), (status = 409, body = ErrorBody),
        (status = 410, body = ErrorBody)))]
pub async fn complete_direct(
    State(state): State<AppState>,
    caller: Tenant,
    Path(id): Path<String>,
    Json(body): Json<CompleteDirectUpload>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    let upload = live_upload(&state, &caller.tenant_id, &id).await?;
    if upload.completed_at.is_some() {
        return Err(ApiError::Conflict("this upload is already complete".into()));
    }
    let meta: serde_json::Value = serde_json::from_str(&upload.metadata).unwrap_or_default();
    let s3_id = meta["direct_upload_id"].as_str().ok_or_else(|| {
        ApiError::Conflict("this is a tus upload; send its bytes with PATCH".into())
    })?;
    let asset = state
        .jobs
        .db
        .get_asset(&upload.tenant_id, &upload.asset_id)
        .await?;
    let key = ObjectKey::parse(&format!("{}original", asset.storage_prefix))?;
    let parts: Vec<(i32, String)> = body
        .parts
        .into_iter()
        .map(|p| (p.part_number, p.etag))
        .collect();
    state
        .jobs
        .store
        .complete_direct_upload(&key, s3_id, &parts)
        .await?;
    let size = state.jobs.store.head(&key).await?.size;
    if size != upload.length as u64 {
        state.jobs.store.delete(&key).await?;
        return Err(ApiError::invalid(format!(
            "the parts hold {size} bytes, not the {} announced",
            upload.length
        )));
    }
    state
        .jobs
        .db
        .set_upload_received(&upload.id, upload.length)
        .await?;
    state.jobs.db.complete_upload(&upload.id).await?;
    queue_transcode(&state, &upload.tenant_id, &asset.id).await?;
    Ok(axum::Json(
        serde_json::json!({"asset_id": asset.id, "status": "queued"}),
    ))
}
