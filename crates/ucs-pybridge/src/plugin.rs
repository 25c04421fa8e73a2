//! The Python half of a plugin's lifecycle (SPEC P2-P5, L1-L3, D1): import a
//! file into a fresh module, instantiate `UCS_PLUGIN`, call `start` and
//! `stop`, join a Thread plugin. The loader does the bookkeeping and never
//! touches Python itself.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyType};
use std::sync::Arc;

use ucs_core::Owner;

use crate::convert::type_name;
use crate::errors::format_traceback;
use crate::modules::BUILTIN_MODULES;
use crate::port::ServerPort;
use crate::ucs_object::new_ucs_object;

/// Set on every module the loader imports, to tell it from modules that a
/// plugin name would shadow (D1).
const PLUGIN_MARKER: &str = "__ucs_plugin__";

/// A running plugin instance.
pub struct PluginInstance {
    /// The plugin object `UCS_PLUGIN` named, constructed with its `ucs`.
    instance: Py<PyAny>,
    /// The class name, for `plugins.list`.
    pub class_name: String,
    /// The version of the plugin its `ucs` object registers as.
    owner: Owner,
}

/// What importing and starting a plugin file gave.
pub enum LoadOutcome {
    /// Constructed and started (P3, P4).
    Started(PluginInstance),
    /// The file has no `UCS_PLUGIN` (P2).
    NoPluginVariable,
    /// Import, `UCS_PLUGIN`, constructor or `start` failed (L1).
    Failed {
        /// The class name if `UCS_PLUGIN` was readable.
        class_name: String,
        /// What went wrong, with the traceback.
        error: String,
    },
}

/// What stopping a plugin gave (P5, L2, L3). Whether `stop` raised and how
/// the thread ended are known only if `stop` returned, so they live in that
/// variant alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReport {
    /// `stop` returned (or the plugin has none) and a Thread plugin was
    /// joined.
    Returned {
        /// `Err` with the traceback if `stop` raised (L2).
        stop: Result<(), String>,
        /// How a Thread plugin's thread ended.
        thread: ThreadEnd,
    },
    /// `stop` had not returned after this long: the plugin is unloaded anyway
    /// and its code may still be running (L3).
    TimedOut(Duration),
    /// `stop` could not be run at all: why.
    NotRun(String),
    /// The process `stop` ran in died before it answered (a process-isolated
    /// plugin whose `stop` segfaulted, say): how it ended. The plugin is
    /// unloaded anyway; there is nothing left of it to be stuck.
    Crashed(String),
}

/// How a plugin's own thread ended after `stop` (L3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadEnd {
    /// The plugin is not a `threading.Thread`.
    NotAThread,
    /// Its thread ended, never ran, or is the thread that asked for the stop
    /// (it ends once that call returns).
    Ended,
    /// Its thread was still alive after being joined for this long.
    StillRunning(Duration),
}

impl StopReport {
    /// The traceback of a `stop` that raised (L2).
    pub fn stop_error(&self) -> Option<&str> {
        match self {
            StopReport::Returned {
                stop: Err(error), ..
            } => Some(error),
            _ => None,
        }
    }

    /// How the process `stop` ran in ended, if it died running it.
    pub fn crash(&self) -> Option<&str> {
        match self {
            StopReport::Crashed(cause) => Some(cause),
            _ => None,
        }
    }

    /// Why the plugin is stuck, if it is: `stop` did not return or could not
    /// run, or its thread did not end, in time (L3).
    pub fn stuck(&self) -> Option<String> {
        match self {
            StopReport::Returned {
                thread: ThreadEnd::StillRunning(join_timeout),
                ..
            } => Some(format!(
                "its thread did not end within {join_timeout:?} after stop(); it keeps running"
            )),
            StopReport::Returned { .. } => None,
            StopReport::TimedOut(stop_timeout) => Some(format!(
                "stop() did not return within {stop_timeout:?}; the plugin is unloaded anyway and \
                 its code may still be running"
            )),
            StopReport::NotRun(reason) => Some(reason.clone()),
            StopReport::Crashed(_) => None,
        }
    }
}

/// Which step of loading a plugin failed, so `ucs plugin check` can say
/// exactly what to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadStep {
    /// Importing the file (syntax error, failing import, shadowed name).
    Import,
    /// `UCS_PLUGIN` is not a str naming a class of the module (P3).
    PluginVariable,
    /// Calling the class with the `ucs` object (P3).
    Constructor,
}

