//! Every status code of SPEC section 9 that needs no plugin, reached through
//! the real binary: one table of calls and the status each must get.

mod common;

use common::{DEMO_PASSWORD, Server};
use tonic::{Code, Status};
use tonic_types::StatusExt;
use ucs_grpc::pb;

/// Whose session a call uses.
#[derive(Clone, Copy)]
enum Who {
    /// User 1, a superuser.
    Admin,
    /// A demo agent, not a superuser.
    Alice,
    /// A sid no login ever returned.
    Nobody,
}

/// One gRPC call.
enum Call {
    Api(Who, &'static str, &'static str),
    Login(&'static str, &'static str),
    Logout(Who),
    Load(Who, &'static str),
    Unload(Who, &'static str),
    List(Who),
    Subscribe(Who, &'static [&'static str]),
}

/// What the status must be.
struct Expect {
    code: Code,
    /// Text the message must contain.
    message: &'static str,
    /// For INVALID_ARGUMENT: the field the BadRequest details must name.
    bad_field: Option<&'static str>,
}

const fn code(code: Code, message: &'static str) -> Expect {
    Expect {
        code,
        message,
        bad_field: None,
    }
}

const fn bad_field(field: &'static str) -> Expect {
    Expect {
        code: Code::InvalidArgument,
        message: field,
        bad_field: Some(field),
    }
}

struct Sessions {
    admin: String,
    alice: String,
}

impl Sessions {
    fn sid(&self, who: Who) -> String {
        match who {
            Who::Admin => self.admin.clone(),
            Who::Alice => self.alice.clone(),
            Who::Nobody => "0123456789abcdef0123456789abcdef".to_owned(),
        }
    }
}

/// Runs `call` and returns its error status; a success is a test failure.
async fn status_of(server: &Server, sessions: &Sessions, call: &Call) -> Result<Status, String> {
    let status = match call {
        Call::Api(who, method, args_json) => server
            .api()
            .call(pb::CallRequest {
                sid: sessions.sid(*who),
                method: (*method).to_owned(),
                args_json: (*args_json).to_owned(),
            })
            .await
            .map(|r| format!("{:?}", r.into_inner())),
        Call::Login(username, password) => server
            .auth()
            .login(pb::LoginRequest {
                username: (*username).to_owned(),
                password: (*password).to_owned(),
            })
            .await
            .map(|r| format!("{:?}", r.into_inner())),
        Call::Logout(who) => server
            .auth()
            .logout(pb::LogoutRequest {
                sid: sessions.sid(*who),
            })
            .await
            .map(|r| format!("{:?}", r.into_inner())),
        Call::Load(who, name) => server
            .plugins()
            .load(pb::PluginRequest {
                sid: sessions.sid(*who),
                name: (*name).to_owned(),
            })
            .await
            .map(|r| format!("{:?}", r.into_inner())),
        Call::Unload(who, name) => server
            .plugins()
            .unload(pb::PluginRequest {
                sid: sessions.sid(*who),
                name: (*name).to_owned(),
            })
            .await
            .map(|r| format!("{:?}", r.into_inner())),
        Call::List(who) => server
            .plugins()
            .list(pb::ListPluginsRequest {
                sid: sessions.sid(*who),
            })
            .await
            .map(|r| format!("{:?}", r.into_inner())),
        Call::Subscribe(who, events) => server
            .events()
            .subscribe(pb::SubscribeRequest {
                sid: sessions.sid(*who),
                events: events.iter().map(|e| (*e).to_owned()).collect(),
            })
            .await
            .map(|_| "a stream".to_owned()),
    };
    match status {
        Ok(answer) => Err(format!("succeeded with {answer}")),
        Err(status) => Ok(status),
    }
}

fn check(status: &Status, expect: &Expect) -> Result<(), String> {
    if status.code() != expect.code {
        return Err(format!("expected {:?}, got {status:?}", expect.code));
    }
    if !status.message().contains(expect.message) {
        return Err(format!(
            "message {:?} lacks {:?}",
            status.message(),
            expect.message
        ));
    }
    if let Some(field) = expect.bad_field {
        let message: serde_json::Value = serde_json::from_str(status.message())
            .map_err(|err| format!("message {:?} is not JSON: {err}", status.message()))?;
        if message.get(field).is_none() {
            return Err(format!("message {message} has no field {field}"));
        }
        let bad_request = status
            .get_details_bad_request()
            .ok_or_else(|| format!("no BadRequest details in {status:?}"))?;
        if !bad_request
            .field_violations
            .iter()
            .any(|v| v.field == field)
        {
            return Err(format!("BadRequest {bad_request:?} does not name {field}"));
        }
    }
    Ok(())
}

#[tokio::test]
async fn section_9_status_codes() {
    let server = Server::demo().await;
    let sessions = Sessions {
        admin: server.admin_sid().await,
        alice: server.login("alice", DEMO_PASSWORD).await,
    };
    // Deeper than ucs_core::value::MAX_DEPTH (64).
    let too_deep: &'static str =
        Box::leak(format!("[\"x\", {}{}]", "[".repeat(70), "]".repeat(70)).into_boxed_str());
    let cases: Vec<(&str, Call, Expect)> = vec![
        // UNAUTHENTICATED: unknown sid, bad login.
        (
            "api call with an unknown sid",
            Call::Api(Who::Nobody, "agents.list", ""),
            code(Code::Unauthenticated, "session"),
        ),
        // Issue 12 item 4: a failed login says so, not "expired session".
        (
            "wrong password",
            Call::Login("admin", "wrong-password"),
            code(Code::Unauthenticated, "wrong username or password"),
        ),
        (
            "unknown user",
            Call::Login("mallory", "password1"),
            code(Code::Unauthenticated, "wrong username or password"),
        ),
        (
            "logout of an unknown sid",
            Call::Logout(Who::Nobody),
            code(Code::Unauthenticated, "unknown or expired session"),
        ),
        (
            "plugins list with an unknown sid",
            Call::List(Who::Nobody),
            code(Code::Unauthenticated, ""),
        ),
        (
            "subscribe with an unknown sid",
            Call::Subscribe(Who::Nobody, &[]),
            code(Code::Unauthenticated, ""),
        ),
        // PERMISSION_DENIED: a non-superuser.
        (
            "subscribe to an audit event as an agent (issue 12 item 3)",
            Call::Subscribe(Who::Alice, &["audit.status_veto"]),
            code(Code::PermissionDenied, "alice"),
        ),
        (
            "config.users.get as an agent",
            Call::Api(Who::Alice, "config.users.get", "[]"),
            code(Code::PermissionDenied, "alice"),
        ),
        (
            "another agent's status",
            Call::Api(Who::Alice, "agents.setStatus", "[3, 1, \"\"]"),
            code(Code::PermissionDenied, "alice"),
        ),
        (
            "plugins list as an agent",
            Call::List(Who::Alice),
            code(Code::PermissionDenied, ""),
        ),
        (
            "plugins load as an agent",
            Call::Load(Who::Alice, "example"),
            code(Code::PermissionDenied, ""),
        ),
        // INVALID_ARGUMENT: malformed arguments and bad fields, with the
        // field dict as JSON and as BadRequest details.
        (
            "args_json that is not JSON",
            Call::Api(Who::Admin, "agents.list", "[1,"),
            bad_field("args_json"),
        ),
        (
            "args_json that is not an array",
            Call::Api(Who::Admin, "config.users.get", "{\"user_id\": 1}"),
            bad_field("args_json"),
        ),
        (
            "args_json nested too deep",
            Call::Api(Who::Admin, "shared.set", too_deep),
            bad_field("args_json"),
        ),
        (
            "a status outside AGENT_STATE_ENUM",
            Call::Api(Who::Admin, "agents.setStatus", "[2, 9, \"\"]"),
            bad_field("status"),
        ),
        (
            "a new user without a password",
            Call::Api(Who::Admin, "config.users.add", "[{\"username\": \"dave\"}]"),
            bad_field("password"),
        ),
        (
            "too many parameters",
            Call::Api(Who::Admin, "agents.list", "[1]"),
            bad_field("params"),
        ),
        (
            "an unknown event name",
            Call::Subscribe(Who::Admin, &["agent.status", "agent.lunch"]),
            bad_field("events"),
        ),
        // D1: no path ever leaves the plugins directory.
        (
            "a plugin name with a slash",
            Call::Load(Who::Admin, "a/b"),
            bad_field("plugin_name"),
        ),
        (
            "a plugin name with ..",
            Call::Load(Who::Admin, "../etc/passwd"),
            bad_field("plugin_name"),
        ),
        (
            "a plugin name that is ..",
            Call::Load(Who::Admin, ".."),
            bad_field("plugin_name"),
        ),
        (
            "unloading a plugin name with ..",
            Call::Unload(Who::Admin, "../example"),
            bad_field("plugin_name"),
        ),
        // FAILED_PRECONDITION: refused on purpose.
        (
            "deleting user 1",
            Call::Api(Who::Admin, "config.users.delete", "[1]"),
            code(Code::FailedPrecondition, ""),
        ),
        (
            "unloading a plugin that is not loaded",
            Call::Unload(Who::Admin, "example"),
            code(Code::FailedPrecondition, ""),
        ),
        // UNIMPLEMENTED: no such method.
        (
            "an unknown method",
            Call::Api(Who::Admin, "agents.dance", ""),
            code(Code::Unimplemented, "agents.dance"),
        ),
        // NOT_FOUND: unknown user, agent or plugin file.
        (
            "an unknown user id",
            Call::Api(Who::Admin, "config.users.get", "[999]"),
            code(Code::NotFound, "999"),
        ),
        (
            "an unknown agent id",
            Call::Api(Who::Admin, "agents.setStatus", "[999, 1, \"\"]"),
            code(Code::NotFound, "999"),
        ),
        (
            "an unknown plugin file",
            Call::Load(Who::Admin, "no_such_plugin"),
            code(Code::NotFound, "no_such_plugin"),
        ),
    ];

    let mut failures = Vec::new();
    for (name, call, expect) in &cases {
        let outcome = match status_of(&server, &sessions, call).await {
            Ok(status) => check(&status, expect),
            Err(message) => Err(message),
        };
        if let Err(message) = outcome {
            failures.push(format!("{name}: {message}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}\nserver log:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n"),
        server.log()
    );
}

#[tokio::test]
async fn logout_ends_the_session() {
    let server = Server::demo().await;
    let sid = server.admin_sid().await;
    server.call(&sid, "agents.list", "").await.unwrap();
    server
        .auth()
        .logout(pb::LogoutRequest { sid: sid.clone() })
        .await
        .unwrap();
    let status = server.call(&sid, "agents.list", "").await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn login_reports_the_user_and_whether_a_superuser() {
    let server = Server::demo().await;
    let admin = server
        .auth()
        .login(pb::LoginRequest {
            username: "admin".into(),
            password: common::ADMIN_PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((admin.user_id, admin.superuser), (1, true));
    assert_eq!(admin.sid.len(), 32);
    let alice = server
        .auth()
        .login(pb::LoginRequest {
            username: "alice".into(),
            password: DEMO_PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!alice.superuser);
}

#[tokio::test]
async fn messages_over_the_size_limit_are_refused() {
    let server = Server::demo().await;
    let sid = server.admin_sid().await;
    let big = format!(
        "[\"x\", \"{}\"]",
        "a".repeat(ucs_grpc::MAX_MESSAGE_BYTES + 1)
    );
    let status = server.call(&sid, "shared.set", &big).await.unwrap_err();
    // RESOURCE_EXHAUSTED, not tonic's own OUT_OF_RANGE (ucs-grpc `codec_status`).
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // The server is still fine afterwards.
    server.call(&sid, "agents.list", "").await.unwrap();
}

/// Issue 15 item 15: an error message repeats at most a bounded prefix of
/// what the caller sent, with an ellipsis and the full length, so the
/// `grpc-message` header stays far below a client's 16 KiB header limit and
/// the status keeps its SPEC section 9 code.
#[tokio::test]
async fn errors_echo_a_bounded_prefix_of_unbounded_input() {
    let server = Server::demo().await;
    let admin = server.admin_sid().await;
    let method = "a.".repeat(50_000);
    let event = "e".repeat(100_000);
    let plugin = "p".repeat(100_000);
    let unknown_fields = format!(
        "[{{\"username\": \"dave\", \"password\": \"password1\", {}}}]",
        (0..1000)
            .map(|n| format!("\"{n}{}\": 1", "k".repeat(1000)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let statuses = [
        (
            "method",
            server.call(&admin, &method, "").await.unwrap_err(),
            Code::Unimplemented,
            "(100000 chars)",
        ),
        (
            "event",
            server
                .events()
                .subscribe(pb::SubscribeRequest {
                    sid: admin.clone(),
                    events: vec![event.clone()],
                })
                .await
                .map(|_| ())
                .unwrap_err(),
            Code::InvalidArgument,
            "(100000 chars)",
        ),
        (
            "plugin",
            server
                .plugins()
                .load(pb::PluginRequest {
                    sid: admin.clone(),
                    name: plugin.clone(),
                })
                .await
                .unwrap_err(),
            Code::NotFound,
            "(100003 chars)",
        ),
        (
            "unknown fields",
            server
                .call(&admin, "config.users.add", &unknown_fields)
                .await
                .unwrap_err(),
            Code::InvalidArgument,
            "more unknown fields",
        ),
    ];
    for (what, status, code, says) in statuses {
        assert_eq!(status.code(), code, "{what}: {status:?}");
        assert!(
            status.message().len() < 2048,
            "{what}: a {} byte message",
            status.message().len()
        );
        assert!(status.message().contains(says), "{what}: {status:?}");
        assert!(status.message().contains('…'), "{what}: {status:?}");
    }
    server
        .call(&admin, "agents.list", "")
        .await
        .expect("still serving");
}
