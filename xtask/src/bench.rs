//! `cargo xtask bench [--quick]`: every speed goal of issue 6, measured side
//! by side in one run, printed as a table and written as JSON.
//!
//! Steps: build `ucs` and `ucs-loadgen` in release; make the Python venv
//! with grpcio (once) and generate the Python peer's code from the proto;
//! run the criterion micro-benchmarks (`crates/ucs-bench`); run the
//! server-level suite (`ucs-loadgen suite`); then compute each figure from
//! the medians both wrote as `key value` lines.
//!
//! Output: the table on stdout, `target/bench/results.json` (under
//! `CARGO_TARGET_DIR` when set) for tooling. A missed goal is reported, not
//! a failure: the task fails only when something could not be measured.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Failure, workspace_root};

/// The figures: how each is computed from the raw medians, and its goal.
struct Figure {
    /// What is compared, in words.
    name: &'static str,
    /// The measured value.
    value: f64,
    /// How the value is shown: "×", "ns" or "ms".
    unit: &'static str,
    /// The goal, `None` for figures that are only reported.
    goal: Option<Goal>,
}

/// A goal: at most or at least a bound.
#[derive(Clone, Copy)]
enum Goal {
    AtMost(f64),
    AtLeast(f64),
}

impl Goal {
    fn met(self, value: f64) -> bool {
        match self {
            Goal::AtMost(bound) => value <= bound,
            Goal::AtLeast(bound) => value >= bound,
        }
    }

    fn describe(self, unit: &str) -> String {
        match self {
            Goal::AtMost(bound) => format!("≤ {bound}{unit}"),
            Goal::AtLeast(bound) => format!("≥ {bound}{unit}"),
        }
    }
}

/// Runs the benchmarks; `args` are the task's arguments (`--quick`).
pub(crate) fn bench(args: &[String]) -> Result<(), Failure> {
    let quick = args.iter().any(|arg| arg == "--quick");
    if let Some(unknown) = args.iter().find(|arg| *arg != "--quick") {
        return Err(Failure(format!("bench: unknown argument '{unknown}'")));
    }
    let root = workspace_root();
    let target_dir = target_dir(&root);
    let out_dir = target_dir.join("bench");
    std::fs::create_dir_all(&out_dir)
        .map_err(|err| Failure(format!("cannot create {}: {err}", out_dir.display())))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());

    step(
        "build ucs and ucs-loadgen (release)",
        Command::new(&cargo).args(["build", "--release", "-p", "ucs", "-p", "ucs-loadgen"]),
    )?;
    // Criterion builds here too, before anything is timed.
    step(
        "build the micro-benchmarks",
        Command::new(&cargo).args(["bench", "-p", "ucs-bench", "--bench", "micro", "--no-run"]),
    )?;
    let python = python_venv(&out_dir)?;
    let gen_dir = out_dir.join("py");
    std::fs::create_dir_all(&gen_dir)
        .map_err(|err| Failure(format!("cannot create {}: {err}", gen_dir.display())))?;
    step(
        "generate the Python peer's code from proto/",
        Command::new(&python)
            .args(["-m", "grpc_tools.protoc", "-Iproto"])
            .arg(format!("--python_out={}", gen_dir.display()))
            .arg(format!("--grpc_python_out={}", gen_dir.display()))
            .arg("proto/ucs/v1/ucs.proto"),
    )?;

    let started = std::time::Instant::now();
    let mut micro = Command::new(&cargo);
    micro
        .args(["bench", "-p", "ucs-bench", "--bench", "micro"])
        .env("UCS_BENCH_OUT", &out_dir)
        .env("UCS_BENCH_QUICK", if quick { "1" } else { "0" });
    step("micro-benchmarks (criterion)", &mut micro)?;

    let mut suite = Command::new(target_dir.join("release/ucs-loadgen"));
    suite
        .arg("suite")
        .arg("--ucs")
        .arg(target_dir.join("release/ucs"))
        .arg("--python")
        .arg(&python)
        .arg("--python-gen-dir")
        .arg(&gen_dir)
        .arg("--out")
        .arg(out_dir.join("server.txt"));
    if quick {
        suite.arg("--quick");
    }
    step("server benchmarks (ucs-loadgen suite)", &mut suite)?;
    let measuring = started.elapsed();

    let mut raw = read_key_values(&out_dir.join("micro.txt"))?;
    raw.extend(read_key_values(&out_dir.join("server.txt"))?);
    let figures = figures(&raw)?;
    let machine = machine(&python);
    let table = table(&figures, &raw);
    print_report(&table, &machine, quick, measuring);
    let json = json(&figures, &raw, &machine, quick, measuring.as_secs_f64());
    let json_path = out_dir.join("results.json");
    std::fs::write(&json_path, json)
        .map_err(|err| Failure(format!("cannot write {}: {err}", json_path.display())))?;
    eprintln!("xtask: wrote {}", json_path.display());
    Ok(())
}

