//! Security and bad input through the real binary (issue 7): permissions,
//! session expiry, sid randomness, login throttling, TLS, and requests
//! built to hurt the server (oversized, deeply nested, invalid UTF-8).

mod common;

use std::time::Duration;

use common::{ADMIN_PASSWORD, DEMO_PASSWORD, Server};
use tonic::Code;
use tonic_types::StatusExt;
use ucs_grpc::pb;

/// Every method of SPEC section 8 that needs a superuser, with arguments
/// that would succeed for one.
const PRIVILEGED: [(&str, &str); 9] = [
    ("config.users.get", ""),
    ("config.users.get", "[1]"),
    (
        "config.users.add",
        r#"[{"username": "mallory", "displayname": "M", "password": "pw-123456", "agent": false}]"#,
    ),
    (
        "config.users.edit",
        r#"[{"id": 1, "displayname": "pwned"}]"#,
    ),
    ("config.users.delete", "[1]"),
    ("plugins.list", ""),
    ("plugins.load", r#"["canary"]"#),
    ("plugins.unload", r#"["canary"]"#),
    ("audit.list", ""),
];

#[tokio::test]
async fn a_non_superuser_is_refused_on_every_privileged_method() {
    let server = Server::builder()
        .demo()
        .plugin(
            "canary.py",
            "UCS_PLUGIN = 'C'\nclass C:\n    def __init__(self, ucs): pass\n",
        )
        .start()
        .await;
    let alice = server.login("alice", DEMO_PASSWORD).await;
    let bob = server.user_id("bob").await;
    let mut refused = Vec::new();
    let agent_of_another = format!("[{bob}, 1, \"\"]");
    let calls = PRIVILEGED
        .iter()
        .map(|(method, args)| (*method, (*args).to_owned()))
        .chain([("agents.setStatus", agent_of_another)]);
    for (method, args) in calls {
        match server.call(&alice, method, &args).await {
            Err(status) if status.code() == Code::PermissionDenied => refused.push(method),
            other => panic!("{method}({args}) as alice: {other:?}, expected PERMISSION_DENIED"),
        }
    }
    // The Plugins service is the same methods, middleware and checks included.
    let mut plugins = server.plugins();
    let request = |name: &str| pb::PluginRequest {
        sid: alice.clone(),
        name: name.to_owned(),
    };
    let load = plugins.load(request("canary")).await.unwrap_err();
    let unload = plugins.unload(request("canary")).await.unwrap_err();
    let list = plugins
        .list(pb::ListPluginsRequest { sid: alice.clone() })
        .await
        .unwrap_err();
    for status in [load, unload, list] {
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    // Nothing changed: user 1 is intact and the plugin still runs.
    let admin = server.admin_sid().await;
    let user = server
        .call(&admin, "config.users.get", "[1]")
        .await
        .expect("admin reads user 1");
    assert_eq!(user["superuser"], true, "{user}");
    assert_ne!(user["displayname"], "pwned", "{user}");
    assert_eq!(refused.len(), PRIVILEGED.len() + 1);
}

#[tokio::test]
async fn logged_out_and_expired_sessions_are_refused() {
    let server = Server::builder()
        .demo()
        .arg("--session-idle-timeout")
        .arg("1s")
        .start()
        .await;
    let unauthenticated = |result: Result<serde_json::Value, tonic::Status>| matches!(result, Err(status) if status.code() == Code::Unauthenticated);

    let logged_out = server.login("alice", DEMO_PASSWORD).await;
    server
        .auth()
        .logout(pb::LogoutRequest {
            sid: logged_out.clone(),
        })
        .await
        .expect("logout");
    assert!(unauthenticated(
        server.call(&logged_out, "agents.list", "").await
    ));

    // Used more often than the timeout, a session stays open...
    let busy = server.login("alice", DEMO_PASSWORD).await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        server
            .call(&busy, "agents.list", "")
            .await
            .expect("a busy session stays open");
    }
    // ...and left idle past it, it expires.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(unauthenticated(server.call(&busy, "agents.list", "").await));
    // An expired session cannot be used for events or logged out either.
    let subscribe = server
        .events()
        .subscribe(pb::SubscribeRequest {
            sid: busy.clone(),
            events: vec![],
        })
        .await
        .err()
        .map(|status| status.code());
    assert_eq!(subscribe, Some(Code::Unauthenticated));
}

#[tokio::test]
async fn sids_are_128_random_bits_and_distinct() {
    let server = Server::demo().await;
    let mut sids = std::collections::BTreeSet::new();
    for _ in 0..40 {
        sids.insert(server.admin_sid().await);
    }
    assert_eq!(sids.len(), 40, "every login gets a new sid");
    let mut ones = 0u32;
    for sid in &sids {
        assert_eq!(sid.len(), 32, "{sid}");
        let bits = u128::from_str_radix(sid, 16).expect("sid is hex");
        ones += bits.count_ones();
    }
    // 40 x 128 = 5120 bits; for random bits the share of ones lies within
    // 0.45-0.55 with overwhelming probability (about 7 standard deviations).
    let share = f64::from(ones) / 5120.0;
    assert!((0.45..0.55).contains(&share), "share of one bits {share}");
}

/// An Auth client whose connection comes from `source` (any 127.x address
/// reaches the server's loopback listener), so one test can play a guesser
/// and the account's owner at two addresses.
async fn auth_from(
    server: &Server,
    source: [u8; 4],
) -> pb::auth_client::AuthClient<tonic::transport::Channel> {
    let channel = server
        .endpoint()
        .local_address(Some(std::net::IpAddr::from(source)))
        .connect()
        .await
        .expect("connect from a second loopback address");
    pb::auth_client::AuthClient::new(channel)
}

/// Logs in `username` with `password` through `auth`.
async fn login_with(
    auth: &mut pb::auth_client::AuthClient<tonic::transport::Channel>,
    username: &str,
    password: &str,
) -> Result<pb::LoginResponse, tonic::Status> {
    auth.login(pb::LoginRequest {
        username: username.to_owned(),
        password: password.to_owned(),
    })
    .await
    .map(tonic::Response::into_inner)
}

/// Issue 15 item 11: the throttle slows the guesser, not the owner. Failed
/// logins lock a (user, source) pair: the guesser's address is refused for
/// that user, with RESOURCE_EXHAUSTED and a RetryInfo, even with the right
/// password; the owner at another address logs in at once, and so do the
/// guesser's colleagues behind the same address. Spraying usernames from one
/// address slows each further failure and locks out no one.
#[tokio::test]
async fn failed_logins_lock_the_guessers_pair_slow_its_failures_and_never_lock_out_the_owner() {
    let server = Server::demo().await;
    let mut guesser = auth_from(&server, [127, 0, 0, 1]).await;
    let mut owner = auth_from(&server, [127, 0, 0, 2]).await;

    // 5 free failures, then each failure locks (alice, 127.0.0.1).
    for attempt in 1..=6 {
        let status = login_with(&mut guesser, "alice", "guess")
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "attempt {attempt}");
    }
    let throttled = login_with(&mut guesser, "alice", DEMO_PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(throttled.code(), Code::ResourceExhausted, "{throttled:?}");
    assert!(
        throttled.message().contains("user 'alice' from 127.0.0.1"),
        "{throttled:?}"
    );
    let retry = throttled
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .expect("a RetryInfo detail");
    assert!(retry <= Duration::from_secs(1), "{retry:?}");
    // The owner, elsewhere, is not locked out (before: 'user alice' locked
    // everywhere); nor is a colleague at the guesser's address.
    login_with(&mut owner, "alice", DEMO_PASSWORD)
        .await
        .expect("alice from her own address");
    login_with(&mut guesser, "bob", DEMO_PASSWORD)
        .await
        .expect("bob behind the same address");
    // After the wait, the right password works from there too.
    tokio::time::sleep(retry + Duration::from_millis(100)).await;
    login_with(&mut guesser, "alice", DEMO_PASSWORD)
        .await
        .expect("alice after the wait");

    // Spraying: 20 failures per source are free (alice's 6 count), then
    // each failure is answered late; the right password never is refused.
    let mut slowest_late = Duration::ZERO;
    for attempt in 0..18 {
        let started = std::time::Instant::now();
        let status = login_with(&mut guesser, &format!("nobody{attempt}"), "guess")
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "spray {attempt}");
        if attempt >= 16 {
            slowest_late = slowest_late.max(started.elapsed());
        }
    }
    assert!(
        slowest_late >= Duration::from_millis(250),
        "failures past the allowance answered in {slowest_late:?}"
    );
    login_with(&mut guesser, "carol", DEMO_PASSWORD)
        .await
        .expect("carol behind the spraying address (before: the address was locked)");

    let log = server.log();
    assert!(
        log.contains("login failed for user 'alice' from 127.0.0.1"),
        "{log}"
    );
    assert!(log.contains("login throttled"), "{log}");
    assert!(log.contains("login failures slowed"), "{log}");
    assert!(
        !log.contains(DEMO_PASSWORD) || log.contains("demo mode"),
        "{log}"
    );
}

#[tokio::test]
async fn tls_serves_clients_that_trust_the_certificate_and_only_them() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("self-signed certificate");
    let cert = certified.cert.pem();
    let key = certified.signing_key.serialize_pem();
    let server = Server::builder().demo().tls(&cert, &key).start().await;
    assert!(server.url.starts_with("https://"));
    // The harness connected over TLS; a call works.
    let sid = server.admin_sid().await;
    server
        .call(&sid, "agents.list", "")
        .await
        .expect("a call over TLS");
    assert!(
        server.log().contains("serving gRPC (TLS)"),
        "{}",
        server.log()
    );

    // A plaintext client gets no answer.
    let plaintext = server.url.replace("https://", "http://");
    let refused = async {
        let channel = tonic::transport::Endpoint::from_shared(plaintext)
            .expect("url")
            .connect()
            .await
            .ok()?;
        pb::auth_client::AuthClient::new(channel)
            .login(pb::LoginRequest {
                username: "admin".into(),
                password: ADMIN_PASSWORD.into(),
            })
            .await
            .ok()
    };
    let answered = tokio::time::timeout(Duration::from_secs(10), refused)
        .await
        .ok()
        .flatten();
    assert!(answered.is_none(), "a plaintext login must not succeed");

    // The CLI client connects with --ca.
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &cert).expect("ca file");
    let output = std::process::Command::new(common::ucs_binary())
        .args(["login", "--server", &server.url, "--ca"])
        .arg(&ca)
        .args(["--user", "admin", "--password", ADMIN_PASSWORD])
        .env_remove("UCS_SID")
        .output()
        .expect("run ucs login");
    assert!(
        output.status.success(),
        "ucs login over TLS: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim().len(), 32);
}

