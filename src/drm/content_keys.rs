//! Content keys: 128-bit AES keys from the OS CSPRNG, stored only envelope-encrypted
//! (AES-256-GCM under a key-encryption key), found by opaque random ids.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::db::{Db, DbResult, StoredContentKey, now_ms};
use crate::packager::crypto::{Key128, generate_key};

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

    pub fn unwrap(&self, key_id: &str, wrapped: &str) -> Result<Key128, String> {
        let raw = STANDARD
            .decode(wrapped)
            .map_err(|_| "wrapped key is not base64".to_string())?;
        if raw.len() != 12 + 16 + 16 {
            return Err("wrapped key has the wrong length".into());
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
            .map_err(|_| "wrapped key does not open with this KEK".to_string())?;
        plain
            .try_into()
            .map_err(|_| "unwrapped key is not 16 bytes".to_string())
    }
}

/// Creates and reads content keys.
#[derive(Clone, Debug)]
pub struct ContentKeys {
    db: Db,
    wrapper: KeyWrapper,
}

impl ContentKeys {
    pub fn new(db: Db, wrapper: KeyWrapper) -> Self {
        Self { db, wrapper }
    }

    /// A new key for `scope` (a broadcast's storage prefix); returns its opaque id and bytes.
    pub async fn create(&self, tenant_id: &str, scope: &str) -> DbResult<(String, Key128)> {
        let mut raw_id = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut raw_id);
        let id = URL_SAFE_NO_PAD.encode(raw_id);
        let key = generate_key();
        self.db
            .insert_content_key(&StoredContentKey {
                wrapped: self.wrapper.wrap(&id, &key),
                id: id.clone(),
                tenant_id: tenant_id.to_string(),
                scope: scope.to_string(),
                kek_id: self.wrapper.kek_id().to_string(),
                created_at: now_ms(),
            })
            .await?;
        Ok((id, key))
    }

    /// The stored record and the key in clear, if the id exists and unwraps.
    pub async fn get(&self, id: &str) -> anyhow::Result<Option<(StoredContentKey, Key128)>> {
        let Some(stored) = self.db.get_content_key(id).await? else {
            return Ok(None);
        };
        let key = self
            .wrapper
            .unwrap(&stored.id, &stored.wrapped)
            .map_err(|e| anyhow::anyhow!("content key {}: {e}", stored.id))?;
        Ok(Some((stored, key)))
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
