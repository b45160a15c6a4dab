//! Metadata in SQL: one pool chosen by URL at start-up (SQLite by default, PostgreSQL when
//! configured), migrations from `migrations/`, and the repository functions of each area.
//!
//! Queries are written once in SQL both backends accept (`$n` parameters, TEXT ids,
//! BIGINT Unix-millisecond times), so handlers never branch on the backend.

mod analytics;
mod branding;
mod chat;
mod commerce;
mod concurrency;
mod idempotency;
mod invoices;
mod limits;
mod live;
mod orders;
pub mod rollup;
mod security;
mod status;
mod subscriptions;
mod tenants;
mod vod;
mod webhooks;

use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};

pub use analytics::{FILTER_COLUMNS, RollupGroup, StartupSample, StoredView};
pub use branding::{Branding, Offer};
pub use chat::{ChatBan, ChatMessage, ChatRules};
pub use commerce::{
    Cart, CartPrice, Customer, DiscountCode, MAX_CART_ITEMS, NewPrice, Price, Product,
    PublishableKey, TaxRate,
};
pub use concurrency::Peak;
pub use idempotency::{IdempotencyClaim, StoredResponse};
pub use invoices::{Invoice, InvoiceLine, Issued};
pub use live::{
    Asset, LiveState, LiveStream, NewLiveStream, PlaybackPolicy, PlaybackTarget, ScopeRules,
    StoredContentKey, TargetCache,
};
pub use orders::{Inbox, Order, OrderLine, ProviderSettings, RevenueLine, WebhookEvent};
pub use security::{AuditEvent, Entitlement, SigningKey};
pub use status::{AssetStatus, JobStatus, LiveStatus};
pub use subscriptions::{PeriodPaid, Subscription, SubscriptionState};
pub use tenants::{ApiKey, NewApiKey, Role, Tenant};
pub use vod::{JOBS_CHANNEL, Job, OutputChoice, Upload};
pub use webhooks::{
    AfterFailure, Attempt, Delivery, DeliveryJob, EVENT_TYPES, EndpointChanges, EventObject,
    MAX_ENDPOINTS, OutboxEvent, WebhookEndpoint,
};

/// The database backend behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Why a repository call failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl DbError {
    /// The database could not be reached or is going away (a restart, a failover, a full
    /// pool): a request may well succeed when tried again shortly.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Sqlx(
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed,
            ) => true,
            // SQLSTATE class 08 (connection exception) and 57P01–57P03 (shutting down,
            // cannot connect now).
            Self::Sqlx(sqlx::Error::Database(e)) => e
                .code()
                .is_some_and(|c| c.starts_with("08") || c.starts_with("57P0")),
            _ => false,
        }
    }
}

pub type DbResult<T> = Result<T, DbError>;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The metadata store: a pool and the backend it talks to.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    /// Playback targets recently looked up (see [`Db::playback_target`]).
    targets: std::sync::Arc<TargetCache>,
}

/// The SQLite file of `url`, created empty and readable by this user only (0600) before
/// SQLite opens it, or tightened to that if it exists: it holds wrapped keys, API key hashes
/// and viewers' entitlements. SQLite gives its `-wal` and `-shm` files the same mode.
fn private_sqlite_file(url: &str) -> DbResult<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path.starts_with(':') {
        return Ok(()); // in memory
    }
    let io = |e: std::io::Error| {
        DbError::Sqlx(sqlx::Error::Io(std::io::Error::new(
            e.kind(),
            format!("securing the database file {path}: {e}"),
        )))
    };
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // SQLite gives its -wal and -shm files the database's mode only when it creates
            // them: files left by an earlier run are tightened too.
            for file in [
                path.to_string(),
                format!("{path}-wal"),
                format!("{path}-shm"),
            ] {
                let Ok(meta) = std::fs::metadata(&file) else {
                    continue;
                };
                if meta.permissions().mode() & 0o077 != 0 {
                    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                        .map_err(io)?;
                    tracing::warn!(
                        file,
                        "a database file was readable by others; it is 0600 now"
                    );
                }
            }
            Ok(())
        }
        // The folder may not exist yet, or the URL names no plain path: SQLite says why.
        Err(_) => Ok(()),
    }
}

