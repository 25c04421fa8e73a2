//! The value that crosses every boundary: shared data, API arguments and
//! results, event payloads.
//!
//! It holds what JSON holds plus dict keys that are integers (SPEC D4): the
//! documented `SharedDataHook` stores `{user_id: count}` and reads it back with
//! `old_data.get(user_id)`, so int keys must survive a round trip through the
//! server. External JSON clients see int keys as strings.

use indexmap::IndexMap;
use serde::ser::{SerializeMap, SerializeSeq};

/// A dict key: JSON only has strings, Python plugins also use ints (D4).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MapKey {
    /// An integer key, kept as an integer for Python and printed as a string in JSON.
    Int(i64),
    /// A string key.
    Str(String),
}

impl std::fmt::Display for MapKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MapKey::Int(key) => write!(f, "{key}"),
            MapKey::Str(key) => f.write_str(key),
        }
    }
}

impl From<&str> for MapKey {
    fn from(key: &str) -> Self {
        MapKey::Str(key.to_owned())
    }
}

impl From<i64> for MapKey {
    fn from(key: i64) -> Self {
        MapKey::Int(key)
    }
}

/// A dict that keeps insertion order, as Python dicts and JSON objects do.
///
/// Hashed with foldhash rather than std's SipHash: every record the server
/// builds (an agent, a user) is a map, and SipHash was a fifth of the work
/// of building one (issue 13). foldhash is seeded per process and per map,
/// which is the resistance to crafted colliding keys that a server whose
/// callers are authenticated needs; nothing depends on its hash values.
pub type Map = IndexMap<MapKey, Value, foldhash::fast::RandomState>;

/// A JSON-like value with int dict keys (D4).
///
/// Floats are always finite: NaN and infinities have no JSON form, so the
/// constructors that take outside input refuse them rather than store
/// something that cannot be read back.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    /// JSON `null`, Python `None`.
    #[default]
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed 64-bit integer.
    Int(i64),
    /// A finite float.
    Float(f64),
    /// A UTF-8 string.
    Str(String),
    /// A list (Python lists and tuples).
    List(Vec<Value>),
    /// A dict with str or int keys.
    Map(Map),
}

/// Why a value could not be built from outside input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValueError {
    /// NaN or an infinity: JSON cannot hold it.
    #[error("floats must be finite, got {0}")]
    NonFiniteFloat(f64),
    /// An integer outside the signed 64-bit range, as echoed (a bounded,
    /// quoted prefix).
    #[error("integer {0} does not fit in 64 bits")]
    IntegerOutOfRange(String),
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("value is nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// A type with no JSON form (a set, an arbitrary object, ...).
    #[error("unsupported type {0}")]
    Unsupported(String),
    /// A dict key the key decoder refused (e.g. a stored key without its tag).
    #[error("bad dict key: {0}")]
    BadKey(String),
}

