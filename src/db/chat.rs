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
    /// `viewer:<id>` or `address:<hash>`: whom a ban by this message bans.
    pub sender: String,
    /// `address:<hash>` of the connection it came from.
    pub address: String,
    /// Comma-separated: `moderator`, `supporter`.
    pub badges: String,
}

const COLUMNS: &str = "id, tenant_id, live_stream_id, broadcast, viewer, name, color, text, at, \
                       hidden_at, sender, address, badges";

/// A stream's chat rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatRules {
    pub slow_mode_s: i64,
    pub entitled_only: bool,
    pub moderators: Vec<String>,
}

/// A ban (no `until`) or timeout.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize)]
pub struct ChatBan {
    pub id: String,
    pub live_stream_id: String,
    pub sender: String,
    pub name: String,
    pub until: Option<i64>,
    pub reason: Option<String>,
    pub created_at: i64,
}

const BAN_COLUMNS: &str = "id, live_stream_id, sender, name, until, reason, created_at";

impl Db {
    pub async fn insert_chat_message(&self, m: &ChatMessage) -> DbResult<()> {
        sqlx::query(&format!(
            "INSERT INTO chat_messages ({COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, $10, $11, $12)"
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
        .bind(&m.sender)
        .bind(&m.address)
        .bind(&m.badges)
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

    /// The messages of one broadcast still visible, from `after` (an id) on, oldest first:
    /// what a recording replays.
    pub async fn broadcast_chat(
        &self,
        broadcast: &str,
        after: Option<&str>,
        limit: i64,
    ) -> DbResult<Vec<ChatMessage>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM chat_messages WHERE broadcast = $1 AND hidden_at IS NULL \
             AND id > $2 ORDER BY id LIMIT $3"
        ))
        .bind(broadcast)
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Whether a broadcast has visible chat to replay.
    pub async fn has_broadcast_chat(&self, broadcast: &str) -> DbResult<bool> {
        Ok(sqlx::query_as::<_, (i64,)>(
            "SELECT 1 FROM chat_messages WHERE broadcast = $1 AND hidden_at IS NULL LIMIT 1",
        )
        .bind(broadcast)
        .fetch_optional(&self.pool)
        .await?
        .is_some())
    }

    /// Hides every visible message of `sender` in the live stream; their ids.
    pub async fn hide_chat_messages_of(
        &self,
        tenant_id: &str,
        live_stream_id: &str,
        sender: &str,
    ) -> DbResult<Vec<String>> {
        let mut tx = self.pool.begin().await?;
        let ids: Vec<(String,)> = sqlx::query_as(
            "SELECT id FROM chat_messages WHERE tenant_id = $1 AND live_stream_id = $2 \
             AND sender = $3 AND hidden_at IS NULL",
        )
        .bind(tenant_id)
        .bind(live_stream_id)
        .bind(sender)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE chat_messages SET hidden_at = $1 WHERE tenant_id = $2 \
             AND live_stream_id = $3 AND sender = $4 AND hidden_at IS NULL",
        )
        .bind(super::now_ms())
        .bind(tenant_id)
        .bind(live_stream_id)
        .bind(sender)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ids.into_iter().map(|(id,)| id).collect())
    }

    /// A message of the live stream, hidden or not.
    pub async fn chat_message(
        &self,
        tenant_id: &str,
        live_stream_id: &str,
        id: &str,
    ) -> DbResult<Option<ChatMessage>> {
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

    /// The stream's chat rules (the defaults if none were set).
    pub async fn chat_rules(&self, live_stream_id: &str) -> DbResult<ChatRules> {
        let row: Option<(i64, i64, String)> = sqlx::query_as(
            "SELECT slow_mode_s, entitled_only, moderators FROM chat_rules WHERE live_stream_id = $1",
        )
        .bind(live_stream_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some((slow_mode_s, entitled_only, moderators)) => ChatRules {
                slow_mode_s,
                entitled_only: entitled_only != 0,
                moderators: serde_json::from_str(&moderators).unwrap_or_default(),
            },
            None => ChatRules::default(),
        })
    }

    pub async fn set_chat_rules(
        &self,
        tenant_id: &str,
        live_stream_id: &str,
        rules: &ChatRules,
    ) -> DbResult<()> {
        sqlx::query(
            "INSERT INTO chat_rules (live_stream_id, tenant_id, slow_mode_s, entitled_only, \
             moderators, updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (live_stream_id) DO UPDATE SET slow_mode_s = $3, entitled_only = $4, \
             moderators = $5, updated_at = $6",
        )
        .bind(live_stream_id)
        .bind(tenant_id)
        .bind(rules.slow_mode_s)
        .bind(i64::from(rules.entitled_only))
        .bind(serde_json::to_string(&rules.moderators).expect("serializes"))
        .bind(super::now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Bans (`until` None) or times out `sender` (and anonymous chatting from `address`),
    /// replacing an earlier ban of theirs; a moderator's timeout (`by_moderator`) never
    /// shortens a ban.
    #[allow(clippy::too_many_arguments)]
    pub async fn ban_chat_sender(
        &self,
        tenant_id: &str,
        live_stream_id: &str,
        sender: &str,
        address: &str,
        name: &str,
        until: Option<i64>,
        reason: Option<&str>,
        by_moderator: bool,
    ) -> DbResult<ChatBan> {
        sqlx::query(
            "INSERT INTO chat_bans (id, tenant_id, live_stream_id, sender, address, name, until, \
             reason, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (live_stream_id, sender) DO UPDATE SET address = $5, name = $6, \
             until = CASE WHEN chat_bans.until IS NULL AND $10 = 1 THEN NULL ELSE $7 END, \
             reason = $8, created_at = $9",
        )
        .bind(super::new_id())
        .bind(tenant_id)
        .bind(live_stream_id)
        .bind(sender)
        .bind(address)
        .bind(name)
        .bind(until)
        .bind(reason)
        .bind(super::now_ms())
        .bind(i64::from(by_moderator))
        .execute(&self.pool)
        .await?;
        Ok(sqlx::query_as(&format!(
            "SELECT {BAN_COLUMNS} FROM chat_bans WHERE live_stream_id = $1 AND sender = $2"
        ))
        .bind(live_stream_id)
        .bind(sender)
        .fetch_one(&self.pool)
        .await?)
    }

    /// The ban or timeout of `sender` in force now, if any: theirs, or (for an anonymous
    /// sender) one that banned a signed-in viewer from their address.
    pub async fn chat_ban_of(
        &self,
        live_stream_id: &str,
        sender: &str,
    ) -> DbResult<Option<ChatBan>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {BAN_COLUMNS} FROM chat_bans WHERE live_stream_id = $1 \
             AND (sender = $2 OR address = $2) AND (until IS NULL OR until > $3) \
             ORDER BY until IS NULL DESC, until DESC LIMIT 1"
        ))
        .bind(live_stream_id)
        .bind(sender)
        .bind(super::now_ms())
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The bans and timeouts in force in a live stream, newest first (at most 500).
    pub async fn chat_bans(&self, tenant_id: &str, live_stream_id: &str) -> DbResult<Vec<ChatBan>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {BAN_COLUMNS} FROM chat_bans WHERE tenant_id = $1 AND live_stream_id = $2 \
             AND (until IS NULL OR until > $3) ORDER BY created_at DESC LIMIT 500"
        ))
        .bind(tenant_id)
        .bind(live_stream_id)
        .bind(super::now_ms())
        .fetch_all(&self.pool)
        .await?)
    }

    /// Lifts a ban; whether there was one.
    pub async fn lift_chat_ban(
        &self,
        tenant_id: &str,
        live_stream_id: &str,
        id: &str,
    ) -> DbResult<bool> {
        Ok(sqlx::query(
            "DELETE FROM chat_bans WHERE id = $1 AND tenant_id = $2 AND live_stream_id = $3",
        )
        .bind(id)
        .bind(tenant_id)
        .bind(live_stream_id)
        .execute(&self.pool)
        .await?
        .rows_affected()
            > 0)
    }
}
