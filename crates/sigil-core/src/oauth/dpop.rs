//! DPoP proofs at the token endpoint (RFC 9449 §4): a JWT signed by the client's key pair, whose
//! public key (`jwk`) the issued token gets bound to via `cnf.jkt`.

use serde::Deserialize;
use sigil_crypto::{ClientAlg, PublicJwk, b64url_decode};

use super::error::{ErrorCode, OAuthError};

/// How far a proof's `iat` may be from now.
pub const WINDOW_SECS: i64 = 60;

#[derive(Deserialize)]
struct Header {
    typ: Option<String>,
    alg: String,
    jwk: Option<PublicJwk>,
}

#[derive(Deserialize)]
struct Claims {
    jti: Option<String>,
    htm: Option<String>,
    htu: Option<String>,
    #[serde(default, deserialize_with = "super::numeric_date::optional")]
    iat: Option<i64>,
    #[serde(default)]
    nonce: Option<String>,
}

/// A proof that checked out: the key thumbprint to bind and the `jti` to record as used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    pub jkt: String,
    pub jti: String,
    pub iat: i64,
}

fn bad(why: impl Into<String>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidDpopProof, why)
}

/// Compares URIs ignoring query and fragment (RFC 9449 §4.3 check 9).
fn same_uri(a: &str, b: &str) -> bool {
    match (url::Url::parse(a), url::Url::parse(b)) {
        (Ok(x), Ok(y)) => {
            x.scheme() == y.scheme()
                && x.host_str() == y.host_str()
                && x.port_or_known_default() == y.port_or_known_default()
                && x.path() == y.path()
        }
        _ => false,
    }
}

/// Checks a proof for a request (`htm`, `htu`) at `now`. `nonce_ok` is `None` when the server
/// does not require nonces, else it says whether a presented nonce is current.
pub fn verify(
    proof: &str,
    htm: &str,
    htu: &str,
    now: i64,
    nonce_ok: Option<&dyn Fn(&str) -> bool>,
) -> Result<Proof, OAuthError> {
    if proof.len() > 8192 {
        return Err(bad("the DPoP proof is too large"));
    }
    let parts: Vec<&str> = proof.split('.').collect();
    let [h, p, s] = parts.as_slice() else {
        return Err(bad("the DPoP proof is not a JWS"));
    };
    let header: Header = serde_json::from_slice(&b64url_decode(h).map_err(|_| bad("malformed DPoP header"))?)
        .map_err(|_| bad("malformed DPoP header"))?;
    if !sigil_crypto::typ_is(header.typ.as_deref(), "dpop+jwt") {
        return Err(bad("the DPoP proof's typ must be dpop+jwt"));
    }
    let alg =
        ClientAlg::parse(&header.alg).ok_or_else(|| bad(format!("DPoP algorithm {:?} is not accepted", header.alg)))?;
    let jwk = header.jwk.ok_or_else(|| bad("the DPoP proof has no jwk"))?;
    jwk.check()
        .map_err(|e| bad(format!("the DPoP proof's jwk is unusable: {e}")))?;
    let sig = b64url_decode(s).map_err(|_| bad("malformed DPoP signature"))?;
    if !jwk.verify(alg, format!("{h}.{p}").as_bytes(), &sig) {
        return Err(bad("the DPoP proof's signature does not verify"));
    }
    let c: Claims = serde_json::from_slice(&b64url_decode(p).map_err(|_| bad("malformed DPoP claims"))?)
        .map_err(|_| bad("malformed DPoP claims"))?;
    let jti = c
        .jti
        .filter(|j| !j.is_empty() && j.len() <= 256)
        .ok_or_else(|| bad("the DPoP proof has no jti"))?;
    if c.htm.as_deref() != Some(htm) {
        return Err(bad("the DPoP proof is for another HTTP method"));
    }
    if !c.htu.as_deref().is_some_and(|u| same_uri(u, htu)) {
        return Err(bad("the DPoP proof is for another URL"));
    }
    let iat = c.iat.ok_or_else(|| bad("the DPoP proof has no iat"))?;
    if (iat - now).abs() > WINDOW_SECS {
        return Err(bad("the DPoP proof's iat is outside the accepted window"));
    }
    if let Some(ok) = nonce_ok
        && !c.nonce.as_deref().is_some_and(ok)
    {
        return Err(OAuthError::new(
            ErrorCode::UseDpopNonce,
            "use the DPoP-Nonce the server provided",
        ));
    }
    let jkt = jwk.thumbprint().map_err(|e| bad(e.to_string()))?;
    Ok(Proof { jkt, jti, iat })
}
