//! Idempotency keys: the first successful answer to a (credential, key) is kept for a day
//! and replayed for the same request; another request under the key, or one while the first
//! is still running, is told so.

use super::{Db, DbResult};

/// How long a key and its answer are kept.
pub const KEPT_MS: i64 = 24 * 3600 * 1000;

/// An answer kept for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub location: Option<String>,
    pub body: Vec<u8>,
}

/// What a key says of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyClaim {
    /// First use: the request runs, and its answer is kept.
    New,
    /// The first request under the key is still running.
    InFlight,
    /// The key was used for another request.
    Mismatch,
    /// The same request again: its first answer.
    Replay(StoredResponse),
}

type Row = (
    String,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<Vec<u8>>,
);

impl Db {
    /// Claims `key` of credential `scope` for a request hashing to `request_hash`. A claim
    /// older than `lease_ms` that never answered (its request was cut off: a timeout, a
    /// client gone, a crash) is given up and may be claimed again.
    pub async fn claim_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        request_hash: &str,
        lease_ms: i64,
    ) -> DbResult<IdempotencyClaim> {
        let now = self.shared_now_ms().await?;
        let cutoff = now - KEPT_MS;
        // This key, if past its day or a claim whose request was cut off, is gone first.
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 \
             AND (created_at < $3 OR (response_status IS NULL AND created_at < $4))",
        )
        .bind(scope)
        .bind(key)
        .bind(cutoff)
        .bind(now - lease_ms)
        .execute(&self.pool)
        .await?;
        // Every key past its day, now and then.
        if rand::random::<u8>() == 0 {
            sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
                .bind(cutoff)
                .execute(&self.pool)
                .await?;
        }
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (scope, key, request_hash, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (scope, key) DO NOTHING",
        )
        .bind(scope)
        .bind(key)
        .bind(request_hash)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(IdempotencyClaim::New);
        }
        let row: Option<Row> = sqlx::query_as(
            "SELECT request_hash, response_status, content_type, location, body \
             FROM idempotency_keys WHERE scope = $1 AND key = $2",
        )
        .bind(scope)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            // Released between the two statements: its request failed and may run again.
            None => IdempotencyClaim::InFlight,
            Some((hash, _, _, _, _)) if hash != request_hash => IdempotencyClaim::Mismatch,
            Some((_, None, _, _, _)) => IdempotencyClaim::InFlight,
            Some((_, Some(status), content_type, location, body)) => {
                IdempotencyClaim::Replay(StoredResponse {
                    status: u16::try_from(status).unwrap_or(200),
                    content_type,
                    location,
                    body: body.unwrap_or_default(),
                })
            }
        })
    }

    /// Keeps the answer to the request that claimed `key`.
    pub async fn complete_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        response: &StoredResponse,
    ) -> DbResult<()> {
        sqlx::query(
            "UPDATE idempotency_keys SET response_status = $1, content_type = $2, location = $3, \
             body = $4 WHERE scope = $5 AND key = $6",
        )
        .bind(i64::from(response.status))
        .bind(&response.content_type)
        .bind(&response.location)
        .bind(&response.body)
        .bind(scope)
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Frees `key` after its request failed: the client may try again with it.
    pub async fn release_idempotency_key(&self, scope: &str, key: &str) -> DbResult<()> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 \
             AND response_status IS NULL",
        )
        .bind(scope)
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