#[expect(
    clippy::print_stdout,
    reason = "the table is the task's output, not a diagnostic"
)]
fn print_report(
    table: &str,
    machine: &[(&str, String)],
    quick: bool,
    measuring: std::time::Duration,
) {
    println!();
    for (key, value) in machine {
        println!("{key}: {value}");
    }
    println!(
        "mode: {}, measuring took {:.0} s\n",
        if quick { "--quick" } else { "full" },
        measuring.as_secs_f64()
    );
    print!("{table}");
}

/// `CARGO_TARGET_DIR` if set (relative to the root), else `target/`.
fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

/// Runs one command from the workspace root; its failure ends the task.
fn step(what: &str, command: &mut Command) -> Result<(), Failure> {
    eprintln!("xtask: bench: {what}");
    let status = command
        .current_dir(workspace_root())
        .status()
        .map_err(|err| Failure(format!("bench: {what}: cannot start: {err}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(Failure(format!("bench: {what}: failed ({status})")))
    }
}

/// The venv's python, creating the venv with grpcio and grpcio-tools from
/// the package registry the first time.
fn python_venv(out_dir: &Path) -> Result<PathBuf, Failure> {
    let venv = out_dir.join("venv");
    let python = venv.join("bin/python");
    let ready = Command::new(&python)
        .args(["-c", "import grpc, grpc_tools"])
        .status()
        .is_ok_and(|status| status.success());
    if ready {
        return Ok(python);
    }
    // The interpreter the server embeds, so both sides run the same CPython.
    let base = std::env::var_os("PYO3_PYTHON").unwrap_or_else(|| "python3".into());
    step(
        "create the Python venv",
        Command::new(base).arg("-m").arg("venv").arg(&venv),
    )?;
    step(
        "install grpcio and grpcio-tools into the venv",
        Command::new(&python).args(["-m", "pip", "install", "--quiet", "grpcio", "grpcio-tools"]),
    )?;
    Ok(python)
}

/// `key value` lines into a map.
fn read_key_values(path: &Path) -> Result<BTreeMap<String, f64>, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| Failure(format!("cannot read {}: {err}", path.display())))?;
    let mut values = BTreeMap::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let parsed = line
            .split_once(' ')
            .and_then(|(key, value)| Some((key.to_owned(), value.trim().parse::<f64>().ok()?)));
        let Some((key, value)) = parsed else {
            return Err(Failure(format!("{}: bad line '{line}'", path.display())));
        };
        values.insert(key, value);
    }
    Ok(values)
}

