//! The settings of `ucs serve`: flags over the `--config` TOML file over
//! the defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use ucs_grpc::TlsIdentity;

use crate::cli::{DEFAULT_LISTEN, DEFAULT_PLUGINS_DIR, ServeArgs};

/// What `ucs serve` runs with, after flags, file and defaults are merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeSettings {
    /// The `--config` file, read again for a plugin's settings at each of
    /// its loads; none means every plugin's settings are empty.
    pub config_file: Option<PathBuf>,
    /// The virtual environment plugins import packages from.
    pub python_venv: Option<PathBuf>,
    /// The Python installation plugins run on, if not the loaded one's.
    pub python_home: Option<PathBuf>,
    /// The address to listen on, e.g. `127.0.0.1:50051`.
    pub listen: String,
    /// The plugins directory (SPEC P1).
    pub plugins_dir: PathBuf,
    /// The data directory: users and shared data (`DATA_DIR/ucs.db`).
    pub data_dir: PathBuf,
    /// Whether to create the demo agents.
    pub demo: bool,
    /// How long a session may stay unused (`--session-idle-timeout`).
    pub session_idle_timeout: Duration,
    /// The certificate and key read from `--tls-cert` and `--tls-key`; none
    /// means plaintext.
    pub tls: Option<TlsIdentity>,
    /// Whether logs are JSON lines (`--log-json`).
    pub log_json: bool,
    /// The HTTP listener of metrics and probes; none means off.
    pub metrics_listen: Option<String>,
    /// Whether the web console is served on `metrics_listen` (`--console`).
    pub console: bool,
    /// How long one plugin call may take before it counts as an overrun.
    pub hook_budget: Duration,
    /// How long one plugin call may take at all before it is interrupted
    /// (in-process) or its host killed (process mode) (I3).
    pub hook_deadline: Duration,
    /// Failures or overruns in a row that open a registration's breaker.
    pub breaker_threshold: u32,
    /// How many calls may be inside one plugin at once (the bulkhead).
    pub plugin_max_calls: u32,
    /// Whether to reload plugins as their files change (`--watch`).
    pub watch: bool,
    /// Where plugins run by default (`--isolation`, I1).
    pub isolation: ucs_api::Isolation,
    /// Where each plugin named in the config's `[plugins.NAME]` runs.
    pub plugin_isolation: std::collections::BTreeMap<String, ucs_api::Isolation>,
    /// Each plugin host's address-space limit in bytes (I5).
    pub plugin_memory_limit: u64,
    /// The memory limits of plugins whose `[plugins.NAME]` sets one.
    pub plugin_memory_limits: std::collections::BTreeMap<String, u64>,
    /// How long a process-isolated plugin's load may take (I4).
    pub plugin_load_deadline: Duration,
    /// The nice value of a hosted plugin's own threads.
    pub plugin_thread_nice: u8,
    /// The GIL switch interval of every interpreter plugins run in.
    pub python_switch_interval: Duration,
    /// Restarts of a dead host allowed within `plugin_restart_window` (I2).
    pub plugin_max_restarts: u32,
    /// The window `plugin_max_restarts` counts in.
    pub plugin_restart_window: Duration,
    /// How long shutdown may take from the first signal (L3, I7).
    pub shutdown_deadline: Duration,
}

/// SPEC L3's overall shutdown deadline.
pub const DEFAULT_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

