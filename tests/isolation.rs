//! Tenant isolation on every route of the OpenAPI document, generated from the document
//! itself rather than hand-listed: tenant A holds one of every kind of object (a live stream
//! an asset, an upload, analytics views, the whole commerce chain through
//! a paid subscription, keys, webhook endpoints with deliveries), and tenant B's key, on each
//! operation that names an object, with A's ids in the path and the operation's own example
//! body, gets 404. Every list B can read names none of A's ids, and A's objects are all still
//! there afterwards. A route added to the router without an id known here fails the test
//! until it is mapped (or excluded below, with its reason).

mod common;

use std::collections::BTreeMap;

use common::shop::{paid_media, post};
use common::stripe::FakeStripe;
use common::{PgDatabase, TestServer};
use serde_json::{Value, json};

/// Operations whose path parameters are not another tenant's objects, and why.
const NOT_OBJECTS: &[(&str, &str)] = &[
    (
        "/v1/analytics/metrics/",
        "a metric name; its filters are checked below",
    ),
    (
        "/v1/payment-providers/",
        "a provider name in the caller's own settings",
    ),
    ("/v1/tenants/", "operator routes: a tenant key gets 403"),
    (
        "/v1/webhooks/",
        "no key: a delivery is verified with the named tenant's provider secret (below)",
    ),
];

/// Players' routes under /v1: they take a playback token, which only the media's own tenant
/// signs, not an API key; B's key is no token of A's media, so 401.
const TOKEN_ROUTES: &[&str] = &["/v1/analytics/realtime/"];

/// A's objects, by the path prefix that names them, and every id A holds.
struct Holdings {
    by_prefix: BTreeMap<&'static str, String>,
    /// Ids of objects nested under another (`{ban_id}`, `{delivery_id}`, …), by name.
    nested: BTreeMap<&'static str, String>,
    playback_id: String,
}

impl Holdings {
    fn all_ids(&self) -> Vec<&str> {
        self.by_prefix
            .values()
            .chain(self.nested.values())
            .chain([&self.playback_id])
            .map(String::as_str)
            .collect()
    }

    /// `template` with A's ids in place of its parameters; none if a parameter is unknown.
    fn fill(&self, template: &str) -> Option<String> {
        let prefix = &template[..template.find('{')?];
        let mut out = String::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            let close = rest.find('}')?;
            out.push_str(&rest[..open]);
            let name = &rest[open + 1..close];
            let id = match name {
                "playback_id" => &self.playback_id,
                "id" => {
                    let (_, id) = self
                        .by_prefix
                        .iter()
                        .filter(|(p, _)| prefix.starts_with(**p))
                        .max_by_key(|(p, _)| p.len())?;
                    id
                }
                other => self.nested.get(other)?,
            };
            out.push_str(id);
            rest = &rest[close + 1..];
        }
        out.push_str(rest);
        Some(out)
    }
}

async fn created(server: &TestServer, key: &str, path: &str, body: Value) -> String {
    let v = post(server, key, path, body).await;
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{path}: {v}"))
        .to_string()
}

