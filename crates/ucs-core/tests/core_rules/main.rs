//! Integration tests of `ucs-core`, one module per SPEC section, each test
//! named after the rule id it proves. Rust closures stand in for Python.
//!
//! One test binary with modules instead of one binary per file: it links
//! once, which matters on a two-core CI machine.

mod concurrency;
mod events;
mod fixtures;
mod shared_data;
mod status_hook;
mod storage;
