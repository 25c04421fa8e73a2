//! The project's automation, run as `cargo xtask <task>`.
//!
//! # Layout
//! - [`main`] reads the task name and dispatches with one `match`.
//! - One function per task ([`test`], [`dist`], [`soak`], [`help`]); a new
//!   task is one more arm and one more function.
//! - [`Step`] is one external command; [`run_steps`] runs a list of them in
//!   order and stops at the first failure, naming it.
//!
//! Standard library only: the xtask must build on a fresh machine before
//! anything else works, and it is the first thing CI compiles.

mod dist_check;
mod tidy;

mod bench;

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

/// Exit code for a task that ran and failed.
const EXIT_FAILED: u8 = 1;
/// Exit code for a command line that names no known task.
const EXIT_USAGE: u8 = 2;

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  test    the whole suite, failing fast: fmt check, clippy -D warnings,
          every test of every workspace crate, then mypy on plugins/ and
          docs/examples/ against the stubs (needs mypy; see UCS_MYPY_PYTHON)
  dist    the release `ucs` binary (no rpath) and
          target/dist/ucs-<version>-<arch>-linux.tar.gz laid out for /opt/ucs:
          bin/, server/plugins/, etc/ucs.toml, systemd/ucs.service,
          examples/plugins/, docs/, stubs/; checks the binary's RUNPATH, its
          --version and the unit's systemd-analyze security score
  bench   the speed goals of issue 6 side by side: micro-benchmarks, the
          server under load against its peers, reload, memory; a table on
          stdout and target/bench/results.json (`--quick`: under 3 minutes)
  soak    the torture soak of issue 7 against the real binary for 60 s
          (re-entrant plugins, a plugin thread, 4 clients, reloads);
          UCS_SOAK_SECS overrides the length (`cargo test` runs it 10 s)
  help    this text
