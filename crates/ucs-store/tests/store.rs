//! `SqliteStore` through its public API and through a `Core`: round trips,
//! every bad condition at open by its message, and the durability rule (a
//! write the store refuses changes nothing).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tempfile::TempDir;
use ucs_core::{
    AgentStatus, Core, CoreError, Map, MapKey, NewUser, Store, StoreError, StoredUser, User,
    UserEdit, Value,
};
use ucs_store::{DATABASE_FILE, SCHEMA_VERSION, SqliteStore};

fn data_dir() -> TempDir {
    tempfile::tempdir().expect("a temporary dir")
}

fn open(dir: &Path) -> SqliteStore {
    SqliteStore::open(dir).expect("the store opens")
}

/// Opens `dir` and expects it to fail with a message holding each of `expected`.
fn check_open_fails(dir: &Path, expected: &[&str]) -> StoreError {
    let err = SqliteStore::open(dir).expect_err("opening must fail");
    let message = err.to_string();
    for part in expected {
        assert!(message.contains(part), "{message:?} lacks {part:?}");
    }
    err
}

fn core_on(dir: &Path) -> Core {
    Core::builder()
        .store(Arc::new(open(dir)))
        .build()
        .expect("the core loads")
}

fn stored(id: i64, username: &str, superuser: bool, agent: bool) -> StoredUser {
    StoredUser {
        user: User {
            id,
            username: username.to_owned(),
            displayname: format!("{username} display"),
            superuser,
            agent,
        },
        password_hash: format!("$argon2id$v=19$fake-hash-of-{username}"),
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

/// `{user_id: count}` as the documented SharedDataHook stores it (D4), with
/// a string key "2" beside the int key 2 and a float beside an int.
fn counts() -> Value {
    let inner: Map = [
        (MapKey::Int(2), Value::Int(5)),
        (MapKey::from("2"), Value::Float(5.0)),
        (MapKey::Int(-7), Value::Float(0.1)),
    ]
    .into_iter()
    .collect();
    let outer: Map = [
        (MapKey::from("counts"), Value::Map(inner)),
        (
            MapKey::from("list"),
            Value::List(vec![Value::Null, Value::Bool(false), Value::from("é")]),
        ),
        (MapKey::Int(i64::MAX), Value::Int(i64::MIN)),
    ]
    .into_iter()
    .collect();
    Value::Map(outer)
}

#[test]
fn users_round_trip_and_ids_are_never_reused() {
    let dir = data_dir();
    let store = open(dir.path());
    let admin = stored(1, "admin", true, false);
    let mut alice = stored(2, "alice", false, true);
    store.insert_user(&admin).unwrap();
    store.insert_user(&alice).unwrap();
    store.insert_user(&stored(3, "bob", false, true)).unwrap();
    alice.user.displayname = "Alice A.".to_owned();
    alice.user.superuser = true;
    alice.password_hash = "$argon2id$v=19$new-hash".to_owned();
    store.update_user(&alice).unwrap();
    // Deleting the newest user must not give its id out again.
    store.delete_user(3).unwrap();
    drop(store);

    let loaded = open(dir.path()).load().unwrap();
    assert_eq!(loaded.users, [admin, alice]);
    assert_eq!(loaded.next_user_id, 4);
    assert!(loaded.shared.is_empty());
}

#[test]
fn a_fresh_store_is_empty() {
    let dir = data_dir();
    let loaded = open(&dir.path().join("not/yet/there")).load().unwrap();
    assert_eq!(loaded, ucs_core::StoredState::default());
}

#[test]
fn updating_a_user_the_store_lacks_fails() {
    let dir = data_dir();
    let err = open(dir.path())
        .update_user(&stored(9, "ghost", false, false))
        .unwrap_err();
    assert!(
        err.to_string().contains("user 9") && err.to_string().contains("not in the database"),
        "{err}"
    );
}

#[test]
fn d4_shared_data_round_trips_exactly() {
    let dir = data_dir();
    let store = open(dir.path());
    store.save_shared("counters", &Value::Int(1)).unwrap();
    store.save_shared("counters", &counts()).unwrap();
    store.save_shared("empty", &Value::empty_map()).unwrap();
    drop(store);

    let loaded = open(dir.path()).load().unwrap();
    assert_eq!(
        loaded.shared,
        [
            ("counters".to_owned(), counts()),
            ("empty".to_owned(), Value::empty_map())
        ]
    );
}

#[test]
fn a_data_dir_under_a_regular_file_is_refused() {
    // Permissions do not stop root, who runs these tests in CI; a path
    // through a regular file fails for everyone.
    let dir = data_dir();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "not a dir").unwrap();
    let err = check_open_fails(
        &file.join("data"),
        &[
            "data dir ",
            "plain-file/data",
            "cannot be used: cannot create it",
        ],
    );
    assert!(matches!(err, StoreError::DataDirUnusable { .. }), "{err:?}");
    let err = check_open_fails(&file, &["cannot be used: cannot create it"]);
    assert!(matches!(err, StoreError::DataDirUnusable { .. }), "{err:?}");
}

#[test]
fn a_read_only_data_dir_is_refused_unless_the_os_allows_writing() {
    use std::os::unix::fs::PermissionsExt;
    let dir = data_dir();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o500)).unwrap();
    // Root writes through 0o500; then the store must simply work.
    let os_allows_writing = std::fs::write(data.join("probe"), "").is_ok();
    let opened = SqliteStore::open(&data);
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    match opened {
        Ok(_) => assert!(os_allows_writing, "opened a dir the OS refuses writes to"),
        Err(err) => {
            assert!(!os_allows_writing, "{err}");
            assert!(matches!(err, StoreError::DataDirUnusable { .. }), "{err:?}");
            assert!(err.to_string().contains("cannot be used"), "{err}");
        }
    }
}

