//! The S3 backend (aws-sdk-s3): AWS or any S3-compatible server via endpoint + path style.
//! Large objects go up as multipart uploads; transient failures are retried by the SDK's
//! standard retry policy, and an unreachable server is reported as `Unavailable`.

use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketLocationConstraint, CompletedMultipartUpload, CompletedPart, CreateBucketConfiguration,
    Delete, ObjectIdentifier,
};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::{
    ByteRange, Object, ObjectKey, ObjectMeta, ObjectStore, Prefix, StorageError, StorageResult,
    content_type_for,
};

/// How to reach the bucket; built from `[storage.s3]`.
#[derive(Clone)]
pub struct S3Settings {
    pub bucket: String,
    pub region: String,
    /// Empty: AWS.
    pub endpoint: String,
    pub path_style: bool,
    /// Both empty: the standard AWS credential chain.
    pub access_key_id: String,
    pub secret_access_key: String,
    pub create_bucket: bool,
    pub multipart_threshold: u64,
    pub part_size: u64,
    pub request_timeout: Duration,
}

/// Parts of one multipart upload sent at once.
const PART_CONCURRENCY: usize = 4;

#[derive(Debug)]
pub struct S3Store {
    client: Client,
    bucket: String,
    multipart_threshold: u64,
    part_size: u64,
}

impl S3Store {
    /// Builds the client and, when asked, creates the bucket if it is missing.
    pub async fn connect(s: &S3Settings) -> anyhow::Result<Self> {
        let mut loader =
            aws_config::defaults(BehaviorVersion::latest()).region(Region::new(s.region.clone()));
        if !s.access_key_id.is_empty() {
            loader = loader.credentials_provider(Credentials::new(
                &s.access_key_id,
                &s.secret_access_key,
                None,
                None,
                "ferrocast-config",
            ));
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(s.path_style)
            .retry_config(RetryConfig::standard().with_max_attempts(4))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(s.request_timeout)
                    .build(),
            )
            // Checksums only where S3 requires them: S3-compatible servers differ in support
            // for the newer streaming checksum trailers.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if !s.endpoint.is_empty() {
            builder = builder.endpoint_url(&s.endpoint);
        }
        let store = Self {
            client: Client::from_conf(builder.build()),
            bucket: s.bucket.clone(),
            multipart_threshold: s.multipart_threshold,
            part_size: s.part_size,
        };
        if s.create_bucket {
            store.ensure_bucket(&s.region).await?;
        }
        Ok(store)
    }

    async fn ensure_bucket(&self, region: &str) -> anyhow::Result<()> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => return Ok(()),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {}
            Err(e) => {
                return Err(anyhow::anyhow!("{}", DisplayErrorContext(&e)))
                    .with_context(|| format!("checking bucket {}", self.bucket));
            }
        }
        let mut create = self.client.create_bucket().bucket(&self.bucket);
        if region != "us-east-1" {
            create = create.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(region))
                    .build(),
            );
        }
        create
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{}", DisplayErrorContext(&e)))
            .with_context(|| format!("creating bucket {}", self.bucket))?;
        tracing::info!(bucket = %self.bucket, "created bucket");
        Ok(())
    }

    /// A multipart upload: parts read from `source` and sent a few at a time, so memory
    /// stays bounded by `PART_CONCURRENCY` parts whatever the object's size. On failure the
    /// upload is aborted, leaving no orphaned parts billed in the bucket.
    async fn put_multipart(
        &self,
        key: &ObjectKey,
        source: PartSource<'_>,
        content_type: &str,
    ) -> StorageResult<()> {
        let size = source.size();
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key.as_str())
            .content_type(content_type)
            .send()
            .await
            .map_err(|e| classify(key, e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| StorageError::Other(anyhow::anyhow!("S3 returned no upload id")))?
            .to_string();
        let ranges: Vec<(i32, u64, u64)> = (0..size)
            .step_by(self.part_size as usize)
            .enumerate()
            .map(|(i, start)| (i as i32 + 1, start, self.part_size.min(size - start)))
            .collect();
        let parts: Result<Vec<CompletedPart>, StorageError> = futures::stream::iter(ranges)
            .map(|(number, start, len)| {
                let (upload_id, source) = (upload_id.clone(), &source);
                async move {
                    let chunk = source.read(start, len).await?;
                    let out = self
                        .client
                        .upload_part()
                        .bucket(&self.bucket)
                        .key(key.as_str())
                        .upload_id(upload_id)
                        .part_number(number)
                        .body(ByteStream::from(chunk))
                        .send()
                        .await
                        .map_err(|e| classify(key, e))?;
                    Ok(CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(out.e_tag().map(str::to_string))
                        .build())
                }
            })
            .buffered(PART_CONCURRENCY)
            .try_collect()
            .await;
        let completed = match parts {
            Ok(parts) => self
                .client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key.as_str())
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(key, e)),
            Err(e) => Err(e),
        };
        if completed.is_err() {
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key.as_str())
                .upload_id(&upload_id)
                .send()
                .await;
        }
        completed
    }
}

