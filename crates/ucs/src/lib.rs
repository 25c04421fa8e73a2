//! The `ucs` command line: `ucs serve` runs the server; the other
//! subcommands are a small gRPC client in the spirit of kamcmd.
//!
//! # Layout
//! - [`cli`]: the clap definitions, the single source of `--help`.
//! - [`config`]: `ucs serve` settings from flags and the `--config` TOML file.
//! - `serve`: builds the core, the API and the plugin host, runs the gRPC
//!   server on a runtime whose threads keep a Python thread state, and shuts
//!   down on SIGTERM or SIGINT (SPEC L3).
//! - `client`: the client subcommands and their human or JSON output.
//!
//! The library maps every failure to an exit code; `main.rs` only calls
//! [`main`].

pub mod cli;
mod client;
pub mod config;
mod serve;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

/// Runs the command line and returns the process exit code: 0 on success,
/// 1 on any error (printed to stderr as `error: ...`), 2 for usage errors.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => match serve::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                tracing::error!("{err:#}");
                eprintln!("error: {err:#}");
                ExitCode::FAILURE
            }
        },
        command => client::run(cli.client, command),
    }
}