/// What importing a plugin file and constructing its class gave; `start`
/// is a separate step ([`start_plugin`]) so a checker can time it.
pub enum Constructed {
    /// Imported and constructed; `start` not called yet.
    Instance(PluginInstance),
    /// The file has no `UCS_PLUGIN` (P2).
    NoPluginVariable,
    /// A step before `start` failed (L1).
    Failed {
        /// The step that failed.
        step: LoadStep,
        /// The class name if `UCS_PLUGIN` was readable.
        class_name: String,
        /// What went wrong, with the traceback.
        error: String,
    },
}

/// Executes `source` (the bytes of `path` as the loader read it, or as they
/// were when an earlier version ran; Python decodes them as it would the
/// file, UTF-8 or as a PEP 263 `coding:` line says) into a fresh module
/// `name`, then
/// constructs and starts the plugin class with a `ucs` object on `port`
/// (in-process or in a plugin host, I1).
/// The loader keeps the source of the running version in memory, so a
/// failed reload can bring exactly that version back.
pub fn load_plugin_source(
    port: &Arc<dyn ServerPort>,
    name: &str,
    path: &Path,
    source: &[u8],
    plugins_dir: &Path,
) -> LoadOutcome {
    started(construct(port, name, path, Some(source), plugins_dir))
}

fn started(constructed: Constructed) -> LoadOutcome {
    match constructed {
        Constructed::Instance(instance) => match start_plugin(&instance) {
            Ok(()) => LoadOutcome::Started(instance),
            Err(error) => LoadOutcome::Failed {
                class_name: instance.class_name.clone(),
                error,
            },
        },
        Constructed::NoPluginVariable => LoadOutcome::NoPluginVariable,
        Constructed::Failed {
            class_name, error, ..
        } => LoadOutcome::Failed { class_name, error },
    }
}

/// Imports `path` as module `name` into a fresh module object and constructs
/// the class `UCS_PLUGIN` names with a `ucs` object on `port` (P2, P3).
pub fn construct_plugin(
    port: &Arc<dyn ServerPort>,
    name: &str,
    path: &Path,
    plugins_dir: &Path,
) -> Constructed {
    construct(port, name, path, None, plugins_dir)
}

fn construct(
    port: &Arc<dyn ServerPort>,
    name: &str,
    path: &Path,
    source: Option<&[u8]>,
    plugins_dir: &Path,
) -> Constructed {
    crate::init();
    Python::attach(|py| {
        let failed = |step: LoadStep, class_name: &str, error: String| Constructed::Failed {
            step,
            class_name: class_name.to_owned(),
            error,
        };
        if let Err(err) = add_to_sys_path(py, plugins_dir) {
            return failed(LoadStep::Import, "", format_traceback(py, &err));
        }
        if let Some(reason) = shadowed_module(py, name, plugins_dir) {
            return failed(LoadStep::Import, "", reason);
        }
        let module = match import_fresh(py, name, path, source) {
            Ok(module) => module,
            Err(err) => return failed(LoadStep::Import, "", format_traceback(py, &err)),
        };
        let Ok(class_name) = module.getattr("UCS_PLUGIN") else {
            return Constructed::NoPluginVariable;
        };
        let Ok(class_name) = class_name.cast::<PyString>().map(|name| name.to_string()) else {
            return failed(
                LoadStep::PluginVariable,
                "",
                format!(
                    "UCS_PLUGIN must be a str naming a class, got {}",
                    type_name(&class_name)
                ),
            );
        };
        let class = match module.getattr(class_name.as_str()) {
            Ok(class) if class.cast::<PyType>().is_ok() => class,
            Ok(other) => {
                return failed(
                    LoadStep::PluginVariable,
                    &class_name,
                    format!(
                        "UCS_PLUGIN names '{class_name}', which is a {}, not a class",
                        type_name(&other)
                    ),
                );
            }
            Err(_) => {
                return failed(
                    LoadStep::PluginVariable,
                    &class_name,
                    format!(
                        "UCS_PLUGIN names class '{class_name}', which the module does not define"
                    ),
                );
            }
        };
        match new_ucs_object(py, Arc::clone(port)).and_then(|ucs| class.call1((ucs,))) {
            Ok(instance) => Constructed::Instance(PluginInstance {
                instance: instance.unbind(),
                class_name,
                owner: port.owner().clone(),
            }),
            Err(err) => failed(
                LoadStep::Constructor,
                &class_name,
                format_traceback(py, &err),
            ),
        }
    })
}

