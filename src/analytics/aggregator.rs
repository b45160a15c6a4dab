//! The view aggregator: beacon batches come through a bounded queue (the HTTP handler never
//! waits on SQL), open views are held in memory, and a view is written when it ends and at
//! least every `analytics.flush_s` while it is open. A crash loses at most that much of the
//! views still open. A view seen again after a restart picks up its stored events.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::beacon::Batch;
use super::cmcd::{Cmcd, CmcdTotals};
use super::peaks::Peaks;
use super::store::{DB_JOBS, DbJob, DbLink, Lookup, Restored, db_task};
use super::timeline::Timeline;
use super::view::{EventKind, Summary, VIEW_TIMEOUT_MS, summarize};
use crate::clock::now_ms;
use crate::config::AnalyticsConfig;
use crate::db::{Db, StoredView};

/// How long an ended view stays open for batches still on their way (a retry, a flush that
/// raced the page's last beacon).
const ENDED_GRACE_MS: i64 = 30_000;

/// Views a client address may open from CMCD alone, per second and in a burst: anyone who
/// can fetch a public segment can name a session id.
const CMCD_VIEWS_PER_IP: (f64, u32) = (0.2, 5);

/// Events kept per view at most (about 13 hours of heartbeats); later heartbeats and key
/// loads are left out, other events still counted up to twice that.
const MAX_EVENTS_PER_VIEW: usize = 5_000;

/// Where a view is watched from, as the server sees the beacon requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dimensions {
    pub country: Option<String>,
    pub browser: &'static str,
    pub os: &'static str,
    pub device_type: &'static str,
}

/// A checked batch, with what the server knows of it.
#[derive(Debug)]
pub struct Arrival {
    pub tenant_id: String,
    /// `beacon` (the script), or `cmcd` (CMCD v2 event reports).
    pub source: &'static str,
    pub batch: Batch,
    pub dims: Dimensions,
    pub received_ms: i64,
}

/// The CMCD of one media request whose session id names a view.
#[derive(Debug)]
pub struct CmcdArrival {
    /// The client address, for the limit on views opened by CMCD alone.
    pub ip: Option<String>,
    pub tenant_id: String,
    pub playback_id: String,
    pub cmcd: Cmcd,
    pub dims: Dimensions,
    pub received_ms: i64,
}

/// The key server's answer to a key request whose CMCD session id names a view.
#[derive(Debug)]
pub struct KeyArrival {
    pub tenant_id: String,
    pub view_id: String,
    pub granted: bool,
    /// Refused with 403 (policy, entitlement, country): a business exception.
    pub forbidden: bool,
    pub received_ms: i64,
}

/// One media segment fetched by a client that named no view (no CMCD session id).
#[derive(Debug)]
pub struct ServerArrival {
    pub ip: Option<String>,
    pub tenant_id: String,
    pub playback_id: String,
    /// A hash of the user agent: with the address, what tells one client from another.
    pub agent_hash: u64,
    pub dims: Dimensions,
    /// The segment's file name and duration.
    pub segment: String,
    pub media_ms: u32,
    pub received_ms: i64,
}

/// A view from server requests alone ends after this much silence (a player that stops
/// fetching has stopped watching; its next request starts a new view).
const SERVER_VIEW_IDLE_MS: i64 = 120_000;

/// Distinct segments a server view counts at most.
const MAX_SERVER_SEGMENTS: usize = 25_000;

enum Entry {
    Batch(Box<Arrival>),
    Cmcd(Box<CmcdArrival>),
    Server(Box<ServerArrival>),
    Key(Box<KeyArrival>),
    Flush(oneshot::Sender<()>),
    Realtime(String, oneshot::Sender<BTreeMap<String, u64>>),
}

/// A view heard from within this long may be a concurrent viewer (heartbeats come every
/// 10 s while playing).
const CONCURRENT_WINDOW_MS: i64 = 30_000;

/// The queue is full: the batch was not taken (the caller answers 503).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the analytics queue is full; retry later")]
pub struct QueueFull;

/// Handle to the aggregator. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Analytics {
    tx: mpsc::Sender<Entry>,
    /// Segment durations of the playlists read, for server views.
    pub durations: std::sync::Arc<super::server::SegmentDurations>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Entry")
    }
}

