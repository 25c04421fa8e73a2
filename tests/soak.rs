//! The torture soak (issue 7) against the real binary: re-entrant plugins,
//! a plugin thread, 4 gRPC clients changing the same agents, and reloads of
//! those very plugins in the middle, for `UCS_SOAK_SECS` seconds (10 in
//! `cargo test`, 60 under `cargo xtask soak`).
//!
//! Zero stalls: every call runs under [`CALL_DEADLINE`]; one that does not
//! finish in time fails the test, and so does any status outside
//! [`DOCUMENTED`]. At the end the server must still be healthy, both plugins
//! RUNNING, the plugin thread still making progress, and SIGTERM must stop
//! it with exit code 0 within 15 s. The counts of calls per status are
//! printed, so a run shows what the load actually exercised.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use common::Server;
use nix::sys::signal::Signal;
use serde_json::{Value as Json, json};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use ucs_grpc::pb;
use ucs_grpc::pb::api_client::ApiClient;
use ucs_grpc::pb::plugins_client::PluginsClient;

/// Every call, reloads included, must finish within this or it is a stall.
const CALL_DEADLINE: Duration = Duration::from_secs(10);

/// How long the soak runs when `UCS_SOAK_SECS` is not set.
const DEFAULT_SOAK: Duration = Duration::from_secs(10);

/// The gRPC clients changing the agents at once.
const CLIENTS: usize = 4;

/// The statuses a call may end with under this load, and why each is
/// documented (SPEC section 9 and ARCHITECTURE.md):
/// - OK;
/// - FAILED_PRECONDITION: a processing error (SPEC section 9), here a change
///   that would wait on itself: the hook changing the agent whose change it
///   is hooking (reason `Reenter`), or two changes whose hooks wait on each
///   other's agents; `turns.rs` answers such a cycle with a processing error
///   instead of a deadlock, and the hook's ProcessingError blocks (H5).
const DOCUMENTED: [Code; 2] = [Code::Ok, Code::FailedPrecondition];

/// Hooks, callbacks and middleware that all call back into the API.
const REENTRANT_PLUGIN: &str = r#"
from constants import AGENT_BUSY
from events import EVENT_AGENT_STATUS, EVENT_SHARED_DATA

UCS_PLUGIN = "SoakReentrant"

# Off in the soak CI runs; see `callback_changing_agents_stalls_for_the_wait_limit`.
CALLBACK_CHANGES_AGENTS = False


class SoakReentrant:
    def __init__(self, ucs):
        self.ucs = ucs

    def start(self):
        self.ucs.agents.addChangeStatusHook(self.status_hook)
        self.ucs.shared.addChangeHook("soak_counter", self.shared_hook)
        self.ucs.addCallback(EVENT_AGENT_STATUS, self.on_status)
        self.ucs.addCallback(EVENT_SHARED_DATA, self.on_shared)
        self.ucs.api.addMiddleware("agents.setStatus", self.middleware)

    def stop(self):
        self.ucs.agents.removeChangeStatusHook()
        self.ucs.shared.removeChangeHook("soak_counter")
        self.ucs.removeCallback(EVENT_AGENT_STATUS, self.on_status)
        self.ucs.removeCallback(EVENT_SHARED_DATA, self.on_shared)
        self.ucs.api.removeMiddleware("agents.setStatus", self.middleware)

    def status_hook(self, agent, status, reason):
        if reason == "Reenter":
            # A change of the agent whose change is being hooked: the turn
            # is held by this very call, so this raises ProcessingError,
            # which blocks the change (H5): FAILED_PRECONDITION.
            self.ucs.api.agents.setStatus(self.ucs.sid, agent.id, status, "")
        # Back into the API from inside the status pipeline, and a write to
        # another identificator, which fires on_shared below.
        self.ucs.api.agents.list(self.ucs.sid)
        self.ucs.agents.getAgents()
        seen = self.ucs.shared.get("soak_hook")
        seen[agent.id] = status
        self.ucs.api.shared.set(self.ucs.sid, "soak_hook", seen)
        return (status, reason)

    def shared_hook(self, identificator, old_data, new_data):
        self.ucs.api.agents.list(self.ucs.sid)
        self.ucs.shared.get("soak_hook")
        return new_data

    def on_status(self, agent, args):
        agents = self.ucs.agents.getAgents()
        self.ucs.api.shared.set(self.ucs.sid, "soak_status_seen", {agent["id"]: agent["status"]})
        if CALLBACK_CHANGES_AGENTS and agent["reason"] == "Lunch":
            # Changes another agent the clients are changing too; BUSY with
            # no reason does not come back here, so this cannot cascade.
            others = [a["id"] for a in agents if a["id"] != agent["id"]]
            self.ucs.api.agents.setStatus(self.ucs.sid, others[0], AGENT_BUSY, "")

    def on_shared(self, identificator, data):
        # Only reads, or the writes above would feed each other forever.
        self.ucs.shared.get("soak_status_seen")
        self.ucs.agents.getAgents()

    def middleware(self, handler, caller, *params):
        self.ucs.shared.get("soak_hook")
        self.ucs.api.agents.list(self.ucs.sid)
        return handler(caller, *params)
