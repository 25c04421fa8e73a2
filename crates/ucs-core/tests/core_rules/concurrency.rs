//! L5 under load: hooks and callbacks that read the server while many
//! threads change one agent, with commit order (D5) checked at the end.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use ucs_core::events::{EVENT_AGENT_STATUS, EVENT_SHARED_DATA};
use ucs_core::{AgentStatus, CoreError, EventPayload, StatusVerdict, Value};

use crate::fixtures::{callback, core_with_agents, plugin, status_hook, within};

const THREADS: usize = 8;
const CHANGES: usize = 10_000;
/// Generous: the test takes well under a second in release and a few in
/// debug; only a deadlock comes near this.
const WATCHDOG: Duration = Duration::from_secs(180);

/// One delivered agent event: seq, state before, state after.
type Transition = (u64, (AgentStatus, String), (AgentStatus, String));

#[test]
fn l5_d5_eight_threads_change_one_agent_while_hook_and_callback_read() {
    let (core, ids) = core_with_agents(&["alice", "bob", "carol"]);
    let alice = ids[0];

    // The hook reads all agents while it decides, and rewrites BUSY to AUX.
    let hook_calls = Arc::new(AtomicUsize::new(0));
    let inconsistent = Arc::new(AtomicUsize::new(0));
    {
        let weak_core = Arc::downgrade(&core);
        let hook_calls = Arc::clone(&hook_calls);
        let inconsistent = Arc::clone(&inconsistent);
        core.status_hook()
            .add(
                plugin("reader"),
                status_hook(move |before, status, _| {
                    hook_calls.fetch_add(1, Ordering::Relaxed);
                    let core = Weak::upgrade(&weak_core).expect("core alive");
                    let agents = core.directory().agents();
                    // Changes of one agent are serialised: nobody else can
                    // have changed it since `before` was read.
                    let listed = agents.iter().find(|agent| agent.id == before.id);
                    if listed != Some(before) || agents.len() != 3 {
                        inconsistent.fetch_add(1, Ordering::Relaxed);
                    }
                    if status == AgentStatus::Busy {
                        StatusVerdict::Rewrite {
                            status: AgentStatus::Aux,
                            reason: "rewritten".to_owned(),
                        }
                    } else {
                        StatusVerdict::LetThrough
                    }
                }),
            )
            .unwrap();
    }

    // The callback reads shared data and records what it was given, in the
    // order callbacks ran.
    let delivered: Arc<Mutex<Vec<Transition>>> = Arc::new(Mutex::new(Vec::new()));
    {
        let weak_core = Arc::downgrade(&core);
        let delivered = Arc::clone(&delivered);
        core.events()
            .add_callback(
                EVENT_AGENT_STATUS,
                plugin("reader"),
                callback("reader", move |event| {
                    let core = Weak::upgrade(&weak_core).expect("core alive");
                    let _shared = core.shared().get("load");
                    if let EventPayload::AgentStatus {
                        agent,
                        previous_status,
                        previous_reason,
                    } = &event.payload
                    {
                        delivered.lock().unwrap().push((
                            event.seq,
                            (*previous_status, previous_reason.clone()),
                            (agent.status, agent.reason.clone()),
                        ));
                    }
                    Ok(())
                }),
            )
            .unwrap();
    }
    let shared_events = Arc::new(AtomicUsize::new(0));
    {
        let shared_events = Arc::clone(&shared_events);
        core.events()
            .add_callback(
                EVENT_SHARED_DATA,
                plugin("reader"),
                callback("shared", move |_| {
                    shared_events.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }),
            )
            .unwrap();
    }

    let core_for_run = Arc::clone(&core);
    let committed = within(WATCHDOG, move || {
        let core = core_for_run;
        let mut workers: Vec<_> = (0..THREADS)
            .map(|thread| {
                let core = Arc::clone(&core);
                std::thread::spawn(move || {
                    let mut committed = 0usize;
                    for change in 0..CHANGES / THREADS {
                        let status = AgentStatus::ALL[(thread + change) % 4];
                        let reason = format!("t{thread}c{change}");
                        match core.set_agent_status(alice, status, &reason) {
                            Ok(_) => committed += 1,
                            Err(err) => panic!("change refused: {err}"),
                        }
                    }
                    committed
                })
            })
            .collect();
        // Shared data changes at the same time, so the callback's read
        // meets writers.
        workers.push({
            let core = Arc::clone(&core);
            std::thread::spawn(move || {
                for load in 0..500 {
                    core.set_shared("load", Value::Int(load))
                        .expect("set shared");
                }
                0
            })
        });
        workers
            .into_iter()
            .map(|worker| worker.join().expect("worker panicked"))
            .sum::<usize>()
    });

    assert_eq!(committed, CHANGES);
    assert_eq!(hook_calls.load(Ordering::Relaxed), CHANGES);
    assert_eq!(
        inconsistent.load(Ordering::Relaxed),
        0,
        "the hook saw a torn state"
    );
    assert_eq!(shared_events.load(Ordering::Relaxed), 500);

    let delivered = delivered.lock().unwrap();
    assert_eq!(delivered.len(), committed, "one event per committed change");
    assert!(
        delivered.windows(2).all(|pair| pair[0].0 < pair[1].0),
        "seqs must strictly increase in callback order (D5)"
    );
    // Commit order is the order the changes happened in: each event starts
    // from the state the previous one ended in.
    assert_eq!(delivered[0].1, (AgentStatus::Offline, String::new()));
    for pair in delivered.windows(2) {
        assert_eq!(
            pair[1].1, pair[0].2,
            "events {} and {}",
            pair[0].0, pair[1].0
        );
    }
    assert!(
        delivered
            .iter()
            .all(|(_, _, (status, _))| *status != AgentStatus::Busy),
        "the hook's rewrite applies to every change"
    );
    let last = &delivered[delivered.len() - 1].2;
    let stored = core.directory().agent(alice).unwrap();
    assert_eq!((stored.status, stored.reason), last.clone());
}

#[test]
fn l5_hooks_changing_each_others_agents_never_deadlock() {
    let (core, ids) = core_with_agents(&["alice", "bob"]);
    let (alice, bob) = (ids[0], ids[1]);
    let refused = Arc::new(Mutex::new(Vec::new()));
    {
        let weak_core = Arc::downgrade(&core);
        let refused = Arc::clone(&refused);
        core.status_hook()
            .add(
                plugin("crossed"),
                status_hook(move |before, status, reason| {
                    // Only the outer change drags the other agent along.
                    if reason == "outer" {
                        let core = Weak::upgrade(&weak_core).expect("core alive");
                        let other = if before.id == alice { bob } else { alice };
                        if let Err(err) = core.set_agent_status(other, status, "dragged") {
                            refused.lock().unwrap().push(err);
                        }
                    }
                    StatusVerdict::LetThrough
                }),
            )
            .unwrap();
    }

    let core_for_run = Arc::clone(&core);
    within(WATCHDOG, move || {
        let workers: Vec<_> = [alice, bob]
            .into_iter()
            .map(|agent| {
                let core = Arc::clone(&core_for_run);
                std::thread::spawn(move || {
                    for round in 0..300 {
                        let status = AgentStatus::ALL[round % 4];
                        core.set_agent_status(agent, status, "outer")
                            .expect("the outer change always goes through");
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("worker panicked");
        }
    });

    // Whatever was refused was refused as a processing error saying why.
    for err in refused.lock().unwrap().iter() {
        assert!(
            matches!(err, CoreError::Processing(message) if message.contains("deadlock")),
            "{err:?}"
        );
    }
}