";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let task = args.next();
    let result = match task.as_deref() {
        Some("test") => test(),
        Some("bench") => bench::bench(&args.collect::<Vec<_>>()),
        Some("dist") => dist(),
        Some("soak") => soak(),
        Some("help" | "--help" | "-h") => {
            help();
            Ok(())
        }
        Some(unknown) => {
            eprintln!("xtask: unknown task '{unknown}'\n");
            eprint!("{USAGE}");
            return ExitCode::from(EXIT_USAGE);
        }
        None => {
            eprint!("{USAGE}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("xtask: {failure}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// `cargo xtask help`: the usage, on stdout because it is what was asked for.
#[expect(
    clippy::print_stdout,
    reason = "help text is the task's output, not a diagnostic"
)]
fn help() {
    print!("{USAGE}");
}

/// `cargo xtask test`: formatting, lints, all tests, then the plugins'
/// types, stopping at the first step that fails. `--workspace` everywhere, so crates added later
/// are covered without touching this list.
fn test() -> Result<(), Failure> {
    run_steps(&[
        Step::cargo(&["fmt", "--all", "--check"]),
        Step::cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
        Step::cargo(&["test", "--workspace"]),
        // I1: the rule suites that drive real plugin files run in both
        // modes. The loader's suite runs in process above, the server's
        // suites isolated (the server's default); here, the other way.
        Step::cargo(&["test", "-p", "ucs-loader"]).with_env(ISOLATION_ENV, "process"),
        Step::cargo(&[
            "test",
            "-p",
            "ucs",
            "--test",
            "example_plugins",
            "--test",
            "faults",
            "--test",
            "soak",
        ])
        .with_env(ISOLATION_ENV, "inprocess"),
    ])?;
    type_check_plugins()
}

/// Chooses the isolation mode the plugin rule suites run in (SPEC I1);
/// read by `crates/ucs-loader/tests/common` and `tests/common`.
const ISOLATION_ENV: &str = "UCS_TEST_ISOLATION";

/// Names the Python whose mypy type-checks the plugins; `python3` when
/// unset. `.ci/run` points it at the venv it installs mypy into.
const MYPY_PYTHON_ENV: &str = "UCS_MYPY_PYTHON";

/// Type-checks `plugins/` and `docs/examples/` against the shipped stubs
/// with mypy (issue 9), so the examples authors copy and the stubs their
/// editors read cannot drift apart. mypy is a Python tool, run as
/// `python -m mypy`; a missing mypy fails the task with how to install it,
/// never skips the check silently.
fn type_check_plugins() -> Result<(), Failure> {
    let root = workspace_root();
    let python = std::env::var_os(MYPY_PYTHON_ENV).unwrap_or_else(|| OsString::from("python3"));
    let shown = Path::new(&python).display().to_string();
    let installed = Command::new(&python)
        .args(["-m", "mypy", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !installed {
        return Err(Failure(format!(
            "mypy is not installed for {shown}; install it from PyPI, e.g. \
             `python3 -m venv .venv && .venv/bin/pip install mypy` and set \
             {MYPY_PYTHON_ENV}=.venv/bin/python (or `{shown} -m pip install --user mypy`); \
             .ci/run does this by itself"
        )));
    }
    let args = [
        "-m",
        "mypy",
        "--check-untyped-defs",
        "plugins/",
        "docs/examples/",
    ];
    eprintln!(
        "xtask: [mypy] MYPYPATH=crates/ucs-pybridge/stubs:crates/ucs-pybridge/python {shown} {}",
        args.join(" ")
    );
    // `python/` holds `ucs_testing.py`, the pytest kit's real source, which
    // the examples' tests import (issue 16 item 5).
    let mypy_path = std::env::join_paths([
        root.join("crates/ucs-pybridge/stubs"),
        root.join("crates/ucs-pybridge/python"),
    ])
    .map_err(|err| Failure(format!("MYPYPATH: {err}")))?;
    let status = Command::new(&python)
        .args(args)
        .env("MYPYPATH", mypy_path)
        .current_dir(&root)
        .status()
        .map_err(|err| Failure(format!("mypy could not start: {err}")))?;
    if !status.success() {
        return Err(Failure(format!(
            "mypy found type errors in plugins/ or docs/examples/ ({status})"
        )));
    }
    Ok(())
}

/// Adds every file of `from` (and of its directories, when `nested`, less
/// Python's caches) to `files`, as (source, destination under `to`).
fn collect_files(
    from: &Path,
    to: &Path,
    nested: bool,
    files: &mut Vec<(PathBuf, PathBuf)>,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(from)?.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_file() {
            files.push((path, to.join(name)));
        } else if nested && path.is_dir() && name != "__pycache__" && name != ".pytest_cache" {
            collect_files(&path, &to.join(name), nested, files)?;
        }
    }
    Ok(())
}

/// `cargo xtask dist`: one release binary with every crate wired in, and a
/// tarball an operator unpacks under `/opt/ucs`.
///
/// The binary is built with `UCS_DIST=1`, so it carries no rpath into this
/// machine's Python (crates/ucs/build.rs); before packing, the stage is
/// checked: no RPATH or RUNPATH, `bin/ucs --version` runs with the
/// platform's libpython, and the unit scores at most 2.0 in
/// `systemd-analyze security` (skipped, saying so, without systemd-analyze).
///
/// The layout is what `dist/ucs.service` expects once unpacked into
/// `/opt/ucs`: `bin/ucs`, the empty production plugins directory
/// `server/plugins/`, `etc/ucs.toml` (every `serve` key), `systemd/`, and
/// `examples/plugins/`, `docs/`, `stubs/`, `README.md` beside them.
fn dist() -> Result<(), Failure> {
    let build =
        Step::cargo(&["build", "--release", "--locked", "-p", "ucs"]).with_env("UCS_DIST", "1");
    run_steps(&[build])?;
    let root = workspace_root();
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_absolute() {
                dir
            } else {
                root.join(dir)
            }
        })
        .unwrap_or_else(|| root.join("target"));
    let name = format!(
        "ucs-{}-{}-linux",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH
    );
    let dist_dir = target_dir.join("dist");
    let stage = dist_dir.join(&name);
    let fail = |what: &str, err: std::io::Error| Failure(format!("dist: {what}: {err}"));
    if stage.exists() {
        std::fs::remove_dir_all(&stage).map_err(|err| fail("clearing the stage", err))?;
    }
    for dir in [
        "bin",
        "server/plugins",
        "examples/plugins",
        "etc",
        "docs/examples",
        "stubs",
        "systemd",
    ] {
        std::fs::create_dir_all(stage.join(dir)).map_err(|err| fail("creating the stage", err))?;
    }
    let mut files: Vec<(PathBuf, PathBuf)> = vec![
        (target_dir.join("release/ucs"), stage.join("bin/ucs")),
        (root.join("README.md"), stage.join("README.md")),
        (root.join("ARCHITECTURE.md"), stage.join("ARCHITECTURE.md")),
        (
            root.join("dist/ucs.service"),
            stage.join("systemd/ucs.service"),
        ),
        (root.join("dist/ucs.toml"), stage.join("etc/ucs.toml")),
    ];
    for (from, to, nested) in [
        ("plugins", "examples/plugins", false),
        ("docs", "docs", false),
        // docs/examples/rate_limit/ is a plugin with its tests/ (issue 16).
        ("docs/examples", "docs/examples", true),
        ("crates/ucs-pybridge/stubs", "stubs", false),
        // The pytest kit's source, which `ucs stubs` writes beside the stubs.
        ("crates/ucs-pybridge/python", "stubs", false),
    ] {
        collect_files(&root.join(from), &stage.join(to), nested, &mut files)
            .map_err(|err| fail(&format!("reading {from}"), err))?;
    }
    for (from, to) in &files {
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).map_err(|err| fail("creating the stage", err))?;
        }
        std::fs::copy(from, to).map_err(|err| fail(&format!("copying {}", from.display()), err))?;
    }
    dist_check::check_no_search_path(&stage.join("bin/ucs"))?;
    dist_check::check_version(&stage.join("bin/ucs"))?;
    dist_check::check_unit(&stage.join("systemd/ucs.service"))?;
    let tarball = dist_dir.join(format!("{name}.tar.gz"));
    let status = Command::new("tar")
        .arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(&dist_dir)
        .arg(&name)
        .status()
        .map_err(|err| fail("running tar", err))?;
    if !status.success() {
        return Err(Failure(format!("dist: tar failed ({status})")));
    }
    eprintln!("xtask: wrote {}", tarball.display());
    Ok(())
}

