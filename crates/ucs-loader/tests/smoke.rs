//! The shipped example plugins run as they stand (SPEC errata, section 6).

mod common;

use common::{TestServer, field, shipped_plugins};
use ucs_api::{ApiError, PluginState};
use ucs_core::{MapKey, Value};

fn server_with_examples() -> TestServer {
    let files = shipped_plugins();
    let plugins: Vec<(&str, &str)> = files
        .iter()
        .map(|(f, s)| (f.as_str(), s.as_str()))
        .collect();
    TestServer::start(&plugins)
}

#[test]
fn p1_p3_p4_the_four_examples_load_and_run() {
    let server = server_with_examples();
    for (name, class) in [
        ("example", "Example"),
        ("middleware", "Middleware"),
        ("shared_data_hook", "SharedDataHook"),
        ("status_hook", "StatusHook"),
    ] {
        let info = server
            .plugin(name)
            .unwrap_or_else(|| panic!("{name} not listed"));
        assert_eq!(info.state, PluginState::Running, "{name}: {}", info.error);
        assert_eq!(info.class_name, class);
    }
}

#[test]
fn h4_status_hook_example_rewrites_offline_to_ready() {
    let server = server_with_examples();
    let alice = server.add_agent("alice");
    let agent = server.set_status(alice, 1, "").unwrap();
    assert_eq!(field(&agent, "status"), &Value::Int(2));
    assert_eq!(
        field(&agent, "reason"),
        &Value::from("Seznámení se z provozními pokyny")
    );
}

#[test]
fn d4_shared_data_hook_example_reads_int_keys_back() {
    let server = server_with_examples();
    let alice = server.add_agent("alice");
    let first = Value::record([("alice", Value::Int(3)), ("nobody", Value::Int(1))]);
    let stored = server
        .call("shared.set", vec![Value::from("agent_emails"), first])
        .unwrap();
    let Value::Map(map) = &stored else {
        panic!("{stored:?}")
    };
    assert_eq!(map.get(&MapKey::Int(alice)), Some(&Value::Int(3)));
    assert_eq!(map.len(), 1, "unknown usernames are dropped: {stored:?}");

    let second = Value::record([("alice", Value::Int(5))]);
    server
        .call("shared.set", vec![Value::from("agent_emails"), second])
        .unwrap();
    // The hook found the old count through old_data.get(user_id) with an
    // int key, and logged the change.
    let lines = common::log_lines_with(&format!("User ID {alice} email count changed from 3 to 5"));
    assert!(
        !lines.is_empty(),
        "the hook did not find the int key on the second set"
    );
    assert!(lines[0].contains("shared_data_hook"), "{lines:?}");
}

#[test]
fn m3_middleware_example_refuses_deletion_and_admin_rename() {
    let server = server_with_examples();
    let bob = server.add_user("bob", false, false);
    assert!(matches!(
        server.call("config.users.delete", vec![Value::Int(bob)]),
        Err(ApiError::PermissionDenied(message)) if message == "This UCS forbids user removal"
    ));
    let rename = Value::record([("id", Value::Int(1)), ("username", Value::from("root"))]);
    assert!(matches!(
        server.call("config.users.edit", vec![rename]),
        Err(ApiError::InvalidInput(fields)) if fields["username"] == "Admin username can't be changed"
    ));
    let user = server
        .call("config.users.get", vec![Value::Int(bob)])
        .unwrap();
    assert_eq!(field(&user, "username"), &Value::from("bob"));
}

#[test]
fn p5_example_thread_stops_on_unload() {
    let server = server_with_examples();
    let info = server.unload("example").unwrap();
    assert_eq!(field(&info, "state"), &Value::from("stopped"));
    assert_eq!(
        field(&info, "error"),
        &Value::from(""),
        "the thread ended in time"
    );
}
