//! The one error type of the core.

use std::collections::BTreeMap;

/// A field name mapped to what is wrong with it: the shape of the plugin
/// API's `InvalidDataInput`, so validation results cross every layer as is.
pub type FieldErrors = BTreeMap<String, String>;

/// Everything a core operation can refuse with.
///
/// Each kind maps to one API error kind (and so to one gRPC status), which is
/// why the variants are about what the caller did, not where it failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CoreError {
    /// The input breaks a validation rule; the map says which field and why.
    #[error("invalid input: {}", render_fields(.0))]
    InvalidInput(FieldErrors),
    /// A user, agent or other addressed thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The change was refused on purpose: by a hook, by a rule such as
    /// "user 1 cannot be deleted", or because it would re-enter or deadlock.
    #[error("{0}")]
    Processing(String),
    /// Login failed. Deliberately says nothing about whether the user exists.
    #[error("wrong username or password")]
    BadCredentials,
    /// The session id is unknown, logged out or expired.
    #[error("unknown or expired session")]
    Unauthenticated,
    /// The store could not keep a change, or could not be read at start.
    /// Nothing changed in memory; the store's error says what failed.
    #[error("{0}")]
    Storage(#[source] crate::store::StoreError),
}

impl CoreError {
    /// Shorthand for an invalid-input error about one field.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        CoreError::InvalidInput(BTreeMap::from([(field.to_owned(), message.into())]))
    }
}

fn render_fields(fields: &FieldErrors) -> String {
    fields
        .iter()
        .map(|(field, message)| format!("{field}: {message}"))
        .collect::<Vec<_>>()
        .join("; ")
}
