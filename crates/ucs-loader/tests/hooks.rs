//! The agent status hook (SPEC H1-H6) and shared-data change hooks (S1-S4)
//! through real plugin files. Module names are unique in this binary.

mod common;

use common::{TestServer, field, json, log_records_of, py};
use ucs_api::{ApiError, PluginState};
use ucs_core::{AgentStatus, Value};

/// The agent's status and reason as the API reports them.
fn status_of(server: &TestServer, agent: i64) -> (i64, String) {
    let Ok(Value::List(agents)) = server.call("agents.list", vec![]) else {
        panic!("agents.list failed")
    };
    let found = agents
        .iter()
        .find(|item| field(item, "id") == &Value::Int(agent))
        .expect("the agent is listed");
    (
        field(found, "status").as_int().expect("an int status"),
        field(found, "reason")
            .as_str()
            .expect("a str reason")
            .to_owned(),
    )
}

const AUX: i64 = 2;
const READY: i64 = 1;

#[test]
fn h1_only_one_status_hook_and_only_its_owner_removes_it() {
    let owner = py(r#"
class Owner:
    def __init__(self, ucs):
        self.ucs = ucs
        ucs.agents.addChangeStatusHook(self.hook)
        try:
            ucs.agents.addChangeStatusHook(self.hook)
            put(ucs, 'h1_owner_twice', 'accepted')
        except error.ProcessingError as e:
            put(ucs, 'h1_owner_twice', 'ProcessingError: %s' % e)

    def hook(self, agent, status, reason):
        return status, 'owned'

    def stop(self):
        self.ucs.agents.removeChangeStatusHook()

UCS_PLUGIN = 'Owner'
"#);
    let intruder = py(r#"
class Intruder:
    def __init__(self, ucs):
        try:
            ucs.agents.addChangeStatusHook(lambda agent, status, reason: (status, 'intruder'))
            put(ucs, 'h1_second', 'accepted')
        except error.ProcessingError as e:
            put(ucs, 'h1_second', 'ProcessingError: %s' % e)
            # Not the owner: must leave the hook in place, with a warning.
            ucs.agents.removeChangeStatusHook()

UCS_PLUGIN = 'Intruder'
"#);
    let server = TestServer::start(&[("h1_a_owner.py", &owner), ("h1_b_intruder.py", &intruder)]);
    assert_eq!(server.state_of("h1_a_owner"), PluginState::Running);
    assert_eq!(server.state_of("h1_b_intruder"), PluginState::Running);
    for key in ["h1_owner_twice", "h1_second"] {
        let seen = server.shared(key);
        let text = seen.as_str().unwrap();
        assert!(text.starts_with("ProcessingError: "), "{key}: {text}");
        assert!(text.contains("h1_a_owner"), "{key}: {text}");
    }
    // The non-owner's removal left the hook and warned.
    let agent = server.add_agent("h1_alice");
    let after = server.set_status(agent, AUX, "Lunch").unwrap();
    assert_eq!(field(&after, "reason"), &Value::from("owned"));
    let warnings = log_records_of("h1_b_intruder", &["WARN", "removeChangeStatusHook ignored"]);
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(warnings[0].contains("h1_a_owner"), "{warnings:#?}");

    // The owner removes it in stop(): no leftover, and the slot is free.
    server.unload("h1_a_owner").unwrap();
    assert!(log_records_of("h1_a_owner", &["removed it"]).is_empty());
    let after = server.set_status(agent, READY, "").unwrap();
    assert_eq!(field(&after, "reason"), &Value::from(""));
    server.load("h1_b_intruder").unwrap();
    assert_eq!(server.shared("h1_second"), Value::from("accepted"));
    let after = server.set_status(agent, AUX, "Break").unwrap();
    assert_eq!(field(&after, "reason"), &Value::from("intruder"));
}

#[test]
fn h2_hook_gets_an_agents_agent_with_the_state_before_the_change() {
    let plugin = py(r#"
class H2Hook:
    def __init__(self, ucs):
        self.ucs = ucs
        ucs.agents.addChangeStatusHook(self.hook)

    def hook(self, agent, status, reason):
        record(self.ucs, 'h2_calls', {
            'is_agent': isinstance(agent, agents.Agent),
            'id': agent.id,
            'username': agent.username,
            'displayname': agent.displayname,
            'status': agent.status,
            'reason': agent.reason,
            'by_key': [agent['status'], agent['reason']],
            'requested': [status, reason],
            'types': [type(status).__name__, type(reason).__name__],
            'in_enum': status in constants.AGENT_STATE_ENUM,
        })
        return status, reason

UCS_PLUGIN = 'H2Hook'
"#);
    let server = TestServer::start(&[("h2_before.py", &plugin)]);
    let agent = server.add_agent("h2_alice");
    server.set_status(agent, AUX, "Lunch").unwrap();
    server.set_status(agent, READY, "").unwrap();
    let Value::List(calls) = server.shared("h2_calls") else {
        panic!("{:?}", server.shared("h2_calls"))
    };
    assert_eq!(calls.len(), 2);
    let mut expected = json(
        r#"{"is_agent": true, "id": 0, "username": "h2_alice",
            "displayname": "h2_alice display", "status": 0, "reason": "",
            "by_key": [0, ""], "requested": [2, "Lunch"], "types": ["int", "str"],
            "in_enum": true}"#,
    );
    if let Value::Map(map) = &mut expected {
        map.insert("id".into(), Value::Int(agent));
    }
    assert_eq!(calls[0], expected);
    // The second call sees the state the first change left.
    assert_eq!(field(&calls[1], "status"), &Value::Int(AUX));
    assert_eq!(field(&calls[1], "reason"), &Value::from("Lunch"));
    assert_eq!(field(&calls[1], "by_key"), &json(r#"[2, "Lunch"]"#));
    assert_eq!(field(&calls[1], "requested"), &json(r#"[1, ""]"#));
}

#[test]
fn h3_returning_the_request_unchanged_lets_it_through() {
    let plugin = py(r#"
class H3Hook:
    def __init__(self, ucs):
        self.ucs = ucs
        ucs.agents.addChangeStatusHook(self.hook)

    def hook(self, agent, status, reason):
        record(self.ucs, 'h3_calls', [status, reason])
        return (status, reason)

UCS_PLUGIN = 'H3Hook'
"#);
    let server = TestServer::start(&[("h3_through.py", &plugin)]);
    let agent = server.add_agent("h3_alice");
    let after = server.set_status(agent, AUX, "Break").unwrap();
    assert_eq!(field(&after, "status"), &Value::Int(AUX));
    assert_eq!(field(&after, "reason"), &Value::from("Break"));
    assert_eq!(status_of(&server, agent), (AUX, "Break".to_owned()));
    server.set_status(agent, READY, "").unwrap();
    assert_eq!(status_of(&server, agent), (READY, String::new()));
    assert_eq!(
        server.shared("h3_calls"),
        json(r#"[[2, "Break"], [1, ""]]"#)
    );
}

#[test]
fn h4_returning_another_state_switches_to_it_instead() {
    let plugin = py(r#"
class H4Hook:
    def __init__(self, ucs):
        ucs.agents.addChangeStatusHook(self.hook)

    def hook(self, agent, status, reason):
        if status == constants.AGENT_READY:
            return constants.AGENT_AUX, 'Briefing first'
        if reason == 'typo':
            return status, 'Lunch'
        return status, reason

UCS_PLUGIN = 'H4Hook'
"#);
    let server = TestServer::start(&[("h4_rewrite.py", &plugin)]);
    let agent = server.add_agent("h4_alice");
    let after = server.set_status(agent, READY, "").unwrap();
    assert_eq!(field(&after, "status"), &Value::Int(AUX));
    assert_eq!(field(&after, "reason"), &Value::from("Briefing first"));
    assert_eq!(
        status_of(&server, agent),
        (AUX, "Briefing first".to_owned())
    );
    // Only the reason rewritten.
    let after = server.set_status(agent, AUX, "typo").unwrap();
    assert_eq!(field(&after, "reason"), &Value::from("Lunch"));
    // To offline, let through.
    server.set_status(agent, 0, "").unwrap();
    assert_eq!(status_of(&server, agent), (0, String::new()));
}

#[test]
fn h5_none_with_empty_reason_blocks_with_blocked_by_hook() {
    let plugin = py(r#"
class H5Hook:
    def __init__(self, ucs):
        ucs.agents.addChangeStatusHook(self.hook)

    def hook(self, agent, status, reason):
        if reason == 'message':
            return None, 'Not during a campaign'
        if reason == 'empty':
            return None, ''
        if reason == 'none':
            return None, None
        if reason == 'zero':
            return None, 0
        if reason == 'raise':
            raise error.ProcessingError('Raised by the hook')
        if reason == 'raise-bare':
            raise error.ProcessingError()
        return status, reason

UCS_PLUGIN = 'H5Hook'
"#);
    let server = TestServer::start(&[("h5_block.py", &plugin)]);
    let agent = server.add_agent("h5_alice");
    server.set_status(agent, AUX, "Lunch").unwrap();
    for (reason, message) in [
        ("message", "Not during a campaign"),
        ("empty", "Blocked by hook"),
        ("none", "Blocked by hook"),
        ("zero", "Blocked by hook"),
        ("raise", "Raised by the hook"),
        ("raise-bare", "Blocked by hook"),
    ] {
        let result = server.set_status(agent, READY, reason);
        assert_eq!(
            result,
            Err(ApiError::Processing(message.to_owned())),
            "{reason}"
        );
        assert_eq!(
            status_of(&server, agent),
            (AUX, "Lunch".to_owned()),
            "{reason}: the change was blocked"
        );
    }
    // A plugin calling the API gets error.ProcessingError with the message.
    let caller = py(&format!(
        r#"
class Caller:
    def __init__(self, ucs):
        try:
            ucs.api.agents.setStatus(ucs.sid, {agent}, constants.AGENT_READY, 'message')
            put(ucs, 'h5_caller', 'changed')
        except error.ProcessingError as e:
            put(ucs, 'h5_caller', str(e))

UCS_PLUGIN = 'Caller'
"#
    ));
    server.write_plugin("h5_block_caller.py", &caller);
    server.load("h5_block_caller").unwrap();
    assert_eq!(
        server.shared("h5_caller"),
        Value::from("Not during a campaign")
    );
}

#[test]
fn h6_other_exception_applies_the_requested_state_and_logs_the_traceback() {
    let plugin = py(r#"
class H6Hook:
    def __init__(self, ucs):
        ucs.agents.addChangeStatusHook(self.hook)

    def hook(self, agent, status, reason):
        return {'nope': 1}[reason]

UCS_PLUGIN = 'H6Hook'
"#);
    let server = TestServer::start(&[("h6_raises.py", &plugin)]);
    let agent = server.add_agent("h6_alice");
    let after = server.set_status(agent, AUX, "h6-requested").unwrap();
    assert_eq!(field(&after, "status"), &Value::Int(AUX));
    assert_eq!(field(&after, "reason"), &Value::from("h6-requested"));
    assert_eq!(status_of(&server, agent), (AUX, "h6-requested".to_owned()));
    let logged = log_records_of(
        "h6_raises",
        &[
            "ERROR",
            "status hook",
            "Traceback",
            "KeyError: 'h6-requested'",
        ],
    );
    assert_eq!(logged.len(), 1, "{logged:#?}");
    assert!(logged[0].contains("in hook"), "{}", logged[0]);
}

#[test]
fn h6_wrong_return_shapes_apply_the_requested_state() {
    let plugin = py(r#"
class H6Shapes:
    def __init__(self, ucs):
        ucs.agents.addChangeStatusHook(self.hook)

    def hook(self, agent, status, reason):
        return {
            'bare-none': None,
            'three': (constants.AGENT_BUSY, 'x', 'y'),
            'one': (constants.AGENT_BUSY,),
            'unknown-status': (99, 'x'),
            'negative-status': (-1, 'x'),
            'str-status': ('3', 'x'),
            'float-status': (3.0, 'x'),
            'bool-status': (True, 'x'),
            'int-reason': (constants.AGENT_BUSY, 5),
            'none-reason': (constants.AGENT_BUSY, None),
            'bare-int': constants.AGENT_BUSY,
            'str': 'AGENT_BUSY',
        }[reason]

UCS_PLUGIN = 'H6Shapes'
"#);
    let server = TestServer::start(&[("h6_shapes.py", &plugin)]);
    let agent = server.add_agent("h6_bob");
    for shape in [
        "bare-none",
        "three",
        "one",
        "unknown-status",
        "negative-status",
        "str-status",
        "float-status",
        "bool-status",
        "int-reason",
        "none-reason",
        "bare-int",
        "str",
    ] {
        // Alternate the requested status so each change is a real change.
        for requested in [AUX, READY] {
            let after = server
                .set_status(agent, requested, shape)
                .unwrap_or_else(|err| panic!("{shape}: {err:?}"));
            assert_eq!(field(&after, "status"), &Value::Int(requested), "{shape}");
            assert_eq!(field(&after, "reason"), &Value::from(shape), "{shape}");
            assert_eq!(status_of(&server, agent), (requested, shape.to_owned()));
        }
    }
    let logged = log_records_of("h6_shapes", &["ERROR", "status hook", "returned"]);
    assert_eq!(logged.len(), 24, "each wrong shape is logged: {logged:#?}");
}

#[test]
fn s1_one_hook_per_identificator_and_remove_change_hook() {
    let owner = py(r#"
class S1Owner:
    def __init__(self, ucs):
        self.ucs = ucs
        ucs.shared.addChangeHook('s1_data', self.hook)
        ucs.shared.addChangeHook('s1_other', self.hook)
        try:
            ucs.shared.addChangeHook('s1_data', self.hook)
            put(ucs, 's1_twice', 'accepted')
        except error.ProcessingError as e:
            put(ucs, 's1_twice', 'ProcessingError: %s' % e)
        # The removal is driven from the test through a callback.
        ucs.addCallback(events.EVENT_SHARED_DATA, self.on_shared)

    def hook(self, identificator, old_data, new_data):
        return {'hooked': new_data}

    def on_shared(self, identificator, data):
        if identificator == 's1_remove_now':
            self.ucs.shared.removeChangeHook('s1_data')

UCS_PLUGIN = 'S1Owner'
"#);
    let other = py(r#"
class S1Other:
    def __init__(self, ucs):
        try:
            ucs.shared.addChangeHook('s1_data', lambda i, old, new: 'other')
            put(ucs, 's1_second', 'accepted')
        except error.ProcessingError as e:
            put(ucs, 's1_second', 'ProcessingError: %s' % e)
        ucs.shared.removeChangeHook('s1_data')

UCS_PLUGIN = 'S1Other'
"#);
    let server = TestServer::start(&[("s1_a_owner.py", &owner), ("s1_b_other.py", &other)]);
    for key in ["s1_twice", "s1_second"] {
        let seen = server.shared(key);
        let text = seen.as_str().unwrap();
        assert!(text.starts_with("ProcessingError: "), "{key}: {text}");
        assert!(text.contains("s1_data"), "{key}: {text}");
    }
    assert!(
        !log_records_of(
            "s1_b_other",
            &["WARN", "removeChangeHook('s1_data') ignored"]
        )
        .is_empty(),
        "a non-owner's removal warns"
    );
    let set = |identificator: &str, data: i64| {
        server
            .call(
                "shared.set",
                vec![Value::from(identificator), Value::Int(data)],
            )
            .unwrap()
    };
    assert_eq!(set("s1_data", 1), json(r#"{"hooked": 1}"#), "still hooked");
    set("s1_remove_now", 0);
    assert_eq!(set("s1_data", 2), Value::Int(2), "the hook is removed");
    assert_eq!(
        set("s1_other", 3),
        json(r#"{"hooked": 3}"#),
        "only that one"
    );
    // Another plugin may hook s1_data now.
    server.load("s1_b_other").unwrap();
    assert_eq!(server.shared("s1_second"), Value::from("accepted"));
}

#[test]
fn s2_what_the_hook_returns_is_stored_instead() {
    let plugin = py(r#"
class S2Hook:
    def __init__(self, ucs):
        ucs.shared.addChangeHook('s2_data', self.hook)

    def hook(self, identificator, old_data, new_data):
        return {'identificator': identificator, 'old': old_data, 'new': new_data}

UCS_PLUGIN = 'S2Hook'
"#);
    let server = TestServer::start(&[("s2_store.py", &plugin)]);
    let first = server
        .call("shared.set", vec![Value::from("s2_data"), Value::Int(1)])
        .unwrap();
    let expected_first = json(r#"{"identificator": "s2_data", "old": {}, "new": 1}"#);
    assert_eq!(first, expected_first, "the caller gets what was stored");
    assert_eq!(server.shared("s2_data"), expected_first);
    let second = server
        .call("shared.set", vec![Value::from("s2_data"), json("[2]")])
        .unwrap();
    assert_eq!(
        second,
        json(
            r#"{"identificator": "s2_data",
                "old": {"identificator": "s2_data", "old": {}, "new": 1}, "new": [2]}"#
        )
    );
    // Other identificators are not hooked.
    let plain = server
        .call("shared.set", vec![Value::from("s2_plain"), Value::Int(5)])
        .unwrap();
    assert_eq!(plain, Value::Int(5));
}

#[test]
fn s3_processing_error_blocks_and_the_caller_gets_its_message() {
    let plugin = py(r#"
class S3Hook:
    def __init__(self, ucs):
        ucs.shared.addChangeHook('s3_data', self.hook)

    def hook(self, identificator, old_data, new_data):
        if new_data == 'bad':
            raise error.ProcessingError('s3 refuses %r' % new_data)
        return new_data

UCS_PLUGIN = 'S3Hook'
"#);
    let server = TestServer::start(&[("s3_block.py", &plugin)]);
    server
        .call(
            "shared.set",
            vec![Value::from("s3_data"), Value::from("good")],
        )
        .unwrap();
    let result = server.call(
        "shared.set",
        vec![Value::from("s3_data"), Value::from("bad")],
    );
    assert_eq!(
        result,
        Err(ApiError::Processing("s3 refuses 'bad'".to_owned()))
    );
    assert_eq!(server.shared("s3_data"), Value::from("good"), "unchanged");
    // A plugin setting it gets the error class.
    let caller = py(r#"
class S3Caller:
    def __init__(self, ucs):
        try:
            ucs.api.shared.set(ucs.sid, 's3_data', 'bad')
            put(ucs, 's3_caller', 'stored')
        except error.ProcessingError as e:
            put(ucs, 's3_caller', str(e))

UCS_PLUGIN = 'S3Caller'
"#);
    server.write_plugin("s3_block_caller.py", &caller);
    server.load("s3_block_caller").unwrap();
    assert_eq!(server.shared("s3_caller"), Value::from("s3 refuses 'bad'"));
    assert_eq!(server.shared("s3_data"), Value::from("good"));
}

#[test]
fn s4_other_exception_or_unstorable_result_stores_new_data_and_logs() {
    let plugin = py(r#"
class S4Hook:
    def __init__(self, ucs):
        ucs.shared.addChangeHook('s4_data', self.hook)

    def hook(self, identificator, old_data, new_data):
        kind = new_data['kind']
        if kind == 'raise':
            raise ZeroDivisionError('s4 hook bug')
        if kind == 'set':
            return {1, 2}
        if kind == 'nan':
            return float('nan')
        if kind == 'object':
            return object()
        if kind == 'nested-set':
            return {'a': [{3}]}
        return new_data

UCS_PLUGIN = 'S4Hook'
"#);
    let server = TestServer::start(&[("s4_fails.py", &plugin)]);
    for kind in ["raise", "set", "nan", "object", "nested-set"] {
        let data = Value::record([("kind", Value::from(kind))]);
        let stored = server
            .call("shared.set", vec![Value::from("s4_data"), data.clone()])
            .unwrap_or_else(|err| panic!("{kind}: {err:?}"));
        assert_eq!(stored, data, "{kind}: new_data is stored");
        assert_eq!(server.shared("s4_data"), data, "{kind}");
    }
    let raised = log_records_of(
        "s4_fails",
        &[
            "ERROR",
            "shared data hook",
            "Traceback",
            "ZeroDivisionError: s4 hook bug",
        ],
    );
    assert_eq!(raised.len(), 1, "{raised:#?}");
    let unstorable = log_records_of("s4_fails", &["ERROR", "cannot be stored"]);
    assert_eq!(unstorable.len(), 4, "{unstorable:#?}");
}

#[test]
fn h2_status_hook_sees_agent_status_constants_by_name() {
    // The hook compares with the constants, as the documented StatusHook does.
    let plugin = py(r#"
class Named:
    def __init__(self, ucs):
        ucs.agents.addChangeStatusHook(self.hook)

    def hook(self, agent, status, reason):
        if agent.status == constants.AGENT_OFFLINE and status == constants.AGENT_BUSY:
            return None, 'Log in first'
        return status, reason

UCS_PLUGIN = 'Named'
"#);
    let server = TestServer::start(&[("h2_named.py", &plugin)]);
    let agent = server.add_agent("h2_bob");
    let busy = AgentStatus::Busy.code();
    assert_eq!(
        server.set_status(agent, busy, ""),
        Err(ApiError::Processing("Log in first".to_owned()))
    );
    server.set_status(agent, READY, "").unwrap();
    server.set_status(agent, busy, "").unwrap();
    assert_eq!(status_of(&server, agent), (busy, String::new()));
}

/// Issue 12, defect 6, through a real Python hook and callback and the API
/// method `config.users.edit`: clearing `agent` takes the agent OFFLINE
/// through the hook (H2) with an `agent.status` event (E2); a hook that
/// blocks it (H5) fails the edit, which changes nothing.
#[test]
fn h2_e2_clearing_the_agent_flag_through_the_api_runs_the_hook_and_the_callback() {
    let plugin = py(r#"
UCS_PLUGIN = 'FlagGuard'


class FlagGuard:
    def __init__(self, ucs):
        self.ucs = ucs
        ucs.agents.addChangeStatusHook(self.hook)
        ucs.addCallback(events.EVENT_AGENT_STATUS, self.changed)

    def hook(self, agent, status, reason):
        if agent.username == 'fgstays' and status == constants.AGENT_OFFLINE:
            return None, 'fgstays stays'
        return status, reason

    def changed(self, agent, args):
        record(self.ucs, 'fg_events', [agent['id'], agent['status'], args['previous_status']])
"#);
    let server = TestServer::start(&[("fg_guard.py", &plugin)]);
    let goes = server.add_agent("fggoes");
    let stays = server.add_agent("fgstays");
    for agent in [goes, stays] {
        server.set_status(agent, 1, "").unwrap();
    }
    let edit = |id: i64| {
        server.call(
            "config.users.edit",
            vec![json(&format!(r#"{{"id": {id}, "agent": false}}"#))],
        )
    };

    let edited = edit(goes).expect("the edit goes through");
    assert_eq!(field(&edited, "agent"), &Value::Bool(false));
    let events = || server.shared("fg_events");
    assert_eq!(
        events(),
        json(&format!(
            "[[{goes}, 1, 0], [{stays}, 1, 0], [{goes}, 0, 1]]"
        )),
        "the wallboard sees the agent go OFFLINE"
    );

    let refused = edit(stays);
    assert_eq!(refused, Err(ApiError::Processing("fgstays stays".into())));
    assert!(server.core.directory().get(stays).unwrap().agent);
    assert_eq!(status_of(&server, stays).0, 1);
    assert!(
        matches!(events(), Value::List(seen) if seen.len() == 3),
        "no event for the refused edit"
    );
}

/// Issue 15 item 4: `os.fork()` in a hook raises instead of leaving a copy
/// of the server behind (holding its socket and data-dir lock), and the
/// status change goes on (H6 does not even come into it: the hook caught
/// it). `subprocess`, which execs, still works.
#[test]
fn a_hook_cannot_fork_the_server_but_can_run_a_program() {
    let plugin = py(r#"
import os, subprocess

class Forker:
    def __init__(self, ucs):
        self.ucs = ucs
        ucs.agents.addChangeStatusHook(self.hook)

    def hook(self, agent, status, reason):
        try:
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            outcome = 'forked'
        except OSError as err:
            outcome = str(err)
        ran = subprocess.run(['true']).returncode
        put(self.ucs, 'fork_outcome', [outcome, ran])
        return status, reason

UCS_PLUGIN = 'Forker'
"#);
    let server = TestServer::start(&[("forker.py", &plugin)]);
    let agent = server.add_agent("fork_agent");
    server.set_status(agent, 1, "").expect("the change goes on");
    let outcome = server.shared("fork_outcome");
    let Value::List(items) = &outcome else {
        panic!("{outcome:?}");
    };
    assert!(
        matches!(&items[0], Value::Str(text) if text.contains("os.fork() is not allowed in a UCS plugin")),
        "{outcome:?}"
    );
    assert_eq!(items[1], Value::Int(0), "subprocess no longer runs");
}
