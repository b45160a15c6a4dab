//! Playback tokens: JWTs that name one playback id (`sub`), an audience and an expiry.
//!
//! Two kinds are accepted:
//! - signed by a tenant's signing key (RS256 or ES256, `kid` = the key's id): Ferrocast keeps
//!   only the public key, looked up by `kid` and cached; revoking the key drops it from the
//!   cache at once, and cached entries are re-read after [`KEY_CACHE_TTL`] so a revocation
//!   made by another server process is seen soon too;
//! - minted by Ferrocast itself (`POST /v1/playback-tokens`): HS256 with a secret derived from
//!   the master key, no `kid`. Secrets of earlier master keys still verify until retired.
//!
//! Verification pins the algorithm to the key's, so `alg: none` or an algorithm swap (an RSA
//! public key used as an HMAC secret) cannot pass.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

use crate::db::Db;

/// Audience of tokens for playlists, segments and keys.
pub const AUD_VIDEO: &str = "v";
/// Audience of tokens for thumbnails.
pub const AUD_THUMBNAIL: &str = "t";
/// Audience of tokens for storyboards.
pub const AUD_STORYBOARD: &str = "s";

/// How long a looked-up signing key is trusted before it is read again.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(30);
const KEY_CACHE_MAX: usize = 10_000;

/// How far a token's `nbf` may be ahead of this server's clock: clocks of the servers that
/// mint tokens are a little apart.
pub const NBF_LEEWAY_S: u64 = 60;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaybackClaims {
    /// The playback id.
    pub sub: String,
    pub aud: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Not before, Unix seconds (RFC 7519 §4.1.5): refused until then, less [`NBF_LEEWAY_S`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub viewer: Option<String>,
    /// Hosts (or origins) of pages allowed to play; checked against `Referer`/`Origin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrer: Option<Vec<String>>,
    /// ISO 3166-1 alpha-2 countries allowed to play.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<Vec<String>>,
    /// Highest rendition offered, e.g. `"720p"` (the short side, in pixels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_resolution: Option<String>,
}

impl PlaybackClaims {
    pub fn new(playback_id: &str, aud: &str, exp: u64) -> Self {
        Self {
            sub: playback_id.to_string(),
            aud: aud.to_string(),
            exp,
            nbf: None,
            viewer: None,
            referrer: None,
            country: None,
            max_resolution: None,
        }
    }

    /// `max_resolution` as a number of lines (`"720p"` or `"720"` -> 720). A token whose
    /// `max_resolution` does not read so is refused when verified ([`resolution_lines`]).
    pub fn max_lines(&self) -> Option<u32> {
        resolution_lines(self.max_resolution.as_deref()?)
    }
}

/// `"720p"` or `"720"` as 720: digits, at most one `p`, 1 to 8640 lines; anything else
/// (`"720pp"`, `"p"`, `"+720"`) is `None`.
pub fn resolution_lines(r: &str) -> Option<u32> {
    let digits = r.strip_suffix('p').unwrap_or(r);
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|l| (1..=8640).contains(l))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("playback token has expired")]
    Expired,
    #[error("playback token is for another playback id")]
    WrongPlaybackId,
    #[error("playback token is for another use (audience {0:?})")]
    WrongAudience(String),
    #[error("playback token's signing key is unknown")]
    UnknownKey,
    #[error("playback token's signing key was revoked")]
    RevokedKey,
    #[error("playback token lives longer than the {0} s allowed")]
    LifetimeTooLong(u64),
    #[error("playback token is not valid yet (nbf)")]
    NotYetValid,
    #[error("playback token is invalid")]
    Invalid,
}

impl TokenError {
    /// 401 for a token that proves nothing, 403 for a genuine token that does not allow this.
    pub fn is_forbidden(&self) -> bool {
        matches!(
            self,
            Self::Expired | Self::NotYetValid | Self::WrongPlaybackId | Self::WrongAudience(_)
        )
    }

    /// Short reason for the audit log.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::WrongPlaybackId => "wrong_playback_id",
            Self::WrongAudience(_) => "wrong_audience",
            Self::UnknownKey => "unknown_signing_key",
            Self::RevokedKey => "revoked_signing_key",
            Self::LifetimeTooLong(_) => "lifetime_too_long",
            Self::NotYetValid => "not_yet_valid",
            Self::Invalid => "invalid_token",
        }
    }
}

