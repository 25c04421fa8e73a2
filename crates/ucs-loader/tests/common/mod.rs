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
        capture_logs();
        let dir = tempfile::tempdir().unwrap();
        for (file, source) in plugins {
            std::fs::write(dir.path().join(file), source).unwrap();
        }
        let core = Arc::new(Core::new(CoreConfig::default()));
        core.directory.ensure_admin(ADMIN_PASSWORD).unwrap();
        let (admin_sid, _) = core.login("admin", ADMIN_PASSWORD).unwrap();
        let api = Api::new(Arc::clone(&core));
        let mut config = LoaderConfig::new(dir.path().to_path_buf());
        config.stop_timeout = Duration::from_secs(2);
        config.thread_join_timeout = Duration::from_secs(2);
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
            .directory
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
        self.core.shared.get(identificator)
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
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins");
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
