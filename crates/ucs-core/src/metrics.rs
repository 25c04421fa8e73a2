//! Per-registration metrics, the hook time budget and the circuit breaker
//! (issue 8). Every [`crate::registration::Registered`] carries one.
//!
//! Every hook, callback and middleware a plugin registers gets one
//! [`RegistrationMetrics`]: calls, errors, budget overruns, total time and a
//! latency histogram for p50 and p99, all lock-free atomics so measuring
//! costs a few nanoseconds on a path that runs Python anyway. After
//! [`HookPolicy::breaker_threshold`] consecutive failures or overruns the
//! registration's breaker opens and the adapter skips it as if it were not
//! registered; a reload registers afresh, which resets it.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// How long one hook, callback or middleware call may take, and how many bad
/// calls in a row open its breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookPolicy {
    /// A call over this is logged with the plugin, registration and time.
    pub budget: Duration,
    /// Consecutive failures or overruns that open the breaker; 0 never opens it.
    pub breaker_threshold: u32,
    /// How long one call may take at all (I3): far above the budget, short
    /// enough that an agent's status change never hangs for minutes.
    pub deadline: Duration,
}

impl Default for HookPolicy {
    fn default() -> Self {
        HookPolicy {
            budget: Duration::from_millis(50),
            breaker_threshold: 10,
            deadline: Duration::from_secs(5),
        }
    }
}

/// Latency buckets: bucket `i` holds calls that took less than `2^(i+10)` ns
/// (1 µs, 2 µs, ... about 9 minutes); the last one holds the rest.
const BUCKETS: usize = 40;

/// What one call of a registration did, as its adapter saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// It did its job (including deliberately refusing, e.g. a veto).
    Ok,
    /// It failed: an unexpected exception or an unusable return value.
    Failed,
}

/// The measurements of one registration.
pub struct RegistrationMetrics {
    errors: AtomicU64,
    overruns: AtomicU64,
    total_ns: AtomicU64,
    histogram: [AtomicU64; BUCKETS],
    /// Failures or overruns since the last good call.
    consecutive_bad: AtomicU32,
    breaker_open: AtomicBool,
    /// Calls skipped while the breaker was open.
    skipped: AtomicU64,
}

impl Default for RegistrationMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl RegistrationMetrics {
    /// Zeroed numbers and a closed breaker.
    pub fn new() -> Self {
        RegistrationMetrics {
            errors: AtomicU64::new(0),
            overruns: AtomicU64::new(0),
            total_ns: AtomicU64::new(0),
            histogram: std::array::from_fn(|_| AtomicU64::new(0)),
            consecutive_bad: AtomicU32::new(0),
            breaker_open: AtomicBool::new(false),
            skipped: AtomicU64::new(0),
        }
    }

    /// Whether the breaker is open; an open breaker counts the skipped call.
    pub fn skip(&self) -> bool {
        let open = self.breaker_open.load(Ordering::Relaxed);
        if open {
            self.skipped.fetch_add(1, Ordering::Relaxed);
        }
        open
    }

    /// Records one call; returns what the adapter must log.
    pub fn record(&self, elapsed: Duration, outcome: CallOutcome, policy: &HookPolicy) -> Recorded {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        // The call count is the histogram's sum: one atomic add fewer per
        // call, on a path whose whole cost must stay a few percent.
        self.total_ns.fetch_add(nanos, Ordering::Relaxed);
        self.histogram[bucket_of(nanos)].fetch_add(1, Ordering::Relaxed);
        let over_budget = elapsed > policy.budget;
        if over_budget {
            self.overruns.fetch_add(1, Ordering::Relaxed);
        }
        let failed = outcome == CallOutcome::Failed;
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        if !(failed || over_budget) {
            if self.consecutive_bad.load(Ordering::Relaxed) != 0 {
                self.consecutive_bad.store(0, Ordering::Relaxed);
            }
            return Recorded {
                over_budget,
                breaker_opened: false,
            };
        }
        let bad = self.consecutive_bad.fetch_add(1, Ordering::Relaxed) + 1;
        let breaker_opened = policy.breaker_threshold > 0
            && bad >= policy.breaker_threshold
            && !self.breaker_open.swap(true, Ordering::Relaxed);
        Recorded {
            over_budget,
            breaker_opened,
        }
    }

