//! The plugin host: the child process one process-isolated plugin runs in
//! (`ucs plugin-host`, started by the server, never by hand).
//!
//! It embeds CPython through `ucs-pybridge` exactly as the server does and
//! gives the plugin a `ucs` object on a [`HostPort`], which sends every
//! step to the server over the inherited link. The plugin's callables stay
//! here, numbered; the server holds a proxy for each and calls it back by
//! number ([`ToHost`]). Log records go to the server as link notices, in
//! order with the replies, so a traceback is in the server's log before the
//! call it failed returns.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::num::NonZeroU32;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use pyo3::prelude::*;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use ucs_api::{ApiError, HookPolicy};
use ucs_core::{
    AgentStatus, EventCallback, Owner, Registrable, SharedDataHook, StatusHook, UserId, Value,
};
use ucs_link::{Caller, Link, LinkConfig, LinkError};
use ucs_pybridge::adapters::{
    Continuation, PyEventCallback, PyMiddleware, PySharedHook, PyStatusHook,
};
use ucs_pybridge::{LoadOutcome, PluginInstance, ServerPort, StopReport, ThreadEnd};

use crate::wire::{
    self, HostRegistration, HostReply, ServerReply, ToHost, ToServer, WireAgent, WireApiError,
    WireLevel, WireLoad, WireLoadOutcome, WireStopReport, WireValue,
};

/// The environment variable through which the server tells a host the most
/// verbose level it logs, so the host does not send records nobody keeps.
pub const HOST_LOG_ENV: &str = "UCS_HOST_LOG";

/// How long a host's own calls into the server may wait. The server has no
/// deadline on a plugin's calls in-process either; this one only keeps a
/// host whose server is wedged from waiting forever.
const SERVER_CALL_DEADLINE: Duration = Duration::from_secs(300);

/// How many of the server's calls the host runs at once. In process, every
/// server thread that calls a plugin runs the plugin itself, so the host
/// must not make the server's calls wait for one another: a callback queued
/// behind four middlewares whose changes wait for that very callback's event
/// (commit-order dispatch, D5) would stall them all until the deadline. The
/// server's own threads bound the real number; threads start on demand.
const MAX_CONCURRENT_SERVER_CALLS: u32 = 512;

/// Runs a plugin host on the link this process inherited, until the server
/// closes it. Returns only on failure to start; a host whose link closes
/// exits at once without finalising Python (a plugin's threads must not be
/// able to keep a host alive that nobody calls any more).
pub fn run_plugin_host() -> ExitCode {
    let stream = match ucs_link::supervise::inherited_link() {
        Ok(stream) => stream,
        Err(err) => {
            #[expect(clippy::print_stderr, reason = "no server to log to")]
            {
                eprintln!(
                    "ucs plugin-host is started by `ucs serve` for process-isolated plugins, \
                     not by hand: {err}"
                );
            }
            return ExitCode::from(2);
        }
    };
    install_log_forwarding();
    if let Some(home) = std::env::var_os(crate::hosted::PYTHON_HOME_ENV) {
        ucs_pybridge::home::set_python_home(home.into());
    }
    ucs_pybridge::init();
    lower_plugin_threads();
    set_switch_interval();
    if let Some(venv) = std::env::var_os(crate::hosted::PYTHON_VENV_ENV)
        && let Err(err) = ucs_pybridge::home::use_venv(Path::new(&venv))
    {
        // The server checked it before it started any host.
        tracing::error!("{err}");
    }
    let host = Arc::new(HostState::default());
    let handler_host = Arc::clone(&host);
    let link: Link<ToServer, ToHost> = match Link::start(
        stream,
        LinkConfig {
            call_deadline: SERVER_CALL_DEADLINE,
            max_handlers: NonZeroU32::new(MAX_CONCURRENT_SERVER_CALLS).unwrap_or(NonZeroU32::MIN),
            ..LinkConfig::named("host")
        },
        move |request, caller| {
            // The first request (the plugin's load) may run plugin code that
            // logs or prints before `Link::start` has even returned: the log
            // link is set here, before any plugin code runs, not after.
            if LOG_LINK.get().is_none() {
                let _ = LOG_LINK.set(caller.clone());
            }
            handler_host.handle(request, caller)
        },
    ) {
        Ok(link) => link,
        Err(err) => {
            #[expect(clippy::print_stderr, reason = "the link to log over failed")]
            {
                eprintln!("plugin host: cannot start its link: {err}");
            }
            return ExitCode::from(2);
        }
    };
    let _ = LOG_LINK.set(link.caller());
    loop {
        if link.wait_closed(Duration::from_secs(3600)).is_some() {
            // Not `return`: dropping the link would join handler threads
            // that may be stuck in the plugin's Python.
            std::process::exit(0);
        }
    }
}

