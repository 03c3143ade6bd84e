//! Token exchange (RFC 8693): a client trades a subject token (a user's delegated token, or a
//! token from a trusted issuer, see `enterprise`) for an access token at one resource, or for an
//! ID-JAG, its own identity becoming the outermost actor of the `act` chain. Every member of the
//! chain must be active, may act for the one inside it, and must be permitted each scope by
//! the policy.

use sigil_types::{IdentityId, IdentityStatus, ScopeSet, Timestamp, UserId, UserStatus};
use std::sync::Arc;

use super::client::OAuthClient;
use super::client_auth::{Authenticated, PresentedCredentials};
use super::delegated_token::Delegated;
use super::delegation::same_url;
use super::error::{ErrorCode, OAuthError};
use super::policy::ChainPrincipal;
use super::service::{OAuthService, TokenResponse};
use super::token::Actor;
use crate::audit::EventType;
use crate::model::{Identity, IdentityRef, User, UserRef};
use crate::store::{Change, ChangeSet};

/// RFC 8693 §3 token type identifiers.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const REFRESH_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:refresh_token";
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// A token exchange request (RFC 8693 §2.1).
#[derive(Debug, Clone, Default)]
pub struct ExchangeRequest<'a> {
    pub subject_token: Option<&'a str>,
    pub subject_token_type: Option<&'a str>,
    pub actor_token: Option<&'a str>,
    pub actor_token_type: Option<&'a str>,
    pub requested_token_type: Option<&'a str>,
    pub resources: &'a [String],
    pub audiences: &'a [String],
    pub scope: Option<&'a str>,
}

