//! Helpers shared by the benchmarks (`mod common;` in each; a folder, so not a benchmark).
#![allow(dead_code)] // each benchmark uses part of it

#[path = "../../tests/common/process.rs"]
mod process;
pub use process::{output_within, wait_within};

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ADMIN_KEY: &str = "bench-admin-key-0123456789";

/// How long one HTTP request of a benchmark may take before it counts as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// An HTTP client whose every request gives up after [`REQUEST_TIMEOUT`].
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// [`http`], blocking.
pub fn http_blocking() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Failed requests of a polling loop, counted so that they are reported, not swallowed.
#[derive(Default)]
pub struct Failures {
    pub count: usize,
    last: String,
}

impl Failures {
    pub fn note(&mut self, what: impl std::fmt::Display) {
        self.count += 1;
        self.last = what.to_string();
    }
}

impl std::fmt::Display for Failures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.count {
            0 => write!(f, "no request failed"),
            n => write!(f, "{n} requests failed, the last: {}", self.last),
        }
    }
}

/// SIGKILLs a child (a server, a publisher no longer needed) and reaps it.
pub fn kill_child(mut child: Child, what: &str) {
    let _ = child.kill();
    wait_within(&mut child, Duration::from_secs(10), what);
}

/// Sends `signal` (`INT`, `TERM`) to process `pid` with kill(1).
pub fn send_signal(pid: u32, signal: &str) {
    output_within(
        Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string()),
        Duration::from_secs(10),
        "kill(1) (Debian package procps)",
    );
}

/// A release `ferrocast serve` with its folders under `dir`, on free loopback ports, logging
/// warnings only, plus `env` settings; returns it and its base URL.
pub fn spawn_server(dir: &Path, env: &[(&str, &str)]) -> (Child, String) {
    let (http, rtmp) = (free_port(), free_port());
    let server = Command::new(env!("CARGO_BIN_EXE_ferrocast"))
        .arg("serve")
        .env("FERROCAST_DATA_DIR", dir.join("data"))
        .env("FERROCAST_KEYS_DIR", dir.join("keys"))
        .env("FERROCAST_HTTP_LISTEN", format!("127.0.0.1:{http}"))
        .env("FERROCAST_RTMP_LISTEN", format!("127.0.0.1:{rtmp}"))
        .env("FERROCAST_ADMIN_KEY", ADMIN_KEY)
        .env("FERROCAST_LOG_FILTER", "warn")
        // The benchmarks drive the API far past any tier on purpose: what they measure is
        // the work behind it, not the rate limit.
        .env("FERROCAST_RATE_LIMITS_DEFAULT_TIER", "enterprise")
        .env("FERROCAST_RATE_LIMITS_ENTERPRISE_PER_MIN", "100000000")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    (server, format!("http://127.0.0.1:{http}"))
}

