//! The group-committing writer.
//!
//! Requests hand their change sets to a channel; a writer task takes everything waiting (up to
//! [`MAX_BATCH`]), runs it in one transaction with a savepoint per change set, commits once, and
//! only then answers each request. One fsync covers the whole batch, so durability costs little
//! per write, and a change set that fails (duplicate, stale version) rolls back to its savepoint
//! without touching the others in its batch. The commonest change sets (audit records alone, a
//! token derivation, the single-use mark of an assertion or DPoP proof) need no savepoint: their
//! refusals are judged for the whole batch at once ([`fast_path`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sigil_core::store::{Change, ChangeSet, StoreError};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool};
use sqlx::{Connection, Executor};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::apply::{apply, apply_changes};
use crate::checkpointer::{self, RestartWanted};
use crate::dialect::{Backend, Dialect};
use crate::errors;
use crate::revocations::NotRevoked;

mod fast_path;

/// Most change sets in one transaction: large enough to amortise the fsync, small enough that
/// one batch's latency stays low.
pub const MAX_BATCH: usize = 512;
const QUEUE: usize = 16_384;

type Reply = oneshot::Sender<Result<(), StoreError>>;

struct Job {
    changes: ChangeSet,
    reply: Reply,
}

#[derive(Debug)]
pub struct Writer {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    /// One per writer, answered when it has finished.
    done: Mutex<Vec<oneshot::Receiver<()>>>,
}

impl Writer {
    /// `after`: what each writer does once a batch is committed.
    pub fn start(pool: AnyPool, backend: Backend, max_batch: usize, after: AfterCommit) -> Self {
        let (tx, rx) = mpsc::channel::<Job>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let d = backend.dialect();
        let done = (0..d.writers)
            .map(|_| {
                let (finished, done) = oneshot::channel();
                let connections = Connections {
                    pool: pool.clone(),
                    held: None,
                    keeps: d.writer_keeps_connection,
                };
                let work = run(connections, Arc::clone(&rx), d, max_batch.max(1), after.clone());
                spawn_writer(work, finished);
                done
            })
            .collect();
        Self {
            tx: Mutex::new(Some(tx)),
            done: Mutex::new(done),
        }
    }

    pub async fn submit(&self, changes: ChangeSet) -> Result<(), StoreError> {
        let sender = self
            .tx
            .lock()
            .await
            .clone()
            .ok_or_else(|| StoreError::Unavailable("store is closed".into()))?;
        let (reply, answer) = oneshot::channel();
        sender
            .send(Job { changes, reply })
            .await
            .map_err(|_| StoreError::Unavailable("writer stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("writer stopped".into()))?
    }

    /// Stops taking writes, lets the writers finish what is queued, and waits for them.
    pub async fn shutdown(&self) {
        self.tx.lock().await.take();
        let done = std::mem::take(&mut *self.done.lock().await);
        for d in done {
            let _ = d.await;
        }
    }
}

/// Runs a writer on a thread of its own with its own single-threaded runtime. On the shared
/// runtime, every step of a batch (acquire, begin, insert, commit: each a hand-off to the
/// database driver) waited its turn behind the request tasks, and each request waits for the
/// batch — so the group commit's cycle, and with it every request's latency, stretched with
/// the load. Falls back to the shared runtime if the thread cannot be made.
fn spawn_writer(work: impl Future<Output = ()> + Send + 'static, finished: oneshot::Sender<()>) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    let work = async move {
        work.await;
        let _ = finished.send(());
    };
    match runtime {
        Ok(rt) => {
            let spawned = std::thread::Builder::new()
                .name("sigil-writer".into())
                .spawn(move || rt.block_on(work));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "no thread for the writer");
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "no runtime of its own for the writer; sharing the server's");
            tokio::spawn(work);
        }
    }
}

