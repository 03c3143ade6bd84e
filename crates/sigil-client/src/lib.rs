//! A typed client for Sigil's admin API, used by the CLI and by tests.

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sigil_proto::Problem;
use sigil_proto::admin::{
    AuditEntryView, CheckpointView, ConsistencyProofView, CreateIdentity, CreateResource, CreateUser, IdentityView,
    InclusionProofView, KeyView, LeafView, ListResponse, ResourceView, RotateKeyRequest, StatusChangeRequest,
    UpdateIdentity, UpdateResource, UpdateUser, UserView,
};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status (and, normally, a problem body).
    #[error("{}", describe(*status, problem))]
    Api {
        status: StatusCode,
        problem: Option<Box<Problem>>,
    },
    #[error("cannot reach sigil at {url}: {message}")]
    Transport { url: String, message: String },
    #[error("unexpected response: {0}")]
    Decode(String),
}

fn describe(status: StatusCode, problem: &Option<Box<Problem>>) -> String {
    match problem {
        Some(p) => format!(
            "{} ({}): {}",
            p.title,
            status.as_u16(),
            p.detail.as_deref().unwrap_or_default()
        ),
        None => format!("server answered {status}"),
    }
}

impl ClientError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Agents or workloads: the two identity collections share one API shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Agents,
    Workloads,
}

impl Family {
    fn path(self) -> &'static str {
        match self {
            Self::Agents => "agents",
            Self::Workloads => "workloads",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| ClientError::Transport {
                url: base.into(),
                message: e.to_string(),
            })?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http,
        })
    }

    /// Sends a request; decodes a 2xx JSON body as `T` (or `()` for 204), an error as a problem.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| ClientError::Transport {
            url: self.base.clone(),
            message: e.to_string(),
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| ClientError::Decode(e.to_string()))?;
        if !status.is_success() {
            return Err(ClientError::Api {
                status,
                problem: serde_json::from_slice(&bytes).ok().map(Box::new),
            });
        }
        let bytes = if bytes.is_empty() { &b"null"[..] } else { &bytes[..] };
        serde_json::from_slice(bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::GET, path, None::<&()>).await
    }

    /// Every page of a short list (keys, policy versions, entries…), following `next_cursor`.
    async fn get_all<T: DeserializeOwned>(&self, path: &str) -> Result<ListResponse<T>, ClientError> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let after = cursor
                .as_deref()
                .map(|c| format!("&cursor={}", enc(c)))
                .unwrap_or_default();
            let page: ListResponse<T> = self.get(&format!("{path}{sep}limit=500{after}")).await?;
            items.extend(page.items);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        Ok(ListResponse {
            items,
            next_cursor: None,
        })
    }

    // Users

    pub async fn create_user(&self, req: &CreateUser) -> Result<UserView, ClientError> {
        self.call(Method::POST, "/admin/v1/users", Some(req)).await
    }
    pub async fn list_users(&self, query: &[(&str, String)]) -> Result<ListResponse<UserView>, ClientError> {
        self.get(&format!("/admin/v1/users{}", qs(query))).await
    }
    pub async fn get_user(&self, user: &str) -> Result<UserView, ClientError> {
        self.get(&format!("/admin/v1/users/{}", enc(user))).await
    }
    pub async fn update_user(&self, user: &str, req: &UpdateUser) -> Result<UserView, ClientError> {
        self.call(Method::PATCH, &format!("/admin/v1/users/{}", enc(user)), Some(req))
            .await
    }
    pub async fn delete_user(&self, user: &str, transfer_to: Option<&str>) -> Result<(), ClientError> {
        let q = transfer_to
            .map(|t| vec![("transfer_to", t.to_owned())])
            .unwrap_or_default();
        self.call(
            Method::DELETE,
            &format!("/admin/v1/users/{}{}", enc(user), qs(&q)),
            None::<&()>,
        )
        .await
    }

    pub async fn set_password(&self, user: &str, password: &str) -> Result<(), ClientError> {
        let body = sigil_proto::admin::SetPassword {
            password: password.to_owned(),
        };
        self.call(
            Method::PUT,
            &format!("/admin/v1/users/{}/password", enc(user)),
            Some(&body),
        )
        .await
    }

    // Agents and workloads

    pub async fn create_identity(&self, f: Family, req: &CreateIdentity) -> Result<IdentityView, ClientError> {
        self.call(Method::POST, &format!("/admin/v1/{}", f.path()), Some(req))
            .await
    }
    pub async fn list_identities(
        &self,
        f: Family,
        query: &[(&str, String)],
    ) -> Result<ListResponse<IdentityView>, ClientError> {
        self.get(&format!("/admin/v1/{}{}", f.path(), qs(query))).await
    }
    pub async fn get_identity(&self, f: Family, name: &str) -> Result<IdentityView, ClientError> {
        self.get(&format!("/admin/v1/{}/{}", f.path(), enc(name))).await
    }
    pub async fn update_identity(
        &self,
        f: Family,
        name: &str,
        req: &UpdateIdentity,
    ) -> Result<IdentityView, ClientError> {
        self.call(
            Method::PATCH,
            &format!("/admin/v1/{}/{}", f.path(), enc(name)),
            Some(req),
        )
        .await
    }
    /// `action` is one of suspend, resume, revoke, decommission.
    pub async fn change_status(
        &self,
        f: Family,
        name: &str,
        action: &str,
        req: &StatusChangeRequest,
    ) -> Result<IdentityView, ClientError> {
        self.call(
            Method::POST,
            &format!("/admin/v1/{}/{}/{}", f.path(), enc(name), enc(action)),
            Some(req),
        )
        .await
    }

    // Resources

    pub async fn create_resource(&self, req: &CreateResource) -> Result<ResourceView, ClientError> {
        self.call(Method::POST, "/admin/v1/resources", Some(req)).await
    }
    pub async fn list_resources(&self, query: &[(&str, String)]) -> Result<ListResponse<ResourceView>, ClientError> {
        self.get(&format!("/admin/v1/resources{}", qs(query))).await
    }
    pub async fn get_resource(&self, r: &str) -> Result<ResourceView, ClientError> {
        self.get(&format!("/admin/v1/resources/{}", enc(r))).await
    }
    /// The RFC 9728 protected resource metadata document for a registered resource.
    pub async fn resource_metadata(&self, r: &str) -> Result<serde_json::Value, ClientError> {
        self.get(&format!("/admin/v1/resources/{}/metadata", enc(r))).await
    }
    pub async fn update_resource(&self, r: &str, req: &UpdateResource) -> Result<ResourceView, ClientError> {
        self.call(Method::PATCH, &format!("/admin/v1/resources/{}", enc(r)), Some(req))
            .await
    }
    pub async fn delete_resource(&self, r: &str) -> Result<(), ClientError> {
        self.call(Method::DELETE, &format!("/admin/v1/resources/{}", enc(r)), None::<&()>)
            .await
    }

    // Keys

    pub async fn list_keys(&self) -> Result<ListResponse<KeyView>, ClientError> {
        self.get_all("/admin/v1/keys").await
    }
    pub async fn rotate_key(&self, req: &RotateKeyRequest) -> Result<KeyView, ClientError> {
        self.call(Method::POST, "/admin/v1/keys/rotate", Some(req)).await
    }
}

