//! The four documented example plugins, shipped in `plugins/`, driven
//! through gRPC against the real binary (SPEC sections 1-5, errata), and a
//! plugin reloaded after its file changed (P6).

mod common;

use common::Server;
use tonic::Code;
use ucs_grpc::pb;

/// A server over a copy of the repository's `plugins/`, with debug logs so
/// the plugins' `ucs.log.dbug` lines are visible.
async fn server_with_examples() -> Server {
    examples().start().await
}

/// [`server_with_examples`] not yet started, for more options.
fn examples() -> common::ServerBuilder {
    Server::builder()
        .demo()
        .env("RUST_LOG", "debug")
        .example_plugins()
}

#[tokio::test]
async fn p1_p3_p4_all_four_examples_run_as_they_stand() {
    let server = server_with_examples().await;
    let sid = server.admin_sid().await;
    let plugins = server
        .plugins()
        .list(pb::ListPluginsRequest { sid })
        .await
        .expect("Plugins.List")
        .into_inner()
        .plugins;
    let running: Vec<_> = plugins
        .iter()
        .map(|p| {
            (
                p.name.as_str(),
                p.class_name.as_str(),
                p.state(),
                p.error.as_str(),
            )
        })
        .collect();
    assert_eq!(
        running,
        [
            ("example", "Example", pb::PluginState::Running, ""),
            ("middleware", "Middleware", pb::PluginState::Running, ""),
            (
                "shared_data_hook",
                "SharedDataHook",
                pb::PluginState::Running,
                ""
            ),
            ("status_hook", "StatusHook", pb::PluginState::Running, ""),
        ],
        "{}",
        server.log()
    );
}

#[tokio::test]
async fn h4_status_hook_example_sends_new_logins_to_the_briefing() {
    let server = server_with_examples().await;
    let sid = server.admin_sid().await;
    let alice = server.user_id("alice").await;
    let agent = server
        .call(&sid, "agents.setStatus", &format!("[{alice}, 1, \"\"]"))
        .await
        .expect("setStatus");
    assert_eq!(agent["status"], 2, "OFFLINE -> READY is rewritten to AUX");
    assert_eq!(agent["reason"], "Seznámení se z provozními pokyny");
    // Not from OFFLINE any more: READY goes through.
    let agent = server
        .call(&sid, "agents.setStatus", &format!("[{alice}, 1, \"\"]"))
        .await
        .expect("setStatus");
    assert_eq!(agent["status"], 1);
}