/// Waits for the server, then makes a tenant and a live stream (`stream` is the request
/// body); returns the tenant's API key and the stream as created.
pub async fn tenant_and_stream(
    base: &str,
    stream: serde_json::Value,
) -> (String, serde_json::Value) {
    let client = http();
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = client.get(format!("{base}/readyz")).send().await {
        assert!(
            Instant::now() < deadline,
            "waited 30 s for the server to answer {base}/readyz: {e}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    let tenant = post(
        "/v1/tenants",
        ADMIN_KEY,
        serde_json::json!({"name": "bench"}),
    )
    .await;
    let key = tenant["api_key"].as_str().unwrap().to_string();
    let stream = post("/v1/live-streams", &key, stream).await;
    (key, stream)
}

/// A tenant's ES256 signing key (`POST /v1/signing-keys`), to mint playback tokens as a
/// customer's backend does.
pub struct SigningKey {
    id: String,
    private_pem: String,
}

impl SigningKey {
    pub async fn create(base: &str, api_key: &str) -> Self {
        let resp = http()
            .post(format!("{base}/v1/signing-keys"))
            .bearer_auth(api_key)
            .json(&serde_json::json!({"algorithm": "ES256"}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST /v1/signing-keys: {e}"));
        assert!(resp.status().is_success(), "{}", resp.status());
        let key: serde_json::Value = resp.json().await.unwrap();
        Self {
            id: key["id"].as_str().unwrap().to_string(),
            private_pem: key["private_key"].as_str().unwrap().to_string(),
        }
    }

    /// A token for `playback_id`'s video and its keys (`aud` "v"), valid for an hour.
    pub fn token(&self, playback_id: &str) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.id.clone());
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600;
        jsonwebtoken::encode(
            &header,
            &serde_json::json!({"sub": playback_id, "aud": "v", "exp": exp}),
            &jsonwebtoken::EncodingKey::from_ec_pem(self.private_pem.as_bytes()).unwrap(),
        )
        .unwrap()
    }
}

/// `rtmp://…/live/STREAM_KEY` of a created stream.
pub fn publish_url(stream: &serde_json::Value) -> String {
    format!(
        "{}/{}",
        stream["rtmp_url"].as_str().unwrap(),
        stream["stream_key"].as_str().unwrap()
    )
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The CPU model, for the results' header.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The CPU time a process uses from `start` to `stop`, all its threads (those that end in
/// between too). `perf stat -e task-clock` counts it in nanoseconds; /proc counts it in
/// clock ticks (10 ms), which is 5 % of one publisher's CPU over 20 s, so it is used only
/// where perf cannot watch the process (not root, and `kernel.perf_event_paranoid` above 1,
/// as Debian sets it): [`CpuMeter::stop`] says which it was.
pub struct CpuMeter {
    pid: u32,
    perf: Option<(Child, tempfile::TempPath)>,
    proc_before: f64,
}

/// How a CPU time was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuSource {
    Perf,
    ProcTicks,
}

impl CpuMeter {
    pub fn start(pid: u32) -> Self {
        let out = tempfile::NamedTempFile::new().unwrap().into_temp_path();
        let perf = Command::new("perf")
            .args(["stat", "-x", ",", "-e", "task-clock", "-o"])
            .arg(&out)
            .args(["-p", &pid.to_string()])
            .env("LC_ALL", "C") // a decimal point, not a comma, in the CSV
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        // perf writes its header once it has attached; counting starts then.
        let deadline = Instant::now() + Duration::from_secs(3);
        while perf.is_some()
            && std::fs::metadata(&out).map_or(0, |m| m.len()) == 0
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        Self {
            pid,
            perf: perf.map(|p| (p, out)),
            proc_before: process_cpu(pid),
        }
    }

    /// CPU seconds since `start`, and how they were counted.
    pub fn stop(self) -> (f64, CpuSource) {
        let by_proc = (
            process_cpu(self.pid) - self.proc_before,
            CpuSource::ProcTicks,
        );
        let Some((mut perf, out)) = self.perf else {
            return by_proc;
        };
        send_signal(perf.id(), "INT");
        wait_within(
            &mut perf,
            Duration::from_secs(10),
            "perf stat to stop after SIGINT",
        );
        // CSV: "154.96,msec,task-clock,…"; "task-clock:u" (user time only, what perf falls
        // back to when it may not count the kernel's share) is not the whole CPU time.
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let msec = text
            .lines()
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find(|f| f.get(2) == Some(&"task-clock"))
            .and_then(|f| f[0].trim().parse::<f64>().ok());
        match msec {
            Some(ms) => (ms / 1000.0, CpuSource::Perf),
            None => {
                eprintln!("perf stat could not watch the process; CPU from /proc (10 ms ticks)");
                by_proc
            }
        }
    }
}

/// CPU seconds a process has used so far, from /proc.
pub fn process_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / clock_ticks()
}

/// CPU seconds used by finished children of this process (wait()ed for), from /proc.
pub fn children_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields[13].parse::<f64>().unwrap() + fields[14].parse::<f64>().unwrap();
    ticks / clock_ticks()
}

/// Kernel clock ticks per second (`getconf CLK_TCK`), the unit of /proc CPU times.
pub fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        let out = output_within(
            Command::new("getconf").arg("CLK_TCK"),
            Duration::from_secs(10),
            "getconf CLK_TCK (Debian package libc-bin)",
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(100.0)
    })
}

