//! The storage conformance suite: every backend must pass every case.
//!
//! Each case runs against a fresh SQLite file and a fresh PostgreSQL database. PostgreSQL is
//! skipped (loudly) only when no server answers, unless `SIGIL_REQUIRE_POSTGRES=1`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use std::collections::BTreeSet;
use std::sync::Arc;

use sigil_core::audit::{AuditRecord, EventType};
use sigil_core::model::*;
use sigil_core::store::*;
use sigil_store::{Location, SqlStore, StoreOptions};
use sigil_types::*;

struct Db {
    store: Arc<SqlStore>,
    location: Location,
    _dir: Option<tempfile::TempDir>,
}

async fn sqlite() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let location = Location::Sqlite(dir.path().join("sigil.db"));
    let store = Arc::new(SqlStore::connect(&location, &StoreOptions::default()).await.unwrap());
    Db {
        store,
        location,
        _dir: Some(dir),
    }
}

async fn postgres() -> Option<Db> {
    let url = sigil_store::testing::fresh_postgres_database().await?;
    let location = Location::Postgres(url);
    let store = Arc::new(
        SqlStore::connect(&location, &StoreOptions::default())
            .await
            .expect("postgres store"),
    );
    Some(Db {
        store,
        location,
        _dir: None,
    })
}

macro_rules! conformance {
    ($($case:ident),+ $(,)?) => {
        mod sqlite_backend { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $case() { super::$case(super::sqlite().await).await } )+ }
        mod postgres_backend { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $case() { if let Some(db) = super::postgres().await { super::$case(db).await } } )+ }
    };
}

conformance!(
    user_crud,
    uniqueness_names_the_field,
    optimistic_versioning_rejects_stale_writes,
    concurrent_read_modify_write_loses_nothing,
    pagination_walks_every_row_once,
    filters_combine,
    foreign_keys_protect_owners,
    change_sets_are_atomic,
    failed_audit_write_rolls_back_the_change,
    group_commit_isolates_failures,
    keys_and_settings,
    transfer_ownership_moves_everything,
    leases_are_exclusive_until_they_expire,
    integration_places_each_record_once,
    audit_search_filters,
);

const T0: Timestamp = Timestamp::from_unix_seconds(1_800_000_000);

fn meta() -> Meta {
    Meta::new(T0, &Principal::admin("test"))
}

fn user(name: &str, groups: &[&str]) -> User {
    User {
        id: UserId::generate(1, rand10()),
        username: Username::parse(name).unwrap(),
        email: Some(Email::parse(&format!("{name}@example.com")).unwrap()),
        display_name: None,
        groups: groups.iter().map(|g| Group::parse(g).unwrap()).collect(),
        status: UserStatus::Active,
        meta: meta(),
    }
}

fn identity(name: &str, owner: &User, kind: IdentityKind, labels: &[(&str, &str)]) -> Identity {
    let labels = labels
        .iter()
        .map(|(k, v)| (LabelKey::parse(k).unwrap(), LabelValue::parse(v).unwrap()))
        .collect();
    Identity {
        id: IdentityId::generate(1, rand10()),
        name: Name::parse(name).unwrap(),
        kind,
        description: None,
        owner: owner.id.clone(),
        team: None,
        labels: Labels::new(labels).unwrap(),
        status: IdentityStatus::Active,
        expires_at: None,
        ceiling: Ceiling {
            scopes: ScopeSet::parse_oauth("read write").unwrap(),
            resources: None,
        },
        last_used_at: None,
        tokens_not_before: None,
        token_ttl_seconds: None,
        dpop_required: false,
        meta: meta(),
    }
}

fn resource(name: &str, uri: &str, owner: &User) -> Resource {
    Resource {
        id: ResourceId::generate(1, rand10()),
        uri: ResourceUri::parse(uri).unwrap(),
        name: Name::parse(name).unwrap(),
        description: None,
        owner: owner.id.clone(),
        scopes: ScopeSet::parse_oauth("read").unwrap(),
        meta: meta(),
    }
}

