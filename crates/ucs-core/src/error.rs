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

/// The most characters of a caller's input an error message repeats.
///
/// Why: an error message travels back in the `grpc-message` header, and a
/// client refuses headers over its limit (16 KiB for many), so echoing a
/// 100 KB method name whole turns a clear UNIMPLEMENTED into a transport
/// error (issue 15 item 15). A prefix this long still identifies a typo.
pub const ECHO_MAX_CHARS: usize = 64;

/// Caller input as an error message repeats it: in single quotes, whole if
/// it is at most [`ECHO_MAX_CHARS`] characters long, otherwise its first
/// [`ECHO_MAX_CHARS`] characters, an ellipsis and the full length, e.g.
/// `'a.a.a.…' (100000 chars)`. Build it with [`echoed`].
#[derive(Debug, Clone, Copy)]
pub struct Echoed<'a> {
    /// The input, whole; only a prefix of it is ever written.
    input: &'a str,
    /// Whether the input is written in single quotes: yes inside a
    /// sentence, no where it is a name on its own (a field dict's key).
    quoted: bool,
}

impl<'a> Echoed<'a> {
    /// `input` bounded as by [`echoed`], without the quotes.
    pub fn bare(input: &'a str) -> Self {
        Echoed {
            input,
            quoted: false,
        }
    }
}

/// `input` as an error message may repeat it (see [`Echoed`]); use this,
/// never `'{input}'`, wherever a message names something a caller sent.
pub fn echoed(input: &str) -> Echoed<'_> {
    Echoed {
        input,
        quoted: true,
    }
}

impl std::fmt::Display for Echoed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let quote = if self.quoted { "'" } else { "" };
        match self.input.char_indices().nth(ECHO_MAX_CHARS) {
            None => write!(f, "{quote}{}{quote}", self.input),
            Some((cut, _)) => write!(
                f,
                "{quote}{}…{quote} ({} chars)",
                &self.input[..cut],
                self.input.chars().count()
            ),
        }
    }
}

fn render_fields(fields: &FieldErrors) -> String {
    fields
        .iter()
        .map(|(field, message)| format!("{field}: {message}"))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_input_is_echoed_whole_and_long_input_as_a_prefix_with_its_length() {
        assert_eq!(echoed("agents.dance").to_string(), "'agents.dance'");
        let limit = "é".repeat(ECHO_MAX_CHARS);
        assert_eq!(echoed(&limit).to_string(), format!("'{limit}'"));
        let long = "é".repeat(100_000);
        let shown = echoed(&long).to_string();
        assert_eq!(shown, format!("'{limit}…' (100000 chars)"));
        let bare = Echoed::bare(&long).to_string();
        assert_eq!(bare, format!("{limit}… (100000 chars)"));
    }
}
