//! Hostile requests on every route of the OpenAPI document (#27's security sweep), generated
//! from the document: each path parameter of each operation filled with traversal, encoded
//! NUL and CRLF, and oversized values is answered with a 4xx, never a 5xx, never a file of
//! the machine, and never a header the value put there. And the size limits: a header block
//! over hyper's buffer gets 431, a body over `http.max_body_bytes` 413, JSON nested far past
//! serde's depth 400; the server serves on after each.

mod common;

use common::TestServer;
use serde_json::{Value, json};

/// What an attacker puts in a path parameter.
fn hostile_values() -> Vec<String> {
    vec![
        "..%2F..%2F..%2F..%2Fetc%2Fpasswd".into(),
        "%2e%2e".into(),
        "..".into(),
        "a%00b".into(),
        "a%0d%0aSet-Cookie:%20injected=1".into(),
        "%25%32%65%25%32%65%2fetc%2fpasswd".into(),
        "x".repeat(5000),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_route_parameters_get_4xx_on_every_route_and_leak_nothing() {
    let server = TestServer::start().await;
    let (_, key) = server.create_tenant("Hostile").await;
    let (status, spec) = server.call("GET", "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    let mut tried = 0;
    let mut wrong = Vec::new();
    for (template, item) in spec["paths"].as_object().unwrap() {
        if !template.contains('{') {
            continue;
        }
        for (method, op) in item.as_object().unwrap() {
            if !["get", "post", "put", "patch", "delete", "head"].contains(&method.as_str()) {
                continue;
            }
            for value in hostile_values() {
                let mut path = String::new();
                let mut rest = template.as_str();
                while let (Some(open), Some(close)) = (rest.find('{'), rest.find('}')) {
                    path.push_str(&rest[..open]);
                    path.push_str(&value);
                    rest = &rest[close + 1..];
                }
                path.push_str(rest);
                let mut req = server
                    .client
                    .request(
                        method.to_ascii_uppercase().parse().unwrap(),
                        server.url(&path),
                    )
                    .bearer_auth(&key)
                    .header("Tus-Resumable", "1.0.0");
                if let Some(example) =
                    op["requestBody"]["content"]["application/json"].get("example")
                {
                    req = req.json(example);
                }
                let resp = req.send().await.unwrap();
                let status = resp.status().as_u16();
                let injected = resp
                    .headers()
                    .get_all("set-cookie")
                    .iter()
                    .any(|c| c.to_str().is_ok_and(|c| c.contains("injected")));
                let body = resp.text().await.unwrap_or_default();
                tried += 1;
                if status >= 500 || body.contains("root:x:0:0") || injected {
                    wrong.push(format!(
                        "{method} {template} with {:.60}: {status} {:.200}",
                        value, body
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert!(tried > 500, "{tried} requests");
    eprintln!("{tried} hostile requests, each answered without a 5xx or a leak");
    let (status, _) = server.get_text("/healthz").await;
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_bodies_and_deep_json_are_refused_and_the_server_serves_on() {
    let server = TestServer::start().await;
    let (_, key) = server.create_tenant("Limits").await;
    let max_body = server.state.jobs.config.http.max_body_bytes;

    // A header block past hyper's buffer (400 KiB).
    let resp = server
        .client
        .get(server.url("/v1/live-streams"))
        .bearer_auth(&key)
        .header("x-padding", "p".repeat(1 << 20))
        .send()
        .await;
    match resp {
        Ok(r) => assert_eq!(r.status(), 431),
        // hyper may also close the connection on it: refused either way.
        Err(e) => assert!(e.is_request() || e.is_connect() || e.is_body(), "{e}"),
    }

    // A body past http.max_body_bytes.
    let big = json!({"name": "n".repeat(max_body + 1)});
    let resp = server
        .client
        .post(server.url("/v1/products"))
        .bearer_auth(&key)
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);

    // JSON nested 100,000 deep (serde stops at 128): 400, and no stack overflow.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let resp = server
        .client
        .post(server.url("/v1/products"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_request", "{body}");

    let (status, _) = server.get_text("/healthz").await;
    assert_eq!(status, 200);
    server.stop().await;
}
