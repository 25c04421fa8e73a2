//! The `ucs` object a plugin receives (SPEC section 6), one per plugin so
//! the server knows who registered what.
//!
//! Every method that enters the core or the API lets go of the interpreter
//! first (`py.detach`), so a plugin thread calling back into the server can
//! never hold the GIL while the server waits on a lock (L5).

use std::sync::Arc;

use pyo3::exceptions::PyAttributeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use crate::adapters::{PyCallable, PyEventCallback, PyMiddleware, PySharedHook, PyStatusHook};
use crate::convert::value_to_py;
use crate::errors::api_error_to_py;
use crate::port::ServerPort;

/// What every part of one plugin's `ucs` object shares: the way to the
/// server, in-process or across a plugin host's link (I1).
struct PluginContext {
    /// The server, as this plugin reaches it.
    port: Arc<dyn ServerPort>,
}

impl PluginContext {
    /// Wraps a callable of this plugin, measured under the port's policy.
    fn callable(&self, callable: &Bound<'_, PyAny>) -> PyCallable {
        PyCallable::new(callable, self.port.owner().clone(), self.port.policy())
    }
}

/// Builds the `ucs` object of the plugin `port` serves.
pub fn new_ucs_object(py: Python<'_>, port: Arc<dyn ServerPort>) -> PyResult<Bound<'_, PyUcs>> {
    let config = crate::convert::frozen_value_to_py(py, port.config())?.unbind();
    let context = Arc::new(PluginContext { port });
    let ucs = PyUcs {
        config,
        log: Py::new(py, PyLog(Arc::clone(&context)))?,
        agents: Py::new(py, PyAgents(Arc::clone(&context)))?,
        shared: Py::new(py, PyShared(Arc::clone(&context)))?,
        tree: Py::new(py, PyTree(Arc::clone(&context)))?,
        api: Py::new(py, PyApi(Arc::clone(&context)))?,
        context,
    };
    Bound::new(py, ucs)
}

/// The server object passed to a plugin's constructor (P3).
#[pyclass(name = "Ucs", module = "ucs", frozen)]
pub struct PyUcs {
    /// `ucs.log.dev|dbug|info|warn|err`.
    #[pyo3(get)]
    log: Py<PyLog>,
    /// `ucs.agents`.
    #[pyo3(get)]
    agents: Py<PyAgents>,
    /// `ucs.shared`.
    #[pyo3(get)]
    shared: Py<PyShared>,
    /// `ucs.tree`.
    #[pyo3(get)]
    tree: Py<PyTree>,
    /// `ucs.api`.
    #[pyo3(get)]
    api: Py<PyApi>,
    /// `ucs.config`: the plugin's settings, a read-only mapping (issue 16
    /// item 4).
    #[pyo3(get)]
    config: Py<PyAny>,
    context: Arc<PluginContext>,
}

#[pymethods]
impl PyUcs {
    /// Registers `callback` for `event` (E1); unknown events raise
    /// ProcessingError (E2).
    #[pyo3(name = "addCallback")]
    fn add_callback(
        &self,
        py: Python<'_>,
        event: &str,
        callback: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let context = &self.context;
        let adapter = Arc::new(PyEventCallback(context.callable(callback)));
        py.detach(|| context.port.add_callback(event, adapter))
            .map_err(|err| api_error_to_py(py, err))
    }

    /// Removes a callback equal (`==`) to `callback` (E1); warns if none is.
    #[pyo3(name = "removeCallback")]
    fn remove_callback(
        &self,
        py: Python<'_>,
        event: &str,
        callback: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let context = &self.context;
        let removed = context
            .port
            .remove_callback(py, event, callback)
            .map_err(|err| api_error_to_py(py, err))?;
        if !removed {
            tracing::warn!(
                plugin = %context.port.owner(),
                "removeCallback('{event}', ...) ignored: that callback is not registered"
            );
        }
        Ok(())
    }

    /// The plugin's own session id, for `ucs.api.*` calls that need one. It
    /// acts as user 1: plugins are trusted server code.
    #[getter]
    fn sid(&self, py: Python<'_>) -> PyResult<String> {
        let port = &self.context.port;
        py.detach(|| port.plugin_sid())
            .map_err(|err| api_error_to_py(py, err))
    }

    fn __repr__(&self) -> String {
        format!(
            "<ucs server object of plugin '{}'>",
            self.context.port.owner()
        )
    }
}

/// `ucs.log`: printf-style logging; every record names the plugin.
#[pyclass(name = "Log", module = "ucs", frozen)]
pub struct PyLog(Arc<PluginContext>);

impl PyLog {
    fn emit(&self, level: tracing::Level, message: &Bound<'_, PyAny>, args: &Bound<'_, PyTuple>) {
        // Formatting is the expensive part: the documented Middleware
        // example logs every `config.users.get` answer at `dev`, and `%s`
        // of 500 users per call would cost more than the call itself, for
        // a record nobody reads. Lazy, as Python's own `logging` is.
        let enabled = match level {
            tracing::Level::TRACE => {
                tracing::enabled!(target: "ucs::plugin", tracing::Level::TRACE, plugin)
            }
            tracing::Level::DEBUG => {
                tracing::enabled!(target: "ucs::plugin", tracing::Level::DEBUG, plugin)
            }
            tracing::Level::INFO => {
                tracing::enabled!(target: "ucs::plugin", tracing::Level::INFO, plugin)
            }
            tracing::Level::WARN => {
                tracing::enabled!(target: "ucs::plugin", tracing::Level::WARN, plugin)
            }
            tracing::Level::ERROR => {
                tracing::enabled!(target: "ucs::plugin", tracing::Level::ERROR, plugin)
            }
        };
        if !enabled {
            return;
        }
        let text = format_message(message, args);
        let plugin = self.0.port.owner().name();
        match level {
            tracing::Level::TRACE => tracing::trace!(target: "ucs::plugin", plugin, "{text}"),
            tracing::Level::DEBUG => tracing::debug!(target: "ucs::plugin", plugin, "{text}"),
            tracing::Level::INFO => tracing::info!(target: "ucs::plugin", plugin, "{text}"),
            tracing::Level::WARN => tracing::warn!(target: "ucs::plugin", plugin, "{text}"),
            tracing::Level::ERROR => tracing::error!(target: "ucs::plugin", plugin, "{text}"),
        }
    }
}

/// `message % args`, as the documented examples use; a format that does not
/// fit its arguments still logs, with the arguments appended.
fn format_message(message: &Bound<'_, PyAny>, args: &Bound<'_, PyTuple>) -> String {
    let text = message
        .str()
        .map(|text| text.to_string())
        .unwrap_or_else(|_| "<unprintable message>".to_owned());
    if args.is_empty() {
        return text;
    }
    match message.cast::<PyString>().map(|format| format.rem(args)) {
        Ok(Ok(formatted)) => formatted.to_string(),
        _ => format!(
            "{text} {}",
            args.repr().map(|repr| repr.to_string()).unwrap_or_default()
        ),
    }
}

#[pymethods]
impl PyLog {
    /// Trace level.
    #[pyo3(signature = (message, *args))]
    fn dev(&self, message: &Bound<'_, PyAny>, args: &Bound<'_, PyTuple>) {
        self.emit(tracing::Level::TRACE, message, args);
    }

    /// Debug level.
    #[pyo3(signature = (message, *args))]
    fn dbug(&self, message: &Bound<'_, PyAny>, args: &Bound<'_, PyTuple>) {
        self.emit(tracing::Level::DEBUG, message, args);
    }

    /// Info level.
    #[pyo3(signature = (message, *args))]
    fn info(&self, message: &Bound<'_, PyAny>, args: &Bound<'_, PyTuple>) {
        self.emit(tracing::Level::INFO, message, args);
    }

    /// Warning level.
    #[pyo3(signature = (message, *args))]
    fn warn(&self, message: &Bound<'_, PyAny>, args: &Bound<'_, PyTuple>) {
        self.emit(tracing::Level::WARN, message, args);
    }

    /// Error level.
    #[pyo3(signature = (message, *args))]
    fn err(&self, message: &Bound<'_, PyAny>, args: &Bound<'_, PyTuple>) {
        self.emit(tracing::Level::ERROR, message, args);
    }
}

/// `ucs.agents`.
#[pyclass(name = "Agents", module = "ucs", frozen)]
pub struct PyAgents(Arc<PluginContext>);

#[pymethods]
impl PyAgents {
    /// Every agent as a dict.
    #[pyo3(name = "getAgents")]
    fn get_agents<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let agents = py.detach(|| self.0.port.agents());
        let list = PyList::empty(py);
        for agent in &agents {
            list.append(value_to_py(py, agent)?)?;
        }
        Ok(list.into_any())
    }

    /// Registers the one status hook of the server (H1).
    #[pyo3(name = "addChangeStatusHook")]
    fn add_change_status_hook(&self, py: Python<'_>, callback: &Bound<'_, PyAny>) -> PyResult<()> {
        let context = &self.0;
        let hook = Arc::new(PyStatusHook(context.callable(callback)));
        py.detach(|| context.port.add_status_hook(hook))
            .map_err(|err| api_error_to_py(py, err))
    }

    /// Removes the status hook if this plugin owns it; otherwise warns (H1).
    #[pyo3(name = "removeChangeStatusHook")]
    fn remove_change_status_hook(&self, py: Python<'_>) {
        let port = &self.0.port;
        py.detach(|| port.remove_status_hook());
    }
}

