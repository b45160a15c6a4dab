//! Content keys: 128-bit AES keys from the OS CSPRNG, stored only envelope-encrypted
//! (AES-256-GCM under a key-encryption key), found by opaque random ids.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::RngCore;
use sha2::{Digest, Sha256};

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::clock::now_ms;
use crate::db::{Db, DbResult, StoredContentKey};
use crate::keys::{KeyProvider, Keyring, MasterKey};

/// A 128-bit content key.
pub type Key128 = [u8; 16];

/// A fresh random content key from the OS CSPRNG.
pub fn generate_key() -> Key128 {
    let mut key = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut key);
    key
}

/// Wraps and unwraps content keys under one key-encryption key (KEK).
#[derive(Clone)]
pub struct KeyWrapper {
    kek_id: String,
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for KeyWrapper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyWrapper")
            .field("kek_id", &self.kek_id)
            .finish_non_exhaustive()
    }
}

impl KeyWrapper {
    /// A wrapper for `kek`; its id is a fingerprint, so a stored key names the KEK it needs.
    pub fn new(kek: [u8; 32]) -> Self {
        let fingerprint = Sha256::digest(Sha256::digest(kek));
        Self {
            kek_id: format!("local:{}", hex::encode(&fingerprint[..8])),
            cipher: Aes256Gcm::new(&kek.into()),
        }
    }

    /// The content-key KEK of a master key.
    pub fn for_master(master: &MasterKey) -> Self {
        Self::new(master.derive("content-key-kek/v1"))
    }

    pub fn kek_id(&self) -> &str {
        &self.kek_id
    }

    /// `base64(nonce || ciphertext || tag)`; the key id is bound as associated data so a
    /// wrapped key cannot be moved to another id.
    pub fn wrap(&self, key_id: &str, key: &Key128) -> String {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: key,
                    aad: key_id.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of 16 bytes cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        STANDARD.encode(out)
    }

    /// Seals a secret of any length (a payment provider's API key) as `base64(nonce ||
    /// ciphertext || tag)`, bound to `aad` (what it is the secret of).
    pub fn seal(&self, aad: &str, secret: &[u8]) -> String {
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret,
                    aad: aad.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of a short secret cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        STANDARD.encode(out)
    }

    /// Opens what [`Self::seal`] sealed with the same `aad`.
    pub fn open(&self, aad: &str, sealed: &str) -> Result<Vec<u8>, UnwrapError> {
        let raw = STANDARD
            .decode(sealed)
            .map_err(|_| UnwrapError::NotBase64)?;
        if raw.len() < 12 + 16 {
            return Err(UnwrapError::WrongLength);
        }
        self.cipher
            .decrypt(
                Nonce::from_slice(&raw[..12]),
                Payload {
                    msg: &raw[12..],
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| UnwrapError::WrongKek)
    }

    pub fn unwrap(&self, key_id: &str, wrapped: &str) -> Result<Key128, UnwrapError> {
        let raw = STANDARD
            .decode(wrapped)
            .map_err(|_| UnwrapError::NotBase64)?;
        if raw.len() != 12 + 16 + 16 {
            return Err(UnwrapError::WrongLength);
        }
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(&raw[..12]),
                Payload {
                    msg: &raw[12..],
                    aad: key_id.as_bytes(),
                },
            )
            .map_err(|_| UnwrapError::WrongKek)?;
        plain.try_into().map_err(|_| UnwrapError::WrongLength)
    }
}

/// Why a stored content key could not be unwrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UnwrapError {
    #[error("wrapped key is not base64")]
    NotBase64,
    #[error("wrapped key has the wrong length")]
    WrongLength,
    #[error("wrapped key does not open with this KEK")]
    WrongKek,
}

/// The content-key KEKs of a keyring: the current one wraps, all of them unwrap.
struct Wrappers {
    current: KeyWrapper,
    all: Vec<KeyWrapper>,
}

impl Wrappers {
    fn of(ring: &Keyring) -> Self {
        Self {
            current: KeyWrapper::for_master(&ring.current),
            all: ring.all().map(KeyWrapper::for_master).collect(),
        }
    }

    fn find(&self, kek_id: &str) -> Option<&KeyWrapper> {
        self.all.iter().find(|w| w.kek_id == kek_id)
    }
}

/// What a re-wrap pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RewrapReport {
    pub rewrapped: u64,
    /// Keys wrapped under a KEK this keyring does not hold (left as they are).
    pub unknown_kek: u64,
}

/// Creates and reads content keys, under the keyring of a [`KeyProvider`].
#[derive(Clone)]
pub struct ContentKeys {
    db: Db,
    provider: Arc<dyn KeyProvider>,
    wrappers: Arc<RwLock<Arc<Wrappers>>>,
    last_reload: Arc<Mutex<Instant>>,
}

impl std::fmt::Debug for ContentKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentKeys")
            .field("provider", &self.provider.name())
            .field("kek", &self.current_kek_id())
            .finish_non_exhaustive()
    }
}

impl ContentKeys {
    pub fn new(db: Db, provider: Arc<dyn KeyProvider>, ring: &Keyring) -> Self {
        Self {
            db,
            provider,
            wrappers: Arc::new(RwLock::new(Arc::new(Wrappers::of(ring)))),
            last_reload: Arc::new(Mutex::new(Instant::now())),
        }
    }

    pub fn current_kek_id(&self) -> String {
        self.wrappers.read().unwrap().current.kek_id.clone()
    }

    /// Reads the keyring again (another process may have rotated it); returns it.
    pub fn reload(&self) -> anyhow::Result<Keyring> {
        let (ring, _) = self.provider.load()?;
        *self.wrappers.write().unwrap() = Arc::new(Wrappers::of(&ring));
        *self.last_reload.lock().unwrap() = Instant::now();
        Ok(ring)
    }

