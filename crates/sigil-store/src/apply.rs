//! Change → SQL. Runs inside the writer's transaction; the caller handles commit and rollback.

use sigil_core::audit::{AuditRecord, Integration, LeaseClaim};
use sigil_core::model::{Identity, Resource, User};
use sigil_core::store::{Change, ChangeSet, StoreError};
use sqlx::AnyConnection;

use crate::errors::{Op, map};
use crate::sql::{Placeholders, Sql, Value, stmt};

mod lineage;
pub(crate) mod purge;
pub mod single_use;
mod spiffe;

pub use lineage::{insert_derived_many, revoked_among};

type R = Result<(), StoreError>;

const USER: Op = Op {
    entity: "user",
    unique_fields: &["username", "id"],
    is_delete: false,
    references: "user",
};
const IDENTITY: Op = Op {
    entity: "identity",
    unique_fields: &["name", "id"],
    is_delete: false,
    references: "owner",
};
const RESOURCE: Op = Op {
    entity: "resource",
    unique_fields: &["uri", "name", "id"],
    is_delete: false,
    references: "owner",
};
const KEY: Op = Op {
    entity: "signing key",
    unique_fields: &["kid"],
    is_delete: false,
    references: "key",
};
const ADMIN: Op = Op {
    entity: "admin credential",
    unique_fields: &["token_hash", "name", "id"],
    is_delete: false,
    references: "credential",
};
const SETTING: Op = Op {
    entity: "setting",
    unique_fields: &["name"],
    is_delete: false,
    references: "setting",
};
const CLIENT: Op = Op {
    entity: "client",
    unique_fields: &["client_id"],
    is_delete: false,
    references: "identity",
};
const REGISTRATION_TOKEN: Op = Op {
    entity: "registration token",
    unique_fields: &["id", "token_hash"],
    is_delete: false,
    references: "registration token",
};
const POLICY: Op = Op {
    entity: "policy version",
    unique_fields: &["version"],
    is_delete: false,
    references: "policy version",
};
const ASSERTION: Op = Op {
    entity: "client assertion",
    unique_fields: &["jti"],
    is_delete: false,
    references: "client",
};
const GRANT_ASSERTION: Op = Op {
    entity: "grant assertion",
    unique_fields: &["jti"],
    is_delete: false,
    references: "issuer",
};
const DPOP: Op = Op {
    entity: "dpop proof",
    unique_fields: &["jti"],
    is_delete: false,
    references: "proof",
};
const REVOKED: Op = Op {
    entity: "revoked token",
    unique_fields: &["jti"],
    is_delete: false,
    references: "token",
};
const GRANT: Op = Op {
    entity: "grant",
    unique_fields: &["handle_hash", "jti"],
    is_delete: false,
    references: "user",
};
/// A grant family found revoked when a token of it is recorded.
const FAMILY: Op = Op {
    entity: "grant family",
    unique_fields: &[],
    is_delete: false,
    references: "grant",
};
/// A token exchanged from one found revoked when the derivation is recorded.
const SUBJECT: Op = Op {
    entity: "subject token",
    ..REVOKED
};
const ISSUER: Op = Op {
    entity: "trusted issuer",
    unique_fields: &["issuer", "id"],
    is_delete: false,
    references: "trusted issuer",
};
const LEASE: Op = Op {
    entity: "lease",
    unique_fields: &["name"],
    is_delete: false,
    references: "lease",
};
const SINK: Op = Op {
    entity: "audit sink",
    unique_fields: &["name"],
    is_delete: false,
    references: "sink",
};
const NODE: Op = Op {
    entity: "audit tree node",
    unique_fields: &["idx"],
    is_delete: false,
    references: "node",
};
const CHECKPOINT: Op = Op {
    entity: "audit checkpoint",
    unique_fields: &["tree_size"],
    is_delete: false,
    references: "checkpoint",
};
const AUDIT: Op = Op {
    entity: "audit record",
    unique_fields: &["seq"],
    is_delete: false,
    references: "record",
};

const fn deleting(op: Op) -> Op {
    Op { is_delete: true, ..op }
}

/// Applies every change and then every audit record of `cs`.
pub async fn apply(conn: &mut AnyConnection, cs: &ChangeSet) -> R {
    apply_changes(conn, cs).await?;
    for rec in &cs.audit {
        insert_audit(conn, rec).await?;
    }
    Ok(())
}

