//! Plugin discovery and lifecycle through real plugin files: SPEC P1-P7, D1,
//! L1-L4. Every plugin module name is unique in this binary, because
//! `sys.modules` is shared by the tests running in parallel.

mod common;

use std::os::unix::ffi::OsStrExt as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{TestServer, field, json, log_lines_with, log_records_of, py, wait_for};
use ucs_api::{ApiError, PluginState};
use ucs_core::Value;

/// A plugin whose constructor appends its module name to shared `order`.
fn recording_plugin() -> String {
    py(r#"
class Recorder:
    def __init__(self, ucs):
        record(ucs, 'order', __name__)

UCS_PLUGIN = 'Recorder'
"#)
}

#[test]
fn p1_plugins_load_in_sorted_name_order() {
    let source = recording_plugin();
    // Written out of order; the directory's own order is arbitrary anyway.
    let server = TestServer::start(&[
        ("p1_order_b.py", &source),
        ("p1_order_c.py", &source),
        ("p1_order_a.py", &source),
        ("p1_order_B.py", &source),
    ]);
    assert_eq!(
        server.shared("order"),
        json(r#"["p1_order_B", "p1_order_a", "p1_order_b", "p1_order_c"]"#)
    );
}

#[test]
fn p1_only_top_level_py_files_are_plugins_not_init_dotfiles_or_subdirectories() {
    let source = recording_plugin();
    let server = TestServer::start_with(
        &[
            ("p1_skip_b.py", &source),
            ("p1_skip_a.py", &source),
            ("__init__.py", &source),
            (".p1_skip_hidden.py", &source),
            ("p1_skip_text.txt", &source),
        ],
        |config| {
            // Subdirectories exist before the scan.
            let dir = &config.plugins_dir;
            std::fs::create_dir(dir.join("p1_skip_sub")).unwrap();
            std::fs::write(dir.join("p1_skip_sub/p1_skip_nested.py"), &source).unwrap();
            std::fs::create_dir(dir.join("p1_skip_dir.py")).unwrap();
        },
    );
    assert_eq!(
        server.shared("order"),
        json(r#"["p1_skip_a", "p1_skip_b"]"#),
        "__init__.py, dotfiles, non-.py files and subdirectories must be skipped"
    );
    let mut names: Vec<String> = server
        .call("plugins.list", vec![])
        .map(|list| match list {
            Value::List(items) => items
                .iter()
                .map(|info| field(info, "name").as_str().unwrap().to_owned())
                .collect(),
            other => panic!("{other:?}"),
        })
        .unwrap();
    names.sort();
    assert_eq!(names, ["p1_skip_a", "p1_skip_b"]);
}

/// D1, issue 15 item 6: a symbolic link in the plugins directory, here to
/// a plugin outside it, is never run: skipped with a warning at start and
/// refused with a message by `plugins.load`, the same way both times.
#[test]
fn d1_a_symlink_out_of_the_plugins_directory_is_never_loaded() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("d1_outside.py");
    std::fs::write(&target, recording_plugin()).unwrap();
    let server = TestServer::start_with(&[], |config| {
        std::os::unix::fs::symlink(&target, config.plugins_dir.join("d1_link_start.py")).unwrap();
    });
    assert_eq!(server.shared("order"), Value::empty_map(), "ran at start");
    assert!(
        !common::log_lines_with("skipping d1_link_start.py: plugins load only from regular files")
            .is_empty(),
        "skipped silently"
    );

    std::os::unix::fs::symlink(&target, server.path("d1_link_load.py")).unwrap();
    let err = server.load("d1_link_load").unwrap_err();
    let ApiError::Processing(message) = &err else {
        panic!("{err:?}");
    };
    assert!(message.contains("is a symbolic link"), "{message}");
    assert_eq!(
        server.shared("order"),
        Value::empty_map(),
        "ran by plugins.load"
    );
}

#[test]
fn p2_file_without_ucs_plugin_is_skipped_at_start_and_not_listed() {
    let plugin = py(r#"
class P2Plugin:
    def __init__(self, ucs):
        put(ucs, 'p2_plugin', 'constructed')

UCS_PLUGIN = 'P2Plugin'
"#);
    let helper = r#"
# No UCS_PLUGIN: a helper, not a plugin.
class NotAPlugin:
    def __init__(self, ucs):
        raise RuntimeError('must never be constructed')
"#;
    let server = TestServer::start(&[("p2_helper.py", helper), ("p2_plugin.py", &plugin)]);
    assert!(
        server.plugin("p2_helper").is_none(),
        "{:?}",
        server.plugin("p2_helper")
    );
    assert_eq!(server.state_of("p2_plugin"), PluginState::Running);
    assert_eq!(server.shared("p2_plugin"), Value::from("constructed"));
    assert!(
        !log_records_of("p2_helper", &["UCS_PLUGIN"]).is_empty(),
        "skipping is logged at debug"
    );
    assert!(log_records_of("p2_helper", &["ERROR"]).is_empty());
}

/// Issue 12 item 5: `plugins.list` lists what it says it lists, "loaded,
/// failed or found in the directory". A plugin file dropped in after start is
/// STOPPED with no error until loaded, and STOPPED again once unloaded; a file
/// found to have no `UCS_PLUGIN` (P2), `__init__.py`, dotfiles and misnamed
/// files (P1, D1) stay out.
#[test]
fn issue12_plugins_list_shows_plugin_files_not_loaded_yet_as_stopped() {
    let helper = "# No UCS_PLUGIN: a helper, not a plugin.\nX = 1\n";
    let server = TestServer::start(&[
        ("i5_running.py", &recording_plugin()),
        ("i5_helper.py", helper),
    ]);
    let listed = |server: &TestServer| -> Vec<(String, String, String)> {
        let Value::List(items) = server.call("plugins.list", vec![]).unwrap() else {
            panic!("plugins.list is a list");
        };
        items
            .iter()
            .map(|info| {
                let text = |key| field(info, key).as_str().unwrap().to_owned();
                (text("name"), text("state"), text("error"))
            })
            .collect()
    };
    let entry = |name: &str, state: &str| (name.to_owned(), state.to_owned(), String::new());
    assert_eq!(listed(&server), [entry("i5_running", "running")]);

    for file in [
        "i5_newone.py",
        "__init__.py",
        ".i5_hidden.py",
        "i5-misnamed.py",
    ] {
        server.write_plugin(file, &recording_plugin());
    }
    assert_eq!(
        listed(&server),
        [
            entry("i5_newone", "stopped"),
            entry("i5_running", "running")
        ]
    );
    let info = server.plugin("i5_newone").unwrap();
    assert_eq!(info.path, server.path("i5_newone.py").to_string_lossy());

    server.load("i5_newone").unwrap();
    assert_eq!(server.state_of("i5_newone"), PluginState::Running);
    server.unload("i5_newone").unwrap();
    assert_eq!(
        listed(&server),
        [
            entry("i5_newone", "stopped"),
            entry("i5_running", "running")
        ]
    );
    // Deleted: no longer found in the directory, but still known as unloaded.
    std::fs::remove_file(server.path("i5_newone.py")).unwrap();
    assert_eq!(server.state_of("i5_newone"), PluginState::Stopped);
}

#[test]
fn p3_class_named_by_ucs_plugin_is_constructed_with_the_ucs_object() {
    let plugin = py(r#"
class P3Plugin:
    def __init__(self, ucs):
        self.ucs = ucs
        put(ucs, 'p3', {
            'repr': repr(ucs),
            'has': [hasattr(ucs, n) for n in ('log', 'agents', 'shared', 'tree', 'api', 'addCallback', 'removeCallback', 'sid')],
            'users': ucs.tree.getUsers('username'),
        })

class Decoy:
    def __init__(self, *args):
        raise RuntimeError('the wrong class was constructed')

UCS_PLUGIN = 'P3Plugin'
"#);
    let server = TestServer::start(&[("p3_ctor.py", &plugin)]);
    let info = server.plugin("p3_ctor").unwrap();
    assert_eq!(info.state, PluginState::Running, "{}", info.error);
    assert_eq!(info.class_name, "P3Plugin");
    let seen = server.shared("p3");
    assert!(
        field(&seen, "repr").as_str().unwrap().contains("p3_ctor"),
        "one ucs object per plugin, naming it: {seen:?}"
    );
    assert_eq!(
        field(&seen, "has"),
        &json("[true, true, true, true, true, true, true, true]")
    );
    let Value::Map(users) = field(&seen, "users") else {
        panic!("{seen:?}")
    };
    assert_eq!(
        users.get(&ucs_core::MapKey::Int(1)),
        Some(&Value::from("admin"))
    );
}

#[test]
fn p4_start_is_called_after_construction() {
    let plugin = py(r#"
class P4Plugin:
    def __init__(self, ucs):
        self.ucs = ucs
        record(ucs, 'p4_calls', 'init')

    def start(self):
        record(self.ucs, 'p4_calls', 'start')

UCS_PLUGIN = 'P4Plugin'
"#);
    let server = TestServer::start(&[("p4_start.py", &plugin)]);
    assert_eq!(server.state_of("p4_start"), PluginState::Running);
    assert_eq!(server.shared("p4_calls"), json(r#"["init", "start"]"#));
}

#[test]
fn p4_thread_plugin_start_is_thread_start_and_its_run_runs() {
    let plugin = py(r#"
class P4Thread(threading.Thread):
    def __init__(self, ucs):
        super().__init__(daemon=True)
        self.ucs = ucs
        self.stopping = threading.Event()

    def run(self):
        put(self.ucs, 'p4_thread', {
            'own_thread': threading.current_thread() is self,
            'main': threading.current_thread() is threading.main_thread(),
        })
        self.stopping.wait(10)
        put(self.ucs, 'p4_thread_end', True)

    def stop(self):
        self.stopping.set()

UCS_PLUGIN = 'P4Thread'
"#);
    let server = TestServer::start(&[("p4_thread.py", &plugin)]);
    assert_eq!(server.state_of("p4_thread"), PluginState::Running);
    assert!(
        wait_for(Duration::from_secs(5), || server.shared("p4_thread")
            != Value::empty_map()),
        "run() never ran"
    );
    assert_eq!(
        server.shared("p4_thread"),
        json(r#"{"own_thread": true, "main": false}"#)
    );
    let info = server.unload("p4_thread").unwrap();
    assert_eq!(field(&info, "error"), &Value::from(""), "{info:?}");
    assert_eq!(server.shared("p4_thread_end"), Value::Bool(true));
}

#[test]
fn p5_stop_is_called_on_reload_on_unload_and_on_shutdown() {
    let plugin = py(r#"
class P5Plugin:
    def __init__(self, ucs):
        self.ucs = ucs
        generation = ucs.shared.get('p5_generation')
        self.generation = generation + 1 if isinstance(generation, int) else 1
        put(ucs, 'p5_generation', self.generation)

    def stop(self):
        record(self.ucs, 'p5_stops', self.generation)

UCS_PLUGIN = 'P5Plugin'
"#);
    let server = TestServer::start(&[("p5_stops.py", &plugin)]);
    assert_eq!(server.shared("p5_stops"), Value::empty_map());
    server.load("p5_stops").unwrap();
    assert_eq!(
        server.shared("p5_stops"),
        json("[1]"),
        "reload stops the old one"
    );
    let info = server.unload("p5_stops").unwrap();
    assert_eq!(field(&info, "state"), &Value::from("stopped"));
    assert_eq!(server.shared("p5_stops"), json("[1, 2]"), "unload stops");
    server.load("p5_stops").unwrap();
    server.host.shutdown();
    assert_eq!(
        server.shared("p5_stops"),
        json("[1, 2, 3]"),
        "shutdown stops"
    );
    assert_eq!(server.state_of("p5_stops"), PluginState::Stopped);
}

#[test]
fn p6_load_and_unload_need_a_superuser() {
    let plugin = py(r#"
class P6Plugin:
    def __init__(self, ucs):
        record(ucs, 'p6_loads', 1)

UCS_PLUGIN = 'P6Plugin'
"#);
    let server = TestServer::start(&[("p6_perm.py", &plugin)]);
    server.add_user("p6_bob", false, false);
    server.add_user("p6_agent", false, true);
    for user in ["p6_bob", "p6_agent"] {
        let sid = server.login(user);
        for method in ["plugins.load", "plugins.unload"] {
            let result = server.api.call(&sid, method, vec![Value::from("p6_perm")]);
            assert!(
                matches!(result, Err(ApiError::PermissionDenied(_))),
                "{user} {method}: {result:?}"
            );
        }
    }
    assert_eq!(server.state_of("p6_perm"), PluginState::Running);
    assert_eq!(server.shared("p6_loads"), json("[1]"), "not reloaded");
    // A second superuser may.
    server.add_user("p6_root", true, false);
    let sid = server.login("p6_root");
    server
        .api
        .call(&sid, "plugins.unload", vec![Value::from("p6_perm")])
        .unwrap();
    assert_eq!(server.state_of("p6_perm"), PluginState::Stopped);
}

#[test]
fn p6_load_of_a_loaded_plugin_stops_it_and_rereads_its_changed_file() {
    let first = py(r#"
OLD_ONLY = 'from version 1'

class Version1:
    def __init__(self, ucs):
        self.ucs = ucs
        record(ucs, 'p6_log', 'v1 init')

    def stop(self):
        record(self.ucs, 'p6_log', 'v1 stop')

UCS_PLUGIN = 'Version1'
"#);
    let server = TestServer::start(&[("p6_reload.py", &first)]);
    assert_eq!(server.plugin("p6_reload").unwrap().class_name, "Version1");
    server.write_plugin(
        "p6_reload.py",
        &py(r#"
class Version2:
    def __init__(self, ucs):
        record(ucs, 'p6_log', 'v2 init, old global kept: %s' % ('OLD_ONLY' in globals()))

UCS_PLUGIN = 'Version2'
"#),
    );
    let info = server.load("p6_reload").unwrap();
    assert_eq!(field(&info, "class_name"), &Value::from("Version2"));
    assert_eq!(field(&info, "state"), &Value::from("running"));
    assert_eq!(
        server.shared("p6_log"),
        json(r#"["v1 init", "v1 stop", "v2 init, old global kept: False"]"#)
    );
}

/// Registers one of everything and never unregisters it (P7's warning).
fn leftover_plugin() -> String {
    py(r#"
class Leaky:
    def __init__(self, ucs):
        self.ucs = ucs
        ucs.addCallback(events.EVENT_AGENT_STATUS, self.on_status)
        ucs.agents.addChangeStatusHook(self.status_hook)
        ucs.shared.addChangeHook('leaky_data', self.shared_hook)
        ucs.api.addMiddleware('shared.get', self.middleware)

    def on_status(self, agent, args):
        count = self.ucs.shared.get('leaky_callbacks')
        put(self.ucs, 'leaky_callbacks', count + 1 if isinstance(count, int) else 1)

    def status_hook(self, agent, status, reason):
        return status, 'hooked'

    def shared_hook(self, identificator, old_data, new_data):
        return {'hooked': new_data}

    def middleware(self, handler, caller, identificator):
        return {'wrapped': handler(caller, identificator)}

    # No stop(): everything above is left registered.

UCS_PLUGIN = 'Leaky'
"#)
}

fn assert_leftover_warnings(plugin: &str, times: usize) {
    for what in [
        "callback for agent.status Leaky.on_status()",
        "status hook Leaky.status_hook()",
        "shared data hook for 'leaky_data' Leaky.shared_hook()",
        "middleware for shared.get Leaky.middleware()",
    ] {
        let warnings = log_records_of(plugin, &["WARN", what, "removed it"]);
        assert_eq!(warnings.len(), times, "{what}: {warnings:#?}");
    }
}

#[test]
fn p7_l4_callback_left_registered_is_removed_with_a_warning_on_unload() {
    let server = TestServer::start(&[("p7_leaky_unload.py", &leftover_plugin())]);
    let agent = server.add_agent("p7_alice");
    // Everything works while loaded.
    let after = server.set_status(agent, 2, "Lunch").unwrap();
    assert_eq!(field(&after, "reason"), &Value::from("hooked"));
    assert_eq!(server.shared("leaky_callbacks"), Value::Int(1));
    let stored = server
        .call("shared.set", vec![Value::from("leaky_data"), Value::Int(1)])
        .unwrap();
    assert_eq!(stored, json(r#"{"hooked": 1}"#));
    let got = server
        .call("shared.get", vec![Value::from("leaky_data")])
        .unwrap();
    assert_eq!(got, json(r#"{"wrapped": {"hooked": 1}}"#));

    server.unload("p7_leaky_unload").unwrap();
    assert_leftover_warnings("p7_leaky_unload", 1);

    // And none of it runs any more.
    let after = server.set_status(agent, 1, "").unwrap();
    assert_eq!(field(&after, "reason"), &Value::from(""));
    assert_eq!(server.shared("leaky_callbacks"), Value::Int(1));
    let stored = server
        .call("shared.set", vec![Value::from("leaky_data"), Value::Int(2)])
        .unwrap();
    assert_eq!(stored, Value::Int(2));
    let got = server
        .call("shared.get", vec![Value::from("leaky_data")])
        .unwrap();
    assert_eq!(got, Value::Int(2));
}

#[test]
fn p7_l4_leftovers_are_removed_with_a_warning_on_reload() {
    let server = TestServer::start(&[("p7_leaky_reload.py", &leftover_plugin())]);
    let agent = server.add_agent("p7_bob");
    // The reloaded version registers the one status hook again: it can only
    // load if the old version's hook was removed.
    let info = server.load("p7_leaky_reload").unwrap();
    assert_eq!(field(&info, "state"), &Value::from("running"), "{info:?}");
    assert_leftover_warnings("p7_leaky_reload", 1);

    // One of each is registered now, not two.
    server.set_status(agent, 2, "Lunch").unwrap();
    assert_eq!(server.shared("leaky_callbacks"), Value::Int(1));
    server
        .call("shared.set", vec![Value::from("leaky_data"), Value::Int(1)])
        .unwrap();
    let got = server
        .call("shared.get", vec![Value::from("leaky_data")])
        .unwrap();
    assert_eq!(got, json(r#"{"wrapped": {"hooked": 1}}"#));
}

#[test]
fn p7_l4_what_stop_unregistered_is_not_reported() {
    let plugin = py(r#"
class Tidy:
    def __init__(self, ucs):
        self.ucs = ucs
        ucs.addCallback(events.EVENT_AGENT_STATUS, self.on_status)
        ucs.api.addMiddleware('agents.list', self.middleware)
        ucs.shared.addChangeHook('tidy', self.hook)

    def on_status(self, agent, args):
        pass

    def middleware(self, handler, *args):
        return handler(*args)

    def hook(self, identificator, old, new):
        return new

    def stop(self):
        self.ucs.removeCallback(events.EVENT_AGENT_STATUS, self.on_status)
        self.ucs.api.removeMiddleware('agents.list', self.middleware)
        self.ucs.shared.removeChangeHook('tidy')

UCS_PLUGIN = 'Tidy'
"#);
    let server = TestServer::start(&[("p7_tidy.py", &plugin)]);
    server.unload("p7_tidy").unwrap();
    assert!(
        log_records_of("p7_tidy", &["removed it"]).is_empty(),
        "{:#?}",
        log_records_of("p7_tidy", &["removed it"])
    );
}

#[test]
fn d1_names_that_are_not_identifiers_are_refused_and_py_suffix_is_accepted() {
    let plugin = py(r#"
class D1Plugin:
    def __init__(self, ucs):
        record(ucs, 'd1_loads', 1)

UCS_PLUGIN = 'D1Plugin'
"#);
    let server = TestServer::start(&[("d1_suffix.py", &plugin)]);
    for bad in [
        "../d1_suffix",
        "a/b",
        "..",
        "d1-suffix",
        "/etc/passwd",
        "",
        "d1.suffix",
    ] {
        for result in [server.load(bad), server.unload(bad)] {
            assert!(
                matches!(result, Err(ApiError::InvalidInput(ref fields)) if fields.contains_key("plugin_name")),
                "{bad:?}: {result:?}"
            );
        }
    }
    let info = server.load("d1_suffix.py").unwrap();
    assert_eq!(field(&info, "name"), &Value::from("d1_suffix"));
    assert_eq!(server.shared("d1_loads"), json("[1, 1]"));
    let info = server.unload("d1_suffix.py").unwrap();
    assert_eq!(field(&info, "state"), &Value::from("stopped"));
}

#[test]
fn d1_plugin_files_that_would_shadow_a_module_end_failed() {
    let plugin = py(r#"
class Shadow:
    def __init__(self, ucs):
        put(ucs, 'shadow_constructed', True)

UCS_PLUGIN = 'Shadow'
"#);
    let server = TestServer::start(&[("constants.py", &plugin), ("json.py", &plugin)]);
    for name in ["constants", "json"] {
        let info = server.plugin(name).unwrap();
        assert_eq!(info.state, PluginState::Failed, "{name}");
        assert!(info.error.contains("shadow"), "{name}: {}", info.error);
        let result = server.load(name);
        assert!(
            matches!(&result, Err(ApiError::Processing(message)) if message.contains("shadow")),
            "{name}: {result:?}"
        );
    }
    assert_eq!(server.shared("shadow_constructed"), Value::empty_map());
    // The real modules are untouched.
    let user_module = py(r#"
import json as real_json

class UsesJson:
    def __init__(self, ucs):
        put(ucs, 'd1_json', [constants.AGENT_AUX, real_json.dumps([1])])

UCS_PLUGIN = 'UsesJson'
"#);
    server.write_plugin("d1_uses_json.py", &user_module);
    server.load("d1_uses_json").unwrap();
    assert_eq!(server.shared("d1_json"), json(r#"[2, "[1]"]"#));
}

#[test]
fn d1_loading_a_file_without_ucs_plugin_and_unloading_a_plugin_not_loaded_are_processing_errors() {
    let server = TestServer::start(&[("d1_no_plugin.py", "X = 1\n")]);
    let result = server.load("d1_no_plugin");
    assert!(
        matches!(&result, Err(ApiError::Processing(message)) if message.contains("UCS_PLUGIN")),
        "{result:?}"
    );
    let result = server.unload("d1_no_plugin");
    assert!(matches!(result, Err(ApiError::Processing(_))), "{result:?}");
    let result = server.load("d1_no_such_file");
    assert!(matches!(result, Err(ApiError::NotFound(_))), "{result:?}");
    let result = server.unload("d1_no_such_file");
    assert!(matches!(result, Err(ApiError::Processing(_))), "{result:?}");
}

#[test]
fn d1_helper_module_in_the_plugins_dir_imports() {
    // Sorted after the plugin, so it is imported by the plugin, not by the scan.
    let helper = "def greeting():\n    return 'hello from the helper'\n";
    let plugin = py(r#"
import d1_zz_helper

class UsesHelper:
    def __init__(self, ucs):
        put(ucs, 'd1_helper', d1_zz_helper.greeting())

UCS_PLUGIN = 'UsesHelper'
"#);
    let server = TestServer::start(&[("d1_uses_helper.py", &plugin), ("d1_zz_helper.py", helper)]);
    let info = server.plugin("d1_uses_helper").unwrap();
    assert_eq!(info.state, PluginState::Running, "{}", info.error);
    assert_eq!(
        server.shared("d1_helper"),
        Value::from("hello from the helper")
    );
}

/// A plugin that registers one of everything in its constructor or `start`
/// and then raises there.
fn failing_after_registering(class: &str, fail_in_start: bool) -> String {
    let (init_raise, start_raise) = if fail_in_start {
        ("", "        raise RuntimeError('l1 boom in start')\n")
    } else {
        ("        raise RuntimeError('l1 boom in constructor')\n", "")
    };
    py(&format!(
        r#"
class {class}:
    def __init__(self, ucs):
        self.ucs = ucs
        ucs.addCallback(events.EVENT_AGENT_STATUS, self.on_status)
        ucs.agents.addChangeStatusHook(self.status_hook)
        ucs.shared.addChangeHook('l1_data', self.shared_hook)
        ucs.api.addMiddleware('shared.get', self.middleware)
{init_raise}
    def start(self):
        pass
{start_raise}
    def on_status(self, agent, args):
        put(self.ucs, 'l1_callback_ran', True)

    def status_hook(self, agent, status, reason):
        return status, 'hooked by {class}'

    def shared_hook(self, identificator, old_data, new_data):
        return 'hooked by {class}'

    def middleware(self, handler, caller, identificator):
        return 'wrapped by {class}'

UCS_PLUGIN = '{class}'
"#
    ))
}

/// A plugin that loads fine, to show the others go on.
fn healthy_plugin() -> String {
    py(r#"
class Healthy:
    def __init__(self, ucs):
        self.ucs = ucs
        ucs.addCallback(events.EVENT_SHARED_DATA, self.on_shared)

    def on_shared(self, identificator, data):
        if identificator == 'l1_ping':
            put(self.ucs, 'l1_pong', data)

UCS_PLUGIN = 'Healthy'
"#)
}

/// The server serves, the healthy plugin runs, nothing the failed plugins
/// registered is left.
fn assert_server_goes_on(server: &TestServer, healthy: &str, round: u32) {
    assert_eq!(server.state_of(healthy), PluginState::Running);
    server
        .call("shared.set", vec![Value::from("l1_ping"), Value::Int(7)])
        .expect("the server keeps serving");
    assert_eq!(server.shared("l1_pong"), Value::Int(7));
    let agent = server.add_agent(&format!("{healthy}_agent{round}"));
    let after = server
        .set_status(agent, 2, "Lunch")
        .expect("the server keeps serving");
    assert_eq!(
        field(&after, "reason"),
        &Value::from("Lunch"),
        "no status hook left"
    );
    assert_eq!(
        server.shared("l1_callback_ran"),
        Value::empty_map(),
        "no callback left"
    );
    let stored = server
        .call("shared.set", vec![Value::from("l1_data"), Value::Int(1)])
        .expect("the server keeps serving");
    assert_eq!(stored, Value::Int(1), "no shared hook left");
    let got = server
        .call("shared.get", vec![Value::from("l1_data")])
        .expect("the server keeps serving");
    assert_eq!(got, Value::Int(1), "no middleware left");
}

#[test]
fn l1_constructor_that_raises_ends_failed_with_traceback_and_others_go_on() {
    let server = TestServer::start(&[
        (
            "l1_ctor_fails.py",
            &failing_after_registering("CtorFails", false),
        ),
        ("l1_ctor_healthy.py", &healthy_plugin()),
    ]);
    let info = server.plugin("l1_ctor_fails").unwrap();
    assert_eq!(info.state, PluginState::Failed);
    assert_eq!(info.class_name, "CtorFails");
    assert!(info.error.contains("Traceback"), "{}", info.error);
    assert!(
        info.error.contains("RuntimeError: l1 boom in constructor"),
        "{}",
        info.error
    );
    // plugins.list over the API shows the same.
    let listed = server.call("plugins.list", vec![]).unwrap();
    let Value::List(items) = listed else {
        panic!("{listed:?}")
    };
    let entry = items
        .iter()
        .find(|item| field(item, "name") == &Value::from("l1_ctor_fails"))
        .unwrap();
    assert_eq!(field(entry, "state"), &Value::from("failed"));
    assert!(
        field(entry, "error")
            .as_str()
            .unwrap()
            .contains("l1 boom in constructor")
    );
    assert_server_goes_on(&server, "l1_ctor_healthy", 1);
    // A load over the API reports the failure too.
    let result = server.load("l1_ctor_fails");
    assert!(
        matches!(&result, Err(ApiError::Processing(message)) if message.contains("l1 boom in constructor")),
        "{result:?}"
    );
    assert_server_goes_on(&server, "l1_ctor_healthy", 2);
}

#[test]
fn l1_start_that_raises_ends_failed_with_traceback_and_its_registrations_removed() {
    let server = TestServer::start(&[
        (
            "l1_start_fails.py",
            &failing_after_registering("StartFails", true),
        ),
        ("l1_start_healthy.py", &healthy_plugin()),
    ]);
    let info = server.plugin("l1_start_fails").unwrap();
    assert_eq!(info.state, PluginState::Failed);
    assert!(info.error.contains("Traceback"), "{}", info.error);
    assert!(info.error.contains("in start"), "{}", info.error);
    assert_server_goes_on(&server, "l1_start_healthy", 1);
    // The status hook slot is free again: another plugin can take it.
    server.write_plugin(
        "l1_start_next.py",
        &py(r#"
class Next:
    def __init__(self, ucs):
        ucs.agents.addChangeStatusHook(lambda agent, status, reason: (status, reason))

UCS_PLUGIN = 'Next'
"#),
    );
    server.load("l1_start_next").unwrap();
}

#[test]
fn l1_import_errors_end_failed_with_the_reason_and_others_go_on() {
    let syntax =
        "UCS_PLUGIN = 'Broken'\nclass Broken:\n    def __init__(self, ucs)\n        pass\n";
    let import_raises = "raise ImportError('l1 missing dependency')\n";
    let not_str = "UCS_PLUGIN = 42\n";
    let missing_class = "UCS_PLUGIN = 'NoSuchClass'\n";
    let not_a_class = "def function(ucs):\n    pass\nUCS_PLUGIN = 'function'\n";
    let server = TestServer::start(&[
        ("l1_imp_a_syntax.py", syntax),
        ("l1_imp_b_raises.py", import_raises),
        ("l1_imp_c_not_str.py", not_str),
        ("l1_imp_d_missing.py", missing_class),
        ("l1_imp_e_function.py", not_a_class),
        ("l1_imp_healthy.py", &healthy_plugin()),
    ]);
    for (name, expected) in [
        ("l1_imp_a_syntax", "SyntaxError"),
        ("l1_imp_b_raises", "ImportError: l1 missing dependency"),
        ("l1_imp_c_not_str", "UCS_PLUGIN must be a str"),
        ("l1_imp_d_missing", "NoSuchClass"),
        ("l1_imp_e_function", "not a class"),
    ] {
        let info = server
            .plugin(name)
            .unwrap_or_else(|| panic!("{name} is not listed"));
        assert_eq!(info.state, PluginState::Failed, "{name}");
        assert!(info.error.contains(expected), "{name}: {}", info.error);
        assert!(
            !log_records_of(name, &["failed to load", expected]).is_empty(),
            "{name}: the failure is logged"
        );
    }
    assert!(
        server
            .plugin("l1_imp_b_raises")
            .unwrap()
            .error
            .contains("Traceback")
    );
    assert_server_goes_on(&server, "l1_imp_healthy", 1);
    // Fixing the file and loading it again works.
    server.write_plugin("l1_imp_a_syntax.py", &healthy_plugin());
    let info = server.load("l1_imp_a_syntax").unwrap();
    assert_eq!(field(&info, "state"), &Value::from("running"));
    assert_eq!(field(&info, "error"), &Value::from(""));
}

#[test]
fn l2_stop_that_raises_is_logged_and_the_plugin_is_still_unloaded() {
    let plugin = py(r#"
class StopRaises:
    def __init__(self, ucs):
        self.ucs = ucs
        ucs.api.addMiddleware('shared.get', self.middleware)

    def middleware(self, handler, caller, identificator):
        return 'wrapped'

    def stop(self):
        self.ucs.api.removeMiddleware('shared.get', self.middleware)
        raise ValueError('l2 stop boom')

UCS_PLUGIN = 'StopRaises'
"#);
    let server = TestServer::start(&[("l2_stop_raises.py", &plugin)]);
    let info = server.unload("l2_stop_raises").unwrap();
    assert_eq!(field(&info, "state"), &Value::from("stopped"));
    let error = field(&info, "error").as_str().unwrap();
    assert!(error.contains("ValueError: l2 stop boom"), "{error}");
    assert!(error.contains("Traceback"), "{error}");
    assert!(
        !log_records_of(
            "l2_stop_raises",
            &["stop() raised", "Traceback", "l2 stop boom"]
        )
        .is_empty()
    );
    let got = server.call("shared.get", vec![Value::from("x")]).unwrap();
    assert_eq!(got, Value::empty_map());
    // Unloaded: unloading again is an error; loading again works.
    assert!(matches!(
        server.unload("l2_stop_raises"),
        Err(ApiError::Processing(_))
    ));
    server.load("l2_stop_raises").unwrap();
    assert_eq!(server.state_of("l2_stop_raises"), PluginState::Running);
}

#[test]
fn l3_thread_plugin_that_never_ends_is_reported_stuck_and_unload_returns_in_bounded_time() {
    let plugin = py(r#"
class NeverEnds(threading.Thread):
    def __init__(self, ucs):
        super().__init__(daemon=True)
        self.ucs = ucs

    def run(self):
        put(self.ucs, 'l3_running', True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self):
        pass  # ignores the request

UCS_PLUGIN = 'NeverEnds'
"#);
    let server = TestServer::start_with(&[("l3_never_ends.py", &plugin)], |config| {
        config.stop_timeout = Duration::from_millis(300);
        config.thread_join_timeout = Duration::from_millis(300);
    });
    assert!(wait_for(Duration::from_secs(5), || server
        .shared("l3_running")
        == Value::Bool(true)));
    let started = Instant::now();
    let info = server.unload("l3_never_ends").unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "unload took {took:?}");
    assert!(
        took >= Duration::from_millis(250),
        "the thread was joined: {took:?}"
    );
    assert_eq!(field(&info, "state"), &Value::from("stopped"));
    let error = field(&info, "error").as_str().unwrap();
    assert!(error.contains("stuck"), "{error}");
    assert!(!log_records_of("l3_never_ends", &["WARN", "stuck"]).is_empty());
}

/// Also issue 15 item 16: it is given up after the stop timeout its
/// message names, not after the stop and join timeouts added (the join
/// timeout is for a Thread plugin whose `stop()` returned).
#[test]
fn l3_stop_that_never_returns_is_bounded_too() {
    let plugin = py(r#"
class StopHangs:
    def __init__(self, ucs):
        self.ucs = ucs

    def stop(self):
        time.sleep(20)

UCS_PLUGIN = 'StopHangs'
"#);
    let server = TestServer::start_with(&[("l3_stop_hangs.py", &plugin)], |config| {
        config.stop_timeout = Duration::from_millis(300);
        config.thread_join_timeout = Duration::from_secs(4);
    });
    let started = Instant::now();
    let info = server.unload("l3_stop_hangs").unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "unload took {took:?}, though the message says 300ms"
    );
    assert_eq!(field(&info, "state"), &Value::from("stopped"));
    let error = field(&info, "error").as_str().unwrap();
    assert!(error.contains("did not return within 300ms"), "{error}");
    // The server goes on, and the plugin can be loaded again.
    server.load("l3_stop_hangs").unwrap();
    assert_eq!(server.state_of("l3_stop_hangs"), PluginState::Running);
    // Leave it with a stop that returns, so the harness' shutdown is quick.
    server.write_plugin(
        "l3_stop_hangs.py",
        &py("class Quick:\n    def __init__(self, ucs):\n        pass\nUCS_PLUGIN = 'Quick'\n"),
    );
}

#[test]
fn l3_shutdown_with_a_stuck_plugin_returns_within_the_shutdown_deadline() {
    let stuck = py(r#"
class StuckAtShutdown(threading.Thread):
    def __init__(self, ucs):
        super().__init__(daemon=True)

    def run(self):
        time.sleep(20)

    def stop(self):
        time.sleep(20)

UCS_PLUGIN = 'StuckAtShutdown'
"#);
    let deadline = Duration::from_millis(600);
    let server = TestServer::start_with(&[("l3_shutdown_stuck.py", &stuck)], |config| {
        // Each timeout alone is longer than the overall deadline.
        config.stop_timeout = Duration::from_secs(2);
        config.thread_join_timeout = Duration::from_secs(2);
        config.shutdown_deadline = deadline;
    });
    let started = Instant::now();
    server.host.shutdown();
    let took = started.elapsed();
    assert!(
        took < deadline + Duration::from_millis(300),
        "shutdown took {took:?} with a deadline of {deadline:?}"
    );
    assert_eq!(server.state_of("l3_shutdown_stuck"), PluginState::Stopped);
}

#[test]
fn l3_shutdown_stops_plugins_in_reverse_load_order() {
    let plugin = py(r#"
class Ordered:
    def __init__(self, ucs):
        self.ucs = ucs

    def stop(self):
        record(self.ucs, 'l3_stop_order', __name__)

UCS_PLUGIN = 'Ordered'
"#);
    let server = TestServer::start(&[
        ("l3_order_a.py", &plugin),
        ("l3_order_b.py", &plugin),
        ("l3_order_c.py", &plugin),
    ]);
    // Reloading a makes it the last loaded.
    server.load("l3_order_a").unwrap();
    server.host.shutdown();
    assert_eq!(
        server.shared("l3_stop_order"),
        json(r#"["l3_order_a", "l3_order_a", "l3_order_c", "l3_order_b"]"#),
        "the reload stopped a first; shutdown stops a (loaded last), c, b"
    );
}

/// D1 allows any Python identifier, not only ASCII ones (issue 15 item 16):
/// `příklad.py` loads at start, and `plugins.load('příklad')` reloads it.
#[test]
fn d1_a_unicode_identifier_names_a_plugin() {
    let plugin = py(r#"
class Priklad:
    def __init__(self, ucs):
        record(ucs, 'd1_unicode_loads', __name__)

UCS_PLUGIN = 'Priklad'
"#);
    let server = TestServer::start(&[("příklad.py", &plugin)]);
    assert_eq!(
        server.plugin("příklad").map(|info| info.state),
        Some(PluginState::Running)
    );
    let info = server.load("příklad").unwrap();
    assert_eq!(field(&info, "name"), &Value::from("příklad"));
    assert_eq!(
        server.shared("d1_unicode_loads"),
        json(r#"["příklad", "příklad"]"#)
    );
}

/// P2 (the file runs as Python would import it): a Latin-1 file with a
/// PEP 263 coding line loads, its text decoded as Latin-1; a file that is
/// not UTF-8 and says nothing fails with Python's own SyntaxError, logged;
/// a file whose name is not UTF-8 is skipped with a warning, not in silence
/// (issue 15 item 16).
#[test]
fn p2_a_plugin_file_is_decoded_as_python_decodes_it() {
    let latin1_body = py(r#"
class Latin:
    def __init__(self, ucs):
        put(ucs, 'p2_latin1', 'café')

UCS_PLUGIN = 'Latin'
"#);
    let latin1: Vec<u8> = format!("# -*- coding: latin-1 -*-\n{latin1_body}")
        .chars()
        .map(|c| u8::try_from(u32::from(c)).expect("Latin-1 text"))
        .collect();
    let undeclared: Vec<u8> = latin1_body
        .replace("Latin", "Undeclared")
        .replace("p2_latin1", "p2_undeclared")
        .chars()
        .map(|c| u8::try_from(u32::from(c)).expect("Latin-1 text"))
        .collect();
    let server = TestServer::start_with(&[], |config| {
        let dir = &config.plugins_dir;
        std::fs::write(dir.join("p2_latin1.py"), &latin1).unwrap();
        std::fs::write(dir.join("p2_undeclared.py"), &undeclared).unwrap();
        let name = std::ffi::OsStr::from_bytes(b"p2_caf\xe9.py");
        std::fs::write(dir.join(name), "X = 1\n").unwrap();
    });
    assert_eq!(server.shared("p2_latin1"), Value::from("café"));
    assert_eq!(
        server.plugin("p2_latin1").map(|info| info.state),
        Some(PluginState::Running)
    );

    let undeclared = server.plugin("p2_undeclared").expect("listed");
    assert_eq!(undeclared.state, PluginState::Failed, "{undeclared:?}");
    assert!(
        undeclared.error.contains("SyntaxError") && undeclared.error.contains("utf-8"),
        "{}",
        undeclared.error
    );
    assert_eq!(server.shared("p2_undeclared"), Value::empty_map());

    // Loading by hand reads the bytes the same way.
    server.load("p2_latin1").unwrap();
    assert_eq!(server.shared("p2_latin1"), Value::from("café"));

    let skipped = log_lines_with("p2_caf\u{fffd}.py");
    assert!(
        skipped
            .iter()
            .any(|line| line.contains("WARN") && line.contains("must be a Python identifier")),
        "{skipped:#?}"
    );
}

/// Issue 16 item 4: a plugin reads its settings as `ucs.config`, a
/// read-only mapping all the way down, in both modes; a reload reads them
/// again, and settings that cannot be read fail the load with the reason
/// while the running version stays.
#[test]
fn config_reaches_the_plugin_read_only_and_a_reload_reads_it_again() {
    let plugin = py(r#"
class Configured:
    def __init__(self, ucs):
        config = ucs.config
        report = {'url': config['url'], 'queues': list(config['queues']),
                  'per_minute': config['limits']['per_minute'],
                  'missing': config.get('missing', 'default'), 'keys': sorted(config)}
        for name, change in (('top', lambda: config.__setitem__('url', 'x')),
                             ('nested', lambda: config['limits'].__setitem__('per_minute', 1)),
                             ('list', lambda: config['queues'].append('x'))):
            try:
                change()
                report[name] = 'changed'
            except (TypeError, AttributeError):
                report[name] = 'refused'
        put(ucs, 'config_report', report)

UCS_PLUGIN = 'Configured'
"#);
    let settings = Arc::new(Mutex::new(Ok(json(
        r#"{"url": "https://crm.example", "queues": ["sales"], "limits": {"per_minute": 60}}"#,
    ))));
    let source = Arc::clone(&settings);
    let server = TestServer::start_with(&[("configured.py", &plugin)], move |config| {
        config.plugin_config = ucs_loader::PluginConfigSource::new(move |name| {
            assert_eq!(name, "configured");
            source.lock().unwrap().clone()
        });
    });
    assert_eq!(
        server.shared("config_report"),
        json(
            r#"{"url": "https://crm.example", "queues": ["sales"], "per_minute": 60,
                "missing": "default", "keys": ["limits", "queues", "url"],
                "top": "refused", "nested": "refused", "list": "refused"}"#
        )
    );

    *settings.lock().unwrap() = Ok(json(
        r#"{"url": "https://other.example", "queues": [], "limits": {"per_minute": 5}}"#,
    ));
    server.load("configured").unwrap();
    let report = server.shared("config_report");
    assert_eq!(field(&report, "url"), &Value::from("https://other.example"));
    assert_eq!(field(&report, "per_minute"), &Value::Int(5));

    *settings.lock().unwrap() = Err("the token is not set".to_owned());
    let refused = server.load("configured").unwrap_err();
    assert!(
        matches!(&refused, ApiError::Processing(message) if message.contains("its settings cannot be read: the token is not set")),
        "{refused:?}"
    );
    // The version that ran before is running again (a failed reload).
    assert_eq!(
        server.plugin("configured").map(|info| info.state),
        Some(PluginState::Running)
    );
}