/// `Api.Call` with its `args_json` as raw bytes, so a test can send what a
/// `string` field must never hold.
#[derive(Clone, PartialEq, prost::Message)]
struct RawCallRequest {
    #[prost(string, tag = "1")]
    sid: String,
    #[prost(string, tag = "2")]
    method: String,
    #[prost(bytes = "vec", tag = "3")]
    args_json: Vec<u8>,
}

async fn raw_call(server: &Server, request: RawCallRequest) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(server.channel());
    grpc.ready().await.expect("ready");
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/ucs.v1.Api/Call");
    grpc.unary::<_, pb::CallResponse, _>(
        tonic::Request::new(request),
        path,
        tonic_prost::ProstCodec::default(),
    )
    .await
    .expect_err("the call must fail")
}

#[tokio::test]
async fn bad_input_gets_a_status_and_never_a_crash() {
    let server = Server::demo().await;
    let sid = server.admin_sid().await;

    // Larger than MAX_MESSAGE_BYTES.
    let huge = format!("[\"{}\"]", "x".repeat(ucs_grpc::MAX_MESSAGE_BYTES + 1024));
    let oversized = server
        .call(&sid, "shared.set", &huge)
        .await
        .expect_err("oversized");
    // tonic's codec refuses it before UCS code runs, with OUT_OF_RANGE;
    // ucs-grpc's `codec_status` layer makes that RESOURCE_EXHAUSTED.
    assert_eq!(oversized.code(), Code::ResourceExhausted, "{oversized:?}");
    assert!(oversized.message().contains("too large"), "{oversized:?}");

    // Deeply nested JSON, far past the depth limit, in arrays and objects.
    for nested in [
        "[".repeat(100_000) + &"]".repeat(100_000),
        format!(
            "[\"id\", {}1{}]",
            "{\"a\":".repeat(50_000),
            "}".repeat(50_000)
        ),
    ] {
        let status = server
            .call(&sid, "shared.set", &nested)
            .await
            .expect_err("nested");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("args_json"), "{status:?}");
    }

    // Invalid UTF-8 in the `string` field args_json: prost refuses it while
    // decoding, before any UCS code runs, and tonic answers INTERNAL "failed
    // to decode Protobuf message"; `codec_status` makes it INVALID_ARGUMENT.
    let status = raw_call(
        &server,
        RawCallRequest {
            sid: sid.clone(),
            method: "agents.list".into(),
            args_json: vec![b'[', 0xff, 0xfe, b']'],
        },
    )
    .await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("decode"), "{status:?}");
    assert!(status.message().contains("UTF-8"), "{status:?}");

    // Valid UTF-8 that is not JSON, lone numbers, NUL bytes.
    for bad in ["\u{0}", "[1e999999]", "[\"\\ud800\"]", "{"] {
        let status = server.call(&sid, "shared.set", bad).await.expect_err(bad);
        assert_eq!(status.code(), Code::InvalidArgument, "{bad}: {status:?}");
    }
    // Issue 15 item 8 (D4): integers no 64 bits hold are refused with the
    // literal named, never stored as a rounded float; as the data of a
    // well-formed call, so it is the value that is refused, not the arity.
    for huge in [
        "18446744073709551616",
        "1180591620717411303425",
        "-9223372036854775809",
        "18446744073709551615",
    ] {
        let args = format!(r#"["huge", {{"n": [{huge}]}}]"#);
        let status = server
            .call(&sid, "shared.set", &args)
            .await
            .expect_err(huge);
        assert_eq!(status.code(), Code::InvalidArgument, "{huge}: {status:?}");
        assert!(
            status
                .message()
                .contains(&format!("integer '{huge}' does not fit in 64 bits")),
            "{huge}: {status:?}"
        );
    }
    let stored = server
        .call(&sid, "shared.get", r#"["huge"]"#)
        .await
        .expect("get");
    assert_eq!(stored, serde_json::json!({}), "nothing stored");

    // Still serving, and nothing panicked.
    server
        .call(&sid, "agents.list", "")
        .await
        .expect("still serving");
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

/// Issue 15 item 3: a plugin (in process) closes fds 1 and 2. The next
/// connections the server accepts may get those numbers; the server's log,
/// which names users, must still go to its own log, never to a stranger's
/// socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_closing_stdout_and_stderr_does_not_send_the_log_to_clients() {
    let server = Server::builder()
        .demo()
        .arg("--isolation=inprocess")
        .plugin(
            "fd_closer.py",
            "import os\nUCS_PLUGIN = 'C'\nclass C:\n    def __init__(self, ucs):\n        os.close(1)\n        os.close(2)\n",
        )
        .start()
        .await;
    let address = server
        .url
        .strip_prefix("http://")
        .expect("plaintext url")
        .to_owned();
    let strangers: Vec<std::net::TcpStream> = (0..2)
        .map(|_| std::net::TcpStream::connect(&address).expect("connect"))
        .collect();
    // Let the server accept them before it logs.
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.write_plugin("fd_broken.py", "UCS_PLUGIN = 'B'\nclass B(:\n");
    let sid = server.admin_sid().await;
    let _ = server
        .plugins()
        .load(pb::PluginRequest {
            sid,
            name: "fd_broken".into(),
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for mut stranger in strangers {
        stranger
            .set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let mut received = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stranger, &mut received);
        let text = String::from_utf8_lossy(&received);
        assert!(
            !text.contains("plugin") && !text.contains("admin"),
            "the server log went to a client's socket: {text}"
        );
    }
    assert!(
        server.log().contains("plugin failed to load"),
        "the server log stopped: {}",
        server.log()
    );
}

/// Issue 15 item 12: a session is granted for what its user was at login.
/// A password change closes every other session of that user (a stolen sid
/// stops working) and ends their event streams; so does taking `agent` or
/// `superuser` away. The session that made the change stays open, and an
/// edit that changes neither keeps every session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_or_role_change_closes_the_users_other_sessions_and_streams() {
    let server = Server::demo().await;
    let admin = server.admin_sid().await;
    let alice = server.user_id("alice").await;
    let stolen = server.login("alice", DEMO_PASSWORD).await;
    let own = server.login("alice", DEMO_PASSWORD).await;
    let mut stream = server
        .events()
        .subscribe(pb::SubscribeRequest {
            sid: stolen.clone(),
            events: Vec::new(),
        })
        .await
        .expect("subscribed")
        .into_inner();
    let edit = async |sid: &str, fields: &str| {
        server
            .call(
                sid,
                "config.users.edit",
                &format!("[{{\"id\": {alice}{fields}}}]"),
            )
            .await
            .expect("edited")
    };

    // Not a password or a role: nothing closes.
    edit(&admin, r#", "displayname": "Alice A.""#).await;
    server
        .call(&stolen, "agents.list", "")
        .await
        .expect("still open");

    edit(&admin, r#", "password": "new-pass-123""#).await;
    for sid in [&stolen, &own] {
        let refused = server.call(sid, "agents.list", "").await.unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    }
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("ended without a status"),
                Err(status) => break status,
            }
        }
    })
    .await
    .expect("the stream ends within 5 s");
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    assert!(ended.message().contains("session"), "{ended:?}");
    let log = server.log();
    assert!(
        log.contains("closed 2 session(s) of user 'alice': its password changed"),
        "{log}"
    );
    server
        .call(&admin, "agents.list", "")
        .await
        .expect("the admin's own session");

    // Taking `agent` away closes the new session too.
    let again = server.login("alice", "new-pass-123").await;
    edit(&admin, r#", "agent": false"#).await;
    let refused = server.call(&again, "agents.list", "").await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(
        server
            .log()
            .contains("session(s) of user 'alice': it is no longer an agent"),
        "{}",
        server.log()
    );

    // A user changing its own password keeps the session it did it from and
    // loses the others.
    let other_admin = server.admin_sid().await;
    server
        .call(
            &admin,
            "config.users.edit",
            r#"[{"id": 1, "password": "admin-pass-2"}]"#,
        )
        .await
        .expect("own password");
    server.call(&admin, "agents.list", "").await.expect("kept");
    let refused = server
        .call(&other_admin, "agents.list", "")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
}

