//! Transactional reload (issue 8): a reload whose new version fails brings
//! the previous version back from the source that was running; one that
//! succeeds replaces the old version completely (P6, L4). And the audit
//! trail: hook vetoes and rewrites, and every load, reload and unload.

mod common;

use common::{TestServer, field};
use ucs_api::{ApiError, PluginState};
use ucs_core::Value;

/// A status hook that stamps its version on every change.
fn versioned(version: &str) -> String {
    format!(
        r#"
UCS_PLUGIN = 'Versioned'


class Versioned:
    def __init__(self, ucs):
        self.ucs = ucs
        ucs.agents.addChangeStatusHook(self.hook)

    def stop(self):
        self.ucs.agents.removeChangeStatusHook()

    def hook(self, agent, status, reason):
        return status, '{version}'
"#
    )
}

fn reason_after_change(server: &TestServer, agent: i64, status: i64) -> Value {
    let after = server
        .set_status(agent, status, "asked")
        .expect("the status change went through");
    field(&after, "reason").clone()
}

const BROKEN_VERSIONS: [(&str, &str); 4] = [
    (
        "syntax error",
        "UCS_PLUGIN = 'Versioned'\nclass Versioned(:\n",
    ),
    (
        "constructor raises",
        "UCS_PLUGIN = 'Versioned'\n\nclass Versioned:\n    def __init__(self, ucs):\n        \
         ucs.agents.addChangeStatusHook(lambda a, s, r: (s, 'half'))\n        raise RuntimeError('broken v2')\n",
    ),
    (
        "start raises",
        "UCS_PLUGIN = 'Versioned'\n\nclass Versioned:\n    def __init__(self, ucs):\n        pass\n\n    \
         def start(self):\n        raise RuntimeError('broken start')\n",
    ),
    ("no UCS_PLUGIN", "print('not a plugin any more')\n"),
];

#[test]
fn a_reload_to_a_broken_file_keeps_the_previous_version_running() {
    for (case, broken) in BROKEN_VERSIONS {
        let server = TestServer::start(&[("tr_versioned.py", &versioned("v1"))]);
        let agent = server.add_agent("tragent");
        assert_eq!(reason_after_change(&server, agent, 1), Value::from("v1"));

        server.write_plugin("tr_versioned.py", broken);
        let refused = server.load("tr_versioned");
        let Err(ApiError::Processing(message)) = refused else {
            panic!("{case}: the caller must get the new version's error, got {refused:?}");
        };
        assert!(
            message.contains("previous version keeps running"),
            "{case}: {message}"
        );

        let info = server.plugin("tr_versioned").unwrap();
        assert_eq!(info.state, PluginState::Running, "{case}");
        assert!(
            info.error.starts_with("reload failed"),
            "{case}: {}",
            info.error
        );
        // The old version serves, and nothing the broken one registered stays.
        assert_eq!(
            reason_after_change(&server, agent, 2),
            Value::from("v1"),
            "{case}"
        );
    }
}

#[test]
fn the_failed_attempt_carries_the_new_versions_traceback() {
    let server = TestServer::start(&[("tr_trace.py", &versioned("v1"))]);
    server.write_plugin("tr_trace.py", BROKEN_VERSIONS[1].1);
    let Err(ApiError::Processing(message)) = server.load("tr_trace") else {
        panic!("expected a processing error");
    };
    assert!(message.contains("Traceback"), "{message}");
    assert!(message.contains("RuntimeError: broken v2"), "{message}");
    assert!(
        server
            .plugin("tr_trace")
            .unwrap()
            .error
            .contains("broken v2")
    );
}

#[test]
fn p6_a_successful_reload_replaces_the_old_version_and_clears_the_error() {
    let server = TestServer::start(&[("tr_replace.py", &versioned("v1"))]);
    let agent = server.add_agent("tragent2");
    server.write_plugin("tr_replace.py", BROKEN_VERSIONS[0].1);
    assert!(server.load("tr_replace").is_err());

    server.write_plugin("tr_replace.py", &versioned("v3"));
    let info = server.load("tr_replace").unwrap();
    assert_eq!(field(&info, "state"), &Value::from("running"));
    assert_eq!(field(&info, "error"), &Value::from(""));
    assert_eq!(reason_after_change(&server, agent, 1), Value::from("v3"));
}

