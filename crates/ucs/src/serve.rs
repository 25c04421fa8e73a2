//! `ucs serve`: the server process.
//!
//! Order of events: settings, logging, the data directory, the core with
//! user 1 (and the demo agents), the runtime, the listener, the plugins,
//! then gRPC until SIGTERM, SIGINT or SIGHUP. Shutdown runs the other way:
//! stop serving (calls in flight get a bounded grace), stop the plugins in
//! reverse load order, stop the runtime without waiting for blocking work
//! that never ends, exit 0; all of it within the shutdown deadline counted
//! from the signal (SPEC L3), which the watchdog of `shutdown.rs` keeps
//! whatever a plugin does (I7): past it, or at a second signal, the process
//! ends with status 3.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing_subscriber::EnvFilter;
use ucs_api::Api;
use ucs_core::{Core, CoreBuilder, NewUser};
use ucs_loader::{LoaderConfig, LoaderError, MemoryLimit, PluginHost};

use crate::cli::ServeArgs;
use crate::config::ServeSettings;
use crate::shutdown::Watchdog;

/// The environment variable with the first admin password (SPEC section 8).
pub(crate) const ADMIN_PASSWORD_ENV: &str = "UCS_ADMIN_PASSWORD";

/// The demo agents `--demo` creates: username and display name.
const DEMO_AGENTS: [(&str, &str); 3] = [
    ("alice", "Alice Smith"),
    ("bob", "Bob Jones"),
    ("carol", "Carol White"),
];
/// The demo agents' password, documented in `--help` and the README.
const DEMO_PASSWORD: &str = "password1";

/// How long the runtime may take to stop once everything was told to stop.
/// Blocking work still running then (a plugin call that never returns) is
/// abandoned: the process exits anyway (L3).
const RUNTIME_STOP_GRACE: Duration = Duration::from_secs(1);

/// How much of the shutdown deadline is kept for what follows stopping the
/// plugins (the runtime's stop, the exit), at most: a quarter of it.
const AFTER_PLUGINS_STOP: Duration = Duration::from_millis(500);

/// Runs the server until SIGTERM, SIGINT or SIGHUP.
pub(crate) fn run(args: ServeArgs) -> anyhow::Result<()> {
    pin_mmap_threshold();
    let settings = ServeSettings::resolve(&args)?;
    init_logging(settings.log_json);
    if let Some(home) = &settings.python_home {
        // Before anything starts the interpreter.
        ucs_pybridge::home::set_python_home(home.clone());
    }
    std::fs::create_dir_all(&settings.data_dir).with_context(|| {
        format!(
            "cannot create data directory {}",
            settings.data_dir.display()
        )
    })?;
    // The store holds users and shared data; it refuses a data dir in use by
    // another ucs, a corrupt database or a newer schema, each with a message
    // that says what to do, and never resets anything.
    let store = ucs_store::SqliteStore::open(&settings.data_dir).map_err(|err| anyhow!("{err}"))?;
    tracing::info!(database = %store.database_path().display(), "state loaded");
    let core = create_core(
        Core::builder()
            .session_idle_timeout(settings.session_idle_timeout)
            .store(Arc::new(store)),
        settings.demo,
    )?;
    let policy = ucs_api::HookPolicy {
        budget: settings.hook_budget,
        breaker_threshold: settings.breaker_threshold,
        // I3, both modes: the in-process watchdog and the host proxies read
        // it from the Api's policy.
        deadline: settings.hook_deadline,
        max_concurrent_calls: settings.plugin_max_calls,
    };
    let api = Api::with_policy(Arc::new(core), policy);

    // Every runtime thread, blocking-pool threads included, may run Python,
    // so each keeps one Python thread state for its whole life.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ucs-runtime")
        .on_thread_start(ucs_loader::python_thread_started)
        .on_thread_stop(ucs_loader::python_thread_stopping)
        .build()
        .context("cannot start the async runtime")?;
    let watch = settings.watch;
    let metrics_listen = settings.metrics_listen.clone();
    // When the shutdown must be over, once a signal began it (L3).
    let ends_at = OnceLock::new();
    let result = runtime.block_on(serve_until_signal(
        settings,
        api,
        watch,
        metrics_listen,
        &ends_at,
    ));
    let grace = ends_at.get().map_or(RUNTIME_STOP_GRACE, |ends_at| {
        RUNTIME_STOP_GRACE.min(ends_at.saturating_duration_since(Instant::now()))
    });
    runtime.shutdown_timeout(grace);
    if result.is_ok() {
        tracing::info!("stopped");
    }
    result
}

