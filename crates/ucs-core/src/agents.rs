//! The agent status pipeline: request -> the one status hook (SPEC H1-H6)
//! -> commit -> events (D5).

use std::borrow::Cow;
use std::sync::Arc;

use crate::Core;
use crate::audit::{AuditKind, AuditRecord};
use crate::error::CoreError;
use crate::events::EventPayload;
use crate::registration::{
    AllAgents, NotRemoved, Owner, PluginFailure, Registered, Registrable, RegistrationId,
    RegistrationKind, Slots,
};
use crate::users::{Agent, AgentStatus, User, UserEdit, UserId};
use crate::value::Value;

/// The message of a block whose reason is empty (H5).
pub const BLOCKED_BY_HOOK: &str = "Blocked by hook";

/// What the status hook decided (H3-H6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusVerdict {
    /// H3: the requested change goes through unchanged.
    LetThrough,
    /// H4: switch to this state instead.
    Rewrite {
        /// The status to switch to.
        status: AgentStatus,
        /// The reason to switch to.
        reason: String,
    },
    /// H5: refuse the change with this message; empty means [`BLOCKED_BY_HOOK`].
    Block {
        /// Why; shown to the caller as a processing error.
        reason: String,
    },
    /// H6: the hook itself failed; the requested change is applied and the
    /// failure logged.
    Failed(PluginFailure),
}

/// Decides every agent status change before it happens (H2).
pub trait StatusHook: Registrable {
    /// `before` is the agent before the change; `status` and `reason` are
    /// what was requested.
    fn decide(&self, before: &Agent, status: AgentStatus, reason: &str) -> StatusVerdict;
}

/// The one status hook slot of the server (H1), in the registry.
pub struct StatusHookSlot {
    slots: Slots<AllAgents, dyn StatusHook>,
}

impl Default for StatusHookSlot {
    fn default() -> Self {
        StatusHookSlot {
            slots: Slots::new(RegistrationKind::StatusHook),
        }
    }
}

impl StatusHookSlot {
    /// Registers the hook; a second registration, by anyone, is a processing
    /// error (H1).
    pub fn add(
        &self,
        owner: Owner,
        hook: Arc<dyn StatusHook>,
    ) -> Result<RegistrationId, CoreError> {
        self.slots.add(AllAgents, owner, hook)
    }

    /// Removes the hook if `owner` (this very version of the plugin)
    /// registered it. Returns false, and warns, when there is none or
    /// another plugin or version owns it (H1).
    pub fn remove(&self, owner: &Owner) -> bool {
        match self.slots.remove_on_key(&AllAgents, owner) {
            Ok(_) => true,
            Err(NotRemoved::OwnedBy(holder)) if holder.is_plugin(owner.name()) => {
                tracing::warn!(
                    plugin = %owner,
                    "removeChangeStatusHook ignored: the status hook belongs to a newer load of \
                     this plugin, not to the stopped version that asked"
                );
                false
            }
            Err(NotRemoved::OwnedBy(holder)) => {
                tracing::warn!(
                    plugin = %owner,
                    "removeChangeStatusHook ignored: the status hook belongs to plugin '{holder}'"
                );
                false
            }
            Err(NotRemoved::Absent) => {
                tracing::warn!(plugin = %owner, "removeChangeStatusHook ignored: no status hook is registered");
                false
            }
        }
    }

    /// The plugin version that owns the hook, if any.
    pub fn owner(&self) -> Option<Owner> {
        self.current().map(|registration| registration.owner)
    }

    /// The slot itself, for the registry's walks (L4, reports).
    pub fn slots(&self) -> &Slots<AllAgents, dyn StatusHook> {
        &self.slots
    }

    /// Whether no hook is registered: one atomic load.
    fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn current(&self) -> Option<Registered<dyn StatusHook>> {
        self.slots.first(&AllAgents)
    }

    /// The slot's registrations now, the hook first: borrowing it from the
    /// snapshot spares a status change the clone of a registration (four
    /// reference counts up and down, issue 13 item 3).
    fn snapshot(&self) -> Option<Arc<[Registered<dyn StatusHook>]>> {
        self.slots.snapshot(&AllAgents)
    }
}

impl Core {
    /// Changes an agent's status through the pipeline: the hook decides (H2),
    /// the result is committed, callbacks run (D5). Returns the agent after
    /// the change.
    ///
    /// Changes of one agent are serialised; the hook runs with no lock held,
    /// and a hook or callback that changes the very agent it is deciding on
    /// gets a processing error instead of a deadlock (L5).
    pub fn set_agent_status(
        &self,
        agent_id: UserId,
        status: AgentStatus,
        reason: &str,
    ) -> Result<Agent, CoreError> {
        let result = self.change_agent_status(agent_id, status, reason);
        self.events.deliver_deferred();
        result
    }

