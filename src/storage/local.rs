//! The local-folder backend: one file per object under a root folder. Writes go to a temp
//! file in `ROOT/.partial/` and are renamed into place, so readers never see half an object.
//! Presigned URLs point at this server's `/objects/...` route, signed with HMAC-SHA256.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{
    ByteRange, Object, ObjectKey, ObjectMeta, ObjectStore, Prefix, StorageError, StorageResult,
    content_type_for,
};

const PARTIAL_DIR: &str = ".partial";

/// Signs and checks the URLs that stand in for presigned URLs on the local backend.
#[derive(Clone)]
pub struct UrlSigner {
    base_url: String,
    key: [u8; 32],
}

impl std::fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UrlSigner")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl UrlSigner {
    /// `base_url` is the server's public URL; `key` a secret derived from the master key.
    pub fn new(base_url: impl Into<String>, key: [u8; 32]) -> Self {
        Self {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            key,
        }
    }

    fn mac(&self, key: &str, expires: u64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(key.as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        mac
    }

    /// `BASE/objects/KEY?expires=UNIX&signature=HEX`.
    pub fn url(&self, key: &ObjectKey, expires: u64) -> String {
        let signature = hex::encode(self.mac(key.as_str(), expires).finalize().into_bytes());
        let mut url = url::Url::parse(&self.base_url).expect("public URL was validated");
        url.path_segments_mut()
            .expect("http URLs have paths")
            .pop_if_empty()
            .push("objects")
            .extend(key.as_str().split('/'));
        url.query_pairs_mut()
            .append_pair("expires", &expires.to_string())
            .append_pair("signature", &signature);
        url.to_string()
    }

    /// Whether `signature` is valid for `key` and `expires` is still ahead of `now`.
    pub fn verify(&self, key: &ObjectKey, expires: u64, signature: &str, now: u64) -> bool {
        let Ok(sig) = hex::decode(signature) else {
            return false;
        };
        now < expires && self.mac(key.as_str(), expires).verify_slice(&sig).is_ok()
    }
}

/// Objects as files under a root folder.
#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
    signer: Option<UrlSigner>,
}

impl LocalStore {
    /// Opens (creating if needed) the store at `root`. Without a signer it cannot presign.
    pub async fn open(root: impl Into<PathBuf>, signer: Option<UrlSigner>) -> anyhow::Result<Self> {
        let root = root.into();
        tokio::fs::create_dir_all(root.join(PARTIAL_DIR))
            .await
            .with_context(|| format!("creating storage folder {}", root.display()))?;
        Ok(Self { root, signer })
    }

    fn path(&self, key: &ObjectKey) -> PathBuf {
        // ObjectKey guarantees relative, dot-free segments: the join cannot leave the root.
        self.root.join(key.as_str())
    }

    fn meta(key: &ObjectKey, m: &std::fs::Metadata) -> ObjectMeta {
        let modified_ms = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64);
        ObjectMeta {
            key: key.clone(),
            size: m.len(),
            modified_ms,
            content_type: content_type_for(key.as_str()).to_string(),
        }
    }

    /// Removes empty folders from `dir` up to (not including) the root.
    async fn prune(&self, mut dir: &Path) {
        while dir != self.root && dir.starts_with(&self.root) {
            if tokio::fs::remove_dir(dir).await.is_err() {
                break; // not empty, or already gone
            }
            match dir.parent() {
                Some(p) => dir = p,
                None => break,
            }
        }
    }
}

/// A failed write: a full disk (or quota) is the store being unavailable until space
/// returns (writers retry, the API answers 503); anything else is an error of its own.
fn write_error(key: &ObjectKey, e: std::io::Error, what: &str) -> StorageError {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    if e.kind() == std::io::ErrorKind::StorageFull
        || matches!(e.raw_os_error(), Some(ENOSPC | EDQUOT))
    {
        StorageError::Unavailable(format!(
            "no space left on the object store's disk ({what} {key})"
        ))
    } else {
        StorageError::Other(anyhow::Error::new(e).context(format!("{what} {key}")))
    }
}

