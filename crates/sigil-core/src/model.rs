//! The registry's entities as the domain sees them.

use std::collections::BTreeSet;

use sigil_types::{
    Ceiling, Description, DisplayName, Email, Group, IdentityId, IdentityKind, IdentityStatus, Labels, Name,
    ParseError, ResourceId, ResourceUri, ScopeSet, TeamName, Timestamp, UserId, UserStatus, Username,
};

/// Who made a change: an admin credential today, later a user or a service.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Principal(String);

impl Principal {
    pub fn admin(credential_name: &str) -> Self {
        Self(format!("admin:{credential_name}"))
    }

    /// Sigil itself (bootstrap, background maintenance).
    pub fn system() -> Self {
        Self("system".into())
    }

    /// Restores a principal read back from storage.
    pub fn from_stored(s: String) -> Self {
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Bookkeeping every entity carries. `version` drives optimistic concurrency: an update names
/// the version it read and fails if another writer got there first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub created_by: Principal,
    pub updated_by: Principal,
    pub version: i64,
}

impl Meta {
    pub fn new(now: Timestamp, by: &Principal) -> Self {
        Self {
            created_at: now,
            updated_at: now,
            created_by: by.clone(),
            updated_by: by.clone(),
            version: 1,
        }
    }

    /// The meta of the next version of an entity.
    pub fn touched(&self, now: Timestamp, by: &Principal) -> Self {
        Self {
            updated_at: now,
            updated_by: by.clone(),
            version: self.version + 1,
            ..self.clone()
        }
    }
}

/// A human.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub username: Username,
    pub email: Option<Email>,
    pub display_name: Option<DisplayName>,
    pub groups: BTreeSet<Group>,
    pub status: UserStatus,
    /// Tokens and grants issued for this user at or before this time are dead: set when she is
    /// suspended or disabled, so resuming her does not bring them back.
    pub tokens_not_before: Option<Timestamp>,
    pub meta: Meta,
}

/// An agent or workload: a non-human identity with a human owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub id: IdentityId,
    pub name: Name,
    pub kind: IdentityKind,
    pub description: Option<Description>,
    pub owner: UserId,
    pub team: Option<TeamName>,
    pub labels: Labels,
    pub status: IdentityStatus,
    pub expires_at: Option<Timestamp>,
    pub ceiling: Ceiling,
    pub last_used_at: Option<Timestamp>,
    /// Tokens issued before this time are dead: set when the identity is suspended, revoked or
    /// decommissioned, so resuming it does not bring old tokens back.
    pub tokens_not_before: Option<Timestamp>,
    /// Access-token lifetime for this identity (the server's maximum still applies).
    pub token_ttl_seconds: Option<u32>,
    /// Every token of this identity must be DPoP-bound (RFC 9449).
    pub dpop_required: bool,
    pub meta: Meta,
}

impl Identity {
    /// The status that counts for trust decisions: an expired active identity is suspended.
    pub fn effective_status(&self, now: Timestamp) -> IdentityStatus {
        match (self.status, self.expires_at) {
            (IdentityStatus::Active, Some(exp)) if exp <= now => IdentityStatus::Suspended,
            (s, _) => s,
        }
    }

    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|exp| exp <= now)
    }
}

/// An API or MCP server that accepts Sigil tokens (RFC 8707 resource).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub id: ResourceId,
    pub uri: ResourceUri,
    pub name: Name,
    pub description: Option<Description>,
    pub owner: UserId,
    pub scopes: ScopeSet,
    /// The identities (the API's own workloads or agents) that serve this resource: their
    /// clients may introspect its tokens (RFC 7662 §4).
    pub servers: Vec<IdentityId>,
    pub meta: Meta,
}

/// A user named by id or by username.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UserRef {
    Id(UserId),
    Username(Username),
}

impl UserRef {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if UserId::looks_like(s) {
            UserId::parse(s).map(Self::Id)
        } else {
            Username::parse(s).map(Self::Username)
        }
    }
}

impl std::fmt::Display for UserRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Id(id) => id.fmt(f),
            Self::Username(u) => u.fmt(f),
        }
    }
}

/// An identity named by id or by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IdentityRef {
    Id(IdentityId),
    Name(Name),
}

impl IdentityRef {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if IdentityId::looks_like(s) {
            IdentityId::parse(s).map(Self::Id)
        } else {
            Name::parse(s).map(Self::Name)
        }
    }
}

impl std::fmt::Display for IdentityRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Id(id) => id.fmt(f),
            Self::Name(n) => n.fmt(f),
        }
    }
}

/// A resource named by id, name or its URI.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ResourceRef {
    Id(ResourceId),
    Name(Name),
    Uri(ResourceUri),
}

impl ResourceRef {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if ResourceId::looks_like(s) {
            ResourceId::parse(s).map(Self::Id)
        } else if s.contains(':') {
            ResourceUri::parse(s).map(Self::Uri)
        } else {
            Name::parse(s).map(Self::Name)
        }
    }
}

impl std::fmt::Display for ResourceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Id(id) => id.fmt(f),
            Self::Name(n) => n.fmt(f),
            Self::Uri(u) => u.fmt(f),
        }
    }
}

/// Largest page a list may return.
pub const MAX_PAGE: u32 = 500;
/// Page size when none is asked for.
pub const DEFAULT_PAGE: u32 = 50;

/// Cursor pagination: items after `after` (an id), in id order, i.e. creation order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub after: Option<String>,
    pub limit: u32,
}

impl Default for PageRequest {
    fn default() -> Self {
        Self {
            after: None,
            limit: DEFAULT_PAGE,
        }
    }
}

impl PageRequest {
    pub fn new(after: Option<String>, limit: Option<u32>) -> Result<Self, ParseError> {
        let limit = limit.unwrap_or(DEFAULT_PAGE);
        if limit == 0 || limit > MAX_PAGE {
            return Err(ParseError {
                what: "limit",
                why: format!("must be between 1 and {MAX_PAGE}"),
            });
        }
        if let Some(a) = &after
            && (a.len() > 64 || !a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        {
            return Err(ParseError {
                what: "cursor",
                why: "is not a cursor this server returned".into(),
            });
        }
        Ok(Self { after, limit })
    }
}

/// One page of results and the cursor for the next, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Filters for listing users.
#[derive(Debug, Clone, Default)]
pub struct UserQuery {
    pub status: Option<UserStatus>,
    pub group: Option<Group>,
    pub page: PageRequest,
}

/// Which identities a listing covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityFamily {
    Agents,
    Workloads,
}

impl IdentityFamily {
    pub fn of(kind: IdentityKind) -> Self {
        if kind.is_agent() { Self::Agents } else { Self::Workloads }
    }

    pub fn noun(self) -> &'static str {
        match self {
            Self::Agents => "agent",
            Self::Workloads => "workload",
        }
    }
}

/// Filters for listing identities; all given filters must match.
#[derive(Debug, Clone, Default)]
pub struct IdentityQuery {
    pub family: Option<IdentityFamily>,
    pub kind: Option<IdentityKind>,
    pub owner: Option<UserId>,
    /// The effective status at the given time ([`Identity::effective_status`]): an active
    /// identity past its `expires_at` is listed as suspended, as it is shown.
    pub status: Option<(IdentityStatus, Timestamp)>,
    pub team: Option<TeamName>,
    pub labels: Vec<(sigil_types::LabelKey, sigil_types::LabelValue)>,
    pub page: PageRequest,
}

/// Filters for listing resources.
#[derive(Debug, Clone, Default)]
pub struct ResourceQuery {
    pub owner: Option<UserId>,
    pub page: PageRequest,
}
