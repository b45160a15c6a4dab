//! The Stripe fake (tests/fakes/stripe_fake.py) as a child process: Stripe's wire format on
//! 127.0.0.1, driven by the tests to pay sessions and deliver signed events. Stops with the
//! test (its stdin closes) or after ten minutes.

use serde_json::{Value, json};

use super::fakes::FakeProcess;

pub const SECRET_KEY: &str = "sk_test_ferrocast_fake";
pub const WEBHOOK_SECRET: &str = "whsec_ferrocast_fake";

pub struct FakeStripe {
    fake: FakeProcess,
    pub base_url: String,
}

impl FakeStripe {
    pub fn start() -> Self {
        let fake = FakeProcess::start("stripe_fake.py", &["--secret-key", SECRET_KEY]);
        Self {
            base_url: fake.base_url.clone(),
            fake,
        }
    }

    async fn control(&self, path: &str, body: Value) -> Value {
        self.fake.control(path, body).await
    }

    /// The customer pays checkout session `id`; returns the events Stripe would send.
    pub async fn pay(&self, session_id: &str) -> Vec<Value> {
        self.control(&format!("pay/{session_id}"), json!({})).await["events"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// The next period of subscription `id` is paid; returns the events Stripe would send.
    pub async fn renew(&self, subscription: &str) -> Vec<Value> {
        self.control(&format!("renew/{subscription}"), json!({}))
            .await["events"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// Subscription `id` ends (its cancellation reached the period's end); its event.
    pub async fn end(&self, subscription: &str) -> Vec<Value> {
        self.control(&format!("end/{subscription}"), json!({}))
            .await["events"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// A `charge.*` event (`charge.refunded`, `charge.dispute.created`) about the charge of
    /// `payment_intent` as it is now.
    pub async fn charge_event(&self, kind: &str, payment_intent: &str) -> Vec<Value> {
        self.control(
            "charge-event",
            json!({"type": kind, "payment_intent": payment_intent}),
        )
        .await["events"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// Delivers `events` to `url`, each `copies` times, `concurrency` at once, signed
    /// `age_s` seconds ago (with a wrong secret if `bad`); returns each answer's status and
    /// body.
    pub async fn deliver(
        &self,
        url: &str,
        events: &[Value],
        copies: u32,
        concurrency: u32,
        age_s: i64,
        bad: bool,
    ) -> Vec<(u16, Value)> {
        self.control(
            "deliver",
            json!({"url": url, "secret": WEBHOOK_SECRET, "events": events, "copies": copies,
                "concurrency": concurrency, "age_s": age_s, "bad_signature": bad}),
        )
        .await["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["status"].as_u64().unwrap() as u16, r["body"].clone()))
            .collect()
    }

    /// Refunds through Stripe's API itself (as the creator's dashboard would), not Ferrocast.
    pub async fn refund(&self, payment_intent: &str, amount: i64) {
        let resp = self
            .fake
            .client
            .post(format!("{}/v1/refunds", self.base_url))
            .bearer_auth(SECRET_KEY)
            .form(&[
                ("payment_intent", payment_intent),
                ("amount", &amount.to_string()),
            ])
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    }

    /// Where payments made on the hosted page send their events.
    pub async fn send_events_to(&self, webhook_url: &str) {
        self.control(
            "config",
            json!({"webhook_url": webhook_url, "webhook_secret": WEBHOOK_SECRET}),
        )
        .await;
    }

    /// The payment intents made so far (by payments on the hosted page and invoices).
    pub async fn payment_intents(&self) -> Vec<String> {
        self.control("requests", json!({})).await["payment_intents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }

    /// The idempotency keys Ferrocast's requests carried.
    pub async fn idempotency_keys(&self) -> Vec<String> {
        self.control("requests", json!({})).await["idempotency_keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect()
    }
}
