//! Trusted external issuers: enterprise identity providers whose ID tokens and access tokens
//! Sigil accepts as the user in a token exchange, and whose Identity Assertion JWT
//! Authorization Grants (ID-JAG) it redeems. Each names its keys, the audiences its tokens
//! must carry, and the claim that maps its users to Sigil usernames.

use serde::Deserialize;
use serde_json::{Map, Value};
use sigil_crypto::{ClientAlg, PublicJwks};
use sigil_types::Timestamp;

/// An operator-registered identity provider.
#[derive(Debug, Clone, PartialEq)]
pub struct TrustedIssuer {
    pub id: String,
    /// Its `iss` value, compared exactly.
    pub issuer: String,
    pub jwks: Option<PublicJwks>,
    pub jwks_uri: Option<String>,
    /// The claim whose value is the Sigil username of the token's user (e.g. `preferred_username`,
    /// `email`, or `sub` when the IdP's subject identifiers are the usernames).
    pub username_claim: String,
    /// Accepted `aud` values for its ID and access tokens (for example the client id Sigil's
    /// clients have at the IdP). Empty: Sigil's own issuer.
    pub audiences: Vec<String>,
    /// Whether Sigil redeems this issuer's ID-JAGs (RFC 7523 jwt-bearer grant).
    pub accept_id_jag: bool,
    pub created_at: Timestamp,
    pub created_by: String,
}

/// A foreign JWT whose signature verified: its JOSE `typ` and its claims.
#[derive(Debug, Clone)]
pub struct VerifiedJwt {
    pub typ: Option<String>,
    pub claims: Map<String, Value>,
}

impl VerifiedJwt {
    pub fn str(&self, k: &str) -> Option<&str> {
        self.claims.get(k).and_then(Value::as_str)
    }

    /// A NumericDate claim (`exp`, `iat`, `nbf`), fractions allowed.
    pub fn date(&self, k: &str) -> Option<i64> {
        self.claims.get(k).and_then(super::numeric_date::from_value)
    }

    /// The RFC 8693 §4.4 `may_act` claim, if the token has one; `Err` if it is not an object
    /// with `sub` and/or `client_id` strings (an unreadable restriction is not no restriction).
    pub fn may_act(&self) -> Result<Option<super::token::MayAct>, String> {
        match self.claims.get("may_act") {
            None => Ok(None),
            Some(v) => serde_json::from_value(v.clone())
                .map(Some)
                .map_err(|_| "the subject token's may_act claim is malformed".to_owned()),
        }
    }

    /// Whether `aud` (a string or an array) holds one of `accepted`.
    pub fn audience_in(&self, accepted: &[&str]) -> bool {
        match self.claims.get("aud") {
            Some(Value::String(a)) => accepted.contains(&a.as_str()),
            Some(Value::Array(list)) => list.iter().any(|a| a.as_str().is_some_and(|a| accepted.contains(&a))),
            _ => false,
        }
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    /// RFC 7515 §4.1.11: no extension is understood.
    #[serde(default)]
    crit: Option<serde::de::IgnoredAny>,
}

fn part<T: serde::de::DeserializeOwned>(jwt: &str, index: usize) -> Result<T, String> {
    let p = jwt.split('.').nth(index).ok_or("not a compact JWS")?;
    let bytes = sigil_crypto::b64url_decode(p).map_err(|_| "bad base64url")?;
    serde_json::from_slice(&bytes).map_err(|e| format!("bad JSON: {e}"))
}

/// The unverified `iss` of a JWT, to find whose keys to verify it with.
pub fn unverified_issuer(jwt: &str) -> Option<String> {
    if jwt.len() > 16 * 1024 || jwt.split('.').count() != 3 {
        return None;
    }
    // Only `iss` is read: the other claims are skipped, not built into a map (this runs for
    // every token exchanged). An `iss` named twice gives none (RFC 7519 §4). A derived struct
    // would also take a JSON array, which is no claims set: hence the check for an object.
    #[derive(serde::Deserialize)]
    struct Issuer {
        iss: Option<String>,
    }
    let payload = sigil_crypto::b64url_decode(jwt.split('.').nth(1)?).ok()?;
    if payload.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    serde_json::from_slice::<Issuer>(&payload).ok()?.iss
}

/// Verifies a JWT's signature against `keys` (asymmetric algorithms only; `none` and HMAC are
/// refused) and checks `exp` (required) and `nbf`/`iat` against `now` with a minute of skew.
pub fn verify_jwt(jwt: &str, keys: &PublicJwks, now: i64) -> Result<VerifiedJwt, String> {
    if jwt.len() > 16 * 1024 || jwt.split('.').count() != 3 {
        return Err("not a compact JWS".into());
    }
    let header: Header = part(jwt, 0)?;
    if header.crit.is_some() {
        return Err("the JWT lists critical header extensions, which are not supported".into());
    }
    let alg = ClientAlg::parse(&header.alg).ok_or_else(|| format!("algorithm {} is not accepted", header.alg))?;
    let (signing_input, sig) = jwt.rsplit_once('.').ok_or("not a compact JWS")?;
    let sig = sigil_crypto::b64url_decode(sig).map_err(|_| "bad signature encoding")?;
    let verified = keys
        .keys
        .iter()
        .filter(|k| header.kid.is_none() || k.kid == header.kid)
        .filter(|k| k.supports(alg))
        .any(|k| k.verify(alg, signing_input.as_bytes(), &sig));
    if !verified {
        return Err("the signature does not verify with the issuer's keys".into());
    }
    let claims: Map<String, Value> = part(jwt, 1)?;
    let v = VerifiedJwt {
        typ: header.typ,
        claims,
    };
    const SKEW: i64 = 60;
    match v.date("exp") {
        Some(exp) if exp.saturating_add(SKEW) > now => {}
        Some(_) => return Err("expired".into()),
        None => return Err("no exp".into()),
    }
    if v.date("nbf").is_some_and(|n| n > now + SKEW) || v.date("iat").is_some_and(|i| i > now + SKEW) {
        return Err("not valid yet".into());
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::unverified_issuer;

    fn jwt(payload: &str) -> String {
        let enc = sigil_crypto::b64url;
        format!("{}.{}.sig", enc(br#"{"alg":"EdDSA"}"#), enc(payload.as_bytes()))
    }

    #[test]
    fn the_issuer_is_read_from_the_payload_alone() {
        let token = jwt(r#"{"sub":"u","act":{"sub":"a"},"iss":"https://idp.example","exp":1}"#);
        assert_eq!(unverified_issuer(&token).as_deref(), Some("https://idp.example"));
        for payload in [
            r#"{"sub":"u"}"#,
            r#"{"iss":7}"#,
            r#"{"iss":"https://a.example","iss":"https://b.example"}"#,
            r#"["iss"]"#,
            "not json",
        ] {
            assert_eq!(unverified_issuer(&jwt(payload)), None, "{payload}");
        }
        assert_eq!(unverified_issuer("a.b"), None);
    }
}
