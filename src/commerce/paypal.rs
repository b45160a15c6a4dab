//! PayPal, through its Orders v2 API: an order is created with the frozen amounts and the
//! buyer approves it on PayPal's page; the approval's webhook (`CHECKOUT.ORDER.APPROVED`)
//! makes Ferrocast capture it, and the capture pays the order. Refunds go against the
//! capture. Every POST carries a `PayPal-Request-Id` made of the order id, so a retry is
//! the same order, capture or refund.
//!
//! Webhook deliveries are verified by PayPal's documented postback
//! (`POST /v1/notifications/verify-webhook-signature`, with the delivery's `PAYPAL-*`
//! headers, the tenant's webhook id and the event exactly as received), against the
//! tenant's base URL (live or sandbox). PayPal sells one-time and rental prices here;
//! subscriptions go through Stripe.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::HeaderMap;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::money::Currency;
use super::provider::{
    Action, PaymentProvider, ProviderError, ProviderEvent, Session, VerifyError, http_calls,
};
use crate::db;

/// Calls to one tenant's PayPal REST app.
#[derive(Debug, Clone)]
pub struct Client {
    base_url: String,
    client_id: String,
    client_secret: String,
    webhook_id: String,
    http: reqwest::Client,
}

/// OAuth access tokens by app (a hash of base URL, client id and secret), reused until a
/// minute before they expire: PayPal's are good for hours.
static TOKENS: LazyLock<Mutex<HashMap<String, (String, Instant)>>> =
    LazyLock::new(Default::default);
/// The most apps whose tokens are kept.
const MAX_TOKENS: usize = 4096;

/// PayPal's own ids (orders, captures): letters and digits.
fn is_paypal_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// An error body's words: Orders v2 (`message`, `details[].issue`) or OAuth's.
fn message(body: &Value) -> Option<String> {
    let issue = body["details"][0]["issue"].as_str();
    match (body["message"].as_str(), issue) {
        (Some(m), Some(i)) => Some(format!("{m} ({i})")),
        (Some(m), None) => Some(m.into()),
        (None, _) => body["error_description"]
            .as_str()
            .or(body["error"].as_str())
            .map(Into::into),
    }
}

fn forget_token(app: &str) {
    TOKENS.lock().expect("tokens").remove(app);
}

impl Client {
    pub fn new(base_url: &str, client_id: &str, client_secret: &str, webhook_id: &str) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_string(),
            client_id: client_id.to_string(),
            client_secret: client_secret.to_string(),
            webhook_id: webhook_id.to_string(),
            http: http_calls::client(),
        }
    }

    fn app(&self) -> String {
        hex::encode(Sha256::digest(format!(
            "{}\n{}\n{}",
            self.base_url, self.client_id, self.client_secret
        )))
    }

    /// An access token (client credentials grant), from the cache when it is still good.
    async fn token(&self) -> Result<String, ProviderError> {
        let app = self.app();
        if let Some((token, until)) = TOKENS.lock().expect("tokens").get(&app)
            && *until > Instant::now()
        {
            return Ok(token.clone());
        }
        let url = format!("{}/v1/oauth2/token", self.base_url);
        let body = http_calls::send(
            "PayPal",
            || {
                self.http
                    .post(&url)
                    .basic_auth(&self.client_id, Some(&self.client_secret))
                    .form(&[("grant_type", "client_credentials")])
            },
            message,
        )
        .await?;
        let Some(token) = body["access_token"].as_str().filter(|t| t.len() <= 4096) else {
            return Err(ProviderError::Refused {
                provider: "PayPal",
                status: 200,
                message: "the token answer has no access_token".into(),
            });
        };
        let lifetime = body["expires_in"].as_u64().unwrap_or(0).saturating_sub(60);
        let mut tokens = TOKENS.lock().expect("tokens");
        if tokens.len() >= MAX_TOKENS {
            let now = Instant::now();
            tokens.retain(|_, (_, until)| *until > now);
            if tokens.len() >= MAX_TOKENS {
                tokens.clear();
            }
        }
        tokens.insert(
            app,
            (
                token.to_string(),
                Instant::now() + Duration::from_secs(lifetime.min(86_400)),
            ),
        );
        Ok(token.to_string())
    }

    /// Sends JSON `body` with the bearer token; `request_id` goes as `PayPal-Request-Id`.
    /// A token PayPal no longer takes (401) is forgotten and a new one tried, once.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        request_id: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Value, ProviderError> {
        match self.call_once(method.clone(), path, request_id, body).await {
            Err(ProviderError::Refused { status: 401, .. }) => {
                forget_token(&self.app());
                self.call_once(method, path, request_id, body).await
            }
            other => other,
        }
    }

    async fn call_once(
        &self,
        method: reqwest::Method,
        path: &str,
        request_id: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Value, ProviderError> {
        let token = self.token().await?;
        let url = format!("{}{path}", self.base_url);
        http_calls::send(
            "PayPal",
            || {
                let mut req = self
                    .http
                    .request(method.clone(), &url)
                    .bearer_auth(&token)
                    .header("Prefer", "return=representation");
                if let Some(id) = request_id {
                    req = req.header("PayPal-Request-Id", id);
                }
                match body {
                    Some(b) => req.json(b),
                    None => req,
                }
            },
            message,
        )
        .await
    }
}

