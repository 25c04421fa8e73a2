//! The server's side of one plugin host: starting it, serving its plugin's
//! calls into the server, loading and stopping the plugin in it, killing it
//! past a deadline, and telling the loader when it is gone (I2).
//!
//! Threads: each host has a *keeper* thread that spawns the child and then
//! waits for it. It must be the spawner: `PR_SET_PDEATHSIG` fires when the
//! spawning thread exits, so a pooled thread would take the host down with
//! it when retired. The link's own threads serve the host's requests.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Read;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use ucs_api::{Api, ApiError, HookPolicy, Next};
use ucs_core::{Owner, RegistrationId, Value};
use ucs_link::supervise::{ChildLimits, CommandExt, ExitCause, MemoryLimit};
use ucs_link::{Caller, CloseReason, Link, LinkConfig, LinkError};
use ucs_pybridge::port::{plugin_sid_of, user_field_of};
use ucs_pybridge::{StopReport, ThreadEnd};

use crate::child::HOST_LOG_ENV;
use crate::error::HostError;
use crate::proxy::{Proxy, RemoteCallback, RemoteMiddleware, RemoteSharedHook, RemoteStatusHook};
use crate::wire::{
    self, HostRegistration, HostReply, ServerReply, ToHost, ToServer, WireApiError, WireLevel,
    WireLoad, WireLoadOutcome, WireStopReport, WireValue,
};

/// How the server starts and limits plugin hosts; one for all of them.
#[derive(Debug, Clone)]
pub struct HostSettings {
    /// The program to run: the `ucs` binary itself in production.
    pub program: PathBuf,
    /// Its arguments: `plugin-host`.
    pub args: Vec<OsString>,
    /// Each host's memory limit (I5).
    pub memory: MemoryLimit,
    /// How long import, constructor and `start` together may take (I4).
    pub load_deadline: Duration,
    /// How many of the server's threads one host's requests may hold at
    /// once (I6).
    pub max_handlers: NonZeroU32,
    /// The server's `--python-home`, so a host runs on the same standard
    /// library (issue 16 item 3); `None`: the loaded libpython's.
    pub python_home: Option<PathBuf>,
    /// The server's `--python-venv`, so a host's plugin imports the same
    /// packages.
    pub python_venv: Option<PathBuf>,
    /// The nice value of the threads a hosted plugin starts itself (0 to
    /// 19; 0: the server's priority), so a plugin's background work
    /// yields the CPU to the calls it serves (`ucs_pybridge::priority`).
    pub plugin_thread_nice: u8,
    /// The GIL switch interval of the host's interpreter: how long the
    /// thread serving a call waits at most for a plugin thread busy in
    /// Python to hand over the GIL (`ucs_pybridge::priority`).
    pub python_switch_interval: Duration,
}

/// The environment variable that hands a host the server's `--python-home`.
pub(crate) const PYTHON_HOME_ENV: &str = "UCS_PYTHON_HOME";

/// The environment variable that hands a host the server's `--python-venv`.
pub(crate) const PYTHON_VENV_ENV: &str = "UCS_PYTHON_VENV";

/// The environment variable that hands a host
/// [`HostSettings::plugin_thread_nice`].
pub(crate) const PLUGIN_THREAD_NICE_ENV: &str = "UCS_PLUGIN_THREAD_NICE";

/// The environment variable that hands a host
/// [`HostSettings::python_switch_interval`], in microseconds.
pub(crate) const PYTHON_SWITCH_INTERVAL_ENV: &str = "UCS_PYTHON_SWITCH_INTERVAL_US";

/// The default [`HostSettings::plugin_thread_nice`]: the lowest, a weight
/// of 15 against the server's 1024, so a plugin's background threads get
/// about 1.5 % of a CPU the server wants, and all of one it does not. At
/// 10 a spinning plugin thread still raised the server's p99 by 1.3 to
/// 1.7× on two cores; at 19, 1.2 to 1.4× (`BENCHMARKS.md`).
pub const DEFAULT_PLUGIN_THREAD_NICE: u8 = 19;

