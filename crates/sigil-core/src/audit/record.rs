//! Audit records: what happened, who directed it, with which credential, and why it was allowed.
//!
//! A record is written in the same store transaction as the change it describes, so a change
//! without its record cannot exist (fail closed). Secrets and token values are never recorded:
//! only their ids (`jti`, key id, fingerprints).

use serde::{Deserialize, Serialize};
use sigil_types::{ParseError, Timestamp};

use crate::model::Principal;

/// Defines the closed list of event types, so a search for an unknown type is an error.
macro_rules! event_types {
    ($($variant:ident => $text:literal),+ $(,)?) => {
        /// Every kind of event Sigil records. Later capabilities add theirs here.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventType { $($variant),+ }

        impl EventType {
            pub const ALL: &'static [EventType] = &[$(EventType::$variant),+];

            pub fn parse(s: &str) -> Result<Self, ParseError> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(ParseError { what: "event type", why: format!("unknown event type {s:?}") }),
                }
            }

            pub const fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }
    };
}

event_types! {
    UserCreated => "user.created",
    UserUpdated => "user.updated",
    UserDeleted => "user.deleted",
    IdentityCreated => "identity.created",
    IdentityUpdated => "identity.updated",
    IdentityStatusChanged => "identity.status_changed",
    IdentityOwnerTransferred => "identity.owner_transferred",
    ResourceCreated => "resource.created",
    ResourceUpdated => "resource.updated",
    ResourceDeleted => "resource.deleted",
    KeyCreated => "key.created",
    KeyActivated => "key.activated",
    KeyRetired => "key.retired",
    KeyRemoved => "key.removed",
    AdminCredentialCreated => "admin.credential_created",
    AdminAuthFailed => "admin.auth_failed",
    AuditPruned => "audit.pruned",
    ClientCreated => "client.created",
    ClientUpdated => "client.updated",
    ClientDeleted => "client.deleted",
    RegistrationTokenCreated => "registration_token.created",
    RegistrationTokenRevoked => "registration_token.revoked",
    RegistrationRefused => "registration.refused",
    TokenIssued => "token.issued",
    TokenRefused => "token.refused",
    TokenIntrospected => "token.introspected",
    TokenRevoked => "token.revoked",
    UserInfoRead => "userinfo.read",
    PolicyUploaded => "policy.uploaded",
    PolicyActivated => "policy.activated",
    AccessEvaluated => "access.evaluated",
    UserPasswordSet => "user.password_set",
    UserLoginFailed => "user.login_failed",
    AuthorizationGranted => "authorization.granted",
    AuthorizationDenied => "authorization.denied",
    GrantReused => "grant.reused",
    TokenExchanged => "token.exchanged",
    TrustedIssuerAdded => "trusted_issuer.added",
    TrustedIssuerRemoved => "trusted_issuer.removed",
    X509AuthorityCreated => "x509_authority.created",
    JwtAuthorityCreated => "jwt_authority.created",
    AuthorityActivated => "authority.activated",
    FederationAdded => "federation.added",
    FederationRemoved => "federation.removed",
    FederatedBundleUpdated => "federation.bundle_refreshed",
    EntryCreated => "entry.created",
    EntryUpdated => "entry.updated",
    EntryDeleted => "entry.deleted",
    JoinTokenCreated => "join_token.created",
    JoinTokenRevoked => "join_token.revoked",
    NodeAttested => "node.attested",
    NodeBanned => "node.banned",
    NodeAuthFailed => "node.auth_failed",
    SvidIssued => "svid.issued",
    WorkloadDenied => "workload.denied",
}

impl Serialize for EventType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// How the action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Denied,
    Error,
}

impl Outcome {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        match s {
            "success" => Ok(Self::Success),
            "denied" => Ok(Self::Denied),
            "error" => Ok(Self::Error),
            _ => Err(ParseError {
                what: "outcome",
                why: "expected one of: success, denied, error".into(),
            }),
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Denied => "denied",
            Self::Error => "error",
        }
    }
}

