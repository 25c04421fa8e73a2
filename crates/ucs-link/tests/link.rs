//! The link between two ends in one process: pairing of overlapping calls,
//! re-entrancy, nested call routing, notices, deadlines, peer death, bad
//! frames, bounds and shutdown (issue 18; SPEC L5, I1, I2, I3, I6).

mod common;

use std::io::{Read, Write};
use std::num::NonZeroU32;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    Gate, Log, Msg, Reply, Served, eventually, recording, serve, threads_named, watchdog,
};
use ucs_link::{Caller, CloseReason, Link, LinkConfig, LinkError, RemoteFailure};

/// Every test finishes well within this, or fails.
const WATCHDOG: Duration = Duration::from_secs(30);

/// How fast "at once" must be: far below any call deadline used here.
const PROMPTLY: Duration = Duration::from_secs(2);

type TestLink = Link<Msg, Msg>;

fn config(name: &str) -> LinkConfig {
    LinkConfig {
        call_deadline: Duration::from_secs(10),
        shutdown_grace: Duration::from_secs(2),
        ..LinkConfig::named(name)
    }
}

/// Two linked ends, `a` and `b`, serving [`serve`].
fn pair_with(a: LinkConfig, b: LinkConfig) -> (TestLink, TestLink) {
    let (a_end, b_end) = UnixStream::pair().expect("socket pair");
    let a = Link::start(a_end, a, serve("a")).expect("a starts");
    let b = Link::start(b_end, b, serve("b")).expect("b starts");
    (a, b)
}

fn pair(prefix: &str) -> (TestLink, TestLink) {
    pair_with(config(&format!("{prefix}a")), config(&format!("{prefix}b")))
}

/// One end against a raw socket the test drives by hand.
fn against_raw(name: &str) -> (TestLink, UnixStream) {
    let (link_end, raw) = UnixStream::pair().expect("socket pair");
    let link = Link::start(link_end, config(name), serve("a")).expect("starts");
    (link, raw)
}

/// Many threads on both sides call at once, with replies coming back out of
/// order (handlers sleep different times on 4 threads): every call gets its
/// own reply.
#[test]
fn overlapping_calls_both_ways_get_their_own_replies() {
    watchdog(WATCHDOG, || {
        let (a, b) = pair("ov");
        let mut workers = Vec::new();
        for (side, link) in [(0u64, &a), (1, &b)] {
            for thread in 0..6u64 {
                let caller = link.caller();
                workers.push(thread::spawn(move || {
                    for seq in 0..150u64 {
                        let thread = side * 100 + thread;
                        let micros = (thread * 7 + seq * 13) % 500;
                        let reply = caller
                            .call(Msg::Echo {
                                thread,
                                seq,
                                micros,
                            })
                            .expect("call succeeds");
                        assert_eq!(reply, Reply::Echo { thread, seq });
                    }
                }));
            }
        }
        for worker in workers {
            worker.join().expect("caller thread");
        }
        assert_eq!(a.stats().late_replies, 0);
        assert_eq!(b.stats().late_replies, 0);
    });
}

/// L5 / I1: a handler calls the other side, whose handler calls back, and
/// so on: a chain a → b → a → b → a → b → a completes, each level holding a
/// handler thread on its side while the readers keep reading.
#[test]
fn a_reentrant_chain_six_deep_completes() {
    watchdog(WATCHDOG, || {
        let (a, _b) = pair("re");
        let reply = a
            .call(Msg::Chain {
                left: 6,
                trail: vec!["start".to_owned()],
            })
            .expect("chain completes");
        assert_eq!(
            reply,
            Reply::Chain(
                ["start", "b", "a", "b", "a", "b", "a", "b"]
                    .map(str::to_owned)
                    .to_vec()
            )
        );
    });
}

/// I6 with re-entrancy: a chain far deeper than the handler caps completes
/// with one handler thread on each side and no queue, because every nested
/// level runs on a thread already waiting in the chain. Without routing the
/// second level on each side would find no thread and be refused Busy.
#[test]
fn a_chain_deeper_than_the_handler_caps_completes_on_the_waiting_threads() {
    watchdog(WATCHDOG, || {
        let capped = |name: &str| LinkConfig {
            max_handlers: NonZeroU32::new(1).expect("nonzero"),
            max_queued: 0,
            ..config(name)
        };
        let (a, b) = pair_with(capped("cpa"), capped("cpb"));
        let started = Instant::now();
        let reply = a
            .call(Msg::Chain {
                left: 10,
                trail: Vec::new(),
            })
            .expect("the chain answers");
        assert!(started.elapsed() < PROMPTLY, "took {:?}", started.elapsed());
        let mut expected = Vec::new();
        for _ in 0..11 {
            let side = if expected.len() % 2 == 0 { "b" } else { "a" };
            expected.push(side.to_owned());
        }
        assert_eq!(reply, Reply::Chain(expected));
        for link in [&a, &b] {
            assert_eq!(link.stats().refused_busy, 0, "{:?}", link.stats());
        }
        // b's levels 1, 3, ... ran on its one handler thread, beside the one
        // that reads; a's levels all ran on this thread, so a has only its
        // reading thread.
        assert_eq!(b.stats().nested_inline, 5);
        assert_eq!(a.stats().nested_inline, 5);
        assert_eq!(threads_named("cpb-handle").len(), 2);
        assert_eq!(threads_named("cpa-handle").len(), 1);
    });
}

