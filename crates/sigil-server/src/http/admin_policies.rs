//! `/admin/v1/policies`: upload, list, show, activate and roll back policy set versions, and
//! explain one decision against a version.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sigil_core::policy::PolicyVersion;
use sigil_proto::policy::{ActivationView, ExplainRequest, PolicyVersionView, UploadPolicyRequest};

use super::State;
use super::error::ApiError;
use super::extract::Path;
use super::extract::{Admin, ApiJson};
use super::query::PageOnly;
use crate::authz::{EvalError, evaluate};

fn view(v: PolicyVersion, active: u64, with_text: bool) -> PolicyVersionView {
    PolicyVersionView {
        version: v.version,
        active: v.version == active,
        description: v.description,
        created_at: v.created_at.to_rfc3339(),
        created_by: v.created_by,
        policies: with_text.then_some(v.policies),
        schema: if with_text { v.schema } else { None },
    }
}

fn parse_version(s: &str) -> Result<u64, ApiError> {
    s.parse()
        .map_err(|_| ApiError::invalid("version", "must be a positive integer"))
}

pub async fn upload(
    axum::extract::State(app): State,
    Admin(ctx): Admin,
    ApiJson(req): ApiJson<UploadPolicyRequest>,
) -> Result<Response, ApiError> {
    let rid = ctx.request_id.as_deref();
    // The same rules as every other description: it is shown in `policy list` and the trail.
    let description = req
        .description
        .map(|d| sigil_types::Description::parse(&d).map(|d| d.to_string()))
        .transpose()
        .map_err(|e| ApiError::invalid("description", e.to_string()))?;
    let stored = app
        .policy
        .upload(req.policies, req.schema, description, &ctx.principal, rid)
        .await?;
    if req.activate {
        app.policy.activate(stored.version, &ctx.principal, rid).await?;
    }
    let active = app.policy.current().version();
    Ok((StatusCode::CREATED, Json(view(stored, active, true))).into_response())
}

pub async fn list(
    axum::extract::State(app): State,
    Admin(_): Admin,
    PageOnly(p): PageOnly,
) -> Result<Response, ApiError> {
    let active = app.policy.activations(1).await?.first().map_or(0, |a| a.version);
    let items = app
        .policy
        .list()
        .await?
        .into_iter()
        .map(|v| view(v, active, false))
        .collect();
    Ok(Json(p.page_of(items)?).into_response())
}

pub async fn show(
    axum::extract::State(app): State,
    Admin(_): Admin,
    Path(version): Path<String>,
) -> Result<Response, ApiError> {
    let version = parse_version(&version)?;
    let active = app.policy.activations(1).await?.first().map_or(0, |a| a.version);
    let v = app
        .policy
        .get(version)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("policy version {version} does not exist")))?;
    Ok(Json(view(v, active, true)).into_response())
}

pub async fn activate(
    axum::extract::State(app): State,
    Admin(ctx): Admin,
    Path(version): Path<String>,
) -> Result<Response, ApiError> {
    let version = parse_version(&version)?;
    let a = app
        .policy
        .activate(version, &ctx.principal, ctx.request_id.as_deref())
        .await?;
    Ok(Json(ActivationView {
        version: a.version,
        previous: a.previous,
    })
    .into_response())
}

pub async fn rollback(axum::extract::State(app): State, Admin(ctx): Admin) -> Result<Response, ApiError> {
    let a = app.policy.rollback(&ctx.principal, ctx.request_id.as_deref()).await?;
    Ok(Json(ActivationView {
        version: a.version,
        previous: a.previous,
    })
    .into_response())
}

/// The full decision (every principal's step, determining policies, errors) without an audit
/// record: a dry run for operators.
pub async fn explain(
    axum::extract::State(app): State,
    Admin(ctx): Admin,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Response, ApiError> {
    // The request is held to AuthZEN's shapes, as at the AuthZEN endpoints.
    let invalid = |message: String| ApiError::Invalid {
        field: Some("request".into()),
        message,
    };
    if let Some(request) = body.get("request") {
        super::authzen::objects_where_the_spec_says(request).map_err(invalid)?;
    }
    let req: ExplainRequest = serde_json::from_value(body).map_err(|e| invalid(e.to_string()))?;
    let engine = app.policy.engine_for(req.version).await?;
    let caller = ctx.principal.as_str().to_owned();
    match evaluate(&app, &engine, &req.request, (&caller, None), ctx.request_id.as_deref()).await {
        Ok(e) => {
            let reason = e.decision.deny_reason();
            let mut body = serde_json::to_value(&e.decision).unwrap_or_default();
            if let (Some(obj), Some(r)) = (body.as_object_mut(), reason) {
                obj.insert("reason".into(), r.into());
            }
            Ok(Json(body).into_response())
        }
        Err(EvalError { status: 503, .. }) => Err(ApiError::Unavailable),
        Err(EvalError { status: 404, message }) => Err(ApiError::NotFound(message)),
        Err(EvalError { message, .. }) => Err(ApiError::Invalid { field: None, message }),
    }
}
