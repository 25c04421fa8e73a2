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

use quanta::Instant;

use crate::bulkhead::Saturated;
use crate::registration::Owner;
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
    /// How many calls may be inside one plugin at once, over all its
    /// registrations (the bulkhead, issue 15 item 5); past it a call is
    /// refused at once. Well under the server's 512 blocking threads, so a
    /// few saturated plugins leave room for everything else.
    pub max_concurrent_calls: u32,
}

impl Default for HookPolicy {
    fn default() -> Self {
        HookPolicy {
            budget: Duration::from_millis(50),
            breaker_threshold: 10,
            deadline: Duration::from_secs(5),
            max_concurrent_calls: 64,
        }
    }
}

/// Latency buckets: bucket `i` holds calls that took less than `2^(i+10)` ns
/// (1 µs, 2 µs, ... about 9 minutes); the last one holds the rest.
pub const BUCKETS: usize = 40;

/// Call times in power-of-two buckets and their sum, lock-free: what a
/// registration's p50/p99 and the Prometheus histograms (issue 17 item 4)
/// are read from. Recording is two relaxed atomic adds.
pub struct LatencyHistogram {
    total_ns: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    /// No calls yet.
    pub fn new() -> Self {
        LatencyHistogram {
            total_ns: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Counts one call that took `elapsed`.
    pub fn record(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.total_ns.fetch_add(nanos, Ordering::Relaxed);
        self.buckets[bucket_of(nanos)].fetch_add(1, Ordering::Relaxed);
    }

    /// A copy of the counts; each is exact, the set as of about now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            total_ns: self.total_ns.load(Ordering::Relaxed),
            counts: std::array::from_fn(|index| self.buckets[index].load(Ordering::Relaxed)),
        }
    }
}

/// The counts of a [`LatencyHistogram`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Time spent in all calls.
    pub total_ns: u64,
    /// Calls per bucket (not cumulative); see [`HistogramSnapshot::bound_ns`].
    pub counts: [u64; BUCKETS],
}

impl Default for HistogramSnapshot {
    fn default() -> Self {
        HistogramSnapshot {
            total_ns: 0,
            counts: [0; BUCKETS],
        }
    }
}

impl HistogramSnapshot {
    /// How many calls were counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The exclusive upper bound of bucket `index` in nanoseconds; `None`
    /// for the last bucket, which holds everything longer.
    pub fn bound_ns(index: usize) -> Option<u64> {
        (index + 1 < BUCKETS).then(|| 1u64 << (index + 10))
    }

    /// The upper bound of the bucket holding the `pct`th percentile call,
    /// 0 with no calls.
    pub fn percentile_ns(&self, pct: u64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = (total * pct).div_ceil(100).max(1);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return 1u64 << (index + 10).min(63);
            }
        }
        u64::MAX
    }
}

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
    latency: LatencyHistogram,
    /// Failures or overruns since the last good call.
    consecutive_bad: AtomicU32,
    breaker_open: AtomicBool,
    /// Calls skipped while the breaker was open.
    skipped: AtomicU64,
    /// Calls refused because the plugin had its bound of calls running.
    refused: AtomicU64,
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
            latency: LatencyHistogram::new(),
            consecutive_bad: AtomicU32::new(0),
            breaker_open: AtomicBool::new(false),
            skipped: AtomicU64::new(0),
            refused: AtomicU64::new(0),
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
        // The call count is the histogram's sum: one atomic add fewer per
        // call, on a path whose whole cost must stay a few percent.
        self.latency.record(elapsed);
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
        let latency = self.latency.snapshot();
        MetricsSnapshot {
            calls: latency.count(),
            errors: self.errors.load(Ordering::Relaxed),
            overruns: self.overruns.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            total_ns: latency.total_ns,
            p50_ns: latency.percentile_ns(50),
            p99_ns: latency.percentile_ns(99),
            breaker_open: self.breaker_open.load(Ordering::Relaxed),
            latency,
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

/// Why a call into a plugin did not run; each adapter turns it into the
/// outcome its rule gives a failed call (H6, S4, D5), except that a
/// saturated middleware refuses the API call instead of being passed over
/// (it may be the one that checks permissions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bypass {
    /// The registration's breaker is open: as if it were not registered.
    BreakerOpen,
    /// The plugin has its bound of calls running.
    Saturated(Saturated),
}

/// One call into a plugin as every adapter makes it, in process and across
/// a plugin host's link: the breaker, the bulkhead, the timing and the log
/// lines that name the plugin, in one place so both modes say the same.
pub struct Metered<'a> {
    /// The plugin version called.
    pub owner: &'a Owner,
    /// The registration, as log lines name it, e.g. `Example.hook()`.
    pub describe: &'a str,
    /// Its numbers.
    pub metrics: &'a RegistrationMetrics,
    /// Its budget, breaker and bulkhead.
    pub policy: &'a HookPolicy,
}