/// What a captured (or captured-and-read-back) PayPal order makes of the Ferrocast order.
fn capture_action(paypal_order: &Value) -> Action {
    let capture = &paypal_order["purchase_units"][0]["payments"]["captures"][0];
    match capture["status"].as_str() {
        Some("COMPLETED") => match capture["id"].as_str().filter(|i| is_paypal_id(i)) {
            Some(id) => Action::Paid {
                payment_ref: Some(id.into()),
            },
            None => Action::Wait,
        },
        Some("DECLINED" | "FAILED") => Action::Failed,
        _ => Action::Wait,
    }
}

/// A PayPal amount object (`{"currency_code": "EUR", "value": "9.51"}`) as (currency,
/// minor units).
fn amount(v: &Value) -> Option<(String, i64)> {
    let currency = Currency::parse(v["currency_code"].as_str()?)?;
    Some((
        currency.code().to_string(),
        currency.parse_amount(v["value"].as_str()?)?,
    ))
}

/// `minor` units as PayPal writes the amount: ISO's decimals, except HUF and TWD, which
/// PayPal takes in whole units only (none if the amount has a fraction of one).
fn value(currency: Currency, minor: i64) -> Option<String> {
    match currency.code() {
        "HUF" | "TWD" => (minor % 100 == 0).then(|| (minor / 100).to_string()),
        _ => Some(currency.format(minor)),
    }
}

/// An amount object, or why PayPal cannot take it.
fn money(currency: Currency, minor: i64) -> Result<Value, ProviderError> {
    let value = value(currency, minor).ok_or_else(|| {
        ProviderError::Unsupported(format!(
            "PayPal takes {currency} in whole units only, and {} is not",
            currency.format(minor)
        ))
    })?;
    Ok(json!({"currency_code": currency.code(), "value": value}))
}

