//! Frames out: written by the thread that sends them whenever nothing is
//! waiting to be written, queued for the writer thread otherwise.
//!
//! Why not always the writer thread: on a small virtual machine each
//! hand-off from one sleeping thread to another costs a wake-up of an idle
//! vCPU, about 20 µs here (`BENCHMARKS.md`, "Process isolation"), and a
//! writer thread puts one on each direction of every call. A send that
//! fits the socket buffer is written at once with `MSG_DONTWAIT`, under a
//! short lock (a non-blocking system call, never a wait: L5). Only what
//! does not fit (a full socket, a peer that reads slowly) goes to the
//! writer thread, which waits on the socket for it; while it holds frames,
//! every later frame queues behind them, so frames never interleave and
//! keep the order they were sent in.

use std::collections::VecDeque;
use std::io;
use std::os::unix::net::UnixStream;
use std::sync::{Condvar, Mutex, PoisonError};

use crate::frame;
use crate::link::lock;

/// Why a frame was not sent.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The link is closed; the frame was dropped.
    Closed,
    /// Writing failed: the link must close with this.
    Write(io::Error),
}

/// What is waiting to be written, under the outbox's lock.
struct Pending {
    /// Whole frames (the first possibly begun already) for the writer.
    queue: VecDeque<Vec<u8>>,
    /// The writer thread is writing a frame it took from `queue`.
    writing: bool,
    /// The link closed: nothing more is written.
    closed: bool,
}

impl Pending {
    /// Whether a frame may be written by its sender right now: nothing is
    /// ahead of it.
    fn is_clear(&self) -> bool {
        self.queue.is_empty() && !self.writing
    }
}

/// The writing side of one link's socket.
pub(crate) struct Outbox {
    /// What waits for the writer thread.
    pending: Mutex<Pending>,
    /// Signalled when a frame is queued and when the link closes.
    queued: Condvar,
    /// The socket's writing handle.
    socket: UnixStream,
}

impl Outbox {
    /// An outbox writing to `socket`.
    pub(crate) fn new(socket: UnixStream) -> Self {
        Self {
            pending: Mutex::new(Pending {
                queue: VecDeque::new(),
                writing: false,
                closed: false,
            }),
            queued: Condvar::new(),
            socket,
        }
    }

    /// Sends one whole frame: written now as far as the socket takes it
    /// without waiting, the rest queued for the writer thread.
    pub(crate) fn send(&self, mut bytes: Vec<u8>) -> Result<(), SendError> {
        let mut pending = lock(&self.pending);
        if pending.closed {
            return Err(SendError::Closed);
        }
        if pending.is_clear() {
            let sent =
                frame::send_without_waiting(&self.socket, &bytes).map_err(SendError::Write)?;
            if sent == bytes.len() {
                return Ok(());
            }
            bytes.drain(..sent);
        }
        pending.queue.push_back(bytes);
        drop(pending);
        self.queued.notify_one();
        Ok(())
    }

    /// Stops writing: frames not yet written are dropped, the writer thread
    /// returns.
    pub(crate) fn close(&self) {
        let dropped = {
            let mut pending = lock(&self.pending);
            pending.closed = true;
            std::mem::take(&mut pending.queue)
        };
        self.queued.notify_all();
        drop(dropped);
    }

    /// The writer thread's loop: writes what senders could not, waiting on
    /// the socket with no lock held, until the link closes (`Ok`) or a
    /// write fails (`Err`, for the link to close with).
    pub(crate) fn run_writer(&self) -> io::Result<()> {
        loop {
            let bytes = {
                let mut pending = lock(&self.pending);
                loop {
                    if pending.closed {
                        return Ok(());
                    }
                    if let Some(bytes) = pending.queue.pop_front() {
                        pending.writing = true;
                        break bytes;
                    }
                    pending = self
                        .queued
                        .wait(pending)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            };
            let written = frame::write_frame(&self.socket, &bytes);
            lock(&self.pending).writing = false;
            written?;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::sync::Arc;

    use super::*;

    /// More than an `AF_UNIX` socket buffer holds, so most of it waits for
    /// the writer thread.
    const BIG: usize = 4 << 20;

    #[test]
    fn frames_too_big_for_the_socket_reach_the_peer_whole_and_in_order() {
        let (ours, mut theirs) = UnixStream::pair().expect("a socket pair");
        let outbox = Arc::new(Outbox::new(ours));
        let writer = {
            let outbox = Arc::clone(&outbox);
            std::thread::spawn(move || outbox.run_writer())
        };
        let frames: Vec<Vec<u8>> = vec![vec![1; BIG], vec![2; 10], vec![3; BIG], vec![4; 10]];
        for bytes in &frames {
            outbox.send(bytes.clone()).expect("sent");
        }
        let mut received = vec![0u8; frames.iter().map(Vec::len).sum()];
        theirs.read_exact(&mut received).expect("read");
        assert_eq!(received, frames.concat());
        outbox.close();
        assert!(writer.join().expect("the writer ran").is_ok());
        assert!(matches!(outbox.send(vec![5]), Err(SendError::Closed)));
    }

    #[test]
    fn a_small_frame_is_written_by_its_sender_with_no_writer_thread() {
        let (ours, mut theirs) = UnixStream::pair().expect("a socket pair");
        let outbox = Outbox::new(ours);
        outbox.send(vec![7; 100]).expect("sent");
        let mut received = [0u8; 100];
        theirs.read_exact(&mut received).expect("read");
        assert_eq!(received, [7; 100]);
    }

    #[test]
    fn a_peer_that_is_gone_fails_the_send() {
        let (ours, theirs) = UnixStream::pair().expect("a socket pair");
        drop(theirs);
        let outbox = Outbox::new(ours);
        assert!(matches!(outbox.send(vec![1]), Err(SendError::Write(_))));
    }
}
