//! Durable storage of UCS users and shared data: the `ucs-core` [`Store`]
//! trait on SQLite, in `DATA_DIR/ucs.db`.
//!
//! SQLite is compiled in (`rusqlite` with `bundled`), so there is nothing to
//! install or start. The database runs in WAL mode with `synchronous=FULL`:
//! a write returns only after its commit is in the WAL on disk, so every
//! acknowledged change survives `kill -9` and power loss, and a commit cut
//! short is rolled back at the next open. A live database can be copied with
//! `sqlite3 ucs.db ".backup copy.db"` while the server runs.
//!
//! Opening never resets or repairs anything: a data dir that cannot be
//! written, one another `ucs` holds, a corrupt database and one from a newer
//! `ucs` each fail with their own [`StoreError`] kind and message.
//!
//! # Layout
//! - [`SqliteStore`] (this file): opening, the checks at open, the trait's
//!   reads and writes.
//! - `lock`: the exclusive advisory lock on `DATA_DIR/ucs.lock`, so only one
//!   server uses a data dir.
//! - `schema`: the versioned migrations, applied at open.
//! - `encoding`: shared data as tagged JSON text that keeps int dict keys (D4).

mod encoding;
mod lock;
mod schema;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};
use ucs_core::{Store, StoreError, StoredState, StoredUser, User, UserId, Value};

use crate::lock::DataDirLock;
pub use crate::lock::LOCK_FILE;
pub use crate::schema::SCHEMA_VERSION;

/// The database file's name inside the data dir.
pub const DATABASE_FILE: &str = "ucs.db";

/// How long a write waits for a lock another connection (a `sqlite3`
/// `.backup`, say) holds before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The most `quick_check` problems quoted in an error message.
const QUICK_CHECK_PROBLEMS_SHOWN: usize = 3;

/// Users and shared data in `DATA_DIR/ucs.db`.
///
/// Holds the data dir's lock for as long as it lives: drop it to let another
/// server open the same data dir.
#[derive(Debug)]
pub struct SqliteStore {
    /// The one connection. SQLite writes one transaction at a time anyway;
    /// the mutex makes the store `Sync`, and no lock of the core waits on it
    /// except the one the core deliberately holds to order its writes.
    connection: Mutex<Connection>,
    /// The database file, for error messages.
    path: PathBuf,
    /// The data dir's lock. Declared after `connection` so the database is
    /// closed (and its WAL checkpointed) before another process may take it.
    _lock: DataDirLock,
}

impl SqliteStore {
    /// Opens (creating if needed) the data dir and its database, checks the
    /// database, and applies any pending schema migrations.
    ///
    /// Fails with [`StoreError::DataDirUnusable`] when `data_dir` cannot be
    /// created or written, [`StoreError::InUse`] when another process holds
    /// it, [`StoreError::Corrupt`] when `ucs.db` is not a database or fails
    /// `PRAGMA quick_check`, and [`StoreError::NewerSchema`] when a newer
    /// `ucs` wrote it. None of these changes the database.
    pub fn open(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|err| StoreError::DataDirUnusable {
            path: data_dir.to_owned(),
            reason: format!("cannot create it: {err}"),
        })?;
        let lock = DataDirLock::take(data_dir)?;
        let path = data_dir.join(DATABASE_FILE);
        let opening = |err: rusqlite::Error| open_error(data_dir, &path, err);
        // SQLite takes an empty file for a new database and would start it
        // afresh: every user and shared value gone without a word. Only a
        // first start finds no file; an empty one was truncated.
        if std::fs::metadata(&path).is_ok_and(|found| found.len() == 0) {
            return Err(StoreError::Corrupt {
                path,
                reason: "it is empty (0 bytes): it was truncated, and nothing is reset \
                         silently; delete it only to start with an empty database"
                    .to_owned(),
            });
        }

