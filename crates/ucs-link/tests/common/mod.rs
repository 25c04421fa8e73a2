//! What the link tests share: the messages, a handler that serves them (and
//! one that also records which thread served what), a gate to hold a
//! handler, a watchdog so no test hangs, and a look at the process's
//! threads.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread::{self, ThreadId};
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
    /// The handler calls the other side with the inner message and answers
    /// `Relayed` with its reply, or `RelayFailed` with the error.
    Relay(Box<Msg>),
    /// The handler sends `count` notices `Note(0)`, `Note(1)`, ... to the
    /// other side, then answers `Notified`.
    Notify { count: u64 },
    /// A notice (as a request it is answered `Noted`).
    Note(u64),
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
    Relayed(Box<Reply>),
    RelayFailed(String),
    Notified(u64),
    Noted(u64),
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
        Msg::Relay(inner) => match caller.call(*inner) {
            Ok(reply) => Reply::Relayed(Box::new(reply)),
            Err(err) => Reply::RelayFailed(err.to_string()),
        },
        Msg::Notify { count } => {
            for seq in 0..count {
                caller.notify(Msg::Note(seq)).expect("notice sent");
            }
            Reply::Notified(count)
        }
        Msg::Note(seq) => Reply::Noted(seq),
    }
}

/// One handler run, as [`recording`] saw it.
#[derive(Debug, Clone)]
pub struct Served {
    /// The side whose handler ran.
    pub side: &'static str,
    /// The request.
    pub msg: Msg,
    /// The thread it ran on.
    pub thread: ThreadId,
    /// That thread's name.
    pub thread_name: Option<String>,
}

/// What a [`recording`] handler saw, in order.
pub type Log = Arc<Mutex<Vec<Served>>>;

/// [`serve`], recording each request and the thread that ran it in `log`
/// before serving it.
pub fn recording(
    side: &'static str,
    log: &Log,
) -> impl Fn(Msg, &Caller<Msg>) -> Reply + Send + Sync + 'static {
    let log = Arc::clone(log);
    let inner = serve(side);
    move |msg, caller| {
        let current = thread::current();
        log.lock().expect("log").push(Served {
            side,
            msg: msg.clone(),
            thread: current.id(),
            thread_name: current.name().map(str::to_owned),
        });
        inner(msg, caller)
    }
}

/// A one-way gate: threads wait at it until it is opened.
#[derive(Debug, Default, Clone)]
pub struct Gate {
    /// Open or not, and the waiters' wake-up.
    state: Arc<(Mutex<bool>, Condvar)>,
}

impl Gate {
    /// Opens it for good and wakes every waiter.
    pub fn open(&self) {
        let (open, opened) = &*self.state;
        *open.lock().expect("gate") = true;
        opened.notify_all();
    }

    /// Waits until it is open, at most `limit`; says whether it opened.
    pub fn wait(&self, limit: Duration) -> bool {
        let (open, opened) = &*self.state;
        let guard = open.lock().expect("gate");
        let (guard, _) = opened
            .wait_timeout_while(guard, limit, |open| !*open)
            .expect("gate");
        *guard
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
