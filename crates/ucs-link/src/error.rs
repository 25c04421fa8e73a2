//! The crate's one error type, [`LinkError`], and the reasons it carries:
//! why a link closed ([`CloseReason`]) and why the peer did not run a request
//! ([`RemoteFailure`]).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything that can go wrong on a link or while spawning a linked child.
///
/// A caller tells the cases apart because each asks for something different:
/// [`DeadlineExceeded`](LinkError::DeadlineExceeded) means the peer is slow
/// (a supervisor kills it, I3), [`PeerGone`](LinkError::PeerGone) means it is
/// dead or the link is closed (a supervisor restarts it, I2), and
/// [`Remote`](LinkError::Remote) means it is alive but refused this one
/// request (it is busy, I6, or its handler panicked).
#[derive(Debug, Clone, thiserror::Error)]
pub enum LinkError {
    /// No reply came within the call's deadline. The request may still run
    /// on the peer; its reply, if it ever comes, is dropped.
    #[error("no reply within {0:?}")]
    DeadlineExceeded(Duration),
    /// The link is closed: the peer died, sent garbage, or this side shut the
    /// link down. Every call pending at that moment fails with this, and so
    /// does every later one, at once.
    #[error("the link is gone: {0}")]
    PeerGone(#[source] CloseReason),
    /// The peer is alive but did not run the request.
    #[error("the peer did not run the request: {0}")]
    Remote(#[source] RemoteFailure),
    /// The request encodes to more than a frame may hold. Nothing was sent
    /// and the link stays open: it is this request that is wrong.
    #[error("the request is {len} bytes encoded, more than the {max} a frame may hold")]
    RequestTooLarge {
        /// The encoded size of the request.
        len: usize,
        /// The link's maximum frame size.
        max: u32,
    },
    /// The request could not be encoded (a `Serialize` impl failed, or the
    /// type uses something postcard cannot encode, such as a map of unknown
    /// length). Nothing was sent and the link stays open.
    #[error("the request could not be encoded: {0}")]
    Encode(#[source] postcard::Error),
    /// A thread of the link could not be started.
    #[error("could not start the link's {what} thread: {source}")]
    StartThread {
        /// Which thread.
        what: &'static str,
        /// What the OS said.
        #[source]
        source: Arc<io::Error>,
    },
    /// The socket could not be duplicated for the link's reader and writer.
    #[error("could not duplicate the link's socket: {0}")]
    CloneSocket(#[source] Arc<io::Error>),
    /// Spawning a linked child failed (the socket pair, `fork`/`exec`, or a
    /// step of the child's setup before `exec`, whose errno is kept).
    #[error("could not spawn {program}: {source}")]
    Spawn {
        /// The program that was to run.
        program: String,
        /// What failed.
        #[source]
        source: Arc<io::Error>,
    },
    /// The call was made on the link's own reader thread (from a notice
    /// handler): its reply could only be read by the thread that would be
    /// waiting for it, so it fails at once instead of stalling the link
    /// until its deadline. Nothing was sent.
    #[error(
        "a call from the link's own reader thread (a notice handler) could never get its reply"
    )]
    CalledFromReader,
    /// This process was not started as a linked child, or its inherited link
    /// fd is unusable.
    #[error("no inherited link: {0}")]
    NoInheritedLink(String),
}

/// Why a link closed. Every pending and later call carries it in
/// [`LinkError::PeerGone`], and [`crate::Link::wait_closed`] and
/// [`crate::Caller::on_close`] hand it to a supervisor.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CloseReason {
    /// The peer closed its end cleanly between two frames: it exited, was
    /// killed (the kernel closes a dead process's fds), or dropped its link.
    #[error("the peer closed the connection")]
    PeerClosed,
    /// The stream ended in the middle of a frame: the peer died while
    /// writing, or something else wrote to the socket.
    #[error("the connection ended in the middle of a frame")]
    Truncated,
    /// Reading failed, e.g. `ECONNRESET` when the peer died with data unread.
    #[error("reading from the peer failed: {0}")]
    Read(#[source] Arc<io::Error>),
    /// Writing failed, e.g. `EPIPE` once the peer is gone.
    #[error("writing to the peer failed: {0}")]
    Write(#[source] Arc<io::Error>),
    /// The peer announced a frame larger than this side accepts. The link
    /// closes without reading it: its length cannot be trusted, and reading
    /// it would let a broken peer make this process allocate at will.
    #[error("the peer sent a frame of {len} bytes, more than the {max} allowed")]
    FrameTooLarge {
        /// The announced length.
        len: u32,
        /// This side's maximum frame size.
        max: u32,
    },
    /// A frame's bytes do not decode as this link's messages: the peer is
    /// broken, or is not the same build.
    #[error("the peer sent a frame that does not decode ({what}): {source}")]
    BadFrame {
        /// Which part failed to decode.
        what: &'static str,
        /// Postcard's reason.
        #[source]
        source: postcard::Error,
    },
    /// A frame decoded but breaks the protocol (an empty frame, trailing
    /// bytes, a reply to a request that was never made).
    #[error("the peer broke the protocol: {0}")]
    Protocol(String),
    /// This side shut the link down ([`crate::Link::close`] or drop).
    #[error("the link was shut down on this side")]
    ShutDown,
}

/// Why the peer did not run a request, as it reports it in a `Failed`
/// frame. The link stays open after any of these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RemoteFailure {
    /// All the peer's handler threads are busy and its queue is full: the
    /// request was refused at once rather than queued without bound (I6).
    #[error(
        "the peer is busy: its {max_handlers} handler threads are running and {max_queued} requests already wait"
    )]
    Busy {
        /// The peer's cap on handler threads.
        max_handlers: u32,
        /// The peer's cap on queued requests.
        max_queued: u32,
    },
    /// The peer could not start a handler thread at all.
    #[error("the peer could not start a handler thread: {0}")]
    NoThread(String),
    /// The peer's handler panicked; the panic message is kept.
    #[error("the peer's handler panicked: {0}")]
    HandlerPanicked(String),
    /// The handler's reply encodes to more than a frame may hold.
    #[error("the peer's reply is {len} bytes encoded, more than the {max} a frame may hold")]
    ReplyTooLarge {
        /// The encoded size of the reply.
        len: u64,
        /// The peer's maximum frame size.
        max: u32,
    },
    /// The handler's reply could not be encoded.
    #[error("the peer's reply could not be encoded: {0}")]
    ReplyNotEncodable(String),
    /// The request was a callback into one of the peer's calls (a nested
    /// call) and that call gave up (its deadline passed) before the request
    /// could run on its thread. Refused at once, so the caller does not wait
    /// for its own deadline for an answer nobody will use.
    #[error("the peer's call this request was nested in has stopped waiting")]
    CallerGone,
}
