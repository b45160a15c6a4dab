//! API keys: generation, hashing, and the extractors that turn `Authorization: Bearer` into
//! a caller. Keys are 240-bit random secrets, so a plain SHA-256 is a sound stored form and
//! lets a key be found by its hash in one indexed lookup.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use crate::clock::now_ms;
use crate::db::{Db, DbResult, NewApiKey, Role};
use crate::error::ApiError;

/// A freshly generated key: the secret (shown once) and what is stored.
pub struct GeneratedKey {
    pub secret: String,
    pub prefix: String,
    pub hash: String,
}

/// Generates a key: `fca_…` for admins, `fck_…` for tenants.
pub fn generate(role: Role) -> GeneratedKey {
    let mut raw = [0u8; 30];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let tag = match role {
        Role::Admin => "fca_",
        Role::Tenant => "fck_",
    };
    let secret = format!(
        "{tag}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    GeneratedKey {
        prefix: secret[..12].to_string(),
        hash: hash_hex(&secret),
        secret,
    }
}

fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The stored form of a key.
pub fn hash_hex(secret: &str) -> String {
    hex::encode(hash(secret))
}

/// SHA-256 of a configured admin key, kept in memory instead of the key itself.
pub fn configured_admin_hash(secret: &str) -> [u8; 32] {
    hash(secret)
}

/// Creates and stores a new admin key; returns its secret.
pub async fn create_admin_key(db: &Db, name: &str) -> DbResult<String> {
    let key = generate(Role::Admin);
    db.insert_api_key(&NewApiKey {
        tenant_id: None,
        name,
        prefix: &key.prefix,
        secret_hash: &key.hash,
    })
    .await?;
    Ok(key.secret)
}

/// Who is calling, from a valid, unrevoked API key.
#[derive(Debug, Clone)]
pub enum Caller {
    Admin,
    Tenant { tenant_id: String, key_id: String },
}

/// The credentials of an `Authorization: Bearer <credentials>` value; the scheme is
/// matched without regard to case (RFC 9110 §11.1), as for API keys so for playback tokens.
pub(super) fn bearer(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.trim().split_once(' ')?;
    let credentials = credentials.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !credentials.is_empty()).then_some(credentials)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let authorization = parts.headers.get(AUTHORIZATION).cloned();
        let key = match authorization {
            Some(header) => {
                let secret = header.to_str().ok().and_then(bearer).ok_or_else(|| {
                    ApiError::Unauthorized("Authorization must be: Bearer <key>".into())
                })?;
                let client = unless_too_many_wrong_keys(parts, state).await?;
                match find_key(state, secret).await? {
                    Some(Found::ConfiguredAdmin) => return Ok(Caller::Admin),
                    Some(Found::Key(key)) => key,
                    None => {
                        if let Some(ip) = client {
                            state.bad_keys.failed(ip, "API key");
                        }
                        return Err(ApiError::Unauthorized("invalid or revoked API key".into()));
                    }
                }
            }
            None => match cookie(&parts.headers, SESSION_COOKIE) {
                Some(secret) => session_key(state, parts, secret).await?,
                None => {
                    return Err(ApiError::Unauthorized(
                        "missing API key: send Authorization: Bearer <key>".into(),
                    ));
                }
            },
        };
        let now = now_ms();
        if key.last_used_at.is_none_or(|t| t < now - 60_000)
            && let Err(e) = state.jobs.db.touch_api_key(&key.id, now).await
        {
            tracing::warn!(error = %e, key_id = %key.id, "could not record API key use");
        }
        Ok(match (key.role, key.tenant_id) {
            (Role::Tenant, Some(tenant_id)) => {
                // The tenant's tier: one request of this key (api/limits.rs).
                let quota = state
                    .api_limits
                    .take(
                        &state.jobs.db,
                        &state.jobs.config.rate_limits,
                        &tenant_id,
                        &key.id,
                    )
                    .await?;
                if let Some(slot) = parts.extensions.get::<super::limits::QuotaSlot>() {
                    let _ = slot.0.set(quota.clone());
                }
                if !quota.allowed {
                    metrics::counter!("ferrocast_api_rate_limited_total", "tier" => quota.tier.clone())
                        .increment(1);
                    return Err(ApiError::TooManyRequests(quota.retry_after_s));
                }
                Caller::Tenant {
                    tenant_id,
                    key_id: key.id,
                }
            }
            _ => Caller::Admin,
        })
    }
}

/// The client's address, unless it sent too many wrong keys this minute (then 429 with the
/// seconds left, and its key is not looked up).
async fn unless_too_many_wrong_keys(
    parts: &mut Parts,
    state: &AppState,
) -> Result<Option<std::net::IpAddr>, ApiError> {
    let Ok(super::access::ClientIp(ip)) =
        super::access::ClientIp::from_request_parts(parts, state).await;
    let ip = ip.and_then(|ip| ip.parse().ok());
    if let Some(ip) = ip
        && let Err(wait) = state.bad_keys.check(ip)
    {
        return Err(ApiError::TooManyRequests(wait));
    }
    Ok(ip)
}

/// The dashboard's session cookie: the pages call this same API with it.
pub const SESSION_COOKIE: &str = "ferrocast_session";

