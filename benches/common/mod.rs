//! Helpers shared by the benchmarks (`mod common;` in each; a folder, so not a benchmark).
#![allow(dead_code)] // each benchmark uses part of it

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ADMIN_KEY: &str = "bench-admin-key-0123456789";

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
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(format!("{base}/readyz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "server did not start");
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
        let _ = Command::new("kill")
            .args(["-INT", &perf.id().to_string()])
            .status();
        let _ = perf.wait();
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
        let out = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .expect("getconf");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(100.0)
    })
}

/// One line of the results table.
pub struct Row {
    pub measure: String,
    pub ferrocast: String,
    pub peer: String,
    pub ratio: String,
    pub goal: String,
}

pub fn row(measure: &str, ferrocast: String, peer: String, ratio: String, goal: &str) -> Row {
    Row {
        measure: measure.into(),
        ferrocast,
        peer,
        ratio,
        goal: goal.into(),
    }
}

/// `a / b` as a ratio cell, `1.27×`.
pub fn ratio(a: f64, b: f64) -> String {
    format!("{:.2}×", a / b)
}

/// The benchmarks, in the table's order: each is `cargo bench --bench NAME`.
pub const SECTIONS: [&str; 6] = ["ladder", "ingest", "vod", "delivery", "keys", "webrtc"];

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
            "rows": rows.iter().map(|r| [&r.measure, &r.ferrocast, &r.peer, &r.ratio, &r.goal])
                .collect::<Vec<_>>(),
        }),
    );
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&all).unwrap() + "\n",
    )
    .unwrap();

    let mut machines: Vec<String> = Vec::new();
    let mut table =
        String::from("| Measure | Ferrocast | Peer | Ratio | Goal |\n|---|---|---|---|---|\n");
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
         processes, not wall time.\n\n\
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
        let ok = Command::new("ffmpeg")
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
            .arg(&path)
            .status()
            .expect("ffmpeg (Debian package ffmpeg)")
            .success();
        assert!(ok, "could not make the input");
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
    let out = cmd
        .arg(url)
        .output()
        .expect("wrk (Debian package wrk; make installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "wrk failed: {text}");
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
        assert!(Instant::now() < deadline, "nginx did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    nginx
}

/// Stops an nginx started by [`spawn_nginx`]: SIGTERM to the master, which stops its workers
/// (SIGKILL would leave them running), then waits for it.
pub fn stop_nginx(mut nginx: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &nginx.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while nginx.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = nginx.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = nginx.wait();
}

/// Runs a Node script of this repository (`path` from its root) with playwright-core from the
/// node_modules `make` installs; returns the JSON report it prints.
pub fn node_script(path: &str, args: &[&str]) -> serde_json::Value {
    let node_modules = std::env::var("BROWSER_TEST_NODE_MODULES").unwrap_or_else(|_| {
        format!(
            "{}/.cache/ferrocast/npm/node_modules",
            std::env::var("HOME").unwrap()
        )
    });
    let out = Command::new("node")
        .env("NODE_PATH", node_modules)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .args(args)
        .output()
        .expect("node (make installs playwright-core)");
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

/// ffmpeg arguments that produce Ferrocast's default ladder from `input` (`height`p) as HLS
/// under `out`: decode once, split, scale once per size, the source and the audio copied, and
/// each rung encoded with the x264 settings Ferrocast gives x264enc. `live`: read in real time
/// (`-re`) with `tune=zerolatency`, as the live ladder; otherwise as fast as the CPUs allow,
/// as a VOD job.
pub fn ffmpeg_ladder_args(input: &Path, out: &Path, height: u32, live: bool) -> Vec<String> {
    let hls = |name: &str| -> Vec<String> {
        ["-f", "hls", "-hls_time", "2", "-hls_list_size", "0"]
            .iter()
            .map(|s| s.to_string())
            .chain([out.join(format!("{name}.m3u8")).display().to_string()])
            .collect()
    };
    let x264 = |kbps: u32, profile: &str, name: &str| -> Vec<String> {
        let mut a: Vec<String> = [
            "-map",
            &format!("[{name}]"),
            "-map",
            "0:a",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if live {
            a.extend(["-tune", "zerolatency"].map(String::from));
        }
        a.extend(
            [
                "-profile:v",
                profile,
                // x264enc's defaults: CBR with a 600 ms VBV buffer.
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
            ]
            .map(String::from),
        );
        a.extend(hls(name));
        a
    };
    let mut args: Vec<String> = ["-hide_banner", "-loglevel", "error", "-y"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if live {
        args.push("-re".into());
    }
    args.push("-i".into());
    args.push(input.display().to_string());
    // Decode once, split, scale once per size (the source size is not scaled).
    let rungs = rungs(height);
    let mut graph = format!("[0:v]split={}", rungs.len());
    for r in &rungs {
        graph.push_str(&format!("[s{}]", r.0));
    }
    for r in &rungs {
        if r.0 == height {
            graph.push_str(&format!(";[s{0}]null[v{0}]", r.0));
        } else {
            graph.push_str(&format!(
                ";[s{0}]scale={1}:{0}[v{0}]",
                r.0,
                (r.0 * 16 / 9).div_ceil(2) * 2
            ));
        }
    }
    args.push("-filter_complex".into());
    args.push(graph);
    // The source rendition is copied, as Ferrocast's passthrough does.
    args.extend(["-map", "0:v", "-map", "0:a", "-c", "copy"].map(String::from));
    args.extend(hls("source"));
    for r in &rungs {
        args.extend(x264(r.1, r.2, &format!("v{}", r.0)));
    }
    args
}
