//! The link's threads that read and handle: at most `max_handlers` of them
//! run this side's handler for the peer's requests at once, and one more
//! reads, started on demand, with a bounded queue behind them.
//!
//! Leader and followers: one thread at a time holds the link's read side
//! ([`ReadSide`]) and reads frames (`link::lead`). A request it reads that
//! a handler may take, it runs itself, after leaving the read side for an
//! idle thread of the pool (or a new one) to pick up: the request is then
//! run by the thread that was woken for its frame, with no second wake-up
//! to hand it to another thread, which on a VM is about 20 µs of every
//! crossing. Reading never waits on a handler: the read side is always
//! left for another thread before a handler runs, so a handler may call
//! the peer and wait for the answer (re-entrancy). The cap is I6's share of
//! threads; a request that finds `max_handlers` running waits in the queue,
//! whose bound keeps a flood of requests from a broken peer from growing
//! memory without end.
//!
//! A request nested in one of this side's calls does not come here: the
//! reader wraps it with [`Pool::nested_job`] and hands it to the thread
//! waiting in that call, which runs it with the same [`Pool::run`] as a
//! worker (`nested.rs`).

use std::collections::VecDeque;
use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::error::RemoteFailure;
use crate::link::{Caller, LinkConfig, Request, Shared, lead, lock};
use crate::nested::{Handling, NestedJob, Run};

/// The handler, type-erased.
pub(crate) type Handler<Out, In> =
    Box<dyn Fn(In, &Caller<Out>) -> <In as Request>::Response + Send + Sync>;

/// The notice handler, type-erased.
pub(crate) type NoticeHandler<In> = Box<dyn Fn(In) + Send + Sync>;

/// The reader's size of read buffer: several small frames per `read`.
const READ_BUFFER: usize = 64 << 10;

/// The link's read side: the socket's read end, with what was read from it
/// and not yet handled. Owned by exactly one thread at a time, the one that
/// reads (moved, never locked, so no lock is held while it waits on the
/// socket, L5).
pub(crate) struct ReadSide {
    /// The socket, buffered: frames already read stay with it when it is
    /// handed to the next reader.
    pub(crate) reader: BufReader<UnixStream>,
    /// The frame being handled, reused.
    pub(crate) frame: Vec<u8>,
}

impl ReadSide {
    /// The read side of a fresh link.
    pub(crate) fn new(stream: UnixStream) -> Self {
        Self {
            reader: BufReader::with_capacity(READ_BUFFER, stream),
            frame: Vec::new(),
        }
    }
}

/// What the reader does after reading a request for a handler.
pub(crate) enum HandOff<In> {
    /// Run it: the read side was left for another thread.
    RunHere(Job<In>),
    /// Read on: the request was queued or refused, or the pool stopped.
    KeepReading(ReadSide),
}

/// What a pool thread does next.
enum Task<In> {
    /// Run this request (counted in `running`).
    Run(Job<In>),
    /// Read the link, until a request comes to run or the link closes.
    Read(ReadSide),
}

/// A request from the peer, waiting for a handler thread.
pub(crate) struct Job<In> {
    /// The peer's id for it.
    pub(crate) id: u64,
    /// The request.
    pub(crate) request: In,
    /// When its caller stops waiting; `None` if never within `Instant`'s range.
    pub(crate) expires: Option<Instant>,
}

impl<In> Job<In> {
    /// Whether its caller has stopped waiting.
    fn expired(&self) -> bool {
        self.expires
            .is_some_and(|expires| Instant::now() >= expires)
    }
}

/// Whether the pool takes work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Taking and running requests.
    Running,
    /// The link closed: queued requests were dropped, workers exit after
    /// their current handler.
    Stopped,
}

/// The pool's bookkeeping, under one mutex.
struct PoolState<In> {
    /// Requests not yet taken by a worker.
    queue: VecDeque<Job<In>>,
    /// Workers waiting for work. Counts a worker from the moment it starts
    /// waiting until it wakes.
    idle: u32,
    /// Workers running a handler: at most `max_handlers`.
    running: u32,
    /// Workers started and not yet exited: at most `max_handlers + 1`, the
    /// one more for reading.
    live: u32,
    /// The read side while no thread reads: left by the reader that took a
    /// request to run, for the next worker looking for work, which takes it
    /// before any queued job (replies wait behind it).
    unread: Option<ReadSide>,
    /// See [`Phase`].
    phase: Phase,
    /// Every worker started, to join on shutdown.
    workers: Vec<JoinHandle<()>>,
}

/// The reading and handler threads of one link.
pub(crate) struct Pool<Out: Request, In: Request> {
    /// See [`PoolState`].
    state: Mutex<PoolState<In>>,
    /// Signalled when the read side is left for an idle worker, and for all
    /// on stop.
    work: Condvar,
    /// Signalled when a worker exits.
    exited: Condvar,
    /// The handler.
    handler: Handler<Out, In>,
    /// The notice handler, run by the reader; `None` drops notices.
    notices: Option<NoticeHandler<In>>,
    /// See [`LinkConfig::max_handlers`].
    max_handlers: u32,
    /// See [`LinkConfig::max_queued`].
    max_queued: u32,
    /// Workers' thread name.
    thread_name: String,
}

