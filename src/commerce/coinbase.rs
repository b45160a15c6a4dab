//! Crypto payments through Coinbase Commerce charges: Ferrocast creates a fixed-price charge
//! in the order's currency and sends the buyer to its hosted page; Coinbase watches the
//! chain and reports the outcome by webhook (`charge:confirmed` pays the order). Ferrocast
//! never runs a node or holds a wallet.
//!
//! Deliveries are signed with `X-CC-Webhook-Signature`: the hex HMAC-SHA256 of the raw body
//! under the tenant's shared secret. Coinbase Commerce has no refund API, so a crypto order
//! is refunded from the merchant's Coinbase account, and no subscriptions.

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use serde_json::{Value, json};
use sha2::Sha256;

use super::money::Currency;
use super::provider::{
    Action, PaymentProvider, ProviderError, ProviderEvent, Session, VerifyError, http_calls,
};
use crate::db;

/// The API version Ferrocast speaks (`X-CC-Version`).
pub const API_VERSION: &str = "2018-03-22";

/// Calls to one tenant's Coinbase Commerce account.
#[derive(Debug, Clone)]
pub struct Client {
    base_url: String,
    api_key: String,
    webhook_secret: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base_url: &str, api_key: &str, webhook_secret: &str) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key: api_key.to_string(),
            webhook_secret: webhook_secret.to_string(),
            http: http_calls::client(),
        }
    }
}

/// Checks `signature` (hex) against the HMAC-SHA256 of `body` under `secret`, in constant
/// time.
pub fn verify_signature(signature: Option<&str>, body: &[u8], secret: &str) -> Result<(), String> {
    let given = signature.ok_or("no X-CC-Webhook-Signature header")?.trim();
    let given = hex::decode(given).map_err(|_| "X-CC-Webhook-Signature is not hex")?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    mac.verify_slice(&given)
        .map_err(|_| "the signature does not match".to_string())
}

#[async_trait]
impl PaymentProvider for Client {
    fn name(&self) -> &'static str {
        "coinbase"
    }

    fn sells_subscriptions(&self) -> bool {
        false
    }

    /// A fixed-price charge for the order's total, with the order id in its metadata.
    async fn checkout(
        &self,
        order: &db::Order,
        lines: &[db::OrderLine],
        success_url: &str,
        cancel_url: &str,
    ) -> Result<Session, ProviderError> {
        let currency = Currency::parse(&order.currency)
            .ok_or_else(|| ProviderError::Unsupported("the order's currency is unknown".into()))?;
        let names: Vec<&str> = lines.iter().map(|l| l.product_name.as_str()).collect();
        let body = json!({
            "name": names.join(", ").chars().take(100).collect::<String>(),
            "description": format!("Order {}", order.id),
            "pricing_type": "fixed_price",
            "local_price": {"amount": currency.format(order.total), "currency": currency.code()},
            "metadata": {"order_id": order.id, "tenant_id": order.tenant_id},
            "redirect_url": success_url,
            "cancel_url": cancel_url,
        });
        let url = format!("{}/charges", self.base_url);
        // No idempotency key here: a request that may have reached Coinbase is not sent
        // again (a second charge for the order), only one that could not connect.
        let created = http_calls::send_with(
            "Coinbase Commerce",
            || {
                self.http
                    .post(&url)
                    .header("X-CC-Api-Key", &self.api_key)
                    .header("X-CC-Version", API_VERSION)
                    .json(&body)
            },
            |b| b["error"]["message"].as_str().map(Into::into),
            false,
        )
        .await?;
        let data = &created["data"];
        match (data["id"].as_str(), data["hosted_url"].as_str()) {
            (Some(id), Some(url))
                if id.len() <= 64
                    && (url.starts_with("https://") || url.starts_with("http://")) =>
            {
                Ok(Session {
                    id: id.into(),
                    url: url.into(),
                })
            }
            _ => Err(ProviderError::Refused {
                provider: "Coinbase Commerce",
                status: 200,
                message: "the charge has no id or hosted_url".into(),
            }),
        }
    }

    async fn refund(
        &self,
        _order: &db::Order,
        _amount: i64,
        _key: &str,
    ) -> Result<String, ProviderError> {
        Err(ProviderError::Unsupported(
            "Coinbase Commerce has no refund API: refund the buyer from your Coinbase account, \
             and revoke the buyer's entitlements here if access should end"
                .into(),
        ))
    }

    async fn cancel_subscription(
        &self,
        _provider_ref: &str,
        _at_period_end: bool,
    ) -> Result<(String, bool), ProviderError> {
        Err(ProviderError::Unsupported(
            "subscriptions are sold through Stripe, not Coinbase Commerce".into(),
        ))
    }

    async fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        _now_s: i64,
    ) -> Result<(), VerifyError> {
        let signature = headers
            .get("x-cc-webhook-signature")
            .and_then(|v| v.to_str().ok());
        verify_signature(signature, body, &self.webhook_secret).map_err(VerifyError::Invalid)
    }

    fn parse(&self, body: &[u8]) -> Option<ProviderEvent> {
        parse_event(body)
    }
}

