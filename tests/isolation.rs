//! Process isolation against the real binary (issue 18, SPEC I1-I3): a
//! plugin whose shared-data hook segfaults or hangs in `--isolation process`
//! never stops the server. A probe calls `agents.list` throughout; every
//! probe must answer. The plugin is FAILED with the cause, restarted, and
//! the restarts stop at the restart intensity.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use ucs_grpc::pb;

/// A plugin whose shared-data hook on `crash` kills its own process with
/// SIGSEGV (`ctypes.string_at(0)`), and whose hook on `hang` never returns.
const CRASHER: &str = r#"
import ctypes, time

class Crasher:
    def __init__(self, ucs):
        ucs.shared.addChangeHook("crash", self.crash)
        ucs.shared.addChangeHook("hang", self.hang)

    def crash(self, identificator, old, new):
        ctypes.string_at(0)

    def hang(self, identificator, old, new):
        time.sleep(3600)

UCS_PLUGIN = "Crasher"
"#;

/// A demo server running [`CRASHER`] in a plugin host.
async fn crasher_server() -> Server {
    Server::builder()
        .demo()
        .arg("--isolation=process")
        .plugin("crasher.py", CRASHER)
        .start()
        .await
}

async fn crasher(server: &Server) -> pb::PluginInfo {
    let sid = server.admin_sid().await;
    server
        .plugins()
        .list(pb::ListPluginsRequest { sid })
        .await
        .expect("plugins.list")
        .into_inner()
        .plugins
        .into_iter()
        .find(|info| info.name == "crasher")
        .expect("crasher listed")
}

/// Waits until the crasher is running in a host other than `old_pid`.
async fn wait_restarted(server: &Server, old_pid: u32) -> pb::PluginInfo {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let info = crasher(server).await;
        if info.state() == pb::PluginState::Running && info.host_pid != old_pid {
            return info;
        }
        assert!(Instant::now() < deadline, "not restarted: {info:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sets `identificator` (which runs the crasher's hook) while probing
/// `agents.list` every 20 ms, asserting that every probe answers; returns
/// the set's outcome.
async fn set_while_probing(server: &Server, identificator: &str) -> Result<(), tonic::Status> {
    let sid = server.admin_sid().await;
    let args = format!(r#"["{identificator}", {{"x": 1}}]"#);
    let set = server.call(&sid, "shared.set", &args);
    tokio::pin!(set);
    let mut probes = 0;
    let outcome = loop {
        tokio::select! {
            outcome = &mut set => break outcome,
            () = tokio::time::sleep(Duration::from_millis(20)) => {
                server.call(&sid, "agents.list", "").await.expect("probe answered");
                probes += 1;
            }
        }
    };
    assert!(probes > 0 || outcome.is_ok(), "no probe ran");
    outcome.map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i2_a_segfaulting_hook_fails_its_plugin_not_the_server_and_restarts_stop_at_the_limit() {
    let server = crasher_server().await;
    let first = crasher(&server).await;
    assert_eq!(first.state(), pb::PluginState::Running, "{first:?}");
    assert_eq!(first.isolation(), pb::Isolation::Process);
    assert_ne!(first.host_pid, 0);

    // S4: the hook's host died, so the requested data is stored.
    set_while_probing(&server, "crash")
        .await
        .expect("S4: stored anyway");
    let sid = server.admin_sid().await;
    let stored = server
        .call(&sid, "shared.get", r#"["crash"]"#)
        .await
        .unwrap();
    assert_eq!(stored, serde_json::json!({"x": 1}));

    // I2: restarted with the cause recorded, and counted.
    let second = wait_restarted(&server, first.host_pid).await;
    assert_eq!(second.restarts, 1, "{second:?}");
    assert!(
        server
            .log()
            .contains("plugin host exited: signal 11 (SIGSEGV)"),
        "{}",
        server.log()
    );

    // Crash it until the restart intensity (5 in 60 s) is used up: then it
    // stays FAILED until loaded by hand, and no further host starts.
    let mut pid = second.host_pid;
    for _ in 0..5 {
        set_while_probing(&server, "crash").await.expect("stored");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let info = crasher(&server).await;
            if info.host_pid != pid && info.host_pid != 0 || info.error.contains("left FAILED") {
                pid = info.host_pid;
                break;
            }
            assert!(Instant::now() < deadline, "stuck: {info:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let given_up = crasher(&server).await;
    assert_eq!(given_up.state(), pb::PluginState::Failed, "{given_up:?}");
    assert!(
        given_up.error.contains("left FAILED until loaded by hand"),
        "{given_up:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let still = crasher(&server).await;
    assert_eq!(
        still.state(),
        pb::PluginState::Failed,
        "restarted after giving up"
    );
    assert_eq!(still.host_pid, 0);

    // The server serves on; loading by hand starts afresh.
    server.call(&sid, "agents.list", "").await.expect("serving");
    let info = server
        .plugins()
        .load(pb::PluginRequest {
            sid: sid.clone(),
            name: "crasher".into(),
        })
        .await
        .expect("load by hand")
        .into_inner();
    assert_eq!(info.state(), pb::PluginState::Running);
    assert_eq!(info.restarts, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i3_a_hook_sleeping_forever_is_killed_at_its_deadline_and_the_call_goes_on() {
    let server = crasher_server().await;
    let first = crasher(&server).await;
    let started = Instant::now();
    set_while_probing(&server, "hang")
        .await
        .expect("S4: stored after the deadline");
    let took = started.elapsed();
    // The default deadline is 5 s; the call must not wait for the sleep.
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert!(
        took >= Duration::from_secs(4),
        "answered before the deadline: {took:?}"
    );
    assert!(
        server.log().contains("did not return within its deadline"),
        "{}",
        server.log()
    );
    let second = wait_restarted(&server, first.host_pid).await;
    assert_eq!(second.restarts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i2_a_host_killed_from_outside_is_restarted_and_serves_its_hook_again() {
    let server = crasher_server().await;
    let first = crasher(&server).await;
    let pid = i32::try_from(first.host_pid).expect("pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the host");
    let second = wait_restarted(&server, first.host_pid).await;
    assert_eq!(second.restarts, 1, "{second:?}");
    assert!(
        server
            .log()
            .contains("plugin host exited: signal 9 (SIGKILL)"),
        "{}",
        server.log()
    );
    // The restarted host serves the hook again: a crash is handled anew.
    set_while_probing(&server, "crash")
        .await
        .expect("S4: stored");
    wait_restarted(&server, second.host_pid).await;
}
