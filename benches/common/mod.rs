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