impl ServeSettings {
    /// Merges `args` over the file `args.config` names, if any, over the
    /// defaults. The data directory has no default: it must be given.
    pub fn resolve(args: &ServeArgs) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(path) => read_config_file(path)?,
            None => ServeArgs::default(),
        };
        let merged = flags_over_file(args.clone(), file);
        let Some(data_dir) = merged.data_dir else {
            bail!("no data directory: pass --data-dir DIR or set data_dir in the --config file");
        };
        let policy = ucs_api::HookPolicy::default();
        let restart = ucs_loader::RestartPolicy::default();
        let hook_budget = merged.hook_budget.unwrap_or(policy.budget);
        let hook_deadline = merged.hook_deadline.unwrap_or(policy.deadline);
        // A deadline under the budget would interrupt calls before they even
        // count as slow; the duration parser already refuses 0.
        if hook_deadline < hook_budget {
            bail!(
                "hook_deadline ({hook_deadline:?}) is below hook_budget ({hook_budget:?}): a call \
                 must be allowed at least its budget; raise --hook-deadline or lower --hook-budget"
            );
        }
        let plugin_max_calls = merged
            .plugin_max_calls
            .unwrap_or(policy.max_concurrent_calls);
        // The flag's parser refuses 0; the file's value comes here unchecked.
        if plugin_max_calls == 0 {
            bail!(
                "plugin_max_calls must be at least 1: a plugin that may run no call at all would refuse every one"
            );
        }
        let console = merged.console.unwrap_or(false);
        if console && merged.metrics_listen.is_none() {
            bail!(
                "the console is served on the HTTP listener of metrics_listen: pass \
                 --metrics-listen ADDR (e.g. 127.0.0.1:9090) with --console"
            );
        }
        Ok(ServeSettings {
            config_file: args.config.clone(),
            python_venv: merged.python_venv.clone(),
            python_home: merged.python_home.clone(),
            listen: merged.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_owned()),
            plugins_dir: merged
                .plugins_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_PLUGINS_DIR)),
            data_dir,
            demo: merged.demo.unwrap_or(false),
            session_idle_timeout: merged
                .session_idle_timeout
                .unwrap_or(ucs_core::sessions::DEFAULT_SESSION_IDLE_TIMEOUT),
            tls: read_tls(merged.tls_cert.as_deref(), merged.tls_key.as_deref())?,
            log_json: merged.log_json.unwrap_or(false),
            console,
            metrics_listen: merged.metrics_listen,
            hook_budget,
            hook_deadline,
            breaker_threshold: merged.breaker_threshold.unwrap_or(policy.breaker_threshold),
            plugin_max_calls,
            watch: merged.watch.unwrap_or(false),
            isolation: merged
                .isolation
                .map_or(ucs_api::Isolation::Process, Into::into),
            plugin_isolation: merged
                .plugins
                .iter()
                .filter_map(|(name, plugin)| Some((name.clone(), plugin.isolation?.into())))
                .collect(),
            plugin_memory_limit: merged
                .plugin_memory_limit
                .unwrap_or(ucs_host::DEFAULT_MEMORY_LIMIT),
            plugin_memory_limits: merged
                .plugins
                .iter()
                .filter_map(|(name, plugin)| Some((name.clone(), plugin.memory_limit?)))
                .collect(),
            plugin_load_deadline: merged
                .plugin_load_deadline
                .unwrap_or(ucs_host::DEFAULT_LOAD_DEADLINE),
            plugin_thread_nice: merged
                .plugin_thread_nice
                .unwrap_or(ucs_host::DEFAULT_PLUGIN_THREAD_NICE),
            python_switch_interval: merged
                .python_switch_interval
                .unwrap_or(ucs_pybridge::priority::DEFAULT_SWITCH_INTERVAL),
            plugin_max_restarts: merged.plugin_max_restarts.unwrap_or(restart.max_restarts),
            plugin_restart_window: merged.plugin_restart_window.unwrap_or(restart.window),
            shutdown_deadline: merged
                .shutdown_deadline
                .unwrap_or(DEFAULT_SHUTDOWN_DEADLINE),
        })
    }
}

