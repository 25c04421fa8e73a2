//! Nested call routing: the peer's callbacks into a call run on the thread
//! that waits in that call (SPEC I1).
//!
//! In-process, a hook that calls back into the server runs that server work
//! on its own thread, and the server and plugins rely on it (the server
//! tells "a hook changing the agent it is deciding on" by thread id; Python
//! plugins use `threading.RLock` and `threading.local`). Across a link the
//! same must hold, so:
//! - every handler run (on a pool worker or inline, below) pushes an entry
//!   (link, the peer's request id) on a thread-local stack, popped by a drop
//!   guard, and a call on link L from that thread carries the id of the
//!   innermost entry of L as `nested_in`; entries of other links are skipped
//!   (the server has one link per host, and a callback into link A's call
//!   cannot be served by a thread waiting on link B);
//! - the reader hands a request nested in one of this side's pending calls
//!   to the thread waiting in it, through that call's answer channel, as an
//!   [`Arrival::Nested`]; the waiting thread runs it inline, answers it, and
//!   goes back to waiting.
//!
//! The reader also marks its own thread, so a call on a link from that
//! link's reader (a notice handler) fails at once instead of waiting for a
//! reply that only the blocked reader could read.

use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::LinkError;

/// Where link identities come from: a process-wide counter rather than the
/// address of the link's state, which a later link may reuse once the first
/// is freed while a stale entry could still name it.
static NEXT_LINK_ID: AtomicU64 = AtomicU64::new(1);

/// A new link's identity, unique in this process.
pub(crate) fn new_link_id() -> u64 {
    NEXT_LINK_ID.fetch_add(1, Ordering::Relaxed)
}

thread_local! {
    /// The peer requests this thread is running a handler for, innermost
    /// last, as (link identity, the peer's request id).
    static HANDLING: RefCell<Vec<(u64, u64)>> = const { RefCell::new(Vec::new()) };

    /// The link whose reader this thread is, if it is one.
    static READER_OF: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Marks the current thread as running this side's handler for the peer's
/// request `request` on link `link`, until dropped.
///
/// Not `Send`: the entry is on this thread's stack and must be popped here.
pub(crate) struct Handling {
    /// Keeps the guard on the thread that pushed its entry.
    _not_send: PhantomData<*const ()>,
}

impl Handling {
    /// Pushes the entry.
    pub(crate) fn enter(link: u64, request: u64) -> Self {
        HANDLING.with(|stack| stack.borrow_mut().push((link, request)));
        Self {
            _not_send: PhantomData,
        }
    }
}

impl Drop for Handling {
    fn drop(&mut self) {
        // Guards live in nested scopes, so the last entry is this guard's.
        // `try_with`: a guard dropped while the thread's locals are being
        // destroyed has nothing left to pop.
        let _ = HANDLING.try_with(|stack| stack.borrow_mut().pop());
    }
}

/// The peer's request this thread is innermost handling on link `link`, if
/// any: what a call on `link` from here is nested in.
pub(crate) fn nested_in(link: u64) -> Option<u64> {
    HANDLING
        .try_with(|stack| {
            stack
                .borrow()
                .iter()
                .rev()
                .find(|(entry_link, _)| *entry_link == link)
                .map(|(_, request)| *request)
        })
        .ok()
        .flatten()
}

/// Marks the current thread as link `link`'s reader until dropped: the
/// read side passes between the link's threads (`pool.rs`).
///
/// Not `Send`: the mark is on this thread and must be cleared here.
pub(crate) struct Reading {
    /// Keeps the guard on the thread that set the mark.
    _not_send: PhantomData<*const ()>,
}

impl Reading {
    /// Sets the mark.
    pub(crate) fn mark(link: u64) -> Self {
        READER_OF.with(|reader| reader.set(Some(link)));
        Self {
            _not_send: PhantomData,
        }
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        // `try_with`: a thread-local destructor may run this after the
        // thread's locals are gone.
        let _ = READER_OF.try_with(|reader| reader.set(None));
    }
}

/// Whether the current thread is link `link`'s reader.
pub(crate) fn is_reader_of(link: u64) -> bool {
    READER_OF
        .try_with(|reader| reader.get() == Some(link))
        .unwrap_or(false)
}

/// What the reader hands a waiting call, in the order it read it.
pub(crate) enum Arrival<R> {
    /// The call's answer: the peer's reply or failure, or the link closing.
    Answer(Result<R, LinkError>),
    /// A request of the peer's nested in this call, to run on the waiting
    /// thread.
    Nested(NestedJob),
}

/// What a [`NestedJob`] is told to do.
pub(crate) enum Run {
    /// Run the handler and answer with its reply.
    Handle,
    /// Do not run it; answer `CallerGone` (unless the peer has given up on
    /// it too).
    Refuse,
}

/// A request from the peer nested in a call of this side, with everything
/// needed to run or refuse it, type-erased: the call only knows its own
/// `Out`, not the pool's `In` or handler.
///
/// It is answered whatever becomes of it: dropped without being run (the
/// waiting call gave up, or the channel it sat in was dropped), it refuses
/// itself, so the peer's call fails at once rather than at its deadline.
pub(crate) struct NestedJob {
    /// Runs or refuses the request; `None` once done.
    job: Option<Box<dyn FnOnce(Run) + Send>>,
}

impl NestedJob {
    /// Wraps what runs or refuses the request.
    pub(crate) fn new(job: impl FnOnce(Run) + Send + 'static) -> Self {
        Self {
            job: Some(Box::new(job)),
        }
    }

    /// Runs the handler on this thread and answers.
    pub(crate) fn run(mut self) {
        if let Some(job) = self.job.take() {
            job(Run::Handle);
        }
    }
}

impl Drop for NestedJob {
    fn drop(&mut self) {
        if let Some(job) = self.job.take() {
            job(Run::Refuse);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_innermost_entry_of_the_link_wins_and_other_links_are_skipped() {
        assert_eq!(nested_in(1), None);
        let _outer = Handling::enter(1, 10);
        {
            let _other = Handling::enter(2, 20);
            assert_eq!(nested_in(1), Some(10));
            assert_eq!(nested_in(2), Some(20));
            {
                let _inner = Handling::enter(1, 11);
                assert_eq!(nested_in(1), Some(11));
            }
            assert_eq!(nested_in(1), Some(10));
        }
        assert_eq!(nested_in(2), None);
        assert_eq!(nested_in(3), None);
        // Another thread has a stack of its own.
        assert_eq!(std::thread::spawn(|| nested_in(1)).join().ok(), Some(None));
    }

    #[test]
    fn a_panic_inside_a_handler_run_pops_its_entry() {
        let unwound = std::panic::catch_unwind(|| {
            let _handling = Handling::enter(7, 70);
            assert_eq!(nested_in(7), Some(70));
            panic!("in the handler");
        });
        assert!(unwound.is_err());
        assert_eq!(nested_in(7), None);
    }

    #[test]
    fn a_nested_job_dropped_unrun_refuses_itself_once() {
        let (told, seen) = std::sync::mpsc::channel();
        let job = NestedJob::new(move |run| {
            let _ = told.send(matches!(run, Run::Refuse));
        });
        drop(job);
        assert_eq!(seen.try_iter().collect::<Vec<_>>(), vec![true]);

        let (told, seen) = std::sync::mpsc::channel();
        NestedJob::new(move |run| {
            let _ = told.send(matches!(run, Run::Refuse));
        })
        .run();
        assert_eq!(seen.try_iter().collect::<Vec<_>>(), vec![false]);
    }
}