impl Analytics {
    /// Starts the aggregator on the current runtime; it writes every open view and stops
    /// once every handle is gone (call [`Analytics::flush`] at shutdown).
    pub fn start(db: Db, config: AnalyticsConfig) -> Self {
        let (tx, rx) = mpsc::channel(config.queue_batches.max(1));
        let (jobs, job_rx) = mpsc::channel(DB_JOBS);
        let (restored_tx, restored) = mpsc::unbounded_channel();
        tokio::spawn(db_task(db, job_rx, restored_tx));
        tokio::spawn(run(DbLink { jobs }, config, rx, restored));
        Self {
            tx,
            durations: Default::default(),
        }
    }

    /// Queues a batch without waiting.
    pub fn offer(&self, arrival: Arrival) -> Result<(), QueueFull> {
        metrics::counter!("ferrocast_analytics_events_total")
            .increment(arrival.batch.events.len() as u64);
        self.tx
            .try_send(Entry::Batch(Box::new(arrival)))
            .map_err(|_| {
                metrics::counter!("ferrocast_analytics_dropped_total").increment(1);
                QueueFull
            })
    }

    /// Queues a media request's CMCD without waiting; a full queue drops it, counted.
    pub fn observe(&self, arrival: CmcdArrival) {
        if self.tx.try_send(Entry::Cmcd(Box::new(arrival))).is_err() {
            metrics::counter!("ferrocast_analytics_dropped_total").increment(1);
        }
    }

    /// Queues a key request's answer for the view it names; a full queue drops it, counted.
    pub fn observe_key(&self, arrival: KeyArrival) {
        if self.tx.try_send(Entry::Key(Box::new(arrival))).is_err() {
            metrics::counter!("ferrocast_analytics_dropped_total").increment(1);
        }
    }

    /// Queues a segment fetched without a view id, for server views; a full queue drops it,
    /// counted.
    pub fn observe_server(&self, arrival: ServerArrival) {
        if self.tx.try_send(Entry::Server(Box::new(arrival))).is_err() {
            metrics::counter!("ferrocast_analytics_dropped_total").increment(1);
        }
    }

