//! The web console (issue 14 item 5) in a real browser: headless Chromium
//! driven over WebDriver (Debian's `chromium` and `chromium-driver`), and
//! headless Firefox (`firefox-esr`) over WebDriver BiDi on its own remote
//! port, as Debian ships no geckodriver, against the real binary serving
//! the four example plugins with `--metrics-listen ADDR --console`.
//!
//! Without a browser or its driver the tests are skipped with a message,
//! except under CI (`CI` set), where `.ci/run` installs both and a missing
//! one fails. With `UCS_CONSOLE_SCREENSHOTS=docs` each page is saved as
//! `docs/console-PAGE.png` (the README shows them).

mod common;

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Server;
use fantoccini::{Client, ClientBuilder, Locator};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// How long a page may take to show what a test waits for: a cold debug
/// server with four plugin hosts and a browser on a 2-core machine.
const WAIT: Duration = Duration::from_secs(30);

/// A server over a copy of the repository's `plugins/`, serving the
/// console on a free loopback address; returns it with the console's URL.
async fn server_with_console() -> (Server, String) {
    let address = common::free_address();
    let builder = Server::builder()
        .demo()
        .arg("--metrics-listen")
        .arg(&address)
        .arg("--console")
        .example_plugins();
    let server = builder.start().await;
    (server, format!("http://{address}/console/"))
}

/// A headless Chromium behind its own chromedriver; both are killed on drop.
struct Browser {
    /// The WebDriver session.
    client: Client,
    /// chromedriver, leader of a process group that holds the browser too.
    driver: Child,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: chromedriver and every Chromium process it
        // started, even when the test failed before closing the session.
        if let Ok(pid) = i32::try_from(self.driver.id()) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = self.driver.wait();
    }
}

/// A browser, or `None` (skipped) when chromium or chromedriver is missing.
async fn browser() -> Option<Browser> {
    if !common::installed("chromium", "chromium")
        || !common::installed("chromedriver", "chromium-driver")
    {
        return None;
    }
    let address = common::free_address();
    let port = address.rsplit(':').next().expect("a port").to_owned();
    let driver = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("chromedriver starts");
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        serde_json::json!({
            // --no-sandbox: CI runs as root, where Chromium's sandbox
            // refuses to start.
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1400,1200",
            ],
        }),
    );
    let started = Instant::now();
    let client = loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(capabilities.clone())
            .connect(&format!("http://{address}"))
            .await
        {
            Ok(client) => break client,
            Err(err) if started.elapsed() < WAIT => {
                let _ = err;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("no WebDriver session from chromedriver at {address}: {err}"),
        }
    };
    Some(Browser { client, driver })
}

/// Waits until the text of the element at `css` satisfies `wanted`, and
/// returns it; panics with what it last saw and the server's log.
async fn wait_text(
    browser: &Browser,
    server: &Server,
    css: &str,
    wanted: impl Fn(&str) -> bool,
) -> String {
    let started = Instant::now();
    let mut last = String::from("(no such element)");
    while started.elapsed() < WAIT {
        if let Ok(element) = browser.client.find(Locator::Css(css)).await
            && let Ok(text) = element.text().await
        {
            if wanted(&text) {
                return text;
            }
            last = text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{css} never showed what was wanted; last it said {last:?}; server log:\n{}",
        server.log()
    );
}

/// Clicks the element at `css`.
async fn click(browser: &Browser, css: &str) {
    browser
        .client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|err| panic!("no {css}: {err}"))
        .click()
        .await
        .unwrap_or_else(|err| panic!("cannot click {css}: {err}"));
}

/// Types `text` into the input at `css`.
async fn type_into(browser: &Browser, css: &str, text: &str) {
    browser
        .client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|err| panic!("no {css}: {err}"))
        .send_keys(text)
        .await
        .unwrap_or_else(|err| panic!("cannot type into {css}: {err}"));
}

