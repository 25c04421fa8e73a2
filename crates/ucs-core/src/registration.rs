//! The one registry of everything plugins register: event callbacks, the
//! status hook, shared-data hooks and middleware all live in a [`Slots`].
//!
//! A registration records its [`Owner`] (one loaded version of a plugin),
//! its [`RegistrationKind`], the key it is registered on, a description of
//! the callable and its [`RegistrationMetrics`]. Unload asks every slot to
//! remove what the unloaded version owns (SPEC P7, L4); `plugins.list`, the
//! metrics endpoint and `ucs plugin check` read the same slots, so there is
//! no ledger on the side that could drift from what really runs.
//!
//! Slots are copy-on-write: a caller takes a snapshot (an `Arc` clone under
//! a short read lock) and runs Python with no lock held (L5).

use std::any::Any;
use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockWriteGuard};

use crate::bulkhead::CallGate;
use crate::error::CoreError;
use crate::metrics::RegistrationMetrics;

/// Who registered something: one loaded version of a plugin, or the server
/// itself (generation 0).
///
/// Two versions of one plugin are different owners: after a reload, a late
/// `removeChangeStatusHook()` from the old version's stuck `stop()` names the
/// old owner and cannot remove the new version's hook. Retiring an owner
/// (when its version stops) makes every slot refuse its further
/// registrations, so a leftover thread of an unloaded version cannot leave
/// anything behind that no unload would remove.
#[derive(Clone)]
pub struct Owner(Arc<OwnerInner>);

struct OwnerInner {
    name: Arc<str>,
    generation: u64,
    retired: AtomicBool,
    /// The calls inside this version now (issue 15 item 5).
    calls: CallGate,
}

impl Owner {
    /// The owner called `name` at generation 0: the server itself, or a
    /// plugin in tests that load one version only.
    pub fn new(name: &str) -> Self {
        Self::versioned(name, 0)
    }

    /// Version `generation` of the plugin `name` (SPEC D1); the loader
    /// gives every load a new generation.
    pub fn versioned(name: &str, generation: u64) -> Self {
        Owner(Arc::new(OwnerInner {
            name: Arc::from(name),
            generation,
            retired: AtomicBool::new(false),
            calls: CallGate::default(),
        }))
    }

    /// The plugin name, as logs and warnings show it.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Which load of the plugin this is.
    pub fn generation(&self) -> u64 {
        self.0.generation
    }

    /// Whether this is some version of the plugin `name`.
    pub fn is_plugin(&self, name: &str) -> bool {
        *self.0.name == *name
    }

    /// Marks this version as stopped: slots refuse its registrations from
    /// now on. Call before removing what it owns, so nothing slips in
    /// between.
    pub fn retire(&self) {
        self.0.retired.store(true, Ordering::SeqCst);
    }

    /// Whether [`Owner::retire`] was called on this version.
    pub fn is_retired(&self) -> bool {
        self.0.retired.load(Ordering::SeqCst)
    }

    /// The bulkhead of this version: every call into any of its
    /// registrations passes it.
    pub fn calls(&self) -> &CallGate {
        &self.0.calls
    }
}

impl PartialEq for Owner {
    fn eq(&self, other: &Self) -> bool {
        self.0.generation == other.0.generation && self.0.name == other.0.name
    }
}

impl Eq for Owner {}

impl Hash for Owner {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.name.hash(state);
        self.0.generation.hash(state);
    }
}

impl fmt::Debug for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Owner({}#{})", self.0.name, self.0.generation)
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.name)
    }
}

/// Identifies one registration, so it can be removed after it was found by
/// a comparison that must run without any server lock held (Python `==`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegistrationId(u64);

impl RegistrationId {
    /// A fresh id, never handed out before in this process; ids grow in
    /// registration order.
    pub fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        RegistrationId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// A hook or callback that failed in a way that must not stop the change
/// (SPEC H6, S4, D5): the server logs it and goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginFailure {
    /// What went wrong, with the plugin's traceback where there is one.
    pub message: String,
}

impl PluginFailure {
    /// A failure described by `message`.
    pub fn new(message: impl Into<String>) -> Self {
        PluginFailure {
            message: message.into(),
        }
    }
}

