//! Forgetting what expired: single-use marks, revocations, token lineage, codes and refresh
//! tokens, a bounded chunk of each table at a time, and the grant families left empty.

use sqlx::AnyConnection;

use super::{GRANT, R, REVOKED, exec};
use crate::errors::map;
use crate::sql::{Placeholders, Sql};

/// A table whose rows are forgotten once expired: the key its rows are deleted by, and whether
/// its `expires_at` holds microseconds (grants) rather than seconds. Each has an index
/// `{table}_expiry` on `expires_at`, which finds a chunk's rows without reading the table.
pub(crate) struct Expiring {
    pub table: &'static str,
    key: &'static str,
    micros: bool,
}

pub(crate) const EXPIRING: &[Expiring] = &[
    Expiring {
        table: "used_assertions",
        key: "client_id, jti",
        micros: false,
    },
    Expiring {
        table: "used_dpop_proofs",
        key: "jti",
        micros: false,
    },
    Expiring {
        table: "revoked_tokens",
        key: "jti",
        micros: false,
    },
    Expiring {
        table: "family_tokens",
        key: "family_id, jti",
        micros: false,
    },
    Expiring {
        table: "derived_tokens",
        key: "parent_jti, jti",
        micros: false,
    },
    // Codes and refresh tokens past their expiry can no longer be redeemed: a replay is
    // refused as unknown instead of as reused.
    Expiring {
        table: "delegated_grants",
        key: "handle_hash",
        micros: true,
    },
];

impl Expiring {
    /// The value of `expires_at` below which a row expired before `before` (Unix seconds).
    pub fn cutoff(&self, before: i64) -> i64 {
        if self.micros {
            before.saturating_mul(1_000_000)
        } else {
            before
        }
    }

    /// Deletes up to `limit` of the rows that expired before `before`, oldest first.
    pub fn delete_oldest(&self, placeholders: Placeholders, before: i64, limit: u32) -> Sql {
        let (table, key) = (self.table, self.key);
        let mut q = Sql::with(
            placeholders,
            &format!("DELETE FROM {table} WHERE ({key}) IN (SELECT {key} FROM {table} WHERE expires_at < "),
        );
        q.bind(self.cutoff(before))
            .push(" ORDER BY expires_at LIMIT ")
            .bind(i64::from(limit))
            .push(")");
        q
    }
}

/// A family goes with its last grant and its last recorded access token (revoking it would
/// have nothing left to reach).
const EMPTIED_FAMILIES: &str = "DELETE FROM grant_families \
    WHERE NOT EXISTS (SELECT 1 FROM delegated_grants g WHERE g.family_id = grant_families.family_id) \
    AND NOT EXISTS (SELECT 1 FROM family_tokens t WHERE t.family_id = grant_families.family_id)";

/// Deletes, per table, up to `limit` of the rows that expired before `before`. In the chunk that
/// finds less than `limit` everywhere (the last of a purge), the grant families left empty go
/// too: finding them reads every family, so it is done once a purge, not once a chunk.
pub async fn purge_expired(conn: &mut AnyConnection, before: i64, limit: u32) -> R {
    let mut last_chunk = true;
    for table in EXPIRING {
        let deleted = table
            .delete_oldest(Placeholders::for_connection(conn), before, limit)
            .query()
            .execute(&mut *conn)
            .await
            .map_err(|e| map(e, REVOKED))?
            .rows_affected();
        last_chunk &= deleted < u64::from(limit);
    }
    if last_chunk {
        exec(conn, EMPTIED_FAMILIES, vec![], GRANT).await?;
    }
    Ok(())
}