/// Applies the entity changes of `cs` only (the caller inserts its audit records).
pub async fn apply_changes(conn: &mut AnyConnection, cs: &ChangeSet) -> R {
    for c in &cs.changes {
        apply_one(conn, c).await?;
    }
    Ok(())
}

/// Executes a statement; returns rows affected.
async fn exec(conn: &mut AnyConnection, sql: &'static str, values: Vec<Value>, op: Op) -> Result<u64, StoreError> {
    stmt(sql, values)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected())
        .map_err(|e| map(e, op))
}

/// Executes a versioned update/delete: no row affected means someone else changed it first.
async fn exec_versioned(conn: &mut AnyConnection, sql: &'static str, values: Vec<Value>, op: Op) -> R {
    match exec(conn, sql, values, op).await? {
        0 => Err(StoreError::Stale { entity: op.entity }),
        _ => Ok(()),
    }
}

fn json(v: &impl serde::Serialize) -> Value {
    Value::Text(serde_json::to_string(v).unwrap_or_default())
}

pub(crate) async fn apply_one(conn: &mut AnyConnection, c: &Change) -> R {
    match c {
        Change::InsertUser(u) => {
            exec(conn, "INSERT INTO users (id, username, email, display_name, groups_json, status, created_at, updated_at, created_by, updated_by, version, tokens_not_before) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)", user_values(u), USER).await?;
            write_groups(conn, u).await
        }
        Change::UpdateUser { user: u, expected_version } => {
            let mut v = user_values(u);
            v.remove(0);
            v.push(u.id.as_str().into());
            v.push((*expected_version).into());
            exec_versioned(conn, "UPDATE users SET username = $1, email = $2, display_name = $3, groups_json = $4, status = $5, created_at = $6, updated_at = $7, created_by = $8, updated_by = $9, version = $10, tokens_not_before = $11 WHERE id = $12 AND version = $13", v, USER).await?;
            exec(conn, "DELETE FROM user_groups WHERE user_id = $1", vec![u.id.as_str().into()], USER).await?;
            write_groups(conn, u).await
        }
        Change::DeleteUser { id, expected_version } => {
            exec_versioned(conn, "DELETE FROM users WHERE id = $1 AND version = $2", vec![id.as_str().into(), (*expected_version).into()], deleting(USER)).await
        }
        Change::InsertIdentity(i) => {
            exec(conn, "INSERT INTO identities (id, name, kind, description, owner_id, team, labels_json, status, expires_at, ceiling_json, last_used_at, created_at, updated_at, created_by, updated_by, version, tokens_not_before, token_ttl_seconds, dpop_required) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)", identity_values(i), IDENTITY).await?;
            write_labels(conn, i).await
        }
        Change::UpdateIdentity { identity: i, expected_version } => {
            let mut v = identity_values(i);
            v.remove(0);
            v.push(i.id.as_str().into());
            v.push((*expected_version).into());
            exec_versioned(conn, "UPDATE identities SET name = $1, kind = $2, description = $3, owner_id = $4, team = $5, labels_json = $6, status = $7, expires_at = $8, ceiling_json = $9, last_used_at = $10, created_at = $11, updated_at = $12, created_by = $13, updated_by = $14, version = $15, tokens_not_before = $16, token_ttl_seconds = $17, dpop_required = $18 WHERE id = $19 AND version = $20", v, IDENTITY).await?;
            exec(conn, "DELETE FROM identity_labels WHERE identity_id = $1", vec![i.id.as_str().into()], IDENTITY).await?;
            write_labels(conn, i).await
        }
        Change::TransferOwnership { from, to, by, at } => {
            let v = || vec![to.as_str().into(), at.unix_micros().into(), by.clone().into(), from.as_str().into()];
            exec(conn, "UPDATE identities SET owner_id = $1, updated_at = $2, updated_by = $3, version = version + 1 WHERE owner_id = $4", v(), IDENTITY).await?;
            exec(conn, "UPDATE resources SET owner_id = $1, updated_at = $2, updated_by = $3, version = version + 1 WHERE owner_id = $4", v(), RESOURCE).await?;
            Ok(())
        }
        Change::InsertResource(r) => {
            exec(conn, "INSERT INTO resources (id, uri, name, description, owner_id, scopes_json, created_at, updated_at, created_by, updated_by, version, servers_json) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)", resource_values(r), RESOURCE).await.map(|_| ())
        }
        Change::UpdateResource { resource: r, expected_version } => {
            let mut v = resource_values(r);
            v.remove(0);
            v.push(r.id.as_str().into());
            v.push((*expected_version).into());
            exec_versioned(conn, "UPDATE resources SET uri = $1, name = $2, description = $3, owner_id = $4, scopes_json = $5, created_at = $6, updated_at = $7, created_by = $8, updated_by = $9, version = $10, servers_json = $11 WHERE id = $12 AND version = $13", v, RESOURCE).await
        }
        Change::DeleteResource { id, expected_version } => {
            exec_versioned(conn, "DELETE FROM resources WHERE id = $1 AND version = $2", vec![id.as_str().into(), (*expected_version).into()], deleting(RESOURCE)).await
        }
        Change::InsertSigningKey(k) => {
            exec(conn, "INSERT INTO signing_keys (kid, alg, state, public_jwk, sealed_private, created_at, activate_at, retired_at, remove_after, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)", key_values(k), KEY).await.map(|_| ())
        }
        Change::UpdateSigningKey { key: k, expected_version } => {
            let mut v = key_values(k);
            v.remove(0);
            v.push(k.kid.clone().into());
            v.push((*expected_version).into());
            exec_versioned(conn, "UPDATE signing_keys SET alg = $1, state = $2, public_jwk = $3, sealed_private = $4, created_at = $5, activate_at = $6, retired_at = $7, remove_after = $8, version = $9 WHERE kid = $10 AND version = $11", v, KEY).await
        }
        Change::DeleteSigningKey { kid, expected_version } => {
            exec_versioned(conn, "DELETE FROM signing_keys WHERE kid = $1 AND version = $2", vec![kid.clone().into(), (*expected_version).into()], deleting(KEY)).await
        }
        Change::InsertAdminCredential(a) => {
            exec(conn, "INSERT INTO admin_credentials (id, name, token_hash, created_at) VALUES ($1, $2, $3, $4)", vec![a.id.clone().into(), a.name.clone().into(), a.token_hash.clone().into(), a.created_at.unix_micros().into()], ADMIN).await.map(|_| ())
        }
        Change::AcquireLease(l) => acquire_lease(conn, l).await,
        Change::InsertClient(c) => exec(
            conn,
            "INSERT INTO oauth_clients (client_id, identity_id, auth_method, jwks_json, jwks_uri, secret_hash, dpop_required, created_at, created_by, version, registration_token_hash, metadata_json, redirect_uris_json, id_jag_audiences_json) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            client_values(c),
            CLIENT,
        )
        .await
        .map(|_| ()),
        Change::UpdateClient { client: c, expected_version } => {
            let mut v = client_values(c);
            v.remove(0);
            v.push(c.client_id.clone().into());
            v.push((*expected_version).into());
            exec_versioned(conn, "UPDATE oauth_clients SET identity_id = $1, auth_method = $2, jwks_json = $3, jwks_uri = $4, secret_hash = $5, dpop_required = $6, created_at = $7, created_by = $8, version = $9, registration_token_hash = $10, metadata_json = $11, redirect_uris_json = $12, id_jag_audiences_json = $13 WHERE client_id = $14 AND version = $15", v, CLIENT).await
        }
        Change::InsertRegistrationToken(t) => exec(
            conn,
            "INSERT INTO registration_tokens (id, token_hash, owner_id, identity_id, expires_at, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            vec![
                t.id.clone().into(),
                t.token_hash.clone().into(),
                t.owner.as_str().into(),
                t.identity.as_ref().map(|i| i.to_string()).into(),
                t.expires_at.unix_micros().into(),
                t.created_at.unix_micros().into(),
                t.created_by.clone().into(),
            ],
            REGISTRATION_TOKEN,
        )
        .await
        .map(|_| ()),
        Change::DeleteRegistrationToken { id } => {
            exec_versioned(conn, "DELETE FROM registration_tokens WHERE id = $1", vec![id.clone().into()], deleting(REGISTRATION_TOKEN)).await
        }
        Change::DeleteClient { client_id, expected_version } => {
            exec_versioned(conn, "DELETE FROM oauth_clients WHERE client_id = $1 AND version = $2", vec![client_id.clone().into(), (*expected_version).into()], deleting(CLIENT)).await
        }
        Change::TouchIdentity { id, at } => exec(
            conn,
            "UPDATE identities SET last_used_at = $1 WHERE id = $2",
            vec![at.unix_micros().into(), id.as_str().into()],
            IDENTITY,
        )
        .await
        .map(|_| ()),
        Change::InsertPolicyVersion(v) => exec(
            conn,
            "INSERT INTO policy_versions (version, policies, schema_text, description, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6)",
            vec![
                i64::try_from(v.version).unwrap_or(i64::MAX).into(),
                v.policies.clone().into(),
                v.schema.clone().into(),
                v.description.clone().into(),
                v.created_at.unix_micros().into(),
                v.created_by.clone().into(),
            ],
            POLICY,
        )
        .await
        .map(|_| ()),
        Change::ActivatePolicy { version, at, by } => exec(
            conn,
            "INSERT INTO policy_activations (version, activated_at, activated_by) SELECT version, $2, $3 FROM policy_versions WHERE version = $1",
            vec![i64::try_from(*version).unwrap_or(i64::MAX).into(), at.unix_micros().into(), by.clone().into()],
            POLICY,
        )
        .await
        .and_then(|n| if n == 0 { Err(StoreError::MissingReference { entity: "policy version" }) } else { Ok(()) }),
        Change::RecordAssertion { client_id, jti, expires_at } => exec(
            conn,
            "INSERT INTO used_assertions (client_id, jti, expires_at) VALUES ($1, $2, $3)",
            vec![client_id.clone().into(), jti.clone().into(), (*expires_at).into()],
            ASSERTION,
        )
        .await
        .map(|_| ()),
        Change::RecordGrantAssertion { issuer, jti, expires_at } => exec(
            conn,
            "INSERT INTO used_assertions (client_id, jti, expires_at) VALUES ($1, $2, $3)",
            vec![single_use::grant_client(issuer).into(), jti.clone().into(), (*expires_at).into()],
            GRANT_ASSERTION,
        )
        .await
        .map(|_| ()),
        Change::RecordDpopProof { jti, expires_at } => exec(
            conn,
            "INSERT INTO used_dpop_proofs (jti, expires_at) VALUES ($1, $2)",
            vec![jti.clone().into(), (*expires_at).into()],
            DPOP,
        )
        .await
        .map(|_| ()),
        Change::RevokeToken { jti, expires_at, revoked_at } => lineage::revoke_token(conn, jti, *expires_at, *revoked_at).await,
        Change::PurgeExpired { before, limit } => purge::purge_expired(conn, *before, *limit).await,
        Change::RecordDerivedToken { parent_jti, jti, expires_at } => {
            lineage::record_derived(conn, parent_jti, jti, *expires_at).await
        }
        Change::SetUserPassword { user_id, hash, at } => exec(
            conn,
            "INSERT INTO user_passwords (user_id, hash, updated_at) VALUES ($1, $2, $3) ON CONFLICT (user_id) DO UPDATE SET hash = excluded.hash, updated_at = excluded.updated_at",
            vec![user_id.as_str().into(), hash.clone().into(), at.unix_micros().into()],
            USER,
        )
        .await
        .map(|_| ()),
        Change::InsertGrant(g) => insert_grant(conn, g).await,
        Change::UseGrant { handle_hash, at } => exec_versioned(
            conn,
            "UPDATE delegated_grants SET used_at = $1 WHERE handle_hash = $2 AND used_at IS NULL",
            vec![at.unix_micros().into(), handle_hash.clone().into()],
            GRANT,
        )
        .await,
        Change::RecordFamilyToken { family_id, jti, expires_at } => {
            lineage::record_family_token(conn, family_id, jti, *expires_at).await
        }
        Change::RevokeFamily { family_id, at } => lineage::revoke_family(conn, family_id, *at).await,
        Change::InsertTrustedIssuer(t) => exec(
            conn,
            "INSERT INTO trusted_issuers (id, issuer, jwks_json, jwks_uri, username_claim, audiences_json, accept_id_jag, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            vec![
                t.id.clone().into(),
                t.issuer.clone().into(),
                t.jwks.as_ref().map(|j| serde_json::to_string(j).unwrap_or_default()).into(),
                t.jwks_uri.clone().into(),
                t.username_claim.clone().into(),
                json(&t.audiences),
                i64::from(t.accept_id_jag).into(),
                t.created_at.unix_micros().into(),
                t.created_by.clone().into(),
            ],
            ISSUER,
        )
        .await
        .map(|_| ()),
        Change::DeleteTrustedIssuer { id } => {
            exec_versioned(conn, "DELETE FROM trusted_issuers WHERE id = $1", vec![id.clone().into()], ISSUER).await
        }
        c @ (Change::InsertX509Authority(_)
        | Change::ActivateAuthorities { .. }
        | Change::InsertFederation(_)
        | Change::DeleteFederation { .. }
        | Change::SetFederatedBundle { .. }
        | Change::InsertJwtAuthority(_)
        | Change::InsertJoinToken(_)
        | Change::UseJoinToken { .. }
        | Change::RevokeJoinTokens { .. }
        | Change::UpsertNode(_)
        | Change::BanNode { .. }
        | Change::InsertEntry(_)
        | Change::UpdateEntry { .. }
        | Change::DeleteEntry { .. }) => spiffe::apply(conn, c).await,
        Change::IntegrateAudit(i) => integrate(conn, i).await,
        Change::PruneAudit { lease, before, frontier } => {
            fence(conn, lease).await?;
            put_nodes(conn, frontier).await?;
            exec(conn, "DELETE FROM audit_events WHERE leaf_index < $1", vec![u(*before)], AUDIT).await.map(|_| ())
        }
        Change::SetSinkPosition { name, delivered } => exec(
            conn,
            "INSERT INTO audit_sinks (name, delivered) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET delivered = excluded.delivered",
            vec![name.clone().into(), i64::try_from(*delivered).unwrap_or(i64::MAX).into()],
            SINK,
        )
        .await
        .map(|_| ()),
        Change::InsertSetting { name, value } => {
            exec(conn, "INSERT INTO settings (name, value) VALUES ($1, $2)", vec![name.clone().into(), value.clone().into()], SETTING).await.map(|_| ())
        }
    }
}