/// The credential used and what proves it; identifiers only, never secret values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthEvidence {
    pub method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_fingerprint: Option<String>,
}

/// What the action was done to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// `user`, `agent`, `workload`, `resource`, `key`, …
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

/// Which policy decided, for decisions made by the policy layer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyEvidence {
    pub version: String,
    #[serde(default)]
    pub determining: Vec<String>,
}

/// One audit record, before the store gives it its sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    pub time: Timestamp,
    pub event_type: EventType,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The human principal the action was for, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Who acted, outermost first: agent → sub-agent → …, or the admin principal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actors: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthEvidence>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyEvidence>,
    /// Event-specific facts (e.g. the fields an update changed, old and new status).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// `s` with every NUL replaced by U+FFFD (see [`AuditRecord::index`]).
fn storable(s: &str) -> String {
    s.replace('\0', "\u{fffd}")
}

impl AuditRecord {
    /// The columns this record is stored and found under. A NUL in a value (some are the
    /// caller's, such as a claimed client id) becomes U+FFFD here: PostgreSQL text cannot hold
    /// it, and a record must never fail to be written for it. The body keeps the exact value
    /// (JSON escapes it).
    pub fn index(&self) -> sigil_proto::admin::AuditIndex {
        let column = |v: Option<&String>| v.map(|s| storable(s));
        sigil_proto::admin::AuditIndex {
            time: self.time.unix_micros(),
            event_type: self.event_type.as_str().to_owned(),
            outcome: self.outcome.as_str().to_owned(),
            request_id: column(self.request_id.as_ref()),
            subject: column(self.subject.as_ref()),
            actor: column(self.actors.first()),
            client_id: column(self.client_id.as_ref()),
            target_id: column(self.target.as_ref().and_then(|t| t.id.as_ref())),
            jti: column(self.auth.as_ref().and_then(|a| a.jti.as_ref())),
            acting_for: match self.actors.as_slice() {
                [_, rest @ ..] if !rest.is_empty() => Some(storable(&format!(" {} ", rest.join(" ")))),
                _ => None,
            },
        }
    }

    /// A successful event by `by` at `time`; callers add target, details and evidence.
    pub fn new(time: Timestamp, event_type: EventType, by: &Principal, request_id: Option<&str>) -> Self {
        Self {
            time,
            event_type,
            outcome: Outcome::Success,
            reason: None,
            request_id: request_id.map(str::to_owned),
            subject: None,
            actors: vec![by.as_str().to_owned()],
            client_id: None,
            auth: None,
            target: None,
            action: None,
            scopes: Vec::new(),
            policy: None,
            details: serde_json::Map::new(),
        }
    }

    pub fn target(mut self, kind: &str, id: &str, name: &str) -> Self {
        self.target = Some(Target {
            kind: kind.to_owned(),
            id: Some(id.to_owned()),
            name: Some(name.to_owned()),
            ..Target::default()
        });
        self
    }

    pub fn detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    pub fn outcome(mut self, outcome: Outcome, reason: &str) -> Self {
        self.outcome = outcome;
        self.reason = Some(reason.to_owned());
        self
    }

    /// The record's canonical JSON: the exact bytes that are stored and later hashed.
    pub fn canonical_json(&self) -> String {
        // Struct fields serialize in declaration order and maps are sorted (serde_json's default
        // BTreeMap-backed Map), so the output is deterministic for a given record.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A caller's NUL never reaches an index column (PostgreSQL text cannot hold it); the body
    /// keeps the exact value, escaped.
    #[test]
    fn index_columns_hold_no_nul_and_the_body_keeps_it() {
        let mut r = AuditRecord::new(
            Timestamp::from_unix_seconds(1_800_000_000),
            EventType::TokenRefused,
            &Principal::from_stored("client".into()),
            None,
        );
        r.client_id = Some("abc\0def".into());
        assert_eq!(r.index().client_id.as_deref(), Some("abc\u{fffd}def"));
        assert!(
            r.canonical_json().contains(r#""client_id":"abc\u0000def""#),
            "{}",
            r.canonical_json()
        );
    }
}
