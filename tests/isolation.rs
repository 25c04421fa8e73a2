//! Process isolation against the real binary (issue 18 item 5, SPEC I1-I3,
//! H6, S4, D5): every way a plugin host can die (segfault in a hook, a
//! callback, a middleware or a plugin thread, `os._exit`, `os.abort`, a
//! busy or sleeping hook or middleware past its deadline, a kill from
//! outside) never stops the server. A probe calls `agents.list` throughout;
//! every probe must answer. The call is answered as the SPEC says for an
//! unexpected exception, the plugin is FAILED with the cause, restarted,
//! and the restarts stop at the restart intensity.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use ucs_grpc::pb;

/// A plugin that dies in every way a plugin host can die, each on its own
/// trigger: a shared-data hook per identificator (`crash`: SIGSEGV through
/// `ctypes.string_at(0)`, `hang`: sleeps forever, `spin`: busy loop, `exit`:
/// `os._exit(3)`, `abort`: `os.abort()`, `bomb`: one 16 GiB bytearray,
/// `grow`: a list growing by 1 MiB at a time, `huge`: answers a 200 MiB
/// string, `thread`: starts a plugin thread
/// that segfaults after the hook returned), the status hook by reason
/// (`segv`, `spin`), the status event callback on reason `cb-segv`, and a
/// middleware on `shared.get` by identificator (`mw-segv`, `mw-spin`,
/// `mw-hang`). Anything else passes through.
const CRASHER: &str = r#"
import ctypes, os, threading, time
from events import EVENT_AGENT_STATUS

def die(how):
    if how == "crash" or how == "segv":
        ctypes.string_at(0)
    elif how == "hang":
        time.sleep(3600)
    elif how == "spin":
        while True:
            pass
    elif how == "exit":
        os._exit(3)
    elif how == "abort":
        os.abort()
    elif how == "bomb":
        b = bytearray(2**34)
    elif how == "grow":
        grown = []
        while True:
            grown.append(bytearray(2**20))
    elif how == "huge":
        return "x" * (200 * 2**20)

class Crasher:
    def __init__(self, ucs):
        for how in ("crash", "hang", "spin", "exit", "abort", "bomb", "grow", "huge"):
            ucs.shared.addChangeHook(how, self.shared_hook)
        ucs.shared.addChangeHook("thread", self.start_crashing_thread)
        ucs.agents.addChangeStatusHook(self.status_hook)
        ucs.addCallback(EVENT_AGENT_STATUS, self.status_changed)
        ucs.api.addMiddleware("shared.get", self.middleware)

    def shared_hook(self, identificator, old, new):
        return die(identificator)

    def start_crashing_thread(self, identificator, old, new):
        threading.Thread(target=lambda: (time.sleep(0.3), die("segv"))).start()

    def status_hook(self, agent, status, reason):
        die(reason)
        return status, reason

    def status_changed(self, agent, *rest):
        if agent["reason"] == "cb-segv":
            die("segv")

    def middleware(self, handler, caller, identificator, *rest):
        if identificator.startswith("mw-"):
            die(identificator[3:])
        return handler(caller, identificator, *rest)

UCS_PLUGIN = "Crasher"
"#;

/// A second plugin, in a host of its own, whose status callback logs every
/// change it sees: callbacks of other plugins run on after one crashed (D5).
const WITNESS: &str = r#"
from events import EVENT_AGENT_STATUS

class Witness:
    def __init__(self, ucs):
        self.ucs = ucs
        ucs.addCallback(EVENT_AGENT_STATUS, self.seen)

    def seen(self, agent, *rest):
        self.ucs.log.info("witness saw reason " + agent["reason"])

UCS_PLUGIN = "Witness"
"#;

/// A demo server running [`CRASHER`] in a plugin host, with `extra`
/// plugins beside it and `args` on its command line.
async fn crasher_server_with(extra: &[(&str, &str)], args: &[&str]) -> Server {
    let mut builder = Server::builder()
        .demo()
        .arg("--isolation=process")
        .plugin("crasher.py", CRASHER);
    for (file_name, source) in extra {
        builder = builder.plugin(file_name, source);
    }
    for arg in args {
        builder = builder.arg(arg);
    }
    builder.start().await
}

/// A demo server running [`CRASHER`] alone in a plugin host.
async fn crasher_server() -> Server {
    crasher_server_with(&[], &[]).await
}