/// Sets the interpreter's GIL switch interval to the server's.
fn set_switch_interval() {
    let Some(interval) = std::env::var(crate::hosted::PYTHON_SWITCH_INTERVAL_ENV)
        .ok()
        .and_then(|micros| micros.parse::<u64>().ok())
        .filter(|&micros| micros > 0)
        .map(Duration::from_micros)
    else {
        return;
    };
    if let Err(err) = ucs_pybridge::priority::set_switch_interval(interval) {
        tracing::warn!("the GIL switch interval stays CPython's: {err}");
    }
}

/// Starts the plugin's own threads at the nice value the server asked for.
fn lower_plugin_threads() {
    let Some(nice) = std::env::var(crate::hosted::PLUGIN_THREAD_NICE_ENV)
        .ok()
        .and_then(|nice| nice.parse::<u8>().ok())
    else {
        return;
    };
    pyo3::Python::attach(|py| {
        if let Err(err) = ucs_pybridge::priority::lower_plugin_threads(py, nice) {
            tracing::warn!("plugin threads keep the server's priority: {err}");
        }
    });
}

/// One callable the plugin registered, kept here under its number.
enum Entry {
    /// An event callback.
    Callback {
        /// The event it is registered for.
        event: String,
        /// The adapter.
        adapter: Arc<PyEventCallback>,
    },
    /// The status hook.
    Status(Arc<PyStatusHook>),
    /// A shared-data hook.
    Shared {
        /// The identificator.
        identificator: String,
        /// The adapter.
        adapter: Arc<PySharedHook>,
    },
    /// A middleware.
    Middleware {
        /// The method.
        method: String,
        /// The adapter.
        adapter: Arc<PyMiddleware>,
    },
}

/// The plugin of this host, once loaded.
#[derive(Default)]
struct HostState {
    /// The plugin's instance, between `Load` and `Stop`.
    instance: Mutex<Option<PluginInstance>>,
    /// The port the plugin's `ucs` object uses, set by `Load`.
    port: OnceLock<Arc<HostPort>>,
}

impl HostState {
    /// Serves one request of the server.
    fn handle(&self, request: ToHost, caller: &Caller<ToServer>) -> HostReply {
        ucs_pybridge::thread_state::park();
        match request {
            ToHost::Load(load) => self.load(caller, load),
            ToHost::Stop {
                stop_timeout_ms,
                join_timeout_ms,
            } => self.stop(stop_timeout_ms, join_timeout_ms),
            ToHost::StatusHook {
                registration,
                agent,
                status,
                reason,
            } => self.status_hook(registration, agent, status, &reason),
            ToHost::SharedHook {
                registration,
                identificator,
                old,
                new,
            } => match self.entry(registration) {
                Some(Entry::Shared { adapter, .. }) => HostReply::Shared(
                    adapter
                        .before_change(&identificator, &old.into(), &new.into())
                        .into(),
                ),
                _ => self.unknown(registration),
            },
            ToHost::Event {
                registration,
                event,
            } => match (self.entry(registration), event.into_event()) {
                (Some(Entry::Callback { adapter, .. }), Some(event)) => HostReply::Event(
                    adapter
                        .on_event(&event)
                        .err()
                        .map(|failure| failure.message),
                ),
                (_, None) => HostReply::Refused("an event this host cannot read".to_owned()),
                _ => self.unknown(registration),
            },
            ToHost::Middleware {
                registration,
                chain,
                method,
                args,
            } => match self.entry(registration) {
                Some(Entry::Middleware { adapter, .. }) => {
                    let next = Arc::new(RemoteChain {
                        caller: caller.clone(),
                        chain,
                        method,
                    });
                    HostReply::Middleware(
                        adapter
                            .invoke(next, wire::values(args))
                            .map(WireValue::from)
                            .map_err(WireApiError::from),
                    )
                }
                _ => self.unknown(registration),
            },
        }
    }