/// Each option from the flags if given there, else from the file. Both are
/// destructured whole, so a new option that is not merged does not compile.
fn flags_over_file(flags: ServeArgs, file: ServeArgs) -> ServeArgs {
    let ServeArgs {
        listen,
        plugins_dir,
        data_dir,
        config,
        demo,
        session_idle_timeout,
        tls_cert,
        tls_key,
        log_json,
        metrics_listen,
        console,
        hook_budget,
        hook_deadline,
        breaker_threshold,
        plugin_max_calls,
        watch,
        isolation,
        plugin_memory_limit,
        plugin_load_deadline,
        plugin_thread_nice,
        python_switch_interval,
        plugin_max_restarts,
        plugin_restart_window,
        shutdown_deadline,
        python_venv,
        python_home,
        plugins: _,
    } = flags;
    let ServeArgs {
        listen: file_listen,
        plugins_dir: file_plugins_dir,
        data_dir: file_data_dir,
        config: _,
        demo: file_demo,
        session_idle_timeout: file_session_idle_timeout,
        tls_cert: file_tls_cert,
        tls_key: file_tls_key,
        log_json: file_log_json,
        metrics_listen: file_metrics_listen,
        console: file_console,
        hook_budget: file_hook_budget,
        hook_deadline: file_hook_deadline,
        breaker_threshold: file_breaker_threshold,
        plugin_max_calls: file_plugin_max_calls,
        watch: file_watch,
        isolation: file_isolation,
        plugin_memory_limit: file_plugin_memory_limit,
        plugin_load_deadline: file_plugin_load_deadline,
        plugin_thread_nice: file_plugin_thread_nice,
        python_switch_interval: file_python_switch_interval,
        plugin_max_restarts: file_plugin_max_restarts,
        plugin_restart_window: file_plugin_restart_window,
        python_venv: file_python_venv,
        python_home: file_python_home,
        shutdown_deadline: file_shutdown_deadline,
        plugins: file_plugins,
    } = file;
    ServeArgs {
        listen: listen.or(file_listen),
        plugins_dir: plugins_dir.or(file_plugins_dir),
        data_dir: data_dir.or(file_data_dir),
        config,
        demo: demo.or(file_demo),
        session_idle_timeout: session_idle_timeout.or(file_session_idle_timeout),
        tls_cert: tls_cert.or(file_tls_cert),
        tls_key: tls_key.or(file_tls_key),
        log_json: log_json.or(file_log_json),
        metrics_listen: metrics_listen.or(file_metrics_listen),
        console: console.or(file_console),
        hook_budget: hook_budget.or(file_hook_budget),
        hook_deadline: hook_deadline.or(file_hook_deadline),
        breaker_threshold: breaker_threshold.or(file_breaker_threshold),
        plugin_max_calls: plugin_max_calls.or(file_plugin_max_calls),
        watch: watch.or(file_watch),
        isolation: isolation.or(file_isolation),
        plugin_memory_limit: plugin_memory_limit.or(file_plugin_memory_limit),
        plugin_load_deadline: plugin_load_deadline.or(file_plugin_load_deadline),
        plugin_thread_nice: plugin_thread_nice.or(file_plugin_thread_nice),
        python_switch_interval: python_switch_interval.or(file_python_switch_interval),
        plugin_max_restarts: plugin_max_restarts.or(file_plugin_max_restarts),
        plugin_restart_window: plugin_restart_window.or(file_plugin_restart_window),
        python_venv: python_venv.or(file_python_venv),
        python_home: python_home.or(file_python_home),
        shutdown_deadline: shutdown_deadline.or(file_shutdown_deadline),
        // Per-plugin tables exist only in the file.
        plugins: file_plugins,
    }
}

/// Reads the TLS files; both or neither must be given (clap checks that,
/// this re-checks for callers that build [`ServeArgs`] by hand).
fn read_tls(cert: Option<&Path>, key: Option<&Path>) -> anyhow::Result<Option<TlsIdentity>> {
    let read = |path: &Path, what: &str| {
        std::fs::read(path).with_context(|| format!("cannot read TLS {what} {}", path.display()))
    };
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(TlsIdentity {
            cert_pem: read(cert, "certificate")?,
            key_pem: read(key, "key")?,
        })),
        _ => bail!("--tls-cert and --tls-key go together"),
    }
}

