//! API middleware through real plugin files: SPEC M1-M3, D2, D3. Module
//! names are unique in this binary.

mod common;

use common::{TestServer, field, json, log_records_of, py};
use ucs_api::{ApiError, PluginState};
use ucs_core::{FieldErrors, Value};

fn shared_get(server: &TestServer, identificator: &str) -> Result<Value, ApiError> {
    server.call("shared.get", vec![Value::from(identificator)])
}

#[test]
fn m1_unknown_method_raises_processing_error_and_several_wrap_one_method() {
    let plugin = py(r#"
class M1Plugin:
    def __init__(self, ucs):
        self.ucs = ucs
        outcome = {}
        for method in ('config.users.gett', 'no.such.method', 'shared'):
            try:
                ucs.api.addMiddleware(method, self.first)
                outcome[method] = 'accepted'
            except error.ProcessingError as e:
                outcome[method] = 'ProcessingError: %s' % e
        put(ucs, 'm1_unknown', outcome)
        ucs.api.addMiddleware('shared.get', self.first)
        ucs.api.addMiddleware('shared.get', self.second)
        ucs.addCallback(events.EVENT_SHARED_DATA, self.control)

    def first(self, handler, caller, identificator):
        return ['first', handler(caller, identificator)]

    def second(self, handler, caller, identificator):
        return ['second', handler(caller, identificator)]

    def control(self, identificator, data):
        if identificator == 'm1_remove':
            # A fresh bound method, equal to the registered one.
            self.ucs.api.removeMiddleware('shared.get', self.second)
        if identificator == 'm1_remove_unknown':
            self.ucs.api.removeMiddleware('shared.get', lambda handler, *args: None)

UCS_PLUGIN = 'M1Plugin'
"#);
    let server = TestServer::start(&[("m1_chain.py", &plugin)]);
    assert_eq!(server.state_of("m1_chain"), PluginState::Running);
    let outcome = server.shared("m1_unknown");
    for method in ["config.users.gett", "no.such.method", "shared"] {
        let text = field(&outcome, method).as_str().unwrap();
        assert!(text.starts_with("ProcessingError: "), "{method}: {text}");
        assert!(text.contains(method), "{method}: {text}");
    }
    server
        .call("shared.set", vec![Value::from("m1_data"), Value::Int(5)])
        .unwrap();
    assert_eq!(
        shared_get(&server, "m1_data").unwrap(),
        json(r#"["first", ["second", 5]]"#)
    );
    server
        .call(
            "shared.set",
            vec![Value::from("m1_remove_unknown"), Value::Int(0)],
        )
        .unwrap();
    assert!(
        !log_records_of(
            "m1_chain",
            &["WARN", "removeMiddleware('shared.get', ...) ignored"]
        )
        .is_empty()
    );
    assert_eq!(
        shared_get(&server, "m1_data").unwrap(),
        json(r#"["first", ["second", 5]]"#)
    );
    server
        .call("shared.set", vec![Value::from("m1_remove"), Value::Int(0)])
        .unwrap();
    assert_eq!(
        shared_get(&server, "m1_data").unwrap(),
        json(r#"["first", 5]"#),
        "removed by =="
    );
    // Other methods are not wrapped.
    assert!(matches!(
        server.call("agents.list", vec![]),
        Ok(Value::List(_))
    ));
}

#[test]
fn m2_middleware_changes_arguments_and_result_and_calls_the_handler() {
    let plugin = py(r#"
class M2Plugin:
    def __init__(self, ucs):
        ucs.api.addMiddleware('shared.set', self.wrap_set)
        ucs.api.addMiddleware('config.users.get', self.users_get)

    def wrap_set(self, handler, caller, identificator, data):
        stored = handler(caller, identificator, {'changed': data})
        return {'result': stored, 'handler': repr(handler).startswith('<handler')}

    def users_get(self, handler, caller, *params):
        # Asking for one user gets user 1 instead; the result is trimmed.
        user = handler(caller, 1)
        return {'username': user['username']}

UCS_PLUGIN = 'M2Plugin'
"#);
    let server = TestServer::start(&[("m2_change.py", &plugin)]);
    let result = server
        .call("shared.set", vec![Value::from("m2_data"), Value::Int(3)])
        .unwrap();
    assert_eq!(
        result,
        json(r#"{"result": {"changed": 3}, "handler": true}"#)
    );
    assert_eq!(
        server.shared("m2_data"),
        json(r#"{"changed": 3}"#),
        "the changed argument reached the built-in method"
    );
    let bob = server.add_user("m2_bob", false, false);
    let user = server
        .call("config.users.get", vec![Value::Int(bob)])
        .unwrap();
    assert_eq!(user, json(r#"{"username": "admin"}"#));
}

/// M2: a middleware may call its handler more than once, with the very
/// objects it was given, unchanged or edited in between; each call reaches
/// the built-in method with what was passed that time (the first hands on
/// the given values as they were, later ones are read from Python).
#[test]
fn m2_a_handler_called_again_gets_the_arguments_of_that_call() {
    let plugin = py(r#"
class M2AgainPlugin:
    def __init__(self, ucs):
        ucs.api.addMiddleware('shared.set', self.wrap_set)

    def wrap_set(self, handler, caller, identificator, data):
        first = handler(caller, identificator, data)
        again = handler(caller, identificator, data)
        data['n'] += 1
        edited = handler(caller, identificator, data)
        return [first, again, edited, caller['username']]

UCS_PLUGIN = 'M2AgainPlugin'
"#);
    let server = TestServer::start(&[("m2_again.py", &plugin)]);
    let result = server
        .call(
            "shared.set",
            vec![Value::from("m2_again"), json(r#"{"n": 1}"#)],
        )
        .unwrap();
    assert_eq!(result, json(r#"[{"n": 1}, {"n": 1}, {"n": 2}, "admin"]"#));
    assert_eq!(server.shared("m2_again"), json(r#"{"n": 2}"#));
}

#[test]
fn m3_middleware_errors_reach_the_caller() {
    let plugin = py(r#"
class M3Plugin:
    def __init__(self, ucs):
        ucs.api.addMiddleware('config.users.edit', self.edit)
        ucs.api.addMiddleware('config.users.delete', self.delete)
        ucs.api.addMiddleware('agents.list', self.busy)
        ucs.api.addMiddleware('shared.get', self.buggy)
        ucs.api.addMiddleware('config.users.get', self.passthrough)

    def edit(self, handler, caller, data):
        raise error.InvalidDataInput({'username': 'Not this name', 'displayname': 'Nor this'})

    def delete(self, handler, caller, user_id):
        raise error.PermissionDenied('m3 forbids removal')

    def busy(self, handler, caller):
        raise error.ProcessingError('m3 is busy')

    def buggy(self, handler, caller, identificator):
        return 1 / 0

    def passthrough(self, handler, *args):
        return handler(*args)

UCS_PLUGIN = 'M3Plugin'
"#);
    let server = TestServer::start(&[("m3_errors.py", &plugin)]);
    let bob = server.add_user("m3_bob", false, false);
    let result = server.call(
        "config.users.edit",
        vec![Value::record([("id", Value::Int(bob))])],
    );
    let expected = FieldErrors::from([
        ("username".to_owned(), "Not this name".to_owned()),
        ("displayname".to_owned(), "Nor this".to_owned()),
    ]);
    assert_eq!(result, Err(ApiError::InvalidInput(expected)));
    assert_eq!(
        server.call("config.users.delete", vec![Value::Int(bob)]),
        Err(ApiError::PermissionDenied("m3 forbids removal".to_owned()))
    );
    assert!(server.core.directory().get(bob).is_some(), "not deleted");
    assert_eq!(
        server.call("agents.list", vec![]),
        Err(ApiError::Processing("m3 is busy".to_owned()))
    );
    let result = shared_get(&server, "anything");
    assert!(matches!(result, Err(ApiError::Internal(_))), "{result:?}");
    let logged = log_records_of(
        "m3_errors",
        &["ERROR", "middleware", "Traceback", "ZeroDivisionError"],
    );
    assert_eq!(logged.len(), 1, "{logged:#?}");
    // The traceback stays in the log, not in the caller's message.
    let Err(ApiError::Internal(message)) = result else {
        unreachable!()
    };
    assert!(!message.contains("Traceback"), "{message}");
    // An error of the built-in method crosses a middleware unchanged.
    assert!(matches!(
        server.call("config.users.get", vec![Value::Int(9999)]),
        Err(ApiError::NotFound(_))
    ));
}

#[test]
fn m3_plugin_calling_the_api_gets_the_error_classes() {
    let guard = py(r#"
class M3Guard:
    def __init__(self, ucs):
        ucs.api.addMiddleware('config.users.add', self.add)

    def add(self, handler, caller, data):
        if data.get('username') == 'bad':
            raise error.InvalidDataInput({'username': 'bad is bad'})
        return handler(caller, data)

UCS_PLUGIN = 'M3Guard'
"#);
    let caller = py(r#"
class M3Caller:
    def __init__(self, ucs):
        outcome = {}
        try:
            ucs.api.config.users.add(ucs.sid, {'username': 'bad', 'displayname': 'x', 'password': 'password1'})
        except error.InvalidDataInput as e:
            outcome['invalid'] = e.args[0]
        try:
            ucs.api.config.users.delete(ucs.sid, 1)
        except error.UcsError as e:
            outcome['delete_admin'] = type(e).__name__
        try:
            ucs.api.no.such.method(ucs.sid)
        except Exception as e:
            outcome['unknown_method'] = type(e).__name__
        put(ucs, 'm3_caller', outcome)

UCS_PLUGIN = 'M3Caller'
"#);
    let server = TestServer::start(&[("m3_guard.py", &guard), ("m3_guard_caller.py", &caller)]);
    let outcome = server.shared("m3_caller");
    assert_eq!(
        field(&outcome, "invalid"),
        &json(r#"{"username": "bad is bad"}"#)
    );
    assert_eq!(
        field(&outcome, "delete_admin"),
        &Value::from("ProcessingError")
    );
    assert_eq!(
        field(&outcome, "unknown_method"),
        &Value::from("AttributeError")
    );
}

#[test]
fn d2_first_registered_middleware_is_outermost_across_plugins_in_file_name_order() {
    let plugin = py(r#"
class D2Plugin:
    def __init__(self, ucs):
        self.ucs = ucs
        self.tag = __name__
        ucs.api.addMiddleware('shared.get', self.wrap)

    def wrap(self, handler, caller, identificator):
        result = handler(caller, identificator)
        return [self.tag, result]

UCS_PLUGIN = 'D2Plugin'
"#);
    // Written in reverse, loaded in name order: a first, so a is outermost.
    let server = TestServer::start(&[
        ("d2_order_c.py", &plugin),
        ("d2_order_b.py", &plugin),
        ("d2_order_a.py", &plugin),
    ]);
    server
        .call("shared.set", vec![Value::from("d2_data"), Value::Int(0)])
        .unwrap();
    assert_eq!(
        shared_get(&server, "d2_data").unwrap(),
        json(r#"["d2_order_a", ["d2_order_b", ["d2_order_c", 0]]]"#)
    );
    // A reload registers a again, now innermost.
    server.load("d2_order_a").unwrap();
    assert_eq!(
        shared_get(&server, "d2_data").unwrap(),
        json(r#"["d2_order_b", ["d2_order_c", ["d2_order_a", 0]]]"#)
    );
}

#[test]
fn d3_middleware_gets_the_caller_dict_first_and_unknown_sids_fail_before_the_chain() {
    let plugin = py(r#"
class D3Plugin:
    def __init__(self, ucs):
        self.calls = 0
        ucs.api.addMiddleware('config.users.get', self.wrap)

    def wrap(self, handler, caller, *params):
        self.calls += 1
        seen = {
            'caller': caller,
            'params': list(params),
            'calls': self.calls,
        }
        try:
            seen['result'] = handler(caller, *params)
        except error.PermissionDenied as e:
            seen['refused'] = str(e)
        return seen

UCS_PLUGIN = 'D3Plugin'
"#);
    let server = TestServer::start(&[("d3_caller.py", &plugin)]);
    let bob = server.add_user("d3_bob", false, true);
    let seen = server
        .call("config.users.get", vec![Value::Int(bob)])
        .unwrap();
    let caller = field(&seen, "caller");
    assert_eq!(field(caller, "id"), &Value::Int(1));
    assert_eq!(field(caller, "username"), &Value::from("admin"));
    assert!(
        field(caller, "displayname").as_str().is_some(),
        "{caller:?}"
    );
    assert_eq!(field(caller, "superuser"), &Value::Bool(true));
    assert_eq!(field(caller, "agent"), &Value::Bool(false));
    assert_eq!(field(&seen, "params"), &Value::List(vec![Value::Int(bob)]));
    assert_eq!(
        field(field(&seen, "result"), "username"),
        &Value::from("d3_bob")
    );
    assert_eq!(field(&seen, "calls"), &Value::Int(1));

    // A non-superuser reaches the middleware, which sees who calls; the
    // built-in method's permission check refuses innermost.
    let sid = server.login("d3_bob");
    let seen = server.api.call(&sid, "config.users.get", vec![]).unwrap();
    let caller = field(&seen, "caller");
    assert_eq!(field(caller, "id"), &Value::Int(bob));
    assert_eq!(field(caller, "username"), &Value::from("d3_bob"));
    assert_eq!(field(caller, "superuser"), &Value::Bool(false));
    assert_eq!(field(caller, "agent"), &Value::Bool(true));
    assert!(seen.get("refused").is_some(), "{seen:?}");
    assert_eq!(field(&seen, "calls"), &Value::Int(2));

    // An unknown sid fails before any middleware runs.
    assert_eq!(
        server.api.call("no-such-sid", "config.users.get", vec![]),
        Err(ApiError::Unauthenticated)
    );
    let seen = server
        .call("config.users.get", vec![Value::Int(1)])
        .unwrap();
    assert_eq!(
        field(&seen, "calls"),
        &Value::Int(3),
        "the bad sid never reached it"
    );
}
