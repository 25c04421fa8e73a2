//! pytest on the real engine (issue 16 item 5): the Python half of
//! `ucs plugin test`.
//!
//! `ucs plugin test DIR` runs pytest inside this process's interpreter, so a
//! plugin under test is imported, called and stopped by the very code that
//! runs it in production, and a test reads what it did through the same
//! API. This module gives pytest the `ucs_testing` plugin (the `ucs_server`
//! fixture and its helpers, `python/ucs_testing.py`) over `_ucs_testing`,
//! whose `Server` is a [`TestServer`] the caller makes: the throwaway server
//! itself (core, API, loader) lives in `ucs-testkit`, which knows no Python,
//! as this crate knows no loader.

use std::ffi::CString;
use std::sync::{Arc, OnceLock};

use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyModule, PyTuple};
use ucs_api::ApiError;
use ucs_core::Value;
use ucs_core::users::NewUser;

use crate::convert::{py_to_value, value_to_py};
use crate::errors::{api_error_to_py, format_traceback};

/// One throwaway server, as a test drives it. Every method may block and
/// run plugin code: the bridge calls them detached from the interpreter.
pub trait TestServer: Send + Sync {
    /// Adds a user straight to the directory (no middleware runs) and
    /// returns its id.
    fn add_user(&self, user: NewUser) -> Result<i64, ApiError>;
    /// Calls `method` as the user `username`, through its middleware.
    fn call(&self, username: &str, method: &str, params: Vec<Value>) -> Result<Value, ApiError>;
    /// Every event committed since the server started or was last
    /// [`TestServer::clear`]ed: its name and data.
    fn events(&self) -> Vec<(String, Value)>;
    /// Every log record naming a plugin since then, oldest first.
    fn logs(&self) -> Vec<TestLogRecord>;
    /// Forgets the events and log records seen so far.
    fn clear(&self);
    /// Stops every plugin, in reverse load order, as the server does at
    /// shutdown. Later calls fail; a second close does nothing.
    fn close(&self);
}

/// A log record as a test sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestLogRecord {
    /// `TRACE`, `DEBUG`, `INFO`, `WARN` or `ERROR`.
    pub level: String,
    /// The plugin it names.
    pub plugin: Option<String>,
    /// Who wrote it: `ucs::plugin` for the plugin's own lines (its
    /// `ucs.log`, `logging` and uncaught thread exceptions), a server module
    /// for what the server says about it (a failed hook, an overrun).
    pub target: String,
    /// The text.
    pub message: String,
}

/// Makes a server whose plugins get `settings` (plugin name to its
/// `ucs.config` mapping).
pub type TestServerFactory =
    dyn Fn(Value) -> Result<Arc<dyn TestServer>, String> + Send + Sync + 'static;

/// The factory `_ucs_testing.Server(...)` calls; set once by [`run_pytest`].
static FACTORY: OnceLock<Arc<TestServerFactory>> = OnceLock::new();

/// Why pytest could not run at all (a test failing is an exit code).
#[derive(Debug, thiserror::Error)]
pub enum PytestError {
    /// pytest is not importable: not installed in the venv given.
    #[error(
        "pytest cannot be imported ({0}); install it into a virtual environment made with this \
         Python and pass it with --python-venv, e.g. `python3.11 -m venv .venv && \
         .venv/bin/pip install pytest && ucs plugin test --python-venv .venv DIR`"
    )]
    NoPytest(String),
    /// `run_pytest` was called a second time in this process.
    #[error("pytest already ran in this process")]
    AlreadyRan,
    /// Setting up the fixture module, or pytest itself, failed.
    #[error("{0}")]
    Python(String),
}

/// `_ucs_testing.Server`: a [`TestServer`] for Python.
#[pyclass(name = "Server", module = "_ucs_testing", frozen)]
struct PyTestServer {
    server: Arc<dyn TestServer>,
}

