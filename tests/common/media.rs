//! Real media clients for tests: ffmpeg and GStreamer publishers, ffprobe, and headless
//! Chromium playing the /play page. Each names the Debian package when it is missing.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A child process killed when dropped.
pub struct Process {
    child: Child,
    what: &'static str,
}

impl Process {
    fn spawn(mut cmd: Command, what: &'static str, package: &str) -> Self {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {what} ({e}); install the Debian package {package} (make test does)"
                )
            });
        Self { child, what }
    }

    /// Waits (bounded) for the process to exit; returns whether it succeeded (printing the
    /// end of its stderr when not).
    pub async fn wait(&mut self, limit: Duration) -> bool {
        let (ok, err) = self.wait_output(limit).await;
        if !ok {
            let tail = &err[err.floor_char_boundary(err.len().saturating_sub(1500))..];
            eprintln!("{} failed:\n{tail}", self.what);
        }
        ok
    }

    /// Waits (bounded) for the process to exit; returns whether it succeeded, and its stderr.
    pub async fn wait_output(&mut self, limit: Duration) -> (bool, String) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                return (status.success(), err);
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {limit:?}",
                self.what
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// ffmpeg publishing `seconds` of a WIDTHxHEIGHT 30 fps test pattern with a tone, in real time,
/// as H.264 (2 s GOP) + AAC over RTMP.
pub fn ffmpeg_publish(url: &str, width: u32, height: u32, seconds: u32) -> Process {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-re"])
        .args([
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc2=size={width}x{height}:rate=30"),
        ])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &seconds.to_string()])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-g",
            "60",
            "-keyint_min",
            "60",
            "-sc_threshold",
            "0",
        ])
        .args([
            "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", "-f", "flv", url,
        ]);
    Process::spawn(cmd, "ffmpeg", "ffmpeg")
}

/// ffmpeg publishing `seconds` of 320x240 video encoded with `video` (e.g. `flv` for Sorenson
/// H.263) and a tone encoded with `audio` (e.g. `libmp3lame`).
pub fn ffmpeg_publish_codecs(url: &str, video: &str, audio: &str, seconds: u32) -> Process {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
        .args(["-t", &seconds.to_string(), "-c:v", video, "-c:a", audio])
        .args(["-f", "flv", url]);
    Process::spawn(cmd, "ffmpeg", "ffmpeg")
}

/// GStreamer's own RTMP client (`rtmp2sink`) publishing `seconds` of 640x360 H.264 + AAC.
pub fn gstreamer_publish(url: &str, seconds: u32) -> Process {
    let frames = seconds * 30;
    // Both sources end together, so the publish ends cleanly (1024-sample buffers at 48 kHz).
    let audio_buffers = seconds * 48_000 / 1024;
    let pipeline = format!(
        "videotestsrc is-live=true num-buffers={frames} ! video/x-raw,width=640,height=360,framerate=30/1 \
         ! x264enc tune=zerolatency key-int-max=60 bitrate=800 ! h264parse ! flvmux name=m streamable=true \
         ! rtmp2sink location={url} \
         audiotestsrc is-live=true num-buffers={audio_buffers} samplesperbuffer=1024 ! audio/x-raw,rate=48000 \
         ! voaacenc ! aacparse ! m."
    );
    let mut cmd = Command::new("gst-launch-1.0");
    cmd.arg("-e").args(pipeline.split_whitespace());
    Process::spawn(
        cmd,
        "gst-launch-1.0 (rtmp2sink)",
        "gstreamer1.0-tools and gstreamer1.0-plugins-bad",
    )
}

/// ffprobe's JSON view (streams and format) of a URL.
pub async fn ffprobe(url: &str) -> Value {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || {
        let out = super::output_within(
            Command::new("ffprobe")
                .args([
                    "-v",
                    "error",
                    "-print_format",
                    "json",
                    "-show_streams",
                    "-show_format",
                ])
                .args(["-allowed_extensions", "ALL"])
                .arg(&url),
            Duration::from_secs(60),
            "ffprobe (Debian package ffmpeg)",
        );
        assert!(
            out.status.success(),
            "ffprobe {url} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("ffprobe prints JSON")
    })
    .await
    .unwrap()
}

/// What the /play page's player did in headless Chromium.
#[derive(Debug)]
pub struct Playback {
    pub current_time: f64,
    /// Decoded video frames.
    pub frames: u64,
    /// The playhead when the first frame was seen (a live stream starts behind its edge).
    pub first_frame_time: Option<f64>,
    /// Longest time (s) without a new decoded frame, from the first on, while playing.
    pub longest_freeze_s: f64,
    /// The video fired `ended` (it played to the ENDLIST).
    pub ended: bool,
    /// The page's own state: live, ended, offline, playing, error, …
    pub state: String,
    pub key_loaded: bool,
    pub fatal: Option<String>,
    pub key_requests: u64,
    pub key_failures: u64,
    pub errors: Vec<String>,
    pub subtitle_tracks: u64,
    /// The page's analytics view, and its own measures of startup and watch time.
    pub view_id: Option<String>,
    pub startup_ms: Option<i64>,
    pub watch_ms: Option<i64>,
}

