//! Python callables behind the core's hook and callback traits and the API's
//! middleware trait: H2-H6, S2-S4, E2, M2-M3 exactly.
//!
//! Each adapter attaches to the interpreter only for the call itself; the
//! core invokes them with no lock held (L5), and every way back into the
//! server from Python detaches first (see `ucs_object`).

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use quanta::Instant;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};
use ucs_api::{
    ApiError, Bypass, CallOutcome, HookPolicy, Metered, Middleware, Next, RegistrationMetrics,
};
use ucs_core::{
    Agent, AgentStatus, Event, EventCallback, EventPayload, Owner, PluginFailure, Registrable,
    SharedDataHook, SharedVerdict, StatusHook, StatusVerdict, Value,
};

use crate::convert::{py_matches_value, py_to_value, type_name, value_to_py};
use crate::deadline::{self, CallLabel};
use crate::errors::{self, PluginError, ProcessingError, api_error_to_py, format_traceback};
use crate::modules::PyAgent;

/// A Python callable with the plugin that registered it, its numbers and
/// the budget and breaker it runs under (issue 8).
pub struct PyCallable {
    callable: Py<PyAny>,
    owner: Owner,
    /// Calls, errors, overruns, latency and the breaker of this
    /// registration; the registry reports the same numbers.
    metrics: Arc<RegistrationMetrics>,
    /// Budget, breaker threshold and deadline (I3) of every call.
    policy: HookPolicy,
    /// The plugin and registration (`Class.method()`) as the deadline
    /// watchdog, the metering and the registry name them; made once here
    /// so arming a call allocates nothing.
    label: Arc<CallLabel>,
}

impl PyCallable {
    /// Wraps `callable`, registered by `owner`, measured under `policy`.
    pub fn new(callable: &Bound<'_, PyAny>, owner: Owner, policy: HookPolicy) -> Self {
        let name = callable
            .getattr("__qualname__")
            .and_then(|name| name.extract::<String>())
            .or_else(|_| callable.repr().map(|repr| repr.to_string()))
            .unwrap_or_else(|_| "<callable>".to_owned());
        let label = Arc::new(CallLabel {
            owner: owner.clone(),
            registration: format!("{name}()"),
        });
        PyCallable {
            callable: callable.clone().unbind(),
            owner,
            metrics: Arc::new(RegistrationMetrics::new()),
            policy,
            label,
        }
    }

    /// Runs `call` through [`Metered::run`] (breaker, bulkhead, timing and
    /// their log lines, the same in both isolation modes); `bypass` stands
    /// in when the breaker is open or the plugin saturated.
    ///
    /// This is the one place every in-process call into a plugin passes, so
    /// it arms the call's deadline (I3, [`deadline`]): attached, so the
    /// watchdog's raise is ordered against the disarm by the GIL. A call
    /// interrupted there ends in `error.DeadlineExceeded`, which each
    /// adapter handles as any unexpected exception (a failure).
    fn measured<T>(
        &self,
        bypass: impl FnOnce(Bypass) -> T,
        call: impl FnOnce() -> (T, CallOutcome, Duration),
    ) -> T {
        let metered = Metered {
            owner: &self.owner,
            describe: &self.label.registration,
            metrics: &self.metrics,
            policy: &self.policy,
        };
        metered.run(bypass, |started| {
            Python::attach(|py| {
                let _armed = deadline::arm(py, &self.label, &self.policy, started);
                call()
            })
        })
    }

    /// Whether this wraps a callable equal to `other` by Python `==` (E1):
    /// `self.method` is a new object on every access, so identity would
    /// never match.
    pub fn equals(&self, other: &Bound<'_, PyAny>) -> bool {
        self.callable.bind(other.py()).eq(other).unwrap_or(false)
    }

    /// The plugin that registered it.
    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    fn describe(&self) -> String {
        self.label.registration.clone()
    }
}

/// Finds the adapter inside a trait object, for removal by `==`.
pub fn as_callable(any: &dyn Any) -> Option<&PyCallable> {
    if let Some(callback) = any.downcast_ref::<PyEventCallback>() {
        return Some(&callback.0);
    }
    if let Some(middleware) = any.downcast_ref::<PyMiddleware>() {
        return Some(&middleware.0);
    }
    None
}

/// The status hook (H2-H6).
pub struct PyStatusHook(pub PyCallable);