/// Opens the console and logs in as `username`.
async fn log_in(browser: &Browser, server: &Server, url: &str, username: &str, password: &str) {
    browser.client.goto(url).await.expect("the console opens");
    type_into(browser, "#username", username).await;
    type_into(browser, "#password", password).await;
    click(browser, "#login-button").await;
    wait_text(browser, server, "#whoami", |text| {
        text.starts_with(username)
    })
    .await;
}

/// Shows `page` (plugins, audit, agents, events) as its nav link does.
async fn open_page(browser: &Browser, page: &str) {
    click(browser, &format!("#nav-{page}")).await;
}

/// Saves the browser's view as `docs/console-NAME.png` when
/// `UCS_CONSOLE_SCREENSHOTS` names the directory (relative to the
/// repository root).
async fn screenshot(browser: &Browser, name: &str) {
    let Some(dir) = std::env::var_os("UCS_CONSOLE_SCREENSHOTS") else {
        return;
    };
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(dir);
    // Let a just-drawn chart or a highlight settle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let png = browser.client.screenshot().await.expect("a screenshot");
    std::fs::create_dir_all(&dir).expect("the screenshot directory");
    std::fs::write(dir.join(format!("console-{name}.png")), png).expect("the screenshot");
}

/// A version of `status_hook.py` that fails to import.
const BROKEN_STATUS_HOOK: &str =
    "UCS_PLUGIN = 'StatusHook'\nraise RuntimeError('broken on purpose')\n";

