//! Real children started with `spawn_linked`: what their deaths read as,
//! that the link sees a death at once, the memory limit (I5), death with
//! the spawning thread (PDEATHSIG), the process group, and the link's fd in
//! the child (issue 18; SPEC I2, I3, I5).
//!
//! The children are `/bin/sh`, `sleep` and `python3`, which do not speak
//! the link's protocol: a call into them stays pending until they die,
//! which is what is wanted here.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{Msg, eventually, serve, watchdog};
use nix::sys::resource::{Resource, UsageWho, getrlimit, getrusage, setrlimit};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Pid, getpgid};
use ucs_link::supervise::{ChildLimits, CommandExt, ExitCause, LINK_FD_ENV, MemoryLimit};
use ucs_link::{CloseReason, Link, LinkConfig, LinkError};

/// Every test finishes well within this, or fails.
const WATCHDOG: Duration = Duration::from_secs(60);

/// How fast "at once" must be: far below the call deadline used here.
const PROMPTLY: Duration = Duration::from_secs(2);

/// The deadline of the calls left pending in a child.
const CALL_DEADLINE: Duration = Duration::from_secs(10);

/// Set in a copy of this test binary run by [`rerun_alone`].
const RERUN_ENV: &str = "UCS_LINK_TEST_RERUN";

fn unlimited() -> ChildLimits {
    ChildLimits {
        memory: MemoryLimit::Unlimited,
    }
}

fn sh(script: &str) -> Command {
    let mut command = Command::new("/bin/sh");
    command.arg("-c").arg(script);
    command
}

/// A child that does nothing for longer than any test.
fn sleeper() -> Command {
    let mut command = Command::new("sleep");
    command.arg("30");
    command
}

fn config(name: &str) -> LinkConfig {
    LinkConfig {
        call_deadline: CALL_DEADLINE,
        ..LinkConfig::named(name)
    }
}

/// Waits for `child` at most `limit`; `None` if it is still running.
fn wait_for(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let mut status = None;
    eventually(limit, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    status
}

/// Makes a call on `link` from another thread; the handle gives its result
/// and when it came.
fn pending_call(
    link: &Link<Msg, Msg>,
) -> thread::JoinHandle<(Result<common::Reply, LinkError>, Instant)> {
    let caller = link.caller();
    let handle = thread::spawn(move || {
        let result = caller.call_with_deadline(Msg::Sleep { millis: 1 }, CALL_DEADLINE);
        (result, Instant::now())
    });
    // Let the request reach the child, so the call is pending when it dies
    // (should it not be yet, the call fails at once all the same).
    thread::sleep(Duration::from_millis(100));
    handle
}

/// Checks a call left pending in a child that died at `died` failed with
/// PeerGone, promptly, and the link closed.
fn assert_gone_at_once(
    link: &Link<Msg, Msg>,
    pending: thread::JoinHandle<(Result<common::Reply, LinkError>, Instant)>,
    died: Instant,
) {
    let reason = link.wait_closed(PROMPTLY).expect("the link closes");
    // The child died with the request unread, so the kernel may report a
    // reset rather than a clean end of stream.
    assert!(
        matches!(reason, CloseReason::PeerClosed | CloseReason::Read(_)),
        "{reason:?}"
    );
    let (result, at) = pending.join().expect("caller thread");
    assert!(
        matches!(result, Err(LinkError::PeerGone(_))),
        "expected PeerGone, got {result:?}"
    );
    let took = at.saturating_duration_since(died);
    assert!(took < PROMPTLY, "the call failed {took:?} after the death");
}

/// I2/I3: a host killed with SIGKILL (by a supervisor, or a cgroup's OOM
/// killer) reads as `signal 9 (SIGKILL)`, and the call pending in it fails
/// with PeerGone at once, not at its deadline.
#[test]
fn a_child_killed_by_sigkill_reads_as_signal_9_and_fails_the_pending_call_at_once() {
    watchdog(WATCHDOG, || {
        // `exec`: the shell must not leave a `sleep` holding the link open.
        let linked = sh("exec sleep 30")
            .spawn_linked(&unlimited())
            .expect("spawns");
        let mut child = linked.child;
        let link = Link::start(linked.stream, config("k9"), serve("s")).expect("link");
        let pending = pending_call(&link);
        let died = Instant::now();
        child.kill().expect("SIGKILL");
        let status = wait_for(&mut child, PROMPTLY).expect("the child dies");
        assert_eq!(
            ExitCause::from_status(status).to_string(),
            "signal 9 (SIGKILL)"
        );
        assert_gone_at_once(&link, pending, died);
    });
}

/// A host that crashes (here a shell that sends itself SIGSEGV once told
/// to) reads as `signal 11 (SIGSEGV)`, and the pending call fails at once.
#[test]
fn a_child_that_segfaults_reads_as_signal_11_and_fails_the_pending_call_at_once() {
    watchdog(WATCHDOG, || {
        // No core file: the core pattern may be a plain file in the cwd.
        let mut command = sh("ulimit -c 0; read go; kill -SEGV $$");
        command.stdin(Stdio::piped());
        let linked = command.spawn_linked(&unlimited()).expect("spawns");
        let mut child = linked.child;
        let link = Link::start(linked.stream, config("sv"), serve("s")).expect("link");
        let pending = pending_call(&link);
        let died = Instant::now();
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"go\n")
            .expect("tells it to crash");
        let status = wait_for(&mut child, PROMPTLY).expect("the child dies");
        assert_eq!(
            ExitCause::from_status(status).to_string(),
            "signal 11 (SIGSEGV)"
        );
        assert_gone_at_once(&link, pending, died);
    });
}

