//! Checks for the admin API's request bodies: `warden::http::error::parse_json` of each
//! body type, which must never panic and must accept exactly the bodies of its shape.
//!
//! Input: the raw request body, parsed as every body type of the API: `NewSwitch`,
//! `ManualLevel` and `PaidBody`.
//!
//! The oracle reads the body with `serde_json::Value` and the body's field list: a body is
//! valid when it is an object with each field at most once (exactly once unless it is an
//! `Option`), no other key and the right types, or (serde's derive also accepts it) an
//! array of all the fields' values in declaration order. An accepted body must show its values in `Debug` (the fields are private); a
//! refused one must be a 400 whose message starts with "invalid body:".

use std::fmt;

use serde::de::{self, DeserializeOwned, MapAccess, Visitor};
use serde_json::Value;
use warden::http::enforcement::ManualLevel;
use warden::http::error::{parse_json, ApiError};
use warden::http::kill_switches::NewSwitch;
use warden::http::statements::PaidBody;

/// A body field's JSON type, as its Rust type reads it.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// `String`: a JSON string.
    Str,
    /// `Option<u64>`: null, or an integer literal 0..=u64::MAX.
    OptU64,
}

/// `NewSwitch` (POST /v1/kill-switches), fields in declaration order.
const NEW_SWITCH: [(&str, Kind); 4] = [
    ("scope", Kind::Str),
    ("target", Kind::Str),
    ("reason", Kind::Str),
    ("ttl_seconds", Kind::OptU64),
];

/// `ManualLevel` (POST /v1/partners/{id}/enforcement).
const MANUAL_LEVEL: [(&str, Kind); 2] = [("level", Kind::Str), ("reason", Kind::Str)];

/// `PaidBody` (POST /v1/partners/{id}/statement/{month}/paid).
const PAID: [(&str, Kind); 1] = [("reference", Kind::Str)];

/// True when some body type accepts `body`.
pub fn admin_bodies(body: &[u8]) -> bool {
    let switch = check_body::<NewSwitch>(body, &NEW_SWITCH);
    let manual = check_body::<ManualLevel>(body, &MANUAL_LEVEL);
    let paid = check_body::<PaidBody>(body, &PAID);
    switch || manual || paid
}

fn check_body<T: DeserializeOwned + fmt::Debug>(body: &[u8], fields: &[(&str, Kind)]) -> bool {
    let expected = shape_ok(body, fields);
    match parse_json::<T>(body) {
        Ok(parsed) => {
            assert!(expected, "accepted a body of the wrong shape: {parsed:?}");
            assert_shows_values(&format!("{parsed:?}"), body, fields);
            true
        }
        Err(ApiError::BadRequest(message)) => {
            assert!(!expected, "refused a well-formed body: {message}");
            assert!(message.starts_with("invalid body: "), "{message}");
            false
        }
        Err(other) => panic!("a body parse error must be a 400, got {other:?}"),
    }
}

/// Whether `body` has the shape of `fields` (see the module header).
fn shape_ok(body: &[u8], fields: &[(&str, Kind)]) -> bool {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(_)) => {
            let Entries(entries) = serde_json::from_slice(body).expect("an object has entries");
            let known = |key: &String| fields.iter().any(|(name, _)| name == key);
            entries.iter().all(|(key, _)| known(key))
                && fields.iter().all(|(name, kind)| {
                    let mut values = entries.iter().filter(|(key, _)| key == name);
                    match (values.next(), values.next()) {
                        (Some((_, v)), None) => fits(*kind, v),
                        // serde's derive reads a missing `Option` as `None`.
                        (None, _) => matches!(kind, Kind::OptU64),
                        (Some(_), Some(_)) => false,
                    }
                })
        }
        Ok(Value::Array(items)) => {
            items.len() == fields.len()
                && items
                    .iter()
                    .zip(fields)
                    .all(|(v, (_, kind))| fits(*kind, v))
        }
        _ => false,
    }
}

fn fits(kind: Kind, value: &Value) -> bool {
    match kind {
        Kind::Str => value.is_string(),
        Kind::OptU64 => value.is_null() || value.is_u64(),
    }
}

/// The derived `Debug` of an accepted body holds each field's value as the body gave it.
fn assert_shows_values(debug: &str, body: &[u8], fields: &[(&str, Kind)]) {
    let values: Vec<Value> = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => fields
            .iter()
            .map(|(name, _)| map.get(*name).cloned().unwrap_or(Value::Null))
            .collect(),
        Ok(Value::Array(items)) => items,
        other => panic!("accepted a body that is no object or array: {other:?}"),
    };
    for ((name, kind), value) in fields.iter().zip(&values) {
        let shown = match (kind, value) {
            (Kind::Str, Value::String(s)) => format!("{name}: {s:?}"),
            (Kind::OptU64, Value::Null) => format!("{name}: None"),
            (Kind::OptU64, v) => format!("{name}: Some({v})"),
            (Kind::Str, v) => panic!("`{name}` accepted as {v}"),
        };
        assert!(debug.contains(&shown), "{debug} lacks {shown}");
    }
}

/// A JSON object's entries in order, repeated keys kept (a `Value` keeps the last).
struct Entries(Vec<(String, Value)>);

impl<'de> de::Deserialize<'de> for Entries {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}