/// Issue 17 item 7: `ucs --ca` accepts the server's self-signed `CA:TRUE`
/// certificate (what `openssl req -x509` makes by default; before:
/// refused, `CaUsedAsEndEntity`), a certificate signed by the CA it names,
/// and the `CA:FALSE` one of the TLS test above; and when it cannot connect
/// it says why (before: `transport error`).
#[tokio::test]
async fn ucs_ca_accepts_a_self_signed_ca_certificate_and_says_why_it_refuses() {
    let login = |url: &str, ca: &std::path::Path| {
        std::process::Command::new(common::ucs_binary())
            .args(["login", "--server", url, "--ca"])
            .arg(ca)
            .args(["--user", "admin", "--password", ADMIN_PASSWORD])
            .env_remove("UCS_SID")
            .output()
            .expect("run ucs login")
    };
    let dir = tempfile::tempdir().expect("temp dir");

    // A CA that did not sign the server's certificate.
    let served = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let server = Server::builder()
        .tls(&served.cert.pem(), &served.signing_key.serialize_pem())
        .start()
        .await;
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let other_ca = dir.path().join("other.pem");
    std::fs::write(&other_ca, other.cert.pem()).expect("ca file");
    let output = login(&server.url, &other_ca);
    assert_eq!(output.status.code(), Some(1));
    let message = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        message.contains("invalid peer certificate")
            && message.contains("not signed by the --ca certificate"),
        "{message}"
    );

    // A self-signed CA:TRUE certificate as the server's own.
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().expect("key");
    let ca_cert = params.self_signed(&key).expect("CA:TRUE cert");
    let (cert_path, key_path) = (dir.path().join("ca-true.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, ca_cert.pem()).expect("cert file");
    std::fs::write(&key_path, key.serialize_pem()).expect("key file");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let data_dir = tempfile::tempdir().expect("data dir");
    let mut serving = std::process::Command::new(common::ucs_binary())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--tls-cert")
        .arg(&cert_path)
        .arg("--tls-key")
        .arg(&key_path)
        .arg("--data-dir")
        .arg(data_dir.path())
        .env("UCS_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ucs serve");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let output = login(&format!("https://localhost:{port}"), &cert_path);
    let _ = serving.kill();
    let _ = serving.wait();
    assert!(
        output.status.success(),
        "CA:TRUE self-signed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim().len(), 32);

    // A server certificate signed by the CA that --ca names.
    let mut server_params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    server_params.is_ca = rcgen::IsCa::ExplicitNoCa;
    let server_key = rcgen::KeyPair::generate().expect("key");
    let issuer = rcgen::Issuer::new(params, key);
    let signed = server_params
        .signed_by(&server_key, &issuer)
        .expect("signed cert");
    let server = Server::builder()
        .tls(&signed.pem(), &server_key.serialize_pem())
        .trusting(&ca_cert.pem())
        .start()
        .await;
    let output = login(&server.url, &cert_path);
    assert!(
        output.status.success(),
        "signed by --ca: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
