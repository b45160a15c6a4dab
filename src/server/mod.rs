//! Start-up and serving: builds the shared state from the configuration (key store, database,
//! storage, bootstrap admin key) and runs the router on a listener the caller owns, until the
//! caller's shutdown future resolves.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::Notify;

mod http;

use crate::api::KeyLimits;
use crate::api::{self, AppState, auth};
use crate::config::{Config, StorageBackend};
use crate::db::Db;
use crate::drm::audit::AuditLog;
use crate::drm::{ContentKeys, PlaybackTokens};
use crate::keys::{KeyProvider, Keyring};
use crate::live::{LiveDeps, LiveHub};
use crate::pipeline::preset::Presets;
use crate::storage::{DynStore, LocalStore, S3Settings, S3Store, UrlSigner};
use crate::vod::JobDeps;

/// What start-up produced, besides the state: things to tell the operator once.
#[derive(Debug, Default)]
pub struct Startup {
    /// A generated admin key, when none existed yet. Shown once, stored hashed.
    pub bootstrap_admin_key: Option<String>,
    pub master_key_created: bool,
}

/// What both the server and a worker process build first: keys, database, storage, presets.
struct Core {
    /// Configuration, database, storage, presets and content keys: all a job needs.
    jobs: JobDeps,
    url_signer: Option<UrlSigner>,
    configured_admin_key: Option<[u8; 32]>,
    keyring: Keyring,
    startup: Startup,
}

async fn build_core(config: Config, public_url: &str) -> anyhow::Result<Core> {
    crate::pipeline::init().context("initialising GStreamer")?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data folder {}", config.data_dir.display()))?;
    let key_provider: Arc<dyn KeyProvider> = Arc::from(crate::keys::provider(&config.keys)?);
    let (keyring, master_key_created) = key_provider
        .load()
        .with_context(|| format!("loading master keys ({})", key_provider.name()))?;
    let master = keyring.current.clone();

    let db = Db::connect(&config.database_url(), config.database.max_connections)
        .await
        .context("opening the database")?;

    let (store, url_signer): (DynStore, Option<UrlSigner>) = match config.storage.backend {
        StorageBackend::Local => {
            let signer = UrlSigner::new(public_url, master.derive("storage-url/v1"));
            let store = LocalStore::open(config.local_storage_dir(), Some(signer.clone())).await?;
            (Arc::new(store), Some(signer))
        }
        StorageBackend::S3 => {
            let s3 = &config.storage.s3;
            let store = S3Store::connect(&S3Settings {
                bucket: s3.bucket.clone(),
                region: s3.region.clone(),
                endpoint: s3.endpoint.clone(),
                path_style: s3.path_style,
                access_key_id: s3.access_key_id.clone(),
                secret_access_key: s3.secret_access_key.expose().to_string(),
                create_bucket: s3.create_bucket,
                multipart_threshold: s3.multipart_threshold_bytes,
                part_size: s3.part_size_bytes,
                request_timeout: Duration::from_secs(s3.request_timeout_s),
            })
            .await
            .context("connecting to S3")?;
            (Arc::new(store), None)
        }
    };

    let configured_admin_key = (!config.admin.key.is_empty())
        .then(|| auth::configured_admin_hash(config.admin.key.expose()));
    let bootstrap_admin_key = if configured_admin_key.is_none() && db.count_admin_keys().await? == 0
    {
        Some(auth::create_admin_key(&db, "bootstrap").await?)
    } else {
        None
    };

    let presets = Arc::new(Presets::embedded());
    // Viewers behind the live edge need the whole window, and some time to fetch it.
    let window_s = presets
        .names()
        .filter_map(|name| presets.get(name))
        .map(|p| u64::from(p.segment_duration_s))
        .max()
        .unwrap_or(0)
        * config.live.window_segments as u64;
    if config.live.ended_retention_s < window_s + 30 {
        tracing::warn!(
            ended_retention_s = config.live.ended_retention_s,
            window_s,
            "live.ended_retention_s is shorter than the live window plus 30 s: viewers far \
             behind the live edge of a broadcast that is not recorded may not reach its end"
        );
    }
    let content_keys = ContentKeys::new(db.clone(), key_provider, &keyring);
    Ok(Core {
        jobs: JobDeps {
            config: Arc::new(config),
            db,
            store,
            presets,
            content_keys,
            public_url: public_url.to_string(),
            wakeup: Arc::new(Notify::new()),
        },
        url_signer,
        configured_admin_key,
        keyring,
        startup: Startup {
            bootstrap_admin_key,
            master_key_created,
        },
    })
}

