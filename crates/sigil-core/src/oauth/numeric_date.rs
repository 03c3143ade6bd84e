//! RFC 7519 §2 NumericDate as others send it: a JSON number of seconds, which may have a
//! fraction (Python's `time.time()`); Sigil reasons in whole seconds, rounding down.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// A NumericDate from a JSON value; `None` for anything that is not a finite number in range.
pub fn from_value(v: &Value) -> Option<i64> {
    match v.as_i64() {
        Some(n) => Some(n),
        None => v.as_f64().filter(|f| f.is_finite()).and_then(seconds),
    }
}

#[allow(
    clippy::cast_possible_truncation,
    reason = "the range is checked first; the fraction is dropped on purpose"
)]
fn seconds(f: f64) -> Option<i64> {
    const LIMIT: f64 = 9.0e15; // far past any date, well inside i64 and f64's exact integers
    (f.abs() < LIMIT).then(|| f.floor() as i64)
}

/// `#[serde(deserialize_with = "numeric_date::optional")]` for an optional NumericDate claim; a
/// value that is not a number is a deserialization error (a malformed token).
pub fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(v) => from_value(&v)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom("a NumericDate must be a number of seconds")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integers_and_fractions_are_seconds_and_nothing_else_is() {
        assert_eq!(from_value(&json!(1_700_000_000)), Some(1_700_000_000));
        assert_eq!(from_value(&json!(1_700_000_000.93)), Some(1_700_000_000));
        assert_eq!(from_value(&json!(-1.5)), Some(-2));
        assert_eq!(from_value(&json!(1e300)), None);
        assert_eq!(from_value(&json!("1700000000")), None);
        assert_eq!(from_value(&json!(null)), None);
    }
}
