//! Events: callbacks per event name (SPEC E1, E2) run in commit order after
//! the change and before the call that caused it returns (D5), plus sinks for
//! an external event stream.
//!
//! Ordering without a lock held across Python: every committed event gets a
//! sequence number while the data lock is held, and goes into one queue. The
//! committing thread then dispatches the queue up to its own event; only one
//! thread dispatches at a time, so every callback sees events in commit
//! order. A change made by a callback (the dispatcher thread itself) is not
//! dispatched inside that callback, which would put it before the rest of the
//! current event's callbacks: the dispatcher delivers it next, after the
//! current event, and before the outermost call returns. A thread waiting for
//! another dispatcher stops waiting after [`EventBus::wait_limit`], so a
//! callback that blocks can delay its events but never hang the server (L5).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use crate::audit::{AuditKind, AuditRecord};
use crate::error::CoreError;
use crate::registration::{
    Owner, PluginFailure, Registered, Registrable, RegistrationId, RegistrationInfo,
    RegistrationKind, Slots,
};
use crate::users::{Agent, AgentStatus};
use crate::value::Value;

/// The event after an agent's status changed: `events.EVENT_AGENT_STATUS`.
pub const EVENT_AGENT_STATUS: &str = "agent.status";
/// The event after shared data changed: `events.EVENT_SHARED_DATA`.
pub const EVENT_SHARED_DATA: &str = "shared.data";
/// Every event a callback may register for (E2: others are refused): the
/// two of the plugin API and the audit trail's `audit.*` (issue 8).
pub const KNOWN_EVENTS: [&str; 2 + AuditKind::ALL.len()] = {
    let mut names = [EVENT_AGENT_STATUS; 2 + AuditKind::ALL.len()];
    names[1] = EVENT_SHARED_DATA;
    let mut index = 0;
    while index < AuditKind::ALL.len() {
        names[2 + index] = AuditKind::ALL[index].event_name();
        index += 1;
    }
    names
};

/// How long a thread waits for another thread's callbacks before its own call
/// returns anyway, unless configured.
pub const DEFAULT_CALLBACK_WAIT_LIMIT: Duration = Duration::from_secs(5);

/// What happened, with what callbacks receive.
#[derive(Debug, Clone, PartialEq)]
pub enum EventPayload {
    /// An agent's status changed (E2: `callback(agent, args)`).
    AgentStatus {
        /// The agent after the change.
        agent: Agent,
        /// The status before the change.
        previous_status: AgentStatus,
        /// The reason before the change.
        previous_reason: String,
    },
    /// Shared data changed (E2: `callback(identificator, data)`).
    SharedData {
        /// Which shared data.
        identificator: String,
        /// The data stored, after any hook.
        data: Value,
    },
    /// A record of the audit trail (issue 8).
    Audit(AuditRecord),
}

impl EventPayload {
    /// The event name callbacks register for.
    pub fn name(&self) -> &'static str {
        match self {
            EventPayload::AgentStatus { .. } => EVENT_AGENT_STATUS,
            EventPayload::SharedData { .. } => EVENT_SHARED_DATA,
            EventPayload::Audit(record) => record.kind.event_name(),
        }
    }
}

/// A committed change, numbered in commit order.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Increases by one with every event, in commit order.
    pub seq: u64,
    /// What happened.
    pub payload: EventPayload,
}

impl Event {
    /// The event name callbacks register for.
    pub fn name(&self) -> &'static str {
        self.payload.name()
    }

    /// The payload as one value, for external subscribers.
    pub fn data(&self) -> Value {
        match &self.payload {
            EventPayload::AgentStatus {
                agent,
                previous_status,
                previous_reason,
            } => Value::record([
                ("agent", agent.to_value()),
                ("previous_status", Value::Int(previous_status.code())),
                ("previous_reason", Value::from(previous_reason.as_str())),
            ]),
            EventPayload::SharedData {
                identificator,
                data,
            } => Value::record([
                ("identificator", Value::from(identificator.as_str())),
                ("data", data.clone()),
            ]),
            EventPayload::Audit(record) => record.to_value(),
        }
    }
}

/// A function called after each event of one name (E1).
pub trait EventCallback: Registrable {
    /// Reacts to `event`; a failure is logged and changes nothing (D5).
    fn on_event(&self, event: &Event) -> Result<(), PluginFailure>;
}