async fn run(
    mut connections: Connections,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    d: &'static Dialect,
    max_batch: usize,
    after: AfterCommit,
) {
    loop {
        let batch = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else { return };
            let mut batch = vec![first];
            while batch.len() < max_batch {
                match rx.try_recv() {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
            batch
        };
        commit_batch(&mut connections, batch, d, &after).await;
        if let Some(rewind) = &after.rewind
            && rewind.take()
            && let Ok(mut conn) = connections.take().await
        {
            checkpointer::finish_on_writer(&mut conn).await;
            connections.put_back(conn);
        }
    }
}

/// A writer's connections: the one it kept from the last batch
/// ([`Dialect::writer_keeps_connection`]), or one from the pool.
struct Connections {
    pool: AnyPool,
    held: Option<PoolConnection<Any>>,
    keeps: bool,
}

impl Connections {
    async fn take(&mut self) -> Result<PoolConnection<Any>, sqlx::Error> {
        match self.held.take() {
            Some(conn) => Ok(conn),
            None => self.pool.acquire().await,
        }
    }

    /// A connection that finished its work cleanly: kept for the next batch, or back to the
    /// pool. (One that failed is detached instead, and never comes here.)
    fn put_back(&mut self, conn: PoolConnection<Any>) {
        if self.keeps {
            self.held = Some(conn);
        }
    }
}

/// What a writer does after each batch: the epochs it moves before answering the batch's
/// requests, and the WAL tail it copies before taking the next batch. Done here, not in the
/// requests' tasks: a task may be dropped (its client gone) after its change set is queued, and
/// what it would have done after the commit would then never happen.
#[derive(Debug, Clone, Default)]
pub struct AfterCommit {
    /// Moved after a batch that changes what token issuance reads from the registry, so that
    /// read caches drop what they hold.
    pub registry_epoch: Arc<AtomicU64>,
    /// SQLite: the memory of tokens read as not revoked, which forgets after a batch that
    /// revokes tokens.
    pub not_revoked: Option<Arc<NotRevoked>>,
    /// SQLite: the checkpointer's request to copy the WAL's tail between two batches.
    pub rewind: Option<Arc<RestartWanted>>,
}

async fn commit_batch(connections: &mut Connections, batch: Vec<Job>, d: &'static Dialect, after: &AfterCommit) {
    let (jobs, replies): (Vec<ChangeSet>, Vec<Reply>) = batch.into_iter().map(|j| (j.changes, j.reply)).unzip();
    let results = match commit_jobs(connections, &jobs, d).await {
        Ok(results) => results,
        Err(why) => jobs.iter().map(|_| Err(StoreError::Unavailable(why.clone()))).collect(),
    };
    // On failure too: the batch may have been mid-commit, and a refill costs only reads.
    if jobs.iter().any(ChangeSet::touches_registry) {
        after.registry_epoch.fetch_add(1, Ordering::SeqCst);
    }
    if let Some(memory) = &after.not_revoked
        && jobs.iter().any(ChangeSet::revokes_tokens)
    {
        memory.revoked_some();
    }
    for (reply, result) in replies.into_iter().zip(results) {
        let _ = reply.send(result);
    }
}

/// Times a batch runs again after the server aborted its transaction to break a deadlock.
const ABORTED_RETRIES: usize = 3;

/// Runs the batch's transaction on a pooled connection. When PostgreSQL aborts it to break a
/// deadlock or a serialization conflict with another writer (two replicas recording the same
/// single-use marks through savepoints, say), nothing of it was committed and the other
/// transaction goes on: the batch runs again, on a fresh connection, instead of failing every
/// request in it. Any other failure fails the batch (it may have been mid-commit).
async fn commit_jobs(
    connections: &mut Connections,
    jobs: &[ChangeSet],
    d: &'static Dialect,
) -> Result<Vec<Result<(), StoreError>>, String> {
    let mut aborted = 0;
    loop {
        let mut conn = connections.take().await.map_err(|e| {
            tracing::error!(error = %e, "cannot get a write connection");
            e.to_string()
        })?;
        match run_transaction(&mut conn, jobs, d).await {
            Ok(results) => {
                connections.put_back(conn);
                return Ok(results);
            }
            Err(e) => {
                // The connection may be mid-transaction or broken: never hand it back to the pool.
                let _ = conn.detach();
                if matches!(e, Failed::Aborted(_)) && aborted < ABORTED_RETRIES {
                    aborted += 1;
                    tracing::warn!(error = %e, attempt = aborted, "write transaction aborted by the server; running it again");
                    continue;
                }
                tracing::error!(error = %e, "write transaction failed");
                return Err(e.to_string());
            }
        }
    }
}

/// Why a batch's transaction failed as a whole.
#[derive(Debug)]
enum Failed {
    Sql(sqlx::Error),
    /// A change set's statement was aborted by the server to break a conflict with another
    /// writer (inside its savepoint, or alone in its transaction): run the batch again.
    Aborted(String),
}

impl From<sqlx::Error> for Failed {
    fn from(e: sqlx::Error) -> Self {
        if errors::aborted_by_the_server(&e) {
            Self::Aborted(e.to_string())
        } else {
            Self::Sql(e)
        }
    }
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sql(e) => e.fmt(f),
            Self::Aborted(why) => f.write_str(why),
        }
    }
}