/// The four kinds of things a plugin registers; the one label of each, in
/// reports, metrics and warnings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RegistrationKind {
    /// An event callback on an event name (E1); many per event.
    Callback,
    /// The status hook (H1); one in the whole server.
    StatusHook,
    /// A shared-data hook on an identificator (S1); one per identificator.
    SharedHook,
    /// A middleware on an API method (M1); many per method, in order (D2).
    Middleware,
}

impl RegistrationKind {
    /// Every kind, in the order reports list them.
    pub const ALL: [RegistrationKind; 4] = [
        RegistrationKind::Callback,
        RegistrationKind::StatusHook,
        RegistrationKind::SharedHook,
        RegistrationKind::Middleware,
    ];

    /// The machine label: `plugins.list` JSON, metric labels, `--json`.
    pub const fn label(self) -> &'static str {
        match self {
            RegistrationKind::Callback => "callback",
            RegistrationKind::StatusHook => "status_hook",
            RegistrationKind::SharedHook => "shared_hook",
            RegistrationKind::Middleware => "middleware",
        }
    }

    /// Whether a key holds at most one registration (H1, S1).
    pub const fn is_exclusive(self) -> bool {
        matches!(
            self,
            RegistrationKind::StatusHook | RegistrationKind::SharedHook
        )
    }

    /// What it is called in sentences: `shared data hook`.
    pub const fn noun(self) -> &'static str {
        match self {
            RegistrationKind::Callback => "callback",
            RegistrationKind::StatusHook => "status hook",
            RegistrationKind::SharedHook => "shared data hook",
            RegistrationKind::Middleware => "middleware",
        }
    }

    /// How people read it: `callback for agent.status X.changed()`.
    fn describe(self, target: &str, callable: &str) -> String {
        let noun = self.noun();
        match self {
            RegistrationKind::StatusHook => format!("{noun} {callable}"),
            RegistrationKind::SharedHook => format!("{noun} for '{target}' {callable}"),
            RegistrationKind::Callback | RegistrationKind::Middleware => {
                format!("{noun} for {target} {callable}")
            }
        }
    }

    /// Why a second registration on an exclusive key is refused (H1, S1).
    fn occupied(self, target: &str, owner: &Owner) -> String {
        match self {
            RegistrationKind::StatusHook => {
                format!("a status hook is already registered by plugin '{owner}'")
            }
            RegistrationKind::SharedHook => format!(
                "shared data '{target}' already has a change hook, registered by plugin '{owner}'"
            ),
            RegistrationKind::Callback | RegistrationKind::Middleware => format!(
                "a {} for {target} is already registered by plugin '{owner}'",
                self.noun()
            ),
        }
    }
}

impl fmt::Display for RegistrationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// What every hook, callback and middleware tells the registry about itself.
pub trait Registrable: Send + Sync {
    /// What this is, for reports and warnings: e.g. the Python function's
    /// qualified name, `Example.agent_status_changed()`.
    fn describe(&self) -> String;
    /// Lets a remover compare it with its own kind (E1, M1 `==`).
    fn as_any(&self) -> &dyn Any;
    /// The numbers its calls feed, if it measures itself (the Python
    /// adapters do); otherwise the registry keeps zeroed ones.
    fn metrics(&self) -> Option<Arc<RegistrationMetrics>> {
        None
    }
}

/// The key of the one status hook: it decides for every agent (H1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AllAgents;

impl fmt::Display for AllAgents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("agents")
    }
}

/// One registration in a slot.
pub struct Registered<T: ?Sized> {
    /// Removes exactly this registration.
    pub id: RegistrationId,
    /// The version of the plugin that registered it.
    pub owner: Owner,
    /// The callable's description, read once at registration.
    pub callable: Arc<str>,
    /// Its calls, errors, overruns, latency and breaker.
    pub metrics: Arc<RegistrationMetrics>,
    /// The hook, callback or middleware itself.
    pub target: Arc<T>,
}

