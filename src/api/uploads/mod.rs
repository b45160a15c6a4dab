//! Resumable uploads, speaking tus 1.0 (core, creation, termination, expiration). Bytes land
//! in a file under `DATA_DIR/uploads` and the stored offset survives restarts; a finished
//! upload moves into object storage and queues the asset's transcode job. The two other ways
//! in, a small file in one form post (`form`) and a direct upload to S3 (`direct`), share
//! this module's checks (size and quota, ladder and packaging) and its asset and job steps.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures::StreamExt;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use super::auth::Tenant;
use super::{AppState, Json, Path};
use crate::clock::now_ms;
use crate::db::{AssetStatus, OutputChoice, PlaybackPolicy, Upload};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::ids::new_playback_id;
use crate::media::Packaging;
use crate::media::cenc::Scheme;
use crate::storage::ObjectKey;

mod direct;
mod form;

pub use direct::*;
pub use form::*;

const TUS_VERSION: &str = "1.0.0";
const TUS_EXTENSIONS: &str = "creation,termination,expiration,checksum";

/// Uploads with a PATCH in progress: tus allows one writer per upload at a time.
#[derive(Debug, Default, Clone)]
pub struct UploadLocks(Arc<Mutex<HashSet<String>>>);

struct Held(UploadLocks, String);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.0.lock().expect("lock").remove(&self.1);
    }
}

impl UploadLocks {
    fn hold(&self, id: &str) -> Option<Held> {
        self.0
            .lock()
            .expect("lock")
            .insert(id.to_string())
            .then(|| Held(self.clone(), id.to_string()))
    }
}

fn tus(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert("tus-resumable", HeaderValue::from_static(TUS_VERSION));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn require_tus(headers: &HeaderMap) -> ApiResult<()> {
    match headers.get("tus-resumable").and_then(|v| v.to_str().ok()) {
        Some(TUS_VERSION) => Ok(()),
        _ => Err(ApiError::PreconditionFailed(format!(
            "Tus-Resumable: {TUS_VERSION} is required"
        ))),
    }
}

/// A tus length or offset: digits only (tus: "a non-negative integer"), so `+5`, `-0` and
/// `1e3` are refused rather than read.
fn header_u64(headers: &HeaderMap, name: &str) -> ApiResult<Option<u64>> {
    headers
        .get(name)
        .map(|v| parse_u64_header(name, v.to_str().unwrap_or("-")))
        .transpose()
}

/// The value of the tus header `name` (see [`header_u64`]).
pub fn parse_u64_header(name: &str, value: &str) -> ApiResult<u64> {
    Some(value.trim())
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| ApiError::invalid(format!("{name} must be a non-negative integer")))
}

/// Bytes of `Upload-Metadata` accepted (names, types and policies fit in far less).
const METADATA_MAX: usize = 4 * 1024;
/// Pairs of `Upload-Metadata` accepted.
const METADATA_PAIRS_MAX: usize = 32;

/// `Upload-Metadata: key base64,key2 base64` as a JSON object. Keys are ASCII without
/// spaces or commas (tus), unique; values are UTF-8 text without NUL, line breaks or other
/// control characters, so they can be stored, listed and logged as they are.
pub fn parse_metadata(
    value: Option<&str>,
) -> ApiResult<serde_json::Map<String, serde_json::Value>> {
    let value = value.unwrap_or("");
    if value.len() > METADATA_MAX {
        return Err(ApiError::invalid(format!(
            "Upload-Metadata is longer than {METADATA_MAX} bytes"
        )));
    }
    let mut out = serde_json::Map::new();
    for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if out.len() == METADATA_PAIRS_MAX {
            return Err(ApiError::invalid(format!(
                "Upload-Metadata has more than {METADATA_PAIRS_MAX} pairs"
            )));
        }
        let (key, encoded) = pair.split_once(' ').unwrap_or((pair, ""));
        if !key.bytes().all(|b| b.is_ascii_graphic()) || out.contains_key(key) {
            return Err(ApiError::invalid(
                "Upload-Metadata keys must be unique and printable ASCII",
            ));
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "Upload-Metadata value of {key:?} is not base64 UTF-8"
                ))
            })?;
        if decoded.chars().any(char::is_control) {
            return Err(ApiError::invalid(format!(
                "Upload-Metadata value of {key:?} holds a control character"
            )));
        }
        out.insert(key.to_string(), decoded.into());
    }
    Ok(out)
}

