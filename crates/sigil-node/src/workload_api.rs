//! The SPIFFE Workload API over gRPC: every call must carry the `workload.spiffe.io: true`
//! header; callers are attested by their socket peer credentials; streams push a new message
//! whenever what the caller is entitled to changes (a renewed SVID, a new bundle), and end
//! with `PermissionDenied` when the caller no longer matches any entry.

use std::pin::Pin;
use std::sync::Arc;

use crate::connection::CallerAtConnect;
use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::agent::Agent;
use crate::attestor::{PeerCredentials, Workload};
use crate::cache::{Bundle, Snapshot, WorkloadSvid};
use crate::client::unix_now;
use crate::proto::spiffe_workload_api_server::SpiffeWorkloadApi;
use crate::proto::{
    JwtBundlesRequest, JwtBundlesResponse, Jwtsvid, JwtsvidRequest, JwtsvidResponse, ValidateJwtsvidRequest,
    ValidateJwtsvidResponse, X509BundlesRequest, X509BundlesResponse, X509svid, X509svidRequest, X509svidResponse,
};

const SECURITY_HEADER: &str = "workload.spiffe.io";

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[derive(Debug, Clone)]
pub struct WorkloadApi {
    agent: Arc<Agent>,
    /// Whether callers no entry selects may still fetch our trust bundle (to verify others
    /// without an identity of their own). Off by default, as in SPIRE's agent: a bundle names
    /// the trust domain's authorities and federations, which is no business of an unknown
    /// process.
    unauthenticated_verifiers: bool,
}

impl WorkloadApi {
    pub fn new(agent: Arc<Agent>, unauthenticated_verifiers: bool) -> Self {
        Self {
            agent,
            unauthenticated_verifiers,
        }
    }
}

/// Checks the security header and reads the caller's peer credentials.
fn caller<T>(req: &Request<T>) -> Result<PeerCredentials, Status> {
    if req.metadata().get(SECURITY_HEADER).and_then(|v| v.to_str().ok()) != Some("true") {
        return Err(Status::invalid_argument("security header missing from request"));
    }
    let caller = req
        .extensions()
        .get::<CallerAtConnect>()
        .ok_or_else(|| Status::permission_denied("the caller's credentials are unavailable"))?;
    let cred = caller
        .uds
        .peer_cred
        .ok_or_else(|| Status::permission_denied("the caller's credentials are unavailable"))?;
    Ok(PeerCredentials {
        uid: cred.uid(),
        gid: cred.gid(),
        pid: cred.pid(),
        exe_at_connect: caller.exe.clone(),
    })
}

impl WorkloadApi {
    /// Attests the caller against `snap`; an attested caller that matches nothing is refused
    /// (and the refusal reported to the server for the audit trail).
    fn entitled(&self, peer: &PeerCredentials, snap: &Snapshot) -> Result<(Workload, Vec<String>), Status> {
        let w = self.agent.attestor.attest(peer, &snap.entries);
        let mut ids: Vec<String> = w.matching(&snap.entries).iter().map(|e| e.id.clone()).collect();
        if ids.is_empty() {
            return Err(self.refuse(peer, &w));
        }
        ids.sort();
        Ok((w, ids))
    }

    fn refuse(&self, peer: &PeerCredentials, w: &Workload) -> Status {
        tracing::info!(uid = peer.uid, pid = ?peer.pid, path = ?w.info.path, "workload matches no entry");
        self.agent.report_denial(w.info.clone());
        Status::permission_denied("no identity issued")
    }

    /// The bundles a caller is handed: all of them (ours and the federated ones) when an entry
    /// selects it; only ours to an unregistered verifier when those are allowed; otherwise
    /// `PermissionDenied`, as for its SVIDs.
    fn visible_bundles<'s>(&self, peer: &PeerCredentials, snap: &'s Snapshot) -> Result<Vec<&'s Bundle>, Status> {
        let w = self.agent.attestor.attest(peer, &snap.entries);
        if !w.matching(&snap.entries).is_empty() {
            return Ok(snap.all_bundles().collect());
        }
        if self.unauthenticated_verifiers {
            return Ok(vec![&snap.bundle]);
        }
        Err(self.refuse(peer, &w))
    }

    /// The bundle that may vouch for a JWT-SVID of `trust_domain_id`: ours for anyone, a
    /// federated one only for a caller some entry selects (its federations are what it was
    /// registered into). Refusing nothing itself, it reports no denial.
    fn validating_bundle<'s>(
        &self,
        peer: &PeerCredentials,
        snap: &'s Snapshot,
        trust_domain_id: &str,
    ) -> Option<&'s Bundle> {
        if snap.bundle.trust_domain_id == trust_domain_id {
            return Some(&snap.bundle);
        }
        let w = self.agent.attestor.attest(peer, &snap.entries);
        if w.matching(&snap.entries).is_empty() {
            return None;
        }
        snap.bundle_for(trust_domain_id)
    }

    fn x509_response(snap: &Snapshot, current: &[Arc<WorkloadSvid>]) -> Option<X509svidResponse> {
        let svids: Vec<X509svid> = current
            .iter()
            .map(|s| X509svid {
                spiffe_id: s.spiffe_id.clone(),
                // The leaf first, then any intermediates, concatenated DER.
                x509_svid: std::iter::once(&s.cert_der)
                    .chain(&s.chain)
                    .flatten()
                    .copied()
                    .collect(),
                x509_svid_key: s.key_pkcs8.to_vec(),
                bundle: snap.bundle.x509.clone(),
                hint: String::new(),
            })
            .collect();
        (!svids.is_empty()).then(|| X509svidResponse {
            svids,
            crl: Vec::new(),
            federated_bundles: snap
                .federated
                .iter()
                .filter(|b| !b.x509.is_empty())
                .map(|b| (b.trust_domain_id.clone(), b.x509.clone()))
                .collect(),
        })
    }
}

