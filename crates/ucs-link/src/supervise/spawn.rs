//! Starting a child process that is limited, linked and tied to its parent,
//! and, in the child, taking the link it was given.
//!
//! [`CommandExt::spawn_linked`] makes a socket pair, and between `fork` and
//! `exec` in the child (`pre_exec`): asks for SIGKILL when the parent goes
//! (`PR_SET_PDEATHSIG`), sets the memory limit (`RLIMIT_AS`, I5) and clears
//! `FD_CLOEXEC` on the child's end so it survives `exec`; the fd's number is
//! in the environment under [`LINK_FD_ENV`]. The child gets a process group
//! of its own, so a terminal's Ctrl-C reaches the server, which decides, and
//! so a supervisor can signal the host and whatever it started at once.
//!
//! Two things to know about `PR_SET_PDEATHSIG` on Linux:
//! - "the parent" is the *thread* that forked the child: when that thread
//!   exits, the child is killed even though the process lives on. Spawn
//!   hosts from a thread that lives as long as they should (a supervisor
//!   thread), never from a pooled worker that may be retired (tokio's
//!   `spawn_blocking` threads are).
//! - it is not inherited by the child's own children (a grandchild needs its
//!   own), and it is cleared by `exec` of a set-uid binary.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as StdCommandExt;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::prctl;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::Signal;
use nix::unistd::{Pid, getpid, getppid};

use crate::error::LinkError;

/// The environment variable that names the child's end of the link (a
/// decimal fd number).
pub const LINK_FD_ENV: &str = "UCS_LINK_FD";

/// A limit on the child's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryLimit {
    /// No limit beyond the parent's own.
    Unlimited,
    /// `RLIMIT_AS`: the child's virtual address space, soft and hard, so the
    /// child cannot raise it, and never above this process's own hard limit
    /// (a child could not get more anyway without privilege, and with it
    /// would undo an administrator's `LimitAS=`). It counts reservations,
    /// not pages used: every thread's stack (8 MiB each by default) and
    /// glibc's per-thread malloc arenas (64 MiB of address space each, see
    /// `MALLOC_ARENA_MAX`) count in full, so a host with many threads needs
    /// a limit well above its resident size.
    AddressSpace {
        /// The limit in bytes.
        bytes: u64,
    },
}

/// How a linked child is limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildLimits {
    /// Its memory.
    pub memory: MemoryLimit,
}

/// A child started by [`CommandExt::spawn_linked`], with this side's end of
/// its link. The child's end is already closed here, so the link sees the
/// child's death as an end of stream.
#[derive(Debug)]
pub struct LinkedChild {
    /// The process, to wait on and to kill.
    pub child: Child,
    /// This side's end of the link, for [`crate::Link::start`].
    pub stream: UnixStream,
}

/// Starting a [`Command`] as a linked child.
pub trait CommandExt: private::Sealed {
    /// Spawns the command with a link, in its own process group, killed by
    /// SIGKILL when the spawning thread exits, and limited by `limits`.
    ///
    /// Takes the command by value: its `pre_exec` step names this spawn's
    /// fd, so it must not be spawned again.
    fn spawn_linked(self, limits: &ChildLimits) -> Result<LinkedChild, LinkError>;
}

mod private {
    /// Only `Command` gets the extension.
    pub trait Sealed {}
    impl Sealed for std::process::Command {}
}

impl CommandExt for Command {
    fn spawn_linked(mut self, limits: &ChildLimits) -> Result<LinkedChild, LinkError> {
        let spawn_error = |program: &OsStr, err: io::Error| LinkError::Spawn {
            program: program.to_string_lossy().into_owned(),
            source: Arc::new(err),
        };
        // Both ends are close-on-exec (std makes the pair with
        // SOCK_CLOEXEC), so no other child spawned meanwhile inherits them;
        // only this child's `pre_exec` clears the flag, on its copy.
        let (parent_end, child_end) =
            UnixStream::pair().map_err(|err| spawn_error(self.get_program(), err))?;
        let child_end =
            above_stdio(child_end).map_err(|err| spawn_error(self.get_program(), err))?;
        let child_fd = child_end.as_raw_fd();
        let parent = getpid();
        let memory = within_own_limit(limits.memory)
            .map_err(|err| spawn_error(self.get_program(), err.into()))?;
        self.env(LINK_FD_ENV, child_fd.to_string());
        self.process_group(0);
        // SAFETY: the closure runs in the child between `fork` and `exec`,
        // where only async-signal-safe calls are sound (another thread of
        // the parent may have held the allocator's or any other lock at the
        // fork, and that lock stays held in the child). It captures only
        // `Copy` values, allocates nothing (errors are `io::Error`s built
        // from an errno, which do not allocate) and makes four system calls
        // through nix's thin wrappers: prctl(2), getppid(2), setrlimit(2)
        // and fcntl(2), all async-signal-safe.
        unsafe {
            self.pre_exec(move || prepare_child(child_fd, parent, memory));
        }
        let child = self
            .spawn()
            .map_err(|err| spawn_error(self.get_program(), err))?;
        // The child has its copy; ours must close, or the child's death
        // would never read as an end of stream here.
        drop(child_end);
        Ok(LinkedChild {
            child,
            stream: parent_end,
        })
    }
}

