//! In-process store benchmark of the audit write path: durable records per second with group
//! commit against a one-transaction-per-record baseline, and what an audit record adds to a
//! request's commit latency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sigil_core::audit::{AuditRecord, EventType};
use sigil_core::model::{Meta, Principal, User};
use sigil_core::store::{Change, ChangeSet, Store};
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
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let clock = SystemClock;
            let mut run = Run::default();
            let mut n = p as u64 * 1_000_000;
            while Instant::now() < deadline {
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
    Ok(rows)
}
