//! Turning registry records into Cedar entities and a decision request into a Cedar context.
//! Entities are built from typed values (no parsing); only attributes a caller adds to a
//! resource of an operator-defined type go through Cedar's JSON reader, checked by the schema.

use std::collections::BTreeSet;

use cedar_policy::{Context, Entity, EntityId, EntityTypeName, EntityUid, RestrictedExpression, Schema};
use sigil_core::model::{Identity, Resource, User};
use sigil_types::{IdentityKind, Timestamp};

use crate::engine::Chain;
use crate::{NAMESPACE, RequestError};

/// One principal of a delegation chain.
#[derive(Debug, Clone, Copy)]
pub enum ChainMember<'a> {
    User(&'a User),
    /// An agent or workload, with its owner's username.
    Identity {
        identity: &'a Identity,
        owner: &'a str,
    },
}

/// What the request is about.
#[derive(Debug, Clone, Copy)]
pub enum ResourceInput<'a> {
    /// A resource in Sigil's registry, with its owner's username.
    Registered { resource: &'a Resource, owner: &'a str },
    /// A resource of an operator-defined entity type, described by the caller.
    Custom {
        type_name: &'a str,
        id: &'a str,
        properties: Option<&'a serde_json::Map<String, serde_json::Value>>,
    },
}

/// The request's circumstances; the chain's part of the Cedar context is derived from the chain.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub now: Timestamp,
    pub scopes: BTreeSet<String>,
    pub audience: Option<String>,
    pub auth_method: String,
    pub environment: Option<String>,
    pub purpose: Option<String>,
    /// token.issue only: the scope being decided.
    pub scope: Option<String>,
}

impl RequestContext {
    /// Whether `other` gives the Cedar context the same values (its `time` is in seconds).
    pub(crate) fn same_facts(&self, other: &Self) -> bool {
        // Destructured, so that a new field cannot be left out of the comparison.
        let Self {
            now,
            scopes,
            audience,
            auth_method,
            environment,
            purpose,
            scope,
        } = self;
        now.unix_seconds() == other.now.unix_seconds()
            && *scopes == other.scopes
            && *audience == other.audience
            && *auth_method == other.auth_method
            && *environment == other.environment
            && *purpose == other.purpose
            && *scope == other.scope
    }
}

/// A decision request: `chain` holds the user the chain acts for (if any) first, then every
/// actor from the one closest to the user outwards.
#[derive(Debug, Clone)]
pub struct Query<'a> {
    pub chain: Vec<ChainMember<'a>>,
    pub action: &'a str,
    pub resource: ResourceInput<'a>,
    pub context: RequestContext,
}

/// Whether `name` is one of the schema's own entity types (`User`, `Agent`, `Resource`, …),
/// whose entities Sigil builds from its registry and no request may describe.
pub fn is_builtin_type(name: &str) -> bool {
    builtin_type_names().iter().any(|(n, _)| *n == name)
}

pub(crate) fn type_name(name: &str) -> Result<EntityTypeName, RequestError> {
    if let Some((_, parsed)) = builtin_type_names().iter().find(|(n, _)| *n == name) {
        return Ok(parsed.clone());
    }
    parse_type_name(name)
}

fn parse_type_name(name: &str) -> Result<EntityTypeName, RequestError> {
    format!("{NAMESPACE}::{name}")
        .parse()
        .map_err(|_| RequestError(format!("`{name}` is not a valid entity type name")))
}

/// The schema's own entity types, parsed once: every decision names several of them, and
/// parsing a type name was a twentieth of a decision's time.
fn builtin_type_names() -> &'static [(&'static str, EntityTypeName)] {
    static NAMES: std::sync::OnceLock<Vec<(&'static str, EntityTypeName)>> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        ["User", "Group", "Agent", "Workload", "Resource", "Action"]
            .into_iter()
            .filter_map(|n| parse_type_name(n).ok().map(|t| (n, t)))
            .collect()
    })
}

pub(crate) fn uid(type_: &str, id: &str) -> Result<EntityUid, RequestError> {
    Ok(EntityUid::from_type_name_and_id(type_name(type_)?, EntityId::new(id)))
}

fn string(s: impl Into<String>) -> RestrictedExpression {
    RestrictedExpression::new_string(s.into())
}

fn strings<'s>(items: impl IntoIterator<Item = &'s str>) -> RestrictedExpression {
    RestrictedExpression::new_set(items.into_iter().map(string))
}

