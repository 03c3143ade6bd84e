//! Rows → domain types. A row that does not parse is reported as corrupt, never trusted.

use std::collections::BTreeSet;

use sigil_core::admin_auth::AdminCredential;
use sigil_core::audit::{AuditRecord, Checkpoint};
use sigil_core::keys::{KeyState, StoredKey};
use sigil_core::model::{Identity, Meta, Principal, Resource, User};
use sigil_core::store::{StoreError, StoredAudit, StoredLeaf};
use sigil_crypto::{Algorithm, SealedBlob};
use sigil_types::{
    Ceiling, Description, DisplayName, Email, Group, IdentityId, IdentityKind, IdentityStatus, Labels, Name,
    ResourceId, ResourceUri, ScopeSet, TeamName, Timestamp, UserId, UserStatus, Username,
};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::errors::corrupt;

pub const USER_COLS: &str = "id, username, email, display_name, groups_json, status, created_at, updated_at, created_by, updated_by, version, tokens_not_before";
pub const IDENTITY_COLS: &str = "id, name, kind, description, owner_id, team, labels_json, status, expires_at, ceiling_json, last_used_at, created_at, updated_at, created_by, updated_by, version, tokens_not_before, token_ttl_seconds, dpop_required";
pub const RESOURCE_COLS: &str = "id, uri, name, description, owner_id, scopes_json, created_at, updated_at, created_by, updated_by, version, servers_json";
pub const KEY_COLS: &str =
    "kid, alg, state, public_jwk, sealed_private, created_at, activate_at, retired_at, remove_after, version";

fn get<T>(row: &AnyRow, col: &str) -> Result<T, StoreError>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get::<T, _>(col).map_err(|e| corrupt(col, e))
}

fn parse<T, E: std::fmt::Display>(col: &str, r: Result<T, E>) -> Result<T, StoreError> {
    r.map_err(|e| corrupt(col, e))
}

fn opt_parse<T, E: std::fmt::Display>(
    row: &AnyRow,
    col: &str,
    f: impl Fn(&str) -> Result<T, E>,
) -> Result<Option<T>, StoreError> {
    get::<Option<String>>(row, col)?.map(|s| parse(col, f(&s))).transpose()
}

fn json<T: serde::de::DeserializeOwned>(row: &AnyRow, col: &str) -> Result<T, StoreError> {
    parse(col, serde_json::from_str(&get::<String>(row, col)?))
}

fn ts(row: &AnyRow, col: &str) -> Result<Timestamp, StoreError> {
    Ok(Timestamp::from_unix_micros(get::<i64>(row, col)?))
}

fn opt_ts(row: &AnyRow, col: &str) -> Result<Option<Timestamp>, StoreError> {
    Ok(get::<Option<i64>>(row, col)?.map(Timestamp::from_unix_micros))
}

fn meta(row: &AnyRow) -> Result<Meta, StoreError> {
    Ok(Meta {
        created_at: ts(row, "created_at")?,
        updated_at: ts(row, "updated_at")?,
        created_by: Principal::from_stored(get(row, "created_by")?),
        updated_by: Principal::from_stored(get(row, "updated_by")?),
        version: get(row, "version")?,
    })
}

pub fn user(row: &AnyRow) -> Result<User, StoreError> {
    Ok(User {
        id: parse("id", UserId::parse(&get::<String>(row, "id")?))?,
        username: parse("username", Username::parse(&get::<String>(row, "username")?))?,
        email: opt_parse(row, "email", Email::parse)?,
        display_name: opt_parse(row, "display_name", DisplayName::parse)?,
        groups: json::<BTreeSet<Group>>(row, "groups_json")?,
        status: parse("status", UserStatus::parse(&get::<String>(row, "status")?))?,
        tokens_not_before: opt_ts(row, "tokens_not_before")?,
        meta: meta(row)?,
    })
}

