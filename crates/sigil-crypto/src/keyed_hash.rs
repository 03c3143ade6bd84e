//! Keyed hashes for high-entropy generated secrets (admin credentials, client secrets).
//!
//! A slow password hash buys nothing for a 256-bit random secret; an HMAC under a server key
//! means a leaked table alone cannot be used to test guesses.

use aws_lc_rs::hmac;

/// HMAC-SHA256 under a key derived from the master key for one purpose.
pub struct KeyedHasher(hmac::Key);

impl std::fmt::Debug for KeyedHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyedHasher(…)")
    }
}

impl KeyedHasher {
    pub fn new(master: &crate::MasterKey, purpose: &str) -> Self {
        let k = master.derive(purpose);
        Self(hmac::Key::new(hmac::HMAC_SHA256, k.as_ref()))
    }

    /// The hex digest stored in place of the secret.
    pub fn hash_hex(&self, secret: &[u8]) -> String {
        crate::hex(hmac::sign(&self.0, secret).as_ref())
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
