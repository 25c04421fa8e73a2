//! API errors as gRPC statuses (SPEC section 9).

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};
use ucs_api::ApiError;
use ucs_core::FieldErrors;

/// What an INTERNAL status says; the details go to the server log only.
pub const INTERNAL_MESSAGE: &str = "internal error; the server log has the details";

/// The status for `error`: one arm per kind, no catch-all, so a new kind of
/// API error cannot reach a client without a decision here.
///
/// INVALID_ARGUMENT carries the field dict twice: as JSON in the message, for
/// people and simple clients, and as a `google.rpc.BadRequest` detail with
/// one field violation per field, for rich clients.
pub fn from_api_error(error: ApiError) -> Status {
    match error {
        ApiError::Unauthenticated | ApiError::BadCredentials => {
            Status::unauthenticated(error.to_string())
        }
        ApiError::PermissionDenied(message) => Status::permission_denied(message),
        ApiError::InvalidInput(fields) => invalid_argument(&fields),
        ApiError::Processing(message) => Status::failed_precondition(message),
        ApiError::UnknownMethod(_) => Status::unimplemented(error.to_string()),
        ApiError::NotFound(message) => Status::not_found(message),
        ApiError::Busy(message) => Status::resource_exhausted(message),
        ApiError::Internal(message) => {
            tracing::error!("internal error answered with a generic status: {message}");
            Status::internal(INTERNAL_MESSAGE)
        }
    }
}

/// INVALID_ARGUMENT with `fields` as the JSON message and as BadRequest details.
pub fn invalid_argument(fields: &FieldErrors) -> Status {
    // A map of strings to strings always serialises.
    let message = serde_json::to_string(fields).unwrap_or_else(|_| "{}".to_owned());
    let violations: Vec<FieldViolation> = fields
        .iter()
        .map(|(field, description)| FieldViolation::new(field, description))
        .collect();
    Status::with_error_details(
        Code::InvalidArgument,
        message,
        ErrorDetails::with_bad_request(violations),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_api_error_has_its_section_9_code() {
        let cases = [
            (ApiError::Unauthenticated, Code::Unauthenticated),
            (ApiError::BadCredentials, Code::Unauthenticated),
            (
                ApiError::PermissionDenied("no".into()),
                Code::PermissionDenied,
            ),
            (ApiError::field("status", "bad"), Code::InvalidArgument),
            (
                ApiError::Processing("Blocked by hook".into()),
                Code::FailedPrecondition,
            ),
            (ApiError::UnknownMethod("x.y".into()), Code::Unimplemented),
            (
                ApiError::NotFound("user 9 not found".into()),
                Code::NotFound,
            ),
            (ApiError::Internal("Traceback ...".into()), Code::Internal),
            (
                ApiError::Busy("try again later".into()),
                Code::ResourceExhausted,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(from_api_error(error).code(), code);
        }
    }

    #[test]
    fn processing_keeps_its_message_and_internal_hides_it() {
        let status = from_api_error(ApiError::Processing("Blocked by hook".into()));
        assert_eq!(status.message(), "Blocked by hook");
        let status = from_api_error(ApiError::Internal("secret traceback".into()));
        assert_eq!(status.message(), INTERNAL_MESSAGE);
    }

    #[test]
    fn invalid_input_has_json_message_and_bad_request_details() {
        let status = from_api_error(ApiError::field("status", "must be an int"));
        assert_eq!(status.message(), r#"{"status":"must be an int"}"#);
        let bad_request = status.get_details_bad_request().unwrap();
        assert_eq!(bad_request.field_violations.len(), 1);
        assert_eq!(bad_request.field_violations[0].field, "status");
        assert_eq!(
            bad_request.field_violations[0].description,
            "must be an int"
        );
    }
}
