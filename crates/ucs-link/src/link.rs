//! The link itself: calls out, replies in, requests in to the pool or to the
//! call they are nested in, notices in to the notice handler, and closing.
//!
//! Threads: the pool's (`pool.rs`), of which one at a time reads ([`lead`]:
//! decodes frames, hands replies to the waiting calls by id and nested
//! requests to the calls they are nested in, and runs the notice handler,
//! in frame order; another request it runs itself once it has left the
//! reading to another pool thread, so nothing a handler does can stop the
//! reading), and one writer (writes only what a sender could not write
//! without waiting, `outbox.rs`, so no caller blocks on a full socket). A
//! pending call waits on its own channel with no lock held (L5), for its
//! answer or for the peer's callbacks into it, which it runs itself
//! (`nested.rs`).

use std::collections::HashMap;
use std::net::Shutdown;
use std::num::NonZeroU32;
use std::os::unix::net::UnixStream;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{CloseReason, LinkError, RemoteFailure};
use crate::frame::{self, EncodeError, Header};
use crate::nested::{self, Arrival};
use crate::outbox::{Outbox, SendError};
use crate::pool::{HandOff, Job, NoticeHandler, Pool, ReadSide};

/// A message one side sends the other to have it run, and the type of its
/// answer.
///
/// Each direction of a link has its own request type: the server side of a
/// plugin host's link is a `Link<HostRequest, ServerRequest>` and the host's
/// a `Link<ServerRequest, HostRequest>`, so a side can only send what the
/// other side serves. The types must be plain serde-derived data: postcard
/// is not self-describing, so `#[serde(untagged)]`, `#[serde(flatten)]` and
/// `serde_json::Value` do not decode.
pub trait Request: Serialize + DeserializeOwned + Send + 'static {
    /// What the peer's handler answers.
    type Response: Serialize + DeserializeOwned + Send + 'static;
}

/// How a link behaves; one per link, fixed at start.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Names the link in its threads' names (`NAME-handle` for the pool's,
    /// which read and run handlers, `NAME-write`) and its log lines. Linux shows 15 bytes of a thread
    /// name, so keep it to about 9.
    pub name: String,
    /// The largest frame either way. A request over it fails its call, a
    /// reply over it fails the peer's call, a frame announced over it from
    /// the peer closes the link (its length cannot be trusted).
    pub max_frame_bytes: u32,
    /// The deadline of [`Caller::call`]; [`Caller::call_with_deadline`]
    /// overrides it per call.
    pub call_deadline: Duration,
    /// The most pool threads that run this side's handler at once (I6: a
    /// plugin never holds more than its share of the server's threads); the
    /// pool has one thread more, the one that reads.
    ///
    /// A nested request (the peer calling back into a call this side is
    /// waiting in, from the handler serving it) does not count against it:
    /// it runs on the thread waiting in that call, which is blocked anyway.
    /// So a re-entrant chain of any depth holds one pool thread, on the side
    /// it first crossed to: every level that comes back runs on the thread
    /// that started the chain, every deeper level on that one pool thread.
    pub max_handlers: NonZeroU32,
    /// How many requests may wait for a handler thread once all are busy;
    /// past that a request is refused at once with
    /// [`RemoteFailure::Busy`]. A queued request whose caller has given up
    /// is skipped, not run.
    pub max_queued: u32,
    /// How long closing the link waits for handlers still running before it
    /// leaves their threads behind (they finish on their own; their replies
    /// go nowhere).
    pub shutdown_grace: Duration,
}

impl LinkConfig {
    /// The defaults, with a name.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            name: "ucs-link".to_owned(),
            max_frame_bytes: 16 << 20,
            call_deadline: Duration::from_secs(10),
            max_handlers: NonZeroU32::new(4).unwrap_or(NonZeroU32::MIN),
            max_queued: 64,
            shutdown_grace: Duration::from_secs(1),
        }
    }
}

/// Counters of things that happen on a link without failing a call, for
/// metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkStats {
    /// Replies that arrived after their call's deadline and were dropped.
    pub late_replies: u64,
    /// Requests from the peer refused because every handler was busy and
    /// the queue was full.
    pub refused_busy: u64,
    /// Requests from the peer skipped because their caller's deadline had
    /// passed while they waited in the queue.
    pub expired_in_queue: u64,
    /// Handler calls that panicked (the peer got `HandlerPanicked`), and
    /// notice handler calls that panicked (nobody is told but the log).
    pub handler_panics: u64,
    /// Requests from the peer nested in a call of this side, handed to the
    /// thread waiting in that call instead of the pool.
    pub nested_inline: u64,
    /// Nested requests refused with [`RemoteFailure::CallerGone`]: the call
    /// they were nested in gave up before they could run.
    pub nested_refused: u64,
}