fn part_path(state: &AppState, id: &str) -> PathBuf {
    state
        .jobs
        .config
        .data_dir
        .join("uploads")
        .join(format!("{id}.part"))
}

fn http_date(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms / 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc2822)
                .ok()
        })
        .unwrap_or_default()
}

/// `OPTIONS /v1/uploads`: what this tus server supports.
#[utoipa::path(options, path = "/v1/uploads", tag = "assets",
    responses((status = 204, description = "`Tus-Version`, `Tus-Extension` and `Tus-Max-Size` say \
        what this tus server supports")))]
pub async fn options(State(state): State<AppState>) -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    h.insert("tus-version", HeaderValue::from_static(TUS_VERSION));
    h.insert("tus-extension", HeaderValue::from_static(TUS_EXTENSIONS));
    h.insert(
        "tus-max-size",
        HeaderValue::from(state.jobs.config.uploads.max_size_bytes),
    );
    tus(r)
}

/// `POST /v1/uploads` (tus creation): `Upload-Length`, optional `Upload-Metadata` with
/// `filename` and `playback_policy`. Answers `Location` and the asset the upload becomes.
#[utoipa::path(post, path = "/v1/uploads", tag = "assets", security(("api_key" = [])),
    params(("Tus-Resumable" = String, Header, description = "`1.0.0`"),
        ("Upload-Length" = u64, Header, description = "The file's size in bytes"),
        ("Upload-Metadata" = Option<String>, Header,
            description = "tus metadata: `filename`, `playback_policy` (`public` or `signed`), `ladder`, `packaging` (`ts`, `cmaf` or `both`), `cenc_scheme` (`cbcs` or `cenc`)")),
    responses((status = 201, body = UploadCreated, description = "`Location` is the upload's URL",
            headers(("Location" = String), ("Upload-Expires" = String))),
        (status = 409, body = ErrorBody), (status = 412, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Tenant,
    headers: HeaderMap,
) -> ApiResult<Response> {
    require_tus(&headers)?;
    if headers.contains_key("upload-defer-length") {
        return Err(ApiError::invalid(
            "Upload-Defer-Length is not supported: send Upload-Length",
        ));
    }
    let length = header_u64(&headers, "upload-length")?
        .ok_or_else(|| ApiError::invalid("Upload-Length is required"))?;
    check_size(&state, &caller.tenant_id, length).await?;
    let metadata = parse_metadata(headers.get("upload-metadata").and_then(|v| v.to_str().ok()))?;
    let policy = match metadata.get("playback_policy").and_then(|v| v.as_str()) {
        None | Some("signed") => PlaybackPolicy::Signed,
        Some("public") => PlaybackPolicy::Public,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "playback_policy {other:?} must be public or signed"
            )));
        }
    };
    let text = |name: &str| metadata.get(name).and_then(|v| v.as_str());
    let choice = output_choice(
        &state,
        text("ladder"),
        text("packaging"),
        text("cenc_scheme"),
    )?;
    let filename = text("filename");
    let asset =
        new_upload_asset(&state, &caller.tenant_id, policy, length, filename, &choice).await?;
    let expires_at = now_ms() + state.jobs.config.uploads.expiry_hours as i64 * 3_600_000;
    let upload = state
        .jobs
        .db
        .create_upload(
            &caller.tenant_id,
            &asset.id,
            length as i64,
            &serde_json::Value::Object(metadata).to_string(),
            expires_at,
        )
        .await?;
    let path = part_path(&state, &upload.id);
    tokio::fs::create_dir_all(path.parent().expect("has parent"))
        .await
        .map_err(|e| {
            ApiError::Internal(anyhow::Error::new(e).context("creating the uploads folder"))
        })?;
    tokio::fs::File::create(&path).await.map_err(|e| {
        ApiError::Internal(anyhow::Error::new(e).context("creating the upload file"))
    })?;
    tracing::info!(upload = %upload.id, asset = %asset.id, length, "upload created");
    if length == 0 {
        // Nothing to wait for: an empty file is complete (and will be found not to be media).
        finish_in_background(&state, upload.clone(), path.clone());
    }
    let body = serde_json::json!({"upload_id": upload.id, "asset_id": asset.id, "playback_id": asset.playback_id});
    let mut r = (StatusCode::CREATED, axum::Json(body)).into_response();
    let h = r.headers_mut();
    let location = format!("{}/v1/uploads/{}", state.jobs.public_url, upload.id);
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(&location).expect("ascii"),
    );
    h.insert(
        "upload-expires",
        HeaderValue::from_str(&http_date(expires_at)).expect("ascii"),
    );
    Ok(tus(r))
}

