//! Single-use marks (client assertion, grant assertion and DPoP proof `jti`s) checked and
//! recorded many at a time: the group committer's fast path for issuances whose only entity
//! change is the mark of what they spent.

use std::collections::HashSet;

use sigil_core::store::{Change, StoreError};
use sqlx::{AnyConnection, Row};

use super::{ASSERTION, DPOP, GRANT_ASSERTION, R};
use crate::errors::{Op, map};
use crate::sql::Sql;

/// Rows per statement.
const ROWS: usize = 32;

/// Which table a mark lives in and under which key. Ordered: writers insert marks in this
/// order, so two PostgreSQL transactions recording the same marks wait for each other instead
/// of deadlocking.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MarkKey {
    /// `used_assertions`, keyed by (client id, jti); a grant assertion's "client" is
    /// `grant:` and its issuer.
    Assertion { client_id: String, jti: String },
    /// `used_dpop_proofs`, keyed by jti.
    Dpop { jti: String },
}

/// One single-use mark a change set records.
#[derive(Debug, Clone)]
pub struct Mark {
    pub key: MarkKey,
    pub expires_at: i64,
    /// What a replay of it is called (the same error as the one-statement path gives).
    op: Op,
}

impl Mark {
    /// The mark `c` records, if it is one.
    pub fn of(c: &Change) -> Option<Self> {
        let (key, expires_at, op) = match c {
            Change::RecordAssertion {
                client_id,
                jti,
                expires_at,
            } => (
                MarkKey::Assertion {
                    client_id: client_id.clone(),
                    jti: jti.clone(),
                },
                *expires_at,
                ASSERTION,
            ),
            Change::RecordGrantAssertion {
                issuer,
                jti,
                expires_at,
            } => (
                MarkKey::Assertion {
                    client_id: grant_client(issuer),
                    jti: jti.clone(),
                },
                *expires_at,
                GRANT_ASSERTION,
            ),
            Change::RecordDpopProof { jti, expires_at } => (MarkKey::Dpop { jti: jti.clone() }, *expires_at, DPOP),
            _ => return None,
        };
        Some(Self { key, expires_at, op })
    }

    /// The refusal of a change set whose mark was already spent.
    pub const fn replayed(&self) -> StoreError {
        StoreError::Duplicate {
            entity: self.op.entity,
            field: "jti",
        }
    }
}

/// The `client_id` column under which a grant assertion's `jti` is recorded.
pub fn grant_client(issuer: &str) -> String {
    format!("grant:{issuer}")
}

/// Records `marks` (none twice) with multi-row inserts in key order, and answers which were
/// recorded. One recorded before — by an earlier batch, or by another PostgreSQL writer
/// meanwhile (after waiting for it to commit or roll back) — is skipped, not an error
/// (`ON CONFLICT DO NOTHING`): the caller refuses its change set as a replay. Key
/// order means two writers recording the same marks wait for each other, never in a cycle.
pub async fn insert_marks_many(conn: &mut AnyConnection, marks: &[&Mark]) -> Result<HashSet<MarkKey>, StoreError> {
    let mut marks = marks.to_vec();
    marks.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    let mut recorded = HashSet::new();
    let assertions: Vec<&Mark> = marks
        .iter()
        .copied()
        .filter(|m| matches!(m.key, MarkKey::Assertion { .. }))
        .collect();
    for chunk in assertions.chunks(ROWS) {
        let mut q = Sql::on(conn, "INSERT INTO used_assertions (client_id, jti, expires_at) VALUES ");
        for (n, m) in chunk.iter().enumerate() {
            if let MarkKey::Assertion { client_id, jti } = &m.key {
                q.push(if n == 0 { "(" } else { ", (" });
                q.bind(client_id.as_str()).push(", ").bind(jti.as_str()).push(", ");
                q.bind(m.expires_at).push(")");
            }
        }
        q.push(" ON CONFLICT (client_id, jti) DO NOTHING RETURNING client_id, jti");
        for row in q.query().fetch_all(&mut *conn).await.map_err(|e| map(e, ASSERTION))? {
            recorded.insert(MarkKey::Assertion {
                client_id: row.try_get("client_id").map_err(|e| map(e, ASSERTION))?,
                jti: row.try_get("jti").map_err(|e| map(e, ASSERTION))?,
            });
        }
    }
    let proofs: Vec<&Mark> = marks
        .iter()
        .copied()
        .filter(|m| matches!(m.key, MarkKey::Dpop { .. }))
        .collect();
    for chunk in proofs.chunks(ROWS) {
        let mut q = Sql::on(conn, "INSERT INTO used_dpop_proofs (jti, expires_at) VALUES ");
        for (n, m) in chunk.iter().enumerate() {
            if let MarkKey::Dpop { jti } = &m.key {
                q.push(if n == 0 { "(" } else { ", (" });
                q.bind(jti.as_str()).push(", ").bind(m.expires_at).push(")");
            }
        }
        q.push(" ON CONFLICT (jti) DO NOTHING RETURNING jti");
        for row in q.query().fetch_all(&mut *conn).await.map_err(|e| map(e, DPOP))? {
            recorded.insert(MarkKey::Dpop {
                jti: row.try_get("jti").map_err(|e| map(e, DPOP))?,
            });
        }
    }
    Ok(recorded)
}

/// Takes back marks recorded in this transaction for a change set refused after all (another
/// of its marks turned out spent), so a refused request spends nothing.
pub async fn forget_marks(conn: &mut AnyConnection, keys: &[&MarkKey]) -> R {
    for key in keys {
        let q = match key {
            MarkKey::Assertion { client_id, jti } => {
                let mut q = Sql::on(conn, "DELETE FROM used_assertions WHERE client_id = ");
                q.bind(client_id.as_str()).push(" AND jti = ").bind(jti.as_str());
                q
            }
            MarkKey::Dpop { jti } => {
                let mut q = Sql::on(conn, "DELETE FROM used_dpop_proofs WHERE jti = ");
                q.bind(jti.as_str());
                q
            }
        };
        q.query().execute(&mut *conn).await.map_err(|e| map(e, ASSERTION))?;
    }
    Ok(())
}
