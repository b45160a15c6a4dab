//! The key-delivery audit log: every grant and denial, written in batches by one task so the
//! key endpoint never waits on a database write. The queue is bounded: when it is full the
//! endpoint waits for room (back-pressure), so no decision is ever dropped from the log.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::clock::now_ms;
use crate::db::{AuditEvent, Db};
use crate::ids::new_id;

const QUEUE: usize = 20_000;
const BATCH: usize = 1_000;

/// Characters kept of any one field: a client address from a proxy header, a viewer or a
/// playback id cannot make a line longer than this.
pub const FIELD_MAX: usize = 200;

/// `s`, cut to [`FIELD_MAX`] characters.
fn bounded(s: Option<String>) -> Option<String> {
    s.map(|s| match s.char_indices().nth(FIELD_MAX) {
        Some((end, _)) => s[..end].to_string(),
        None => s,
    })
}

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
    tx: mpsc::Sender<Entry>,
}

/// What travels to the writer: events, and markers answered once all before them are stored.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // nearly all entries are events: boxing them would allocate per request
enum Entry {
    Event(AuditEvent),
    Flush(oneshot::Sender<()>),
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
            playback_id: bounded(d.playback_id),
            key_id: bounded(d.key_id),
            viewer: bounded(d.viewer),
            client_ip: bounded(d.client_ip),
            result: result.into(),
            reason: d.denied,
            at: now_ms(),
        };
        if self.tx.send(Entry::Event(event)).await.is_err() {
            tracing::error!("audit writer has stopped; key decision not recorded");
        }
    }

    /// Resolves once everything queued before the call is in the database (tests, shutdown).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Entry::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

async fn writer(db: Db, mut rx: mpsc::Receiver<Entry>) {
    let mut received = Vec::with_capacity(BATCH);
    let mut batch = Vec::with_capacity(BATCH);
    let mut flushes = Vec::new();
    while rx.recv_many(&mut received, BATCH).await > 0 {
        for entry in received.drain(..) {
            match entry {
                Entry::Event(e) => batch.push(e),
                Entry::Flush(done) => flushes.push(done),
            }
        }
        let mut delay = Duration::from_millis(100);
        while !batch.is_empty() {
            match db.insert_audit_events(&batch).await {
                Ok(()) => {
                    metrics::counter!("ferrocast_audit_events_total").increment(batch.len() as u64);
                    batch.clear();
                }
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
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_cut_to_a_bound_on_a_character_boundary() {
        assert_eq!(bounded(None), None);
        assert_eq!(bounded(Some("pb1".into())).as_deref(), Some("pb1"));
        let long = "é".repeat(5000);
        let cut = bounded(Some(long)).unwrap();
        assert_eq!(cut.chars().count(), FIELD_MAX);
    }
}
