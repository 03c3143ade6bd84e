//! Delegation state: passwords, single-use codes, rotating refresh tokens and grant families
//! whose revocation also revokes the access tokens they produced.

use std::time::Duration;

use sigil_core::oauth::grant::{Grant, GrantKind};
use sigil_core::store::*;

use crate::common::{Db, T0, put, user};

fn grant(hash: &str, kind: GrantKind, family: &str, user: &sigil_core::model::User) -> Grant {
    Grant {
        handle_hash: hash.to_owned(),
        kind,
        family_id: family.to_owned(),
        client_id: "cli_test".into(),
        user_id: user.id.clone(),
        resource: "https://api.example.com".into(),
        scope: "read write".into(),
        redirect_uri: (kind == GrantKind::Code).then(|| "https://app.example.com/cb".to_owned()),
        code_challenge: (kind == GrantKind::Code).then(|| "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".to_owned()),
        openid: kind == GrantKind::Code,
        nonce: (kind == GrantKind::Code).then(|| "n-0S6_WzA2Mj".to_owned()),
        auth_time: T0,
        dpop_jkt: (kind == GrantKind::Refresh).then(|| "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I".to_owned()),
        issued_at: T0,
        expires_at: T0.plus(Duration::from_secs(60)),
        used_at: None,
        family_revoked: false,
    }
}

pub(crate) async fn passwords_and_grant_families(db: Db) {
    let s = &db.store;
    let alice = user("alice", &[]);
    put(s, Change::InsertUser(alice.clone())).await.unwrap();

    assert_eq!(s.user_password_hash(&alice.id).await.unwrap(), None);
    for h in ["$argon2id$one", "$argon2id$two"] {
        put(
            s,
            Change::SetUserPassword {
                user_id: alice.id.clone(),
                hash: h.into(),
                at: T0,
            },
        )
        .await
        .unwrap();
    }
    assert_eq!(
        s.user_password_hash(&alice.id).await.unwrap().as_deref(),
        Some("$argon2id$two")
    );

    let code = grant("h-code", GrantKind::Code, "fam_1", &alice);
    put(s, Change::InsertGrant(code.clone())).await.unwrap();
    assert_eq!(s.get_grant("h-code").await.unwrap(), Some(code.clone()));
    assert_eq!(s.get_grant("h-other").await.unwrap(), None);
    assert!(matches!(
        put(s, Change::InsertGrant(code.clone())).await,
        Err(StoreError::Duplicate { .. })
    ));

    // A code is spent once; the second spend is Stale, and a failed change set leaves no trace.
    let spend = |h: &str| Change::UseGrant {
        handle_hash: h.into(),
        at: T0,
    };
    let refresh = grant("h-refresh", GrantKind::Refresh, "fam_1", &alice);
    let issued = Change::RecordFamilyToken {
        family_id: "fam_1".into(),
        jti: "jti-1".into(),
        expires_at: 1_900_000_000,
    };
    s.commit(
        ChangeSet::new()
            .change(spend("h-code"))
            .change(Change::InsertGrant(refresh.clone()))
            .change(issued),
    )
    .await
    .unwrap();
    let again = ChangeSet::new()
        .change(spend("h-code"))
        .change(Change::InsertGrant(grant(
            "h-refresh-2",
            GrantKind::Refresh,
            "fam_1",
            &alice,
        )));
    assert!(matches!(
        s.commit(again).await,
        Err(StoreError::Stale { entity: "grant" })
    ));
    assert_eq!(
        s.get_grant("h-refresh-2").await.unwrap(),
        None,
        "the losing spend issued nothing"
    );
    assert_eq!(s.get_grant("h-code").await.unwrap().unwrap().used_at, Some(T0));
    assert!(!s.is_token_revoked("jti-1").await.unwrap());

    // Revoking the family marks every grant of it and revokes the tokens it produced.
    put(
        s,
        Change::RevokeFamily {
            family_id: "fam_1".into(),
            at: T0,
        },
    )
    .await
    .unwrap();
    assert!(s.get_grant("h-refresh").await.unwrap().unwrap().family_revoked);
    assert!(s.get_grant("h-code").await.unwrap().unwrap().family_revoked);
    assert!(s.is_token_revoked("jti-1").await.unwrap());
    // Revoking twice is harmless; other families are untouched.
    put(
        s,
        Change::RevokeFamily {
            family_id: "fam_1".into(),
            at: T0,
        },
    )
    .await
    .unwrap();
    put(s, Change::InsertGrant(grant("h-b", GrantKind::Code, "fam_2", &alice)))
        .await
        .unwrap();
    assert!(!s.get_grant("h-b").await.unwrap().unwrap().family_revoked);

    // Deleting the user removes the password and the grants with her.
    put(
        s,
        Change::DeleteUser {
            id: alice.id.clone(),
            expected_version: alice.meta.version,
        },
    )
    .await
    .unwrap();
    assert_eq!(s.user_password_hash(&alice.id).await.unwrap(), None);
    assert_eq!(s.get_grant("h-b").await.unwrap(), None);
}