/// Where a multipart upload's parts come from.
enum PartSource<'a> {
    Memory(Bytes),
    File {
        path: &'a std::path::Path,
        size: u64,
    },
}

impl PartSource<'_> {
    fn size(&self) -> u64 {
        match self {
            Self::Memory(b) => b.len() as u64,
            Self::File { size, .. } => *size,
        }
    }

    async fn read(&self, start: u64, len: u64) -> StorageResult<Bytes> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        match self {
            Self::Memory(b) => Ok(b.slice(start as usize..(start + len) as usize)),
            Self::File { path, .. } => {
                let io = |e: std::io::Error| {
                    StorageError::Other(
                        anyhow::Error::new(e).context(format!("reading {}", path.display())),
                    )
                };
                let mut file = tokio::fs::File::open(path).await.map_err(io)?;
                file.seek(std::io::SeekFrom::Start(start))
                    .await
                    .map_err(io)?;
                let mut buf = vec![0u8; len as usize];
                file.read_exact(&mut buf).await.map_err(io)?;
                Ok(Bytes::from(buf))
            }
        }
    }
}

/// Maps an SDK error to the storage error a caller can act on.
fn classify<E, R>(key: &ObjectKey, e: SdkError<E, R>) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match &e {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
            StorageError::Unavailable(DisplayErrorContext(&e).to_string())
        }
        _ => match e.code() {
            Some("NoSuchKey") | Some("NotFound") => StorageError::NotFound(key.clone()),
            Some("InvalidRange") => StorageError::InvalidRange(key.to_string()),
            _ => StorageError::Other(anyhow::anyhow!("{} ({key})", DisplayErrorContext(&e))),
        },
    }
}

fn millis(t: Option<&aws_sdk_s3::primitives::DateTime>) -> i64 {
    t.and_then(|t| t.to_millis().ok()).unwrap_or(0)
}