fn meta_values(m: &sigil_core::model::Meta) -> [Value; 5] {
    [
        m.created_at.unix_micros().into(),
        m.updated_at.unix_micros().into(),
        m.created_by.as_str().into(),
        m.updated_by.as_str().into(),
        m.version.into(),
    ]
}

fn user_values(u: &User) -> Vec<Value> {
    let mut v: Vec<Value> = vec![
        u.id.as_str().into(),
        u.username.as_str().into(),
        u.email.as_ref().map(|e| e.to_string()).into(),
        u.display_name.as_ref().map(|e| e.to_string()).into(),
        json(&u.groups),
        u.status.as_str().into(),
    ];
    v.extend(meta_values(&u.meta));
    v.push(u.tokens_not_before.map(|t| t.unix_micros()).into());
    v
}

async fn write_groups(conn: &mut AnyConnection, u: &User) -> R {
    for g in &u.groups {
        exec(
            conn,
            "INSERT INTO user_groups (user_id, grp) VALUES ($1, $2)",
            vec![u.id.as_str().into(), g.as_str().into()],
            USER,
        )
        .await?;
    }
    Ok(())
}

fn identity_values(i: &Identity) -> Vec<Value> {
    let mut v: Vec<Value> = vec![
        i.id.as_str().into(),
        i.name.as_str().into(),
        i.kind.as_str().into(),
        i.description.as_ref().map(|e| e.to_string()).into(),
        i.owner.as_str().into(),
        i.team.as_ref().map(|e| e.to_string()).into(),
        json(&i.labels),
        i.status.as_str().into(),
        i.expires_at.map(|t| t.unix_micros()).into(),
        json(&i.ceiling),
        i.last_used_at.map(|t| t.unix_micros()).into(),
    ];
    v.extend(meta_values(&i.meta));
    v.push(i.tokens_not_before.map(|t| t.unix_micros()).into());
    v.push(i.token_ttl_seconds.map(i64::from).into());
    v.push(i64::from(i.dpop_required).into());
    v
}

