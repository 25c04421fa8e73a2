//! Restart intensity, as in Erlang/OTP supervisors, with backoff.
//!
//! OTP allows at most `intensity` restarts within `period` seconds and gives
//! up past that; it restarts at once. A plugin host that dies at start would
//! then burn its whole allowance in milliseconds, so here each restart also
//! waits, doubling from `backoff_base` up to `backoff_cap`; a host that then
//! runs for `quiet_period` is considered healthy again and its next crash
//! waits `backoff_base` once more. The clock is a parameter (`now`), so the
//! policy is tested without sleeping.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The numbers of a restart policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// At most this many restarts within `window` (OTP's `intensity`); the
    /// exit after that many gives up. Zero means never restart.
    pub max_restarts: u32,
    /// The sliding window the restarts are counted in (OTP's `period`).
    pub window: Duration,
    /// The wait before the first restart, and after a quiet period.
    pub backoff_base: Duration,
    /// The longest wait: the wait doubles up to this.
    pub backoff_cap: Duration,
    /// A child that ran this long since its last restart crashed "fresh":
    /// its next wait starts again at `backoff_base`.
    pub quiet_period: Duration,
}

impl Default for RestartPolicy {
    /// Five restarts a minute, waiting 100 ms, 200 ms, 400 ms ... up to 10 s,
    /// back to 100 ms after a minute without a crash.
    fn default() -> Self {
        Self {
            max_restarts: 5,
            window: Duration::from_secs(60),
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(10),
            quiet_period: Duration::from_secs(60),
        }
    }
}

/// What to do about a child that exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartDecision {
    /// Start it again after waiting `after`.
    Restart {
        /// How long to wait first.
        after: Duration,
    },
    /// Leave it down: it restarted `restarts` times within `window` already.
    /// It stays down until [`RestartIntensity::reset`] (a load by hand).
    GiveUp {
        /// The restarts counted in the window.
        restarts: u32,
        /// The policy's window.
        window: Duration,
    },
}

/// Where the child is, for the intensity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Never restarted since `new` or `reset`.
    Fresh,
    /// Restarted; it runs (or will, after its wait) from `since`.
    Restarted {
        /// When the restarted child starts running: the decision time plus
        /// the wait.
        since: Instant,
    },
    /// Gave up; only `reset` brings it back.
    GaveUp,
}

/// The restart bookkeeping of one supervised child.
#[derive(Debug, Clone)]
pub struct RestartIntensity {
    /// The numbers.
    policy: RestartPolicy,
    /// When each restart within the window was decided, oldest first.
    restarts: VecDeque<Instant>,
    /// How many times the wait has doubled since the last quiet period.
    backoff_step: u32,
    /// See [`Phase`].
    phase: Phase,
}