/// Item 5: log in, see the four example plugins running with their
/// registrations, reload one, and see a broken reload keep the old version
/// with the error shown; the audit page shows both reloads as they happen.
#[tokio::test]
async fn a_superuser_reloads_plugins_and_a_broken_reload_keeps_the_old_version() {
    let Some(browser) = browser().await else {
        return;
    };
    let (server, url) = server_with_console().await;
    browser.client.goto(&url).await.expect("the console opens");
    wait_text(&browser, &server, "#login-button", |text| text == "Log in").await;
    screenshot(&browser, "login").await;
    log_in(&browser, &server, &url, "admin", common::ADMIN_PASSWORD).await;
    for plugin in ["example", "middleware", "shared_data_hook", "status_hook"] {
        let css = format!("#plugin-{plugin} td:nth-child(2)");
        wait_text(&browser, &server, &css, |state| state == "running").await;
    }
    // Every registration is listed with its numbers and a chart.
    wait_text(&browser, &server, "#registrations-table tbody", |rows| {
        ["callback", "middleware", "shared_data_hook", "status_hook"]
            .iter()
            .all(|what| rows.contains(what))
    })
    .await;
    assert!(
        browser
            .client
            .find(Locator::Css("#registrations-table canvas.sparkline"))
            .await
            .is_ok(),
        "a latency chart per registration"
    );

    click(&browser, "#reload-example").await;
    wait_text(&browser, &server, "#plugins-message", |message| {
        message.contains("example: plugins.load answered running")
    })
    .await;

    server.write_plugin("status_hook.py", BROKEN_STATUS_HOOK);
    click(&browser, "#reload-status_hook").await;
    let message = wait_text(&browser, &server, "#plugins-message", |message| {
        message.contains("failed")
    })
    .await;
    assert!(
        message.contains("FAILED_PRECONDITION")
            && message.contains("the previous version keeps running")
            && message.contains("broken on purpose"),
        "{message}"
    );
    wait_text(
        &browser,
        &server,
        "#plugin-status_hook td:nth-child(2)",
        |state| state == "running",
    )
    .await;
    wait_text(&browser, &server, "#error-status_hook", |error| {
        error.contains("reload failed") && error.contains("broken on purpose")
    })
    .await;

    // The old version still rewrites: the hook sends alice to the briefing.
    let sid = server.admin_sid().await;
    let alice = server
        .call(&sid, "agents.setStatus", "[2, 1, \"\"]")
        .await
        .expect("agents.setStatus");
    assert_eq!(alice["status"], 2, "{alice}");
    // Traffic through every kind of registration; the numbers and charts
    // follow without a reload of the page.
    for round in 0..8 {
        let status = [3, 1][round % 2];
        server
            .call(&sid, "agents.setStatus", &format!("[2, {status}, \"\"]"))
            .await
            .expect("agents.setStatus");
        server
            .call(&sid, "config.users.get", "[2]")
            .await
            .expect("config.users.get");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let calls = wait_text(
        &browser,
        &server,
        "#registrations-table tr[data-key^='status_hook|'] td:nth-child(5)",
        |calls| calls.parse::<u64>().is_ok_and(|calls| calls >= 9),
    )
    .await;
    assert!(calls.parse::<u64>().is_ok(), "{calls}");
    screenshot(&browser, "plugins").await;

    // Unload and load again, as `ucs plugins unload` and `load` do: an
    // unloaded plugin whose file is there is listed stopped, with Load.
    click(&browser, "#unload-example").await;
    wait_text(
        &browser,
        &server,
        "#plugin-example td:nth-child(2)",
        |state| state == "stopped",
    )
    .await;
    wait_text(&browser, &server, "#reload-example", |label| {
        label == "Load"
    })
    .await;
    click(&browser, "#reload-example").await;
    wait_text(
        &browser,
        &server,
        "#plugin-example td:nth-child(2)",
        |state| state == "running",
    )
    .await;

    open_page(&browser, "audit").await;
    let audit = wait_text(&browser, &server, "#audit-table tbody", |rows| {
        rows.contains("plugin_reload") && rows.contains("status_rewrite")
    })
    .await;
    assert!(
        audit.contains("example") && audit.contains("plugin_unload"),
        "{audit}"
    );
    // Filtered by plugin, the others' records are hidden.
    click(&browser, "#audit-plugin option[value='example']").await;
    let filtered = wait_text(&browser, &server, "#audit-table tbody", |rows| {
        !rows.contains("status_hook")
    })
    .await;
    assert!(filtered.contains("plugin_reload"), "{filtered}");
    click(&browser, "#audit-plugin option[value='']").await;
    wait_text(&browser, &server, "#audit-table tbody", |rows| {
        rows.contains("status_hook")
    })
    .await;
    screenshot(&browser, "audit").await;
}

/// Item 5: an agent's status change made elsewhere (over gRPC) arrives on
/// the board live, from the event stream, with the status hook's rewrite
/// shown as requested versus applied; the events page shows the stream.
#[tokio::test]
async fn an_agents_status_change_arrives_live_with_the_hooks_rewrite() {
    let Some(browser) = browser().await else {
        return;
    };
    let (server, url) = server_with_console().await;
    log_in(&browser, &server, &url, "admin", common::ADMIN_PASSWORD).await;
    open_page(&browser, "agents").await;
    wait_text(&browser, &server, "#agent-3 td:nth-child(4)", |status| {
        status == "AGENT_OFFLINE"
    })
    .await;
    wait_text(&browser, &server, "#live", |live| live == "live").await;

    let sid = server.admin_sid().await;
    server
        .call(&sid, "agents.setStatus", "[3, 1, \"\"]")
        .await
        .expect("agents.setStatus");
    wait_text(&browser, &server, "#agent-3 td:nth-child(4)", |status| {
        status == "AGENT_AUX"
    })
    .await;
    let reason = wait_text(&browser, &server, "#agent-3 td:nth-child(5)", |reason| {
        !reason.is_empty()
    })
    .await;
    let rewrite = wait_text(&browser, &server, "#agent-3 td:nth-child(6)", |rewrite| {
        !rewrite.is_empty()
    })
    .await;
    assert_eq!(
        rewrite,
        format!("AGENT_READY \"\" → AGENT_AUX \"{reason}\""),
        "requested versus applied"
    );
    // Then bob goes busy from the board itself; the answer says so.
    click(&browser, "#set-status-3 option[value='3']").await;
    click(&browser, "#set-3").await;
    wait_text(&browser, &server, "#agent-3 td:nth-child(4)", |status| {
        status == "AGENT_BUSY"
    })
    .await;
    screenshot(&browser, "agents").await;

    open_page(&browser, "events").await;
    wait_text(&browser, &server, "#events-table tbody", |rows| {
        rows.contains("agent.status") && rows.contains("audit.status_rewrite")
    })
    .await;
    screenshot(&browser, "events").await;
}

/// Item 5: a wrong password is refused, and an agent who logs in sees the
/// board but is refused the plugins and the audit trail, with the API's
/// own answer.
#[tokio::test]
async fn a_non_superuser_is_refused_what_the_api_refuses() {
    let Some(browser) = browser().await else {
        return;
    };
    let (server, url) = server_with_console().await;
    browser.client.goto(&url).await.expect("the console opens");
    type_into(&browser, "#username", "alice").await;
    type_into(&browser, "#password", "not-her-password").await;
    click(&browser, "#login-button").await;
    wait_text(&browser, &server, "#login-error", |error| {
        error.contains("UNAUTHENTICATED")
    })
    .await;

    log_in(&browser, &server, &url, "alice", common::DEMO_PASSWORD).await;
    // An agent starts on the board, which any session may read.
    wait_text(&browser, &server, "#agent-2 td:nth-child(4)", |status| {
        status == "AGENT_OFFLINE"
    })
    .await;
    open_page(&browser, "plugins").await;
    let refused = wait_text(&browser, &server, "#plugins-message", |message| {
        message.contains("PERMISSION_DENIED")
    })
    .await;
    assert!(refused.contains("alice"), "{refused}");
    let rows = browser
        .client
        .find_all(Locator::Css("#plugins-table tbody tr"))
        .await
        .expect("the plugins table");
    assert!(rows.is_empty(), "an agent sees no plugin");
    open_page(&browser, "audit").await;
    wait_text(&browser, &server, "#audit-message", |message| {
        message.contains("superusers only")
    })
    .await;
    // The gateway itself refuses, whatever the page shows.
    let answer = browser
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch('api/call', {method: 'POST', headers: {Authorization: 'Bearer ' +
                 sessionStorage.getItem('ucs.sid')}, body: JSON.stringify({method: 'audit.list'})})
               .then((answer) => answer.json().then((body) => done([answer.status, body.code])));",
            Vec::new(),
        )
        .await
        .expect("a fetch from the page");
    assert_eq!(answer, serde_json::json!([403, "PERMISSION_DENIED"]));

    // A session closed elsewhere (here over gRPC) ends the page's event
    // stream within a second, and the page asks to log in again.
    let sid = browser
        .client
        .execute("return sessionStorage.getItem('ucs.sid');", Vec::new())
        .await
        .expect("the page's sid");
    server
        .auth()
        .logout(ucs_grpc::pb::LogoutRequest {
            sid: sid.as_str().expect("a sid").to_owned(),
        })
        .await
        .expect("Auth.Logout");
    wait_text(&browser, &server, "#login-error", |error| {
        error.contains("session ended")
    })
    .await;
    // And the page's own button logs out.
    log_in(&browser, &server, &url, "alice", common::DEMO_PASSWORD).await;
    click(&browser, "#logout").await;
    wait_text(&browser, &server, "#login-error", |error| {
        error == "Logged out."
    })
    .await;
}