    /// The answer to a request this host cannot serve: `Unregistered` if
    /// the plugin removed the registration while the server's call was on
    /// its way (a race with no wrong winner: the call goes on as if it had
    /// come just after the removal), `Refused` if the request did not fit
    /// it, which one build of both ends never sends.
    fn unknown(&self, registration: HostRegistration) -> HostReply {
        if self.entry(registration).is_none() {
            HostReply::Unregistered
        } else {
            HostReply::Refused(format!(
                "registration {registration} does not take this request"
            ))
        }
    }

    /// The entry `registration`, looked up with no lock held afterwards
    /// (the adapter runs Python).
    fn entry(&self, registration: HostRegistration) -> Option<Entry> {
        let port = self.port.get()?;
        port.entries().get(&registration).map(Entry::clone_ref)
    }

    fn status_hook(
        &self,
        registration: HostRegistration,
        agent: WireAgent,
        status: i64,
        reason: &str,
    ) -> HostReply {
        let (Some(Entry::Status(hook)), Some(agent), Some(status)) = (
            self.entry(registration),
            agent.into_agent(),
            AgentStatus::from_code(status),
        ) else {
            return self.unknown(registration);
        };
        HostReply::Status(hook.decide(&agent, status, reason).into())
    }

    fn load(&self, caller: &Caller<ToServer>, load: WireLoad) -> HostReply {
        let WireLoad {
            name,
            path,
            source,
            plugins_dir,
            config,
            generation,
        } = load;
        let (name, path, source, plugins_dir) = (&*name, &*path, &*source, &*plugins_dir);
        let config = Value::from(config);
        let port = Arc::new(HostPort {
            config,
            owner: Owner::versioned(name, generation),
            caller: caller.clone(),
            entries: Mutex::new(HashMap::new()),
            next_registration: AtomicU64::new(1),
        });
        if self.port.set(Arc::clone(&port)).is_err() {
            return HostReply::Refused("a plugin host runs one plugin version only".to_owned());
        }
        let port: Arc<dyn ServerPort> = port;
        let outcome = ucs_pybridge::load_plugin_source(
            &port,
            name,
            Path::new(path),
            source,
            Path::new(plugins_dir),
        );
        HostReply::Loaded(match outcome {
            LoadOutcome::Started(instance) => {
                let class_name = instance.class_name.clone();
                *lock(&self.instance) = Some(instance);
                WireLoadOutcome::Started { class_name }
            }
            LoadOutcome::NoPluginVariable => WireLoadOutcome::NoPluginVariable,
            LoadOutcome::Failed { class_name, error } => {
                WireLoadOutcome::Failed { class_name, error }
            }
        })
    }

    fn stop(&self, stop_timeout_ms: u64, join_timeout_ms: u64) -> HostReply {
        let Some(instance) = lock(&self.instance).take() else {
            return HostReply::Stopped(WireStopReport::NotRun(
                "the plugin is not running in this host".to_owned(),
            ));
        };
        let report = ucs_pybridge::stop_plugin(
            instance,
            Duration::from_millis(stop_timeout_ms),
            Duration::from_millis(join_timeout_ms),
        );
        HostReply::Stopped(match report {
            StopReport::Returned { stop, thread } => WireStopReport::Returned {
                stop_error: stop.err(),
                is_thread: !matches!(thread, ThreadEnd::NotAThread),
                still_running_ms: match thread {
                    ThreadEnd::StillRunning(timeout) => {
                        Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX))
                    }
                    ThreadEnd::NotAThread | ThreadEnd::Ended => None,
                },
            },
            StopReport::TimedOut(timeout) => {
                WireStopReport::TimedOut(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX))
            }
            StopReport::NotRun(reason) => WireStopReport::NotRun(reason),
            // Only the server side sees a host die; a stop run here that
            // reports it means another process, so it is passed on as is.
            StopReport::Crashed(cause) => WireStopReport::NotRun(cause),
        })
    }
}

