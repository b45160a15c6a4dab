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
    post_as(server, body, CHROME, "DE").await
}

async fn post_as(server: &TestServer, body: &str, agent: &str, country: &str) -> (u16, Value) {
    let response = server
        .client
        .post(server.url("/v1/beacons"))
        .header("content-type", "text/plain;charset=UTF-8")
        .header("user-agent", agent)
        .header("x-country", country)
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

async fn get_as(server: &TestServer, key: &str, path: &str) -> (u16, Value) {
    server.call("GET", path, Some(key), None).await
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
    assert_eq!(v["rendition"], "720p", "30 of its 60 s: {v}");
    assert_eq!(v["player"], "ferrocast-data 1");
    let (status, by_rendition) = get_as(
        server,
        &key,
        "/v1/analytics/metrics/playing_time/breakdown?timeframe=1h&group_by=rendition",
    )
    .await;
    assert_eq!(status, 200, "{by_rendition}");
    assert_eq!(
        by_rendition["data"][0]["dimensions"],
        json!({"rendition": "720p"}),
        "{by_rendition}"
    );
    assert_eq!(by_rendition["data"][0]["value"], 60_000.0, "{by_rendition}");
    assert_eq!(v["sources"], json!(["beacon"]));
    assert!(v["cmcd"].is_null(), "{v}");
    assert!(v["scores"]["startup"].as_f64().unwrap() > 85.0);
    let (status, detail) = get_as(server, &key, "/v1/analytics/views/view-0000000001").await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["events"].as_array().unwrap().len(), 7);

    // An exit before video start, still open until its viewend arrives.
    let ebvs = fixture_events("exit_before_video_start");
    post(server, &batch("view-0000000002", &pb, &ebvs[..2])).await;
    server.state.analytics.flush().await;
    let (_, open) = get_as(server, &key, "/v1/analytics/views/view-0000000002").await;
    assert_eq!(open["finished"], false, "{open}");
    post(server, &batch("view-0000000002", &pb, &ebvs[2..])).await;
    server.state.analytics.flush().await;
    let (_, done) = get_as(server, &key, "/v1/analytics/views/view-0000000002").await;
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

    // A third view, from Firefox on Windows in France.
    let firefox =
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:120.0) Gecko/20100101 Firefox/120.0";
    let third = fixture_events("pause_and_resume_stay_one_view");
    let (status, _) = post_as(
        server,
        &batch("view-0000000003", &pb, &third),
        firefox,
        "FR",
    )
    .await;
    assert_eq!(status, 202);
    server.state.analytics.flush().await;

    // Metrics over the views: overall, filtered, broken down, over time.
    let metric = |path: String, tenant_key: String| async move {
        server.call("GET", &path, Some(&tenant_key), None).await
    };
    let overall =
        |m: &str, query: &str| format!("/v1/analytics/metrics/{m}/overall?timeframe=1h{query}");
    let (status, all) = metric(overall("views", ""), key.clone()).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(
        (all["value"].as_f64(), all["views"].as_u64()),
        (Some(3.0), Some(3))
    );
    let (_, de) = metric(
        overall("views", "&filters=country:DE,browser:Chrome"),
        key.clone(),
    )
    .await;
    assert_eq!(de["value"], 2.0, "{de}");
    let (_, ebvs) = metric(overall("exits_before_video_start", ""), key.clone()).await;
    assert!(
        (ebvs["value"].as_f64().unwrap() - 100.0 / 3.0).abs() < 1e-9,
        "{ebvs}"
    );
    let (_, startup) = metric(overall("video_startup_time", ""), key.clone()).await;
    assert_eq!(startup["value"], 1000.0, "{startup}");
    let (_, success) = metric(overall("playback_success_score", ""), key.clone()).await;
    assert!(success["value"].as_f64().is_some(), "{success}");
    let (status, by_source) = metric(
        "/v1/analytics/metrics/views/breakdown?timeframe=1h&group_by=sources".into(),
        key.clone(),
    )
    .await;
    assert_eq!(status, 200, "{by_source}");
    assert_eq!(
        by_source["data"][0]["dimensions"],
        json!({"sources": "beacon"}),
        "{by_source}"
    );
    let (_, watch) = metric(overall("watch_time", "&filters=country:FR"), key.clone()).await;
    assert_eq!(watch["value"], 21_500.0, "{watch}");
    let (status, by) = metric(
        "/v1/analytics/metrics/watch_time/breakdown?timeframe=1h&group_by=country,browser".into(),
        key.clone(),
    )
    .await;
    assert_eq!(status, 200, "{by}");
    let groups = by["data"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{by}");
    assert_eq!(
        groups[0]["dimensions"],
        json!({"country": "DE", "browser": "Chrome"})
    );
    assert_eq!(
        (groups[0]["views"].as_u64(), groups[0]["value"].as_f64()),
        (Some(2), Some(65_000.0))
    );
    assert_eq!(
        groups[1]["dimensions"],
        json!({"country": "FR", "browser": "Firefox"})
    );
    let (status, series) = metric(
        "/v1/analytics/metrics/views/timeseries?timeframe=2h&granularity=minute".into(),
        key.clone(),
    )
    .await;
    assert_eq!(status, 200, "{series}");
    let points = series["data"].as_array().unwrap();
    assert_eq!(
        points
            .iter()
            .map(|p| p["views"].as_u64().unwrap())
            .sum::<u64>(),
        3
    );
    for (path, want) in [
        ("/v1/analytics/metrics/nope/overall".to_string(), 404),
        (overall("views", "&filters=colour:red"), 400),
        (
            "/v1/analytics/metrics/views/overall?timeframe=5y".into(),
            400,
        ),
        ("/v1/analytics/metrics/views/overall?timeframe=%C3%A9".into(), 400),
        (
            "/v1/analytics/metrics/views/overall?timeframe=2020-01-01T00:00:00Z..2026-01-01T00:00:00Z"
                .into(),
            400,
        ),
        (
            "/v1/analytics/metrics/views/breakdown?group_by=bogus".into(),
            400,
        ),
        (
            "/v1/analytics/metrics/views/timeseries?timeframe=300d&granularity=minute".into(),
            400,
        ),
    ] {
        let (status, body) = metric(path.clone(), key.clone()).await;
        assert_eq!(status, want, "{path}: {body}");
    }

    // Another tenant sees none of it.
    let (_, other) = server.create_tenant("Other").await;
    assert!(views(server, &other, "").await.is_empty());
    let (status, _) = get_as(server, &other, "/v1/analytics/views/view-0000000001").await;
    assert_eq!(status, 404);
    let (_, theirs) = metric(overall("views", ""), other.clone()).await;
    assert_eq!(theirs["views"], 0, "{theirs}");
    assert_eq!(views(server, &key, "").await.len(), 3);

    // A view that fetched its key during startup, and one playing now.
    let keyed = fixture_events("key_fetch_time_within_startup");
    let (status, _) = post(server, &batch("view-0000000004", &pb, &keyed)).await;
    assert_eq!(status, 202);
    let now = ferrocast::clock::now_ms();
    let playing = [
        json!({"seq": 1, "type": "play", "t": now - 2000, "playhead_ms": 0}),
        json!({"seq": 2, "type": "playing", "t": now - 1500, "playhead_ms": 0}),
    ];
    let (status, _) = post(server, &batch("view-0000000005", &pb, &playing)).await;
    assert_eq!(status, 202);
    server.state.analytics.flush().await;
    let (_, keys) = metric(overall("key_fetch_time", ""), key.clone()).await;
    assert_eq!(keys["value"], 400.0, "{keys}");
    // Its timeline, stored packed, comes back whole.
    let (_, detail) = get_as(server, &key, "/v1/analytics/views/view-0000000004").await;
    assert_eq!(detail["key_fetch_time_ms"], 400, "{detail}");
    let timeline = detail["events"].as_array().unwrap();
    assert_eq!(timeline.len(), keyed.len(), "{detail}");
    assert_eq!(
        (&timeline[1]["type"], &timeline[1]["duration_ms"]),
        (&json!("keyloaded"), &json!(200))
    );
    // One viewer at a time, at most.
    let (status, peaks) = get_as(
        server,
        &key,
        "/v1/analytics/concurrency?timeframe=1h&granularity=minute",
    )
    .await;
    assert_eq!(status, 200, "{peaks}");
    let most = peaks["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["peak_concurrent_viewers"].as_i64())
        .max();
    assert_eq!(most, Some(1), "{peaks}");
    let (status, curve) = get_as(server, &key, &format!("/v1/analytics/retention/{pb}")).await;
    assert_eq!(status, 200, "{curve}");
    assert_eq!(curve["data"].as_array().map(Vec::len), Some(100), "{curve}");
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
    let (status, _) = post(&server, &batch("view-restart-02", &pb, &events[..3])).await;
    assert_eq!(status, 202);
    server.stop().await;

    let server = TestServer::start_config(config.clone()).await;
    let (_, before) = get_as(&server, &key, "/v1/analytics/views/view-restart-01").await;
    assert_eq!(before["finished"], false, "{before}");
    assert_eq!(before["playing_time_ms"], 10_000);
    post(&server, &batch("view-restart-01", &pb, &events[3..])).await;
    // The same id naming another video is not this view: it is left as it was.
    let other = asset(&server, &tenant_id, 50_000).await;
    post(&server, &batch("view-restart-02", &other, &events[3..])).await;
    server.state.analytics.flush().await;
    let (_, kept) = get_as(&server, &key, "/v1/analytics/views/view-restart-02").await;
    assert_eq!(
        (
            kept["playback_id"].as_str(),
            kept["finished"].as_bool(),
            kept["playing_time_ms"].as_i64()
        ),
        (Some(pb.as_str()), Some(false), Some(10_000)),
        "{kept}"
    );
    let (_, after) = get_as(&server, &key, "/v1/analytics/views/view-restart-01").await;
    assert_eq!(
        (
            after["finished"].as_bool(),
            after["watch_time_ms"].as_i64(),
            after["playing_time_ms"].as_i64()
        ),
        (Some(true), Some(21_500), Some(20_000)),
        "{after}"
    );
    // Written before the restart, then twice after: the roll-ups count it once, with its
    // final values (beside the other open view, as it was).
    let (w2, p2) = (
        kept["watch_time_ms"].as_f64().unwrap(),
        kept["playing_time_ms"].as_f64().unwrap(),
    );
    for (metric, want) in [
        ("views", 2.0),
        ("watch_time", 21_500.0 + w2),
        ("playing_time", 20_000.0 + p2),
    ] {
        let (_, got) = get_as(
            &server,
            &key,
            &format!("/v1/analytics/metrics/{metric}/overall?timeframe=1h"),
        )
        .await;
        assert_eq!(got["value"].as_f64(), Some(want), "{metric}: {got}");
    }
    server.stop().await;

    // After another restart, a batch naming the finished view (a late retry, or a player
    // reusing the id) changes nothing: a new view needs a new id.
    let server = TestServer::start_config(config).await;
    let now = ferrocast::clock::now_ms();
    let (status, _) = post(
        &server,
        &batch(
            "view-restart-01",
            &pb,
            &[
                json!({"seq": 100, "type": "play", "t": now - 5000}),
                json!({"seq": 101, "type": "playing", "t": now - 4000}),
                json!({"seq": 102, "type": "viewend", "t": now}),
            ],
        ),
    )
    .await;
    assert_eq!(status, 202);
    server.state.analytics.flush().await;
    let (_, again) = get_as(&server, &key, "/v1/analytics/views/view-restart-01").await;
    assert_eq!(again["watch_time_ms"], 21_500, "{again}");
    let (_, views) = get_as(
        &server,
        &key,
        "/v1/analytics/metrics/views/overall?timeframe=1h",
    )
    .await;
    assert_eq!(views["value"].as_f64(), Some(2.0), "{views}");
    server.stop().await;
}

/// Past its queue, ingest answers 503 and counts the drop; media keeps being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_past_the_queue_gets_503s_counted_and_media_keeps_flowing() {
    let server = TestServer::start_with(|c| {
        c.analytics.queue_batches = 1;
        // Hundreds of connections open at once from this one address.
        c.http.max_pending_per_ip = 1000;
    })
    .await;
    let (tenant_id, _) = server.create_tenant("Flooded").await;
    let pb = asset(&server, &tenant_id, 60_000).await;
    let now = ferrocast::clock::now_ms();
    let posts = (0..400).map(|i| {
        let body = batch(
            &format!("flood-view-{i:06}"),
            &pb,
            &[json!({"seq": 1, "type": "play", "t": now})],
        );
        let server = &server;
        async move { post(server, &body).await.0 }
    });
    let statuses = futures::future::join_all(posts).await;
    let refused = statuses.iter().filter(|s| **s == 503).count();
    assert!(refused > 0, "no 503 in {statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 202 || *s == 503),
        "{statuses:?}"
    );
    let (_, metrics) = server.get_text("/metrics").await;
    let dropped: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ferrocast_analytics_dropped_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the drop counter is exported");
    assert!(dropped >= refused as f64, "{dropped} < {refused}");
    // The playback path is not behind the analytics queue.
    let (status, _) = server.get_text("/healthz").await;
    assert_eq!(status, 200);
    server.stop().await;
}