/// What closing the link found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Threads of the link that were joined.
    pub joined: usize,
    /// Handler threads still running a handler when the grace period ended;
    /// they were left to finish on their own.
    pub stuck_handlers: usize,
}

/// The atomic counters behind [`LinkStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// See [`LinkStats::late_replies`].
    pub(crate) late_replies: AtomicU64,
    /// See [`LinkStats::refused_busy`].
    pub(crate) refused_busy: AtomicU64,
    /// See [`LinkStats::expired_in_queue`].
    pub(crate) expired_in_queue: AtomicU64,
    /// See [`LinkStats::handler_panics`].
    pub(crate) handler_panics: AtomicU64,
    /// See [`LinkStats::nested_inline`].
    pub(crate) nested_inline: AtomicU64,
    /// See [`LinkStats::nested_refused`].
    pub(crate) nested_refused: AtomicU64,
}

/// The most nested requests that may wait in one call's channel while its
/// thread is busy. A well-behaved peer has at most one: only the thread
/// running the handler of that call sends nested requests, and it waits in
/// each. More means a broken peer flooding one call; those go to the pool
/// instead, whose bounds refuse them.
const MAX_NESTED_WAITING: u32 = 8;

/// A call waiting for its answer.
struct Pending<R> {
    /// Where the reader puts the answer and the nested requests, in the
    /// order it reads them.
    slot: Sender<Arrival<R>>,
    /// Nested requests sent to `slot` and not yet taken by the call.
    nested_waiting: u32,
}

/// A callback run once when the link closes.
type OnClose = Box<dyn FnOnce(&CloseReason) + Send>;

/// Whether the link is open, with what only an open link has.
enum CallState<R> {
    /// Calls can be made.
    Open {
        /// The calls waiting for a reply, by id.
        pending: HashMap<u64, Pending<R>>,
        /// Run once, on close.
        on_close: Vec<OnClose>,
    },
    /// Closed for good, and why.
    Closed(CloseReason),
}

/// The calling half of a link, shared by every [`Caller`], the reader, the
/// writer and the handler threads.
pub(crate) struct Shared<Out: Request> {
    /// This link among all the process's links, for nested call routing:
    /// a thread handling a request of this link marks its calls on this
    /// link, and only these, as nested (`nested.rs`).
    link_id: u64,
    /// See [`LinkConfig::name`].
    name: String,
    /// See [`LinkConfig::max_frame_bytes`].
    pub(crate) max_frame_bytes: u32,
    /// See [`LinkConfig::call_deadline`].
    call_deadline: Duration,
    /// Open with the pending calls, or closed with the reason. Held only to
    /// insert, remove or swap, never across a wait (L5).
    calls: Mutex<CallState<Out::Response>>,
    /// Signalled when `calls` becomes `Closed`, and when its last pending
    /// call ends while someone waits for that ([`Caller::wait_idle`]).
    closed: Condvar,
    /// Threads in [`Caller::wait_idle`]: only then does ending a call
    /// signal `closed`, so the hot path makes no futex call.
    idle_waiters: AtomicUsize,
    /// The next request id. Ids of one side only ever grow, so a reply with
    /// an id not yet handed out is a protocol error, not a late reply.
    next_id: AtomicU64,
    /// Where frames go out (`outbox.rs`).
    outbox: Arc<Outbox>,
    /// The socket, kept to shut it down on close: that wakes the reader out
    /// of `read` and the writer out of `send`, and tells the peer at once
    /// even while other handles of the fd are still open.
    socket: UnixStream,
    /// Stops the handler pool on close. Weak, because the pool's handler may
    /// own a `Caller`, which owns this.
    stop_pool: Box<dyn Fn() + Send + Sync>,
    /// See [`LinkStats`].
    pub(crate) counters: Counters,
}