/// One line of the results table: Ferrocast's figure, and the peer it is compared with.
/// A measure with two peers (the ladder and VOD against ffmpeg as users run it and against
/// ffmpeg configured like Ferrocast) is two rows, one per peer, with the same measure.
pub struct Row {
    pub measure: String,
    pub ferrocast: String,
    /// Who the figure is compared with, and set up how; empty for a line without a peer.
    pub peer: String,
    pub peer_figure: String,
    /// Ferrocast's figure ÷ the peer's.
    pub ratio: String,
    pub goal: String,
}

/// The table's columns, in order; `results.json` stores each row as these cells.
pub const COLUMNS: [&str; 6] = [
    "Measure",
    "Ferrocast",
    "Peer",
    "Peer's figure",
    "Ratio (Ferrocast ÷ peer)",
    "Goal",
];

/// A line with no peer; [`Row::against`] adds one.
pub fn row(measure: &str, ferrocast: String, goal: &str) -> Row {
    Row {
        measure: measure.into(),
        ferrocast,
        peer: String::new(),
        peer_figure: String::new(),
        ratio: String::new(),
        goal: goal.into(),
    }
}

impl Row {
    /// Compared with `peer` (who, set up how), whose figure is `figure`.
    pub fn against(self, peer: &str, figure: String, ratio: String) -> Row {
        Row {
            peer: peer.into(),
            peer_figure: figure,
            ratio,
            ..self
        }
    }

    fn cells(&self) -> [&String; 6] {
        [
            &self.measure,
            &self.ferrocast,
            &self.peer,
            &self.peer_figure,
            &self.ratio,
            &self.goal,
        ]
    }
}

/// `a / b` as a ratio cell, `1.27×`.
pub fn ratio(a: f64, b: f64) -> String {
    format!("{:.2}×", a / b)
}

/// The benchmarks, in the table's order: each is `cargo bench --bench NAME`.
pub const SECTIONS: [&str; 10] = [
    "ladder",
    "ingest",
    "vod",
    "delivery",
    "keys",
    "webrtc",
    "cmaf",
    "analytics",
    "commerce",
    "chat",
];

/// Stores `rows` as `section`'s lines in `benches/results.json` (the other sections keep
/// theirs from their last run), re-renders `benches/results.md` as one table, with the
/// machine and the hand-written notes (from a line starting "Notes") kept, and prints it.
pub fn record(section: &str, rows: &[Row]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches");
    let json_path = dir.join("results.json");
    let mut all: serde_json::Map<String, serde_json::Value> = std::fs::read_to_string(&json_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    all.insert(
        section.into(),
        serde_json::json!({
            "machine": format!("{}, {cores} cores", cpu_model()),
            "rows": rows.iter().map(Row::cells).collect::<Vec<_>>(),
        }),
    );
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&all).unwrap() + "\n",
    )
    .unwrap();

    let mut machines: Vec<String> = Vec::new();
    let mut table = format!(
        "| {} |\n|{}\n",
        COLUMNS.join(" | "),
        "---|".repeat(COLUMNS.len())
    );
    for name in SECTIONS {
        let Some(s) = all.get(name) else { continue };
        let machine = s["machine"].as_str().unwrap_or("").to_string();
        if !machines.contains(&machine) {
            machines.push(machine);
        }
        for r in s["rows"].as_array().into_iter().flatten() {
            let cells: Vec<&str> = r
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| c.as_str().unwrap_or(""))
                .collect();
            assert_eq!(
                cells.len(),
                COLUMNS.len(),
                "results.json: a {name} row in an older layout; run `cargo bench --bench {name}`"
            );
            table.push_str(&format!("| {} |\n", cells.join(" | ")));
        }
    }
    let md_path = dir.join("results.md");
    let notes = std::fs::read_to_string(&md_path)
        .ok()
        .and_then(|old| old.find("\nNotes").map(|i| old[i..].to_string()))
        .unwrap_or_default();
    let text = format!(
        "# Ferrocast benchmarks\n\n\
         Machine: {}. Command: `make bench` (one section: `cargo bench --bench NAME`, NAME one of \
         {}). Each line is measured side by side with its peer in the same run; medians of 3 \
         alternated runs (5 for passthrough ingest); CPU figures are CPU time of the server \
         processes, not wall time. The ladder and VOD have two peers, a row each: ffmpeg as \
         users run it (libx264's own threads, every rung scaled from the source with bicubic \
         swscale), for information, and ffmpeg configured like Ferrocast (x264 threads=1, \
         bilinear scaling, each rung scaled from the next larger, Ferrocast's x264 settings), \
         against which the goal is judged. Live latency is timed from the first byte the \
         publisher sends. Every wait has a deadline: a benchmark that cannot finish fails, \
         saying what it waited for.\n\n\
         {table}{notes}",
        machines.join("; "),
        SECTIONS.join(", ")
    );
    std::fs::write(&md_path, &text).unwrap();
    println!("\n{text}");
    eprintln!("written to {}", md_path.display());
}

