//! SPEC section 5 and D2, D3: middleware chains around API methods.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ucs_api::{ApiError, QuickCall};
use ucs_core::{FieldErrors, Value};

use crate::fixtures::{NamedMiddleware, Server, json, middleware, plugin};

/// A middleware that only counts the calls it sees and passes them on.
fn counting(name: &'static str) -> (Arc<NamedMiddleware>, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    let counter = middleware(name, move |next, args| {
        seen.fetch_add(1, Ordering::SeqCst);
        next.call(args)
    });
    (counter, count)
}

/// What `ucs.api.removeMiddleware(method, mw)` does: compare with `==`
/// without any lock held, then remove the first match by id.
fn remove_equal(server: &Server, method: &str, probe: &NamedMiddleware) -> bool {
    let registrations = server.api.middlewares(method).expect("a known method");
    let found = registrations.iter().find(|registration| {
        registration
            .target
            .as_any()
            .downcast_ref::<NamedMiddleware>()
            .is_some_and(|candidate| candidate == probe)
    });
    found.is_some_and(|registration| server.api.remove_middleware(registration.id).is_some())
}

/// A middleware that appends `name` to `trace` on the way in and out.
fn tracing_middleware(name: &'static str, trace: &Arc<Mutex<Vec<String>>>) -> Arc<NamedMiddleware> {
    let trace = Arc::clone(trace);
    middleware(name, move |next, args| {
        trace.lock().expect("trace lock").push(format!("{name} in"));
        let result = next.call(args);
        trace
            .lock()
            .expect("trace lock")
            .push(format!("{name} out"));
        result
    })
}

#[test]
fn m1_unknown_method_refused() {
    let server = Server::new();
    for typo in [
        "config.user.get",
        "agents",
        "",
        "agents.list.x",
        "AGENTS.LIST",
    ] {
        let (counter, _) = counting("typo");
        let err = server.api.add_middleware(typo, plugin("p"), counter).err();
        assert!(
            matches!(&err, Some(ApiError::Processing(message)) if message.contains(typo)),
            "{typo:?}: {err:?}"
        );
    }
    assert!(matches!(
        server.api.middlewares("config.user.get"),
        Err(ApiError::UnknownMethod(_))
    ));
}

#[test]
fn m1_every_builtin_method_can_be_wrapped() {
    let server = Server::new();
    let names = server.api.method_names();
    assert_eq!(
        names,
        [
            "agents.list",
            "agents.setStatus",
            "audit.list",
            "config.users.add",
            "config.users.delete",
            "config.users.edit",
            "config.users.get",
            "plugins.list",
            "plugins.load",
            "plugins.unload",
            "shared.get",
            "shared.set",
        ]
    );
    for name in names {
        let (counter, _) = counting("any");
        server
            .api
            .add_middleware(name, plugin("p"), counter)
            .unwrap();
        assert_eq!(server.api.middlewares(name).unwrap().len(), 1);
    }
}

#[test]
fn m1_middleware_added_twice_is_removed_by_equality_one_at_a_time() {
    let server = Server::new();
    let trace = Arc::new(Mutex::new(Vec::new()));
    let method = "agents.list";
    server
        .api
        .add_middleware(method, plugin("p"), tracing_middleware("A", &trace))
        .unwrap();
    server
        .api
        .add_middleware(method, plugin("p"), tracing_middleware("B", &trace))
        .unwrap();
    server
        .api
        .add_middleware(method, plugin("p"), tracing_middleware("A", &trace))
        .unwrap();

    server.call(&server.admin, method, "[]").unwrap();
    assert_eq!(
        trace
            .lock()
            .unwrap()
            .iter()
            .filter(|t| t.ends_with("in"))
            .count(),
        3
    );

    // A fresh but equal object removes the first equal registration.
    assert!(remove_equal(
        &server,
        method,
        &tracing_middleware("A", &trace)
    ));
    trace.lock().unwrap().clear();
    server.call(&server.admin, method, "[]").unwrap();
    assert_eq!(*trace.lock().unwrap(), ["B in", "A in", "A out", "B out"]);

    assert!(remove_equal(
        &server,
        method,
        &tracing_middleware("A", &trace)
    ));
    assert!(!remove_equal(
        &server,
        method,
        &tracing_middleware("A", &trace)
    ));
    // Registered on another method: removing it here finds nothing.
    assert!(!remove_equal(
        &server,
        "shared.get",
        &tracing_middleware("B", &trace)
    ));
    trace.lock().unwrap().clear();
    server.call(&server.admin, method, "[]").unwrap();
    assert_eq!(*trace.lock().unwrap(), ["B in", "B out"]);
}

