//! Viewer analytics rows: one per view, upserted by the aggregator, and the per-minute
//! roll-ups that each write of a view changes in the same transaction.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use sqlx::{AnyConnection, FromRow, Row};

use super::rollup::{self, Rollup, RollupKey, RollupOf};
use super::{Db, DbResult};

/// A view as stored.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct StoredView {
    pub tenant_id: String,
    pub id: String,
    pub playback_id: String,
    pub viewer_id: Option<String>,
    pub started_at: i64,
    pub ended_at: i64,
    pub finished: i64,
    pub play_requested: i64,
    pub video_startup_time_ms: Option<i64>,
    pub key_fetch_time_ms: Option<i64>,
    pub watch_time_ms: i64,
    pub playing_time_ms: i64,
    pub rebuffer_count: i64,
    pub rebuffer_duration_ms: i64,
    pub exit_before_video_start: i64,
    pub startup_failure: i64,
    pub playback_failure: i64,
    pub business_exception: i64,
    pub upscale: f64,
    pub downscale: f64,
    pub max_upscale: f64,
    pub weighted_bitrate: Option<f64>,
    pub completed: Option<i64>,
    pub live_latency_ms: Option<i64>,
    pub country: Option<String>,
    pub browser: String,
    pub os: String,
    pub device_type: String,
    pub player: String,
    /// Comma-separated: `beacon`, `cmcd`, `server`.
    pub sources: String,
    /// The rendition played longest (`720p`); `""` when unknown.
    pub rendition: String,
    /// Every metric of the view, as JSON.
    pub summary: String,
    /// Views written before timelines were packed: the player's events as a JSON array;
    /// NULL once pruned, and for every view written since.
    pub events: Option<String>,
    /// The player's events, packed (`analytics::timeline`); NULL once pruned.
    pub timeline: Option<Vec<u8>>,
    /// VOD views: the percents of the asset played, a 100-bit set (bit `i` for percent `i`)
    /// as 16 little-endian bytes; NULL for live.
    pub watched: Option<Vec<u8>>,
    pub updated_at: i64,
}

const VIEW_COLUMNS: &str = "tenant_id, id, playback_id, viewer_id, started_at, ended_at, \
    finished, play_requested, video_startup_time_ms, key_fetch_time_ms, watch_time_ms, \
    playing_time_ms, rebuffer_count, \
    rebuffer_duration_ms, exit_before_video_start, startup_failure, playback_failure, \
    business_exception, upscale, downscale, max_upscale, weighted_bitrate, completed, \
    live_latency_ms, country, browser, os, device_type, player, sources, rendition, summary, events, \
    timeline, watched, updated_at";

/// The dimensions metrics can be filtered and grouped by: columns of both the views and
/// their roll-ups.
pub const FILTER_COLUMNS: [&str; 8] = [
    "playback_id",
    "country",
    "browser",
    "os",
    "device_type",
    "player",
    "sources",
    "rendition",
];

/// The roll-up sums, in [`Rollup`]'s order.
const ROLLUP_SUMS: [&str; 27] = [
    "views",
    "started_views",
    "startup_time_ms",
    "watch_time_ms",
    "playing_time_ms",
    "rebuffer_count",
    "rebuffer_duration_ms",
    "exits_before_video_start",
    "startup_failures",
    "playback_failures",
    "business_exceptions",
    "vod_views",
    "completed_views",
    "upscale_ms",
    "downscale_ms",
    "bitrate_playing_ms",
    "bitrate_ms",
    "startup_score",
    "smoothness_score",
    "quality_score",
    "success_score",
    "scored_views",
    "experience_score",
    "latency_views",
    "live_latency_ms",
    "key_views",
    "key_fetch_time_ms",
];

/// Which of [`ROLLUP_SUMS`] are floating point.
fn is_real(column: &str) -> bool {
    column.ends_with("_score") || matches!(column, "upscale_ms" | "downscale_ms" | "bitrate_ms")
}

/// One group of a metric query: its time bucket (0 when not by time), its dimension values
/// and its sums.
#[derive(Debug, Clone, PartialEq)]
pub struct RollupGroup {
    pub at: i64,
    pub key: Vec<String>,
    pub sums: Rollup,
}

