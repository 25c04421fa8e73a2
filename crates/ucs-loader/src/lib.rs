//! Plugin discovery and lifecycle (SPEC P1-P7, D1, L1-L4).
//!
//! The loader is bookkeeping only: which plugins exist, in which state, in
//! which order they loaded. Everything that runs Python is in
//! `ucs-pybridge`; the loader calls it without holding any lock of its own
//! (L5), and serialises operations on one plugin with per-name turns, so a
//! plugin that loads another from its constructor works and one that reloads
//! itself from its own constructor gets an error instead of a deadlock.
//!
//! # Layout
//! - this file: [`PluginHost`], the plugins of one server.
//! - [`check`]: `ucs plugin check`, one file's lifecycle step by step in a
//!   throwaway server.

pub mod check;
mod runtime;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak, mpsc};
use std::time::{Duration, Instant};

use ucs_api::plugins::NotAPluginFile;
use ucs_api::{Api, ApiError, Isolation, PluginControl, PluginInfo, PluginName, PluginState};
use ucs_core::turns::{TurnRefused, Turns};
use ucs_core::{AuditKind, AuditRecord, Owner, Value};
use ucs_host::HostExit;
pub use ucs_host::HostSettings;
pub use ucs_link::supervise::MemoryLimit;
pub use ucs_link::supervise::RestartPolicy;
use ucs_link::supervise::{RestartDecision, RestartIntensity};

use crate::runtime::{Runtime, Started, Version};

/// The plugin type stubs, as (file name, contents), for `ucs stubs`;
/// re-exported so the binary needs nothing from the Python crate.
pub use ucs_pybridge::STUBS;

/// Where plugins are and how long their `stop` and threads may take.
#[derive(Debug, Clone)]
pub struct LoaderConfig {
    /// The plugins directory (P1).
    pub plugins_dir: PathBuf,
    /// How long `stop()` may take before the plugin is reported stuck.
    pub stop_timeout: Duration,
    /// How long a `threading.Thread` plugin is joined after `stop` (L3).
    pub thread_join_timeout: Duration,
    /// The overall deadline for stopping every plugin at shutdown (L3).
    pub shutdown_deadline: Duration,
    /// Where plugins run and how their hosts are supervised (I1, I2).
    pub isolation: IsolationConfig,
    /// Each plugin's settings (`ucs.config`), asked for at every load.
    pub plugin_config: PluginConfigSource,
    /// The GIL switch interval of the server's interpreter, where
    /// in-process plugins run: how long a hook, callback or middleware waits
    /// at most for a plugin thread busy in Python to hand over the GIL
    /// (`ucs_pybridge::priority`). Hosts have their own,
    /// `isolation.hosts.python_switch_interval`.
    pub python_switch_interval: Duration,
}

/// Where a plugin's settings come from (issue 16 item 4): asked for its
/// name at every load, so a reload picks up what the operator changed; an
/// error fails that load with the message (the running version, if any,
/// stays, as for any failed reload). The default gives every plugin an
/// empty map.
#[derive(Clone)]
pub struct PluginConfigSource(Arc<SettingsOf>);

/// Reads one plugin's settings, by its name.
type SettingsOf = dyn Fn(&str) -> Result<Value, String> + Send + Sync;

impl PluginConfigSource {
    /// Settings from `source`, called with the plugin's name.
    pub fn new(source: impl Fn(&str) -> Result<Value, String> + Send + Sync + 'static) -> Self {
        PluginConfigSource(Arc::new(source))
    }

    /// The settings of `name` now.
    fn of(&self, name: &str) -> Result<Value, String> {
        (self.0)(name)
    }
}

impl Default for PluginConfigSource {
    fn default() -> Self {
        PluginConfigSource::new(|_| Ok(Value::empty_map()))
    }
}

impl std::fmt::Debug for PluginConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PluginConfigSource")
    }
}

/// Where plugins run (I1), chosen by the operator, and how plugin hosts are
/// started and restarted (I2).
#[derive(Debug, Clone)]
pub struct IsolationConfig {
    /// The mode of every plugin not named in `per_plugin`.
    pub default: Isolation,
    /// Modes by plugin name, over the default.
    pub per_plugin: BTreeMap<String, Isolation>,
    /// How hosts are started and limited.
    pub hosts: HostSettings,
    /// Memory limits by plugin name, over `hosts.memory` (I5): a plugin
    /// known to need more, or to be kept to less, than the rest.
    pub per_plugin_memory: BTreeMap<String, MemoryLimit>,
    /// How often a dead host is restarted before its plugin is left FAILED.
    pub restart: RestartPolicy,
}

impl IsolationConfig {
    /// Everything in-process, hosts (if a plugin is set to `process`) run
    /// as this very binary's `plugin-host` subcommand.
    pub fn in_process() -> Self {
        let program = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("ucs"));
        IsolationConfig {
            default: Isolation::InProcess,
            per_plugin: BTreeMap::new(),
            hosts: HostSettings::for_program(program),
            per_plugin_memory: BTreeMap::new(),
            restart: RestartPolicy::default(),
        }
    }

    /// The mode of the plugin `name`.
    pub fn mode_of(&self, name: &str) -> Isolation {
        self.per_plugin.get(name).copied().unwrap_or(self.default)
    }

    /// The host settings of the plugin `name`: `hosts` with its own memory
    /// limit, if it has one.
    pub fn hosts_of(&self, name: &str) -> std::borrow::Cow<'_, HostSettings> {
        match self.per_plugin_memory.get(name) {
            Some(memory) => std::borrow::Cow::Owned(HostSettings {
                memory: *memory,
                ..self.hosts.clone()
            }),
            None => std::borrow::Cow::Borrowed(&self.hosts),
        }
    }
}