/// I3: past its deadline a call fails with DeadlineExceeded; the reply that
/// comes later is dropped (counted), and the link goes on working.
#[test]
fn a_late_reply_after_the_deadline_is_dropped_and_the_link_works_on() {
    watchdog(WATCHDOG, || {
        let (a, _b) = pair("dl");
        let started = Instant::now();
        let err = a
            .call_with_deadline(Msg::Sleep { millis: 400 }, Duration::from_millis(50))
            .expect_err("too slow");
        assert!(matches!(err, LinkError::DeadlineExceeded(d) if d == Duration::from_millis(50)));
        assert!(started.elapsed() < Duration::from_millis(350));
        assert!(
            eventually(Duration::from_secs(5), || a.stats().late_replies == 1),
            "the late reply never arrived: {:?}",
            a.stats()
        );
        let reply = a
            .call(Msg::Echo {
                thread: 1,
                seq: 2,
                micros: 0,
            })
            .expect("the link still works");
        assert_eq!(reply, Reply::Echo { thread: 1, seq: 2 });
        assert!(a.close_reason().is_none());
    });
}

/// I1: `wait_idle` waits for the calls in flight, not for a timer: it says
/// "busy" while a call waits for its reply and returns as soon as the reply
/// arrives, and a link with no calls is idle at once.
#[test]
fn wait_idle_returns_when_the_last_pending_call_is_answered() {
    watchdog(WATCHDOG, || {
        let (a, _b) = pair("idle");
        let caller = a.caller();
        assert!(!caller.has_pending_calls());
        assert!(caller.wait_idle(Duration::ZERO), "no call: idle at once");
        let sleeper = {
            let caller = a.caller();
            thread::spawn(move || caller.call(Msg::Sleep { millis: 300 }))
        };
        assert!(
            eventually(Duration::from_secs(5), || caller.has_pending_calls()),
            "the call never went out"
        );
        assert!(
            !caller.wait_idle(Duration::from_millis(50)),
            "idle while a call waits"
        );
        let started = Instant::now();
        assert!(caller.wait_idle(Duration::from_secs(5)), "never idle");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(
            sleeper.join().expect("sleeper").expect("answered"),
            Reply::Slept
        );
        assert!(!caller.has_pending_calls());
    });
}

/// I2: the peer's end dropped while calls wait: every pending call fails at
/// once with PeerGone, later calls fail immediately, and the link's threads
/// stop by themselves, before the link is even dropped.
#[test]
fn the_peer_dropping_its_end_fails_pending_calls_at_once() {
    watchdog(WATCHDOG, || {
        let (link, raw) = against_raw("pd");
        let pending: Vec<_> = (0..4)
            .map(|_| {
                let caller = link.caller();
                thread::spawn(move || {
                    let started = Instant::now();
                    let result = caller
                        .call_with_deadline(Msg::Sleep { millis: 1 }, Duration::from_secs(20));
                    (result, started.elapsed())
                })
            })
            .collect();
        // Every request reached the peer, so every call is pending.
        let mut raw = raw;
        let mut seen = 0;
        let mut buffer = [0u8; 4096];
        while seen < 4 {
            let read = raw.read(&mut buffer).expect("reads requests");
            assert!(read > 0);
            seen += count_frames(&buffer[..read]);
        }
        // Everything was read, so the close is a clean end of stream (with
        // unread data the kernel reports ECONNRESET instead).
        drop(raw);
        for worker in pending {
            let (result, elapsed) = worker.join().expect("caller thread");
            match result {
                Err(LinkError::PeerGone(CloseReason::PeerClosed)) => {}
                other => panic!("expected PeerGone(PeerClosed), got {other:?}"),
            }
            assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
        }
        let started = Instant::now();
        assert!(matches!(
            link.call(Msg::Panic),
            Err(LinkError::PeerGone(CloseReason::PeerClosed))
        ));
        assert!(started.elapsed() < Duration::from_millis(100));
        assert!(matches!(
            link.wait_closed(Duration::ZERO),
            Some(CloseReason::PeerClosed)
        ));
        assert!(
            eventually(PROMPTLY, || threads_named("pd-").is_empty()),
            "threads left: {:?}",
            threads_named("pd-")
        );
    });
}

/// Counts the frames in bytes that hold whole frames (requests are small).
fn count_frames(mut bytes: &[u8]) -> usize {
    let mut frames = 0;
    while bytes.len() >= 4 {
        let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        bytes = &bytes[(4 + len).min(bytes.len())..];
        frames += 1;
    }
    frames
}

/// The peer link dropped while calls into it are running: they fail with
/// PeerGone as soon as it shuts down, not at their deadline.
#[test]
fn the_peer_link_dropped_mid_call_fails_the_call_at_once() {
    watchdog(WATCHDOG, || {
        let (a, b) = pair_with(
            config("mda"),
            LinkConfig {
                shutdown_grace: Duration::from_millis(50),
                ..config("mdb")
            },
        );
        let caller = a.caller();
        let pending = thread::spawn(move || {
            caller.call_with_deadline(Msg::Sleep { millis: 3_000 }, Duration::from_secs(20))
        });
        thread::sleep(Duration::from_millis(100));
        let started = Instant::now();
        let report = b.close();
        assert_eq!(
            report.stuck_handlers, 1,
            "the sleeping handler is left behind"
        );
        let result = pending.join().expect("caller thread");
        assert!(
            matches!(result, Err(LinkError::PeerGone(CloseReason::PeerClosed))),
            "{result:?}"
        );
        assert!(started.elapsed() < PROMPTLY, "took {:?}", started.elapsed());
    });
}

