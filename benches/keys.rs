//! `make bench`: the key endpoint under load, next to the framework's ceiling.
//!
//! A release `ferrocast serve` gets one real broadcast (ffmpeg, 4 s) so a real content key
//! exists; then `wrk` (Debian package) on loopback:
//! 1. `GET /keys/{id}` with a valid tenant-signed ES256 token at about 2,000 requests/s
//!    (22 connections, each pausing 10 ms between requests): p50 / p99 latency;
//! 2. the most requests/s `GET /keys/{id}` sustains (64 connections), against the same for
//!    `GET /healthz` (the ceiling: routing, middleware, no work) on the same server.
//!
//! Medians of 3 alternated runs. Every wait has a deadline and fails saying what it waited
//! for. Its lines go into `benches/results.md`.

mod common;
use common::*;

use std::process::Command;
use std::time::{Duration, Instant};

const RUNS: usize = 3;

fn main() {
    let work = tempfile::tempdir().unwrap();
    // The limits are per client address, and the load comes from one.
    let (server, base) = spawn_server(
        work.path(),
        &[
            ("FERROCAST_PLAYBACK_KEY_RATE_PER_IP", "1000000"),
            ("FERROCAST_PLAYBACK_KEY_BURST_PER_IP", "1000000"),
        ],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (key_url, healthz_url) = rt.block_on(setup(&base));

    let script = work.path().join("paced.lua");
    std::fs::write(&script, "function delay()\n  return 10\nend\n").unwrap();
    let (mut p50, mut p99, mut paced_rps) = (Vec::new(), Vec::new(), Vec::new());
    let (mut key_max, mut health_max) = (Vec::new(), Vec::new());
    for run in 1..=RUNS {
        eprintln!("run {run}/{RUNS}");
        let paced = wrk(&key_url, 22, 20, Some(&script));
        p50.push(paced.p50_ms);
        p99.push(paced.p99_ms);
        paced_rps.push(paced.rps);
        key_max.push(wrk(&key_url, 64, 10, None).rps);
        health_max.push(wrk(&healthz_url, 64, 10, None).rps);
    }
    kill_child(server, "ferrocast serve");

    let (p50, p99, paced) = (median(&mut p50), median(&mut p99), median(&mut paced_rps));
    let (k, h) = (median(&mut key_max), median(&mut health_max));
    record(
        "keys",
        &[
            row(
                &format!(
                    "`GET /keys/{{id}}`, ES256 tenant token, paced at {paced:.0} req/s: p50 / p99"
                ),
                format!("{p50:.2} ms / {p99:.2} ms"),
                "p99 < 5 ms",
            ),
            row(
                "Most req/s, 64 connections: `/keys/{id}` vs `/healthz` on the same server",
                format!("{k:.0}"),
                "",
            )
            .against("`/healthz`, same server", format!("{h:.0}"), ratio(k, h)),
        ],
    );
}

/// A tenant, a broadcast with a content key, a tenant signing key and a token for it;
/// returns the key URL (with the token) and the healthz URL.
async fn setup(base: &str) -> (String, String) {
    let (key, stream) = tenant_and_stream(
        base,
        serde_json::json!({"reconnect_window_s": 0, "record": true}),
    )
    .await;
    let url = publish_url(&stream);
    let client = http();
    let out = output_within(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-re"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args([
                "-t", "4", "-c:v", "libx264", "-preset", "veryfast", "-g", "60",
            ])
            .args(["-c:a", "aac", "-f", "flv", &url]),
        Duration::from_secs(60),
        "ffmpeg publishing 4 s (Debian package ffmpeg)",
    );
    assert!(
        out.status.success(),
        "publishing failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let playback_id = stream["playback_id"].as_str().unwrap();
    let token = SigningKey::create(base, &key).await.token(playback_id);
    // The recording keeps its playlists (and key) after the broadcast.
    let deadline = Instant::now() + Duration::from_secs(20);
    let playlist_url = format!("{base}/hls/{playback_id}/source/index.m3u8?token={token}");
    let mut failures = Failures::default();
    let key_uri = loop {
        let playlist = match client.get(&playlist_url).send().await {
            Ok(r) if r.status().is_success() => r.text().await.unwrap_or_else(|e| {
                failures.note(e);
                String::new()
            }),
            Ok(r) => {
                failures.note(r.status());
                String::new()
            }
            Err(e) => {
                failures.note(e);
                String::new()
            }
        };
        if playlist.contains("#EXT-X-ENDLIST")
            && let Some(uri) = playlist
                .split("URI=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
        {
            break uri.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "waited 20 s for a finished playlist with a key at {base}/hls/{playback_id}/source/\
             index.m3u8: {playlist:?}; {failures}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let resp = client.get(&key_uri).send().await.unwrap();
    assert_eq!(resp.status(), 200, "the key is served");
    assert_eq!(resp.bytes().await.unwrap().len(), 16);
    (key_uri, format!("{base}/healthz"))
}
