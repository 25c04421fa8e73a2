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
    // The pytest kit ships as its real source (issue 16 item 5).
    expected.push("ucs_testing.py".to_owned());
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
            std::fs::read_to_string(if name == "ucs_testing.py" {
                repo_root().join("crates/ucs-pybridge/python").join(name)
            } else {
                shipped.join(name)
            })
            .expect("shipped stub"),
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

/// The venv with pytest that `ucs plugin test` runs on: `UCS_PYTEST_VENV`,
/// which `.ci/run` sets. Without it the tests skip, except under CI, where
/// they must run.
fn pytest_venv() -> Option<PathBuf> {
    let venv = std::env::var_os("UCS_PYTEST_VENV").map(PathBuf::from);
    if venv.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "UCS_PYTEST_VENV is not set; .ci/run makes a venv with pytest and sets it"
        );
        eprintln!("UCS_PYTEST_VENV is not set: skipped");
    }
    venv
}

/// `ucs plugin test DIR --python-venv VENV -- -p no:cacheprovider EXTRA...`
/// (no cache written into the author's tree), with the combined output.
fn plugin_test(dir: &Path, venv: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let (dir, venv) = (dir.to_string_lossy(), venv.to_string_lossy());
    let args: Vec<&str> = [
        "plugin",
        "test",
        dir.as_ref(),
        "--python-venv",
        venv.as_ref(),
    ]
    .into_iter()
    .chain(["--", "-p", "no:cacheprovider"])
    .chain(extra.iter().copied())
    .collect();
    let output = ucs(&args);
    (
        output.status.code(),
        format!("{}{}", stdout(&output), stderr(&output)),
    )
}

/// Issue 16 item 5: the documented example and its tests, as CI runs them.
#[test]
fn the_documented_rate_limit_passes_its_own_tests() {
    let Some(venv) = pytest_venv() else { return };
    let (code, output) = plugin_test(&repo_root().join("docs/examples/rate_limit"), &venv, &[]);
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("5 passed"), "{output}");
}

const VETO_PLUGIN: &str = r#"
from constants import AGENT_AUX
from error import ProcessingError

UCS_PLUGIN = 'Veto'


class Veto:
    def __init__(self, ucs):
        self.ucs = ucs
        self.journal = ucs.config.get('journal')
        ucs.agents.addChangeStatusHook(self.hook)
        ucs.addCallback('agent.status', self.changed)
        ucs.shared.addChangeHook('counts', self.counts)

    def stop(self):
        self.ucs.agents.removeChangeStatusHook()
        self.ucs.removeCallback('agent.status', self.changed)
        self.ucs.shared.removeChangeHook('counts')
        if self.journal:
            with open(self.journal, 'a') as journal:
                journal.write('stopped\n')

    def hook(self, agent, status, reason):
        if status == AGENT_AUX and reason == 'Lunch':
            return None, 'no lunch today'
        return status, reason

    def changed(self, agent, args):
        self.ucs.log.info('agent %s is now %s', agent['username'], agent['status'])

    def counts(self, identificator, old, new):
        return {key: value * 2 for key, value in new.items()}
"#;

const VETO_TESTS: &str = r#"
import pytest
from constants import AGENT_AUX, AGENT_READY
from error import PermissionDenied, ProcessingError

pytestmark = pytest.mark.ucs_config(veto={'journal': JOURNAL})


def test_the_helpers_drive_the_real_engine(ucs_server):
    alice = ucs_server.add_agent('alice')
    with pytest.raises(ProcessingError, match='no lunch today'):
        ucs_server.set_status(alice, AGENT_AUX, 'Lunch')
    ucs_server.set_status(alice, AGENT_READY, user='alice')
    assert ucs_server.agent(alice)['status'] == AGENT_READY
    [event] = ucs_server.events('agent.status')
    assert event.data['agent']['username'] == 'alice'
    assert event.data['previous_status'] == 0
    own = [r.message for r in ucs_server.logs(plugin='veto', level='INFO') if r.target == 'ucs::plugin']
    assert own == ['agent alice is now 1'], ucs_server.logs()
    assert ucs_server.set_shared('counts', {'a': 2}) is not None
    assert ucs_server.shared('counts') == {'a': 4}
    with pytest.raises(PermissionDenied):
        ucs_server.call('config.users.get', user='alice')
    assert ucs_server.plugin('veto')['state'] == 'running'


def test_a_failing_assertion_fails(ucs_server):
    alice = ucs_server.add_agent('alice')
    ucs_server.set_status(alice, AGENT_READY)
    assert ucs_server.agent(alice)['status'] == 99
"#;

