//! `make bench`: the live ladder side by side with ffmpeg, in one run.
//!
//! 1. CPU-seconds per media-second: 60 s of 720p30, and of 1080p30, H.264/AAC pushed over
//!    RTMP (`ffmpeg -re -c copy`) into a release `ferrocast serve` with the default ladder
//!    (source copy + every rung up to the source's height), against two ffmpeg peers producing
//!    the same renditions with the same x264 settings from the same input, in real time, into
//!    HLS (`common::Ffmpeg`): ffmpeg as users run it (libx264's own threads, bicubic from the
//!    source; for information) and ffmpeg configured like Ferrocast (x264 threads=1, bilinear,
//!    each rung scaled from the next larger; the goal is judged against it). Runs alternate;
//!    medians of three.
//! 2. Publish → playlist latency: for each segment, when the 720p media playlist first lists
//!    it, minus when its first frame was sent, counted from the first byte the publisher sent
//!    (seen by a relay in front of the RTMP port, so the server's own handshake and publish
//!    time is included; a segment's own duration is too: the goal is segment duration +
//!    0.3 s). The time after its last frame is shown too, and how many playlist requests
//!    failed.
//!
//! Every wait has a deadline and fails saying what it waited for. Its lines go into
//! `benches/results.md` (see `common::record`).

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

const MEDIA_SECONDS: u32 = 60;
const RUNS: usize = 3;
/// Input heights; the default ladder's rungs (pipelines/default.toml) at or below each.
const INPUTS: [u32; 2] = [720, 1080];
/// How long past the media's own length a broadcast or an ffmpeg run may take to end.
const GRACE: Duration = Duration::from_secs(30);

/// One Ferrocast broadcast's outcome.
struct Broadcast {
    cpu: f64,
    /// Per segment: (from its first frame, after its last frame), in seconds.
    latencies: Vec<(f64, f64)>,
    failed_requests: usize,
}

fn main() {
    let work = std::env::temp_dir().join("ferrocast-bench");
    std::fs::create_dir_all(&work).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();

    // Per input: Ferrocast's CPU, then each peer's (in `Ffmpeg::BOTH`'s order).
    let mut cpu: Vec<[Vec<f64>; 3]> = INPUTS.iter().map(|_| Default::default()).collect();
    let mut latencies = vec![Vec::new(); INPUTS.len()];
    let mut failed = vec![0; INPUTS.len()];
    for run in 1..=RUNS {
        for (i, &height) in INPUTS.iter().enumerate() {
            let input = make_input(&work, height, MEDIA_SECONDS);
            eprintln!("run {run}/{RUNS}, {height}p: ferrocast");
            let b = rt.block_on(ferrocast_run(&work, &input));
            cpu[i][0].push(b.cpu);
            latencies[i].extend(b.latencies);
            failed[i] += b.failed_requests;
            for (j, peer) in Ffmpeg::BOTH.into_iter().enumerate() {
                eprintln!("run {run}/{RUNS}, {height}p: {}", peer.name());
                cpu[i][j + 1].push(ffmpeg_run(&work, &input, height, peer));
            }
        }
    }
    let pct = |mut v: Vec<f64>, q: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() as f64 - 1.0) * q).round() as usize]
    };
    let mut rows = Vec::new();
    for (i, &height) in INPUTS.iter().enumerate() {
        let f = median(&mut cpu[i][0]) / f64::from(MEDIA_SECONDS);
        let rungs: Vec<String> = rungs(height).iter().map(|r| format!("{}p", r.0)).collect();
        let measure = format!(
            "Live ladder, {MEDIA_SECONDS} s of {height}p30 → source + {}: CPU-s per media-s",
            rungs.join("/")
        );
        for (j, peer) in Ffmpeg::BOTH.into_iter().enumerate() {
            let p = median(&mut cpu[i][j + 1]) / f64::from(MEDIA_SECONDS);
            rows.push(
                row(&measure, format!("{f:.3}"), &peer.goal("≤ 1.0×")).against(
                    peer.peer(),
                    format!("{p:.3}"),
                    ratio(f, p),
                ),
            );
        }
    }
    for (i, &height) in INPUTS.iter().enumerate() {
        let from_start: Vec<f64> = latencies[i].iter().map(|l| l.0).collect();
        let from_end: Vec<f64> = latencies[i].iter().map(|l| l.1).collect();
        rows.push(row(
            &format!(
                "Publish → segment in the 720p playlist ({height}p in, {} segments of 2 s, timed \
                 from the publisher's first byte): p50 / p95 from its first frame; p50 / p95 \
                 after its last; failed playlist requests: {}",
                from_start.len(),
                failed[i]
            ),
            format!(
                "{:.2} s / {:.2} s; {:.2} s / {:.2} s",
                pct(from_start.clone(), 0.5),
                pct(from_start, 0.95),
                pct(from_end.clone(), 0.5),
                pct(from_end, 0.95)
            ),
            "≤ 2.3 s; ≤ 0.3 s",
        ));
    }
    record("ladder", &rows);
}

