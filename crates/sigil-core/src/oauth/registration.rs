//! Dynamic client registration (RFC 7591) and its management protocol (RFC 7592).
//!
//! Registration needs an initial access token an administrator issued for an owner. A client
//! registered with one belongs to the token's identity, or — when the token names none — to a
//! new agent owned by the token's owner with an empty ceiling: it can hold no scope until an
//! administrator widens that ceiling ("registered clients start with no scopes beyond the
//! ceiling of the identity they belong to").

use std::time::Duration;

use serde_json::{Map, Value, json};
use sigil_crypto::PublicJwks;
use sigil_proto::admin::CreateIdentity;
use sigil_types::{Ceiling, IdentityStatus, Labels, Name, Timestamp, UserStatus};
use zeroize::Zeroizing;

use super::client::{
    ClientAuthMethod, ClientSpec, OAuthClient, REGISTRATION_ACCESS_PREFIX, REGISTRATION_TOKEN_PREFIX, RegistrationToken,
};
use super::error::{ErrorCode, OAuthError};
use super::service::OAuthService;
use crate::audit::{AuditRecord, EventType};
use crate::model::{IdentityFamily, IdentityRef, Principal, UserRef};
use crate::registry::{Ctx, Registry, RegistryError};
use crate::store::{Change, ChangeSet};

fn metadata_error(d: impl Into<String>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidClientMetadata, d)
}

fn invalid_token() -> OAuthError {
    OAuthError::new(
        ErrorCode::InvalidToken,
        "the access token is missing, invalid or expired",
    )
}

/// Metadata fields Sigil understands and echoes back; anything else is ignored (RFC 7591 §2).
const ECHOED: &[&str] = &[
    "client_name",
    "client_uri",
    "logo_uri",
    "contacts",
    "software_id",
    "software_version",
    "scope",
    "tos_uri",
    "policy_uri",
    super::client::ID_TOKEN_ALG_FIELD,
];

/// A client whose registration access token was presented, with the active identity it
/// belongs to.
#[derive(Debug)]
pub struct ManagedClient {
    pub client: OAuthClient,
    identity: crate::model::Identity,
}

/// The parsed parts of a registration request that matter to the server.
struct Requested {
    method: ClientAuthMethod,
    redirect_uris: Vec<String>,
    jwks: Option<PublicJwks>,
    jwks_uri: Option<String>,
    dpop: bool,
    echo: Map<String, Value>,
}

/// An optional array of strings.
fn strings(obj: &Map<String, Value>, field: &str) -> Result<Vec<String>, OAuthError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| metadata_error(format!("{field} must be an array of strings")))
            })
            .collect(),
        Some(_) => Err(metadata_error(format!("{field} must be an array of strings"))),
    }
}

/// The descriptive members that are echoed back and shown to people (RFC 7591 §2): URLs
/// that are http(s) URLs, contacts that are an array of strings, a scope of RFC 6749 §3.3
/// scope tokens, and short strings, so a registration cannot plant junk in them.
fn check_descriptive(obj: &Map<String, Value>) -> Result<(), OAuthError> {
    let text = |field: &str, max: usize| -> Result<Option<&str>, OAuthError> {
        match obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(v)) if !v.is_empty() && v.len() <= max && !v.chars().any(char::is_control) => {
                Ok(Some(v.as_str()))
            }
            Some(_) => Err(metadata_error(format!(
                "{field} must be a string of 1 to {max} characters"
            ))),
        }
    };
    for field in ["client_uri", "logo_uri", "tos_uri", "policy_uri"] {
        if let Some(v) = text(field, 2048)? {
            let web = url::Url::parse(v).is_ok_and(|u| matches!(u.scheme(), "https" | "http") && u.host().is_some());
            if !web || v.chars().any(char::is_whitespace) {
                return Err(metadata_error(format!("{field} must be an http or https URL")));
            }
        }
    }
    for field in ["software_id", "software_version"] {
        text(field, 256)?;
    }
    if let Some(scope) = text("scope", 2048)? {
        sigil_types::ScopeSet::parse_oauth(scope).map_err(|e| metadata_error(format!("scope: {e}")))?;
    }
    let contacts = strings(obj, "contacts")?;
    if contacts.len() > 20
        || contacts
            .iter()
            .any(|c| c.is_empty() || c.len() > 320 || c.chars().any(char::is_control))
    {
        return Err(metadata_error(
            "contacts must be at most 20 strings of 1 to 320 characters",
        ));
    }
    Ok(())
}