/// Whether the key must have been loaded for playback to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encrypted {
    Yes,
    No,
}

impl Playback {
    /// Fails unless the player played as a viewer would say it did: at least `min_seconds`
    /// of media from its first frame; decoded frames rising steadily (10 a second of media played at least, never
    /// frozen for more than 2 s); no fatal player error; the key loaded if encrypted.
    pub fn assert_plays(&self, min_seconds: f64, encrypted: Encrypted) {
        assert!(self.fatal.is_none(), "fatal player error: {self:?}");
        let played = self.first_frame_time.map_or(0.0, |t| self.current_time - t);
        assert!(
            played >= min_seconds,
            "played {played:.1} s of {min_seconds} s: {self:?}"
        );
        assert!(
            self.frames >= 10 && self.frames as f64 >= 10.0 * played,
            "{} frames decoded in {played:.1} s played: {self:?}",
            self.frames,
        );
        assert!(
            self.longest_freeze_s <= 2.0,
            "the picture froze for {:.1} s: {self:?}",
            self.longest_freeze_s
        );
        if encrypted == Encrypted::Yes {
            assert!(
                self.key_loaded && self.key_requests > 0 && self.key_failures == 0,
                "the key was not loaded: {self:?}"
            );
        }
    }
}

/// Opens `url` in headless Chromium until the video has played `min_seconds` from its first
/// frame, or fails, or `timeout_s` passes.
pub async fn browser_play(url: &str, min_seconds: u32, timeout_s: u32) -> Playback {
    run_player(url, min_seconds, timeout_s, "seconds", &[]).await
}

/// [`browser_play`], the page's requests carrying `headers` too (as a CDN would add them).
pub async fn browser_play_with_headers(
    url: &str,
    min_seconds: u32,
    timeout_s: u32,
    headers: &[(&str, &str)],
) -> Playback {
    run_player(url, min_seconds, timeout_s, "seconds", headers).await
}

/// Opens `url` in headless Chromium until the video fires `ended` (it played to the
/// ENDLIST), or fails, or `timeout_s` passes.
pub async fn browser_play_to_end(url: &str, timeout_s: u32) -> Playback {
    run_player(url, 0, timeout_s, "ended", &[]).await
}

