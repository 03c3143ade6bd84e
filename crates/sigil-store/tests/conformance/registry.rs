//! Registry, keys and the write path: CRUD, uniqueness, versions, pagination, filters, atomicity.

use std::collections::BTreeSet;
use std::sync::Arc;

use sigil_core::audit::EventType;
use sigil_core::model::*;
use sigil_core::store::*;
use sigil_store::Location;
use sigil_types::*;

use crate::common::*;

pub(crate) async fn user_crud(db: Db) {
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
    changed.tokens_not_before = Some(T0);
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

pub(crate) async fn uniqueness_names_the_field(db: Db) {
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

pub(crate) async fn optimistic_versioning_rejects_stale_writes(db: Db) {
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

pub(crate) async fn concurrent_read_modify_write_loses_nothing(db: Db) {
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

pub(crate) async fn pagination_walks_every_row_once(db: Db) {
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

pub(crate) async fn filters_combine(db: Db) {
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
    let at = |status, t| IdentityQuery {
        status: Some((status, Timestamp::from_unix_seconds(t))),
        ..Default::default()
    };
    assert_eq!(q(at(IdentityStatus::Suspended, 1_000)).await, Vec::<String>::new());
    // An active identity past its expires_at is suspended in effect, and listed so.
    let mut expiring = identity("a3", &alice, IdentityKind::Agent, &[]);
    expiring.expires_at = Some(Timestamp::from_unix_seconds(2_000));
    put(s, Change::InsertIdentity(expiring)).await.unwrap();
    assert_eq!(q(at(IdentityStatus::Active, 1_999)).await, ["a1", "a2", "a3", "w1"]);
    assert_eq!(q(at(IdentityStatus::Suspended, 1_999)).await, Vec::<String>::new());
    assert_eq!(q(at(IdentityStatus::Active, 2_000)).await, ["a1", "a2", "w1"]);
    assert_eq!(q(at(IdentityStatus::Suspended, 2_000)).await, ["a3"]);
    assert_eq!(q(at(IdentityStatus::Revoked, 2_000)).await, Vec::<String>::new());
}

pub(crate) async fn foreign_keys_protect_owners(db: Db) {
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

pub(crate) async fn change_sets_are_atomic(db: Db) {
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

pub(crate) async fn failed_audit_write_rolls_back_the_change(db: Db) {
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

pub(crate) async fn group_commit_isolates_failures(db: Db) {
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

pub(crate) async fn keys_and_settings(db: Db) {
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

pub(crate) async fn transfer_ownership_moves_everything(db: Db) {
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

pub(crate) async fn touch_records_use_without_a_new_version(db: Db) {
    let s = &db.store;
    let alice = user("alice", &[]);
    put(s, Change::InsertUser(alice.clone())).await.unwrap();
    let a = identity("a1", &alice, IdentityKind::Agent, &[]);
    put(s, Change::InsertIdentity(a.clone())).await.unwrap();
    let at = Timestamp::from_unix_seconds(T0.unix_seconds() + 90);
    put(s, Change::TouchIdentity { id: a.id.clone(), at }).await.unwrap();
    let read = s.get_identity(&IdentityRef::Id(a.id.clone())).await.unwrap().unwrap();
    assert_eq!(read.last_used_at, Some(at));
    assert_eq!(read.meta.version, a.meta.version, "a use is not an edit");
    // An edit made from the version read before the touch still applies.
    let mut edited = a.clone();
    edited.team = Some(TeamName::parse("ops").unwrap());
    edited.meta.version += 1;
    put(
        s,
        Change::UpdateIdentity {
            identity: edited,
            expected_version: a.meta.version,
        },
    )
    .await
    .unwrap();
}
