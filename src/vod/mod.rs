//! On-demand assets: the job workers that turn an uploaded original into the same encrypted
//! HLS ladder as live (one pipeline family, one packager output), plus an MP4 download and a
//! poster. Jobs are claimed from the database with a lease, so any number of `serve` or
//! `worker` processes sharing the database and storage split the work, and a job whose worker
//! died is taken again once its lease expires.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::db::{AssetStatus, Db};
use crate::db::{Backend, JOBS_CHANNEL, Job};
use crate::drm::ContentKeys;
use crate::packager::output::{HlsOutput, OutputParams};
use crate::packager::uploader::Uploader;
use crate::pipeline::preset::Presets;
use crate::pipeline::vod::{
    self, Mp4Source, Mp4Spec, Probe, Storyboard, StoryboardSpec, TranscodeSpec, VodEvent,
};
use crate::storage::{DynStore, ObjectKey, Prefix};

/// What jobs need, and all a worker is given: a `worker` process builds only this.
#[derive(Clone)]
pub struct JobDeps {
    pub config: Arc<Config>,
    pub db: Db,
    pub store: DynStore,
    pub presets: Arc<Presets>,
    pub content_keys: ContentKeys,
    /// Base URL of the server that plays what jobs make (key URIs in playlists).
    pub public_url: String,
    /// Wakes this process's workers when a job is queued here.
    pub wakeup: Arc<tokio::sync::Notify>,
}

/// Where a job worker runs, which decides how it hears of new jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerHome {
    /// In `serve`: this process's API wakes its workers when it queues a job.
    WithApi,
    /// In `worker`: the API that queues jobs is another process.
    Alone,
}

/// How long an idle worker that hears of new jobs (from its own process's API, or from any
/// process through PostgreSQL's NOTIFY) waits before looking at the queue anyway, for a job
/// it could not have heard of (queued while the notification connection was down, say).
const IDLE_RECHECK: Duration = Duration::from_secs(30);
/// How often a worker process on SQLite, which cannot hear of the API process's jobs, looks.
const BLIND_RECHECK: Duration = Duration::from_secs(2);
/// The shortest sleep of an idle worker.
const AGAIN_SOON: Duration = Duration::from_millis(50);

/// Starts `jobs.concurrency` workers (and, on PostgreSQL, the task that wakes them when any
/// process queues a job); they stop when `shutdown` turns true.
pub fn spawn_workers(
    deps: &JobDeps,
    home: WorkerHome,
    shutdown: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let concurrency = deps.config.jobs.concurrency;
    let postgres = deps.db.backend() == Backend::Postgres;
    let recheck = if postgres || home == WorkerHome::WithApi {
        IDLE_RECHECK
    } else {
        BLIND_RECHECK
    };
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "ferrocast".into());
    let mut tasks: Vec<_> = (0..concurrency)
        .map(|n| {
            let worker = format!("{host}/{}/{n}", std::process::id());
            tokio::spawn(worker_loop(deps.clone(), worker, recheck, shutdown.clone()))
        })
        .collect();
    if postgres && concurrency > 0 {
        tasks.push(tokio::spawn(listen_for_jobs(
            deps.config.database_url(),
            deps.wakeup.clone(),
            shutdown,
        )));
    }
    tasks
}

/// Claims and runs jobs one at a time. When the queue has nothing to claim, the worker sleeps
/// until a job is queued (it is woken), a retry or an expired lease comes due, or `recheck`.
async fn worker_loop(
    deps: JobDeps,
    worker: String,
    recheck: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let lease_ms = deps.config.jobs.lease_s as i64 * 1000;
    tracing::info!(%worker, "job worker started");
    while !*shutdown.borrow() {
        // Listening before looking: a job queued between the look and the sleep still wakes.
        let news = deps.wakeup.notified();
        tokio::pin!(news);
        news.as_mut().enable();
        match deps.db.claim_job(&worker, lease_ms).await {
            Ok(Some(job)) => {
                let span = tracing::info_span!("job", job = %job.id, asset = %job.asset_id, attempt = job.attempts);
                tracing::Instrument::instrument(run_job(&deps, &worker, job), span).await;
            }
            Ok(None) => {
                let due = match deps.db.next_job_due().await {
                    Ok(Some(due)) => deps.db.shared_now_ms().await.map(|now| Some((due, now))),
                    Ok(None) => Ok(None),
                    Err(e) => Err(e),
                };
                let wait = match due {
                    // Claiming needs the lease to be past, not at, its expiry: one more ms. Work
                    // due already (a row another worker held as we looked) is looked at again
                    // shortly, not at once; and never longer than `recheck` (due times are on
                    // the database's clock, which may be apart from this one's).
                    Ok(Some((due, now))) => Duration::from_millis((due - now).max(0) as u64 + 1)
                        .clamp(AGAIN_SOON, recheck.max(AGAIN_SOON)),
                    Ok(None) => recheck,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading when the next job is due failed");
                        BLIND_RECHECK
                    }
                };
                tokio::select! {
                    _ = &mut news => {}
                    _ = tokio::time::sleep(wait.min(recheck)) => {}
                    _ = shutdown.changed() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "claiming a job failed; retrying");
                tokio::time::sleep(BLIND_RECHECK).await;
            }
        }
    }
}

