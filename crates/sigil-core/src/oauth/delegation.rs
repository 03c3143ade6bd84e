//! Delegated tokens: the authorization code grant (with PKCE) and refresh token rotation; token
//! exchange (RFC 8693) is in `exchange`. A delegated token's `sub` is the user and its `act` claim the
//! chain of agents acting for her, the current actor outermost (RFC 8693 §4.1). Every member of
//! the chain must be active, and the policy must permit each scope to every member.

use sigil_types::{IdentityId, IdentityStatus, ResourceUri, ScopeSet, Timestamp};
use std::sync::Arc;

use super::authorize::{pkce_matches, valid_verifier};
use super::client::{ClientAuthMethod, OAuthClient};
use super::client_auth::{Authenticated, PresentedCredentials};
use super::delegated_token::Delegated;
use super::error::{ErrorCode, OAuthError};
use super::grant::{Grant, GrantKind, REFRESH_PREFIX};
use super::policy::ChainPrincipal;
use super::service::{OAuthService, TokenResponse};
use super::token::Actor;
use crate::audit::{AuditRecord, AuthEvidence, EventType, Outcome};
use crate::model::{Identity, IdentityRef, Principal, Resource, ResourceRef, User};
use crate::store::{Change, ChangeSet};

/// What a code or refresh request asks of its grant: a narrower scope (RFC 6749 §6), and
/// whether it wants an ID token with it.
struct Asked {
    scope: Option<ScopeSet>,
    openid: bool,
}

impl OAuthService {
    async fn is_public_client(&self, client_id: Option<&str>) -> Result<bool, OAuthError> {
        let Some(id) = client_id else { return Ok(false) };
        Ok(self
            .client(id)
            .await?
            .is_some_and(|c| c.auth_method == ClientAuthMethod::None))
    }

    /// Authenticates a confidential client, or identifies a public one by its `client_id`
    /// (OAuth 2.1 §3.2.1: a public client has no credential; PKCE protects its code).
    pub async fn authenticate_or_public(
        &self,
        creds: &PresentedCredentials,
        endpoint: &str,
    ) -> Result<Authenticated, OAuthError> {
        let presents_credential = creds.basic.is_some() || creds.client_secret.is_some() || creds.assertion.is_some();
        if presents_credential {
            return self.authenticate(creds, endpoint).await;
        }
        // A client certificate is a credential (tls_client_auth, RFC 8705 §2) unless the
        // client named is a public one that merely connected over mutual TLS.
        if creds.tls_client_cert.is_some() && !self.is_public_client(creds.client_id.as_deref()).await? {
            return self.authenticate(creds, endpoint).await;
        }
        let id = creds
            .client_id
            .as_deref()
            .ok_or_else(|| OAuthError::invalid_client("client authentication is required"))?;
        let client = self
            .client(id)
            .await?
            .filter(|c| c.auth_method == ClientAuthMethod::None)
            .ok_or_else(|| OAuthError::invalid_client("client authentication failed"))?;
        Ok(Authenticated {
            client,
            evidence: AuthEvidence {
                method: "none".into(),
                ..AuthEvidence::default()
            },
            assertion_jti: None,
            cert_thumbprint: None,
        })
    }

    /// The authorization code grant (OAuth 2.1 §4.1.3).
    pub async fn authorization_code(
        &self,
        creds: &PresentedCredentials,
        form: &CodeRedemption<'_>,
        dpop: Option<&str>,
        request_id: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let auth = self.authenticate_or_public(creds, &self.cfg.token_endpoint).await?;
        auth.client.ensure_grant("authorization_code")?;
        let proof = self.check_dpop(dpop)?;
        let code = form
            .code
            .ok_or_else(|| OAuthError::invalid_request("code is required"))?;
        // A verifier no client could have made is a malformed request (RFC 7636 §4.1), told
        // apart from one that does not match, and it does not spend the code.
        if form.code_verifier.is_some_and(|v| !valid_verifier(v)) {
            return Err(OAuthError::invalid_request(
                "code_verifier must be 43 to 128 characters of A-Z, a-z, 0-9, -, ., _ and ~ (RFC 7636 section 4.1)",
            ));
        }
        let grant = self.live_grant(code, GrantKind::Code, &auth.client, request_id).await?;
        if grant
            .redirect_uri
            .as_deref()
            .is_some_and(|u| form.redirect_uri != Some(u))
        {
            return Err(OAuthError::invalid_grant(
                "redirect_uri does not match the authorization request",
            ));
        }
        let verifier = form
            .code_verifier
            .ok_or_else(|| OAuthError::invalid_grant("code_verifier is required (PKCE)"))?;
        if !grant
            .code_challenge
            .as_deref()
            .is_some_and(|c| pkce_matches(verifier, c))
        {
            return Err(OAuthError::invalid_grant(
                "the PKCE code_verifier does not match the code_challenge",
            ));
        }
        self.redeem(
            &auth,
            &grant,
            form.resources,
            Asked {
                scope: None,
                openid: true,
            },
            proof.as_ref(),
            "authorization_code",
            request_id,
        )
        .await
    }

