//! The plugin host as a binary of its own, for this crate's tests: they
//! run the rule suite with process-isolated plugins (SPEC I1) and cannot
//! reach the `ucs` binary, whose hidden `plugin-host` subcommand is the
//! same function.
fn main() -> std::process::ExitCode {
    ucs_host::run_plugin_host()
}
