//! The aggregator's database task: it writes views in batches and answers lookups of stored
//! views, in the order asked, so the aggregator itself never waits on SQL.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::rollup;
use crate::db::{Db, StoredView};

/// Jobs queued for the database task at most; past that the aggregator waits for it.
pub(super) const DB_JOBS: usize = 4;

/// What the aggregator asks of the database. One task does these in order, so a view
/// looked up after it was written is found, and the aggregator never waits on SQL (unless
/// the database falls [`DB_JOBS`] behind).
pub(super) enum DbJob {
    Write(Vec<StoredView>),
    /// What is stored of views seen for the first time (a continuation after a restart,
    /// or a view id that already finished), and their assets' durations when not known.
    Lookup(Vec<Lookup>),
    Barrier(oneshot::Sender<()>),
    /// Forget the raw events of views that ended before this time.
    Prune(i64),
    /// Peak concurrent viewers of minutes that have passed.
    Peaks(Vec<crate::db::Peak>),
}

/// One view to look up: its key, and its playback id when the asset's duration is wanted.
pub(super) struct Lookup {
    pub key: (String, String),
    pub playback_id: Option<String>,
}

/// The answer to a [`DbJob::Lookup`], one per view.
pub(super) struct Restored {
    pub key: (String, String),
    pub stored: Option<StoredView>,
    /// `Some` when asked: the asset's duration (None for live).
    pub duration: Option<(String, Option<i64>)>,
}

/// The aggregator's side of the database task.
pub(super) struct DbLink {
    pub jobs: mpsc::Sender<DbJob>,
}

impl DbLink {
    pub async fn send(&self, job: DbJob) {
        if self.jobs.send(job).await.is_err() {
            tracing::warn!("the analytics database task has stopped");
        }
    }
}

pub(super) async fn db_task(
    db: Db,
    mut jobs: mpsc::Receiver<DbJob>,
    restored: mpsc::UnboundedSender<Restored>,
) {
    while let Some(job) = jobs.recv().await {
        match job {
            DbJob::Write(rows) => write_rows(&db, rows).await,
            DbJob::Lookup(lookups) => look_up(&db, lookups, &restored).await,
            DbJob::Barrier(done) => {
                let _ = done.send(());
            }
            // After a shutdown's flush wrote them, the aggregator's last write finds the
            // database closed: nothing is lost, so nothing to warn of.
            DbJob::Peaks(_) if db.is_closed() => {}
            DbJob::Peaks(peaks) => {
                if let Err(e) = db.record_peaks(&peaks).await {
                    metrics::counter!("ferrocast_analytics_write_errors_total").increment(1);
                    tracing::warn!(error = %e, minutes = peaks.len(), "writing peak concurrent viewers; dropped");
                }
            }
            DbJob::Prune(before_ms) => {
                if let Err(e) = db.prune_view_events(before_ms).await {
                    tracing::warn!(error = %e, "pruning old view events");
                }
            }
        }
    }
}

/// Answers lookups: the stored views in one query per tenant (when they cannot be read,
/// the views are taken as new, as before a first write), and the durations of the assets
/// named.
async fn look_up(db: &Db, lookups: Vec<Lookup>, restored: &mpsc::UnboundedSender<Restored>) {
    let keys = || lookups.iter().map(|l| (l.key.0.as_str(), l.key.1.as_str()));
    let mut stored = match db.get_views(keys()).await {
        Ok(stored) => stored,
        Err(e) => {
            tracing::warn!(error = %e, views = lookups.len(), "reading stored views");
            Default::default()
        }
    };
    let mut durations: std::collections::HashMap<String, Option<i64>> = Default::default();
    for l in lookups {
        let duration = match l.playback_id {
            Some(pb) => match durations.get(&pb) {
                Some(d) => Some((pb, *d)),
                None => match db.asset_by_playback_id(&pb).await {
                    Ok(asset) => {
                        let d = asset.and_then(|a| a.duration_ms);
                        durations.insert(pb.clone(), d);
                        Some((pb, d))
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "looking up a viewed asset");
                        None
                    }
                },
            },
            None => None,
        };
        let _ = restored.send(Restored {
            stored: stored.remove(&l.key),
            key: l.key,
            duration,
        });
    }
}

/// Writes rows in one transaction. When it fails, the rows are tried one by one. A row the
/// database refuses (a foreign key: its tenant was deleted) is dropped and counted, and so
/// is one refused with another database error 5 times over. While the database cannot be
/// reached, the write is retried every second (the aggregator waits once [`DB_JOBS`]
/// writes are queued, and then the beacon queue answers 503).
async fn write_rows(db: &Db, mut rows: Vec<StoredView>) {
    let mut refusals = 0;
    loop {
        let Err(e) = db.write_views(&rows, rollup::of).await else {
            return;
        };
        metrics::counter!("ferrocast_analytics_write_errors_total").increment(1);
        tracing::warn!(error = %e, views = rows.len(), "writing views; trying them one by one");
        while !rows.is_empty() {
            match db.write_view(&rows[0], rollup::of).await {
                Ok(()) => {
                    rows.remove(0);
                    refusals = 0;
                }
                Err(crate::db::DbError::Sqlx(sqlx::Error::Database(e)))
                    if e.kind() == sqlx::error::ErrorKind::ForeignKeyViolation || refusals >= 4 =>
                {
                    let row = rows.remove(0);
                    refusals = 0;
                    metrics::counter!("ferrocast_analytics_views_dropped_total").increment(1);
                    tracing::warn!(error = %e, view = %row.id, "the database refuses a view; dropped");
                }
                Err(e) => {
                    if matches!(e, crate::db::DbError::Sqlx(sqlx::Error::Database(_))) {
                        refusals += 1;
                    }
                    tracing::warn!(error = %e, "writing a view failed; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            }
        }
        if rows.is_empty() {
            return;
        }
    }
}
