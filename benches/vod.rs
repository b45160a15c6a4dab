//! `make bench`: a VOD transcode side by side with ffmpeg.
//!
//! 60 s of 720p30 H.264/AAC (MP4, made once) uploaded to a release `ferrocast serve`
//! (`POST /v1/assets`, default ladder), against two ffmpeg peers producing the same renditions
//! from the same file with the same x264 settings, as fast as the machine allows (no `-re`),
//! plus a faststart MP4 (`common::Ffmpeg`):
//! - ffmpeg as users run it (for information): libx264's own threads, every rung scaled from
//!   the source with bicubic swscale, the audio and the MP4 copied from the source;
//! - ffmpeg configured like Ferrocast (the goal is judged against it): x264 threads=1,
//!   bilinear, each rung scaled from the next larger, the AAC encoded once for every rendition
//!   and the MP4 muxed from the 720p encode, all through one `tee` output.
//!
//! Ferrocast's figure is the server's CPU from the upload until the asset is `ready`: the
//! whole job (probe, the ladder, the MP4 download, poster and storyboard), so even the second
//! peer does somewhat less (no poster, no storyboard). Runs alternate; medians of three. Every
//! wait has a deadline and fails saying what it waited for.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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
    // Ferrocast's runs, then each peer's (in `Ffmpeg::BOTH`'s order).
    let mut runs: [Vec<Outcome>; 3] = Default::default();
    for run in 1..=RUNS {
        eprintln!("run {run}/{RUNS}: ferrocast");
        runs[0].push(rt.block_on(ferrocast_run(&work, &input)));
        for (j, peer) in Ffmpeg::BOTH.into_iter().enumerate() {
            eprintln!("run {run}/{RUNS}: {}", peer.name());
            runs[j + 1].push(ffmpeg_run(&work, &input, peer));
        }
    }
    let m = |v: &[Outcome], get: fn(&Outcome) -> f64| {
        median(&mut v.iter().map(get).collect::<Vec<_>>())
    };
    let (fc, fw) = (m(&runs[0], |o| o.cpu), m(&runs[0], |o| o.wall));
    let mut rows = Vec::new();
    for (j, peer) in Ffmpeg::BOTH.into_iter().enumerate() {
        let pc = m(&runs[j + 1], |o| o.cpu);
        rows.push(
            row(
                &format!(
                    "VOD transcode, {MEDIA_SECONDS} s of {HEIGHT}p30 uploaded → source + \
                     720p/480p/360p + MP4 (Ferrocast also: poster, storyboard): CPU-s per \
                     media-s"
                ),
                format!("{fc:.3}"),
                &peer.goal("≤ 1.0×"),
            )
            .against(peer.peer(), format!("{pc:.3}"), ratio(fc, pc)),
        );
    }
    for (j, peer) in Ffmpeg::BOTH.into_iter().enumerate() {
        let pw = m(&runs[j + 1], |o| o.wall);
        rows.push(
            row(
                "VOD transcode, the same: wall seconds per media second (upload done → ready)",
                format!("{fw:.3}"),
                "",
            )
            .against(peer.peer(), format!("{pw:.3}"), ratio(fw, pw)),
        );
    }
    record("vod", &rows);
}

/// The benchmarks' 720p input re-muxed into MP4, as a creator would upload it.
fn mp4_input(work: &Path) -> PathBuf {
    let flv = make_input(work, HEIGHT, MEDIA_SECONDS);
    let mp4 = work.join(format!("in{HEIGHT}-{MEDIA_SECONDS}s.mp4"));
    if !mp4.exists() {
        // Written under another name first: a run stopped half-way must not leave a short input.
        let partial = mp4.with_extension("partial.mp4");
        let out = output_within(
            Command::new("ffmpeg")
                .args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
                .arg(&flv)
                .args(["-c", "copy", "-movflags", "+faststart"])
                .arg(&partial),
            Duration::from_secs(120),
            "ffmpeg re-muxing the input into MP4 (Debian package ffmpeg)",
        );
        assert!(
            out.status.success(),
            "could not make the MP4 input: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::rename(&partial, &mp4).unwrap();
    }
    mp4
}

async fn ferrocast_run(work: &Path, input: &Path) -> Outcome {
    let dir = tempfile::tempdir_in(work).unwrap();
    let (server, base) = spawn_server(dir.path(), &[]);
    let (key, _) = tenant_and_stream(&base, serde_json::json!({})).await;
    let client = http();
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
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .unwrap_or_else(|e| panic!("upload: {e}"));
    assert!(resp.status().is_success(), "upload: {}", resp.status());
    let uploaded = Instant::now();
    let created: serde_json::Value = resp.json().await.unwrap();
    let id = created["asset_id"].as_str().unwrap().to_string();
    let deadline = uploaded + Duration::from_secs(600);
    let asset_url = format!("{base}/v1/assets/{id}");
    let mut failures = Failures::default();
    let mut last = serde_json::Value::Null;
    loop {
        match client.get(&asset_url).bearer_auth(&key).send().await {
            Ok(r) if r.status().is_success() => match r.json().await {
                Ok(a) => last = a,
                Err(e) => failures.note(e),
            },
            Ok(r) => failures.note(r.status()),
            Err(e) => failures.note(e),
        }
        match last["status"].as_str() {
            Some("ready") => break,
            Some("errored") => panic!("transcode failed: {last}"),
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "waited 600 s for {asset_url} to say `ready`; the last answer: {last}; {failures}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if failures.count > 0 {
        eprintln!("polling {asset_url}: {failures}");
    }
    let wall = uploaded.elapsed().as_secs_f64();
    let cpu = process_cpu(server.id()) - cpu_before;
    kill_child(server, "ferrocast serve");
    Outcome {
        cpu: cpu / f64::from(MEDIA_SECONDS),
        wall: wall / f64::from(MEDIA_SECONDS),
    }
}

fn ffmpeg_run(work: &Path, input: &Path, peer: Ffmpeg) -> Outcome {
    let out = tempfile::tempdir_in(work).unwrap();
    let args = ffmpeg_ladder_args(input, out.path(), HEIGHT, true, peer);
    let before = children_cpu();
    let started = Instant::now();
    let mut ffmpeg = Command::new("ffmpeg")
        .args(&args)
        .stdin(Stdio::null())
        .spawn()
        .expect("ffmpeg (Debian package ffmpeg)");
    let status = wait_within(
        &mut ffmpeg,
        Duration::from_secs(600),
        &format!("the {} transcode", peer.name()),
    );
    assert!(status.success(), "the {} transcode failed", peer.name());
    Outcome {
        cpu: (children_cpu() - before) / f64::from(MEDIA_SECONDS),
        wall: started.elapsed().as_secs_f64() / f64::from(MEDIA_SECONDS),
    }
}
