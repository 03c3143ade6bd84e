//! Stored policy set versions and their activations. Compiling and deciding live in
//! `sigil-policy`; this is what the store keeps.

use serde::Serialize;
use sigil_types::Timestamp;

/// An uploaded policy set: the operator's policies and schema fragment, immutable once stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyVersion {
    pub version: u64,
    pub policies: String,
    pub schema: Option<String>,
    pub description: Option<String>,
    pub created_at: Timestamp,
    pub created_by: String,
}

/// One activation: from `activated_at` on, `version` decides. The latest activation is the
/// active version; rolling back activates the one before it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyActivation {
    pub seq: i64,
    pub version: u64,
    pub activated_at: Timestamp,
    pub activated_by: String,
}