/// The header a page sends its session's CSRF token in, with every request that changes
/// something.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The value of cookie `name`, if the request has it once. Twice is none: another site
/// under the same domain may have planted a second (a narrower path comes first).
pub(super) fn cookie<'h>(headers: &'h axum::http::HeaderMap, name: &str) -> Option<&'h str> {
    let mut values = headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v);
    let first = values.next()?;
    (values.next().is_none() && !first.is_empty()).then_some(first)
}

/// The API key behind a dashboard session cookie. A request that changes something must
/// also carry the session's CSRF token (`X-CSRF-Token`): another site can make a browser
/// send the cookie, never read the token.
async fn session_key(
    state: &AppState,
    parts: &Parts,
    secret: &str,
) -> Result<crate::db::ApiKey, ApiError> {
    let Some((key, csrf)) = state.jobs.db.find_session(&hash_hex(secret)).await? else {
        return Err(ApiError::Unauthorized(
            "the dashboard session is over (signed out, expired or its key revoked): sign in again"
                .into(),
        ));
    };
    let safe = matches!(
        parts.method,
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    let sent = parts
        .headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !safe && !bool::from(sent.as_bytes().ct_eq(csrf.as_bytes())) {
        return Err(ApiError::Forbidden(
            "a change made with the dashboard's session needs its X-CSRF-Token".into(),
        ));
    }
    Ok(key)
}

/// What an API key secret is.
enum Found {
    /// `admin.key` from the configuration.
    ConfiguredAdmin,
    /// A stored, unrevoked key.
    Key(crate::db::ApiKey),
}

async fn find_key(state: &AppState, secret: &str) -> Result<Option<Found>, ApiError> {
    let digest = hash(secret);
    if let Some(admin) = &state.configured_admin_key
        && bool::from(admin.ct_eq(&digest))
    {
        return Ok(Some(Found::ConfiguredAdmin));
    }
    Ok(state
        .jobs
        .db
        .find_active_key_by_hash(&hex::encode(digest))
        .await?
        .map(Found::Key))
}

/// Whether `secret` is the configured admin key or an active API key (no use recorded).
pub(super) async fn is_active_api_key(state: &AppState, secret: &str) -> Result<bool, ApiError> {
    Ok(find_key(state, secret).await?.is_some())
}

/// The caller holds an admin key.
#[derive(Debug)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match Caller::from_request_parts(parts, state).await? {
            Caller::Admin => Ok(Admin),
            Caller::Tenant { .. } => Err(ApiError::Forbidden(
                "this endpoint needs an admin API key".into(),
            )),
        }
    }
}

/// The caller holds a key of this tenant; every query it makes is scoped to `tenant_id`.
#[derive(Debug)]
pub struct Tenant {
    pub tenant_id: String,
    pub key_id: String,
}

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match Caller::from_request_parts(parts, state).await? {
            Caller::Tenant { tenant_id, key_id } => {
                tracing::Span::current().record("tenant", tenant_id.as_str());
                Ok(Tenant { tenant_id, key_id })
            }
            Caller::Admin => Err(ApiError::Forbidden(
                "this endpoint needs a tenant API key (admin keys act on no tenant)".into(),
            )),
        }
    }
}

/// A caller of the cart and checkout endpoints: a tenant's API key, or its publishable key
/// (`fcp_…`, made for viewers' browsers) that can do nothing else.
#[derive(Debug)]
pub struct Shop {
    pub tenant_id: String,
    /// The caller holds only a publishable key.
    pub publishable: bool,
}

/// A publishable key's secret: 30 random bytes, like API keys.
pub fn generate_publishable() -> GeneratedKey {
    let mut raw = [0u8; 30];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let secret = format!(
        "fcp_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    GeneratedKey {
        prefix: secret[..12].to_string(),
        hash: hash_hex(&secret),
        secret,
    }
}

impl FromRequestParts<AppState> for Shop {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let publishable = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(bearer)
            .filter(|s| s.starts_with("fcp_"));
        if let Some(secret) = publishable {
            let secret = secret.to_string();
            let client = unless_too_many_wrong_keys(parts, state).await?;
            let Some(tenant_id) = state
                .jobs
                .db
                .publishable_key_tenant(&hash_hex(&secret))
                .await?
            else {
                if let Some(ip) = client {
                    state.bad_keys.failed(ip, "publishable key");
                }
                return Err(ApiError::Unauthorized(
                    "invalid or revoked publishable key".into(),
                ));
            };
            tracing::Span::current().record("tenant", tenant_id.as_str());
            return Ok(Shop {
                tenant_id,
                publishable: true,
            });
        }
        let t = Tenant::from_request_parts(parts, state).await?;
        Ok(Shop {
            tenant_id: t.tenant_id,
            publishable: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_distinct_tagged_and_hashed() {
        let a = generate(Role::Tenant);
        let b = generate(Role::Tenant);
        assert_ne!(a.secret, b.secret);
        assert!(
            a.secret.starts_with("fck_") && a.secret.len() == 44,
            "{}",
            a.secret
        );
        assert!(generate(Role::Admin).secret.starts_with("fca_"));
        assert_eq!(a.prefix, &a.secret[..12]);
        assert_eq!(a.hash, hash_hex(&a.secret));
        assert!(!a.hash.contains(&a.secret[4..]));
    }
}