/// How long `cargo xtask soak` runs the soak unless `UCS_SOAK_SECS` says.
const SOAK_SECS: &str = "60";

/// `cargo xtask soak`: `tests/soak.rs` for [`SOAK_SECS`] seconds, with its
/// per-call counts shown (`--nocapture`); the same test `cargo test` runs
/// for 10 s, so CI and a long local run cannot drift apart.
fn soak() -> Result<(), Failure> {
    let secs = std::env::var("UCS_SOAK_SECS").unwrap_or_else(|_| SOAK_SECS.to_owned());
    let step = Step::cargo(&["test", "-p", "ucs", "--test", "soak", "--", "--nocapture"]);
    eprintln!("xtask: [1/1] UCS_SOAK_SECS={secs} {step}");
    let status = Command::new(&step.program)
        .args(&step.args)
        .env("UCS_SOAK_SECS", &secs)
        .current_dir(workspace_root())
        .status()
        .map_err(|err| Failure(format!("step `{step}` could not start: {err}")))?;
    if !status.success() {
        return Err(Failure(format!("step `{step}` failed ({status})")));
    }
    Ok(())
}

/// One external command a task runs, from the workspace root.
struct Step {
    program: OsString,
    args: Vec<String>,
    /// Environment variables set for this command only.
    env: Vec<(String, String)>,
}

impl Step {
    /// `cargo <args>`, with the cargo that runs this xtask when there is one,
    /// so the toolchain cannot change between steps.
    fn cargo(args: &[&str]) -> Self {
        Step {
            program: std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo")),
            args: args.iter().map(|arg| (*arg).to_owned()).collect(),
            env: Vec::new(),
        }
    }
}

impl Step {
    /// The same command with `key=value` in its environment.
    fn with_env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Show `cargo`, not the absolute path `$CARGO` holds.
        let program = Path::new(&self.program)
            .file_stem()
            .unwrap_or(self.program.as_os_str())
            .to_string_lossy();
        self.env
            .iter()
            .try_for_each(|(key, value)| write!(f, "{key}={value} "))?;
        f.write_str(&program)?;
        self.args.iter().try_for_each(|arg| write!(f, " {arg}"))
    }
}

/// Why a task failed: which step, and how.
#[derive(Debug)]
struct Failure(String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Runs `steps` in order from the workspace root; the first that fails
/// ends the task.
fn run_steps(steps: &[Step]) -> Result<(), Failure> {
    let root = workspace_root();
    for (index, step) in steps.iter().enumerate() {
        eprintln!("xtask: [{}/{}] {step}", index + 1, steps.len());
        let status = Command::new(&step.program)
            .args(&step.args)
            .envs(step.env.iter().map(|(key, value)| (key, value)))
            .current_dir(&root)
            .status()
            .map_err(|err| Failure(format!("step `{step}` could not start: {err}")))?;
        if !status.success() {
            return Err(Failure(format!("step `{step}` failed ({status})")));
        }
    }
    eprintln!("xtask: all {} steps passed", steps.len());
    Ok(())
}

/// The workspace root: the parent of this crate's directory.
fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_task_checks_the_whole_workspace() {
        let root = workspace_root();
        assert!(root.join("Cargo.toml").is_file());
        assert!(root.join("xtask").is_dir());
    }

    #[test]
    fn steps_print_as_the_command_a_person_would_type() {
        let step = Step {
            program: OsString::from("/home/u/.rustup/toolchains/x/bin/cargo"),
            args: vec!["fmt".to_owned(), "--all".to_owned()],
            env: Vec::new(),
        };
        assert_eq!(step.to_string(), "cargo fmt --all");
    }

    #[test]
    fn a_failing_step_is_named_and_stops_the_rest() {
        let failing = Step {
            program: OsString::from("false"),
            args: vec![],
            env: Vec::new(),
        };
        let never = Step {
            program: OsString::from("this-program-does-not-exist-xtask"),
            args: vec![],
            env: Vec::new(),
        };
        let failure = run_steps(&[failing, never]).unwrap_err();
        assert!(failure.0.contains("`false`"), "{failure}");
        assert!(failure.0.contains("failed"), "{failure}");
    }
}