#[pymethods]
impl PyTestServer {
    /// Starts a server with the plugins of the directory under test;
    /// `settings` maps plugin names to their `ucs.config`.
    #[new]
    #[pyo3(signature = (settings = None))]
    fn new(py: Python<'_>, settings: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let settings = match settings {
            Some(settings) => py_to_value(settings.as_any())
                .map_err(|err| PyTypeError::new_err(format!("plugin settings: {err}")))?,
            None => Value::empty_map(),
        };
        let factory = FACTORY.get().ok_or_else(|| {
            PyRuntimeError::new_err("ucs_testing runs only under `ucs plugin test`")
        })?;
        let server = py
            .detach(|| factory(settings))
            .map_err(PyRuntimeError::new_err)?;
        Ok(PyTestServer { server })
    }

    #[pyo3(signature = (username, password, displayname, agent, superuser))]
    fn add_user(
        &self,
        py: Python<'_>,
        username: String,
        password: String,
        displayname: String,
        agent: bool,
        superuser: bool,
    ) -> PyResult<i64> {
        let user = NewUser {
            username,
            displayname,
            password,
            superuser,
            agent,
        };
        py.detach(|| self.server.add_user(user))
            .map_err(|err| api_error_to_py(py, err))
    }

    #[pyo3(signature = (username, method, *params))]
    fn call<'py>(
        &self,
        py: Python<'py>,
        username: &str,
        method: &str,
        params: &Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let params = crate::errors::api_params(py, params)?;
        match py.detach(|| self.server.call(username, method, params)) {
            Ok(result) => value_to_py(py, &result),
            Err(error) => Err(api_error_to_py(py, error)),
        }
    }

    /// `[(name, data), ...]`.
    fn events<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let events = py.detach(|| self.server.events());
        let list = PyList::empty(py);
        for (name, data) in events {
            list.append((name, value_to_py(py, &data)?))?;
        }
        Ok(list)
    }

    /// `[(level, plugin, target, message), ...]`.
    fn logs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let records = py.detach(|| self.server.logs());
        let list = PyList::empty(py);
        for record in records {
            list.append((record.level, record.plugin, record.target, record.message))?;
        }
        Ok(list)
    }

    fn clear(&self, py: Python<'_>) {
        py.detach(|| self.server.clear());
    }

    fn close(&self, py: Python<'_>) {
        py.detach(|| self.server.close());
    }
}

/// The pytest plugin, importable as `ucs_testing`.
pub(crate) const UCS_TESTING: &str = include_str!("../python/ucs_testing.py");

/// Runs pytest with `args` (as on its command line) in this interpreter,
/// with the `ucs_testing` plugin, whose servers `factory` makes, and
/// returns pytest's exit code. Call once per process, from a thread not
/// attached to the interpreter.
pub fn run_pytest(factory: Arc<TestServerFactory>, args: &[String]) -> Result<i32, PytestError> {
    FACTORY.set(factory).map_err(|_| PytestError::AlreadyRan)?;
    crate::init();
    Python::attach(|py| {
        let python_error = |err: PyErr| PytestError::Python(format_traceback(py, &err));
        let native = PyModule::new(py, "_ucs_testing").map_err(python_error)?;
        native.add_class::<PyTestServer>().map_err(python_error)?;
        let sys = py.import("sys").map_err(python_error)?;
        sys.getattr("modules")
            .and_then(|modules| modules.set_item("_ucs_testing", &native))
            .map_err(python_error)?;
        // pytest reports on the terminal and captures what tests print
        // itself: the streams that turn a plugin's prints into server log
        // records (output.rs) would send its report to the log.
        for stream in ["stdout", "stderr"] {
            sys.getattr(format!("__{stream}__"))
                .and_then(|original| sys.setattr(stream, original))
                .map_err(python_error)?;
        }
        let pytest = py
            .import("pytest")
            .map_err(|err| PytestError::NoPytest(crate::errors::first_arg_text(py, &err)))?;
        let code = CString::new(UCS_TESTING).map_err(|err| PytestError::Python(err.to_string()))?;
        let plugin = PyModule::from_code(py, &code, c"ucs_testing.py", c"ucs_testing")
            .map_err(python_error)?;
        sys.getattr("modules")
            .and_then(|modules| modules.set_item("ucs_testing", &plugin))
            .map_err(python_error)?;
        let kwargs = PyDict::new(py);
        kwargs
            .set_item("plugins", [plugin.as_any()])
            .map_err(python_error)?;
        let exit = pytest
            .call_method("main", (args.to_vec(),), Some(&kwargs))
            .map_err(python_error)?;
        // pytest.main returns an ExitCode (an IntEnum) or an int.
        exit.extract::<i32>().map_err(python_error)
    })
}
