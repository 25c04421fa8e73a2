//! Users: who may log in, who is a superuser, who is an agent.
//!
//! The directory also holds each agent's runtime status, because an agent is
//! a user whose `agent` flag is set (SPEC section 8): one map, one lock, so a
//! user edit and a status change can never disagree about who is an agent.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::error::{CoreError, FieldErrors};
use crate::store::{NoStore, Store, StoredUser};
use crate::value::Value;

/// A user id. Signed because ids arrive as Python and JSON integers.
pub type UserId = i64;

/// The id of the first superuser, who can be neither deleted nor demoted.
pub const ADMIN_USER_ID: UserId = 1;

/// The longest username accepted.
pub const USERNAME_MAX_CHARS: usize = 64;
/// The longest display name accepted.
pub const DISPLAYNAME_MAX_CHARS: usize = 128;
/// The shortest password accepted.
pub const PASSWORD_MIN_CHARS: usize = 8;

/// An agent's status, with the integer codes of the plugin module `constants`
/// (SPEC section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgentStatus {
    /// Logged out: `AGENT_OFFLINE = 0`; every agent starts here.
    Offline,
    /// Waiting for a call: `AGENT_READY = 1`.
    Ready,
    /// Not ready, with a reason such as "Lunch": `AGENT_AUX = 2`.
    Aux,
    /// On a call: `AGENT_BUSY = 3`.
    Busy,
}

impl AgentStatus {
    /// Every status, in code order: `AGENT_STATE_ENUM`.
    pub const ALL: [AgentStatus; 4] = [
        AgentStatus::Offline,
        AgentStatus::Ready,
        AgentStatus::Aux,
        AgentStatus::Busy,
    ];

    /// The status with integer code `code`, if there is one.
    pub fn from_code(code: i64) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.code() == code)
    }

    /// The integer code plugins see.
    pub fn code(self) -> i64 {
        match self {
            AgentStatus::Offline => 0,
            AgentStatus::Ready => 1,
            AgentStatus::Aux => 2,
            AgentStatus::Busy => 3,
        }
    }

    /// The constant's name, for logs.
    pub fn name(self) -> &'static str {
        match self {
            AgentStatus::Offline => "AGENT_OFFLINE",
            AgentStatus::Ready => "AGENT_READY",
            AgentStatus::Aux => "AGENT_AUX",
            AgentStatus::Busy => "AGENT_BUSY",
        }
    }
}

/// A user as every API shows it; the password never leaves the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Stable id, assigned on creation, never reused.
    pub id: UserId,
    /// Login name, unique.
    pub username: String,
    /// Name shown to people.
    pub displayname: String,
    /// May call every API method.
    pub superuser: bool,
    /// Takes calls and has a status.
    pub agent: bool,
}

impl User {
    /// The user dict of SPEC section 8.
    pub fn to_value(&self) -> Value {
        Value::record([
            ("id", Value::Int(self.id)),
            ("username", Value::from(self.username.as_str())),
            ("displayname", Value::from(self.displayname.as_str())),
            ("superuser", Value::Bool(self.superuser)),
            ("agent", Value::Bool(self.agent)),
        ])
    }

    /// One field of the user by name, for `ucs.tree.getUsers(field)`.
    pub fn field(&self, field: &str) -> Option<Value> {
        Some(match field {
            "id" => Value::Int(self.id),
            "username" => Value::from(self.username.as_str()),
            "displayname" => Value::from(self.displayname.as_str()),
            "superuser" => Value::Bool(self.superuser),
            "agent" => Value::Bool(self.agent),
            _ => return None,
        })
    }
}

/// An agent and its current status: what hooks, callbacks and `agents.list` see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// The agent's user id.
    pub id: UserId,
    /// The agent's login name.
    pub username: String,
    /// The agent's display name.
    pub displayname: String,
    /// The current status.
    pub status: AgentStatus,
    /// The not-ready reason that came with the status.
    pub reason: String,
}