/// One HTTP/1.1 POST of `body` to `path`, answered whole.
fn http_post(address: &str, path: &str, headers: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("connect over HTTP");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    response
}

/// Off by default: `--metrics-listen` alone serves no console, and
/// `--console` without it is refused at start, saying what to add.
#[tokio::test]
async fn the_console_is_served_only_when_asked() {
    let address = common::free_address();
    let server = Server::builder()
        .arg("--metrics-listen")
        .arg(&address)
        .start()
        .await;
    let answer = common::http_get(&address, "/console/");
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    drop(server);

    let data = tempfile::tempdir().expect("temp dir");
    let refused = Command::new(common::ucs_binary())
        .arg("serve")
        .arg("--data-dir")
        .arg(data.path())
        .arg("--console")
        .output()
        .expect("ucs serve runs");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--metrics-listen"), "{stderr}");
}

/// The pages carry a policy that allows no inline script and nothing from
/// elsewhere; API answers are never cached, and a call without a session,
/// with a bad one or with a malformed body gets the API's answer.
#[tokio::test]
async fn the_gateway_answers_with_the_apis_codes_and_is_never_cached() {
    let (_server, url) = server_with_console().await;
    let address = url
        .trim_start_matches("http://")
        .trim_end_matches("/console/")
        .to_owned();
    let page = common::http_get(&address, "/console/").to_lowercase();
    assert!(page.starts_with("http/1.1 200"), "{page}");
    assert!(
        page.contains("content-security-policy: default-src 'self'"),
        "{page}"
    );
    let script = common::http_get(&address, "/console/app.js");
    assert!(script.contains("EventSource"), "{script}");

    let call = r#"{"method": "agents.list"}"#;
    let anonymous = http_post(&address, "/console/api/call", "", call);
    assert!(anonymous.starts_with("HTTP/1.1 401"), "{anonymous}");
    assert!(anonymous.contains("UNAUTHENTICATED"), "{anonymous}");
    let stranger = http_post(
        &address,
        "/console/api/call",
        "Authorization: Bearer not-a-session\r\n",
        call,
    );
    assert!(stranger.starts_with("HTTP/1.1 401"), "{stranger}");

    let login = http_post(
        &address,
        "/console/api/login",
        "",
        &format!(
            r#"{{"username": "admin", "password": "{}"}}"#,
            common::ADMIN_PASSWORD
        ),
    );
    assert!(login.starts_with("HTTP/1.1 200"), "{login}");
    let body = login.split("\r\n\r\n").nth(1).expect("a body");
    let sid = serde_json::from_str::<serde_json::Value>(body).expect("JSON")["sid"]
        .as_str()
        .expect("a sid")
        .to_owned();
    let bearer = format!("Authorization: Bearer {sid}\r\n");
    let agents = http_post(&address, "/console/api/call", &bearer, call);
    assert!(agents.starts_with("HTTP/1.1 200"), "{agents}");
    assert!(
        agents.to_lowercase().contains("cache-control: no-store"),
        "{agents}"
    );
    assert!(agents.contains("\"alice\""), "{agents}");
    for (body, status, code) in [
        ("not json", "400", "INVALID_ARGUMENT"),
        (r#"{"method": "no.such"}"#, "404", "UNIMPLEMENTED"),
        (
            r#"{"method": "plugins.load", "params": ["nope"]}"#,
            "404",
            "NOT_FOUND",
        ),
        // The Middleware example forbids removing users.
        (
            r#"{"method": "config.users.delete", "params": [3]}"#,
            "403",
            "PERMISSION_DENIED",
        ),
    ] {
        let answer = http_post(&address, "/console/api/call", &bearer, body);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")) && answer.contains(code),
            "{body}: {answer}"
        );
    }

    // The event stream checks before it streams: the session, the names,
    // and audit events for superusers only, as Events.Subscribe does.
    let events = "/console/api/events";
    let no_session = common::http_get(&address, &format!("{events}?events=agent.status"));
    assert!(no_session.starts_with("HTTP/1.1 401"), "{no_session}");
    let unknown = common::http_get(&address, &format!("{events}?sid={sid}&events=nope"));
    assert!(
        unknown.starts_with("HTTP/1.1 400") && unknown.contains("unknown event"),
        "{unknown}"
    );
    let login = http_post(
        &address,
        "/console/api/login",
        "",
        &format!(
            r#"{{"username": "alice", "password": "{}"}}"#,
            common::DEMO_PASSWORD
        ),
    );
    let body = login.split("\r\n\r\n").nth(1).expect("a body");
    let alice = serde_json::from_str::<serde_json::Value>(body).expect("JSON")["sid"]
        .as_str()
        .expect("a sid")
        .to_owned();
    let audit = common::http_get(
        &address,
        &format!("{events}?sid={alice}&events=agent.status%2Caudit.plugin_load"),
    );
    assert!(
        audit.starts_with("HTTP/1.1 403") && audit.contains("audit.plugin_load"),
        "{audit}"
    );
}

