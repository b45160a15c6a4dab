//! `make bench`: a VOD transcode side by side with ffmpeg.
//!
//! 60 s of 720p30 H.264/AAC (MP4, made once) uploaded to a release `ferrocast serve`
//! (`POST /v1/assets`, default ladder), against `ffmpeg` producing the same renditions from the
//! same file with the same x264 settings, as fast as the machine allows (no `-re`), plus a
//! faststart MP4 copy. Ferrocast's figure is the server's CPU from the upload until the asset
//! is `ready`: the whole job (probe, the ladder, the MP4 download, poster and storyboard, the
//! AAC audio re-encoded once), so ffmpeg does somewhat less. Runs alternate; medians of three.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const MEDIA_SECONDS: u32 = 60;
const HEIGHT: u32 = 720;
const RUNS: usize = 3;

struct Outcome {
    /// CPU-s per media-s.
    cpu: f64,
    /// Wall seconds per media second.
    wall: f64,
}

fn main() {
    let work = std::env::temp_dir().join("ferrocast-bench");
    std::fs::create_dir_all(&work).unwrap();
    let input = mp4_input(&work);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for run in 1..=RUNS {
        eprintln!("run {run}/{RUNS}: ferrocast");
        ours.push(rt.block_on(ferrocast_run(&work, &input)));
        eprintln!("run {run}/{RUNS}: ffmpeg");
        theirs.push(ffmpeg_run(&work, &input));
    }
    let m = |v: &[Outcome], get: fn(&Outcome) -> f64| {
        median(&mut v.iter().map(get).collect::<Vec<_>>())
    };
    let (fc, pc) = (m(&ours, |o| o.cpu), m(&theirs, |o| o.cpu));
    let (fw, pw) = (m(&ours, |o| o.wall), m(&theirs, |o| o.wall));
    let rows = [
        row(
            &format!(
                "VOD transcode, {MEDIA_SECONDS} s of {HEIGHT}p30 uploaded → source + \
                 720p/480p/360p (+ MP4, poster, storyboard): CPU-s per media-s"
            ),
            format!("{fc:.3}"),
            format!("ffmpeg {pc:.3}"),
            ratio(fc, pc),
            "",
        ),
        row(
            "VOD transcode, the same: wall seconds per media second (upload done → ready)",
            format!("{fw:.3}"),
            format!("ffmpeg {pw:.3}"),
            ratio(fw, pw),
            "",
        ),
    ];
    record("vod", &rows);
}

/// The benchmarks' 720p input re-muxed into MP4, as a creator would upload it.
fn mp4_input(work: &Path) -> PathBuf {
    let flv = make_input(work, HEIGHT, MEDIA_SECONDS);
    let mp4 = work.join(format!("in{HEIGHT}-{MEDIA_SECONDS}s.mp4"));
    if !mp4.exists() {
        let ok = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
            .arg(&flv)
            .args(["-c", "copy", "-movflags", "+faststart"])
            .arg(&mp4)
            .status()
            .expect("ffmpeg")
            .success();
        assert!(ok, "could not make the MP4 input");
    }
    mp4
}

async fn ferrocast_run(work: &Path, input: &Path) -> Outcome {
    let dir = tempfile::tempdir_in(work).unwrap();
    let (mut server, base) = spawn_server(dir.path(), &[]);
    let (key, _) = tenant_and_stream(&base, serde_json::json!({})).await;
    let client = reqwest::Client::new();
    let bytes = std::fs::read(input).unwrap();
    let cpu_before = process_cpu(server.id());
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(bytes).file_name("input.mp4"),
    );
    let resp = client
        .post(format!("{base}/v1/assets"))
        .bearer_auth(&key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "upload: {}", resp.status());
    let uploaded = Instant::now();
    let created: serde_json::Value = resp.json().await.unwrap();
    let id = created["asset_id"].as_str().unwrap().to_string();
    let deadline = uploaded + Duration::from_secs(600);
    loop {
        let a: serde_json::Value = client
            .get(format!("{base}/v1/assets/{id}"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        match a["status"].as_str() {
            Some("ready") => break,
            Some("errored") => panic!("transcode failed: {a}"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "transcode did not finish: {a}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let wall = uploaded.elapsed().as_secs_f64();
    let cpu = process_cpu(server.id()) - cpu_before;
    let _ = server.kill();
    let _ = server.wait();
    Outcome {
        cpu: cpu / f64::from(MEDIA_SECONDS),
        wall: wall / f64::from(MEDIA_SECONDS),
    }
}

fn ffmpeg_run(work: &Path, input: &Path) -> Outcome {
    let out = tempfile::tempdir_in(work).unwrap();
    let mut args = ffmpeg_ladder_args(input, out.path(), HEIGHT, false);
    // The MP4 download, copied from the source.
    args.extend(
        [
            "-map",
            "0:v",
            "-map",
            "0:a",
            "-c",
            "copy",
            "-movflags",
            "+faststart",
        ]
        .map(String::from),
    );
    args.push(out.path().join("download.mp4").display().to_string());
    let before = children_cpu();
    let started = Instant::now();
    let status = Command::new("ffmpeg").args(&args).status().expect("ffmpeg");
    assert!(status.success(), "ffmpeg ladder failed");
    Outcome {
        cpu: (children_cpu() - before) / f64::from(MEDIA_SECONDS),
        wall: started.elapsed().as_secs_f64() / f64::from(MEDIA_SECONDS),
    }
}
