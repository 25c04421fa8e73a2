//! The wire format of a link, the only place that knows it.
//!
//! A frame is a `u32` little-endian length, then that many bytes: a postcard
//! [`Header`], then the postcard body the header announces (a request or a
//! notice, a reply, or a [`RemoteFailure`](crate::RemoteFailure)). The header is
//! decoded on its own first, so a body that does not decode is reported with
//! the frame it came in. Both ends are the same build of the same binary, so
//! the format needs no version field; a peer that is not gets a `BadFrame`
//! close rather than a misread.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, send};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::CloseReason;

/// The bytes of the length prefix.
const LENGTH_PREFIX: usize = 4;

/// A reused read buffer grown past this is given back after the frame, so
/// one large frame does not pin its size for the life of the link.
const KEEP_READ_BUFFER: usize = 1 << 20;

/// What a frame carries, ahead of its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Header {
    /// A request the sender wants run; the body is the request. `timeout_micros`
    /// is how long the sender will wait, so a request that waited in the
    /// peer's queue longer than that is skipped instead of run for nobody.
    Request {
        /// The sender's id for this call; the reply names it.
        id: u64,
        /// The caller's deadline, in microseconds from sending.
        timeout_micros: u64,
        /// The receiver's id of the request whose handler made this call,
        /// if the call was made from inside one: the receiver then runs it
        /// on the thread waiting in that call, as in-process (I1).
        nested_in: Option<u64>,
    },
    /// The reply to the request `id` the receiver sent; the body is the reply.
    Reply {
        /// The request this answers.
        id: u64,
    },
    /// The request `id` was not run; the body is a `RemoteFailure`.
    Failed {
        /// The request this answers.
        id: u64,
    },
    /// A one-way message, handled on the receiver's reader in frame order
    /// and never answered; the body is a request.
    Notice,
}

/// Why a frame could not be built.
#[derive(Debug)]
pub(crate) enum EncodeError {
    /// It encodes to `len` bytes, more than the maximum.
    TooLarge { len: usize },
    /// Postcard refused the value.
    Postcard(postcard::Error),
}

/// Encodes one whole frame, length prefix included, ready for one write.
pub(crate) fn encode<B: Serialize + ?Sized>(
    header: &Header,
    body: &B,
    max_frame_bytes: u32,
) -> Result<Vec<u8>, EncodeError> {
    let buffer = vec![0u8; LENGTH_PREFIX];
    let buffer = postcard::to_extend(header, buffer).map_err(EncodeError::Postcard)?;
    let mut buffer = postcard::to_extend(body, buffer).map_err(EncodeError::Postcard)?;
    let len = buffer.len() - LENGTH_PREFIX;
    let prefix = u32::try_from(len)
        .ok()
        .filter(|len| *len <= max_frame_bytes)
        .ok_or(EncodeError::TooLarge { len })?;
    buffer[..LENGTH_PREFIX].copy_from_slice(&prefix.to_le_bytes());
    Ok(buffer)
}

/// Reads the next frame's bytes (without the prefix) into `frame`.
///
/// An end of stream before the first byte of a frame is the peer closing;
/// anywhere else it is a truncated frame. A length over `max_frame_bytes`
/// closes the link before anything is allocated for it.
pub(crate) fn read_frame(
    reader: &mut impl Read,
    max_frame_bytes: u32,
    frame: &mut Vec<u8>,
) -> Result<(), CloseReason> {
    let mut prefix = [0u8; LENGTH_PREFIX];
    let mut filled = 0;
    while filled < LENGTH_PREFIX {
        match reader.read(&mut prefix[filled..]) {
            Ok(0) if filled == 0 => return Err(CloseReason::PeerClosed),
            Ok(0) => return Err(CloseReason::Truncated),
            Ok(read) => filled += read,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(read_error(err)),
        }
    }
    let len = u32::from_le_bytes(prefix);
    if len > max_frame_bytes {
        return Err(CloseReason::FrameTooLarge {
            len,
            max: max_frame_bytes,
        });
    }
    if len == 0 {
        return Err(CloseReason::Protocol("an empty frame".to_owned()));
    }
    if frame.capacity() > KEEP_READ_BUFFER {
        *frame = Vec::new();
    }
    frame.clear();
    // `len` is at most `max_frame_bytes`, so this allocation is bounded.
    frame.resize(len as usize, 0);
    reader.read_exact(frame).map_err(|err| {
        if err.kind() == io::ErrorKind::UnexpectedEof {
            CloseReason::Truncated
        } else {
            read_error(err)
        }
    })
}

/// A read error as a close reason.
fn read_error(err: io::Error) -> CloseReason {
    CloseReason::Read(std::sync::Arc::new(err))
}