async fn live_upload(state: &AppState, tenant_id: &str, id: &str) -> ApiResult<Upload> {
    let upload = state.jobs.db.get_upload(tenant_id, id).await?;
    if upload.completed_at.is_none() && upload.expires_at < now_ms() {
        return Err(ApiError::Gone(
            "this upload has expired; start a new one".into(),
        ));
    }
    Ok(upload)
}

/// `HEAD /v1/uploads/{id}`: how many bytes the server has.
#[utoipa::path(head, path = "/v1/uploads/{id}", tag = "assets", security(("api_key" = [])),
    params(("Tus-Resumable" = String, Header, description = "`1.0.0`")),
    responses((status = 200, description = "`Upload-Offset`: the bytes received",
            headers(("Upload-Offset" = u64), ("Upload-Length" = u64), ("Upload-Expires" = String))),
        (status = 410, description = "The upload expired"),
        (status = 412, description = "Not `Tus-Resumable: 1.0.0`")))]
pub async fn head(
    State(state): State<AppState>,
    caller: Tenant,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    require_tus(&headers)?;
    let upload = live_upload(&state, &caller.tenant_id, &id).await?;
    let mut r = StatusCode::OK.into_response();
    let h = r.headers_mut();
    h.insert("upload-offset", HeaderValue::from(upload.received));
    h.insert("upload-length", HeaderValue::from(upload.length));
    h.insert(
        "upload-expires",
        HeaderValue::from_str(&http_date(upload.expires_at)).expect("ascii"),
    );
    Ok(tus(r))
}

/// `PATCH /v1/uploads/{id}`: appends bytes at `Upload-Offset`.
#[utoipa::path(patch, path = "/v1/uploads/{id}", tag = "assets", security(("api_key" = [])),
    params(("Tus-Resumable" = String, Header, description = "`1.0.0`"),
        ("Upload-Offset" = u64, Header, description = "Where these bytes go: the bytes received so far"),
        ("Upload-Checksum" = Option<String>, Header, description = "`sha1 <base64>` of these bytes")),
    request_body(content = String, content_type = "application/offset+octet-stream",
        description = "The next bytes of the file", example = json!("(up to 64 MiB of the file)")),
    responses((status = 204, description = "Appended; `Upload-Offset` is the new total",
            headers(("Upload-Offset" = u64))),
        (status = 409, body = ErrorBody, description = "`Upload-Offset` is not the bytes received"),
        (status = 410, body = ErrorBody), (status = 412, body = ErrorBody),
        (status = 460, body = ErrorBody, description = "The bytes do not match `Upload-Checksum`")))]
