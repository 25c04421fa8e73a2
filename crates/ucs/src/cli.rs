//! The command line, as clap reads it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The default address of `ucs serve` and of the client (SPEC section 9).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Where the client connects unless `--server` says otherwise.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";
/// The production plugins directory (SPEC P1).
pub const DEFAULT_PLUGINS_DIR: &str = "/opt/ucs/server/plugins";

/// UCS, a contact-centre server with Python plugins, and its command-line
/// client.
#[derive(Debug, Parser)]
#[command(name = "ucs", version, propagate_version = true)]
pub struct Cli {
    /// How the client subcommands reach the server and authenticate.
    #[command(flatten)]
    pub client: ClientArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options of every client subcommand.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Client options")]
pub struct ClientArgs {
    /// The server to talk to.
    #[arg(long, global = true, value_name = "URL", env = "UCS_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
    /// The session id from `ucs login`.
    #[arg(long, global = true, env = "UCS_SID", hide_env_values = true)]
    pub sid: Option<String>,
    /// Log in as this user for this one command (and log out after it);
    /// takes precedence over --sid.
    #[arg(long, global = true, value_name = "USERNAME")]
    pub user: Option<String>,
    /// The password for --user.
    #[arg(long, global = true)]
    pub password: Option<String>,
    /// Print JSON instead of human-readable text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    ///
    /// User 1, `admin`, gets the password in UCS_ADMIN_PASSWORD, or a random
    /// one printed once to stderr. SIGTERM or SIGINT stops serving, stops
    /// every plugin in reverse load order within a deadline, and exits 0.
    Serve(ServeArgs),
    /// Log in with --user and --password and print the session id.
    ///
    /// For example: `export UCS_SID=$(ucs login --user admin --password ...)`.
    Login,
    /// End the session given by --sid or UCS_SID.
    Logout,
    /// Load, unload and list plugins (needs a superuser).
    Plugins {
        /// What to do with plugins.
        #[command(subcommand)]
        command: PluginsCommand,
    },
    /// Call any API method by its dotted name, e.g. `ucs call agents.list`.
    Call {
        /// The method, e.g. `config.users.get`.
        method: String,
        /// The JSON array of the parameters after sid, e.g. `[2, 1, ""]`.
        args_json: Option<String>,
    },
    /// Stream events as they happen until interrupted.
    Events {
        /// Event names, e.g. `agent.status shared.data`; none means all.
        names: Vec<String>,
    },
    /// Write the type stubs of the plugin modules and the `ucs` object
    /// (for editors and mypy) into a directory.
    Stubs {
        /// The directory, created if missing; existing stubs are replaced.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Work on plugin files locally, without a server.
    Plugin {
        /// What to do with plugin files.
        #[command(subcommand)]
        command: PluginCommand,
    },
}

/// `ucs plugin ...`: local tools for plugin authors.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Run each file through load, start and stop in a throwaway in-process
    /// server (no network, nothing stored) and report what went wrong.
    ///
    /// Reports whether UCS_PLUGIN names a class, whether the constructor,
    /// start and stop ran, what the plugin registered and what stop left
    /// registered, whether a Thread plugin ended, and a start that blocks.
    /// Exits 0 if every file is clean, 1 with findings, 2 on usage errors.
    Check {
        /// The plugin files, e.g. `plugins/example.py`.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Seconds after which a start() that has not returned is reported
        /// as blocking.
        #[arg(long, value_name = "SECS", default_value_t = 2.0)]
        start_timeout: f64,
        /// Seconds stop() may take, and again a Thread plugin may take to
        /// end after it (the server's own defaults).
        #[arg(long, value_name = "SECS", default_value_t = 5.0)]
        stop_timeout: f64,
    },
}

/// `ucs plugins ...`.
#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// List every plugin: loaded, failed or found in the directory.
    List,
    /// Load a plugin, or reload it from its file if it is loaded.
    Load {
        /// The plugin name: the file's stem, e.g. `example`.
        name: String,
    },
    /// Stop and unload a plugin.
    Unload {
        /// The plugin name: the file's stem, e.g. `example`.
        name: String,
    },
}

/// `ucs serve ...`. Flags override the same keys of the --config file.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// The address to listen on [default: 127.0.0.1:50051].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// The plugins directory [default: /opt/ucs/server/plugins].
    #[arg(long, value_name = "DIR")]
    pub plugins_dir: Option<PathBuf>,
    /// The data directory, created if missing: users and shared data live in
    /// DIR/ucs.db (SQLite, WAL). Agent statuses and sessions are not kept:
    /// after a restart every agent is OFFLINE and everyone logs in again.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// A TOML file with any of the keys `listen`, `plugins_dir`, `data_dir`;
    /// relative paths in it are relative to the file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Also create the agents alice, bob and carol, each with the password
    /// `password1`, for trying UCS out. Never use this in production.
    #[arg(long)]
    pub demo: bool,
    /// Log JSON lines instead of text (the level comes from RUST_LOG,
    /// default info).
    #[arg(long)]
    pub log_json: bool,
    /// Reload a plugin when its file is saved, load new plugin files as
    /// they appear and unload a plugin whose file is deleted; for plugin
    /// development.
    #[arg(long)]
    pub watch: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn client_flags_work_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "ucs",
            "plugins",
            "load",
            "example",
            "--user",
            "admin",
            "--password",
            "pw",
            "--json",
        ])
        .unwrap();
        assert_eq!(cli.client.user.as_deref(), Some("admin"));
        assert!(cli.client.json);
        assert!(matches!(
            cli.command,
            Command::Plugins {
                command: PluginsCommand::Load { name }
            } if name == "example"
        ));
    }
}
