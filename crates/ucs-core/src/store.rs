//! Where users and shared data are kept across restarts: the [`Store`] trait.
//!
//! The core does no I/O itself; a store is plugged in from outside
//! (`ucs-store` implements it on SQLite). The rule every implementation and
//! every caller keeps: **a write reaches the store before memory changes and
//! before the API call returns**. A store write that fails leaves memory as it
//! was and fails the call with [`CoreError::Storage`].
//!
//! What is kept: users with their password hashes and flags, the next user id
//! (so a deleted user's id is never given out again), and shared data. What
//! is not: agents' runtime statuses (every agent starts `AGENT_OFFLINE`) and
//! sessions (everyone logs in again after a restart).

use std::path::PathBuf;

use crate::error::CoreError;
use crate::users::{ADMIN_USER_ID, User, UserId};
use crate::value::Value;

/// A user as a store keeps it: the public record and the password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredUser {
    /// The record every API shows.
    pub user: User,
    /// The salted argon2 hash in PHC string form; never the password.
    pub password_hash: String,
}

/// Everything a store holds, read once at start.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredState {
    /// Every user, in any order.
    pub users: Vec<StoredUser>,
    /// The id the next new user gets; above every id ever given out, so ids
    /// of deleted users are never reused.
    pub next_user_id: UserId,
    /// Every shared-data identificator ever set, with its data.
    pub shared: Vec<(String, Value)>,
}

impl Default for StoredState {
    fn default() -> Self {
        StoredState {
            users: Vec::new(),
            next_user_id: ADMIN_USER_ID,
            shared: Vec::new(),
        }
    }
}

/// Durable storage of users and shared data.
///
/// Each method returns only once its write is durable (it survives a crash
/// of the process), or fails and has changed nothing. The core calls user
/// writes under the directory's write lock and shared-data writes inside the
/// identificator's turn, so the store sees writes in the order memory does;
/// an implementation therefore must not wait on anything of the core's.
pub trait Store: Send + Sync {
    /// Reads everything stored, for a core starting up.
    fn load(&self) -> Result<StoredState, StoreError>;

    /// Adds a new user. Its id is taken for good: after this, the stored
    /// next user id is above it even if the user is later deleted.
    fn insert_user(&self, user: &StoredUser) -> Result<(), StoreError>;

    /// Replaces an existing user's record and hash.
    fn update_user(&self, user: &StoredUser) -> Result<(), StoreError>;

    /// Deletes a user.
    fn delete_user(&self, id: UserId) -> Result<(), StoreError>;

    /// Stores `data` under `identificator`, replacing what was there.
    fn save_shared(&self, identificator: &str, data: &Value) -> Result<(), StoreError>;
}

/// Why a store could not be opened, read or written.
///
/// The opening kinds are distinct so a server can tell an operator exactly
/// what is wrong at start, and never resets data to get past it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The data dir cannot be created or written.
    #[error("data dir {} cannot be used: {reason}", .path.display())]
    DataDirUnusable {
        /// The data dir.
        path: PathBuf,
        /// What the operating system said.
        reason: String,
    },
    /// Another running process holds the data dir.
    #[error(
        "data dir {} is in use by another ucs process{}",
        .path.display(),
        .pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    InUse {
        /// The data dir.
        path: PathBuf,
        /// The other process, if it recorded its pid.
        pid: Option<u32>,
    },
    /// The database file is not a database, or fails its integrity check.
    #[error("database {} is corrupt: {reason}; restore it from a backup", .path.display())]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What the check found.
        reason: String,
    },
    /// The database was written by a newer version of the server.
    #[error(
        "database {} has schema version {found}, newer than this ucs supports ({supported}); upgrade ucs",
        .path.display()
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// The schema version found in the file.
        found: i64,
        /// The newest schema version this build knows.
        supported: i64,
    },
    /// A read or write failed after the store was opened (disk full, I/O
    /// error, a record that cannot be decoded, ...).
    #[error("storage failed: {0}")]
    Failed(String),
}

impl From<StoreError> for CoreError {
    fn from(err: StoreError) -> Self {
        CoreError::Storage(err)
    }
}

/// The store of a core that lives only in memory: holds nothing, refuses
/// nothing. Used by [`crate::Core::new`] and [`crate::Directory::new`].
#[derive(Debug, Default)]
pub(crate) struct NoStore;

impl Store for NoStore {
    fn load(&self) -> Result<StoredState, StoreError> {
        Ok(StoredState::default())
    }

    fn insert_user(&self, _user: &StoredUser) -> Result<(), StoreError> {
        Ok(())
    }

    fn update_user(&self, _user: &StoredUser) -> Result<(), StoreError> {
        Ok(())
    }

    fn delete_user(&self, _id: UserId) -> Result<(), StoreError> {
        Ok(())
    }

    fn save_shared(&self, _identificator: &str, _data: &Value) -> Result<(), StoreError> {
        Ok(())
    }
}