        let mut connection = Connection::open(&path).map_err(opening)?;
        connection.busy_timeout(BUSY_TIMEOUT).map_err(opening)?;
        // The first read of the file: this is where "not a database" shows.
        let found: i64 = connection
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(opening)?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                path,
                found,
                supported: SCHEMA_VERSION,
            });
        }
        quick_check(&connection).map_err(|reason| match reason {
            QuickCheck::Problems(problems) => StoreError::Corrupt {
                path: path.clone(),
                reason: problems,
            },
            QuickCheck::Error(err) => opening(err),
        })?;
        let mode: String = connection
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(opening)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::DataDirUnusable {
                path: data_dir.to_owned(),
                reason: format!("its file system does not support SQLite's WAL mode ({mode})"),
            });
        }
        // In WAL mode FULL syncs the WAL at every commit: an acknowledged
        // write survives power loss, not only a crash of the process.
        connection
            .pragma_update(None, "synchronous", "FULL")
            .map_err(opening)?;
        schema::migrations()
            .to_latest(&mut connection)
            .map_err(|err| match err {
                rusqlite_migration::Error::RusqliteError { err, .. } => opening(err),
                other => StoreError::Failed(format!(
                    "cannot migrate {} to schema version {SCHEMA_VERSION}: {other}",
                    path.display()
                )),
            })?;
        if found < SCHEMA_VERSION {
            tracing::info!(
                database = %path.display(),
                "schema migrated from version {found} to {SCHEMA_VERSION}"
            );
        }
        Ok(SqliteStore {
            connection: Mutex::new(connection),
            path,
            _lock: lock,
        })
    }

    /// The database file.
    pub fn database_path(&self) -> &Path {
        &self.path
    }

    fn connection(&self) -> MutexGuard<'_, Connection> {
        // A panic mid-transaction drops the transaction, which rolls it back:
        // the connection behind a poisoned mutex is still consistent.
        self.connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `change` in one immediate transaction and commits it; returns
    /// the rows it changed. `what` names the change for the error message.
    fn write(
        &self,
        what: &str,
        change: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<usize>,
    ) -> Result<usize, StoreError> {
        let mut connection = self.connection();
        let run = || {
            // Immediate: take the write lock up front, so a concurrent
            // reader can never turn this into a deadlock half way.
            let transaction =
                connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let changed = change(&transaction)?;
            transaction.commit()?;
            Ok(changed)
        };
        run().map_err(|err: rusqlite::Error| {
            StoreError::Failed(format!("cannot {what} in {}: {err}", self.path.display()))
        })
    }

    fn read_error(&self, err: rusqlite::Error) -> StoreError {
        match err.sqlite_error_code() {
            Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
                path: self.path.clone(),
                reason: err.to_string(),
            },
            _ => StoreError::Failed(format!("cannot read {}: {err}", self.path.display())),
        }
    }
}

