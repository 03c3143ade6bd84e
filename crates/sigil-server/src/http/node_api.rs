//! The node API (`/spiffe/v1/node/...`) that `sigil node` agents call, and the admin routes for
//! join tokens and nodes (`/admin/v1/nodes...`).
//!
//! Node calls pass a gate ([`crate::gate::Gate`]): a fixed number run, a bounded number wait up
//! to a second, the rest get 503 with `Retry-After`, so a renewal storm is drained and an
//! overload is shed instead of exhausting memory.

use std::time::Duration;

use axum::Json;
use axum::extract::{FromRequestParts, RawQuery};
use axum::http::{StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use sigil_core::spiffe::nodes::{AttestedNode, NodeError, WorkloadEvidence};
use sigil_proto::node::{
    AttestRequest, DenialReport, EntriesResponse, JoinTokenRequest, JoinTokenView, JwtSvidRequest, JwtSvidResponse,
    NODE_AUTH_SCHEME, NodeEntry, NodeView, RenewRequest, SignedSvid, WorkloadInfo, X509SvidView, X509SvidsRequest,
    X509SvidsResponse,
};

use super::State;
use super::error::ApiError;
use super::extract::{Admin, ApiJson};
use super::middleware::RequestId;
use super::query::{PageOnly, Params};
use crate::app::App;

type Result<T> = std::result::Result<T, ApiError>;

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::JoinToken(_) | NodeError::Unauthenticated(_) | NodeError::Banned => {
                Self::NodeUnauthenticated(e.to_string())
            }
            NodeError::Invalid(m) => Self::Invalid {
                field: None,
                message: m,
            },
            NodeError::NotThisNode(_) => Self::Forbidden(e.to_string()),
            NodeError::Store(s) => s.into(),
            NodeError::Signing(m) => {
                tracing::error!(error = %m, "node API signing failed");
                Self::Internal
            }
        }
    }
}

async fn admit(app: &App) -> Result<crate::gate::Turn> {
    app.node_gate.enter().await.ok_or_else(|| {
        metrics::counter!("sigil_node_api_shed_total").increment(1);
        ApiError::Overloaded(1)
    })
}

/// An authenticated node (by its node proof), admitted through the gate.
#[derive(Debug)]
pub struct Node {
    node: AttestedNode,
    request_id: Option<String>,
    _turn: crate::gate::Turn,
}

impl FromRequestParts<std::sync::Arc<App>> for Node {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &std::sync::Arc<App>) -> Result<Self> {
        let turn = admit(app).await?;
        let proof = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix(NODE_AUTH_SCHEME))
            .and_then(|v| v.strip_prefix(' '))
            .map(str::trim)
            .ok_or_else(|| ApiError::NodeUnauthenticated(format!("a {NODE_AUTH_SCHEME} node proof is required")))?;
        let request_id = parts.extensions.get::<RequestId>().map(|r| r.0.clone());
        let node = app
            .nodes
            .authenticate(proof, request_id.as_deref())
            .await
            .inspect_err(|e| {
                tracing::info!(error = %e, "node proof refused");
            })?;
        Ok(Self {
            node,
            request_id,
            _turn: turn,
        })
    }
}

fn decode(field: &str, b64: &str) -> Result<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| ApiError::invalid(field, "must be standard base64 of DER"))
}

fn encode(der: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(der)
}

fn svid_view(s: &sigil_core::spiffe::nodes::IssuedSvid) -> X509SvidView {
    X509SvidView {
        spiffe_id: s.spiffe_id.to_string(),
        cert: encode(&s.cert_der),
        chain: s.chain.iter().map(|c| encode(c)).collect(),
        expires_at: s.expires_at,
    }
}

fn evidence(w: &WorkloadInfo) -> WorkloadEvidence {
    WorkloadEvidence {
        uid: w.uid,
        gid: w.gid,
        pid: w.pid,
        path: w.path.clone(),
    }
}

/// `POST /spiffe/v1/node/attest`: join token + CSR → the node's SVID.
pub async fn attest(
    axum::extract::State(app): State,
    rid: Option<axum::Extension<RequestId>>,
    ApiJson(req): ApiJson<AttestRequest>,
) -> Result<Response> {
    let _turn = admit(&app).await?;
    let csr = decode("csr", &req.csr)?;
    let rid = rid.map(|r| r.0.0);
    let svid = app
        .nodes
        .attest(&req.join_token, &csr, rid.as_deref())
        .await
        .inspect_err(|e| tracing::info!(error = %e, "node attestation refused"))?;
    Ok(Json(svid_view(&svid)).into_response())
}