"#;

/// A plugin thread changing the same agents through the API in a loop and
/// publishing its progress, so the test can see it is still alive.
const THREAD_PLUGIN: &str = r#"
import threading

from constants import AGENT_READY, AGENT_AUX, AGENT_BUSY
from error import UcsError

UCS_PLUGIN = "SoakThread"


class SoakThread(threading.Thread):
    def __init__(self, ucs):
        super().__init__(daemon=True)
        self.ucs = ucs
        self.halt = threading.Event()
        self.ok = 0
        self.failed = {}

    def run(self):
        agents = [agent["id"] for agent in self.ucs.agents.getAgents()]
        # Counts go on across reloads.
        progress = self.ucs.shared.get("soak_thread")
        self.ok = progress.get("ok", 0)
        self.failed = progress.get("failed", {})
        turn = 0
        while not self.halt.is_set():
            turn += 1
            agent = agents[turn % len(agents)]
            status = (AGENT_READY, AGENT_AUX, AGENT_BUSY)[turn % 3]
            try:
                self.ucs.api.agents.setStatus(
                    self.ucs.sid, agent, status, "Lunch" if status == AGENT_AUX else ""
                )
                self.ucs.shared.get("soak_hook")
                self.ucs.agents.getAgents()
                self.ok += 1
            except UcsError as err:
                name = type(err).__name__
                self.failed[name] = self.failed.get(name, 0) + 1
            if turn % 20 == 0:
                self.ucs.api.shared.set(
                    self.ucs.sid, "soak_thread", {"ok": self.ok, "failed": self.failed}
                )
            self.halt.wait(0.002)

    def stop(self):
        self.halt.set()
"#;

/// Calls per method and outcome: a status code's name, or `STALL`.
#[derive(Default)]
struct Tally {
    counts: BTreeMap<String, u64>,
    /// Calls that broke the rules: stalls and undocumented statuses.
    violations: Vec<String>,
}

type Shared = Arc<Mutex<Tally>>;

/// Runs `call` under [`CALL_DEADLINE`] and records how it ended.
async fn tally<T>(
    tally: &Shared,
    what: &str,
    call: impl Future<Output = Result<T, tonic::Status>>,
) -> Option<T> {
    let outcome = tokio::time::timeout(CALL_DEADLINE, call).await;
    let mut tally = tally.lock().unwrap_or_else(PoisonError::into_inner);
    let (key, result, violation) = match outcome {
        Ok(Ok(value)) => (format!("{what} {:?}", Code::Ok), Some(value), None),
        Ok(Err(status)) => {
            let undocumented = (!DOCUMENTED.contains(&status.code()))
                .then(|| format!("{what}: undocumented {status:?}"));
            (format!("{what} {:?}", status.code()), None, undocumented)
        }
        Err(_) => (
            format!("{what} STALL"),
            None,
            Some(format!("{what}: no answer within {CALL_DEADLINE:?}")),
        ),
    };
    *tally.counts.entry(key).or_default() += 1;
    tally.violations.extend(violation);
    result
}