/// Calls the instance's `start` if it has one (P4); the error is the
/// traceback.
pub fn start_plugin(plugin: &PluginInstance) -> Result<(), String> {
    Python::attach(|py| {
        let instance = plugin.instance.bind(py);
        match instance.getattr("start") {
            Ok(start) => start
                .call0()
                .map(drop)
                .map_err(|err| format_traceback(py, &err)),
            Err(_) => Ok(()),
        }
    })
}

impl PluginInstance {
    /// Another handle to the same Python object, so a checker can call
    /// `start` on one thread and still stop the plugin from another if
    /// `start` never returns.
    pub fn clone_ref(&self) -> PluginInstance {
        Python::attach(|py| PluginInstance {
            instance: self.instance.clone_ref(py),
            class_name: self.class_name.clone(),
            owner: self.owner.clone(),
        })
    }

    /// The version of the plugin this instance registers as: what its
    /// unload removes (L4) and retires.
    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// Whether the instance has a method `name` (`start`, `stop`), for a
    /// checker's report.
    pub fn has_method(&self, name: &str) -> bool {
        Python::attach(|py| {
            self.instance
                .bind(py)
                .getattr(name)
                .is_ok_and(|method| method.is_callable())
        })
    }
}

/// Appends (never prepends: D1) the plugins directory to `sys.path`, so a
/// plugin's helper modules import and the standard library stays first.
fn add_to_sys_path(py: Python<'_>, plugins_dir: &Path) -> PyResult<()> {
    let sys_path = py.import("sys")?.getattr("path")?;
    let dir = plugins_dir.to_string_lossy();
    if !sys_path.contains(dir.as_ref())? {
        sys_path.call_method1("append", (dir.as_ref(),))?;
    }
    Ok(())
}

/// Why `name` may not be a plugin name, if it would shadow a built-in module,
/// a standard-library module or another module already imported (D1).
fn shadowed_module(py: Python<'_>, name: &str, plugins_dir: &Path) -> Option<String> {
    if BUILTIN_MODULES.contains(&name) {
        return Some(format!(
            "plugin file '{name}.py' would shadow the server's built-in module '{name}'; rename it"
        ));
    }
    let sys = py.import("sys").ok()?;
    let in_set = |attribute: &str| {
        sys.getattr(attribute)
            .and_then(|names| names.contains(name))
            .unwrap_or(false)
    };
    if in_set("stdlib_module_names") || in_set("builtin_module_names") {
        return Some(format!(
            "plugin file '{name}.py' would shadow the standard-library module '{name}'; rename it"
        ));
    }
    let existing = sys.getattr("modules").ok()?.get_item(name).ok()?;
    let origin = existing
        .getattr("__file__")
        .and_then(|file| file.extract::<String>())
        .unwrap_or_default();
    // A module some plugins directory loaded before (an earlier version of
    // this plugin, or a helper it imported) is not shadowed by a new version.
    let loaded_as_plugin = existing.hasattr(PLUGIN_MARKER).unwrap_or(false);
    let from_plugins_dir = Path::new(&origin).parent() == Some(plugins_dir);
    (!loaded_as_plugin && !from_plugins_dir).then(|| {
        format!("plugin file '{name}.py' would shadow the already imported module '{name}' ({origin}); rename it")
    })
}

/// Executes `path` (or `source`, compiled as if read from `path`, so
/// tracebacks name the file) into a new module object registered as `name`,
/// so a reload never sees the previous version's globals.
fn import_fresh<'py>(
    py: Python<'py>,
    name: &str,
    path: &Path,
    source: Option<&[u8]>,
) -> PyResult<Bound<'py, PyAny>> {
    let util = py.import("importlib.util")?;
    let sys_modules = py.import("sys")?.getattr("modules")?;
    let sys_modules = sys_modules.cast::<PyDict>()?;
    let spec = util.call_method1(
        "spec_from_file_location",
        (name, path.to_string_lossy().as_ref()),
    )?;
    let module = util.call_method1("module_from_spec", (&spec,))?;
    module.setattr(PLUGIN_MARKER, true)?;
    sys_modules.set_item(name, &module)?;
    let executed = match source {
        None => spec
            .getattr("loader")?
            .call_method1("exec_module", (&module,))
            .map(drop),
        Some(source) => {
            let builtins = py.import("builtins")?;
            // Bytes, not str: `compile` then decodes them as the import
            // system decodes a file (PEP 263), and a file that is not valid
            // in its encoding is a SyntaxError naming the line.
            let source = pyo3::types::PyBytes::new(py, source);
            builtins
                .call_method1("compile", (source, path.to_string_lossy().as_ref(), "exec"))
                .and_then(|code| builtins.call_method1("exec", (code, module.getattr("__dict__")?)))
                .map(drop)
        }
    };
    if let Err(err) = executed {
        sys_modules.del_item(name).ok();
        return Err(err);
    }
    Ok(module)
}