async fn write_labels(conn: &mut AnyConnection, i: &Identity) -> R {
    for (k, val) in i.labels.iter() {
        exec(
            conn,
            "INSERT INTO identity_labels (identity_id, key, value) VALUES ($1, $2, $3)",
            vec![i.id.as_str().into(), k.as_str().into(), val.as_str().into()],
            IDENTITY,
        )
        .await?;
    }
    Ok(())
}

fn resource_values(r: &Resource) -> Vec<Value> {
    let mut v: Vec<Value> = vec![
        r.id.as_str().into(),
        r.uri.as_str().into(),
        r.name.as_str().into(),
        r.description.as_ref().map(|e| e.to_string()).into(),
        r.owner.as_str().into(),
        json(&r.scopes),
    ];
    v.extend(meta_values(&r.meta));
    v.push(json(&r.servers));
    v
}

fn key_values(k: &sigil_core::keys::StoredKey) -> Vec<Value> {
    vec![
        k.kid.clone().into(),
        k.alg.as_str().into(),
        k.state.as_str().into(),
        json(&k.public_jwk),
        k.sealed_private.0.clone().into(),
        k.created_at.unix_micros().into(),
        k.activate_at.unix_micros().into(),
        k.retired_at.map(|t| t.unix_micros()).into(),
        k.remove_after.map(|t| t.unix_micros()).into(),
        k.version.into(),
    ]
}