impl<T: ?Sized> Clone for Registered<T> {
    fn clone(&self) -> Self {
        Registered {
            id: self.id,
            owner: self.owner.clone(),
            callable: Arc::clone(&self.callable),
            metrics: Arc::clone(&self.metrics),
            target: Arc::clone(&self.target),
        }
    }
}

/// A registration as reports see it, whatever its kind: what unload warns
/// about (L4), what `plugins.list` and the metrics endpoint show, and what
/// `ucs plugin check` finds.
#[derive(Clone)]
pub struct RegistrationInfo {
    /// Removes exactly this registration.
    pub id: RegistrationId,
    /// Which kind of slot it is in.
    pub kind: RegistrationKind,
    /// The version of the plugin that registered it.
    pub owner: Owner,
    /// The event, identificator or method (`agents` for the status hook).
    pub target: String,
    /// The callable, e.g. `Example.agent_status_changed()`.
    pub callable: Arc<str>,
    /// Its numbers.
    pub metrics: Arc<RegistrationMetrics>,
}

impl fmt::Debug for RegistrationInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self} (plugin {:?})", self.owner)
    }
}

impl fmt::Display for RegistrationInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.kind.describe(&self.target, &self.callable))
    }
}

/// Why a slot did not remove a registration by key (H1, S1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotRemoved {
    /// Nothing is registered on the key.
    Absent,
    /// Another owner (another plugin, or another version of this one) holds it.
    OwnedBy(Owner),
}

/// Registrations of one kind, by key, copy-on-write.
pub struct Slots<K, T: ?Sized> {
    kind: RegistrationKind,
    entries: RwLock<HashMap<K, Arc<[Registered<T>]>>>,
    /// How many registrations `entries` holds, updated under its write
    /// lock, so the common case of none skips the lock and the lookup.
    count: AtomicUsize,
}

impl<K, T> Slots<K, T>
where
    K: Eq + Hash + Clone + fmt::Display,
    T: Registrable + ?Sized,
{
    /// An empty slot set of `kind`.
    pub fn new(kind: RegistrationKind) -> Self {
        Slots {
            kind,
            entries: RwLock::new(HashMap::new()),
            count: AtomicUsize::new(0),
        }
    }

    /// The kind of everything in these slots.
    pub fn kind(&self) -> RegistrationKind {
        self.kind
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<K, Arc<[Registered<T>]>>> {
        // Every update replaces a list whole: poisoning cannot tear one.
        self.entries.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `target` on `key` for `owner`, after any registered before
    /// (D2). An exclusive kind refuses a second one on the same key (H1,
    /// S1); a retired owner is refused everything.
    pub fn add(&self, key: K, owner: Owner, target: Arc<T>) -> Result<RegistrationId, CoreError> {
        let callable: Arc<str> = target.describe().into();
        let metrics = target
            .metrics()
            .unwrap_or_else(|| Arc::new(RegistrationMetrics::new()));
        let id = RegistrationId::next();
        let mut entries = self.write();
        if owner.is_retired() {
            return Err(CoreError::Processing(format!(
                "plugin '{owner}' was stopped: this version cannot register a {} for {key} any more",
                self.kind.noun()
            )));
        }
        let list = entries.entry(key.clone()).or_insert_with(|| Arc::from([]));
        if self.kind.is_exclusive()
            && let Some(existing) = list.first()
        {
            return Err(CoreError::Processing(
                self.kind.occupied(&key.to_string(), &existing.owner),
            ));
        }
        let mut updated = list.to_vec();
        updated.push(Registered {
            id,
            owner,
            callable,
            metrics,
            target,
        });
        *list = Arc::from(updated);
        self.count.fetch_add(1, Ordering::SeqCst);
        Ok(id)
    }

    /// Whether nothing at all is registered: one atomic load.
    pub fn is_empty(&self) -> bool {
        self.count.load(Ordering::SeqCst) == 0
    }

    /// The registrations on `key`, in registration order; a snapshot that
    /// later changes do not touch.
    pub fn snapshot<Q>(&self, key: &Q) -> Option<Arc<[Registered<T>]>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if self.is_empty() {
            return None;
        }
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .filter(|list| !list.is_empty())
            .cloned()
    }

    /// The one registration on `key` of an exclusive kind (or the first).
    pub fn first<Q>(&self, key: &Q) -> Option<Registered<T>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.snapshot(key).and_then(|list| list.first().cloned())
    }

    /// Removes the registration `id`; `None` if it is not registered.
    pub fn remove(&self, id: RegistrationId) -> Option<RegistrationInfo> {
        self.retain(|registration| registration.id != id).pop()
    }

    /// Removes what is registered on `key` if `owner` registered it (H1,
    /// S1); otherwise says why not and removes nothing.
    pub fn remove_on_key<Q>(&self, key: &Q, owner: &Owner) -> Result<RegistrationInfo, NotRemoved>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let holder = self.first(key).ok_or(NotRemoved::Absent)?;
        if holder.owner != *owner {
            return Err(NotRemoved::OwnedBy(holder.owner));
        }
        self.remove(holder.id).ok_or(NotRemoved::Absent)
    }

    fn info(&self, key: &K, registration: &Registered<T>) -> RegistrationInfo {
        RegistrationInfo {
            id: registration.id,
            kind: self.kind,
            owner: registration.owner.clone(),
            target: key.to_string(),
            callable: Arc::clone(&registration.callable),
            metrics: Arc::clone(&registration.metrics),
        }
    }

    /// Removes every registration `keep` refuses, and reports them.
    fn retain(&self, keep: impl Fn(&Registered<T>) -> bool) -> Vec<RegistrationInfo> {
        let mut removed = Vec::new();
        let mut entries = self.write();
        for (key, list) in entries.iter_mut() {
            if list.iter().all(&keep) {
                continue;
            }
            let (kept, gone): (Vec<_>, Vec<_>) = list.iter().cloned().partition(&keep);
            removed.extend(gone.iter().map(|registration| self.info(key, registration)));
            *list = Arc::from(kept);
        }
        entries.retain(|_, list| !list.is_empty());
        self.count.fetch_sub(removed.len(), Ordering::SeqCst);
        removed.sort_by_key(|info| info.id);
        removed
    }
}