impl<Out: Request, In: Request> Pool<Out, In> {
    /// A pool with no threads yet.
    pub(crate) fn new(
        config: &LinkConfig,
        handler: Handler<Out, In>,
        notices: Option<NoticeHandler<In>>,
    ) -> Self {
        Self {
            state: Mutex::new(PoolState {
                queue: VecDeque::new(),
                idle: 0,
                running: 0,
                live: 0,
                unread: None,
                phase: Phase::Running,
                workers: Vec::new(),
            }),
            work: Condvar::new(),
            exited: Condvar::new(),
            handler,
            notices,
            max_handlers: config.max_handlers.get(),
            max_queued: config.max_queued,
            thread_name: format!("{}-handle", config.name),
        }
    }

    /// Starts the link's first thread, which reads.
    pub(crate) fn start_reading(
        self: &Arc<Self>,
        shared: &Arc<Shared<Out>>,
        side: ReadSide,
    ) -> std::io::Result<()> {
        let mut state = lock(&self.state);
        state.unread = Some(side);
        self.spawn_worker(&mut state, shared)
    }

    /// The notice handler, for the reader.
    pub(crate) fn notices(&self) -> Option<&NoticeHandler<In>> {
        self.notices.as_ref()
    }

    /// Called by the reader with a request for a handler: if fewer than
    /// `max_handlers` run, leaves the read side for an idle worker (waking
    /// one, or starting one) and tells the reader to run the request
    /// itself; otherwise queues it, or refuses it with `Busy` when the
    /// queue is full, and the reader reads on. Starting a thread under the
    /// lock takes a `clone` syscall, never a wait on anything.
    pub(crate) fn hand_off(
        self: &Arc<Self>,
        shared: &Arc<Shared<Out>>,
        side: ReadSide,
        job: Job<In>,
    ) -> HandOff<In> {
        let mut state = lock(&self.state);
        if state.phase == Phase::Stopped {
            drop(state);
            // Dropped outside the lock: a request's drop may run arbitrary
            // code. The reader reads on to the end of the stream.
            drop(job);
            return HandOff::KeepReading(side);
        }
        if state.running < self.max_handlers {
            // Who takes up the read side: an idle worker, woken after
            // unlocking (one woken under the lock would only block on it
            // again); or, with all `max_handlers + 1` threads live and none
            // idle, yet fewer than `max_handlers` running, the one on its way
            // back for work, which takes it first thing; or a new worker.
            let wake = if state.idle > 0 {
                true
            } else if state.live > self.max_handlers {
                false
            } else if let Err(err) = self.spawn_worker(&mut state, shared) {
                tracing::warn!(link = %shared.name(), %err, "cannot start another link thread; reading on");
                return self.queue_or_refuse(state, shared, side, job);
            } else {
                false
            };
            state.running += 1;
            state.unread = Some(side);
            drop(state);
            if wake {
                self.work.notify_one();
            }
            return HandOff::RunHere(job);
        }
        self.queue_or_refuse(state, shared, side, job)
    }

    /// Queues `job` for the next worker that finishes, or refuses it when
    /// the queue is full (or when no worker would ever take it).
    fn queue_or_refuse(
        &self,
        mut state: std::sync::MutexGuard<'_, PoolState<In>>,
        shared: &Arc<Shared<Out>>,
        side: ReadSide,
        job: Job<In>,
    ) -> HandOff<In> {
        let refusal = if state.running == 0 {
            // No handler runs, so none would ever finish and take it: only
            // a failure to start a thread gets here.
            Some(RemoteFailure::NoThread(
                "no link thread to run the request".to_owned(),
            ))
        } else if state.queue.len() >= self.max_queued as usize {
            shared.counters.refused_busy.fetch_add(1, Ordering::Relaxed);
            Some(RemoteFailure::Busy {
                max_handlers: self.max_handlers,
                max_queued: self.max_queued,
            })
        } else {
            None
        };
        match refusal {
            Some(failure) => {
                drop(state);
                shared.send_failed(job.id, &failure);
            }
            None => state.queue.push_back(job),
        }
        HandOff::KeepReading(side)
    }

    /// Starts one more worker; it finds its work in `state` first thing.
    fn spawn_worker(
        self: &Arc<Self>,
        state: &mut PoolState<In>,
        shared: &Arc<Shared<Out>>,
    ) -> std::io::Result<()> {
        let pool = Arc::clone(self);
        let worker_shared = Arc::clone(shared);
        let handle = thread::Builder::new()
            .name(self.thread_name.clone())
            .spawn(move || work(&pool, worker_shared))?;
        state.live += 1;
        state.workers.push(handle);
        Ok(())
    }