impl Agent {
    /// The agent dict of `agents.list` and `ucs.agents.getAgents()`.
    pub fn to_value(&self) -> Value {
        Value::record([
            ("id", Value::Int(self.id)),
            ("username", Value::from(self.username.as_str())),
            ("displayname", Value::from(self.displayname.as_str())),
            ("status", Value::Int(self.status.code())),
            ("reason", Value::from(self.reason.as_str())),
        ])
    }
}

/// What `config.users.add` asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewUser {
    /// Login name.
    pub username: String,
    /// Display name; the username when empty.
    pub displayname: String,
    /// Plain password, hashed before it is stored.
    pub password: String,
    /// Superuser flag.
    pub superuser: bool,
    /// Agent flag.
    pub agent: bool,
}

/// What `config.users.edit` asks for: only the fields that are `Some` change.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserEdit {
    /// The user to edit.
    pub id: UserId,
    /// New login name.
    pub username: Option<String>,
    /// New display name.
    pub displayname: Option<String>,
    /// New plain password.
    pub password: Option<String>,
    /// New superuser flag.
    pub superuser: Option<bool>,
    /// New agent flag.
    pub agent: Option<bool>,
}

/// A stored user: the public record, the password hash, the agent state.
#[derive(Debug, Clone)]
struct UserEntry {
    user: User,
    password_hash: String,
    status: AgentStatus,
    reason: String,
}

impl UserEntry {
    fn stored(&self) -> StoredUser {
        StoredUser {
            user: self.user.clone(),
            password_hash: self.password_hash.clone(),
        }
    }

    fn agent(&self) -> Option<Agent> {
        self.user.agent.then(|| Agent {
            id: self.user.id,
            username: self.user.username.clone(),
            displayname: self.user.displayname.clone(),
            status: self.status,
            reason: self.reason.clone(),
        })
    }
}

#[derive(Debug, Default)]
struct DirectoryState {
    users: BTreeMap<UserId, UserEntry>,
    next_id: UserId,
}

/// All users, with agents' runtime status.
///
/// A std `RwLock` is right here: it is only ever held for a map operation
/// and, for a user change, the store write that makes it durable; never
/// across a hook, a hash computation or anything of the core that waits.
/// Writing to the store under the lock is what makes the store see user
/// changes in the same order as memory does.
pub struct Directory {
    state: RwLock<DirectoryState>,
    /// A hash to verify against when the username is unknown, so a failed
    /// login takes as long whether or not the user exists.
    decoy_hash: String,
    /// Where user changes are made durable before they reach `state`.
    store: Arc<dyn Store>,
    /// Counts the times `state` was written; see [`Directory::generation`].
    generation: AtomicU64,
}

/// The directory's write lock; releasing it counts a generation, after the
/// change and before the unlock, so whoever reads a generation and then
/// the state never labels old state with a new generation.
struct DirectoryWrite<'a> {
    state: RwLockWriteGuard<'a, DirectoryState>,
    generation: &'a AtomicU64,
}

impl std::ops::Deref for DirectoryWrite<'_> {
    type Target = DirectoryState;

    fn deref(&self) -> &DirectoryState {
        &self.state
    }
}

impl std::ops::DerefMut for DirectoryWrite<'_> {
    fn deref_mut(&mut self) -> &mut DirectoryState {
        &mut self.state
    }
}

impl Drop for DirectoryWrite<'_> {
    fn drop(&mut self) {
        // Runs before the field `state` drops, so under the lock.
        self.generation.fetch_add(1, Ordering::Release);
    }
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The state holds password hashes, and reading it would take the
        // lock: show nothing of it.
        f.debug_struct("Directory").finish_non_exhaustive()
    }
}

impl Default for Directory {
    fn default() -> Self {
        Self::new()
    }
}

