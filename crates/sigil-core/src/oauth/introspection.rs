//! Introspection (RFC 7662) and revocation (RFC 7009) of Sigil's tokens: access tokens by
//! their `jti`, refresh tokens by their grant family.

use serde::Serialize;
use sigil_types::{IdentityId, IdentityStatus, Timestamp, UserId, UserStatus};

use super::error::OAuthError;
use super::service::OAuthService;
use super::token::AccessClaims;
use crate::audit::{AuditRecord, AuthEvidence, EventType};
use crate::model::{IdentityRef, Principal, UserRef};
use crate::store::{Change, ChangeSet, StoreError};

/// An introspection response (RFC 7662 §2.2).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Introspection {
    pub active: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub claims: Option<IntrospectedClaims>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<IntrospectedRefresh>,
}

/// What introspection tells of an active refresh token (RFC 7662 §2.2). It has no `jti` and
/// no `token_type` (RFC 6749 §7.1 types are access token types).
#[derive(Debug, Clone, Serialize)]
pub struct IntrospectedRefresh {
    pub scope: String,
    pub client_id: String,
    pub sub: String,
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub exp: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct IntrospectedClaims {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cnf: Option<super::token::Confirmation>,
    pub scope: String,
    pub client_id: String,
    pub token_type: &'static str,
    pub exp: i64,
    pub iat: i64,
    pub sub: String,
    pub aud: String,
    pub iss: String,
    pub jti: String,
    /// RFC 8693 §4.1 / RFC 7662: the actor chain of a delegated token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub act: Option<super::token::Actor>,
}

impl OAuthService {
    /// RFC 7662: active only if the signature, issuer and expiry check out, the token was not
    /// revoked, and its identity is still active and has not had its tokens cut off since.
    /// `caller_identity` is the identity of a client caller (none for an administrator).
    pub async fn introspect(
        &self,
        token: &str,
        caller: &str,
        caller_identity: Option<&IdentityId>,
        request_id: Option<&str>,
    ) -> Result<Introspection, OAuthError> {
        let now = self.clock.now();
        if token.starts_with(super::grant::REFRESH_PREFIX) {
            return self.introspect_refresh_token(token, caller, request_id).await;
        }
        let Ok(claims) = self.verify_access_token(token, now) else {
            let by = Principal::from_stored(caller.to_owned());
            let record = unknown_token(now, EventType::TokenIntrospected, &by, request_id, "access token")
                .detail("active", false);
            self.store.commit(ChangeSet::new().audit(record)).await?;
            return Ok(Introspection::default());
        };
        let permitted = match caller.strip_prefix("client:") {
            Some(c) => self.may_learn_about(c, caller_identity, &claims).await?,
            None => true,
        };
        let active = permitted && self.is_active_now(&claims, now).await?;
        let mut record = AuditRecord::new(
            now,
            EventType::TokenIntrospected,
            &Principal::from_stored(caller.to_owned()),
            request_id,
        )
        .detail("active", active);
        if !permitted {
            record = record.outcome(
                crate::audit::Outcome::Denied,
                "the caller neither holds the token nor serves its audience",
            );
        }
        record.client_id = Some(claims.client_id.clone());
        record.auth = Some(AuthEvidence {
            method: "introspection".into(),
            jti: Some(claims.jti.clone()),
            ..AuthEvidence::default()
        });
        self.store.commit(ChangeSet::new().audit(record)).await?;
        if !active {
            return Ok(Introspection::default());
        }
        Ok(Introspection {
            active: true,
            claims: Some(IntrospectedClaims {
                token_type: if claims.cnf.as_ref().is_some_and(|c| c.jkt.is_some()) {
                    "DPoP"
                } else {
                    "Bearer"
                },
                cnf: claims.cnf,
                scope: claims.scope,
                client_id: claims.client_id,
                exp: claims.exp,
                iat: claims.iat,
                sub: claims.sub,
                aud: claims.aud,
                iss: claims.iss,
                jti: claims.jti,
                act: claims.act,
            }),
            refresh: None,
        })
    }

