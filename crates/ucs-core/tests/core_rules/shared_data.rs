//! SPEC section 4: shared data hooks (S1-S4), values (D4), and L5 re-entry.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use ucs_core::{CoreError, Map, MapKey, PluginFailure, SharedVerdict, Value};

use crate::fixtures::{core_with_agents, plugin, recorder, shared_hook, within};

fn store_as_requested() -> Arc<dyn ucs_core::SharedDataHook> {
    shared_hook(|_, _, new| SharedVerdict::Store(new.clone()))
}

fn int_map(entries: &[(i64, i64)]) -> Value {
    Value::Map(
        entries
            .iter()
            .map(|(key, value)| (MapKey::Int(*key), Value::Int(*value)))
            .collect(),
    )
}

#[test]
fn s1_one_hook_per_identificator() {
    let (core, _) = core_with_agents(&[]);
    core.shared()
        .add_hook("counters", plugin("a"), store_as_requested())
        .unwrap();
    for owner in ["a", "b"] {
        let err = core
            .shared()
            .add_hook("counters", plugin(owner), store_as_requested())
            .unwrap_err();
        assert!(
            matches!(&err, CoreError::Processing(message) if message.contains("counters")),
            "{err:?}"
        );
    }
    // Another identificator has its own slot.
    core.shared()
        .add_hook("other", plugin("b"), store_as_requested())
        .unwrap();
}

#[test]
fn s1_remove_change_hook_removes_only_the_owners_hook() {
    let (core, _) = core_with_agents(&[]);
    core.shared()
        .add_hook(
            "x",
            plugin("owner"),
            shared_hook(|_, _, _| SharedVerdict::Store(Value::from("hooked"))),
        )
        .unwrap();

    assert!(!core.shared().remove_hook("x", &plugin("intruder")));
    assert_eq!(
        core.set_shared("x", Value::Int(1)),
        Ok(Value::from("hooked"))
    );

    assert!(
        !core.shared().remove_hook("y", &plugin("owner")),
        "no hook on y"
    );
    assert!(core.shared().remove_hook("x", &plugin("owner")));
    assert_eq!(core.set_shared("x", Value::Int(2)), Ok(Value::Int(2)));
    // The slot is free again.
    core.shared()
        .add_hook("x", plugin("intruder"), store_as_requested())
        .unwrap();
}

#[test]
fn s2_hook_gets_identificator_old_and_new_and_its_result_is_stored() {
    let (core, _) = core_with_agents(&[]);
    let (events, seen_events) = recorder("events");
    core.events()
        .add_callback("shared.data", plugin("p"), events)
        .unwrap();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&calls);
    // The documented SharedDataHook: count sets per user id, int keys (D4).
    core.shared()
        .add_hook(
            "per_user",
            plugin("p"),
            shared_hook(move |identificator, old, new| {
                seen.lock()
                    .unwrap()
                    .push((identificator.to_owned(), old.clone(), new.clone()));
                let user_id = new.as_int().unwrap_or(0);
                let mut counts = match old {
                    Value::Map(map) => map.clone(),
                    _ => Map::default(),
                };
                let count = counts
                    .get(&MapKey::Int(user_id))
                    .and_then(Value::as_int)
                    .unwrap_or(0);
                counts.insert(MapKey::Int(user_id), Value::Int(count + 1));
                SharedVerdict::Store(Value::Map(counts))
            }),
        )
        .unwrap();

    assert_eq!(
        core.set_shared("per_user", Value::Int(2)),
        Ok(int_map(&[(2, 1)]))
    );
    assert_eq!(
        core.set_shared("per_user", Value::Int(2)),
        Ok(int_map(&[(2, 2)]))
    );
    assert_eq!(
        core.set_shared("per_user", Value::Int(5)),
        Ok(int_map(&[(2, 2), (5, 1)]))
    );
    assert_eq!(core.shared().get("per_user"), int_map(&[(2, 2), (5, 1)]));

    let calls = calls.lock().unwrap();
    assert_eq!(
        *calls,
        [
            // D4: never set reads as {}, so the hook works on the first set.
            ("per_user".to_owned(), Value::empty_map(), Value::Int(2)),
            ("per_user".to_owned(), int_map(&[(2, 1)]), Value::Int(2)),
            ("per_user".to_owned(), int_map(&[(2, 2)]), Value::Int(5)),
        ]
    );
    // The event carries what was stored, not what was requested.
    let last = seen_events.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        last.payload,
        ucs_core::EventPayload::SharedData {
            identificator: "per_user".to_owned(),
            data: int_map(&[(2, 2), (5, 1)]),
        }
    );
}

#[test]
fn s2_hook_runs_only_for_its_identificator() {
    let (core, _) = core_with_agents(&[]);
    core.shared()
        .add_hook(
            "a",
            plugin("p"),
            shared_hook(|_, _, _| SharedVerdict::Store(Value::from("from hook"))),
        )
        .unwrap();
    assert_eq!(core.set_shared("b", Value::Int(1)), Ok(Value::Int(1)));
    assert_eq!(
        core.set_shared("a", Value::Int(1)),
        Ok(Value::from("from hook"))
    );
}

