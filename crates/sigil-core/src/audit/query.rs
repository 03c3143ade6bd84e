//! Searching the audit trail.

use sigil_types::Timestamp;

use super::{EventType, Outcome};
use crate::model::PageRequest;

/// Filters for `sigil audit search`; all given filters must match. The cursor is a sequence number.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub event_type: Option<EventType>,
    pub outcome: Option<Outcome>,
    /// Matches records whose acting principal or target is any of these (an agent's id and name).
    pub agent: Vec<String>,
    /// Matches records whose human principal (subject) is any of these (a user's id and name).
    pub user: Vec<String>,
    pub client_id: Option<String>,
    pub request_id: Option<String>,
    pub jti: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub page: PageRequest,
}
