//! `GET /objects/{key}?expires=…&signature=…`: what a presigned URL of the local backend
//! points at. Serves byte ranges like S3 does; a bad or expired signature is 403.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{AppState, Path, Query};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::storage::{ByteRange, ObjectKey, StorageError};

#[derive(Debug, Deserialize)]
pub struct Signed {
    expires: u64,
    signature: String,
}

/// `GET /objects/{key}?expires=…&signature=…`: a stored object at a URL the server signed
/// (local storage's answer to S3's presigned URLs), with byte ranges.
#[utoipa::path(get, path = "/objects/{key}", tag = "playback",
    params(("key" = String, Path, description = "The object's key"),
        ("expires" = u64, Query, description = "Unix seconds the URL is valid until"),
        ("signature" = String, Query, description = "The server's signature of key and expiry"),
        ("Range" = Option<String>, Header, description = "`bytes=START-END`")),
    responses((status = 200, content_type = "application/octet-stream", body = String),
        (status = 206, content_type = "application/octet-stream", body = String,
            headers(("Content-Range" = String))),
        (status = 403, body = ErrorBody, description = "A wrong or expired signature"),
        (status = 416, description = "A range outside the object; `Content-Range: bytes */SIZE`")))]
pub async fn get_object(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(signed): Query<Signed>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let signer = state
        .url_signer
        .as_ref()
        .ok_or_else(|| ApiError::NotFound("no such route".into()))?;
    let key = ObjectKey::parse(&key)?;
    if !signer.verify(
        &key,
        signed.expires,
        &signed.signature,
        crate::clock::unix_now(),
    ) {
        return Err(ApiError::Forbidden(
            "the URL's signature is invalid or has expired".into(),
        ));
    }
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(ByteRange::parse_header)
        .transpose()?;
    let object = match state.jobs.store.get(&key, range).await {
        Err(StorageError::InvalidRange(_)) => {
            let size = state.jobs.store.head(&key).await?.size;
            let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii"),
            );
            return Ok(response);
        }
        other => other?,
    };
    let mut response = Response::new(Body::from(object.body));
    let h = response.headers_mut();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(ct) = HeaderValue::from_str(&object.meta.content_type) {
        h.insert(header::CONTENT_TYPE, ct);
    }
    if let Some((start, end)) = object.range {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        response.headers_mut().insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes {start}-{end}/{}", object.meta.size))
                .expect("ascii"),
        );
    }
    Ok(response)
}
