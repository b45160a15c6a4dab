//! Object storage: a small trait with a local-folder backend (the default) and an S3 backend.
//! Keys are validated once into [`ObjectKey`], so no backend ever sees a path that could
//! escape its root.

mod local;
mod s3;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

pub use local::{LocalStore, UrlSigner};
pub use s3::{S3Settings, S3Store};

/// A validated object key: `a/b/c.ts`, relative, no empty, `.` or `..` segments, no
/// hidden (dot-led) segments, no backslashes or control characters, at most 1024 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey(String);

impl ObjectKey {
    pub fn parse(key: &str) -> Result<Self, StorageError> {
        let bad = |reason: &'static str| StorageError::InvalidKey {
            key: key.chars().take(200).collect(),
            reason,
        };
        if key.is_empty() {
            return Err(bad("empty"));
        }
        if key.len() > 1024 {
            return Err(bad("longer than 1024 bytes"));
        }
        if key.chars().any(|c| c.is_control() || c == '\\') {
            return Err(bad("contains a control character or backslash"));
        }
        for segment in key.split('/') {
            if segment.is_empty() {
                return Err(bad(
                    "has an empty segment (leading, trailing or double '/')",
                ));
            }
            if segment.starts_with('.') {
                return Err(bad("has a segment starting with '.'"));
            }
        }
        Ok(Self(key.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A key prefix for listing and bulk deletion: empty (everything) or a key-shaped string,
/// optionally ending in `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix(String);

impl Prefix {
    pub fn parse(prefix: &str) -> Result<Self, StorageError> {
        if !prefix.is_empty() {
            ObjectKey::parse(prefix.strip_suffix('/').unwrap_or(prefix))?;
        }
        Ok(Self(prefix.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An inclusive byte range, as in HTTP `Range: bytes=start-end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `start..=end`; `end` past the object's end is clipped to it.
    FromTo(u64, u64),
    /// From `start` to the end.
    From(u64),
    /// The last `n` bytes.
    Suffix(u64),
}

impl ByteRange {
    /// Parses one range of an HTTP `Range` header (`bytes=0-99`, `bytes=100-`, `bytes=-50`).
    pub fn parse_header(value: &str) -> Result<Self, StorageError> {
        let bad = || StorageError::InvalidRange(value.chars().take(100).collect());
        let spec = value.trim().strip_prefix("bytes=").ok_or_else(bad)?;
        if spec.contains(',') {
            return Err(bad());
        }
        let (a, b) = spec.split_once('-').ok_or_else(bad)?;
        let num = |s: &str| s.trim().parse::<u64>().map_err(|_| bad());
        match (a.trim().is_empty(), b.trim().is_empty()) {
            (false, false) => {
                let (start, end) = (num(a)?, num(b)?);
                if end < start {
                    return Err(bad());
                }
                Ok(Self::FromTo(start, end))
            }
            (false, true) => Ok(Self::From(num(a)?)),
            (true, false) => match num(b)? {
                0 => Err(bad()),
                n => Ok(Self::Suffix(n)),
            },
            (true, true) => Err(bad()),
        }
    }

    /// The inclusive `(start, end)` this range selects in an object of `size` bytes,
    /// or `None` when it selects nothing (HTTP 416).
    pub fn resolve(self, size: u64) -> Option<(u64, u64)> {
        if size == 0 {
            return None;
        }
        let (start, end) = match self {
            Self::FromTo(s, e) => (s, e.min(size - 1)),
            Self::From(s) => (s, size - 1),
            Self::Suffix(n) => (size.saturating_sub(n), size - 1),
        };
        (start <= end && start < size).then_some((start, end))
    }

    /// The `Range` header value for this range.
    pub fn to_header(self) -> String {
        match self {
            Self::FromTo(s, e) => format!("bytes={s}-{e}"),
            Self::From(s) => format!("bytes={s}-"),
            Self::Suffix(n) => format!("bytes=-{n}"),
        }
    }
}

/// What is known about a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: ObjectKey,
    pub size: u64,
    /// Last modification, Unix milliseconds.
    pub modified_ms: i64,
    pub content_type: String,
}

/// An object's bytes (all of them, or the requested range) and its metadata.
#[derive(Debug, Clone)]
pub struct Object {
    pub meta: ObjectMeta,
    /// The inclusive byte range returned when a range was asked for.
    pub range: Option<(u64, u64)>,
    pub body: Bytes,
}

/// An upload a client sends straight to the store: one presigned URL per part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectUpload {
    pub upload_id: String,
    pub part_size: u64,
    /// URLs to `PUT` parts 1, 2, … to; each answer's `ETag` is needed to complete.
    pub part_urls: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object {0} not found")]
    NotFound(ObjectKey),
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("unsatisfiable byte range {0:?}")]
    InvalidRange(String),
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Unsupported(String),
    /// The store refused what the client sent (e.g. parts that do not complete an upload).
    #[error("{0}")]
    Refused(String),
    #[error("storage: {0}")]
    Other(#[from] anyhow::Error),
}

pub type StorageResult<T> = Result<T, StorageError>;

/// The operations every backend offers. Writes are atomic: a reader sees the old object,
/// the new one, or none, never a part.
#[async_trait]
pub trait ObjectStore: Send + Sync + fmt::Debug {
    /// Stores `body` under `key`, replacing any object there.
    async fn put(&self, key: &ObjectKey, body: Bytes, content_type: &str) -> StorageResult<()>;
    /// Reads an object, or the byte range of it.
    async fn get(&self, key: &ObjectKey, range: Option<ByteRange>) -> StorageResult<Object>;
    async fn head(&self, key: &ObjectKey) -> StorageResult<ObjectMeta>;
    /// Deletes an object; deleting a missing one is not an error.
    async fn delete(&self, key: &ObjectKey) -> StorageResult<()>;
    /// Deletes every object whose key starts with `prefix`; returns how many.
    async fn delete_prefix(&self, prefix: &Prefix) -> StorageResult<u64>;
    /// Every object whose key starts with `prefix`, sorted by key.
    async fn list(&self, prefix: &Prefix) -> StorageResult<Vec<ObjectMeta>>;
    /// A URL that lets a plain HTTP client GET the object until it expires.
    async fn presign_get(&self, key: &ObjectKey, expires_in: Duration) -> StorageResult<String>;
    /// Whether the store is reachable and usable, for readiness checks.
    async fn check(&self) -> StorageResult<()>;
    /// Stores the file at `path` under `key` without holding it in memory (uploads).
    /// The file is consumed: it may be moved into the store.
    async fn put_file(
        &self,
        key: &ObjectKey,
        path: &std::path::Path,
        content_type: &str,
    ) -> StorageResult<()>;
    /// Copies an object into a local file (transcode inputs), without holding it in memory.
    async fn get_to_file(&self, key: &ObjectKey, path: &std::path::Path) -> StorageResult<u64>;
    /// Starts an upload the client sends straight to the store in parts (presigned PUT URLs).
    async fn create_direct_upload(
        &self,
        _key: &ObjectKey,
        _size: u64,
        _part_size: u64,
        _expires_in: Duration,
    ) -> StorageResult<DirectUpload> {
        Err(StorageError::Unsupported(
            "direct uploads need the S3 storage backend; use tus uploads".into(),
        ))
    }
    /// Finishes a direct upload from the parts' numbers and ETags, as the client reports them.
    async fn complete_direct_upload(
        &self,
        _key: &ObjectKey,
        _upload_id: &str,
        _parts: &[(i32, String)],
    ) -> StorageResult<()> {
        Err(StorageError::Unsupported(
            "direct uploads need the S3 storage backend".into(),
        ))
    }
}

pub type DynStore = Arc<dyn ObjectStore>;

/// The content type served for a key, from its extension.
pub fn content_type_for(key: &str) -> &'static str {
    let ext = key.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("m3u8") => "application/vnd.apple.mpegurl",
        Some("ts") => "video/mp2t",
        Some("m4s") => "video/iso.segment",
        Some("mp4") => "video/mp4",
        Some("m4a") => "audio/mp4",
        Some("aac") => "audio/aac",
        Some("webm") => "video/webm",
        Some("vtt") => "text/vtt",
        Some("jpg") | Some("jpeg") => "image/jpeg",
        Some("png") => "image/png",
        Some("json") => "application/json",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_could_escape_the_root_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "a/",
            "./a",
            "a/./b",
            "a\\b",
            ".hidden",
            "a/.tmp/b",
            "a\0b",
            "a\nb",
        ] {
            assert!(ObjectKey::parse(bad).is_err(), "{bad:?} accepted");
        }
        for good in [
            "a",
            "a/b/c.ts",
            "live/abc-123/720p/seg_00001.ts",
            "x y/ü.m3u8",
        ] {
            assert_eq!(ObjectKey::parse(good).unwrap().as_str(), good);
        }
        assert!(ObjectKey::parse(&"a".repeat(1025)).is_err());
        assert!(Prefix::parse("").is_ok());
        assert!(Prefix::parse("assets/1/").is_ok());
        assert!(Prefix::parse("assets/1/seg").is_ok());
        assert!(Prefix::parse("../").is_err());
        assert!(Prefix::parse("/").is_err());
    }

    #[test]
    fn byte_ranges_parse_and_resolve_like_http() {
        assert_eq!(
            ByteRange::parse_header("bytes=0-99").unwrap(),
            ByteRange::FromTo(0, 99)
        );
        assert_eq!(
            ByteRange::parse_header("bytes=100-").unwrap(),
            ByteRange::From(100)
        );
        assert_eq!(
            ByteRange::parse_header("bytes=-50").unwrap(),
            ByteRange::Suffix(50)
        );
        for bad in [
            "bytes=5-1",
            "bytes=-",
            "items=0-1",
            "bytes=0-1,5-6",
            "bytes=a-b",
            "bytes=-0",
        ] {
            assert!(ByteRange::parse_header(bad).is_err(), "{bad}");
        }
        assert_eq!(ByteRange::FromTo(0, 99).resolve(50), Some((0, 49)));
        assert_eq!(ByteRange::From(10).resolve(50), Some((10, 49)));
        assert_eq!(ByteRange::From(50).resolve(50), None);
        assert_eq!(ByteRange::Suffix(10).resolve(50), Some((40, 49)));
        assert_eq!(ByteRange::Suffix(100).resolve(50), Some((0, 49)));
        assert_eq!(ByteRange::FromTo(0, 0).resolve(0), None);
        assert_eq!(ByteRange::Suffix(7).to_header(), "bytes=-7");
    }
}
