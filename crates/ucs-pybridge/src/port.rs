//! What a plugin's `ucs` object reaches the server through (SPEC I1).
//!
//! A plugin runs either inside the server ([`InProcessPort`], over the
//! server's own [`Api`]) or in a plugin host, a child process whose port
//! sends each step over the link to the server (`ucs-host`). The `ucs`
//! object, the modules and the adapters are the same code in both, written
//! once against this trait, so a plugin cannot tell the modes apart.
//!
//! Every method but the `remove_*` ones is called with the interpreter
//! detached (the `ucs` object detaches first, L5). The `remove_*` ones get
//! the interpreter because finding the registration to remove compares
//! callables with Python `==`; they detach themselves before anything that
//! may wait.

use std::sync::{Arc, Mutex, PoisonError};

use pyo3::prelude::*;
use ucs_api::{Api, ApiError, HookPolicy};
use ucs_core::users::ADMIN_USER_ID;
use ucs_core::{Owner, UserId, Value};

use crate::adapters::{PyEventCallback, PyMiddleware, PySharedHook, PyStatusHook, as_callable};

/// The server as one plugin's `ucs` object sees it.
pub trait ServerPort: Send + Sync + 'static {
    /// The plugin version this port serves; everything it registers is
    /// recorded under it (L4).
    fn owner(&self) -> &Owner;

    /// The policy the plugin's callables are measured under on this side
    /// of the port.
    fn policy(&self) -> HookPolicy;

    /// The plugin's settings, as the operator gave them for this version
    /// (`[plugins.NAME.config]`, read at each load; issue 16 item 4): a
    /// map, empty when none were given. `ucs.config` shows it read-only.
    fn config(&self) -> &Value;

    /// Every agent as the dict of `ucs.agents.getAgents()`.
    fn agents(&self) -> Vec<Value>;

    /// `(user id, field)` of every user; an unknown field is an
    /// invalid-input error naming it.
    fn user_field(&self, field: &str) -> Result<Vec<(UserId, Value)>, ApiError>;

    /// The shared data under `identificator` (`{}` if never set, D4).
    fn shared_get(&self, identificator: &str) -> Value;

    /// The plugin's own superuser session, opened on first use and again
    /// once it expires.
    fn plugin_sid(&self) -> Result<String, ApiError>;

    /// Calls an API method through its middleware chain, as the gRPC
    /// `Api.Call` does.
    fn call(&self, sid: &str, method: &str, params: Vec<Value>) -> Result<Value, ApiError>;

    /// Registers an event callback (E1); unknown events are a processing
    /// error (E2).
    fn add_callback(&self, event: &str, callback: Arc<PyEventCallback>) -> Result<(), ApiError>;

    /// Removes one callback of `event` equal (`==`) to `callback`; `Ok(false)`
    /// if none is.
    fn remove_callback(
        &self,
        py: Python<'_>,
        event: &str,
        callback: &Bound<'_, PyAny>,
    ) -> Result<bool, ApiError>;

    /// Registers the one status hook (H1).
    fn add_status_hook(&self, hook: Arc<PyStatusHook>) -> Result<(), ApiError>;

    /// Removes the status hook if this plugin owns it (H1).
    fn remove_status_hook(&self);

    /// Registers the change hook of `identificator` (S1).
    fn add_shared_hook(&self, identificator: &str, hook: Arc<PySharedHook>)
    -> Result<(), ApiError>;

    /// Removes the change hook of `identificator` if this plugin owns it (S1).
    fn remove_shared_hook(&self, identificator: &str);

    /// Wraps `method` in `middleware` (M1); unknown methods are a
    /// processing error.
    fn add_middleware(&self, method: &str, middleware: Arc<PyMiddleware>) -> Result<(), ApiError>;

    /// Removes one middleware of `method` equal (`==`) to `middleware`;
    /// `Ok(false)` if none is.
    fn remove_middleware(
        &self,
        py: Python<'_>,
        method: &str,
        middleware: &Bound<'_, PyAny>,
    ) -> Result<bool, ApiError>;
}

/// The port of a plugin running inside the server: straight to its [`Api`].
pub struct InProcessPort {
    /// The plugin version, recorded on everything it registers.
    owner: Owner,
    /// The server's API, and through it the core.
    api: Api,
    /// The plugin's own session, kept so `ucs.sid` is stable while valid.
    sid: Mutex<Option<String>>,
    /// See [`ServerPort::config`].
    config: Value,
}

impl InProcessPort {
    /// The port of `owner` onto `api`.
    pub fn new(api: Api, owner: Owner, config: Value) -> Arc<Self> {
        Arc::new(InProcessPort {
            owner,
            api,
            sid: Mutex::new(None),
            config,
        })
    }
}