/// `ucs.shared`.
#[pyclass(name = "Shared", module = "ucs", frozen)]
pub struct PyShared(Arc<PluginContext>);

#[pymethods]
impl PyShared {
    /// The data stored under `identificator`; `{}` if never set (D4).
    fn get<'py>(&self, py: Python<'py>, identificator: &str) -> PyResult<Bound<'py, PyAny>> {
        let value = py.detach(|| self.0.port.shared_get(identificator));
        value_to_py(py, &value)
    }

    /// Registers the change hook of `identificator` (S1).
    #[pyo3(name = "addChangeHook")]
    fn add_change_hook(
        &self,
        py: Python<'_>,
        identificator: &str,
        callback: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let context = &self.0;
        let hook = Arc::new(PySharedHook(context.callable(callback)));
        py.detach(|| context.port.add_shared_hook(identificator, hook))
            .map_err(|err| api_error_to_py(py, err))
    }

    /// Removes the change hook of `identificator` (S1).
    #[pyo3(name = "removeChangeHook")]
    fn remove_change_hook(&self, py: Python<'_>, identificator: &str) {
        let port = &self.0.port;
        py.detach(|| port.remove_shared_hook(identificator));
    }
}

/// `ucs.tree`.
#[pyclass(name = "Tree", module = "ucs", frozen)]
pub struct PyTree(Arc<PluginContext>);

