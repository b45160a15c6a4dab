//! `make bench`: the live ladder side by side with ffmpeg, in one run.
//!
//! 1. CPU-seconds per media-second: 60 s of 720p30, and of 1080p30, H.264/AAC pushed over
//!    RTMP (`ffmpeg -re -c copy`) into a release `ferrocast serve` with the default ladder
//!    (source copy + every rung up to the source's height), against `ffmpeg` producing the same
//!    renditions with the same x264 settings from the same input, in real time, into HLS.
//!    Runs alternate; medians of three.
//! 2. Publish → playlist latency: for each segment, when the 720p media playlist first lists
//!    it, minus when its first frame was sent (so a segment's own duration is included; the
//!    goal is segment duration + 0.3 s). The time after its last frame is shown too.
//!
//! Its lines go into `benches/results.md` (see `common::record`).

mod common;
use common::*;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const MEDIA_SECONDS: u32 = 60;
const RUNS: usize = 3;
/// Input heights; the default ladder's rungs (pipelines/default.toml) at or below each.
const INPUTS: [u32; 2] = [720, 1080];

fn main() {
    let work = std::env::temp_dir().join("ferrocast-bench");
    std::fs::create_dir_all(&work).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();

    let mut rows = Vec::new();
    let mut cpu = vec![(Vec::new(), Vec::new()); INPUTS.len()];
    let mut latencies = vec![Vec::new(); INPUTS.len()];
    for run in 1..=RUNS {
        for (i, &height) in INPUTS.iter().enumerate() {
            let input = make_input(&work, height, MEDIA_SECONDS);
            eprintln!("run {run}/{RUNS}, {height}p: ferrocast");
            let (c, lat) = rt.block_on(ferrocast_run(&work, &input));
            cpu[i].0.push(c);
            latencies[i].extend(lat);
            eprintln!("run {run}/{RUNS}, {height}p: ffmpeg");
            cpu[i].1.push(ffmpeg_run(&work, &input, height));
        }
    }
    let pct = |mut v: Vec<f64>, q: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() as f64 - 1.0) * q).round() as usize]
    };
    for (i, &height) in INPUTS.iter().enumerate() {
        let f = median(&mut cpu[i].0) / f64::from(MEDIA_SECONDS);
        let p = median(&mut cpu[i].1) / f64::from(MEDIA_SECONDS);
        let rungs: Vec<String> = rungs(height).iter().map(|r| format!("{}p", r.0)).collect();
        rows.push(row(
            &format!(
                "Live ladder, {MEDIA_SECONDS} s of {height}p30 → source + {}: CPU-s per media-s",
                rungs.join("/")
            ),
            format!("{f:.3}"),
            format!("ffmpeg {p:.3}"),
            ratio(f, p),
            "≤ 0.85×",
        ));
    }
    for (i, &height) in INPUTS.iter().enumerate() {
        let from_start: Vec<f64> = latencies[i].iter().map(|l| l.0).collect();
        let from_end: Vec<f64> = latencies[i].iter().map(|l| l.1).collect();
        rows.push(row(
            &format!(
                "Publish → segment in the 720p playlist ({height}p in, {} segments of 2 s): \
                 p50 / p95 from its first frame; p50 / p95 after its last",
                from_start.len()
            ),
            format!(
                "{:.2} s / {:.2} s; {:.2} s / {:.2} s",
                pct(from_start.clone(), 0.5),
                pct(from_start, 0.95),
                pct(from_end.clone(), 0.5),
                pct(from_end, 0.95)
            ),
            String::new(),
            String::new(),
            "≤ 2.3 s; ≤ 0.3 s",
        ));
    }
    record("ladder", &rows);
}

/// Ferrocast's CPU for the whole broadcast, and each segment's publish → playlist latency.
async fn ferrocast_run(work: &Path, input: &Path) -> (f64, Vec<(f64, f64)>) {
    let dir = tempfile::tempdir_in(work).unwrap();
    let (mut server, base) = spawn_server(dir.path(), &[]);
    let (key, stream) = tenant_and_stream(
        &base,
        serde_json::json!({"playback_policy": "public", "reconnect_window_s": 0, "record": false}),
    )
    .await;
    let key = key.as_str();
    let client = reqwest::Client::new();
    let url = publish_url(&stream);
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
        .spawn()
        .unwrap();
    // The publish is accepted just before media flows: that instant is media time zero.
    let t0 = loop {
        let s: serde_json::Value = client
            .get(&stream_url)
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if s["status"] == "active" {
            break Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // (segment start and end in media time, first seen)
    let mut seen: Vec<(f64, f64, f64)> = Vec::new();
    let mut ended = false;
    while !ended {
        if let Ok(resp) = client.get(&playlist_url).send().await
            && resp.status().is_success()
        {
            let text = resp.text().await.unwrap();
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
                    seen.push((start, end, t0.elapsed().as_secs_f64()));
                }
            }
            ended = text.contains("#EXT-X-ENDLIST");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu = process_cpu(server.id()) - cpu_before;
    assert!(publisher.wait().unwrap().success(), "publisher failed");
    let _ = server.kill();
    let _ = server.wait();
    // The last segment is closed by end of stream, not by real time: leave it out.
    let latencies = seen[..seen.len().saturating_sub(1)]
        .iter()
        .map(|(start, end, at)| (at - start, at - end))
        .collect();
    (cpu, latencies)
}

/// ffmpeg's CPU producing the same ladder from the same input, in real time.
fn ffmpeg_run(work: &Path, input: &Path, height: u32) -> f64 {
    let out = tempfile::tempdir_in(work).unwrap();
    let args = ffmpeg_ladder_args(input, out.path(), height, true);
    let before = children_cpu();
    let status = Command::new("ffmpeg").args(&args).status().expect("ffmpeg");
    assert!(status.success(), "ffmpeg ladder failed");
    let _ = std::io::stderr().flush();
    children_cpu() - before
}
