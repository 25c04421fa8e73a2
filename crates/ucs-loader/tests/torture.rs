//! SPEC L5 under load: Python never runs with a server lock held and no Rust
//! code waits for a lock while holding the GIL, so plugin threads, hooks and
//! callbacks that call back into the server can never deadlock it. And a path
//! with nothing registered never touches the GIL.

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::TestServer;
use ucs_core::Value;

/// Runs `work` on its own thread and fails the test if it has not finished
/// within `limit`: a deadlock shows as a failure, not a hung CI run.
fn within<T: Send + 'static>(limit: Duration, work: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(work());
    });
    result
        .recv_timeout(limit)
        .unwrap_or_else(|_| panic!("did not finish within {limit:?}: deadlock or stall"))
}

const TORTURE_PLUGIN: &str = r#"
import threading

from constants import AGENT_READY, AGENT_AUX, AGENT_BUSY
from events import EVENT_AGENT_STATUS

UCS_PLUGIN = 'Torture'


class Torture(threading.Thread):
    def __init__(self, ucs):
        super().__init__(daemon=True)
        self.ucs = ucs
        self.stopping = threading.Event()
        ucs.agents.addChangeStatusHook(self.hook)
        ucs.addCallback(EVENT_AGENT_STATUS, self.on_status)

    def hook(self, agent, status, reason):
        # Re-enters the server from inside the status pipeline.
        if not self.ucs.agents.getAgents():
            raise RuntimeError('no agents visible from the hook')
        return status, reason

    def on_status(self, agent, args):
        self.ucs.shared.get('l5_torture')

    def run(self):
        sid = self.ucs.sid
        ids = [agent['id'] for agent in self.ucs.agents.getAgents()]
        loops = 0
        while not self.stopping.is_set():
            status = (AGENT_READY, AGENT_AUX, AGENT_BUSY)[loops % 3]
            self.ucs.api.agents.setStatus(sid, ids[loops % len(ids)], status, 'torture')
            self.ucs.agents.getAgents()
            loops += 1
        self.ucs.api.shared.set(sid, 'l5_torture_loops', loops)

    def stop(self):
        self.stopping.set()
"#;

#[test]
fn l5_plugin_thread_hooks_and_rust_threads_never_deadlock() {
    let server = TestServer::start(&[]);
    let agents: Vec<i64> = (0..2)
        .map(|i| server.add_agent(&format!("l5agent{i}")))
        .collect();
    server.write_plugin("l5_torture.py", TORTURE_PLUGIN);
    server.load("l5_torture").unwrap();

    let api = server.api.clone();
    let sid = server.admin_sid.clone();
    let changes = within(Duration::from_secs(120), move || {
        let workers: Vec<_> = (0..4)
            .map(|worker| {
                let api = api.clone();
                let sid = sid.clone();
                let agents = agents.clone();
                std::thread::spawn(move || {
                    for round in 0..300_i64 {
                        let agent = agents[(round as usize + worker) % agents.len()];
                        let status = Value::Int(1 + (round + worker as i64) % 3);
                        let params = vec![Value::Int(agent), status, Value::from("rust")];
                        api.call(&sid, "agents.setStatus", params)
                            .expect("a status change from Rust failed");
                        api.call(&sid, "agents.list", vec![])
                            .expect("agents.list failed");
                    }
                    300
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum::<i64>()
    });
    assert_eq!(changes, 1200);

    let server = within(Duration::from_secs(30), move || {
        server.unload("l5_torture").unwrap();
        server
    });
    let loops = server.shared("l5_torture_loops");
    assert!(
        matches!(loops, Value::Int(n) if n > 0),
        "the plugin thread made no progress: {loops:?}"
    );
}

const SPINNER_PLUGIN: &str = r#"
import sys
import threading

UCS_PLUGIN = 'Spinner'


class Spinner(threading.Thread):
    def __init__(self, ucs):
        super().__init__(daemon=True)
        self.ucs = ucs
        self.stopping = False
        # Hold the GIL for long slices: anything that needs it waits ~50 ms.
        sys.setswitchinterval(0.05)

    def run(self):
        count = 0
        while not self.stopping:
            count += 1

    def stop(self):
        self.stopping = True
        sys.setswitchinterval(0.005)

"#;

const PASSTHROUGH_MIDDLEWARE: &str = r#"
UCS_PLUGIN = 'Passthrough'


class Passthrough:
    def __init__(self, ucs):
        ucs.api.addMiddleware('shared.get', self.passthrough)

    def passthrough(self, handler, *args):
        return handler(*args)
"#;

fn median_latency(server: &TestServer, method: &str, params: &[Value], calls: usize) -> Duration {
    let mut latencies: Vec<Duration> = (0..calls)
        .map(|_| {
            // Pause between calls so the spinner always holds the GIL again
            // when the next call starts, as it would on a busy server.
            std::thread::sleep(Duration::from_millis(20));
            let started = Instant::now();
            server
                .call(method, params.to_vec())
                .expect("the measured call failed");
            started.elapsed()
        })
        .collect();
    latencies.sort_unstable();
    latencies[calls / 2]
}

/// A plugin thread spinning in pure Python holds the GIL in 50 ms slices.
/// `agents.list` has no middleware, so it never waits for the GIL and stays
/// fast; `shared.get` behind a Python middleware, measured the same way, has
/// to wait for a slice to end. The contrast shows the fast path does not
/// touch the GIL, without looking at internals. With process isolation
/// the middleware does not wait either: its plugin has its own GIL.
#[test]
fn l5_calls_without_middleware_do_not_wait_for_a_spinning_plugin() {
    let server = TestServer::start(&[
        ("l5_spinner.py", SPINNER_PLUGIN),
        ("l5_passthrough.py", PASSTHROUGH_MIDDLEWARE),
    ]);
    server.add_agent("l5spinagent");
    // Let the spinner get going.
    std::thread::sleep(Duration::from_millis(100));

    let fast = median_latency(&server, "agents.list", &[], 25);
    let through_python = median_latency(&server, "shared.get", &[Value::from("x")], 9);
    server.unload("l5_spinner").unwrap();

    assert!(
        fast < Duration::from_millis(10),
        "agents.list waited for the GIL: median {fast:?}"
    );
    match common::isolation_under_test() {
        ucs_api::Isolation::InProcess => assert!(
            through_python > Duration::from_millis(10),
            "control: a Python middleware must wait for the spinning thread, median {through_python:?}"
        ),
        // I1: each plugin has an interpreter of its own, so the spinner's
        // GIL is not the middleware's.
        ucs_api::Isolation::Process => assert!(
            through_python < Duration::from_millis(10),
            "an isolated middleware waited for another plugin's GIL: median {through_python:?}"
        ),
    }
}