/// Why JSON text is not a value.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The text is not JSON.
    #[error("{0}")]
    Syntax(#[source] serde_json::Error),
    /// It is JSON, but not a value the server holds.
    #[error("{0}")]
    Value(#[source] ValueError),
}

/// The deepest nesting a value may have. Deep enough for any real payload,
/// shallow enough that converting or printing it can never exhaust a stack.
pub const MAX_DEPTH: usize = 64;

impl Value {
    /// An empty dict: what a never-set shared-data identificator reads as (D4).
    pub fn empty_map() -> Self {
        Value::Map(Map::default())
    }

    /// A finite float, or an error for NaN and infinities.
    pub fn float(number: f64) -> Result<Self, ValueError> {
        if number.is_finite() {
            Ok(Value::Float(number))
        } else {
            Err(ValueError::NonFiniteFloat(number))
        }
    }

    /// Builds a dict from string keys, for results the server assembles itself.
    pub fn record<const N: usize>(fields: [(&str, Value); N]) -> Self {
        Value::Map(
            fields
                .into_iter()
                .map(|(key, value)| (MapKey::from(key), value))
                .collect(),
        )
    }

    /// Converts parsed JSON, refusing integers that do not fit in 64 bits and
    /// nesting deeper than [`MAX_DEPTH`].
    pub fn from_json(json: &serde_json::Value) -> Result<Self, ValueError> {
        Self::from_json_keyed(json, &|key| Ok(MapKey::Str(key.to_owned())))
    }

    /// [`Value::from_json`] with dict keys read by `key`, for encodings
    /// that keep int keys apart from string keys (the store's tagged keys);
    /// the one JSON reader of the server, with the same limits for all.
    pub fn from_json_keyed(
        json: &serde_json::Value,
        key: &dyn Fn(&str) -> Result<MapKey, String>,
    ) -> Result<Self, ValueError> {
        Self::from_json_at(json, key, 0)
    }

    fn from_json_at(
        json: &serde_json::Value,
        key_of: &dyn Fn(&str) -> Result<MapKey, String>,
        depth: usize,
    ) -> Result<Self, ValueError> {
        if depth > MAX_DEPTH {
            return Err(ValueError::TooDeep);
        }
        Ok(match json {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(flag) => Value::Bool(*flag),
            serde_json::Value::Number(number) => {
                if let Some(int) = number.as_i64() {
                    Value::Int(int)
                } else if number.is_u64() {
                    return Err(ValueError::IntegerOutOfRange(
                        crate::echoed(&number.to_string()).to_string(),
                    ));
                } else {
                    Value::float(number.as_f64().unwrap_or(f64::NAN))?
                }
            }
            serde_json::Value::String(text) => Value::Str(text.clone()),
            serde_json::Value::Array(items) => Value::List(
                items
                    .iter()
                    .map(|item| Self::from_json_at(item, key_of, depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
            serde_json::Value::Object(fields) => Value::Map(
                fields
                    .iter()
                    .map(|(key, item)| {
                        Ok((
                            key_of(key).map_err(ValueError::BadKey)?,
                            Self::from_json_at(item, key_of, depth + 1)?,
                        ))
                    })
                    .collect::<Result<_, ValueError>>()?,
            ),
        })
    }

    /// Parses JSON text straight into a value. An integer literal no `i64`
    /// holds (`2**70+1`, `-2**63-1`) is refused, never kept as the float
    /// serde_json reads it as (D4; issue 15 item 8): a plugin must read back
    /// exactly what was stored.
    pub fn parse_json(text: &str) -> Result<Self, ParseError> {
        let json: serde_json::Value = serde_json::from_str(text).map_err(ParseError::Syntax)?;
        let value = Self::from_json(&json).map_err(ParseError::Value)?;
        // Only a float that could be such an integer sends us back to the
        // text, whose literals alone tell `1e21` from `1000000000000000000000`.
        if holds_float_beyond_i64(&json)
            && let Some(literal) = integer_literal_beyond_i64(text)
        {
            return Err(ParseError::Value(ValueError::IntegerOutOfRange(
                crate::echoed(literal).to_string(),
            )));
        }
        Ok(value)
    }

    /// The JSON text of this value; int keys become strings (D4).
    pub fn to_json_string(&self) -> String {
        // Serialising a `Value` cannot fail: every key is a string by then and
        // every float is finite.
        serde_json::to_string(self).unwrap_or_else(|_| "null".to_owned())
    }

    /// The value of `key` if this is a dict holding it.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(map) => map.get(&MapKey::Str(key.to_owned())),
            _ => None,
        }
    }

    /// The integer inside, if this is one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(int) => Some(*int),
            _ => None,
        }
    }

    /// The string inside, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(text) => Some(text),
            _ => None,
        }
    }

    /// The boolean inside, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(flag) => Some(*flag),
            _ => None,
        }
    }

    /// A short name of the type, for error messages a user reads.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::List(_) => "list",
            Value::Map(_) => "dict",
        }
    }
}

impl serde::Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => serializer.serialize_unit(),
            Value::Bool(flag) => serializer.serialize_bool(*flag),
            Value::Int(int) => serializer.serialize_i64(*int),
            Value::Float(number) => serializer.serialize_f64(*number),
            Value::Str(text) => serializer.serialize_str(text),
            Value::List(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Map(fields) => {
                let mut map = serializer.serialize_map(Some(fields.len()))?;
                for (key, item) in fields {
                    match key {
                        MapKey::Str(key) => map.serialize_entry(key, item)?,
                        MapKey::Int(key) => map.serialize_entry(&key.to_string(), item)?,
                    }
                }
                map.end()
            }
        }
    }
}