/// Keeps glibc from holding on to freed password-hashing memory.
///
/// Every argon2 hash (user creation, each login, the decoy hash at start)
/// allocates a 19 MiB block. glibc serves the first from `mmap` and then
/// raises its mmap threshold to that size, so every later block comes from
/// a thread's heap and stays resident after it is freed: measured, three
/// logins grew an idle server from 21 to 80 MB. A fixed threshold turns
/// that dynamic raise off, so each such block is unmapped when freed. It is
/// 4 MiB, not glibc's starting 128 KiB: at 128 KiB every mid-sized block
/// (compiling a plugin allocates several) became an mmap/munmap pair with
/// fresh zeroed pages; measured, `plugins.load` p50 went from 1.95 ms at
/// 128 KiB to 0.72 ms at 4 MiB, with idle RSS unchanged (2.4× bare
/// python). No effect on other C libraries, which have no `mallopt`.
fn pin_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        /// `M_MMAP_THRESHOLD` of glibc's `<malloc.h>`.
        const M_MMAP_THRESHOLD: std::ffi::c_int = -3;
        unsafe extern "C" {
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        // SAFETY: mallopt is glibc's, declared as in <malloc.h>; it is called
        // before the runtime starts any thread, and setting this parameter
        // only changes how later allocations are served.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 4 * 1024 * 1024);
        }
    }
}

/// The server's log goes to a copy of stderr with a number of its own
/// (issue 15 item 3): a plugin that closes fds 1 and 2 frees those numbers
/// for the next accepted connection, and the log, with callers' user
/// records in it, must never be written to a stranger's socket.
#[derive(Clone)]
struct LogFile(Arc<std::fs::File>);

impl std::io::Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        (&*self.0).write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        (&*self.0).flush()
    }
}

fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal, not in a log file or journal.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // Fails only without a free fd at start; stderr itself is then the log.
    let own = std::os::fd::AsFd::as_fd(&std::io::stderr())
        .try_clone_to_owned()
        .map(|fd| LogFile(Arc::new(std::fs::File::from(fd))));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(move || -> Box<dyn std::io::Write> {
            match &own {
                Ok(file) => Box::new(file.clone()),
                Err(_) => Box::new(std::io::stderr()),
            }
        });
    // A second subscriber (as in tests) is refused; the first one stays.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// The core `builder` makes, with user 1 and, for `--demo`, the demo
/// agents. Both are created only if the store does not hold them already,
/// so the admin password of the first start stays.
fn create_core(builder: CoreBuilder, demo: bool) -> anyhow::Result<Core> {
    let core = builder
        .build()
        .map_err(|err| anyhow!("cannot load the stored state: {err}"))?;
    if core
        .directory()
        .get(ucs_core::users::ADMIN_USER_ID)
        .is_some()
    {
        return add_demo_agents(core, demo);
    }
    let password = match std::env::var(ADMIN_PASSWORD_ENV) {
        Ok(password) if !password.is_empty() => password,
        _ => {
            let password = random_password()?;
            // Printed once, to the terminal of whoever started the server,
            // not into the log.
            eprintln!(
                "ucs: {ADMIN_PASSWORD_ENV} is not set; user 'admin' has the random password {password}"
            );
            password
        }
    };
    core.directory()
        .ensure_admin(&password)
        .map_err(|err| anyhow!("cannot create user 'admin' from {ADMIN_PASSWORD_ENV}: {err}"))?;
    add_demo_agents(core, demo)
}

/// Adds the demo agents that do not exist yet, for `--demo`.
fn add_demo_agents(core: Core, demo: bool) -> anyhow::Result<Core> {
    if demo {
        for (username, displayname) in DEMO_AGENTS {
            if core
                .directory()
                .list()
                .iter()
                .any(|u| u.username == username)
            {
                continue;
            }
            core.directory()
                .add(NewUser {
                    username: username.to_owned(),
                    displayname: displayname.to_owned(),
                    password: DEMO_PASSWORD.to_owned(),
                    superuser: false,
                    agent: true,
                })
                .map_err(|err| anyhow!("cannot create demo agent '{username}': {err}"))?;
        }
        tracing::warn!(
            "demo mode: agents alice, bob and carol have the password '{DEMO_PASSWORD}'"
        );
    }
    Ok(core)
}

