//! Admin API (`/admin/v1/…`) bodies.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sigil_types::{
    Ceiling, Description, DisplayName, Email, Group, IdentityKind, IdentityStatus, Labels, Name, Reason, ResourceUri,
    ScopeSet, TeamName, Timestamp, UserStatus, Username,
};

use crate::{Patch, patch};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub username: Username,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Email>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<DisplayName>,
    #[serde(default)]
    pub groups: BTreeSet<Group>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<UserStatus>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    #[serde(default, deserialize_with = "patch", skip_serializing_if = "Option::is_none")]
    pub email: Patch<Email>,
    #[serde(default, deserialize_with = "patch", skip_serializing_if = "Option::is_none")]
    pub display_name: Patch<DisplayName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<BTreeSet<Group>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<UserStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserView {
    pub id: String,
    pub username: Username,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Email>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<DisplayName>,
    pub groups: BTreeSet<Group>,
    pub status: UserStatus,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub created_by: String,
    pub updated_by: String,
    pub version: i64,
}

/// Body of `POST /admin/v1/agents` and `POST /admin/v1/workloads`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateIdentity {
    pub name: Name,
    /// Defaults to `agent` for agents and `service` for workloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<IdentityKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<Description>,
    /// The owning user, by username or id. Required: every identity has a human owner.
    pub owner: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<TeamName>,
    #[serde(default)]
    pub labels: Labels,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    #[serde(default)]
    pub ceiling: Ceiling,
    /// Access-token lifetime in seconds (10 to the server's maximum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ttl_seconds: Option<u32>,
    /// Require DPoP-bound tokens for every client of this identity.
    #[serde(default)]
    pub dpop_required: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateIdentity {
    #[serde(default, deserialize_with = "patch", skip_serializing_if = "Option::is_none")]
    pub description: Patch<Description>,
    /// New owner (transfer of ownership), by username or id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, deserialize_with = "patch", skip_serializing_if = "Option::is_none")]
    pub team: Patch<TeamName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Labels>,
    #[serde(default, deserialize_with = "patch", skip_serializing_if = "Option::is_none")]
    pub expires_at: Patch<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ceiling: Option<Ceiling>,
    #[serde(default, deserialize_with = "patch", skip_serializing_if = "Option::is_none")]
    pub token_ttl_seconds: Patch<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_required: Option<bool>,
}

/// Optional body of the status-change endpoints (`…/suspend`, `…/revoke`, …).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusChangeRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityView {
    pub id: String,
    pub name: Name,
    pub kind: IdentityKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<Description>,
    pub owner: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<TeamName>,
    pub labels: Labels,
    pub status: IdentityStatus,
    /// `status`, except that an expired active identity counts as suspended.
    pub effective_status: IdentityStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    pub ceiling: Ceiling,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ttl_seconds: Option<u32>,
    pub dpop_required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub created_by: String,
    pub updated_by: String,
    pub version: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateResource {
    pub uri: ResourceUri,
    pub name: Name,
    pub owner: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<Description>,
    #[serde(default)]
    pub scopes: ScopeSet,
    /// Identities (names or ids) that serve the resource: their clients may introspect its
    /// tokens.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateResource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Name>,
    #[serde(default, deserialize_with = "patch", skip_serializing_if = "Option::is_none")]
    pub description: Patch<Description>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<ScopeSet>,
    /// Replaces the serving identities (an empty list clears them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub servers: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceView {
    pub id: String,
    pub uri: ResourceUri,
    pub name: Name,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<Description>,
    pub owner: String,
    pub scopes: ScopeSet,
    /// Ids of the identities that serve the resource.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub created_by: String,
    pub updated_by: String,
    pub version: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyView {
    pub kid: String,
    pub alg: String,
    pub state: String,
    pub created_at: Timestamp,
    pub activate_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_after: Option<Timestamp>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateKeyRequest {
    /// `EdDSA` or `ES256`; defaults to the configured algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
}

/// One page of a listing; pass `next_cursor` back as `cursor` for the next page.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListResponse<T> {
    pub items: Vec<T>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// One audit record as the admin API shows it: its sequence number, its place in the tree once
/// integrated, and the record itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntryView {
    pub seq: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf_index: Option<u64>,
    pub record: serde_json::Value,
}

/// An integrated record exactly as stored, for export and offline verification.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeafView {
    pub leaf_index: u64,
    /// Hex SHA-256 leaf hash (RFC 9162 §2.1.1).
    pub leaf_hash: String,
    /// The record's stored canonical JSON, byte for byte.
    pub body: String,
    /// The columns the record is found by, as stored: verification checks they agree with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<AuditIndex>,
}