    /// Concurrent viewers of a tenant now, by playback id: open views heard from in the last
    /// 30 s whose viewer is starting, playing, rebuffering or seeking (not paused).
    pub async fn realtime(&self, tenant_id: &str) -> BTreeMap<String, u64> {
        let (tx, rx) = oneshot::channel();
        if self
            .tx
            .send(Entry::Realtime(tenant_id.to_string(), tx))
            .await
            .is_err()
        {
            return BTreeMap::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Resolves once everything queued before it is applied and every open view written
    /// (tests, shutdown).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Entry::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

/// A view being watched.
struct OpenView {
    tenant_id: String,
    id: String,
    playback_id: String,
    viewer_id: Option<String>,
    player: String,
    dims: Dimensions,
    duration_ms: Option<i64>,
    /// Its events, packed (about 9 bytes a heartbeat).
    events: Timeline,
    /// Server time minus the viewer's clock, from the view's first batch.
    skew_ms: i64,
    first_arrival_ms: i64,
    last_arrival_ms: i64,
    /// What fed it: `beacon`, `cmcd`.
    sources: std::collections::BTreeSet<&'static str>,
    cmcd: CmcdTotals,
    /// Server views: the distinct segments fetched and their summed duration.
    server_segments: std::collections::HashSet<String>,
    server_ms: i64,
    /// Waiting for what the database holds of it: not written until then.
    restoring: bool,
    /// Whether its viewer was starting, playing, rebuffering or seeking at its last event,
    /// as of its last summary (every write; CMCD and server views: requesting media).
    active: bool,
    /// When it ended (`viewend` or a fatal error): kept open [`ENDED_GRACE_MS`] more.
    ended_ms: Option<i64>,
    dirty: bool,
}

impl OpenView {
    /// A concurrent viewer at `now`: not ended, heard from within the window, and active
    /// (worked out afresh for a view still being restored, which no write summarized yet).
    fn concurrent(&self, now: i64) -> bool {
        if self.ended_ms.is_some() || now - self.last_arrival_ms > CONCURRENT_WINDOW_MS {
            return false;
        }
        if self.restoring && !self.events.is_empty() {
            return summarize(&self.events.events(), self.duration_ms).active;
        }
        self.active
    }
}

/// Views written at once, at most; more are written in the next transaction.
const MAX_ROWS_PER_WRITE: usize = 500;

/// The open views, and the rows of views waiting to be written: they go to the database
/// task in transactions of up to [`MAX_ROWS_PER_WRITE`] ([`flush_rows`], every quarter
/// second, and at once when a view leaves memory), not one per view.
#[derive(Default)]
struct Open {
    views: HashMap<(String, String), OpenView>,
    pending: Vec<StoredView>,
    /// Views opened and not yet asked of the database: asked together with the pending
    /// rows (after them: a row written before is found).
    lookups: Vec<Lookup>,
    /// Playback id → its asset's duration (None: live or unknown), and when it was read.
    durations: HashMap<String, (Option<i64>, i64)>,
}

impl std::ops::Deref for Open {
    type Target = HashMap<(String, String), OpenView>;
    fn deref(&self) -> &Self::Target {
        &self.views
    }
}

impl std::ops::DerefMut for Open {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.views
    }
}

/// Hands the pending rows (views that are not being restored) to the database task, up to
/// [`MAX_ROWS_PER_WRITE`] per transaction, then the lookups of views opened since.
async fn flush_rows(db: &DbLink, open: &mut Open) {
    while !open.pending.is_empty() {
        let n = open.pending.len().min(MAX_ROWS_PER_WRITE);
        let rows: Vec<StoredView> = open.pending.drain(..n).collect();
        db.send(DbJob::Write(rows)).await;
    }
    if !open.lookups.is_empty() {
        db.send(DbJob::Lookup(std::mem::take(&mut open.lookups)))
            .await;
    }
}

/// Takes what the database holds of a view opened before it answered: a view that had
/// finished is dropped with what came since (its id was reused); otherwise its stored
/// events join the new ones.
fn restore(open: &mut Open, r: Restored) {
    if let Some((pb, d)) = r.duration {
        if open.durations.len() >= 10_000 {
            open.durations.clear();
        }
        open.durations.insert(pb, (d, now_ms()));
    }
    let Some(view) = open.views.get_mut(&r.key) else {
        return;
    };
    if let Some((Some(d), _)) = open.durations.get(&view.playback_id) {
        view.duration_ms = Some(*d);
    }
    view.restoring = false;
    match r.stored {
        // A finished view takes no more events; one stored as playing something else is not
        // this (a reused id, or a CMCD session id across videos): both are dropped.
        Some(v) if v.finished != 0 || v.playback_id != view.playback_id => {
            open.views.remove(&r.key);
            return;
        }
        Some(v) => {
            if let Some(totals) = serde_json::from_str::<serde_json::Value>(&v.summary)
                .ok()
                .and_then(|j| serde_json::from_value::<CmcdTotals>(j.get("cmcd")?.clone()).ok())
            {
                view.cmcd.merge(&totals);
            }
            let stored = super::timeline::stored(&v).unwrap_or_else(|e| {
                tracing::warn!(error = %e, view = %v.id, "restoring a view without its events");
                Vec::new()
            });
            // What came since is newer than what was stored: it is kept where both have a
            // `seq` (the stored events fill the gaps).
            view.events.add(stored, |_, _| true);
            for s in v.sources.split(',') {
                match s {
                    "beacon" => view.sources.insert("beacon"),
                    "cmcd" => view.sources.insert("cmcd"),
                    _ => false,
                };
            }
            if v.viewer_id.is_some() && view.viewer_id.is_none() {
                view.viewer_id = v.viewer_id;
            }
        }
        None => {}
    }
    view.dirty = true;
    if view.ended_ms.is_some() {
        view.dirty = false;
        let row = row(view, true);
        open.pending.push(row);
    }
}

async fn run(
    db: DbLink,
    config: AnalyticsConfig,
    mut rx: mpsc::Receiver<Entry>,
    mut restored: mpsc::UnboundedReceiver<Restored>,
) {
    let mut open = Open::default();
    let mut peaks = Peaks::default();
    // (tenant, playback id, address, agent hash) → the server view it feeds now.
    let mut server_views: HashMap<(String, String, String, u64), String> = HashMap::new();
    let cmcd_views =
        crate::drm::ratelimit::RateLimiter::new(CMCD_VIEWS_PER_IP.0, CMCD_VIEWS_PER_IP.1);
    let mut tick = tokio::time::interval(Duration::from_secs(config.flush_s.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prune = tokio::time::interval(Duration::from_secs(3600));
    let mut rows_tick = tokio::time::interval(Duration::from_millis(250));
    rows_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            entry = rx.recv() => match entry {
                Some(Entry::Batch(arrival)) => {
                    take(&db, &config, &mut open, *arrival).await;
                }
                Some(Entry::Cmcd(arrival)) => {
                    take_cmcd(&db, &config, &mut open, &cmcd_views, *arrival).await;
                }
                Some(Entry::Server(arrival)) => {
                    take_server(&db, &config, &mut open, &mut server_views, &cmcd_views, *arrival)
                        .await;
                }
                Some(Entry::Key(arrival)) => take_key(&mut open, *arrival),
                Some(Entry::Realtime(tenant, answer)) => {
                    let _ = answer.send(concurrent(&open, &tenant, now_ms()));
                }
                Some(Entry::Flush(done)) => {
                    settle(&db, &mut open, &mut restored).await;
                    let now = now_ms();
                    write_all(&db, &mut open, now).await;
                    let mut minutes = sample(&mut peaks, &open, now);
                    minutes.extend(peaks.current());
                    db.send(DbJob::Peaks(minutes)).await;
                    db.send(DbJob::Barrier(done)).await;
                }
                None => break,
            },
            Some(r) = restored.recv() => restore(&mut open, r),
            _ = rows_tick.tick() => flush_rows(&db, &mut open).await,
            _ = tick.tick() => {
                let now = now_ms();
                write_all(&db, &mut open, now).await;
                let passed = sample(&mut peaks, &open, now);
                if !passed.is_empty() {
                    db.send(DbJob::Peaks(passed)).await;
                }
                server_views.retain(|k, id| open.contains_key(&(k.0.clone(), id.clone())));
            }
            _ = prune.tick() => {
                let keep_ms = config.raw_retention_days as i64 * 86_400_000;
                db.send(DbJob::Prune(now_ms() - keep_ms)).await;
            }
        }
    }
    settle(&db, &mut open, &mut restored).await;
    write_all(&db, &mut open, now_ms()).await;
    db.send(DbJob::Peaks(peaks.take_before(None))).await;
    let (done, written) = oneshot::channel();
    db.send(DbJob::Barrier(done)).await;
    let _ = written.await;
}

/// Samples the concurrent viewers (right after [`write_all`], when every view's `active` is
/// fresh); returns the peaks of the minutes that have passed.
fn sample(peaks: &mut Peaks, open: &Open, now: i64) -> Vec<crate::db::Peak> {
    let viewers = open
        .values()
        .filter(|v| v.concurrent(now))
        .map(|v| (v.tenant_id.as_str(), v.playback_id.as_str()));
    peaks.sample(viewers, now);
    peaks.take_before(Some(now))
}

/// Waits until the database task has answered every lookup asked so far, and takes the
/// answers: no view is left restoring (flushes, shutdown).
async fn settle(db: &DbLink, open: &mut Open, restored: &mut mpsc::UnboundedReceiver<Restored>) {
    flush_rows(db, open).await;
    let (done, answered) = oneshot::channel();
    db.send(DbJob::Barrier(done)).await;
    let _ = answered.await;
    while let Ok(r) = restored.try_recv() {
        restore(open, r);
    }
}

/// The open view `key`, opened now if needed: the database task is asked what it holds of
/// it (a continuation, or an id that finished before; asked with the other views opened in
/// the same quarter second), and until it answers the view is `restoring` and not written. `None`: the view plays something else than this claims.
#[allow(clippy::too_many_arguments)]
async fn open_view<'a>(
    db: &DbLink,
    config: &AnalyticsConfig,
    open: &'a mut Open,
    key: &(String, String),
    playback_id: &str,
    dims: &Dimensions,
    player: String,
    received_ms: i64,
    skew_ms: i64,
) -> Option<&'a mut OpenView> {
    if !open.contains_key(key) {
        if open.len() >= config.max_open_views {
            close_longest_silent(db, open).await;
        }
        // A VOD asset's duration, for completion (none for live); known ones are kept a
        // minute, so a popular asset's views do not each look it up.
        let now = now_ms();
        let known = open
            .durations
            .get(playback_id)
            .filter(|(_, at)| now - at < 60_000)
            .map(|(d, _)| *d);
        open.lookups.push(Lookup {
            key: key.clone(),
            playback_id: known.is_none().then(|| playback_id.to_string()),
        });
        if open.lookups.len() >= MAX_ROWS_PER_WRITE {
            flush_rows(db, open).await;
        }
        open.insert(
            key.clone(),
            OpenView {
                tenant_id: key.0.clone(),
                id: key.1.clone(),
                playback_id: playback_id.to_string(),
                viewer_id: None,
                player,
                dims: dims.clone(),
                duration_ms: known.flatten(),
                events: Timeline::default(),
                skew_ms,
                first_arrival_ms: received_ms,
                last_arrival_ms: received_ms,
                sources: Default::default(),
                cmcd: CmcdTotals::default(),
                server_segments: Default::default(),
                server_ms: 0,
                ended_ms: None,
                restoring: true,
                active: true,
                dirty: true,
            },
        );
    }
    let view = open.get_mut(key).expect("inserted above");
    // One view plays one thing; what claims otherwise is not this view's.
    (view.playback_id == playback_id).then_some(view)
}

