//! The `ucs` client subcommands against a real server: output for people
//! and for scripts, and `error: CODE: message` with exit 1 on failure.

mod common;

use std::process::{Command, Output};

use common::{ADMIN_PASSWORD, Server, ucs_binary};

/// Runs `ucs ARGS... --server URL` against `server` and returns what it
/// did; client options go after the subcommand (issue 17 item 8).
fn ucs(server: &Server, args: &[&str]) -> Output {
    Command::new(ucs_binary())
        .args(args)
        .arg("--server")
        .arg(&server.url)
        .env_remove("UCS_SID")
        .output()
        .expect("run ucs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn login_prints_a_sid_that_later_commands_use() {
    let server = Server::demo().await;
    let login = ucs(
        &server,
        &["login", "--user", "admin", "--password", ADMIN_PASSWORD],
    );
    assert!(login.status.success(), "{}", stderr(&login));
    let sid = stdout(&login).trim().to_owned();
    assert_eq!(sid.len(), 32, "{sid:?}");

    let agents = ucs(&server, &["call", "--sid", &sid, "--json", "agents.list"]);
    assert!(agents.status.success(), "{}", stderr(&agents));
    let agents: serde_json::Value = serde_json::from_str(&stdout(&agents)).unwrap();
    assert_eq!(agents.as_array().unwrap().len(), 3);

    let by_env = Command::new(ucs_binary())
        .args(["call", "--server", &server.url, "config.users.get", "[1]"])
        .env("UCS_SID", &sid)
        .output()
        .unwrap();
    assert!(by_env.status.success(), "{}", stderr(&by_env));
    assert!(stdout(&by_env).contains("\"admin\""), "{}", stdout(&by_env));
}

#[tokio::test]
async fn errors_print_the_code_and_exit_1() {
    let server = Server::demo().await;
    let cases: [(&[&str], &str); 5] = [
        (
            &["call", "config.users.get", "[999]"],
            "error: NOT_FOUND: user 999 not found",
        ),
        (&["call", "agents.dance"], "error: UNIMPLEMENTED: "),
        (
            &["plugins", "load", "../etc/passwd"],
            "error: INVALID_ARGUMENT: {\"plugin_name\":",
        ),
        (
            &["call", "config.users.delete", "[1]"],
            "error: FAILED_PRECONDITION: ",
        ),
        (&["call", "agents.list", "{"], "error: INVALID_ARGUMENT: "),
    ];
    for (args, expected) in cases {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--user", "admin", "--password", ADMIN_PASSWORD]);
        let output = ucs(&server, &all);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&output).starts_with(expected),
            "{args:?}: {:?} does not start with {expected:?}",
            stderr(&output)
        );
    }

    let bad_login = ucs(&server, &["login", "--user", "admin", "--password", "nope"]);
    assert_eq!(bad_login.status.code(), Some(1));
    // Issue 12 item 4: the operator is told the credentials are wrong.
    assert_eq!(
        stderr(&bad_login).trim_end(),
        "error: UNAUTHENTICATED: wrong username or password"
    );

    let no_session = ucs(&server, &["call", "agents.list"]);
    assert_eq!(no_session.status.code(), Some(1));
    assert!(
        stderr(&no_session).contains("no session"),
        "{}",
        stderr(&no_session)
    );
}

#[tokio::test]
async fn plugins_list_prints_a_table_or_json() {
    let server = Server::builder()
        .plugin(
            "hello.py",
            "UCS_PLUGIN = 'Hello'\n\nclass Hello:\n    def __init__(self, ucs):\n        self.ucs = ucs\n        ucs.api.addMiddleware('agents.list', lambda handler, *args: handler(*args))\n",
        )
        .start()
        .await;
    let login = ["--user", "admin", "--password", ADMIN_PASSWORD];

    let table = ucs(&server, &[&["plugins", "list"], &login[..]].concat());
    assert!(
        table.status.success(),
        "{}\n{}",
        stderr(&table),
        server.log()
    );
    assert!(stdout(&table).starts_with("NAME"), "{}", stdout(&table));
    assert!(stdout(&table).contains("hello"), "{}", stdout(&table));

    let json = ucs(
        &server,
        &[&["plugins", "list", "--json"], &login[..]].concat(),
    );
    assert!(json.status.success(), "{}", stderr(&json));
    let plugins: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
    let hello = plugins
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "hello")
        .unwrap_or_else(|| panic!("no hello in {plugins}"));
    assert_eq!(hello["state"], "running", "{plugins}\n{}", server.log());
    assert_eq!(hello["class_name"], "Hello");
    // Each registration with its numbers (issue 8).
    let registration = &hello["registrations"][0];
    assert_eq!(registration["kind"], "middleware", "{plugins}");
    assert_eq!(registration["target"], "agents.list", "{plugins}");
    assert_eq!(registration["calls"], 0, "{plugins}");
    assert_eq!(registration["breaker_open"], false, "{plugins}");

    // Issue 18: the table tells where each plugin runs, as the JSON does.
    let table = stdout(&table);
    let columns = |line: &str| {
        line.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let header = columns(table.lines().next().unwrap_or_default());
    assert_eq!(
        header[..5],
        ["NAME", "STATE", "MODE", "PID", "RESTARTS"],
        "{table}"
    );
    let row = table
        .lines()
        .map(columns)
        .find(|row| row[0] == "hello")
        .unwrap_or_else(|| panic!("no hello row in {table}"));
    let pid = match &hello["host_pid"] {
        serde_json::Value::Null => "-".to_owned(),
        pid => pid.to_string(),
    };
    assert_eq!(
        row[1..5],
        [
            "running".to_owned(),
            hello["isolation"].as_str().unwrap_or_default().to_owned(),
            pid,
            "0".to_owned()
        ],
        "{table}"
    );
    assert!(
        ["process", "inprocess"].contains(&row[2].as_str()),
        "{table}"
    );
}

