//! OAuth scopes (RFC 6749 §3.3) and sets of them.

use std::collections::BTreeSet;

use crate::ParseError;

/// One scope token: `%x21 / %x23-5B / %x5D-7E` per RFC 6749 §3.3, at most 128 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct Scope(String);

impl Scope {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if s.is_empty() || s.len() > 128 {
            return Err(ParseError::new("scope", "must be 1 to 128 characters long"));
        }
        let allowed = |b: u8| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b);
        if !s.bytes().all(allowed) {
            return Err(ParseError::new(
                "scope",
                "may contain only printable ASCII without spaces, quotes or backslashes",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Most scopes one set may hold.
pub const MAX_SCOPES: usize = 256;

/// A set of scopes. Serialized as a JSON array; `to_oauth_string` gives the space-separated form.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct ScopeSet(BTreeSet<Scope>);

impl ScopeSet {
    pub fn new(scopes: impl IntoIterator<Item = Scope>) -> Result<Self, ParseError> {
        let set: BTreeSet<Scope> = scopes.into_iter().collect();
        if set.len() > MAX_SCOPES {
            return Err(ParseError::new("scopes", format!("at most {MAX_SCOPES} scopes")));
        }
        Ok(Self(set))
    }

    /// Parses the space-delimited `scope` parameter of RFC 6749 §3.3.
    pub fn parse_oauth(s: &str) -> Result<Self, ParseError> {
        Self::new(
            s.split(' ')
                .filter(|p| !p.is_empty())
                .map(Scope::parse)
                .collect::<Result<Vec<_>, _>>()?,
        )
    }

    pub fn to_oauth_string(&self) -> String {
        self.0.iter().map(Scope::as_str).collect::<Vec<_>>().join(" ")
    }

    pub fn contains(&self, scope: &Scope) -> bool {
        self.0.contains(scope)
    }

    pub fn is_subset(&self, other: &ScopeSet) -> bool {
        self.0.is_subset(&other.0)
    }

    pub fn intersection(&self, other: &ScopeSet) -> ScopeSet {
        Self(self.0.intersection(&other.0).cloned().collect())
    }

    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de> serde::Deserialize<'de> for ScopeSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Vec::<Scope>::deserialize(d)?;
        Self::new(v).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc6749_charset() {
        assert!(Scope::parse("read:employees").is_ok());
        assert!(Scope::parse("a b").is_err());
        assert!(Scope::parse("quote\"").is_err());
        assert!(Scope::parse("back\\slash").is_err());
        assert!(Scope::parse("").is_err());
    }

    #[test]
    fn oauth_string_round_trip() {
        let s = ScopeSet::parse_oauth("b a  a").ok();
        assert_eq!(s.map(|s| s.to_oauth_string()), Some("a b".to_owned()));
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_round_trips(s in "\\PC*") {
            if let Ok(set) = ScopeSet::parse_oauth(&s) {
                let again = ScopeSet::parse_oauth(&set.to_oauth_string());
                prop_assert_eq!(again, Ok(set));
            }
        }
    }
}
