//! JWT-SVIDs (SPIFFE JWT-SVID specification): `sub` = the SPIFFE ID, `aud` required, `exp`,
//! `iat` and a unique `jti`; JOSE `typ` `JWT`. Signed by the trust domain's JWT authorities —
//! Sigil's signing keys, published in the bundle as `jwt-svid` keys — and validated against them.

use serde::{Deserialize, Serialize};
use sigil_crypto::{Jwks, SigningKey};
use sigil_types::{SpiffeId, TrustDomain};

/// The claims of a JWT-SVID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtSvidClaims {
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    /// Every claim exactly as the token carries it (validated tokens only): what the Workload
    /// API's `ValidateJWTSVID` returns, with nothing filled in.
    #[serde(skip)]
    pub raw: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtSvidError {
    #[error("a JWT-SVID needs at least one audience")]
    NoAudience,
    #[error("the SPIFFE ID is not in this trust domain")]
    ForeignId,
    #[error("not a JWT-SVID signed by a key of this trust domain")]
    BadSignature,
    #[error("the JWT-SVID is malformed: {0}")]
    Malformed(String),
    #[error("the JWT-SVID has expired")]
    Expired,
    #[error("the JWT-SVID is not for this audience")]
    WrongAudience,
    #[error("signing failed")]
    Sign,
}

/// Mints a JWT-SVID for `id`, valid `ttl_secs` from `now`.
pub fn mint(
    key: &SigningKey,
    trust_domain: &TrustDomain,
    id: &SpiffeId,
    audiences: &[String],
    now: i64,
    ttl_secs: i64,
    jti: String,
) -> Result<String, JwtSvidError> {
    if audiences.is_empty() || audiences.iter().any(String::is_empty) {
        return Err(JwtSvidError::NoAudience);
    }
    if id.trust_domain() != *trust_domain || id.path().is_empty() {
        return Err(JwtSvidError::ForeignId);
    }
    let claims = JwtSvidClaims {
        sub: id.to_string(),
        aud: audiences.to_vec(),
        exp: now + ttl_secs,
        iat: now,
        jti,
        raw: serde_json::Map::new(),
    };
    let payload = serde_json::to_vec(&claims).map_err(|_| JwtSvidError::Sign)?;
    sigil_crypto::sign_compact(key, "JWT", &payload).map_err(|_| JwtSvidError::Sign)
}

/// Validates a JWT-SVID for `audience` (the Workload API's `ValidateJWTSVID`): signature by a
/// key of the bundle, a SPIFFE ID subject, `aud` holding the audience, not expired.
pub fn validate(token: &str, keys: &Jwks, audience: &str, now: i64) -> Result<(SpiffeId, JwtSvidClaims), JwtSvidError> {
    if token.len() > 16 * 1024 {
        return Err(JwtSvidError::Malformed("too long".into()));
    }
    only_spiffe_header_members(token)?;
    let v = sigil_crypto::verify_compact(token, keys).map_err(|_| JwtSvidError::BadSignature)?;
    // JWT-SVID §3: `typ`, when present, is `JWT` or `JOSE` — media types (RFC 7515 §4.1.9).
    let typ = v.typ.as_deref();
    if typ.is_some() && !sigil_crypto::typ_is(typ, "JWT") && !sigil_crypto::typ_is(typ, "JOSE") {
        return Err(JwtSvidError::Malformed(format!("typ {}", v.typ.unwrap_or_default())));
    }
    // `aud` may be a string or an array (RFC 7519 §4.1.3).
    let raw: serde_json::Value =
        serde_json::from_slice(&v.payload).map_err(|e| JwtSvidError::Malformed(e.to_string()))?;
    let aud: Vec<String> = match raw.get("aud") {
        Some(serde_json::Value::String(a)) => vec![a.clone()],
        Some(serde_json::Value::Array(list)) => list.iter().filter_map(|a| a.as_str().map(str::to_owned)).collect(),
        _ => return Err(JwtSvidError::NoAudience),
    };
    // NumericDates may carry a fraction (RFC 7519 §2).
    let field = |k: &str| raw.get(k).and_then(crate::oauth::numeric_date::from_value);
    if raw.get("nbf").is_some_and(|n| !n.is_null()) {
        let nbf = field("nbf").ok_or_else(|| JwtSvidError::Malformed("nbf is not a NumericDate".into()))?;
        if nbf > now {
            // RFC 7519 §4.1.5: not to be accepted before then.
            return Err(JwtSvidError::Malformed("not valid yet (nbf is in the future)".into()));
        }
    }
    let claims = JwtSvidClaims {
        sub: raw.get("sub").and_then(|s| s.as_str()).unwrap_or_default().to_owned(),
        aud,
        exp: field("exp").ok_or_else(|| JwtSvidError::Malformed("no exp, or exp is not a NumericDate".into()))?,
        iat: field("iat").unwrap_or_default(),
        jti: raw.get("jti").and_then(|s| s.as_str()).unwrap_or_default().to_owned(),
        raw: raw.as_object().cloned().unwrap_or_default(),
    };
    let id = SpiffeId::parse(&claims.sub).map_err(|e| JwtSvidError::Malformed(e.to_string()))?;
    if claims.exp <= now {
        return Err(JwtSvidError::Expired);
    }
    if !claims.aud.iter().any(|a| a == audience) {
        return Err(JwtSvidError::WrongAudience);
    }
    Ok((id, claims))
}

