//! Supervision primitives for plugin hosts, pure Rust: when to restart
//! ([`RestartIntensity`], after OTP's supervisors), what a child died of
//! ([`ExitCause`]), and starting a child that is limited, linked and tied to
//! its parent ([`CommandExt::spawn_linked`], [`inherited_link`]).
//!
//! The supervisor loop itself (wait for the child or the link to close, ask
//! [`RestartIntensity::on_exit`], sleep, respawn) belongs to the server: it
//! knows what a restart means for a plugin.

mod exit;
mod intensity;
mod spawn;

pub use exit::{ExitCause, Termination};
pub use intensity::{RestartDecision, RestartIntensity, RestartPolicy};
pub use spawn::{ChildLimits, CommandExt, LINK_FD_ENV, LinkedChild, MemoryLimit, inherited_link};