/// `end`, moved to an fd above 2 if it is one of the stdio numbers.
///
/// A process whose stdin, stdout or stderr was closed after it started (an
/// embedded Python plugin's `sys.stdin.close()` closes fd 0) gets those
/// numbers back from `socketpair`. The child's end on 0, 1 or 2 would be
/// overwritten by the child's stdio setup (`Stdio::null()`, pipes), or,
/// left alone, refused by [`inherited_link`]. `try_clone` duplicates with
/// `F_DUPFD_CLOEXEC` from 3 up; the low fd closes when `end` drops.
fn above_stdio(end: UnixStream) -> io::Result<UnixStream> {
    if end.as_raw_fd() > 2 {
        return Ok(end);
    }
    let moved = end.try_clone()?;
    if moved.as_raw_fd() > 2 {
        Ok(moved)
    } else {
        Err(io::Error::other(
            "the link's fd could not be moved above the stdio fds",
        ))
    }
}

/// `memory`, lowered to this process's own hard `RLIMIT_AS`: without
/// privilege, raising it fails the spawn with `EPERM`; with it (root), it
/// would undo the limit an administrator put on the server (a unit's
/// `LimitAS=`). Read here rather than in the child: it is the same value
/// at `fork`, and the child's setup stays as small as it can be.
fn within_own_limit(memory: MemoryLimit) -> nix::Result<MemoryLimit> {
    match memory {
        MemoryLimit::Unlimited => Ok(MemoryLimit::Unlimited),
        MemoryLimit::AddressSpace { bytes } => {
            let (_, hard) = getrlimit(Resource::RLIMIT_AS)?;
            Ok(MemoryLimit::AddressSpace {
                bytes: bytes.min(hard),
            })
        }
    }
}

/// The child's setup before `exec`; see the SAFETY comment at its use.
fn prepare_child(link_fd: RawFd, parent: Pid, memory: MemoryLimit) -> io::Result<()> {
    prctl::set_pdeathsig(Signal::SIGKILL)?;
    // The parent may have died between `fork` and the line above; then the
    // signal never comes, and the child must not run on, orphaned.
    if getppid() != parent {
        return Err(io::Error::from_raw_os_error(nix::libc::ESRCH));
    }
    if let MemoryLimit::AddressSpace { bytes } = memory {
        setrlimit(Resource::RLIMIT_AS, bytes, bytes)?;
    }
    // SAFETY: `link_fd` is the child's end of the pair, open in the parent
    // at `fork` (the parent holds it until `spawn` returns), so it is open
    // here, and the borrow lasts only for this call.
    let fd = unsafe { BorrowedFd::borrow_raw(link_fd) };
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
    Ok(())
}

/// Set once the inherited link has been taken.
static INHERITED_LINK_TAKEN: AtomicBool = AtomicBool::new(false);

/// In a child started by [`CommandExt::spawn_linked`]: takes the link's fd
/// named by [`LINK_FD_ENV`], once per process.
///
/// Marks it close-on-exec again, so processes the child starts (a plugin's
/// `subprocess`) do not hold the link open after the child dies.
pub fn inherited_link() -> Result<UnixStream, LinkError> {
    let not_linked = |why: String| LinkError::NoInheritedLink(why);
    let value = std::env::var(LINK_FD_ENV)
        .map_err(|err| not_linked(format!("{LINK_FD_ENV} is not set ({err})")))?;
    let fd: RawFd = value.parse().ok().filter(|fd| *fd > 2).ok_or_else(|| {
        not_linked(format!(
            "{LINK_FD_ENV}={value:?} is not an fd number above 2"
        ))
    })?;
    // Checked through /proc rather than on the raw fd, so a wrong number is
    // an error and not a borrow of an fd that is not ours.
    let is_socket = fs::metadata(format!("/proc/self/fd/{fd}"))
        .map(|metadata| metadata.file_type().is_socket())
        .map_err(|err| not_linked(format!("fd {fd} is not open ({err})")))?;
    if !is_socket {
        return Err(not_linked(format!("fd {fd} is not a socket")));
    }
    if INHERITED_LINK_TAKEN.swap(true, Ordering::SeqCst) {
        return Err(not_linked(
            "the inherited link was already taken".to_owned(),
        ));
    }
    // SAFETY: fd is open and a socket (checked above); the parent passed it
    // to this process for this use alone, and the flag above makes this the
    // only `OwnedFd` ever made of it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    fcntl(&owned, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .map_err(|err| not_linked(format!("cannot mark fd {fd} close-on-exec ({err})")))?;
    Ok(UnixStream::from(owned))
}