impl Entry {
    /// Another handle on the same adapter.
    fn clone_ref(&self) -> Entry {
        match self {
            Entry::Callback { event, adapter } => Entry::Callback {
                event: event.clone(),
                adapter: Arc::clone(adapter),
            },
            Entry::Status(hook) => Entry::Status(Arc::clone(hook)),
            Entry::Shared {
                identificator,
                adapter,
            } => Entry::Shared {
                identificator: identificator.clone(),
                adapter: Arc::clone(adapter),
            },
            Entry::Middleware { method, adapter } => Entry::Middleware {
                method: method.clone(),
                adapter: Arc::clone(adapter),
            },
        }
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The rest of a middleware chain, which stays in the server: a middleware's
/// `handler(*args)` is a call back across the link.
struct RemoteChain {
    /// The link to the server.
    caller: Caller<ToServer>,
    /// The server's number for the chain.
    chain: u64,
    /// The method's name, for log lines.
    method: String,
}

impl Continuation for RemoteChain {
    fn proceed(&self, args: Vec<Value>) -> Result<Value, ApiError> {
        let request = ToServer::Proceed {
            chain: self.chain,
            args: wire::wire_values(&args),
        };
        match call(&self.caller, request)? {
            ServerReply::Value(value) => Ok(value.into()),
            other => Err(unexpected(&other)),
        }
    }

    fn method_name(&self) -> &str {
        &self.method
    }
}

/// A call to the server, its failures as API errors.
fn call(caller: &Caller<ToServer>, request: ToServer) -> Result<ServerReply, ApiError> {
    match caller.call(request) {
        Ok(reply) => reply.map_err(ApiError::from),
        Err(err) => Err(link_error(&err)),
    }
}

/// A failed call to the server, as the plugin sees it.
fn link_error(err: &LinkError) -> ApiError {
    ApiError::Internal(format!("the plugin host lost the server: {err}"))
}

/// A reply of the wrong kind: both ends are one build, so this is a bug.
fn unexpected(reply: &ServerReply) -> ApiError {
    ApiError::Internal(format!("unexpected reply from the server: {reply:?}"))
}

/// The server as a process-isolated plugin's `ucs` object reaches it: each
/// step is a request on the link (I1). Registrations keep the callable
/// here and send the server its number and description.
pub struct HostPort {
    /// The plugin version.
    owner: Owner,
    /// Its settings, as the server read them for this version.
    config: Value,
    /// The link to the server.
    caller: Caller<ToServer>,
    /// The callables the plugin registered, by number.
    entries: Mutex<HashMap<HostRegistration, Entry>>,
    /// The next number.
    next_registration: AtomicU64,
}

impl HostPort {
    fn entries(&self) -> MutexGuard<'_, HashMap<HostRegistration, Entry>> {
        lock(&self.entries)
    }

    /// Keeps `entry` under a new number and asks the server to register a
    /// proxy for it; forgets it again if the server refuses.
    fn register(
        &self,
        entry: Entry,
        request: impl FnOnce(HostRegistration) -> ToServer,
    ) -> Result<(), ApiError> {
        let registration = self.next_registration.fetch_add(1, Ordering::Relaxed);
        self.entries().insert(registration, entry);
        let result = call(&self.caller, request(registration)).map(drop);
        if result.is_err() {
            self.entries().remove(&registration);
        }
        result
    }

    /// The number of an entry `matches` accepts, found with no lock held
    /// while Python `==` runs.
    fn find(&self, matches: impl Fn(&Entry) -> bool) -> Option<HostRegistration> {
        let snapshot: Vec<(HostRegistration, Entry)> = self
            .entries()
            .iter()
            .map(|(registration, entry)| (*registration, entry.clone_ref()))
            .collect();
        snapshot
            .into_iter()
            .find(|(_, entry)| matches(entry))
            .map(|(registration, _)| registration)
    }
}

impl ServerPort for HostPort {
    fn owner(&self) -> &Owner {
        &self.owner
    }

