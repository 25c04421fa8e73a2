//! The server's stand-ins for a process-isolated plugin's callables: one
//! [`Registrable`] per registration kind, registered in the very slots an
//! in-process adapter would be (issue 12's one registry), so the core and
//! the API cannot tell them apart either.
//!
//! Each call crosses the link under the plugin's call deadline (I3). A host
//! past it is killed; a host that is gone fails the call. Either way the
//! caller gets what H6, S4 and D5 say for an unexpected exception, and a
//! middleware's caller gets INTERNAL. A plugin at its bound of calls
//! (the bulkhead, [`Metered::run`]) is not called at all: its middleware's
//! caller gets RESOURCE_EXHAUSTED, its hooks and callbacks are passed over.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use quanta::Instant;
use ucs_api::{ApiError, Bypass, CallOutcome, Metered, Middleware, Next, RegistrationMetrics};
use ucs_core::{
    Agent, AgentStatus, Event, EventCallback, PluginFailure, Registrable, SharedDataHook,
    SharedVerdict, StatusHook, StatusVerdict, Value,
};
use ucs_link::LinkError;

use crate::hosted::Remote;
use crate::wire::{self, HostRegistration, HostReply, ToHost, WireAgent, WireEvent, WireValue};

/// What every proxy has: the host, the number of the callable there, its
/// description and its numbers.
pub(crate) struct Proxy {
    /// The host's link and state.
    pub(crate) remote: Arc<Remote>,
    /// The callable's number in the host.
    pub(crate) registration: HostRegistration,
    /// The callable, as the host described it (`Plugin.on_status()`).
    pub(crate) describe: String,
    /// Calls, failures, latency (the whole round trip) and the breaker.
    pub(crate) metrics: Arc<RegistrationMetrics>,
}

impl Proxy {
    /// A proxy for the host's callable `registration`.
    pub(crate) fn new(
        remote: Arc<Remote>,
        registration: HostRegistration,
        describe: String,
    ) -> Self {
        Proxy {
            remote,
            registration,
            describe,
            metrics: Arc::new(RegistrationMetrics::new()),
        }
    }

    /// Sends `request` and waits for the host under the call deadline.
    /// `Err` is the failure's text, for the log and the caller.
    fn invoke(&self, request: ToHost) -> Result<HostReply, String> {
        let deadline = self.remote.call_deadline();
        match self.remote.caller().call_with_deadline(request, deadline) {
            Ok(HostReply::Refused(why)) => Err(why),
            Ok(reply) => Ok(reply),
            Err(LinkError::DeadlineExceeded(waited)) => {
                let why = format!(
                    "{} did not return within its deadline of {waited:?}; its plugin host is killed",
                    self.describe
                );
                self.remote.kill(&why);
                Err(why)
            }
            Err(LinkError::PeerGone(reason)) => Err(format!(
                "{} could not run: {}",
                self.describe,
                self.remote.gone_because(&reason)
            )),
            Err(other) => Err(format!("{} could not run: {other}", self.describe)),
        }
    }

    /// Runs `call` through [`Metered::run`], the path an in-process
    /// adapter takes too, timing the whole round trip minus `excluded`.
    fn measured<T>(
        &self,
        bypass: impl FnOnce(Bypass) -> T,
        call: impl FnOnce() -> (T, CallOutcome, Duration),
    ) -> T {
        let policy = self.remote.policy();
        let metered = Metered {
            owner: self.remote.owner(),
            describe: &self.describe,
            metrics: &self.metrics,
            policy: &policy,
        };
        metered.run(bypass, |_started| call())
    }

    /// A reply of the wrong kind: both ends are one build, so a bug.
    fn mismatch(&self, reply: &HostReply) -> String {
        format!(
            "{}: unexpected reply from its plugin host: {reply:?}",
            self.describe
        )
    }
}

/// Implements [`Registrable`] for a proxy type wrapping [`Proxy`] as `.0`.
macro_rules! registrable {
    ($proxy:ty) => {
        impl Registrable for $proxy {
            fn describe(&self) -> String {
                self.0.describe.clone()
            }

            fn as_any(&self) -> &dyn Any {
                self
            }

            fn metrics(&self) -> Option<Arc<RegistrationMetrics>> {
                Some(Arc::clone(&self.0.metrics))
            }
        }
    };
}

/// The status hook of a process-isolated plugin (H2-H6).
pub(crate) struct RemoteStatusHook(pub(crate) Proxy);
registrable!(RemoteStatusHook);

impl StatusHook for RemoteStatusHook {
    fn decide(&self, before: &Agent, status: AgentStatus, reason: &str) -> StatusVerdict {
        let proxy = &self.0;
        proxy.measured(
            |_| StatusVerdict::LetThrough,
            || {
                let request = ToHost::StatusHook {
                    registration: proxy.registration,
                    agent: WireAgent::from(before),
                    status: status.code(),
                    reason: reason.to_owned(),
                };
                let verdict = match proxy.invoke(request) {
                    Ok(HostReply::Status(verdict)) => StatusVerdict::from(verdict),
                    Ok(HostReply::Unregistered) => StatusVerdict::LetThrough,
                    Ok(other) => StatusVerdict::Failed(PluginFailure::new(proxy.mismatch(&other))),
                    Err(why) => StatusVerdict::Failed(PluginFailure::new(why)),
                };
                let outcome = match verdict {
                    StatusVerdict::Failed(_) => CallOutcome::Failed,
                    _ => CallOutcome::Ok,
                };
                (verdict, outcome, Duration::ZERO)
            },
        )
    }
}