    /// The refresh token grant with rotation (OAuth 2.1 §4.3): the presented token is spent
    /// and a new one returned with the same scope; the access token's scope may only narrow.
    pub async fn refresh(
        &self,
        creds: &PresentedCredentials,
        refresh_token: Option<&str>,
        scope: Option<&str>,
        resources: &[String],
        dpop: Option<&str>,
        request_id: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let auth = self.authenticate_or_public(creds, &self.cfg.token_endpoint).await?;
        auth.client.ensure_grant("refresh_token")?;
        let proof = self.check_dpop(dpop)?;
        let presented = refresh_token.ok_or_else(|| OAuthError::invalid_request("refresh_token is required"))?;
        let grant = self
            .live_grant(presented, GrantKind::Refresh, &auth.client, request_id)
            .await?;
        let narrowed = match scope {
            Some(s) => {
                // Clients usually resend the original scope, `openid` (and `profile`, …) included;
                // `openid` alone asks for nothing narrower than the grant (RFC 6749 §6). A grant
                // made without `openid` was never granted it: asking for it now widens the scope.
                if !grant.openid && s.split(' ').any(|v| v == super::authorize::OPENID) {
                    return Err(OAuthError::invalid_scope(
                        "openid was not granted: a refresh may not widen the scope",
                    ));
                }
                let held = ScopeSet::parse_oauth(&grant.scope).map_err(|e| OAuthError::invalid_scope(e.to_string()))?;
                // A sign-in understands its profile and email scopes (asking for one it was not
                // given widens it) and ignores the rest, as its authorization request did.
                let values = if self.is_sign_in_only(&grant.resource) {
                    super::sign_in::userinfo_scope_values(s)
                } else {
                    super::authorize::resource_scope_values(s, &held)
                };
                let asked =
                    ScopeSet::parse_oauth(&values.join(" ")).map_err(|e| OAuthError::invalid_scope(e.to_string()))?;
                if !asked.is_subset(&held) {
                    return Err(OAuthError::invalid_scope("a refresh may not widen the scope"));
                }
                (!asked.is_empty()).then_some(asked)
            }
            None => None,
        };
        // OpenID Connect Core §12.2: the response "might not contain an id_token"; one whose
        // scope leaves `openid` out asked for none, and its `scope` says so (RFC 6749 §5.1).
        let openid = scope.is_none_or(|s| s.split(' ').any(|v| v == super::authorize::OPENID));
        self.redeem(
            &auth,
            &grant,
            resources,
            Asked {
                scope: narrowed,
                openid,
            },
            proof.as_ref(),
            "refresh_token",
            request_id,
        )
        .await
    }

