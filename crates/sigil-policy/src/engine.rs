//! A compiled policy set version and the decision for a delegation chain.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use cedar_policy::{
    ActionConstraint, AuthorizationError, Authorizer, Decision as CedarDecision, Entities, Entity, EntityId,
    EntityTypeName, EntityUid, Policy, PolicyId, PolicySet, Request, Schema, SchemaFragment, ValidationMode, Validator,
};
use serde::Serialize;

use crate::entities::{
    ChainMember, Query, RequestContext, ResourceInput, chain_key, context, described_key, registry_key, uid,
};
use crate::principal_slice::PrincipalSlices;
use crate::{BUILTIN_POLICIES, BUILTIN_SCHEMA, PolicyError, RequestError};

/// Prefix reserved for the built-in policies' ids.
const BUILTIN_PREFIX: &str = "sigil.";
/// Most entity sets an engine keeps; past it the cache starts over (it refills in a moment).
const MAX_CACHED_ENTITY_SETS: usize = 4096;
/// Most decisions an engine remembers; past it the memory starts over.
const MAX_REMEMBERED_DECISIONS: usize = 4096;

/// One compiled policy set version. Cheap to share (`Arc`); immutable.
#[derive(Debug)]
pub struct Engine {
    version: u64,
    schema: Schema,
    /// Everything a decision needs about its action, prepared once.
    actions: HashMap<EntityUid, ActionInfo>,
    policy_count: usize,
    authorizer: Authorizer,
    /// The schema's entity types in Sigil's namespace, by their short name, parsed once: a
    /// request names its resource's type by that name.
    entity_types: HashMap<String, EntityTypeName>,
    /// Entity sets made only of registry records, by the record versions they were built from:
    /// a chain's (its members and the action) and a whole query's when its resource is a
    /// registered one. An agent asking for tokens again and again is one entity set, not one
    /// per request. A changed record has a new version, so its old set is never used again.
    entity_sets: Mutex<HashMap<String, Arc<Entities>>>,
    /// Chains' entities and uids, by the record versions they were built from.
    chains: Mutex<HashMap<String, Arc<Chain>>>,
    /// Decisions about registry-keyed queries, by entity-set key and context. A decision is a
    /// function of the policies (fixed for an engine), the entities (named by the key) and the
    /// request; the context's `time` is part of the key only for actions whose policies read it.
    decisions: Mutex<HashMap<String, Decision>>,
}

/// The part of a decision that does not depend on the context.
struct Prepared<'e> {
    action: EntityUid,
    info: &'e ActionInfo,
    resource_uid: EntityUid,
    chain: Arc<Chain>,
    entities: Arc<Entities>,
    /// What the entity set was built from, when it came from the registry alone.
    key: Option<String>,
}

/// A chain's principals for one action, built from their records.
#[derive(Debug)]
pub(crate) struct Chain {
    /// The action's entity and every principal's.
    entities: Entities,
    /// Each principal's uid and its text (a step's `principal`), in chain order.
    pub(crate) members: Vec<(EntityUid, String)>,
    /// Whether the first member is the user the chain acts for; the others are its actors.
    pub(crate) user: bool,
    /// The Cedar contexts last built for this chain, with the facts each was built from:
    /// building one evaluates a record of restricted expressions, which took as long as a
    /// quarter of a decision; requests of one client in one second mostly share their facts.
    contexts: Mutex<Vec<(RequestContext, cedar_policy::Context)>>,
}

/// Most contexts a chain remembers (the token endpoint asks about one per candidate scope).
const CONTEXTS_PER_CHAIN: usize = 8;