impl HostSettings {
    /// Hosts started as `program plugin-host`, with the default limits.
    pub fn for_program(program: PathBuf) -> Self {
        HostSettings {
            program,
            args: vec![OsString::from("plugin-host")],
            memory: MemoryLimit::AddressSpace {
                bytes: DEFAULT_MEMORY_LIMIT,
            },
            load_deadline: DEFAULT_LOAD_DEADLINE,
            max_handlers: NonZeroU32::new(4).unwrap_or(NonZeroU32::MIN),
            python_home: None,
            python_venv: None,
            plugin_thread_nice: DEFAULT_PLUGIN_THREAD_NICE,
            python_switch_interval: ucs_pybridge::priority::DEFAULT_SWITCH_INTERVAL,
        }
    }
}

/// The default address-space limit of a host: a bare host reserves about
/// 150 MiB (libpython, the link's and the interpreter's thread stacks);
/// this leaves room for plugins importing a few libraries while a runaway
/// allocation still stops long before the machine's memory.
pub const DEFAULT_MEMORY_LIMIT: u64 = 1 << 30;

/// How long a host's load (import, constructor and `start`) may take by
/// default before the host is killed (I4): generous for a plugin importing
/// a few libraries, short enough that `plugins.load` answers while its
/// caller still waits.
pub const DEFAULT_LOAD_DEADLINE: Duration = Duration::from_secs(10);

/// How a host ended, for the loader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostExit {
    /// What happened, as the plugin's error shows it: `plugin host exited:
    /// signal 11 (SIGSEGV)`, or why the server killed it.
    pub error: String,
    /// Whether the server asked for it (stop, unload, shutdown): nothing to
    /// report or restart then.
    pub expected: bool,
}

/// How a host's end is told, set once: by the keeper thread when the
/// process is reaped.
#[derive(Default)]
struct ExitState {
    /// The server is stopping the host: its end is no failure.
    expected: AtomicBool,
    /// Why the server killed it, if it did: shown instead of `SIGKILL`.
    killed_because: Mutex<Option<String>>,
    /// The host's end, once reaped.
    ended: Mutex<Option<HostExit>>,
    /// Signalled when `ended` is set.
    ended_signal: Condvar,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A middleware call in flight: the rest of its chain, and how long the
/// host's `handler` calls into it have taken (not the middleware's time).
struct OpenChain {
    /// The rest of the chain.
    next: Next,
    /// Nanoseconds spent in it.
    inner_nanos: Arc<AtomicU64>,
}

/// What the proxies and the server's request handler share of one host.
pub(crate) struct Remote {
    /// The plugin version the host runs.
    owner: Owner,
    /// The server's API.
    api: Api,
    /// Calls into the host.
    caller: Caller<ToHost>,
    /// The host's process id (its process group too).
    pid: u32,
    /// The server's hook policy; its deadline is every call's (I3).
    policy: HookPolicy,
    /// How long a call into the host may take before it is killed.
    call_deadline: Duration,
    /// See [`ExitState`].
    exit: Arc<ExitState>,
    /// Server ids of the host's callbacks, by the host's numbers.
    callbacks: Mutex<HashMap<HostRegistration, RegistrationId>>,
    /// Server ids of the host's middleware, by the host's numbers.
    middlewares: Mutex<HashMap<HostRegistration, RegistrationId>>,
    /// Middleware calls in flight, by number.
    chains: Mutex<HashMap<u64, OpenChain>>,
    /// The next chain number.
    next_chain: AtomicU64,
    /// The plugin's own session (`ucs.sid`).
    sid: Mutex<Option<String>>,
}

impl Remote {
    /// The plugin version.
    pub(crate) fn owner(&self) -> &Owner {
        &self.owner
    }

    /// Calls into the host.
    pub(crate) fn caller(&self) -> &Caller<ToHost> {
        &self.caller
    }

    /// The policy calls are measured under.
    pub(crate) fn policy(&self) -> HookPolicy {
        self.policy
    }

    /// How long one call may take (I3).
    pub(crate) fn call_deadline(&self) -> Duration {
        self.call_deadline
    }

    /// Kills the host and everything it started (its process group), and
    /// remembers why for the plugin's error. Its link then closes, which
    /// removes its registrations at once.
    pub(crate) fn kill(&self, why: &str) {
        {
            let mut killed = lock(&self.exit.killed_because);
            if killed.is_none() {
                *killed = Some(why.to_owned());
            }
        }
        tracing::error!(plugin = %self.owner, pid = self.pid, "killing its plugin host: {why}");
        kill_group(self.pid);
    }

