//! `/admin/v1/entries`: SPIFFE registration entries.

use std::time::Duration;

use axum::Json;
use axum::extract::RawQuery;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sigil_core::spiffe::entries::{EntrySpec, RegistrationEntry};
use sigil_proto::admin::{EntryRequest, EntryView};

use super::State;
use super::error::ApiError;
use super::extract::Path;
use super::extract::{Admin, ApiJson};
use super::query::Params;

type Result<T> = std::result::Result<T, ApiError>;

fn view(e: &RegistrationEntry) -> EntryView {
    EntryView {
        id: e.id.clone(),
        spiffe_id: e.spiffe_id.to_string(),
        parent_id: e.parent_id.to_string(),
        selectors: e.selectors.iter().map(|s| s.as_str().to_owned()).collect(),
        identity: e.identity_id.as_ref().map(ToString::to_string),
        x509_ttl_seconds: e.x509_ttl.as_secs(),
        jwt_ttl_seconds: e.jwt_ttl.as_secs(),
        dns_names: e.dns_names.clone(),
        created_at: e.meta.created_at,
        updated_at: e.meta.updated_at,
        version: e.meta.version,
    }
}

fn spec(r: EntryRequest) -> EntrySpec {
    EntrySpec {
        spiffe_id: r.spiffe_id,
        parent_id: r.parent_id,
        selectors: r.selectors,
        identity: r.identity,
        x509_ttl: r.x509_ttl_seconds.map(Duration::from_secs),
        jwt_ttl: r.jwt_ttl_seconds.map(Duration::from_secs),
        dns_names: r.dns_names,
    }
}

pub async fn create(
    axum::extract::State(app): State,
    Admin(ctx): Admin,
    ApiJson(req): ApiJson<EntryRequest>,
) -> Result<Response> {
    let e = app.entries.create(&ctx, spec(req)).await?;
    Ok((StatusCode::CREATED, Json(view(&e))).into_response())
}

pub async fn list(axum::extract::State(app): State, Admin(_): Admin, RawQuery(q): RawQuery) -> Result<Response> {
    let p = Params::parse(q.as_deref(), &["parent_id", "spiffe_id"])?;
    let items = app.entries.list(p.get("parent_id"), p.get("spiffe_id")).await?;
    Ok(Json(p.page_of(items.iter().map(view).collect())?).into_response())
}

pub async fn show(axum::extract::State(app): State, Admin(_): Admin, Path(id): Path<String>) -> Result<Response> {
    Ok(Json(view(&app.entries.get(&id).await?)).into_response())
}

pub async fn update(
    axum::extract::State(app): State,
    Admin(ctx): Admin,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<EntryRequest>,
) -> Result<Response> {
    Ok(Json(view(&app.entries.update(&ctx, &id, spec(req)).await?)).into_response())
}

pub async fn delete(axum::extract::State(app): State, Admin(ctx): Admin, Path(id): Path<String>) -> Result<Response> {
    app.entries.delete(&ctx, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