async fn insert_audit(conn: &mut AnyConnection, rec: &AuditRecord) -> R {
    let i = rec.index();
    exec(
        conn,
        "INSERT INTO audit_events (time, event_type, outcome, request_id, subject, actor, client_id, target_id, body, jti, acting_for) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        vec![
            i.time.into(),
            i.event_type.into(),
            i.outcome.into(),
            i.request_id.into(),
            i.subject.into(),
            i.actor.into(),
            i.client_id.into(),
            i.target_id.into(),
            rec.canonical_json().into(),
            i.jti.into(),
            i.acting_for.into(),
        ],
        AUDIT,
    )
    .await
    .map(|_| ())
}

fn u(v: u64) -> Value {
    Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
}

async fn acquire_lease(conn: &mut AnyConnection, l: &LeaseClaim) -> R {
    let renewed = exec(
        conn,
        "UPDATE leases SET holder = $1, expires_at = $2 WHERE name = $3 AND (holder = $4 OR expires_at < $5)",
        vec![
            l.holder.clone().into(),
            l.until.unix_micros().into(),
            l.name.clone().into(),
            l.holder.clone().into(),
            l.now.unix_micros().into(),
        ],
        LEASE,
    )
    .await?;
    if renewed > 0 {
        return Ok(());
    }
    // Only a lease that does not exist yet is inserted. Left to ON CONFLICT alone, the insert of
    // an existing lease waited for the holder's transaction whenever the holder was renewing
    // it, and if that transaction waited for one of ours (a single-use mark this batch had
    // written, say), PostgreSQL aborted one of them as a deadlock.
    let taken = exec(
        conn,
        "INSERT INTO leases (name, holder, expires_at) SELECT $1, $2, $3 \
         WHERE NOT EXISTS (SELECT 1 FROM leases WHERE name = $1) ON CONFLICT (name) DO NOTHING",
        vec![
            l.name.clone().into(),
            l.holder.clone().into(),
            l.until.unix_micros().into(),
        ],
        LEASE,
    )
    .await?;
    if taken == 0 {
        Err(StoreError::Stale { entity: "lease" })
    } else {
        Ok(())
    }
}

