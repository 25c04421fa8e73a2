//! The local tools for plugin authors: `ucs stubs`, `ucs plugin check` and
//! `ucs plugin test`. None needs a server; the first two print for people,
//! or JSON with `--json`, the last is pytest's own report.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value as Json, json};
use ucs_core::RegistrationInfo;
use ucs_loader::check::{CheckConfig, CheckError, CheckReport, Severity, Step, ThreadCheck};

/// Exit code of `ucs plugin check` when a file has findings.
const EXIT_FINDINGS: u8 = 1;
/// Exit code for a command line that cannot be carried out as given.
const EXIT_USAGE: u8 = 2;

/// `ucs stubs --out DIR`: writes every stub file and prints its path.
pub(crate) fn write_stubs(out: &Path, json: bool) -> ExitCode {
    let written = std::fs::create_dir_all(out)
        .map_err(|err| format!("cannot create {}: {err}", out.display()))
        .and_then(|()| {
            ucs_loader::STUBS
                .iter()
                .map(|(file_name, contents)| {
                    let path = out.join(file_name);
                    std::fs::write(&path, contents)
                        .map(|()| path.clone())
                        .map_err(|err| format!("cannot write {}: {err}", path.display()))
                })
                .collect::<Result<Vec<PathBuf>, String>>()
        });
    let written = match written {
        Ok(written) => written,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::FAILURE;
        }
    };
    let output = if json {
        Json::from(
            written
                .iter()
                .map(|path| path.display().to_string())
                .collect::<Vec<_>>(),
        )
        .to_string()
    } else {
        written
            .iter()
            .map(|path| path.display().to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    print_output(&output)
}

/// `ucs plugin check FILE...`: checks each file and exits 0 if all are
/// clean, 1 with findings, 2 on usage errors.
pub(crate) fn check(
    files: &[PathBuf],
    start_timeout_secs: f64,
    stop_timeout_secs: f64,
    json: bool,
) -> ExitCode {
    // Plugins' own log lines (their `print()` and `ucs.log.info` included)
    // and the server's warnings go to stderr; the report is stdout.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,ucs::plugin=info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let (Some(start_timeout), Some(stop_timeout)) =
        (seconds(start_timeout_secs), seconds(stop_timeout_secs))
    else {
        eprintln!("error: timeouts must be positive numbers of seconds");
        return ExitCode::from(EXIT_USAGE);
    };
    // Every file must exist before any runs: a typo is a usage error, not a
    // finding about a plugin.
    if let Some(missing) = files.iter().find(|file| !file.is_file()) {
        eprintln!("error: {} is not a file", missing.display());
        return ExitCode::from(EXIT_USAGE);
    }
    let config = CheckConfig {
        start_timeout,
        stop_timeout,
        thread_join_timeout: stop_timeout,
        ..CheckConfig::default()
    };
    let mut reports = Vec::new();
    for file in files {
        match ucs_loader::check::check_plugin_file(file, &config) {
            Ok(report) => reports.push(report),
            Err(err @ CheckError::File { .. }) => {
                eprintln!("error: {err}");
                return ExitCode::from(EXIT_USAGE);
            }
            Err(err @ CheckError::Setup(_)) => {
                eprintln!("error: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    let output = if json {
        Json::from(reports.iter().map(report_json).collect::<Vec<_>>()).to_string()
    } else {
        reports
            .iter()
            .map(report_text)
            .collect::<Vec<_>>()
            .join("\n")
    };
    let printed = print_output(&output);
    if printed != ExitCode::SUCCESS {
        return printed;
    }
    if reports.iter().all(|report| report.findings().is_empty()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FINDINGS)
    }
}

/// `ucs plugin test DIR`: pytest over DIR on the real engine
/// (`ucs_testkit`); exits with pytest's code, or 2 when it cannot run.
pub(crate) fn test(
    dir: &Path,
    plugins_dir: Option<&Path>,
    python_venv: Option<&Path>,
    pytest_args: &[String],
) -> ExitCode {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{EnvFilter, Layer as _, filter::LevelFilter};
    // The server's own warnings go to stderr, where pytest shows them with
    // the test that caused them; every record naming a plugin, down to
    // DEBUG, is kept for `ucs_server.logs()`.
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter(
                    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
                ),
        )
        .with(ucs_testkit::LogCapture.with_filter(LevelFilter::DEBUG))
        .try_init();
    if let Some(venv) = python_venv
        && let Err(err) = ucs_pybridge::home::use_venv(venv)
    {
        eprintln!("error: {err}");
        return ExitCode::from(EXIT_USAGE);
    }
    match ucs_testkit::run(dir, plugins_dir.unwrap_or(dir), pytest_args) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX)),
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn seconds(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs > 0.0).then(|| Duration::from_secs_f64(secs))
}

