//! Applying the SPIFFE changes: the trust domain's authorities, federations, join tokens and
//! attested nodes, and registration entries.

use sigil_core::store::{Change, StoreError};
use sqlx::AnyConnection;

use super::{R, deleting, exec, exec_versioned, json, meta_values};
use crate::errors::Op;
use crate::sql::Value;

const AUTHORITY: Op = Op {
    entity: "x509 authority",
    unique_fields: &["id"],
    is_delete: false,
    references: "x509 authority",
};
const ENTRY: Op = Op {
    entity: "entry",
    unique_fields: &["id"],
    is_delete: false,
    references: "identity",
};
const JOIN_TOKEN: Op = Op {
    entity: "join token",
    unique_fields: &["token_hash"],
    is_delete: false,
    references: "join token",
};
const ATTESTED_NODE: Op = Op {
    entity: "node",
    unique_fields: &["spiffe_id"],
    is_delete: false,
    references: "node",
};
const FEDERATION: Op = Op {
    entity: "federation",
    unique_fields: &["trust_domain"],
    is_delete: false,
    references: "federation",
};
pub(super) async fn apply(conn: &mut AnyConnection, c: &Change) -> R {
    match c {
        Change::InsertX509Authority(a) => exec(
            conn,
            "INSERT INTO x509_authorities (id, cert_der, sealed_key, status, not_after, created_at, upstream_der) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            vec![
                a.id.clone().into(),
                a.cert_der.clone().into(),
                a.sealed_key.0.clone().into(),
                a.status.clone().into(),
                a.not_after.unix_micros().into(),
                a.created_at.unix_micros().into(),
                a.upstream_der.clone().into(),
            ],
            AUTHORITY,
        )
        .await
        .map(|_| ()),
        Change::ActivateAuthorities { x509_id, jwt_kid } => {
            // A change set runs in its own savepoint: if either id is not prepared, the
            // retirements below are rolled back with it.
            exec(conn, "UPDATE x509_authorities SET status = 'retired' WHERE status = 'active'", vec![], AUTHORITY).await?;
            exec(conn, "UPDATE jwt_authorities SET status = 'retired' WHERE status = 'active'", vec![], AUTHORITY).await?;
            exec_versioned(conn, "UPDATE x509_authorities SET status = 'active' WHERE id = $1 AND status = 'prepared'", vec![x509_id.clone().into()], AUTHORITY).await?;
            exec_versioned(conn, "UPDATE jwt_authorities SET status = 'active' WHERE kid = $1 AND status = 'prepared'", vec![jwt_kid.clone().into()], AUTHORITY).await
        }
        Change::InsertFederation(f) => exec(
            conn,
            "INSERT INTO federations (trust_domain, bundle_endpoint, bundle_json, refreshed_at, last_error, created_at, created_by) VALUES ($1, $2, NULL, NULL, NULL, $3, $4)",
            vec![
                f.trust_domain.as_str().into(),
                f.bundle_endpoint.clone().into(),
                f.created_at.unix_micros().into(),
                f.created_by.clone().into(),
            ],
            FEDERATION,
        )
        .await
        .map(|_| ()),
        Change::DeleteFederation { trust_domain } => {
            exec_versioned(conn, "DELETE FROM federations WHERE trust_domain = $1", vec![trust_domain.clone().into()], FEDERATION).await
        }
        Change::SetFederatedBundle {
            trust_domain,
            bundle_json,
            refreshed_at,
            error,
        } => exec(
            conn,
            "UPDATE federations SET bundle_json = $1, refreshed_at = $2, last_error = $3 WHERE trust_domain = $4",
            vec![
                bundle_json.clone().into(),
                refreshed_at.unix_micros().into(),
                error.clone().into(),
                trust_domain.clone().into(),
            ],
            FEDERATION,
        )
        .await
        .map(|_| ()),
        Change::InsertJwtAuthority(a) => exec(
            conn,
            "INSERT INTO jwt_authorities (kid, sealed_key, status, created_at) VALUES ($1, $2, $3, $4)",
            vec![
                a.kid.clone().into(),
                a.sealed_key.0.clone().into(),
                a.status.clone().into(),
                a.created_at.unix_micros().into(),
            ],
            AUTHORITY,
        )
        .await
        .map(|_| ()),
        Change::InsertJoinToken(t) => exec(
            conn,
            "INSERT INTO join_tokens (token_hash, spiffe_id, expires_at, created_at, created_by, used_at) VALUES ($1, $2, $3, $4, $5, NULL)",
            vec![
                t.token_hash.clone().into(),
                t.spiffe_id.as_str().into(),
                t.expires_at.unix_micros().into(),
                t.created_at.unix_micros().into(),
                t.created_by.clone().into(),
            ],
            JOIN_TOKEN,
        )
        .await
        .map(|_| ()),
        Change::UseJoinToken { token_hash, at } => exec_versioned(
            conn,
            "UPDATE join_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL",
            vec![at.unix_micros().into(), token_hash.clone().into()],
            JOIN_TOKEN,
        )
        .await,
        Change::RevokeJoinTokens { spiffe_id } => exec_versioned(
            conn,
            "DELETE FROM join_tokens WHERE spiffe_id = $1 AND used_at IS NULL",
            vec![spiffe_id.clone().into()],
            JOIN_TOKEN,
        )
        .await,
        Change::UpsertNode(n) => exec(
            conn,
            "INSERT INTO attested_nodes (spiffe_id, method, attested_at, svid_serial, svid_expires_at, banned_at) VALUES ($1, $2, $3, $4, $5, NULL) ON CONFLICT (spiffe_id) DO UPDATE SET svid_serial = excluded.svid_serial, svid_expires_at = excluded.svid_expires_at",
            vec![
                n.spiffe_id.as_str().into(),
                n.method.clone().into(),
                n.attested_at.unix_micros().into(),
                n.svid_serial.clone().into(),
                n.svid_expires_at.unix_micros().into(),
            ],
            ATTESTED_NODE,
        )
        .await
        .map(|_| ()),
        Change::BanNode { spiffe_id, at } => exec_versioned(
            conn,
            "UPDATE attested_nodes SET banned_at = $1 WHERE spiffe_id = $2",
            vec![at.unix_micros().into(), spiffe_id.clone().into()],
            ATTESTED_NODE,
        )
        .await,
        Change::InsertEntry(e) => exec(
            conn,
            "INSERT INTO registration_entries (id, spiffe_id, parent_id, selectors_json, identity_id, x509_ttl, jwt_ttl, dns_json, created_at, updated_at, created_by, updated_by, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            entry_values(e),
            ENTRY,
        )
        .await
        .map(|_| ()),
        Change::UpdateEntry { entry: e, expected_version } => {
            let mut v = entry_values(e);
            v.remove(0);
            v.push(e.id.clone().into());
            v.push((*expected_version).into());
            exec_versioned(conn, "UPDATE registration_entries SET spiffe_id = $1, parent_id = $2, selectors_json = $3, identity_id = $4, x509_ttl = $5, jwt_ttl = $6, dns_json = $7, created_at = $8, updated_at = $9, created_by = $10, updated_by = $11, version = $12 WHERE id = $13 AND version = $14", v, ENTRY).await
        }
        Change::DeleteEntry { id, expected_version } => {
            exec_versioned(conn, "DELETE FROM registration_entries WHERE id = $1 AND version = $2", vec![id.clone().into(), (*expected_version).into()], deleting(ENTRY)).await
        }
        // apply_one routes only the variants above here.
        _ => Err(StoreError::Corrupt("a change that is not a SPIFFE change reached the SPIFFE applier".into())),
    }
}

fn entry_values(e: &sigil_core::spiffe::entries::RegistrationEntry) -> Vec<Value> {
    let selectors: Vec<&str> = e.selectors.iter().map(|s| s.as_str()).collect();
    let mut v: Vec<Value> = vec![
        e.id.clone().into(),
        e.spiffe_id.as_str().into(),
        e.parent_id.as_str().into(),
        json(&selectors),
        e.identity_id.as_ref().map(|i| i.to_string()).into(),
        i64::try_from(e.x509_ttl.as_secs()).unwrap_or(i64::MAX).into(),
        i64::try_from(e.jwt_ttl.as_secs()).unwrap_or(i64::MAX).into(),
        json(&e.dns_names),
    ];
    v.extend(meta_values(&e.meta));
    v
}