pub async fn patch(
    State(state): State<AppState>,
    caller: Tenant,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    require_tus(&headers)?;
    if headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        != Some("application/offset+octet-stream")
    {
        return Err(ApiError::UnsupportedMediaType(
            "Content-Type must be application/offset+octet-stream".into(),
        ));
    }
    let _held = state
        .upload_locks
        .hold(&id)
        .ok_or_else(|| ApiError::Conflict("another request is writing to this upload".into()))?;
    let upload = live_upload(&state, &caller.tenant_id, &id).await?;
    let offset = header_u64(&headers, "upload-offset")?
        .ok_or_else(|| ApiError::invalid("Upload-Offset is required"))?;
    if offset as i64 != upload.received {
        return Err(ApiError::Conflict(format!(
            "Upload-Offset is {offset} but the server has {} bytes",
            upload.received
        )));
    }
    if upload.received == upload.length {
        // Every byte is here (the upload may be finishing, or done): an empty PATCH at the
        // final offset is a no-op, as a client resending its last request expects.
        if header_u64(&headers, "content-length")?.unwrap_or(0) > 0 {
            return Err(ApiError::PayloadTooLarge(format!(
                "more bytes than the Upload-Length of {}",
                upload.length
            )));
        }
        let mut r = StatusCode::NO_CONTENT.into_response();
        r.headers_mut()
            .insert("upload-offset", HeaderValue::from(upload.received));
        return Ok(tus(r));
    }
    let path = part_path(&state, &id);
    let io =
        |e: std::io::Error| ApiError::Internal(anyhow::Error::new(e).context("writing an upload"));
    let terminated = || ApiError::NotFound("this upload was terminated".into());
    let mut file = match tokio::fs::OpenOptions::new().write(true).open(&path).await {
        Ok(f) => f,
        // A DELETE took it away between the lookup and here.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(terminated()),
        Err(e) => return Err(io(e)),
    };
    // Bytes past the stored offset are from a request that died before recording them.
    file.set_len(offset).await.map_err(io)?;
    file.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(io)?;
    // tus checksum extension: `Upload-Checksum: sha1 BASE64` covers this request's bytes.
    let checksum = match headers.get("upload-checksum").and_then(|v| v.to_str().ok()) {
        None => None,
        Some(v) => match v.split_once(' ') {
            Some(("sha1", b64)) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map_err(|_| ApiError::invalid("Upload-Checksum is not base64"))?,
            ),
            _ => return Err(ApiError::invalid("Upload-Checksum: only sha1 is supported")),
        },
    };
    let mut hasher = <sha1::Sha1 as sha1::Digest>::new();
    let mut received = offset as i64;
    let mut stream = body.into_data_stream();
    let mut failure = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => {
                if received + bytes.len() as i64 > upload.length {
                    failure = Some(ApiError::PayloadTooLarge(format!(
                        "more bytes than the Upload-Length of {}",
                        upload.length
                    )));
                    break;
                }
                file.write_all(&bytes).await.map_err(io)?;
                sha1::Digest::update(&mut hasher, &bytes);
                received += bytes.len() as i64;
            }
            Err(e) => {
                // The client went away: keep what arrived, it resumes from there.
                tracing::info!(upload = %id, received, error = %e, "upload interrupted");
                break;
            }
        }
    }
    if let Some(expected) = checksum
        && failure.is_none()
        && sha1::Digest::finalize(hasher).as_slice() != expected.as_slice()
    {
        // The bytes are not what the client meant to send: keep none of them.
        file.set_len(offset).await.map_err(io)?;
        return Err(ApiError::ChecksumMismatch);
    }
    file.sync_data().await.map_err(io)?;
    drop(file);
    if !state.jobs.db.set_upload_received(&id, received).await? {
        // Terminated while this PATCH ran: the DELETE won; what this one wrote goes too.
        let _ = tokio::fs::remove_file(&path).await;
        return Err(terminated());
    }
    if let Some(e) = failure {
        return Err(e);
    }
    if received == upload.length {
        finish_in_background(&state, upload, path);
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut()
        .insert("upload-offset", HeaderValue::from(received));
    Ok(tus(r))
}

/// The answer to a tus creation.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct UploadCreated {
    pub upload_id: String,
    pub asset_id: String,
    pub playback_id: String,
}

/// An asset whose file is in, queued for transcoding.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AssetQueued {
    pub asset_id: String,
    /// Absent when completing a direct upload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub playback_id: Option<String>,
    /// `queued`.
    pub status: String,
}