#[async_trait]
impl PaymentProvider for Client {
    fn name(&self) -> &'static str {
        "paypal"
    }

    fn sells_subscriptions(&self) -> bool {
        false
    }

    /// A PayPal order (intent CAPTURE) with one item per order line at the line's total
    /// (discount off, tax in), so PayPal's amount is the order's total; the buyer approves
    /// it at the `payer-action` link.
    async fn checkout(
        &self,
        order: &db::Order,
        lines: &[db::OrderLine],
        success_url: &str,
        cancel_url: &str,
    ) -> Result<Session, ProviderError> {
        let currency = Currency::parse(&order.currency)
            .ok_or_else(|| ProviderError::Unsupported("the order's currency is unknown".into()))?;
        let items = lines
            .iter()
            .map(|l| {
                let name = if l.quantity > 1 {
                    format!("{} × {}", l.product_name, l.quantity)
                } else {
                    l.product_name.clone()
                };
                Ok(json!({
                    "name": name.chars().take(127).collect::<String>(),
                    "quantity": "1",
                    "unit_amount": money(currency, l.total)?,
                    "sku": l.product_id,
                    "category": "DIGITAL_GOODS",
                }))
            })
            .collect::<Result<Vec<Value>, ProviderError>>()?;
        let total = money(currency, order.total)?;
        let body = json!({
            "intent": "CAPTURE",
            "purchase_units": [{
                "reference_id": order.id,
                "custom_id": order.id,
                "amount": {
                    "currency_code": currency.code(),
                    "value": total["value"],
                    "breakdown": {"item_total": total},
                },
                "items": items,
            }],
            "payment_source": {"paypal": {"experience_context": {
                "return_url": success_url,
                "cancel_url": cancel_url,
                "user_action": "PAY_NOW",
                "shipping_preference": "NO_SHIPPING",
            }}},
        });
        let created = self
            .call(
                reqwest::Method::POST,
                "/v2/checkout/orders",
                Some(&format!("ferrocast-checkout-{}", order.id)),
                Some(&body),
            )
            .await?;
        let link = created["links"].as_array().and_then(|links| {
            links
                .iter()
                .find(|l| matches!(l["rel"].as_str(), Some("payer-action" | "approve")))?["href"]
                .as_str()
        });
        match (created["id"].as_str().filter(|i| is_paypal_id(i)), link) {
            (Some(id), Some(url)) if url.starts_with("https://") || url.starts_with("http://") => {
                Ok(Session {
                    id: id.into(),
                    url: url.into(),
                })
            }
            _ => Err(ProviderError::Refused {
                provider: "PayPal",
                status: 200,
                message: "the order has no id or approval link".into(),
            }),
        }
    }

    async fn capture(
        &self,
        provider_order: &str,
        order_id: &str,
        attempt: &str,
    ) -> Result<Action, ProviderError> {
        if !is_paypal_id(provider_order) {
            return Ok(Action::Ignore);
        }
        // One request id per approval: a redelivery is the same capture, while a buyer who
        // approves again after a decline gets a new one (PayPal keeps a request id's answer).
        let approval = &hex::encode(Sha256::digest(attempt))[..16];
        let path = format!("/v2/checkout/orders/{provider_order}/capture");
        let captured = self
            .call(
                reqwest::Method::POST,
                &path,
                Some(&format!("ferrocast-capture-{order_id}-{approval}")),
                Some(&json!({})),
            )
            .await;
        match captured {
            Ok(o) => Ok(capture_action(&o)),
            Err(ProviderError::Refused {
                status, message, ..
            }) if (400..500).contains(&status) => Ok(
                // Captured before (by another request id): read it back.
                if message.contains("ORDER_ALREADY_CAPTURED") {
                    let o = self
                        .call(
                            reqwest::Method::GET,
                            &format!("/v2/checkout/orders/{provider_order}"),
                            None,
                            None,
                        )
                        .await?;
                    capture_action(&o)
                } else if message.contains("INSTRUMENT_DECLINED")
                    || message.contains("PAYER_ACTION_REQUIRED")
                {
                    // PayPal sends the buyer back to choose another way to pay; their next
                    // approval is captured then.
                    Action::Wait
                } else {
                    tracing::warn!(order = order_id, %message, "PayPal refused the capture");
                    Action::Failed
                },
            ),
            Err(e) => Err(e),
        }
    }

    async fn refund(
        &self,
        order: &db::Order,
        amount: i64,
        key: &str,
    ) -> Result<String, ProviderError> {
        let Some(capture) = order.payment_ref.as_deref().filter(|c| is_paypal_id(c)) else {
            return Err(ProviderError::Unsupported(
                "the order has no PayPal capture to refund".into(),
            ));
        };
        let currency = Currency::parse(&order.currency)
            .ok_or_else(|| ProviderError::Unsupported("the order's currency is unknown".into()))?;
        let body = json!({"amount": money(currency, amount)?});
        let refunded = self
            .call(
                reqwest::Method::POST,
                &format!("/v2/payments/captures/{capture}/refund"),
                Some(key),
                Some(&body),
            )
            .await?;
        // A refund PayPal failed or canceled is no refund; a pending one is on its way.
        match (refunded["id"].as_str(), refunded["status"].as_str()) {
            (Some(id), Some("COMPLETED" | "PENDING")) => Ok(id.into()),
            (_, status) => Err(ProviderError::Refused {
                provider: "PayPal",
                status: 200,
                message: format!("the refund is {}", status.unwrap_or("without a status")),
            }),
        }
    }

    async fn cancel_subscription(
        &self,
        _provider_ref: &str,
        _at_period_end: bool,
    ) -> Result<(String, bool), ProviderError> {
        Err(ProviderError::Unsupported(
            "subscriptions are sold through Stripe, not PayPal".into(),
        ))
    }

    async fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        _now_s: i64,
    ) -> Result<(), VerifyError> {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty() && v.len() <= 2048)
                .ok_or_else(|| VerifyError::Invalid(format!("no {name} header")))
        };
        let transmission_id = header("paypal-transmission-id")?;
        let transmission_time = header("paypal-transmission-time")?;
        let transmission_sig = header("paypal-transmission-sig")?;
        let cert_url = header("paypal-cert-url")?;
        let auth_algo = header("paypal-auth-algo")?;
        // What PayPal never sends is refused here, without asking PayPal.
        if auth_algo != "SHA256withRSA" {
            return Err(VerifyError::Invalid(format!(
                "PAYPAL-AUTH-ALGO {auth_algo:?} is not PayPal's"
            )));
        }
        let cert_host = url::Url::parse(cert_url)
            .ok()
            .filter(|u| u.scheme() == "https" || self.base_url.starts_with("http://"))
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
        let api_host = url::Url::parse(&self.base_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
        if !cert_host.is_some_and(|h| h.ends_with(".paypal.com") || Some(&h) == api_host.as_ref()) {
            return Err(VerifyError::Invalid(
                "PAYPAL-CERT-URL is not PayPal's".into(),
            ));
        }
        // The event goes back exactly as it came: re-encoding it would change what was
        // signed.
        let text = std::str::from_utf8(body)
            .ok()
            .filter(|t| serde_json::from_str::<Value>(t).is_ok_and(|v| v.is_object()))
            .ok_or_else(|| VerifyError::Invalid("the body is not a JSON object".into()))?;
        let fields = json!({
            "auth_algo": auth_algo,
            "cert_url": cert_url,
            "transmission_id": transmission_id,
            "transmission_sig": transmission_sig,
            "transmission_time": transmission_time,
            "webhook_id": self.webhook_id,
        })
        .to_string();
        let request = format!(
            "{},\"webhook_event\":{text}}}",
            fields.strip_suffix('}').expect("an object")
        );
        let token = self
            .token()
            .await
            .map_err(|e| VerifyError::Unavailable(e.to_string()))?;
        let url = format!(
            "{}/v1/notifications/verify-webhook-signature",
            self.base_url
        );
        let answer = http_calls::send(
            "PayPal",
            || {
                self.http
                    .post(&url)
                    .bearer_auth(&token)
                    .header("Content-Type", "application/json")
                    .body(request.clone())
            },
            message,
        )
        .await
        .map_err(|e| match e {
            // Our credentials or PayPal's limits, not the delivery: PayPal retries it.
            ProviderError::Refused {
                status: 401 | 403 | 429,
                ..
            } => {
                forget_token(&self.app());
                VerifyError::Unavailable(e.to_string())
            }
            ProviderError::Refused { status, .. } if (400..500).contains(&status) => {
                VerifyError::Invalid(e.to_string())
            }
            e => VerifyError::Unavailable(e.to_string()),
        })?;
        match answer["verification_status"].as_str() {
            Some("SUCCESS") => Ok(()),
            other => Err(VerifyError::Invalid(format!(
                "PayPal says the signature does not verify ({})",
                other.unwrap_or("no status")
            ))),
        }
    }

    fn parse(&self, body: &[u8]) -> Option<ProviderEvent> {
        parse_event(body)
    }
}

