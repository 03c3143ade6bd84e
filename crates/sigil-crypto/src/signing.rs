//! Signing keys: Ed25519 (default) and ECDSA P-256, and RSA 2048 for the ID tokens OpenID Connect
//! requires to be signed RS256; each with a random `kid`.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use zeroize::Zeroizing;

use crate::{CryptoError, Jwk, b64url};

/// JWS algorithms Sigil signs with (RFC 7518 / RFC 8037 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    EdDsa,
    Es256,
    Rs256,
}

impl Algorithm {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::EdDsa => "EdDSA",
            Self::Es256 => "ES256",
            Self::Rs256 => "RS256",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "EdDSA" => Some(Self::EdDsa),
            "ES256" => Some(Self::Es256),
            "RS256" => Some(Self::Rs256),
            _ => None,
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

enum Pair {
    Ed(Ed25519KeyPair),
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A private signing key held in memory. It signs; it never hands out its private bytes.
pub struct SigningKey {
    kid: String,
    alg: Algorithm,
    pair: Pair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Makes a new key with a fresh random `kid` (never reuse a `kid`: JWKS caches in clients
    /// would keep serving the old key under it). Returns the PKCS#8 bytes for sealing, in the v1
    /// form every library reads (OpenSSL 3.0 and Python's `cryptography` refuse aws-lc's v2
    /// Ed25519 documents, and `sigil client keygen` hands these bytes to clients).
    pub fn generate(alg: Algorithm) -> Result<(Self, Zeroizing<Vec<u8>>), CryptoError> {
        let rng = SystemRandom::new();
        let random = |_| CryptoError::Random;
        let pkcs8 = match alg {
            Algorithm::EdDsa => Ed25519KeyPair::generate_pkcs8v1(&rng)
                .map_err(random)?
                .as_ref()
                .to_vec(),
            Algorithm::Es256 => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(random)?
                .as_ref()
                .to_vec(),
            Algorithm::Rs256 => RsaKeyPair::generate(KeySize::Rsa2048)
                .and_then(|k| k.as_der())
                .map_err(random)?
                .as_ref()
                .to_vec(),
        };
        let bytes = Zeroizing::new(pkcs8);
        let kid = b64url(&random_bytes::<16>()?);
        let key = Self::from_pkcs8(kid, alg, &bytes)?;
        Ok((key, bytes))
    }

    /// Loads a key from its PKCS#8 DER form (as unsealed from storage).
    pub fn from_pkcs8(kid: String, alg: Algorithm, pkcs8: &[u8]) -> Result<Self, CryptoError> {
        let pair = match alg {
            Algorithm::EdDsa => {
                Pair::Ed(Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| CryptoError::KeyFormat("ed25519 pkcs8"))?)
            }
            Algorithm::Es256 => Pair::Ec(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
                    .map_err(|_| CryptoError::KeyFormat("p-256 pkcs8"))?,
            ),
            Algorithm::Rs256 => {
                Pair::Rsa(RsaKeyPair::from_pkcs8(pkcs8).map_err(|_| CryptoError::KeyFormat("rsa pkcs8"))?)
            }
        };
        Ok(Self { kid, alg, pair })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// Signs `msg`. ES256 signatures are the fixed-width `r || s` form JWS needs (RFC 7518 §3.4).
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match &self.pair {
            Pair::Ed(k) => Ok(k.sign(msg).as_ref().to_vec()),
            Pair::Ec(k) => k
                .sign(&SystemRandom::new(), msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| CryptoError::Sign),
            Pair::Rsa(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), msg, &mut sig)
                    .map_err(|_| CryptoError::Sign)?;
                Ok(sig)
            }
        }
    }

    /// The public half as a JWK (RFC 7517; OKP per RFC 8037, EC per RFC 7518 §6.2, RSA per §6.3).
    pub fn public_jwk(&self) -> Jwk {
        let jwk = |kty: &str| Jwk {
            kty: kty.into(),
            kid: self.kid.clone(),
            alg: self.alg.as_str().into(),
            use_: "sig".into(),
            ..Jwk::default()
        };
        match &self.pair {
            Pair::Ed(k) => Jwk {
                crv: Some("Ed25519".into()),
                x: Some(b64url(k.public_key().as_ref())),
                ..jwk("OKP")
            },
            Pair::Ec(k) => {
                // Uncompressed point: 0x04 || x (32) || y (32).
                let point = k.public_key().as_ref();
                let x = point.get(1..33).unwrap_or_default();
                let y = point.get(33..65).unwrap_or_default();
                Jwk {
                    crv: Some("P-256".into()),
                    x: Some(b64url(x)),
                    y: Some(b64url(y)),
                    ..jwk("EC")
                }
            }
            Pair::Rsa(k) => Jwk {
                n: Some(b64url(k.public_key().modulus().big_endian_without_leading_zero())),
                e: Some(b64url(k.public_key().exponent().big_endian_without_leading_zero())),
                ..jwk("RSA")
            },
        }
    }
}

/// `N` bytes from the system's CSPRNG.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut b = [0u8; N];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| CryptoError::Random)?;
    Ok(b)
}

/// Fills `buf` from the system's CSPRNG.
pub fn fill_random(buf: &mut [u8]) -> Result<(), CryptoError> {
    aws_lc_rs::rand::fill(buf).map_err(|_| CryptoError::Random)
}

/// A generated secret: a recognisable prefix (so secret scanners find leaks) and 256 random bits.
pub fn random_token(prefix: &str) -> Result<Zeroizing<String>, CryptoError> {
    let bytes = Zeroizing::new(random_bytes::<32>()?);
    Ok(Zeroizing::new(format!("{prefix}{}", b64url(bytes.as_ref()))))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn every_algorithm_survives_its_pkcs8_round_trip() -> Result<(), CryptoError> {
        for (alg, kty) in [
            (Algorithm::EdDsa, "OKP"),
            (Algorithm::Es256, "EC"),
            (Algorithm::Rs256, "RSA"),
        ] {
            let (key, pkcs8) = SigningKey::generate(alg)?;
            let again = SigningKey::from_pkcs8(key.kid().to_owned(), alg, &pkcs8)?;
            assert_eq!(again.public_jwk(), key.public_jwk());
            let jwk = key.public_jwk();
            assert_eq!((jwk.kty.as_str(), jwk.alg.as_str()), (kty, alg.as_str()));
            assert_eq!(jwk.n.is_some(), alg == Algorithm::Rs256, "only RSA keys carry n");
            assert_eq!(jwk.x.is_some(), alg != Algorithm::Rs256, "RSA keys carry no x");
            assert!(Algorithm::parse(alg.as_str()) == Some(alg));
        }
        Ok(())
    }

    #[test]
    fn kids_are_fresh() -> Result<(), CryptoError> {
        let (a, _) = SigningKey::generate(Algorithm::EdDsa)?;
        let (b, _) = SigningKey::generate(Algorithm::EdDsa)?;
        assert_ne!(a.kid(), b.kid());
        Ok(())
    }

    #[test]
    fn tokens_have_prefix_and_entropy() -> Result<(), CryptoError> {
        let t = random_token("sigil_admin_")?;
        assert!(t.starts_with("sigil_admin_"));
        assert_eq!(t.len(), "sigil_admin_".len() + 43);
        Ok(())
    }
}