fn parse_metadata(body: &Value, id_token_algs: &[sigil_crypto::Algorithm]) -> Result<Requested, OAuthError> {
    let obj = body
        .as_object()
        .ok_or_else(|| metadata_error("the body must be a JSON object"))?;
    // A member set to null is a member left out (RFC 7592 §2.2 treats both as "delete it").
    let obj: &Map<String, Value> = &obj
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    super::client::check_id_token_alg(obj, id_token_algs).map_err(metadata_error)?;
    let method = match obj.get("token_endpoint_auth_method") {
        None => ClientAuthMethod::ClientSecretBasic,
        Some(Value::String(m)) => ClientAuthMethod::parse(m).map_err(|e| metadata_error(e.to_string()))?,
        Some(_) => return Err(metadata_error("token_endpoint_auth_method must be a string")),
    };
    let redirect_uris = super::client::without_repeats(strings(obj, "redirect_uris")?);
    for u in &redirect_uris {
        super::client::check_redirect_uri(u).map_err(|e| OAuthError::new(ErrorCode::InvalidRedirectUri, e))?;
    }
    let mut grants = strings(obj, "grant_types")?;
    if obj.contains_key("grant_types") && grants.is_empty() {
        return Err(metadata_error("grant_types must name at least one grant"));
    }
    // RFC 7591 §2: an omitted grant_types means authorization_code. A client without
    // redirect URIs could not use that grant; §3.2.1 lets the server substitute, and such a
    // client keeps the grants a client without redirect URIs can use (client_credentials,
    // token exchange, JWT bearer), as the response's grant_types then says.
    if grants.is_empty() && !redirect_uris.is_empty() {
        grants.push("authorization_code".into());
    }
    for g in &grants {
        let known = [
            "client_credentials",
            "authorization_code",
            "refresh_token",
            super::client::TOKEN_EXCHANGE_GRANT,
            super::client::JWT_BEARER_GRANT,
        ];
        if !known.contains(&g.as_str()) {
            return Err(metadata_error(format!(
                "grant type {g} cannot be registered on this server"
            )));
        }
    }
    let wants_code = grants.iter().any(|g| g == "authorization_code");
    if wants_code && redirect_uris.is_empty() {
        return Err(OAuthError::new(
            ErrorCode::InvalidRedirectUri,
            "the authorization_code grant needs redirect_uris",
        ));
    }
    let response_types = strings(obj, "response_types")?;
    if response_types.iter().any(|r| r != "code") {
        return Err(metadata_error("the only response type is code"));
    }
    // RFC 7591 §2.1: the two must agree. A refresh token only ever comes with a code.
    let names = |g: &str| grants.iter().any(|x| x == g);
    if !grants.is_empty() && !names("authorization_code") {
        if !response_types.is_empty() {
            return Err(metadata_error(
                "response_types code needs the authorization_code grant in grant_types",
            ));
        }
        if names("refresh_token") {
            return Err(metadata_error("refresh_token needs the authorization_code grant"));
        }
    }
    if names("authorization_code") && obj.contains_key("response_types") && response_types.is_empty() {
        return Err(metadata_error(
            "the authorization_code grant needs the response type code",
        ));
    }
    let code_only = grants.iter().all(|g| g == "authorization_code" || g == "refresh_token");
    if method == ClientAuthMethod::None && (!wants_code || !code_only) {
        return Err(metadata_error(
            "a public client (none) only uses the authorization_code grant, with redirect_uris",
        ));
    }
    let jwks = obj
        .get("jwks")
        .map(|j| {
            serde_json::from_value::<PublicJwks>(j.clone())
                .map_err(|e| metadata_error(format!("jwks is not a JWK Set: {e}")))
        })
        .transpose()?;
    let jwks_uri = match obj.get("jwks_uri") {
        None => None,
        Some(Value::String(u)) => Some(u.clone()),
        Some(_) => return Err(metadata_error("jwks_uri must be a string")),
    };
    let dpop = match obj.get("dpop_bound_access_tokens") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(metadata_error("dpop_bound_access_tokens must be a boolean")),
    };
    if let Some(n) = obj.get("client_name")
        && !n.as_str().is_some_and(|n| !n.is_empty() && n.chars().count() <= 256)
    {
        return Err(metadata_error("client_name must be a string of 1 to 256 characters"));
    }
    // A name shown to people (consent pages, lists, the audit trail) must read as what it says
    // (RFC 7591 §5): no control characters, no bidirectional overrides.
    if let Some(n) = obj.get("client_name").and_then(Value::as_str)
        && (n.contains(['\n', '\t']) || sigil_types::Description::parse(n).is_err())
    {
        return Err(metadata_error(
            "client_name must not contain control characters or bidirectional text controls",
        ));
    }
    // Client assertions are verified by the key's own algorithm; a registered signing
    // algorithm must be one of those, and never `none` (OIDC Registration §2).
    if let Some(alg) = obj.get("token_endpoint_auth_signing_alg") {
        let usable = alg.as_str().and_then(sigil_crypto::ClientAlg::parse).is_some();
        if !usable {
            return Err(metadata_error(
                "token_endpoint_auth_signing_alg must be one this server verifies: EdDSA (Ed25519), ES256 or RS256",
            ));
        }
    }
    // Everything that could make the client's creation fail is checked here, before anything
    // (such as a new agent) is created for it.
    match (
        method.uses_secret() || method == ClientAuthMethod::None,
        &jwks,
        &jwks_uri,
    ) {
        (true, None, None) => {}
        (true, _, _) => return Err(metadata_error("only a private_key_jwt client has jwks or jwks_uri")),
        (false, _, _) => {
            super::client::check_key_source(jwks.as_ref(), jwks_uri.as_deref(), false).map_err(metadata_error)?
        }
    }
    check_descriptive(obj)?;
    let mut echo: Map<String, Value> = ECHOED
        .iter()
        .filter_map(|k| obj.get(*k).map(|v| ((*k).to_owned(), v.clone())))
        .collect();
    // Kept so the client gets the grants it asked for and no more (least privilege: a client
    // registered for sign-ins does not also act on its own with client_credentials).
    if !grants.is_empty() {
        echo.insert("grant_types".into(), json!(grants));
    }
    Ok(Requested {
        method,
        redirect_uris,
        jwks,
        jwks_uri,
        dpop,
        echo,
    })
}

