//! Every example of `docs/plugins.md` runs and does what the guide says.

mod common;

use common::{TestServer, field, python_files_in};
use ucs_api::{ApiError, PluginState};
use ucs_core::{MapKey, Value};

fn server_with_guide_examples() -> TestServer {
    let files = python_files_in("../../docs/examples");
    let plugins: Vec<(&str, &str)> = files
        .iter()
        .map(|(f, s)| (f.as_str(), s.as_str()))
        .collect();
    TestServer::start(&plugins)
}

#[test]
fn every_guide_example_loads() {
    let server = server_with_guide_examples();
    for name in [
        "audit_middleware",
        "break_policy",
        "email_counts",
        "lunch_logger",
    ] {
        let info = server.plugin(name).unwrap();
        assert_eq!(info.state, PluginState::Running, "{name}: {}", info.error);
    }
}

#[test]
fn h4_h5_break_policy_rewrites_and_blocks() {
    let server = server_with_guide_examples();
    let agent = server.add_agent("guideagent");
    let after = server.set_status(agent, 1, "").unwrap();
    assert_eq!(field(&after, "reason"), &Value::from("Training"));
    assert!(matches!(
        server.set_status(agent, 2, "Nap"),
        Err(ApiError::Processing(message)) if message == "unknown break reason 'Nap'"
    ));
    let after = server.set_status(agent, 1, "").unwrap();
    assert_eq!(
        field(&after, "status"),
        &Value::Int(1),
        "only a login is rewritten"
    );
    let after = server.set_status(agent, 2, "Lunch").unwrap();
    assert_eq!(field(&after, "reason"), &Value::from("Lunch"));
    let logged = common::log_lines_with("guideagent display went on a break: Lunch");
    assert!(
        logged.iter().any(|line| line.contains("lunch_logger")),
        "{logged:?}"
    );
}

#[test]
fn s2_email_counts_stores_int_keys() {
    let server = server_with_guide_examples();
    let agent = server.add_agent("guidecount");
    let stored = server
        .call(
            "shared.set",
            vec![
                Value::from("email_counts"),
                Value::record([("guidecount", Value::Int(4)), ("ghost", Value::Int(1))]),
            ],
        )
        .unwrap();
    let Value::Map(map) = stored else { panic!() };
    assert_eq!(map.get(&MapKey::Int(agent)), Some(&Value::Int(4)));
    assert_eq!(map.len(), 1);
}

#[test]
fn m3_audit_middleware_refuses_and_passes() {
    let server = server_with_guide_examples();
    let refused = server.call(
        "config.users.add",
        vec![Value::record([
            ("username", Value::from("nodisplay")),
            ("password", Value::from("password1")),
        ])],
    );
    assert!(matches!(refused, Err(ApiError::InvalidInput(f)) if f.contains_key("displayname")));
    let created = server
        .call(
            "config.users.add",
            vec![Value::record([
                ("username", Value::from("withdisplay")),
                ("displayname", Value::from("With Display")),
                ("password", Value::from("password1")),
            ])],
        )
        .unwrap();
    assert_eq!(field(&created, "username"), &Value::from("withdisplay"));
}
