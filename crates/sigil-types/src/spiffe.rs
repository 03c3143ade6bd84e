//! SPIFFE IDs and trust domain names, parsed by the SPIFFE ID specification's rules (§2):
//! `spiffe://` + a trust domain of lowercase letters, digits, `.`, `-`, `_` + an optional path
//! of non-empty segments of letters, digits, `.`, `-`, `_` (not `.` or `..`), with no query,
//! fragment, port, user info or trailing slash; at most 2048 bytes.

use crate::ParseError;

const SCHEME: &str = "spiffe://";
const MAX_ID: usize = 2048;
const MAX_TRUST_DOMAIN: usize = 255;

/// A trust domain name, e.g. `example.org`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let bad = |why: &str| ParseError::new("trust domain", why);
        if s.is_empty() {
            return Err(bad("must not be empty"));
        }
        if s.len() > MAX_TRUST_DOMAIN {
            return Err(bad("must be at most 255 bytes"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
        {
            return Err(bad(
                "may hold only lowercase letters, digits, '.', '-' and '_' (no port, no user info)",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The trust domain's own ID, `spiffe://<td>`.
    pub fn id(&self) -> SpiffeId {
        SpiffeId(format!("{SCHEME}{}", self.0))
    }
}

impl std::fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A SPIFFE ID, e.g. `spiffe://example.org/ns/prod/sa/billing`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId(String);

impl SpiffeId {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let bad = |why: &str| ParseError::new("spiffe id", why);
        if s.len() > MAX_ID {
            return Err(bad("must be at most 2048 bytes"));
        }
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| bad("must start with spiffe:// (lowercase scheme)"))?;
        if s.contains(['?', '#']) {
            return Err(bad("must not have a query or fragment"));
        }
        let (td, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        TrustDomain::parse(td).map_err(|e| bad(&e.why))?;
        if !path.is_empty() {
            for seg in path.split('/').skip(1) {
                if seg.is_empty() {
                    return Err(bad("path segments must not be empty (no trailing or double slash)"));
                }
                if seg == "." || seg == ".." {
                    return Err(bad("path segments must not be '.' or '..'"));
                }
                if !seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
                {
                    return Err(bad("path segments may hold only letters, digits, '.', '-' and '_'"));
                }
            }
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn trust_domain(&self) -> TrustDomain {
        let rest = self.0.get(SCHEME.len()..).unwrap_or_default();
        TrustDomain(rest.split('/').next().unwrap_or_default().to_owned())
    }

    /// The path, empty for a trust domain's own ID.
    pub fn path(&self) -> &str {
        let rest = self.0.get(SCHEME.len()..).unwrap_or_default();
        rest.find('/').and_then(|i| rest.get(i..)).unwrap_or_default()
    }
}

impl std::fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for SpiffeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for SpiffeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn valid_ids() {
        for ok in [
            "spiffe://example.org",
            "spiffe://example.org/ns/prod/sa/billing",
            "spiffe://a-b_c.d/X.y-z_0",
        ] {
            assert_eq!(SpiffeId::parse(ok).unwrap().as_str(), ok);
        }
        let id = SpiffeId::parse("spiffe://example.org/a/b").unwrap();
        assert_eq!(id.trust_domain().as_str(), "example.org");
        assert_eq!(id.path(), "/a/b");
    }

    #[test]
    fn the_specifications_invalid_ids_are_refused() {
        for bad in [
            "",
            "spiffe://",
            "SPIFFE://example.org",
            "https://example.org/a",
            "spiffe://Example.org/a",
            "spiffe://example.org:8080/a",
            "spiffe://user@example.org/a",
            "spiffe://example.org/",
            "spiffe://example.org//a",
            "spiffe://example.org/a/",
            "spiffe://example.org/./a",
            "spiffe://example.org/a/..",
            "spiffe://example.org/a b",
            "spiffe://example.org/a?x=1",
            "spiffe://example.org/a#f",
            "spiffe://example.org/%41",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad}");
        }
        assert!(SpiffeId::parse(&format!("spiffe://example.org/{}", "a".repeat(2100))).is_err());
    }
}