/// `seconds` of `height`p30 H.264 (x264 veryfast: B-frames, 2 s GOP) + AAC as FLV, made once
/// under `work`.
pub fn make_input(work: &Path, height: u32, seconds: u32) -> std::path::PathBuf {
    let width = height * 16 / 9;
    let kbps = match height {
        1080.. => 6000,
        720.. => 4000,
        _ => 2000,
    };
    let path = work.join(format!("in{height}-{seconds}s.flv"));
    if !path.exists() {
        // Written under another name first: a run stopped half-way must not leave a short input.
        let partial = path.with_extension("partial.flv");
        let out = output_within(
            Command::new("ffmpeg")
                .args(["-hide_banner", "-loglevel", "error", "-y"])
                .args([
                    "-f",
                    "lavfi",
                    "-i",
                    &format!("testsrc2=size={width}x{height}:rate=30"),
                ])
                .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
                .args(["-t", &seconds.to_string(), "-c:v", "libx264"])
                .args(["-preset", "veryfast", "-b:v", &format!("{kbps}k")])
                .args(["-g", "60", "-keyint_min", "60", "-sc_threshold", "0"])
                .args([
                    "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", "-f", "flv",
                ])
                .arg(&partial),
            Duration::from_secs(600),
            "ffmpeg making the input (Debian package ffmpeg)",
        );
        assert!(
            out.status.success(),
            "could not make the input: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::rename(&partial, &path).unwrap();
    }
    path
}

/// What `wrk --latency` reported.
pub struct WrkResult {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// `wrk -t2 -c CONNECTIONS -d SECONDS --latency [-s SCRIPT] URL`; every response must be 2xx.
pub fn wrk(url: &str, connections: u32, seconds: u32, script: Option<&Path>) -> WrkResult {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t", "2", "-c", &connections.to_string()]).args([
        "-d",
        &format!("{seconds}s"),
        "--latency",
    ]);
    if let Some(s) = script {
        cmd.arg("-s").arg(s);
    }
    let out = output_within(
        cmd.arg(url),
        Duration::from_secs(u64::from(seconds) + 30),
        "wrk (Debian package wrk; make installs it)",
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("Non-2xx"),
        "some requests were refused: {text}"
    );
    let field = |prefix: &str| -> &str {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in wrk output: {text}"))
            .trim()
    };
    WrkResult {
        rps: field("Requests/sec:").parse().unwrap(),
        p50_ms: millis(field("50%")),
        p99_ms: millis(field("99%")),
    }
}

/// wrk's `1.23ms` / `456.00us` / `1.20s` as milliseconds.
fn millis(v: &str) -> f64 {
    if let Some(n) = v.strip_suffix("us") {
        n.parse::<f64>().unwrap() / 1000.0
    } else if let Some(n) = v.strip_suffix("ms") {
        n.parse().unwrap()
    } else if let Some(n) = v.strip_suffix('s') {
        n.parse::<f64>().unwrap() * 1000.0
    } else {
        panic!("unexpected wrk latency {v:?}")
    }
}