/// What a stored audit record is searched and traced by. Derived from the record when it is
/// written and never evidence itself, so verification checks that it still says what the
/// record says: otherwise editing a column could hide a record from search and trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditIndex {
    /// Microseconds since the Unix epoch.
    pub time: i64,
    pub event_type: String,
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// The agents the actor acts for (the record's actors after the first), space-delimited with
    /// a space at each end, so a sub-agent's action is found under every agent of its chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acting_for: Option<String>,
}

/// A signed tree head.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointView {
    pub tree_size: u64,
    /// Hex root hash.
    pub root_hash: String,
    pub time: Timestamp,
    pub kid: String,
    /// Compact JWS (`typ` `sigil-audit-checkpoint+jwt`) over {iss, tree_size, root_hash, iat}.
    pub jws: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionProofView {
    pub leaf_index: u64,
    pub tree_size: u64,
    pub leaf_hash: String,
    pub root_hash: String,
    /// Hex hashes, leaf to root (RFC 9162 §2.1.3).
    pub proof: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyProofView {
    pub first: u64,
    pub second: u64,
    pub first_root: String,
    pub second_root: String,
    /// Hex hashes (RFC 9162 §2.1.4).
    pub proof: Vec<String>,
}

/// The start of the stored log after retention pruned older records.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditBaseView {
    /// The first leaf still stored.
    pub tree_size: u64,
    /// The frontier of the pruned prefix: (level, index, hex hash) of its perfect subtrees.
    pub frontier: Vec<(u32, u64, String)>,
}

/// Body of `POST /admin/v1/entries` and `PUT /admin/v1/entries/{id}` (a SPIFFE registration
/// entry; PUT replaces every field).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryRequest {
    pub spiffe_id: String,
    /// The node whose agent may hand the SVID out.
    pub parent_id: String,
    /// `type:value`, e.g. `unix:uid:1000`; all must match.
    pub selectors: Vec<String>,
    /// The agent or workload (name or id) the SVID stands for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x509_ttl_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_ttl_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_names: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryView {
    pub id: String,
    pub spiffe_id: String,
    pub parent_id: String,
    pub selectors: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    pub x509_ttl_seconds: u64,
    pub jwt_ttl_seconds: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_names: Vec<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub version: i64,
}

/// Body of `PUT /admin/v1/users/{user}/password`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetPassword {
    pub password: String,
}

impl std::fmt::Debug for SetPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SetPassword { password: <redacted> }")
    }
}

/// Body of `POST /admin/v1/trusted-issuers`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTrustedIssuer {
    /// The identity provider's issuer identifier (its tokens' `iss`).
    pub issuer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// The claim holding the Sigil username: sub (default), preferred_username, email or upn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_claim: Option<String>,
    /// Accepted `aud` values of its ID and access tokens (default: Sigil's issuer).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Redeem its Identity Assertion JWT Authorization Grants (ID-JAG).
    #[serde(default)]
    pub accept_id_jag: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedIssuerView {
    pub id: String,
    pub issuer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    pub username_claim: String,
    pub audiences: Vec<String>,
    pub accept_id_jag: bool,
    pub created_at: Timestamp,
    pub created_by: String,
}

/// Body of `POST /admin/v1/clients`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateClient {
    /// The agent or workload (name or id) the client belongs to.
    pub identity: String,
    /// `private_key_jwt`, `client_secret_basic` or `client_secret_post` (RFC 7591 names).
    pub token_endpoint_auth_method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// RFC 9449 §5.2 name: every token of this client must be DPoP-bound.
    #[serde(default)]
    pub dpop_bound_access_tokens: bool,
    /// Redirect URIs for the authorization code grant (exact match).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redirect_uris: Vec<String>,
    /// Authorization servers (issuer identifiers) this client may get ID-JAGs for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub id_jag_audiences: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientView {
    pub client_id: String,
    pub identity: String,
    pub token_endpoint_auth_method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    pub dpop_bound_access_tokens: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redirect_uris: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub id_jag_audiences: Vec<serde_json::Value>,
    pub created_at: Timestamp,
    pub created_by: String,
    /// Only in the response that created the client: shown once, never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

/// Body of `POST /admin/v1/tokens/revoke` and `/introspect`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub token: String,
}

/// Body of `POST /admin/v1/registration-tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRegistrationToken {
    /// The user who will own what gets registered.
    pub owner: String,
    /// Register clients under this existing identity (default: a new agent per client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Lifetime in seconds (default 3600, at most 30 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

/// An initial access token in a list: everything but the token itself, which is shown only
/// when it is created.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationTokenSummary {
    pub id: String,
    pub owner: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    pub expires_at: Timestamp,
    pub created_at: Timestamp,
    pub created_by: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationTokenView {
    pub id: String,
    /// The initial access token: shown once.
    pub token: String,
    pub owner: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    pub expires_at: Timestamp,
    pub registration_endpoint: String,
}
