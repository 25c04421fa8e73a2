//! Shared data: values by identificator, each with at most one change hook
//! (SPEC S1-S4), and never-set identificators reading as `{}` (D4).

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use crate::Core;
use crate::audit::{AuditKind, AuditRecord};
use crate::error::CoreError;
use crate::events::EventPayload;
use crate::registration::{Leftover, Owner, PluginFailure};
use crate::turns::TurnRefused;
use crate::value::Value;

/// What a shared-data hook decided (S2-S4).
#[derive(Debug, Clone, PartialEq)]
pub enum SharedVerdict {
    /// S2: store this instead of the requested data.
    Store(Value),
    /// S3: refuse the change; the caller gets a processing error.
    Block {
        /// Why.
        reason: String,
    },
    /// S4: the hook failed; the requested data is stored and the failure logged.
    Failed(PluginFailure),
}

/// Called before shared data of one identificator changes (S2).
pub trait SharedDataHook: Send + Sync {
    /// Decides what to store, given the data before and the data requested.
    fn before_change(&self, identificator: &str, old: &Value, new: &Value) -> SharedVerdict;
    /// What this is, for warnings.
    fn describe(&self) -> String;
    /// Lets a remover see what kind of hook it is.
    fn as_any(&self) -> &dyn Any;
}

#[derive(Clone)]
struct SharedHookRegistration {
    owner: Owner,
    hook: Arc<dyn SharedDataHook>,
}

/// Shared data and its hooks.
///
/// Both maps are behind std `RwLock`s held only for one map operation; hooks
/// run after the lock is gone.
#[derive(Default)]
pub struct SharedData {
    values: RwLock<HashMap<String, Value>>,
    hooks: RwLock<HashMap<String, SharedHookRegistration>>,
}

impl SharedData {
    /// Shared data as a store loaded it, with no hooks yet.
    pub(crate) fn with_values(values: impl IntoIterator<Item = (String, Value)>) -> Self {
        SharedData {
            values: RwLock::new(values.into_iter().collect()),
            hooks: RwLock::default(),
        }
    }

    /// The data stored under `identificator`, or `{}` if never set (D4).
    pub fn get(&self, identificator: &str) -> Value {
        self.values
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(identificator)
            .cloned()
            .unwrap_or_else(Value::empty_map)
    }

    /// Registers the hook of `identificator`; a second one is a processing
    /// error (S1).
    pub fn add_hook(
        &self,
        identificator: &str,
        owner: Owner,
        hook: Arc<dyn SharedDataHook>,
    ) -> Result<(), CoreError> {
        let mut hooks = self.hooks.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = hooks.get(identificator) {
            return Err(CoreError::Processing(format!(
                "shared data '{identificator}' already has a change hook, registered by plugin '{}'",
                existing.owner
            )));
        }
        hooks.insert(
            identificator.to_owned(),
            SharedHookRegistration { owner, hook },
        );
        Ok(())
    }

    /// Removes the hook of `identificator` (S1). Returns false, and warns,
    /// when there is none or another plugin owns it.
    pub fn remove_hook(&self, identificator: &str, owner: &Owner) -> bool {
        let mut hooks = self.hooks.write().unwrap_or_else(PoisonError::into_inner);
        match hooks.get(identificator) {
            Some(existing) if existing.owner == *owner => {
                hooks.remove(identificator);
                true
            }
            Some(existing) => {
                tracing::warn!(
                    plugin = %owner,
                    "removeChangeHook('{identificator}') ignored: the hook belongs to plugin '{}'",
                    existing.owner
                );
                false
            }
            None => {
                tracing::warn!(plugin = %owner, "removeChangeHook('{identificator}') ignored: no hook is registered");
                false
            }
        }
    }

