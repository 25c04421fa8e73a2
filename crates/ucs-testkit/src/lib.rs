//! `ucs plugin test DIR`: pytest on the real engine (issue 16 item 5).
//!
//! pytest runs inside this process's embedded interpreter
//! ([`ucs_pybridge::testing::run_pytest`]) with the `ucs_server` fixture.
//! Each server that fixture makes is an [`EngineServer`]: a memory-only
//! [`Core`], an [`Api`] and a [`PluginHost`] that loads the plugins of DIR
//! in process, exactly as `ucs serve --plugins-dir DIR` would, with no
//! listener and no store. A test drives it through the API as any user and
//! reads the events it published ([`EventSink`]) and the log records that
//! name a plugin ([`LogCapture`], a tracing layer the binary installs).
//!
//! This crate knows no Python: the bridge owns the interpreter and calls
//! back into [`ucs_pybridge::testing::TestServer`].

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;
use ucs_api::{Api, ApiError};
use ucs_core::{Core, Event, EventSink, NewUser, RegistrationId, Value};
use ucs_loader::{LoaderConfig, PluginConfigSource, PluginHost};
use ucs_pybridge::testing::{TestLogRecord, TestServer};

/// Why `ucs plugin test` could not run the tests at all.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// The directory under test is not a directory.
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    /// pytest could not run.
    #[error(transparent)]
    Pytest(#[from] ucs_pybridge::testing::PytestError),
}

/// Runs pytest over `dir` (plus `pytest_args`), each `ucs_server` loading
/// the plugins of `plugins_dir`; returns pytest's exit code (0 all passed,
/// 1 some failed, 5 none collected...).
pub fn run(dir: &Path, plugins_dir: &Path, pytest_args: &[String]) -> Result<i32, TestkitError> {
    for directory in [dir, plugins_dir] {
        if !directory.is_dir() {
            return Err(TestkitError::NotADirectory(directory.to_path_buf()));
        }
    }
    let plugins_dir = std::path::absolute(plugins_dir)
        .map_err(|_| TestkitError::NotADirectory(plugins_dir.to_path_buf()))?;
    let factory = move |settings: Value| -> Result<Arc<dyn TestServer>, String> {
        EngineServer::start(&plugins_dir, settings).map(|server| Arc::new(server) as _)
    };
    let mut args = vec![dir.display().to_string()];
    args.extend(pytest_args.iter().cloned());
    Ok(ucs_pybridge::testing::run_pytest(Arc::new(factory), &args)?)
}

/// The password of user 1 in every test server; nothing listens, so it
/// guards nothing, and tests never need it (calls open sessions directly).
const ADMIN_PASSWORD: &str = "ucs-testing-admin";

/// One throwaway server for one test.
pub struct EngineServer {
    api: Api,
    events: Arc<EventRecorder>,
    sink: RegistrationId,
    /// The first log record this server shows.
    logs_from: AtomicU64,
    /// Running until closed; `None` once closed.
    host: Mutex<Option<Arc<PluginHost>>>,
}

impl EngineServer {
    /// A server with user 1, `admin`, and the plugins of `plugins_dir`
    /// loaded, each with its entry of `settings` as `ucs.config`.
    pub fn start(plugins_dir: &Path, settings: Value) -> Result<Self, String> {
        let logs_from = AtomicU64::new(LogCapture::next_seq());
        let core = Arc::new(Core::default());
        core.directory()
            .ensure_admin(ADMIN_PASSWORD)
            .map_err(|err| format!("cannot create user 1: {err}"))?;
        let events = Arc::new(EventRecorder::default());
        let sink = core
            .events()
            .add_sink(Arc::clone(&events) as Arc<dyn EventSink>);
        let api = Api::new(core);
        let config = LoaderConfig {
            plugin_config: PluginConfigSource::new(move |name| {
                Ok(settings.get(name).cloned().unwrap_or_else(Value::empty_map))
            }),
            ..LoaderConfig::new(plugins_dir.to_path_buf())
        };
        let host = PluginHost::start(api.clone(), config).map_err(|err| err.to_string())?;
        Ok(EngineServer {
            api,
            events,
            sink,
            logs_from,
            host: Mutex::new(Some(host)),
        })
    }

