//! The store rule: a write reaches the store before memory and before the
//! call returns, and a write the store refuses changes nothing. A fake store
//! in memory stands in for `ucs-store`, which tests the same through SQLite.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ucs_core::events::EVENT_SHARED_DATA;
use ucs_core::{
    AgentStatus, Core, CoreError, MapKey, NewUser, Store, StoreError, StoredState, StoredUser,
    UserEdit, UserId, Value,
};

use crate::fixtures::{plugin, recorder};

/// Keeps what it is given in maps, and refuses every write while `failing`.
#[derive(Default)]
struct FakeStore {
    users: Mutex<BTreeMap<UserId, StoredUser>>,
    next_user_id: Mutex<UserId>,
    shared: Mutex<Vec<(String, Value)>>,
    failing: AtomicBool,
}

impl FakeStore {
    fn check(&self) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            Err(StoreError::Failed("disk full".to_owned()))
        } else {
            Ok(())
        }
    }

    fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

impl Store for FakeStore {
    fn load(&self) -> Result<StoredState, StoreError> {
        Ok(StoredState {
            users: self
                .users
                .lock()
                .expect("fake store lock")
                .values()
                .cloned()
                .collect(),
            next_user_id: (*self.next_user_id.lock().expect("fake store lock")).max(1),
            shared: self.shared.lock().expect("fake store lock").clone(),
        })
    }

    fn insert_user(&self, user: &StoredUser) -> Result<(), StoreError> {
        self.check()?;
        let mut next = self.next_user_id.lock().expect("fake store lock");
        *next = (*next).max(user.user.id + 1);
        self.users
            .lock()
            .expect("fake store lock")
            .insert(user.user.id, user.clone());
        Ok(())
    }

    fn update_user(&self, user: &StoredUser) -> Result<(), StoreError> {
        self.check()?;
        self.users
            .lock()
            .expect("fake store lock")
            .insert(user.user.id, user.clone());
        Ok(())
    }

    fn delete_user(&self, id: UserId) -> Result<(), StoreError> {
        self.check()?;
        self.users.lock().expect("fake store lock").remove(&id);
        Ok(())
    }

    fn save_shared(&self, identificator: &str, data: &Value) -> Result<(), StoreError> {
        self.check()?;
        let mut shared = self.shared.lock().expect("fake store lock");
        shared.retain(|(key, _)| key != identificator);
        shared.push((identificator.to_owned(), data.clone()));
        Ok(())
    }
}

fn agent(username: &str) -> NewUser {
    NewUser {
        username: username.to_owned(),
        password: "password1".to_owned(),
        agent: true,
        ..NewUser::default()
    }
}

fn core_on(store: &Arc<FakeStore>) -> Core {
    Core::builder()
        .store(Arc::clone(store) as Arc<dyn Store>)
        .build()
        .expect("the fake store loads")
}

#[test]
fn store_keeps_users_and_shared_data_for_the_next_core() {
    let store = Arc::new(FakeStore::default());
    let first = core_on(&store);
    first.directory().ensure_admin("adminpass").unwrap();
    let alice = first.directory().add(agent("alice")).unwrap();
    let bob = first.directory().add(agent("bob")).unwrap();
    first
        .set_agent_status(alice.id, AgentStatus::Ready, "")
        .unwrap();
    first.delete_user(bob.id).unwrap();
    let data = Value::Map([(MapKey::Int(2), Value::Int(5))].into_iter().collect());
    first.set_shared("counts", data.clone()).unwrap();
    drop(first);

    let second = core_on(&store);
    assert_eq!(second.directory().list().len(), 2);
    assert_eq!(second.login("alice", "password1").unwrap().1, alice);
    // Runtime statuses are not kept: every agent starts OFFLINE.
    assert_eq!(
        second.directory().agent(alice.id).unwrap().status,
        AgentStatus::Offline
    );
    assert_eq!(second.shared().get("counts"), data);
    // Bob's id is never given out again.
    assert_eq!(
        second.directory().add(agent("carol")).unwrap().id,
        bob.id + 1
    );
}

#[test]
fn a_refused_user_write_changes_nothing_and_fails_the_call() {
    let store = Arc::new(FakeStore::default());
    let core = core_on(&store);
    let admin = core.directory().ensure_admin("adminpass").unwrap();
    let alice = core.directory().add(agent("alice")).unwrap();
    store.fail(true);

    let err = core.directory().add(agent("bob")).unwrap_err();
    assert_eq!(
        err,
        CoreError::Storage(StoreError::Failed("disk full".to_owned()))
    );
    let err = core
        .directory()
        .edit(UserEdit {
            id: alice.id,
            displayname: Some("Alice".to_owned()),
            ..UserEdit::default()
        })
        .unwrap_err();
    assert!(matches!(err, CoreError::Storage(_)), "{err:?}");
    assert!(matches!(
        core.delete_user(alice.id),
        Err(CoreError::Storage(_))
    ));
    assert_eq!(core.directory().list(), [admin, alice.clone()]);

    // The id bob did not get is still free: the failed add consumed nothing.
    store.fail(false);
    assert_eq!(core.directory().add(agent("bob")).unwrap().id, alice.id + 1);
}

#[test]
fn a_refused_shared_write_changes_nothing_and_sends_no_event() {
    let store = Arc::new(FakeStore::default());
    let core = core_on(&store);
    core.set_shared("greeting", Value::from("hello")).unwrap();
    let (callback, seen) = recorder("r");
    core.events()
        .add_callback(EVENT_SHARED_DATA, plugin("p"), callback)
        .unwrap();
    store.fail(true);

    let err = core.set_shared("greeting", Value::from("bye")).unwrap_err();
    assert!(matches!(err, CoreError::Storage(_)), "{err:?}");
    assert_eq!(core.shared().get("greeting"), Value::from("hello"));
    assert!(seen.lock().expect("fake store lock").is_empty());
}

#[test]
fn stored_users_that_break_the_rules_are_refused_at_start() {
    let store = Arc::new(FakeStore::default());
    core_on(&store).directory().add(agent("alice")).unwrap();
    let mut twin = store.users.lock().expect("fake store lock")[&1].clone();
    twin.user.id = 7;
    store.users.lock().expect("fake store lock").insert(7, twin);
    let err = Core::builder().store(store).build().err();
    assert_eq!(
        err,
        Some(CoreError::Storage(StoreError::Failed(
            "stored username 'alice' appears twice".to_owned()
        )))
    );
}
