//! Sessions: the sid a client presents on every call.

use std::cell::RefCell;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::error::CoreError;
use crate::users::UserId;

/// How long a session may stay unused before it expires, unless configured.
pub const DEFAULT_SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(8 * 60 * 60);

/// A session id: 128 bits from the OS random source, as 32 hex digits.
pub type Sid = String;

thread_local! {
    /// The session whose API call runs on this thread, if one does.
    static CURRENT_SESSION: RefCell<Option<Sid>> = const { RefCell::new(None) };
}

/// Marks the session whose call runs on this thread until dropped; the API
/// sets it around every call made with a sid, so a change that ends a
/// user's other sessions can keep the one asking (issue 15 item 12). A
/// middleware's or a plugin host's call back into the API runs on the same
/// thread, so it sees the mark too. Not `Send`: it restores the thread's
/// previous mark.
#[must_use = "the session is marked only while the guard lives"]
pub struct InSession {
    /// The mark before this one (an API call made from inside another).
    previous: Option<Sid>,
    /// Thread-bound.
    _not_send: PhantomData<*const ()>,
}

/// Marks `sid` as the session whose call runs on this thread.
pub fn in_session(sid: &str) -> InSession {
    InSession {
        previous: CURRENT_SESSION.replace(Some(sid.to_owned())),
        _not_send: PhantomData,
    }
}

impl Drop for InSession {
    fn drop(&mut self) {
        CURRENT_SESSION.set(self.previous.take());
    }
}

struct SessionEntry {
    user_id: UserId,
    last_used: Instant,
}

/// Open sessions, expiring after an idle timeout.
pub struct Sessions {
    entries: Mutex<HashMap<Sid, SessionEntry>>,
    idle_timeout: Duration,
}

impl Sessions {
    /// No sessions; each expires after `idle_timeout` without use.
    pub fn new(idle_timeout: Duration) -> Self {
        Sessions {
            entries: Mutex::new(HashMap::new()),
            idle_timeout,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Sid, SessionEntry>> {
        // Map operations are single steps; poisoning cannot leave them torn.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens a session for `user_id` and returns its sid.
    pub fn open(&self, user_id: UserId) -> Result<Sid, CoreError> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes)
            .map_err(|err| CoreError::Processing(format!("no OS randomness for a sid: {err}")))?;
        let sid: Sid = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
        let now = Instant::now();
        let mut entries = self.lock();
        // Sweep expired sessions on login, so an idle server does not keep
        // every sid ever issued.
        entries.retain(|_, entry| now.duration_since(entry.last_used) < self.idle_timeout);
        entries.insert(
            sid.clone(),
            SessionEntry {
                user_id,
                last_used: now,
            },
        );
        Ok(sid)
    }

    /// The user behind `sid`, refreshing its idle timer.
    pub fn resolve(&self, sid: &str) -> Result<UserId, CoreError> {
        let now = Instant::now();
        let mut entries = self.lock();
        let Some(entry) = entries.get_mut(sid) else {
            return Err(CoreError::Unauthenticated);
        };
        if now.duration_since(entry.last_used) >= self.idle_timeout {
            entries.remove(sid);
            return Err(CoreError::Unauthenticated);
        }
        entry.last_used = now;
        Ok(entry.user_id)
    }

    /// Closes `sid`; closing an unknown sid is unauthenticated.
    pub fn close(&self, sid: &str) -> Result<(), CoreError> {
        self.lock()
            .remove(sid)
            .map(|_| ())
            .ok_or(CoreError::Unauthenticated)
    }

    /// Closes every session of `user_id`, e.g. when the user is deleted.
    pub fn close_all_of(&self, user_id: UserId) {
        self.lock().retain(|_, entry| entry.user_id != user_id);
    }

    /// Closes every session of `user_id` except the one whose call runs on
    /// this thread ([`in_session`]), e.g. when the user's password changes:
    /// whoever else holds one of its sids must log in again (OWASP's
    /// session management guidance). Returns how many it closed.
    pub fn close_others_of(&self, user_id: UserId) -> usize {
        let keep = CURRENT_SESSION.with_borrow(Clone::clone);
        let mut entries = self.lock();
        let before = entries.len();
        entries
            .retain(|sid, entry| entry.user_id != user_id || keep.as_deref() == Some(sid.as_str()));
        before - entries.len()
    }

    /// How many sessions are open (expired ones not yet swept included).
    pub fn count(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sids_are_128_bit_hex_and_distinct() {
        let sessions = Sessions::new(DEFAULT_SESSION_IDLE_TIMEOUT);
        let sids: std::collections::HashSet<_> =
            (0..1000).map(|_| sessions.open(1).unwrap()).collect();
        assert_eq!(sids.len(), 1000);
        assert!(
            sids.iter()
                .all(|sid| sid.len() == 32 && sid.chars().all(|c| c.is_ascii_hexdigit()))
        );
    }

    /// The session marked on this thread survives `close_others_of`, the
    /// user's others and other users' sessions do not / do, and a nested
    /// mark is undone when its guard drops.
    #[test]
    fn close_others_of_keeps_the_session_whose_call_runs_here() {
        let sessions = Sessions::new(DEFAULT_SESSION_IDLE_TIMEOUT);
        let (own, other, someone_else) = (
            sessions.open(7).unwrap(),
            sessions.open(7).unwrap(),
            sessions.open(8).unwrap(),
        );
        {
            let _outer = in_session(&own);
            {
                let _nested = in_session(&someone_else);
            }
            assert_eq!(sessions.close_others_of(7), 1);
        }
        assert_eq!(sessions.resolve(&own), Ok(7));
        assert_eq!(sessions.resolve(&other), Err(CoreError::Unauthenticated));
        assert_eq!(sessions.resolve(&someone_else), Ok(8));
        // With no call running here, none is kept.
        assert_eq!(sessions.close_others_of(7), 1);
        assert_eq!(sessions.resolve(&own), Err(CoreError::Unauthenticated));
    }

    #[test]
    fn logout_and_idle_expiry_end_a_session() {
        let sessions = Sessions::new(Duration::from_millis(50));
        let sid = sessions.open(7).unwrap();
        assert_eq!(sessions.resolve(&sid), Ok(7));
        sessions.close(&sid).unwrap();
        assert_eq!(sessions.resolve(&sid), Err(CoreError::Unauthenticated));

        let idle = sessions.open(7).unwrap();
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(sessions.resolve(&idle), Err(CoreError::Unauthenticated));
    }

    #[test]
    fn use_keeps_a_session_alive() {
        let sessions = Sessions::new(Duration::from_millis(200));
        let sid = sessions.open(7).unwrap();
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(60));
            assert_eq!(sessions.resolve(&sid), Ok(7));
        }
    }
}
