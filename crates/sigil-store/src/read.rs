//! Read queries, grouped by aggregate.

use sigil_core::admin_auth::AdminCredential;
use sigil_core::keys::StoredKey;
use sigil_core::model::{
    Identity, IdentityFamily, IdentityQuery, IdentityRef, Page, PageRequest, Resource, ResourceQuery, ResourceRef,
    User, UserQuery, UserRef,
};
use sigil_core::store::{StoreError, StoredAudit};
use sigil_types::{IdentityId, IdentityKind, UserId};
use sqlx::AnyPool;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::errors::{corrupt, unavailable};
use crate::rows::{self, IDENTITY_COLS, KEY_COLS, RESOURCE_COLS, USER_COLS};
use crate::sql::{Sql, stmt};

type R<T> = Result<T, StoreError>;

async fn one<T>(pool: &AnyPool, q: Sql, f: fn(&AnyRow) -> R<T>) -> R<Option<T>> {
    q.query()
        .fetch_optional(pool)
        .await
        .map_err(unavailable)?
        .as_ref()
        .map(f)
        .transpose()
}

/// Appends the cursor condition and ordering, fetches one extra row to know if a next page exists.
async fn page<T>(
    pool: &AnyPool,
    mut q: Sql,
    p: &PageRequest,
    f: fn(&AnyRow) -> R<T>,
    id: fn(&T) -> String,
) -> R<Page<T>> {
    if let Some(after) = &p.after {
        q.push(" AND id > ").bind(after.as_str());
    }
    q.push(" ORDER BY id LIMIT ").bind(i64::from(p.limit) + 1);
    let rows = q.query().fetch_all(pool).await.map_err(unavailable)?;
    let mut items = rows.iter().map(f).collect::<R<Vec<T>>>()?;
    let next_cursor = if items.len() > p.limit as usize {
        items.truncate(p.limit as usize);
        items.last().map(id)
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

pub async fn get_user(pool: &AnyPool, r: &UserRef) -> R<Option<User>> {
    let mut q = Sql::new(&format!("SELECT {USER_COLS} FROM users WHERE "));
    match r {
        UserRef::Id(id) => q.push("id = ").bind(id.as_str()),
        UserRef::Username(u) => q.push("username = ").bind(u.as_str()),
    };
    one(pool, q, rows::user).await
}

pub async fn list_users(pool: &AnyPool, f: &UserQuery) -> R<Page<User>> {
    let mut q = Sql::new(&format!("SELECT {USER_COLS} FROM users WHERE 1 = 1"));
    if let Some(s) = f.status {
        q.push(" AND status = ").bind(s.as_str());
    }
    if let Some(g) = &f.group {
        q.push(" AND EXISTS (SELECT 1 FROM user_groups g WHERE g.user_id = users.id AND g.grp = ")
            .bind(g.as_str())
            .push(")");
    }
    page(pool, q, &f.page, rows::user, |u| u.id.to_string()).await
}

pub async fn get_identity(pool: &AnyPool, r: &IdentityRef) -> R<Option<Identity>> {
    let mut q = Sql::new(&format!("SELECT {IDENTITY_COLS} FROM identities WHERE "));
    match r {
        IdentityRef::Id(id) => q.push("id = ").bind(id.as_str()),
        IdentityRef::Name(n) => q.push("name = ").bind(n.as_str()),
    };
    one(pool, q, rows::identity).await
}

pub async fn list_identities(pool: &AnyPool, f: &IdentityQuery) -> R<Page<Identity>> {
    let mut q = Sql::new(&format!("SELECT {IDENTITY_COLS} FROM identities WHERE 1 = 1"));
    match f.family {
        Some(IdentityFamily::Agents) => {
            q.push(" AND kind = ").bind(IdentityKind::Agent.as_str());
        }
        Some(IdentityFamily::Workloads) => {
            q.push(" AND kind <> ").bind(IdentityKind::Agent.as_str());
        }
        None => {}
    }
    if let Some(k) = f.kind {
        q.push(" AND kind = ").bind(k.as_str());
    }
    if let Some(o) = &f.owner {
        q.push(" AND owner_id = ").bind(o.as_str());
    }
    if let Some(s) = f.status {
        q.push(" AND status = ").bind(s.as_str());
    }
    if let Some(t) = &f.team {
        q.push(" AND team = ").bind(t.as_str());
    }
    for (k, v) in &f.labels {
        q.push(" AND EXISTS (SELECT 1 FROM identity_labels l WHERE l.identity_id = identities.id AND l.key = ")
            .bind(k.as_str())
            .push(" AND l.value = ")
            .bind(v.as_str())
            .push(")");
    }
    page(pool, q, &f.page, rows::identity, |i| i.id.to_string()).await
}

async fn count(pool: &AnyPool, q: Sql) -> R<u64> {
    let row = q.query().fetch_one(pool).await.map_err(unavailable)?;
    let n: i64 = row.try_get(0).map_err(|e| corrupt("count", e))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

pub async fn count_owned(pool: &AnyPool, owner: &UserId) -> R<u64> {
    let mut q = Sql::new("SELECT (SELECT COUNT(*) FROM identities WHERE owner_id = ");
    q.bind(owner.as_str())
        .push(") + (SELECT COUNT(*) FROM resources WHERE owner_id = ")
        .bind(owner.as_str())
        .push(")");
    count(pool, q).await
}

pub async fn count_identities(pool: &AnyPool) -> R<u64> {
    count(pool, Sql::new("SELECT COUNT(*) FROM identities")).await
}

pub async fn identity_ids_owned_by(pool: &AnyPool, owner: &UserId) -> R<Vec<IdentityId>> {
    let rows = stmt(
        "SELECT id FROM identities WHERE owner_id = $1 ORDER BY id",
        vec![owner.as_str().into()],
    )
    .fetch_all(pool)
    .await
    .map_err(unavailable)?;
    rows.iter()
        .map(|r| {
            let s: String = r.try_get("id").map_err(|e| corrupt("id", e))?;
            IdentityId::parse(&s).map_err(|e| corrupt("id", e))
        })
        .collect()
}

pub async fn get_resource(pool: &AnyPool, r: &ResourceRef) -> R<Option<Resource>> {
    let mut q = Sql::new(&format!("SELECT {RESOURCE_COLS} FROM resources WHERE "));
    match r {
        ResourceRef::Id(id) => q.push("id = ").bind(id.as_str()),
        ResourceRef::Name(n) => q.push("name = ").bind(n.as_str()),
        ResourceRef::Uri(u) => q.push("uri = ").bind(u.as_str()),
    };
    one(pool, q, rows::resource).await
}

pub async fn list_resources(pool: &AnyPool, f: &ResourceQuery) -> R<Page<Resource>> {
    let mut q = Sql::new(&format!("SELECT {RESOURCE_COLS} FROM resources WHERE 1 = 1"));
    if let Some(o) = &f.owner {
        q.push(" AND owner_id = ").bind(o.as_str());
    }
    page(pool, q, &f.page, rows::resource, |r| r.id.to_string()).await
}

pub async fn list_signing_keys(pool: &AnyPool) -> R<Vec<StoredKey>> {
    let rows = Sql::new(&format!(
        "SELECT {KEY_COLS} FROM signing_keys ORDER BY activate_at, kid"
    ))
    .query()
    .fetch_all(pool)
    .await
    .map_err(unavailable)?;
    rows.iter().map(rows::key).collect()
}

pub async fn get_setting(pool: &AnyPool, name: &str) -> R<Option<Vec<u8>>> {
    let row = stmt("SELECT value FROM settings WHERE name = $1", vec![name.into()])
        .fetch_optional(pool)
        .await
        .map_err(unavailable)?;
    row.map(|r| r.try_get::<Vec<u8>, _>("value").map_err(|e| corrupt("value", e)))
        .transpose()
}

pub async fn find_admin_credential(pool: &AnyPool, column: &'static str, value: &str) -> R<Option<AdminCredential>> {
    let mut q = Sql::new("SELECT id, name, token_hash, created_at FROM admin_credentials WHERE ");
    q.push(column).push(" = ").bind(value);
    one(pool, q, rows::admin_credential).await
}

pub async fn list_audit(pool: &AnyPool, after: i64, limit: u32) -> R<Vec<StoredAudit>> {
    let rows = stmt(
        "SELECT seq, body FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2",
        vec![after.into(), i64::from(limit).into()],
    )
    .fetch_all(pool)
    .await
    .map_err(unavailable)?;
    rows.iter().map(rows::audit).collect()
}
