//! What a signed delivery's body must be: one JSON object, in UTF-8 — what the official
//! Standard Webhooks libraries parse after verifying, and refuse otherwise.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the body is empty: a JSON object was expected")]
    Empty,
    #[error("the body is not UTF-8 (invalid byte at offset {0}): a JSON object was expected")]
    NotUtf8(usize),
    #[error("the body is not JSON ({0}): a JSON object was expected")]
    NotJson(String),
    #[error("the body is a JSON {0}, not an object")]
    NotObject(&'static str),
}

/// Checks `body` without building it: values are skipped, only the top level's kind is kept.
pub fn check(body: &[u8]) -> Result<(), BodyError> {
    let text = std::str::from_utf8(body).map_err(|e| BodyError::NotUtf8(e.valid_up_to()))?;
    if text.trim().is_empty() {
        return Err(BodyError::Empty);
    }
    match serde_json::from_str::<Kind>(text) {
        Ok(Kind("object")) => Ok(()),
        Ok(Kind(other)) => Err(BodyError::NotObject(other)),
        Err(e) => Err(BodyError::NotJson(e.to_string())),
    }
}

/// The kind of a JSON value: "object", "array", "string" …
struct Kind(&'static str);

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Kind, D::Error> {
        deserializer.deserialize_any(KindVisitor)
    }
}

struct KindVisitor;

impl<'de> Visitor<'de> for KindVisitor {
    type Value = Kind;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kind, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Kind("object"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kind, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Kind("array"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Kind, E> {
        Ok(Kind("string"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Kind, E> {
        Ok(Kind("boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Kind, E> {
        Ok(Kind("number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Kind, E> {
        Ok(Kind("number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Kind, E> {
        Ok(Kind("number"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Kind, E> {
        Ok(Kind("null"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_json_object_passes() {
        assert_eq!(
            check(br#" {"type": "a", "data": {"x": [1, "\u00e9"]}} "#),
            Ok(())
        );
        assert_eq!(check(b""), Err(BodyError::Empty));
        assert_eq!(check(b" \n"), Err(BodyError::Empty));
        assert_eq!(check(b"{\"a\": \"\xff\"}"), Err(BodyError::NotUtf8(7)));
        assert_eq!(check(b"[1, 2]"), Err(BodyError::NotObject("array")));
        assert_eq!(check(b"\"text\""), Err(BodyError::NotObject("string")));
        assert_eq!(check(b"null"), Err(BodyError::NotObject("null")));
        assert!(matches!(check(b"plain text"), Err(BodyError::NotJson(_))));
        assert!(matches!(
            check(b"{\"a\": 1} {}"),
            Err(BodyError::NotJson(_))
        ));
        assert!(matches!(check(b"{\"a\": 1"), Err(BodyError::NotJson(_))));
    }
}