/// The soak's length from `UCS_SOAK_SECS`, or [`DEFAULT_SOAK`].
fn soak_duration() -> Duration {
    std::env::var("UCS_SOAK_SECS")
        .ok()
        .map(|secs| {
            Duration::from_secs(
                secs.trim()
                    .parse()
                    .expect("UCS_SOAK_SECS is a whole number of seconds"),
            )
        })
        .unwrap_or(DEFAULT_SOAK)
}

/// One gRPC client: status changes of the shared agents, shared-data writes
/// through the hooked identificator, and reads, until `until`.
async fn client(
    number: usize,
    mut api: ApiClient<Channel>,
    sid: String,
    agents: Vec<i64>,
    until: Instant,
    tally_of: Shared,
) {
    let mut turn = number;
    while Instant::now() < until {
        turn += 1;
        let agent = agents[(turn / 3 + number) % agents.len()];
        let (method, args) = match turn % 4 {
            0 | 1 => {
                let status = [0, 1, 2, 3][(turn / 2 + number) % 4];
                // Now and then a reason that makes the hook re-enter.
                let reason = match status {
                    2 if turn.is_multiple_of(7) => "Reenter",
                    2 => "Lunch",
                    _ => "",
                };
                ("agents.setStatus", json!([agent, status, reason]))
            }
            2 => (
                "shared.set",
                json!(["soak_counter", { "client": number, "turn": turn }]),
            ),
            _ => ("agents.list", json!([])),
        };
        let request = pb::CallRequest {
            sid: sid.clone(),
            method: method.to_owned(),
            args_json: args.to_string(),
        };
        tally(&tally_of, method, api.call(request)).await;
    }
}

/// Reloads the two plugins in turn (Plugins.Load of a loaded plugin stops
/// it and loads it again, P6) until `until`.
async fn reloader(
    mut plugins: PluginsClient<Channel>,
    sid: String,
    until: Instant,
    tally_of: Shared,
) {
    let mut turn = 0usize;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(300)).await;
        turn += 1;
        let name = ["soak_reentrant", "soak_thread"][turn % 2];
        let request = pb::PluginRequest {
            sid: sid.clone(),
            name: name.to_owned(),
        };
        let info = tally(&tally_of, "Plugins.Load", plugins.load(request)).await;
        if let Some(info) = info.map(tonic::Response::into_inner)
            && info.state() != pb::PluginState::Running
        {
            tally_of
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .violations
                .push(format!("reload of {name} left it {info:?}"));
        }
    }
}