/// A verified token: its claims and, for tenant-signed ones, the tenant whose key signed it
/// (the caller must check that tenant owns the playback id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub claims: PlaybackClaims,
    pub signed_by_tenant: Option<String>,
}

#[derive(Clone)]
struct CachedKey {
    fetched: Instant,
    /// None: no such key, or revoked (`revoked` says which).
    key: Option<(String, Algorithm, Arc<DecodingKey>)>,
    revoked: bool,
}

/// A token whose signature verified: players send the same token with every playlist and
/// segment request, and an ES256 or RS256 verification costs far more than serving a
/// playlist. Keyed by the token's SHA-256, so only the exact token that verified hits.
#[derive(Clone)]
struct VerifiedToken {
    claims: PlaybackClaims,
    signed_by_tenant: Option<String>,
    kid: Option<String>,
}

/// Verified tokens kept at most: made-up tokens never enter, but many viewers do.
const VERIFIED_MAX: usize = 50_000;

/// A longer token is refused unread: a playback token's claims fit in far less.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Whether a `kid` has the shape of a signing key's id (a UUID, as Ferrocast issues them):
/// anything else is refused before it costs a lookup or a cache entry.
fn kid_shaped(kid: &str) -> bool {
    kid.len() == 36 && uuid::Uuid::try_parse(kid).is_ok()
}

/// Mints Ferrocast-signed tokens and verifies both kinds.
#[derive(Clone)]
pub struct PlaybackTokens {
    /// Signing key (the current secret) and verifying keys (current first, then earlier).
    secrets: Arc<RwLock<(EncodingKey, Vec<Arc<DecodingKey>>)>>,
    db: Option<Db>,
    cache: Arc<Mutex<HashMap<String, CachedKey>>>,
    verified: Arc<Mutex<HashMap<[u8; 32], VerifiedToken>>>,
    max_lifetime_s: u64,
}

impl std::fmt::Debug for PlaybackTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlaybackTokens([redacted])")
    }
}

impl PlaybackTokens {
    /// `secrets`: the current HS256 secret first, then earlier ones still accepted. `db` finds
    /// tenants' signing keys (None: only Ferrocast-signed tokens are accepted).
    pub fn new(secrets: &[[u8; 32]], db: Option<Db>, max_lifetime_s: u64) -> Self {
        Self {
            secrets: Arc::new(RwLock::new(Self::keys_of(secrets))),
            db,
            cache: Arc::default(),
            verified: Arc::default(),
            max_lifetime_s,
        }
    }

    fn keys_of(secrets: &[[u8; 32]]) -> (EncodingKey, Vec<Arc<DecodingKey>>) {
        (
            EncodingKey::from_secret(&secrets[0]),
            secrets
                .iter()
                .map(|s| Arc::new(DecodingKey::from_secret(s)))
                .collect(),
        )
    }

    /// Replaces the HS256 secrets (after the master keys were rotated or retired).
    pub fn set_secrets(&self, secrets: &[[u8; 32]]) {
        *self.secrets.write().unwrap() = Self::keys_of(secrets);
        // A retired secret's tokens must stop verifying.
        self.verified.lock().unwrap().clear();
    }

    pub fn max_lifetime_s(&self) -> u64 {
        self.max_lifetime_s
    }

