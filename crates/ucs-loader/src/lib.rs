//! Plugin discovery and lifecycle (SPEC P1-P7, L1-L4).
//!
//! Work in progress: this is the interface the server binary wires against.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ucs_api::Api;

/// Where plugins are and how long their threads may take to end.
#[derive(Debug, Clone)]
pub struct LoaderConfig {
    /// The plugins directory (P1).
    pub plugins_dir: PathBuf,
    /// How long a `threading.Thread` plugin is joined after `stop` (L3).
    pub thread_join_timeout: Duration,
    /// The overall deadline for stopping every plugin at shutdown (L3).
    pub shutdown_deadline: Duration,
}

impl LoaderConfig {
    /// The defaults of SPEC L3 for `plugins_dir`.
    pub fn new(plugins_dir: PathBuf) -> Self {
        LoaderConfig {
            plugins_dir,
            thread_join_timeout: Duration::from_secs(5),
            shutdown_deadline: Duration::from_secs(10),
        }
    }
}

/// Why the plugin host could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// The plugins directory cannot be read.
    #[error("cannot read plugins directory {path}: {source}")]
    PluginsDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Owns every loaded plugin of one server.
pub struct PluginHost {
    api: Api,
    config: LoaderConfig,
}

impl PluginHost {
    /// Starts Python, wires `plugins.*` into `api` and loads every plugin of
    /// the directory (P1).
    pub fn start(api: Api, config: LoaderConfig) -> Result<Arc<PluginHost>, LoaderError> {
        Ok(Arc::new(PluginHost { api, config }))
    }

    /// Stops every plugin in reverse load order within the deadline (L3).
    pub fn shutdown(&self) {
        let _ = (&self.api, &self.config);
    }
}

/// Call from each runtime thread as it starts, so a thread that may run
/// Python keeps one Python thread state for its whole life.
pub fn python_thread_started() {}

/// Call from each runtime thread as it stops.
pub fn python_thread_stopping() {}