    /// What to tell a caller whose call found the host gone.
    pub(crate) fn gone_because(&self, reason: &CloseReason) -> String {
        if let Some(why) = lock(&self.exit.killed_because).as_ref() {
            return format!("its plugin host was killed: {why}");
        }
        format!("its plugin host is gone ({reason})")
    }

    /// Keeps `next` for the host's `handler` calls while a middleware runs.
    pub(crate) fn open_chain(self: &Arc<Self>, next: Next) -> ChainGuard {
        let number = self.next_chain.fetch_add(1, Ordering::Relaxed);
        let inner_nanos = Arc::new(AtomicU64::new(0));
        lock(&self.chains).insert(
            number,
            OpenChain {
                next,
                inner_nanos: Arc::clone(&inner_nanos),
            },
        );
        ChainGuard {
            remote: Arc::clone(self),
            number,
            inner_nanos,
        }
    }
}

/// Kills a host's process group; a group already gone is fine.
fn kill_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// A middleware call's chain, forgotten when dropped.
pub(crate) struct ChainGuard {
    /// Whose chain table.
    remote: Arc<Remote>,
    /// The chain's number.
    number: u64,
    /// Time spent in the chain.
    inner_nanos: Arc<AtomicU64>,
}

impl ChainGuard {
    /// The number the host names it by.
    pub(crate) fn number(&self) -> u64 {
        self.number
    }

    /// Forgets the chain; returns the time spent in it.
    pub(crate) fn close(self) -> Duration {
        Duration::from_nanos(self.inner_nanos.load(Ordering::Relaxed))
    }
}

impl Drop for ChainGuard {
    fn drop(&mut self) {
        lock(&self.remote.chains).remove(&self.number);
    }
}

/// What loading a plugin in its host came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostedLoad {
    /// Running, an instance of this class.
    Started {
        /// The class `UCS_PLUGIN` names.
        class_name: String,
    },
    /// The file has no `UCS_PLUGIN` (D1).
    NoPluginVariable,
    /// It failed to import, construct or start (L1), or its host died or
    /// ran past the load deadline meanwhile (I2, I4).
    Failed {
        /// The class, if known.
        class_name: String,
        /// What went wrong.
        error: String,
    },
}

/// One running plugin host and its link. Dropping it kills the host.
pub struct HostedPlugin {
    /// What the proxies share.
    remote: Arc<Remote>,
    /// The link; closed on drop.
    link: Option<Link<ToHost, ToServer>>,
    /// See [`HostSettings::load_deadline`].
    load_deadline: Duration,
}

impl std::fmt::Debug for HostedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostedPlugin")
            .field("owner", &self.remote.owner.to_string())
            .field("pid", &self.remote.pid)
            .finish()
    }
}

