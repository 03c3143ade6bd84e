//! The node API: what a node agent (`sigil node`) and the server say to each other. Binary
//! values (CSRs, certificates) are standard base64 of DER. Every call but attestation carries a
//! node proof in `Authorization: SigilNode <jws>`.

use serde::{Deserialize, Serialize};

/// The authorization scheme of node proofs.
pub const NODE_AUTH_SCHEME: &str = "SigilNode";

/// `POST /spiffe/v1/node/attest`: a one-time join token and a CSR for the node's own key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestRequest {
    pub join_token: String,
    pub csr: String,
}

/// `POST /spiffe/v1/node/renew`: a CSR for the node's next key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    pub csr: String,
}

/// An X509-SVID: the leaf certificate (base64 DER) and its expiry (unix seconds).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct X509SvidView {
    pub spiffe_id: String,
    pub cert: String,
    /// Intermediate CA certificates to present after it (under an upstream CA).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<String>,
    pub expires_at: i64,
}

/// A registration entry as a node needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    pub id: String,
    pub spiffe_id: String,
    pub selectors: Vec<String>,
    pub x509_ttl_seconds: u64,
    pub jwt_ttl_seconds: u64,
}

/// `GET /spiffe/v1/node/entries`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntriesResponse {
    pub entries: Vec<NodeEntry>,
    /// The X.509 authority that signs now: when it changes (a rotation), the node re-signs
    /// every workload SVID.
    pub x509_authority: String,
    /// Federated trust domains' bundles (SPIFFE bundle documents), by `spiffe://<td>`.
    #[serde(default)]
    pub federated_bundles: std::collections::BTreeMap<String, serde_json::Value>,
}

/// `POST /admin/v1/federations`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationRequest {
    pub trust_domain: String,
    pub bundle_endpoint: String,
}

/// A federated trust domain.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationView {
    pub trust_domain: String,
    pub bundle_endpoint: String,
    /// Whether a good bundle is held.
    pub has_bundle: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refreshed_at: Option<sigil_types::Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// One SVID to sign: the entry and a CSR for the workload key the node generated.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SvidRequest {
    pub entry_id: String,
    pub csr: String,
}

/// `POST /spiffe/v1/node/x509-svids`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct X509SvidsRequest {
    pub requests: Vec<SvidRequest>,
}

/// Per entry, the SVID or why it was not signed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct X509SvidsResponse {
    pub svids: Vec<SignedSvid>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedSvid {
    pub entry_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub svid: Option<X509SvidView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The workload a node attested, as evidence for the audit trail.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// Whether a JWT-SVID request's audiences are acceptable: 1 to 16, each 1 to 512 bytes. The node
/// agent checks this before asking the server, which checks it again.
pub fn audiences_acceptable(audiences: &[String]) -> bool {
    (1..=16).contains(&audiences.len()) && audiences.iter().all(|a| (1..=512).contains(&a.len()))
}

/// `POST /spiffe/v1/node/jwt-svids`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSvidRequest {
    pub entry_id: String,
    pub audience: Vec<String>,
    #[serde(default)]
    pub workload: WorkloadInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSvidResponse {
    pub spiffe_id: String,
    pub token: String,
    pub expires_at: i64,
    /// The audience is this server, which takes a JWT-SVID once (as a client assertion): the
    /// agent hands it out once instead of caching it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub single_use: bool,
}

/// `POST /spiffe/v1/node/denials`: a workload matched no entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenialReport {
    pub workload: WorkloadInfo,
}

/// `POST /admin/v1/nodes/join-tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinTokenRequest {
    #[serde(default)]
    pub spiffe_id: Option<String>,
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinTokenView {
    pub token: String,
    pub spiffe_id: String,
    /// RFC 3339, like every time in the admin API.
    pub expires_at: sigil_types::Timestamp,
}

/// A trust domain authority, for `sigil ca list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorityView {
    /// `x509` or `jwt`.
    pub kind: String,
    pub id: String,
    /// `active`, `prepared` or `retired`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<sigil_types::Timestamp>,
}

/// An attested node, for `sigil node list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeView {
    pub spiffe_id: String,
    pub method: String,
    pub attested_at: sigil_types::Timestamp,
    pub svid_serial: String,
    pub svid_expires_at: sigil_types::Timestamp,
    pub banned: bool,
}