#[test]
fn serve_without_a_data_dir_explains_itself() {
    let output = Command::new(ucs_binary())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("UCS_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("--data-dir"),
        "{}",
        stderr(&output)
    );
}

/// I3: `--hook-deadline` below the budget (or 0) is refused before anything
/// starts, with a message that says which flag.
#[test]
fn serve_refuses_a_hook_deadline_of_zero_or_below_the_budget() {
    let data_dir = tempfile::tempdir().unwrap();
    for (deadline, expected) in [("0s", "positive"), ("20ms", "below hook_budget")] {
        let output = Command::new(ucs_binary())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--hook-deadline",
                deadline,
            ])
            .arg("--data-dir")
            .arg(data_dir.path())
            .env("UCS_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .output()
            .unwrap();
        assert_ne!(output.status.code(), Some(0), "{deadline}");
        assert!(
            stderr(&output).contains(expected) && stderr(&output).contains("hook"),
            "{deadline}: {}",
            stderr(&output)
        );
    }
}

/// Issue 16 item 4 on the real binary: `[plugins.NAME.config]` of the
/// `--config` file reaches the plugin as `ucs.config`, a secret through
/// `{ env = "VAR" }`; an edit of the file is seen by the next
/// `plugins.load`; a variable that is not set fails that load, naming it,
/// while the running version keeps running.
#[tokio::test]
async fn a_plugins_config_table_reaches_it_as_ucs_config_and_a_reload_reads_it_again() {
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("ucs.toml");
    let write_config = |url: &str, token_variable: &str| {
        std::fs::write(
            &config,
            format!(
                "[plugins.crm.config]\nurl = \"{url}\"\ntoken = {{ env = \"{token_variable}\" }}\n"
            ),
        )
        .unwrap();
    };
    write_config("https://crm.example", "UCS_TEST_CRM_TOKEN");
    let crm = "UCS_PLUGIN = 'Crm'\n\nclass Crm:\n    def __init__(self, ucs):\n        ucs.api.shared.set(ucs.sid, 'crm.seen', dict(ucs.config))\n";
    let server = Server::builder()
        .env("UCS_TEST_CRM_TOKEN", "s3cret")
        .arg(&format!("--config={}", config.display()))
        .plugin("crm.py", crm)
        .start()
        .await;
    let sid = server.admin_sid().await;
    let seen = || async {
        server
            .call(&sid, "shared.get", r#"["crm.seen"]"#)
            .await
            .expect("get")
    };
    assert_eq!(
        seen().await,
        serde_json::json!({"token": "s3cret", "url": "https://crm.example"})
    );

    write_config("https://other.example", "UCS_TEST_CRM_TOKEN");
    server
        .call(&sid, "plugins.load", r#"["crm"]"#)
        .await
        .expect("reload");
    assert_eq!(
        seen().await,
        serde_json::json!({"token": "s3cret", "url": "https://other.example"})
    );

    write_config("https://third.example", "UCS_TEST_NEVER_SET");
    let refused = server
        .call(&sid, "plugins.load", r#"["crm"]"#)
        .await
        .unwrap_err();
    assert!(
        refused
            .message()
            .contains("UCS_TEST_NEVER_SET, which is not set"),
        "{refused:?}"
    );
    let listed = server.plugins_listed().await;
    let crm = listed
        .iter()
        .find(|info| info.name == "crm")
        .expect("listed");
    assert_eq!(crm.state(), ucs_grpc::pb::PluginState::Running, "{crm:?}");
    assert_eq!(
        seen().await,
        serde_json::json!({"token": "s3cret", "url": "https://other.example"})
    );
}

/// A plugin that prints, logs through `logging`, writes to stderr without a
/// newline, and lets an exception end one of its threads.
const NOISY: &str = r#"
import logging, sys, threading

log = logging.getLogger(__name__)

class Noisy:
    def __init__(self, ucs):
        print("hello from print")
        print("two\nlines")
        log.warning("warned %s", 1)
        sys.stderr.write("partial")
        sys.stderr.flush()
        def broken():
            raise ValueError("thread broke")
        threading.Thread(target=broken, name="breaker").start()

UCS_PLUGIN = "Noisy"
"#;

/// Issue 17 item 3: with `--log-json`, everything a plugin prints, logs or
/// leaves uncaught in a thread is a JSON log record naming the plugin, and
/// every line of the log parses as JSON, in both modes.
#[tokio::test]
async fn log_json_is_one_json_object_per_line_with_plugin_output_named() {
    for isolation in ["--isolation=inprocess", "--isolation=process"] {
        let server = Server::builder()
            .arg("--log-json")
            .arg(isolation)
            .plugin("noisy.py", NOISY)
            .start()
            .await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !server.log().contains("thread broke") {
            assert!(std::time::Instant::now() < deadline, "{}", server.log());
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let records: Vec<serde_json::Value> = server
            .log()
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|err| panic!("{isolation}: not JSON ({err}): {line:?}"))
            })
            .collect();
        let of_noisy = |level: &str, message: &str| {
            records.iter().any(|record| {
                record["level"] == level
                    && record["fields"]["plugin"] == "noisy"
                    && record["fields"]["message"]
                        .as_str()
                        .is_some_and(|text| text.contains(message))
            })
        };
        for (level, message) in [
            ("INFO", "hello from print"),
            ("INFO", "two"),
            ("INFO", "lines"),
            ("WARN", "noisy: warned 1"),
            ("WARN", "partial"),
            ("ERROR", "uncaught exception in thread breaker"),
            ("ERROR", "ValueError: thread broke"),
        ] {
            assert!(
                of_noisy(level, message),
                "{isolation}: no {level} {message:?} of plugin noisy in:\n{}",
                server.log()
            );
        }
    }
}

/// A plugin that records where its Python comes from and imports
/// `tinypkg` if it can.
const WHERE_AM_I: &str = r#"
import os, sys

class WhereAmI:
    def __init__(self, ucs):
        try:
            import tinypkg
            answer = tinypkg.ANSWER
        except ImportError:
            answer = None
        ucs.api.shared.set(ucs.sid, 'where', {'prefix': sys.prefix, 'os': os.__file__,
                                              'answer': answer})

UCS_PLUGIN = 'WhereAmI'
"#;

/// A virtual environment `DIR/venv` made by the interpreter the server
/// embeds (its home's `bin/python3.X`), as docs/plugins.md says to; with
/// `--without-pip` unless `pip`. Returns the directory and `3.X`.
fn embedded_python_venv(home: &str, pip: bool) -> (tempfile::TempDir, String) {
    let version = ucs_version_field("Python ");
    let major_minor: String = version.split('.').take(2).collect::<Vec<_>>().join(".");
    let dir = tempfile::tempdir().expect("temp dir");
    let python = format!("{home}/bin/python{major_minor}");
    let mut command = Command::new(&python);
    command.args(["-m", "venv"]);
    if !pip {
        command.arg("--without-pip");
    }
    let made = command
        .arg(dir.path().join("venv"))
        .output()
        .unwrap_or_else(|err| panic!("{python}: {err}"));
    assert!(made.status.success(), "{}", stderr(&made));
    (dir, major_minor)
}

/// [`embedded_python_venv`] holding the pure-Python package `tinypkg`.
fn venv_with_tinypkg(home: &str) -> tempfile::TempDir {
    let (dir, major_minor) = embedded_python_venv(home, false);
    let venv = dir.path().join("venv");
    // What `pip install` of a pure-Python package leaves in site-packages.
    let package = venv.join(format!("lib/python{major_minor}/site-packages/tinypkg"));
    std::fs::create_dir_all(&package).expect("site-packages");
    std::fs::write(package.join("__init__.py"), "ANSWER = 42\n").expect("tinypkg");
    dir
}

/// The field of `ucs --version` after `label`, up to the next comma or `)`.
fn ucs_version_field(label: &str) -> String {
    let output = Command::new(ucs_binary())
        .arg("--version")
        .output()
        .expect("ucs --version");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let start = text
        .find(label)
        .unwrap_or_else(|| panic!("no {label:?} in {text}"))
        + label.len();
    text[start..]
        .split([',', ')'])
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Issue 16 item 3: the interpreter's home is the loaded libpython's
/// installation, named by `ucs --version`, even with a decoy `python3`
/// first on PATH whose directory looks like a Python installation (before:
/// CPython took the first `python3` on PATH for its prefix, and the decoy
/// here has no standard library, so it could not even start); and
/// `--python-venv` lets plugins import a package from a venv, in both
/// modes.
#[tokio::test]
async fn plugins_run_on_the_pinned_home_and_import_from_the_venv() {
    let home = ucs_version_field("home ");
    assert!(
        std::path::Path::new(&home).join("lib").is_dir(),
        "home {home:?}"
    );
    let decoy = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(decoy.path().join("bin")).unwrap();
    std::fs::create_dir_all(decoy.path().join("lib/python3.11")).unwrap();
    std::fs::write(decoy.path().join("lib/python3.11/os.py"), "").unwrap();
    std::fs::write(decoy.path().join("bin/python3"), "#!/bin/sh\n").unwrap();
    // Executable, or CPython's PATH search passes it over.
    std::fs::set_permissions(
        decoy.path().join("bin/python3"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        decoy.path().join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let venv = venv_with_tinypkg(&home);
    for isolation in ["--isolation=inprocess", "--isolation=process"] {
        let server = Server::builder()
            .env("PATH", &path)
            .arg(isolation)
            .arg(&format!(
                "--python-venv={}",
                venv.path().join("venv").display()
            ))
            .plugin("where_am_i.py", WHERE_AM_I)
            .start()
            .await;
        let sid = server.admin_sid().await;
        let seen = server
            .call(&sid, "shared.get", r#"["where"]"#)
            .await
            .expect("get");
        assert_eq!(
            seen["prefix"],
            home.as_str(),
            "{isolation}: {seen}\n{}",
            server.log()
        );
        assert!(
            seen["os"].as_str().unwrap_or_default().starts_with(&home),
            "{isolation}: {seen}"
        );
        assert_eq!(seen["answer"], 42, "{isolation}: {seen}\n{}", server.log());
    }
}

/// A venv made for another Python is refused at start, with a message that
/// names both versions.
#[test]
fn a_venv_for_another_python_is_refused_with_both_versions() {
    let venv = tempfile::tempdir().unwrap();
    std::fs::write(
        venv.path().join("pyvenv.cfg"),
        "home = /usr/bin\nversion = 3.9.2\n",
    )
    .unwrap();
    let data_dir = tempfile::tempdir().unwrap();
    let output = Command::new(ucs_binary())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg(format!("--python-venv={}", venv.path().display()))
        .arg("--data-dir")
        .arg(data_dir.path())
        .env("UCS_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message
            .contains("is a virtual environment for Python 3.9.2, but plugins run on Python 3.11"),
        "{message}"
    );
}

/// Issue 16 item 3, as docs/plugins.md tells an author to do it: a venv made
/// with the embedded Python, a package installed into it from the registry
/// with its pip (`six`: small and pure Python), and a plugin importing it
/// under `--python-venv`, in both modes. Needs the package registry; skips
/// without it, except under CI.
#[tokio::test]
async fn plugins_import_a_package_pip_installed_from_the_registry() {
    let home = ucs_version_field("home ");
    let (dir, _) = embedded_python_venv(&home, true);
    let venv = dir.path().join("venv");
    let installed = Command::new(venv.join("bin/pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "six==1.17.0",
        ])
        .output()
        .expect("run pip");
    if !installed.status.success() {
        assert!(
            std::env::var_os("CI").is_none(),
            "pip install six failed: {}",
            stderr(&installed)
        );
        eprintln!("no package registry here: skipped ({})", stderr(&installed));
        return;
    }
    const USES_SIX: &str = r#"
import six

UCS_PLUGIN = 'UsesSix'


class UsesSix:
    def __init__(self, ucs):
        ucs.api.shared.set(ucs.sid, 'six', {'version': six.__version__, 'file': six.__file__})
"#;
    for isolation in ["--isolation=inprocess", "--isolation=process"] {
        let server = Server::builder()
            .arg(isolation)
            .arg(&format!("--python-venv={}", venv.display()))
            .plugin("uses_six.py", USES_SIX)
            .start()
            .await;
        let sid = server.admin_sid().await;
        let seen = server
            .call(&sid, "shared.get", r#"["six"]"#)
            .await
            .expect("get");
        assert_eq!(
            seen["version"],
            "1.17.0",
            "{isolation}: {seen}\n{}",
            server.log()
        );
        assert!(
            seen["file"]
                .as_str()
                .unwrap_or_default()
                .starts_with(&venv.display().to_string()),
            "{isolation}: {seen}"
        );
    }
}