fn read_config_file(path: &Path) -> anyhow::Result<ServeArgs> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    // serde names an unknown key and lists the valid ones.
    let mut file: ServeArgs =
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))?;
    // Paths in a config file mean what they say wherever the server starts.
    let base = path.parent().unwrap_or(Path::new(""));
    for dir in [
        &mut file.plugins_dir,
        &mut file.data_dir,
        &mut file.tls_cert,
        &mut file.tls_key,
        &mut file.python_venv,
        &mut file.python_home,
    ] {
        *dir = dir.take().map(|relative| base.join(relative));
    }
    Ok(file)
}

/// The settings of plugin `name` (`[plugins.NAME.config]`) as they are in
/// `config_file` now, for its `ucs.config`; an empty map without a file or
/// a table. The file is read at every load, so a reload sees an edit.
pub fn plugin_config(config_file: Option<&Path>, name: &str) -> Result<ucs_core::Value, String> {
    let Some(path) = config_file else {
        return Ok(ucs_core::Value::empty_map());
    };
    let file = read_config_file(path).map_err(|err| format!("{err:#}"))?;
    match file
        .plugins
        .get(name)
        .and_then(|plugin| plugin.config.as_ref())
    {
        Some(table) => toml_table_to_value(table, &format!("[plugins.{name}.config]")),
        None => Ok(ucs_core::Value::empty_map()),
    }
}

/// A TOML table as a [`ucs_core::Value`] map; `at` names it in errors.
fn toml_table_to_value(table: &toml::Table, at: &str) -> Result<ucs_core::Value, String> {
    table
        .iter()
        .map(|(key, item)| {
            let value = toml_to_value(item, &format!("{at} {key}"))?;
            Ok((ucs_core::MapKey::Str(key.clone()), value))
        })
        .collect::<Result<_, String>>()
        .map(ucs_core::Value::Map)
}

