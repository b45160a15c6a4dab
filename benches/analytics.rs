//! `make bench`: viewer analytics.
//!
//! 1. **Beacon ingest.** `wrk` (64 connections, 2 threads, on the same 2 cores) posts batches
//!    of 100 events to `POST /v1/beacons` of a release `ferrocast serve`. Each view sends five
//!    batches, as a player does over a view: `viewinit`, `play`, `playing`, heartbeats, a
//!    rendition change every 25 events, a rebuffer, and `viewend` in the fifth. Accepted
//!    events/s counts 202s only (a 503 from a full queue is not counted). Beside it, the
//!    same binary and settings with `analytics.discard_beacons` (batches read and checked,
//!    then dropped): the ceiling of HTTP + JSON here.
//! 2. **Breakdown query.** 100,000 views holding 10 million events (100 per view, kept as
//!    each view's timeline) over the last 30 days, written through the aggregator's own write
//!    path (`Db::write_views`: view rows and their roll-up changes in one transaction), on
//!    SQLite and on PostgreSQL. Then `GET /v1/analytics/metrics/watch_time/breakdown` by
//!    country × browser over 30 days, 40 times in a row over HTTP: p50 and p95 (after
//!    `ANALYZE`, as autovacuum would have run).
//!
//! Medians of 3 alternated runs for ingest. Every wait has a deadline. `ANALYTICS_BENCH=ingest`
//! runs the ingest part alone and records nothing.

mod common;
use common::*;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ferrocast::analytics::view::Event;
use ferrocast::db::{Db, StoredView};

const RUNS: usize = 3;
const VIEWS: usize = 100_000;
const EVENTS_PER_VIEW: usize = 100;
const QUERIES: usize = 40;

fn main() {
    let work = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();

    // 1. Ingest, next to the discarding ceiling.
    let (full, full_base) = spawn_server(&work.path().join("full"), &[]);
    let (discard, discard_base) = spawn_server(
        &work.path().join("discard"),
        &[("FERROCAST_ANALYTICS_DISCARD_BEACONS", "true")],
    );
    let full_pb = rt.block_on(playback_id(&full_base)).1;
    let discard_pb = rt.block_on(playback_id(&discard_base)).1;
    let (mut ingest, mut ceiling) = (Vec::new(), Vec::new());
    for run in 1..=RUNS {
        eprintln!("ingest run {run}/{RUNS}");
        let script = beacon_script(work.path(), &format!("r{run}"), &full_pb);
        ingest.push(posted(&full_base, &script).accepted_events_per_s);
        let script = beacon_script(work.path(), &format!("d{run}"), &discard_pb);
        ceiling.push(posted(&discard_base, &script).accepted_events_per_s);
    }
    let dropped = rt.block_on(dropped_batches(&full_base));
    kill_child(full, "ferrocast serve");
    kill_child(discard, "ferrocast serve");
    let (ingest_all, ceiling_all) = (ingest.clone(), ceiling.clone());
    let (ingest, ceiling) = (median(&mut ingest), median(&mut ceiling));
    eprintln!("ingest: {ingest:.0} events/s accepted, ceiling {ceiling:.0}");

    eprintln!(
        "ingest runs (accepted events/s, ceiling): {:?}",
        ingest_runs(&ingest_all, &ceiling_all)
    );
    if std::env::var("ANALYTICS_BENCH").as_deref() == Ok("ingest") {
        return; // ingest alone, while working on it; nothing recorded
    }

    // 2. The breakdown query on both databases.
    let sqlite = query_bench(&work.path().join("sqlite"), None, &rt);
    let pg_url = rt.block_on(fresh_postgres());
    let postgres = query_bench(&work.path().join("pg"), Some(&pg_url), &rt);

    record(
        "analytics",
        &[
            row(
                "Beacon ingest, batches of 100 events, 64 connections: accepted events/s",
                format!("{ingest:.0}"),
                "≥ 100,000 and ≥ 0.5× the ceiling",
            )
            .against(
                "same server discarding the checked batches (HTTP + JSON ceiling)",
                format!("{ceiling:.0}"),
                ratio(ingest, ceiling),
            ),
            row(
                "Beacon batches refused (503, queue full) over the ingest runs",
                format!("{dropped:.0}"),
                "",
            ),
            row(
                "Breakdown (watch time by country × browser, 30 days, 100k views, 10M events), SQLite: p50 / p95",
                format!("{:.1} ms / {:.1} ms", sqlite.0, sqlite.1),
                "p95 < 250 ms",
            ),
            row(
                "Same breakdown, PostgreSQL: p50 / p95",
                format!("{:.1} ms / {:.1} ms", postgres.0, postgres.1),
                "p95 < 250 ms",
            ),
        ],
    );
}