    fn config(&self) -> &Value {
        &self.config
    }

    fn policy(&self) -> HookPolicy {
        // The server's proxy measures, budgets and breaks each call (it
        // sees the whole round trip); here the adapters only run.
        // Nor does the host interrupt a call past its deadline: the server
        // kills the whole host then (I3).
        HookPolicy {
            budget: Duration::MAX,
            breaker_threshold: 0,
            deadline: Duration::MAX,
            // The server's proxy is the bulkhead; the host runs what it is
            // sent.
            max_concurrent_calls: u32::MAX,
        }
    }

    fn agents(&self) -> Vec<Value> {
        match call(&self.caller, ToServer::Agents) {
            Ok(ServerReply::Values(agents)) => wire::values(agents),
            Ok(other) => {
                tracing::error!("{}", unexpected(&other));
                Vec::new()
            }
            Err(err) => {
                tracing::error!(plugin = %self.owner, "ucs.agents.getAgents(): {err}");
                Vec::new()
            }
        }
    }

    fn user_field(&self, field: &str) -> Result<Vec<(UserId, Value)>, ApiError> {
        let request = ToServer::UserField {
            field: field.to_owned(),
        };
        match call(&self.caller, request)? {
            ServerReply::Users(users) => Ok(users
                .into_iter()
                .map(|(id, value)| (id, value.into()))
                .collect()),
            other => Err(unexpected(&other)),
        }
    }

    fn shared_get(&self, identificator: &str) -> Value {
        let request = ToServer::SharedGet {
            identificator: identificator.to_owned(),
        };
        match call(&self.caller, request) {
            Ok(ServerReply::Value(value)) => value.into(),
            Ok(other) => {
                tracing::error!("{}", unexpected(&other));
                Value::Map(ucs_core::Map::default())
            }
            Err(err) => {
                tracing::error!(plugin = %self.owner, "ucs.shared.get('{identificator}'): {err}");
                Value::Map(ucs_core::Map::default())
            }
        }
    }

    fn plugin_sid(&self) -> Result<String, ApiError> {
        match call(&self.caller, ToServer::Sid)? {
            ServerReply::Sid(sid) => Ok(sid),
            other => Err(unexpected(&other)),
        }
    }

    fn call(&self, sid: &str, method: &str, params: Vec<Value>) -> Result<Value, ApiError> {
        let request = ToServer::Call {
            sid: sid.to_owned(),
            method: method.to_owned(),
            params: wire::wire_values(&params),
        };
        match call(&self.caller, request)? {
            ServerReply::Value(value) => Ok(value.into()),
            other => Err(unexpected(&other)),
        }
    }

    fn add_callback(&self, event: &str, callback: Arc<PyEventCallback>) -> Result<(), ApiError> {
        let describe = callback.describe();
        let entry = Entry::Callback {
            event: event.to_owned(),
            adapter: callback,
        };
        self.register(entry, |registration| ToServer::AddCallback {
            event: event.to_owned(),
            registration,
            describe,
        })
    }

    fn remove_callback(
        &self,
        py: Python<'_>,
        event: &str,
        callback: &Bound<'_, PyAny>,
    ) -> Result<bool, ApiError> {
        let found = self.find(|entry| {
            matches!(entry, Entry::Callback { event: registered, adapter }
                if registered == event && adapter.0.equals(callback))
        });
        let Some(registration) = found else {
            return Ok(false);
        };
        self.entries().remove(&registration);
        py.detach(|| call(&self.caller, ToServer::RemoveCallback { registration }))?;
        Ok(true)
    }

    fn add_status_hook(&self, hook: Arc<PyStatusHook>) -> Result<(), ApiError> {
        let describe = hook.describe();
        self.register(Entry::Status(hook), |registration| {
            ToServer::AddStatusHook {
                registration,
                describe,
            }
        })
    }