#[test]
fn a_first_load_that_fails_still_ends_failed() {
    let server = TestServer::start(&[]);
    server.write_plugin("tr_fresh.py", BROKEN_VERSIONS[1].1);
    assert!(server.load("tr_fresh").is_err());
    assert_eq!(
        server.plugin("tr_fresh").unwrap().state,
        PluginState::Failed
    );
}

/// The kinds and plugins of the audit trail, oldest first.
fn audit_kinds(server: &TestServer) -> Vec<(String, String)> {
    server
        .core
        .audit()
        .list()
        .into_iter()
        .map(|record| (record.kind.event_name().to_owned(), record.plugin))
        .collect()
}

#[test]
fn the_audit_trail_records_rewrites_and_every_lifecycle_step() {
    let rewriter = r#"
UCS_PLUGIN = 'Rewriter'


class Rewriter:
    def __init__(self, ucs):
        self.ucs = ucs
        ucs.agents.addChangeStatusHook(self.hook)
        ucs.shared.addChangeHook('au_counts', lambda ident, old, new: {'total': sum(new.values())})

    def stop(self):
        self.ucs.agents.removeChangeStatusHook()
        self.ucs.shared.removeChangeHook('au_counts')

    def hook(self, agent, status, reason):
        return status, reason.upper()
"#;
    let server = TestServer::start(&[("au_rewriter.py", rewriter)]);
    let agent = server.add_agent("auagent");
    assert_eq!(reason_after_change(&server, agent, 2), Value::from("ASKED"));
    server
        .call(
            "shared.set",
            vec![
                Value::from("au_counts"),
                Value::record([("a", Value::Int(1)), ("b", Value::Int(2))]),
            ],
        )
        .unwrap();
    server.load("au_rewriter").unwrap();
    server.unload("au_rewriter").unwrap();

    let kinds = audit_kinds(&server);
    let of_plugin: Vec<&str> = kinds
        .iter()
        .filter(|(_, plugin)| plugin == "au_rewriter")
        .map(|(kind, _)| kind.as_str())
        .collect();
    assert_eq!(
        of_plugin,
        [
            "audit.plugin_load",
            "audit.status_rewrite",
            "audit.shared_rewrite",
            "audit.plugin_reload",
            "audit.plugin_unload",
        ]
    );
    let rewrite = server
        .core
        .audit()
        .list()
        .into_iter()
        .find(|record| record.kind.event_name() == "audit.status_rewrite")
        .unwrap();
    assert_eq!(field(&rewrite.asked, "reason"), &Value::from("asked"));
    assert_eq!(field(&rewrite.outcome, "reason"), &Value::from("ASKED"));
}

#[test]
fn a_failed_reload_is_audited_with_its_error() {
    let server = TestServer::start(&[("au_failing.py", &versioned("v1"))]);
    server.write_plugin("au_failing.py", BROKEN_VERSIONS[0].1);
    assert!(server.load("au_failing").is_err());
    let reload = server
        .core
        .audit()
        .list()
        .into_iter()
        .find(|record| {
            record.plugin == "au_failing" && record.kind.event_name() == "audit.plugin_reload"
        })
        .unwrap();
    assert_eq!(field(&reload.outcome, "state"), &Value::from("running"));
    let Value::Str(error) = field(&reload.outcome, "error") else {
        panic!("{reload:?}");
    };
    assert!(error.contains("SyntaxError"), "{error}");
}

/// Version 1 of a plugin whose `stop()` is stuck past the stop timeout, then
/// unregisters the status hook and registers a callback: what a late old
/// version does after the reload has already brought version 2 up.
const STUCK_STOP_V1: &str = r#"
import time
from events import EVENT_AGENT_STATUS

UCS_PLUGIN = 'Stale'


class Stale:
    def __init__(self, ucs):
        self.ucs = ucs
        ucs.agents.addChangeStatusHook(self.hook)

    def hook(self, agent, status, reason):
        return status, 'v1'

    def stop(self):
        time.sleep(0.6)
        self.ucs.agents.removeChangeStatusHook()
        try:
            self.ucs.addCallback(EVENT_AGENT_STATUS, self.changed)
            late = 'registered'
        except Exception as err:
            late = 'refused: %s' % err
        self.ucs.api.shared.set(self.ucs.sid, 'stale_late', late)

    def changed(self, agent, args):
        pass
"#;