/// Builds what `ferrocast worker` needs to run jobs: no HTTP state (player, GeoIP, WHIP,
/// delivery cache), only the job's dependencies.
pub async fn build_jobs(config: Config, public_url: &str) -> anyhow::Result<(JobDeps, Startup)> {
    let core = build_core(config, public_url).await?;
    Ok((core.jobs, core.startup))
}

/// Builds the application state. `public_url` is where clients reach this server over HTTP,
/// `rtmp_url` where publishers push (without the stream key).
pub async fn build(
    config: Config,
    public_url: &str,
    rtmp_url: &str,
) -> anyhow::Result<(AppState, Startup)> {
    let Core {
        jobs,
        url_signer,
        configured_admin_key,
        keyring,
        startup,
    } = build_core(config, public_url).await?;
    let JobDeps {
        config,
        db,
        store,
        presets,
        content_keys,
        ..
    } = jobs.clone();
    let bad_keys = Arc::new(crate::admission::BadKeys::new(
        crate::admission::BAD_KEYS_PER_MINUTE,
    ));
    let live = LiveHub::new(LiveDeps {
        db: db.clone(),
        store: store.clone(),
        content_keys: content_keys.clone(),
        presets: presets.clone(),
        config: config.live.clone(),
        public_url: public_url.to_string(),
        taps: Default::default(),
        cleanup_wakeup: Default::default(),
        low_latency: Default::default(),
        key_provider: crate::drm::speke::from_config(&config.licences, content_keys.clone()),
        bad_keys: bad_keys.clone(),
    });
    let hlsjs = load_hlsjs(&config.delivery.hlsjs_path);
    let docs_ui = load_docs_ui(&config.delivery.swagger_ui_dir);
    let dashboard_libs = load_dashboard_libs(&config.delivery.node_modules_dir);
    let geoip = match config.playback.geoip_mmdb.as_str() {
        "" => None,
        path => Some(Arc::new(
            maxminddb::Reader::open_readfile(path)
                .with_context(|| format!("opening playback.geoip_mmdb {path}"))?,
        )),
    };
    let tokens = PlaybackTokens::new(
        &token_secrets(&keyring),
        Some(db.clone()),
        config.playback.max_token_lifetime_s,
    );
    let key_limits = Arc::new(KeyLimits::new(&config.playback));
    let audit = AuditLog::start(db.clone());
    let delivery_cache = Arc::new(crate::api::delivery_cache::DeliveryCache::new(
        config.delivery.cache_mib as usize * 1024 * 1024,
    ));
    let state = AppState::new(crate::api::Shared {
        jobs,
        url_signer,
        configured_admin_key,
        metrics: api::install_metrics_recorder(),
        tokens,
        audit,
        key_limits,
        bad_keys,
        renders: Arc::new(crate::api::stills::RenderLimits::new(&config.playback)),
        analytics: crate::analytics::Analytics::start(db.clone(), config.analytics.clone()),
        geoip,
        live,
        chat: Default::default(),
        rtmp_url: rtmp_url.to_string(),
        hlsjs,
        docs_ui,
        dashboard_libs,
        upload_locks: Default::default(),
        whip: Default::default(),
        whep: Default::default(),
        delivery_cache,
        unverified_webhooks: api::unverified_webhook_limiter(),
        api_limits: Default::default(),
        bought_caps: Default::default(),
        viewer_counts: Default::default(),
    });
    Ok((state, startup))
}

