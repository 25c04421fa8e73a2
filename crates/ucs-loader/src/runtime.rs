//! Where one running plugin version lives: in this process or in a plugin
//! host (I1). The loader's bookkeeping is the same for both; only starting
//! and stopping differ, and they differ here.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ucs_api::{Api, Isolation};
use ucs_core::{Owner, Value};
use ucs_host::{HostExit, HostSettings, HostedLoad, HostedPlugin};
use ucs_pybridge::{InProcessPort, LoadOutcome, PluginInstance, ServerPort, StopReport};

/// A running plugin version.
pub(crate) enum Runtime {
    /// Its Python objects are in this process.
    InProcess(PluginInstance),
    /// It runs in a plugin host.
    Hosted(HostedPlugin),
}

/// What starting a version came to.
pub(crate) enum Started {
    /// It runs.
    Running {
        /// Where.
        runtime: Runtime,
        /// The class `UCS_PLUGIN` names.
        class_name: String,
    },
    /// The file has no `UCS_PLUGIN` (P2).
    NotAPlugin,
    /// Import, constructor or `start` failed (L1), or its host did (I2, I4).
    Failed {
        /// The class, if known.
        class_name: String,
        /// What went wrong.
        error: String,
    },
}

/// What a version needs to start: its file and source, and the server.
pub(crate) struct Version<'a> {
    /// The server's API.
    pub(crate) api: &'a Api,
    /// The plugin version.
    pub(crate) owner: &'a Owner,
    /// The file.
    pub(crate) path: &'a Path,
    /// The file's bytes, as read (Python decodes them, PEP 263).
    pub(crate) source: &'a [u8],
    /// The plugins directory.
    pub(crate) plugins_dir: &'a Path,
    /// The plugin's settings for this version (`ucs.config`).
    pub(crate) config: &'a Value,
}

impl Version<'_> {
    /// Imports, constructs and starts the plugin in this process.
    pub(crate) fn start_in_process(&self) -> Started {
        let port: Arc<dyn ServerPort> =
            InProcessPort::new(self.api.clone(), self.owner.clone(), self.config.clone());
        match ucs_pybridge::load_plugin_source(
            &port,
            self.owner.name(),
            self.path,
            self.source,
            self.plugins_dir,
        ) {
            LoadOutcome::Started(instance) => Started::Running {
                class_name: instance.class_name.clone(),
                runtime: Runtime::InProcess(instance),
            },
            LoadOutcome::NoPluginVariable => Started::NotAPlugin,
            LoadOutcome::Failed { class_name, error } => Started::Failed { class_name, error },
        }
    }

    /// Starts a plugin host and the plugin in it; `loading` learns of the
    /// host's pid while it loads the plugin (and `None` once it is done), so
    /// shutdown can kill it; `on_exit` learns of the host's end (I2).
    pub(crate) fn start_hosted(
        &self,
        settings: &HostSettings,
        loading: impl Fn(Option<u32>),
        on_exit: impl FnOnce(HostExit) + Send + 'static,
    ) -> Started {
        let policy = *self.api.policy();
        let hosted = match HostedPlugin::spawn(
            settings,
            self.api.clone(),
            self.owner.clone(),
            policy,
            policy.deadline,
            on_exit,
        ) {
            Ok(hosted) => hosted,
            Err(err) => {
                return Started::Failed {
                    class_name: String::new(),
                    error: err.to_string(),
                };
            }
        };
        loading(Some(hosted.pid()));
        let loaded = hosted.load(self.path, self.source, self.plugins_dir, self.config);
        loading(None);
        match loaded {
            HostedLoad::Started { class_name } => Started::Running {
                runtime: Runtime::Hosted(hosted),
                class_name,
            },
            HostedLoad::NoPluginVariable => Started::NotAPlugin,
            HostedLoad::Failed { class_name, error } => Started::Failed { class_name, error },
        }
    }
}

impl Runtime {
    /// Where it runs.
    pub(crate) fn isolation(&self) -> Isolation {
        match self {
            Runtime::InProcess(_) => Isolation::InProcess,
            Runtime::Hosted(_) => Isolation::Process,
        }
    }

    /// Its host's process id, if it has a host.
    pub(crate) fn host_pid(&self) -> Option<u32> {
        match self {
            Runtime::InProcess(_) => None,
            Runtime::Hosted(hosted) => Some(hosted.pid()),
        }
    }

    /// Calls `stop` and joins a Thread plugin (L2, L3); a host is ended
    /// afterwards.
    pub(crate) fn stop(self, stop_timeout: Duration, join_timeout: Duration) -> StopReport {
        match self {
            Runtime::InProcess(instance) => {
                ucs_pybridge::stop_plugin(instance, stop_timeout, join_timeout)
            }
            Runtime::Hosted(hosted) => hosted.stop(stop_timeout, join_timeout),
        }
    }
}
