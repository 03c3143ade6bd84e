//! Liveness, readiness, metrics and the public JWKS.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::State;

pub async fn healthz() -> Response {
    (StatusCode::OK, Json(serde_json::json!({"status": "ok"}))).into_response()
}

/// Ready when the store answers and a signing key is loaded.
pub async fn readyz(axum::extract::State(app): State) -> Response {
    let store = app.store.ping().await.is_ok();
    let keys = app.keys.is_ready();
    let status = if store && keys {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": if status == StatusCode::OK { "ready" } else { "not ready" },
        "checks": { "store": store, "keys": keys },
    });
    (status, Json(body)).into_response()
}

pub async fn metrics() -> Response {
    let text = crate::telemetry::metrics().map(|h| h.render()).unwrap_or_default();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response()
}

/// The published verification keys (RFC 7517 JWK Set): pending, active and retired keys.
/// Verifiers may cache the set for a minute, or for `keys.publish_ahead` if that is shorter: a
/// new key is published that long before it signs, and a verifier must have fetched it by then.
pub async fn jwks(axum::extract::State(app): State) -> Response {
    let jwks = app.keys.jwks();
    let max_age = app.config.publish_ahead.as_secs().min(60);
    (
        [
            (header::CONTENT_TYPE, "application/jwk-set+json".to_owned()),
            (header::CACHE_CONTROL, format!("public, max-age={max_age}")),
        ],
        Json(jwks.as_ref().clone()),
    )
        .into_response()
}

/// `GET /spiffe/bundle`: the trust domain's bundle in the SPIFFE bundle format (the `https_web`
/// bundle endpoint profile): X.509 authorities and JWT authorities.
pub async fn spiffe_bundle(axum::extract::State(app): State) -> Response {
    match app.spiffe.bundle() {
        Ok(b) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "public, max-age=60"),
            ],
            Json(b),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "no SPIFFE bundle to serve");
            axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}
