//! A real server core, API and plugin host over a temp plugins directory,
//! driven through the same calls gRPC makes. Every test writes real `.py`
//! files and runs them in the real interpreter.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "a shared test harness; each test binary uses part of it"
)]
#![allow(clippy::unwrap_used, reason = "test helpers fail the test loudly")]

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ucs_api::{Api, ApiError, PluginInfo};
use ucs_core::{Core, CoreConfig, NewUser, UserId, Value};
use ucs_loader::{LoaderConfig, PluginHost};

pub const ADMIN_PASSWORD: &str = "admin-password";

/// Everything the server logs, from every test in this binary.
static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct CaptureWriter;

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_writer(|| CaptureWriter)
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .try_init();
    });
}

/// The captured log lines that mention `needle`.
pub fn log_lines_with(needle: &str) -> Vec<String> {
    let logs = LOGS.lock().unwrap();
    String::from_utf8_lossy(&logs)
        .lines()
        .filter(|line| line.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// The mode the rule suite runs its plugins in: `UCS_TEST_ISOLATION=process`
/// runs every plugin in a plugin host (SPEC I1: every rule holds in both).
pub fn isolation_under_test() -> ucs_api::Isolation {
    match std::env::var("UCS_TEST_ISOLATION").as_deref() {
        Ok("process") => ucs_api::Isolation::Process,
        _ => ucs_api::Isolation::InProcess,
    }
}

pub struct TestServer {
    pub core: Arc<Core>,
    pub api: Api,
    pub host: Arc<PluginHost>,
    pub dir: tempfile::TempDir,
    pub admin_sid: String,
}

impl TestServer {
    /// Writes `plugins` (file name, source) and starts the host over them.
    pub fn start(plugins: &[(&str, &str)]) -> Self {
        Self::start_with(plugins, |_| {})
    }

    pub fn start_with(plugins: &[(&str, &str)], configure: impl FnOnce(&mut LoaderConfig)) -> Self {
        Self::start_with_policy(plugins, |_| {}, configure)
    }

    /// As [`TestServer::start_with`], and `policy` may change the Api's
    /// hook policy (budget, breaker, deadline) before anything loads.
    pub fn start_with_policy(
        plugins: &[(&str, &str)],
        policy: impl FnOnce(&mut ucs_api::HookPolicy),
        configure: impl FnOnce(&mut LoaderConfig),
    ) -> Self {
        capture_logs();
        let dir = tempfile::tempdir().unwrap();
        for (file, source) in plugins {
            std::fs::write(dir.path().join(file), source).unwrap();
        }
        let core = Arc::new(Core::new(CoreConfig::default()));
        core.directory().ensure_admin(ADMIN_PASSWORD).unwrap();
        let (admin_sid, _) = core.login("admin", ADMIN_PASSWORD).unwrap();
        // The rule tests check every call of a hook (H6 makes 22 failing
        // calls in a row); the breaker, which would skip calls after a run
        // of failures, has tests of its own.
        let mut hook_policy = ucs_api::HookPolicy {
            breaker_threshold: 0,
            ..ucs_api::HookPolicy::default()
        };
        policy(&mut hook_policy);
        let policy = hook_policy;
        let api = Api::with_policy(Arc::clone(&core), policy);
        let mut config = LoaderConfig::new(dir.path().to_path_buf());
        config.stop_timeout = Duration::from_secs(2);
        config.thread_join_timeout = Duration::from_secs(2);
        config.isolation.default = isolation_under_test();
        config.isolation.hosts.program = PathBuf::from(env!("CARGO_BIN_EXE_ucs-plugin-host"));
        config.isolation.hosts.args.clear();
        configure(&mut config);
        let host = PluginHost::start(api.clone(), config).unwrap();
        TestServer {
            core,
            api,
            host,
            dir,
            admin_sid,
        }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    pub fn write_plugin(&self, file: &str, source: &str) {
        std::fs::write(self.path(file), source).unwrap();
    }

    /// Calls an API method as user 1.
    pub fn call(&self, method: &str, params: Vec<Value>) -> Result<Value, ApiError> {
        self.api.call(&self.admin_sid, method, params)
    }

    pub fn load(&self, name: &str) -> Result<Value, ApiError> {
        self.call("plugins.load", vec![Value::from(name)])
    }

    pub fn unload(&self, name: &str) -> Result<Value, ApiError> {
        self.call("plugins.unload", vec![Value::from(name)])
    }

    /// The plugin's entry in `plugins.list`.
    pub fn plugin(&self, name: &str) -> Option<PluginInfo> {
        use ucs_api::PluginControl;
        self.host.list().into_iter().find(|info| info.name == name)
    }

    pub fn add_user(&self, username: &str, superuser: bool, agent: bool) -> UserId {
        self.core
            .directory()
            .add(NewUser {
                username: username.to_owned(),
                displayname: format!("{username} display"),
                password: "password1".to_owned(),
                superuser,
                agent,
            })
            .unwrap()
            .id
    }

    pub fn add_agent(&self, username: &str) -> UserId {
        self.add_user(username, false, true)
    }

    pub fn set_status(&self, agent: UserId, status: i64, reason: &str) -> Result<Value, ApiError> {
        self.call(
            "agents.setStatus",
            vec![Value::Int(agent), Value::Int(status), Value::from(reason)],
        )
    }

    pub fn shared(&self, identificator: &str) -> Value {
        self.core.shared().get(identificator)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.host.shutdown();
    }
}

/// `value[key]` of a dict value, for short assertions.
pub fn field<'v>(value: &'v Value, key: &str) -> &'v Value {
    value
        .get(key)
        .unwrap_or_else(|| panic!("no field {key} in {value:?}"))
}

/// The example plugins shipped in `plugins/`, as (file name, source).
pub fn shipped_plugins() -> Vec<(String, String)> {
    python_files_in("../../plugins")
}

/// The `.py` files of a directory relative to this crate, as (file name, source).
pub fn python_files_in(relative: &str) -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "py"))
        .map(|path| {
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&path).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// What every rule test's plugin starts with: the modules a plugin imports
/// by bare name, and `put` / `record` to report what Python saw to the test
/// through shared data (read back with [`TestServer::shared`]).
pub const PRELUDE: &str = r#"
import threading, time
import constants, events, error, agents

def put(ucs, key, value):
    ucs.api.shared.set(ucs.sid, key, value)

def record(ucs, key, item):
    data = ucs.shared.get(key)
    if not isinstance(data, list):
        data = []
    data.append(item)
    ucs.api.shared.set(ucs.sid, key, data)
"#;

/// A plugin source: [`PRELUDE`] followed by `body`.
pub fn py(body: &str) -> String {
    format!("{PRELUDE}\n{body}")
}

/// Whole log records (a record may span lines: tracebacks) that name
/// `plugin` in their `plugin` field and contain every one of `needles`.
pub fn log_records_of(plugin: &str, needles: &[&str]) -> Vec<String> {
    let logs = String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned();
    let mut records: Vec<String> = Vec::new();
    for line in logs.lines() {
        if starts_record(line) || records.is_empty() {
            records.push(line.to_owned());
        } else if let Some(last) = records.last_mut() {
            last.push('\n');
            last.push_str(line);
        }
    }
    records
        .into_iter()
        .filter(|record| names_plugin(record, plugin))
        .filter(|record| needles.iter().all(|needle| record.contains(needle)))
        .collect()
}

/// A record starts with its RFC 3339 timestamp, e.g. `2025-01-31T...`.
fn starts_record(line: &str) -> bool {
    let bytes = line.as_bytes();
    bytes.len() > 20
        && bytes[..4].iter().all(u8::is_ascii_digit)
        && bytes[4] == b'-'
        && bytes[10] == b'T'
}

/// Whether `record` has `plugin=<name>` or `plugin="<name>"`, exactly.
fn names_plugin(record: &str, name: &str) -> bool {
    let quoted = format!("plugin=\"{name}\"");
    if record.contains(&quoted) {
        return true;
    }
    let bare = format!("plugin={name}");
    record.match_indices(&bare).any(|(at, _)| {
        record[at + bare.len()..]
            .chars()
            .next()
            .is_none_or(|next| !(next.is_alphanumeric() || next == '_'))
    })
}

/// Polls `condition` until it holds or `timeout` passes; returns whether it held.
pub fn wait_for(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Parses JSON into a [`Value`], for short expected values (str keys only).
pub fn json(text: &str) -> Value {
    Value::parse_json(text).unwrap()
}

impl TestServer {
    /// Logs in as `username` (made by [`TestServer::add_user`]) and returns the sid.
    pub fn login(&self, username: &str) -> String {
        self.core.login(username, "password1").unwrap().0
    }

    /// The plugin's state in `plugins.list`; panics if it is not listed.
    pub fn state_of(&self, name: &str) -> ucs_api::PluginState {
        self.plugin(name)
            .unwrap_or_else(|| panic!("plugin {name} is not listed"))
            .state
    }
}
