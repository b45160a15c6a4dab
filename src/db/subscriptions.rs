//! Subscriptions bought by orders, as their provider last described them, and the access
//! they keep: the order's entitlements last until the paid period's end plus a grace. Events
//! may come late or twice: a period end only moves forward, a canceled subscription stays
//! canceled, and a status older than the one stored (by its event's time) is not taken.

use sqlx::FromRow;

use super::webhooks::{EventObject, record_event};
use super::{Db, DbError, DbResult, Entitlement, new_id, now_ms};

#[derive(Debug, Clone, PartialEq, Eq, FromRow, serde::Serialize, serde::Deserialize)]
pub struct Subscription {
    pub id: String,
    pub tenant_id: String,
    pub order_id: String,
    pub customer_id: String,
    pub provider: String,
    pub provider_ref: String,
    pub status: String,
    pub current_period_end: Option<i64>,
    pub cancel_at_period_end: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What the provider says of a subscription now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionState<'a> {
    pub provider_ref: &'a str,
    pub status: &'a str,
    /// Milliseconds.
    pub current_period_end: Option<i64>,
    pub cancel_at_period_end: Option<bool>,
    /// When the provider said so (its event's time, milliseconds): an older statement
    /// arriving later leaves a newer status as it is.
    pub at_ms: Option<i64>,
}

/// One period of a subscription paid (its charge), as the provider reported it.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct PeriodPaid {
    pub tenant_id: String,
    pub provider: String,
    /// What a refund names (Stripe's payment intent).
    pub payment_ref: String,
    pub order_id: String,
    pub invoice_ref: Option<String>,
    /// 0: the order's first charge; 1, 2, …: renewals, in the order they were reported.
    pub period: i64,
    pub amount: i64,
    pub currency: String,
    /// That charge's refunded total.
    pub refunded: i64,
    /// Milliseconds.
    pub period_end: Option<i64>,
    pub paid_at: i64,
}

const PERIOD_COLUMNS: &str = "tenant_id, provider, payment_ref, order_id, invoice_ref, period, \
     amount, currency, refunded, period_end, paid_at";

/// A period's `period_end` may differ from its subscription's by this much and still be the
/// same period.
const SAME_PERIOD_MS: i64 = 3_600_000;

const COLUMNS: &str = "id, tenant_id, order_id, customer_id, provider, provider_ref, status, \
     current_period_end, cancel_at_period_end, created_at, updated_at";

/// Statuses after which a subscription gives no access.
const ENDED: &[&str] = &["canceled", "unpaid", "incomplete_expired"];