#[test]
fn issue12_a_stale_stop_of_the_old_version_cannot_touch_the_new_versions_registrations() {
    let server = TestServer::start_with(&[("stale.py", STUCK_STOP_V1)], |config| {
        config.stop_timeout = std::time::Duration::from_millis(100);
        config.thread_join_timeout = std::time::Duration::from_millis(100);
    });
    let agent = server.add_agent("staleagent");
    assert_eq!(reason_after_change(&server, agent, 1), Value::from("v1"));

    server.write_plugin("stale.py", &versioned("v2").replace("Versioned", "Stale"));
    server
        .load("stale")
        .expect("the reload goes on after the stuck stop() times out");
    match common::isolation_under_test() {
        ucs_api::Isolation::InProcess => {
            // Let the old stop() finish its sleep and make its late calls.
            assert!(
                common::wait_for(std::time::Duration::from_secs(5), || {
                    server.shared("stale_late") != Value::empty_map()
                }),
                "the old stop() never finished"
            );
            let late = server.shared("stale_late");
            assert!(
                matches!(&late, Value::Str(text) if text.starts_with("refused") && text.contains("was stopped")),
                "a stopped version must not register anything: {late:?}"
            );
            assert!(
                !common::log_records_of("stale", &["removeChangeStatusHook ignored", "newer load"])
                    .is_empty(),
                "the old version's late removeChangeStatusHook() is ignored with a warning"
            );
        }
        ucs_api::Isolation::Process => {
            // I1: the old version's host is ended with its timed-out stop(),
            // so its late calls never happen at all.
            std::thread::sleep(std::time::Duration::from_secs(1));
            assert_eq!(
                server.shared("stale_late"),
                Value::empty_map(),
                "the ended host's stop() went on"
            );
        }
    }
    assert_eq!(
        reason_after_change(&server, agent, 3),
        Value::from("v2"),
        "the new version's hook must still decide"
    );
    let registrations = server.api.registrations_of_plugin("stale");
    let kinds: Vec<String> = registrations.iter().map(ToString::to_string).collect();
    assert_eq!(
        kinds,
        ["status hook Stale.hook()"],
        "only the new version's hook; the old version's late callback was refused"
    );
    assert!(
        registrations[0].owner.generation() > 0,
        "a loaded plugin's owner carries its load generation"
    );
}

/// Issue 12 item 3: each audit record names the user whose call caused it,
/// in the record and in the value `audit.list` and the `audit.*` events show:
/// an agent whose own change a Python hook vetoes, the admin who reloads and
/// unloads a plugin, and nobody for the load the server did at start.
#[test]
fn issue12_audit_records_name_the_user_whose_call_caused_them() {
    let vetoer = r#"
UCS_PLUGIN = 'Vetoer'


class Vetoer:
    def __init__(self, ucs):
        self.ucs = ucs
        ucs.agents.addChangeStatusHook(self.hook)

    def stop(self):
        self.ucs.agents.removeChangeStatusHook()

    def hook(self, agent, status, reason):
        raise error.ProcessingError('no lunch today')
"#;
    let server = TestServer::start(&[("au_vetoer.py", &common::py(vetoer))]);
    let agent = server.add_agent("auvetoed");
    let agent_sid = server.login("auvetoed");
    let vetoed = server.api.call(
        &agent_sid,
        "agents.setStatus",
        vec![Value::Int(agent), Value::Int(2), Value::from("Lunch")],
    );
    assert_eq!(vetoed, Err(ApiError::Processing("no lunch today".into())));
    server.load("au_vetoer").unwrap();
    server.unload("au_vetoer").unwrap();

    let users: Vec<(String, Option<i64>)> = server
        .core
        .audit()
        .list()
        .into_iter()
        .filter(|record| record.plugin == "au_vetoer")
        .map(|record| (record.kind.event_name().to_owned(), record.user_id))
        .collect();
    assert_eq!(
        users,
        [
            ("audit.plugin_load".to_owned(), None),
            ("audit.status_veto".to_owned(), Some(agent)),
            ("audit.plugin_reload".to_owned(), Some(1)),
            ("audit.plugin_unload".to_owned(), Some(1)),
        ]
    );
    let listed = server.call("audit.list", Vec::new()).unwrap();
    let Value::List(listed) = listed else {
        panic!("{listed:?}");
    };
    let veto = listed
        .iter()
        .find(|record| field(record, "kind") == &Value::from("audit.status_veto"))
        .unwrap();
    assert_eq!(field(veto, "user_id"), &Value::Int(agent));
    // The scope ended with the calls: nothing is attributed to anyone now.
    assert_eq!(ucs_core::audit::acting_user(), None);
}