impl Directory {
    /// An empty directory that lives only in memory; ids start at
    /// [`ADMIN_USER_ID`].
    pub fn new() -> Self {
        Directory {
            state: RwLock::new(DirectoryState {
                users: BTreeMap::new(),
                next_id: ADMIN_USER_ID,
            }),
            decoy_hash: hash_password("decoy password never used").unwrap_or_default(),
            store: Arc::new(NoStore),
            generation: AtomicU64::new(0),
        }
    }

    /// A directory holding the users a store loaded, writing every later
    /// change to that store first. Refuses stored users that break the
    /// directory's own rules (duplicate ids or usernames), rather than
    /// guess which one is right.
    pub(crate) fn with_store(
        store: Arc<dyn Store>,
        users: Vec<StoredUser>,
        next_user_id: UserId,
    ) -> Result<Self, CoreError> {
        let mut map = BTreeMap::new();
        for stored in users {
            let id = stored.user.id;
            if id < ADMIN_USER_ID {
                return Err(CoreError::Storage(crate::store::StoreError::Failed(
                    format!(
                        "stored user '{}' has the invalid id {id}",
                        stored.user.username
                    ),
                )));
            }
            if map
                .values()
                .any(|e: &UserEntry| e.user.username == stored.user.username)
            {
                return Err(CoreError::Storage(crate::store::StoreError::Failed(
                    format!("stored username '{}' appears twice", stored.user.username),
                )));
            }
            let entry = UserEntry {
                user: stored.user,
                password_hash: stored.password_hash,
                status: AgentStatus::Offline,
                reason: String::new(),
            };
            if map.insert(id, entry).is_some() {
                return Err(CoreError::Storage(crate::store::StoreError::Failed(
                    format!("stored user id {id} appears twice"),
                )));
            }
        }
        // Never hand out an id that is taken, whatever the store says.
        let above_taken = map.keys().next_back().map_or(ADMIN_USER_ID, |id| id + 1);
        let mut directory = Directory::new();
        directory.state = RwLock::new(DirectoryState {
            users: map,
            next_id: next_user_id.max(above_taken),
        });
        directory.store = store;
        Ok(directory)
    }

