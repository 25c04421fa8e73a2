//! The plugin author's local tools through the real binary: `ucs plugin
//! check` (issue 9) and `ucs stubs`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::ucs_binary;
use serde_json::Value as Json;

/// The repository root, where `plugins/` and `docs/examples/` are.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `ucs ARGS...` with no server around.
fn ucs(args: &[&str]) -> Output {
    Command::new(ucs_binary())
        .args(args)
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

/// Writes `source` as `file_name` in a new temporary directory.
fn plugin_file(file_name: &str, source: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(file_name);
    std::fs::write(&path, source).expect("plugin file");
    (dir, path)
}

/// `ucs plugin check --json EXTRA... FILE` for one file: the exit code and
/// that file's report.
fn check_json(file: &Path, extra: &[&str]) -> (Option<i32>, Json) {
    let file = file.to_string_lossy();
    let args: Vec<&str> = ["plugin", "check", "--json"]
        .into_iter()
        .chain(extra.iter().copied())
        .chain([file.as_ref()])
        .collect();
    let output = ucs(&args);
    let reports: Json = serde_json::from_str(&stdout(&output)).unwrap_or_else(|err| {
        panic!(
            "--json output does not parse: {err}\nstdout:\n{}\nstderr:\n{}",
            stdout(&output),
            stderr(&output)
        )
    });
    let report = reports
        .as_array()
        .and_then(|reports| reports.first())
        .cloned()
        .unwrap_or_else(|| panic!("no report in {reports}"));
    (output.status.code(), report)
}

fn kinds(list: &Json) -> Vec<(String, String)> {
    list.as_array()
        .expect("a list of registrations")
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap_or("").to_owned(),
                r["target"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn pair(kind: &str, key: &str) -> (String, String) {
    (kind.to_owned(), key.to_owned())
}

#[test]
fn a_leaky_plugin_is_caught_with_what_it_left() {
    let (_dir, file) = plugin_file(
        "leaky.py",
        "from events import EVENT_AGENT_STATUS\n\
         UCS_PLUGIN = 'Leaky'\n\
         class Leaky:\n\
         \x20   def __init__(self, ucs):\n\
         \x20       self.ucs = ucs\n\
         \x20   def start(self):\n\
         \x20       self.ucs.addCallback(EVENT_AGENT_STATUS, self.changed)\n\
         \x20       self.ucs.api.addMiddleware('config.users.get', self.wrap)\n\
         \x20   def changed(self, agent, args):\n\
         \x20       pass\n\
         \x20   def wrap(self, handler, *args):\n\
         \x20       return handler(*args)\n\
         \x20   def stop(self):\n\
         \x20       pass\n",
    );
    let (code, report) = check_json(&file, &[]);
    assert_eq!(code, Some(1), "{report}");
    let expected = vec![
        pair("callback", "agent.status"),
        pair("middleware", "config.users.get"),
    ];
    assert_eq!(kinds(&report["registered"]), expected, "{report}");
    assert_eq!(kinds(&report["left_registered"]), expected, "{report}");
    assert_eq!(report["steps"]["stop"]["status"], "ok", "{report}");
    assert_eq!(report["clean"], false);

    // The text output names the leaks too.
    let text = ucs(&["plugin", "check", &file.to_string_lossy()]);
    assert_eq!(text.status.code(), Some(1));
    let text = stdout(&text);
    assert!(
        text.contains("stop() left callback for agent.status Leaky.changed"),
        "{text}"
    );
    assert!(
        text.contains("stop() left middleware for config.users.get Leaky.wrap"),
        "{text}"
    );
}

#[test]
fn a_file_without_ucs_plugin_is_reported() {
    let (_dir, file) = plugin_file("helper.py", "def helper():\n    return 1\n");
    let (code, report) = check_json(&file, &[]);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["steps"]["import"]["status"], "ok", "{report}");
    assert_eq!(
        report["steps"]["plugin_variable"]["status"], "failed",
        "{report}"
    );
    let error = report["steps"]["plugin_variable"]["error"]
        .as_str()
        .unwrap_or("");
    assert!(error.contains("no UCS_PLUGIN"), "{report}");
    assert_eq!(report["steps"]["constructor"]["status"], "not_reached");
}

#[test]
fn ucs_plugin_naming_no_class_is_reported() {
    let (_dir, file) = plugin_file("typo.py", "UCS_PLUGIN = 'Tpyo'\nclass Typo:\n    pass\n");
    let (code, report) = check_json(&file, &[]);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["steps"]["plugin_variable"]["status"], "failed");
    assert!(
        report["steps"]["plugin_variable"]["error"]
            .as_str()
            .unwrap_or("")
            .contains("'Tpyo'"),
        "{report}"
    );
}

#[test]
fn a_broken_constructor_is_reported_with_its_traceback() {
    let (_dir, file) = plugin_file(
        "broken.py",
        "from events import EVENT_AGENT_STATUS\n\
         UCS_PLUGIN = 'Broken'\n\
         class Broken:\n\
         \x20   def __init__(self, ucs):\n\
         \x20       ucs.addCallback(EVENT_AGENT_STATUS, self.changed)\n\
         \x20       raise ValueError('no config here')\n\
         \x20   def changed(self, agent, args):\n\
         \x20       pass\n",
    );
    let (code, report) = check_json(&file, &[]);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["class_name"], "Broken");
    assert_eq!(report["steps"]["constructor"]["status"], "failed");
    let error = report["steps"]["constructor"]["error"]
        .as_str()
        .unwrap_or("");
    assert!(error.contains("Traceback"), "{error}");
    assert!(error.contains("ValueError: no config here"), "{error}");
    // Issue 16 item 6: the traceback names the author's file, not a copy.
    let own = std::path::absolute(&file).expect("absolute path");
    assert!(
        error.contains(&format!("File \"{}\", line 6", own.display())),
        "{error}"
    );
    assert!(!error.contains("ucs-plugin-check-"), "{error}");
    assert_eq!(report["steps"]["start"]["status"], "not_reached");
    // What it registered before failing is shown (the server removes it).
    assert_eq!(
        kinds(&report["registered"]),
        vec![pair("callback", "agent.status")]
    );
}