/// Who a dynamic registration acts as: `registration:<initial access token id>`.
const REGISTRANT_PREFIX: &str = "registration:";

/// Whether a client or agent was created by dynamic registration (its `created_by` is the
/// registrant), rather than by an administrator.
pub(super) fn made_by_registration(created_by: &str) -> bool {
    created_by.starts_with(REGISTRANT_PREFIX)
}

impl OAuthService {
    /// Issues an initial access token for `owner` (and optionally an existing identity).
    pub async fn create_registration_token(
        &self,
        ctx: &Ctx,
        owner: &UserRef,
        identity: Option<&IdentityRef>,
        ttl: Duration,
    ) -> Result<(RegistrationToken, Zeroizing<String>), RegistryError> {
        let store = self.store();
        let owner = store
            .get_user(owner)
            .await?
            .ok_or_else(|| RegistryError::invalid("owner", format!("{owner} is not a registered user")))?;
        let identity = match identity {
            Some(r) => {
                let identity = store
                    .get_identity(r)
                    .await?
                    .ok_or_else(|| RegistryError::invalid("identity", format!("{r} does not exist")))?;
                crate::registry::refuse_final(&identity, "registration tokens")?;
                if identity.owner != owner.id {
                    return Err(RegistryError::invalid(
                        "identity",
                        format!("{r} belongs to another owner than {}", owner.username),
                    ));
                }
                Some(identity.id)
            }
            None => None,
        };
        let token = sigil_crypto::random_token(REGISTRATION_TOKEN_PREFIX)
            .map_err(|e| RegistryError::invalid("token", e.to_string()))?;
        let now = self.now();
        let t = RegistrationToken {
            id: self.new_id("iat_", now),
            token_hash: self.secret_hash(&token),
            owner: owner.id.clone(),
            identity,
            expires_at: now.plus(ttl),
            created_at: now,
            created_by: ctx.principal.as_str().to_owned(),
        };
        let audit = AuditRecord::new(
            now,
            EventType::RegistrationTokenCreated,
            &ctx.principal,
            ctx.request_id.as_deref(),
        )
        .target("registration_token", &t.id, owner.username.as_str())
        .detail("expires_at", t.expires_at.to_rfc3339());
        store
            .commit(
                ChangeSet::new()
                    .change(Change::InsertRegistrationToken(t.clone()))
                    .audit(audit),
            )
            .await?;
        Ok((t, token))
    }

