//! Webhooks out: the dispatcher that turns committed events (the outbox, `db::webhooks`)
//! into signed POSTs to the tenant's endpoints.
//!
//! Every node runs one. Each round it fans new events out into deliveries, then takes the
//! deliveries that are due (a lease keeps two nodes from sending one at once; an object's
//! events go to an endpoint one after another, in order) and sends them, signed the Standard
//! Webhooks way. A failure is retried with exponential backoff and jitter until
//! `retry_for_s` after the event; an endpoint that has failed every attempt for
//! `disable_after_s` is disabled. Delivery is at least once: a node that dies after sending
//! and before recording it sends it again, with the same `webhook-id`.

pub mod sign;
pub mod target;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::{Semaphore, watch};

use crate::clock::{now_ms, rfc3339, unix_now};
use crate::config::WebhooksConfig;
use crate::db::{AfterFailure, Attempt, Db, DeliveryJob, EventObject};
use crate::drm::ContentKeys;

/// Renders an event's object as the API shows it (the API layer knows how).
pub trait Render: Send + Sync + 'static {
    fn data(&self, object: &EventObject) -> serde_json::Value;
}

/// The sealed-secret binding of an endpoint's signing secret.
pub fn secret_aad(endpoint_id: &str) -> String {
    format!("webhook-endpoint:{endpoint_id}:secret")
}

/// Bytes of a response body kept in the delivery log.
const SNIPPET_BYTES: usize = 1024;
/// Rounds when nothing is due.
const POLL: Duration = Duration::from_millis(250);

pub struct Dispatcher {
    db: Db,
    keys: ContentKeys,
    config: WebhooksConfig,
    render: Arc<dyn Render>,
    client: reqwest::Client,
    slots: Arc<Semaphore>,
}

