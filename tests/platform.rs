//! The platform around the media: cross-origin use from creators' own pages (preflights on
//! every playback and API route, the headers players read exposed, access still decided by
//! the token).

mod common;

use std::time::Duration;

use common::TestServer;
use common::media::{browser_script, eventually, ffmpeg_publish};
use serde_json::json;

/// A preflight as a browser sends it: (status, headers).
async fn preflight(
    server: &TestServer,
    path: &str,
    method: &str,
    headers: &str,
) -> (u16, reqwest::header::HeaderMap) {
    let resp = server
        .client
        .request(reqwest::Method::OPTIONS, server.url(path))
        .header("Origin", "http://creator.example")
        .header("Access-Control-Request-Method", method)
        .header("Access-Control-Request-Headers", headers)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.headers().clone())
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// Preflights are answered on playback and API routes (only allow-listed headers allowed),
/// protocol routes keep their own answers, and cross-origin answers expose what players read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_playback_and_api_route_answers_preflights() {
    let server = TestServer::start().await;
    for path in [
        "/hls/abc/master.m3u8",
        "/hls/abc/720p/3.ts",
        "/keys/k1",
        "/thumbnails/abc.jpg",
        "/storyboards/abc.vtt",
    ] {
        let (status, h) = preflight(&server, path, "GET", "authorization, x-evil").await;
        assert_eq!(status, 204, "{path}");
        assert_eq!(header(&h, "access-control-allow-origin"), "*", "{path}");
        assert_eq!(header(&h, "access-control-allow-headers"), "authorization");
        assert_eq!(
            header(&h, "access-control-allow-methods"),
            "GET, HEAD, OPTIONS"
        );
        assert_eq!(header(&h, "access-control-max-age"), "86400");
    }
    for path in ["/v1/carts", "/v1/carts/c1/checkout", "/v1/live-streams"] {
        let (status, h) = preflight(
            &server,
            path,
            "POST",
            "authorization, content-type, idempotency-key",
        )
        .await;
        assert_eq!(status, 204, "{path}");
        assert_eq!(
            header(&h, "access-control-allow-headers"),
            "authorization, content-type, idempotency-key"
        );
        assert!(header(&h, "access-control-allow-methods").contains("POST"));
    }
    // tus from a browser: its headers are allowed, and the capability OPTIONS is tus's own.
    let (status, h) = preflight(
        &server,
        "/v1/uploads",
        "POST",
        "tus-resumable, upload-length, upload-metadata",
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(
        header(&h, "access-control-allow-headers"),
        "tus-resumable, upload-length, upload-metadata"
    );
    let resp = server
        .client
        .request(reqwest::Method::OPTIONS, server.url("/v1/uploads"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(resp.headers(), "tus-version"), "1.0.0");
    // WHIP answers its own (its protocol's headers).
    let (status, h) = preflight(&server, "/whip", "POST", "authorization, content-type").await;
    assert!(status == 204 || status == 200, "{status}");
    assert!(
        header(&h, "access-control-expose-headers")
            .to_ascii_lowercase()
            .contains("location"),
        "{h:?}"
    );
    // The operator's routes are not for other origins' pages.
    let (status, h) = preflight(&server, "/metrics", "GET", "authorization").await;
    assert_eq!(status, 405);
    assert_eq!(header(&h, "access-control-allow-origin"), "");
    // An OPTIONS that is not a preflight is routed as before (no such method here).
    let status = server
        .client
        .request(reqwest::Method::OPTIONS, server.url("/keys/k1"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 405);
    // A cross-origin answer, even a refusal, can be read: it allows any origin and exposes
    // sizes, ranges and the date.
    let resp = server
        .client
        .get(server.url("/hls/abc/master.m3u8"))
        .header("Origin", "http://creator.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let h = resp.headers();
    assert_eq!(header(h, "access-control-allow-origin"), "*");
    for exposed in ["Content-Length", "Content-Range", "Date"] {
        assert!(
            header(h, "access-control-expose-headers").contains(exposed),
            "{h:?}"
        );
    }
    server.stop().await;
}

/// A page on another origin plays a signed broadcast with hls.js, its token only in an
/// `Authorization` header: every request is preflighted, and the token never shows in a URL.
/// Without the token the same page gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_on_another_origin_plays_a_signed_stream_with_a_header_token() {
    let server = TestServer::start().await;
    let (_, key) = server.create_tenant("Creator").await;
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
    let publish_url = format!(
        "{}/{}",
        stream["rtmp_url"].as_str().unwrap(),
        stream["stream_key"].as_str().unwrap()
    );
    let _ffmpeg = ffmpeg_publish(&publish_url, 640, 360, 60);
    let (_, t) = server
        .call(
            "POST",
            "/v1/playback-tokens",
            Some(&key),
            Some(json!({"playback_id": playback_id, "expires_in": 600})),
        )
        .await;
    let token = t["token"].as_str().unwrap().to_string();
    let master = server.url(&format!("/hls/{playback_id}/master.m3u8"));
    eventually("the master playlist", Duration::from_secs(30), || async {
        let resp = server
            .client
            .get(&master)
            .bearer_auth(&token)
            .send()
            .await
            .ok()?;
        (resp.status() == 200).then_some(())
    })
    .await;
    // A header token is not written into the playlist's URIs: the player sends it anyway.
    let text = server
        .client
        .get(&master)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains("token="), "{text}");

    let played = browser_script(
        "cross_origin.cjs",
        vec![
            server.url(""),
            playback_id.clone(),
            token.clone(),
            "4".into(),
            "45".into(),
        ],
        60,
    )
    .await;
    eprintln!("cross-origin play: {played}");
    assert_eq!(played["fatal"], serde_json::Value::Null, "{played}");
    assert_eq!(played["keyLoaded"], true, "{played}");
    assert!(played["frames"].as_u64().unwrap() >= 40, "{played}");
    assert!(
        !played["origin"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{}", server.url("").rsplit(':').next().unwrap()))
    );
    let requests = played["requests"].as_array().unwrap();
    assert!(
        requests
            .iter()
            .any(|r| r["url"].as_str().unwrap().starts_with("/keys/")),
        "{played}"
    );
    for r in requests {
        assert_eq!(r["authorization"], true, "{r}");
        assert!(!r["url"].as_str().unwrap().contains("token="), "{r}");
        assert_eq!(r["status"], 200, "{r}");
    }
    // The browser asked before each kind of request (the server counted the preflights).
    let (_, metrics) = server.get_text("/metrics").await;
    for route in ["/hls/{playback_id}/master.m3u8", "/keys/{key_id}"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("ferrocast_http_requests_total")
                    && l.contains("method=\"OPTIONS\"")
                    && l.contains(&format!("route=\"{route}\""))
                    && l.contains("status=\"204\"")),
            "no preflight counted on {route}: {metrics}"
        );
    }

    // The same page without the token: refused, whatever CORS allows.
    let refused = browser_script(
        "cross_origin.cjs",
        vec![
            server.url(""),
            playback_id,
            "not-a-token".into(),
            "1".into(),
            "10".into(),
        ],
        30,
    )
    .await;
    assert_ne!(refused["fatal"], serde_json::Value::Null, "{refused}");
    assert_eq!(refused["frames"], 0, "{refused}");
    server.stop().await;
}

