//! The JSON gateway: login, logout and any API method by name.
//!
//! Each answer is JSON with `Cache-Control: no-store` (results can hold
//! users and tracebacks, which no cache should keep). A failure is
//! `{code, message}` (plus `fields` for invalid input) with the gRPC code
//! name the CLI prints and the HTTP status of [`error_response`].

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ConnectInfo;
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ucs_api::{Api, ApiError, QuickCall};
use ucs_core::{CoreError, Value};
use ucs_grpc::throttle::LoginThrottle;

/// What the gateway's handlers share.
pub(crate) struct State {
    /// Every call goes through this API, middleware and checks included.
    pub(crate) api: Api,
    /// The gRPC login's throttle, shared, so failed logins count the same
    /// whichever way they come.
    pub(crate) throttle: Arc<LoginThrottle>,
}

/// A request body up to this size is parsed on the runtime worker; a
/// larger one is CPU work that goes to the blocking pool with its call,
/// as the gRPC `Api.Call` does.
const INLINE_BODY_MAX: usize = 4096;

/// `body` as JSON with `status`, never cached.
fn json(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// The HTTP answer to `error`: one arm per kind and no catch-all, as
/// `ucs_grpc::status::from_api_error`, so a new kind needs a decision here.
pub(crate) fn error_response(error: ApiError) -> Response {
    let (status, code) = match &error {
        ApiError::Unauthenticated | ApiError::BadCredentials => {
            (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED")
        }
        ApiError::PermissionDenied(_) => (StatusCode::FORBIDDEN, "PERMISSION_DENIED"),
        ApiError::InvalidInput(_) => (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
        ApiError::Processing(_) => (StatusCode::CONFLICT, "FAILED_PRECONDITION"),
        ApiError::UnknownMethod(_) => (StatusCode::NOT_FOUND, "UNIMPLEMENTED"),
        ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
        ApiError::Busy(_) => (StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED"),
        ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
    };
    let body = match error {
        ApiError::Internal(message) => {
            // As over gRPC: the details (a traceback) go to the log only.
            tracing::error!("internal error answered with a generic status: {message}");
            serde_json::json!({"code": code, "message": ucs_grpc::status::INTERNAL_MESSAGE})
        }
        ApiError::InvalidInput(fields) => serde_json::json!({
            "code": code,
            "message": ApiError::InvalidInput(fields.clone()).to_string(),
            "fields": fields,
        }),
        ApiError::PermissionDenied(message)
        | ApiError::Processing(message)
        | ApiError::NotFound(message)
        | ApiError::Busy(message) => serde_json::json!({"code": code, "message": message}),
        other => serde_json::json!({"code": code, "message": other.to_string()}),
    };
    json(status, body.to_string())
}

/// The session of a request: `Authorization: Bearer SID`.
pub(crate) fn bearer_sid(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let sid = value.strip_prefix("Bearer ")?.trim();
    (!sid.is_empty()).then(|| sid.to_owned())
}

/// Runs `work`, which may run Python and block, on tokio's blocking pool;
/// a panic in it becomes an internal error.
async fn run_blocking<T, F>(work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join_error| {
            Err(ApiError::Internal(format!(
                "an API call did not finish: {join_error}"
            )))
        })
}

/// A string field of a JSON object body, or an invalid-input error naming it.
fn string_field(body: &Value, field: &str) -> Result<String, ApiError> {
    match body.get(field) {
        Some(Value::Str(text)) => Ok(text.clone()),
        _ => Err(ApiError::field(field, "must be a string")),
    }
}

/// A request body as a value; depth and integer range are checked by
/// [`Value::parse_json`], as for gRPC's `args_json`.
fn parse_body(body: &str) -> Result<Value, ApiError> {
    match Value::parse_json(body) {
        Ok(value @ Value::Map(_)) => Ok(value),
        Ok(other) => Err(ApiError::field(
            "body",
            format!("must be a JSON object, got {}", other.type_name()),
        )),
        Err(message) => Err(ApiError::field(
            "body",
            format!("is not valid JSON: {message}"),
        )),
    }
}

/// `POST /console/api/login {username, password}` -> `{sid, user_id,
/// username, superuser}`. The same path as gRPC `Auth.Login`: the throttle
/// first (a locked pair is refused before the password is hashed), the
/// deliberately slow hash on the blocking pool, a failed answer held back
/// on a timer.
pub(crate) async fn login(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    extensions: Extensions,
    body: String,
) -> Response {
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip());
    let (username, password) = match parse_body(&body).and_then(|body| {
        Ok((
            string_field(&body, "username")?,
            string_field(&body, "password")?,
        ))
    }) {
        Ok(fields) => fields,
        Err(error) => return error_response(error),
    };
    if let Err(throttled) = state.throttle.check(&username, peer) {
        tracing::warn!(
            username,
            "console login refused: {} is throttled for {:?}",
            throttled.what,
            throttled.retry_after
        );
        // Whole seconds, rounded up, so "retry in 0 s" is never said.
        let seconds =
            throttled.retry_after.as_secs() + u64::from(throttled.retry_after.subsec_nanos() > 0);
        let mut answer = error_response(ApiError::Busy(format!(
            "too many failed logins for {}; retry in {seconds} s",
            throttled.what
        )));
        answer
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        return answer;
    }
    let api = state.api.clone();
    let attempted = username.clone();
    let outcome = run_blocking(move || Ok(api.core().login(&username, &password))).await;
    match outcome {
        Ok(Ok((sid, user))) => {
            state.throttle.succeeded(&attempted, peer);
            let body = serde_json::json!({
                "sid": sid,
                "user_id": user.id,
                "username": user.username,
                "superuser": user.superuser,
            });
            json(StatusCode::OK, body.to_string())
        }
        Ok(Err(error @ CoreError::BadCredentials)) => {
            // Held back on a timer, not a thread, as over gRPC.
            let delay = state.throttle.failed(&attempted, peer);
            tokio::time::sleep(delay).await;
            error_response(error.into())
        }
        Ok(Err(error)) => error_response(error.into()),
        Err(error) => error_response(error),
    }
}

/// `POST /console/api/logout` with the session's bearer header: closes it,
/// which also ends its event streams within a second.
pub(crate) async fn logout(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    headers: HeaderMap,
) -> Response {
    let Some(sid) = bearer_sid(&headers) else {
        return error_response(ApiError::Unauthenticated);
    };
    // Closing a session is a map removal: no Python, no wait.
    match state.api.core().sessions().close(&sid) {
        Ok(()) => json(StatusCode::OK, "{}".to_owned()),
        Err(error) => error_response(error.into()),
    }
}

/// The method and parameters of a call body.
fn call_of(body: &str) -> Result<(String, Vec<Value>), ApiError> {
    let body = parse_body(body)?;
    let method = string_field(&body, "method")?;
    let params = match body.get("params") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::List(params)) => params.clone(),
        Some(other) => {
            return Err(ApiError::field(
                "params",
                format!(
                    "must be a JSON array of the parameters after sid, got {}",
                    other.type_name()
                ),
            ));
        }
    };
    Ok((method, params))
}