impl Db {
    /// Connects to `url` (creating a SQLite file if needed) and runs pending migrations.
    pub async fn connect(url: &str, max_connections: u32) -> DbResult<Self> {
        install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let mut options = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10));
        if backend == Backend::Sqlite {
            // A SQLite connection is a file handle in this process: it cannot go stale the way
            // a network connection can, so the pool's ping before each query (a round trip to
            // the connection's thread, as costly as the query) is skipped.
            options = options.test_before_acquire(false);
            options = options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;")
                        .await?;
                    Ok(())
                })
            });
        }
        if backend == Backend::Sqlite {
            private_sqlite_file(url)?;
        }
        let pool = options.connect(url).await?;
        let db = Self {
            pool,
            backend,
            targets: Default::default(),
        };
        MIGRATOR.run(&db.pool).await?;
        if backend == Backend::Sqlite {
            analytics::sqlite_covering_index(&db.pool).await?;
        }
        Ok(db)
    }

    /// The time that leases, due times and shared rate buckets are judged by: with
    /// PostgreSQL, the database's clock, which every node shares (their own clocks may be
    /// apart, or jump); with SQLite (one node), this process's.
    pub async fn shared_now_ms(&self) -> DbResult<i64> {
        match self.backend {
            Backend::Postgres => Ok(sqlx::query_as::<_, (i64,)>(&format!("SELECT {PG_NOW_MS}"))
                .fetch_one(&self.pool)
                .await?
                .0),
            Backend::Sqlite => Ok(now_ms()),
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A cheap round trip, for readiness checks.
    pub async fn ping(&self) -> DbResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The row `id` of `table` (its `columns`), if it is `tenant_id`'s; else `what` not found.
    async fn tenant_row<T>(
        &self,
        table: &str,
        columns: &str,
        tenant_id: &str,
        id: &str,
        what: &'static str,
    ) -> DbResult<T>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
    {
        sqlx::query_as(&format!(
            "SELECT {columns} FROM {table} WHERE id = $1 AND tenant_id = $2"
        ))
        .bind(id)
        .bind(tenant_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(DbError::NotFound(what))
    }

    /// A page of `tenant_id`'s rows of `table` in id order after `after`, optionally only
    /// those whose `filter.0` column equals `filter.1` (the column name is the caller's).
    async fn tenant_page<T>(
        &self,
        table: &str,
        columns: &str,
        tenant_id: &str,
        filter: Option<(&str, &str)>,
        after: Option<&str>,
        limit: i64,
    ) -> DbResult<Vec<T>>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
    {
        let (column, value) = filter.unwrap_or(("tenant_id", tenant_id));
        Ok(sqlx::query_as(&format!(
            "SELECT {columns} FROM {table} WHERE tenant_id = $1 AND {column} = $2 \
             AND id > $3 ORDER BY id LIMIT $4"
        ))
        .bind(tenant_id)
        .bind(value)
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// A transaction that writes: on SQLite it takes the write lock first, so two changes to
    /// one row are serialised (PostgreSQL locks the row at the first UPDATE).
    async fn write_tx(&self) -> DbResult<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Closed by [`Db::close`] (the end of a shutdown).
    pub fn is_closed(&self) -> bool {
        self.pool.is_closed()
    }
}

use crate::clock::now_ms;

/// PostgreSQL's wall clock in Unix milliseconds, as SQL (see [`Db::shared_now_ms`]).
pub(crate) const PG_NOW_MS: &str = "(EXTRACT(EPOCH FROM statement_timestamp()) * 1000)::BIGINT";
use crate::ids::new_id;

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}
