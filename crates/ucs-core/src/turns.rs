//! Per-key serialisation of changes without a lock held across Python.
//!
//! Two status changes of one agent (or two sets of one shared-data
//! identificator) must not interleave: the hook of the second must see the
//! result of the first. A plain mutex held across the hook would do that, but
//! a hook may itself change things, so instead a thread *takes a turn* on a
//! key. Waiting for a turn never holds the data lock, and the waits form a
//! graph that is checked on every wait: a thread that would wait for itself
//! (a hook changing the agent it is deciding on) or close a cycle of waits
//! (two hooks changing each other's agents) gets an error instead of a
//! deadlock (SPEC L5).

use std::cell::Cell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::ThreadId;

thread_local! {
    /// How many turns, of any key set, this thread holds right now.
    static HELD: Cell<usize> = const { Cell::new(0) };
    /// This thread's id, read once: `thread::current()` clones and drops
    /// an `Arc` on every call, and every status change through a hook
    /// takes a turn (issue 13 item 3).
    static ME: ThreadId = std::thread::current().id();
}

/// The hasher of the turn maps: FNV-1a, a few instructions for an agent id
/// where SipHash is about a hundred. Hash flooding needs no defence here:
/// the maps hold only the keys being changed at this moment and the
/// threads waiting for them, a handful, whatever the keys are.
#[derive(Default)]
struct TurnHasher(u64);

impl Hasher for TurnHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut hash = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = hash;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A map keyed by turn keys or thread ids, with [`TurnHasher`].
type TurnMap<K, V> = HashMap<K, V, BuildHasherDefault<TurnHasher>>;

/// How many turns this thread holds: non-zero while it is in the middle of a
/// change, e.g. running a hook. Event delivery waits until it is zero, so no
/// callback ever runs, or is waited for, while a turn is held.
pub fn held_by_this_thread() -> usize {
    HELD.with(Cell::get)
}

/// Why a turn could not be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnRefused {
    /// This thread already holds the turn on this key.
    Reentrant,
    /// Waiting would close a cycle of threads waiting on each other.
    WouldDeadlock,
}

impl TurnRefused {
    /// The one wording of a refusal to change `subject` ("agent 3",
    /// "shared data 'x'", "plugin 'p'"), as the caller's processing error.
    pub fn message(self, subject: &str) -> String {
        match self {
            TurnRefused::Reentrant => format!(
                "{subject} is already being changed by this very call chain: a hook, callback \
                 or plugin step may not change the thing it is deciding on"
            ),
            TurnRefused::WouldDeadlock => format!(
                "changing {subject} now would deadlock with another change waiting on this one"
            ),
        }
    }
}

struct TurnState<K> {
    /// Which thread holds the turn on each busy key.
    holders: TurnMap<K, ThreadId>,
    /// Which key each waiting thread waits for.
    waiting: TurnMap<ThreadId, K>,
}

/// A set of keys on which at most one thread at a time may be changing.
pub struct Turns<K> {
    state: Mutex<TurnState<K>>,
    released: Condvar,
    /// How many keys are busy, kept beside `holders` (updated under the same
    /// mutex) so [`Turns::any_held`] can answer without taking it.
    held: AtomicUsize,
}

/// Holds a turn until dropped.
#[must_use = "the turn is given back as soon as the guard drops"]
pub struct Turn<'a, K: Eq + Hash + Clone> {
    turns: &'a Turns<K>,
    key: K,
}

impl<K: Eq + Hash + Clone> Default for Turns<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Eq + Hash + Clone> Turns<K> {
    /// No key is busy.
    pub fn new() -> Self {
        Turns {
            state: Mutex::new(TurnState {
                holders: TurnMap::default(),
                waiting: TurnMap::default(),
            }),
            released: Condvar::new(),
            held: AtomicUsize::new(0),
        }
    }

    /// Whether any thread holds a turn on any key now.
    ///
    /// A change that reads and writes its data under one lock of its own
    /// (a status change with no hook) asks this under that lock: if no turn
    /// is held, no other change is between its read and its commit, so
    /// skipping the turn cannot let it slip in between. The count is updated
    /// before a holder reads the data and after it has committed, so the
    /// data lock's release and acquire order it with that read.
    pub fn any_held(&self) -> bool {
        self.held.load(Ordering::SeqCst) != 0
    }

