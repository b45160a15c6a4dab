//! Stripe: the webhook signature scheme, the events Ferrocast acts on, and the few API calls
//! it makes (Checkout Sessions, Refunds, subscription cancel), form-encoded as Stripe's API
//! wants, each POST with an `Idempotency-Key` so a retry never charges or refunds twice.
//!
//! Ferrocast prices the order itself (money.rs); the Checkout Session charges those frozen
//! amounts: one line item per order line, its amount the line's total (discount taken off,
//! tax in), so Stripe's `amount_total` is the order's total to the minor unit.

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use serde_json::Value;
use sha2::Sha256;

use super::provider::{
    Action, PaymentProvider, PeriodPayment, ProviderError, ProviderEvent, Session, VerifyError,
    http_calls,
};
use crate::db;

/// How old a signed delivery may be (Stripe's default tolerance).
pub const TOLERANCE_S: i64 = 300;

/// Why a delivery's `Stripe-Signature` does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no Stripe-Signature header")]
    Missing,
    #[error("Stripe-Signature has no timestamp or no v1 signature")]
    Malformed,
    #[error("the signature's timestamp is more than {TOLERANCE_S} s from now")]
    Stale,
    #[error("no v1 signature matches")]
    Mismatch,
}

/// Checks `header` (`t=…,v1=…[,v1=…]`) against `body`: HMAC-SHA256 of `t.body` under
/// `secret`, any `v1` may match (a secret being rolled signs with both), compared in constant
/// time, and `t` within [`TOLERANCE_S`] of `now_s`.
pub fn verify_signature(
    header: Option<&str>,
    body: &[u8],
    secret: &str,
    now_s: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',').take(16) {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", s)) => {
                if let Ok(bytes) = hex::decode(s) {
                    signatures.push(bytes);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if (now_s - timestamp).abs() > TOLERANCE_S {
        return Err(SignatureError::Stale);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    let mut ok = subtle::Choice::from(0);
    for s in &signatures {
        ok |= subtle::ConstantTimeEq::ct_eq(expected.as_slice(), s.as_slice());
    }
    if bool::from(ok) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// A verified event, read as far as Ferrocast needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: String,
    pub kind: String,
    /// When Stripe made the event (Unix seconds).
    pub created: Option<i64>,
    pub object: Value,
}

impl Event {
    /// Reads an event body; none if it is not a Stripe event.
    pub fn parse(body: &[u8]) -> Option<Self> {
        let v: Value = serde_json::from_slice(body).ok()?;
        let id = v.get("id")?.as_str()?;
        let kind = v.get("type")?.as_str()?;
        if id.is_empty() || id.len() > 255 || kind.len() > 255 || v.get("object")? != "event" {
            return None;
        }
        Some(Self {
            id: id.into(),
            kind: kind.into(),
            created: v.get("created").and_then(Value::as_i64),
            object: v.get("data")?.get("object")?.clone(),
        })
    }

    /// The order an event is about: `client_reference_id` of a Checkout Session, else the
    /// `order_id` of its metadata (Ferrocast sets it on sessions, payment intents and
    /// subscriptions, and Stripe copies a payment intent's metadata to its charges).
    pub fn order_id(&self) -> Option<&str> {
        fn metadata(m: Option<&Value>) -> Option<&str> {
            m?.get("order_id")?.as_str()
        }
        let o = &self.object;
        o.get("client_reference_id")
            .and_then(Value::as_str)
            .or_else(|| metadata(o.get("metadata")))
            // An invoice carries its subscription's metadata (API 2024-06-20, and later
            // under `parent`).
            .or_else(|| metadata(o.get("subscription_details")?.get("metadata")))
            .or_else(|| {
                metadata(
                    o.get("parent")?
                        .get("subscription_details")?
                        .get("metadata"),
                )
            })
            .filter(|s| !s.is_empty() && s.len() <= 64)
    }

    /// The payment intent an event names (`pi_…`): a charge's or a dispute's.
    pub fn payment_intent(&self) -> Option<&str> {
        self.str("payment_intent")
            .filter(|s| s.starts_with("pi_") && s.len() <= 255)
    }

    /// The subscription an event is about (`sub_…`).
    pub fn subscription_ref(&self) -> Option<&str> {
        let o = &self.object;
        match o.get("object").and_then(Value::as_str) {
            Some("subscription") => o.get("id").and_then(Value::as_str),
            _ => o.get("subscription").and_then(Value::as_str).or_else(|| {
                o.get("parent")?
                    .get("subscription_details")?
                    .get("subscription")?
                    .as_str()
            }),
        }
        .filter(|s| !s.is_empty() && s.len() <= 255)
    }

    /// A subscription's period end in milliseconds: `current_period_end` (on the
    /// subscription, or on its items in later API versions), or an invoice's latest line
    /// period's end.
    fn period_end_ms(&self) -> Option<i64> {
        let o = &self.object;
        let items = || {
            o.get("items")?
                .get("data")?
                .as_array()?
                .iter()
                .filter_map(|i| i.get("current_period_end")?.as_i64())
                .max()
        };
        let lines = || {
            o.get("lines")?
                .get("data")?
                .as_array()?
                .iter()
                .filter_map(|l| l.get("period")?.get("end")?.as_i64())
                .max()
        };
        let seconds = o
            .get("current_period_end")
            .and_then(Value::as_i64)
            .or_else(items)
            .or_else(lines)?;
        (0..=253_402_300_799)
            .contains(&seconds)
            .then(|| seconds * 1000)
    }

    fn created_ms(&self) -> Option<i64> {
        self.created
            .filter(|s| (0..=253_402_300_799).contains(s))
            .map(|s| s * 1000)
    }

    fn str(&self, field: &str) -> Option<&str> {
        self.object.get(field).and_then(Value::as_str)
    }

    fn int(&self, field: &str) -> Option<i64> {
        self.object.get(field).and_then(Value::as_i64)
    }

    /// The charge of a paid subscription invoice: its payment intent (`payment_intent` up
    /// to API 2025-03-31, then under `payments`), `amount_paid` and the period it pays. None
    /// for an invoice that charged nothing (a trial's).
    fn period_payment(&self) -> Option<PeriodPayment> {
        let o = &self.object;
        let later = || {
            o.get("payments")?
                .get("data")?
                .as_array()?
                .iter()
                .find_map(|p| p.get("payment")?.get("payment_intent")?.as_str())
        };
        let payment_ref = self
            .str("payment_intent")
            .or_else(later)
            .filter(|s| s.starts_with("pi_") && s.len() <= 255)?;
        let amount = self.int("amount_paid").filter(|a| *a > 0)?;
        let currency = self
            .str("currency")
            .filter(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic()))?;
        Some(PeriodPayment {
            payment_ref: payment_ref.into(),
            invoice_ref: self
                .str("id")
                .filter(|s| s.starts_with("in_") && s.len() <= 255)
                .map(Into::into),
            amount,
            currency: currency.to_ascii_uppercase(),
            first: self.str("billing_reason") == Some("subscription_create"),
            period_end_ms: self.period_end_ms(),
        })
    }

    /// The event as every provider's reads.
    pub fn into_provider_event(self) -> ProviderEvent {
        let session = self.object.get("object").and_then(Value::as_str) == Some("checkout.session");
        let amount = match (self.str("currency"), self.int("amount_total")) {
            (Some(c), Some(a)) if session => Some((c.to_ascii_uppercase(), a)),
            _ => None,
        };
        ProviderEvent {
            session_ref: self
                .str("id")
                .filter(|_| session)
                .filter(|s| s.len() <= 255)
                .map(Into::into),
            amount,
            order_id: self.order_id().map(Into::into),
            subscription_ref: self.subscription_ref().map(Into::into),
            payment_ref: self.payment_intent().map(Into::into),
            action: self.action(),
            id: self.id,
            kind: self.kind,
        }
    }

    /// What the event means for an order.
    pub fn action(&self) -> Action {
        match self.kind.as_str() {
            "checkout.session.completed" => match self.str("payment_status") {
                Some("paid") | Some("no_payment_required") => Action::Paid {
                    payment_ref: self
                        .str("payment_intent")
                        .or_else(|| self.str("subscription"))
                        .map(Into::into),
                },
                // Bank debits and the like: wait for async_payment_succeeded or _failed.
                _ => Action::Wait,
            },
            "checkout.session.async_payment_succeeded" => Action::Paid {
                payment_ref: self.str("payment_intent").map(Into::into),
            },
            "checkout.session.async_payment_failed" => Action::Failed,
            // A declined attempt inside Checkout: the buyer may try again there, so only the
            // session's own outcome (completed, async failed, expired) settles the order.
            "payment_intent.payment_failed" => Action::Wait,
            "checkout.session.expired" => Action::Expired,
            "charge.refunded" => match self.int("amount_refunded") {
                Some(total) if total >= 0 => Action::Refunded { total },
                _ => Action::Ignore,
            },
            "charge.dispute.created" => Action::Disputed,
            "customer.subscription.created"
            | "customer.subscription.updated"
            | "customer.subscription.deleted" => match self.subscription_ref() {
                Some(r) => Action::Subscription {
                    provider_ref: r.into(),
                    status: if self.kind == "customer.subscription.deleted" {
                        "canceled".into()
                    } else {
                        self.str("status")
                            .filter(|s| s.len() <= 32)
                            .unwrap_or("active")
                            .into()
                    },
                    period_end_ms: self.period_end_ms(),
                    cancel_at_period_end: self
                        .object
                        .get("cancel_at_period_end")
                        .and_then(Value::as_bool),
                    at_ms: self.created_ms(),
                    payment: None,
                },
                None => Action::Ignore,
            },
            // A renewal (or the first period) paid.
            "invoice.paid" => match self.subscription_ref() {
                Some(r) => Action::Subscription {
                    provider_ref: r.into(),
                    status: "active".into(),
                    period_end_ms: self.period_end_ms(),
                    cancel_at_period_end: None,
                    at_ms: self.created_ms(),
                    payment: self.period_payment(),
                },
                None => Action::Ignore,
            },
            _ => Action::Ignore,
        }
    }
}

/// Calls to one tenant's Stripe account.
#[derive(Debug, Clone)]
pub struct Client {
    base_url: String,
    secret_key: String,
    webhook_secret: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base_url: &str, secret_key: &str, webhook_secret: &str) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_string(),
            secret_key: secret_key.to_string(),
            webhook_secret: webhook_secret.to_string(),
            http: http_calls::client(),
        }
    }

    /// Sends `form` to `path` with `key` as Idempotency-Key; retries network failures and
    /// 5xx/429 answers, never a 4xx.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        form: &[(String, String)],
    ) -> Result<Value, ProviderError> {
        let url = format!("{}{path}", self.base_url);
        http_calls::send(
            "Stripe",
            || {
                self.http
                    .request(method.clone(), &url)
                    .bearer_auth(&self.secret_key)
                    .header("Idempotency-Key", key)
                    .header("Stripe-Version", "2024-06-20")
                    .form(form)
            },
            |body| body["error"]["message"].as_str().map(Into::into),
        )
        .await
    }

    async fn post(
        &self,
        path: &str,
        key: &str,
        form: &[(String, String)],
    ) -> Result<Value, ProviderError> {
        self.send(reqwest::Method::POST, path, key, form).await
    }
}