/// `POST /spiffe/v1/node/renew`: a new SVID for the node's next key.
pub async fn renew(
    axum::extract::State(app): State,
    node: Node,
    ApiJson(req): ApiJson<RenewRequest>,
) -> Result<Response> {
    let csr = decode("csr", &req.csr)?;
    let svid = app.nodes.renew(&node.node, &csr).await?;
    Ok(Json(svid_view(&svid)).into_response())
}

/// `GET /spiffe/v1/node/entries`: the registration entries this node serves.
pub async fn entries(axum::extract::State(app): State, node: Node) -> Result<Response> {
    let entries = app.nodes.entries(&node.node).await?;
    Ok(Json(EntriesResponse {
        entries: entries
            .iter()
            .map(|e| NodeEntry {
                id: e.id.clone(),
                spiffe_id: e.spiffe_id.to_string(),
                selectors: e.selectors.iter().map(|s| s.as_str().to_owned()).collect(),
                x509_ttl_seconds: e.x509_ttl.as_secs(),
                jwt_ttl_seconds: e.jwt_ttl.as_secs(),
            })
            .collect(),
        x509_authority: app.spiffe.active_authority_id(),
        federated_bundles: app.federations.bundles().await?.into_iter().collect(),
    })
    .into_response())
}

/// `POST /spiffe/v1/node/x509-svids`: signs SVIDs for the node's workloads' CSRs.
pub async fn x509_svids(
    axum::extract::State(app): State,
    node: Node,
    ApiJson(req): ApiJson<X509SvidsRequest>,
) -> Result<Response> {
    let requests = req
        .requests
        .iter()
        .map(|r| Ok((r.entry_id.clone(), decode("csr", &r.csr)?)))
        .collect::<Result<Vec<_>>>()?;
    let signed = app
        .nodes
        .sign_x509(&node.node, &requests, node.request_id.as_deref())
        .await?;
    Ok(Json(X509SvidsResponse {
        svids: signed
            .into_iter()
            .map(|(entry_id, r)| match r {
                Ok(s) => SignedSvid {
                    entry_id,
                    svid: Some(svid_view(&s)),
                    error: None,
                },
                Err(e) => SignedSvid {
                    entry_id,
                    svid: None,
                    error: Some(e.to_string()),
                },
            })
            .collect(),
    })
    .into_response())
}

/// `POST /spiffe/v1/node/jwt-svids`: a JWT-SVID for one of the node's entries.
pub async fn jwt_svid(
    axum::extract::State(app): State,
    node: Node,
    ApiJson(req): ApiJson<JwtSvidRequest>,
) -> Result<Response> {
    let (spiffe_id, token, expires_at) = app
        .nodes
        .mint_jwt(
            &node.node,
            &req.entry_id,
            &req.audience,
            &evidence(&req.workload),
            node.request_id.as_deref(),
        )
        .await?;
    // Sigil spends a JWT-SVID presented as a client assertion; one for any of its own URLs
    // must not be served from the agent's cache a second time.
    let ours = format!("{}/", app.issuer);
    let single_use = req.audience.iter().any(|a| *a == app.issuer || a.starts_with(&ours));
    Ok(Json(JwtSvidResponse {
        spiffe_id: spiffe_id.to_string(),
        token,
        expires_at,
        single_use,
    })
    .into_response())
}

