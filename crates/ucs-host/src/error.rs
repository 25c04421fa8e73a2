//! The crate's one error type.

/// Why a plugin host could not be started.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The thread that spawns and reaps the host could not start.
    #[error("cannot start the keeper thread of plugin '{plugin}''s host: {source}")]
    Thread {
        /// The plugin.
        plugin: String,
        /// The OS's refusal.
        #[source]
        source: std::io::Error,
    },
    /// The host process could not be spawned.
    #[error("cannot start a plugin host for plugin '{plugin}': {reason}")]
    Spawn {
        /// The plugin.
        plugin: String,
        /// Why.
        reason: String,
    },
    /// The link to the host could not be started.
    #[error("cannot start the link to plugin '{plugin}''s host: {source}")]
    Link {
        /// The plugin.
        plugin: String,
        /// The link's error.
        #[source]
        source: ucs_link::LinkError,
    },
}