impl Chain {
    /// The Cedar context for `c`, built once per distinct set of facts.
    fn context(&self, c: &RequestContext) -> Result<cedar_policy::Context, RequestError> {
        let mut known = self.contexts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, ctx)) = known.iter().find(|(facts, _)| facts.same_facts(c)) {
            return Ok(ctx.clone());
        }
        drop(known);
        let ctx = context(self, c)?;
        known = self.contexts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if known.len() >= CONTEXTS_PER_CHAIN {
            known.remove(0);
        }
        known.push((c.clone(), ctx.clone()));
        Ok(ctx)
    }
}

/// One action, as the schema declares it.
#[derive(Debug)]
struct ActionInfo {
    /// Only the policies whose action scope can match it, so a decision evaluates a slice of
    /// the set, not all of it, and of those only the ones whose principal scope can match
    /// the principal.
    slice: PrincipalSlices,
    /// The action's entity (with its groups).
    entity: Entity,
    /// The principal and resource types it applies to. Checked here, so requests need not be
    /// validated against the whole schema again; the context is built by Sigil to the schema's
    /// `Context` type.
    principals: HashSet<EntityTypeName>,
    resources: HashSet<EntityTypeName>,
    /// Whether any policy of the slice can see `context.time`.
    reads_time: bool,
}

/// The decision for a whole chain, with the evidence for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub allowed: bool,
    pub version: u64,
    /// One step per principal evaluated, in chain order; evaluation stops at the first deny.
    pub steps: Vec<Step>,
}

/// The outcome for one principal of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// The Cedar entity, e.g. `Sigil::User::"alice"`.
    pub principal: String,
    pub allowed: bool,
    /// The policies that determined this outcome (the permits that allowed it, or the forbids
    /// that denied it; empty for a deny because nothing permits), sorted by id.
    pub policies: Vec<String>,
    /// Evaluation errors. Any error makes the step a deny (Cedar alone would skip the policy,
    /// which for a `forbid` would widen access); `policies` then names the policies that erred.
    pub errors: Vec<String>,
}

impl Decision {
    /// Why the chain was denied, naming the principal (dual attribution: agent or user).
    pub fn deny_reason(&self) -> Option<String> {
        let step = self.steps.iter().find(|s| !s.allowed)?;
        Some(if !step.errors.is_empty() {
            format!(
                "{} is denied: evaluating {} failed (an error is never an allow)",
                step.principal,
                step.policies.join(", ")
            )
        } else if step.policies.is_empty() {
            format!("no policy permits {}", step.principal)
        } else {
            format!("{} is forbidden by {}", step.principal, step.policies.join(", "))
        })
    }

    /// Every policy that determined the decision, over all steps.
    pub fn determining_policies(&self) -> Vec<String> {
        let mut all: Vec<String> = self.steps.iter().flat_map(|s| s.policies.iter().cloned()).collect();
        all.sort();
        all.dedup();
        all
    }
}

