//! Sigil's cryptography, on one backend (aws-lc-rs).
//!
//! Private keys never leave this crate as bytes except sealed under the master key: callers hold a
//! [`SigningKey`] and ask it to sign.

mod client_jwk;
mod envelope;
mod error;
mod jwk;
mod jws;
mod keyed_hash;
mod password;
mod signing;
pub mod svid_verify;
pub mod x509;

pub use client_jwk::{ClientAlg, JwkError, PublicJwk, PublicJwks};
pub use envelope::{MasterKey, SealedBlob};
pub use error::CryptoError;
pub use jwk::{Jwk, Jwks};
pub use jws::{JwsError, Verified, sign_compact, typ_is, verify_compact};
pub use keyed_hash::{KeyedHasher, constant_time_eq, sha256};
pub use password::{MAX_PASSWORD_BYTES, dummy_hash, hash_password, verify_password};
pub use signing::{Algorithm, SigningKey, fill_random, random_bytes, random_token};

/// Lower-case hexadecimal, two digits per byte (digests, serial numbers, keyed hashes).
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        for nibble in [b >> 4, b & 0x0f] {
            out.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
        }
    }
    out
}

/// URL-safe base64 without padding, as JOSE uses everywhere (RFC 7515 §2).
pub fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes URL-safe base64 without padding.
pub fn b64url_decode(s: &str) -> Result<Vec<u8>, CryptoError> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| CryptoError::Encoding("invalid base64url"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_two_lower_case_digits_per_byte() {
        assert_eq!(super::hex(&[0x00, 0x0f, 0xa5, 0xff, 0x10]), "000fa5ff10");
        assert_eq!(super::hex(&[]), "");
    }
}
