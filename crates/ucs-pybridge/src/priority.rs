//! A plugin host's threads that the plugin starts itself run at a lower CPU
//! priority than the threads that serve the server's calls (issue 18
//! item 6, I1).
//!
//! A process-isolated plugin can no longer hold the server's GIL, but a
//! thread of it that spins still takes a core; on a small machine that is
//! half of what the server has. Linux keeps a nice value per thread, so the
//! host raises it for each thread the plugin starts through `threading`
//! (and `_thread`), as the thread's first act, and leaves the link's
//! handler threads, which run the plugin's hooks, callbacks and middleware
//! for the server's waiting calls, at the server's priority. A plugin's
//! background work then yields the CPU to calls whenever both want it, and
//! has all of it otherwise. Nothing else about the thread changes.
//!
//! The GIL is the other half: a call into a plugin needs its interpreter's
//! GIL, and a plugin thread busy in pure Python hands it over only when a
//! waiting thread has asked for it for one *switch interval*, 5 ms in
//! CPython. Every hooked status change then took 5.6 ms while a plugin
//! thread computed something, in process (any plugin's thread) and in a
//! host (the plugin's own). [`set_switch_interval`] shortens that wait for
//! every interpreter the server runs plugins in ([`DEFAULT_SWITCH_INTERVAL`]).

use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The default switch interval of the interpreters plugins run in: 0.5 ms.
/// A hooked `agents.setStatus` with a plugin thread spinning took 5.6 ms at
/// p50 with CPython's 5 ms, 1.4 ms at 1 ms, 0.87 ms at 0.5 ms and 0.42 ms at
/// 0.1 ms, on two cores (`BENCHMARKS.md`). It costs nothing while no thread
/// waits for the GIL. When every thread wants it (32 `config.users.get`
/// calls in flight through a Python middleware converting 501 users), the
/// GIL changes hands more often: 6 to 11 % fewer calls per second there
/// than at 5 ms, a price for a server that is GIL-bound anyway, and
/// `--python-switch-interval 5ms` takes it back.
pub const DEFAULT_SWITCH_INTERVAL: Duration = Duration::from_micros(500);

/// Sets the interpreter's switch interval (`sys.setswitchinterval`): how
/// long a thread waiting for the GIL waits before the holder is asked to
/// let go. A plugin may still set its own. Attaches for it; call it where
/// no other lock is held (L5).
pub fn set_switch_interval(interval: Duration) -> PyResult<()> {
    Python::attach(|py| {
        py.import("sys")?
            .call_method1("setswitchinterval", (interval.as_secs_f64(),))?;
        Ok(())
    })
}

/// Wraps `threading`'s thread start so that each new thread first sets its
/// own nice value to `nice` (0 to 19; 0 leaves threads as they are).
pub fn lower_plugin_threads(py: Python<'_>, nice: u8) -> PyResult<()> {
    if nice == 0 {
        return Ok(());
    }
    let globals = PyDict::new(py);
    globals.set_item("NICE", nice.min(19))?;
    // The wrapper is what `threading.Thread.start` (3.11 and 3.12: the
    // embedded interpreter's, `ucs --version`) and `_thread` callers reach;
    // 3.13 starts threads through `_start_joinable_thread` instead, and
    // `tests/isolation.rs` would say so; `os.setpriority(PRIO_PROCESS, 0, n)` sets the calling thread's
    // nice value on Linux, and raising it needs no privilege.
    let code = cr#"
import _thread
import os
import threading

def _lowered(start):
    def start_new_thread(function, args, kwargs=None):
        def run(*args, **kwargs):
            try:
                os.setpriority(os.PRIO_PROCESS, 0, NICE)
            except OSError:
                pass
            return function(*args, **kwargs)
        return start(run, args, {} if kwargs is None else kwargs)
    start_new_thread.__wrapped__ = start
    return start_new_thread

threading._start_new_thread = _lowered(threading._start_new_thread)
_thread.start_new_thread = _lowered(_thread.start_new_thread)
_thread.start_new = _thread.start_new_thread
"#;
    py.run(code, Some(&globals), None)
}