    fn read(&self) -> RwLockReadGuard<'_, DirectoryState> {
        // Every write below completes its map update in one step, so a
        // poisoned lock still guards consistent data.
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> DirectoryWrite<'_> {
        DirectoryWrite {
            state: self.state.write().unwrap_or_else(PoisonError::into_inner),
            generation: &self.generation,
        }
    }

    /// A number that changes whenever users or agents (statuses included)
    /// may have changed: a copy of what was read after seeing generation
    /// `g` is current while the generation is still `g`. It lets the API
    /// keep the serialized `agents.list` between changes (issue 13).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Creates user 1, `admin`, with `password`, unless it exists already.
    pub fn ensure_admin(&self, password: &str) -> Result<User, CoreError> {
        if let Some(admin) = self.get(ADMIN_USER_ID) {
            return Ok(admin);
        }
        self.add(NewUser {
            username: "admin".to_owned(),
            displayname: "Administrator".to_owned(),
            password: password.to_owned(),
            superuser: true,
            agent: false,
        })
    }

    /// Validates and creates a user.
    pub fn add(&self, new: NewUser) -> Result<User, CoreError> {
        let mut errors = FieldErrors::new();
        check_username(&new.username, &mut errors);
        check_displayname(&new.displayname, &mut errors);
        check_password(&new.password, &mut errors);
        if !errors.is_empty() {
            return Err(CoreError::InvalidInput(errors));
        }
        // Hash before taking the lock: it takes tens of milliseconds.
        let password_hash = hash_password(&new.password)?;
        let mut state = self.write();
        if state
            .users
            .values()
            .any(|e| e.user.username == new.username)
        {
            return Err(CoreError::field("username", "is already taken"));
        }
        let id = state.next_id;
        let displayname = if new.displayname.is_empty() {
            new.username.clone()
        } else {
            new.displayname
        };
        let user = User {
            id,
            username: new.username,
            displayname,
            superuser: new.superuser,
            agent: new.agent,
        };
        let entry = UserEntry {
            user: user.clone(),
            password_hash,
            status: AgentStatus::Offline,
            reason: String::new(),
        };
        // Durable first: if the store refuses, memory stays as it was.
        self.store.insert_user(&entry.stored())?;
        state.next_id += 1;
        state.users.insert(id, entry);
        Ok(user)
    }

    /// Applies the fields of `edit` that are set, all or nothing, with no
    /// status hook and no event: for stores and tests. The API edits users
    /// through [`crate::Core::edit_user`], which takes an agent whose flag is
    /// cleared OFFLINE through the status pipeline first.
    pub fn edit(&self, edit: UserEdit) -> Result<User, CoreError> {
        self.edit_with(edit, |_, _, _| crate::events::Committed::NOTHING)
            .map(|(user, _)| user)
    }

    /// [`Directory::edit`], calling `reset` under the write lock when the
    /// edit stops an agent that is not OFFLINE from being an agent, so the
    /// caller can number its `agent.status` event in commit order.
    pub(crate) fn edit_with(
        &self,
        edit: UserEdit,
        reset: impl FnOnce(AgentStatus, &str, &Agent) -> crate::events::Committed,
    ) -> Result<(User, crate::events::Committed), CoreError> {
        let mut errors = FieldErrors::new();
        if let Some(username) = &edit.username {
            check_username(username, &mut errors);
        }
        if let Some(displayname) = &edit.displayname {
            check_displayname(displayname, &mut errors);
        }
        if let Some(password) = &edit.password {
            check_password(password, &mut errors);
        }
        if edit.id == ADMIN_USER_ID && edit.superuser == Some(false) {
            errors.insert(
                "superuser".to_owned(),
                "user 1 must stay a superuser".to_owned(),
            );
        }
        if !errors.is_empty() {
            return Err(CoreError::InvalidInput(errors));
        }
        let password_hash = edit.password.as_deref().map(hash_password).transpose()?;
        let mut state = self.write();
        if let Some(username) = &edit.username
            && state
                .users
                .values()
                .any(|e| e.user.username == *username && e.user.id != edit.id)
        {
            return Err(CoreError::field("username", "is already taken"));
        }
        let current = state
            .users
            .get_mut(&edit.id)
            .ok_or_else(|| not_found_user(edit.id))?;
        // Edit a copy, store it, and only then replace the entry, so a
        // failed store write leaves memory as it was.
        let mut entry = current.clone();
        if let Some(username) = edit.username {
            entry.user.username = username;
        }
        if let Some(displayname) = edit.displayname {
            entry.user.displayname = displayname;
        }
        if let Some(hash) = password_hash {
            entry.password_hash = hash;
        }
        if let Some(superuser) = edit.superuser {
            entry.user.superuser = superuser;
        }
        let mut was = None;
        if let Some(agent) = edit.agent
            && agent != entry.user.agent
        {
            if entry.status != AgentStatus::Offline {
                was = Some((entry.status, std::mem::take(&mut entry.reason)));
            }
            entry.user.agent = agent;
            entry.status = AgentStatus::Offline;
            entry.reason.clear();
        }
        self.store.update_user(&entry.stored())?;
        let committed = match (&was, current.agent()) {
            (Some((status, reason)), Some(before)) => {
                let after = Agent {
                    status: AgentStatus::Offline,
                    reason: String::new(),
                    ..before
                };
                reset(*status, reason, &after)
            }
            _ => crate::events::Committed::NOTHING,
        };
        let user = entry.user.clone();
        *current = entry;
        Ok((user, committed))
    }

    /// Deletes a user; user 1 cannot be deleted.
    pub fn delete(&self, id: UserId) -> Result<User, CoreError> {
        if id == ADMIN_USER_ID {
            return Err(CoreError::Processing("user 1 cannot be deleted".to_owned()));
        }
        let mut state = self.write();
        if !state.users.contains_key(&id) {
            return Err(not_found_user(id));
        }
        self.store.delete_user(id)?;
        state
            .users
            .remove(&id)
            .map(|entry| entry.user)
            .ok_or_else(|| not_found_user(id))
    }

    /// The user with `id`.
    pub fn get(&self, id: UserId) -> Option<User> {
        self.read().users.get(&id).map(|entry| entry.user.clone())
    }

    /// Every user, by id.
    pub fn list(&self) -> Vec<User> {
        self.read().users.values().map(|e| e.user.clone()).collect()
    }

    /// Checks a login. Wrong password and unknown user fail the same way and
    /// take the same time.
    pub fn verify_login(&self, username: &str, password: &str) -> Result<User, CoreError> {
        let found = self
            .read()
            .users
            .values()
            .find(|entry| entry.user.username == username)
            .map(|entry| (entry.user.clone(), entry.password_hash.clone()));
        // Verify outside the lock: it takes tens of milliseconds.
        match found {
            Some((user, hash)) if verify_password(password, &hash) => Ok(user),
            Some(_) => Err(CoreError::BadCredentials),
            None => {
                verify_password(password, &self.decoy_hash);
                Err(CoreError::BadCredentials)
            }
        }
    }

    /// Every agent with its status, by id.
    pub fn agents(&self) -> Vec<Agent> {
        self.read()
            .users
            .values()
            .filter_map(UserEntry::agent)
            .collect()
    }

    /// The agent with `id`, or not-found if there is no such user or the
    /// user is not an agent.
    pub fn agent(&self, id: UserId) -> Result<Agent, CoreError> {
        self.read()
            .users
            .get(&id)
            .and_then(UserEntry::agent)
            .ok_or_else(|| not_found_agent(id))
    }

    /// Stores a new status and returns the agent after it, unless `may_commit`,
    /// asked under the write lock, says no (then nothing changes and `None`
    /// is returned). `commit` runs under the write lock with the previous
    /// status and reason and the agent after, so the caller can number the
    /// change in commit order; it is told the previous reason by reference so
    /// that nothing is copied when nobody listens.
    pub(crate) fn commit_status<T>(
        &self,
        id: UserId,
        status: AgentStatus,
        reason: &str,
        may_commit: impl FnOnce() -> bool,
        commit: impl FnOnce(AgentStatus, &str, &Agent) -> T,
    ) -> Result<Option<(Agent, T)>, CoreError> {
        let mut state = self.write();
        let entry = state
            .users
            .get_mut(&id)
            .filter(|entry| entry.user.agent)
            .ok_or_else(|| not_found_agent(id))?;
        if !may_commit() {
            return Ok(None);
        }
        let after = Agent {
            id: entry.user.id,
            username: entry.user.username.clone(),
            displayname: entry.user.displayname.clone(),
            status,
            reason: reason.to_owned(),
        };
        let token = commit(entry.status, &entry.reason, &after);
        entry.status = status;
        // Reuses the old reason's buffer: no allocation for the usual short reason.
        entry.reason.clear();
        entry.reason.push_str(reason);
        Ok(Some((after, token)))
    }
}

