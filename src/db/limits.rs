//! API rate-limit state that every node shares (with PostgreSQL), and tenants' tiers.

use super::{Db, DbResult, PG_NOW_MS};

impl Db {
    /// Takes a token from the shared bucket `key` (holding at most `capacity`, refilled by
    /// `per_ms` a millisecond; a bucket made larger since its last use gets the difference)
    /// in one statement; returns (taken, tokens left).
    pub async fn take_shared_token(
        &self,
        key: &str,
        capacity: f64,
        per_ms: f64,
    ) -> DbResult<(bool, f64)> {
        // Refilled by the time since the bucket was last touched, on the database's clock
        // (every node's, whatever its own says), and never by a negative time.
        let refilled = format!(
            "LEAST($2, rate_buckets.tokens + GREATEST(0, $2 - rate_buckets.capacity) \
             + (GREATEST(0, {PG_NOW_MS} - rate_buckets.updated_at) * $3))"
        );
        let (tokens, ok): (f64, i64) = sqlx::query_as(&format!(
            "INSERT INTO rate_buckets (key, tokens, capacity, updated_at, last_ok) \
             VALUES ($1, $2 - 1, $2, {PG_NOW_MS}, 1) \
             ON CONFLICT (key) DO UPDATE SET \
             tokens = CASE WHEN {refilled} >= 1 THEN {refilled} - 1 ELSE {refilled} END, \
             last_ok = CASE WHEN {refilled} >= 1 THEN 1 ELSE 0 END, \
             capacity = $2, updated_at = {PG_NOW_MS} \
             RETURNING tokens, last_ok"
        ))
        .bind(key)
        .bind(capacity)
        .bind(per_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok((ok == 1, tokens))
    }

    /// A tenant's rate-limit tier, if it has one of its own.
    pub async fn tenant_tier(&self, tenant_id: &str) -> DbResult<Option<String>> {
        Ok(
            sqlx::query_as::<_, (Option<String>,)>("SELECT tier FROM tenants WHERE id = $1")
                .bind(tenant_id)
                .fetch_optional(&self.pool)
                .await?
                .and_then(|(t,)| t),
        )
    }

    /// Sets (or clears, for the default) a tenant's tier; NotFound if there is no such tenant.
    pub async fn set_tenant_tier(&self, tenant_id: &str, tier: Option<&str>) -> DbResult<()> {
        let done = sqlx::query("UPDATE tenants SET tier = $1 WHERE id = $2")
            .bind(tier)
            .bind(tenant_id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(super::DbError::NotFound("tenant"));
        }
        Ok(())
    }
}
