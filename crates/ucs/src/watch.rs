//! `ucs serve --watch`: reload a plugin when its file is saved, load a new
//! file when it appears, unload a plugin whose file is deleted.
//!
//! File events come from `notify` through its mini debouncer: an editor's
//! save is a burst of events (truncate, write, rename, chmod), and reloading
//! once per burst, after it settles, is what the author means. The debouncer
//! only says "this path changed"; whether the file exists afterwards decides
//! between load and unload, which also copes with editors that save by
//! writing a temp file and renaming it over the original.
//!
//! Reloads run on a dedicated thread, never on the async runtime's workers
//! (they run Python and may wait seconds for a `stop()`), and go through
//! the API method `plugins.load` as user 1, exactly like a reload an
//! operator asks for: middleware and the lifecycle rules apply.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use anyhow::Context;
use notify_debouncer_mini::notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};
use ucs_api::{Api, PluginControl, PluginName, PluginState};
use ucs_core::Value;
use ucs_core::users::ADMIN_USER_ID;
use ucs_loader::PluginHost;

/// How long a file must be quiet before it is reloaded: long enough to
/// cover an editor's write burst, short enough to feel immediate.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Watches the plugins directory while it lives; dropping it stops the
/// watching (the reload thread ends after the reload in progress).
pub(crate) struct PluginWatcher {
    /// Owns the OS watch; dropping it closes the channel the thread reads.
    _debouncer: Debouncer<RecommendedWatcher>,
}

/// Starts watching `host`'s plugins directory.
pub(crate) fn start(api: Api, host: Arc<PluginHost>) -> anyhow::Result<PluginWatcher> {
    let dir = host.plugins_dir().to_path_buf();
    let (events, received) = channel::<DebounceEventResult>();
    let mut debouncer =
        new_debouncer(DEBOUNCE, events).context("cannot start watching the plugins directory")?;
    debouncer
        .watcher()
        .watch(&dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("cannot watch plugins directory {}", dir.display()))?;
    std::thread::Builder::new()
        .name("ucs-plugin-watch".to_owned())
        .spawn(move || {
            // This thread runs plugin code; like the runtime's threads it
            // keeps one Python thread state for its whole life.
            ucs_loader::python_thread_started();
            reload_until_closed(&api, &host, &received);
            ucs_loader::python_thread_stopping();
        })
        .context("cannot start the plugin watch thread")?;
    tracing::info!(dir = %dir.display(), "watching plugins for changes");
    Ok(PluginWatcher {
        _debouncer: debouncer,
    })
}

/// Handles each debounced batch until the watcher is dropped.
fn reload_until_closed(api: &Api, host: &PluginHost, received: &Receiver<DebounceEventResult>) {
    while let Ok(batch) = received.recv() {
        let events = match batch {
            Ok(events) => events,
            Err(err) => {
                tracing::warn!("watching plugins: {err}");
                continue;
            }
        };
        let mut names: Vec<PluginName> = events
            .iter()
            .filter_map(|event| plugin_name_of(&event.path))
            .collect();
        // Deterministic order, like the start-up scan (P1), once per name.
        names.sort();
        names.dedup();
        for name in names {
            let path = host.plugins_dir().join(format!("{name}.py"));
            if path.is_file() {
                reload(api, host, &name);
            } else {
                unload_if_loaded(api, host, &name);
            }
        }
    }
}

/// The plugin a changed path is, or `None` for files the server would not
/// load (P1, D1) and editors' temporary files.
fn plugin_name_of(path: &Path) -> Option<PluginName> {
    // The server's own filter: dotfiles cover vim's `.x.py.swp` and emacs's
    // `.#x.py`; `~`, `.swp` and `.tmp` names do not end in `.py`, and a stem
    // that is not an identifier (`x.py.tmp.py`, `x-copy.py`) is refused.
    PluginName::from_file_name(path.file_name()?.to_str()?).ok()
}

/// Loads or reloads `name` through `plugins.load`, logging the result.
fn reload(api: &Api, host: &PluginHost, name: &PluginName) {
    let result = admin(api).and_then(|admin| {
        api.call_as(admin, "plugins.load", vec![Value::from(name.as_str())])
            .map_err(|err| err.to_string())
    });
    match result {
        Ok(_) => {
            let class = host
                .list()
                .into_iter()
                .find(|info| info.name == name.as_str())
                .map(|info| info.class_name)
                .unwrap_or_default();
            tracing::info!(plugin = %name, "watch: file changed; reloaded: RUNNING (class {class})");
        }
        Err(err) => tracing::error!(plugin = %name, "watch: file changed; reload failed: {err}"),
    }
}

/// Unloads `name` if it is running: its file is gone.
fn unload_if_loaded(api: &Api, host: &PluginHost, name: &PluginName) {
    let running = host
        .list()
        .iter()
        .any(|info| info.name == name.as_str() && info.state == PluginState::Running);
    if !running {
        tracing::debug!(plugin = %name, "watch: file removed; plugin not loaded");
        return;
    }
    let result = admin(api).and_then(|admin| {
        api.call_as(admin, "plugins.unload", vec![Value::from(name.as_str())])
            .map_err(|err| err.to_string())
    });
    match result {
        Ok(_) => tracing::info!(plugin = %name, "watch: file removed; plugin unloaded"),
        Err(err) => tracing::error!(plugin = %name, "watch: file removed; unload failed: {err}"),
    }
}

/// User 1, the superuser reloads run as (`plugins.*` need a superuser, P6).
fn admin(api: &Api) -> Result<ucs_core::User, String> {
    api.core()
        .directory()
        .get(ADMIN_USER_ID)
        .filter(|user| user.superuser)
        .ok_or_else(|| {
            format!("user {ADMIN_USER_ID} is missing or not a superuser, so reloads cannot run")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plugin_files_are_reloaded() {
        let name = |file: &str| plugin_name_of(&Path::new("/p").join(file)).map(|n| n.to_string());
        assert_eq!(name("example.py").as_deref(), Some("example"));
        for skipped in [
            "__init__.py",
            ".example.py",
            ".#example.py",
            "example.py~",
            "example.py.swp",
            ".example.py.swp",
            "example.py.tmp",
            "4913",
            "my-plugin.py",
            "__pycache__",
        ] {
            assert_eq!(name(skipped), None, "{skipped}");
        }
    }
}
