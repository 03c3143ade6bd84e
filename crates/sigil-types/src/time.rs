//! Points in time, with microsecond precision, shown as RFC 3339.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::ParseError;

/// Microseconds since the Unix epoch, UTC. Stored as an integer, shown as RFC 3339.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_unix_micros(us: i64) -> Self {
        Self(us)
    }

    pub const fn from_unix_seconds(s: i64) -> Self {
        Self(s.saturating_mul(1_000_000))
    }

    pub const fn unix_micros(self) -> i64 {
        self.0
    }

    pub const fn unix_seconds(self) -> i64 {
        self.0.div_euclid(1_000_000)
    }

    pub const fn unix_millis(self) -> i64 {
        self.0.div_euclid(1_000)
    }

    pub fn plus(self, d: std::time::Duration) -> Self {
        Self(self.0.saturating_add(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)))
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> std::time::Duration {
        std::time::Duration::from_micros(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }

    /// Parses RFC 3339 (e.g. `2026-12-01T00:00:00Z`).
    pub fn parse_rfc3339(s: &str) -> Result<Self, ParseError> {
        let t = OffsetDateTime::parse(s, &Rfc3339)
            .map_err(|e| ParseError::new("timestamp", format!("expected RFC 3339: {e}")))?;
        let us = t.unix_timestamp_nanos() / 1_000;
        i64::try_from(us)
            .map(Self)
            .map_err(|_| ParseError::new("timestamp", "out of range"))
    }

    pub fn to_rfc3339(self) -> String {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_else(|| self.0.to_string())
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        let t = Timestamp::parse_rfc3339("2026-12-01T10:00:00.5Z");
        assert_eq!(t.map(|t| t.to_rfc3339()), Ok("2026-12-01T10:00:00.5Z".to_owned()));
        assert!(Timestamp::parse_rfc3339("yesterday").is_err());
    }
}
