//! Orders and what happens to them: frozen at checkout with their lines, paid (granting
//! entitlements), refunded (revoking them when the refund is full), disputed, failed. Each
//! change is one transaction and idempotent, so a provider's events may come twice or in any
//! order. Also the tenants' payment provider settings and the webhook inbox.

use sqlx::FromRow;

use super::webhooks::{EventObject, record_event};
use super::{Db, DbError, DbResult, Entitlement, is_unique_violation, new_id, now_ms};

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct ProviderSettings {
    pub tenant_id: String,
    pub provider: String,
    pub base_url: String,
    pub kek_id: String,
    pub secret_key: String,
    pub webhook_secret: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow, serde::Serialize, serde::Deserialize)]
pub struct Order {
    pub id: String,
    pub tenant_id: String,
    pub cart_id: String,
    pub customer_id: String,
    pub currency: String,
    pub country: Option<String>,
    pub region: Option<String>,
    pub discount_code_id: Option<String>,
    pub subtotal: i64,
    pub discount: i64,
    pub tax: i64,
    pub total: i64,
    pub mode: String,
    pub provider: String,
    pub provider_session: Option<String>,
    pub payment_ref: Option<String>,
    pub status: String,
    pub refunded: i64,
    pub disputed: i64,
    pub created_at: i64,
    pub paid_at: Option<i64>,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow, serde::Serialize, serde::Deserialize)]
pub struct OrderLine {
    pub order_id: String,
    pub line_no: i64,
    pub price_id: String,
    pub product_id: String,
    pub product_name: String,
    pub r#type: String,
    pub quantity: i64,
    pub unit_amount: i64,
    pub subtotal: i64,
    pub discount: i64,
    pub tax: i64,
    pub total: i64,
    pub tax_rate: i64,
    pub tax_behavior: String,
    pub rental_hours: Option<i64>,
    pub rental_starts: Option<String>,
    pub billing_interval: Option<String>,
    pub trial_days: Option<i64>,
    pub tier: String,
}

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct WebhookEvent {
    pub id: String,
    pub tenant_id: String,
    pub provider: String,
    pub event_id: Option<String>,
    pub r#type: Option<String>,
    pub body: String,
    pub verified: i64,
    pub error: Option<String>,
    pub received_at: i64,
    pub claimed_at: Option<i64>,
    pub processed_at: Option<i64>,
    pub result: Option<String>,
}

/// What storing a verified event found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbox {
    /// New: the caller claimed it and processes it.
    Claimed(String),
    /// Seen before and processed (or being processed by another delivery).
    Duplicate,
    /// Seen before, never finished, and now claimed by this delivery.
    Reclaimed(String),
}

const PROVIDER_COLUMNS: &str = "tenant_id, provider, base_url, kek_id, secret_key, \
     webhook_secret, created_at, updated_at";
const ORDER_COLUMNS: &str = "id, tenant_id, cart_id, customer_id, currency, country, region, \
     discount_code_id, subtotal, discount, tax, total, mode, provider, provider_session, \
     payment_ref, status, refunded, disputed, created_at, paid_at, updated_at";
const LINE_COLUMNS: &str = "order_id, line_no, price_id, product_id, product_name, type, \
     quantity, unit_amount, subtotal, discount, tax, total, tax_rate, tax_behavior, \
     rental_hours, rental_starts, billing_interval, trial_days, tier";
const EVENT_COLUMNS: &str = "id, tenant_id, provider, event_id, type, body, verified, error, \
     received_at, claimed_at, processed_at, result";

/// A claim on an event that was never finished lapses after this long (the claimant died).
const CLAIM_LAPSE_MS: i64 = 60_000;

/// How long a checkout not yet paid for holds a use of its discount code (Stripe's Checkout
/// Sessions expire after 24 h, and their expiry releases it sooner).
pub const CODE_HOLD_MS: i64 = 24 * 3_600_000;