    pub fn mint(&self, claims: &PlaybackClaims) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &self.secrets.read().unwrap().0,
        )
        .expect("HS256 signing cannot fail")
    }

    /// Forgets a signing key at once (after revocation).
    pub fn forget_key(&self, kid: &str) {
        self.cache.lock().unwrap().remove(kid);
    }

    /// Checks signature, algorithm, audience, expiry and lifetime, then that it names
    /// `playback_id` (when given).
    pub async fn verify(
        &self,
        token: &str,
        playback_id: Option<&str>,
        audience: &str,
    ) -> Result<Verified, TokenError> {
        use sha2::Digest;
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Invalid);
        }
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let known = self.verified.lock().unwrap().get(&digest).cloned();
        if let Some(known) = known {
            // The signature held; its key may since have been revoked (seen within
            // KEY_CACHE_TTL, as for any token), and the claims are checked again now.
            if let Some(kid) = &known.kid {
                self.signing_key(kid).await?;
            }
            if known.claims.exp < crate::clock::unix_now() {
                return Err(TokenError::Expired);
            }
            self.check_claims(&known.claims, playback_id, audience)?;
            return Ok(Verified {
                claims: known.claims,
                signed_by_tenant: known.signed_by_tenant,
            });
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        let (keys, alg, tenant): (Vec<Arc<DecodingKey>>, Algorithm, Option<String>) =
            match header.kid.as_deref() {
                None => (
                    self.secrets.read().unwrap().1.clone(),
                    Algorithm::HS256,
                    None,
                ),
                Some(kid) if !kid_shaped(kid) => return Err(TokenError::UnknownKey),
                Some(kid) => {
                    let (tenant, alg, key) = self.signing_key(kid).await?;
                    (vec![key], alg, Some(tenant))
                }
            };
        if header.alg != alg {
            return Err(TokenError::Invalid);
        }
        let mut validation = Validation::new(alg);
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        validation.validate_aud = false; // checked below, to say which audience it was
        validation.leeway = 0;
        let mut last = TokenError::Invalid;
        for key in &keys {
            match jsonwebtoken::decode::<PlaybackClaims>(token, key, &validation) {
                Ok(data) => {
                    let claims = data.claims;
                    self.check_claims(&claims, playback_id, audience)?;
                    let mut verified = self.verified.lock().unwrap();
                    if verified.len() >= VERIFIED_MAX {
                        let now = crate::clock::unix_now();
                        verified.retain(|_, v| v.claims.exp >= now);
                        if verified.len() >= VERIFIED_MAX {
                            verified.clear();
                        }
                    }
                    verified.insert(
                        digest,
                        VerifiedToken {
                            claims: claims.clone(),
                            signed_by_tenant: tenant.clone(),
                            kid: header.kid.clone(),
                        },
                    );
                    return Ok(Verified {
                        claims,
                        signed_by_tenant: tenant,
                    });
                }
                Err(e) if *e.kind() == ErrorKind::ExpiredSignature => {
                    return Err(TokenError::Expired);
                }
                Err(_) => last = TokenError::Invalid,
            }
        }
        Err(last)
    }

    /// What a token's signature does not say: its audience, lifetime and playback id.
    fn check_claims(
        &self,
        claims: &PlaybackClaims,
        playback_id: Option<&str>,
        audience: &str,
    ) -> Result<(), TokenError> {
        if claims.aud != audience {
            return Err(TokenError::WrongAudience(claims.aud.clone()));
        }
        let now = crate::clock::unix_now();
        if claims.exp.saturating_sub(now) > self.max_lifetime_s {
            return Err(TokenError::LifetimeTooLong(self.max_lifetime_s));
        }
        if claims.nbf.is_some_and(|nbf| nbf > now + NBF_LEEWAY_S) {
            return Err(TokenError::NotYetValid);
        }
        // A restriction that does not read is refused, never ignored.
        if claims
            .max_resolution
            .as_deref()
            .is_some_and(|r| resolution_lines(r).is_none())
        {
            return Err(TokenError::Invalid);
        }
        if let Some(p) = playback_id
            && claims.sub != p
        {
            return Err(TokenError::WrongPlaybackId);
        }
        Ok(())
    }

    async fn signing_key(
        &self,
        kid: &str,
    ) -> Result<(String, Algorithm, Arc<DecodingKey>), TokenError> {
        let cached = self.cache.lock().unwrap().get(kid).cloned();
        let entry = match cached {
            Some(c) if c.fetched.elapsed() < KEY_CACHE_TTL => c,
            _ => {
                let db = self.db.as_ref().ok_or(TokenError::UnknownKey)?;
                let stored = db.get_signing_key(kid).await.map_err(|e| {
                    tracing::warn!(error = %e, "signing key lookup failed");
                    TokenError::UnknownKey
                })?;
                let entry = match stored {
                    None => CachedKey {
                        fetched: Instant::now(),
                        key: None,
                        revoked: false,
                    },
                    Some(k) if k.revoked_at.is_some() => CachedKey {
                        fetched: Instant::now(),
                        key: None,
                        revoked: true,
                    },
                    Some(k) => {
                        let (alg, key) = match k.algorithm.as_str() {
                            "RS256" => (
                                Algorithm::RS256,
                                DecodingKey::from_rsa_pem(k.public_key.as_bytes()),
                            ),
                            _ => (
                                Algorithm::ES256,
                                DecodingKey::from_ec_pem(k.public_key.as_bytes()),
                            ),
                        };
                        let key = key.map_err(|e| {
                            tracing::error!(kid, error = %e, "stored public key does not parse");
                            TokenError::UnknownKey
                        })?;
                        CachedKey {
                            fetched: Instant::now(),
                            key: Some((k.tenant_id, alg, Arc::new(key))),
                            revoked: false,
                        }
                    }
                };
                let mut cache = self.cache.lock().unwrap();
                if cache.len() >= KEY_CACHE_MAX {
                    cache.retain(|_, c| c.fetched.elapsed() < KEY_CACHE_TTL);
                    if cache.len() >= KEY_CACHE_MAX {
                        cache.clear();
                    }
                }
                cache.insert(kid.to_string(), entry.clone());
                entry
            }
        };
        match entry.key {
            Some(k) => Ok(k),
            None if entry.revoked => Err(TokenError::RevokedKey),
            None => Err(TokenError::UnknownKey),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn now() -> u64 {
        crate::clock::unix_now()
    }

    fn claims(pb: &str, exp: u64) -> PlaybackClaims {
        PlaybackClaims::new(pb, AUD_VIDEO, exp)
    }

    #[tokio::test]
    async fn a_verified_token_is_remembered_but_still_expires_and_dies_with_its_secret() {
        let tokens = PlaybackTokens::new(&[[9; 32]], None, 3600);
        let short = tokens.mint(&claims("pb1", now() + 1));
        let good = tokens.mint(&claims("pb1", now() + 60));
        for t in [&short, &good] {
            assert!(tokens.verify(t, Some("pb1"), AUD_VIDEO).await.is_ok());
        }
        assert_eq!(tokens.verified.lock().unwrap().len(), 2);
        // Remembered, the claims are still checked.
        assert_eq!(
            tokens.verify(&good, Some("pb2"), AUD_VIDEO).await,
            Err(TokenError::WrongPlaybackId)
        );
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        assert_eq!(
            tokens.verify(&short, Some("pb1"), AUD_VIDEO).await,
            Err(TokenError::Expired)
        );
        assert!(tokens.verify(&good, Some("pb1"), AUD_VIDEO).await.is_ok());
        // The secret is retired: its tokens stop verifying, remembered or not.
        tokens.set_secrets(&[[8; 32]]);
        assert_eq!(
            tokens.verify(&good, Some("pb1"), AUD_VIDEO).await,
            Err(TokenError::Invalid)
        );
    }

    #[tokio::test]
    async fn good_tokens_verify_and_bad_ones_say_why() {
        let tokens = PlaybackTokens::new(&[[9; 32]], None, 3600);
        let mut c = claims("pb1", now() + 60);
        c.viewer = Some("viewer-7".into());
        let good = tokens.mint(&c);
        let v = tokens.verify(&good, Some("pb1"), AUD_VIDEO).await.unwrap();
        assert_eq!(v.claims.viewer.as_deref(), Some("viewer-7"));
        assert_eq!(v.signed_by_tenant, None);
        let check = |t: String, pb: &'static str, aud: &'static str| {
            let tokens = tokens.clone();
            async move { tokens.verify(&t, Some(pb), aud).await.map(|_| ()) }
        };
        assert_eq!(
            check(good.clone(), "pb2", AUD_VIDEO).await,
            Err(TokenError::WrongPlaybackId)
        );
        assert_eq!(
            check(good.clone(), "pb1", AUD_THUMBNAIL).await,
            Err(TokenError::WrongAudience("v".into()))
        );
        assert_eq!(
            check(tokens.mint(&claims("pb1", now() - 1)), "pb1", AUD_VIDEO).await,
            Err(TokenError::Expired)
        );
        assert_eq!(
            check(tokens.mint(&claims("pb1", now() + 7200)), "pb1", AUD_VIDEO).await,
            Err(TokenError::LifetimeTooLong(3600))
        );
        let other = PlaybackTokens::new(&[[8; 32]], None, 3600);
        assert_eq!(
            other.verify(&good, Some("pb1"), AUD_VIDEO).await,
            Err(TokenError::Invalid)
        );
        // An earlier secret still verifies, the current one signs.
        let rotated = PlaybackTokens::new(&[[8; 32], [9; 32]], None, 3600);
        assert!(rotated.verify(&good, Some("pb1"), AUD_VIDEO).await.is_ok());
        // Tampered payload, same signature.
        let parts: Vec<&str> = good.split('.').collect();
        let forged_claims =
            URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"pb1","aud":"v","exp":{}}}"#, now() + 99));
        let forged = format!("{}.{}.{}", parts[0], forged_claims, parts[2]);
        assert_eq!(
            check(forged, "pb1", AUD_VIDEO).await,
            Err(TokenError::Invalid)
        );
        // alg: none
        let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let unsigned = format!("{none_header}.{}.", parts[1]);
        assert_eq!(
            check(unsigned, "pb1", AUD_VIDEO).await,
            Err(TokenError::Invalid)
        );
        // A kid nobody knows (no database: no tenant keys at all).
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("nope".into());
        let with_kid = jsonwebtoken::encode(
            &h,
            &claims("pb1", now() + 60),
            &EncodingKey::from_secret(&[9; 32]),
        )
        .unwrap();
        assert_eq!(
            check(with_kid, "pb1", AUD_VIDEO).await,
            Err(TokenError::UnknownKey)
        );
        assert_eq!(
            check("garbage".into(), "pb1", AUD_VIDEO).await,
            Err(TokenError::Invalid)
        );
        let huge = format!("{}.{}.x", parts[0], "a".repeat(MAX_TOKEN_LEN));
        assert_eq!(
            check(huge, "pb1", AUD_VIDEO).await,
            Err(TokenError::Invalid)
        );
        assert_eq!(c.max_lines(), None);
        c.max_resolution = Some("720p".into());
        assert_eq!(c.max_lines(), Some(720));
        for bad in ["720pp", "p", "+720", "0", "99999", " 720", "720P"] {
            assert_eq!(resolution_lines(bad), None, "{bad:?}");
            c.max_resolution = Some(bad.into());
            let t = tokens.mint(&c);
            assert_eq!(
                check(t, "pb1", AUD_VIDEO).await,
                Err(TokenError::Invalid),
                "{bad:?}"
            );
        }
        assert_eq!(resolution_lines("1080"), Some(1080));
    }

    #[tokio::test]
    async fn a_kid_not_shaped_like_a_key_id_costs_no_lookup_and_no_memory() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let db = Db::connect(&url, 1).await.unwrap();
        let tokens = PlaybackTokens::new(&[[9; 32]], Some(db), 3600);
        let with_kid = |kid: String| {
            let mut h = Header::new(Algorithm::ES256);
            h.kid = Some(kid);
            let header = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&h).unwrap());
            let body =
                URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims("pb1", now() + 60)).unwrap());
            format!("{header}.{body}.c2ln")
        };
        // The probe's kids: long, and each one new.
        for i in 0..50 {
            let kid = format!("{i}{}", "k".repeat(6000));
            assert_eq!(
                tokens.verify(&with_kid(kid), Some("pb1"), AUD_VIDEO).await,
                Err(TokenError::UnknownKey)
            );
        }
        assert_eq!(tokens.cache.lock().unwrap().len(), 0);
        // A key id's shape is looked up, and an unknown one remembered (bounded, 36 bytes).
        let unknown = crate::ids::new_id();
        assert_eq!(
            tokens
                .verify(&with_kid(unknown), Some("pb1"), AUD_VIDEO)
                .await,
            Err(TokenError::UnknownKey)
        );
        assert_eq!(tokens.cache.lock().unwrap().len(), 1);
    }
}