impl Client {
    // Policies

    pub async fn upload_policy(
        &self,
        req: &sigil_proto::policy::UploadPolicyRequest,
    ) -> Result<sigil_proto::policy::PolicyVersionView, ClientError> {
        self.call(Method::POST, "/admin/v1/policies", Some(req)).await
    }
    pub async fn list_policies(&self) -> Result<ListResponse<sigil_proto::policy::PolicyVersionView>, ClientError> {
        self.get_all("/admin/v1/policies").await
    }
    pub async fn get_policy(&self, version: u64) -> Result<sigil_proto::policy::PolicyVersionView, ClientError> {
        self.get(&format!("/admin/v1/policies/{version}")).await
    }
    pub async fn activate_policy(&self, version: u64) -> Result<sigil_proto::policy::ActivationView, ClientError> {
        self.call(
            Method::POST,
            &format!("/admin/v1/policies/{version}/activate"),
            None::<&()>,
        )
        .await
    }
    pub async fn rollback_policy(&self) -> Result<sigil_proto::policy::ActivationView, ClientError> {
        self.call(Method::POST, "/admin/v1/policies/rollback", None::<&()>)
            .await
    }
    /// The full decision for one AuthZEN-shaped request (every step, determining policies).
    pub async fn explain_policy(
        &self,
        req: &sigil_proto::policy::ExplainRequest,
    ) -> Result<serde_json::Value, ClientError> {
        self.call(Method::POST, "/admin/v1/policies/explain", Some(req)).await
    }
}

impl Client {
    // Audit