    fn remove_status_hook(&self) {
        if let Err(err) = call(&self.caller, ToServer::RemoveStatusHook) {
            tracing::error!(plugin = %self.owner, "removeChangeStatusHook(): {err}");
        }
        self.entries()
            .retain(|_, entry| !matches!(entry, Entry::Status(_)));
    }

    fn add_shared_hook(
        &self,
        identificator: &str,
        hook: Arc<PySharedHook>,
    ) -> Result<(), ApiError> {
        let describe = hook.describe();
        let entry = Entry::Shared {
            identificator: identificator.to_owned(),
            adapter: hook,
        };
        self.register(entry, |registration| ToServer::AddSharedHook {
            identificator: identificator.to_owned(),
            registration,
            describe,
        })
    }

    fn remove_shared_hook(&self, identificator: &str) {
        let request = ToServer::RemoveSharedHook {
            identificator: identificator.to_owned(),
        };
        if let Err(err) = call(&self.caller, request) {
            tracing::error!(plugin = %self.owner, "removeChangeHook('{identificator}'): {err}");
        }
        self.entries().retain(|_, entry| {
            !matches!(entry, Entry::Shared { identificator: registered, .. } if registered == identificator)
        });
    }

    fn add_middleware(&self, method: &str, middleware: Arc<PyMiddleware>) -> Result<(), ApiError> {
        let describe = middleware.describe();
        let entry = Entry::Middleware {
            method: method.to_owned(),
            adapter: middleware,
        };
        self.register(entry, |registration| ToServer::AddMiddleware {
            method: method.to_owned(),
            registration,
            describe,
        })
    }

    fn remove_middleware(
        &self,
        py: Python<'_>,
        method: &str,
        middleware: &Bound<'_, PyAny>,
    ) -> Result<bool, ApiError> {
        let found = self.find(|entry| {
            matches!(entry, Entry::Middleware { method: registered, adapter }
                if registered == method && adapter.0.equals(middleware))
        });
        let Some(registration) = found else {
            return Ok(false);
        };
        self.entries().remove(&registration);
        py.detach(|| call(&self.caller, ToServer::RemoveMiddleware { registration }))?;
        Ok(true)
    }
}

/// The link log records go over, once it is up; records before that go to
/// stderr, which the server passes through.
static LOG_LINK: OnceLock<Caller<ToServer>> = OnceLock::new();

/// Sends every log record of this process to the server as a notice.
fn install_log_forwarding() {
    let max = std::env::var(HOST_LOG_ENV)
        .ok()
        .and_then(|level| level.parse::<tracing::level_filters::LevelFilter>().ok())
        .unwrap_or(tracing::level_filters::LevelFilter::INFO);
    let subscriber = tracing_subscriber::registry().with(ForwardLayer).with(max);
    // Fails only if something set a subscriber first, and nothing does.
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// A tracing layer that forwards records over [`LOG_LINK`].
struct ForwardLayer;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ForwardLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut text = FieldText::default();
        event.record(&mut text);
        let level = match *event.metadata().level() {
            tracing::Level::TRACE => WireLevel::Trace,
            tracing::Level::DEBUG => WireLevel::Debug,
            tracing::Level::INFO => WireLevel::Info,
            tracing::Level::WARN => WireLevel::Warn,
            tracing::Level::ERROR => WireLevel::Error,
        };
        let message = text.finish();
        match LOG_LINK.get() {
            Some(link) => {
                let _ = link.notify(ToServer::Log { level, message });
            }
            None => {
                #[expect(clippy::print_stderr, reason = "no link to log over yet")]
                {
                    eprintln!("plugin host: {message}");
                }
            }
        }
    }
}

/// A record's message followed by its other fields as ` key=value`, except
/// `plugin`: the server knows which plugin its host runs and names it.
#[derive(Default)]
struct FieldText {
    /// The message.
    message: String,
    /// The other fields.
    fields: String,
}

impl FieldText {
    fn finish(self) -> String {
        self.message + &self.fields
    }
}

impl Visit for FieldText {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message.push_str(value),
            "plugin" => {}
            name => {
                let _ = write!(self.fields, " {name}={value}");
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            "plugin" => {}
            name => {
                let _ = write!(self.fields, " {name}={value:?}");
            }
        }
    }
}
