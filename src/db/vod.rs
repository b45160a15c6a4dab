//! Resumable uploads and the job queue. Jobs are claimed with a lease: a worker that dies
//! leaves a lease that expires, and the job is claimed again.

use sqlx::FromRow;

use super::webhooks::{EventObject, record_event};
use super::{AssetStatus, Backend, Db, DbError, DbResult, JobStatus, new_id, now_ms};

/// The PostgreSQL channel that `enqueue_job` notifies, so idle workers in other processes
/// wake for a new job.
pub const JOBS_CHANNEL: &str = "ferrocast_jobs";

#[derive(Debug, Clone, PartialEq, Eq, FromRow, serde::Serialize, serde::Deserialize)]
pub struct Upload {
    pub id: String,
    pub tenant_id: String,
    pub asset_id: String,
    pub length: i64,
    pub received: i64,
    pub metadata: String,
    pub expires_at: i64,
    pub completed_at: Option<i64>,
    pub created_at: i64,
}

const UPLOAD_COLUMNS: &str =
    "id, tenant_id, asset_id, length, received, metadata, expires_at, completed_at, created_at";

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Job {
    pub id: String,
    pub tenant_id: String,
    pub asset_id: String,
    pub kind: String,
    #[sqlx(try_from = "String")]
    pub status: JobStatus,
    pub attempts: i64,
    pub max_attempts: i64,
    pub run_after: i64,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub started_at: Option<i64>,
    pub progress_permille: i64,
    pub error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

const JOB_COLUMNS: &str = "id, tenant_id, asset_id, kind, status, attempts, max_attempts, run_after, \
    lease_owner, lease_expires_at, started_at, progress_permille, error, created_at, updated_at";

/// How an upload asks to be transcoded and packaged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputChoice {
    /// The ladder preset.
    pub ladder: String,
    /// `None`: the preset's.
    pub packaging: Option<crate::media::Packaging>,
    /// `None`: the preset's.
    pub cenc_scheme: Option<crate::media::cenc::Scheme>,
}

impl Db {
    pub async fn create_upload(
        &self,
        tenant_id: &str,
        asset_id: &str,
        length: i64,
        metadata_json: &str,
        expires_at: i64,
    ) -> DbResult<Upload> {
        let id = new_id();
        sqlx::query(
            "INSERT INTO uploads (id, tenant_id, asset_id, length, received, metadata, expires_at, created_at) \
             VALUES ($1, $2, $3, $4, 0, $5, $6, $7)",
        )
        .bind(&id)
        .bind(tenant_id)
        .bind(asset_id)
        .bind(length)
        .bind(metadata_json)
        .bind(expires_at)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        self.get_upload(tenant_id, &id).await
    }

    pub async fn get_upload(&self, tenant_id: &str, id: &str) -> DbResult<Upload> {
        sqlx::query_as::<_, Upload>(&format!(
            "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(DbError::NotFound("upload"))
    }

    /// Records how many bytes are safely stored.
    /// Records how many bytes an upload has; false if the upload is gone (terminated).
    pub async fn set_upload_received(&self, id: &str, received: i64) -> DbResult<bool> {
        let done = sqlx::query("UPDATE uploads SET received = $1 WHERE id = $2")
            .bind(received)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The upload has all its bytes: `upload.completed`.
    pub async fn complete_upload(&self, id: &str) -> DbResult<()> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE uploads SET completed_at = $1 WHERE id = $2 AND completed_at IS NULL",
        )
        .bind(now_ms())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            let upload: Upload = sqlx::query_as(&format!(
                "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE id = $1"
            ))
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            record_event(&mut tx, "upload.completed", &EventObject::Upload(upload)).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_upload(&self, id: &str) -> DbResult<()> {
        sqlx::query("DELETE FROM uploads WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Bytes a tenant has in unfinished uploads and stored originals, for its quota.
    pub async fn tenant_upload_bytes(&self, tenant_id: &str) -> DbResult<i64> {
        let (pending,): (i64,) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(length), 0) AS BIGINT) FROM uploads WHERE tenant_id = $1 AND completed_at IS NULL",
        )
        .bind(tenant_id)
        .fetch_one(&self.pool)
        .await?;
        let (stored,): (i64,) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) FROM assets WHERE tenant_id = $1 AND source = 'upload'",
        )
        .bind(tenant_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(pending + stored)
    }