/// Applies one batch to its view.
async fn take(db: &DbLink, config: &AnalyticsConfig, open: &mut Open, a: Arrival) {
    let key = (a.tenant_id.clone(), a.batch.view_id.clone());
    let newest = a
        .batch
        .events
        .iter()
        .map(|e| e.t)
        .max()
        .unwrap_or(a.received_ms);
    let player = match (&a.batch.player.name, &a.batch.player.version) {
        (Some(n), Some(v)) => format!("{n} {v}"),
        (Some(n), None) => n.clone(),
        _ => "unknown".into(),
    };
    let skew = a.received_ms - newest;
    let Some(view) = open_view(
        db,
        config,
        open,
        &key,
        &a.batch.playback_id,
        &a.dims,
        player.clone(),
        a.received_ms,
        skew,
    )
    .await
    else {
        return;
    };
    // The script's events are the view's: the same player's CMCD reports would count its
    // play states twice.
    let mut events = a.batch.events;
    if a.source == "cmcd" && view.sources.contains("beacon") {
        events.clear();
    }
    if view.events.is_empty() || (a.source == "beacon" && !view.sources.contains("beacon")) {
        // The view's first events, or the script's first (CMCD may have come first): their
        // clock and player are the view's.
        view.skew_ms = skew;
        view.player = player;
    }
    view.sources.insert(a.source);
    if view.viewer_id.is_none() {
        view.viewer_id = a.batch.viewer_id.clone();
    }
    let mut ends = false;
    view.events.add(events, |e, held| {
        let routine = matches!(e.kind, EventKind::Heartbeat | EventKind::Keyloaded);
        if (held >= MAX_EVENTS_PER_VIEW && routine) || held >= 2 * MAX_EVENTS_PER_VIEW {
            return false;
        }
        ends |=
            e.kind == EventKind::Viewend || (e.kind == EventKind::Error && e.fatal == Some(true));
        true
    });
    view.last_arrival_ms = a.received_ms;
    view.dirty = true;
    if ends || view.ended_ms.is_some() {
        view.ended_ms.get_or_insert(a.received_ms);
        // A view still being restored is written once the database has answered.
        if !view.restoring {
            view.dirty = false;
            let row = row(view, true);
            open.pending.push(row);
            if open.pending.len() >= MAX_ROWS_PER_WRITE {
                flush_rows(db, open).await;
            }
        }
    }
}

