//! Property tests of plugin-name validation (issue 7, fuzzing by proptest;
//! SPEC D1): no string a client sends becomes a name that could leave the
//! plugins directory or name something other than a module, every Python
//! identifier made of ASCII is accepted as itself, and a name is accepted
//! exactly when the real Python's `str.isidentifier()` accepts it, Unicode
//! included (issue 15 item 16).

use std::io::Write as _;
use std::process::{Command, Stdio};

use proptest::prelude::*;
use proptest::strategy::ValueTree as _;
use proptest::test_runner::TestRunner;
use ucs_api::{ApiError, PluginName};

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
            prop_assert!(
                !name.contains(['/', '.', '\\', '\0']) && !name.chars().any(char::is_whitespace),
                "{raw:?} gave {name:?}"
            );
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

/// Characters from blocks older than the Unicode version of the Python that
/// runs the plugins (3.11: Unicode 14), so a character newer than its tables
/// cannot make the two disagree: letters and digits of several scripts,
/// combining marks, compatibility forms, connectors, and what paths use.
const ALPHABET: &[char] = &[
    'a', 'Z', '_', '0', '9', 'í', 'ř', 'ů', 'ß', 'Ω', 'ж', 'ع', '日', '本', 'ｱ', 'Ａ', '１', '٣',
    '·', '\u{301}', '\u{203f}', 'ﬁ', '℘', '℮', 'Ⅻ', '²', '-', ' ', '.', '/', '\u{0}', '\u{200b}',
    '€', '゛', '〃', '々',
];

/// What `python3`'s `str.isidentifier()` says of each name.
fn python_says_identifier(names: &[String]) -> Vec<bool> {
    let mut python = Command::new("python3")
        .args([
            "-c",
            "import json, sys; print(json.dumps([n.isidentifier() for n in json.load(sys.stdin)]))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs (CPython 3.11, as for the plugins)");
    let input = serde_json::to_vec(names).expect("names encode");
    python
        .stdin
        .take()
        .expect("stdin")
        .write_all(&input)
        .expect("names written");
    let output = python.wait_with_output().expect("python3 answers");
    assert!(output.status.success(), "python3 failed");
    serde_json::from_slice(&output.stdout).expect("a JSON list of booleans")
}

/// D1 allows any Python identifier: every name (without `.py`) is accepted
/// exactly when Python itself calls it an identifier, for hand-picked names
/// and 400 random strings of [`ALPHABET`].
#[test]
fn d1_a_name_is_accepted_exactly_when_python_calls_it_an_identifier() {
    let mut names: Vec<String> = [
        "příklad",
        "ěščř",
        "日本語",
        "ﬁle",
        "ＡＢＣ",
        "x·y",
        "℘x",
        "Ⅻ",
        "1abc",
        "a-b",
        "a b",
        "",
        "_",
        "__init__",
        "゛x",
        "x゛",
        "a\u{200b}",
        "e\u{301}",
        "\u{301}e",
        "²",
    ]
    .map(String::from)
    .to_vec();
    let strategy = prop::collection::vec(prop::sample::select(ALPHABET), 1..8)
        .prop_map(|chars| chars.into_iter().collect::<String>());
    let mut runner = TestRunner::deterministic();
    for _ in 0..400 {
        names.push(strategy.new_tree(&mut runner).expect("a value").current());
    }
    let python = python_says_identifier(&names);
    let disagreements: Vec<_> = names
        .iter()
        .zip(&python)
        .filter(|(name, python)| PluginName::parse(name).is_ok() != **python)
        .map(|(name, python)| format!("{name:?}: python says {python}"))
        .collect();
    assert!(disagreements.is_empty(), "{disagreements:#?}");
    // The test is not vacuous: both answers occur, and `příklad` is accepted.
    assert!(python.iter().any(|&ok| ok) && python.iter().any(|&ok| !ok));
    assert_eq!(
        PluginName::parse("příklad.py")
            .map(|name| name.as_str().to_owned())
            .ok(),
        Some("příklad".to_owned())
    );
}
