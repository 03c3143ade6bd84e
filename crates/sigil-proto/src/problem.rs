//! Problem details for HTTP APIs (RFC 9457).

use serde::{Deserialize, Serialize};

/// The media type of a problem body (RFC 9457 §3).
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// One invalid field, so a client can point at what to fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// An RFC 9457 problem. `type` is a URN naming the kind of problem; `detail` says what went wrong
/// with this request in words safe to show (never internals).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// The request id, to find the matching log lines and audit records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl Problem {
    pub fn new(slug: &str, title: &str, status: u16, detail: impl Into<String>) -> Self {
        Self {
            type_: format!("urn:sigil:problem:{slug}"),
            title: title.to_owned(),
            status,
            detail: Some(detail.into()),
            instance: None,
            errors: Vec::new(),
            request_id: None,
        }
    }

    /// The slug after `urn:sigil:problem:`.
    pub fn slug(&self) -> &str {
        self.type_.strip_prefix("urn:sigil:problem:").unwrap_or(&self.type_)
    }
}
