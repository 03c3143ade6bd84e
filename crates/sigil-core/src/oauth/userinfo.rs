//! The UserInfo endpoint (OpenID Connect Core §5.3): a signed-in user's claims, read by the
//! client with the access token of a sign-in that named no API.
//!
//! Only such tokens are accepted (their audience is this endpoint). A token for an API is for
//! that API alone (RFC 8707, RFC 9068 §4): whoever holds it, the API included, learns nothing
//! about the user here that the user did not consent to show the client.

use sigil_types::{Timestamp, UserId};

use super::authorize::OPENID;
use super::error::{ErrorCode, OAuthError};
use super::service::OAuthService;
use super::token::AccessClaims;
use crate::audit::{AuditRecord, AuthEvidence, EventType, Outcome};
use crate::model::{Principal, User, UserRef};
use crate::store::{Change, ChangeSet, StoreError};

/// How a UserInfo request presented its access token.
#[derive(Debug, Clone, Copy)]
pub struct UserInfoRequest<'a> {
    pub token: &'a str,
    /// `Authorization: DPoP` (RFC 9449 §7.1) rather than `Bearer` (RFC 6750 §2.1).
    pub dpop_scheme: bool,
    /// The request's `DPoP` proof, if any.
    pub proof: Option<&'a str>,
    /// The request's HTTP method, which the proof must name.
    pub method: &'a str,
    /// The DER client certificate of the connection (mutual TLS), if any.
    pub client_cert: Option<&'a [u8]>,
}

fn invalid_token(why: impl Into<String>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidToken, why)
}

impl OAuthService {
    /// The claims of the user a sign-in token was issued for, as far as the consented scope
    /// releases them: `sub` always; `preferred_username` and `name` with `profile`; `email`
    /// with `email` (Core §5.4). Every answer and every refusal is audited.
    pub async fn userinfo(
        &self,
        r: &UserInfoRequest<'_>,
        request_id: Option<&str>,
    ) -> Result<serde_json::Map<String, serde_json::Value>, OAuthError> {
        let now = self.clock.now();
        match self.userinfo_claims(r, now).await {
            Ok((claims, user, proof_jti)) => {
                let released = released_claims(&claims, &user);
                let record = userinfo_record(now, &claims, request_id)
                    .detail("claims", released.keys().cloned().collect::<Vec<_>>().join(" "));
                let mut cs = ChangeSet::new();
                if let Some((jti, iat)) = proof_jti {
                    // Single use of the proof (RFC 9449 §11.1), in the table every replica shares.
                    cs = cs.change(Change::RecordDpopProof {
                        jti,
                        expires_at: iat + 2 * super::dpop::WINDOW_SECS,
                    });
                }
                match self.store.commit(cs.audit(record)).await {
                    Ok(()) => Ok(released),
                    Err(StoreError::Duplicate {
                        entity: "dpop proof", ..
                    }) => {
                        let e =
                            OAuthError::new(ErrorCode::InvalidDpopProof, "the DPoP proof was already used (replay)");
                        self.record_userinfo_refusal(now, Some(&claims), &e, request_id).await;
                        Err(e)
                    }
                    Err(e) => Err(e.into()),
                }
            }
            Err((claims, e)) => {
                self.record_userinfo_refusal(now, claims.as_ref(), &e, request_id).await;
                Err(e)
            }
        }
    }

    /// Checks the token and its binding; on success the claims, the user and the proof's
    /// `jti` and `iat` to spend. A refusal carries the token's claims when it verified.
    async fn userinfo_claims(
        &self,
        r: &UserInfoRequest<'_>,
        now: Timestamp,
    ) -> Result<(AccessClaims, std::sync::Arc<User>, Option<(String, i64)>), (Option<AccessClaims>, OAuthError)> {
        let claims = self.verify_access_token(r.token, now).map_err(|_| {
            (
                None,
                invalid_token("the access token is not valid: bad signature, issuer or type, or expired"),
            )
        })?;
        let refuse = |e: OAuthError| (Some(claims.clone()), e);
        if !self.is_sign_in_only(&claims.aud) {
            return Err(refuse(invalid_token(
                "the access token is for an API, not for the UserInfo endpoint: sign the user in without a resource to read her claims",
            )));
        }
        let proof = self.check_binding(r, &claims, now).map_err(refuse)?;
        if !self.is_active_now(&claims, now).await.map_err(refuse)? {
            return Err(refuse(invalid_token(
                "the access token was revoked, or its user or agent is no longer active",
            )));
        }
        let user = match UserId::parse(&claims.sub) {
            Ok(id) => self.reads.user(&UserRef::Id(id)).await.map_err(|e| refuse(e.into()))?,
            Err(_) => None,
        }
        .ok_or_else(|| refuse(invalid_token("the access token's user no longer exists")))?;
        Ok((claims, user, proof))
    }

