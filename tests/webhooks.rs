//! Webhooks out, end to end: ffmpeg publishes, tus-js-client uploads, and a receiver on
//! 127.0.0.1 (tests/fakes/webhook_receiver.py) verifies every delivery with the Standard
//! Webhooks reference library; deliveries outlive a receiver that is down and a server
//! that is SIGKILLed; failing endpoints are logged, retried and disabled; private targets
//! are refused.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::TestServer;
use common::hooks::{endpoint, received, receiver, types_for};
use common::media::{eventually, ffmpeg_publish, make_media, tus_upload};
use serde_json::{Value, json};

/// Each event id once.
fn assert_once_each(events: &[Value]) {
    let mut seen = HashMap::new();
    for e in events {
        *seen
            .entry(e["webhook_id"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_gets_a_broadcasts_and_an_uploads_events_in_order_signed_to_the_standard() {
    let server = TestServer::start_with(|c| {
        c.webhooks.allow_private_targets = true;
        c.webhooks.retry_base_ms = 300;
    })
    .await;
    let (tenant_id, key) = server.create_tenant("Hooked").await;
    let r = receiver(0);
    let (endpoint_id, secret) = endpoint(&server, &key, &r.base_url, "all", json!(["*"])).await;
    r.control("secrets", json!({"all": [secret]})).await;

    // A broadcast, recorded.
    let (status, s) = server
        .call(
            "POST",
            "/v1/live-streams",
            Some(&key),
            Some(json!({"reconnect_window_s": 1, "record": true})),
        )
        .await;
    assert_eq!(status, 201, "{s}");
    let stream_id = s["id"].as_str().unwrap().to_string();
    let publish = format!(
        "{}/{}",
        s["rtmp_url"].as_str().unwrap(),
        s["stream_key"].as_str().unwrap()
    );
    let mut ffmpeg = ffmpeg_publish(&publish, 640, 360, 5);
    assert!(ffmpeg.wait(Duration::from_secs(40)).await, "ffmpeg failed");

    // A file, uploaded with tus.
    let media = tempfile::tempdir().unwrap();
    let file = make_media(
        media.path(),
        "clip.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30",
            "-t",
            "3",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
        ],
    );
    let report = tus_upload(&file, &server.url("/v1/uploads"), &key, 0, "");
    assert_eq!(report["finished"], true, "{report}");

    let events = eventually("the lifecycle events", Duration::from_secs(90), || async {
        let got = received(&r).await;
        let uploads = got
            .iter()
            .filter(|e| e["body"]["type"] == "upload.completed");
        let ready = got.iter().filter(|e| e["body"]["type"] == "asset.ready");
        let idle = got.iter().any(|e| e["body"]["type"] == "live_stream.idle");
        let recording = got
            .iter()
            .any(|e| e["body"]["type"] == "live_stream.recording.ready");
        (uploads.count() == 1 && ready.count() == 2 && idle && recording).then_some(got)
    })
    .await;

    // Every delivery verifies with the reference library, and each event came once.
    for e in &events {
        assert_eq!(e["verified"], json!([0]), "not verified: {e}");
        let body = &e["body"];
        assert_eq!(body["id"], e["webhook_id"], "{e}");
        assert_eq!(body["tenant_id"], tenant_id.as_str());
        let at = body["created_at"].as_str().unwrap();
        assert!(at.ends_with('Z') && at.contains('T'), "{at}");
        assert!(body["data"]["id"].is_string(), "{e}");
    }
    assert_once_each(&events);

    // The live stream's lifecycle, in order, with the stream as the API shows it.
    assert_eq!(
        types_for(&events, &stream_id),
        [
            "live_stream.created",
            "live_stream.connected",
            "live_stream.active",
            "live_stream.disconnected",
            "live_stream.idle",
        ],
        "{events:#?}"
    );
    let active = events
        .iter()
        .find(|e| e["body"]["type"] == "live_stream.active")
        .unwrap();
    assert_eq!(active["body"]["data"]["status"], "active");
    assert!(active["body"]["data"]["ingest"].is_object(), "{active}");
    assert!(
        events
            .iter()
            .all(|e| e["body"]["data"].get("stream_key").is_none()),
        "a stream key is never sent"
    );
    assert_eq!(active["body"]["data"]["rtmp_url"], s["rtmp_url"]);

    // The recording and the upload: created, then ready, each as GET /v1/assets/{id} shows.
    let recording = events
        .iter()
        .find(|e| e["body"]["type"] == "live_stream.recording.ready")
        .unwrap();
    let recording_id = recording["body"]["data"]["id"].as_str().unwrap();
    assert_eq!(
        recording["body"]["data"]["live_stream_id"],
        stream_id.as_str()
    );
    assert_eq!(
        types_for(&events, recording_id),
        [
            "asset.created",
            "asset.ready",
            "live_stream.recording.ready"
        ]
    );
    let upload = events
        .iter()
        .find(|e| e["body"]["type"] == "upload.completed")
        .unwrap();
    let asset_id = upload["body"]["data"]["asset_id"].as_str().unwrap();
    assert_eq!(
        upload["body"]["data"]["size_bytes"],
        std::fs::metadata(&file).unwrap().len()
    );
    assert_eq!(
        types_for(&events, asset_id),
        ["asset.created", "asset.ready"]
    );
    let ready = events
        .iter()
        .find(|e| e["body"]["type"] == "asset.ready" && e["body"]["data"]["id"] == asset_id)
        .unwrap();
    let (_, asset) = server
        .call("GET", &format!("/v1/assets/{asset_id}"), Some(&key), None)
        .await;
    assert_eq!(ready["body"]["data"], asset, "the API's shape");

    // The delivery log has every one, delivered, with the receiver's status and answer.
    let (status, log) = server
        .call(
            "GET",
            &format!("/v1/webhook-endpoints/{endpoint_id}/deliveries?limit=1000"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{log}");
    let log = log["data"].as_array().unwrap();
    assert_eq!(log.len(), events.len(), "{log:#?}");
    for d in log {
        assert_eq!(d["status"], "delivered", "{d}");
        assert_eq!(d["last_status"], 200);
        assert!(d["last_latency_ms"].as_i64().unwrap() >= 0);
        assert!(
            d["last_response"]
                .as_str()
                .unwrap()
                .contains("test receiver")
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_wait_out_a_receiver_that_is_down_and_survive_a_sigkill() {
    // The receiver is down: attempts fail and are retried; once it is up, each event
    // arrives once.
    let server = TestServer::start_with(|c| {
        c.webhooks.allow_private_targets = true;
        c.webhooks.retry_base_ms = 200;
        c.webhooks.retry_max_s = 1;
    })
    .await;
    let (_, key) = server.create_tenant("Patient").await;
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let (endpoint_id, secret) = endpoint(&server, &key, &url, "down", json!(["*"])).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (status, s) = server
            .call("POST", "/v1/live-streams", Some(&key), Some(json!({})))
            .await;
        assert_eq!(status, 201);
        ids.push(s["id"].as_str().unwrap().to_string());
    }
    let deliveries = format!("/v1/webhook-endpoints/{endpoint_id}/deliveries");
    eventually("failed attempts", Duration::from_secs(20), || async {
        let (_, log) = server.call("GET", &deliveries, Some(&key), None).await;
        let log = log["data"].as_array().unwrap().clone();
        (log.len() == 3
            && log.iter().all(|d| {
                d["status"] == "pending"
                    && d["attempts"].as_i64().unwrap() >= 2
                    && d["last_error"]
                        .as_str()
                        .unwrap()
                        .contains("could not connect")
                    && d["next_attempt_at"].is_string()
            }))
        .then_some(())
    })
    .await;
    let r = receiver(port);
    r.control("secrets", json!({"down": [secret]})).await;
    let got = eventually(
        "delivery once the receiver is up",
        Duration::from_secs(20),
        || async {
            let got = received(&r).await;
            (got.len() >= 3).then_some(got)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got_after = received(&r).await;
    assert_eq!(got_after.len(), 3, "{got_after:#?}");
    assert_once_each(&got);
    for id in &ids {
        assert_eq!(types_for(&got, id), ["live_stream.created"]);
    }
    assert!(got.iter().all(|e| e["verified"] == json!([0])));
    server.stop().await;
    drop(r);

    // A server SIGKILLed with events committed and not delivered sends them after restart.
    let dir = tempfile::tempdir().unwrap();
    let http_port = common::free_port();
    let admin = "fc_admin_webhooks_test_0123456789abcdef0123456789";
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_ferrocast"))
            .arg("serve")
            .env("FERROCAST_DATA_DIR", dir.path().join("data"))
            .env("FERROCAST_KEYS_DIR", dir.path().join("keys"))
            .env("FERROCAST_HTTP_LISTEN", format!("127.0.0.1:{http_port}"))
            .env("FERROCAST_RTMP_LISTEN", "127.0.0.1:0")
            .env("FERROCAST_ADMIN_KEY", admin)
            .env("FERROCAST_WEBHOOKS_ALLOW_PRIVATE_TARGETS", "true")
            .env("FERROCAST_WEBHOOKS_RETRY_BASE_MS", "300")
            .env("FERROCAST_WEBHOOKS_RETRY_MAX_S", "1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("server.log")).unwrap())
            .spawn()
            .expect("ferrocast serve starts")
    };
    let base = format!("http://127.0.0.1:{http_port}");
    let client = common::http_client();
    let call = |method: &'static str, path: String, key: String, body: Value| {
        let req = client
            .request(method.parse().unwrap(), format!("{base}{path}"))
            .bearer_auth(key)
            .json(&body);
        async move {
            match req.send().await {
                Ok(r) => (
                    r.status().as_u16(),
                    r.json::<Value>().await.unwrap_or(Value::Null),
                ),
                Err(_) => (0, Value::Null),
            }
        }
    };
    let ready = || async {
        eventually("the server to serve", Duration::from_secs(30), || async {
            let r = client.get(format!("{base}/healthz")).send().await;
            r.is_ok_and(|r| r.status().is_success()).then_some(())
        })
        .await
    };
    let mut first = common::process::KillOnDrop(spawn());
    ready().await;
    let (status, t) = call(
        "POST",
        "/v1/tenants".into(),
        admin.into(),
        json!({"name": "Killed"}),
    )
    .await;
    assert_eq!(status, 201, "{t}");
    let key = t["api_key"].as_str().unwrap().to_string();
    let port = common::free_port();
    let (status, e) = call(
        "POST",
        "/v1/webhook-endpoints".into(),
        key.clone(),
        json!({"url": format!("http://127.0.0.1:{port}/killed"), "events": ["*"]}),
    )
    .await;
    assert_eq!(status, 201, "{e}");
    let secret = e["secret"].as_str().unwrap().to_string();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (status, s) = call("POST", "/v1/live-streams".into(), key.clone(), json!({})).await;
        assert_eq!(status, 201, "{s}");
        ids.push(s["id"].as_str().unwrap().to_string());
    }
    // Attempted (the receiver is down) and not delivered; one more committed just now.
    let log_path = format!(
        "/v1/webhook-endpoints/{}/deliveries",
        e["id"].as_str().unwrap()
    );
    eventually("an attempt at each", Duration::from_secs(20), || async {
        let (_, log) = call("GET", log_path.clone(), key.clone(), Value::Null).await;
        let log = log["data"].as_array().cloned().unwrap_or_default();
        (log.len() == 3 && log.iter().all(|d| d["attempts"].as_i64() >= Some(1))).then_some(())
    })
    .await;
    let (status, s) = call("POST", "/v1/live-streams".into(), key.clone(), json!({})).await;
    assert_eq!(status, 201, "{s}");
    ids.push(s["id"].as_str().unwrap().to_string());
    first.0.kill().unwrap(); // SIGKILL
    let _ = first.0.wait();
    let r = receiver(port);
    r.control("secrets", json!({"killed": [secret]})).await;
    let _second = common::process::KillOnDrop(spawn());
    ready().await;
    eventually(
        "delivery after the restart",
        Duration::from_secs(30),
        || async { (received(&r).await.len() >= 4).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = received(&r).await;
    assert_eq!(got.len(), 4, "{got:#?}");
    assert_once_each(&got);
    for id in &ids {
        assert_eq!(types_for(&got, id), ["live_stream.created"], "{got:#?}");
    }
    assert!(got.iter().all(|e| e["verified"] == json!([0])), "{got:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_is_logged_retried_and_disabled_and_secrets_rotate_with_overlap() {
    let server = TestServer::start_with(|c| {
        c.webhooks.allow_private_targets = true;
        c.webhooks.retry_base_ms = 200;
        c.webhooks.retry_max_s = 1;
        c.webhooks.disable_after_s = 2;
    })
    .await;
    let (_, key) = server.create_tenant("Flaky").await;
    let r = receiver(0);
    let (failing, failing_secret) = endpoint(
        &server,
        &key,
        &r.base_url,
        "failing",
        json!(["live_stream.created"]),
    )
    .await;
    let (healthy, healthy_secret) = endpoint(
        &server,
        &key,
        &r.base_url,
        "healthy",
        json!(["webhook_endpoint.disabled", "live_stream.deleted"]),
    )
    .await;
    r.control(
        "secrets",
        json!({"failing": [failing_secret], "healthy": [healthy_secret.clone()]}),
    )
    .await;
    r.control("status", json!({"failing": 500})).await;
    let (_, s) = server
        .call("POST", "/v1/live-streams", Some(&key), Some(json!({})))
        .await;
    let stream_id = s["id"].as_str().unwrap().to_string();

    // It fails, is retried, and after disable_after_s it is disabled; the tenant's other
    // endpoint is told.
    let disabled = eventually("the disabled event", Duration::from_secs(30), || async {
        received(&r)
            .await
            .into_iter()
            .find(|e| e["body"]["type"] == "webhook_endpoint.disabled")
    })
    .await;
    assert_eq!(disabled["endpoint"], "healthy");
    assert_eq!(disabled["verified"], json!([0]));
    assert_eq!(disabled["body"]["data"]["id"], failing.as_str());
    assert_eq!(disabled["body"]["data"]["enabled"], false);
    assert!(
        disabled["body"]["data"].get("secret").is_none(),
        "{disabled}"
    );
    let (_, e) = server
        .call(
            "GET",
            &format!("/v1/webhook-endpoints/{failing}"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(e["enabled"], false, "{e}");
    assert!(e["disabled_reason"].as_str().unwrap().contains("failed"));
    let tries: Vec<Value> = received(&r)
        .await
        .into_iter()
        .filter(|e| e["endpoint"] == "failing")
        .collect();
    assert!(tries.len() >= 3, "retried: {tries:#?}");
    assert!(
        tries
            .iter()
            .all(|t| t["webhook_id"] == tries[0]["webhook_id"])
    );
    let (_, log) = server
        .call(
            "GET",
            &format!("/v1/webhook-endpoints/{failing}/deliveries?status=failed"),
            Some(&key),
            None,
        )
        .await;
    let d = log["data"][0].clone();
    assert_eq!(d["last_status"], 500, "{log}");
    assert_eq!(d["event_type"], "live_stream.created");
    assert_eq!(d["object_id"], stream_id.as_str());
    assert!(d["attempts"].as_i64().unwrap() >= 3);
    assert!(
        d["last_response"]
            .as_str()
            .unwrap()
            .contains("test receiver")
    );
    assert!(d["last_error"].as_str().unwrap().contains("500"));

    // Retrying needs the endpoint enabled; then the same event goes again, same id.
    let retry = format!(
        "/v1/webhook-endpoints/{failing}/deliveries/{}/retry",
        d["id"].as_str().unwrap()
    );
    let (status, _) = server.call("POST", &retry, Some(&key), None).await;
    assert_eq!(status, 409);
    r.control("status", json!({"failing": 200})).await;
    let (status, e) = server
        .call(
            "PATCH",
            &format!("/v1/webhook-endpoints/{failing}"),
            Some(&key),
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!((status, &e["enabled"]), (200, &json!(true)), "{e}");
    let (status, d2) = server.call("POST", &retry, Some(&key), None).await;
    assert_eq!(status, 202, "{d2}");
    let ok = eventually("the retried delivery", Duration::from_secs(10), || async {
        received(&r)
            .await
            .into_iter()
            .find(|e| e["endpoint"] == "failing" && e["status"] == 200)
    })
    .await;
    assert_eq!(ok["webhook_id"], tries[0]["webhook_id"]);

    // Rotation: during the overlap both secrets verify; with none, only the new one.
    let rotate = format!("/v1/webhook-endpoints/{healthy}/rotate-secret");
    let (status, rotated) = server
        .call(
            "POST",
            &rotate,
            Some(&key),
            Some(json!({"overlap_s": 3600})),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, healthy_secret);
    assert!(rotated["previous_secret_expires_at"].is_string());
    r.control(
        "secrets",
        json!({"healthy": [healthy_secret.clone(), new_secret.clone()]}),
    )
    .await;
    let delete = |id: String| {
        let server = &server;
        let key = &key;
        async move {
            let (status, _) = server
                .call("DELETE", &format!("/v1/live-streams/{id}"), Some(key), None)
                .await;
            assert_eq!(status, 204);
        }
    };
    delete(stream_id.clone()).await;
    let both = eventually("the delete event", Duration::from_secs(10), || async {
        received(&r)
            .await
            .into_iter()
            .find(|e| e["body"]["type"] == "live_stream.deleted")
    })
    .await;
    assert_eq!(both["verified"], json!([0, 1]), "both secrets sign: {both}");
    let (_, rotated) = server
        .call("POST", &rotate, Some(&key), Some(json!({"overlap_s": 0})))
        .await;
    let newest = rotated["secret"].as_str().unwrap().to_string();
    r.control("secrets", json!({"healthy": [new_secret, newest]}))
        .await;
    let (_, s) = server
        .call("POST", "/v1/live-streams", Some(&key), Some(json!({})))
        .await;
    delete(s["id"].as_str().unwrap().to_string()).await;
    let only_new = eventually(
        "the second delete event",
        Duration::from_secs(10),
        || async {
            received(&r).await.into_iter().find(|e| {
                e["body"]["type"] == "live_stream.deleted" && e["body"]["data"]["id"] == s["id"]
            })
        },
    )
    .await;
    assert_eq!(
        only_new["verified"],
        json!([1]),
        "only the newest: {only_new}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_targets_and_bad_endpoints_are_refused() {
    let server = TestServer::start().await;
    let (_, key) = server.create_tenant("Careful").await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.7/hook",
        "http://192.168.1.1/hook",
        "http://0x7f000001/hook",
        "http://metadata.google.internal/",
        "ftp://example.com/hook",
        "https://user:secret@example.com/hook",
    ] {
        let (status, e) = server
            .call(
                "POST",
                "/v1/webhook-endpoints",
                Some(&key),
                Some(json!({"url": url, "events": ["*"]})),
            )
            .await;
        assert_eq!(status, 400, "{url}: {e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains("url"),
            "{e}"
        );
    }
    // A name that is not refused by itself but resolves only to this machine (this
    // machine's own name, which its hosts file maps to a loopback address).
    let own = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let own = own.trim();
    let addrs: Vec<_> = tokio::net::lookup_host((own, 80))
        .await
        .map(|a| a.collect())
        .unwrap_or_default();
    assert!(
        !addrs.is_empty()
            && addrs
                .iter()
                .all(|a: &std::net::SocketAddr| a.ip().is_loopback()),
        "this machine's name {own} resolves to loopback: {addrs:?}"
    );
    let (status, e) = server
        .call(
            "POST",
            "/v1/webhook-endpoints",
            Some(&key),
            Some(json!({"url": format!("http://{own}:9/hook"), "events": ["*"]})),
        )
        .await;
    assert_eq!(status, 400, "{own}: {e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("resolves only to"),
        "{e}"
    );
    for events in [json!([]), json!(["asset.exploded"])] {
        let (status, e) = server
            .call(
                "POST",
                "/v1/webhook-endpoints",
                Some(&key),
                Some(json!({"url": "https://example.com/hook", "events": events})),
            )
            .await;
        assert_eq!(status, 400, "{events}: {e}");
    }
    let (status, e) = server
        .call(
            "POST",
            "/v1/webhook-endpoints",
            Some(&key),
            Some(json!({"url": "https://hooks.example.com/ferrocast", "events": ["asset.ready", "asset.ready"]})),
        )
        .await;
    assert_eq!(status, 201, "{e}");
    assert_eq!(e["events"], json!(["asset.ready"]));
    let id = e["id"].as_str().unwrap();
    let (status, _) = server
        .call(
            "PATCH",
            &format!("/v1/webhook-endpoints/{id}"),
            Some(&key),
            Some(json!({"url": "http://127.0.0.1/"})),
        )
        .await;
    assert_eq!(status, 400);
    let (status, got) = server
        .call(
            "GET",
            &format!("/v1/webhook-endpoints/{id}"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        got.get("secret").is_none(),
        "the secret is shown once: {got}"
    );
    // Another tenant sees none of it.
    let (_, other) = server.create_tenant("Other").await;
    let (status, _) = server
        .call(
            "GET",
            &format!("/v1/webhook-endpoints/{id}"),
            Some(&other),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = server
        .call(
            "DELETE",
            &format!("/v1/webhook-endpoints/{id}"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 204);
    server.stop().await;
}

/// Two nodes on one PostgreSQL database: every event is sent once (a lease keeps the
/// other node off a delivery in flight), and an object's events arrive in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_postgres_send_each_event_once_and_in_order() {
    let pg = common::PgDatabase::create().await;
    let tweak = |c: &mut ferrocast::config::Config| {
        c.webhooks.allow_private_targets = true;
        c.webhooks.retry_base_ms = 200;
        c.webhooks.retry_max_s = 1;
    };
    // Nodes share the master key, as they must: each opens the secrets the other sealed.
    let keys = tempfile::tempdir().unwrap();
    let keys_dir = keys.path().to_path_buf();
    let a = TestServer::start_on(&pg, |c| {
        tweak(c);
        c.keys.dir = keys_dir.clone();
    })
    .await;
    let b = TestServer::start_on(&pg, |c| {
        tweak(c);
        c.keys.dir = keys_dir.clone();
    })
    .await;
    let (_, key) = a.create_tenant("Busy").await;
    let r = receiver(0);
    let (_, secret) = endpoint(&a, &key, &r.base_url, "pg", json!(["*"])).await;
    r.control("secrets", json!({"pg": [secret]})).await;
    let mut ids = Vec::new();
    for i in 0..12 {
        let node = if i % 2 == 0 { &a } else { &b };
        let (status, s) = node
            .call("POST", "/v1/live-streams", Some(&key), Some(json!({})))
            .await;
        assert_eq!(status, 201, "{s}");
        let id = s["id"].as_str().unwrap().to_string();
        let other = if i % 2 == 0 { &b } else { &a };
        let (status, _) = other
            .call(
                "DELETE",
                &format!("/v1/live-streams/{id}"),
                Some(&key),
                None,
            )
            .await;
        assert_eq!(status, 204);
        ids.push(id);
    }
    eventually("every event", Duration::from_secs(30), || async {
        (received(&r).await.len() >= 24).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = received(&r).await;
    assert_eq!(got.len(), 24, "{got:#?}");
    assert_once_each(&got);
    // Each answered at its first attempt, by whichever node took it.
    assert!(got.iter().all(|e| e["status"] == 200));
    for node in [&a, &b] {
        let (_, log) = node
            .call("GET", "/v1/webhook-endpoints", Some(&key), None)
            .await;
        let id = log["data"][0]["id"].as_str().unwrap();
        let (_, deliveries) = node
            .call(
                "GET",
                &format!("/v1/webhook-endpoints/{id}/deliveries?limit=100"),
                Some(&key),
                None,
            )
            .await;
        let deliveries = deliveries["data"].as_array().unwrap();
        assert_eq!(deliveries.len(), 24);
        assert!(
            deliveries
                .iter()
                .all(|d| d["attempts"] == 1 && d["status"] == "delivered"),
            "{deliveries:#?}"
        );
    }
    for id in &ids {
        assert_eq!(
            types_for(&got, id),
            ["live_stream.created", "live_stream.deleted"]
        );
    }
    assert!(got.iter().all(|e| e["verified"] == json!([0])));
    a.stop().await;
    b.stop().await;
}
