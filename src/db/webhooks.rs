//! Webhooks out: a tenant's endpoints, the outbox of events, and their deliveries.
//!
//! An event is inserted by [`record_event`] in the transaction of the change it tells, so a
//! committed change always has its event, even if the process dies right after. The
//! dispatcher then fans each event out into one delivery per subscribed endpoint and sends
//! those, a tenant's events about one object in the order they were committed.

use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, FromRow};

use super::{Asset, Db, DbError, DbResult, Entitlement, LiveStream, Order, OrderLine, Upload};
use super::{Subscription, new_id, now_ms};

/// Every event type an endpoint can subscribe to.
pub const EVENT_TYPES: &[&str] = &[
    "live_stream.created",
    "live_stream.connected",
    "live_stream.active",
    "live_stream.disconnected",
    "live_stream.idle",
    "live_stream.recording.ready",
    "live_stream.deleted",
    "asset.created",
    "asset.ready",
    "asset.errored",
    "asset.deleted",
    "upload.completed",
    "order.paid",
    "order.refunded",
    "subscription.renewed",
    "subscription.canceled",
    "entitlement.granted",
    "entitlement.revoked",
    "webhook_endpoint.disabled",
];

/// Endpoints one tenant may have.
pub const MAX_ENDPOINTS: i64 = 20;

/// The object an event is about, as it was in the transaction that committed the event.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "object", rename_all = "snake_case")]
pub enum EventObject {
    Asset(Asset),
    LiveStream(LiveStream),
    Upload(Upload),
    Order { order: Order, lines: Vec<OrderLine> },
    Subscription(Subscription),
    Entitlement(Entitlement),
    WebhookEndpoint(WebhookEndpoint),
}

impl EventObject {
    fn id(&self) -> &str {
        match self {
            Self::Asset(a) => &a.id,
            Self::LiveStream(s) => &s.id,
            Self::Upload(u) => &u.id,
            Self::Order { order, .. } => &order.id,
            Self::Subscription(s) => &s.id,
            Self::Entitlement(e) => &e.id,
            Self::WebhookEndpoint(w) => &w.id,
        }
    }

    fn tenant_id(&self) -> &str {
        match self {
            Self::Asset(a) => &a.tenant_id,
            Self::LiveStream(s) => &s.tenant_id,
            Self::Upload(u) => &u.tenant_id,
            Self::Order { order, .. } => &order.tenant_id,
            Self::Subscription(s) => &s.tenant_id,
            Self::Entitlement(e) => &e.tenant_id,
            Self::WebhookEndpoint(w) => &w.tenant_id,
        }
    }
}

/// Inserts the event `event_type` about `object` on `conn`, in the caller's transaction.
pub(super) async fn record_event(
    conn: &mut AnyConnection,
    event_type: &'static str,
    object: &EventObject,
) -> DbResult<()> {
    debug_assert!(EVENT_TYPES.contains(&event_type), "{event_type}");
    let data = serde_json::to_string(object).expect("rows serialize");
    // The object's row is held by this transaction's change, so its events are numbered
    // one after another whatever node commits them.
    sqlx::query(
        "INSERT INTO outbox_events (id, tenant_id, type, object_id, seq, data, created_at, \
         fanned_out) VALUES ($1, $2, $3, $4, \
         COALESCE((SELECT MAX(seq) FROM outbox_events WHERE object_id = $4), 0) + 1, $5, $6, 0)",
    )
    .bind(new_id())
    .bind(object.tenant_id())
    .bind(event_type)
    .bind(object.id())
    .bind(data)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

/// A URL the tenant's events are posted to.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize, Deserialize)]
pub struct WebhookEndpoint {
    pub id: String,
    pub tenant_id: String,
    pub url: String,
    pub description: Option<String>,
    /// JSON array of event types, or `["*"]`.
    pub events: String,
    pub enabled: i64,
    #[serde(skip)]
    pub kek_id: String,
    #[serde(skip)]
    pub secret: String,
    #[serde(skip)]
    pub previous_kek_id: Option<String>,
    #[serde(skip)]
    pub previous_secret: Option<String>,
    pub previous_until: Option<i64>,
    pub failing_since: Option<i64>,
    pub disabled_reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl WebhookEndpoint {
    /// The event types it is subscribed to (`*`: all).
    pub fn event_types(&self) -> Vec<String> {
        serde_json::from_str(&self.events).unwrap_or_default()
    }

    pub fn wants(&self, event_type: &str) -> bool {
        self.event_types()
            .iter()
            .any(|t| t == "*" || t == event_type)
    }
}

const ENDPOINT_COLUMNS: &str = "id, tenant_id, url, description, events, enabled, kek_id, secret, \
    previous_kek_id, previous_secret, previous_until, failing_since, disabled_reason, created_at, \
    updated_at";

/// What a PATCH changes; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct EndpointChanges<'a> {
    pub url: Option<&'a str>,
    pub events: Option<&'a str>,
    pub description: Option<Option<&'a str>>,
    pub enabled: Option<bool>,
}

/// One event to one endpoint, with how its attempts went.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Delivery {
    pub id: String,
    pub endpoint_id: String,
    pub event_id: String,
    pub event_type: String,
    pub object_id: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_attempt_at: Option<i64>,
    pub last_status: Option<i64>,
    pub last_latency_ms: Option<i64>,
    pub last_response: Option<String>,
    pub last_error: Option<String>,
    pub delivered_at: Option<i64>,
    pub created_at: i64,
}