impl OAuthService {
    /// Token exchange (RFC 8693): the authenticated client's identity becomes the new outermost
    /// actor for the subject token's user; the chain so far is nested inside.
    pub async fn token_exchange(
        &self,
        creds: &PresentedCredentials,
        req: &ExchangeRequest<'_>,
        dpop: Option<&str>,
        request_id: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let auth = self.authenticate(creds, &self.cfg.token_endpoint).await?;
        auth.client.ensure_grant(super::client::TOKEN_EXCHANGE_GRANT)?;
        let proof = self.check_dpop(dpop)?;
        let now = self.clock.now();
        let for_id_jag = match req.requested_token_type {
            None | Some(ACCESS_TOKEN_TYPE) => false,
            Some(super::enterprise::ID_JAG_TOKEN_TYPE) => true,
            Some(other) => {
                return Err(OAuthError::invalid_request(format!(
                    "requested_token_type {other} is not issued here; ask for {ACCESS_TOKEN_TYPE} or {}",
                    super::enterprise::ID_JAG_TOKEN_TYPE
                )));
            }
        };
        let agent = self.active_identity(&auth.client.identity_id, now).await?;
        self.require_dpop(&auth.client, &agent, proof.as_ref())?;
        // RFC 8693 §2.2.2: a subject or actor token that is invalid, or unacceptable by policy,
        // is invalid_request.
        let as_request_error = |e: OAuthError| match e.code {
            ErrorCode::InvalidGrant => OAuthError::invalid_request(e.description),
            _ => e,
        };
        if for_id_jag {
            // The ID-JAG draft's examples answer a bad subject with invalid_grant (§4.3.3); the
            // actor token and may_act are RFC 8693's, whatever token is asked for.
            let subject = self.exchange_subject(req, &auth, true, now).await?;
            self.check_actor_token(req, &auth, proof.as_ref(), now)
                .await
                .map_err(as_request_error)?;
            self.check_may_act(&subject, &agent, &auth.client.client_id)?;
            return self
                .issue_id_jag(&auth, req, &subject, proof.as_ref(), request_id, now)
                .await;
        }
        let subject = self
            .exchange_subject(req, &auth, false, now)
            .await
            .map_err(as_request_error)?;
        if let Some(jkt) = &subject.jkt
            && proof.as_ref().is_none_or(|p| p.jkt != *jkt)
        {
            // The proof (if any) was valid; the subject token is what cannot be used here, and
            // an unusable subject token is `invalid_request` (RFC 8693 §2.2.2).
            return Err(OAuthError::invalid_request(
                "the subject token is DPoP-bound: prove its key to exchange it",
            ));
        }
        if let Some(x5t) = &subject.x5t_s256
            && auth.cert_thumbprint.as_deref() != Some(x5t.as_str())
        {
            return Err(OAuthError::invalid_request(
                "the subject token is bound to a client certificate: present it over mutual TLS (RFC 8705)",
            ));
        }
        let user = subject.user.clone();
        self.check_actor_token(req, &auth, proof.as_ref(), now)
            .await
            .map_err(as_request_error)?;
        let act = self.extended_chain(&subject, &agent, &auth.client.client_id)?;
        // RFC 8707 §2: a required target that is missing is `invalid_target`. A Sigil token
        // names its resource; a trusted issuer's token does not name one of Sigil's.
        let uri = one_target(req.resources, req.audiences)?
            .or(subject.aud.as_deref())
            .ok_or_else(|| {
                OAuthError::invalid_target(
                    "resource is required: name the API the token is for (resource, RFC 8707, or audience, RFC 8693)",
                )
            })?;
        // A user consented to one resource: her Sigil token is exchanged for that resource only,
        // so no agent of the chain can carry her consent to an API she never saw on the consent
        // page. Tokens of trusted issuers carry no resource consent; the policy decides those.
        if let Some(consented) = subject.aud.as_deref()
            && !same_url(uri, consented)
        {
            return Err(OAuthError::invalid_target(format!(
                "the subject token is for {consented}: a user's token is exchanged only for the resource she consented to"
            )));
        }
        let resource = self.resource_by_uri(uri).await?;
        // Every actor of the chain (earlier ones too) and the user must be permitted each scope.
        let members = self.chain_members(&act, now).await?;
        let owners: Vec<String> = self.owners(&members).await?;
        let mut chain = vec![ChainPrincipal::User(&user)];
        chain.extend(
            members
                .iter()
                .zip(&owners)
                .map(|(identity, owner)| ChainPrincipal::Identity { identity, owner }),
        );
        let requested = ScopeSet::parse_oauth(req.scope.unwrap_or_default())
            .map_err(|e| OAuthError::invalid_scope(e.to_string()))?;
        let (scope, evidence) = self
            .permitted_scopes(
                &chain,
                &auth.client,
                &resource,
                &requested,
                &auth.evidence.method,
                proof.is_some(),
                now,
            )
            .await
            .map_err(|e| target_refused(e, &requested))?;
        // An exchange never widens what the subject token held.
        let scope = if let Some(held) = &subject.scope {
            let held = ScopeSet::parse_oauth(held).map_err(|e| OAuthError::invalid_scope(e.to_string()))?;
            if !requested.is_empty() && !requested.is_subset(&held) {
                return Err(OAuthError::invalid_scope(
                    "the exchange asks for more than the subject token holds",
                ));
            }
            ScopeSet::new(scope.iter().filter(|s| held.contains(s)).cloned())
                .map_err(|e| OAuthError::invalid_scope(e.to_string()))?
        } else {
            scope
        };
        if scope.is_empty() {
            return Err(OAuthError::invalid_scope(
                "no scope is permitted to this delegation chain",
            ));
        }
        let (access_token, claims, ttl) = self.mint_delegated(&Delegated {
            user: &user,
            act,
            client: &auth.client,
            aud: resource.uri.as_str(),
            scope: &scope,
            not_after: Some(subject.exp),
            agent_token_ttl: agent.token_ttl_seconds,
            proof: proof.as_ref(),
            cert_thumbprint: auth.cert_thumbprint.as_deref(),
            now,
        })?;
        let record = self
            .delegated_record(
                EventType::TokenExchanged,
                &claims,
                &auth,
                super::authorize::resource_target(&resource),
                Some(evidence),
                "token_exchange",
                request_id,
                now,
            )
            .detail("subject_token", subject.reference.as_str());
        let mut cs = ChangeSet::new().audit(record);
        // Revoking the token this one was exchanged from revokes this one too (and what is
        // exchanged from it in turn): the chain ends where its base was withdrawn.
        if let Some(parent_jti) = &subject.derived_from {
            cs = cs.change(Change::RecordDerivedToken {
                parent_jti: parent_jti.clone(),
                jti: claims.jti.clone(),
                expires_at: claims.exp,
            });
        }
        self.commit_issuance(cs, &auth, proof.as_ref()).await?;
        Ok(TokenResponse {
            access_token,
            issued_token_type: Some(ACCESS_TOKEN_TYPE),
            token_type: if proof.is_some() { "DPoP" } else { "Bearer" },
            expires_in: ttl,
            scope: claims.scope,
            refresh_token: None,
            id_token: None,
        })
    }