/// Reads a Coinbase Commerce delivery (`{"id", "event": {"id", "type", "data": charge}}`);
/// none if it is not one.
pub fn parse_event(body: &[u8]) -> Option<ProviderEvent> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let e = v.get("event")?;
    let id = e["id"].as_str()?;
    let kind = e["type"].as_str()?;
    if id.is_empty() || id.len() > 255 || kind.is_empty() || kind.len() > 255 {
        return None;
    }
    let charge = &e["data"];
    let charge_id = charge["id"]
        .as_str()
        .filter(|c| !c.is_empty() && c.len() <= 64)
        .map(String::from);
    let action = match kind {
        // Paid in full and confirmed on chain, or a merchant resolved an odd payment.
        "charge:confirmed" | "charge:resolved" => Action::Paid {
            payment_ref: charge_id.clone(),
        },
        // Expired unpaid, or underpaid.
        "charge:failed" => Action::Failed,
        // Seen on chain, not yet confirmed; or paid after it expired (the merchant
        // resolves it in Coinbase, and `charge:resolved` follows).
        "charge:pending" | "charge:delayed" => Action::Wait,
        _ => Action::Ignore,
    };
    let price = if charge["pricing"]["local"].is_object() {
        &charge["pricing"]["local"]
    } else {
        &charge["local_price"]
    };
    let amount = (|| {
        let currency = Currency::parse(price["currency"].as_str()?)?;
        Some((
            currency.code().to_string(),
            currency.parse_amount(price["amount"].as_str()?)?,
        ))
    })();
    Some(ProviderEvent {
        id: id.into(),
        kind: kind.into(),
        session_ref: charge_id.clone(),
        amount,
        order_id: charge["metadata"]["order_id"]
            .as_str()
            .filter(|s| !s.is_empty() && s.len() <= 64)
            .map(Into::into),
        subscription_ref: None,
        payment_ref: charge_id,
        action,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coinbase_signatures_and_events() {
        let body = br#"{"id":"1","scheduled_for":"2026-12-07T00:00:00Z","event":{"id":"24934862-d980-46cb-9402-43c81b0cdba6","type":"charge:confirmed","api_version":"2018-03-22","data":{"id":"f765421f-2fe0-4b36-9e3c-2f5c6d1b4a3e","code":"66BEOV2A","metadata":{"order_id":"ord1"}}}}"#;
        let mut mac = Hmac::<Sha256>::new_from_slice(b"shared").unwrap();
        mac.update(body);
        let good = hex::encode(mac.finalize().into_bytes());
        assert_eq!(verify_signature(Some(&good), body, "shared"), Ok(()));
        assert!(verify_signature(Some(&good), b"{}", "shared").is_err());
        assert!(verify_signature(Some("zz"), body, "shared").is_err());
        assert!(verify_signature(None, body, "shared").is_err());
        let e = parse_event(body).unwrap();
        assert_eq!(e.id, "24934862-d980-46cb-9402-43c81b0cdba6");
        assert_eq!(e.order_id.as_deref(), Some("ord1"));
        assert_eq!(
            e.action,
            Action::Paid {
                payment_ref: Some("f765421f-2fe0-4b36-9e3c-2f5c6d1b4a3e".into())
            }
        );
        assert!(parse_event(br#"{"id":"1"}"#).is_none());
    }
}