#[test]
fn m1_remove_middleware_by_stale_id_is_false() {
    let server = Server::new();
    let (counter, count) = counting("c");
    let id = server
        .api
        .add_middleware("shared.get", plugin("p"), counter)
        .unwrap();
    assert!(server.api.remove_middleware(id).is_some());
    assert!(server.api.remove_middleware(id).is_none());
    server
        .call(&server.admin, "shared.get", r#"["x"]"#)
        .unwrap();
    assert_eq!(
        count.load(Ordering::SeqCst),
        0,
        "removed means no longer called"
    );
}

#[test]
fn m2_middleware_gets_handler_and_args_caller_first() {
    let server = Server::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    server
        .api
        .add_middleware(
            "agents.setStatus",
            plugin("p"),
            middleware("spy", move |next, args| {
                assert_eq!(next.method_name(), "agents.setStatus");
                log.lock().expect("log").push(args.clone());
                next.call(args)
            }),
        )
        .unwrap();

    let params = format!(r#"[{}, 2, "Lunch"]"#, server.alice_id);
    server
        .call(&server.alice, "agents.setStatus", &params)
        .unwrap();

    let seen = seen.lock().unwrap();
    let [args] = seen.as_slice() else {
        panic!("one call expected: {seen:?}");
    };
    // D3: (caller, *params), the caller as a user dict.
    let caller = format!(
        r#"{{"id":{},"username":"alice","displayname":"alice","superuser":false,"agent":true}}"#,
        server.alice_id
    );
    assert_eq!(
        Value::List(args.clone()).to_json_string(),
        format!(r#"[{caller},{},2,"Lunch"]"#, server.alice_id)
    );
}

#[test]
fn m2_middleware_may_change_arguments_and_result() {
    let server = Server::new();
    server
        .api
        .add_middleware(
            "shared.set",
            plugin("p"),
            middleware("normalise", |next, mut args| {
                // Store every value wrapped, and report the call as handled.
                let data = args.pop().unwrap_or_default();
                args.push(Value::record([("wrapped", data)]));
                let stored = next.call(args)?;
                Ok(Value::record([
                    ("stored", stored),
                    ("by", Value::from("normalise")),
                ]))
            }),
        )
        .unwrap();

    let result = server
        .call(&server.alice, "shared.set", r#"["queue", 5]"#)
        .unwrap();

    assert_eq!(
        result.to_json_string(),
        r#"{"stored":{"wrapped":5},"by":"normalise"}"#
    );
    assert_eq!(
        server.api.core().shared().get("queue"),
        json(r#"{"wrapped":5}"#)
    );
}

#[test]
fn m2_middleware_may_answer_without_calling_the_handler() {
    let server = Server::new();
    server
        .api
        .add_middleware(
            "shared.set",
            plugin("p"),
            middleware("dry-run", |_next, args| Ok(Value::List(args))),
        )
        .unwrap();
    let result = server
        .call(&server.admin, "shared.set", r#"["x", 1]"#)
        .unwrap();
    assert_eq!(
        result.get("id"),
        None,
        "not a user dict: it is the args list"
    );
    assert!(matches!(&result, Value::List(items) if items.len() == 3));
    assert_eq!(
        server.api.core().shared().get("x"),
        Value::empty_map(),
        "the built-in method never ran"
    );
}

#[test]
fn m2_middleware_may_call_the_handler_more_than_once() {
    let server = Server::new();
    server
        .api
        .add_middleware(
            "shared.set",
            plugin("p"),
            middleware("twice", |next, args| {
                let mut second = args.clone();
                if let Some(Value::Str(identificator)) = second.get_mut(1) {
                    identificator.push_str(".copy");
                }
                next.call(args)?;
                next.call(second)
            }),
        )
        .unwrap();
    server
        .call(&server.admin, "shared.set", r#"["x", 1]"#)
        .unwrap();
    assert_eq!(server.api.core().shared().get("x"), Value::Int(1));
    assert_eq!(server.api.core().shared().get("x.copy"), Value::Int(1));
}

#[test]
fn m3_middleware_errors_reach_the_caller_unchanged() {
    let server = Server::new();
    let fields = FieldErrors::from([("username".to_owned(), "must be lower case".to_owned())]);
    let errors = [
        ApiError::InvalidInput(fields),
        ApiError::PermissionDenied("only supervisors may edit users".to_owned()),
        ApiError::Processing("not during business hours".to_owned()),
    ];
    let current = Arc::new(Mutex::new(None::<ApiError>));
    let raising = Arc::clone(&current);
    server
        .api
        .add_middleware(
            "config.users.edit",
            plugin("p"),
            middleware("raiser", move |_next, _args| {
                Err(raising
                    .lock()
                    .expect("lock")
                    .clone()
                    .expect("an error to raise"))
            }),
        )
        .unwrap();
    for error in errors {
        *current.lock().unwrap() = Some(error.clone());
        let params = format!(r#"[{{"id": {}, "username": "Alice"}}]"#, server.alice_id);
        assert_eq!(
            server.call(&server.admin, "config.users.edit", &params),
            Err(error)
        );
    }
    assert_eq!(
        server
            .api
            .core()
            .directory()
            .get(server.alice_id)
            .unwrap()
            .username,
        "alice"
    );
}

#[test]
fn m3_handler_errors_pass_out_through_the_chain() {
    let server = Server::new();
    let (counter, count) = counting("c");
    server
        .api
        .add_middleware("config.users.get", plugin("p"), counter)
        .unwrap();
    assert!(matches!(
        server.call(&server.admin, "config.users.get", "[999]"),
        Err(ApiError::NotFound(_))
    ));
    assert!(matches!(
        server.call(&server.admin, "config.users.get", r#"["1"]"#),
        Err(ApiError::InvalidInput(fields)) if fields.contains_key("user_id")
    ));
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[test]
fn d2_first_registered_middleware_is_outermost() {
    let server = Server::new();
    let trace = Arc::new(Mutex::new(Vec::new()));
    for name in ["first", "second", "third"] {
        server
            .api
            .add_middleware(
                "agents.list",
                plugin(name),
                tracing_middleware(name, &trace),
            )
            .unwrap();
    }
    server.call(&server.alice, "agents.list", "[]").unwrap();
    assert_eq!(
        *trace.lock().unwrap(),
        [
            "first in",
            "second in",
            "third in",
            "third out",
            "second out",
            "first out"
        ]
    );
    let owners: Vec<_> = server
        .api
        .middlewares("agents.list")
        .unwrap()
        .iter()
        .map(|registration| registration.owner.name().to_owned())
        .collect();
    assert_eq!(owners, ["first", "second", "third"]);
}

#[test]
fn d2_outer_middleware_sees_what_the_inner_one_returned() {
    let server = Server::new();
    server
        .api
        .add_middleware(
            "shared.get",
            plugin("outer"),
            middleware("outer", |next, args| {
                let inner = next.call(args)?;
                Ok(Value::List(vec![Value::from("outer"), inner]))
            }),
        )
        .unwrap();
    server
        .api
        .add_middleware(
            "shared.get",
            plugin("inner"),
            middleware("inner", |next, args| {
                let builtin = next.call(args)?;
                Ok(Value::List(vec![Value::from("inner"), builtin]))
            }),
        )
        .unwrap();
    let result = server
        .call(&server.admin, "shared.get", r#"["x"]"#)
        .unwrap();
    assert_eq!(result.to_json_string(), r#"["outer",["inner",{}]]"#);
}

#[test]
fn d3_unknown_sid_is_unauthenticated_before_any_middleware_runs() {
    let server = Server::new();
    let (counter, count) = counting("c");
    server
        .api
        .add_middleware("agents.list", plugin("p"), counter)
        .unwrap();
    let logged_out = server.api.core().sessions().open(server.bob_id).unwrap();
    server.api.core().sessions().close(&logged_out).unwrap();
    for sid in [
        "",
        "nope",
        "00000000000000000000000000000000",
        logged_out.as_str(),
    ] {
        assert_eq!(
            server.call(sid, "agents.list", "[]"),
            Err(ApiError::Unauthenticated),
            "{sid:?}"
        );
        // Even for a method that does not exist: the sid is checked first.
        assert_eq!(
            server.call(sid, "no.such.method", "[]"),
            Err(ApiError::Unauthenticated)
        );
    }
    assert_eq!(count.load(Ordering::SeqCst), 0);

    // A deleted user's session is gone too.
    server
        .call(
            &server.admin,
            "config.users.delete",
            &format!("[{}]", server.bob_id),
        )
        .unwrap();
    assert_eq!(
        server.call(&server.bob, "agents.list", "[]"),
        Err(ApiError::Unauthenticated)
    );
    assert_eq!(count.load(Ordering::SeqCst), 0);
    server.call(&server.admin, "agents.list", "[]").unwrap();
    assert_eq!(
        count.load(Ordering::SeqCst),
        1,
        "a valid session gets through"
    );
}

#[test]
fn d3_permission_check_is_innermost_so_middleware_sees_every_call() {
    let server = Server::new();
    let (counter, count) = counting("c");
    server
        .api
        .add_middleware("config.users.get", plugin("p"), counter)
        .unwrap();
    assert!(matches!(
        server.call(&server.alice, "config.users.get", "[]"),
        Err(ApiError::PermissionDenied(_))
    ));
    assert_eq!(
        count.load(Ordering::SeqCst),
        1,
        "the middleware saw the refused call"
    );
}

#[test]
fn d3_middleware_may_refuse_earlier_than_the_builtin_check() {
    let server = Server::new();
    server
        .api
        .add_middleware(
            "config.users.delete",
            plugin("p"),
            middleware("four-eyes", |_next, args| {
                let caller = args.first().cloned().unwrap_or_default();
                Err(ApiError::PermissionDenied(format!(
                    "{} needs a second approver",
                    caller
                        .get("username")
                        .and_then(Value::as_str)
                        .unwrap_or("?")
                )))
            }),
        )
        .unwrap();
    assert_eq!(
        server.call(
            &server.admin,
            "config.users.delete",
            &format!("[{}]", server.bob_id)
        ),
        Err(ApiError::PermissionDenied(
            "admin needs a second approver".to_owned()
        ))
    );
    assert!(server.api.core().directory().get(server.bob_id).is_some());
}

#[test]
fn d3_rewriting_the_caller_argument_grants_nothing() {
    let server = Server::new();
    server
        .api
        .add_middleware(
            "config.users.get",
            plugin("p"),
            middleware("impostor", |next, mut args| {
                if let Some(caller) = args.first_mut() {
                    *caller = json(
                        r#"{"id":1,"username":"admin","displayname":"","superuser":true,"agent":false}"#,
                    );
                }
                next.call(args)
            }),
        )
        .unwrap();
    assert!(matches!(
        server.call(&server.alice, "config.users.get", "[]"),
        Err(ApiError::PermissionDenied(_))
    ));
}

#[test]
fn d3_documented_edit_user_middleware_gets_caller_and_data() {
    let server = Server::new();
    // The documented example: `edit_user(self, handler, user, data)`.
    server
        .api
        .add_middleware(
            "config.users.edit",
            plugin("p"),
            middleware("edit_user", |next, args| {
                let [user, data] = args.as_slice() else {
                    return Err(ApiError::Processing(format!("got {} args", args.len())));
                };
                if user.get("superuser") != Some(&Value::Bool(true)) {
                    return Err(ApiError::PermissionDenied("no".to_owned()));
                }
                if let Some(Value::Str(name)) = data.get("displayname")
                    && name.trim().is_empty()
                {
                    return Err(ApiError::field("displayname", "must not be blank"));
                }
                next.call(args)
            }),
        )
        .unwrap();
    let edit = |name: &str| {
        format!(
            r#"[{{"id": {}, "displayname": "{name}"}}]"#,
            server.alice_id
        )
    };
    assert_eq!(
        server.call(&server.admin, "config.users.edit", &edit("  ")),
        Err(ApiError::field("displayname", "must not be blank"))
    );
    let edited = server
        .call(&server.admin, "config.users.edit", &edit("Alice A."))
        .unwrap();
    assert_eq!(edited.get("displayname"), Some(&Value::from("Alice A.")));
}

#[test]
fn d3_a_call_as_an_authenticated_caller_runs_the_same_chain() {
    let server = Server::new();
    let (counter, count) = counting("c");
    server
        .api
        .add_middleware("agents.list", plugin("p"), counter)
        .unwrap();
    let admin = server.api.core().caller(&server.admin).unwrap();
    server
        .api
        .call_as(admin.clone(), "agents.list", vec![])
        .unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert_eq!(
        server.api.call_as(admin, "nope", vec![]),
        Err(ApiError::UnknownMethod("nope".to_owned()))
    );
}

#[test]
fn l4_middleware_left_behind_is_removed_with_its_owner() {
    let server = Server::new();
    let (leaky, leaky_count) = counting("Leaky.mw");
    let (other, other_count) = counting("Other.mw");
    server
        .api
        .add_middleware("agents.list", plugin("leaky"), leaky)
        .unwrap();
    server
        .api
        .add_middleware("agents.list", plugin("other"), other)
        .unwrap();
    let leftovers = server.api.remove_owned_by(&plugin("leaky"));
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    assert_eq!(
        leftovers[0].to_string(),
        "middleware for agents.list Leaky.mw"
    );
    server.call(&server.admin, "agents.list", "[]").unwrap();
    assert_eq!(leaky_count.load(Ordering::SeqCst), 0);
    assert_eq!(other_count.load(Ordering::SeqCst), 1);
}

#[test]
fn a_quick_read_with_no_middleware_runs_inline_and_one_with_middleware_does_not() {
    let server = Server::new();
    let inline = server
        .api
        .call_if_quick(&server.admin, "agents.list", Vec::new());
    assert!(
        matches!(inline, QuickCall::Answered(Ok(Value::List(_)))),
        "{inline:?}"
    );

    let unauthenticated = server.api.call_if_quick("nope", "agents.list", Vec::new());
    assert!(matches!(
        unauthenticated,
        QuickCall::Answered(Err(ApiError::Unauthenticated))
    ));

    // A method that may block or run Python is handed back, params intact.
    let params = vec![Value::from("x"), Value::Int(1)];
    let handed_back = server
        .api
        .call_if_quick(&server.admin, "shared.set", params.clone());
    assert!(matches!(handed_back, QuickCall::NotQuick(back) if back == params));

    // With a middleware (D3: it must see every call) the read is no longer
    // quick, and the middleware did not run.
    let (counter, count) = counting("m");
    server
        .api
        .add_middleware("agents.list", plugin("p"), counter)
        .unwrap();
    let handed_back = server
        .api
        .call_if_quick(&server.admin, "agents.list", Vec::new());
    assert!(matches!(handed_back, QuickCall::NotQuick(back) if back.is_empty()));
    assert_eq!(count.load(Ordering::SeqCst), 0);
}

/// Issue 13: `agents.list` for a wire is serialized once per change of the
/// directory and the same text handed out until the next change; a status
/// change or a new agent shows at once. With a middleware it is not quick.
#[test]
fn agents_list_json_is_kept_until_an_agent_or_user_changes() {
    let server = Server::new();
    let read = |server: &Server| match server.api.call_if_quick_json(
        &server.admin,
        "agents.list",
        Vec::new(),
    ) {
        QuickCall::Answered(Ok(json)) => json,
        other => panic!("{other:?}"),
    };
    let first = read(&server);
    let again = read(&server);
    assert!(std::sync::Arc::ptr_eq(&first, &again), "the kept copy");
    let listed = server
        .call(&server.admin, "agents.list", "[]")
        .expect("list");
    assert_eq!(
        *first,
        *listed.to_json_string(),
        "the same answer as a plain call"
    );

    server
        .call(
            &server.admin,
            "agents.setStatus",
            &format!("[{}, 2, \"Lunch\"]", server.alice_id),
        )
        .expect("setStatus");
    let after_change = read(&server);
    assert!(after_change.contains("\"Lunch\""), "{after_change}");
    assert_eq!(
        *after_change,
        *server
            .call(&server.admin, "agents.list", "[]")
            .expect("list")
            .to_json_string()
    );

    server
        .call(
            &server.admin,
            "config.users.add",
            r#"[{"username": "dave", "password": "password1", "agent": true}]"#,
        )
        .expect("add");
    assert!(read(&server).contains("\"dave\""));

    let refused = server
        .api
        .call_if_quick_json("nope", "agents.list", Vec::new());
    assert!(matches!(
        refused,
        QuickCall::Answered(Err(ApiError::Unauthenticated))
    ));
    let (counter, count) = counting("m");
    server
        .api
        .add_middleware("agents.list", plugin("p"), counter)
        .expect("middleware");
    assert!(matches!(
        server
            .api
            .call_if_quick_json(&server.admin, "agents.list", Vec::new()),
        QuickCall::NotQuick(_)
    ));
    assert_eq!(count.load(Ordering::SeqCst), 0);
}
