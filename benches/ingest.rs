//! `make bench`: passthrough ingest, Ferrocast against nginx-rtmp, side by side.
//!
//! 1, 10 and 50 concurrent RTMP publishers (`ffmpeg -re -c copy` of a pre-encoded 720p30
//! H.264/AAC file, 20 s) into
//! - a release `ferrocast serve`, each stream with the `passthrough` ladder (the source copied
//!   into AES-128 HLS, nothing re-encoded, recorded), and
//! - nginx with Debian's `libnginx-mod-rtmp` (`hls on`, 2 s fragments, TS to disk; config in
//!   `benches/nginx-rtmp.conf`), one process: once as plain HLS, and once with `hls_keys on`
//!   (every fragment AES-128, one key per broadcast), which Ferrocast's output does too.
//!
//! For each: the server's CPU time (`perf stat -e task-clock`, all threads, in nanoseconds)
//! from the first publisher's start until every playlist is final, per publisher and media
//! second (Ferrocast's also covers what nginx-rtmp does not do: the recording kept as an
//! asset, each segment synced to disk, the broadcast's database rows, and the bench's own
//! requests for the playlists until they end); its resident memory above idle at the peak,
//! per publisher; and whether every stream's playlist holds the whole broadcast. Runs
//! alternate; medians of five (one publisher's CPU moves by ±10 % from run to run on a shared
//! 2-core machine). Every wait has a deadline: the publishers must end within 60 s of the
//! media's length, and a playlist not final 20 s after them counts as incomplete, with a line
//! saying which and why. Its lines go into `benches/results.md`.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MEDIA_SECONDS: u32 = 20;
const RUNS: usize = 5;
const PUBLISHERS: [usize; 3] = [1, 10, 50];

struct Outcome {
    /// CPU-s per publisher per media-s (cores per publisher).
    cpu: f64,
    counted: CpuSource,
    /// MiB per publisher.
    rss: f64,
    /// Streams whose playlist covers the whole broadcast.
    complete: usize,
}

fn main() {
    let work = std::env::temp_dir().join("ferrocast-bench");
    std::fs::create_dir_all(&work).unwrap();
    let input = make_input(&work, 720, MEDIA_SECONDS);
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Per publisher count: Ferrocast, nginx-rtmp plain, nginx-rtmp encrypting.
    let mut results: Vec<[Vec<Outcome>; 3]> =
        PUBLISHERS.iter().map(|_| Default::default()).collect();
    for run in 1..=RUNS {
        for (i, &n) in PUBLISHERS.iter().enumerate() {
            eprintln!("run {run}/{RUNS}, {n} publishers: ferrocast");
            results[i][0].push(rt.block_on(ferrocast_run(&work, &input, n)));
            eprintln!("run {run}/{RUNS}, {n} publishers: nginx-rtmp");
            results[i][1].push(nginx_run(&work, &input, n, false));
            eprintln!("run {run}/{RUNS}, {n} publishers: nginx-rtmp, hls_keys on");
            results[i][2].push(nginx_run(&work, &input, n, true));
        }
    }
    let m = |v: &[Outcome], get: fn(&Outcome) -> f64| {
        median(&mut v.iter().map(get).collect::<Vec<_>>())
    };
    let complete = |v: &[Outcome]| v.iter().map(|o| o.complete).min().unwrap_or(0);
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    let all_by_perf = results
        .iter()
        .flatten()
        .flatten()
        .all(|o| o.counted == CpuSource::Perf);
    let unit = if all_by_perf {
        "% of a core, perf stat"
    } else {
        "% of a core, /proc ticks in some runs"
    };
    let mut rows = Vec::new();
    for (i, &n) in PUBLISHERS.iter().enumerate() {
        let [f, p, _] = &results[i];
        let (fc, pc) = (m(f, |o| o.cpu), m(p, |o| o.cpu));
        let (fr, pr) = (m(f, |o| o.rss), m(p, |o| o.rss));
        rows.push(
            row(
                &format!(
                    "Passthrough ingest, {n} RTMP publisher{}: CPU per publisher ({unit}); \
                     memory per publisher; playlists complete",
                    plural(n)
                ),
                format!("{:.2} %; {fr:.1} MiB; {}/{n}", fc * 100.0, complete(f)),
                "≤ 1.0× CPU; all complete",
            )
            .against(
                "nginx-rtmp",
                format!("{:.2} %; {pr:.1} MiB; {}/{n}", pc * 100.0, complete(p)),
                ratio(fc, pc),
            ),
        );
    }
    for (i, &n) in PUBLISHERS.iter().enumerate() {
        let [f, _, k] = &results[i];
        let (fc, kc) = (m(f, |o| o.cpu), m(k, |o| o.cpu));
        rows.push(
            row(
                &format!(
                    "Passthrough ingest, both encrypting every segment (AES-128, one key per \
                     broadcast), {n} RTMP publisher{}: CPU per publisher ({unit}); playlists \
                     complete",
                    plural(n)
                ),
                format!("{:.2} %; {}/{n}", fc * 100.0, complete(f)),
                "≤ 1.0× CPU; all complete",
            )
            .against(
                "nginx-rtmp `hls_keys on`",
                format!("{:.2} %; {}/{n}", kc * 100.0, complete(k)),
                ratio(fc, kc),
            ),
        );
    }
    record("ingest", &rows);
}

