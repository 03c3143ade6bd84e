//! Compact JWS (RFC 7515) signing and verification for the algorithms Sigil uses.
//!
//! Signing goes through a [`SigningKey`] (the key never leaves it). Verification takes the
//! algorithm from the key, never from the token header alone: a header naming another algorithm
//! than the key's (`none`, `HS256` with a public key…) is rejected.

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ED25519, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents, UnparsedPublicKey,
};
use serde::Deserialize;

use crate::{Algorithm, CryptoError, Jwk, Jwks, SigningKey, b64url, b64url_decode};

/// Why a JWS did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    #[error("malformed JWS")]
    Malformed,
    #[error("unsupported or mismatched algorithm")]
    Algorithm,
    #[error("unknown key id")]
    UnknownKey,
    #[error("signature does not verify")]
    BadSignature,
}

/// Whether a JOSE `typ` header names `media_type` (given without `application/`): RFC 7515
/// §4.1.9 compares media types without case, and a `typ` without a `/` has `application/`
/// left off.
pub fn typ_is(typ: Option<&str>, media_type: &str) -> bool {
    let Some(typ) = typ else { return false };
    let bare = typ
        .get(..12)
        .filter(|p| p.eq_ignore_ascii_case("application/"))
        .map_or(typ, |_| &typ[12..]);
    bare.eq_ignore_ascii_case(media_type)
}

/// Signs `payload` (already-serialized JSON) as a compact JWS with `typ`.
pub fn sign_compact(key: &SigningKey, typ: &str, payload: &[u8]) -> Result<String, CryptoError> {
    let header = serde_json::json!({ "alg": key.alg().as_str(), "kid": key.kid(), "typ": typ });
    let signing_input = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(payload));
    let sig = key.sign(signing_input.as_bytes())?;
    Ok(format!("{signing_input}.{}", b64url(&sig)))
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    typ: Option<String>,
    /// RFC 7515 §4.1.11: extensions the recipient must understand. Sigil understands none, so a
    /// JWS that lists any is invalid.
    crit: Option<serde::de::IgnoredAny>,
}

/// A verified JWS: its header's `typ` and `kid`, and the payload bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub kid: String,
    pub typ: Option<String>,
    pub payload: Vec<u8>,
}

/// Verifies a compact JWS against the key named by its `kid` in `jwks`.
pub fn verify_compact(jws: &str, jwks: &Jwks) -> Result<Verified, JwsError> {
    let mut parts = jws.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(JwsError::Malformed);
    };
    let header: Header =
        serde_json::from_slice(&b64url_decode(h).map_err(|_| JwsError::Malformed)?).map_err(|_| JwsError::Malformed)?;
    if header.crit.is_some() {
        return Err(JwsError::Malformed);
    }
    let kid = header.kid.ok_or(JwsError::UnknownKey)?;
    let jwk = jwks.keys.iter().find(|k| k.kid == kid).ok_or(JwsError::UnknownKey)?;
    let alg = Algorithm::parse(&header.alg).ok_or(JwsError::Algorithm)?;
    if jwk.alg != alg.as_str() {
        return Err(JwsError::Algorithm);
    }
    let sig = b64url_decode(s).map_err(|_| JwsError::Malformed)?;
    let input = format!("{h}.{p}");
    verify_with(jwk, alg, input.as_bytes(), &sig)?;
    let payload = b64url_decode(p).map_err(|_| JwsError::Malformed)?;
    Ok(Verified {
        kid,
        typ: header.typ,
        payload,
    })
}

