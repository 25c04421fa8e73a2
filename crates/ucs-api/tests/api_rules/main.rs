//! Integration tests of `ucs-api`, each named after the SPEC rule it proves.
//! Rust closures stand in for Python middleware, hooks and the plugin loader.
//!
//! One test binary with modules, so it links once on the two-core CI.

mod builtins;
mod fixtures;
mod middleware;
mod plugins;