impl HostedPlugin {
    /// Starts a host for the plugin version `owner`. `on_exit` runs once,
    /// on the host's keeper thread, when the host process is gone; if the
    /// server did not ask for that, the plugin's registrations were already
    /// removed the moment its link closed (I2).
    pub fn spawn(
        settings: &HostSettings,
        api: Api,
        owner: Owner,
        policy: HookPolicy,
        call_deadline: Duration,
        on_exit: impl FnOnce(HostExit) + Send + 'static,
    ) -> Result<HostedPlugin, HostError> {
        let exit = Arc::new(ExitState::default());
        let (started, child) = mpsc::channel();
        let keeper_exit = Arc::clone(&exit);
        let mut command = Command::new(&settings.program);
        command
            .args(&settings.args)
            .env(
                HOST_LOG_ENV,
                tracing::level_filters::LevelFilter::current().to_string(),
            )
            // Each thread's malloc arena reserves 64 MiB of address space,
            // which RLIMIT_AS counts in full (I5): two are plenty.
            .env("MALLOC_ARENA_MAX", "2")
            .env(
                PLUGIN_THREAD_NICE_ENV,
                settings.plugin_thread_nice.to_string(),
            )
            .env(
                PYTHON_SWITCH_INTERVAL_ENV,
                settings.python_switch_interval.as_micros().to_string(),
            )
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        for (variable, dir) in [
            (PYTHON_HOME_ENV, &settings.python_home),
            (PYTHON_VENV_ENV, &settings.python_venv),
        ] {
            match dir {
                Some(dir) => command.env(variable, dir),
                None => command.env_remove(variable),
            };
        }
        let limits = ChildLimits {
            memory: settings.memory,
        };
        let name = owner.name().to_owned();
        thread::Builder::new()
            .name(format!("ucs-host-{}", short(&name)))
            .spawn(move || keep(command, limits, &started, &keeper_exit, on_exit))
            .map_err(|source| HostError::Thread {
                plugin: name.clone(),
                source,
            })?;
        let (pid, stream) = child
            .recv()
            .map_err(|_| HostError::Spawn {
                plugin: name.clone(),
                reason: "its keeper thread ended before starting it".to_owned(),
            })?
            .map_err(|err| HostError::Spawn {
                plugin: name.clone(),
                reason: err.to_string(),
            })?;
        let remote_slot: Arc<OnceLock<Arc<Remote>>> = Arc::new(OnceLock::new());
        let handler_slot = Arc::clone(&remote_slot);
        let notice_owner = owner.clone();
        let config = LinkConfig {
            max_handlers: settings.max_handlers,
            ..LinkConfig::named(format!("h-{}", short(&name)))
        };
        let link = Link::start_with_notices(
            stream,
            config,
            move |request, _caller| match handler_slot.get() {
                Some(remote) => serve(remote, request),
                None => Err(WireApiError::Internal(
                    "the plugin host spoke before it was loaded".to_owned(),
                )),
            },
            move |notice| log_notice(&notice_owner, notice),
        )
        .map_err(|source| {
            kill_group(pid);
            HostError::Link {
                plugin: name.clone(),
                source,
            }
        })?;
        let remote = Arc::new(Remote {
            owner,
            api,
            caller: link.caller(),
            pid,
            policy,
            call_deadline,
            exit,
            callbacks: Mutex::new(HashMap::new()),
            middlewares: Mutex::new(HashMap::new()),
            chains: Mutex::new(HashMap::new()),
            next_chain: AtomicU64::new(1),
            sid: Mutex::new(None),
        });
        let _ = remote_slot.set(Arc::clone(&remote));
        let lost = Arc::downgrade(&remote);
        link.caller().on_close(move |reason| {
            if let Some(remote) = lost.upgrade() {
                link_lost(&remote, reason);
            }
        });
        Ok(HostedPlugin {
            remote,
            link: Some(link),
            load_deadline: settings.load_deadline,
        })
    }

    /// The host's process id.
    pub fn pid(&self) -> u32 {
        self.remote.pid
    }

    /// Imports, constructs and starts the plugin in the host (P2-P5) within
    /// the load deadline (I4); a host past it is killed.
    pub fn load(
        &self,
        path: &std::path::Path,
        source: &[u8],
        plugins_dir: &std::path::Path,
        config: &ucs_core::Value,
    ) -> HostedLoad {
        let owner = &self.remote.owner;
        let request = ToHost::Load(WireLoad {
            name: owner.name().to_owned(),
            path: path.to_string_lossy().into_owned(),
            source: source.to_owned(),
            plugins_dir: plugins_dir.to_string_lossy().into_owned(),
            config: config.into(),
            generation: owner.generation(),
        });
        let failed = |error: String| HostedLoad::Failed {
            class_name: String::new(),
            error,
        };
        match self
            .remote
            .caller
            .call_with_deadline(request, self.load_deadline)
        {
            Ok(HostReply::Loaded(WireLoadOutcome::Started { class_name })) => {
                HostedLoad::Started { class_name }
            }
            Ok(HostReply::Loaded(WireLoadOutcome::NoPluginVariable)) => {
                HostedLoad::NoPluginVariable
            }
            Ok(HostReply::Loaded(WireLoadOutcome::Failed { class_name, error })) => {
                HostedLoad::Failed { class_name, error }
            }
            Ok(other) => failed(format!("unexpected reply from its plugin host: {other:?}")),
            Err(LinkError::DeadlineExceeded(waited)) => {
                let why = format!(
                    "it did not finish loading (import, constructor and start) within {waited:?}"
                );
                self.remote.kill(&why);
                failed(why)
            }
            Err(LinkError::PeerGone(_)) => failed(self.wait_exit(Duration::from_secs(2))),
            Err(other) => failed(format!("its plugin host did not load it: {other}")),
        }
    }