/// A frame that does not decode closes the link with a clear reason, and the
/// call pending at that moment fails with it.
#[test]
fn a_garbage_frame_closes_the_link_with_a_clear_error() {
    watchdog(WATCHDOG, || {
        let (link, mut raw) = against_raw("gb");
        let caller = link.caller();
        let pending = thread::spawn(move || caller.call(Msg::Sleep { millis: 1 }));
        let mut prefix = [0u8; 4];
        raw.read_exact(&mut prefix).expect("the request arrives");
        // An unterminated varint: not a header.
        raw.write_all(&[5, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff])
            .expect("writes");
        let reason = link.wait_closed(PROMPTLY).expect("the link closes");
        assert!(
            matches!(
                reason,
                CloseReason::BadFrame {
                    what: "frame header",
                    ..
                }
            ),
            "{reason:?}"
        );
        assert!(
            reason
                .to_string()
                .starts_with("the peer sent a frame that does not decode (frame header)")
        );
        let result = pending.join().expect("caller thread");
        assert!(matches!(
            result,
            Err(LinkError::PeerGone(CloseReason::BadFrame { .. }))
        ));
    });
}

/// A frame announced larger than the maximum closes the link before
/// anything is read or allocated for it.
#[test]
fn an_oversized_frame_closes_the_link_unread() {
    watchdog(WATCHDOG, || {
        let (link, mut raw) = against_raw("os");
        raw.write_all(&u32::MAX.to_le_bytes()).expect("writes");
        let reason = link.wait_closed(PROMPTLY).expect("the link closes");
        assert!(
            matches!(
                reason,
                CloseReason::FrameTooLarge {
                    len: u32::MAX,
                    max
                } if max == LinkConfig::default().max_frame_bytes
            ),
            "{reason:?}"
        );
        assert_eq!(
            reason.to_string(),
            format!(
                "the peer sent a frame of {} bytes, more than the {} allowed",
                u32::MAX,
                LinkConfig::default().max_frame_bytes
            )
        );
    });
}

/// A reply to a request this side never made is a broken peer, not a late
/// reply: the link closes.
#[test]
fn a_reply_to_a_request_never_made_closes_the_link() {
    watchdog(WATCHDOG, || {
        let (link, mut raw) = against_raw("un");
        // Header::Reply is variant 1 of the header enum; id 1000; body a Reply::Slept.
        let mut body = postcard::to_stdvec(&(1u8, 1000u64)).expect("encodes");
        body.extend(postcard::to_stdvec(&Reply::Slept).expect("encodes"));
        raw.write_all(&(body.len() as u32).to_le_bytes())
            .expect("writes");
        raw.write_all(&body).expect("writes");
        let reason = link.wait_closed(PROMPTLY).expect("the link closes");
        assert_eq!(
            reason.to_string(),
            "the peer broke the protocol: a reply to request 1000, which was never made"
        );
    });
}

/// A request too large for a frame fails its own call and nothing else; a
/// reply too large fails the peer's call with ReplyTooLarge.
#[test]
fn frames_over_the_maximum_fail_their_call_and_the_link_stays() {
    watchdog(WATCHDOG, || {
        let small = |name: &str| LinkConfig {
            max_frame_bytes: 1024,
            ..config(name)
        };
        let (a, _b) = pair_with(small("fla"), small("flb"));
        match a.call(Msg::Carry(vec![0; 2000])) {
            Err(LinkError::RequestTooLarge { len, max: 1024 }) => assert!(len > 2000),
            other => panic!("expected RequestTooLarge, got {other:?}"),
        }
        assert_eq!(
            a.call(Msg::Carry(vec![0; 500])).expect("fits"),
            Reply::Carried(500)
        );
        match a.call(Msg::MakeBig { len: 5000 }) {
            Err(LinkError::Remote(RemoteFailure::ReplyTooLarge { len, max: 1024 })) => {
                assert!(len > 5000);
            }
            other => panic!("expected ReplyTooLarge, got {other:?}"),
        }
        assert!(a.close_reason().is_none());
    });
}

/// A handler that panics answers HandlerPanicked with its message; its
/// thread and the link go on.
#[test]
fn a_panicking_handler_fails_only_its_call() {
    watchdog(WATCHDOG, || {
        let (a, b) = pair("pn");
        let err = a.call(Msg::Panic).expect_err("the handler panics");
        assert!(matches!(
            &err,
            LinkError::Remote(RemoteFailure::HandlerPanicked(message)) if message == "boom"
        ));
        assert_eq!(
            err.to_string(),
            "the peer did not run the request: the peer's handler panicked: boom"
        );
        assert_eq!(b.stats().handler_panics, 1);
        assert_eq!(
            a.call(Msg::Echo {
                thread: 0,
                seq: 0,
                micros: 0
            })
            .expect("still works"),
            Reply::Echo { thread: 0, seq: 0 }
        );
    });
}