impl StatusHook for PyStatusHook {
    fn decide(&self, before: &Agent, status: AgentStatus, reason: &str) -> StatusVerdict {
        self.0.measured(
            // H6 for a saturated plugin too: its one warning is logged.
            |_| StatusVerdict::LetThrough,
            || {
                let verdict = self.decide_in_python(before, status, reason);
                let outcome = match verdict {
                    StatusVerdict::Failed(_) => CallOutcome::Failed,
                    _ => CallOutcome::Ok,
                };
                (verdict, outcome, Duration::ZERO)
            },
        )
    }
}

impl Registrable for PyStatusHook {
    fn describe(&self) -> String {
        self.0.describe()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn metrics(&self) -> Option<Arc<RegistrationMetrics>> {
        Some(Arc::clone(&self.0.metrics))
    }
}

impl PyStatusHook {
    /// The floor of [`StatusHook::decide`] for the benchmarks (issue 13
    /// item 3): only the Python part, as bare as it can be done (attach,
    /// the `agents.Agent` built as `decide` builds it, the two arguments,
    /// the call, the returned tuple read as `(int, str)`, detach), with no
    /// metering, deadline, verdict or error handling.
    pub fn call_bare(
        &self,
        before: &Agent,
        status: AgentStatus,
        reason: &str,
    ) -> Result<(i64, String), String> {
        Python::attach(|py| {
            let agent = Bound::new(py, PyAgent::new(before))?;
            let returned = self
                .0
                .callable
                .bind(py)
                .call1((agent, status.code(), reason))?;
            returned.extract::<(i64, String)>()
        })
        .map_err(|err| format!("the status hook failed: {err}"))
    }

