//! `/admin/v1/trusted-issuers`: enterprise identity providers whose tokens Sigil accepts.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sigil_core::oauth::enterprise::NewTrustedIssuer;
use sigil_core::oauth::trusted::TrustedIssuer;
use sigil_crypto::PublicJwks;
use sigil_proto::admin::{CreateTrustedIssuer, TrustedIssuerView};

use super::State;
use super::error::ApiError;
use super::extract::Path;
use super::extract::{Admin, ApiJson};
use super::query::PageOnly;

type Result<T> = std::result::Result<T, ApiError>;

fn view(t: &TrustedIssuer) -> TrustedIssuerView {
    TrustedIssuerView {
        id: t.id.clone(),
        issuer: t.issuer.clone(),
        jwks: t.jwks.as_ref().and_then(|j| serde_json::to_value(j).ok()),
        jwks_uri: t.jwks_uri.clone(),
        username_claim: t.username_claim.clone(),
        audiences: t.audiences.clone(),
        accept_id_jag: t.accept_id_jag,
        created_at: t.created_at,
        created_by: t.created_by.clone(),
    }
}

pub async fn create(
    axum::extract::State(app): State,
    Admin(ctx): Admin,
    ApiJson(req): ApiJson<CreateTrustedIssuer>,
) -> Result<Response> {
    let jwks = req
        .jwks
        .map(serde_json::from_value::<PublicJwks>)
        .transpose()
        .map_err(|e| ApiError::invalid("jwks", format!("not a JWK Set: {e}")))?;
    let t = app
        .oauth
        .add_trusted_issuer(
            &ctx,
            NewTrustedIssuer {
                issuer: req.issuer,
                jwks,
                jwks_uri: req.jwks_uri,
                username_claim: req.username_claim,
                audiences: req.audiences,
                accept_id_jag: req.accept_id_jag,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(view(&t))).into_response())
}

pub async fn list(axum::extract::State(app): State, Admin(_): Admin, PageOnly(p): PageOnly) -> Result<Response> {
    let items = app.oauth.list_trusted_issuers().await?.iter().map(view).collect();
    Ok(Json(p.page_of(items)?).into_response())
}

pub async fn delete(axum::extract::State(app): State, Admin(ctx): Admin, Path(id): Path<String>) -> Result<Response> {
    app.oauth.delete_trusted_issuer(&ctx, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
