//! Test harness: a real Ferrocast server on 127.0.0.1:0, a fresh PostgreSQL database, and a
//! real S3-compatible server (s3s-fs). Everything started here stops itself on drop.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod fakes;
pub mod hooks;
pub mod media;
pub mod paid;
pub mod process;
pub mod shop;
pub mod stripe;

pub use process::output_within;

use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferrocast::api::AppState;
use ferrocast::config::{Config, StorageBackend};
use ferrocast::server::{self, Startup};
use ferrocast::storage::{S3Settings, S3Store};
use serde_json::Value;
use tokio::sync::oneshot;

/// A running server with its own data folder.
pub struct TestServer {
    pub base: String,
    /// `rtmp://127.0.0.1:PORT/live`
    pub rtmp_url: String,
    pub state: AppState,
    pub startup: Startup,
    pub data_dir: PathBuf,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
}

/// A configuration for tests: everything under `dir`, HTTP on an ephemeral port.
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut config = Config::defaults();
    config.data_dir = dir.join("data");
    config.keys.dir = dir.join("keys");
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.rtmp.listen = "127.0.0.1:0".parse().unwrap();
    config.http.shutdown_grace_s = 10;
    config
}

impl TestServer {
    /// A server with the embedded defaults (SQLite, local storage) in a temp folder.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A server whose test configuration `tweak` adjusts first.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(dir.path());
        tweak(&mut config);
        let mut server = Self::start_config(config).await;
        server._dir = Some(dir);
        server
    }

    /// A server on PostgreSQL database `pg`, with `tweak` applied after.
    pub async fn start_on(pg: &PgDatabase, tweak: impl FnOnce(&mut Config)) -> Self {
        let url = pg.url.clone();
        Self::start_with(|c| {
            c.database.url = ferrocast::config::DatabaseUrl::new(url);
            tweak(c);
        })
        .await
    }

    /// A server on exactly this configuration (the caller owns its folders).
    pub async fn start_config(config: Config) -> Self {
        // Server logs show with the failing test's output (RUST_LOG overrides the level).
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,ferrocast=info"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
        let listener = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .expect("bind");
        let addr = listener.local_addr().unwrap();
        let base = format!("http://{addr}");
        let rtmp = tokio::net::TcpListener::bind(config.rtmp.listen)
            .await
            .expect("bind RTMP");
        let rtmp_url = config.rtmp_url(rtmp.local_addr().unwrap());
        let data_dir = config.data_dir.clone();
        let (state, startup) = server::build(config, &base, &rtmp_url)
            .await
            .expect("server builds");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server::serve(state.clone(), listener, Some(rtmp), async {
            let _ = rx.await;
        }));
        Self {
            base,
            rtmp_url,
            state,
            startup,
            data_dir,
            client: http_client(),
            shutdown: Some(tx),
            task: Some(task),
            _dir: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET path` without a key; returns status and body text.
    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let resp = self.client.get(self.url(path)).send().await.unwrap();
        (
            resp.status().as_u16(),
            resp.text().await.unwrap_or_default(),
        )
    }

    /// The bootstrap admin key this server generated on start.
    pub fn admin_key(&self) -> String {
        self.startup
            .bootstrap_admin_key
            .clone()
            .expect("a bootstrap admin key was generated")
    }

    /// Sends a request with an optional bearer key and JSON body; returns status and JSON.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.client.request(method.parse().unwrap(), self.url(path));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request reaches the server");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text}"))
        };
        (status, json)
    }

    /// Creates a tenant with the admin key; returns (tenant id, tenant API key).
    pub async fn create_tenant(&self, name: &str) -> (String, String) {
        let (status, body) = self
            .call(
                "POST",
                "/v1/tenants",
                Some(&self.admin_key()),
                Some(serde_json::json!({ "name": name })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        (
            body["id"].as_str().unwrap().into(),
            body["api_key"].as_str().unwrap().into(),
        )
    }

    /// Fails if `needle` (a content key) appears in the SQLite files or any stored object of
    /// the local store. Fails closed: a file that cannot be read, or no object at all, fails.
    pub async fn assert_nowhere_on_disk(&self, needle: &[u8]) {
        assert_eq!(
            self.state.jobs.config.storage.backend,
            StorageBackend::Local,
            "assert_nowhere_on_disk reads the local store's folder"
        );
        let mut files = vec![
            self.data_dir.join("ferrocast.db"),
            self.data_dir.join("ferrocast.db-wal"),
        ];
        let objects = self
            .state
            .jobs
            .store
            .list(&ferrocast::storage::Prefix::parse("").unwrap())
            .await
            .unwrap();
        assert!(!objects.is_empty(), "no stored object to check");
        files.extend(objects.iter().map(|o| {
            self.state
                .jobs
                .config
                .local_storage_dir()
                .join(o.key.as_str())
        }));
        for f in files {
            let bytes = std::fs::read(&f)
                .unwrap_or_else(|e| panic!("cannot read {} to check it: {e}", f.display()));
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "content key in clear in {}",
                f.display()
            );
        }
    }

    /// Asks the server to stop and waits until it has.
    pub async fn stop(mut self) {
        self.stop_inner().await;
    }

    /// Resolves the shutdown future without waiting, and returns the server task.
    pub fn begin_shutdown(&mut self) -> tokio::task::JoinHandle<std::io::Result<()>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.take().expect("server running")
    }

    async fn stop_inner(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("server stops within 15 s")
                .expect("server task")
                .expect("server ran cleanly");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// An HTTP client whose every request fails after 30 s instead of hanging the test.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("HTTP client")
}

/// The PostgreSQL server the tests use: `TEST_DATABASE_URL`, else the local one.
pub fn postgres_base_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A fresh, empty PostgreSQL database, dropped when this value is.
pub struct PgDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

impl PgDatabase {
    pub async fn create() -> Self {
        use sqlx::Connection;
        let admin_url = postgres_base_url();
        let mut conn = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL at {admin_url} is needed for this test ({e}). \
                 Start it, or set TEST_DATABASE_URL (see README: make test)."
                )
            });
        let name = format!("ferrocast_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create test database");
        conn.close().await.ok();
        let mut url = url::Url::parse(&admin_url).expect("TEST_DATABASE_URL is a URL");
        url.set_path(&format!("/{name}"));
        Self {
            url: url.to_string(),
            admin_url,
            name,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime; use a separate thread and runtime for the I/O.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                use sqlx::Connection;
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

/// A real S3-compatible server (s3s-fs) on 127.0.0.1 with its own folder.
pub struct S3Server {
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

fn s3s_fs_binary() -> PathBuf {
    if let Ok(p) = std::env::var("S3S_FS_BIN") {
        return PathBuf::from(p);
    }
    let cached = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache/ferrocast/tools/bin/s3s-fs"))
        .filter(|p| p.exists());
    cached.unwrap_or_else(|| PathBuf::from("s3s-fs"))
}

/// A port free on 127.0.0.1 now.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl S3Server {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let (access_key, secret_key) = (
            "ferrocast-test".to_string(),
            "ferrocast-test-secret".to_string(),
        );
        let child = Self::spawn(port, &access_key, &secret_key, dir.path());
        Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            access_key,
            secret_key,
            port,
            child,
            _dir: dir,
        }
    }

    /// Starts it again on the same port and folder after `kill` (an outage that ends).
    pub fn restart(&mut self) {
        self.kill();
        self.child = Self::spawn(
            self.port,
            &self.access_key,
            &self.secret_key,
            self._dir.path(),
        );
    }

    fn spawn(port: u16, access_key: &str, secret_key: &str, dir: &std::path::Path) -> Child {
        let bin = s3s_fs_binary();
        let child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", access_key, "--secret-key", secret_key])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): the S3 tests need s3s-fs 0.14.1; `make test` builds it \
                     (cargo install s3s-fs --version 0.14.1 --features binary --locked)",
                    bin.display()
                )
            });
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "s3s-fs did not listen on port {port} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    /// Store settings for `bucket` on this server.
    pub fn settings(&self, bucket: &str) -> S3Settings {
        S3Settings {
            bucket: bucket.to_string(),
            region: "us-east-1".to_string(),
            endpoint: self.endpoint.clone(),
            path_style: true,
            access_key_id: self.access_key.clone(),
            secret_access_key: self.secret_key.clone(),
            create_bucket: true,
            multipart_threshold: 6 * 1024 * 1024,
            part_size: 5 * 1024 * 1024,
            request_timeout: Duration::from_secs(10),
        }
    }

    pub async fn store(&self, bucket: &str) -> S3Store {
        S3Store::connect(&self.settings(bucket))
            .await
            .expect("S3 store connects")
    }

    /// Points a server configuration at this S3 server.
    pub fn configure(&self, config: &mut Config, bucket: &str) {
        config.storage.backend = StorageBackend::S3;
        let s3 = &mut config.storage.s3;
        s3.bucket = bucket.to_string();
        s3.endpoint = self.endpoint.clone();
        s3.path_style = true;
        s3.access_key_id = self.access_key.clone();
        s3.secret_access_key = ferrocast::config::Secret::new(self.secret_key.clone());
        s3.create_bucket = true;
        s3.request_timeout_s = 2;
    }

    /// Stops the server (to test what happens when storage goes away).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Opens `n` TCP connections to `addr` from the loopback address `from` (any of 127/8), each
/// sending `first` and then nothing, as a slow-connection attacker does. Those refused or
/// closed at once are left out.
#[allow(dead_code)] // not every test binary floods
pub async fn stalled_connections(
    addr: std::net::SocketAddr,
    from: [u8; 4],
    n: usize,
    first: &[u8],
) -> Vec<tokio::net::TcpStream> {
    let mut open = Vec::new();
    for _ in 0..n {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(std::net::SocketAddr::from((from, 0))).unwrap();
        let Ok(mut s) = socket.connect(addr).await else {
            continue;
        };
        if tokio::io::AsyncWriteExt::write_all(&mut s, first)
            .await
            .is_ok()
        {
            open.push(s);
        }
    }
    open
}

/// How many of `sockets` the server closed (a read sees the end, or an error) by `wait` from
/// now; bytes the server sends first (a handshake reply) are read past.
#[allow(dead_code)] // not every test binary floods
pub async fn closed_within(
    sockets: &mut [tokio::net::TcpStream],
    wait: std::time::Duration,
) -> usize {
    let deadline = tokio::time::Instant::now() + wait;
    let mut closed = 0;
    for s in sockets.iter_mut() {
        let at_least = tokio::time::Instant::now() + std::time::Duration::from_millis(5);
        let read = tokio::time::timeout_at(deadline.max(at_least), async {
            let mut buf = [0u8; 4096];
            loop {
                match tokio::io::AsyncReadExt::read(s, &mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
        })
        .await;
        if read.is_ok() {
            closed += 1;
        }
    }
    closed
}

/// The view a /play page reported (its analytics view), once the server shows it with some
/// watch time (and, when `finished`, ended). Checks it against what the page measured
/// itself: startup within 20 %, watch time within 2 s, Chrome on Linux, fed by the page's
/// beacons and its hls.js CMCD (one session id: one view), and a key fetch time within the
/// startup time when the page fetched a key.
pub async fn reported_view(
    server: &TestServer,
    key: &str,
    played: &media::Playback,
    finished: bool,
) -> serde_json::Value {
    let view_id = played.view_id.clone().expect("the page made a view");
    let view = media::eventually("the page's view", Duration::from_secs(10), || async {
        server.state.analytics.flush().await;
        let (status, v) = server
            .call(
                "GET",
                &format!("/v1/analytics/views/{view_id}"),
                Some(key),
                None,
            )
            .await;
        let ready = v["watch_time_ms"].as_i64() > Some(0) && (!finished || v["finished"] == true);
        (status == 200 && ready).then_some(v)
    })
    .await;
    let page_startup = played.startup_ms.expect("the page measured startup") as f64;
    let startup = view["video_startup_time_ms"].as_f64().unwrap();
    assert!(
        (startup - page_startup).abs() <= 0.2 * page_startup.max(50.0),
        "startup {startup} ms, the page measured {page_startup} ms"
    );
    let watch = view["watch_time_ms"].as_i64().unwrap();
    let page_watch = played.watch_ms.expect("the page measured watch time");
    assert!(
        (watch - page_watch).abs() <= 2000,
        "watch {watch} ms, the page {page_watch} ms: {view}"
    );
    assert_eq!(
        (view["browser"].as_str(), view["os"].as_str()),
        (Some("Chrome"), Some("Linux")),
        "{view}"
    );
    assert_eq!(
        view["sources"],
        serde_json::json!(["beacon", "cmcd"]),
        "{view}"
    );
    // Every segment is encrypted: the key was fetched before the first frame, and the
    // part of startup spent on it is within startup.
    if played.key_loaded {
        let key_ms = view["key_fetch_time_ms"].as_f64();
        assert!(
            key_ms.is_some_and(|k| (0.0..=startup).contains(&k)),
            "key fetch time {key_ms:?} within startup {startup} ms: {view}"
        );
    }
    view
}
