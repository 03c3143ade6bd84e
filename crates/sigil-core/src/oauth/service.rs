//! The token service: client management, client authentication, the client credentials grant,
//! introspection and revocation.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sigil_crypto::{KeyedHasher, MasterKey, constant_time_eq};
use sigil_types::{IdentityStatus, ResourceUri, ScopeSet, Timestamp};
use zeroize::Zeroizing;

use super::client::{CLIENT_SECRET_PREFIX, ClientAuthMethod, ClientSpec, OAuthClient};
use super::client_auth::{self, Authenticated, JwksFetcher, Method, PresentedCredentials};
use super::error::{ErrorCode, OAuthError};
use super::token::{self, AccessClaims};
use crate::audit::{AuditRecord, AuthEvidence, EventType, Target};
use crate::keys::KeyManager;
use crate::model::{Identity, IdentityFamily, IdentityRef, Page, PageRequest, Principal, ResourceRef};
use crate::registry::{Ctx, RegistryError};
use crate::store::{Change, ChangeSet, Store, StoreError};
use crate::{Clock, Rng};

const SECRET_PURPOSE: &str = "sigil client secret hash v1";

/// Endpoint URLs and lifetimes.
#[derive(Debug, Clone)]
pub struct OAuthConfig {
    pub issuer: String,
    pub token_endpoint: String,
    pub introspection_endpoint: String,
    pub revocation_endpoint: String,
    /// OpenID Connect Core §5.3: where a signed-in user's claims are read with the access
    /// token of a sign-in that named no API.
    pub userinfo_endpoint: String,
    pub access_token_ttl: Duration,
    /// No token lives longer than this, whatever an identity asks for.
    pub max_access_token_ttl: Duration,
    /// Require server-provided nonces in DPoP proofs (RFC 9449 §8).
    pub dpop_nonce: bool,
    pub authorization_endpoint: String,
    /// Most actors an `act` chain may hold.
    pub max_delegation_depth: usize,
    pub refresh_token_ttl: Duration,
    /// Client ID Metadata Documents: whether and as which agent they are accepted.
    pub metadata_documents: super::metadata_doc::MetadataDocuments,
}

/// A successful token response (RFC 6749 §5.1).
#[derive(Debug, Clone, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    /// RFC 8693 §2.2.1: present in token exchange responses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<&'static str>,
    pub token_type: &'static str,
    pub expires_in: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// OpenID Connect Core §3.1.3.3: when the authorization asked for `openid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

#[derive(Debug)]
pub struct OAuthService {
    pub(super) store: Arc<dyn Store>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) rng: Arc<dyn Rng>,
    pub(super) keys: Arc<KeyManager>,
    /// The trust domain's authorities: JWT-SVIDs presented as client assertions verify
    /// against its JWT authorities.
    pub(super) spiffe: Arc<crate::spiffe::X509Ca>,
    pub(super) fetcher: Arc<dyn JwksFetcher>,
    hasher: KeyedHasher,
    nonces: KeyedHasher,
    /// Signs the authorization pages' CSRF tokens and login tickets.
    pub(super) forms: KeyedHasher,
    pub(super) cfg: OAuthConfig,
    pub(super) reads: Arc<super::reads::RegistryReads>,
    policy: Arc<dyn super::policy::IssuancePolicy>,
    pub(super) documents: Arc<dyn super::metadata_doc::DocumentFetcher>,
    pub(super) documents_cache: super::metadata_doc::DocumentCache,
    pub(super) password_checks: tokio::sync::Semaphore,
    pub(super) sign_ins: super::authorize::SignInThrottle,
    /// When this process last recorded each identity's use, so `last_used_at` is written at most
    /// once per [`LAST_USED_RESOLUTION`] per identity instead of once per token.
    touched: std::sync::Mutex<std::collections::HashMap<sigil_types::IdentityId, sigil_types::Timestamp>>,
    verified: super::verified::VerifiedTokens,
}

/// The description of a refusal because the grant was revoked while the request ran.
pub(super) const GRANT_REVOKED: &str = "the grant was revoked";