/// Failed console logins count in the very throttle gRPC logins use: past
/// the free failures, even the right password over gRPC from the same
/// address waits.
#[tokio::test]
async fn console_and_grpc_logins_share_one_throttle() {
    let (server, url) = server_with_console().await;
    let address = url
        .trim_start_matches("http://")
        .trim_end_matches("/console/")
        .to_owned();
    for _ in 0..6 {
        let answer = http_post(
            &address,
            "/console/api/login",
            "",
            r#"{"username": "admin", "password": "wrong"}"#,
        );
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    }
    let throttled = http_post(
        &address,
        "/console/api/login",
        "",
        &format!(
            r#"{{"username": "admin", "password": "{}"}}"#,
            common::ADMIN_PASSWORD
        ),
    );
    assert!(throttled.starts_with("HTTP/1.1 429"), "{throttled}");
    assert!(
        throttled.to_lowercase().contains("retry-after:"),
        "{throttled}"
    );
    let status = server
        .auth()
        .login(ucs_grpc::pb::LoginRequest {
            username: "admin".into(),
            password: common::ADMIN_PASSWORD.into(),
        })
        .await
        .expect_err("throttled over gRPC too");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
}

/// Firefox (Debian's `firefox-esr`) driven over WebDriver BiDi on its own
/// remote port: Debian ships no geckodriver. Killed, with its process
/// group, on drop.
struct Firefox {
    child: Child,
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    context: String,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Drop for Firefox {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

impl Firefox {
    /// A headless Firefox with a BiDi session and its first tab, or `None`
    /// (skipped) when firefox-esr is missing.
    async fn start() -> Option<Firefox> {
        if !common::installed("firefox-esr", "firefox-esr") {
            return None;
        }
        let profile = tempfile::tempdir().expect("a profile directory");
        let address = common::free_address();
        let port = address.rsplit(':').next().expect("a port").to_owned();
        let child = Command::new("firefox-esr")
            .args([
                "--headless",
                "--no-remote",
                "--remote-debugging-port",
                &port,
            ])
            .arg("--profile")
            .arg(profile.path())
            .arg("about:blank")
            .env("MOZ_CRASHREPORTER_DISABLE", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("firefox-esr starts");
        let started = Instant::now();
        let socket = loop {
            match tokio_tungstenite::connect_async(format!("ws://{address}/session")).await {
                Ok((socket, _)) => break socket,
                Err(err) if started.elapsed() < WAIT => {
                    let _ = err;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(err) => panic!("no WebDriver BiDi endpoint from Firefox at {address}: {err}"),
            }
        };
        let mut firefox = Firefox {
            child,
            socket,
            context: String::new(),
            next_id: 0,
            _profile: profile,
        };
        firefox
            .command("session.new", serde_json::json!({ "capabilities": {} }))
            .await;
        let tree = firefox
            .command("browsingContext.getTree", serde_json::json!({}))
            .await;
        tree["contexts"][0]["context"]
            .as_str()
            .expect("a browsing context")
            .clone_into(&mut firefox.context);
        Some(firefox)
    }

    /// Sends one BiDi command and returns its result, passing over the
    /// events that come in between.
    async fn command(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        use futures_util::{SinkExt as _, StreamExt as _};
        use tokio_tungstenite::tungstenite::Message;
        self.next_id += 1;
        let id = self.next_id;
        let command = serde_json::json!({ "id": id, "method": method, "params": params });
        self.socket
            .send(Message::text(command.to_string()))
            .await
            .expect("send a BiDi command");
        loop {
            let next = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method}"));
            let Some(message) = next else {
                panic!("Firefox closed the session during {method}");
            };
            let message = message.expect("a BiDi message");
            let Message::Text(text) = message else {
                continue;
            };
            let answer: serde_json::Value = serde_json::from_str(&text).expect("BiDi JSON");
            if answer["id"] != id {
                continue;
            }
            assert!(answer.get("error").is_none(), "{method}: {answer}");
            return answer["result"].clone();
        }
    }

    /// Evaluates `expression` in the page; its value, as BiDi describes it.
    async fn eval(&mut self, expression: &str) -> serde_json::Value {
        let context = self.context.clone();
        self.command(
            "script.evaluate",
            serde_json::json!({
                "expression": expression,
                "target": { "context": context },
                "awaitPromise": true,
            }),
        )
        .await["result"]["value"]
            .clone()
    }

    /// Waits until the text of `css` satisfies `wanted`; returns it.
    async fn wait_text(
        &mut self,
        server: &Server,
        css: &str,
        wanted: impl Fn(&str) -> bool,
    ) -> String {
        let expression = format!(
            "document.querySelector({}) ? document.querySelector({0}).textContent.trim() : ''",
            serde_json::Value::from(css)
        );
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < WAIT {
            last = self
                .eval(&expression)
                .await
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if wanted(&last) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "{css} never showed what was wanted in Firefox; last it said {last:?}; server log:\n{}",
            server.log()
        );
    }
}

/// Item 4: the page works in Firefox too: log in, see the four example
/// plugins running, and watch an agent's status change arrive live from the
/// event stream (EventSource, fetch and sessionStorage as Firefox has them).
#[tokio::test]
async fn the_console_works_in_firefox() {
    let Some(mut firefox) = Firefox::start().await else {
        return;
    };
    let (server, url) = server_with_console().await;
    let context = firefox.context.clone();
    firefox
        .command(
            "browsingContext.navigate",
            serde_json::json!({ "context": context, "url": url, "wait": "complete" }),
        )
        .await;
    firefox
        .wait_text(&server, "#login-button", |text| text == "Log in")
        .await;
    firefox
        .eval(&format!(
            "document.querySelector('#username').value = 'admin';
             document.querySelector('#password').value = {};
             document.querySelector('#login-button').click(); true",
            serde_json::Value::from(common::ADMIN_PASSWORD)
        ))
        .await;
    firefox
        .wait_text(&server, "#whoami", |text| text.starts_with("admin"))
        .await;
    for plugin in ["example", "middleware", "shared_data_hook", "status_hook"] {
        let css = format!("#plugin-{plugin} td:nth-child(2)");
        firefox
            .wait_text(&server, &css, |state| state == "running")
            .await;
    }
    firefox
        .eval("document.querySelector('#nav-agents').click(); true")
        .await;
    firefox
        .wait_text(&server, "#agent-3 td:nth-child(4)", |status| {
            status == "AGENT_OFFLINE"
        })
        .await;
    firefox
        .wait_text(&server, "#live", |live| live == "live")
        .await;
    let sid = server.admin_sid().await;
    server
        .call(&sid, "agents.setStatus", "[3, 1, \"\"]")
        .await
        .expect("agents.setStatus");
    // The status hook rewrites a first READY to AUX: the board shows what
    // was applied, and the rewrite.
    firefox
        .wait_text(&server, "#agent-3 td:nth-child(4)", |status| {
            status == "AGENT_AUX"
        })
        .await;
    firefox
        .wait_text(&server, "#agent-3 td:nth-child(6)", |rewrite| {
            rewrite.starts_with("AGENT_READY")
        })
        .await;
}
