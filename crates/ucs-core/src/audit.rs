//! The audit trail (issue 8): every veto and rewrite by the status hook,
//! every shared-data rewrite by a hook, and every plugin load, unload and
//! reload, with when, which plugin, what was asked and what happened.
//!
//! Kept in a bounded ring in memory, not persisted: it is for finding a
//! misbehaving plugin now, not a ledger. Each record is also published as an
//! `audit.*` event, so the event stream shows it as it happens.

use std::cell::Cell;
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::users::UserId;
use crate::value::Value;

/// How many records the ring keeps unless configured.
pub const DEFAULT_AUDIT_CAPACITY: usize = 1000;

/// What an audit record is about; each kind is also an event name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    /// The status hook blocked a change (H5).
    StatusVeto,
    /// The status hook switched a change to another state (H4).
    StatusRewrite,
    /// A shared-data hook stored something other than what was asked (S2).
    SharedRewrite,
    /// A plugin was loaded.
    PluginLoad,
    /// A loaded plugin was loaded again from its file (P6).
    PluginReload,
    /// A plugin was unloaded.
    PluginUnload,
    /// A plugin's host died without being asked to (I2).
    PluginCrash,
    /// A plugin whose host died was started again by the supervisor (I2).
    PluginRestart,
}

impl AuditKind {
    /// Every kind, for listing the event names.
    pub const ALL: [AuditKind; 8] = [
        AuditKind::StatusVeto,
        AuditKind::StatusRewrite,
        AuditKind::SharedRewrite,
        AuditKind::PluginLoad,
        AuditKind::PluginReload,
        AuditKind::PluginUnload,
        AuditKind::PluginCrash,
        AuditKind::PluginRestart,
    ];

    /// The event name of this kind, `audit.<kind>`.
    pub const fn event_name(self) -> &'static str {
        match self {
            AuditKind::StatusVeto => "audit.status_veto",
            AuditKind::StatusRewrite => "audit.status_rewrite",
            AuditKind::SharedRewrite => "audit.shared_rewrite",
            AuditKind::PluginLoad => "audit.plugin_load",
            AuditKind::PluginReload => "audit.plugin_reload",
            AuditKind::PluginUnload => "audit.plugin_unload",
            AuditKind::PluginCrash => "audit.plugin_crash",
            AuditKind::PluginRestart => "audit.plugin_restart",
        }
    }

    /// The kind whose event name is `name`, if it is an audit event; who
    /// may see audit events is decided by this (issue 12 item 3).
    pub fn from_event_name(name: &str) -> Option<AuditKind> {
        Self::ALL.into_iter().find(|kind| kind.event_name() == name)
    }
}

thread_local! {
    /// The user whose API call this thread is running, if any: set by
    /// [`act_as`] for the length of the call, read by [`AuditRecord::now`].
    /// A thread-local because everything an API call causes (its hooks, the
    /// plugin lifecycle, the audit records) runs on the calling thread, and
    /// threading the user through every core signature would reach every
    /// hook and slot for one field of the audit trail.
    static ACTING_USER: Cell<Option<UserId>> = const { Cell::new(None) };
}

/// While alive, audit records made on this thread name `user_id` as the
/// user whose call caused them; dropping it restores whoever acted before,
/// so a plugin's nested API call under another session is attributed to that
/// session only for its own length.
#[must_use = "the user is recorded as acting only while the guard lives"]
pub struct ActingUser {
    /// Who acted on this thread before; restored on drop.
    previous: Option<UserId>,
    /// The guard restores a thread-local, so it must stay on its thread.
    _not_send: PhantomData<*const ()>,
}

/// Records `user_id` as the user acting on this thread until the returned
/// guard is dropped (the API does this around every call).
pub fn act_as(user_id: UserId) -> ActingUser {
    ActingUser {
        previous: ACTING_USER.replace(Some(user_id)),
        _not_send: PhantomData,
    }
}

/// The user acting on this thread, if an API call is running on it.
pub fn acting_user() -> Option<UserId> {
    ACTING_USER.get()
}

impl Drop for ActingUser {
    fn drop(&mut self) {
        ACTING_USER.set(self.previous);
    }
}

/// One thing a plugin did, or one thing done to a plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// What kind of thing happened.
    pub kind: AuditKind,
    /// The plugin concerned.
    pub plugin: String,
    /// The user whose API call caused this; `None` when the server did it
    /// on its own (the plugins loaded at start, a plugin's own thread).
    pub user_id: Option<UserId>,
    /// What was asked, e.g. the requested status and reason.
    pub asked: Value,
    /// What happened, e.g. the status applied or the veto message.
    pub outcome: Value,
}

impl AuditRecord {
    /// A record stamped with the current time and the user acting on this
    /// thread ([`act_as`]).
    pub fn now(kind: AuditKind, plugin: &str, asked: Value, outcome: Value) -> Self {
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or_default();
        AuditRecord {
            time_ms,
            kind,
            plugin: plugin.to_owned(),
            user_id: acting_user(),
            asked,
            outcome,
        }
    }

    /// The record as `audit.list` and the event stream show it.
    pub fn to_value(&self) -> Value {
        Value::record([
            (
                "time_ms",
                Value::Int(i64::try_from(self.time_ms).unwrap_or(i64::MAX)),
            ),
            ("kind", Value::from(self.kind.event_name())),
            ("plugin", Value::from(self.plugin.as_str())),
            ("user_id", self.user_id.map_or(Value::Null, Value::Int)),
            ("asked", self.asked.clone()),
            ("outcome", self.outcome.clone()),
        ])
    }
}

/// The bounded ring of recent records.
pub struct AuditTrail {
    /// Oldest first; a std mutex held only to push or copy.
    records: Mutex<VecDeque<AuditRecord>>,
    capacity: usize,
}

impl AuditTrail {
    /// An empty trail keeping the last `capacity` records.
    pub fn new(capacity: usize) -> Self {
        AuditTrail {
            records: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
            capacity: capacity.max(1),
        }
    }

    /// Adds a record, dropping the oldest when full.
    pub(crate) fn push(&self, record: AuditRecord) {
        let mut records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        if records.len() == self.capacity {
            records.pop_front();
        }
        records.push_back(record);
    }

    /// The records kept, oldest first.
    pub fn list(&self) -> Vec<AuditRecord> {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_only_the_newest_records() {
        let trail = AuditTrail::new(2);
        for plugin in ["a", "b", "c"] {
            trail.push(AuditRecord::now(
                AuditKind::PluginLoad,
                plugin,
                Value::Null,
                Value::Null,
            ));
        }
        let plugins: Vec<_> = trail.list().into_iter().map(|r| r.plugin).collect();
        assert_eq!(plugins, ["b", "c"]);
    }

    #[test]
    fn issue12_records_name_the_acting_user_and_nesting_restores_it() {
        let user =
            || AuditRecord::now(AuditKind::PluginLoad, "p", Value::Null, Value::Null).user_id;
        assert_eq!(user(), None);
        {
            let _outer = act_as(1);
            assert_eq!(user(), Some(1));
            {
                let _nested = act_as(7);
                assert_eq!(user(), Some(7));
            }
            assert_eq!(user(), Some(1));
        }
        assert_eq!(user(), None);
        assert_eq!(
            std::thread::spawn(move || {
                let _other_thread = act_as(3);
                user()
            })
            .join()
            .ok(),
            Some(Some(3))
        );
        assert_eq!(user(), None);
    }
}