    fn decide_in_python(&self, before: &Agent, status: AgentStatus, reason: &str) -> StatusVerdict {
        Python::attach(|py| {
            // Made here rather than by `call1`, so a hook that hands the
            // very reason object back is seen to let it through by identity.
            let reason_py = PyString::new(py, reason);
            let result = Bound::new(py, PyAgent::new(before)).and_then(|agent| {
                self.0
                    .callable
                    .bind(py)
                    .call1((agent, status.code(), &reason_py))
            });
            match result {
                Ok(returned) => status_verdict(&returned, status, reason, &reason_py),
                Err(err) if err.is_instance_of::<ProcessingError>(py) => StatusVerdict::Block {
                    reason: errors::first_arg_text(py, &err),
                },
                Err(err) => StatusVerdict::Failed(PluginFailure::new(format_traceback(py, &err))),
            }
        })
    }
}

/// Reads what a status hook returned: `(status, reason)` lets through or
/// rewrites (H3, H4), `(None, reason)` blocks (H5), anything else is a
/// failure (H6).
fn status_verdict(
    returned: &Bound<'_, PyAny>,
    requested: AgentStatus,
    reason: &str,
    reason_py: &Bound<'_, PyString>,
) -> StatusVerdict {
    let failed = |why: String| {
        StatusVerdict::Failed(PluginFailure::new(format!(
            "status hook returned {why}; expected (status, reason) or (None, reason)"
        )))
    };
    let Ok(pair) = returned.cast::<PyTuple>() else {
        return failed(format!("a {}", type_name(returned)));
    };
    if pair.len() != 2 {
        return failed(format!("a tuple of {} items", pair.len()));
    }
    let (Ok(new_status), Ok(new_reason)) = (pair.get_item(0), pair.get_item(1)) else {
        return failed("an unreadable tuple".to_owned());
    };
    if new_status.is_none() {
        // H5: any falsy reason means the default message.
        let reason = match new_reason.is_truthy() {
            Ok(true) => new_reason
                .str()
                .map(|text| text.to_string())
                .unwrap_or_default(),
            _ => String::new(),
        };
        return StatusVerdict::Block { reason };
    }
    let status = match new_status.extract::<i64>() {
        Ok(code) if new_status.cast::<pyo3::types::PyBool>().is_err() => {
            match AgentStatus::from_code(code) {
                Some(status) => status,
                None => return failed(format!("unknown status {code}")),
            }
        }
        _ => return failed(format!("a status of type {}", type_name(&new_status))),
    };
    // The reason the hook was given, handed back: a str by construction,
    // and equal, so the change is let through without reading it.
    if status == requested && new_reason.is(reason_py) {
        return StatusVerdict::LetThrough;
    }
    // A reason must be a str: `(status, None)` is none of H3-H5's shapes,
    // so it is H6, not a silent empty reason (issue 15 item 16).
    // Read in place: a String is made only for a rewrite (issue 13 item 3).
    let Some(new_reason) = new_reason
        .cast::<PyString>()
        .ok()
        .and_then(|text| text.to_str().ok())
    else {
        return failed(format!("a reason of type {}", type_name(&new_reason)));
    };
    if status == requested && new_reason == reason {
        StatusVerdict::LetThrough
    } else {
        StatusVerdict::Rewrite {
            status,
            reason: new_reason.to_owned(),
        }
    }
}

/// A shared-data change hook (S2-S4).
pub struct PySharedHook(pub PyCallable);

impl SharedDataHook for PySharedHook {
    fn before_change(&self, identificator: &str, old: &Value, new: &Value) -> SharedVerdict {
        self.0.measured(
            |_| SharedVerdict::Store(new.clone()),
            || {
                let verdict = self.decide_in_python(identificator, old, new);
                let outcome = match verdict {
                    SharedVerdict::Failed(_) => CallOutcome::Failed,
                    _ => CallOutcome::Ok,
                };
                (verdict, outcome, Duration::ZERO)
            },
        )
    }
}

impl Registrable for PySharedHook {
    fn describe(&self) -> String {
        self.0.describe()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn metrics(&self) -> Option<Arc<RegistrationMetrics>> {
        Some(Arc::clone(&self.0.metrics))
    }
}

impl PySharedHook {
    fn decide_in_python(&self, identificator: &str, old: &Value, new: &Value) -> SharedVerdict {
        Python::attach(|py| {
            let result = (|| {
                let old = value_to_py(py, old)?;
                let new = value_to_py(py, new)?;
                self.0.callable.bind(py).call1((identificator, old, new))
            })();
            match result {
                Ok(returned) => match py_to_value(&returned) {
                    Ok(value) => SharedVerdict::Store(value),
                    Err(err) => SharedVerdict::Failed(PluginFailure::new(format!(
                        "shared data hook returned data that cannot be stored: {err}"
                    ))),
                },
                Err(err) if err.is_instance_of::<ProcessingError>(py) => SharedVerdict::Block {
                    reason: errors::first_arg_text(py, &err),
                },
                Err(err) => SharedVerdict::Failed(PluginFailure::new(format_traceback(py, &err))),
            }
        })
    }
}

/// An event callback (E2): `callback(agent, args)` for agent status,
/// `callback(identificator, data)` for shared data.
pub struct PyEventCallback(pub PyCallable);

impl EventCallback for PyEventCallback {
    fn on_event(&self, event: &Event) -> Result<(), PluginFailure> {
        self.0.measured(
            |_| Ok(()),
            || {
                let result = self.call_in_python(event);
                let outcome = if result.is_ok() {
                    CallOutcome::Ok
                } else {
                    CallOutcome::Failed
                };
                (result, outcome, Duration::ZERO)
            },
        )
    }
}

impl Registrable for PyEventCallback {
    fn describe(&self) -> String {
        self.0.describe()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn metrics(&self) -> Option<Arc<RegistrationMetrics>> {
        Some(Arc::clone(&self.0.metrics))
    }
}

impl PyEventCallback {
    fn call_in_python(&self, event: &Event) -> Result<(), PluginFailure> {
        Python::attach(|py| {
            let result = (|| {
                let callable = self.0.callable.bind(py);
                match &event.payload {
                    EventPayload::AgentStatus {
                        agent,
                        previous_status,
                        previous_reason,
                    } => {
                        let args = PyDict::new(py);
                        args.set_item("previous_status", previous_status.code())?;
                        args.set_item("previous_reason", previous_reason)?;
                        callable.call1((Bound::new(py, PyAgent::new(agent))?, args))
                    }
                    EventPayload::SharedData {
                        identificator,
                        data,
                    } => callable.call1((identificator, value_to_py(py, data)?)),
                    // `audit.*` callbacks get the record as a dict.
                    EventPayload::Audit(record) => {
                        callable.call1((value_to_py(py, &record.to_value())?,))
                    }
                }
            })();
            result
                .map(drop)
                .map_err(|err| PluginFailure::new(format_traceback(py, &err)))
        })
    }
}

/// An API middleware (M2): `middleware(handler, *args)`.
pub struct PyMiddleware(pub PyCallable);

impl Middleware for PyMiddleware {
    fn call(&self, next: &Next, args: Vec<Value>) -> Result<Value, ApiError> {
        self.invoke(Arc::new(next.clone()), args)
    }
}

/// The rest of a middleware chain as a middleware's `handler` calls it: the
/// server's [`Next`] in-process, a call back across the link in a plugin
/// host (I1).
pub trait Continuation: Send + Sync + 'static {
    /// Runs the rest of the chain with `args` = `(caller, *params)`.
    fn proceed(&self, args: Vec<Value>) -> Result<Value, ApiError>;