fn verify_with(jwk: &Jwk, alg: Algorithm, msg: &[u8], sig: &[u8]) -> Result<(), JwsError> {
    let member = |m: &Option<String>| {
        m.as_deref()
            .ok_or(JwsError::Malformed)
            .and_then(|v| b64url_decode(v).map_err(|_| JwsError::Malformed))
    };
    let ok = match (alg, jwk.kty.as_str(), jwk.crv.as_deref()) {
        (Algorithm::EdDsa, "OKP", Some("Ed25519")) => UnparsedPublicKey::new(&ED25519, member(&jwk.x)?)
            .verify(msg, sig)
            .is_ok(),
        (Algorithm::Es256, "EC", Some("P-256")) => {
            let mut point = Vec::with_capacity(65);
            point.push(4);
            point.extend_from_slice(&member(&jwk.x)?);
            point.extend_from_slice(&member(&jwk.y)?);
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
                .verify(msg, sig)
                .is_ok()
        }
        (Algorithm::Rs256, "RSA", None) => RsaPublicKeyComponents {
            n: member(&jwk.n)?,
            e: member(&jwk.e)?,
        }
        .verify(&RSA_PKCS1_2048_8192_SHA256, msg, sig)
        .is_ok(),
        _ => return Err(JwsError::Algorithm),
    };
    if ok { Ok(()) } else { Err(JwsError::BadSignature) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn typ_is_compared_as_rfc_7515_says() {
        for typ in [
            "oauth-id-jag+jwt",
            "OAuth-ID-JAG+JWT",
            "application/oauth-id-jag+jwt",
            "Application/oauth-id-jag+jwt",
        ] {
            assert!(super::typ_is(Some(typ), "oauth-id-jag+jwt"), "{typ}");
        }
        for typ in [
            "JWT",
            "at+jwt",
            "application/jwt",
            "oauth-id-jag+jwt2",
            "application/",
            "",
            "text/oauth-id-jag+jwt",
        ] {
            assert!(!super::typ_is(Some(typ), "oauth-id-jag+jwt"), "{typ}");
        }
        assert!(!super::typ_is(None, "dpop+jwt"));
    }

    use super::*;

    /// RFC 7515 §4.1.11: a correctly signed JWS that lists critical extensions Sigil does not
    /// understand (it understands none) is invalid.
    #[test]
    fn critical_extensions_are_refused() {
        let (k, _) = SigningKey::generate(Algorithm::Es256).unwrap();
        let jwks = Jwks {
            keys: vec![k.public_jwk()],
        };
        let header = b64url(
            format!(
                r#"{{"alg":"ES256","kid":"{}","crit":["x-unknown"],"x-unknown":true}}"#,
                k.kid()
            )
            .as_bytes(),
        );
        let payload = b64url(br#"{"a":1}"#);
        let sig = k.sign(format!("{header}.{payload}").as_bytes()).unwrap();
        let jws = format!("{header}.{payload}.{}", b64url(&sig));
        assert_eq!(verify_compact(&jws, &jwks), Err(JwsError::Malformed));
        // The same header without crit verifies: the signature itself is good.
        let plain = b64url(format!(r#"{{"alg":"ES256","kid":"{}","x-unknown":true}}"#, k.kid()).as_bytes());
        let sig = k.sign(format!("{plain}.{payload}").as_bytes()).unwrap();
        assert!(verify_compact(&format!("{plain}.{payload}.{}", b64url(&sig)), &jwks).is_ok());
    }

    #[test]
    fn round_trip_and_rejections() {
        for alg in [Algorithm::EdDsa, Algorithm::Es256, Algorithm::Rs256] {
            let (k, _) = SigningKey::generate(alg).unwrap();
            let jwks = Jwks {
                keys: vec![k.public_jwk()],
            };
            let jws = sign_compact(&k, "test+jwt", br#"{"a":1}"#).unwrap();
            let v = verify_compact(&jws, &jwks).unwrap();
            assert_eq!(v.payload, br#"{"a":1}"#);
            assert_eq!(v.typ.as_deref(), Some("test+jwt"));

            let mut parts: Vec<&str> = jws.split('.').collect();
            let forged = b64url(br#"{"a":2}"#);
            parts[1] = &forged;
            assert_eq!(verify_compact(&parts.join("."), &jwks), Err(JwsError::BadSignature));
            let none_header = b64url(format!(r#"{{"alg":"none","kid":"{}"}}"#, k.kid()).as_bytes());
            let p = jws.split('.').nth(1).unwrap();
            assert_eq!(
                verify_compact(&format!("{none_header}.{p}."), &jwks),
                Err(JwsError::Algorithm)
            );
            let hs = b64url(format!(r#"{{"alg":"HS256","kid":"{}"}}"#, k.kid()).as_bytes());
            assert_eq!(
                verify_compact(&format!("{hs}.{p}.AAAA"), &jwks),
                Err(JwsError::Algorithm)
            );
            assert_eq!(verify_compact("a.b", &jwks), Err(JwsError::Malformed));
            assert_eq!(verify_compact(&jws, &Jwks::default()), Err(JwsError::UnknownKey));
        }
    }
}
