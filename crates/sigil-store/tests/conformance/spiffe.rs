//! SPIFFE state: X.509 authorities (sealed keys stored as given) and registration entries
//! (versioned like every registry entity).

use std::time::Duration;

use sigil_core::model::Meta;
use sigil_core::spiffe::StoredAuthority;
use sigil_core::spiffe::entries::{RegistrationEntry, Selector};
use sigil_core::store::*;
use sigil_crypto::SealedBlob;
use sigil_types::SpiffeId;

use crate::common::{Db, T0, put};

fn entry(id: &str, parent: &str) -> RegistrationEntry {
    RegistrationEntry {
        id: id.into(),
        spiffe_id: SpiffeId::parse("spiffe://example.org/ns/prod/sa/billing").unwrap(),
        parent_id: SpiffeId::parse(parent).unwrap(),
        selectors: vec![Selector::parse("unix:uid:1000").unwrap()],
        identity_id: None,
        x509_ttl: Duration::from_secs(3600),
        jwt_ttl: Duration::from_secs(300),
        dns_names: vec!["billing.internal".into()],
        meta: Meta::new(T0, &sigil_core::model::Principal::from_stored("admin:test".into())),
    }
}

pub(crate) async fn x509_authorities_and_entries(db: Db) {
    let s = &db.store;
    assert!(s.list_x509_authorities().await.unwrap().is_empty());
    let a = StoredAuthority {
        id: "x509_a".into(),
        cert_der: vec![0x30, 0x82, 1, 2, 3],
        sealed_key: SealedBlob(vec![9, 8, 7, 0, 255]),
        upstream_der: None,
        status: "active".into(),
        not_after: T0.plus(Duration::from_secs(86_400)),
        created_at: T0,
    };
    put(s, Change::InsertX509Authority(a.clone())).await.unwrap();
    assert!(matches!(
        put(s, Change::InsertX509Authority(a.clone())).await,
        Err(StoreError::Duplicate { .. })
    ));
    assert_eq!(s.list_x509_authorities().await.unwrap(), vec![a.clone()]);
    // An intermediate keeps its upstream CA's certificate.
    let mid = StoredAuthority {
        id: "x509_b".into(),
        upstream_der: Some(vec![0x30, 1, 2]),
        created_at: T0.plus(Duration::from_secs(1)),
        ..a.clone()
    };
    put(s, Change::InsertX509Authority(mid.clone())).await.unwrap();
    assert_eq!(s.list_x509_authorities().await.unwrap(), vec![a, mid]);

    let e1 = entry("ent_1", "spiffe://example.org/node/a");
    let e2 = entry("ent_2", "spiffe://example.org/node/b");
    put(s, Change::InsertEntry(e1.clone())).await.unwrap();
    put(s, Change::InsertEntry(e2.clone())).await.unwrap();
    assert_eq!(s.get_entry("ent_1").await.unwrap(), Some(e1.clone()));
    assert_eq!(
        s.list_entries(Some("spiffe://example.org/node/b"), None).await.unwrap(),
        vec![e2.clone()]
    );
    assert_eq!(
        s.list_entries(None, Some("spiffe://example.org/ns/prod/sa/billing"))
            .await
            .unwrap()
            .len(),
        2
    );

    let mut next = e1.clone();
    next.selectors.push(Selector::parse("unix:gid:20").unwrap());
    next.meta.version = 2;
    put(
        s,
        Change::UpdateEntry {
            entry: next.clone(),
            expected_version: 1,
        },
    )
    .await
    .unwrap();
    assert!(matches!(
        put(
            s,
            Change::UpdateEntry {
                entry: next.clone(),
                expected_version: 1
            }
        )
        .await,
        Err(StoreError::Stale { .. })
    ));
    assert_eq!(s.get_entry("ent_1").await.unwrap(), Some(next));
    put(
        s,
        Change::DeleteEntry {
            id: "ent_1".into(),
            expected_version: 2,
        },
    )
    .await
    .unwrap();
    assert_eq!(s.get_entry("ent_1").await.unwrap(), None);
}