#[test]
fn a_thread_that_does_not_end_after_stop_is_reported() {
    let (_dir, file) = plugin_file(
        "stubborn.py",
        "import threading, time\n\
         UCS_PLUGIN = 'Stubborn'\n\
         class Stubborn(threading.Thread):\n\
         \x20   def __init__(self, ucs):\n\
         \x20       super().__init__(daemon=True)\n\
         \x20   def run(self):\n\
         \x20       while True:\n\
         \x20           time.sleep(0.05)\n\
         \x20   def stop(self):\n\
         \x20       pass\n",
    );
    let started = std::time::Instant::now();
    let (code, report) = check_json(&file, &["--stop-timeout", "1"]);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["thread"], "still_running", "{report}");
    assert_eq!(report["steps"]["stop"]["status"], "ok");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "the check must not wait for the thread"
    );
}

#[test]
fn a_blocking_start_is_a_warning_and_the_check_still_finishes() {
    let (_dir, file) = plugin_file(
        "blocker.py",
        "import time\n\
         UCS_PLUGIN = 'Blocker'\n\
         class Blocker:\n\
         \x20   def __init__(self, ucs):\n\
         \x20       pass\n\
         \x20   def start(self):\n\
         \x20       while True:\n\
         \x20           time.sleep(0.05)\n",
    );
    let (code, report) = check_json(&file, &["--start-timeout", "0.5"]);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["steps"]["start"]["status"], "timed_out", "{report}");
    let findings = report["findings"].to_string();
    assert!(findings.contains("start must not block"), "{findings}");
    assert!(findings.contains("\"warning\""), "{findings}");
}