/// Applies one request's CMCD to the view its session id names (opening a CMCD-only view
/// for a player without the script).
async fn take_cmcd(
    db: &DbLink,
    config: &AnalyticsConfig,
    open: &mut Open,
    limit: &crate::drm::ratelimit::RateLimiter,
    a: CmcdArrival,
) {
    let Some(sid) = a.cmcd.sid.clone() else {
        return;
    };
    let key = (a.tenant_id.clone(), sid);
    if !open.contains_key(&key)
        && let Some(ip) = &a.ip
        && limit.check(ip).is_err()
    {
        metrics::counter!("ferrocast_analytics_cmcd_views_limited_total").increment(1);
        return;
    }
    let Some(view) = open_view(
        db,
        config,
        open,
        &key,
        &a.playback_id,
        &a.dims,
        "unknown".into(),
        a.received_ms,
        0,
    )
    .await
    else {
        return;
    };
    view.cmcd.add(&a.cmcd);
    view.sources.insert("cmcd");
    view.last_arrival_ms = a.received_ms;
    view.dirty = true;
}

/// Applies a key request's answer to the open view it names (a key request alone opens
/// none: its session id is checked against nothing else).
fn take_key(open: &mut Open, a: KeyArrival) {
    let Some(view) = open.get_mut(&(a.tenant_id, a.view_id)) else {
        metrics::counter!("ferrocast_analytics_key_reports_unmatched_total").increment(1);
        return;
    };
    view.cmcd.keys_granted += u64::from(a.granted);
    view.cmcd.keys_forbidden += u64::from(a.forbidden);
    view.sources.insert("cmcd");
    view.last_arrival_ms = a.received_ms;
    view.dirty = true;
}

