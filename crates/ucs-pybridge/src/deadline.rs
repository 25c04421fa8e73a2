//! The in-process deadline of every call into a plugin (SPEC I3).
//!
//! A process-isolated plugin past its deadline has its host killed
//! (`ucs-host/src/proxy.rs`). An in-process one cannot be killed, so one
//! watchdog thread raises `error.DeadlineExceeded` into the thread that runs
//! it, with `PyThreadState_SetAsyncExc`. The class derives from
//! `BaseException`, so a plugin's `except Exception:` does not swallow it;
//! the adapter then sees an unexpected exception and answers as H6, S4, D5
//! and M3 say for one, and counts a failure.
//!
//! # The hot path
//! Every thread that calls into Python has one [`Slot`], created on its
//! first call and registered (as a `Weak`) in one shared table: a stack of
//! [`MAX_DEPTH`] frames of atomics, one per nested call. Arming a call
//! writes its start (the adapter's own clock read), budget and deadline into
//! the next frame, bumps the frame's generation and clones the
//! registration's label (`Arc`, no allocation); disarming pops it. No
//! syscall, no allocation, no shared lock.
//!
//! # Race safety
//! The thread arms and disarms while attached, and the watchdog checks and
//! raises while attached, so the GIL orders them: when the watchdog holds
//! the GIL and finds the same call (slot depth and frame generation) still
//! armed, the call has not returned, and the exception can only hit that
//! call's code. An exception that was set but had not fired when the call
//! returned (a `time.sleep` that ended just then) is cleared as the call
//! disarms. Only the innermost call of a thread is ever interrupted: an
//! outer call past its deadline while a nested one (another plugin's hook,
//! reached through `ucs.*`) runs waits until the nested one returns, which
//! has its own deadline; a pending exception of the outer call is cleared
//! before a nested call starts, and raised again once it has returned.
//!
//! # L5
//! The watchdog takes its candidates out of the table, drops the lock and
//! only then attaches; it logs after detaching. The table lock is only ever
//! held to push a new slot or to scan, never while waiting for anything.
//!
//! # The limit
//! An asynchronous exception fires only when the thread runs Python
//! bytecode: a call blocked in C (`time.sleep`, a socket read) is
//! interrupted only once the C call returns. The ERROR is logged at the
//! deadline either way; process isolation is the cure (docs/RELIABILITY.md).

use std::ffi::c_ulong;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock, PoisonError, Weak};
use std::time::Duration;

use pyo3::ffi;
use pyo3::prelude::*;
use quanta::Instant;
use ucs_api::HookPolicy;
use ucs_core::Owner;

use crate::errors::DeadlineExceeded;

/// How deep calls nest on one thread before the deeper ones go unwatched
/// (a hook calling `ucs.*` that runs another plugin's hook is depth 2).
/// Deeper calls still run; they only lose their deadline.
pub const MAX_DEPTH: usize = 16;

/// How often the watchdog looks at the armed calls: the precision of every
/// deadline and budget warning, and its whole cost when nothing is armed
/// (one scan of the table).
pub const TICK: Duration = Duration::from_millis(10);

/// A deadline or budget this long or longer is never reached; the plugin
/// host's adapters use `Duration::MAX` (the server kills the whole host).
const NEVER: u64 = u64::MAX;

/// What the watchdog's log lines name: the plugin and its registration.
#[derive(Debug)]
pub struct CallLabel {
    /// The loaded version of the plugin that registered the callable.
    pub owner: Owner,
    /// The registration as `plugins.list` describes it (`Plugin.on_status()`).
    pub registration: String,
}

