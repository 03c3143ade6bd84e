//! Minting a delegated access token (RFC 9068 with the `act` chain, RFC 8693 §4.1) and its
//! audit record, shared by the code and refresh grants, token exchange and ID-JAG redemption.

use sigil_types::{ScopeSet, Timestamp};

use super::client::OAuthClient;
use super::client_auth::Authenticated;
use super::error::OAuthError;
use super::service::OAuthService;
use super::token::{self, AccessClaims, Actor, Confirmation};
use crate::audit::{AuditRecord, AuthEvidence, EventType, PolicyEvidence, Target};
use crate::model::{Principal, User};

/// Everything a delegated access token is minted from.
pub(super) struct Delegated<'a> {
    pub(super) user: &'a User,
    /// The chain, the current actor outermost.
    pub(super) act: Actor,
    pub(super) client: &'a OAuthClient,
    /// The resource's URI, or the UserInfo endpoint for a sign-in only.
    pub(super) aud: &'a str,
    pub(super) scope: &'a ScopeSet,
    /// The token may not outlive this (the subject token's expiry, for an exchange).
    pub(super) not_after: Option<i64>,
    /// The acting agent's own token lifetime, if the operator set one: it bounds the tokens
    /// the agent holds for users as much as those it gets for itself.
    pub(super) agent_token_ttl: Option<u32>,
    pub(super) proof: Option<&'a super::dpop::Proof>,
    /// The client certificate the client authenticated with (mutual TLS), if any.
    pub(super) cert_thumbprint: Option<&'a str>,
    pub(super) now: Timestamp,
}

impl OAuthService {
    pub(super) fn mint_delegated(&self, d: &Delegated<'_>) -> Result<(String, AccessClaims, u64), OAuthError> {
        let now = d.now.unix_seconds();
        let ttl = i64::try_from(self.token_lifetime(d.agent_token_ttl).as_secs()).unwrap_or(300);
        let exp = d.not_after.map_or(now + ttl, |n| n.min(now + ttl));
        if exp <= now {
            // Only a subject token bounds it so: one accepted within the clock-skew allowance
            // that has in fact expired (RFC 8693 §2.2.2: an invalid subject_token).
            return Err(OAuthError::invalid_request("the subject token has expired"));
        }
        let claims = AccessClaims {
            iss: self.cfg.issuer.clone(),
            sub: d.user.id.to_string(),
            aud: d.aud.to_owned(),
            exp,
            iat: now,
            jti: self.new_jti(d.now),
            client_id: d.client.client_id.clone(),
            scope: d.scope.to_oauth_string(),
            cnf: Confirmation::of(d.proof.map(|p| p.jkt.clone()), d.cert_thumbprint.map(str::to_owned)),
            act: Some(d.act.clone()),
            may_act: None,
        };
        let key = self.keys.active().ok_or_else(OAuthError::unavailable)?;
        let token = token::mint(&key, &claims).map_err(|_| OAuthError::unavailable())?;
        Ok((token, claims, u64::try_from(exp - now).unwrap_or(0)))
    }

    /// The audit record of a delegated issuance: the user as subject, the actors outermost first.
    #[allow(clippy::too_many_arguments, reason = "all parts of one record")]
    pub(super) fn delegated_record(
        &self,
        event: EventType,
        claims: &AccessClaims,
        auth: &Authenticated,
        target: Target,
        evidence: Option<PolicyEvidence>,
        action: &str,
        request_id: Option<&str>,
        now: Timestamp,
    ) -> AuditRecord {
        let mut record = record_of_delegated(event, claims, request_id, now);
        record.auth = Some(AuthEvidence {
            jti: Some(claims.jti.clone()),
            ..auth.evidence.clone()
        });
        record.target = Some(target);
        record.scopes = claims
            .scope
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        record.action = Some(action.into());
        record.policy = evidence;
        record
    }
}

/// A record of what a delegated token was issued or used for: the user as subject, the agents
/// of its `act` chain as actors (outermost first), the outermost of them (or, with no chain,
/// the client) as the one who acted.
pub(super) fn record_of_delegated(
    event: EventType,
    claims: &AccessClaims,
    request_id: Option<&str>,
    now: Timestamp,
) -> AuditRecord {
    let actors: Vec<String> = claims
        .act
        .as_ref()
        .map(|a| a.chain_from_user().iter().rev().map(|m| m.sub.clone()).collect())
        .unwrap_or_default();
    let by = actors.first().cloned().unwrap_or_else(|| claims.client_id.clone());
    let mut record = AuditRecord::new(now, event, &Principal::from_stored(by), request_id);
    record.subject = Some(claims.sub.clone());
    record.actors = actors;
    record.client_id = Some(claims.client_id.clone());
    record
}
