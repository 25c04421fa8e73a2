//! Property tests of [`Value`] <-> Python (issue 7, fuzzing by proptest;
//! SPEC D4): any value a plugin can be handed comes back exactly, int dict
//! keys as ints and `True` as a bool, never as `1`.

use proptest::prelude::*;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyInt};
use ucs_core::{MapKey, Value};
use ucs_pybridge::convert::{py_matches_value, py_to_value, value_to_py};

/// Any value up to 4 levels deep, with str and int dict keys (digits
/// included, so `1` and `"1"` meet in one dict) and finite floats.
fn any_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        // 0 and 1 beside booleans, where Python's `True == 1` could blur them.
        prop_oneof![Just(0i64), Just(1i64)].prop_map(Value::Int),
        any::<f64>()
            .prop_filter("finite", |number| number.is_finite())
            .prop_map(Value::Float),
        any::<String>().prop_map(Value::Str),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![
            any::<i64>().prop_map(MapKey::Int),
            (0i64..3).prop_map(MapKey::Int),
            "[0-9a-z]{0,3}".prop_map(MapKey::Str),
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
            prop::collection::vec((key, inner), 0..6)
                .prop_map(|fields| Value::Map(fields.into_iter().collect())),
        ]
    })
}

/// Checks that the Python object for `value` has Python's own types: a
/// bool is a `bool`, an int an `int` and not a `bool`, int keys are ints.
fn assert_python_types(value: &Value, object: &Bound<'_, PyAny>) -> Result<(), TestCaseError> {
    match value {
        Value::Bool(_) => prop_assert!(object.is_instance_of::<PyBool>()),
        Value::Int(_) => {
            prop_assert!(object.is_instance_of::<PyInt>() && !object.is_instance_of::<PyBool>());
        }
        Value::List(items) => {
            for (index, item) in items.iter().enumerate() {
                assert_python_types(item, &object.get_item(index)?)?;
            }
        }
        Value::Map(fields) => {
            let dict = object
                .cast::<PyDict>()
                .map_err(|err| TestCaseError::fail(err.to_string()))?;
            prop_assert_eq!(dict.len(), fields.len());
            for (key, item) in fields {
                let found = match key {
                    MapKey::Int(key) => dict.get_item(key)?,
                    MapKey::Str(key) => dict.get_item(key)?,
                };
                let found =
                    found.ok_or_else(|| TestCaseError::fail(format!("key {key:?} lost")))?;
                assert_python_types(item, &found)?;
            }
        }
        Value::Null | Value::Float(_) | Value::Str(_) => {}
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn d4_python_round_trip_is_exact(value in any_value()) {
        ucs_pybridge::init();
        Python::attach(|py| -> Result<(), TestCaseError> {
            let object = value_to_py(py, &value)?;
            assert_python_types(&value, &object)?;
            prop_assert_eq!(py_to_value(&object), Ok(value.clone()));
            Ok(())
        })?;
    }

    /// The shortcut a middleware's pass-through takes (issue 13 item 3):
    /// the object made from a value matches it, and an object that matches
    /// a value, any value, reads back as exactly that value.
    #[test]
    fn a_match_is_what_reading_back_would_give(value in any_value(), other in any_value()) {
        ucs_pybridge::init();
        Python::attach(|py| -> Result<(), TestCaseError> {
            let object = value_to_py(py, &value)?;
            prop_assert!(py_matches_value(&object, &value));
            if py_matches_value(&object, &other) {
                prop_assert_eq!(py_to_value(&object), Ok(other.clone()));
            }
            Ok(())
        })?;
    }

    /// A changed object never matches the value it was made from.
    #[test]
    fn a_changed_object_does_not_match(value in any_value()) {
        ucs_pybridge::init();
        Python::attach(|py| -> Result<(), TestCaseError> {
            let object = value_to_py(py, &value)?;
            let changed = match &value {
                Value::List(_) => {
                    object.call_method1("append", (0,))?;
                    true
                }
                Value::Map(_) => {
                    object.set_item("changed-key", 0)?;
                    true
                }
                _ => false,
            };
            if changed {
                prop_assert!(!py_matches_value(&object, &value));
            }
            Ok(())
        })?;
    }
}