/// Rows per multi-row statement: well under SQLite's bound-parameter limit.
const CHUNK: usize = 64;

/// Only the lease's holder may go on (and the lease is extended). A lease that lapsed while
/// nobody took it still names its holder, and nobody else can have acted under it: whoever takes
/// a lease writes their own name into it, so the name alone is the fence.
async fn fence(conn: &mut AnyConnection, l: &LeaseClaim) -> R {
    let held = exec(
        conn,
        "UPDATE leases SET expires_at = $1 WHERE name = $2 AND holder = $3",
        vec![
            l.until.unix_micros().into(),
            l.name.clone().into(),
            l.holder.clone().into(),
        ],
        LEASE,
    )
    .await?;
    if held == 0 {
        Err(StoreError::Stale { entity: "lease" })
    } else {
        Ok(())
    }
}

async fn integrate(conn: &mut AnyConnection, i: &Integration) -> R {
    fence(conn, &i.lease).await?;
    for chunk in i.leaves.chunks(CHUNK) {
        let done = set_leaves(Placeholders::for_connection(conn), chunk)
            .query()
            .execute(&mut *conn)
            .await
            .map_err(|e| map(e, AUDIT))?
            .rows_affected();
        if done != chunk.len() as u64 {
            return Err(StoreError::Stale { entity: "audit record" });
        }
    }
    put_nodes(conn, &i.nodes).await?;
    if let Some(c) = &i.checkpoint {
        exec(
            conn,
            "INSERT INTO audit_checkpoints (tree_size, root_hash, time, kid, jws) VALUES ($1, $2, $3, $4, $5)",
            vec![
                u(c.tree_size),
                c.root_hash.to_vec().into(),
                c.time.unix_micros().into(),
                c.kid.clone().into(),
                c.jws.clone().into(),
            ],
            CHECKPOINT,
        )
        .await?;
    }
    Ok(())
}

