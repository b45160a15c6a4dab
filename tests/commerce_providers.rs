//! PayPal and Coinbase Commerce through their fakes (tests/fakes/, each provider's wire
//! format): PayPal orders captured when their approval's webhook comes, verified with
//! PayPal, refunded against the capture; Coinbase charges paid by signed webhook; what each
//! cannot do refused with why. And a price's tier: an SD purchase plays SD.

mod common;

use common::fakes::{FakeProcess, coinbase, paypal};
use common::shop::{checkout_with, order, paid_media, post, price_for, refused, viewer_key};
use common::{PgDatabase, TestServer};
use serde_json::{Value, json};

/// POSTs `body` to `url` with no headers of a provider's: the status.
async fn raw_post(server: &TestServer, url: &str, body: String) -> u16 {
    server
        .client
        .post(url)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn server() -> TestServer {
    TestServer::start_with(|c| c.commerce.allow_plain_http_providers = true).await
}

fn paypal_settings(fake: &FakeProcess) -> Value {
    json!({"client_id": paypal::CLIENT_ID, "secret_key": paypal::CLIENT_SECRET,
        "webhook_secret": paypal::WEBHOOK_ID, "base_url": fake.base_url})
}

fn coinbase_settings(fake: &FakeProcess) -> Value {
    json!({"secret_key": coinbase::API_KEY, "webhook_secret": coinbase::SHARED_SECRET,
        "base_url": fake.base_url})
}

/// The official clients against the fakes: PayPal's SDK parses every answer (orders,
/// captures, refunds, errors); Coinbase's client reads charges and verifies the fake's
/// webhook signatures.
#[test]
fn the_paypal_and_coinbase_fakes_speak_their_providers_wire_formats() {
    for fake in ["paypal_fake.py", "coinbase_fake.py"] {
        let out = FakeProcess::selftest(fake);
        assert_eq!(out["selftest"], "ok", "{fake}: {out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paypal_orders_are_captured_on_approval_verified_with_paypal_and_refunded() {
    let server = server().await;
    let fake = FakeProcess::start("paypal_fake.py", &[]);
    let (key, media, webhook_url) = paid_media(&server, "paypal", paypal_settings(&fake)).await;
    let price = price_for(&server, &key, &media, json!({})).await;

    // PayPal needs its client id (other hosts than PayPal's: the last test).
    let (status, v) = server
        .call(
            "PUT",
            "/v1/payment-providers/paypal",
            Some(&key),
            Some(json!({"secret_key": "s", "webhook_secret": "w"})),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("client_id")
    );

    let (status, out) = checkout_with(&server, &key, &price, "paypal", "pp@example.com").await;
    assert_eq!(status, 201, "{out}");
    // 999 + 19 % = 1188.81 → 1189.
    assert_eq!(out["total"], 1189);
    let order_id = out["order_id"].as_str().unwrap().to_string();
    let customer = out["customer_id"].as_str().unwrap().to_string();
    let approve = out["redirect_url"].as_str().unwrap();
    let paypal_order = approve.rsplit("token=").next().unwrap().to_string();
    assert!(approve.starts_with(&format!("{}/checkoutnow?token=", fake.base_url)));
    assert_eq!(order(&server, &key, &order_id).await["provider"], "paypal");
    assert_eq!(viewer_key(&server, &key, &media, &customer).await, 403);

    // The buyer approves; PayPal's approval event, delivered 20 times at once, makes one
    // capture and one entitlement.
    let approved = fake.events(&format!("approve/{paypal_order}")).await;
    let answers = fake.deliver(&webhook_url, &approved, 20, 20, false).await;
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    assert_eq!(
        answers
            .iter()
            .filter(|(_, b)| b["duplicate"] == false)
            .count(),
        1,
        "{answers:?}"
    );
    let o = order(&server, &key, &order_id).await;
    assert_eq!(o["status"], "paid", "{o}");
    assert_eq!(viewer_key(&server, &key, &media, &customer).await, 200);
    let (_, ents) = server
        .call(
            "GET",
            &format!("/v1/entitlements?viewer={customer}"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(ents["data"].as_array().unwrap().len(), 1, "{ents}");
    let seen = fake.control("requests", json!({})).await;
    let ids: Vec<&str> = seen["request_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&format!("ferrocast-checkout-{order_id}").as_str()),
        "{ids:?}"
    );
    assert_eq!(
        ids.iter()
            .filter(|i| i.starts_with(&format!("ferrocast-capture-{order_id}-")))
            .count(),
        1,
        "{ids:?}"
    );
    assert_eq!(seen["captures"].as_array().unwrap().len(), 1);

    // Deliveries PayPal does not vouch for: a wrong signature, no PAYPAL-* headers, a
    // body changed after signing. Each is refused and kept as unverified.
    let answers = fake.deliver(&webhook_url, &approved, 1, 1, true).await;
    assert_eq!(answers[0].0, 400, "{answers:?}");
    let status = raw_post(&server, &webhook_url, approved[0].to_string()).await;
    assert_eq!(status, 400);
    // PayPal's verification service down: 503, so PayPal delivers again later.
    fake.control(
        "fail",
        json!({"path": "/v1/notifications/verify-webhook-signature", "times": 3}),
    )
    .await;
    let answers = fake.deliver(&webhook_url, &approved, 1, 1, false).await;
    assert_eq!(answers[0].0, 503, "{answers:?}");
    let (_, inbox) = server
        .call("GET", "/v1/webhook-events", Some(&key), None)
        .await;
    let unverified = inbox["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["verified"] == false && e["provider"] == "paypal")
        .count();
    assert_eq!(unverified, 2, "{inbox}");

    // A partial refund keeps access; the rest ends it. Each goes to PayPal against the
    // capture, and PayPal's own refund events after them change nothing more.
    let (status, o) = server
        .call(
            "POST",
            &format!("/v1/orders/{order_id}/refunds"),
            Some(&key),
            Some(json!({"amount": 189})),
        )
        .await;
    assert_eq!((status, &o["amount_refunded"]), (200, &json!(189)), "{o}");
    assert_eq!(viewer_key(&server, &key, &media, &customer).await, 200);
    let (status, o) = server
        .call(
            "POST",
            &format!("/v1/orders/{order_id}/refunds"),
            Some(&key),
            Some(json!({})),
        )
        .await;
    assert_eq!((status, &o["status"]), (200, &json!("refunded")), "{o}");
    assert_eq!(viewer_key(&server, &key, &media, &customer).await, 403);
    let (_, invoices) = server.call("GET", "/v1/invoices", Some(&key), None).await;
    let kinds: Vec<&str> = invoices["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "credit_note").count(),
        2,
        "{invoices}"
    );

    // A second buyer's card is declined at capture: the order waits (answered 200, so PayPal
    // does not deliver the approval again), the buyer approves again, and that capture
    // pays. Then the payment is disputed: access ends at the next key request.
    fake.control("decline", json!({"times": 1})).await;
    let (_, out) = checkout_with(&server, &key, &price, "paypal", "pp2@example.com").await;
    let second = out["order_id"].as_str().unwrap().to_string();
    let buyer = out["customer_id"].as_str().unwrap().to_string();
    let paypal_order = out["redirect_url"]
        .as_str()
        .unwrap()
        .rsplit("token=")
        .next()
        .unwrap()
        .to_string();
    let approved = fake.events(&format!("approve/{paypal_order}")).await;
    let answers = fake.deliver(&webhook_url, &approved, 1, 1, false).await;
    assert_eq!(answers[0].0, 200, "{answers:?}");
    assert_eq!(order(&server, &key, &second).await["status"], "pending");
    assert_eq!(viewer_key(&server, &key, &media, &buyer).await, 403);
    let approved = fake.events(&format!("approve/{paypal_order}")).await;
    fake.deliver(&webhook_url, &approved, 1, 1, false).await;
    assert_eq!(viewer_key(&server, &key, &media, &buyer).await, 200);
    let capture = order(&server, &key, &second).await;
    assert_eq!(capture["status"], "paid", "{capture}");
    // PayPal's dispute names only the capture: each capture is disputed, and the one of
    // the second order ends its buyer's access.
    let seen = fake.control("requests", json!({})).await;
    let mut disputed = false;
    for c in seen["captures"].as_array().unwrap() {
        let events = fake
            .events(&format!("dispute/{}", c.as_str().unwrap()))
            .await;
        let answers = fake.deliver(&webhook_url, &events, 1, 1, false).await;
        assert_eq!(answers[0].0, 200, "{answers:?}");
        disputed |= answers[0].1["result"]
            .as_str()
            .is_some_and(|r| r.contains("disput"));
    }
    assert!(disputed);
    assert_eq!(viewer_key(&server, &key, &media, &buyer).await, 403);
    assert_eq!(order(&server, &key, &second).await["disputed"], true);

    // Subscriptions are Stripe's only.
    let product = post(
        &server,
        &key,
        "/v1/products",
        json!({"name": "Monthly", "all_content": true}),
    )
    .await;
    let monthly = post(
        &server,
        &key,
        "/v1/prices",
        json!({"product_id": product["id"], "type": "recurring", "interval": "month",
            "unit_amount": 499, "currency": "eur"}),
    )
    .await;
    let (status, v) = checkout_with(
        &server,
        &key,
        monthly["id"].as_str().unwrap(),
        "paypal",
        "sub@example.com",
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("Stripe"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coinbase_charges_are_paid_by_signed_webhook_and_refunds_say_why_not() {
    let server = server().await;
    let fake = FakeProcess::start("coinbase_fake.py", &[]);
    let (key, media, webhook_url) = paid_media(&server, "coinbase", coinbase_settings(&fake)).await;
    let price = price_for(&server, &key, &media, json!({})).await;
    let (status, out) = checkout_with(&server, &key, &price, "coinbase", "c@example.com").await;
    assert_eq!(status, 201, "{out}");
    let order_id = out["order_id"].as_str().unwrap().to_string();
    let customer = out["customer_id"].as_str().unwrap().to_string();
    let hosted = out["redirect_url"].as_str().unwrap();
    let code = hosted.rsplit('/').next().unwrap().to_string();
    assert!(
        hosted.starts_with(&format!("{}/pay/", fake.base_url)),
        "{hosted}"
    );
    // The charge is for the order's total, with the order in its metadata.
    let charge: Value = fake
        .client
        .get(format!("{}/charges/{code}", fake.base_url))
        .header("X-CC-Api-Key", coinbase::API_KEY)
        .header("X-CC-Version", "2018-03-22")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        charge["data"]["local_price"],
        json!({"amount": "11.89", "currency": "EUR"})
    );
    assert_eq!(charge["data"]["metadata"]["order_id"], order_id.as_str());

    // Paid on chain: pending waits, confirmed pays, once; a wrong signature is refused.
    let events = fake.events(&format!("pay/{code}")).await;
    let answers = fake.deliver(&webhook_url, &events[..1], 1, 1, false).await;
    assert_eq!(answers[0].0, 200);
    assert_eq!(order(&server, &key, &order_id).await["status"], "pending");
    let answers = fake.deliver(&webhook_url, &events[1..], 1, 1, true).await;
    assert_eq!(answers[0].0, 400, "{answers:?}");
    assert_eq!(viewer_key(&server, &key, &media, &customer).await, 403);
    let answers = fake.deliver(&webhook_url, &events[1..], 5, 5, false).await;
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    assert_eq!(
        answers
            .iter()
            .filter(|(_, b)| b["duplicate"] == false)
            .count(),
        1
    );
    assert_eq!(order(&server, &key, &order_id).await["status"], "paid");
    assert_eq!(viewer_key(&server, &key, &media, &customer).await, 200);
    // A charge made outside Ferrocast that names this buyer's next order in its metadata,
    // for a cent, pays nothing: only the order's own charge does.
    let (_, out) = checkout_with(&server, &key, &price, "coinbase", "c@example.com").await;
    let target = out["order_id"].as_str().unwrap().to_string();
    let forged: Value = fake
        .client
        .post(format!("{}/charges", fake.base_url))
        .header("X-CC-Api-Key", coinbase::API_KEY)
        .header("X-CC-Version", "2018-03-22")
        .json(&json!({"name": "tip", "pricing_type": "fixed_price",
            "local_price": {"amount": "0.01", "currency": "EUR"}, "metadata": {"order_id": target}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let events = fake
        .events(&format!("pay/{}", forged["data"]["code"].as_str().unwrap()))
        .await;
    let answers = fake.deliver(&webhook_url, &events, 1, 1, false).await;
    assert!(
        answers[1].1["result"]
            .as_str()
            .unwrap()
            .contains("not from the order's checkout"),
        "{answers:?}"
    );
    assert_eq!(order(&server, &key, &target).await["status"], "pending");

    // A flood of forged deliveries is refused, and only a burst of it is kept on record.
    let answers = fake.deliver(&webhook_url, &events[1..], 60, 6, true).await;
    assert!(answers.iter().all(|(s, _)| *s == 400), "{answers:?}");
    let (_, inbox) = server
        .call("GET", "/v1/webhook-events?limit=100", Some(&key), None)
        .await;
    let kept = inbox["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["verified"] == false)
        .count();
    assert!(
        (30..=35).contains(&kept),
        "{kept} unverified deliveries kept"
    );

    // The billing address given at checkout sets the tax: Austria has no rate here.
    let cart = post(
        &server,
        &key,
        "/v1/carts",
        json!({"currency": "eur", "country": "DE"}),
    )
    .await;
    let id = cart["id"].as_str().unwrap();
    post(
        &server,
        &key,
        &format!("/v1/carts/{id}/items"),
        json!({"price_id": price, "quantity": 1}),
    )
    .await;
    let (status, _) = server
        .call(
            "POST",
            &format!("/v1/carts/{id}/checkout"),
            Some(&key),
            Some(
                json!({"provider": "coinbase", "email": "at@example.com", "country": "Austria",
                "success_url": "https://example.com/ok", "cancel_url": "https://example.com/no"}),
            ),
        )
        .await;
    assert_eq!(status, 400);
    let out = post(
        &server,
        &key,
        &format!("/v1/carts/{id}/checkout"),
        json!({"provider": "coinbase", "email": "at@example.com", "country": "at",
            "success_url": "https://example.com/ok", "cancel_url": "https://example.com/no"}),
    )
    .await;
    assert_eq!(out["total"], 999, "{out}");
    assert_eq!(
        order(&server, &key, out["order_id"].as_str().unwrap()).await["country"],
        "AT"
    );

    // No refund API: refused, saying where to refund; access is unchanged.
    let (status, message) = refused(
        &server,
        &key,
        &format!("/v1/orders/{order_id}/refunds"),
        json!({}),
    )
    .await;
    assert_eq!(status, 409, "{message}");
    assert!(message.contains("Coinbase"), "{message}");
    assert_eq!(viewer_key(&server, &key, &media, &customer).await, 200);

    // A charge that expires unpaid fails its order, and the cart's buyer gets nothing.
    let (_, out) = checkout_with(&server, &key, &price, "coinbase", "late@example.com").await;
    let late = out["order_id"].as_str().unwrap().to_string();
    let code = out["redirect_url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let events = fake.events(&format!("expire/{code}")).await;
    fake.deliver(&webhook_url, &events, 1, 1, false).await;
    assert_eq!(order(&server, &key, &late).await["status"], "failed");
    // Paid late after all, and resolved by the merchant in Coinbase: the order is paid.
    let events = fake.events(&format!("resolve/{code}")).await;
    fake.deliver(&webhook_url, &events, 1, 1, false).await;
    let o = order(&server, &key, &late).await;
    assert_eq!(o["status"], "paid", "{o}");
    assert_eq!(
        viewer_key(&server, &key, &media, o["customer_id"].as_str().unwrap()).await,
        200
    );
    server.stop().await;
}

/// An SD price (tier 360p) and an HD one for the same product: the SD buyer's playlists
/// list only renditions up to 360 lines and the others are refused, even with a token that
/// allows more; buying HD lifts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_price_tier_caps_the_renditions_its_buyer_plays_sqlite() {
    let server = server().await;
    a_price_tier_caps_the_renditions_its_buyer_plays(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_price_tier_caps_the_renditions_its_buyer_plays_postgres() {
    let pg = PgDatabase::create().await;
    let server = TestServer::start_on(&pg, |c| c.commerce.allow_plain_http_providers = true).await;
    a_price_tier_caps_the_renditions_its_buyer_plays(&server).await;
    server.stop().await;
}

async fn a_price_tier_caps_the_renditions_its_buyer_plays(server: &TestServer) {
    let fake = FakeProcess::start("coinbase_fake.py", &[]);
    let (key, media, webhook_url) = paid_media(server, "coinbase", coinbase_settings(&fake)).await;
    let sd = price_for(server, &key, &media, json!({"tier": "360p"})).await;
    let hd = price_for(server, &key, &media, json!({})).await;
    let buy = async |price: &str, email: &str| {
        let (status, out) = checkout_with(server, &key, price, "coinbase", email).await;
        assert_eq!(status, 201, "{out}");
        let code = out["redirect_url"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_string();
        let events = fake.events(&format!("pay/{code}")).await;
        fake.deliver(&webhook_url, &events, 1, 1, false).await;
        out["customer_id"].as_str().unwrap().to_string()
    };
    let viewer = buy(&sd, "sd@example.com").await;
    let (_, t) = server
        .call(
            "POST",
            "/v1/playback-tokens",
            Some(&key),
            Some(json!({"playback_id": media.playback_id, "viewer": viewer, "max_resolution": "1080p"})),
        )
        .await;
    let token = t["token"].as_str().unwrap().to_string();
    let master = format!("/hls/{}/master.m3u8?token={token}", media.playback_id);
    let rendition = |r: &str| format!("/hls/{}/{r}/index.m3u8?token={token}", media.playback_id);
    let (status, text) = server.get_text(&master).await;
    assert_eq!(status, 200);
    assert!(text.contains("360p/") && !text.contains("720p/"), "{text}");
    assert_eq!(server.get_text(&rendition("720p")).await.0, 403);
    assert_eq!(server.get_text(&rendition("360p")).await.0, 200);
    assert_eq!(viewer_key(server, &key, &media, &viewer).await, 200);
    // The same customer buys HD (their cart names them now).
    let cart = post(
        server,
        &key,
        "/v1/carts",
        json!({"currency": "eur", "country": "DE", "customer_id": viewer}),
    )
    .await;
    let id = cart["id"].as_str().unwrap();
    post(
        server,
        &key,
        &format!("/v1/carts/{id}/items"),
        json!({"price_id": hd, "quantity": 1}),
    )
    .await;
    let out = post(
        server,
        &key,
        &format!("/v1/carts/{id}/checkout"),
        json!({"provider": "coinbase", "success_url": "https://example.com/ok", "cancel_url": "https://example.com/no"}),
    )
    .await;
    let code = out["redirect_url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let events = fake.events(&format!("pay/{code}")).await;
    fake.deliver(&webhook_url, &events, 1, 1, false).await;
    let (_, text) = server.get_text(&master).await;
    assert!(text.contains("720p/") && text.contains("1080p/"), "{text}");
    assert_eq!(server.get_text(&rendition("720p")).await.0, 200);
}

/// Outside the tests' setting a tenant cannot point a provider at a host of its choice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_base_urls_are_the_providers_own() {
    let server = TestServer::start().await;
    let (_, key) = server.create_tenant("Creator").await;
    for (name, body, ok) in [
        (
            "paypal",
            json!({"client_id": "id", "secret_key": "s", "webhook_secret": "w",
            "base_url": "http://169.254.169.254"}),
            false,
        ),
        (
            "paypal",
            json!({"client_id": "id", "secret_key": "s", "webhook_secret": "w",
            "base_url": "https://api-m.sandbox.paypal.com"}),
            true,
        ),
        (
            "coinbase",
            json!({"secret_key": "s", "webhook_secret": "w",
            "base_url": "https://api.commerce.coinbase.com.evil.test"}),
            false,
        ),
        (
            "coinbase",
            json!({"secret_key": "s", "webhook_secret": "w"}),
            true,
        ),
        (
            "coinbase",
            json!({"client_id": "id", "secret_key": "s", "webhook_secret": "w"}),
            false,
        ),
        (
            "bitpay",
            json!({"secret_key": "s", "webhook_secret": "w"}),
            false,
        ),
    ] {
        let (status, v) = server
            .call(
                "PUT",
                &format!("/v1/payment-providers/{name}"),
                Some(&key),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status == 200, ok, "{name} {body}: {status} {v}");
    }
    let (_, list) = server
        .call("GET", "/v1/payment-providers", Some(&key), None)
        .await;
    let bases: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["base_url"].as_str().unwrap())
        .collect();
    assert!(
        bases.contains(&"https://api.commerce.coinbase.com"),
        "{list}"
    );
    assert!(
        bases.contains(&"https://api-m.sandbox.paypal.com"),
        "{list}"
    );
    // Webhooks for a provider the tenant has not set up, or none at all, are not found.
    for path in ["/v1/webhooks/stripe/nobody", "/v1/webhooks/bitpay/nobody"] {
        assert_eq!(raw_post(&server, &server.url(path), "{}".into()).await, 404);
    }
    server.stop().await;
}
