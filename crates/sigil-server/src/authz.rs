//! From an AuthZEN evaluation to a decision: resolve the subject (a user, an agent or workload,
//! or a Sigil access token) and its actor chain from the registry, the resource, and the
//! context; decide with the active policy engine; describe the decision as an audit record.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Map, Value};
use sigil_core::audit::{AuditRecord, EventType, Outcome, PolicyEvidence, Target};
use sigil_core::model::{Identity, IdentityRef, Principal, Resource, ResourceRef, User, UserRef};
use sigil_core::store::StoreError;
use sigil_policy::{ChainMember, Decision, Engine, Query, RequestContext, ResourceInput};
use sigil_proto::policy::{Entity, Evaluation};
use sigil_types::{IdentityId, IdentityKind, Name, ResourceId, ResourceUri};

use crate::App;

/// The deepest actor chain a request may describe (user → agent → sub-agent → …).
pub const MAX_CHAIN: usize = 8;

/// Why an evaluation could not be decided. `status` follows HTTP: 400 for a request the model
/// cannot express, 404 for a subject or resource that does not exist, 401 for an inactive token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalError {
    pub status: u16,
    pub message: String,
}

impl EvalError {
    fn bad(m: impl Into<String>) -> Self {
        Self {
            status: 400,
            message: m.into(),
        }
    }

    fn missing(m: impl Into<String>) -> Self {
        Self {
            status: 404,
            message: m.into(),
        }
    }
}

impl From<StoreError> for EvalError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store read failed during an access evaluation");
        Self {
            status: 503,
            message: "storage is unavailable".into(),
        }
    }
}

/// A decided evaluation and the audit record that describes it.
#[derive(Debug)]
pub struct Evaluated {
    pub decision: Decision,
    pub record: AuditRecord,
}

/// Everything a query borrows, owned.
struct Resolved {
    user: Option<Arc<User>>,
    /// Innermost (closest to the user) first, with each one's owner username.
    actors: Vec<(Arc<Identity>, String)>,
    resource: Option<(Arc<Resource>, String)>,
    context: RequestContext,
}

/// Decides `ev` (already completed with a batch's defaults) with `engine` for the caller.
pub async fn evaluate(
    app: &App,
    engine: &Engine,
    ev: &Evaluation,
    (caller, caller_identity): (&str, Option<&IdentityId>),
    request_id: Option<&str>,
) -> Result<Evaluated, EvalError> {
    let subject = ev
        .subject
        .as_ref()
        .ok_or_else(|| EvalError::bad("subject is required"))?;
    let action = ev.action.as_ref().ok_or_else(|| EvalError::bad("action is required"))?;
    let resource = ev
        .resource
        .as_ref()
        .ok_or_else(|| EvalError::bad("resource is required"))?;
    let mut r = resolve_subject(app, subject, (caller, caller_identity)).await?;
    apply_context(&mut r.context, ev.context.as_ref())?;
    if resource.kind == "resource" {
        r.resource = Some(registered_resource(app, &resource.id).await?);
    } else if sigil_policy::is_builtin_type(&resource.kind) {
        // Its attributes (owner, status, ceiling) are the registry's: taken from the request,
        // they would let the caller describe a registered resource or agent as it is not.
        return Err(EvalError::bad(format!(
            "resource type {} is Sigil's own: name a registered resource as type \"resource\", or use a type of your schema",
            resource.kind
        )));
    }
    let mut chain = Vec::with_capacity(1 + r.actors.len());
    if let Some(u) = &r.user {
        chain.push(ChainMember::User(u));
    }
    for (identity, owner) in &r.actors {
        chain.push(ChainMember::Identity { identity, owner });
    }
    let resource_input = match &r.resource {
        Some((res, owner)) => ResourceInput::Registered { resource: res, owner },
        None => ResourceInput::Custom {
            type_name: &resource.kind,
            id: &resource.id,
            properties: resource.properties.as_ref(),
        },
    };
    let query = Query {
        chain,
        action: &action.name,
        resource: resource_input,
        context: r.context.clone(),
    };
    let decision = engine.decide(&query).map_err(|e| EvalError::bad(e.0))?;
    let record = record(&decision, &r, resource, &action.name, caller, request_id);
    Ok(Evaluated { decision, record })
}