/// Stores tree nodes. Rebuilt nodes overlap the ones that survived, and replace any that were
/// corrupted: they were derived from leaf hashes that match the last signed checkpoint.
async fn put_nodes(conn: &mut AnyConnection, nodes: &[(u32, u64, [u8; 32])]) -> R {
    for chunk in nodes.chunks(CHUNK) {
        let mut q = Sql::on(conn, "INSERT INTO audit_tree_nodes (level, idx, hash) VALUES ");
        for (n, (level, idx, hash)) in chunk.iter().enumerate() {
            q.push(if n == 0 { "(" } else { ", (" })
                .bind(i64::from(*level))
                .push(", ")
                .bind(u(*idx))
                .push(", ")
                .bind(hash.to_vec())
                .push(")");
        }
        q.push(" ON CONFLICT (level, idx) DO UPDATE SET hash = excluded.hash");
        q.query().execute(&mut *conn).await.map_err(|e| map(e, NODE))?;
    }
    Ok(())
}

/// Gives pending records their leaf index and hash, in one statement; a record that already
/// has a leaf is left alone (the caller compares the count of rows changed).
fn set_leaves(placeholders: Placeholders, leaves: &[(i64, u64, [u8; 32])]) -> Sql {
    let mut q = Sql::with(
        placeholders,
        "UPDATE audit_events SET leaf_index = v.column2, leaf_hash = v.column3 FROM (VALUES ",
    );
    for (n, (seq, index, hash)) in leaves.iter().enumerate() {
        q.push(if n == 0 { "(" } else { ", (" })
            .bind(*seq)
            .push(", ")
            .bind(u(*index))
            .push(", ")
            .bind(hash.to_vec())
            .push(")");
    }
    // `COALESCE(…) = -1`, not `leaf_index IS NULL`: given the latter, SQLite 3.50 read every
    // pending record through an index for each statement (the leaf index, which held them before
    // migration 17) (a backlog of 100,000 made a
    // 64-row step take 300 ms, so integration fell further behind the more it had to do); this
    // form leaves it one rowid lookup per value.
    q.push(") AS v WHERE audit_events.seq = v.column1 AND COALESCE(audit_events.leaf_index, -1) = -1");
    q
}

/// Inserts many audit records with multi-row statements (the group committer's fast path for
/// change sets that are only audit records).
pub async fn insert_audit_many(conn: &mut AnyConnection, records: &[&AuditRecord]) -> R {
    // Each row count is a statement text of its own, prepared and cached per connection (sqlx
    // keeps 100): small chunks keep the variants few.
    const ROWS: usize = 16;
    for chunk in records.chunks(ROWS) {
        let mut q = Sql::on(
            conn,
            "INSERT INTO audit_events (time, event_type, outcome, request_id, subject, actor, client_id, target_id, body, jti, acting_for) VALUES ",
        );
        for (n, rec) in chunk.iter().enumerate() {
            let i = rec.index();
            q.push(if n == 0 { "(" } else { ", (" });
            q.bind(i.time).push(", ");
            q.bind(i.event_type).push(", ");
            q.bind(i.outcome).push(", ");
            q.bind(i.request_id).push(", ");
            q.bind(i.subject).push(", ");
            q.bind(i.actor).push(", ");
            q.bind(i.client_id).push(", ");
            q.bind(i.target_id).push(", ");
            q.bind(rec.canonical_json()).push(", ");
            q.bind(i.jti).push(", ");
            q.bind(i.acting_for).push(")");
        }
        q.query().execute(&mut *conn).await.map_err(|e| map(e, AUDIT))?;
    }
    Ok(())
}

async fn insert_grant(conn: &mut AnyConnection, g: &sigil_core::oauth::grant::Grant) -> R {
    exec(
        conn,
        "INSERT INTO grant_families (family_id) VALUES ($1) ON CONFLICT (family_id) DO NOTHING",
        vec![g.family_id.clone().into()],
        GRANT,
    )
    .await?;
    exec(
        conn,
        "INSERT INTO delegated_grants (handle_hash, kind, family_id, client_id, user_id, resource, scope, redirect_uri, code_challenge, issued_at, expires_at, used_at, openid, nonce, auth_time, dpop_jkt) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        vec![
            g.handle_hash.clone().into(),
            g.kind.as_str().into(),
            g.family_id.clone().into(),
            g.client_id.clone().into(),
            g.user_id.as_str().into(),
            g.resource.clone().into(),
            g.scope.clone().into(),
            g.redirect_uri.clone().into(),
            g.code_challenge.clone().into(),
            g.issued_at.unix_micros().into(),
            g.expires_at.unix_micros().into(),
            g.used_at.map(|t| t.unix_micros()).into(),
            i64::from(g.openid).into(),
            g.nonce.clone().into(),
            g.auth_time.unix_micros().into(),
            g.dpop_jkt.clone().into(),
        ],
        GRANT,
    )
    .await
    .map(|_| ())
}

