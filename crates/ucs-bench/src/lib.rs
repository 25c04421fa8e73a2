//! The fixture of the in-process micro-benchmarks (`benches/micro.rs`): a
//! real core, API and plugin host, with real plugin files from
//! `bench/plugins/`, driven the way the gRPC layer drives them.
//!
//! # Layout
//! - [`BenchServer`]: the server over a temporary plugins directory, with the
//!   three `--demo` agents, on a thread that keeps a Python thread state as
//!   the server's runtime threads do.
//! - [`StatusHookFloor`]: the least work a status change through a Python
//!   hook can cost (issue 13 item 3): the crossing, the `agents.Agent`, the
//!   call of the registered hook function and the reading of its tuple,
//!   with none of the server around it.
//! - [`plugins`]: the plugin sources the benchmarks load.

use std::sync::Arc;

use ucs_api::{Api, ApiError};
use ucs_core::registration::AllAgents;
use ucs_core::{Agent, AgentStatus, Core, CoreConfig, NewUser, UserId, Value};
use ucs_loader::{LoaderConfig, PluginHost};
use ucs_pybridge::adapters::PyStatusHook;

/// The plugin files the benchmarks load, shared with the load generator.
pub mod plugins {
    /// A middleware on `agents.list` that passes the call through.
    pub const TRIVIAL_MIDDLEWARE: &str =
        include_str!("../../../bench/plugins/trivial_middleware.py");
    /// A status hook that lets every change through.
    pub const TRIVIAL_STATUS_HOOK: &str =
        include_str!("../../../bench/plugins/trivial_status_hook.py");
}

/// The user 1 password of the fixture.
const ADMIN_PASSWORD: &str = "bench-admin-password";

/// A server in this process: core, API, plugin host.
pub struct BenchServer {
    /// The domain state, for status changes straight through the pipeline.
    pub core: Arc<Core>,
    /// The API, for calls as gRPC makes them.
    pub api: Api,
    /// The plugin host, shut down on drop so plugin threads end.
    host: Arc<PluginHost>,
    /// The plugins directory; removed on drop.
    dir: tempfile::TempDir,
    /// A session of user 1, a superuser.
    pub admin_sid: String,
    /// The ids of the demo agents alice, bob and carol.
    pub agent_ids: Vec<UserId>,
}

impl BenchServer {
    /// Starts a server with no plugins and the demo agents. Also parks a
    /// Python thread state on the calling thread, as every runtime thread of
    /// `ucs serve` does, so attaching costs what it costs in the server.
    pub fn start() -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|err| format!("temp dir: {err}"))?;
        let core = Arc::new(Core::new(CoreConfig::default()));
        core.directory()
            .ensure_admin(ADMIN_PASSWORD)
            .map_err(|err| format!("admin: {err}"))?;
        let (admin_sid, _) = core
            .login("admin", ADMIN_PASSWORD)
            .map_err(|err| format!("login: {err}"))?;
        let mut agent_ids = Vec::new();
        for (username, displayname) in [
            ("alice", "Alice Smith"),
            ("bob", "Bob Jones"),
            ("carol", "Carol White"),
        ] {
            let user = core
                .directory()
                .add(NewUser {
                    username: username.to_owned(),
                    displayname: displayname.to_owned(),
                    password: "password1".to_owned(),
                    superuser: false,
                    agent: true,
                })
                .map_err(|err| format!("agent {username}: {err}"))?;
            agent_ids.push(user.id);
        }
        let api = Api::new(Arc::clone(&core));
        let host = PluginHost::start(api.clone(), LoaderConfig::new(dir.path().to_path_buf()))
            .map_err(|err| format!("plugin host: {err}"))?;
        ucs_loader::python_thread_started();
        Ok(BenchServer {
            core,
            api,
            host,
            dir,
            admin_sid,
            agent_ids,
        })
    }

    /// Writes `<name>.py` with `source` and loads it with `plugins.load`.
    pub fn load_plugin(&self, name: &str, source: &str) -> Result<(), ApiError> {
        std::fs::write(self.dir.path().join(format!("{name}.py")), source)
            .map_err(|err| ApiError::Internal(format!("cannot write plugin {name}: {err}")))?;
        self.api
            .call(&self.admin_sid, "plugins.load", vec![Value::from(name)])
            .map(drop)
    }

    /// Unloads plugin `name` with `plugins.unload`.
    pub fn unload_plugin(&self, name: &str) -> Result<(), ApiError> {
        self.api
            .call(&self.admin_sid, "plugins.unload", vec![Value::from(name)])
            .map(drop)
    }

    /// One status change of agent `agent` through the pipeline (hook
    /// included, if one is registered); `flip` alternates between ready and
    /// a not-ready reason so every call is a real change, as
    /// [`StatusHookFloor::call`] alternates.
    pub fn change_status(&self, agent: UserId, flip: bool) -> Result<(), ApiError> {
        let (status, reason) = requested(flip);
        self.core
            .set_agent_status(agent, status, reason)
            .map(drop)
            .map_err(ApiError::from)
    }

    /// One `agents.list` call as user 1, as gRPC makes it.
    pub fn list_agents(&self) -> Result<Value, ApiError> {
        self.api.call(&self.admin_sid, "agents.list", Vec::new())
    }
}

/// What `flip` requests, in [`BenchServer::change_status`] and
/// [`StatusHookFloor::call`] alike.
fn requested(flip: bool) -> (AgentStatus, &'static str) {
    if flip {
        (AgentStatus::Aux, "Lunch")
    } else {
        (AgentStatus::Ready, "")
    }
}

/// The floor of a status change through a Python hook: exactly the Python
/// part of `PyStatusHook::decide` done straight from Rust, so the pipeline's
/// figure can be read against the least the same work costs.
///
/// Per call ([`PyStatusHook::call_bare`], next to the adapter so it shares
/// its code): attach (this thread keeps a parked thread state, as the
/// server's threads do), build the `agents.Agent`, the status and the
/// reason, call the hook function the plugin registered, read the
/// `(status, reason)` tuple it returns, detach. No pyo3 here: the Python
/// stays in `ucs-pybridge`.
pub struct StatusHookFloor {
    /// The registered hook, kept alive for the floor's calls.
    hook: Arc<dyn ucs_core::StatusHook>,
    /// The agent handed to the hook, as the pipeline reads it before a
    /// change.
    before: Agent,
}

impl StatusHookFloor {
    /// The floor over the status hook registered now, which must be a
    /// Python one, and agent `agent`.
    pub fn of_registered_hook(server: &BenchServer, agent: UserId) -> Result<Self, String> {
        let registration = server
            .core
            .status_hook()
            .slots()
            .first(&AllAgents)
            .ok_or("no status hook is registered")?;
        if registration
            .target
            .as_any()
            .downcast_ref::<PyStatusHook>()
            .is_none()
        {
            return Err("the status hook is not a Python one".to_owned());
        }
        let hook = registration.target;
        let before = server
            .core
            .directory()
            .agent(agent)
            .map_err(|err| format!("agent {agent}: {err}"))?;
        Ok(StatusHookFloor { hook, before })
    }

    /// One call of the hook as the adapter makes it; `flip` as in
    /// [`BenchServer::change_status`]. Returns the tuple the hook gave.
    pub fn call(&self, flip: bool) -> Result<(i64, String), String> {
        let (status, reason) = requested(flip);
        self.hook
            .as_any()
            .downcast_ref::<PyStatusHook>()
            .ok_or("the status hook is not a Python one")?
            .call_bare(&self.before, status, reason)
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        self.host.shutdown();
    }
}