/// Splits a frame into its header and the body's bytes.
pub(crate) fn split_header(frame: &[u8]) -> Result<(Header, &[u8]), CloseReason> {
    postcard::take_from_bytes(frame).map_err(|source| CloseReason::BadFrame {
        what: "frame header",
        source,
    })
}

/// Decodes a body that must fill the rest of its frame exactly.
pub(crate) fn decode_body<T: DeserializeOwned>(
    body: &[u8],
    what: &'static str,
) -> Result<T, CloseReason> {
    let (value, rest) =
        postcard::take_from_bytes(body).map_err(|source| CloseReason::BadFrame { what, source })?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(CloseReason::Protocol(format!(
            "{} bytes after the {what}",
            rest.len()
        )))
    }
}

/// Writes one frame completely, waiting for room in the socket as long as
/// it takes.
pub(crate) fn write_frame(stream: &UnixStream, bytes: &[u8]) -> io::Result<()> {
    send_all(stream, bytes, MsgFlags::empty()).map(drop)
}

/// Writes as much of `bytes` as the socket takes without waiting, and says
/// how much that was (0 for a full socket).
pub(crate) fn send_without_waiting(stream: &UnixStream, bytes: &[u8]) -> io::Result<usize> {
    send_all(stream, bytes, MsgFlags::MSG_DONTWAIT)
}

/// The one `send` loop: all of `bytes`, or up to a full socket with
/// `MSG_DONTWAIT` (`EAGAIN`); how much went.
///
/// `send` with `MSG_NOSIGNAL` rather than `write`: a write to a peer that is
/// gone must be an `EPIPE` error here, never a `SIGPIPE` that kills this
/// process, whatever the process's signal disposition is (an embedded
/// interpreter or a plugin may have reset it to the default).
fn send_all(stream: &UnixStream, bytes: &[u8], flags: MsgFlags) -> io::Result<usize> {
    let flags = flags | MsgFlags::MSG_NOSIGNAL;
    let mut sent = 0;
    while sent < bytes.len() {
        match send(stream.as_raw_fd(), &bytes[sent..], flags) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(more) => sent += more,
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) if flags.contains(MsgFlags::MSG_DONTWAIT) => break,
            Err(errno) => return Err(errno.into()),
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_reads_back_as_it_was_encoded() {
        for header in [
            Header::Request {
                id: 7,
                timeout_micros: 1_000,
                nested_in: None,
            },
            Header::Request {
                id: 8,
                timeout_micros: 1_000,
                nested_in: Some(3),
            },
            Header::Notice,
        ] {
            let bytes = encode(&header, &("hello", 42u32), 1024).expect("encodes");
            let mut frame = Vec::new();
            read_frame(&mut &bytes[..], 1024, &mut frame).expect("reads");
            let (read_header, body) = split_header(&frame).expect("header");
            assert_eq!(read_header, header);
            let body: (String, u32) = decode_body(body, "body").expect("body");
            assert_eq!(body, ("hello".to_owned(), 42));
        }
    }

    /// The variants' order is the wire format: tests and tools that write
    /// frames by hand rely on it.
    #[test]
    fn header_variants_keep_their_wire_numbers() {
        let request = Header::Request {
            id: 1,
            timeout_micros: 2,
            nested_in: Some(3),
        };
        assert_eq!(
            postcard::to_stdvec(&request).expect("encodes"),
            [0, 1, 2, 1, 3]
        );
        assert_eq!(
            postcard::to_stdvec(&Header::Reply { id: 1 }).expect("encodes"),
            [1, 1]
        );
        assert_eq!(
            postcard::to_stdvec(&Header::Failed { id: 1 }).expect("encodes"),
            [2, 1]
        );
        assert_eq!(postcard::to_stdvec(&Header::Notice).expect("encodes"), [3]);
    }

    #[test]
    fn an_oversized_body_is_refused_when_encoding() {
        let big = vec![1u8; 100];
        match encode(&Header::Reply { id: 1 }, &big, 50) {
            Err(EncodeError::TooLarge { len }) => assert!(len > 100),
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn trailing_bytes_after_a_body_break_the_protocol() {
        let mut body = postcard::to_stdvec(&5u8).expect("encodes");
        body.push(0);
        match decode_body::<u8>(&body, "reply body") {
            Err(CloseReason::Protocol(message)) => assert!(message.contains("1 bytes after")),
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }

    #[test]
    fn end_of_stream_between_frames_and_inside_one_differ() {
        let mut frame = Vec::new();
        assert!(matches!(
            read_frame(&mut &[][..], 64, &mut frame),
            Err(CloseReason::PeerClosed)
        ));
        assert!(matches!(
            read_frame(&mut &[3u8, 0][..], 64, &mut frame),
            Err(CloseReason::Truncated)
        ));
        assert!(matches!(
            read_frame(&mut &[3u8, 0, 0, 0, 1][..], 64, &mut frame),
            Err(CloseReason::Truncated)
        ));
    }
}