#[tokio::test]
async fn d4_shared_data_hook_example_keys_by_user_id_and_finds_old_counts() {
    let server = server_with_examples().await;
    let sid = server.admin_sid().await;
    let alice = server.user_id("alice").await;
    let stored = server
        .call(
            &sid,
            "shared.set",
            r#"["agent_emails", {"alice": 3, "nobody": 1}]"#,
        )
        .await
        .expect("shared.set");
    // JSON clients see the int key as a string (D4).
    assert_eq!(stored, serde_json::json!({ alice.to_string(): 3 }));
    assert!(
        server.log().contains("Unknown username: nobody"),
        "{}",
        server.log()
    );

    server
        .call(&sid, "shared.set", r#"["agent_emails", {"alice": 5}]"#)
        .await
        .expect("second shared.set");
    let wanted = format!("User ID {alice} email count changed from 3 to 5");
    assert!(server.log().contains(&wanted), "{}", server.log());

    let refused = server
        .call(&sid, "shared.set", r#"["agent_emails", [1, 2]]"#)
        .await
        .expect_err("a list is refused by the hook (S3)");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(refused.message(), "Only associative array is accepted");
}

#[tokio::test]
async fn m3_middleware_example_guards_users() {
    let server = server_with_examples().await;
    let sid = server.admin_sid().await;
    let alice = server.user_id("alice").await;

    let denied = server
        .call(&sid, "config.users.delete", &format!("[{alice}]"))
        .await
        .expect_err("deletion is forbidden by the middleware");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.message().contains("This UCS forbids user removal"));

    let renamed = server
        .call(
            &sid,
            "config.users.edit",
            r#"[{"id": 1, "username": "root"}]"#,
        )
        .await
        .expect_err("admin cannot be renamed");
    assert_eq!(renamed.code(), Code::InvalidArgument);
    assert!(
        renamed
            .message()
            .contains("Admin username can't be changed")
    );

    let short = server
        .call(
            &sid,
            "config.users.edit",
            r#"[{"id": 1, "password": "short-pw9"}]"#,
        )
        .await
        .expect_err("admin password must be 10+");
    assert!(short.message().contains("Admin password is too short"));

    // Other edits pass through to the built-in method.
    let edited = server
        .call(
            &sid,
            "config.users.edit",
            &format!(r#"[{{"id": {alice}, "displayname": "Alice A."}}]"#),
        )
        .await
        .expect("edit passes through");
    assert_eq!(edited["displayname"], "Alice A.");
    let user = server
        .call(&sid, "config.users.get", &format!("[{alice}]"))
        .await
        .expect("get passes through the logging middleware");
    assert_eq!(user["username"], "alice");
}

#[tokio::test]
async fn p5_example_thread_plugin_unloads_cleanly() {
    let server = server_with_examples().await;
    let sid = server.admin_sid().await;
    let info = server
        .plugins()
        .unload(pb::PluginRequest {
            sid,
            name: "example".to_owned(),
        })
        .await
        .expect("Plugins.Unload")
        .into_inner();
    assert_eq!(info.state(), pb::PluginState::Stopped);
    assert_eq!(info.error, "", "stop() ended the thread in time");
    // It unregistered its callback itself: no leftover warning (P7).
    assert!(!server.log().contains("left callback"), "{}", server.log());
}

const VERSIONED: &str = r#"
UCS_PLUGIN = 'Versioned'


class Versioned:
    def __init__(self, ucs):
        self.ucs = ucs
        ucs.agents.addChangeStatusHook(self.hook)

    def stop(self):
        self.ucs.agents.removeChangeStatusHook()

    def hook(self, agent, status, reason):
        return status, 'VERSION'
"#;

#[tokio::test]
async fn p6_a_plugin_reloads_after_its_file_changed() {
    let server = Server::builder()
        .demo()
        .plugin("versioned.py", &VERSIONED.replace("VERSION", "v1"))
        .start()
        .await;
    let sid = server.admin_sid().await;
    let bob = server.user_id("bob").await;
    let agent = server
        .call(&sid, "agents.setStatus", &format!("[{bob}, 2, \"x\"]"))
        .await
        .expect("setStatus");
    assert_eq!(agent["reason"], "v1");

    server.write_plugin("versioned.py", &VERSIONED.replace("VERSION", "v2"));
    let info = server
        .plugins()
        .load(pb::PluginRequest {
            sid: sid.clone(),
            name: "versioned".to_owned(),
        })
        .await
        .expect("Plugins.Load reloads")
        .into_inner();
    assert_eq!(info.state(), pb::PluginState::Running);

    let agent = server
        .call(&sid, "agents.setStatus", &format!("[{bob}, 3, \"y\"]"))
        .await
        .expect("setStatus");
    assert_eq!(agent["reason"], "v2", "the changed file took effect");
}

#[tokio::test]
async fn a_reload_to_a_broken_file_keeps_the_old_version_serving() {
    let server = Server::builder()
        .demo()
        .plugin("versioned.py", &VERSIONED.replace("VERSION", "v1"))
        .start()
        .await;
    let sid = server.admin_sid().await;
    let carol = server.user_id("carol").await;

    server.write_plugin(
        "versioned.py",
        "UCS_PLUGIN = 'Versioned'\nclass Versioned(:\n",
    );
    let refused = server
        .plugins()
        .load(pb::PluginRequest {
            sid: sid.clone(),
            name: "versioned".to_owned(),
        })
        .await
        .expect_err("the broken version is refused");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("SyntaxError"),
        "{}",
        refused.message()
    );

    let listed = server
        .plugins()
        .list(pb::ListPluginsRequest { sid: sid.clone() })
        .await
        .expect("Plugins.List")
        .into_inner()
        .plugins;
    let versioned = listed
        .iter()
        .find(|p| p.name == "versioned")
        .expect("listed");
    assert_eq!(versioned.state(), pb::PluginState::Running);
    assert!(
        versioned.error.starts_with("reload failed"),
        "{}",
        versioned.error
    );

    let agent = server
        .call(&sid, "agents.setStatus", &format!("[{carol}, 1, \"x\"]"))
        .await
        .expect("setStatus");
    assert_eq!(agent["reason"], "v1", "the old version still serves");
}

const VETO: &str = r#"
UCS_PLUGIN = 'Veto'


class Veto:
    def __init__(self, ucs):
        self.ucs = ucs
        ucs.agents.addChangeStatusHook(self.hook)

    def stop(self):
        self.ucs.agents.removeChangeStatusHook()

    def hook(self, agent, status, reason):
        if reason == 'Nap':
            return None, 'no naps'
        return status, reason
"#;

#[tokio::test]
async fn a_veto_appears_in_audit_list_and_on_the_stream() {
    let server = Server::builder()
        .demo()
        .plugin("veto.py", VETO)
        .start()
        .await;
    let sid = server.admin_sid().await;
    let alice = server.user_id("alice").await;
    let mut stream = server
        .events()
        .subscribe(pb::SubscribeRequest {
            sid: sid.clone(),
            events: vec!["audit.status_veto".to_owned()],
        })
        .await
        .expect("Events.Subscribe")
        .into_inner();

    let refused = server
        .call(&sid, "agents.setStatus", &format!("[{alice}, 2, \"Nap\"]"))
        .await
        .expect_err("the hook vetoes naps");
    assert_eq!(refused.message(), "no naps");

    let event = tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
        .await
        .expect("the audit event arrives")
        .expect("stream open")
        .expect("an event");
    assert_eq!(event.name, "audit.status_veto");
    let data: serde_json::Value = serde_json::from_str(&event.data_json).expect("JSON");
    assert_eq!(data["plugin"], "veto");
    assert_eq!(data["asked"]["reason"], "Nap");
    assert_eq!(data["outcome"]["blocked"], "no naps");

    let trail = server
        .call(&sid, "audit.list", "")
        .await
        .expect("audit.list");
    let kinds: Vec<_> = trail
        .as_array()
        .expect("a list")
        .iter()
        .map(|record| {
            (
                record["kind"].as_str().unwrap_or(""),
                record["plugin"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(kinds.contains(&("audit.plugin_load", "veto")), "{kinds:?}");
    assert!(kinds.contains(&("audit.status_veto", "veto")), "{kinds:?}");
}

/// Issue 12 item 3: audit events are for superusers, as `audit.list` is. An
/// agent asking for one is refused with PERMISSION_DENIED; an agent asking
/// for every event gets its own status events but no audit event; the audit
/// event the admin receives names the agent whose change was vetoed.
#[tokio::test]
async fn issue12_audit_events_reach_superusers_only_and_name_the_caller() {
    let server = Server::builder()
        .demo()
        .plugin("veto.py", VETO)
        .start()
        .await;
    let admin = server.admin_sid().await;
    let alice = server.user_id("alice").await;
    let alice_sid = server.login("alice", common::DEMO_PASSWORD).await;
    for asked in [
        vec!["audit.status_veto".to_owned()],
        vec!["agent.status".to_owned(), "audit.plugin_load".to_owned()],
    ] {
        let refused = server
            .events()
            .subscribe(pb::SubscribeRequest {
                sid: alice_sid.clone(),
                events: asked.clone(),
            })
            .await
            .expect_err("an agent may not subscribe to audit events");
        assert_eq!(refused.code(), Code::PermissionDenied, "{asked:?}");
    }
    let subscribe = |sid: String| {
        let mut events = server.events();
        async move {
            events
                .subscribe(pb::SubscribeRequest {
                    sid,
                    events: Vec::new(),
                })
                .await
                .expect("Events.Subscribe to every event")
                .into_inner()
        }
    };
    let mut agent_stream = subscribe(alice_sid.clone()).await;
    let mut admin_stream = subscribe(admin.clone()).await;

    let refused = server
        .call(
            &alice_sid,
            "agents.setStatus",
            &format!("[{alice}, 2, \"Nap\"]"),
        )
        .await
        .expect_err("the hook vetoes naps");
    assert_eq!(refused.message(), "no naps");
    // A change that goes through, so the agent's stream has something after
    // the veto: if the audit event were delivered, it would come first.
    server
        .call(
            &alice_sid,
            "agents.setStatus",
            &format!("[{alice}, 1, \"\"]"),
        )
        .await
        .expect("a status change the hook lets through");

    async fn next(stream: &mut tonic::Streaming<pb::Event>) -> pb::Event {
        tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
            .await
            .expect("an event arrives")
            .expect("stream open")
            .expect("an event")
    }
    let seen_by_agent = next(&mut agent_stream).await;
    assert_eq!(seen_by_agent.name, "agent.status");
    let seen_by_admin = next(&mut admin_stream).await;
    assert_eq!(seen_by_admin.name, "audit.status_veto");
    let data: serde_json::Value = serde_json::from_str(&seen_by_admin.data_json).expect("JSON");
    assert_eq!(data["user_id"], alice);
    assert_eq!(data["plugin"], "veto");
}

const SLOW_HOOK: &str = r#"
import time

UCS_PLUGIN = 'Slow'


class Slow:
    def __init__(self, ucs):
        self.ucs = ucs
        ucs.agents.addChangeStatusHook(self.hook)
        ucs.api.addMiddleware('agents.list', self.count)

    def stop(self):
        self.ucs.agents.removeChangeStatusHook()
        self.ucs.api.removeMiddleware('agents.list', self.count)

    def hook(self, agent, status, reason):
        time.sleep(0.03)
        return status, 'slow'

    def count(self, handler, *args):
        return handler(*args)
"#;

/// The `registrations` of one plugin as Plugins.List reports them.
async fn registrations(server: &Server, sid: &str, plugin: &str) -> Vec<pb::RegistrationMetrics> {
    server
        .plugins()
        .list(pb::ListPluginsRequest {
            sid: sid.to_owned(),
        })
        .await
        .expect("Plugins.List")
        .into_inner()
        .plugins
        .into_iter()
        .find(|info| info.name == plugin)
        .expect("plugin listed")
        .registrations
}

#[tokio::test]
async fn per_plugin_counters_move_and_a_slow_hook_trips_its_breaker() {
    let server = Server::builder()
        .demo()
        .plugin("slow.py", SLOW_HOOK)
        .arg("--hook-budget")
        .arg("10ms")
        .arg("--breaker-threshold")
        .arg("3")
        .start()
        .await;
    let sid = server.admin_sid().await;
    let alice = server.user_id("alice").await;
    for _ in 0..4 {
        server
            .call(&sid, "agents.list", "")
            .await
            .expect("agents.list");
    }
    let before = registrations(&server, &sid, "slow").await;
    let middleware = before
        .iter()
        .find(|r| r.kind == "middleware")
        .expect("middleware listed");
    assert_eq!(
        (middleware.target.as_str(), middleware.calls),
        ("agents.list", 4)
    );
    assert_eq!(middleware.errors, 0);

    // Three calls over the 10 ms budget in a row open the hook's breaker;
    // from then on the change goes through as if no hook were registered.
    for round in 0..5 {
        let agent = server
            .call(
                &sid,
                "agents.setStatus",
                &format!("[{alice}, 1, \"r{round}\"]"),
            )
            .await
            .expect("setStatus");
        let expected = if round < 3 {
            "slow".to_owned()
        } else {
            format!("r{round}")
        };
        assert_eq!(agent["reason"], expected.as_str(), "round {round}");
    }
    let after = registrations(&server, &sid, "slow").await;
    let hook = after
        .iter()
        .find(|r| r.kind == "status_hook")
        .expect("hook listed");
    assert!(hook.breaker_open, "{hook:?}");
    assert_eq!(
        (hook.calls, hook.overruns, hook.skipped),
        (3, 3, 2),
        "{hook:?}"
    );
    assert!(hook.p50_ns >= 10_000_000, "{hook:?}");
    let log = server.log();
    assert!(log.contains("over its budget"), "{log}");
    assert!(log.contains("its breaker is open"), "{log}");

    // A reload resets the breaker and the counters.
    server
        .plugins()
        .load(pb::PluginRequest {
            sid: sid.clone(),
            name: "slow".to_owned(),
        })
        .await
        .expect("reload");
    let reset = registrations(&server, &sid, "slow").await;
    assert!(
        reset.iter().all(|r| r.calls == 0 && !r.breaker_open),
        "{reset:?}"
    );
}

/// Issue 8 and issue 17 item 4: API calls by outcome with their latency,
/// sessions, and each registration's counters and latency histogram, in
/// seconds; text 0.0.4 unless OpenMetrics is asked for.
#[tokio::test]
async fn the_prometheus_endpoint_shows_api_calls_sessions_and_plugin_numbers() {
    let address = common::free_address();
    let server = Server::builder()
        .demo()
        .plugin("slow.py", SLOW_HOOK)
        .arg("--metrics-listen")
        .arg(&address)
        .start()
        .await;
    let sid = server.admin_sid().await;
    for _ in 0..3 {
        server
            .call(&sid, "agents.list", "")
            .await
            .expect("agents.list");
    }
    let denied = server.call("not-a-session", "agents.list", "").await;
    assert!(denied.is_err());

    let scraped = address.clone();
    let metrics = tokio::task::spawn_blocking(move || common::http_get(&scraped, "/metrics"))
        .await
        .expect("scrape");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("content-type: text/plain; version=0.0.4"),
        "text 0.0.4 by default: {metrics}"
    );
    for expected in [
        r#"ucs_api_calls_total{method="agents.list",status="ok"} 3"#,
        r#"ucs_api_calls_total{method="agents.list",status="unauthenticated"} 1"#,
        "ucs_sessions 1",
        r#"ucs_plugin_calls_total{plugin="slow",kind="middleware",target="agents.list",callable="Slow.count()"} 3"#,
        "ucs_plugin_breaker_open{",
        // The refused call reached no method, so it has no duration.
        r#"ucs_api_call_duration_seconds_count{method="agents.list"} 3"#,
        r#"ucs_api_call_duration_seconds_bucket{le="+Inf",method="agents.list"} 3"#,
        r#"ucs_plugin_call_duration_seconds_count{plugin="slow",kind="middleware",target="agents.list",callable="Slow.count()"} 3"#,
        "# TYPE ucs_api_call_duration_seconds histogram",
        "# TYPE ucs_plugin_calls_total counter",
        "# HELP ucs_plugin_calls_total ",
        "ucs_build_info{version=",
        "process_resident_memory_bytes ",
    ] {
        assert!(metrics.contains(expected), "{expected} in {metrics}");
    }
    assert!(
        !metrics.contains("nanoseconds") && !metrics.contains("# EOF"),
        "{metrics}"
    );

    let openmetrics = tokio::task::spawn_blocking(move || {
        common::http_get_accepting(
            &address,
            "/metrics",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
    })
    .await
    .expect("scrape");
    assert!(
        openmetrics.contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{openmetrics}"
    );
    assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
    assert!(
        openmetrics.contains("# TYPE ucs_plugin_calls counter")
            && openmetrics.contains("# TYPE ucs_build info"),
        "{openmetrics}"
    );
}

/// Issue 17 item 4, with the tools of the trade: `promtool check metrics`
/// finds nothing to say about the text answer of a server running the four
/// documented plugins after calls of every kind, and a real Prometheus
/// (which asks for OpenMetrics) scrapes it, target up, histograms included.
#[tokio::test]
async fn promtool_and_a_real_prometheus_accept_the_metrics() {
    if !common::installed("promtool", "prometheus") {
        return;
    }
    let address = common::free_address();
    let server = examples()
        .arg("--metrics-listen")
        .arg(&address)
        .start()
        .await;
    let sid = server.admin_sid().await;
    let alice = server.user_id("alice").await;
    server
        .call(&sid, "agents.setStatus", &format!("[{alice}, 1, \"\"]"))
        .await
        .expect("setStatus through the status hook and the callback");
    server
        .call(&sid, "config.users.get", &format!("[{alice}]"))
        .await
        .expect("config.users.get through the middleware");
    server
        .call(&sid, "shared.set", r#"["agent_emails", {"alice": 3}]"#)
        .await
        .expect("shared.set through the shared-data hook");
    let _ = server.call("not-a-session", "agents.list", "").await;

    let scraped = address.clone();
    let answer = tokio::task::spawn_blocking(move || common::http_get(&scraped, "/metrics"))
        .await
        .expect("scrape");
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .expect("an HTTP answer");
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool");
    std::io::Write::write_all(
        &mut promtool.stdin.take().expect("promtool's stdin"),
        body.as_bytes(),
    )
    .expect("feed promtool");
    let checked = promtool.wait_with_output().expect("promtool ends");
    let said = String::from_utf8_lossy(&checked.stdout).into_owned()
        + &String::from_utf8_lossy(&checked.stderr);
    assert!(
        checked.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}\n{body}"
    );

    if !common::installed("prometheus", "prometheus") {
        return;
    }
    tokio::task::spawn_blocking(move || {
        let prometheus = Prometheus::scraping(&address);
        let up = prometheus.query_until_found(r#"up{job="ucs"}"#);
        assert!(up.contains(r#""1"]"#), "{up}\n{}", prometheus.log());
        let histogram = prometheus
            .query_until_found(r#"ucs_plugin_call_duration_seconds_count{plugin="status_hook"}"#);
        assert!(histogram.contains(r#""1"]"#), "{histogram}");
        let build = prometheus.query_until_found("ucs_build_info");
        assert!(build.contains(r#""commit":"#), "{build}");
    })
    .await
    .expect("the Prometheus checks");
}

/// A Prometheus server scraping one target every second, killed on drop.
struct Prometheus {
    child: std::process::Child,
    address: String,
    dir: tempfile::TempDir,
}

impl Prometheus {
    fn scraping(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: ucs\n    \
                 static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .expect("write the config");
        let address = common::free_address();
        let log = std::fs::File::create(dir.path().join("log")).expect("log file");
        let child = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Prometheus {
            child,
            address,
            dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// The answer of an instant query with at least one series, waiting
    /// for scrapes up to 60 s.
    fn query_until_found(&self, query: &str) -> String {
        let encoded: String = query
            .bytes()
            .map(|byte| match byte {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (byte as char).to_string(),
                other => format!("%{other:02X}"),
            })
            .collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let answer = std::net::TcpStream::connect(&self.address)
                .ok()
                .map(|_| common::http_get(&self.address, &format!("/api/v1/query?query={encoded}")))
                .unwrap_or_default();
            if answer.contains(r#""value":"#) {
                return answer;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no series for {query} in 60 s: {answer}\n{}",
                self.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
