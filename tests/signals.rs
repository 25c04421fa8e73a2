//! Shutdown by signal against the real binary (issue 15 items 9, 10, 13;
//! SPEC L3, I7): the shutdown deadline holds whatever a plugin does, from
//! start-up on, and SIGHUP stops the server as SIGTERM does.

mod common;

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use common::Server;
use nix::sys::signal::Signal;

/// How long past the deadline the exit may come: the watchdog's last log
/// line, killing the hosts, and the test's 20 ms polling.
const SLACK: Duration = Duration::from_millis(1500);

/// Sends `signal` and waits for the exit, at most `deadline` + [`SLACK`];
/// returns the status and how long it took.
async fn signal_and_wait(
    server: &mut Server,
    signal: Signal,
    deadline: Duration,
) -> (ExitStatus, Duration) {
    let sent = Instant::now();
    server.signal(signal);
    let status = server.wait_exit(deadline + SLACK).await.unwrap_or_else(|| {
        panic!(
            "still running {:?} after {signal}; log:\n{}",
            deadline + SLACK,
            server.log()
        )
    });
    (status, sent.elapsed())
}

/// Asserts the server logged `text`.
fn assert_logged(server: &Server, text: &str) {
    assert!(
        server.log().contains(text),
        "no {text:?} in:\n{}",
        server.log()
    );
}

/// Sends SIGTERM and checks the watchdog ended the shutdown at the 3 s
/// `deadline`: exit 3, not before it, the deadline and the plugin `stuck`
/// (not stopped) logged.
async fn assert_cut_short_at_the_deadline(server: &mut Server, deadline: Duration, stuck: &str) {
    let (status, took) = signal_and_wait(server, Signal::SIGTERM, deadline).await;
    assert_eq!(
        status.code(),
        Some(3),
        "exit {status}; log:\n{}",
        server.log()
    );
    assert!(
        took >= deadline - Duration::from_millis(200),
        "exited after {took:?}"
    );
    assert_logged(server, "the shutdown deadline of 3s after SIGTERM passed");
    assert_logged(server, &format!("{stuck} ("));
}

/// A plugin whose `stop()` says it ran.
const POLITE: &str = r#"
class Polite:
    def __init__(self, ucs):
        self.ucs = ucs

    def stop(self):
        self.ucs.log.info("polite: stop called")

UCS_PLUGIN = "Polite"
"#;

/// Item 13: SIGHUP (the terminal went away) used to kill the server with no
/// plugin's `stop()`; it now shuts down in order and exits 0, in both modes.
#[tokio::test]
async fn l3_sighup_stops_every_plugin_and_exits_0_as_sigterm_does() {
    for isolation in ["--isolation=inprocess", "--isolation=process"] {
        let mut server = Server::builder()
            .arg(isolation)
            .plugin("polite.py", POLITE)
            .start()
            .await;
        let (status, _) =
            signal_and_wait(&mut server, Signal::SIGHUP, Duration::from_secs(10)).await;
        assert!(
            status.success(),
            "{isolation}: exit {status}; log:\n{}",
            server.log()
        );
        assert_logged(&server, "SIGHUP received; shutting down");
        assert_logged(&server, "polite: stop called");
    }
}

/// A plugin whose shared-data hook (`gil` identificator) runs C code that
/// holds the GIL for minutes, and whose middleware on `agents.list` runs a
/// catastrophic regex, which holds it as long.
const GIL_HOG: &str = r#"
import re

class GilHog:
    def __init__(self, ucs):
        ucs.shared.addChangeHook("gil", self.hook)
        ucs.api.addMiddleware("agents.list", self.middleware)

    def hook(self, identificator, old, new):
        return sum(range(10**11))

    def middleware(self, handler, *args):
        re.match(r"(a+)+$", "a" * 60 + "b")
        return handler(*args)

UCS_PLUGIN = "GilHog"
"#;

/// Item 10: a hook in C code holding the GIL (`sum(range(10**11))`) or a
/// middleware in a catastrophic regex kept SIGTERM waiting 23 s or until
/// SIGKILL. In process the shutdown deadline now holds anyway: the server
/// exits with status 3 within it, naming the plugin not stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l3_a_plugin_holding_the_gil_in_c_code_cannot_hold_shutdown_past_its_deadline() {
    let deadline = Duration::from_secs(3);
    for (method, args) in [("shared.set", r#"["gil", 1]"#), ("agents.list", "")] {
        let mut server = Server::builder()
            .demo()
            .arg("--isolation=inprocess")
            .arg("--shutdown-deadline=3s")
            .arg("--hook-deadline=10m")
            .plugin("gil_hog.py", GIL_HOG)
            .start()
            .await;
        let sid = server.admin_sid().await;
        let api = server.api();
        let call = tokio::spawn({
            let mut api = api.clone();
            let request = ucs_grpc::pb::CallRequest {
                sid,
                method: method.to_owned(),
                args_json: args.to_owned(),
            };
            async move { api.call(request).await }
        });
        // Give the call time to reach the plugin and take the GIL.
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_cut_short_at_the_deadline(&mut server, deadline, "gil_hog").await;
        call.abort();
    }
}