async fn run_player(
    url: &str,
    min_seconds: u32,
    timeout_s: u32,
    until: &'static str,
    headers: &[(&str, &str)],
) -> Playback {
    let headers: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), Value::from(*v)))
        .collect();
    let headers = Value::Object(headers).to_string();
    let node_modules = std::env::var("BROWSER_TEST_NODE_MODULES").unwrap_or_else(|_| {
        format!(
            "{}/.cache/ferrocast/npm/node_modules",
            std::env::var("HOME").unwrap()
        )
    });
    assert!(
        std::path::Path::new(&node_modules)
            .join("playwright-core")
            .exists(),
        "playwright-core is missing from {node_modules}: run make node-deps (make test does)"
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/play.cjs");
    let url = url.to_string();
    let out = tokio::task::spawn_blocking(move || {
        super::output_within(
            Command::new("node")
                .env("NODE_PATH", &node_modules)
                .env("PLAY_HEADERS", &headers)
                .args([
                    script,
                    &url,
                    &min_seconds.to_string(),
                    &timeout_s.to_string(),
                    until,
                ]),
            // Chromium's start and shutdown on top of the playing time.
            Duration::from_secs(u64::from(timeout_s) + 60),
            "node play.cjs (Debian packages nodejs npm chromium; make test installs them)",
        )
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "browser run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "browser printed no JSON: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    Playback {
        current_time: v["currentTime"].as_f64().unwrap_or(0.0),
        frames: v["frames"].as_u64().unwrap_or(0),
        first_frame_time: v["firstFrameTime"].as_f64(),
        longest_freeze_s: v["longestFreeze"].as_f64().unwrap_or(0.0),
        ended: v["ended"].as_bool().unwrap_or(false),
        state: v["state"].as_str().unwrap_or_default().to_string(),
        key_loaded: v["keyLoaded"].as_bool().unwrap_or(false),
        fatal: v["fatal"].as_str().map(str::to_string),
        key_requests: v["keyRequests"].as_u64().unwrap_or(0),
        key_failures: v["keyFailures"].as_u64().unwrap_or(0),
        subtitle_tracks: v["subtitleTracks"].as_u64().unwrap_or(0),
        view_id: v["viewId"].as_str().map(str::to_string),
        startup_ms: v["startupMs"].as_i64(),
        watch_ms: v["watchMs"].as_i64(),
        errors: v["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Plays `playback_id` from the server at `base` with plain hls.js (no Ferrocast script),
/// its CMCD v2 event reports going to `POST /v1/cmcd`, for `seconds` from the first frame.
/// Returns the page's JSON: `{sessionId, startupMs, playedS, fatal}`.
#[allow(dead_code)] // not every test binary uses it
pub async fn browser_cmcd_v2(base: &str, playback_id: &str, seconds: u32, timeout_s: u32) -> Value {
    browser_script(
        "cmcd_v2.cjs",
        vec![
            base.to_string(),
            playback_id.to_string(),
            seconds.to_string(),
            timeout_s.to_string(),
        ],
        u64::from(timeout_s) + 60,
    )
    .await
}

/// Runs `tests/browser/{script}` with `args` under node (its Chromium headless), killed past
/// `timeout_s`; returns the JSON line it prints.
pub async fn browser_script(script: &str, args: Vec<String>, timeout_s: u64) -> Value {
    let node_modules = std::env::var("BROWSER_TEST_NODE_MODULES").unwrap_or_else(|_| {
        format!(
            "{}/.cache/ferrocast/npm/node_modules",
            std::env::var("HOME").unwrap()
        )
    });
    let path = format!("{}/tests/browser/{script}", env!("CARGO_MANIFEST_DIR"));
    let what =
        format!("node {script} (Debian packages nodejs npm chromium; make test installs them)");
    let out = tokio::task::spawn_blocking(move || {
        super::output_within(
            Command::new("node")
                .env("NODE_PATH", &node_modules)
                .arg(&path)
                .args(&args),
            Duration::from_secs(timeout_s),
            &what,
        )
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "no JSON from {script}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Polls `check` every 200 ms until it returns `Some`, failing after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `seconds` of 720p30 test pattern with a 440 Hz tone (H.264 ultrafast, AAC) as `name`.
#[allow(dead_code)] // not every test binary uploads one
pub fn clip_720p(dir: &Path, name: &str, seconds: u32) -> PathBuf {
    let seconds = seconds.to_string();
    make_media(
        dir,
        name,
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440",
            "-t",
            &seconds,
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
        ],
    )
}

/// Makes a media file `name` in `dir` with ffmpeg `args`.
pub fn make_media(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let out = super::output_within(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args(args)
            .arg(&path),
        Duration::from_secs(120),
        "ffmpeg (Debian package ffmpeg)",
    );
    assert!(
        out.status.success(),
        "ffmpeg could not make {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// Uploads `file` with tus-js-client (tests/browser/tus_upload.cjs), which SIGKILLs itself
/// after `stop_after` bytes if not 0, or resumes `resume_url` if not empty; what it printed.
pub fn tus_upload(
    file: &Path,
    endpoint: &str,
    key: &str,
    stop_after: u64,
    resume_url: &str,
) -> Value {
    let node_modules = std::env::var("BROWSER_TEST_NODE_MODULES").unwrap_or_else(|_| {
        format!(
            "{}/.cache/ferrocast/npm/node_modules",
            std::env::var("HOME").unwrap()
        )
    });
    assert!(
        Path::new(&node_modules).join("tus-js-client").exists(),
        "tus-js-client is missing from {node_modules}: run make node-deps (make test does)"
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/tus_upload.cjs");
    let out = super::output_within(
        Command::new("node")
            .env("NODE_PATH", &node_modules)
            .arg(script)
            .arg(file)
            .args([endpoint, key, &stop_after.to_string(), resume_url]),
        Duration::from_secs(120),
        "node tus_upload.cjs (Debian packages nodejs npm)",
    );
    if stop_after > 0 {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            out.status.signal(),
            Some(9),
            "the tus client was to SIGKILL itself: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "tus client printed no JSON: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The attribute `name="…"` of the first line holding `marker`.
pub fn attribute<'a>(text: &'a str, marker: &str, name: &str) -> &'a str {
    let line = text
        .lines()
        .find(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("{marker} in {text}"));
    line.split(&format!("{name}=\""))
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
}

/// Frames ffmpeg decodes from `init` + `fragment` with `key` (stderr must stay silent), and
/// whether it complains without the key.
pub fn decrypted_frames(init: &[u8], fragment: &[u8], key: &[u8]) -> (usize, bool) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fragment.mp4");
    std::fs::write(&file, [init, fragment].concat()).unwrap();
    let decode = |key: Option<&[u8]>| {
        let mut cmd = std::process::Command::new("ffmpeg");
        cmd.args(["-hide_banner", "-loglevel", "error"]);
        if let Some(k) = key {
            cmd.args(["-decryption_key", &hex::encode(k)]);
        }
        cmd.arg("-i")
            .arg(&file)
            .args(["-f", "framemd5", "-"])
            .output()
            .unwrap()
    };
    let out = decode(Some(key));
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "decrypted frames decode cleanly: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let frames = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count();
    (frames, !decode(None).stderr.is_empty())
}

/// Decodes all of `url` (a playlist or a file) with ffmpeg, within `limit`; fails the test
/// if ffmpeg fails or reports any error (a corrupt or missing segment, a broken frame).
pub fn assert_decodes_cleanly(url: &str, limit: Duration) {
    let decode = super::output_within(
        Command::new("ffmpeg").args(["-hide_banner", "-v", "error", "-i", url, "-f", "null", "-"]),
        limit,
        "ffmpeg decoding (Debian package ffmpeg)",
    );
    let errors = String::from_utf8_lossy(&decode.stderr);
    assert!(decode.status.success(), "{url}: {decode:?}");
    assert!(
        errors.trim().is_empty(),
        "{url} decodes with errors: {errors}"
    );
}