impl Dispatcher {
    pub fn new(
        db: Db,
        keys: ContentKeys,
        config: WebhooksConfig,
        render: Arc<dyn Render>,
    ) -> Arc<Self> {
        let client = target::client(
            config.allow_private_targets,
            Duration::from_secs(config.timeout_s),
        );
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(config.concurrency)),
            db,
            keys,
            config,
            render,
            client,
        })
    }

    /// Runs until `stop` turns true; deliveries in flight then finish or are taken again by
    /// a node once their lease expires.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        tracing::info!("webhook dispatcher started");
        let mut last_prune = Instant::now() - Duration::from_secs(3600);
        let mut db_failing = false;
        loop {
            match self.round().await {
                Ok(()) if db_failing => {
                    db_failing = false;
                    tracing::info!("webhook dispatcher: the database answers again");
                }
                Ok(()) => {}
                Err(e) if !db_failing => {
                    db_failing = true;
                    tracing::error!(error = %e, "webhook dispatcher: database error; retrying");
                }
                Err(_) => {}
            }
            if last_prune.elapsed() > Duration::from_secs(3600) {
                last_prune = Instant::now();
                let before = now_ms() - self.config.retention_days as i64 * 86_400_000;
                match self.db.prune_webhook_events(before).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(events = n, "pruned old webhook events"),
                    Err(e) => tracing::warn!(error = %e, "pruning webhook events"),
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    async fn round(self: &Arc<Self>) -> crate::db::DbResult<()> {
        loop {
            let events = self.db.unfanned_events(200).await?;
            for event in &events {
                self.db.fan_out_event(event).await?;
            }
            if events.len() < 200 {
                break;
            }
        }
        let free = self.slots.available_permits();
        if free == 0 {
            return Ok(());
        }
        let now = self.db.shared_now_ms().await?;
        let lease = now + (self.config.timeout_s as i64 + 30) * 1000;
        for id in self.db.due_deliveries(now, free as i64).await? {
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                break;
            };
            let token = crate::ids::random_secret(16);
            if let Some(job) = self.db.claim_delivery(&id, now, lease, &token).await? {
                let me = self.clone();
                tokio::spawn(async move {
                    me.deliver(job).await;
                    drop(permit);
                });
            }
        }
        Ok(())
    }

    /// The body of `job`'s event, as every attempt sends it.
    fn body(&self, job: &DeliveryJob) -> Vec<u8> {
        let data = match serde_json::from_str::<EventObject>(&job.data) {
            Ok(object) => self.render.data(&object),
            Err(e) => {
                tracing::error!(event = %job.event_id, error = %e, "an event's object does not read");
                serde_json::Value::Null
            }
        };
        serde_json::to_vec(&serde_json::json!({
            "id": job.event_id,
            "type": job.event_type,
            "created_at": rfc3339(job.event_created_at),
            "tenant_id": job.tenant_id,
            "data": data,
        }))
        .expect("JSON serializes")
    }

    /// `webhook-signature`: the current secret's, and the previous one's while it is valid.
    fn signatures(&self, job: &DeliveryJob, timestamp: u64, body: &[u8]) -> Result<String, String> {
        let aad = secret_aad(&job.endpoint_id);
        let open = |kek: &str, sealed: &str| {
            self.keys
                .open_secret(kek, &aad, sealed)
                .map_err(|e| format!("the endpoint's secret does not open: {e}"))
                .map(|s| String::from_utf8_lossy(&s).into_owned())
        };
        let mut out = vec![sign::signature(
            &open(&job.kek_id, &job.secret)?,
            &job.event_id,
            timestamp,
            body,
        )];
        if let (Some(kek), Some(sealed), Some(until)) = (
            &job.previous_kek_id,
            &job.previous_secret,
            job.previous_until,
        ) && until > now_ms()
        {
            out.push(sign::signature(
                &open(kek, sealed)?,
                &job.event_id,
                timestamp,
                body,
            ));
        }
        Ok(out.join(" "))
    }

    async fn deliver(&self, job: DeliveryJob) {
        let body = self.body(&job);
        let timestamp = unix_now();
        let started = Instant::now();
        let at = now_ms();
        // The URL is checked again: one stored while private targets were allowed may name
        // an address (the resolver never sees those) that is refused now.
        let allowed = target::check_url(&job.url, self.config.allow_private_targets)
            .map(|_| ())
            .map_err(|e| format!("refused target: {e}"));
        let sent = match allowed.and_then(|()| self.signatures(&job, timestamp, &body)) {
            Ok(signature) => self
                .client
                .post(&job.url)
                .header("content-type", "application/json")
                .header("webhook-id", &job.event_id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", signature)
                .body(body)
                .send()
                .await
                .map_err(|e| describe(&e)),
            Err(e) => Err(e),
        };
        let (status, response, error) = match sent {
            Ok(mut r) => {
                let status = r.status();
                let mut snippet = Vec::new();
                while snippet.len() < SNIPPET_BYTES {
                    match r.chunk().await {
                        Ok(Some(chunk)) => snippet.extend_from_slice(&chunk),
                        _ => break,
                    }
                }
                snippet.truncate(SNIPPET_BYTES);
                let text = String::from_utf8_lossy(&snippet).into_owned();
                let error = (!status.is_success()).then(|| format!("answered {status}"));
                (Some(i64::from(status.as_u16())), Some(text), error)
            }
            Err(e) => (None, None, Some(e)),
        };
        let attempt = Attempt {
            at,
            status,
            latency_ms: started.elapsed().as_millis() as i64,
            response: response.as_deref(),
            error: error.as_deref(),
        };
        let result = if error.is_none() {
            self.db
                .delivery_succeeded(&job, &attempt)
                .await
                .map(|()| false)
        } else {
            // When to try again, on the clock the due times are read by (the database's).
            let now = self.db.shared_now_ms().await.unwrap_or_else(|_| now_ms());
            let then = self.after_failure(&job, now);
            let disable_before = now - self.config.disable_after_s as i64 * 1000;
            tracing::info!(
                endpoint = %job.endpoint_id,
                event = %job.event_id,
                attempt = job.attempts + 1,
                error = error.as_deref().unwrap_or_default(),
                retry = matches!(then, AfterFailure::RetryAt(_)),
                "webhook delivery failed"
            );
            self.db
                .delivery_failed(&job, &attempt, then, disable_before)
                .await
        };
        match result {
            Ok(true) => tracing::warn!(
                endpoint = %job.endpoint_id,
                "webhook endpoint disabled: every delivery failed for too long"
            ),
            Ok(false) => {}
            // The lease runs out and the delivery is sent again: at least once.
            Err(e) => {
                tracing::error!(error = %e, delivery = %job.id, "recording a webhook attempt")
            }
        }
    }

    /// When to try `job` again after its attempt failed at `now`, or to give it up.
    fn after_failure(&self, job: &DeliveryJob, now: i64) -> AfterFailure {
        let delay = backoff_ms(
            self.config.retry_base_ms,
            self.config.retry_max_s * 1000,
            job.attempts + 1,
            rand::thread_rng().gen_range(0.8..1.2),
        );
        let deadline = job.event_created_at + self.config.retry_for_s as i64 * 1000;
        next_attempt(now, delay, deadline)
    }
}

/// The next attempt `delay` after `now`, the last one at `deadline`, none past it.
fn next_attempt(now: i64, delay: i64, deadline: i64) -> AfterFailure {
    if now >= deadline {
        AfterFailure::GiveUp
    } else {
        AfterFailure::RetryAt((now + delay).min(deadline))
    }
}

/// The delay before retry `n` (1 after the first failure): `base` × 3ⁿ⁻¹, at most `max`,
/// times `jitter`.
#[allow(clippy::float_arithmetic)]
fn backoff_ms(base: u64, max: u64, n: i64, jitter: f64) -> i64 {
    let exp = u32::try_from(n.clamp(1, 30) - 1).unwrap_or(0);
    let raw = base
        .saturating_mul(3u64.saturating_pow(exp))
        .min(max.max(base));
    (raw as f64 * jitter) as i64
}

/// An error of the HTTP client in words, with its cause (a refused address says so).
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "could not connect".to_string()
    } else if e.is_redirect() {
        "redirect refused".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text.chars().take(500).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_three_times_each_up_to_the_cap() {
        let delays: Vec<i64> = (1..=13)
            .map(|n| backoff_ms(10_000, 14_400_000, n, 1.0))
            .collect();
        assert_eq!(&delays[..4], &[10_000, 30_000, 90_000, 270_000]);
        assert!(delays.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(delays[12], 14_400_000);
        assert_eq!(backoff_ms(10_000, 14_400_000, 1, 1.2), 12_000);
        assert_eq!(
            backoff_ms(1, 0, 5, 1.0),
            1,
            "a max below the base is the base"
        );
    }

    #[test]
    fn the_last_attempt_is_at_the_deadline_and_none_after() {
        // With the defaults, retries go on until 26 h after the event, the last at 26 h.
        let deadline = 93_600_000;
        let mut now = 0;
        let mut attempts = vec![now];
        for n in 1.. {
            match next_attempt(now, backoff_ms(10_000, 14_400_000, n, 1.0), deadline) {
                AfterFailure::RetryAt(at) => {
                    assert!(at > now && at <= deadline);
                    now = at;
                    attempts.push(at);
                }
                AfterFailure::GiveUp => break,
            }
        }
        assert_eq!(*attempts.last().unwrap(), deadline);
        assert!(attempts.len() >= 14, "{attempts:?}");
        assert!(matches!(next_attempt(5, 10, 5), AfterFailure::GiveUp));
    }
}
