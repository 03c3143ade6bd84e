//! The node API client: every call but attestation carries a fresh node proof signed with the
//! node's current SVID key.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sigil_proto::node::{
    AttestRequest, DenialReport, EntriesResponse, JwtSvidRequest, JwtSvidResponse, NODE_AUTH_SCHEME, RenewRequest,
    SvidRequest, X509SvidView, X509SvidsRequest, X509SvidsResponse,
};

use crate::identity::NodeIdentity;

/// A node proof lives a minute: long enough for one call, short enough to be useless later.
const PROOF_LIFETIME: i64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the server is unreachable: {0}")]
    Unreachable(String),
    #[error("the server refused ({status}): {detail}")]
    Refused { status: u16, detail: String },
    #[error("the server is overloaded; retry after {0}s")]
    Overloaded(u64),
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
}

impl ClientError {
    /// Whether the server rejected the node itself (banned, unknown): retrying will not help.
    pub fn is_auth(&self) -> bool {
        matches!(self, Self::Refused { status: 401, .. })
    }
}

#[derive(Debug, Clone)]
pub struct NodeClient {
    http: reqwest::Client,
    base: String,
}

impl NodeClient {
    pub fn new(server: &str) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ClientError::Unreachable(e.to_string()))?;
        Ok(Self {
            http,
            base: server.trim_end_matches('/').to_owned(),
        })
    }

    /// The audience of node proofs: the server's node API.
    fn audience(&self) -> String {
        format!("{}/spiffe/v1/node", self.base)
    }

    fn proof(&self, id: &NodeIdentity) -> Result<String, ClientError> {
        let now = unix_now();
        let claims = serde_json::json!({ "aud": self.audience(), "iat": now, "exp": now + PROOF_LIFETIME });
        id.sign_proof(claims.to_string().as_bytes())
            .map_err(|e| ClientError::Protocol(format!("cannot sign a node proof: {e}")))
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T, ClientError> {
        let resp = req.send().await.map_err(|e| ClientError::Unreachable(e.to_string()))?;
        let status = resp.status();
        if status.is_success() {
            return resp.json().await.map_err(|e| ClientError::Protocol(e.to_string()));
        }
        if status.as_u16() == 503
            && let Some(after) = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
        {
            return Err(ClientError::Overloaded(after));
        }
        let detail = resp
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
            .unwrap_or_default();
        Err(ClientError::Refused {
            status: status.as_u16(),
            detail,
        })
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        id: &NodeIdentity,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header(
                reqwest::header::AUTHORIZATION,
                format!("{NODE_AUTH_SCHEME} {}", self.proof(id)?),
            )
            .json(body);
        self.send(req).await
    }

    /// Attests with a join token, for the key behind `csr`.
    pub async fn attest(&self, join_token: &str, csr: &[u8]) -> Result<X509SvidView, ClientError> {
        let body = AttestRequest {
            join_token: join_token.to_owned(),
            csr: STANDARD.encode(csr),
        };
        self.send(
            self.http
                .post(format!("{}/spiffe/v1/node/attest", self.base))
                .json(&body),
        )
        .await
    }

    pub async fn renew(&self, id: &NodeIdentity, csr: &[u8]) -> Result<X509SvidView, ClientError> {
        self.post(
            id,
            "/spiffe/v1/node/renew",
            &RenewRequest {
                csr: STANDARD.encode(csr),
            },
        )
        .await
    }

    pub async fn entries(&self, id: &NodeIdentity) -> Result<EntriesResponse, ClientError> {
        let req = self.http.get(format!("{}/spiffe/v1/node/entries", self.base)).header(
            reqwest::header::AUTHORIZATION,
            format!("{NODE_AUTH_SCHEME} {}", self.proof(id)?),
        );
        self.send(req).await
    }

    pub async fn sign_x509(
        &self,
        id: &NodeIdentity,
        requests: Vec<SvidRequest>,
    ) -> Result<X509SvidsResponse, ClientError> {
        self.post(id, "/spiffe/v1/node/x509-svids", &X509SvidsRequest { requests })
            .await
    }

    pub async fn jwt_svid(&self, id: &NodeIdentity, req: &JwtSvidRequest) -> Result<JwtSvidResponse, ClientError> {
        self.post(id, "/spiffe/v1/node/jwt-svids", req).await
    }

    pub async fn report_denial(&self, id: &NodeIdentity, report: &DenialReport) -> Result<(), ClientError> {
        let req = self
            .http
            .post(format!("{}/spiffe/v1/node/denials", self.base))
            .header(
                reqwest::header::AUTHORIZATION,
                format!("{NODE_AUTH_SCHEME} {}", self.proof(id)?),
            )
            .json(report);
        let resp = req.send().await.map_err(|e| ClientError::Unreachable(e.to_string()))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(ClientError::Refused {
                status: resp.status().as_u16(),
                detail: String::new(),
            })
        }
    }

    /// The trust bundle (SPIFFE bundle format), from the public bundle endpoint.
    pub async fn bundle(&self) -> Result<serde_json::Value, ClientError> {
        self.send(self.http.get(format!("{}/spiffe/bundle", self.base))).await
    }
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

pub fn decode_b64(s: &str) -> Result<Vec<u8>, ClientError> {
    STANDARD
        .decode(s)
        .map_err(|_| ClientError::Protocol("bad base64 from the server".into()))
}
