//! Public keys that *others* present (client JWKS for `private_key_jwt`, later DPoP proofs):
//! RSA (RS256), EC P-256 (ES256) and Ed25519 (EdDSA), verified with aws-lc-rs.
//!
//! A JWK that carries private members (`d`, `p`, `q`, …) is refused: accepting one would mean a
//! client has published its private key.

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ED25519, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents, UnparsedPublicKey,
};
use serde::{Deserialize, Serialize};

use crate::{b64url, b64url_decode, sha256};

/// The JWS algorithms accepted from clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAlg {
    Rs256,
    Es256,
    EdDsa,
}

impl ClientAlg {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "RS256" => Some(Self::Rs256),
            "ES256" => Some(Self::Es256),
            // RFC 9864 deprecates the polymorphic "EdDSA" for the fully specified "Ed25519";
            // clients send either (oauth4webapi sends "Ed25519").
            "EdDSA" | "Ed25519" => Some(Self::EdDsa),
            _ => None,
        }
    }

    pub const ALL: &'static [&'static str] = &["RS256", "ES256", "EdDSA", "Ed25519"];
}

/// A public JWK as clients publish it (RFC 7517 / 7518 / 8037).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicJwk {
    pub kty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    /// RFC 7517 §4.3: what the key may be used for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ops: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// Private members are captured only to refuse them.
    #[serde(default, skip_serializing)]
    pub d: Option<String>,
    #[serde(default, skip_serializing)]
    pub p: Option<String>,
}

/// A client's JWK Set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicJwks {
    pub keys: Vec<PublicJwk>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwkError {
    #[error("the JWK contains private key material")]
    Private,
    #[error("unsupported key type or curve")]
    Unsupported,
    #[error("malformed key")]
    Malformed,
    #[error("an RSA key must have 2048 to 8192 bits (RFC 7518 section 3.3)")]
    RsaSize,
    #[error("the key names an alg Sigil does not verify with its key type")]
    AlgMismatch,
}

impl PublicJwk {
    /// Checks the key is public and of a supported kind.
    pub fn check(&self) -> Result<(), JwkError> {
        if self.d.is_some() || self.p.is_some() {
            return Err(JwkError::Private);
        }
        if !self.for_signatures() {
            // An encryption key may sit in a client's or an IdP's JWK Set; it is kept and never
            // used to verify anything.
            return Ok(());
        }
        let bytes = |v: &Option<String>| v.as_deref().and_then(|v| b64url_decode(v).ok());
        let fits = match (self.kty.as_str(), self.crv.as_deref()) {
            ("RSA", _) => {
                let (Some(n), Some(_)) = (bytes(&self.n), bytes(&self.e)) else {
                    return Err(JwkError::Malformed);
                };
                let significant = n.iter().skip_while(|b| **b == 0).count();
                if !(256..=1024).contains(&significant) {
                    return Err(JwkError::RsaSize);
                }
                ClientAlg::Rs256
            }
            ("EC", Some("P-256"))
                if bytes(&self.x).map(|x| x.len()) == Some(32) && bytes(&self.y).map(|y| y.len()) == Some(32) =>
            {
                ClientAlg::Es256
            }
            ("OKP", Some("Ed25519")) if bytes(&self.x).map(|x| x.len()) == Some(32) => ClientAlg::EdDsa,
            ("EC" | "OKP", _) => return Err(JwkError::Malformed),
            _ => return Err(JwkError::Unsupported),
        };
        // RFC 7517 §4.4: a key that names an algorithm is used with that one only.
        if self.alg.as_deref().is_some_and(|a| ClientAlg::parse(a) != Some(fits)) {
            return Err(JwkError::AlgMismatch);
        }
        Ok(())
    }

    /// Whether this key can verify `alg` (and its own `alg`, if it names one, agrees).
    pub fn supports(&self, alg: ClientAlg) -> bool {
        let kind = matches!(
            (alg, self.kty.as_str(), self.crv.as_deref()),
            (ClientAlg::Rs256, "RSA", _)
                | (ClientAlg::Es256, "EC", Some("P-256"))
                | (ClientAlg::EdDsa, "OKP", Some("Ed25519"))
        );
        let named = self.alg.as_deref().is_none_or(|a| ClientAlg::parse(a) == Some(alg));
        kind && named && self.for_signatures()
    }

    /// Whether the key is for verifying signatures: `use` (if given) is `sig`, `key_ops` (if
    /// given) allow `verify` (RFC 7517 §4.2, §4.3), and `alg` (if given) is no encryption
    /// algorithm (RFC 7518 §4.1).
    pub fn for_signatures(&self) -> bool {
        const ENCRYPTION: [&str; 7] = ["RSA1_5", "RSA-OAEP", "ECDH-ES", "A128", "A192", "A256", "dir"];
        self.use_.as_deref().is_none_or(|u| u == "sig")
            && self
                .key_ops
                .as_ref()
                .is_none_or(|ops| ops.iter().any(|o| o == "verify"))
            && self
                .alg
                .as_deref()
                .is_none_or(|a| !ENCRYPTION.iter().any(|e| a.starts_with(e)))
    }

