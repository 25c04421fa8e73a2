//! Closures standing in for Python hooks and callbacks, and a core with agents.

use std::any::Any;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ucs_core::{
    Agent, AgentStatus, Core, Event, EventCallback, NewUser, Owner, PluginFailure, Registrable,
    SharedDataHook, SharedVerdict, StatusHook, StatusVerdict, UserId, Value,
};

/// A status hook made of a closure.
pub(crate) struct FnStatusHook<F>(pub(crate) F);

impl<F> StatusHook for FnStatusHook<F>
where
    F: Fn(&Agent, AgentStatus, &str) -> StatusVerdict + Send + Sync + 'static,
{
    fn decide(&self, before: &Agent, status: AgentStatus, reason: &str) -> StatusVerdict {
        (self.0)(before, status, reason)
    }
}

impl<F> Registrable for FnStatusHook<F>
where
    F: Fn(&Agent, AgentStatus, &str) -> StatusVerdict + Send + Sync + 'static,
{
    fn describe(&self) -> String {
        "test status hook".to_owned()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Wraps a closure as a status hook.
pub(crate) fn status_hook(
    decide: impl Fn(&Agent, AgentStatus, &str) -> StatusVerdict + Send + Sync + 'static,
) -> Arc<dyn StatusHook> {
    Arc::new(FnStatusHook(decide))
}

/// A shared-data hook made of a closure.
pub(crate) struct FnSharedHook<F>(pub(crate) F);

impl<F> SharedDataHook for FnSharedHook<F>
where
    F: Fn(&str, &Value, &Value) -> SharedVerdict + Send + Sync + 'static,
{
    fn before_change(&self, identificator: &str, old: &Value, new: &Value) -> SharedVerdict {
        (self.0)(identificator, old, new)
    }
}

impl<F> Registrable for FnSharedHook<F>
where
    F: Fn(&str, &Value, &Value) -> SharedVerdict + Send + Sync + 'static,
{
    fn describe(&self) -> String {
        "test shared hook".to_owned()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Wraps a closure as a shared-data hook.
pub(crate) fn shared_hook(
    decide: impl Fn(&str, &Value, &Value) -> SharedVerdict + Send + Sync + 'static,
) -> Arc<dyn SharedDataHook> {
    Arc::new(FnSharedHook(decide))
}

/// An event callback made of a closure, with a name so removal can compare
/// callbacks the way Python `==` compares bound methods (E1).
pub(crate) struct FnCallback<F> {
    pub(crate) name: &'static str,
    pub(crate) on_event: F,
}

impl<F> EventCallback for FnCallback<F>
where
    F: Fn(&Event) -> Result<(), PluginFailure> + Send + Sync + 'static,
{
    fn on_event(&self, event: &Event) -> Result<(), PluginFailure> {
        (self.on_event)(event)
    }
}

impl<F> Registrable for FnCallback<F>
where
    F: Fn(&Event) -> Result<(), PluginFailure> + Send + Sync + 'static,
{
    fn describe(&self) -> String {
        self.name.to_owned()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Wraps a closure as an event callback called `name`.
pub(crate) fn callback(
    name: &'static str,
    on_event: impl Fn(&Event) -> Result<(), PluginFailure> + Send + Sync + 'static,
) -> Arc<dyn EventCallback> {
    Arc::new(FnCallback { name, on_event })
}

/// A callback that records every event it sees, and what it recorded.
pub(crate) fn recorder(name: &'static str) -> (Arc<dyn EventCallback>, Arc<Mutex<Vec<Event>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let callback = callback(name, move |event| {
        sink.lock().expect("recorder lock").push(event.clone());
        Ok(())
    });
    (callback, seen)
}

/// The owner plugins register as in these tests.
pub(crate) fn plugin(name: &str) -> Owner {
    Owner::new(name)
}

/// A core with one agent per name, all starting OFFLINE; returns their ids.
pub(crate) fn core_with_agents(names: &[&str]) -> (Arc<Core>, Vec<UserId>) {
    let core = Arc::new(Core::default());
    let ids = names
        .iter()
        .map(|name| {
            core.directory()
                .add(NewUser {
                    username: (*name).to_owned(),
                    password: "password1".to_owned(),
                    agent: true,
                    ..NewUser::default()
                })
                .expect("a valid agent")
                .id
        })
        .collect();
    (core, ids)
}

/// Runs `body` on its own thread and fails if it does not finish within
/// `limit`, so a deadlock fails the test instead of hanging the suite.
pub(crate) fn within<T: Send + 'static>(
    limit: Duration,
    body: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (done, finished) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let _ = done.send(body());
    });
    match finished.recv_timeout(limit) {
        Ok(result) => {
            worker.join().expect("the worker thread finished");
            result
        }
        // A panic in the body drops the sender: re-raise it with its message.
        Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => panic!("the worker ended without a result"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("did not finish within {limit:?}: deadlock or livelock")
        }
    }
}