fn publishers(input: &Path, urls: &[String]) -> Vec<Child> {
    urls.iter()
        .map(|url| {
            Command::new("ffmpeg")
                .args(["-hide_banner", "-loglevel", "error", "-re", "-i"])
                .arg(input)
                .args(["-c", "copy", "-f", "flv", url])
                .stdin(Stdio::null())
                .spawn()
                .expect("ffmpeg (Debian package ffmpeg)")
        })
        .collect()
}

/// Waits for the publishers while sampling `pid`'s memory; returns the peak in MiB. They must
/// end within a minute of the media's length (past it, they are killed and the run fails).
fn wait_sampling(pid: u32, mut children: Vec<Child>) -> f64 {
    let n = children.len();
    let deadline = Instant::now() + Duration::from_secs(u64::from(MEDIA_SECONDS) + 60);
    let mut peak: f64 = 0.0;
    while !children.is_empty() {
        peak = peak.max(process_rss_mib(pid));
        children.retain_mut(|c| match c.try_wait().unwrap() {
            Some(status) => {
                assert!(status.success(), "a publisher failed: {status}");
                false
            }
            None => true,
        });
        if Instant::now() > deadline && !children.is_empty() {
            let left = children.len();
            for c in children {
                kill_child(c, "a publisher (ffmpeg)");
            }
            panic!(
                "waited {} s for {n} publishers (ffmpeg -re, {MEDIA_SECONDS} s of media) to \
                 end; {left} were still running, so they were killed",
                MEDIA_SECONDS + 60
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    peak
}

/// Total duration of the segments a playlist lists.
fn listed_seconds(playlist: &str) -> f64 {
    playlist
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .filter_map(|d| d.split(',').next()?.parse::<f64>().ok())
        .sum()
}

fn is_whole(playlist: &str) -> bool {
    listed_seconds(playlist) >= f64::from(MEDIA_SECONDS) - 2.5
}

async fn ferrocast_run(work: &Path, input: &Path, n: usize) -> Outcome {
    let dir = tempfile::tempdir_in(work).unwrap();
    let (server, base) = spawn_server(dir.path(), &[]);
    let body = serde_json::json!({
        "ladder": "passthrough", "playback_policy": "public",
        "reconnect_window_s": 0, "record": true,
    });
    let (key, first) = tenant_and_stream(&base, body.clone()).await;
    let client = http();
    let mut streams = vec![first];
    while streams.len() < n {
        let resp = client
            .post(format!("{base}/v1/live-streams"))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
        streams.push(resp.json().await.unwrap());
    }
    let urls: Vec<String> = streams.iter().map(publish_url).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = server.id();
    let idle_rss = process_rss_mib(pid);
    let meter = CpuMeter::start(pid);
    let children = publishers(input, &urls);
    let peak = tokio::task::spawn_blocking(move || wait_sampling(pid, children))
        .await
        .unwrap();
    // Final: every stream's media playlist has ENDLIST within 20 s; one that has not by then
    // counts as incomplete, and is named with the last thing its requests got.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut complete = 0;
    for (i, s) in streams.iter().enumerate() {
        let master = format!(
            "{base}/hls/{}/master.m3u8",
            s["playback_id"].as_str().unwrap()
        );
        let mut failures = Failures::default();
        loop {
            let text = media_playlist(&client, &master).await.unwrap_or_else(|e| {
                failures.note(e);
                String::new()
            });
            if text.contains("#EXT-X-ENDLIST") {
                complete += usize::from(is_whole(&text));
                if !is_whole(&text) {
                    eprintln!(
                        "stream {i}: its final playlist lists {:.1} s of {MEDIA_SECONDS} s",
                        listed_seconds(&text)
                    );
                }
                break;
            }
            if Instant::now() > deadline {
                eprintln!(
                    "stream {i}: waited 20 s after the publishers for #EXT-X-ENDLIST under \
                     {master}; counted incomplete ({failures})"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (cpu, counted) = meter.stop();
    kill_child(server, "ferrocast serve");
    Outcome {
        cpu: cpu / n as f64 / f64::from(MEDIA_SECONDS),
        counted,
        rss: (peak - idle_rss).max(0.0) / n as f64,
        complete,
    }
}

/// The first media playlist of a master playlist; an error says which request failed (a 404
/// is one too, while the stream has not started).
async fn media_playlist(client: &reqwest::Client, master_url: &str) -> Result<String, String> {
    let get = |url: String| async move {
        match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => {
                r.text().await.map_err(|e| format!("GET {url}: {e}"))
            }
            Ok(r) => Err(format!("GET {url}: {}", r.status())),
            Err(e) => Err(format!("GET {url}: {e}")),
        }
    };
    let master = get(master_url.to_string()).await?;
    let uri = master
        .lines()
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or_else(|| format!("{master_url} lists no media playlist"))?;
    let base = &master_url[..master_url.rfind('/').unwrap() + 1];
    get(format!("{base}{uri}")).await
}

/// One nginx-rtmp run; `encrypted`: every fragment AES-128 (`hls_keys on`).
fn nginx_run(work: &Path, input: &Path, n: usize, encrypted: bool) -> Outcome {
    let dir = tempfile::tempdir_in(work).unwrap();
    let port = free_port();
    let hls = dir.path().join("hls");
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&hls).unwrap();
    std::fs::create_dir_all(&keys).unwrap();
    let keys_config = if encrypted {
        format!(
            "hls_keys on; hls_key_path {}; hls_fragments_per_key 0;",
            keys.display()
        )
    } else {
        String::new()
    };
    let conf = peer_config(
        "nginx-rtmp.conf",
        dir.path(),
        &[
            ("DIR", dir.path().display().to_string()),
            ("PORT", port.to_string()),
            ("KEYS", keys_config),
        ],
    );
    let nginx = spawn_nginx(dir.path(), &conf, port);
    let pid = nginx.id();
    let urls: Vec<String> = (0..n)
        .map(|i| format!("rtmp://127.0.0.1:{port}/live/s{i}"))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let idle_rss = process_rss_mib(pid);
    let meter = CpuMeter::start(pid);
    let peak = wait_sampling(pid, publishers(input, &urls));
    // nginx-rtmp closes the last fragment when the publisher goes; give it a moment.
    std::thread::sleep(Duration::from_millis(500));
    let (cpu, counted) = meter.stop();
    let complete = (0..n)
        .filter(|i| {
            let path: PathBuf = hls.join(format!("s{i}.m3u8"));
            std::fs::read_to_string(path)
                .is_ok_and(|t| is_whole(&t) && t.contains("METHOD=AES-128") == encrypted)
        })
        .count();
    stop_nginx(nginx);
    Outcome {
        cpu: cpu / n as f64 / f64::from(MEDIA_SECONDS),
        counted,
        rss: (peak - idle_rss).max(0.0) / n as f64,
        complete,
    }
}