/// The uses of code `code_id` by `customer_id`, as [`Db::code_uses_by_customer`] counts.
async fn customer_code_uses(
    conn: &mut sqlx::AnyConnection,
    tenant_id: &str,
    code_id: &str,
    customer_id: &str,
    now: i64,
) -> DbResult<i64> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM orders WHERE tenant_id = $1 AND discount_code_id = $2 \
         AND customer_id = $3 AND (status IN ('paid', 'refunded') \
             OR (status = 'pending' AND created_at > $4))",
    )
    .bind(tenant_id)
    .bind(code_id)
    .bind(customer_id)
    .bind(now - CODE_HOLD_MS)
    .fetch_one(conn)
    .await?;
    Ok(n)
}

/// Reserves a use of code `code_id` for `order`, in the caller's transaction, or says the
/// code is used up. The code's row is held first (PostgreSQL locks it; SQLite's writer holds
/// the database), so concurrent checkouts count each other.
async fn reserve_code(
    conn: &mut sqlx::AnyConnection,
    order: &Order,
    code_id: &str,
) -> DbResult<()> {
    let Some((max, max_per_customer, redeemed)) =
        sqlx::query_as::<_, (Option<i64>, Option<i64>, i64)>(
            "UPDATE discount_codes SET redemptions = redemptions WHERE id = $1 AND tenant_id = $2 \
             RETURNING max_redemptions, max_per_customer, redemptions",
        )
        .bind(code_id)
        .bind(&order.tenant_id)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Err(DbError::Conflict(
            "the discount code no longer exists".into(),
        ));
    };
    let now = order.created_at;
    if let Some(max) = max {
        let (held,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM orders WHERE discount_code_id = $1 AND status = 'pending' \
             AND created_at > $2",
        )
        .bind(code_id)
        .bind(now - CODE_HOLD_MS)
        .fetch_one(&mut *conn)
        .await?;
        if redeemed + held >= max {
            return Err(DbError::Conflict(format!(
                "the discount code is used up: {redeemed} of {max} redeemed and {held} in \
                 checkouts not yet paid"
            )));
        }
    }
    if let Some(max) = max_per_customer {
        let used =
            customer_code_uses(conn, &order.tenant_id, code_id, &order.customer_id, now).await?;
        if used >= max {
            return Err(DbError::Conflict(format!(
                "the discount code can be used {max} times per customer, and this customer has \
                 used it {used} times (paid or in a checkout not yet paid)"
            )));
        }
    }
    Ok(())
}

