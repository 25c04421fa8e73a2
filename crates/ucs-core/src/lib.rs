//! The UCS domain, free of Python, gRPC and I/O.
//!
//! # Layout
//! - [`users`]: the [`Directory`] of users, with each agent's status.
//! - [`sessions`]: sids and their idle expiry.
//! - [`agents`]: the status pipeline and its one hook slot (SPEC H1-H6).
//! - [`shared`]: shared data and its per-identificator hooks (S1-S4, D4).
//! - [`events`]: callbacks in commit order (E1, E2, D5) and stream sinks.
//! - [`value`]: the [`Value`] that crosses every boundary (D4).
//! - [`registration`]: the one registry of everything plugins register,
//!   [`Slots`] with owners, ids, kinds and metrics, so a plugin's leftovers
//!   can be found and removed (L4).
//! - [`metrics`]: each registration's numbers, time budget and breaker, and
//!   [`metrics::Metered`], the one path every call into a plugin takes.
//! - [`bulkhead`]: each plugin version's bounded share of the server's
//!   threads.
//! - [`store`]: the [`Store`] trait that keeps users and shared data across
//!   restarts; a write reaches it before memory and before the call returns.
//!
//! Hooks and callbacks are trait objects: Python plugs in from `ucs-pybridge`,
//! Rust closures stand in for it in tests. No lock of this crate is ever held
//! while one runs (L5).

pub mod agents;
pub mod audit;
pub mod bulkhead;
pub mod error;
pub mod events;
pub mod metrics;
pub mod registration;
pub mod sessions;
pub mod shared;
pub mod store;
pub mod turns;
pub mod users;
pub mod value;

use std::sync::Arc;
use std::time::Duration;

pub use agents::{BLOCKED_BY_HOOK, StatusHook, StatusHookSlot, StatusVerdict};
pub use audit::{AuditKind, AuditRecord, AuditTrail};
pub use error::{CoreError, ECHO_MAX_CHARS, Echoed, FieldErrors, echoed};
pub use events::{Event, EventBus, EventCallback, EventPayload, EventSink};
pub use registration::{
    AnySlots, Owner, PluginFailure, Registrable, RegistrationId, RegistrationInfo,
    RegistrationKind, Slots,
};
pub use sessions::{Sessions, Sid};
pub use shared::{SharedData, SharedDataHook, SharedVerdict};
pub use store::{Store, StoreError, StoredState, StoredUser};
pub use users::{Agent, AgentStatus, Directory, NewUser, User, UserEdit, UserId};
pub use value::{Map, MapKey, Value};

/// Tunables of the core, with defaults that suit a fresh install.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// How long a session may stay unused.
    pub session_idle_timeout: Duration,
    /// How long a change waits for another thread's event callbacks.
    pub callback_wait_limit: Duration,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            session_idle_timeout: sessions::DEFAULT_SESSION_IDLE_TIMEOUT,
            callback_wait_limit: events::DEFAULT_CALLBACK_WAIT_LIMIT,
        }
    }
}

/// The whole domain state of one server. Built by [`Core::new`] (memory
/// only) or [`CoreBuilder`]; its parts are reached through accessors, so
/// nothing replaces one after construction.
pub struct Core {
    /// Users and agents' statuses.
    directory: Directory,
    /// Open sessions.
    sessions: Sessions,
    /// Event callbacks and stream sinks.
    events: EventBus,
    /// The one status hook (H1).
    status_hook: StatusHookSlot,
    /// Shared data and its hooks.
    shared: SharedData,
    /// Recent vetoes, rewrites and plugin lifecycle changes (issue 8).
    audit: AuditTrail,
    /// Serialises status changes per agent without a lock across the hook.
    agent_turns: turns::Turns<UserId>,
    /// Serialises sets per identificator without a lock across the hook.
    shared_turns: turns::Turns<String>,
    /// Where shared-data sets are made durable before they are committed;
    /// the directory holds the same store for user changes.
    store: Arc<dyn Store>,
}

impl Default for Core {
    fn default() -> Self {
        Self::new(CoreConfig::default())
    }
}

impl Core {
    /// An empty server state that lives only in memory and is gone when
    /// the process ends (tests, demos).
    pub fn new(config: CoreConfig) -> Self {
        Self::assemble(
            config,
            Directory::new(),
            SharedData::default(),
            Arc::new(store::NoStore),
        )
    }

