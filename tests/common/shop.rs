//! What the commerce tests share: API calls that must succeed or be refused, a paid
//! (entitlement-gated) medium on sale, carts checked out, and a viewer's key request.

use serde_json::{Value, json};

use super::TestServer;
use super::paid::{Media, get_key, media_with};

pub async fn post(server: &TestServer, key: &str, path: &str, body: Value) -> Value {
    let (status, v) = server.call("POST", path, Some(key), Some(body)).await;
    assert!(status == 201 || status == 200, "POST {path}: {status} {v}");
    v
}

pub async fn refused(server: &TestServer, key: &str, path: &str, body: Value) -> (u16, String) {
    let (status, v) = server.call("POST", path, Some(key), Some(body)).await;
    assert!(status >= 400, "POST {path} should be refused: {status} {v}");
    (
        status,
        v["error"]["message"].as_str().unwrap_or("").to_string(),
    )
}

/// A tenant's signed medium that needs an entitlement, with its provider `name` set up
/// (`settings` is the PUT body) and German VAT (19 %): (tenant key, media, webhook URL).
pub async fn paid_media(
    server: &TestServer,
    name: &str,
    settings: Value,
) -> (String, Media, String) {
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
            &format!("/v1/payment-providers/{name}"),
            Some(&key),
            Some(settings),
        )
        .await;
    assert_eq!(status, 200, "{provider}");
    let webhook_url = provider["webhook_url"].as_str().unwrap().to_string();
    assert!(webhook_url.ends_with(&format!("/v1/webhooks/{name}/{tenant_id}")));
    post(
        server,
        &key,
        "/v1/tax-rates",
        json!({"country": "DE", "percentage": "19"}),
    )
    .await;
    (key, media, webhook_url)
}

/// A one-time price of 9.99 EUR (19 % German tax on top) for a product of `media`.
pub async fn price_for(server: &TestServer, key: &str, media: &Media, extra: Value) -> String {
    let product = post(
        server,
        key,
        "/v1/products",
        json!({"name": "Cup final", "playback_ids": [media.playback_id]}),
    )
    .await;
    let mut body = json!({"product_id": product["id"], "type": "one_time", "unit_amount": 999,
        "currency": "eur"});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    post(server, key, "/v1/prices", body).await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A German cart of `price_id` checked out with `provider` by `email`: the status and
/// answer.
pub async fn checkout_with(
    server: &TestServer,
    key: &str,
    price_id: &str,
    provider: &str,
    email: &str,
) -> (u16, Value) {
    checkout_with_code(server, key, price_id, provider, None, email).await
}

/// [`checkout_with`], with discount code `code` applied to the cart first (it must apply).
pub async fn checkout_with_code(
    server: &TestServer,
    key: &str,
    price_id: &str,
    provider: &str,
    code: Option<&str>,
    email: &str,
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
    if let Some(code) = code {
        post(
            server,
            key,
            &format!("/v1/carts/{id}/discount"),
            json!({ "code": code }),
        )
        .await;
    }
    server
        .call(
            "POST",
            &format!("/v1/carts/{id}/checkout"),
            Some(key),
            Some(json!({"provider": provider, "email": email,
                "success_url": "https://example.com/thanks", "cancel_url": "https://example.com/cart"})),
        )
        .await
}

/// Whether `viewer`'s token for `media` gets its key: the status (and the bytes are the key).
pub async fn viewer_key(server: &TestServer, key: &str, media: &Media, viewer: &str) -> u16 {
    let (status, t) = server
        .call(
            "POST",
            "/v1/playback-tokens",
            Some(key),
            Some(json!({"playback_id": media.playback_id, "viewer": viewer})),
        )
        .await;
    assert_eq!(status, 201, "{t}");
    let (status, bytes) = get_key(server, media, t["token"].as_str().unwrap()).await;
    if status == 200 {
        assert_eq!(bytes, media.key);
    }
    status
}

pub async fn order(server: &TestServer, key: &str, id: &str) -> Value {
    let (status, o) = server
        .call("GET", &format!("/v1/orders/{id}"), Some(key), None)
        .await;
    assert_eq!(status, 200, "{o}");
    o
}
