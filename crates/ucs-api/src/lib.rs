//! The UCS API: every method by dotted name, each behind its middleware chain.
//!
//! # Layout
//! - [`Api`]: the registry; [`Api::call`] resolves the sid to the caller and
//!   runs the chain with `(caller, *params)` (SPEC D3).
//! - [`chain`]: [`Middleware`] and [`Next`] (M1-M3, D2).
//! - `builtins`: the methods of SPEC section 8, each with its permission check.
//! - [`plugins`]: the [`PluginControl`] seam the loader fills in (P6, D1).
//! - [`error`]: [`ApiError`], one kind per gRPC status.
//!
//! A call from a plugin (`ucs.api.config.users.get(sid, 2)`) and a call from
//! gRPC take the same path.

mod builtins;
pub mod chain;
pub mod error;
pub mod metrics;
mod params;
pub mod plugins;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock, Weak};
use std::time::Instant;

use ucs_core::metrics::{HistogramSnapshot, LatencyHistogram};
use ucs_core::registration::{registrations_in, remove_owned_by_in};
use ucs_core::{
    AnySlots, Core, Owner, RegistrationId, RegistrationInfo, RegistrationKind, Slots, User, Value,
};

pub use chain::{Middleware, MiddlewareRegistration, Next, bypassed_middleware};
pub use error::ApiError;
pub use metrics::{Bypass, CallOutcome, HookPolicy, Metered, RegistrationMetrics};
pub use plugins::{Isolation, PluginControl, PluginInfo, PluginName, PluginState};

/// The innermost handler of a method: its permission check and its work.
/// `params` are the call's parameters after the caller.
type Handler = fn(&Api, &User, &[Value]) -> Result<Value, ApiError>;

/// The outcomes API calls are counted by, for the metrics endpoint: `ok`
/// and one per [`ApiError`] kind.
pub const CALL_OUTCOMES: [&str; 9] = [
    "ok",
    "unauthenticated",
    "permission_denied",
    "invalid_input",
    "processing",
    "unknown_method",
    "not_found",
    "internal",
    "busy",
];

/// The index in [`CALL_OUTCOMES`] of a call's outcome.
fn outcome_index<T>(result: &Result<T, ApiError>) -> usize {
    match result {
        Ok(_) => 0,
        Err(ApiError::Unauthenticated | ApiError::BadCredentials) => 1,
        Err(ApiError::PermissionDenied(_)) => 2,
        Err(ApiError::InvalidInput(_)) => 3,
        Err(ApiError::Processing(_)) => 4,
        Err(ApiError::UnknownMethod(_)) => 5,
        Err(ApiError::NotFound(_)) => 6,
        Err(ApiError::Internal(_)) => 7,
        Err(ApiError::Busy(_)) => 8,
    }
}

/// Methods that never run Python on their own and only read under locks
/// held for a copy. With no middleware registered they may run on an async
/// runtime's worker thread instead of a blocking pool
/// ([`Api::call_if_quick`]). The one wait they can meet is `agents.list`
/// behind the directory's write lock while a user change is made durable (a
/// few ms, on a rare admin operation): accepted for the hottest read.
const QUICK_METHODS: [&str; 4] = ["agents.list", "shared.get", "plugins.list", "audit.list"];

/// One API method and its middleware.
pub(crate) struct Method {
    name: &'static str,
    /// In [`QUICK_METHODS`].
    quick: bool,
    /// Calls by outcome, indexed like [`CALL_OUTCOMES`].
    outcomes: [AtomicU64; CALL_OUTCOMES.len()],
    /// How long calls that reached the method took, middleware included.
    latency: LatencyHistogram,
    handler: Handler,
}

struct ApiInner {
    core: Arc<Core>,
    methods: HashMap<&'static str, Arc<Method>>,
    /// Middleware by method name, in the registry's copy-on-write slots,
    /// so a call takes a snapshot and lets the lock go before any
    /// middleware runs.
    middlewares: Slots<&'static str, dyn Middleware>,
    /// Set once when the loader is wired in; weak, because the loader holds
    /// the API and a strong cycle would keep both alive forever.
    plugins: OnceLock<Weak<dyn PluginControl>>,
    /// The budget and breaker every plugin registration runs under.
    policy: HookPolicy,
    /// `agents.list` as JSON, with the directory generation it was read at:
    /// a wallboard's poll of 500 agents is a copy of this until an agent
    /// or user changes, not 500 records built and serialized (issue 13).
    agents_json: RwLock<Option<(u64, Arc<str>)>>,
}

