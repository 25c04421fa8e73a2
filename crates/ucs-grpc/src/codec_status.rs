//! Corrects the two statuses tonic's codec answers for bad requests before
//! any UCS code runs, so clients see SPEC section 9's codes (issue 7).
//!
//! tonic 0.14 decodes a request in `tonic::codec::decode` and answers:
//! - a message over `max_decoding_message_size` with OUT_OF_RANGE
//!   `"Error, decoded message length too large: found N bytes, the limit is:
//!   M bytes"` (`StreamingInner::decode_chunk`). OUT_OF_RANGE means "past the
//!   end of a valid range" (a seek past EOF); a request larger than the server
//!   accepts is RESOURCE_EXHAUSTED in gRPC's own table and in issue 7.
//! - a message prost cannot decode, e.g. invalid UTF-8 in a `string` field,
//!   with INTERNAL `"failed to decode Protobuf message: ..."`
//!   (`tonic_prost::codec::from_decode_error`). INTERNAL says the server is
//!   broken; here the client sent a malformed request, which is
//!   INVALID_ARGUMENT.
//!
//! The rewrite is narrow on purpose: only those two codes with those exact
//! message prefixes, and only in response headers, where a unary or
//! server-streaming call's request-decoding error is answered (a
//! trailers-only response). Every status UCS itself produces goes through
//! `status.rs` and never carries either text, so nothing else is touched.
//! If a tonic upgrade changes a message, `tests/security.rs` fails.

use tonic::codegen::http::{HeaderMap, Response};
use tonic::{Code, Status};

/// The start of tonic's message for a request over the size limit.
const TOO_LARGE_PREFIX: &str = "Error, decoded message length too large:";

/// The start of prost's `DecodeError` text, which tonic sends as is.
const UNDECODABLE_PREFIX: &str = "failed to decode Protobuf message:";

/// Rewrites the status of `response` if it is one of tonic's codec errors
/// above; any other response is returned unchanged.
pub(crate) fn rewrite<B>(mut response: Response<B>) -> Response<B> {
    if let Some(status) = corrected(response.headers()) {
        // `add_header` only fails for a message that is not a valid header
        // value, and a percent-encoded message always is; if it ever did
        // fail, the original status stands, which is still an answer.
        let _ = status.add_header(response.headers_mut());
    }
    response
}

/// The corrected status for headers that carry one of the two codec errors.
fn corrected(headers: &HeaderMap) -> Option<Status> {
    let code = Code::from_bytes(headers.get(Status::GRPC_STATUS)?.as_bytes());
    let wanted = match code {
        Code::OutOfRange => (TOO_LARGE_PREFIX, Code::ResourceExhausted),
        Code::Internal => (UNDECODABLE_PREFIX, Code::InvalidArgument),
        _ => return None,
    };
    let message = percent_decode(headers.get(Status::GRPC_MESSAGE)?.as_bytes())?;
    let (prefix, new_code) = wanted;
    message
        .starts_with(prefix)
        .then(|| Status::new(new_code, message))
}

/// Decodes gRPC's percent-encoded `grpc-message`; `None` if the result is
/// not UTF-8 (then it cannot be one of tonic's messages).
fn percent_decode(encoded: &[u8]) -> Option<String> {
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut rest = encoded;
    while let Some((&byte, tail)) = rest.split_first() {
        let hex = |digit: u8| char::from(digit).to_digit(16);
        match tail {
            [high, low, after @ ..] if byte == b'%' => {
                if let (Some(high), Some(low)) = (hex(*high), hex(*low)) {
                    // Two hex digits are at most 0xff.
                    bytes.push(u8::try_from(high * 16 + low).ok()?);
                    rest = after;
                    continue;
                }
                bytes.push(byte);
            }
            _ => bytes.push(byte),
        }
        rest = tail;
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trailers-only response carrying `status`, as tonic's server sends.
    fn response_with(status: &Status) -> Response<()> {
        let mut response = Response::new(());
        status.add_header(response.headers_mut()).unwrap();
        response
    }

    fn status_of(response: &Response<()>) -> (Code, String) {
        let headers = response.headers();
        let code = Code::from_bytes(headers[Status::GRPC_STATUS].as_bytes());
        let message = headers
            .get(Status::GRPC_MESSAGE)
            .map(|value| percent_decode(value.as_bytes()).unwrap())
            .unwrap_or_default();
        (code, message)
    }

    #[test]
    fn oversized_becomes_resource_exhausted_with_the_message_kept() {
        let text = "Error, decoded message length too large: found 4195334 bytes, the limit is: 4194304 bytes";
        let response = rewrite(response_with(&Status::out_of_range(text)));
        assert_eq!(
            status_of(&response),
            (Code::ResourceExhausted, text.to_owned())
        );
    }

    #[test]
    fn undecodable_becomes_invalid_argument() {
        let text = "failed to decode Protobuf message: CallRequest.args_json: invalid string value: data is not UTF-8 encoded";
        let response = rewrite(response_with(&Status::internal(text)));
        assert_eq!(
            status_of(&response),
            (Code::InvalidArgument, text.to_owned())
        );
    }

    #[test]
    fn every_other_status_is_left_alone() {
        for status in [
            Status::internal(crate::status::INTERNAL_MESSAGE),
            Status::internal("Error, decoded message length too large: x"),
            Status::out_of_range("failed to decode Protobuf message: x"),
            Status::out_of_range("index 9 is out of range"),
            Status::invalid_argument(r#"{"args_json":"is not valid JSON"}"#),
            Status::ok(""),
        ] {
            let before = status_of(&response_with(&status));
            let after = status_of(&rewrite(response_with(&status)));
            assert_eq!(before, after, "{status:?}");
        }
        // A plain response without a status (a streaming call's headers).
        let plain = rewrite(Response::new(()));
        assert!(plain.headers().is_empty());
    }

    #[test]
    fn percent_decoding_handles_every_shape() {
        assert_eq!(percent_decode(b"a%20b%25c").as_deref(), Some("a b%c"));
        assert_eq!(percent_decode(b"100%").as_deref(), Some("100%"));
        assert_eq!(percent_decode(b"%zz%2").as_deref(), Some("%zz%2"));
        assert_eq!(percent_decode(b"%C5%BE").as_deref(), Some("ž"));
        assert_eq!(percent_decode(b"%ff"), None);
    }
}