#[async_trait]
impl PaymentProvider for Client {
    fn name(&self) -> &'static str {
        "stripe"
    }

    fn sells_subscriptions(&self) -> bool {
        true
    }

    /// A Checkout Session for `order` (payment, or subscription when it has recurring lines).
    async fn checkout(
        &self,
        order: &db::Order,
        lines: &[db::OrderLine],
        success_url: &str,
        cancel_url: &str,
    ) -> Result<Session, ProviderError> {
        let currency = order.currency.to_ascii_lowercase();
        let mut form: Vec<(String, String)> = vec![
            ("mode".into(), order.mode.clone()),
            ("client_reference_id".into(), order.id.clone()),
            ("success_url".into(), success_url.into()),
            ("cancel_url".into(), cancel_url.into()),
            ("metadata[order_id]".into(), order.id.clone()),
            ("metadata[tenant_id]".into(), order.tenant_id.clone()),
        ];
        let copy_to = if order.mode == "subscription" {
            "subscription_data"
        } else {
            "payment_intent_data"
        };
        form.push((format!("{copy_to}[metadata][order_id]"), order.id.clone()));
        if let Some(days) = lines.iter().filter_map(|l| l.trial_days).max() {
            form.push((
                "subscription_data[trial_period_days]".into(),
                days.to_string(),
            ));
        }
        for (i, l) in lines.iter().enumerate() {
            let p = format!("line_items[{i}]");
            let name = if l.quantity > 1 {
                format!("{} × {}", l.product_name, l.quantity)
            } else {
                l.product_name.clone()
            };
            form.extend([
                (format!("{p}[quantity]"), "1".into()),
                (format!("{p}[price_data][currency]"), currency.clone()),
                (format!("{p}[price_data][unit_amount]"), l.total.to_string()),
                (format!("{p}[price_data][product_data][name]"), name),
                (
                    format!("{p}[price_data][product_data][metadata][product_id]"),
                    l.product_id.clone(),
                ),
            ]);
            if let Some(interval) = &l.billing_interval {
                form.push((
                    format!("{p}[price_data][recurring][interval]"),
                    interval.clone(),
                ));
            }
        }
        let body = self
            .post(
                "/v1/checkout/sessions",
                &format!("ferrocast-checkout-{}", order.id),
                &form,
            )
            .await?;
        match (body["id"].as_str(), body["url"].as_str()) {
            (Some(id), Some(url)) => Ok(Session {
                id: id.into(),
                url: url.into(),
            }),
            _ => Err(ProviderError::Refused {
                provider: "Stripe",
                status: 200,
                message: "the Checkout Session has no id or url".into(),
            }),
        }
    }

    /// Cancels subscription `provider_ref` at the end of its period (the customer keeps
    /// what they paid for), or at once. Returns (its status, whether it ends at period end).
    async fn cancel_subscription(
        &self,
        provider_ref: &str,
        at_period_end: bool,
    ) -> Result<(String, bool), ProviderError> {
        let path = format!("/v1/subscriptions/{provider_ref}");
        let body = if at_period_end {
            self.post(
                &path,
                &format!("ferrocast-cancel-{provider_ref}"),
                &[("cancel_at_period_end".into(), "true".into())],
            )
            .await?
        } else {
            self.send(
                reqwest::Method::DELETE,
                &path,
                &format!("ferrocast-end-{provider_ref}"),
                &[],
            )
            .await?
        };
        Ok((
            body["status"]
                .as_str()
                .unwrap_or("unknown")
                .chars()
                .take(32)
                .collect(),
            body["cancel_at_period_end"].as_bool().unwrap_or(false),
        ))
    }

    /// Refunds `amount` of the order's payment intent; `key` makes a retried request the
    /// same refund. Returns the refund's id.
    async fn refund(
        &self,
        order: &db::Order,
        amount: i64,
        key: &str,
    ) -> Result<String, ProviderError> {
        let Some(payment_intent) = order
            .payment_ref
            .as_deref()
            .filter(|p| p.starts_with("pi_"))
        else {
            return Err(ProviderError::Unsupported(
                "the order has no Stripe payment to refund".into(),
            ));
        };
        let form = vec![
            ("payment_intent".to_string(), payment_intent.to_string()),
            ("amount".into(), amount.to_string()),
        ];
        let body = self.post("/v1/refunds", key, &form).await?;
        body["id"]
            .as_str()
            .map(Into::into)
            .ok_or(ProviderError::Refused {
                provider: "Stripe",
                status: 200,
                message: "the refund has no id".into(),
            })
    }

    async fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now_s: i64,
    ) -> Result<(), VerifyError> {
        let signature = headers
            .get("stripe-signature")
            .and_then(|v| v.to_str().ok());
        verify_signature(signature, body, &self.webhook_secret, now_s)
            .map_err(|e| VerifyError::Invalid(e.to_string()))
    }

    fn parse(&self, body: &[u8]) -> Option<ProviderEvent> {
        Event::parse(body).map(Event::into_provider_event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, t: i64, body: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.{body}").as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn signatures_verify_by_stripes_scheme() {
        let body = r#"{"id":"evt_1"}"#;
        let good = sign("whsec_a", 1000, body);
        let header = format!("t=1000,v1={good}");
        assert_eq!(
            verify_signature(Some(&header), body.as_bytes(), "whsec_a", 1100),
            Ok(())
        );
        // Any of several v1 values; other schemes are ignored.
        let header = format!("t=1000,v0=abc,v1={},v1={good}", sign("old", 1000, body));
        assert_eq!(
            verify_signature(Some(&header), body.as_bytes(), "whsec_a", 1000),
            Ok(())
        );
        assert_eq!(
            verify_signature(Some(&header), b"{}", "whsec_a", 1000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(
                Some(&format!("t=1000,v1={good}")),
                body.as_bytes(),
                "whsec_a",
                1301
            ),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify_signature(
                Some(&format!("v1={good}")),
                body.as_bytes(),
                "whsec_a",
                1000
            ),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_signature(Some("t=1000"), body.as_bytes(), "whsec_a", 1000),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_signature(None, body.as_bytes(), "whsec_a", 1000),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn events_say_what_they_do_to_an_order() {
        let e = |kind: &str, object: Value| {
            Event::parse(
                serde_json::to_vec(
                    &serde_json::json!({"id": "evt_1", "object": "event", "type": kind, "data": {"object": object}}),
                )
                .unwrap()
                .as_slice(),
            )
            .unwrap()
        };
        let done = e(
            "checkout.session.completed",
            serde_json::json!({"client_reference_id": "ord", "payment_status": "paid", "payment_intent": "pi_1"}),
        );
        assert_eq!(done.order_id(), Some("ord"));
        assert_eq!(
            done.action(),
            Action::Paid {
                payment_ref: Some("pi_1".into())
            }
        );
        let unpaid = e(
            "checkout.session.completed",
            serde_json::json!({"client_reference_id": "ord", "payment_status": "unpaid"}),
        );
        assert_eq!(unpaid.action(), Action::Wait);
        let refund = e(
            "charge.refunded",
            serde_json::json!({"amount_refunded": 500, "metadata": {"order_id": "ord"}}),
        );
        assert_eq!(refund.order_id(), Some("ord"));
        assert_eq!(refund.action(), Action::Refunded { total: 500 });
        assert_eq!(
            e("customer.created", serde_json::json!({})).action(),
            Action::Ignore
        );
        assert!(Event::parse(b"{\"id\":\"x\",\"type\":\"t\"}").is_none());
        assert!(Event::parse(b"not json").is_none());
    }
}