fn rand10() -> [u8; 10] {
    sigil_crypto::random_bytes::<10>().unwrap()
}

fn audit(t: EventType) -> AuditRecord {
    AuditRecord::new(T0, t, &Principal::admin("test"), Some("req-1"))
}

async fn put(store: &SqlStore, c: Change) -> Result<(), StoreError> {
    store.commit(ChangeSet::new().change(c)).await
}

async fn user_crud(db: Db) {
    let s = &db.store;
    let alice = user("alice", &["hr"]);
    s.commit(
        ChangeSet::new()
            .change(Change::InsertUser(alice.clone()))
            .audit(audit(EventType::UserCreated)),
    )
    .await
    .unwrap();
    assert_eq!(
        s.get_user(&UserRef::Id(alice.id.clone())).await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(
        s.get_user(&UserRef::Username(alice.username.clone())).await.unwrap(),
        Some(alice.clone())
    );

    let mut changed = alice.clone();
    changed.display_name = Some(DisplayName::parse("Alice A.").unwrap());
    changed.groups = BTreeSet::from([Group::parse("eng").unwrap()]);
    changed.meta = alice.meta.touched(T0, &Principal::admin("test"));
    put(
        s,
        Change::UpdateUser {
            user: changed.clone(),
            expected_version: 1,
        },
    )
    .await
    .unwrap();
    let got = s.get_user(&UserRef::Id(alice.id.clone())).await.unwrap().unwrap();
    assert_eq!(got, changed);
    assert_eq!(got.meta.version, 2);

    put(
        s,
        Change::DeleteUser {
            id: alice.id.clone(),
            expected_version: 2,
        },
    )
    .await
    .unwrap();
    assert_eq!(s.get_user(&UserRef::Id(alice.id)).await.unwrap(), None);
    let records = s.list_audit(0, 10).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].record.event_type, EventType::UserCreated);
}

async fn uniqueness_names_the_field(db: Db) {
    let s = &db.store;
    let alice = user("alice", &[]);
    put(s, Change::InsertUser(alice.clone())).await.unwrap();
    let again = user("alice", &[]);
    assert_eq!(
        put(s, Change::InsertUser(again)).await,
        Err(StoreError::Duplicate {
            entity: "user",
            field: "username"
        })
    );

    let a = identity("bot", &alice, IdentityKind::Agent, &[]);
    put(s, Change::InsertIdentity(a)).await.unwrap();
    let b = identity("bot", &alice, IdentityKind::Service, &[]);
    assert_eq!(
        put(s, Change::InsertIdentity(b)).await,
        Err(StoreError::Duplicate {
            entity: "identity",
            field: "name"
        })
    );

    put(
        s,
        Change::InsertResource(resource("hr-api", "https://hr.example/api", &alice)),
    )
    .await
    .unwrap();
    assert_eq!(
        put(
            s,
            Change::InsertResource(resource("other", "https://hr.example/api", &alice))
        )
        .await,
        Err(StoreError::Duplicate {
            entity: "resource",
            field: "uri"
        })
    );
    assert_eq!(
        put(
            s,
            Change::InsertResource(resource("hr-api", "https://other.example/", &alice))
        )
        .await,
        Err(StoreError::Duplicate {
            entity: "resource",
            field: "name"
        })
    );
}

