//! Playback security: signing keys (public halves), the audit log, entitlements, the
//! per-playback-id policy switches, and the bulk reads that KEK rotation needs.

use sqlx::FromRow;

use super::webhooks::{EventObject, record_event};
use super::{Db, DbError, DbResult, PlaybackPolicy, StoredContentKey, new_id, now_ms};

/// A tenant's token signing key: only the public key is kept.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct SigningKey {
    pub id: String,
    pub tenant_id: String,
    /// RS256 | ES256
    pub algorithm: String,
    /// SubjectPublicKeyInfo PEM.
    pub public_key: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// One key-delivery decision.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct AuditEvent {
    pub id: String,
    pub tenant_id: String,
    /// key_grant | key_denial
    #[sqlx(rename = "type")]
    pub kind: String,
    pub playback_id: Option<String>,
    pub key_id: Option<String>,
    pub viewer: Option<String>,
    pub client_ip: Option<String>,
    /// granted | denied
    pub result: String,
    pub reason: Option<String>,
    pub at: i64,
}

/// A viewer's right to play one playback id, until `expires_at` (if set) or revocation.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, serde::Serialize, serde::Deserialize)]
pub struct Entitlement {
    pub id: String,
    pub tenant_id: String,
    pub playback_id: String,
    pub viewer: String,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

const SIGNING_KEY_COLUMNS: &str = "id, tenant_id, algorithm, public_key, created_at, revoked_at";
const AUDIT_COLUMNS: &str =
    "id, tenant_id, type, playback_id, key_id, viewer, client_ip, result, reason, at";
/// A viewer's ($1) live entitlements of tenant $2 at time $3 to playback id $4 or to any
/// id playing the same media (under prefix $5); `*` is an order for a product of all the
/// tenant's content.
const ENTITLED: &str = "viewer = $1 AND tenant_id = $2 \
     AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $3) \
     AND (playback_id = $4 OR playback_id = '*' OR playback_id IN ( \
         SELECT playback_id FROM live_streams WHERE current_prefix = $5 \
         UNION SELECT playback_id FROM assets WHERE storage_prefix = $5))";
const ENTITLEMENT_COLUMNS: &str =
    "id, tenant_id, playback_id, viewer, expires_at, created_at, revoked_at";

impl Db {
    pub async fn insert_signing_key(
        &self,
        tenant_id: &str,
        algorithm: &str,
        public_key: &str,
    ) -> DbResult<SigningKey> {
        let key = SigningKey {
            id: new_id(),
            tenant_id: tenant_id.to_string(),
            algorithm: algorithm.to_string(),
            public_key: public_key.to_string(),
            created_at: now_ms(),
            revoked_at: None,
        };
        sqlx::query(
            "INSERT INTO signing_keys (id, tenant_id, algorithm, public_key, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&key.id)
        .bind(&key.tenant_id)
        .bind(&key.algorithm)
        .bind(&key.public_key)
        .bind(key.created_at)
        .execute(&self.pool)
        .await?;
        Ok(key)
    }

    /// The key with this id (revoked or not), whatever tenant owns it.
    pub async fn get_signing_key(&self, id: &str) -> DbResult<Option<SigningKey>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {SIGNING_KEY_COLUMNS} FROM signing_keys WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn list_signing_keys(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> DbResult<Vec<SigningKey>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {SIGNING_KEY_COLUMNS} FROM signing_keys WHERE tenant_id = $1 AND id > $2 \
             ORDER BY id LIMIT $3"
        ))
        .bind(tenant_id)
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Revokes a tenant's key; NotFound if it is not theirs or already revoked.
    pub async fn revoke_signing_key(&self, tenant_id: &str, id: &str) -> DbResult<()> {
        let done = sqlx::query(
            "UPDATE signing_keys SET revoked_at = $1 \
             WHERE id = $2 AND tenant_id = $3 AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(id)
        .bind(tenant_id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(DbError::NotFound("signing key"));
        }
        Ok(())
    }

    /// Writes a batch of audit events in one transaction.
    pub async fn insert_audit_events(&self, events: &[AuditEvent]) -> DbResult<()> {
        let mut tx = self.pool.begin().await?;
        for e in events {
            sqlx::query(&format!(
                "INSERT INTO audit_events ({AUDIT_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            ))
            .bind(&e.id)
            .bind(&e.tenant_id)
            .bind(&e.kind)
            .bind(&e.playback_id)
            .bind(&e.key_id)
            .bind(&e.viewer)
            .bind(&e.client_ip)
            .bind(&e.result)
            .bind(&e.reason)
            .bind(e.at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A tenant's audit events, oldest first, optionally of one type.
    pub async fn list_audit_events(
        &self,
        tenant_id: &str,
        kind: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> DbResult<Vec<AuditEvent>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE tenant_id = $1 \
             AND ($2 = '' OR type = $2) AND id > $3 ORDER BY id LIMIT $4"
        ))
        .bind(tenant_id)
        .bind(kind.unwrap_or(""))
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn create_entitlement(
        &self,
        tenant_id: &str,
        playback_id: &str,
        viewer: &str,
        expires_at: Option<i64>,
    ) -> DbResult<Entitlement> {
        let e = Entitlement {
            id: new_id(),
            tenant_id: tenant_id.to_string(),
            playback_id: playback_id.to_string(),
            viewer: viewer.to_string(),
            expires_at,
            created_at: now_ms(),
            revoked_at: None,
        };
        let mut tx = self.write_tx().await?;
        sqlx::query(&format!(
            "INSERT INTO entitlements ({ENTITLEMENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        ))
        .bind(&e.id)
        .bind(&e.tenant_id)
        .bind(&e.playback_id)
        .bind(&e.viewer)
        .bind(e.expires_at)
        .bind(e.created_at)
        .bind(e.revoked_at)
        .execute(&mut *tx)
        .await?;
        let event = EventObject::Entitlement(e.clone());
        record_event(&mut tx, "entitlement.granted", &event).await?;
        tx.commit().await?;
        Ok(e)
    }

    pub async fn get_entitlement(&self, tenant_id: &str, id: &str) -> DbResult<Entitlement> {
        sqlx::query_as(&format!(
            "SELECT {ENTITLEMENT_COLUMNS} FROM entitlements WHERE id = $1 AND tenant_id = $2"
        ))
        .bind(id)
        .bind(tenant_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(DbError::NotFound("entitlement"))
    }

    pub async fn list_entitlements(
        &self,
        tenant_id: &str,
        playback_id: Option<&str>,
        viewer: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> DbResult<Vec<Entitlement>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {ENTITLEMENT_COLUMNS} FROM entitlements WHERE tenant_id = $1 \
             AND ($2 = '' OR playback_id = $2) AND ($3 = '' OR viewer = $3) AND id > $4 \
             ORDER BY id LIMIT $5"
        ))
        .bind(tenant_id)
        .bind(playback_id.unwrap_or(""))
        .bind(viewer.unwrap_or(""))
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn revoke_entitlement(&self, tenant_id: &str, id: &str) -> DbResult<Entitlement> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE entitlements SET revoked_at = $1 \
             WHERE id = $2 AND tenant_id = $3 AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(id)
        .bind(tenant_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(DbError::NotFound("entitlement"));
        }
        let e: Entitlement = sqlx::query_as(&format!(
            "SELECT {ENTITLEMENT_COLUMNS} FROM entitlements WHERE id = $1"
        ))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let event = EventObject::Entitlement(e.clone());
        record_event(&mut tx, "entitlement.revoked", &event).await?;
        tx.commit().await?;
        Ok(e)
    }
    /// The most lines `viewer`'s live entitlements to this media let them watch: none when
    /// one of them has no tier (or they hold none: keys refuse those), else the best tier.
    pub async fn entitlement_max_lines(
        &self,
        tenant_id: &str,
        playback_id: &str,
        prefix: Option<&str>,
        viewer: &str,
    ) -> DbResult<Option<u32>> {
        let (n, capped, best): (i64, i64, Option<i64>) = sqlx::query_as(&format!(
            "SELECT COUNT(*), COUNT(max_lines), MAX(max_lines) FROM entitlements WHERE {ENTITLED}"
        ))
        .bind(viewer)
        .bind(tenant_id)
        .bind(now_ms())
        .bind(playback_id)
        .bind(prefix.unwrap_or(""))
        .fetch_one(&self.pool)
        .await?;
        Ok(if n > 0 && capped == n {
            best.and_then(|b| u32::try_from(b).ok())
        } else {
            None
        })
    }

    /// Whether `viewer` holds a live entitlement to `playback_id` or to any other id that
    /// plays the same media (under `prefix`: a broadcast and its recording).
    pub async fn has_entitlement_to_media(
        &self,
        tenant_id: &str,
        playback_id: &str,
        prefix: Option<&str>,
        viewer: &str,
        start_rental: bool,
    ) -> DbResult<bool> {
        // A rental counted from the first play has its clock started by this, its first
        // key request (not by a page that only looks).
        let now = now_ms();
        let (n, unstarted): (i64, i64) = sqlx::query_as(&format!(
            "SELECT COUNT(*), COUNT(play_window_ms) FROM entitlements WHERE {ENTITLED}"
        ))
        .bind(viewer)
        .bind(tenant_id)
        .bind(now)
        .bind(playback_id)
        .bind(prefix.unwrap_or(""))
        .fetch_one(&self.pool)
        .await?;
        if unstarted > 0 && start_rental {
            sqlx::query(&format!(
                "UPDATE entitlements SET expires_at = $3 + play_window_ms, play_window_ms = NULL \
                 WHERE play_window_ms IS NOT NULL AND {ENTITLED}"
            ))
            .bind(viewer)
            .bind(tenant_id)
            .bind(now)
            .bind(playback_id)
            .bind(prefix.unwrap_or(""))
            .execute(&self.pool)
            .await?;
        }
        Ok(n > 0)
    }

    /// A recording takes its broadcast's playback rules (policy and entitlement), so that it
    /// stays as locked as the broadcast once the next broadcast moves the stream on, and the
    /// packaging its files were written with.
    pub async fn copy_rules_to_recording(
        &self,
        live_stream_id: &str,
        asset_id: &str,
    ) -> DbResult<()> {
        sqlx::query(
            "UPDATE assets SET \
             playback_policy = (SELECT playback_policy FROM live_streams WHERE id = $1), \
             requires_entitlement = (SELECT requires_entitlement FROM live_streams WHERE id = $1), \
             packaging = (SELECT packaging FROM live_streams WHERE id = $1), \
             cenc_scheme = (SELECT cenc_scheme FROM live_streams WHERE id = $1) \
             WHERE id = $2",
        )
        .bind(live_stream_id)
        .bind(asset_id)
        .execute(&self.pool)
        .await?;
        self.targets.clear();
        Ok(())
    }

    /// Changes a tenant's playback id's policy and/or entitlement requirement, on the live
    /// stream or asset that owns it. NotFound if the tenant has no such playback id.
    pub async fn set_playback_rules(
        &self,
        tenant_id: &str,
        playback_id: &str,
        policy: Option<PlaybackPolicy>,
        requires_entitlement: Option<bool>,
    ) -> DbResult<()> {
        let mut found = false;
        for table in ["live_streams", "assets"] {
            let done = sqlx::query(&format!(
                "UPDATE {table} SET \
                 playback_policy = CASE WHEN $1 = '' THEN playback_policy ELSE $1 END, \
                 requires_entitlement = CASE WHEN $2 < 0 THEN requires_entitlement ELSE $2 END \
                 WHERE playback_id = $3 AND tenant_id = $4"
            ))
            .bind(policy.map_or("", PlaybackPolicy::as_str))
            .bind(requires_entitlement.map_or(-1i64, i64::from))
            .bind(playback_id)
            .bind(tenant_id)
            .execute(&self.pool)
            .await?;
            found |= done.rows_affected() > 0;
        }
        self.targets.clear();
        if !found {
            return Err(DbError::NotFound("playback id"));
        }
        Ok(())
    }

    /// Up to `limit` content keys not wrapped under `kek_id`, for re-wrapping.
    pub async fn content_keys_not_under(
        &self,
        kek_id: &str,
        limit: i64,
    ) -> DbResult<Vec<StoredContentKey>> {
        Ok(sqlx::query_as(
            "SELECT id, tenant_id, scope, wrapped, kek_id, created_at FROM content_keys \
             WHERE kek_id <> $1 ORDER BY id LIMIT $2",
        )
        .bind(kek_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Replaces a key's wrapping, only if it is still wrapped as `old_kek_id` (a concurrent
    /// re-wrap wins once).
    pub async fn rewrap_content_key(
        &self,
        id: &str,
        old_kek_id: &str,
        wrapped: &str,
        kek_id: &str,
    ) -> DbResult<bool> {
        let done = sqlx::query(
            "UPDATE content_keys SET wrapped = $1, kek_id = $2 WHERE id = $3 AND kek_id = $4",
        )
        .bind(wrapped)
        .bind(kek_id)
        .bind(id)
        .bind(old_kek_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// How many content keys each KEK wraps.
    pub async fn content_keys_per_kek(&self) -> DbResult<Vec<(String, i64)>> {
        Ok(sqlx::query_as(
            "SELECT kek_id, COUNT(*) FROM content_keys GROUP BY kek_id ORDER BY kek_id",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}
