//! JWT access tokens per RFC 9068.

use serde::{Deserialize, Serialize};
use sigil_crypto::{Jwks, SigningKey};

/// The JOSE `typ` of an RFC 9068 access token.
pub const AT_TYP: &str = "at+jwt";

/// RFC 9068 §2.2 claims. For the client credentials grant `sub` is the identity (agent or
/// workload) the client belongs to — the principal that policy and audit reason about. For a
/// delegated token `sub` is the user and `act` the chain of agents acting for her.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub client_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
    /// RFC 9449 §6.1: the DPoP key the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
    /// RFC 8693 §4.1: the current actor, with the earlier ones nested inside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Actor>,
    /// RFC 8693 §4.4: who may act for the subject of this token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub may_act: Option<MayAct>,
}

/// An RFC 8693 §4.1 `act` claim. Sigil's actors are agents and workloads: `sub` is the
/// identity's id and `client_id` the client it authenticated with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Box<Actor>>,
}

impl Actor {
    /// How many actors the chain holds.
    pub fn depth(&self) -> usize {
        1 + self.act.as_ref().map_or(0, |a| a.depth())
    }

    /// The actors from the one closest to the user (innermost) to the current one (outermost).
    pub fn chain_from_user(&self) -> Vec<&Actor> {
        let mut out = vec![self];
        let mut cur = self;
        while let Some(inner) = cur.act.as_deref() {
            out.push(inner);
            cur = inner;
        }
        out.reverse();
        out
    }

    /// A new outer actor with `inner` (the previous chain, if any) nested inside.
    pub fn wrap(sub: String, client_id: String, inner: Option<Actor>) -> Self {
        Self {
            sub,
            client_id: Some(client_id),
            act: inner.map(Box::new),
        }
    }
}

/// An RFC 8693 §4.4 `may_act` claim: the party allowed to act for the token's subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MayAct {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The issuer of `sub` (RFC 8693 §4.1: `iss` and `sub` together name a party); the actors
    /// Sigil adds are its own identities, so only Sigil's issuer can name one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// What a token is bound to (`cnf`): a DPoP key (RFC 9449 `jkt`) and/or a client certificate
/// (RFC 8705 `x5t#S256`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jkt: Option<String>,
    #[serde(rename = "x5t#S256", default, skip_serializing_if = "Option::is_none")]
    pub x5t_s256: Option<String>,
}

impl Confirmation {
    /// `None` when the token is bound to nothing (a bearer token).
    pub fn of(jkt: Option<String>, x5t_s256: Option<String>) -> Option<Self> {
        (jkt.is_some() || x5t_s256.is_some()).then_some(Self { jkt, x5t_s256 })
    }
}

/// Signs claims as a compact JWS with `typ` `at+jwt` (RFC 9068 §2.1).
pub fn mint(key: &SigningKey, claims: &AccessClaims) -> Result<String, sigil_crypto::CryptoError> {
    let payload = serde_json::to_vec(claims).map_err(|_| sigil_crypto::CryptoError::Sign)?;
    sigil_crypto::sign_compact(key, AT_TYP, &payload)
}

/// Why one of our tokens is not (or no longer) valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a token issued by this server")]
    Foreign,
    #[error("expired")]
    Expired,
}

/// Verifies a token's signature against our published keys and its RFC 9068 shape; the caller
/// still checks revocation and the identity's status.
pub fn verify(token: &str, jwks: &Jwks, issuer: &str, now_secs: i64) -> Result<AccessClaims, TokenError> {
    if token.len() > 8192 {
        return Err(TokenError::Foreign);
    }
    let v = sigil_crypto::verify_compact(token, jwks).map_err(|_| TokenError::Foreign)?;
    if v.typ.as_deref() != Some(AT_TYP) {
        return Err(TokenError::Foreign);
    }
    let claims: AccessClaims = serde_json::from_slice(&v.payload).map_err(|_| TokenError::Foreign)?;
    if claims.iss != issuer {
        return Err(TokenError::Foreign);
    }
    if claims.exp <= now_secs {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}
