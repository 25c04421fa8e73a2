//! The in-process deadline of every call into a plugin (SPEC I3): a hook,
//! callback or middleware that runs Python past its deadline gets
//! `error.DeadlineExceeded` raised in its thread, and its caller gets what
//! H6, S4, D5 and M3 say for an unexpected exception. Module names are
//! unique in this binary.
//!
//! These tests are scoped to in-process mode: under
//! `UCS_TEST_ISOLATION=process` the harness runs plugins in hosts, where the
//! deadline kills the whole host (I2 then restarts it, with a backoff), so
//! the follow-up calls here would race the restart; `tests/isolation.rs`
//! covers the process-mode deadline.

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, field, isolation_under_test, log_records_of, py};
use ucs_api::{ApiError, HookPolicy, Isolation};
use ucs_core::Value;

const DEADLINE: Duration = Duration::from_millis(300);
const BUDGET: Duration = Duration::from_millis(100);
const AUX: i64 = 2;
const READY: i64 = 1;

/// Whether this run is in process mode, where these tests do not apply
/// (see the module doc).
fn process_mode() -> bool {
    isolation_under_test() == Isolation::Process
}

/// A server whose calls into plugins have a 300 ms deadline and a 100 ms
/// budget.
fn server(plugins: &[(&str, &str)]) -> TestServer {
    server_with(plugins, DEADLINE)
}

fn server_with(plugins: &[(&str, &str)], deadline: Duration) -> TestServer {
    TestServer::start_with_policy(
        plugins,
        |policy: &mut HookPolicy| {
            policy.deadline = deadline;
            policy.budget = BUDGET;
        },
        |_| {},
    )
}

/// (calls, errors) of the plugin's registration whose callable is `callable`.
fn numbers(server: &TestServer, plugin: &str, callable: &str) -> (u64, u64) {
    let registrations = server.api.registrations_of_plugin(plugin);
    let found = registrations
        .iter()
        .find(|registration| &*registration.callable == callable)
        .unwrap_or_else(|| panic!("{plugin} has no {callable}: {registrations:?}"));
    let numbers = found.metrics.snapshot();
    (numbers.calls, numbers.errors)
}

/// Runs `call`, and says how long it took.
fn timed<T>(call: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let result = call();
    (result, started.elapsed())
}

/// The ERROR the watchdog logs for `plugin` at the deadline.
fn deadline_errors(plugin: &str) -> Vec<String> {
    log_records_of(
        plugin,
        &["ERROR", "did not return within its deadline of 300ms"],
    )
}

/// The call returned because of the deadline: not before it, and not long
/// after (generous for a loaded test machine).
fn assert_ended_by_deadline(took: Duration) {
    assert!(took >= DEADLINE, "returned before the deadline: {took:?}");
    assert!(
        took < DEADLINE + Duration::from_secs(3),
        "not interrupted at the deadline: {took:?}"
    );
}

/// The call into `plugin`'s `callable` was ended by its deadline: it took
/// the deadline, the watchdog logged one ERROR naming the registration, and
/// the call counts as one failed call.
fn assert_interrupted(server: &TestServer, took: Duration, plugin: &str, callable: &str) {
    assert_ended_by_deadline(took);
    let errors = deadline_errors(plugin);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].contains(callable), "{errors:#?}");
    assert_eq!(numbers(server, plugin, callable), (1, 1));
}