/// Applies a segment fetched without a view id to the server view of its client (opening
/// one, within the per-address limit, when it has none open).
async fn take_server(
    db: &DbLink,
    config: &AnalyticsConfig,
    open: &mut Open,
    server_views: &mut HashMap<(String, String, String, u64), String>,
    limit: &crate::drm::ratelimit::RateLimiter,
    a: ServerArrival,
) {
    let client = (
        a.tenant_id.clone(),
        a.playback_id.clone(),
        a.ip.clone().unwrap_or_default(),
        a.agent_hash,
    );
    let current = server_views
        .get(&client)
        .map(|id| (a.tenant_id.clone(), id.clone()))
        .filter(|key| open.get(key).is_some_and(|v| v.ended_ms.is_none()));
    let key = match current {
        Some(key) => key,
        None => {
            if let Some(ip) = &a.ip
                && limit.check(ip).is_err()
            {
                metrics::counter!("ferrocast_analytics_server_views_limited_total").increment(1);
                return;
            }
            let id = format!("srv_{}", uuid::Uuid::new_v4().simple());
            server_views.insert(client, id.clone());
            (a.tenant_id.clone(), id)
        }
    };
    let Some(view) = open_view(
        db,
        config,
        open,
        &key,
        &a.playback_id,
        &a.dims,
        a.dims.browser.to_string(),
        a.received_ms,
        0,
    )
    .await
    else {
        return;
    };
    view.sources.insert("server");
    if view.server_segments.len() < MAX_SERVER_SEGMENTS && view.server_segments.insert(a.segment) {
        view.server_ms += i64::from(a.media_ms);
    }
    view.last_arrival_ms = a.received_ms;
    view.dirty = true;
}

fn concurrent(
    open: &HashMap<(String, String), OpenView>,
    tenant: &str,
    now: i64,
) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for view in open.values().filter(|v| {
        v.tenant_id == tenant
            && v.ended_ms.is_none()
            && now - v.last_arrival_ms <= CONCURRENT_WINDOW_MS
    }) {
        let active = if view.events.is_empty() {
            true // CMCD alone: it is requesting media
        } else {
            summarize(&view.events.events(), view.duration_ms).active
        };
        if active {
            *counts.entry(view.playback_id.clone()).or_insert(0) += 1;
        }
    }
    counts
}

/// Writes every view that changed; ends those silent for the view timeout.
async fn write_all(db: &DbLink, open: &mut Open, now: i64) {
    let timed_out: Vec<_> = open
        .iter()
        .filter(|(_, v)| !v.restoring)
        .filter(|(_, v)| {
            let server_only = v.events.is_empty() && v.cmcd.requests == 0;
            now - v.last_arrival_ms > VIEW_TIMEOUT_MS
                || (server_only && now - v.last_arrival_ms > SERVER_VIEW_IDLE_MS)
                || v.ended_ms.is_some_and(|at| now - at > ENDED_GRACE_MS)
        })
        .map(|(k, _)| k.clone())
        .collect();
    let mut rows = Vec::new();
    for key in timed_out {
        // An ended view was written when it ended: again only if a batch came since.
        if let Some(mut view) = open.remove(&key)
            && (view.ended_ms.is_none() || view.dirty)
        {
            rows.push(row(&mut view, true));
        }
    }
    for view in open.values_mut().filter(|v| v.dirty && !v.restoring) {
        rows.push(row(view, false));
        view.dirty = false;
    }
    open.pending.extend(rows);
    flush_rows(db, open).await;
}

