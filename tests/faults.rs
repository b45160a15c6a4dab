//! Faults injected into a running server (#27):
//! - the `ferrocast serve` binary SIGKILLed in the middle of a tus upload and in the middle of
//!   the transcode that follows: each finishes after a restart, once (the client resumes from
//!   the offset the server kept, the file is whole, the transcode is taken again when its
//!   lease lapses and ends `ready` with a single `asset.ready`);
//! - its PostgreSQL (a private instance, so that no other test sees it go) restarted in the
//!   middle of a recorded broadcast and of an upload: the broadcast goes on and ends whole,
//!   the upload finishes, and nothing is there twice;
//! - the object store's disk full (a tmpfs of its own, filled) during a recorded broadcast:
//!   writes wait with the reason in the log, and when space returns the broadcast goes on and
//!   its recording is whole, every object readable;
//! - one node's wall clock jumping an hour forward and back (libfaketime) beside a node
//!   whose clock is right, on one PostgreSQL: leases and shared rate limits keep to the
//!   database's clock, tokens to each node's own.

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::TestServer;
use common::media::{clip_720p, eventually, ffmpeg_publish, make_media, tus_upload};
use common::process::KillOnDrop;
use serde_json::{Value, json};

/// A `ferrocast serve` process on its own data folder and port.
struct Node {
    dir: tempfile::TempDir,
    port: u16,
    admin: &'static str,
    process: Option<KillOnDrop>,
    client: reqwest::Client,
    env: Vec<(String, String)>,
}

impl Node {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            port: common::free_port(),
            admin: "fc_admin_faults_test_0123456789abcdef0123456789ab",
            process: None,
            client: common::http_client(),
            env: Vec::new(),
        }
    }

    /// Also sets `key` in the process's environment.
    fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
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
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
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
    let file = clip_720p(media.path(), "long.mp4", 20);
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
    common::media::assert_decodes_cleanly(&master, Duration::from_secs(120));
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

/// A PostgreSQL server of its own (initdb in a temp folder, trust auth, 127.0.0.1 only), that
/// a test may stop and start.
struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    port: u16,
    process: Option<KillOnDrop>,
}

