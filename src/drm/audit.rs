//! The key-delivery audit log: every grant and denial, written in batches by one task so the
//! key endpoint never waits on a database write. The queue is bounded: when it is full the
//! endpoint waits for room (back-pressure), so no decision is ever dropped from the log.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::db::{AuditEvent, Db, new_id, now_ms};

const QUEUE: usize = 20_000;
const BATCH: usize = 1_000;

/// What happened, for one audit line.
#[derive(Debug, Clone, Default)]
pub struct Decision {
    pub tenant_id: String,
    pub playback_id: Option<String>,
    pub key_id: Option<String>,
    pub viewer: Option<String>,
    pub client_ip: Option<String>,
    /// None: granted; Some(reason): denied.
    pub denied: Option<String>,
}

/// Handle to the audit writer. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AuditLog {
    tx: mpsc::Sender<AuditEvent>,
}

impl AuditLog {
    /// Starts the writer task on the current runtime.
    pub fn start(db: Db) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(writer(db, rx));
        Self { tx }
    }

    /// Records a key decision.
    pub async fn key(&self, d: Decision) {
        let (kind, result) = match d.denied {
            None => ("key_grant", "granted"),
            Some(_) => ("key_denial", "denied"),
        };
        let event = AuditEvent {
            id: new_id(),
            tenant_id: d.tenant_id,
            kind: kind.into(),
            playback_id: d.playback_id,
            key_id: d.key_id,
            viewer: d.viewer,
            client_ip: d.client_ip,
            result: result.into(),
            reason: d.denied,
            at: now_ms(),
        };
        if self.tx.send(event).await.is_err() {
            tracing::error!("audit writer has stopped; key decision not recorded");
        }
    }

    /// Resolves once everything queued before the call is in the database (tests, shutdown).
    pub async fn flush(&self) {
        for _ in 0..200 {
            if self.tx.capacity() == self.tx.max_capacity() {
                // Queue empty; the writer may still hold one batch.
                tokio::time::sleep(Duration::from_millis(50)).await;
                if self.tx.capacity() == self.tx.max_capacity() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn writer(db: Db, mut rx: mpsc::Receiver<AuditEvent>) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let mut delay = Duration::from_millis(100);
        loop {
            match db.insert_audit_events(&batch).await {
                Ok(()) => break,
                Err(e) => {
                    // The database is down: keep the batch and retry; the queue fills and
                    // the key endpoint slows down rather than forgetting decisions.
                    tracing::warn!(error = %e, events = batch.len(), "writing audit events; retrying");
                    metrics::counter!("ferrocast_audit_write_errors_total").increment(1);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        metrics::counter!("ferrocast_audit_events_total").increment(batch.len() as u64);
        batch.clear();
    }
}
