//! Shared data as JSON text that keeps everything a [`Value`] holds (D4).
//!
//! Plain JSON loses two things a plugin can tell apart: int dict keys
//! (`{2: 5}` is not `{"2": 5}`) and, after a careless round trip, floats that
//! happen to be whole. So every dict key is tagged, `"i:2"` for the int 2 and
//! `"s:2"` for the string "2"; ints and floats stay JSON integers and JSON
//! floats (`1` and `1.0`), which `serde_json` keeps apart and, with its
//! `float_roundtrip` feature, reads back bit for bit. Lists, strings, bools
//! and null are plain JSON, so the text stays readable in `sqlite3`, and the
//! tags add no nesting, so any value the core accepts fits `serde_json`'s
//! recursion limit.

use ucs_core::value::ParseError;
use ucs_core::{MapKey, Value};

/// The tag of an int dict key.
const INT_KEY: &str = "i:";
/// The tag of a string dict key.
const STR_KEY: &str = "s:";

/// The stored JSON text of `value`, or why it cannot be stored.
pub(crate) fn encode(value: &Value) -> Result<String, String> {
    let json = to_json(value)?;
    serde_json::to_string(&json).map_err(|err| err.to_string())
}

/// The value whose stored JSON text is `text`, read by the core's one JSON
/// reader, with its depth and integer limits.
pub(crate) fn decode(text: &str) -> Result<Value, ParseError> {
    let json: serde_json::Value = serde_json::from_str(text).map_err(ParseError::Syntax)?;
    Value::from_json_keyed(&json, &decode_key).map_err(ParseError::Value)
}

fn to_json(value: &Value) -> Result<serde_json::Value, String> {
    Ok(match value {
        Value::Null => serde_json::Value::Null,
        Value::Bool(flag) => serde_json::Value::Bool(*flag),
        Value::Int(int) => serde_json::Value::from(*int),
        Value::Float(number) => serde_json::Number::from_f64(*number)
            .map(serde_json::Value::Number)
            .ok_or_else(|| format!("the float {number} has no JSON form"))?,
        Value::Str(text) => serde_json::Value::String(text.clone()),
        Value::List(items) => {
            serde_json::Value::Array(items.iter().map(to_json).collect::<Result<_, _>>()?)
        }
        Value::Map(fields) => serde_json::Value::Object(
            fields
                .iter()
                .map(|(key, item)| {
                    let key = match key {
                        MapKey::Int(int) => format!("{INT_KEY}{int}"),
                        MapKey::Str(text) => format!("{STR_KEY}{text}"),
                    };
                    Ok((key, to_json(item)?))
                })
                .collect::<Result<_, String>>()?,
        ),
    })
}

fn decode_key(key: &str) -> Result<MapKey, String> {
    if let Some(int) = key.strip_prefix(INT_KEY) {
        int.parse()
            .map(MapKey::Int)
            .map_err(|_| format!("dict key {key:?} is tagged int but is not one"))
    } else if let Some(text) = key.strip_prefix(STR_KEY) {
        Ok(MapKey::Str(text.to_owned()))
    } else {
        Err(format!("dict key {key:?} has no type tag"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ucs_core::Map;

    fn check(value: Value, stored: &str) {
        assert_eq!(encode(&value).unwrap(), stored);
        assert_eq!(decode(stored).unwrap(), value);
    }

    #[test]
    fn d4_int_and_string_keys_stay_apart() {
        let map: Map = [
            (MapKey::Int(2), Value::Int(5)),
            (MapKey::from("2"), Value::Float(5.0)),
            (MapKey::Int(-1), Value::Null),
        ]
        .into_iter()
        .collect();
        check(Value::Map(map), r#"{"i:2":5,"s:2":5.0,"i:-1":null}"#);
    }

    #[test]
    fn scalars_and_lists_are_plain_json() {
        check(
            Value::List(vec![
                Value::Bool(true),
                Value::Int(i64::MIN),
                Value::Float(-0.0),
                Value::from("é\"x"),
            ]),
            r#"[true,-9223372036854775808,-0.0,"é\"x"]"#,
        );
        check(Value::empty_map(), "{}");
    }

    #[test]
    fn floats_come_back_bit_for_bit() {
        for number in [0.1, 1.0 / 3.0, f64::MAX, f64::MIN_POSITIVE, 1e-308, 2.5e15] {
            let back = decode(&encode(&Value::Float(number)).unwrap()).unwrap();
            assert!(matches!(back, Value::Float(b) if b.to_bits() == number.to_bits()));
        }
    }

    #[test]
    fn untagged_keys_and_non_finite_floats_are_refused() {
        assert!(
            decode(r#"{"2":1}"#)
                .unwrap_err()
                .to_string()
                .contains("no type tag")
        );
        assert!(
            decode(r#"{"i:x":1}"#)
                .unwrap_err()
                .to_string()
                .contains("tagged int")
        );
        assert!(encode(&Value::Float(f64::NAN)).is_err());
    }

    #[test]
    fn issue12_stored_values_have_the_cores_depth_limit() {
        let depth = ucs_core::value::MAX_DEPTH + 2;
        let deep = "[".repeat(depth) + &"]".repeat(depth);
        assert!(matches!(
            decode(&deep),
            Err(ParseError::Value(ucs_core::value::ValueError::TooDeep))
        ));
    }
}
