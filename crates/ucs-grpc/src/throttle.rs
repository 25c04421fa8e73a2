//! Login throttling: failed logins slow the guesser down, never the owner
//! (issue 7; issue 15 item 11, after OWASP's guidance on lockout).
//!
//! Why here and not in `ucs-core`: the peer address exists only in the
//! transport, and gRPC `Auth.Login` is the only way to log in (plugins use
//! their own `ucs.sid`), so one throttle in front of the core sees every
//! attempt with both keys.
//!
//! Two rules:
//! - **Locks, per (username, source address).** The first
//!   [`Limits::free_failures`] failures of a pair cost nothing; each further
//!   one locks that pair for `base_delay * 2^(extra failures - 1)`, at most
//!   [`Limits::max_delay`]. A locked pair is refused with RESOURCE_EXHAUSTED
//!   and a `google.rpc.RetryInfo` detail before the password is hashed, so
//!   guessing cannot burn CPU either. A success clears the pair. Someone
//!   guessing `admin`'s password from one address thus cannot lock `admin`
//!   out from any other, nor lock out the colleagues behind the same NAT,
//!   whose pairs are their own.
//! - **Slower failures, per username and per source.** Failures of one user
//!   from anywhere (a distributed guess) and of one source for any user (a
//!   spray) past their allowance make each further *failed* answer wait
//!   (the same doubling, capped), while a right password is answered at
//!   once: the guesser learns each wrong answer slowly, the owner is never
//!   kept waiting. Those records only age out ([`Limits::forget_after`]
//!   without a failure), so one valid login does not reset them.

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

/// The limits of the throttle's three tables.
#[derive(Debug, Clone, Copy)]
pub struct ThrottleConfig {
    /// Per (username, source address): locks.
    pub per_pair: Limits,
    /// Per username, from any source: failed answers slowed.
    pub per_user: Limits,
    /// Per source address, for any username: failed answers slowed.
    pub per_peer: Limits,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        let forget_after = Duration::from_secs(15 * 60);
        let slowed = |free_failures| Limits {
            free_failures,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(5),
            forget_after,
        };
        ThrottleConfig {
            per_pair: Limits {
                free_failures: 5,
                base_delay: Duration::from_secs(1),
                max_delay: Duration::from_secs(5 * 60),
                forget_after,
            },
            per_user: slowed(10),
            per_peer: slowed(20),
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
    /// What was locked, for the message and the log: `user 'x' from y`.
    pub what: String,
    /// When the client may try again.
    pub retry_after: Duration,
}

/// A login attempt's source, as the throttle keys it.
type Source = Option<IpAddr>;

/// The login throttle of one server.
pub struct LoginThrottle {
    pairs: Table<(String, Source)>,
    users: Table<String>,
    peers: Table<IpAddr>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::new(ThrottleConfig::default())
    }
}

/// A source for messages and logs.
fn source_text(peer: Source) -> String {
    peer.map_or_else(|| "an unknown address".to_owned(), |peer| peer.to_string())
}

impl LoginThrottle {
    /// A throttle with `config`.
    pub fn new(config: ThrottleConfig) -> Self {
        LoginThrottle {
            pairs: Table::new(config.per_pair),
            users: Table::new(config.per_user),
            peers: Table::new(config.per_peer),
        }
    }

    /// Refuses the attempt if this user is locked from this source.
    pub fn check(&self, username: &str, peer: Source) -> Result<(), Throttled> {
        let key = (username.to_owned(), peer);
        match self.pairs.locked_for(&key, Instant::now()) {
            Some(retry_after) => Err(Throttled {
                what: format!("user '{username}' from {}", source_text(peer)),
                retry_after,
            }),
            None => Ok(()),
        }
    }

    /// Counts a failed login, logging it; returns how long its answer is to
    /// be held back (zero within the allowances).
    pub fn failed(&self, username: &str, peer: Source) -> Duration {
        let now = Instant::now();
        let (failures, lock) = self.pairs.fail(&(username.to_owned(), peer), now);
        let (user_failures, user_delay) = self.users.fail(&username.to_owned(), now);
        let (peer_failures, peer_delay) = match peer {
            Some(peer) => self.peers.fail(&peer, now),
            None => (0, Duration::ZERO),
        };
        let source = source_text(peer);
        tracing::warn!(
            username,
            peer = %source,
            failures,
            user_failures,
            peer_failures,
            "login failed for user '{username}' from {source}"
        );
        if !lock.is_zero() {
            tracing::warn!(
                username,
                peer = %source,
                "login throttled: user '{username}' from {source} must wait {lock:?}"
            );
        }
        let delay = user_delay.max(peer_delay);
        if !delay.is_zero() {
            tracing::info!(
                username,
                peer = %source,
                "login failures slowed: this failure is answered after {delay:?}"
            );
        }
        delay
    }

    /// Clears this user's lock from this source after a successful login.
    pub fn succeeded(&self, username: &str, peer: Source) {
        self.pairs.clear(&(username.to_owned(), peer));
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

    fn config(pair: u32, user: u32, peer: u32) -> ThrottleConfig {
        ThrottleConfig {
            per_pair: limits(pair),
            per_user: limits(user),
            per_peer: limits(peer),
        }
    }

    const GUESSER: Source = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)));
    const OWNER: Source = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 9)));

    #[test]
    fn a_guessed_user_is_locked_from_the_guessers_address_only() {
        let throttle = LoginThrottle::new(config(2, 100, 100));
        for _ in 0..3 {
            assert!(throttle.check("alice", GUESSER).is_ok());
            throttle.failed("alice", GUESSER);
        }
        let refused = throttle.check("alice", GUESSER).unwrap_err();
        assert_eq!(refused.what, "user 'alice' from 10.0.0.1");
        assert!(refused.retry_after <= Duration::from_secs(1));
        // The owner elsewhere, and other users at the guesser's address
        // (colleagues behind one NAT), are not locked out.
        assert!(throttle.check("alice", OWNER).is_ok());
        assert!(throttle.check("bob", GUESSER).is_ok());
        throttle.succeeded("alice", GUESSER);
        assert!(throttle.check("alice", GUESSER).is_ok());
    }

    #[test]
    fn spraying_or_distributed_guessing_slows_failures_and_locks_no_one() {
        let throttle = LoginThrottle::new(config(100, 100, 3));
        let delays: Vec<Duration> = (0..5)
            .map(|attempt| throttle.failed(&format!("user{attempt}"), GUESSER))
            .collect();
        assert_eq!(delays[..3], [Duration::ZERO; 3]);
        assert_eq!(
            delays[3..],
            [Duration::from_secs(1), Duration::from_secs(2)]
        );
        assert!(throttle.check("someone-new", GUESSER).is_ok());

        let throttle = LoginThrottle::new(config(100, 2, 100));
        let sources = (1..=4).map(|n| Some(IpAddr::from([10, 1, 0, n])));
        let delays: Vec<Duration> = sources.map(|peer| throttle.failed("admin", peer)).collect();
        assert_eq!(delays[..2], [Duration::ZERO; 2]);
        assert!(
            delays[2..].iter().all(|delay| !delay.is_zero()),
            "{delays:?}"
        );
        assert!(throttle.check("admin", OWNER).is_ok());
    }
}
