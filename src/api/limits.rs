//! Tiered rate limits per API key: a token bucket holding a minute's worth of the tenant's
//! tier (`rate_limits.*_per_min`), refilled evenly. With SQLite each node counts in memory;
//! with PostgreSQL the bucket is a row every node takes from in one statement, so the limit
//! holds across nodes. Over it: `429` with `Retry-After`. Every answer to a limited caller
//! carries the IETF `RateLimit-Policy` and `RateLimit` headers
//! (draft-ietf-httpapi-ratelimit-headers). Admin keys and publishable keys are not limited
//! here (publishable keys are used from many viewers' browsers at once).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

use crate::config::RateLimitsConfig;
use crate::db::{Backend, Db, DbResult};

/// Buckets kept in memory at most; past it, full (idle) ones are dropped.
const MAX_BUCKETS: usize = 100_000;
/// How long a tenant's tier is trusted before it is read again.
const TIER_TTL: Duration = Duration::from_secs(30);

/// Where a caller stands after a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Quota {
    pub tier: String,
    pub per_min: u32,
    pub allowed: bool,
    /// Whole requests left now.
    pub remaining: u64,
    /// Seconds until the bucket is full again.
    pub reset_s: u64,
    /// Seconds until the next request is allowed (when refused).
    pub retry_after_s: u64,
}

impl Quota {
    fn of(tier: &str, per_min: u32, allowed: bool, tokens: f64) -> Self {
        let per_s = f64::from(per_min) / 60.0;
        let tokens = tokens.max(0.0);
        Self {
            tier: tier.into(),
            per_min,
            allowed,
            remaining: tokens.floor() as u64,
            reset_s: ((f64::from(per_min) - tokens).max(0.0) / per_s).ceil() as u64,
            retry_after_s: ((1.0 - tokens).max(0.0) / per_s).ceil().max(1.0) as u64,
        }
    }
}

#[derive(Default)]
pub struct ApiLimits {
    /// Tokens, the bucket's size when last used, and when.
    buckets: Mutex<HashMap<String, (f64, f64, Instant)>>,
    tiers: Mutex<HashMap<String, (Option<String>, Instant)>>,
    /// With PostgreSQL: keys refused until then at that bucket size, answered here without
    /// a database write (a client that ignores Retry-After costs nothing more); a tier
    /// changed since asks the database again.
    refused: Mutex<HashMap<String, (Instant, f64)>>,
}

impl ApiLimits {
    /// Takes one request of API key `key_id` of `tenant_id`.
    pub async fn take(
        &self,
        db: &Db,
        config: &RateLimitsConfig,
        tenant_id: &str,
        key_id: &str,
    ) -> DbResult<Quota> {
        let tier = self.tier(db, tenant_id).await?;
        let tier = tier
            .filter(|t| config.per_min(t).is_some())
            .unwrap_or_else(|| config.default_tier.clone());
        let per_min = config.per_min(&tier).unwrap_or(config.pro_per_min);
        let capacity = f64::from(per_min);
        let (allowed, tokens) = if db.backend() == Backend::Postgres {
            let now = Instant::now();
            if self
                .refused
                .lock()
                .expect("refused")
                .get(key_id)
                .is_some_and(|(until, size)| *until > now && *size == capacity)
            {
                return Ok(Quota::of(&tier, per_min, false, 0.0));
            }
            let (allowed, tokens) = db
                .take_shared_token(&format!("api-key/{key_id}"), capacity, capacity / 60_000.0)
                .await?;
            let mut refused = self.refused.lock().expect("refused");
            if allowed {
                refused.remove(key_id);
            } else {
                if refused.len() >= MAX_BUCKETS {
                    refused.retain(|_, (until, _)| *until > now);
                }
                let wait = (1.0 - tokens).max(0.0) / (capacity / 60.0);
                refused.insert(
                    key_id.to_string(),
                    (now + Duration::from_secs_f64(wait), capacity),
                );
            }
            (allowed, tokens)
        } else {
            self.take_local(key_id, capacity, Instant::now())
        };
        Ok(Quota::of(&tier, per_min, allowed, tokens))
    }