async fn optimistic_versioning_rejects_stale_writes(db: Db) {
    let s = &db.store;
    let alice = user("alice", &[]);
    put(s, Change::InsertUser(alice.clone())).await.unwrap();
    let mut v2 = alice.clone();
    v2.meta.version = 2;
    put(
        s,
        Change::UpdateUser {
            user: v2.clone(),
            expected_version: 1,
        },
    )
    .await
    .unwrap();
    // A second writer that also read version 1 must not overwrite version 2.
    let mut other = alice.clone();
    other.status = UserStatus::Suspended;
    other.meta.version = 2;
    assert_eq!(
        put(
            s,
            Change::UpdateUser {
                user: other,
                expected_version: 1
            }
        )
        .await,
        Err(StoreError::Stale { entity: "user" })
    );
    assert_eq!(
        put(
            s,
            Change::DeleteUser {
                id: alice.id.clone(),
                expected_version: 1
            }
        )
        .await,
        Err(StoreError::Stale { entity: "user" })
    );
    assert_eq!(
        s.get_user(&UserRef::Id(alice.id)).await.unwrap().unwrap().status,
        UserStatus::Active
    );
}

async fn concurrent_read_modify_write_loses_nothing(db: Db) {
    let s = Arc::clone(&db.store);
    let alice = user("alice", &[]);
    put(&s, Change::InsertUser(alice.clone())).await.unwrap();
    let bot = identity("bot", &alice, IdentityKind::Agent, &[]);
    put(&s, Change::InsertIdentity(bot.clone())).await.unwrap();
    let mut tasks = Vec::new();
    for n in 0..16 {
        let s = Arc::clone(&s);
        let r = IdentityRef::Id(bot.id.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let cur = s.get_identity(&r).await.unwrap().unwrap();
                let mut map: std::collections::BTreeMap<_, _> =
                    cur.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                map.insert(
                    LabelKey::parse(&format!("k{n}")).unwrap(),
                    LabelValue::parse("v").unwrap(),
                );
                let mut next = cur.clone();
                next.labels = Labels::new(map).unwrap();
                next.meta.version += 1;
                match s
                    .commit(ChangeSet::new().change(Change::UpdateIdentity {
                        identity: next,
                        expected_version: cur.meta.version,
                    }))
                    .await
                {
                    Ok(()) => return,
                    Err(StoreError::Stale { .. }) => continue,
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let end = s.get_identity(&IdentityRef::Id(bot.id)).await.unwrap().unwrap();
    assert_eq!(end.labels.len(), 16, "every concurrent update must survive");
    assert_eq!(end.meta.version, 17);
}

async fn pagination_walks_every_row_once(db: Db) {
    let s = &db.store;
    let mut ids = Vec::new();
    for n in 0..7 {
        let u = user(&format!("user{n}"), &[]);
        ids.push(u.id.to_string());
        put(s, Change::InsertUser(u)).await.unwrap();
    }
    ids.sort();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = s
            .list_users(&UserQuery {
                page: PageRequest::new(after, Some(3)).unwrap(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(page.items.len() <= 3);
        seen.extend(page.items.iter().map(|u| u.id.to_string()));
        match page.next_cursor {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, ids);
}

async fn filters_combine(db: Db) {
    let s = &db.store;
    let alice = user("alice", &["hr", "eng"]);
    let bob = user("bob", &["eng"]);
    put(s, Change::InsertUser(alice.clone())).await.unwrap();
    put(s, Change::InsertUser(bob.clone())).await.unwrap();
    let hr = s
        .list_users(&UserQuery {
            group: Some(Group::parse("hr").unwrap()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        hr.items.iter().map(|u| u.username.as_str()).collect::<Vec<_>>(),
        ["alice"]
    );

    put(
        s,
        Change::InsertIdentity(identity(
            "a1",
            &alice,
            IdentityKind::Agent,
            &[("env", "prod"), ("tier", "1")],
        )),
    )
    .await
    .unwrap();
    put(
        s,
        Change::InsertIdentity(identity("a2", &bob, IdentityKind::Agent, &[("env", "prod")])),
    )
    .await
    .unwrap();
    put(
        s,
        Change::InsertIdentity(identity("w1", &alice, IdentityKind::Job, &[("env", "dev")])),
    )
    .await
    .unwrap();
    let names = |p: Page<Identity>| {
        let mut v = p.items.into_iter().map(|i| i.name.to_string()).collect::<Vec<_>>();
        v.sort();
        v
    };
    let q = |f: IdentityQuery| async move { names(s.list_identities(&f).await.unwrap()) };
    assert_eq!(
        q(IdentityQuery {
            family: Some(IdentityFamily::Agents),
            ..Default::default()
        })
        .await,
        ["a1", "a2"]
    );
    assert_eq!(
        q(IdentityQuery {
            family: Some(IdentityFamily::Workloads),
            ..Default::default()
        })
        .await,
        ["w1"]
    );
    assert_eq!(
        q(IdentityQuery {
            owner: Some(alice.id.clone()),
            ..Default::default()
        })
        .await,
        ["a1", "w1"]
    );
    let prod = Labels::parse_pair("env=prod").unwrap();
    let tier = Labels::parse_pair("tier=1").unwrap();
    assert_eq!(
        q(IdentityQuery {
            labels: vec![prod.clone()],
            ..Default::default()
        })
        .await,
        ["a1", "a2"]
    );
    assert_eq!(
        q(IdentityQuery {
            labels: vec![prod, tier],
            ..Default::default()
        })
        .await,
        ["a1"]
    );
    assert_eq!(
        q(IdentityQuery {
            kind: Some(IdentityKind::Job),
            owner: Some(bob.id.clone()),
            ..Default::default()
        })
        .await,
        Vec::<String>::new()
    );
    assert_eq!(
        q(IdentityQuery {
            status: Some(IdentityStatus::Suspended),
            ..Default::default()
        })
        .await,
        Vec::<String>::new()
    );
}

async fn foreign_keys_protect_owners(db: Db) {
    let s = &db.store;
    let alice = user("alice", &[]);
    let ghost = user("ghost", &[]);
    put(s, Change::InsertUser(alice.clone())).await.unwrap();
    assert_eq!(
        put(
            s,
            Change::InsertIdentity(identity("orphan", &ghost, IdentityKind::Agent, &[]))
        )
        .await,
        Err(StoreError::MissingReference { entity: "owner" })
    );
    put(
        s,
        Change::InsertIdentity(identity("bot", &alice, IdentityKind::Agent, &[])),
    )
    .await
    .unwrap();
    assert_eq!(s.count_owned(&alice.id).await.unwrap(), 1);
    assert_eq!(
        put(
            s,
            Change::DeleteUser {
                id: alice.id.clone(),
                expected_version: 1
            }
        )
        .await,
        Err(StoreError::StillReferenced { entity: "user" })
    );
    assert!(s.get_user(&UserRef::Id(alice.id)).await.unwrap().is_some());
}

async fn change_sets_are_atomic(db: Db) {
    let s = &db.store;
    let alice = user("alice", &[]);
    put(s, Change::InsertUser(alice.clone())).await.unwrap();
    let bob = user("bob", &[]);
    let dup = user("alice", &[]);
    let cs = ChangeSet::new()
        .change(Change::InsertUser(bob.clone()))
        .change(Change::InsertUser(dup))
        .audit(audit(EventType::UserCreated));
    assert!(s.commit(cs).await.is_err());
    assert_eq!(
        s.get_user(&UserRef::Id(bob.id)).await.unwrap(),
        None,
        "no part of a failed change set may land"
    );
    assert!(s.list_audit(0, 10).await.unwrap().is_empty(), "nor its audit record");
}

async fn failed_audit_write_rolls_back_the_change(db: Db) {
    // Make every audit insert fail, the way a full disk or a broken audit table would.
    let trigger = match &db.location {
        Location::Sqlite(_) => vec![
            "CREATE TRIGGER audit_refuses BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'audit unavailable'); END",
        ],
        Location::Postgres(_) => vec![
            "CREATE FUNCTION audit_refuses() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'audit unavailable'; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER audit_refuses BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION audit_refuses()",
        ],
    };
    let url = match &db.location {
        Location::Sqlite(p) => format!("sqlite://{}", p.display()),
        Location::Postgres(u) => u.clone(),
    };
    {
        use sqlx::Connection;
        let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
        for t in trigger {
            sqlx::raw_sql(t).execute(&mut conn).await.unwrap();
        }
    }
    let alice = user("alice", &[]);
    let res = db
        .store
        .commit(
            ChangeSet::new()
                .change(Change::InsertUser(alice.clone()))
                .audit(audit(EventType::UserCreated)),
        )
        .await;
    assert!(matches!(res, Err(StoreError::Unavailable(_))), "got {res:?}");
    assert_eq!(
        db.store.get_user(&UserRef::Id(alice.id)).await.unwrap(),
        None,
        "the change must not survive its audit record"
    );
    // The same under load: batched change sets take the group committer's fast path, whose
    // audit insert fails for the whole batch; each change set must still fail on its own.
    let mut tasks = Vec::new();
    for n in 0..50 {
        let store = Arc::clone(&db.store);
        tasks.push(tokio::spawn(async move {
            let u = user(&format!("load{n}"), &[]);
            let r = store
                .commit(
                    ChangeSet::new()
                        .change(Change::InsertUser(u.clone()))
                        .audit(audit(EventType::UserCreated)),
                )
                .await;
            (u, r)
        }));
    }
    for t in tasks {
        let (u, r) = t.await.unwrap();
        assert!(r.is_err());
        assert_eq!(db.store.get_user(&UserRef::Id(u.id)).await.unwrap(), None);
    }
}

async fn group_commit_isolates_failures(db: Db) {
    let s = Arc::clone(&db.store);
    // 200 concurrent inserts, every 4th a duplicate of an earlier name: many share a batch.
    put(&s, Change::InsertUser(user("taken", &[]))).await.unwrap();
    let mut tasks = Vec::new();
    for n in 0..200 {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            let name = if n % 4 == 0 {
                "taken".to_owned()
            } else {
                format!("u{n}")
            };
            let u = user(&name, &[]);
            let r = s
                .commit(
                    ChangeSet::new()
                        .change(Change::InsertUser(u.clone()))
                        .audit(audit(EventType::UserCreated)),
                )
                .await;
            (n, u, r)
        }));
    }
    for t in tasks {
        let (n, u, r) = t.await.unwrap();
        let stored = s.get_user(&UserRef::Id(u.id.clone())).await.unwrap();
        if n % 4 == 0 {
            assert_eq!(
                r,
                Err(StoreError::Duplicate {
                    entity: "user",
                    field: "username"
                })
            );
            assert_eq!(stored, None);
        } else {
            assert_eq!(r, Ok(()));
            assert_eq!(stored, Some(u));
        }
    }
    assert_eq!(
        s.list_audit(0, 1000).await.unwrap().len(),
        150,
        "one audit record per committed change set"
    );
}

async fn keys_and_settings(db: Db) {
    use sigil_core::keys::{KeyState, StoredKey};
    let s = &db.store;
    let (k, _) = sigil_crypto::SigningKey::generate(sigil_crypto::Algorithm::EdDsa).unwrap();
    let stored = StoredKey {
        kid: k.kid().to_owned(),
        alg: k.alg(),
        state: KeyState::Pending,
        public_jwk: k.public_jwk(),
        sealed_private: sigil_crypto::SealedBlob(vec![1, 2, 3]),
        created_at: T0,
        activate_at: T0,
        retired_at: None,
        remove_after: None,
        version: 1,
    };
    put(s, Change::InsertSigningKey(stored.clone())).await.unwrap();
    assert_eq!(s.list_signing_keys().await.unwrap(), vec![stored.clone()]);
    let mut active = stored.clone();
    active.state = KeyState::Active;
    active.version = 2;
    put(
        s,
        Change::UpdateSigningKey {
            key: active.clone(),
            expected_version: 1,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        put(
            s,
            Change::UpdateSigningKey {
                key: active.clone(),
                expected_version: 1
            }
        )
        .await,
        Err(StoreError::Stale { entity: "signing key" })
    );
    put(
        s,
        Change::DeleteSigningKey {
            kid: active.kid.clone(),
            expected_version: 2,
        },
    )
    .await
    .unwrap();
    assert!(s.list_signing_keys().await.unwrap().is_empty());

    put(
        s,
        Change::InsertSetting {
            name: "x".into(),
            value: vec![1],
        },
    )
    .await
    .unwrap();
    assert_eq!(
        put(
            s,
            Change::InsertSetting {
                name: "x".into(),
                value: vec![2]
            }
        )
        .await,
        Err(StoreError::Duplicate {
            entity: "setting",
            field: "name"
        })
    );
    assert_eq!(s.get_setting("x").await.unwrap(), Some(vec![1]));
}

async fn transfer_ownership_moves_everything(db: Db) {
    let s = &db.store;
    let alice = user("alice", &[]);
    let bob = user("bob", &[]);
    put(s, Change::InsertUser(alice.clone())).await.unwrap();
    put(s, Change::InsertUser(bob.clone())).await.unwrap();
    put(
        s,
        Change::InsertIdentity(identity("a1", &alice, IdentityKind::Agent, &[])),
    )
    .await
    .unwrap();
    put(s, Change::InsertResource(resource("r1", "https://r1.example/", &alice)))
        .await
        .unwrap();
    let cs = ChangeSet::new()
        .change(Change::TransferOwnership {
            from: alice.id.clone(),
            to: bob.id.clone(),
            by: "admin:test".into(),
            at: T0,
        })
        .change(Change::DeleteUser {
            id: alice.id.clone(),
            expected_version: 1,
        });
    s.commit(cs).await.unwrap();
    assert_eq!(s.count_owned(&bob.id).await.unwrap(), 2);
    let a1 = s
        .get_identity(&IdentityRef::Name(Name::parse("a1").unwrap()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a1.owner, bob.id);
    assert_eq!(a1.meta.version, 2);
}

fn claim(holder: &str, now: i64) -> sigil_core::audit::LeaseClaim {
    sigil_core::audit::LeaseClaim {
        name: "audit-integrator".into(),
        holder: holder.into(),
        now: Timestamp::from_unix_seconds(now),
        until: Timestamp::from_unix_seconds(now + 5),
    }
}

async fn leases_are_exclusive_until_they_expire(db: Db) {
    let s = &db.store;
    put(s, Change::AcquireLease(claim("a", 100))).await.unwrap();
    put(s, Change::AcquireLease(claim("a", 101))).await.unwrap();
    assert_eq!(
        put(s, Change::AcquireLease(claim("b", 102))).await,
        Err(StoreError::Stale { entity: "lease" })
    );
    put(s, Change::AcquireLease(claim("b", 107))).await.unwrap();
    // a's lease is gone: its integration is fenced off.
    let i = sigil_core::audit::Integration {
        lease: claim("a", 107),
        leaves: vec![],
        nodes: vec![],
        checkpoint: None,
    };
    assert_eq!(
        put(s, Change::IntegrateAudit(Box::new(i))).await,
        Err(StoreError::Stale { entity: "lease" })
    );
}

async fn integration_places_each_record_once(db: Db) {
    use sigil_core::audit::merkle::Frontier;
    let s = &db.store;
    for _ in 0..3 {
        s.commit(ChangeSet::new().audit(audit(EventType::UserCreated)))
            .await
            .unwrap();
    }
    let pending = s.pending_audit(10).await.unwrap();
    assert_eq!(pending.len(), 3);
    let mut f = Frontier::default();
    let mut leaves = Vec::new();
    let mut nodes = Vec::new();
    for (seq, body) in &pending {
        let h = sigil_core::audit::log::leaf_hash_of(f.size, body);
        leaves.push((*seq, f.size, h));
        nodes.extend(f.push(h));
    }
    let cp = sigil_core::audit::Checkpoint {
        tree_size: 3,
        root_hash: f.root(),
        time: T0,
        kid: "k".into(),
        jws: "x.y.z".into(),
    };
    put(s, Change::AcquireLease(claim("a", 100))).await.unwrap();
    let i = sigil_core::audit::Integration {
        lease: claim("a", 100),
        leaves: leaves.clone(),
        nodes: nodes.clone(),
        checkpoint: Some(cp.clone()),
    };
    put(s, Change::IntegrateAudit(Box::new(i.clone()))).await.unwrap();
    assert!(s.pending_audit(10).await.unwrap().is_empty());
    assert_eq!(s.audit_tree_size().await.unwrap(), 3);
    let stored = s.list_leaves(0, 10).await.unwrap();
    assert_eq!(stored.iter().map(|r| r.leaf_index).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(stored[1].leaf_hash, leaves[1].2);
    assert_eq!(s.latest_checkpoint().await.unwrap(), Some(cp));
    let coords = Frontier::coordinates(3);
    let got = s.audit_nodes(&coords).await.unwrap();
    assert_eq!(Frontier::load(3, &got).unwrap().root(), f.root());
    // Integrating the same records again is refused as a whole.
    let again = sigil_core::audit::Integration {
        checkpoint: None,
        nodes: vec![],
        ..i
    };
    assert_eq!(
        put(s, Change::IntegrateAudit(Box::new(again))).await,
        Err(StoreError::Stale { entity: "audit record" })
    );
    put(
        s,
        Change::SetSinkPosition {
            name: "file".into(),
            delivered: 2,
        },
    )
    .await
    .unwrap();
    put(
        s,
        Change::SetSinkPosition {
            name: "file".into(),
            delivered: 3,
        },
    )
    .await
    .unwrap();
    assert_eq!(s.sink_position("file").await.unwrap(), Some(3));
}

async fn audit_search_filters(db: Db) {
    use sigil_core::audit::{AuditQuery, Outcome};
    let s = &db.store;
    let mut denied = audit(EventType::AdminAuthFailed).outcome(Outcome::Denied, "invalid admin credential");
    denied.subject = Some("alice".into());
    s.commit(ChangeSet::new().audit(denied)).await.unwrap();
    s.commit(ChangeSet::new().audit(audit(EventType::UserCreated).target("user", "usr_x", "bob")))
        .await
        .unwrap();
    let q = |f: AuditQuery| async move { s.search_audit(&f).await.unwrap().items.len() };
    assert_eq!(q(AuditQuery::default()).await, 2);
    assert_eq!(
        q(AuditQuery {
            outcome: Some(Outcome::Denied),
            ..Default::default()
        })
        .await,
        1
    );
    assert_eq!(
        q(AuditQuery {
            event_type: Some(EventType::UserCreated),
            ..Default::default()
        })
        .await,
        1
    );
    assert_eq!(
        q(AuditQuery {
            user: Some("alice".into()),
            ..Default::default()
        })
        .await,
        1
    );
    assert_eq!(
        q(AuditQuery {
            agent: vec!["usr_x".into()],
            ..Default::default()
        })
        .await,
        1
    );
    assert_eq!(
        q(AuditQuery {
            agent: vec!["admin:test".into()],
            ..Default::default()
        })
        .await,
        2
    );
    assert_eq!(
        q(AuditQuery {
            request_id: Some("req-1".into()),
            ..Default::default()
        })
        .await,
        2
    );
    assert_eq!(
        q(AuditQuery {
            since: Some(T0.plus(std::time::Duration::from_secs(1))),
            ..Default::default()
        })
        .await,
        0
    );
    let first = s
        .search_audit(&AuditQuery {
            page: PageRequest::new(None, Some(1)).unwrap(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(first.items[0].record.event_type, EventType::UserCreated, "newest first");
    let second = s
        .search_audit(&AuditQuery {
            page: PageRequest::new(first.next_cursor, Some(1)).unwrap(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(second.items[0].record.event_type, EventType::AdminAuthFailed);
}
