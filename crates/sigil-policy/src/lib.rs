//! Sigil's authorization model on Cedar: the schema, the built-in policies, and the engine that
//! decides a request for a whole delegation chain.
//!
//! A policy set version is compiled once (schema built from fragments, policies parsed and
//! strictly validated, then sliced by action and indexed by principal scope); deciding never
//! parses a policy or an entity.

mod engine;
mod entities;
mod error;
mod principal_slice;
mod service;

pub use engine::{Decision, Engine, Step};
pub use entities::{ChainMember, Query, RequestContext, ResourceInput, is_builtin_type};
pub use error::{PolicyError, RequestError};
pub use service::{Activated, MAX_POLICY_BYTES, PolicyAdminError, PolicyService};

/// The checked-in Cedar schema for Sigil's world.
pub const BUILTIN_SCHEMA: &str = include_str!("../schema/sigil.cedarschema");
/// The built-in policies, always part of every policy set version.
pub const BUILTIN_POLICIES: &str = include_str!("../schema/builtin.cedar");
/// The namespace every Sigil entity type and action lives in.
pub const NAMESPACE: &str = "Sigil";
/// Sigil's own action at the token endpoint.
pub const TOKEN_ISSUE: &str = "token.issue";
