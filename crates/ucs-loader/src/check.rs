//! `ucs plugin check`: one plugin file run through its whole lifecycle in a
//! throwaway server, step by step, reporting what each step did.
//!
//! The throwaway server is a memory-only [`Core`], an [`Api`] and a
//! [`PluginHost`] over an empty temporary directory, with the author's file
//! run from where it is, so the plugin sees exactly what it sees in
//! production (its `ucs` object,
//! every API method, middleware chains, `plugins.*`) and nothing is stored
//! or served. Every step that runs plugin code is bounded by a timeout: a
//! checker that hangs on the very plugin it should diagnose is useless.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use ucs_api::plugins::NotAPluginFile;
use ucs_api::{Api, PluginName};
use ucs_core::{Core, Owner, RegistrationInfo, Value};
use ucs_pybridge::{Constructed, LoadStep, StopReport, ThreadEnd};

use crate::{LoaderConfig, PluginHost};

/// How long each step of a check may take.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    /// Importing the file and constructing the class; generous, because an
    /// import of a large library is legitimately slow.
    pub construct_timeout: Duration,
    /// `start` past this is reported as blocking (P4 says it must not block).
    pub start_timeout: Duration,
    /// How long `stop()` may take, as in the server (L3).
    pub stop_timeout: Duration,
    /// How long a Thread plugin is joined after `stop`, as in the server (L3).
    pub thread_join_timeout: Duration,
}

impl Default for CheckConfig {
    /// The server's own stop and join timeouts, so "clean" here means clean
    /// there, and 2 s for `start`: far longer than a non-blocking start needs.
    fn default() -> Self {
        CheckConfig {
            construct_timeout: Duration::from_secs(30),
            start_timeout: Duration::from_secs(2),
            stop_timeout: Duration::from_secs(5),
            thread_join_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a file could not be checked at all (as opposed to a finding).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The file is missing or unreadable: a usage error.
    #[error("cannot read {path}: {source}")]
    File {
        /// The file as given.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The throwaway server could not be set up.
    #[error("cannot set up a throwaway server: {0}")]
    Setup(String),
}

/// What one lifecycle step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// It ran and returned.
    Ran,
    /// The plugin has no such method (`start` and `stop` are optional).
    Absent,
    /// It raised or failed: the message, with the traceback.
    Failed(String),
    /// It had not returned after this long.
    TimedOut(Duration),
    /// An earlier step failed, so this one never ran.
    NotReached,
}

/// Whether a `threading.Thread` plugin ended after `stop` (L3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadCheck {
    /// The plugin is not a Thread.
    NotAThread,
    /// Its thread ended (or never ran) after `stop`.
    Ended,
    /// Its thread was still alive after the join timeout.
    StillRunning,
    /// Not known: `stop` never ran or never returned.
    Unknown,
}

/// How bad a finding is. Both make `ucs plugin check` exit 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The plugin does not work as loaded (or is not a plugin at all).
    Error,
    /// It works, but breaks a rule the server enforces around it.
    Warning,
}

/// One thing the author should fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong, and the rule it breaks.
    pub message: String,
}

/// Everything a check saw of one file.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// The file as given.
    pub file: PathBuf,
    /// The plugin name (the file's stem), if it is one (D1).
    pub plugin: Option<String>,
    /// The class `UCS_PLUGIN` names, once read.
    pub class_name: Option<String>,
    /// Importing the file (and the name checks of D1).
    pub import: Step,
    /// Finding `UCS_PLUGIN` and the class it names (P2, P3).
    pub plugin_variable: Step,
    /// Calling the class with `ucs` (P3).
    pub constructor: Step,
    /// `start()` (P4).
    pub start: Step,
    /// `stop()` (P5).
    pub stop: Step,
    /// For a Thread plugin, whether it ended after `stop` (L3).
    pub thread: ThreadCheck,
    /// What the plugin had registered once started.
    pub registered: Vec<RegistrationInfo>,
    /// What was still registered after `stop` (and the thread join): what
    /// the server would remove with a warning on unload (P7, L4).
    pub left_registered: Vec<RegistrationInfo>,
}

impl CheckReport {
    fn new(file: &Path) -> Self {
        CheckReport {
            file: file.to_path_buf(),
            plugin: None,
            class_name: None,
            import: Step::NotReached,
            plugin_variable: Step::NotReached,
            constructor: Step::NotReached,
            start: Step::NotReached,
            stop: Step::NotReached,
            thread: ThreadCheck::Unknown,
            registered: Vec::new(),
            left_registered: Vec::new(),
        }
    }

