//! The viewer pages in headless Chromium: every page that cannot play says why (not found,
//! offline, private, link expired, another country, purchase required with a buy button that
//! reaches the provider's checkout); a live stream plays with its live badge, viewer count,
//! quality menu and "back to live", and embeds in another site's iframe; the tenant's
//! branding reaches the page with its CSS sanitised; the embed snippet and oEmbed.

mod common;

use std::time::Duration;

use common::TestServer;
use common::media::{browser_script, eventually, ffmpeg_publish};
use common::shop::{paid_media, post};
use common::stripe::FakeStripe;
use serde_json::{Value, json};

const SHOTS: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/screenshots");

async fn token(server: &TestServer, key: &str, body: Value) -> String {
    let (status, t) = server
        .call("POST", "/v1/playback-tokens", Some(key), Some(body))
        .await;
    assert_eq!(status, 201, "{t}");
    t["token"].as_str().unwrap().to_string()
}

async fn page(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut request = server.client.get(server.url(path));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.unwrap();
    let csp = response
        .headers()
        .get("content-security-policy")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (
        response.status().as_u16(),
        csp,
        response.text().await.unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_viewer_state_says_why_in_chromium_and_a_buyer_reaches_the_checkout() {
    let server = TestServer::start_with(|c| {
        c.playback.country_header = "x-country".into();
        c.commerce.allow_plain_http_providers = true;
    })
    .await;
    let stripe = FakeStripe::start();
    // Paid media, on sale, and the branding whose buy button sells it.
    let (key, paid, _) = paid_media(
        &server,
        "stripe",
        json!({"secret_key": common::stripe::SECRET_KEY,
            "webhook_secret": common::stripe::WEBHOOK_SECRET, "base_url": stripe.base_url}),
    )
    .await;
    let product = post(
        &server,
        &key,
        "/v1/products",
        json!({"name": "Cup <final>", "playback_ids": [paid.playback_id]}),
    )
    .await;
    post(
        &server,
        &key,
        "/v1/prices",
        json!({"product_id": product["id"], "type": "one_time", "unit_amount": 999, "currency": "eur"}),
    )
    .await;
    let publishable = post(&server, &key, "/v1/publishable-keys", json!({})).await;
    let publishable = publishable["key"].as_str().unwrap();
    let css = "@import url(https://evil.example/x.css);\n\
               .fc-title { color: #ffd166; background-color: url(javascript:alert(1)) }\n\
               .fc-notice h1 { width: expression(alert(1)); letter-spacing: .02em }\n\
               </style><script>window.pwned=1</script>";
    let (status, branding) = server
        .call(
            "PUT",
            "/v1/branding",
            Some(&key),
            Some(json!({"name": "Acme <TV>", "accent": "#3ECF8E", "logo_url": "https://cdn.example.com/acme.png",
                "custom_css": css, "publishable_key": publishable, "checkout_provider": "stripe"})),
        )
        .await;
    assert_eq!(status, 200, "{branding}");
    let kept = branding["custom_css"].as_str().unwrap();
    assert_eq!(
        kept,
        ".fc-title { color: #ffd166; }\n.fc-notice h1 { letter-spacing: .02em; }\n"
    );
    let dropped = branding["dropped"].to_string();
    for part in [
        "@import",
        "url(javascript:alert(1))",
        "expression(alert(1))",
    ] {
        assert!(dropped.contains(part), "{part} not in {dropped}");
    }
    // Bad branding is refused, and another tenant's publishable key too.
    for bad in [
        json!({"accent": "red"}),
        json!({"logo_url": "javascript:alert(1)"}),
        json!({"publishable_key": "fcp_not_a_key"}),
        json!({"custom_css": "a{}".repeat(6000)}),
    ] {
        let (status, v) = server
            .call("PUT", "/v1/branding", Some(&key), Some(bad.clone()))
            .await;
        assert!(status == 400 || status == 413, "{bad}: {status} {v}");
    }

    // The viewer, a customer, with a token that names them.
    let customer = post(
        &server,
        &key,
        "/v1/customers",
        json!({"email": "ana@example.com", "country": "DE"}),
    )
    .await;
    let customer_id = customer["id"].as_str().unwrap();
    let buyer = token(
        &server,
        &key,
        json!({"playback_id": paid.playback_id, "viewer": customer_id}),
    )
    .await;
    let (status, csp, html) = page(
        &server,
        &format!("/play/{}?token={buyer}", paid.playback_id),
        &[],
    )
    .await;
    assert_eq!(status, 403);
    assert!(html.contains(r#"data-state="purchase_required""#), "{html}");
    assert!(html.contains("Cup &lt;final&gt;"), "{html}");
    assert!(html.contains("9.99 EUR"), "{html}");
    assert!(html.contains("<title>Acme &lt;TV&gt;</title>"), "{html}");
    // The sanitised CSS, and only it, in the one style block the nonce allows.
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .expect("a style nonce");
    assert!(
        html.contains(&format!(
            "<style nonce=\"{nonce}\">:root {{ --fc-accent: #3ecf8e; }}\n{kept}</style>"
        )),
        "{html}"
    );
    assert!(
        !html.contains("evil.example") && !html.contains("pwned"),
        "{html}"
    );
    assert!(csp.contains("script-src 'self';"), "{csp}");
    assert!(
        csp.contains("img-src 'self' data: https://cdn.example.com;"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'self'"), "{csp}");

    // The other states, each with its own token and page.
    let (_, live_key) = server.create_tenant("Other").await;
    let (status, offline) = server
        .call(
            "POST",
            "/v1/live-streams",
            Some(&live_key),
            Some(json!({"playback_policy": "public"})),
        )
        .await;
    assert_eq!(status, 201);
    let offline_id = offline["playback_id"].as_str().unwrap();
    let (status, private) = server
        .call(
            "POST",
            "/v1/live-streams",
            Some(&live_key),
            Some(json!({"playback_policy": "signed"})),
        )
        .await;
    assert_eq!(status, 201);
    let private_id = private["playback_id"].as_str().unwrap();
    let french = token(
        &server,
        &live_key,
        json!({"playback_id": private_id, "country": ["FR"]}),
    )
    .await;
    let short = token(
        &server,
        &live_key,
        json!({"playback_id": private_id, "expires_in": 1}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let cases = json!([
        {"name": "not-found", "path": "/play/0123456789abcdef0123456789abcdef"},
        {"name": "offline", "path": format!("/play/{offline_id}")},
        {"name": "private", "path": format!("/play/{private_id}")},
        {"name": "expired", "path": format!("/play/{private_id}?token={short}")},
        {"name": "geo-blocked", "path": format!("/play/{private_id}?token={french}"), "headers": {"x-country": "DE"}},
        {"name": "purchase", "path": format!("/play/{}?token={buyer}", paid.playback_id), "buy": true},
        {"name": "embed-purchase", "path": format!("/embed/{}?token={buyer}", paid.playback_id)},
    ]);
    // The same answers over plain HTTP: each status says it too.
    for (path, headers, status, state) in [
        (
            "/play/0123456789abcdef0123456789abcdef".to_string(),
            vec![],
            404,
            "not_found",
        ),
        (format!("/play/{offline_id}"), vec![], 200, "offline"),
        (format!("/play/{private_id}"), vec![], 401, "token_required"),
        (
            format!("/play/{private_id}?token={short}"),
            vec![],
            403,
            "token_expired",
        ),
        (
            format!("/play/{private_id}?token={french}"),
            vec![("x-country", "DE")],
            403,
            "geo_blocked",
        ),
        (
            format!("/play/{private_id}?token={french}"),
            vec![("x-country", "FR")],
            200,
            "offline",
        ),
    ] {
        let (got, _, html) = page(&server, &path, &headers).await;
        assert_eq!(got, status, "{path}: {html}");
        assert!(
            html.contains(&format!("data-state=\"{state}\"")),
            "{path}: {html}"
        );
    }

    std::fs::create_dir_all(SHOTS).unwrap();
    let seen = browser_script(
        "viewer_states.cjs",
        vec![server.url(""), cases.to_string(), SHOTS.into()],
        120,
    )
    .await;
    assert_eq!(seen["error"], Value::Null, "{seen}");
    assert_eq!(seen["problems"], json!([]), "{seen}");
    let case = |name: &str| seen["cases"][name].clone();
    for (name, status, state, title) in [
        ("not-found", 404, "not_found", "This video does not exist"),
        ("offline", 200, "offline", "The stream is offline"),
        ("private", 401, "token_required", "This video is private"),
        ("expired", 403, "token_expired", "This link has expired"),
        (
            "geo-blocked",
            403,
            "geo_blocked",
            "Not available in your country",
        ),
        ("purchase", 403, "purchase_required", "Purchase required"),
        (
            "embed-purchase",
            403,
            "purchase_required",
            "Purchase required",
        ),
    ] {
        let c = case(name);
        assert_eq!(c["httpStatus"], status, "{name}: {c}");
        assert_eq!(c["state"], state, "{name}: {c}");
        assert_eq!(c["title"], title, "{name}: {c}");
    }
    // Offline: the player waits behind its notice, which says when it starts.
    assert_eq!(case("offline")["video"], true);
    assert_eq!(case("offline")["playerState"], "offline");
    assert_eq!(
        case("offline")["text"],
        "It starts here when the broadcaster goes live."
    );
    assert_eq!(case("purchase")["buttons"], 1);
    assert!(
        case("purchase")["offers"][0]
            .as_str()
            .unwrap()
            .contains("Cup <final>"),
        "{seen}"
    );
    // The buy button opened a checkout for the token's viewer, at the provider.
    let purchase = case("purchase");
    assert!(
        purchase["checkoutUrl"]
            .as_str()
            .unwrap()
            .starts_with(&stripe.base_url),
        "{purchase}"
    );
    assert!(purchase["hosted"].as_str().is_some(), "{purchase}");
    let (status, orders) = server.call("GET", "/v1/orders", Some(&key), None).await;
    assert_eq!(status, 200);
    assert_eq!(orders["data"][0]["customer_id"], customer_id, "{orders}");
    // A publishable key cannot buy for a token of another tenant, nor for a viewer who is
    // not a customer.
    let stranger = token(
        &server,
        &key,
        json!({"playback_id": paid.playback_id, "viewer": "someone"}),
    )
    .await;
    for t in [stranger.as_str(), french.as_str()] {
        let cart = post(
            &server,
            publishable,
            "/v1/carts",
            json!({"currency": "eur"}),
        )
        .await;
        let id = cart["id"].as_str().unwrap();
        post(
            &server,
            publishable,
            &format!("/v1/carts/{id}/items"),
            json!({"price_id": orders["data"][0]["lines"][0]["price_id"], "quantity": 1}),
        )
        .await;
        let (status, v) = server
            .call(
                "POST",
                &format!("/v1/carts/{id}/checkout"),
                Some(publishable),
                Some(json!({"provider": "stripe", "playback_token": t,
                    "success_url": "https://example.com/a", "cancel_url": "https://example.com/b"})),
            )
            .await;
        assert_eq!(status, 403, "{v}");
    }

    // Embedding: the snippet, and oEmbed for a public page (a signed one needs its token).
    let (status, snippet) = server
        .call(
            "GET",
            &format!("/v1/playback-ids/{offline_id}/embed?width=800"),
            Some(&live_key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{snippet}");
    assert_eq!(snippet["height"], 450);
    assert!(
        snippet["html"].as_str().unwrap().starts_with(&format!(
            r#"<iframe src="{}/embed/{offline_id}" width="800" height="450""#,
            server.url("")
        )),
        "{snippet}"
    );
    // Not another tenant's id.
    let (status, _) = server
        .call(
            "GET",
            &format!("/v1/playback-ids/{offline_id}/embed"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let oembed = |u: String, extra: &str| {
        let q: String = url::form_urlencoded::byte_serialize(u.as_bytes()).collect();
        format!("/oembed?url={q}{extra}")
    };
    let (status, o) = server
        .call(
            "GET",
            &oembed(server.url(&format!("/play/{offline_id}")), "&maxwidth=320"),
            None,
            None,
        )
        .await;
    assert_eq!(status, 200, "{o}");
    assert_eq!(
        (&o["version"], &o["type"], &o["width"], &o["height"]),
        (&json!("1.0"), &json!("video"), &json!(320), &json!(180))
    );
    assert!(
        o["html"]
            .as_str()
            .unwrap()
            .contains(&format!("{}/embed/{offline_id}", server.url(""))),
        "{o}"
    );
    for (u, status) in [
        (server.url(&format!("/play/{private_id}")), 401),
        (
            server.url(&format!("/play/{private_id}?token={french}")),
            200,
        ),
        (format!("https://evil.example/play/{offline_id}"), 404),
        (server.url("/play/../v1/tenant"), 404),
    ] {
        let (got, v) = server.call("GET", &oembed(u.clone(), ""), None, None).await;
        assert_eq!(got, status, "{u}: {v}");
    }
    let (status, _) = server
        .call(
            "GET",
            &oembed(server.url(&format!("/play/{offline_id}")), "&format=xml"),
            None,
            None,
        )
        .await;
    assert_eq!(status, 501);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_plays_with_its_badge_viewers_and_renditions_and_embeds_in_another_site() {
    // A 36 s live window: with 6 segments of 2 s, hls.js holds 6 s back from the end and the
    // viewer could never be more than 6 s behind it, too near the 5 s of "back to live".
    let server = TestServer::start_with(|c| c.live.window_segments = 18).await;
    let (_, key) = server.create_tenant("Live").await;
    let (status, s) = server
        .call(
            "POST",
            "/v1/live-streams",
            Some(&key),
            Some(json!({"playback_policy": "public", "reconnect_window_s": 0, "record": false})),
        )
        .await;
    assert_eq!(status, 201, "{s}");
    let playback_id = s["playback_id"].as_str().unwrap().to_string();
    let publish_url = format!(
        "{}/{}",
        s["rtmp_url"].as_str().unwrap(),
        s["stream_key"].as_str().unwrap()
    );
    // 480p in: the ladder copies it and makes 480p and 360p.
    let mut ffmpeg = ffmpeg_publish(&publish_url, 854, 480, 90);
    let master = format!("/hls/{playback_id}/master.m3u8");
    eventually("the live playlist", Duration::from_secs(40), || async {
        (server.get_text(&master).await.0 == 200).then_some(())
    })
    .await;
    std::fs::create_dir_all(SHOTS).unwrap();
    let seen = browser_script(
        "live_player.cjs",
        vec![server.url(""), playback_id.clone(), SHOTS.into()],
        150,
    )
    .await;
    ffmpeg.kill();
    assert_eq!(seen["error"], Value::Null, "{seen}");
    assert_eq!(seen["problems"], json!([]), "{seen}");
    assert_eq!(seen["badge"], "LIVE");
    assert!(seen["viewers"].as_u64().unwrap() >= 1, "{seen}");
    let qualities: Vec<&str> = seen["qualities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q.as_str().unwrap())
        .collect();
    assert!(qualities[0].starts_with("Auto"), "{qualities:?}");
    // The source (480p copied) and the ladder's 480p and 360p, told apart by bitrate.
    assert_eq!(qualities.len(), 4, "{qualities:?}");
    assert!(
        qualities[1].starts_with("480p · ") && qualities[2].starts_with("480p · "),
        "{qualities:?}"
    );
    assert_ne!(qualities[1], qualities[2]);
    assert_eq!(qualities[3], "360p");
    assert_eq!(seen["switchedTo"], 360);
    assert_eq!(seen["behindShown"], true);
    assert_eq!(seen["backAtEdge"], true);
    assert!(seen["embedFrames"].as_u64().unwrap() > 0, "{seen}");
    assert_eq!(seen["embedChrome"], json!({"header": false, "chat": false}));
    server.stop().await;
}
