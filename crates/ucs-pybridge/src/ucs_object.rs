//! The `ucs` object a plugin receives (SPEC section 6), one per plugin so
//! the server knows who registered what.
//!
//! Every method that enters the core or the API lets go of the interpreter
//! first (`py.detach`), so a plugin thread calling back into the server can
//! never hold the GIL while the server waits on a lock (L5).

use std::sync::{Arc, Mutex, PoisonError};

use pyo3::exceptions::PyAttributeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use ucs_api::{Api, ApiError};
use ucs_core::users::ADMIN_USER_ID;
use ucs_core::{CoreError, Owner, Value};

use crate::adapters::{
    PyCallable, PyEventCallback, PyMiddleware, PySharedHook, PyStatusHook, as_callable,
};
use crate::convert::{py_to_value, value_to_py};
use crate::errors::api_error_to_py;

/// What every part of one plugin's `ucs` object shares.
struct PluginContext {
    /// The plugin, recorded on everything it registers (L4).
    owner: Owner,
    /// The server's API, and through it the core.
    api: Api,
    /// The plugin's own superuser session, opened on first use of `ucs.sid`.
    sid: Mutex<Option<String>>,
}

impl PluginContext {
    /// Wraps a callable of this plugin, measured under the server's policy.
    fn callable(&self, callable: &Bound<'_, PyAny>) -> PyCallable {
        PyCallable::new(callable, self.owner.clone(), *self.api.policy())
    }

    fn core_error(&self, py: Python<'_>, error: CoreError) -> PyErr {
        api_error_to_py(py, ApiError::from(error))
    }
}