fn inactive() -> EvalError {
    EvalError {
        status: 401,
        message: "the access token is not active".into(),
    }
}

/// The subject as a principal and context. A token subject tells the caller about the token,
/// so a client caller must be one that introspection would answer (RFC 7662 §4): it serves
/// the token's audience or holds the token; to any other the token is not active.
async fn resolve_subject(
    app: &App,
    s: &Entity,
    (caller, caller_identity): (&str, Option<&IdentityId>),
) -> Result<Resolved, EvalError> {
    let mut r = Resolved {
        user: None,
        actors: Vec::new(),
        resource: None,
        context: RequestContext {
            now: app.clock.now(),
            scopes: BTreeSet::new(),
            audience: None,
            auth_method: "none".into(),
            environment: None,
            purpose: None,
            scope: None,
        },
    };
    match s.kind.as_str() {
        "user" => r.user = Some(user(app, &s.id).await?),
        "agent" | "workload" => r.actors.push(identity(app, &s.kind, &s.id).await?),
        "access_token" => {
            let claims = app
                .oauth
                .active_claims(&s.id)
                .await
                .map_err(|_| EvalError::from(StoreError::Unavailable("token check".into())))?
                .ok_or_else(inactive)?;
            if let Some(client) = caller.strip_prefix("client:")
                && !app
                    .oauth
                    .may_learn_about(client, caller_identity, &claims)
                    .await
                    .map_err(|_| EvalError::from(StoreError::Unavailable("token check".into())))?
            {
                return Err(inactive());
            }
            // A delegated token: its user, then its actors from the one closest to the user.
            if let Some(act) = &claims.act {
                r.user = Some(user(app, &claims.sub).await?);
                for a in act.chain_from_user() {
                    let id = IdentityId::parse(&a.sub).map_err(|e| EvalError::bad(e.to_string()))?;
                    r.actors.push(identity_by(app, IdentityRef::Id(id), None).await?);
                }
            } else {
                let id = IdentityId::parse(&claims.sub).map_err(|e| EvalError::bad(e.to_string()))?;
                r.actors.push(identity_by(app, IdentityRef::Id(id), None).await?);
            }
            r.context.scopes = claims.scope.split_whitespace().map(str::to_owned).collect();
            r.context.audience = Some(claims.aud);
            r.context.auth_method = if claims.cnf.is_some() { "dpop" } else { "bearer" }.into();
        }
        other => {
            return Err(EvalError::bad(format!(
                "unknown subject type `{other}`: use user, agent, workload or access_token"
            )));
        }
    }
    // RFC 8693-style nesting in the subject's properties: `act` is the actor acting for the
    // subject, its own `act` the one acting for it, and so on.
    let mut act = s.properties.as_ref().and_then(|p| p.get("act"));
    while let Some(a) = act {
        if r.actors.len() >= MAX_CHAIN {
            return Err(EvalError::bad(format!("the actor chain is deeper than {MAX_CHAIN}")));
        }
        let kind = a.get("type").and_then(Value::as_str).unwrap_or_default();
        let id = a
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| EvalError::bad("act.id is required"))?;
        if !matches!(kind, "agent" | "workload") {
            return Err(EvalError::bad("act.type must be agent or workload"));
        }
        r.actors.push(identity(app, kind, id).await?);
        act = a.get("act");
    }
    Ok(r)
}

/// Takes the context members the model defines. One present with another type is a 400, not
/// left out: a policy that forbids a purpose must not be passed by sending it as a number.
fn apply_context(c: &mut RequestContext, ctx: Option<&Map<String, Value>>) -> Result<(), EvalError> {
    let get = |k: &str| match ctx.and_then(|m| m.get(k)) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(EvalError::bad(format!("context.{k} must be a string"))),
    };
    c.environment = get("environment")?;
    c.purpose = get("purpose")?;
    Ok(())
}

async fn user(app: &App, id: &str) -> Result<Arc<User>, EvalError> {
    let r = UserRef::parse(id).map_err(|e| EvalError::bad(e.to_string()))?;
    app.reads
        .user(&r)
        .await?
        .ok_or_else(|| EvalError::missing(format!("no user {id}")))
}

