//! Commerce through the API: a creator sets up a product for a live stream, its prices, a
//! tax rate and discount codes; a buyer's cart reads back priced as src/commerce/money.rs
//! documents; codes are refused with their reasons; another tenant sees none of it.

mod common;

use common::{PgDatabase, TestServer};
use ferrocast::config::DatabaseUrl;
use serde_json::{Value, json};

async fn post(server: &TestServer, key: &str, path: &str, body: Value) -> Value {
    let (status, v) = server.call("POST", path, Some(key), Some(body)).await;
    assert!(status == 201 || status == 200, "POST {path}: {status} {v}");
    v
}

async fn refused(server: &TestServer, key: &str, path: &str, body: Value) -> (u16, String) {
    let (status, v) = server.call("POST", path, Some(key), Some(body)).await;
    assert!(status >= 400, "POST {path} should be refused: {status} {v}");
    (
        status,
        v["error"]["message"].as_str().unwrap_or("").to_string(),
    )
}

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
        json!({"code": "GONE", "percent_off": "10", "ends_at": now - 1}),
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
    server.stop().await;
}