    /// Uploads past their expiry that never completed (to clean up).
    pub async fn expired_uploads(&self, now: i64) -> DbResult<Vec<Upload>> {
        Ok(sqlx::query_as::<_, Upload>(&format!(
            "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE completed_at IS NULL AND expires_at < $1"
        ))
        .bind(now)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn set_asset_upload_info(
        &self,
        id: &str,
        size_bytes: i64,
        filename: Option<&str>,
        choice: &OutputChoice,
    ) -> DbResult<()> {
        sqlx::query(
            "UPDATE assets SET size_bytes = $1, filename = $2, ladder = $3, packaging = $4, \
             cenc_scheme = $5, updated_at = $6 WHERE id = $7",
        )
        .bind(size_bytes)
        .bind(filename)
        .bind(&choice.ladder)
        .bind(choice.packaging.map(|p| p.as_str()))
        .bind(choice.cenc_scheme.map(|s| s.as_str()))
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn set_asset_status(
        &self,
        id: &str,
        status: AssetStatus,
        error: Option<&str>,
    ) -> DbResult<()> {
        let mut tx = self.write_tx().await?;
        let before = super::live::asset_status_before(&mut tx, id).await?;
        sqlx::query("UPDATE assets SET status = $1, error = $2, updated_at = $3 WHERE id = $4")
            .bind(status.as_str())
            .bind(error)
            .bind(now_ms())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        super::live::record_asset_status(&mut tx, id, before, status).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_asset_media_info(
        &self,
        id: &str,
        media_info_json: &str,
        duration_ms: Option<i64>,
    ) -> DbResult<()> {
        sqlx::query(
            "UPDATE assets SET media_info = $1, duration_ms = $2, updated_at = $3 WHERE id = $4",
        )
        .bind(media_info_json)
        .bind(duration_ms)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn enqueue_job(
        &self,
        tenant_id: &str,
        asset_id: &str,
        kind: &str,
        max_attempts: i64,
    ) -> DbResult<Job> {
        let id = new_id();
        let now = self.shared_now_ms().await?;
        sqlx::query(
            "INSERT INTO jobs (id, tenant_id, asset_id, kind, status, attempts, max_attempts, run_after, \
             progress_permille, created_at, updated_at) VALUES ($1, $2, $3, $4, 'queued', 0, $5, $6, 0, $6, $6)",
        )
        .bind(&id)
        .bind(tenant_id)
        .bind(asset_id)
        .bind(kind)
        .bind(max_attempts)
        .bind(now)
        .execute(&self.pool)
        .await?;
        if self.backend == Backend::Postgres {
            // Idle workers in every process sharing this database hear of it at once
            // (the job workers listen); delivered when the insert above is visible. The name is
            // quoted, as PgListener quotes the channel it listens on. Not an error when it
            // fails: the job is queued, and idle workers look at the queue every 30 s anyway.
            if let Err(e) = sqlx::query(&format!("NOTIFY \"{JOBS_CHANNEL}\""))
                .execute(&self.pool)
                .await
            {
                tracing::warn!(error = %e, "could not notify other processes of a new job");
            }
        }
        self.get_job(&id).await
    }

    /// When the queue next has work that no worker can claim now: the earliest retry coming
    /// due, or the earliest lease running out (its worker may have died). `None` when neither
    /// exists. An idle worker sleeps until then instead of polling.
    pub async fn next_job_due(&self) -> DbResult<Option<i64>> {
        let (retry, lease): (Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT (SELECT MIN(run_after) FROM jobs WHERE status = 'queued') AS retry, \
             (SELECT MIN(lease_expires_at) FROM jobs WHERE status = 'running') AS lease",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(match (retry, lease) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    pub async fn get_job(&self, id: &str) -> DbResult<Job> {
        sqlx::query_as::<_, Job>(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(DbError::NotFound("job"))
    }

    /// The newest job of an asset, for its progress.
    pub async fn latest_job_for_asset(&self, asset_id: &str) -> DbResult<Option<Job>> {
        Ok(sqlx::query_as::<_, Job>(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE asset_id = $1 ORDER BY id DESC LIMIT 1"
        ))
        .bind(asset_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Claims the oldest runnable job: queued and due, or running with an expired lease
    /// (its worker died). PostgreSQL skips rows other workers are claiming.
    pub async fn claim_job(&self, worker: &str, lease_ms: i64) -> DbResult<Option<Job>> {
        let now = self.shared_now_ms().await?;
        let pick = match self.backend {
            Backend::Postgres => {
                "SELECT id FROM jobs WHERE (status = 'queued' AND run_after <= $3) \
                 OR (status = 'running' AND lease_expires_at < $3) ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED"
            }
            Backend::Sqlite => {
                "SELECT id FROM jobs WHERE (status = 'queued' AND run_after <= $3) \
                 OR (status = 'running' AND lease_expires_at < $3) ORDER BY created_at LIMIT 1"
            }
        };
        Ok(sqlx::query_as::<_, Job>(&format!(
            "UPDATE jobs SET status = 'running', lease_owner = $1, lease_expires_at = $2, \
             attempts = attempts + 1, started_at = $3, progress_permille = 0, updated_at = $3 \
             WHERE id = ({pick}) RETURNING {JOB_COLUMNS}"
        ))
        .bind(worker)
        .bind(now + lease_ms)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Extends a lease and records progress; `false` when the lease was lost to another worker.
    pub async fn heartbeat_job(
        &self,
        id: &str,
        worker: &str,
        lease_ms: i64,
        progress_permille: i64,
    ) -> DbResult<bool> {
        let now = self.shared_now_ms().await?;
        let done = sqlx::query(
            "UPDATE jobs SET lease_expires_at = $1, progress_permille = $2, updated_at = $3 \
             WHERE id = $4 AND lease_owner = $5 AND status = 'running'",
        )
        .bind(now + lease_ms)
        .bind(progress_permille)
        .bind(now)
        .bind(id)
        .bind(worker)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn finish_job(&self, id: &str, worker: &str) -> DbResult<()> {
        sqlx::query(
            "UPDATE jobs SET status = 'done', progress_permille = 1000, lease_owner = NULL, \
             lease_expires_at = NULL, updated_at = $1 WHERE id = $2 AND lease_owner = $3",
        )
        .bind(now_ms())
        .bind(id)
        .bind(worker)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a failure: queued again after `retry_after_ms` while attempts remain, else
    /// failed for good. Returns whether it will be retried.
    pub async fn fail_job(
        &self,
        id: &str,
        worker: &str,
        error: &str,
        retry_after_ms: i64,
    ) -> DbResult<bool> {
        let job = self.get_job(id).await?;
        let retry = job.attempts < job.max_attempts;
        let now = self.shared_now_ms().await?;
        sqlx::query(
            "UPDATE jobs SET status = $1, error = $2, run_after = $3, lease_owner = NULL, \
             lease_expires_at = NULL, updated_at = $4 WHERE id = $5 AND lease_owner = $6",
        )
        .bind(if retry { "queued" } else { "failed" })
        .bind(error)
        .bind(now + retry_after_ms)
        .bind(now)
        .bind(id)
        .bind(worker)
        .execute(&self.pool)
        .await?;
        Ok(retry)
    }

    pub async fn delete_jobs_for_asset(&self, asset_id: &str) -> DbResult<()> {
        sqlx::query("DELETE FROM jobs WHERE asset_id = $1")
            .bind(asset_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
