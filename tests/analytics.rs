//! Viewer analytics against a real server: beacons in over HTTP, views out of the API, on
//! SQLite and PostgreSQL, with bad input refused by reason and tenants kept apart.

mod common;

use common::{PgDatabase, TestServer};
use ferrocast::config::DatabaseUrl;
use serde_json::{Value, json};

const CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                      HeadlessChrome/120.0.0.0 Safari/537.36";

/// A ready asset of `duration_ms`; returns its playback id.
async fn asset(server: &TestServer, tenant_id: &str, duration_ms: i64) -> String {
    let pb = ferrocast::ids::new_playback_id();
    let db = &server.state.jobs.db;
    let a = db
        .create_asset(
            tenant_id,
            None,
            &pb,
            ferrocast::db::PlaybackPolicy::Public,
            ferrocast::db::AssetStatus::Ready,
            None,
        )
        .await
        .unwrap();
    db.finish_asset(
        &a.id,
        ferrocast::db::AssetStatus::Ready,
        Some(duration_ms),
        None,
    )
    .await
    .unwrap();
    pb
}

/// A fixture's events, moved to end just now.
fn fixture_events(name: &str) -> Vec<Value> {
    let path = format!(
        "{}/tests/fixtures/analytics/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let events = fixture["events"].as_array().unwrap().clone();
    let last = events
        .iter()
        .map(|e| e["t"].as_i64().unwrap())
        .max()
        .unwrap();
    let shift = ferrocast::clock::now_ms() - last - 1000;
    events
        .into_iter()
        .map(|mut e| {
            e["t"] = json!(e["t"].as_i64().unwrap() + shift);
            e
        })
        .collect()
}

async fn post(server: &TestServer, body: &str) -> (u16, Value) {
    let response = server
        .client
        .post(server.url("/v1/beacons"))
        .header("content-type", "text/plain;charset=UTF-8")
        .header("user-agent", CHROME)
        .header("x-country", "DE")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    (status, response.json().await.unwrap_or(Value::Null))
}

fn batch(view: &str, pb: &str, events: &[Value]) -> String {
    json!({
        "view_id": view,
        "viewer_id": "viewer-0001",
        "playback_id": pb,
        "player": {"name": "ferrocast-data", "version": "1"},
        "events": events,
    })
    .to_string()
}

async fn views(server: &TestServer, key: &str, query: &str) -> Vec<Value> {
    let (status, list) = server
        .call(
            "GET",
            &format!("/v1/analytics/views{query}"),
            Some(key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{list}");
    list["data"].as_array().unwrap().clone()
}

async fn beacons_become_views(server: &TestServer) {
    let (tenant_id, key) = server.create_tenant("Watched").await;
    let pb = asset(server, &tenant_id, 120_000).await;

    // A view in two batches, the first sent twice: one view, its events counted once.
    let events = fixture_events("rendition_switches_and_upscaling");
    let (first, second) = events.split_at(4);
    for part in [first, first, second] {
        let (status, body) = post(server, &batch("view-0000000001", &pb, part)).await;
        assert_eq!(status, 202, "{body}");
    }
    server.state.analytics.flush().await;
    let listed = views(server, &key, &format!("?playback_id={pb}")).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let v = &listed[0];
    assert_eq!(v["id"], "view-0000000001");
    assert_eq!(v["viewer_id"], "viewer-0001");
    assert_eq!(v["finished"], true);
    assert_eq!(v["video_startup_time_ms"], 1000);
    assert_eq!(v["watch_time_ms"], 61_000);
    assert_eq!(v["playing_time_ms"], 60_000);
    assert!(
        (v["upscale_percentage"].as_f64().unwrap() - 100.0 / 6.0).abs() < 1e-6,
        "{v}"
    );
    assert_eq!(
        (
            v["browser"].as_str(),
            v["os"].as_str(),
            v["device_type"].as_str()
        ),
        (Some("Chrome"), Some("Linux"), Some("desktop"))
    );
    assert_eq!(v["country"], "DE");
    assert_eq!(v["player"], "ferrocast-data 1");
    assert_eq!(v["sources"], json!(["beacon"]));
    assert!(v["scores"]["startup"].as_f64().unwrap() > 85.0);
    let (status, detail) = server
        .call(
            "GET",
            "/v1/analytics/views/view-0000000001",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["events"].as_array().unwrap().len(), 7);

    // An exit before video start, still open until its viewend arrives.
    let ebvs = fixture_events("exit_before_video_start");
    post(server, &batch("view-0000000002", &pb, &ebvs[..2])).await;
    server.state.analytics.flush().await;
    let (_, open) = server
        .call(
            "GET",
            "/v1/analytics/views/view-0000000002",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(open["finished"], false, "{open}");
    post(server, &batch("view-0000000002", &pb, &ebvs[2..])).await;
    server.state.analytics.flush().await;
    let (_, done) = server
        .call(
            "GET",
            "/v1/analytics/views/view-0000000002",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(
        (
            done["finished"].as_bool(),
            done["exit_before_video_start"].as_bool()
        ),
        (Some(true), Some(true)),
        "{done}"
    );

    // Bad input: each refused with its reason, nothing queued.
    let now = ferrocast::clock::now_ms();
    let play = |t: i64| json!({"seq": 1, "type": "play", "t": t});
    let many: Vec<Value> = (0..301)
        .map(|i| json!({"seq": i, "type": "heartbeat", "t": now}))
        .collect();
    let cases = [
        ("{not json".to_string(), 400, "not the JSON"),
        (batch("view-0000000003", &pb, &many), 400, "1 to 300"),
        (
            batch("view-0000000003", &pb, &[play(now + 86_400_000)]),
            400,
            "ahead",
        ),
        (
            batch("view-0000000003", &pb, &[play(now - 30 * 86_400_000)]),
            400,
            "behind",
        ),
        (
            batch("view-0000000003", "nosuchplaybackid", &[play(now)]),
            404,
            "unknown playback_id",
        ),
        (batch("x", &pb, &[play(now)]), 400, "view_id"),
        (
            batch(
                "view-0000000003",
                &pb,
                &[json!({"seq": 1, "type": "error", "t": now, "message": "m".repeat(2000)})],
            ),
            400,
            "too long",
        ),
        ("x".repeat(600 * 1024), 413, "bytes at most"),
    ];
    for (body, want, reason) in cases {
        let (status, answer) = post(server, &body).await;
        assert_eq!(status, want, "{reason}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(reason),
            "{message:?} should say {reason:?}"
        );
    }

    // Another tenant sees none of it.
    let (_, other) = server.create_tenant("Other").await;
    assert!(views(server, &other, "").await.is_empty());
    let (status, _) = server
        .call(
            "GET",
            "/v1/analytics/views/view-0000000001",
            Some(&other),
            None,
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(views(server, &key, "").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beacons_become_views_with_mux_metrics_sqlite() {
    let server = TestServer::start_with(|c| c.playback.country_header = "x-country".into()).await;
    beacons_become_views(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beacons_become_views_with_mux_metrics_postgres() {
    let pg = PgDatabase::create().await;
    let url = pg.url.clone();
    let server = TestServer::start_with(|c| {
        c.database.url = DatabaseUrl::new(url);
        c.playback.country_header = "x-country".into();
    })
    .await;
    beacons_become_views(&server).await;
    server.stop().await;
}

/// A view still open when the server stops is written, and continues after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_view_survives_a_restart_and_continues() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::test_config(dir.path());
    let server = TestServer::start_config(config.clone()).await;
    let (tenant_id, key) = server.create_tenant("Restarted").await;
    let pb = asset(&server, &tenant_id, 100_000).await;
    let events = fixture_events("pause_and_resume_stay_one_view");
    let (status, _) = post(&server, &batch("view-restart-01", &pb, &events[..3])).await;
    assert_eq!(status, 202);
    server.stop().await;

    let server = TestServer::start_config(config).await;
    let (_, before) = server
        .call(
            "GET",
            "/v1/analytics/views/view-restart-01",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(before["finished"], false, "{before}");
    assert_eq!(before["playing_time_ms"], 10_000);
    post(&server, &batch("view-restart-01", &pb, &events[3..])).await;
    server.state.analytics.flush().await;
    let (_, after) = server
        .call(
            "GET",
            "/v1/analytics/views/view-restart-01",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(
        (
            after["finished"].as_bool(),
            after["watch_time_ms"].as_i64(),
            after["playing_time_ms"].as_i64()
        ),
        (Some(true), Some(21_500), Some(20_500)),
        "{after}"
    );
    server.stop().await;
}
