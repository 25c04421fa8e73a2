//! SPEC section 3: the one agent status hook (H1-H6), and L5 re-entry.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use ucs_core::{AgentStatus, BLOCKED_BY_HOOK, CoreError, PluginFailure, StatusVerdict};

use crate::fixtures::{core_with_agents, plugin, recorder, status_hook, within};

fn let_through() -> Arc<dyn ucs_core::StatusHook> {
    status_hook(|_, _, _| StatusVerdict::LetThrough)
}

#[test]
fn h1_second_status_hook_is_refused_even_from_the_same_plugin() {
    let (core, _) = core_with_agents(&[]);
    core.status_hook()
        .add(plugin("first"), let_through())
        .unwrap();
    for owner in ["first", "second"] {
        let err = core
            .status_hook()
            .add(plugin(owner), let_through())
            .unwrap_err();
        assert!(
            matches!(&err, CoreError::Processing(message) if message.contains("first")),
            "{err:?} must be a processing error naming the owner"
        );
    }
    assert_eq!(core.status_hook().owner(), Some(plugin("first")));
}

#[test]
fn h1_only_the_owner_removes_the_status_hook() {
    let (core, ids) = core_with_agents(&["alice"]);
    core.status_hook()
        .add(
            plugin("owner"),
            status_hook(|_, _, _| StatusVerdict::Block {
                reason: "owner's hook".to_owned(),
            }),
        )
        .unwrap();

    assert!(!core.status_hook().remove(&plugin("intruder")));
    assert_eq!(core.status_hook().owner(), Some(plugin("owner")));
    assert_eq!(
        core.set_agent_status(ids[0], AgentStatus::Ready, ""),
        Err(CoreError::Processing("owner's hook".to_owned())),
        "the hook is still in force after a refused removal"
    );

    assert!(core.status_hook().remove(&plugin("owner")));
    assert_eq!(core.status_hook().owner(), None);
    assert!(
        !core.status_hook().remove(&plugin("owner")),
        "nothing left to remove"
    );
    assert_eq!(
        core.set_agent_status(ids[0], AgentStatus::Ready, "")
            .unwrap()
            .status,
        AgentStatus::Ready
    );
    // The slot is free again for anyone.
    core.status_hook()
        .add(plugin("next"), let_through())
        .unwrap();
}

#[test]
fn h2_hook_sees_the_agent_before_the_change_and_the_request() {
    let (core, ids) = core_with_agents(&["alice"]);
    core.set_agent_status(ids[0], AgentStatus::Aux, "Lunch")
        .unwrap();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&calls);
    core.status_hook()
        .add(
            plugin("watcher"),
            status_hook(move |before, status, reason| {
                seen.lock().unwrap().push((
                    before.id,
                    before.username.clone(),
                    before.status,
                    before.reason.clone(),
                    status,
                    reason.to_owned(),
                ));
                StatusVerdict::LetThrough
            }),
        )
        .unwrap();

    core.set_agent_status(ids[0], AgentStatus::Ready, "back")
        .unwrap();
    core.set_agent_status(ids[0], AgentStatus::Busy, "")
        .unwrap();

    assert_eq!(
        *calls.lock().unwrap(),
        [
            (
                ids[0],
                "alice".to_owned(),
                AgentStatus::Aux,
                "Lunch".to_owned(),
                AgentStatus::Ready,
                "back".to_owned()
            ),
            (
                ids[0],
                "alice".to_owned(),
                AgentStatus::Ready,
                "back".to_owned(),
                AgentStatus::Busy,
                String::new()
            ),
        ]
    );
}

