//! SPEC section 8: every built-in method, its permission check, and bad
//! input that must give invalid-input (naming the field) or not-found,
//! never a panic. Also the hooks as seen through the API (H4, H5, S2, S3).

use std::any::Any;
use std::sync::Arc;

use ucs_api::ApiError;
use ucs_core::{
    Agent, AgentStatus, MapKey, Registrable, SharedDataHook, SharedVerdict, StatusHook,
    StatusVerdict, Value,
};

use crate::fixtures::{Expect, Server, check, plugin};

use Expect::{Denied, Invalid, NotFound, Processing, Success};

/// The fixture's ids, which the tables below write literally.
fn server() -> Server {
    let server = Server::new();
    assert_eq!((server.alice_id, server.bob_id), (2, 3));
    server
}

/// Runs each `(method, params, expect)` as the admin.
fn check_all(server: &Server, cases: &[(&str, &str, Expect<'_>)]) {
    for (method, params, expect) in cases {
        check(server, &server.admin, method, params, *expect);
    }
}

#[test]
fn agents_list_gives_agents_and_refuses_params() {
    let server = server();
    check_all(
        &server,
        &[
            (
                "agents.list",
                "[]",
                Expect::Ok(
                    r#"[{"id":2,"username":"alice","displayname":"alice","status":0,"reason":""},
                        {"id":3,"username":"bob","displayname":"bob","status":0,"reason":""}]"#,
                ),
            ),
            ("agents.list", "[1]", Invalid(&["params"])),
            ("agents.list", "[null]", Invalid(&["params"])),
        ],
    );
}

#[test]
fn agents_set_status_bad_input_names_the_field() {
    let server = server();
    check_all(
        &server,
        &[
            ("agents.setStatus", "[]", Invalid(&["params"])),
            ("agents.setStatus", "[2]", Invalid(&["params"])),
            (
                "agents.setStatus",
                r#"[2, 1, "", "extra"]"#,
                Invalid(&["params"]),
            ),
            (
                "agents.setStatus",
                r#"["2", 1, ""]"#,
                Invalid(&["agent_id"]),
            ),
            (
                "agents.setStatus",
                r#"[null, 1, ""]"#,
                Invalid(&["agent_id"]),
            ),
            (
                "agents.setStatus",
                r#"[2.0, 1, ""]"#,
                Invalid(&["agent_id"]),
            ),
            ("agents.setStatus", r#"[2, "1", ""]"#, Invalid(&["status"])),
            ("agents.setStatus", r#"[2, 1.0, ""]"#, Invalid(&["status"])),
            ("agents.setStatus", r#"[2, true, ""]"#, Invalid(&["status"])),
            ("agents.setStatus", r#"[2, 4, ""]"#, Invalid(&["status"])),
            ("agents.setStatus", r#"[2, -1, ""]"#, Invalid(&["status"])),
            (
                "agents.setStatus",
                r#"[2, 9223372036854775807, ""]"#,
                Invalid(&["status"]),
            ),
            ("agents.setStatus", "[2, 2, 5]", Invalid(&["reason"])),
            (
                "agents.setStatus",
                r#"[2, 2, ["Lunch"]]"#,
                Invalid(&["reason"]),
            ),
            ("agents.setStatus", r#"[999, 1, ""]"#, NotFound),
            // User 1 exists but is not an agent.
            ("agents.setStatus", r#"[1, 1, ""]"#, NotFound),
        ],
    );
    assert_eq!(
        server.api.core().directory().agent(2).unwrap().status,
        AgentStatus::Offline,
        "no bad call changed anything"
    );
}

#[test]
fn agents_set_status_returns_the_agent_after_the_change() {
    let server = server();
    check_all(
        &server,
        &[
            (
                "agents.setStatus",
                r#"[2, 2, "Lunch"]"#,
                Expect::Ok(
                    r#"{"id":2,"username":"alice","displayname":"alice","status":2,"reason":"Lunch"}"#,
                ),
            ),
            // The reason is optional, and null means none.
            (
                "agents.setStatus",
                "[2, 1]",
                Expect::Ok(
                    r#"{"id":2,"username":"alice","displayname":"alice","status":1,"reason":""}"#,
                ),
            ),
            (
                "agents.setStatus",
                "[3, 3, null]",
                Expect::Ok(
                    r#"{"id":3,"username":"bob","displayname":"bob","status":3,"reason":""}"#,
                ),
            ),
        ],
    );
}

#[test]
fn agents_set_status_agent_may_set_only_its_own_status() {
    let server = server();
    check(
        &server,
        &server.alice,
        "agents.setStatus",
        "[2, 1]",
        Success,
    );
    check(&server, &server.alice, "agents.setStatus", "[3, 1]", Denied);
    check(&server, &server.bob, "agents.setStatus", "[2, 0]", Denied);
    check(&server, &server.bob, "agents.setStatus", "[1, 0]", Denied);
    // The superuser may set anyone's.
    check(
        &server,
        &server.admin,
        "agents.setStatus",
        "[3, 2, \"Meeting\"]",
        Success,
    );
    let agents = server.api.core().directory().agents();
    let statuses: Vec<_> = agents.iter().map(|agent| agent.status).collect();
    assert_eq!(statuses, [AgentStatus::Ready, AgentStatus::Aux]);
}

#[test]
fn shared_get_and_set_bad_input_names_the_field() {
    let server = server();
    check_all(
        &server,
        &[
            ("shared.get", "[]", Invalid(&["params"])),
            ("shared.get", r#"["a", "b"]"#, Invalid(&["params"])),
            ("shared.get", "[1]", Invalid(&["identificator"])),
            ("shared.get", "[null]", Invalid(&["identificator"])),
            ("shared.get", r#"[""]"#, Invalid(&["identificator"])),
            ("shared.set", "[]", Invalid(&["params"])),
            ("shared.set", r#"["x"]"#, Invalid(&["params"])),
            ("shared.set", r#"["x", 1, 2]"#, Invalid(&["params"])),
            ("shared.set", "[1, {}]", Invalid(&["identificator"])),
            (
                "shared.set",
                r#"[{"x": 1}, 1]"#,
                Invalid(&["identificator"]),
            ),
            ("shared.set", r#"["", 1]"#, Invalid(&["identificator"])),
        ],
    );
    assert_eq!(server.api.core().shared().get("x"), Value::empty_map());
}

#[test]
fn shared_get_and_set_work_for_any_session() {
    let server = server();
    // D4: never set reads as {}.
    check(
        &server,
        &server.alice,
        "shared.get",
        r#"["x"]"#,
        Expect::Ok("{}"),
    );
    check(
        &server,
        &server.alice,
        "shared.set",
        r#"["x", {"a": [1, 2.5, null]}]"#,
        Expect::Ok(r#"{"a": [1, 2.5, null]}"#),
    );
    check(
        &server,
        &server.bob,
        "shared.get",
        r#"["x"]"#,
        Expect::Ok(r#"{"a": [1, 2.5, null]}"#),
    );
    // Null is data too.
    check(
        &server,
        &server.bob,
        "shared.set",
        r#"["y", null]"#,
        Expect::Ok("null"),
    );
}

#[test]
fn d4_int_keys_survive_the_api_and_print_as_strings() {
    let server = server();
    let mut counts = ucs_core::Map::default();
    counts.insert(MapKey::Int(2), Value::Int(1));
    let data = Value::Map(counts);
    let stored = server
        .api
        .call(
            &server.admin,
            "shared.set",
            vec![Value::from("c"), data.clone()],
        )
        .unwrap();
    assert_eq!(stored, data);
    let read = server
        .api
        .call(&server.admin, "shared.get", vec![Value::from("c")])
        .unwrap();
    assert_eq!(read, data, "a plugin reads back the int key");
    assert_eq!(read.to_json_string(), r#"{"2":1}"#);
}

#[test]
fn config_users_get_bad_input_and_results() {
    let server = server();
    check_all(
        &server,
        &[
            ("config.users.get", r#"["1"]"#, Invalid(&["user_id"])),
            ("config.users.get", "[true]", Invalid(&["user_id"])),
            ("config.users.get", "[1.5]", Invalid(&["user_id"])),
            ("config.users.get", "[{}]", Invalid(&["user_id"])),
            ("config.users.get", "[1, 2]", Invalid(&["params"])),
            ("config.users.get", "[999]", NotFound),
            ("config.users.get", "[-1]", NotFound),
            (
                "config.users.get",
                "[1]",
                Expect::Ok(
                    r#"{"id":1,"username":"admin","displayname":"Administrator","superuser":true,"agent":false}"#,
                ),
            ),
            (
                "config.users.get",
                "[3]",
                Expect::Ok(
                    r#"{"id":3,"username":"bob","displayname":"bob","superuser":false,"agent":true}"#,
                ),
            ),
        ],
    );
    for all in ["[]", "[null]"] {
        let users = server.call(&server.admin, "config.users.get", all).unwrap();
        let Value::List(users) = users else {
            panic!("a list of users expected");
        };
        let names: Vec<_> = users
            .iter()
            .map(|user| user.get("username").and_then(Value::as_str).unwrap())
            .collect();
        assert_eq!(names, ["admin", "alice", "bob"]);
        // A password, or its hash, never leaves the server.
        assert!(users.iter().all(|user| user.get("password").is_none()));
    }
}

#[test]
fn config_users_add_bad_input_names_the_field() {
    let server = server();
    check_all(
        &server,
        &[
            ("config.users.add", "[]", Invalid(&["params"])),
            ("config.users.add", "[{}, {}]", Invalid(&["params"])),
            ("config.users.add", r#"["dave"]"#, Invalid(&["data"])),
            ("config.users.add", "[[1]]", Invalid(&["data"])),
            ("config.users.add", "[null]", Invalid(&["data"])),
            // Every missing field at once, not just the first.
            (
                "config.users.add",
                "[{}]",
                Invalid(&["password", "username"]),
            ),
            (
                "config.users.add",
                r#"[{"username": "dave"}]"#,
                Invalid(&["password"]),
            ),
            (
                "config.users.add",
                r#"[{"password": "password1"}]"#,
                Invalid(&["username"]),
            ),
            (
                "config.users.add",
                r#"[{"username": 5, "password": "password1"}]"#,
                Invalid(&["username"]),
            ),
            (
                "config.users.add",
                r#"[{"username": "dave", "password": 12345678}]"#,
                Invalid(&["password"]),
            ),
            (
                "config.users.add",
                r#"[{"username": "dave", "password": "password1", "displayname": null}]"#,
                Invalid(&["displayname"]),
            ),
            (
                "config.users.add",
                r#"[{"username": "dave", "password": "password1", "superuser": "yes"}]"#,
                Invalid(&["superuser"]),
            ),
            (
                "config.users.add",
                r#"[{"username": "dave", "password": "password1", "agent": 1}]"#,
                Invalid(&["agent"]),
            ),
            // Unknown fields are refused, so a typo does not pass silently.
            (
                "config.users.add",
                r#"[{"username": "dave", "password": "password1", "colour": "red", "agnet": true}]"#,
                Invalid(&["agnet", "colour"]),
            ),
            (
                "config.users.add",
                r#"[{"id": 7, "username": "dave", "password": "password1"}]"#,
                Invalid(&["id"]),
            ),
            // Validation reports every bad field at once.
            (
                "config.users.add",
                r#"[{"username": "bad name", "password": "short"}]"#,
                Invalid(&["password", "username"]),
            ),
            (
                "config.users.add",
                r#"[{"username": "alice", "password": "password1"}]"#,
                Invalid(&["username"]),
            ),
        ],
    );
    // An int key is an unknown field too, named as it prints.
    let mut data = ucs_core::Map::default();
    data.insert(MapKey::from("username"), Value::from("dave"));
    data.insert(MapKey::from("password"), Value::from("password1"));
    data.insert(MapKey::Int(1), Value::Bool(true));
    assert_eq!(
        server
            .api
            .call(&server.admin, "config.users.add", vec![Value::Map(data)]),
        Err(ApiError::field("1", "unknown field"))
    );
    assert_eq!(
        server.api.core().directory().list().len(),
        3,
        "nothing was added"
    );
}

#[test]
fn config_users_add_returns_the_new_user_without_password() {
    let server = server();
    check(
        &server,
        &server.admin,
        "config.users.add",
        r#"[{"username": "dave", "password": "password1", "agent": true}]"#,
        Expect::Ok(
            r#"{"id":4,"username":"dave","displayname":"dave","superuser":false,"agent":true}"#,
        ),
    );
    let dave = server.api.core().directory().agent(4).unwrap();
    assert_eq!(dave.status, AgentStatus::Offline, "agents start offline");
    assert!(server.api.core().login("dave", "password1").is_ok());
}

#[test]
fn config_users_edit_bad_input_names_the_field() {
    let server = server();
    check_all(
        &server,
        &[
            ("config.users.edit", "[]", Invalid(&["params"])),
            ("config.users.edit", r#"[2]"#, Invalid(&["data"])),
            ("config.users.edit", "[{}]", Invalid(&["id"])),
            (
                "config.users.edit",
                r#"[{"displayname": "x"}]"#,
                Invalid(&["id"]),
            ),
            ("config.users.edit", r#"[{"id": "2"}]"#, Invalid(&["id"])),
            ("config.users.edit", r#"[{"id": null}]"#, Invalid(&["id"])),
            (
                "config.users.edit",
                r#"[{"id": 2, "bogus": 1}]"#,
                Invalid(&["bogus"]),
            ),
            (
                "config.users.edit",
                r#"[{"id": 2, "displayname": 5}]"#,
                Invalid(&["displayname"]),
            ),
            (
                "config.users.edit",
                r#"[{"id": 2, "agent": "no"}]"#,
                Invalid(&["agent"]),
            ),
            (
                "config.users.edit",
                r#"[{"id": 2, "password": "short"}]"#,
                Invalid(&["password"]),
            ),
            (
                "config.users.edit",
                r#"[{"id": 2, "username": ""}]"#,
                Invalid(&["username"]),
            ),
            (
                "config.users.edit",
                r#"[{"id": 2, "username": "bob"}]"#,
                Invalid(&["username"]),
            ),
            (
                "config.users.edit",
                r#"[{"id": 2, "displayname": "x"}, {}]"#,
                Invalid(&["params"]),
            ),
            // User 1 cannot be stripped of superuser.
            (
                "config.users.edit",
                r#"[{"id": 1, "superuser": false}]"#,
                Invalid(&["superuser"]),
            ),
            (
                "config.users.edit",
                r#"[{"id": 999, "displayname": "x"}]"#,
                NotFound,
            ),
        ],
    );
    assert_eq!(
        server.api.core().directory().get(2).unwrap().displayname,
        "alice",
        "no bad edit changed anything"
    );
}

#[test]
fn config_users_edit_returns_the_user_after_the_edit() {
    let server = server();
    check_all(
        &server,
        &[
            (
                "config.users.edit",
                r#"[{"id": 2, "displayname": "Alice A.", "superuser": true}]"#,
                Expect::Ok(
                    r#"{"id":2,"username":"alice","displayname":"Alice A.","superuser":true,"agent":true}"#,
                ),
            ),
            // Editing only `id` changes nothing and is fine.
            (
                "config.users.edit",
                r#"[{"id": 1}]"#,
                Expect::Ok(
                    r#"{"id":1,"username":"admin","displayname":"Administrator","superuser":true,"agent":false}"#,
                ),
            ),
        ],
    );
}

#[test]
fn config_users_delete_bad_input_and_user_one() {
    let server = server();
    check_all(
        &server,
        &[
            ("config.users.delete", "[]", Invalid(&["params"])),
            ("config.users.delete", "[2, 3]", Invalid(&["params"])),
            ("config.users.delete", r#"["2"]"#, Invalid(&["user_id"])),
            ("config.users.delete", "[null]", Invalid(&["user_id"])),
            ("config.users.delete", "[999]", NotFound),
            ("config.users.delete", "[1]", Processing("user 1")),
            ("config.users.delete", "[3]", Expect::Ok("null")),
            ("config.users.delete", "[3]", NotFound),
            ("config.users.get", "[3]", NotFound),
            ("agents.setStatus", "[3, 1]", NotFound),
        ],
    );
}

#[test]
fn superuser_methods_refuse_other_users() {
    let server = server();
    let cases = [
        ("config.users.get", "[]"),
        ("config.users.get", "[2]"),
        (
            "config.users.add",
            r#"[{"username": "eve", "password": "password1"}]"#,
        ),
        ("config.users.edit", r#"[{"id": 2, "superuser": true}]"#),
        ("config.users.delete", "[3]"),
        ("plugins.list", "[]"),
        ("plugins.load", r#"["example"]"#),
        ("plugins.unload", r#"["example"]"#),
        // The permission check comes before the arguments are read.
        ("config.users.get", r#"["bad"]"#),
        ("plugins.load", r#"["../x"]"#),
    ];
    for (method, params) in cases {
        check(&server, &server.alice, method, params, Denied);
    }
    let users = server.api.core().directory().list();
    assert_eq!(users.len(), 3);
    assert!(!users[1].superuser, "alice did not promote herself");
}

#[test]
fn any_session_may_use_the_non_superuser_methods() {
    let server = server();
    for (method, params) in [
        ("agents.list", "[]"),
        ("shared.get", r#"["x"]"#),
        ("shared.set", r#"["x", 1]"#),
        ("agents.setStatus", "[3, 2, \"Lunch\"]"),
    ] {
        check(&server, &server.bob, method, params, Success);
    }
}

#[test]
fn m1_unknown_method_is_unknown_method_for_a_valid_session() {
    let server = server();
    for name in [
        "nope",
        "",
        "config.users",
        "agents.list.",
        "Agents.List",
        "agents.setstatus",
    ] {
        assert_eq!(
            server.call(&server.admin, name, "[]"),
            Err(ApiError::UnknownMethod(name.to_owned())),
            "{name:?}"
        );
    }
}

/// A status hook standing in for the documented StatusHook example.
struct NoAuxWithoutReason;

impl StatusHook for NoAuxWithoutReason {
    fn decide(&self, _before: &Agent, status: AgentStatus, reason: &str) -> StatusVerdict {
        match (status, reason) {
            (AgentStatus::Aux, "") => StatusVerdict::Rewrite {
                status: AgentStatus::Aux,
                reason: "Unspecified".to_owned(),
            },
            (AgentStatus::Busy, _) => StatusVerdict::Block {
                reason: String::new(),
            },
            (_, "forbidden") => StatusVerdict::Block {
                reason: "Not allowed".to_owned(),
            },
            _ => StatusVerdict::LetThrough,
        }
    }
}

impl Registrable for NoAuxWithoutReason {
    fn describe(&self) -> String {
        "NoAuxWithoutReason".to_owned()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[test]
fn h4_h5_status_hook_applies_through_agents_set_status() {
    let server = server();
    server
        .api
        .core()
        .status_hook()
        .add(plugin("p"), Arc::new(NoAuxWithoutReason))
        .unwrap();
    check_all(
        &server,
        &[
            (
                "agents.setStatus",
                "[2, 2]",
                Expect::Ok(
                    r#"{"id":2,"username":"alice","displayname":"alice","status":2,"reason":"Unspecified"}"#,
                ),
            ),
            ("agents.setStatus", "[2, 3]", Processing("Blocked by hook")),
            (
                "agents.setStatus",
                r#"[2, 1, "forbidden"]"#,
                Processing("Not allowed"),
            ),
        ],
    );
    assert_eq!(
        server.call(&server.admin, "agents.setStatus", r#"[2, 1, "forbidden"]"#),
        Err(ApiError::Processing("Not allowed".to_owned()))
    );
}

/// A shared-data hook that keeps only the last three items.
struct LastThree;

impl SharedDataHook for LastThree {
    fn before_change(&self, _identificator: &str, _old: &Value, new: &Value) -> SharedVerdict {
        match new {
            Value::List(items) => SharedVerdict::Store(Value::List(
                items.iter().rev().take(3).rev().cloned().collect(),
            )),
            _ => SharedVerdict::Block {
                reason: "history must be a list".to_owned(),
            },
        }
    }
}

impl Registrable for LastThree {
    fn describe(&self) -> String {
        "LastThree".to_owned()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[test]
fn s2_s3_shared_hook_applies_through_shared_set() {
    let server = server();
    server
        .api
        .core()
        .shared()
        .add_hook("history", plugin("p"), Arc::new(LastThree))
        .unwrap();
    check_all(
        &server,
        &[
            (
                "shared.set",
                r#"["history", [1, 2, 3, 4, 5]]"#,
                Expect::Ok("[3, 4, 5]"),
            ),
            (
                "shared.set",
                r#"["history", "x"]"#,
                Processing("history must be a list"),
            ),
            ("shared.get", r#"["history"]"#, Expect::Ok("[3, 4, 5]")),
        ],
    );
}

/// Issue 12 item 4: a failed login and a dead session are told apart, so an
/// operator with a typo is not sent hunting for a sid problem.
#[test]
fn issue12_wrong_credentials_are_not_an_expired_session() {
    let server = server();
    let core = server.api.core();
    for (username, password) in [("admin", "not-the-password"), ("mallory", "password1")] {
        let refused = ApiError::from(core.login(username, password).unwrap_err());
        assert_eq!(refused, ApiError::BadCredentials);
        assert_eq!(refused.to_string(), "wrong username or password");
    }
    let expired = server.api.call("no-such-sid", "agents.list", Vec::new());
    assert_eq!(expired, Err(ApiError::Unauthenticated));
    assert_eq!(
        expired.unwrap_err().to_string(),
        "unknown or expired session"
    );
}
