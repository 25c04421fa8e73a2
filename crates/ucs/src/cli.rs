//! The command line, as clap reads it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

/// The default address of `ucs serve` and of the client (SPEC section 9).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Where the client connects unless `--server` says otherwise.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";
/// The production plugins directory (SPEC P1).
pub const DEFAULT_PLUGINS_DIR: &str = "/opt/ucs/server/plugins";

/// UCS, a contact-centre server with Python plugins, and its command-line
/// client.
///
/// The client options (--server, --ca, --sid, --user, --password, --json)
/// go after the client subcommand that takes them, e.g.
/// `ucs call --sid SID agents.list`; `ucs serve` and the local tools take
/// none of them.
#[derive(Debug, Parser)]
#[command(name = "ucs", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options of every client subcommand, and only of those (issue 17 item
/// 8): `ucs serve --help` must not offer a --sid it ignores.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Client options")]
pub struct ClientArgs {
    /// The server to talk to.
    #[arg(long, global = true, value_name = "URL", env = "UCS_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
    /// Connect with TLS, trusting this PEM file: the CA that signed the
    /// server's certificate, or the server's self-signed certificate itself
    /// (CA:TRUE, as `openssl req -x509` makes, or CA:FALSE); use an
    /// `https://` --server URL.
    #[arg(long, global = true, value_name = "FILE", env = "UCS_CA")]
    pub ca: Option<PathBuf>,
    /// The session id from `ucs login`.
    #[arg(long, global = true, env = "UCS_SID", hide_env_values = true)]
    pub sid: Option<String>,
    /// Log in as this user for this one command (and log out after it);
    /// takes precedence over --sid.
    #[arg(long, global = true, value_name = "USERNAME")]
    pub user: Option<String>,
    /// The password for --user.
    #[arg(long, global = true)]
    pub password: Option<String>,
    /// Print JSON instead of human-readable text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    ///
    /// User 1, `admin`, gets the password in UCS_ADMIN_PASSWORD, or a random
    /// one printed once to stderr. SIGTERM, SIGINT or SIGHUP stops serving,
    /// stops every plugin in reverse load order and exits 0, all within
    /// --shutdown-deadline of the signal; past it, whatever a plugin does,
    /// or at a second signal, it kills the plugin hosts and exits 3, naming
    /// the plugins not stopped. Nothing acknowledged is lost either way.
    Serve(Box<ServeArgs>),
    /// Log in with --user and --password and print the session id.
    ///
    /// For example: `export UCS_SID=$(ucs login --user admin --password ...)`.
    Login {
        /// How to reach the server, and the credentials.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// End the session given by --sid or UCS_SID.
    Logout {
        /// How to reach the server, and the session.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Load, unload and list plugins (needs a superuser).
    Plugins {
        /// How to reach the server and authenticate.
        #[command(flatten)]
        client: ClientArgs,
        /// What to do with plugins.
        #[command(subcommand)]
        command: PluginsCommand,
    },
    /// Call any API method by its dotted name, e.g. `ucs call agents.list`.
    Call {
        /// How to reach the server and authenticate.
        #[command(flatten)]
        client: ClientArgs,
        /// The method, e.g. `config.users.get`.
        method: String,
        /// The JSON array of the parameters after sid, e.g. `[2, 1, ""]`.
        args_json: Option<String>,
    },
    /// Stream events as they happen until interrupted.
    Events {
        /// How to reach the server and authenticate.
        #[command(flatten)]
        client: ClientArgs,
        /// Event names, e.g. `agent.status shared.data`; none means all.
        names: Vec<String>,
    },
    /// Write the type stubs of the plugin modules and the `ucs` object
    /// (for editors and mypy) into a directory.
    Stubs {
        /// The directory, created if missing; existing stubs are replaced.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Print JSON instead of human-readable text.
        #[arg(long)]
        json: bool,
    },
    /// Work on plugin files locally, without a server.
    Plugin {
        /// What to do with plugin files.
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Print a shell completion script, e.g.
    /// `ucs completions bash > /etc/bash_completion.d/ucs`.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// The plugin host of one process-isolated plugin (SPEC I1): started
    /// by `ucs serve` over an inherited socket, never by hand.
    #[command(name = "plugin-host", hide = true)]
    PluginHost,
}

impl Command {
    /// The client options of a client subcommand; `None` for `serve` and
    /// the local tools, which run without a server.
    pub fn client_args(&self) -> Option<&ClientArgs> {
        match self {
            Command::Login { client }
            | Command::Logout { client }
            | Command::Plugins { client, .. }
            | Command::Call { client, .. }
            | Command::Events { client, .. } => Some(client),
            Command::Serve(_)
            | Command::Stubs { .. }
            | Command::Plugin { .. }
            | Command::Completions { .. }
            | Command::PluginHost => None,
        }
    }
}

/// `ucs plugin ...`: local tools for plugin authors.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Run each file through load, start and stop in a throwaway in-process
    /// server (no network, nothing stored) and report what went wrong.
    ///
    /// Reports whether UCS_PLUGIN names a class, whether the constructor,
    /// start and stop ran, what the plugin registered and what stop left
    /// registered, whether a Thread plugin ended, and a start that blocks.
    /// Exits 0 if every file is clean, 1 with findings, 2 on usage errors.
    Check {
        /// The plugin files, e.g. `plugins/example.py`.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Seconds after which a start() that has not returned is reported
        /// as blocking.
        #[arg(long, value_name = "SECS", default_value_t = 2.0)]
        start_timeout: f64,
        /// Seconds stop() may take, and again a Thread plugin may take to
        /// end after it (the server's own defaults).
        #[arg(long, value_name = "SECS", default_value_t = 5.0)]
        stop_timeout: f64,
        /// Print JSON instead of human-readable text.
        #[arg(long)]
        json: bool,
    },
    /// Run a plugin directory's pytest tests on the real engine.
    ///
    /// pytest runs inside this binary's Python. A test that takes the
    /// `ucs_server` fixture gets a throwaway, memory-only server (the real
    /// core, API, loader and embedded Python, no network) with every plugin
    /// of the plugins directory loaded, and helpers to add agents, change
    /// statuses, call API methods as a user, set shared data and read the
    /// events and log records plugins produced (docs/plugins.md, "Testing a
    /// plugin"). pytest comes from --python-venv. Exits with pytest's code.
    Test {
        /// Where pytest looks for tests, e.g. `my_plugins/` with
        /// `my_plugins/tests/test_*.py`.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// The plugins every test server loads [default: DIR].
        #[arg(long, value_name = "DIR")]
        plugins_dir: Option<PathBuf>,
        /// The virtual environment pytest (and the plugins' packages) come
        /// from, made with the Python this binary embeds [default: the
        /// active one, $VIRTUAL_ENV].
        #[arg(long, value_name = "DIR", env = "VIRTUAL_ENV")]
        python_venv: Option<PathBuf>,
        /// Arguments for pytest itself, after `--`, e.g. `-- -k lunch -x`.
        #[arg(last = true, value_name = "PYTEST_ARGS")]
        pytest_args: Vec<String>,
    },
}

/// `ucs plugins ...`.
#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// List every plugin: loaded, failed or found in the directory.
    List,
    /// Load a plugin, or reload it from its file if it is loaded.
    Load {
        /// The plugin name: the file's stem, e.g. `example`.
        name: String,
    },
    /// Stop and unload a plugin.
    Unload {
        /// The plugin name: the file's stem, e.g. `example`.
        name: String,
    },
}

/// `ucs serve ...`, and the `--config` TOML file: one schema for both
/// (issue 17 item 5). Every flag but `--config` is a TOML key of the same
/// name with `_` for `-` (`--plugins-dir` is `plugins_dir`); a flag given
/// overrides the file's key, and an unknown key is refused with the list of
/// valid ones. `ServeSettings::resolve` merges them over the defaults.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeArgs {
    /// The address to listen on [default: 127.0.0.1:50051].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// The plugins directory [default: /opt/ucs/server/plugins].
    #[arg(long, value_name = "DIR")]
    pub plugins_dir: Option<PathBuf>,
    /// The data directory, created if missing: users and shared data live in
    /// DIR/ucs.db (SQLite, WAL). Agent statuses and sessions are not kept:
    /// after a restart every agent is OFFLINE and everyone logs in again.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// A TOML file whose keys are these options' names with `_` for `-`
    /// (`plugins_dir = "plugins"`, `hook_budget = "50ms"`, `demo = true`);
    /// flags override it, and relative paths in it are relative to the file.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Also create the agents alice, bob and carol, each with the password
    /// `password1`, for trying UCS out. Never use this in production.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub demo: Option<bool>,
    /// How long a session may stay unused before it expires, e.g. `30m`,
    /// `8h`, `2s` [default: 8h].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "deserialize_duration")]
    pub session_idle_timeout: Option<Duration>,
    /// Serve TLS with this PEM certificate chain (needs --tls-key).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Log JSON lines instead of text (the level comes from RUST_LOG,
    /// default info).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub log_json: Option<bool>,
    /// Also serve HTTP on this address, e.g. 127.0.0.1:9090: Prometheus
    /// metrics (`GET /metrics`: API calls by method and outcome with their
    /// latency, sessions, every plugin registration's calls, errors,
    /// overruns, latency and breaker, `process_*` and `ucs_build_info`; text
    /// 0.0.4, or OpenMetrics when asked for) and the probes `GET /healthz`
    /// and `GET /readyz`. Off unless given.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Also serve the operators' web console at `/console/` on the
    /// --metrics-listen address (which it needs): plugins with their state,
    /// errors, numbers and load, reload and unload buttons, the audit trail
    /// and a live board of the agents. Users log in as with `ucs login` and
    /// see only what the API lets them; bind --metrics-listen to loopback
    /// or put TLS in front, as the console speaks plain HTTP. Off unless
    /// given.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub console: Option<bool>,
    /// How long one plugin hook, callback or middleware call may take; a
    /// call over it is logged with the plugin, registration and time, e.g.
    /// `50ms`, `1s` [default: 50ms].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "deserialize_duration")]
    pub hook_budget: Option<Duration>,
    /// How long one plugin hook, callback or middleware call may take at
    /// all (SPEC I3): an in-process call past it gets `error.DeadlineExceeded`
    /// raised in its thread, a process-isolated plugin's host is killed. At
    /// least the budget, e.g. `5s`, `250ms` [default: 5s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "deserialize_duration")]
    pub hook_deadline: Option<Duration>,
    /// Failures or budget overruns in a row after which a registration's
    /// breaker opens and it is skipped until the plugin reloads; 0 never
    /// opens it [default: 10].
    #[arg(long, value_name = "N")]
    pub breaker_threshold: Option<u32>,
    /// How many calls may be inside one plugin at once, over all its hooks,
    /// callbacks and middleware; past it a middleware's caller gets
    /// RESOURCE_EXHAUSTED and a hook or callback is passed over as if it
    /// had failed, so a slow plugin cannot take every server thread
    /// [default: 64].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub plugin_max_calls: Option<u32>,
    /// Reload a plugin when its file is saved, load new plugin files as
    /// they appear and unload a plugin whose file is deleted; for plugin
    /// development.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub watch: Option<bool>,
    /// Where plugins run: `process` gives each plugin a host process of its
    /// own, so a crash, hang or leak in it cannot stop the server (it is
    /// restarted instead); `inprocess` runs them inside the server, the
    /// fastest path. The config file can set it per plugin with
    /// `[plugins.NAME] isolation = "..."` [default: process].
    #[arg(long, value_name = "MODE")]
    pub isolation: Option<IsolationMode>,
    /// The address-space limit of each plugin host in process isolation,
    /// e.g. `256MiB`, `1GiB`: a plugin that allocates past it gets a
    /// MemoryError or its host dies "out of memory" and is restarted,
    /// instead of the machine running out (I5). The config file can set it
    /// per plugin with `[plugins.NAME] memory_limit = "..."` [default: 1GiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    #[serde(default, deserialize_with = "deserialize_size")]
    pub plugin_memory_limit: Option<u64>,
    /// How long loading a plugin in process isolation (import, constructor
    /// and `start`) may take before its host is killed and the plugin is
    /// FAILED (I4), e.g. `10s` [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "deserialize_duration")]
    pub plugin_load_deadline: Option<Duration>,
    /// The nice value (0 to 19) of the threads a process-isolated plugin
    /// starts itself: they yield the CPU to the server and to the calls the
    /// plugin serves whenever both want it, so a plugin spinning in the
    /// background cannot slow the server's answers; 0 runs them at the
    /// server's priority [default: 19].
    #[arg(long, value_name = "NICE", value_parser = clap::value_parser!(u8).range(0..=19))]
    pub plugin_thread_nice: Option<u8>,
    /// How long a hook, callback or middleware waits at most for a plugin
    /// thread busy in Python to hand over the GIL (the interpreter's switch
    /// interval, in process and in every plugin host), e.g. `0.5ms`;
    /// CPython's own is `5ms`, which every hooked status change then waited
    /// while a plugin thread computed [default: 0.5ms].
    #[arg(long, value_name = "DURATION", value_parser = parse_switch_interval)]
    #[serde(default, deserialize_with = "deserialize_switch_interval")]
    pub python_switch_interval: Option<Duration>,
    /// How many times a process-isolated plugin whose host died is
    /// restarted within `--plugin-restart-window` before it is left FAILED
    /// until loaded by hand (I2, OTP's restart intensity); 0 never restarts
    /// it [default: 5].
    #[arg(long, value_name = "N")]
    pub plugin_max_restarts: Option<u32>,
    /// The sliding window `--plugin-max-restarts` counts restarts in, e.g.
    /// `60s`, `10m` [default: 60s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "deserialize_duration")]
    pub plugin_restart_window: Option<Duration>,
    /// A virtual environment whose packages plugins may import: its
    /// site-packages come after the standard library (and its `.pth` files
    /// are read). It must be made for the Python that runs plugins (`ucs
    /// --version`), e.g. `python3.11 -m venv DIR`; another is refused.
    #[arg(long, value_name = "DIR")]
    pub python_venv: Option<PathBuf>,
    /// The Python installation plugins run on (`sys.prefix`: its standard
    /// library) [default: the installation of the libpython the server
    /// loaded, never the first `python3` on PATH].
    #[arg(long, value_name = "DIR")]
    pub python_home: Option<PathBuf>,
    /// How long shutdown may take from SIGTERM, SIGINT or SIGHUP (SPEC L3):
    /// calls in flight, every plugin's `stop()`, the exit. Past it the
    /// server exits with status 3 whatever its plugins do, e.g. `10s`
    /// [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "deserialize_duration")]
    pub shutdown_deadline: Option<Duration>,
    /// Per-plugin settings, from the config file only: `[plugins.NAME]`.
    #[arg(skip)]
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginSettings>,
}

