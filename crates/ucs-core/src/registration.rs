//! Who registered what: the shared vocabulary of every hook, callback and
//! middleware slot.
//!
//! Each registration records its [`Owner`], so that unloading a plugin can
//! remove what it left behind (SPEC P7, L4) without a separate ledger that
//! could drift from the slots themselves.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Who registered something: a plugin by name, or the server itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner(Arc<str>);

impl Owner {
    /// The owner called `name`; for plugins, the plugin name (SPEC D1).
    pub fn new(name: &str) -> Self {
        Owner(Arc::from(name))
    }

    /// The name, as logs and warnings show it.
    pub fn name(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Identifies one registration, so it can be removed after it was found by
/// a comparison that must run without any server lock held (Python `==`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegistrationId(u64);

impl RegistrationId {
    /// A fresh id, never handed out before in this process.
    pub fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        RegistrationId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// A hook or callback that failed in a way that must not stop the change
/// (SPEC H6, S4, D5): the server logs it and goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginFailure {
    /// What went wrong, with the plugin's traceback where there is one.
    pub message: String,
}

impl PluginFailure {
    /// A failure described by `message`.
    pub fn new(message: impl Into<String>) -> Self {
        PluginFailure {
            message: message.into(),
        }
    }
}

/// What an unload reports for each registration a plugin left behind (L4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// The plugin that registered it.
    pub owner: Owner,
    /// What it was, e.g. `callback agent.status Example.agent_status_changed`.
    pub description: String,
}