/// How fresh an identity's `last_used_at` is kept.
const LAST_USED_RESOLUTION: Duration = Duration::from_secs(60);

/// What the token service works with.
#[derive(Debug)]
pub struct OAuthDeps {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub rng: Arc<dyn Rng>,
    pub keys: Arc<KeyManager>,
    pub spiffe: Arc<crate::spiffe::X509Ca>,
    pub fetcher: Arc<dyn JwksFetcher>,
    /// Decides which scopes an identity may receive.
    pub policy: Arc<dyn super::policy::IssuancePolicy>,
    /// Cached registry reads, shared with the other request paths.
    pub reads: Arc<super::reads::RegistryReads>,
    /// Fetches client metadata documents.
    pub documents: Arc<dyn super::metadata_doc::DocumentFetcher>,
}

impl OAuthService {
    pub fn new(deps: OAuthDeps, master: &MasterKey, cfg: OAuthConfig) -> Self {
        let OAuthDeps {
            store,
            clock,
            rng,
            keys,
            spiffe,
            fetcher,
            policy,
            reads,
            documents,
        } = deps;
        Self {
            store,
            clock,
            rng,
            keys,
            spiffe,
            fetcher,
            hasher: KeyedHasher::new(master, SECRET_PURPOSE),
            nonces: KeyedHasher::new(master, "sigil dpop nonce v1"),
            forms: KeyedHasher::new(master, "sigil authorization forms v1"),
            cfg,
            reads,
            policy,
            documents,
            documents_cache: Default::default(),
            password_checks: tokio::sync::Semaphore::new(super::authorize::PASSWORD_CHECKS),
            sign_ins: Default::default(),
            touched: Default::default(),
            verified: Default::default(),
        }
    }

    pub fn config(&self) -> &OAuthConfig {
        &self.cfg
    }

    /// Token-path reads, through the shared one-second cache.
    /// A client by id: a registered one, or one described by a client metadata document.
    pub(super) async fn client(&self, id: &str) -> Result<Option<Arc<OAuthClient>>, OAuthError> {
        if super::metadata_doc::is_document_url(id) {
            return self.document_client(id).await.map(|c| Some(Arc::new(c)));
        }
        // No client id is that long or holds a control character (PostgreSQL text cannot even
        // hold NUL): such a value names no client, on either backend.
        if id.len() > 64 || id.chars().any(char::is_control) {
            return Ok(None);
        }
        Ok(self.reads.client(id).await?)
    }

    pub(super) async fn identity(
        &self,
        id: &sigil_types::IdentityId,
    ) -> Result<Option<Arc<crate::model::Identity>>, StoreError> {
        self.reads.identity(&IdentityRef::Id(id.clone())).await
    }

    pub(super) async fn resource(&self, uri: &ResourceUri) -> Result<Option<Arc<crate::model::Resource>>, StoreError> {
        self.reads.resource(&ResourceRef::Uri(uri.clone())).await
    }

    pub(super) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub(super) fn clock_now(&self) -> sigil_types::Timestamp {
        self.clock.now()
    }

    pub(super) fn new_id(&self, prefix: &str, now: sigil_types::Timestamp) -> String {
        crate::new_id(prefix, now, self.rng.as_ref())
    }

    /// A new token id (`jti`): a ULID, 80 random bits after the millisecond. Ids issued together
    /// sort together, so the indexes that hold them (the audit trail's, the revocation and
    /// lineage tables') take each batch's ids on one page instead of one page per id.
    pub(super) fn new_jti(&self, now: sigil_types::Timestamp) -> String {
        self.new_id("", now)
    }

    pub(super) fn secret_hash(&self, secret: &str) -> String {
        self.hasher.hash_hex(secret.as_bytes())
    }

    /// The current DPoP nonce: stateless (a keyed hash of the minute), so every replica that
    /// shares the master key issues and accepts the same values; the previous minute's is
    /// accepted too.
    pub fn dpop_nonce(&self) -> Option<String> {
        self.cfg
            .dpop_nonce
            .then(|| self.nonce_for(self.clock.now().unix_seconds().div_euclid(60)))
    }

