//! Enterprise identity: trusted external issuers (their ID tokens and access tokens as token
//! exchange subjects), and Identity Assertion JWT Authorization Grants (ID-JAG) in both roles.

use sigil_crypto::PublicJwks;
use sigil_types::{ScopeSet, UserStatus, Username};
use std::sync::Arc;

use super::error::OAuthError;
use super::service::OAuthService;
use super::trusted::{TrustedIssuer, VerifiedJwt, unverified_issuer, verify_jwt};
use crate::audit::{AuditRecord, EventType};
use crate::model::{User, UserRef};
use crate::registry::{Ctx, RegistryError};
use crate::store::{Change, ChangeSet, StoreError};

/// Claims an issuer's users may be mapped by.
const USERNAME_CLAIMS: &[&str] = &["sub", "preferred_username", "email", "upn"];

/// What an administrator gives to register an identity provider.
#[derive(Debug, Clone, Default)]
pub struct NewTrustedIssuer {
    pub issuer: String,
    pub jwks: Option<PublicJwks>,
    pub jwks_uri: Option<String>,
    pub username_claim: Option<String>,
    pub audiences: Vec<String>,
    pub accept_id_jag: bool,
}

impl OAuthService {
    pub async fn add_trusted_issuer(&self, ctx: &Ctx, n: NewTrustedIssuer) -> Result<TrustedIssuer, RegistryError> {
        let issuer_url = url::Url::parse(&n.issuer).map_err(|e| RegistryError::invalid("issuer", e.to_string()))?;
        if n.issuer == self.cfg.issuer {
            return Err(RegistryError::invalid("issuer", "Sigil trusts its own tokens already"));
        }
        if issuer_url.scheme() != "https" && !is_loopback(&issuer_url) {
            return Err(RegistryError::invalid("issuer", "must be an https URL"));
        }
        super::client::check_key_source(n.jwks.as_ref(), n.jwks_uri.as_deref(), true)
            .map_err(|e| RegistryError::invalid("jwks", e))?;
        // `sub` is the only claim an IdP guarantees stable and unique (OIDC Core §5.7); the others
        // are for IdPs whose operators vouch for them.
        let username_claim = n.username_claim.unwrap_or_else(|| "sub".into());
        if !USERNAME_CLAIMS.contains(&username_claim.as_str()) {
            return Err(RegistryError::invalid(
                "username_claim",
                format!("one of {}", USERNAME_CLAIMS.join(", ")),
            ));
        }
        if n.audiences.len() > 20 || n.audiences.iter().any(|a| a.is_empty() || a.len() > 512) {
            return Err(RegistryError::invalid("audiences", "at most 20 non-empty audiences"));
        }
        let now = self.clock.now();
        let t = TrustedIssuer {
            id: self.new_id("tis_", now),
            issuer: n.issuer,
            jwks: n.jwks,
            jwks_uri: n.jwks_uri,
            username_claim,
            audiences: n.audiences,
            accept_id_jag: n.accept_id_jag,
            created_at: now,
            created_by: ctx.principal.as_str().to_owned(),
        };
        let record = AuditRecord::new(
            now,
            EventType::TrustedIssuerAdded,
            &ctx.principal,
            ctx.request_id.as_deref(),
        )
        .target("trusted_issuer", &t.id, &t.issuer)
        .detail("accept_id_jag", t.accept_id_jag)
        .detail("username_claim", t.username_claim.as_str());
        self.store
            .commit(
                ChangeSet::new()
                    .change(Change::InsertTrustedIssuer(t.clone()))
                    .audit(record),
            )
            .await?;
        Ok(t)
    }

    pub async fn list_trusted_issuers(&self) -> Result<Vec<TrustedIssuer>, RegistryError> {
        Ok(self.store.list_trusted_issuers().await?)
    }