    /// Verifies `sig` over `msg` with `alg`.
    pub fn verify(&self, alg: ClientAlg, msg: &[u8], sig: &[u8]) -> bool {
        if self.check().is_err() || !self.supports(alg) {
            return false;
        }
        let dec = |v: &Option<String>| v.as_deref().and_then(|s| b64url_decode(s).ok());
        match alg {
            ClientAlg::Rs256 => match (dec(&self.n), dec(&self.e)) {
                (Some(n), Some(e)) => RsaPublicKeyComponents { n: &n, e: &e }
                    .verify(&RSA_PKCS1_2048_8192_SHA256, msg, sig)
                    .is_ok(),
                _ => false,
            },
            ClientAlg::Es256 => match (dec(&self.x), dec(&self.y)) {
                (Some(x), Some(y)) if x.len() == 32 && y.len() == 32 => {
                    let mut point = Vec::with_capacity(65);
                    point.push(4);
                    point.extend_from_slice(&x);
                    point.extend_from_slice(&y);
                    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
                        .verify(msg, sig)
                        .is_ok()
                }
                _ => false,
            },
            ClientAlg::EdDsa => match dec(&self.x) {
                Some(x) if x.len() == 32 => UnparsedPublicKey::new(&ED25519, &x).verify(msg, sig).is_ok(),
                _ => false,
            },
        }
    }

    /// The JWK SHA-256 thumbprint (RFC 7638), base64url: the required members in lexicographic
    /// order, no whitespace.
    pub fn thumbprint(&self) -> Result<String, JwkError> {
        self.check()?;
        let s = |v: &Option<String>| v.clone().unwrap_or_default();
        let canonical = match self.kty.as_str() {
            "RSA" => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, s(&self.e), s(&self.n)),
            "EC" => format!(
                r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
                s(&self.crv),
                s(&self.x),
                s(&self.y)
            ),
            "OKP" => format!(r#"{{"crv":"{}","kty":"OKP","x":"{}"}}"#, s(&self.crv), s(&self.x)),
            _ => return Err(JwkError::Unsupported),
        };
        Ok(b64url(&sha256(canonical.as_bytes())))
    }
}

impl From<&crate::Jwk> for PublicJwk {
    fn from(j: &crate::Jwk) -> Self {
        Self {
            kty: j.kty.clone(),
            kid: Some(j.kid.clone()),
            alg: Some(j.alg.clone()),
            use_: Some(j.use_.clone()),
            key_ops: None,
            crv: j.crv.clone(),
            x: j.x.clone(),
            y: j.y.clone(),
            n: j.n.clone(),
            e: j.e.clone(),
            d: None,
            p: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7638_thumbprint_example() {
        // RFC 7638 §3.1.
        let jwk: PublicJwk = serde_json::from_str(r#"{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"}"#).unwrap();
        assert_eq!(jwk.thumbprint().unwrap(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn private_keys_are_refused() {
        let jwk: PublicJwk = serde_json::from_str(r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}"#).unwrap();
        assert_eq!(jwk.check(), Err(JwkError::Private));
    }

    #[test]
    fn short_rsa_keys_and_algs_for_another_key_type_are_refused() {
        let rsa = |bytes: usize| PublicJwk {
            kty: "RSA".into(),
            kid: None,
            alg: None,
            use_: None,
            key_ops: None,
            crv: None,
            x: None,
            y: None,
            n: Some(b64url(&vec![0xc5; bytes])),
            e: Some("AQAB".into()),
            d: None,
            p: None,
        };
        assert_eq!(rsa(128).check(), Err(JwkError::RsaSize));
        assert_eq!(rsa(256).check(), Ok(()));
        let ed: PublicJwk =
            serde_json::from_str(r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#)
                .unwrap();
        assert_eq!(ed.check(), Ok(()));
        let named_rs256 = PublicJwk {
            alg: Some("RS256".into()),
            ..ed.clone()
        };
        assert_eq!(named_rs256.check(), Err(JwkError::AlgMismatch));
        let short_x = PublicJwk {
            x: Some(b64url(&[1; 16])),
            ..ed
        };
        assert_eq!(short_x.check(), Err(JwkError::Malformed));
        let for_encryption: PublicJwk = serde_json::from_str(
            r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","key_ops":["encrypt"]}"#,
        )
        .unwrap();
        // Kept in a set (a client or an IdP may publish encryption keys), never used to verify.
        assert_eq!(for_encryption.check(), Ok(()));
        assert!(!for_encryption.supports(ClientAlg::EdDsa));
        let enc_use = PublicJwk {
            key_ops: None,
            use_: Some("enc".into()),
            ..for_encryption.clone()
        };
        assert!(!enc_use.supports(ClientAlg::EdDsa));
        let oaep = PublicJwk {
            key_ops: None,
            alg: Some("RSA-OAEP-256".into()),
            ..for_encryption
        };
        assert_eq!(oaep.check(), Ok(()));
        assert!(!oaep.for_signatures());
    }

    #[test]
    fn verifies_our_own_signatures_and_rejects_mismatched_algs() {
        let (k, _) = crate::SigningKey::generate(crate::Algorithm::EdDsa).unwrap();
        let pj = PublicJwk::from(&k.public_jwk());
        let sig = k.sign(b"m").unwrap();
        assert!(pj.verify(ClientAlg::EdDsa, b"m", &sig));
        assert!(!pj.verify(ClientAlg::Es256, b"m", &sig));
        assert!(!pj.verify(ClientAlg::EdDsa, b"n", &sig));
    }
}