fn entity_error(e: impl std::fmt::Display) -> RequestError {
    RequestError(format!("cannot build the entity: {e}"))
}

impl ChainMember<'_> {
    pub(crate) fn uid(&self) -> Result<EntityUid, RequestError> {
        match self {
            Self::User(u) => uid("User", u.username.as_str()),
            Self::Identity { identity, .. } => uid(identity_type(identity), identity.name.as_str()),
        }
    }

    pub(crate) fn entity(&self, now: Timestamp) -> Result<Entity, RequestError> {
        match self {
            Self::User(u) => user_entity(u),
            Self::Identity { identity, owner } => identity_entity(identity, owner, now),
        }
    }
}

fn identity_type(i: &Identity) -> &'static str {
    match i.kind {
        IdentityKind::Agent => "Agent",
        _ => "Workload",
    }
}

fn user_entity(u: &User) -> Result<Entity, RequestError> {
    let mut attrs = vec![
        ("username".to_owned(), string(u.username.as_str())),
        ("status".to_owned(), string(u.status.as_str())),
    ];
    if let Some(e) = &u.email {
        attrs.push(("email".to_owned(), string(e.as_str())));
    }
    let groups = u
        .groups
        .iter()
        .map(|g| uid("Group", g.as_str()))
        .collect::<Result<Vec<_>, _>>()?;
    Entity::new(
        uid("User", u.username.as_str())?,
        attrs.into_iter().collect(),
        groups.into_iter().collect(),
    )
    .map_err(entity_error)
}

fn identity_entity(i: &Identity, owner: &str, now: Timestamp) -> Result<Entity, RequestError> {
    let resources = i.ceiling.resources.as_ref();
    let mut attrs = vec![
        ("name".to_owned(), string(i.name.as_str())),
        (
            "owner".to_owned(),
            RestrictedExpression::new_entity_uid(uid("User", owner)?),
        ),
        ("status".to_owned(), string(i.effective_status(now).as_str())),
        (
            "ceiling_scopes".to_owned(),
            strings(i.ceiling.scopes.iter().map(|s| s.as_str())),
        ),
        (
            "ceiling_resources".to_owned(),
            strings(resources.into_iter().flatten().map(|r| r.as_str())),
        ),
        (
            "ceiling_any_resource".to_owned(),
            RestrictedExpression::new_bool(resources.is_none()),
        ),
    ];
    if let Some(t) = &i.team {
        attrs.push(("team".to_owned(), string(t.as_str())));
    }
    let tags = i
        .labels
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), string(v.as_str())));
    Entity::new_with_tags(uid(identity_type(i), i.name.as_str())?, attrs, [], tags).map_err(entity_error)
}

impl ResourceInput<'_> {
    pub(crate) fn uid(&self) -> Result<EntityUid, RequestError> {
        match self {
            Self::Registered { resource, .. } => uid("Resource", resource.name.as_str()),
            Self::Custom { type_name, id, .. } => uid(type_name, id),
        }
    }

    /// A custom resource's entity under `id` when every caller property is a JSON boolean,
    /// integer or string, built without Cedar's JSON reader and not yet checked against the
    /// schema; `None` for anything else.
    pub(crate) fn plain_entity(&self, id: EntityUid) -> Result<Option<Entity>, RequestError> {
        let Self::Custom { properties, .. } = self else {
            return Ok(None);
        };
        let mut attrs = std::collections::HashMap::new();
        for (name, value) in properties.iter().flat_map(|p| p.iter()) {
            let value = match value {
                serde_json::Value::Bool(b) => RestrictedExpression::new_bool(*b),
                serde_json::Value::String(s) => string(s.as_str()),
                serde_json::Value::Number(n) => match n.as_i64() {
                    Some(n) => RestrictedExpression::new_long(n),
                    None => return Ok(None),
                },
                _ => return Ok(None),
            };
            attrs.insert(name.clone(), value);
        }
        Entity::new(id, attrs, std::collections::HashSet::new())
            .map(Some)
            .map_err(entity_error)
    }

    /// The resource's entity under `id` (its [`Self::uid`]).
    pub(crate) fn entity(&self, id: EntityUid, schema: &Schema) -> Result<Entity, RequestError> {
        match self {
            Self::Registered { resource, owner } => {
                let attrs = [
                    ("name".to_owned(), string(resource.name.as_str())),
                    ("uri".to_owned(), string(resource.uri.as_str())),
                    (
                        "owner".to_owned(),
                        RestrictedExpression::new_entity_uid(uid("User", owner)?),
                    ),
                    ("scopes".to_owned(), strings(resource.scopes.iter().map(|s| s.as_str()))),
                ];
                Entity::new_with_tags(id, attrs, [], std::iter::empty::<(String, _)>()).map_err(entity_error)
            }
            Self::Custom {
                type_name: t,
                properties,
                ..
            } => {
                let json = serde_json::json!({
                    "uid": { "type": format!("{NAMESPACE}::{t}"), "id": id.id().unescaped() },
                    "attrs": properties.cloned().unwrap_or_default(),
                    "parents": [],
                });
                Entity::from_json_value(json, Some(schema))
                    .map_err(|e| RequestError(format!("resource properties do not fit the schema: {e}")))
            }
        }
    }
}

