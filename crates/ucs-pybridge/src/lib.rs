//! Embedded CPython: the modules plugins import, the `ucs` object, and the
//! adapters that put Python callables behind the core's hooks and the API's
//! middleware. The only crate of the workspace that depends on pyo3.
//!
//! # Layout
//! - [`modules`]: `constants`, `events`, `error`, `agents` (SPEC section 6).
//! - [`ucs_object`]: the per-plugin `ucs` object.
//! - [`adapters`]: Python callables as hooks, callbacks, middleware.
//! - [`deadline`]: the watchdog that interrupts an in-process call past its
//!   deadline (I3).
//! - [`plugin`]: importing, starting and stopping one plugin file.
//! - [`port`]: the server as a plugin's `ucs` object reaches it, in-process
//!   or from a plugin host (I1).
//! - [`convert`]: [`ucs_core::Value`] to Python and back (D4).
//! - [`errors`]: the `error` module and its mapping to API errors (M3).
//! - [`thread_state`]: keeping a Python thread state per server thread.
//! - [`fork`]: `os.fork()` in a plugin raises; it would copy the server.
//! - [`priority`]: a plugin host's own threads at a lower CPU priority
//!   than the ones serving the server's calls, and the GIL switch interval
//!   of the interpreters plugins run in.
//! - [`home`]: the interpreter's home, pinned rather than found on `PATH`,
//!   and the virtual environment plugins import packages from.
//! - [`testing`]: pytest in this interpreter with the `ucs_server` fixture
//!   (`python/ucs_testing.py`), over a [`testing::TestServer`] the caller
//!   makes (`ucs plugin test`).
//!
//! GIL rule (L5): the GIL is taken only to run Python, and every path from
//! Python back into the server detaches first.

pub mod adapters;
pub mod convert;
pub mod deadline;
pub mod errors;
pub mod fork;
pub mod home;
pub mod modules;
mod output;
pub mod plugin;
pub mod port;
pub mod priority;
pub mod testing;
pub mod thread_state;
pub mod ucs_object;

pub use plugin::{
    Constructed, LoadOutcome, LoadStep, PluginInstance, StopReport, ThreadEnd, construct_plugin,
    forget_module, load_plugin_source, start_plugin, stop_plugin,
};
pub use port::{InProcessPort, ServerPort};

/// Type stubs for the modules plugins import and for the `ucs` object, as
/// (file name, contents), for editors and mypy (`ucs stubs --out DIR`).
pub const STUBS: &[(&str, &str)] = &[
    ("constants.pyi", include_str!("../stubs/constants.pyi")),
    ("events.pyi", include_str!("../stubs/events.pyi")),
    ("error.pyi", include_str!("../stubs/error.pyi")),
    ("agents.pyi", include_str!("../stubs/agents.pyi")),
    ("ucs.pyi", include_str!("../stubs/ucs.pyi")),
    // The pytest kit: its real source, so what mypy and editors read is
    // what runs, and the stub of the native half under it.
    ("ucs_testing.py", testing::UCS_TESTING),
    (
        "_ucs_testing.pyi",
        include_str!("../stubs/_ucs_testing.pyi"),
    ),
];

/// Starts the interpreter once per process, without taking over the
/// process's signal handlers, and installs the built-in modules.
pub fn init() {
    static READY: std::sync::Once = std::sync::Once::new();
    // `Once` is safe here: it is never waited on while attached, because the
    // first caller attaches only inside and every later caller returns at
    // once after it.
    READY.call_once(|| {
        home::pin_before_start();
        pyo3::Python::initialize();
        pyo3::Python::attach(|py| {
            if let Err(err) = modules::install(py) {
                tracing::error!(
                    "cannot install the plugin modules: {}",
                    errors::format_traceback(py, &err)
                );
            }
            if let Err(err) = output::install(py) {
                tracing::error!(
                    "cannot route plugin output to the log: {}",
                    errors::format_traceback(py, &err)
                );
            }
        });
    });
}

/// The version of the libpython this process loaded, e.g. `3.11.2`: which
/// one the dynamic linker found, not the one the build was configured for,
/// so `ucs --version` shows what actually runs plugins. Needs no
/// initialised interpreter.
pub fn loaded_python_version() -> String {
    // SAFETY: Py_GetVersion returns a pointer to a static NUL-terminated
    // string of libpython; it may be called before Py_Initialize.
    let full = unsafe { std::ffi::CStr::from_ptr(pyo3::ffi::Py_GetVersion()) };
    let full = full.to_string_lossy();
    full.split_whitespace()
        .next()
        .unwrap_or("unknown")
        .to_owned()
}