/// I6: with every handler thread busy and the queue full, a request is
/// refused at once with Busy rather than waiting or starting more threads.
#[test]
fn a_full_pool_refuses_at_once_with_busy() {
    watchdog(WATCHDOG, || {
        let (a_end, b_end) = UnixStream::pair().expect("pair");
        let a = Link::start(a_end, config("bsa"), serve("a")).expect("a");
        let (started_tx, started) = mpsc::channel();
        let started_tx = Mutex::new(started_tx);
        let inner = serve("b");
        let b_config = LinkConfig {
            max_handlers: NonZeroU32::new(1).expect("nonzero"),
            max_queued: 0,
            ..config("bsb")
        };
        let _b = Link::start(b_end, b_config, move |msg, caller| {
            if matches!(msg, Msg::Sleep { .. }) {
                let _ = started_tx.lock().expect("lock").send(());
            }
            inner(msg, caller)
        })
        .expect("b");
        let caller = a.caller();
        let slow = thread::spawn(move || caller.call(Msg::Sleep { millis: 300 }));
        started.recv_timeout(PROMPTLY).expect("the slow call runs");
        let refused_at = Instant::now();
        let err = a.call(Msg::Panic).expect_err("refused");
        assert!(refused_at.elapsed() < Duration::from_millis(250));
        assert!(
            matches!(
                err,
                LinkError::Remote(RemoteFailure::Busy {
                    max_handlers: 1,
                    max_queued: 0
                })
            ),
            "{err:?}"
        );
        assert_eq!(
            slow.join().expect("thread").expect("the slow call"),
            Reply::Slept
        );
        // One handler, and one thread reading.
        assert!(threads_named("bsb-handle").len() <= 2);
    });
}

/// A request that waited in the queue past its caller's deadline is
/// skipped, not run for nobody.
#[test]
fn a_request_whose_caller_gave_up_in_the_queue_is_skipped() {
    watchdog(WATCHDOG, || {
        let one_thread = LinkConfig {
            max_handlers: NonZeroU32::new(1).expect("nonzero"),
            max_queued: 4,
            ..config("exb")
        };
        let (a, b) = pair_with(config("exa"), one_thread);
        let caller = a.caller();
        let slow = thread::spawn(move || caller.call(Msg::Sleep { millis: 300 }));
        thread::sleep(Duration::from_millis(50));
        let err = a
            .call_with_deadline(Msg::Panic, Duration::from_millis(50))
            .expect_err("queued past its deadline");
        assert!(matches!(err, LinkError::DeadlineExceeded(_)));
        assert_eq!(
            slow.join().expect("thread").expect("slow call"),
            Reply::Slept
        );
        assert!(eventually(PROMPTLY, || b.stats().expired_in_queue == 1));
        // Skipped, so the panic never ran.
        assert_eq!(b.stats().handler_panics, 0);
        assert_eq!(a.stats().late_replies, 0);
    });
}

/// Dropping both ends joins every thread of both links: none is left.
#[test]
fn dropping_the_links_joins_their_threads() {
    watchdog(WATCHDOG, || {
        let (a, b) = pair("tj");
        // Start some handler threads on both sides.
        for link in [&a, &b] {
            link.call(Msg::Chain {
                left: 3,
                trail: Vec::new(),
            })
            .expect("chain");
        }
        // The writer, and at least the thread that read the first request
        // and the one it left the reading to (the writer's own name may not
        // be set yet on a loaded machine, so it is not counted here).
        assert!(
            threads_named("tja-handle").len() >= 2,
            "{:?}",
            threads_named("tja-")
        );
        assert!(threads_named("tjb-handle").len() >= 2);
        let report = a.close();
        assert_eq!(report.stuck_handlers, 0);
        assert!(report.joined >= 3, "{report:?}");
        drop(b);
        assert_eq!(threads_named("tja-"), Vec::<String>::new());
        assert_eq!(threads_named("tjb-"), Vec::<String>::new());
    });
}

/// Closing waits for a stuck handler only for the grace period, then leaves
/// it: shutdown keeps its deadline whatever a handler does (I7).
#[test]
fn closing_leaves_a_stuck_handler_after_the_grace() {
    watchdog(WATCHDOG, || {
        let (a, b) = pair_with(
            config("sta"),
            LinkConfig {
                shutdown_grace: Duration::from_millis(100),
                ..config("stb")
            },
        );
        let caller = a.caller();
        let pending = thread::spawn(move || caller.call(Msg::Sleep { millis: 2_000 }));
        thread::sleep(Duration::from_millis(100));
        let started = Instant::now();
        let report = b.close();
        assert!(started.elapsed() < Duration::from_millis(1_000));
        assert_eq!(report.stuck_handlers, 1);
        // Reader and writer are always joined.
        assert!(report.joined >= 2);
        assert!(matches!(
            pending.join().expect("thread"),
            Err(LinkError::PeerGone(_))
        ));
    });
}

/// on_close runs once with the reason, also when registered after the close.
#[test]
fn on_close_tells_the_reason_once() {
    watchdog(WATCHDOG, || {
        let (a, b) = pair("oc");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = |seen: &Arc<Mutex<Vec<String>>>| {
            let seen = Arc::clone(seen);
            move |reason: &CloseReason| seen.lock().expect("lock").push(reason.to_string())
        };
        a.caller().on_close(record(&seen));
        let a_caller = a.caller();
        drop(b);
        assert!(a_caller.wait_closed(PROMPTLY).is_some());
        drop(a);
        a_caller.on_close(record(&seen));
        assert_eq!(
            *seen.lock().expect("lock"),
            vec![
                "the peer closed the connection".to_owned(),
                "the peer closed the connection".to_owned()
            ]
        );
        // A caller outliving its link fails at once.
        assert!(matches!(
            a_caller.call(Msg::Panic),
            Err(LinkError::PeerGone(CloseReason::PeerClosed))
        ));
    });
}

/// Closing this side fails this side's pending calls with ShutDown.
#[test]
fn closing_this_side_fails_its_own_pending_calls() {
    watchdog(WATCHDOG, || {
        let (a, _raw) = against_raw("cl");
        let caller = a.caller();
        let pending = thread::spawn(move || caller.call(Msg::Sleep { millis: 1 }));
        thread::sleep(Duration::from_millis(50));
        drop(a);
        assert!(matches!(
            pending.join().expect("thread"),
            Err(LinkError::PeerGone(CloseReason::ShutDown))
        ));
    });
}