#[test]
fn a_second_open_fails_while_the_first_holds_the_data_dir() {
    let dir = data_dir();
    let first = open(dir.path());
    let err = check_open_fails(
        dir.path(),
        &[
            "is in use by another ucs process",
            &format!("(pid {})", std::process::id()),
        ],
    );
    assert_eq!(
        err,
        StoreError::InUse {
            path: dir.path().to_owned(),
            pid: Some(std::process::id()),
        }
    );
    drop(first);
    open(dir.path());
}

#[test]
fn a_file_that_is_not_a_database_is_refused_and_left_alone() {
    let dir = data_dir();
    let database = dir.path().join(DATABASE_FILE);
    let garbage = "this is not an SQLite database, it is a note. ".repeat(100);
    std::fs::write(&database, &garbage).unwrap();
    let err = check_open_fails(
        dir.path(),
        &[
            "ucs.db is corrupt",
            "not a database",
            "restore it from a backup",
        ],
    );
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert_eq!(std::fs::read_to_string(&database).unwrap(), garbage);
}

/// Issue 15 item 7: a database truncated to zero bytes is not taken for a
/// new one (that would start with only `admin` and rewrite the file): it
/// is refused, and left as it is.
#[test]
fn a_database_truncated_to_zero_bytes_is_refused_not_reset() {
    let dir = data_dir();
    let store = open(dir.path());
    store.save_shared("kept", &Value::from("data")).unwrap();
    drop(store);
    let database = dir.path().join(DATABASE_FILE);
    std::fs::File::create(&database).unwrap();
    let err = check_open_fails(
        dir.path(),
        &[
            "ucs.db is corrupt",
            "empty (0 bytes)",
            "restore it from a backup",
        ],
    );
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert_eq!(std::fs::metadata(&database).unwrap().len(), 0, "rewritten");
}

#[test]
fn a_damaged_database_is_refused() {
    let dir = data_dir();
    let store = open(dir.path());
    for index in 0..200 {
        let data = Value::from("x".repeat(200));
        store.save_shared(&format!("key{index}"), &data).unwrap();
    }
    // Closing the last connection checkpoints the WAL into ucs.db.
    drop(store);
    let database = dir.path().join(DATABASE_FILE);
    let mut bytes = std::fs::read(&database).unwrap();
    assert!(bytes.len() > 8 * 4096, "the test needs several pages");
    // Scribble over pages 3 to 5: b-tree pages of the tables.
    for byte in &mut bytes[2 * 4096..5 * 4096] {
        *byte = 0xA5;
    }
    std::fs::write(&database, &bytes).unwrap();
    let err = check_open_fails(
        dir.path(),
        &["ucs.db is corrupt", "restore it from a backup"],
    );
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
}

#[test]
fn a_database_from_a_newer_ucs_is_refused_and_left_alone() {
    let dir = data_dir();
    drop(open(dir.path()));
    let database = dir.path().join(DATABASE_FILE);
    let newer = SCHEMA_VERSION + 1;
    rusqlite::Connection::open(&database)
        .unwrap()
        .pragma_update(None, "user_version", newer)
        .unwrap();
    let err = check_open_fails(
        dir.path(),
        &[&format!(
            "has schema version {newer}, newer than this ucs supports ({SCHEMA_VERSION}); upgrade ucs"
        )],
    );
    assert!(matches!(err, StoreError::NewerSchema { .. }), "{err:?}");
    let version: i64 = rusqlite::Connection::open(&database)
        .unwrap()
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(version, newer);
}

#[test]
fn the_database_is_in_wal_mode_with_full_sync() {
    let dir = data_dir();
    let store = open(dir.path());
    store.save_shared("x", &Value::Int(1)).unwrap();
    let side = rusqlite::Connection::open(store.database_path()).unwrap();
    let mode: String = side
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    assert!(dir.path().join("ucs.db-wal").exists());
}