/// Locks a mutex, taking the data of a poisoned one: every critical section
/// here leaves its data consistent, so a panic elsewhere does not make it
/// unusable.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<Out: Request> Shared<Out> {
    /// Closes the link once; later calls are no-ops, so the first reason
    /// stays (a local shutdown makes the reader see an end of stream, which
    /// must not overwrite `ShutDown`).
    pub(crate) fn close(&self, reason: CloseReason) {
        let (pending, on_close) = {
            let mut calls = lock(&self.calls);
            if matches!(*calls, CallState::Closed(_)) {
                return;
            }
            match std::mem::replace(&mut *calls, CallState::Closed(reason.clone())) {
                CallState::Open { pending, on_close } => (pending, on_close),
                CallState::Closed(_) => return,
            }
        };
        tracing::debug!(link = %self.name, %reason, "link closed");
        self.closed.notify_all();
        // Errors here mean the socket is already shut or the writer already
        // gone, which is what is wanted.
        let _ = self.socket.shutdown(Shutdown::Both);
        self.outbox.close();
        (self.stop_pool)();
        for (_, call) in pending {
            // A dropped channel means the call gave up.
            let _ = call
                .slot
                .send(Arrival::Answer(Err(LinkError::PeerGone(reason.clone()))));
        }
        for callback in on_close {
            callback(&reason);
        }
    }

    /// Why the link closed, if it has.
    fn close_reason(&self) -> Option<CloseReason> {
        match &*lock(&self.calls) {
            CallState::Open { .. } => None,
            CallState::Closed(reason) => Some(reason.clone()),
        }
    }

    /// Hands a reply (or failure) to the call waiting for it. A reply to a
    /// call that gave up is dropped and counted; a reply to an id never
    /// handed out closes the link.
    fn deliver(&self, id: u64, reply: Result<Out::Response, LinkError>) -> Result<(), CloseReason> {
        let call = match &mut *lock(&self.calls) {
            CallState::Open { pending, .. } => {
                let call = pending.remove(&id);
                self.signal_if_idle(pending.is_empty());
                call
            }
            CallState::Closed(_) => return Ok(()),
        };
        match call {
            Some(call) => {
                // Fails only if the call gave up after `remove`; then the
                // reply is late and goes nowhere.
                let _ = call.slot.send(Arrival::Answer(reply));
                Ok(())
            }
            None if id >= self.next_id.load(Ordering::SeqCst) => Err(CloseReason::Protocol(
                format!("a reply to request {id}, which was never made"),
            )),
            None => {
                self.counters.late_replies.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    /// Removes a call that stopped waiting.
    fn forget(&self, id: u64) {
        if let CallState::Open { pending, .. } = &mut *lock(&self.calls) {
            pending.remove(&id);
            self.signal_if_idle(pending.is_empty());
        }
    }

    /// Wakes [`Caller::wait_idle`] once no call is pending; called with
    /// `calls` locked, so a waiter that has counted itself cannot miss it.
    fn signal_if_idle(&self, idle: bool) {
        if idle && self.idle_waiters.load(Ordering::SeqCst) > 0 {
            self.closed.notify_all();
        }
    }

    /// The channel of the pending call `id`, for a request nested in it;
    /// `None` if it is not pending (it gave up, or it was answered), or if
    /// it already has [`MAX_NESTED_WAITING`] nested requests waiting.
    /// Counts the request as waiting until [`Shared::took_nested`].
    fn nested_slot(&self, id: u64) -> Option<Sender<Arrival<Out::Response>>> {
        match &mut *lock(&self.calls) {
            CallState::Open { pending, .. } => {
                let call = pending.get_mut(&id)?;
                if call.nested_waiting >= MAX_NESTED_WAITING {
                    return None;
                }
                call.nested_waiting += 1;
                Some(call.slot.clone())
            }
            CallState::Closed(_) => None,
        }
    }

    /// The call `id` took one of its nested requests out of its channel.
    fn took_nested(&self, id: u64) {
        if let CallState::Open { pending, .. } = &mut *lock(&self.calls)
            && let Some(call) = pending.get_mut(&id)
        {
            call.nested_waiting = call.nested_waiting.saturating_sub(1);
        }
    }

    /// Encodes a request or a notice of this side, failing as a call does.
    fn encode_out(&self, header: &Header, request: &Out) -> Result<Vec<u8>, LinkError> {
        frame::encode(header, request, self.max_frame_bytes).map_err(|err| match err {
            EncodeError::TooLarge { len } => LinkError::RequestTooLarge {
                len,
                max: self.max_frame_bytes,
            },
            EncodeError::Postcard(err) => LinkError::Encode(err),
        })
    }

    /// Sends a frame, closing the link if writing fails. `Err` once the
    /// link is closed.
    pub(crate) fn send_frame(&self, bytes: Vec<u8>) -> Result<(), ()> {
        match self.outbox.send(bytes) {
            Ok(()) => Ok(()),
            Err(SendError::Closed) => Err(()),
            Err(SendError::Write(err)) => {
                self.close(CloseReason::Write(Arc::new(err)));
                Err(())
            }
        }
    }

    /// Answers the peer's request `id` with a failure.
    pub(crate) fn send_failed(&self, id: u64, failure: &RemoteFailure) {
        match frame::encode(&Header::Failed { id }, failure, self.max_frame_bytes) {
            // A closed link: the peer learns that anyway.
            Ok(bytes) => drop(self.send_frame(bytes)),
            // A failure is a few bytes; this only happens with an absurdly
            // small frame limit, and then the peer's call runs into its
            // deadline instead.
            Err(err) => tracing::error!(link = %self.name, ?err, "cannot encode a failure reply"),
        }
    }

    /// Answers the peer's request `id` with its handler's reply.
    pub(crate) fn send_reply<R: Serialize>(&self, id: u64, reply: &R) {
        match frame::encode(&Header::Reply { id }, reply, self.max_frame_bytes) {
            Ok(bytes) => drop(self.send_frame(bytes)),
            Err(EncodeError::TooLarge { len }) => self.send_failed(
                id,
                &RemoteFailure::ReplyTooLarge {
                    len: len as u64,
                    max: self.max_frame_bytes,
                },
            ),
            Err(EncodeError::Postcard(err)) => {
                self.send_failed(id, &RemoteFailure::ReplyNotEncodable(err.to_string()))
            }
        }
    }

    /// The link's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// This link's identity among the process's links (for `Handling`).
    pub(crate) fn link_id(&self) -> u64 {
        self.link_id
    }
}

/// The calling side of a link: cheap to clone, usable from any thread,
/// including from inside a handler of the same link (a re-entrant call).
///
/// A `Caller` does not keep the link's threads alive: once the [`Link`] is
/// closed or dropped, every call fails at once with
/// [`LinkError::PeerGone`].
pub struct Caller<Out: Request> {
    /// The link's state.
    shared: Arc<Shared<Out>>,
}

impl<Out: Request> Clone for Caller<Out> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<Out: Request> std::fmt::Debug for Caller<Out> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("name", &self.shared.name)
            .field("closed", &self.shared.close_reason())
            .finish()
    }
}

