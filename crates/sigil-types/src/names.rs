//! Names, labels and free text, each checked once when parsed.

use std::collections::BTreeMap;

use crate::{IdentityId, ParseError, ResourceId};

/// Defines a string newtype whose only constructor is `parse`, with serde going through it.
macro_rules! parsed_string {
    ($(#[$doc:meta])* $name:ident, $what:literal, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, ParseError> {
                let check: fn(&str) -> Result<String, String> = $check;
                check(s).map(Self).map_err(|why| ParseError::new($what, why))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

fn check_chars(s: &str, min: usize, max: usize, allowed: fn(char) -> bool) -> Result<(), String> {
    let len = s.chars().count();
    if len < min || len > max {
        return Err(format!("must be {min} to {max} characters long"));
    }
    match s.chars().find(|c| !allowed(*c)) {
        Some(c) => Err(format!("character {c:?} is not allowed")),
        None => Ok(()),
    }
}

fn starts_alphanumeric(s: &str) -> Result<(), String> {
    match s.chars().next() {
        Some(c) if c.is_ascii_alphanumeric() => Ok(()),
        _ => Err("must start with a letter or digit".into()),
    }
}

parsed_string!(
    /// The name of an agent, workload or resource: lowercase, DNS-label-like, unique in its
    /// namespace. It may never have the shape of a Sigil id, so "name or id" is never ambiguous.
    Name, "name", |s| {
        check_chars(s, 1, 63, |c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))?;
        starts_alphanumeric(s)?;
        if IdentityId::looks_like(s) || ResourceId::looks_like(s) {
            return Err("must not have the form of a sigil id".into());
        }
        Ok(s.to_owned())
    }
);

parsed_string!(
    /// A human's login name. Case-insensitive: stored lowercase.
    Username, "username", |s| {
        check_chars(s, 1, 64, |c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | '+'))?;
        starts_alphanumeric(s)?;
        if crate::UserId::looks_like(s) {
            return Err("must not have the form of a user id".into());
        }
        Ok(s.to_ascii_lowercase())
    }
);

parsed_string!(
    /// An e-mail address, checked for shape only (`local@domain`, no spaces, at most 254 bytes).
    Email, "email", |s| {
        if s.len() > 254 {
            return Err("must be at most 254 bytes".into());
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must not contain spaces or control characters".into());
        }
        match s.split_once('@') {
            Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@') => {
                Ok(s.to_owned())
            }
            _ => Err("must have the form local@domain".into()),
        }
    }
);

fn group_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/')
}

fn check_text(s: &str, max: usize) -> Result<String, String> {
    if s.chars().count() > max {
        return Err(format!("must be at most {max} characters long"));
    }
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err("must not contain control characters".into());
    }
    if s.chars().any(is_bidi_control) {
        return Err("must not contain bidirectional text controls".into());
    }
    Ok(s.to_owned())
}

/// Unicode bidirectional overrides, embeddings, isolates and marks: in text an operator reads
/// (the CLI, the consent page, the audit trail) they reorder what is shown, so a description
/// could display as something other than what it says ("Trojan Source", CVE-2021-42574).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

parsed_string!(
    /// A free-text description (at most 1024 characters, no control characters but newline and tab).
    Description, "description", |s| check_text(s, 1024)
);

parsed_string!(
    /// Why an operator changed an identity's status (at most 1024 characters, like a description).
    Reason, "reason", |s| check_text(s, 1024)
);

parsed_string!(
    /// A person's display name (at most 256 characters).
    DisplayName, "display name", |s| check_text(s, 256)
);

parsed_string!(
    /// A group a user belongs to (e.g. `hr`, `eng/devops`).
    Group, "group", |s| {
        check_chars(s, 1, 128, group_char)?;
        Ok(s.to_owned())
    }
);

parsed_string!(
    /// The team that runs an identity.
    TeamName, "team", |s| {
        check_chars(s, 1, 128, group_char)?;
        Ok(s.to_owned())
    }
);

parsed_string!(
    /// A label key: lowercase, may carry a `/`-separated prefix (`env`, `sigil.dev/tier`).
    LabelKey, "label key", |s| {
        check_chars(s, 1, 63, |c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.' | '/'))?;
        starts_alphanumeric(s)?;
        Ok(s.to_owned())
    }
);

parsed_string!(
    /// A label value (may be empty).
    LabelValue, "label value", |s| {
        check_chars(s, 0, 63, |c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/' | '@'))?;
        Ok(s.to_owned())
    }
);

/// Most labels one identity may carry; keeps rows and filters bounded.
pub const MAX_LABELS: usize = 64;

/// An identity's labels, sorted by key.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct Labels(BTreeMap<LabelKey, LabelValue>);

impl Labels {
    pub fn new(map: BTreeMap<LabelKey, LabelValue>) -> Result<Self, ParseError> {
        if map.len() > MAX_LABELS {
            return Err(ParseError::new("labels", format!("at most {MAX_LABELS} labels")));
        }
        Ok(Self(map))
    }

    /// Parses `key=value` pairs, as given on the command line or in a filter.
    pub fn parse_pair(s: &str) -> Result<(LabelKey, LabelValue), ParseError> {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| ParseError::new("label", "expected key=value"))?;
        Ok((LabelKey::parse(k)?, LabelValue::parse(v)?))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&LabelKey, &LabelValue)> {
        self.0.iter()
    }

    pub fn get(&self, key: &LabelKey) -> Option<&LabelValue> {
        self.0.get(key)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de> serde::Deserialize<'de> for Labels {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<LabelKey, LabelValue>::deserialize(d)?;
        Self::new(map).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_names() {
        assert!(Name::parse("hr-assistant").is_ok());
        assert!(Name::parse("a").is_ok());
        assert!(Name::parse("").is_err());
        assert!(Name::parse("-x").is_err());
        assert!(Name::parse("Upper").is_err());
        assert!(Name::parse("has space").is_err());
        assert!(Name::parse(&"x".repeat(64)).is_err());
        let id = IdentityId::generate(1, [1; 10]);
        assert!(Name::parse(id.as_str()).is_err());
    }

    #[test]
    fn usernames_are_lowercased() {
        assert_eq!(Username::parse("Alice").map(|u| u.0), Ok("alice".to_owned()));
        assert!(Username::parse("bob smith").is_err());
    }

    #[test]
    fn emails_and_labels() {
        assert!(Email::parse("a@b").is_ok());
        assert!(Email::parse("@b").is_err());
        assert!(Email::parse("a@b@c").is_err());
        assert!(Labels::parse_pair("env=prod").is_ok());
        assert!(Labels::parse_pair("env").is_err());
        assert!(Labels::parse_pair("Env=prod").is_err());
    }

    #[test]
    fn free_text_refuses_controls_and_bidi_overrides() {
        assert!(Description::parse("line one\n\tline two, café ✓").is_ok());
        assert!(
            Description::parse("family 👨\u{200D}👩\u{200D}👧").is_ok(),
            "a joiner is not a control"
        );
        for bad in ["bell\u{7}", "read \u{202E}etirw", "x\u{2066}y", "mark\u{200F}"] {
            assert!(Description::parse(bad).is_err(), "{bad:?}");
        }
        assert!(DisplayName::parse("\u{202E}nimda").is_err());
    }

    #[test]
    fn labels_reject_unknown_shapes_in_json() {
        let ok: Result<Labels, _> = serde_json::from_str(r#"{"env":"prod"}"#);
        assert!(ok.is_ok());
        let bad: Result<Labels, _> = serde_json::from_str(r#"{"env":"has space"}"#);
        assert!(bad.is_err());
    }
}
