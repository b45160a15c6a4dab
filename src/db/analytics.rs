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
    pub video_startup_time_ms: Option<i64>,
    pub watch_time_ms: i64,
    pub playing_time_ms: i64,
    pub rebuffer_count: i64,
    pub rebuffer_duration_ms: i64,
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
    finished, video_startup_time_ms, watch_time_ms, playing_time_ms, rebuffer_count, \
    rebuffer_duration_ms, country, browser, os, device_type, player, sources, summary, events, \
    updated_at";

impl Db {
    /// Writes a view, replacing what an earlier flush stored of it.
    pub async fn upsert_view(&self, v: &StoredView) -> DbResult<()> {
        sqlx::query(&format!(
            "INSERT INTO analytics_views ({VIEW_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
             $19, $20, $21) \
             ON CONFLICT (tenant_id, id) DO UPDATE SET ended_at = excluded.ended_at, \
             finished = excluded.finished, video_startup_time_ms = excluded.video_startup_time_ms, \
             watch_time_ms = excluded.watch_time_ms, playing_time_ms = excluded.playing_time_ms, \
             rebuffer_count = excluded.rebuffer_count, \
             rebuffer_duration_ms = excluded.rebuffer_duration_ms, sources = excluded.sources, \
             summary = excluded.summary, events = excluded.events, updated_at = excluded.updated_at"
        ))
        .bind(&v.tenant_id)
        .bind(&v.id)
        .bind(&v.playback_id)
        .bind(&v.viewer_id)
        .bind(v.started_at)
        .bind(v.ended_at)
        .bind(v.finished)
        .bind(v.video_startup_time_ms)
        .bind(v.watch_time_ms)
        .bind(v.playing_time_ms)
        .bind(v.rebuffer_count)
        .bind(v.rebuffer_duration_ms)
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
