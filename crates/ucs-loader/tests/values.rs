//! Shared-data values between Python and the server: SPEC D4. Module names
//! are unique in this binary.

mod common;

use common::{TestServer, field, py};
use ucs_api::PluginState;
use ucs_core::{Map, MapKey, Value};

/// The exact Python value the plugins store and compare.
const STORED: &str = r#"{
    1: 'one',
    2: {3: 'three', 'four': [4, 4.5, None, True, False]},
    'text': 'žluťoučký kůň',
    'empty': {},
    'list': [[], {}, '', 0, -7, 2 ** 62],
}"#;

#[test]
fn d4_int_dict_keys_survive_shared_set_from_python_and_back() {
    let plugin = py(&format!(
        r#"
STORED = {STORED}

def shape(value):
    # The exact types, since True == 1 and 1 == 1.0 in Python.
    if isinstance(value, dict):
        return {{repr(k): shape(v) for k, v in value.items()}}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__

class D4Writer:
    def __init__(self, ucs):
        returned = ucs.api.shared.set(ucs.sid, 'd4_value', STORED)
        read = ucs.shared.get('d4_value')
        through_api = ucs.api.shared.get(ucs.sid, 'd4_value')
        put(ucs, 'd4_report', {{
            'read_equal': read == STORED,
            'read_shape_equal': shape(read) == shape(STORED),
            'returned_equal': returned == STORED and shape(returned) == shape(STORED),
            'api_equal': through_api == STORED and shape(through_api) == shape(STORED),
            'key_types': sorted(type(k).__name__ for k in read),
        }})

UCS_PLUGIN = 'D4Writer'
"#
    ));
    let server = TestServer::start(&[("d4_roundtrip.py", &plugin)]);
    assert_eq!(server.state_of("d4_roundtrip"), PluginState::Running);
    let report = server.shared("d4_report");
    for check in [
        "read_equal",
        "read_shape_equal",
        "returned_equal",
        "api_equal",
    ] {
        assert_eq!(
            field(&report, check),
            &Value::Bool(true),
            "{check}: {report:?}"
        );
    }
    // On the Rust side the keys are ints, not strings.
    let Value::Map(stored) = server.shared("d4_value") else {
        panic!("{:?}", server.shared("d4_value"))
    };
    assert_eq!(stored.get(&MapKey::Int(1)), Some(&Value::from("one")));
    assert!(stored.get(&MapKey::Str("1".to_owned())).is_none());
    let Some(Value::Map(inner)) = stored.get(&MapKey::Int(2)) else {
        panic!("{stored:?}")
    };
    assert_eq!(inner.get(&MapKey::Int(3)), Some(&Value::from("three")));
    // External JSON clients see int keys as strings.
    let json = server.shared("d4_value").to_json_string();
    assert!(json.starts_with(r#"{"1":"one","2":{"3":"three""#), "{json}");
}

#[test]
fn d4_value_stored_by_rust_with_int_keys_reads_back_in_python_with_int_keys() {
    let reader = py(r#"
class D4Reader:
    def __init__(self, ucs):
        self.ucs = ucs
        ucs.shared.addChangeHook('d4_counts', self.hook)

    def hook(self, identificator, old_data, new_data):
        # As the documented SharedDataHook: old_data.get(user_id), an int.
        merged = dict(old_data)
        for user_id, count in new_data.items():
            merged[user_id] = (old_data.get(user_id) or 0) + count
        return merged

UCS_PLUGIN = 'D4Reader'
"#);
    let server = TestServer::start(&[("d4_reader.py", &reader)]);
    let counts = |pairs: &[(i64, i64)]| {
        Value::Map(
            pairs
                .iter()
                .map(|(key, count)| (MapKey::Int(*key), Value::Int(*count)))
                .collect::<Map>(),
        )
    };
    server
        .call(
            "shared.set",
            vec![Value::from("d4_counts"), counts(&[(2, 3), (5, 1)])],
        )
        .unwrap();
    let stored = server
        .call(
            "shared.set",
            vec![Value::from("d4_counts"), counts(&[(2, 4)])],
        )
        .unwrap();
    assert_eq!(stored, counts(&[(2, 7), (5, 1)]));
}

#[test]
fn d4_never_set_identificator_reads_as_an_empty_dict() {
    let plugin = py(r#"
class D4Never:
    def __init__(self, ucs):
        self.ucs = ucs
        local = ucs.shared.get('d4_never_local')
        api = ucs.api.shared.get(ucs.sid, 'd4_never_api')
        put(ucs, 'd4_never', [type(local).__name__, local == {}, type(api).__name__, api == {}])
        ucs.shared.addChangeHook('d4_first', self.hook)

    def hook(self, identificator, old_data, new_data):
        # The documented hook calls old_data.get(...) on the very first set.
        return {'old_type': type(old_data).__name__, 'old_get': old_data.get(1, 'missing')}

UCS_PLUGIN = 'D4Never'
"#);
    let server = TestServer::start(&[("d4_never.py", &plugin)]);
    assert_eq!(
        server.shared("d4_never"),
        Value::List(vec![
            Value::from("dict"),
            Value::Bool(true),
            Value::from("dict"),
            Value::Bool(true),
        ])
    );
    assert_eq!(
        server.call("shared.get", vec![Value::from("d4_never_rust")]),
        Ok(Value::empty_map())
    );
    let stored = server
        .call("shared.set", vec![Value::from("d4_first"), Value::Int(1)])
        .unwrap();
    assert_eq!(
        stored,
        Value::record([
            ("old_type", Value::from("dict")),
            ("old_get", Value::from("missing")),
        ])
    );
}

#[test]
fn d4_values_json_cannot_hold_are_refused_when_a_plugin_sets_them() {
    let plugin = py(r#"
class D4Refused:
    def __init__(self, ucs):
        outcome = {}
        for name, value in (('set', {1, 2}), ('nan', float('nan')), ('inf', float('inf')),
                            ('huge', 2 ** 64), ('huger', 2 ** 70 + 1), ('below', -2 ** 63 - 1),
                            ('object', object()), ('bool_key', {True: 1})):
            try:
                ucs.api.shared.set(ucs.sid, 'd4_refused', value)
                outcome[name] = 'stored'
            except error.InvalidDataInput as e:
                outcome[name] = 'InvalidDataInput'
        put(ucs, 'd4_refused_report', outcome)

UCS_PLUGIN = 'D4Refused'
"#);
    let server = TestServer::start(&[("d4_refused.py", &plugin)]);
    let report = server.shared("d4_refused_report");
    for name in [
        "set", "nan", "inf", "huge", "huger", "below", "object", "bool_key",
    ] {
        assert_eq!(
            field(&report, name),
            &Value::from("InvalidDataInput"),
            "{name}: {report:?}"
        );
    }
    assert_eq!(
        server.shared("d4_refused"),
        Value::empty_map(),
        "nothing stored"
    );
}