impl Store for SqliteStore {
    fn load(&self) -> Result<StoredState, StoreError> {
        let mut connection = self.connection();
        // One read transaction: users, counter and shared data from one snapshot.
        let transaction = connection
            .transaction()
            .map_err(|err| self.read_error(err))?;
        let users = transaction
            .prepare(
                "SELECT id, username, displayname, superuser, agent, password_hash
                 FROM users ORDER BY id",
            )
            .and_then(|mut statement| {
                statement
                    .query_map([], |row| {
                        Ok(StoredUser {
                            user: User {
                                id: row.get(0)?,
                                username: row.get(1)?,
                                displayname: row.get(2)?,
                                superuser: row.get(3)?,
                                agent: row.get(4)?,
                            },
                            password_hash: row.get(5)?,
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(|err| self.read_error(err))?;
        let next_user_id: UserId = transaction
            .query_row(
                "SELECT value FROM counters WHERE name = 'next_user_id'",
                [],
                |row| row.get(0),
            )
            .optional()
            .map_err(|err| self.read_error(err))?
            .ok_or_else(|| StoreError::Corrupt {
                path: self.path.clone(),
                reason: "the next_user_id counter is missing".to_owned(),
            })?;
        let rows = transaction
            .prepare("SELECT identificator, data_json FROM shared_data ORDER BY identificator")
            .and_then(|mut statement| {
                statement
                    .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect::<rusqlite::Result<Vec<(String, String)>>>()
            })
            .map_err(|err| self.read_error(err))?;
        let shared = rows
            .into_iter()
            .map(|(identificator, text)| {
                let value = encoding::decode(&text).map_err(|reason| StoreError::Corrupt {
                    path: self.path.clone(),
                    reason: format!("shared data '{identificator}' cannot be read: {reason}"),
                })?;
                Ok((identificator, value))
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(StoredState {
            users,
            next_user_id,
            shared,
        })
    }

    fn insert_user(&self, stored: &StoredUser) -> Result<(), StoreError> {
        let user = &stored.user;
        self.write(&format!("add user '{}'", user.username), |transaction| {
            transaction.execute(
                "INSERT INTO users (id, username, displayname, superuser, agent, password_hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    user.id,
                    user.username,
                    user.displayname,
                    user.superuser,
                    user.agent,
                    stored.password_hash
                ],
            )?;
            // In the same transaction: the id is taken for good exactly when
            // the user exists.
            transaction.execute(
                "UPDATE counters SET value = MAX(value, ?1 + 1) WHERE name = 'next_user_id'",
                params![user.id],
            )
        })?;
        Ok(())
    }

    fn update_user(&self, stored: &StoredUser) -> Result<(), StoreError> {
        let user = &stored.user;
        let changed = self.write(&format!("save user {}", user.id), |transaction| {
            transaction.execute(
                "UPDATE users SET username = ?2, displayname = ?3, superuser = ?4, agent = ?5,
                     password_hash = ?6
                 WHERE id = ?1",
                params![
                    user.id,
                    user.username,
                    user.displayname,
                    user.superuser,
                    user.agent,
                    stored.password_hash
                ],
            )
        })?;
        if changed == 0 {
            return Err(StoreError::Failed(format!(
                "cannot save user {} in {}: it is not in the database",
                user.id,
                self.path.display()
            )));
        }
        Ok(())
    }

    fn delete_user(&self, id: UserId) -> Result<(), StoreError> {
        // A user already absent is what was asked for: not an error.
        self.write(&format!("delete user {id}"), |transaction| {
            transaction.execute("DELETE FROM users WHERE id = ?1", params![id])
        })?;
        Ok(())
    }

    fn save_shared(&self, identificator: &str, data: &Value) -> Result<(), StoreError> {
        let text = encoding::encode(data).map_err(|reason| {
            StoreError::Failed(format!(
                "cannot store shared data '{identificator}': {reason}"
            ))
        })?;
        self.write(
            &format!("save shared data '{identificator}'"),
            |transaction| {
                transaction.execute(
                    "INSERT INTO shared_data (identificator, data_json) VALUES (?1, ?2)
                     ON CONFLICT (identificator) DO UPDATE SET data_json = excluded.data_json",
                    params![identificator, text],
                )
            },
        )?;
        Ok(())
    }
}

/// What `PRAGMA quick_check` found wrong, or why it could not run.
enum QuickCheck {
    /// The database is damaged; the first problems it reported.
    Problems(String),
    /// The check itself failed (often: the file is damaged beyond reading).
    Error(rusqlite::Error),
}

fn quick_check(connection: &Connection) -> Result<(), QuickCheck> {
    let rows = connection
        .prepare("PRAGMA quick_check")
        .and_then(|mut statement| {
            statement
                .query_map([], |row| row.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(QuickCheck::Error)?;
    if rows.len() == 1 && rows[0] == "ok" {
        return Ok(());
    }
    let shown: Vec<&str> = rows
        .iter()
        .take(QUICK_CHECK_PROBLEMS_SHOWN)
        .map(String::as_str)
        .collect();
    Err(QuickCheck::Problems(format!(
        "PRAGMA quick_check found {} problem(s): {}",
        rows.len(),
        shown.join("; ")
    )))
}

/// Sorts a failure while opening into the kinds an operator can act on.
fn open_error(data_dir: &Path, path: &Path, err: rusqlite::Error) -> StoreError {
    match err.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            path: path.to_owned(),
            reason: err.to_string(),
        },
        Some(
            ErrorCode::CannotOpen
            | ErrorCode::ReadOnly
            | ErrorCode::PermissionDenied
            | ErrorCode::DiskFull,
        ) => StoreError::DataDirUnusable {
            path: data_dir.to_owned(),
            reason: format!("cannot write {}: {err}", path.display()),
        },
        _ => StoreError::Failed(format!("cannot open {}: {err}", path.display())),
    }
}
