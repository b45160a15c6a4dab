//! `make bench`: the live ladder side by side with ffmpeg, in one run.
//!
//! 1. CPU-seconds per media-second: 30 s of 720p30 H.264/AAC pushed over RTMP (`ffmpeg -re
//!    -c copy`) into a release `ferrocast serve` with the default ladder (source copy + 720p,
//!    480p, 360p), against `ffmpeg` producing the same renditions with the same x264 settings
//!    from the same input, in real time, into HLS. Runs alternate; medians of three.
//! 2. Publish → playlist latency: for each segment, when the 720p media playlist first lists
//!    it, minus when its first frame was sent (so a segment's own duration is included; the
//!    goal is segment duration + 0.3 s). The time after its last frame is shown too.
//!
//! Prints a table and writes it to `benches/results.md` with the machine's CPU and core count.

mod common;
use common::*;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const MEDIA_SECONDS: f64 = 30.0;
const RUNS: usize = 3;

fn main() {
    let work = std::env::temp_dir().join("ferrocast-bench");
    std::fs::create_dir_all(&work).unwrap();
    let input = make_input(&work);
    let rt = tokio::runtime::Runtime::new().unwrap();

    let mut ferrocast_cpu = Vec::new();
    let mut ffmpeg_cpu = Vec::new();
    let mut latencies = Vec::new();
    for run in 1..=RUNS {
        eprintln!("run {run}/{RUNS}: ferrocast");
        let (cpu, lat) = rt.block_on(ferrocast_run(&work, &input));
        ferrocast_cpu.push(cpu);
        latencies.extend(lat);
        eprintln!("run {run}/{RUNS}: ffmpeg");
        ffmpeg_cpu.push(ffmpeg_run(&work, &input));
    }
    let f = median(&mut ferrocast_cpu) / MEDIA_SECONDS;
    let p = median(&mut ffmpeg_cpu) / MEDIA_SECONDS;
    let pct = |mut v: Vec<f64>, q: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() as f64 - 1.0) * q).round() as usize]
    };
    let from_start: Vec<f64> = latencies.iter().map(|l| l.0).collect();
    let from_end: Vec<f64> = latencies.iter().map(|l| l.1).collect();
    let (p50, p95) = (pct(from_start.clone(), 0.5), pct(from_start, 0.95));
    let (e50, e95) = (pct(from_end.clone(), 0.5), pct(from_end, 0.95));

    let cpu_model = cpu_model();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let table = format!(
        "# Ferrocast benchmarks\n\n\
         Machine: {cpu_model}, {cores} cores. Command: `make bench`. Medians of {RUNS} alternated runs.\n\n\
         | Measure | Ferrocast | Peer | Ratio | Goal |\n\
         |---|---|---|---|---|\n\
         | Live ladder, 720p30 in → source + 720p/480p/360p, CPU-s per media-s | {f:.3} | ffmpeg {p:.3} | {:.2}× | ≤ 0.85× |\n\
         | Publish → segment in playlist, from its first frame, p50 / p95 ({} segments of 2 s) | {p50:.2} s / {p95:.2} s | | | ≤ 2.3 s |\n\
         | … of which after its last frame, p50 / p95 | {e50:.2} s / {e95:.2} s | | | ≤ 0.3 s |\n",
        f / p,
        latencies.len()
    );
    println!("\n{table}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/results.md");
    // Hand-written notes below the table (from a line starting "Notes") are kept.
    let notes = std::fs::read_to_string(&out)
        .ok()
        .and_then(|old| old.find("\nNotes").map(|i| old[i..].to_string()))
        .unwrap_or_default();
    std::fs::write(&out, format!("{table}{notes}")).unwrap();
    eprintln!("written to {}", out.display());
}

/// 30 s of 720p30 H.264 (2 s GOP) + AAC, made once.
fn make_input(work: &Path) -> PathBuf {
    let path = work.join("in720-30s.flv");
    if !path.exists() {
        let ok = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args([
                "-t", "30", "-c:v", "libx264", "-preset", "veryfast", "-b:v", "4000k",
            ])
            .args([
                "-g",
                "60",
                "-keyint_min",
                "60",
                "-sc_threshold",
                "0",
                "-pix_fmt",
                "yuv420p",
            ])
            .args(["-c:a", "aac", "-b:a", "128k", "-f", "flv"])
            .arg(&path)
            .status()
            .expect("ffmpeg (Debian package ffmpeg)")
            .success();
        assert!(ok, "could not make the input");
    }
    path
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
            let mut end = 0.0;
            for (i, d) in text
                .lines()
                .filter_map(|l| l.strip_prefix("#EXTINF:"))
                .enumerate()
            {
                let start = end;
                end += d.trim_end_matches(',').parse::<f64>().unwrap_or(0.0);
                if i >= seen.len() {
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
fn ffmpeg_run(work: &Path, input: &Path) -> f64 {
    let out = tempfile::tempdir_in(work).unwrap();
    let x264 = |kbps: u32, profile: &str, name: &str| -> Vec<String> {
        [
            "-map",
            &format!("[{name}]"),
            "-map",
            "0:a",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            // x264enc's defaults: CBR with a 600 ms VBV buffer.
            "-tune",
            "zerolatency",
            "-profile:v",
            profile,
            "-b:v",
            &format!("{kbps}k"),
            "-maxrate",
            &format!("{kbps}k"),
            "-bufsize",
            &format!("{}k", kbps * 6 / 10),
            "-g",
            "60",
            "-keyint_min",
            "60",
            "-sc_threshold",
            "0",
            "-bf",
            "0",
            "-c:a",
            "copy",
            "-f",
            "hls",
            "-hls_time",
            "2",
            "-hls_list_size",
            "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([out
            .path()
            .join(format!("{name}.m3u8"))
            .display()
            .to_string()])
        .collect()
    };
    let mut args: Vec<String> = ["-hide_banner", "-loglevel", "error", "-re", "-i"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(input.display().to_string());
    args.push("-filter_complex".into());
    args.push(
        "[0:v]split=3[a][b][c];[b]scale=854:480[v480];[c]scale=640:360[v360];[a]null[v720]".into(),
    );
    // The source rendition is copied, as Ferrocast's passthrough does.
    args.extend(
        [
            "-map",
            "0:v",
            "-map",
            "0:a",
            "-c",
            "copy",
            "-f",
            "hls",
            "-hls_time",
            "2",
            "-hls_list_size",
            "0",
        ]
        .map(String::from),
    );
    args.push(out.path().join("source.m3u8").display().to_string());
    args.extend(x264(2800, "high", "v720"));
    args.extend(x264(1400, "main", "v480"));
    args.extend(x264(800, "main", "v360"));
    let before = children_cpu();
    let status = Command::new("ffmpeg").args(&args).status().expect("ffmpeg");
    assert!(status.success(), "ffmpeg ladder failed");
    let _ = std::io::stderr().flush();
    children_cpu() - before
}