/// Reads a PayPal webhook event; none if it is not one.
pub fn parse_event(body: &[u8]) -> Option<ProviderEvent> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let id = v["id"].as_str()?;
    let kind = v["event_type"].as_str()?;
    if id.is_empty() || id.len() > 255 || kind.is_empty() || kind.len() > 255 {
        return None;
    }
    let r = &v["resource"];
    let unit = &r["purchase_units"][0];
    let order_id = r["custom_id"]
        .as_str()
        .or(unit["custom_id"].as_str())
        .or(unit["reference_id"].as_str())
        .filter(|s| !s.is_empty() && s.len() <= 64)
        .map(String::from);
    // The capture a refund or reversal belongs to: its `up` link.
    let captured = || {
        r["links"]
            .as_array()?
            .iter()
            .filter(|l| l["rel"] == "up")
            .find_map(|l| l["href"].as_str()?.split_once("/captures/"))
            .map(|(_, id)| id.trim_end_matches('/'))
            .filter(|id| is_paypal_id(id))
    };
    let own_id = || r["id"].as_str().filter(|i| is_paypal_id(i));
    let captures = &unit["payments"]["captures"][0];
    // The PayPal order (Ferrocast's checkout) the event comes from, and what was paid.
    let (session_ref, paid) = match kind {
        "CHECKOUT.ORDER.APPROVED" | "CHECKOUT.ORDER.COMPLETED" => {
            (own_id(), amount(&captures["amount"]))
        }
        _ => (
            r["supplementary_data"]["related_ids"]["order_id"]
                .as_str()
                .filter(|i| is_paypal_id(i)),
            amount(&r["amount"]),
        ),
    };
    let (payment_ref, action) = match kind {
        "CHECKOUT.ORDER.APPROVED" => match own_id() {
            Some(o) => (
                None,
                Action::Capture {
                    provider_order: o.into(),
                },
            ),
            None => (None, Action::Ignore),
        },
        "CHECKOUT.ORDER.COMPLETED" => (None, capture_action(r)),
        "PAYMENT.CAPTURE.COMPLETED" => (
            own_id().map(String::from),
            Action::Paid {
                payment_ref: own_id().map(Into::into),
            },
        ),
        "PAYMENT.CAPTURE.PENDING" => (own_id().map(String::from), Action::Wait),
        "PAYMENT.CAPTURE.DENIED" | "PAYMENT.CAPTURE.DECLINED" => {
            (own_id().map(String::from), Action::Failed)
        }
        "PAYMENT.CAPTURE.REFUNDED" => {
            match amount(&r["seller_payable_breakdown"]["total_refunded_amount"]) {
                Some((_, total)) => (captured().map(String::from), Action::Refunded { total }),
                None => (captured().map(String::from), Action::Ignore),
            }
        }
        // A chargeback taken back, or a dispute opened: access ends.
        "PAYMENT.CAPTURE.REVERSED" => (captured().map(String::from), Action::Disputed),
        "CUSTOMER.DISPUTE.CREATED" => (
            r["disputed_transactions"][0]["seller_transaction_id"]
                .as_str()
                .filter(|i| is_paypal_id(i))
                .map(String::from),
            Action::Disputed,
        ),
        _ => (None, Action::Ignore),
    };
    Some(ProviderEvent {
        id: id.into(),
        kind: kind.into(),
        order_id,
        subscription_ref: None,
        payment_ref,
        session_ref: session_ref.map(Into::into),
        amount: paid,
        action,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, resource: Value) -> ProviderEvent {
        parse_event(
            json!({"id": "WH-1", "event_type": kind, "resource_type": "x", "resource": resource})
                .to_string()
                .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn paypal_events_say_what_they_do_to_an_order() {
        let approved = event(
            "CHECKOUT.ORDER.APPROVED",
            json!({"id": "5O190127TN364715T", "status": "APPROVED",
                "purchase_units": [{"reference_id": "ord1", "custom_id": "ord1"}]}),
        );
        assert_eq!(approved.order_id.as_deref(), Some("ord1"));
        assert_eq!(
            approved.action,
            Action::Capture {
                provider_order: "5O190127TN364715T".into()
            }
        );
        let captured = event(
            "PAYMENT.CAPTURE.COMPLETED",
            json!({"id": "3C679366HH908993F", "status": "COMPLETED", "custom_id": "ord1"}),
        );
        assert_eq!(
            captured.action,
            Action::Paid {
                payment_ref: Some("3C679366HH908993F".into())
            }
        );
        let refunded = event(
            "PAYMENT.CAPTURE.REFUNDED",
            json!({"id": "1JU08902781691411", "custom_id": "ord1",
                "seller_payable_breakdown": {"total_refunded_amount": {"currency_code": "EUR", "value": "5.00"}},
                "links": [{"rel": "up", "href": "https://api-m.paypal.com/v2/payments/captures/3C679366HH908993F"}]}),
        );
        assert_eq!(refunded.action, Action::Refunded { total: 500 });
        assert_eq!(refunded.payment_ref.as_deref(), Some("3C679366HH908993F"));
        let dispute = event(
            "CUSTOMER.DISPUTE.CREATED",
            json!({"dispute_id": "PP-D-1", "disputed_transactions": [{"seller_transaction_id": "3C679366HH908993F"}]}),
        );
        assert_eq!(
            (
                dispute.action,
                dispute.order_id,
                dispute.payment_ref.as_deref()
            ),
            (Action::Disputed, None, Some("3C679366HH908993F"))
        );
        assert_eq!(
            event("BILLING.PLAN.CREATED", json!({})).action,
            Action::Ignore
        );
        // A capture id that could be a path is not taken.
        let odd = event(
            "CHECKOUT.ORDER.APPROVED",
            json!({"id": "../v1/oauth2", "purchase_units": [{"custom_id": "ord1"}]}),
        );
        assert_eq!(odd.action, Action::Ignore);
        assert!(parse_event(b"{\"id\":\"x\"}").is_none());
    }
}
