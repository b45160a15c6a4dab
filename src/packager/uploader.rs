//! A broadcast's writes to storage, in order, through a bounded queue. A full queue makes the
//! broadcast wait (and so the publisher's socket): memory stays bounded and the lag is
//! visible in logs and `/metrics`. Failed writes are retried with backoff, never dropped
//! silently.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::storage::{DynStore, ObjectKey, Prefix, StorageError};

/// Attempts per write before it is reported as lost.
const MAX_ATTEMPTS: u32 = 8;

enum Job {
    Put {
        key: ObjectKey,
        body: Bytes,
        content_type: &'static str,
    },
    Delete(ObjectKey),
    DeletePrefix(Prefix),
    Flush(oneshot::Sender<()>),
}

pub struct Uploader {
    tx: mpsc::Sender<Job>,
    capacity: usize,
    label: String,
}

impl Uploader {
    /// Starts the writer task for one broadcast (`label` names it in logs).
    pub fn spawn(store: DynStore, capacity: usize, label: String) -> Self {
        let (tx, rx) = mpsc::channel(capacity);
        tokio::spawn(run(store, rx, label.clone()));
        Self {
            tx,
            capacity,
            label,
        }
    }

    async fn enqueue(&self, job: Job) {
        let depth = self.capacity - self.tx.capacity();
        metrics::gauge!("ferrocast_live_upload_queue_depth", "broadcast" => self.label.clone())
            .set(depth as f64);
        if self.tx.capacity() == 0 {
            tracing::warn!(broadcast = %self.label, depth, "storage is lagging: upload queue full, slowing ingest");
            metrics::counter!("ferrocast_live_upload_queue_full_total").increment(1);
        }
        // The writer task lives as long as this sender; a send only fails if it panicked.
        if self.tx.send(job).await.is_err() {
            tracing::error!(broadcast = %self.label, "storage writer is gone");
        }
    }

    pub async fn put(&self, key: ObjectKey, body: Bytes, content_type: &'static str) {
        self.enqueue(Job::Put {
            key,
            body,
            content_type,
        })
        .await;
    }

    pub async fn delete(&self, key: ObjectKey) {
        self.enqueue(Job::Delete(key)).await;
    }

    pub async fn delete_prefix(&self, prefix: Prefix) {
        self.enqueue(Job::DeletePrefix(prefix)).await;
    }

    /// Waits until everything queued before this call is stored (or given up on).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        self.enqueue(Job::Flush(tx)).await;
        let _ = rx.await;
    }
}

async fn run(store: DynStore, mut rx: mpsc::Receiver<Job>, label: String) {
    while let Some(job) = rx.recv().await {
        let (what, result) = match job {
            Job::Flush(done) => {
                let _ = done.send(());
                continue;
            }
            Job::Put {
                key,
                body,
                content_type,
            } => {
                let r = retry(&label, key.as_str(), || {
                    store.put(&key, body.clone(), content_type)
                })
                .await;
                (key.to_string(), r)
            }
            Job::Delete(key) => (
                key.to_string(),
                retry(&label, key.as_str(), || store.delete(&key)).await,
            ),
            Job::DeletePrefix(prefix) => {
                let r = retry(&label, prefix.as_str(), || async {
                    store.delete_prefix(&prefix).await.map(|_| ())
                })
                .await;
                (prefix.as_str().to_string(), r)
            }
        };
        if let Err(e) = result {
            metrics::counter!("ferrocast_storage_write_failures_total").increment(1);
            tracing::error!(broadcast = %label, object = %what, error = %e, "storage write lost after {MAX_ATTEMPTS} attempts");
        }
    }
    metrics::gauge!("ferrocast_live_upload_queue_depth", "broadcast" => label).set(0.0);
}

async fn retry<F, Fut>(label: &str, what: &str, mut op: F) -> Result<(), StorageError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), StorageError>>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < MAX_ATTEMPTS && !matches!(e, StorageError::InvalidKey { .. }) => {
                let backoff = Duration::from_millis(200 * (1 << attempt.min(6)));
                metrics::counter!("ferrocast_storage_write_retries_total").increment(1);
                tracing::warn!(broadcast = %label, object = %what, attempt, error = %e, ?backoff, "storage write failed; retrying");
                tokio::time::sleep(backoff).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}