    fn nonce_for(&self, minute: i64) -> String {
        self.nonces.hash_hex(&minute.to_be_bytes()).chars().take(32).collect()
    }

    pub(super) fn nonce_is_current(&self, n: &str) -> bool {
        let minute = self.clock.now().unix_seconds().div_euclid(60);
        n == self.nonce_for(minute) || n == self.nonce_for(minute - 1)
    }

    // ---- clients (admin) ----

    /// Registers a client for an identity. A secret client gets a generated secret, returned
    /// once; a key client must give its JWKS or JWKS URI.
    pub async fn create_client(
        &self,
        ctx: &Ctx,
        identity: &IdentityRef,
        spec: ClientSpec,
    ) -> Result<(OAuthClient, Option<Zeroizing<String>>), RegistryError> {
        let ClientSpec {
            method,
            jwks,
            jwks_uri,
            dpop_required,
            redirect_uris,
            id_jag_audiences,
        } = spec;
        let method = method.unwrap_or(ClientAuthMethod::PrivateKeyJwt);
        let identity = self
            .store
            .get_identity(identity)
            .await?
            .ok_or_else(|| RegistryError::invalid("identity", format!("identity {identity} does not exist")))?;
        crate::registry::refuse_final(&identity, "clients")?;
        if redirect_uris.len() > 20 {
            return Err(RegistryError::invalid("redirect_uris", "at most 20 redirect URIs"));
        }
        for u in &redirect_uris {
            super::client::check_redirect_uri(u).map_err(|e| RegistryError::invalid("redirect_uris", e))?;
        }
        let redirect_uris = super::client::without_repeats(redirect_uris);
        let bad_target = |a: &super::client::IdJagAudience| {
            url::Url::parse(&a.audience).is_err() || a.client_id.as_ref().is_some_and(|c| c.is_empty() || c.len() > 512)
        };
        if id_jag_audiences.len() > 20 || id_jag_audiences.iter().any(bad_target) {
            return Err(RegistryError::invalid(
                "id_jag_audiences",
                "each must be an authorization server's issuer URL (at most 20)",
            ));
        }
        if method == ClientAuthMethod::None && redirect_uris.is_empty() {
            return Err(RegistryError::invalid(
                "redirect_uris",
                "a public client (none) only uses the authorization code grant: give its redirect URIs",
            ));
        }
        let (secret, secret_hash) = if method == ClientAuthMethod::None {
            if jwks.is_some() || jwks_uri.is_some() {
                return Err(RegistryError::invalid("jwks", "a public client has no keys"));
            }
            (None, None)
        } else if method.uses_secret() {
            if jwks.is_some() || jwks_uri.is_some() {
                return Err(RegistryError::invalid("jwks", "a secret client has no keys"));
            }
            let s = sigil_crypto::random_token(CLIENT_SECRET_PREFIX)
                .map_err(|e| RegistryError::Store(StoreError::Unavailable(e.to_string())))?;
            let h = self.hasher.hash_hex(s.as_bytes());
            (Some(s), Some(h))
        } else {
            super::client::check_key_source(jwks.as_ref(), jwks_uri.as_deref(), true)
                .map_err(|e| RegistryError::invalid("jwks", e))?;
            (None, None)
        };
        let now = self.clock.now();
        let client_id = crate::new_id("cli_", now, self.rng.as_ref());
        let client = OAuthClient {
            client_id: client_id.clone(),
            identity_id: identity.id.clone(),
            auth_method: method,
            jwks,
            jwks_uri,
            secret_hash,
            dpop_required,
            registration_token_hash: None,
            metadata: None,
            redirect_uris,
            id_jag_audiences,
            created_at: now,
            created_by: ctx.principal.as_str().to_owned(),
            version: 1,
        };
        let audit = client_event(ctx, now, EventType::ClientCreated, &client_id, &identity)
            .detail("token_endpoint_auth_method", method.as_str());
        self.store
            .commit(
                ChangeSet::new()
                    .change(Change::InsertClient(client.clone()))
                    .audit(audit),
            )
            .await?;
        Ok((client, secret))
    }