#[test]
fn i3_h6_a_spinning_status_hook_is_interrupted_and_the_change_is_applied() {
    if process_mode() {
        return;
    }
    let plugin = py(r#"
class Spin:
    def __init__(self, ucs):
        ucs.agents.addChangeStatusHook(self.hook)

    def hook(self, agent, status, reason):
        if reason == 'spin':
            while True:
                pass
        return status, 'hooked'

    def stop(self):
        pass

UCS_PLUGIN = 'Spin'
"#);
    let server = server(&[("i3_status_spin.py", &plugin)]);
    let agent = server.add_agent("i3_status_alice");
    let (result, took) = timed(|| server.set_status(agent, AUX, "spin"));
    assert_interrupted(&server, took, "i3_status_spin", "Spin.hook()");
    // H6: the requested change is applied as if there were no hook.
    let after = result.expect("H6: the change proceeds");
    assert_eq!(field(&after, "status"), &Value::Int(AUX));
    assert_eq!(field(&after, "reason"), &Value::from("spin"));
    // The agent's turn was given back: the next change of the same agent
    // runs the hook again, at once.
    let (result, took) = timed(|| server.set_status(agent, READY, "back"));
    let after = result.expect("the next change works");
    assert_eq!(field(&after, "reason"), &Value::from("hooked"));
    assert!(took < DEADLINE, "{took:?}");
    assert_eq!(numbers(&server, "i3_status_spin", "Spin.hook()"), (2, 1));
    // Unloading the plugin after the interrupted call works, and the agent
    // changes without the hook.
    server.unload("i3_status_spin").expect("unload");
    let after = server
        .set_status(agent, AUX, "after unload")
        .expect("no hook");
    assert_eq!(field(&after, "reason"), &Value::from("after unload"));
}

#[test]
fn i3_s4_a_spinning_shared_data_hook_is_interrupted_and_new_data_is_stored() {
    if process_mode() {
        return;
    }
    let plugin = py(r#"
class SpinShared:
    def __init__(self, ucs):
        ucs.shared.addChangeHook('i3_shared_key', self.hook)

    def hook(self, identificator, old, new):
        while True:
            pass

UCS_PLUGIN = 'SpinShared'
"#);
    let server = server(&[("i3_shared_spin.py", &plugin)]);
    let (result, took) = timed(|| {
        server.call(
            "shared.set",
            vec![Value::from("i3_shared_key"), Value::from("new data")],
        )
    });
    assert_interrupted(&server, took, "i3_shared_spin", "SpinShared.hook()");
    result.expect("S4: the change proceeds");
    assert_eq!(server.shared("i3_shared_key"), Value::from("new data"));
}

#[test]
fn i3_d5_a_spinning_callback_is_interrupted_and_the_next_callback_runs() {
    if process_mode() {
        return;
    }
    let plugin = py(r#"
class SpinCallback:
    def __init__(self, ucs):
        self.ucs = ucs
        ucs.addCallback(events.EVENT_AGENT_STATUS, self.spin)
        ucs.addCallback(events.EVENT_AGENT_STATUS, self.after)

    def spin(self, agent, args):
        while True:
            pass

    def after(self, agent, args):
        record(self.ucs, 'i3_callback_after', agent['reason'])

    def stop(self):
        self.ucs.removeCallback(events.EVENT_AGENT_STATUS, self.spin)
        self.ucs.removeCallback(events.EVENT_AGENT_STATUS, self.after)

UCS_PLUGIN = 'SpinCallback'
"#);
    let server = server(&[("i3_callback_spin.py", &plugin)]);
    let agent = server.add_agent("i3_callback_alice");
    let (result, took) = timed(|| server.set_status(agent, AUX, "first"));
    result.expect("the change itself succeeded");
    assert_interrupted(&server, took, "i3_callback_spin", "SpinCallback.spin()");
    // D5: callbacks ran before the call returned, the second one too.
    assert_eq!(
        server.shared("i3_callback_after"),
        Value::List(vec![Value::from("first")])
    );
    assert_eq!(
        numbers(&server, "i3_callback_spin", "SpinCallback.after()"),
        (1, 0)
    );
}

#[test]
fn i3_m3_a_spinning_middleware_is_interrupted_and_the_caller_gets_internal() {
    if process_mode() {
        return;
    }
    let plugin = py(r#"
class SpinMiddleware:
    def __init__(self, ucs):
        ucs.api.addMiddleware('agents.list', self.spin)

    def spin(self, handler, caller):
        while True:
            pass

UCS_PLUGIN = 'SpinMiddleware'
"#);
    let server = server(&[("i3_middleware_spin.py", &plugin)]);
    let (result, took) = timed(|| server.call("agents.list", vec![]));
    assert_interrupted(&server, took, "i3_middleware_spin", "SpinMiddleware.spin()");
    assert!(matches!(result, Err(ApiError::Internal(_))), "{result:?}");
}

#[test]
fn i3_except_exception_cannot_swallow_the_deadline() {
    if process_mode() {
        return;
    }
    let plugin = py(r#"
class Swallow:
    def __init__(self, ucs):
        self.ucs = ucs
        ucs.agents.addChangeStatusHook(self.hook)

    def hook(self, agent, status, reason):
        try:
            while True:
                pass
        except Exception:
            pass
        return status, 'swallowed'

UCS_PLUGIN = 'Swallow'
"#);
    let server = server(&[("i3_swallow.py", &plugin)]);
    let agent = server.add_agent("i3_swallow_alice");
    let (result, took) = timed(|| server.set_status(agent, AUX, "spin"));
    assert_ended_by_deadline(took);
    let after = result.expect("H6: the change proceeds");
    // Had `except Exception` caught it, the hook would have rewritten the
    // reason.
    assert_eq!(field(&after, "reason"), &Value::from("spin"));
    assert_eq!(numbers(&server, "i3_swallow", "Swallow.hook()"), (1, 1));
    let tracebacks = log_records_of("i3_swallow", &["DeadlineExceeded"]);
    assert!(!tracebacks.is_empty(), "the failure names the class");
}

/// Nested calls each own their deadline, and only the innermost is
/// interrupted: the outer status hook spins 100 ms, then sets shared data
/// whose hook (another plugin's) spins, then spins itself. At 300 ms the
/// outer is past its deadline but not innermost, so nothing is raised into
/// the inner hook on its behalf; the inner one is interrupted at its own
/// deadline (about 400 ms, S4: data stored), and only then the outer one
/// (H6: the change proceeds).
#[test]
fn i3_nested_calls_each_keep_their_own_deadline_and_the_innermost_goes_first() {
    if process_mode() {
        return;
    }
    let outer = py(r#"
class Outer:
    def __init__(self, ucs):
        self.ucs = ucs
        ucs.agents.addChangeStatusHook(self.hook)

    def hook(self, agent, status, reason):
        end = time.monotonic() + 0.1
        while time.monotonic() < end:
            pass
        self.ucs.api.shared.set(self.ucs.sid, 'i3_nested_key', 'from outer')
        while True:
            pass

UCS_PLUGIN = 'Outer'
"#);
    let inner = py(r#"
class Inner:
    def __init__(self, ucs):
        ucs.shared.addChangeHook('i3_nested_key', self.hook)

    def hook(self, identificator, old, new):
        while True:
            pass

UCS_PLUGIN = 'Inner'
"#);
    let server = server(&[
        ("i3_nested_outer.py", &outer),
        ("i3_nested_inner.py", &inner),
    ]);
    let agent = server.add_agent("i3_nested_alice");
    let (result, took) = timed(|| server.set_status(agent, AUX, "nested"));
    let after = result.expect("H6: the change proceeds");
    assert_eq!(field(&after, "reason"), &Value::from("nested"));
    assert!(
        took >= DEADLINE + Duration::from_millis(90),
        "the inner hook was cut short by the outer deadline: {took:?}"
    );
    assert!(took < DEADLINE + Duration::from_secs(3), "{took:?}");
    assert_eq!(server.shared("i3_nested_key"), Value::from("from outer"));
    assert_eq!(numbers(&server, "i3_nested_inner", "Inner.hook()"), (1, 1));
    assert_eq!(numbers(&server, "i3_nested_outer", "Outer.hook()"), (1, 1));
    assert_eq!(deadline_errors("i3_nested_inner").len(), 1);
    assert_eq!(deadline_errors("i3_nested_outer").len(), 1);
}

/// Calls that end just before, at and just after the deadline, in Python
/// and in C (`time.sleep`, which returns straight into `return`, so an
/// exception set during the sleep may not have fired when the hook
/// returns): after each one, the next Python code on the same thread (a
/// checking hook that loops and rewrites the reason) must run unharmed.
/// A C callback that blocks past the deadline and returns straight to the
/// server leaves the exception pending: the disarm must withdraw it.
#[test]
fn i3_no_stray_exception_after_a_call_near_the_deadline() {
    if process_mode() {
        return;
    }
    let plugin = py(r#"
class Near:
    def __init__(self, ucs):
        ucs.agents.addChangeStatusHook(self.hook)
        # A callback that is C code: `get(identificator, 2)` of a
        # SimpleQueue waits without the GIL until the timer the hook started
        # puts an item, `data` seconds later, and returns it straight to the
        # server, running no bytecode in which an exception set meanwhile
        # could fire.
        import queue
        self.queue = queue.SimpleQueue()
        ucs.shared.addChangeHook('i3_near_c', self.start_timer)
        ucs.addCallback(events.EVENT_SHARED_DATA, self.queue.get)

    def start_timer(self, identificator, old, new):
        threading.Timer(new, self.queue.put, (2.0,)).start()
        return 2.0

    def hook(self, agent, status, reason):
        kind, _, millis = reason.partition(':')
        if kind == 'busy':
            end = time.monotonic() + int(millis) / 1000
            while time.monotonic() < end:
                pass
            return status, 'done'
        if kind == 'sleep':
            time.sleep(int(millis) / 1000)
            return status, 'done'
        total = 0
        for i in range(20000):
            total += i
        return status, 'checked %d' % total

UCS_PLUGIN = 'Near'
"#);
    let server = server(&[("i3_near.py", &plugin)]);
    let agent = server.add_agent("i3_near_alice");
    let mut checks = 0;
    for kind in ["busy", "sleep"] {
        for millis in [250, 280, 290, 295, 298, 300, 302, 305, 310, 320] {
            let reason = format!("{kind}:{millis}");
            server
                .set_status(agent, AUX, &reason)
                .expect("H6: a change proceeds whatever the hook did");
            let after = server
                .set_status(agent, READY, "check")
                .expect("the check change");
            assert_eq!(
                field(&after, "reason"),
                &Value::from("checked 199990000"),
                "a stray exception hit the hook after {reason}"
            );
            checks += 1;
        }
    }
    for millis in [320_i32, 330, 340, 360] {
        // Past the deadline in C: the exception is set while the queue
        // waits, and still pending when it returns; it must be withdrawn.
        server
            .call(
                "shared.set",
                vec![
                    Value::from("i3_near_c"),
                    Value::Float(f64::from(millis) / 1000.0),
                ],
            )
            .expect("the change stands whatever the callback did (D5)");
        let after = server
            .set_status(agent, READY, "check")
            .expect("the check change");
        assert_eq!(
            field(&after, "reason"),
            &Value::from("checked 199990000"),
            "a stray exception hit the hook after a C callback of {millis} ms"
        );
        checks += 1;
    }
    assert_eq!(checks, 24);
    let (calls, _) = numbers(&server, "i3_near", "Near.hook()");
    assert_eq!(calls, 44);
    // The C callback was past its deadline each time, and logged so.
    let overdue = log_records_of(
        "i3_near",
        &[
            "ERROR",
            "SimpleQueue.get() did not return within its deadline",
        ],
    );
    assert_eq!(overdue.len(), 4, "{overdue:#?}");
}

/// The budget WARN appears while the call still runs (as uWSGI's harakiri
/// logs before it kills), well before the deadline.
#[test]
fn i3_the_budget_warning_is_logged_while_the_call_still_runs() {
    if process_mode() {
        return;
    }
    let plugin = py(r#"
class Slow:
    def __init__(self, ucs):
        ucs.agents.addChangeStatusHook(self.hook)

    def hook(self, agent, status, reason):
        while True:
            pass

UCS_PLUGIN = 'Slow'
"#);
    let deadline = Duration::from_secs(3);
    let server = std::sync::Arc::new(server_with(&[("i3_budget_warn.py", &plugin)], deadline));
    let agent = server.add_agent("i3_budget_alice");
    let caller = {
        let server = std::sync::Arc::clone(&server);
        std::thread::spawn(move || timed(|| server.set_status(agent, AUX, "slow")))
    };
    let warned = || {
        log_records_of(
            "i3_budget_warn",
            &[
                "WARN",
                "Slow.hook() is still running after",
                "budget of 100ms",
            ],
        )
    };
    let started = Instant::now();
    while warned().is_empty() && started.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(warned().len(), 1, "one WARN while it runs");
    assert!(!caller.is_finished(), "the call is still running");
    assert!(
        log_records_of("i3_budget_warn", &["did not return within its deadline"]).is_empty(),
        "no ERROR before the deadline"
    );
    let (result, took) = caller.join().expect("the caller thread");
    result.expect("H6: the change proceeds");
    assert!(took >= deadline, "{took:?}");
    let errors = log_records_of(
        "i3_budget_warn",
        &["ERROR", "did not return within its deadline of 3s"],
    );
    assert_eq!(errors.len(), 1, "{errors:#?}");
}

/// `error.DeadlineExceeded` is a `BaseException` and not an `Exception`,
/// and the stub of the `error` module names exactly the classes it has.
#[test]
fn i3_deadline_exceeded_is_a_base_exception_and_the_error_stub_is_true() {
    let plugin = py(r#"
class Classes:
    def __init__(self, ucs):
        put(ucs, 'i3_error_names', sorted(n for n in dir(error) if not n.startswith('_')))
        put(ucs, 'i3_error_kind', [
            issubclass(error.DeadlineExceeded, BaseException),
            issubclass(error.DeadlineExceeded, Exception),
        ])

UCS_PLUGIN = 'Classes'
"#);
    let server = TestServer::start(&[("i3_error_classes.py", &plugin)]);
    assert_eq!(
        server.shared("i3_error_kind"),
        Value::List(vec![Value::Bool(true), Value::Bool(false)])
    );
    let (_, stub) = ucs_loader::STUBS
        .iter()
        .find(|(name, _)| *name == "error.pyi")
        .expect("error.pyi is a stub");
    let mut declared: Vec<Value> = stub
        .lines()
        .filter_map(|line| line.strip_prefix("class "))
        .filter_map(|rest| rest.split(['(', ':']).next())
        .map(|name| Value::from(name.trim()))
        .collect();
    declared.sort_by_key(|name| name.as_str().map(str::to_owned));
    assert_eq!(server.shared("i3_error_names"), Value::List(declared));
}