    /// A builder, for a core over a store or with other tunables.
    pub fn builder() -> CoreBuilder {
        CoreBuilder::default()
    }

    fn assemble(
        config: CoreConfig,
        directory: Directory,
        shared: SharedData,
        store: Arc<dyn Store>,
    ) -> Self {
        Core {
            directory,
            sessions: Sessions::new(config.session_idle_timeout),
            events: EventBus::new(config.callback_wait_limit),
            status_hook: StatusHookSlot::default(),
            shared,
            audit: AuditTrail::new(audit::DEFAULT_AUDIT_CAPACITY),
            agent_turns: turns::Turns::new(),
            shared_turns: turns::Turns::new(),
            store,
        }
    }

    /// Delivers the events this thread committed while it held a turn (in
    /// commit order), once it holds none. The core's own changes do this
    /// themselves; an outside holder of turns, such as the plugin loader,
    /// calls it after releasing them.
    pub fn deliver_deferred_events(&self) {
        self.events.deliver_deferred();
    }

    /// Keeps `record` in the audit trail and publishes it as an `audit.*`
    /// event; call with no lock held (it may run event callbacks).
    pub fn record_audit(&self, record: AuditRecord) {
        self.audit.push(record.clone());
        let committed = self.events.commit(EventPayload::Audit(record));
        self.events.dispatch_through(committed);
    }

    /// Logs in and returns the new sid with the user.
    pub fn login(&self, username: &str, password: &str) -> Result<(Sid, User), CoreError> {
        let user = self.directory.verify_login(username, password)?;
        let sid = self.sessions.open(user.id)?;
        Ok((sid, user))
    }

    /// The user behind `sid`; a session whose user was deleted is gone too.
    pub fn caller(&self, sid: &str) -> Result<User, CoreError> {
        let user_id = self.sessions.resolve(sid)?;
        self.directory
            .get(user_id)
            .ok_or(CoreError::Unauthenticated)
    }

    /// Deletes a user and ends the user's sessions.
    pub fn delete_user(&self, id: UserId) -> Result<User, CoreError> {
        let user = self.directory.delete(id)?;
        self.sessions.close_all_of(id);
        Ok(user)
    }

    /// Users and agents' statuses.
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// Open sessions.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// Event callbacks and stream sinks.
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// The one status hook (H1).
    pub fn status_hook(&self) -> &StatusHookSlot {
        &self.status_hook
    }

    /// Shared data and its hooks.
    pub fn shared(&self) -> &SharedData {
        &self.shared
    }

    /// Recent vetoes, rewrites and plugin lifecycle changes.
    pub fn audit(&self) -> &AuditTrail {
        &self.audit
    }

    /// The core's registration slots, one per kind it holds (callbacks, the
    /// status hook, shared-data hooks); the API adds its middleware slots.
    pub fn slots(&self) -> [&dyn AnySlots; 3] {
        [
            self.events.slots(),
            self.status_hook.slots(),
            self.shared.slots(),
        ]
    }
}

/// Builds a [`Core`] over a store, with tunables other than the defaults.
#[derive(Default)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct CoreBuilder {
    config: CoreConfig,
    store: Option<Arc<dyn Store>>,
}

impl CoreBuilder {
    /// The tunables (idle timeout, callback wait limit).
    pub fn config(mut self, config: CoreConfig) -> Self {
        self.config = config;
        self
    }

    /// How long a session may stay unused.
    pub fn session_idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.session_idle_timeout = timeout;
        self
    }

    /// Keeps users and shared data in `store`: the core starts with what it
    /// holds (every agent `AGENT_OFFLINE`, no sessions), and every later
    /// user change and shared-data set is written to it before memory
    /// changes and before the call returns; a write it refuses fails the
    /// call with [`CoreError::Storage`] and changes nothing.
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// The core; fails only if the store cannot be read.
    pub fn build(self) -> Result<Core, CoreError> {
        let Some(store) = self.store else {
            return Ok(Core::new(self.config));
        };
        let stored = store.load()?;
        let directory =
            Directory::with_store(Arc::clone(&store), stored.users, stored.next_user_id)?;
        let shared = SharedData::with_values(stored.shared);
        Ok(Core::assemble(self.config, directory, shared, store))
    }
}
