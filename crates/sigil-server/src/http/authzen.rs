//! OpenID AuthZEN Authorization API 1.0: `POST /access/v1/evaluation`, `POST
//! /access/v1/evaluations` (batch, with `options.evaluations_semantic`), and the PDP metadata at
//! `/.well-known/authzen-configuration`. Callers are authenticated resource servers (an OAuth
//! client of Sigil, or an admin token); every decision is an audit record.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;
use sigil_core::audit::{AuditRecord, EventType, Outcome};
use sigil_core::model::Principal;
use sigil_core::oauth::{ErrorCode, OAuthError};
use sigil_core::store::ChangeSet;
use sigil_proto::policy::{DecisionView, Evaluation, Evaluations, EvaluationsView};

use super::State;
use super::error::ApiError;
use super::oauth::{error_response, json_caller, rid};
use crate::App;
use crate::authz::{EvalError, Evaluated, evaluate};

/// Most evaluations in one batch request.
pub const MAX_BATCH: usize = 100;
/// The largest batch body: room for [`MAX_BATCH`] evaluations that each carry a token subject
/// and resource properties (about 1 KiB each), beyond the server's general body limit.
const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// The request body, up to `limit` bytes; larger is a JSON 413 like every other refusal here.
/// AuthZEN requests are `application/json`; anything else is 415, which also keeps a
/// browser's cross-site "simple request" (`text/plain`) from reaching the decision point.
async fn body(headers: &HeaderMap, body: axum::body::Body, limit: usize) -> Result<Bytes, Response> {
    if !super::extract::is_json(headers) {
        return Err(ApiError::UnsupportedMediaType.into_response());
    }
    super::extract::read_body(body, limit)
        .await
        .map_err(|e| e.api_error(limit).into_response())
}

pub async fn metadata(AxState(app): State) -> Response {
    let pdp = &app.issuer;
    Json(json!({
        "policy_decision_point": pdp,
        "access_evaluation_endpoint": format!("{pdp}/access/v1/evaluation"),
        "access_evaluations_endpoint": format!("{pdp}/access/v1/evaluations"),
    }))
    .into_response()
}

/// The request: strict JSON (no member twice, see `strict_json`) whose request and whose
/// subject, action, resource and each evaluation are objects (AuthZEN §5: "JSON objects"; serde
/// alone would also read a struct from an array of its fields).
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let invalid = |m: String| ApiError::Invalid {
        field: None,
        message: format!("the body is not a valid AuthZEN request: {m}"),
    };
    let value = super::strict_json::parse(body).map_err(|e| invalid(e.to_string()))?;
    objects_where_the_spec_says(&value).map_err(invalid)?;
    serde_json::from_value(value).map_err(|e| invalid(e.to_string()))
}

pub(super) fn objects_where_the_spec_says(request: &serde_json::Value) -> Result<(), String> {
    let members = |v: &serde_json::Value, prefix: &str| -> Result<(), String> {
        let obj = v
            .as_object()
            .ok_or_else(|| format!("{prefix}: a JSON object is expected"))?;
        for key in ["subject", "action", "resource", "context"] {
            match obj.get(key) {
                None | Some(serde_json::Value::Null | serde_json::Value::Object(_)) => {}
                Some(_) => return Err(format!("{prefix}.{key} must be a JSON object")),
            }
        }
        Ok(())
    };
    members(request, "the request")?;
    if let Some(items) = request.get("evaluations").and_then(|e| e.as_array()) {
        for (n, item) in items.iter().enumerate() {
            members(item, &format!("evaluations[{n}]"))?;
        }
    }
    Ok(())
}

/// The caller's principal, or the error response: 401 (RFC 6749 error body, `WWW-Authenticate`)
/// for missing or bad credentials, 403 for an agent's client — a policy decision point answers
/// resource servers (workloads) and administrators, not the agents whose access it decides.
async fn authenticate(
    app: &App,
    headers: &HeaderMap,
    ext: &axum::http::Extensions,
    request_id: Option<&str>,
) -> Result<super::oauth::JsonCaller, Response> {
    let endpoint = format!("{}/access/v1/evaluation", app.issuer);
    let (refusal, response) = match json_caller(app, headers, ext, &endpoint, request_id).await {
        Err(e) => {
            let response = error_response(&e);
            (e, response)
        }
        Ok(caller) => {
            let Some(id) = &caller.identity else {
                return Ok(caller);
            };
            let is_workload = crate::authz::is_workload(app, id)
                .await
                .map_err(|_| ApiError::Unavailable.into_response())?;
            if is_workload {
                return Ok(caller);
            }
            let why = "only resource servers (workload clients) and administrators may ask for access decisions";
            (
                OAuthError::new(ErrorCode::UnauthorizedClient, why),
                ApiError::Forbidden(why.into()).into_response(),
            )
        }
    };
    let rid = request_id.map(str::to_owned);
    let no_form = super::oauth::Form::default();
    super::oauth::record_refusal(
        app,
        EventType::AccessEvaluated,
        headers,
        ext,
        Some(&no_form),
        &refusal,
        &rid,
    )
    .await;
    Err(response)
}

