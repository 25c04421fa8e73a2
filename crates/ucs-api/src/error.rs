//! The one error type of the API.

use ucs_core::{CoreError, FieldErrors, echoed};

/// Why an API call failed. Each kind maps to exactly one gRPC status (SPEC
/// section 9) and one Python `error` class (M3), so the kinds are about what
/// the caller should do next.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// The sid is unknown, logged out or expired: log in again.
    #[error("unknown or expired session")]
    Unauthenticated,
    /// A login named a user that does not exist or gave the wrong password:
    /// check what was typed. Which of the two is not said, on purpose.
    #[error("wrong username or password")]
    BadCredentials,
    /// The caller may not do this (also a middleware's `PermissionDenied`).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// Bad arguments; the map names each bad field (`InvalidDataInput`).
    #[error("invalid input: {}", render_fields(.0))]
    InvalidInput(FieldErrors),
    /// Refused on purpose, e.g. by a hook (`ProcessingError`).
    #[error("{0}")]
    Processing(String),
    /// No API method has this name. The message repeats a bounded prefix
    /// of it only (issue 15 item 15).
    #[error("unknown API method {}", echoed(.0))]
    UnknownMethod(String),
    /// The addressed user, agent or plugin file does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A plugin the call runs through has its bound of calls running at
    /// once (the bulkhead, issue 15 item 5): try again later.
    #[error("busy: {0}")]
    Busy(String),
    /// A bug or an unexpected plugin exception; details go to the server log.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// Shorthand for an invalid-input error about one field.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        ApiError::InvalidInput(FieldErrors::from([(field.to_owned(), message.into())]))
    }
}

impl From<CoreError> for ApiError {
    fn from(err: CoreError) -> Self {
        match err {
            CoreError::InvalidInput(fields) => ApiError::InvalidInput(fields),
            CoreError::NotFound(message) => ApiError::NotFound(message),
            CoreError::Processing(message) => ApiError::Processing(message),
            CoreError::BadCredentials => ApiError::BadCredentials,
            CoreError::Unauthenticated => ApiError::Unauthenticated,
            // The server could not keep the change (disk full, I/O error):
            // not the caller's fault, and nothing changed.
            CoreError::Storage(err) => ApiError::Internal(err.to_string()),
        }
    }
}

fn render_fields(fields: &FieldErrors) -> String {
    serde_json::to_string(fields).unwrap_or_default()
}