/// A change set's own failure, unless the server aborted it: then the whole batch fails, to
/// run again, rather than that request getting a 503.
fn own_failure(e: StoreError) -> Result<StoreError, Failed> {
    match e {
        StoreError::Unavailable(why) if errors::is_aborted(&why) => Err(Failed::Aborted(why)),
        e => Ok(e),
    }
}

/// Runs the batch: first with the fast path's writes deferred to statements at the end. If those
/// fail, the attempt is rolled back and tried again (a transient failure, such as a PostgreSQL
/// deadlock with a transaction outside the fast path, passes). After [`FAST_TRIES`] the batch
/// runs with each change set (changes and audit records together) in its own savepoint, so a
/// failure that persists (an audit insert that fails) reaches only its own change set.
async fn run_transaction(
    conn: &mut AnyConnection,
    jobs: &[ChangeSet],
    d: &'static Dialect,
) -> Result<Vec<Result<(), StoreError>>, Failed> {
    if jobs.len() > 1 {
        for _ in 0..FAST_TRIES {
            if let Some(results) = run_batch(conn, jobs, d, true).await? {
                return Ok(results);
            }
        }
    }
    Ok(run_batch(conn, jobs, d, false).await?.unwrap_or_default())
}

/// Attempts of a batch's fast path before it falls back to one savepoint per change set.
const FAST_TRIES: usize = 3;