/// Ferrocast's CPU for the whole broadcast, and each segment's publish → playlist latency.
async fn ferrocast_run(work: &Path, input: &Path) -> Broadcast {
    let dir = tempfile::tempdir_in(work).unwrap();
    let (server, base) = spawn_server(dir.path(), &[]);
    let (key, stream) = tenant_and_stream(
        &base,
        serde_json::json!({"playback_policy": "public", "reconnect_window_s": 0, "record": false}),
    )
    .await;
    let key = key.as_str();
    let client = http();
    // rtmp://127.0.0.1:PORT/live: the publisher goes through the relay instead.
    let rtmp_url = stream["rtmp_url"].as_str().unwrap();
    let rtmp = rtmp_url["rtmp://".len()..].split('/').next().unwrap();
    let relay = FirstByte::relay(rtmp.to_string());
    let url = publish_url(&stream).replacen(rtmp, &format!("127.0.0.1:{}", relay.port), 1);
    let stream_url = format!("{base}/v1/live-streams/{}", stream["id"].as_str().unwrap());
    let playlist_url = format!(
        "{base}/hls/{}/720p/index.m3u8",
        stream["playback_id"].as_str().unwrap()
    );

    let cpu_before = process_cpu(server.id());
    let mut publisher = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re", "-i"])
        .arg(input)
        .args(["-c", "copy", "-f", "flv", &url])
        .stdin(Stdio::null())
        .spawn()
        .expect("ffmpeg (Debian package ffmpeg)");
    let started = Instant::now();
    let mut failures = Failures::default();
    // The publish is accepted: a check that it was, not a time (that is the first byte's).
    let deadline = started + Duration::from_secs(15);
    loop {
        let status = match client.get(&stream_url).bearer_auth(key).send().await {
            Ok(r) if r.status().is_success() => r.json::<serde_json::Value>().await.map_or_else(
                |e| e.to_string(),
                |s| s["status"].as_str().unwrap_or("").to_string(),
            ),
            Ok(r) => r.status().to_string(),
            Err(e) => e.to_string(),
        };
        if status == "active" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "waited 15 s for {stream_url} to say `active`; the last answer: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // (segment start and end in media time, first seen)
    let mut seen: Vec<(f64, f64, Instant)> = Vec::new();
    let deadline = started + Duration::from_secs(MEDIA_SECONDS.into()) + GRACE;
    loop {
        let text = match client.get(&playlist_url).send().await {
            Ok(r) if r.status().is_success() => match r.text().await {
                Ok(text) => Some(text),
                Err(e) => {
                    failures.note(e);
                    None
                }
            },
            // No playlist before the first 720p segment: that is not a failure.
            Ok(r) if seen.is_empty() && r.status() == reqwest::StatusCode::NOT_FOUND => None,
            Ok(r) => {
                failures.note(r.status());
                None
            }
            Err(e) => {
                failures.note(e);
                None
            }
        };
        if let Some(text) = text {
            // A live playlist is a sliding window: its first segment is number
            // EXT-X-MEDIA-SEQUENCE of the broadcast. Segments are seen in order (the window
            // holds several and this polls every 20 ms), so each new one starts where the last
            // seen one ended.
            let first: usize = text
                .lines()
                .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0);
            for (i, d) in text
                .lines()
                .filter_map(|l| l.strip_prefix("#EXTINF:"))
                .enumerate()
            {
                if first + i == seen.len() {
                    let start = seen.last().map_or(0.0, |s| s.1);
                    let end = start + d.trim_end_matches(',').parse::<f64>().unwrap_or(0.0);
                    seen.push((start, end, Instant::now()));
                }
            }
            if text.contains("#EXT-X-ENDLIST") {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "waited {:?} for #EXT-X-ENDLIST in {playlist_url}: {} segments listed; {failures}",
            deadline - started,
            seen.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu = process_cpu(server.id()) - cpu_before;
    let status = wait_within(&mut publisher, GRACE, "the publisher (ffmpeg) to end");
    assert!(status.success(), "publisher failed: {status}");
    kill_child(server, "ferrocast serve");
    if failures.count > 0 {
        eprintln!("polling {playlist_url}: {failures}");
    }
    let t0 = relay
        .first_byte()
        .expect("the relay saw no byte from the publisher");
    // The last segment is closed by end of stream, not by real time: leave it out.
    let latencies = seen[..seen.len().saturating_sub(1)]
        .iter()
        .map(|&(start, end, at)| {
            let at = at.duration_since(t0).as_secs_f64();
            (at - start, at - end)
        })
        .collect();
    Broadcast {
        cpu,
        latencies,
        failed_requests: failures.count,
    }
}

/// A peer's CPU producing the same ladder from the same input, in real time.
fn ffmpeg_run(work: &Path, input: &Path, height: u32, peer: Ffmpeg) -> f64 {
    let out = tempfile::tempdir_in(work).unwrap();
    let args = ffmpeg_ladder_args(input, out.path(), height, false, peer);
    let before = children_cpu();
    let mut ffmpeg = Command::new("ffmpeg")
        .args(&args)
        .stdin(Stdio::null())
        .spawn()
        .expect("ffmpeg (Debian package ffmpeg)");
    let status = wait_within(
        &mut ffmpeg,
        Duration::from_secs(MEDIA_SECONDS.into()) + GRACE,
        &format!("the {} ladder", peer.name()),
    );
    assert!(status.success(), "the {} ladder failed", peer.name());
    let _ = std::io::stderr().flush();
    children_cpu() - before
}

/// A TCP relay for one connection in front of the server's RTMP port, which notes when the
/// publisher's first byte arrives: the start of the publish, before the server has seen it.
struct FirstByte {
    port: u16,
    first: Arc<OnceLock<Instant>>,
}

impl FirstByte {
    fn relay(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let first = Arc::new(OnceLock::new());
        let seen = first.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            let client = loop {
                match listener.accept() {
                    Ok((c, _)) => break c,
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    Err(e) => {
                        eprintln!("relay: no publisher connected within 30 s ({e})");
                        return;
                    }
                }
            };
            let server = TcpStream::connect(&target).expect("the server's RTMP port");
            client.set_nonblocking(false).unwrap();
            for s in [&client, &server] {
                s.set_nodelay(true).unwrap();
            }
            let (mut from_server, mut to_client) =
                (server.try_clone().unwrap(), client.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from_server, &mut to_client);
                let _ = to_client.shutdown(Shutdown::Write);
            });
            let (mut from_client, mut to_server) = (client, server);
            let mut buf = vec![0u8; 64 << 10];
            while let Ok(n @ 1..) = from_client.read(&mut buf) {
                let _ = seen.set(Instant::now());
                if to_server.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to_server.shutdown(Shutdown::Write);
        });
        Self { port, first }
    }

    fn first_byte(&self) -> Option<Instant> {
        self.first.get().copied()
    }
}