/// How an upload asks to be transcoded and packaged: a ladder preset that exists (default
/// `default`), and optionally a packaging and a common-encryption scheme.
fn output_choice(
    state: &AppState,
    ladder: Option<&str>,
    packaging: Option<&str>,
    cenc_scheme: Option<&str>,
) -> ApiResult<OutputChoice> {
    let shown = |text: &str| text.chars().take(64).collect::<String>();
    let packaging = packaging
        .map(|p| {
            Packaging::parse(p).ok_or_else(|| {
                ApiError::invalid(format!("packaging {:?} must be ts, cmaf or both", shown(p)))
            })
        })
        .transpose()?;
    let cenc_scheme = cenc_scheme
        .map(|s| {
            Scheme::parse(s).ok_or_else(|| {
                ApiError::invalid(format!("cenc_scheme {:?} must be cbcs or cenc", shown(s)))
            })
        })
        .transpose()?;
    Ok(OutputChoice {
        ladder: ladder_name(state, ladder)?,
        packaging,
        cenc_scheme,
    })
}

/// The ladder preset an upload asks for (default `default`), if it exists.
fn ladder_name(state: &AppState, requested: Option<&str>) -> ApiResult<String> {
    let name = requested.filter(|n| !n.is_empty()).unwrap_or("default");
    if let Some(preset) = state.jobs.presets.get(name)
        && preset.renditions.is_empty()
    {
        return Err(ApiError::invalid(format!(
            "the {name} ladder only copies a live broadcast; an upload needs a ladder with renditions"
        )));
    }
    if state.jobs.presets.get(name).is_none() {
        let known: Vec<_> = state.jobs.presets.names().collect();
        let shown: String = name.chars().take(64).collect();
        return Err(ApiError::invalid(format!(
            "unknown ladder {shown:?}; presets: {}",
            known.join(", ")
        )));
    }
    Ok(name.to_string())
}

/// Checks an upload's size against the limit and the tenant's quota.
async fn check_size(state: &AppState, tenant_id: &str, length: u64) -> ApiResult<()> {
    let limits = &state.jobs.config.uploads;
    if length > limits.max_size_bytes {
        return Err(ApiError::PayloadTooLarge(format!(
            "the file is {length} bytes; the largest accepted is {} bytes",
            limits.max_size_bytes
        )));
    }
    if limits.tenant_quota_bytes > 0 {
        let used = state.jobs.db.tenant_upload_bytes(tenant_id).await?.max(0) as u64;
        if used + length > limits.tenant_quota_bytes {
            return Err(ApiError::PayloadTooLarge(format!(
                "this upload would exceed the tenant's quota: {used} of {} bytes are in use",
                limits.tenant_quota_bytes
            )));
        }
    }
    Ok(())
}

/// A new asset that an upload of `size` bytes will fill.
async fn new_upload_asset(
    state: &AppState,
    tenant_id: &str,
    policy: PlaybackPolicy,
    size: u64,
    filename: Option<&str>,
    choice: &OutputChoice,
) -> ApiResult<crate::db::Asset> {
    let asset = state
        .jobs
        .db
        .create_asset(
            tenant_id,
            None,
            &new_playback_id(),
            policy,
            AssetStatus::Uploading,
            None,
        )
        .await?;
    state
        .jobs
        .db
        .set_asset_upload_info(&asset.id, size as i64, filename, choice)
        .await?;
    Ok(asset)
}

/// Marks an asset queued and queues its transcode job, waking this node's workers.
async fn queue_transcode(state: &AppState, tenant_id: &str, asset_id: &str) -> ApiResult<()> {
    state
        .jobs
        .db
        .set_asset_status(asset_id, AssetStatus::Queued, None)
        .await?;
    let attempts = i64::from(state.jobs.config.jobs.max_attempts);
    state
        .jobs
        .db
        .enqueue_job(tenant_id, asset_id, "transcode", attempts)
        .await?;
    state.jobs.wakeup.notify_waiters();
    Ok(())
}

/// Moving a large file into S3 can outlast the request; the client already has every byte, so
/// the move runs on its own and a failure shows on the asset instead of being lost.
fn finish_in_background(state: &AppState, upload: Upload, path: PathBuf) {
    let state = state.clone();
    tokio::spawn(async move {
        if let Err(e) = complete(&state, &upload, &path).await {
            tracing::error!(upload = %upload.id, asset = %upload.asset_id, error = %e, "storing a finished upload failed");
            let _ = state
                .jobs
                .db
                .set_asset_status(
                    &upload.asset_id,
                    AssetStatus::Errored,
                    Some("storing the uploaded file failed; upload it again"),
                )
                .await;
        }
    });
}

