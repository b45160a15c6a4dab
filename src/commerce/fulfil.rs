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
    /// The order is not ready for it yet (its checkout is still being opened).
    #[error("{0}")]
    NotYet(String),
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
        (None, Some(r), _) => {
            db.order_of_subscription(tenant_id, provider.name(), r)
                .await?
        }
        // A dispute names only its charge and payment intent.
        (None, None, Some(pi)) => db.order_of_payment(tenant_id, provider.name(), pi).await?,
        (None, None, None) => None,
    };
    let Some(order_id) = known.as_deref() else {
        return Ok(format!("{}: names no Ferrocast order", event.kind));
    };
    let order = match db.get_order(tenant_id, order_id).await {
        Ok(o) => o,
        Err(DbError::NotFound(_)) => return Ok(format!("{}: no such order here", event.kind)),
        Err(e) => return Err(e.into()),
    };
    // An event names an order by ids anyone can put on a payment (a Payment Link's
    // client_reference_id, a PayPal custom_id): it is believed only from the order's own
    // provider, and a payment only from the order's own checkout, for the order's amount.
    if order.provider != provider.name() {
        return Ok(format!(
            "{}: the order is paid through {}: ignored",
            event.kind, order.provider
        ));
    }
    let settles = matches!(
        action,
        Action::Paid { .. } | Action::Capture { .. } | Action::Failed | Action::Expired
    );
    if settles {
        let Some(session) = order.provider_session.as_deref() else {
            return Err(FulfilError::NotYet(
                "the order's checkout is still being opened".into(),
            ));
        };
        if event.session_ref.as_deref() != Some(session) {
            tracing::warn!(order = order_id, event = %event.id, "a payment event from another checkout than the order's");
            return Ok(format!(
                "{}: not from the order's checkout: ignored",
                event.kind
            ));
        }
    }
    if let (Action::Paid { .. }, Some((currency, paid)), "payment") =
        (&action, &event.amount, order.mode.as_str())
        && (!currency.eq_ignore_ascii_case(&order.currency) || *paid != order.total)
    {
        tracing::warn!(order = order_id, event = %event.id, paid, %currency, "a payment of another amount than the order's");
        return Ok(format!(
            "{}: {paid} {currency} paid for an order of {} {}: nothing granted",
            event.kind, order.total, order.currency
        ));
    }
    // An approved payment is taken now; what the capture says is what happened.
    if let Action::Capture { provider_order } = &action {
        if order.status != "pending" {
            return Ok(format!(
                "{}: the order is {} already",
                event.kind, order.status
            ));
        }
        action = provider
            .capture(provider_order, order_id, &event.id)
            .await?;
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
            at_ms,
            payment,
        } => {
            // The period's charge first: a refund of it may already be on its way.
            if let Some(p) = &payment {
                db.record_period_payment(
                    tenant_id,
                    provider.name(),
                    order_id,
                    &p.payment_ref,
                    p.invoice_ref.as_deref(),
                    p.first,
                    (p.amount, &p.currency),
                    p.period_end_ms,
                )
                .await?;
            }
            let state = SubscriptionState {
                provider_ref: &provider_ref,
                status: &status,
                current_period_end: period_end_ms,
                cancel_at_period_end,
                at_ms,
            };
            match db.note_subscription(tenant_id, order_id, &state).await {
                Ok(sub) => db.apply_subscription_access(&sub, grace_ms).await,
                Err(e) => Err(e),
            }
        }
        Action::Wait => Ok("payment not settled yet: waiting".into()),
        Action::Failed => db.end_pending_order(tenant_id, order_id, "failed").await,
        Action::Expired => db.end_pending_order(tenant_id, order_id, "canceled").await,
        // A subscription's charge is one period's: refunded as that period.
        Action::Refunded { total } => match event.payment_ref.as_deref() {
            Some(pi)
                if db
                    .period_payment(tenant_id, provider.name(), pi)
                    .await?
                    .is_some() =>
            {
                db.record_period_refund(tenant_id, provider.name(), pi, total)
                    .await
            }
            _ => db.record_refund(tenant_id, order_id, total).await,
        },
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
