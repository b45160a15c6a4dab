//! What a verified provider event, whoever sent it, does to its order: paid (entitlements
//! granted), refunded (revoked when in full), disputed (revoked), failed or expired. Every
//! step is idempotent and order-free (db/orders.rs), so duplicates and late events change
//! nothing more.

use super::provider::{Action, PaymentProvider, ProviderError, ProviderEvent};
use crate::db::{Db, DbError, SubscriptionState};

/// Why an event could not be applied (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum FulfilError {
    #[error(transparent)]
    Db(#[from] DbError),
    /// A call the event needs (PayPal's capture) failed.
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

/// Applies a provider's event to the order it names; returns what it did, in words. A
/// subscription's access lasts `grace_ms` past the end of the period paid.
pub async fn apply(
    db: &Db,
    provider: &dyn PaymentProvider,
    tenant_id: &str,
    event: &ProviderEvent,
    grace_ms: i64,
) -> Result<String, FulfilError> {
    let mut action = event.action.clone();
    if action == Action::Ignore {
        return Ok(format!("{}: not acted on", event.kind));
    }
    let known = match (
        event.order_id.as_deref(),
        event.subscription_ref.as_deref(),
        event.payment_ref.as_deref(),
    ) {
        (Some(o), _, _) => Some(o.to_string()),
        (None, Some(r), _) => db.order_of_subscription(tenant_id, r).await?,
        // A dispute names only its charge and payment intent.
        (None, None, Some(pi)) => db.order_of_payment(tenant_id, pi).await?,
        (None, None, None) => None,
    };
    let Some(order_id) = known.as_deref() else {
        return Ok(format!("{}: names no Ferrocast order", event.kind));
    };
    // An approved payment is taken now; what the capture says is what happened.
    if let Action::Capture { provider_order } = &action {
        match db.get_order(tenant_id, order_id).await {
            Ok(o) if o.provider_session.as_deref() == Some(provider_order.as_str()) => {
                if o.status != "pending" {
                    return Ok(format!("{}: the order is {} already", event.kind, o.status));
                }
                action = provider.capture(provider_order, order_id).await?;
            }
            Ok(_) | Err(DbError::NotFound(_)) => {
                return Ok(format!("{}: no such order here", event.kind));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let result = match action {
        Action::Paid { payment_ref } => {
            db.mark_order_paid(tenant_id, order_id, payment_ref.as_deref(), grace_ms)
                .await
        }
        Action::Subscription {
            provider_ref,
            status,
            period_end_ms,
            cancel_at_period_end,
        } => {
            let state = SubscriptionState {
                provider_ref: &provider_ref,
                status: &status,
                current_period_end: period_end_ms,
                cancel_at_period_end,
            };
            match db.note_subscription(tenant_id, order_id, &state).await {
                Ok(sub) => db.apply_subscription_access(&sub, grace_ms).await,
                Err(e) => Err(e),
            }
        }
        Action::Wait => Ok("payment not settled yet: waiting".into()),
        Action::Failed => db.end_pending_order(tenant_id, order_id, "failed").await,
        Action::Expired => db.end_pending_order(tenant_id, order_id, "canceled").await,
        Action::Refunded { total } => db.record_refund(tenant_id, order_id, total).await,
        Action::Disputed => db.record_dispute(tenant_id, order_id).await,
        Action::Ignore | Action::Capture { .. } => Ok(format!("{}: not acted on", event.kind)),
    };
    match result {
        // An order of another tenant, or none: nothing to do, and nothing to retry.
        Err(DbError::NotFound(_)) => Ok(format!("{}: no such order here", event.kind)),
        Ok(done) => {
            // Its invoice once paid, a credit note for a refund: issued once, so an event
            // retried after a failure here issues what is missing and nothing twice.
            super::invoicing::settle(db, tenant_id, order_id).await?;
            Ok(done)
        }
        Err(e) => Err(e.into()),
    }
}