pub(crate) async fn jwt_authorities_join_tokens_and_nodes(db: Db) {
    use sigil_core::spiffe::StoredJwtAuthority;
    use sigil_core::spiffe::nodes::{AttestedNode, JoinToken};
    let s = &db.store;
    let a = StoredJwtAuthority {
        kid: "kid-1".into(),
        sealed_key: SealedBlob(vec![1, 0, 255]),
        status: "active".into(),
        created_at: T0,
    };
    put(s, Change::InsertJwtAuthority(a.clone())).await.unwrap();
    assert!(matches!(
        put(s, Change::InsertJwtAuthority(a.clone())).await,
        Err(StoreError::Duplicate { .. })
    ));
    assert_eq!(s.list_jwt_authorities().await.unwrap(), vec![a]);

    // A join token is spent exactly once.
    let node_id = SpiffeId::parse("spiffe://example.org/node/a").unwrap();
    let t = JoinToken {
        token_hash: "h1".into(),
        spiffe_id: node_id.clone(),
        expires_at: T0.plus(Duration::from_secs(3600)),
        created_at: T0,
        created_by: "admin:test".into(),
        used_at: None,
    };
    put(s, Change::InsertJoinToken(t.clone())).await.unwrap();
    assert_eq!(s.get_join_token("h1").await.unwrap(), Some(t));
    assert_eq!(s.get_join_token("h2").await.unwrap(), None);
    let used = T0.plus(Duration::from_secs(5));
    put(
        s,
        Change::UseJoinToken {
            token_hash: "h1".into(),
            at: used,
        },
    )
    .await
    .unwrap();
    assert!(matches!(
        put(
            s,
            Change::UseJoinToken {
                token_hash: "h1".into(),
                at: used
            }
        )
        .await,
        Err(StoreError::Stale { .. })
    ));
    assert_eq!(s.get_join_token("h1").await.unwrap().unwrap().used_at, Some(used));

    // Nodes: attested, renewed (serial replaced), banned; a ban survives re-attestation.
    let n = AttestedNode {
        spiffe_id: node_id.clone(),
        method: "join_token".into(),
        attested_at: T0,
        svid_serial: "01".into(),
        svid_expires_at: T0.plus(Duration::from_secs(3600)),
        banned_at: None,
    };
    put(s, Change::UpsertNode(n.clone())).await.unwrap();
    let renewed = AttestedNode {
        svid_serial: "02".into(),
        ..n.clone()
    };
    put(s, Change::UpsertNode(renewed.clone())).await.unwrap();
    assert_eq!(s.get_node(node_id.as_str()).await.unwrap(), Some(renewed.clone()));
    assert!(s.list_banned_nodes().await.unwrap().is_empty());
    put(
        s,
        Change::BanNode {
            spiffe_id: node_id.to_string(),
            at: used,
        },
    )
    .await
    .unwrap();
    put(s, Change::UpsertNode(renewed)).await.unwrap();
    assert_eq!(s.list_nodes().await.unwrap()[0].banned_at, Some(used));
    assert_eq!(s.list_banned_nodes().await.unwrap(), vec![node_id.to_string()]);
    assert!(matches!(
        put(
            s,
            Change::BanNode {
                spiffe_id: "spiffe://example.org/node/none".into(),
                at: used
            }
        )
        .await,
        Err(StoreError::Stale { .. })
    ));
}

pub(crate) async fn federations(db: Db) {
    use sigil_core::spiffe::federation::Federation;
    let s = &db.store;
    let f = Federation {
        trust_domain: sigil_types::TrustDomain::parse("other.test").unwrap(),
        bundle_endpoint: "https://other.test/bundle".into(),
        bundle_json: None,
        refreshed_at: None,
        last_error: None,
        created_at: T0,
        created_by: "admin:test".into(),
    };
    put(s, Change::InsertFederation(f.clone())).await.unwrap();
    assert!(matches!(
        put(s, Change::InsertFederation(f.clone())).await,
        Err(StoreError::Duplicate { .. })
    ));
    assert_eq!(s.list_federations().await.unwrap(), vec![f.clone()]);
    let at = T0.plus(Duration::from_secs(1));
    put(
        s,
        Change::SetFederatedBundle {
            trust_domain: "other.test".into(),
            bundle_json: Some("{\"keys\":[]}".into()),
            refreshed_at: at,
            error: Some("the bundle has no authority".into()),
        },
    )
    .await
    .unwrap();
    let got = s.list_federations().await.unwrap().remove(0);
    assert_eq!(got.bundle_json.as_deref(), Some("{\"keys\":[]}"));
    assert_eq!(got.refreshed_at, Some(at));
    assert_eq!(got.last_error.as_deref(), Some("the bundle has no authority"));
    put(
        s,
        Change::DeleteFederation {
            trust_domain: "other.test".into(),
        },
    )
    .await
    .unwrap();
    assert!(matches!(
        put(
            s,
            Change::DeleteFederation {
                trust_domain: "other.test".into()
            }
        )
        .await,
        Err(StoreError::Stale { .. })
    ));
    assert!(s.list_federations().await.unwrap().is_empty());
}