    /// RFC 7591 §3.1: registers a client; returns the response body.
    pub async fn register(
        &self,
        registry: &Registry,
        initial: Option<&str>,
        body: &Value,
        request_id: Option<&str>,
    ) -> Result<Value, OAuthError> {
        let now = self.now();
        let token = match initial {
            Some(t) => self.store().find_registration_token(&self.secret_hash(t)).await?,
            None => None,
        };
        let token = token.filter(|t| t.expires_at > now).ok_or_else(invalid_token)?;
        self.check_registration_token_in_force(&token).await?;
        let req = parse_metadata(body, &self.keys.id_token_algorithms())?;
        self.check_jwks_uri_host(&req)?;
        let principal = Principal::from_stored(format!("{REGISTRANT_PREFIX}{}", token.id));
        let ctx = Ctx::new(principal.clone(), request_id.map(str::to_owned));
        let identity = match &token.identity {
            Some(id) => IdentityRef::Id(id.clone()),
            None => {
                let name = self.new_id("dcr-", now).to_ascii_lowercase();
                let create = CreateIdentity {
                    name: Name::parse(&name).map_err(|e| metadata_error(e.to_string()))?,
                    kind: None,
                    description: None,
                    owner: token.owner.to_string(),
                    team: None,
                    labels: Labels::default(),
                    expires_at: None,
                    ceiling: Ceiling::default(),
                    token_ttl_seconds: None,
                    dpop_required: false,
                };
                let i = registry
                    .create_identity(&ctx, IdentityFamily::Agents, create)
                    .await
                    .map_err(|e| match e {
                        RegistryError::Store(s) => OAuthError::from(s),
                        other => metadata_error(other.to_string()),
                    })?;
                IdentityRef::Id(i.id)
            }
        };
        let (mut client, secret) = self
            .create_client(
                &ctx,
                &identity,
                ClientSpec {
                    method: Some(req.method),
                    jwks: req.jwks,
                    jwks_uri: req.jwks_uri,
                    dpop_required: req.dpop,
                    redirect_uris: req.redirect_uris,
                    id_jag_audiences: Vec::new(),
                },
            )
            .await
            .map_err(|e| match e {
                RegistryError::Store(s) => OAuthError::from(s),
                other => metadata_error(other.to_string()),
            })?;
        let expected = client.version;
        client.metadata = Some(Value::Object(req.echo));
        let mut out = self.save_with_new_access_token(client, expected, None).await?;
        if let (Some(o), Some(s)) = (out.as_object_mut(), secret) {
            o.insert("client_secret".into(), json!(s.as_str()));
            o.insert("client_secret_expires_at".into(), json!(0));
        }
        Ok(out)
    }

    /// The RFC 7591 §3.2.1 view of a registered client (without secrets).
    pub fn client_metadata(&self, c: &OAuthClient) -> Value {
        let mut m = c
            .metadata
            .clone()
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default();
        m.insert("client_id".into(), json!(c.client_id));
        m.insert("client_id_issued_at".into(), json!(c.created_at.unix_seconds()));
        m.insert("token_endpoint_auth_method".into(), json!(c.auth_method.as_str()));
        m.insert("grant_types".into(), json!(c.grant_types()));
        // RFC 7591 §2.1: response types and grant types agree; `code` only with its grant.
        let response_types: &[&str] = if c.redirect_uris.is_empty() || !c.allows("authorization_code") {
            &[]
        } else {
            &["code"]
        };
        m.insert("response_types".into(), json!(response_types));
        if !c.redirect_uris.is_empty() {
            m.insert("redirect_uris".into(), json!(c.redirect_uris));
        }
        m.insert("dpop_bound_access_tokens".into(), json!(c.dpop_required));
        if let Some(j) = &c.jwks {
            m.insert("jwks".into(), serde_json::to_value(j).unwrap_or_default());
        }
        if let Some(u) = &c.jwks_uri {
            m.insert("jwks_uri".into(), json!(u));
        }
        m.insert(
            "registration_client_uri".into(),
            json!(format!("{}/register/{}", self.config().issuer, c.client_id)),
        );
        Value::Object(m)
    }