fn client_values(c: &sigil_core::oauth::OAuthClient) -> Vec<Value> {
    vec![
        c.client_id.clone().into(),
        c.identity_id.as_str().into(),
        c.auth_method.as_str().into(),
        c.jwks
            .as_ref()
            .map(|j| serde_json::to_string(j).unwrap_or_default())
            .into(),
        c.jwks_uri.clone().into(),
        c.secret_hash.clone().into(),
        i64::from(c.dpop_required).into(),
        c.created_at.unix_micros().into(),
        c.created_by.clone().into(),
        c.version.into(),
        c.registration_token_hash.clone().into(),
        c.metadata.as_ref().map(|m| m.to_string()).into(),
        (!c.redirect_uris.is_empty())
            .then(|| serde_json::to_string(&c.redirect_uris).unwrap_or_default())
            .into(),
        (!c.id_jag_audiences.is_empty())
            .then(|| serde_json::to_string(&c.id_jag_audiences).unwrap_or_default())
            .into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use sigil_types::Timestamp;
    use sqlx::{Connection, Executor};

    fn claim(holder: &str) -> LeaseClaim {
        LeaseClaim {
            name: "audit-integrator".into(),
            holder: holder.into(),
            now: Timestamp::from_unix_seconds(1_800_000_000),
            until: Timestamp::from_unix_seconds(1_800_000_030),
        }
    }

    /// A replica asking for a lease another holds and is renewing right now is told no at once:
    /// it never waits for the holder's transaction, so it cannot close a wait cycle with it.
    #[tokio::test]
    async fn asking_for_a_held_lease_never_waits_for_its_holder() {
        let Some(url) = crate::testing::fresh_postgres_database().await else {
            return;
        };
        let mut a = AnyConnection::connect(&url).await.expect("connect");
        let mut b = AnyConnection::connect(&url).await.expect("connect");
        a.execute("CREATE TABLE leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at BIGINT NOT NULL)")
            .await
            .expect("table");
        acquire_lease(&mut a, &claim("replica-a")).await.expect("first holder");
        let mut renewing = a.begin().await.expect("begin");
        acquire_lease(&mut renewing, &claim("replica-a"))
            .await
            .expect("renewal");
        let mut asking = b.begin().await.expect("begin");
        let answer = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            acquire_lease(&mut asking, &claim("replica-b")),
        )
        .await
        .expect("the other replica waited for the holder's transaction");
        assert!(
            matches!(answer, Err(StoreError::Stale { entity: "lease" })),
            "{answer:?}"
        );
        renewing.commit().await.expect("commit");
        asking.rollback().await.expect("rollback");
    }

    /// Each chunk of a purge finds its rows through the table's expiry index and deletes them by
    /// key, whatever the table holds: the plan, not a timing, is what can be checked.
    #[tokio::test]
    async fn purges_find_expired_rows_through_the_expiry_indexes() {
        let pool = crate::migrate::memory_database().await;
        for table in purge::EXPIRING {
            let chunk = table.delete_oldest(Placeholders::Anonymous, 1, 10);
            let plan = crate::testing::sqlite_plan(&pool, &chunk.text, chunk.values).await;
            let index = format!("INDEX {}_expiry (expires_at<?)", table.table);
            assert!(plan.contains(&index), "{plan}");
            assert!(!plan.contains("SCAN"), "{plan}");
        }
    }

    /// The integration statement must find each record by its rowid whatever the backlog; the
    /// plan, not a timing, is what can be checked.
    #[tokio::test]
    async fn setting_leaves_looks_records_up_by_rowid() {
        let pool = crate::migrate::memory_database().await;
        let leaves: Vec<(i64, u64, [u8; 32])> = (1..=64).map(|n| (n, n as u64 - 1, [0u8; 32])).collect();
        let update = set_leaves(Placeholders::Anonymous, &leaves);
        let plan = crate::testing::sqlite_plan(&pool, &update.text, update.values).await;
        assert!(plan.contains("audit_events USING INTEGER PRIMARY KEY"), "{plan}");
        assert!(!plan.contains("audit_events_leaf"), "{plan}");
    }
}