#[pymethods]
impl PyTree {
    /// `{user_id: field}` for every user, e.g. `getUsers('username')`.
    #[pyo3(name = "getUsers")]
    fn get_users<'py>(&self, py: Python<'py>, field: &str) -> PyResult<Bound<'py, PyDict>> {
        let users = py
            .detach(|| self.0.port.user_field(field))
            .map_err(|err| api_error_to_py(py, err))?;
        let dict = PyDict::new(py);
        for (id, value) in &users {
            dict.set_item(id, value_to_py(py, value)?)?;
        }
        Ok(dict)
    }
}

/// `ucs.api`: middleware registration, and every API method by its dotted
/// name (`ucs.api.config.users.get(sid, 2)`).
#[pyclass(name = "Api", module = "ucs", frozen)]
pub struct PyApi(Arc<PluginContext>);

#[pymethods]
impl PyApi {
    /// Wraps `method` in `middleware`; unknown methods raise ProcessingError (M1).
    #[pyo3(name = "addMiddleware")]
    fn add_middleware(
        &self,
        py: Python<'_>,
        method: &str,
        middleware: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let context = &self.0;
        let adapter = Arc::new(PyMiddleware(context.callable(middleware)));
        py.detach(|| context.port.add_middleware(method, adapter))
            .map_err(|err| api_error_to_py(py, err))
    }

    /// Unwraps a middleware equal (`==`) to `middleware` (M1); warns if none is.
    #[pyo3(name = "removeMiddleware")]
    fn remove_middleware(
        &self,
        py: Python<'_>,
        method: &str,
        middleware: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let context = &self.0;
        let removed = context
            .port
            .remove_middleware(py, method, middleware)
            .map_err(|err| api_error_to_py(py, err))?;
        if !removed {
            tracing::warn!(
                plugin = %context.port.owner(),
                "removeMiddleware('{method}', ...) ignored: that middleware is not registered"
            );
        }
        Ok(())
    }

    fn __getattr__(&self, name: &str) -> PyResult<PyApiPath> {
        PyApiPath::start(&self.0, name)
    }
}

/// A partial or complete dotted API method name; calling it calls the method.
#[pyclass(name = "ApiMethod", module = "ucs", frozen)]
pub struct PyApiPath {
    context: Arc<PluginContext>,
    path: String,
}

impl PyApiPath {
    fn start(context: &Arc<PluginContext>, name: &str) -> PyResult<Self> {
        if name.starts_with("__") {
            // Keep Python's protocol lookups (copy, pickle, ...) honest.
            return Err(PyAttributeError::new_err(name.to_owned()));
        }
        Ok(PyApiPath {
            context: Arc::clone(context),
            path: name.to_owned(),
        })
    }
}

#[pymethods]
impl PyApiPath {
    fn __getattr__(&self, name: &str) -> PyResult<PyApiPath> {
        let mut path = PyApiPath::start(&self.context, name)?;
        path.path = format!("{}.{name}", self.path);
        Ok(path)
    }

    /// Calls the method: `(sid, *params)`, through its middleware chain.
    #[pyo3(signature = (sid, *params))]
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        sid: &str,
        params: &Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let params = crate::errors::api_params(py, params)?;
        let port = &self.context.port;
        let method = self.path.as_str();
        match py.detach(|| port.call(sid, method, params)) {
            Ok(result) => value_to_py(py, &result),
            Err(error) => Err(api_error_to_py(py, error)),
        }
    }

    fn __repr__(&self) -> String {
        format!("<UCS API method {}>", self.path)
    }
}
