//! SPEC P6 and D1 at the API: `plugins.*` delegate to the loader's
//! [`PluginControl`] after checking the session and the plugin name.

use std::sync::{Arc, Mutex};

use ucs_api::{ApiError, PluginControl, PluginInfo, PluginName, PluginState};

use crate::fixtures::{Expect, Server, check};

use Expect::{Invalid, NotFound, Processing};

/// Stands in for the loader: records what it was asked and knows one plugin.
#[derive(Default)]
struct FakeControl {
    calls: Mutex<Vec<String>>,
}

impl FakeControl {
    fn info(name: &str, state: PluginState) -> PluginInfo {
        PluginInfo {
            name: name.to_owned(),
            class_name: "Example".to_owned(),
            state,
            error: String::new(),
            path: format!("/plugins/{name}.py"),
            isolation: ucs_api::Isolation::InProcess,
            host_pid: None,
            restarts: 0,
        }
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("calls lock").clone()
    }
}

impl PluginControl for FakeControl {
    fn list(&self) -> Vec<PluginInfo> {
        self.calls
            .lock()
            .expect("calls lock")
            .push("list".to_owned());
        vec![Self::info("example", PluginState::Running)]
    }

    fn load(&self, name: &PluginName) -> Result<PluginInfo, ApiError> {
        self.calls
            .lock()
            .expect("calls lock")
            .push(format!("load {name}"));
        match name.as_str() {
            "example" => Ok(Self::info("example", PluginState::Running)),
            "broken" => Err(ApiError::Processing("Traceback: SyntaxError".to_owned())),
            other => Err(ApiError::NotFound(format!("no plugin file {other}.py"))),
        }
    }

    fn unload(&self, name: &PluginName) -> Result<PluginInfo, ApiError> {
        self.calls
            .lock()
            .expect("calls lock")
            .push(format!("unload {name}"));
        match name.as_str() {
            "example" => Ok(Self::info("example", PluginState::Stopped)),
            other => Err(ApiError::Processing(format!(
                "plugin {other} is not loaded"
            ))),
        }
    }
}

fn with_control() -> (Server, Arc<FakeControl>) {
    let server = Server::new();
    let control = Arc::new(FakeControl::default());
    let as_trait: Arc<dyn PluginControl> = Arc::clone(&control) as Arc<dyn PluginControl>;
    server.api.set_plugin_control(Arc::downgrade(&as_trait));
    (server, control)
}

#[test]
fn p6_plugins_methods_without_a_plugin_control_are_processing_errors() {
    let server = Server::new();
    for (method, params) in [
        ("plugins.list", "[]"),
        ("plugins.load", r#"["example"]"#),
        ("plugins.unload", r#"["example"]"#),
    ] {
        check(
            &server,
            &server.admin,
            method,
            params,
            Processing("not enabled"),
        );
    }
}

#[test]
fn p6_a_dropped_plugin_control_is_a_processing_error_not_a_panic() {
    let (server, control) = with_control();
    drop(control);
    check(
        &server,
        &server.admin,
        "plugins.list",
        "[]",
        Processing("not enabled"),
    );
}

#[test]
fn d1_invalid_plugin_names_are_refused_before_the_control_is_called() {
    let (server, control) = with_control();
    let cases = [
        ("plugins.load", r#"["../x"]"#, Invalid(&["plugin_name"])),
        ("plugins.load", r#"["a/b"]"#, Invalid(&["plugin_name"])),
        (
            "plugins.load",
            r#"["/etc/passwd"]"#,
            Invalid(&["plugin_name"]),
        ),
        ("plugins.load", r#"[".hidden"]"#, Invalid(&["plugin_name"])),
        ("plugins.load", r#"["a.b.py"]"#, Invalid(&["plugin_name"])),
        ("plugins.load", r#"["9lives"]"#, Invalid(&["plugin_name"])),
        ("plugins.load", r#"[""]"#, Invalid(&["plugin_name"])),
        (
            "plugins.load",
            r#"["example\u0000"]"#,
            Invalid(&["plugin_name"]),
        ),
        ("plugins.load", "[5]", Invalid(&["plugin_name"])),
        ("plugins.load", "[null]", Invalid(&["plugin_name"])),
        ("plugins.load", "[]", Invalid(&["params"])),
        ("plugins.load", r#"["a", "b"]"#, Invalid(&["params"])),
        ("plugins.unload", r#"["../x"]"#, Invalid(&["plugin_name"])),
        ("plugins.unload", r#"["a/b"]"#, Invalid(&["plugin_name"])),
        ("plugins.unload", r#"["..\\x"]"#, Invalid(&["plugin_name"])),
        ("plugins.unload", "[[]]", Invalid(&["plugin_name"])),
        ("plugins.unload", "[]", Invalid(&["params"])),
        ("plugins.list", "[1]", Invalid(&["params"])),
    ];
    for (method, params, expect) in cases {
        check(&server, &server.admin, method, params, expect);
    }
    assert_eq!(
        control.calls(),
        Vec::<String>::new(),
        "the loader was never asked"
    );
}

#[test]
fn p6_valid_calls_reach_the_control_with_the_plugin_name() {
    let (server, control) = with_control();
    let running = r#"{"name":"example","class_name":"Example","state":"running","error":"","path":"/plugins/example.py","isolation":"inprocess","host_pid":null,"restarts":0,"registrations":[]}"#;
    let stopped = r#"{"name":"example","class_name":"Example","state":"stopped","error":"","path":"/plugins/example.py","isolation":"inprocess","host_pid":null,"restarts":0,"registrations":[]}"#;
    check(
        &server,
        &server.admin,
        "plugins.list",
        "[]",
        Expect::Ok(&format!("[{running}]")),
    );
    check(
        &server,
        &server.admin,
        "plugins.load",
        r#"["example"]"#,
        Expect::Ok(running),
    );
    // D1: a trailing `.py` is accepted.
    check(
        &server,
        &server.admin,
        "plugins.load",
        r#"["example.py"]"#,
        Expect::Ok(running),
    );
    check(
        &server,
        &server.admin,
        "plugins.unload",
        r#"["example"]"#,
        Expect::Ok(stopped),
    );
    // The control's errors reach the caller as they are.
    check(
        &server,
        &server.admin,
        "plugins.load",
        r#"["missing"]"#,
        NotFound,
    );
    check(
        &server,
        &server.admin,
        "plugins.load",
        r#"["broken"]"#,
        Processing("SyntaxError"),
    );
    check(
        &server,
        &server.admin,
        "plugins.unload",
        r#"["other"]"#,
        Processing("not loaded"),
    );
    assert_eq!(
        control.calls(),
        [
            "list",
            "load example",
            "load example",
            "unload example",
            "load missing",
            "load broken",
            "unload other"
        ]
    );
}

#[test]
fn p6_plugins_methods_need_a_superuser_even_with_a_control() {
    let (server, control) = with_control();
    for (method, params) in [
        ("plugins.list", "[]"),
        ("plugins.load", r#"["example"]"#),
        ("plugins.unload", r#"["example"]"#),
    ] {
        check(&server, &server.alice, method, params, Expect::Denied);
    }
    assert!(control.calls().is_empty());
}