impl From<bool> for Value {
    fn from(flag: bool) -> Self {
        Value::Bool(flag)
    }
}

impl From<i64> for Value {
    fn from(int: i64) -> Self {
        Value::Int(int)
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Self {
        Value::Str(text.to_owned())
    }
}

impl From<String> for Value {
    fn from(text: String) -> Self {
        Value::Str(text)
    }
}

impl From<Vec<Value>> for Value {
    fn from(items: Vec<Value>) -> Self {
        Value::List(items)
    }
}

/// Whether `json` holds a float as large as an integer beyond `i64`: the
/// only kind of number an out-of-range integer literal can have become.
fn holds_float_beyond_i64(json: &serde_json::Value) -> bool {
    // 2^63 as f64; every float at or beyond it in magnitude is integral.
    const BEYOND: f64 = 9_223_372_036_854_775_808.0;
    match json {
        serde_json::Value::Number(number) => {
            number.is_f64() && number.as_f64().is_some_and(|float| float.abs() >= BEYOND)
        }
        serde_json::Value::Array(items) => items.iter().any(holds_float_beyond_i64),
        serde_json::Value::Object(fields) => fields.values().any(holds_float_beyond_i64),
        _ => false,
    }
}

/// The first integer literal of the JSON `text` (no fraction, no exponent)
/// that no `i64` holds, skipping strings.
fn integer_literal_beyond_i64(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'"' => {
                at += 1;
                while at < bytes.len() && bytes[at] != b'"' {
                    at += if bytes[at] == b'\\' { 2 } else { 1 };
                }
                at += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = at;
                at += 1;
                while at < bytes.len()
                    && matches!(bytes[at], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    at += 1;
                }
                let literal = &text[start..at];
                if !literal.contains(['.', 'e', 'E']) && literal.parse::<i64>().is_err() {
                    return Some(literal);
                }
            }
            _ => at += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn d4_int_keys_print_as_strings_in_json() {
        let mut map = Map::default();
        map.insert(MapKey::Int(2), Value::Int(5));
        map.insert(MapKey::from("alice"), Value::from("x"));
        assert_eq!(Value::Map(map).to_json_string(), r#"{"2":5,"alice":"x"}"#);
    }

    #[test]
    fn d4_json_round_trip_keeps_order_and_types() {
        let text = r#"{"b":[1,2.5,"x",null,true],"a":{"n":-3}}"#;
        let value = Value::parse_json(text).unwrap();
        assert_eq!(value.to_json_string(), text);
    }

    #[test]
    fn json_integers_beyond_64_bits_are_refused() {
        // Issue 15 item 8: beyond u64 and below i64::MIN serde_json reads a
        // float; refused all the same, never rounded.
        for literal in [
            "18446744073709551615",
            "18446744073709551616",
            "1180591620717411303425",
            "-9223372036854775809",
        ] {
            let nested = format!(r#"{{"a": ["x\\\"1e99", {literal}]}}"#);
            for text in [literal.to_owned(), nested] {
                assert!(
                    matches!(
                        Value::parse_json(&text),
                        Err(ParseError::Value(ValueError::IntegerOutOfRange(ref got))) if *got == format!("'{literal}'")
                    ),
                    "{text}: {:?}",
                    Value::parse_json(&text)
                );
            }
        }
        // The edges of i64 and floats written as floats stay as they are.
        assert_eq!(
            Value::parse_json("[9223372036854775807, -9223372036854775808]").unwrap(),
            Value::List(vec![Value::Int(i64::MAX), Value::Int(i64::MIN)])
        );
        assert_eq!(
            Value::parse_json(r#"[1e21, 1.5e300, "123456789012345678901234"]"#)
                .unwrap()
                .to_json_string(),
            r#"[1e+21,1.5e+300,"123456789012345678901234"]"#
        );
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_refused() {
        let deep = "[".repeat(MAX_DEPTH + 2) + &"]".repeat(MAX_DEPTH + 2);
        assert!(Value::parse_json(&deep).is_err());
        let fine = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(Value::parse_json(&fine).is_ok());
    }

    #[test]
    fn non_finite_floats_are_refused() {
        assert!(Value::float(f64::NAN).is_err());
        assert!(Value::float(f64::INFINITY).is_err());
        assert_eq!(Value::float(1.5), Ok(Value::Float(1.5)));
    }
}
