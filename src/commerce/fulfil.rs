//! What a verified provider event does to its order: paid (entitlements granted), refunded
//! (revoked when in full), disputed (revoked), failed or expired. Every step is idempotent
//! and order-free (db/orders.rs), so duplicates and late events change nothing more.

use super::stripe::{Action, Event};
use crate::db::{Db, DbError, DbResult};

/// Applies a Stripe event to the order it names; returns what it did, in words.
pub async fn apply_stripe(db: &Db, tenant_id: &str, event: &Event) -> DbResult<String> {
    let action = event.action();
    if action == Action::Ignore {
        return Ok(format!("{}: not acted on", event.kind));
    }
    let Some(order_id) = event.order_id() else {
        return Ok(format!("{}: names no Ferrocast order", event.kind));
    };
    let result = match action {
        Action::Paid { payment_ref } => {
            db.mark_order_paid(tenant_id, order_id, payment_ref.as_deref())
                .await
        }
        Action::Wait => Ok("payment not settled yet: waiting".into()),
        Action::Failed => db.end_pending_order(tenant_id, order_id, "failed").await,
        Action::Expired => db.end_pending_order(tenant_id, order_id, "canceled").await,
        Action::Refunded { total } => db.record_refund(tenant_id, order_id, total).await,
        Action::Disputed => db.record_dispute(tenant_id, order_id).await,
        Action::Ignore => Ok(format!("{}: not acted on", event.kind)),
    };
    match result {
        // An order of another tenant, or none: nothing to do, and nothing to retry.
        Err(DbError::NotFound(_)) => Ok(format!("{}: no such order here", event.kind)),
        other => other,
    }
}
