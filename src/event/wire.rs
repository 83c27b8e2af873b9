//! Reading an event object from untrusted JSON in one pass: each field is
//! decoded as the parser meets it (hex straight into bytes, numbers checked
//! for sign and range, tags and content unescaped once), and every refusal
//! names the field and what is wrong with it.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::{Event, EventError};

#[derive(Deserialize)]
struct WireEvent {
    #[serde(deserialize_with = "id")]
    id: [u8; 32],
    #[serde(deserialize_with = "pubkey")]
    pubkey: [u8; 32],
    #[serde(deserialize_with = "created_at")]
    created_at: u64,
    #[serde(deserialize_with = "kind")]
    kind: u64,
    #[serde(deserialize_with = "tags")]
    tags: Vec<Vec<String>>,
    #[serde(deserialize_with = "content")]
    content: String,
    #[serde(deserialize_with = "sig")]
    sig: [u8; 64],
}

/// The fields whose own refusals are reported as they are; anything else
/// (missing field, not an object) is a shape error.
const FIELDS: [&str; 7] = [
    "id ",
    "pubkey ",
    "created_at ",
    "kind ",
    "tags ",
    "content ",
    "sig ",
];

pub(super) fn parse(json: &str) -> Result<Event, EventError> {
    // serde would also fill the struct from an array, in field order.
    if !json.trim_start().starts_with('{') {
        return Err(EventError::Malformed(
            "event is not a valid event object: expected a JSON object".into(),
        ));
    }
    let wire: WireEvent = serde_json::from_str(json).map_err(|e| {
        let text = e.to_string();
        let reason = text.find(" at line").map_or(&text[..], |at| &text[..at]);
        if FIELDS.iter().any(|f| reason.starts_with(f)) {
            EventError::Malformed(reason.to_string())
        } else {
            EventError::Malformed(format!("event is not a valid event object: {reason}"))
        }
    })?;
    Ok(Event {
        id: wire.id,
        pubkey: wire.pubkey,
        created_at: wire.created_at,
        // Range-checked against u16::MAX by `kind`.
        kind: wire.kind as u16,
        tags: wire.tags,
        content: wire.content,
        sig: wire.sig,
    })
}

