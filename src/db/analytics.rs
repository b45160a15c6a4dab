//! Viewer analytics rows: one per view, upserted by the aggregator.

use sqlx::FromRow;

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
    pub country: Option<String>,
    pub browser: String,
    pub os: String,
    pub device_type: String,
    pub player: String,
    /// Comma-separated: `beacon`, `cmcd`, `server`.
    pub sources: String,
    /// Every metric of the view, as JSON.
    pub summary: String,
    /// The player's events, as a JSON array; NULL once pruned.
    pub events: Option<String>,
    pub updated_at: i64,
}

const VIEW_COLUMNS: &str = "tenant_id, id, playback_id, viewer_id, started_at, ended_at, \
    finished, play_requested, video_startup_time_ms, watch_time_ms, playing_time_ms, rebuffer_count, \
    rebuffer_duration_ms, exit_before_video_start, startup_failure, playback_failure, \
    business_exception, upscale, downscale, max_upscale, weighted_bitrate, completed, country, \
    browser, os, device_type, player, sources, summary, events, updated_at";

/// The dimensions views can be filtered and grouped by.
pub const FILTER_COLUMNS: [&str; 7] = [
    "playback_id",
    "viewer_id",
    "country",
    "browser",
    "os",
    "device_type",
    "player",
];

/// Every column but the large ones (the summary and the events).
const VIEW_COLUMNS_LIGHT: &str = "tenant_id, id, playback_id, viewer_id, started_at, ended_at, \
    finished, play_requested, video_startup_time_ms, watch_time_ms, playing_time_ms, rebuffer_count, \
    rebuffer_duration_ms, exit_before_video_start, startup_failure, playback_failure, \
    business_exception, upscale, downscale, max_upscale, weighted_bitrate, completed, country, \
    browser, os, device_type, player, sources, '' AS summary, NULL AS events, updated_at";

impl Db {
    /// Writes a view, replacing what an earlier flush stored of it.
    pub async fn upsert_view(&self, v: &StoredView) -> DbResult<()> {
        sqlx::query(&format!(
            "INSERT INTO analytics_views ({VIEW_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
             $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31) \
             ON CONFLICT (tenant_id, id) DO UPDATE SET started_at = excluded.started_at, \
             ended_at = excluded.ended_at, viewer_id = excluded.viewer_id, \
             player = excluded.player, country = excluded.country, \
             browser = excluded.browser, os = excluded.os, device_type = excluded.device_type, \
             finished = excluded.finished, play_requested = excluded.play_requested, video_startup_time_ms = excluded.video_startup_time_ms, \
             watch_time_ms = excluded.watch_time_ms, playing_time_ms = excluded.playing_time_ms, \
             rebuffer_count = excluded.rebuffer_count, \
             rebuffer_duration_ms = excluded.rebuffer_duration_ms, \
             exit_before_video_start = excluded.exit_before_video_start, \
             startup_failure = excluded.startup_failure, \
             playback_failure = excluded.playback_failure, \
             business_exception = excluded.business_exception, upscale = excluded.upscale, \
             downscale = excluded.downscale, max_upscale = excluded.max_upscale, \
             weighted_bitrate = excluded.weighted_bitrate, completed = excluded.completed, \
             sources = excluded.sources, \
             summary = excluded.summary, events = excluded.events, updated_at = excluded.updated_at"
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
        .bind(&v.country)
        .bind(&v.browser)
        .bind(&v.os)
        .bind(&v.device_type)
        .bind(&v.player)
        .bind(&v.sources)
        .bind(&v.summary)
        .bind(&v.events)
        .bind(v.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn get_view(&self, tenant_id: &str, id: &str) -> DbResult<Option<StoredView>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {VIEW_COLUMNS} FROM analytics_views WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
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

    /// The tenant's views that started in `[from_ms, to_ms)`, matching every filter given
    /// (`(column, value)`, columns from [`FILTER_COLUMNS`]), for metric queries.
    pub async fn views_for_metrics(
        &self,
        tenant_id: &str,
        from_ms: i64,
        to_ms: i64,
        filters: &[(&str, String)],
    ) -> DbResult<Vec<StoredView>> {
        let mut sql = format!(
            "SELECT {VIEW_COLUMNS_LIGHT} FROM analytics_views WHERE tenant_id = $1 \
             AND started_at >= $2 AND started_at < $3 AND play_requested = 1"
        );
        for (i, (column, _)) in filters.iter().enumerate() {
            assert!(FILTER_COLUMNS.contains(column), "filter on {column}");
            sql.push_str(&format!(" AND {column} = ${}", i + 4));
        }
        let mut query = sqlx::query_as(&sql)
            .bind(tenant_id)
            .bind(from_ms)
            .bind(to_ms);
        for (_, value) in filters {
            query = query.bind(value);
        }
        Ok(query.fetch_all(&self.pool).await?)
    }

    /// Forgets the raw events of views that ended before `before_ms`; returns how many.
    pub async fn prune_view_events(&self, before_ms: i64) -> DbResult<u64> {
        let done = sqlx::query(
            "UPDATE analytics_views SET events = NULL WHERE ended_at < $1 AND events IS NOT NULL",
        )
        .bind(before_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