/// Any [`Slots`], whatever its key and target: what the registry walks to
/// report or remove a plugin's registrations of every kind at once.
pub trait AnySlots: Send + Sync {
    /// Every registration, in registration order.
    fn registrations(&self) -> Vec<RegistrationInfo>;
    /// Removes everything `owner` registered (L4) and reports it.
    fn remove_owned_by(&self, owner: &Owner) -> Vec<RegistrationInfo>;
}

impl<K, T> AnySlots for Slots<K, T>
where
    K: Eq + Hash + Clone + fmt::Display + Send + Sync,
    T: Registrable + ?Sized,
{
    fn registrations(&self) -> Vec<RegistrationInfo> {
        if self.is_empty() {
            return Vec::new();
        }
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<RegistrationInfo> = entries
            .iter()
            .flat_map(|(key, list)| list.iter().map(move |registration| (key, registration)))
            .map(|(key, registration)| self.info(key, registration))
            .collect();
        all.sort_by_key(|info| info.id);
        all
    }

    fn remove_owned_by(&self, owner: &Owner) -> Vec<RegistrationInfo> {
        if self.is_empty() {
            return Vec::new();
        }
        self.retain(|registration| registration.owner != *owner)
    }
}

/// Every registration across `slots`, in registration order.
pub fn registrations_in(slots: &[&dyn AnySlots]) -> Vec<RegistrationInfo> {
    let mut all: Vec<RegistrationInfo> = slots.iter().flat_map(|s| s.registrations()).collect();
    all.sort_by_key(|info| info.id);
    all
}