    pub async fn get_client(&self, client_id: &str) -> Result<OAuthClient, RegistryError> {
        self.store
            .get_client(client_id)
            .await?
            .ok_or_else(|| RegistryError::not_found("client", client_id))
    }

    pub async fn list_clients(
        &self,
        identity: Option<&IdentityRef>,
        page: PageRequest,
    ) -> Result<Page<OAuthClient>, RegistryError> {
        let id = match identity {
            Some(r) => match self.store.get_identity(r).await? {
                Some(i) => Some(i.id),
                None => {
                    return Ok(Page {
                        items: vec![],
                        next_cursor: None,
                    });
                }
            },
            None => None,
        };
        Ok(self.store.list_clients(id.as_ref(), &page).await?)
    }

    pub async fn delete_client(&self, ctx: &Ctx, client_id: &str) -> Result<(), RegistryError> {
        let c = self.get_client(client_id).await?;
        self.delete_client_as_read(ctx, c).await
    }

    /// Deletes the client if it is still as it was read (its version): a deletion that raced
    /// with a change to it (RFC 7592: a read that rotated the registration access token the
    /// deletion was authorised by) fails with `StoreError::Stale` instead.
    pub(super) async fn delete_client_as_read(&self, ctx: &Ctx, c: OAuthClient) -> Result<(), RegistryError> {
        let client_id = c.client_id.as_str();
        let identity = self
            .store
            .get_identity(&IdentityRef::Id(c.identity_id.clone()))
            .await?
            .ok_or_else(|| RegistryError::not_found("identity", c.identity_id.as_str()))?;
        let audit = client_event(ctx, self.clock.now(), EventType::ClientDeleted, client_id, &identity);
        self.store
            .commit(
                ChangeSet::new()
                    .change(Change::DeleteClient {
                        client_id: c.client_id.clone(),
                        expected_version: c.version,
                    })
                    .audit(audit),
            )
            .await?;
        Ok(())
    }

    // ---- client authentication ----

    /// Authenticates the client behind a request. Unknown client and wrong secret take the
    /// same work (a keyed hash and a constant-time compare), so timing does not tell them apart.
    pub async fn authenticate(
        &self,
        creds: &PresentedCredentials,
        endpoint: &str,
    ) -> Result<Authenticated, OAuthError> {
        match client_auth::method(creds)? {
            Method::Basic(id, secret) => self.by_secret(id, secret, ClientAuthMethod::ClientSecretBasic).await,
            Method::Post(id, secret) => self.by_secret(id, secret, ClientAuthMethod::ClientSecretPost).await,
            Method::Tls(cert) => self.authenticate_tls(creds, cert).await,
            Method::Assertion(a) => {
                let claimed = match client_auth::assertion_signer(a)? {
                    client_auth::AssertionSigner::Workload(spiffe_id) => {
                        return self.authenticate_svid(creds, a, &spiffe_id, endpoint).await;
                    }
                    client_auth::AssertionSigner::Client(id) => id,
                };
                if creds.client_id.as_deref().is_some_and(|c| c != claimed) {
                    return Err(OAuthError::invalid_client(
                        "client_id does not match the client assertion",
                    ));
                }
                let client = self
                    .client(&claimed)
                    .await?
                    .ok_or_else(|| OAuthError::invalid_client("unknown client"))?;
                if client.auth_method != ClientAuthMethod::PrivateKeyJwt {
                    return Err(OAuthError::invalid_client(
                        "this client is registered for client secrets, not private_key_jwt",
                    ));
                }
                let keys = match (&client.jwks, &client.jwks_uri) {
                    (Some(k), _) => k.clone(),
                    (None, Some(uri)) => self
                        .fetcher
                        .fetch(uri, client_auth::header_kid(a).as_deref(), self.fetch_from(&client))
                        .await
                        .map_err(|e| {
                            tracing::warn!(client_id = client.client_id, error = e, "cannot fetch client JWKS");
                            OAuthError::invalid_client("the client's jwks_uri could not be fetched")
                        })?,
                    (None, None) => return Err(OAuthError::invalid_client("the client has no registered keys")),
                };
                // RFC 7523 §3: the issuer identifies us; the token endpoint URL is widely used
                // as `aud` for every endpoint; the endpoint itself is accepted too.
                let audiences = [self.cfg.issuer.as_str(), self.cfg.token_endpoint.as_str(), endpoint];
                let now = self.clock.now().unix_seconds();
                let (evidence, jti) = client_auth::verify_assertion(a, &client, &keys, &audiences, now)?;
                Ok(Authenticated {
                    client,
                    evidence,
                    assertion_jti: Some(jti),
                    cert_thumbprint: None,
                })
            }
        }
    }