    /// A consistent-enough copy for reports.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let counts: Vec<u64> = self
            .histogram
            .iter()
            .map(|bucket| bucket.load(Ordering::Relaxed))
            .collect();
        MetricsSnapshot {
            calls: counts.iter().sum(),
            errors: self.errors.load(Ordering::Relaxed),
            overruns: self.overruns.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            total_ns: self.total_ns.load(Ordering::Relaxed),
            p50_ns: percentile(&counts, 50),
            p99_ns: percentile(&counts, 99),
            breaker_open: self.breaker_open.load(Ordering::Relaxed),
        }
    }
}

/// What [`RegistrationMetrics::record`] found worth logging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// The call took longer than the budget.
    pub over_budget: bool,
    /// This call opened the breaker.
    pub breaker_opened: bool,
}

fn bucket_of(nanos: u64) -> usize {
    // 2^10 ns = 1 µs is the first bucket's bound.
    let bits = u64::BITS - nanos.leading_zeros();
    (bits.saturating_sub(10) as usize).min(BUCKETS - 1)
}

/// The upper bound of the bucket holding the `pct`th percentile call.
fn percentile(counts: &[u64], pct: u64) -> u64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0;
    }
    let rank = (total * pct).div_ceil(100).max(1);
    let mut seen = 0;
    for (index, count) in counts.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return 1u64 << (index + 10).min(63);
        }
    }
    u64::MAX
}

/// The numbers of one registration at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetricsSnapshot {
    /// Calls that ran.
    pub calls: u64,
    /// Calls that failed.
    pub errors: u64,
    /// Calls over the time budget.
    pub overruns: u64,
    /// Calls skipped by the open breaker.
    pub skipped: u64,
    /// Time spent in all calls.
    pub total_ns: u64,
    /// Median call time (bucket upper bound).
    pub p50_ns: u64,
    /// 99th percentile call time (bucket upper bound).
    pub p99_ns: u64,
    /// Whether the breaker is open.
    pub breaker_open: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: HookPolicy = HookPolicy {
        budget: Duration::from_millis(50),
        breaker_threshold: 3,
        deadline: Duration::from_secs(5),
    };

    #[test]
    fn percentiles_come_from_the_histogram() {
        let metrics = RegistrationMetrics::new();
        for _ in 0..98 {
            metrics.record(Duration::from_micros(3), CallOutcome::Ok, &POLICY);
        }
        for _ in 0..2 {
            metrics.record(Duration::from_millis(20), CallOutcome::Ok, &POLICY);
        }
        let numbers = metrics.snapshot();
        assert_eq!(numbers.calls, 100);
        assert!(
            numbers.p50_ns >= 3_000 && numbers.p50_ns < 8_200,
            "{numbers:?}"
        );
        assert!(numbers.p99_ns >= 20_000_000, "{numbers:?}");
    }

    #[test]
    fn consecutive_failures_or_overruns_open_the_breaker_and_a_good_call_resets_the_count() {
        let metrics = RegistrationMetrics::new();
        let slow = Duration::from_millis(60);
        metrics.record(slow, CallOutcome::Ok, &POLICY);
        metrics.record(Duration::ZERO, CallOutcome::Failed, &POLICY);
        metrics.record(Duration::ZERO, CallOutcome::Ok, &POLICY);
        assert!(!metrics.skip(), "a good call in between resets the count");
        metrics.record(slow, CallOutcome::Ok, &POLICY);
        metrics.record(slow, CallOutcome::Ok, &POLICY);
        let third = metrics.record(slow, CallOutcome::Ok, &POLICY);
        assert_eq!(
            third,
            Recorded {
                over_budget: true,
                breaker_opened: true
            }
        );
        assert!(metrics.skip());
        let numbers = metrics.snapshot();
        assert_eq!(
            (numbers.overruns, numbers.errors, numbers.skipped),
            (4, 1, 1)
        );
        assert!(numbers.breaker_open);
    }
}
