//! The payment provider seam: what checkout, refunds, subscription cancels and webhooks in
//! need from Stripe (stripe.rs), PayPal Orders v2 (paypal.rs) or Coinbase Commerce
//! (coinbase.rs). Each provider turns its own events into one [`ProviderEvent`]: the order
//! it names (directly, or through a subscription or payment the order holds) and an
//! [`Action`] on it, which commerce/fulfil.rs applies the same way whoever sent it.

use async_trait::async_trait;
use http::HeaderMap;

use super::{coinbase, paypal, stripe};
use crate::db;

/// The providers Ferrocast speaks, by the name in URLs and settings.
pub const NAMES: [&str; 3] = ["stripe", "paypal", "coinbase"];

/// Why a call to a provider failed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Not reached, or it answered 5xx/429 through every attempt: try again later.
    #[error("{provider} could not be reached: {message}")]
    Unreachable {
        provider: &'static str,
        message: String,
    },
    /// It answered with an error (a 4xx, or an answer that says nothing usable).
    #[error("{provider} said {status}: {message}")]
    Refused {
        provider: &'static str,
        status: u16,
        message: String,
    },
    /// The provider has no such operation (crypto charges have no refund API).
    #[error("{0}")]
    Unsupported(String),
}

/// Why a webhook delivery is not taken.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The delivery does not verify: refused and kept as unverified.
    #[error("{0}")]
    Invalid(String),
    /// The provider's verification service could not be asked: the provider retries.
    #[error("verification unavailable: {0}")]
    Unavailable(String),
}

/// The provider's hosted checkout for an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The provider's id for it (a Checkout Session, a PayPal order, a charge).
    pub id: String,
    /// Where the buyer goes to pay.
    pub url: String,
}

/// What an event does to its order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Paid: `payment_ref` is what a refund names (payment intent, capture, charge).
    Paid {
        payment_ref: Option<String>,
    },
    /// The buyer approved a payment that Ferrocast must now take (PayPal's approved
    /// order, captured by [`PaymentProvider::capture`]).
    Capture {
        provider_order: String,
    },
    /// Paid later, or not: nothing yet.
    Wait,
    Failed,
    Expired,
    /// `total` refunded so far.
    Refunded {
        total: i64,
    },
    Disputed,
    /// What the provider says of the order's subscription now.
    Subscription {
        provider_ref: String,
        status: String,
        period_end_ms: Option<i64>,
        cancel_at_period_end: Option<bool>,
        /// When the provider said so (milliseconds), to order late events.
        at_ms: Option<i64>,
        /// The charge of a period paid (Stripe's `invoice.paid`): what a refund or
        /// dispute of that period names.
        payment: Option<PeriodPayment>,
    },
    /// A type Ferrocast does not act on (stored, answered 200).
    Ignore,
}

/// One period of a subscription, paid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeriodPayment {
    /// What a refund names (Stripe's payment intent).
    pub payment_ref: String,
    /// The provider's invoice for the period.
    pub invoice_ref: Option<String>,
    /// Minor units of `currency` (ISO 4217, upper case).
    pub amount: i64,
    pub currency: String,
    /// The subscription's first charge (the order's own), not a renewal.
    pub first: bool,
    /// The end of the period paid (milliseconds).
    pub period_end_ms: Option<i64>,
}

/// A verified event, as every provider's reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderEvent {
    /// The provider's event id: processed once per tenant and provider.
    pub id: String,
    pub kind: String,
    /// The Ferrocast order it names, if it names one.
    pub order_id: Option<String>,
    /// Else the provider's subscription, whose order is looked up.
    pub subscription_ref: Option<String>,
    /// Else the payment (a dispute names only that).
    pub payment_ref: Option<String>,
    /// The checkout it comes from (a Checkout Session, a PayPal order, a charge): a payment
    /// pays only the order whose checkout it is, never one it merely names.
    pub session_ref: Option<String>,
    /// What was paid: (ISO currency, minor units), where the event says.
    pub amount: Option<(String, i64)>,
    pub action: Action,
}

/// One tenant's account at a provider.
#[async_trait]
pub trait PaymentProvider: Send + Sync {
    /// `stripe`, `paypal` or `coinbase`.
    fn name(&self) -> &'static str;

    /// Whether recurring prices can be sold through it.
    fn sells_subscriptions(&self) -> bool;

    /// Opens the hosted checkout for `order`, charging its frozen amounts. Retried
    /// requests are the same checkout (idempotency keys made of the order id).
    async fn checkout(
        &self,
        order: &db::Order,
        lines: &[db::OrderLine],
        success_url: &str,
        cancel_url: &str,
    ) -> Result<Session, ProviderError>;

    /// Refunds `amount` of paid `order`; `key` makes a retried request the same refund.
    /// Returns the provider's refund id.
    async fn refund(
        &self,
        order: &db::Order,
        amount: i64,
        key: &str,
    ) -> Result<String, ProviderError>;

    /// Cancels subscription `provider_ref` at its period's end or now; returns (its
    /// status, whether it ends at the period's end).
    async fn cancel_subscription(
        &self,
        provider_ref: &str,
        at_period_end: bool,
    ) -> Result<(String, bool), ProviderError>;

