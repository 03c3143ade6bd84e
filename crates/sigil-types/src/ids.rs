//! Stable, prefixed, time-sortable ids (`usr_…`, `idn_…`, `res_…`).
//!
//! The body is a ULID: 48 bits of milliseconds then 80 random bits, in Crockford base32. Sorting
//! ids sorts by creation time, which keeps cursor pagination stable. The prefix makes an id
//! recognisable in logs and keeps it from ever being mistaken for a name.

use crate::ParseError;

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const ULID_LEN: usize = 26;

/// Encodes a millisecond timestamp and 80 random bits as a 26-character ULID.
pub fn encode_ulid(unix_ms: u64, random: [u8; 10]) -> String {
    let mut value: u128 = u128::from(unix_ms & 0xFFFF_FFFF_FFFF) << 80;
    for (i, b) in random.iter().enumerate() {
        value |= u128::from(*b) << (72 - 8 * i);
    }
    let mut out = String::with_capacity(ULID_LEN);
    for i in (0..ULID_LEN).rev() {
        let idx = ((value >> (5 * i)) & 0x1F) as usize;
        out.push(char::from(*CROCKFORD.get(idx).unwrap_or(&b'0')));
    }
    out
}

fn is_ulid(body: &str) -> bool {
    body.len() == ULID_LEN
        && body.bytes().all(|b| CROCKFORD.contains(&b))
        // The first character carries only 3 bits (128 = 2 + 25*5).
        && body.as_bytes().first().is_some_and(|b| *b <= b'7')
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The prefix every id of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// Makes a new id from a creation time and fresh randomness.
            pub fn generate(unix_ms: u64, random: [u8; 10]) -> Self {
                Self(format!("{}{}", $prefix, encode_ulid(unix_ms, random)))
            }

            /// Parses an id; anything but the exact prefixed form is rejected.
            pub fn parse(s: &str) -> Result<Self, ParseError> {
                match s.strip_prefix($prefix) {
                    Some(body) if is_ulid(body) => Ok(Self(s.to_owned())),
                    _ => Err(ParseError::new($what, concat!("expected ", $prefix, " followed by 26 base32 characters"))),
                }
            }

            /// True when `s` has the shape of this kind of id (used to tell ids from names).
            pub fn looks_like(s: &str) -> bool {
                Self::parse(s).is_ok()
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

prefixed_id!(
    /// A human user's id.
    UserId, "usr_", "user id"
);
prefixed_id!(
    /// An agent's or workload's id (one namespace for both: they are all non-human identities).
    IdentityId, "idn_", "identity id"
);
prefixed_id!(
    /// A protected resource's id.
    ResourceId, "res_", "resource id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_and_sort_by_time() {
        let a = UserId::generate(1_000, [0xFF; 10]);
        let b = UserId::generate(1_001, [0x00; 10]);
        assert!(a < b);
        assert_eq!(UserId::parse(a.as_str()), Ok(a.clone()));
        assert!(a.as_str().starts_with("usr_"));
        assert_eq!(a.as_str().len(), 4 + 26);
    }

    #[test]
    fn wrong_prefix_or_body_is_rejected() {
        let id = IdentityId::generate(5, [7; 10]);
        assert!(UserId::parse(id.as_str()).is_err());
        assert!(UserId::parse("usr_").is_err());
        assert!(UserId::parse("usr_0000000000000000000000000U").is_err());
        assert!(UserId::parse("usr_80000000000000000000000000").is_err());
    }

    #[test]
    fn encode_matches_ulid_reference() {
        // Reference from the ULID spec's layout: all-zero random, time 0 → all zeros.
        assert_eq!(encode_ulid(0, [0; 10]), "00000000000000000000000000");
        assert_eq!(encode_ulid(0xFFFF_FFFF_FFFF, [0xFF; 10]), "7ZZZZZZZZZZZZZZZZZZZZZZZZZ");
    }
}