    async fn by_secret(&self, id: &str, secret: &str, used: ClientAuthMethod) -> Result<Authenticated, OAuthError> {
        let presented = self.hasher.hash_hex(secret.as_bytes());
        let client = if super::metadata_doc::is_document_url(id) {
            None // metadata-document clients have no secret
        } else {
            self.client(id).await?
        };
        let stored = client
            .as_ref()
            .and_then(|c| c.secret_hash.clone())
            .unwrap_or_else(|| "0".repeat(presented.len()));
        let matches = constant_time_eq(presented.as_bytes(), stored.as_bytes());
        match client {
            Some(c) if matches && c.auth_method.uses_secret() => {
                let evidence = AuthEvidence {
                    method: used.as_str().into(),
                    ..AuthEvidence::default()
                };
                Ok(Authenticated {
                    client: c,
                    evidence,
                    assertion_jti: None,
                    cert_thumbprint: None,
                })
            }
            _ => Err(OAuthError::invalid_client("client authentication failed")),
        }
    }

    // ---- grants ----

    /// The client credentials grant (RFC 6749 §4.4) with one resource indicator (RFC 8707).
    pub async fn client_credentials(
        &self,
        creds: &PresentedCredentials,
        scope: Option<&str>,
        resources: &[String],
        dpop: Option<&str>,
        request_id: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        self.issue(creds, scope, resources, dpop, request_id).await
    }