    /// What the author should fix, in lifecycle order.
    pub fn findings(&self) -> Vec<Finding> {
        let error = |message: String| Finding {
            severity: Severity::Error,
            message,
        };
        let warning = |message: String| Finding {
            severity: Severity::Warning,
            message,
        };
        let mut findings = Vec::new();
        let steps = [
            ("import", &self.import),
            ("UCS_PLUGIN", &self.plugin_variable),
            ("constructor", &self.constructor),
            ("start()", &self.start),
            ("stop()", &self.stop),
        ];
        for (name, step) in steps {
            match step {
                Step::Ran | Step::Absent | Step::NotReached => {}
                Step::Failed(message) => findings.push(error(format!("{name} failed: {message}"))),
                Step::TimedOut(after) if name == "start()" => findings.push(warning(format!(
                    "start() did not return within {after:?}: start must not block (P4); \
                     do long work in a thread (subclass threading.Thread)"
                ))),
                Step::TimedOut(after) => {
                    findings.push(error(format!("{name} did not return within {after:?}")))
                }
            }
        }
        if self.thread == ThreadCheck::StillRunning {
            findings.push(error(
                "the plugin's thread did not end after stop() (L3): make run() return \
                 once stop() was called"
                    .to_owned(),
            ));
        }
        for leak in &self.left_registered {
            findings.push(warning(format!(
                "stop() left {leak} registered; unregister it in stop() (P7)"
            )));
        }
        findings
    }
}

/// What the loading thread reports, step by step.
enum Progress {
    /// Import and constructor done; a second handle to the instance if any.
    Constructed(Constructed),
    /// `start` returned.
    Started(Result<(), String>),
}

/// Checks one plugin file in a throwaway server of its own.
///
/// Each file gets its own temporary plugins directory, so files with the
/// same name from different directories do not meet.
pub fn check_plugin_file(file: &Path, config: &CheckConfig) -> Result<CheckReport, CheckError> {
    // Readable, or a usage error naming it before anything starts.
    std::fs::File::open(file).map_err(|source| CheckError::File {
        path: file.to_path_buf(),
        source,
    })?;
    let mut report = CheckReport::new(file);
    let file_name = file
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match PluginName::from_file_name(&file_name) {
        Ok(name) => name,
        Err(NotAPluginFile::NotPluginFile) => {
            report.import = Step::Failed(format!(
                "'{file_name}' is not a plugin file: the server loads only *.py files other \
                 than __init__.py (P1)"
            ));
            return Ok(report);
        }
        Err(NotAPluginFile::NotAnIdentifier) => {
            report.import = Step::Failed(format!(
                "'{file_name}' is not a Python identifier followed by .py; the server skips \
                 it (D1): rename it"
            ));
            return Ok(report);
        }
    };
    report.plugin = Some(name.to_string());

    // The loader runs over an empty temporary directory, so nothing else
    // loads by itself; the plugin is then driven step by step from the
    // author's own file, with its own directory on `sys.path` (as the
    // plugins directory is in the server), so a helper module beside it
    // imports as in the server and every traceback names the author's
    // files, not a copy (issue 16 item 6).
    let empty_dir = tempfile::Builder::new()
        .prefix("ucs-plugin-check-")
        .tempdir()
        .map_err(|err| CheckError::Setup(format!("no temporary directory: {err}")))?;
    let api = Api::new(Arc::new(Core::default()));
    let host = PluginHost::start(
        api.clone(),
        LoaderConfig::new(empty_dir.path().to_path_buf()),
    )
    .map_err(|err| CheckError::Setup(err.to_string()))?;
    let file = std::path::absolute(file).map_err(|source| CheckError::File {
        path: file.to_path_buf(),
        source,
    })?;
    let own_dir = file
        .parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);

    run_lifecycle(&api, &name, &file, &own_dir, config, &mut report);
    ucs_pybridge::forget_module(name.as_str());
    drop(host);
    Ok(report)
}