pub fn identity(row: &AnyRow) -> Result<Identity, StoreError> {
    Ok(Identity {
        id: parse("id", IdentityId::parse(&get::<String>(row, "id")?))?,
        name: parse("name", Name::parse(&get::<String>(row, "name")?))?,
        kind: parse("kind", IdentityKind::parse(&get::<String>(row, "kind")?))?,
        description: opt_parse(row, "description", Description::parse)?,
        owner: parse("owner_id", UserId::parse(&get::<String>(row, "owner_id")?))?,
        team: opt_parse(row, "team", TeamName::parse)?,
        labels: json::<Labels>(row, "labels_json")?,
        status: parse("status", IdentityStatus::parse(&get::<String>(row, "status")?))?,
        expires_at: opt_ts(row, "expires_at")?,
        ceiling: json::<Ceiling>(row, "ceiling_json")?,
        last_used_at: opt_ts(row, "last_used_at")?,
        tokens_not_before: opt_ts(row, "tokens_not_before")?,
        token_ttl_seconds: get::<Option<i64>>(row, "token_ttl_seconds")?.and_then(|t| u32::try_from(t).ok()),
        dpop_required: get::<i64>(row, "dpop_required")? != 0,
        meta: meta(row)?,
    })
}

pub fn resource(row: &AnyRow) -> Result<Resource, StoreError> {
    Ok(Resource {
        id: parse("id", ResourceId::parse(&get::<String>(row, "id")?))?,
        uri: parse("uri", ResourceUri::parse(&get::<String>(row, "uri")?))?,
        name: parse("name", Name::parse(&get::<String>(row, "name")?))?,
        description: opt_parse(row, "description", Description::parse)?,
        owner: parse("owner_id", UserId::parse(&get::<String>(row, "owner_id")?))?,
        scopes: json::<ScopeSet>(row, "scopes_json")?,
        servers: json::<Vec<IdentityId>>(row, "servers_json")?,
        meta: meta(row)?,
    })
}

pub fn key(row: &AnyRow) -> Result<StoredKey, StoreError> {
    let alg: String = get(row, "alg")?;
    Ok(StoredKey {
        kid: get(row, "kid")?,
        alg: Algorithm::parse(&alg).ok_or_else(|| corrupt("alg", alg))?,
        state: parse("state", KeyState::parse(&get::<String>(row, "state")?))?,
        public_jwk: json(row, "public_jwk")?,
        sealed_private: SealedBlob(get(row, "sealed_private")?),
        created_at: ts(row, "created_at")?,
        activate_at: ts(row, "activate_at")?,
        retired_at: opt_ts(row, "retired_at")?,
        remove_after: opt_ts(row, "remove_after")?,
        version: get(row, "version")?,
    })
}

pub fn admin_credential(row: &AnyRow) -> Result<AdminCredential, StoreError> {
    Ok(AdminCredential {
        id: get(row, "id")?,
        name: get(row, "name")?,
        token_hash: get(row, "token_hash")?,
        created_at: ts(row, "created_at")?,
    })
}

/// The audit columns besides the body, which is selected as bytes ([`Dialect::audit_body_bytes`]).
///
/// [`Dialect::audit_body_bytes`]: crate::dialect::Dialect::audit_body_bytes
pub const AUDIT_COLS: &str = "seq, leaf_index, leaf_hash";
/// An integrated record with the columns it is indexed by, for verification (and the body).
pub const LEAF_COLS: &str = "seq, leaf_index, leaf_hash, time, event_type, outcome, request_id, subject, actor, client_id, target_id, jti, acting_for";

