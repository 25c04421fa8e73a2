//! What the API needs from the plugin loader, defined here so the API does
//! not depend on Python (the loader implements it, SPEC P6).

use ucs_core::Value;

use crate::error::ApiError;

/// The lifecycle state of a plugin (SPEC section 9 `PluginState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginState {
    /// Loaded and started.
    Running,
    /// Unloaded, or found but not loaded.
    Stopped,
    /// Import, constructor or `start` raised (L1), or its plugin host died
    /// (I2); `error` says why.
    Failed,
    /// Loading still: its constructor or `start` has not returned (I4).
    Starting,
}

impl PluginState {
    /// Every state, for reading a name back ([`PluginState::from_name`]).
    pub const ALL: [PluginState; 4] = [
        PluginState::Running,
        PluginState::Stopped,
        PluginState::Failed,
        PluginState::Starting,
    ];

    /// The lower-case name used in JSON results: the one table of names, so
    /// gRPC and the CLI read back exactly what the API wrote.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginState::Running => "running",
            PluginState::Stopped => "stopped",
            PluginState::Failed => "failed",
            PluginState::Starting => "starting",
        }
    }

    /// The state named `name` by [`PluginState::as_str`], if any.
    pub fn from_name(name: &str) -> Option<PluginState> {
        Self::ALL.into_iter().find(|state| state.as_str() == name)
    }
}

/// Where a plugin runs (I1): chosen by the operator, never by the plugin.
/// No `Default`: the server runs plugins in process isolation unless told
/// otherwise, an embedder of the loader chooses for itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isolation {
    /// Inside the server process, the original's way and the fastest.
    InProcess,
    /// In a plugin host process of its own: a crash, hang or leak of the
    /// plugin cannot stop the server (I2-I5).
    Process,
}

impl Isolation {
    /// Both modes, for reading a name back.
    pub const ALL: [Isolation; 2] = [Isolation::InProcess, Isolation::Process];

    /// The name used in the config, on the command line and in results.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::InProcess => "inprocess",
            Isolation::Process => "process",
        }
    }

    /// The mode named `name` by [`Isolation::as_str`], if any.
    pub fn from_name(name: &str) -> Option<Isolation> {
        Self::ALL.into_iter().find(|mode| mode.as_str() == name)
    }
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `plugins.list`, `plugins.load` and `plugins.unload` report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// The plugin name: the file's stem (D1).
    pub name: String,
    /// The class `UCS_PLUGIN` names; empty if not known.
    pub class_name: String,
    /// Running, stopped or failed.
    pub state: PluginState,
    /// The last error with its traceback; empty if none.
    pub error: String,
    /// The plugin file.
    pub path: String,
    /// Where it runs, or would run once loaded (I1).
    pub isolation: Isolation,
    /// The process id of its plugin host while it has one.
    pub host_pid: Option<u32>,
    /// How many times its host was restarted after dying since it was last
    /// loaded by hand (I2).
    pub restarts: u32,
}

impl PluginInfo {
    /// The plugin info as an API result.
    pub fn to_value(&self) -> Value {
        Value::record([
            ("name", Value::from(self.name.as_str())),
            ("class_name", Value::from(self.class_name.as_str())),
            ("state", Value::from(self.state.as_str())),
            ("error", Value::from(self.error.as_str())),
            ("path", Value::from(self.path.as_str())),
            ("isolation", Value::from(self.isolation.as_str())),
            (
                "host_pid",
                self.host_pid
                    .map_or(Value::Null, |pid| Value::Int(i64::from(pid))),
            ),
            ("restarts", Value::Int(i64::from(self.restarts))),
        ])
    }
}

/// A plugin name that is safe to turn into a file name (D1): a Python
/// identifier, so no path can ever leave the plugins directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PluginName(String);