async fn close_longest_silent(db: &DbLink, open: &mut Open) {
    let oldest = open
        .iter()
        .filter(|(_, v)| !v.restoring)
        .min_by_key(|(_, v)| v.last_arrival_ms)
        .map(|(k, _)| k.clone());
    // Written, not ended: a later batch of it reopens it from the database.
    if let Some(mut view) = oldest.and_then(|k| open.remove(&k)) {
        let ended = view.ended_ms.is_some();
        let row = row(&mut view, ended);
        open.pending.push(row);
        flush_rows(db, open).await;
    }
}

/// The row of a view; `ended`: it takes no more events. Notes whether it is active.
fn row(view: &mut OpenView, ended: bool) -> StoredView {
    let mut events = view.events.events();
    if view.sources.contains("beacon") {
        // The script's events are the view's: CMCD event reports that came before it (or
        // before the view was restored) are not counted twice.
        events.retain(|e| e.seq < super::cmcd_events::SEQ_BASE);
    }
    let mut s: Summary = summarize(&events, view.duration_ms);
    view.active = events.is_empty() || s.active;
    s.finished |= ended;
    s.settle();
    let (started_at, ended_at) = if events.is_empty() {
        // CMCD or server requests alone: the media it requested is what it watched.
        let media_ms = view.cmcd.media_ms as i64 + view.server_ms;
        s.play_requested = true;
        s.watch_time_ms = media_ms;
        s.playing_time_ms = media_ms;
        s.completed = view
            .duration_ms
            .map(|d| media_ms as f64 >= super::view::COMPLETION_SHARE * d as f64);
        // The key server refused every key it was asked for (403): a business exception.
        s.business_exception = view.cmcd.keys_forbidden > 0 && view.cmcd.keys_granted == 0;
        (view.first_arrival_ms, view.last_arrival_ms)
    } else {
        (s.started_at + view.skew_ms, s.ended_at + view.skew_ms)
    };
    let mut summary = serde_json::to_value(&s).expect("a summary serializes");
    if view.cmcd.requests > 0 || view.cmcd.keys_granted + view.cmcd.keys_forbidden > 0 {
        summary["cmcd"] = serde_json::to_value(&view.cmcd).expect("totals serialize");
    }
    if !view.server_segments.is_empty() {
        summary["server"] = serde_json::json!({
            "segments": view.server_segments.len(),
            "media_ms": view.server_ms,
        });
    }
    StoredView {
        tenant_id: view.tenant_id.clone(),
        id: view.id.clone(),
        playback_id: view.playback_id.clone(),
        viewer_id: view.viewer_id.clone(),
        started_at,
        ended_at,
        finished: i64::from(s.finished),
        play_requested: i64::from(s.play_requested),
        video_startup_time_ms: s.video_startup_time_ms,
        key_fetch_time_ms: s.key_fetch_time_ms,
        watch_time_ms: s.watch_time_ms,
        playing_time_ms: s.playing_time_ms,
        rebuffer_count: i64::from(s.rebuffer_count),
        rebuffer_duration_ms: s.rebuffer_duration_ms,
        exit_before_video_start: i64::from(s.exit_before_video_start),
        startup_failure: i64::from(s.startup_failure),
        playback_failure: i64::from(s.playback_failure),
        business_exception: i64::from(s.business_exception),
        upscale: s.upscale,
        downscale: s.downscale,
        max_upscale: s.max_upscale,
        weighted_bitrate: s.weighted_bitrate,
        completed: s.completed.map(i64::from),
        live_latency_ms: s.live_latency_ms.map(|l| l + view.skew_ms),
        country: view.dims.country.clone(),
        browser: view.dims.browser.to_string(),
        os: view.dims.os.to_string(),
        device_type: view.dims.device_type.to_string(),
        player: view.player.clone(),
        sources: view.sources.iter().copied().collect::<Vec<_>>().join(","),
        rendition: s.rendition.clone().unwrap_or_default(),
        summary: summary.to_string(),
        events: None,
        timeline: Some(view.events.bytes().to_vec()),
        watched: s.watched.map(|w| w.to_le_bytes().to_vec()),
        updated_at: now_ms(),
    }
}