/// A player without the script but with CMCD (any CTA-5004 player) is still counted: its
/// media requests make a view. CMCD changes nothing about who gets the media.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cmcd_on_media_requests_makes_a_view_and_changes_no_access() {
    let server = TestServer::start().await;
    let (tenant_id, key) = server.create_tenant("Cmcd").await;
    let pb = asset(&server, &tenant_id, 60_000).await;
    let asset_row = server
        .state
        .jobs
        .db
        .asset_by_playback_id(&pb)
        .await
        .unwrap()
        .unwrap();
    for (name, body) in [
        (
            "master.m3u8",
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\n360p/index.m3u8\n",
        ),
        ("360p/seg_00001.ts", "segment one"),
        ("360p/seg_00002.ts", "segment two"),
    ] {
        let key = format!("{}{name}", asset_row.storage_prefix);
        server
            .state
            .jobs
            .store
            .put(
                &ferrocast::storage::ObjectKey::parse(&key).unwrap(),
                bytes::Bytes::from(body),
                "application/octet-stream",
            )
            .await
            .unwrap();
    }
    let cmcd =
        |data: &str| url::form_urlencoded::byte_serialize(data.as_bytes()).collect::<String>();
    let sid = r#"sid="cmcd-view-0001""#;
    let requests = [
        format!(
            "/hls/{pb}/master.m3u8?CMCD={}",
            cmcd(&format!("ot=m,su,{sid}"))
        ),
        format!(
            "/hls/{pb}/360p/seg_00001.ts?CMCD={}",
            cmcd(&format!("ot=v,d=4000,br=800,mtp=9000,su,{sid}"))
        ),
        format!(
            "/hls/{pb}/360p/seg_00002.ts?CMCD={}",
            cmcd(&format!("ot=v,d=4000,br=800,mtp=7000,bs,{sid}"))
        ),
    ];
    for path in &requests {
        let (status, _) = server.get_text(path).await;
        assert_eq!(status, 200, "{path}");
    }
    server.state.analytics.flush().await;
    let (status, view) = get_as(&server, &key, "/v1/analytics/views/cmcd-view-0001").await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["sources"], json!(["cmcd"]));
    assert_eq!(view["watch_time_ms"], 8000);
    assert_eq!(view["cmcd"]["requests"], 3);
    assert_eq!(view["cmcd"]["buffer_starvations"], 1);
    assert_eq!(view["cmcd"]["mean_throughput_kbps"], 8000.0);

    // The key server's side: a key granted to the first view; then, once the asset needs an
    // entitlement, refused (403) to it and to a second view that only ever got refusals, a
    // business exception. A key request opens no view of its own.
    let (key_id, _) = server
        .state
        .jobs
        .content_keys
        .create(&tenant_id, &asset_row.storage_prefix)
        .await
        .unwrap();
    let second = r#"sid="cmcd-view-0002""#;
    let path = format!(
        "/hls/{pb}/360p/seg_00001.ts?CMCD={}",
        cmcd(&format!("ot=v,d=4000,{second}"))
    );
    assert_eq!(server.get_text(&path).await.0, 200);
    let key_path = |sid: &str, token: Option<&str>| {
        let token = token.map(|t| format!("&token={t}")).unwrap_or_default();
        format!(
            "/keys/{key_id}?CMCD={}{token}",
            cmcd(&format!("ot=k,{sid}"))
        )
    };
    assert_eq!(server.get_text(&key_path(sid, None)).await.0, 200);
    let (status, _) = server
        .call(
            "PATCH",
            &format!("/v1/playback-ids/{pb}"),
            Some(&key),
            Some(json!({"requires_entitlement": true})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, minted) = server
        .call(
            "POST",
            "/v1/playback-tokens",
            Some(&key),
            Some(json!({"playback_id": pb})),
        )
        .await;
    assert_eq!(status, 201, "{minted}");
    let token = minted["token"].as_str().unwrap();
    for (who, sid) in [
        ("first", sid),
        ("second", second),
        ("nobody", r#"sid="cmcd-view-none""#),
    ] {
        let (status, _) = server.get_text(&key_path(sid, Some(token))).await;
        assert_eq!(status, 403, "{who}: no viewer in the token, no entitlement");
    }
    server.state.analytics.flush().await;
    let (_, first) = get_as(&server, &key, "/v1/analytics/views/cmcd-view-0001").await;
    assert_eq!(
        (
            &first["cmcd"]["keys_granted"],
            &first["cmcd"]["keys_forbidden"]
        ),
        (&json!(1), &json!(1)),
        "{first}"
    );
    assert_eq!(first["business_exception"], false, "it got a key: {first}");
    let (_, refused) = get_as(&server, &key, "/v1/analytics/views/cmcd-view-0002").await;
    assert_eq!(refused["cmcd"]["keys_forbidden"], 1, "{refused}");
    assert_eq!(refused["business_exception"], true, "{refused}");
    let (status, _) = get_as(&server, &key, "/v1/analytics/views/cmcd-view-none").await;
    assert_eq!(status, 404);
    let (status, _) = server
        .call(
            "PATCH",
            &format!("/v1/playback-ids/{pb}"),
            Some(&key),
            Some(json!({"requires_entitlement": false})),
        )
        .await;
    assert_eq!(status, 200);

    // Made-up session ids from one address open a few views, then no more.
    for i in 0..8 {
        let sid = format!(r#"sid="made-up-sid-{i:04}""#);
        let path = format!(
            "/hls/{pb}/360p/seg_00001.ts?CMCD={}",
            cmcd(&format!("ot=v,d=4000,{sid}"))
        );
        assert_eq!(server.get_text(&path).await.0, 200);
    }
    server.state.analytics.flush().await;
    let (_, listed) = server
        .call(
            "GET",
            &format!("/v1/analytics/views?playback_id={pb}"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 5, "{listed}");

    // A page posting JSON from another origin gets its preflight answered.
    let preflight = server
        .client
        .request(reqwest::Method::OPTIONS, server.url("/v1/beacons"))
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");

    // Signed: CMCD without a token is refused as any request without one is.
    let (status, _) = server
        .call(
            "PATCH",
            &format!("/v1/playback-ids/{pb}"),
            Some(&key),
            Some(json!({"policy": "signed"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = server.get_text(&requests[1]).await;
    assert_eq!(status, 401);
    server.stop().await;
}

/// Concurrent viewers now: playing ones count, paused and gone ones do not, per playback id,
/// and only the tenant's own; and their peak per minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_counts_viewers_playing_now() {
    let server = TestServer::start().await;
    let (tenant_id, key) = server.create_tenant("Live").await;
    let (pb1, pb2) = (
        asset(&server, &tenant_id, 60_000).await,
        asset(&server, &tenant_id, 60_000).await,
    );
    let now = ferrocast::clock::now_ms();
    let ev = |seq: u32, kind: &str, ago: i64| json!({"seq": seq, "type": kind, "t": now - ago});
    let playing = [ev(1, "play", 3000), ev(2, "playing", 2500)];
    for (view, pb) in [
        ("rt-view-0001", &pb1),
        ("rt-view-0002", &pb1),
        ("rt-view-0003", &pb2),
    ] {
        assert_eq!(post(&server, &batch(view, pb, &playing)).await.0, 202);
    }
    // One paused, one never started playing but is starting (counts), one left.
    post(
        &server,
        &batch("rt-view-0002", &pb1, &[ev(3, "pause", 1000)]),
    )
    .await;
    post(&server, &batch("rt-view-0004", &pb2, &[ev(1, "play", 500)])).await;
    let left = [
        ev(1, "play", 3000),
        ev(2, "playing", 2000),
        ev(3, "viewend", 1000),
    ];
    post(&server, &batch("rt-view-0005", &pb2, &left)).await;
    server.state.analytics.flush().await;
    let (status, now_watching) = get_as(&server, &key, "/v1/analytics/realtime").await;
    assert_eq!(status, 200, "{now_watching}");
    assert_eq!(now_watching["concurrent_viewers"], 3, "{now_watching}");
    let by_id: std::collections::HashMap<String, u64> = now_watching["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["playback_id"].as_str().unwrap().to_string(),
                c["concurrent_viewers"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        (by_id.get(&pb1), by_id.get(&pb2)),
        (Some(&1), Some(&2)),
        "{now_watching}"
    );
    let (_, other) = server.create_tenant("Other").await;
    let (_, theirs) = get_as(&server, &other, "/v1/analytics/realtime").await;
    assert_eq!(theirs["concurrent_viewers"], 0);

    // The peak per minute: of the tenant, and of one playback id (the flush took a sample;
    // one taken earlier saw at most as many).
    let peak = |query: String, key: String| {
        let server = &server;
        async move {
            let (status, body) = get_as(
                server,
                &key,
                &format!("/v1/analytics/concurrency?timeframe=10m&granularity=minute{query}"),
            )
            .await;
            assert_eq!(status, 200, "{body}");
            let points = body["data"].as_array().unwrap().clone();
            points
                .iter()
                .map(|p| p["peak_concurrent_viewers"].as_i64().unwrap())
                .max()
        }
    };
    assert_eq!(peak(String::new(), key.clone()).await, Some(3));
    assert_eq!(
        peak(format!("&playback_id={pb2}"), key.clone()).await,
        Some(2)
    );
    assert_eq!(
        peak(String::new(), other.clone()).await,
        None,
        "not another tenant's"
    );
    let (status, body) = get_as(&server, &key, "/v1/analytics/concurrency?playback_id=../x").await;
    assert_eq!(status, 400, "{body}");
    server.stop().await;
}

/// An asset's audience retention curve: each percent of its duration counts the views that
/// played it; another tenant gets a 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retention_curve_counts_the_parts_each_view_played() {
    let server = TestServer::start().await;
    let (tenant_id, key) = server.create_tenant("Retention").await;
    let pb = asset(&server, &tenant_id, 100_000).await;
    let t0 = ferrocast::clock::now_ms() - 200_000;
    let ev = |seq: u32, kind: &str, t: i64, playhead: i64| json!({"seq": seq, "type": kind, "t": t0 + t, "playhead_ms": playhead});
    // One view plays it all; one leaves after 10 s; one seeks from 20 % to 90 %.
    let mut whole = vec![ev(1, "play", 0, 0), ev(2, "playing", 500, 0)];
    for i in 1..=10 {
        whole.push(ev(
            2 + i,
            "heartbeat",
            500 + i as i64 * 10_000,
            i as i64 * 10_000,
        ));
    }
    whole.push(ev(13, "ended", 100_600, 100_000));
    whole.push(ev(14, "viewend", 101_000, 100_000));
    let short = [
        ev(1, "play", 0, 0),
        ev(2, "playing", 500, 0),
        ev(3, "heartbeat", 10_500, 10_000),
        ev(4, "viewend", 11_000, 10_000),
    ];
    let seek = [
        ev(1, "play", 0, 0),
        ev(2, "playing", 500, 0),
        ev(3, "seeking", 20_500, 20_000),
        ev(4, "seeked", 21_000, 90_000),
        ev(5, "ended", 31_000, 100_000),
        ev(6, "viewend", 31_500, 100_000),
    ];
    for (view, events) in [
        ("ret-view-0001", &whole[..]),
        ("ret-view-0002", &short[..]),
        ("ret-view-0003", &seek[..]),
    ] {
        let (status, body) = post(&server, &batch(view, &pb, events)).await;
        assert_eq!(status, 202, "{body}");
    }
    server.state.analytics.flush().await;
    let (status, curve) = get_as(&server, &key, &format!("/v1/analytics/retention/{pb}")).await;
    assert_eq!(status, 200, "{curve}");
    assert_eq!(
        (curve["views"].as_i64(), curve["duration_ms"].as_i64()),
        (Some(3), Some(100_000))
    );
    let views: Vec<i64> = curve["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["views"].as_i64().unwrap())
        .collect();
    assert_eq!(views.len(), 100);
    // Played up to 10 s (10 %) is percents 0 to 9; the seek left at 20 s and landed at 90 s.
    assert_eq!(
        (views[0], views[9], views[10], views[19]),
        (3, 3, 2, 2),
        "{views:?}"
    );
    assert_eq!(
        (views[20], views[89], views[90], views[99]),
        (1, 1, 2, 2),
        "{views:?}"
    );
    assert!((curve["data"][50]["share"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9);

    let (_, other) = server.create_tenant("Other").await;
    let (status, _) = get_as(&server, &other, &format!("/v1/analytics/retention/{pb}")).await;
    assert_eq!(status, 404, "another tenant's asset");
    server.stop().await;
}

/// CMCD v2 event reports, as hls.js posts them: a player without the script gets a view
/// with startup and rebuffering from its play states; bad reports are refused by reason;
/// a view the script reports keeps the script's events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cmcd_event_reports_make_a_view() {
    let server = TestServer::start().await;
    let (tenant_id, key) = server.create_tenant("Cmcd v2").await;
    let pb = asset(&server, &tenant_id, 60_000).await;
    let t0 = ferrocast::clock::now_ms() - 30_000;
    let line = |sid: &str, sn: u32, rest: &str, dt: i64| {
        format!(
            r#"cid="{pb}",{rest},sf=h,sid="{sid}",sn={sn},ts={},v=2"#,
            t0 + dt
        )
    };
    let report = |lines: Vec<String>| {
        let body = lines.join("\n") + "\n";
        let server = &server;
        async move {
            let response = server
                .client
                .post(server.url("/v1/cmcd"))
                .header("content-type", "application/cmcd")
                .header("user-agent", CHROME)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };
    let sid = "cmcd-v2-view-0001";
    let (status, body) = report(vec![
        line(sid, 0, "e=ps,sta=s", 0),
        line(sid, 1, "br=(2400),e=bc", 300),
        line(sid, 2, "e=ps,pt=0,sta=p", 900),
    ])
    .await;
    assert_eq!(status, 204, "{body}");
    let (status, _) = report(vec![
        line(sid, 3, "e=t,pt=9100,sta=p", 10_000),
        line(sid, 4, "e=ps,pt=9500,sta=r", 10_400),
        line(sid, 5, "e=ps,pt=9500,sta=p", 11_400),
        line(sid, 6, "e=ps,pt=12000,sta=e", 14_000),
    ])
    .await;
    assert_eq!(status, 204);
    server.state.analytics.flush().await;
    let (status, v) = get_as(&server, &key, &format!("/v1/analytics/views/{sid}")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["sources"], json!(["cmcd"]), "{v}");
    assert_eq!(v["player"], "cmcd 2");
    assert_eq!(v["video_startup_time_ms"], 900, "{v}");
    assert_eq!(
        (&v["rebuffer_count"], &v["rebuffer_duration_ms"]),
        (&json!(1), &json!(1000))
    );
    assert_eq!(v["watch_time_ms"], 14_000, "{v}");

    // Refused by reason: an unknown playback id, a line without a view.
    let (status, body) = report(vec![
        line(sid, 7, "e=t", 15_000).replace(&pb, "nosuchplaybackid"),
    ])
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = report(vec![
        line(sid, 7, "e=t", 15_000).replace(&format!(r#"sid="{sid}","#), ""),
    ])
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("line 1: sid"), "{body}");

    // A view the script reports: its CMCD play states are not counted again.
    let both = "both-sources-view-01";
    let events = fixture_events("pause_and_resume_stay_one_view");
    assert_eq!(post(&server, &batch(both, &pb, &events)).await.0, 202);
    server.state.analytics.flush().await;
    let (_, before) = get_as(&server, &key, &format!("/v1/analytics/views/{both}")).await;
    let (status, _) = report(vec![
        line(both, 0, "e=ps,sta=s", 0),
        line(both, 1, "e=ps,sta=p", 5000),
    ])
    .await;
    assert_eq!(status, 204);
    server.state.analytics.flush().await;
    let (_, after) = get_as(&server, &key, &format!("/v1/analytics/views/{both}")).await;
    assert_eq!(after["sources"], json!(["beacon", "cmcd"]), "{after}");
    assert_eq!(
        after["video_startup_time_ms"],
        before["video_startup_time_ms"]
    );
    assert_eq!(after["watch_time_ms"], before["watch_time_ms"]);

    // Reports that come before the script's first batch are not counted with it either.
    let first = "cmcd-first-view-01";
    let (status, _) = report(vec![
        line(first, 0, "e=ps,sta=s", 0),
        line(first, 1, "e=ps,sta=p", 5000),
    ])
    .await;
    assert_eq!(status, 204);
    server.state.analytics.flush().await;
    assert_eq!(post(&server, &batch(first, &pb, &events)).await.0, 202);
    server.state.analytics.flush().await;
    let (_, v) = get_as(&server, &key, &format!("/v1/analytics/views/{first}")).await;
    assert_eq!(v["sources"], json!(["beacon", "cmcd"]), "{v}");
    assert_eq!(
        (
            &v["video_startup_time_ms"],
            &v["watch_time_ms"],
            &v["player"]
        ),
        (
            &before["video_startup_time_ms"],
            &before["watch_time_ms"],
            &json!("ferrocast-data 1")
        ),
        "the script's view: {v}"
    );
    server.stop().await;
}