/// JWT-SVID §2: a header member other than `alg`, `kid` and `typ`, registered or private, must
/// not be there. One that is (`jku`, `x5u`, `jwk`…) would tell a more lenient JOSE library where
/// to fetch another key, so the token is refused before its signature is looked at.
fn only_spiffe_header_members(token: &str) -> Result<(), JwtSvidError> {
    let header = token.split('.').next().unwrap_or_default();
    let bytes = sigil_crypto::b64url_decode(header).map_err(|_| JwtSvidError::Malformed("header".into()))?;
    let members: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(|_| JwtSvidError::Malformed("header is not a JSON object".into()))?;
    match members.keys().find(|k| !matches!(k.as_str(), "alg" | "kid" | "typ")) {
        Some(extra) => Err(JwtSvidError::Malformed(format!(
            "header member `{extra}` is not allowed in a JWT-SVID"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use sigil_crypto::Algorithm;

    /// NumericDates with a fraction are dates (RFC 7519 §2); a future `nbf` is not yet valid.
    #[test]
    fn fractional_dates_count_and_nbf_is_enforced() {
        let (key, _) = SigningKey::generate(Algorithm::Es256).unwrap();
        let keys = Jwks {
            keys: vec![key.public_jwk()],
        };
        let signed =
            |claims: serde_json::Value| sigil_crypto::sign_compact(&key, "JWT", claims.to_string().as_bytes()).unwrap();
        let base = serde_json::json!({"sub": "spiffe://example.org/web", "aud": "api", "exp": 1300.5, "iat": 1000});
        let (_, claims) = validate(&signed(base.clone()), &keys, "api", 1100).unwrap();
        assert_eq!(claims.exp, 1300);
        let mut early = base.clone();
        early["nbf"] = serde_json::json!(1200);
        assert!(matches!(
            validate(&signed(early.clone()), &keys, "api", 1100),
            Err(JwtSvidError::Malformed(_))
        ));
        assert!(validate(&signed(early), &keys, "api", 1250).is_ok());
        let mut bad = base;
        bad["nbf"] = serde_json::json!("soon");
        assert!(matches!(
            validate(&signed(bad), &keys, "api", 1100),
            Err(JwtSvidError::Malformed(_))
        ));
    }

    /// `typ` is a media type: `jwt`, `application/JOSE` pass; another type does not.
    #[test]
    fn typ_is_compared_as_a_media_type() {
        let (key, _) = SigningKey::generate(Algorithm::Es256).unwrap();
        let keys = Jwks {
            keys: vec![key.public_jwk()],
        };
        let claims = serde_json::json!({"sub": "spiffe://example.org/web", "aud": "api", "exp": 1300, "iat": 1000});
        let with_typ = |typ: &str| sigil_crypto::sign_compact(&key, typ, claims.to_string().as_bytes()).unwrap();
        for typ in ["JWT", "jwt", "application/JOSE", "Application/jwt"] {
            assert!(validate(&with_typ(typ), &keys, "api", 1100).is_ok(), "{typ}");
        }
        // The claims as the token has them: no `jti` is invented for a token without one.
        let (_, got) = validate(&with_typ("JWT"), &keys, "api", 1100).unwrap();
        assert_eq!(serde_json::Value::Object(got.raw), claims);
        for typ in ["at+jwt", "application/dpop+jwt", "JWTX"] {
            assert!(
                matches!(
                    validate(&with_typ(typ), &keys, "api", 1100),
                    Err(JwtSvidError::Malformed(_))
                ),
                "{typ}"
            );
        }
    }

    /// A header member JWT-SVID §2 does not describe makes the token invalid, even signed.
    #[test]
    fn header_members_other_than_alg_kid_typ_are_refused() {
        let (key, _) = SigningKey::generate(Algorithm::Es256).unwrap();
        let keys = Jwks {
            keys: vec![key.public_jwk()],
        };
        let claims = serde_json::json!({"sub": "spiffe://example.org/web", "aud": "api", "exp": 1300});
        let with_header = |header: serde_json::Value| {
            let input = format!(
                "{}.{}",
                sigil_crypto::b64url(header.to_string().as_bytes()),
                sigil_crypto::b64url(claims.to_string().as_bytes())
            );
            format!("{input}.{}", sigil_crypto::b64url(&key.sign(input.as_bytes()).unwrap()))
        };
        let plain = serde_json::json!({"alg": "ES256", "kid": key.kid()});
        assert!(validate(&with_header(plain.clone()), &keys, "api", 1100).is_ok());
        for (extra, value) in [
            ("jku", "https://evil.test/jwks"),
            ("x5u", "https://evil.test/c"),
            ("cty", "JWT"),
        ] {
            let mut h = plain.clone();
            h[extra] = serde_json::json!(value);
            assert!(
                matches!(validate(&with_header(h), &keys, "api", 1100), Err(JwtSvidError::Malformed(m)) if m.contains(extra)),
                "{extra}"
            );
        }
    }

    #[test]
    fn minted_svids_validate_only_for_their_audience_and_lifetime() {
        let (key, _) = SigningKey::generate(Algorithm::EdDsa).unwrap();
        let keys = Jwks {
            keys: vec![key.public_jwk()],
        };
        let td = TrustDomain::parse("example.org").unwrap();
        let id = SpiffeId::parse("spiffe://example.org/web").unwrap();
        let t = mint(&key, &td, &id, &["api".into()], 1000, 300, "j1".into()).unwrap();
        let (got, claims) = validate(&t, &keys, "api", 1100).unwrap();
        assert_eq!((got, claims.jti.as_str()), (id.clone(), "j1"));
        assert_eq!(validate(&t, &keys, "other", 1100), Err(JwtSvidError::WrongAudience));
        assert_eq!(validate(&t, &keys, "api", 1300), Err(JwtSvidError::Expired));
        let (other, _) = SigningKey::generate(Algorithm::EdDsa).unwrap();
        let other_keys = Jwks {
            keys: vec![other.public_jwk()],
        };
        assert_eq!(validate(&t, &other_keys, "api", 1100), Err(JwtSvidError::BadSignature));
        assert_eq!(
            mint(&key, &td, &id, &[], 1000, 300, "j".into()),
            Err(JwtSvidError::NoAudience)
        );
        let foreign = SpiffeId::parse("spiffe://other.org/web").unwrap();
        assert_eq!(
            mint(&key, &td, &foreign, &["api".into()], 1000, 300, "j".into()),
            Err(JwtSvidError::ForeignId)
        );
    }
}
