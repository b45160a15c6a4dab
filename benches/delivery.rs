//! `make bench`: delivery, Ferrocast against nginx serving the same files, and startup in a
//! real browser.
//!
//! A release `ferrocast serve` records a 20 s 720p30 broadcast (RTMP, `passthrough` ladder:
//! AES-128 HLS, `signed` playback: every request carries a tenant-signed ES256 token, as a
//! customer's site would send it). While it is live, headless Chromium opens
//! `/play/{id}?token=…` three times (empty cache each time): page load → first frame. Then, on
//! the recording:
//! - the same page load → first frame;
//! - `wrk`, 64 connections, 20 s, cycling through the recording's segments (and, separately,
//!   its playlists), each URL with `?token=…`, against Ferrocast, which checks the token on
//!   every request (signature, expiry, playback id) and writes it into every URI of a playlist
//!   it serves, and against nginx (`benches/nginx-delivery.conf`: `sendfile`,
//!   `open_file_cache`, as a tuned nginx), which serves the very files Ferrocast stored, under
//!   the same URLs, with no token check: requests/s and p99.
//!
//! Runs alternate; medians of three. Every wait has a deadline and fails saying what it waited
//! for. Its lines go into `benches/results.md`.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 3;
const WRK_SECONDS: u32 = 20;