    /// Finds a code or refresh token and checks it is the client's, current and unspent. A
    /// spent one is a replay: its whole family is revoked (RFC 9700 §4.14.2, §2.1.1 for codes).
    pub(super) async fn live_grant(
        &self,
        value: &str,
        kind: GrantKind,
        client: &OAuthClient,
        request_id: Option<&str>,
    ) -> Result<Grant, OAuthError> {
        let what = match kind {
            GrantKind::Code => "authorization code",
            GrantKind::Refresh => "refresh token",
        };
        let invalid = || OAuthError::invalid_grant(format!("the {what} is invalid, expired or revoked"));
        if value.len() > 256 {
            return Err(invalid());
        }
        let grant = self
            .store
            .get_grant(&self.secret_hash(value))
            .await?
            .filter(|g| g.kind == kind)
            .ok_or_else(invalid)?;
        // Another client's value gets the same answer as an unknown one (no oracle).
        if grant.client_id != client.client_id {
            return Err(invalid());
        }
        if grant.family_revoked {
            return Err(invalid());
        }
        // Spent before expired: a spent value presented again, however late, is a replay and
        // revokes what it produced (RFC 6749 §4.1.2), not merely a stale value.
        if grant.used_at.is_some() {
            self.revoke_family(&grant, request_id).await?;
            return Err(OAuthError::invalid_grant(format!(
                "the {what} was already used; every token issued from it is revoked"
            )));
        }
        if grant.expires_at <= self.clock.now() {
            return Err(invalid());
        }
        Ok(grant)
    }

    async fn revoke_family(&self, grant: &Grant, request_id: Option<&str>) -> Result<(), OAuthError> {
        let now = self.clock.now();
        let mut record = AuditRecord::new(
            now,
            EventType::GrantReused,
            &Principal::from_stored("client".into()),
            request_id,
        )
        .outcome(Outcome::Denied, "a spent code or refresh token was presented again")
        .detail("family", grant.family_id.as_str())
        .detail("kind", grant.kind.as_str());
        record.client_id = Some(grant.client_id.clone());
        record.subject = Some(grant.user_id.to_string());
        let cs = ChangeSet::new()
            .change(Change::RevokeFamily {
                family_id: grant.family_id.clone(),
                at: now,
            })
            .audit(record);
        self.store.commit(cs).await?;
        tracing::warn!(family = grant.family_id, "grant reuse detected: family revoked");
        Ok(())
    }

