//! The modules plugins import by bare name (SPEC section 6): `constants`,
//! `events`, `error`, `agents`. They are built in memory and put into
//! `sys.modules`, so no files beside the binary are needed.

use pyo3::exceptions::PyKeyError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use ucs_core::events::{EVENT_AGENT_STATUS, EVENT_SHARED_DATA};
use ucs_core::{Agent, AgentStatus};

use crate::errors;

/// The names of the built-in modules; a plugin may not be called like them (D1).
pub const BUILTIN_MODULES: [&str; 4] = ["constants", "events", "error", "agents"];

/// An agent as the status hook sees it (H2): the state before the change,
/// by attribute (`agent.status`) or by key (`agent['status']`, E2).
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
}

#[pymethods]
impl PyAgent {
    fn __getitem__<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Bound<'py, PyAny>> {
        Ok(match key {
            "id" => self.id.into_pyobject(py)?.into_any(),
            "username" => self.username.as_str().into_pyobject(py)?.into_any(),
            "displayname" => self.displayname.as_str().into_pyobject(py)?.into_any(),
            "status" => self.status.into_pyobject(py)?.into_any(),
            "reason" => self.reason.as_str().into_pyobject(py)?.into_any(),
            _ => return Err(PyKeyError::new_err(key.to_owned())),
        })
    }

    fn keys(&self) -> [&'static str; 5] {
        ["id", "username", "displayname", "status", "reason"]
    }

    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &str,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match self.__getitem__(py, key) {
            Ok(value) => Ok(value),
            Err(_) => Ok(default.unwrap_or_else(|| py.None().into_bound(py))),
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "Agent(id={}, username={:?}, status={}, reason={:?})",
            self.id, self.username, self.status, self.reason
        )
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
    Ok(())
}
