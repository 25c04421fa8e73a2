//! Property tests of the JSON side of [`Value`] (issue 7, fuzzing by
//! proptest): any value survives `to_json_string` -> `parse_json` exactly,
//! except that int dict keys come back as strings (D4), and no text at all
//! makes `parse_json` panic.

use proptest::prelude::*;
use ucs_core::{Map, MapKey, Value};

/// Cases per property: enough to find the usual suspects (escapes, float
/// digits, key clashes), few enough that CI stays fast.
const CASES: u32 = 256;

/// Any value up to 4 levels deep (well inside `MAX_DEPTH`), with str and int
/// dict keys and finite floats only, as the constructors guarantee.
fn any_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<f64>()
            .prop_filter("finite", |number| number.is_finite())
            .prop_map(Value::Float),
        any::<String>().prop_map(Value::Str),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![
            any::<i64>().prop_map(MapKey::Int),
            // Short keys, digits included, so "1" and 1 sometimes clash.
            "[0-9a-z]{0,3}".prop_map(MapKey::Str),
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
            prop::collection::vec((key, inner), 0..6)
                .prop_map(|fields| Value::Map(fields.into_iter().collect())),
        ]
    })
}

/// What JSON makes of `value`: every int key becomes its decimal string.
/// When that string is also a key already, the later value wins in the
/// earlier position, as JSON object parsing does with a repeated key.
fn with_str_keys(value: &Value) -> Value {
    match value {
        Value::List(items) => Value::List(items.iter().map(with_str_keys).collect()),
        Value::Map(fields) => {
            let mut map = Map::default();
            for (key, item) in fields {
                map.insert(MapKey::Str(key.to_string()), with_str_keys(item));
            }
            Value::Map(map)
        }
        other => other.clone(),
    }
}

/// JSON-looking text, so the parser meets near-misses and not just noise.
fn jsonish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("["),
        Just("]"),
        Just("{"),
        Just("}"),
        Just(","),
        Just(":"),
        Just("\""),
        Just("\\"),
        Just("\\ud800"),
        Just("\\u00"),
        Just("null"),
        Just("tru"),
        Just("-"),
        Just("1e999999"),
        Just("0.1e-400"),
        Just("18446744073709551616"),
        Just("-9223372036854775809"),
        Just("9223372036854775807"),
        Just("\u{0}"),
        Just(" "),
    ];
    prop::collection::vec(token, 0..60).prop_map(|tokens| tokens.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn d4_json_round_trip_is_exact_but_for_int_keys(value in any_value()) {
        let text = value.to_json_string();
        let parsed = Value::parse_json(&text).map_err(|err| err.to_string());
        prop_assert_eq!(parsed, Ok(with_str_keys(&value)), "{}", text);
    }

    #[test]
    fn parse_json_never_panics_on_any_text(text in any::<String>()) {
        let _ = Value::parse_json(&text);
    }

    #[test]
    fn parse_json_never_panics_on_json_like_text(text in jsonish()) {
        let _ = Value::parse_json(&text);
    }

    #[test]
    fn parse_json_never_panics_on_any_nesting(
        opens in prop::collection::vec(prop_oneof![Just("["), Just("{\"k\":")], 0..300),
        closes in 0usize..300,
    ) {
        let text = opens.concat() + &"]".repeat(closes);
        let _ = Value::parse_json(&text);
    }
}