    async fn issue(
        &self,
        creds: &PresentedCredentials,
        scope: Option<&str>,
        resources: &[String],
        dpop: Option<&str>,
        request_id: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let auth = self.authenticate(creds, &self.cfg.token_endpoint).await?;
        auth.client.ensure_grant("client_credentials")?;
        let proof = self.check_dpop(dpop)?;
        let identity = self
            .identity(&auth.client.identity_id)
            .await?
            .ok_or_else(|| OAuthError::invalid_client("the client's identity no longer exists"))?;
        let now = self.clock.now();
        if identity.effective_status(now) != IdentityStatus::Active {
            return Err(OAuthError::invalid_client(format!(
                "the client's identity is {}",
                identity.effective_status(now)
            )));
        }
        if proof.is_none() && (auth.client.dpop_required || identity.dpop_required) {
            return Err(OAuthError::new(
                ErrorCode::InvalidDpopProof,
                "this client must send a DPoP proof (RFC 9449)",
            ));
        }
        let uri = match resources {
            // RFC 8707 §2: a server that requires the parameter fails a request that omits it
            // with `invalid_target` (a target "missing"), as `/authorize` does.
            [] => {
                return Err(OAuthError::invalid_target(
                    "resource is required: name the API the token is for (RFC 8707)",
                ));
            }
            [one] => one,
            _ => return Err(OAuthError::invalid_target("one resource per token")),
        };
        let uri = ResourceUri::parse(uri).map_err(|e| OAuthError::invalid_target(e.to_string()))?;
        let resource = self
            .resource(&uri)
            .await?
            .ok_or_else(|| OAuthError::invalid_target("the resource is not registered"))?;
        // From here on, the resource as registered: a root URL may have been asked for with
        // or without its trailing slash, and the token's audience is the registered spelling.
        let uri = resource.uri.clone();
        if identity
            .ceiling
            .resources
            .as_ref()
            .is_some_and(|allowed| !allowed.contains(&uri))
        {
            return Err(OAuthError::invalid_target(
                "the resource is outside the identity's ceiling",
            ));
        }
        let requested =
            ScopeSet::parse_oauth(scope.unwrap_or_default()).map_err(|e| OAuthError::invalid_scope(e.to_string()))?;
        let owner = self.reads.username(&identity.owner).await?;
        let chain = [super::policy::ChainPrincipal::Identity {
            identity: &identity,
            owner: &owner,
        }];
        let (granted, evidence) = self
            .permitted_scopes(
                &chain,
                &auth.client,
                &resource,
                &requested,
                &auth.evidence.method,
                proof.is_some(),
                now,
            )
            .await?;

        let ttl = self.token_lifetime(identity.token_ttl_seconds);
        let claims = AccessClaims {
            iss: self.cfg.issuer.clone(),
            sub: identity.id.to_string(),
            aud: uri.to_string(),
            exp: now.unix_seconds() + i64::try_from(ttl.as_secs()).unwrap_or(300),
            iat: now.unix_seconds(),
            jti: self.new_jti(now),
            client_id: auth.client.client_id.clone(),
            scope: granted.to_oauth_string(),
            cnf: super::token::Confirmation::of(proof.as_ref().map(|p| p.jkt.clone()), auth.cert_thumbprint.clone()),
            act: None,
            may_act: None,
        };
        let key = self.keys.active().ok_or_else(OAuthError::unavailable)?;
        let access_token = token::mint(&key, &claims).map_err(|_| OAuthError::unavailable())?;

        let mut record = AuditRecord::new(
            now,
            EventType::TokenIssued,
            &Principal::from_stored(identity.name.to_string()),
            request_id,
        );
        record.client_id = Some(claims.client_id.clone());
        record.auth = Some(AuthEvidence {
            jti: Some(claims.jti.clone()),
            ..auth.evidence.clone()
        });
        record.target = Some(Target {
            kind: "resource".into(),
            id: Some(resource.id.to_string()),
            name: Some(resource.name.to_string()),
            resource: Some(uri.to_string()),
            audience: Some(uri.to_string()),
        });
        record.scopes = granted.iter().map(|s| s.to_string()).collect();
        record.action = Some("client_credentials".into());
        record.policy = Some(evidence);
        let record = record
            .detail("identity", identity.id.as_str())
            .detail("signing_kid", key.kid());
        let mut cs = ChangeSet::new().audit(record);
        if self.should_touch(&identity, now) {
            cs = cs.change(Change::TouchIdentity {
                id: identity.id.clone(),
                at: now,
            });
        }
        self.commit_issuance(cs, &auth, proof.as_ref()).await?;
        let token_type = if proof.is_some() { "DPoP" } else { "Bearer" };
        Ok(TokenResponse {
            access_token,
            issued_token_type: None,
            token_type,
            expires_in: ttl.as_secs(),
            scope: claims.scope,
            refresh_token: None,
            id_token: None,
        })
    }

    /// Verifies the request's DPoP proof, if any, for the token endpoint.
    pub(super) fn check_dpop(&self, dpop: Option<&str>) -> Result<Option<super::dpop::Proof>, OAuthError> {
        let Some(p) = dpop else { return Ok(None) };
        let check = |n: &str| self.nonce_is_current(n);
        let nonce: Option<&dyn Fn(&str) -> bool> = if self.cfg.dpop_nonce { Some(&check) } else { None };
        Ok(Some(super::dpop::verify(
            p,
            "POST",
            &self.cfg.token_endpoint,
            self.clock.now().unix_seconds(),
            nonce,
        )?))
    }

    /// Spends the client assertion that authenticated a call which issues nothing
    /// (introspection, revocation), so an assertion is single-use at every endpoint.
    pub async fn spend_assertion(&self, auth: &Authenticated) -> Result<(), OAuthError> {
        if auth.assertion_jti.is_none() {
            return Ok(());
        }
        self.commit_issuance(ChangeSet::new(), auth, None).await
    }