/// The stored body as text. Bytes that are not UTF-8 (only an edit behind the server's back
/// makes them) become U+FFFD, so the record no longer matches its leaf hash and is named.
fn audit_body(row: &AnyRow) -> Result<String, StoreError> {
    let bytes: Vec<u8> = get(row, "body")?;
    Ok(String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

pub fn audit(row: &AnyRow) -> Result<StoredAudit, StoreError> {
    let body = audit_body(row)?;
    let leaf_hash = get::<Option<Vec<u8>>>(row, "leaf_hash")?
        .map(|h| <[u8; 32]>::try_from(h.as_slice()).map_err(|_| corrupt("leaf_hash", "not 32 bytes")))
        .transpose()?;
    Ok(StoredAudit {
        seq: get(row, "seq")?,
        leaf_index: get::<Option<i64>>(row, "leaf_index")?.map(|i| u64::try_from(i).unwrap_or(0)),
        leaf_hash,
        record: parse("body", serde_json::from_str::<AuditRecord>(&body))?,
        body,
    })
}

pub fn leaf(row: &AnyRow) -> Result<StoredLeaf, StoreError> {
    let h: Vec<u8> = get(row, "leaf_hash")?;
    Ok(StoredLeaf {
        seq: get(row, "seq")?,
        leaf_index: u64::try_from(get::<i64>(row, "leaf_index")?).map_err(|e| corrupt("leaf_index", e))?,
        leaf_hash: h
            .as_slice()
            .try_into()
            .map_err(|_| corrupt("leaf_hash", "not 32 bytes"))?,
        body: audit_body(row)?,
        index: sigil_core::audit::AuditIndex {
            time: get(row, "time")?,
            event_type: get(row, "event_type")?,
            outcome: get(row, "outcome")?,
            request_id: get(row, "request_id")?,
            subject: get(row, "subject")?,
            actor: get(row, "actor")?,
            client_id: get(row, "client_id")?,
            target_id: get(row, "target_id")?,
            jti: get(row, "jti")?,
            acting_for: get(row, "acting_for")?,
        },
    })
}

pub fn checkpoint(row: &AnyRow) -> Result<Checkpoint, StoreError> {
    let root: Vec<u8> = get(row, "root_hash")?;
    Ok(Checkpoint {
        tree_size: u64::try_from(get::<i64>(row, "tree_size")?).unwrap_or(0),
        root_hash: root
            .as_slice()
            .try_into()
            .map_err(|_| corrupt("root_hash", "not 32 bytes"))?,
        time: ts(row, "time")?,
        kid: get(row, "kid")?,
        jws: get(row, "jws")?,
    })
}

pub const CLIENT_COLS: &str = "client_id, identity_id, auth_method, jwks_json, jwks_uri, secret_hash, dpop_required, created_at, created_by, version, registration_token_hash, metadata_json, redirect_uris_json, id_jag_audiences_json";

pub fn client(row: &AnyRow) -> Result<sigil_core::oauth::OAuthClient, StoreError> {
    let jwks: Option<String> = get(row, "jwks_json")?;
    Ok(sigil_core::oauth::OAuthClient {
        client_id: get(row, "client_id")?,
        identity_id: parse("identity_id", IdentityId::parse(&get::<String>(row, "identity_id")?))?,
        auth_method: parse(
            "auth_method",
            sigil_core::oauth::ClientAuthMethod::parse(&get::<String>(row, "auth_method")?),
        )?,
        jwks: jwks.map(|j| parse("jwks_json", serde_json::from_str(&j))).transpose()?,
        jwks_uri: get(row, "jwks_uri")?,
        secret_hash: get(row, "secret_hash")?,
        dpop_required: get::<i64>(row, "dpop_required")? != 0,
        registration_token_hash: get(row, "registration_token_hash")?,
        metadata: get::<Option<String>>(row, "metadata_json")?
            .map(|m| parse("metadata_json", serde_json::from_str(&m)))
            .transpose()?,
        redirect_uris: get::<Option<String>>(row, "redirect_uris_json")?
            .map(|m| parse("redirect_uris_json", serde_json::from_str(&m)))
            .transpose()?
            .unwrap_or_default(),
        id_jag_audiences: get::<Option<String>>(row, "id_jag_audiences_json")?
            .map(|m| parse("id_jag_audiences_json", serde_json::from_str(&m)))
            .transpose()?
            .unwrap_or_default(),
        created_at: ts(row, "created_at")?,
        created_by: get(row, "created_by")?,
        version: get(row, "version")?,
    })
}

pub fn registration_token(row: &AnyRow) -> Result<sigil_core::oauth::client::RegistrationToken, StoreError> {
    Ok(sigil_core::oauth::client::RegistrationToken {
        id: get(row, "id")?,
        token_hash: get(row, "token_hash")?,
        owner: parse("owner_id", UserId::parse(&get::<String>(row, "owner_id")?))?,
        identity: get::<Option<String>>(row, "identity_id")?
            .map(|i| parse("identity_id", IdentityId::parse(&i)))
            .transpose()?,
        expires_at: ts(row, "expires_at")?,
        created_at: ts(row, "created_at")?,
        created_by: get(row, "created_by")?,
    })
}

pub fn policy_version(row: &AnyRow) -> Result<sigil_core::policy::PolicyVersion, StoreError> {
    Ok(sigil_core::policy::PolicyVersion {
        version: parse("version", u64::try_from(get::<i64>(row, "version")?))?,
        policies: get(row, "policies")?,
        schema: get(row, "schema_text")?,
        description: get(row, "description")?,
        created_at: ts(row, "created_at")?,
        created_by: get(row, "created_by")?,
    })
}

pub fn policy_activation(row: &AnyRow) -> Result<sigil_core::policy::PolicyActivation, StoreError> {
    Ok(sigil_core::policy::PolicyActivation {
        seq: get(row, "seq")?,
        version: parse("version", u64::try_from(get::<i64>(row, "version")?))?,
        activated_at: ts(row, "activated_at")?,
        activated_by: get(row, "activated_by")?,
    })
}

pub fn grant(row: &AnyRow) -> Result<sigil_core::oauth::grant::Grant, StoreError> {
    let kind: String = get(row, "kind")?;
    Ok(sigil_core::oauth::grant::Grant {
        handle_hash: get(row, "handle_hash")?,
        kind: sigil_core::oauth::grant::GrantKind::parse(&kind).ok_or_else(|| corrupt("kind", kind))?,
        family_id: get(row, "family_id")?,
        client_id: get(row, "client_id")?,
        user_id: parse("user_id", UserId::parse(&get::<String>(row, "user_id")?))?,
        resource: get(row, "resource")?,
        scope: get(row, "scope")?,
        redirect_uri: get(row, "redirect_uri")?,
        code_challenge: get(row, "code_challenge")?,
        openid: get::<i64>(row, "openid")? != 0,
        nonce: get(row, "nonce")?,
        auth_time: ts(row, "auth_time")?,
        dpop_jkt: get(row, "dpop_jkt")?,
        issued_at: ts(row, "issued_at")?,
        expires_at: ts(row, "expires_at")?,
        used_at: opt_ts(row, "used_at")?,
        family_revoked: opt_ts(row, "revoked_at")?.is_some(),
    })
}

pub fn trusted_issuer(row: &AnyRow) -> Result<sigil_core::oauth::trusted::TrustedIssuer, StoreError> {
    Ok(sigil_core::oauth::trusted::TrustedIssuer {
        id: get(row, "id")?,
        issuer: get(row, "issuer")?,
        jwks: get::<Option<String>>(row, "jwks_json")?
            .map(|j| parse("jwks_json", serde_json::from_str(&j)))
            .transpose()?,
        jwks_uri: get(row, "jwks_uri")?,
        username_claim: get(row, "username_claim")?,
        audiences: parse(
            "audiences_json",
            serde_json::from_str(&get::<String>(row, "audiences_json")?),
        )?,
        accept_id_jag: get::<i64>(row, "accept_id_jag")? != 0,
        created_at: ts(row, "created_at")?,
        created_by: get(row, "created_by")?,
    })
}

pub fn federation(row: &AnyRow) -> Result<sigil_core::spiffe::federation::Federation, StoreError> {
    Ok(sigil_core::spiffe::federation::Federation {
        trust_domain: parse(
            "trust_domain",
            sigil_types::TrustDomain::parse(&get::<String>(row, "trust_domain")?),
        )?,
        bundle_endpoint: get(row, "bundle_endpoint")?,
        bundle_json: get(row, "bundle_json")?,
        refreshed_at: opt_ts(row, "refreshed_at")?,
        last_error: get(row, "last_error")?,
        created_at: ts(row, "created_at")?,
        created_by: get(row, "created_by")?,
    })
}

pub fn jwt_authority(row: &AnyRow) -> Result<sigil_core::spiffe::StoredJwtAuthority, StoreError> {
    Ok(sigil_core::spiffe::StoredJwtAuthority {
        kid: get(row, "kid")?,
        sealed_key: sigil_crypto::SealedBlob(get(row, "sealed_key")?),
        status: get(row, "status")?,
        created_at: ts(row, "created_at")?,
    })
}

pub fn x509_authority(row: &AnyRow) -> Result<sigil_core::spiffe::StoredAuthority, StoreError> {
    Ok(sigil_core::spiffe::StoredAuthority {
        id: get(row, "id")?,
        cert_der: get(row, "cert_der")?,
        sealed_key: sigil_crypto::SealedBlob(get(row, "sealed_key")?),
        upstream_der: get(row, "upstream_der")?,
        status: get(row, "status")?,
        not_after: ts(row, "not_after")?,
        created_at: ts(row, "created_at")?,
    })
}

pub const JOIN_TOKEN_COLS: &str = "token_hash, spiffe_id, expires_at, created_at, created_by, used_at";

pub fn join_token(row: &AnyRow) -> Result<sigil_core::spiffe::nodes::JoinToken, StoreError> {
    Ok(sigil_core::spiffe::nodes::JoinToken {
        token_hash: get(row, "token_hash")?,
        spiffe_id: parse(
            "spiffe_id",
            sigil_types::SpiffeId::parse(&get::<String>(row, "spiffe_id")?),
        )?,
        expires_at: ts(row, "expires_at")?,
        created_at: ts(row, "created_at")?,
        created_by: get(row, "created_by")?,
        used_at: opt_ts(row, "used_at")?,
    })
}

pub const NODE_COLS: &str = "spiffe_id, method, attested_at, svid_serial, svid_expires_at, banned_at";

pub fn node(row: &AnyRow) -> Result<sigil_core::spiffe::nodes::AttestedNode, StoreError> {
    Ok(sigil_core::spiffe::nodes::AttestedNode {
        spiffe_id: parse(
            "spiffe_id",
            sigil_types::SpiffeId::parse(&get::<String>(row, "spiffe_id")?),
        )?,
        method: get(row, "method")?,
        attested_at: ts(row, "attested_at")?,
        svid_serial: get(row, "svid_serial")?,
        svid_expires_at: ts(row, "svid_expires_at")?,
        banned_at: opt_ts(row, "banned_at")?,
    })
}

pub const ENTRY_COLS: &str = "id, spiffe_id, parent_id, selectors_json, identity_id, x509_ttl, jwt_ttl, dns_json, created_at, updated_at, created_by, updated_by, version";

pub fn entry(row: &AnyRow) -> Result<sigil_core::spiffe::entries::RegistrationEntry, StoreError> {
    use sigil_core::spiffe::entries::Selector;
    let selectors: Vec<String> = parse(
        "selectors_json",
        serde_json::from_str(&get::<String>(row, "selectors_json")?),
    )?;
    let secs = |col: &str| -> Result<std::time::Duration, StoreError> {
        Ok(std::time::Duration::from_secs(
            u64::try_from(get::<i64>(row, col)?).unwrap_or(0),
        ))
    };
    Ok(sigil_core::spiffe::entries::RegistrationEntry {
        id: get(row, "id")?,
        spiffe_id: parse(
            "spiffe_id",
            sigil_types::SpiffeId::parse(&get::<String>(row, "spiffe_id")?),
        )?,
        parent_id: parse(
            "parent_id",
            sigil_types::SpiffeId::parse(&get::<String>(row, "parent_id")?),
        )?,
        selectors: selectors
            .iter()
            .map(|s| parse("selectors_json", Selector::parse(s)))
            .collect::<Result<_, _>>()?,
        identity_id: get::<Option<String>>(row, "identity_id")?
            .map(|i| parse("identity_id", IdentityId::parse(&i)))
            .transpose()?,
        x509_ttl: secs("x509_ttl")?,
        jwt_ttl: secs("jwt_ttl")?,
        dns_names: parse("dns_json", serde_json::from_str(&get::<String>(row, "dns_json")?))?,
        meta: meta(row)?,
    })
}