impl Db {
    /// Records `state` for the subscription of `order_id`; returns it as stored.
    pub async fn note_subscription(
        &self,
        tenant_id: &str,
        order_id: &str,
        state: &SubscriptionState<'_>,
    ) -> DbResult<Subscription> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        // Held first, so the status before is not a concurrent event's view of it.
        sqlx::query(
            "UPDATE subscriptions SET updated_at = updated_at WHERE tenant_id = $1 \
             AND provider = 'stripe' AND provider_ref = $2",
        )
        .bind(tenant_id)
        .bind(state.provider_ref)
        .execute(&mut *tx)
        .await?;
        let before: Option<(String, Option<i64>)> = sqlx::query_as(
            "SELECT status, current_period_end FROM subscriptions WHERE tenant_id = $1 \
             AND provider = 'stripe' AND provider_ref = $2",
        )
        .bind(tenant_id)
        .bind(state.provider_ref)
        .fetch_optional(&mut *tx)
        .await?;
        let (customer,): (String,) =
            sqlx::query_as("SELECT customer_id FROM orders WHERE id = $1 AND tenant_id = $2")
                .bind(order_id)
                .bind(tenant_id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(DbError::NotFound("order"))?;
        sqlx::query(&format!(
            "INSERT INTO subscriptions ({COLUMNS}, status_at) \
             VALUES ($1, $2, $3, $4, 'stripe', $5, $6, $7, COALESCE($8, 0), $9, $9, $10) \
             ON CONFLICT (tenant_id, provider, provider_ref) DO UPDATE SET \
             status = CASE WHEN subscriptions.status IN ('canceled', 'incomplete_expired') \
                 THEN subscriptions.status \
                 WHEN $6 IN ('canceled', 'incomplete_expired') THEN $6 \
                 WHEN $10 < subscriptions.status_at THEN subscriptions.status ELSE $6 END, \
             status_at = CASE WHEN subscriptions.status_at IS NULL \
                 OR $10 > subscriptions.status_at THEN $10 ELSE subscriptions.status_at END, \
             current_period_end = CASE WHEN subscriptions.current_period_end IS NULL \
                 OR $7 > subscriptions.current_period_end THEN $7 \
                 ELSE subscriptions.current_period_end END, \
             cancel_at_period_end = COALESCE($8, subscriptions.cancel_at_period_end), \
             updated_at = $9"
        ))
        .bind(new_id())
        .bind(tenant_id)
        .bind(order_id)
        .bind(&customer)
        .bind(state.provider_ref)
        .bind(state.status)
        .bind(state.current_period_end)
        .bind(state.cancel_at_period_end.map(i64::from))
        .bind(now)
        .bind(state.at_ms)
        .execute(&mut *tx)
        .await?;
        let sub: Subscription = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM subscriptions WHERE tenant_id = $1 AND provider = 'stripe' \
             AND provider_ref = $2"
        ))
        .bind(tenant_id)
        .bind(state.provider_ref)
        .fetch_one(&mut *tx)
        .await?;
        let canceled =
            sub.status == "canceled" && before.as_ref().is_none_or(|(s, _)| s != "canceled");
        let renewed = matches!(
            (&before, sub.current_period_end),
            (Some((_, Some(was))), Some(now)) if now > *was
        ) && !ENDED.contains(&sub.status.as_str());
        if renewed {
            let event = EventObject::Subscription(sub.clone());
            record_event(&mut tx, "subscription.renewed", &event).await?;
        }
        if canceled {
            let event = EventObject::Subscription(sub.clone());
            record_event(&mut tx, "subscription.canceled", &event).await?;
        }
        tx.commit().await?;
        Ok(sub)
    }

    /// The subscription an order bought, if known yet.
    pub async fn subscription_of_order(&self, order_id: &str) -> DbResult<Option<Subscription>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM subscriptions WHERE order_id = $1"
        ))
        .bind(order_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn get_subscription(&self, tenant_id: &str, id: &str) -> DbResult<Subscription> {
        self.tenant_row("subscriptions", COLUMNS, tenant_id, id, "subscription")
            .await
    }

    /// The order paid by payment intent `payment_ref`, for events that name only it.
    pub async fn order_of_payment(
        &self,
        tenant_id: &str,
        provider: &str,
        payment_ref: &str,
    ) -> DbResult<Option<String>> {
        Ok(sqlx::query_as::<_, (String,)>(
            "SELECT id FROM orders WHERE tenant_id = $1 AND provider = $2 AND payment_ref = $3 \
             UNION SELECT order_id FROM subscription_payments WHERE tenant_id = $1 \
             AND provider = $2 AND payment_ref = $3",
        )
        .bind(tenant_id)
        .bind(provider)
        .bind(payment_ref)
        .fetch_optional(&self.pool)
        .await?
        .map(|(o,)| o))
    }

    /// Records a period of `order_id`'s subscription as paid (`first`: its first charge).
    /// Returns false when that payment was recorded already.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_period_payment(
        &self,
        tenant_id: &str,
        provider: &str,
        order_id: &str,
        payment_ref: &str,
        invoice_ref: Option<&str>,
        first: bool,
        (amount, currency): (i64, &str),
        period_end: Option<i64>,
    ) -> DbResult<bool> {
        let mut tx = self.write_tx().await?;
        // The order's row is held, so two renewals reported at once take two numbers.
        let held = sqlx::query(
            "UPDATE orders SET updated_at = updated_at WHERE id = $1 AND tenant_id = $2",
        )
        .bind(order_id)
        .bind(tenant_id)
        .execute(&mut *tx)
        .await?;
        if held.rows_affected() == 0 {
            return Err(DbError::NotFound("order"));
        }
        let known: Option<(i64,)> = sqlx::query_as(
            "SELECT period FROM subscription_payments WHERE tenant_id = $1 AND provider = $2 \
             AND payment_ref = $3",
        )
        .bind(tenant_id)
        .bind(provider)
        .bind(payment_ref)
        .fetch_optional(&mut *tx)
        .await?;
        if known.is_some() {
            return Ok(false);
        }
        let period = if first {
            0
        } else {
            let (last,): (i64,) = sqlx::query_as(
                "SELECT COALESCE(MAX(period), 0) FROM subscription_payments WHERE order_id = $1",
            )
            .bind(order_id)
            .fetch_one(&mut *tx)
            .await?;
            last + 1
        };
        sqlx::query(&format!(
            "INSERT INTO subscription_payments ({PERIOD_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $10)"
        ))
        .bind(tenant_id)
        .bind(provider)
        .bind(payment_ref)
        .bind(order_id)
        .bind(invoice_ref)
        .bind(period)
        .bind(amount)
        .bind(currency)
        .bind(period_end)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The paid period whose charge is `payment_ref`, if it is one.
    pub async fn period_payment(
        &self,
        tenant_id: &str,
        provider: &str,
        payment_ref: &str,
    ) -> DbResult<Option<PeriodPaid>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {PERIOD_COLUMNS} FROM subscription_payments WHERE tenant_id = $1 \
             AND provider = $2 AND payment_ref = $3"
        ))
        .bind(tenant_id)
        .bind(provider)
        .bind(payment_ref)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The paid periods of `order_id`, first first.
    pub async fn period_payments(&self, order_id: &str) -> DbResult<Vec<PeriodPaid>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {PERIOD_COLUMNS} FROM subscription_payments WHERE order_id = $1 \
             ORDER BY period"
        ))
        .bind(order_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// A refund of a paid period's charge, `refunded_total` in all: the order's refunded
    /// total becomes the sum over its periods (its credit notes follow it). A period refunded
    /// in full that is the latest paid ends the access now; it comes back only with a period
    /// paid after it. A partial refund keeps access.
    pub async fn record_period_refund(
        &self,
        tenant_id: &str,
        provider: &str,
        payment_ref: &str,
        refunded_total: i64,
    ) -> DbResult<String> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        let Some(paid) = sqlx::query_as::<_, PeriodPaid>(&format!(
            "SELECT {PERIOD_COLUMNS} FROM subscription_payments WHERE tenant_id = $1 \
             AND provider = $2 AND payment_ref = $3"
        ))
        .bind(tenant_id)
        .bind(provider)
        .bind(payment_ref)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Err(DbError::NotFound("payment"));
        };
        super::orders::lock_order(&mut tx, &paid.order_id).await?;
        sqlx::query(
            "UPDATE subscription_payments SET refunded = CASE WHEN refunded > $1 THEN refunded \
             WHEN $1 > amount THEN amount ELSE $1 END \
             WHERE tenant_id = $2 AND provider = $3 AND payment_ref = $4",
        )
        .bind(refunded_total)
        .bind(tenant_id)
        .bind(provider)
        .bind(payment_ref)
        .execute(&mut *tx)
        .await?;
        let (before,): (i64,) = sqlx::query_as("SELECT refunded FROM orders WHERE id = $1")
            .bind(&paid.order_id)
            .fetch_one(&mut *tx)
            .await?;
        let (sum,): (i64,) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(refunded), 0) AS BIGINT) FROM subscription_payments \
             WHERE order_id = $1",
        )
        .bind(&paid.order_id)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE orders SET refunded = $1, updated_at = $2 WHERE id = $3 AND refunded < $1",
        )
        .bind(sum)
        .bind(now)
        .bind(&paid.order_id)
        .execute(&mut *tx)
        .await?;
        let (refunded, latest): (i64, i64) = sqlx::query_as(
            "SELECT p.refunded, (SELECT MAX(period) FROM subscription_payments q \
             WHERE q.order_id = p.order_id) FROM subscription_payments p \
             WHERE p.tenant_id = $1 AND p.provider = $2 AND p.payment_ref = $3",
        )
        .bind(tenant_id)
        .bind(provider)
        .bind(payment_ref)
        .fetch_one(&mut *tx)
        .await?;
        let full = refunded >= paid.amount;
        let mut ended = 0;
        if full && paid.period == latest {
            ended =
                super::orders::end_order_entitlements(&mut tx, &paid.order_id, now, false).await?;
        }
        if sum > before {
            let order = super::orders::order_in(&mut tx, &paid.order_id).await?;
            record_event(&mut tx, "order.refunded", &order).await?;
        }
        tx.commit().await?;
        Ok(match (full, paid.period == latest) {
            (true, true) => format!(
                "period {} refunded in full: {ended} entitlements ended",
                paid.period
            ),
            (true, false) => format!(
                "period {} refunded in full; a later period is paid: access kept",
                paid.period
            ),
            _ => format!(
                "period {}: {refunded} of {} refunded: access kept",
                paid.period, paid.amount
            ),
        })
    }

    /// The order of a provider's subscription, for events that name only the subscription.
    pub async fn order_of_subscription(
        &self,
        tenant_id: &str,
        provider: &str,
        provider_ref: &str,
    ) -> DbResult<Option<String>> {
        Ok(sqlx::query_as::<_, (String,)>(
            "SELECT order_id FROM subscriptions WHERE tenant_id = $1 AND provider = $2 \
             AND provider_ref = $3",
        )
        .bind(tenant_id)
        .bind(provider)
        .bind(provider_ref)
        .fetch_optional(&self.pool)
        .await?
        .map(|(o,)| o))
    }

    pub async fn list_subscriptions(
        &self,
        tenant_id: &str,
        customer_id: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> DbResult<Vec<Subscription>> {
        let filter = customer_id.map(|c| ("customer_id", c));
        self.tenant_page("subscriptions", COLUMNS, tenant_id, filter, after, limit)
            .await
    }

    /// Sets how long the order's entitlements last from its subscription: to its period end
    /// plus `grace_ms` while it runs (never shortened by a late event), to now once it ended.
    /// Returns what it did.
    pub async fn apply_subscription_access(
        &self,
        sub: &Subscription,
        grace_ms: i64,
    ) -> DbResult<String> {
        let now = now_ms();
        if ENDED.contains(&sub.status.as_str()) {
            let mut tx = self.write_tx().await?;
            let n =
                super::orders::end_order_entitlements(&mut tx, &sub.order_id, now, false).await?;
            tx.commit().await?;
            return Ok(format!(
                "subscription {}: {n} entitlements ended",
                sub.status
            ));
        }
        let Some(end) = sub.current_period_end else {
            return Ok(format!("subscription {}: no period yet", sub.status));
        };
        let until = end + grace_ms;
        let mut tx = self.write_tx().await?;
        // The period paid was refunded in full: no access for it (a later one paid brings
        // it back).
        let (refunded,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM subscription_payments WHERE order_id = $1 \
             AND refunded >= amount AND period_end >= $2",
        )
        .bind(&sub.order_id)
        .bind(end - SAME_PERIOD_MS)
        .fetch_one(&mut *tx)
        .await?;
        if refunded > 0 {
            return Ok(format!(
                "subscription {}: the period to {end} was refunded: access not extended",
                sub.status
            ));
        }
        // Access that had ended (an unpaid subscription paid again) is granted anew.
        let ended: Vec<Entitlement> = sqlx::query_as(
            "SELECT id, tenant_id, playback_id, viewer, expires_at, created_at, revoked_at \
             FROM entitlements WHERE order_id = $1 AND revoked_at IS NULL \
             AND expires_at IS NOT NULL AND expires_at <= $2 AND expires_at < $3",
        )
        .bind(&sub.order_id)
        .bind(now)
        .bind(until)
        .fetch_all(&mut *tx)
        .await?;
        let n = sqlx::query(
            "UPDATE entitlements SET expires_at = $1 WHERE order_id = $2 \
             AND revoked_at IS NULL AND expires_at IS NOT NULL AND expires_at < $1",
        )
        .bind(until)
        .bind(&sub.order_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        for mut e in ended {
            e.expires_at = Some(until);
            record_event(&mut tx, "entitlement.granted", &EventObject::Entitlement(e)).await?;
        }
        tx.commit().await?;
        Ok(format!(
            "subscription {}: {n} entitlements extended to the period end",
            sub.status
        ))
    }

    /// Records the provider's answer to a cancel request.
    pub async fn set_subscription_cancel(
        &self,
        id: &str,
        status: &str,
        cancel_at_period_end: bool,
    ) -> DbResult<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE subscriptions SET updated_at = updated_at WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let was: Option<(String,)> =
            sqlx::query_as("SELECT status FROM subscriptions WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        sqlx::query(
            "UPDATE subscriptions SET status = CASE WHEN status = 'canceled' THEN status \
             ELSE $1 END, cancel_at_period_end = $2, updated_at = $3 WHERE id = $4",
        )
        .bind(status)
        .bind(i64::from(cancel_at_period_end))
        .bind(now_ms())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if status == "canceled" && was.is_some_and(|(s,)| s != "canceled") {
            let sub: Subscription = sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM subscriptions WHERE id = $1"
            ))
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            let event = EventObject::Subscription(sub);
            record_event(&mut tx, "subscription.canceled", &event).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
