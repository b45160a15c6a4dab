//! A tenant's webhook receiver (tests/fakes/webhook_receiver.py, which verifies each
//! delivery with PyPI `standardwebhooks`) and the endpoints that point at it.

use serde_json::{Value, json};

use super::TestServer;
use super::fakes::FakeProcess;

/// A receiver on `port` (0: any).
pub fn receiver(port: u16) -> FakeProcess {
    FakeProcess::start("webhook_receiver.py", &["--port", &port.to_string()])
}

/// What the receiver got so far.
pub async fn received(r: &FakeProcess) -> Vec<Value> {
    r.events("received").await
}

/// Adds an endpoint at the receiver's `/name` for `events`; returns (id, secret).
pub async fn endpoint(
    server: &TestServer,
    key: &str,
    r_url: &str,
    name: &str,
    events: Value,
) -> (String, String) {
    let (status, e) = server
        .call(
            "POST",
            "/v1/webhook-endpoints",
            Some(key),
            Some(json!({"url": format!("{r_url}/{name}"), "events": events})),
        )
        .await;
    assert_eq!(status, 201, "{e}");
    let secret = e["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"), "{e}");
    (e["id"].as_str().unwrap().to_string(), secret)
}

/// The types received for `object_id`, in arrival order.
pub fn types_for(events: &[Value], object_id: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["body"]["data"]["id"] == object_id)
        .map(|e| e["body"]["type"].as_str().unwrap().to_string())
        .collect()
}

/// A receiver with one endpoint, `hooks`, for `events`, whose secret it knows.
pub async fn hooked(server: &TestServer, key: &str, events: Value) -> FakeProcess {
    let r = receiver(0);
    let (_, secret) = endpoint(server, key, &r.base_url, "hooks", events).await;
    r.control("secrets", json!({"hooks": [secret]})).await;
    r
}

/// The deliveries once there are at least `n`, each verified and with its own event id.
pub async fn at_least(r: &FakeProcess, n: usize) -> Vec<Value> {
    let got = super::media::eventually(
        &format!("{n} webhook deliveries"),
        std::time::Duration::from_secs(20),
        || async {
            let got = received(r).await;
            (got.len() >= n).then_some(got)
        },
    )
    .await;
    let mut ids: Vec<&str> = got
        .iter()
        .map(|e| e["webhook_id"].as_str().unwrap())
        .collect();
    assert!(
        got.iter().all(|e| e["verified"] == json!([0])),
        "unverified: {got:#?}"
    );
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), got.len(), "an event came twice: {got:#?}");
    got
}

/// The types received, in arrival order.
pub fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["body"]["type"].as_str().unwrap().to_string())
        .collect()
}
