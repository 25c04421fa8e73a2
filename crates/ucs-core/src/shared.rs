//! Shared data: values by identificator, each with at most one change hook
//! (SPEC S1-S4), and never-set identificators reading as `{}` (D4).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use crate::Core;
use crate::audit::{AuditKind, AuditRecord};
use crate::error::CoreError;
use crate::events::EventPayload;
use crate::registration::{
    NotRemoved, Owner, PluginFailure, Registered, Registrable, RegistrationId, RegistrationKind,
    Slots,
};
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
pub trait SharedDataHook: Registrable {
    /// Decides what to store, given the data before and the data requested.
    fn before_change(&self, identificator: &str, old: &Value, new: &Value) -> SharedVerdict;
}

/// Shared data and its hooks.
///
/// The values are behind a std `RwLock` held only for one map operation,
/// the hooks in the registry's copy-on-write slots; hooks run after every
/// lock is gone.
pub struct SharedData {
    values: RwLock<HashMap<String, Value>>,
    hooks: Slots<String, dyn SharedDataHook>,
}

impl Default for SharedData {
    fn default() -> Self {
        Self::with_values([])
    }
}

impl SharedData {
    /// Shared data as a store loaded it, with no hooks yet.
    pub(crate) fn with_values(values: impl IntoIterator<Item = (String, Value)>) -> Self {
        SharedData {
            values: RwLock::new(values.into_iter().collect()),
            hooks: Slots::new(RegistrationKind::SharedHook),
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
    ) -> Result<RegistrationId, CoreError> {
        self.hooks.add(identificator.to_owned(), owner, hook)
    }

    /// Removes the hook of `identificator` if `owner` (this very version of
    /// the plugin) registered it (S1). Returns false, and warns, when there
    /// is none or another plugin or version owns it.
    pub fn remove_hook(&self, identificator: &str, owner: &Owner) -> bool {
        match self.hooks.remove_on_key(identificator, owner) {
            Ok(_) => true,
            Err(NotRemoved::OwnedBy(holder)) if holder.is_plugin(owner.name()) => {
                tracing::warn!(
                    plugin = %owner,
                    "removeChangeHook('{identificator}') ignored: the hook belongs to a newer \
                     load of this plugin, not to the stopped version that asked"
                );
                false
            }
            Err(NotRemoved::OwnedBy(holder)) => {
                tracing::warn!(
                    plugin = %owner,
                    "removeChangeHook('{identificator}') ignored: the hook belongs to plugin '{holder}'"
                );
                false
            }
            Err(NotRemoved::Absent) => {
                tracing::warn!(plugin = %owner, "removeChangeHook('{identificator}') ignored: no hook is registered");
                false
            }
        }
    }

    /// The hook slots, for the registry's walks (L4, reports).
    pub fn slots(&self) -> &Slots<String, dyn SharedDataHook> {
        &self.hooks
    }

    fn hook(&self, identificator: &str) -> Option<Registered<dyn SharedDataHook>> {
        self.hooks.first(identificator)
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
        let turn = self
            .shared_turns
            .take(identificator.to_owned())
            .map_err(|refused| {
                CoreError::Processing(refused.message(&format!(
                    "shared data {}",
                    crate::error::echoed(identificator)
                )))
            })?;
        let mut rewrite = None;
        let stored = match self.shared.hook(identificator) {
            None => data,
            Some(registration) => {
                let old = self.shared.get(identificator);
                match registration
                    .target
                    .before_change(identificator, &old, &data)
                {
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
                            registration.callable,
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
