//! Property tests of `Api.Call` argument parsing (issue 7, fuzzing by
//! proptest): whatever a client puts in `args_json`, parsing answers with
//! parameters or an invalid-argument error about `args_json`, never a panic
//! and never another kind of error. They live here, not in `api.rs`, so the
//! service code stays short; `parse_args` is `pub(crate)` for them.

use proptest::prelude::*;
use ucs_api::ApiError;
use ucs_core::Value;

use crate::api::parse_args;

/// Checks the one property: `Ok` params or INVALID_ARGUMENT naming `args_json`.
fn assert_params_or_invalid_argument(args_json: &str) -> Result<(), TestCaseError> {
    match parse_args(args_json) {
        Ok(_) => Ok(()),
        Err(ApiError::InvalidInput(fields)) => {
            prop_assert!(
                fields.contains_key("args_json"),
                "{args_json:?}: {fields:?}"
            );
            Ok(())
        }
        Err(other) => Err(TestCaseError::fail(format!(
            "{args_json:?}: {other:?} is not INVALID_ARGUMENT"
        ))),
    }
}

/// JSON-looking text: brackets, braces, quotes, escapes, numbers and
/// keywords in any order, so the parser meets near-misses, not just noise.
fn jsonish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just(",".to_owned()),
        Just(":".to_owned()),
        Just("\"".to_owned()),
        Just("\\u".to_owned()),
        Just("\\ud800".to_owned()),
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("1e999".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("-0.0".to_owned()),
        any::<i64>().prop_map(|int| int.to_string()),
        "[a-z ]{0,3}",
    ];
    prop::collection::vec(token, 0..40).prop_map(|tokens| tokens.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_string_gives_params_or_invalid_argument(args_json in any::<String>()) {
        assert_params_or_invalid_argument(&args_json)?;
    }

    #[test]
    fn json_like_text_gives_params_or_invalid_argument(args_json in jsonish()) {
        assert_params_or_invalid_argument(&args_json)?;
    }

    #[test]
    fn a_json_array_of_ints_and_strings_is_exactly_the_params(
        params in prop::collection::vec(
            prop_oneof![any::<i64>().prop_map(Value::Int), any::<String>().prop_map(Value::Str)],
            0..8,
        ),
    ) {
        let args_json = Value::List(params.clone()).to_json_string();
        prop_assert_eq!(parse_args(&args_json).ok(), Some(params));
    }
}
