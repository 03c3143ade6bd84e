//! Token lineage: which tokens were exchanged from which (`derived_tokens`) and issued for which
//! grant family (`family_tokens`), how a revocation reaches them, and the checks that keep a
//! token from being recorded under a parent or family revoked meanwhile.

use std::collections::HashSet;

use sigil_core::store::{Change, StoreError};
use sqlx::{AnyConnection, Row};

use super::{FAMILY, GRANT, R, REVOKED, SUBJECT, exec};
use crate::errors::map;
use crate::sql::Sql;

/// Records many derivations (`Change::RecordDerivedToken`) with multi-row statements: the
/// group committer's fast path for token exchanges, whose only change is that record.
pub async fn insert_derived_many(conn: &mut AnyConnection, changes: &[&Change]) -> R {
    const ROWS: usize = 32;
    let rows: Vec<(&String, &String, i64)> = changes
        .iter()
        .filter_map(|c| match c {
            Change::RecordDerivedToken {
                parent_jti,
                jti,
                expires_at,
            } => Some((parent_jti, jti, *expires_at)),
            _ => None,
        })
        .collect();
    for chunk in rows.chunks(ROWS) {
        let mut q = Sql::on(conn, "INSERT INTO derived_tokens (parent_jti, jti, expires_at) VALUES ");
        for (n, (parent, jti, expires_at)) in chunk.iter().enumerate() {
            q.push(if n == 0 { "(" } else { ", (" });
            q.bind(parent.as_str()).push(", ");
            q.bind(jti.as_str()).push(", ");
            q.bind(*expires_at).push(")");
        }
        q.push(" ON CONFLICT (parent_jti, jti) DO NOTHING");
        q.query().execute(&mut *conn).await.map_err(|e| map(e, REVOKED))?;
    }
    Ok(())
}

/// Whether the grant family exists and is not revoked.
async fn family_in_force(conn: &mut AnyConnection, family_id: &str) -> Result<bool, StoreError> {
    let mut q = Sql::new("SELECT family_id FROM grant_families WHERE family_id = ");
    q.bind(family_id).push(" AND revoked_at IS NULL");
    let row = q.query().fetch_optional(&mut *conn).await.map_err(|e| map(e, FAMILY))?;
    Ok(row.is_some())
}

/// Which of `jtis` are revoked: the writer's check, for a whole batch of derivations at once,
/// that no token is derived from a parent revoked since the exchange checked it.
pub async fn revoked_among(conn: &mut AnyConnection, jtis: &[&str]) -> Result<HashSet<String>, StoreError> {
    const ROWS: usize = 64;
    let mut revoked = HashSet::new();
    for chunk in jtis.chunks(ROWS) {
        let mut q = Sql::on(conn, "SELECT jti FROM revoked_tokens WHERE jti IN (");
        for (n, jti) in chunk.iter().enumerate() {
            q.push(if n == 0 { "" } else { ", " }).bind(*jti);
        }
        q.push(")");
        let rows = q.query().fetch_all(&mut *conn).await.map_err(|e| map(e, REVOKED))?;
        for row in rows {
            revoked.insert(row.try_get::<String, _>("jti").map_err(|e| map(e, REVOKED))?);
        }
    }
    Ok(revoked)
}

/// Marks the family revoked and revokes every access token recorded for it, in one transaction.
pub(super) async fn revoke_family(conn: &mut AnyConnection, family_id: &str, at: sigil_types::Timestamp) -> R {
    exec(
        conn,
        "UPDATE grant_families SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL",
        vec![at.unix_micros().into(), family_id.into()],
        GRANT,
    )
    .await?;
    exec(
        conn,
        "INSERT INTO revoked_tokens (jti, expires_at, revoked_at) SELECT jti, expires_at, $1 FROM family_tokens WHERE family_id = $2 ON CONFLICT (jti) DO NOTHING",
        vec![at.unix_micros().into(), family_id.into()],
        REVOKED,
    )
    .await?;
    revoke_derived(conn, REVOKE_DERIVED_FROM_FAMILY, family_id, at).await
}

