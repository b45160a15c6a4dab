//! The Stripe fake (tests/fakes/stripe_fake.py) as a child process: Stripe's wire format on
//! 127.0.0.1, driven by the tests to pay sessions and deliver signed events. Stops with the
//! test (its stdin closes) or after ten minutes.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

pub const SECRET_KEY: &str = "sk_test_ferrocast_fake";
pub const WEBHOOK_SECRET: &str = "whsec_ferrocast_fake";

/// The Python with the official `stripe` package (`make py-deps`).
pub fn python() -> String {
    std::env::var("TEST_FAKES_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/ferrocast/venv/bin/python",
            std::env::var("HOME").unwrap()
        )
    })
}

pub fn script() -> String {
    format!("{}/tests/fakes/stripe_fake.py", env!("CARGO_MANIFEST_DIR"))
}

pub struct FakeStripe {
    child: Child,
    pub base_url: String,
    client: reqwest::Client,
}

impl FakeStripe {
    pub fn start() -> Self {
        let mut child = Command::new(python())
            .arg(script())
            .args(["--secret-key", SECRET_KEY, "--lifetime", "600"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "the Stripe fake needs {} with stripe installed (make py-deps): {e}",
                    python()
                )
            });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = serde_json::from_str::<Value>(&line)
            .unwrap_or_else(|_| panic!("the Stripe fake did not start: {line:?}"))["port"]
            .as_u64()
            .unwrap();
        Self {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
            client: super::http_client(),
        }
    }

    async fn control(&self, path: &str, body: Value) -> Value {
        let resp = self
            .client
            .post(format!("{}/_fake/{path}", self.base_url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "fake {path}: {}", resp.status());
        resp.json().await.unwrap()
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

impl Drop for FakeStripe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
