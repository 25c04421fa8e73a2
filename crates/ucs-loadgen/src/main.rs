//! `ucs-loadgen`: measures the real `ucs` binary from outside, as a client
//! would see it, against the peers it must beat (issue 6).
//!
//! # Layout
//! - [`load`]: keeps N `Api.Call` requests in flight for a while and
//!   reports throughput and latency percentiles.
//! - [`ceiling`]: the minimal tonic unary server that answers `Api.Call`
//!   with a fixed message: the most any tonic server can do here.
//! - [`floor`]: a bare round trip to another process over a Unix socket,
//!   the least a process-isolated hook can cost on this machine.
//! - [`processes`]: starting, waiting for and measuring child processes
//!   (`ucs serve`, the ceiling, the Python peer).
//! - [`suite`]: every server-level figure of `cargo xtask bench`, written as
//!   `key value` lines.
//!
//! Every address is loopback and every loop is bounded in time.

mod ceiling;
mod floor;
mod load;
mod processes;
mod suite;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Load client and process-level benchmarks of `ucs`.
#[derive(Parser)]
#[command(name = "ucs-loadgen")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs every server-level benchmark and writes `key value` lines.
    Suite(suite::SuiteArgs),
    /// Serves `ucs.v1.Api/Call` with a fixed answer (the ceiling peer).
    Ceiling {
        /// A loopback address to listen on, e.g. 127.0.0.1:50999.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// The `result_json` every call gets.
        #[arg(long)]
        result_json: String,
        /// Exits after this many seconds, so it never outlives a run.
        #[arg(long, default_value_t = 600)]
        lifetime_secs: u64,
    },
    /// Echoes over a Unix socket (the other end of the floor, `floor.rs`).
    #[command(hide = true)]
    Echo {
        /// The socket to connect to.
        #[arg(long)]
        socket: PathBuf,
    },
    /// Loads one server with `Api.Call` and prints the figures.
    Load {
        /// e.g. http://127.0.0.1:50051
        #[arg(long)]
        url: String,
        /// The session id to call with.
        #[arg(long)]
        sid: String,
        /// The API method.
        #[arg(long, default_value = "agents.list")]
        method: String,
        /// The call's arguments, a JSON array (e.g. `[2, 1, ""]` for
        /// `agents.setStatus`).
        #[arg(long, default_value = "[]")]
        args: String,
        /// Calls in flight.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Seconds to measure.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Suite(args) => suite::run(args),
        Command::Ceiling {
            listen,
            result_json,
            lifetime_secs,
        } => ceiling::run(listen, result_json, Duration::from_secs(lifetime_secs)),
        Command::Echo { socket } => floor::echo(&socket),
        Command::Load {
            url,
            sid,
            method,
            args,
            concurrency,
            seconds,
        } => {
            let runtime = load::client_runtime()?;
            let stats = runtime.block_on(async {
                let target = load::Target::connect(&url, &sid, &method)
                    .await?
                    .with_args(&args);
                load::run(
                    &target,
                    concurrency,
                    Duration::from_millis(500),
                    Duration::from_secs_f64(seconds),
                )
                .await
            })?;
            eprintln!("{stats}");
            Ok(())
        }
    }
}

/// Where `bench/` is: the workspace root's, found from this crate.
fn bench_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../bench")
}