impl RestartIntensity {
    /// Bookkeeping for a child that has just been started by hand.
    pub fn new(policy: RestartPolicy) -> Self {
        Self {
            policy,
            restarts: VecDeque::new(),
            backoff_step: 0,
            phase: Phase::Fresh,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> RestartPolicy {
        self.policy
    }

    /// Decides what to do about the child exiting at `now`, and records the
    /// restart if it is one.
    pub fn on_exit(&mut self, now: Instant) -> RestartDecision {
        let give_up = RestartDecision::GiveUp {
            restarts: self.policy.max_restarts,
            window: self.policy.window,
        };
        match self.phase {
            Phase::GaveUp => return give_up,
            Phase::Restarted { since }
                if now.saturating_duration_since(since) >= self.policy.quiet_period =>
            {
                self.backoff_step = 0;
            }
            Phase::Restarted { .. } | Phase::Fresh => {}
        }
        while let Some(oldest) = self.restarts.front() {
            if now.saturating_duration_since(*oldest) >= self.policy.window {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        if self.restarts.len() >= self.policy.max_restarts as usize {
            self.phase = Phase::GaveUp;
            return give_up;
        }
        let after = self.backoff();
        self.backoff_step = self.backoff_step.saturating_add(1);
        self.restarts.push_back(now);
        self.phase = Phase::Restarted {
            since: now.checked_add(after).unwrap_or(now),
        };
        RestartDecision::Restart { after }
    }

    /// Forgets every restart: for a child loaded again by hand, even after
    /// giving up.
    pub fn reset(&mut self) {
        self.restarts.clear();
        self.backoff_step = 0;
        self.phase = Phase::Fresh;
    }

    /// The wait for the current step: base × 2^step, at most the cap.
    fn backoff(&self) -> Duration {
        let factor = 1u32.checked_shl(self.backoff_step).unwrap_or(u32::MAX);
        self.policy
            .backoff_base
            .checked_mul(factor)
            .unwrap_or(Duration::MAX)
            .min(self.policy.backoff_cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            max_restarts: 3,
            window: Duration::from_secs(10),
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_millis(300),
            quiet_period: Duration::from_secs(5),
        }
    }

    fn restart(ms: u64) -> RestartDecision {
        RestartDecision::Restart {
            after: Duration::from_millis(ms),
        }
    }

    /// I2: exponential backoff from the base, doubling up to the cap, then
    /// giving up once the window holds `max_restarts` restarts.
    #[test]
    fn backoff_doubles_to_the_cap_then_gives_up_at_the_limit() {
        let start = Instant::now();
        let mut intensity = RestartIntensity::new(policy());
        let at = |ms| start + Duration::from_millis(ms);
        assert_eq!(intensity.on_exit(at(0)), restart(100));
        assert_eq!(intensity.on_exit(at(200)), restart(200));
        assert_eq!(intensity.on_exit(at(500)), restart(300));
        let gave_up = intensity.on_exit(at(900));
        assert_eq!(
            gave_up,
            RestartDecision::GiveUp {
                restarts: 3,
                window: Duration::from_secs(10)
            }
        );
        // Giving up sticks, even once the window has passed.
        assert_eq!(intensity.on_exit(at(60_000)), gave_up);
        intensity.reset();
        assert_eq!(intensity.on_exit(at(60_001)), restart(100));
    }

    /// The window slides: restarts older than it stop counting (OTP).
    #[test]
    fn restarts_older_than_the_window_stop_counting() {
        let start = Instant::now();
        let mut intensity = RestartIntensity::new(RestartPolicy {
            quiet_period: Duration::from_secs(3600),
            ..policy()
        });
        let at = |ms| start + Duration::from_millis(ms);
        for ms in [0, 1_000, 2_000] {
            assert!(matches!(
                intensity.on_exit(at(ms)),
                RestartDecision::Restart { .. }
            ));
        }
        // The restart at 0 is out of the window at 10 s: one slot frees.
        assert!(matches!(
            intensity.on_exit(at(10_000)),
            RestartDecision::Restart { .. }
        ));
        assert!(matches!(
            intensity.on_exit(at(10_500)),
            RestartDecision::GiveUp { .. }
        ));
    }

    /// A child that ran quietly for the quiet period starts its backoff
    /// again at the base; the quiet period is counted from when the
    /// restarted child started, not from when it crashed.
    #[test]
    fn a_quiet_period_resets_the_backoff() {
        let start = Instant::now();
        let mut intensity = RestartIntensity::new(RestartPolicy {
            max_restarts: 100,
            ..policy()
        });
        let at = |ms| start + Duration::from_millis(ms);
        assert_eq!(intensity.on_exit(at(0)), restart(100));
        assert_eq!(intensity.on_exit(at(200)), restart(200));
        // Restarted at 400; 4.9 s of running is not quiet enough.
        assert_eq!(intensity.on_exit(at(5_300)), restart(300));
        // Restarted at 5.6 s; exactly 5 s of running is.
        assert_eq!(intensity.on_exit(at(10_600)), restart(100));
    }

    #[test]
    fn zero_restarts_allowed_gives_up_at_the_first_exit() {
        let mut intensity = RestartIntensity::new(RestartPolicy {
            max_restarts: 0,
            ..policy()
        });
        assert!(matches!(
            intensity.on_exit(Instant::now()),
            RestartDecision::GiveUp { restarts: 0, .. }
        ));
    }

    #[test]
    fn a_huge_step_saturates_at_the_cap() {
        let mut intensity = RestartIntensity::new(RestartPolicy {
            max_restarts: 200,
            window: Duration::from_secs(1),
            quiet_period: Duration::MAX,
            ..policy()
        });
        let start = Instant::now();
        let mut last = RestartDecision::GiveUp {
            restarts: 0,
            window: Duration::ZERO,
        };
        for second in 0..100 {
            last = intensity.on_exit(start + Duration::from_secs(second));
        }
        assert_eq!(last, restart(300));
    }
}