    /// Stops taking work: drops the queue and wakes idle workers to exit.
    pub(crate) fn stop(&self) {
        let dropped = {
            let mut state = lock(&self.state);
            state.phase = Phase::Stopped;
            std::mem::take(&mut state.queue)
        };
        self.work.notify_all();
        // Dropped outside the lock: a request's drop may run arbitrary code.
        drop(dropped);
    }

    /// Waits at most `grace` for the workers to exit and joins those that
    /// did; returns how many were joined and how many are still running a
    /// handler. Call after [`Pool::stop`].
    pub(crate) fn join(&self, grace: Duration) -> (usize, usize) {
        let deadline = Instant::now() + grace;
        let current = thread::current().id();
        let (workers, still_live) = {
            let mut state = lock(&self.state);
            // Closing from a worker (an `on_close` callback run by the
            // reader): that one cannot exit while it waits here.
            let this_one = u32::from(
                state
                    .workers
                    .iter()
                    .any(|handle| handle.thread().id() == current),
            );
            while state.live > this_one {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                state = self
                    .exited
                    .wait_timeout(state, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            (std::mem::take(&mut state.workers), state.live - this_one)
        };
        let mut joined = 0;
        for handle in workers {
            let this_thread = handle.thread().id() == current;
            // With none live every worker is past its last step and joins at
            // once; otherwise only the finished ones can be joined.
            if !this_thread && (still_live == 0 || handle.is_finished()) {
                let _ = handle.join();
                joined += 1;
            }
        }
        (joined, still_live as usize)
    }

    /// Runs the handler for `job` on this thread and answers the peer:
    /// the one way a request is run, on a worker or inline in a waiting
    /// call. While the handler runs, calls it makes on this link are nested
    /// in `job` ([`Handling`]). A panic is caught and answered
    /// `HandlerPanicked`, so it never unwinds into a worker's loop or
    /// through the call an inline job runs in.
    pub(crate) fn run(&self, caller: &Caller<Out>, job: Job<In>) {
        let shared = caller.shared();
        if job.expired() {
            // Its caller has stopped waiting: running it would only delay
            // the requests behind it.
            shared
                .counters
                .expired_in_queue
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        let id = job.id;
        let outcome = {
            let _handling = Handling::enter(shared.link_id(), id);
            catch_unwind(AssertUnwindSafe(|| (self.handler)(job.request, caller)))
        };
        match outcome {
            Ok(reply) => shared.send_reply(id, &reply),
            Err(panic) => {
                let message = panic_message(panic.as_ref());
                tracing::warn!(link = %shared.name(), %message, "link handler panicked");
                shared
                    .counters
                    .handler_panics
                    .fetch_add(1, Ordering::Relaxed);
                shared.send_failed(id, &RemoteFailure::HandlerPanicked(message));
            }
        }
    }

    /// Wraps `job`, a request nested in one of this side's calls, for the
    /// thread waiting in that call: run, it goes through [`Pool::run`];
    /// refused or dropped unrun, it answers `CallerGone`, unless its own
    /// caller has given up on it as well.
    pub(crate) fn nested_job(
        self: &Arc<Self>,
        shared: &Arc<Shared<Out>>,
        job: Job<In>,
    ) -> NestedJob {
        let pool = Arc::clone(self);
        let shared = Arc::clone(shared);
        NestedJob::new(move |run| match run {
            Run::Handle => pool.run(&Caller::from_shared(shared), job),
            Run::Refuse if job.expired() => {
                shared
                    .counters
                    .expired_in_queue
                    .fetch_add(1, Ordering::Relaxed);
            }
            Run::Refuse => {
                shared
                    .counters
                    .nested_refused
                    .fetch_add(1, Ordering::Relaxed);
                shared.send_failed(job.id, &RemoteFailure::CallerGone);
            }
        })
    }

    /// Takes the next task, or `None` once the pool is stopped; `finished`
    /// says the caller just ran a handler.
    fn next_task(&self, finished: bool) -> Option<Task<In>> {
        let mut state = lock(&self.state);
        if finished {
            state.running -= 1;
        }
        loop {
            if state.phase == Phase::Stopped {
                state.live -= 1;
                self.exited.notify_all();
                return None;
            }
            if let Some(side) = state.unread.take() {
                return Some(Task::Read(side));
            }
            if state.running < self.max_handlers
                && let Some(job) = state.queue.pop_front()
            {
                state.running += 1;
                return Some(Task::Run(job));
            }
            state.idle += 1;
            state = self
                .work
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.idle -= 1;
        }
    }
}

/// A worker thread: reads or runs requests until the pool stops.
fn work<Out: Request, In: Request>(pool: &Arc<Pool<Out, In>>, shared: Arc<Shared<Out>>) {
    let caller = Caller::from_shared(Arc::clone(&shared));
    let mut finished = false;
    while let Some(task) = pool.next_task(finished) {
        let job = match task {
            Task::Run(job) => Some(job),
            Task::Read(side) => lead(&shared, pool, side),
        };
        finished = job.is_some();
        if let Some(job) = job {
            pool.run(&caller, job);
        }
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}
