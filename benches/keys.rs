//! `make bench`: the key endpoint under load, next to the framework's ceiling.
//!
//! A release `ferrocast serve` gets one real broadcast (ffmpeg, 4 s) so a real content key
//! exists; then `wrk` (Debian package) on loopback:
//! 1. `GET /keys/{id}` with a valid tenant-signed ES256 token at about 2,000 requests/s
//!    (22 connections, each pausing 10 ms between requests): p50 / p99 latency;
//! 2. the most requests/s `GET /keys/{id}` sustains (64 connections), against the same for
//!    `GET /healthz` (the ceiling: routing, middleware, no work) on the same server.
//!
//! Medians of 3 alternated runs. Its lines go into `benches/results.md`.

mod common;
use common::*;

use std::process::Command;
use std::time::{Duration, Instant};

const RUNS: usize = 3;

fn main() {
    let work = tempfile::tempdir().unwrap();
    // The limits are per client address, and the load comes from one.
    let (mut server, base) = spawn_server(
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
    let _ = server.kill();
    let _ = server.wait();

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
                String::new(),
                String::new(),
                "p99 < 5 ms",
            ),
            row(
                "Most req/s, 64 connections: `/keys/{id}` vs `/healthz` on the same server",
                format!("{k:.0}"),
                format!("healthz {h:.0}"),
                ratio(k, h),
                "",
            ),
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
    let client = reqwest::Client::new();
    let post = |path: &str, key: &str, body: serde_json::Value| {
        let req = client
            .post(format!("{base}{path}"))
            .bearer_auth(key)
            .json(&body);
        async move {
            let resp = req.send().await.unwrap();
            assert!(resp.status().is_success(), "{}", resp.status());
            resp.json::<serde_json::Value>().await.unwrap()
        }
    };
    let ok = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args([
            "-t", "4", "-c:v", "libx264", "-preset", "veryfast", "-g", "60",
        ])
        .args(["-c:a", "aac", "-f", "flv", &url])
        .status()
        .expect("ffmpeg (Debian package ffmpeg)")
        .success();
    assert!(ok, "publishing failed");
    let playback_id = stream["playback_id"].as_str().unwrap();
    let signing = post(
        "/v1/signing-keys",
        &key,
        serde_json::json!({"algorithm": "ES256"}),
    )
    .await;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(signing["id"].as_str().unwrap().to_string());
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let token = jsonwebtoken::encode(
        &header,
        &serde_json::json!({"sub": playback_id, "aud": "v", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_ec_pem(
            signing["private_key"].as_str().unwrap().as_bytes(),
        )
        .unwrap(),
    )
    .unwrap();
    // The recording keeps its playlists (and key) after the broadcast.
    let deadline = Instant::now() + Duration::from_secs(20);
    let key_uri = loop {
        let playlist = client
            .get(format!(
                "{base}/hls/{playback_id}/source/index.m3u8?token={token}"
            ))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
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
            "no finished playlist: {playlist}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let resp = client.get(&key_uri).send().await.unwrap();
    assert_eq!(resp.status(), 200, "the key is served");
    assert_eq!(resp.bytes().await.unwrap().len(), 16);
    (key_uri, format!("{base}/healthz"))
}