impl LoaderConfig {
    /// The defaults of SPEC L3 for `plugins_dir`.
    pub fn new(plugins_dir: PathBuf) -> Self {
        LoaderConfig {
            plugins_dir,
            stop_timeout: Duration::from_secs(5),
            thread_join_timeout: Duration::from_secs(5),
            shutdown_deadline: Duration::from_secs(10),
            isolation: IsolationConfig::in_process(),
            plugin_config: PluginConfigSource::default(),
            python_switch_interval: ucs_pybridge::priority::DEFAULT_SWITCH_INTERVAL,
        }
    }
}

/// Why the plugin host could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// The plugins directory cannot be read.
    #[error("cannot read plugins directory {path}: {source}")]
    PluginsDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No thread could be started to load the plugins in the background.
    #[error("cannot start the plugin loading thread: {0}")]
    NoStartThread(#[source] std::io::Error),
}

/// Why a symbolic link in the plugins directory is not loaded, at start and
/// by `plugins.load` alike (issue 15 item 6).
const LINK_REFUSED: &str = "plugins load only from regular files in the plugins directory, \
     never through a symbolic link, which may lead out of it (D1)";

/// The log message that ends the loading of the plugins found at start,
/// for operators and for tests that wait for it (I4).
pub const START_UP_DONE: &str = "start-up loading done";

/// Locks a mutex whose data every holder leaves consistent, so a panic
/// elsewhere does not make it unusable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One plugin file the host has tried to load, in the state it is in. Each
/// state holds what it has and nothing else: only a running plugin has an
/// instance, a source and a load order, so "RUNNING without an instance"
/// cannot be written down.
enum PluginRecord {
    /// Loaded and started.
    Running(Running),
    /// Its instance was taken to be stopped (unload, reload, shutdown); it is
    /// listed as running until `stop` has returned.
    Stopping {
        /// The class of the version being stopped.
        class_name: String,
    },
    /// Unloaded.
    Stopped {
        /// The class of the version that ran.
        class_name: String,
        /// What went wrong while stopping (L2, L3); empty if nothing.
        error: String,
    },
    /// Import, constructor or `start` failed (L1), or its plugin host died
    /// (I2).
    Failed {
        /// The class name if known.
        class_name: String,
        /// The error with its traceback.
        error: String,
        /// Set when the running version's host died and a restart is
        /// scheduled: what to restart.
        restart: Option<PendingRestart>,
    },
    /// The file has no `UCS_PLUGIN` (P2): a helper module, not a plugin, so
    /// it is not listed even though its name passes the file filter.
    NotAPlugin,
    /// Found at start and not loaded yet, or being loaded for the first
    /// time (I4): listed STARTING, so a client that connects while a slow
    /// constructor runs sees why the plugin is not there yet.
    Starting,
}

/// What one version of a plugin is made of: the bytes of its file and the
/// settings it was given, both as they were when it loaded. A reload whose
/// new version fails, and a restart after a crash, bring back exactly this.
#[derive(Clone)]
struct Release {
    /// The file's bytes (Python decodes them, PEP 263).
    source: Arc<[u8]>,
    /// Its `ucs.config` (issue 16 item 4).
    config: Arc<Value>,
}

/// A restart the supervisor has scheduled for a plugin whose host died.
struct PendingRestart {
    /// The version that died.
    release: Release,
    /// Its load generation: a restart finding any other version (loaded by
    /// hand meanwhile) does nothing.
    generation: u64,
}

/// What a running plugin has.
struct Running {
    /// The live instance, here or in its host.
    runtime: Runtime,
    /// The class `UCS_PLUGIN` names.
    class_name: String,
    /// The version: what it registered is recorded under it.
    owner: Owner,
    /// What this version is made of, kept so a reload whose new version
    /// fails can bring exactly this one back.
    release: Release,
    /// When it loaded, for reverse-order shutdown (L3).
    load_order: u64,
    /// Why the last reload failed while this version kept running; empty if
    /// it did not.
    last_error: String,
}

impl PluginRecord {
    /// What `plugins.list` shows of it; `None` for a file that is no plugin.
    /// `mode` is where it would run, for a plugin not running now.
    fn info(&self, name: &str, path: &Path, mode: Isolation, restarts: u32) -> Option<PluginInfo> {
        let (mode, host_pid) = match self {
            PluginRecord::Running(running) => {
                (running.runtime.isolation(), running.runtime.host_pid())
            }
            _ => (mode, None),
        };
        let (class_name, state, error) = match self {
            PluginRecord::Running(running) => (
                running.class_name.as_str(),
                PluginState::Running,
                running.last_error.as_str(),
            ),
            PluginRecord::Stopping { class_name } => {
                (class_name.as_str(), PluginState::Running, "")
            }
            PluginRecord::Stopped { class_name, error } => {
                (class_name.as_str(), PluginState::Stopped, error.as_str())
            }
            PluginRecord::Failed {
                class_name, error, ..
            } => (class_name.as_str(), PluginState::Failed, error.as_str()),
            PluginRecord::Starting => ("", PluginState::Starting, ""),
            PluginRecord::NotAPlugin => return None,
        };
        Some(PluginInfo {
            name: name.to_owned(),
            class_name: class_name.to_owned(),
            state,
            error: error.to_owned(),
            path: path.to_string_lossy().into_owned(),
            isolation: mode,
            host_pid,
            restarts,
        })
    }
}

/// What the plugins directory holds, by file name (P1, D1).
struct PluginFiles {
    /// The plugin files, sorted by name.
    names: Vec<PluginName>,
    /// `*.py` files skipped because their stem is not an identifier (D1).
    misnamed: Vec<String>,
    /// `*.py` symbolic links, skipped: a link may lead out of the plugins
    /// directory, and no path ever does (D1).
    linked: Vec<String>,
}