/// `POST /spiffe/v1/node/denials`: the node refused a workload that matched no entry.
pub async fn denial(
    axum::extract::State(app): State,
    node: Node,
    ApiJson(req): ApiJson<DenialReport>,
) -> Result<Response> {
    app.nodes
        .report_denied(&node.node, &evidence(&req.workload), node.request_id.as_deref())
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /admin/v1/nodes/join-tokens`
pub async fn create_join_token(
    axum::extract::State(app): State,
    Admin(ctx): Admin,
    ApiJson(req): ApiJson<JoinTokenRequest>,
) -> Result<Response> {
    let (token, spiffe_id, expires_at) = app
        .nodes
        .create_join_token(&ctx, req.spiffe_id.as_deref(), req.ttl_seconds.map(Duration::from_secs))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(JoinTokenView {
            token,
            spiffe_id: spiffe_id.to_string(),
            expires_at,
        }),
    )
        .into_response())
}

fn spiffe_error(e: sigil_core::spiffe::SpiffeError) -> ApiError {
    match e {
        sigil_core::spiffe::SpiffeError::Invalid(m) => ApiError::Conflict(m),
        sigil_core::spiffe::SpiffeError::Store(s) => s.into(),
        other => {
            tracing::error!(error = %other, "authority operation failed");
            ApiError::Internal
        }
    }
}

/// `GET /admin/v1/authorities`
pub async fn authorities(axum::extract::State(app): State, Admin(_): Admin, PageOnly(p): PageOnly) -> Result<Response> {
    let list = app.spiffe.list().await.map_err(spiffe_error)?;
    let items = list
        .into_iter()
        .map(|(kind, id, status, not_after)| sigil_proto::node::AuthorityView {
            kind,
            id,
            status,
            not_after,
        })
        .collect();
    Ok(Json(p.page_of(items)?).into_response())
}

/// `POST /admin/v1/authorities/prepare` and `/activate`: CA rotation in two steps.
pub async fn rotate(
    axum::extract::State(app): State,
    Admin(ctx): Admin,
    axum::extract::Path(step): axum::extract::Path<String>,
) -> Result<Response> {
    match step.as_str() {
        "prepare" => app.spiffe.prepare(&ctx.principal, ctx.request_id.as_deref()).await,
        "activate" => app.spiffe.activate(&ctx.principal, ctx.request_id.as_deref()).await,
        _ => {
            return Err(ApiError::NotFound(format!(
                "no authority step {step:?}: use prepare or activate"
            )));
        }
    }
    .map_err(spiffe_error)?;
    authorities(axum::extract::State(app), Admin(ctx), PageOnly(Default::default())).await
}

fn federation_view(f: sigil_core::spiffe::federation::Federation) -> sigil_proto::node::FederationView {
    sigil_proto::node::FederationView {
        trust_domain: f.trust_domain.to_string(),
        bundle_endpoint: f.bundle_endpoint,
        has_bundle: f.bundle_json.is_some(),
        refreshed_at: f.refreshed_at,
        last_error: f.last_error,
    }
}

/// `GET /admin/v1/federations`
pub async fn federations(axum::extract::State(app): State, Admin(_): Admin, PageOnly(p): PageOnly) -> Result<Response> {
    let list = app.federations.list().await?;
    Ok(Json(p.page_of(list.into_iter().map(federation_view).collect())?).into_response())
}

/// `POST /admin/v1/federations`
pub async fn federate(
    axum::extract::State(app): State,
    Admin(ctx): Admin,
    ApiJson(req): ApiJson<sigil_proto::node::FederationRequest>,
) -> Result<Response> {
    let f = app
        .federations
        .add(&ctx, &req.trust_domain, &req.bundle_endpoint)
        .await?;
    Ok((StatusCode::CREATED, Json(federation_view(f))).into_response())
}

/// `DELETE /admin/v1/federations/{trust_domain}`
pub async fn unfederate(
    axum::extract::State(app): State,
    Admin(ctx): Admin,
    axum::extract::Path(td): axum::extract::Path<String>,
) -> Result<Response> {
    app.federations.delete(&ctx, &td).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /admin/v1/nodes`
pub async fn list(axum::extract::State(app): State, Admin(_): Admin, PageOnly(p): PageOnly) -> Result<Response> {
    let nodes = app.nodes.list().await?;
    let items = nodes
        .iter()
        .map(|n| NodeView {
            spiffe_id: n.spiffe_id.to_string(),
            method: n.method.clone(),
            attested_at: n.attested_at,
            svid_serial: n.svid_serial.clone(),
            svid_expires_at: n.svid_expires_at,
            banned: n.banned_at.is_some(),
        })
        .collect();
    Ok(Json(p.page_of(items)?).into_response())
}

/// `POST /admin/v1/nodes/ban?spiffe_id=ID`
pub async fn ban(axum::extract::State(app): State, Admin(ctx): Admin, RawQuery(q): RawQuery) -> Result<Response> {
    let p = Params::parse(q.as_deref(), &["spiffe_id"])?;
    let id = p
        .get("spiffe_id")
        .ok_or_else(|| ApiError::invalid("spiffe_id", "spiffe_id is required"))?;
    app.nodes.ban(&ctx, id).await.map_err(|e| match e {
        NodeError::Store(sigil_core::store::StoreError::Stale { .. }) => {
            ApiError::NotFound(format!("node {id} has not attested and has no unspent join token"))
        }
        other => other.into(),
    })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
