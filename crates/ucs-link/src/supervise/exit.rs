//! What a child process died of, in the words of `plugins.list`'s error:
//! `plugin host exited: signal 11 (SIGSEGV)`.
//!
//! Whether a death was the memory limit cannot be read from the wait status.
//! `RLIMIT_AS` does not kill: it makes `mmap`/`brk` fail, and the process
//! then does what its allocator does on failure. CPython raises
//! `MemoryError` (a plugin may catch it; uncaught at top level the process
//! exits with status 1); Rust's default allocation-error handler prints
//! `memory allocation of N bytes failed` and aborts (SIGABRT); a stack that
//! cannot grow is a SIGSEGV. A cgroup's OOM killer sends SIGKILL, the same
//! as `kill -9` from outside. So the only evidence is what the child said
//! last on stderr, and [`ExitCause::from_status_and_stderr`] looks for those
//! two messages there; without it, or with no such message, the cause is
//! just the status.

use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use nix::sys::signal::Signal;

/// How a process ended, as its wait status says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// It exited with `code` (`exit(code)`, `os._exit(code)`, returning
    /// from `main`).
    Exited {
        /// The exit status.
        code: i32,
    },
    /// A signal killed it.
    Signaled {
        /// The signal's number.
        signal: i32,
        /// Whether the kernel wrote a core dump.
        core_dumped: bool,
    },
    /// Neither: a status `wait` only reports to tracers or with `WUNTRACED`
    /// (stopped, continued). Kept raw rather than guessed at.
    Other {
        /// The raw wait status.
        raw: i32,
    },
}

impl Termination {
    /// Reads a wait status.
    pub fn from_status(status: ExitStatus) -> Self {
        if let Some(code) = status.code() {
            Termination::Exited { code }
        } else if let Some(signal) = status.signal() {
            Termination::Signaled {
                signal,
                core_dumped: status.core_dumped(),
            }
        } else {
            Termination::Other {
                raw: status.into_raw(),
            }
        }
    }

    /// Whether it ended well: exit status 0.
    pub fn is_success(&self) -> bool {
        matches!(self, Termination::Exited { code: 0 })
    }
}

impl fmt::Display for Termination {
    /// `exit status 3`, `signal 11 (SIGSEGV)`, `signal 64` for a signal nix
    /// has no name for (real-time signals), `wait status 0x137f` otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Termination::Exited { code } => write!(f, "exit status {code}"),
            Termination::Signaled { signal, .. } => match Signal::try_from(*signal) {
                Ok(name) => write!(f, "signal {signal} ({})", name.as_str()),
                Err(_) => write!(f, "signal {signal}"),
            },
            Termination::Other { raw } => write!(f, "wait status {raw:#x}"),
        }
    }
}

/// Why a child process ended: its [`Termination`], and whether it was out
/// of memory when it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCause {
    /// Ended as the status says, with no sign of running out of memory.
    Ended(Termination),
    /// Ended after failing to allocate memory: with a memory limit set
    /// (I5), this is the limit. Shown as `exit status 1, out of memory`.
    OutOfMemory(Termination),
}

impl ExitCause {
    /// The cause from the wait status alone.
    pub fn from_status(status: ExitStatus) -> Self {
        ExitCause::Ended(Termination::from_status(status))
    }

    /// The cause from the wait status and the last of what the child wrote
    /// to stderr (a few KiB of its tail is plenty). It is
    /// [`OutOfMemory`](ExitCause::OutOfMemory) when the child did not exit
    /// with 0 and its stderr ends in CPython's uncaught `MemoryError` or
    /// contains Rust's `memory allocation of N bytes failed`. A plugin that
    /// prints such a line itself and exits with an error is misreported as
    /// out of memory; that only changes the message.
    pub fn from_status_and_stderr(status: ExitStatus, stderr_tail: &[u8]) -> Self {
        let termination = Termination::from_status(status);
        if !termination.is_success() && says_out_of_memory(stderr_tail) {
            ExitCause::OutOfMemory(termination)
        } else {
            ExitCause::Ended(termination)
        }
    }

    /// How the process ended, whatever the memory evidence.
    pub fn termination(&self) -> Termination {
        match self {
            ExitCause::Ended(termination) | ExitCause::OutOfMemory(termination) => *termination,
        }
    }
}

impl fmt::Display for ExitCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitCause::Ended(termination) => write!(f, "{termination}"),
            ExitCause::OutOfMemory(termination) => write!(f, "{termination}, out of memory"),
        }
    }
}

/// Whether a stderr tail shows an allocation failure that ended the process.
fn says_out_of_memory(stderr_tail: &[u8]) -> bool {
    let text = String::from_utf8_lossy(stderr_tail);
    let mut lines = text.lines().map(str::trim).filter(|line| !line.is_empty());
    // Rust's default alloc error handler, right before it aborts.
    let rust_abort = text.lines().any(|line| {
        let line = line.trim();
        line.starts_with("memory allocation of ") && line.ends_with(" failed")
    });
    // CPython's traceback of an uncaught MemoryError ends with its name.
    let python_uncaught = lines
        .next_back()
        .is_some_and(|last| last == "MemoryError" || last.starts_with("MemoryError:"));
    rust_abort || python_uncaught
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(raw: i32) -> ExitStatus {
        ExitStatus::from_raw(raw)
    }

    #[test]
    fn statuses_read_as_the_error_message_says() {
        assert_eq!(
            ExitCause::from_status(status(3 << 8)).to_string(),
            "exit status 3"
        );
        assert_eq!(
            ExitCause::from_status(status(11)).to_string(),
            "signal 11 (SIGSEGV)"
        );
        assert_eq!(
            ExitCause::from_status(status(9)).to_string(),
            "signal 9 (SIGKILL)"
        );
        // 0x80 is the core-dump bit: kept, not shown.
        assert_eq!(
            Termination::from_status(status(0x80 | 6)),
            Termination::Signaled {
                signal: 6,
                core_dumped: true
            }
        );
        // A real-time signal nix has no name for.
        assert_eq!(ExitCause::from_status(status(40)).to_string(), "signal 40");
        // A stopped status (0x7f low byte), which `Child::wait` never returns.
        assert_eq!(
            ExitCause::from_status(status(0x137f)).to_string(),
            "wait status 0x137f"
        );
    }

    #[test]
    fn memory_errors_in_the_stderr_tail_mark_out_of_memory() {
        let python = b"Traceback (most recent call last):\n  File \"<string>\", line 1, in <module>\nMemoryError\n";
        assert_eq!(
            ExitCause::from_status_and_stderr(status(1 << 8), python).to_string(),
            "exit status 1, out of memory"
        );
        let rust = b"memory allocation of 2147483648 bytes failed\n";
        assert_eq!(
            ExitCause::from_status_and_stderr(status(6), rust).to_string(),
            "signal 6 (SIGABRT), out of memory"
        );
    }

    #[test]
    fn a_caught_memory_error_or_a_clean_exit_is_not_out_of_memory() {
        let caught = b"MemoryError\nrecovered, going on\n";
        assert_eq!(
            ExitCause::from_status_and_stderr(status(1 << 8), caught),
            ExitCause::Ended(Termination::Exited { code: 1 })
        );
        let clean = b"MemoryError\n";
        assert_eq!(
            ExitCause::from_status_and_stderr(status(0), clean),
            ExitCause::Ended(Termination::Exited { code: 0 })
        );
    }
}