impl PluginName {
    /// Accepts `example` or `example.py`; refuses anything that is not an
    /// identifier with an invalid-input error. An identifier is what Python's
    /// `str.isidentifier()` accepts, Unicode included (`příklad`): an
    /// underscore or XID_Start character, then XID_Continue characters, none
    /// of which is a path separator, a dot or NUL.
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let stem = raw.strip_suffix(".py").unwrap_or(raw);
        let mut chars = stem.chars();
        let valid = chars
            .next()
            .is_some_and(|first| first == '_' || unicode_ident::is_xid_start(first))
            && chars.all(unicode_ident::is_xid_continue);
        if valid {
            Ok(PluginName(stem.to_owned()))
        } else {
            Err(ApiError::field(
                "plugin_name",
                format!(
                    "{} is not a plugin name: use the file's stem, a Python identifier",
                    ucs_core::echoed(raw)
                ),
            ))
        }
    }

    /// The plugin a file of the plugins directory is, by its name alone: the
    /// one P1/D1 file-name filter, shared by the start-up scan, `ucs serve
    /// --watch` and `ucs plugin check`. Only `*.py` files other than
    /// `__init__.py` and dotfiles are plugin files (P1); their stem must be a
    /// Python identifier (D1).
    pub fn from_file_name(file_name: &str) -> Result<PluginName, NotAPluginFile> {
        let stem = file_name
            .strip_suffix(".py")
            .filter(|_| file_name != "__init__.py" && !file_name.starts_with('.'))
            .ok_or(NotAPluginFile::NotPluginFile)?;
        // `parse` would strip a second `.py` (`x.py.py`): a stem with a dot
        // is not an identifier, so refuse it here.
        if stem.contains('.') {
            return Err(NotAPluginFile::NotAnIdentifier);
        }
        PluginName::parse(stem).map_err(|_| NotAPluginFile::NotAnIdentifier)
    }

    /// The name, which is also the module name and the file stem.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PluginName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a file of the plugins directory is not a plugin, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAPluginFile {
    /// Not `*.py`, or `__init__.py`, or a dotfile (an editor's temporary
    /// file such as `.#x.py`): the server never loads it (P1).
    NotPluginFile,
    /// A `*.py` file whose stem is not a Python identifier (`my-plugin.py`):
    /// it would not import as a module, so the server skips it (D1).
    NotAnIdentifier,
}

/// Loads and unloads plugins at runtime; the loader implements it.
pub trait PluginControl: Send + Sync {
    /// Every plugin known: loaded, failed or found in the directory.
    fn list(&self) -> Vec<PluginInfo>;
    /// Loads the plugin, or stops and reloads it if it is loaded (P6).
    fn load(&self, name: &PluginName) -> Result<PluginInfo, ApiError>;
    /// Stops and unloads the plugin (P6).
    fn unload(&self, name: &PluginName) -> Result<PluginInfo, ApiError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn d1_plugin_names_are_identifiers() {
        assert_eq!(PluginName::parse("example").unwrap().as_str(), "example");
        assert_eq!(PluginName::parse("example.py").unwrap().as_str(), "example");
        assert_eq!(PluginName::parse("_x9").unwrap().as_str(), "_x9");
        // Any Python identifier, not only ASCII ones (issue 15 item 16).
        assert_eq!(PluginName::parse("é").unwrap().as_str(), "é");
        for bad in [
            "",
            "../etc/passwd",
            "a/b",
            "..",
            "9lives",
            "a-b",
            "a.b",
            "a b",
            ".py",
            "²",
            "x\u{200b}",
        ] {
            assert!(
                matches!(PluginName::parse(bad), Err(ApiError::InvalidInput(_))),
                "{bad:?} must be refused"
            );
        }
    }

    #[test]
    fn p1_d1_one_filter_says_which_files_are_plugins() {
        let file = |name: &str| PluginName::from_file_name(name).map(|n| n.to_string());
        assert_eq!(file("example.py").as_deref(), Ok("example"));
        assert_eq!(file("_x9.py").as_deref(), Ok("_x9"));
        for skipped in [
            "__init__.py",
            ".example.py",
            ".#example.py",
            "example.py~",
            "example.py.swp",
            "example.py.tmp",
            "example",
            "4913",
            "__pycache__",
            ".py",
        ] {
            assert_eq!(
                file(skipped),
                Err(NotAPluginFile::NotPluginFile),
                "{skipped}"
            );
        }
        for misnamed in ["my-plugin.py", "x.py.py", "9lives.py", "a b.py"] {
            assert_eq!(
                file(misnamed),
                Err(NotAPluginFile::NotAnIdentifier),
                "{misnamed}"
            );
        }
    }

    #[test]
    fn plugin_state_names_read_back() {
        for state in PluginState::ALL {
            assert_eq!(PluginState::from_name(state.as_str()), Some(state));
        }
        assert_eq!(PluginState::from_name("RUNNING"), None);
    }
}
