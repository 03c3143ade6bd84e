//! The databases and fixtures every case uses.

use std::sync::Arc;

use sigil_core::audit::{AuditRecord, EventType};
use sigil_core::model::*;
use sigil_core::store::*;
use sigil_store::{Location, SqlStore, StoreOptions};
use sigil_types::*;

pub(crate) struct Db {
    pub(crate) store: Arc<SqlStore>,
    pub(crate) location: Location,
    pub(crate) _dir: Option<tempfile::TempDir>,
}

pub(crate) async fn sqlite() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let location = Location::Sqlite(dir.path().join("sigil.db"));
    let store = Arc::new(SqlStore::connect(&location, &StoreOptions::default()).await.unwrap());
    Db {
        store,
        location,
        _dir: Some(dir),
    }
}

pub(crate) async fn postgres() -> Option<Db> {
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

pub(crate) const T0: Timestamp = Timestamp::from_unix_seconds(1_800_000_000);

pub(crate) fn meta() -> Meta {
    Meta::new(T0, &Principal::admin("test"))
}

pub(crate) fn user(name: &str, groups: &[&str]) -> User {
    User {
        id: UserId::generate(1, rand10()),
        username: Username::parse(name).unwrap(),
        email: Some(Email::parse(&format!("{name}@example.com")).unwrap()),
        display_name: None,
        groups: groups.iter().map(|g| Group::parse(g).unwrap()).collect(),
        status: UserStatus::Active,
        tokens_not_before: None,
        meta: meta(),
    }
}

pub(crate) fn identity(name: &str, owner: &User, kind: IdentityKind, labels: &[(&str, &str)]) -> Identity {
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

pub(crate) fn resource(name: &str, uri: &str, owner: &User) -> Resource {
    Resource {
        id: ResourceId::generate(1, rand10()),
        uri: ResourceUri::parse(uri).unwrap(),
        name: Name::parse(name).unwrap(),
        description: None,
        owner: owner.id.clone(),
        scopes: ScopeSet::parse_oauth("read").unwrap(),
        servers: vec![IdentityId::generate(1, rand10())],
        meta: meta(),
    }
}

pub(crate) fn rand10() -> [u8; 10] {
    sigil_crypto::random_bytes::<10>().unwrap()
}

pub(crate) fn audit(t: EventType) -> AuditRecord {
    AuditRecord::new(T0, t, &Principal::admin("test"), Some("req-1"))
}

pub(crate) async fn put(store: &SqlStore, c: Change) -> Result<(), StoreError> {
    store.commit(ChangeSet::new().change(c)).await
}
