//! SQLite WAL checkpoints, taken off the writer.
//!
//! By default SQLite checkpoints from the connection whose commit pushed the WAL past 1,000
//! pages: the group commit that happened to cross the line then also copies the WAL into the
//! database file and syncs it, and every request waiting on that commit waits for that too.
//! Sigil's connections turn automatic checkpoints off (`wal_autocheckpoint = 0` in
//! [`crate::dialect::prepare_connection`]) and this task checkpoints from a read connection
//! instead, `PASSIVE`ly: it never blocks the writer, which keeps appending while it runs.

use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::AnyPool;

/// How often the WAL is copied back into the database file: often enough that the WAL stays
/// small, rarely enough that an idle server does next to nothing.
const EVERY: Duration = Duration::from_millis(250);

/// Checkpoints `pool`'s database every [`EVERY`] while `alive` has a strong reference
/// (the store and its clones hold it), then stops.
pub fn start(pool: AnyPool, alive: &Arc<()>) {
    let alive: Weak<()> = Arc::downgrade(alive);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if alive.strong_count() == 0 || pool.is_closed() {
                return;
            }
            if let Err(e) = sqlx::raw_sql("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
                tracing::warn!(error = %e, "WAL checkpoint failed; the next one retries");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use sigil_core::audit::{AuditRecord, EventType};
    use sigil_core::model::Principal;
    use sigil_core::store::{ChangeSet, Store};
    use sigil_types::Timestamp;

    use crate::{Location, SqlStore, StoreOptions};

    fn database_file_size(path: &std::path::Path) -> u64 {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }

    /// Commits never checkpoint (`wal_autocheckpoint = 0`), so the database file grows only
    /// when the checkpointer copies the WAL into it.
    #[tokio::test]
    async fn committed_pages_reach_the_database_file_without_a_checkpointing_commit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("sigil.db");
        let store = SqlStore::connect(&Location::Sqlite(file.clone()), &StoreOptions::default())
            .await
            .expect("store");
        // Commits never checkpoint by themselves.
        let mut conn = store.pool.acquire().await.expect("connection");
        let auto: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
            .fetch_one(&mut *conn)
            .await
            .expect("pragma");
        assert_eq!(auto, 0);
        drop(conn);
        tokio::time::sleep(super::EVERY * 3).await;
        let before = database_file_size(&file);
        for n in 0..300 {
            let record = AuditRecord::new(
                Timestamp::from_unix_seconds(1_800_000_000 + n),
                EventType::TokenIssued,
                &Principal::from_stored(format!("agent-{n:04}-{}", "x".repeat(200))),
                None,
            );
            store.commit(ChangeSet::new().audit(record)).await.expect("commit");
        }
        let deadline = std::time::Instant::now() + super::EVERY * 12;
        while database_file_size(&file) <= before {
            assert!(
                std::time::Instant::now() < deadline,
                "the database file stayed at {before} bytes: nothing checkpointed the WAL"
            );
            tokio::time::sleep(super::EVERY / 2).await;
        }
    }
}
