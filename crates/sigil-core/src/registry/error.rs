use sigil_types::ParseError;

use crate::store::StoreError;

/// Why a registry operation was refused. Messages are safe to show to the caller.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The request names something invalid (bad field value, owner that does not exist…).
    #[error("{message}")]
    Invalid { field: &'static str, message: String },
    #[error("{what} {key:?} not found")]
    NotFound { what: &'static str, key: String },
    /// The request conflicts with the current state (duplicate, illegal transition…).
    #[error("{0}")]
    Conflict(String),
    /// An `If-Match` precondition did not hold: the record changed since the caller read it.
    #[error("{0}")]
    PreconditionFailed(String),
    #[error(transparent)]
    Store(StoreError),
}

impl RegistryError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            message: message.into(),
        }
    }

    pub fn not_found(what: &'static str, key: impl ToString) -> Self {
        Self::NotFound {
            what,
            key: key.to_string(),
        }
    }
}

impl From<ParseError> for RegistryError {
    fn from(e: ParseError) -> Self {
        Self::Invalid {
            field: e.what,
            message: e.to_string(),
        }
    }
}

impl From<StoreError> for RegistryError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Duplicate { .. } => Self::Conflict(e.to_string()),
            StoreError::StillReferenced { entity: "user" } => {
                Self::Conflict("the user still owns identities or resources; transfer ownership first".into())
            }
            StoreError::StillReferenced { .. } => Self::Conflict(e.to_string()),
            StoreError::MissingReference { entity } => {
                Self::Conflict(format!("the referenced {entity} no longer exists"))
            }
            other => Self::Store(other),
        }
    }
}
