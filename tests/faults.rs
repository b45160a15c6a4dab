//! Faults injected into a running `ferrocast serve` binary (#27): SIGKILLed in the middle of
//! a tus upload and in the middle of the transcode that follows. Each finishes after a
//! restart, once: the client resumes from the offset the server kept, the file is whole, and
//! the transcode is taken again when its lease lapses and ends `ready` with a single
//! `asset.ready`.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::media::{eventually, make_media, tus_upload};
use common::process::KillOnDrop;
use serde_json::{Value, json};

/// A `ferrocast serve` process on its own data folder and port.
struct Node {
    dir: tempfile::TempDir,
    port: u16,
    admin: &'static str,
    process: Option<KillOnDrop>,
    client: reqwest::Client,
}

impl Node {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            port: common::free_port(),
            admin: "fc_admin_faults_test_0123456789abcdef0123456789ab",
            process: None,
            client: common::http_client(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Starts the binary and waits for it to serve.
    async fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ferrocast"))
            .arg("serve")
            .env("FERROCAST_DATA_DIR", self.dir.path().join("data"))
            .env("FERROCAST_KEYS_DIR", self.dir.path().join("keys"))
            .env("FERROCAST_HTTP_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("FERROCAST_RTMP_LISTEN", "127.0.0.1:0")
            .env("FERROCAST_ADMIN_KEY", self.admin)
            .env("FERROCAST_JOBS_LEASE_S", "5")
            .env("FERROCAST_WEBHOOKS_ALLOW_PRIVATE_TARGETS", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("ferrocast serve starts");
        self.process = Some(KillOnDrop(child));
        let health = self.url("/healthz");
        eventually("the server to serve", Duration::from_secs(30), || async {
            let r = self.client.get(&health).send().await;
            r.is_ok_and(|r| r.status().is_success()).then_some(())
        })
        .await;
    }

    /// SIGKILL: no shutdown of any kind.
    fn kill(&mut self) {
        drop(self.process.take());
    }

    async fn call(&self, method: &str, path: &str, key: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .client
            .request(method.parse().unwrap(), self.url(path))
            .bearer_auth(key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        match req.send().await {
            Ok(r) => (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            ),
            Err(_) => (0, Value::Null),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_sigkilled_mid_upload_and_mid_transcode_finishes_each_once_after_restart() {
    let media = tempfile::tempdir().unwrap();
    let file = make_media(
        media.path(),
        "long.mp4",
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
            "20",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
        ],
    );
    let size = std::fs::metadata(&file).unwrap().len();
    let mut node = Node::new();
    node.start().await;
    let (status, t) = node
        .call(
            "POST",
            "/v1/tenants",
            node.admin,
            Some(json!({"name": "Faults"})),
        )
        .await;
    assert_eq!(status, 201, "{t}");
    let key = t["api_key"].as_str().unwrap().to_string();
    // Lifecycle events go to an endpoint that is down: the outbox says what happened, and
    // how often.
    let (status, endpoint) = node
        .call(
            "POST",
            "/v1/webhook-endpoints",
            &key,
            Some(json!({"url": format!("http://127.0.0.1:{}/down", common::free_port()), "events": ["asset.ready", "upload.completed"]})),
        )
        .await;
    assert_eq!(status, 201, "{endpoint}");

    // The upload: tus-js-client in the background; the server is SIGKILLed once a third of
    // the file is stored, in the middle of a PATCH. The client's retries run out while it is
    // down.
    let (endpoint_url, file_path, client_key) =
        (node.url("/v1/uploads"), file.clone(), key.clone());
    let first = tokio::task::spawn_blocking(move || {
        tus_upload(&file_path, &endpoint_url, &client_key, 0, "")
    });
    let parts = node.dir.path().join("data").join("uploads");
    eventually("a third stored", Duration::from_secs(60), || async {
        // The stored part of the upload, on disk (data/uploads/ID.part).
        let stored = walk(&parts)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "part"))
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .max()
            .unwrap_or(0);
        (stored > size / 3).then_some(())
    })
    .await;
    node.kill();
    let report = first.await.unwrap();
    assert_eq!(report["finished"], false, "{report}");
    let url = report["url"]
        .as_str()
        .expect("the upload's URL")
        .to_string();
    node.start().await;
    let resumed = {
        let (file, key, url) = (file.clone(), key.clone(), url.clone());
        let endpoint = node.url("/v1/uploads");
        tokio::task::spawn_blocking(move || tus_upload(&file, &endpoint, &key, 0, &url))
            .await
            .unwrap()
    };
    assert_eq!(resumed["finished"], true, "{resumed}");
    assert_eq!(
        resumed["url"],
        url.as_str(),
        "the same upload resumed: {resumed}"
    );

    // The transcode: SIGKILLed once it has made progress; taken again after its lease.
    let asset = eventually(
        "the transcode to make progress",
        Duration::from_secs(90),
        || async {
            let (_, list) = node.call("GET", "/v1/assets", &key, None).await;
            list["data"]
                .as_array()
                .and_then(|a| a.first().cloned())
                .filter(|a| {
                    a["status"] == "processing" && a["progress"].as_f64().unwrap_or(0.0) > 0.0
                })
        },
    )
    .await;
    let id = asset["id"].as_str().unwrap().to_string();
    node.kill();
    node.start().await;
    let ready = eventually(
        "the asset to be ready",
        Duration::from_secs(180),
        || async {
            let (_, a) = node
                .call("GET", &format!("/v1/assets/{id}"), &key, None)
                .await;
            (a["status"] == "ready" || a["status"] == "errored").then_some(a)
        },
    )
    .await;
    assert_eq!(ready["status"], "ready", "{ready}\n{}", node.log());
    let duration = ready["duration_s"].as_f64().unwrap();
    assert!(
        (19.0..=21.0).contains(&duration),
        "{duration} s of a 20 s file"
    );
    // Whole: the HLS of it plays to its end without a decoding error.
    let (_, token) = node
        .call(
            "POST",
            "/v1/playback-tokens",
            &key,
            Some(json!({"playback_id": ready["playback_id"], "expires_in": 600})),
        )
        .await;
    let master = node.url(&format!(
        "/hls/{}/master.m3u8?token={}",
        ready["playback_id"].as_str().unwrap(),
        token["token"].as_str().unwrap_or_default()
    ));
    let decode = common::process::output_within(
        Command::new("ffmpeg").args([
            "-hide_banner",
            "-v",
            "error",
            "-i",
            &master,
            "-f",
            "null",
            "-",
        ]),
        Duration::from_secs(120),
        "ffmpeg decoding the asset",
    );
    assert!(decode.status.success(), "{decode:?}");
    assert!(
        String::from_utf8_lossy(&decode.stderr).trim().is_empty(),
        "{}",
        String::from_utf8_lossy(&decode.stderr)
    );
    // Once: one upload.completed and one asset.ready in the outbox.
    let deliveries = format!(
        "/v1/webhook-endpoints/{}/deliveries",
        endpoint["id"].as_str().unwrap()
    );
    let types = eventually("both events", Duration::from_secs(20), || async {
        let (_, log) = node.call("GET", &deliveries, &key, None).await;
        let mut types: Vec<String> = log["data"]
            .as_array()?
            .iter()
            .filter_map(|d| d["event_type"].as_str().map(String::from))
            .collect();
        types.sort();
        (types.len() >= 2).then_some(types)
    })
    .await;
    assert_eq!(types, ["asset.ready", "upload.completed"]);
    node.kill();
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