async fn first_id(server: &TestServer, key: &str, path: &str) -> String {
    let (status, v) = server.call("GET", path, Some(key), None).await;
    assert_eq!(status, 200, "{path}: {v}");
    v["data"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{path}: nothing listed: {v}"))
        .to_string()
}

/// Tenant A with one of everything; (A's key, its holdings).
async fn tenant_a(server: &TestServer, stripe: &FakeStripe) -> (String, Holdings) {
    let (key, media, hook) = paid_media(
        server,
        "stripe",
        json!({"secret_key": common::stripe::SECRET_KEY,
            "webhook_secret": common::stripe::WEBHOOK_SECRET, "base_url": stripe.base_url}),
    )
    .await;
    let mut by_prefix = BTreeMap::new();
    let mut nested = BTreeMap::new();
    let (_, streams) = server
        .call("GET", "/v1/live-streams", Some(&key), None)
        .await;
    let stream = streams["data"][0]["id"].as_str().unwrap().to_string();
    by_prefix.insert("/v1/live-streams/", stream.clone());
    by_prefix.insert("/v1/playback-ids/", media.playback_id.clone());
    // A chat message or ban id need not exist (bans are made from messages, which come over
    // the chat WebSocket): the stream is A's, so B is refused before either is looked up.
    nested.insert("message_id", "01a25000-0000-7000-8000-000000000000".into());
    nested.insert("ban_id", "01a25000-0000-7000-8000-000000000001".into());

    // An asset (bytes that are no media: it ends errored, and stays A's) and a tus upload.
    let form = reqwest::multipart::Form::new()
        .text("playback_policy", "public")
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"not media".to_vec()).file_name("notes.mp4"),
        );
    let asset: Value = server
        .client
        .post(server.url("/v1/assets"))
        .bearer_auth(&key)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    by_prefix.insert(
        "/v1/assets/",
        asset["asset_id"]
            .as_str()
            .unwrap_or_else(|| panic!("{asset}"))
            .to_string(),
    );
    let (status, direct) = server
        .call(
            "POST",
            "/v1/direct-uploads",
            Some(&key),
            Some(json!({"size": 1000, "filename": "a.mp4"})),
        )
        .await;
    assert_eq!(status, 201, "{direct}");
    let complete = direct["complete_url"].as_str().unwrap();
    by_prefix.insert(
        "/v1/direct-uploads/",
        complete
            .trim_end_matches("/complete")
            .rsplit('/')
            .next()
            .unwrap()
            .to_string(),
    );
    let upload = server
        .client
        .post(server.url("/v1/uploads"))
        .bearer_auth(&key)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "1000")
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 201);
    let location = upload.headers()["location"].to_str().unwrap().to_string();
    by_prefix.insert(
        "/v1/uploads/",
        location.rsplit('/').next().unwrap().to_string(),
    );

    // A view of its media.
    common::paid::watched(server, &media.playback_id, "view-of-tenant-a").await;
    by_prefix.insert("/v1/analytics/views/", "view-of-tenant-a".into());

    // Keys and endpoints.
    by_prefix.insert(
        "/v1/api-keys/",
        created(server, &key, "/v1/api-keys", json!({"name": "ci"})).await,
    );
    by_prefix.insert(
        "/v1/signing-keys/",
        created(server, &key, "/v1/signing-keys", json!({})).await,
    );
    by_prefix.insert(
        "/v1/publishable-keys/",
        created(server, &key, "/v1/publishable-keys", json!({})).await,
    );
    let endpoint = created(
        server,
        &key,
        "/v1/webhook-endpoints",
        json!({"url": "http://127.0.0.1:9/hooks", "events": ["*"]}),
    )
    .await;
    by_prefix.insert("/v1/webhook-endpoints/", endpoint.clone());

    // The commerce chain: a product, prices, a code, a customer, a cart, and a paid monthly
    // subscription (order, invoice, subscription, provider events, an entitlement).
    let product = created(
        server,
        &key,
        "/v1/products",
        json!({"name": "Season", "playback_ids": [media.playback_id]}),
    )
    .await;
    by_prefix.insert("/v1/products/", product.clone());
    let monthly = created(
        server,
        &key,
        "/v1/prices",
        json!({"product_id": product, "type": "recurring", "unit_amount": 500,
            "currency": "eur", "interval": "month"}),
    )
    .await;
    by_prefix.insert("/v1/prices/", monthly.clone());
    post(
        server,
        &key,
        "/v1/discount-codes",
        json!({"code": "ALICE", "percent_off": "10"}),
    )
    .await;
    by_prefix.insert(
        "/v1/customers/",
        created(
            server,
            &key,
            "/v1/customers",
            json!({"email": "alice@example.com"}),
        )
        .await,
    );
    let open_cart = created(server, &key, "/v1/carts", json!({"currency": "eur"})).await;
    by_prefix.insert("/v1/carts/", open_cart);
    let (status, out) =
        common::shop::checkout_with(server, &key, &monthly, "stripe", "buyer@example.com").await;
    assert_eq!(status, 201, "{out}");
    let order = out["order_id"].as_str().unwrap().to_string();
    let session = out["redirect_url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap();
    let events = stripe.pay(session).await;
    let answers = stripe.deliver(&hook, &events, 1, 1, 0, false).await;
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    by_prefix.insert("/v1/orders/", order.clone());
    by_prefix.insert(
        "/v1/invoices/",
        first_id(server, &key, &format!("/v1/invoices?order_id={order}")).await,
    );
    by_prefix.insert(
        "/v1/subscriptions/",
        first_id(server, &key, "/v1/subscriptions").await,
    );
    by_prefix.insert(
        "/v1/webhook-events/",
        first_id(server, &key, "/v1/webhook-events").await,
    );
    by_prefix.insert(
        "/v1/entitlements/",
        first_id(server, &key, "/v1/entitlements").await,
    );
    // The endpoint's deliveries of those events (to a closed port: failed, retried later).
    let mut delivery = None;
    for _ in 0..100 {
        let (_, d) = server
            .call(
                "GET",
                &format!("/v1/webhook-endpoints/{endpoint}/deliveries"),
                Some(&key),
                None,
            )
            .await;
        if let Some(id) = d["data"][0]["id"].as_str() {
            delivery = Some(id.to_string());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    nested.insert("delivery_id", delivery.expect("a delivery within 10 s"));
    (
        key,
        Holdings {
            by_prefix,
            nested,
            playback_id: media.playback_id,
        },
    )
}

/// Sends `method` to `path` with B's key and the operation's example body (JSON), or an
/// empty body of the operation's content type; returns the status and the answer's text.
async fn send(
    server: &TestServer,
    key: &str,
    method: &str,
    path: &str,
    op: &Value,
    spec: &Value,
) -> (u16, String) {
    let mut req = server
        .client
        .request(method.parse().unwrap(), server.url(path))
        .bearer_auth(key)
        .header("Tus-Resumable", "1.0.0");
    if let Some(content) = op["requestBody"]["content"].as_object() {
        if let Some(json) = content.get("application/json") {
            // The operation's example, else the first of its examples, else its schema's.
            let schema = json["schema"]["$ref"]
                .as_str()
                .and_then(|r| spec["components"]["schemas"][r.rsplit('/').next()?].get("example"));
            let example = json
                .get("example")
                .or_else(|| json["examples"].as_object()?.values().next()?.get("value"))
                .or(schema)
                .unwrap_or_else(|| panic!("{method} {path}: no example body"));
            req = req.json(example);
        } else if let Some((kind, _)) = content.iter().next() {
            req = req
                .header("content-type", kind)
                .header("Upload-Offset", "0")
                .body(Vec::new());
        }
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

async fn another_tenant_gets_404_on_every_object_of_every_route_and_lists_show_none(
    server: &TestServer,
) {
    let stripe = FakeStripe::start();
    let (a_key, holdings) = tenant_a(server, &stripe).await;
    let (_, b_key) = server.create_tenant("Bob").await;
    let (status, spec) = server.call("GET", "/openapi.json", None, None).await;
    assert_eq!(status, 200);

    let mut unmapped = Vec::new();
    let mut leaks = Vec::new();
    let mut tried = 0;
    let mut lists = Vec::new();
    for (template, item) in spec["paths"].as_object().unwrap() {
        if !template.starts_with("/v1/") {
            continue;
        }
        for (method, op) in item.as_object().unwrap() {
            if !["get", "post", "put", "patch", "delete", "head"].contains(&method.as_str()) {
                continue;
            }
            let method = method.to_ascii_uppercase();
            if !template.contains('{') {
                if method == "GET" {
                    lists.push(template.clone());
                }
                continue;
            }
            if NOT_OBJECTS.iter().any(|(p, _)| template.starts_with(p)) {
                continue;
            }
            let Some(path) = holdings.fill(template) else {
                unmapped.push(format!("{method} {template}"));
                continue;
            };
            tried += 1;
            let (status, text) = send(server, &b_key, &method, &path, op, &spec).await;
            let expected = if TOKEN_ROUTES.iter().any(|p| template.starts_with(p)) {
                401
            } else {
                404
            };
            if status != expected {
                leaks.push(format!("{method} {template}: {status} {text:.200}"));
            }
        }
    }
    assert!(
        unmapped.is_empty(),
        "routes with no object of A's to try: {unmapped:#?}"
    );
    assert!(leaks.is_empty(), "B reached A's objects: {leaks:#?}");
    eprintln!(
        "{tried} operations on A's objects tried with B's key, {} lists read",
        lists.len()
    );
    assert!(tried > 40, "{tried} operations tried");

    // Every list B reads (and the analytics that take filters) names none of A's ids.
    let ids = holdings.all_ids();
    let pb = &holdings.playback_id;
    lists.extend([
        format!("/v1/analytics/views?playback_id={pb}"),
        format!("/v1/analytics/metrics/views/overall?playback_id={pb}"),
        format!("/v1/analytics/metrics/views/breakdown?group_by=country&playback_id={pb}"),
        format!("/v1/analytics/metrics/views/timeseries?playback_id={pb}"),
        "/v1/entitlements?viewer=buyer%40example.com".to_string(),
    ]);
    for path in &lists {
        let resp = server
            .client
            .get(server.url(path))
            .bearer_auth(&b_key)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        assert!(status < 500, "GET {path}: {status} {text}");
        for id in &ids {
            assert!(!text.contains(id), "GET {path} shows A's {id}: {text:.300}");
        }
        assert!(
            !text.contains("alice@example.com") && !text.contains("buyer@example.com"),
            "GET {path} shows A's customers: {text:.300}"
        );
    }

    // A provider delivery to A's webhook URL signed with B's secret is refused.
    let a_tenant = server.call("GET", "/v1/tenant", Some(&a_key), None).await.1["id"]
        .as_str()
        .unwrap()
        .to_string();
    let forged = server
        .client
        .post(server.url(&format!("/v1/webhooks/stripe/{a_tenant}")))
        .header("Stripe-Signature", "t=1,v1=00")
        .body(r#"{"id":"evt_forged","type":"checkout.session.completed"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 400);

    // A still has all of it: each object that has a GET of its own reads back.
    let mut read_back = 0;
    for (prefix, id) in &holdings.by_prefix {
        let template = format!("{prefix}{{id}}");
        if spec["paths"][&template]["get"].is_null() {
            continue;
        }
        let resp = server
            .client
            .get(server.url(&format!("{prefix}{id}")))
            .bearer_auth(&a_key)
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "A's {prefix}{id}: {}",
            resp.status()
        );
        read_back += 1;
    }
    assert!(read_back >= 10, "{read_back} objects read back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenant_gets_404_on_every_object_of_every_route_and_lists_show_none_sqlite() {
    // S3, for direct uploads.
    let s3 = common::S3Server::start();
    let server = TestServer::start_with(|c| {
        s3.configure(c, "ferrocast-isolation");
        c.commerce.allow_plain_http_providers = true;
        c.webhooks.allow_private_targets = true;
    })
    .await;
    another_tenant_gets_404_on_every_object_of_every_route_and_lists_show_none(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenant_gets_404_on_every_object_of_every_route_and_lists_show_none_postgres() {
    let s3 = common::S3Server::start();
    let pg = PgDatabase::create().await;
    let server = TestServer::start_on(&pg, |c| {
        s3.configure(c, "ferrocast-isolation");
        c.commerce.allow_plain_http_providers = true;
        c.webhooks.allow_private_targets = true;
    })
    .await;
    another_tenant_gets_404_on_every_object_of_every_route_and_lists_show_none(&server).await;
    server.stop().await;
}