/// Why one version of a plugin did not start.
enum VersionFailed {
    /// The file has no `UCS_PLUGIN` (P2).
    NotAPlugin,
    /// Import, constructor or `start` failed (L1).
    Failed {
        /// The class name if known.
        class_name: String,
        /// The error with its traceback.
        error: String,
    },
}

/// Owns every plugin of one server.
pub struct PluginHost {
    api: Api,
    config: LoaderConfig,
    /// Held only to read or update a record, never across Python.
    records: Mutex<BTreeMap<String, PluginRecord>>,
    /// One lifecycle operation per plugin at a time.
    turns: Turns<String>,
    next_load_order: AtomicU64,
    /// Restart intensity and count per plugin whose host died (I2).
    supervision: Mutex<HashMap<String, Supervision>>,
    /// Whether the plugins found at start are loaded yet (I4).
    start_up: Mutex<StartUp>,
    /// Set when shutdown begins: start-up loads nothing more.
    closing: AtomicBool,
    /// The plugin hosts still loading their plugin, by plugin name, with
    /// their process ids: shutdown kills them at once (issue 15 item 9), as
    /// a plugin that never finished starting has no `stop()` to wait for.
    loading_hosts: Mutex<BTreeMap<String, u32>>,
    /// This loader, for the callbacks of its plugin hosts.
    me: Weak<PluginHost>,
}

/// Whether the plugins found at start are all loaded (I4).
enum StartUp {
    /// Loaded, never started in the background, or already waited for.
    Done,
    /// The start-up thread was still loading them when the server began to
    /// serve; it sends (or hangs up) once done, so waiting on a finished
    /// one returns at once.
    Loading(mpsc::Receiver<()>),
}

/// The restart history of one plugin since it was last loaded by hand.
struct Supervision {
    /// OTP-style restart intensity.
    intensity: RestartIntensity,
    /// Restarts so far.
    restarts: u32,
}

impl PluginHost {
    /// Starts Python, wires `plugins.*` into `api` and loads every plugin in
    /// the directory in file-name order (P1). A plugin that fails is recorded
    /// FAILED and the others load regardless (L1). Returns when all have
    /// loaded; the server uses [`PluginHost::start_in_background`].
    pub fn start(api: Api, config: LoaderConfig) -> Result<Arc<PluginHost>, LoaderError> {
        let (host, names) = Self::prepare(api, config)?;
        host.load_at_start(names);
        Ok(host)
    }

