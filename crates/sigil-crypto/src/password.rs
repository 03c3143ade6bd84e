//! Human passwords: Argon2id with the RFC 9106 / OWASP second recommended parameters (19 MiB,
//! two passes, one lane), stored as a PHC string so the parameters can be raised later without
//! invalidating stored hashes.

use argon2::{Argon2, PasswordHasher, PasswordVerifier};

use crate::CryptoError;

/// Longest password accepted: hashing cost must not be driven by the attacker's input size.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Hashes a password with a fresh random salt; returns the PHC string.
pub fn hash_password(password: &str) -> Result<String, CryptoError> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(CryptoError::Encoding("password too long"));
    }
    let salt = crate::random_bytes::<16>()?;
    Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| CryptoError::Random)
}

/// Checks a password against a stored PHC string. Any error (including a malformed hash) is a
/// mismatch.
pub fn verify_password(password: &str, phc: &str) -> bool {
    password.len() <= MAX_PASSWORD_BYTES && Argon2::default().verify_password(password.as_bytes(), phc).is_ok()
}

/// A hash that no password matches, computed once, so checking a login for an unknown user
/// costs the same as for a known one (no user enumeration by timing).
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("sigil-no-user-has-this-password").unwrap_or_default())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_mismatch() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("correct horse", "not a hash"));
        assert!(!verify_password("x", dummy_hash()));
    }
}