impl<Out: Request> Caller<Out> {
    /// Wraps the shared state (for the handler threads).
    pub(crate) fn from_shared(shared: Arc<Shared<Out>>) -> Self {
        Self { shared }
    }

    /// The shared state (for the handler threads).
    pub(crate) fn shared(&self) -> &Shared<Out> {
        &self.shared
    }

    /// Sends `request` and waits for the peer's reply, at most the link's
    /// [`LinkConfig::call_deadline`].
    pub fn call(&self, request: Out) -> Result<Out::Response, LinkError> {
        self.call_with_deadline(request, self.shared.call_deadline)
    }

    /// Sends `request` and waits for the peer's reply, at most `deadline`.
    ///
    /// Blocks the calling thread with no lock held. Past the deadline it
    /// returns [`LinkError::DeadlineExceeded`] and the reply, should it
    /// come, is dropped; the link stays open. If the link closes meanwhile
    /// it returns [`LinkError::PeerGone`] at once.
    ///
    /// While it waits, the peer's handler for this request may call back
    /// into this side (a nested call): such a request runs here, on the
    /// calling thread, as it would in-process (I1), and the wait goes on.
    /// The deadline covers that time too, but a nested handler that is
    /// running when it passes is not interrupted: the call returns once the
    /// handler does. Nested requests still waiting when the call gives up
    /// are refused with [`RemoteFailure::CallerGone`]. A call made from
    /// inside this side's handler for a peer's request is itself marked as
    /// nested in that request, and the peer runs it on its thread waiting
    /// in that request.
    pub fn call_with_deadline(
        &self,
        request: Out,
        deadline: Duration,
    ) -> Result<Out::Response, LinkError> {
        let shared = &*self.shared;
        if nested::is_reader_of(shared.link_id) {
            return Err(LinkError::CalledFromReader);
        }
        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        let timeout_micros = u64::try_from(deadline.as_micros()).unwrap_or(u64::MAX);
        let header = Header::Request {
            id,
            timeout_micros,
            nested_in: nested::nested_in(shared.link_id),
        };
        let bytes = shared.encode_out(&header, &request)?;
        let (slot, arrivals) = mpsc::channel();
        match &mut *lock(&shared.calls) {
            CallState::Closed(reason) => return Err(LinkError::PeerGone(reason.clone())),
            CallState::Open { pending, .. } => {
                pending.insert(
                    id,
                    Pending {
                        slot,
                        nested_waiting: 0,
                    },
                );
            }
        }
        let gives_up = Instant::now().checked_add(deadline);
        if shared.send_frame(bytes).is_err() {
            shared.forget(id);
            return Err(self.gone());
        }
        loop {
            let arrival = match gives_up {
                // Checked before receiving, not left to `recv_timeout`: with
                // a nested request already waiting, a zero timeout would
                // still hand it over and run it past the deadline.
                Some(gives_up) => match gives_up.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => arrivals.recv_timeout(left),
                    _ => Err(RecvTimeoutError::Timeout),
                },
                None => arrivals.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match arrival {
                Ok(Arrival::Answer(result)) => return result,
                Ok(Arrival::Nested(job)) => {
                    shared.took_nested(id);
                    if shared.close_reason().is_some() {
                        // Its reply could go nowhere; the answer behind it
                        // is `PeerGone`. Dropping refuses it, to no one.
                        drop(job);
                    } else {
                        job.run();
                    }
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return Err(self.gone()),
            }
        }
        shared.forget(id);
        // What landed between the timeout and `forget`: a reply is handed
        // over rather than wasted, the work is done; a nested request is
        // refused (dropping it does) so its caller does not wait in vain.
        // Anything the reader sends after this finds the channel gone, or
        // is dropped with it, and is refused the same way.
        let mut answer = Err(LinkError::DeadlineExceeded(deadline));
        for arrival in arrivals.try_iter() {
            if let Arrival::Answer(result) = arrival {
                answer = result;
            }
        }
        answer
    }

    /// Sends `notice` to the peer as a one-way message: no id, no reply, no
    /// wait beyond handing the frame to the writer.
    ///
    /// The peer handles notices on its reader thread, in frame order with
    /// everything else this side sends. So a notice sent before a call, or
    /// before a handler returns its reply, from the same thread, has been
    /// handled by the peer before that request reaches its handler or that
    /// reply reaches its caller: a plugin host's log records reach the
    /// server's log before the call they were written in returns, with no
    /// round trip. Fails as a call does if the link is closed or the notice
    /// does not fit a frame; a link started without a notice handler drops
    /// it on arrival.
    pub fn notify(&self, notice: Out) -> Result<(), LinkError> {
        let shared = &*self.shared;
        let bytes = shared.encode_out(&Header::Notice, &notice)?;
        if let Some(reason) = shared.close_reason() {
            return Err(LinkError::PeerGone(reason));
        }
        shared.send_frame(bytes).map_err(|()| self.gone())
    }

    /// The error for a call on a closed link.
    fn gone(&self) -> LinkError {
        LinkError::PeerGone(self.shared.close_reason().unwrap_or(CloseReason::ShutDown))
    }

    /// Why the link closed, or `None` while it is open.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.shared.close_reason()
    }

