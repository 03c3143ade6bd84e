//! Read queries, grouped by aggregate.

use sigil_core::admin_auth::AdminCredential;
use sigil_core::keys::StoredKey;
use sigil_core::model::{
    Identity, IdentityFamily, IdentityQuery, IdentityRef, Page, PageRequest, Resource, ResourceQuery, ResourceRef,
    User, UserQuery, UserRef,
};
use std::collections::HashMap;

use sigil_core::audit::{AuditQuery, Checkpoint};
use sigil_core::store::{StoreError, StoredAudit, StoredLeaf};
use sigil_types::{IdentityId, IdentityKind, IdentityStatus, UserId};
use sqlx::AnyPool;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::dialect::Dialect;
use crate::errors::{corrupt, unavailable};
use crate::rows::{self, AUDIT_COLS, IDENTITY_COLS, KEY_COLS, LEAF_COLS, RESOURCE_COLS, USER_COLS};
use crate::sql::{Sql, stmt};

type R<T> = Result<T, StoreError>;

async fn all<T>(pool: &AnyPool, q: Sql, f: fn(&AnyRow) -> R<T>) -> R<Vec<T>> {
    q.query()
        .fetch_all(pool)
        .await
        .map_err(unavailable)?
        .iter()
        .map(f)
        .collect()
}

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
    if let Some((status, now)) = f.status {
        // Effective status: active but past expires_at counts as suspended.
        let active = IdentityStatus::Active.as_str();
        match status {
            IdentityStatus::Active => {
                q.push(" AND status = ")
                    .bind(active)
                    .push(" AND (expires_at IS NULL OR expires_at > ")
                    .bind(now.unix_micros())
                    .push(")");
            }
            IdentityStatus::Suspended => {
                q.push(" AND (status = ")
                    .bind(status.as_str())
                    .push(" OR (status = ")
                    .bind(active)
                    .push(" AND expires_at <= ")
                    .bind(now.unix_micros())
                    .push("))");
            }
            _ => {
                q.push(" AND status = ").bind(status.as_str());
            }
        }
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

fn u(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

async fn audit_rows(pool: &AnyPool, q: Sql) -> R<Vec<StoredAudit>> {
    let rows = q.query().fetch_all(pool).await.map_err(unavailable)?;
    rows.iter().map(rows::audit).collect()
}

pub async fn list_audit(pool: &AnyPool, d: &Dialect, after: i64, limit: u32) -> R<Vec<StoredAudit>> {
    let body = d.audit_body_bytes;
    let mut q = Sql::new(&format!("SELECT {AUDIT_COLS}, {body} FROM audit_events WHERE seq > "));
    q.bind(after).push(" ORDER BY seq LIMIT ").bind(i64::from(limit));
    audit_rows(pool, q).await
}

pub async fn list_leaves(pool: &AnyPool, d: &Dialect, from: u64, limit: u32) -> R<Vec<StoredLeaf>> {
    let body = d.audit_body_bytes;
    let mut q = Sql::new(&format!(
        "SELECT {LEAF_COLS}, {body} FROM audit_events WHERE leaf_index >= "
    ));
    q.bind(u(from))
        .push(" ORDER BY leaf_index LIMIT ")
        .bind(i64::from(limit));
    let rows = q.query().fetch_all(pool).await.map_err(unavailable)?;
    rows.iter().map(rows::leaf).collect()
}

/// `s` matched literally inside a LIKE pattern (escape character `\`).
fn like_escaped(s: &str) -> String {
    s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

/// Records matching `f`, newest first. The search indexes hold integrated records only
/// (migration 17), so the search runs twice: over integrated records, through those indexes,
/// and over the few records integration has not reached yet, through `audit_events_pending`.
/// Each arm stops at the page's size; the newest of both make the page.
pub async fn search_audit(pool: &AnyPool, d: &Dialect, f: &AuditQuery) -> R<Page<StoredAudit>> {
    let mut items = audit_rows(pool, search_query(d, f)?).await?;
    let next_cursor = if items.len() > f.page.limit as usize {
        items.truncate(f.page.limit as usize);
        items.last().map(|r| r.seq.to_string())
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

/// The statement [`search_audit`] runs: one more row than the page holds, to tell whether
/// another page follows.
fn search_query(d: &Dialect, f: &AuditQuery) -> R<Sql> {
    let cursor = match &f.page.after {
        Some(c) => Some(
            c.parse::<i64>()
                .map_err(|_| StoreError::Corrupt("audit cursor is not a sequence number".into()))?,
        ),
        None => None,
    };
    let limit = i64::from(f.page.limit) + 1;
    let mut q = Sql::new("");
    for (n, integrated) in [true, false].into_iter().enumerate() {
        if n > 0 {
            q.push(" UNION ALL ");
        }
        let arm = if integrated { "integrated" } else { "pending" };
        let state = if integrated { "IS NOT NULL" } else { "IS NULL" };
        q.push(&format!(
            "SELECT * FROM (SELECT {AUDIT_COLS}, {} FROM audit_events WHERE leaf_index {state}",
            d.audit_body_bytes
        ));
        search_terms(&mut q, f, integrated, cursor);
        q.push(" ORDER BY seq DESC LIMIT ")
            .bind(limit)
            .push(&format!(") AS {arm}"));
    }
    q.push(" ORDER BY seq DESC LIMIT ").bind(limit);
    Ok(q)
}

/// `f`'s conditions, each `AND`ed on, for one arm of [`search_audit`].
fn search_terms(q: &mut Sql, f: &AuditQuery, integrated: bool, cursor: Option<i64>) {
    // SQLite uses a partial index for one alternative of an `OR` only when that alternative
    // itself implies the index's condition, so the integrated arm repeats it in each.
    let only = if integrated {
        " AND leaf_index IS NOT NULL)"
    } else {
        ")"
    };
    if let Some(t) = f.event_type {
        q.push(" AND event_type = ").bind(t.as_str());
    }
    if let Some(o) = f.outcome {
        q.push(" AND outcome = ").bind(o.as_str());
    }
    if !f.agent.is_empty() {
        q.push(" AND (");
        for (n, a) in f.agent.iter().enumerate() {
            if n > 0 {
                q.push(" OR ");
            }
            q.push("(actor = ").bind(a.as_str()).push(only);
            q.push(" OR (target_id = ").bind(a.as_str()).push(only);
            // A sub-agent's records name the agents it acts for in `acting_for`: few rows have
            // one, and the partial index holds just those (pending ones too: the pending arm,
            // few rows, matches them as they are).
            let pattern = format!("% {} %", like_escaped(a));
            if integrated {
                q.push(" OR seq IN (SELECT seq FROM audit_events WHERE acting_for IS NOT NULL AND acting_for LIKE ")
                    .bind(pattern)
                    .push(" ESCAPE '\\')");
            } else {
                q.push(" OR acting_for LIKE ").bind(pattern).push(" ESCAPE '\\'");
            }
        }
        q.push(")");
    }
    if !f.user.is_empty() {
        q.push(" AND (");
        for (n, u) in f.user.iter().enumerate() {
            if n > 0 {
                q.push(" OR ");
            }
            q.push("(subject = ").bind(u.as_str()).push(only);
        }
        q.push(")");
    }
    for (col, v) in [
        ("client_id", &f.client_id),
        ("request_id", &f.request_id),
        ("jti", &f.jti),
    ] {
        if let Some(v) = v {
            q.push(" AND ").push(col).push(" = ").bind(v.as_str());
        }
    }
    if let Some(t) = f.since {
        q.push(" AND time >= ").bind(t.unix_micros());
    }
    if let Some(t) = f.until {
        q.push(" AND time < ").bind(t.unix_micros());
    }
    if let Some(seq) = cursor {
        q.push(" AND seq < ").bind(seq);
    }
}

/// The oldest records integration has not reached, in `seq` order ([`Dialect::pending_audit`]).
pub async fn pending_audit(pool: &AnyPool, d: &Dialect, limit: u32) -> R<Vec<(i64, String)>> {
    let row = stmt(d.pending_audit, vec![i64::from(limit).into()])
        .fetch_one(pool)
        .await
        .map_err(unavailable)?;
    let joined: Option<String> = row.try_get("pending").map_err(|e| corrupt("pending", e))?;
    joined.map_or(Ok(Vec::new()), |j| split_pending(&j))
}

/// Splits `seq,length,body` records run together (the length in bytes).
fn split_pending(mut rest: &str) -> R<Vec<(i64, String)>> {
    let malformed = || corrupt("pending", "not seq,length,body records");
    let mut records = Vec::new();
    while !rest.is_empty() {
        let (seq, after) = rest.split_once(',').ok_or_else(malformed)?;
        let (len, after) = after.split_once(',').ok_or_else(malformed)?;
        let seq: i64 = seq.parse().map_err(|_| malformed())?;
        let len: usize = len.parse().map_err(|_| malformed())?;
        let body = after.get(..len).ok_or_else(malformed)?;
        records.push((seq, body.to_owned()));
        rest = &after[len..];
    }
    Ok(records)
}

/// The tree's size: one past the last leaf. (`IS NOT NULL` lets the partial leaf index answer.)
const TREE_SIZE: &str = "SELECT COALESCE(MAX(leaf_index) + 1, 0) FROM audit_events WHERE leaf_index IS NOT NULL";

pub async fn audit_tree_size(pool: &AnyPool) -> R<u64> {
    count(pool, Sql::new(TREE_SIZE)).await
}

pub async fn audit_nodes(pool: &AnyPool, coords: &[(u32, u64)]) -> R<HashMap<(u32, u64), [u8; 32]>> {
    let mut out = HashMap::new();
    for chunk in coords.chunks(200) {
        let mut q = Sql::new("SELECT level, idx, hash FROM audit_tree_nodes WHERE ");
        for (n, (l, i)) in chunk.iter().enumerate() {
            if n > 0 {
                q.push(" OR ");
            }
            q.push("(level = ")
                .bind(i64::from(*l))
                .push(" AND idx = ")
                .bind(u(*i))
                .push(")");
        }
        for r in q.query().fetch_all(pool).await.map_err(unavailable)? {
            let l: i64 = r.try_get("level").map_err(|e| corrupt("level", e))?;
            let i: i64 = r.try_get("idx").map_err(|e| corrupt("idx", e))?;
            let h: Vec<u8> = r.try_get("hash").map_err(|e| corrupt("hash", e))?;
            let h: [u8; 32] = h.as_slice().try_into().map_err(|_| corrupt("hash", "not 32 bytes"))?;
            out.insert((u32::try_from(l).unwrap_or(0), u64::try_from(i).unwrap_or(0)), h);
        }
    }
    Ok(out)
}

pub async fn audit_leaf_hashes(pool: &AnyPool, from: u64, to: u64) -> R<Vec<(u64, [u8; 32])>> {
    let rows = leaf_hashes_query(from, to)
        .query()
        .fetch_all(pool)
        .await
        .map_err(unavailable)?;
    rows.iter()
        .map(|r| {
            let i: i64 = r.try_get("leaf_index").map_err(|e| corrupt("leaf_index", e))?;
            let h: Vec<u8> = r.try_get("leaf_hash").map_err(|e| corrupt("leaf_hash", e))?;
            let h: [u8; 32] = h
                .as_slice()
                .try_into()
                .map_err(|_| corrupt("leaf_hash", "not 32 bytes"))?;
            Ok((u64::try_from(i).map_err(|e| corrupt("leaf_index", e))?, h))
        })
        .collect()
}

fn leaf_hashes_query(from: u64, to: u64) -> Sql {
    let mut q = Sql::new("SELECT leaf_index, leaf_hash FROM audit_events WHERE leaf_index >= ");
    q.bind(u(from))
        .push(" AND leaf_index < ")
        .bind(u(to))
        .push(" ORDER BY leaf_index");
    q
}

const CHECKPOINT_COLS: &str = "SELECT tree_size, root_hash, time, kid, jws FROM audit_checkpoints";

pub async fn latest_checkpoint(pool: &AnyPool) -> R<Option<Checkpoint>> {
    one(
        pool,
        Sql::new(&format!("{CHECKPOINT_COLS} ORDER BY tree_size DESC LIMIT 1")),
        rows::checkpoint,
    )
    .await
}

pub async fn list_checkpoints(pool: &AnyPool, after: u64, limit: u32) -> R<Vec<Checkpoint>> {
    let mut q = Sql::new(&format!("{CHECKPOINT_COLS} WHERE tree_size > "));
    q.bind(u(after))
        .push(" ORDER BY tree_size LIMIT ")
        .bind(i64::from(limit));
    let rows = q.query().fetch_all(pool).await.map_err(unavailable)?;
    rows.iter().map(rows::checkpoint).collect()
}

pub async fn sink_position(pool: &AnyPool, name: &str) -> R<Option<u64>> {
    let row = stmt("SELECT delivered FROM audit_sinks WHERE name = $1", vec![name.into()])
        .fetch_optional(pool)
        .await
        .map_err(unavailable)?;
    row.map(|r| {
        r.try_get::<i64, _>("delivered")
            .map(|v| u64::try_from(v).unwrap_or(0))
            .map_err(|e| corrupt("delivered", e))
    })
    .transpose()
}

pub async fn audit_base(pool: &AnyPool) -> R<u64> {
    count(
        pool,
        Sql::new("SELECT COALESCE(MIN(leaf_index), (SELECT COALESCE(MAX(tree_size), 0) FROM audit_checkpoints)) FROM audit_events WHERE leaf_index IS NOT NULL"),
    )
    .await
}

pub async fn audit_prune_point(pool: &AnyPool, cutoff: sigil_types::Timestamp) -> R<Option<u64>> {
    // The first leaf that must be kept; every leaf before it is older than the cutoff.
    let mut q = Sql::new(
        "SELECT MAX(tree_size) FROM audit_checkpoints WHERE tree_size <= (SELECT COALESCE(MIN(leaf_index), (SELECT COALESCE(MAX(leaf_index) + 1, 0) FROM audit_events WHERE leaf_index IS NOT NULL)) FROM audit_events WHERE leaf_index IS NOT NULL AND time >= ",
    );
    q.bind(cutoff.unix_micros()).push(")");
    let row = q.query().fetch_one(pool).await.map_err(unavailable)?;
    let v: Option<i64> = row.try_get(0).map_err(|e| corrupt("prune point", e))?;
    Ok(v.and_then(|v| u64::try_from(v).ok()).filter(|v| *v > 0))
}

pub async fn get_client(pool: &AnyPool, client_id: &str) -> R<Option<sigil_core::oauth::OAuthClient>> {
    let mut q = Sql::new(&format!(
        "SELECT {} FROM oauth_clients WHERE client_id = ",
        rows::CLIENT_COLS
    ));
    q.bind(client_id);
    one(pool, q, rows::client).await
}

pub async fn client_by_registration_token(
    pool: &AnyPool,
    token_hash: &str,
) -> R<Option<sigil_core::oauth::OAuthClient>> {
    let mut q = Sql::new(&format!(
        "SELECT {} FROM oauth_clients WHERE registration_token_hash = ",
        rows::CLIENT_COLS
    ));
    q.bind(token_hash);
    one(pool, q, rows::client).await
}

pub async fn list_clients(
    pool: &AnyPool,
    identity: Option<&IdentityId>,
    page: &PageRequest,
) -> R<Page<sigil_core::oauth::OAuthClient>> {
    let mut q = Sql::new(&format!("SELECT {} FROM oauth_clients WHERE 1 = 1", rows::CLIENT_COLS));
    if let Some(i) = identity {
        q.push(" AND identity_id = ").bind(i.as_str());
    }
    if let Some(after) = &page.after {
        q.push(" AND client_id > ").bind(after.as_str());
    }
    q.push(" ORDER BY client_id LIMIT ").bind(i64::from(page.limit) + 1);
    let rows = q.query().fetch_all(pool).await.map_err(unavailable)?;
    let mut items = rows.iter().map(rows::client).collect::<R<Vec<_>>>()?;
    let next_cursor = if items.len() > page.limit as usize {
        items.truncate(page.limit as usize);
        items.last().map(|c| c.client_id.clone())
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

/// Whether any row the purge of what expired before `before` (Unix seconds) would delete is
/// left: one probe of each table's expiry index.
pub async fn expired_left(pool: &AnyPool, before: i64) -> R<bool> {
    let mut q = Sql::new("SELECT CAST(");
    for (n, expiring) in crate::apply::purge::EXPIRING.iter().enumerate() {
        let table = expiring.table;
        q.push(if n == 0 { "" } else { " + " })
            .push(&format!(
                "(SELECT COUNT(*) FROM (SELECT 1 AS one FROM {table} WHERE expires_at < "
            ))
            .bind(expiring.cutoff(before))
            .push(&format!(" LIMIT 1) e{n})"));
    }
    q.push(" AS BIGINT)");
    Ok(count(pool, q).await? > 0)
}

pub async fn is_token_revoked(pool: &AnyPool, jti: &str) -> R<bool> {
    let row = stmt("SELECT 1 AS one FROM revoked_tokens WHERE jti = $1", vec![jti.into()])
        .fetch_optional(pool)
        .await
        .map_err(unavailable)?;
    Ok(row.is_some())
}

pub async fn find_registration_token(
    pool: &AnyPool,
    hash: &str,
) -> R<Option<sigil_core::oauth::client::RegistrationToken>> {
    let mut q = Sql::new(
        "SELECT id, token_hash, owner_id, identity_id, expires_at, created_at, created_by FROM registration_tokens WHERE token_hash = ",
    );
    q.bind(hash);
    one(pool, q, rows::registration_token).await
}

pub async fn list_registration_tokens(
    pool: &AnyPool,
    now: sigil_types::Timestamp,
) -> R<Vec<sigil_core::oauth::client::RegistrationToken>> {
    let mut q = Sql::new(
        "SELECT id, token_hash, owner_id, identity_id, expires_at, created_at, created_by FROM registration_tokens WHERE expires_at > ",
    );
    q.bind(now.unix_micros()).push(" ORDER BY created_at DESC, id DESC");
    all(pool, q, rows::registration_token).await
}

pub async fn list_policy_versions(pool: &AnyPool) -> R<Vec<sigil_core::policy::PolicyVersion>> {
    let q = Sql::new(
        "SELECT version, policies, schema_text, description, created_at, created_by FROM policy_versions ORDER BY version DESC",
    );
    all(pool, q, rows::policy_version).await
}

pub async fn get_policy_version(pool: &AnyPool, version: u64) -> R<Option<sigil_core::policy::PolicyVersion>> {
    let mut q = Sql::new(
        "SELECT version, policies, schema_text, description, created_at, created_by FROM policy_versions WHERE version = ",
    );
    q.bind(i64::try_from(version).unwrap_or(i64::MAX));
    one(pool, q, rows::policy_version).await
}

pub async fn policy_activations(pool: &AnyPool, limit: u32) -> R<Vec<sigil_core::policy::PolicyActivation>> {
    let mut q =
        Sql::new("SELECT seq, version, activated_at, activated_by FROM policy_activations ORDER BY seq DESC LIMIT ");
    q.bind(i64::from(limit));
    all(pool, q, rows::policy_activation).await
}

pub async fn user_password_hash(pool: &AnyPool, user: &sigil_types::UserId) -> R<Option<String>> {
    let row = stmt(
        "SELECT hash FROM user_passwords WHERE user_id = $1",
        vec![user.as_str().into()],
    )
    .fetch_optional(pool)
    .await
    .map_err(unavailable)?;
    row.map(|r| r.try_get::<String, _>("hash").map_err(unavailable))
        .transpose()
}

pub async fn get_grant(pool: &AnyPool, handle_hash: &str) -> R<Option<sigil_core::oauth::grant::Grant>> {
    let mut q = Sql::new(
        "SELECT g.handle_hash, g.kind, g.family_id, g.client_id, g.user_id, g.resource, g.scope, g.redirect_uri, g.code_challenge, g.openid, g.nonce, g.auth_time, g.dpop_jkt, g.issued_at, g.expires_at, g.used_at, f.revoked_at FROM delegated_grants g JOIN grant_families f ON f.family_id = g.family_id WHERE g.handle_hash = ",
    );
    q.bind(handle_hash);
    one(pool, q, rows::grant).await
}

pub async fn list_trusted_issuers(pool: &AnyPool) -> R<Vec<sigil_core::oauth::trusted::TrustedIssuer>> {
    let q = Sql::new(
        "SELECT id, issuer, jwks_json, jwks_uri, username_claim, audiences_json, accept_id_jag, created_at, created_by FROM trusted_issuers ORDER BY issuer",
    );
    all(pool, q, rows::trusted_issuer).await
}

pub async fn list_federations(pool: &AnyPool) -> R<Vec<sigil_core::spiffe::federation::Federation>> {
    let q = Sql::new(
        "SELECT trust_domain, bundle_endpoint, bundle_json, refreshed_at, last_error, created_at, created_by FROM federations ORDER BY trust_domain",
    );
    all(pool, q, rows::federation).await
}

pub async fn list_jwt_authorities(pool: &AnyPool) -> R<Vec<sigil_core::spiffe::StoredJwtAuthority>> {
    let q = Sql::new("SELECT kid, sealed_key, status, created_at FROM jwt_authorities ORDER BY created_at, kid");
    all(pool, q, rows::jwt_authority).await
}

pub async fn list_x509_authorities(pool: &AnyPool) -> R<Vec<sigil_core::spiffe::StoredAuthority>> {
    let q = Sql::new(
        "SELECT id, cert_der, sealed_key, upstream_der, status, not_after, created_at FROM x509_authorities ORDER BY created_at, id",
    );
    all(pool, q, rows::x509_authority).await
}

pub async fn get_join_token(pool: &AnyPool, token_hash: &str) -> R<Option<sigil_core::spiffe::nodes::JoinToken>> {
    let mut q = Sql::new(&format!(
        "SELECT {} FROM join_tokens WHERE token_hash = ",
        rows::JOIN_TOKEN_COLS
    ));
    q.bind(token_hash);
    one(pool, q, rows::join_token).await
}

pub async fn get_node(pool: &AnyPool, spiffe_id: &str) -> R<Option<sigil_core::spiffe::nodes::AttestedNode>> {
    let mut q = Sql::new(&format!(
        "SELECT {} FROM attested_nodes WHERE spiffe_id = ",
        rows::NODE_COLS
    ));
    q.bind(spiffe_id);
    one(pool, q, rows::node).await
}

pub async fn list_banned_nodes(pool: &AnyPool) -> R<Vec<String>> {
    let q = Sql::new("SELECT spiffe_id FROM attested_nodes WHERE banned_at IS NOT NULL");
    all(pool, q, |row| {
        row.try_get("spiffe_id").map_err(|e| corrupt("spiffe_id", e))
    })
    .await
}

pub async fn list_nodes(pool: &AnyPool) -> R<Vec<sigil_core::spiffe::nodes::AttestedNode>> {
    let q = Sql::new(&format!(
        "SELECT {} FROM attested_nodes ORDER BY spiffe_id LIMIT 10000",
        rows::NODE_COLS
    ));
    all(pool, q, rows::node).await
}

pub async fn get_entry(pool: &AnyPool, id: &str) -> R<Option<sigil_core::spiffe::entries::RegistrationEntry>> {
    let mut q = Sql::new(&format!(
        "SELECT {} FROM registration_entries WHERE id = ",
        rows::ENTRY_COLS
    ));
    q.bind(id);
    one(pool, q, rows::entry).await
}

pub async fn list_entries(
    pool: &AnyPool,
    parent_id: Option<&str>,
    spiffe_id: Option<&str>,
) -> R<Vec<sigil_core::spiffe::entries::RegistrationEntry>> {
    let mut q = Sql::new(&format!(
        "SELECT {} FROM registration_entries WHERE 1 = 1",
        rows::ENTRY_COLS
    ));
    if let Some(p) = parent_id {
        q.push(" AND parent_id = ").bind(p);
    }
    if let Some(s) = spiffe_id {
        q.push(" AND spiffe_id = ").bind(s);
    }
    q.push(" ORDER BY id LIMIT 10000");
    all(pool, q, rows::entry).await
}

#[cfg(test)]
mod tests {
    use sigil_core::audit::{AuditQuery, EventType};

    use super::search_query;
    use crate::dialect::Backend;

    #[test]
    fn pending_records_split_by_their_byte_lengths() {
        let bodies = [r#"{"a":"x,1,y"}"#, "", r#"{"é":"🙂,2,"}"#];
        let joined: String = bodies
            .iter()
            .enumerate()
            .map(|(n, b)| format!("{},{},{b}", n + 7, b.len()))
            .collect();
        let split = super::split_pending(&joined).unwrap();
        let expected: Vec<(i64, String)> = bodies
            .iter()
            .enumerate()
            .map(|(n, b)| (n as i64 + 7, (*b).to_owned()))
            .collect();
        assert_eq!(split, expected);
        assert!(super::split_pending("").unwrap().is_empty());
        for bad in ["7,5,abc", "7,x,abc", "7", "x,0,", "7,1,é"] {
            assert!(super::split_pending(bad).is_err(), "{bad}");
        }
    }

    /// The leaf index holds integrated records only (migration 17); what reads the tree by leaf
    /// still goes through it rather than reading the whole table.
    #[tokio::test]
    async fn tree_reads_use_the_partial_leaf_index() {
        let pool = crate::migrate::memory_database().await;
        let hashes = super::leaf_hashes_query(64, 128);
        let reads = [(super::TREE_SIZE.to_owned(), vec![]), (hashes.text, hashes.values)];
        for (sql, values) in reads {
            let plan = crate::testing::sqlite_plan(&pool, &sql, values).await;
            assert!(plan.contains("INDEX audit_events_leaf"), "{sql}:\n{plan}");
            assert!(!plan.contains("SCAN audit_events"), "{sql}:\n{plan}");
        }
    }

    /// Every search condition an index serves finds integrated records through that index (a
    /// partial one, since migration 17) and pending ones without reading the whole table,
    /// whatever it holds: the plan, not a timing, is what can be checked.
    #[tokio::test]
    async fn searches_use_the_partial_indexes_and_the_pending_index() {
        let pool = crate::migrate::memory_database().await;
        let one = |f: fn(&mut AuditQuery), index: &'static str| {
            let mut q = AuditQuery::default();
            f(&mut q);
            (q, index)
        };
        // (A time bound alone is read newest first along `seq`, stopping at the page's size.)
        let cases = [
            one(|q| q.agent = vec!["idn_a".into()], "audit_events_actor"),
            one(|q| q.agent = vec!["idn_a".into()], "audit_events_target"),
            one(|q| q.agent = vec!["idn_a".into()], "audit_events_acting_for"),
            one(|q| q.user = vec!["usr_a".into()], "audit_events_subject"),
            one(|q| q.client_id = Some("cli_a".into()), "audit_events_client"),
            one(|q| q.request_id = Some("req_a".into()), "audit_events_request"),
            one(|q| q.jti = Some("tok_a".into()), "audit_events_jti"),
            one(|q| q.event_type = Some(EventType::TokenIssued), "audit_events_type"),
        ];
        for (query, index) in cases {
            let sql = search_query(Backend::Sqlite.dialect(), &query).expect("query");
            let plan = crate::testing::sqlite_plan(&pool, &sql.text, sql.values).await;
            assert!(plan.contains(&format!("INDEX {index} ")), "{index}:\n{plan}");
            // Neither arm reads the whole table: the pending one reads the pending index.
            let whole_table =
                |l: &str| l.starts_with("SCAN audit_events") && !l.ends_with("INDEX audit_events_pending");
            assert!(!plan.lines().any(whole_table), "{index}:\n{plan}");
        }
    }
}