    fn change_agent_status(
        &self,
        agent_id: UserId,
        status: AgentStatus,
        reason: &str,
    ) -> Result<Agent, CoreError> {
        // With no hook, nothing runs between reading the agent and storing
        // the change: both happen under the directory's write lock, which
        // serialises changes of one agent as the turn would. The turn is
        // still needed if a change that does run a hook is between its read
        // and its commit (a hook just registered or removed), so the fast
        // path commits only when no turn is held, and otherwise takes the
        // turn as before; a hook changing its own agent is still refused.
        if self.status_hook.is_empty()
            && let Some((after, committed)) = self.directory.commit_status(
                agent_id,
                status,
                reason,
                || !self.agent_turns.any_held(),
                |previous_status, previous_reason, after| {
                    self.commit_status_event(previous_status, previous_reason, after)
                },
            )?
        {
            self.events.dispatch_through(committed);
            return Ok(after);
        }
        let turn = self.agent_turns.take(agent_id).map_err(|refused| {
            CoreError::Processing(refused.message(&format!("agent {agent_id}")))
        })?;
        let before = self.directory.agent(agent_id)?;
        let requested = status;
        let asked = || {
            Value::record([
                ("agent_id", Value::Int(agent_id)),
                ("status", Value::Int(requested.code())),
                ("reason", Value::from(reason)),
            ])
        };
        let mut rewritten_by = None;
        let hooks = self.status_hook.snapshot();
        let (status, reason) = match hooks.as_deref().and_then(<[_]>::first) {
            None => (status, Cow::Borrowed(reason)),
            Some(registration) => match registration.target.decide(&before, status, reason) {
                StatusVerdict::LetThrough => (status, Cow::Borrowed(reason)),
                StatusVerdict::Rewrite { status, reason } => {
                    rewritten_by = Some(registration.owner.clone());
                    (status, Cow::Owned(reason))
                }
                StatusVerdict::Block { reason: message } => {
                    let message = if message.is_empty() {
                        BLOCKED_BY_HOOK.to_owned()
                    } else {
                        message
                    };
                    // The audit event may run callbacks that change this
                    // agent: let the turn go first.
                    drop(turn);
                    self.record_audit(AuditRecord::now(
                        AuditKind::StatusVeto,
                        registration.owner.name(),
                        asked(),
                        Value::record([("blocked", Value::from(message.as_str()))]),
                    ));
                    return Err(CoreError::Processing(message));
                }
                StatusVerdict::Failed(failure) => {
                    tracing::error!(
                        plugin = %registration.owner,
                        agent = agent_id,
                        "status hook {} failed; applying the requested {} instead: {}",
                        registration.callable,
                        status.name(),
                        failure.message
                    );
                    (status, Cow::Borrowed(reason))
                }
            },
        };
        let (after, committed) = self
            .directory
            .commit_status(
                agent_id,
                status,
                &reason,
                || true,
                |previous_status, previous_reason, after| {
                    self.commit_status_event(previous_status, previous_reason, after)
                },
            )?
            // `|| true` never refuses; an error rather than a panic all the same.
            .ok_or_else(|| {
                CoreError::Processing(format!("agent {agent_id}: status commit refused"))
            })?;
        // Callbacks may change this agent again, so the turn ends first.
        drop(turn);
        self.events.dispatch_through(committed);
        if let Some(owner) = rewritten_by {
            self.record_audit(AuditRecord::now(
                AuditKind::StatusRewrite,
                owner.name(),
                asked(),
                Value::record([
                    ("status", Value::Int(after.status.code())),
                    ("reason", Value::from(after.reason.as_str())),
                ]),
            ));
        }
        Ok(after)
    }

    /// Edits a user (all or nothing). Clearing `agent` on an agent that is
    /// not OFFLINE first takes it OFFLINE through the status pipeline, so the
    /// status hook decides (H2; a block fails the edit and changes nothing,
    /// H5) and callbacks and streams see the `agent.status` event (E2, D5);
    /// a change racing in between is reset by the edit with its own event.
    pub fn edit_user(&self, edit: UserEdit) -> Result<User, CoreError> {
        let result = self.edit_user_in_order(edit);
        self.events.deliver_deferred();
        result
    }

    fn edit_user_in_order(&self, edit: UserEdit) -> Result<User, CoreError> {
        let before = self.directory.get(edit.id);
        let changes_password = edit.password.is_some();
        let user = self.edit_user_fields(edit)?;
        // A session is a right granted for what the user was when it logged
        // in: a new password or a lost role ends every other one of its
        // sessions, and their event streams with them (issue 15 item 12).
        let why = if changes_password {
            Some("its password changed")
        } else if before.as_ref().is_some_and(|before| before.agent) && !user.agent {
            Some("it is no longer an agent")
        } else if before.as_ref().is_some_and(|before| before.superuser) && !user.superuser {
            Some("it is no longer a superuser")
        } else {
            None
        };
        if let Some(why) = why {
            let closed = self.sessions.close_others_of(user.id);
            if closed > 0 {
                tracing::info!(
                    user = %user.username,
                    closed,
                    "closed {closed} session(s) of user '{}': {why}",
                    user.username
                );
            }
        }
        Ok(user)
    }

    fn edit_user_fields(&self, edit: UserEdit) -> Result<User, CoreError> {
        if edit.agent == Some(false)
            && let Ok(agent) = self.directory.agent(edit.id)
            && agent.status != AgentStatus::Offline
        {
            let after = self.set_agent_status(edit.id, AgentStatus::Offline, "")?;
            if after.status != AgentStatus::Offline {
                return Err(CoreError::Processing(format!(
                    "agent {} must be OFFLINE before it stops being an agent, but the status \
                     hook switched it to {} instead",
                    edit.id,
                    after.status.name()
                )));
            }
        }
        let (user, committed) = self.directory.edit_with(edit, |status, reason, after| {
            self.commit_status_event(status, reason, after)
        })?;
        self.events.dispatch_through(committed);
        Ok(user)
    }

    /// Numbers the status change in commit order; the payload is built only
    /// if a sink or callback will see it.
    fn commit_status_event(
        &self,
        previous_status: AgentStatus,
        previous_reason: &str,
        after: &Agent,
    ) -> crate::events::Committed {
        self.events
            .commit_with(crate::events::EVENT_AGENT_STATUS, || {
                EventPayload::AgentStatus {
                    agent: after.clone(),
                    previous_status,
                    previous_reason: previous_reason.to_owned(),
                }
            })
    }
}