/// Where a plugin runs (SPEC I1), as the command line and config spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IsolationMode {
    /// In a plugin host process of its own.
    Process,
    /// Inside the server process.
    Inprocess,
}

impl From<IsolationMode> for ucs_api::Isolation {
    fn from(mode: IsolationMode) -> Self {
        match mode {
            IsolationMode::Process => ucs_api::Isolation::Process,
            IsolationMode::Inprocess => ucs_api::Isolation::InProcess,
        }
    }
}

/// The `[plugins.NAME]` table of the config file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSettings {
    /// Where this plugin runs, over `isolation`.
    pub isolation: Option<IsolationMode>,
    /// This plugin's host memory limit, over `plugin_memory_limit`.
    #[serde(default, deserialize_with = "deserialize_size")]
    pub memory_limit: Option<u64>,
    /// `[plugins.NAME.config]`: the plugin's own settings, its read-only
    /// `ucs.config`, read again at every load (issue 16 item 4). A value
    /// `{ env = "VAR" }` is the environment variable `VAR`, so secrets stay
    /// out of the file.
    pub config: Option<toml::Table>,
}

/// A duration key of the config file, written as on the command line
/// (`hook_budget = "50ms"`).
fn deserialize_duration<'de, D>(deserializer: D) -> Result<Option<Duration>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    deserialize_parsed(deserializer, parse_duration)
}