impl Metered<'_> {
    /// Runs `call` (given its start, for a deadline) unless the breaker is
    /// open or the plugin saturated, then `bypass` stands in. `call` returns
    /// its result, outcome, and the time it spent back in the server (a
    /// middleware's inner handler), which is not the plugin's time.
    pub fn run<T>(
        &self,
        bypass: impl FnOnce(Bypass) -> T,
        call: impl FnOnce(Instant) -> (T, CallOutcome, Duration),
    ) -> T {
        if self.metrics.skip() {
            return bypass(Bypass::BreakerOpen);
        }
        let permit = match self.owner.calls().admit(self.policy.max_concurrent_calls) {
            Ok(permit) => permit,
            Err(saturated) => {
                self.metrics.refused.fetch_add(1, Ordering::Relaxed);
                if saturated.first {
                    tracing::warn!(
                        plugin = %self.owner,
                        "{} refused: the plugin has {} calls running at once, its bound; \
                         calls into it are refused until one returns",
                        self.describe,
                        saturated.limit
                    );
                }
                return bypass(Bypass::Saturated(saturated));
            }
        };
        let started = Instant::now();
        let (result, outcome, excluded) = call(started);
        let elapsed = started.elapsed().saturating_sub(excluded);
        if let Some(ended) = permit.release() {
            tracing::info!(
                plugin = %self.owner,
                "the plugin has room for calls again; {} were refused meanwhile",
                ended.refused
            );
        }
        let recorded = self.metrics.record(elapsed, outcome, self.policy);
        if recorded.over_budget {
            tracing::warn!(
                plugin = %self.owner,
                "{} took {elapsed:?}, over its budget of {:?}",
                self.describe,
                self.policy.budget
            );
        }
        if recorded.breaker_opened {
            tracing::error!(
                plugin = %self.owner,
                "{} failed or overran its budget {} times in a row: its breaker is open and it \
                 is skipped until the plugin is reloaded",
                self.describe,
                self.policy.breaker_threshold
            );
        }
        result
    }
}

fn bucket_of(nanos: u64) -> usize {
    // 2^10 ns = 1 µs is the first bucket's bound.
    let bits = u64::BITS - nanos.leading_zeros();
    (bits.saturating_sub(10) as usize).min(BUCKETS - 1)
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
    /// Calls refused because the plugin was saturated (the bulkhead).
    pub refused: u64,
    /// Time spent in all calls.
    pub total_ns: u64,
    /// Median call time (bucket upper bound).
    pub p50_ns: u64,
    /// 99th percentile call time (bucket upper bound).
    pub p99_ns: u64,
    /// Whether the breaker is open.
    pub breaker_open: bool,
    /// The call times behind `p50_ns` and `p99_ns`.
    pub latency: HistogramSnapshot,
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: HookPolicy = HookPolicy {
        budget: Duration::from_millis(50),
        breaker_threshold: 3,
        deadline: Duration::from_secs(5),
        max_concurrent_calls: 2,
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
        assert_eq!(numbers.latency.count(), 100);
        assert_eq!(numbers.total_ns, 98 * 3_000 + 2 * 20_000_000);
    }

    #[test]
    fn each_call_lands_under_the_first_bound_above_it() {
        let histogram = LatencyHistogram::new();
        for nanos in [0, 1_023, 1_024, 5_000, u64::MAX] {
            histogram.record(Duration::from_nanos(nanos));
        }
        let counts = histogram.snapshot().counts;
        assert_eq!(counts[0], 2, "below 1024 ns");
        assert_eq!(counts[1], 1, "1024 ns is not below the first bound");
        assert_eq!(counts[3], 1, "5 µs is below 8192 ns");
        assert_eq!(counts[BUCKETS - 1], 1, "the rest");
        assert_eq!(HistogramSnapshot::bound_ns(0), Some(1_024));
        assert_eq!(HistogramSnapshot::bound_ns(BUCKETS - 1), None);
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

    /// Issue 15 item 5: calls nested into one plugin share its bound; the
    /// one past it is bypassed as saturated, counted, and never runs.
    #[test]
    fn a_call_past_the_plugins_bound_is_bypassed_and_counted() {
        let owner = Owner::new("busy");
        let metrics = RegistrationMetrics::new();
        let metered = Metered {
            owner: &owner,
            describe: "Busy.hook()",
            metrics: &metrics,
            policy: &POLICY,
        };
        let ran = |_| ("ran", CallOutcome::Ok, Duration::ZERO);
        let innermost = metered.run(
            |_| unreachable!("the first call has room"),
            |_| {
                let inner = metered.run(
                    |_| unreachable!("the second call has room"),
                    |_| {
                        let third = metered.run(
                            |bypass| match bypass {
                                Bypass::Saturated(saturated) => {
                                    assert_eq!(saturated.limit, 2);
                                    "refused"
                                }
                                Bypass::BreakerOpen => "breaker",
                            },
                            ran,
                        );
                        (third, CallOutcome::Ok, Duration::ZERO)
                    },
                );
                (inner, CallOutcome::Ok, Duration::ZERO)
            },
        );
        assert_eq!(innermost, "refused");
        let numbers = metrics.snapshot();
        assert_eq!((numbers.calls, numbers.refused), (2, 1));
        assert_eq!(owner.calls().in_flight(), 0, "every place was given back");
        assert_eq!(metered.run(|_| "refused", ran), "ran", "room again");
    }
}
