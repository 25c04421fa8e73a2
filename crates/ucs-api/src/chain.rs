//! Middleware chains (SPEC M1-M3, D2).

use std::sync::Arc;

use ucs_core::registration::{Registered, Registrable};
use ucs_core::{User, Value};

use crate::error::ApiError;
use crate::metrics::Bypass;
use crate::{Api, Method};

/// Wraps one API method (M2): gets the next handler and the call's
/// arguments `(caller, *params)` (D3), and returns the result.
pub trait Middleware: Registrable {
    /// Handles one call. May change `args`, call `next` zero or more times,
    /// change the result or fail.
    fn call(&self, next: &Next, args: Vec<Value>) -> Result<Value, ApiError>;
}

/// One registered middleware.
pub type MiddlewareRegistration = Registered<dyn Middleware>;

/// The rest of a chain: the next middleware, or the built-in method.
///
/// Owned and `'static` so a Python `handler` object can hold it.
#[derive(Clone)]
pub struct Next {
    pub(crate) api: Api,
    pub(crate) method: Arc<Method>,
    /// A snapshot of the chain taken when the call started, so a middleware
    /// added or removed meanwhile does not change a call in flight.
    pub(crate) chain: Arc<[MiddlewareRegistration]>,
    pub(crate) index: usize,
    /// The session's user; permission checks use it, not `args[0]` (D3).
    pub(crate) caller: Arc<User>,
}

impl Next {
    /// Runs the rest of the chain with `args` = `(caller, *params)`.
    pub fn call(&self, args: Vec<Value>) -> Result<Value, ApiError> {
        match self.chain.get(self.index) {
            None => {
                let params = args.get(1..).unwrap_or_default();
                (self.method.handler)(&self.api, &self.caller, params)
            }
            Some(registration) => {
                let next = Next {
                    index: self.index + 1,
                    ..self.clone()
                };
                registration.target.call(&next, args)
            }
        }
    }

    /// The dotted name of the method this chain belongs to.
    pub fn method_name(&self) -> &'static str {
        self.method.name
    }
}

/// What a middleware that did not run does to its call: an open breaker
/// passes it over (the next handler runs as if it were not registered); a
/// saturated plugin refuses the call with [`ApiError::Busy`], since passing
/// over a middleware that checks permissions would let the call through
/// unchecked (issue 15 item 5). Both isolation modes' adapters use it.
pub fn bypassed_middleware(
    bypass: Bypass,
    method: &str,
    proceed: impl FnOnce() -> Result<Value, ApiError>,
) -> Result<Value, ApiError> {
    match bypass {
        Bypass::BreakerOpen => proceed(),
        Bypass::Saturated(saturated) => Err(ApiError::Busy(format!(
            "a middleware for {method} has {} calls running at once, its bound; try again later",
            saturated.limit
        ))),
    }
}
