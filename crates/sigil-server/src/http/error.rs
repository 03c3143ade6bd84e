//! The one table that maps every error to a response: RFC 9457 problem+json for the admin API.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sigil_core::admin_auth::AdminAuthError;
use sigil_core::keys::KeyError;
use sigil_core::registry::RegistryError;
use sigil_core::store::StoreError;
use sigil_proto::problem::{FieldError, PROBLEM_CONTENT_TYPE, Problem};
use sigil_types::ParseError;

/// Every way an API request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    Invalid { field: Option<String>, message: String },
    /// A policy set that does not parse or validate: each of Cedar's diagnostics.
    #[error("the policy set is invalid ({} diagnostics)", .0.len())]
    InvalidPolicy(Vec<String>),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// The request sent no admin credential at all.
    #[error("missing admin credential")]
    MissingCredential,
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(String),
    /// RFC 9110 §13.1.1: an `If-Match` condition was false.
    #[error("{0}")]
    PreconditionFailed(String),
    /// A node API call without a valid node proof.
    #[error("{0}")]
    NodeUnauthenticated(String),
    /// Too much work in flight: retry after the given number of seconds.
    #[error("the server is overloaded; retry later")]
    Overloaded(u32),
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("expected content-type application/json")]
    UnsupportedMediaType,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("the service is temporarily unavailable")]
    Unavailable,
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::Invalid { .. } => (StatusCode::BAD_REQUEST, "invalid-input", "Invalid input"),
            Self::InvalidPolicy(_) => (StatusCode::BAD_REQUEST, "invalid-policy", "Invalid policy"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            Self::MissingCredential | Self::Unauthorized(_) => {
                (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized")
            }
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            Self::PreconditionFailed(_) => (
                StatusCode::PRECONDITION_FAILED,
                "precondition-failed",
                "Precondition failed",
            ),
            Self::NodeUnauthenticated(_) => (StatusCode::UNAUTHORIZED, "node-unauthenticated", "Unauthorized"),
            Self::Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, "overloaded", "Service unavailable"),
            Self::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", "Payload too large"),
            Self::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            Self::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable"),
            Self::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug, title) = self.parts();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        } else {
            tracing::info!(status = status.as_u16(), error = %self, "request refused");
        }
        let mut problem = Problem::new(slug, title, status.as_u16(), self.to_string());
        if let Self::Invalid {
            field: Some(f),
            message,
        } = &self
        {
            problem.errors.push(FieldError {
                field: f.clone(),
                message: message.clone(),
            });
        }
        if let Self::InvalidPolicy(diagnostics) = &self {
            problem.errors.extend(diagnostics.iter().map(|d| FieldError {
                field: "policies".into(),
                message: d.clone(),
            }));
        }
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut resp = (status, body).into_response();
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_CONTENT_TYPE));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Self::Overloaded(secs) = self {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Self::NodeUnauthenticated(_) = self {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("SigilNode"));
        }
        // RFC 6750 §3.1: a request that sent no credential gets the bare challenge.
        let challenge = match self {
            Self::MissingCredential => Some("Bearer realm=\"sigil-admin\"".to_owned()),
            Self::Unauthorized(why) => Some(format!(
                "Bearer realm=\"sigil-admin\", error=\"invalid_token\", error_description=\"{why}\""
            )),
            _ => None,
        };
        if let Some(v) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            headers.insert(header::WWW_AUTHENTICATE, v);
        }
        resp
    }
}

impl From<ParseError> for ApiError {
    fn from(e: ParseError) -> Self {
        Self::invalid(e.what, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(why) => {
                tracing::error!(error = why, "store unavailable");
                Self::Unavailable
            }
            StoreError::Corrupt(why) => {
                tracing::error!(error = why, "stored data is corrupt");
                Self::Internal
            }
            other => Self::Conflict(other.to_string()),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Invalid { field, message } => Self::Invalid {
                field: Some(field.into()),
                message,
            },
            RegistryError::NotFound { .. } => Self::NotFound(e.to_string()),
            RegistryError::Conflict(m) => Self::Conflict(m),
            RegistryError::PreconditionFailed(m) => Self::PreconditionFailed(m),
            RegistryError::Store(s) => s.into(),
        }
    }
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Store(s) => s.into(),
            KeyError::RotationPending(_) => Self::Conflict(e.to_string()),
            other => {
                tracing::error!(error = %other, "key manager failed");
                Self::Internal
            }
        }
    }
}

impl From<AdminAuthError> for ApiError {
    fn from(e: AdminAuthError) -> Self {
        match e {
            AdminAuthError::Missing => Self::MissingCredential,
            AdminAuthError::Invalid => Self::Unauthorized("invalid admin credential"),
            AdminAuthError::Unavailable => Self::Unavailable,
        }
    }
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

impl From<sigil_policy::PolicyAdminError> for ApiError {
    fn from(e: sigil_policy::PolicyAdminError) -> Self {
        use sigil_policy::PolicyAdminError as E;
        match e {
            E::Invalid(p) => Self::InvalidPolicy(p.diagnostics),
            E::NotFound(_) => Self::NotFound(e.to_string()),
            E::Conflict(m) => Self::Conflict(m),
            E::Store(s) => s.into(),
        }
    }
}