fn random_password() -> anyhow::Result<String> {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).map_err(|err| anyhow!("no OS randomness for a password: {err}"))?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// SIGTERM, SIGINT and SIGHUP, registered before anything slow starts.
/// Each one shuts down in order; the first also arms the watchdog, and a
/// second one of any of them ends the process at once.
struct ShutdownSignals {
    /// What a service manager sends.
    terminate: Signal,
    /// Ctrl-C in a terminal.
    interrupt: Signal,
    /// The terminal the server runs in went away (issue 15 item 13). Its
    /// default action kills the process without any plugin's `stop()`;
    /// daemons that reload on SIGHUP reread their config, and this one's
    /// plugins reload by `ucs plugins load` or `--watch`, so it stops, the
    /// same as SIGTERM.
    hangup: Signal,
}

impl ShutdownSignals {
    fn register() -> anyhow::Result<Self> {
        Ok(ShutdownSignals {
            terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            hangup: signal(SignalKind::hangup()).context("cannot handle SIGHUP")?,
        })
    }

    /// Waits for the next signal and names it.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.hangup.recv() => "SIGHUP",
        }
    }
}

async fn serve_until_signal(
    settings: ServeSettings,
    api: Api,
    watch: bool,
    metrics_listen: Option<String>,
    ends_at: &OnceLock<Instant>,
) -> anyhow::Result<()> {
    let mut signals = ShutdownSignals::register()?;
    let listener = TcpListener::bind(&settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let address = listener.local_addr().context("no local address")?;
    // Dropped at the end of this function, which ends the metrics server.
    let (_stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let readiness = ucs_grpc::Readiness::default();
    // One throttle for every way in, so a guesser gets one allowance
    // whether it logs in over gRPC or through the console.
    let login_throttle = Arc::new(ucs_grpc::throttle::LoginThrottle::default());
    let console = settings
        .console
        .then(|| ucs_console::Console::new(api.clone(), Arc::clone(&login_throttle)));
    if let Some(metrics_address) = metrics_listen {
        let metrics_listener = TcpListener::bind(&metrics_address)
            .await
            .with_context(|| format!("cannot listen for metrics on {metrics_address}"))?;
        let bound = metrics_listener.local_addr().context("no local address")?;
        tracing::info!(address = %bound, "serving Prometheus metrics at /metrics");
        if console.is_some() {
            tracing::info!(
                "serving the web console at http://{bound}{}",
                ucs_console::CONSOLE_PATH
            );
        }
        let console_routes = console.as_ref().map(ucs_console::Console::router);
        let metrics_api = api.clone();
        let readiness = readiness.clone();
        let build = crate::cli::build_info();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = metrics_stopped.await;
            };
            if let Err(err) = ucs_grpc::serve_metrics(
                metrics_listener,
                metrics_api,
                build,
                readiness,
                console_routes,
                shutdown,
            )
            .await
            {
                tracing::error!("the metrics endpoint failed: {err}");
            }
        });
    }
    // Plugins load before the first call is served, so a client that sees
    // the server healthy sees its plugins too.
    let host = start_plugins(api.clone(), &settings).await?;
    if let Some(host) = &host {
        let host = Arc::downgrade(host);
        readiness.plugins(move || {
            let host = host.upgrade()?;
            (!host.start_up_done()).then(|| host.names_starting())
        });
    }
    // Watching starts after the start-up scan, so it sees only changes.
    let watcher = match (&host, watch) {
        (Some(host), true) => Some(crate::watch::start(api.clone(), Arc::clone(host))?),
        (None, true) => {
            tracing::warn!("--watch: there is no plugins directory to watch");
            None
        }
        (_, false) => None,
    };

    let (stop_serving, serving_stopped) = tokio::sync::oneshot::channel::<()>();
    let options = ucs_grpc::ServeOptions {
        tls: settings.tls.clone(),
        login_throttle: Some(login_throttle),
        ..ucs_grpc::ServeOptions::default()
    };
    let tls = if options.tls.is_some() {
        "TLS"
    } else {
        "plaintext"
    };
    let mut server = tokio::spawn(ucs_grpc::serve_with(listener, api, options, async move {
        let _ = serving_stopped.await;
    }));
    tracing::info!(%address, data_dir = %settings.data_dir.display(), "serving gRPC ({tls})");
    readiness.grpc_serving();

    let deadline = settings.shutdown_deadline;
    let served = tokio::select! {
        finished = &mut server => finished,
        name = signals.next() => {
            tracing::info!("{name} received; shutting down within {deadline:?}");
            readiness.shutting_down();
            if let Some(console) = &console {
                console.close_streams();
            }
            let _ = ends_at.set(Instant::now() + deadline);
            // From here the deadline holds whatever the plugins do (L3, I7),
            // and a second signal means "now".
            let watchdog = Watchdog::arm(name, deadline, host.as_ref())
                .context("cannot start the shutdown watchdog")?;
            tokio::spawn(async move {
                let again = signals.next().await;
                watchdog.second_signal(again);
            });
            let _ = stop_serving.send(());
            // `serve` bounds its own grace for calls in flight.
            server.await
        }
    };
    let served = match served {
        Ok(result) => result.context("the gRPC server failed"),
        Err(join_error) => Err(anyhow!("the gRPC server task failed: {join_error}")),
    };

    // No reload may start while plugins are being stopped.
    drop(watcher);
    if let Some(host) = host {
        // The plugins' share of the deadline: what the gRPC grace left, less
        // a little for the runtime's stop and the exit.
        let ends_at = *ends_at.get_or_init(|| Instant::now() + deadline);
        let plugins_by = ends_at
            .checked_sub(AFTER_PLUGINS_STOP.min(deadline / 4))
            .unwrap_or(ends_at);
        // Stopping plugins runs Python and joins plugin threads: blocking
        // work, never on a runtime worker.
        let stopping = tokio::task::spawn_blocking(move || host.shutdown_by(plugins_by));
        if let Err(join_error) = stopping.await {
            tracing::error!("stopping plugins failed: {join_error}");
        }
    }
    served
}