    /// Spends a code or refresh token and issues an access token and a new refresh token in one
    /// commit: if another request spent it first, the commit fails and nothing is issued.
    #[allow(clippy::too_many_arguments, reason = "one call site per grant, each argument named")]
    async fn redeem(
        &self,
        auth: &Authenticated,
        grant: &Grant,
        resources: &[String],
        asked: Asked,
        proof: Option<&super::dpop::Proof>,
        grant_type: &str,
        request_id: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let now = self.clock.now();
        match resources {
            [] => {}
            [one] if same_url(one, &grant.resource) => {}
            _ => {
                return Err(OAuthError::invalid_target(
                    "the resource must be the one the user authorized",
                ));
            }
        }
        let user = self.active_user_for_grant(&grant.user_id).await?;
        // Suspending the user cuts off what she granted before, like the agent's suspension.
        if user.tokens_not_before.is_some_and(|t| grant.issued_at <= t) {
            return Err(OAuthError::invalid_grant("the grant predates the user's suspension"));
        }
        let agent = self.active_identity(&auth.client.identity_id, now).await?;
        // Suspending the agent cuts off what was granted before, refresh tokens included.
        if agent.tokens_not_before.is_some_and(|t| grant.issued_at <= t) {
            return Err(OAuthError::invalid_grant("the grant predates the agent's suspension"));
        }
        self.require_dpop(&auth.client, &agent, proof)?;
        if let Some(jkt) = &grant.dpop_jkt
            && proof.is_none_or(|p| p.jkt != *jkt)
        {
            return Err(OAuthError::invalid_grant(
                "the grant is bound to a DPoP key: prove it (RFC 9449 sections 5 and 10)",
            ));
        }
        let with_openid = grant.openid && asked.openid;
        let consented = ScopeSet::parse_oauth(&grant.scope).map_err(|e| OAuthError::invalid_scope(e.to_string()))?;
        let (resource, scope, evidence) = if self.is_sign_in_only(&grant.resource) {
            // A sign-in only: the user's own consent is all there is to it (no policy speaks
            // for an API here), narrowed by the request if it asks for less. Its token is for
            // the UserInfo endpoint, so it carries `openid` (Core §5.3) beside what it reads.
            let kept = asked.scope.unwrap_or_else(|| consented.clone());
            let openid = sigil_types::Scope::parse(super::authorize::OPENID)
                .map_err(|e| OAuthError::invalid_scope(e.to_string()))?;
            let scope = ScopeSet::new(
                kept.iter()
                    .filter(|s| consented.contains(s))
                    .cloned()
                    .chain(std::iter::once(openid)),
            )
            .map_err(|e| OAuthError::invalid_scope(e.to_string()))?;
            (None, scope, None)
        } else {
            let resource = self.resource_by_uri(&grant.resource).await?;
            let (scope, evidence) = self
                .scopes_still_permitted(
                    auth,
                    &user,
                    &agent,
                    &resource,
                    asked.scope,
                    consented,
                    proof.is_some(),
                    now,
                )
                .await?;
            (Some(resource), scope, Some(evidence))
        };
        let act = Actor::wrap(agent.id.to_string(), auth.client.client_id.clone(), None);
        let (access_token, claims, ttl) = self.mint_delegated(&Delegated {
            user: &user,
            act,
            client: &auth.client,
            // The registered spelling of the API (a root URL may have been consented to with or
            // without its trailing slash); the UserInfo endpoint for a sign-in.
            aud: resource.as_ref().map_or(grant.resource.as_str(), |r| r.uri.as_str()),
            scope: &scope,
            not_after: None,
            agent_token_ttl: agent.token_ttl_seconds,
            proof,
            cert_thumbprint: auth.cert_thumbprint.as_deref(),
            now,
        })?;
        let refresh = sigil_crypto::random_token(REFRESH_PREFIX).map_err(|_| OAuthError::unavailable())?;
        let next = Grant {
            handle_hash: self.secret_hash(&refresh),
            kind: GrantKind::Refresh,
            family_id: grant.family_id.clone(),
            client_id: auth.client.client_id.clone(),
            user_id: user.id.clone(),
            resource: grant.resource.clone(),
            // RFC 6749 §6: the new refresh token's scope is the one consented to. Narrowing
            // (by the request or by today's policy) applies to this access token only.
            scope: grant.scope.clone(),
            redirect_uri: None,
            code_challenge: None,
            openid: grant.openid,
            nonce: None,
            auth_time: grant.auth_time,
            // RFC 9449 §5: only a public client's refresh token is bound to its DPoP key; a
            // confidential client's is already bound to its own credential.
            dpop_jkt: proof
                .filter(|_| auth.client.auth_method == super::ClientAuthMethod::None)
                .map(|p| p.jkt.clone()),
            issued_at: now,
            expires_at: now.plus(self.cfg.refresh_token_ttl),
            used_at: None,
            family_revoked: false,
        };
        let record = self
            .delegated_record(
                EventType::TokenIssued,
                &claims,
                auth,
                self.audience_target(resource.as_deref()),
                evidence,
                grant_type,
                request_id,
                now,
            )
            .detail("family", grant.family_id.as_str());
        let cs = ChangeSet::new()
            .change(Change::UseGrant {
                handle_hash: grant.handle_hash.clone(),
                at: now,
            })
            .change(Change::InsertGrant(next))
            .change(Change::RecordFamilyToken {
                family_id: grant.family_id.clone(),
                jti: claims.jti.clone(),
                expires_at: claims.exp,
            })
            .audit(record);
        let id_token = match with_openid.then(|| self.mint_id_token(&user, &auth.client, grant, now)) {
            None => None,
            Some(Ok(t)) => Some(t),
            // The client registered an ID token algorithm that no active key signs any more (the
            // token key was rotated to another algorithm). A refresh response may omit the ID
            // token (OpenID Connect Core §12.2): the client keeps its access, and its `scope`
            // says no ID token came. The code grant cannot do without one.
            Some(Err(e)) if grant.kind == GrantKind::Refresh && e.code == ErrorCode::UnauthorizedClient => {
                tracing::warn!(client_id = auth.client.client_id, error = %e, "refresh answered without an ID token");
                None
            }
            Some(Err(e)) => return Err(e),
        };
        let with_openid = id_token.is_some();
        if let Err(e) = self.commit_issuance(cs, auth, proof).await {
            // Lost the race to spend it: someone else presented the same value at the same time,
            // which is reuse too (RFC 9700 §4.14.2). A family revoked meanwhile is already so.
            if e.code == ErrorCode::InvalidGrant && e.description != super::service::GRANT_REVOKED {
                self.revoke_family(grant, request_id).await?;
            }
            return Err(e);
        }
        let scope = if with_openid && !claims.scope.split(' ').any(|s| s == super::authorize::OPENID) {
            format!("{} {}", super::authorize::OPENID, claims.scope)
        } else {
            claims.scope
        };
        Ok(TokenResponse {
            access_token,
            issued_token_type: None,
            token_type: if proof.is_some() { "DPoP" } else { "Bearer" },
            expires_in: ttl,
            scope,
            refresh_token: Some(refresh.to_string()),
            id_token,
        })
    }