/// What [`Api::call_if_quick`] (a [`Value`]) or [`Api::call_if_quick_json`]
/// (JSON text) did with a call.
#[derive(Debug)]
pub enum QuickCall<T = Value> {
    /// It ran right here; this is its result.
    Answered(Result<T, ApiError>),
    /// It may block or run Python: make it with [`Api::call`] on a thread
    /// that may block. The parameters come back untouched.
    NotQuick(Vec<Value>),
}

/// The method registry over one [`Core`]; cheap to clone.
#[derive(Clone)]
pub struct Api {
    inner: Arc<ApiInner>,
}

impl Api {
    /// The API with every built-in method of SPEC section 8, with the
    /// default hook budget and breaker.
    pub fn new(core: Arc<Core>) -> Self {
        Self::with_policy(core, HookPolicy::default())
    }

    /// The API with every built-in method, running plugin registrations
    /// under `policy`.
    pub fn with_policy(core: Arc<Core>, policy: HookPolicy) -> Self {
        let methods = builtins::METHODS
            .iter()
            .map(|(name, handler)| {
                (
                    *name,
                    Arc::new(Method {
                        name,
                        quick: QUICK_METHODS.contains(name),
                        outcomes: std::array::from_fn(|_| AtomicU64::new(0)),
                        latency: LatencyHistogram::new(),
                        handler: *handler,
                    }),
                )
            })
            .collect();
        Api {
            inner: Arc::new(ApiInner {
                core,
                methods,
                middlewares: Slots::new(RegistrationKind::Middleware),
                plugins: OnceLock::new(),
                policy,
                agents_json: RwLock::new(None),
            }),
        }
    }

    /// The domain state behind this API.
    pub fn core(&self) -> &Arc<Core> {
        &self.inner.core
    }

    /// How many calls each method answered with each outcome (see
    /// [`CALL_OUTCOMES`]), leaving out pairs that never happened.
    pub fn call_counts(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut counts = Vec::new();
        for name in self.method_names() {
            let Some(method) = self.inner.methods.get(name) else {
                continue;
            };
            for (outcome, counter) in CALL_OUTCOMES.iter().zip(&method.outcomes) {
                let count = counter.load(Ordering::Relaxed);
                if count > 0 {
                    counts.push((name, *outcome, count));
                }
            }
        }
        counts
    }

    /// How long each method's calls took, from the moment the caller was
    /// known to the answer, middleware included, leaving out methods never
    /// called. A call refused for its session is counted in
    /// [`Api::call_counts`] only.
    pub fn call_latencies(&self) -> Vec<(&'static str, HistogramSnapshot)> {
        self.method_names()
            .into_iter()
            .filter_map(|name| {
                let latency = self.inner.methods.get(name)?.latency.snapshot();
                (latency.count() > 0).then_some((name, latency))
            })
            .collect()
    }

    /// The budget and breaker threshold every plugin registration runs under.
    pub fn policy(&self) -> &HookPolicy {
        &self.inner.policy
    }

    /// Every registration slot of the server: the core's and the middleware.
    fn slots(&self) -> [&dyn AnySlots; 4] {
        let [callbacks, status_hook, shared_hooks] = self.inner.core.slots();
        [
            callbacks,
            status_hook,
            shared_hooks,
            &self.inner.middlewares,
        ]
    }

    /// Every registration of every kind, with its owner and numbers, in
    /// registration order: what `plugins.list`, the metrics endpoint and
    /// `ucs plugin check` report.
    pub fn registrations(&self) -> Vec<RegistrationInfo> {
        registrations_in(&self.slots())
    }

    /// What some version of the plugin `name` has registered now.
    pub fn registrations_of_plugin(&self, name: &str) -> Vec<RegistrationInfo> {
        let mut found = self.registrations();
        found.retain(|registration| registration.owner.is_plugin(name));
        found
    }