/// One view's startup time, with its group (as [`RollupGroup`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StartupSample {
    pub at: i64,
    pub key: Vec<String>,
    pub startup_ms: i64,
}

/// Every column but the large ones (the summary and the events).
const VIEW_COLUMNS_LIGHT: &str = "tenant_id, id, playback_id, viewer_id, started_at, ended_at, \
    finished, play_requested, video_startup_time_ms, key_fetch_time_ms, watch_time_ms, \
    playing_time_ms, rebuffer_count, \
    rebuffer_duration_ms, exit_before_video_start, startup_failure, playback_failure, \
    business_exception, upscale, downscale, max_upscale, weighted_bitrate, completed, \
    live_latency_ms, country, browser, os, device_type, player, sources, rendition, '' AS summary, \
    NULL AS events, NULL AS timeline, watched, updated_at";

/// Writes a view, replacing what an earlier flush stored of it.
async fn upsert_view(conn: &mut AnyConnection, v: &StoredView) -> DbResult<()> {
    sqlx::query(&format!(
        "INSERT INTO analytics_views ({VIEW_COLUMNS}) VALUES \
         ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
         $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34, $35, $36) \
         ON CONFLICT (tenant_id, id) DO UPDATE SET started_at = excluded.started_at, \
         playback_id = excluded.playback_id, \
         ended_at = excluded.ended_at, viewer_id = excluded.viewer_id, \
         player = excluded.player, country = excluded.country, \
         browser = excluded.browser, os = excluded.os, device_type = excluded.device_type, \
         finished = excluded.finished, play_requested = excluded.play_requested, video_startup_time_ms = excluded.video_startup_time_ms, \
         key_fetch_time_ms = excluded.key_fetch_time_ms, \
         watch_time_ms = excluded.watch_time_ms, playing_time_ms = excluded.playing_time_ms, \
         rebuffer_count = excluded.rebuffer_count, \
         rebuffer_duration_ms = excluded.rebuffer_duration_ms, \
         exit_before_video_start = excluded.exit_before_video_start, \
         startup_failure = excluded.startup_failure, \
         playback_failure = excluded.playback_failure, \
         business_exception = excluded.business_exception, upscale = excluded.upscale, \
         downscale = excluded.downscale, max_upscale = excluded.max_upscale, \
         weighted_bitrate = excluded.weighted_bitrate, completed = excluded.completed, \
         live_latency_ms = excluded.live_latency_ms, sources = excluded.sources, \
         rendition = excluded.rendition, \
         summary = excluded.summary, events = excluded.events, timeline = excluded.timeline, \
         watched = excluded.watched, updated_at = excluded.updated_at"
    ))
    .bind(&v.tenant_id)
    .bind(&v.id)
    .bind(&v.playback_id)
    .bind(&v.viewer_id)
    .bind(v.started_at)
    .bind(v.ended_at)
    .bind(v.finished)
    .bind(v.play_requested)
    .bind(v.video_startup_time_ms)
    .bind(v.key_fetch_time_ms)
    .bind(v.watch_time_ms)
    .bind(v.playing_time_ms)
    .bind(v.rebuffer_count)
    .bind(v.rebuffer_duration_ms)
    .bind(v.exit_before_video_start)
    .bind(v.startup_failure)
    .bind(v.playback_failure)
    .bind(v.business_exception)
    .bind(v.upscale)
    .bind(v.downscale)
    .bind(v.max_upscale)
    .bind(v.weighted_bitrate)
    .bind(v.completed)
    .bind(v.live_latency_ms)
    .bind(&v.country)
    .bind(&v.browser)
    .bind(&v.os)
    .bind(&v.device_type)
    .bind(&v.player)
    .bind(&v.sources)
    .bind(&v.rendition)
    .bind(&v.summary)
    .bind(&v.events)
    .bind(&v.timeline)
    .bind(&v.watched)
    .bind(v.updated_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// What is stored of `views` (without their summary and events), by (tenant, id).
async fn stored_views(
    conn: &mut AnyConnection,
    views: &[StoredView],
) -> DbResult<HashMap<(String, String), StoredView>> {
    let keys = views.iter().map(|v| (v.tenant_id.as_str(), v.id.as_str()));
    views_by_key(conn, VIEW_COLUMNS_LIGHT, keys).await
}

/// The stored views of these (tenant, id) keys, by key, with `columns`: one query per
/// tenant and 500 views.
async fn views_by_key<'a>(
    conn: &mut AnyConnection,
    columns: &str,
    keys: impl Iterator<Item = (&'a str, &'a str)>,
) -> DbResult<HashMap<(String, String), StoredView>> {
    let mut ids: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (tenant_id, id) in keys {
        ids.entry(tenant_id).or_default().insert(id);
    }
    let mut stored = HashMap::new();
    for (tenant_id, ids) in ids {
        let ids: Vec<&str> = ids.into_iter().collect();
        for chunk in ids.chunks(500) {
            let marks: Vec<String> = (2..chunk.len() + 2).map(|i| format!("${i}")).collect();
            // Planned at each use (see `get_view`); its length varies anyway.
            let sql = format!(
                "SELECT {columns} FROM analytics_views WHERE tenant_id = $1 AND id IN ({})",
                marks.join(", ")
            );
            let mut query = sqlx::query_as::<_, StoredView>(&sql)
                .bind(tenant_id)
                .persistent(false);
            for id in chunk {
                query = query.bind(*id);
            }
            for v in query.fetch_all(&mut *conn).await? {
                stored.insert((v.tenant_id.clone(), v.id.clone()), v);
            }
        }
    }
    Ok(stored)
}