    /// Waits until the link closes, at most `timeout`; `None` if it is
    /// still open then. For a supervisor that has nothing else to wait on.
    pub fn wait_closed(&self, timeout: Duration) -> Option<CloseReason> {
        self.wait_for(timeout, |calls| match calls {
            CallState::Closed(reason) => Some(reason.clone()),
            CallState::Open { .. } => None,
        })
    }

    /// Waits, at most `timeout`, until `done` finds what it waits for in
    /// the call state, re-checked whenever `closed` is signalled.
    fn wait_for<T>(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&CallState<Out::Response>) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut calls = lock(&self.shared.calls);
        loop {
            if let Some(found) = done(&calls) {
                return Some(found);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            calls = self
                .shared
                .closed
                .wait_timeout(calls, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Waits until no call of this side is waiting for a reply (or the link
    /// is closed), at most `timeout`; `false` if calls are still pending
    /// then. For ending a peer only after the calls already in it have
    /// their answers: a plugin that unloads itself from inside its own hook
    /// still returns from that hook (I1).
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        // Counted before the first check, under no lock: a call ending in
        // between signals, and the check under the lock sees it either way.
        self.shared.idle_waiters.fetch_add(1, Ordering::SeqCst);
        let idle = self.wait_for(timeout, |calls| match calls {
            CallState::Open { pending, .. } if !pending.is_empty() => None,
            CallState::Open { .. } | CallState::Closed(_) => Some(()),
        });
        self.shared.idle_waiters.fetch_sub(1, Ordering::SeqCst);
        idle.is_some()
    }

    /// Whether a call of this side is waiting for a reply.
    pub fn has_pending_calls(&self) -> bool {
        matches!(&*lock(&self.shared.calls), CallState::Open { pending, .. } if !pending.is_empty())
    }

    /// Runs `callback` once when the link closes: on the thread that closes
    /// it (the reader on peer death, the closing thread on shutdown), or at
    /// once on this thread if it is already closed. Keep it short and do not
    /// drop the [`Link`] in it; hand the news to a supervisor thread.
    pub fn on_close(&self, callback: impl FnOnce(&CloseReason) + Send + 'static) {
        let reason = match &mut *lock(&self.shared.calls) {
            CallState::Open { on_close, .. } => {
                on_close.push(Box::new(callback));
                return;
            }
            CallState::Closed(reason) => reason.clone(),
        };
        callback(&reason);
    }

    /// The link's counters so far.
    pub fn stats(&self) -> LinkStats {
        let counters = &self.shared.counters;
        LinkStats {
            late_replies: counters.late_replies.load(Ordering::Relaxed),
            refused_busy: counters.refused_busy.load(Ordering::Relaxed),
            expired_in_queue: counters.expired_in_queue.load(Ordering::Relaxed),
            handler_panics: counters.handler_panics.load(Ordering::Relaxed),
            nested_inline: counters.nested_inline.load(Ordering::Relaxed),
            nested_refused: counters.nested_refused.load(Ordering::Relaxed),
        }
    }

    /// The link's name, as configured.
    pub fn name(&self) -> &str {
        &self.shared.name
    }
}

/// One end of a bidirectional, multiplexed RPC channel over a Unix socket:
/// it sends `Out` requests to the peer and serves the peer's `In` requests
/// with a handler run on a bounded pool of its own threads.
///
/// Owns the link's threads: dropping it (or [`Link::close`]) closes the link,
/// tells the peer, fails every pending call with
/// [`LinkError::PeerGone`] and joins the threads.
pub struct Link<Out: Request, In: Request> {
    /// The calling side, also handed out by [`Link::caller`].
    caller: Caller<Out>,
    /// The handler threads.
    pool: Arc<Pool<Out, In>>,
    /// The reader and the writer; empty once joined.
    threads: Vec<JoinHandle<()>>,
    /// See [`LinkConfig::shutdown_grace`].
    shutdown_grace: Duration,
}

impl<Out: Request, In: Request> std::fmt::Debug for Link<Out, In> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("caller", &self.caller)
            .finish()
    }
}

impl<Out: Request, In: Request> Link<Out, In> {
    /// Starts a link on `stream` (one end of a `UnixStream::pair`, or the end
    /// a child inherited), serving the peer's requests with `handler`.
    ///
    /// The handler gets a [`Caller`] of this same link, so it can call the
    /// peer back before it answers, re-entrantly and to any depth: the peer
    /// runs such a callback on its thread waiting for this answer, taking
    /// no thread of its [`LinkConfig::max_handlers`]. The handler runs on
    /// the link's pool threads, on the one that read the request, which
    /// first leaves the reading to another, so a slow handler delays only
    /// itself; a request the peer makes from inside its handler
    /// for one of this side's calls runs instead on the thread waiting in
    /// that call (see [`Caller::call_with_deadline`]). A panic in it is
    /// caught and answered as [`RemoteFailure::HandlerPanicked`].
    ///
    /// Notices from the peer ([`Caller::notify`]) are dropped, with a debug
    /// log; [`Link::start_with_notices`] handles them.
    pub fn start<H>(stream: UnixStream, config: LinkConfig, handler: H) -> Result<Self, LinkError>
    where
        H: Fn(In, &Caller<Out>) -> In::Response + Send + Sync + 'static,
    {
        Self::start_inner(stream, config, Box::new(handler), None)
    }