/// One nested call on one thread. Written by its thread while attached;
/// read by the watchdog, which acts on it only while attached.
struct Frame {
    /// Bumped by every arm, so the watchdog can tell the call it saw from a
    /// later call in the same frame.
    generation: AtomicU64,
    /// When the call started, in [`now_nanos`] time.
    started: AtomicU64,
    /// When the budget WARN is due; [`NEVER`] for none.
    warn_at: AtomicU64,
    /// When the exception is due (again); [`NEVER`] for never.
    raise_at: AtomicU64,
    /// The deadline itself, for the log and for raising again a whole
    /// deadline later if the plugin swallowed it with `except BaseException`.
    deadline: AtomicU64,
    /// The budget, for the WARN.
    budget: AtomicU64,
    /// Whether the budget WARN was logged for this call.
    warned: AtomicBool,
    /// Whether the deadline ERROR was logged for this call.
    reported: AtomicBool,
    /// Whether an exception was set for this call that may not have fired
    /// yet, to clear before anything else runs on the thread.
    pending: AtomicBool,
    /// Who is being called, for the log; cloned in by the arming thread.
    /// The watchdog holds it only to clone the label out, never while it
    /// waits for anything, so the arming thread waits for it at most that.
    label: Mutex<Option<Arc<CallLabel>>>,
}

impl Frame {
    fn new() -> Self {
        Frame {
            generation: AtomicU64::new(0),
            started: AtomicU64::new(0),
            warn_at: AtomicU64::new(NEVER),
            raise_at: AtomicU64::new(NEVER),
            deadline: AtomicU64::new(NEVER),
            budget: AtomicU64::new(NEVER),
            warned: AtomicBool::new(false),
            reported: AtomicBool::new(false),
            pending: AtomicBool::new(false),
            label: Mutex::new(None),
        }
    }

    fn label(&self) -> Option<Arc<CallLabel>> {
        self.label
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The calls into Python that one thread is in, innermost last.
struct Slot {
    /// The thread's Python identifier, as `PyThreadState_SetAsyncExc`
    /// finds its thread state.
    thread_ident: c_ulong,
    /// How many calls are armed (may exceed [`MAX_DEPTH`]; the frames
    /// beyond it are unwatched).
    depth: AtomicUsize,
    /// One frame per nesting level.
    frames: [Frame; MAX_DEPTH],
}

/// Every thread's slot; a thread's `Arc` lives in its thread-local, so a
/// finished thread's entry dies with it and the watchdog prunes it.
static TABLE: Mutex<Vec<Weak<Slot>>> = Mutex::new(Vec::new());

thread_local! {
    /// This thread's slot, made on its first call into Python.
    static SLOT: Arc<Slot> = new_slot();
}

fn new_slot() -> Arc<Slot> {
    let slot = Arc::new(Slot {
        // SAFETY: PyThread_get_thread_ident needs no GIL and no thread
        // state; it is the identifier CPython gives this thread's states.
        thread_ident: unsafe { ffi::PyThread_get_thread_ident() },
        depth: AtomicUsize::new(0),
        frames: std::array::from_fn(|_| Frame::new()),
    });
    TABLE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Arc::downgrade(&slot));
    slot
}

/// The clock every frame is read against: nanoseconds since the first call.
fn now_nanos(now: Instant) -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    u64::try_from(now.saturating_duration_since(base).as_nanos()).unwrap_or(NEVER)
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(NEVER)
}

/// A call armed by [`arm`]; dropping it (while still attached) disarms it.
pub struct Armed<'py> {
    /// The thread's slot; none in a thread-local destructor, where the slot
    /// is gone and the call simply runs unwatched.
    slot: Option<Arc<Slot>>,
    /// The frame this call armed.
    index: usize,
    /// Attached for the whole call: disarming must be ordered against the
    /// watchdog's raise by the GIL.
    py: Python<'py>,
}