/// Moves a finished upload into storage and queues its transcode.
async fn complete(state: &AppState, upload: &Upload, path: &std::path::Path) -> ApiResult<()> {
    let asset = state
        .jobs
        .db
        .get_asset(&upload.tenant_id, &upload.asset_id)
        .await?;
    let key = ObjectKey::parse(&format!("{}original", asset.storage_prefix))?;
    state
        .jobs
        .store
        .put_file(&key, path, "application/octet-stream")
        .await?;
    state.jobs.db.complete_upload(&upload.id).await?;
    queue_transcode(state, &upload.tenant_id, &asset.id).await?;
    tracing::info!(upload = %upload.id, asset = %asset.id, bytes = upload.length, "upload complete; transcode queued");
    Ok(())
}

/// `DELETE /v1/uploads/{id}` (tus termination): drops an unfinished upload and its asset.
#[utoipa::path(delete, path = "/v1/uploads/{id}", tag = "assets", security(("api_key" = [])),
    params(("Tus-Resumable" = String, Header, description = "`1.0.0`")),
    responses((status = 204, description = "Dropped"),
        (status = 409, body = ErrorBody, description = "Complete: delete the asset instead"),
        (status = 412, body = ErrorBody)))]
pub async fn terminate(
    State(state): State<AppState>,
    caller: Tenant,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    require_tus(&headers)?;
    let upload = state.jobs.db.get_upload(&caller.tenant_id, &id).await?;
    if upload.completed_at.is_some() {
        return Err(ApiError::Conflict(
            "the upload is complete; delete the asset instead".into(),
        ));
    }
    // The row first: a PATCH still writing then finds its upload gone and loses cleanly.
    state.jobs.db.delete_upload(&id).await?;
    let _ = tokio::fs::remove_file(part_path(&state, &id)).await;
    state
        .jobs
        .db
        .delete_asset(&caller.tenant_id, &upload.asset_id)
        .await?;
    Ok(tus(StatusCode::NO_CONTENT.into_response()))
}

/// Deletes unfinished uploads past their expiry (files and rows); returns how many.
pub async fn delete_expired(state: &AppState) -> anyhow::Result<usize> {
    let expired = state.jobs.db.expired_uploads(now_ms()).await?;
    for upload in &expired {
        let _ = tokio::fs::remove_file(part_path(state, &upload.id)).await;
        state.jobs.db.delete_upload(&upload.id).await?;
        let _ = state
            .jobs
            .db
            .delete_asset(&upload.tenant_id, &upload.asset_id)
            .await;
    }
    Ok(expired.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_pairs_decode_from_base64() {
        let m = parse_metadata(Some(
            "filename bXkgdmlkZW8ubXA0,playback_policy cHVibGlj, empty",
        ))
        .unwrap();
        assert_eq!(m["filename"], "my video.mp4");
        assert_eq!(m["playback_policy"], "public");
        assert_eq!(m["empty"], "");
        assert!(parse_metadata(Some("filename ***")).is_err());
        assert!(parse_metadata(None).unwrap().is_empty());
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        for bad in [
            format!("filename {}", b64("a\0b")),
            format!("filename {}", b64("a\nb")),
            format!("filename {},filename {}", b64("a"), b64("b")),
            format!("filename {}", b64(&"x".repeat(METADATA_MAX))),
            (0..40)
                .map(|i| format!("k{i} {}", b64("v")))
                .collect::<Vec<_>>()
                .join(","),
        ] {
            assert!(parse_metadata(Some(&bad)).is_err(), "{bad:.60}");
        }
    }

    #[test]
    fn lengths_and_offsets_are_digits_only() {
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("upload-length", HeaderValue::from_static(v));
            header_u64(&h, "upload-length")
        };
        assert_eq!(with("5").unwrap(), Some(5));
        assert_eq!(with(" 900 ").unwrap(), Some(900));
        for bad in ["+5", "-0", "1e3", "", "0x10", "99999999999999999999999"] {
            assert!(with(bad).is_err(), "{bad:?}");
        }
    }
}
