//! The port through which the token endpoint asks the policy layer which scopes an identity may
//! receive. Implemented by `sigil-policy` (Cedar), so this crate stays free of it.

use sigil_types::Timestamp;

use crate::model::{Identity, Resource};

/// One issuance question: may `identity` receive `scope` for `resource`?
#[derive(Debug, Clone, Copy)]
pub struct ScopeQuestion<'a> {
    pub identity: &'a Identity,
    /// The identity's owner's username.
    pub owner: &'a str,
    pub resource: &'a Resource,
    pub resource_owner: &'a str,
    pub scope: &'a str,
    /// How the client authenticated: private_key_jwt, client_secret, …
    pub auth_method: &'a str,
    pub dpop_bound: bool,
    pub now: Timestamp,
}

/// The policy's answer, with the evidence for the audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeAnswer {
    pub allowed: bool,
    pub policy_version: u64,
    pub determining: Vec<String>,
    pub reason: Option<String>,
}

pub trait IssuancePolicy: Send + Sync + std::fmt::Debug {
    /// `Err` when the question cannot be decided (a model error); callers treat it as a deny.
    fn decide_scope(&self, q: &ScopeQuestion<'_>) -> Result<ScopeAnswer, String>;
}