    /// RFC 7662 §4: the server must decide whether the token can be used at the resource
    /// server asking. A client (`caller`, of `identity`) learns about a token if it is the
    /// token's client, or its identity serves the token's audience (`sigil resource create
    /// --server`; while a resource names none, any workload) or holds the token (was issued
    /// it, by whichever of its clients or SVIDs). To any other client the token is inactive
    /// (§2.2). The AuthZEN API asks the same of a token subject.
    pub async fn may_learn_about(
        &self,
        caller: &str,
        identity: Option<&IdentityId>,
        claims: &AccessClaims,
    ) -> Result<bool, OAuthError> {
        if caller == claims.client_id {
            return Ok(true);
        }
        // A client described by a metadata document is whoever hosts one, and all such clients
        // share one configured identity: each learns about its own tokens only, so none can
        // scan others' (RFC 7662 §2.1).
        if super::metadata_doc::is_document_url(caller) {
            return Ok(false);
        }
        let Some(identity) = identity else {
            return Ok(false);
        };
        if let Ok(audience) = sigil_types::ResourceUri::parse(&claims.aud)
            && let Some(resource) = self.resource(&audience).await?
        {
            if resource.servers.contains(identity) {
                return Ok(true);
            }
            // A resource that names no servers has not said who serves it: any workload (the
            // kind of identity a resource server is) may ask, agents may not. Naming servers
            // narrows it to them.
            if resource.servers.is_empty()
                && self.identity(identity).await?.is_some_and(|i| {
                    crate::model::IdentityFamily::of(i.kind) == crate::model::IdentityFamily::Workloads
                })
            {
                return Ok(true);
            }
        }
        // Clients described by metadata documents share one identity yet are strangers to each
        // other: a document client's token is known to that client only.
        if super::metadata_doc::is_document_url(&claims.client_id) {
            return Ok(false);
        }
        // The identity holding the token: the outermost actor of a delegated token, otherwise
        // the subject (however its client authenticated: a registered client or an SVID).
        let holder = claims.act.as_ref().map_or(claims.sub.as_str(), |a| a.sub.as_str());
        Ok(holder == identity.as_str())
    }

    /// A refresh token is active while it is unspent, unexpired, its family unrevoked, and
    /// the user and the agent still active. Only the client it was issued to (or an
    /// administrator) learns that: to anyone else it is inactive, like an unknown value.
    async fn introspect_refresh_token(
        &self,
        token: &str,
        caller: &str,
        request_id: Option<&str>,
    ) -> Result<Introspection, OAuthError> {
        let Some(grant) = self.refresh_grant(token).await? else {
            let by = Principal::from_stored(caller.to_owned());
            let record = unknown_token(
                self.clock.now(),
                EventType::TokenIntrospected,
                &by,
                request_id,
                "refresh token",
            )
            .detail("active", false);
            self.store.commit(ChangeSet::new().audit(record)).await?;
            return Ok(Introspection::default());
        };
        // Only the client a refresh token was issued to learns about it (nobody else can use it).
        let permitted = caller.strip_prefix("client:").is_none_or(|c| c == grant.client_id);
        let now = self.clock.now();
        let active = permitted && self.refresh_grant_is_active(&grant, now).await?;
        let mut record = AuditRecord::new(
            now,
            EventType::TokenIntrospected,
            &Principal::from_stored(caller.to_owned()),
            request_id,
        )
        .detail("active", active)
        .detail("family", grant.family_id.as_str())
        .detail("token_type", "refresh_token");
        if !permitted {
            record = record.outcome(
                crate::audit::Outcome::Denied,
                "a refresh token is known only to the client it was issued to",
            );
        }
        record.client_id = Some(grant.client_id.clone());
        record.subject = Some(grant.user_id.to_string());
        self.store.commit(ChangeSet::new().audit(record)).await?;
        if !active {
            return Ok(Introspection::default());
        }
        Ok(Introspection {
            active: true,
            claims: None,
            refresh: Some(IntrospectedRefresh {
                scope: grant.scope,
                client_id: grant.client_id,
                sub: grant.user_id.to_string(),
                aud: grant.resource,
                iss: self.cfg.issuer.clone(),
                iat: grant.issued_at.unix_seconds(),
                exp: grant.expires_at.unix_seconds(),
            }),
        })
    }