    pub async fn delete_trusted_issuer(&self, ctx: &Ctx, id: &str) -> Result<(), RegistryError> {
        let record = AuditRecord::new(
            self.clock.now(),
            EventType::TrustedIssuerRemoved,
            &ctx.principal,
            ctx.request_id.as_deref(),
        )
        .target("trusted_issuer", id, id);
        match self
            .store
            .commit(
                ChangeSet::new()
                    .change(Change::DeleteTrustedIssuer { id: id.to_owned() })
                    .audit(record),
            )
            .await
        {
            Err(StoreError::Stale { .. }) => Err(RegistryError::not_found("trusted issuer", id)),
            other => Ok(other?),
        }
    }

    /// Verifies a JWT from a registered issuer: the issuer must be trusted, the signature must
    /// verify with its keys, and it must be current.
    pub(super) async fn verify_trusted(&self, jwt: &str) -> Result<(TrustedIssuer, VerifiedJwt), OAuthError> {
        let iss =
            unverified_issuer(jwt).ok_or_else(|| OAuthError::invalid_grant("the token is not a JWT with an iss"))?;
        let issuer = self
            .store
            .list_trusted_issuers()
            .await?
            .into_iter()
            .find(|t| t.issuer == iss)
            .ok_or_else(|| OAuthError::invalid_grant(format!("{iss} is not a trusted issuer")))?;
        let keys = match (&issuer.jwks, &issuer.jwks_uri) {
            (Some(k), _) => k.clone(),
            (None, Some(uri)) => self
                .fetcher
                .fetch(
                    uri,
                    super::client_auth::header_kid(jwt).as_deref(),
                    super::client_auth::FetchFrom::AnyHost,
                )
                .await
                .map_err(|e| {
                    tracing::warn!(issuer = iss, error = e, "cannot fetch a trusted issuer's JWKS");
                    OAuthError::invalid_grant("the issuer's keys could not be fetched")
                })?,
            (None, None) => return Err(OAuthError::invalid_grant("the issuer has no keys")),
        };
        let v = verify_jwt(jwt, &keys, self.clock.now().unix_seconds())
            .map_err(|e| OAuthError::invalid_grant(format!("the token from {iss} is not valid: {e}")))?;
        Ok((issuer, v))
    }

    /// The active Sigil user a verified external token names, through the issuer's claim.
    pub(super) async fn mapped_user(&self, issuer: &TrustedIssuer, v: &VerifiedJwt) -> Result<Arc<User>, OAuthError> {
        let value = v.str(&issuer.username_claim).ok_or_else(|| {
            OAuthError::invalid_grant(format!(
                "the token has no {} claim to find the user by",
                issuer.username_claim
            ))
        })?;
        let username = Username::parse(value)
            .map_err(|_| OAuthError::invalid_grant("the token's user is not a Sigil username"))?;
        self.reads
            .user(&UserRef::Username(username))
            .await?
            .filter(|u| u.status == UserStatus::Active)
            .ok_or_else(|| OAuthError::invalid_grant("the token's user is not an active Sigil user"))
    }
}

