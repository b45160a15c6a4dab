//! What ended broadcasts leave behind when they are not recorded: their final playlists and
//! segments stay for `live.ended_retention_s` (viewers behind the live edge play to the
//! ENDLIST), then this cleaner deletes them and their content keys. The schedule lives in the
//! database, so a restart loses no clean-up, and any node may do it (deleting is idempotent).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::clock::now_ms;
use crate::db::Db;
use crate::storage::{DynStore, Prefix};

/// Longest sleep between looks at the schedule (another node may have added to it).
const MAX_SLEEP: Duration = Duration::from_secs(30);
/// A clean-up that failed (storage or database down) is tried again this much later.
const RETRY_AFTER_MS: i64 = 30_000;
/// Clean-ups taken per look.
const BATCH: i64 = 32;

/// Deletes what is due, then sleeps until the next clean-up is due, `wakeup` is notified (a
/// broadcast just scheduled one) or 30 s pass; returns when `stop` becomes true.
pub async fn run(db: Db, store: DynStore, wakeup: Arc<Notify>, mut stop: watch::Receiver<bool>) {
    loop {
        // Registered before the schedule is read, so a clean-up added meanwhile is not missed.
        let woken = wakeup.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let sleep = match run_due(&db, &store).await {
            Ok(Some(next)) => Duration::from_millis(next.saturating_sub(now_ms()).max(0) as u64),
            Ok(None) => MAX_SLEEP,
            Err(e) => {
                tracing::warn!(error = %e, "reading the clean-up schedule; trying again");
                Duration::from_secs(5)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(sleep.clamp(Duration::from_millis(100), MAX_SLEEP)) => {}
            _ = &mut woken => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Does every clean-up that is due; returns when the next one is.
async fn run_due(db: &Db, store: &DynStore) -> crate::db::DbResult<Option<i64>> {
    loop {
        let due = db.due_live_cleanups(now_ms(), BATCH).await?;
        let full = due.len() as i64 == BATCH;
        for prefix in due {
            if let Err(e) = clean(db, store, &prefix).await {
                tracing::warn!(%prefix, error = %e, retry_s = RETRY_AFTER_MS / 1000,
                    "deleting an ended broadcast failed; will retry");
                metrics::counter!("ferrocast_live_cleanup_failures_total").increment(1);
                // Its row is kept; it comes due again later instead of at once.
                db.postpone_live_cleanup(&prefix, now_ms() + RETRY_AFTER_MS)
                    .await?;
            }
        }
        if !full {
            return db.next_live_cleanup_due().await;
        }
    }
}

/// Deletes one ended broadcast's objects and content keys, then forgets the clean-up.
async fn clean(db: &Db, store: &DynStore, prefix: &str) -> anyhow::Result<()> {
    let parsed = Prefix::parse(prefix)?;
    let objects = store.delete_prefix(&parsed).await?;
    let keys = db.delete_content_keys(prefix).await?;
    db.finish_live_cleanup(prefix).await?;
    tracing::info!(%prefix, objects, keys, "ended broadcast deleted after its retention");
    Ok(())
}