/// Adds `sums` to the roll-up row `key` of a tenant.
async fn add_rollup(
    conn: &mut AnyConnection,
    tenant_id: &str,
    key: &RollupKey,
    sums: &Rollup,
) -> DbResult<()> {
    let columns = ROLLUP_SUMS.join(", ");
    let values: Vec<String> = (0..ROLLUP_SUMS.len())
        .map(|i| format!("${}", i + 11))
        .collect();
    let updates: Vec<String> = ROLLUP_SUMS
        .iter()
        .map(|c| format!("{c} = analytics_minutes.{c} + excluded.{c}"))
        .collect();
    let sql = format!(
        "INSERT INTO analytics_minutes (tenant_id, minute, playback_id, country, browser, os, \
         device_type, player, sources, rendition, {columns}) VALUES ($1, $2, $3, $4, $5, $6, $7, \
         $8, $9, $10, {}) ON CONFLICT (tenant_id, minute, playback_id, country, browser, os, \
         device_type, player, sources, rendition) DO UPDATE SET {}",
        values.join(", "),
        updates.join(", ")
    );
    let r = sums;
    sqlx::query(&sql)
        .bind(tenant_id)
        .bind(key.minute)
        .bind(&key.playback_id)
        .bind(&key.country)
        .bind(&key.browser)
        .bind(&key.os)
        .bind(&key.device_type)
        .bind(&key.player)
        .bind(&key.sources)
        .bind(&key.rendition)
        .bind(r.views)
        .bind(r.started_views)
        .bind(r.startup_time_ms)
        .bind(r.watch_time_ms)
        .bind(r.playing_time_ms)
        .bind(r.rebuffer_count)
        .bind(r.rebuffer_duration_ms)
        .bind(r.exits_before_video_start)
        .bind(r.startup_failures)
        .bind(r.playback_failures)
        .bind(r.business_exceptions)
        .bind(r.vod_views)
        .bind(r.completed_views)
        .bind(r.upscale_ms)
        .bind(r.downscale_ms)
        .bind(r.bitrate_playing_ms)
        .bind(r.bitrate_ms)
        .bind(r.startup_score)
        .bind(r.smoothness_score)
        .bind(r.quality_score)
        .bind(r.success_score)
        .bind(r.scored_views)
        .bind(r.experience_score)
        .bind(r.latency_views)
        .bind(r.live_latency_ms)
        .bind(r.key_views)
        .bind(r.key_fetch_time_ms)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The `WHERE` clause of a metric query (tenant, time range, filters from `$4` on).
fn metric_scope(time_column: &str, filters: &[(&str, String)]) -> String {
    let mut sql = format!("WHERE tenant_id = $1 AND {time_column} >= $2 AND {time_column} < $3");
    for (i, (column, _)) in filters.iter().enumerate() {
        assert!(FILTER_COLUMNS.contains(column), "filter on {column}");
        sql.push_str(&format!(" AND {column} = ${}", i + 4));
    }
    sql
}

/// SQLite only: an index over every column of the roll-ups, in the order metric queries
/// read them, so a query scans it alone instead of looking each row up in the table
/// (about 4× faster on 100,000 rows). PostgreSQL caps an index at 32 columns and does not
/// need it, so it is made here rather than in a migration shared by both.
pub(super) async fn sqlite_covering_index(pool: &sqlx::AnyPool) -> DbResult<()> {
    sqlx::query(&format!(
        "CREATE INDEX IF NOT EXISTS analytics_minutes_covering ON analytics_minutes \
         (tenant_id, minute, country, browser, os, device_type, player, sources, rendition, \
         playback_id, {})",
        ROLLUP_SUMS.join(", ")
    ))
    .execute(pool)
    .await?;
    Ok(())
}

/// A metric query with its scope bound: tenant, the time range from its whole minute, and
/// the filters' values (see [`metric_scope`]).
fn scoped<'q>(
    sql: &'q str,
    tenant_id: &'q str,
    from_ms: i64,
    to_ms: i64,
    filters: &'q [(&str, String)],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    // Whole minutes at both ends, for the roll-ups (keyed by minute) and the views alike.
    let to_minute =
        to_ms.div_euclid(60_000) * 60_000 + if to_ms % 60_000 == 0 { 0 } else { 60_000 };
    let mut query = sqlx::query(sql)
        .bind(tenant_id)
        .bind(from_ms.div_euclid(60_000) * 60_000)
        .bind(to_minute);
    for (_, value) in filters {
        query = query.bind(value.as_str());
    }
    query
}

