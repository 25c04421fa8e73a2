//! The handler pool: at most `max_handlers` threads that run this side's
//! handler for the peer's requests, started on demand, with a bounded queue
//! behind them.
//!
//! The reader only ever pushes into the queue (or refuses), under a short
//! lock, so a busy or stuck handler never stops it reading replies: that is
//! what lets a handler call the peer and wait for the answer (re-entrancy).
//! The cap is I6's share of threads; the queue bound keeps a flood of
//! requests from a broken peer from growing memory without end.
//!
//! A request nested in one of this side's calls does not come here: the
//! reader wraps it with [`Pool::nested_job`] and hands it to the thread
//! waiting in that call, which runs it with the same [`Pool::run`] as a
//! worker (`nested.rs`).

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::error::RemoteFailure;
use crate::link::{Caller, LinkConfig, Request, Shared, lock};
use crate::nested::{Handling, NestedJob, Run};

/// The handler, type-erased.
pub(crate) type Handler<Out, In> =
    Box<dyn Fn(In, &Caller<Out>) -> <In as Request>::Response + Send + Sync>;

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
    /// waiting until it wakes, so `queue.len() <= idle` means every queued
    /// job already has a worker on its way.
    idle: u32,
    /// Workers started and not yet exited.
    live: u32,
    /// See [`Phase`].
    phase: Phase,
    /// Every worker started, to join on shutdown.
    workers: Vec<JoinHandle<()>>,
}

/// The handler threads of one link.
pub(crate) struct Pool<Out: Request, In: Request> {
    /// See [`PoolState`].
    state: Mutex<PoolState<In>>,
    /// Signalled for each queued job, and for all on stop.
    work: Condvar,
    /// Signalled when a worker exits.
    exited: Condvar,
    /// The handler.
    handler: Handler<Out, In>,
    /// See [`LinkConfig::max_handlers`].
    max_handlers: u32,
    /// See [`LinkConfig::max_queued`].
    max_queued: u32,
    /// Workers' thread name.
    thread_name: String,
}

impl<Out: Request, In: Request> Pool<Out, In> {
    /// A pool with no threads yet.
    pub(crate) fn new(config: &LinkConfig, handler: Handler<Out, In>) -> Self {
        Self {
            state: Mutex::new(PoolState {
                queue: VecDeque::new(),
                idle: 0,
                live: 0,
                phase: Phase::Running,
                workers: Vec::new(),
            }),
            work: Condvar::new(),
            exited: Condvar::new(),
            handler,
            max_handlers: config.max_handlers.get(),
            max_queued: config.max_queued,
            thread_name: format!("{}-handle", config.name),
        }
    }

    /// Queues a request for a handler thread, starting one if all are busy
    /// and the cap allows; refuses it if the cap is reached and the queue is
    /// full. Called by the reader only. Starting a thread under the lock
    /// takes a `clone` syscall, never a wait on anything.
    pub(crate) fn submit(
        self: &Arc<Self>,
        shared: &Arc<Shared<Out>>,
        job: Job<In>,
    ) -> Result<(), RemoteFailure> {
        let mut state = lock(&self.state);
        if state.phase == Phase::Stopped {
            return Ok(());
        }
        if state.queue.len() < state.idle as usize {
            state.queue.push_back(job);
            // Signalled after unlocking: a worker woken under the lock would
            // only block on it again, a second wake-up and two more futex
            // calls on every request. It finds the job either way, as it
            // checks the queue under the lock before it waits.
            drop(state);
            self.work.notify_one();
            return Ok(());
        }
        if state.live < self.max_handlers {
            let pool = Arc::clone(self);
            let worker_shared = Arc::clone(shared);
            match thread::Builder::new()
                .name(self.thread_name.clone())
                .spawn(move || work(&pool, worker_shared))
            {
                Ok(handle) => {
                    state.live += 1;
                    state.workers.push(handle);
                    // The new worker finds it first thing.
                    state.queue.push_back(job);
                    return Ok(());
                }
                Err(err) if state.live == 0 => {
                    return Err(RemoteFailure::NoThread(err.to_string()));
                }
                Err(err) => {
                    tracing::warn!(link = %shared.name(), %err, "cannot start another handler thread; queueing");
                }
            }
        }
        let waiting_for_a_thread = state.queue.len() - state.idle as usize;
        if waiting_for_a_thread >= self.max_queued as usize {
            return Err(RemoteFailure::Busy {
                max_handlers: self.max_handlers,
                max_queued: self.max_queued,
            });
        }
        state.queue.push_back(job);
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
            while state.live > 0 {
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
            (std::mem::take(&mut state.workers), state.live)
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

    /// Takes the next job, or `None` once the pool is stopped.
    fn next_job(&self) -> Option<Job<In>> {
        let mut state = lock(&self.state);
        loop {
            if state.phase == Phase::Stopped {
                state.live -= 1;
                self.exited.notify_all();
                return None;
            }
            if let Some(job) = state.queue.pop_front() {
                return Some(job);
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

/// A worker thread: runs jobs until the pool stops.
fn work<Out: Request, In: Request>(pool: &Pool<Out, In>, shared: Arc<Shared<Out>>) {
    let caller = Caller::from_shared(shared);
    while let Some(job) = pool.next_job() {
        pool.run(&caller, job);
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
