//! The API's one error type and the one place it becomes an HTTP response:
//! `{"error": {"code", "message"}}` with the matching status code.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::db::DbError;
use crate::drm::access::{Denial, DenialKind};
use crate::storage::StorageError;

/// An error as the API reports it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{message}")]
    Invalid { message: String },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// tus: the request's bytes do not match its `Upload-Checksum`.
    #[error("the bytes do not match Upload-Checksum; nothing of this request was kept")]
    ChecksumMismatch,
    /// Well-formed but unusable content (a file that is not playable media, a bad subtitle).
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    Unavailable(String),
    /// Rate limited; retry after this many seconds.
    #[error("too many requests; retry in {0} s")]
    TooManyRequests(u64),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// A refused playback request: 401, 403 or 429, with the decision's own words.
impl From<Denial> for ApiError {
    fn from(d: Denial) -> Self {
        match d.kind() {
            DenialKind::Unauthenticated => Self::Unauthorized(d.to_string()),
            DenialKind::Forbidden => Self::Forbidden(d.to_string()),
            DenialKind::TooManyRequests(wait) => Self::TooManyRequests(wait),
        }
    }
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid {
            message: message.into(),
        }
    }

    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Invalid { .. } => StatusCode::BAD_REQUEST,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Gone(_) => StatusCode::GONE,
            Self::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            // 460 is the status tus 1.0 defines for this.
            Self::ChecksumMismatch => StatusCode::from_u16(460).expect("valid status"),
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "not_found",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::Invalid { .. } => "invalid_request",
            Self::Conflict(_) => "conflict",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::Gone(_) => "gone",
            Self::PreconditionFailed(_) => "precondition_failed",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::Unprocessable(_) => "unprocessable",
            Self::ChecksumMismatch => "checksum_mismatch",
            Self::Unavailable(_) => "unavailable",
            Self::TooManyRequests(_) => "rate_limited",
            Self::Internal(_) => "internal",
        }
    }
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `not_found`, `invalid_request`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let message = match &self {
            // Internals are logged once here and never shown to the client.
            Self::Internal(e) => {
                tracing::error!(error = ?e, "internal error");
                "internal server error".to_string()
            }
            other => other.to_string(),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_string(),
                message,
            },
        };
        let retry_after = match &self {
            Self::TooManyRequests(s) => Some(*s),
            // A dependency away for a moment (a restart): clients (tus, players) wait this
            // long before they try again.
            Self::Unavailable(_) => Some(2),
            _ => None,
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(s) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::NotFound(what) => Self::NotFound(format!("{what} not found")),
            DbError::Conflict(what) => Self::Conflict(what),
            other if other.is_unavailable() => {
                tracing::warn!(error = %other, "database unavailable");
                Self::Unavailable("the database is unavailable; retry shortly".into())
            }
            other => Self::Internal(other.into()),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            // Storage keys name tenants and layouts: they go to the log, never to the client.
            StorageError::NotFound(key) => {
                tracing::debug!(%key, "object not found");
                Self::NotFound("not found".into())
            }
            StorageError::InvalidKey { key, reason } => {
                tracing::debug!(key = %key.escape_debug(), reason, "invalid object key");
                Self::invalid(format!("invalid path: {reason}"))
            }
            StorageError::InvalidRange(_) => Self::invalid(e.to_string()),
            StorageError::Unavailable(detail) => {
                tracing::warn!(%detail, "storage unavailable");
                Self::Unavailable("storage is unavailable; retry shortly".into())
            }
            StorageError::Unsupported(_) => Self::Conflict(e.to_string()),
            StorageError::Refused(_) => Self::invalid(e.to_string()),
            StorageError::Other(_) => Self::Internal(e.into()),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::BytesRejection(_) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::PayloadTooLarge("request body is too large".into())
            }
            other => Self::invalid(other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::invalid(r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::invalid(r.body_text())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