impl Db {
    /// Writes views (in order; one may come more than once) and adds each change to the
    /// roll-ups (what a view adds: `of`), all in one transaction. What is stored of the views
    /// is read in one query per tenant, and the changes are summed per roll-up row before
    /// they are written: views of one stream in one minute from one kind of client make one
    /// roll-up write. On SQLite it takes the write lock first, so a writer elsewhere makes it
    /// wait (`busy_timeout`) rather than fail.
    pub async fn write_views(&self, views: &[StoredView], of: RollupOf) -> DbResult<()> {
        if views.is_empty() {
            return Ok(());
        }
        let mut tx = match self.backend {
            super::Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            super::Backend::Postgres => self.pool.begin().await?,
        };
        let mut stored = stored_views(&mut tx, views).await?;
        let mut changes: Vec<(String, RollupKey, Rollup)> = Vec::new();
        let mut at: HashMap<(String, RollupKey), usize> = HashMap::new();
        for v in views {
            upsert_view(&mut tx, v).await?;
            let old = stored.insert((v.tenant_id.clone(), v.id.clone()), v.clone());
            for (key, sums) in rollup::changes(old.as_ref(), v, of) {
                match at.entry((v.tenant_id.clone(), key)) {
                    Entry::Occupied(i) => changes[*i.get()].2.add(&sums, 1),
                    Entry::Vacant(slot) => {
                        changes.push((v.tenant_id.clone(), slot.key().1.clone(), sums));
                        slot.insert(changes.len() - 1);
                    }
                }
            }
        }
        for (tenant_id, key, sums) in &changes {
            if !sums.is_zero() {
                add_rollup(&mut tx, tenant_id, key, sums).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Writes one view (see [`Db::write_views`]).
    pub async fn write_view(&self, v: &StoredView, of: RollupOf) -> DbResult<()> {
        self.write_views(std::slice::from_ref(v), of).await
    }

    /// Roll-up sums of a tenant's views that started in `[from_ms, to_ms)` (whole minutes),
    /// matching every filter (`(column, value)`, columns from [`FILTER_COLUMNS`]), grouped by
    /// the `group_by` columns and, with `bucket_ms`, by period. Only `views` and the sums
    /// named in `only` are read (all with `None`); the others come back 0.
    #[allow(clippy::too_many_arguments)]
    pub async fn rollups(
        &self,
        tenant_id: &str,
        from_ms: i64,
        to_ms: i64,
        filters: &[(&str, String)],
        group_by: &[&str],
        bucket_ms: Option<i64>,
        only: Option<&[&str]>,
    ) -> DbResult<Vec<RollupGroup>> {
        let mut keys: Vec<String> = group_by
            .iter()
            .map(|c| {
                assert!(FILTER_COLUMNS.contains(c), "group by {c}");
                c.to_string()
            })
            .collect();
        let at = match bucket_ms {
            Some(b) => {
                let at = format!("(minute / {b}) * {b}");
                keys.insert(0, at.clone());
                at
            }
            None => "0".to_string(),
        };
        let sums: Vec<String> = ROLLUP_SUMS
            .iter()
            .map(|c| {
                let kind = if is_real(c) {
                    "DOUBLE PRECISION"
                } else {
                    "BIGINT"
                };
                if *c == "views" || only.is_none_or(|o| o.contains(c)) {
                    format!("CAST(COALESCE(SUM({c}), 0) AS {kind})")
                } else {
                    format!("CAST(0 AS {kind})")
                }
            })
            .collect();
        let selected: Vec<String> = std::iter::once(format!("CAST({at} AS BIGINT)"))
            .chain(group_by.iter().map(|c| c.to_string()))
            .collect();
        let grouped = if keys.is_empty() {
            String::new()
        } else {
            format!(" GROUP BY {}", keys.join(", "))
        };
        let sql = format!(
            "SELECT {}, {} FROM analytics_minutes {}{grouped}",
            selected.join(", "),
            sums.join(", "),
            metric_scope("minute", filters),
        );
        let rows = scoped(&sql, tenant_id, from_ms, to_ms, filters)
            .fetch_all(&self.pool)
            .await?;
        let n = group_by.len();
        rows.iter()
            .map(|row| {
                let at: i64 = row.try_get(0)?;
                let key = (1..=n)
                    .map(|i| row.try_get::<String, _>(i))
                    .collect::<Result<Vec<_>, _>>()?;
                let i = |k: usize| row.try_get::<i64, _>(n + 1 + k);
                let f = |k: usize| row.try_get::<f64, _>(n + 1 + k);
                let sums = Rollup {
                    views: i(0)?,
                    started_views: i(1)?,
                    startup_time_ms: i(2)?,
                    watch_time_ms: i(3)?,
                    playing_time_ms: i(4)?,
                    rebuffer_count: i(5)?,
                    rebuffer_duration_ms: i(6)?,
                    exits_before_video_start: i(7)?,
                    startup_failures: i(8)?,
                    playback_failures: i(9)?,
                    business_exceptions: i(10)?,
                    vod_views: i(11)?,
                    completed_views: i(12)?,
                    upscale_ms: f(13)?,
                    downscale_ms: f(14)?,
                    bitrate_playing_ms: i(15)?,
                    bitrate_ms: f(16)?,
                    startup_score: f(17)?,
                    smoothness_score: f(18)?,
                    quality_score: f(19)?,
                    success_score: f(20)?,
                    scored_views: i(21)?,
                    experience_score: f(22)?,
                    latency_views: i(23)?,
                    live_latency_ms: i(24)?,
                    key_views: i(25)?,
                    key_fetch_time_ms: i(26)?,
                };
                Ok(RollupGroup { at, key, sums })
            })
            .filter(|g: &DbResult<RollupGroup>| !matches!(g, Ok(g) if g.sums.views == 0))
            .collect()
    }

    /// The startup times of a tenant's views that started in `[from_ms, to_ms)`, matching the
    /// filters, with their groups as [`Db::rollups`] gives them (for the percentiles, which
    /// sums cannot give). Reads the view rows, never the events.
    pub async fn startup_times(
        &self,
        tenant_id: &str,
        from_ms: i64,
        to_ms: i64,
        filters: &[(&str, String)],
        group_by: &[&str],
        bucket_ms: Option<i64>,
    ) -> DbResult<Vec<StartupSample>> {
        let at = match bucket_ms {
            Some(b) => format!("(started_at / {b}) * {b}"),
            None => "0".to_string(),
        };
        let keys: Vec<String> = group_by
            .iter()
            .map(|c| {
                assert!(FILTER_COLUMNS.contains(c), "group by {c}");
                format!("COALESCE({c}, '')")
            })
            .collect();
        let sql = format!(
            "SELECT CAST({at} AS BIGINT), {}video_startup_time_ms FROM analytics_views {} \
             AND play_requested = 1 AND video_startup_time_ms IS NOT NULL",
            keys.iter().map(|k| format!("{k}, ")).collect::<String>(),
            metric_scope("started_at", filters)
        );
        let rows = scoped(&sql, tenant_id, from_ms, to_ms, filters)
            .fetch_all(&self.pool)
            .await?;
        let n = group_by.len();
        rows.iter()
            .map(|row| {
                Ok(StartupSample {
                    at: row.try_get(0)?,
                    key: (1..=n)
                        .map(|i| row.try_get::<String, _>(i))
                        .collect::<Result<Vec<_>, _>>()?,
                    startup_ms: row.try_get(n + 1)?,
                })
            })
            .collect()
    }

    /// One view. The statement is planned at each use, not prepared once: PostgreSQL plans
    /// a prepared statement for good while the table is still empty and unanalysed, and then
    /// chose the `(tenant_id, started_at)` index, reading every view of the tenant per
    /// lookup (measured: 150 views/s written at 20,000 views, all CPU).
    /// The stored views of these (tenant, id) keys, whole, by key.
    pub async fn get_views<'a>(
        &self,
        keys: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> DbResult<HashMap<(String, String), StoredView>> {
        let mut conn = self.pool.acquire().await?;
        views_by_key(&mut conn, VIEW_COLUMNS, keys).await
    }

    pub async fn get_view(&self, tenant_id: &str, id: &str) -> DbResult<Option<StoredView>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {VIEW_COLUMNS} FROM analytics_views WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .persistent(false)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// A tenant's views, optionally of one playback id and/or viewer, by id.
    pub async fn list_views(
        &self,
        tenant_id: &str,
        playback_id: Option<&str>,
        viewer_id: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> DbResult<Vec<StoredView>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {VIEW_COLUMNS} FROM analytics_views WHERE tenant_id = $1 \
             AND ($2 = '' OR playback_id = $2) AND ($3 = '' OR viewer_id = $3) AND id > $4 \
             ORDER BY id LIMIT $5"
        ))
        .bind(tenant_id)
        .bind(playback_id.unwrap_or(""))
        .bind(viewer_id.unwrap_or(""))
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The audience of a VOD asset's views that started from `from_ms` to `to_ms`: how many
    /// views asked to play it, and for each percent of its duration how many played it.
    pub async fn retention(
        &self,
        tenant_id: &str,
        playback_id: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> DbResult<(i64, [i64; 100])> {
        use futures::TryStreamExt;
        // Summed as the rows come: an asset's views are never all in memory.
        let mut rows = sqlx::query(
            "SELECT watched FROM analytics_views WHERE tenant_id = $1 AND playback_id = $2 \
             AND started_at >= $3 AND started_at < $4 AND play_requested = 1 \
             AND watched IS NOT NULL",
        )
        .bind(tenant_id)
        .bind(playback_id)
        .bind(from_ms)
        .bind(to_ms)
        .fetch(&self.pool);
        let (mut views, mut counts) = (0, [0i64; 100]);
        while let Some(row) = rows.try_next().await? {
            let bytes: Vec<u8> = row.try_get(0)?;
            let bits = <[u8; 16]>::try_from(bytes.as_slice()).map_or(0, u128::from_le_bytes);
            views += 1;
            for (i, count) in counts.iter_mut().enumerate() {
                *count += ((bits >> i) & 1) as i64;
            }
        }
        Ok((views, counts))
    }

    /// Forgets the raw events of views that ended before `before_ms`; returns how many.
    pub async fn prune_view_events(&self, before_ms: i64) -> DbResult<u64> {
        let done = sqlx::query(
            "UPDATE analytics_views SET events = NULL, timeline = NULL WHERE ended_at < $1 \
             AND (events IS NOT NULL OR timeline IS NOT NULL)",
        )
        .bind(before_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