/// Revokes (at `$1`) every token exchanged, at any depth, from the token `$2`.
const REVOKE_DERIVED_FROM_TOKEN: &str = "WITH RECURSIVE derived (jti, expires_at) AS (\
    SELECT d.jti, d.expires_at FROM derived_tokens d WHERE d.parent_jti = $2 \
    UNION SELECT d.jti, d.expires_at FROM derived_tokens d JOIN derived ON d.parent_jti = derived.jti) \
    INSERT INTO revoked_tokens (jti, expires_at, revoked_at) SELECT jti, expires_at, $1 FROM derived WHERE true \
    ON CONFLICT (jti) DO NOTHING";

/// Revokes (at `$1`) every token exchanged, at any depth, from a token of the grant family `$2`.
const REVOKE_DERIVED_FROM_FAMILY: &str = "WITH RECURSIVE derived (jti, expires_at) AS (\
    SELECT d.jti, d.expires_at FROM derived_tokens d JOIN family_tokens f ON d.parent_jti = f.jti WHERE f.family_id = $2 \
    UNION SELECT d.jti, d.expires_at FROM derived_tokens d JOIN derived ON d.parent_jti = derived.jti) \
    INSERT INTO revoked_tokens (jti, expires_at, revoked_at) SELECT jti, expires_at, $1 FROM derived WHERE true \
    ON CONFLICT (jti) DO NOTHING";

/// A delegation chain ends where the token it was built on was revoked: runs `sql` (one of the
/// two above) for `key`.
async fn revoke_derived(conn: &mut AnyConnection, sql: &'static str, key: &str, at: sigil_types::Timestamp) -> R {
    exec(conn, sql, vec![at.unix_micros().into(), key.into()], REVOKED)
        .await
        .map(|_| ())
}

/// Revokes one token, and every token exchanged from it at any depth.
pub(super) async fn revoke_token(
    conn: &mut AnyConnection,
    jti: &str,
    expires_at: i64,
    revoked_at: sigil_types::Timestamp,
) -> R {
    exec(
        conn,
        "INSERT INTO revoked_tokens (jti, expires_at, revoked_at) VALUES ($1, $2, $3) ON CONFLICT (jti) DO NOTHING",
        vec![jti.into(), expires_at.into(), revoked_at.unix_micros().into()],
        REVOKED,
    )
    .await?;
    revoke_derived(conn, REVOKE_DERIVED_FROM_TOKEN, jti, revoked_at).await
}

/// Records that `jti` was exchanged from `parent_jti`. Refused when the parent was revoked
/// after the exchange checked it: the revocation's cascade ran before this record existed, so
/// the new token would outlive its parent.
pub(super) async fn record_derived(conn: &mut AnyConnection, parent_jti: &str, jti: &str, expires_at: i64) -> R {
    if !revoked_among(conn, &[parent_jti]).await?.is_empty() {
        return Err(StoreError::Stale { entity: SUBJECT.entity });
    }
    exec(
        conn,
        "INSERT INTO derived_tokens (parent_jti, jti, expires_at) VALUES ($1, $2, $3) ON CONFLICT (parent_jti, jti) DO NOTHING",
        vec![parent_jti.into(), jti.into(), expires_at.into()],
        REVOKED,
    )
    .await
    .map(|_| ())
}

/// Records a token issued for a grant family. The family must still be in force: a revocation
/// that committed after the grant was checked would otherwise miss this token. On PostgreSQL
/// the writer's lineage lock (shared here, exclusive for revocations) orders this check and
/// any concurrent revocation; SQLite has one writer.
pub(super) async fn record_family_token(conn: &mut AnyConnection, family_id: &str, jti: &str, expires_at: i64) -> R {
    if !family_in_force(conn, family_id).await? {
        return Err(StoreError::Stale { entity: FAMILY.entity });
    }
    exec(
        conn,
        "INSERT INTO family_tokens (family_id, jti, expires_at) VALUES ($1, $2, $3)",
        vec![family_id.into(), jti.into(), expires_at.into()],
        GRANT,
    )
    .await
    .map(|_| ())
}