    pub async fn audit_search(&self, query: &[(&str, String)]) -> Result<ListResponse<AuditEntryView>, ClientError> {
        self.get(&format!("/admin/v1/audit/records{}", qs(query))).await
    }
    pub async fn audit_leaves(&self, from: u64, limit: u32) -> Result<ListResponse<LeafView>, ClientError> {
        self.get(&format!("/admin/v1/audit/leaves?from={from}&limit={limit}"))
            .await
    }
    pub async fn audit_base(&self) -> Result<sigil_proto::admin::AuditBaseView, ClientError> {
        self.get("/admin/v1/audit/base").await
    }
    pub async fn audit_checkpoint(&self) -> Result<CheckpointView, ClientError> {
        self.get("/admin/v1/audit/checkpoint").await
    }
    pub async fn audit_checkpoints(&self, after: u64, limit: u32) -> Result<ListResponse<CheckpointView>, ClientError> {
        self.get(&format!("/admin/v1/audit/checkpoints?after={after}&limit={limit}"))
            .await
    }
    pub async fn inclusion_proof(&self, leaf: u64, tree_size: Option<u64>) -> Result<InclusionProofView, ClientError> {
        let size = tree_size.map(|s| format!("&tree_size={s}")).unwrap_or_default();
        self.get(&format!("/admin/v1/audit/proof/inclusion?leaf_index={leaf}{size}"))
            .await
    }
    pub async fn consistency_proof(&self, first: u64, second: u64) -> Result<ConsistencyProofView, ClientError> {
        self.get(&format!(
            "/admin/v1/audit/proof/consistency?first={first}&second={second}"
        ))
        .await
    }
    pub async fn audit_trace(&self, id: &str) -> Result<ListResponse<AuditEntryView>, ClientError> {
        self.get(&format!("/admin/v1/audit/trace/{}", enc(id))).await
    }
    /// The published verification keys (`/.well-known/jwks.json`, no credential needed).
    pub async fn jwks(&self) -> Result<serde_json::Value, ClientError> {
        self.get("/.well-known/jwks.json").await
    }
}

impl Client {
    // OAuth clients and tokens

