//! The port through which the token endpoint asks the policy layer which scopes an identity may
//! receive. Implemented by `sigil-policy` (Cedar), so this crate stays free of it.

use sigil_types::Timestamp;

use crate::model::{Identity, Resource, User};

/// One principal of the chain a token is issued to.
#[derive(Debug, Clone, Copy)]
pub enum ChainPrincipal<'a> {
    /// The user a delegated token is for.
    User(&'a User),
    /// An agent or workload, with its owner's username.
    Identity { identity: &'a Identity, owner: &'a str },
}

/// One issuance question: which of `scopes` may the chain (the user first if any, then each
/// actor from the one closest to the user outwards) receive for `resource`? Every member must be
/// permitted each scope.
#[derive(Debug, Clone, Copy)]
pub struct ScopeQuestion<'a> {
    pub chain: &'a [ChainPrincipal<'a>],
    pub resource: &'a Resource,
    pub resource_owner: &'a str,
    pub scopes: &'a [&'a str],
    /// How the client authenticated: private_key_jwt, client_secret, …
    pub auth_method: &'a str,
    pub dpop_bound: bool,
    pub now: Timestamp,
}

/// The policy's answer about one scope, with the evidence for the audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeAnswer {
    pub allowed: bool,
    pub policy_version: u64,
    pub determining: Vec<String>,
    pub reason: Option<String>,
}

pub trait IssuancePolicy: Send + Sync + std::fmt::Debug {
    /// One answer per scope of the question, in its order. `Err` when the question cannot be
    /// decided (a model error); callers treat it as a deny.
    fn decide_scopes(&self, q: &ScopeQuestion<'_>) -> Result<Vec<ScopeAnswer>, String>;
}