    /// Commits an issuance together with the single-use marks of the client assertion and the
    /// DPoP proof it used, so a replay loses the race in the database, not in memory.
    pub(super) async fn commit_issuance(
        &self,
        mut cs: ChangeSet,
        auth: &Authenticated,
        proof: Option<&super::dpop::Proof>,
    ) -> Result<(), OAuthError> {
        // The single-use marks go first: every transaction takes its locks in the order marks,
        // identity touches, the rest (see the store's group committer), and a replay is then
        // refused before anything else of the change set is written.
        let mut marks = Vec::with_capacity(2);
        if let Some((jti, exp)) = &auth.assertion_jti {
            marks.push(Change::RecordAssertion {
                client_id: auth.client.client_id.clone(),
                jti: jti.clone(),
                expires_at: *exp,
            });
        }
        if let Some(p) = proof {
            marks.push(Change::RecordDpopProof {
                jti: p.jti.clone(),
                expires_at: p.iat + 2 * super::dpop::WINDOW_SECS,
            });
        }
        cs.changes.splice(0..0, marks);
        match self.store.commit(cs).await {
            Ok(()) => Ok(()),
            Err(StoreError::Duplicate {
                entity: "dpop proof", ..
            }) => Err(OAuthError::new(
                ErrorCode::InvalidDpopProof,
                "the DPoP proof was already used (replay)",
            )),
            Err(StoreError::Duplicate {
                entity: "client assertion",
                ..
            }) => Err(OAuthError::invalid_client(
                "the client assertion was already used (replay)",
            )),
            Err(StoreError::Duplicate {
                entity: "grant assertion",
                ..
            }) => Err(OAuthError::invalid_grant(
                "the assertion grant was already used (replay)",
            )),
            Err(StoreError::Stale { entity: "grant" }) => Err(OAuthError::invalid_grant("the grant was already used")),
            // Revoked after this request checked it and before its commit (a revocation or
            // reuse detection that ran concurrently): nothing is issued.
            Err(StoreError::Stale { entity: "grant family" }) => Err(OAuthError::invalid_grant(GRANT_REVOKED)),
            // RFC 8693 §2.2.2: an invalid subject token is invalid_request, as when the
            // exchange found it revoked before committing.
            Err(StoreError::Stale {
                entity: "subject token",
            }) => Err(OAuthError::invalid_request("the subject token was revoked")),
            Err(e) => Err(e.into()),
        }
    }

    /// Verifies one of our access tokens (signature, `typ`, issuer, expiry), from memory when
    /// the same token was verified before against the same keys. Revocation and the
    /// principals' status are the caller's to check, on every call.
    pub(super) fn verify_access_token(
        &self,
        token: &str,
        now: sigil_types::Timestamp,
    ) -> Result<super::token::AccessClaims, super::token::TokenError> {
        self.verified
            .verify(token, &self.keys.jwks(), &self.cfg.issuer, now.unix_seconds())
    }

    /// Whether this issuance should record the identity's use: its stored `last_used_at` and
    /// this process's last record of it are both older than [`LAST_USED_RESOLUTION`].
    fn should_touch(&self, identity: &crate::model::Identity, now: sigil_types::Timestamp) -> bool {
        let stale = |t: sigil_types::Timestamp| now.since(t) >= LAST_USED_RESOLUTION;
        if !identity.last_used_at.is_none_or(stale) {
            return false;
        }
        let Ok(mut touched) = self.touched.lock() else {
            return false;
        };
        if touched.get(&identity.id).is_some_and(|t| !stale(*t)) {
            return false;
        }
        if touched.len() >= 100_000 {
            touched.retain(|_, t| !stale(*t));
        }
        touched.insert(identity.id.clone(), now);
        true
    }

