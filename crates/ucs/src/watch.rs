//! `ucs serve --watch`: reload a plugin when the content of its file
//! changes, load a new file when it appears, unload a plugin whose file is
//! deleted.
//!
//! Only a change of content counts (issue 16 item 1). Two filters make sure:
//! - **The kind of event.** Opening, reading and closing a file without
//!   writing, and attribute changes (`chmod`, the times `touch` sets), are
//!   ignored outright. That is what ends the feedback loop where a reload,
//!   which reads the file, or a traceback, which `linecache` prints from it,
//!   or the watcher's own read looked like a change and started the next
//!   reload.
//! - **A content hash per file.** A write, a create or a rename may still
//!   leave the bytes as they were (`touch` opens for writing; an editor
//!   saves an unmodified buffer); the file is read and reloaded only if its
//!   hash differs from the one last seen. A reload that fails keeps the new
//!   hash: the same content would fail again, and the next real edit is
//!   tried.
//!
//! An editor's save is a burst of events (truncate, write, rename, chmod);
//! the burst is folded into one batch once no plugin file has had a content
//! event for [`DEBOUNCE`]. Whether the file exists afterwards decides between
//! load and unload, which also copes with editors that save by writing a
//! temporary file and renaming it over the original. A deleted file unloads
//! its plugin (if it runs) and forgets its hash, so a file that comes back
//! is loaded whatever it holds.
//!
//! Reloads run on a dedicated thread, never on the async runtime's workers
//! (they run Python and may wait seconds for a `stop()`), and go through
//! the API method `plugins.load` as user 1, exactly like a reload an
//! operator asks for: middleware and the lifecycle rules apply.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hasher};
use std::io::ErrorKind;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use anyhow::Context;
use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use ucs_api::{Api, PluginControl, PluginName, PluginState};
use ucs_core::Value;
use ucs_core::users::ADMIN_USER_ID;
use ucs_loader::PluginHost;

/// How long plugin files must be quiet before a batch is handled: long
/// enough to cover an editor's write burst, short enough to feel immediate.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// What the watch thread receives from notify.
type FileEvents = Receiver<notify::Result<notify::Event>>;

/// Watches the plugins directory while it lives; dropping it stops the
/// watching (the reload thread ends after the reload in progress).
pub(crate) struct PluginWatcher {
    /// Owns the OS watch; dropping it closes the channel the thread reads.
    _watcher: RecommendedWatcher,
}

/// Starts watching `host`'s plugins directory.
pub(crate) fn start(api: Api, host: Arc<PluginHost>) -> anyhow::Result<PluginWatcher> {
    let dir = host.plugins_dir().to_path_buf();
    let (events, received) = channel();
    let mut watcher = notify::recommended_watcher(events)
        .context("cannot start watching the plugins directory")?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("cannot watch plugins directory {}", dir.display()))?;
    std::thread::Builder::new()
        .name("ucs-plugin-watch".to_owned())
        .spawn(move || {
            // The files as the start-up scan loaded them. Read here, after
            // the watch is in place, so an edit from now on is either in
            // these hashes or in an event, and not on a runtime worker.
            let mut seen = ContentHashes::of_directory(host.plugins_dir());
            // This thread runs plugin code; like the runtime's threads it
            // keeps one Python thread state for its whole life.
            ucs_loader::python_thread_started();
            while let Some(names) = next_batch(&received) {
                for name in names {
                    apply_change(&api, &host, &mut seen, &name);
                }
            }
            ucs_loader::python_thread_stopping();
        })
        .context("cannot start the plugin watch thread")?;
    tracing::info!(dir = %dir.display(), "watching plugins for changes");
    Ok(PluginWatcher { _watcher: watcher })
}

/// The hash of the content last seen of each plugin file, by plugin; a
/// file that does not exist has no entry.
struct ContentHashes(BTreeMap<PluginName, u64>);

/// A file's content, hashed. SipHash with std's fixed keys: the hashes are
/// only compared within one process, and an accidental 64-bit collision,
/// the one way an edit could be missed, is not a practical concern.
fn content_hash(content: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    hasher.write(content);
    hasher.finish()
}

