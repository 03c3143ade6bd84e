//! In-process store benchmark of the audit write path: durable records per second with group
//! commit against a one-transaction-per-record baseline, what an audit record adds to a
//! request's commit latency, and what purging expired rows does to requests' commits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sigil_core::audit::{AuditRecord, EventType};
use sigil_core::model::{Meta, Principal, User};
use sigil_core::store::{Change, ChangeSet, OAuthStore, PURGE_CHUNK, Store};
use sigil_core::{Clock, SystemClock};
use sigil_store::{Location, SqlStore, StoreOptions};
use sigil_types::{UserId, UserStatus, Username};

use crate::Run;

fn record(clock: &SystemClock, n: u64) -> AuditRecord {
    let mut r = AuditRecord::new(
        clock.now(),
        EventType::IdentityStatusChanged,
        &Principal::admin("bench"),
        Some("req_01BENCHMARK0000000000000000"),
    )
    .target("agent", "idn_01M80WFYPTQCERBXMHK0WPJ9HF", "hr-assistant")
    .detail("from", "active")
    .detail("to", "suspended")
    .detail("n", n);
    r.subject = Some("alice".into());
    r
}

async fn open(loc: &Location, max_batch: usize) -> Result<Arc<SqlStore>, String> {
    let opts = StoreOptions {
        max_batch,
        ..StoreOptions::default()
    };
    SqlStore::connect(loc, &opts)
        .await
        .map(Arc::new)
        .map_err(|e| format!("{e:?}"))
}

/// `producers` tasks commit audit-only change sets back to back for `duration`.
async fn records(store: Arc<SqlStore>, producers: usize, duration: Duration) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let timer = Arc::clone(&stop);
    tokio::spawn(async move {
        tokio::time::sleep(duration).await;
        timer.store(true, Ordering::Relaxed);
    });
    records_until(store, producers, stop).await
}

/// `producers` tasks commit audit-only change sets back to back until `stop` is set.
async fn records_until(store: Arc<SqlStore>, producers: usize, stop: Arc<AtomicBool>) -> Run {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let store = Arc::clone(&store);
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let clock = SystemClock;
            let mut run = Run::default();
            let mut n = p as u64 * 1_000_000;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let t = Instant::now();
                match store.commit(ChangeSet::new().audit(record(&clock, n))).await {
                    Ok(()) => {
                        run.ok += 1;
                        run.latencies.push(t.elapsed());
                    }
                    Err(_) => run.failed += 1,
                }
            }
            run
        }));
    }
    crate::join_runs(tasks, started).await
}

/// Registry-like requests (a user insert) with or without their audit record.
async fn requests(store: Arc<SqlStore>, concurrency: usize, duration: Duration, with_audit: bool, tag: &str) -> Run {
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let store = Arc::clone(&store);
        let tag = tag.to_owned();
        tasks.push(tokio::spawn(async move {
            let clock = SystemClock;
            let mut run = Run::default();
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let mut rnd = [0u8; 10];
                let _ = sigil_crypto::fill_random(&mut rnd);
                let Ok(username) = Username::parse(&format!("{tag}-{w}-{n}")) else {
                    continue;
                };
                let user = User {
                    id: UserId::generate(u64::try_from(clock.now().unix_millis()).unwrap_or(0), rnd),
                    username,
                    email: None,
                    display_name: None,
                    groups: Default::default(),
                    status: UserStatus::Active,
                    tokens_not_before: None,
                    meta: Meta::new(clock.now(), &Principal::admin("bench")),
                };
                let mut cs = ChangeSet::new().change(Change::InsertUser(user));
                if with_audit {
                    cs = cs.audit(record(&clock, n));
                }
                let t = Instant::now();
                match store.commit(cs).await {
                    Ok(()) => {
                        run.ok += 1;
                        run.latencies.push(t.elapsed());
                    }
                    Err(_) => run.failed += 1,
                }
            }
            run
        }));
    }
    crate::join_runs(tasks, started).await
}

/// Rows of expired token lineage the purge rows start from.
const EXPIRED_ROWS: usize = 200_000;