impl Engine {
    /// Compiles a version: the built-in schema plus the operator's fragment, the built-in
    /// policies plus the operator's, strictly validated. Any error rejects the whole version.
    pub fn compile(version: u64, policies: &str, schema_extension: Option<&str>) -> Result<Self, PolicyError> {
        let schema = build_schema(schema_extension)?;
        let set = build_policy_set(policies)?;
        let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
        let errors: Vec<String> = result.validation_errors().map(|e| e.to_string()).collect();
        if !errors.is_empty() {
            return Err(PolicyError { diagnostics: errors });
        }
        let action_entities = schema.action_entities().map_err(|e| PolicyError::one(e.to_string()))?;
        let mut slices = slice_by_action(&set, &action_entities)?;
        let mut actions = HashMap::new();
        for entity in action_entities.iter() {
            let uid = entity.uid();
            let slice = slices.remove(&uid).unwrap_or_default();
            let reads_time = slice.policies().any(reads_time);
            let info = ActionInfo {
                reads_time,
                slice: PrincipalSlices::new(&slice),
                entity: entity.clone(),
                principals: schema
                    .principals_for_action(&uid)
                    .into_iter()
                    .flatten()
                    .cloned()
                    .collect(),
                resources: schema
                    .resources_for_action(&uid)
                    .into_iter()
                    .flatten()
                    .cloned()
                    .collect(),
            };
            actions.insert(uid, info);
        }
        let entity_types = schema
            .entity_types()
            .filter(|t| t.namespace() == crate::NAMESPACE)
            .map(|t| (t.basename().to_owned(), t.clone()))
            .collect();
        Ok(Self {
            version,
            schema,
            actions,
            policy_count: set.policies().count(),
            authorizer: Authorizer::new(),
            entity_types,
            entity_sets: Mutex::default(),
            chains: Mutex::default(),
            decisions: Mutex::default(),
        })
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn policy_count(&self) -> usize {
        self.policy_count
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Decides `q` for every principal of its chain; allowed only if each one is.
    pub fn decide(&self, q: &Query<'_>) -> Result<Decision, RequestError> {
        let prepared = self.prepare(q)?;
        self.evaluate(&prepared, q, &q.context)
    }

    /// Decides `q` once for each of `contexts` (which replace its own), over one entity set:
    /// the token endpoint asks about every candidate scope of one issuance, and only the
    /// context differs between them.
    pub fn decide_each(&self, q: &Query<'_>, contexts: &[RequestContext]) -> Result<Vec<Decision>, RequestError> {
        let prepared = self.prepare(q)?;
        contexts.iter().map(|c| self.evaluate(&prepared, q, c)).collect()
    }

    /// What every decision about `q` shares: the action, its resource and the entity set.
    fn prepare(&self, q: &Query<'_>) -> Result<Prepared<'_>, RequestError> {
        if q.chain.is_empty() {
            return Err(RequestError("the request names no principal".into()));
        }
        let action = uid("Action", q.action)?;
        let Some(info) = self.actions.get(&action) else {
            return Err(RequestError(format!("unknown action `{}`", q.action)));
        };
        let resource_uid = match q.resource {
            ResourceInput::Custom { type_name, id, .. } if let Some(t) = self.entity_types.get(type_name) => {
                EntityUid::from_type_name_and_id(t.clone(), EntityId::new(id))
            }
            _ => q.resource.uid()?,
        };
        if !info.resources.contains(resource_uid.type_name()) {
            return Err(RequestError(format!(
                "action `{}` does not apply to resources of type {}",
                q.action,
                resource_uid.type_name()
            )));
        }
        let chain_key = chain_key(q);
        let key = registry_key(q, &chain_key);
        let set_key = key.clone().or_else(|| described_key(q, &chain_key));
        let chain = self.chain(q, info, chain_key)?;
        let entities = match set_key.as_ref().and_then(|k| self.cached_entities(k)) {
            Some(set) => set,
            None => {
                let set = Arc::new(self.with_resource(&chain.entities, q, resource_uid.clone())?);
                if let Some(k) = set_key {
                    self.cache_entities(k, Arc::clone(&set));
                }
                set
            }
        };
        Ok(Prepared {
            action,
            info,
            resource_uid,
            chain,
            entities,
            key,
        })
    }

    /// The action's and the chain's entities and the chain's uids, built once per set of record
    /// versions (`key`): a resource server asking about many resources for one user and agent
    /// builds only each resource's entity.
    fn chain(&self, q: &Query<'_>, info: &ActionInfo, key: String) -> Result<Arc<Chain>, RequestError> {
        let mut chains = self.chains.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(chain) = chains.get(&key) {
            return Ok(Arc::clone(chain));
        }
        drop(chains);
        let mut entities = Vec::with_capacity(q.chain.len() + 1);
        entities.push(info.entity.clone());
        let mut members = Vec::with_capacity(q.chain.len());
        for m in &q.chain {
            entities.push(m.entity(q.context.now)?);
            let uid = m.uid()?;
            let text = uid.to_string();
            members.push((uid, text));
        }
        let chain = Arc::new(Chain {
            entities: Entities::from_entities(entities, None).map_err(invalid_entities)?,
            user: matches!(q.chain.first(), Some(ChainMember::User(_))),
            members,
            contexts: Mutex::default(),
        });
        chains = self.chains.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if chains.len() >= MAX_CACHED_ENTITY_SETS {
            chains.clear();
        }
        chains.insert(key, Arc::clone(&chain));
        Ok(chain)
    }

    /// `chain` with the resource's entity added. Caller properties that are all plain JSON
    /// values are turned into Cedar values directly and checked against the schema as the
    /// entity is added; anything else, or properties that do not fit (a string the schema
    /// reads as an entity or extension value, say), goes through Cedar's schema-driven JSON
    /// reader, whose answer, or error, is the authoritative one.
    fn with_resource(
        &self,
        chain: &Entities,
        q: &Query<'_>,
        resource_uid: EntityUid,
    ) -> Result<Entities, RequestError> {
        if let Some(entity) = q.resource.plain_entity(resource_uid.clone())?
            && let Ok(set) = chain.clone().add_entities([entity], Some(&self.schema))
        {
            return Ok(set);
        }
        let entity = q.resource.entity(resource_uid, &self.schema)?;
        chain.clone().add_entities([entity], None).map_err(invalid_entities)
    }

    fn cached_entities(&self, key: &str) -> Option<Arc<Entities>> {
        let sets = self
            .entity_sets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        sets.get(key).cloned()
    }

    fn cache_entities(&self, key: String, set: Arc<Entities>) {
        let mut sets = self
            .entity_sets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if sets.len() >= MAX_CACHED_ENTITY_SETS {
            sets.clear();
        }
        sets.insert(key, set);
    }

    /// The decision for `c`, remembered when the entity set came from the registry alone.
    fn evaluate(&self, p: &Prepared<'_>, q: &Query<'_>, c: &RequestContext) -> Result<Decision, RequestError> {
        let Some(entities_key) = &p.key else {
            return self.evaluate_chain(p, q, c);
        };
        let key = decision_key(entities_key, c, p.info.reads_time);
        let remembered = self
            .decisions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            .cloned();
        if let Some(d) = remembered {
            return Ok(d);
        }
        let decision = self.evaluate_chain(p, q, c)?;
        let mut decisions = self.decisions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if decisions.len() >= MAX_REMEMBERED_DECISIONS {
            decisions.clear();
        }
        decisions.insert(key, decision.clone());
        Ok(decision)
    }

    /// Asks Cedar for each member of the chain in turn, stopping at the first deny.
    fn evaluate_chain(&self, p: &Prepared<'_>, q: &Query<'_>, c: &RequestContext) -> Result<Decision, RequestError> {
        let ctx = p.chain.context(c)?;
        let mut steps = Vec::with_capacity(q.chain.len());
        for m in &p.chain.members {
            let step = self.step(m, &p.action, &p.resource_uid, ctx.clone(), p.info, &p.entities)?;
            let allowed = step.allowed;
            steps.push(step);
            if !allowed {
                break;
            }
        }
        Ok(Decision {
            allowed: steps.iter().all(|s| s.allowed) && steps.len() == q.chain.len(),
            version: self.version,
            steps,
        })
    }

    fn step(
        &self,
        (principal, principal_text): &(EntityUid, String),
        action: &EntityUid,
        resource: &EntityUid,
        ctx: cedar_policy::Context,
        info: &ActionInfo,
        entities: &Entities,
    ) -> Result<Step, RequestError> {
        if !info.principals.contains(principal.type_name()) {
            return Err(RequestError(format!(
                "action `{}` does not apply to principals of type {}",
                action.id().unescaped(),
                principal.type_name()
            )));
        }
        let request = Request::new(principal.clone(), action.clone(), resource.clone(), ctx, None)
            .map_err(|e| RequestError(e.to_string()))?;
        let policies = info.slice.for_principal(principal, entities)?;
        let response = self.authorizer.is_authorized(&request, &policies, entities);
        let diagnostics = response.diagnostics();
        let errors: Vec<String> = diagnostics.errors().map(ToString::to_string).collect();
        // Cedar skips a policy that errors, so an erroring `forbid` would let a `permit` through.
        // Here any evaluation error is a deny, determined by the policies that errored.
        if !errors.is_empty() {
            let mut failed: Vec<String> = diagnostics
                .errors()
                .map(|e| match e {
                    AuthorizationError::PolicyEvaluationError(p) => p.policy_id().to_string(),
                })
                .collect();
            failed.sort();
            failed.dedup();
            return Ok(Step {
                principal: principal_text.clone(),
                allowed: false,
                policies: failed,
                errors,
            });
        }
        Ok(Step {
            principal: principal_text.clone(),
            allowed: response.decision() == CedarDecision::Allow,
            policies: sorted(diagnostics.reason().map(ToString::to_string).collect()),
            errors,
        })
    }
}

/// Cedar reports the determining policies in no fixed order (a hash set's): sorted, the same
/// decision always reads the same, in the response, its deny reason and the audit record.
fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

fn invalid_entities(e: impl std::fmt::Display) -> RequestError {
    RequestError(format!("invalid entities: {e}"))
}

/// Everything of a request's context that a decision over a registry-keyed entity set can
/// depend on (the context's user, actors and depth follow from the chain, which the entity key
/// names); `time` only if a policy of the action reads it.
fn decision_key(entities_key: &str, c: &RequestContext, with_time: bool) -> String {
    use std::fmt::Write;
    let mut key = String::with_capacity(entities_key.len() + 96);
    key.push_str(entities_key);
    let _ = write!(
        key,
        "#{:?}|{}|{:?}|{:?}|{:?}|{:?}",
        c.scopes, c.auth_method, c.audience, c.environment, c.purpose, c.scope
    );
    if with_time {
        let _ = write!(key, "|{}", c.now.unix_seconds());
    }
    key
}

/// Whether a policy can see the context's `time`: unless every use of `context` in it is an
/// access to, or a `has` test of, a named attribute other than `time`, it is taken to (a policy
/// comparing the whole context record, say, depends on every attribute).
fn reads_time(p: &Policy) -> bool {
    fn is_context(v: &serde_json::Value) -> bool {
        v.get("Var").and_then(serde_json::Value::as_str) == Some("context")
    }
    fn walk(v: &serde_json::Value, named: &mut usize, all: &mut usize, time: &mut bool) {
        match v {
            serde_json::Value::Object(map) => {
                if is_context(v) {
                    *all += 1;
                }
                for op in [".", "has"] {
                    if let Some(access) = map.get(op)
                        && access.get("left").is_some_and(is_context)
                    {
                        *named += 1;
                        *time |= access.get("attr").and_then(serde_json::Value::as_str) == Some("time");
                    }
                }
                map.values().for_each(|child| walk(child, named, all, time));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|child| walk(child, named, all, time)),
            _ => {}
        }
    }
    let Ok(json) = p.to_json() else { return true };
    let (mut named, mut all, mut time) = (0, 0, false);
    walk(&json, &mut named, &mut all, &mut time);
    time || named != all
}

fn build_schema(extension: Option<&str>) -> Result<Schema, PolicyError> {
    let parse = |src: &str| {
        SchemaFragment::from_cedarschema_str(src)
            .map(|(f, _warnings)| f)
            .map_err(|e| PolicyError::one(format!("schema: {e}")))
    };
    let mut fragments = vec![parse(BUILTIN_SCHEMA)?];
    if let Some(ext) = extension.filter(|s| !s.trim().is_empty()) {
        let fragment = parse(ext)?;
        check_extension(&fragment)?;
        fragments.push(fragment);
    }
    Schema::from_schema_fragments(fragments).map_err(|e| PolicyError::one(format!("schema: {e}")))
}

/// An operator's fragment extends Sigil's own namespace, and its actions take Sigil's one
/// `Context`. A type or action elsewhere could never be named in a request (AuthZEN's types
/// and actions are read as `Sigil::…`), and a request could never satisfy another context (it
/// is always the one Sigil builds), so either is refused at upload rather than failing every
/// request later.
fn check_extension(fragment: &SchemaFragment) -> Result<(), PolicyError> {
    let refuse = |why: String| Err(PolicyError::one(format!("schema: {why}")));
    for ns in fragment.namespaces() {
        match ns.map(|n| n.to_string()) {
            Some(n) if n == "Sigil" => {}
            Some(n) => return refuse(format!("declare types and actions in namespace Sigil, not {n}")),
            None => return refuse("declare types and actions inside `namespace Sigil { … }`".into()),
        }
    }
    let json: serde_json::Value = fragment
        .to_json_string()
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    let actions = json
        .pointer("/Sigil/actions")
        .and_then(serde_json::Value::as_object)
        .into_iter()
        .flatten();
    for (name, action) in actions {
        // An action that applies to no principal or resource (a group of actions) takes no
        // context.
        let types = |a: &serde_json::Value, k: &str| a.get(k).and_then(|t| t.as_array()).is_some_and(|t| !t.is_empty());
        let Some(applies) = action
            .get("appliesTo")
            .filter(|a| types(a, "principalTypes") || types(a, "resourceTypes"))
        else {
            continue;
        };
        let context = applies.get("context");
        let named = |t: &serde_json::Value| matches!(t.as_str(), Some("Context" | "Sigil::Context"));
        let is_sigils = context.is_some_and(|c| {
            c.get("type").is_some_and(named)
                || (c.get("type").and_then(|t| t.as_str()) == Some("EntityOrCommon")
                    && c.get("name").is_some_and(named))
        });
        if !is_sigils {
            return refuse(format!(
                "action \"{name}\" must declare `context: Context` (Sigil builds every request's context)"
            ));
        }
    }
    Ok(())
}

/// Parses the built-in and operator policies into one set. A policy's id is its `@id`
/// annotation, else `policyN` by position; ids must be unique and `sigil.` is reserved.
fn build_policy_set(operator: &str) -> Result<PolicySet, PolicyError> {
    let mut set = PolicySet::new();
    let mut seen = HashSet::new();
    for (source, is_builtin) in [(BUILTIN_POLICIES, true), (operator, false)] {
        let parsed = PolicySet::from_str(source).map_err(|e| PolicyError {
            diagnostics: parse_diagnostics(&e, source),
        })?;
        if parsed.templates().next().is_some() {
            return Err(PolicyError::one("policy templates are not supported"));
        }
        let mut policies: Vec<&Policy> = parsed.policies().collect();
        // Keep the source order so generated ids are stable.
        policies.sort_by_key(|p| policy_position(p.id()));
        for (n, p) in policies.into_iter().enumerate() {
            let id = p.annotation("id").map_or_else(|| format!("policy{n}"), str::to_owned);
            if !is_builtin && id.starts_with(BUILTIN_PREFIX) {
                return Err(PolicyError::one(format!(
                    "policy id `{id}`: the `{BUILTIN_PREFIX}` prefix is reserved for built-in policies"
                )));
            }
            if !seen.insert(id.clone()) {
                return Err(PolicyError::one(format!("two policies have the id `{id}`")));
            }
            set.add(p.new_id(PolicyId::new(&id)))
                .map_err(|e| PolicyError::one(e.to_string()))?;
        }
    }
    Ok(set)
}

/// Cedar's parse errors, each with the line and column in `source` it points at.
fn parse_diagnostics(e: &cedar_policy::ParseErrors, source: &str) -> Vec<String> {
    use miette::Diagnostic;
    e.iter()
        .map(|err| {
            let at = err.labels().and_then(|mut labels| labels.next()).map(|l| l.offset());
            match at {
                Some(offset) => {
                    let (line, column) = line_and_column(source, offset);
                    format!("line {line}, column {column}: {err}")
                }
                None => err.to_string(),
            }
        })
        .collect()
}

/// The 1-based line and column (in characters) of byte `offset` in `source`.
fn line_and_column(source: &str, offset: usize) -> (usize, usize) {
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// `PolicySet::from_str` names policies `policy0`, `policy1`, … in source order.
fn policy_position(id: &PolicyId) -> usize {
    id.to_string()
        .strip_prefix("policy")
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}

/// For each action, the policies that can apply to it: those with no action constraint, those
/// naming it, and those naming a group it belongs to.
fn slice_by_action(set: &PolicySet, actions: &Entities) -> Result<HashMap<EntityUid, PolicySet>, PolicyError> {
    let mut slices: HashMap<EntityUid, PolicySet> = HashMap::new();
    for action in actions.iter().map(Entity::uid) {
        // `Entities` holds the transitive closure, so these are all the groups above it.
        let mut groups: HashSet<EntityUid> = actions.ancestors(&action).into_iter().flatten().cloned().collect();
        groups.insert(action.clone());
        let mut slice = PolicySet::new();
        for p in set.policies() {
            let applies = match p.action_constraint() {
                ActionConstraint::Any => true,
                ActionConstraint::Eq(a) => groups.contains(&a),
                ActionConstraint::In(list) => list.iter().any(|a| groups.contains(a)),
            };
            if applies {
                slice.add(p.clone()).map_err(|e| PolicyError::one(e.to_string()))?;
            }
        }
        slices.insert(action.clone(), slice);
    }
    Ok(slices)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use cedar_policy::Policy;

    fn reads_time(src: &str) -> bool {
        super::reads_time(&Policy::from_str(src).unwrap())
    }

    #[test]
    fn operator_schemas_extend_the_sigil_namespace_with_sigils_context() {
        let ok = r#"namespace Sigil { entity Doc; action "read" appliesTo { principal: [User], resource: [Doc], context: Context }; action "write" appliesTo { principal: [User], resource: [Doc], context: Sigil::Context }; action "all"; }"#;
        super::build_schema(Some(ok)).unwrap();
        for (bad, says) in [
            (r#"entity Doc;"#, "inside `namespace Sigil"),
            (r#"namespace Other { entity Doc; }"#, "not Other"),
            (
                r#"namespace Sigil { entity Doc; action "read" appliesTo { principal: [User], resource: [Doc] }; }"#,
                "action \"read\" must declare `context: Context`",
            ),
            (
                r#"namespace Sigil { entity Doc; action "read" appliesTo { principal: [User], resource: [Doc], context: { why: String } }; }"#,
                "action \"read\"",
            ),
        ] {
            let err = super::build_schema(Some(bad)).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn a_policy_reads_time_unless_every_use_of_context_names_another_attribute() {
        let when = |cond: &str| format!("permit (principal, action, resource) when {{ {cond} }};");
        for cond in [
            "context.time > 5",
            "context[\"time\"] > 5",
            "context has time",
            "context == {\"scope\": \"a\"}",
            "context.scope == \"a\" && context.time > 5",
        ] {
            assert!(reads_time(&when(cond)), "{cond}");
        }
        for cond in [
            "context has scope && context.scope == \"a\"",
            "principal.name == \"time\"",
            "true",
        ] {
            assert!(!reads_time(&when(cond)), "{cond}");
        }
        for p in cedar_policy::PolicySet::from_str(crate::BUILTIN_POLICIES)
            .unwrap()
            .policies()
        {
            assert!(!super::reads_time(p), "{p}");
        }
    }
}