/// Two linked ends serving [`recording`] into one log.
fn recorded_pair(prefix: &str) -> (TestLink, TestLink, Log) {
    let log = Log::default();
    let (a_end, b_end) = UnixStream::pair().expect("socket pair");
    let a = Link::start(a_end, config(&format!("{prefix}a")), recording("a", &log)).expect("a");
    let b = Link::start(b_end, config(&format!("{prefix}b")), recording("b", &log)).expect("b");
    (a, b, log)
}

/// What the log holds so far.
fn served(log: &Log) -> Vec<Served> {
    log.lock().expect("log").clone()
}

/// I1: a callback into a call runs on the thread waiting in that call, as it
/// would in-process, through four levels: this thread calls b, b's handler
/// (on b's pool thread) calls a, whose handler runs here and calls b, whose
/// handler runs on that same pool thread and calls a, which runs here again.
#[test]
fn nested_calls_run_on_the_threads_that_wait_in_them() {
    watchdog(WATCHDOG, || {
        let (a, b, log) = recorded_pair("nt");
        let me = thread::current().id();
        let reply = a
            .call(Msg::Chain {
                left: 3,
                trail: Vec::new(),
            })
            .expect("the chain completes");
        assert_eq!(
            reply,
            Reply::Chain(["b", "a", "b", "a"].map(str::to_owned).to_vec())
        );
        let served = served(&log);
        let sides: Vec<_> = served.iter().map(|run| run.side).collect();
        assert_eq!(sides, ["b", "a", "b", "a"]);
        let b_thread = served[0].thread;
        assert_ne!(b_thread, me);
        assert_eq!(served[0].thread_name.as_deref(), Some("ntb-handle"));
        for run in &served {
            let expected = if run.side == "a" { me } else { b_thread };
            assert_eq!(run.thread, expected, "{run:?} ran on the wrong thread");
        }
        assert_eq!(a.stats().nested_inline, 2);
        assert_eq!(b.stats().nested_inline, 1);
        // a only read; b read and ran one handler.
        assert_eq!(threads_named("nta-handle").len(), 1);
        assert_eq!(threads_named("ntb-handle").len(), 2);
    });
}

/// A call from a thread that is not handling anything is not nested, even
/// while a chain is in flight and its thread is busy: it goes to the pool
/// and is answered while the chain is still blocked, both ways.
#[test]
fn a_call_from_another_thread_during_a_chain_goes_to_the_pool() {
    watchdog(WATCHDOG, || {
        let log = Log::default();
        let gate = Gate::default();
        let (entered_tx, entered) = mpsc::channel();
        let entered_tx = Mutex::new(entered_tx);
        let (a_end, b_end) = UnixStream::pair().expect("socket pair");
        let a = {
            let gate = gate.clone();
            let inner = recording("a", &log);
            Link::start(a_end, config("oca"), move |msg, caller| {
                if matches!(msg, Msg::Sleep { .. }) {
                    let _ = entered_tx
                        .lock()
                        .expect("lock")
                        .send(thread::current().id());
                    assert!(gate.wait(WATCHDOG), "the gate never opened");
                }
                inner(msg, caller)
            })
            .expect("a")
        };
        let b = Link::start(b_end, config("ocb"), recording("b", &log)).expect("b");
        let chain_caller = a.caller();
        let chain = thread::spawn(move || {
            let me = thread::current().id();
            (
                me,
                chain_caller.call(Msg::Relay(Box::new(Msg::Sleep { millis: 0 }))),
            )
        });
        let held_on = entered.recv_timeout(PROMPTLY).expect("the chain reaches a");
        for (link, serving_pool) in [(&b, "oca-handle"), (&a, "ocb-handle")] {
            let started = Instant::now();
            let reply = link
                .call(Msg::Echo {
                    thread: 9,
                    seq: 9,
                    micros: 0,
                })
                .expect("answered while the chain is held");
            assert_eq!(reply, Reply::Echo { thread: 9, seq: 9 });
            assert!(started.elapsed() < PROMPTLY, "took {:?}", started.elapsed());
            let echo = served(&log)
                .into_iter()
                .rev()
                .find(|run| matches!(run.msg, Msg::Echo { .. }))
                .expect("the echo was served");
            assert_eq!(echo.thread_name.as_deref(), Some(serving_pool));
            assert_ne!(echo.thread, held_on);
        }
        gate.open();
        let (chain_thread, reply) = chain.join().expect("chain thread");
        assert_eq!(
            chain_thread, held_on,
            "the nested Sleep ran on the chain's thread"
        );
        assert_eq!(
            reply.expect("the chain completes"),
            Reply::Relayed(Box::new(Reply::Slept))
        );
        assert_eq!(a.stats().nested_inline, 1);
        assert_eq!(b.stats().nested_inline, 0);
    });
}