#[test]
fn s3_blocking_hook_refuses_the_change_and_keeps_the_old_data() {
    let (core, _) = core_with_agents(&[]);
    core.set_shared("limits", Value::Int(10)).unwrap();
    let (events, seen) = recorder("events");
    core.events()
        .add_callback("shared.data", plugin("p"), events)
        .unwrap();
    core.shared()
        .add_hook(
            "limits",
            plugin("p"),
            shared_hook(|_, _, new| {
                if new.as_int().is_some_and(|limit| limit < 0) {
                    SharedVerdict::Block {
                        reason: "limit must not be negative".to_owned(),
                    }
                } else {
                    SharedVerdict::Store(new.clone())
                }
            }),
        )
        .unwrap();

    assert_eq!(
        core.set_shared("limits", Value::Int(-1)),
        Err(CoreError::Processing(
            "limit must not be negative".to_owned()
        ))
    );
    assert_eq!(core.shared().get("limits"), Value::Int(10));
    assert!(
        seen.lock().unwrap().is_empty(),
        "a blocked set fires no event"
    );
    assert_eq!(
        core.set_shared("limits", Value::Int(20)),
        Ok(Value::Int(20))
    );
}

#[test]
fn s4_failed_hook_stores_the_requested_data() {
    let (core, _) = core_with_agents(&[]);
    core.shared()
        .add_hook(
            "x",
            plugin("p"),
            shared_hook(|_, _, _| {
                SharedVerdict::Failed(PluginFailure::new("Traceback: ZeroDivisionError"))
            }),
        )
        .unwrap();
    let data = Value::record([("k", Value::from("v"))]);
    assert_eq!(core.set_shared("x", data.clone()), Ok(data.clone()));
    assert_eq!(core.shared().get("x"), data);
}

#[test]
fn s2_hook_setting_its_own_identificator_gets_processing_error_not_deadlock() {
    let (core, _) = core_with_agents(&[]);
    let inner = Arc::new(Mutex::new(Vec::new()));
    let results = Arc::clone(&inner);
    let weak_core = Arc::downgrade(&core);
    core.shared()
        .add_hook(
            "loop",
            plugin("p"),
            shared_hook(move |_, _, new| {
                let core = Weak::upgrade(&weak_core).expect("core alive");
                let own = core.set_shared("loop", Value::from("inner"));
                let other = core.set_shared("elsewhere", Value::from("inner"));
                results.lock().unwrap().push((own, other));
                SharedVerdict::Store(new.clone())
            }),
        )
        .unwrap();

    let core_in_thread = Arc::clone(&core);
    let stored = within(Duration::from_secs(30), move || {
        core_in_thread.set_shared("loop", Value::from("outer"))
    });

    assert_eq!(stored, Ok(Value::from("outer")));
    let results = inner.lock().unwrap();
    let [(own, other)] = results.as_slice() else {
        panic!("hook ran once: {results:?}");
    };
    assert!(
        matches!(own, Err(CoreError::Processing(message)) if message.contains("already being changed")),
        "{own:?}"
    );
    assert_eq!(other, &Ok(Value::from("inner")));
    assert_eq!(core.shared().get("loop"), Value::from("outer"));
    assert_eq!(core.shared().get("elsewhere"), Value::from("inner"));
}

#[test]
fn d4_never_set_identificator_reads_as_empty_dict() {
    let (core, _) = core_with_agents(&[]);
    assert_eq!(core.shared().get("never"), Value::Map(Map::default()));
    assert_eq!(core.shared().get("never").to_json_string(), "{}");
}

#[test]
fn d4_stored_values_read_back_exactly_with_int_keys() {
    let (core, _) = core_with_agents(&[]);
    let mut nested = Map::default();
    nested.insert(
        MapKey::Int(-7),
        Value::List(vec![Value::Null, Value::Bool(true)]),
    );
    nested.insert(MapKey::from("7"), Value::Float(0.5));
    let value = Value::record([
        ("ints", int_map(&[(1, 10), (2, 20)])),
        ("nested", Value::Map(nested)),
        ("text", Value::from("žluťoučký kůň")),
    ]);
    core.set_shared("everything", value.clone()).unwrap();
    let read = core.shared().get("everything");
    assert_eq!(read, value);
    // An int key and a str key that print alike stay distinct keys.
    let Some(Value::Map(nested)) = read.get("nested") else {
        panic!("nested dict expected");
    };
    assert!(nested.contains_key(&MapKey::Int(-7)) && nested.contains_key(&MapKey::from("7")));
    assert!(!nested.contains_key(&MapKey::from("-7")));
    // External JSON clients see int keys as strings.
    assert_eq!(
        read.to_json_string(),
        r#"{"ints":{"1":10,"2":20},"nested":{"-7":[null,true],"7":0.5},"text":"žluťoučký kůň"}"#
    );
}
