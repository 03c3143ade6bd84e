//! SQLite WAL checkpoints, taken off the writer.
//!
//! By default SQLite checkpoints from the connection whose commit pushed the WAL past 1,000
//! pages: the group commit that happened to cross the line then also copies the WAL into the
//! database file and syncs it, and every request waiting on that commit waits for that too.
//! Sigil's connections turn automatic checkpoints off (`wal_autocheckpoint = 0` in
//! [`crate::dialect::prepare_connection`]) and this task checkpoints from a read connection
//! instead, `PASSIVE`ly: it never blocks the writer, which keeps appending while it runs.
//!
//! A checkpoint alone does not make the WAL smaller: SQLite starts writing it from the beginning
//! again only when a write transaction begins with every frame already copied. Under a steady
//! load the writer appends while this task copies, so that moment never came and the WAL grew
//! by every page ever written (a gigabyte in twelve seconds of token issuance). So when a
//! checkpoint leaves the WAL longer than [`RESTART_AFTER_FRAMES`], this task asks the writer,
//! through a [`RestartWanted`] flag, to copy the remaining tail itself between two batches:
//! nothing appends while it does, every frame is then copied, and its next transaction
//! rewinds the WAL. The tail is what arrived since this task's checkpoint began, so the pause
//! is short.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::{AnyConnection, AnyPool};

/// How often the WAL is copied back into the database file: often enough that the WAL stays
/// small, rarely enough that an idle server does next to nothing.
const EVERY: Duration = Duration::from_millis(250);

/// WAL frames (pages) after a checkpoint above which the writer finishes it, so that the WAL is
/// rewound: 64 MiB of 4 KiB pages, about a second of the heaviest load measured (each rewind
/// pauses the writer for a millisecond or a few, so it should not come every tick).
const RESTART_AFTER_FRAMES: i64 = 16_384;

/// Set by the checkpointer when the WAL should be rewound; taken by the writer.
#[derive(Debug, Default)]
pub struct RestartWanted(AtomicBool);

impl RestartWanted {
    /// Whether the writer should finish a checkpoint now (and clears the request).
    pub fn take(&self) -> bool {
        self.0.swap(false, Ordering::AcqRel)
    }

    fn ask(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Checkpoints `pool`'s database every [`EVERY`] while `alive` has a strong reference
/// (the store and its clones hold it), then stops.
pub fn start(pool: AnyPool, alive: &Arc<()>, restart: Arc<RestartWanted>) {
    let alive: Weak<()> = Arc::downgrade(alive);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if alive.strong_count() == 0 || pool.is_closed() {
                return;
            }
            match checkpoint(&pool).await {
                Ok(frames) if frames > RESTART_AFTER_FRAMES => {
                    catch_up(&pool).await;
                    restart.ask();
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; the next one retries"),
            }
        }
    });
}

/// Checks passes this short have caught up with the writer: what it appended meanwhile is a
/// few batches.
const CAUGHT_UP: Duration = Duration::from_millis(2);
const CATCH_UP_PASSES: usize = 4;

/// Copies again what the writer appended during the last pass, until a pass is short, so that
/// the tail the writer copies itself (pausing every request's commit) is small.
async fn catch_up(pool: &AnyPool) {
    for _ in 0..CATCH_UP_PASSES {
        let started = std::time::Instant::now();
        if checkpoint(pool).await.is_err() || started.elapsed() < CAUGHT_UP {
            return;
        }
    }
}

/// Run by the writer between batches when asked: copies what the WAL gained since the last
/// checkpoint, with no writer appending meanwhile, so that the next write rewinds it.
pub async fn finish_on_writer(conn: &mut AnyConnection) {
    let started = std::time::Instant::now();
    match checkpoint(conn).await {
        Ok(frames) => tracing::debug!(frames, took = ?started.elapsed(), "the writer finished a WAL checkpoint"),
        Err(e) => tracing::warn!(error = %e, "the writer's WAL checkpoint failed; the next one retries"),
    }
}

/// A `PASSIVE` checkpoint; answers how many frames the WAL holds (copied or not, since it was
/// last rewound).
async fn checkpoint<'c, E: sqlx::Executor<'c, Database = sqlx::Any>>(on: E) -> Result<i64, sqlx::Error> {
    let (_busy, frames, _copied): (i64, i64, i64) =
        sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(on).await?;
    Ok(frames)
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

    fn record(n: i64) -> AuditRecord {
        AuditRecord::new(
            Timestamp::from_unix_seconds(1_800_000_000 + n),
            EventType::TokenIssued,
            &Principal::from_stored(format!("agent-{n:06}-{}", "x".repeat(200))),
            None,
        )
    }

    /// The WAL header's first salt, which SQLite changes each time it rewinds the WAL.
    fn wal_salt(wal: &std::path::Path) -> Option<[u8; 4]> {
        let header = std::fs::read(wal).ok()?;
        header.get(16..20)?.try_into().ok()
    }

    /// Under writes that never pause, the WAL is still rewound now and then instead of growing
    /// by every page written: with the checkpoint only off the writer, it never was.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_is_rewound_under_a_steady_stream_of_commits() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("sigil.db");
        let wal = dir.path().join("sigil.db-wal");
        let store = SqlStore::connect(&Location::Sqlite(file), &StoreOptions::default())
            .await
            .expect("store");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let (store, stop) = (store.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut n = w * 1_000_000;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        store.commit(ChangeSet::new().audit(record(n))).await.expect("commit");
                        n += 1;
                    }
                })
            })
            .collect();
        let mut salts = std::collections::HashSet::new();
        let deadline = std::time::Instant::now() + super::EVERY * 120;
        while salts.len() < 3 && std::time::Instant::now() < deadline {
            salts.extend(wal_salt(&wal));
            tokio::time::sleep(super::EVERY / 10).await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in writers {
            w.await.expect("writer task");
        }
        assert!(
            salts.len() >= 3,
            "the WAL was rewound {} times in {:?} of commits (now {} bytes)",
            salts.len().saturating_sub(1),
            super::EVERY * 120,
            std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0)
        );
    }
}