/// A nested request that arrives after the call it was nested in gave up
/// is not lost: with no waiter left it goes to the pool and is answered at
/// once, not at its own deadline.
#[test]
fn a_nested_request_after_its_caller_gave_up_is_run_by_the_pool() {
    watchdog(WATCHDOG, || {
        let log = Log::default();
        let (report_tx, report) = mpsc::channel();
        let report_tx = Mutex::new(report_tx);
        let (a_end, b_end) = UnixStream::pair().expect("socket pair");
        let a = Link::start(a_end, config("lga"), recording("a", &log)).expect("a");
        let _b = Link::start(b_end, config("lgb"), move |msg, caller: &Caller<Msg>| {
            if let Msg::Sleep { millis } = msg {
                thread::sleep(Duration::from_millis(millis));
            }
            let started = Instant::now();
            let result = caller.call_with_deadline(
                Msg::Echo {
                    thread: 1,
                    seq: 1,
                    micros: 0,
                },
                Duration::from_secs(10),
            );
            let _ = report_tx
                .lock()
                .expect("lock")
                .send((result, started.elapsed()));
            Reply::Slept
        })
        .expect("b");
        let err = a
            .call_with_deadline(Msg::Sleep { millis: 300 }, Duration::from_millis(50))
            .expect_err("gave up");
        assert!(matches!(err, LinkError::DeadlineExceeded(_)), "{err:?}");
        let (result, took) = report.recv_timeout(WATCHDOG).expect("b's handler reports");
        assert_eq!(result.expect("answered"), Reply::Echo { thread: 1, seq: 1 });
        assert!(took < PROMPTLY, "took {took:?}");
        let echo = served(&log).pop().expect("a served the echo");
        assert_eq!(echo.thread_name.as_deref(), Some("lga-handle"));
        assert_eq!(a.stats().nested_inline, 0);
    });
}

/// A nested request still waiting for its thread when the call it was
/// nested in gives up is refused with CallerGone at once, not dropped to
/// time out at the peer. Here: the chain's thread is held in a first nested
/// handler past its call's deadline while the peer, having given up on that
/// one, sends a second nested request, which waits behind it.
#[test]
fn a_nested_request_waiting_when_its_caller_gives_up_is_refused_caller_gone() {
    watchdog(WATCHDOG, || {
        let log = Log::default();
        let gate = Gate::default();
        let (entered_tx, entered) = mpsc::channel();
        let entered_tx = Mutex::new(entered_tx);
        let (report_tx, report) = mpsc::channel();
        let report_tx = Mutex::new(report_tx);
        let (a_end, b_end) = UnixStream::pair().expect("socket pair");
        let a = {
            let gate = gate.clone();
            let inner = recording("a", &log);
            Link::start(a_end, config("cga"), move |msg, caller| {
                if matches!(msg, Msg::Sleep { .. }) {
                    let _ = entered_tx.lock().expect("lock").send(());
                    assert!(gate.wait(WATCHDOG), "the gate never opened");
                }
                inner(msg, caller)
            })
            .expect("a")
        };
        let _b = Link::start(
            b_end,
            config("cgb"),
            move |_msg: Msg, caller: &Caller<Msg>| {
                let first =
                    caller.call_with_deadline(Msg::Sleep { millis: 0 }, Duration::from_millis(50));
                let second = caller.call_with_deadline(
                    Msg::Echo {
                        thread: 2,
                        seq: 2,
                        micros: 0,
                    },
                    Duration::from_secs(10),
                );
                let _ = report_tx
                    .lock()
                    .expect("lock")
                    .send((first, second, Instant::now()));
                Reply::Slept
            },
        )
        .expect("b");
        let deadline = Duration::from_millis(300);
        let chain_caller = a.caller();
        let (started_tx, started) = mpsc::channel();
        let chain = thread::spawn(move || {
            let _ = started_tx.send(Instant::now());
            chain_caller.call_with_deadline(Msg::Panic, deadline)
        });
        let chain_started = started.recv_timeout(PROMPTLY).expect("the chain starts");
        entered
            .recv_timeout(PROMPTLY)
            .expect("the first nested request runs");
        assert!(
            eventually(WATCHDOG, || a.stats().nested_inline == 2),
            "the second nested request never reached the chain's thread: {:?}",
            a.stats()
        );
        let past_deadline = chain_started + deadline + Duration::from_millis(50);
        thread::sleep(past_deadline.saturating_duration_since(Instant::now()));
        let opened = Instant::now();
        gate.open();
        let err = chain
            .join()
            .expect("chain thread")
            .expect_err("past its deadline");
        assert!(
            matches!(err, LinkError::DeadlineExceeded(d) if d == deadline),
            "{err:?}"
        );
        let (first, second, answered) = report.recv_timeout(WATCHDOG).expect("b reports");
        assert!(
            matches!(first, Err(LinkError::DeadlineExceeded(_))),
            "{first:?}"
        );
        assert!(
            matches!(second, Err(LinkError::Remote(RemoteFailure::CallerGone))),
            "{second:?}"
        );
        let took = answered.saturating_duration_since(opened);
        assert!(took < PROMPTLY, "the refusal took {took:?}");
        assert_eq!(a.stats().nested_refused, 1);
        // Refused, so the echo never ran.
        assert!(
            !served(&log)
                .iter()
                .any(|run| matches!(run.msg, Msg::Echo { .. }))
        );
    });
}

/// Reads one frame from a raw socket: the header's fields (variant, id,
/// and for a request its timeout and `nested_in`) and the body's bytes.
fn read_raw_request(raw: &mut UnixStream) -> (u64, Option<u64>, Msg) {
    let mut prefix = [0u8; 4];
    raw.read_exact(&mut prefix).expect("a frame");
    let mut frame = vec![0u8; u32::from_le_bytes(prefix) as usize];
    raw.read_exact(&mut frame).expect("the frame's bytes");
    // Header::Request is variant 0: id, timeout_micros, nested_in.
    let ((variant, id, _timeout, nested_in), body): ((u32, u64, u64, Option<u64>), _) =
        postcard::take_from_bytes(&frame).expect("a request header");
    assert_eq!(variant, 0, "not a request");
    let msg: Msg = postcard::from_bytes(body).expect("a request body");
    (id, nested_in, msg)
}

