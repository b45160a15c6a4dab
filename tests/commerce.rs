//! Commerce through the API: a creator sets up a product for a live stream, its prices, a
//! tax rate and discount codes; a buyer's cart reads back priced as src/commerce/money.rs
//! documents; codes are refused with their reasons; another tenant sees none of it.

mod common;

use common::hooks::{at_least, hooked, types, types_for};
use common::paid::{Media, media_with};
use common::shop::{order, post, refused, viewer_key};
use common::stripe::FakeStripe;
use common::{PgDatabase, TestServer};
use ferrocast::config::DatabaseUrl;
use serde_json::{Value, json};

/// The creator's catalogue: (product, EUR price, code id).
async fn catalogue(server: &TestServer, key: &str) -> (String, String, String) {
    let (status, stream) = server
        .call(
            "POST",
            "/v1/live-streams",
            Some(key),
            Some(json!({"playback_policy": "signed"})),
        )
        .await;
    assert_eq!(status, 201, "{stream}");
    let playback_id = stream["playback_id"].as_str().unwrap();
    let product = post(
        server,
        key,
        "/v1/products",
        json!({"name": "Cup final", "playback_ids": [playback_id]}),
    )
    .await;
    assert_eq!(product["playback_ids"], json!([playback_id]));
    let product_id = product["id"].as_str().unwrap().to_string();
    let price = post(
        server,
        key,
        "/v1/prices",
        json!({"product_id": product_id, "type": "one_time", "unit_amount": 999, "currency": "EUR"}),
    )
    .await;
    assert_eq!(
        (&price["currency"], &price["tax_behavior"]),
        (&json!("eur"), &json!("exclusive"))
    );
    post(
        server,
        key,
        "/v1/tax-rates",
        json!({"country": "de", "percentage": "19"}),
    )
    .await;
    let code = post(
        server,
        key,
        "/v1/discount-codes",
        json!({"code": "final20", "percent_off": "20", "max_per_customer": 1}),
    )
    .await;
    assert_eq!(code["code"], "FINAL20");
    (
        product_id,
        price["id"].as_str().unwrap().to_string(),
        code["id"].as_str().unwrap().to_string(),
    )
}

