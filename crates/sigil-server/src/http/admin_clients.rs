//! `/admin/v1/clients` and `/admin/v1/tokens/*`: OAuth clients and token administration.

use axum::Json;
use axum::extract::RawQuery;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sigil_core::model::IdentityRef;
use sigil_core::oauth::client::{ClientSpec, IdJagAudience};
use sigil_core::oauth::{ClientAuthMethod, OAuthClient};
use sigil_crypto::PublicJwks;
use sigil_proto::admin::{ClientView, CreateClient, ListResponse, TokenRequest};

use super::State;
use super::error::ApiError;
use super::extract::Path;
use super::extract::{Admin, ApiJson};
use super::query::{PageOnly, Params};

type Result<T> = std::result::Result<T, ApiError>;

fn view(c: &OAuthClient, secret: Option<String>) -> ClientView {
    ClientView {
        client_id: c.client_id.clone(),
        identity: c.identity_id.to_string(),
        token_endpoint_auth_method: c.auth_method.as_str().to_owned(),
        jwks: c.jwks.as_ref().and_then(|j| serde_json::to_value(j).ok()),
        jwks_uri: c.jwks_uri.clone(),
        dpop_bound_access_tokens: c.dpop_required,
        redirect_uris: c.redirect_uris.clone(),
        id_jag_audiences: c
            .id_jag_audiences
            .iter()
            .filter_map(|a| serde_json::to_value(a).ok())
            .collect(),
        created_at: c.created_at,
        created_by: c.created_by.clone(),
        client_secret: secret,
    }
}

pub async fn create(
    axum::extract::State(app): State,
    Admin(ctx): Admin,
    ApiJson(req): ApiJson<CreateClient>,
) -> Result<Response> {
    let method = ClientAuthMethod::parse(&req.token_endpoint_auth_method)?;
    let identity = IdentityRef::parse(&req.identity).map_err(|e| ApiError::invalid("identity", e.to_string()))?;
    let jwks = req
        .jwks
        .map(serde_json::from_value::<PublicJwks>)
        .transpose()
        .map_err(|e| ApiError::invalid("jwks", format!("not a JWK Set: {e}")))?;
    let id_jag_audiences = req
        .id_jag_audiences
        .into_iter()
        .map(serde_json::from_value::<IdJagAudience>)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| ApiError::invalid("id_jag_audiences", format!("expected {{audience, client_id?}}: {e}")))?;
    let (client, secret) = app
        .oauth
        .create_client(
            &ctx,
            &identity,
            ClientSpec {
                method: Some(method),
                jwks,
                jwks_uri: req.jwks_uri,
                dpop_required: req.dpop_bound_access_tokens,
                redirect_uris: req.redirect_uris,
                id_jag_audiences,
            },
        )
        .await?;
    let secret = secret.map(|s| s.as_str().to_owned());
    Ok((StatusCode::CREATED, Json(view(&client, secret))).into_response())
}

pub async fn list(axum::extract::State(app): State, Admin(_): Admin, RawQuery(q): RawQuery) -> Result<Response> {
    let p = Params::parse(q.as_deref(), &["identity"])?;
    let identity = p.parsed("identity", IdentityRef::parse)?;
    let page = app.oauth.list_clients(identity.as_ref(), p.page()?).await?;
    Ok(Json(ListResponse {
        items: page.items.iter().map(|c| view(c, None)).collect(),
        next_cursor: page.next_cursor,
    })
    .into_response())
}

pub async fn show(axum::extract::State(app): State, Admin(_): Admin, Path(id): Path<String>) -> Result<Response> {
    Ok(Json(view(&app.oauth.get_client(&id).await?, None)).into_response())
}

pub async fn delete(axum::extract::State(app): State, Admin(ctx): Admin, Path(id): Path<String>) -> Result<Response> {
    app.oauth.delete_client(&ctx, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Admin revocation of any token (RFC 7009 semantics: unknown tokens are not an error).
pub async fn revoke(
    axum::extract::State(app): State,
    Admin(ctx): Admin,
    ApiJson(req): ApiJson<TokenRequest>,
) -> Result<Response> {
    app.oauth
        .revoke(&req.token, None, &ctx.principal, ctx.request_id.as_deref())
        .await
        .map_err(|e| ApiError::Invalid {
            field: Some("token".into()),
            message: e.description,
        })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Admin introspection (same answer as RFC 7662).
pub async fn introspect(
    axum::extract::State(app): State,
    Admin(ctx): Admin,
    ApiJson(req): ApiJson<TokenRequest>,
) -> Result<Response> {
    let r = app
        .oauth
        .introspect(&req.token, ctx.principal.as_str(), None, ctx.request_id.as_deref())
        .await
        .map_err(|_| ApiError::Unavailable)?;
    Ok(Json(r).into_response())
}

/// `GET /admin/v1/registration-tokens`: the initial access tokens still in force.
pub async fn list_registration_tokens(
    axum::extract::State(app): State,
    Admin(_): Admin,
    PageOnly(p): PageOnly,
) -> Result<Response> {
    let items = app
        .oauth
        .list_registration_tokens()
        .await?
        .into_iter()
        .map(|t| sigil_proto::admin::RegistrationTokenSummary {
            id: t.id,
            owner: t.owner.to_string(),
            identity: t.identity.map(|i| i.to_string()),
            expires_at: t.expires_at,
            created_at: t.created_at,
            created_by: t.created_by,
        })
        .collect();
    Ok(Json(p.page_of(items)?).into_response())
}

/// `DELETE /admin/v1/registration-tokens/{id}`: revokes an initial access token.
pub async fn revoke_registration_token(
    axum::extract::State(app): State,
    Admin(ctx): Admin,
    Path(id): Path<String>,
) -> Result<Response> {
    app.oauth.revoke_registration_token(&ctx, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /admin/v1/registration-tokens`: an initial access token for RFC 7591 registration.
pub async fn create_registration_token(
    axum::extract::State(app): State,
    Admin(ctx): Admin,
    ApiJson(req): ApiJson<sigil_proto::admin::CreateRegistrationToken>,
) -> Result<Response> {
    let owner = sigil_core::model::UserRef::parse(&req.owner).map_err(|e| ApiError::invalid("owner", e.to_string()))?;
    let identity = req
        .identity
        .as_deref()
        .map(IdentityRef::parse)
        .transpose()
        .map_err(|e| ApiError::invalid("identity", e.to_string()))?;
    let ttl = req.ttl_seconds.unwrap_or(3600);
    if !(60..=30 * 86_400).contains(&ttl) {
        return Err(ApiError::invalid(
            "ttl_seconds",
            "must be between 60 seconds (1m) and 2592000 seconds (30d)",
        ));
    }
    let (t, token) = app
        .oauth
        .create_registration_token(&ctx, &owner, identity.as_ref(), std::time::Duration::from_secs(ttl))
        .await?;
    let view = sigil_proto::admin::RegistrationTokenView {
        id: t.id,
        token: token.as_str().to_owned(),
        owner: t.owner.to_string(),
        identity: t.identity.map(|i| i.to_string()),
        expires_at: t.expires_at,
        registration_endpoint: format!("{}/register", app.issuer),
    };
    Ok((StatusCode::CREATED, Json(view)).into_response())
}
