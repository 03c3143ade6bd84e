//! The one rule for a `jti` Sigil records as spent (client assertions, DPoP proofs, ID-JAGs).

/// Longest `jti` kept: the replay cache keeps each one until it expires, and an unbounded one
/// would let a client fill it.
pub const MAX_JTI_BYTES: usize = 256;

/// Why `jti` cannot be recorded as spent, if it cannot, as the end of a sentence about the
/// token that carries it ("the DPoP proof …"). A control character is refused too: no
/// legitimate identifier holds one, and PostgreSQL text cannot store NUL, so such a `jti` would
/// otherwise be refused on one backend and accepted on the other.
pub fn unusable(jti: Option<&str>) -> Option<&'static str> {
    match jti {
        None => Some("has no jti"),
        Some(j) if j.trim().is_empty() => Some("has an empty jti"),
        Some(j) if j.len() > MAX_JTI_BYTES => Some("has a jti longer than 256 bytes"),
        Some(j) if j.chars().any(char::is_control) => Some("has a jti with a control character"),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jti_is_printable_non_empty_and_bounded() {
        assert_eq!(unusable(Some("4f2a-ok")), None);
        assert_eq!(unusable(Some(&"x".repeat(MAX_JTI_BYTES))), None);
        assert_eq!(unusable(None), Some("has no jti"));
        assert_eq!(unusable(Some(" ")), Some("has an empty jti"));
        assert_eq!(
            unusable(Some(&"x".repeat(MAX_JTI_BYTES + 1))),
            Some("has a jti longer than 256 bytes")
        );
        assert_eq!(unusable(Some("n\u{0}1")), Some("has a jti with a control character"));
        assert_eq!(unusable(Some("a\nb")), Some("has a jti with a control character"));
    }
}