/// Removes everything `owner` registered across `slots` (L4), in
/// registration order.
pub fn remove_owned_by_in(slots: &[&dyn AnySlots], owner: &Owner) -> Vec<RegistrationInfo> {
    let mut all: Vec<RegistrationInfo> = slots
        .iter()
        .flat_map(|s| s.remove_owned_by(owner))
        .collect();
    all.sort_by_key(|info| info.id);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Named(&'static str);

    impl Registrable for Named {
        fn describe(&self) -> String {
            format!("{}()", self.0)
        }
        fn as_any(&self) -> &dyn Any {
            self
        }
    }

    fn slots(kind: RegistrationKind) -> Slots<String, Named> {
        Slots::new(kind)
    }

    #[test]
    fn h1_s1_an_exclusive_key_refuses_a_second_registration_and_names_the_holder() {
        let hooks = slots(RegistrationKind::SharedHook);
        hooks
            .add("counts".into(), Owner::new("first"), Arc::new(Named("a")))
            .expect("first registration");
        let second = hooks.add("counts".into(), Owner::new("second"), Arc::new(Named("b")));
        assert_eq!(
            second,
            Err(CoreError::Processing(
                "shared data 'counts' already has a change hook, registered by plugin 'first'"
                    .into()
            ))
        );
        hooks
            .add("other".into(), Owner::new("second"), Arc::new(Named("b")))
            .expect("another key is free");
    }

    #[test]
    fn d2_many_kinds_keep_registration_order_and_snapshots_do_not_change() {
        let callbacks = slots(RegistrationKind::Callback);
        let owner = Owner::new("p");
        for name in ["a", "b", "c"] {
            callbacks
                .add("ev".into(), owner.clone(), Arc::new(Named(name)))
                .expect("add");
        }
        let before = callbacks.snapshot("ev").expect("registered");
        let order: Vec<&str> = before.iter().map(|r| &*r.callable).collect();
        assert_eq!(order, ["a()", "b()", "c()"]);
        let removed = callbacks.remove(before[1].id).expect("removed");
        assert_eq!(removed.to_string(), "callback for ev b()");
        assert_eq!(before.len(), 3, "a snapshot is not touched by removal");
        assert_eq!(callbacks.snapshot("ev").map(|s| s.len()), Some(2));
        assert!(
            callbacks.remove(before[1].id).is_none(),
            "removed once only"
        );
    }

    #[test]
    fn issue12_an_old_version_cannot_remove_or_add_after_it_is_retired() {
        let hooks = slots(RegistrationKind::StatusHook);
        let old = Owner::versioned("status_hook", 1);
        let new = Owner::versioned("status_hook", 2);
        assert_ne!(old, new, "two versions of one plugin are two owners");
        old.retire();
        hooks
            .add("agents".into(), new.clone(), Arc::new(Named("new")))
            .expect("new version registers");
        assert_eq!(
            hooks.remove_on_key("agents", &old).map(|info| info.owner),
            Err(NotRemoved::OwnedBy(new.clone())),
            "the old version's late remove must not take the new version's hook"
        );
        assert!(hooks.first("agents").is_some());
        let late = hooks.add("late".into(), old.clone(), Arc::new(Named("late")));
        assert!(
            matches!(&late, Err(CoreError::Processing(message)) if message.contains("was stopped")),
            "{late:?}"
        );
        assert_eq!(
            hooks.remove_on_key("agents", &new).map(|info| info.owner),
            Ok(new)
        );
        assert!(hooks.is_empty());
    }

    #[test]
    fn l4_remove_owned_by_reports_exactly_the_owners_registrations_in_order() {
        let callbacks = slots(RegistrationKind::Callback);
        let middleware: Slots<&'static str, Named> = Slots::new(RegistrationKind::Middleware);
        let leaky = Owner::new("leaky");
        let other = Owner::new("other");
        callbacks
            .add("a".into(), leaky.clone(), Arc::new(Named("one")))
            .expect("add");
        middleware
            .add("shared.get", leaky.clone(), Arc::new(Named("two")))
            .expect("add");
        callbacks
            .add("a".into(), other.clone(), Arc::new(Named("kept")))
            .expect("add");
        let all: [&dyn AnySlots; 2] = [&callbacks, &middleware];
        let removed: Vec<String> = remove_owned_by_in(&all, &leaky)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            removed,
            ["callback for a one()", "middleware for shared.get two()"]
        );
        assert!(
            remove_owned_by_in(&all, &leaky).is_empty(),
            "nothing left to remove"
        );
        let left: Vec<Owner> = registrations_in(&all)
            .into_iter()
            .map(|i| i.owner)
            .collect();
        assert_eq!(left, [other]);
        assert!(middleware.is_empty());
    }
}