/// Runs `next` on every snapshot (the current one first) and sends what it yields, until the
/// client goes away or `next` ends the stream.
fn watch_stream<T, F>(agent: &Arc<Agent>, mut next: F) -> Streamed<T>
where
    T: Send + 'static,
    F: FnMut(&Snapshot) -> Step<T> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(4);
    let mut updates = agent.cache.subscribe();
    tokio::spawn(async move {
        loop {
            let snap = updates.borrow_and_update().clone();
            match next(&snap) {
                Step::Send(msg) => {
                    if tx.send(Ok(msg)).await.is_err() {
                        return;
                    }
                }
                Step::End(status) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
                Step::Skip => {}
            }
            tokio::select! {
                changed = updates.changed() => if changed.is_err() { return },
                () = tx.closed() => return,
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

enum Step<T> {
    Send(T),
    Skip,
    End(Status),
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApi {
    type FetchX509SVIDStream = Streamed<X509svidResponse>;
    type FetchX509BundlesStream = Streamed<X509BundlesResponse>;
    type FetchJWTBundlesStream = Streamed<JwtBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        req: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        let peer = caller(&req)?;
        let snap = self.agent.cache.current();
        if snap.ready {
            self.entitled(&peer, &snap)?;
        }
        let api = self.clone();
        // What was last sent: the SVIDs (by identity of the cached value) and every bundle.
        let mut last: Option<(Vec<Arc<WorkloadSvid>>, Vec<(String, Vec<u8>)>)> = None;
        Ok(Response::new(watch_stream(&self.agent, move |snap| {
            if !snap.ready {
                return Step::Skip;
            }
            let ids = match api.entitled(&peer, snap) {
                Ok((_, ids)) => ids,
                Err(status) => return Step::End(status),
            };
            let current = snap.servable_svids(&ids, unix_now());
            let bundles: Vec<(String, Vec<u8>)> = snap
                .all_bundles()
                .map(|b| (b.trust_domain_id.clone(), b.x509.clone()))
                .collect();
            let unchanged = last.as_ref().is_some_and(|(svids, sent)| {
                *sent == bundles
                    && svids.len() == current.len()
                    && svids.iter().zip(&current).all(|(a, b)| Arc::ptr_eq(a, b))
            });
            if unchanged {
                return Step::Skip;
            }
            let response = WorkloadApi::x509_response(snap, &current);
            let key = (current, bundles);
            match response {
                Some(r) => {
                    last = Some(key);
                    Step::Send(r)
                }
                None => Step::Skip,
            }
        })))
    }

    async fn fetch_x509_bundles(
        &self,
        req: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        let peer = caller(&req)?;
        let snap = self.agent.cache.current();
        if snap.ready {
            self.visible_bundles(&peer, &snap)?;
        }
        let api = self.clone();
        let mut last = None;
        Ok(Response::new(watch_stream(&self.agent, move |snap| {
            if !snap.ready {
                return Step::Skip;
            }
            let bundles: std::collections::HashMap<String, Vec<u8>> = match api.visible_bundles(&peer, snap) {
                Ok(visible) => visible
                    .into_iter()
                    .filter(|b| !b.x509.is_empty())
                    .map(|b| (b.trust_domain_id.clone(), b.x509.clone()))
                    .collect(),
                Err(status) => return Step::End(status),
            };
            if last.as_ref() == Some(&bundles) {
                return Step::Skip;
            }
            last = Some(bundles.clone());
            Step::Send(X509BundlesResponse {
                crl: Vec::new(),
                bundles,
            })
        })))
    }

    async fn fetch_jwt_bundles(
        &self,
        req: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        let peer = caller(&req)?;
        let snap = self.agent.cache.current();
        if snap.ready {
            self.visible_bundles(&peer, &snap)?;
        }
        let api = self.clone();
        let mut last = None;
        Ok(Response::new(watch_stream(&self.agent, move |snap| {
            if !snap.ready {
                return Step::Skip;
            }
            let bundles: std::collections::HashMap<String, Vec<u8>> = match api.visible_bundles(&peer, snap) {
                Ok(visible) => visible
                    .into_iter()
                    .map(|b| (b.trust_domain_id.clone(), b.jwt_jwks.clone()))
                    .collect(),
                Err(status) => return Step::End(status),
            };
            if last.as_ref() == Some(&bundles) {
                return Step::Skip;
            }
            last = Some(bundles.clone());
            Step::Send(JwtBundlesResponse { bundles })
        })))
    }

    async fn fetch_jwtsvid(&self, req: Request<JwtsvidRequest>) -> Result<Response<JwtsvidResponse>, Status> {
        let peer = caller(&req)?;
        let body = req.into_inner();
        if body.audience.is_empty() || body.audience.iter().any(String::is_empty) {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        // Refused here, as the invalid request it is: the server's refusal would reach the
        // workload as Unavailable, which clients retry forever (Workload Endpoint §6).
        if !sigil_proto::node::audiences_acceptable(&body.audience) {
            return Err(Status::invalid_argument(
                "give 1 to 16 audiences of at most 512 bytes each",
            ));
        }
        let snap = self.agent.cache.current();
        if !snap.ready {
            return Err(Status::unavailable("the node agent has not synced with the server yet"));
        }
        let (workload, ids) = self.entitled(&peer, &snap)?;
        let wanted: Vec<&String> = ids
            .iter()
            .filter(|id| {
                body.spiffe_id.is_empty()
                    || snap
                        .entries
                        .iter()
                        .any(|e| &e.id == *id && e.spiffe_id == body.spiffe_id)
            })
            .collect();
        if wanted.is_empty() {
            return Err(Status::permission_denied(
                "no identity issued for the requested SPIFFE ID",
            ));
        }
        let mut svids = Vec::with_capacity(wanted.len());
        for id in wanted {
            let (spiffe_id, svid) = self
                .agent
                .jwt_svid(id, &body.audience, &workload.info)
                .await
                .map_err(|e| Status::unavailable(format!("could not get a JWT-SVID: {e}")))?;
            svids.push(Jwtsvid {
                spiffe_id,
                svid,
                hint: String::new(),
            });
        }
        Ok(Response::new(JwtsvidResponse { svids }))
    }

    async fn validate_jwtsvid(
        &self,
        req: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        let peer = caller(&req)?;
        let body = req.into_inner();
        if body.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        if body.svid.is_empty() {
            return Err(Status::invalid_argument("svid must be specified"));
        }
        let snap = self.agent.cache.current();
        // The token's trust domain picks the bundle (ours or a federated one); a key of one
        // trust domain never vouches for another's SPIFFE IDs.
        let td =
            claimed_trust_domain(&body.svid).ok_or_else(|| Status::invalid_argument("the JWT-SVID is malformed"))?;
        let bundle = self
            .validating_bundle(&peer, &snap, &td)
            .ok_or_else(|| Status::invalid_argument(format!("no bundle for the trust domain {td}")))?;
        let (id, claims) =
            sigil_core::spiffe::jwt_svid::validate(&body.svid, &bundle.jwt_keys, &body.audience, unix_now())
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let claims = serde_json::Value::Object(claims.raw);
        Ok(Response::new(ValidateJwtsvidResponse {
            spiffe_id: id.to_string(),
            claims: Some(to_struct(&claims)),
        }))
    }
}

/// `spiffe://<td>` of the (not yet verified) `sub` of a JWT-SVID.
fn claimed_trust_domain(token: &str) -> Option<String> {
    let payload = sigil_crypto::b64url_decode(token.split('.').nth(1)?).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&payload).ok()?;
    let sub = sigil_types::SpiffeId::parse(claims.get("sub")?.as_str()?).ok()?;
    Some(format!("spiffe://{}", sub.trust_domain()))
}

fn to_struct(v: &serde_json::Value) -> prost_types::Struct {
    let fields = v
        .as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), to_value(v))).collect())
        .unwrap_or_default();
    prost_types::Struct { fields }
}

fn to_value(v: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(to_value).collect(),
        }),
        serde_json::Value::Object(_) => Kind::StructValue(to_struct(v)),
    };
    prost_types::Value { kind: Some(kind) }
}