/// Every figure of issue 6 from the raw medians.
fn figures(raw: &BTreeMap<String, f64>) -> Result<Vec<Figure>, Failure> {
    let get = |key: &str| {
        raw.get(key)
            .copied()
            .ok_or_else(|| Failure(format!("bench: no measurement '{key}'")))
    };
    let hook_ns = get("micro.hook.python_hook_ns")?;
    let mw0 = get("micro.middleware.0_ns")?;
    let reload_ms = get("reload.ucs.p50_us")? / 1000.0;
    Ok(vec![
        // Issue 13 item 3: each in-process figure against its own floor or
        // an absolute bound, not against a pure-Python loop.
        Figure {
            name: "status change via Python hook / its floor (attach, agents.Agent, call, tuple, detach)",
            value: hook_ns / get("micro.hook.floor_ns")?,
            unit: "×",
            goal: Some(Goal::AtMost(1.5)),
        },
        Figure {
            name: "status change, no hook",
            value: get("micro.hook.no_hook_ns")?,
            unit: " ns",
            goal: Some(Goal::AtMost(150.0)),
        },
        Figure {
            name: "metrics and breaker per hook call / status change via Python hook",
            value: get("micro.hook.metering_ns")? / hook_ns,
            unit: "×",
            goal: Some(Goal::AtMost(0.05)),
        },
        Figure {
            name: "API call: ns added by 1 Python middleware",
            value: get("micro.middleware.1_ns")? - mw0,
            unit: " ns",
            goal: Some(Goal::AtMost(2000.0)),
        },
        Figure {
            name: "API call: ns added per middleware, 3 middlewares",
            value: (get("micro.middleware.3_ns")? - mw0) / 3.0,
            unit: " ns",
            goal: Some(Goal::AtMost(2000.0)),
        },
        Figure {
            name: "agents.list throughput, no Python / tonic ceiling",
            value: get("load.ucs.rps")? / get("load.ceiling.rps")?,
            unit: "×",
            goal: Some(Goal::AtLeast(0.7)),
        },
        Figure {
            name: "agents.list throughput, 1 middleware / Python grpcio peer",
            value: get("load.ucs_middleware.rps")? / get("load.python_peer.rps")?,
            unit: "×",
            goal: Some(Goal::AtLeast(4.0)),
        },
        Figure {
            name: "agents.list p99, plugin thread spinning / idle",
            value: get("gil.spinning.p99_us")? / get("gil.idle.p99_us")?,
            unit: "×",
            goal: Some(Goal::AtMost(2.0)),
        },
        Figure {
            name: "agents.setStatus p50 through the spinning plugin's own hook, spinning (GIL switch interval)",
            value: get("gil.hook.spinning.p50_us")?,
            unit: " µs",
            goal: None,
        },
        Figure {
            name: "the same, isolated (the host's GIL)",
            value: get("gil.isolated.hook.spinning.p50_us")?,
            unit: " µs",
            goal: None,
        },
        Figure {
            name: "plugins.load p50 / plain importlib import",
            value: get("reload.ucs.p50_us")? / get("reload.python_import.p50_us")?,
            unit: "×",
            goal: Some(Goal::AtMost(2.0)),
        },
        Figure {
            name: "plugins.load p50",
            value: reload_ms,
            unit: " ms",
            goal: Some(Goal::AtMost(5.0)),
        },
        Figure {
            name: "idle RSS, server + 4 example plugins / bare python",
            value: get("memory.ucs.rss_kib")? / get("memory.python.rss_kib")?,
            unit: "×",
            goal: Some(Goal::AtMost(3.0)),
        },
        // Issue 18: what process isolation costs, and how fast it recovers.
        Figure {
            name: "isolated status hook: µs added to agents.setStatus p50 (host round trip)",
            value: get("hook.process.p50_us")? - get("hook.inprocess.p50_us")?,
            unit: " µs",
            goal: Some(Goal::AtMost(30.0)),
        },
        Figure {
            name: "the floor: a bare Unix socket round trip to another process, p50",
            value: get("hook.floor.socket_rtt.p50_us")?,
            unit: " µs",
            goal: None,
        },
        Figure {
            name: "isolated status hook: µs added to agents.setStatus p99",
            value: get("hook.process.p99_us")? - get("hook.inprocess.p99_us")?,
            unit: " µs",
            goal: None,
        },
        Figure {
            name: "host segfault to its plugin serving again, p50 (100 ms of it is backoff)",
            value: get("crash.to_serving.p50_ms")?,
            unit: " ms",
            goal: Some(Goal::AtMost(500.0)),
        },
        Figure {
            name: "RSS per plugin host, mean of the 4 example plugins",
            value: get("memory.host.mean_rss_kib")? / 1024.0,
            unit: " MiB",
            goal: Some(Goal::AtMost(12.0)),
        },
        Figure {
            name: "the same as PSS (shared pages divided among the processes that map them)",
            value: get("memory.host.mean_pss_kib")? / 1024.0,
            unit: " MiB",
            goal: None,
        },
        Figure {
            name: "the same, private to the host (what one more isolated plugin costs)",
            value: get("memory.host.mean_private_kib")? / 1024.0,
            unit: " MiB",
            goal: None,
        },
        Figure {
            name: "agents.list p99, isolated plugin thread spinning / idle",
            value: get("gil.isolated.spinning.p99_us")? / get("gil.isolated.idle.p99_us")?,
            unit: "×",
            goal: Some(Goal::AtMost(1.1)),
        },
        // Issue 13: 500 agents and the four documented plugins.
        Figure {
            name: "500 agents: agents.list throughput / tonic ceiling (same bytes)",
            value: get("scale.list.ucs.rps")? / get("scale.list.ceiling.rps")?,
            unit: "×",
            goal: Some(Goal::AtLeast(0.8)),
        },
        Figure {
            name: "500 agents: agents.setStatus via StatusHook + Example callback / Python peer",
            value: get("scale.set_status.ucs.rps")? / get("scale.set_status.python_peer.rps")?,
            unit: "×",
            goal: Some(Goal::AtLeast(20.0)),
        },
        Figure {
            name: "the same / tonic ceiling answering its bytes (what gRPC alone allows)",
            value: get("scale.set_status.ucs.rps")? / get("scale.set_status.ceiling.rps")?,
            unit: "×",
            goal: None,
        },
        Figure {
            name: "500 agents: config.users.get via the Middleware example / Python peer",
            value: get("scale.users_get.ucs.rps")? / get("scale.users_get.python_peer.rps")?,
            unit: "×",
            goal: Some(Goal::AtLeast(10.0)),
        },
        Figure {
            name: "the same / tonic ceiling answering its bytes",
            value: get("scale.users_get.ucs.rps")? / get("scale.users_get.ceiling.rps")?,
            unit: "×",
            goal: None,
        },
        Figure {
            name: "50 subscribers during the setStatus load: events delivered per second",
            value: get("scale.events.delivered_per_s")?,
            unit: "/s",
            goal: None,
        },
        Figure {
            name: "the same: lag p99, probe change's call to its event at a subscriber",
            value: get("scale.events.lag_p99_ms")?,
            unit: " ms",
            goal: None,
        },
    ])
}

