//! An action's policies narrowed, per principal, to those whose principal scope can match it.
//!
//! Cedar joins a policy's scope and its conditions with a short-circuiting `&&`, so a policy
//! whose principal scope does not match the principal is false before any condition is read: it
//! can neither permit, nor forbid, nor err. Leaving it out changes neither the decision, nor the
//! policies that determined it, nor the errors. With many policies per action, each naming its
//! own agent or group, a decision then evaluates the few that name its principal (or a group it
//! is in) instead of all of the action's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use cedar_policy::{Entities, EntityTypeName, EntityUid, Policy, PolicySet, PrincipalConstraint};

use crate::RequestError;

/// Most distinct policy sets one action keeps; past it the cache starts over.
const MAX_CACHED_SETS: usize = 1024;

/// One action's policies, indexed by the entity their principal scope names.
#[derive(Debug)]
pub(crate) struct PrincipalSlices {
    policies: Vec<Policy>,
    /// `principal` or `principal is T`: may apply to any principal (of type T).
    open: Vec<Scope>,
    /// `principal == E`, `principal in E`, `principal is T in E`, by E.
    named: HashMap<EntityUid, Vec<Scope>>,
    /// The policy set for each combination of policies a principal matched.
    sets: Mutex<HashMap<Vec<usize>, Arc<PolicySet>>>,
}

#[derive(Debug)]
struct Scope {
    policy: usize,
    /// `principal == E`: only E itself, not an entity in E.
    equal_only: bool,
    of_type: Option<EntityTypeName>,
}

impl Scope {
    fn admits(&self, principal: &EntityUid, is_named: bool) -> bool {
        (is_named || !self.equal_only) && self.of_type.as_ref().is_none_or(|t| t == principal.type_name())
    }
}

impl PrincipalSlices {
    pub(crate) fn new(slice: &PolicySet) -> Self {
        let mut index = Self {
            policies: Vec::new(),
            open: Vec::new(),
            named: HashMap::new(),
            sets: Mutex::default(),
        };
        for (policy, p) in slice.policies().enumerate() {
            let scope = |equal_only, of_type| Scope {
                policy,
                equal_only,
                of_type,
            };
            match p.principal_constraint() {
                PrincipalConstraint::Any => index.open.push(scope(false, None)),
                PrincipalConstraint::Is(t) => index.open.push(scope(false, Some(t))),
                PrincipalConstraint::Eq(e) => index.named.entry(e).or_default().push(scope(true, None)),
                PrincipalConstraint::In(e) => index.named.entry(e).or_default().push(scope(false, None)),
                PrincipalConstraint::IsIn(t, e) => index.named.entry(e).or_default().push(scope(false, Some(t))),
            }
            index.policies.push(p.clone());
        }
        index
    }

    /// The policies whose principal scope matches `principal`, given its ancestors in
    /// `entities` (which hold their transitive closure).
    pub(crate) fn for_principal(
        &self,
        principal: &EntityUid,
        entities: &Entities,
    ) -> Result<Arc<PolicySet>, RequestError> {
        let mut picked: Vec<usize> = self
            .open
            .iter()
            .filter(|s| s.admits(principal, false))
            .map(|s| s.policy)
            .collect();
        let ancestors = entities.ancestors(principal).into_iter().flatten();
        for (entity, is_named) in std::iter::once((principal, true)).chain(ancestors.map(|a| (a, false))) {
            let scopes = self.named.get(entity).into_iter().flatten();
            picked.extend(scopes.filter(|s| s.admits(principal, is_named)).map(|s| s.policy));
        }
        picked.sort_unstable();
        picked.dedup();
        let mut sets = self.sets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(set) = sets.get(&picked) {
            return Ok(Arc::clone(set));
        }
        let mut set = PolicySet::new();
        for p in picked.iter().filter_map(|&i| self.policies.get(i)) {
            set.add(p.clone())
                .map_err(|e| RequestError(format!("cannot slice the policies: {e}")))?;
        }
        let set = Arc::new(set);
        if sets.len() >= MAX_CACHED_SETS {
            sets.clear();
        }
        sets.insert(picked, Arc::clone(&set));
        Ok(set)
    }
}
