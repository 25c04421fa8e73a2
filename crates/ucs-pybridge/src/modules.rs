//! The modules plugins import by bare name (SPEC section 6): `constants`,
//! `events`, `error`, `agents`. They are built in memory and put into
//! `sys.modules`, so no files beside the binary are needed.

use pyo3::exceptions::PyKeyError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyIterator, PyString, PyTuple, PyType};
use ucs_core::events::{EVENT_AGENT_STATUS, EVENT_SHARED_DATA};
use ucs_core::{Agent, AgentStatus};

use crate::errors;

/// The names of the built-in modules; a plugin may not be called like them (D1).
pub const BUILTIN_MODULES: [&str; 4] = ["constants", "events", "error", "agents"];

/// The keys of an [`PyAgent`], in the order of the dicts `agents.list` and
/// `ucs.agents.getAgents()` give, so `dict(agent)` equals those dicts.
const AGENT_KEYS: [&str; 5] = ["id", "username", "displayname", "status", "reason"];

/// An agent as the status hook sees it (H2): the state before the change,
/// by attribute (`agent.status`) or as a read-only mapping (`agent['status']`,
/// `'status' in agent`, `agent.get(...)`, `dict(agent)`; E2, issue 16 item
/// 2). It is registered as a `collections.abc.Mapping`, and the stub
/// declares it one, so it can be passed wherever a mapping is expected.
#[pyclass(name = "Agent", module = "agents", frozen, get_all)]
pub struct PyAgent {
    /// The agent's user id.
    id: i64,
    /// The login name.
    username: String,
    /// The display name.
    displayname: String,
    /// The status code (`AGENT_STATE_ENUM`).
    status: i64,
    /// The not-ready reason.
    reason: String,
}

impl PyAgent {
    /// A snapshot of `agent`.
    pub fn new(agent: &Agent) -> Self {
        PyAgent {
            id: agent.id,
            username: agent.username.clone(),
            displayname: agent.displayname.clone(),
            status: agent.status.code(),
            reason: agent.reason.clone(),
        }
    }

    /// The value under `key`, or `None` if `key` is not one of
    /// [`AGENT_KEYS`] (a key that is not a `str` is none of them).
    fn value_of<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let Ok(key) = key.cast::<PyString>() else {
            return Ok(None);
        };
        Ok(Some(match key.to_str()? {
            "id" => self.id.into_pyobject(py)?.into_any(),
            "username" => self.username.as_str().into_pyobject(py)?.into_any(),
            "displayname" => self.displayname.as_str().into_pyobject(py)?.into_any(),
            "status" => self.status.into_pyobject(py)?.into_any(),
            "reason" => self.reason.as_str().into_pyobject(py)?.into_any(),
            _ => return Ok(None),
        }))
    }

    /// The agent as a plain dict, the shape of `getAgents()`'s entries.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        dict.set_item("id", self.id)?;
        dict.set_item("username", &self.username)?;
        dict.set_item("displayname", &self.displayname)?;
        dict.set_item("status", self.status)?;
        dict.set_item("reason", &self.reason)?;
        Ok(dict)
    }
}

/// `collections.abc`'s view classes, imported once: `keys()`, `values()`
/// and `items()` return the same set-like views a dict's do.
static KEYS_VIEW: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static VALUES_VIEW: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static ITEMS_VIEW: PyOnceLock<Py<PyType>> = PyOnceLock::new();
/// `collections.abc.Mapping`: what an Agent is registered as, and what it
/// compares equal to.
static MAPPING: PyOnceLock<Py<PyType>> = PyOnceLock::new();