/// A plugin that, once loaded, makes the interpreter switch threads once in
/// 11 days and spins in a thread: once that thread has the GIL, no other
/// Python code (its own `stop()` included) runs again.
const SWITCH_NEVER: &str = r#"
import sys, threading, time

class SwitchNever:
    def __init__(self, ucs):
        self.ucs = ucs
        threading.Thread(target=self.spin, daemon=True).start()

    def spin(self):
        time.sleep(0.3)
        sys.setswitchinterval(1e6)
        while True:
            pass

    def stop(self):
        self.ucs.log.info("switch_never: stop called")

UCS_PLUGIN = "SwitchNever"
"#;

/// Item 10's third case: `sys.setswitchinterval(1e6)` and a spinning thread
/// ignored SIGTERM for 30 s until SIGKILL. The deadline holds: exit 3.
#[tokio::test]
async fn l3_a_thread_that_never_lets_the_gil_go_cannot_hold_shutdown_past_its_deadline() {
    let deadline = Duration::from_secs(3);
    let mut server = Server::builder()
        .arg("--isolation=inprocess")
        .arg("--shutdown-deadline=3s")
        .plugin("switch_never.py", SWITCH_NEVER)
        .start()
        .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_cut_short_at_the_deadline(&mut server, deadline, "switch_never").await;
    assert!(!server.log().contains("switch_never: stop called"));
}

/// Item 9: start-up no longer delays or ignores SIGTERM (18 s for a
/// constructor sleeping 20 s; an import-time infinite loop until SIGKILL).
/// In process, a constructor sleeping 30 s and an import-time infinite loop
/// are given up within the shutdown deadline and the server exits 0; in
/// process isolation the loading host is killed at once and the server
/// exits 0 well before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l3_sigterm_during_start_up_is_honoured_within_the_deadline() {
    let sleeper = "import time\n\nclass Slow:\n    def __init__(self, ucs):\n        time.sleep(30)\n\nUCS_PLUGIN = 'Slow'\n";
    let spinner = "while True:\n    pass\n\nclass Never:\n    pass\n\nUCS_PLUGIN = 'Never'\n";
    let deadline = Duration::from_secs(3);
    for (isolation, source) in [
        ("--isolation=inprocess", sleeper),
        ("--isolation=inprocess", spinner),
        ("--isolation=process", sleeper),
        ("--isolation=process", spinner),
    ] {
        let mut server = Server::builder()
            .arg(isolation)
            .arg("--shutdown-deadline=3s")
            .arg("--plugin-load-deadline=60s")
            .plugin("starting.py", source)
            .serving_only()
            .start()
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (status, took) = signal_and_wait(&mut server, Signal::SIGTERM, deadline).await;
        assert!(
            took < deadline + SLACK,
            "{isolation}: exited after {took:?}; log:\n{}",
            server.log()
        );
        assert!(
            status.success(),
            "{isolation}: exit {status}; log:\n{}",
            server.log()
        );
        if isolation == "--isolation=process" {
            assert!(
                took < Duration::from_secs(2),
                "{isolation}: exited after {took:?}"
            );
            assert_logged(&server, "killing its plugin host, still loading");
        } else {
            // Python cannot be made to let go of an import or a constructor:
            // the loader stops waiting for it at the plugins' share of the
            // deadline, and the exit does not wait for that thread.
            assert_logged(
                &server,
                "shutdown deadline passed while plugins still start: starting",
            );
        }
    }
}

/// A plugin whose `stop()` sleeps far past any deadline.
const SLOW_STOP: &str = r#"
import time

class SlowStop:
    def __init__(self, ucs):
        pass

    def stop(self):
        time.sleep(60)

UCS_PLUGIN = "SlowStop"
"#;

/// A second signal during shutdown means "now": the server exits at once
/// with status 3, without waiting for the slow `stop()` or the deadline.
#[tokio::test]
async fn l3_a_second_signal_ends_the_shutdown_at_once() {
    let mut server = Server::builder()
        .arg("--isolation=inprocess")
        .arg("--shutdown-deadline=30s")
        .plugin("slow_stop.py", SLOW_STOP)
        .start()
        .await;
    server.signal(Signal::SIGTERM);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (status, took) = signal_and_wait(&mut server, Signal::SIGINT, Duration::ZERO).await;
    assert_eq!(
        status.code(),
        Some(3),
        "exit {status}; log:\n{}",
        server.log()
    );
    assert!(took < SLACK, "exited {took:?} after the second signal");
    assert_logged(&server, "SIGINT received during shutdown (after SIGTERM)");
    assert_logged(&server, "slow_stop (");
}