    /// [`Link::start`], also handling the peer's notices with
    /// `notice_handler`, on the thread reading, one at a time in the order
    /// they came, in order with the replies and requests around them.
    ///
    /// That order is the point (the server logs a plugin host's log records
    /// before the call they were written in returns), and its price: while
    /// the notice handler runs, the link reads nothing, so no reply reaches
    /// its call and no request its handler. It must not block: no waiting
    /// on locks others hold long, on I/O or on channels; hand slow work to
    /// another thread. A call on this link from it fails at once with
    /// [`LinkError::CalledFromReader`] (its reply could never be read);
    /// [`Caller::notify`] is fine. A panic in it is caught, logged and
    /// counted in [`LinkStats::handler_panics`], and the link goes on.
    pub fn start_with_notices<H, N>(
        stream: UnixStream,
        config: LinkConfig,
        handler: H,
        notice_handler: N,
    ) -> Result<Self, LinkError>
    where
        H: Fn(In, &Caller<Out>) -> In::Response + Send + Sync + 'static,
        N: Fn(In) + Send + Sync + 'static,
    {
        Self::start_inner(
            stream,
            config,
            Box::new(handler),
            Some(Box::new(notice_handler)),
        )
    }

    /// The work of both starts.
    fn start_inner(
        stream: UnixStream,
        config: LinkConfig,
        handler: crate::pool::Handler<Out, In>,
        notices: Option<NoticeHandler<In>>,
    ) -> Result<Self, LinkError> {
        let clone_socket = || {
            stream
                .try_clone()
                .map_err(|err| LinkError::CloneSocket(Arc::new(err)))
        };
        let reader_stream = clone_socket()?;
        let writer_stream = clone_socket()?;
        let pool = Arc::new(Pool::new(&config, handler, notices));
        let outbox = Arc::new(Outbox::new(writer_stream));
        let weak_pool: Weak<Pool<Out, In>> = Arc::downgrade(&pool);
        let shared = Arc::new(Shared {
            link_id: nested::new_link_id(),
            name: config.name.clone(),
            max_frame_bytes: config.max_frame_bytes,
            call_deadline: config.call_deadline,
            calls: Mutex::new(CallState::Open {
                pending: HashMap::new(),
                on_close: Vec::new(),
            }),
            closed: Condvar::new(),
            idle_waiters: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            outbox: Arc::clone(&outbox),
            socket: stream,
            stop_pool: Box::new(move || {
                if let Some(pool) = weak_pool.upgrade() {
                    pool.stop();
                }
            }),
            counters: Counters::default(),
        });
        let mut link = Self {
            caller: Caller::from_shared(Arc::clone(&shared)),
            pool: Arc::clone(&pool),
            threads: Vec::with_capacity(1),
            shutdown_grace: config.shutdown_grace,
        };
        let writer = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("{}-write", config.name))
                .spawn(move || {
                    if let Err(err) = outbox.run_writer() {
                        shared.close(CloseReason::Write(Arc::new(err)));
                    }
                })
        };
        link.threads
            .push(writer.map_err(|err| start_error("writer", err))?);
        // On error `link` drops here, which closes and joins the writer.
        pool.start_reading(&shared, ReadSide::new(reader_stream))
            .map_err(|err| start_error("reader", err))?;
        Ok(link)
    }

    /// A calling handle on this link, for other threads.
    pub fn caller(&self) -> Caller<Out> {
        self.caller.clone()
    }

    /// [`Caller::call`] on this link.
    pub fn call(&self, request: Out) -> Result<Out::Response, LinkError> {
        self.caller.call(request)
    }

    /// [`Caller::call_with_deadline`] on this link.
    pub fn call_with_deadline(
        &self,
        request: Out,
        deadline: Duration,
    ) -> Result<Out::Response, LinkError> {
        self.caller.call_with_deadline(request, deadline)
    }

    /// [`Caller::wait_closed`] on this link.
    pub fn wait_closed(&self, timeout: Duration) -> Option<CloseReason> {
        self.caller.wait_closed(timeout)
    }

    /// [`Caller::close_reason`] on this link.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.caller.close_reason()
    }

    /// [`Caller::stats`] on this link.
    pub fn stats(&self) -> LinkStats {
        self.caller.stats()
    }

    /// Closes the link and joins its threads, waiting at most
    /// [`LinkConfig::shutdown_grace`] for handlers still running; says what
    /// it joined and what it left behind. Dropping does the same.
    pub fn close(mut self) -> ShutdownReport {
        self.shut_down()
    }

    /// The work of `close` and `drop`; a second run finds nothing to do.
    fn shut_down(&mut self) -> ShutdownReport {
        self.caller.shared.close(CloseReason::ShutDown);
        let current = thread::current().id();
        let mut joined = 0;
        for handle in self.threads.drain(..) {
            // The reader runs `on_close` callbacks; one that drops the link
            // must not join the thread it runs on.
            if handle.thread().id() != current {
                let _ = handle.join();
                joined += 1;
            }
        }
        let (handlers_joined, stuck_handlers) = self.pool.join(self.shutdown_grace);
        if stuck_handlers > 0 {
            tracing::warn!(
                link = %self.caller.name(),
                stuck_handlers,
                "link closed with handlers still running; their threads are left behind"
            );
        }
        ShutdownReport {
            joined: joined + handlers_joined,
            stuck_handlers,
        }
    }
}