fn is_loopback(u: &url::Url) -> bool {
    u.scheme() == "http" && matches!(u.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"))
}

/// RFC 8693 / ID-JAG token type identifiers.
pub const ID_JAG_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id-jag";
pub const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
/// The JOSE `typ` of an ID-JAG (draft-ietf-oauth-identity-assertion-authz-grant §3.1).
pub const ID_JAG_TYP: &str = "oauth-id-jag+jwt";
pub use super::client::JWT_BEARER_GRANT;
/// The grant profile a resource authorization server advertises for ID-JAG (§7.2).
pub const ID_JAG_PROFILE: &str = "urn:ietf:params:oauth:grant-profile:id-jag";
/// The longest-lived ID-JAG Sigil redeems.
const MAX_ASSERTION_GRANT_SECS: i64 = 3600;
/// Lifetime of the ID-JAGs Sigil issues.
const ID_JAG_TTL_SECS: i64 = 300;

/// The user a token exchange is for, resolved from its subject token.
#[derive(Debug, Clone)]
pub struct Subject {
    pub user: Arc<User>,
    /// The DPoP key a Sigil subject token is bound to: the exchange must prove it.
    pub jkt: Option<String>,
    /// The client certificate a Sigil subject token is bound to: the exchange must present it.
    pub x5t_s256: Option<String>,
    /// The chain of a Sigil delegated token, continued by the exchange.
    pub act: Option<super::token::Actor>,
    pub may_act: Option<super::token::MayAct>,
    /// The subject token's expiry: the exchanged token does not outlive it.
    pub exp: i64,
    /// For a Sigil access token: its audience and scope (an exchange for the same audience
    /// never widens them). For a refresh token: the resource and scopes the user consented
    /// to, which bound an ID-JAG made from it.
    pub aud: Option<String>,
    pub scope: Option<String>,
    /// A Sigil access token's `jti`: a token exchanged from it is revoked with it.
    pub derived_from: Option<String>,
    /// What the audit record names the subject token by (its jti, or the issuer and jti).
    pub reference: String,
}

/// The resource and scope of an ID-JAG. From a refresh token they stay inside what the user
/// consented to (draft §4.3: "within the authorization context of the Refresh Token"): its
/// resource, and its scopes, which are also the default; from an ID token they are the client's
/// to ask, and the resource authorization server's to decide.
fn within_consent(
    subject: &Subject,
    resource: Option<String>,
    scope: Option<&str>,
) -> Result<(Option<String>, Option<String>), OAuthError> {
    let (Some(consented_resource), Some(consented)) = (&subject.aud, &subject.scope) else {
        return Ok((resource, scope.map(str::to_owned)));
    };
    if resource
        .as_ref()
        .is_some_and(|r| !super::delegation::same_url(r, consented_resource))
    {
        return Err(OAuthError::invalid_target(
            "the resource is not the one the refresh token was granted for",
        ));
    }
    let consented = sigil_types::ScopeSet::parse_oauth(consented).map_err(|_| OAuthError::unavailable())?;
    let Some(asked) = scope else {
        return Ok((resource, Some(consented.to_oauth_string())));
    };
    let asked = sigil_types::ScopeSet::parse_oauth(asked).map_err(|e| OAuthError::invalid_scope(e.to_string()))?;
    if let Some(s) = asked.iter().find(|s| !consented.contains(s)) {
        return Err(OAuthError::invalid_scope(format!(
            "scope {s} is beyond what the refresh token was granted"
        )));
    }
    Ok((resource, Some(asked.to_oauth_string())))
}

impl OAuthService {
    /// Resolves the subject token of an exchange (RFC 8693 §2.1):
    /// - a Sigil access token of a user (`access_token` or `jwt`), which must be in force;
    /// - an ID token (or access token) of a trusted issuer, whose `aud` must be the client's
    ///   `client_id` or one of the issuer's registered audiences, mapped to a Sigil user;
    /// - for an ID-JAG, a Sigil refresh token of this client (the draft's §4.3 option), which
    ///   must be live.
    pub(super) async fn exchange_subject(
        &self,
        req: &super::exchange::ExchangeRequest<'_>,
        auth: &super::client_auth::Authenticated,
        for_id_jag: bool,
        now: sigil_types::Timestamp,
    ) -> Result<Subject, OAuthError> {
        use super::exchange::{ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE, REFRESH_TOKEN_TYPE};
        let token = req
            .subject_token
            .ok_or_else(|| OAuthError::invalid_request("subject_token is required"))?;
        let kind = req
            .subject_token_type
            .ok_or_else(|| OAuthError::invalid_request("subject_token_type is required"))?;
        let accepted: &[&str] = if for_id_jag {
            &[ID_TOKEN_TYPE, REFRESH_TOKEN_TYPE]
        } else {
            &[ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE, ID_TOKEN_TYPE]
        };
        if !accepted.contains(&kind) {
            return Err(OAuthError::invalid_request(format!(
                "subject_token_type {kind} is not accepted here; use one of {}",
                accepted.join(", ")
            )));
        }
        if kind == REFRESH_TOKEN_TYPE {
            let grant = self
                .live_grant(token, super::grant::GrantKind::Refresh, &auth.client, None)
                .await?;
            let user = self.active_user_for_subject(&grant.user_id).await?;
            // A sign-in consented to no API: like its ID token, its refresh token says who
            // signed in, and bounds no resource or scope of the ID-JAG (its `profile` and
            // `email` are Sigil's own UserInfo scopes, not another server's).
            let consent =
                (!self.is_sign_in_only(&grant.resource)).then(|| (grant.resource.clone(), grant.scope.clone()));
            return Ok(Subject {
                user,
                jkt: None,
                x5t_s256: None,
                act: None,
                may_act: None,
                exp: grant.expires_at.unix_seconds(),
                aud: consent.as_ref().map(|(r, _)| r.clone()),
                scope: consent.map(|(_, s)| s),
                derived_from: None,
                reference: format!("refresh family {}", grant.family_id),
            });
        }
        let ours = unverified_issuer(token).as_deref() == Some(self.cfg.issuer.as_str());
        if ours && kind == ID_TOKEN_TYPE {
            // Sigil's ID token says who signed in, not what she consented to: it may start an
            // ID-JAG (whose resource authorization server decides), never a Sigil access token.
            if !for_id_jag {
                // Said as what it is: a Sigil access token sent under the ID token's type.
                return Err(OAuthError::invalid_request(
                    if self.verify_access_token(token, now).is_ok() {
                        "the subject token is an access token: send subject_token_type urn:ietf:params:oauth:token-type:access_token"
                    } else {
                        "Sigil's own ID tokens are exchanged only for ID-JAGs; exchange the access token"
                    },
                ));
            }
            return self.own_id_token_subject(token, auth, now).await;
        }
        if ours {
            let claims = self
                .verify_access_token(token, now)
                .map_err(|e| OAuthError::invalid_grant(format!("the subject token is not valid: {e}")))?;
            if !self.is_active_now(&claims, now).await? {
                return Err(OAuthError::invalid_grant(
                    "the subject token is revoked or its principals are not active",
                ));
            }
            let user_id = sigil_types::UserId::parse(&claims.sub)
                .map_err(|_| OAuthError::invalid_grant("the subject token is not a user's token"))?;
            let user = self.active_user_for_subject(&user_id).await?;
            return Ok(Subject {
                user,
                jkt: claims.cnf.as_ref().and_then(|c| c.jkt.clone()),
                x5t_s256: claims.cnf.as_ref().and_then(|c| c.x5t_s256.clone()),
                act: claims.act,
                may_act: claims.may_act,
                exp: claims.exp,
                aud: Some(claims.aud),
                scope: Some(claims.scope),
                derived_from: Some(claims.jti.clone()),
                reference: claims.jti,
            });
        }
        let (issuer, v) = self.verify_trusted(token).await?;
        // Explicit typing (RFC 8725 §3.11) is an allow list: an ID token is a plain JWT; an
        // access token or generic JWT may also be an RFC 9068 `at+jwt`. Anything else — an
        // ID-JAG, a logout token, a security event, a DPoP proof, a client assertion — is
        // another kind of JWT that must not pass for a user's token.
        let typ = v.typ.as_deref();
        let plain = typ.is_none_or(|t| t.eq_ignore_ascii_case("JWT"));
        let typ_ok = match kind {
            ID_TOKEN_TYPE => plain,
            _ => plain || sigil_crypto::typ_is(typ, "at+jwt"),
        };
        if !typ_ok {
            return Err(OAuthError::invalid_grant(format!(
                "the subject token's typ {} is not a {kind}",
                v.typ.as_deref().unwrap_or_default()
            )));
        }
        // draft-ietf-oauth-identity-assertion-authz-grant §4.3.3: an ID token is accepted from the
        // client it was issued to; the operator may name the client ids Sigil's clients have at
        // that issuer.
        let mut audiences: Vec<&str> = issuer.audiences.iter().map(String::as_str).collect();
        audiences.push(auth.client.client_id.as_str());
        if !v.audience_in(&audiences) {
            return Err(OAuthError::invalid_grant(
                "the subject token's aud is not this client nor an audience registered for its issuer",
            ));
        }
        // OIDC Core §3.1.3.7 (4, 5): a token with several audiences names the party it was
        // issued to in `azp`; one issued to another party is not this client's to redeem.
        let several_audiences = v
            .claims
            .get("aud")
            .and_then(|a| a.as_array())
            .is_some_and(|a| a.len() > 1);
        match v.claims.get("azp") {
            Some(serde_json::Value::String(azp)) if audiences.contains(&azp.as_str()) => {}
            Some(_) => {
                return Err(OAuthError::invalid_grant(
                    "the subject token was issued to another party (azp)",
                ));
            }
            None if kind == ID_TOKEN_TYPE && several_audiences => {
                return Err(OAuthError::invalid_grant(
                    "an ID token with several audiences must name the party it was issued to (azp)",
                ));
            }
            None => {}
        }
        // RFC 8693 §4.1: a token that already says someone acts for the user. Its actors are
        // the other issuer's principals, which Sigil can neither check nor decide for, and
        // dropping them would credit the whole chain to this client: refused, not flattened.
        if v.claims.contains_key("act") {
            return Err(OAuthError::invalid_grant(
                "the subject token is already delegated (act): another issuer's actor chain cannot be continued here",
            ));
        }
        let may_act = v.may_act().map_err(OAuthError::invalid_grant)?;
        let user = self.mapped_user(&issuer, &v).await?;
        Ok(Subject {
            user,
            jkt: None,
            x5t_s256: None,
            act: None,
            may_act,
            exp: v.date("exp").unwrap_or_default(),
            aud: None,
            scope: None,
            derived_from: None,
            reference: format!("{} {}", issuer.issuer, v.str("jti").unwrap_or_default()),
        })
    }

    /// One of Sigil's own ID tokens, issued to this very client (the ID-JAG draft's §4.3.3:
    /// the ID token's audience must be the requesting client).
    async fn own_id_token_subject(
        &self,
        token: &str,
        auth: &super::client_auth::Authenticated,
        now: sigil_types::Timestamp,
    ) -> Result<Subject, OAuthError> {
        let invalid = |why: &str| OAuthError::invalid_grant(format!("the ID token is not valid: {why}"));
        let v = sigil_crypto::verify_compact(token, &self.keys.jwks()).map_err(|_| invalid("bad signature"))?;
        if v.typ.as_deref() != Some("JWT") {
            return Err(invalid("not an ID token"));
        }
        let claims: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&v.payload).map_err(|_| invalid("malformed"))?;
        let verified = VerifiedJwt { typ: v.typ, claims };
        if verified.str("iss") != Some(self.cfg.issuer.as_str())
            || verified.date("exp").is_none_or(|e| e <= now.unix_seconds())
        {
            return Err(invalid("expired or from another issuer"));
        }
        if !verified.audience_in(&[auth.client.client_id.as_str()]) {
            return Err(invalid("it was issued to another client"));
        }
        let user_id =
            sigil_types::UserId::parse(verified.str("sub").unwrap_or_default()).map_err(|_| invalid("no user"))?;
        let may_act = verified.may_act().map_err(OAuthError::invalid_grant)?;
        let user = self.active_user_for_subject(&user_id).await?;
        Ok(Subject {
            user,
            jkt: None,
            x5t_s256: None,
            act: None,
            may_act,
            exp: verified.date("exp").unwrap_or_default(),
            aud: None,
            scope: None,
            derived_from: None,
            reference: format!("id token of {}", verified.str("sub").unwrap_or_default()),
        })
    }

    async fn active_user_for_subject(&self, id: &sigil_types::UserId) -> Result<Arc<User>, OAuthError> {
        self.reads
            .user(&UserRef::Id(id.clone()))
            .await?
            .filter(|u| u.status == UserStatus::Active)
            .ok_or_else(|| OAuthError::invalid_grant("the subject token's user is not active"))
    }

    /// Sigil as the IdP (draft §4.3): an Identity Assertion JWT Authorization Grant for the
    /// user, addressed to a resource authorization server the operator allows for this client.
    pub(super) async fn issue_id_jag(
        &self,
        auth: &super::client_auth::Authenticated,
        req: &super::exchange::ExchangeRequest<'_>,
        subject: &Subject,
        proof: Option<&super::dpop::Proof>,
        request_id: Option<&str>,
        now: sigil_types::Timestamp,
    ) -> Result<super::service::TokenResponse, OAuthError> {
        let audience = match req.audiences {
            [one] => one.as_str(),
            [] => {
                return Err(OAuthError::invalid_request(
                    "audience is required: the authorization server's issuer",
                ));
            }
            _ => return Err(OAuthError::invalid_target("one audience per ID-JAG")),
        };
        let target = auth
            .client
            .id_jag_audiences
            .iter()
            .find(|a| a.audience == audience)
            .ok_or_else(|| OAuthError::invalid_target(format!("this client may not get ID-JAGs for {audience}")))?;
        let client_at_target = target
            .client_id
            .clone()
            .unwrap_or_else(|| auth.client.client_id.clone());
        let resource = match req.resources {
            [] => None,
            // draft §4.3: processed as RFC 8707 §2 says, so an absolute URI without fragment.
            [one] => Some(
                sigil_types::ResourceUri::parse(one)
                    .map_err(|e| OAuthError::invalid_target(e.to_string()))?
                    .to_string(),
            ),
            _ => return Err(OAuthError::invalid_target("one resource per ID-JAG")),
        };
        let (resource, scope) = within_consent(subject, resource, req.scope)?;
        let (resource, scope) = (resource.as_deref(), scope.as_deref());
        self.active_identity(&auth.client.identity_id, now).await?;
        let exp = (now.unix_seconds() + ID_JAG_TTL_SECS).min(subject.exp.max(now.unix_seconds() + 1));
        let mut claims = serde_json::Map::new();
        let mut put = |k: &str, v: serde_json::Value| {
            claims.insert(k.to_owned(), v);
        };
        put("iss", self.cfg.issuer.clone().into());
        put("sub", subject.user.id.to_string().into());
        put("aud", audience.into());
        put("client_id", client_at_target.into());
        put("jti", self.new_jti(now).into());
        put("iat", now.unix_seconds().into());
        put("exp", exp.into());
        put("preferred_username", subject.user.username.to_string().into());
        if let Some(e) = &subject.user.email {
            put("email", e.to_string().into());
        }
        if let Some(r) = resource {
            put("resource", r.into());
        }
        if let Some(s) = scope {
            put("scope", s.into());
        }
        if let Some(p) = proof {
            put("cnf", serde_json::json!({ "jkt": p.jkt }));
        }
        let key = self.keys.active().ok_or_else(OAuthError::unavailable)?;
        let payload = serde_json::to_vec(&claims).map_err(|_| OAuthError::unavailable())?;
        let grant = sigil_crypto::sign_compact(&key, ID_JAG_TYP, &payload).map_err(|_| OAuthError::unavailable())?;
        let mut record = AuditRecord::new(
            now,
            EventType::TokenExchanged,
            &crate::model::Principal::from_stored(format!("client:{}", auth.client.client_id)),
            request_id,
        );
        record.subject = Some(subject.user.id.to_string());
        record.actors = vec![auth.client.identity_id.to_string()];
        record.client_id = Some(auth.client.client_id.clone());
        record.auth = Some(crate::audit::AuthEvidence {
            jti: claims.get("jti").and_then(|j| j.as_str()).map(str::to_owned),
            ..auth.evidence.clone()
        });
        record.action = Some("id_jag".into());
        record.target = Some(crate::audit::Target {
            kind: "authorization_server".into(),
            id: None,
            name: None,
            resource: resource.map(str::to_owned),
            audience: Some(audience.to_owned()),
        });
        record.scopes = scope
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let record = record
            .detail("issued_token_type", ID_JAG_TOKEN_TYPE)
            .detail("audience", audience)
            .detail("resource", resource.unwrap_or_default())
            .detail("subject_token", subject.reference.as_str());
        self.commit_issuance(ChangeSet::new().audit(record), auth, proof)
            .await?;
        Ok(super::service::TokenResponse {
            access_token: grant,
            issued_token_type: Some(ID_JAG_TOKEN_TYPE),
            token_type: "N_A",
            expires_in: u64::try_from(exp - now.unix_seconds()).unwrap_or(0),
            scope: scope.unwrap_or_default().to_owned(),
            refresh_token: None,
            id_token: None,
        })
    }

    /// Sigil as the resource authorization server (draft §4.4): redeems an ID-JAG from a
    /// trusted IdP with the RFC 7523 jwt-bearer grant for an access token for the user, with
    /// the client's agent as the actor.
    pub async fn jwt_bearer(
        &self,
        creds: &super::client_auth::PresentedCredentials,
        assertion: Option<&str>,
        scope: Option<&str>,
        resources: &[String],
        dpop: Option<&str>,
        request_id: Option<&str>,
    ) -> Result<super::service::TokenResponse, OAuthError> {
        let auth = self.authenticate(creds, &self.cfg.token_endpoint).await?;
        auth.client.ensure_grant(JWT_BEARER_GRANT)?;
        let proof = self.check_dpop(dpop)?;
        let now = self.clock.now();
        let assertion = assertion.ok_or_else(|| OAuthError::invalid_request("assertion is required"))?;
        let (issuer, v) = self.verify_trusted(assertion).await?;
        if !issuer.accept_id_jag {
            return Err(OAuthError::invalid_grant(format!(
                "ID-JAGs from {} are not accepted",
                issuer.issuer
            )));
        }
        if !sigil_crypto::typ_is(v.typ.as_deref(), ID_JAG_TYP) {
            return Err(OAuthError::invalid_grant(format!(
                "the assertion's typ must be {ID_JAG_TYP}"
            )));
        }
        let aud_ok = match v.claims.get("aud") {
            Some(serde_json::Value::String(a)) => *a == self.cfg.issuer,
            Some(serde_json::Value::Array(list)) => {
                list.len() == 1 && list.first().and_then(|a| a.as_str()) == Some(&self.cfg.issuer)
            }
            _ => false,
        };
        if !aud_ok {
            return Err(OAuthError::invalid_grant(
                "the ID-JAG is addressed to another authorization server",
            ));
        }
        if v.str("client_id") != Some(auth.client.client_id.as_str()) {
            return Err(OAuthError::invalid_grant("the ID-JAG was issued for another client"));
        }
        // As for a trusted issuer's subject token (RFC 8693 §4.1): another issuer's actor chain
        // can be neither checked nor continued, and dropping it would credit it to this client.
        if v.claims.contains_key("act") {
            return Err(OAuthError::invalid_grant(
                "the ID-JAG is already delegated (act): another issuer's actor chain cannot be continued here",
            ));
        }
        if let Some(why) = super::jti::unusable(v.str("jti")) {
            return Err(OAuthError::invalid_grant(format!("the ID-JAG {why}")));
        }
        let jti = v.str("jti").unwrap_or_default().to_owned();
        // draft-ietf-oauth-identity-assertion-authz-grant §3.1: iat and sub are required.
        if v.date("iat").is_none() || v.str("sub").is_none_or(str::is_empty) {
            return Err(OAuthError::invalid_grant("the ID-JAG lacks iat or sub"));
        }
        let exp = v.date("exp").unwrap_or_default();
        // A grant assertion is short-lived; one valid for hours is refused (and would keep its
        // replay record that long).
        if exp > now.unix_seconds() + MAX_ASSERTION_GRANT_SECS {
            return Err(OAuthError::invalid_grant("the ID-JAG lives too long"));
        }
        match (
            v.claims.get("cnf").and_then(|c| c.get("jkt")).and_then(|j| j.as_str()),
            &proof,
        ) {
            (Some(jkt), Some(p)) if p.jkt == jkt => {}
            (Some(_), _) => {
                return Err(OAuthError::invalid_grant(
                    "the ID-JAG is bound to a DPoP key this request does not prove",
                ));
            }
            (None, _) => {}
        }
        let user = self.mapped_user(&issuer, &v).await?;
        let resource_uri = match (v.claims.get("resource"), resources) {
            (Some(serde_json::Value::String(r)), []) => r.clone(),
            (Some(serde_json::Value::String(r)), [asked]) if super::delegation::same_url(asked, r) => r.clone(),
            // `resource` may be an array (§3.1); with one element it needs no choosing.
            (Some(serde_json::Value::Array(list)), []) if matches!(list.as_slice(), [serde_json::Value::String(_)]) => {
                list.first()
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            }
            (Some(serde_json::Value::Array(list)), [asked])
                if list
                    .iter()
                    .any(|r| r.as_str().is_some_and(|r| super::delegation::same_url(asked, r))) =>
            {
                asked.clone()
            }
            (None, [asked]) => asked.clone(),
            (None, []) => return Err(OAuthError::invalid_target("the ID-JAG names no resource; give one")),
            _ => return Err(OAuthError::invalid_target("the resource is not one the ID-JAG names")),
        };
        let resource = self.resource_by_uri(&resource_uri).await?;
        let agent = self.active_identity(&auth.client.identity_id, now).await?;
        self.require_dpop(&auth.client, &agent, proof.as_ref())?;
        let owner = self.reads.username(&agent.owner).await?;
        let granted = ScopeSet::parse_oauth(v.str("scope").unwrap_or_default())
            .map_err(|e| OAuthError::invalid_scope(e.to_string()))?;
        let requested = match scope {
            Some(s) => {
                let asked = ScopeSet::parse_oauth(s).map_err(|e| OAuthError::invalid_scope(e.to_string()))?;
                if !granted.is_empty() && !asked.is_subset(&granted) {
                    return Err(OAuthError::invalid_scope(
                        "the request asks for more than the ID-JAG grants",
                    ));
                }
                asked
            }
            None => granted,
        };
        let chain = [
            super::policy::ChainPrincipal::User(&user),
            super::policy::ChainPrincipal::Identity {
                identity: &agent,
                owner: &owner,
            },
        ];
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
            .await?;
        let act = super::token::Actor::wrap(agent.id.to_string(), auth.client.client_id.clone(), None);
        let (access_token, claims, ttl) = self.mint_delegated(&super::delegated_token::Delegated {
            user: &user,
            act,
            client: &auth.client,
            aud: resource.uri.as_str(),
            scope: &scope,
            not_after: None,
            agent_token_ttl: agent.token_ttl_seconds,
            proof: proof.as_ref(),
            cert_thumbprint: auth.cert_thumbprint.as_deref(),
            now,
        })?;
        let record = self
            .delegated_record(
                EventType::TokenIssued,
                &claims,
                &auth,
                super::authorize::resource_target(&resource),
                Some(evidence),
                "jwt_bearer",
                request_id,
                now,
            )
            .detail("id_jag_issuer", issuer.issuer.as_str())
            .detail("id_jag_jti", jti.as_str());
        // Single use of the ID-JAG's jti (RFC 7523 §3 rule 7), in the shared replay table.
        let cs = ChangeSet::new()
            .change(Change::RecordGrantAssertion {
                issuer: issuer.issuer.clone(),
                jti,
                expires_at: exp,
            })
            .audit(record);
        self.commit_issuance(cs, &auth, proof.as_ref()).await?;
        Ok(super::service::TokenResponse {
            access_token,
            issued_token_type: None,
            token_type: if proof.is_some() { "DPoP" } else { "Bearer" },
            expires_in: ttl,
            scope: claims.scope,
            refresh_token: None,
            id_token: None,
        })
    }
}