    /// RFC 7592 §2: the client named in the URL, if the registration access token is its own
    /// and the identity the client belongs to is active. A suspended (or expired) agent is
    /// quarantined: its registration access token neither reads, changes nor deletes its
    /// registration, just as its client gets no token; a revoked or decommissioned one has
    /// nothing left to manage.
    pub async fn managed_client(
        &self,
        client_id: &str,
        rat: Option<&str>,
        request_id: Option<&str>,
    ) -> Result<ManagedClient, OAuthError> {
        let Some(client) = self.store().get_client(client_id).await? else {
            self.revoke_strayed_registration_token(rat, client_id, request_id)
                .await?;
            return Err(invalid_token());
        };
        let presented = self.secret_hash(rat.unwrap_or_default());
        match &client.registration_token_hash {
            Some(h) if sigil_crypto::constant_time_eq(h.as_bytes(), presented.as_bytes()) => {}
            _ => return Err(invalid_token()),
        }
        let identity = self
            .store()
            .get_identity(&IdentityRef::Id(client.identity_id.clone()))
            .await?
            .ok_or_else(invalid_token)?;
        match identity.effective_status(self.now()) {
            IdentityStatus::Active => Ok(ManagedClient { client, identity }),
            s => Err(OAuthError::new(
                ErrorCode::InvalidToken,
                format!("the client's identity is {s}"),
            )),
        }
    }

