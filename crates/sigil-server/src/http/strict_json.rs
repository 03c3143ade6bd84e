//! JSON that means one thing to every parser (I-JSON, RFC 7493 §2.3): an object with the same
//! member twice is refused instead of keeping the last one. A gateway that keeps the first would
//! otherwise judge a different request from the one the decision point decides (a `purpose`
//! sent twice, an `act` naming two agents).

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// A parsed JSON value in which no object repeats a member name.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if members.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "the member {key:?} appears twice in one object"
                )));
            }
            let Strict(v) = map.next_value()?;
            members.insert(key, v);
        }
        Ok(Value::Object(members))
    }
}

/// Parses `bytes` as JSON whose objects repeat no member.
pub fn parse(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice::<Strict>(bytes).map(|s| s.0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_member_is_refused_at_any_depth() {
        assert!(parse(br#"{"a": {"b": [1, {"c": 2}]}, "d": null}"#).is_ok());
        for bad in [
            &br#"{"a": 1, "a": 2}"#[..],
            br#"{"x": {"purpose": "marketing", "purpose": "research"}}"#,
            br#"[{"id": "a", "id": "b"}]"#,
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("appears twice"), "{e}");
        }
    }

    #[test]
    fn values_are_kept_as_serde_json_reads_them() {
        let raw = br#"{"n": -3, "u": 18446744073709551615, "f": 1.5, "s": "\u00e9", "t": true, "z": null, "l": []}"#;
        assert_eq!(parse(raw).unwrap(), serde_json::from_slice::<Value>(raw).unwrap());
    }
}