impl<Out: Request, In: Request> Drop for Link<Out, In> {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// A thread-spawn error as a link error.
fn start_error(what: &'static str, err: std::io::Error) -> LinkError {
    LinkError::StartThread {
        what,
        source: Arc::new(err),
    }
}

/// The reader: reads and handles frames as the link's one reader, until a
/// request comes that this thread is to run, which it returns after leaving
/// the read side for another thread ([`Pool::hand_off`]), or until the link
/// closes (`None`).
pub(crate) fn lead<Out: Request, In: Request>(
    shared: &Arc<Shared<Out>>,
    pool: &Arc<Pool<Out, In>>,
    mut side: ReadSide,
) -> Option<Job<In>> {
    let _reading = nested::Reading::mark(shared.link_id);
    loop {
        let read = frame::read_frame(&mut side.reader, shared.max_frame_bytes, &mut side.frame);
        let handled = read.and_then(|()| dispatch(shared, pool, &side.frame));
        match handled {
            Err(reason) => {
                shared.close(reason);
                return None;
            }
            Ok(None) => {}
            Ok(Some(job)) => match pool.hand_off(shared, side, job) {
                HandOff::RunHere(job) => return Some(job),
                HandOff::KeepReading(kept) => side = kept,
            },
        }
    }
}

/// Handles one frame from the peer; a request for a handler comes back.
fn dispatch<Out: Request, In: Request>(
    shared: &Arc<Shared<Out>>,
    pool: &Arc<Pool<Out, In>>,
    frame: &[u8],
) -> Result<Option<Job<In>>, CloseReason> {
    let (header, body) = frame::split_header(frame)?;
    match header {
        Header::Request {
            id,
            timeout_micros,
            nested_in,
        } => {
            let request: In = frame::decode_body(body, "request body")?;
            let expires = Instant::now().checked_add(Duration::from_micros(timeout_micros));
            let job = Job {
                id,
                request,
                expires,
            };
            if let Some(slot) = nested_in.and_then(|outer| shared.nested_slot(outer)) {
                shared
                    .counters
                    .nested_inline
                    .fetch_add(1, Ordering::Relaxed);
                // Fails only if the call has just given up and dropped its
                // end; the job comes back in the error and drops here, which
                // refuses it with `CallerGone`.
                let _ = slot.send(Arrival::Nested(pool.nested_job(shared, job)));
                return Ok(None);
            }
            // Not nested, or nested in a call that is no longer waiting (it
            // gave up, and the peer's handler calls on regardless): a pool
            // thread runs it as any other request.
            Ok(Some(job))
        }
        Header::Reply { id } => {
            let reply: Out::Response = frame::decode_body(body, "reply body")?;
            shared.deliver(id, Ok(reply)).map(|()| None)
        }
        Header::Failed { id } => {
            let failure: RemoteFailure = frame::decode_body(body, "failure body")?;
            shared
                .deliver(id, Err(LinkError::Remote(failure)))
                .map(|()| None)
        }
        Header::Notice => {
            // Decoded even with no handler: a notice that does not decode is
            // a broken peer either way.
            let notice: In = frame::decode_body(body, "notice body")?;
            match pool.notices() {
                Some(handler) => {
                    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| handler(notice))) {
                        let message = crate::pool::panic_message(panic.as_ref());
                        tracing::warn!(link = %shared.name, %message, "link notice handler panicked");
                        shared
                            .counters
                            .handler_panics
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
                None => {
                    tracing::debug!(link = %shared.name, "a notice on a link without a notice handler, dropped");
                }
            }
            Ok(None)
        }
    }
}