/// Issue 16 item 5: each test gets a fresh server with the directory's
/// plugins and its settings, every helper reaches the real engine, a
/// failing test fails with pytest's report and exit code, and each server
/// stops its plugins once after its test (the journal counts the stops).
#[test]
fn each_test_gets_a_real_server_and_stops_it() {
    let Some(venv) = pytest_venv() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("veto.py"), VETO_PLUGIN).expect("plugin");
    std::fs::create_dir(dir.path().join("tests")).expect("tests dir");
    let journal = dir.path().join("journal.txt");
    let tests = VETO_TESTS.replace("JOURNAL", &format!("{:?}", journal.display().to_string()));
    std::fs::write(dir.path().join("tests/test_veto.py"), tests).expect("tests");

    let (code, output) = plugin_test(dir.path(), &venv, &[]);
    assert_eq!(code, Some(1), "pytest's code for failed tests: {output}");
    assert!(output.contains("1 failed, 1 passed"), "{output}");
    assert!(
        output.contains("test_a_failing_assertion_fails") && output.contains("== 99"),
        "pytest shows the failing assertion: {output}"
    );
    let stops = std::fs::read_to_string(&journal).expect("the plugin wrote its journal");
    assert_eq!(stops, "stopped\nstopped\n", "one stop per test server");
}

/// A plugin that cannot load fails every test that asks for a server, with
/// its traceback naming the author's file, unless the test allows it.
#[test]
fn a_plugin_that_fails_to_load_fails_the_test_naming_its_file() {
    let Some(venv) = pytest_venv() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("broken.py"),
        "UCS_PLUGIN = 'Broken'\n\nclass Broken:\n    def __init__(self, ucs):\n        raise RuntimeError('no database')\n",
    )
    .expect("plugin");
    std::fs::write(
        dir.path().join("test_broken.py"),
        "import pytest\n\n\
         def test_loads(ucs_server):\n    pass\n\n\
         @pytest.mark.ucs_allow_load_errors\n\
         def test_sees_the_failure(ucs_server):\n    assert ucs_server.plugin('broken')['state'] == 'failed'\n",
    )
    .expect("tests");
    let (code, output) = plugin_test(dir.path(), &venv, &[]);
    assert_eq!(code, Some(1), "{output}");
    // pytest counts a fixture that fails as an error of that test.
    assert!(output.contains("1 passed, 1 error"), "{output}");
    let file = dir.path().join("broken.py");
    assert!(
        output.contains("plugin broken failed to load")
            && output.contains("no database")
            && output.contains(&file.display().to_string()),
        "{output}"
    );
}

/// Without pytest in the venv the command says how to get it and exits 2.
#[test]
fn without_pytest_it_says_how_to_install_it() {
    let venv = tempfile::tempdir().expect("temp dir");
    let version = stdout(&ucs(&["--version"]));
    let python = version
        .split("Python ")
        .nth(1)
        .and_then(|rest| rest.split([',', ')']).next())
        .expect("ucs --version names its Python")
        .to_owned();
    let major_minor: Vec<&str> = python.split('.').take(2).collect();
    std::fs::write(
        venv.path().join("pyvenv.cfg"),
        format!("home = /nowhere\nversion = {python}\n"),
    )
    .expect("pyvenv.cfg");
    std::fs::create_dir_all(
        venv.path()
            .join(format!("lib/python{}/site-packages", major_minor.join("."))),
    )
    .expect("site-packages");
    let tests = tempfile::tempdir().expect("temp dir");
    let (code, output) = plugin_test(tests.path(), venv.path(), &[]);
    assert_eq!(code, Some(2), "{output}");
    assert!(
        output.contains("pytest cannot be imported") && output.contains("pip install pytest"),
        "{output}"
    );
}

/// Issue 13: a `ucs.log` call below the log level formats nothing (the
/// documented Middleware logs each whole `config.users.get` answer at
/// `dev`), while one at the level is formatted. `ucs plugin check` logs
/// plugins at INFO; a probe's `__str__` prints when it is formatted.
#[test]
fn a_log_call_below_the_level_formats_nothing() {
    let (_dir, path) = plugin_file(
        "lazy.py",
        r#"
class Probe:
    def __init__(self, name):
        self.name = name

    def __str__(self):
        print('formatted ' + self.name)
        return self.name

UCS_PLUGIN = 'Lazy'


class Lazy:
    def __init__(self, ucs):
        ucs.log.dev('%s', Probe('dev'))
        ucs.log.dbug('%s', Probe('dbug'))
        ucs.log.info('%s', Probe('info'))
"#,
    );
    let output = ucs(&["plugin", "check", &path.to_string_lossy()]);
    let log = stderr(&output);
    assert!(log.contains("formatted info"), "{log}");
    assert!(
        !log.contains("formatted dev") && !log.contains("formatted dbug"),
        "{log}"
    );
}