#[test]
fn core_writes_persist_and_logins_work_after_a_restart() {
    let dir = data_dir();
    let core = core_on(dir.path());
    core.directory().ensure_admin("adminpass").unwrap();
    let alice = core.directory().add(agent("alice")).unwrap();
    let bob = core.directory().add(agent("bob")).unwrap();
    core.set_agent_status(alice.id, AgentStatus::Ready, "")
        .unwrap();
    let alice = core
        .directory()
        .edit(UserEdit {
            id: alice.id,
            displayname: Some("Alice".to_owned()),
            password: Some("new-password".to_owned()),
            ..UserEdit::default()
        })
        .unwrap();
    core.delete_user(bob.id).unwrap();
    core.set_shared("counts", counts()).unwrap();
    let (sid, _) = core.login("alice", "new-password").unwrap();
    drop(core);

    let core = core_on(dir.path());
    assert_eq!(core.login("alice", "new-password").unwrap().1, alice);
    assert_eq!(
        core.login("alice", "password1").unwrap_err(),
        CoreError::BadCredentials
    );
    assert_eq!(core.login("admin", "adminpass").unwrap().1.id, 1);
    assert_eq!(
        core.login("bob", "password1").unwrap_err(),
        CoreError::BadCredentials
    );
    // Sessions and runtime statuses are not kept.
    assert_eq!(core.caller(&sid).unwrap_err(), CoreError::Unauthenticated);
    assert_eq!(
        core.directory().agent(alice.id).unwrap().status,
        AgentStatus::Offline
    );
    assert_eq!(core.shared().get("counts"), counts());
    // Bob's id stays taken.
    assert_eq!(core.directory().add(agent("carol")).unwrap().id, bob.id + 1);
}

/// Makes every write to `table` fail inside SQLite, through a second
/// connection, as a full disk or an I/O error would.
fn refuse_writes(database: &Path, table: &str) -> rusqlite::Connection {
    let side = rusqlite::Connection::open(database).expect("a second connection");
    for event in ["INSERT", "UPDATE", "DELETE"] {
        side.execute_batch(&format!(
            "CREATE TRIGGER refuse_{table}_{event} BEFORE {event} ON {table}
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;"
        ))
        .expect("the trigger is created");
    }
    side
}

fn allow_writes(side: &rusqlite::Connection, table: &str) {
    for event in ["INSERT", "UPDATE", "DELETE"] {
        side.execute_batch(&format!("DROP TRIGGER refuse_{table}_{event};"))
            .expect("the trigger is dropped");
    }
}

fn assert_storage_error(err: CoreError) {
    assert!(
        matches!(&err, CoreError::Storage(store)
            if store.to_string().contains("storage failed")
                && store.to_string().contains("refused by the test")),
        "{err:?}"
    );
}

#[test]
fn a_refused_write_leaves_memory_and_the_database_unchanged() {
    let dir = data_dir();
    let database: PathBuf = dir.path().join(DATABASE_FILE);
    let core = core_on(dir.path());
    core.directory().ensure_admin("adminpass").unwrap();
    let alice = core.directory().add(agent("alice")).unwrap();
    core.set_shared("greeting", Value::from("hello")).unwrap();

    let side = refuse_writes(&database, "users");
    assert_storage_error(core.directory().add(agent("bob")).unwrap_err());
    assert_storage_error(
        core.directory()
            .edit(UserEdit {
                id: alice.id,
                password: Some("other-password".to_owned()),
                ..UserEdit::default()
            })
            .unwrap_err(),
    );
    assert_storage_error(core.delete_user(alice.id).unwrap_err());
    allow_writes(&side, "users");
    refuse_writes(&database, "shared_data");
    assert_storage_error(core.set_shared("greeting", Value::from("bye")).unwrap_err());
    assert_storage_error(core.set_shared("new", Value::Int(1)).unwrap_err());

    let check = |core: &Core| {
        assert_eq!(core.directory().list().len(), 2);
        assert_eq!(core.login("alice", "password1").unwrap().1, alice);
        assert_eq!(core.shared().get("greeting"), Value::from("hello"));
        assert_eq!(core.shared().get("new"), Value::empty_map());
    };
    check(&core);
    drop(core);
    let core = core_on(dir.path());
    check(&core);
    // The failed add took no id.
    assert_eq!(core.directory().add(agent("bob")).unwrap().id, alice.id + 1);
}

#[test]
fn concurrent_writes_reach_the_store_in_memory_order() {
    let dir = data_dir();
    let core = Arc::new(core_on(dir.path()));
    let workers: Vec<_> = (0..4)
        .map(|worker| {
            let core = Arc::clone(&core);
            std::thread::spawn(move || {
                core.directory()
                    .add(agent(&format!("agent{worker}")))
                    .unwrap();
                for round in 0..25 {
                    let data: Map = [(MapKey::Int(worker), Value::Int(round))]
                        .into_iter()
                        .collect();
                    core.set_shared("last", Value::Map(data.clone())).unwrap();
                    core.set_shared(&format!("mine{worker}"), Value::Map(data))
                        .unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let in_memory = (
        core.directory().list(),
        core.shared().get("last"),
        (0..4)
            .map(|worker| core.shared().get(&format!("mine{worker}")))
            .collect::<Vec<_>>(),
    );
    drop(core);
    let core = core_on(dir.path());
    let reloaded = (
        core.directory().list(),
        core.shared().get("last"),
        (0..4)
            .map(|worker| core.shared().get(&format!("mine{worker}")))
            .collect::<Vec<_>>(),
    );
    assert_eq!(reloaded, in_memory);
    assert_eq!(reloaded.0.len(), 4);
}