fn print_output(output: &str) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{output}") {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: cannot write output: {err}");
            ExitCode::FAILURE
        }
    }
}

/// One file's report for people: one line per step, then what was
/// registered, then the findings.
fn report_text(report: &CheckReport) -> String {
    let mut text = String::new();
    let plugin = report.plugin.as_deref().unwrap_or("-");
    let _ = writeln!(text, "{}  (plugin {plugin})", report.file.display());
    let class = report.class_name.as_deref().unwrap_or("");
    let variable = match &report.plugin_variable {
        Step::Ran => format!("ok: names class {class}"),
        other => step_text(other),
    };
    let thread = match report.thread {
        ThreadCheck::NotAThread => "not a Thread plugin",
        ThreadCheck::Ended => "ended after stop()",
        ThreadCheck::StillRunning => "STILL RUNNING after stop()",
        ThreadCheck::Unknown => "-",
    };
    let lines = [
        ("import", step_text(&report.import)),
        ("UCS_PLUGIN", variable),
        ("constructor", step_text(&report.constructor)),
        ("start()", step_text(&report.start)),
        ("stop()", step_text(&report.stop)),
        ("thread", thread.to_owned()),
    ];
    for (label, value) in lines {
        let _ = writeln!(text, "  {label:<13}{}", first_line(&value));
    }
    let registrations = |label: &str, list: &[RegistrationInfo], text: &mut String| {
        if list.is_empty() {
            let _ = writeln!(text, "  {label:<13}nothing");
        }
        for (index, registration) in list.iter().enumerate() {
            let label = if index == 0 { label } else { "" };
            let _ = writeln!(text, "  {label:<13}{registration}");
        }
    };
    registrations("registered", &report.registered, &mut text);
    registrations("after stop()", &report.left_registered, &mut text);
    let findings = report.findings();
    if findings.is_empty() {
        let _ = writeln!(text, "  result       clean");
    } else {
        let _ = writeln!(text, "  result       {} finding(s)", findings.len());
        for finding in findings {
            let severity = match finding.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            let mut lines = finding.message.lines();
            let _ = writeln!(text, "  {severity}: {}", lines.next().unwrap_or(""));
            for line in lines {
                let _ = writeln!(text, "    {line}");
            }
        }
    }
    text
}

fn step_text(step: &Step) -> String {
    match step {
        Step::Ran => "ok".to_owned(),
        Step::Absent => "ok (not defined)".to_owned(),
        Step::Failed(_) => "FAILED (see below)".to_owned(),
        Step::TimedOut(after) => format!("did not return within {after:?}"),
        Step::NotReached => "-".to_owned(),
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// One file's report for scripts.
fn report_json(report: &CheckReport) -> Json {
    let findings = report.findings();
    json!({
        "file": report.file.display().to_string(),
        "plugin": report.plugin,
        "class_name": report.class_name,
        "steps": {
            "import": step_json(&report.import),
            "plugin_variable": step_json(&report.plugin_variable),
            "constructor": step_json(&report.constructor),
            "start": step_json(&report.start),
            "stop": step_json(&report.stop),
        },
        "thread": match report.thread {
            ThreadCheck::NotAThread => "not_a_thread",
            ThreadCheck::Ended => "ended",
            ThreadCheck::StillRunning => "still_running",
            ThreadCheck::Unknown => "unknown",
        },
        "registered": report.registered.iter().map(registration_json).collect::<Vec<_>>(),
        "left_registered": report.left_registered.iter().map(registration_json).collect::<Vec<_>>(),
        "findings": findings.iter().map(|finding| json!({
            "severity": match finding.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            },
            "message": finding.message,
        })).collect::<Vec<_>>(),
        "clean": findings.is_empty(),
    })
}

fn step_json(step: &Step) -> Json {
    match step {
        Step::Ran => json!({"status": "ok"}),
        Step::Absent => json!({"status": "absent"}),
        Step::Failed(error) => json!({"status": "failed", "error": error}),
        Step::TimedOut(after) => json!({"status": "timed_out", "after_secs": after.as_secs_f64()}),
        Step::NotReached => json!({"status": "not_reached"}),
    }
}

/// The same fields as a registration in `plugins.list --json`.
fn registration_json(registration: &RegistrationInfo) -> Json {
    json!({
        "kind": registration.kind.label(),
        "target": registration.target,
        "callable": &*registration.callable,
    })
}
