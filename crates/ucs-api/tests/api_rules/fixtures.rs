//! A small server with three users, closures as middleware, and one
//! data-driven `check` that drives every API call of the table tests.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use ucs_api::{Api, ApiError, Middleware, Next};
use ucs_core::{Core, NewUser, Owner, Registrable, Sid, UserId, Value};

/// An API over a fresh core, with a session for each user.
pub(crate) struct Server {
    pub(crate) api: Api,
    /// `admin`, user 1, the superuser.
    pub(crate) admin: Sid,
    /// `alice`, an agent and nothing more.
    pub(crate) alice: Sid,
    pub(crate) alice_id: UserId,
    /// `bob`, another agent.
    pub(crate) bob: Sid,
    pub(crate) bob_id: UserId,
}

impl Server {
    pub(crate) fn new() -> Self {
        let core = Arc::new(Core::default());
        let admin = core.directory().ensure_admin("adminpass").expect("admin");
        let agent = |username: &str| {
            core.directory()
                .add(NewUser {
                    username: username.to_owned(),
                    password: "password1".to_owned(),
                    agent: true,
                    ..NewUser::default()
                })
                .expect("a valid agent")
        };
        let (alice, bob) = (agent("alice"), agent("bob"));
        // Sessions are opened directly: a login would hash once more per user.
        let open = |id| core.sessions().open(id).expect("a session");
        Server {
            admin: open(admin.id),
            alice: open(alice.id),
            alice_id: alice.id,
            bob: open(bob.id),
            bob_id: bob.id,
            api: Api::new(core),
        }
    }

    /// Calls `method` with params written as a JSON array.
    pub(crate) fn call(&self, sid: &str, method: &str, params: &str) -> Result<Value, ApiError> {
        self.api.call(sid, method, json_params(params))
    }
}

/// Parses a JSON array into call parameters.
pub(crate) fn json_params(params: &str) -> Vec<Value> {
    match Value::parse_json(params) {
        Ok(Value::List(items)) => items,
        other => panic!("params must be a JSON array: {params} gave {other:?}"),
    }
}

/// Parses JSON into a value.
pub(crate) fn json(text: &str) -> Value {
    Value::parse_json(text).unwrap_or_else(|err| panic!("bad JSON {text}: {err}"))
}

/// What a call in a table test must give.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Expect<'a> {
    /// Success with this result, as JSON.
    Ok(&'a str),
    /// Success; the result is not checked here.
    Success,
    /// Invalid input naming exactly these fields.
    Invalid(&'a [&'a str]),
    /// Not found.
    NotFound,
    /// Permission denied.
    Denied,
    /// A processing error whose message contains this.
    Processing(&'a str),
}

/// Calls `method` as `sid` with JSON `params` and checks the outcome; a
/// panic anywhere below is reported as a failure of this case.
pub(crate) fn check(server: &Server, sid: &str, method: &str, params: &str, expect: Expect<'_>) {
    let case = format!("{method}({params})");
    let result = catch_unwind(AssertUnwindSafe(|| server.call(sid, method, params)))
        .unwrap_or_else(|_| panic!("{case} panicked"));
    match (expect, &result) {
        (Expect::Ok(wanted), Ok(value)) => {
            assert_eq!(
                value.to_json_string(),
                json(wanted).to_json_string(),
                "{case}"
            );
        }
        (Expect::Success, Ok(_)) | (Expect::NotFound, Err(ApiError::NotFound(_))) => {}
        (Expect::Invalid(fields), Err(ApiError::InvalidInput(map))) => {
            let named: Vec<&str> = map.keys().map(String::as_str).collect();
            assert_eq!(named, fields, "{case}: fields of {map:?}");
            assert!(
                map.values().all(|message| !message.is_empty()),
                "{case}: every field says what is wrong: {map:?}"
            );
        }
        (Expect::Denied, Err(ApiError::PermissionDenied(message))) => {
            assert!(!message.is_empty(), "{case}");
        }
        (Expect::Processing(wanted), Err(ApiError::Processing(message))) => {
            assert!(
                message.contains(wanted),
                "{case}: {message:?} lacks {wanted:?}"
            );
        }
        (expect, result) => panic!("{case}: expected {expect:?}, got {result:?}"),
    }
}

/// The body of a test middleware.
pub(crate) type Body = dyn Fn(&Next, Vec<Value>) -> Result<Value, ApiError> + Send + Sync;

/// A middleware made of a closure. Two are `==` when their names are, as
/// two `self.method` objects of one Python method are (M1, E1).
pub(crate) struct NamedMiddleware {
    pub(crate) name: &'static str,
    pub(crate) body: Box<Body>,
}

impl PartialEq for NamedMiddleware {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Middleware for NamedMiddleware {
    fn call(&self, next: &Next, args: Vec<Value>) -> Result<Value, ApiError> {
        (self.body)(next, args)
    }
}

impl Registrable for NamedMiddleware {
    fn describe(&self) -> String {
        self.name.to_owned()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A middleware called `name` running `body`.
pub(crate) fn middleware(
    name: &'static str,
    body: impl Fn(&Next, Vec<Value>) -> Result<Value, ApiError> + Send + Sync + 'static,
) -> Arc<NamedMiddleware> {
    Arc::new(NamedMiddleware {
        name,
        body: Box::new(body),
    })
}

/// The owner plugins register as in these tests.
pub(crate) fn plugin(name: &str) -> Owner {
    Owner::new(name)
}
