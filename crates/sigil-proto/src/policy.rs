//! Admin API bodies for policy set versions, and the AuthZEN 1.0 evaluation API's shapes.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `POST /admin/v1/policies`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadPolicyRequest {
    /// Cedar policies (the operator's; the built-in ones are always added).
    pub policies: String,
    /// A Cedar schema fragment in the `Sigil` namespace: the operator's entity types and actions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Activate the new version at once.
    #[serde(default)]
    pub activate: bool,
}

/// A stored version; `policies` and `schema` only when one version is shown.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyVersionView {
    pub version: u64,
    pub active: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub created_at: String,
    pub created_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
}

/// The answer to an activation or a rollback.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActivationView {
    pub version: u64,
    pub previous: u64,
}

/// `POST /admin/v1/policies/explain`: one AuthZEN-shaped request against a version (the active
/// one by default), answered with every step of the decision.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    pub request: Evaluation,
}

/// One AuthZEN access evaluation (§6). In a batch, missing parts come from the top level.
/// Unknown members are ignored, as the specification requires of receivers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Evaluation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Entity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<Entity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Map<String, Value>>,
}

/// An AuthZEN subject or resource.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entity {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Action {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Map<String, Value>>,
}

/// `POST /access/v1/evaluations` (§7): defaults at the top level, the evaluations, and options.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Evaluations {
    #[serde(flatten)]
    pub defaults: Evaluation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluations: Option<Vec<Evaluation>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Map<String, Value>>,
}

/// An AuthZEN decision.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DecisionView {
    pub decision: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvaluationsView {
    pub evaluations: Vec<DecisionView>,
}
