//! What the link tests share: the messages, a handler that serves them, a
//! watchdog so no test hangs, and a look at the process's threads.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use ucs_link::{Caller, Request};

/// The one request type of the test links (both directions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Msg {
    /// Answered with the same numbers, after sleeping `micros`.
    Echo { thread: u64, seq: u64, micros: u64 },
    /// A re-entrant chain: the handler appends its side's name and, while
    /// `left > 0`, calls the other side with `left - 1` before answering.
    Chain { left: u32, trail: Vec<String> },
    /// Sleeps, then answers `Slept`.
    Sleep { millis: u64 },
    /// The handler panics.
    Panic,
    /// Carries `bytes` bytes (to overflow a frame going out).
    Carry(Vec<u8>),
    /// The handler answers with `len` bytes (to overflow a frame coming back).
    MakeBig { len: usize },
}

/// The answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    Echo { thread: u64, seq: u64 },
    Chain(Vec<String>),
    ChainFailed(String),
    Slept,
    Carried(usize),
    Big(Vec<u8>),
}

impl Request for Msg {
    type Response = Reply;
}

/// The handler of side `side`: serves every `Msg`.
pub fn serve(side: &'static str) -> impl Fn(Msg, &Caller<Msg>) -> Reply + Send + Sync + 'static {
    move |msg, caller| match msg {
        Msg::Echo {
            thread,
            seq,
            micros,
        } => {
            thread::sleep(Duration::from_micros(micros));
            Reply::Echo { thread, seq }
        }
        Msg::Chain { left, mut trail } => {
            trail.push(side.to_owned());
            if left == 0 {
                return Reply::Chain(trail);
            }
            match caller.call(Msg::Chain {
                left: left - 1,
                trail,
            }) {
                Ok(reply) => reply,
                Err(err) => Reply::ChainFailed(err.to_string()),
            }
        }
        Msg::Sleep { millis } => {
            thread::sleep(Duration::from_millis(millis));
            Reply::Slept
        }
        Msg::Panic => panic!("boom"),
        Msg::Carry(bytes) => Reply::Carried(bytes.len()),
        Msg::MakeBig { len } => Reply::Big(vec![7; len]),
    }
}

/// Runs `test` on a thread and fails if it takes longer than `limit`: a
/// test of something that must not hang checks that it does not.
pub fn watchdog<T: Send + 'static>(
    limit: Duration,
    test: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (done, result) = mpsc::channel();
    thread::spawn(move || {
        let _ = done.send(catch_unwind(AssertUnwindSafe(test)));
    });
    match result.recv_timeout(limit) {
        Ok(Ok(value)) => value,
        Ok(Err(panic)) => resume_unwind(panic),
        Err(_) => panic!("the test hung: still running after {limit:?}"),
    }
}

/// The names of this process's threads that start with `prefix`.
pub fn threads_named(prefix: &str) -> Vec<String> {
    let mut names = Vec::new();
    let tasks = std::fs::read_dir("/proc/self/task").expect("/proc/self/task");
    for task in tasks.flatten() {
        if let Ok(name) = std::fs::read_to_string(task.path().join("comm")) {
            let name = name.trim_end().to_owned();
            if name.starts_with(prefix) {
                names.push(name);
            }
        }
    }
    names
}

/// Polls `check` until it holds or `limit` passes; says whether it held.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
}