async fn a_cart_is_priced_by_the_documented_rules(server: &TestServer) {
    let (_, key) = server.create_tenant("Creator").await;
    let (product_id, price_id, _) = catalogue(server, &key).await;

    // Two tickets in Germany with 20 % off: 1998 − 399.6 → 400 off; 19 % of 1598 is 303.62.
    let cart = post(
        server,
        &key,
        "/v1/carts",
        json!({"currency": "eur", "country": "DE"}),
    )
    .await;
    let id = cart["id"].as_str().unwrap();
    assert_eq!(
        (&cart["status"], &cart["total"]),
        (&json!("open"), &json!(0))
    );
    let items = format!("/v1/carts/{id}/items");
    let cart = post(
        server,
        &key,
        &items,
        json!({"price_id": price_id, "quantity": 2}),
    )
    .await;
    assert_eq!(
        (&cart["subtotal"], &cart["tax"], &cart["total"]),
        (&json!(1998), &json!(380), &json!(2378)),
        "{cart}"
    );
    assert_eq!(cart["tax_rate"]["percentage"], "19");
    let cart = post(
        server,
        &key,
        &format!("/v1/carts/{id}/discount"),
        json!({"code": "Final20"}),
    )
    .await;
    assert_eq!(
        (
            &cart["subtotal"],
            &cart["discount"],
            &cart["tax"],
            &cart["total"]
        ),
        (&json!(1998), &json!(400), &json!(304), &json!(1902)),
        "{cart}"
    );
    assert_eq!(cart["discount_code"]["code"], "FINAL20");
    assert_eq!(cart["discount_code"]["problem"], Value::Null);
    let line = &cart["lines"][0];
    assert_eq!(
        (&line["product_id"], &line["product_name"], &line["total"]),
        (&json!(product_id), &json!("Cup final"), &json!(1902))
    );

    // An inclusive price in the same cart: its tax is inside; the code spreads over both.
    let incl = post(
        server,
        &key,
        "/v1/prices",
        json!({"product_id": product_id, "type": "rental", "unit_amount": 1190, "currency": "eur",
            "tax_behavior": "inclusive", "rental_hours": 48, "rental_starts": "first_play", "tier": "720"}),
    )
    .await;
    assert_eq!(
        (&incl["tier"], &incl["rental_starts"]),
        (&json!("720p"), &json!("first_play"))
    );
    let cart = post(
        server,
        &key,
        &items,
        json!({"price_id": incl["id"], "quantity": 1}),
    )
    .await;
    // Base 1998 + 1190 = 3188; 20 % = 637.6 → 638, split 1998:1190 → 399.85 and 238.15:
    // 399 + the leftover cent to the larger remainder (0.85) = 400, and 238.
    // Line 1: 1598 net, 304 tax. Line 2: 952 gross, net round(952 / 1.19) = 800, tax 152.
    assert_eq!(
        (
            &cart["discount"],
            &cart["lines"][1]["discount"],
            &cart["lines"][1]["tax"],
            &cart["tax"],
            &cart["total"]
        ),
        (
            &json!(638),
            &json!(238),
            &json!(152),
            &json!(456),
            &json!(1902 + 952)
        ),
        "{cart}"
    );
    // Quantity 0 takes it out again; quantity out of range is refused.
    let cart = post(
        server,
        &key,
        &items,
        json!({"price_id": incl["id"], "quantity": 0}),
    )
    .await;
    assert_eq!(cart["lines"].as_array().unwrap().len(), 1);
    refused(
        server,
        &key,
        &items,
        json!({"price_id": price_id, "quantity": 10_001}),
    )
    .await;

    // No tax rate for the buyer's country: no tax, and the cart says so.
    let us = post(
        server,
        &key,
        "/v1/carts",
        json!({"currency": "eur", "country": "US"}),
    )
    .await;
    let us = post(
        server,
        &key,
        &format!("/v1/carts/{}/items", us["id"].as_str().unwrap()),
        json!({"price_id": price_id, "quantity": 1}),
    )
    .await;
    assert_eq!(
        (&us["tax"], &us["total"], &us["tax_rate"]),
        (&json!(0), &json!(999), &Value::Null)
    );

    // Yen have no minor unit; a price in another currency does not go in a euro cart.
    let yen = post(
        server,
        &key,
        "/v1/prices",
        json!({"product_id": product_id, "type": "one_time", "unit_amount": 1500, "currency": "jpy"}),
    )
    .await;
    let (status, message) = refused(
        server,
        &key,
        &items,
        json!({"price_id": yen["id"], "quantity": 1}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(message.contains("JPY"), "{message}");

    // The GET reads the same cart.
    let (status, again) = server
        .call("GET", &format!("/v1/carts/{id}"), Some(&key), None)
        .await;
    assert_eq!((status, &again["total"]), (200, &json!(1902)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cart_is_priced_by_the_documented_rules_sqlite() {
    let server = TestServer::start().await;
    a_cart_is_priced_by_the_documented_rules(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cart_is_priced_by_the_documented_rules_postgres() {
    let pg = PgDatabase::create().await;
    let url = pg.url.clone();
    let server = TestServer::start_with(|c| c.database.url = DatabaseUrl::new(url)).await;
    a_cart_is_priced_by_the_documented_rules(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discount_codes_are_refused_with_their_reasons() {
    let server = TestServer::start().await;
    let (_, key) = server.create_tenant("Creator").await;
    let (product_id, price_id, _) = catalogue(&server, &key).await;
    let other = post(
        &server,
        &key,
        "/v1/products",
        json!({"name": "Season pass", "all_content": true}),
    )
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for body in [
        json!({"code": "LATER", "percent_off": "10", "starts_at": now + 3600}),
        // Times as RFC 3339 or as Unix seconds.
        json!({"code": "GONE", "percent_off": "10", "ends_at": "2026-01-01T00:00:00Z"}),
        json!({"code": "FIVEUSD", "amount_off": 500, "currency": "usd"}),
        json!({"code": "BIGSPEND", "amount_off": 500, "currency": "eur", "min_subtotal": 5000}),
        json!({"code": "PASSONLY", "percent_off": "50", "product_ids": [other["id"]]}),
        json!({"code": "FIVE", "amount_off": 500, "currency": "eur", "product_ids": [product_id]}),
    ] {
        post(&server, &key, "/v1/discount-codes", body).await;
    }
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
        json!({"price_id": price_id, "quantity": 1}),
    )
    .await;
    let apply = format!("/v1/carts/{id}/discount");
    for (code, reason) in [
        ("LATER", "not valid yet"),
        ("GONE", "expired"),
        ("FIVEUSD", "USD"),
        ("BIGSPEND", "50.00 EUR"),
        ("PASSONLY", "none of the cart's products"),
    ] {
        let (status, message) = refused(&server, &key, &apply, json!({ "code": code })).await;
        assert_eq!(status, 400, "{code}: {message}");
        assert!(message.contains(reason), "{code}: {message}");
    }
    let (status, _) = refused(&server, &key, &apply, json!({"code": "NOSUCH"})).await;
    assert_eq!(status, 404);
    let (status, _) = refused(&server, &key, &apply, json!({"code": "bad code!"})).await;
    assert_eq!(status, 404);
    // One code per cart: the second replaces the first.
    let cart = post(&server, &key, &apply, json!({"code": "FINAL20"})).await;
    assert_eq!(cart["discount"], 200);
    let cart = post(&server, &key, &apply, json!({"code": "FIVE"})).await;
    assert_eq!(
        (&cart["discount_code"]["code"], &cart["discount"]),
        (&json!("FIVE"), &json!(500))
    );
    let (status, cart) = server.call("DELETE", &apply, Some(&key), None).await;
    assert_eq!(
        (status, &cart["discount"], &cart["discount_code"]),
        (200, &json!(0), &Value::Null)
    );

    // Codes that cannot exist.
    for (body, why) in [
        (
            json!({"code": "X", "percent_off": "20", "amount_off": 5, "currency": "eur"}),
            "one of them",
        ),
        (json!({"code": "X", "amount_off": 5}), "currency"),
        (json!({"code": "X", "percent_off": "101"}), "percentage"),
        (json!({"code": "X", "percent_off": "0"}), "more than 0"),
        (
            json!({"code": "X", "percent_off": "12.34567"}),
            "percentage",
        ),
        (json!({"code": "", "percent_off": "5"}), "1 to 40"),
        (json!({"code": "FINAL20", "percent_off": "5"}), "exists"),
        (
            json!({"code": "X", "percent_off": "5", "starts_at": 10, "ends_at": 5}),
            "after",
        ),
        (
            json!({"code": "X", "percent_off": "5", "starts_at": "2027-01-01T00:00:00Z", "ends_at": "2026-12-31T23:00:00+00:00"}),
            "after",
        ),
        (
            json!({"code": "X", "percent_off": "5", "ends_at": "next tuesday"}),
            "RFC 3339",
        ),
    ] {
        let (_, message) = refused(&server, &key, "/v1/discount-codes", body.clone()).await;
        assert!(message.contains(why), "{body}: {message}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_catalogue_requests_are_refused_and_tenants_see_only_their_own() {
    let server = TestServer::start_with(|c| c.playback.country_header = "x-country".into()).await;
    let (_, key) = server.create_tenant("Creator").await;
    let (_, rival) = server.create_tenant("Rival").await;
    let (product_id, price_id, code_id) = catalogue(&server, &key).await;
    let rival_stream = server
        .call(
            "POST",
            "/v1/live-streams",
            Some(&rival),
            Some(json!({"playback_policy": "public"})),
        )
        .await
        .1;

    for (path, body, why) in [
        ("/v1/products", json!({"name": "X"}), "playback_ids"),
        (
            "/v1/products",
            json!({"name": "X", "all_content": true, "playback_ids": ["a"]}),
            "not both",
        ),
        (
            "/v1/products",
            json!({"name": "", "all_content": true}),
            "name",
        ),
        (
            "/v1/products",
            json!({"name": "X", "playback_ids": [rival_stream["playback_id"]]}),
            "not found",
        ),
        (
            "/v1/prices",
            json!({"product_id": product_id, "type": "one_time", "unit_amount": 5, "currency": "EURO"}),
            "ISO 4217",
        ),
        (
            "/v1/prices",
            json!({"product_id": product_id, "type": "one_time", "unit_amount": -5, "currency": "eur"}),
            "unit_amount",
        ),
        (
            "/v1/prices",
            json!({"product_id": product_id, "type": "rental", "unit_amount": 5, "currency": "eur"}),
            "rental_hours",
        ),
        (
            "/v1/prices",
            json!({"product_id": product_id, "type": "recurring", "unit_amount": 5, "currency": "eur"}),
            "interval",
        ),
        (
            "/v1/prices",
            json!({"product_id": product_id, "type": "one_time", "unit_amount": 5, "currency": "eur", "interval": "month"}),
            "recurring prices",
        ),
        (
            "/v1/prices",
            json!({"product_id": product_id, "type": "one_time", "unit_amount": 5, "currency": "eur", "tier": "big"}),
            "tier",
        ),
        (
            "/v1/prices",
            json!({"product_id": product_id, "type": "lease", "unit_amount": 5, "currency": "eur"}),
            "type",
        ),
        (
            "/v1/tax-rates",
            json!({"country": "DEU", "percentage": "19"}),
            "alpha-2",
        ),
        (
            "/v1/tax-rates",
            json!({"country": "DE", "percentage": "19"}),
            "exists",
        ),
        (
            "/v1/tax-rates",
            json!({"country": "US", "region": "C-A", "percentage": "7.25"}),
            "region",
        ),
        (
            "/v1/customers",
            json!({"email": "not an address"}),
            "address",
        ),
    ] {
        let (_, message) = refused(&server, &key, path, body.clone()).await;
        assert!(message.contains(why), "{path} {body}: {message}");
    }

    // Subscriptions in one cart renew on one interval, one at a time.
    let monthly = post(&server, &key, "/v1/prices",
        json!({"product_id": product_id, "type": "recurring", "unit_amount": 499, "currency": "eur", "interval": "month", "trial_days": 7})).await;
    let yearly = post(&server, &key, "/v1/prices",
        json!({"product_id": product_id, "type": "recurring", "unit_amount": 4999, "currency": "eur", "interval": "year"})).await;
    let cart = post(&server, &key, "/v1/carts", json!({"currency": "eur"})).await;
    let items = format!("/v1/carts/{}/items", cart["id"].as_str().unwrap());
    post(
        &server,
        &key,
        &items,
        json!({"price_id": monthly["id"], "quantity": 1}),
    )
    .await;
    let (_, m) = refused(
        &server,
        &key,
        &items,
        json!({"price_id": yearly["id"], "quantity": 1}),
    )
    .await;
    assert!(m.contains("one interval"), "{m}");
    let (_, m) = refused(
        &server,
        &key,
        &items,
        json!({"price_id": monthly["id"], "quantity": 2}),
    )
    .await;
    assert!(m.contains("quantity is 1"), "{m}");

    // The buyer's country: the request's, else the customer's, else the country header.
    let customer = post(
        &server,
        &key,
        "/v1/customers",
        json!({"email": "a@example.com", "country": "fr"}),
    )
    .await;
    let cart = post(
        &server,
        &key,
        "/v1/carts",
        json!({"currency": "eur", "customer_id": customer["id"]}),
    )
    .await;
    assert_eq!(cart["country"], "FR");
    let resp = server
        .client
        .post(server.url("/v1/carts"))
        .bearer_auth(&key)
        .header("x-country", "de")
        .json(&json!({"currency": "eur"}))
        .send()
        .await
        .unwrap();
    let cart: Value = resp.json().await.unwrap();
    assert_eq!(cart["country"], "DE");

    // Another tenant: nothing of this tenant's, by any id.
    for path in [
        format!("/v1/products/{product_id}"),
        format!("/v1/prices/{price_id}"),
        format!("/v1/customers/{}", customer["id"].as_str().unwrap()),
        format!("/v1/carts/{}", cart["id"].as_str().unwrap()),
    ] {
        let (status, _) = server.call("GET", &path, Some(&rival), None).await;
        assert_eq!(status, 404, "{path}");
        let (status, _) = server.call("GET", &path, Some(&key), None).await;
        assert_eq!(status, 200, "{path}");
    }
    for path in [
        "/v1/products",
        "/v1/prices",
        "/v1/discount-codes",
        "/v1/customers",
        "/v1/tax-rates",
    ] {
        let (_, list) = server.call("GET", path, Some(&rival), None).await;
        assert_eq!(list["data"], json!([]), "{path}");
        let (_, list) = server.call("GET", path, Some(&key), None).await;
        assert!(!list["data"].as_array().unwrap().is_empty(), "{path}");
    }
    let (_, codes) = server
        .call("GET", "/v1/discount-codes", Some(&key), None)
        .await;
    assert_eq!(codes["data"][0]["id"], code_id);
    // The rival cannot put this tenant's price in its cart, nor use its code.
    let theirs = post(&server, &rival, "/v1/carts", json!({"currency": "eur"})).await;
    let theirs_id = theirs["id"].as_str().unwrap();
    let (status, _) = refused(
        &server,
        &rival,
        &format!("/v1/carts/{theirs_id}/items"),
        json!({"price_id": price_id, "quantity": 1}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = refused(
        &server,
        &rival,
        &format!("/v1/carts/{theirs_id}/discount"),
        json!({"code": "FINAL20"}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = refused(
        &server,
        &rival,
        "/v1/prices",
        json!({"product_id": product_id, "type": "one_time", "unit_amount": 1, "currency": "eur"}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = refused(
        &server,
        &rival,
        &format!("/v1/prices/{price_id}"),
        json!({"active": false}),
    )
    .await;
    assert_eq!(status, 404);

    // The price is no longer sold: a cart refuses it, and one holding it cannot check out;
    // sold again, it checks out. Its amounts cannot be changed.
    let held = post(
        &server,
        &key,
        "/v1/carts",
        json!({"currency": "eur", "country": "DE"}),
    )
    .await;
    let held_id = held["id"].as_str().unwrap();
    post(
        &server,
        &key,
        &format!("/v1/carts/{held_id}/items"),
        json!({"price_id": price_id, "quantity": 1}),
    )
    .await;
    let retired = post(
        &server,
        &key,
        &format!("/v1/prices/{price_id}"),
        json!({"active": false}),
    )
    .await;
    assert_eq!(retired["active"], false, "{retired}");
    let (status, err) = refused(
        &server,
        &key,
        &format!("/v1/carts/{held_id}/items"),
        json!({"price_id": price_id, "quantity": 2}),
    )
    .await;
    assert_eq!(status, 409, "{err}");
    let checkout = json!({"provider": "stripe", "email": "late@example.com",
        "success_url": "https://example.com/ok", "cancel_url": "https://example.com/cart"});
    let (status, err) = refused(
        &server,
        &key,
        &format!("/v1/carts/{held_id}/checkout"),
        checkout,
    )
    .await;
    assert_eq!(status, 409, "{err}");
    assert!(err.contains("no longer sold"), "{err}");
    let (status, err) = refused(
        &server,
        &key,
        &format!("/v1/prices/{price_id}"),
        json!({"active": true, "unit_amount": 1}),
    )
    .await;
    assert_eq!(status, 400, "{err}");
    let again = post(
        &server,
        &key,
        &format!("/v1/prices/{price_id}"),
        json!({"active": true}),
    )
    .await;
    assert_eq!(again["active"], true, "{again}");
    server.stop().await;
}

/// A tenant selling a signed, paid live stream through (the fake) Stripe: (tenant key,
/// media, price id, webhook URL).
async fn paid_setup(server: &TestServer, stripe: &FakeStripe) -> (String, Media, String, String) {
    let (tenant_id, key) = server.create_tenant("Creator").await;
    let media = media_with(server, &tenant_id, &key, "signed").await;
    let (status, rules) = server
        .call(
            "PATCH",
            &format!("/v1/playback-ids/{}", media.playback_id),
            Some(&key),
            Some(json!({"requires_entitlement": true})),
        )
        .await;
    assert_eq!(status, 200, "{rules}");
    let (status, provider) = server
        .call(
            "PUT",
            "/v1/payment-providers/stripe",
            Some(&key),
            Some(json!({"secret_key": common::stripe::SECRET_KEY,
                "webhook_secret": common::stripe::WEBHOOK_SECRET, "base_url": stripe.base_url})),
        )
        .await;
    assert_eq!(status, 200, "{provider}");
    let webhook_url = provider["webhook_url"].as_str().unwrap().to_string();
    assert!(webhook_url.ends_with(&format!("/v1/webhooks/stripe/{tenant_id}")));
    let product = post(
        server,
        &key,
        "/v1/products",
        json!({"name": "Cup <final> & \"more\"", "playback_ids": [media.playback_id]}),
    )
    .await;
    let price = post(
        server,
        &key,
        "/v1/prices",
        json!({"product_id": product["id"], "type": "one_time", "unit_amount": 999, "currency": "eur"}),
    )
    .await;
    post(
        server,
        &key,
        "/v1/tax-rates",
        json!({"country": "DE", "percentage": "19"}),
    )
    .await;
    post(
        server,
        &key,
        "/v1/discount-codes",
        json!({"code": "FINAL20", "percent_off": "20", "max_per_customer": 1}),
    )
    .await;
    (
        key,
        media,
        price["id"].as_str().unwrap().to_string(),
        webhook_url,
    )
}

/// A cart of `price_id` with FINAL20, checked out with Stripe: (order id, session id,
/// customer id).
async fn checkout(
    server: &TestServer,
    key: &str,
    price_id: &str,
    email: &str,
) -> (String, String, String) {
    let out = try_checkout(server, key, price_id, json!({"email": email})).await;
    assert_eq!(out.0, 201, "{}", out.1);
    let out = out.1;
    // 999 − 199.8 → 200 = 799, + 19 % = 151.81 → 152: 951.
    assert_eq!(
        (&out["total"], &out["currency"]),
        (&json!(951), &json!("eur"))
    );
    let redirect = out["redirect_url"].as_str().unwrap();
    let session = redirect.rsplit('/').next().unwrap().to_string();
    assert!(session.starts_with("cs_test_"), "{redirect}");
    (
        out["order_id"].as_str().unwrap().to_string(),
        session,
        out["customer_id"].as_str().unwrap().to_string(),
    )
}

/// A cart of `price_id` with FINAL20, checked out with Stripe as `buyer` (email or
/// customer_id); the checkout's status and answer. The cart is closed after a 201.
async fn try_checkout(
    server: &TestServer,
    key: &str,
    price_id: &str,
    buyer: Value,
) -> (u16, Value) {
    let cart = post(
        server,
        key,
        "/v1/carts",
        json!({"currency": "eur", "country": "DE"}),
    )
    .await;
    let id = cart["id"].as_str().unwrap();
    post(
        server,
        key,
        &format!("/v1/carts/{id}/items"),
        json!({"price_id": price_id, "quantity": 1}),
    )
    .await;
    post(
        server,
        key,
        &format!("/v1/carts/{id}/discount"),
        json!({"code": "FINAL20"}),
    )
    .await;
    let mut body = json!({"provider": "stripe",
        "success_url": "https://example.com/thanks", "cancel_url": "https://example.com/cart"});
    for (k, v) in buyer.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, out) = server
        .call(
            "POST",
            &format!("/v1/carts/{id}/checkout"),
            Some(key),
            Some(body),
        )
        .await;
    if status == 201 {
        // The cart is closed now.
        let (closed, _) = server
            .call(
                "POST",
                &format!("/v1/carts/{id}/items"),
                Some(key),
                Some(json!({"price_id": price_id, "quantity": 2})),
            )
            .await;
        assert_eq!(closed, 409);
    }
    (status, out)
}

async fn paying_gets_the_key_and_a_full_refund_takes_it_away(server: &TestServer) {
    let stripe = FakeStripe::start();
    let (key, media, price_id, hook) = paid_setup(server, &stripe).await;
    let receiver = hooked(
        server,
        &key,
        json!([
            "order.paid",
            "order.refunded",
            "entitlement.granted",
            "entitlement.revoked"
        ]),
    )
    .await;
    let (order_id, session, customer) = checkout(server, &key, &price_id, "fan@example.com").await;
    let o = order(server, &key, &order_id).await;
    assert_eq!(
        (
            &o["status"],
            &o["discount"],
            &o["tax"],
            &o["lines"][0]["total"]
        ),
        (&json!("pending"), &json!(200), &json!(152), &json!(951))
    );
    assert_eq!(
        viewer_key(server, &key, &media, &customer).await,
        403,
        "not paid yet"
    );

    // The customer pays; Stripe's events arrive, signed.
    let events = stripe.pay(&session).await;
    let answers = stripe.deliver(&hook, &events, 1, 1, 0, false).await;
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    assert_eq!(
        answers[2].1["result"], "paid: 1 entitlements granted",
        "{answers:?}"
    );
    let o = order(server, &key, &order_id).await;
    assert_eq!(o["status"], "paid", "{o}");
    assert_eq!(viewer_key(server, &key, &media, &customer).await, 200);
    assert_eq!(viewer_key(server, &key, &media, "someone-else").await, 403);
    // Stripe retries a delivery: nothing happens twice.
    let again = stripe.deliver(&hook, &events[2..], 1, 1, 0, false).await;
    assert_eq!(again[0].1["duplicate"], true, "{again:?}");

    // A partial refund keeps access; Stripe's own charge.refunded that follows changes nothing.
    let (status, o) = server
        .call(
            "POST",
            &format!("/v1/orders/{order_id}/refunds"),
            Some(&key),
            Some(json!({"amount": 500})),
        )
        .await;
    assert_eq!(status, 200, "{o}");
    assert_eq!(
        (&o["status"], &o["amount_refunded"]),
        (&json!("paid"), &json!(500))
    );
    let payment = events[0]["data"]["object"]["id"].as_str().unwrap();
    let refunded = stripe.charge_event("charge.refunded", payment).await;
    let answers = stripe.deliver(&hook, &refunded, 1, 1, 0, false).await;
    assert_eq!(
        answers[0].1["result"], "refunded 500 of 951: access kept",
        "{answers:?}"
    );
    assert_eq!(viewer_key(server, &key, &media, &customer).await, 200);
    // More than is left is refused; the rest ends access at the next key request.
    let (status, _) = server
        .call(
            "POST",
            &format!("/v1/orders/{order_id}/refunds"),
            Some(&key),
            Some(json!({"amount": 452})),
        )
        .await;
    assert_eq!(status, 400);
    let (status, o) = server
        .call(
            "POST",
            &format!("/v1/orders/{order_id}/refunds"),
            Some(&key),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{o}");
    assert_eq!(
        (&o["status"], &o["amount_refunded"]),
        (&json!("refunded"), &json!(951))
    );
    assert_eq!(viewer_key(server, &key, &media, &customer).await, 403);
    let refunded = stripe.charge_event("charge.refunded", payment).await;
    let answers = stripe.deliver(&hook, &refunded, 1, 1, 0, false).await;
    assert_eq!(
        answers[0].1["result"], "refunded in full: 0 entitlements revoked",
        "{answers:?}"
    );
    // Every POST to Stripe carried an idempotency key.
    let keys = stripe.idempotency_keys().await;
    assert!(
        keys.contains(&format!("ferrocast-checkout-{order_id}"))
            && keys
                .iter()
                .filter(|k| k.starts_with("ferrocast-refund-"))
                .count()
                == 2,
        "{keys:?}"
    );

    // Its invoice, and a credit note per refund: numbered in sequence, the refunds' tax the
    // order's own (500 of 951 carries 500 × 152 / 951 = 79.9 → 80 of tax; the rest 72).
    let (_, docs) = server
        .call(
            "GET",
            &format!("/v1/invoices?order_id={order_id}"),
            Some(&key),
            None,
        )
        .await;
    let docs = docs["data"].as_array().unwrap().clone();
    let summary: Vec<(String, i64, i64)> = docs
        .iter()
        .map(|d| {
            (
                d["number"].as_str().unwrap().to_string(),
                d["total"].as_i64().unwrap(),
                d["tax"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("INV-000001".to_string(), 951, 152),
            ("CN-000001".to_string(), 500, 80),
            ("CN-000002".to_string(), 451, 72),
        ],
        "{docs:?}"
    );
    assert_eq!(docs[0]["lines"][0]["tax_rate"], "19");
    let page = server
        .client
        .get(server.url(&format!(
            "/v1/invoices/{}.html",
            docs[0]["id"].as_str().unwrap()
        )))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(
        page.contains("Invoice INV-000001") && page.contains("9.51 EUR"),
        "{page}"
    );
    assert!(
        page.contains("Cup &lt;final&gt; &amp; &quot;more&quot;") && !page.contains("<final>"),
        "the product name is escaped: {page}"
    );

    // Revenue: paid, then refunded in full; by playback id with its (no) views.
    let (status, rev) = server
        .call(
            "GET",
            "/v1/analytics/revenue?group_by=product&timeframe=24h",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{rev}");
    let row = &rev["data"][0];
    assert_eq!(
        (
            &row["gross"],
            &row["refunded"],
            &row["net"],
            &row["orders"],
            &row["currency"]
        ),
        (
            &json!(951),
            &json!(951),
            &json!(0),
            &json!(1),
            &json!("eur")
        ),
        "{rev}"
    );
    let (_, rev) = server
        .call(
            "GET",
            "/v1/analytics/revenue?group_by=playback_id",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(rev["data"][0]["key"], json!(media.playback_id), "{rev}");
    assert_eq!(
        (&rev["data"][0]["views"], &rev["data"][0]["purchases"]),
        (&json!(0), &json!(1))
    );
    // Four views of it (players' beacons): one purchase per four views.
    for i in 0..4 {
        common::paid::watched(server, &media.playback_id, &format!("view-conversion-{i}")).await;
    }
    let (_, rev) = server
        .call(
            "GET",
            "/v1/analytics/revenue?group_by=playback_id",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(
        (
            &rev["data"][0]["views"],
            &rev["data"][0]["purchases"],
            &rev["data"][0]["conversion"]
        ),
        (&json!(4), &json!(1), &json!(0.25)),
        "{rev}"
    );
    let (status, _) = server
        .call(
            "GET",
            "/v1/analytics/revenue?group_by=color",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 400);

    // The customer used FINAL20 once (max_per_customer 1) — but that order is refunded now,
    // so a second checkout may use it; the code's use count went up with the payment.
    let (_, codes) = server
        .call("GET", "/v1/discount-codes", Some(&key), None)
        .await;
    assert_eq!(codes["data"][0]["times_redeemed"], 1);

    // The tenant's webhooks told the story, in order for each object (objects are sent
    // side by side): paid, refunded in part, then in full; the entitlement granted, then
    // revoked. Stripe's own charge.refunded events told nothing.
    let got = at_least(&receiver, 5).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(common::hooks::received(&receiver).await.len(), 5);
    let orders: Vec<&Value> = got
        .iter()
        .filter(|e| e["body"]["data"]["id"] == order_id.as_str())
        .collect();
    assert_eq!(
        types_for(&got, &order_id),
        ["order.paid", "order.refunded", "order.refunded"],
        "{got:#?}"
    );
    assert_eq!(orders[0]["body"]["data"]["status"], "paid");
    assert_eq!(orders[1]["body"]["data"]["amount_refunded"], 500);
    assert_eq!(orders[2]["body"]["data"]["status"], "refunded");
    let granted = got
        .iter()
        .find(|e| e["body"]["type"] == "entitlement.granted")
        .unwrap();
    assert_eq!(granted["body"]["data"]["viewer"], customer.as_str());
    let entitlement = granted["body"]["data"]["id"].as_str().unwrap();
    assert_eq!(
        types_for(&got, entitlement),
        ["entitlement.granted", "entitlement.revoked"]
    );
    assert!(
        got.iter()
            .any(|e| e["body"]["type"] == "entitlement.revoked"
                && e["body"]["data"]["revoked_at"].is_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paying_gets_the_key_and_a_full_refund_takes_it_away_sqlite() {
    let server = TestServer::start_with(|c| {
        c.commerce.allow_plain_http_providers = true;
        c.webhooks.allow_private_targets = true;
    })
    .await;
    paying_gets_the_key_and_a_full_refund_takes_it_away(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paying_gets_the_key_and_a_full_refund_takes_it_away_postgres() {
    let pg = PgDatabase::create().await;
    let server = TestServer::start_on(&pg, |c| {
        c.commerce.allow_plain_http_providers = true;
        c.webhooks.allow_private_targets = true;
    })
    .await;
    paying_gets_the_key_and_a_full_refund_takes_it_away(&server).await;
    server.stop().await;
}

async fn webhooks_are_verified_and_processed_once_in_any_order(server: &TestServer) {
    let stripe = FakeStripe::start();
    let (key, media, price_id, hook) = paid_setup(server, &stripe).await;

    // 20 concurrent copies of one completion: one entitlement.
    let (order_id, session, customer) = checkout(server, &key, &price_id, "a@example.com").await;
    let events = stripe.pay(&session).await;
    let completed = [events[2].clone()];
    let answers = stripe.deliver(&hook, &completed, 20, 20, 0, false).await;
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    let processed = answers
        .iter()
        .filter(|(_, b)| b["duplicate"] == false)
        .count();
    assert_eq!(processed, 1, "{answers:?}");
    let (_, ents) = server
        .call(
            "GET",
            &format!("/v1/entitlements?viewer={customer}"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(ents["data"].as_array().unwrap().len(), 1, "{ents}");
    assert_eq!(order(server, &key, &order_id).await["status"], "paid");

    // A dispute (its own object, naming only the payment): access ends at once.
    assert_eq!(viewer_key(server, &key, &media, &customer).await, 200);
    let payment1 = events[0]["data"]["object"]["id"].as_str().unwrap();
    let dispute = stripe
        .charge_event("charge.dispute.created", payment1)
        .await;
    assert_eq!(dispute[0]["data"]["object"]["object"], "dispute");
    let answers = stripe.deliver(&hook, &dispute, 1, 1, 0, false).await;
    assert_eq!(
        answers[0].1["result"], "disputed: 1 entitlements revoked",
        "{answers:?}"
    );
    assert_eq!(viewer_key(server, &key, &media, &customer).await, 403);
    assert_eq!(order(server, &key, &order_id).await["disputed"], true);

    // A bad signature, and a stale one: 400, stored as unverified, nothing done.
    let (order2, session2, customer2) = checkout(server, &key, &price_id, "b@example.com").await;
    let events2 = stripe.pay(&session2).await;
    let done2 = [events2[2].clone()];
    let bad = stripe.deliver(&hook, &done2, 1, 1, 0, true).await;
    assert_eq!(bad[0].0, 400, "{bad:?}");
    assert!(
        bad[0].1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no v1 signature matches")
    );
    let stale = stripe.deliver(&hook, &done2, 1, 1, 400, false).await;
    assert_eq!(stale[0].0, 400, "{stale:?}");
    assert!(
        stale[0].1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("300 s")
    );
    assert_eq!(order(server, &key, &order2).await["status"], "pending");
    // A completion signed by Stripe but of another Checkout Session that names this order
    // (a Payment Link's client_reference_id is the buyer's to set), or of this one for
    // another amount, pays nothing.
    let mut other = done2[0].clone();
    other["id"] = json!("evt_test_other_session");
    other["data"]["object"]["id"] = json!("cs_test_payment_link");
    other["data"]["object"]["amount_total"] = json!(100);
    let mut short = done2[0].clone();
    short["id"] = json!("evt_test_short");
    short["data"]["object"]["amount_total"] = json!(100);
    let answers = stripe.deliver(&hook, &[other, short], 1, 1, 0, false).await;
    assert!(
        answers[0].1["result"]
            .as_str()
            .unwrap()
            .contains("not from the order's checkout"),
        "{answers:?}"
    );
    assert!(
        answers[1].1["result"]
            .as_str()
            .unwrap()
            .contains("100 EUR paid for an order of 951"),
        "{answers:?}"
    );
    assert_eq!(order(server, &key, &order2).await["status"], "pending");
    // A type Ferrocast does not act on: 200, stored.
    let mut unknown = events2[0].clone();
    unknown["id"] = json!("evt_test_unknown");
    unknown["type"] = json!("customer.created");
    let answers = stripe.deliver(&hook, &[unknown], 1, 1, 0, false).await;
    assert_eq!(answers[0].0, 200);
    assert_eq!(answers[0].1["result"], "customer.created: not acted on");

    // Out of order: the creator refunds in Stripe's dashboard, and the refund's event comes
    // before the payment's. The order is refunded and grants nothing.
    let payment2 = events2[0]["data"]["object"]["id"].as_str().unwrap();
    stripe.refund(payment2, 951).await;
    let refunded = stripe.charge_event("charge.refunded", payment2).await;
    let answers = stripe.deliver(&hook, &refunded, 1, 1, 0, false).await;
    assert_eq!(answers[0].0, 200, "{answers:?}");
    let answers = stripe.deliver(&hook, &done2, 1, 1, 0, false).await;
    assert_eq!(
        answers[0].1["result"], "refunded before it was paid: nothing granted",
        "{answers:?}"
    );
    assert_eq!(order(server, &key, &order2).await["status"], "refunded");
    assert_eq!(viewer_key(server, &key, &media, &customer2).await, 403);

    // The inbox: every delivery, verified or not; a processed event replays to no effect.
    let (_, inbox) = server
        .call("GET", "/v1/webhook-events?limit=1000", Some(&key), None)
        .await;
    let inbox = inbox["data"].as_array().unwrap();
    assert_eq!(inbox.iter().filter(|e| e["verified"] == false).count(), 2);
    let first = inbox
        .iter()
        .find(|e| e["event_id"] == completed[0]["id"])
        .unwrap();
    assert_eq!(first["result"], "paid: 1 entitlements granted");
    let (status, replayed) = server
        .call(
            "POST",
            &format!(
                "/v1/webhook-events/{}/replay",
                first["id"].as_str().unwrap()
            ),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{replayed}");
    assert_eq!(replayed["result"], "order already paid");
    let unverified = inbox.iter().find(|e| e["verified"] == false).unwrap();
    let (status, _) = server
        .call(
            "POST",
            &format!(
                "/v1/webhook-events/{}/replay",
                unverified["id"].as_str().unwrap()
            ),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 409);

    // Another tenant's URL, or one with no Stripe set up, takes nothing.
    let (other_id, _) = server.create_tenant("Other").await;
    let other = hook.replace(hook.rsplit('/').next().unwrap(), &other_id);
    let answers = stripe.deliver(&other, &done2, 1, 1, 0, false).await;
    assert_eq!(answers[0].0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_verified_and_processed_once_in_any_order_sqlite() {
    let server = TestServer::start_with(|c| c.commerce.allow_plain_http_providers = true).await;
    webhooks_are_verified_and_processed_once_in_any_order(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_verified_and_processed_once_in_any_order_postgres() {
    let pg = PgDatabase::create().await;
    let server = TestServer::start_on(&pg, |c| c.commerce.allow_plain_http_providers = true).await;
    webhooks_are_verified_and_processed_once_in_any_order(&server).await;
    server.stop().await;
}

/// Stripe down at checkout: 503, and the cart stays the buyer's to try again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_stripe_cannot_take_leaves_the_cart_open() {
    let server = TestServer::start_with(|c| c.commerce.allow_plain_http_providers = true).await;
    let stripe = FakeStripe::start();
    let (key, _, price_id, _) = paid_setup(&server, &stripe).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let (status, _) = server
        .call(
            "PUT",
            "/v1/payment-providers/stripe",
            Some(&key),
            Some(json!({"secret_key": "sk_test_x", "webhook_secret": "whsec_x", "base_url": dead})),
        )
        .await;
    assert_eq!(status, 200);
    let cart = post(&server, &key, "/v1/carts", json!({"currency": "eur"})).await;
    let id = cart["id"].as_str().unwrap();
    post(
        &server,
        &key,
        &format!("/v1/carts/{id}/items"),
        json!({"price_id": price_id, "quantity": 1}),
    )
    .await;
    let body = json!({"provider": "stripe", "email": "c@example.com",
        "success_url": "https://example.com/ok", "cancel_url": "https://example.com/no"});
    let (status, err) = server
        .call(
            "POST",
            &format!("/v1/carts/{id}/checkout"),
            Some(&key),
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, 503, "{err}");
    let (_, cart) = server
        .call("GET", &format!("/v1/carts/{id}"), Some(&key), None)
        .await;
    assert_eq!(cart["status"], "open");
    let (_, orders) = server.call("GET", "/v1/orders", Some(&key), None).await;
    assert_eq!(orders["data"], json!([]));
    // A wrong key: Stripe refuses (401), the checkout is 422 and the cart open.
    let (status, _) = server
        .call(
            "PUT",
            "/v1/payment-providers/stripe",
            Some(&key),
            Some(json!({"secret_key": "sk_test_wrong", "webhook_secret": "whsec_x", "base_url": stripe.base_url})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, err) = server
        .call(
            "POST",
            &format!("/v1/carts/{id}/checkout"),
            Some(&key),
            Some(body),
        )
        .await;
    assert_eq!(status, 422, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Invalid API Key"),
        "{err}"
    );
    // Plain http:// provider URLs are refused unless configured for tests.
    let strict = TestServer::start().await;
    let (_, k) = strict.create_tenant("T").await;
    let (status, _) = strict
        .call(
            "PUT",
            "/v1/payment-providers/stripe",
            Some(&k),
            Some(json!({"secret_key": "sk", "webhook_secret": "wh", "base_url": stripe.base_url})),
        )
        .await;
    assert_eq!(status, 400);
    // Nor any host but Stripe's (an internal address, say).
    for (url, want) in [
        ("https://10.0.0.1", 400),
        ("https://api.stripe.com:8443", 400),
        ("https://api.stripe.com", 200),
    ] {
        let (status, _) = strict
            .call(
                "PUT",
                "/v1/payment-providers/stripe",
                Some(&k),
                Some(json!({"secret_key": "sk", "webhook_secret": "wh", "base_url": url})),
            )
            .await;
        assert_eq!(status, want, "{url}");
    }
    strict.stop().await;
    server.stop().await;
}

/// The official Stripe client against the fake: every answer it gives parses in Stripe's own
/// models, idempotency and errors behave as Stripe's do, and its signatures verify.
#[test]
fn the_stripe_fake_speaks_stripes_wire_format() {
    let out = common::fakes::FakeProcess::selftest("stripe_fake.py");
    assert_eq!(out["selftest"], "ok", "{out}");
}

/// A pass to everything the creator has, rented for 48 hours from the first play; the
/// customer's second use of a once-per-customer code is refused at checkout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_all_content_rental_starts_at_the_first_play_and_codes_count_per_customer() {
    let server = TestServer::start_with(|c| c.commerce.allow_plain_http_providers = true).await;
    let stripe = FakeStripe::start();
    let (key, media, price_id, hook) = paid_setup(&server, &stripe).await;
    let pass = post(
        &server,
        &key,
        "/v1/products",
        json!({"name": "Weekend pass", "all_content": true}),
    )
    .await;
    let rental = post(
        &server,
        &key,
        "/v1/prices",
        json!({"product_id": pass["id"], "type": "rental", "unit_amount": 999, "currency": "eur",
            "rental_hours": 48, "rental_starts": "first_play"}),
    )
    .await;
    let rental_id = rental["id"].as_str().unwrap();
    let (_, session, customer) = checkout(&server, &key, rental_id, "pass@example.com").await;
    let events = stripe.pay(&session).await;
    let answers = stripe.deliver(&hook, &events, 1, 1, 0, false).await;
    assert_eq!(
        answers[2].1["result"], "paid: 1 entitlements granted",
        "{answers:?}"
    );
    let url = format!("/v1/entitlements?viewer={customer}");
    let e = server.call("GET", &url, Some(&key), None).await.1;
    assert_eq!(
        (&e["data"][0]["playback_id"], &e["data"][0]["expires_at"]),
        (&json!("*"), &Value::Null),
        "the clock has not started: {e}"
    );
    // The first key request starts the 48 hours.
    let before = ferrocast::clock::unix_now() as i64;
    assert_eq!(viewer_key(&server, &key, &media, &customer).await, 200);
    let e = server.call("GET", &url, Some(&key), None).await.1;
    let expires = e["data"][0]["expires_at"].as_str().expect("started");
    let from_now = chrono::DateTime::parse_from_rfc3339(expires)
        .unwrap()
        .timestamp()
        - before;
    assert!(
        (48 * 3600 - 60..=48 * 3600 + 60).contains(&from_now),
        "{from_now} s"
    );
    assert_eq!(viewer_key(&server, &key, &media, &customer).await, 200);

    // FINAL20 is once per customer: this customer's next checkout with it is refused.
    let (status, err) =
        try_checkout(&server, &key, &price_id, json!({ "customer_id": customer })).await;
    assert_eq!(status, 409, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("used the code as often"),
        "{err}"
    );
    // Nor can the same buyer come back by email (as a publishable key's checkout does).
    let (status, err) = try_checkout(
        &server,
        &key,
        &price_id,
        json!({ "email": "PASS@example.com" }),
    )
    .await;
    assert_eq!(status, 409, "{err}");
    server.stop().await;
}

/// A cart of `price_id` with `code`, checked out with Stripe by `email`.
async fn checkout_with_code(
    server: &TestServer,
    key: &str,
    price_id: &str,
    code: &str,
    email: &str,
) -> (u16, Value) {
    common::shop::checkout_with_code(server, key, price_id, "stripe", Some(code), email).await
}

/// A code's limits hold at checkout, before anyone pays: checkouts not yet paid for hold a
/// use each, however many run at once; an expired checkout gives its use back.
async fn a_codes_limits_hold_for_checkouts_not_yet_paid(server: &TestServer) {
    let stripe = FakeStripe::start();
    let (key, _, price_id, hook) = paid_setup(server, &stripe).await;
    post(
        server,
        &key,
        "/v1/discount-codes",
        json!({"code": "TWICE", "percent_off": "10", "max_redemptions": 2}),
    )
    .await;
    // Six buyers at once: two get the code.
    let tries = (0..6).map(|i| {
        let (key, price_id) = (&key, &price_id);
        async move {
            checkout_with_code(server, key, price_id, "TWICE", &format!("b{i}@example.com")).await
        }
    });
    let answers = futures::future::join_all(tries).await;
    let won: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 201)
        .map(|(_, o)| o)
        .collect();
    assert_eq!(won.len(), 2, "{answers:?}");
    for (status, out) in answers.iter().filter(|(s, _)| *s != 201) {
        assert_eq!(*status, 409, "{out}");
        assert!(
            out["error"]["message"]
                .as_str()
                .unwrap()
                .contains("used up"),
            "{out}"
        );
    }
    // One checkout expires unpaid: its use is free again, and taken by the next buyer.
    let session = won[0]["redirect_url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap();
    let expired = json!({"id": "evt_test_expired", "object": "event", "type": "checkout.session.expired",
        "created": ferrocast::clock::unix_now(), "livemode": false,
        "data": {"object": {"id": session, "object": "checkout.session", "status": "expired",
            "payment_status": "unpaid", "client_reference_id": won[0]["order_id"]}}});
    let results = stripe.deliver(&hook, &[expired], 1, 1, 0, false).await;
    assert_eq!(results[0].0, 200, "{results:?}");
    let (status, out) =
        checkout_with_code(server, &key, &price_id, "TWICE", "late@example.com").await;
    assert_eq!(status, 201, "{out}");
    let (status, out) =
        checkout_with_code(server, &key, &price_id, "TWICE", "later@example.com").await;
    assert_eq!(status, 409, "{out}");

    // Once per customer: a second checkout not yet paid for is refused too.
    let (status, out) =
        checkout_with_code(server, &key, &price_id, "FINAL20", "one@example.com").await;
    assert_eq!(status, 201, "{out}");
    let (status, out) =
        checkout_with_code(server, &key, &price_id, "FINAL20", "one@example.com").await;
    assert_eq!(status, 409, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_codes_limits_hold_for_checkouts_not_yet_paid_sqlite() {
    let server = TestServer::start_with(|c| c.commerce.allow_plain_http_providers = true).await;
    a_codes_limits_hold_for_checkouts_not_yet_paid(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_codes_limits_hold_for_checkouts_not_yet_paid_postgres() {
    let pg = PgDatabase::create().await;
    let server = TestServer::start_on(&pg, |c| c.commerce.allow_plain_http_providers = true).await;
    a_codes_limits_hold_for_checkouts_not_yet_paid(&server).await;
    server.stop().await;
}

/// A Checkout Session event as Stripe sends it, for order `order_id`'s session.
fn session_event(id: &str, kind: &str, session: &str, order_id: &str, extra: Value) -> Value {
    let mut object = json!({"id": session, "object": "checkout.session", "mode": "payment",
        "client_reference_id": order_id, "metadata": {"order_id": order_id},
        "currency": "eur", "amount_total": 951});
    for (k, v) in extra.as_object().unwrap() {
        object[k] = v.clone();
    }
    json!({"id": id, "object": "event", "type": kind, "api_version": "2024-06-20",
        "created": ferrocast::clock::unix_now(), "livemode": false, "data": {"object": object}})
}

/// A delayed payment method (a bank debit): Checkout completes unpaid, and only the
/// session's own outcome settles the order; a declined attempt inside Checkout does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_payment_waits_for_its_outcome() {
    let server = TestServer::start_with(|c| c.commerce.allow_plain_http_providers = true).await;
    let stripe = FakeStripe::start();
    let (key, media, price_id, hook) = paid_setup(&server, &stripe).await;
    let send = |events: Vec<Value>| {
        let (stripe, hook) = (&stripe, &hook);
        async move {
            let answers = stripe.deliver(hook, &events, 1, 1, 0, false).await;
            assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
            answers[0].1["result"].as_str().unwrap().to_string()
        }
    };

    // Succeeds days later.
    let (order_id, session, customer) =
        checkout(&server, &key, &price_id, "debit@example.com").await;
    let unpaid = json!({"payment_status": "unpaid", "status": "complete", "payment_intent": "pi_test_debit"});
    assert_eq!(
        send(vec![session_event(
            "evt_t_completed",
            "checkout.session.completed",
            &session,
            &order_id,
            unpaid
        )])
        .await,
        "payment not settled yet: waiting"
    );
    assert_eq!(order(&server, &key, &order_id).await["status"], "pending");
    assert_eq!(viewer_key(&server, &key, &media, &customer).await, 403);
    let paid =
        json!({"payment_status": "paid", "status": "complete", "payment_intent": "pi_test_debit"});
    assert_eq!(
        send(vec![session_event(
            "evt_t_async_ok",
            "checkout.session.async_payment_succeeded",
            &session,
            &order_id,
            paid
        )])
        .await,
        "paid: 1 entitlements granted"
    );
    assert_eq!(order(&server, &key, &order_id).await["status"], "paid");
    assert_eq!(viewer_key(&server, &key, &media, &customer).await, 200);

    // Declined once inside Checkout (the buyer may try again there), then failed for good.
    let (order_id, session, customer) =
        checkout(&server, &key, &price_id, "bounce@example.com").await;
    let unpaid = json!({"payment_status": "unpaid", "status": "complete"});
    send(vec![session_event(
        "evt_t_completed2",
        "checkout.session.completed",
        &session,
        &order_id,
        unpaid.clone(),
    )])
    .await;
    let declined = json!({"id": "evt_t_declined", "object": "event", "type": "payment_intent.payment_failed",
        "created": ferrocast::clock::unix_now(), "livemode": false,
        "data": {"object": {"id": "pi_test_bounce", "object": "payment_intent", "status": "requires_payment_method",
            "metadata": {"order_id": order_id}}}});
    assert_eq!(
        send(vec![declined]).await,
        "payment not settled yet: waiting"
    );
    assert_eq!(order(&server, &key, &order_id).await["status"], "pending");
    send(vec![session_event(
        "evt_t_async_failed",
        "checkout.session.async_payment_failed",
        &session,
        &order_id,
        unpaid,
    )])
    .await;
    assert_eq!(order(&server, &key, &order_id).await["status"], "failed");
    assert_eq!(viewer_key(&server, &key, &media, &customer).await, 403);
    server.stop().await;
}

/// A subscription with a free trial: Checkout asks Stripe for the trial, access starts at
/// once, the first invoice is for nothing and counts nothing in revenue; the first charge
/// after the trial is invoiced and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_free_trial_plays_at_once_and_is_charged_after() {
    let server = TestServer::start_with(|c| c.commerce.allow_plain_http_providers = true).await;
    let stripe = FakeStripe::start();
    let (key, media, _, hook) = paid_setup(&server, &stripe).await;
    let (_, products) = server.call("GET", "/v1/products", Some(&key), None).await;
    let monthly = post(
        &server,
        &key,
        "/v1/prices",
        json!({"product_id": products["data"][0]["id"], "type": "recurring", "unit_amount": 1189,
            "currency": "eur", "tax_behavior": "inclusive", "interval": "month", "trial_days": 7}),
    )
    .await;
    let (status, out) = try_checkout(
        &server,
        &key,
        monthly["id"].as_str().unwrap(),
        json!({"email": "trial@example.com"}),
    )
    .await;
    assert_eq!(status, 201, "{out}");
    let order_id = out["order_id"].as_str().unwrap();
    let customer = out["customer_id"].as_str().unwrap();
    let session = out["redirect_url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap();
    let events = stripe.pay(session).await;
    let sub = &events[0]["data"]["object"];
    assert_eq!(
        sub["status"], "trialing",
        "Stripe was asked for the trial: {sub}"
    );
    let days = (sub["current_period_end"].as_i64().unwrap()
        - sub["current_period_start"].as_i64().unwrap())
        / 86400;
    assert_eq!(days, 7);
    assert_eq!(events[1]["data"]["object"]["amount_paid"], 0);
    let answers = stripe.deliver(&hook, &events, 1, 1, 0, false).await;
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    assert_eq!(viewer_key(&server, &key, &media, customer).await, 200);
    let srv = &server;
    let invoices = || async {
        let url = format!("/v1/invoices?order_id={order_id}");
        let (_, docs) = srv.call("GET", &url, Some(&key), None).await;
        docs["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["total"].as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(invoices().await, [0]);
    let gross = || async {
        let (_, rev) = srv
            .call(
                "GET",
                "/v1/analytics/revenue?group_by=product&timeframe=24h",
                Some(&key),
                None,
            )
            .await;
        (
            rev["data"][0]["gross"].as_i64().unwrap(),
            rev["data"][0]["orders"].as_i64().unwrap(),
        )
    };
    assert_eq!(gross().await, (0, 1));
    // The trial ends: the first charge.
    let charged = stripe.renew(sub["id"].as_str().unwrap()).await;
    let amount = charged[0]["data"]["object"]["amount_paid"]
        .as_i64()
        .unwrap();
    assert_eq!(amount, out["total"].as_i64().unwrap());
    let answers = stripe.deliver(&hook, &charged, 1, 1, 0, false).await;
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    assert_eq!(invoices().await, [0, amount]);
    assert_eq!(gross().await, (amount, 2));
    assert_eq!(viewer_key(&server, &key, &media, customer).await, 200);
    server.stop().await;
}

/// A monthly subscription: paid, its access runs to the period's end plus the grace; a
/// renewal extends it; canceled at period end it keeps playing until Stripe deletes it at
/// that end, and then the key is refused; a late renewal event changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_renews_and_ends_at_its_period_end() {
    let server = TestServer::start_with(|c| {
        c.commerce.allow_plain_http_providers = true;
        c.commerce.subscription_grace_s = 3600;
        c.webhooks.allow_private_targets = true;
    })
    .await;
    let stripe = FakeStripe::start();
    let (key, media, _, hook) = paid_setup(&server, &stripe).await;
    let receiver = hooked(&server, &key, json!(["*"])).await;
    let (_, products) = server.call("GET", "/v1/products", Some(&key), None).await;
    let monthly = post(
        &server,
        &key,
        "/v1/prices",
        json!({"product_id": products["data"][0]["id"], "type": "recurring", "unit_amount": 1189,
            "currency": "eur", "tax_behavior": "inclusive", "interval": "month"}),
    )
    .await;
    let (status, out) = try_checkout(
        &server,
        &key,
        monthly["id"].as_str().unwrap(),
        json!({"email": "sub@example.com"}),
    )
    .await;
    assert_eq!(status, 201, "{out}");
    let session = out["redirect_url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap();
    let customer = out["customer_id"].as_str().unwrap();
    let events = stripe.pay(session).await;
    let answers = stripe.deliver(&hook, &events, 1, 1, 0, false).await;
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    assert_eq!(viewer_key(&server, &key, &media, customer).await, 200);
    let (_, subs) = server
        .call(
            "GET",
            &format!("/v1/subscriptions?customer_id={customer}"),
            Some(&key),
            None,
        )
        .await;
    let sub = &subs["data"][0];
    assert_eq!(
        (&sub["status"], &sub["cancel_at_period_end"]),
        (&json!("active"), &json!(false)),
        "{subs}"
    );
    let period_end = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
            .unwrap()
            .timestamp()
    };
    let first_end = period_end(&sub["current_period_end"]);
    let url = format!("/v1/entitlements?viewer={customer}");
    let access_end = |e: Value| period_end(&e["data"][0]["expires_at"]);
    assert_eq!(
        access_end(server.call("GET", &url, Some(&key), None).await.1),
        first_end + 3600
    );

    // Renewed: the access follows the new period.
    let provider_sub = sub["provider_subscription"].as_str().unwrap();
    let renewal = stripe.renew(provider_sub).await;
    let answers = stripe.deliver(&hook, &renewal, 1, 1, 0, false).await;
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    let second_end = first_end + 30 * 86400;
    assert_eq!(
        access_end(server.call("GET", &url, Some(&key), None).await.1),
        second_end + 3600
    );

    // A payment fails and Stripe marks the subscription unpaid: access ends. The renewal's
    // older update arriving after it does not bring access back; a newer paid invoice does.
    let now = ferrocast::clock::unix_now() as i64;
    let mut unpaid = renewal[1].clone();
    assert_eq!(unpaid["type"], "customer.subscription.updated");
    unpaid["id"] = json!("evt_test_unpaid");
    unpaid["created"] = json!(now + 5);
    unpaid["data"]["object"]["status"] = json!("unpaid");
    let mut older = renewal[1].clone();
    older["id"] = json!("evt_test_older_update");
    older["created"] = json!(now - 60);
    let mut paid_again = renewal[0].clone();
    assert_eq!(paid_again["type"], "invoice.paid");
    paid_again["id"] = json!("evt_test_paid_again");
    paid_again["created"] = json!(now + 10);
    stripe.deliver(&hook, &[unpaid], 1, 1, 0, false).await;
    assert_eq!(viewer_key(&server, &key, &media, customer).await, 403);
    stripe.deliver(&hook, &[older], 1, 1, 0, false).await;
    assert_eq!(viewer_key(&server, &key, &media, customer).await, 403);
    stripe.deliver(&hook, &[paid_again], 1, 1, 0, false).await;
    assert_eq!(viewer_key(&server, &key, &media, customer).await, 200);

    // Canceled at the period's end: still playing until then.
    let (status, canceled) = server
        .call(
            "POST",
            &format!("/v1/subscriptions/{}/cancel", sub["id"].as_str().unwrap()),
            Some(&key),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{canceled}");
    assert_eq!(
        (&canceled["status"], &canceled["cancel_at_period_end"]),
        (&json!("active"), &json!(true))
    );
    assert_eq!(viewer_key(&server, &key, &media, customer).await, 200);
    // Stripe deletes it at the period's end: the key is refused from then on.
    let deleted = stripe.end(provider_sub).await;
    let answers = stripe.deliver(&hook, &deleted, 1, 1, 0, false).await;
    assert_eq!(
        answers[0].1["result"], "subscription canceled: 1 entitlements ended",
        "{answers:?}"
    );
    assert_eq!(viewer_key(&server, &key, &media, customer).await, 403);
    // The renewal's events again, late and out of order: still ended.
    let mut late = renewal.clone();
    for e in &mut late {
        e["id"] = json!(format!("{}_late", e["id"].as_str().unwrap()));
    }
    let answers = stripe.deliver(&hook, &late, 1, 1, 0, false).await;
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    assert_eq!(viewer_key(&server, &key, &media, customer).await, 403);
    let (_, subs) = server
        .call(
            "GET",
            &format!("/v1/subscriptions?customer_id={customer}"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(subs["data"][0]["status"], "canceled");

    // Its webhooks, in order for each object: the order paid; the subscription renewed
    // and canceled; its access granted, ended when unpaid, granted again when paid, and
    // ended at the cancel. The late renewal events told nothing.
    let got = at_least(&receiver, 7).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let got_now = common::hooks::received(&receiver).await;
    assert_eq!(got_now.len(), got.len(), "{got_now:#?}");
    let mut all = types(&got);
    all.sort();
    assert_eq!(
        all,
        [
            "entitlement.granted",
            "entitlement.granted",
            "entitlement.revoked",
            "entitlement.revoked",
            "order.paid",
            "subscription.canceled",
            "subscription.renewed",
        ],
        "{got:#?}"
    );
    let sub_id = sub["id"].as_str().unwrap();
    assert_eq!(
        types_for(&got, sub_id),
        ["subscription.renewed", "subscription.canceled"]
    );
    let granted = got
        .iter()
        .find(|e| e["body"]["type"] == "entitlement.granted")
        .unwrap();
    assert_eq!(granted["body"]["data"]["viewer"], customer);
    assert_eq!(
        types_for(&got, granted["body"]["data"]["id"].as_str().unwrap()),
        [
            "entitlement.granted",
            "entitlement.revoked",
            "entitlement.granted",
            "entitlement.revoked"
        ]
    );
    server.stop().await;
}

/// A subscription is charged each period: each charge has its own payment intent (which
/// carries none of Ferrocast's metadata), its own invoice and its place in revenue. A refund
/// of a period's charge, made in Stripe's dashboard or through the API, finds its order by
/// that payment: in part it keeps access, in full it ends access until a later period is paid;
/// a dispute of a charge revokes it.
async fn a_subscriptions_periods_are_invoiced_refunded_and_disputed(server: &TestServer) {
    let stripe = FakeStripe::start();
    let (key, media, _, hook) = paid_setup(server, &stripe).await;
    let (_, products) = server.call("GET", "/v1/products", Some(&key), None).await;
    let monthly = post(
        server,
        &key,
        "/v1/prices",
        json!({"product_id": products["data"][0]["id"], "type": "recurring", "unit_amount": 1189,
            "currency": "eur", "tax_behavior": "inclusive", "interval": "month"}),
    )
    .await;
    let (status, out) = try_checkout(
        server,
        &key,
        monthly["id"].as_str().unwrap(),
        json!({"email": "periods@example.com"}),
    )
    .await;
    assert_eq!(status, 201, "{out}");
    let order_id = out["order_id"].as_str().unwrap().to_string();
    let customer = out["customer_id"].as_str().unwrap().to_string();
    let session = out["redirect_url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap();
    let delivered = |events: Vec<Value>| {
        let (stripe, hook) = (&stripe, &hook);
        async move {
            let answers = stripe.deliver(hook, &events, 1, 1, 0, false).await;
            assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
            answers
                .iter()
                .map(|(_, b)| b["result"].as_str().unwrap_or_default().to_string())
                .collect::<Vec<_>>()
        }
    };
    delivered(stripe.pay(session).await).await;
    assert_eq!(viewer_key(server, &key, &media, &customer).await, 200);
    let (_, order) = server
        .call("GET", &format!("/v1/orders/{order_id}"), Some(&key), None)
        .await;
    let charged = order["total"].as_i64().unwrap();
    assert_eq!(order["status"], "paid", "{order}");
    let (_, subs) = server
        .call(
            "GET",
            &format!("/v1/subscriptions?customer_id={customer}"),
            Some(&key),
            None,
        )
        .await;
    let provider_sub = subs["data"][0]["provider_subscription"]
        .as_str()
        .unwrap()
        .to_string();
    let documents = || async {
        let (_, docs) = server
            .call(
                "GET",
                &format!("/v1/invoices?order_id={order_id}"),
                Some(&key),
                None,
            )
            .await;
        docs["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["kind"].as_str().unwrap().to_string(),
                    d["total"].as_i64().unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    let revenue = || async {
        let (status, rev) = server
            .call(
                "GET",
                "/v1/analytics/revenue?group_by=product&timeframe=24h",
                Some(&key),
                None,
            )
            .await;
        assert_eq!(status, 200, "{rev}");
        let row = &rev["data"][0];
        (
            row["gross"].as_i64().unwrap(),
            row["refunded"].as_i64().unwrap(),
            row["orders"].as_i64().unwrap(),
        )
    };
    let invoice = |kind: &str, total: i64| (kind.to_string(), total);

    // A renewal: its own charge and invoice, and a second purchase in revenue.
    let renewal = stripe.renew(&provider_sub).await;
    let second_pi = renewal[0]["data"]["object"]["payment_intent"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        renewal[0]["data"]["object"]["subscription_details"]["metadata"]["order_id"]
            == json!(order_id)
    );
    delivered(renewal.clone()).await;
    assert_eq!(
        documents().await,
        [invoice("invoice", charged), invoice("invoice", charged)]
    );
    assert_eq!(revenue().await, (2 * charged, 0, 2));

    // Part of the renewal refunded in Stripe's dashboard: the charge names only its payment
    // intent, and the order is found by it; access is kept, and a credit note issued.
    stripe.refund(&second_pi, 100).await;
    let results = delivered(stripe.charge_event("charge.refunded", &second_pi).await).await;
    assert_eq!(
        results,
        [format!("period 1: 100 of {charged} refunded: access kept")]
    );
    assert_eq!(viewer_key(server, &key, &media, &customer).await, 200);

    // The rest through Ferrocast's API, which refunds the latest period's charge: access
    // ends now. Stripe's event of it changes nothing more.
    let (status, refunded) = server
        .call(
            "POST",
            &format!("/v1/orders/{order_id}/refunds"),
            Some(&key),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{refunded}");
    assert_eq!(refunded["amount_refunded"], charged, "{refunded}");
    assert_eq!(viewer_key(server, &key, &media, &customer).await, 403);
    delivered(stripe.charge_event("charge.refunded", &second_pi).await).await;
    let (status, again) = server
        .call(
            "POST",
            &format!("/v1/orders/{order_id}/refunds"),
            Some(&key),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 409, "{again}");
    // The refunded renewal's events again (Stripe retries): no access for a refunded period.
    let mut late = renewal.clone();
    for e in &mut late {
        e["id"] = json!(format!("{}_retried", e["id"].as_str().unwrap()));
    }
    delivered(late).await;
    assert_eq!(viewer_key(server, &key, &media, &customer).await, 403);
    assert_eq!(
        documents().await,
        [
            invoice("invoice", charged),
            invoice("invoice", charged),
            invoice("credit_note", 100),
            invoice("credit_note", charged - 100),
        ]
    );

    // The next period paid brings access back; a dispute of its charge takes it away.
    let third = stripe.renew(&provider_sub).await;
    let third_pi = third[0]["data"]["object"]["payment_intent"]
        .as_str()
        .unwrap()
        .to_string();
    delivered(third).await;
    assert_eq!(viewer_key(server, &key, &media, &customer).await, 200);
    assert_eq!(revenue().await, (3 * charged, charged, 3));
    delivered(
        stripe
            .charge_event("charge.dispute.created", &third_pi)
            .await,
    )
    .await;
    assert_eq!(viewer_key(server, &key, &media, &customer).await, 403);
    assert_eq!(documents().await.len(), 5);
    rivals_see_none_of_it(server, &key, &order_id).await;
}

/// Another tenant's key, on every commerce object `key`'s tenant holds around `order_id`
/// (paid, refunded, invoiced, with a subscription, provider events and a publishable key):
/// 404 on each, and none of them in any list.
async fn rivals_see_none_of_it(server: &TestServer, key: &str, order_id: &str) {
    let get = |path: String| async move {
        let (status, body) = server.call("GET", &path, Some(key), None).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    };
    let first_id = |v: &Value| v["data"][0]["id"].as_str().unwrap().to_string();
    let order = get(format!("/v1/orders/{order_id}")).await;
    let customer = order["customer_id"].as_str().unwrap().to_string();
    let invoice = first_id(&get(format!("/v1/invoices?order_id={order_id}")).await);
    let subscription = first_id(&get(format!("/v1/subscriptions?customer_id={customer}")).await);
    let event = first_id(&get("/v1/webhook-events".into()).await);
    let publishable = post(server, key, "/v1/publishable-keys", json!({})).await;
    let publishable = publishable["id"].as_str().unwrap();
    let entitlements = get(format!("/v1/entitlements?viewer={customer}")).await;
    assert!(!entitlements["data"].as_array().unwrap().is_empty());

    let (_, rival) = server.create_tenant("Rival").await;
    for (method, path, body) in [
        ("GET", format!("/v1/orders/{order_id}"), None),
        (
            "POST",
            format!("/v1/orders/{order_id}/refunds"),
            Some(json!({})),
        ),
        ("GET", format!("/v1/customers/{customer}"), None),
        ("GET", format!("/v1/invoices/{invoice}"), None),
        ("GET", format!("/v1/invoices/{invoice}.html"), None),
        (
            "POST",
            format!("/v1/subscriptions/{subscription}/cancel"),
            Some(json!({})),
        ),
        ("POST", format!("/v1/webhook-events/{event}/replay"), None),
        (
            "DELETE",
            format!("/v1/publishable-keys/{publishable}"),
            None,
        ),
    ] {
        let (status, out) = server.call(method, &path, Some(&rival), body).await;
        assert_eq!(status, 404, "{method} {path}: {out}");
    }
    for path in [
        "/v1/orders".to_string(),
        format!("/v1/orders?customer_id={customer}"),
        "/v1/customers".into(),
        "/v1/invoices".into(),
        format!("/v1/invoices?order_id={order_id}"),
        "/v1/subscriptions".into(),
        format!("/v1/subscriptions?customer_id={customer}"),
        "/v1/webhook-events".into(),
        "/v1/payment-providers".into(),
        "/v1/publishable-keys".into(),
        format!("/v1/entitlements?viewer={customer}"),
        "/v1/analytics/revenue?group_by=product&timeframe=24h".into(),
    ] {
        let (status, out) = server.call("GET", &path, Some(&rival), None).await;
        assert_eq!(status, 200, "{path}: {out}");
        assert_eq!(out["data"], json!([]), "{path}: {out}");
    }
    // And the owner still has it all.
    get(format!("/v1/orders/{order_id}")).await;
    let (status, _) = server
        .call(
            "DELETE",
            &format!("/v1/publishable-keys/{publishable}"),
            Some(key),
            None,
        )
        .await;
    assert!(status == 200 || status == 204, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriptions_periods_are_invoiced_refunded_and_disputed_sqlite() {
    let server = TestServer::start_with(|c| {
        c.commerce.allow_plain_http_providers = true;
        c.webhooks.allow_private_targets = true;
    })
    .await;
    a_subscriptions_periods_are_invoiced_refunded_and_disputed(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriptions_periods_are_invoiced_refunded_and_disputed_postgres() {
    let pg = PgDatabase::create().await;
    let server = TestServer::start_on(&pg, |c| {
        c.commerce.allow_plain_http_providers = true;
        c.webhooks.allow_private_targets = true;
    })
    .await;
    a_subscriptions_periods_are_invoiced_refunded_and_disputed(&server).await;
    server.stop().await;
}

/// The whole story: a creator sells a pay-per-view live stream with a 20 % code; a viewer,
/// in headless Chromium with the tenant's publishable key, fills a cart, applies the code,
/// checks out and pays on the (fake) Stripe page; the signed webhook comes; the viewer's token
/// now gets the key and hls.js plays the broadcast; a full refund follows, and the next key
/// request is denied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_buys_in_chromium_plays_with_hls_js_and_a_refund_takes_the_key_away() {
    buys_in_chromium("stripe", false).await;
}

/// The same story as a monthly subscription: a renewal extends the access, a cancel keeps
/// it to the period's end, and Stripe's deletion then ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_subscribes_in_chromium_plays_and_the_subscription_ends_at_its_period_end() {
    buys_in_chromium("stripe", true).await;
}

/// The same story paid with PayPal: its approval page, the approval's webhook verified
/// with PayPal, the capture Ferrocast makes, and the refund through PayPal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_buys_with_paypal_in_chromium_plays_and_a_refund_takes_the_key_away() {
    buys_in_chromium("paypal", false).await;
}

/// The provider's fake behind the whole story.
enum Fake {
    Stripe(FakeStripe),
    PayPal(common::fakes::FakeProcess),
}

async fn buys_in_chromium(provider_name: &str, subscription: bool) {
    let server = TestServer::start_with(|c| c.commerce.allow_plain_http_providers = true).await;
    let fake = match provider_name {
        "stripe" => Fake::Stripe(FakeStripe::start()),
        _ => Fake::PayPal(common::fakes::FakeProcess::start("paypal_fake.py", &[])),
    };
    let (tenant_id, key) = server.create_tenant("Creator").await;
    let (status, stream) = server
        .call(
            "POST",
            "/v1/live-streams",
            Some(&key),
            Some(json!({"playback_policy": "signed", "ladder": "passthrough", "record": false})),
        )
        .await;
    assert_eq!(status, 201, "{stream}");
    let playback_id = stream["playback_id"].as_str().unwrap().to_string();
    let (status, _) = server
        .call(
            "PATCH",
            &format!("/v1/playback-ids/{playback_id}"),
            Some(&key),
            Some(json!({"requires_entitlement": true})),
        )
        .await;
    assert_eq!(status, 200);
    let settings = match &fake {
        Fake::Stripe(stripe) => json!({"secret_key": common::stripe::SECRET_KEY,
            "webhook_secret": common::stripe::WEBHOOK_SECRET, "base_url": stripe.base_url}),
        Fake::PayPal(paypal) => json!({"client_id": common::fakes::paypal::CLIENT_ID,
            "secret_key": common::fakes::paypal::CLIENT_SECRET,
            "webhook_secret": common::fakes::paypal::WEBHOOK_ID, "base_url": paypal.base_url}),
    };
    let (status, provider) = server
        .call(
            "PUT",
            &format!("/v1/payment-providers/{provider_name}"),
            Some(&key),
            Some(settings),
        )
        .await;
    assert_eq!(status, 200, "{provider}");
    let webhook_url = provider["webhook_url"].as_str().unwrap();
    match &fake {
        Fake::Stripe(stripe) => stripe.send_events_to(webhook_url).await,
        Fake::PayPal(paypal) => {
            paypal
                .control("config", json!({"webhook_url": webhook_url}))
                .await;
        }
    }
    assert!(
        provider["webhook_url"]
            .as_str()
            .unwrap()
            .ends_with(&tenant_id)
    );
    let product = post(
        &server,
        &key,
        "/v1/products",
        json!({"name": "Cup final live", "playback_ids": [playback_id]}),
    )
    .await;
    let price = post(
        &server,
        &key,
        "/v1/prices",
        if subscription {
            json!({"product_id": product["id"], "type": "recurring", "interval": "month",
                "unit_amount": 999, "currency": "eur"})
        } else {
            json!({"product_id": product["id"], "type": "one_time", "unit_amount": 999, "currency": "eur"})
        },
    )
    .await;
    post(
        &server,
        &key,
        "/v1/tax-rates",
        json!({"country": "DE", "percentage": "19"}),
    )
    .await;
    post(
        &server,
        &key,
        "/v1/discount-codes",
        json!({"code": "FINAL20", "percent_off": "20"}),
    )
    .await;
    let publishable = post(&server, &key, "/v1/publishable-keys", json!({})).await;
    let publishable = publishable["key"].as_str().unwrap().to_string();
    // The publishable key does carts and checkout, and nothing else.
    for path in [
        "/v1/orders",
        "/v1/products",
        "/v1/entitlements",
        "/v1/live-streams",
    ] {
        let (status, _) = server.call("GET", path, Some(&publishable), None).await;
        assert_eq!(status, 401, "{path}");
    }
    // Nor can it name a customer: the buyer gives an email at checkout.
    let someone = post(
        &server,
        &key,
        "/v1/customers",
        json!({"email": "x@example.com"}),
    )
    .await;
    let (status, _) = server
        .call(
            "POST",
            "/v1/carts",
            Some(&publishable),
            Some(json!({"currency": "eur", "customer_id": someone["id"]})),
        )
        .await;
    assert_eq!(status, 403);

    // The broadcast is live.
    let publish_url = format!(
        "{}/{}",
        stream["rtmp_url"].as_str().unwrap(),
        stream["stream_key"].as_str().unwrap()
    );
    let _ffmpeg = common::media::ffmpeg_publish(&publish_url, 640, 360, 60);

    // The viewer buys in the browser.
    let bought = common::media::browser_script(
        "checkout.cjs",
        vec![
            server.url(""),
            publishable.clone(),
            price["id"].as_str().unwrap().to_string(),
            "final20".into(),
            "fan@example.com".into(),
            provider_name.into(),
        ],
        90,
    )
    .await;
    eprintln!("checkout in Chromium: {bought}");
    assert_eq!(bought["error"], Value::Null, "{bought}");
    assert_eq!(
        (&bought["cart"]["discount"], &bought["cart"]["total"]),
        (&json!(200), &json!(951))
    );
    let amount = match fake {
        Fake::Stripe(_) => "951 eur",
        Fake::PayPal(_) => "9.51 EUR with PayPal",
    };
    assert!(
        bought["hosted"].as_str().unwrap().contains(amount),
        "{bought}"
    );
    assert!(
        bought["landed"]
            .as_str()
            .unwrap()
            .contains("/healthz?paid="),
        "{bought}"
    );
    let order_id = bought["checkout"]["order_id"].as_str().unwrap();
    let customer = bought["checkout"]["customer_id"].as_str().unwrap();
    assert_eq!(order(&server, &key, order_id).await["status"], "paid");

    // The buyer's token plays: hls.js gets the key.
    let (_, t) = server
        .call(
            "POST",
            "/v1/playback-tokens",
            Some(&key),
            Some(json!({"playback_id": playback_id, "viewer": customer, "expires_in": 600})),
        )
        .await;
    let token = t["token"].as_str().unwrap().to_string();
    common::media::eventually(
        "the master playlist",
        std::time::Duration::from_secs(30),
        || async {
            let (status, _) = server
                .get_text(&format!("/hls/{playback_id}/master.m3u8?token={token}"))
                .await;
            (status == 200).then_some(())
        },
    )
    .await;
    let played = common::media::browser_play(
        &server.url(&format!("/play/{playback_id}?token={token}")),
        4,
        40,
    )
    .await;
    played.assert_plays(4.0, common::media::Encrypted::Yes);
    let (_, media) = server
        .get_text(&format!(
            "/hls/{playback_id}/source/index.m3u8?token={token}"
        ))
        .await;
    let key_uri = media
        .split("URI=\"")
        .nth(1)
        .unwrap_or_else(|| panic!("no key in {media}"))
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let key_status = |uri: String| {
        let client = server.client.clone();
        async move { client.get(&uri).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(key_status(key_uri.clone()).await, 200);
    // Another viewer's token gets no key.
    let (_, other) = server
        .call(
            "POST",
            "/v1/playback-tokens",
            Some(&key),
            Some(json!({"playback_id": playback_id, "viewer": "freeloader"})),
        )
        .await;
    let other_uri = key_uri.replace(&token, other["token"].as_str().unwrap());
    assert_eq!(key_status(other_uri).await, 403);

    if subscription {
        // Renewed, then canceled at the period's end: still playing; Stripe deletes it when
        // the period ends, and the next key request is denied.
        let (_, subs) = server
            .call(
                "GET",
                &format!("/v1/subscriptions?customer_id={customer}"),
                Some(&key),
                None,
            )
            .await;
        let sub = &subs["data"][0];
        assert_eq!(sub["status"], "active", "{subs}");
        let Fake::Stripe(stripe) = &fake else {
            unreachable!("subscriptions are Stripe's")
        };
        let provider_sub = sub["provider_subscription"].as_str().unwrap();
        let access_end = || async {
            let (_, e) = server
                .call(
                    "GET",
                    &format!("/v1/entitlements?viewer={customer}"),
                    Some(&key),
                    None,
                )
                .await;
            chrono::DateTime::parse_from_rfc3339(e["data"][0]["expires_at"].as_str().unwrap())
                .unwrap()
                .timestamp()
        };
        let first_end = access_end().await;
        let renewal = stripe.renew(provider_sub).await;
        let answers = stripe.deliver(webhook_url, &renewal, 1, 1, 0, false).await;
        assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
        // The renewal extends access by the month paid.
        assert_eq!(access_end().await, first_end + 30 * 86400);
        let (status, canceled) = server
            .call(
                "POST",
                &format!("/v1/subscriptions/{}/cancel", sub["id"].as_str().unwrap()),
                Some(&key),
                Some(json!({})),
            )
            .await;
        assert_eq!(
            (status, &canceled["cancel_at_period_end"]),
            (200, &json!(true)),
            "{canceled}"
        );
        assert_eq!(key_status(key_uri.clone()).await, 200);
        let ended = stripe.end(provider_sub).await;
        stripe.deliver(webhook_url, &ended, 1, 1, 0, false).await;
        assert_eq!(key_status(key_uri).await, 403);
        server.stop().await;
        return;
    }

    // A full refund, from the provider: the next key request is denied.
    let (_, o) = server
        .call("GET", &format!("/v1/orders/{order_id}"), Some(&key), None)
        .await;
    assert_eq!(o["amount_refunded"], 0);
    let (_, inbox) = server
        .call("GET", "/v1/webhook-events", Some(&key), None)
        .await;
    let payment = inbox["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "payment_intent.succeeded" || e["type"] == "CHECKOUT.ORDER.APPROVED")
        .expect("the payment's events arrived");
    assert_eq!(payment["verified"], true);
    // The creator refunds in the provider's dashboard; its signed webhook follows.
    let answers = match &fake {
        Fake::Stripe(stripe) => {
            let intents = stripe.payment_intents().await;
            assert_eq!(intents.len(), 1, "{intents:?}");
            let pi = &intents[0];
            stripe.refund(pi, o["total"].as_i64().unwrap()).await;
            let events = stripe.charge_event("charge.refunded", pi).await;
            stripe.deliver(webhook_url, &events, 1, 1, 0, false).await
        }
        Fake::PayPal(paypal) => {
            let seen = paypal.control("requests", json!({})).await;
            let capture = seen["captures"][0].as_str().unwrap().to_string();
            let events = paypal.events(&format!("refund/{capture}")).await;
            paypal.deliver(webhook_url, &events, 1, 1, false).await
        }
    };
    assert_eq!(answers[0].0, 200, "{answers:?}");
    let (_, o) = server
        .call("GET", &format!("/v1/orders/{order_id}"), Some(&key), None)
        .await;
    assert_eq!(o["status"], "refunded", "{o}");
    assert_eq!(key_status(key_uri).await, 403);
    server.stop().await;
}