    /// Removes every hook `owner` left registered (L4).
    pub fn remove_owned_by(&self, owner: &Owner) -> Vec<Leftover> {
        let mut hooks = self.hooks.write().unwrap_or_else(PoisonError::into_inner);
        let mine: Vec<String> = hooks
            .iter()
            .filter(|(_, registration)| registration.owner == *owner)
            .map(|(identificator, _)| identificator.clone())
            .collect();
        mine.into_iter()
            .filter_map(|identificator| {
                hooks.remove(&identificator).map(|registration| Leftover {
                    owner: registration.owner,
                    description: format!(
                        "shared data hook for '{identificator}' {}",
                        registration.hook.describe()
                    ),
                })
            })
            .collect()
    }

    /// The identificators whose hook `owner` registered, sorted, each with
    /// the hook's description: what `ucs plugin check` reports, without
    /// removing anything.
    pub fn hooks_owned_by(&self, owner: &Owner) -> Vec<(String, String)> {
        let mut mine: Vec<(String, String)> = self
            .hooks
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(_, registration)| registration.owner == *owner)
            .map(|(identificator, registration)| {
                (identificator.clone(), registration.hook.describe())
            })
            .collect();
        mine.sort();
        mine
    }

    fn hook(&self, identificator: &str) -> Option<SharedHookRegistration> {
        self.hooks
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(identificator)
            .cloned()
    }
}

impl Core {
    /// Sets shared data through its hook (S2-S4), writes it to the store,
    /// commits it and runs the callbacks (D5). Returns what was stored.
    ///
    /// Sets of one identificator are serialised, so a hook's `old_data` is
    /// always what the previous set stored; a hook that sets its own
    /// identificator gets a processing error instead of a deadlock (L5).
    pub fn set_shared(&self, identificator: &str, data: Value) -> Result<Value, CoreError> {
        let result = self.change_shared(identificator, data);
        self.events.deliver_deferred();
        result
    }

    fn change_shared(&self, identificator: &str, data: Value) -> Result<Value, CoreError> {
        let turn =
            self.shared_turns
                .take(identificator.to_owned())
                .map_err(|refused| match refused {
                    TurnRefused::Reentrant => CoreError::Processing(format!(
                        "shared data '{identificator}' is already being set on this thread: its \
                     hook may not set it again"
                    )),
                    TurnRefused::WouldDeadlock => CoreError::Processing(format!(
                        "setting shared data '{identificator}' now would deadlock with another set \
                     waiting on this one"
                    )),
                })?;
        let mut rewrite = None;
        let stored = match self.shared.hook(identificator) {
            None => data,
            Some(registration) => {
                let old = self.shared.get(identificator);
                match registration.hook.before_change(identificator, &old, &data) {
                    SharedVerdict::Store(value) => {
                        if value != data {
                            rewrite = Some((registration.owner.clone(), data));
                        }
                        value
                    }
                    SharedVerdict::Block { reason } => return Err(CoreError::Processing(reason)),
                    SharedVerdict::Failed(failure) => {
                        tracing::error!(
                            plugin = %registration.owner,
                            identificator,
                            "shared data hook {} failed; storing the requested data: {}",
                            registration.hook.describe(),
                            failure.message
                        );
                        data
                    }
                }
            }
        };
        // Durable before memory: inside the turn, so the store sees the sets
        // of one identificator in commit order, and outside the values lock,
        // so readers never wait for the disk. If the store refuses, nothing
        // changed and no event is sent.
        self.store.save_shared(identificator, &stored)?;
        let committed = {
            let mut values = self
                .shared
                .values
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            values.insert(identificator.to_owned(), stored.clone());
            self.events.commit(EventPayload::SharedData {
                identificator: identificator.to_owned(),
                data: stored.clone(),
            })
        };
        drop(turn);
        self.events.dispatch_through(committed);
        if let Some((owner, asked)) = rewrite {
            self.record_audit(AuditRecord::now(
                AuditKind::SharedRewrite,
                owner.name(),
                Value::record([
                    ("identificator", Value::from(identificator)),
                    ("data", asked),
                ]),
                Value::record([("stored", stored.clone())]),
            ));
        }
        Ok(stored)
    }
}