/// Holds order `id`'s row for the rest of the caller's transaction (a write that changes
/// nothing: SQLite's write transactions are serialised anyway; PostgreSQL locks the row).
pub(super) async fn lock_order(conn: &mut sqlx::AnyConnection, id: &str) -> DbResult<()> {
    sqlx::query("UPDATE orders SET updated_at = updated_at WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Order `id` with its lines, read in the caller's transaction, as an event tells it.
pub(super) async fn order_in(conn: &mut sqlx::AnyConnection, id: &str) -> DbResult<EventObject> {
    let order: Order = sqlx::query_as(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(DbError::NotFound("order"))?;
    let lines: Vec<OrderLine> = sqlx::query_as(&format!(
        "SELECT {LINE_COLUMNS} FROM order_lines WHERE order_id = $1 ORDER BY line_no"
    ))
    .bind(id)
    .fetch_all(conn)
    .await?;
    Ok(EventObject::Order { order, lines })
}

/// Revokes at `now` what order `order_id` granted and is not revoked yet, each with its
/// `entitlement.revoked` event, in the caller's transaction. Returns how many.
pub(super) async fn revoke_order_entitlements(
    conn: &mut sqlx::AnyConnection,
    order_id: &str,
    now: i64,
) -> DbResult<u64> {
    end_order_entitlements(conn, order_id, now, true).await
}

/// Ends what order `order_id` granted at `now`: revoked (`revoke`), or expired now (a
/// subscription that ended), each with its `entitlement.revoked` event.
pub(super) async fn end_order_entitlements(
    conn: &mut sqlx::AnyConnection,
    order_id: &str,
    now: i64,
    revoke: bool,
) -> DbResult<u64> {
    let live: Vec<Entitlement> = sqlx::query_as(
        "SELECT id, tenant_id, playback_id, viewer, expires_at, created_at, revoked_at \
         FROM entitlements WHERE order_id = $1 AND revoked_at IS NULL \
         AND (expires_at IS NULL OR expires_at > $2)",
    )
    .bind(order_id)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    let mut ended = 0;
    for mut e in live {
        // Each row again under its guard: one another transaction ended first tells nothing.
        let sql = if revoke {
            e.revoked_at = Some(now);
            "UPDATE entitlements SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL"
        } else {
            e.expires_at = Some(now);
            "UPDATE entitlements SET expires_at = $1 WHERE id = $2 AND revoked_at IS NULL \
             AND (expires_at IS NULL OR expires_at > $1)"
        };
        let done = sqlx::query(sql)
            .bind(now)
            .bind(&e.id)
            .execute(&mut *conn)
            .await?;
        if done.rows_affected() == 1 {
            ended += 1;
            record_event(
                &mut *conn,
                "entitlement.revoked",
                &EventObject::Entitlement(e),
            )
            .await?;
        }
    }
    Ok(ended)
}

impl Db {
    pub async fn put_provider(&self, s: &ProviderSettings) -> DbResult<()> {
        sqlx::query(&format!(
            "INSERT INTO payment_providers ({PROVIDER_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (tenant_id, provider) DO UPDATE SET base_url = $3, kek_id = $4, \
             secret_key = $5, webhook_secret = $6, updated_at = $8"
        ))
        .bind(&s.tenant_id)
        .bind(&s.provider)
        .bind(&s.base_url)
        .bind(&s.kek_id)
        .bind(&s.secret_key)
        .bind(&s.webhook_secret)
        .bind(s.created_at)
        .bind(s.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn get_provider(
        &self,
        tenant_id: &str,
        provider: &str,
    ) -> DbResult<ProviderSettings> {
        sqlx::query_as(&format!(
            "SELECT {PROVIDER_COLUMNS} FROM payment_providers WHERE tenant_id = $1 AND provider = $2"
        ))
        .bind(tenant_id)
        .bind(provider)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(DbError::NotFound("payment provider"))
    }

    pub async fn list_providers(&self, tenant_id: &str) -> DbResult<Vec<ProviderSettings>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {PROVIDER_COLUMNS} FROM payment_providers WHERE tenant_id = $1 ORDER BY provider"
        ))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Stores a new order and its lines and closes its cart, in one transaction; a cart
    /// already checked out is a conflict. The order's discount code is reserved in the same
    /// transaction: its uses (paid orders, and checkouts not yet paid for up to
    /// [`CODE_HOLD_MS`]) stay within its total and per-customer limits however many buyers
    /// check out at once; otherwise the code is used up (a conflict).
    pub async fn create_order(&self, order: &Order, lines: &[OrderLine]) -> DbResult<()> {
        let mut tx = self.pool.begin().await?;
        let closed = sqlx::query(
            "UPDATE carts SET status = 'checked_out', customer_id = $1, updated_at = $2 \
             WHERE id = $3 AND tenant_id = $4 AND status = 'open'",
        )
        .bind(&order.customer_id)
        .bind(order.created_at)
        .bind(&order.cart_id)
        .bind(&order.tenant_id)
        .execute(&mut *tx)
        .await?;
        if closed.rows_affected() == 0 {
            return Err(DbError::Conflict("the cart is already checked out".into()));
        }
        if let Some(code) = &order.discount_code_id {
            reserve_code(&mut tx, order, code).await?;
        }
        sqlx::query(&format!(
            "INSERT INTO orders ({ORDER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
             $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)"
        ))
        .bind(&order.id)
        .bind(&order.tenant_id)
        .bind(&order.cart_id)
        .bind(&order.customer_id)
        .bind(&order.currency)
        .bind(&order.country)
        .bind(&order.region)
        .bind(&order.discount_code_id)
        .bind(order.subtotal)
        .bind(order.discount)
        .bind(order.tax)
        .bind(order.total)
        .bind(&order.mode)
        .bind(&order.provider)
        .bind(&order.provider_session)
        .bind(&order.payment_ref)
        .bind(&order.status)
        .bind(order.refunded)
        .bind(order.disputed)
        .bind(order.created_at)
        .bind(order.paid_at)
        .bind(order.updated_at)
        .execute(&mut *tx)
        .await?;
        for l in lines {
            sqlx::query(&format!(
                "INSERT INTO order_lines ({LINE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, \
                 $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)"
            ))
            .bind(&l.order_id)
            .bind(l.line_no)
            .bind(&l.price_id)
            .bind(&l.product_id)
            .bind(&l.product_name)
            .bind(&l.r#type)
            .bind(l.quantity)
            .bind(l.unit_amount)
            .bind(l.subtotal)
            .bind(l.discount)
            .bind(l.tax)
            .bind(l.total)
            .bind(l.tax_rate)
            .bind(&l.tax_behavior)
            .bind(l.rental_hours)
            .bind(&l.rental_starts)
            .bind(&l.billing_interval)
            .bind(l.trial_days)
            .bind(&l.tier)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The provider's checkout for an order.
    pub async fn set_order_session(&self, order_id: &str, session: &str) -> DbResult<()> {
        sqlx::query("UPDATE orders SET provider_session = $1, updated_at = $2 WHERE id = $3")
            .bind(session)
            .bind(now_ms())
            .bind(order_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Undoes an order the provider never took: deleted, its cart open again.
    pub async fn abandon_order(&self, order: &Order) -> DbResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM orders WHERE id = $1 AND status = 'pending'")
            .bind(&order.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE carts SET status = 'open', updated_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(&order.cart_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_order(&self, tenant_id: &str, id: &str) -> DbResult<Order> {
        self.tenant_row("orders", ORDER_COLUMNS, tenant_id, id, "order")
            .await
    }

    pub async fn list_orders(
        &self,
        tenant_id: &str,
        customer_id: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> DbResult<Vec<Order>> {
        let filter = customer_id.map(|c| ("customer_id", c));
        self.tenant_page("orders", ORDER_COLUMNS, tenant_id, filter, after, limit)
            .await
    }

    pub async fn order_lines(&self, order_id: &str) -> DbResult<Vec<OrderLine>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {LINE_COLUMNS} FROM order_lines WHERE order_id = $1 ORDER BY line_no"
        ))
        .bind(order_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Paid orders of `customer_id` that used code `code_id`.
    /// How many times `customer_id` has used code `code_id`: paid orders (refunded since or
    /// not) and checkouts not yet paid for, up to [`CODE_HOLD_MS`] old.
    pub async fn code_uses_by_customer(
        &self,
        tenant_id: &str,
        code_id: &str,
        customer_id: &str,
    ) -> DbResult<i64> {
        let mut conn = self.pool.acquire().await?;
        customer_code_uses(&mut conn, tenant_id, code_id, customer_id, now_ms()).await
    }

    /// The order is paid: a pending order (or a failed or given-up one that was paid after
    /// all, such as a crypto payment resolved after its charge expired) becomes `paid` and
    /// its customer is entitled to what its lines' products grant (rentals for their hours,
    /// from now or from the first play; subscriptions to the end of the period paid, as far
    /// as known, plus `grace_ms`); one refunded in full before this becomes `refunded` and
    /// grants nothing. Says what it did; a paid or refunded order is left as it is.
    pub async fn mark_order_paid(
        &self,
        tenant_id: &str,
        order_id: &str,
        payment_ref: Option<&str>,
        grace_ms: i64,
    ) -> DbResult<String> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        // One statement decides, on the row as it is once locked: a refund that came first
        // (the provider's events may arrive in any order) is seen here.
        let changed = sqlx::query(
            "UPDATE orders SET status = CASE WHEN refunded >= total AND total > 0 \
             THEN 'refunded' ELSE 'paid' END, paid_at = $1, updated_at = $1, \
             payment_ref = COALESCE($2, payment_ref) \
             WHERE id = $3 AND tenant_id = $4 AND status IN ('pending', 'failed', 'canceled')",
        )
        .bind(now)
        .bind(payment_ref)
        .bind(order_id)
        .bind(tenant_id)
        .execute(&mut *tx)
        .await?;
        let order: Order = sqlx::query_as(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1 AND tenant_id = $2"
        ))
        .bind(order_id)
        .bind(tenant_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(DbError::NotFound("order"))?;
        if changed.rows_affected() == 0 {
            return Ok(format!("order already {}", order.status));
        }
        if order.status == "refunded" {
            tx.commit().await?;
            return Ok("refunded before it was paid: nothing granted".into());
        }
        let lines: Vec<OrderLine> = sqlx::query_as(&format!(
            "SELECT {LINE_COLUMNS} FROM order_lines WHERE order_id = $1 ORDER BY line_no"
        ))
        .bind(order_id)
        .fetch_all(&mut *tx)
        .await?;
        // A subscription's own events may have come first and told its period.
        let period_end: Option<i64> = sqlx::query_as::<_, (Option<i64>,)>(
            "SELECT current_period_end FROM subscriptions WHERE order_id = $1",
        )
        .bind(order_id)
        .fetch_optional(&mut *tx)
        .await?
        .and_then(|(e,)| e);
        let mut granted = 0;
        for line in &lines {
            let (all,): (i64,) = sqlx::query_as("SELECT all_content FROM products WHERE id = $1")
                .bind(&line.product_id)
                .fetch_optional(&mut *tx)
                .await?
                .unwrap_or((0,));
            let ids: Vec<String> = if all != 0 {
                vec!["*".into()]
            } else {
                sqlx::query_as::<_, (String,)>(
                    "SELECT playback_id FROM product_playback_ids WHERE product_id = $1",
                )
                .bind(&line.product_id)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .map(|(i,)| i)
                .collect()
            };
            let window = line.rental_hours.map(|h| h * 3_600_000);
            let (expires_at, play_window) = match (window, line.rental_starts.as_deref()) {
                (Some(w), Some("first_play")) => (None, Some(w)),
                (Some(w), _) => (Some(now + w), None),
                (None, _) if line.billing_interval.is_some() => {
                    (Some(period_end.unwrap_or(now).max(now) + grace_ms), None)
                }
                (None, _) => (None, None),
            };
            // A tier ("720p") caps what the entitlement plays; none plays everything.
            let max_lines = line
                .tier
                .strip_suffix('p')
                .and_then(|l| l.parse::<i64>().ok());
            for playback_id in ids {
                let e = Entitlement {
                    id: new_id(),
                    tenant_id: tenant_id.to_string(),
                    playback_id,
                    viewer: order.customer_id.clone(),
                    expires_at,
                    created_at: now,
                    revoked_at: None,
                };
                sqlx::query(
                    "INSERT INTO entitlements (id, tenant_id, playback_id, viewer, expires_at, \
                     created_at, revoked_at, order_id, play_window_ms, max_lines) \
                     VALUES ($1, $2, $3, $4, $5, $6, NULL, $7, $8, $9)",
                )
                .bind(&e.id)
                .bind(tenant_id)
                .bind(&e.playback_id)
                .bind(&e.viewer)
                .bind(expires_at)
                .bind(now)
                .bind(order_id)
                .bind(play_window)
                .bind(max_lines)
                .execute(&mut *tx)
                .await?;
                record_event(&mut tx, "entitlement.granted", &EventObject::Entitlement(e)).await?;
                granted += 1;
            }
        }
        if let Some(code) = &order.discount_code_id {
            sqlx::query("UPDATE discount_codes SET redemptions = redemptions + 1 WHERE id = $1")
                .bind(code)
                .execute(&mut *tx)
                .await?;
        }
        record_event(
            &mut tx,
            "order.paid",
            &EventObject::Order {
                order: order.clone(),
                lines,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(format!("paid: {granted} entitlements granted"))
    }

    /// The provider says `refunded_total` of the order has been refunded so far (its running
    /// total, so late and repeated events change nothing). In full, the order is `refunded`
    /// and its entitlements are revoked now; in part, access stays.
    pub async fn record_refund(
        &self,
        tenant_id: &str,
        order_id: &str,
        refunded_total: i64,
    ) -> DbResult<String> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        // The row is held first (PostgreSQL locks it at this UPDATE), so what it held before
        // is not another refund's view of it.
        lock_order(&mut tx, order_id).await?;
        let before: Option<(i64,)> =
            sqlx::query_as("SELECT refunded FROM orders WHERE id = $1 AND tenant_id = $2")
                .bind(order_id)
                .bind(tenant_id)
                .fetch_optional(&mut *tx)
                .await?;
        // A pending order keeps its status: the paid event that follows sees the refund.
        let done = sqlx::query(
            "UPDATE orders SET \
             refunded = CASE WHEN refunded > $1 THEN refunded \
                 WHEN $1 > total THEN total ELSE $1 END, \
             status = CASE WHEN status = 'paid' AND $1 >= total AND total > 0 \
                 THEN 'refunded' ELSE status END, \
             updated_at = $2 WHERE id = $3 AND tenant_id = $4",
        )
        .bind(refunded_total)
        .bind(now)
        .bind(order_id)
        .bind(tenant_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(DbError::NotFound("order"));
        }
        let (refunded, total): (i64, i64) =
            sqlx::query_as("SELECT refunded, total FROM orders WHERE id = $1")
                .bind(order_id)
                .fetch_one(&mut *tx)
                .await?;
        let full = refunded >= total && total > 0;
        let mut revoked = 0;
        if full {
            revoked = revoke_order_entitlements(&mut tx, order_id, now).await?;
        }
        if before.is_some_and(|(b,)| refunded > b) {
            let order = order_in(&mut tx, order_id).await?;
            record_event(&mut tx, "order.refunded", &order).await?;
        }
        tx.commit().await?;
        Ok(if full {
            format!("refunded in full: {revoked} entitlements revoked")
        } else {
            format!("refunded {refunded} of {total}: access kept")
        })
    }

    /// A chargeback or dispute: access ends at the next key request.
    pub async fn record_dispute(&self, tenant_id: &str, order_id: &str) -> DbResult<String> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE orders SET disputed = 1, updated_at = $1 WHERE id = $2 AND tenant_id = $3",
        )
        .bind(now)
        .bind(order_id)
        .bind(tenant_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(DbError::NotFound("order"));
        }
        let revoked = revoke_order_entitlements(&mut tx, order_id, now).await?;
        tx.commit().await?;
        Ok(format!("disputed: {revoked} entitlements revoked"))
    }

    /// A pending order's payment failed or its checkout expired (`failed`, `canceled`).
    pub async fn end_pending_order(
        &self,
        tenant_id: &str,
        order_id: &str,
        status: &str,
    ) -> DbResult<String> {
        let done = sqlx::query(
            "UPDATE orders SET status = $1, updated_at = $2 \
             WHERE id = $3 AND tenant_id = $4 AND status = 'pending'",
        )
        .bind(status)
        .bind(now_ms())
        .bind(order_id)
        .bind(tenant_id)
        .execute(&self.pool)
        .await?;
        Ok(if done.rows_affected() == 1 {
            format!("order {status}")
        } else {
            "order was not pending: unchanged".into()
        })
    }

    /// Stores a delivery that failed verification (kept for the record, never processed).
    pub async fn store_unverified_event(
        &self,
        tenant_id: &str,
        provider: &str,
        body: &str,
        error: &str,
    ) -> DbResult<String> {
        let id = new_id();
        sqlx::query(&format!(
            "INSERT INTO webhook_events ({EVENT_COLUMNS}) \
             VALUES ($1, $2, $3, NULL, NULL, $4, 0, $5, $6, NULL, NULL, NULL)"
        ))
        .bind(&id)
        .bind(tenant_id)
        .bind(provider)
        .bind(body)
        .bind(error)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(id)
    }

    /// Stores a verified event once by its id and claims it for processing; a second copy
    /// finds the first (and claims it only if the first's claim lapsed unfinished).
    pub async fn claim_event(
        &self,
        tenant_id: &str,
        provider: &str,
        event_id: &str,
        kind: &str,
        body: &str,
    ) -> DbResult<Inbox> {
        let id = new_id();
        let now = now_ms();
        let inserted = sqlx::query(&format!(
            "INSERT INTO webhook_events ({EVENT_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, 1, NULL, $7, $7, NULL, NULL)"
        ))
        .bind(&id)
        .bind(tenant_id)
        .bind(provider)
        .bind(event_id)
        .bind(kind)
        .bind(body)
        .bind(now)
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => return Ok(Inbox::Claimed(id)),
            Err(e) if is_unique_violation(&e) => {}
            Err(e) => return Err(e.into()),
        }
        let (existing,): (String,) = sqlx::query_as(
            "SELECT id FROM webhook_events WHERE tenant_id = $1 AND provider = $2 \
             AND event_id = $3 AND verified = 1",
        )
        .bind(tenant_id)
        .bind(provider)
        .bind(event_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(if self.reclaim_event(&existing, now).await? {
            Inbox::Reclaimed(existing)
        } else {
            Inbox::Duplicate
        })
    }

    /// Claims a stored, unfinished event whose claim lapsed.
    async fn reclaim_event(&self, id: &str, now: i64) -> DbResult<bool> {
        let done = sqlx::query(
            "UPDATE webhook_events SET claimed_at = $1 WHERE id = $2 AND verified = 1 \
             AND processed_at IS NULL AND (claimed_at IS NULL OR claimed_at < $3)",
        )
        .bind(now)
        .bind(id)
        .bind(now - CLAIM_LAPSE_MS)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Claims a stored verified event again to replay it, unless another delivery holds a
    /// live claim on it.
    pub async fn claim_for_replay(&self, tenant_id: &str, id: &str) -> DbResult<WebhookEvent> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE webhook_events SET claimed_at = $1, processed_at = NULL \
             WHERE id = $2 AND tenant_id = $3 AND verified = 1 \
             AND (processed_at IS NOT NULL OR claimed_at IS NULL OR claimed_at < $4)",
        )
        .bind(now)
        .bind(id)
        .bind(tenant_id)
        .bind(now - CLAIM_LAPSE_MS)
        .execute(&self.pool)
        .await?;
        let event = self.get_webhook_event(tenant_id, id).await?;
        if event.verified == 0 {
            return Err(DbError::Conflict(
                "an event that failed verification is never processed".into(),
            ));
        }
        if done.rows_affected() == 0 {
            return Err(DbError::Conflict("the event is being processed now".into()));
        }
        Ok(event)
    }

    /// Records what processing a claimed event did (or, `ok` false, that it failed and may
    /// be claimed again at once).
    pub async fn finish_event(&self, id: &str, ok: bool, result: &str) -> DbResult<()> {
        let now = now_ms();
        // A failure never overwrites a success: another claim (a redelivery, after this one
        // lapsed) may have processed the event meanwhile.
        sqlx::query(if ok {
            "UPDATE webhook_events SET processed_at = $1, claimed_at = $2, result = $3 WHERE id = $4"
        } else {
            "UPDATE webhook_events SET processed_at = $1, claimed_at = $2, result = $3 \
             WHERE id = $4 AND processed_at IS NULL"
        })
        .bind(ok.then_some(now))
        // A failed claim lapses at once: the provider's retry takes it.
        .bind(if ok { now } else { 0 })
        .bind(result)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn get_webhook_event(&self, tenant_id: &str, id: &str) -> DbResult<WebhookEvent> {
        self.tenant_row(
            "webhook_events",
            EVENT_COLUMNS,
            tenant_id,
            id,
            "webhook event",
        )
        .await
    }

    pub async fn list_webhook_events(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> DbResult<Vec<WebhookEvent>> {
        self.tenant_page(
            "webhook_events",
            EVENT_COLUMNS,
            tenant_id,
            None,
            after,
            limit,
        )
        .await
    }
}

/// A renewal's order line, for [`Db::revenue_lines`].
#[derive(FromRow)]
struct RenewalLine {
    #[sqlx(flatten)]
    line: RevenueLine,
    period: i64,
    amount: i64,
}

/// One paid order line, for revenue figures.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct RevenueLine {
    pub order_id: String,
    pub customer_id: String,
    pub line_no: i64,
    pub product_id: String,
    pub product_name: String,
    pub currency: String,
    pub total: i64,
    pub order_total: i64,
    pub order_refunded: i64,
    pub paid_at: i64,
}

impl Db {
    /// The lines of `tenant_id`'s orders paid in `[from, to)` (refunded since or not), and
    /// of the subscription renewals paid then: each renewal is a purchase of its own
    /// (`order_id` `ord…#n`), its charge spread over the order's lines as their totals are.
    /// A subscription's first period counts what it charged (nothing in a free trial) and
    /// its own refunds.
    pub async fn revenue_lines(
        &self,
        tenant_id: &str,
        from: i64,
        to: i64,
    ) -> DbResult<Vec<RevenueLine>> {
        let mut lines: Vec<RevenueLine> = sqlx::query_as(
            "SELECT o.id AS order_id, o.customer_id, l.line_no, l.product_id, l.product_name, \
             o.currency, CASE WHEN t.order_id IS NULL THEN l.total ELSE 0 END AS total, \
             CASE WHEN t.order_id IS NULL THEN o.total ELSE 0 END AS order_total, \
             CASE WHEN o.mode = 'subscription' THEN COALESCE(p.refunded, 0) \
                 ELSE o.refunded END AS order_refunded, \
             o.paid_at FROM orders o JOIN order_lines l ON l.order_id = o.id \
             LEFT JOIN (SELECT DISTINCT order_id FROM order_lines WHERE trial_days > 0) t \
                 ON t.order_id = o.id AND o.mode = 'subscription' \
             LEFT JOIN subscription_payments p ON p.order_id = o.id AND p.period = 0 \
             WHERE o.tenant_id = $1 AND o.paid_at >= $2 AND o.paid_at < $3 \
             AND o.status IN ('paid', 'refunded') ORDER BY o.paid_at, o.id, l.line_no \
             LIMIT 1000000",
        )
        .bind(tenant_id)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        let renewals: Vec<RenewalLine> = sqlx::query_as(
            "SELECT o.id AS order_id, o.customer_id, l.line_no, l.product_id, l.product_name, \
             o.currency, l.total, o.total AS order_total, p.refunded AS order_refunded, \
             p.paid_at, p.period, p.amount FROM subscription_payments p \
             JOIN orders o ON o.id = p.order_id JOIN order_lines l ON l.order_id = o.id \
             WHERE p.tenant_id = $1 AND p.paid_at >= $2 AND p.paid_at < $3 AND p.period > 0 \
             ORDER BY p.paid_at, o.id, p.period, l.line_no LIMIT 1000000",
        )
        .bind(tenant_id)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        for group in
            renewals.chunk_by(|a, b| a.line.order_id == b.line.order_id && a.period == b.period)
        {
            let amount = group[0].amount;
            let whole: i64 = group.iter().map(|r| r.line.total.max(0)).sum();
            let mut left = amount;
            for (n, r) in group.iter().enumerate() {
                // In proportion to the line's total; the last line takes what rounding left.
                let share = if n + 1 == group.len() {
                    left
                } else if whole > 0 {
                    i64::try_from(
                        i128::from(amount) * i128::from(r.line.total.max(0)) / i128::from(whole),
                    )
                    .unwrap_or(0)
                } else {
                    amount / group.len() as i64
                };
                left -= share;
                lines.push(RevenueLine {
                    order_id: format!("{}#{}", r.line.order_id, r.period),
                    total: share,
                    order_total: amount,
                    ..r.line.clone()
                });
            }
        }
        Ok(lines)
    }

    /// (product id, playback id) of every product of the tenant that names playback ids.
    pub async fn product_playback_ids(&self, tenant_id: &str) -> DbResult<Vec<(String, String)>> {
        Ok(sqlx::query_as(
            "SELECT p.product_id, p.playback_id FROM product_playback_ids p \
             JOIN products r ON r.id = p.product_id WHERE r.tenant_id = $1",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Views started in `[from, to)` per playback id (from the analytics roll-ups).
    pub async fn views_by_playback_id(
        &self,
        tenant_id: &str,
        from: i64,
        to: i64,
    ) -> DbResult<Vec<(String, i64)>> {
        Ok(sqlx::query_as(
            "SELECT playback_id, CAST(SUM(views) AS BIGINT) FROM analytics_minutes \
             WHERE tenant_id = $1 AND minute >= $2 AND minute < $3 GROUP BY playback_id",
        )
        .bind(tenant_id)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?)
    }
}
