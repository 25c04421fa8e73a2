//! `ucs serve --watch` (issue 9): a saved plugin file is reloaded, a new
//! one is loaded and a deleted one unloaded, each observed through gRPC;
//! and (issue 16 item 1) only a change of content reloads, once.

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

/// How many times a reload of `plugin` was tried, by the audit trail (P6):
/// one that failed and kept the running version counts too.
async fn reloads(server: &Server, sid: &str, plugin: &str) -> usize {
    let trail = server
        .call(sid, "audit.list", "")
        .await
        .expect("audit.list");
    trail
        .as_array()
        .expect("a list of records")
        .iter()
        .filter(|record| record["kind"] == "audit.plugin_reload" && record["plugin"] == plugin)
        .count()
}

/// How many reloads the watcher started (successful or not), by its log.
fn watch_reloads(server: &Server) -> usize {
    server.log().matches("watch: file changed;").count()
}

/// Waits until the log has `count` lines saying the watcher saw a write
/// that left the content as it was: proof that it handled the write.
async fn wait_for_unchanged_writes(server: &Server, count: usize) {
    let deadline = Instant::now() + RELOAD_WAIT;
    while server
        .log()
        .matches("content unchanged; not reloaded")
        .count()
        < count
    {
        if Instant::now() >= deadline {
            panic!(
                "the watcher did not see {count} unchanged writes within {RELOAD_WAIT:?}; log:\n{}",
                server.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Issue 16 item 1: reading a file, touching it and saving it unchanged
/// reload nothing; one save that changes it reloads once, and the server's
/// own read of the file during that reload does not start another, nor
/// does a traceback printed from the file by a reload that fails.
#[tokio::test]
async fn one_save_reloads_once_and_reads_touches_and_equal_saves_never() {
    let server = Server::builder()
        .arg("--watch")
        // The watcher's "content unchanged" lines are at debug level.
        .env("RUST_LOG", "info,ucs::watch=debug")
        .plugin("versioned.py", &versioned(1))
        .start()
        .await;
    let sid = server.admin_sid().await;
    let file = server.plugins_dir().join("versioned.py");
    wait_for_shared_get(&server, &sid, &json!({"version": 1})).await;

    // What `cat` does: open, read, close.
    let read = std::fs::read_to_string(&file).expect("read the plugin");
    assert_eq!(read, versioned(1));
    // What `touch` does: open for writing, close, set the times.
    std::fs::File::options()
        .write(true)
        .open(&file)
        .and_then(|opened| opened.set_modified(std::time::SystemTime::now()))
        .expect("touch the plugin");
    wait_for_unchanged_writes(&server, 1).await;
    // A save that leaves the content as it was.
    server.write_plugin("versioned.py", &versioned(1));
    wait_for_unchanged_writes(&server, 2).await;
    assert_eq!(reloads(&server, &sid, "versioned").await, 0);
    assert_eq!(watch_reloads(&server), 0, "{}", server.log());

    // One save that changes the content: exactly one reload.
    server.write_plugin("versioned.py", &versioned(2));
    wait_for_shared_get(&server, &sid, &json!({"version": 2})).await;
    assert_eq!(reloads(&server, &sid, "versioned").await, 1);

    // A version that fails prints a traceback, read from the file; that is
    // one failed reload, not the start of a loop.
    server.write_plugin(
        "versioned.py",
        "UCS_PLUGIN = 'Versioned'\n\
         class Versioned:\n\
         \x20   def __init__(self, ucs):\n\
         \x20       raise RuntimeError('broken on purpose')\n",
    );
    let deadline = Instant::now() + RELOAD_WAIT;
    while !server.log().contains("reload failed") {
        assert!(
            Instant::now() < deadline,
            "no failed reload; log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        server.log().contains("broken on purpose"),
        "{}",
        server.log()
    );

    // And then nothing more, for several debounce periods and reloads' worth.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(watch_reloads(&server), 2, "{}", server.log());
    assert_eq!(reloads(&server, &sid, "versioned").await, 2);
    // The version that came up is still the one answering.
    wait_for_shared_get(&server, &sid, &json!({"version": 2})).await;
}
