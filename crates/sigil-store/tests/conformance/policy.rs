//! Policy set versions: stored once per number, activations append, the latest is active.

use sigil_core::policy::PolicyVersion;
use sigil_core::store::*;

use crate::common::{Db, T0, put};

fn version(n: u64, policies: &str) -> PolicyVersion {
    PolicyVersion {
        version: n,
        policies: policies.to_owned(),
        schema: n
            .is_multiple_of(2)
            .then(|| "namespace Sigil { entity Doc; }".to_owned()),
        description: Some(format!("v{n}")),
        created_at: T0,
        created_by: "admin:test".into(),
    }
}

pub(crate) async fn policy_versions_and_activations(db: Db) {
    let s = &db.store;
    // A new store holds version 0, the built-in policies alone, and no activation.
    let builtin = s.list_policy_versions().await.unwrap();
    assert_eq!(
        builtin
            .iter()
            .map(|v| (v.version, v.policies.as_str()))
            .collect::<Vec<_>>(),
        [(0, "")]
    );
    assert!(s.policy_activations(5).await.unwrap().is_empty());
    let (v1, v2) = (version(1, "permit (principal, action, resource);"), version(2, ""));
    put(s, Change::InsertPolicyVersion(v1.clone())).await.unwrap();
    put(s, Change::InsertPolicyVersion(v2.clone())).await.unwrap();
    // A number is taken once: two replicas racing for it get one success and one Duplicate.
    assert!(matches!(
        put(s, Change::InsertPolicyVersion(version(2, "other"))).await,
        Err(StoreError::Duplicate { .. })
    ));
    assert_eq!(
        s.list_policy_versions().await.unwrap(),
        vec![v2.clone(), v1.clone(), builtin[0].clone()]
    );
    assert_eq!(s.get_policy_version(1).await.unwrap(), Some(v1));
    assert_eq!(s.get_policy_version(9).await.unwrap(), None);

    // Activating a version that does not exist changes nothing.
    let activate = |version| Change::ActivatePolicy {
        version,
        at: T0,
        by: "admin:test".into(),
    };
    assert!(matches!(
        put(s, activate(9)).await,
        Err(StoreError::MissingReference { .. })
    ));
    assert!(s.policy_activations(5).await.unwrap().is_empty());
    put(s, activate(1)).await.unwrap();
    put(s, activate(2)).await.unwrap();
    put(s, activate(1)).await.unwrap();
    let history: Vec<u64> = s
        .policy_activations(5)
        .await
        .unwrap()
        .iter()
        .map(|a| a.version)
        .collect();
    assert_eq!(history, vec![1, 2, 1], "newest first");
    assert_eq!(s.policy_activations(1).await.unwrap()[0].version, 1);
}