pub async fn evaluation(AxState(app): State, req: axum::extract::Request) -> Response {
    let (parts, raw) = req.into_parts();
    let (headers, ext) = (&parts.headers, &parts.extensions);
    let request_id = rid(ext);
    let (caller, caller_identity) = match authenticate(&app, headers, ext, request_id.as_deref()).await {
        Ok(c) => (c.who, c.identity),
        Err(resp) => return resp,
    };
    let identity = caller_identity.as_ref();
    let bytes = match body(headers, raw, app.config.max_body_bytes).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let ev: Evaluation = match parse(&bytes) {
        Ok(ev) => ev,
        Err(e) => return refused(&app, &Evaluation::default(), e, &caller, &request_id).await,
    };
    let result = async {
        let engine = app.policy.current();
        let (view, record) = decide_one(&app, &engine, &ev, (&caller, identity), request_id.as_deref()).await?;
        app.store.commit(ChangeSet::new().audit(record)).await?;
        Ok::<_, ApiError>(Json(view).into_response())
    }
    .await;
    match result {
        Ok(resp) => resp,
        Err(e) => refused(&app, &ev, e, &caller, &request_id).await,
    }
}

/// The answer to a request that could not be decided. One the model cannot express (400) is
/// also an audit record, a denied evaluation naming the caller, so a resource server that keeps
/// asking malformed questions shows in the trail and not only in the log.
async fn refused(app: &App, ev: &Evaluation, e: ApiError, caller: &str, request_id: &Option<String>) -> Response {
    if let ApiError::Invalid { message, .. } = &e {
        let (_, record) = item_error(ev, 400, message, caller, app, request_id);
        if let Err(store) = app.store.commit(ChangeSet::new().audit(record)).await {
            return ApiError::from(store).into_response();
        }
    }
    e.into_response()
}

pub async fn evaluations(AxState(app): State, req: axum::extract::Request) -> Response {
    let (parts, raw) = req.into_parts();
    let (headers, ext) = (&parts.headers, &parts.extensions);
    let request_id = rid(ext);
    let (caller, caller_identity) = match authenticate(&app, headers, ext, request_id.as_deref()).await {
        Ok(c) => (c.who, c.identity),
        Err(resp) => return resp,
    };
    let identity = caller_identity.as_ref();
    let bytes = match body(headers, raw, MAX_BATCH_BYTES.max(app.config.max_body_bytes)).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let req: Evaluations = match parse(&bytes) {
        Ok(req) => req,
        Err(e) => return refused(&app, &Evaluation::default(), e, &caller, &request_id).await,
    };
    let result = async {
        let semantic = Semantic::parse(req.options.as_ref())?;
        let engine = app.policy.current();
        let items = req.evaluations.clone().unwrap_or_default();
        if items.len() > MAX_BATCH {
            return Err(ApiError::invalid(
                "evaluations",
                format!("at most {MAX_BATCH} evaluations per request"),
            ));
        }
        if items.is_empty() {
            // §7.1: without evaluations the request is a single evaluation, answered as one.
            let (view, record) =
                decide_one(&app, &engine, &req.defaults, (&caller, identity), request_id.as_deref()).await?;
            app.store.commit(ChangeSet::new().audit(record)).await?;
            return Ok(Json(view).into_response());
        }
        let merged: Vec<Evaluation> = items.iter().map(|i| with_defaults(i, &req.defaults)).collect();
        // A member missing from an item and from the defaults makes the request malformed
        // (§5: a required member omitted is a Bad Request), before anything is decided.
        for (n, ev) in merged.iter().enumerate() {
            let missing = [
                ("subject", ev.subject.is_none()),
                ("action", ev.action.is_none()),
                ("resource", ev.resource.is_none()),
            ];
            if let Some((member, _)) = missing.iter().find(|(_, absent)| *absent) {
                return Err(ApiError::invalid(
                    format!("evaluations[{n}].{member}"),
                    format!("{member} is required in each evaluation or as a top-level default"),
                ));
            }
        }
        let mut views = Vec::with_capacity(items.len());
        let mut cs = ChangeSet::new();
        for merged in merged {
            let (view, record) =
                match decide_one(&app, &engine, &merged, (&caller, identity), request_id.as_deref()).await {
                    Ok(v) => v,
                    // §7.3: an item that cannot be evaluated is a deny carrying its error.
                    Err(ApiError::Invalid { message, .. }) => {
                        item_error(&merged, 400, &message, &caller, &app, &request_id)
                    }
                    Err(e) => return Err(e),
                };
            cs = cs.audit(record);
            let decision = view.decision;
            views.push(view);
            if semantic.stops_after(decision) {
                break;
            }
        }
        app.store.commit(cs).await?;
        Ok(Json(EvaluationsView { evaluations: views }).into_response())
    }
    .await;
    match result {
        Ok(resp) => resp,
        Err(e) => refused(&app, &req.defaults, e, &caller, &request_id).await,
    }
}