    /// The dotted name of the method the chain belongs to, for log lines.
    fn method_name(&self) -> &str;
}

impl Continuation for Next {
    fn proceed(&self, args: Vec<Value>) -> Result<Value, ApiError> {
        self.call(args)
    }

    fn method_name(&self) -> &str {
        Next::method_name(self)
    }
}

impl PyMiddleware {
    /// Runs the middleware around `next` (M2, M3), measured like every
    /// other registration.
    pub fn invoke(&self, next: Arc<dyn Continuation>, args: Vec<Value>) -> Result<Value, ApiError> {
        // Exactly one of the two closures runs; whichever does takes the
        // arguments, so neither copies them.
        let args = std::cell::Cell::new(Some(args));
        self.0.measured(
            |bypass| {
                ucs_api::bypassed_middleware(bypass, next.method_name(), || {
                    next.proceed(args.take().unwrap_or_default())
                })
            },
            || self.call_in_python(&next, args.take().unwrap_or_default()),
        )
    }
}

impl Registrable for PyMiddleware {
    fn describe(&self) -> String {
        self.0.describe()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn metrics(&self) -> Option<Arc<RegistrationMetrics>> {
        Some(Arc::clone(&self.0.metrics))
    }
}

impl PyMiddleware {
    /// Runs the middleware; also says whether it failed (an unexpected
    /// exception or an unsendable result, not a deliberate `error` class)
    /// and how long its inner handler took, which is not its own time.
    fn call_in_python(
        &self,
        next: &Arc<dyn Continuation>,
        args: Vec<Value>,
    ) -> (Result<Value, ApiError>, CallOutcome, Duration) {
        Python::attach(|py| {
            let handler = args
                .iter()
                .map(|arg| value_to_py(py, arg).map(Bound::unbind))
                .collect::<PyResult<Vec<_>>>()
                .and_then(|given_py| {
                    Bound::new(
                        py,
                        PyHandler {
                            next: Arc::clone(next),
                            inner_nanos: AtomicU64::new(0),
                            given: Mutex::new(args),
                            given_py,
                            returned: Mutex::new(None),
                        },
                    )
                });
            let handler = match handler {
                Ok(handler) => handler,
                Err(err) => {
                    let (error, _) = self.plugin_error(py, &err, next);
                    return (Err(error), CallOutcome::Failed, Duration::ZERO);
                }
            };
            let result = (|| {
                let given = &handler.get().given_py;
                let mut py_args = Vec::with_capacity(given.len() + 1);
                py_args.push(handler.clone().into_any());
                py_args.extend(given.iter().map(|arg| arg.bind(py).clone()));
                self.0.callable.bind(py).call1(PyTuple::new(py, py_args)?)
            })();
            let inner = Duration::from_nanos(handler.get().inner_nanos.load(Ordering::Relaxed));
            // A middleware that hands on what its handler returned, unchanged,
            // gets the handler's value back as it was, not converted again.
            let result = result.map(|returned| match handler.get().take_returned(&returned) {
                Some(value) => Ok(value),
                None => Err(returned),
            });
            let (result, outcome) = match result {
                Ok(Ok(value)) => (Ok(value), CallOutcome::Ok),
                Ok(Err(returned)) => match py_to_value(&returned) {
                    Ok(value) => (Ok(value), CallOutcome::Ok),
                    Err(err) => {
                        tracing::error!(
                            plugin = %self.0.owner,
                            "middleware {} on {} returned a result that cannot be sent: {err}",
                            self.0.describe(),
                            next.method_name()
                        );
                        (
                            Err(ApiError::Internal(format!(
                                "middleware returned an unsupported result: {err}"
                            ))),
                            CallOutcome::Failed,
                        )
                    }
                },
                Err(err) => {
                    let (error, outcome) = self.plugin_error(py, &err, next);
                    (Err(error), outcome)
                }
            };
            (result, outcome, inner)
        })
    }

