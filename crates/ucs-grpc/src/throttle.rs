//! Login throttling: failed logins slow down password guessing, per user
//! and per peer address (issue 7).
//!
//! Why here and not in `ucs-core`: the peer address exists only in the
//! transport, and gRPC `Auth.Login` is the only way to log in (plugins use
//! their own `ucs.sid`), so one throttle in front of the core sees every
//! attempt with both keys.
//!
//! The rule, per key: the first [`Limits::free_failures`] failures cost
//! nothing; each further failure locks the key for
//! `base_delay * 2^(extra failures - 1)`, at most [`Limits::max_delay`]. A
//! locked key is refused with RESOURCE_EXHAUSTED and a `google.rpc.RetryInfo`
//! detail, before the password is even hashed, so guessing cannot burn CPU
//! either. A success clears the user's record; the peer's record only ages
//! out ([`Limits::forget_after`] without a failure), so one valid account does
//! not reset the count for guessing at others. The peer allowance is larger
//! than the user one, so colleagues behind one NAT are not locked out by one
//! person's typos.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How many keys a table keeps before it sweeps records that aged out;
/// bounds the memory an attacker spraying usernames can take.
const SWEEP_AT: usize = 10_000;

/// The tunables of one key kind.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Failures allowed before any lock.
    pub free_failures: u32,
    /// The first lock; each further failure doubles it.
    pub base_delay: Duration,
    /// The longest lock.
    pub max_delay: Duration,
    /// A record with no failure for this long is forgotten.
    pub forget_after: Duration,
}

/// The limits of both key kinds.
#[derive(Debug, Clone, Copy)]
pub struct ThrottleConfig {
    /// Per username (the target of a guessing attack).
    pub per_user: Limits,
    /// Per peer IP address (the source of one).
    pub per_peer: Limits,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            per_user: Limits {
                free_failures: 5,
                base_delay: Duration::from_secs(1),
                max_delay: Duration::from_secs(5 * 60),
                forget_after: Duration::from_secs(15 * 60),
            },
            per_peer: Limits {
                free_failures: 20,
                base_delay: Duration::from_secs(1),
                max_delay: Duration::from_secs(5 * 60),
                forget_after: Duration::from_secs(15 * 60),
            },
        }
    }
}

/// The failures of one key.
#[derive(Debug, Clone, Copy)]
struct Record {
    /// Consecutive failures (reset by success for users, by age for peers).
    failures: u32,
    /// When the last failure happened, for ageing out.
    last_failure: Instant,
    /// Attempts are refused until then.
    locked_until: Instant,
}

/// Failure records for one kind of key.
struct Table<K> {
    limits: Limits,
    /// Held for a map lookup or update only; never across a password hash.
    records: Mutex<HashMap<K, Record>>,
}

impl<K: Eq + Hash + Clone> Table<K> {
    fn new(limits: Limits) -> Self {
        Table {
            limits,
            records: Mutex::new(HashMap::new()),
        }
    }

    /// How long `key` is still locked, if it is.
    fn locked_for(&self, key: &K, now: Instant) -> Option<Duration> {
        let records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        let record = records.get(key)?;
        (record.locked_until > now).then(|| record.locked_until - now)
    }

    /// Counts a failure; returns the failure count and the lock it caused.
    fn fail(&self, key: &K, now: Instant) -> (u32, Duration) {
        let limits = self.limits;
        let mut records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        if records.len() >= SWEEP_AT {
            records
                .retain(|_, record| now.duration_since(record.last_failure) < limits.forget_after);
        }
        let record = records.entry(key.clone()).or_insert(Record {
            failures: 0,
            last_failure: now,
            locked_until: now,
        });
        if now.duration_since(record.last_failure) >= limits.forget_after {
            record.failures = 0;
        }
        record.failures = record.failures.saturating_add(1);
        record.last_failure = now;
        let lock = lock_after(limits, record.failures);
        record.locked_until = now + lock;
        (record.failures, lock)
    }

