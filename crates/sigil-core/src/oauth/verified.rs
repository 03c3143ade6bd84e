//! Access tokens already verified, remembered by the digest of their exact bytes: resource
//! servers introspect the same token many times during its few minutes of life, and delegation
//! presents the same subject token for every exchange. A hit skips the signature and the JSON,
//! never the checks that can change — expiry here, revocation and the principals' status in the
//! callers. The memory is tied to the published key set: when it changes (a key retired or
//! removed), everything verified against the old set is forgotten.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sigil_crypto::Jwks;

use super::token::{self, AccessClaims, TokenError};

/// Tokens remembered at most (about 10 MB of claims); when full, the expired ones go, and if
/// none had, all of them. Only tokens that verified are remembered, so nobody can fill it with
/// garbage.
const MAX_REMEMBERED: usize = 20_000;

#[derive(Debug, Default)]
pub(super) struct VerifiedTokens {
    inner: Mutex<Remembered>,
}

#[derive(Debug, Default)]
struct Remembered {
    /// The key set the tokens were verified against.
    against: Option<Arc<Jwks>>,
    tokens: HashMap<[u8; 32], AccessClaims>,
}

impl VerifiedTokens {
    /// [`token::verify`], answered from memory for a token verified before against `jwks`.
    pub(super) fn verify(
        &self,
        token: &str,
        jwks: &Arc<Jwks>,
        issuer: &str,
        now_secs: i64,
    ) -> Result<AccessClaims, TokenError> {
        let digest = sigil_crypto::sha256(token.as_bytes());
        if let Some(claims) = self.recall(&digest, jwks) {
            if claims.iss != issuer {
                return Err(TokenError::Foreign);
            }
            if claims.exp <= now_secs {
                return Err(TokenError::Expired);
            }
            return Ok(claims);
        }
        let claims = token::verify(token, jwks, issuer, now_secs)?;
        self.remember(digest, &claims, now_secs);
        Ok(claims)
    }

    fn recall(&self, digest: &[u8; 32], jwks: &Arc<Jwks>) -> Option<AccessClaims> {
        let mut inner = self.inner.lock().ok()?;
        if !inner.against.as_ref().is_some_and(|a| Arc::ptr_eq(a, jwks)) {
            inner.tokens.clear();
            inner.against = Some(Arc::clone(jwks));
            return None;
        }
        inner.tokens.get(digest).cloned()
    }

    fn remember(&self, digest: [u8; 32], claims: &AccessClaims, now_secs: i64) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if inner.tokens.len() >= MAX_REMEMBERED {
            inner.tokens.retain(|_, c| c.exp > now_secs);
            if inner.tokens.len() >= MAX_REMEMBERED {
                inner.tokens.clear();
            }
        }
        inner.tokens.insert(digest, claims.clone());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use sigil_crypto::{Algorithm, SigningKey};

    use super::*;

    const NOW: i64 = 1_800_000_000;
    const ISS: &str = "https://sigil.example";

    fn claims(exp: i64) -> AccessClaims {
        AccessClaims {
            iss: ISS.into(),
            sub: "agent".into(),
            aud: "https://api.example".into(),
            exp,
            iat: NOW,
            jti: "j1".into(),
            client_id: "c1".into(),
            scope: "read".into(),
            cnf: None,
            act: None,
            may_act: None,
        }
    }

    #[test]
    fn remembered_tokens_still_expire_and_forget_a_changed_key_set() {
        let (key, _) = SigningKey::generate(Algorithm::EdDsa).unwrap();
        let jwks = Arc::new(Jwks {
            keys: vec![key.public_jwk()],
        });
        let token = token::mint(&key, &claims(NOW + 60)).unwrap();
        let verified = VerifiedTokens::default();
        assert_eq!(verified.verify(&token, &jwks, ISS, NOW).unwrap(), claims(NOW + 60));
        // From memory now: still the same claims, and still subject to expiry.
        assert_eq!(verified.verify(&token, &jwks, ISS, NOW + 1).unwrap(), claims(NOW + 60));
        assert_eq!(verified.verify(&token, &jwks, ISS, NOW + 60), Err(TokenError::Expired));
        // Another token's bytes are verified, not recalled: a forged payload fails.
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged_payload = token::mint(&key, &claims(NOW + 600)).unwrap();
        parts[1] = forged_payload.split('.').nth(1).unwrap();
        assert_eq!(
            verified.verify(&parts.join("."), &jwks, ISS, NOW),
            Err(TokenError::Foreign)
        );
        // The key is retired: the new key set does not hold it, so the token is foreign now.
        let (other, _) = SigningKey::generate(Algorithm::EdDsa).unwrap();
        let rotated = Arc::new(Jwks {
            keys: vec![other.public_jwk()],
        });
        assert_eq!(verified.verify(&token, &rotated, ISS, NOW), Err(TokenError::Foreign));
        // A token for another issuer is never accepted, remembered or not.
        assert_eq!(
            verified.verify(&token, &jwks, "https://other", NOW),
            Err(TokenError::Foreign)
        );
        assert!(verified.verify(&token, &jwks, ISS, NOW).is_ok());
        assert_eq!(
            verified.verify(&token, &jwks, "https://other", NOW),
            Err(TokenError::Foreign)
        );
    }
}