/// Removes the module `name` from `sys.modules` (on unload), so nothing keeps
/// the old version alive and the next load starts fresh.
///
/// Only a module the loader imported goes: a plugin that failed because its
/// name shadows a built-in or standard-library module (D1) must not take that
/// module out of `sys.modules` with it.
pub fn forget_module(name: &str) {
    Python::attach(|py| {
        if let Ok(modules) = py.import("sys").and_then(|sys| sys.getattr("modules"))
            && let Ok(module) = modules.get_item(name)
            && module.hasattr(PLUGIN_MARKER).unwrap_or(false)
        {
            modules.del_item(name).ok();
        }
    });
}

/// Calls `stop` (P5) and joins a `threading.Thread` plugin (L3), on a thread
/// of its own, waiting at most `stop_timeout` for `stop` to return and then
/// at most `join_timeout` for the thread: a `stop` that never returns is
/// given up after `stop_timeout`, as its message says (issue 15 item 16).
///
/// Must be called without the GIL held.
pub fn stop_plugin(
    plugin: PluginInstance,
    stop_timeout: Duration,
    join_timeout: Duration,
) -> StopReport {
    // A plugin that unloads or reloads itself from its own thread: that
    // thread waits for this call, so joining it would only wait out the
    // timeout and then report a healthy plugin as stuck.
    let join_timeout = if called_from_plugin_thread(&plugin) {
        None
    } else {
        Some(join_timeout)
    };
    let (stopped, stop_returned) = mpsc::channel();
    let (done, report) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("ucs-plugin-stop".to_owned())
        .spawn(move || {
            let result = Python::attach(|py| {
                stop_and_join(py, &plugin, join_timeout, || {
                    // The waiter may have given up already; nothing to tell then.
                    let _ = stopped.send(());
                })
            });
            let _ = done.send(result);
            Python::attach(|_| drop(plugin));
        });
    if let Err(err) = spawned {
        return StopReport::NotRun(format!(
            "could not start a thread to stop the plugin: {err}"
        ));
    }
    // A stop thread that ended without saying `stop` returned (it could
    // not attach) has sent its report instead; read it below.
    if let Err(mpsc::RecvTimeoutError::Timeout) = stop_returned.recv_timeout(stop_timeout) {
        return StopReport::TimedOut(stop_timeout);
    }
    // The join's own bound plus a margin for taking the GIL back after it.
    let join_wait = join_timeout.unwrap_or_default() + Duration::from_millis(500);
    match report.recv_timeout(join_wait) {
        Ok(report) => report,
        Err(_) => StopReport::TimedOut(stop_timeout),
    }
}

/// Whether the calling thread is the plugin's own `threading.Thread`.
fn called_from_plugin_thread(plugin: &PluginInstance) -> bool {
    Python::attach(|py| {
        py.import("threading")
            .and_then(|threading| threading.call_method0("current_thread"))
            .is_ok_and(|current| current.is(plugin.instance.bind(py)))
    })
}

/// Calls `stop`, then joins a Thread plugin for `join_timeout`; `None` means
/// the caller is that thread, which ends after the call returns.
fn stop_and_join(
    py: Python<'_>,
    plugin: &PluginInstance,
    join_timeout: Option<Duration>,
    stop_returned: impl FnOnce(),
) -> StopReport {
    let instance = plugin.instance.bind(py);
    let stop = match instance.getattr("stop") {
        Ok(stop) => stop
            .call0()
            .map(drop)
            .map_err(|err| format_traceback(py, &err)),
        Err(_) => Ok(()),
    };
    stop_returned();
    let is_thread = py
        .import("threading")
        .and_then(|threading| threading.getattr("Thread"))
        .and_then(|thread| instance.is_instance(&thread))
        .unwrap_or(false);
    let is_alive = || {
        instance
            .call_method0("is_alive")
            .and_then(|alive| alive.is_truthy())
            .unwrap_or(false)
    };
    let thread = match join_timeout {
        _ if !is_thread => ThreadEnd::NotAThread,
        Some(join_timeout) if is_alive() => {
            // Thread.join waits with the GIL released.
            let _ = instance.call_method1("join", (join_timeout.as_secs_f64(),));
            if is_alive() {
                ThreadEnd::StillRunning(join_timeout)
            } else {
                ThreadEnd::Ended
            }
        }
        _ => ThreadEnd::Ended,
    };
    StopReport::Returned { stop, thread }
}
