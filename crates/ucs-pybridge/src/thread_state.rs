//! One Python thread state per server thread, kept for the thread's life.
//!
//! Attaching on a thread without a thread state creates and destroys one
//! every time (about 10 µs, an `mmap`/`munmap` pair); with one kept, about
//! 0.1 µs. Runtime threads call [`park`] as they start and [`unpark`] as they
//! stop, the way Pants parks a thread state on each tokio thread.

use std::cell::Cell;

use pyo3::ffi;

thread_local! {
    /// The `PyGILState_Ensure` result of this thread's parked state.
    static PARKED: Cell<Option<ffi::PyGILState_STATE>> = const { Cell::new(None) };
}

/// Creates this thread's Python thread state and keeps it, without holding
/// the GIL. Idempotent.
pub fn park() {
    crate::init();
    if PARKED.with(Cell::get).is_some() {
        return;
    }
    // SAFETY: the interpreter is initialised (init above). Ensure creates this
    // thread's state and takes the GIL; SaveThread releases the GIL while the
    // state stays registered for this thread, so later attaches reuse it.
    let gil_state = unsafe {
        let gil_state = ffi::PyGILState_Ensure();
        ffi::PyEval_SaveThread();
        gil_state
    };
    PARKED.with(|parked| parked.set(Some(gil_state)));
}

/// Releases what [`park`] kept; call as the thread ends.
pub fn unpark() {
    let Some(gil_state) = PARKED.with(Cell::take) else {
        return;
    };
    // SAFETY: `park` left this thread's state registered and detached;
    // PyGILState_GetThisThreadState returns it, RestoreThread re-attaches,
    // and Release undoes the Ensure of `park`, destroying the state.
    unsafe {
        let state = ffi::PyGILState_GetThisThreadState();
        if !state.is_null() {
            ffi::PyEval_RestoreThread(state);
            ffi::PyGILState_Release(gil_state);
        }
    }
}
