//! `ucs.v1.Api`: any API method by name (SPEC section 8, 9).

use tonic::{Request, Response, Status};
use ucs_api::{Api, ApiError, QuickCall};
use ucs_core::Value;

use crate::pb;
use crate::run_blocking;

/// Calls any API method by its dotted name, with JSON parameters.
#[derive(Clone)]
pub struct ApiService {
    /// The API whose methods this service calls.
    api: Api,
}

impl ApiService {
    /// The service over `api`.
    pub fn new(api: Api) -> Self {
        ApiService { api }
    }
}

#[tonic::async_trait]
impl pb::api_server::Api for ApiService {
    async fn call(
        &self,
        request: Request<pb::CallRequest>,
    ) -> Result<Response<pb::CallResponse>, Status> {
        let pb::CallRequest {
            sid,
            method,
            args_json,
        } = request.into_inner();
        // A small read with no middleware neither blocks nor runs Python:
        // answer it here and skip the hop to the blocking pool.
        if args_json.len() <= INLINE_ARGS_MAX {
            let params = parse_args(&args_json).map_err(crate::status::from_api_error)?;
            match self.api.call_if_quick_json(&sid, &method, params) {
                QuickCall::Answered(result) => {
                    let result = result.map_err(crate::status::from_api_error)?;
                    return Ok(Response::new(pb::CallResponse {
                        result_json: result.to_string(),
                    }));
                }
                QuickCall::NotQuick(params) => {
                    let api = self.api.clone();
                    let result = run_blocking(move || api.call(&sid, &method, params)).await?;
                    return Ok(Response::new(pb::CallResponse {
                        result_json: result.to_json_string(),
                    }));
                }
            }
        }
        let api = self.api.clone();
        let result = run_blocking(move || {
            // Parsing a large document is CPU work too, so it runs here,
            // off the runtime workers.
            let params = parse_args(&args_json)?;
            api.call(&sid, &method, params)
        })
        .await?;
        Ok(Response::new(pb::CallResponse {
            result_json: result.to_json_string(),
        }))
    }
}

/// Arguments up to this size are parsed on the runtime worker; larger ones
/// are CPU work that goes to the blocking pool with the call.
const INLINE_ARGS_MAX: usize = 4096;

/// The parameters after sid: a JSON array, or nothing when `args_json` is
/// blank. Depth and integer range are checked by [`Value::parse_json`].
pub(crate) fn parse_args(args_json: &str) -> Result<Vec<Value>, ApiError> {
    if args_json.trim().is_empty() {
        return Ok(Vec::new());
    }
    match Value::parse_json(args_json) {
        Ok(Value::List(params)) => Ok(params),
        Ok(other) => Err(ApiError::field(
            "args_json",
            format!(
                "must be a JSON array of the parameters after sid, got {}",
                other.type_name()
            ),
        )),
        Err(message) => Err(ApiError::field(
            "args_json",
            format!("is not valid JSON: {message}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_args_are_no_params() {
        assert_eq!(parse_args("").unwrap(), Vec::<Value>::new());
        assert_eq!(parse_args("  \n").unwrap(), Vec::<Value>::new());
        assert_eq!(parse_args("[]").unwrap(), Vec::<Value>::new());
    }

    #[test]
    fn an_array_is_the_params() {
        assert_eq!(
            parse_args(r#"[2, "x", null]"#).unwrap(),
            vec![Value::Int(2), Value::from("x"), Value::Null]
        );
    }

    #[test]
    fn anything_else_is_invalid_input_about_args_json() {
        let deep = "[".repeat(100) + &"]".repeat(100);
        for bad in ["{}", "2", "\"x\"", "[1,", "nope", deep.as_str()] {
            match parse_args(bad) {
                Err(ApiError::InvalidInput(fields)) => {
                    assert!(fields.contains_key("args_json"), "{bad}: {fields:?}");
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