/// A fresh store holding [`EXPIRED_ROWS`] expired token-exchange lineage rows (random keys, as
/// token ids are), the table a sustained exchange load fills.
async fn store_with_expired_rows(path: std::path::PathBuf) -> Result<Arc<SqlStore>, String> {
    let store = open(&Location::Sqlite(path), sigil_store::StoreOptions::default().max_batch).await?;
    let random_id = || {
        let mut b = [0u8; 16];
        let _ = sigil_crypto::fill_random(&mut b);
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    };
    for _ in 0..EXPIRED_ROWS / 1_000 {
        let mut cs = ChangeSet::new();
        for _ in 0..1_000 {
            cs = cs.change(Change::RecordDerivedToken {
                parent_jti: random_id(),
                jti: random_id(),
                expires_at: 1_000,
            });
        }
        store.commit(cs).await.map_err(|e| e.to_string())?;
    }
    Ok(store)
}

/// Purges every expired row, `limit` rows of each table a commit, while 32 producers commit
/// audit records: their commits' latencies, and how long the purge took.
async fn purge_under_load(store: Arc<SqlStore>, limit: u32) -> Result<(Run, Duration), String> {
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(records_until(Arc::clone(&store), 32, Arc::clone(&stop)));
    tokio::time::sleep(Duration::from_millis(500)).await; // the load is under way
    let started = Instant::now();
    let purged = async {
        loop {
            let purge = ChangeSet::new().change(Change::PurgeExpired { before: 2_000, limit });
            store.commit(purge).await.map_err(|e| e.to_string())?;
            if !store.expired_left(2_000).await.map_err(|e| e.to_string())? {
                return Ok::<_, String>(());
            }
        }
    }
    .await;
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let run = load.await.map_err(|e| e.to_string())?;
    purged.map(|()| (run, took))
}

pub async fn bench(duration: Duration, producers: usize, no_postgres: bool) -> Result<Vec<(String, String)>, String> {
    let mut rows = Vec::new();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut backends = vec![("SQLite", Location::Sqlite(dir.path().join("bench.db")))];
    if !no_postgres {
        match sigil_store::testing::fresh_postgres_database().await {
            Some(url) => backends.push(("PostgreSQL", Location::Postgres(url))),
            None => rows.push(("PostgreSQL".into(), "skipped: no server answers".into())),
        }
    }
    for (name, loc) in &backends {
        let group = records(
            open(loc, sigil_store::StoreOptions::default().max_batch).await?,
            producers,
            duration,
        )
        .await;
        rows.push((
            format!("durable audit records/s, {name}, group commit ({producers} producers)"),
            group.summary(),
        ));
        let single = records(open(loc, 1).await?, producers, duration).await;
        rows.push((
            format!("durable audit records/s, {name}, one transaction + fsync per record (baseline)"),
            single.summary(),
        ));
    }
    // What the audit record adds to a request: the same user insert with and without it.
    let (_, loc) = backends.first().ok_or("no backend")?;
    let store = open(loc, sigil_store::StoreOptions::default().max_batch).await?;
    let without = requests(Arc::clone(&store), 32, duration, false, "wo").await;
    let with = requests(store, 32, duration, true, "wa").await;
    rows.push((
        "request commit (user insert), SQLite, 32 concurrent, without audit record".into(),
        without.summary(),
    ));
    rows.push((
        "request commit (user insert), SQLite, 32 concurrent, with its audit record".into(),
        with.summary(),
    ));
    // Purging a minute's expiries under load: in chunks as the server does, and in one delete.
    for (how, limit) in [
        (format!("{PURGE_CHUNK} rows a commit"), PURGE_CHUNK),
        ("one delete".to_owned(), u32::MAX),
    ] {
        let store = store_with_expired_rows(dir.path().join(format!("purge-{limit}.db"))).await?;
        let (run, took) = purge_under_load(store, limit).await?;
        let max = run.latencies.iter().max().copied().unwrap_or_default();
        rows.push((
            format!("audit commits, SQLite, 32 producers, while {EXPIRED_ROWS} expired rows are purged {how}"),
            format!(
                "{} — purge took {} ms, slowest commit {:.1} ms",
                run.summary(),
                took.as_millis(),
                max.as_secs_f64() * 1e3
            ),
        ));
    }
    Ok(rows)
}