#[test]
fn the_shipped_plugins_and_guide_examples_are_clean() {
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in ["plugins", "docs/examples"] {
        let mut found: Vec<PathBuf> = std::fs::read_dir(repo_root().join(dir))
            .expect(dir)
            .map(|entry| entry.expect("dir entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "py"))
            .collect();
        found.sort();
        files.extend(found);
    }
    assert!(files.len() >= 8, "{files:?}");
    let args: Vec<String> = ["plugin", "check"]
        .into_iter()
        .map(str::to_owned)
        .chain(files.iter().map(|f| f.to_string_lossy().into_owned()))
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = ucs(&args);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        stdout(&output),
        stderr(&output)
    );
    let text = stdout(&output);
    assert_eq!(
        text.matches("result       clean").count(),
        files.len(),
        "{text}"
    );
    // example.py is a Thread plugin with a callback it removes in stop().
    assert!(text.contains("ended after stop()"), "{text}");
    assert!(
        text.contains("callback for agent.status Example.agent_status_changed"),
        "{text}"
    );
}

#[test]
fn a_missing_file_is_a_usage_error() {
    let output = ucs(&["plugin", "check", "/nonexistent/plugin.py"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("/nonexistent/plugin.py"),
        "{}",
        stderr(&output)
    );
    let no_files = ucs(&["plugin", "check"]);
    assert_eq!(no_files.status.code(), Some(2));
}

#[test]
fn stubs_writes_every_stub_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("new").join("stubs");
    let output = ucs(&["stubs", "--out", &out.to_string_lossy()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let shipped = repo_root().join("crates/ucs-pybridge/stubs");
    let mut expected: Vec<String> = std::fs::read_dir(&shipped)
        .expect("stubs dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".pyi"))
        .collect();
    expected.sort();
    let mut written: Vec<String> = std::fs::read_dir(&out)
        .expect("out dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    written.sort();
    assert_eq!(written, expected);
    for name in &written {
        assert_eq!(
            std::fs::read_to_string(out.join(name)).expect("written stub"),
            std::fs::read_to_string(shipped.join(name)).expect("shipped stub"),
            "{name}"
        );
        assert!(
            stdout(&output).contains(name.as_str()),
            "{}",
            stdout(&output)
        );
    }
}

/// What a plugin prints while it is checked is shown (on stderr, as a log
/// line naming it): an author debugging with `print()` sees it.
#[test]
fn what_a_plugin_prints_during_the_check_is_shown() {
    let (_dir, file) = plugin_file(
        "chatty.py",
        "UCS_PLUGIN = 'Chatty'\n\
         class Chatty:\n\
         \x20   def __init__(self, ucs):\n\
         \x20       print('constructing chatty')\n",
    );
    let output = ucs(&["plugin", "check", &file.to_string_lossy()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let log = stderr(&output);
    assert!(
        log.lines()
            .any(|line| line.contains("constructing chatty") && line.contains("chatty")),
        "{log}"
    );
}

#[test]
fn a_helper_module_beside_the_plugin_imports_as_in_the_server() {
    let (dir, file) = plugin_file(
        "uses_helper.py",
        "import check_helper_mod\n\
         UCS_PLUGIN = 'UsesHelper'\n\
         class UsesHelper:\n\
         \x20   def __init__(self, ucs):\n\
         \x20       self.value = check_helper_mod.VALUE\n",
    );
    std::fs::write(dir.path().join("check_helper_mod.py"), "VALUE = 1\n").expect("helper");
    let (code, report) = check_json(&file, &[]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["clean"], true);

    // A helper that raises is named where the author keeps it.
    std::fs::write(
        dir.path().join("check_helper_mod.py"),
        "raise RuntimeError('helper broke')\n",
    )
    .expect("helper");
    let (code, report) = check_json(&file, &[]);
    assert_eq!(code, Some(1), "{report}");
    let error = report["steps"]["import"]["error"].as_str().unwrap_or("");
    let helper = std::path::absolute(dir.path().join("check_helper_mod.py")).expect("absolute");
    assert!(error.contains(&helper.display().to_string()), "{report}");
    assert!(!error.contains("ucs-plugin-check-"), "{report}");
}