fn not_found_or(key: &ObjectKey, e: std::io::Error, what: &str) -> StorageError {
    if e.kind() == std::io::ErrorKind::NotFound {
        StorageError::NotFound(key.clone())
    } else {
        StorageError::Other(anyhow::Error::new(e).context(format!("{what} {key}")))
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put(&self, key: &ObjectKey, body: Bytes, _content_type: &str) -> StorageResult<()> {
        let target = self.path(key);
        let temp = self
            .root
            .join(PARTIAL_DIR)
            .join(uuid::Uuid::new_v4().to_string());
        // One trip to the blocking pool, writing straight from `body`: tokio::fs would take
        // a trip per call and copy the body into a buffer of its own first.
        let result = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let write = || -> std::io::Result<()> {
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                let mut file = std::fs::File::create(&temp)?;
                file.write_all(&body)?;
                file.sync_data()?;
                drop(file);
                std::fs::rename(&temp, &target)
            };
            let result = write();
            if result.is_err() {
                let _ = std::fs::remove_file(&temp);
            }
            result
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        result.map_err(|e| write_error(key, e, "writing"))
    }

    async fn get(&self, key: &ObjectKey, range: Option<ByteRange>) -> StorageResult<Object> {
        // One trip to the blocking pool for open, stat and read (tokio::fs would take one
        // per call): this is the path of every playlist and segment served.
        let (path, key) = (self.path(key), key.clone());
        tokio::task::spawn_blocking(move || {
            use std::io::{Read, Seek};
            let mut file =
                std::fs::File::open(&path).map_err(|e| not_found_or(&key, e, "opening"))?;
            let m = file
                .metadata()
                .map_err(|e| not_found_or(&key, e, "reading"))?;
            if m.is_dir() {
                return Err(StorageError::NotFound(key.clone()));
            }
            let meta = Self::meta(&key, &m);
            let (start, end) = match range {
                None => (0, meta.size.saturating_sub(1)),
                Some(r) => r
                    .resolve(meta.size)
                    .ok_or_else(|| StorageError::InvalidRange(r.to_header()))?,
            };
            let len = if meta.size == 0 { 0 } else { end - start + 1 };
            let mut buf = vec![0u8; len as usize];
            file.seek(SeekFrom::Start(start))
                .and_then(|_| file.read_exact(&mut buf))
                .map_err(|e| not_found_or(&key, e, "reading"))?;
            Ok(Object {
                meta,
                range: range.map(|_| (start, end)),
                body: Bytes::from(buf),
            })
        })
        .await
        .map_err(|e| StorageError::Other(anyhow::anyhow!("reading {e}")))?
    }

    async fn head(&self, key: &ObjectKey) -> StorageResult<ObjectMeta> {
        let m = tokio::fs::metadata(self.path(key))
            .await
            .map_err(|e| not_found_or(key, e, "reading"))?;
        if m.is_dir() {
            return Err(StorageError::NotFound(key.clone()));
        }
        Ok(Self::meta(key, &m))
    }

    async fn delete(&self, key: &ObjectKey) -> StorageResult<()> {
        let path = self.path(key);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(not_found_or(key, e, "deleting")),
        }
        if let Some(parent) = path.parent() {
            self.prune(parent).await;
        }
        Ok(())
    }

    async fn delete_prefix(&self, prefix: &Prefix) -> StorageResult<u64> {
        let objects = self.list(prefix).await?;
        for o in &objects {
            self.delete(&o.key).await?;
        }
        Ok(objects.len() as u64)
    }

    async fn list(&self, prefix: &Prefix) -> StorageResult<Vec<ObjectMeta>> {
        let root = self.root.clone();
        let prefix = prefix.as_str().to_string();
        // Walk only the folder the prefix names, not the whole store.
        let start_dir = match prefix.rfind('/') {
            Some(i) => prefix[..i].to_string(),
            None => String::new(),
        };
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let mut stack = vec![(root.join(&start_dir), start_dir.clone())];
            while let Some((dir, rel)) = stack.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        return Err(
                            anyhow::Error::new(e).context(format!("listing {}", dir.display()))
                        );
                    }
                };
                for entry in entries {
                    let entry = entry?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.starts_with('.') {
                        continue;
                    }
                    let key = if rel.is_empty() {
                        name
                    } else {
                        format!("{rel}/{name}")
                    };
                    let m = entry.metadata()?;
                    if m.is_dir() {
                        if key.starts_with(&prefix) || prefix.starts_with(&format!("{key}/")) {
                            stack.push((entry.path(), key));
                        }
                    } else if key.starts_with(&prefix)
                        && let Ok(k) = ObjectKey::parse(&key)
                    {
                        out.push(Self::meta(&k, &m));
                    }
                }
            }
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
        .map_err(|e| StorageError::Other(e.into()))?
        .map_err(StorageError::Other)
    }

    async fn put_file(
        &self,
        key: &ObjectKey,
        path: &Path,
        _content_type: &str,
    ) -> StorageResult<()> {
        let target = self.path(key);
        let result: std::io::Result<()> = async {
            if let Some(parent) = target.parent() {
                tokio::fs::create_dir_all(parent).await?;
            }
            // Same filesystem: a rename is atomic and free. Otherwise copy via a temp file.
            if tokio::fs::rename(path, &target).await.is_err() {
                let temp = self
                    .root
                    .join(PARTIAL_DIR)
                    .join(uuid::Uuid::new_v4().to_string());
                tokio::fs::copy(path, &temp).await?;
                tokio::fs::File::open(&temp).await?.sync_all().await?;
                tokio::fs::rename(&temp, &target).await?;
                tokio::fs::remove_file(path).await?;
            }
            Ok(())
        }
        .await;
        result.map_err(|e| write_error(key, e, "storing"))
    }

    async fn get_to_file(&self, key: &ObjectKey, path: &Path) -> StorageResult<u64> {
        tokio::fs::copy(self.path(key), path)
            .await
            .map_err(|e| not_found_or(key, e, "copying"))
    }

    async fn presign_get(&self, key: &ObjectKey, expires_in: Duration) -> StorageResult<String> {
        let signer = self.signer.as_ref().ok_or_else(|| {
            StorageError::Other(anyhow::anyhow!(
                "local store has no public URL to presign with"
            ))
        })?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Ok(signer.url(key, (now + expires_in).as_secs()))
    }

    async fn check(&self) -> StorageResult<()> {
        match tokio::fs::metadata(self.root.join(PARTIAL_DIR)).await {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(StorageError::Unavailable(format!(
                "{} is not a folder",
                self.root.join(PARTIAL_DIR).display()
            ))),
            Err(e) => Err(StorageError::Unavailable(format!(
                "storage folder {}: {e}",
                self.root.display()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_urls_verify_only_unexpired_and_untampered() {
        let signer = UrlSigner::new("http://127.0.0.1:8080/", [7; 32]);
        let key = ObjectKey::parse("a/b c.ts").unwrap();
        let url = signer.url(&key, 1000);
        assert!(
            url.starts_with("http://127.0.0.1:8080/objects/a/b%20c.ts?expires=1000&signature=")
        );
        let sig = url.rsplit_once("signature=").unwrap().1;
        assert!(signer.verify(&key, 1000, sig, 999));
        assert!(!signer.verify(&key, 1000, sig, 1000), "expired");
        assert!(!signer.verify(&key, 1001, sig, 999), "expiry changed");
        assert!(!signer.verify(&ObjectKey::parse("a/b.ts").unwrap(), 1000, sig, 999));
        assert!(!signer.verify(&key, 1000, "zz", 999));
        let other = UrlSigner::new("http://x", [8; 32]);
        assert!(!other.verify(&key, 1000, sig, 999));
    }
}
