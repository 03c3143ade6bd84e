use thiserror::Error;

/// A policy set that cannot become a version: each entry is one of Cedar's diagnostics.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("the policy set is invalid: {}", .diagnostics.join("; "))]
pub struct PolicyError {
    pub diagnostics: Vec<String>,
}

impl PolicyError {
    pub fn one(d: impl Into<String>) -> Self {
        Self {
            diagnostics: vec![d.into()],
        }
    }
}

/// A decision request that does not fit the schema (unknown action or entity type, malformed
/// attributes). Never a deny: the caller asked something the model cannot express.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{0}")]
pub struct RequestError(pub String);