/// I5: under a 256 MiB address-space limit, a Python host that keeps
/// allocating gets MemoryError at the limit and dies of it (exit status 1,
/// read as out of memory), instead of growing. It would stop by itself at
/// 1 GiB, exiting 0, so a limit that did not apply fails the test rather
/// than the machine.
#[test]
fn a_python_memory_bomb_under_an_address_space_limit_dies_of_memory_error() {
    watchdog(WATCHDOG, || {
        const LIMIT: u64 = 256 << 20;
        let mut command = Command::new("python3");
        command.arg("-c").arg(
            "import resource\n\
             print(*resource.getrlimit(resource.RLIMIT_AS), flush=True)\n\
             hoard = []\n\
             for _ in range(1024):\n    hoard.append(bytearray(1 << 20))\n",
        );
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let linked = command
            .spawn_linked(&ChildLimits {
                memory: MemoryLimit::AddressSpace { bytes: LIMIT },
            })
            .expect("spawns");
        let started = Instant::now();
        let output = linked.child.wait_with_output().expect("waits");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stdout.trim(), format!("{LIMIT} {LIMIT}"), "{stderr}");
        assert_eq!(
            ExitCause::from_status_and_stderr(output.status, &output.stderr).to_string(),
            "exit status 1, out of memory",
            "{stderr}"
        );
        assert!(stderr.trim_end().ends_with("MemoryError"), "{stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "took {:?}",
            started.elapsed()
        );
        // The largest child this process has waited for stayed near the
        // limit (ru_maxrss is in KiB; the other tests' children are tiny).
        let max_rss = getrusage(UsageWho::RUSAGE_CHILDREN)
            .expect("getrusage")
            .max_rss();
        assert!(
            u64::try_from(max_rss).unwrap_or(u64::MAX) < (LIMIT + (64 << 20)) / 1024,
            "a child grew to {max_rss} KiB"
        );
    });
}

/// PDEATHSIG follows the spawning *thread*, not the process: a host
/// spawned from a thread that then exits is killed with SIGKILL although
/// this process lives on (which is why the server spawns hosts from a
/// supervisor thread that lives as long as they should, never from a
/// pooled worker). One spawned from a thread that lives on is not.
#[test]
fn a_child_dies_when_the_thread_that_spawned_it_exits() {
    watchdog(WATCHDOG, || {
        let orphaned = thread::spawn(|| sleeper().spawn_linked(&unlimited()).expect("spawns"))
            .join()
            .expect("spawning thread");
        let mut orphaned = orphaned.child;
        let mut kept = sleeper().spawn_linked(&unlimited()).expect("spawns").child;
        let status = wait_for(&mut orphaned, CALL_DEADLINE)
            .expect("the child of the exited thread is killed");
        assert_eq!(
            ExitCause::from_status(status).to_string(),
            "signal 9 (SIGKILL)"
        );
        // Its spawning thread (this one) is alive, so it still runs.
        assert_eq!(kept.try_wait().expect("try_wait"), None);
        kept.kill().expect("kill");
        let _ = kept.wait();
    });
}

/// The host leads a process group of its own, apart from this process's,
/// so a supervisor reaches it and whatever it started with one signal. That
/// matters for the link: a grandchild inherits the link's fd (a shell's
/// `sleep` here; a Python host's `subprocess` does not, `inherited_link`
/// marks the fd close-on-exec again), so killing the host alone leaves the
/// link open, and killing the group closes it.
#[test]
fn the_child_leads_its_own_process_group_and_killing_it_closes_the_link() {
    watchdog(WATCHDOG, || {
        let mut command = sh("sleep 30 & echo $!; wait");
        command.stdout(Stdio::piped());
        let linked = command.spawn_linked(&unlimited()).expect("spawns");
        let mut child = linked.child;
        let link = Link::start(linked.stream, config("pg"), serve("s")).expect("link");
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("a pid"));
        assert_eq!(getpgid(Some(pid)).expect("getpgid"), pid);
        assert_ne!(getpgid(None).expect("getpgid"), pid);
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the grandchild's pid");
        let grandchild = Pid::from_raw(line.trim().parse().expect("a pid"));
        assert_eq!(getpgid(Some(grandchild)).expect("getpgid"), pid);

        child.kill().expect("SIGKILL to the host alone");
        wait_for(&mut child, PROMPTLY).expect("the host dies");
        assert!(
            link.wait_closed(Duration::from_millis(500)).is_none(),
            "the grandchild holds the link open"
        );
        let died = Instant::now();
        killpg(pid, Signal::SIGKILL).expect("SIGKILL to the group");
        link.wait_closed(PROMPTLY).expect("the link closes");
        assert!(died.elapsed() < PROMPTLY);
    });
}

