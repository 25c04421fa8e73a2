//! The machine's floor for a call into another process: a small message
//! to a second process over a Unix socket and its answer back, with
//! nothing else on the way (issue 18 item 6).
//!
//! A process-isolated hook can never cost less than this: the server must
//! wake the host and the host must wake the server. On a virtual machine
//! whose idle vCPUs halt (this one: `haltpoll.guest_halt_poll_ns=0`), each
//! of those wakes is a VM exit, and the floor is tens of microseconds. It
//! is measured in the same run as the hook, so the hook's figure can be
//! read against what the machine allows.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// The bytes each way: about a status hook's request (the agent, the
/// status and the reason in the link's framing).
const MESSAGE: usize = 40;

/// Round trips to a child process echoing over a Unix socket for
/// `warm_up`, not counted, then `window`; each in microseconds, sorted.
pub(crate) fn socket_round_trips(
    work: &Path,
    warm_up: Duration,
    window: Duration,
) -> anyhow::Result<Vec<u64>> {
    let path = work.join("floor.sock");
    // A socket left by an earlier run would fail the bind.
    let _ = std::fs::remove_file(&path);
    let listener =
        UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
    let mut child = Command::new(std::env::current_exe().context("finding ucs-loadgen")?)
        .arg("echo")
        .arg("--socket")
        .arg(&path)
        .stdin(Stdio::null())
        .spawn()
        .context("starting the echo process")?;
    let measured = (|| {
        let (mut stream, _) = listener
            .accept()
            .context("the echo process did not connect")?;
        let mut message = [7u8; MESSAGE];
        let mut took = Vec::new();
        let counted_from = Instant::now() + warm_up;
        let end = counted_from + window;
        loop {
            let started = Instant::now();
            if started >= end {
                break;
            }
            stream.write_all(&message)?;
            stream.read_exact(&mut message)?;
            if started >= counted_from {
                took.push(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
            }
        }
        took.sort_unstable();
        anyhow::Ok(took)
    })();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&path);
    measured
}

/// The echo process: answers every message with itself until the socket
/// closes.
pub(crate) fn echo(socket: &Path) -> anyhow::Result<()> {
    let mut stream =
        UnixStream::connect(socket).with_context(|| format!("connecting {}", socket.display()))?;
    let mut message = [0u8; MESSAGE];
    while stream.read_exact(&mut message).is_ok() {
        stream.write_all(&message)?;
    }
    Ok(())
}