/// HS256 secrets for Ferrocast-signed playback tokens: the current master key's first.
pub fn token_secrets(ring: &Keyring) -> Vec<[u8; 32]> {
    ring.all().map(|m| m.derive("playback-token/v1")).collect()
}

/// Re-reads the master keys (rotated by `ferrocast keys rotate-master`, maybe while this
/// process serves): new content keys are wrapped under the current one from now on.
pub fn reload_keys(state: &AppState) -> anyhow::Result<()> {
    let before = state.jobs.content_keys.current_kek_id();
    let ring = state.jobs.content_keys.reload()?;
    state.tokens.set_secrets(&token_secrets(&ring));
    let after = state.jobs.content_keys.current_kek_id();
    if before != after {
        tracing::info!(from = %before, to = %after, "master key changed; new content keys use it");
    }
    Ok(())
}

/// A ready-to-use tenant and public live stream, made on the very first start so the printed
/// ffmpeg line works as printed.
#[derive(Debug)]
pub struct Demo {
    pub tenant_api_key: String,
    pub stream_key: String,
    pub playback_id: String,
}

pub async fn create_demo(state: &AppState) -> anyhow::Result<Demo> {
    let key = auth::generate(crate::db::Role::Tenant);
    let (tenant, _) = state
        .jobs
        .db
        .create_tenant_with_key("demo", "default", &key.prefix, &key.hash)
        .await?;
    let stream = state
        .jobs
        .db
        .create_live_stream(&crate::db::NewLiveStream {
            tenant_id: &tenant.id,
            stream_key: &crate::ids::random_secret(24),
            playback_id: &crate::ids::new_playback_id(),
            ladder: "default",
            playback_policy: crate::db::PlaybackPolicy::Public,
            reconnect_window_s: 60,
            record: true,
            packaging: crate::media::Packaging::Ts,
            cenc_scheme: crate::media::cenc::Scheme::Cbcs,
        })
        .await?;
    Ok(Demo {
        tenant_api_key: key.secret,
        stream_key: stream.stream_key,
        playback_id: stream.playback_id,
    })
}

/// Swagger UI for /docs from where `make` installs it (npm), unless
/// `delivery.swagger_ui_dir` says otherwise.
fn load_docs_ui(configured: &str) -> Option<crate::api::openapi::DocsUi> {
    let dir = if configured.is_empty() {
        std::path::PathBuf::from(std::env::var_os("HOME")?)
            .join(".cache/ferrocast/npm/node_modules/swagger-ui-dist")
    } else {
        std::path::PathBuf::from(configured)
    };
    let read = |name: &str| std::fs::read(dir.join(name)).map(bytes::Bytes::from);
    match (read("swagger-ui-bundle.js"), read("swagger-ui.css")) {
        (Ok(bundle), Ok(css)) => Some(crate::api::openapi::DocsUi { bundle, css }),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(dir = %dir.display(), error = %e, "Swagger UI not found: /docs lists the routes only (run make)");
            None
        }
    }
}

/// The dashboard's libraries from the node_modules folder `make` installs (npm), unless
/// `delivery.node_modules_dir` says otherwise; each one missing is left out.
fn load_dashboard_libs(configured: &str) -> crate::api::DashboardLibs {
    let dir = if configured.is_empty() {
        match std::env::var_os("HOME") {
            Some(home) => std::path::PathBuf::from(home).join(".cache/ferrocast/npm/node_modules"),
            None => return Default::default(),
        }
    } else {
        std::path::PathBuf::from(configured)
    };
    let read = |name: &str| match std::fs::read(dir.join(name)) {
        Ok(b) => Some(bytes::Bytes::from(b)),
        Err(e) => {
            tracing::warn!(file = %dir.join(name).display(), error = %e, "a dashboard library is missing (run make)");
            None
        }
    };
    crate::api::DashboardLibs {
        tus: read("tus-js-client/dist/tus.min.js"),
        uplot: read("uplot/dist/uPlot.iife.min.js"),
        uplot_css: read("uplot/dist/uPlot.min.css"),
    }
}

