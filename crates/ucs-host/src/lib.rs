//! Process isolation (SPEC section 10): a plugin runs in a child process of
//! its own, a *plugin host*, and neither it nor the server can tell it from
//! an in-process plugin (I1).
//!
//! The host (`child`) is the `ucs` binary run as `ucs plugin-host`: it
//! embeds CPython through `ucs-pybridge` and gives the plugin the same
//! `ucs` object, on a port that sends each step over the link. The server
//! side (`hosted`) starts the host, serves its plugin's calls into the
//! core and API, and registers a proxy (`proxy`) for each callable the
//! plugin registers, in the same one registry in-process adapters use. A
//! call into the host has a deadline (I3); a host past it is killed, and a
//! host that dies for any reason has its registrations removed at once (I2);
//! the loader restarts it.
//!
//! # Layout
//! - `wire`: the messages both ways and the core's types as they cross.
//! - `child`: the plugin host process ([`run_plugin_host`]).
//! - `hosted`: the server's side of one host ([`HostedPlugin`]).
//! - `proxy`: the server's stand-ins for the plugin's callables.
//! - `error`: [`HostError`].

mod child;
mod error;
mod hosted;
mod proxy;
pub mod wire;

pub use child::{HOST_LOG_ENV, HostPort, run_plugin_host};
pub use error::HostError;
pub use hosted::{
    DEFAULT_LOAD_DEADLINE, DEFAULT_MEMORY_LIMIT, DEFAULT_PLUGIN_THREAD_NICE, HostExit,
    HostSettings, HostedLoad, HostedPlugin,
};
