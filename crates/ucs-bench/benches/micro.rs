//! Micro-benchmarks of the Python crossings, in one process and one run so
//! each ratio compares figures measured side by side:
//!
//! - `hook/floor`: the least a status change through a Python hook can cost
//!   (issue 13 item 3): attach, build the `agents.Agent` and the two
//!   arguments, call the trivial hook function the plugin registered, read
//!   its tuple, detach, straight from Rust with none of the pipeline;
//! - `hook/python_hook`: a status change through the pipeline with that hook;
//! - `hook/no_hook`: the same change with no hook registered;
//! - `hook/metering`: what measuring one hook call adds (issue 8): the
//!   breaker check, the two clock reads and the counter updates that every
//!   Python adapter does around its call;
//! - `middleware/{none,one,three}`: `agents.list` as an API call with 0, 1
//!   and 3 trivial Python middlewares; the cost each adds is the difference
//!   to `none`, per middleware.
//!
//! `UCS_BENCH_QUICK=1` shortens every measurement. With `UCS_BENCH_OUT=DIR`
//! criterion's data goes to `DIR/criterion` and the medians, in ns per
//! operation, to `DIR/micro.txt` as `key value` lines for `cargo xtask bench`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{BatchSize, Criterion};
use ucs_bench::{BenchServer, StatusHookFloor, plugins};

/// The figures this program reports: key, criterion group, criterion id.
const FIGURES: &[(&str, &str, &str)] = &[
    ("micro.hook.floor_ns", "hook", "floor"),
    ("micro.hook.python_hook_ns", "hook", "python_hook"),
    ("micro.hook.no_hook_ns", "hook", "no_hook"),
    ("micro.hook.metering_ns", "hook", "metering"),
    ("micro.middleware.0_ns", "middleware", "none"),
    ("micro.middleware.1_ns", "middleware", "one"),
    ("micro.middleware.3_ns", "middleware", "three"),
];

fn main() {
    let quick = std::env::var_os("UCS_BENCH_QUICK").is_some_and(|value| value != "0");
    let out_dir = std::env::var_os("UCS_BENCH_OUT").map(PathBuf::from);
    let (warm_up, measurement, samples) = if quick {
        (Duration::from_millis(500), Duration::from_secs(2), 30)
    } else {
        (Duration::from_secs(2), Duration::from_secs(6), 100)
    };
    let mut criterion = Criterion::default()
        .warm_up_time(warm_up)
        .measurement_time(measurement)
        .sample_size(samples)
        .without_plots();
    if let Some(dir) = &out_dir {
        criterion = criterion.output_directory(&dir.join("criterion"));
    }
    let mut criterion = criterion.configure_from_args();

    let server = BenchServer::start().expect("start the in-process server");
    hook_benchmarks(&mut criterion, &server);
    middleware_benchmarks(&mut criterion, &server);
    criterion.final_summary();
    drop(server);

    if let Some(dir) = out_dir {
        write_medians(&dir).expect("write micro.txt");
    }
}

/// A status change through a trivial Python hook, its floor (the same
/// hook's Python work straight from Rust), and the change with no hook.
fn hook_benchmarks(criterion: &mut Criterion, server: &BenchServer) {
    let agent = server.agent_ids[0];
    server
        .load_plugin("trivial_status_hook", plugins::TRIVIAL_STATUS_HOOK)
        .expect("load trivial_status_hook");
    let floor = StatusHookFloor::of_registered_hook(server, agent).expect("the hook's floor");

    let mut group = criterion.benchmark_group("hook");
    let mut flip = false;
    group.bench_function("floor", |bencher| {
        bencher.iter(|| {
            flip = !flip;
            floor.call(flip).expect("the hook's floor")
        });
    });
    drop(floor);
    group.bench_function("python_hook", |bencher| {
        bencher.iter(|| {
            flip = !flip;
            server.change_status(agent, flip).expect("status change");
        });
    });
    server
        .unload_plugin("trivial_status_hook")
        .expect("unload trivial_status_hook");
    group.bench_function("no_hook", |bencher| {
        bencher.iter(|| {
            flip = !flip;
            server.change_status(agent, flip).expect("status change");
        });
    });
    // Exactly what `PyCallable::measured` does around a call.
    let metrics = ucs_api::RegistrationMetrics::new();
    let policy = ucs_api::HookPolicy::default();
    group.bench_function("metering", |bencher| {
        bencher.iter(|| {
            if !metrics.skip() {
                let started = quanta::Instant::now();
                let elapsed = std::hint::black_box(started).elapsed();
                metrics.record(elapsed, ucs_api::CallOutcome::Ok, &policy)
            } else {
                unreachable!("the breaker of a metering benchmark never opens")
            }
        });
    });
    group.finish();
}

/// `agents.list` through 0, 1 and 3 trivial Python middlewares.
fn middleware_benchmarks(criterion: &mut Criterion, server: &BenchServer) {
    let mut group = criterion.benchmark_group("middleware");
    let mut loaded = 0;
    for (id, count) in [("none", 0), ("one", 1), ("three", 3)] {
        while loaded < count {
            loaded += 1;
            server
                .load_plugin(&format!("middleware_{loaded}"), plugins::TRIVIAL_MIDDLEWARE)
                .expect("load a middleware plugin");
        }
        group.bench_function(id, |bencher| {
            bencher.iter_batched(
                || (),
                |()| server.list_agents().expect("agents.list"),
                // The result is dropped outside the timing, as gRPC drops it
                // after encoding.
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
    for index in 1..=loaded {
        server
            .unload_plugin(&format!("middleware_{index}"))
            .expect("unload a middleware plugin");
    }
}

/// Writes the median of each figure, read from criterion's estimates.
fn write_medians(dir: &Path) -> Result<(), String> {
    let mut text = String::new();
    for (key, group, id) in FIGURES {
        let path = dir
            .join("criterion")
            .join(group)
            .join(id)
            .join("new/estimates.json");
        let estimates =
            std::fs::read_to_string(&path).map_err(|err| format!("{}: {err}", path.display()))?;
        let estimates: serde_json::Value =
            serde_json::from_str(&estimates).map_err(|err| format!("{}: {err}", path.display()))?;
        let median = estimates["median"]["point_estimate"]
            .as_f64()
            .ok_or_else(|| format!("{}: no median", path.display()))?;
        let _ = writeln!(text, "{key} {median:.1}");
    }
    std::fs::write(dir.join("micro.txt"), text).map_err(|err| err.to_string())
}
