//! Live chat messages: kept per live stream with their wall-clock time and broadcast, and
//! hidden (never deleted) by moderation.

use serde::Serialize;
use sqlx::FromRow;

use super::{Db, DbResult};

/// One chat message as stored.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize)]
pub struct ChatMessage {
    pub id: String,
    pub tenant_id: String,
    pub live_stream_id: String,
    pub broadcast: Option<String>,
    pub viewer: String,
    pub name: String,
    pub color: String,
    pub text: String,
    pub at: i64,
    pub hidden_at: Option<i64>,
}

const COLUMNS: &str =
    "id, tenant_id, live_stream_id, broadcast, viewer, name, color, text, at, hidden_at";

impl Db {
    pub async fn insert_chat_message(&self, m: &ChatMessage) -> DbResult<()> {
        sqlx::query(&format!(
            "INSERT INTO chat_messages ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL)"
        ))
        .bind(&m.id)
        .bind(&m.tenant_id)
        .bind(&m.live_stream_id)
        .bind(&m.broadcast)
        .bind(&m.viewer)
        .bind(&m.name)
        .bind(&m.color)
        .bind(&m.text)
        .bind(m.at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The last `n` visible messages of a live stream, oldest first.
    pub async fn recent_chat(&self, live_stream_id: &str, n: i64) -> DbResult<Vec<ChatMessage>> {
        let mut rows: Vec<ChatMessage> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM chat_messages WHERE live_stream_id = $1 AND hidden_at IS NULL \
             ORDER BY id DESC LIMIT $2"
        ))
        .bind(live_stream_id)
        .bind(n)
        .fetch_all(&self.pool)
        .await?;
        rows.reverse();
        Ok(rows)
    }

    /// A page of a live stream's messages, hidden ones included, oldest first.
    pub async fn list_chat(
        &self,
        tenant_id: &str,
        live_stream_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> DbResult<Vec<ChatMessage>> {
        self.tenant_page(
            "chat_messages",
            COLUMNS,
            tenant_id,
            Some(("live_stream_id", live_stream_id)),
            after,
            limit,
        )
        .await
    }

    /// Hides message `id` of the live stream; `None` if there is no such message.
    pub async fn hide_chat_message(
        &self,
        tenant_id: &str,
        live_stream_id: &str,
        id: &str,
    ) -> DbResult<Option<ChatMessage>> {
        sqlx::query(
            "UPDATE chat_messages SET hidden_at = COALESCE(hidden_at, $1) \
             WHERE id = $2 AND tenant_id = $3 AND live_stream_id = $4",
        )
        .bind(super::now_ms())
        .bind(id)
        .bind(tenant_id)
        .bind(live_stream_id)
        .execute(&self.pool)
        .await?;
        Ok(sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM chat_messages WHERE id = $1 AND tenant_id = $2 \
             AND live_stream_id = $3"
        ))
        .bind(id)
        .bind(tenant_id)
        .bind(live_stream_id)
        .fetch_optional(&self.pool)
        .await?)
    }
}