    /// Wires in the plugin loader; only the first call has an effect.
    pub fn set_plugin_control(&self, control: Weak<dyn PluginControl>) {
        if self.inner.plugins.set(control).is_err() {
            tracing::warn!("plugin control was already set; ignoring the second one");
        }
    }

    pub(crate) fn plugin_control(&self) -> Result<Arc<dyn PluginControl>, ApiError> {
        self.inner
            .plugins
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| ApiError::Processing("plugins are not enabled on this server".into()))
    }

    /// The names of every method, sorted.
    pub fn method_names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.inner.methods.keys().copied().collect();
        names.sort_unstable();
        names
    }

    fn method(&self, name: &str) -> Result<&Arc<Method>, ApiError> {
        self.inner
            .methods
            .get(name)
            .ok_or_else(|| ApiError::UnknownMethod(name.to_owned()))
    }

    /// Calls `method` for the session `sid` (D3): an unknown sid fails
    /// before the chain runs.
    pub fn call(&self, sid: &str, method: &str, params: Vec<Value>) -> Result<Value, ApiError> {
        let caller = self.caller(sid, self.method(method).ok())?;
        let _session = ucs_core::sessions::in_session(sid);
        self.call_as(caller, method, params)
    }

    /// The user behind `sid`; a refused sid counts against `method`, if the
    /// method exists, as an unauthenticated call.
    fn caller(&self, sid: &str, method: Option<&Arc<Method>>) -> Result<User, ApiError> {
        self.inner.core.caller(sid).map_err(|err| {
            let err = ApiError::from(err);
            if let Some(method) = method {
                method.count_refused::<()>(&Err(err.clone()));
            }
            err
        })
    }

    /// Calls `method` for `sid` right here if that cannot block or run
    /// Python: a quick method with no middleware registered at the moment of
    /// the call. Otherwise hands `params` back untouched, for the caller to
    /// make the call on a thread that may block ([`Api::call`]).
    pub fn call_if_quick(&self, sid: &str, method: &str, params: Vec<Value>) -> QuickCall {
        let Ok(entry) = self.method(method) else {
            return QuickCall::NotQuick(params);
        };
        // The same snapshot decides and runs the call: a middleware
        // registered after it applies from the next call on, as for any
        // call already past its snapshot of the chain.
        let chain = self.chain(entry);
        if !(entry.quick && chain.is_none()) {
            return QuickCall::NotQuick(params);
        }
        let caller = match self.caller(sid, Some(entry)) {
            Ok(caller) => caller,
            Err(err) => return QuickCall::Answered(Err(err)),
        };
        let started = Instant::now();
        // No session mark (`Api::call` sets one): quick methods only read,
        // so none of them can close a session, and this is the hot path.
        let result = self.run_chain(entry, chain, caller, params);
        entry.count(&result, started);
        QuickCall::Answered(result)
    }

    /// [`Api::call_if_quick`] with the answer as JSON text, for a wire:
    /// `agents.list` with no middleware comes from a copy kept while the
    /// directory's generation stays the same, counted and timed like any
    /// call; everything else is serialized as it is answered.
    pub fn call_if_quick_json(
        &self,
        sid: &str,
        method: &str,
        params: Vec<Value>,
    ) -> QuickCall<Arc<str>> {
        if method == "agents.list"
            && params.is_empty()
            && let Ok(entry) = self.method(method)
            && self.chain(entry).is_none()
        {
            let caller = match self.caller(sid, Some(entry)) {
                Ok(caller) => caller,
                Err(err) => return QuickCall::Answered(Err(err)),
            };
            let started = Instant::now();
            let result = self.agents_list_json(entry, &caller);
            entry.count(&result, started);
            return QuickCall::Answered(result);
        }
        match self.call_if_quick(sid, method, params) {
            QuickCall::Answered(result) => {
                QuickCall::Answered(result.map(|value| Arc::from(value.to_json_string())))
            }
            QuickCall::NotQuick(params) => QuickCall::NotQuick(params),
        }
    }

    /// `agents.list` as JSON: the kept copy if the directory has not
    /// changed since it was made, else a new one.
    fn agents_list_json(&self, entry: &Arc<Method>, caller: &User) -> Result<Arc<str>, ApiError> {
        // Read before the agents: a change after this read makes the copy
        // look old, never an old copy look new (`Directory::generation`).
        let generation = self.inner.core.directory().generation();
        if let Some((kept_at, json)) = &*self
            .inner
            .agents_json
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            && *kept_at == generation
        {
            return Ok(Arc::clone(json));
        }
        let json: Arc<str> = Arc::from((entry.handler)(self, caller, &[])?.to_json_string());
        let mut kept = self
            .inner
            .agents_json
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if kept
            .as_ref()
            .is_none_or(|(kept_at, _)| *kept_at < generation)
        {
            *kept = Some((generation, Arc::clone(&json)));
        }
        Ok(json)
    }

    /// Calls `method` as `caller`, who is already authenticated.
    pub fn call_as(
        &self,
        caller: User,
        method: &str,
        params: Vec<Value>,
    ) -> Result<Value, ApiError> {
        let _acting = ucs_core::audit::act_as(caller.id); // audits name the caller (issue 12)
        let started = Instant::now();
        let method = self.method(method)?;
        let result = self.run_chain(method, self.chain(method), caller, params);
        method.count(&result, started);
        result
    }

    /// A snapshot of `method`'s middleware chain, outermost first; `None`
    /// when there is none.
    fn chain(&self, method: &Method) -> Option<Arc<[MiddlewareRegistration]>> {
        self.inner.middlewares.snapshot(method.name)
    }

    fn run_chain(
        &self,
        method: &Arc<Method>,
        chain: Option<Arc<[MiddlewareRegistration]>>,
        caller: User,
        params: Vec<Value>,
    ) -> Result<Value, ApiError> {
        let Some(chain) = chain else {
            // No middleware: the handler runs directly, with no chain cost.
            return (method.handler)(self, &caller, &params);
        };
        let mut args = Vec::with_capacity(params.len() + 1);
        args.push(caller.to_value());
        args.extend(params);
        let next = Next {
            api: self.clone(),
            method: Arc::clone(method),
            chain,
            index: 0,
            caller: Arc::new(caller),
        };
        next.call(args)
    }

    /// Wraps `method` in `middleware`, inside every middleware added before
    /// it: the first registered is the outermost (D2). An unknown method is a
    /// processing error (M1), so a typo does not pass silently.
    pub fn add_middleware(
        &self,
        method: &str,
        owner: Owner,
        middleware: Arc<dyn Middleware>,
    ) -> Result<RegistrationId, ApiError> {
        let method = self.method(method).map_err(|_| {
            ApiError::Processing(format!(
                "cannot add middleware: unknown API method {}",
                ucs_core::echoed(method)
            ))
        })?;
        Ok(self.inner.middlewares.add(method.name, owner, middleware)?)
    }

    /// The middlewares of `method`, outermost first. Removal by Python `==`
    /// compares these with no lock held, then removes by id.
    pub fn middlewares(&self, method: &str) -> Result<Arc<[MiddlewareRegistration]>, ApiError> {
        let method = self.method(method)?;
        Ok(self.chain(method).unwrap_or_else(|| Arc::from([])))
    }

    /// Removes the middleware registration `id`; `None` if it was not there.
    pub fn remove_middleware(&self, id: RegistrationId) -> Option<RegistrationInfo> {
        self.inner.middlewares.remove(id)
    }

    /// Removes everything `owner` left registered anywhere: hooks, callbacks
    /// and middleware (L4), and says what it was, in registration order.
    ///
    /// Their numbers go with them, so a reload starts with fresh counters
    /// and closed breakers (issue 8).
    pub fn remove_owned_by(&self, owner: &Owner) -> Vec<RegistrationInfo> {
        remove_owned_by_in(&self.slots(), owner)
    }
}

impl Method {
    /// Counts a call refused before it reached the method.
    fn count_refused<T>(&self, result: &Result<T, ApiError>) {
        self.outcomes[outcome_index(result)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a call that reached the method at `started`, and its time.
    fn count<T>(&self, result: &Result<T, ApiError>, started: Instant) {
        self.count_refused(result);
        self.latency.record(started.elapsed());
    }
}