/// `POST /console/api/call {method, params}` with `Authorization: Bearer
/// SID` -> the method's result as JSON: `Api::call(sid, method, params)`,
/// so the method's middleware chain and permission checks run exactly as
/// for gRPC `Api.Call`. A small read with no middleware is answered on the
/// worker (`Api::call_if_quick`), anything else runs on the blocking pool,
/// since it may run Python.
pub(crate) async fn call(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let Some(sid) = bearer_sid(&headers) else {
        return error_response(ApiError::Unauthenticated);
    };
    let api = state.api.clone();
    let result = if body.len() <= INLINE_BODY_MAX {
        match call_of(&body) {
            Err(error) => Err(error),
            Ok((method, params)) => match api.call_if_quick(&sid, &method, params) {
                QuickCall::Answered(result) => result,
                QuickCall::NotQuick(params) => {
                    run_blocking(move || api.call(&sid, &method, params)).await
                }
            },
        }
    } else {
        run_blocking(move || {
            let (method, params) = call_of(&body)?;
            api.call(&sid, &method, params)
        })
        .await
    };
    match result {
        Ok(value) => json(StatusCode::OK, value.to_json_string()),
        Err(error) => error_response(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_body_is_a_method_and_its_params() {
        assert_eq!(
            call_of(r#"{"method": "agents.setStatus", "params": [2, 1, ""]}"#).expect("a call"),
            (
                "agents.setStatus".to_owned(),
                vec![Value::Int(2), Value::Int(1), Value::from("")]
            )
        );
        assert_eq!(
            call_of(r#"{"method": "agents.list"}"#).expect("a call"),
            ("agents.list".to_owned(), Vec::new())
        );
    }

    #[test]
    fn a_bad_call_body_is_invalid_input_naming_the_field() {
        for (body, field) in [
            ("nope", "body"),
            ("[]", "body"),
            (r#"{"params": []}"#, "method"),
            (r#"{"method": "agents.list", "params": {}}"#, "params"),
        ] {
            match call_of(body) {
                Err(ApiError::InvalidInput(fields)) => {
                    assert!(fields.contains_key(field), "{body}: {fields:?}");
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn each_api_error_has_its_http_status() {
        let cases = [
            (ApiError::Unauthenticated, StatusCode::UNAUTHORIZED),
            (ApiError::BadCredentials, StatusCode::UNAUTHORIZED),
            (
                ApiError::PermissionDenied("no".into()),
                StatusCode::FORBIDDEN,
            ),
            (ApiError::field("status", "bad"), StatusCode::BAD_REQUEST),
            (ApiError::Processing("kept".into()), StatusCode::CONFLICT),
            (ApiError::UnknownMethod("x.y".into()), StatusCode::NOT_FOUND),
            (ApiError::NotFound("user 9".into()), StatusCode::NOT_FOUND),
            (
                ApiError::Busy("later".into()),
                StatusCode::TOO_MANY_REQUESTS,
            ),
            (
                ApiError::Internal("Traceback".into()),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        ];
        for (error, status) in cases {
            let answer = error_response(error);
            assert_eq!(answer.status(), status);
            assert_eq!(answer.headers()[header::CACHE_CONTROL], "no-store");
        }
    }

    #[test]
    fn the_session_comes_from_a_bearer_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_sid(&headers), None);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer_sid(&headers).as_deref(), Some("abc"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer_sid(&headers), None);
    }
}