/// Receives every event at commit, e.g. to feed an external stream.
///
/// Called with the event queue locked, so it must return at once: hand the
/// event to a bounded channel and drop it if the consumer is slow.
pub trait EventSink: Send + Sync {
    /// Takes one event; must not block or call back into the server.
    fn deliver(&self, event: &Event);
}

/// One registered callback.
pub type CallbackRegistration = Registered<dyn EventCallback>;

/// How many changes in a row event callbacks may cause, each made by a
/// callback of the one before (issue 15 item 2): like a packet's TTL, it
/// ends a ping-pong of callbacks that answer each other's changes, which
/// would otherwise keep the call that started it from ever returning (D5).
/// Far above what a plugin reacting to a change needs.
pub const MAX_CASCADE_DEPTH: u32 = 8;

/// A committed event waiting for its callbacks, with what caused it.
struct Queued {
    event: Arc<Event>,
    /// 0 for a change an API call or a plugin thread made; n + 1 for one a
    /// callback of an event of depth n made.
    depth: u32,
    /// The callback that made the change, if one did.
    cause: Option<(Owner, Arc<str>)>,
}

struct DispatchState {
    /// Committed events not yet taken by a dispatcher, in seq order.
    pending: VecDeque<Queued>,
    /// Events whose callbacks are running now.
    in_progress: BTreeSet<u64>,
    /// The thread dispatching, if any; only one at a time keeps commit order.
    dispatcher: Option<ThreadId>,
    /// The seq the next committed event gets.
    next_seq: u64,
    /// External sinks, fed at commit.
    sinks: Vec<(RegistrationId, Arc<dyn EventSink>)>,
    /// Threads waiting on `dispatched`: a dispatcher signals only when
    /// there are any, since a signal is a system call even with no one to
    /// wake, on every dispatched event.
    waiters: usize,
}

impl DispatchState {
    fn is_done(&self, seq: u64) -> bool {
        self.pending
            .front()
            .is_none_or(|front| front.event.seq > seq)
            && !self.in_progress.contains(&seq)
    }
}

/// Callbacks by event name, the commit-ordered queue and the sinks.
pub struct EventBus {
    /// Callbacks by event name, copy-on-write, so dispatch clones an `Arc`
    /// and lets the lock go before any callback runs.
    callbacks: Slots<&'static str, dyn EventCallback>,
    dispatch: Mutex<DispatchState>,
    dispatched: Condvar,
    wait_limit: Duration,
}

thread_local! {
    /// The highest seq committed by callbacks this thread is dispatching,
    /// which its dispatch loop must deliver before it returns.
    static NESTED_THROUGH: Cell<u64> = const { Cell::new(0) };
    /// The highest seq committed while this thread held a turn, which the
    /// change holding it delivers once the turn is gone.
    static DEFERRED_THROUGH: Cell<u64> = const { Cell::new(0) };
    /// The depth a change committed on this thread now gets: one more
    /// than the event whose callbacks run here, 0 outside callbacks.
    static CASCADE_DEPTH: Cell<u32> = const { Cell::new(0) };
    /// The callback running on this thread at the last depth a cascade may
    /// reach, to name in the log if its changes go one deeper; `None`
    /// everywhere else.
    static RUNNING_CALLBACK: RefCell<Option<(Owner, Arc<str>)>> = const { RefCell::new(None) };
}

/// Returned by a commit: the seq to dispatch through, if any callback wants it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Committed(Option<u64>);

impl Committed {
    /// No event to dispatch.
    pub(crate) const NOTHING: Committed = Committed(None);
}

impl EventBus {
    /// A bus whose waiters give up after `wait_limit` (see the module doc).
    pub fn new(wait_limit: Duration) -> Self {
        EventBus {
            callbacks: Slots::new(RegistrationKind::Callback),
            dispatch: Mutex::new(DispatchState {
                pending: VecDeque::new(),
                in_progress: BTreeSet::new(),
                dispatcher: None,
                next_seq: 1,
                sinks: Vec::new(),
                waiters: 0,
            }),
            dispatched: Condvar::new(),
            wait_limit,
        }
    }

    /// How long a call waits for other threads' callbacks before returning.
    pub fn wait_limit(&self) -> Duration {
        self.wait_limit
    }

