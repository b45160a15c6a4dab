//! `make bench`: live chat fan-out.
//!
//! A release `ferrocast serve` (SQLite) with one public live stream and 500 WebSocket
//! clients in its chat, from 25 loopback addresses (127.0.0.2 …, 20 each: the most one
//! address may hold, as 500 real viewers come from many). Senders whose tokens name them
//! each send one message a second (within flood control) carrying the time it was sent;
//! every client notes when each message reaches it. **Fan-out latency**: from the send to
//! its arrival at each of the 500 clients (p50 / p95 / p99 / max), at 10 and then 50
//! messages a second (5,000 and 25,000 deliveries a second). Clients and server share the
//! machine's two cores, so the figures include the clients' own scheduling. No peer: the
//! goal is the (p95 < 100 ms); slow readers not delaying others is a test
//! (tests/chat.rs).

mod common;
use common::*;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const CLIENTS: usize = 500;
const PER_ADDRESS: usize = 20;
const RATES: [usize; 2] = [10, 50];
const SECONDS: u64 = 10;

fn main() {
    let work = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (server, base) = spawn_server(
        work.path(),
        &[("FERROCAST_HTTP_MAX_PENDING_PER_IP", "1024")],
    );
    let runs = rt.block_on(run(&base));
    kill_child(server, "ferrocast serve");
    let mut rows = Vec::new();
    for mut r in runs {
        let n = r.latencies.len();
        let (p50, p95, p99) = (
            percentile(&mut r.latencies, 0.50),
            percentile(&mut r.latencies, 0.95),
            percentile(&mut r.latencies, 0.99),
        );
        let max = r.latencies.iter().copied().fold(0.0, f64::max);
        rows.push(row(
            &format!(
                "Chat fan-out to {CLIENTS} clients, {} messages/s for {SECONDS} s ({n} deliveries of {} expected, {} clients dropped): p50 / p95 / p99 / max",
                r.rate, r.expected, r.dropped
            ),
            format!("{p50:.1} / {p95:.1} / {p99:.1} / {max:.1} ms"),
            "p95 < 100 ms",
        ));
    }
    record("chat", &rows);
}

struct RunResult {
    rate: usize,
    latencies: Vec<f64>,
    expected: usize,
    dropped: usize,
}

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// One client's deliveries: (message number, latency in ms).
type Deliveries = Arc<std::sync::Mutex<Vec<(usize, f64)>>>;

/// A WebSocket to `url` from local address `from`.
async fn connect(server: SocketAddr, from: IpAddr, url: &str) -> Socket {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let stream = socket.connect(server).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    ws
}

async fn run(base: &str) -> Vec<RunResult> {
    let (key, stream) = tenant_and_stream(base, json!({"playback_policy": "public"})).await;
    let playback_id = stream["playback_id"].as_str().unwrap().to_string();
    let server: SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    let url = format!("ws://{server}/chat/{playback_id}");
    let start = Instant::now();
    let mut seen: Vec<Deliveries> = Vec::new();
    let dropped = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for i in 0..CLIENTS {
        let from = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i / PER_ADDRESS) as u8));
        let mut ws = connect(server, from, &url).await;
        let mine: Deliveries = Arc::default();
        seen.push(mine.clone());
        let dropped = dropped.clone();
        readers.push(tokio::spawn(async move {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => {
                        let at = start.elapsed().as_secs_f64() * 1000.0;
                        let v: Value = serde_json::from_str(&t).unwrap_or_default();
                        if v["type"] == "message"
                            && let Some((n, sent)) = v["text"]
                                .as_str()
                                .and_then(|t| t.split_once(' '))
                                .and_then(|(n, s)| Some((n.parse().ok()?, s.parse::<f64>().ok()?)))
                        {
                            mine.lock().unwrap().push((n, at - sent));
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Some(Ok(_)) => {}
                }
            }
        }));
    }
    // Senders: one per message a second, from their own address, named by a token.
    let client = http();
    let max_rate = *RATES.iter().max().unwrap();
    let mut senders = Vec::new();
    for i in 0..max_rate {
        let t: Value = client
            .post(format!("{base}/v1/playback-tokens"))
            .bearer_auth(&key)
            .json(&json!({"playback_id": playback_id, "viewer": format!("sender-{i}")}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let from = IpAddr::V4(Ipv4Addr::new(127, 0, 1, 2 + i as u8));
        let url = format!("{url}?token={}", t["token"].as_str().unwrap());
        let (sink, mut stream) = connect(server, from, &url).await.split();
        // A sender reads the room too (else the server drops it as too slow).
        tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
        senders.push(sink);
    }
    let mut results = Vec::new();
    let mut number = 0usize;
    for rate in RATES {
        let first = number;
        let tick = Duration::from_secs_f64(1.0 / rate as f64);
        let mut next = Instant::now();
        for k in 0..(rate * SECONDS as usize) {
            tokio::time::sleep_until(next.into()).await;
            next += tick;
            let sent = start.elapsed().as_secs_f64() * 1000.0;
            let text = format!("{number} {sent:.3}");
            number += 1;
            senders[k % rate]
                .send(Message::Text(
                    json!({"type": "send", "text": text}).to_string().into(),
                ))
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let got: Vec<(usize, f64)> = seen
            .iter()
            .flat_map(|m| std::mem::take(&mut *m.lock().unwrap()))
            .filter(|(n, _)| *n >= first)
            .collect();
        let alive = CLIENTS - dropped.load(Ordering::Relaxed);
        results.push(RunResult {
            rate,
            latencies: got.iter().map(|(_, ms)| *ms).collect(),
            expected: alive * (number - first),
            dropped: CLIENTS - alive,
        });
    }
    drop(senders);
    for r in readers {
        r.abort();
    }
    results
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}
