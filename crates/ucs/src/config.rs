//! The settings of `ucs serve`: flags over the `--config` TOML file over
//! the defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use ucs_grpc::TlsIdentity;

use crate::cli::{DEFAULT_LISTEN, DEFAULT_PLUGINS_DIR, ServeArgs};

/// The `--config` file: the same keys as the flags, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    /// As `--listen`.
    listen: Option<String>,
    /// As `--plugins-dir`; relative to the file's directory.
    plugins_dir: Option<PathBuf>,
    /// As `--data-dir`; relative to the file's directory.
    data_dir: Option<PathBuf>,
}

/// What `ucs serve` runs with, after flags, file and defaults are merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeSettings {
    /// The address to listen on, e.g. `127.0.0.1:50051`.
    pub listen: String,
    /// The plugins directory (SPEC P1).
    pub plugins_dir: PathBuf,
    /// The data directory; created, not yet used.
    pub data_dir: PathBuf,
    /// Whether to create the demo agents.
    pub demo: bool,
    /// How long a session may stay unused (`--session-idle-timeout`).
    pub session_idle_timeout: Duration,
    /// The certificate and key read from `--tls-cert` and `--tls-key`; none
    /// means plaintext.
    pub tls: Option<TlsIdentity>,
}

impl ServeSettings {
    /// Merges `args` over the file `args.config` names, if any, over the
    /// defaults. The data directory has no default: it must be given.
    pub fn resolve(args: &ServeArgs) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(path) => read_config_file(path)?,
            None => ConfigFile::default(),
        };
        let Some(data_dir) = args.data_dir.clone().or(file.data_dir) else {
            bail!("no data directory: pass --data-dir DIR or set data_dir in the --config file");
        };
        Ok(ServeSettings {
            listen: args
                .listen
                .clone()
                .or(file.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.to_owned()),
            plugins_dir: args
                .plugins_dir
                .clone()
                .or(file.plugins_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_PLUGINS_DIR)),
            data_dir,
            demo: args.demo,
            session_idle_timeout: args
                .session_idle_timeout
                .unwrap_or(ucs_core::sessions::DEFAULT_SESSION_IDLE_TIMEOUT),
            tls: read_tls(args.tls_cert.as_deref(), args.tls_key.as_deref())?,
        })
    }
}

/// Reads the TLS files; both or neither must be given (clap checks that,
/// this re-checks for callers that build [`ServeArgs`] by hand).
fn read_tls(cert: Option<&Path>, key: Option<&Path>) -> anyhow::Result<Option<TlsIdentity>> {
    let read = |path: &Path, what: &str| {
        std::fs::read(path).with_context(|| format!("cannot read TLS {what} {}", path.display()))
    };
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(TlsIdentity {
            cert_pem: read(cert, "certificate")?,
            key_pem: read(key, "key")?,
        })),
        _ => bail!("--tls-cert and --tls-key go together"),
    }
}

fn read_config_file(path: &Path) -> anyhow::Result<ConfigFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let mut file: ConfigFile =
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))?;
    // Paths in a config file mean what they say wherever the server starts.
    let base = path.parent().unwrap_or(Path::new(""));
    file.plugins_dir = file.plugins_dir.map(|dir| base.join(dir));
    file.data_dir = file.data_dir.map(|dir| base.join(dir));
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ServeArgs {
        ServeArgs::default()
    }

    #[test]
    fn defaults_apply_but_the_data_dir_is_required() {
        let err = ServeSettings::resolve(&args()).unwrap_err();
        assert!(err.to_string().contains("--data-dir"));
        let settings = ServeSettings::resolve(&ServeArgs {
            data_dir: Some("/tmp/d".into()),
            ..args()
        })
        .unwrap();
        assert_eq!(settings.listen, DEFAULT_LISTEN);
        assert_eq!(settings.plugins_dir, PathBuf::from(DEFAULT_PLUGINS_DIR));
    }

    #[test]
    fn flags_override_the_file_and_file_paths_are_relative_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ucs.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:6000\"\nplugins_dir = \"plugins\"\ndata_dir = \"/var/lib/ucs\"\n",
        )
        .unwrap();
        let from_file = ServeSettings::resolve(&ServeArgs {
            config: Some(path.clone()),
            ..args()
        })
        .unwrap();
        assert_eq!(from_file.listen, "0.0.0.0:6000");
        assert_eq!(from_file.plugins_dir, dir.path().join("plugins"));
        assert_eq!(from_file.data_dir, PathBuf::from("/var/lib/ucs"));

        let overridden = ServeSettings::resolve(&ServeArgs {
            config: Some(path),
            listen: Some("127.0.0.1:7000".into()),
            ..args()
        })
        .unwrap();
        assert_eq!(overridden.listen, "127.0.0.1:7000");
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ucs.toml");
        std::fs::write(&path, "lisen = \"x\"\n").unwrap();
        let err = ServeSettings::resolve(&ServeArgs {
            config: Some(path),
            data_dir: Some("/tmp/d".into()),
            ..args()
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("lisen"), "{err:#}");
    }
}
