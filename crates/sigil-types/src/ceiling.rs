//! The capability ceiling of a non-human identity.

use std::collections::BTreeSet;

use crate::{ResourceUri, ScopeSet};

/// The most an identity may ever be granted. Token issuance narrows within it, never beyond.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ceiling {
    /// Scopes the identity may ever hold.
    #[serde(default)]
    pub scopes: ScopeSet,
    /// Resources it may ever get tokens for; `None` means any registered resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<BTreeSet<ResourceUri>>,
}
