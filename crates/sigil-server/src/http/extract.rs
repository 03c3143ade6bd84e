//! Extractors that turn bad input into precise problems instead of axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use sigil_core::model::Principal;
use sigil_core::registry::{Ctx, IfMatch};

use super::error::ApiError;
use super::middleware::RequestId;
use crate::app::App;

/// A JSON body that must be `application/json`, within the size limit, and match `T` exactly
/// (request DTOs reject unknown fields).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<std::sync::Arc<App>> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &std::sync::Arc<App>) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let limit = state.config.max_body_bytes;
        let bytes = read_body(req.into_body(), limit)
            .await
            .map_err(|e| e.api_error(limit))?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Why a request body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Larger than the limit (413).
    TooLarge,
    /// Not a well-formed body: a broken chunked encoding, or a connection that failed while it
    /// was read (400: RFC 9112 §7.1 makes it a framing error, not a size).
    Malformed,
}

impl BodyError {
    pub const MALFORMED: &str = "the request body could not be read (malformed chunked encoding?)";

    pub fn api_error(self, limit: usize) -> ApiError {
        match self {
            Self::TooLarge => ApiError::TooLarge(limit),
            Self::Malformed => ApiError::Invalid {
                field: None,
                message: Self::MALFORMED.into(),
            },
        }
    }
}

/// Reads a request body of at most `limit` bytes.
pub async fn read_body(body: axum::body::Body, limit: usize) -> Result<Bytes, BodyError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let inner = e.into_inner();
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(inner.as_ref());
        while let Some(err) = cause {
            if err.is::<http_body_util::LengthLimitError>() {
                return BodyError::TooLarge;
            }
            cause = err.source();
        }
        BodyError::Malformed
    })
}

/// The error for a path segment that names no user, identity or resource: a Sigil id of
/// another kind (`usr_…` under `/agents`) is well formed but names nothing there (404);
/// anything else that does not parse is malformed (400).
pub fn bad_path_name(what: &str, s: &str, e: impl std::fmt::Display) -> ApiError {
    use sigil_types::{IdentityId, ResourceId, UserId};
    if UserId::looks_like(s) || IdentityId::looks_like(s) || ResourceId::looks_like(s) {
        ApiError::NotFound(format!("no {what} {s}"))
    } else {
        ApiError::invalid(what, e.to_string())
    }
}

pub(super) fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            let m = m.trim().to_ascii_lowercase();
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        })
}

/// A body that may be empty (treated as `{}`), for action endpoints with optional options; one
/// that is not empty must be `application/json`, as for [`ApiJson`].
#[derive(Debug)]
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<std::sync::Arc<App>> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &std::sync::Arc<App>) -> Result<Self, ApiError> {
        let json = is_json(req.headers());
        let limit = state.config.max_body_bytes;
        let bytes = read_body(req.into_body(), limit)
            .await
            .map_err(|e| e.api_error(limit))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        if !json {
            return Err(ApiError::UnsupportedMediaType);
        }
        parse_json(&bytes).map(OptionalJson)
    }
}

/// Every request body of the API is a JSON object. serde would also take a struct's fields as
/// an array in declaration order; that is not part of the API, so it is refused up front.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::Invalid {
            field: None,
            message: "invalid JSON body: expected a JSON object".into(),
        });
    }
    // Strict: a member given twice is refused rather than silently taking the last value.
    let invalid = |e: serde_json::Error| ApiError::Invalid {
        field: None,
        message: format!("invalid JSON body: {e}"),
    };
    let value = super::strict_json::parse(bytes).map_err(invalid)?;
    serde_json::from_value(value).map_err(invalid)
}

/// An authenticated admin caller, with the request id, ready for the registry.
#[derive(Debug)]
pub struct Admin(pub Ctx);

impl FromRequestParts<std::sync::Arc<App>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &std::sync::Arc<App>) -> Result<Self, ApiError> {
        let rid = parts.extensions.get::<RequestId>().map(|r| r.0.clone());
        let token = super::oauth::bearer_token(&parts.headers);
        let source = parts
            .extensions
            .get::<axum::extract::ConnectInfo<crate::serve::PeerAddr>>()
            .map_or_else(|| "unknown".to_owned(), |c| c.0.0.ip().to_string());
        let principal: Principal = app.admin.authenticate(token, rid.as_deref(), &source).await?;
        Ok(Admin(Ctx::new(principal, rid).with_if_match(if_match(&parts.headers))))
    }
}

/// `If-Match` (RFC 9110 §13.1.1), every field line of it. A record's entity tag is its version
/// in quotes; weak tags never match (strong comparison), nor do tags that name no version.
fn if_match(headers: &axum::http::HeaderMap) -> Option<IfMatch> {
    let mut lines = headers.get_all(header::IF_MATCH).iter().peekable();
    lines.peek()?;
    let mut versions = Vec::new();
    for tag in lines.flat_map(|v| v.to_str().unwrap_or_default().split(',')) {
        let tag = tag.trim();
        if tag == "*" {
            return Some(IfMatch::Any);
        }
        if let Some(v) = tag
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .and_then(|t| t.parse().ok())
        {
            versions.push(v);
        }
    }
    Some(IfMatch::Versions(versions))
}

/// A record's representation with its entity tag (its version), for `If-Match` on the next
/// change.
pub fn tagged(body: impl serde::Serialize, version: i64) -> Response {
    let mut resp = axum::Json(body).into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(&format!("\"{version}\"")) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

/// Path parameters, refused as a problem (400) when a segment does not decode (not UTF-8, say)
/// instead of axum's plain-text rejection.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|e| ApiError::Invalid {
                field: None,
                message: format!("the request path: {}", e.body_text()),
            })
    }
}