/// The child finds its end of the link under `UCS_LINK_FD`, open across
/// `exec`, and what it writes there arrives on this side's end.
#[test]
fn the_child_writes_to_the_link_fd_it_is_given() {
    watchdog(WATCHDOG, || {
        let mut command = Command::new("python3");
        command.arg("-c").arg(format!(
            "import os; os.write(int(os.environ['{LINK_FD_ENV}']), b'linked')"
        ));
        let linked = command.spawn_linked(&unlimited()).expect("spawns");
        let mut child = linked.child;
        let mut stream: UnixStream = linked.stream;
        let mut received = Vec::new();
        stream
            .read_to_end(&mut received)
            .expect("reads until the child exits");
        assert_eq!(received, b"linked");
        assert!(child.wait().expect("waits").success());
    });
}

/// Runs the test `name` again, alone, in a fresh process of this test
/// binary with [`RERUN_ENV`] set, for a test that changes process-wide
/// state (fds, limits) the other tests must not see. Checks that it ran
/// and passed.
fn rerun_alone(name: &str) {
    let exe = std::env::current_exe().expect("the test binary");
    let output = Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(RERUN_ENV, name)
        .output()
        .expect("runs the test binary");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{name} failed alone:\n{stderr}");
    assert!(
        stderr.contains(&format!("{name}: done")),
        "{name} did not run:\n{stderr}"
    );
}

/// Whether this process is the rerun of `name`.
fn is_rerun_of(name: &str) -> bool {
    std::env::var(RERUN_ENV).is_ok_and(|rerun| rerun == name)
}

/// A server whose stdin and stdout were closed after it started (a Python
/// plugin's `sys.stdin.close()` closes fd 0) still gives a child a usable
/// link: `socketpair` hands out fds 0 and 1 then, and the child's end on 1
/// would be overwritten by the child's own stdout.
#[test]
fn a_parent_with_closed_stdio_still_links_its_child() {
    const NAME: &str = "a_parent_with_closed_stdio_still_links_its_child";
    if !is_rerun_of(NAME) {
        return rerun_alone(NAME);
    }
    for fd in [0, 1] {
        // SAFETY: this process is the rerun of this one test; nothing else
        // uses its stdin or stdout, and `std` treats writes to a closed
        // stdout as discarded.
        drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
    }
    let mut command = sh(&format!(
        "[ \"${LINK_FD_ENV}\" -gt 2 ] && [ -S /proc/self/fd/${LINK_FD_ENV} ]"
    ));
    command.stdin(Stdio::null()).stdout(Stdio::null());
    let mut linked = command.spawn_linked(&unlimited()).expect("spawns");
    let status = linked.child.wait().expect("waits");
    assert!(status.success(), "the child found no link: {status}");
    eprintln!("{NAME}: done");
}

/// I5: the child's limit is never above this process's own hard limit:
/// without privilege raising it would fail the spawn (EPERM), with it it
/// would undo the limit an administrator put on the server.
#[test]
fn the_memory_limit_is_capped_at_the_parents_hard_limit() {
    const NAME: &str = "the_memory_limit_is_capped_at_the_parents_hard_limit";
    if !is_rerun_of(NAME) {
        return rerun_alone(NAME);
    }
    const OWN: u64 = 2 << 30;
    let (soft, hard) = getrlimit(Resource::RLIMIT_AS).expect("getrlimit");
    setrlimit(Resource::RLIMIT_AS, soft.min(OWN), hard.min(OWN)).expect("lowers its own limit");
    let mut command = Command::new("python3");
    command
        .arg("-c")
        .arg("import resource; print(*resource.getrlimit(resource.RLIMIT_AS))")
        .stdout(Stdio::piped());
    let linked = command
        .spawn_linked(&ChildLimits {
            memory: MemoryLimit::AddressSpace { bytes: 3 << 30 },
        })
        .expect("spawns");
    let output = linked.child.wait_with_output().expect("waits");
    assert!(output.status.success(), "{}", output.status);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("{OWN} {OWN}")
    );
    eprintln!("{NAME}: done");
}