fn not_found_user(id: UserId) -> CoreError {
    CoreError::NotFound(format!("user {id} not found"))
}

fn not_found_agent(id: UserId) -> CoreError {
    CoreError::NotFound(format!("agent {id} not found"))
}

fn check_username(username: &str, errors: &mut FieldErrors) {
    let message = if username.is_empty() {
        "must not be empty"
    } else if username.chars().count() > USERNAME_MAX_CHARS {
        "must be at most 64 characters"
    } else if !username
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'))
    {
        "may hold only letters, digits and . _ @ -"
    } else {
        return;
    };
    errors.insert("username".to_owned(), message.to_owned());
}

fn check_displayname(displayname: &str, errors: &mut FieldErrors) {
    if displayname.chars().count() > DISPLAYNAME_MAX_CHARS {
        errors.insert(
            "displayname".to_owned(),
            "must be at most 128 characters".to_owned(),
        );
    }
}

fn check_password(password: &str, errors: &mut FieldErrors) {
    if password.chars().count() < PASSWORD_MIN_CHARS {
        errors.insert(
            "password".to_owned(),
            "must be at least 8 characters".to_owned(),
        );
    }
}

fn hash_password(password: &str) -> Result<String, CoreError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt)
        .map_err(|err| CoreError::Processing(format!("no OS randomness for a salt: {err}")))?;
    let salt = SaltString::encode_b64(&salt)
        .map_err(|err| CoreError::Processing(format!("salt encoding failed: {err}")))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| CoreError::Processing(format!("password hashing failed: {err}")))
}

fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_user(username: &str) -> NewUser {
        NewUser {
            username: username.to_owned(),
            password: "password1".to_owned(),
            agent: true,
            ..NewUser::default()
        }
    }

    #[test]
    fn validation_reports_every_bad_field_at_once() {
        let directory = Directory::new();
        let err = directory
            .add(NewUser {
                username: "bad name".to_owned(),
                displayname: "x".repeat(129),
                password: "short".to_owned(),
                ..NewUser::default()
            })
            .unwrap_err();
        let CoreError::InvalidInput(fields) = err else {
            panic!("expected invalid input, got {err:?}");
        };
        assert_eq!(
            fields.keys().collect::<Vec<_>>(),
            ["displayname", "password", "username"]
        );
    }

    #[test]
    fn usernames_are_unique_and_limited() {
        let directory = Directory::new();
        directory.add(new_user("alice")).unwrap();
        assert_eq!(
            directory.add(new_user("alice")).unwrap_err(),
            CoreError::field("username", "is already taken")
        );
        assert!(directory.add(new_user(&"a".repeat(65))).is_err());
        assert!(directory.add(new_user(&"a".repeat(64))).is_ok());
        assert!(directory.add(new_user("")).is_err());
    }

    #[test]
    fn password_is_stored_only_as_a_salted_hash() {
        let directory = Directory::new();
        directory.add(new_user("alice")).unwrap();
        directory.add(new_user("bob")).unwrap();
        let state = directory.read();
        let hashes: Vec<_> = state.users.values().map(|e| &e.password_hash).collect();
        assert!(
            hashes
                .iter()
                .all(|h| h.starts_with("$argon2") && !h.contains("password1"))
        );
        assert_ne!(hashes[0], hashes[1], "same password, different salts");
    }

    #[test]
    fn wrong_password_and_unknown_user_fail_alike() {
        let directory = Directory::new();
        directory.add(new_user("alice")).unwrap();
        assert_eq!(
            directory
                .verify_login("alice", "password1")
                .unwrap()
                .username,
            "alice"
        );
        assert_eq!(
            directory.verify_login("alice", "wrong-pass").unwrap_err(),
            directory.verify_login("nobody", "password1").unwrap_err()
        );
    }

    #[test]
    fn user_one_is_protected() {
        let directory = Directory::new();
        directory.ensure_admin("adminpass").unwrap();
        assert!(matches!(directory.delete(1), Err(CoreError::Processing(_))));
        let err = directory
            .edit(UserEdit {
                id: 1,
                superuser: Some(false),
                ..UserEdit::default()
            })
            .unwrap_err();
        assert!(matches!(err, CoreError::InvalidInput(f) if f.contains_key("superuser")));
    }

    #[test]
    fn agents_start_offline_and_unknown_ids_are_not_found() {
        let directory = Directory::new();
        let alice = directory.add(new_user("alice")).unwrap();
        assert_eq!(
            directory.agent(alice.id).unwrap().status,
            AgentStatus::Offline
        );
        assert!(matches!(directory.agent(99), Err(CoreError::NotFound(_))));
        assert!(matches!(directory.delete(99), Err(CoreError::NotFound(_))));
    }
}
