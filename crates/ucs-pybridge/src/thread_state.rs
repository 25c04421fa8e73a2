//! One Python thread state per server thread, kept for the thread's life.
//!
//! Attaching on a thread without a thread state creates and destroys one
//! every time (about 10 µs, an `mmap`/`munmap` pair); with one kept, about
//! 0.1 µs. Runtime threads call [`park`] as they start and [`unpark`] as they
//! stop, the way Pants parks a thread state on each tokio thread.
//!
//! Parking must not take the GIL: tokio starts blocking-pool threads while
//! calls are waiting, and a new thread that first had to wait for the GIL
//! (up to the 5 ms switch interval behind a plugin thread spinning in pure
//! Python) would delay calls that never run Python at all (L5, issue 6's GIL
//! independence figure). `PyThreadState_New` needs no GIL and, when the
//! thread has no state yet, binds the new one to the thread for the
//! `PyGILState_*` API that PyO3's `attach` uses, marked as not owned by a
//! `PyGILState_Ensure` so no `Release` ever destroys it.

use std::cell::Cell;
use std::ptr;

use pyo3::ffi;

thread_local! {
    /// The thread state [`park`] created on this thread, to destroy in
    /// [`unpark`]; null when none was created here.
    static PARKED: Cell<*mut ffi::PyThreadState> = const { Cell::new(ptr::null_mut()) };
    /// Whether [`park`] already ran on this thread.
    static DONE: Cell<bool> = const { Cell::new(false) };
}

/// Creates this thread's Python thread state and keeps it, without taking
/// the GIL. Idempotent; a thread that already has a state (the one that
/// initialised the interpreter) keeps its own.
pub fn park() {
    crate::init();
    if DONE.with(|done| done.replace(true)) {
        return;
    }
    // SAFETY: the interpreter is initialised (init above) and never
    // finalised, so the main interpreter pointer is valid. Neither
    // PyGILState_GetThisThreadState nor PyThreadState_New needs the GIL
    // (documented for both); PyThreadState_New binds the new state to this
    // thread because GetThisThreadState just said it has none.
    let created = unsafe {
        if !ffi::PyGILState_GetThisThreadState().is_null() {
            return;
        }
        ffi::PyThreadState_New(ffi::PyInterpreterState_Main())
    };
    PARKED.with(|parked| parked.set(created));
}

/// Destroys what [`park`] created; call as the thread ends, not attached.
pub fn unpark() {
    let state = PARKED.with(|parked| parked.replace(ptr::null_mut()));
    DONE.with(|done| done.set(false));
    if state.is_null() {
        return;
    }
    // SAFETY: `state` was created by `park` on this thread and is not
    // current (the thread is not attached as it stops). RestoreThread takes
    // the GIL and makes it current, Clear drops its objects with the GIL
    // held, and DeleteCurrent frees it, unbinds it from this thread and
    // releases the GIL.
    unsafe {
        if ffi::PyGILState_GetThisThreadState() != state {
            return;
        }
        ffi::PyEval_RestoreThread(state);
        ffi::PyThreadState_Clear(state);
        ffi::PyThreadState_DeleteCurrent();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use pyo3::prelude::*;

    use super::*;

    /// Parking while another thread holds the GIL must not wait for it.
    /// The holder waits (with the GIL, on purpose) for the parking thread to
    /// say it is done; if parking took the GIL the two would wait for each
    /// other until the holder's generous timeout.
    #[test]
    fn park_does_not_take_the_gil() {
        crate::init();
        let (parked_tx, parked_rx) = mpsc::channel();
        let (holding_tx, holding_rx) = mpsc::channel();
        let holder = std::thread::spawn(move || {
            Python::attach(|_py| {
                holding_tx.send(()).expect("the parking thread listens");
                parked_rx.recv_timeout(Duration::from_secs(30)).is_ok()
            })
        });
        holding_rx.recv().expect("the holder attached");
        let parker = std::thread::spawn(move || {
            park();
            // SAFETY: reading this thread's own binding needs no GIL.
            let bound = unsafe { !ffi::PyGILState_GetThisThreadState().is_null() };
            parked_tx.send(()).expect("the holder listens");
            let answer = Python::attach(|py| py.eval(c"6 * 7", None, None)?.extract::<i64>());
            unpark();
            (bound, answer.ok())
        });
        assert!(
            holder.join().expect("holder"),
            "park waited for the GIL held by another thread"
        );
        assert_eq!(parker.join().expect("parker"), (true, Some(42)));
    }

    /// A parked state is reused by every attach and survives them.
    #[test]
    fn attach_reuses_the_parked_state() {
        // Initialise here: the thread that initialises the interpreter keeps
        // its own state and parks nothing, so it must not be the one below.
        crate::init();
        std::thread::spawn(|| {
            park();
            // SAFETY: reading this thread's own binding needs no GIL.
            let parked = unsafe { ffi::PyGILState_GetThisThreadState() };
            for _ in 0..3 {
                Python::attach(|_py| {
                    // SAFETY: attached, so the current state is readable.
                    assert_eq!(unsafe { ffi::PyThreadState_Get() }, parked);
                });
            }
            // SAFETY: as above.
            assert_eq!(unsafe { ffi::PyGILState_GetThisThreadState() }, parked);
            unpark();
            // SAFETY: as above.
            assert!(unsafe { ffi::PyGILState_GetThisThreadState() }.is_null());
        })
        .join()
        .expect("the thread");
    }
}
