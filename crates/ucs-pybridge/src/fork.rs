//! A plugin cannot fork the server (issue 15 item 4).
//!
//! A child made by `os.fork()` in a hook is a copy of the server: it falls
//! back into the server's code on a thread whose runtime is not there, and
//! it keeps the listening socket and the data-dir lock, so after the server
//! exits the port stays taken and a new server on the data dir is refused.
//! `os.fork` and `os.forkpty` raise instead, saying what to use; and a child
//! that is forked anyway through Python's fork machinery (a `preexec_fn`)
//! ends at once, before it runs any server code. `subprocess` without a
//! `preexec_fn` forks and execs in C and is unaffected, which is the way a
//! plugin runs another program.

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The refusal, as a plugin sees it.
pub const FORK_REFUSED: &str = "os.fork() is not allowed in a UCS plugin: the child would be a \
     copy of the server, holding its socket and data dir; use subprocess to run a program";

/// Replaces `os.fork` and `os.forkpty` and registers the child's end.
pub(crate) fn forbid(py: Python<'_>) -> PyResult<()> {
    let globals = PyDict::new(py);
    globals.set_item("REFUSED", FORK_REFUSED)?;
    py.run(
        c"
import os

def refuse_fork(*args, **kwargs):
    raise OSError(REFUSED)

os.fork = refuse_fork
os.forkpty = refuse_fork
os.register_at_fork(after_in_child=lambda: os._exit(70))
",
        Some(&globals),
        None,
    )
}