impl ContentHashes {
    /// The hashes of the plugin files in `dir` now.
    fn of_directory(dir: &Path) -> Self {
        let mut hashes = BTreeMap::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(err) => {
                tracing::warn!(dir = %dir.display(), "watch: cannot list the plugins directory: {err}");
                return ContentHashes(hashes);
            }
        };
        for path in entries.filter_map(Result::ok).map(|entry| entry.path()) {
            if let Some(name) = plugin_name_of(&path)
                && let Ok(content) = std::fs::read(&path)
            {
                hashes.insert(name, content_hash(&content));
            }
        }
        ContentHashes(hashes)
    }
}

/// Whether an event of this kind may have changed what a file holds (or
/// whether it exists). Opens, reads, closes without writing and attribute
/// changes may not; kinds the platform cannot tell apart may.
fn may_change_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Create(_)
        | EventKind::Modify(_)
        | EventKind::Remove(_)
        | EventKind::Any
        | EventKind::Other => true,
    }
}

/// The next batch: the plugins whose files may have changed, once they have
/// been quiet for [`DEBOUNCE`], in name order like the start-up scan (P1).
/// `None` once the watcher is dropped; a batch cut short by that is not
/// applied, since the server is shutting down.
fn next_batch(received: &FileEvents) -> Option<BTreeSet<PluginName>> {
    let mut names = BTreeSet::new();
    // However long it takes, wait for a first event that counts.
    while names.is_empty() {
        collect(received.recv().ok()?, &mut names);
    }
    // Then until no event that counts has come for DEBOUNCE: reads keep
    // arriving while plugins reload, and they must not hold a batch back.
    let mut quiet_from = Instant::now();
    loop {
        let left = DEBOUNCE.saturating_sub(quiet_from.elapsed());
        if left.is_zero() {
            return Some(names);
        }
        match received.recv_timeout(left) {
            Ok(event) => {
                if collect(event, &mut names) {
                    quiet_from = Instant::now();
                }
            }
            Err(RecvTimeoutError::Timeout) => return Some(names),
            Err(RecvTimeoutError::Disconnected) => return None,
        }
    }
}

/// Adds the plugins `event` may have changed to `names`; whether it did.
fn collect(event: notify::Result<notify::Event>, names: &mut BTreeSet<PluginName>) -> bool {
    let event = match event {
        Ok(event) => event,
        Err(err) => {
            tracing::warn!("watching plugins: {err}");
            return false;
        }
    };
    if !may_change_content(&event.kind) {
        return false;
    }
    let mut counted = false;
    for name in event.paths.iter().filter_map(|path| plugin_name_of(path)) {
        names.insert(name);
        counted = true;
    }
    counted
}

/// Reloads `name` if its content changed, loads it if it is new, unloads it
/// if its file is gone; nothing if its content is what was seen last.
fn apply_change(api: &Api, host: &PluginHost, seen: &mut ContentHashes, name: &PluginName) {
    let path = host.plugins_dir().join(format!("{name}.py"));
    match std::fs::read(&path) {
        Ok(content) => {
            let hash = content_hash(&content);
            if seen.0.insert(name.clone(), hash) == Some(hash) {
                tracing::debug!(plugin = %name, "watch: file written, content unchanged; not reloaded");
                return;
            }
            reload(api, host, name);
        }
        Err(err) if err.kind() == ErrorKind::NotFound => {
            if seen.0.remove(name).is_some() {
                unload_if_loaded(api, host, name);
            }
        }
        Err(err) => {
            tracing::warn!(plugin = %name, path = %path.display(), "watch: cannot read the plugin file: {err}")
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

    #[test]
    fn only_events_that_may_change_content_count() {
        use notify::event::{CreateKind, DataChange, MetadataKind, RemoveKind, RenameMode};
        for counts in [
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Remove(RemoveKind::File),
            EventKind::Any,
        ] {
            assert!(may_change_content(&counts), "{counts:?}");
        }
        for ignored in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Read),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
        ] {
            assert!(!may_change_content(&ignored), "{ignored:?}");
        }
    }
}