const DELIVERY_COLUMNS: &str = "d.id, d.endpoint_id, d.event_id, e.type AS event_type, d.object_id, \
    d.status, d.attempts, d.next_attempt_at, d.last_attempt_at, d.last_status, d.last_latency_ms, \
    d.last_response, d.last_error, d.delivered_at, d.created_at";

/// An event not fanned out yet.
#[derive(Debug, Clone, FromRow)]
pub struct OutboxEvent {
    pub id: String,
    pub tenant_id: String,
    pub r#type: String,
    pub created_at: i64,
}

/// A delivery claimed for sending, with what it sends and where.
#[derive(Debug, Clone, FromRow)]
pub struct DeliveryJob {
    pub id: String,
    /// The claim's token: the outcome is recorded only under it.
    pub lease_token: Option<String>,
    pub endpoint_id: String,
    pub event_id: String,
    pub event_type: String,
    pub tenant_id: String,
    pub data: String,
    pub event_created_at: i64,
    pub attempts: i64,
    pub url: String,
    pub kek_id: String,
    pub secret: String,
    pub previous_kek_id: Option<String>,
    pub previous_secret: Option<String>,
    pub previous_until: Option<i64>,
}

/// How one attempt went.
#[derive(Debug, Clone)]
pub struct Attempt<'a> {
    pub at: i64,
    pub status: Option<i64>,
    pub latency_ms: i64,
    pub response: Option<&'a str>,
    pub error: Option<&'a str>,
}

/// What happens after a failed attempt.
#[derive(Debug, Clone, Copy)]
pub enum AfterFailure {
    /// Try again then (ms).
    RetryAt(i64),
    /// Given up.
    GiveUp,
}