/// A switch interval in the config file, checked as the flag is.
fn deserialize_switch_interval<'de, D>(deserializer: D) -> Result<Option<Duration>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    deserialize_parsed(deserializer, parse_switch_interval)
}

/// A config file string read by the flag's own parser, so both refuse the
/// same input with the same message.
fn deserialize_parsed<'de, D>(
    deserializer: D,
    parse: fn(&str) -> Result<Duration, String>,
) -> Result<Option<Duration>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let text = String::deserialize(deserializer)?;
    parse(&text).map(Some).map_err(serde::de::Error::custom)
}

/// What `ucs --version` prints after `ucs `: the version, the commit it was
/// built from and the CPython that runs plugins, as loaded (the one the
/// dynamic linker found), as configured at build time, and its home (the
/// standard library it runs on, issue 16 item 3), e.g.
/// `0.1.0 (commit 9443d07c1a2b, Python 3.11.2, built for 3.11, home /usr)`.
pub fn version_text() -> String {
    format!(
        "{} (commit {}, Python {}, built for {}, home {})",
        env!("CARGO_PKG_VERSION"),
        env!("UCS_GIT_COMMIT"),
        ucs_pybridge::loaded_python_version(),
        env!("UCS_BUILD_PYTHON_VERSION"),
        ucs_pybridge::home::python_home()
            .map_or_else(|| "unknown".to_owned(), |home| home.display().to_string()),
    )
}