/// Writes a reply frame to a raw socket.
fn write_raw_reply(raw: &mut UnixStream, id: u64, reply: &Reply) {
    // Header::Reply is variant 1.
    let mut frame = postcard::to_stdvec(&(1u32, id)).expect("encodes");
    frame.extend(postcard::to_stdvec(reply).expect("encodes"));
    raw.write_all(&(frame.len() as u32).to_le_bytes())
        .expect("writes");
    raw.write_all(&frame).expect("writes");
}

/// The server has one link per host: a call on link 2 made while handling
/// link 1's request is not nested (the request it would name belongs to
/// link 1, and link 2's peer may well have a call of that same id waiting),
/// while a call on link 1 from the same handler is.
#[test]
fn calls_on_another_link_from_a_handler_are_not_nested() {
    watchdog(WATCHDOG, || {
        let log = Log::default();
        let (two_end, mut raw) = UnixStream::pair().expect("socket pair");
        let two = Link::start(two_end, config("tw2"), serve("s")).expect("link 2");
        let over_two = two.caller();
        let (one_end, host_end) = UnixStream::pair().expect("socket pair");
        let _one = Link::start(
            one_end,
            config("tw1"),
            move |msg, over_one: &Caller<Msg>| {
                let Msg::Relay(inner) = msg else {
                    return Reply::RelayFailed("unexpected".to_owned());
                };
                let from_two = over_two.call((*inner).clone());
                let from_one = over_one.call(*inner);
                match (from_two, from_one) {
                    (Ok(_), Ok(reply)) => Reply::Relayed(Box::new(reply)),
                    (two, one) => Reply::RelayFailed(format!("{two:?} {one:?}")),
                }
            },
        )
        .expect("link 1");
        let host = Link::start(host_end, config("twh"), recording("h", &log)).expect("host");
        let host_caller = host.caller();
        let chain = thread::spawn(move || {
            let reply = host_caller.call(Msg::Relay(Box::new(Msg::Echo {
                thread: 3,
                seq: 3,
                micros: 0,
            })));
            (thread::current().id(), reply)
        });
        let (id, nested_in, msg) = read_raw_request(&mut raw);
        assert_eq!(
            nested_in, None,
            "a call on link 2 was marked nested in link 1's request"
        );
        assert_eq!(
            msg,
            Msg::Echo {
                thread: 3,
                seq: 3,
                micros: 0
            }
        );
        write_raw_reply(&mut raw, id, &Reply::Echo { thread: 3, seq: 3 });
        let (chain_thread, reply) = chain.join().expect("chain thread");
        assert_eq!(
            reply.expect("the relay completes"),
            Reply::Relayed(Box::new(Reply::Echo { thread: 3, seq: 3 }))
        );
        // The call on link 1 was nested: the host ran it on the waiting thread.
        assert_eq!(host.stats().nested_inline, 1);
        let echo = served(&log).pop().expect("the host served the echo");
        assert_eq!(echo.thread, chain_thread);
    });
}

/// Notices are handled on the reader in frame order, so every notice sent
/// before a reply (b's handler sends 1000, then answers) or before a
/// request (a sends 1000, then calls) has been handled when the call
/// returns, with nothing to wait for.
#[test]
fn notices_are_handled_in_order_before_the_reply_or_request_behind_them() {
    watchdog(WATCHDOG, || {
        let noted = |seen: &Arc<Mutex<Vec<(u64, String)>>>| {
            let seen = Arc::clone(seen);
            move |notice: Msg| {
                let Msg::Note(seq) = notice else {
                    panic!("not a note: {notice:?}");
                };
                let on = thread::current().name().unwrap_or_default().to_owned();
                seen.lock().expect("seen").push((seq, on));
            }
        };
        let seen_a = Arc::new(Mutex::new(Vec::new()));
        let seen_b = Arc::new(Mutex::new(Vec::new()));
        let (a_end, b_end) = UnixStream::pair().expect("socket pair");
        let a =
            Link::start_with_notices(a_end, config("nca"), serve("a"), noted(&seen_a)).expect("a");
        let _b =
            Link::start_with_notices(b_end, config("ncb"), serve("b"), noted(&seen_b)).expect("b");
        let expected: Vec<u64> = (0..1000).collect();
        // b's handler notifies, then replies.
        assert_eq!(
            a.call(Msg::Notify { count: 1000 }).expect("call"),
            Reply::Notified(1000)
        );
        let seen: Vec<_> = seen_a.lock().expect("seen").clone();
        assert_eq!(
            seen.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
            expected
        );
        assert!(
            seen.iter().all(|(_, on)| on == "nca-handle"),
            "not on a thread of the link"
        );
        // a notifies, then calls.
        for seq in 0..1000 {
            a.caller().notify(Msg::Note(seq)).expect("notice sent");
        }
        assert_eq!(a.call(Msg::Note(1000)).expect("call"), Reply::Noted(1000));
        let seen: Vec<_> = seen_b.lock().expect("seen").clone();
        assert_eq!(
            seen.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
            expected
        );
    });
}

