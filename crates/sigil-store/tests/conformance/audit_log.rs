//! The audit log: leases, integration into the tree, search.

use sigil_core::audit::EventType;
use sigil_core::model::*;
use sigil_core::store::*;
use sigil_types::*;

use crate::common::*;

pub(crate) fn claim(holder: &str, now: i64) -> sigil_core::audit::LeaseClaim {
    sigil_core::audit::LeaseClaim {
        name: "audit-integrator".into(),
        holder: holder.into(),
        now: Timestamp::from_unix_seconds(now),
        until: Timestamp::from_unix_seconds(now + 5),
    }
}

pub(crate) async fn leases_are_exclusive_until_they_expire(db: Db) {
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

/// A lease that lapsed while nobody took it is still its holder's: nobody else can have
/// integrated meanwhile, so the holder's next step goes on (and renews it).
pub(crate) async fn a_lapsed_lease_nobody_took_still_fences_for_its_holder(db: Db) {
    let s = &db.store;
    put(s, Change::AcquireLease(claim("a", 100))).await.unwrap();
    let step = |now| sigil_core::audit::Integration {
        lease: claim("a", now),
        leaves: vec![],
        nodes: vec![],
        checkpoint: None,
    };
    put(s, Change::IntegrateAudit(Box::new(step(110)))).await.unwrap();
    assert_eq!(
        put(s, Change::AcquireLease(claim("b", 112))).await,
        Err(StoreError::Stale { entity: "lease" }),
        "the step renewed a's lease"
    );
}

pub(crate) async fn integration_places_each_record_once(db: Db) {
    use sigil_core::audit::merkle::Frontier;
    let s = &db.store;
    for name in ["bob", "zoë, 🙂", "x,9,y"] {
        s.commit(ChangeSet::new().audit(audit(EventType::UserCreated).target("user", "usr_x", name)))
            .await
            .unwrap();
    }
    let pending = s.pending_audit(10).await.unwrap();
    assert_eq!(pending.len(), 3);
    // Each body byte for byte, in order, whatever it holds.
    let stored = s.list_audit(0, 10).await.unwrap();
    let stored: Vec<(i64, &str)> = stored.iter().map(|r| (r.seq, r.body.as_str())).collect();
    let read: Vec<(i64, &str)> = pending.iter().map(|(q, b)| (*q, b.as_str())).collect();
    assert_eq!(read, stored);
    assert_eq!(s.pending_audit(2).await.unwrap(), pending[..2]);
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
    let hashes = |from, to| s.audit_leaf_hashes(from, to);
    assert_eq!(hashes(1, 3).await.unwrap(), [(1, leaves[1].2), (2, leaves[2].2)]);
    assert_eq!(hashes(3, 10).await.unwrap(), []);
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

pub(crate) async fn audit_search_filters(db: Db) {
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
            user: vec!["alice".into()],
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

/// Integrates every pending record (leaf hashes only; no checkpoint), as the integrator would.
async fn integrate_pending(s: &sigil_store::SqlStore, now: i64) {
    let mut size = s.audit_tree_size().await.unwrap();
    let leaves = s
        .pending_audit(1_000)
        .await
        .unwrap()
        .into_iter()
        .map(|(seq, body)| {
            let leaf = (seq, size, sigil_core::audit::log::leaf_hash_of(size, &body));
            size += 1;
            leaf
        })
        .collect();
    put(s, Change::AcquireLease(claim("a", now))).await.unwrap();
    let step = sigil_core::audit::Integration {
        lease: claim("a", now),
        leaves,
        nodes: vec![],
        checkpoint: None,
    };
    put(s, Change::IntegrateAudit(Box::new(step))).await.unwrap();
}

/// The search indexes hold integrated records only (migration 17): a search finds the records
/// integration has not reached yet as well, newest first across both, and its pages walk them
/// all once.
pub(crate) async fn search_spans_integrated_and_pending_records(db: Db) {
    use sigil_core::audit::AuditQuery;
    let s = &db.store;
    let about = |t: EventType, n: usize| {
        let mut r = audit(t).target("user", "usr_x", "bob");
        r.subject = Some(format!("alice{}", n % 2));
        r.actors = vec!["idn_helper".into(), "idn_assistant".into()];
        r
    };
    for n in 0..6 {
        s.commit(ChangeSet::new().audit(about(EventType::UserCreated, n)))
            .await
            .unwrap();
        s.commit(ChangeSet::new().audit(audit(EventType::TokenIssued)))
            .await
            .unwrap();
        if n == 2 {
            integrate_pending(s, 100).await;
        }
    }
    assert_eq!(
        s.pending_audit(100).await.unwrap().len(),
        6,
        "half pending, half integrated"
    );
    let walk = |f: AuditQuery| async move {
        let mut seqs = Vec::new();
        let mut after = None;
        loop {
            let page = s
                .search_audit(&AuditQuery {
                    page: PageRequest::new(after, Some(2)).unwrap(),
                    ..f.clone()
                })
                .await
                .unwrap();
            seqs.extend(page.items.iter().map(|r| r.seq));
            match page.next_cursor {
                Some(c) => after = Some(c),
                None => return seqs,
            }
        }
    };
    let all = walk(AuditQuery::default()).await;
    assert_eq!(all.len(), 12);
    assert!(all.windows(2).all(|w| w[0] > w[1]), "newest first, each once: {all:?}");
    let by_agent = walk(AuditQuery {
        agent: vec!["usr_x".into()],
        ..Default::default()
    })
    .await;
    let by_chain = walk(AuditQuery {
        agent: vec!["idn_assistant".into()],
        ..Default::default()
    })
    .await;
    let by_type = walk(AuditQuery {
        event_type: Some(EventType::UserCreated),
        ..Default::default()
    })
    .await;
    assert_eq!(by_agent.len(), 6);
    assert!(by_agent.windows(2).all(|w| w[0] > w[1]), "{by_agent:?}");
    assert_eq!(by_chain, by_agent);
    assert_eq!(by_type, by_agent);
    let by_user = walk(AuditQuery {
        user: vec!["alice1".into()],
        ..Default::default()
    })
    .await;
    assert_eq!(by_user, by_agent.iter().copied().step_by(2).collect::<Vec<_>>());
}

/// A sub-agent's record is found under every agent of its chain, not only the acting one, and
/// records written before the `acting_for` column (migration 11) are found the same way once
/// the migration filled it from their bodies; an id's `_` is no wildcard.
pub(crate) async fn search_finds_every_agent_of_a_chain(db: Db) {
    use sigil_core::audit::AuditQuery;
    let chained = |actors: &[&str]| {
        let mut r = audit(EventType::TokenExchanged);
        r.actors = actors.iter().map(|a| (*a).to_owned()).collect();
        r
    };
    let s = &db.store;
    s.commit(ChangeSet::new().audit(chained(&["idn_intern", "idn_helper", "idn_assistant"])))
        .await
        .unwrap();
    s.commit(ChangeSet::new().audit(chained(&["idn_helper", "idn_assistant"])))
        .await
        .unwrap();
    s.commit(ChangeSet::new().audit(chained(&["idnXhelper"])))
        .await
        .unwrap();
    let found = |store: std::sync::Arc<sigil_store::SqlStore>, agent: &'static str| async move {
        store
            .search_audit(&AuditQuery {
                agent: vec![agent.into()],
                ..Default::default()
            })
            .await
            .unwrap()
            .items
            .len()
    };
    let expected = [
        ("idn_assistant", 2),
        ("idn_helper", 2),
        ("idn_intern", 1),
        ("idnXhelper", 1),
    ];
    for (agent, n) in expected {
        assert_eq!(found(db.store.clone(), agent).await, n, "{agent}");
    }

    // As if the records predated the column: drop it, forget migration 11 (and those after it,
    // undone too: migrations run in order), start again.
    let url = match &db.location {
        sigil_store::Location::Sqlite(p) => format!("sqlite://{}", p.display()),
        sigil_store::Location::Postgres(u) => u.clone(),
    };
    {
        use sqlx::Connection;
        let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
        for sql in [
            "DROP INDEX used_dpop_proofs_expiry",
            "DROP INDEX revoked_tokens_expiry",
            "DROP INDEX family_tokens_expiry",
            "DROP INDEX audit_events_acting_for",
            "ALTER TABLE audit_events DROP COLUMN acting_for",
            "ALTER TABLE resources DROP COLUMN servers_json",
            "DROP TABLE derived_tokens",
            "DROP INDEX delegated_grants_expiry",
            "DROP INDEX oauth_clients_registration_token",
            "DELETE FROM sigil_migrations WHERE version >= 11",
        ] {
            sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
        }
    }
    let reopened = std::sync::Arc::new(
        sigil_store::SqlStore::connect(&db.location, &sigil_store::StoreOptions::default())
            .await
            .unwrap(),
    );
    for (agent, n) in expected {
        assert_eq!(found(reopened.clone(), agent).await, n, "after the migration: {agent}");
    }
}