/// How long start-up waits for the plugins before it serves anyway (I4):
/// enough for a handful of ordinary plugins, short enough that clients can
/// log in within a second of start whatever a constructor does.
const START_WAIT: Duration = Duration::from_millis(500);

/// Starts the plugin host. A plugins directory that cannot be read is a
/// warning, not a reason to refuse to serve: the server runs without
/// plugins, and `plugins.*` calls say so.
async fn start_plugins(
    api: Api,
    settings: &ServeSettings,
) -> anyhow::Result<Option<Arc<PluginHost>>> {
    let mut config = LoaderConfig::new(settings.plugins_dir.clone());
    config.isolation.default = settings.isolation;
    config.isolation.per_plugin = settings.plugin_isolation.clone();
    config.isolation.hosts.memory = MemoryLimit::AddressSpace {
        bytes: settings.plugin_memory_limit,
    };
    config.isolation.hosts.load_deadline = settings.plugin_load_deadline;
    config.isolation.hosts.plugin_thread_nice = settings.plugin_thread_nice;
    // One setting for every interpreter plugins run in: the server's and
    // each host's.
    config.python_switch_interval = settings.python_switch_interval;
    config.isolation.hosts.python_switch_interval = settings.python_switch_interval;
    config.isolation.restart.max_restarts = settings.plugin_max_restarts;
    config.isolation.restart.window = settings.plugin_restart_window;
    config.shutdown_deadline = settings.shutdown_deadline;
    let config_file = settings.config_file.clone();
    config.plugin_config = ucs_loader::PluginConfigSource::new(move |name| {
        crate::config::plugin_config(config_file.as_deref(), name)
    });
    config.isolation.per_plugin_memory = settings
        .plugin_memory_limits
        .iter()
        .map(|(name, &bytes)| (name.clone(), MemoryLimit::AddressSpace { bytes }))
        .collect();
    config.isolation.hosts.python_home = settings.python_home.clone();
    config.isolation.hosts.python_venv = settings.python_venv.clone();
    let venv = settings.python_venv.clone();
    let started = tokio::task::spawn_blocking(move || {
        if let Some(venv) = venv {
            // A venv for another Python would fail every import that needs
            // it, one plugin at a time: refuse to start instead.
            let site = ucs_pybridge::home::use_venv(&venv)?;
            tracing::info!(site_packages = %site.display(), "plugins import packages from {}", venv.display());
        }
        anyhow::Ok(PluginHost::start_in_background(api, config, START_WAIT))
    })
    .await
    .map_err(|join_error| anyhow!("the plugin loader failed: {join_error}"))??;
    // Exhaustive on purpose: a new kind of loader error needs a decision
    // here between "warn and serve" and "refuse to start".
    match started {
        Ok(host) => Ok(Some(host)),
        Err(LoaderError::PluginsDir { path, source }) => {
            tracing::warn!(
                "cannot read plugins directory {}: {source}; serving without plugins",
                path.display()
            );
            Ok(None)
        }
        Err(err @ LoaderError::NoStartThread(_)) => Err(err.into()),
    }
}