    /// [`PluginHost::start`], with the loading on a thread of its own, and
    /// returns once it is done or after `wait`, whichever is first (I4): the
    /// server serves whatever a plugin's constructor does, and the plugins
    /// not loaded yet are listed STARTING until they are. Loading keeps the
    /// file-name order (P1, D2), so a slow plugin delays the ones after it.
    pub fn start_in_background(
        api: Api,
        config: LoaderConfig,
        wait: Duration,
    ) -> Result<Arc<PluginHost>, LoaderError> {
        let (host, names) = Self::prepare(api, config)?;
        {
            let mut records = host.records();
            for name in &names {
                records
                    .entry(name.to_string())
                    .or_insert(PluginRecord::Starting);
            }
        }
        let (loaded, done) = mpsc::channel();
        let loader = Arc::clone(&host);
        let spawned = std::thread::Builder::new()
            .name("ucs-plugin-start".to_owned())
            .spawn(move || {
                loader.load_at_start(names);
                // The receiver may be gone: nobody waits any more.
                let _ = loaded.send(());
            });
        if let Err(err) = spawned {
            return Err(LoaderError::NoStartThread(err));
        }
        match done.recv_timeout(wait) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let starting = host.names_starting();
                tracing::warn!("serving while plugins still start: {}", starting.join(", "));
                *lock(&host.start_up) = StartUp::Loading(done);
            }
        }
        Ok(host)
    }

    /// The host with `plugins.*` wired in and the plugin files found, none
    /// loaded yet.
    fn prepare(
        api: Api,
        config: LoaderConfig,
    ) -> Result<(Arc<PluginHost>, Vec<PluginName>), LoaderError> {
        ucs_pybridge::init();
        if let Err(err) = ucs_pybridge::priority::set_switch_interval(config.python_switch_interval)
        {
            tracing::warn!("the GIL switch interval stays CPython's: {err}");
        }
        let host = Arc::new_cyclic(|me| PluginHost {
            api,
            config,
            records: Mutex::new(BTreeMap::new()),
            turns: Turns::new(),
            next_load_order: AtomicU64::new(1),
            supervision: Mutex::new(HashMap::new()),
            start_up: Mutex::new(StartUp::Done),
            closing: AtomicBool::new(false),
            loading_hosts: Mutex::new(BTreeMap::new()),
            me: me.clone(),
        });
        let control: Weak<dyn PluginControl> = Arc::downgrade(&host) as Weak<dyn PluginControl>;
        host.api.set_plugin_control(control);
        let files = host.discover()?;
        for file in &files.misnamed {
            tracing::warn!("skipping {file}: a plugin file name must be a Python identifier");
        }
        for file in &files.linked {
            tracing::warn!("skipping {file}: {LINK_REFUSED}");
        }
        Ok((host, files.names))
    }

    /// Loads `names` in order, unless shutdown begins meanwhile; a plugin
    /// not reached is no longer listed STARTING.
    fn load_at_start(&self, names: Vec<PluginName>) {
        for name in names {
            if !self.closing.load(Ordering::SeqCst) {
                let loaded = self.load_audited(&name);
                self.api.core().deliver_deferred_events();
                match loaded {
                    Ok(info) => {
                        tracing::info!(plugin = %name, "plugin loaded: class {}", info.class_name)
                    }
                    Err(ApiError::NotFound(_)) => {}
                    Err(err) => tracing::debug!(plugin = %name, "not loaded at start: {err}"),
                }
            }
            // Gone before it was loaded, or never reached.
            let mut records = self.records();
            if matches!(records.get(name.as_str()), Some(PluginRecord::Starting)) {
                records.remove(name.as_str());
            }
        }
        let (mut running, mut failed) = (0, 0);
        for record in self.records().values() {
            match record {
                PluginRecord::Running(_) => running += 1,
                PluginRecord::Failed { .. } => failed += 1,
                _ => {}
            }
        }
        tracing::info!("{START_UP_DONE}: {running} running, {failed} failed");
    }

    /// The plugins listed STARTING, by name.
    /// Whether the start-up loading is over: every plugin found at start is
    /// running, failed or given up (for `/readyz`, issue 17 item 9). A
    /// reload by hand later does not make it false again.
    pub fn start_up_done(&self) -> bool {
        match &*lock(&self.start_up) {
            StartUp::Done => true,
            // Sent or hung up: the start-up thread is done either way.
            StartUp::Loading(done) => !matches!(done.try_recv(), Err(mpsc::TryRecvError::Empty)),
        }
    }

    /// The plugins listed STARTING now, by name.
    pub fn names_starting(&self) -> Vec<String> {
        self.records()
            .iter()
            .filter(|(_, record)| matches!(record, PluginRecord::Starting))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The plugin files of the directory (P1): `*.py` except `__init__.py`
    /// and dotfiles, not recursive, sorted by name.
    fn discover(&self) -> Result<PluginFiles, LoaderError> {
        let dir = &self.config.plugins_dir;
        let entries = std::fs::read_dir(dir).map_err(|source| LoaderError::PluginsDir {
            path: dir.clone(),
            source,
        })?;
        let mut misnamed = Vec::new();
        let mut undecodable = Vec::new();
        let mut linked = Vec::new();
        let mut names: Vec<PluginName> = entries
            .filter_map(Result::ok)
            .filter(|entry| match entry.file_type() {
                Ok(kind) if kind.is_symlink() => {
                    linked.push(entry.file_name().to_string_lossy().into_owned());
                    false
                }
                Ok(kind) => kind.is_file(),
                Err(_) => false,
            })
            .filter_map(|entry| match entry.file_name().into_string() {
                Ok(file) => Some(file),
                // Not UTF-8, so not an identifier either; said, not dropped
                // in silence (issue 15 item 16).
                Err(file) => {
                    let file = file.to_string_lossy();
                    if file.ends_with(".py") {
                        undecodable.push(file.into_owned());
                    }
                    None
                }
            })
            .filter_map(|file| match PluginName::from_file_name(&file) {
                Ok(name) => Some(name),
                Err(NotAPluginFile::NotPluginFile) => None,
                Err(NotAPluginFile::NotAnIdentifier) => {
                    misnamed.push(file);
                    None
                }
            })
            .collect();
        names.sort();
        misnamed.append(&mut undecodable);
        misnamed.sort();
        linked.retain(|file| file.ends_with(".py"));
        linked.sort();
        Ok(PluginFiles {
            names,
            misnamed,
            linked,
        })
    }

    fn records(&self) -> MutexGuard<'_, BTreeMap<String, PluginRecord>> {
        // Records are replaced whole; a panic cannot leave one half-written.
        lock(&self.records)
    }

    fn path_of(&self, name: &PluginName) -> PathBuf {
        self.config.plugins_dir.join(format!("{name}.py"))
    }

    fn take_turn(&self, name: &PluginName) -> Result<ucs_core::turns::Turn<'_, String>, ApiError> {
        self.turns.take(name.to_string()).map_err(|refused| {
            ApiError::Processing(match refused {
                TurnRefused::Reentrant => format!(
                    "plugin '{name}' is being loaded or unloaded by this very call chain \
                     (a plugin cannot reload or unload itself from its constructor, start or stop)"
                ),
                TurnRefused::WouldDeadlock => format!(
                    "loading or unloading plugin '{name}' now would deadlock with another plugin \
                     operation waiting on this one"
                ),
            })
        })
    }

    /// [`Self::load_named`], recorded in the audit trail as a load or a
    /// reload with its outcome, once no plugin turn is held (the audit event
    /// may run callbacks that load plugins).
    fn load_audited(&self, name: &PluginName) -> Result<PluginInfo, ApiError> {
        let was_running = matches!(
            self.records().get(name.as_str()),
            Some(PluginRecord::Running(_))
        );
        let result = self.load_named(name);
        // Only plugins are audited: a helper module or a missing file is not.
        let known = self.info_of(name);
        if let Some(info) = known {
            let kind = if was_running {
                AuditKind::PluginReload
            } else {
                AuditKind::PluginLoad
            };
            self.audit(kind, &info, &result);
        }
        result
    }

    fn audit(&self, kind: AuditKind, info: &PluginInfo, result: &Result<PluginInfo, ApiError>) {
        let mut outcome = vec![("state", Value::from(info.state.as_str()))];
        if let Err(err) = result {
            outcome.push(("error", Value::from(err.to_string())));
        }
        let outcome = Value::Map(
            outcome
                .into_iter()
                .map(|(key, value)| (ucs_core::MapKey::from(key), value))
                .collect(),
        );
        self.api.core().record_audit(AuditRecord::now(
            kind,
            &info.name,
            Value::record([("plugin", Value::from(info.name.as_str()))]),
            outcome,
        ));
    }

    /// Loads `name`, first stopping the running version if there is one (P6).
    ///
    /// A reload is transactional: if the new version fails to import,
    /// construct or start, the previous version is brought back up from the
    /// source that was running, the caller gets the new version's error, and
    /// `plugins.list` shows the plugin RUNNING with the failed attempt as its
    /// last error.
    fn load_named(&self, name: &PluginName) -> Result<PluginInfo, ApiError> {
        let path = self.path_of(name);
        if std::fs::symlink_metadata(&path).is_ok_and(|found| found.file_type().is_symlink()) {
            return Err(ApiError::Processing(format!(
                "{} is a symbolic link: {LINK_REFUSED}",
                path.display()
            )));
        }
        if !path.is_file() {
            return Err(ApiError::NotFound(format!(
                "plugin file {} not found in {}",
                ucs_core::echoed(&format!("{name}.py")),
                self.config.plugins_dir.display()
            )));
        }
        let source: Arc<[u8]> = std::fs::read(&path)
            .map_err(|err| {
                ApiError::Processing(format!("cannot read plugin file {}: {err}", path.display()))
            })?
            .into();
        let _turn = self.take_turn(name)?;
        // Settings that cannot be read fail the load before anything stops:
        // a running version keeps running with the settings it has.
        let config = match self.config.plugin_config.of(name.as_str()) {
            Ok(config) => Arc::new(config),
            Err(err) => return Err(self.settings_unreadable(name, &err)),
        };
        let release = Release { source, config };
        let previous_release = match self.take_running(name) {
            Some(running) => {
                tracing::info!(plugin = %name, "reloading: stopping the running version");
                let release = running.release.clone();
                self.stop_instance(name, running);
                Some(release)
            }
            None => {
                // Every outcome below replaces this record (I4).
                self.records()
                    .insert(name.to_string(), PluginRecord::Starting);
                None
            }
        };
        // Loaded by hand: a fresh restart history (I2).
        self.supervision().remove(name.as_str());
        let attempt = self.start_version(name, &path, &release, 0);
        let (error, class_name) = match attempt {
            Ok(info) => return Ok(info),
            Err(VersionFailed::NotAPlugin) => {
                let message = format!(
                    "{} has no UCS_PLUGIN variable, so it is not a plugin",
                    path.display()
                );
                match previous_release {
                    None => {
                        self.records()
                            .insert(name.to_string(), PluginRecord::NotAPlugin);
                        tracing::debug!(plugin = %name, "{message}; skipped");
                        return Err(ApiError::Processing(message));
                    }
                    Some(_) => (message, String::new()),
                }
            }
            Err(VersionFailed::Failed { class_name, error }) => (error, class_name),
        };
        tracing::error!(plugin = %name, "plugin failed to load: {error}");
        if let Some(previous_release) = previous_release {
            match self.start_version(name, &path, &previous_release, 0) {
                Ok(_) => {
                    tracing::warn!(
                        plugin = %name,
                        "reload failed; the previous version was brought back and keeps running"
                    );
                    if let Some(PluginRecord::Running(running)) =
                        self.records().get_mut(name.as_str())
                    {
                        running.last_error = format!("reload failed: {error}");
                    }
                    return Err(ApiError::Processing(format!(
                        "plugin '{name}' failed to reload; the previous version keeps running: {error}"
                    )));
                }
                Err(restore) => {
                    let restore_error = match restore {
                        VersionFailed::NotAPlugin => "it is no longer a plugin".to_owned(),
                        VersionFailed::Failed { error, .. } => error,
                    };
                    tracing::error!(
                        plugin = %name,
                        "the previous version failed to come back up too: {restore_error}"
                    );
                }
            }
        }
        self.records().insert(
            name.to_string(),
            PluginRecord::Failed {
                class_name,
                error: error.clone(),
                restart: None,
            },
        );
        Err(ApiError::Processing(format!(
            "plugin '{name}' failed to load: {error}"
        )))
    }

    /// The answer to a load whose settings cannot be read (issue 16 item
    /// 4): a running version keeps running and shows the failure as its
    /// last error; otherwise the plugin is FAILED with it.
    fn settings_unreadable(&self, name: &PluginName, err: &str) -> ApiError {
        let error = format!("its settings cannot be read: {err}");
        tracing::error!(plugin = %name, "plugin failed to load: {error}");
        let mut records = self.records();
        if let Some(PluginRecord::Running(running)) = records.get_mut(name.as_str()) {
            running.last_error = format!("reload failed: {error}");
            return ApiError::Processing(format!(
                "plugin '{name}' failed to reload; the running version keeps running: {error}"
            ));
        }
        records.insert(
            name.to_string(),
            PluginRecord::Failed {
                class_name: String::new(),
                error: error.clone(),
                restart: None,
            },
        );
        ApiError::Processing(format!("plugin '{name}' failed to load: {error}"))
    }

    /// Imports, constructs and starts one version of a plugin from `release`
    /// where the operator said it runs (I1) and records it RUNNING; on
    /// failure removes what it registered (L1).
    fn start_version(
        &self,
        name: &PluginName,
        path: &Path,
        release: &Release,
        restarts: u32,
    ) -> Result<PluginInfo, VersionFailed> {
        // Every load is a new owner: a late call of an older version (a
        // stuck `stop()` finishing after the reload) cannot touch what this
        // one registers.
        let owner = Owner::versioned(
            name.as_str(),
            self.next_load_order.fetch_add(1, Ordering::Relaxed),
        );
        let version = Version {
            api: &self.api,
            owner: &owner,
            path,
            source: &release.source,
            plugins_dir: &self.config.plugins_dir,
            config: &release.config,
        };
        let mode = self.config.isolation.mode_of(name.as_str());
        let started = match mode {
            Isolation::InProcess => version.start_in_process(),
            Isolation::Process => {
                let loader = self.me.clone();
                let (exited_name, generation) = (name.clone(), owner.generation());
                let hosts = self.config.isolation.hosts_of(name.as_str());
                version.start_hosted(
                    &hosts,
                    |loading| self.host_loading(name, loading),
                    move |exit| {
                        if let Some(loader) = loader.upgrade() {
                            loader.host_exited(&exited_name, generation, exit);
                        }
                    },
                )
            }
        };
        let failed = |class_name: String, error: String| {
            // L1: what it registered before failing goes, quietly: the
            // failure itself is the news. Retired first, so a thread it
            // started cannot register anything afterwards.
            owner.retire();
            for leftover in self.api.remove_owned_by(&owner) {
                tracing::debug!(plugin = %name, "removed after failed load: {leftover}");
            }
            if mode == Isolation::InProcess {
                ucs_pybridge::forget_module(name.as_str());
            }
            VersionFailed::Failed { class_name, error }
        };
        match started {
            Started::Running {
                runtime,
                class_name,
            } => {
                let record = PluginRecord::Running(Running {
                    runtime,
                    class_name,
                    owner: owner.clone(),
                    release: release.clone(),
                    load_order: owner.generation(),
                    last_error: String::new(),
                });
                let info = record.info(name.as_str(), path, mode, restarts);
                self.records().insert(name.to_string(), record);
                info.ok_or(VersionFailed::NotAPlugin)
            }
            Started::NotAPlugin => Err(VersionFailed::NotAPlugin),
            Started::Failed { class_name, error } => Err(failed(class_name, error)),
        }
    }

    /// Stops a running version (P5), removes what it left registered with a
    /// warning each (P7, L4), and records any `stop` failure (L2, L3).
    fn stop_instance(&self, name: &PluginName, running: Running) {
        self.stop_instance_within(
            name,
            running,
            self.config.stop_timeout,
            self.config.thread_join_timeout,
        );
    }

    fn stop_instance_within(
        &self,
        name: &PluginName,
        running: Running,
        stop_timeout: Duration,
        join_timeout: Duration,
    ) {
        let Running {
            runtime,
            class_name,
            owner,
            ..
        } = running;
        let in_process = runtime.isolation() == Isolation::InProcess;
        let report = runtime.stop(stop_timeout, join_timeout);
        // From here on this version registers nothing more: a `stop()` or
        // thread still running later can neither add a registration that no
        // unload would remove nor, being an old owner, remove the next
        // version's.
        owner.retire();
        let mut errors = Vec::new();
        if let Some(error) = report.stop_error() {
            tracing::error!(plugin = %name, "stop() raised; unloading anyway: {error}");
            errors.push(format!("stop() raised: {error}"));
        }
        if let Some(crash) = report.crash() {
            tracing::error!(plugin = %name, "stop() killed its plugin host; unloading anyway: {crash}");
            errors.push(format!("stop() killed its plugin host: {crash}"));
        }
        if let Some(stuck) = report.stuck() {
            tracing::warn!(plugin = %name, "plugin is stuck: {stuck}");
            errors.push(format!("stuck: {stuck}"));
        }
        for leftover in self.api.remove_owned_by(&owner) {
            tracing::warn!(
                plugin = %name,
                "plugin left {leftover} registered after stop(); removed it"
            );
        }
        if in_process {
            ucs_pybridge::forget_module(name.as_str());
        }
        self.records().insert(
            name.to_string(),
            PluginRecord::Stopped {
                class_name,
                error: errors.join("\n"),
            },
        );
    }

    /// Records that the host `pid` of `name` is loading its plugin, or, with
    /// `None`, that it is done. A host that begins to load once shutdown has
    /// begun is killed at once: shutdown sets `closing` before it reads this
    /// table, and this checks `closing` after writing it, both under the
    /// table's lock, so one of the two sees the other.
    fn host_loading(&self, name: &PluginName, loading: Option<u32>) {
        let mut hosts = lock(&self.loading_hosts);
        match loading {
            Some(pid) => {
                hosts.insert(name.to_string(), pid);
                if self.closing.load(Ordering::SeqCst) {
                    kill_loading_host(name.as_str(), pid);
                }
            }
            None => {
                hosts.remove(name.as_str());
            }
        }
    }

    fn supervision(&self) -> MutexGuard<'_, HashMap<String, Supervision>> {
        lock(&self.supervision)
    }

    /// Runs `change` on the restart history of `name`, a fresh one if it
    /// has none yet.
    fn supervised<T>(&self, name: &PluginName, change: impl FnOnce(&mut Supervision) -> T) -> T {
        let mut supervision = self.supervision();
        let entry = supervision
            .entry(name.to_string())
            .or_insert_with(|| Supervision {
                intensity: RestartIntensity::new(self.config.isolation.restart),
                restarts: 0,
            });
        change(entry)
    }

    /// How often `name`'s host was restarted since it was loaded by hand.
    fn restarts_of(&self, name: &str) -> u32 {
        self.supervision()
            .get(name)
            .map_or(0, |supervision| supervision.restarts)
    }

    /// A plugin host ended. If it ran the running version of `name` and the
    /// server did not ask for it, the plugin is FAILED with the cause, the
    /// crash is audited, and a restart is scheduled with backoff unless the
    /// restart intensity is used up (I2). Its registrations went already,
    /// the moment its link closed. Runs on the host's keeper thread.
    fn host_exited(&self, name: &PluginName, generation: u64, exit: HostExit) {
        if exit.expected {
            return;
        }
        let running = {
            let mut records = self.records();
            match records.get(name.as_str()) {
                Some(PluginRecord::Running(running))
                    if running.owner.generation() == generation => {}
                // A load in progress reports its own failure; an older
                // version's host is of no concern any more.
                _ => return,
            }
            let Some(PluginRecord::Running(running)) = records.remove(name.as_str()) else {
                return;
            };
            records.insert(
                name.to_string(),
                PluginRecord::Failed {
                    class_name: running.class_name.clone(),
                    error: exit.error.clone(),
                    restart: None,
                },
            );
            running
        };
        running.owner.retire();
        self.api.remove_owned_by(&running.owner);
        tracing::error!(plugin = %name, "{}", exit.error);
        if let Some(info) = self.info_of(name) {
            self.audit(
                AuditKind::PluginCrash,
                &info,
                &Err(ApiError::Internal(exit.error.clone())),
            );
        }
        let decision = self.supervised(name, |entry| entry.intensity.on_exit(Instant::now()));
        match decision {
            RestartDecision::Restart { after } => {
                if let Some(PluginRecord::Failed { restart, .. }) =
                    self.records().get_mut(name.as_str())
                {
                    *restart = Some(PendingRestart {
                        release: running.release.clone(),
                        generation,
                    });
                }
                tracing::warn!(plugin = %name, "restarting its plugin host in {after:?}");
                let loader = self.me.clone();
                let restarted = name.clone();
                let scheduled = std::thread::Builder::new()
                    .name("ucs-restart".to_owned())
                    .spawn(move || {
                        std::thread::sleep(after);
                        if let Some(loader) = loader.upgrade() {
                            loader.restart(&restarted, generation);
                        }
                    });
                if let Err(err) = scheduled {
                    tracing::error!(plugin = %name, "cannot schedule its restart: {err}");
                }
            }
            RestartDecision::GiveUp { restarts, window } => {
                let gave_up = format!(
                    "{}; its host died {restarts} times within {window:?}, so it is left FAILED \
                     until loaded by hand",
                    exit.error
                );
                tracing::error!(plugin = %name, "{gave_up}");
                if let Some(PluginRecord::Failed { error, .. }) =
                    self.records().get_mut(name.as_str())
                {
                    *error = gave_up;
                }
            }
        }
        self.api.core().deliver_deferred_events();
        // The dead version's handle goes last, off every lock: dropping a
        // host reaps what is left of its process group.
        drop(running);
    }

    /// Starts again the version of `name` whose host died, unless it was
    /// loaded, unloaded or restarted by hand meanwhile (I2).
    fn restart(&self, name: &PluginName, generation: u64) {
        // A host restarted during shutdown would outlive the stops (L3).
        if self.closing.load(Ordering::SeqCst) {
            return;
        }
        let Ok(_turn) = self.take_turn(name) else {
            return;
        };
        let pending = match self.records().get_mut(name.as_str()) {
            Some(PluginRecord::Failed { restart, .. }) => match restart.take() {
                Some(pending) if pending.generation == generation => pending,
                other => {
                    *restart = other;
                    return;
                }
            },
            _ => return,
        };
        let restarts = self.supervised(name, |entry| {
            entry.restarts += 1;
            entry.restarts
        });
        let path = self.path_of(name);
        let result = match self.start_version(name, &path, &pending.release, restarts) {
            Ok(info) => {
                tracing::warn!(
                    plugin = %name,
                    "plugin host restarted (restart {restarts}); the plugin serves again"
                );
                Ok(info)
            }
            Err(failed) => {
                let (class_name, error) = match failed {
                    VersionFailed::NotAPlugin => {
                        (String::new(), "it is no longer a plugin".to_owned())
                    }
                    VersionFailed::Failed { class_name, error } => (class_name, error),
                };
                let error = format!("restart failed: {error}");
                tracing::error!(plugin = %name, "{error}");
                self.records().insert(
                    name.to_string(),
                    PluginRecord::Failed {
                        class_name,
                        error: error.clone(),
                        restart: None,
                    },
                );
                Err(ApiError::Processing(error))
            }
        };
        if let Some(info) = self.info_of(name) {
            self.audit(AuditKind::PluginRestart, &info, &result);
        }
        self.api.core().deliver_deferred_events();
    }

    /// Takes the running version of `name` out of its record to stop it,
    /// leaving it listed as running until it has stopped; `None` if it is
    /// not running (or another caller took it first).
    fn take_running(&self, name: &PluginName) -> Option<Running> {
        let mut records = self.records();
        let record = records.get_mut(name.as_str())?;
        let PluginRecord::Running(running) = record else {
            return None;
        };
        let class_name = running.class_name.clone();
        match std::mem::replace(record, PluginRecord::Stopping { class_name }) {
            PluginRecord::Running(running) => Some(running),
            // Matched as running just above, under the same lock.
            other => {
                *record = other;
                None
            }
        }
    }

    /// What `plugins.list` shows of `name`, if it is a plugin the host knows.
    fn info_of(&self, name: &PluginName) -> Option<PluginInfo> {
        self.records().get(name.as_str()).and_then(|record| {
            record.info(
                name.as_str(),
                &self.path_of(name),
                self.config.isolation.mode_of(name.as_str()),
                self.restarts_of(name.as_str()),
            )
        })
    }

    /// Stops and unloads `name` (P6); a plugin that is not loaded is a
    /// processing error (D1).
    fn unload_named(&self, name: &PluginName) -> Result<PluginInfo, ApiError> {
        let _turn = self.take_turn(name)?;
        let Some(running) = self.take_running(name) else {
            return Err(ApiError::Processing(format!(
                "plugin '{name}' is not loaded"
            )));
        };
        self.stop_instance(name, running);
        tracing::info!(plugin = %name, "plugin unloaded");
        self.info_of(name)
            .ok_or_else(|| ApiError::Internal(format!("plugin '{name}' vanished while unloading")))
    }

    /// Stops every running plugin in reverse load order within the shutdown
    /// deadline (L3). Plugins not reached in time are reported; nothing waits
    /// past the deadline. Safe to call more than once.
    pub fn shutdown(&self) {
        self.shutdown_by(Instant::now() + self.config.shutdown_deadline);
    }

    /// [`PluginHost::shutdown`] that ends by `deadline`: `ucs serve` counts
    /// the deadline from the signal, so the time spent ending gRPC calls in
    /// flight is part of it (L3). Plugin hosts still loading their plugin
    /// are killed at once (issue 15 item 9): that plugin never finished
    /// starting, so there is no `stop()` to call, and waiting for its load
    /// would only spend the deadline.
    pub fn shutdown_by(&self, deadline: Instant) {
        self.closing.store(true, Ordering::SeqCst);
        for (name, &pid) in lock(&self.loading_hosts).iter() {
            kill_loading_host(name, pid);
        }
        let start_up = std::mem::replace(&mut *lock(&self.start_up), StartUp::Done);
        if let StartUp::Loading(done) = start_up {
            // The plugin being loaded now is stopped with the others once
            // it is up; one whose constructor outlasts the deadline is not.
            let remaining = deadline.saturating_duration_since(Instant::now());
            if let Err(mpsc::RecvTimeoutError::Timeout) = done.recv_timeout(remaining) {
                tracing::warn!(
                    "shutdown deadline passed while plugins still start: {}",
                    self.names_starting().join(", ")
                );
            }
        }
        let mut running: Vec<(u64, String)> = self
            .records()
            .iter()
            .filter_map(|(name, record)| match record {
                PluginRecord::Running(running) => Some((running.load_order, name.clone())),
                _ => None,
            })
            .collect();
        running.sort_unstable_by(|a, b| b.cmp(a));
        for (_, name) in running {
            let Ok(name) = PluginName::parse(&name) else {
                continue;
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            let Some(running) = self.take_running(&name) else {
                continue;
            };
            if remaining.is_zero() {
                tracing::warn!(plugin = %name, "shutdown deadline passed; not stopping this plugin");
                continue;
            }
            let (stop_timeout, join_timeout) = within_deadline(
                remaining,
                self.config.stop_timeout,
                self.config.thread_join_timeout,
            );
            self.stop_instance_within(&name, running, stop_timeout, join_timeout);
            tracing::info!(plugin = %name, "plugin stopped");
        }
    }

    /// The plugins not stopped yet, each with its state (`running`,
    /// `starting`, `stopping`), for the shutdown watchdog's last words
    /// (L3, I7). It never waits: a lock that is held (by a thread that can
    /// no longer run, at the deadline) gives `None`.
    pub fn not_stopped_now(&self) -> Option<Vec<String>> {
        let records = match self.records.try_lock() {
            Ok(records) => records,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Some(
            records
                .iter()
                .filter_map(|(name, record)| {
                    let state = match record {
                        PluginRecord::Running(_) => "running",
                        PluginRecord::Starting => "starting",
                        PluginRecord::Stopping { .. } => "stopping",
                        _ => return None,
                    };
                    Some(format!("{name} ({state})"))
                })
                .collect(),
        )
    }

    /// The plugins directory.
    pub fn plugins_dir(&self) -> &Path {
        &self.config.plugins_dir
    }
}

/// Kills the host of a plugin still loading, and whatever it started (its
/// process group), at shutdown; a host already gone is fine.
fn kill_loading_host(name: &str, pid: u32) {
    tracing::warn!(plugin = %name, pid, "shutting down: killing its plugin host, still loading");
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// The stop and join timeouts shrunk, in proportion, so that together they
/// fit in `remaining`: one plugin may wait for both, one after the other, and
/// shutdown must end by its deadline (L3).
fn within_deadline(
    remaining: Duration,
    stop_timeout: Duration,
    join_timeout: Duration,
) -> (Duration, Duration) {
    let total = stop_timeout + join_timeout;
    if total <= remaining {
        return (stop_timeout, join_timeout);
    }
    let stop = remaining.mul_f64(stop_timeout.as_secs_f64() / total.as_secs_f64());
    (stop, remaining.saturating_sub(stop))
}

impl PluginControl for PluginHost {
    /// The plugins loaded, failed or stopped, and every other plugin file
    /// of the directory as STOPPED with no error: one the server has not
    /// tried to load yet, e.g. dropped in after start. A file found to have
    /// no `UCS_PLUGIN` is a helper module, not a plugin, and is left out.
    fn list(&self) -> Vec<PluginInfo> {
        // The directory is read before the records are locked: no lock
        // across I/O. A directory that cannot be read lists what is known.
        let files = match self.discover() {
            Ok(files) => files.names,
            Err(err) => {
                tracing::warn!("plugins.list lists only known plugins: {err}");
                Vec::new()
            }
        };
        let records = self.records();
        let mut listed: BTreeMap<String, PluginInfo> = records
            .iter()
            .filter_map(|(name, record)| {
                let path = self.config.plugins_dir.join(format!("{name}.py"));
                let mode = self.config.isolation.mode_of(name);
                Some((
                    name.clone(),
                    record.info(name, &path, mode, self.restarts_of(name))?,
                ))
            })
            .collect();
        for name in files {
            if !records.contains_key(name.as_str()) {
                listed.insert(
                    name.to_string(),
                    PluginInfo {
                        name: name.to_string(),
                        class_name: String::new(),
                        state: PluginState::Stopped,
                        error: String::new(),
                        path: self.path_of(&name).to_string_lossy().into_owned(),
                        isolation: self.config.isolation.mode_of(name.as_str()),
                        host_pid: None,
                        restarts: 0,
                    },
                );
            }
        }
        listed.into_values().collect()
    }

    fn load(&self, name: &PluginName) -> Result<PluginInfo, ApiError> {
        let result = self.load_audited(name);
        // What the plugin's constructor changed while its turn was held.
        self.api.core().deliver_deferred_events();
        let info = result?;
        tracing::info!(plugin = %name, "plugin loaded: class {}", info.class_name);
        Ok(info)
    }

    fn unload(&self, name: &PluginName) -> Result<PluginInfo, ApiError> {
        let result = self.unload_named(name);
        self.api.core().deliver_deferred_events();
        if let Ok(info) = &result {
            self.audit(AuditKind::PluginUnload, info, &result);
        }
        result
    }
}

/// Call from each runtime thread as it starts, so a thread that may run
/// Python keeps one Python thread state for its whole life.
pub fn python_thread_started() {
    ucs_pybridge::thread_state::park();
}

/// Call from each runtime thread as it stops.
pub fn python_thread_stopping() {
    ucs_pybridge::thread_state::unpark();
}