    /// The token's binding to a key (RFC 9449 §7) or a certificate (RFC 8705 §3) holds for this
    /// request; a bound token is never accepted as a bearer token.
    fn check_binding(
        &self,
        r: &UserInfoRequest<'_>,
        claims: &AccessClaims,
        now: Timestamp,
    ) -> Result<Option<(String, i64)>, OAuthError> {
        let cnf = claims.cnf.as_ref();
        if let Some(x5t) = cnf.and_then(|c| c.x5t_s256.as_deref()) {
            let presented = r
                .client_cert
                .map(|der| sigil_crypto::b64url(&sigil_crypto::sha256(der)));
            if presented.as_deref() != Some(x5t) {
                return Err(invalid_token(
                    "the access token is bound to a client certificate this connection did not present (RFC 8705)",
                ));
            }
        }
        let Some(jkt) = cnf.and_then(|c| c.jkt.as_deref()) else {
            if r.dpop_scheme {
                return Err(invalid_token(
                    "the access token is not DPoP-bound: present it with the Bearer scheme",
                ));
            }
            return Ok(None);
        };
        if !r.dpop_scheme {
            return Err(invalid_token(
                "the access token is DPoP-bound: present it with the DPoP scheme and a proof (RFC 9449 section 7.1)",
            ));
        }
        let proof = r
            .proof
            .ok_or_else(|| OAuthError::new(ErrorCode::InvalidDpopProof, "a DPoP proof is required"))?;
        let check = |n: &str| self.nonce_is_current(n);
        let nonce: Option<&dyn Fn(&str) -> bool> = if self.cfg.dpop_nonce { Some(&check) } else { None };
        let p = super::dpop::verify(proof, r.method, &self.cfg.userinfo_endpoint, now.unix_seconds(), nonce)?;
        let ath = sigil_crypto::b64url(&sigil_crypto::sha256(r.token.as_bytes()));
        if p.ath.as_deref() != Some(ath.as_str()) {
            return Err(OAuthError::new(
                ErrorCode::InvalidDpopProof,
                "the DPoP proof's ath is not the hash of this access token",
            ));
        }
        if p.jkt != jkt {
            return Err(invalid_token(
                "the DPoP proof is signed by another key than the one the access token is bound to",
            ));
        }
        Ok(Some((p.jti, p.iat)))
    }

    /// Audits a request refused before its token could be read: a malformed `Authorization`
    /// or `DPoP` header. (No header, or another scheme, presents no credential: not audited.)
    pub async fn refuse_unreadable_userinfo(&self, e: &OAuthError, request_id: Option<&str>) {
        self.record_userinfo_refusal(self.clock.now(), None, e, request_id)
            .await;
    }

    async fn record_userinfo_refusal(
        &self,
        now: Timestamp,
        claims: Option<&AccessClaims>,
        e: &OAuthError,
        request_id: Option<&str>,
    ) {
        tracing::info!(error = e.code.as_str(), description = e.description, "userinfo refused");
        let record = match claims {
            Some(c) => userinfo_record(now, c, request_id),
            None => AuditRecord::new(
                now,
                EventType::UserInfoRead,
                &Principal::from_stored("anonymous".into()),
                request_id,
            ),
        }
        .outcome(Outcome::Denied, &e.description);
        if let Err(err) = self.store.commit(ChangeSet::new().audit(record)).await {
            tracing::warn!(error = %err, "the refused userinfo request could not be audited");
        }
    }
}

/// The claims the token's scope releases (Core §5.4), `sub` always.
fn released_claims(claims: &AccessClaims, user: &User) -> serde_json::Map<String, serde_json::Value> {
    let has = |s: &str| claims.scope.split(' ').any(|v| v == s);
    let mut out = serde_json::Map::new();
    out.insert("sub".into(), user.id.to_string().into());
    if has("profile") {
        out.insert("preferred_username".into(), user.username.to_string().into());
        if let Some(n) = &user.display_name {
            out.insert("name".into(), n.to_string().into());
        }
    }
    if has("email")
        && let Some(e) = &user.email
    {
        out.insert("email".into(), e.to_string().into());
    }
    out
}

fn userinfo_record(now: Timestamp, claims: &AccessClaims, request_id: Option<&str>) -> AuditRecord {
    // The agent reads the user's claims: it is the actor, as in the token's `act`.
    let mut record = super::delegated_token::record_of_delegated(EventType::UserInfoRead, claims, request_id, now);
    record.auth = Some(AuthEvidence {
        method: "userinfo".into(),
        jti: Some(claims.jti.clone()),
        ..AuthEvidence::default()
    });
    record.scopes = claims
        .scope
        .split(' ')
        .filter(|s| !s.is_empty() && *s != OPENID)
        .map(str::to_owned)
        .collect();
    record
}