    /// The subject's chain with the agent added outermost: `may_act` must name it, it must not
    /// be in the chain already, and the chain must stay within the configured depth.
    fn extended_chain(
        &self,
        subject: &super::enterprise::Subject,
        agent: &Identity,
        client_id: &str,
    ) -> Result<Actor, OAuthError> {
        self.check_may_act(subject, agent, client_id)?;
        let inner = subject.act.clone();
        if inner
            .as_ref()
            .is_some_and(|a| a.chain_from_user().iter().any(|m| m.sub == agent.id.as_str()))
        {
            return Err(OAuthError::invalid_request(
                "the agent is already in the delegation chain",
            ));
        }
        let act = Actor::wrap(agent.id.to_string(), client_id.to_owned(), inner);
        if act.depth() > self.cfg.max_delegation_depth {
            return Err(OAuthError::invalid_request(format!(
                "the delegation chain would hold {} actors; at most {} are allowed",
                act.depth(),
                self.cfg.max_delegation_depth
            )));
        }
        Ok(act)
    }

    /// RFC 8693 §4.4: a subject token's `may_act` names who may act for its subject; any
    /// other actor is refused, whatever token the exchange asks for.
    fn check_may_act(
        &self,
        subject: &super::enterprise::Subject,
        agent: &Identity,
        client_id: &str,
    ) -> Result<(), OAuthError> {
        let Some(may) = &subject.may_act else { return Ok(()) };
        let sub_ok = may.sub.as_deref().is_none_or(|s| s == agent.id.as_str());
        let client_ok = may.client_id.as_deref().is_none_or(|c| c == client_id);
        let iss_ok = may.iss.as_deref().is_none_or(|i| i == self.cfg.issuer);
        if !(sub_ok && client_ok && iss_ok) || (may.sub.is_none() && may.client_id.is_none()) {
            return Err(OAuthError::invalid_request(
                "the subject token's may_act does not name this actor",
            ));
        }
        Ok(())
    }

    /// A client or identity that must use DPoP (RFC 9449 §5.2) gets nothing without a proof.
    pub(super) fn require_dpop(
        &self,
        client: &OAuthClient,
        identity: &Identity,
        proof: Option<&super::dpop::Proof>,
    ) -> Result<(), OAuthError> {
        if proof.is_none() && (client.dpop_required || identity.dpop_required) {
            return Err(OAuthError::new(
                ErrorCode::InvalidDpopProof,
                "this client must send a DPoP proof (RFC 9449)",
            ));
        }
        Ok(())
    }