/// Lowercase hex of exactly `N` bytes.
struct Hex<const N: usize>(&'static str);

impl<const N: usize> Visitor<'_> for Hex<N> {
    type Value = [u8; N];

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} lowercase hex characters", N * 2)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<[u8; N], E> {
        crate::hex_codec::decode(text).ok_or_else(|| {
            E::custom(format!(
                "{} must be {} lowercase hex characters",
                self.0,
                N * 2
            ))
        })
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<[u8; N], E> {
        Err(wrong_type(self.0, "a string"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<[u8; N], E> {
        Err(wrong_type(self.0, "a string"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<[u8; N], E> {
        Err(wrong_type(self.0, "a string"))
    }
}

/// Refuses any JSON type but the one a visitor takes, naming the field.
fn wrong_type<E: de::Error>(field: &str, expected: &str) -> E {
    E::custom(format!("{field} must be {expected}"))
}

fn hex<'de, D: Deserializer<'de>, const N: usize>(
    d: D,
    field: &'static str,
) -> Result<[u8; N], D::Error> {
    d.deserialize_any(Typed {
        field,
        expected: "a string",
        inner: Hex::<N>(field),
    })
}

/// Wraps a visitor so that a value of another JSON type is refused with
/// "`field` must be `expected`" instead of serde's generic message.
struct Typed<V> {
    field: &'static str,
    expected: &'static str,
    inner: V,
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Typed<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.inner.expecting(f)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<V::Value, E> {
        self.inner.visit_str(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<V::Value, E> {
        self.inner.visit_u64(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<V::Value, E> {
        self.inner.visit_i64(v)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<V::Value, E> {
        self.inner.visit_f64(v)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<V::Value, E> {
        Err(wrong_type(self.field, self.expected))
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        Err(wrong_type(self.field, self.expected))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<V::Value, A::Error> {
        Err(wrong_type(self.field, self.expected))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<V::Value, A::Error> {
        Err(wrong_type(self.field, self.expected))
    }
}

/// A non-negative JSON integer up to `max`.
struct Unsigned {
    field: &'static str,
    max: u64,
}

impl Visitor<'_> for Unsigned {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an integer from 0 to {}", self.max)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        if v <= self.max {
            Ok(v)
        } else {
            Err(E::custom(format!("{} is out of range", self.field)))
        }
    }

    /// serde_json only calls this for a number written with a minus sign.
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<u64, E> {
        Err(E::custom(format!("{} must not be negative", self.field)))
    }

    /// Fractions, exponents (`1e+10`) and integers beyond u64.
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        if v.is_sign_negative() {
            Err(E::custom(format!("{} must not be negative", self.field)))
        } else {
            Err(E::custom(format!("{} must be an integer", self.field)))
        }
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<u64, E> {
        Err(E::custom(format!("{} must be an integer", self.field)))
    }
}

fn unsigned<'de, D: Deserializer<'de>>(
    d: D,
    field: &'static str,
    max: u64,
) -> Result<u64, D::Error> {
    d.deserialize_any(Typed {
        field,
        expected: "an integer",
        inner: Unsigned { field, max },
    })
}

fn id<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
    hex(d, "id")
}

fn pubkey<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
    hex(d, "pubkey")
}

fn sig<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
    hex(d, "sig")
}

fn created_at<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    unsigned(d, "created_at", i64::MAX as u64)
}

fn kind<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    unsigned(d, "kind", u16::MAX as u64)
}

fn tags<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<String>>, D::Error> {
    let tags = Vec::<Vec<String>>::deserialize(d)
        .map_err(|_| de::Error::custom("tags must be an array of arrays of strings"))?;
    if tags.iter().any(Vec::is_empty) {
        return Err(de::Error::custom("tags must not be empty arrays"));
    }
    Ok(tags)
}

fn content<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    String::deserialize(d).map_err(|_| de::Error::custom("content must be a string"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn valid() -> Value {
        json!({
            "id": "11".repeat(32),
            "pubkey": "22".repeat(32),
            "created_at": 1700000000,
            "kind": 1,
            "tags": [["t", "x"]],
            "content": "hi",
            "sig": "33".repeat(64),
        })
    }

    fn refusal(field: &str, value: Value) -> String {
        let mut event = valid();
        event[field] = value;
        match parse(&event.to_string()) {
            Err(EventError::Malformed(reason)) => reason,
            other => panic!("{field}: expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn every_field_is_decoded_in_one_pass() {
        let event = parse(&valid().to_string()).expect("valid");
        assert_eq!(event.id, [0x11; 32]);
        assert_eq!(event.pubkey, [0x22; 32]);
        assert_eq!(event.sig, [0x33; 64]);
        assert_eq!((event.created_at, event.kind), (1700000000, 1));
        assert_eq!(event.tags, vec![vec!["t".to_string(), "x".to_string()]]);
        assert_eq!(event.content, "hi");
        // Escaped hex is still hex once unescaped.
        let escaped = valid().to_string().replacen("1111", "\\u00311111", 1);
        assert!(parse(&escaped).is_err(), "one character too many");
        let escaped = valid().to_string().replacen("11", "\\u00311", 1);
        assert_eq!(parse(&escaped).expect("escaped hex").id, [0x11; 32]);
    }

    #[test]
    fn each_refusal_names_the_field_and_the_problem() {
        let cases = [
            ("id", json!(5), "id must be a string"),
            ("id", json!(null), "id must be a string"),
            (
                "id",
                json!("AB".repeat(32)),
                "id must be 64 lowercase hex characters",
            ),
            (
                "pubkey",
                json!("2"),
                "pubkey must be 64 lowercase hex characters",
            ),
            ("sig", json!(["x"]), "sig must be a string"),
            (
                "sig",
                json!("33".repeat(32)),
                "sig must be 128 lowercase hex characters",
            ),
            ("created_at", json!(-1), "created_at must not be negative"),
            ("created_at", json!(1e10), "created_at must be an integer"),
            ("created_at", json!(1.5), "created_at must be an integer"),
            ("created_at", json!("5"), "created_at must be an integer"),
            ("created_at", json!(u64::MAX), "created_at is out of range"),
            ("kind", json!(65536), "kind is out of range"),
            ("kind", json!(true), "kind must be an integer"),
            ("tags", json!([[]]), "tags must not be empty arrays"),
            (
                "tags",
                json!("t"),
                "tags must be an array of arrays of strings",
            ),
            (
                "tags",
                json!([[1]]),
                "tags must be an array of arrays of strings",
            ),
            ("content", json!(5), "content must be a string"),
        ];
        for (field, value, reason) in cases {
            assert_eq!(refusal(field, value.clone()), reason, "{field} = {value}");
        }
    }

    #[test]
    fn shape_errors_say_the_object_is_not_an_event() {
        let mut missing = valid();
        missing.as_object_mut().unwrap().remove("sig");
        for text in [missing.to_string(), "[1]".into(), "{".into()] {
            match parse(&text) {
                Err(EventError::Malformed(reason)) => assert!(
                    reason.starts_with("event is not a valid event object: "),
                    "{reason}"
                ),
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