/// What the entity set of a query's action and chain depends on. Record versions change with
/// every update; the effective status and owner are named too because they change without one
/// (an identity's expiry passing, its owner being renamed).
pub(crate) fn chain_key(q: &Query<'_>) -> String {
    use std::fmt::Write;
    let mut key = String::with_capacity(32 + 64 * q.chain.len());
    key.push_str(q.action);
    for m in &q.chain {
        let _ = match m {
            ChainMember::User(u) => write!(key, "|{}@{}", u.id, u.meta.version),
            ChainMember::Identity { identity, owner } => write!(
                key,
                "|{}@{}:{}:{owner}",
                identity.id,
                identity.meta.version,
                identity.effective_status(q.context.now).as_str()
            ),
        };
    }
    key
}

/// What a whole query's entity set depends on when it is built only from registry records
/// (`chain_key` and a registered resource), or `None` when the query carries caller-supplied
/// attributes (a custom resource) and its resource must be built afresh.
pub(crate) fn registry_key(q: &Query<'_>, chain_key: &str) -> Option<String> {
    let ResourceInput::Registered { resource, owner } = q.resource else {
        return None;
    };
    Some(format!("{chain_key}#{}@{}:{owner}", resource.id, resource.meta.version))
}

/// Longest caller-described resource (its properties as JSON) whose entity set is kept: a
/// bound on what callers can make the engine hold (4,096 sets at most).
const MAX_KEPT_PROPERTIES: usize = 512;

/// What a query's entity set depends on when its resource is described by the caller: the
/// chain, the resource's type and id, and its properties, or `None` when they are too long to
/// be worth keeping. The decision itself is not remembered for such a key (see `registry_key`).
pub(crate) fn described_key(q: &Query<'_>, chain_key: &str) -> Option<String> {
    let ResourceInput::Custom {
        type_name,
        id,
        properties,
    } = q.resource
    else {
        return None;
    };
    let props = match properties {
        Some(p) => serde_json::to_string(p).ok()?,
        None => String::new(),
    };
    // Type and id length-prefixed, so that no two resources share a key; `~` sets these keys
    // apart from `registry_key`'s.
    (props.len() <= MAX_KEPT_PROPERTIES)
        .then(|| format!("{chain_key}#~{}:{type_name}{}:{id}{props}", type_name.len(), id.len()))
}

/// The Cedar context for a chain: the user, the actors, the depth, and the request's facts.
pub(crate) fn context(chain: &Chain, c: &RequestContext) -> Result<Context, RequestError> {
    let mut pairs: Vec<(String, RestrictedExpression)> = Vec::with_capacity(10);
    let mut members = chain.members.iter();
    if chain.user
        && let Some((user, _)) = members.next()
    {
        pairs.push(("user".to_owned(), RestrictedExpression::new_entity_uid(user.clone())));
    }
    let actors: Vec<&str> = members.map(|(_, text)| text.as_str()).collect();
    let depth = i64::try_from(actors.len()).unwrap_or(i64::MAX);
    pairs.push(("actors".to_owned(), strings(actors)));
    pairs.push(("depth".to_owned(), RestrictedExpression::new_long(depth)));
    pairs.push(("scopes".to_owned(), strings(c.scopes.iter().map(String::as_str))));
    pairs.push(("auth_method".to_owned(), string(c.auth_method.as_str())));
    pairs.push(("time".to_owned(), RestrictedExpression::new_long(c.now.unix_seconds())));
    let optional = [
        ("audience", &c.audience),
        ("environment", &c.environment),
        ("purpose", &c.purpose),
        ("scope", &c.scope),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            pairs.push((k.to_owned(), string(v.as_str())));
        }
    }
    Context::from_pairs(pairs).map_err(|e| RequestError(format!("invalid context: {e}")))
}