/// What `ucs_build_info` on `/metrics` says (issue 17 item 4): the same
/// version, commit and loaded Python as [`version_text`].
pub fn build_info() -> ucs_grpc::BuildInfo {
    ucs_grpc::BuildInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        commit: env!("UCS_GIT_COMMIT").to_owned(),
        python: ucs_pybridge::loaded_python_version(),
    }
}

/// Parses the process's arguments, with [`version_text`] as the version:
/// it is known only at run time, so it cannot be a derive attribute.
pub fn parse() -> Cli {
    let matches = Cli::command().version(version_text()).get_matches();
    match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    }
}

/// `ucs completions SHELL`: the completion script on stdout.
pub fn write_completions(shell: clap_complete::Shell) -> std::process::ExitCode {
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, "ucs", &mut std::io::stdout());
    std::process::ExitCode::SUCCESS
}

/// A size key of the config file, written as on the command line
/// (`plugin_memory_limit = "256MiB"`).
fn deserialize_size<'de, D>(deserializer: D) -> Result<Option<u64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let text = String::deserialize(deserializer)?;
    parse_size(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// Reads a size in bytes as a whole number with a unit: `B`, `KiB`, `MiB`,
/// `GiB`, `TiB` (powers of 1024) or `KB`, `MB`, `GB`, `TB` (powers of
/// 1000); a bare number is bytes. Zero is refused: a limit of nothing is
/// a mistake, not a setting.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size such as 256MiB or 1GiB"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "unknown unit '{other}' in '{text}'; use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB"
            ));
        }
    };
    match number.checked_mul(scale) {
        Some(0) => Err(format!("'{text}' is not a positive size")),
        Some(bytes) => Ok(bytes),
        None => Err(format!("'{text}' is too large")),
    }
}

