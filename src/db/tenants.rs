//! Tenants and API keys. Every tenant-owned query filters on `tenant_id`, so one tenant's
//! key can never reach another tenant's rows whatever id it names.

use serde::Serialize;
use sqlx::FromRow;

use super::{Db, DbError, DbResult, is_unique_violation, new_id, now_ms};

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub created_at: i64,
}

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Tenant,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Tenant => "tenant",
        }
    }
}

/// An API key as stored: never the secret, only its hash and a display prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub tenant_id: Option<String>,
    pub role: Role,
    pub name: String,
    pub prefix: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

#[derive(FromRow)]
struct ApiKeyRow {
    id: String,
    tenant_id: Option<String>,
    role: String,
    name: String,
    prefix: String,
    created_at: i64,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
}

impl From<ApiKeyRow> for ApiKey {
    fn from(r: ApiKeyRow) -> Self {
        Self {
            id: r.id,
            tenant_id: r.tenant_id,
            role: if r.role == "admin" {
                Role::Admin
            } else {
                Role::Tenant
            },
            name: r.name,
            prefix: r.prefix,
            created_at: r.created_at,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
        }
    }
}

/// A key to store: `tenant_id` is `None` exactly for admin keys.
#[derive(Debug, Clone)]
pub struct NewApiKey<'a> {
    pub tenant_id: Option<&'a str>,
    pub name: &'a str,
    pub prefix: &'a str,
    pub secret_hash: &'a str,
}

const KEY_COLUMNS: &str = "id, tenant_id, role, name, prefix, created_at, last_used_at, revoked_at";

impl Db {
    /// Creates a tenant and its first key in one transaction: both or neither.
    pub async fn create_tenant_with_key(
        &self,
        name: &str,
        key_name: &str,
        prefix: &str,
        secret_hash: &str,
    ) -> DbResult<(Tenant, ApiKey)> {
        let mut tx = self.pool.begin().await?;
        let tenant = Tenant {
            id: new_id(),
            name: name.to_string(),
            created_at: now_ms(),
        };
        sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(&tenant.id)
            .bind(&tenant.name)
            .bind(tenant.created_at)
            .execute(&mut *tx)
            .await?;
        let key = insert_key(
            &mut *tx,
            &NewApiKey {
                tenant_id: Some(&tenant.id),
                name: key_name,
                prefix,
                secret_hash,
            },
        )
        .await?;
        tx.commit().await?;
        Ok((tenant, key))
    }

