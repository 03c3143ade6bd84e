//! Dynamic client registration: `POST /register` (RFC 7591) and `/register/{client_id}`
//! (RFC 7592), authorized by bearer tokens (RFC 6750).

use axum::Json;
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sigil_core::oauth::{ErrorCode, OAuthError};

use super::State;
use super::middleware::RequestId;

use super::oauth::OAuthBody;
use super::oauth::bearer_token as bearer;

/// The error response; a request that sent no bearer token at all gets a challenge without an
/// error code (RFC 6750 §3.1: it did not know authentication was needed).
fn refusal(headers: &HeaderMap, e: &OAuthError) -> Response {
    let mut resp = super::oauth::error_response(e);
    if e.code == ErrorCode::InvalidToken && bearer(headers).is_none() {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"sigil\""),
        );
    }
    resp
}

/// Records the refusal in the audit trail, then answers it.
async fn refused(
    app: &crate::app::App,
    action: &str,
    client_id: Option<&str>,
    headers: &HeaderMap,
    e: &OAuthError,
    rid: Option<&str>,
) -> Response {
    tracing::info!(action, error = %e, "registration request refused");
    app.oauth.record_refused_registration(action, client_id, e, rid).await;
    refusal(headers, e)
}

fn json_body(headers: &HeaderMap, body: &[u8]) -> Result<serde_json::Value, OAuthError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !ct
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    {
        return Err(OAuthError::invalid_request("the body must be application/json"));
    }
    // Strict: metadata naming a member twice is refused, not read as its last value.
    super::strict_json::parse(body)
        .map_err(|e| OAuthError::new(ErrorCode::InvalidClientMetadata, format!("invalid JSON: {e}")))
}

fn no_store(status: StatusCode, v: serde_json::Value) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")],
        Json(v),
    )
        .into_response()
}

/// `POST /register`
pub async fn register(
    AxState(app): State,
    headers: HeaderMap,
    ext: axum::http::Extensions,
    OAuthBody(body): OAuthBody,
) -> Response {
    let rid = ext.get::<RequestId>().map(|r| r.0.clone());
    let result = async {
        let v = json_body(&headers, &body)?;
        app.oauth
            .register(&app.registry, bearer(&headers), &v, rid.as_deref())
            .await
    }
    .await;
    match result {
        Ok(v) => no_store(StatusCode::CREATED, v),
        Err(e) => refused(&app, "register", None, &headers, &e, rid.as_deref()).await,
    }
}

/// `GET /register/{client_id}` (and `HEAD`, which axum routes here).
pub async fn read(
    AxState(app): State,
    method: axum::http::Method,
    headers: HeaderMap,
    ext: axum::http::Extensions,
    Path(id): Path<String>,
) -> Response {
    let rid = ext.get::<RequestId>().map(|r| r.0.clone());
    let result = async {
        let c = app.oauth.managed_client(&id, bearer(&headers), rid.as_deref()).await?;
        if method == axum::http::Method::HEAD {
            // A read answers with a new registration access token and retires the old one; a
            // HEAD response has no body to carry it, so it must not rotate (the client would be
            // locked out of its registration).
            return Ok(serde_json::Value::Null);
        }
        app.oauth.read_registration(c).await
    }
    .await;
    match result {
        Ok(v) => no_store(StatusCode::OK, v),
        Err(e) => refused(&app, "read", Some(&id), &headers, &e, rid.as_deref()).await,
    }
}

/// `PUT /register/{client_id}`
pub async fn update(
    AxState(app): State,
    headers: HeaderMap,
    ext: axum::http::Extensions,
    Path(id): Path<String>,
    OAuthBody(body): OAuthBody,
) -> Response {
    let rid = ext.get::<RequestId>().map(|r| r.0.clone());
    let result = async {
        let c = app.oauth.managed_client(&id, bearer(&headers), rid.as_deref()).await?;
        let v = json_body(&headers, &body)?;
        app.oauth.update_registration(c, &v, rid.as_deref()).await
    }
    .await;
    match result {
        Ok(v) => no_store(StatusCode::OK, v),
        Err(e) => refused(&app, "update", Some(&id), &headers, &e, rid.as_deref()).await,
    }
}

/// `DELETE /register/{client_id}`
pub async fn delete(
    AxState(app): State,
    headers: HeaderMap,
    ext: axum::http::Extensions,
    Path(id): Path<String>,
) -> Response {
    let rid = ext.get::<RequestId>().map(|r| r.0.clone());
    let result = async {
        let c = app.oauth.managed_client(&id, bearer(&headers), rid.as_deref()).await?;
        app.oauth.delete_registration(&app.registry, c, rid.as_deref()).await
    }
    .await;
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => refused(&app, "delete", Some(&id), &headers, &e, rid.as_deref()).await,
    }
}