/// Builds the `ucs` object for the plugin `owner`.
pub fn new_ucs_object(py: Python<'_>, api: Api, owner: Owner) -> PyResult<Bound<'_, PyUcs>> {
    let context = Arc::new(PluginContext {
        owner,
        api,
        sid: Mutex::new(None),
    });
    let ucs = PyUcs {
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
        py.detach(|| {
            context
                .api
                .core()
                .events()
                .add_callback(event, context.owner.clone(), adapter)
                .map(drop)
        })
        .map_err(|err| context.core_error(py, err))
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
        let events = &context.api.core().events();
        let registrations = py
            .detach(|| events.callbacks(event))
            .map_err(|err| context.core_error(py, err))?;
        // Compare with no server lock held: `==` may run Python.
        let found = registrations.iter().find(|registration| {
            as_callable(registration.target.as_any())
                .is_some_and(|adapter| adapter.equals(callback))
        });
        match found {
            Some(registration) => {
                let id = registration.id;
                py.detach(|| events.remove_callback(id));
            }
            None => tracing::warn!(
                plugin = %context.owner,
                "removeCallback('{event}', ...) ignored: that callback is not registered"
            ),
        }
        Ok(())
    }

    /// The plugin's own session id, for `ucs.api.*` calls that need one. It
    /// acts as user 1: plugins are trusted server code.
    #[getter]
    fn sid(&self, py: Python<'_>) -> PyResult<String> {
        let context = &self.context;
        py.detach(|| {
            let mut sid = context.sid.lock().unwrap_or_else(PoisonError::into_inner);
            let sessions = &context.api.core().sessions();
            if let Some(open) = sid.as_ref()
                && sessions.resolve(open).is_ok()
            {
                return Ok(open.clone());
            }
            let fresh = sessions.open(ADMIN_USER_ID)?;
            *sid = Some(fresh.clone());
            Ok(fresh)
        })
        .map_err(|err| context.core_error(py, err))
    }

    fn __repr__(&self) -> String {
        format!("<ucs server object of plugin '{}'>", self.context.owner)
    }
}

/// `ucs.log`: printf-style logging; every record names the plugin.
#[pyclass(name = "Log", module = "ucs", frozen)]
pub struct PyLog(Arc<PluginContext>);

impl PyLog {
    fn emit(&self, level: tracing::Level, message: &Bound<'_, PyAny>, args: &Bound<'_, PyTuple>) {
        let text = format_message(message, args);
        let plugin = self.0.owner.name();
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
        let agents = py.detach(|| self.0.api.core().directory().agents());
        let list = PyList::empty(py);
        for agent in &agents {
            list.append(value_to_py(py, &agent.to_value())?)?;
        }
        Ok(list.into_any())
    }

    /// Registers the one status hook of the server (H1).
    #[pyo3(name = "addChangeStatusHook")]
    fn add_change_status_hook(&self, py: Python<'_>, callback: &Bound<'_, PyAny>) -> PyResult<()> {
        let context = &self.0;
        let hook = Arc::new(PyStatusHook(context.callable(callback)));
        py.detach(|| {
            context
                .api
                .core()
                .status_hook()
                .add(context.owner.clone(), hook)
                .map(drop)
        })
        .map_err(|err| context.core_error(py, err))
    }

    /// Removes the status hook if this plugin owns it; otherwise warns (H1).
    #[pyo3(name = "removeChangeStatusHook")]
    fn remove_change_status_hook(&self, py: Python<'_>) {
        let context = &self.0;
        py.detach(|| context.api.core().status_hook().remove(&context.owner));
    }
}

/// `ucs.shared`.
#[pyclass(name = "Shared", module = "ucs", frozen)]
pub struct PyShared(Arc<PluginContext>);

#[pymethods]
impl PyShared {
    /// The data stored under `identificator`; `{}` if never set (D4).
    fn get<'py>(&self, py: Python<'py>, identificator: &str) -> PyResult<Bound<'py, PyAny>> {
        let value = py.detach(|| self.0.api.core().shared().get(identificator));
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
        py.detach(|| {
            context
                .api
                .core()
                .shared()
                .add_hook(identificator, context.owner.clone(), hook)
                .map(drop)
        })
        .map_err(|err| context.core_error(py, err))
    }

    /// Removes the change hook of `identificator` (S1).
    #[pyo3(name = "removeChangeHook")]
    fn remove_change_hook(&self, py: Python<'_>, identificator: &str) {
        let context = &self.0;
        py.detach(|| {
            context
                .api
                .core()
                .shared()
                .remove_hook(identificator, &context.owner)
        });
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
        let users = py.detach(|| self.0.api.core().directory().list());
        let dict = PyDict::new(py);
        for user in &users {
            let value = user.field(field).ok_or_else(|| {
                api_error_to_py(
                    py,
                    ApiError::field("field", format!("users have no field '{field}'")),
                )
            })?;
            dict.set_item(user.id, value_to_py(py, &value)?)?;
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
        py.detach(|| {
            context
                .api
                .add_middleware(method, context.owner.clone(), adapter)
                .map(drop)
        })
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
        let registrations = py
            .detach(|| context.api.middlewares(method))
            .map_err(|err| api_error_to_py(py, err))?;
        let found = registrations.iter().find(|registration| {
            as_callable(registration.target.as_any())
                .is_some_and(|adapter| adapter.equals(middleware))
        });
        match found {
            Some(registration) => {
                let id = registration.id;
                py.detach(|| context.api.remove_middleware(id));
            }
            None => tracing::warn!(
                plugin = %context.owner,
                "removeMiddleware('{method}', ...) ignored: that middleware is not registered"
            ),
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
        let params = params
            .iter()
            .map(|param| py_to_value(&param))
            .collect::<Result<Vec<Value>, _>>()
            .map_err(|err| {
                api_error_to_py(
                    py,
                    ApiError::field("params", format!("cannot be sent: {err}")),
                )
            })?;
        let api = &self.context.api;
        let method = self.path.as_str();
        match py.detach(|| api.call(sid, method, params)) {
            Ok(result) => value_to_py(py, &result),
            Err(error) => Err(api_error_to_py(py, error)),
        }
    }

    fn __repr__(&self) -> String {
        format!("<UCS API method {}>", self.path)
    }
}
