//! `/admin/v1/agents` and `/admin/v1/workloads`: the same resource shape, two families.

use axum::Json;
use axum::extract::RawQuery;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sigil_core::model::{IdentityFamily, IdentityQuery, IdentityRef, UserRef};
use sigil_core::registry::identity_view;
use sigil_proto::admin::{CreateIdentity, ListResponse, StatusChangeRequest, UpdateIdentity};
use sigil_types::{IdentityKind, IdentityStatus, Labels, StatusChange, TeamName};

use super::State;
use super::error::ApiError;
use super::extract::Path;
use super::extract::{Admin, ApiJson, OptionalJson, tagged};
use super::query::Params;

type Result<T> = std::result::Result<T, ApiError>;

fn identity_ref(s: &str) -> Result<IdentityRef> {
    IdentityRef::parse(s).map_err(|e| super::extract::bad_path_name("identity", s, e))
}

async fn create(app: State, ctx: Admin, family: IdentityFamily, req: CreateIdentity) -> Result<Response> {
    let axum::extract::State(app) = app;
    let i = app.registry.create_identity(&ctx.0, family, req).await?;
    Ok((StatusCode::CREATED, Json(identity_view(&i, app.clock.now()))).into_response())
}

async fn list(app: State, family: IdentityFamily, raw: Option<String>) -> Result<Response> {
    let axum::extract::State(app) = app;
    let p = Params::parse(raw.as_deref(), &["owner", "status", "kind", "label", "team"])?;
    let owner = match p.parsed("owner", UserRef::parse)? {
        Some(r) => match app.store.get_user(&r).await? {
            Some(u) => Some(u.id),
            // An unknown owner owns nothing: an empty page, not an error.
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
    let labels = p
        .all("label")
        .map(Labels::parse_pair)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| ApiError::invalid("label", e.to_string()))?;
    let query = IdentityQuery {
        family: Some(family),
        kind: p.parsed("kind", IdentityKind::parse)?,
        owner,
        status: p.parsed("status", IdentityStatus::parse)?.map(|s| (s, app.clock.now())),
        team: p.parsed("team", TeamName::parse)?,
        labels,
        page: p.page()?,
    };
    let page = app.registry.list_identities(&query).await?;
    let now = app.clock.now();
    Ok(Json(ListResponse {
        items: page.items.iter().map(|i| identity_view(i, now)).collect(),
        next_cursor: page.next_cursor,
    })
    .into_response())
}

async fn show(app: State, family: IdentityFamily, name: &str) -> Result<Response> {
    let axum::extract::State(app) = app;
    let i = app.registry.get_identity(Some(family), &identity_ref(name)?).await?;
    Ok(tagged(identity_view(&i, app.clock.now()), i.meta.version))
}

async fn update(app: State, ctx: Admin, family: IdentityFamily, name: &str, patch: UpdateIdentity) -> Result<Response> {
    let axum::extract::State(app) = app;
    let i = app
        .registry
        .update_identity(&ctx.0, Some(family), &identity_ref(name)?, patch)
        .await?;
    Ok(tagged(identity_view(&i, app.clock.now()), i.meta.version))
}

async fn change_status(
    app: State,
    ctx: Admin,
    family: IdentityFamily,
    name: &str,
    action: &str,
    req: StatusChangeRequest,
) -> Result<Response> {
    let axum::extract::State(app) = app;
    let change = StatusChange::parse(action).map_err(|_| {
        ApiError::NotFound(format!(
            "no action {action:?}; expected suspend, resume, revoke or decommission"
        ))
    })?;
    let reason = req.reason.map(|r| r.to_string());
    let i = app
        .registry
        .change_status(&ctx.0, Some(family), &identity_ref(name)?, change, reason)
        .await?;
    Ok(tagged(identity_view(&i, app.clock.now()), i.meta.version))
}

pub async fn create_agent(app: State, ctx: Admin, ApiJson(req): ApiJson<CreateIdentity>) -> Result<Response> {
    create(app, ctx, IdentityFamily::Agents, req).await
}
pub async fn create_workload(app: State, ctx: Admin, ApiJson(req): ApiJson<CreateIdentity>) -> Result<Response> {
    create(app, ctx, IdentityFamily::Workloads, req).await
}
pub async fn list_agents(app: State, _: Admin, RawQuery(q): RawQuery) -> Result<Response> {
    list(app, IdentityFamily::Agents, q).await
}
pub async fn list_workloads(app: State, _: Admin, RawQuery(q): RawQuery) -> Result<Response> {
    list(app, IdentityFamily::Workloads, q).await
}
pub async fn show_agent(app: State, _: Admin, Path(name): Path<String>) -> Result<Response> {
    show(app, IdentityFamily::Agents, &name).await
}
pub async fn show_workload(app: State, _: Admin, Path(name): Path<String>) -> Result<Response> {
    show(app, IdentityFamily::Workloads, &name).await
}
pub async fn update_agent(
    app: State,
    ctx: Admin,
    Path(name): Path<String>,
    ApiJson(p): ApiJson<UpdateIdentity>,
) -> Result<Response> {
    update(app, ctx, IdentityFamily::Agents, &name, p).await
}
pub async fn update_workload(
    app: State,
    ctx: Admin,
    Path(name): Path<String>,
    ApiJson(p): ApiJson<UpdateIdentity>,
) -> Result<Response> {
    update(app, ctx, IdentityFamily::Workloads, &name, p).await
}
pub async fn change_agent_status(
    app: State,
    ctx: Admin,
    Path((name, action)): Path<(String, String)>,
    OptionalJson(req): OptionalJson<StatusChangeRequest>,
) -> Result<Response> {
    change_status(app, ctx, IdentityFamily::Agents, &name, &action, req).await
}
pub async fn change_workload_status(
    app: State,
    ctx: Admin,
    Path((name, action)): Path<(String, String)>,
    OptionalJson(req): OptionalJson<StatusChangeRequest>,
) -> Result<Response> {
    change_status(app, ctx, IdentityFamily::Workloads, &name, &action, req).await
}