/// One transaction over the batch; each change set's entity changes run in a savepoint. With
/// `defer_audit`, the fast-path change sets and the audit records of every change set that
/// succeeded are written at the end, still in the same transaction (so a change lands only with
/// its record), and `Ok(None)` means that writing failed and nothing was committed. Without it, each change set's records go in its
/// own savepoint and the answer is always `Some`. `Err`: the transaction as a whole failed.
async fn run_batch(
    conn: &mut AnyConnection,
    jobs: &[ChangeSet],
    d: &'static Dialect,
    defer_audit: bool,
) -> Result<Option<Vec<Result<(), StoreError>>>, Failed> {
    let mut tx = conn.begin_with(d.begin_write).await?;
    if let Some(lock) = lineage_lock(d, jobs) {
        tx.execute(lock).await?;
    }
    if let [job] = jobs {
        // Alone in its transaction, a change set needs no savepoint: if it fails, rolling the
        // whole transaction back undoes exactly its own changes.
        let applied = apply(&mut tx, job).await;
        return match applied {
            Ok(()) => {
                tx.commit().await?;
                Ok(Some(vec![Ok(())]))
            }
            Err(e) => {
                tx.rollback().await?;
                Ok(Some(vec![Err(own_failure(e)?)]))
            }
        };
    }
    let mut results = Vec::with_capacity(jobs.len());
    let mut deferred: Vec<&sigil_core::audit::AuditRecord> = Vec::new();
    let mut fast: Vec<(usize, &ChangeSet)> = Vec::new();
    for (n, job) in jobs.iter().enumerate() {
        if defer_audit && fast_path::takes(job) {
            fast.push((n, job));
            results.push(Ok(()));
            continue;
        }
        tx.execute("SAVEPOINT cs").await?;
        let applied = if defer_audit {
            apply_changes(&mut tx, job).await
        } else {
            apply(&mut tx, job).await
        };
        match applied {
            Ok(()) => {
                tx.execute("RELEASE SAVEPOINT cs").await?;
                if defer_audit {
                    deferred.extend(job.audit.iter());
                }
                results.push(Ok(()));
            }
            Err(e) => {
                let e = own_failure(e)?; // dropping `tx` rolls the whole attempt back
                tx.execute("ROLLBACK TO SAVEPOINT cs").await?;
                tx.execute("RELEASE SAVEPOINT cs").await?;
                results.push(Err(e));
            }
        }
    }
    if defer_audit && let Err(e) = fast_path::write(&mut tx, &fast, &mut results, deferred).await {
        tracing::debug!(error = %e, "the batch's fast path failed; it runs again");
        return Ok(None); // dropping `tx` rolls the attempt back
    }
    tx.commit().await?;
    Ok(Some(results))
}

