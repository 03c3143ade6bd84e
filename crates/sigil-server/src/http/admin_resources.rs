//! `/admin/v1/resources`

use axum::Json;
use axum::extract::RawQuery;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sigil_core::model::{ResourceQuery, ResourceRef, UserRef};
use sigil_core::registry::resource_view;
use sigil_proto::admin::{CreateResource, ListResponse, UpdateResource};

use super::State;
use super::error::ApiError;
use super::extract::Path;
use super::extract::{Admin, ApiJson, tagged};
use super::query::Params;

type Result<T> = std::result::Result<T, ApiError>;

fn resource_ref(s: &str) -> Result<ResourceRef> {
    ResourceRef::parse(s).map_err(|e| super::extract::bad_path_name("resource", s, e))
}

pub async fn create(
    axum::extract::State(app): State,
    Admin(ctx): Admin,
    ApiJson(req): ApiJson<CreateResource>,
) -> Result<Response> {
    // A sign-in's tokens are for the UserInfo endpoint: as a registered API it would take
    // tokens the policy decided for that API, and sign-in tokens would reach its servers.
    if req.uri.as_str() == app.oauth.config().userinfo_endpoint {
        return Err(sigil_core::registry::RegistryError::invalid(
            "uri",
            "that is Sigil's own UserInfo endpoint, not an API",
        )
        .into());
    }
    let r = app.registry.create_resource(&ctx, req).await?;
    Ok((StatusCode::CREATED, Json(resource_view(&r))).into_response())
}

pub async fn list(axum::extract::State(app): State, Admin(_): Admin, RawQuery(q): RawQuery) -> Result<Response> {
    let p = Params::parse(q.as_deref(), &["owner"])?;
    let owner = match p.parsed("owner", UserRef::parse)? {
        Some(r) => match app.store.get_user(&r).await? {
            Some(u) => Some(u.id),
            None => {
                return Ok(Json(ListResponse::<()> {
                    items: vec![],
                    next_cursor: None,
                })
                .into_response());
            }
        },
        None => None,
    };
    let page = app
        .registry
        .list_resources(&ResourceQuery { owner, page: p.page()? })
        .await?;
    Ok(Json(ListResponse {
        items: page.items.iter().map(resource_view).collect(),
        next_cursor: page.next_cursor,
    })
    .into_response())
}

pub async fn show(axum::extract::State(app): State, Admin(_): Admin, Path(r): Path<String>) -> Result<Response> {
    let r = app.registry.get_resource(&resource_ref(&r)?).await?;
    Ok(tagged(resource_view(&r), r.meta.version))
}

/// `GET /admin/v1/resources/{resource}/metadata`: the RFC 9728 Protected Resource Metadata
/// document the resource server (an MCP server, an API) should publish at
/// `/.well-known/oauth-protected-resource`, naming this server as its authorization server.
pub async fn metadata(axum::extract::State(app): State, Admin(_): Admin, Path(r): Path<String>) -> Result<Response> {
    let r = app.registry.get_resource(&resource_ref(&r)?).await?;
    if !r.uri.is_protected_resource_url() {
        return Err(ApiError::invalid(
            "resource",
            format!(
                "{} cannot be an RFC 9728 resource identifier: it must be an https URL (http only on a loopback host)",
                r.uri
            ),
        ));
    }
    let mut doc = serde_json::json!({
        "resource": r.uri.as_str(),
        "authorization_servers": [app.issuer],
        "bearer_methods_supported": ["header"],
        "resource_name": r.name.as_str(),
        "dpop_signing_alg_values_supported": sigil_crypto::ClientAlg::ALL,
    });
    // RFC 9728 §2: scopes_supported is OPTIONAL; an empty list would say "no scope exists".
    if !r.scopes.is_empty()
        && let Some(o) = doc.as_object_mut()
    {
        let scopes: Vec<&str> = r.scopes.iter().map(|s| s.as_str()).collect();
        o.insert("scopes_supported".into(), scopes.into());
    }
    Ok(Json(doc).into_response())
}

pub async fn update(
    axum::extract::State(app): State,
    Admin(ctx): Admin,
    Path(r): Path<String>,
    ApiJson(patch): ApiJson<UpdateResource>,
) -> Result<Response> {
    let r = app.registry.update_resource(&ctx, &resource_ref(&r)?, patch).await?;
    Ok(tagged(resource_view(&r), r.meta.version))
}

pub async fn delete(axum::extract::State(app): State, Admin(ctx): Admin, Path(r): Path<String>) -> Result<Response> {
    app.registry.delete_resource(&ctx, &resource_ref(&r)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
