//! Peak concurrent viewers per minute: the aggregator samples its open views and writes,
//! per tenant and minute, the largest count it saw for each playback id and for the tenant
//! as a whole (playback id `""`).

use sqlx::Row;

use super::{Db, DbResult};

/// The peak of one minute: per playback id, or for the whole tenant (`playback_id` `""`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peak {
    pub tenant_id: String,
    pub minute: i64,
    pub playback_id: String,
    pub viewers: i64,
}

impl Db {
    /// Records peaks, keeping the larger where a minute already has one (a sample after a
    /// restart within the minute). A deleted tenant's are left out. On SQLite it takes the
    /// write lock first (as `write_views`).
    pub async fn record_peaks(&self, peaks: &[Peak]) -> DbResult<()> {
        if peaks.is_empty() {
            return Ok(());
        }
        let mut tx = match self.backend {
            super::Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            super::Backend::Postgres => self.pool.begin().await?,
        };
        for p in peaks {
            sqlx::query(
                "INSERT INTO analytics_concurrency (tenant_id, minute, playback_id, peak) \
                 SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM tenants WHERE id = $1) \
                 ON CONFLICT (tenant_id, playback_id, minute) DO UPDATE \
                 SET peak = CASE WHEN excluded.peak > analytics_concurrency.peak \
                 THEN excluded.peak ELSE analytics_concurrency.peak END",
            )
            .bind(&p.tenant_id)
            .bind(p.minute)
            .bind(&p.playback_id)
            .bind(p.viewers)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The peak in each period of `bucket_ms` (a multiple of a minute) from `from_ms` to
    /// `to_ms`, of one playback id or (`""`) the whole tenant; periods without a viewer are
    /// left out. (period start, peak), in time order.
    pub async fn peaks(
        &self,
        tenant_id: &str,
        playback_id: &str,
        from_ms: i64,
        to_ms: i64,
        bucket_ms: i64,
    ) -> DbResult<Vec<(i64, i64)>> {
        assert!(
            bucket_ms > 0 && bucket_ms % 60_000 == 0,
            "bucket {bucket_ms}"
        );
        let rows = sqlx::query(&format!(
            "SELECT CAST((minute / {bucket_ms}) * {bucket_ms} AS BIGINT) AS at, \
             CAST(MAX(peak) AS BIGINT) FROM analytics_concurrency \
             WHERE tenant_id = $1 AND playback_id = $2 AND minute >= $3 AND minute < $4 \
             GROUP BY (minute / {bucket_ms}) * {bucket_ms} ORDER BY at"
        ))
        .bind(tenant_id)
        .bind(playback_id)
        .bind(from_ms.div_euclid(60_000) * 60_000)
        .bind(to_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }
}