/// The default place `make` installs hls.js (npm), unless `delivery.hlsjs_path` says otherwise.
fn load_hlsjs(configured: &str) -> Option<bytes::Bytes> {
    let path = if configured.is_empty() {
        std::path::PathBuf::from(std::env::var_os("HOME")?)
            .join(".cache/ferrocast/npm/node_modules/hls.js/dist/hls.min.js")
    } else {
        std::path::PathBuf::from(configured)
    };
    match std::fs::read(&path) {
        Ok(js) => Some(js.into()),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "hls.js not found: /play pages cannot play (run make)");
            None
        }
    }
}

/// File descriptors kept for everything but client connections: the database pool, storage,
/// GStreamer, logs, uploads.
const FDS_RESERVED: u64 = 1024;

/// Raises this process's open-file limit to its hard limit, and lowers `http.max_connections`
/// and `rtmp.max_connections` to fit in it if they do not: past the limit `accept` fails
/// before admission can make room, and the database and storage starve with it.
pub fn fit_to_open_files(config: &mut Config) {
    let limit = raise_open_files();
    let (http, rtmp) = fit_connections(
        config.http.max_connections as u64,
        config.rtmp.max_connections as u64,
        limit,
    );
    if (http, rtmp)
        != (
            config.http.max_connections as u64,
            config.rtmp.max_connections as u64,
        )
    {
        tracing::warn!(
            open_files = limit,
            http.max_connections = http,
            rtmp.max_connections = rtmp,
            "connection limits lowered to fit the open-file limit (raise it with ulimit -n)"
        );
        config.http.max_connections = http as usize;
        config.rtmp.max_connections = rtmp as usize;
    }
}

/// The soft open-file limit after raising it to the hard one (`u64::MAX`: unlimited).
fn raise_open_files() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum || (lim.current.is_some() && lim.maximum.is_none()) {
        let raised = Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return lim.maximum.unwrap_or(u64::MAX);
        }
    }
    lim.current.unwrap_or(u64::MAX)
}

/// HTTP and RTMP connection limits that fit in `open_files` beside [`FDS_RESERVED`], each
/// lowered in proportion (at least 16 each).
fn fit_connections(http: u64, rtmp: u64, open_files: u64) -> (u64, u64) {
    let room = open_files.saturating_sub(FDS_RESERVED).max(32);
    if http + rtmp <= room {
        return (http, rtmp);
    }
    let http_share = (room as u128 * http as u128 / (http + rtmp) as u128) as u64;
    (http_share.max(16), (room - http_share.min(room)).max(16))
}