    pub async fn get_tenant(&self, id: &str) -> DbResult<Tenant> {
        sqlx::query_as::<_, Tenant>("SELECT id, name, created_at FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(DbError::NotFound("tenant"))
    }

    /// Tenants in creation order, `limit` of them after the id `after`.
    pub async fn list_tenants(&self, after: Option<&str>, limit: i64) -> DbResult<Vec<Tenant>> {
        Ok(sqlx::query_as::<_, Tenant>(
            "SELECT id, name, created_at FROM tenants WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Deletes a tenant and, by cascade, everything it owns.
    pub async fn delete_tenant(&self, id: &str) -> DbResult<()> {
        let done = sqlx::query("DELETE FROM tenants WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(DbError::NotFound("tenant"));
        }
        Ok(())
    }

    pub async fn insert_api_key(&self, key: &NewApiKey<'_>) -> DbResult<ApiKey> {
        insert_key(&self.pool, key).await
    }

    /// A dashboard session for key `api_key_id` until `expires_at`.
    pub async fn create_session(
        &self,
        id_hash: &str,
        api_key_id: &str,
        csrf: &str,
        expires_at: i64,
    ) -> DbResult<()> {
        let now = now_ms();
        // Sessions past their time are dropped as new ones are made.
        sqlx::query("DELETE FROM dashboard_sessions WHERE expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO dashboard_sessions (id_hash, api_key_id, csrf, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id_hash)
        .bind(api_key_id)
        .bind(csrf)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The live session with this hash: its key (still active) and CSRF token.
    pub async fn find_session(&self, id_hash: &str) -> DbResult<Option<(ApiKey, String)>> {
        #[derive(FromRow)]
        struct Found {
            #[sqlx(flatten)]
            key: ApiKeyRow,
            csrf: String,
        }
        let columns = KEY_COLUMNS
            .split(", ")
            .map(|c| format!("k.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let found = sqlx::query_as::<_, Found>(&format!(
            "SELECT {columns}, s.csrf FROM dashboard_sessions s \
             JOIN api_keys k ON k.id = s.api_key_id \
             WHERE s.id_hash = $1 AND s.expires_at > $2 AND k.revoked_at IS NULL"
        ))
        .bind(id_hash)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.map(|f| (ApiKey::from(f.key), f.csrf)))
    }

    pub async fn delete_session(&self, id_hash: &str) -> DbResult<()> {
        sqlx::query("DELETE FROM dashboard_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The live (not revoked) key with this secret hash, with its tenant.
    pub async fn find_active_key_by_hash(&self, secret_hash: &str) -> DbResult<Option<ApiKey>> {
        let row = sqlx::query_as::<_, ApiKeyRow>(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE secret_hash = $1 AND revoked_at IS NULL"
        ))
        .bind(secret_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(ApiKey::from))
    }

    /// Records use of a key at most once a minute, to keep writes off the hot path.
    pub async fn touch_api_key(&self, id: &str, now: i64) -> DbResult<()> {
        sqlx::query(
            "UPDATE api_keys SET last_used_at = $1 WHERE id = $2 \
             AND (last_used_at IS NULL OR last_used_at < $3)",
        )
        .bind(now)
        .bind(id)
        .bind(now - 60_000)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn count_admin_keys(&self) -> DbResult<i64> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM api_keys WHERE role = 'admin' AND revoked_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(n)
    }

    /// A tenant's keys (revoked ones included, marked), in creation order.
    pub async fn list_api_keys(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> DbResult<Vec<ApiKey>> {
        let rows = sqlx::query_as::<_, ApiKeyRow>(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 AND id > $2 \
             ORDER BY id LIMIT $3"
        ))
        .bind(tenant_id)
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(ApiKey::from).collect())
    }

    pub async fn get_api_key(&self, tenant_id: &str, id: &str) -> DbResult<ApiKey> {
        sqlx::query_as::<_, ApiKeyRow>(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .map(ApiKey::from)
        .ok_or(DbError::NotFound("api key"))
    }

    pub async fn rename_api_key(&self, tenant_id: &str, id: &str, name: &str) -> DbResult<ApiKey> {
        let done = sqlx::query("UPDATE api_keys SET name = $1 WHERE tenant_id = $2 AND id = $3")
            .bind(name)
            .bind(tenant_id)
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(DbError::NotFound("api key"));
        }
        self.get_api_key(tenant_id, id).await
    }

    /// Revokes a key; revoking twice is harmless and keeps the first revocation time.
    pub async fn revoke_api_key(&self, tenant_id: &str, id: &str) -> DbResult<ApiKey> {
        sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 \
             WHERE tenant_id = $2 AND id = $3 AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(tenant_id)
        .bind(id)
        .execute(&self.pool)
        .await?;
        self.get_api_key(tenant_id, id).await
    }
}

async fn insert_key<'e, E>(executor: E, key: &NewApiKey<'_>) -> DbResult<ApiKey>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let role = if key.tenant_id.is_some() {
        Role::Tenant
    } else {
        Role::Admin
    };
    let stored = ApiKey {
        id: new_id(),
        tenant_id: key.tenant_id.map(str::to_string),
        role,
        name: key.name.to_string(),
        prefix: key.prefix.to_string(),
        created_at: now_ms(),
        last_used_at: None,
        revoked_at: None,
    };
    sqlx::query(
        "INSERT INTO api_keys (id, tenant_id, role, name, prefix, secret_hash, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&stored.id)
    .bind(stored.tenant_id.as_deref())
    .bind(role.as_str())
    .bind(&stored.name)
    .bind(&stored.prefix)
    .bind(key.secret_hash)
    .bind(stored.created_at)
    .execute(executor)
    .await
    .map_err(|e| {
        if is_unique_violation(&e) {
            DbError::Conflict("an API key with this secret already exists".into())
        } else {
            DbError::from(e)
        }
    })?;
    Ok(stored)
}
