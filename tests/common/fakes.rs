//! The payment providers' fakes (tests/fakes/*.py) as child processes: each speaks its
//! provider's wire format on 127.0.0.1, prints its port, and stops with the test (its stdin
//! closes) or after ten minutes. Tests drive the buyer's and the provider's side through
//! its `/_fake/` endpoints.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

/// The Python with the providers' official clients (`make py-deps`).
pub fn python() -> String {
    std::env::var("TEST_FAKES_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/ferrocast/venv/bin/python",
            std::env::var("HOME").unwrap()
        )
    })
}

pub fn script(name: &str) -> String {
    format!("{}/tests/fakes/{name}", env!("CARGO_MANIFEST_DIR"))
}

pub struct FakeProcess {
    child: Child,
    pub base_url: String,
    pub client: reqwest::Client,
}

impl FakeProcess {
    pub fn start(name: &str, args: &[&str]) -> Self {
        let mut child = Command::new(python())
            .arg(script(name))
            .args(args)
            .args(["--lifetime", "600"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{name} needs {} with tests/fakes/requirements.txt installed (make py-deps): {e}",
                    python()
                )
            });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = serde_json::from_str::<Value>(&line)
            .unwrap_or_else(|_| panic!("{name} did not start: {line:?}"))["port"]
            .as_u64()
            .unwrap();
        Self {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
            client: super::http_client(),
        }
    }

    pub async fn control(&self, path: &str, body: Value) -> Value {
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

    /// The events a control answers with.
    pub async fn events(&self, path: &str) -> Vec<Value> {
        self.control(path, json!({})).await["events"]
            .as_array()
            .unwrap_or_else(|| panic!("{path} gave no events"))
            .clone()
    }

    /// Delivers `events` to `url` as the provider would, each `copies` times, `concurrency`
    /// at once (with a wrong signature if `bad`); each answer's status and body.
    pub async fn deliver(
        &self,
        url: &str,
        events: &[Value],
        copies: u32,
        concurrency: u32,
        bad: bool,
    ) -> Vec<(u16, Value)> {
        self.control(
            "deliver",
            json!({"url": url, "events": events, "copies": copies, "concurrency": concurrency,
                "bad_signature": bad}),
        )
        .await["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["status"].as_u64().unwrap() as u16, r["body"].clone()))
            .collect()
    }

    /// Runs the fake's `--selftest`: the provider's official client against it.
    pub fn selftest(name: &str) -> Value {
        let out = super::process::output_within(
            Command::new(python()).arg(script(name)).arg("--selftest"),
            std::time::Duration::from_secs(60),
            name,
        );
        assert!(
            out.status.success(),
            "{name} --selftest: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for FakeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// PayPal's REST app in the fake (tests/fakes/paypal_fake.py).
pub mod paypal {
    pub const CLIENT_ID: &str = "AV-ferrocast-fake-client";
    pub const CLIENT_SECRET: &str = "EK-ferrocast-fake-secret";
    pub const WEBHOOK_ID: &str = "8PT597110X687430LKGECATA";
}

/// The Coinbase Commerce account in the fake (tests/fakes/coinbase_fake.py).
pub mod coinbase {
    pub const API_KEY: &str = "cc-ferrocast-fake-key";
    pub const SHARED_SECRET: &str = "cc-ferrocast-fake-shared-secret";
}
