//! Property tests of plugin-name validation (issue 7, fuzzing by proptest;
//! SPEC D1): no string a client sends becomes a name that could leave the
//! plugins directory or name something other than a module, and every
//! Python identifier made of ASCII is accepted as itself.

use proptest::prelude::*;
use ucs_api::{ApiError, PluginName};

/// Whether `name` is a non-empty ASCII Python identifier.
fn is_ascii_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first == '_' || first.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// Strings built from the characters that matter to paths and modules, so
/// traversal attempts (`../x`, `a/b.py`, `.py`, `x\y`) are common.
fn path_like() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just("."),
            Just(".."),
            Just("/"),
            Just("\\"),
            Just(".py"),
            Just("_"),
            Just("a"),
            Just("Z"),
            Just("0"),
            Just("-"),
            Just(" "),
            Just("\u{0}"),
            Just("é"),
            Just("\u{ff10}"),
        ],
        0..12,
    )
    .prop_map(|parts| parts.concat())
}

/// Checks the safety property for any `raw` input.
fn assert_only_identifiers_pass(raw: &str) -> Result<(), TestCaseError> {
    match PluginName::parse(raw) {
        Ok(name) => {
            let name = name.as_str();
            prop_assert!(!name.is_empty(), "{raw:?} gave an empty name");
            prop_assert!(!name.contains(['/', '.', '\\']), "{raw:?} gave {name:?}");
            prop_assert!(is_ascii_identifier(name), "{raw:?} gave {name:?}");
        }
        Err(ApiError::InvalidInput(fields)) => {
            prop_assert!(fields.contains_key("plugin_name"), "{raw:?}: {fields:?}");
        }
        Err(other) => prop_assert!(false, "{raw:?}: {other:?} is not invalid input"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn d1_any_string_yields_an_identifier_or_invalid_input(raw in any::<String>()) {
        assert_only_identifiers_pass(&raw)?;
    }

    #[test]
    fn d1_path_like_strings_never_yield_a_path(raw in path_like()) {
        assert_only_identifiers_pass(&raw)?;
    }

    #[test]
    fn d1_every_identifier_is_accepted_with_or_without_py(
        identifier in "[A-Za-z_][A-Za-z0-9_]{0,40}",
    ) {
        let bare = PluginName::parse(&identifier);
        prop_assert_eq!(bare.as_ref().map(PluginName::as_str).ok(), Some(identifier.as_str()));
        let with_suffix = PluginName::parse(&format!("{identifier}.py"));
        prop_assert_eq!(with_suffix.as_ref().map(PluginName::as_str).ok(), Some(identifier.as_str()));
    }
}