impl PrivatePostgres {
    /// As the `postgres` user when this runs as root (PostgreSQL refuses root).
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if rustix::process::getuid().is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's server binaries (Debian package postgresql; .ci/postgres-url installs it)")
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("initdb").exists())
            .max()
            .expect("an initdb under /usr/lib/postgresql");
        let dir = tempfile::tempdir().unwrap();
        let mut pg = Self {
            dir,
            bin,
            port: common::free_port(),
            process: None,
        };
        if rustix::process::getuid().is_root() {
            let done = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(pg.dir.path())
                .status()
                .unwrap();
            assert!(done.success());
        }
        let out = common::process::output_within(
            pg.command("initdb")
                .args(["-A", "trust", "-U", "postgres", "-D"])
                .arg(pg.data()),
            Duration::from_secs(60),
            "initdb (Debian package postgresql)",
        );
        assert!(out.status.success(), "{out:?}");
        pg.run();
        pg
    }

    fn data(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn run(&mut self) {
        let log = self.dir.path().join("postgres.log");
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data())
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
            ])
            .arg("-k")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("postgres starts");
        self.process = Some(KillOnDrop(child));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "postgres did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it as an operator's restart does (fast shutdown: sessions are cut), stays down
    /// for `down`, and starts it again.
    async fn restart(&mut self, down: Duration) {
        let out = common::process::output_within(
            self.command("pg_ctl")
                .args(["stop", "-m", "fast", "-D"])
                .arg(self.data()),
            Duration::from_secs(30),
            "pg_ctl stop",
        );
        assert!(out.status.success(), "{out:?}");
        if let Some(mut p) = self.process.take() {
            common::process::wait_within(&mut p.0, Duration::from_secs(30), "postgres stopping");
        }
        tokio::time::sleep(down).await;
        self.run();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_mid_broadcast_and_mid_upload_loses_and_repeats_nothing() {
    let mut pg = PrivatePostgres::start();
    let server = TestServer::start_with(|c| {
        c.database.url = ferrocast::config::DatabaseUrl::new(pg.url());
    })
    .await;
    let (tenant_id, key) = server.create_tenant("Restarted").await;
    let (status, stream) = server
        .call(
            "POST",
            "/v1/live-streams",
            Some(&key),
            Some(json!({"ladder": "passthrough", "playback_policy": "public", "reconnect_window_s": 10, "record": true})),
        )
        .await;
    assert_eq!(status, 201, "{stream}");
    let playback_id = stream["playback_id"].as_str().unwrap().to_string();
    let publish = format!(
        "{}/{}",
        stream["rtmp_url"].as_str().unwrap(),
        stream["stream_key"].as_str().unwrap()
    );
    let mut ffmpeg = ffmpeg_publish(&publish, 640, 360, 24);
    let master = format!("/hls/{playback_id}/master.m3u8");
    let master = eventually("the master playlist", Duration::from_secs(40), || async {
        let (status, body) = server.get_text(&master).await;
        (status == 200).then_some(body)
    })
    .await;
    let rendition = master
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let media_path = format!("/hls/{playback_id}/{rendition}");

    // An upload under way at the same time.
    let files = tempfile::tempdir().unwrap();
    let file = make_media(
        files.path(),
        "clip.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440",
            "-t",
            "8",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-qp",
            "0",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
        ],
    );
    let size = std::fs::metadata(&file).unwrap().len();
    let (endpoint, upload_file, upload_key) =
        (server.url("/v1/uploads"), file.clone(), key.clone());
    let upload = tokio::task::spawn_blocking(move || {
        tus_upload(&upload_file, &endpoint, &upload_key, 0, "")
    });
    let parts = server.data_dir.join("uploads");
    let stored = || {
        walk(&parts)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "part"))
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .max()
            .unwrap_or(0)
    };
    eventually(
        "part of the upload stored",
        Duration::from_secs(30),
        || async { (stored() > size / 5).then_some(()) },
    )
    .await;
    let at_restart = stored();
    assert!(at_restart < size, "the upload ended before the restart");

    // PostgreSQL goes away for 3 s, mid-broadcast and mid-upload.
    let before = server.get_text(&media_path).await.1;
    pg.restart(Duration::from_secs(3)).await;
    let report = upload.await.unwrap();
    eprintln!("the upload, {at_restart} of {size} bytes stored at the restart: {report}");
    let report = if report["finished"] == true {
        report
    } else {
        // Its retries ran out while the database was down: it resumes, as a client does.
        let url = report["url"]
            .as_str()
            .expect("the upload's URL")
            .to_string();
        let (file, key, endpoint) = (file.clone(), key.clone(), server.url("/v1/uploads"));
        let resumed =
            tokio::task::spawn_blocking(move || tus_upload(&file, &endpoint, &key, 0, &url))
                .await
                .unwrap();
        assert_eq!(resumed["url"], report["url"], "{resumed}");
        resumed
    };
    assert_eq!(report["finished"], true, "{report}");

    // The broadcast went on through it: the playlist grew, and ends whole.
    assert!(ffmpeg.wait(Duration::from_secs(60)).await, "ffmpeg failed");
    let ended = eventually("ENDLIST", Duration::from_secs(30), || async {
        let (_, body) = server.get_text(&media_path).await;
        body.contains("#EXT-X-ENDLIST").then_some(body)
    })
    .await;
    let uris = |p: &str| -> Vec<String> {
        p.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(String::from)
            .collect()
    };
    let (early, all) = (uris(&before), uris(&ended));
    assert!(
        early.iter().all(|u| all.contains(u)),
        "segments from before the restart are gone: {before}\n{ended}"
    );
    let mut unique = all.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        all.len(),
        "a segment is listed twice: {ended}"
    );
    assert!(
        !ended.contains("#EXT-X-DISCONTINUITY"),
        "the broadcast was cut: {ended}"
    );

    // Two assets, each once: the recording of all 24 s, and the upload.
    let assets = eventually("both assets ready", Duration::from_secs(180), || async {
        let list = server
            .state
            .jobs
            .db
            .list_assets(&tenant_id, None, 10)
            .await
            .ok()?;
        (list.len() == 2
            && list
                .iter()
                .all(|a| a.status == ferrocast::db::AssetStatus::Ready))
        .then_some(list)
    })
    .await;
    let mut durations: Vec<f64> = assets
        .iter()
        .map(|a| a.duration_ms.unwrap() as f64 / 1000.0)
        .collect();
    durations.sort_by(f64::total_cmp);
    assert!((7.0..=9.0).contains(&durations[0]), "{durations:?}");
    assert!((22.0..=26.0).contains(&durations[1]), "{durations:?}");
    server.stop().await;
}