/// `Idempotency-Key` on creates: the same request again gets the first answer (marked as a
/// replay), another request under the key is 409, concurrent copies make one object, a
/// failed request keeps nothing, and keys belong to their credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_with_an_idempotency_key_happens_once_sqlite() {
    let server = TestServer::start().await;
    a_create_with_an_idempotency_key_happens_once(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_with_an_idempotency_key_happens_once_postgres() {
    let pg = common::PgDatabase::create().await;
    let server = TestServer::start_on(&pg, |_| {}).await;
    a_create_with_an_idempotency_key_happens_once(&server).await;
    server.stop().await;
}

async fn a_create_with_an_idempotency_key_happens_once(server: &TestServer) {
    let (_, key) = server.create_tenant("Creator").await;
    let (_, other_key) = server.create_tenant("Other").await;
    let create = |api_key: String, idem: String, body: serde_json::Value| {
        let client = server.client.clone();
        let url = server.url("/v1/live-streams");
        async move {
            let resp = client
                .post(url)
                .bearer_auth(api_key)
                .header("Idempotency-Key", idem)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let replayed = resp.headers().contains_key("idempotent-replayed");
            let v: serde_json::Value = resp.json().await.unwrap();
            (status, replayed, v)
        }
    };
    let body = json!({"playback_policy": "signed"});
    let (status, replayed, first) = create(key.clone(), "k-1".into(), body.clone()).await;
    assert_eq!((status, replayed), (201, false), "{first}");
    let (status, replayed, again) = create(key.clone(), "k-1".into(), body.clone()).await;
    assert_eq!((status, replayed), (201, true), "{again}");
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["stream_key"], first["stream_key"]);
    let (status, _, err) = create(
        key.clone(),
        "k-1".into(),
        json!({"playback_policy": "public"}),
    )
    .await;
    assert_eq!(status, 409, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("another request")
    );
    // Another credential's key of the same name is its own.
    let (status, replayed, theirs) = create(other_key.clone(), "k-1".into(), body.clone()).await;
    assert_eq!((status, replayed), (201, false));
    assert_ne!(theirs["id"], first["id"]);
    // A refused request keeps nothing: the key works once the body is right.
    let (status, _, _) = create(
        key.clone(),
        "k-2".into(),
        json!({"playback_policy": "secret"}),
    )
    .await;
    assert_eq!(status, 400);
    let (status, replayed, _) = create(key.clone(), "k-2".into(), body.clone()).await;
    assert_eq!((status, replayed), (201, false));
    // Ten copies at once: one stream made; the others replay it or are told to wait.
    let copies: Vec<_> = (0..10)
        .map(|_| tokio::spawn(create(key.clone(), "k-3".into(), body.clone())))
        .collect();
    let mut made = std::collections::HashSet::new();
    for c in copies {
        let (status, _, v) = c.await.unwrap();
        match status {
            201 => {
                made.insert(v["id"].as_str().unwrap().to_string());
            }
            409 => assert!(
                v["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("still running"),
                "{v}"
            ),
            s => panic!("{s}: {v}"),
        }
    }
    assert_eq!(made.len(), 1, "{made:?}");
    let (_, list) = server
        .call("GET", "/v1/live-streams?limit=100", Some(&key), None)
        .await;
    assert_eq!(list["data"].as_array().unwrap().len(), 3, "{list}");
    // A key that is no key.
    let (status, _, _) = create(key.clone(), "a b".into(), body.clone()).await;
    assert_eq!(status, 400);
    // A credential that proves nothing claims nothing: its request is answered 401, and the
    // same request with a good key then runs.
    let (status, _, _) = create("fck_not_a_key".into(), "k-4".into(), body.clone()).await;
    assert_eq!(status, 401);
    // A revoked key replays nothing.
    let resp = server
        .client
        .post(server.url("/v1/api-keys"))
        .bearer_auth(&key)
        .header("Idempotency-Key", "k-key")
        .json(&json!({"name": "short-lived"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let made: serde_json::Value = resp.json().await.unwrap();
    let short = made["api_key"].as_str().unwrap().to_string();
    // The new key's secret is in the kept answer, sealed: with SQLite the database file
    // never holds it in clear (API keys themselves are kept as hashes).
    for file in ["ferrocast.db", "ferrocast.db-wal"] {
        if let Ok(bytes) = std::fs::read(server.data_dir.join(file)) {
            assert!(
                !bytes.windows(short.len()).any(|w| w == short.as_bytes()),
                "the new API key is in {file} in clear"
            );
        }
    }
    let (status, _, _) = create(short.clone(), "k-5".into(), body.clone()).await;
    assert_eq!(status, 201);
    let (status, _) = server
        .call(
            "DELETE",
            &format!("/v1/api-keys/{}", made["id"].as_str().unwrap()),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, replayed, _) = create(short, "k-5".into(), body.clone()).await;
    assert_eq!((status, replayed), (401, false));
}

/// Sets `tenant_id`'s tier as the admin.
async fn set_tier(server: &TestServer, tenant_id: &str, tier: &str) {
    let (status, v) = server
        .call(
            "PUT",
            &format!("/v1/tenants/{tenant_id}/tier"),
            Some(&server.admin_key()),
            Some(json!({ "tier": tier })),
        )
        .await;
    assert_eq!(status, 200, "{v}");
}

/// A GET with `key`: (status, RateLimit-Policy, RateLimit, Retry-After).
async fn limited_get(server: &TestServer, key: &str) -> (u16, String, String, String) {
    let resp = server
        .client
        .get(server.url("/v1/live-streams"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let h = resp.headers();
    (
        resp.status().as_u16(),
        header(h, "ratelimit-policy").to_string(),
        header(h, "ratelimit").to_string(),
        header(h, "retry-after").to_string(),
    )
}

/// The free tier's 60 a minute: the 61st request at once is 429 with `Retry-After` and the
/// IETF headers; another key of another tenant is unaffected; a higher tier lifts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_tier_gets_429_with_the_rate_limit_headers_and_others_do_not() {
    let server = TestServer::start().await;
    let (tenant, key) = server.create_tenant("Small").await;
    let (_, other) = server.create_tenant("Other").await;
    set_tier(&server, &tenant, "free").await;
    let (status, policy, now, _) = limited_get(&server, &key).await;
    assert_eq!(status, 200);
    assert_eq!(policy, "\"free\";q=60;w=60");
    assert!(now.starts_with("\"free\";r=59;t="), "{now}");
    // Requests until the first refusal: the minute's 60, plus one a second that refills
    // while they run (a loaded machine is slow).
    let started = std::time::Instant::now();
    let mut ok = 1;
    let (status, policy, now, retry) = loop {
        let answer = limited_get(&server, &key).await;
        if answer.0 != 200 || ok == 200 {
            break answer;
        }
        ok += 1;
    };
    let refilled = started.elapsed().as_secs_f64().ceil() as usize;
    assert!(
        (60..=60 + refilled).contains(&ok),
        "{ok} requests passed in {refilled} s"
    );
    assert_eq!(status, 429);
    assert_eq!(policy, "\"free\";q=60;w=60");
    assert!(now.starts_with("\"free\";r=0;t="), "{now}");
    assert_eq!(retry, "1");
    // Another tenant's key (the default tier, pro) is untouched.
    let (status, policy, _, _) = limited_get(&server, &other).await;
    assert_eq!((status, policy.as_str()), (200, "\"pro\";q=1000;w=60"));
    // Enterprise lifts it at once on this node.
    set_tier(&server, &tenant, "enterprise").await;
    let (status, policy, _, _) = limited_get(&server, &key).await;
    assert_eq!(status, 200);
    assert_eq!(policy, "\"enterprise\";q=5000;w=60");
    let (status, v) = server
        .call(
            "PUT",
            &format!("/v1/tenants/{tenant}/tier"),
            Some(&server.admin_key()),
            Some(json!({"tier": "platinum"})),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    server.stop().await;
}

/// With PostgreSQL the bucket is shared: two servers on one database share a key's 60.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_two_nodes_share_a_keys_limit() {
    let pg = common::PgDatabase::create().await;
    let a = TestServer::start_on(&pg, |_| {}).await;
    let b = TestServer::start_on(&pg, |_| {}).await;
    let (tenant, key) = a.create_tenant("Shared").await;
    set_tier(&a, &tenant, "free").await;
    // Alternating nodes until the first refusal: the minute's 60 between them (plus one a
    // second refilled while they run), not 60 each.
    let started = std::time::Instant::now();
    let mut ok = 0;
    while ok < 200 {
        let node = if ok % 2 == 0 { &a } else { &b };
        if limited_get(node, &key).await.0 != 200 {
            break;
        }
        ok += 1;
    }
    let refilled = started.elapsed().as_secs_f64().ceil() as usize;
    assert!(
        (60..=60 + refilled).contains(&ok),
        "{ok} requests passed in {refilled} s"
    );
    // A raised tier is there at once (on the node that set it; others read it within 30 s).
    set_tier(&a, &tenant, "starter").await;
    let (status, policy, _, _) = limited_get(&a, &key).await;
    assert_eq!((status, policy.as_str()), (200, "\"starter\";q=300;w=60"));
    a.stop().await;
    b.stop().await;
}

/// `/docs` is Swagger UI served by Ferrocast (no CDN): it lists every route of the spec, and
/// a developer authorizes with an API key and tries a call from the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_explorer_renders_the_spec_and_tries_a_call_with_a_key() {
    let server = TestServer::start().await;
    let (_, key) = server.create_tenant("Developer").await;
    let (status, spec) = server.call("GET", "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    let operations: usize = spec["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    let resp = server.client.get(server.url("/docs")).send().await.unwrap();
    assert!(
        header(resp.headers(), "content-security-policy").starts_with("default-src 'self'"),
        "{:?}",
        resp.headers()
    );
    let seen = browser_script("docs.cjs", vec![server.url(""), key.clone()], 60).await;
    eprintln!("docs: {seen}");
    assert_eq!(seen["error"], serde_json::Value::Null, "{seen}");
    assert_eq!(seen["operations"], operations, "{seen}");
    assert_eq!(seen["foreign"], json!([]), "{seen}");
    assert_eq!(seen["status"], "200", "{seen}");
    assert!(
        seen["body"].as_str().unwrap().contains("Developer"),
        "{seen}"
    );
    server.stop().await;
}