/// One TOML value as a [`ucs_core::Value`]: dates become their text, and a
/// table that is exactly `{ env = "VAR" }` the environment variable's value.
fn toml_to_value(item: &toml::Value, at: &str) -> Result<ucs_core::Value, String> {
    use ucs_core::Value;
    Ok(match item {
        toml::Value::String(text) => Value::Str(text.clone()),
        toml::Value::Integer(int) => Value::Int(*int),
        toml::Value::Float(float) => Value::float(*float).map_err(|err| format!("{at}: {err}"))?,
        toml::Value::Boolean(flag) => Value::Bool(*flag),
        toml::Value::Datetime(when) => Value::Str(when.to_string()),
        toml::Value::Array(items) => Value::List(
            items
                .iter()
                .map(|item| toml_to_value(item, at))
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(table) => match (table.len(), table.get("env")) {
            (1, Some(toml::Value::String(variable))) => match std::env::var(variable) {
                Ok(value) => Value::Str(value),
                Err(_) => {
                    return Err(format!(
                        "{at} is the environment variable {variable}, which is not set (or not \
                         UTF-8) in the server's environment"
                    ));
                }
            },
            _ => toml_table_to_value(table, at)?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::{CommandFactory, Parser};

    fn args() -> ServeArgs {
        ServeArgs::default()
    }

    /// `ucs serve ARGS...` as clap reads it.
    fn serve_args(args: &[&str]) -> ServeArgs {
        let cli = Cli::try_parse_from(["ucs", "serve"].iter().chain(args)).unwrap();
        match cli.command {
            crate::cli::Command::Serve(args) => *args,
            other => panic!("not serve: {other:?}"),
        }
    }

    fn config_file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ucs.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    /// Why a server with `text` as its config file does not start.
    fn refusal_of(text: &str) -> String {
        let (_dir, path) = config_file(text);
        let err = ServeSettings::resolve(&ServeArgs {
            config: Some(path),
            data_dir: Some("/tmp/d".into()),
            ..args()
        })
        .unwrap_err();
        format!("{err:#}")
    }

    /// Every `ucs serve` flag but `--config`, by its TOML key.
    fn every_key() -> Vec<String> {
        let cli = Cli::command();
        let serve = cli.find_subcommand("serve").unwrap();
        serve
            .get_arguments()
            .filter_map(|arg| arg.get_long())
            .filter(|long| !matches!(*long, "config" | "help" | "version"))
            .map(|long| long.replace('-', "_"))
            .collect()
    }

    #[test]
    fn defaults_apply_but_the_data_dir_is_required() {
        let err = ServeSettings::resolve(&args()).unwrap_err();
        assert!(err.to_string().contains("--data-dir"));
        let settings = ServeSettings::resolve(&ServeArgs {
            data_dir: Some("/tmp/d".into()),
            ..args()
        })
        .unwrap();
        assert_eq!(settings.listen, DEFAULT_LISTEN);
        assert_eq!(settings.plugins_dir, PathBuf::from(DEFAULT_PLUGINS_DIR));
        assert!(!settings.demo && !settings.watch && !settings.log_json);
        assert_eq!(settings.metrics_listen, None);
        // I1: the rule suite passes in both modes, so plugins are isolated
        // unless the operator says otherwise.
        assert_eq!(settings.isolation, ucs_api::Isolation::Process);
    }

    /// Issue 17 item 5: a file with every key sets every setting.
    #[test]
    fn a_config_file_with_every_key_sets_every_setting() {
        let (dir, path) = config_file(
            r#"
listen = "0.0.0.0:6000"
plugins_dir = "plugins"
data_dir = "/var/lib/ucs"
demo = true
session_idle_timeout = "30m"
tls_cert = "cert.pem"
tls_key = "key.pem"
log_json = true
metrics_listen = "127.0.0.1:9999"
console = true
hook_budget = "1s"
hook_deadline = "2s"
breaker_threshold = 3
plugin_max_calls = 16
watch = true
isolation = "process"
plugin_memory_limit = "256MiB"
plugin_load_deadline = "3s"
plugin_thread_nice = 5
python_switch_interval = "0.25ms"
plugin_max_restarts = 2
plugin_restart_window = "10m"
shutdown_deadline = "4s"
python_venv = "venv"
python_home = "/opt/python"

[plugins.status_hook]
isolation = "inprocess"
memory_limit = "2GiB"
"#,
        );
        // Every key the command line knows is in the file above.
        let text = std::fs::read_to_string(&path).unwrap();
        for key in every_key() {
            assert!(text.contains(&format!("\n{key} = ")), "{key} missing");
        }
        std::fs::write(dir.path().join("cert.pem"), "CERT").unwrap();
        std::fs::write(dir.path().join("key.pem"), "KEY").unwrap();
        let settings = ServeSettings::resolve(&ServeArgs {
            config: Some(path.clone()),
            ..args()
        })
        .unwrap();
        assert_eq!(
            settings,
            ServeSettings {
                config_file: Some(path),
                python_venv: Some(dir.path().join("venv")),
                python_home: Some("/opt/python".into()),
                listen: "0.0.0.0:6000".into(),
                plugins_dir: dir.path().join("plugins"),
                data_dir: "/var/lib/ucs".into(),
                demo: true,
                session_idle_timeout: Duration::from_secs(1800),
                tls: Some(TlsIdentity {
                    cert_pem: b"CERT".to_vec(),
                    key_pem: b"KEY".to_vec(),
                }),
                log_json: true,
                metrics_listen: Some("127.0.0.1:9999".into()),
                console: true,
                hook_budget: Duration::from_secs(1),
                hook_deadline: Duration::from_secs(2),
                breaker_threshold: 3,
                plugin_max_calls: 16,
                watch: true,
                isolation: ucs_api::Isolation::Process,
                plugin_isolation: [("status_hook".to_owned(), ucs_api::Isolation::InProcess)]
                    .into(),
                plugin_memory_limit: 256 << 20,
                plugin_memory_limits: [("status_hook".to_owned(), 2 << 30)].into(),
                plugin_load_deadline: Duration::from_secs(3),
                plugin_thread_nice: 5,
                python_switch_interval: Duration::from_micros(250),
                plugin_max_restarts: 2,
                plugin_restart_window: Duration::from_secs(600),
                shutdown_deadline: Duration::from_secs(4),
            }
        );
    }

    /// The sample the dist ships as etc/ucs.toml names every key and is
    /// accepted as it is.
    #[test]
    fn the_shipped_sample_config_has_every_key_and_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/ucs.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        for key in every_key() {
            assert!(
                text.lines().any(|line| line
                    .trim_start_matches("# ")
                    .starts_with(&format!("{key} = "))),
                "dist/ucs.toml does not mention {key}"
            );
        }
        let settings = ServeSettings::resolve(&ServeArgs {
            config: Some(path),
            ..args()
        })
        .unwrap();
        assert_eq!(settings.data_dir, PathBuf::from("/var/lib/ucs"));
        assert!(settings.log_json);
    }

    #[test]
    fn flags_override_the_file_and_file_paths_are_relative_to_it() {
        let (dir, path) = config_file(
            "listen = \"0.0.0.0:6000\"\nplugins_dir = \"plugins\"\ndata_dir = \"/var/lib/ucs\"\n\
             demo = true\nhook_budget = \"2s\"\n",
        );
        let config = path.to_str().unwrap();
        let from_file = ServeSettings::resolve(&serve_args(&["--config", config])).unwrap();
        assert_eq!(from_file.listen, "0.0.0.0:6000");
        assert_eq!(from_file.plugins_dir, dir.path().join("plugins"));
        assert_eq!(from_file.data_dir, PathBuf::from("/var/lib/ucs"));
        assert!(from_file.demo);
        assert_eq!(from_file.hook_budget, Duration::from_secs(2));

        let overridden = ServeSettings::resolve(&serve_args(&[
            "--config",
            config,
            "--listen",
            "127.0.0.1:7000",
            "--demo=false",
            "--hook-budget",
            "5ms",
            "--watch",
        ]))
        .unwrap();
        assert_eq!(overridden.listen, "127.0.0.1:7000");
        assert!(!overridden.demo);
        assert!(overridden.watch);
        assert_eq!(overridden.hook_budget, Duration::from_millis(5));
        assert_eq!(overridden.plugins_dir, dir.path().join("plugins"));
    }

    /// Issue 17 item 5: a typo names the key and every valid one.
    #[test]
    fn unknown_keys_in_the_file_are_named_with_the_valid_ones() {
        let message = refusal_of("lisen = \"x\"\n");
        assert!(message.contains("lisen"), "{message}");
        for key in every_key() {
            assert!(message.contains(&format!("`{key}`")), "{key}: {message}");
        }
        assert!(!message.contains("`config`"), "{message}");
    }

    /// I3: a deadline of 0 or under the budget is refused, saying why.
    #[test]
    fn a_zero_deadline_or_one_below_the_budget_is_refused() {
        let zero = Cli::try_parse_from(["ucs", "serve", "--hook-deadline", "0s"]).unwrap_err();
        assert!(zero.to_string().contains("positive"), "{zero}");
        let below = ServeSettings::resolve(&serve_args(&[
            "--data-dir",
            "/tmp/d",
            "--hook-budget",
            "1s",
            "--hook-deadline",
            "250ms",
        ]))
        .unwrap_err();
        let message = format!("{below:#}");
        assert!(message.contains("below hook_budget"), "{message}");
        let from_file = refusal_of("hook_deadline = \"10ms\"\n");
        assert!(from_file.contains("below hook_budget"), "{from_file}");
        let fine = ServeSettings::resolve(&serve_args(&[
            "--data-dir",
            "/tmp/d",
            "--hook-deadline",
            "250ms",
        ]))
        .unwrap();
        assert_eq!(fine.hook_deadline, Duration::from_millis(250));
    }

    /// L3: a shutdown deadline of 0 is refused, from the flag and the file.
    #[test]
    fn a_zero_shutdown_deadline_is_refused() {
        let zero = Cli::try_parse_from(["ucs", "serve", "--shutdown-deadline", "0s"]).unwrap_err();
        assert!(zero.to_string().contains("positive"), "{zero}");
        let from_file = refusal_of("shutdown_deadline = \"0ms\"\n");
        assert!(from_file.contains("positive"), "{from_file}");
        let default = ServeSettings::resolve(&serve_args(&["--data-dir", "/tmp/d"])).unwrap();
        assert_eq!(default.shutdown_deadline, DEFAULT_SHUTDOWN_DEADLINE);
    }

    /// Issue 16 item 4: `[plugins.NAME.config]` becomes the plugin's
    /// settings, every TOML type kept, `{ env = "VAR" }` read from the
    /// environment, read again on each call (a reload sees an edit).
    #[test]
    fn a_plugins_config_table_becomes_its_settings_with_env_secrets() {
        // SAFETY: the variable's name is this test's own; no other test
        // reads or writes it.
        unsafe { std::env::set_var("UCS_TEST_CRM_TOKEN", "s3cret") };
        let (_dir, path) = config_file(
            r#"
[plugins.crm.config]
url = "https://crm.example"
retries = 3
backoff = 0.5
enabled = true
since = 2026-12-03
queues = ["sales", "support"]
token = { env = "UCS_TEST_CRM_TOKEN" }
limits = { per_minute = 60 }
"#,
        );
        let settings = plugin_config(Some(&path), "crm").unwrap();
        assert_eq!(
            settings.to_json_string(),
            r#"{"backoff":0.5,"enabled":true,"limits":{"per_minute":60},"queues":["sales","support"],"retries":3,"since":"2026-12-03","token":"s3cret","url":"https://crm.example"}"#
        );
        assert_eq!(
            plugin_config(Some(&path), "other").unwrap(),
            ucs_core::Value::empty_map()
        );
        assert_eq!(
            plugin_config(None, "crm").unwrap(),
            ucs_core::Value::empty_map()
        );

        std::fs::write(
            &path,
            "[plugins.crm.config]\ntoken = { env = \"UCS_TEST_NEVER_SET\" }\n",
        )
        .unwrap();
        let missing = plugin_config(Some(&path), "crm").unwrap_err();
        assert!(
            missing.contains("[plugins.crm.config] token is the environment variable UCS_TEST_NEVER_SET, which is not set"),
            "{missing}"
        );
    }

    #[test]
    fn a_bad_duration_in_the_file_says_which() {
        let message = refusal_of("hook_budget = \"2d\"\n");
        assert!(
            message.contains("hook_budget") || message.contains("2d"),
            "{message}"
        );
    }

    #[test]
    fn a_switch_interval_out_of_range_is_refused_in_the_file_as_on_the_command_line() {
        for text in ["0ms", "2s"] {
            let message = refusal_of(&format!("python_switch_interval = \"{text}\"\n"));
            // Zero is no duration at all; two seconds is one, but too long.
            assert!(message.contains(&format!("'{text}' is not a")), "{message}");
            assert!(crate::cli::parse_switch_interval(text).is_err(), "{text}");
        }
        assert_eq!(
            crate::cli::parse_switch_interval("0.5ms"),
            Ok(Duration::from_micros(500))
        );
    }
}