    /// What of a grant the policy still permits (it may have changed since consent: what it no
    /// longer permits is dropped): the scopes asked for, or all consented ones.
    #[allow(clippy::too_many_arguments, reason = "one call site, each argument named")]
    async fn scopes_still_permitted(
        &self,
        auth: &Authenticated,
        user: &User,
        agent: &Identity,
        resource: &Resource,
        asked: Option<ScopeSet>,
        consented: ScopeSet,
        dpop_bound: bool,
        now: Timestamp,
    ) -> Result<(ScopeSet, crate::audit::PolicyEvidence), OAuthError> {
        let owner = self.reads.username(&agent.owner).await?;
        let asked_for_scope = asked.is_some();
        let requested = asked.unwrap_or(consented);
        let chain = [
            ChainPrincipal::User(user),
            ChainPrincipal::Identity {
                identity: agent,
                owner: &owner,
            },
        ];
        let (permitted, evidence) = self
            .permitted_scopes(
                &chain,
                &auth.client,
                resource,
                &ScopeSet::default(),
                &auth.evidence.method,
                dpop_bound,
                now,
            )
            .await?;
        let scope = ScopeSet::new(requested.iter().filter(|s| permitted.contains(s)).cloned())
            .map_err(|e| OAuthError::invalid_scope(e.to_string()))?;
        if scope.is_empty() && asked_for_scope {
            // RFC 6749 §5.2: the scope asked for exceeds what may be granted now.
            return Err(OAuthError::invalid_scope(
                "the policy no longer permits the requested scope",
            ));
        }
        if scope.is_empty() {
            return Err(OAuthError::invalid_grant(
                "the policy no longer permits any of the granted scopes",
            ));
        }
        Ok((scope, evidence))
    }

    /// A client speaks for its identity at every endpoint, not only at `/token`: while the
    /// identity is not active (a quarantined agent), its client is refused at introspection,
    /// revocation and the AuthZEN API as well.
    pub async fn require_active_identity(&self, auth: &Authenticated) -> Result<(), OAuthError> {
        self.active_identity(&auth.client.identity_id, self.clock.now())
            .await
            .map(drop)
    }

    pub(super) async fn active_identity(&self, id: &IdentityId, now: Timestamp) -> Result<Arc<Identity>, OAuthError> {
        let identity = self
            .reads
            .identity(&IdentityRef::Id(id.clone()))
            .await?
            .ok_or_else(|| OAuthError::invalid_client("the client's identity no longer exists"))?;
        match identity.effective_status(now) {
            IdentityStatus::Active => Ok(identity),
            s => Err(OAuthError::invalid_client(format!("the client's identity is {s}"))),
        }
    }

    pub(super) async fn resource_by_uri(&self, uri: &str) -> Result<Arc<Resource>, OAuthError> {
        let uri = ResourceUri::parse(uri).map_err(|e| OAuthError::invalid_target(e.to_string()))?;
        self.reads
            .resource(&ResourceRef::Uri(uri))
            .await?
            .ok_or_else(|| OAuthError::invalid_target("the resource is not registered"))
    }
}

/// The parameters of an authorization code redemption.
#[derive(Debug, Clone, Default)]
pub struct CodeRedemption<'a> {
    pub code: Option<&'a str>,
    pub redirect_uri: Option<&'a str>,
    pub code_verifier: Option<&'a str>,
    pub resources: &'a [String],
}

/// Whether two resource URIs name one URL (byte-equal, or a root URL and its trailing-slash
/// twin, see [`ResourceUri::root_twin`]).
pub(super) fn same_url(a: &str, b: &str) -> bool {
    a == b || ResourceUri::parse(a).is_ok_and(|u| u.is_same_url(b))
}
