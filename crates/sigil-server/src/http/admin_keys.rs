//! `/admin/v1/keys`: list signing keys and start a rotation.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sigil_core::registry::key_view;
use sigil_crypto::Algorithm;
use sigil_proto::admin::RotateKeyRequest;

use super::State;
use super::error::ApiError;
use super::extract::{Admin, OptionalJson};
use super::query::PageOnly;

pub async fn list(
    axum::extract::State(app): State,
    Admin(_): Admin,
    PageOnly(p): PageOnly,
) -> Result<Response, ApiError> {
    app.keys.refresh().await?;
    let items = app.keys.stored_keys().iter().map(key_view).collect();
    Ok(Json(p.page_of(items)?).into_response())
}

pub async fn rotate(
    axum::extract::State(app): State,
    Admin(ctx): Admin,
    OptionalJson(req): OptionalJson<RotateKeyRequest>,
) -> Result<Response, ApiError> {
    let alg = req
        .alg
        .map(|a| {
            Algorithm::parse(&a).ok_or_else(|| {
                ApiError::invalid(
                    "alg",
                    "must be EdDSA or ES256 (the token key) or RS256 (the ID token key)",
                )
            })
        })
        .transpose()?;
    let key = app.keys.rotate(alg, &ctx.principal, ctx.request_id.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(key_view(&key))).into_response())
}