    fn lock(&self) -> MutexGuard<'_, TurnState<K>> {
        // The state is a pair of maps updated in single statements; a panic
        // elsewhere cannot leave them half-written, so poisoning is ignored.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for the turn on `key`, or refuses if waiting could never end.
    pub fn take(&self, key: K) -> Result<Turn<'_, K>, TurnRefused> {
        // `try_with` for a turn taken from a thread-local's destructor, after
        // `ME` is gone.
        let me = ME
            .try_with(|me| *me)
            .unwrap_or_else(|_| std::thread::current().id());
        let mut state = self.lock();
        loop {
            match state.holders.get(&key) {
                None => {
                    state.holders.insert(key.clone(), me);
                    HELD.with(|held| held.set(held.get() + 1));
                    self.held.fetch_add(1, Ordering::SeqCst);
                    return Ok(Turn { turns: self, key });
                }
                Some(holder) if *holder == me => return Err(TurnRefused::Reentrant),
                Some(holder) => {
                    if Self::waits_for(&state, *holder, me) {
                        return Err(TurnRefused::WouldDeadlock);
                    }
                }
            }
            state.waiting.insert(me, key.clone());
            state = self
                .released
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.waiting.remove(&me);
        }
    }

    /// Whether `start` waits, directly or through others, for a key held by `target`.
    fn waits_for(state: &TurnState<K>, start: ThreadId, target: ThreadId) -> bool {
        let mut current = start;
        // Each thread waits for at most one key, so the chain is a path; its
        // length is bounded by the number of waiting threads.
        for _ in 0..=state.waiting.len() {
            let Some(key) = state.waiting.get(&current) else {
                return false;
            };
            let Some(holder) = state.holders.get(key) else {
                return false;
            };
            if *holder == target {
                return true;
            }
            current = *holder;
        }
        false
    }
}

impl<K: Eq + Hash + Clone> Drop for Turn<'_, K> {
    fn drop(&mut self) {
        HELD.with(|held| held.set(held.get().saturating_sub(1)));
        let mut state = self.turns.lock();
        if state.holders.remove(&self.key).is_some() {
            self.turns.held.fetch_sub(1, Ordering::SeqCst);
        }
        // A waiter is in `waiting` from before it waits until after it
        // wakes, both under the lock, so an empty map means no one to wake;
        // and a signal is a system call even then, on every change.
        let anyone_waits = !state.waiting.is_empty();
        drop(state);
        if anyone_waits {
            self.turns.released.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn any_held_counts_busy_keys() {
        let turns = Turns::new();
        assert!(!turns.any_held());
        let first = turns.take(1).unwrap();
        let second = turns.take(2).unwrap();
        assert!(turns.any_held());
        drop(first);
        assert!(turns.any_held());
        drop(second);
        assert!(!turns.any_held());
    }

    #[test]
    fn l5_same_thread_reentry_is_refused() {
        let turns = Turns::new();
        let _outer = turns.take(1).unwrap();
        assert_eq!(turns.take(1).err(), Some(TurnRefused::Reentrant));
        assert!(turns.take(2).is_ok());
    }

    #[test]
    fn l5_crossed_waits_are_refused_instead_of_deadlocking() {
        let turns = Arc::new(Turns::new());
        let first_holds_a = Arc::new(std::sync::Barrier::new(2));
        let other = {
            let turns = Arc::clone(&turns);
            let barrier = Arc::clone(&first_holds_a);
            std::thread::spawn(move || {
                let _b = turns.take("b").unwrap();
                barrier.wait();
                // Wait for "a", held by the main thread; the main thread then
                // asks for "b" and must be refused, which releases "a".
                turns.take("a").map(|_| ())
            })
        };
        let a = turns.take("a").unwrap();
        first_holds_a.wait();
        // Give the other thread time to start waiting for "a".
        let mut refused = None;
        for _ in 0..200 {
            std::thread::sleep(std::time::Duration::from_millis(5));
            if turns.lock().waiting.len() == 1 {
                refused = turns.take("b").err();
                break;
            }
        }
        assert_eq!(refused, Some(TurnRefused::WouldDeadlock));
        drop(a);
        assert_eq!(other.join().unwrap(), Ok(()));
    }

    #[test]
    fn turns_on_one_key_do_not_overlap() {
        let turns = Arc::new(Turns::new());
        let inside = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let turns = Arc::clone(&turns);
                let inside = Arc::clone(&inside);
                std::thread::spawn(move || {
                    for _ in 0..500 {
                        let _turn = turns.take(7).unwrap();
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
    }
}