/// Reads `--python-switch-interval`: a duration between 1 µs (CPython
/// refuses zero) and one second.
pub fn parse_switch_interval(text: &str) -> Result<Duration, String> {
    let interval = parse_duration(text)?;
    if interval < Duration::from_micros(1) || interval > Duration::from_secs(1) {
        return Err(format!(
            "'{text}' is not a switch interval: give one between 0.001ms and 1s, such as 0.5ms"
        ));
    }
    Ok(interval)
}

/// Reads a duration as a number with a unit: `ms`, `s`, `m` or `h`
/// (`90s`, `30m`); a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration such as 30m, 8h or 2s"))?;
    let seconds = match unit.trim() {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        other => {
            return Err(format!(
                "unknown unit '{other}' in '{text}'; use ms, s, m or h"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|duration| !duration.is_zero())
        .ok_or_else(|| format!("'{text}' is not a positive duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_with_their_units() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size(" 2 KiB "), Ok(2048));
        assert_eq!(parse_size("5MB"), Ok(5_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        for bad in [
            "",
            "0",
            "0MiB",
            "-1MiB",
            "1.5GiB",
            "12XB",
            "MiB",
            "1mib",
            "99999999999TiB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_size("0"),
            Err("'0' is not a positive size".to_owned())
        );
    }

    #[test]
    fn durations_read_with_their_units() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("8h"), Ok(Duration::from_secs(8 * 3600)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        for bad in ["", "0s", "-1s", "2d", "s", "1e400"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn client_flags_work_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "ucs",
            "plugins",
            "load",
            "example",
            "--user",
            "admin",
            "--password",
            "pw",
            "--json",
        ])
        .unwrap();
        let client = cli.command.client_args().unwrap();
        assert_eq!(client.user.as_deref(), Some("admin"));
        assert!(client.json);
        assert!(matches!(
            cli.command,
            Command::Plugins {
                command: PluginsCommand::Load { name },
                ..
            } if name == "example"
        ));
    }
}
