//! Persistence (issue 5): users and shared data survive restarts and
//! `kill -9`; agent statuses and sessions do not; bad data directories stop
//! the server at start with a clear message, never a silent reset.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ADMIN_PASSWORD, Server, ucs_binary};
use nix::sys::signal::Signal;
use tonic::Code;

/// What the clients had acknowledged when the server died.
#[derive(Default)]
struct Acknowledged {
    /// Usernames whose `config.users.add` returned.
    users: Vec<String>,
    /// The last value each client's shared-data key was acknowledged at.
    shared: BTreeMap<String, i64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_load_loses_no_acknowledged_write() {
    let data = tempfile::tempdir().expect("data dir");
    let mut first = Server::builder().data_dir(data.path()).start().await;
    let sid = first.admin_sid().await;
    let acknowledged = Arc::new(Mutex::new(Acknowledged::default()));

    let clients: Vec<_> = (0..4)
        .map(|client| {
            let api = first.api();
            let sid = sid.clone();
            let acknowledged = Arc::clone(&acknowledged);
            tokio::spawn(async move {
                let mut api = api;
                for round in 0.. {
                    let username = format!("c{client}u{round}");
                    let add = ucs_grpc::pb::CallRequest {
                        sid: sid.clone(),
                        method: "config.users.add".to_owned(),
                        args_json: format!(
                            r#"[{{"username": "{username}", "password": "password-{username}", "agent": true}}]"#
                        ),
                    };
                    match api.call(add).await {
                        Ok(_) => {}
                        // The server died: that is the point of the test.
                        Err(status) if status.code() == Code::Unavailable || status.code() == Code::Unknown || status.code() == Code::Cancelled => return,
                        Err(status) => panic!("config.users.add failed: {status}"),
                    }
                    acknowledged.lock().expect("lock").users.push(username);
                    let key = format!("client{client}");
                    let set = ucs_grpc::pb::CallRequest {
                        sid: sid.clone(),
                        method: "shared.set".to_owned(),
                        args_json: format!(r#"["{key}", {{"round": {round}, "{round}": [1.5, null]}}]"#),
                    };
                    match api.call(set).await {
                        Ok(_) => {}
                        Err(status) if status.code() == Code::Unavailable || status.code() == Code::Unknown || status.code() == Code::Cancelled => return,
                        Err(status) => panic!("shared.set failed: {status}"),
                    }
                    acknowledged.lock().expect("lock").shared.insert(key, round);
                }
            })
        })
        .collect();

    // Let the load run, then kill the server in the middle of it.
    let started = Instant::now();
    while acknowledged.lock().expect("lock").users.len() < 40
        && started.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.signal(Signal::SIGKILL);
    assert!(
        first.wait_exit(Duration::from_secs(10)).await.is_some(),
        "kill -9 ends it"
    );
    for client in clients {
        client.await.expect("client task");
    }
    let acknowledged = std::mem::take(&mut *acknowledged.lock().expect("lock"));
    assert!(
        acknowledged.users.len() >= 40,
        "the load ran: {}",
        acknowledged.users.len()
    );

    let second = Server::builder().data_dir(data.path()).start().await;
    let sid = second.admin_sid().await;
    let users = second
        .call(&sid, "config.users.get", "")
        .await
        .expect("users");
    let stored: Vec<&str> = users
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|user| user["username"].as_str())
        .collect();
    for username in &acknowledged.users {
        assert!(
            stored.contains(&username.as_str()),
            "acknowledged user {username} was lost"
        );
    }
    for (key, round) in &acknowledged.shared {
        let data = second
            .call(&sid, "shared.get", &format!(r#"["{key}"]"#))
            .await
            .expect("shared.get");
        let stored_round = data["round"].as_i64().expect("round");
        // The write in flight when the server died may or may not be there;
        // every acknowledged one is, and nothing half-written is.
        assert!(
            stored_round == *round || stored_round == round + 1,
            "{key}: acknowledged {round}, stored {data}"
        );
        assert_eq!(
            data[stored_round.to_string()],
            serde_json::json!([1.5, null])
        );
    }
    // Logins work with the stored password hashes.
    for username in acknowledged.users.iter().rev().take(4) {
        second
            .login(username, &format!("password-{username}"))
            .await;
    }
}

#[tokio::test]
async fn statuses_and_sessions_do_not_survive_a_restart() {
    let data = tempfile::tempdir().expect("data dir");
    let mut first = Server::builder().data_dir(data.path()).demo().start().await;
    let sid = first.admin_sid().await;
    let alice = first.user_id("alice").await;
    first
        .call(&sid, "agents.setStatus", &format!("[{alice}, 1, \"\"]"))
        .await
        .expect("READY");
    first.signal(Signal::SIGTERM);
    assert!(first.wait_exit(Duration::from_secs(15)).await.is_some());

    let second = Server::builder().data_dir(data.path()).start().await;
    let stale = second
        .call(&sid, "agents.list", "")
        .await
        .expect_err("the old session is gone");
    assert_eq!(stale.code(), Code::Unauthenticated);
    let sid = second.admin_sid().await;
    let agents = second.call(&sid, "agents.list", "").await.expect("agents");
    let alice_now = agents
        .as_array()
        .expect("list")
        .iter()
        .find(|agent| agent["id"] == alice)
        .expect("alice is still an agent")
        .clone();
    assert_eq!(alice_now["status"], 0, "every agent starts OFFLINE");
}

/// Runs `ucs serve` on `data_dir` expecting it to refuse to start; returns
/// its exit code and what it printed.
fn serve_expecting_failure(data_dir: &Path) -> (Option<i32>, String) {
    let plugins = tempfile::tempdir().expect("plugins dir");
    let mut child = Command::new(ucs_binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--plugins-dir"])
        .arg(plugins.path())
        .arg("--data-dir")
        .arg(data_dir)
        .env("UCS_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ucs serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("ucs serve kept running on a bad data dir");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output");
    let text = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    (output.status.code(), text)
}

#[tokio::test]
async fn a_data_dir_that_cannot_be_created_is_refused() {
    let root = tempfile::tempdir().expect("root");
    let file = root.path().join("plain-file");
    std::fs::write(&file, "not a directory").expect("file");
    let (code, output) = serve_expecting_failure(&file.join("data"));
    assert_ne!(code, Some(0));
    assert!(
        output.contains("data dir") || output.contains("data directory"),
        "{output}"
    );
}

#[tokio::test]
async fn a_data_dir_in_use_by_another_ucs_is_refused() {
    let data = tempfile::tempdir().expect("data dir");
    let running = Server::builder().data_dir(data.path()).start().await;
    let (code, output) = serve_expecting_failure(data.path());
    assert_ne!(code, Some(0));
    assert!(output.contains("in use by another ucs process"), "{output}");
    drop(running);
}

#[tokio::test]
async fn a_corrupt_database_is_refused_and_left_alone() {
    let data = tempfile::tempdir().expect("data dir");
    let database = data.path().join("ucs.db");
    std::fs::write(&database, b"this is not a SQLite database, it is garbage").expect("db");
    let (code, output) = serve_expecting_failure(data.path());
    assert_ne!(code, Some(0));
    assert!(output.contains("is corrupt"), "{output}");
    assert_eq!(
        std::fs::read(&database).expect("db"),
        b"this is not a SQLite database, it is garbage",
        "never a silent reset"
    );
}

#[tokio::test]
async fn a_database_from_a_newer_ucs_is_refused() {
    let data = tempfile::tempdir().expect("data dir");
    let mut first = Server::builder().data_dir(data.path()).start().await;
    first.signal(Signal::SIGTERM);
    assert!(first.wait_exit(Duration::from_secs(15)).await.is_some());
    let connection = rusqlite::Connection::open(data.path().join("ucs.db")).expect("open db");
    connection
        .pragma_update(None, "user_version", 999)
        .expect("set version");
    drop(connection);
    let (code, output) = serve_expecting_failure(data.path());
    assert_ne!(code, Some(0));
    assert!(output.contains("newer than this ucs supports"), "{output}");
}