/// §7.2: how a batch is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Semantic {
    ExecuteAll,
    DenyOnFirstDeny,
    PermitOnFirstPermit,
}

impl Semantic {
    fn parse(options: Option<&serde_json::Map<String, serde_json::Value>>) -> Result<Self, ApiError> {
        match options.and_then(|o| o.get("evaluations_semantic")) {
            None => Ok(Self::ExecuteAll),
            Some(v) => match v.as_str() {
                Some("execute_all") => Ok(Self::ExecuteAll),
                Some("deny_on_first_deny") => Ok(Self::DenyOnFirstDeny),
                Some("permit_on_first_permit") => Ok(Self::PermitOnFirstPermit),
                _ => Err(ApiError::invalid(
                    "options.evaluations_semantic",
                    "must be execute_all, deny_on_first_deny or permit_on_first_permit",
                )),
            },
        }
    }

    fn stops_after(self, decision: bool) -> bool {
        match self {
            Self::ExecuteAll => false,
            Self::DenyOnFirstDeny => !decision,
            Self::PermitOnFirstPermit => decision,
        }
    }
}

/// §7.1: each member of an item overrides the top-level default as a whole.
fn with_defaults(item: &Evaluation, defaults: &Evaluation) -> Evaluation {
    Evaluation {
        subject: item.subject.clone().or_else(|| defaults.subject.clone()),
        action: item.action.clone().or_else(|| defaults.action.clone()),
        resource: item.resource.clone().or_else(|| defaults.resource.clone()),
        context: item.context.clone().or_else(|| defaults.context.clone()),
    }
}

/// Decides one evaluation. A subject or resource that does not exist, or an inactive token, is
/// a deny carrying the error (`Ok`); a request the model cannot express is a 400 (`Err`).
async fn decide_one(
    app: &App,
    engine: &sigil_policy::Engine,
    ev: &Evaluation,
    (caller, identity): (&str, Option<&sigil_types::IdentityId>),
    request_id: Option<&str>,
) -> Result<(DecisionView, AuditRecord), ApiError> {
    match evaluate(app, engine, ev, (caller, identity), request_id).await {
        Ok(Evaluated { decision, record }) => {
            let context = (!decision.allowed).then(|| {
                json!({
                    "reason_admin": { "403": decision.deny_reason().unwrap_or_default() },
                    "reason_user": { "403": "not permitted" },
                })
            });
            Ok((
                DecisionView {
                    decision: decision.allowed,
                    context,
                },
                record,
            ))
        }
        Err(EvalError { status: 503, .. }) => Err(ApiError::Unavailable),
        Err(EvalError { status: 400, message }) => Err(ApiError::Invalid { field: None, message }),
        Err(EvalError { status, message }) => Ok(item_error(
            ev,
            status,
            &message,
            caller,
            app,
            &request_id.map(str::to_owned),
        )),
    }
}

fn item_error(
    ev: &Evaluation,
    status: u16,
    message: &str,
    caller: &str,
    app: &App,
    request_id: &Option<String>,
) -> (DecisionView, AuditRecord) {
    tracing::info!(status, error = message, "access evaluation refused");
    let mut record = AuditRecord::new(
        app.clock.now(),
        EventType::AccessEvaluated,
        &Principal::from_stored(caller.to_owned()),
        request_id.as_deref(),
    )
    .outcome(Outcome::Denied, message)
    .detail("caller", caller);
    // Like every decision's record: the resource server's client is named.
    record.client_id = caller.strip_prefix("client:").map(str::to_owned);
    record.action = ev.action.as_ref().map(|a| a.name.clone());
    let view = DecisionView {
        decision: false,
        context: Some(json!({ "error": { "status": status, "message": message } })),
    };
    (view, record)
}