fn ingest_runs(ingest: &[f64], ceiling: &[f64]) -> Vec<(u64, u64)> {
    ingest
        .iter()
        .zip(ceiling)
        .map(|(i, c)| (*i as u64, *c as u64))
        .collect()
}

/// A tenant with a VOD asset's playback id on the server at `base` (through the API: a
/// live stream's id, which beacons may name as well); returns (api key, playback id).
async fn playback_id(base: &str) -> (String, String) {
    let (key, stream) = tenant_and_stream(base, serde_json::json!({})).await;
    (key, stream["playback_id"].as_str().unwrap().to_string())
}

/// A new tenant on the server at `base` once it answers: (id, API key).
async fn tenant(base: &str) -> (String, String) {
    let client = http();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(format!("{base}/readyz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "waited 30 s for {base}/readyz");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t: serde_json::Value = client
        .post(format!("{base}/v1/tenants"))
        .bearer_auth(ADMIN_KEY)
        .json(&serde_json::json!({"name": "analytics bench"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        t["id"].as_str().unwrap().to_string(),
        t["api_key"].as_str().unwrap().to_string(),
    )
}

/// A wrk script posting the five batches of each view in turn; view ids are unique per
/// wrk thread and run (`tag`).
fn beacon_script(dir: &Path, tag: &str, playback_id: &str) -> std::path::PathBuf {
    let now_ms = ferrocast::clock::now_ms();
    // The view's events, spread over the 10 minutes before now; five batches of 100.
    let t0 = now_ms - 600_000;
    let mut batches: Vec<String> = Vec::new();
    for part in 0..5usize {
        let mut events = Vec::new();
        for i in 0..EVENTS_PER_VIEW {
            let seq = part * EVENTS_PER_VIEW + i + 1;
            let t = t0 + seq as i64 * 1000;
            let playhead = seq as i64 * 1000;
            let event = match seq {
                1 => serde_json::json!({"seq": seq, "type": "viewinit", "t": t}),
                2 => serde_json::json!({"seq": seq, "type": "play", "t": t, "playhead_ms": 0}),
                3 => serde_json::json!({"seq": seq, "type": "playing", "t": t + 300,
                    "playhead_ms": 0, "player_w": 1280, "player_h": 720}),
                200 => serde_json::json!({"seq": seq, "type": "rebufferstart", "t": t,
                    "playhead_ms": playhead}),
                201 => serde_json::json!({"seq": seq, "type": "rebufferend", "t": t,
                    "playhead_ms": playhead}),
                500 => serde_json::json!({"seq": seq, "type": "viewend", "t": t,
                    "playhead_ms": playhead}),
                s if s % 25 == 0 => serde_json::json!({"seq": seq, "type": "renditionchange",
                    "t": t, "playhead_ms": playhead, "bitrate": 2_500_000 + (s % 2) * 500_000,
                    "width": 1280, "height": 720}),
                _ => serde_json::json!({"seq": seq, "type": "heartbeat", "t": t,
                    "playhead_ms": playhead}),
            };
            events.push(event);
        }
        let batch = serde_json::json!({
            "view_id": "VIEWID",
            "viewer_id": "bench-viewer-0001",
            "playback_id": playback_id,
            "player": {"name": "ferrocast-data", "version": "1"},
            "events": events,
        });
        batches.push(batch.to_string());
    }
    let lua_batches: Vec<String> = batches.iter().map(|b| format!("[==[{b}]==]")).collect();
    let script = format!(
        r#"local batches = {{ {batches} }}
local counter = 0
local n = 0
setup = function(thread)
  n = n + 1
  thread:set("thread_id", n)
end
request = function()
  local view = math.floor(counter / 5)
  local part = counter % 5
  counter = counter + 1
  local id = string.format("bench-{tag}-%d-%09d", thread_id, view)
  local body = string.gsub(batches[part + 1], "VIEWID", id, 1)
  return wrk.format("POST", "/v1/beacons", {{["Content-Type"] = "text/plain"}}, body)
end
"#,
        batches = lua_batches.join(", "),
    );
    let path = dir.join(format!("beacons-{tag}.lua"));
    std::fs::write(&path, script).unwrap();
    path
}

struct Posted {
    accepted_events_per_s: f64,
}

/// Runs wrk with the beacon script for 10 s; counts only the batches answered 2xx.
fn posted(base: &str, script: &Path) -> Posted {
    let seconds = 10.0;
    let out = output_within(
        Command::new("wrk")
            .args(["-t", "2", "-c", "64", "-d", "10s"])
            .arg("-s")
            .arg(script)
            .arg(format!("{base}/v1/beacons")),
        Duration::from_secs(60),
        "wrk (Debian package wrk; make installs it)",
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "wrk failed: {text}");
    // "123456 requests in 10.00s, …" and, when some were refused, "Non-2xx or 3xx responses: N".
    let requests: f64 = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no request count in wrk output: {text}"));
    let refused: f64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .map_or(0.0, |n| n.trim().parse().unwrap());
    eprintln!("{text}");
    Posted {
        accepted_events_per_s: (requests - refused) * EVENTS_PER_VIEW as f64 / seconds,
    }
}

/// `ferrocast_analytics_dropped_total` of a server.
async fn dropped_batches(base: &str) -> f64 {
    let text = http()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("ferrocast_analytics_dropped_total "))
        .map_or(0.0, |v| v.trim().parse().unwrap_or(0.0))
}

/// An empty PostgreSQL database on the local server (`TEST_DATABASE_URL`, as `make test`).
async fn fresh_postgres() -> String {
    use sqlx::Connection;
    let admin = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {admin} is needed ({e})"));
    let name = "ferrocast_bench_analytics";
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let mut url = url::Url::parse(&admin).unwrap();
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// Fills a fresh server's database with the views, then times the breakdown; (p50, p95) ms.
fn query_bench(dir: &Path, database_url: Option<&str>, rt: &tokio::runtime::Runtime) -> (f64, f64) {
    std::fs::create_dir_all(dir).unwrap();
    let url = database_url.map_or_else(
        || format!("sqlite://{}", dir.join("data/ferrocast.db").display()),
        str::to_string,
    );
    let (server, base) = spawn_server(dir, &[("FERROCAST_DATABASE_URL", &url)]);
    let result = rt.block_on(async {
        let (tenant_id, key) = tenant(&base).await;
        let db = Db::connect(&url, 8).await.unwrap();
        let started = Instant::now();
        fill(&db, &tenant_id).await;
        // Statistics, as PostgreSQL's autovacuum gathers them (it is off on this machine;
        // without them the planner takes the table for empty and sorts 100,000 rows on disk).
        sqlx::query("ANALYZE").execute(db.pool()).await.unwrap();
        eprintln!(
            "{VIEWS} views written in {:.1} s ({})",
            started.elapsed().as_secs_f64(),
            if database_url.is_some() { "PostgreSQL" } else { "SQLite" }
        );
        let query = format!(
            "{base}/v1/analytics/metrics/watch_time/breakdown?timeframe=30d&group_by=country,browser"
        );
        let client = http();
        let mut times = Vec::new();
        for i in 0..QUERIES + 3 {
            let at = Instant::now();
            let resp = client.get(&query).bearer_auth(&key).send().await.unwrap();
            assert!(resp.status().is_success(), "{}", resp.status());
            let body: serde_json::Value = resp.json().await.unwrap();
            let ms = at.elapsed().as_secs_f64() * 1000.0;
            let views: i64 = body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| g["views"].as_i64().unwrap())
                .sum();
            assert_eq!(views, VIEWS as i64, "every view is counted once");
            if i >= 3 {
                times.push(ms); // the first three warm the caches
            }
        }
        times.sort_by(f64::total_cmp);
        let p = |q: f64| times[((q * times.len() as f64).ceil() as usize).clamp(1, times.len()) - 1];
        eprintln!("breakdown: p50 {:.1} ms, p95 {:.1} ms", p(0.5), p(0.95));
        (p(0.5), p(0.95))
    });
    kill_child(server, "ferrocast serve");
    result
}

/// Writes the views: started over the last 30 days, 100 events each, dimensions drawn from
/// realistic spreads (a few countries and browsers dominate).
async fn fill(db: &Db, tenant_id: &str) {
    const COUNTRIES: [&str; 12] = [
        "US", "US", "US", "DE", "DE", "GB", "FR", "BR", "IN", "JP", "NL", "CA",
    ];
    const BROWSERS: [&str; 6] = ["Chrome", "Chrome", "Chrome", "Safari", "Firefox", "Edge"];
    const OSES: [&str; 5] = ["Windows", "macOS", "Linux", "iOS", "Android"];
    const DEVICES: [&str; 3] = ["desktop", "phone", "tablet"];
    let now = ferrocast::clock::now_ms();
    let span = 30 * 86_400_000i64 - 3_600_000;
    let make = |i: usize| -> StoredView {
        // A cheap deterministic spread (xorshift on the index).
        let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let started_at = now - span + (next() % span as u64) as i64;
        let watch = 60_000 + (next() % 1_200_000) as i64;
        let events: Vec<Event> = (1..=EVENTS_PER_VIEW)
            .map(|seq| {
                serde_json::from_value(serde_json::json!({"seq": seq, "type": "heartbeat",
                    "t": started_at + seq as i64 * 10_000, "playhead_ms": seq as i64 * 10_000}))
                .unwrap()
            })
            .collect();
        StoredView {
            tenant_id: tenant_id.to_string(),
            id: format!("bench-view-{i:08}"),
            playback_id: format!("pb{:03}", next() % 200),
            viewer_id: Some(format!("viewer-{:06}", next() % 50_000)),
            started_at,
            ended_at: started_at + watch,
            finished: 1,
            play_requested: 1,
            video_startup_time_ms: Some(300 + (next() % 3000) as i64),
            key_fetch_time_ms: None,
            watch_time_ms: watch,
            playing_time_ms: watch - 2000,
            rebuffer_count: (next() % 3) as i64,
            rebuffer_duration_ms: (next() % 4000) as i64,
            exit_before_video_start: 0,
            startup_failure: 0,
            playback_failure: 0,
            business_exception: 0,
            upscale: (next() % 100) as f64 / 400.0,
            downscale: 0.0,
            max_upscale: 0.5,
            weighted_bitrate: Some(2_000_000.0),
            completed: Some((next() % 2) as i64),
            live_latency_ms: None,
            country: Some(COUNTRIES[(next() % 12) as usize].to_string()),
            browser: BROWSERS[(next() % 6) as usize].to_string(),
            os: OSES[(next() % 5) as usize].to_string(),
            device_type: DEVICES[(next() % 3) as usize].to_string(),
            player: "ferrocast-data 1".to_string(),
            sources: "beacon,cmcd".to_string(),
            rendition: ["1080p", "720p", "720p", "480p"][(next() % 4) as usize].to_string(),
            summary: "{}".to_string(),
            events: None,
            timeline: Some(ferrocast::analytics::timeline::pack(&events)),
            watched: None,
            updated_at: now,
        }
    };
    // In transactions of 500 views, one after another, as the aggregator's database task
    // writes them.
    for start in (0..VIEWS).step_by(500) {
        let rows: Vec<StoredView> = (start..(start + 500).min(VIEWS)).map(make).collect();
        db.write_views(&rows, ferrocast::analytics::rollup::of)
            .await
            .unwrap();
    }
}