/// `ferrocast serve` with its object store on a small tmpfs of its own (a mount namespace
/// made with `unshare`, so no root is needed), filled up before it starts; touching
/// `free` in the control folder deletes the filler.
struct FullDisk {
    dir: tempfile::TempDir,
    port: u16,
    rtmp_port: u16,
    group: Option<rustix::process::Pid>,
}

impl FullDisk {
    const ADMIN: &str = "fc_admin_full_disk_test_0123456789abcdef0123456789";

    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (port, rtmp_port) = (common::free_port(), common::free_port());
        let disk = dir.path().join("disk");
        std::fs::create_dir_all(&disk).unwrap();
        let script = r#"
            set -e
            mount -t tmpfs -o size=16m tmpfs "$DISK"
            mkdir -p "$DISK/objects"
            dd if=/dev/zero of="$DISK/filler" bs=64k 2>/dev/null || true
            "$FERROCAST" serve &
            server=$!
            while [ ! -e "$CONTROL/free" ]; do sleep 0.1; done
            rm -f "$DISK/filler"
            touch "$CONTROL/freed"
            wait $server
        "#;
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = Command::new("unshare")
            .args(["--user", "--map-root-user", "--mount", "sh", "-c", script])
            .env("DISK", &disk)
            .env("CONTROL", dir.path())
            .env("FERROCAST", env!("CARGO_BIN_EXE_ferrocast"))
            .env("FERROCAST_DATA_DIR", dir.path().join("data"))
            .env("FERROCAST_KEYS_DIR", dir.path().join("keys"))
            .env("FERROCAST_STORAGE_LOCAL_DIR", disk.join("objects"))
            .env("FERROCAST_HTTP_LISTEN", format!("127.0.0.1:{port}"))
            .env("FERROCAST_RTMP_LISTEN", format!("127.0.0.1:{rtmp_port}"))
            .env("FERROCAST_ADMIN_KEY", Self::ADMIN)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("unshare (util-linux) starts");
        let group = rustix::process::Pid::from_raw(child.id() as i32);
        // The group is killed on drop; the child handle itself is not needed.
        std::mem::forget(child);
        Self {
            dir,
            port,
            rtmp_port,
            group,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn free_space(&self) {
        std::fs::write(self.dir.path().join("free"), b"").unwrap();
        let freed = self.dir.path().join("freed");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !freed.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the filler was not removed"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for FullDisk {
    fn drop(&mut self) {
        if let Some(group) = self.group.take() {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_object_store_disk_holds_the_broadcast_until_space_returns_and_loses_nothing() {
    let node = FullDisk::start();
    let client = common::http_client();
    eventually("the server to serve", Duration::from_secs(30), || async {
        let r = client.get(node.url("/healthz")).send().await;
        r.is_ok_and(|r| r.status().is_success()).then_some(())
    })
    .await;
    let call = |method: &str, path: &str, key: &str, body: Value| {
        client
            .request(method.parse().unwrap(), node.url(path))
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    let t: Value = call(
        "POST",
        "/v1/tenants",
        FullDisk::ADMIN,
        json!({"name": "Full"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let key = t["api_key"].as_str().unwrap().to_string();
    let stream: Value = call(
        "POST",
        "/v1/live-streams",
        &key,
        json!({"ladder": "passthrough", "playback_policy": "public", "reconnect_window_s": 0, "record": true}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let publish = format!(
        "rtmp://127.0.0.1:{}/live/{}",
        node.rtmp_port,
        stream["stream_key"].as_str().unwrap()
    );
    let mut ffmpeg = ffmpeg_publish(&publish, 640, 360, 14);
    // No space: the first writes fail, are retried, and say why.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !node
        .log()
        .contains("no space left on the object store's disk")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no write was refused for space in 30 s: {}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Space returns: everything waiting is written, and the broadcast goes on.
    node.free_space();
    assert!(ffmpeg.wait(Duration::from_secs(60)).await, "ffmpeg failed");
    let pb = stream["playback_id"].as_str().unwrap();
    let ended = eventually("ENDLIST", Duration::from_secs(60), || async {
        let r = client
            .get(node.url(&format!("/hls/{pb}/master.m3u8")))
            .send()
            .await
            .ok()?;
        let master = r.text().await.ok()?;
        let rendition = master
            .lines()
            .find(|l| !l.starts_with('#') && !l.trim().is_empty())?
            .split('?')
            .next()?
            .to_string();
        let r = client
            .get(node.url(&format!("/hls/{pb}/{rendition}")))
            .send()
            .await
            .ok()?;
        let media = r.text().await.ok()?;
        media.contains("#EXT-X-ENDLIST").then_some(media)
    })
    .await;
    let listed: f64 = ended
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .map(|d| d.trim_end_matches(',').parse::<f64>().unwrap())
        .sum();
    assert!(
        (13.0..=15.0).contains(&listed),
        "{listed} s listed of 14: {ended}"
    );
    // The recording: whole, and every object of it reads and decodes.
    let asset = eventually("the recording", Duration::from_secs(60), || async {
        let list: Value = call("GET", "/v1/assets", &key, Value::Null)
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        list["data"]
            .as_array()?
            .iter()
            .find(|a| a["status"] == "ready")
            .cloned()
    })
    .await;
    let duration = asset["duration_s"].as_f64().unwrap();
    assert!(
        (13.0..=15.0).contains(&duration),
        "recorded {duration} s of 14"
    );
    let master = node.url(&format!(
        "/hls/{}/master.m3u8",
        asset["playback_id"].as_str().unwrap()
    ));
    common::media::assert_decodes_cleanly(&master, Duration::from_secs(60));
    assert!(
        !node.log().contains("storage write lost"),
        "a write was given up: {}",
        node.log()
    );
}

/// Debian's `faketime` (installed by `make`): a process started with it reads its wall clock
/// as the real one plus the offset in a file, read again at each call; its monotonic clock
/// stays real, as a wall-clock jump leaves it.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// One node's wall clock jumps an hour forward, then back, beside a node whose clock is
/// right, both on one PostgreSQL:
/// - a transcode the right node holds is not taken from it by the node an hour ahead (job
///   leases are judged by the database's clock), and finishes once;
/// - an API key's shared rate limit counts requests alternating between the nodes as one
///   bucket, with either jump: neither node refills it at once nor empties it;
/// - a playback token is judged by each node's own clock, as the README says: one with half
///   an hour left is refused by the node an hour ahead, taken by the one an hour behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_wall_clock_jumps_an_hour_keeps_to_the_shared_leases_and_limits() {
    assert!(
        std::path::Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} (Debian package faketime; `make test` installs it)"
    );
    let pg = common::PgDatabase::create().await;
    let clock = tempfile::tempdir().unwrap();
    let offset = clock.path().join("offset");
    let jump = |seconds: i64| std::fs::write(&offset, format!("{seconds:+}")).unwrap();
    jump(0);
    let shared = |node: Node| {
        // One database and one master key, as nodes of one deployment have.
        node.env("FERROCAST_DATABASE_URL", &pg.url)
            .env(
                "FERROCAST_KEYS_DIR",
                clock.path().join("keys").to_str().unwrap(),
            )
            .env("FERROCAST_RATE_LIMITS_FREE_PER_MIN", "60")
    };
    let mut right = shared(Node::new());
    right.start().await;
    // A tenant, on the `free` tier (60 requests a minute) if `free`.
    let tenant = |name: &'static str, free: bool| {
        let right = &right;
        async move {
            let (status, t) = right
                .call(
                    "POST",
                    "/v1/tenants",
                    right.admin,
                    Some(json!({"name": name})),
                )
                .await;
            assert_eq!(status, 201, "{t}");
            if free {
                let path = format!("/v1/tenants/{}/tier", t["id"].as_str().unwrap());
                let (status, r) = right
                    .call("PUT", &path, right.admin, Some(json!({"tier": "free"})))
                    .await;
                assert_eq!(status, 200, "{r}");
            }
            t["api_key"].as_str().unwrap().to_string()
        }
    };

    // A transcode on the right node, running.
    let media = tempfile::tempdir().unwrap();
    let file = clip_720p(media.path(), "clip.mp4", 90);
    let key = tenant("Clock", false).await;
    let (endpoint, client_key) = (right.url("/v1/uploads"), key.clone());
    let upload =
        tokio::task::spawn_blocking(move || tus_upload(&file, &endpoint, &client_key, 0, ""))
            .await
            .unwrap();
    assert_eq!(upload["finished"], true, "{upload}");
    let db = sqlx::PgPool::connect(&pg.url).await.unwrap();
    let job = || async {
        sqlx::query_as::<_, (String, String, i64, Option<String>)>(
            "SELECT asset_id, status, attempts, lease_owner FROM jobs",
        )
        .fetch_one(&db)
        .await
        .unwrap()
    };
    let (asset, _, _, owner) = eventually(
        "the right node to run the transcode",
        Duration::from_secs(60),
        || async {
            let j = job().await;
            (j.1 == "running").then_some(j)
        },
    )
    .await;
    // Now a node an hour ahead joins, its workers looking for jobs.
    jump(3600);
    let mut ahead = shared(Node::new())
        .env("LD_PRELOAD", LIBFAKETIME)
        .env("FAKETIME_TIMESTAMP_FILE", offset.to_str().unwrap())
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    ahead.start().await;
    let shown = ahead
        .client
        .get(ahead.url("/time"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let real = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let at = chrono::DateTime::parse_from_rfc3339(&shown)
        .unwrap()
        .timestamp();
    assert!(
        (at - real - 3600).abs() < 60,
        "its clock is an hour ahead: {shown}"
    );
    let looked = std::time::Instant::now();
    let deadline = looked + Duration::from_secs(8);
    while std::time::Instant::now() < deadline {
        let (_, status, attempts, lease_owner) = job().await;
        assert!(
            status != "done" || looked.elapsed() > Duration::from_secs(6),
            "the transcode ended before the node ahead had looked long enough (longer clip?)"
        );
        if status == "done" {
            break;
        }
        assert_eq!(
            (attempts, &lease_owner),
            (1, &owner),
            "the transcode stays with the node that holds its lease"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (_, status, attempts, _) = eventually(
        "the transcode to finish",
        Duration::from_secs(120),
        || async {
            let j = job().await;
            (j.1 == "done").then_some(j)
        },
    )
    .await;
    assert_eq!((status.as_str(), attempts), ("done", 1), "transcoded once");
    let (_, a) = right
        .call("GET", &format!("/v1/assets/{asset}"), &key, None)
        .await;
    assert_eq!(a["status"], "ready", "{a}");

    // Rate limits: one bucket of 60 a minute, whichever node takes the request and whatever
    // its clock says.
    for (seconds, name) in [(-3600, "Behind"), (3600, "Ahead")] {
        jump(seconds);
        let key = tenant(name, true).await;
        let mut taken = 0;
        for i in 0..100 {
            let node = if i % 2 == 0 { &right } else { &ahead };
            let (status, body) = node.call("GET", "/v1/live-streams", &key, None).await;
            match status {
                200 => taken += 1,
                429 => assert!(i >= 20, "request {i} refused at {seconds:+} s: {body}"),
                other => panic!("request {i}: {other} {body}"),
            }
        }
        println!("clock {seconds:+} s: {taken} of 100 requests taken (a bucket of 60)");
        assert!(
            (60..=70).contains(&taken),
            "60 and what the seconds refilled, at {seconds:+} s: {taken}"
        );
    }

    // Tokens: each node's own clock.
    let (status, stream) = right
        .call(
            "POST",
            "/v1/live-streams",
            &key,
            Some(json!({"playback_policy": "signed"})),
        )
        .await;
    assert_eq!(status, 201, "{stream}");
    let playback_id = stream["playback_id"].as_str().unwrap();
    let (status, token) = right
        .call(
            "POST",
            "/v1/playback-tokens",
            &key,
            Some(json!({"playback_id": playback_id, "expires_in": 1800})),
        )
        .await;
    assert_eq!(status, 201, "{token}");
    let master = format!(
        "/hls/{playback_id}/master.m3u8?token={}",
        token["token"].as_str().unwrap()
    );
    let status_on = |node: &Node| {
        let url = node.url(&master);
        let client = node.client.clone();
        async move {
            let r = client.get(url).send().await.unwrap();
            r.status().as_u16()
        }
    };
    let on_right = status_on(&right).await;
    assert!(
        on_right != 401 && on_right != 403,
        "the token is good: {on_right}"
    );
    jump(3600);
    assert_eq!(status_on(&ahead).await, 403, "expired an hour ahead");
    jump(-3600);
    assert_eq!(status_on(&ahead).await, on_right, "good an hour behind");
    drop((right, ahead));
}