    /// Seals `secret` under the current KEK; returns (its KEK id, the sealed text).
    pub fn seal_secret(&self, aad: &str, secret: &[u8]) -> (String, String) {
        let wrappers = self.wrappers.read().unwrap().clone();
        (
            wrappers.current.kek_id.clone(),
            wrappers.current.seal(aad, secret),
        )
    }

    /// Opens a secret sealed by [`Self::seal_secret`] under KEK `kek_id`.
    pub fn open_secret(
        &self,
        kek_id: &str,
        aad: &str,
        sealed: &str,
    ) -> Result<Vec<u8>, UnwrapError> {
        self.wrapper_for(kek_id)
            .ok_or(UnwrapError::WrongKek)?
            .open(aad, sealed)
    }

    /// A new key for `scope` (a broadcast's storage prefix); returns its opaque id and bytes.
    pub async fn create(&self, tenant_id: &str, scope: &str) -> DbResult<(String, Key128)> {
        let mut raw_id = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut raw_id);
        let id = URL_SAFE_NO_PAD.encode(raw_id);
        let key = generate_key();
        self.insert(tenant_id, scope, &id, key).await?;
        Ok((id, key))
    }

    /// Stores a key made elsewhere (a DRM vendor's, over SPEKE) under `id`, wrapped like
    /// the others, so the licence and the audit log know it.
    pub async fn insert(
        &self,
        tenant_id: &str,
        scope: &str,
        id: &str,
        key: Key128,
    ) -> DbResult<()> {
        let id = id.to_string();
        let wrappers = self.wrappers.read().unwrap().clone();
        self.db
            .insert_content_key(&StoredContentKey {
                wrapped: wrappers.current.wrap(&id, &key),
                id: id.clone(),
                tenant_id: tenant_id.to_string(),
                scope: scope.to_string(),
                kek_id: wrappers.current.kek_id.clone(),
                created_at: now_ms(),
            })
            .await
    }

    /// The wrapper for `kek_id`, reading the keyring again (at most once a second) when this
    /// process does not know it yet.
    fn wrapper_for(&self, kek_id: &str) -> Option<KeyWrapper> {
        if let Some(w) = self.wrappers.read().unwrap().find(kek_id) {
            return Some(w.clone());
        }
        let due = self.last_reload.lock().unwrap().elapsed() >= Duration::from_secs(1);
        if due {
            match self.reload() {
                Ok(_) => tracing::info!(kek_id, "keyring reloaded for an unknown KEK"),
                Err(e) => tracing::warn!(error = %e, "reloading the keyring"),
            }
        }
        self.wrappers.read().unwrap().find(kek_id).cloned()
    }

    /// The stored record and the key in clear, if the id exists and unwraps.
    pub async fn get(&self, id: &str) -> anyhow::Result<Option<(StoredContentKey, Key128)>> {
        let Some(stored) = self.db.get_content_key(id).await? else {
            return Ok(None);
        };
        let wrapper = self.wrapper_for(&stored.kek_id).ok_or_else(|| {
            anyhow::anyhow!(
                "content key {} is wrapped under KEK {}, which this keyring does not hold",
                stored.id,
                stored.kek_id
            )
        })?;
        let key = wrapper
            .unwrap(&stored.id, &stored.wrapped)
            .map_err(|e| anyhow::anyhow!("content key {}: {e}", stored.id))?;
        Ok(Some((stored, key)))
    }

    /// Re-wraps every content key not under the current KEK. Media is not touched; each key
    /// is replaced only if nobody re-wrapped it meanwhile, so it is safe while serving.
    pub async fn rewrap_all(&self) -> anyhow::Result<RewrapReport> {
        let wrappers = self.wrappers.read().unwrap().clone();
        let current = &wrappers.current;
        let mut report = RewrapReport::default();
        let mut skipped = std::collections::HashSet::new();
        loop {
            let batch = self
                .db
                .content_keys_not_under(&current.kek_id, 500 + skipped.len() as i64)
                .await?;
            let mut progressed = false;
            for stored in batch {
                if skipped.contains(&stored.id) {
                    continue;
                }
                let Some(old) = wrappers.find(&stored.kek_id) else {
                    tracing::error!(key_id = %stored.id, kek_id = %stored.kek_id, "content key under an unknown KEK");
                    skipped.insert(stored.id);
                    report.unknown_kek += 1;
                    continue;
                };
                let key = old
                    .unwrap(&stored.id, &stored.wrapped)
                    .map_err(|e| anyhow::anyhow!("content key {}: {e}", stored.id))?;
                let wrapped = current.wrap(&stored.id, &key);
                if self
                    .db
                    .rewrap_content_key(&stored.id, &stored.kek_id, &wrapped, &current.kek_id)
                    .await?
                {
                    report.rewrapped += 1;
                }
                progressed = true;
            }
            if !progressed {
                return Ok(report);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_keys_open_only_with_the_same_kek_and_id() {
        let w = KeyWrapper::new([1; 32]);
        let key = generate_key();
        let wrapped = w.wrap("k1", &key);
        assert!(!wrapped.contains(&STANDARD.encode(key)));
        assert_eq!(w.unwrap("k1", &wrapped).unwrap(), key);
        assert!(w.unwrap("k2", &wrapped).is_err(), "moved to another id");
        assert!(
            KeyWrapper::new([2; 32]).unwrap("k1", &wrapped).is_err(),
            "other KEK"
        );
        assert_ne!(w.wrap("k1", &key), wrapped, "fresh nonce each time");
        assert_ne!(w.kek_id(), KeyWrapper::new([2; 32]).kek_id());
    }
}