/// Serves HTTP on `http` and RTMP ingest on `rtmp` until `shutdown` resolves; then ends the
/// broadcasts (their playlists get EXT-X-ENDLIST) and lets in-flight requests finish, for up
/// to `http.shutdown_grace_s` seconds.
pub async fn serve(
    state: AppState,
    http: TcpListener,
    rtmp: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = Duration::from_secs(state.jobs.config.http.shutdown_grace_s);
    let app_config = state.jobs.config.clone();
    let db = state.jobs.db.clone();
    let hub = state.live.clone();
    // Only a serving node takes broadcasts; a `ferrocast worker` beside it must not touch
    // them.
    match db.reset_active_live_streams().await {
        Ok(0) => {}
        Ok(stale) => tracing::warn!(
            streams = stale,
            "live streams left active by a previous run are idle again"
        ),
        Err(e) => tracing::warn!(error = %e, "resetting live streams left active"),
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let ingest = rtmp.map(|listener| {
        tokio::spawn(crate::ingest::rtmp::server::serve(
            listener,
            hub.clone(),
            state.jobs.config.rtmp.clone(),
            stop_rx.clone(),
        ))
    });
    let workers = crate::vod::spawn_workers(
        &state.jobs,
        crate::vod::WorkerHome::WithApi,
        stop_rx.clone(),
    );
    tokio::spawn(janitor(state.clone(), stop_rx.clone()));
    let render = Arc::new(api::webhook_endpoints::ApiRender {
        rtmp_url: state.rtmp_url.clone(),
    });
    tokio::spawn(
        crate::webhooks::Dispatcher::new(
            db.clone(),
            state.jobs.content_keys.clone(),
            app_config.webhooks.clone(),
            render,
        )
        .run(stop_rx.clone()),
    );
    tokio::spawn(crate::live::cleanup::run(
        state.jobs.db.clone(),
        state.jobs.store.clone(),
        state.live.cleanup_wakeup(),
        stop_rx.clone(),
    ));
    let analytics = state.analytics.clone();
    let app = api::router(state);
    let (http_stop_tx, http_stop_rx) = tokio::sync::watch::channel(false);
    let stopping = Arc::new(Notify::new());
    let notify = stopping.clone();
    let live = hub.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: ending broadcasts, finishing in-flight requests");
        let _ = stop_tx.send(true);
        live.shutdown_all(grace).await;
        let _ = http_stop_tx.send(true);
        notify.notify_one();
    });
    let http_config = app_config.http.clone();
    let server = http::serve(http, app, &http_config, http_stop_rx);
    let result = tokio::select! {
        () = server => Ok(()),
        _ = async { stopping.notified().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_s = grace.as_secs(), "grace period over; closing remaining connections");
            Ok(())
        }
    };
    if let Some(task) = ingest {
        task.abort();
    }
    // A job cut short here is taken again by a worker once its lease expires.
    for worker in workers {
        worker.abort();
    }
    // Views still open are written, so that a restart picks them up (within 15 s: a
    // database that cannot be reached does not hold the shutdown).
    if tokio::time::timeout(std::time::Duration::from_secs(15), analytics.flush())
        .await
        .is_err()
    {
        tracing::warn!("views still open could not be written before shutdown");
    }
    db.close().await;
    result
}

/// Housekeeping every few minutes: unfinished uploads past their expiry are deleted.
async fn janitor(state: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let keys_state = state.clone();
    let mut keys_stop = stop.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                _ = keys_stop.wait_for(|s| *s) => return,
            }
            if let Err(e) = reload_keys(&keys_state) {
                tracing::warn!(error = %e, "reloading master keys");
            }
        }
    });
    loop {
        match api::uploads::delete_expired(&state).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(uploads = n, "deleted expired uploads"),
            Err(e) => tracing::warn!(error = %e, "cleaning up expired uploads"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(300)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Runs only the job workers (`ferrocast worker`), until `shutdown` resolves.
pub async fn run_workers(jobs: JobDeps, shutdown: impl Future<Output = ()>) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let workers = crate::vod::spawn_workers(&jobs, crate::vod::WorkerHome::Alone, stop_rx);
    shutdown.await;
    let _ = stop_tx.send(true);
    for worker in workers {
        worker.abort();
    }
    jobs.db.close().await;
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[cfg(test)]
mod fd_tests {
    use super::*;

    #[test]
    fn connection_limits_fit_the_open_file_limit() {
        assert_eq!(fit_connections(8192, 256, 1_048_576), (8192, 256));
        let (http, rtmp) = fit_connections(8192, 256, 1024 + 4224);
        assert!(http + rtmp <= 4224, "{http} + {rtmp}");
        assert_eq!((http, rtmp), (4096, 128));
        // A tiny limit still leaves each a few.
        assert_eq!(fit_connections(8192, 256, 100), (31, 16));
    }
}
