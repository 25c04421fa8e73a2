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
    /// Import, constructor or `start` raised (L1); `error` says why.
    Failed,
}

impl PluginState {
    /// The lower-case name used in JSON results.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginState::Running => "running",
            PluginState::Stopped => "stopped",
            PluginState::Failed => "failed",
        }
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
        ])
    }
}

/// A plugin name that is safe to turn into a file name (D1): a Python
/// identifier, so no path can ever leave the plugins directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PluginName(String);

impl PluginName {
    /// Accepts `example` or `example.py`; refuses anything that is not an
    /// identifier with an invalid-input error.
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let stem = raw.strip_suffix(".py").unwrap_or(raw);
        let mut chars = stem.chars();
        let valid = chars
            .next()
            .is_some_and(|first| first == '_' || first.is_ascii_alphabetic())
            && chars.all(|c| c == '_' || c.is_ascii_alphanumeric());
        if valid {
            Ok(PluginName(stem.to_owned()))
        } else {
            Err(ApiError::field(
                "plugin_name",
                format!("'{raw}' is not a plugin name: use the file's stem, a Python identifier"),
            ))
        }
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
            "é",
        ] {
            assert!(
                matches!(PluginName::parse(bad), Err(ApiError::InvalidInput(_))),
                "{bad:?} must be refused"
            );
        }
    }
}
