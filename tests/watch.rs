//! `ucs serve --watch` (issue 9): a saved plugin file is reloaded, a new
//! one is loaded and a deleted one unloaded, each observed through gRPC.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use serde_json::{Value as Json, json};
use ucs_grpc::pb;

/// How long a change may take to show: the debounce (300 ms) plus a reload
/// on a loaded 2-core machine.
const RELOAD_WAIT: Duration = Duration::from_secs(30);

/// A plugin whose middleware makes `shared.get` answer `{"version": N}`.
fn versioned(version: u32) -> String {
    format!(
        "UCS_PLUGIN = 'Versioned'\n\
         class Versioned:\n\
         \x20   def __init__(self, ucs):\n\
         \x20       self.ucs = ucs\n\
         \x20       ucs.api.addMiddleware('shared.get', self.answer)\n\
         \x20   def answer(self, handler, *args):\n\
         \x20       return {{'version': {version}}}\n\
         \x20   def stop(self):\n\
         \x20       self.ucs.api.removeMiddleware('shared.get', self.answer)\n"
    )
}

/// Polls `shared.get` until it answers `expected`; panics with the log if
/// it does not within [`RELOAD_WAIT`].
async fn wait_for_shared_get(server: &Server, sid: &str, expected: &Json) {
    let deadline = Instant::now() + RELOAD_WAIT;
    loop {
        let answer = server.call(sid, "shared.get", "[\"x\"]").await;
        if answer.as_ref().ok() == Some(expected) {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "shared.get answered {answer:?}, not {expected} within {RELOAD_WAIT:?}; log:\n{}",
                server.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `plugins.list` until `name` is RUNNING.
async fn wait_until_running(server: &Server, sid: &str, name: &str) {
    let deadline = Instant::now() + RELOAD_WAIT;
    loop {
        let plugins = server
            .plugins()
            .list(pb::ListPluginsRequest {
                sid: sid.to_owned(),
            })
            .await
            .expect("plugins.list")
            .into_inner()
            .plugins;
        if plugins
            .iter()
            .any(|info| info.name == name && info.state() == pb::PluginState::Running)
        {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "{name} not RUNNING within {RELOAD_WAIT:?}: {plugins:?}; log:\n{}",
                server.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn saved_new_and_deleted_files_take_effect() {
    let server = Server::builder()
        .arg("--watch")
        .plugin("versioned.py", &versioned(1))
        .start()
        .await;
    let sid = server.admin_sid().await;
    wait_for_shared_get(&server, &sid, &json!({"version": 1})).await;

    // A save: the plugin is reloaded and the new version answers.
    server.write_plugin("versioned.py", &versioned(2));
    wait_for_shared_get(&server, &sid, &json!({"version": 2})).await;
    assert!(
        server
            .log()
            .contains("watch: file changed; reloaded: RUNNING (class Versioned)"),
        "{}",
        server.log()
    );

    // Editor droppings are ignored; a new plugin file is loaded.
    server.write_plugin(".versioned.py.swp", "not python");
    server.write_plugin("versioned.py~", "not python");
    server.write_plugin(
        "newcomer.py",
        "UCS_PLUGIN = 'Newcomer'\nclass Newcomer:\n    def __init__(self, ucs):\n        pass\n",
    );
    wait_until_running(&server, &sid, "newcomer").await;

    // A deleted file unloads its plugin: the built-in shared.get is back.
    std::fs::remove_file(server.plugins_dir().join("versioned.py")).expect("remove");
    wait_for_shared_get(&server, &sid, &json!({})).await;
    let log = server.log();
    assert!(
        log.contains("watch: file removed; plugin unloaded"),
        "{log}"
    );
    assert!(!log.contains("swp"), "editor files must be ignored: {log}");
}