/// Arms the deadline (and budget warning) of the call about to run on this
/// thread, which started at `started` (the adapter's clock read). A policy
/// whose deadline and budget are both unreachable (the plugin host's) still
/// takes a frame, so nesting stays exact, but never wakes the watchdog.
pub fn arm<'py>(
    py: Python<'py>,
    label: &Arc<CallLabel>,
    policy: &HookPolicy,
    started: Instant,
) -> Armed<'py> {
    let Ok(slot) = SLOT.try_with(Arc::clone) else {
        return Armed {
            slot: None,
            index: 0,
            py,
        };
    };
    let index = slot.depth.load(Ordering::Relaxed);
    if index > 0
        && let Some(parent) = slot.frames.get(index - 1)
        && parent.pending.swap(false, Ordering::Relaxed)
    {
        // The outer call's exception has not fired yet: it must not fire
        // in this nested call. The outer call is raised into again as soon
        // as it is the innermost once more.
        clear_async_exc(py, slot.thread_ident);
        parent.raise_at.store(0, Ordering::Relaxed);
    }
    if let Some(frame) = slot.frames.get(index) {
        let start = now_nanos(started);
        let deadline = nanos(policy.deadline);
        let budget = nanos(policy.budget);
        let watched = deadline != NEVER || budget != NEVER;
        if watched {
            start_watchdog();
        }
        *frame.label.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(label));
        frame.generation.fetch_add(1, Ordering::Relaxed);
        frame.started.store(start, Ordering::Relaxed);
        frame.deadline.store(deadline, Ordering::Relaxed);
        frame.budget.store(budget, Ordering::Relaxed);
        frame
            .warn_at
            .store(start.saturating_add(budget), Ordering::Relaxed);
        frame
            .raise_at
            .store(start.saturating_add(deadline), Ordering::Relaxed);
        frame.warned.store(false, Ordering::Relaxed);
        frame.reported.store(false, Ordering::Relaxed);
        frame.pending.store(false, Ordering::Relaxed);
    }
    // Release: the watchdog that reads this depth sees the frame above.
    slot.depth.store(index + 1, Ordering::Release);
    Armed {
        slot: Some(slot),
        index,
        py,
    }
}

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        let Some(slot) = &self.slot else {
            return;
        };
        if let Some(frame) = slot.frames.get(self.index) {
            frame.raise_at.store(NEVER, Ordering::Relaxed);
            frame.warn_at.store(NEVER, Ordering::Relaxed);
            if frame.pending.swap(false, Ordering::Relaxed) {
                // Set, but the call returned before it fired: it would hit
                // whatever this thread runs next.
                clear_async_exc(self.py, slot.thread_ident);
            }
        }
        slot.depth.store(self.index, Ordering::Release);
    }
}

/// Withdraws the asynchronous exception set for this thread, if any.
fn clear_async_exc(_py: Python<'_>, thread_ident: c_ulong) {
    // SAFETY: attached (the `Python` token). A null exception clears the
    // thread state's pending asynchronous exception; the identifier is the
    // one CPython keeps as `thread_id` (an unsigned long it takes as long).
    unsafe {
        ffi::PyThreadState_SetAsyncExc(thread_ident as std::ffi::c_long, std::ptr::null_mut());
    }
}

/// Starts the one watchdog thread, once per process.
fn start_watchdog() {
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("ucs-deadline".to_owned())
            .spawn(watchdog);
        if let Err(err) = spawned {
            tracing::error!("cannot start the plugin call deadline watchdog: {err}");
        }
    });
}

/// A call past its deadline, as the watchdog saw it without the GIL.
struct Overdue {
    slot: Arc<Slot>,
    index: usize,
    generation: u64,
}

/// The deadline ERROR of one call, decided in the scan and logged detached.
struct Report {
    label: Option<Arc<CallLabel>>,
    deadline: Duration,
}