/// A token exchanged from another is revoked with it, at any depth of the chain, and with the
/// grant family of the token at the chain's base; tokens outside the chain are untouched.
pub(crate) async fn revoking_a_token_revokes_what_was_derived_from_it(db: Db) {
    let s = &*db.store;
    let derive = |parent: &str, jti: &str| Change::RecordDerivedToken {
        parent_jti: parent.into(),
        jti: jti.into(),
        expires_at: 1_900_000_000,
    };
    for (parent, jti) in [("base", "child"), ("child", "grandchild"), ("other", "unrelated")] {
        put(s, derive(parent, jti)).await.unwrap();
    }
    // Recording the same derivation twice is harmless.
    put(s, derive("base", "child")).await.unwrap();
    let revoke = |jti: &str| Change::RevokeToken {
        jti: jti.into(),
        expires_at: 1_900_000_000,
        revoked_at: T0,
    };
    for jti in ["child", "grandchild"] {
        assert!(!s.is_token_revoked(jti).await.unwrap(), "{jti}");
    }
    put(s, revoke("child")).await.unwrap();
    for (jti, revoked) in [
        ("base", false),
        ("child", true),
        ("grandchild", true),
        ("unrelated", false),
    ] {
        assert_eq!(s.is_token_revoked(jti).await.unwrap(), revoked, "{jti}");
    }
    put(s, revoke("base")).await.unwrap();
    assert!(s.is_token_revoked("base").await.unwrap());
    // Exchanges committed at once (the writer batches them, derivations and audit records in
    // multi-row statements) are each recorded.
    let tasks: Vec<_> = (0..12)
        .map(|n| {
            let store = db.store.clone();
            let cs = ChangeSet::new()
                .change(derive("batch-base", &format!("batch-{n}")))
                .audit(crate::common::audit(sigil_core::audit::EventType::TokenExchanged));
            tokio::spawn(async move { store.commit(cs).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    put(s, revoke("batch-base")).await.unwrap();
    for n in 0..12 {
        assert!(s.is_token_revoked(&format!("batch-{n}")).await.unwrap(), "batch-{n}");
    }

    // Through a family: the family's token and everything exchanged from it.
    let alice = user("dora", &[]);
    put(s, Change::InsertUser(alice.clone())).await.unwrap();
    let g = grant("h-fam", GrantKind::Refresh, "fam_d", &alice);
    put(s, Change::InsertGrant(g)).await.unwrap();
    put(
        s,
        Change::RecordFamilyToken {
            family_id: "fam_d".into(),
            jti: "fam-at".into(),
            expires_at: 1_900_000_000,
        },
    )
    .await
    .unwrap();
    put(s, derive("fam-at", "fam-child")).await.unwrap();
    put(s, derive("fam-child", "fam-grandchild")).await.unwrap();
    // Asked before the revocation too, so that an answer remembered then cannot outlive it.
    for jti in ["fam-at", "fam-child", "fam-grandchild"] {
        assert!(!s.is_token_revoked(jti).await.unwrap(), "{jti}");
    }
    put(
        s,
        Change::RevokeFamily {
            family_id: "fam_d".into(),
            at: T0,
        },
    )
    .await
    .unwrap();
    for jti in ["fam-at", "fam-child", "fam-grandchild"] {
        assert!(s.is_token_revoked(jti).await.unwrap(), "{jti}");
    }
    assert!(!s.is_token_revoked("unrelated").await.unwrap());

    // A request that checked its grant or subject token before a revocation committed, and
    // commits after it, issues nothing: the revocation's cascade could not have reached it.
    let late_family_token = ChangeSet::new()
        .change(Change::RecordFamilyToken {
            family_id: "fam_d".into(),
            jti: "fam-late".into(),
            expires_at: 1_900_000_000,
        })
        .audit(crate::common::audit(sigil_core::audit::EventType::TokenIssued));
    assert!(
        matches!(
            s.commit(late_family_token).await,
            Err(StoreError::Stale { entity: "grant family" })
        ),
        "a token recorded for a revoked family"
    );
    assert!(
        matches!(
            put(s, derive("fam-child", "late-child")).await,
            Err(StoreError::Stale {
                entity: "subject token"
            })
        ),
        "a derivation from a revoked token, alone"
    );
    // And in a batch: the writer checks all of its derivations at once; only those from a
    // revoked parent fail, and their audit records are not written.
    let audit_before = s.list_audit(0, 100_000).await.unwrap().len();
    let tasks: Vec<_> = (0..12)
        .map(|n| {
            let store = db.store.clone();
            let parent = if n % 3 == 0 { "base" } else { "live-base" };
            let cs = ChangeSet::new()
                .change(derive(parent, &format!("late-{n}")))
                .audit(crate::common::audit(sigil_core::audit::EventType::TokenExchanged));
            tokio::spawn(async move { store.commit(cs).await })
        })
        .collect();
    for (n, t) in tasks.into_iter().enumerate() {
        let result = t.await.unwrap();
        if n % 3 == 0 {
            assert!(
                matches!(
                    result,
                    Err(StoreError::Stale {
                        entity: "subject token"
                    })
                ),
                "late-{n}: {result:?}"
            );
        } else {
            result.unwrap();
        }
    }
    assert_eq!(s.list_audit(0, 100_000).await.unwrap().len(), audit_before + 8);
    put(s, revoke("live-base")).await.unwrap();
    for n in (0..12).filter(|n| n % 3 != 0) {
        assert!(s.is_token_revoked(&format!("late-{n}")).await.unwrap(), "late-{n}");
    }

    // Purging what expired forgets old marks and revocations, and keeps the live ones.
    let assertion = |jti: &str, expires_at: i64| Change::RecordAssertion {
        client_id: "cli_purge".into(),
        jti: jti.into(),
        expires_at,
    };
    put(s, assertion("old", 1_000)).await.unwrap();
    put(s, assertion("live", 1_900_000_000)).await.unwrap();
    put(
        s,
        Change::RevokeToken {
            jti: "expired-token".into(),
            expires_at: 1_000,
            revoked_at: T0,
        },
    )
    .await
    .unwrap();
    // Grants: an expired code goes with its family; a family whose last grant expired stays
    // while an access token recorded for it lives (revoking the family must still reach it).
    let bob = user("bob-purge", &[]);
    put(s, Change::InsertUser(bob.clone())).await.unwrap();
    let expired = |hash: &str, family: &str| Grant {
        expires_at: sigil_types::Timestamp::from_unix_seconds(1_000),
        ..grant(hash, GrantKind::Code, family, &bob)
    };
    put(s, Change::InsertGrant(expired("h-old", "fam-old"))).await.unwrap();
    put(s, Change::InsertGrant(expired("h-old-tok", "fam-tok")))
        .await
        .unwrap();
    put(
        s,
        Change::InsertGrant(grant("h-live", GrantKind::Refresh, "fam-live", &bob)),
    )
    .await
    .unwrap();
    let family_token = |family: &str, jti: &str| Change::RecordFamilyToken {
        family_id: family.into(),
        jti: jti.into(),
        expires_at: 1_900_000_000,
    };
    put(s, family_token("fam-tok", "tok-1")).await.unwrap();
    assert!(s.expired_left(2_000).await.unwrap());
    put(
        s,
        Change::PurgeExpired {
            before: 2_000,
            limit: 1_000,
        },
    )
    .await
    .unwrap();
    assert!(!s.expired_left(2_000).await.unwrap(), "everything expired went");
    assert!(
        s.get_grant("h-old").await.unwrap().is_none(),
        "an expired grant is forgotten"
    );
    assert!(s.get_grant("h-old-tok").await.unwrap().is_none());
    assert!(s.get_grant("h-live").await.unwrap().is_some(), "a live grant stays");
    assert!(
        matches!(
            put(s, family_token("fam-old", "tok-2")).await,
            Err(StoreError::Stale { .. })
        ),
        "a family with nothing left is forgotten"
    );
    put(s, family_token("fam-tok", "tok-3"))
        .await
        .expect("a family with a live access token stays");
    put(s, family_token("fam-live", "tok-4"))
        .await
        .expect("a family with a live grant stays");
    assert!(!s.is_token_revoked("expired-token").await.unwrap());
    assert!(s.is_token_revoked("base").await.unwrap(), "a live revocation stays");
    put(s, assertion("old", 1_000))
        .await
        .expect("a purged mark can be recorded again");
    assert!(
        matches!(
            put(s, assertion("live", 1_900_000_000)).await,
            Err(StoreError::Duplicate { .. })
        ),
        "a live mark stays"
    );
}

/// A purge forgets at most its limit of each table's expired rows, the oldest first, and says
/// through `expired_left` when it is done; live rows stay. Emptied grant families go in the
/// last chunk (finding them reads every family).
pub(crate) async fn purges_go_a_chunk_at_a_time(db: Db) {
    let s = &db.store;
    let carol = user("carol-purge", &[]);
    put(s, Change::InsertUser(carol.clone())).await.unwrap();
    for family in ["fam-a", "fam-b"] {
        let expired = Grant {
            expires_at: sigil_types::Timestamp::from_unix_seconds(1_000),
            ..grant(&format!("h-{family}"), GrantKind::Code, family, &carol)
        };
        put(s, Change::InsertGrant(expired)).await.unwrap();
    }
    let family_token = |family: &str| Change::RecordFamilyToken {
        family_id: family.into(),
        jti: format!("tok-{family}"),
        expires_at: 1_900_000_000,
    };
    let revoke = |jti: String, expires_at: i64| Change::RevokeToken {
        jti,
        expires_at,
        revoked_at: T0,
    };
    for n in 0..5 {
        put(s, revoke(format!("expired-{n}"), 1_000 + n)).await.unwrap();
    }
    put(s, revoke("live".into(), 1_900_000_000)).await.unwrap();
    let revoked = || async {
        let mut left = Vec::new();
        for n in 0..5 {
            if s.is_token_revoked(&format!("expired-{n}")).await.unwrap() {
                left.push(n);
            }
        }
        left
    };
    let purge = Change::PurgeExpired {
        before: 2_000,
        limit: 2,
    };
    put(s, purge.clone()).await.unwrap();
    assert_eq!(revoked().await, vec![2, 3, 4], "the two oldest went");
    assert!(s.expired_left(2_000).await.unwrap());
    put(s, family_token("fam-a"))
        .await
        .expect("a chunk that was not the last left the emptied families");
    put(s, purge.clone()).await.unwrap();
    put(s, purge).await.unwrap();
    assert_eq!(revoked().await, Vec::<i64>::new());
    assert!(!s.expired_left(2_000).await.unwrap());
    assert!(
        matches!(put(s, family_token("fam-b")).await, Err(StoreError::Stale { .. })),
        "the last chunk forgot the emptied family"
    );
    assert!(s.is_token_revoked("live").await.unwrap(), "a live revocation stays");
}

/// Initial access tokens (RFC 7591 §3): found by hash, listed while unexpired, revoked by id.
pub(crate) async fn registration_tokens_list_and_revoke(db: Db) {
    use sigil_core::oauth::client::RegistrationToken;
    let s = &db.store;
    let alice = user("alice", &[]);
    put(s, Change::InsertUser(alice.clone())).await.unwrap();
    let token = |id: &str, hash: &str, life: u64| RegistrationToken {
        id: id.to_owned(),
        token_hash: hash.to_owned(),
        owner: alice.id.clone(),
        identity: None,
        expires_at: T0.plus(Duration::from_secs(life)),
        created_at: T0,
        created_by: "admin:test".into(),
    };
    put(s, Change::InsertRegistrationToken(token("iat_a", "h-a", 600)))
        .await
        .unwrap();
    put(s, Change::InsertRegistrationToken(token("iat_b", "h-b", 60)))
        .await
        .unwrap();
    let ids = |v: Vec<RegistrationToken>| v.into_iter().map(|t| t.id).collect::<Vec<_>>();
    let now = T0.plus(Duration::from_secs(30));
    assert_eq!(ids(s.list_registration_tokens(now).await.unwrap()), ["iat_b", "iat_a"]);
    let later = T0.plus(Duration::from_secs(120));
    assert_eq!(
        ids(s.list_registration_tokens(later).await.unwrap()),
        ["iat_a"],
        "expired ones are not listed"
    );

    put(s, Change::DeleteRegistrationToken { id: "iat_a".into() })
        .await
        .unwrap();
    assert_eq!(s.find_registration_token("h-a").await.unwrap(), None);
    assert!(s.find_registration_token("h-b").await.unwrap().is_some());
    let again = put(s, Change::DeleteRegistrationToken { id: "iat_a".into() }).await;
    assert!(matches!(again, Err(StoreError::Stale { .. })), "{again:?}");
}

/// Single-use marks (client assertions, DPoP proofs) committed concurrently, so the writer
/// judges many in one batch: each is spent exactly once, a replay is refused as a duplicate
/// whether its twin is in the database or in the same batch, a refused change set writes no
/// audit record, and a change set refused for its proof does not spend its assertion.
pub(crate) async fn single_use_marks_are_spent_once_under_concurrency(db: Db) {
    let s = &db.store;
    let assertion = |jti: &str| Change::RecordAssertion {
        client_id: "cli_marks".into(),
        jti: jti.into(),
        expires_at: 1_900_000_000,
    };
    let proof = |jti: &str| Change::RecordDpopProof {
        jti: jti.into(),
        expires_at: 1_900_000_000,
    };
    put(s, assertion("a0")).await.unwrap();
    put(s, proof("p-spent")).await.unwrap();
    let audit_before = s.list_audit(0, 100_000).await.unwrap().len();

    let mut batch: Vec<(String, ChangeSet)> = Vec::new();
    for n in 0..48 {
        let jti = format!("a{}", n % 12);
        batch.push((jti.clone(), ChangeSet::new().change(assertion(&jti))));
    }
    for n in 0..24 {
        let jti = format!("p{}", n % 6);
        batch.push((jti.clone(), ChangeSet::new().change(proof(&jti))));
    }
    for n in 0..6 {
        let cs = ChangeSet::new()
            .change(assertion(&format!("k{n}")))
            .change(proof("p-spent"));
        batch.push(("p-spent".into(), cs));
    }
    let tasks: Vec<_> = batch
        .into_iter()
        .map(|(jti, cs)| {
            let store = db.store.clone();
            let cs = cs.audit(crate::common::audit(sigil_core::audit::EventType::TokenIssued));
            tokio::spawn(async move { (jti, store.commit(cs).await) })
        })
        .collect();
    let mut won: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for task in tasks {
        let (jti, result) = task.await.unwrap();
        match result {
            Ok(()) => *won.entry(jti).or_default() += 1,
            Err(StoreError::Duplicate {
                entity: "client assertion" | "dpop proof",
                field: "jti",
            }) => {}
            Err(e) => panic!("{jti}: {e:?}"),
        }
    }
    let expected: std::collections::BTreeMap<String, usize> = (1..12)
        .map(|n| format!("a{n}"))
        .chain((0..6).map(|n| format!("p{n}")))
        .map(|jti| (jti, 1))
        .collect();
    assert_eq!(won, expected, "each fresh mark spent once, the spent ones never");
    assert_eq!(
        s.list_audit(0, 100_000).await.unwrap().len(),
        audit_before + 17,
        "one audit record per change set that committed"
    );
    for n in 0..6 {
        put(s, assertion(&format!("k{n}")))
            .await
            .expect("an assertion whose request was refused for its proof is still unspent");
    }
}