    /// M3: the `error` classes reach the caller (a deliberate refusal, not a
    /// failure of the middleware); anything else is an internal error whose
    /// traceback stays in the server log, and counts as a failure.
    fn plugin_error(
        &self,
        py: Python<'_>,
        err: &PyErr,
        next: &Arc<dyn Continuation>,
    ) -> (ApiError, CallOutcome) {
        match errors::classify(py, err) {
            PluginError::Api(error) => (error, CallOutcome::Ok),
            PluginError::Unexpected { traceback } => {
                tracing::error!(
                    plugin = %self.0.owner,
                    "middleware {} on {} raised: {traceback}",
                    self.0.describe(),
                    next.method_name()
                );
                let error =
                    ApiError::Internal(format!("middleware of plugin '{}' failed", self.0.owner));
                (error, CallOutcome::Failed)
            }
        }
    }
}

/// The `handler` a middleware receives: the next middleware or the
/// built-in method (M2).
#[pyclass(name = "Handler", module = "ucs", frozen)]
struct PyHandler {
    next: Arc<dyn Continuation>,
    /// Time spent in the rest of the chain, which the middleware's budget
    /// does not count.
    inner_nanos: AtomicU64,
    /// The arguments the middleware was called with, `(caller, *params)`,
    /// and the Python objects made from them (issue 13 item 3): when the
    /// middleware hands the same objects, unchanged, to its handler, they
    /// are not read back from Python. Each is moved out the first time it is
    /// handed on (a middleware calls its handler once, as a rule), leaving
    /// `Null`, so a later call with the same object reads it back instead.
    /// A `Mutex` because the class is frozen; only ever locked attached, for
    /// the moves, with no wait inside (L5).
    given: Mutex<Vec<Value>>,
    /// The objects of `given`, in the same order.
    given_py: Vec<Py<PyAny>>,
    /// The last result the rest of the chain gave, with the Python object
    /// the middleware got for it: when the middleware returns that object
    /// unchanged, its value is taken as is. A `Mutex` because the class is
    /// frozen; it is only ever taken attached, for a swap, with no wait
    /// inside (L5).
    returned: Mutex<Option<(Py<PyAny>, Value)>>,
}

impl PyHandler {
    /// The values of `args`, as the rest of the chain takes them: each
    /// given value, moved out, where the middleware passed on the very object
    /// it got for it, unchanged; otherwise read from Python.
    fn arguments(
        &self,
        args: &Bound<'_, PyTuple>,
    ) -> Result<Vec<Value>, ucs_core::value::ValueError> {
        let mut given = self.given.lock().unwrap_or_else(PoisonError::into_inner);
        args.iter()
            .enumerate()
            .map(|(index, object)| {
                if let (Some(value), Some(given_py)) =
                    (given.get_mut(index), self.given_py.get(index))
                    && !matches!(value, Value::Null)
                    && object.is(given_py)
                    && py_matches_value(&object, value)
                {
                    return Ok(std::mem::take(value));
                }
                py_to_value(&object)
            })
            .collect()
    }

    /// The last result of the rest of the chain, if `returned` is the very
    /// object made from it and unchanged since; `None` otherwise.
    fn take_returned(&self, returned: &Bound<'_, PyAny>) -> Option<Value> {
        let (object, value) = self
            .returned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        (returned.is(&object) && py_matches_value(returned, &value)).then_some(value)
    }
}

#[pymethods]
impl PyHandler {
    #[pyo3(signature = (*args))]
    fn __call__<'py>(&self, args: &Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyAny>> {
        let py = args.py();
        let values = self.arguments(args).map_err(|err| {
            api_error_to_py(
                py,
                ApiError::field("args", format!("cannot be sent: {err}")),
            )
        })?;
        let next = Arc::clone(&self.next);
        // The rest of the chain may wait on locks and run other plugins'
        // Python on this thread: never hold the GIL while it waits (L5).
        let started = Instant::now();
        let result = py.detach(move || next.proceed(values));
        let spent = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.inner_nanos.fetch_add(spent, Ordering::Relaxed);
        match result {
            Ok(value) => {
                let object = value_to_py(py, &value)?;
                *self.returned.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some((object.clone().unbind(), value));
                Ok(object)
            }
            Err(error) => Err(api_error_to_py(py, error)),
        }
    }

    fn __repr__(&self) -> String {
        format!("<handler of {}>", self.next.method_name())
    }
}
