//! Event callbacks through real plugin files: SPEC E1, E2, D5. Module names
//! are unique in this binary.

mod common;

use std::sync::{Arc, Mutex};

use common::{TestServer, field, json, log_records_of, py};
use ucs_core::events::EventSink;
use ucs_core::{Event, EventPayload, Value};

const AUX: i64 = 2;
const READY: i64 = 1;

#[test]
fn e1_remove_callback_with_a_fresh_bound_method_works_by_equality() {
    let plugin = py(r#"
class E1Plugin:
    def __init__(self, ucs):
        self.ucs = ucs
        self.count = 0
        ucs.addCallback(events.EVENT_AGENT_STATUS, self.on_status)
        ucs.addCallback(events.EVENT_SHARED_DATA, self.control)
        put(ucs, 'e1_fresh', self.on_status is not self.on_status)

    def on_status(self, agent, args):
        self.count += 1
        put(self.ucs, 'e1_count', self.count)

    def control(self, identificator, data):
        if identificator == 'e1_remove':
            # A new bound-method object, equal to the registered one.
            self.ucs.removeCallback(events.EVENT_AGENT_STATUS, self.on_status)
        if identificator == 'e1_remove_unknown':
            self.ucs.removeCallback(events.EVENT_AGENT_STATUS, lambda agent, args: None)

UCS_PLUGIN = 'E1Plugin'
"#);
    let server = TestServer::start(&[("e1_remove.py", &plugin)]);
    assert_eq!(server.shared("e1_fresh"), Value::Bool(true));
    let agent = server.add_agent("e1_alice");
    server.set_status(agent, AUX, "Lunch").unwrap();
    assert_eq!(server.shared("e1_count"), Value::Int(1));

    // Removing something never registered changes nothing and warns.
    server
        .call(
            "shared.set",
            vec![Value::from("e1_remove_unknown"), Value::Int(1)],
        )
        .unwrap();
    assert!(
        !log_records_of(
            "e1_remove",
            &["WARN", "removeCallback('agent.status', ...) ignored"]
        )
        .is_empty()
    );
    server.set_status(agent, READY, "").unwrap();
    assert_eq!(server.shared("e1_count"), Value::Int(2));

    server
        .call("shared.set", vec![Value::from("e1_remove"), Value::Int(1)])
        .unwrap();
    server.set_status(agent, AUX, "Break").unwrap();
    assert_eq!(
        server.shared("e1_count"),
        Value::Int(2),
        "the callback is no longer called"
    );
    // It was really removed, not just skipped: unload finds no leftover of it.
    server.unload("e1_remove").unwrap();
    assert!(log_records_of("e1_remove", &["callback for agent.status", "removed it"]).is_empty());
    assert_eq!(
        log_records_of("e1_remove", &["callback for shared.data", "removed it"]).len(),
        1
    );
}

#[test]
fn e2_agent_status_callback_gets_the_agent_after_and_the_previous_state() {
    let plugin = py(r#"
class E2Status:
    def __init__(self, ucs):
        self.ucs = ucs
        ucs.addCallback(events.EVENT_AGENT_STATUS, self.on_status)

    def on_status(self, agent, args):
        record(self.ucs, 'e2_status', {
            'status': agent['status'],
            'reason': agent['reason'],
            'displayname': agent['displayname'],
            'username': agent['username'],
            'args_type': type(args).__name__,
            'args': args,
        })

UCS_PLUGIN = 'E2Status'
"#);
    let server = TestServer::start(&[("e2_status.py", &plugin)]);
    let agent = server.add_agent("e2_alice");
    server.set_status(agent, AUX, "Lunch").unwrap();
    server.set_status(agent, READY, "").unwrap();
    assert_eq!(
        server.shared("e2_status"),
        json(
            r#"[
            {"status": 2, "reason": "Lunch", "displayname": "e2_alice display",
             "username": "e2_alice", "args_type": "dict",
             "args": {"previous_status": 0, "previous_reason": ""}},
            {"status": 1, "reason": "", "displayname": "e2_alice display",
             "username": "e2_alice", "args_type": "dict",
             "args": {"previous_status": 2, "previous_reason": "Lunch"}}
        ]"#
        )
    );
}

#[test]
fn e2_shared_data_callback_gets_identificator_and_the_data_stored() {
    let plugin = py(r#"
class E2Shared:
    def __init__(self, ucs):
        self.ucs = ucs
        self.seen = []
        ucs.shared.addChangeHook('e2_hooked', lambda i, old, new: {'hooked': new})
        ucs.addCallback(events.EVENT_SHARED_DATA, self.on_shared)

    def on_shared(self, identificator, data):
        if identificator.startswith('e2_'):
            self.seen.append([identificator, data])
            # Reported under a name this callback ignores.
            put(self.ucs, 'seen', self.seen)

UCS_PLUGIN = 'E2Shared'
"#);
    let server = TestServer::start(&[("e2_shared.py", &plugin)]);
    server
        .call(
            "shared.set",
            vec![Value::from("e2_plain"), json(r#"{"a": [1, 2]}"#)],
        )
        .unwrap();
    server
        .call("shared.set", vec![Value::from("e2_hooked"), Value::Int(3)])
        .unwrap();
    assert_eq!(
        server.shared("seen"),
        json(r#"[["e2_plain", {"a": [1, 2]}], ["e2_hooked", {"hooked": 3}]]"#)
    );
}

#[test]
fn e2_unknown_event_raises_processing_error_in_the_plugin() {
    let plugin = py(r#"
class E2Unknown:
    def __init__(self, ucs):
        outcome = {}
        for event in ('agent.statuss', 'no.such.event', ''):
            try:
                ucs.addCallback(event, lambda *args: None)
                outcome[event] = 'accepted'
            except error.ProcessingError as e:
                outcome[event] = 'ProcessingError: %s' % e
        outcome['is_ucs_error'] = issubclass(error.ProcessingError, error.UcsError)
        put(ucs, 'e2_unknown', outcome)

UCS_PLUGIN = 'E2Unknown'
"#);
    let server = TestServer::start(&[("e2_unknown.py", &plugin)]);
    let outcome = server.shared("e2_unknown");
    for event in ["agent.statuss", "no.such.event", ""] {
        let text = field(&outcome, event).as_str().unwrap();
        assert!(text.starts_with("ProcessingError: "), "{event:?}: {text}");
        assert!(text.contains("unknown event"), "{event:?}: {text}");
    }
    assert_eq!(field(&outcome, "is_ucs_error"), &Value::Bool(true));
    // Nothing was registered by the failed calls.
    server.unload("e2_unknown").unwrap();
    assert!(log_records_of("e2_unknown", &["removed it"]).is_empty());
}

#[test]
fn d5_callback_has_run_before_the_api_call_that_caused_it_returns() {
    let plugin = py(r#"
class D5Before:
    def __init__(self, ucs):
        self.ucs = ucs
        ucs.addCallback(events.EVENT_AGENT_STATUS, self.on_status)

    def on_status(self, agent, args):
        time.sleep(0.05)  # a slow callback is still waited for
        put(self.ucs, 'd5_seen', [agent['status'], agent['reason']])

UCS_PLUGIN = 'D5Before'
"#);
    let server = TestServer::start(&[("d5_before.py", &plugin)]);
    let agent = server.add_agent("d5_alice");
    for (status, reason) in [(AUX, "Lunch"), (READY, ""), (AUX, "Break")] {
        server.set_status(agent, status, reason).unwrap();
        // No waiting: the call returned, so the callback has run.
        assert_eq!(
            server.shared("d5_seen"),
            Value::List(vec![Value::Int(status), Value::from(reason)])
        );
    }
    // The change was committed before the callback ran: it sees it too.
}

/// Issue 15 item 2: a callback that answers every status change of an
/// agent with another change of that agent would ping-pong forever, and
/// the call that started it would never return (D5). The cascade stops
/// after `MAX_CASCADE_DEPTH` changes made by callbacks, the call returns,
/// the plugin is named, and the count stays put afterwards.
#[test]
fn d5_a_callback_ping_pong_ends_at_the_cascade_depth_and_the_first_call_returns() {
    let plugin = py(r#"
class PingPong:
    def __init__(self, ucs):
        self.ucs = ucs
        self.calls = 0
        ucs.addCallback(events.EVENT_AGENT_STATUS, self.on_status)

    def on_status(self, agent, args):
        if agent['username'] != 'pingpong_agent':
            return
        self.calls += 1
        put(self.ucs, 'pingpong_calls', self.calls)
        flipped = constants.AGENT_AUX if agent['status'] == constants.AGENT_READY else constants.AGENT_READY
        self.ucs.api.agents.setStatus(self.ucs.sid, agent['id'], flipped, 'pong')

UCS_PLUGIN = 'PingPong'
"#);
    let server = TestServer::start(&[("pingpong.py", &plugin)]);
    let agent = server.add_agent("pingpong_agent");
    let (done, returned) = std::sync::mpsc::channel();
    let api = server.api.clone();
    let sid = server.admin_sid.clone();
    std::thread::spawn(move || {
        let result = api.call(
            &sid,
            "agents.setStatus",
            vec![Value::Int(agent), Value::Int(READY), Value::from("")],
        );
        let _ = done.send(result.map(drop));
    });
    returned
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the call that started the ping-pong returned")
        .expect("and succeeded");
    // The API call's change, then one change per level of the cascade.
    let limit = i64::from(ucs_core::events::MAX_CASCADE_DEPTH);
    assert_eq!(server.shared("pingpong_calls"), Value::Int(limit + 1));
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        server.shared("pingpong_calls"),
        Value::Int(limit + 1),
        "the cascade went on after the call returned"
    );
    assert!(
        !log_records_of(
            "pingpong",
            &["event callbacks loop", "PingPong.on_status()"]
        )
        .is_empty(),
        "the looping plugin is not named"
    );
}

/// Records agent-status events at commit, in seq order, as the test's truth.
struct CommitOrder(Mutex<Vec<Value>>);

impl EventSink for CommitOrder {
    fn deliver(&self, event: &Event) {
        if let EventPayload::AgentStatus {
            agent,
            previous_status,
            ..
        } = &event.payload
        {
            self.0.lock().expect("not poisoned").push(Value::List(vec![
                Value::Int(agent.id),
                Value::Int(agent.status.code()),
                Value::Int(previous_status.code()),
            ]));
        }
    }
}

#[test]
fn d5_callbacks_see_events_in_commit_order() {
    let plugin = py(r#"
class D5Order:
    def __init__(self, ucs):
        self.ucs = ucs
        self.seen = []
        ucs.addCallback(events.EVENT_AGENT_STATUS, self.on_status)
        ucs.shared.addChangeHook('d5_dump', self.dump)

    def on_status(self, agent, args):
        self.seen.append([agent['id'], agent['status'], args['previous_status']])

    def dump(self, identificator, old_data, new_data):
        return list(self.seen)

UCS_PLUGIN = 'D5Order'
"#);
    let server = TestServer::start(&[("d5_order.py", &plugin)]);
    let sink = Arc::new(CommitOrder(Mutex::new(Vec::new())));
    server.core.events().add_sink(sink.clone());
    let agents: Vec<i64> = (0..4)
        .map(|n| server.add_agent(&format!("d5_order_{n}")))
        .collect();
    std::thread::scope(|scope| {
        for &agent in &agents {
            let server = &server;
            scope.spawn(move || {
                for round in 0..15 {
                    let status = [AUX, READY, 3][round % 3];
                    server.set_status(agent, status, "").unwrap();
                }
            });
        }
    });
    let seen = server
        .call("shared.set", vec![Value::from("d5_dump"), Value::Null])
        .unwrap();
    let committed = Value::List(sink.0.lock().unwrap().clone());
    let Value::List(items) = &committed else {
        unreachable!()
    };
    assert_eq!(items.len(), 60);
    assert_eq!(seen, committed, "callbacks ran in commit order");
}

#[test]
fn d5_exception_in_a_callback_is_logged_with_traceback_and_changes_nothing() {
    let plugin = py(r#"
class D5Raises:
    def __init__(self, ucs):
        self.ucs = ucs
        ucs.addCallback(events.EVENT_AGENT_STATUS, self.broken)
        ucs.addCallback(events.EVENT_AGENT_STATUS, self.after)
        ucs.addCallback(events.EVENT_SHARED_DATA, self.broken_shared)

    def broken(self, agent, args):
        raise LookupError('d5 callback bug %s' % agent['reason'])

    def after(self, agent, args):
        put(self.ucs, 'd5_after', agent['reason'])

    def broken_shared(self, identificator, data):
        if identificator == 'd5_data':
            raise LookupError('d5 shared callback bug')

UCS_PLUGIN = 'D5Raises'
"#);
    let server = TestServer::start(&[("d5_raises.py", &plugin)]);
    let agent = server.add_agent("d5_bob");
    let after = server.set_status(agent, AUX, "Lunch").unwrap();
    assert_eq!(field(&after, "reason"), &Value::from("Lunch"));
    assert_eq!(
        server.shared("d5_after"),
        Value::from("Lunch"),
        "later callbacks still run"
    );
    let stored = server
        .call("shared.set", vec![Value::from("d5_data"), Value::Int(4)])
        .unwrap();
    assert_eq!(stored, Value::Int(4));
    assert_eq!(server.shared("d5_data"), Value::Int(4), "the change stands");
    for message in [
        "LookupError: d5 callback bug Lunch",
        "LookupError: d5 shared callback bug",
    ] {
        let logged = log_records_of(
            "d5_raises",
            &["ERROR", "event callback", "Traceback", message],
        );
        assert_eq!(logged.len(), 1, "{message}: {logged:#?}");
    }
}