fn format_value(value: f64, unit: &str) -> String {
    if unit == "×" {
        format!("{value:.2}×")
    } else {
        format!("{value:.0}{unit}")
    }
}

/// The figures table and the raw medians, as Markdown.
fn table(figures: &[Figure], raw: &BTreeMap<String, f64>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| figure | measured | goal | met? |");
    let _ = writeln!(out, "|---|---|---|---|");
    for figure in figures {
        let (goal, met) = match figure.goal {
            Some(goal) => (
                goal.describe(figure.unit.trim()),
                if goal.met(figure.value) { "yes" } else { "NO" },
            ),
            None => ("(reported)".to_owned(), "-"),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {goal} | {met} |",
            figure.name,
            format_value(figure.value, figure.unit)
        );
    }
    let _ = writeln!(out, "\n| raw median | value |\n|---|---|");
    for (key, value) in raw {
        let _ = writeln!(out, "| {key} | {value:.1} |");
    }
    out
}

/// What the run ran on.
fn machine(python: &Path) -> Vec<(&'static str, String)> {
    let command_output = |program: &Path, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .ok()
            .map(|output| {
                let text = if output.stdout.is_empty() {
                    output.stderr
                } else {
                    output.stdout
                };
                String::from_utf8_lossy(&text).trim().to_owned()
            })
            .unwrap_or_else(|| "unknown".to_owned())
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    vec![
        (
            "nproc",
            std::thread::available_parallelism()
                .map(|n| n.to_string())
                .unwrap_or_else(|_| "unknown".to_owned()),
        ),
        ("cpu", cpu),
        (
            "kernel",
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|text| text.trim().to_owned())
                .unwrap_or_else(|_| "unknown".to_owned()),
        ),
        ("rustc", command_output(Path::new("rustc"), &["--version"])),
        ("python", command_output(python, &["--version"])),
        (
            "grpcio",
            command_output(python, &["-c", "import grpc; print(grpc.__version__)"]),
        ),
    ]
}

/// A JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ch if (ch as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", ch as u32);
            }
            ch => out.push(ch),
        }
    }
    out.push('"');
    out
}

/// A JSON number; non-finite values (a zero baseline) become null.
fn json_number(value: f64) -> String {
    if value.is_finite() {
        format!("{value}")
    } else {
        "null".to_owned()
    }
}

/// The results for tooling: machine, figures with goals, raw medians.
fn json(
    figures: &[Figure],
    raw: &BTreeMap<String, f64>,
    machine: &[(&str, String)],
    quick: bool,
    seconds: f64,
) -> String {
    let machine: Vec<String> = machine
        .iter()
        .map(|(key, value)| format!("    {}: {}", json_string(key), json_string(value)))
        .collect();
    let figures: Vec<String> = figures
        .iter()
        .map(|figure| {
            let (goal, met) = match figure.goal {
                Some(goal) => (
                    json_string(&goal.describe(figure.unit.trim())),
                    goal.met(figure.value).to_string(),
                ),
                None => ("null".to_owned(), "null".to_owned()),
            };
            format!(
                "    {{\"figure\": {}, \"measured\": {}, \"unit\": {}, \"goal\": {goal}, \"met\": {met}}}",
                json_string(figure.name),
                json_number(figure.value),
                json_string(figure.unit.trim()),
            )
        })
        .collect();
    let raw: Vec<String> = raw
        .iter()
        .map(|(key, value)| format!("    {}: {}", json_string(key), json_number(*value)))
        .collect();
    format!(
        "{{\n  \"quick\": {quick},\n  \"measuring_seconds\": {},\n  \"machine\": {{\n{}\n  }},\n  \"figures\": [\n{}\n  ],\n  \"raw\": {{\n{}\n  }}\n}}\n",
        json_number(seconds),
        machine.join(",\n"),
        figures.join(",\n"),
        raw.join(",\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goals_compare_in_the_right_direction() {
        assert!(Goal::AtMost(1.5).met(1.5));
        assert!(!Goal::AtMost(1.5).met(1.6));
        assert!(Goal::AtLeast(20.0).met(25.0));
        assert!(!Goal::AtLeast(20.0).met(19.0));
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
        assert_eq!(json_number(f64::INFINITY), "null");
    }
}