async fn identity(app: &App, kind: &str, id: &str) -> Result<(Arc<Identity>, String), EvalError> {
    let r = if IdentityId::looks_like(id) {
        IdentityRef::Id(IdentityId::parse(id).map_err(|e| EvalError::bad(e.to_string()))?)
    } else {
        IdentityRef::Name(Name::parse(id).map_err(|e| EvalError::bad(e.to_string()))?)
    };
    identity_by(app, r, Some(kind)).await
}

async fn identity_by(app: &App, r: IdentityRef, kind: Option<&str>) -> Result<(Arc<Identity>, String), EvalError> {
    let i = app
        .reads
        .identity(&r)
        .await?
        .ok_or_else(|| EvalError::missing(format!("no identity {r}")))?;
    let is_agent = i.kind == IdentityKind::Agent;
    if kind.is_some_and(|k| (k == "agent") != is_agent) {
        return Err(EvalError::missing(format!("no {} {r}", kind.unwrap_or_default())));
    }
    let owner = app.reads.username(&i.owner).await?;
    Ok((i, owner))
}

/// Whether `id` is a workload (not an agent), through the cache: the callers a policy decision
/// point answers.
pub async fn is_workload(app: &App, id: &IdentityId) -> Result<bool, EvalError> {
    let r = IdentityRef::Id(id.clone());
    let i = app.reads.identity(&r).await?;
    Ok(i.is_some_and(|i| i.kind != IdentityKind::Agent))
}

async fn registered_resource(app: &App, id: &str) -> Result<(Arc<Resource>, String), EvalError> {
    let r = if ResourceId::looks_like(id) {
        ResourceRef::Id(ResourceId::parse(id).map_err(|e| EvalError::bad(e.to_string()))?)
    } else if id.contains("://") {
        ResourceRef::Uri(ResourceUri::parse(id).map_err(|e| EvalError::bad(e.to_string()))?)
    } else {
        ResourceRef::Name(Name::parse(id).map_err(|e| EvalError::bad(e.to_string()))?)
    };
    let res = app
        .reads
        .resource(&r)
        .await?
        .ok_or_else(|| EvalError::missing(format!("no resource {id}")))?;
    let owner = app.reads.username(&res.owner).await?;
    Ok((res, owner))
}

/// The audit record: the user (subject) and actors (outermost first), the action and resource,
/// the policy version and determining policies, and the deny reason naming who was denied.
fn record(
    d: &Decision,
    r: &Resolved,
    resource: &Entity,
    action: &str,
    caller: &str,
    request_id: Option<&str>,
) -> AuditRecord {
    let mut rec = AuditRecord::new(
        r.context.now,
        EventType::AccessEvaluated,
        &Principal::from_stored(caller.to_owned()),
        request_id,
    );
    if !d.allowed {
        rec = rec.outcome(Outcome::Denied, &d.deny_reason().unwrap_or_default());
    }
    // Ids, as in every other record, so search and trace find one person under one key.
    rec.subject = r.user.as_ref().map(|u| u.id.to_string());
    rec.actors = r.actors.iter().rev().map(|(i, _)| i.id.to_string()).collect();
    // Who asked (the actors are whom the decision is about): a resource server's client, or an
    // administrator.
    rec.client_id = caller.strip_prefix("client:").map(str::to_owned);
    let mut rec = rec.detail("caller", caller);
    rec.action = Some(action.to_owned());
    rec.target = Some(Target {
        kind: resource.kind.clone(),
        id: Some(resource.id.chars().take(256).collect()),
        name: r.resource.as_ref().map(|(res, _)| res.name.to_string()),
        resource: r.resource.as_ref().map(|(res, _)| res.uri.to_string()),
        audience: r.context.audience.clone(),
    });
    rec.scopes = r.context.scopes.iter().cloned().collect();
    rec.policy = Some(PolicyEvidence {
        version: d.version.to_string(),
        determining: d.determining_policies(),
    });
    rec.detail("steps", serde_json::to_value(&d.steps).unwrap_or_default())
}