fn main() {
    let work = std::env::temp_dir().join("ferrocast-bench");
    std::fs::create_dir_all(&work).unwrap();
    let input = make_input(&work, 720, 20);
    let dir = tempfile::tempdir_in(&work).unwrap();
    let (server, base) = spawn_server(dir.path(), &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (key, stream) = rt.block_on(tenant_and_stream(
        &base,
        serde_json::json!({"ladder": "passthrough", "playback_policy": "signed",
            "reconnect_window_s": 0, "record": true}),
    ));
    let signing = rt.block_on(SigningKey::create(&base, &key));
    let mut publisher = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re", "-i"])
        .arg(&input)
        .args(["-c", "copy", "-f", "flv", &publish_url(&stream)])
        .stdin(Stdio::null())
        .spawn()
        .expect("ffmpeg (Debian package ffmpeg)");
    // Live: a few segments in, as a viewer arriving mid-broadcast.
    std::thread::sleep(Duration::from_secs(8));
    let live_id = stream["playback_id"].as_str().unwrap();
    let live = first_frames(&format!(
        "{base}/play/{live_id}?token={}",
        signing.token(live_id)
    ));
    let status = wait_within(
        &mut publisher,
        Duration::from_secs(60),
        "the publisher (ffmpeg, 20 s of media) to end",
    );
    assert!(status.success(), "publisher failed: {status}");
    let playback_id = rt.block_on(recording(&base, &key));
    let token = signing.token(&playback_id);
    let query = format!("?token={token}");
    let vod = first_frames(&format!("{base}/play/{playback_id}{query}"));

    // The recording's files: where Ferrocast stored them, and their URLs. Ferrocast writes the
    // token into every URI of a playlist it serves; the stored file is that without it.
    let client = http_blocking();
    let get = |path: &str| {
        let r = client
            .get(format!("{base}{path}{query}"))
            .send()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.bytes().unwrap()
    };
    let stored = |served: &[u8]| {
        String::from_utf8_lossy(served)
            .replace(&query, "")
            .into_bytes()
    };
    let prefix = format!("/hls/{playback_id}/");
    let master = stored(&get(&format!("{prefix}master.m3u8")));
    let files = find_file(&dir.path().join("data"), "master.m3u8", &master)
        .expect("the stored master playlist")
        .parent()
        .unwrap()
        .to_path_buf();
    let mut playlists = vec![format!("{prefix}master.m3u8")];
    let mut segments = Vec::new();
    for uri in uris(&master) {
        let media_path = format!("{prefix}{uri}");
        let media = stored(&get(&media_path));
        let dir_of = &media_path[..media_path.rfind('/').unwrap() + 1];
        segments.extend(uris(&media).map(|s| format!("{dir_of}{s}")));
        playlists.push(media_path);
    }
    assert!(segments.len() >= 8, "{segments:?}");
    let segment_bytes: usize =
        segments.iter().map(|s| get(s).len()).sum::<usize>() / segments.len();

    let nginx_dir = tempfile::tempdir_in(&work).unwrap();
    std::fs::create_dir_all(nginx_dir.path().join("tmp")).unwrap();
    let port = free_port();
    let conf = peer_config(
        "nginx-delivery.conf",
        nginx_dir.path(),
        &[
            ("DIR", nginx_dir.path().display().to_string()),
            ("PORT", port.to_string()),
            ("PLAYBACK_ID", playback_id.clone()),
            ("FILES", files.display().to_string()),
        ],
    );
    let nginx = spawn_nginx(nginx_dir.path(), &conf, port);
    let nginx_base = format!("http://127.0.0.1:{port}");
    for (path, served) in [
        (&segments[0], get(&segments[0]).to_vec()),
        (&playlists[1], stored(&get(&playlists[1]))),
    ] {
        let theirs = client
            .get(format!("{nginx_base}{path}{query}"))
            .send()
            .unwrap_or_else(|e| panic!("GET {path} from nginx: {e}"))
            .bytes()
            .unwrap();
        assert_eq!(theirs, served, "nginx serves the same bytes for {path}");
    }

    // The same requests, token and all, to both (nginx ignores the query).
    let segments: Vec<String> = segments.iter().map(|s| format!("{s}{query}")).collect();
    let playlists: Vec<String> = playlists.iter().map(|p| format!("{p}{query}")).collect();
    let seg_script = wrk_script(nginx_dir.path(), "segments.lua", &segments);
    let pl_script = wrk_script(nginx_dir.path(), "playlists.lua", &playlists);
    let mut results: [(Vec<WrkResult>, Vec<WrkResult>); 2] = Default::default();
    for run in 1..=RUNS {
        for (i, script) in [&seg_script, &pl_script].into_iter().enumerate() {
            eprintln!("run {run}/{RUNS}: {}", script.display());
            results[i].0.push(wrk(&base, 64, WRK_SECONDS, Some(script)));
            results[i]
                .1
                .push(wrk(&nginx_base, 64, WRK_SECONDS, Some(script)));
        }
    }
    stop_nginx(nginx);
    kill_child(server, "ferrocast serve");

    let mut rows = Vec::new();
    for (i, what) in [
        format!(
            "{} segments of {} KiB",
            segments.len(),
            segment_bytes / 1024
        ),
        format!("{} playlists", playlists.len()),
    ]
    .iter()
    .enumerate()
    {
        let m = |v: &[WrkResult], get: fn(&WrkResult) -> f64| {
            median(&mut v.iter().map(get).collect::<Vec<_>>())
        };
        let (f, p) = (&results[i].0, &results[i].1);
        let (frps, prps) = (m(f, |r| r.rps), m(p, |r| r.rps));
        rows.push(
            row(
                &format!(
                    "Delivery of a recording, {what}, signed playback (Ferrocast checks the \
                     ES256 token on every request): req/s; p99 (wrk, 64 connections, \
                     {WRK_SECONDS} s)"
                ),
                format!("{frps:.0}; {:.2} ms", m(f, |r| r.p99_ms)),
                "≥ 0.9×",
            )
            .against(
                "nginx: the same files, no token check, sendfile + open_file_cache",
                format!("{prps:.0}; {:.2} ms", m(p, |r| r.p99_ms)),
                ratio(frps, prps),
            ),
        );
    }
    for (what, v) in [
        ("live, joining mid-broadcast", live),
        ("the recording", vod),
    ] {
        let each: Vec<String> = v.iter().map(|ms| format!("{ms:.0}")).collect();
        rows.push(row(
            &format!(
                "Page load → first frame, Chromium + hls.js, signed playback, {what}: median \
                 (n = {}: each load, ms)",
                v.len()
            ),
            format!("{:.0} ms ({})", median(&mut v.clone()), each.join(", ")),
            "< 1 s",
        ));
    }
    record("delivery", &rows);
}

/// The stream's recording, once ready: its playback id.
async fn recording(base: &str, key: &str) -> String {
    let client = http();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut failures = Failures::default();
    let mut list = serde_json::Value::Null;
    loop {
        match client
            .get(format!("{base}/v1/assets"))
            .bearer_auth(key)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => match r.json().await {
                Ok(l) => list = l,
                Err(e) => failures.note(e),
            },
            Ok(r) => failures.note(r.status()),
            Err(e) => failures.note(e),
        }
        if let Some(a) = list["data"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["status"] == "ready")
        {
            return a["playback_id"].as_str().unwrap().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "waited 60 s for the recording to be `ready` in {base}/v1/assets: {list}; {failures}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Page load → first frame, three times, in ms; every load must show one.
fn first_frames(url: &str) -> Vec<f64> {
    // Each load may take its 30 s navigation and 15 s frame timeouts, and the launch 30 s.
    let report = node_script(
        "benches/first-frame.cjs",
        &[url, "3"],
        Duration::from_secs(180),
    );
    let ms: Vec<f64> = report["firstFrameMs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_f64)
        .collect();
    assert_eq!(ms.len(), 3, "every load showed a frame: {report}");
    ms
}

/// The URIs a playlist lists.
fn uris(playlist: &[u8]) -> impl Iterator<Item = String> + '_ {
    std::str::from_utf8(playlist)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
}

/// The file called `name` under `dir` whose content is `content`.
fn find_file(dir: &Path, name: &str, content: &[u8]) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, name, content) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|n| n == name)
            && std::fs::read(&path).is_ok_and(|c| c == content)
        {
            return Some(path);
        }
    }
    None
}

/// A wrk script cycling through `paths`.
fn wrk_script(dir: &Path, name: &str, paths: &[String]) -> PathBuf {
    let list: Vec<String> = paths.iter().map(|p| format!("  {p:?},")).collect();
    let text = format!(
        "local paths = {{\n{}\n}}\nlocal i = 0\nrequest = function()\n  i = i % #paths + 1\n  \
         return wrk.format(\"GET\", paths[i])\nend\n",
        list.join("\n")
    );
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}