    /// RFC 7592 §2.1–2.3: a registration access token presented for a client that does not
    /// exist "SHOULD be immediately revoked" — whoever holds it is probing, or lost track of
    /// its client. The client it belongs to keeps its registration; managing it takes an
    /// administrator from then on. A `client.updated` record says why.
    async fn revoke_strayed_registration_token(
        &self,
        rat: Option<&str>,
        named: &str,
        request_id: Option<&str>,
    ) -> Result<(), OAuthError> {
        let Some(rat) = rat.filter(|r| r.starts_with(REGISTRATION_ACCESS_PREFIX)) else {
            return Ok(());
        };
        let Some(mut holder) = self
            .store()
            .client_by_registration_token(&self.secret_hash(rat))
            .await?
        else {
            return Ok(());
        };
        let expected_version = holder.version;
        holder.registration_token_hash = None;
        holder.version += 1;
        let mut audit = AuditRecord::new(
            self.now(),
            EventType::ClientUpdated,
            &Principal::from_stored(format!("client:{}", holder.client_id)),
            request_id,
        )
        .detail("registration_access_token", "revoked")
        .detail("presented_for", named);
        audit.client_id = Some(holder.client_id.clone());
        let change = ChangeSet::new()
            .change(Change::UpdateClient {
                client: holder,
                expected_version,
            })
            .audit(audit);
        match self.store().commit(change).await {
            // Another request with the token changed the client first: it was used (and so
            // replaced) or revoked already.
            Ok(()) | Err(crate::store::StoreError::Stale { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// RFC 7592 §2.2: replaces the client's metadata; a `client.updated` audit record, acted by
    /// the client, goes with the change.
    pub async fn update_registration(
        &self,
        managed: ManagedClient,
        body: &Value,
        request_id: Option<&str>,
    ) -> Result<Value, OAuthError> {
        let client = &managed.client;
        if body.get("client_id").and_then(Value::as_str) != Some(client.client_id.as_str()) {
            return Err(metadata_error("the body's client_id must match the client"));
        }
        // §2.2: what the server issued is not the client's to send back, except the secret,
        // which must then be the current one (it is never changed by an update).
        let issued = [
            "registration_access_token",
            "registration_client_uri",
            "client_secret_expires_at",
            "client_id_issued_at",
        ];
        if let Some(f) = issued.iter().find(|f| body.get(**f).is_some()) {
            return Err(metadata_error(format!("{f} must not be sent in an update")));
        }
        if let Some(sent) = body.get("client_secret") {
            let presented = self.secret_hash(sent.as_str().unwrap_or_default());
            let current = client.secret_hash.as_deref().unwrap_or_default();
            if !sigil_crypto::constant_time_eq(presented.as_bytes(), current.as_bytes()) {
                return Err(metadata_error("client_secret is not the client's current secret"));
            }
        }
        let req = parse_metadata(body, &self.keys.id_token_algorithms())?;
        self.check_jwks_uri_host(&req)?;
        if req.method != client.auth_method {
            return Err(metadata_error(
                "token_endpoint_auth_method cannot be changed; register a new client",
            ));
        }
        let mut next = client.clone();
        next.redirect_uris = req.redirect_uris;
        if req.method == ClientAuthMethod::PrivateKeyJwt {
            if req.jwks.is_none() && req.jwks_uri.is_none() {
                return Err(metadata_error("private_key_jwt needs jwks or jwks_uri"));
            }
            if let Some(k) = &req.jwks {
                for key in &k.keys {
                    key.check().map_err(|e| metadata_error(e.to_string()))?;
                }
            }
            next.jwks = req.jwks;
            next.jwks_uri = req.jwks_uri;
        }
        next.dpop_required = req.dpop;
        next.metadata = Some(Value::Object(req.echo));
        let ctx = Ctx::new(
            Principal::from_stored(format!("client:{}", client.client_id)),
            request_id.map(str::to_owned),
        );
        let audit = super::service::client_event(
            &ctx,
            self.now(),
            EventType::ClientUpdated,
            &client.client_id,
            &managed.identity,
        );
        self.save_with_new_access_token(next, client.version, Some(audit)).await
    }

    /// The initial access tokens still in force (unexpired), newest first.
    pub async fn list_registration_tokens(&self) -> Result<Vec<RegistrationToken>, RegistryError> {
        Ok(self.store().list_registration_tokens(self.now()).await?)
    }

    /// Revokes an initial access token (a leaked one, or one no longer needed): it registers
    /// nothing more. Clients it already registered stay.
    pub async fn revoke_registration_token(&self, ctx: &Ctx, id: &str) -> Result<(), RegistryError> {
        let audit = AuditRecord::new(
            self.now(),
            EventType::RegistrationTokenRevoked,
            &ctx.principal,
            ctx.request_id.as_deref(),
        )
        .target("registration_token", id, id);
        let change = ChangeSet::new()
            .change(Change::DeleteRegistrationToken { id: id.to_owned() })
            .audit(audit);
        match self.store().commit(change).await {
            Err(crate::store::StoreError::Stale { .. }) => Err(RegistryError::not_found("registration token", id)),
            other => Ok(other?),
        }
    }

    /// An initial access token speaks for its owner (and identity): it stops working while the
    /// owner is not active, and for good once the identity is revoked or decommissioned.
    async fn check_registration_token_in_force(&self, token: &RegistrationToken) -> Result<(), OAuthError> {
        let store = self.store();
        let owner = store.get_user(&UserRef::Id(token.owner.clone())).await?;
        // A suspension ends what she had handed out, as it ends her access tokens.
        let in_force = |u: &crate::model::User| {
            u.status == UserStatus::Active && u.tokens_not_before.is_none_or(|t| token.created_at >= t)
        };
        if !owner.as_ref().is_some_and(in_force) {
            return Err(invalid_token());
        }
        if let Some(id) = &token.identity {
            let identity = store.get_identity(&IdentityRef::Id(id.clone())).await?;
            if identity.is_none_or(|i| i.status.is_final()) {
                return Err(invalid_token());
            }
        }
        Ok(())
    }

    /// RFC 7592 §2.1: the client's current registration, with a new registration access token.
    pub async fn read_registration(&self, managed: ManagedClient) -> Result<Value, OAuthError> {
        let version = managed.client.version;
        self.save_with_new_access_token(managed.client, version, None).await
    }

    /// Saves `next` with a new registration access token and answers with the RFC 7592 §3
    /// client information response. That response must carry a registration access token, and
    /// Sigil keeps only its hash, so every read and update issues a new one; the client
    /// discards the old (§3 allows exactly this rotation).
    async fn save_with_new_access_token(
        &self,
        mut next: OAuthClient,
        expected_version: i64,
        audit: Option<AuditRecord>,
    ) -> Result<Value, OAuthError> {
        let rat = sigil_crypto::random_token(REGISTRATION_ACCESS_PREFIX).map_err(|_| OAuthError::unavailable())?;
        next.registration_token_hash = Some(self.secret_hash(&rat));
        next.version = expected_version + 1;
        let mut change = ChangeSet::new().change(Change::UpdateClient {
            client: next.clone(),
            expected_version,
        });
        if let Some(a) = audit {
            change = change.audit(a);
        }
        match self.store().commit(change).await {
            Ok(()) => {}
            // Another request with the same token won the race and retired it.
            Err(crate::store::StoreError::Stale { .. }) => return Err(invalid_token()),
            Err(e) => return Err(e.into()),
        }
        let mut out = self.client_metadata(&next);
        if let Some(o) = out.as_object_mut() {
            o.insert("registration_access_token".into(), json!(rat.as_str()));
        }
        Ok(out)
    }

    /// RFC 7592 §2.3: deletes the client. An agent that registration made for this client
    /// alone (an identity-less initial access token) has no use left once its last client is
    /// gone, so it is decommissioned with it (kept, for the audit trail, but final).
    pub async fn delete_registration(
        &self,
        registry: &Registry,
        managed: ManagedClient,
        request_id: Option<&str>,
    ) -> Result<(), OAuthError> {
        let ManagedClient {
            client,
            identity: agent,
        } = managed;
        let principal = Principal::from_stored(format!("client:{}", client.client_id));
        let ctx = Ctx::new(principal, request_id.map(str::to_owned));
        let store_error = |e: RegistryError| match e {
            // Another request with the same registration access token changed the client
            // first (a read rotates the token): that token is retired, as for an update.
            RegistryError::Store(crate::store::StoreError::Stale { .. }) => invalid_token(),
            RegistryError::Store(s) => OAuthError::from(s),
            _ => invalid_token(),
        };
        let identity = IdentityRef::Id(client.identity_id.clone());
        self.delete_client_as_read(&ctx, client).await.map_err(store_error)?;
        if !made_by_registration(agent.meta.created_by.as_str()) {
            return Ok(());
        }
        let others = self
            .store()
            .list_clients(Some(&agent.id), &crate::model::PageRequest::default())
            .await?;
        if others.items.is_empty() {
            registry
                .change_status(
                    &ctx,
                    Some(IdentityFamily::Agents),
                    &identity,
                    sigil_types::StatusChange::Decommission,
                    Some("its only client's registration was deleted (RFC 7592)".into()),
                )
                .await
                .map_err(store_error)?;
        }
        Ok(())
    }

    /// Records a refused registration request (`registration.refused`, denied): a missing or
    /// wrong initial or registration access token, metadata that is refused, a request that
    /// lost a race for its registration access token. `action` is `register`, `read`,
    /// `update` or `delete`; `client_id` the one in the URL (RFC 7592), if any.
    pub async fn record_refused_registration(
        &self,
        action: &str,
        client_id: Option<&str>,
        e: &OAuthError,
        request_id: Option<&str>,
    ) {
        let named = super::client_auth::PresentedCredentials {
            client_id: client_id.map(str::to_owned),
            ..Default::default()
        };
        self.record_refused_client_request(EventType::RegistrationRefused, action, Some(&named), e, request_id)
            .await;
    }

    /// A registrant's `jwks_uri` is fetched from public hosts only (see `FetchFrom`); one that
    /// names an internal address outright is refused when registered.
    fn check_jwks_uri_host(&self, req: &Requested) -> Result<(), OAuthError> {
        let Some(uri) = &req.jwks_uri else { return Ok(()) };
        let u = url::Url::parse(uri).map_err(|e| metadata_error(format!("jwks_uri: {e}")))?;
        super::metadata_doc::refuse_internal_literal(&u, self.config().metadata_documents.allow_loopback)
            .map_err(|e| metadata_error(format!("jwks_uri: {e}")))
    }

    fn now(&self) -> Timestamp {
        self.clock_now()
    }
}