    fn take_local(&self, key: &str, capacity: f64, now: Instant) -> (bool, f64) {
        let per_s = capacity / 60.0;
        let mut buckets = self.buckets.lock().expect("buckets");
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            buckets.retain(|_, (t, _, at)| {
                *t + now.duration_since(*at).as_secs_f64() * per_s < capacity
            });
            if buckets.len() >= MAX_BUCKETS {
                buckets.clear();
            }
        }
        let (tokens, size, at) = buckets
            .entry(key.to_string())
            .or_insert((capacity, capacity, now));
        // A tier raised since: the difference is there at once.
        let credit = (capacity - *size).max(0.0);
        let refilled =
            (*tokens + credit + now.duration_since(*at).as_secs_f64() * per_s).min(capacity);
        *at = now;
        *size = capacity;
        if refilled >= 1.0 {
            *tokens = refilled - 1.0;
            (true, *tokens)
        } else {
            *tokens = refilled;
            (false, refilled)
        }
    }

    async fn tier(&self, db: &Db, tenant_id: &str) -> DbResult<Option<String>> {
        if let Some((tier, at)) = self.tiers.lock().expect("tiers").get(tenant_id)
            && at.elapsed() < TIER_TTL
        {
            return Ok(tier.clone());
        }
        let tier = db.tenant_tier(tenant_id).await?;
        let mut tiers = self.tiers.lock().expect("tiers");
        if tiers.len() >= MAX_BUCKETS {
            tiers.clear();
        }
        tiers.insert(tenant_id.to_string(), (tier.clone(), Instant::now()));
        Ok(tier)
    }

    /// Forgets a tenant's tier on this node (it was just changed).
    pub fn forget_tier(&self, tenant_id: &str) {
        self.tiers.lock().expect("tiers").remove(tenant_id);
    }
}

/// Where the API key extractor leaves the caller's quota for [`headers`] to write.
#[derive(Clone, Default)]
pub struct QuotaSlot(pub Arc<OnceLock<Quota>>);

/// Writes `RateLimit-Policy` and `RateLimit` (and `Retry-After` on a refusal) on the
/// answers to rate-limited callers.
pub async fn headers(mut req: Request, next: Next) -> Response {
    let slot = QuotaSlot::default();
    req.extensions_mut().insert(slot.clone());
    let mut response = next.run(req).await;
    if let Some(q) = slot.0.get() {
        let h = response.headers_mut();
        let policy = format!("\"{}\";q={};w=60", q.tier, q.per_min);
        let now = format!("\"{}\";r={};t={}", q.tier, q.remaining, q.reset_s);
        for (name, value) in [("ratelimit-policy", policy), ("ratelimit", now)] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(name, v);
            }
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_holds_a_minute_and_refills_evenly() {
        let limits = ApiLimits::default();
        let t0 = Instant::now();
        for i in 0..60 {
            assert!(limits.take_local("k", 60.0, t0).0, "request {i}");
        }
        assert!(!limits.take_local("k", 60.0, t0).0);
        // One a second comes back.
        assert!(
            !limits
                .take_local("k", 60.0, t0 + Duration::from_millis(500))
                .0
        );
        assert!(
            limits
                .take_local("k", 60.0, t0 + Duration::from_millis(1000))
                .0
        );
        assert!(limits.take_local("other", 60.0, t0).0);
        // Raised to 300 a minute: the 240 more are there at once.
        let t1 = t0 + Duration::from_millis(1000);
        for i in 0..240 {
            assert!(limits.take_local("k", 300.0, t1).0, "request {i}");
        }
        assert!(!limits.take_local("k", 300.0, t1).0);
        let q = Quota::of("free", 60, false, 0.25);
        assert_eq!((q.remaining, q.retry_after_s, q.reset_s), (0, 1, 60));
        let q = Quota::of("pro", 1000, true, 999.0);
        assert_eq!((q.remaining, q.reset_s), (999, 1));
    }
}