    /// The refresh grant a presented value names, if it names one. Values longer than any
    /// refresh token Sigil issues are not looked up.
    async fn refresh_grant(&self, token: &str) -> Result<Option<super::grant::Grant>, OAuthError> {
        if token.len() > 256 {
            return Ok(None);
        }
        let grant = self.store.get_grant(&self.secret_hash(token)).await?;
        Ok(grant.filter(|g| g.kind == super::grant::GrantKind::Refresh))
    }

    /// Whether a refresh grant could be used now: unspent, unexpired, unrevoked, and its user
    /// and agent active by the very rules the refresh grant applies.
    async fn refresh_grant_is_active(
        &self,
        grant: &super::grant::Grant,
        now: sigil_types::Timestamp,
    ) -> Result<bool, OAuthError> {
        if grant.family_revoked || grant.used_at.is_some() || grant.expires_at <= now {
            return Ok(false);
        }
        let holders = async {
            self.active_user_for_grant(&grant.user_id).await?;
            let client = self
                .client(&grant.client_id)
                .await?
                .ok_or_else(|| OAuthError::invalid_client("unknown client"))?;
            let agent = self.active_identity(&client.identity_id, now).await?;
            Ok::<_, OAuthError>(agent.tokens_not_before.is_none_or(|t| grant.issued_at > t))
        };
        match holders.await {
            Ok(active) => Ok(active),
            // A user or agent that is not active (not a failure to find out) is an inactive token.
            Err(e) if matches!(e.code, super::ErrorCode::InvalidGrant | super::ErrorCode::InvalidClient) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The claims of a Sigil access token that is active now: valid signature, issuer and
    /// lifetime, not revoked, and its identity still active. No audit record: callers record
    /// what they used it for.
    pub async fn active_claims(&self, token: &str) -> Result<Option<AccessClaims>, OAuthError> {
        let now = self.clock.now();
        let Ok(claims) = self.verify_access_token(token, now) else {
            return Ok(None);
        };
        Ok(self.is_active_now(&claims, now).await?.then_some(claims))
    }

    /// RFC 7009: revokes a token the caller holds. Tokens that are invalid or already expired
    /// need no revocation and get the same success (§2.2); a valid token issued to another
    /// client is refused (§2.1). `caller_client` of `None` is an administrator, who may revoke
    /// any token.
    pub async fn revoke(
        &self,
        token: &str,
        caller_client: Option<&str>,
        by: &Principal,
        request_id: Option<&str>,
    ) -> Result<(), OAuthError> {
        let now = self.clock.now();
        if token.starts_with(super::grant::REFRESH_PREFIX) {
            return self.revoke_refresh_token(token, caller_client, by, request_id).await;
        }
        let Ok(claims) = self.verify_access_token(token, now) else {
            let record =
                unknown_token(now, EventType::TokenRevoked, by, request_id, "access token").detail("revoked", false);
            self.store.commit(ChangeSet::new().audit(record)).await?;
            return Ok(());
        };
        if caller_client.is_some_and(|c| c != claims.client_id) {
            tracing::info!(jti = claims.jti, "revocation refused: token belongs to another client");
            return Err(not_yours());
        }
        let mut record = AuditRecord::new(now, EventType::TokenRevoked, by, request_id);
        record.client_id = Some(claims.client_id.clone());
        record.auth = Some(AuthEvidence {
            method: "revocation".into(),
            jti: Some(claims.jti.clone()),
            ..AuthEvidence::default()
        });
        let cs = ChangeSet::new()
            .change(Change::RevokeToken {
                jti: claims.jti,
                expires_at: claims.exp,
                revoked_at: now,
            })
            .audit(record);
        match self.store.commit(cs).await {
            Ok(()) | Err(StoreError::Duplicate { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// RFC 7009 §2.1 for a refresh token: the whole grant family (the consent) is revoked, with
    /// the access tokens it produced. Unknown values get a silent success, other clients'
    /// refresh tokens a refusal.
    async fn revoke_refresh_token(
        &self,
        token: &str,
        caller_client: Option<&str>,
        by: &Principal,
        request_id: Option<&str>,
    ) -> Result<(), OAuthError> {
        let Some(grant) = self.refresh_grant(token).await? else {
            let record = unknown_token(
                self.clock.now(),
                EventType::TokenRevoked,
                by,
                request_id,
                "refresh token",
            )
            .detail("revoked", false);
            self.store.commit(ChangeSet::new().audit(record)).await?;
            return Ok(());
        };
        if caller_client.is_some_and(|c| c != grant.client_id) {
            tracing::info!(
                family = grant.family_id,
                "revocation refused: token belongs to another client"
            );
            return Err(not_yours());
        }
        let now = self.clock.now();
        let mut record = AuditRecord::new(now, EventType::TokenRevoked, by, request_id)
            .detail("family", grant.family_id.as_str())
            .detail("token_type", "refresh_token");
        record.client_id = Some(grant.client_id.clone());
        record.subject = Some(grant.user_id.to_string());
        let cs = ChangeSet::new()
            .change(Change::RevokeFamily {
                family_id: grant.family_id,
                at: now,
            })
            .audit(record);
        self.store.commit(cs).await?;
        Ok(())
    }
}

/// RFC 7009 §2.1: the caller is not the client the token was issued to.
fn not_yours() -> OAuthError {
    OAuthError::new(
        super::error::ErrorCode::UnauthorizedClient,
        "the token was not issued to this client",
    )
}

/// Whether a token is in force, asked by introspection and by every grant that takes a token.
impl OAuthService {
    /// Whether a token of ours is in force: not revoked, its client still registered (RFC 7592
    /// §2.3: deleting a client ends its tokens), and every principal it names active.
    pub(super) async fn is_active_now(&self, claims: &AccessClaims, now: Timestamp) -> Result<bool, OAuthError> {
        if self.store.is_token_revoked(&claims.jti).await? {
            return Ok(false);
        }
        // Clients described by a metadata document or by a SPIFFE registration entry are not
        // registered records; the others must still exist.
        let registered = !super::metadata_doc::is_document_url(&claims.client_id)
            && sigil_types::SpiffeId::parse(&claims.client_id).is_err();
        if registered && self.reads.client(&claims.client_id).await?.is_none() {
            return Ok(false);
        }
        // The audience must still be the API the token was issued for: once it is deleted (or
        // deleted and registered again, perhaps with other servers) the token is for none.
        // A sign-in's token is for the UserInfo endpoint, which no one deletes.
        let audience_in_force = match sigil_types::ResourceUri::parse(&claims.aud) {
            _ if self.is_sign_in_only(&claims.aud) => true,
            Ok(uri) => self
                .resource(&uri)
                .await?
                .is_some_and(|r| r.meta.created_at.unix_seconds() <= claims.iat),
            Err(_) => false,
        };
        if !audience_in_force {
            return Ok(false);
        }
        if let Ok(user) = UserId::parse(&claims.sub) {
            let user_ok = self.reads.user(&UserRef::Id(user)).await?.is_some_and(|u| {
                u.status == UserStatus::Active && u.tokens_not_before.is_none_or(|t| claims.iat > t.unix_seconds())
            });
            if !user_ok {
                return Ok(false);
            }
        } else if !self.identity_in_force(&claims.sub, claims.iat, now).await? {
            return Ok(false);
        }
        for a in claims.act.iter().flat_map(|a| a.chain_from_user()) {
            if !self.identity_in_force(&a.sub, claims.iat, now).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The identity is active and has not had its tokens cut off since `iat`.
    async fn identity_in_force(&self, sub: &str, iat: i64, now: Timestamp) -> Result<bool, OAuthError> {
        let Ok(id) = IdentityId::parse(sub) else {
            return Ok(false);
        };
        Ok(match self.reads.identity(&IdentityRef::Id(id)).await? {
            Some(i) => {
                i.effective_status(now) == IdentityStatus::Active
                    && i.tokens_not_before.is_none_or(|t| iat > t.unix_seconds())
            }
            None => false,
        })
    }
}

/// The record of an introspection or revocation of a value that is no `kind` of this issuer
/// (malformed, forged, expired, unknown): answered like any inactive token (RFC 7662 §2.2,
/// RFC 7009 §2.2), and still one record per call.
fn unknown_token(
    now: Timestamp,
    event: EventType,
    by: &Principal,
    request_id: Option<&str>,
    kind: &str,
) -> AuditRecord {
    AuditRecord::new(now, event, by, request_id).detail("token", format!("not a valid {kind} of this issuer"))
}