#[test]
fn h2_hook_is_called_before_every_change_and_only_for_agents() {
    let (core, ids) = core_with_agents(&["alice", "bob"]);
    let calls = Arc::new(Mutex::new(0));
    let counter = Arc::clone(&calls);
    core.status_hook()
        .add(
            plugin("counter"),
            status_hook(move |_, _, _| {
                *counter.lock().unwrap() += 1;
                StatusVerdict::LetThrough
            }),
        )
        .unwrap();
    for id in &ids {
        core.set_agent_status(*id, AgentStatus::Ready, "").unwrap();
        // A change to the same status is still a change request.
        core.set_agent_status(*id, AgentStatus::Ready, "").unwrap();
    }
    assert!(matches!(
        core.set_agent_status(999, AgentStatus::Ready, ""),
        Err(CoreError::NotFound(_))
    ));
    assert_eq!(*calls.lock().unwrap(), 4, "not called for an unknown agent");
}

#[test]
fn h3_unchanged_result_lets_the_change_through() {
    let (core, ids) = core_with_agents(&["alice"]);
    let (events, seen) = recorder("events");
    core.events()
        .add_callback("agent.status", plugin("p"), events)
        .unwrap();
    core.status_hook().add(plugin("p"), let_through()).unwrap();

    let after = core
        .set_agent_status(ids[0], AgentStatus::Aux, "Lunch")
        .unwrap();

    assert_eq!(
        (after.status, after.reason.as_str()),
        (AgentStatus::Aux, "Lunch")
    );
    let stored = core.directory().agent(ids[0]).unwrap();
    assert_eq!(
        (stored.status, stored.reason.as_str()),
        (AgentStatus::Aux, "Lunch")
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[test]
fn h4_other_values_switch_the_agent_to_that_state_instead() {
    let (core, ids) = core_with_agents(&["alice"]);
    let (events, seen) = recorder("events");
    core.events()
        .add_callback("agent.status", plugin("p"), events)
        .unwrap();
    // The documented example: no AUX without a reason; make it "Unspecified".
    core.status_hook()
        .add(
            plugin("p"),
            status_hook(|_, status, reason| {
                if status == AgentStatus::Aux && reason.is_empty() {
                    StatusVerdict::Rewrite {
                        status: AgentStatus::Aux,
                        reason: "Unspecified".to_owned(),
                    }
                } else if status == AgentStatus::Busy {
                    StatusVerdict::Rewrite {
                        status: AgentStatus::Offline,
                        reason: String::new(),
                    }
                } else {
                    StatusVerdict::LetThrough
                }
            }),
        )
        .unwrap();

    let after = core.set_agent_status(ids[0], AgentStatus::Aux, "").unwrap();
    assert_eq!(
        (after.status, after.reason.as_str()),
        (AgentStatus::Aux, "Unspecified")
    );

    let after = core
        .set_agent_status(ids[0], AgentStatus::Busy, "x")
        .unwrap();
    assert_eq!(
        (after.status, after.reason.as_str()),
        (AgentStatus::Offline, "")
    );
    assert_eq!(core.directory().agent(ids[0]).unwrap(), after);

    // Callbacks see the state the hook chose, not the request (E2 + H4).
    let seen = seen.lock().unwrap();
    let statuses: Vec<_> = seen
        .iter()
        .map(|event| match &event.payload {
            ucs_core::EventPayload::AgentStatus { agent, .. } => {
                (agent.status, agent.reason.clone())
            }
            other => panic!("unexpected event {other:?}"),
        })
        .collect();
    assert_eq!(
        statuses,
        [
            (AgentStatus::Aux, "Unspecified".to_owned()),
            (AgentStatus::Offline, String::new())
        ]
    );
}

#[test]
fn h5_block_with_reason_fails_with_that_reason_and_changes_nothing() {
    let (core, ids) = core_with_agents(&["alice"]);
    core.set_agent_status(ids[0], AgentStatus::Ready, "")
        .unwrap();
    let (events, seen) = recorder("events");
    core.events()
        .add_callback("agent.status", plugin("p"), events)
        .unwrap();
    core.status_hook()
        .add(
            plugin("p"),
            status_hook(|_, _, _| StatusVerdict::Block {
                reason: "No breaks before noon".to_owned(),
            }),
        )
        .unwrap();

    assert_eq!(
        core.set_agent_status(ids[0], AgentStatus::Aux, "Lunch"),
        Err(CoreError::Processing("No breaks before noon".to_owned()))
    );
    let stored = core.directory().agent(ids[0]).unwrap();
    assert_eq!(
        (stored.status, stored.reason.as_str()),
        (AgentStatus::Ready, "")
    );
    assert!(
        seen.lock().unwrap().is_empty(),
        "a blocked change fires no event"
    );
}

#[test]
fn h5_block_with_empty_reason_says_blocked_by_hook() {
    let (core, ids) = core_with_agents(&["alice"]);
    core.status_hook()
        .add(
            plugin("p"),
            status_hook(|_, _, _| StatusVerdict::Block {
                reason: String::new(),
            }),
        )
        .unwrap();
    assert_eq!(BLOCKED_BY_HOOK, "Blocked by hook");
    assert_eq!(
        core.set_agent_status(ids[0], AgentStatus::Ready, ""),
        Err(CoreError::Processing("Blocked by hook".to_owned()))
    );
    assert_eq!(
        core.directory().agent(ids[0]).unwrap().status,
        AgentStatus::Offline
    );
}

#[test]
fn h6_failed_hook_applies_the_originally_requested_state() {
    let (core, ids) = core_with_agents(&["alice"]);
    let (events, seen) = recorder("events");
    core.events()
        .add_callback("agent.status", plugin("p"), events)
        .unwrap();
    core.status_hook()
        .add(
            plugin("p"),
            status_hook(|_, _, _| {
                StatusVerdict::Failed(PluginFailure::new("Traceback: KeyError: 'x'"))
            }),
        )
        .unwrap();

    let after = core
        .set_agent_status(ids[0], AgentStatus::Aux, "Training")
        .unwrap();

    assert_eq!(
        (after.status, after.reason.as_str()),
        (AgentStatus::Aux, "Training")
    );
    assert_eq!(core.directory().agent(ids[0]).unwrap(), after);
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "the change happened, so it fires"
    );
}

/// A hook that changes the agent it is deciding on: the inner change must be
/// refused with a processing error, not deadlock (L5).
#[test]
fn h2_hook_changing_its_own_agent_gets_processing_error_not_deadlock() {
    let (core, ids) = core_with_agents(&["alice", "bob"]);
    let inner_results = Arc::new(Mutex::new(Vec::new()));
    let results = Arc::clone(&inner_results);
    let weak_core = Arc::downgrade(&core);
    let (alice, bob) = (ids[0], ids[1]);
    core.status_hook()
        .add(
            plugin("reentrant"),
            status_hook(move |before, status, _| {
                if before.id == alice && status == AgentStatus::Ready {
                    let core = Weak::upgrade(&weak_core).expect("core alive");
                    // Re-enter the same agent: refused.
                    let own = core.set_agent_status(alice, AgentStatus::Busy, "");
                    // Another agent is a different turn and works.
                    let other = core.set_agent_status(bob, AgentStatus::Aux, "dragged along");
                    results.lock().unwrap().push((own, other));
                }
                StatusVerdict::LetThrough
            }),
        )
        .unwrap();

    let core_in_thread = Arc::clone(&core);
    let after = within(Duration::from_secs(30), move || {
        core_in_thread.set_agent_status(alice, AgentStatus::Ready, "")
    })
    .unwrap();

    assert_eq!(after.status, AgentStatus::Ready);
    let results = inner_results.lock().unwrap();
    let [(own, other)] = results.as_slice() else {
        panic!("the hook ran once for alice: {results:?}");
    };
    assert!(
        matches!(own, Err(CoreError::Processing(message)) if message.contains("already being changed")),
        "re-entry must be a processing error, got {own:?}"
    );
    assert_eq!(other.as_ref().unwrap().status, AgentStatus::Aux);
    assert_eq!(core.directory().agent(bob).unwrap().reason, "dragged along");
    // The refused inner change left no trace, and the turn was released.
    assert_eq!(
        core.directory().agent(alice).unwrap().status,
        AgentStatus::Ready
    );
    core.status_hook().remove(&plugin("reentrant"));
    assert_eq!(
        core.set_agent_status(alice, AgentStatus::Busy, "")
            .unwrap()
            .status,
        AgentStatus::Busy
    );
}

#[test]
fn h5_blocked_or_refused_changes_release_the_agent_for_the_next_change() {
    let (core, ids) = core_with_agents(&["alice"]);
    let block = Arc::new(Mutex::new(true));
    let blocking = Arc::clone(&block);
    core.status_hook()
        .add(
            plugin("p"),
            status_hook(move |_, _, _| {
                if *blocking.lock().unwrap() {
                    StatusVerdict::Block {
                        reason: "no".to_owned(),
                    }
                } else {
                    StatusVerdict::LetThrough
                }
            }),
        )
        .unwrap();
    assert!(
        core.set_agent_status(ids[0], AgentStatus::Ready, "")
            .is_err()
    );
    *block.lock().unwrap() = false;
    let core_in_thread = Arc::clone(&core);
    let id = ids[0];
    let after = within(Duration::from_secs(30), move || {
        core_in_thread.set_agent_status(id, AgentStatus::Ready, "")
    });
    assert_eq!(after.unwrap().status, AgentStatus::Ready);
}

/// Issue 12, defect 6: clearing a user's `agent` flag used to reset the
/// status to OFFLINE behind the hook's back and with no event, so a
/// wallboard never learnt. Now the agent goes OFFLINE through the pipeline
/// (H2) with its `agent.status` event (E2), and a hook that blocks it (H5)
/// keeps the user an agent.
#[test]
fn h2_e2_clearing_the_agent_flag_goes_offline_through_the_hook_with_an_event() {
    let (core, ids) = core_with_agents(&["alice", "bob"]);
    for id in &ids {
        core.set_agent_status(*id, AgentStatus::Ready, "").unwrap();
    }
    let asked = Arc::new(Mutex::new(Vec::new()));
    let seen_by_hook = Arc::clone(&asked);
    let bob = ids[1];
    core.status_hook()
        .add(
            plugin("guard"),
            status_hook(move |agent, status, _| {
                seen_by_hook.lock().unwrap().push((agent.id, status));
                if agent.id == bob {
                    StatusVerdict::Block {
                        reason: "bob stays".into(),
                    }
                } else {
                    StatusVerdict::LetThrough
                }
            }),
        )
        .unwrap();
    let (recorder, events) = recorder("wallboard");
    core.events()
        .add_callback(
            ucs_core::events::EVENT_AGENT_STATUS,
            plugin("board"),
            recorder,
        )
        .unwrap();
    let not_an_agent = |id| ucs_core::UserEdit {
        id,
        agent: Some(false),
        ..ucs_core::UserEdit::default()
    };

    let alice = core.edit_user(not_an_agent(ids[0])).unwrap();
    assert!(!alice.agent);
    assert_eq!(*asked.lock().unwrap(), [(ids[0], AgentStatus::Offline)]);
    let seen = events.lock().unwrap().clone();
    assert_eq!(
        seen.len(),
        1,
        "one event, for alice going OFFLINE: {seen:?}"
    );
    assert!(matches!(
        &seen[0].payload,
        ucs_core::EventPayload::AgentStatus { agent, previous_status: AgentStatus::Ready, .. }
            if agent.id == ids[0] && agent.status == AgentStatus::Offline
    ));

    let refused = core.edit_user(not_an_agent(bob));
    assert_eq!(refused, Err(CoreError::Processing("bob stays".into())));
    assert!(
        core.directory().get(bob).unwrap().agent,
        "the edit changed nothing"
    );
    assert_eq!(
        core.directory().agent(bob).unwrap().status,
        AgentStatus::Ready
    );
    assert_eq!(
        events.lock().unwrap().len(),
        1,
        "no event for the refused edit"
    );
}
