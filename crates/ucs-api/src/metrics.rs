//! What the API reports of plugin registrations: the `registrations` list
//! of a plugin info (issue 8). The numbers themselves live with each
//! registration in the core's registry ([`ucs_core::metrics`]).

pub use ucs_core::metrics::{
    Bypass, CallOutcome, HookPolicy, Metered, MetricsSnapshot, Recorded, RegistrationMetrics,
};
use ucs_core::{RegistrationInfo, Value};

/// `registrations` as the `registrations` list of a plugin info.
pub(crate) fn registrations_value(registrations: Vec<RegistrationInfo>) -> Value {
    let to_int = |n: u64| Value::Int(i64::try_from(n).unwrap_or(i64::MAX));
    Value::List(
        registrations
            .into_iter()
            .map(|registration| {
                let numbers = registration.metrics.snapshot();
                Value::record([
                    ("kind", Value::from(registration.kind.label())),
                    ("target", Value::from(registration.target)),
                    ("callable", Value::from(&*registration.callable)),
                    ("calls", to_int(numbers.calls)),
                    ("errors", to_int(numbers.errors)),
                    ("overruns", to_int(numbers.overruns)),
                    ("skipped", to_int(numbers.skipped)),
                    ("refused", to_int(numbers.refused)),
                    ("total_ns", to_int(numbers.total_ns)),
                    ("p50_ns", to_int(numbers.p50_ns)),
                    ("p99_ns", to_int(numbers.p99_ns)),
                    ("breaker_open", Value::Bool(numbers.breaker_open)),
                ])
            })
            .collect(),
    )
}