    /// An actor token, when given, proves the actor and may not name anyone else: a current
    /// Sigil access token of the identity the client belongs to, or (`…:token-type:jwt`) a
    /// private_key_jwt-style assertion or JWT-SVID of that identity, checked as a client
    /// assertion (RFC 7523 §3) and spent at once, like any client assertion, whatever the
    /// exchange's outcome.
    async fn check_actor_token(
        &self,
        req: &ExchangeRequest<'_>,
        auth: &Authenticated,
        proof: Option<&super::dpop::Proof>,
        now: Timestamp,
    ) -> Result<(), OAuthError> {
        let Some(token) = req.actor_token else {
            return match req.actor_token_type {
                Some(_) => Err(OAuthError::invalid_request("actor_token_type without actor_token")),
                None => Ok(()),
            };
        };
        let not_the_agent =
            || OAuthError::invalid_grant("the actor token does not identify the authenticated client's agent");
        match req.actor_token_type {
            Some(ACCESS_TOKEN_TYPE) => {
                let claims = self
                    .verify_access_token(token, now)
                    .map_err(|e| OAuthError::invalid_grant(format!("the actor token is not valid: {e}")))?;
                if claims.sub != auth.client.identity_id.as_str() || !self.is_active_now(&claims, now).await? {
                    return Err(not_the_agent());
                }
                // A bound actor token proves nothing without its key (RFC 9449 §7.1, RFC 8705 §3),
                // as for the subject token.
                let cnf = claims.cnf.as_ref();
                if let Some(jkt) = cnf.and_then(|c| c.jkt.as_deref())
                    && proof.is_none_or(|p| p.jkt != jkt)
                {
                    return Err(OAuthError::invalid_grant(
                        "the actor token is DPoP-bound: prove its key to use it",
                    ));
                }
                if let Some(x5t) = cnf.and_then(|c| c.x5t_s256.as_deref())
                    && auth.cert_thumbprint.as_deref() != Some(x5t)
                {
                    return Err(OAuthError::invalid_grant(
                        "the actor token is bound to a client certificate: present it over mutual TLS (RFC 8705)",
                    ));
                }
                Ok(())
            }
            Some(JWT_TOKEN_TYPE) => {
                let presented = PresentedCredentials {
                    assertion_type: Some(super::client_auth::JWT_BEARER_ASSERTION.to_owned()),
                    assertion: Some(token.to_owned()),
                    ..PresentedCredentials::default()
                };
                let invalid = |e: OAuthError| {
                    OAuthError::invalid_grant(format!("the actor token is not valid: {}", e.description))
                };
                let actor = self
                    .authenticate(&presented, &self.cfg.token_endpoint)
                    .await
                    .map_err(invalid)?;
                if actor.client.identity_id != auth.client.identity_id {
                    return Err(not_the_agent());
                }
                // The client's own assertion may be its actor token too. It is spent once, with
                // the exchange: spending it here would make the exchange's own spend look like a
                // replay of itself.
                let jti = |a: &Authenticated| a.assertion_jti.as_ref().map(|(jti, _)| jti.clone());
                if actor.assertion_jti.is_some()
                    && actor.client.client_id == auth.client.client_id
                    && jti(&actor) == jti(auth)
                {
                    return Ok(());
                }
                self.spend_assertion(&actor).await.map_err(invalid)
            }
            _ => Err(OAuthError::invalid_request(format!(
                "actor_token_type must be {ACCESS_TOKEN_TYPE} or {JWT_TOKEN_TYPE}"
            ))),
        }
    }

    pub(super) async fn active_user_for_grant(&self, id: &UserId) -> Result<Arc<User>, OAuthError> {
        self.reads
            .user(&UserRef::Id(id.clone()))
            .await?
            .filter(|u| u.status == UserStatus::Active)
            .ok_or_else(|| OAuthError::invalid_grant("the user is not active"))
    }

    /// The identities of an `act` chain, closest to the user first; each must be active.
    async fn chain_members(&self, act: &Actor, now: Timestamp) -> Result<Vec<Arc<Identity>>, OAuthError> {
        let mut out = Vec::new();
        for a in act.chain_from_user() {
            let id =
                IdentityId::parse(&a.sub).map_err(|_| OAuthError::invalid_grant("an actor is not a Sigil identity"))?;
            let identity = self
                .reads
                .identity(&IdentityRef::Id(id))
                .await?
                .filter(|i| i.effective_status(now) == IdentityStatus::Active)
                .ok_or_else(|| OAuthError::invalid_grant(format!("actor {} is not active", a.sub)))?;
            out.push(identity);
        }
        Ok(out)
    }

    async fn owners(&self, identities: &[Arc<Identity>]) -> Result<Vec<String>, OAuthError> {
        let mut out = Vec::with_capacity(identities.len());
        for i in identities {
            out.push(self.reads.username(&i.owner).await?);
        }
        Ok(out)
    }
}

/// The one resource an exchange names, by `resource` or `audience` (RFC 8693 §2.1): the same
/// URI under both names is one target.
fn one_target<'a>(resources: &'a [String], audiences: &'a [String]) -> Result<Option<&'a str>, OAuthError> {
    let mut named = resources.iter().chain(audiences).map(String::as_str);
    let first = named.next();
    if let Some(f) = first
        && named.any(|other| !same_url(other, f))
    {
        return Err(OAuthError::invalid_target("name one resource (or audience) per token"));
    }
    Ok(first)
}

/// RFC 8693 §2.2.2: when no scope was named and nothing at the resource is permitted, the
/// exchange is refused for its target (`invalid_target`), not for a scope nobody asked for.
fn target_refused(e: OAuthError, requested: &ScopeSet) -> OAuthError {
    if requested.is_empty() && e.code == ErrorCode::InvalidScope {
        OAuthError::invalid_target(format!("no token for this resource: {}", e.description))
    } else {
        e
    }
}