    /// Checks that a delivery comes from the provider.
    async fn verify(&self, headers: &HeaderMap, body: &[u8], now_s: i64)
    -> Result<(), VerifyError>;

    /// Reads a verified delivery; none if it is not one of the provider's events.
    fn parse(&self, body: &[u8]) -> Option<ProviderEvent>;

    /// Takes an approved payment ([`Action::Capture`]) for `order_id`; `attempt` names
    /// this approval (a retried delivery of it is the same capture). Returns what that
    /// makes of the order. Providers that need no capture have nothing to take.
    async fn capture(
        &self,
        provider_order: &str,
        order_id: &str,
        attempt: &str,
    ) -> Result<Action, ProviderError> {
        let _ = (provider_order, order_id, attempt);
        Ok(Action::Wait)
    }
}

/// A tenant's provider settings with their secrets opened.
pub struct Credentials<'a> {
    pub provider: &'a str,
    pub base_url: &'a str,
    /// Stripe's secret key, Coinbase's API key, PayPal's `client_id:client_secret`.
    pub secret_key: &'a str,
    /// Stripe's and Coinbase's webhook signing secrets, PayPal's webhook id.
    pub webhook_secret: &'a str,
}

/// The client for a tenant's provider; none for a name Ferrocast does not speak.
pub fn open(c: &Credentials<'_>) -> Option<Box<dyn PaymentProvider>> {
    Some(match c.provider {
        "stripe" => Box::new(stripe::Client::new(
            c.base_url,
            c.secret_key,
            c.webhook_secret,
        )),
        "paypal" => {
            let (id, secret) = c.secret_key.split_once(':')?;
            Box::new(paypal::Client::new(
                c.base_url,
                id,
                secret,
                c.webhook_secret,
            ))
        }
        "coinbase" => Box::new(coinbase::Client::new(
            c.base_url,
            c.secret_key,
            c.webhook_secret,
        )),
        _ => return None,
    })
}

/// Each provider's production API: a tenant's base URL must be it (a tenant must not make
/// this server call hosts of its choice). PayPal's sandbox is a real PayPal too.
pub fn official_base_urls(provider: &str) -> &'static [&'static str] {
    match provider {
        "stripe" => &["https://api.stripe.com"],
        "paypal" => &[
            "https://api-m.paypal.com",
            "https://api-m.sandbox.paypal.com",
        ],
        "coinbase" => &["https://api.commerce.coinbase.com"],
        _ => &[],
    }
}

/// HTTP calls with bounded retries, shared by the providers' clients.
pub(super) mod http_calls {
    use std::time::Duration;

    use serde_json::Value;

    use super::ProviderError;

    /// Attempts per call; each waits longer (0.2 s, 0.4 s) and reuses the idempotency key.
    pub const ATTEMPTS: u32 = 3;

    pub fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("HTTP client")
    }

    /// Sends what `build` makes, up to [`ATTEMPTS`] times: network failures, unreadable
    /// answers and 5xx/429 are retried, a 4xx never. `message` reads an error body.
    pub async fn send(
        provider: &'static str,
        build: impl Fn() -> reqwest::RequestBuilder,
        message: impl Fn(&Value) -> Option<String>,
    ) -> Result<Value, ProviderError> {
        send_with(provider, build, message, true).await
    }

    /// [`send`], retrying a request that may have reached the provider only when
    /// `idempotent`: a call without an idempotency key is retried only when it could not
    /// connect.
    pub async fn send_with(
        provider: &'static str,
        build: impl Fn() -> reqwest::RequestBuilder,
        message: impl Fn(&Value) -> Option<String>,
        idempotent: bool,
    ) -> Result<Value, ProviderError> {
        let unreachable = |message: String| ProviderError::Unreachable { provider, message };
        let mut last = None;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << (attempt - 1))).await;
            }
            let resp = match build().send().await {
                Ok(r) => r,
                Err(e) if idempotent || e.is_connect() => {
                    last = Some(unreachable(e.to_string()));
                    continue;
                }
                Err(e) => return Err(unreachable(e.to_string())),
            };
            let status = resp.status().as_u16();
            let body: Value = match resp.bytes().await {
                Ok(b) if b.is_empty() => Value::Null,
                Ok(b) => match serde_json::from_slice(&b) {
                    Ok(v) => v,
                    Err(_) if status >= 500 || status == 429 => Value::Null,
                    Err(e) => {
                        last = Some(unreachable(format!("unreadable answer: {e}")));
                        continue;
                    }
                },
                Err(e) => {
                    last = Some(unreachable(format!("unreadable answer: {e}")));
                    continue;
                }
            };
            if (200..300).contains(&status) {
                return Ok(body);
            }
            let err = ProviderError::Refused {
                provider,
                status,
                message: message(&body)
                    .unwrap_or_else(|| "no message".into())
                    .chars()
                    .take(300)
                    .collect(),
            };
            if (status == 429 || status >= 500) && idempotent {
                last = Some(err);
                continue;
            }
            return Err(err);
        }
        Err(last.expect("at least one attempt"))
    }
}