    fn clear(&self, key: &K) {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

/// The lock after `failures` failures under `limits`.
fn lock_after(limits: Limits, failures: u32) -> Duration {
    let Some(extra) = failures.checked_sub(limits.free_failures + 1) else {
        return Duration::ZERO;
    };
    // 2^extra, saturating well before overflow.
    let factor = 1u32 << extra.min(20);
    limits
        .base_delay
        .saturating_mul(factor)
        .min(limits.max_delay)
}

/// Why a login attempt was refused before it was tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttled {
    /// What was locked, for the message and the log: `user 'x'` or `address y`.
    pub what: String,
    /// When the client may try again.
    pub retry_after: Duration,
}

/// The login throttle of one server.
pub struct LoginThrottle {
    users: Table<String>,
    peers: Table<IpAddr>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::new(ThrottleConfig::default())
    }
}

impl LoginThrottle {
    /// A throttle with `config`.
    pub fn new(config: ThrottleConfig) -> Self {
        LoginThrottle {
            users: Table::new(config.per_user),
            peers: Table::new(config.per_peer),
        }
    }

    /// Refuses the attempt if the user or the peer is locked.
    pub fn check(&self, username: &str, peer: Option<IpAddr>) -> Result<(), Throttled> {
        let now = Instant::now();
        if let Some(peer) = peer
            && let Some(retry_after) = self.peers.locked_for(&peer, now)
        {
            return Err(Throttled {
                what: format!("address {peer}"),
                retry_after,
            });
        }
        if let Some(retry_after) = self.users.locked_for(&username.to_owned(), now) {
            return Err(Throttled {
                what: format!("user '{username}'"),
                retry_after,
            });
        }
        Ok(())
    }

    /// Counts a failed login, logging it; locks kick in past the allowance.
    pub fn failed(&self, username: &str, peer: Option<IpAddr>) {
        let now = Instant::now();
        let (user_failures, user_lock) = self.users.fail(&username.to_owned(), now);
        let (peer_failures, peer_lock) = match peer {
            Some(peer) => self.peers.fail(&peer, now),
            None => (0, Duration::ZERO),
        };
        let peer_text = peer.map_or_else(|| "unknown".to_owned(), |peer| peer.to_string());
        tracing::warn!(
            username,
            peer = %peer_text,
            user_failures,
            peer_failures,
            "login failed for user '{username}' from {peer_text}"
        );
        let lock = user_lock.max(peer_lock);
        if !lock.is_zero() {
            tracing::warn!(
                username,
                peer = %peer_text,
                "login throttled: user '{username}' from {peer_text} must wait {lock:?}"
            );
        }
    }

    /// Clears the user's failures after a successful login.
    pub fn succeeded(&self, username: &str) {
        self.users.clear(&username.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(free: u32) -> Limits {
        Limits {
            free_failures: free,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(8),
            forget_after: Duration::from_secs(60),
        }
    }

    #[test]
    fn locks_grow_exponentially_after_the_allowance_up_to_the_cap() {
        let delays: Vec<u64> = (1..=8)
            .map(|failures| lock_after(limits(2), failures).as_secs())
            .collect();
        assert_eq!(delays, [0, 0, 1, 2, 4, 8, 8, 8]);
        assert_eq!(lock_after(limits(0), u32::MAX), Duration::from_secs(8));
    }

    #[test]
    fn a_guessed_user_is_locked_but_other_users_are_not() {
        let throttle = LoginThrottle::new(ThrottleConfig {
            per_user: limits(2),
            per_peer: limits(100),
        });
        let peer = Some(IpAddr::from([10, 0, 0, 1]));
        for _ in 0..3 {
            assert!(throttle.check("alice", peer).is_ok());
            throttle.failed("alice", peer);
        }
        let refused = throttle.check("alice", peer).unwrap_err();
        assert_eq!(refused.what, "user 'alice'");
        assert!(refused.retry_after <= Duration::from_secs(1));
        assert!(throttle.check("bob", peer).is_ok());
        throttle.succeeded("alice");
        assert!(throttle.check("alice", peer).is_ok());
    }

    #[test]
    fn a_guessing_peer_is_locked_whatever_username_it_tries() {
        let throttle = LoginThrottle::new(ThrottleConfig {
            per_user: limits(100),
            per_peer: limits(3),
        });
        let attacker = Some(IpAddr::from([10, 0, 0, 2]));
        for attempt in 0..4 {
            throttle.failed(&format!("user{attempt}"), attacker);
        }
        let refused = throttle.check("someone-new", attacker).unwrap_err();
        assert_eq!(refused.what, "address 10.0.0.2");
        assert!(
            throttle
                .check("someone-new", Some(IpAddr::from([10, 0, 0, 3])))
                .is_ok()
        );
    }
}