/// load → inspect → stop and join → inspect, filling `report`.
fn run_lifecycle(
    api: &Api,
    name: &PluginName,
    path: &Path,
    plugins_dir: &Path,
    config: &CheckConfig,
    report: &mut CheckReport,
) {
    let owner = Owner::new(name.as_str());
    let (progress, steps) = mpsc::channel();
    let loader = {
        let (api, owner, name) = (api.clone(), owner.clone(), name.to_string());
        let (path, plugins_dir) = (path.to_path_buf(), plugins_dir.to_path_buf());
        move || {
            let constructed = {
                let port: Arc<dyn ucs_pybridge::ServerPort> = ucs_pybridge::InProcessPort::new(
                    api.clone(),
                    owner.clone(),
                    Value::empty_map(),
                );
                ucs_pybridge::construct_plugin(&port, &name, &path, &plugins_dir)
            };
            let Constructed::Instance(instance) = constructed else {
                let _ = progress.send(Progress::Constructed(constructed));
                return;
            };
            let _ = progress.send(Progress::Constructed(Constructed::Instance(
                instance.clone_ref(),
            )));
            let started = ucs_pybridge::start_plugin(&instance);
            // The checker may have stopped waiting: a blocking start.
            let _ = progress.send(Progress::Started(started));
        }
    };
    // A thread of its own, so a constructor or start that never returns
    // costs the check a timeout, not the whole run.
    if let Err(err) = std::thread::Builder::new()
        .name("ucs-plugin-check".to_owned())
        .spawn(loader)
    {
        report.import = Step::Failed(format!("cannot start a thread to load the plugin: {err}"));
        return;
    }

    let instance = match steps.recv_timeout(config.construct_timeout) {
        Ok(Progress::Constructed(Constructed::Instance(instance))) => instance,
        Ok(Progress::Constructed(Constructed::NoPluginVariable)) => {
            report.import = Step::Ran;
            report.plugin_variable = Step::Failed(
                "the module has no UCS_PLUGIN variable, so the server skips it (P2)".to_owned(),
            );
            return;
        }
        Ok(Progress::Constructed(Constructed::Failed {
            step,
            class_name,
            error,
        })) => {
            report.class_name = (!class_name.is_empty()).then_some(class_name);
            let failed = Step::Failed(error);
            match step {
                LoadStep::Import => report.import = failed,
                LoadStep::PluginVariable => {
                    report.import = Step::Ran;
                    report.plugin_variable = failed;
                }
                LoadStep::Constructor => {
                    report.import = Step::Ran;
                    report.plugin_variable = Step::Ran;
                    report.constructor = failed;
                }
            }
            // What a failed constructor registered, the server removes (L1).
            report.registered = registrations_of(api, &owner);
            api.remove_owned_by(&owner);
            return;
        }
        Ok(Progress::Started(_)) | Err(_) => {
            report.import = Step::TimedOut(config.construct_timeout);
            return;
        }
    };
    report.import = Step::Ran;
    report.plugin_variable = Step::Ran;
    report.constructor = Step::Ran;
    report.class_name = Some(instance.class_name.clone());

    report.start = if !instance.has_method("start") {
        Step::Absent
    } else {
        match steps.recv_timeout(config.start_timeout) {
            Ok(Progress::Started(Ok(()))) => Step::Ran,
            Ok(Progress::Started(Err(error))) => Step::Failed(error),
            Ok(Progress::Constructed(_)) | Err(_) => Step::TimedOut(config.start_timeout),
        }
    };
    report.registered = registrations_of(api, &owner);
    if matches!(report.start, Step::Failed(_)) {
        // The server does not stop a plugin whose start failed; it removes
        // what it registered (L1).
        api.remove_owned_by(&owner);
        return;
    }

    let has_stop = instance.has_method("stop");
    let stopped =
        ucs_pybridge::stop_plugin(instance, config.stop_timeout, config.thread_join_timeout);
    (report.stop, report.thread) = match stopped {
        StopReport::Returned { stop, thread } => (
            match stop {
                Err(error) => Step::Failed(error),
                Ok(()) if has_stop => Step::Ran,
                Ok(()) => Step::Absent,
            },
            match thread {
                ThreadEnd::NotAThread => ThreadCheck::NotAThread,
                ThreadEnd::Ended => ThreadCheck::Ended,
                ThreadEnd::StillRunning(_) => ThreadCheck::StillRunning,
            },
        ),
        StopReport::TimedOut(after) => (Step::TimedOut(after), ThreadCheck::Unknown),
        StopReport::NotRun(reason) => (Step::Failed(reason), ThreadCheck::Unknown),
        StopReport::Crashed(cause) => (
            Step::Failed(format!("stop() killed its plugin host: {cause}")),
            ThreadCheck::Unknown,
        ),
    };
    // Inspected after the join, as unload does: a thread that unregisters
    // on its way out has not leaked.
    report.left_registered = registrations_of(api, &owner);
    api.remove_owned_by(&owner);
}

/// Everything `owner` has registered now, without removing anything.
fn registrations_of(api: &Api, owner: &Owner) -> Vec<RegistrationInfo> {
    let mut found = api.registrations();
    found.retain(|registration| registration.owner == *owner);
    found
}