    /// Asks the policy about each candidate scope: the requested ones, or every scope the
    /// resource defines when none were requested (the answer then narrows to what is permitted).
    /// A requested scope that is not permitted refuses the request (`invalid_scope`).
    #[allow(
        clippy::too_many_arguments,
        reason = "one question: who, through which client, what, how"
    )]
    pub(super) async fn permitted_scopes(
        &self,
        chain: &[super::policy::ChainPrincipal<'_>],
        client: &OAuthClient,
        resource: &crate::model::Resource,
        requested: &ScopeSet,
        auth_method: &str,
        dpop_bound: bool,
        now: sigil_types::Timestamp,
    ) -> Result<(ScopeSet, crate::audit::PolicyEvidence), OAuthError> {
        let resource_owner = self.reads.username(&resource.owner).await?;
        let registered = client.registered_scope();
        if let (Some(registered), false) = (&registered, requested.is_empty())
            && let Some(outside) = requested.iter().find(|s| !registered.contains(s))
        {
            return Err(OAuthError::invalid_scope(format!(
                "scope {outside} is outside the scope the client registered"
            )));
        }
        // Borrowed on the common paths: the token endpoint copies no scope set per request.
        let candidates: std::borrow::Cow<'_, ScopeSet> = match (requested.is_empty(), &registered) {
            (false, _) => std::borrow::Cow::Borrowed(requested),
            (true, None) => std::borrow::Cow::Borrowed(&resource.scopes),
            (true, Some(registered)) => std::borrow::Cow::Owned(
                ScopeSet::new(resource.scopes.iter().filter(|s| registered.contains(s)).cloned())
                    .map_err(|e| OAuthError::invalid_scope(e.to_string()))?,
            ),
        };
        let scopes: Vec<&str> = candidates.iter().map(|s| s.as_str()).collect();
        let q = super::policy::ScopeQuestion {
            chain,
            resource,
            resource_owner: &resource_owner,
            scopes: &scopes,
            auth_method,
            dpop_bound,
            now,
        };
        let answers = self.policy.decide_scopes(&q).map_err(|why| {
            tracing::warn!(error = why, "the issuance policy could not decide");
            OAuthError::invalid_scope("the policy cannot decide the scopes")
        })?;
        let mut granted = Vec::new();
        let mut determining = Vec::new();
        let mut version = 0;
        for (scope, answer) in candidates.iter().zip(answers) {
            version = answer.policy_version;
            determining.extend(answer.determining.iter().cloned());
            if answer.allowed {
                granted.push(scope.clone());
            } else if !requested.is_empty() {
                return Err(OAuthError::invalid_scope(format!(
                    "scope {scope} is not permitted: {}",
                    answer.reason.unwrap_or_else(|| "denied by policy".into())
                )));
            }
        }
        if granted.is_empty() {
            return Err(OAuthError::invalid_scope(
                "no scope of this resource is permitted to this chain",
            ));
        }
        determining.sort();
        determining.dedup();
        let granted = ScopeSet::new(granted).map_err(|e| OAuthError::invalid_scope(e.to_string()))?;
        Ok((
            granted,
            crate::audit::PolicyEvidence {
                version: version.to_string(),
                determining,
            },
        ))
    }

    /// An access token's lifetime: the identity's own if the operator set one, else the
    /// default, never past the configured maximum.
    pub(super) fn token_lifetime(&self, identity_ttl_seconds: Option<u32>) -> Duration {
        identity_ttl_seconds
            .map_or(self.cfg.access_token_ttl, |s| Duration::from_secs(u64::from(s)))
            .min(self.cfg.max_access_token_ttl)
    }

    /// Where a client's `jwks_uri` may be fetched from: a client dynamic registration made
    /// named it itself.
    fn fetch_from(&self, client: &OAuthClient) -> client_auth::FetchFrom {
        if super::registration::made_by_registration(&client.created_by) {
            client_auth::FetchFrom::PublicHosts {
                allow_loopback: self.cfg.metadata_documents.allow_loopback,
            }
        } else {
            client_auth::FetchFrom::AnyHost
        }
    }
}

/// A client's creation or deletion is an event of the identity it belongs to (so the identity's
/// trace and `audit search --agent` find it), about that client (`--client` finds it too).
pub(super) fn client_event(
    ctx: &Ctx,
    now: Timestamp,
    t: EventType,
    client_id: &str,
    identity: &Identity,
) -> AuditRecord {
    let mut record = AuditRecord::new(now, t, &ctx.principal, ctx.request_id.as_deref()).target(
        IdentityFamily::of(identity.kind).noun(),
        identity.id.as_str(),
        identity.name.as_str(),
    );
    record.client_id = Some(client_id.to_owned());
    record
}