/// `(user id, field)` of every user of `api`, the one reading of
/// `ucs.tree.getUsers(field)` for both ports.
pub fn user_field_of(api: &Api, field: &str) -> Result<Vec<(UserId, Value)>, ApiError> {
    api.core()
        .directory()
        .list()
        .iter()
        .map(|user| {
            user.field(field)
                .map(|value| (user.id, value))
                .ok_or_else(|| {
                    ApiError::field(
                        "field",
                        format!("users have no field {}", ucs_core::echoed(field)),
                    )
                })
        })
        .collect()
}

/// The session `cached` holds if it is still valid, else a fresh superuser
/// session (plugins are trusted server code), the one `ucs.sid` of both
/// ports.
pub fn plugin_sid_of(api: &Api, cached: &Mutex<Option<String>>) -> Result<String, ApiError> {
    let mut sid = cached.lock().unwrap_or_else(PoisonError::into_inner);
    let sessions = api.core().sessions();
    if let Some(open) = sid.as_ref()
        && sessions.resolve(open).is_ok()
    {
        return Ok(open.clone());
    }
    let fresh = sessions.open(ADMIN_USER_ID)?;
    *sid = Some(fresh.clone());
    Ok(fresh)
}

impl ServerPort for InProcessPort {
    fn owner(&self) -> &Owner {
        &self.owner
    }

    fn config(&self) -> &Value {
        &self.config
    }

    fn policy(&self) -> HookPolicy {
        *self.api.policy()
    }

    fn agents(&self) -> Vec<Value> {
        let agents = self.api.core().directory().agents();
        agents.iter().map(|agent| agent.to_value()).collect()
    }

    fn user_field(&self, field: &str) -> Result<Vec<(UserId, Value)>, ApiError> {
        user_field_of(&self.api, field)
    }

    fn shared_get(&self, identificator: &str) -> Value {
        self.api.core().shared().get(identificator)
    }

    fn plugin_sid(&self) -> Result<String, ApiError> {
        plugin_sid_of(&self.api, &self.sid)
    }

    fn call(&self, sid: &str, method: &str, params: Vec<Value>) -> Result<Value, ApiError> {
        self.api.call(sid, method, params)
    }

    fn add_callback(&self, event: &str, callback: Arc<PyEventCallback>) -> Result<(), ApiError> {
        self.api
            .core()
            .events()
            .add_callback(event, self.owner.clone(), callback)
            .map(drop)
            .map_err(ApiError::from)
    }

    fn remove_callback(
        &self,
        py: Python<'_>,
        event: &str,
        callback: &Bound<'_, PyAny>,
    ) -> Result<bool, ApiError> {
        let events = self.api.core().events();
        let registrations = py.detach(|| events.callbacks(event))?;
        // Compare with no server lock held: `==` may run Python.
        let found = registrations.iter().find(|registration| {
            as_callable(registration.target.as_any())
                .is_some_and(|adapter| adapter.equals(callback))
        });
        Ok(match found {
            Some(registration) => {
                let id = registration.id;
                py.detach(|| events.remove_callback(id));
                true
            }
            None => false,
        })
    }

    fn add_status_hook(&self, hook: Arc<PyStatusHook>) -> Result<(), ApiError> {
        self.api
            .core()
            .status_hook()
            .add(self.owner.clone(), hook)
            .map(drop)
            .map_err(ApiError::from)
    }

    fn remove_status_hook(&self) {
        self.api.core().status_hook().remove(&self.owner);
    }

    fn add_shared_hook(
        &self,
        identificator: &str,
        hook: Arc<PySharedHook>,
    ) -> Result<(), ApiError> {
        self.api
            .core()
            .shared()
            .add_hook(identificator, self.owner.clone(), hook)
            .map(drop)
            .map_err(ApiError::from)
    }

    fn remove_shared_hook(&self, identificator: &str) {
        self.api
            .core()
            .shared()
            .remove_hook(identificator, &self.owner);
    }

    fn add_middleware(&self, method: &str, middleware: Arc<PyMiddleware>) -> Result<(), ApiError> {
        self.api
            .add_middleware(method, self.owner.clone(), middleware)
            .map(drop)
    }

    fn remove_middleware(
        &self,
        py: Python<'_>,
        method: &str,
        middleware: &Bound<'_, PyAny>,
    ) -> Result<bool, ApiError> {
        let registrations = py.detach(|| self.api.middlewares(method))?;
        let found = registrations.iter().find(|registration| {
            as_callable(registration.target.as_any())
                .is_some_and(|adapter| adapter.equals(middleware))
        });
        Ok(match found {
            Some(registration) => {
                let id = registration.id;
                py.detach(|| self.api.remove_middleware(id));
                true
            }
            None => false,
        })
    }
}