/// The watchdog: every [`TICK`], warn about calls past their budget and
/// interrupt innermost calls past their deadline.
fn watchdog() {
    // It attaches every time something is overdue: keep a thread state.
    crate::thread_state::park();
    let mut overdue: Vec<Overdue> = Vec::new();
    let mut warnings: Vec<(Option<Arc<CallLabel>>, Duration, Duration)> = Vec::new();
    let mut reports: Vec<Report> = Vec::new();
    loop {
        std::thread::sleep(TICK);
        let now = now_nanos(Instant::now());
        {
            let mut table = TABLE.lock().unwrap_or_else(PoisonError::into_inner);
            table.retain(|slot| slot.strong_count() > 0);
            for slot in table.iter().filter_map(Weak::upgrade) {
                scan(&slot, now, &mut overdue, &mut warnings, &mut reports);
            }
        }
        for (label, elapsed, budget) in warnings.drain(..) {
            if let Some(label) = label {
                tracing::warn!(
                    plugin = %label.owner,
                    "{} is still running after {elapsed:?}, over its budget of {budget:?}",
                    label.registration
                );
            }
        }
        // Logged before the raise, so the ERROR is in the log before the
        // interrupted call can return; and logged detached (L5).
        for report in reports.drain(..) {
            if let Some(label) = report.label {
                tracing::error!(
                    plugin = %label.owner,
                    "{} did not return within its deadline of {:?}; it is interrupted with \
                     error.DeadlineExceeded",
                    label.registration,
                    report.deadline
                );
            }
        }
        if overdue.is_empty() {
            continue;
        }
        Python::attach(|py| {
            let class = py.get_type::<DeadlineExceeded>();
            for call in overdue.drain(..) {
                raise_if_still_armed(py, &class, &call, now);
            }
        });
    }
}

/// Collects `slot`'s calls past their budget (all levels) and its innermost
/// call if past its deadline, with the ERROR to log for it the first time.
fn scan(
    slot: &Arc<Slot>,
    now: u64,
    overdue: &mut Vec<Overdue>,
    warnings: &mut Vec<(Option<Arc<CallLabel>>, Duration, Duration)>,
    reports: &mut Vec<Report>,
) {
    let depth = slot.depth.load(Ordering::Acquire);
    for (index, frame) in slot.frames.iter().enumerate().take(depth) {
        if now >= frame.warn_at.load(Ordering::Relaxed)
            && !frame.warned.swap(true, Ordering::Relaxed)
        {
            let elapsed = now.saturating_sub(frame.started.load(Ordering::Relaxed));
            warnings.push((
                frame.label(),
                Duration::from_nanos(elapsed),
                Duration::from_nanos(frame.budget.load(Ordering::Relaxed)),
            ));
        }
        if index + 1 == depth && now >= frame.raise_at.load(Ordering::Relaxed) {
            if !frame.reported.swap(true, Ordering::Relaxed) {
                reports.push(Report {
                    label: frame.label(),
                    deadline: Duration::from_nanos(frame.deadline.load(Ordering::Relaxed)),
                });
            }
            overdue.push(Overdue {
                slot: Arc::clone(slot),
                index,
                generation: frame.generation.load(Ordering::Relaxed),
            });
        }
    }
}

/// Raises `DeadlineExceeded` into `call`'s thread if, now that the GIL is
/// held, the very same call is still the innermost armed one.
fn raise_if_still_armed(
    _py: Python<'_>,
    class: &Bound<'_, pyo3::types::PyType>,
    call: &Overdue,
    now: u64,
) {
    let Some(frame) = call.slot.frames.get(call.index) else {
        return;
    };
    let same_call = call.slot.depth.load(Ordering::Acquire) == call.index + 1
        && frame.generation.load(Ordering::Relaxed) == call.generation
        && now >= frame.raise_at.load(Ordering::Relaxed);
    if !same_call {
        return;
    }
    // SAFETY: attached, so the thread states cannot change under us; the
    // class is a live type object (SetAsyncExc takes its own reference).
    unsafe {
        ffi::PyThreadState_SetAsyncExc(call.slot.thread_ident as std::ffi::c_long, class.as_ptr());
    }
    frame.pending.store(true, Ordering::Relaxed);
    let deadline = frame.deadline.load(Ordering::Relaxed);
    // If the plugin swallows it (`except BaseException:`), raise again a
    // whole deadline later.
    frame
        .raise_at
        .store(now.saturating_add(deadline.max(1)), Ordering::Relaxed);
}
