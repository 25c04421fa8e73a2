//! The `ucs` command line: `ucs serve` runs the server; the other
//! subcommands are a small gRPC client in the spirit of kamcmd.
//!
//! # Layout
//! - [`cli`]: the clap definitions, the single source of `--help`.
//! - [`config`]: `ucs serve` settings from flags and the `--config` TOML file.
//! - `serve`: builds the core, the API and the plugin host, runs the gRPC
//!   server on a runtime whose threads keep a Python thread state, and shuts
//!   down on SIGTERM, SIGINT or SIGHUP (SPEC L3).
//! - `shutdown`: the watchdog that keeps the shutdown deadline whatever a
//!   plugin does, GIL held in C code included (I7).
//! - `client`: the client subcommands and their human or JSON output.
//! - `plugin_tools`: the local tools for plugin authors, `ucs stubs` and
//!   `ucs plugin check`, which need no server.
//! - `watch`: `ucs serve --watch`, reloading plugins as their files change.
//!
//! The library maps every failure to an exit code; `main.rs` only calls
//! [`main`].

pub mod cli;
mod client;
pub mod config;
mod plugin_tools;
mod serve;
mod shutdown;
mod tls_client;
mod watch;

use std::process::ExitCode;

use cli::Command;

/// Runs the command line and returns the process exit code: 0 on success,
/// 1 on any error (printed to stderr as `error: ...`), 2 for usage errors.
/// `ucs serve` also ends with 3, from its shutdown watchdog, when plugins
/// were not stopped by the shutdown deadline or a second signal came.
pub fn main() -> ExitCode {
    let cli = cli::parse();
    match cli.command {
        Command::Serve(args) => match serve::run(*args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                tracing::error!("{err:#}");
                eprintln!("error: {err:#}");
                ExitCode::FAILURE
            }
        },
        Command::Stubs { out, json } => plugin_tools::write_stubs(&out, json),
        Command::Plugin {
            command:
                cli::PluginCommand::Check {
                    files,
                    start_timeout,
                    stop_timeout,
                    json,
                },
        } => plugin_tools::check(&files, start_timeout, stop_timeout, json),
        Command::Plugin {
            command:
                cli::PluginCommand::Test {
                    dir,
                    plugins_dir,
                    python_venv,
                    pytest_args,
                },
        } => plugin_tools::test(
            &dir,
            plugins_dir.as_deref(),
            python_venv.as_deref(),
            &pytest_args,
        ),
        Command::Completions { shell } => cli::write_completions(shell),
        Command::PluginHost => ucs_host::run_plugin_host(),
        command => client::run(command),
    }
}