    /// Waits for the host's end, at most `timeout`, and says what it was.
    fn wait_exit(&self, timeout: Duration) -> String {
        let exit = &self.remote.exit;
        let deadline = Instant::now() + timeout;
        let mut ended = lock(&exit.ended);
        loop {
            if let Some(ended) = ended.as_ref() {
                return ended.error.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return "its plugin host is gone".to_owned();
            }
            ended = exit
                .ended_signal
                .wait_timeout(ended, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Calls the plugin's `stop` in the host (L2, L3), then ends the host.
    /// Its end is expected: nothing is reported or restarted.
    pub fn stop(mut self, stop_timeout: Duration, join_timeout: Duration) -> StopReport {
        self.remote.exit.expected.store(true, Ordering::SeqCst);
        let millis = |duration: Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        let request = ToHost::Stop {
            stop_timeout_ms: millis(stop_timeout),
            join_timeout_ms: millis(join_timeout),
        };
        // The host keeps its own stop and join timeouts; a second more is
        // for the reply to arrive.
        let deadline = stop_timeout + join_timeout + Duration::from_secs(1);
        let report = match self.remote.caller.call_with_deadline(request, deadline) {
            Ok(HostReply::Stopped(report)) => stop_report(report),
            Ok(other) => StopReport::NotRun(format!("unexpected reply: {other:?}")),
            Err(LinkError::DeadlineExceeded(_)) => StopReport::TimedOut(stop_timeout),
            // The host died while stopping: its exit says how (a link that
            // closes is its end being seen from here, a moment earlier).
            Err(LinkError::PeerGone(_)) => {
                StopReport::Crashed(self.wait_exit(Duration::from_secs(1)))
            }
            Err(err) => StopReport::NotRun(format!("its plugin host is gone: {err}")),
        };
        if self.remote.caller.has_pending_calls() {
            // A call into this host is still running: the plugin stops
            // itself from inside its own hook or middleware (I1: in process
            // the hook returns after the unload, and so it does here). The
            // host ends once those calls have their answers; each has its
            // deadline, which bounds the wait.
            let retire = thread::Builder::new()
                .name(format!("ucs-retire-{}", self.remote.owner.name()))
                .spawn(move || {
                    let limit = self.remote.call_deadline + Duration::from_secs(1);
                    self.remote.caller.wait_idle(limit);
                    self.end(Duration::from_secs(1));
                });
            if let Err(err) = retire {
                tracing::warn!(%err, "no thread to retire a plugin host; ending it now");
            }
        } else {
            self.end(Duration::from_secs(1));
        }
        report
    }

    /// Closes the link, gives the host `grace` to exit on its own, then
    /// kills whatever is left of its process group.
    fn end(&mut self, grace: Duration) {
        self.remote.exit.expected.store(true, Ordering::SeqCst);
        if let Some(link) = self.link.take() {
            // Handlers still running are server threads waiting on the
            // host; killing the host below ends them.
            thread::spawn(move || drop(link));
        }
        let _ = self.wait_exit(grace);
        kill_group(self.remote.pid);
    }
}

impl Drop for HostedPlugin {
    fn drop(&mut self) {
        if self.link.is_some() {
            self.end(Duration::ZERO);
        }
    }
}

/// A host's ThreadEnd and stop result, back from the wire.
fn stop_report(report: WireStopReport) -> StopReport {
    match report {
        WireStopReport::Returned {
            stop_error,
            is_thread,
            still_running_ms,
        } => StopReport::Returned {
            stop: stop_error.map_or(Ok(()), Err),
            thread: match (is_thread, still_running_ms) {
                (_, Some(millis)) => ThreadEnd::StillRunning(Duration::from_millis(millis)),
                (true, None) => ThreadEnd::Ended,
                (false, None) => ThreadEnd::NotAThread,
            },
        },
        WireStopReport::TimedOut(millis) => StopReport::TimedOut(Duration::from_millis(millis)),
        WireStopReport::NotRun(reason) => StopReport::NotRun(reason),
    }
}

/// At most 8 bytes of a plugin name, for thread names (Linux shows 15).
fn short(name: &str) -> &str {
    let mut end = name.len().min(8);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// The keeper thread: spawns the host, hands back its pid and link, passes
/// its stderr through (keeping the tail, which says whether it ran out of
/// memory), reaps it and reports its end.
fn keep(
    command: Command,
    limits: ChildLimits,
    started: &mpsc::Sender<Result<(u32, std::os::unix::net::UnixStream), LinkError>>,
    exit: &ExitState,
    on_exit: impl FnOnce(HostExit),
) {
    let mut linked = match command.spawn_linked(&limits) {
        Ok(linked) => linked,
        Err(err) => {
            let _ = started.send(Err(err));
            return;
        }
    };
    let pid = linked.child.id();
    let stderr = linked.child.stderr.take();
    if started.send(Ok((pid, linked.stream))).is_err() {
        kill_group(pid);
    }
    let tail = stderr.map(|stderr| thread::spawn(move || pass_through(stderr)));
    let status = linked.child.wait();
    let tail = tail.and_then(|tail| tail.join().ok()).unwrap_or_default();
    let expected = exit.expected.load(Ordering::SeqCst);
    let error = match (lock(&exit.killed_because).clone(), status) {
        (Some(why), _) => format!("plugin host killed: {why}"),
        (None, Ok(status)) => format!(
            "plugin host exited: {}",
            ExitCause::from_status_and_stderr(status, &tail)
        ),
        (None, Err(err)) => format!("plugin host could not be waited for: {err}"),
    };
    let ended = HostExit { error, expected };
    *lock(&exit.ended) = Some(ended.clone());
    exit.ended_signal.notify_all();
    on_exit(ended);
}

/// How much of a host's stderr is kept to read its end from.
const STDERR_TAIL: usize = 4096;

/// Copies a host's stderr to the server's and returns the last bytes.
fn pass_through(mut stderr: impl Read) -> Vec<u8> {
    let mut tail = Vec::with_capacity(STDERR_TAIL * 2);
    let mut buffer = [0u8; 4096];
    let mut out = std::io::stderr();
    loop {
        match stderr.read(&mut buffer) {
            Ok(0) | Err(_) => return tail,
            Ok(read) => {
                let chunk = &buffer[..read];
                let _ = std::io::Write::write_all(&mut out, chunk);
                tail.extend_from_slice(chunk);
                if tail.len() > STDERR_TAIL * 2 {
                    tail.drain(..tail.len() - STDERR_TAIL);
                }
            }
        }
    }
}

/// The link closed: if the server did not ask for it, the host is gone, and
/// every registration of its plugin goes at once, so calls and changes go
/// on as if it were not there (I2). Runs on the link's reader: quick.
fn link_lost(remote: &Remote, reason: &CloseReason) {
    if remote.exit.expected.load(Ordering::SeqCst) {
        return;
    }
    remote.owner.retire();
    let removed = remote.api.remove_owned_by(&remote.owner);
    tracing::warn!(
        plugin = %remote.owner,
        "its plugin host is gone ({reason}); removed its {} registrations",
        removed.len()
    );
}

/// Logs a host's record as the server's, naming the plugin.
fn log_notice(owner: &Owner, notice: ToServer) {
    let ToServer::Log { level, message } = notice else {
        tracing::debug!(plugin = %owner, "plugin host sent a notice that is not a log record");
        return;
    };
    let plugin = owner.name();
    match level {
        WireLevel::Trace => tracing::trace!(target: "ucs::plugin", plugin, "{message}"),
        WireLevel::Debug => tracing::debug!(target: "ucs::plugin", plugin, "{message}"),
        WireLevel::Info => tracing::info!(target: "ucs::plugin", plugin, "{message}"),
        WireLevel::Warn => tracing::warn!(target: "ucs::plugin", plugin, "{message}"),
        WireLevel::Error => tracing::error!(target: "ucs::plugin", plugin, "{message}"),
    }
}

/// Serves one request of the host's plugin, exactly as the in-process port
/// would (I1).
fn serve(remote: &Arc<Remote>, request: ToServer) -> Result<ServerReply, WireApiError> {
    ucs_pybridge::thread_state::park();
    let api = &remote.api;
    let core = api.core();
    let owner = &remote.owner;
    let proxy = |registration, describe| Proxy::new(Arc::clone(remote), registration, describe);
    let done = |result: Result<RegistrationId, ApiError>| result.map(|_| ServerReply::Done);
    let reply = match request {
        ToServer::Log { level, message } => {
            log_notice(owner, ToServer::Log { level, message });
            Ok(ServerReply::Done)
        }
        ToServer::Agents => Ok(ServerReply::Values(
            core.directory()
                .agents()
                .iter()
                .map(|agent| WireValue::from(agent.to_value()))
                .collect(),
        )),
        ToServer::UserField { field } => user_field_of(api, &field).map(|users| {
            ServerReply::Users(
                users
                    .into_iter()
                    .map(|(id, value)| (id, WireValue::from(value)))
                    .collect(),
            )
        }),
        ToServer::SharedGet { identificator } => Ok(ServerReply::Value(WireValue::from(
            core.shared().get(&identificator),
        ))),
        ToServer::Sid => plugin_sid_of(api, &remote.sid).map(ServerReply::Sid),
        ToServer::Call {
            sid,
            method,
            params,
        } => api
            .call(&sid, &method, wire::values(params))
            .map(|value| ServerReply::Value(value.into())),
        ToServer::AddCallback {
            event,
            registration,
            describe,
        } => {
            let callback = Arc::new(RemoteCallback(proxy(registration, describe)));
            core.events()
                .add_callback(&event, owner.clone(), callback)
                .map_err(ApiError::from)
                .map(|id| {
                    lock(&remote.callbacks).insert(registration, id);
                    ServerReply::Done
                })
        }
        ToServer::RemoveCallback { registration } => {
            if let Some(id) = lock(&remote.callbacks).remove(&registration) {
                core.events().remove_callback(id);
            }
            Ok(ServerReply::Done)
        }
        ToServer::AddStatusHook {
            registration,
            describe,
        } => {
            let hook = Arc::new(RemoteStatusHook(proxy(registration, describe)));
            done(
                core.status_hook()
                    .add(owner.clone(), hook)
                    .map_err(ApiError::from),
            )
        }
        ToServer::RemoveStatusHook => {
            core.status_hook().remove(owner);
            Ok(ServerReply::Done)
        }
        ToServer::AddSharedHook {
            identificator,
            registration,
            describe,
        } => {
            let hook = Arc::new(RemoteSharedHook(proxy(registration, describe)));
            done(
                core.shared()
                    .add_hook(&identificator, owner.clone(), hook)
                    .map_err(ApiError::from),
            )
        }
        ToServer::RemoveSharedHook { identificator } => {
            core.shared().remove_hook(&identificator, owner);
            Ok(ServerReply::Done)
        }
        ToServer::AddMiddleware {
            method,
            registration,
            describe,
        } => {
            let middleware = Arc::new(RemoteMiddleware(proxy(registration, describe)));
            api.add_middleware(&method, owner.clone(), middleware)
                .map(|id| {
                    lock(&remote.middlewares).insert(registration, id);
                    ServerReply::Done
                })
        }
        ToServer::RemoveMiddleware { registration } => {
            if let Some(id) = lock(&remote.middlewares).remove(&registration) {
                api.remove_middleware(id);
            }
            Ok(ServerReply::Done)
        }
        ToServer::Proceed { chain, args } => proceed(remote, chain, wire::values(args)),
    };
    reply.map_err(WireApiError::from)
}

/// A middleware's `handler(*args)`: the rest of the chain it was given.
fn proceed(remote: &Remote, chain: u64, args: Vec<Value>) -> Result<ServerReply, ApiError> {
    let (next, inner_nanos) = match lock(&remote.chains).get(&chain) {
        Some(open) => (open.next.clone(), Arc::clone(&open.inner_nanos)),
        None => {
            return Err(ApiError::Processing(
                "this handler belongs to a middleware call that has returned".to_owned(),
            ));
        }
    };
    let started = Instant::now();
    let result = next.call(args);
    let spent = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    inner_nanos.fetch_add(spent, Ordering::Relaxed);
    result.map(|value| ServerReply::Value(value.into()))
}