/// A shared-data hook of a process-isolated plugin (S2-S4).
pub(crate) struct RemoteSharedHook(pub(crate) Proxy);
registrable!(RemoteSharedHook);

impl SharedDataHook for RemoteSharedHook {
    fn before_change(&self, identificator: &str, old: &Value, new: &Value) -> SharedVerdict {
        let proxy = &self.0;
        proxy.measured(
            |_| SharedVerdict::Store(new.clone()),
            || {
                let request = ToHost::SharedHook {
                    registration: proxy.registration,
                    identificator: identificator.to_owned(),
                    old: WireValue::from(old),
                    new: WireValue::from(new),
                };
                let verdict = match proxy.invoke(request) {
                    Ok(HostReply::Shared(verdict)) => SharedVerdict::from(verdict),
                    Ok(HostReply::Unregistered) => SharedVerdict::Store(new.clone()),
                    Ok(other) => SharedVerdict::Failed(PluginFailure::new(proxy.mismatch(&other))),
                    Err(why) => SharedVerdict::Failed(PluginFailure::new(why)),
                };
                let outcome = match verdict {
                    SharedVerdict::Failed(_) => CallOutcome::Failed,
                    _ => CallOutcome::Ok,
                };
                (verdict, outcome, Duration::ZERO)
            },
        )
    }
}

/// An event callback of a process-isolated plugin (E2, D5).
pub(crate) struct RemoteCallback(pub(crate) Proxy);
registrable!(RemoteCallback);

impl EventCallback for RemoteCallback {
    fn on_event(&self, event: &Event) -> Result<(), PluginFailure> {
        let proxy = &self.0;
        proxy.measured(
            |_| Ok(()),
            || {
                let request = ToHost::Event {
                    registration: proxy.registration,
                    event: WireEvent::from(event),
                };
                let result = match proxy.invoke(request) {
                    Ok(HostReply::Event(None) | HostReply::Unregistered) => Ok(()),
                    Ok(HostReply::Event(Some(failure))) => Err(PluginFailure::new(failure)),
                    Ok(other) => Err(PluginFailure::new(proxy.mismatch(&other))),
                    Err(why) => Err(PluginFailure::new(why)),
                };
                let outcome = if result.is_ok() {
                    CallOutcome::Ok
                } else {
                    CallOutcome::Failed
                };
                (result, outcome, Duration::ZERO)
            },
        )
    }
}

/// A middleware of a process-isolated plugin (M2, M3): its `handler`
/// calls back with the chain's number, which the server keeps while the
/// call runs.
pub(crate) struct RemoteMiddleware(pub(crate) Proxy);
registrable!(RemoteMiddleware);

impl Middleware for RemoteMiddleware {
    fn call(&self, next: &Next, args: Vec<Value>) -> Result<Value, ApiError> {
        let proxy = &self.0;
        proxy.measured(
            |bypass| {
                ucs_api::bypassed_middleware(bypass, next.method_name(), || next.call(args.clone()))
            },
            || {
                let chain = proxy.remote.open_chain(next.clone());
                let request = ToHost::Middleware {
                    registration: proxy.registration,
                    chain: chain.number(),
                    method: next.method_name().to_owned(),
                    args: wire::wire_values(&args),
                };
                let reply = proxy.invoke(request);
                let mut excluded = chain.close();
                let (result, outcome) = match reply {
                    Ok(HostReply::Middleware(Ok(value))) => (Ok(value.into()), CallOutcome::Ok),
                    Ok(HostReply::Unregistered) => {
                        let started = Instant::now();
                        let result = next.call(args.clone());
                        excluded += started.elapsed();
                        (result, CallOutcome::Ok)
                    }
                    // M3: the error classes reach the caller as they are;
                    // the host already turned anything else into INTERNAL
                    // and logged its traceback.
                    Ok(HostReply::Middleware(Err(error))) => {
                        let error = ApiError::from(error);
                        let outcome = match error {
                            ApiError::Internal(_) => CallOutcome::Failed,
                            _ => CallOutcome::Ok,
                        };
                        (Err(error), outcome)
                    }
                    Ok(other) => (
                        Err(self.failed(&proxy.mismatch(&other))),
                        CallOutcome::Failed,
                    ),
                    Err(why) => (Err(self.failed(&why)), CallOutcome::Failed),
                };
                (result, outcome, excluded)
            },
        )
    }
}

impl RemoteMiddleware {
    /// Logs why the middleware could not answer and gives the caller the
    /// INTERNAL an unexpected exception gives (M3).
    fn failed(&self, why: &str) -> ApiError {
        let owner = self.0.remote.owner();
        tracing::error!(plugin = %owner, "middleware {why}");
        ApiError::Internal(format!("middleware of plugin '{owner}' failed"))
    }
}
