//! A bounded share of the server's threads for each plugin (issue 15 item 5).
//!
//! Every API call runs on one of a bounded pool of threads, and a call into
//! a plugin holds its thread until the plugin returns. Without a bound, 600
//! calls into a middleware that sleeps take every thread, and calls that
//! have nothing to do with that plugin (`config.users.add`, `shared.set`
//! with no hook, other plugins' hooks) wait behind it. A [`CallGate`] per
//! loaded plugin version counts the calls inside it; past
//! [`crate::metrics::HookPolicy::max_concurrent_calls`] a call is refused
//! at once instead of queueing, so it gives its thread back.
//!
//! The gate counts calls, not registrations: a plugin's middleware, hooks
//! and callbacks share one bound, as they share the plugin's Python threads
//! (in its host, in process isolation).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Counts the calls inside one plugin version and refuses those past a
/// bound. Lives in the plugin's [`crate::Owner`].
#[derive(Debug, Default)]
pub struct CallGate {
    in_flight: AtomicU32,
    /// Calls refused since the gate last had room: the first refusal of a
    /// saturation is logged, the rest only counted until it ends.
    refused: AtomicU64,
}

/// A call that may run: holds its place in the gate until dropped, so a call
/// that panics or unwinds still gives its place back.
#[must_use = "the call's place is given back when the permit is dropped"]
#[derive(Debug)]
pub struct CallPermit<'gate> {
    gate: &'gate CallGate,
    limit: u32,
}

/// Why a call was refused, for the log line and the caller's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Saturated {
    /// The bound that was reached.
    pub limit: u32,
    /// Whether this is the first refusal of this saturation, which is the
    /// one worth a warning (a busy plugin may refuse thousands).
    pub first: bool,
}

/// What [`CallPermit::release`] found: the saturation it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaturationEnded {
    /// How many calls were refused while it lasted.
    pub refused: u64,
}

impl CallGate {
    /// Admits a call if fewer than `limit` are inside; never waits.
    pub fn admit(&self, limit: u32) -> Result<CallPermit<'_>, Saturated> {
        let previous = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if previous >= limit {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            let first = self.refused.fetch_add(1, Ordering::Relaxed) == 0;
            return Err(Saturated { limit, first });
        }
        Ok(CallPermit { gate: self, limit })
    }

    /// Calls inside the gate now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }
}

impl CallPermit<'_> {
    /// Gives the place back and says whether that ended a saturation (there
    /// is room again after calls were refused), so the caller can log it.
    pub fn release(self) -> Option<SaturationEnded> {
        let gate = self.gate;
        let limit = self.limit;
        drop(self);
        // Read before swapping: the swap is a write to a shared line, and
        // almost every call ends with nothing refused.
        if gate.refused.load(Ordering::Relaxed) == 0 || gate.in_flight() >= limit {
            return None;
        }
        match gate.refused.swap(0, Ordering::Relaxed) {
            0 => None,
            refused => Some(SaturationEnded { refused }),
        }
    }
}

impl Drop for CallPermit<'_> {
    fn drop(&mut self) {
        self.gate.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_past_the_limit_are_refused_and_the_first_refusal_says_so() {
        let gate = CallGate::default();
        let first = gate.admit(2).expect("room for one");
        let second = gate.admit(2).expect("room for two");
        let refused = |first| Err(Saturated { limit: 2, first });
        assert_eq!(gate.admit(2).map(|_| ()), refused(true));
        assert_eq!(gate.admit(2).map(|_| ()), refused(false));
        assert_eq!(gate.in_flight(), 2, "a refused call holds no place");
        assert_eq!(first.release(), Some(SaturationEnded { refused: 2 }));
        assert_eq!(second.release(), None, "the saturation ended only once");
        assert_eq!(gate.in_flight(), 0);
    }

    #[test]
    fn a_dropped_permit_gives_its_place_back() {
        let gate = CallGate::default();
        let permit = gate.admit(1).expect("room");
        assert!(gate.admit(1).is_err());
        drop(permit);
        let again = gate.admit(1).expect("room again after the drop");
        assert_eq!(
            again.release(),
            Some(SaturationEnded { refused: 1 }),
            "a plain drop leaves the end of the saturation to the next release"
        );
        assert_eq!(gate.in_flight(), 0);
    }
}