/// Records attempt `a` at `job`, which leaves it `status` (next due at `next`), if the
/// claim is still `job`'s; says whether it was.
async fn record_attempt(
    conn: &mut AnyConnection,
    job: &DeliveryJob,
    a: &Attempt<'_>,
    status: &str,
    next: i64,
) -> DbResult<bool> {
    let done = sqlx::query(
        "UPDATE webhook_deliveries SET status = $1, next_attempt_at = $2, \
         attempts = attempts + 1, lease_until = NULL, lease_token = NULL, last_attempt_at = $3, \
         last_status = $4, last_latency_ms = $5, last_response = $6, last_error = $7, \
         delivered_at = CASE WHEN $1 = 'delivered' THEN $3 ELSE delivered_at END \
         WHERE id = $8 AND lease_token = $9 AND status = 'pending'",
    )
    .bind(status)
    .bind(next)
    .bind(a.at)
    .bind(a.status)
    .bind(a.latency_ms)
    .bind(a.response)
    .bind(a.error)
    .bind(&job.id)
    .bind(&job.lease_token)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Fails an endpoint's pending deliveries (it was disabled), in the caller's transaction.
async fn fail_pending(conn: &mut AnyConnection, endpoint_id: &str) -> DbResult<()> {
    sqlx::query(
        "UPDATE webhook_deliveries SET status = 'failed', lease_until = NULL, lease_token = NULL, \
         last_error = COALESCE(last_error, 'the endpoint was disabled') \
         WHERE endpoint_id = $1 AND status = 'pending'",
    )
    .bind(endpoint_id)
    .execute(conn)
    .await?;
    Ok(())
}

impl Db {
    pub async fn create_webhook_endpoint(&self, e: &WebhookEndpoint) -> DbResult<()> {
        let mut tx = self.write_tx().await?;
        // Holds the tenant's row, so two creates count one after the other.
        sqlx::query("UPDATE tenants SET name = name WHERE id = $1")
            .bind(&e.tenant_id)
            .execute(&mut *tx)
            .await?;
        let (n,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM webhook_endpoints WHERE tenant_id = $1")
                .bind(&e.tenant_id)
                .fetch_one(&mut *tx)
                .await?;
        if n >= MAX_ENDPOINTS {
            return Err(DbError::Conflict(format!(
                "a tenant has at most {MAX_ENDPOINTS} webhook endpoints"
            )));
        }
        sqlx::query(&format!(
            "INSERT INTO webhook_endpoints ({ENDPOINT_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL, NULL, NULL, NULL, $9, $9)"
        ))
        .bind(&e.id)
        .bind(&e.tenant_id)
        .bind(&e.url)
        .bind(&e.description)
        .bind(&e.events)
        .bind(e.enabled)
        .bind(&e.kek_id)
        .bind(&e.secret)
        .bind(e.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_webhook_endpoint(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> DbResult<WebhookEndpoint> {
        self.tenant_row(
            "webhook_endpoints",
            ENDPOINT_COLUMNS,
            tenant_id,
            id,
            "webhook endpoint",
        )
        .await
    }

    pub async fn list_webhook_endpoints(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> DbResult<Vec<WebhookEndpoint>> {
        self.tenant_page(
            "webhook_endpoints",
            ENDPOINT_COLUMNS,
            tenant_id,
            None,
            after,
            limit,
        )
        .await
    }

    /// Applies `c`; enabling an endpoint forgets its failures, disabling it fails what
    /// was still to be sent.
    pub async fn update_webhook_endpoint(
        &self,
        tenant_id: &str,
        id: &str,
        c: &EndpointChanges<'_>,
    ) -> DbResult<WebhookEndpoint> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE webhook_endpoints SET url = COALESCE($1, url), events = COALESCE($2, events), \
             description = CASE WHEN $3 = 1 THEN $4 ELSE description END, \
             enabled = COALESCE($5, enabled), \
             failing_since = CASE WHEN $5 = 1 THEN NULL ELSE failing_since END, \
             disabled_reason = CASE WHEN $5 = 1 THEN NULL WHEN $5 = 0 THEN 'disabled by the API' \
                 ELSE disabled_reason END, \
             updated_at = $6 WHERE id = $7 AND tenant_id = $8",
        )
        .bind(c.url)
        .bind(c.events)
        .bind(i64::from(c.description.is_some()))
        .bind(c.description.flatten())
        .bind(c.enabled.map(i64::from))
        .bind(now_ms())
        .bind(id)
        .bind(tenant_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(DbError::NotFound("webhook endpoint"));
        }
        if c.enabled == Some(false) {
            fail_pending(&mut tx, id).await?;
        }
        tx.commit().await?;
        self.get_webhook_endpoint(tenant_id, id).await
    }

    pub async fn delete_webhook_endpoint(&self, tenant_id: &str, id: &str) -> DbResult<()> {
        let done = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1 AND tenant_id = $2")
            .bind(id)
            .bind(tenant_id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(DbError::NotFound("webhook endpoint"));
        }
        Ok(())
    }

    /// A new signing secret; the current one stays valid until `previous_until`.
    pub async fn rotate_webhook_secret(
        &self,
        tenant_id: &str,
        id: &str,
        kek_id: &str,
        sealed: &str,
        previous_until: i64,
    ) -> DbResult<WebhookEndpoint> {
        let done = sqlx::query(
            "UPDATE webhook_endpoints SET previous_kek_id = kek_id, previous_secret = secret, \
             previous_until = $1, kek_id = $2, secret = $3, updated_at = $4 \
             WHERE id = $5 AND tenant_id = $6",
        )
        .bind(previous_until)
        .bind(kek_id)
        .bind(sealed)
        .bind(now_ms())
        .bind(id)
        .bind(tenant_id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(DbError::NotFound("webhook endpoint"));
        }
        self.get_webhook_endpoint(tenant_id, id).await
    }

    /// Events not fanned out yet, oldest first.
    pub async fn unfanned_events(&self, limit: i64) -> DbResult<Vec<OutboxEvent>> {
        Ok(sqlx::query_as(
            "SELECT id, tenant_id, type, created_at FROM outbox_events WHERE fanned_out = 0 \
             ORDER BY id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Makes one delivery of `event` per enabled endpoint of its tenant that wants it and
    /// existed when it was committed, once (another node fanning the same event out adds
    /// nothing); an event nobody wants is deleted. Returns the deliveries made.
    pub async fn fan_out_event(&self, event: &OutboxEvent) -> DbResult<u64> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        let endpoints: Vec<WebhookEndpoint> = sqlx::query_as(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1 AND enabled = 1 \
             AND created_at <= $2"
        ))
        .bind(&event.tenant_id)
        .bind(event.created_at)
        .fetch_all(&mut *tx)
        .await?;
        let mut made = 0;
        for endpoint in endpoints.iter().filter(|e| e.wants(&event.r#type)) {
            made += sqlx::query(
                "INSERT INTO webhook_deliveries (id, endpoint_id, event_id, tenant_id, object_id, \
                 event_seq, status, attempts, next_attempt_at, created_at) \
                 SELECT $1, $2, id, tenant_id, object_id, seq, 'pending', 0, $3, $3 \
                 FROM outbox_events WHERE id = $4 \
                 ON CONFLICT (endpoint_id, event_id) DO NOTHING",
            )
            .bind(new_id())
            .bind(&endpoint.id)
            .bind(now)
            .bind(&event.id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        let (kept,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM webhook_deliveries WHERE event_id = $1")
                .bind(&event.id)
                .fetch_one(&mut *tx)
                .await?;
        if kept == 0 {
            sqlx::query("DELETE FROM outbox_events WHERE id = $1")
                .bind(&event.id)
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query("UPDATE outbox_events SET fanned_out = 1 WHERE id = $1")
                .bind(&event.id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(made)
    }

    /// Deliveries to enabled endpoints due at `now` that no node is sending, each the
    /// first pending one of its object for its endpoint, and none while an earlier event of
    /// its object is still being fanned out (so an object's events arrive in order).
    pub async fn due_deliveries(&self, now: i64, limit: i64) -> DbResult<Vec<String>> {
        Ok(sqlx::query_as::<_, (String,)>(
            "SELECT d.id FROM webhook_deliveries d \
             JOIN webhook_endpoints w ON w.id = d.endpoint_id AND w.enabled = 1 \
             WHERE d.status = 'pending' \
             AND d.next_attempt_at <= $1 AND (d.lease_until IS NULL OR d.lease_until < $1) \
             AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p WHERE p.endpoint_id = d.endpoint_id \
                 AND p.object_id = d.object_id AND p.status = 'pending' \
                 AND (p.event_seq < d.event_seq \
                     OR (p.event_seq = d.event_seq AND p.event_id < d.event_id))) \
             AND NOT EXISTS (SELECT 1 FROM outbox_events o WHERE o.object_id = d.object_id \
                 AND o.fanned_out = 0 AND o.seq < d.event_seq) \
             ORDER BY d.next_attempt_at, d.event_id LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|(id,)| id)
        .collect())
    }

    /// Takes delivery `id` for sending until `lease_until` under `token`, unless another
    /// node has it or its endpoint is disabled.
    pub async fn claim_delivery(
        &self,
        id: &str,
        now: i64,
        lease_until: i64,
        token: &str,
    ) -> DbResult<Option<DeliveryJob>> {
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET lease_until = $1, lease_token = $2 \
             WHERE id = $3 AND status = 'pending' AND (lease_until IS NULL OR lease_until < $4) \
             AND EXISTS (SELECT 1 FROM webhook_endpoints w \
                 WHERE w.id = webhook_deliveries.endpoint_id AND w.enabled = 1)",
        )
        .bind(lease_until)
        .bind(token)
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        Ok(sqlx::query_as(
            "SELECT d.id, d.lease_token, d.endpoint_id, d.event_id, e.type AS event_type, \
             e.tenant_id, e.data, e.created_at AS event_created_at, d.attempts, w.url, w.kek_id, w.secret, \
             w.previous_kek_id, w.previous_secret, w.previous_until \
             FROM webhook_deliveries d JOIN outbox_events e ON e.id = d.event_id \
             JOIN webhook_endpoints w ON w.id = d.endpoint_id WHERE d.id = $1 AND d.lease_token = $2",
        )
        .bind(id)
        .bind(token)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The endpoint took `job`. Nothing is recorded if the claim is no longer `job`'s (its
    /// lease ran out and another node took it, or it was retried by hand meanwhile).
    pub async fn delivery_succeeded(&self, job: &DeliveryJob, a: &Attempt<'_>) -> DbResult<()> {
        let mut tx = self.write_tx().await?;
        if !record_attempt(&mut tx, job, a, "delivered", a.at).await? {
            return Ok(());
        }
        sqlx::query("UPDATE webhook_endpoints SET failing_since = NULL WHERE id = $1")
            .bind(&job.endpoint_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// An attempt at `job` failed (recorded only while the claim is `job`'s). An endpoint
    /// failing since before `disable_failing_since` is disabled: its pending deliveries fail
    /// and the tenant is told by a `webhook_endpoint.disabled` event. Returns whether it was
    /// disabled.
    pub async fn delivery_failed(
        &self,
        job: &DeliveryJob,
        a: &Attempt<'_>,
        then: AfterFailure,
        disable_failing_since: i64,
    ) -> DbResult<bool> {
        let mut tx = self.write_tx().await?;
        let (status, next) = match then {
            AfterFailure::RetryAt(at) => ("pending", at),
            AfterFailure::GiveUp => ("failed", a.at),
        };
        if !record_attempt(&mut tx, job, a, status, next).await? {
            return Ok(false);
        }
        let endpoint_id = &job.endpoint_id;
        sqlx::query(
            "UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, $1) WHERE id = $2",
        )
        .bind(a.at)
        .bind(endpoint_id)
        .execute(&mut *tx)
        .await?;
        let disabled = sqlx::query(
            "UPDATE webhook_endpoints SET enabled = 0, updated_at = $1, disabled_reason = \
             'every delivery failed for too long' \
             WHERE id = $2 AND enabled = 1 AND failing_since < $3",
        )
        .bind(a.at)
        .bind(endpoint_id)
        .bind(disable_failing_since)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if disabled {
            fail_pending(&mut tx, endpoint_id).await?;
            let endpoint: WebhookEndpoint = sqlx::query_as(&format!(
                "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1"
            ))
            .bind(endpoint_id)
            .fetch_one(&mut *tx)
            .await?;
            record_event(
                &mut tx,
                "webhook_endpoint.disabled",
                &EventObject::WebhookEndpoint(endpoint),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(disabled)
    }

    /// A page of an endpoint's deliveries, optionally only those with `status`.
    pub async fn list_deliveries(
        &self,
        endpoint_id: &str,
        status: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> DbResult<Vec<Delivery>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d \
             JOIN outbox_events e ON e.id = d.event_id \
             WHERE d.endpoint_id = $1 AND ($2 = '' OR d.status = $2) AND d.id > $3 \
             ORDER BY d.id LIMIT $4"
        ))
        .bind(endpoint_id)
        .bind(status.unwrap_or(""))
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn get_delivery(&self, endpoint_id: &str, id: &str) -> DbResult<Delivery> {
        sqlx::query_as(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d \
             JOIN outbox_events e ON e.id = d.event_id WHERE d.endpoint_id = $1 AND d.id = $2"
        ))
        .bind(endpoint_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(DbError::NotFound("delivery"))
    }

    /// Sends delivery `id` again now (delivered, failed or pending alike), with the same
    /// event and `webhook-id`; not while a node is sending it.
    pub async fn retry_delivery(&self, endpoint_id: &str, id: &str) -> DbResult<Delivery> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $1 \
             WHERE endpoint_id = $2 AND id = $3 AND (lease_until IS NULL OR lease_until < $1)",
        )
        .bind(now)
        .bind(endpoint_id)
        .bind(id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            self.get_delivery(endpoint_id, id).await?;
            return Err(DbError::Conflict(
                "the delivery is being sent now; retry it once this attempt is over".into(),
            ));
        }
        self.get_delivery(endpoint_id, id).await
    }

    /// Deletes events (and their deliveries) made before `before` whose deliveries are all
    /// over. Returns how many.
    pub async fn prune_webhook_events(&self, before: i64) -> DbResult<u64> {
        Ok(sqlx::query(
            "DELETE FROM outbox_events WHERE created_at < $1 AND fanned_out = 1 \
             AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d \
                 WHERE d.event_id = outbox_events.id AND d.status = 'pending')",
        )
        .bind(before)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }
}