/// The [`crate::dialect::LineageLock`] statement a transaction over `jobs` takes first, if any:
/// exclusive when it revokes tokens, shared when it records tokens derived from others or
/// issued for a grant family (both are checked against revocations in the same transaction).
fn lineage_lock(d: &Dialect, jobs: &[ChangeSet]) -> Option<&'static str> {
    let lock = d.lineage_lock?;
    let changes = || jobs.iter().flat_map(|j| j.changes.iter());
    if changes().any(|c| matches!(c, Change::RevokeToken { .. } | Change::RevokeFamily { .. })) {
        Some(lock.exclusive)
    } else if changes().any(|c| matches!(c, Change::RecordDerivedToken { .. } | Change::RecordFamilyToken { .. })) {
        Some(lock.shared)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

    use sigil_core::audit::{AuditRecord, EventType};
    use sigil_core::model::Principal;

    use super::*;

    fn exchange(parent: &str, jti: &str) -> ChangeSet {
        ChangeSet::new()
            .change(Change::RecordDerivedToken {
                parent_jti: parent.into(),
                jti: jti.into(),
                expires_at: 1_900_000_000,
            })
            .audit(AuditRecord::new(
                sigil_types::Timestamp::from_unix_seconds(1_800_000_000),
                EventType::TokenExchanged,
                &Principal::from_stored("client".into()),
                None,
            ))
    }

    /// Two transactions waiting for each other's row: PostgreSQL aborts one of them, and the
    /// writer must recognise that abort (through sqlx's Any driver) as one it may run again,
    /// and a refused write (a duplicate key) as one it may not.
    #[tokio::test]
    async fn a_postgres_deadlock_is_recognised_as_safe_to_run_again() {
        let Some(url) = crate::testing::fresh_postgres_database().await else {
            return;
        };
        let mut a = AnyConnection::connect(&url).await.expect("connect");
        let mut b = AnyConnection::connect(&url).await.expect("connect");
        a.execute("CREATE TABLE t (id INT PRIMARY KEY, v INT)").await.unwrap();
        a.execute("INSERT INTO t VALUES (1, 0), (2, 0)").await.unwrap();
        let duplicate = a.execute("INSERT INTO t VALUES (1, 0)").await.unwrap_err();
        assert!(!errors::aborted_by_the_server(&duplicate), "{duplicate}");
        let mut ta = a.begin().await.unwrap();
        let mut tb = b.begin().await.unwrap();
        ta.execute("UPDATE t SET v = 1 WHERE id = 1").await.unwrap();
        tb.execute("UPDATE t SET v = 2 WHERE id = 2").await.unwrap();
        let (ra, rb) = tokio::join!(
            ta.execute("UPDATE t SET v = 1 WHERE id = 2"),
            tb.execute("UPDATE t SET v = 2 WHERE id = 1")
        );
        let failed: Vec<sqlx::Error> = [ra.err(), rb.err()].into_iter().flatten().collect();
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(failed.iter().all(errors::aborted_by_the_server), "{failed:?}");
        // Become a change set's own error, it is still recognised, and escalates.
        let own = errors::unavailable(failed.into_iter().next().unwrap());
        assert!(matches!(own_failure(own), Err(Failed::Aborted(_))));
        assert!(own_failure(errors::unavailable(duplicate)).is_ok());
    }

    /// The batched path: derivations from a revoked parent fail alone, their records unwritten.
    #[tokio::test]
    async fn a_batch_refuses_only_the_derivations_from_a_revoked_parent() {
        let pool = crate::migrate::memory_database().await;
        let mut conn = pool.acquire().await.expect("connection");
        let d = Backend::Sqlite.dialect();
        let revoke = ChangeSet::new().change(Change::RevokeToken {
            jti: "gone".into(),
            expires_at: 1_900_000_000,
            revoked_at: sigil_types::Timestamp::from_unix_seconds(1_800_000_000),
        });
        run_transaction(&mut conn, &[revoke], d).await.unwrap()[0]
            .clone()
            .unwrap();
        let jobs = [exchange("gone", "a"), exchange("live", "b"), exchange("gone", "c")];
        let results = run_transaction(&mut conn, &jobs, d).await.unwrap();
        let refused = |r: &Result<(), StoreError>| {
            matches!(
                r,
                Err(StoreError::Stale {
                    entity: "subject token"
                })
            )
        };
        assert!(
            refused(&results[0]) && results[1].is_ok() && refused(&results[2]),
            "{results:?}"
        );
        let derived: Vec<String> = sqlx::query_scalar("SELECT jti FROM derived_tokens")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        assert_eq!(derived, ["b"]);
        let records: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_events")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(records, 1);
    }

    fn audited(cs: ChangeSet) -> ChangeSet {
        cs.audit(AuditRecord::new(
            sigil_types::Timestamp::from_unix_seconds(1_800_000_000),
            EventType::TokenIssued,
            &Principal::from_stored("client".into()),
            None,
        ))
    }

    fn assertion(client_id: &str, jti: &str) -> Change {
        Change::RecordAssertion {
            client_id: client_id.into(),
            jti: jti.into(),
            expires_at: 1_900_000_000,
        }
    }

    fn proof(jti: &str) -> Change {
        Change::RecordDpopProof {
            jti: jti.into(),
            expires_at: 1_900_000_000,
        }
    }

    /// Runs `jobs` as one batch on a fresh database that already holds the assertion `old` of
    /// client `c` and the DPoP proof `p-old`, through the fast path or one savepoint per change
    /// set; answers the results, the recorded marks and the number of audit records.
    async fn spend_in_one_batch(jobs: &[ChangeSet], fast: bool) -> (Vec<Result<(), StoreError>>, Vec<String>, i64) {
        let pool = crate::migrate::memory_database().await;
        let mut conn = pool.acquire().await.expect("connection");
        let d = Backend::Sqlite.dialect();
        let earlier = ChangeSet::new().change(assertion("c", "old")).change(proof("p-old"));
        run_transaction(&mut conn, &[earlier], d).await.unwrap()[0]
            .clone()
            .unwrap();
        let results = run_batch(&mut conn, jobs, d, fast).await.unwrap().expect("committed");
        let marks: Vec<String> = sqlx::query_scalar(
            "SELECT client_id || '/' || jti FROM used_assertions UNION ALL SELECT 'dpop/' || jti FROM used_dpop_proofs ORDER BY 1",
        )
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        let records: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_events")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        (results, marks, records)
    }

    /// The batched path refuses exactly the change sets that spend a spent mark (before or
    /// earlier in the same batch), records nothing of them, and agrees with the one-savepoint-
    /// per-change-set path in every result and row.
    #[tokio::test]
    async fn a_batch_refuses_only_the_replayed_marks_as_savepoints_would() {
        let jobs = || {
            [
                audited(ChangeSet::new().change(assertion("c", "a"))),
                audited(ChangeSet::new().change(assertion("c", "a"))),
                audited(ChangeSet::new().change(assertion("c", "old"))),
                audited(ChangeSet::new().change(assertion("c", "b")).change(proof("p-old"))),
                audited(ChangeSet::new().change(assertion("d", "a")).change(proof("p"))),
                audited(ChangeSet::new().change(Change::RecordGrantAssertion {
                    issuer: "https://idp".into(),
                    jti: "a".into(),
                    expires_at: 1_900_000_000,
                })),
                audited(ChangeSet::new().change(proof("p"))),
                audited(ChangeSet::new()),
                audited(
                    ChangeSet::new()
                        .change(Change::TouchIdentity {
                            id: sigil_types::IdentityId::generate(1_800_000_000_000, [7; 10]),
                            at: sigil_types::Timestamp::from_unix_seconds(1_800_000_000),
                        })
                        .change(assertion("e", "a")),
                ),
            ]
        };
        let fast = spend_in_one_batch(&jobs(), true).await;
        let replayed = |entity: &str, r: &Result<(), StoreError>| matches!(r, Err(StoreError::Duplicate { entity: e, field: "jti" }) if *e == entity);
        let (results, marks, records) = &fast;
        assert!(results[0].is_ok(), "{results:?}");
        assert!(replayed("client assertion", &results[1]), "{results:?}");
        assert!(replayed("client assertion", &results[2]), "{results:?}");
        assert!(replayed("dpop proof", &results[3]), "{results:?}");
        assert!(results[4].is_ok() && results[5].is_ok(), "{results:?}");
        assert!(replayed("dpop proof", &results[6]), "{results:?}");
        assert!(results[7].is_ok() && results[8].is_ok(), "{results:?}");
        assert_eq!(
            marks,
            &[
                "c/a",
                "c/old",
                "d/a",
                "dpop/p",
                "dpop/p-old",
                "e/a",
                "grant:https://idp/a"
            ]
        );
        assert_eq!(*records, 5);
        let one_by_one = spend_in_one_batch(&jobs(), false).await;
        assert_eq!(format!("{fast:?}"), format!("{one_by_one:?}"));
    }

    /// A change set refused as a replay touches no identity, in a batch or one savepoint per
    /// change set: the touch is written only with marks that were spent for the first time.
    #[tokio::test]
    async fn a_replayed_change_set_touches_no_identity() {
        for fast in [true, false] {
            let pool = crate::migrate::memory_database().await;
            let mut conn = pool.acquire().await.expect("connection");
            let d = Backend::Sqlite.dialect();
            sqlx::query(
                "INSERT INTO users (id, username, groups_json, status, created_at, updated_at, created_by, updated_by, version) \
                 VALUES ('usr_1', 'u', '[]', 'active', 0, 0, 's', 's', 1)",
            )
            .execute(&mut *conn)
            .await
            .unwrap();
            let ids: Vec<_> = (1..=2u8)
                .map(|n| sigil_types::IdentityId::generate(1_800_000_000_000, [n; 10]))
                .collect();
            for id in &ids {
                sqlx::query(
                    "INSERT INTO identities (id, name, kind, owner_id, labels_json, status, ceiling_json, created_at, updated_at, created_by, updated_by, version) \
                     VALUES ($1, $1, 'agent', 'usr_1', '{}', 'active', '{}', 0, 0, 's', 's', 1)",
                )
                .bind(id.as_str())
                .execute(&mut *conn)
                .await
                .unwrap();
            }
            let earlier = ChangeSet::new().change(assertion("c", "old"));
            run_transaction(&mut conn, &[earlier], d).await.unwrap()[0]
                .clone()
                .unwrap();
            let touch = |id: &sigil_types::IdentityId| Change::TouchIdentity {
                id: id.clone(),
                at: sigil_types::Timestamp::from_unix_seconds(1_800_000_000),
            };
            let jobs = [
                audited(ChangeSet::new().change(assertion("c", "old")).change(touch(&ids[0]))),
                audited(ChangeSet::new().change(assertion("c", "new")).change(touch(&ids[1]))),
            ];
            let results = run_batch(&mut conn, &jobs, d, fast).await.unwrap().expect("committed");
            assert!(results[0].is_err() && results[1].is_ok(), "{results:?}");
            let used: Vec<Option<i64>> = sqlx::query_scalar("SELECT last_used_at FROM identities ORDER BY id")
                .fetch_all(&mut *conn)
                .await
                .unwrap();
            assert_eq!(used, [None, Some(1_800_000_000_000_000)], "fast path: {fast}");
        }
    }

    /// Submits `changes`, polls once (the change set is queued) and drops the request before its
    /// answer, as when its client disconnects.
    async fn submit_and_drop(writer: &Writer, changes: ChangeSet) {
        let mut dropped = Box::pin(writer.submit(changes));
        std::future::poll_fn(|cx| {
            assert!(dropped.as_mut().poll(cx).is_pending());
            std::task::Poll::Ready(())
        })
        .await;
    }

    /// After a revocation the memory of tokens read as not revoked forgets, and after a
    /// registry change the read caches' epoch moves, even when the request is gone by then:
    /// the writer moves them, not the request's task.
    #[tokio::test]
    async fn what_a_commit_invalidates_is_invalidated_even_when_its_request_is_dropped() {
        let pool = crate::migrate::memory_database().await;
        let after = AfterCommit {
            not_revoked: Some(Arc::default()),
            ..AfterCommit::default()
        };
        let memory = after.not_revoked.clone().expect("memory");
        let registry = Arc::clone(&after.registry_epoch);
        let writer = Writer::start(pool, Backend::Sqlite, MAX_BATCH, after);
        let epochs = || (memory.epoch(), registry.load(Ordering::SeqCst));
        // The writer takes change sets in order: once a later one is answered, the dropped one
        // has been committed (or refused).
        let spend = |jti: &str| ChangeSet::new().change(assertion("c", jti));
        let revoke = ChangeSet::new().change(Change::RevokeToken {
            jti: "t".into(),
            expires_at: 1_900_000_000,
            revoked_at: sigil_types::Timestamp::from_unix_seconds(1_800_000_000),
        });
        submit_and_drop(&writer, revoke).await;
        writer.submit(spend("a")).await.unwrap();
        assert_eq!(
            epochs(),
            (1, 0),
            "a revocation moves only the revocation memory's epoch"
        );
        let delete = ChangeSet::new().change(Change::DeleteUser {
            id: sigil_types::UserId::generate(1_800_000_000_000, [1; 10]),
            expected_version: 1,
        });
        submit_and_drop(&writer, delete).await;
        writer.submit(spend("b")).await.unwrap();
        assert_eq!(
            epochs(),
            (1, 1),
            "a registry change (refused here) moves the registry's"
        );
        writer.submit(spend("c")).await.unwrap();
        assert_eq!(epochs(), (1, 1), "nothing else moves them");
        writer.shutdown().await;
    }
}
