//! SPEC section 2: event callbacks (E1, E2), their timing and order (D5),
//! and removal of what a plugin left behind (L4).

use std::any::Any;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use ucs_core::events::{EVENT_AGENT_STATUS, EVENT_SHARED_DATA};
use ucs_core::registration::remove_owned_by_in;
use ucs_core::{
    AgentStatus, CoreError, Event, EventCallback, EventPayload, EventSink, PluginFailure,
    Registrable, SharedVerdict, StatusVerdict, Value,
};

use crate::fixtures::{
    callback, core_with_agents, plugin, recorder, shared_hook, status_hook, within,
};

/// Stands in for a Python bound method: two of them are `==` when they name
/// the same method, although they are distinct objects (E1).
struct NamedCallback {
    name: &'static str,
    calls: Arc<Mutex<Vec<&'static str>>>,
}

impl PartialEq for NamedCallback {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl EventCallback for NamedCallback {
    fn on_event(&self, _event: &Event) -> Result<(), PluginFailure> {
        self.calls.lock().expect("calls lock").push(self.name);
        Ok(())
    }
}

impl Registrable for NamedCallback {
    fn describe(&self) -> String {
        self.name.to_owned()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// What the Python side does for `removeCallback(event, callback)`: compare
/// with `==` outside any lock, then remove the first match by id.
fn remove_equal(core: &ucs_core::Core, event: &str, probe: &NamedCallback) -> bool {
    let registrations = core.events().callbacks(event).expect("a known event");
    let found = registrations.iter().find(|registration| {
        registration
            .target
            .as_any()
            .downcast_ref::<NamedCallback>()
            .is_some_and(|candidate| candidate == probe)
    });
    found.is_some_and(|registration| core.events().remove_callback(registration.id).is_some())
}

#[test]
fn e1_callback_registered_twice_is_removed_by_equality_one_at_a_time() {
    let (core, ids) = core_with_agents(&["alice"]);
    let calls = Arc::new(Mutex::new(Vec::new()));
    let method = |name| NamedCallback {
        name,
        calls: Arc::clone(&calls),
    };
    // `self.method` twice: two distinct but equal objects.
    core.events()
        .add_callback(
            EVENT_AGENT_STATUS,
            plugin("p"),
            Arc::new(method("Example.on_status")),
        )
        .unwrap();
    core.events()
        .add_callback(
            EVENT_AGENT_STATUS,
            plugin("p"),
            Arc::new(method("Example.on_status")),
        )
        .unwrap();
    core.events()
        .add_callback(
            EVENT_AGENT_STATUS,
            plugin("p"),
            Arc::new(method("Example.other")),
        )
        .unwrap();

    core.set_agent_status(ids[0], AgentStatus::Ready, "")
        .unwrap();
    assert_eq!(
        *calls.lock().unwrap(),
        ["Example.on_status", "Example.on_status", "Example.other"],
        "called once per registration, in registration order"
    );

    // Removal with a fresh, equal object (the documented `self.method`).
    assert!(remove_equal(
        &core,
        EVENT_AGENT_STATUS,
        &method("Example.on_status")
    ));
    calls.lock().unwrap().clear();
    core.set_agent_status(ids[0], AgentStatus::Busy, "")
        .unwrap();
    assert_eq!(
        *calls.lock().unwrap(),
        ["Example.on_status", "Example.other"]
    );

    assert!(remove_equal(
        &core,
        EVENT_AGENT_STATUS,
        &method("Example.on_status")
    ));
    assert!(!remove_equal(
        &core,
        EVENT_AGENT_STATUS,
        &method("Example.on_status")
    ));
    // Registered for another event: removing under this one finds nothing.
    assert!(!remove_equal(
        &core,
        EVENT_SHARED_DATA,
        &method("Example.other")
    ));
    calls.lock().unwrap().clear();
    core.set_agent_status(ids[0], AgentStatus::Ready, "")
        .unwrap();
    assert_eq!(*calls.lock().unwrap(), ["Example.other"]);
}

#[test]
fn e1_remove_callback_by_stale_id_is_false() {
    let (core, _) = core_with_agents(&[]);
    let (recorder, _) = recorder("r");
    let id = core
        .events()
        .add_callback(EVENT_SHARED_DATA, plugin("p"), recorder)
        .unwrap();
    assert_eq!(core.events().callbacks(EVENT_SHARED_DATA).unwrap().len(), 1);
    assert!(core.events().remove_callback(id).is_some());
    assert!(core.events().remove_callback(id).is_none());
    assert!(
        core.events()
            .callbacks(EVENT_SHARED_DATA)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn e2_unknown_event_is_refused() {
    let (core, _) = core_with_agents(&[]);
    for unknown in ["agent.state", "", "AGENT_STATUS", "EVENT_AGENT_STATUS"] {
        let (recorder, _) = recorder("r");
        let err = core
            .events()
            .add_callback(unknown, plugin("p"), recorder)
            .unwrap_err();
        assert!(
            matches!(&err, CoreError::Processing(message) if message.contains("unknown event")),
            "{unknown:?}: {err:?}"
        );
        assert!(core.events().callbacks(unknown).is_err());
    }
    assert_eq!(EVENT_AGENT_STATUS, "agent.status");
    assert_eq!(EVENT_SHARED_DATA, "shared.data");
}

#[test]
fn e2_agent_status_payload_is_the_agent_after_and_the_previous_state() {
    let (core, ids) = core_with_agents(&["alice"]);
    core.set_agent_status(ids[0], AgentStatus::Aux, "Lunch")
        .unwrap();
    let (recorder, seen) = recorder("r");
    core.events()
        .add_callback(EVENT_AGENT_STATUS, plugin("p"), recorder)
        .unwrap();

    core.set_agent_status(ids[0], AgentStatus::Ready, "")
        .unwrap();

    let seen = seen.lock().unwrap();
    let [event] = seen.as_slice() else {
        panic!("one event expected: {seen:?}");
    };
    assert_eq!(event.name(), EVENT_AGENT_STATUS);
    let EventPayload::AgentStatus {
        agent,
        previous_status,
        previous_reason,
    } = &event.payload
    else {
        panic!("agent status payload expected: {event:?}");
    };
    assert_eq!((agent.id, agent.username.as_str()), (ids[0], "alice"));
    assert_eq!(
        (agent.status, agent.reason.as_str()),
        (AgentStatus::Ready, "")
    );
    assert_eq!(
        (*previous_status, previous_reason.as_str()),
        (AgentStatus::Aux, "Lunch")
    );
    // `agent['status']`, `agent['reason']`, `agent['displayname']` and the
    // `args` dict, as external subscribers get them.
    let data = event.data();
    let agent = data.get("agent").unwrap();
    assert_eq!(agent.get("status"), Some(&Value::Int(1)));
    assert_eq!(agent.get("reason"), Some(&Value::from("")));
    assert_eq!(agent.get("displayname"), Some(&Value::from("alice")));
    assert_eq!(data.get("previous_status"), Some(&Value::Int(2)));
    assert_eq!(data.get("previous_reason"), Some(&Value::from("Lunch")));
}

#[test]
fn e2_shared_data_payload_is_identificator_and_stored_data() {
    let (core, _) = core_with_agents(&[]);
    let (recorder, seen) = recorder("r");
    core.events()
        .add_callback(EVENT_SHARED_DATA, plugin("p"), recorder)
        .unwrap();
    core.shared()
        .add_hook(
            "queue",
            plugin("p"),
            shared_hook(|_, _, _| SharedVerdict::Store(Value::from("rewritten"))),
        )
        .unwrap();

    core.set_shared("queue", Value::Int(3)).unwrap();

    let seen = seen.lock().unwrap();
    let [event] = seen.as_slice() else {
        panic!("one event expected: {seen:?}");
    };
    assert_eq!(event.name(), EVENT_SHARED_DATA);
    assert_eq!(
        event.payload,
        EventPayload::SharedData {
            identificator: "queue".to_owned(),
            data: Value::from("rewritten"),
        }
    );
    assert_eq!(
        event.data(),
        Value::record([
            ("identificator", Value::from("queue")),
            ("data", Value::from("rewritten"))
        ])
    );
}

#[test]
fn e2_callbacks_get_only_their_event() {
    let (core, ids) = core_with_agents(&["alice"]);
    let (status_recorder, status_seen) = recorder("status");
    let (shared_recorder, shared_seen) = recorder("shared");
    core.events()
        .add_callback(EVENT_AGENT_STATUS, plugin("p"), status_recorder)
        .unwrap();
    core.events()
        .add_callback(EVENT_SHARED_DATA, plugin("p"), shared_recorder)
        .unwrap();
    core.set_agent_status(ids[0], AgentStatus::Ready, "")
        .unwrap();
    core.set_shared("x", Value::Int(1)).unwrap();
    core.set_shared("y", Value::Int(2)).unwrap();
    assert_eq!(status_seen.lock().unwrap().len(), 1);
    assert_eq!(shared_seen.lock().unwrap().len(), 2);
}

#[test]
fn d5_callbacks_run_after_commit_and_before_the_call_returns() {
    let (core, ids) = core_with_agents(&["alice"]);
    let observed = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&observed);
    let weak_core = Arc::downgrade(&core);
    let alice = ids[0];
    core.events()
        .add_callback(
            EVENT_AGENT_STATUS,
            plugin("p"),
            callback("observer", move |_| {
                let core = Weak::upgrade(&weak_core).expect("core alive");
                // The change is already visible to everyone.
                let stored = core.directory().agent(alice).unwrap();
                log.lock()
                    .unwrap()
                    .push((stored.status, core.shared().get("x")));
                Ok(())
            }),
        )
        .unwrap();
    core.events()
        .add_callback(
            EVENT_SHARED_DATA,
            plugin("p"),
            callback("observer", {
                let weak_core = Arc::downgrade(&core);
                let log = Arc::clone(&observed);
                move |_| {
                    let core = Weak::upgrade(&weak_core).expect("core alive");
                    let stored = core.directory().agent(alice).unwrap();
                    log.lock()
                        .unwrap()
                        .push((stored.status, core.shared().get("x")));
                    Ok(())
                }
            }),
        )
        .unwrap();

    core.set_agent_status(alice, AgentStatus::Ready, "")
        .unwrap();
    assert_eq!(
        observed.lock().unwrap().len(),
        1,
        "ran before the call returned"
    );
    core.set_shared("x", Value::Int(7)).unwrap();
    assert_eq!(
        observed.lock().unwrap().len(),
        2,
        "ran before the call returned"
    );

    assert_eq!(
        *observed.lock().unwrap(),
        [
            (AgentStatus::Ready, Value::empty_map()),
            (AgentStatus::Ready, Value::Int(7)),
        ]
    );
}

#[test]
fn d5_events_are_numbered_and_delivered_in_commit_order() {
    let (core, ids) = core_with_agents(&["alice", "bob"]);
    let (recorder, seen) = recorder("r");
    core.events()
        .add_callback(EVENT_AGENT_STATUS, plugin("p"), Arc::clone(&recorder))
        .unwrap();
    core.events()
        .add_callback(EVENT_SHARED_DATA, plugin("p"), recorder)
        .unwrap();

    core.set_agent_status(ids[0], AgentStatus::Ready, "")
        .unwrap();
    core.set_shared("x", Value::Int(1)).unwrap();
    core.set_agent_status(ids[1], AgentStatus::Aux, "Lunch")
        .unwrap();
    core.set_shared("x", Value::Int(2)).unwrap();

    let seen = seen.lock().unwrap();
    let names: Vec<_> = seen.iter().map(Event::name).collect();
    assert_eq!(
        names,
        [
            EVENT_AGENT_STATUS,
            EVENT_SHARED_DATA,
            EVENT_AGENT_STATUS,
            EVENT_SHARED_DATA
        ]
    );
    assert!(
        seen.windows(2).all(|pair| pair[0].seq + 1 == pair[1].seq),
        "seqs increase by one: {:?}",
        seen.iter().map(|event| event.seq).collect::<Vec<_>>()
    );
}

#[test]
fn d5_failing_callback_is_logged_and_changes_nothing() {
    let (core, ids) = core_with_agents(&["alice"]);
    core.events()
        .add_callback(
            EVENT_AGENT_STATUS,
            plugin("broken"),
            callback("broken", |_| Err(PluginFailure::new("Traceback: boom"))),
        )
        .unwrap();
    let (recorder, seen) = recorder("after the broken one");
    core.events()
        .add_callback(EVENT_AGENT_STATUS, plugin("p"), recorder)
        .unwrap();

    let after = core
        .set_agent_status(ids[0], AgentStatus::Ready, "")
        .unwrap();

    assert_eq!(after.status, AgentStatus::Ready);
    assert_eq!(
        core.directory().agent(ids[0]).unwrap().status,
        AgentStatus::Ready
    );
    assert_eq!(seen.lock().unwrap().len(), 1, "later callbacks still run");
    assert!(core.set_shared("x", Value::Int(1)).is_ok());
}

/// Issue 12, defect 2: a Rust panic inside a callback (for example in a
/// server method the callback called) used to leave the bus claimed by the
/// panicking thread, so every later event waited out the callback wait
/// limit and was never delivered. Now the panic is that callback's failure
/// (D5): the change stands, later callbacks run, and the next change's
/// event, from another thread, is delivered.
#[test]
fn d5_a_panicking_callback_neither_fails_the_change_nor_wedges_the_bus() {
    let (core, ids) = core_with_agents(&["alice", "bob"]);
    let panicked = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let first_time = Arc::clone(&panicked);
    core.events()
        .add_callback(
            EVENT_AGENT_STATUS,
            plugin("panicky"),
            callback("panicky", move |_| {
                if !first_time.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    panic!("a bug in a method the callback called");
                }
                Ok(())
            }),
        )
        .unwrap();
    let (recorder, seen) = recorder("after the panicky one");
    core.events()
        .add_callback(EVENT_AGENT_STATUS, plugin("p"), recorder)
        .unwrap();

    let first = Arc::clone(&core);
    let alice = ids[0];
    let changed = within(Duration::from_secs(3), move || {
        first.set_agent_status(alice, AgentStatus::Ready, "")
    });
    assert_eq!(changed.map(|agent| agent.status), Ok(AgentStatus::Ready));
    assert!(panicked.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(seen.lock().unwrap().len(), 1, "later callbacks still run");

    // Another thread's change: with the bus wedged it would wait out the
    // 5 s wait limit and return with its event undelivered.
    let second = Arc::clone(&core);
    let bob = ids[1];
    within(Duration::from_secs(3), move || {
        second.set_agent_status(bob, AgentStatus::Ready, "")
    })
    .unwrap();
    assert_eq!(seen.lock().unwrap().len(), 2, "the next event is delivered");
}

#[test]
fn d5_callback_changing_the_same_agent_dispatches_the_nested_event_in_order() {
    let (core, ids) = core_with_agents(&["alice"]);
    let alice = ids[0];
    // One recorder before the router that makes the nested change and one
    // after it: both must see the events in commit order (D5).
    let (first_recorder, seen) = recorder("r");
    let (late_recorder, seen_late) = recorder("late");
    core.events()
        .add_callback(EVENT_AGENT_STATUS, plugin("p"), first_recorder)
        .unwrap();
    let weak_core = Arc::downgrade(&core);
    let router_log = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&router_log);
    let seen_by_router = Arc::clone(&seen);
    // Whenever alice goes READY, put her straight on a call.
    core.events()
        .add_callback(
            EVENT_AGENT_STATUS,
            plugin("router"),
            callback("router", move |event| {
                log.lock().unwrap().push(format!("enter {}", event.seq));
                if let EventPayload::AgentStatus { agent, .. } = &event.payload
                    && agent.status == AgentStatus::Ready
                {
                    let core = Weak::upgrade(&weak_core).expect("core alive");
                    let result = core.set_agent_status(agent.id, AgentStatus::Busy, "call 1");
                    // The nested call returns before its event is delivered:
                    // the current event's callbacks come first.
                    let delivered = seen_by_router.lock().unwrap().len();
                    log.lock().unwrap().push(format!(
                        "nested {:?} delivered {delivered}",
                        result.map(|a| a.status)
                    ));
                }
                Ok(())
            }),
        )
        .unwrap();
    core.events()
        .add_callback(EVENT_AGENT_STATUS, plugin("p"), late_recorder)
        .unwrap();
    core.status_hook()
        .add(
            plugin("p"),
            status_hook(|_, _, _| StatusVerdict::LetThrough),
        )
        .unwrap();

    let core_in_thread = Arc::clone(&core);
    let after = within(Duration::from_secs(30), move || {
        core_in_thread.set_agent_status(alice, AgentStatus::Ready, "")
    })
    .unwrap();

    // The call returns the state its own change produced, and the nested
    // change, done by the callback, went through.
    assert_eq!(after.status, AgentStatus::Ready);
    let stored = core.directory().agent(alice).unwrap();
    assert_eq!(
        (stored.status, stored.reason.as_str()),
        (AgentStatus::Busy, "call 1")
    );

    // Both events were delivered before the outer call returned, in commit
    // order, and the nested one starts where the first ended.
    let seen = seen.lock().unwrap();
    let transitions: Vec<_> = seen
        .iter()
        .map(|event| match &event.payload {
            EventPayload::AgentStatus {
                agent,
                previous_status,
                ..
            } => (event.seq, *previous_status, agent.status),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(transitions.len(), 2, "{transitions:?}");
    let (first, second) = (transitions[0], transitions[1]);
    assert_eq!(second.0, first.0 + 1);
    assert_eq!(
        (first.1, first.2),
        (AgentStatus::Offline, AgentStatus::Ready)
    );
    assert_eq!(
        (second.1, second.2),
        (AgentStatus::Ready, AgentStatus::Busy)
    );
    assert_eq!(
        *router_log.lock().unwrap(),
        [
            format!("enter {}", first.0),
            "nested Ok(Busy) delivered 1".to_owned(),
            format!("enter {}", second.0),
        ]
    );
    let late: Vec<u64> = seen_late.lock().unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(
        late,
        [first.0, second.0],
        "a later callback also sees commit order"
    );
}

/// A sink that keeps the seqs it was handed.
struct SeqSink(Mutex<Vec<u64>>);

impl EventSink for SeqSink {
    fn deliver(&self, event: &Event) {
        self.0.lock().expect("sink lock").push(event.seq);
    }
}

#[test]
fn d5_sinks_see_every_event_in_commit_order_even_without_callbacks() {
    let (core, ids) = core_with_agents(&["alice"]);
    let sink = Arc::new(SeqSink(Mutex::new(Vec::new())));
    let id = core
        .events()
        .add_sink(Arc::clone(&sink) as Arc<dyn EventSink>);
    core.set_agent_status(ids[0], AgentStatus::Ready, "")
        .unwrap();
    core.set_shared("x", Value::Int(1)).unwrap();
    core.events().remove_sink(id);
    core.set_shared("x", Value::Int(2)).unwrap();
    let seqs = sink.0.lock().unwrap().clone();
    assert_eq!(seqs.len(), 2, "{seqs:?}");
    assert!(seqs[0] < seqs[1]);
}

#[test]
fn l4_remove_owned_by_removes_only_that_plugins_registrations() {
    let (core, ids) = core_with_agents(&["alice"]);
    let (mine, _) = recorder("Leaky.on_status");
    let (theirs, theirs_seen) = recorder("Other.on_status");
    core.events()
        .add_callback(EVENT_AGENT_STATUS, plugin("leaky"), mine)
        .unwrap();
    core.events()
        .add_callback(EVENT_AGENT_STATUS, plugin("other"), theirs)
        .unwrap();
    core.status_hook()
        .add(
            plugin("leaky"),
            status_hook(|_, _, _| StatusVerdict::Block {
                reason: String::new(),
            }),
        )
        .unwrap();
    core.shared()
        .add_hook(
            "x",
            plugin("leaky"),
            shared_hook(|_, _, _| SharedVerdict::Store(Value::Null)),
        )
        .unwrap();
    core.shared()
        .add_hook(
            "y",
            plugin("other"),
            shared_hook(|_, _, _| SharedVerdict::Store(Value::from("other's"))),
        )
        .unwrap();

    let leftovers = remove_owned_by_in(&core.slots(), &plugin("leaky"));

    let mut descriptions: Vec<_> = leftovers
        .iter()
        .map(|leftover| {
            assert_eq!(leftover.owner, plugin("leaky"));
            leftover.to_string()
        })
        .collect();
    descriptions.sort();
    assert_eq!(descriptions.len(), 3, "{descriptions:?}");
    assert!(descriptions.iter().any(|d| d.contains("Leaky.on_status")));
    assert!(remove_owned_by_in(&core.slots(), &plugin("leaky")).is_empty());
    // What the other plugin registered still works; the leaky hooks are gone.
    assert_eq!(core.status_hook().owner(), None);
    core.set_agent_status(ids[0], AgentStatus::Ready, "")
        .unwrap();
    assert_eq!(theirs_seen.lock().unwrap().len(), 1);
    assert_eq!(core.set_shared("x", Value::Int(1)), Ok(Value::Int(1)));
    assert_eq!(
        core.set_shared("y", Value::Int(1)),
        Ok(Value::from("other's"))
    );
}