    pub async fn create_client(
        &self,
        req: &sigil_proto::admin::CreateClient,
    ) -> Result<sigil_proto::admin::ClientView, ClientError> {
        self.call(Method::POST, "/admin/v1/clients", Some(req)).await
    }
    pub async fn list_clients(
        &self,
        query: &[(&str, String)],
    ) -> Result<ListResponse<sigil_proto::admin::ClientView>, ClientError> {
        self.get(&format!("/admin/v1/clients{}", qs(query))).await
    }
    pub async fn get_client(&self, id: &str) -> Result<sigil_proto::admin::ClientView, ClientError> {
        self.get(&format!("/admin/v1/clients/{}", enc(id))).await
    }
    pub async fn delete_client(&self, id: &str) -> Result<(), ClientError> {
        self.call(Method::DELETE, &format!("/admin/v1/clients/{}", enc(id)), None::<&()>)
            .await
    }
    pub async fn create_registration_token(
        &self,
        req: &sigil_proto::admin::CreateRegistrationToken,
    ) -> Result<sigil_proto::admin::RegistrationTokenView, ClientError> {
        self.call(Method::POST, "/admin/v1/registration-tokens", Some(req))
            .await
    }
    pub async fn list_registration_tokens(
        &self,
    ) -> Result<ListResponse<sigil_proto::admin::RegistrationTokenSummary>, ClientError> {
        self.get_all("/admin/v1/registration-tokens").await
    }
    pub async fn revoke_registration_token(&self, id: &str) -> Result<(), ClientError> {
        self.call(
            Method::DELETE,
            &format!("/admin/v1/registration-tokens/{}", enc(id)),
            None::<&()>,
        )
        .await
    }
    pub async fn create_entry(
        &self,
        req: &sigil_proto::admin::EntryRequest,
    ) -> Result<sigil_proto::admin::EntryView, ClientError> {
        self.call(Method::POST, "/admin/v1/entries", Some(req)).await
    }
    pub async fn update_entry(
        &self,
        id: &str,
        req: &sigil_proto::admin::EntryRequest,
    ) -> Result<sigil_proto::admin::EntryView, ClientError> {
        self.call(Method::PUT, &format!("/admin/v1/entries/{}", enc(id)), Some(req))
            .await
    }
    pub async fn list_entries(
        &self,
        query: &[(&str, String)],
    ) -> Result<ListResponse<sigil_proto::admin::EntryView>, ClientError> {
        self.get_all(&format!("/admin/v1/entries{}", qs(query))).await
    }
    pub async fn get_entry(&self, id: &str) -> Result<sigil_proto::admin::EntryView, ClientError> {
        self.get(&format!("/admin/v1/entries/{}", enc(id))).await
    }
    pub async fn delete_entry(&self, id: &str) -> Result<(), ClientError> {
        self.call(Method::DELETE, &format!("/admin/v1/entries/{}", enc(id)), None::<&()>)
            .await
    }
    pub async fn create_join_token(
        &self,
        req: &sigil_proto::node::JoinTokenRequest,
    ) -> Result<sigil_proto::node::JoinTokenView, ClientError> {
        self.call(Method::POST, "/admin/v1/nodes/join-tokens", Some(req)).await
    }
    pub async fn list_authorities(&self) -> Result<ListResponse<sigil_proto::node::AuthorityView>, ClientError> {
        self.get_all("/admin/v1/authorities").await
    }
    /// `step` is `prepare` or `activate`.
    pub async fn rotate_authorities(
        &self,
        step: &str,
    ) -> Result<ListResponse<sigil_proto::node::AuthorityView>, ClientError> {
        self.call(
            Method::POST,
            &format!("/admin/v1/authorities/{}", enc(step)),
            None::<&()>,
        )
        .await
    }
    pub async fn add_federation(
        &self,
        req: &sigil_proto::node::FederationRequest,
    ) -> Result<sigil_proto::node::FederationView, ClientError> {
        self.call(Method::POST, "/admin/v1/federations", Some(req)).await
    }
    pub async fn list_federations(&self) -> Result<ListResponse<sigil_proto::node::FederationView>, ClientError> {
        self.get_all("/admin/v1/federations").await
    }
    pub async fn delete_federation(&self, trust_domain: &str) -> Result<(), ClientError> {
        self.call(
            Method::DELETE,
            &format!("/admin/v1/federations/{}", enc(trust_domain)),
            None::<&()>,
        )
        .await
    }
    pub async fn list_nodes(&self) -> Result<ListResponse<sigil_proto::node::NodeView>, ClientError> {
        self.get_all("/admin/v1/nodes").await
    }
    pub async fn ban_node(&self, spiffe_id: &str) -> Result<(), ClientError> {
        self.call(
            Method::POST,
            &format!("/admin/v1/nodes/ban?spiffe_id={}", enc(spiffe_id)),
            None::<&()>,
        )
        .await
    }
    pub async fn add_trusted_issuer(
        &self,
        req: &sigil_proto::admin::CreateTrustedIssuer,
    ) -> Result<sigil_proto::admin::TrustedIssuerView, ClientError> {
        self.call(Method::POST, "/admin/v1/trusted-issuers", Some(req)).await
    }
    pub async fn list_trusted_issuers(
        &self,
    ) -> Result<ListResponse<sigil_proto::admin::TrustedIssuerView>, ClientError> {
        self.get_all("/admin/v1/trusted-issuers").await
    }
    pub async fn delete_trusted_issuer(&self, id: &str) -> Result<(), ClientError> {
        self.call(
            Method::DELETE,
            &format!("/admin/v1/trusted-issuers/{}", enc(id)),
            None::<&()>,
        )
        .await
    }
    pub async fn revoke_token(&self, token: &str) -> Result<(), ClientError> {
        let req = sigil_proto::admin::TokenRequest {
            token: token.to_owned(),
        };
        self.call(Method::POST, "/admin/v1/tokens/revoke", Some(&req)).await
    }
    pub async fn introspect_token(&self, token: &str) -> Result<serde_json::Value, ClientError> {
        let req = sigil_proto::admin::TokenRequest {
            token: token.to_owned(),
        };
        self.call(Method::POST, "/admin/v1/tokens/introspect", Some(&req)).await
    }
    /// RFC 8414 metadata (no credential needed).
    pub async fn metadata(&self) -> Result<serde_json::Value, ClientError> {
        self.get("/.well-known/oauth-authorization-server").await
    }
    /// A form POST to an OAuth endpoint, as an agent would send it. Returns status and JSON body.
    pub async fn oauth_form(
        &self,
        url: &str,
        form: &[(&str, String)],
        basic: Option<(&str, &str)>,
    ) -> Result<(u16, serde_json::Value), ClientError> {
        let mut req = self.http.post(url).form(form);
        if let Some((id, secret)) = basic {
            let enc = |s: &str| -> String { url::form_urlencoded::byte_serialize(s.as_bytes()).collect() };
            req = req.basic_auth(enc(id), Some(enc(secret)));
        }
        let resp = req.send().await.map_err(|e| ClientError::Transport {
            url: url.into(),
            message: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| ClientError::Decode(e.to_string()))?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        ))
    }
}

fn qs(pairs: &[(&str, String)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    format!("?{}", s.finish())
}