#[pymethods]
impl PyAgent {
    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.value_of(py, key)?
            .ok_or_else(|| PyKeyError::new_err(key.clone().unbind()))
    }

    fn __contains__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.value_of(py, key)?.is_some())
    }

    /// `dict.get`: the value, or `default` (None unless given).
    #[pyo3(signature = (key, default = None, /))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Ok(self
            .value_of(py, key)?
            .or(default)
            .unwrap_or_else(|| py.None().into_bound(py)))
    }

    fn __len__(&self) -> usize {
        AGENT_KEYS.len()
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyIterator>> {
        PyTuple::new(py, AGENT_KEYS)?.try_iter()
    }

    fn keys<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        KEYS_VIEW
            .import(slf.py(), "collections.abc", "KeysView")?
            .call1((slf,))
    }

    fn values<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        VALUES_VIEW
            .import(slf.py(), "collections.abc", "ValuesView")?
            .call1((slf,))
    }

    fn items<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        ITEMS_VIEW
            .import(slf.py(), "collections.abc", "ItemsView")?
            .call1((slf,))
    }

    /// Equal to another Agent with the same fields, and to any mapping
    /// with the same keys and values (a `getAgents()` dict, say), as a
    /// dict is; anything else is left to Python (not equal).
    fn __eq__<'py>(
        &self,
        py: Python<'py>,
        other: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if let Ok(other) = other.cast::<PyAgent>() {
            let other = other.get();
            let equal = self.id == other.id
                && self.username == other.username
                && self.displayname == other.displayname
                && self.status == other.status
                && self.reason == other.reason;
            return Ok(PyBool::new(py, equal).to_owned().into_any());
        }
        let mapping = MAPPING.import(py, "collections.abc", "Mapping")?;
        if !other.is_instance(mapping)? {
            return Ok(py.NotImplemented().into_bound(py));
        }
        let other = py.get_type::<PyDict>().call1((other,))?;
        let equal = self.to_dict(py)?.eq(other)?;
        Ok(PyBool::new(py, equal).to_owned().into_any())
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let status = AgentStatus::from_code(self.status).map_or("unknown", AgentStatus::name);
        Ok(format!(
            "Agent(id={}, username={}, displayname={}, status={} ({status}), reason={})",
            self.id,
            PyString::new(py, &self.username).repr()?,
            PyString::new(py, &self.displayname).repr()?,
            self.status,
            PyString::new(py, &self.reason).repr()?,
        ))
    }
}

fn constants(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    let module = PyModule::new(py, "constants")?;
    for status in AgentStatus::ALL {
        module.add(status.name(), status.code())?;
    }
    let all: Vec<i64> = AgentStatus::ALL
        .iter()
        .map(|status| status.code())
        .collect();
    module.add("AGENT_STATE_ENUM", PyTuple::new(py, all)?)?;
    Ok(module)
}

fn events(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    let module = PyModule::new(py, "events")?;
    module.add("EVENT_AGENT_STATUS", EVENT_AGENT_STATUS)?;
    module.add("EVENT_SHARED_DATA", EVENT_SHARED_DATA)?;
    Ok(module)
}

fn error(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    let module = PyModule::new(py, "error")?;
    errors::register(&module)?;
    Ok(module)
}

fn agents(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    let module = PyModule::new(py, "agents")?;
    module.add_class::<PyAgent>()?;
    // `isinstance(agent, Mapping)` holds, as the stub's base class says.
    MAPPING
        .import(py, "collections.abc", "Mapping")?
        .call_method1("register", (py.get_type::<PyAgent>(),))?;
    Ok(module)
}

/// Puts the four modules into `sys.modules`, unless they are there already.
pub(crate) fn install(py: Python<'_>) -> PyResult<()> {
    let sys_modules = py.import("sys")?.getattr("modules")?;
    let sys_modules = sys_modules.cast::<PyDict>()?;
    if sys_modules.contains("constants")? {
        return Ok(());
    }
    sys_modules.set_item("constants", constants(py)?)?;
    sys_modules.set_item("events", events(py)?)?;
    sys_modules.set_item("error", error(py)?)?;
    sys_modules.set_item("agents", agents(py)?)?;
    crate::fork::forbid(py)
}