/// The plugin `name` as `plugins.list` shows it.
async fn plugin_info(server: &Server, name: &str) -> pb::PluginInfo {
    server
        .plugins_listed()
        .await
        .into_iter()
        .find(|info| info.name == name)
        .unwrap_or_else(|| panic!("{name} listed"))
}

async fn crasher(server: &Server) -> pb::PluginInfo {
    plugin_info(server, "crasher").await
}

/// `Plugins.Load` of the crasher, as an operator would after it was left
/// FAILED; what it answers.
async fn load_crasher_by_hand(server: &Server, sid: &str) -> pb::PluginInfo {
    server
        .plugins()
        .load(pb::PluginRequest {
            sid: sid.to_owned(),
            name: "crasher".into(),
        })
        .await
        .expect("load by hand")
        .into_inner()
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

/// Runs `call` while probing `agents.list` every 20 ms, asserting that
/// every probe answers; returns the call's outcome.
async fn while_probing<T>(server: &Server, call: impl Future<Output = T>) -> T {
    let sid = server.admin_sid().await;
    tokio::pin!(call);
    loop {
        tokio::select! {
            outcome = &mut call => break outcome,
            () = tokio::time::sleep(Duration::from_millis(20)) => {
                server.call(&sid, "agents.list", "").await.expect("probe answered");
            }
        }
    }
}

/// Sets `identificator` (which runs the crasher's hook) while probing;
/// returns the set's outcome.
async fn set_while_probing(server: &Server, identificator: &str) -> Result<(), tonic::Status> {
    let sid = server.admin_sid().await;
    let args = format!(r#"["{identificator}", {{"x": 1}}]"#);
    while_probing(server, server.call(&sid, "shared.set", &args))
        .await
        .map(drop)
}

/// Sets alice's status to AUX with `reason` (which runs the crasher's
/// status hook and callbacks) while probing; returns the new agent.
async fn set_status_while_probing(
    server: &Server,
    reason: &str,
) -> Result<serde_json::Value, tonic::Status> {
    let sid = server.admin_sid().await;
    let alice = server.user_id("alice").await;
    let args = format!(r#"[{alice}, 2, "{reason}"]"#);
    while_probing(server, server.call(&sid, "agents.setStatus", &args)).await
}

/// Asserts that the server logged `text` (the plugin's error as recorded).
fn assert_logged(server: &Server, text: &str) {
    assert!(
        server.log().contains(text),
        "no {text:?} in:\n{}",
        server.log()
    );
}

/// Checks that the crasher came back after a crash: a new host,
/// one more restart, and the cause `error` logged.
async fn assert_restarted_after(server: &Server, before: &pb::PluginInfo, error: &str) {
    let after = wait_restarted(server, before.host_pid).await;
    assert_eq!(after.restarts, before.restarts + 1, "{after:?}");
    assert_logged(server, error);
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
    let info = load_crasher_by_hand(&server, &sid).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h6_a_status_hook_segfaulting_lets_the_change_proceed_as_requested() {
    let server = crasher_server().await;
    let before = crasher(&server).await;
    let agent = set_status_while_probing(&server, "segv")
        .await
        .expect("H6: the change proceeds");
    assert_eq!(agent["status"], 2, "{agent}");
    assert_eq!(agent["reason"], "segv", "{agent}");
    assert_restarted_after(&server, &before, "plugin host exited: signal 11 (SIGSEGV)").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d5_an_event_callback_segfaulting_keeps_the_change_and_other_callbacks_run() {
    let server = crasher_server_with(&[("witness.py", WITNESS)], &[]).await;
    let before = crasher(&server).await;
    let agent = set_status_while_probing(&server, "cb-segv")
        .await
        .expect("D5: committed before the callbacks run");
    assert_eq!(agent["reason"], "cb-segv", "{agent}");
    assert_restarted_after(&server, &before, "plugin host exited: signal 11 (SIGSEGV)").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.log().contains("witness saw reason cb-segv") {
        assert!(
            Instant::now() < deadline,
            "witness silent:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let witness = plugin_info(&server, "witness").await;
    assert_eq!(witness.state(), pb::PluginState::Running, "{witness:?}");
    assert_eq!(witness.restarts, 0, "{witness:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i2_a_middleware_segfaulting_answers_its_call_internal() {
    let server = crasher_server().await;
    let before = crasher(&server).await;
    let sid = server.admin_sid().await;
    let status = while_probing(&server, server.call(&sid, "shared.get", r#"["mw-segv"]"#))
        .await
        .expect_err("INTERNAL");
    assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");
    assert_restarted_after(&server, &before, "plugin host exited: signal 11 (SIGSEGV)").await;
    // The restarted host's middleware passes the next call through.
    server
        .call(&sid, "shared.get", r#"["other"]"#)
        .await
        .expect("served again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i2_a_plugin_thread_segfaulting_with_no_call_waiting_fails_and_restarts_its_plugin() {
    let server = crasher_server().await;
    let before = crasher(&server).await;
    set_while_probing(&server, "thread")
        .await
        .expect("the hook itself returns");
    let after = while_probing(&server, wait_restarted(&server, before.host_pid)).await;
    assert_eq!(after.restarts, 1, "{after:?}");
    assert_logged(&server, "plugin host exited: signal 11 (SIGSEGV)");
    assert_logged(&server, "restarting its plugin host");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i2_os_exit_and_os_abort_in_a_hook_show_their_exit_and_restart() {
    let server = crasher_server().await;
    let first = crasher(&server).await;
    set_while_probing(&server, "exit")
        .await
        .expect("S4: stored anyway");
    assert_restarted_after(&server, &first, "plugin host exited: exit status 3").await;
    let second = crasher(&server).await;
    set_while_probing(&server, "abort")
        .await
        .expect("S4: stored anyway");
    assert_restarted_after(&server, &second, "plugin host exited: signal 6 (SIGABRT)").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i3_a_hook_spinning_forever_is_killed_at_its_deadline_and_the_change_stored() {
    let server = crasher_server().await;
    let before = crasher(&server).await;
    let started = Instant::now();
    set_while_probing(&server, "spin")
        .await
        .expect("S4: stored after the deadline");
    let took = started.elapsed();
    assert!(
        (Duration::from_secs(4)..Duration::from_secs(15)).contains(&took),
        "took {took:?}"
    );
    assert_restarted_after(&server, &before, "did not return within its deadline").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i3_a_middleware_spinning_or_sleeping_is_killed_at_its_deadline_and_answers_internal() {
    let server = crasher_server().await;
    let before = crasher(&server).await;
    let sid = server.admin_sid().await;
    let started = Instant::now();
    let (spun, slept) = while_probing(&server, async {
        tokio::join!(
            server.call(&sid, "shared.get", r#"["mw-spin"]"#),
            server.call(&sid, "shared.get", r#"["mw-hang"]"#),
        )
    })
    .await;
    let took = started.elapsed();
    for outcome in [spun, slept] {
        let status = outcome.expect_err("INTERNAL");
        assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");
    }
    assert!(
        (Duration::from_secs(4)..Duration::from_secs(15)).contains(&took),
        "took {took:?}"
    );
    assert_restarted_after(&server, &before, "did not return within its deadline").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i5_a_memory_bomb_under_a_small_limit_is_a_memory_error_and_the_data_stored() {
    let server = crasher_server_with(&[], &["--plugin-memory-limit=384MiB"]).await;
    let before = crasher(&server).await;
    // Under RLIMIT_AS the allocation fails inside the host: CPython raises
    // MemoryError, an ordinary exception of the hook (S4: stored anyway).
    for bomb in ["bomb", "grow"] {
        set_while_probing(&server, bomb)
            .await
            .expect("S4: stored anyway");
    }
    assert_logged(&server, "MemoryError");
    let after = crasher(&server).await;
    if after.host_pid == before.host_pid {
        assert_eq!(after.state(), pb::PluginState::Running, "{after:?}");
    } else {
        // A host killed by the bomb must say so.
        assert_logged(&server, "out of memory");
    }
    // Whatever happened, the limit held: the host is small again and serves.
    // Running in some host (pid 0 is none): the same one or a restarted one.
    let info = wait_restarted(&server, 0).await;
    let status = server_host_vm_size(info.host_pid);
    assert!(status < 384 << 20, "host still holds {status} bytes");
}

/// The virtual size of process `pid` in bytes (VmSize of /proc/PID/status).
fn server_host_vm_size(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("host alive");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmSize:"))
        .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .expect("VmSize")
}

/// A plugin whose constructor sleeps far past any load deadline.
const SLOW_CONSTRUCTOR: &str = r#"
import time

class Slow:
    def __init__(self, ucs):
        time.sleep(30)

UCS_PLUGIN = "Slow"
"#;

/// The processes whose parent is `pid`, from `/proc/PID/task/*/children`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Whether process `pid` exists (zombies count: they are not yet reaped).
fn process_exists(pid: u32) -> bool {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid"));
    nix::sys::signal::kill(pid, None).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i4_a_constructor_sleeping_past_the_load_deadline_fails_its_load_and_its_host_is_killed() {
    let server = Server::builder()
        .demo()
        .arg("--isolation=process")
        .arg("--plugin-load-deadline=2s")
        .start()
        .await;
    let server_pid = u32::try_from(server.pid().as_raw()).expect("pid");
    let before = children_of(server_pid);
    server.write_plugin("slow.py", SLOW_CONSTRUCTOR);
    let sid = server.admin_sid().await;
    let mut load = server.plugins();
    let started = Instant::now();
    let mut hosts = Vec::new();
    let loaded = while_probing(&server, async {
        let loading = load.load(pb::PluginRequest {
            sid: sid.clone(),
            name: "slow".into(),
        });
        tokio::pin!(loading);
        loop {
            tokio::select! {
                outcome = &mut loading => break outcome,
                () = tokio::time::sleep(Duration::from_millis(50)) => {
                    for pid in children_of(server_pid) {
                        if !before.contains(&pid) && !hosts.contains(&pid) {
                            hosts.push(pid);
                        }
                    }
                }
            }
        }
    })
    .await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(6), "load took {took:?}");
    // The answer is the plugin's record, FAILED with why, or an error.
    match loaded {
        Ok(info) => {
            let info = info.into_inner();
            assert_eq!(info.state(), pb::PluginState::Failed, "{info:?}");
            assert!(info.error.contains("did not finish loading"), "{info:?}");
            assert!(info.error.contains("2s"), "{info:?}");
        }
        Err(status) => assert!(status.message().contains("2s"), "{status:?}"),
    }
    let info = plugin_info(&server, "slow").await;
    assert_eq!(info.state(), pb::PluginState::Failed, "{info:?}");
    assert_eq!(info.host_pid, 0, "{info:?}");
    assert!(info.error.contains("did not finish loading"), "{info:?}");
    // The host was really killed, not left sleeping.
    assert!(!hosts.is_empty(), "no plugin host seen");
    let deadline = Instant::now() + Duration::from_secs(3);
    while hosts.iter().any(|&pid| process_exists(pid)) {
        assert!(Instant::now() < deadline, "host {hosts:?} still there");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.call(&sid, "agents.list", "").await.expect("serving");
}

/// A way to make the crasher's host die, for the restart-limit test.
#[derive(Debug, Clone, Copy)]
enum Crash {
    /// A segfault in the status hook (H6: the change proceeds).
    StatusHook,
    /// A segfault in the status event callback (D5).
    Callback,
    /// A segfault in a middleware (answered INTERNAL).
    Middleware,
    /// A segfault in a plugin thread, no call waiting.
    PluginThread,
    /// `os._exit(3)` in a shared-data hook.
    Exit,
    /// `os.abort()` in a shared-data hook.
    Abort,
    /// A shared-data hook spinning past the hook deadline.
    Spin,
    /// SIGKILL from outside.
    Killed,
}

impl Crash {
    /// Makes host `pid` die this way, probing throughout; checks the call
    /// that did it was answered as its rule says.
    async fn cause(self, server: &Server, pid: u32) {
        match self {
            Crash::StatusHook | Crash::Callback => {
                // From READY, so the change to AUX is a change and its event
                // is published.
                set_status_while_probing(server, "ready")
                    .await
                    .expect("a change with a harmless reason");
                let sid = server.admin_sid().await;
                let alice = server.user_id("alice").await;
                server
                    .call(&sid, "agents.setStatus", &format!(r#"[{alice}, 1, ""]"#))
                    .await
                    .expect("back to READY");
                let reason = match self {
                    Crash::StatusHook => "segv",
                    _ => "cb-segv",
                };
                let agent = set_status_while_probing(server, reason)
                    .await
                    .expect("H6/D5: the change proceeds");
                assert_eq!(agent["reason"], reason, "{agent}");
            }
            Crash::Middleware => {
                let sid = server.admin_sid().await;
                let answer =
                    while_probing(server, server.call(&sid, "shared.get", r#"["mw-segv"]"#)).await;
                let status = answer.expect_err("the middleware's host died");
                assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");
            }
            Crash::PluginThread => set_while_probing(server, "thread").await.expect("stored"),
            Crash::Exit => set_while_probing(server, "exit").await.expect("S4: stored"),
            Crash::Abort => set_while_probing(server, "abort")
                .await
                .expect("S4: stored"),
            Crash::Spin => set_while_probing(server, "spin").await.expect("S4: stored"),
            Crash::Killed => nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid")),
                nix::sys::signal::Signal::SIGKILL,
            )
            .expect("kill the host"),
        }
    }
}

/// Waits until the crasher's host `pid` is replaced or the crasher is left
/// FAILED for good; returns what it is then.
async fn wait_replaced_or_given_up(server: &Server, pid: u32) -> pb::PluginInfo {
    while_probing(server, async {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let info = crasher(server).await;
            let replaced = info.state() == pb::PluginState::Running && info.host_pid != pid;
            if replaced || info.error.contains("left FAILED") {
                return info;
            }
            assert!(Instant::now() < deadline, "stuck: {info:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// I2 for every crash kind, not only the shared-data hook's segfault: with
/// `--plugin-max-restarts=1` the first death restarts the host, the second
/// leaves the plugin FAILED until loaded by hand, no host starts after
/// that, and loading by hand starts afresh. Every probe answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i2_restarts_stop_at_the_limit_for_every_crash_kind() {
    let server = crasher_server_with(&[], &["--plugin-max-restarts=1", "--hook-deadline=1s"]).await;
    let sid = server.admin_sid().await;
    for crash in [
        Crash::StatusHook,
        Crash::Callback,
        Crash::Middleware,
        Crash::PluginThread,
        Crash::Exit,
        Crash::Abort,
        Crash::Spin,
        Crash::Killed,
    ] {
        let is = |info: &pb::PluginInfo, state: pb::PluginState, restarts: u32| {
            assert_eq!(
                (info.state(), info.restarts),
                (state, restarts),
                "{crash:?}: {info:?}"
            );
        };
        let first = crasher(&server).await;
        is(&first, pb::PluginState::Running, 0);
        crash.cause(&server, first.host_pid).await;
        let second = wait_replaced_or_given_up(&server, first.host_pid).await;
        is(&second, pb::PluginState::Running, 1);

        crash.cause(&server, second.host_pid).await;
        let given_up = wait_replaced_or_given_up(&server, second.host_pid).await;
        is(&given_up, pb::PluginState::Failed, 1);
        assert!(
            given_up.error.contains("left FAILED until loaded by hand"),
            "{crash:?}: {given_up:?}"
        );
        // It stays put: no restart after giving up.
        while_probing(&server, tokio::time::sleep(Duration::from_millis(700))).await;
        let still = crasher(&server).await;
        is(&still, pb::PluginState::Failed, 1);
        assert_eq!(still.host_pid, 0, "{crash:?}: {still:?}");

        let reloaded = load_crasher_by_hand(&server, &sid).await;
        assert_eq!(reloaded.state(), pb::PluginState::Running, "{crash:?}");
        assert_eq!(reloaded.restarts, 0, "{crash:?}");
    }
}

/// A plugin whose `stop()` segfaults its host.
const CRASHING_STOP: &str = r#"
import ctypes

class CrashingStop:
    def __init__(self, ucs):
        self.ucs = ucs
        ucs.shared.addChangeHook("guarded", self.hook)

    def hook(self, identificator, old, new):
        return new + 1

    def stop(self):
        ctypes.string_at(0)

UCS_PLUGIN = "CrashingStop"
"#;

/// L3 under isolation: a `stop()` that kills its host still ends in the
/// plugin unloaded, with its registrations gone, the cause logged, and no
/// restart (nobody wants it running); the server serves throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l3_a_stop_that_segfaults_its_host_still_unloads_and_is_not_restarted() {
    let server = Server::builder()
        .demo()
        .arg("--isolation=process")
        .plugin("crashing_stop.py", CRASHING_STOP)
        .start()
        .await;
    let sid = server.admin_sid().await;
    let before = plugin_info(&server, "crashing_stop").await;
    assert_eq!(before.state(), pb::PluginState::Running, "{before:?}");
    // S2: while loaded, its hook adds one to what is stored.
    let set_and_get = async |value: i64| {
        server
            .call(&sid, "shared.set", &format!(r#"["guarded", {value}]"#))
            .await
            .expect("set");
        server
            .call(&sid, "shared.get", r#"["guarded"]"#)
            .await
            .expect("get")
    };
    assert_eq!(set_and_get(1).await, serde_json::json!(2));
    let unloaded = while_probing(
        &server,
        server.plugins().unload(pb::PluginRequest {
            sid: sid.clone(),
            name: "crashing_stop".into(),
        }),
    )
    .await;
    let unloaded = unloaded.expect("unloaded").into_inner();
    assert_eq!(unloaded.state(), pb::PluginState::Stopped, "{unloaded:?}");
    assert_eq!(
        unloaded.error, "stop() killed its plugin host: plugin host exited: signal 11 (SIGSEGV)",
        "{unloaded:?}"
    );
    assert_logged(
        &server,
        "stop() killed its plugin host; unloading anyway: plugin host exited: signal 11 (SIGSEGV)",
    );
    assert!(
        !process_exists(before.host_pid),
        "host {} still there",
        before.host_pid
    );
    // Its hook is gone: the value is stored as set.
    assert_eq!(set_and_get(5).await, serde_json::json!(5));
    while_probing(&server, tokio::time::sleep(Duration::from_millis(700))).await;
    let after = plugin_info(&server, "crashing_stop").await;
    assert_eq!(
        after.state(),
        pb::PluginState::Stopped,
        "restarted: {after:?}"
    );
    assert_eq!(after.host_pid, 0, "{after:?}");
}

/// The soft address-space limit of process `pid` in bytes, from
/// `/proc/PID/limits` (`None` if unlimited).
fn address_space_limit(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("host alive");
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max address space"))
        .expect("an address space line");
    let soft = line
        .trim_start_matches("Max address space")
        .split_whitespace()
        .next()
        .expect("a soft limit");
    (soft != "unlimited").then(|| soft.parse().expect("a number of bytes"))
}

/// I5 with the config file: `plugin_memory_limit` is every host's limit,
/// `[plugins.NAME] memory_limit` overrides it for one plugin, and each host
/// runs under its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i5_a_plugins_memory_limit_from_the_config_file_is_its_hosts_limit() {
    let config_dir = tempfile::tempdir().expect("a temporary directory");
    let config = config_dir.path().join("ucs.toml");
    std::fs::write(
        &config,
        "plugin_memory_limit = \"768MiB\"\n\n[plugins.small]\nmemory_limit = \"320MiB\"\n",
    )
    .expect("write the config");
    let plugin = |class: &str| {
        format!(
            "class {class}:\n    def __init__(self, ucs):\n        pass\n\nUCS_PLUGIN = '{class}'\n"
        )
    };
    let server = Server::builder()
        .arg("--isolation=process")
        .arg(&format!("--config={}", config.display()))
        .plugin("small.py", &plugin("Small"))
        .plugin("usual.py", &plugin("Usual"))
        .start()
        .await;
    let small = plugin_info(&server, "small").await;
    let usual = plugin_info(&server, "usual").await;
    assert_ne!(small.host_pid, 0, "{small:?}");
    assert_ne!(usual.host_pid, 0, "{usual:?}");
    assert_eq!(address_space_limit(small.host_pid), Some(320 << 20));
    assert_eq!(address_space_limit(usual.host_pid), Some(768 << 20));
}

/// I5 when the limit kills the host rather than raising MemoryError: the
/// hook's 200 MiB answer fits Python's share of the limit, but copying it
/// out of Python does not, and the host's Rust allocation fails, which
/// aborts it. The call gets what S4 says (stored as requested), the cause
/// says out of memory, and the host is restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i5_a_host_killed_by_its_memory_limit_is_restarted_with_that_cause() {
    let server = crasher_server_with(&[], &["--plugin-memory-limit=384MiB"]).await;
    let before = crasher(&server).await;
    set_while_probing(&server, "huge")
        .await
        .expect("S4: stored anyway");
    let sid = server.admin_sid().await;
    let stored = server
        .call(&sid, "shared.get", r#"["huge"]"#)
        .await
        .expect("get");
    assert_eq!(stored, serde_json::json!({"x": 1}));
    assert_restarted_after(
        &server,
        &before,
        "plugin host exited: signal 6 (SIGABRT), out of memory",
    )
    .await;
}

/// A plugin whose middleware on `shared.get` answers `thread.nice` with the
/// nice value its own thread saw (`null` until it ran), and `call.nice`
/// with that of the thread it runs on (a thread serving the server's call).
const NICENESS: &str = r#"
import os, threading

class Niceness:
    def __init__(self, ucs):
        self.thread_nice = None
        ucs.api.addMiddleware("shared.get", self.middleware)
        threading.Thread(target=self.report, daemon=True).start()

    def report(self):
        self.thread_nice = os.getpriority(os.PRIO_PROCESS, 0)

    def middleware(self, handler, caller, identificator, *rest):
        if identificator == "thread.nice":
            return self.thread_nice
        if identificator == "call.nice":
            return os.getpriority(os.PRIO_PROCESS, 0)
        return handler(caller, identificator, *rest)

UCS_PLUGIN = "Niceness"
"#;

/// The nice values [`NICENESS`] reports in a plugin host of a server
/// started with `args`: its own thread's, and that of the thread serving a
/// call into it.
async fn niceness(args: &[&str]) -> (serde_json::Value, serde_json::Value) {
    let mut server = Server::builder().arg("--isolation=process");
    for arg in args {
        server = server.arg(arg);
    }
    let server = server.plugin("niceness.py", NICENESS).start().await;
    let sid = server.admin_sid().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let thread = loop {
        let seen = server
            .call(&sid, "shared.get", r#"["thread.nice"]"#)
            .await
            .expect("the middleware answers");
        if !seen.is_null() || Instant::now() > deadline {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let call = server
        .call(&sid, "shared.get", r#"["call.nice"]"#)
        .await
        .expect("the middleware answers");
    (thread, call)
}

/// A process-isolated plugin's own threads run at a lower CPU priority
/// (nice 19 by default, `--plugin-thread-nice`), so one spinning in the
/// background yields the CPU to the server; the threads that run its
/// hooks, callbacks and middleware for the server's calls keep the
/// server's priority (issue 18 item 6; I1: nothing else differs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i1_a_hosted_plugins_own_threads_yield_the_cpu_and_its_calls_do_not() {
    assert_eq!(
        niceness(&[]).await,
        (serde_json::json!(19), serde_json::json!(0))
    );
    assert_eq!(
        niceness(&["--plugin-thread-nice=5"]).await,
        (serde_json::json!(5), serde_json::json!(0))
    );
}

const SWITCH_INTERVAL: &str = r#"
import sys

class SwitchInterval:
    def __init__(self, ucs):
        ucs.api.addMiddleware("shared.get", self.middleware)

    def middleware(self, handler, caller, identificator, *rest):
        if identificator == "switch.interval":
            return sys.getswitchinterval()
        return handler(caller, identificator, *rest)

UCS_PLUGIN = "SwitchInterval"
"#;

/// The GIL switch interval [`SWITCH_INTERVAL`] sees in a server started with
/// `args`.
async fn switch_interval(args: &[&str]) -> serde_json::Value {
    let mut server = Server::builder();
    for arg in args {
        server = server.arg(arg);
    }
    let server = server
        .plugin("switch_interval.py", SWITCH_INTERVAL)
        .start()
        .await;
    let sid = server.admin_sid().await;
    server
        .call(&sid, "shared.get", r#"["switch.interval"]"#)
        .await
        .expect("the middleware answers")
}

/// A hook, callback or middleware waits at most one GIL switch interval for
/// a plugin thread busy in Python; the server sets it to 0.5 ms instead of
/// CPython's 5 ms in its own interpreter and in every host alike
/// (`--python-switch-interval`; I1: a plugin sees the same in both modes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i1_plugins_wait_at_most_the_servers_switch_interval_for_the_gil_in_both_modes() {
    for mode in ["--isolation=inprocess", "--isolation=process"] {
        assert_eq!(
            switch_interval(&[mode]).await,
            serde_json::json!(0.0005),
            "{mode}"
        );
        assert_eq!(
            switch_interval(&[mode, "--python-switch-interval=0.25ms"]).await,
            serde_json::json!(0.00025),
            "{mode}"
        );
    }
}
