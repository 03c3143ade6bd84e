//! Forward-only, versioned migrations, embedded in the binary.

use sigil_core::store::StoreError;
use sqlx::AnyPool;
use sqlx::Row;
use sqlx::{Connection, Executor};

use crate::dialect::Backend;
use crate::errors::unavailable;

/// What a migration run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    pub applied: Vec<i64>,
    pub current: i64,
}

/// The newest schema version this build knows.
pub fn latest_version(backend: Backend) -> i64 {
    backend
        .dialect()
        .migrations
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(0)
}

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS sigil_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)";

async fn current(conn: &mut sqlx::AnyConnection) -> Result<i64, StoreError> {
    let row = conn
        .fetch_one("SELECT COALESCE(MAX(version), 0) AS v FROM sigil_migrations")
        .await
        .map_err(unavailable)?;
    row.try_get::<i64, _>("v").map_err(unavailable)
}

/// Applies every migration newer than the database, all in one transaction, under a lock so
/// replicas starting together do not race (even creating the bookkeeping table is under the
/// lock: PostgreSQL's `CREATE TABLE IF NOT EXISTS` is not safe against a concurrent twin).
/// Refuses a database whose schema is newer than this build.
pub async fn run(pool: &AnyPool, backend: Backend) -> Result<MigrationReport, StoreError> {
    let d = backend.dialect();
    let mut conn = pool.acquire().await.map_err(unavailable)?;
    let mut tx = (*conn).begin_with(d.begin_write).await.map_err(unavailable)?;
    if let Some(lock) = d.migration_lock {
        tx.execute(lock).await.map_err(unavailable)?;
    }
    tx.execute(CREATE_TABLE).await.map_err(unavailable)?;
    let before = current(&mut tx).await?;
    if before > latest_version(backend) {
        return Err(StoreError::Unavailable(format!(
            "the database schema (version {before}) is newer than this sigil build (version {}); upgrade sigil",
            latest_version(backend)
        )));
    }
    let mut applied = Vec::new();
    for m in d.migrations.iter().filter(|m| m.version > before) {
        tx.execute(sqlx::raw_sql(m.sql)).await.map_err(unavailable)?;
        sqlx::query("INSERT INTO sigil_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
            .bind(m.version)
            .bind(m.name)
            .bind(unix_micros())
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
        applied.push(m.version);
    }
    let current = current(&mut tx).await?;
    tx.commit().await.map_err(unavailable)?;
    Ok(MigrationReport { applied, current })
}

/// Fails unless the schema is exactly the one this build expects.
pub async fn check_current(pool: &AnyPool, backend: Backend) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await.map_err(unavailable)?;
    let now = current(&mut conn).await.unwrap_or(0);
    if now != latest_version(backend) {
        return Err(StoreError::Unavailable(format!(
            "the database schema is at version {now}, this build needs {}; run `sigil db migrate`",
            latest_version(backend)
        )));
    }
    Ok(())
}

fn unix_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// An SQLite database in memory with every migration applied, on one connection (for unit
/// tests of the SQL this crate writes).
#[cfg(test)]
#[allow(clippy::expect_used, reason = "tests")]
pub(crate) async fn memory_database() -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    let pool = sqlx::pool::PoolOptions::<sqlx::Any>::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .expect("memory database");
    run(&pool, crate::dialect::Backend::Sqlite).await.expect("migrations");
    pool
}