/// The plugin thread's published progress: successful iterations.
async fn thread_progress(server: &Server, sid: &str) -> i64 {
    let progress = server
        .call(sid, "shared.get", r#"["soak_thread"]"#)
        .await
        .expect("shared.get soak_thread");
    progress.get("ok").and_then(Json::as_i64).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_reentrant_plugins_clients_and_reloads_never_stall() {
    // Callbacks change agents too: that once stalled for the callback wait
    // limit (a callback holding the dispatcher waited for an agent whose
    // hook waited for the dispatcher); events committed inside a change are
    // now delivered once its turn is released.
    soak(&REENTRANT_PLUGIN.replace(
        "CALLBACK_CHANGES_AGENTS = False",
        "CALLBACK_CHANGES_AGENTS = True",
    ))
    .await;
}

/// The soak with `reentrant_plugin` as the re-entrant plugin's source.
async fn soak(reentrant_plugin: &str) {
    let server = Server::builder()
        .demo()
        .plugin("soak_reentrant.py", reentrant_plugin)
        .plugin("soak_thread.py", THREAD_PLUGIN)
        .start()
        .await;
    let admin = server.admin_sid().await;
    let mut agents = Vec::new();
    for name in ["alice", "bob", "carol"] {
        agents.push(server.user_id(name).await);
    }
    let soak = soak_duration();
    let tally_of = Shared::default();
    let until = Instant::now() + soak;

    let mut tasks = Vec::new();
    for number in 0..CLIENTS {
        // A connection of its own per client, as separate programs would.
        let channel = server.endpoint().connect().await.expect("client connects");
        tasks.push(tokio::spawn(client(
            number,
            ApiClient::new(channel),
            server.admin_sid().await,
            agents.clone(),
            until,
            Arc::clone(&tally_of),
        )));
    }
    tasks.push(tokio::spawn(reloader(
        server.plugins(),
        admin.clone(),
        until,
        Arc::clone(&tally_of),
    )));
    for task in tasks {
        task.await.expect("a soak task panicked");
    }

    // Still healthy, both plugins running, the plugin thread still working.
    let health = server
        .health()
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health check");
    assert_eq!(health.into_inner().status(), ServingStatus::Serving);
    let listed = server
        .plugins()
        .list(pb::ListPluginsRequest { sid: admin.clone() })
        .await
        .expect("plugins.list")
        .into_inner()
        .plugins;
    for name in ["soak_reentrant", "soak_thread"] {
        let info = listed.iter().find(|info| info.name == name);
        assert_eq!(
            info.map(pb::PluginInfo::state),
            Some(pb::PluginState::Running),
            "{name}: {info:?}; log:\n{}",
            server.log()
        );
    }
    let before = thread_progress(&server, &admin).await;
    let deadline = Instant::now() + CALL_DEADLINE;
    while thread_progress(&server, &admin).await <= before {
        assert!(
            Instant::now() < deadline,
            "the plugin thread made no progress after the soak; log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server
        .call(&admin, "agents.list", "")
        .await
        .expect("a call after the soak");

    let tally = std::mem::take(&mut *tally_of.lock().unwrap_or_else(PoisonError::into_inner));
    let thread = server
        .call(&admin, "shared.get", r#"["soak_thread"]"#)
        .await
        .expect("thread stats");
    eprintln!(
        "soak {soak:?}: gRPC calls by outcome {:?}; plugin thread (across reloads) {thread}",
        tally.counts
    );
    assert!(
        tally.violations.is_empty(),
        "{} calls broke the rules:\n{}\nlog:\n{}",
        tally.violations.len(),
        tally.violations.join("\n"),
        server.log()
    );
    for method in [
        "agents.setStatus",
        "shared.set",
        "agents.list",
        "Plugins.Load",
    ] {
        let ok = tally.counts.get(&format!("{method} Ok")).copied();
        assert!(ok > Some(0), "no {method} succeeded: {:?}", tally.counts);
    }
    // The hooks and callbacks really ran and called back into the API.
    for identificator in ["soak_hook", "soak_status_seen"] {
        let written = server
            .call(&admin, "shared.get", &json!([identificator]).to_string())
            .await
            .expect("shared.get");
        assert_ne!(written, json!({}), "{identificator} was never written");
    }
    let log = server.log();
    assert!(!log.contains("panicked"), "{log}");
    assert!(!log.contains("stuck"), "a plugin was reported stuck: {log}");

    // A clean stop: SIGTERM, exit code 0, within 15 s.
    let mut server = server;
    server.signal(Signal::SIGTERM);
    let status = server
        .wait_exit(Duration::from_secs(15))
        .await
        .unwrap_or_else(|| panic!("no exit within 15 s of SIGTERM; log:\n{}", server.log()));
    assert!(status.success(), "{status}; log:\n{}", server.log());
}