    fn host(&self) -> MutexGuard<'_, Option<Arc<PluginHost>>> {
        self.host.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl TestServer for EngineServer {
    fn add_user(&self, user: NewUser) -> Result<i64, ApiError> {
        let added = self.api.core().directory().add(user)?;
        Ok(added.id)
    }

    fn call(&self, username: &str, method: &str, params: Vec<Value>) -> Result<Value, ApiError> {
        if self.host().is_none() {
            return Err(ApiError::Processing(
                "the test server was closed".to_owned(),
            ));
        }
        let core = self.api.core();
        let user = core
            .directory()
            .list()
            .into_iter()
            .find(|user| user.username == username)
            .ok_or_else(|| ApiError::NotFound(format!("no user called {username}")))?;
        // A session of its own per call, closed after it: nothing a call
        // does to sessions (a password change closes the others) can leave
        // a later call with a stale one.
        let sid = core.sessions().open(user.id)?;
        let result = self.api.call(&sid, method, params);
        let _ = core.sessions().close(&sid);
        result
    }

    fn events(&self) -> Vec<(String, Value)> {
        self.events.taken()
    }

    fn logs(&self) -> Vec<TestLogRecord> {
        LogCapture::since(self.logs_from.load(Ordering::Relaxed))
    }

    fn clear(&self) {
        self.events.clear();
        self.logs_from
            .store(LogCapture::next_seq(), Ordering::Relaxed);
    }

    fn close(&self) {
        // Taken out first: shutdown runs plugin code, never under a lock.
        let host = self.host().take();
        if let Some(host) = host {
            host.shutdown();
            self.api.core().events().remove_sink(self.sink);
        }
    }
}

impl Drop for EngineServer {
    fn drop(&mut self) {
        self.close();
    }
}

/// Every event committed, as `(name, data)`.
#[derive(Default)]
struct EventRecorder {
    events: Mutex<Vec<(String, Value)>>,
}

impl EventRecorder {
    fn lock(&self) -> MutexGuard<'_, Vec<(String, Value)>> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn taken(&self) -> Vec<(String, Value)> {
        self.lock().clone()
    }

    fn clear(&self) {
        self.lock().clear();
    }
}

impl EventSink for EventRecorder {
    fn deliver(&self, event: &Event) {
        self.lock().push((event.name().to_owned(), event.data()));
    }
}

/// How many log records are kept; older ones are dropped, so a test run
/// that logs without end cannot grow without end.
const KEPT_RECORDS: usize = 100_000;

/// Records kept for tests, numbered.
static RECORDS: Mutex<VecDeque<(u64, TestLogRecord)>> = Mutex::new(VecDeque::new());
/// The number the next record gets.
static NEXT_SEQ: AtomicU64 = AtomicU64::new(0);

/// A tracing layer that keeps every record naming a plugin (a `plugin`
/// field, or the target `ucs::plugin`) for [`TestServer::logs`]. The
/// binary adds it to its subscriber for `ucs plugin test`.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogCapture;

impl LogCapture {
    fn records() -> MutexGuard<'static, VecDeque<(u64, TestLogRecord)>> {
        RECORDS.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn next_seq() -> u64 {
        NEXT_SEQ.load(Ordering::SeqCst)
    }

    fn since(first: u64) -> Vec<TestLogRecord> {
        Self::records()
            .iter()
            .filter(|(seq, _)| *seq >= first)
            .map(|(_, record)| record.clone())
            .collect()
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for LogCapture {
    fn on_event(&self, event: &tracing::Event<'_>, _context: Context<'_, S>) {
        let metadata = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        if fields.plugin.is_none() && metadata.target() != "ucs::plugin" {
            return;
        }
        let record = TestLogRecord {
            level: metadata.level().to_string(),
            plugin: fields.plugin,
            target: metadata.target().to_owned(),
            message: fields.message,
        };
        let mut records = Self::records();
        // Numbered under the lock, so numbers and order agree.
        let seq = NEXT_SEQ.fetch_add(1, Ordering::SeqCst);
        if records.len() == KEPT_RECORDS {
            records.pop_front();
        }
        records.push_back((seq, record));
    }
}

/// The fields of one record that a test reads.
#[derive(Default)]
struct Fields {
    plugin: Option<String>,
    message: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "plugin" => self.plugin = Some(value.to_owned()),
            "message" => self.message = value.to_owned(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "plugin" => self.plugin = Some(format!("{value:?}")),
            "message" => self.message = format!("{value:?}"),
            _ => {}
        }
    }
}
