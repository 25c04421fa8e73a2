//! The fixture of the in-process micro-benchmarks (`benches/micro.rs`): a
//! real core, API and plugin host, with real plugin files from
//! `bench/plugins/`, driven the way the gRPC layer drives them.
//!
//! # Layout
//! - [`BenchServer`]: the server over a temporary plugins directory, with the
//!   three `--demo` agents, on a thread that keeps a Python thread state as
//!   the server's runtime threads do.
//! - [`plugins`]: the plugin sources the benchmarks load.
//!
//! No Python here: the pure-Python side of each comparison is itself a
//! plugin ([`plugins::PURE_PYTHON_LOOP`]), so it runs in the very interpreter
//! the server embeds, and this crate stays off pyo3.

use std::sync::Arc;
use std::time::Duration;

use ucs_api::{Api, ApiError};
use ucs_core::{AgentStatus, Core, CoreConfig, NewUser, UserId, Value};
use ucs_loader::{LoaderConfig, PluginHost};

/// The plugin files the benchmarks load, shared with the load generator.
pub mod plugins {
    /// A middleware on `agents.list` that passes the call through.
    pub const TRIVIAL_MIDDLEWARE: &str =
        include_str!("../../../bench/plugins/trivial_middleware.py");
    /// A status hook that lets every change through.
    pub const TRIVIAL_STATUS_HOOK: &str =
        include_str!("../../../bench/plugins/trivial_status_hook.py");
    /// The same hook called from a pure-Python loop that updates a dict.
    pub const PURE_PYTHON_LOOP: &str = include_str!("../../../bench/plugins/pure_python_loop.py");
}

/// The identificator [`plugins::PURE_PYTHON_LOOP`] answers on `shared.get`.
const LOOP_IDENTIFICATOR: &str = "bench.pure_python_loop";

/// The most iterations of the pure-Python loop in one call: about 10 ms,
/// well inside a middleware's time budget (50 ms), whose breaker would
/// otherwise switch the loop off in the middle of a measurement.
const LOOP_CHUNK: u64 = 100_000;

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
    /// a not-ready reason so every call is a real change, as the pure-Python
    /// loop alternates.
    pub fn change_status(&self, agent: UserId, flip: bool) -> Result<(), ApiError> {
        let (status, reason) = if flip {
            (AgentStatus::Aux, "Lunch")
        } else {
            (AgentStatus::Ready, "")
        };
        self.core
            .set_agent_status(agent, status, reason)
            .map(drop)
            .map_err(ApiError::from)
    }

    /// Runs `iterations` status changes in the pure-Python loop of
    /// [`plugins::PURE_PYTHON_LOOP`] (which must be loaded) and returns the
    /// time the loop took, measured in Python around the loop only.
    pub fn pure_python_loop(&self, iterations: u64) -> Result<Duration, ApiError> {
        let mut total = Duration::ZERO;
        let mut left = iterations;
        while left > 0 {
            let chunk = left.min(LOOP_CHUNK);
            left -= chunk;
            let nanos = self.api.call(
                &self.admin_sid,
                "shared.get",
                vec![Value::from(format!("{LOOP_IDENTIFICATOR}:{chunk}"))],
            )?;
            let nanos = nanos
                .as_int()
                .and_then(|nanos| u64::try_from(nanos).ok())
                .ok_or_else(|| ApiError::Internal(format!("the loop returned {nanos:?}")))?;
            total += Duration::from_nanos(nanos);
        }
        Ok(total)
    }

    /// One `agents.list` call as user 1, as gRPC makes it.
    pub fn list_agents(&self) -> Result<Value, ApiError> {
        self.api.call(&self.admin_sid, "agents.list", Vec::new())
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        self.host.shutdown();
    }
}
