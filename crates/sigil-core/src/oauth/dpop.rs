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
    /// RFC 7515 §4.1.11: no extension is understood, so any `crit` invalidates the proof.
    #[serde(default)]
    crit: Option<serde::de::IgnoredAny>,
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
    /// RFC 9449 §4.2: the hash of the access token the proof is presented with (at a resource).
    #[serde(default)]
    ath: Option<String>,
}

/// A proof that checked out: the key thumbprint to bind and the `jti` to record as used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    pub jkt: String,
    pub jti: String,
    pub iat: i64,
    /// The `ath` claim: base64url SHA-256 of the access token, which a resource server checks
    /// (RFC 9449 §7); the token endpoint has no token to compare it with.
    pub ath: Option<String>,
}

fn bad(why: impl Into<String>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidDpopProof, why)
}

/// Compares URIs ignoring query and fragment (RFC 9449 §4.3 check 9).
fn same_uri(a: &str, b: &str) -> bool {
    match (url::Url::parse(a), url::Url::parse(b)) {
        (Ok(x), Ok(y)) => {
            // http(s) URIs carry no userinfo (RFC 9110 §4.2.4).
            x.username().is_empty()
                && x.password().is_none()
                && x.scheme() == y.scheme()
                && x.host_str() == y.host_str()
                && x.port_or_known_default() == y.port_or_known_default()
                && decode_unreserved(x.path()) == decode_unreserved(y.path())
        }
        _ => false,
    }
}

/// RFC 3986 §6.2.2.2: percent-encoded unreserved characters are the characters themselves, so
/// `/%74oken` is `/token` (RFC 9449 §4.3 compares after syntax-based normalisation).
fn decode_unreserved(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let decoded = rest
            .get(at + 1..at + 3)
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .filter(|b| b.is_ascii_alphanumeric() || b"-._~".contains(b));
        match decoded {
            Some(b) => {
                out.push(char::from(b));
                rest = &rest[at + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
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
    if header.crit.is_some() {
        return Err(bad(
            "the DPoP proof lists critical header extensions, which are not supported",
        ));
    }
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
    if let Some(why) = super::jti::unusable(c.jti.as_deref()) {
        return Err(bad(format!("the DPoP proof {why}")));
    }
    let jti = c.jti.unwrap_or_default();
    match c.htm.as_deref() {
        None => return Err(bad("the DPoP proof has no htm")),
        Some(m) if m != htm => return Err(bad("the DPoP proof is for another HTTP method")),
        Some(_) => {}
    }
    match c.htu.as_deref() {
        None => return Err(bad("the DPoP proof has no htu")),
        Some(u) if !same_uri(u, htu) => return Err(bad("the DPoP proof is for another URL")),
        Some(_) => {}
    }
    let iat = c.iat.ok_or_else(|| bad("the DPoP proof has no iat"))?;
    // abs_diff: `iat` is the client's, and i64::MIN must not overflow the subtraction.
    if iat.abs_diff(now) > WINDOW_SECS.unsigned_abs() {
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
    Ok(Proof {
        jkt,
        jti,
        iat,
        ath: c.ath,
    })
}

#[cfg(test)]
mod tests {
    use super::same_uri;

    #[test]
    fn htu_is_compared_after_normalisation_and_without_userinfo() {
        let token = "http://127.0.0.1:8080/token";
        for same in [
            token,
            "http://127.0.0.1:8080/%74oken",
            "HTTP://127.0.0.1:8080/token?x#y",
            "http://127.0.0.1:8080/toke%6E",
        ] {
            assert!(same_uri(same, token), "{same}");
        }
        for other in [
            "http://user:pw@127.0.0.1:8080/token",
            "http://127.0.0.1:8080/token/",
            "http://127.0.0.1:8080/%2Ftoken",
            "https://127.0.0.1:8080/token",
            "http://127.0.0.1:8081/token",
        ] {
            assert!(!same_uri(other, token), "{other}");
        }
    }
}