/// The total size from a `Content-Range: bytes a-b/total` header.
fn total_from_content_range(v: &str) -> Option<u64> {
    v.rsplit_once('/')?.1.parse().ok()
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &ObjectKey, body: Bytes, content_type: &str) -> StorageResult<()> {
        if body.len() as u64 > self.multipart_threshold {
            return self
                .put_multipart(key, PartSource::Memory(body), content_type)
                .await;
        }
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .content_type(content_type)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| classify(key, e))?;
        Ok(())
    }

    async fn get(&self, key: &ObjectKey, range: Option<ByteRange>) -> StorageResult<Object> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .set_range(range.map(ByteRange::to_header))
            .send()
            .await
            .map_err(|e| classify(key, e))?;
        let length = out.content_length().unwrap_or(0).max(0) as u64;
        let (size, returned) = match out.content_range().and_then(|cr| {
            let total = total_from_content_range(cr)?;
            let (a, b) = cr
                .strip_prefix("bytes ")?
                .split_once('/')?
                .0
                .split_once('-')?;
            Some((total, (a.parse().ok()?, b.parse().ok()?)))
        }) {
            Some((total, span)) => (total, Some(span)),
            None => (length, None),
        };
        let meta = ObjectMeta {
            key: key.clone(),
            size,
            modified_ms: millis(out.last_modified()),
            content_type: out.content_type().map_or_else(
                || content_type_for(key.as_str()).to_string(),
                str::to_string,
            ),
        };
        // A range asked of S3 always comes back with Content-Range; fall back to the whole.
        let range = range.map(|_| returned.unwrap_or((0, size.saturating_sub(1))));
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| StorageError::Unavailable(format!("reading {key}: {e}")))?
            .into_bytes();
        Ok(Object { meta, range, body })
    }

    async fn head(&self, key: &ObjectKey) -> StorageResult<ObjectMeta> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
            .map_err(|e| classify(key, e))?;
        Ok(ObjectMeta {
            key: key.clone(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            modified_ms: millis(out.last_modified()),
            content_type: out.content_type().map_or_else(
                || content_type_for(key.as_str()).to_string(),
                str::to_string,
            ),
        })
    }

    async fn delete(&self, key: &ObjectKey) -> StorageResult<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
            .map_err(|e| classify(key, e))?;
        Ok(())
    }

    async fn delete_prefix(&self, prefix: &Prefix) -> StorageResult<u64> {
        let objects = self.list(prefix).await?;
        let mut deleted = 0;
        for batch in objects.chunks(1000) {
            let ids = batch
                .iter()
                .map(|o| ObjectIdentifier::builder().key(o.key.as_str()).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| StorageError::Other(e.into()))?;
            let delete = Delete::builder()
                .set_objects(Some(ids))
                .quiet(true)
                .build()
                .map_err(|e| StorageError::Other(e.into()))?;
            let out = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| classify(&batch[0].key, e))?;
            if let Some(err) = out.errors().first() {
                return Err(StorageError::Other(anyhow::anyhow!(
                    "deleting {}: {} {}",
                    err.key().unwrap_or("?"),
                    err.code().unwrap_or("?"),
                    err.message().unwrap_or("")
                )));
            }
            deleted += batch.len() as u64;
        }
        Ok(deleted)
    }

    async fn list(&self, prefix: &Prefix) -> StorageResult<Vec<ObjectMeta>> {
        let pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix.as_str())
            .into_paginator()
            .send();
        let mut out = Vec::new();
        let mut pages = std::pin::pin!(pages);
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| match &e {
                SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
                    StorageError::Unavailable(DisplayErrorContext(&e).to_string())
                }
                _ => StorageError::Other(anyhow::anyhow!("listing: {}", DisplayErrorContext(&e))),
            })?;
            for o in page.contents() {
                let Some(key) = o.key().and_then(|k| ObjectKey::parse(k).ok()) else {
                    continue; // written by something else, not addressable through this API
                };
                out.push(ObjectMeta {
                    content_type: content_type_for(key.as_str()).to_string(),
                    key,
                    size: o.size().unwrap_or(0).max(0) as u64,
                    modified_ms: millis(o.last_modified()),
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn put_file(
        &self,
        key: &ObjectKey,
        path: &std::path::Path,
        content_type: &str,
    ) -> StorageResult<()> {
        let size = tokio::fs::metadata(path)
            .await
            .map_err(|e| {
                StorageError::Other(
                    anyhow::Error::new(e).context(format!("reading {}", path.display())),
                )
            })?
            .len();
        if size > self.multipart_threshold {
            self.put_multipart(key, PartSource::File { path, size }, content_type)
                .await?;
        } else {
            let body = ByteStream::from_path(path).await.map_err(|e| {
                StorageError::Other(anyhow::anyhow!("reading {}: {e}", path.display()))
            })?;
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(key.as_str())
                .content_type(content_type)
                .body(body)
                .send()
                .await
                .map_err(|e| classify(key, e))?;
        }
        let _ = tokio::fs::remove_file(path).await;
        Ok(())
    }

    async fn get_to_file(&self, key: &ObjectKey, path: &std::path::Path) -> StorageResult<u64> {
        use tokio::io::AsyncWriteExt;
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
            .map_err(|e| classify(key, e))?;
        let mut body = out.body;
        let io = |e: std::io::Error| {
            StorageError::Other(
                anyhow::Error::new(e).context(format!("writing {}", path.display())),
            )
        };
        let mut file = tokio::fs::File::create(path).await.map_err(io)?;
        let mut written = 0u64;
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| StorageError::Unavailable(format!("reading {key}: {e}")))?
        {
            file.write_all(&chunk).await.map_err(io)?;
            written += chunk.len() as u64;
        }
        file.sync_all().await.map_err(io)?;
        Ok(written)
    }

    async fn create_direct_upload(
        &self,
        key: &ObjectKey,
        size: u64,
        part_size: u64,
        expires_in: Duration,
    ) -> StorageResult<super::DirectUpload> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
            .map_err(|e| classify(key, e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| StorageError::Other(anyhow::anyhow!("S3 returned no upload id")))?
            .to_string();
        let parts = size.div_ceil(part_size).max(1);
        let mut part_urls = Vec::with_capacity(parts as usize);
        for number in 1..=parts {
            let config = PresigningConfig::expires_in(expires_in)
                .map_err(|e| StorageError::Other(e.into()))?;
            let req = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key.as_str())
                .upload_id(&upload_id)
                .part_number(number as i32)
                .presigned(config)
                .await
                .map_err(|e| classify(key, e))?;
            part_urls.push(req.uri().to_string());
        }
        Ok(super::DirectUpload {
            upload_id,
            part_size,
            part_urls,
        })
    }

    async fn complete_direct_upload(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        parts: &[(i32, String)],
    ) -> StorageResult<()> {
        let completed = parts
            .iter()
            .map(|(n, etag)| CompletedPart::builder().part_number(*n).e_tag(etag).build())
            .collect();
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key.as_str())
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| match e.code() {
                Some("InvalidPart")
                | Some("InvalidPartOrder")
                | Some("EntityTooSmall")
                | Some("NoSuchUpload") => {
                    StorageError::Refused("the parts do not complete the upload".into())
                }
                _ => classify(key, e),
            })?;
        Ok(())
    }

    async fn presign_get(&self, key: &ObjectKey, expires_in: Duration) -> StorageResult<String> {
        let config =
            PresigningConfig::expires_in(expires_in).map_err(|e| StorageError::Other(e.into()))?;
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .presigned(config)
            .await
            .map_err(|e| classify(key, e))?;
        Ok(req.uri().to_string())
    }

    async fn check(&self) -> StorageResult<()> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| {
                StorageError::Unavailable(format!(
                    "bucket {}: {}",
                    self.bucket,
                    DisplayErrorContext(&e)
                ))
            })?;
        Ok(())
    }
}