/// PostgreSQL only: wakes this process's idle workers whenever any process queues a job
/// ([`Db::enqueue_job`](crate::db::Db::enqueue_job) notifies [`JOBS_CHANNEL`]), on a
/// connection of its own (outside the pool). A connection that fails is made again, with
/// backoff, and the workers look at the queue after each (re)connection for what was queued
/// while nobody listened. One that dies without the socket telling (a half-open TCP
/// connection) is not noticed: the workers then still look every [`IDLE_RECHECK`].
async fn listen_for_jobs(
    url: String,
    wakeup: Arc<tokio::sync::Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let listening = async {
        let mut backoff = Duration::from_secs(1);
        loop {
            let connecting = async {
                let mut listener = sqlx::postgres::PgListener::connect(&url).await?;
                // A lost connection is made again (and LISTEN sent again) inside `try_recv`.
                listener.eager_reconnect(true);
                listener.listen(JOBS_CHANNEL).await?;
                Ok::<_, sqlx::Error>(listener)
            };
            match connecting.await {
                Ok(mut listener) => {
                    backoff = Duration::from_secs(1);
                    wakeup.notify_waiters();
                    loop {
                        match listener.try_recv().await {
                            Ok(Some(_)) => wakeup.notify_waiters(),
                            // The connection was lost and has been made again.
                            Ok(None) => {
                                tracing::warn!(
                                    "job notifications: connection lost; listening again"
                                );
                                wakeup.notify_waiters();
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "job notifications: connection failed");
                                break;
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_s = backoff.as_secs(), "job notifications: cannot listen");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(IDLE_RECHECK);
        }
    };
    tokio::select! {
        () = listening => {}
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
}

/// Why a job ended without success.
enum JobError {
    /// The input is not usable media: no retry, the asset is errored with this message.
    BadMedia(String),
    /// Anything else: retried with backoff while attempts remain.
    Failed(String),
}

async fn run_job(deps: &JobDeps, worker: &str, job: Job) {
    let work = deps.config.data_dir.join("work").join(&job.id);
    let result = transcode_job(deps, worker, &job, &work).await;
    let _ = tokio::fs::remove_dir_all(&work).await;
    let db = &deps.db;
    let outcome = match result {
        Ok(()) => db.finish_job(&job.id, worker).await.map(|_| "done"),
        Err(JobError::BadMedia(message)) => {
            tracing::info!(%message, "not playable media");
            // Nothing is kept of media that cannot play.
            if let Ok(asset) = db.get_asset(&job.tenant_id, &job.asset_id).await {
                if let Ok(prefix) = Prefix::parse(&asset.storage_prefix)
                    && let Err(e) = deps.store.delete_prefix(&prefix).await
                {
                    tracing::warn!(error = %e, "could not delete the stored original");
                }
                if let Err(e) = db.delete_content_keys(&asset.storage_prefix).await {
                    tracing::warn!(error = %e, "could not delete the asset's content keys");
                }
            }
            let _ = db
                .set_asset_status(&job.asset_id, AssetStatus::Errored, Some(&message))
                .await;
            db.finish_job(&job.id, worker).await.map(|_| "bad media")
        }
        Err(JobError::Failed(message)) => {
            let backoff = 5_000 * job.attempts.max(1);
            match db.fail_job(&job.id, worker, &message, backoff).await {
                Ok(true) => {
                    tracing::warn!(%message, retry_in_ms = backoff, "job failed; will retry");
                    Ok("retry")
                }
                Ok(false) => {
                    tracing::error!(%message, "job failed for good");
                    db.set_asset_status(&job.asset_id, AssetStatus::Errored, Some(&message))
                        .await
                        .map(|_| "failed")
                }
                Err(e) => Err(e),
            }
        }
    };
    if let Err(e) = outcome {
        tracing::error!(error = %e, "recording the job's outcome");
    }
}

fn media_info_json(p: &Probe) -> serde_json::Value {
    serde_json::json!({
        "duration_s": p.duration_s,
        "container": p.container,
        "video": p.video.as_ref().map(|v| serde_json::json!({
            "codec": v.codec, "width": v.width, "height": v.height, "fps": v.fps, "rotation": v.rotation,
        })),
        "audio": p.audio.as_ref().map(|a| serde_json::json!({
            "codec": a.codec, "channels": a.channels, "rate": a.rate,
        })),
    })
}

async fn transcode_job(
    deps: &JobDeps,
    worker: &str,
    job: &Job,
    work: &Path,
) -> Result<(), JobError> {
    let failed = |what: &str, e: &dyn std::fmt::Display| JobError::Failed(format!("{what}: {e}"));
    let asset = deps
        .db
        .get_asset(&job.tenant_id, &job.asset_id)
        .await
        .map_err(|e| failed("asset", &e))?;
    deps.db
        .set_asset_status(&asset.id, AssetStatus::Processing, None)
        .await
        .map_err(|e| failed("asset", &e))?;
    tokio::fs::create_dir_all(work)
        .await
        .map_err(|e| failed("work folder", &e))?;
    let input = work.join("original");
    let original = ObjectKey::parse(&format!("{}original", asset.storage_prefix))
        .map_err(|e| failed("key", &e))?;
    deps.store
        .get_to_file(&original, &input)
        .await
        .map_err(|e| failed("fetching the original", &e))?;

    let probe_input = input.clone();
    let probed =
        tokio::task::spawn_blocking(move || vod::probe(&probe_input, Duration::from_secs(60)))
            .await
            .map_err(|e| failed("probe", &e))?;
    let probe = match probed {
        Ok(p) => p,
        Err(vod::ProbeError::Timeout(t)) => {
            return Err(JobError::Failed(format!("probing timed out after {t:?}")));
        }
        Err(vod::ProbeError::Io(e)) => {
            return Err(JobError::Failed(format!("reading the original: {e}")));
        }
        Err(e) => return Err(JobError::BadMedia(e.to_string())),
    };
    let duration_ms = (probe.duration_s * 1000.0) as i64;
    deps.db
        .set_asset_media_info(
            &asset.id,
            &media_info_json(&probe).to_string(),
            Some(duration_ms),
        )
        .await
        .map_err(|e| failed("asset", &e))?;

    let preset = deps
        .presets
        .get(asset.ladder.as_deref().unwrap_or("default"))
        .or_else(|| deps.presets.get("default"))
        .expect("default preset is embedded")
        .clone();
    let renditions = crate::pipeline::ladder_renditions(&preset);
    let mut spec = TranscodeSpec::new(renditions, preset.segment_duration_s);
    spec.passthrough_h264 = preset.passthrough;
    spec.mp4 = Some(Mp4Spec {
        source: Mp4Source::Largest,
        dir: Some(work.to_path_buf()),
    });
    spec.poster_at_s = Some(deps.config.jobs.poster_time_s.min(probe.duration_s / 3.0));
    spec.storyboard = Some(storyboard_spec(probe.duration_s));

    let uploader = Uploader::spawn(deps.store.clone(), 32, format!("asset {}", asset.id));
    let mut output = HlsOutput::new(OutputParams {
        tenant_id: asset.tenant_id.clone(),
        prefix: asset.storage_prefix.clone(),
        public_url: deps.public_url.clone(),
        window: None,
        rotation: 0,
        target_duration: preset.segment_duration_s,
        content_keys: deps.content_keys.clone(),
        program_date_time: false,
        packaging: asset
            .packaging
            .as_deref()
            .and_then(crate::media::Packaging::parse)
            .unwrap_or(preset.packaging),
        cenc_scheme: asset
            .cenc_scheme
            .as_deref()
            .and_then(crate::media::cenc::Scheme::parse)
            .unwrap_or(preset.cenc_scheme),
        low_latency: None,
        key_provider: crate::drm::speke::from_config(
            &deps.config.licences,
            deps.content_keys.clone(),
        ),
    });
    // Every VOD rendition's audio is the transcode's AAC-LC.
    output.set_audio_codec(Some("mp4a.40.2".into()));

    let (tx, mut events) = mpsc::channel::<VodEvent>(8);
    let cancel = Arc::new(AtomicBool::new(false));
    let (path, cancel_flag) = (input.clone(), cancel.clone());
    let transcode =
        tokio::task::spawn_blocking(move || vod::transcode(&path, &spec, tx, cancel_flag));

    let lease_ms = deps.config.jobs.lease_s as i64 * 1000;
    let mut heartbeat =
        tokio::time::interval(Duration::from_millis((lease_ms / 3).max(1000) as u64));
    let mut progress = 0.0f64;
    let mut storyboard = None;
    let result = loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(VodEvent::Progress { fraction }) => progress = fraction,
                Some(VodEvent::Renditions(list)) => output.set_renditions(list),
                Some(VodEvent::Segment(segment)) => {
                    if let Err(e) = output.add_segment(segment, &uploader).await {
                        cancel.store(true, Ordering::SeqCst);
                        break Err(JobError::Failed(e.to_string()));
                    }
                }
                Some(VodEvent::Mp4(file)) => {
                    if let Err(e) = store_file(deps, &asset.storage_prefix, "download.mp4", &file, "video/mp4").await {
                        cancel.store(true, Ordering::SeqCst);
                        break Err(failed("storing the MP4", &e));
                    }
                }
                Some(VodEvent::Poster(jpeg)) => {
                    if let Ok(key) = ObjectKey::parse(&format!("{}poster.jpg", asset.storage_prefix)) {
                        uploader.put(key, jpeg, "image/jpeg").await;
                    }
                }
                Some(VodEvent::Storyboard(board)) => storyboard = Some(board),
                Some(VodEvent::Warning(w)) => tracing::warn!(warning = %w, "transcode"),
                Some(VodEvent::Done) => break Ok(()),
                Some(VodEvent::Error(e)) => break Err(JobError::Failed(format!("transcode: {e}"))),
                None => break Err(JobError::Failed("transcode stopped without a result".into())),
            },
            _ = heartbeat.tick() => {
                let permille = (progress * 1000.0).clamp(0.0, 999.0) as i64;
                match deps.db.heartbeat_job(&job.id, worker, lease_ms, permille).await {
                    Ok(true) => {}
                    Ok(false) => {
                        cancel.store(true, Ordering::SeqCst);
                        break Err(JobError::Failed("lost the job's lease to another worker".into()));
                    }
                    Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
                }
            }
        }
    };
    // A transcode still sending learns that nobody reads any more, and stops.
    drop(events);
    let _ = transcode.await;
    result?;
    if !output.has_media() {
        return Err(JobError::BadMedia(
            "no playable video or audio came out of the file".into(),
        ));
    }
    output.write_vod_playlists(&uploader).await;
    match storyboard {
        Some(board) => store_storyboard(&asset, board, &uploader).await?,
        None if probe.video.is_some() => tracing::warn!("no storyboard for this asset"),
        None => {}
    }
    extras(deps, &asset, &preset, &input, work).await?;
    uploader.flush().await;
    deps.db
        .finish_asset(
            &asset.id,
            AssetStatus::Ready,
            output.duration_ms().or(Some(duration_ms)),
            None,
        )
        .await
        .map_err(|e| failed("asset", &e))?;
    tracing::info!(duration_ms, "asset ready");
    Ok(())
}

/// One storyboard tile every 2 s, up to 100 tiles (longer media spreads them out).
fn storyboard_spec(duration_s: f64) -> StoryboardSpec {
    StoryboardSpec {
        interval_s: (duration_s / 100.0).max(2.0),
        tile_width: 160,
        columns: 10,
    }
}

/// The scrubbing previews the transcode made: the sprite and the WebVTT that points into it.
async fn store_storyboard(
    asset: &crate::db::Asset,
    board: Storyboard,
    uploader: &Uploader,
) -> Result<(), JobError> {
    let vtt = vod::storyboard_vtt(&board, &format!("{}.jpg", asset.playback_id));
    for (name, bytes, content_type) in [
        (
            "storyboard.jpg",
            bytes::Bytes::from(board.jpeg),
            "image/jpeg",
        ),
        ("storyboard.vtt", bytes::Bytes::from(vtt), "text/vtt"),
    ] {
        let key = ObjectKey::parse(&format!("{}{name}", asset.storage_prefix))
            .map_err(|e| JobError::Failed(format!("key: {e}")))?;
        uploader.put(key, bytes, content_type).await;
    }
    Ok(())
}

/// A WebM download when the preset asks for one, from the same local original.
async fn extras(
    deps: &JobDeps,
    asset: &crate::db::Asset,
    preset: &crate::pipeline::preset::Preset,
    input: &Path,
    work: &Path,
) -> Result<(), JobError> {
    let failed = |what: &str, e: &dyn std::fmt::Display| JobError::Failed(format!("{what}: {e}"));
    if let Some(webm) = &preset.webm {
        let out = work.join("download.webm");
        let (path, target, spec) = (input.to_path_buf(), out.clone(), webm.clone());
        tokio::task::spawn_blocking(move || {
            vod::webm(&path, &target, spec.height, spec.video_bitrate_kbps)
        })
        .await
        .map_err(|e| failed("webm", &e))?
        .map_err(|e| JobError::Failed(format!("WebM download: {e}")))?;
        store_file(
            deps,
            &asset.storage_prefix,
            "download.webm",
            &out,
            "video/webm",
        )
        .await
        .map_err(|e| failed("storing the WebM", &e))?;
    }
    Ok(())
}

async fn store_file(
    deps: &JobDeps,
    prefix: &str,
    name: &str,
    file: &Path,
    content_type: &str,
) -> anyhow::Result<()> {
    let key = ObjectKey::parse(&format!("{prefix}{name}"))?;
    deps.store.put_file(&key, file, content_type).await?;
    Ok(())
}