/// Leader and followers: the thread that reads a request runs it, having
/// left the reading to another thread, so a request costs one wake-up of a
/// thread, not two (issue 18 item 6). The notice just before each request
/// is handled by the thread reading at the time; the request runs on that
/// same thread.
#[test]
fn a_request_runs_on_the_thread_that_read_it() {
    watchdog(WATCHDOG, || {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (a_end, b_end) = UnixStream::pair().expect("socket pair");
        let a = Link::start(a_end, config("rra"), serve("a")).expect("a");
        let noticed = Arc::clone(&seen);
        let handled = Arc::clone(&seen);
        let _b = Link::start_with_notices(
            b_end,
            config("rrb"),
            move |msg: Msg, _: &Caller<Msg>| {
                let Msg::Note(seq) = msg else {
                    panic!("not a note: {msg:?}");
                };
                handled
                    .lock()
                    .expect("seen")
                    .push(("request", seq, thread::current().id()));
                Reply::Noted(seq)
            },
            move |notice: Msg| {
                let Msg::Note(seq) = notice else {
                    panic!("not a note: {notice:?}");
                };
                noticed
                    .lock()
                    .expect("seen")
                    .push(("notice", seq, thread::current().id()));
            },
        )
        .expect("b");
        for seq in 0..2 {
            a.caller().notify(Msg::Note(seq)).expect("notice sent");
            assert_eq!(a.call(Msg::Note(seq)).expect("call"), Reply::Noted(seq));
        }
        let seen = seen.lock().expect("seen").clone();
        let kinds: Vec<_> = seen.iter().map(|(kind, seq, _)| (*kind, *seq)).collect();
        assert_eq!(
            kinds,
            [("notice", 0), ("request", 0), ("notice", 1), ("request", 1)]
        );
        assert_eq!(seen[0].2, seen[1].2, "request 0 ran off its reader");
        assert_eq!(seen[2].2, seen[3].2, "request 1 ran off its reader");
        // The reading was left to another thread while the first ran
        // request 0 (whichever looked for work first took it up again for
        // request 1; a loaded machine may start one more, within the cap).
        assert!(threads_named("rrb-handle").len() >= 2);
    });
}

/// Without a notice handler notices are dropped and the link works on; a
/// panicking notice handler is counted and survived; a call from the
/// notice handler on its own link fails at once instead of stalling the
/// reader; a notice on a closed link fails like a call.
#[test]
fn notices_without_a_handler_are_dropped_and_a_bad_notice_handler_is_survived() {
    watchdog(WATCHDOG, || {
        let (a, b) = pair("nd");
        a.caller().notify(Msg::Note(1)).expect("sent");
        assert_eq!(a.call(Msg::Note(2)).expect("still works"), Reply::Noted(2));
        drop(b);
        assert!(a.wait_closed(PROMPTLY).is_some());
        assert!(matches!(
            a.caller().notify(Msg::Note(3)),
            Err(LinkError::PeerGone(CloseReason::PeerClosed))
        ));

        let own_caller: Arc<OnceLock<Caller<Msg>>> = Arc::default();
        let (result_tx, results) = mpsc::channel();
        let result_tx = Mutex::new(result_tx);
        let notice_handler = {
            let own_caller = Arc::clone(&own_caller);
            move |notice: Msg| match notice {
                Msg::Panic => panic!("notice boom"),
                other => {
                    let caller = own_caller.get().expect("set before any notice");
                    let started = Instant::now();
                    let result = caller.call(other);
                    let _ = result_tx
                        .lock()
                        .expect("lock")
                        .send((result, started.elapsed()));
                }
            }
        };
        let (a_end, b_end) = UnixStream::pair().expect("socket pair");
        let a =
            Link::start_with_notices(a_end, config("nha"), serve("a"), notice_handler).expect("a");
        let _ = own_caller.set(a.caller());
        let b = Link::start(b_end, config("nhb"), serve("b")).expect("b");
        b.caller().notify(Msg::Panic).expect("sent");
        b.caller().notify(Msg::Note(4)).expect("sent");
        let (result, took) = results.recv_timeout(PROMPTLY).expect("the notice ran");
        assert!(
            matches!(result, Err(LinkError::CalledFromReader)),
            "{result:?}"
        );
        assert!(took < Duration::from_millis(100), "took {took:?}");
        assert_eq!(a.stats().handler_panics, 1);
        assert_eq!(
            b.call(Msg::Note(5)).expect("a still reads"),
            Reply::Noted(5)
        );
        assert!(a.close_reason().is_none());
    });
}

/// A nested handler that panics on the waiting thread is answered
/// HandlerPanicked like one on the pool; the panic does not unwind through
/// the waiting call, which gets its own answer, and the thread goes on
/// serving nested requests.
#[test]
fn a_panicking_nested_handler_fails_only_its_request() {
    watchdog(WATCHDOG, || {
        let (a, b, log) = recorded_pair("np");
        let reply = a
            .call(Msg::Relay(Box::new(Msg::Panic)))
            .expect("the outer call is answered");
        match reply {
            Reply::RelayFailed(message) => assert_eq!(
                message,
                "the peer did not run the request: the peer's handler panicked: boom"
            ),
            other => panic!("expected a failed relay, got {other:?}"),
        }
        assert_eq!(a.stats().handler_panics, 1);
        assert_eq!(a.stats().nested_inline, 1);
        let panicked = served(&log)
            .into_iter()
            .find(|run| run.msg == Msg::Panic)
            .expect("a ran the panic");
        assert_eq!(panicked.thread, thread::current().id());
        assert_eq!(
            a.call(Msg::Relay(Box::new(Msg::Note(6))))
                .expect("works on"),
            Reply::Relayed(Box::new(Reply::Noted(6)))
        );
        assert_eq!(a.stats().nested_inline, 2);
        assert_eq!(b.stats().nested_inline, 0);
    });
}
