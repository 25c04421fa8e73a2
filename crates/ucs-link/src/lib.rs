//! The link between the server and a plugin host, and the primitives that
//! supervise the host (issue 18, SPEC section 10).
//!
//! A process-isolated plugin runs in a child process; the server calls its
//! hooks across a socket while the plugin's own calls into `ucs.*` come back
//! the other way, from any thread, from inside a hook, re-entrantly. This
//! crate is the part that does not depend on what the messages mean: a
//! bidirectional, multiplexed RPC channel over a Unix socket pair
//! ([`Link`]), and pure-Rust supervision ([`supervise`]): restart intensity,
//! exit causes, spawning a limited child that dies with its parent. It knows
//! nothing of Python, gRPC or the other ucs crates.
//!
//! # The link
//! Each side of a [`Link<Out, In>`] sends `Out` requests with
//! [`Caller::call_with_deadline`] and serves the peer's `In` requests with
//! a handler; it also sends one-way `Out` notices with [`Caller::notify`]
//! and, started with [`Link::start_with_notices`], handles the peer's.
//! Frames are length-prefixed and carry a request id, so any number of
//! calls overlap both ways. The rules it keeps:
//! - no lock is held while waiting on the socket or on a reply (L5): a call
//!   waits on a channel of its own, and the reader thread hands it its
//!   reply by id;
//! - handlers run on a capped pool of the link's threads (I6); the thread
//!   that reads a request runs it, having first left the reading to another
//!   thread of the pool (leader and followers), so a request costs one
//!   wake-up, and a handler may call the peer and wait, and the peer's
//!   handler may call back, while another thread reads;
//! - a callback runs where it would in-process (I1): a call made while a
//!   thread runs this side's handler for the peer's request X is marked
//!   nested in X (a thread-local stack of (link, request) entries; only
//!   entries of the same link count), and the peer runs it on its thread
//!   waiting in X, inline, not on its pool. A re-entrant chain of any depth
//!   thus runs on the two threads it started on, keeps thread identity for
//!   thread ids, `threading.RLock` and `threading.local`, and takes no pool
//!   thread beyond the first (nested jobs do not count against
//!   `max_handlers`). A nested request still waiting when its call gives up
//!   is refused with [`RemoteFailure::CallerGone`] at once; one arriving
//!   after goes to the pool;
//! - notices are handled on the reader, one at a time, in frame order with
//!   the replies and requests around them: a notice sent before a reply is
//!   handled before that reply reaches its call (a plugin host's log records
//!   are logged before the call they were written in returns). A notice
//!   handler must not block, as the link reads nothing while it runs; a call
//!   from it on its own link fails at once with
//!   [`LinkError::CalledFromReader`];
//! - every call has a deadline, which covers the nested requests it runs
//!   while it waits; a reply after it is dropped;
//! - when the peer dies (end of stream, reset, a garbage or oversized frame)
//!   every pending call fails at once with [`LinkError::PeerGone`] and its
//!   [`CloseReason`], later calls fail at once, the pool stops, and
//!   [`Caller::on_close`] / [`Caller::wait_closed`] tell a supervisor;
//! - a frame is written by the thread that sends it, without waiting
//!   (`MSG_DONTWAIT`), whenever nothing is queued ahead of it; what a full
//!   socket does not take goes to a writer thread, and every later frame
//!   queues behind it, so frames never interleave, keep their order, and
//!   no caller blocks on a full socket;
//! - dropping the [`Link`] closes it and joins its threads.
//!
//! The codec is postcard: compact, fast, with a stable documented wire
//! format, and both ends are the same build, so a self-describing format
//! would buy nothing.
//!
//! # Layout
//! - `link`: [`Link`], [`Caller`], [`LinkConfig`], the [`Request`] trait,
//!   reading (`lead`), the writer thread, the waiting call, closing.
//! - `nested`: nested call routing: the thread-local stack of requests
//!   being handled, link identities, and the jobs a waiting call runs.
//! - `pool`: the threads that read and handle, the read side passed
//!   between them, their cap and the bounded queue.
//! - `outbox`: frames out, written by their sender or queued for the
//!   writer thread.
//! - `frame`: the wire format (length prefix, header, body) and the
//!   `send`s that write.
//! - `error`: [`LinkError`], the crate's one error type, with
//!   [`CloseReason`] and [`RemoteFailure`].
//! - `supervise`: restart intensity (`supervise/intensity.rs`), exit
//!   causes (`exit.rs`), spawning a linked, limited child and taking the
//!   link in it (`spawn.rs`).

mod error;
mod frame;
mod link;
mod nested;
mod outbox;
mod pool;
pub mod supervise;

pub use error::{CloseReason, LinkError, RemoteFailure};
pub use link::{Caller, Link, LinkConfig, LinkStats, Request, ShutdownReport};