    fn state(&self) -> MutexGuard<'_, DispatchState> {
        // Each update of the state is a single step; poisoning cannot tear it.
        self.dispatch.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn known_event(event: &str) -> Result<&'static str, CoreError> {
        KNOWN_EVENTS
            .into_iter()
            .find(|known| *known == event)
            .ok_or_else(|| {
                CoreError::Processing(format!("unknown event {}", crate::error::echoed(event)))
            })
    }

    /// Registers `callback` for `event` (E1); an unknown event is a
    /// processing error (E2).
    pub fn add_callback(
        &self,
        event: &str,
        owner: Owner,
        callback: Arc<dyn EventCallback>,
    ) -> Result<RegistrationId, CoreError> {
        self.callbacks
            .add(Self::known_event(event)?, owner, callback)
    }

    /// The callbacks registered for `event`, in registration order.
    ///
    /// Removal by Python `==` compares these without any lock held, then
    /// removes by id.
    pub fn callbacks(&self, event: &str) -> Result<Arc<[CallbackRegistration]>, CoreError> {
        let event = Self::known_event(event)?;
        Ok(self
            .callbacks
            .snapshot(event)
            .unwrap_or_else(|| Arc::from([])))
    }

    /// Removes the registration `id`; `None` if it was not registered.
    pub fn remove_callback(&self, id: RegistrationId) -> Option<RegistrationInfo> {
        self.callbacks.remove(id)
    }

    /// The callback slots, for the registry's walks (L4, reports).
    pub fn slots(&self) -> &Slots<&'static str, dyn EventCallback> {
        &self.callbacks
    }

    /// Adds a sink that sees every event from now on.
    pub fn add_sink(&self, sink: Arc<dyn EventSink>) -> RegistrationId {
        let id = RegistrationId::next();
        self.state().sinks.push((id, sink));
        id
    }

    /// Removes a sink.
    pub fn remove_sink(&self, id: RegistrationId) {
        self.state().sinks.retain(|(sink_id, _)| *sink_id != id);
    }

    /// Numbers and queues an event. Called with the data lock held, so that
    /// seq order is commit order.
    pub(crate) fn commit(&self, payload: EventPayload) -> Committed {
        self.commit_with(payload.name(), || payload)
    }

    /// Numbers and queues an event named `name` whose payload `build` makes
    /// only if a sink or a callback will see it. Called with the data lock
    /// held, so that seq order is commit order. An event nobody listens to
    /// still takes its seq, so stream subscribers see the same numbers
    /// whether or not anyone listened before.
    pub(crate) fn commit_with(
        &self,
        name: &'static str,
        build: impl FnOnce() -> EventPayload,
    ) -> Committed {
        let mut state = self.state();
        let wanted = self.callbacks.snapshot(name).is_some();
        if !wanted && state.sinks.is_empty() {
            state.next_seq += 1;
            return Committed(None);
        }
        let event = Arc::new(Event {
            seq: state.next_seq,
            payload: build(),
        });
        debug_assert_eq!(event.name(), name);
        state.next_seq += 1;
        for (_, sink) in &state.sinks {
            sink.deliver(&event);
        }
        if !wanted {
            return Committed(None);
        }
        let seq = event.seq;
        state.pending.push_back(Queued {
            event,
            depth: CASCADE_DEPTH.with(Cell::get),
            cause: RUNNING_CALLBACK.with(|running| running.borrow().clone()),
        });
        Committed(Some(seq))
    }

    /// Runs callbacks, in commit order, until the event `committed` has been
    /// dispatched (D5), or gives up waiting for another thread after the wait
    /// limit.
    pub(crate) fn dispatch_through(&self, committed: Committed) {
        let Committed(Some(seq)) = committed else {
            return;
        };
        let me = std::thread::current().id();
        let mut state = self.state();
        if state.dispatcher == Some(me) {
            // Committed by a callback: the loop below, further up this
            // thread's stack, delivers it after the current event.
            NESTED_THROUGH.with(|through| through.set(through.get().max(seq)));
            return;
        }
        if crate::turns::held_by_this_thread() > 0 {
            // Committed inside another change, e.g. by a status hook: the
            // dispatcher may be a callback waiting for the very turn this
            // thread holds, so waiting here could close a cycle the turns
            // cannot see. The outer change delivers it, in commit order,
            // once its turn is released (see `deliver_deferred`).
            DEFERRED_THROUGH.with(|through| through.set(through.get().max(seq)));
            return;
        }
        let deadline = Instant::now() + self.wait_limit;
        loop {
            let target = NESTED_THROUGH
                .with(Cell::get)
                .max(DEFERRED_THROUGH.with(Cell::get))
                .max(seq);
            if state.is_done(target) {
                NESTED_THROUGH.with(|through| through.set(0));
                DEFERRED_THROUGH.with(|through| through.set(0));
                return;
            }
            if state.dispatcher.is_none()
                && let Some(queued) = state.pending.pop_front()
            {
                state.in_progress.insert(queued.event.seq);
                state.dispatcher = Some(me);
                drop(state);
                {
                    // Even if a callback panics, the bus must not stay
                    // claimed by this thread: the guard gives it back.
                    let _dispatching = Dispatching {
                        bus: self,
                        seq: queued.event.seq,
                    };
                    self.run_callbacks_of(&queued);
                }
                state = self.state();
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                NESTED_THROUGH.with(|through| through.set(0));
                tracing::warn!(
                    seq,
                    "event callbacks of another change are still running after {:?}; \
                     returning before event {seq} is delivered",
                    self.wait_limit
                );
                return;
            }
            state.waiters += 1;
            state = self
                .dispatched
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            state.waiters -= 1;
        }
    }

    /// Delivers what this thread committed while it held a turn, once it
    /// holds none: called when a change returns, whether it succeeded or
    /// not (a hook may set shared data and then veto its own change).
    pub(crate) fn deliver_deferred(&self) {
        if crate::turns::held_by_this_thread() > 0 {
            return;
        }
        let through = DEFERRED_THROUGH.with(Cell::get);
        if through > 0 {
            self.dispatch_through(Committed(Some(through)));
        }
    }

    /// Runs the callbacks of `queued`, unless callbacks made it too deep
    /// in a cascade: then none, which ends the cascade, and the callback
    /// that made it is named.
    fn run_callbacks_of(&self, queued: &Queued) {
        if queued.depth > MAX_CASCADE_DEPTH {
            let (plugin, callable) = queued.cause.as_ref().map_or_else(
                || (String::new(), "a callback".into()),
                |(owner, callable)| (owner.to_string(), Arc::clone(callable)),
            );
            tracing::error!(
                plugin = %plugin,
                event = queued.event.name(),
                seq = queued.event.seq,
                "event callbacks loop: {callable} made the {}th change in a row caused by \
                 callbacks of one change; its callbacks are not called, which ends the loop \
                 (the change itself stands)",
                queued.depth
            );
            return;
        }
        let outer = CASCADE_DEPTH.with(|depth| depth.replace(queued.depth + 1));
        // Only a change these callbacks make can be one too deep, so only
        // they need to be named: every other callback runs without the
        // bookkeeping.
        self.run_callbacks(&queued.event, queued.depth == MAX_CASCADE_DEPTH);
        CASCADE_DEPTH.with(|depth| depth.set(outer));
    }

    /// Runs `event`'s callbacks; with `name_causes`, each is recorded as
    /// the cause of the changes it makes.
    fn run_callbacks(&self, event: &Event, name_causes: bool) {
        let Some(registrations) = self.callbacks.snapshot(event.name()) else {
            return;
        };
        for registration in registrations.iter() {
            if name_causes {
                RUNNING_CALLBACK.with(|running| {
                    running.replace(Some((
                        registration.owner.clone(),
                        Arc::clone(&registration.callable),
                    )))
                });
            }
            // A panic in a callback (a bug in Rust code it called) is that
            // callback's failure, as an exception would be (D5): the other
            // callbacks still run and the change stands.
            let outcome = catch_unwind(AssertUnwindSafe(|| registration.target.on_event(event)))
                .unwrap_or_else(|panic| {
                    Err(PluginFailure::new(format!(
                        "panicked: {}",
                        panic_message(panic.as_ref())
                    )))
                });
            if name_causes {
                RUNNING_CALLBACK.with(|running| running.replace(None));
            }
            if let Err(failure) = outcome {
                tracing::error!(
                    plugin = %registration.owner,
                    event = event.name(),
                    "event callback {} failed; the change stands: {}",
                    registration.callable,
                    failure.message
                );
            }
        }
    }
}

/// The dispatcher's claim on the bus while it runs one event's callbacks;
/// dropping it, on return or on unwind, frees the bus for the next
/// dispatcher and wakes the waiters.
#[must_use = "the bus is released when the guard drops"]
struct Dispatching<'a> {
    bus: &'a EventBus,
    seq: u64,
}

impl Drop for Dispatching<'_> {
    fn drop(&mut self) {
        let mut state = self.bus.state();
        state.in_progress.remove(&self.seq);
        state.dispatcher = None;
        let anyone_waits = state.waiters > 0;
        drop(state);
        if anyone_waits {
            self.bus.dispatched.notify_all();
        }
    }
}

/// The text a panic was raised with, if it was a string.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a non-string panic")
}