/// Resident memory of a process now, in MiB (VmRSS).
pub fn process_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A peer's config from `benches/NAME` with `@KEY@` placeholders filled in, written to `dir`.
pub fn peer_config(name: &str, dir: &Path, vars: &[(&str, String)]) -> std::path::PathBuf {
    let template = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("benches")
        .join(name);
    let mut text = std::fs::read_to_string(&template).unwrap();
    for (k, v) in vars {
        text = text.replace(&format!("@{k}@"), v);
    }
    assert!(!text.contains("@"), "unfilled placeholder in {name}");
    let out = dir.join(name);
    std::fs::write(&out, text).unwrap();
    out
}

/// `nginx -p DIR -c CONF` in the foreground (the config says `daemon off`), once it accepts
/// connections on `port`.
pub fn spawn_nginx(dir: &Path, conf: &Path, port: u16) -> Child {
    let mut nginx = Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(conf)
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdin(Stdio::null())
        .spawn()
        .expect("nginx (Debian packages nginx, libnginx-mod-rtmp; make bench installs them)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = nginx.try_wait().unwrap() {
            panic!(
                "nginx exited ({status}): {}",
                std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "waited 10 s for nginx to accept connections on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    nginx
}

/// Stops an nginx started by [`spawn_nginx`]: SIGTERM to the master, which stops its workers
/// (SIGKILL would leave them running), then waits for it.
pub fn stop_nginx(mut nginx: Child) {
    send_signal(nginx.id(), "TERM");
    wait_within(
        &mut nginx,
        Duration::from_secs(10),
        "nginx to stop after SIGTERM",
    );
}

/// Runs a Node script of this repository (`path` from its root) with playwright-core from the
/// node_modules `make` installs, for at most `limit`; returns the JSON report it prints.
pub fn node_script(path: &str, args: &[&str], limit: Duration) -> serde_json::Value {
    let node_modules = std::env::var("BROWSER_TEST_NODE_MODULES").unwrap_or_else(|_| {
        format!(
            "{}/.cache/ferrocast/npm/node_modules",
            std::env::var("HOME").unwrap()
        )
    });
    let out = output_within(
        Command::new("node")
            .env("NODE_PATH", node_modules)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
            .args(args),
        limit,
        &format!("node {path} (Debian package nodejs; make installs playwright-core)"),
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "{path}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The default ladder's encoded rungs (`pipelines/default.toml`) at or below `height`:
/// (height, kbps, profile).
pub fn rungs(height: u32) -> Vec<(u32, u32, &'static str)> {
    [
        (1080, 5000, "high"),
        (720, 2800, "high"),
        (480, 1400, "main"),
        (360, 800, "main"),
    ]
    .into_iter()
    .filter(|r| r.0 <= height)
    .collect()
}

/// The ffmpeg a ladder line (live or VOD) is compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ffmpeg {
    /// The command as users write it: libx264 with its own threads (sliced threads under
    /// `-tune zerolatency`), every rung scaled from the source by swscale's default bicubic,
    /// each rung a separate output (audio copied; for VOD the MP4 copied from the source).
    AsUsersRunIt,
    /// Configured like Ferrocast's pipeline (`src/pipeline/ladder.rs`, `vod/transcode.rs`): x264
    /// `threads=1` (`-threads 1`; x264's settings string then matches x264enc's), bilinear
    /// scaling on one filter thread, each rung scaled from the next larger one, and for VOD
    /// the AAC encoded once for every rendition and the MP4 muxed from the 720p encode.
    LikeFerrocast,
}

impl Ffmpeg {
    pub const BOTH: [Ffmpeg; 2] = [Ffmpeg::AsUsersRunIt, Ffmpeg::LikeFerrocast];

    /// The peer cell of the results table.
    pub fn peer(self) -> &'static str {
        match self {
            Ffmpeg::AsUsersRunIt => {
                "ffmpeg as users run it (libx264 default threads, bicubic from the source)"
            }
            Ffmpeg::LikeFerrocast => {
                "ffmpeg configured like Ferrocast (x264 threads=1, bilinear, each rung from \
                 the next larger)"
            }
        }
    }

    /// Short, for progress lines.
    pub fn name(self) -> &'static str {
        match self {
            Ffmpeg::AsUsersRunIt => "ffmpeg as users run it",
            Ffmpeg::LikeFerrocast => "ffmpeg configured like Ferrocast",
        }
    }

    /// The goal cell: the parity goal is judged against the like-for-like peer only.
    pub fn goal(self, goal: &str) -> String {
        match self {
            Ffmpeg::AsUsersRunIt => "(for information)".into(),
            Ffmpeg::LikeFerrocast => goal.into(),
        }
    }
}

/// ffmpeg arguments that produce Ferrocast's default ladder from `input` (`height`p) as HLS
/// under `out`, as `peer` runs it: decode once, the source copied as a rendition of its own,
/// each rung encoded with the x264 settings Ferrocast gives x264enc (`ladder::x264_encoder`:
/// the preset's speed, CBR with x264enc's 600 ms VBV buffer, a fixed 2 s GOP, no scenecut, no
/// B-frames, the rung's profile). `vod: false`: read in real time (`-re`) with
/// `tune=zerolatency`, as the live ladder; `true`: as fast as the CPUs allow, without it, plus
/// the MP4 download, as a VOD job.
pub fn ffmpeg_ladder_args(
    input: &Path,
    out: &Path,
    height: u32,
    vod: bool,
    peer: Ffmpeg,
) -> Vec<String> {
    let rungs = rungs(height);
    let mut a: Vec<String> = ["-hide_banner", "-loglevel", "error", "-y"]
        .map(String::from)
        .into();
    if !vod {
        a.push("-re".into());
    }
    a.extend(["-i".into(), input.display().to_string()]);
    if peer == Ffmpeg::LikeFerrocast {
        // videoscale n-threads=1.
        a.extend(["-filter_complex_threads", "1"].map(String::from));
    }
    a.extend(["-filter_complex".into(), scale_graph(height, &rungs, peer)]);
    // What every encoded rung shares.
    let mut x264: Vec<String> = ["-c:v", "libx264", "-preset", "veryfast"]
        .map(String::from)
        .into();
    if !vod {
        x264.extend(["-tune", "zerolatency"].map(String::from));
    }
    x264.extend(
        [
            "-g",
            "60",
            "-keyint_min",
            "60",
            "-sc_threshold",
            "0",
            "-bf",
            "0",
        ]
        .map(String::from),
    );
    if peer == Ffmpeg::LikeFerrocast {
        a.extend(like_ferrocast_outputs(out, &rungs, vod, x264));
        return a;
    }
    let hls = |name: &str| -> Vec<String> {
        ["-f", "hls", "-hls_time", "2", "-hls_list_size", "0"]
            .map(String::from)
            .into_iter()
            .chain([out.join(format!("{name}.m3u8")).display().to_string()])
            .collect()
    };
    // The source rendition is copied, as Ferrocast's passthrough does.
    a.extend(["-map", "0:v", "-map", "0:a", "-c", "copy"].map(String::from));
    a.extend(hls("source"));
    for &(h, kbps, profile) in &rungs {
        a.extend([
            "-map".into(),
            format!("[v{h}]"),
            "-map".into(),
            "0:a".into(),
        ]);
        a.extend(x264.iter().cloned());
        a.extend(["-profile:v".into(), profile.into()]);
        a.extend(rate_control(kbps, ":v"));
        a.extend(["-c:a", "copy"].map(String::from));
        a.extend(hls(&format!("v{h}")));
    }
    if vod {
        // The MP4 download, copied from the source.
        a.extend(
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
        a.push(out.join("download.mp4").display().to_string());
    }
    a
}

/// x264enc's rate control for `kbps` (CBR: the bitrate is also the VBV's maximum rate, with a
/// 600 ms buffer) for the streams `stream` names (`:v`, `:v:1`).
fn rate_control(kbps: u32, stream: &str) -> Vec<String> {
    vec![
        format!("-b{stream}"),
        format!("{kbps}k"),
        format!("-maxrate{stream}"),
        format!("{kbps}k"),
        format!("-bufsize{stream}"),
        format!("{}k", kbps * 6 / 10),
    ]
}

/// The filter graph from the decoded source to `[v{height}]` for every rung. As users run it:
/// split once, every rung scaled from the source (swscale's default bicubic). Like Ferrocast
/// (`ladder::build_branches` with chained scaling): each rung scaled bilinearly from the next
/// larger, a rung of the source's size not scaled. Neither converts the colour matrix
/// (Ferrocast pins each rung to its input's colorimetry; swscale keeps it unless told).
fn scale_graph(height: u32, rungs: &[(u32, u32, &str)], peer: Ffmpeg) -> String {
    let width = |h: u32| (h * 16 / 9).div_ceil(2) * 2;
    let mut graph = Vec::new();
    match peer {
        Ffmpeg::AsUsersRunIt => {
            let labels: String = rungs.iter().map(|r| format!("[s{}]", r.0)).collect();
            graph.push(format!("[0:v]split={}{labels}", rungs.len()));
            for &(h, ..) in rungs {
                graph.push(if h == height {
                    format!("[s{h}]null[v{h}]")
                } else {
                    format!("[s{h}]scale={}:{h}[v{h}]", width(h))
                });
            }
        }
        Ffmpeg::LikeFerrocast => {
            let mut from = "0:v".to_string();
            for (i, &(h, ..)) in rungs.iter().enumerate() {
                let scale = if h == height {
                    "null".to_string()
                } else {
                    format!("scale={}:{h}:flags=bilinear", width(h))
                };
                if i + 1 == rungs.len() {
                    graph.push(format!("[{from}]{scale}[v{h}]"));
                } else {
                    graph.push(format!("[{from}]{scale},split=2[v{h}][c{h}]"));
                    from = format!("c{h}");
                }
            }
        }
    }
    graph.join(";")
}

/// The outputs of [`Ffmpeg::LikeFerrocast`]: one `tee` output holding every rendition, so each
/// encode is done once and muxed where Ferrocast muxes it: the rungs (video streams 0..n), the
/// source copied (stream n) and the audio (copied live; for VOD encoded once to AAC-LC
/// 128 kbit/s, as Ferrocast's avenc_aac) into every HLS rendition, and for VOD the 720p
/// encode (the largest rung, `Mp4Source::Largest`) also into the faststart MP4.
fn like_ferrocast_outputs(
    out: &Path,
    rungs: &[(u32, u32, &str)],
    vod: bool,
    x264: Vec<String>,
) -> Vec<String> {
    let dir = out.display().to_string();
    assert!(
        !dir.contains(['|', '[', ']', ':', '\\', '\'']),
        "the tee muxer cannot take {dir:?}"
    );
    let mut a = Vec::new();
    for &(h, ..) in rungs {
        a.extend(["-map".into(), format!("[v{h}]")]);
    }
    a.extend(["-map", "0:v", "-map", "0:a"].map(String::from));
    a.extend(x264);
    for (i, &(_, kbps, profile)) in rungs.iter().enumerate() {
        a.extend([format!("-profile:v:{i}"), profile.into()]);
        a.extend(rate_control(kbps, &format!(":v:{i}")));
    }
    a.extend([format!("-c:v:{}", rungs.len()), "copy".into()]);
    if vod {
        a.extend(["-c:a", "aac", "-b:a", "128k"].map(String::from));
    } else {
        a.extend(["-c:a", "copy"].map(String::from));
    }
    // x264enc threads=1 (the audio encoder is single-threaded anyway).
    a.extend(["-threads", "1"].map(String::from));
    let hls = |stream: usize, name: &str| {
        format!("[select=\\'v:{stream},a\\':f=hls:hls_time=2:hls_list_size=0]{dir}/{name}.m3u8")
    };
    let mut slaves = vec![hls(rungs.len(), "source")];
    for (i, &(h, ..)) in rungs.iter().enumerate() {
        slaves.push(hls(i, &format!("v{h}")));
    }
    if vod {
        slaves.push(format!(
            "[select=\\'v:0,a\\':f=mp4:movflags=+faststart]{dir}/download.mp4"
        ));
    }
    a.extend(["-f".into(), "tee".into(), slaves.join("|")]);
    a
}
