//! The versioned schema. Each migration runs once, in its own transaction,
//! and the schema version is SQLite's `user_version`: the number of
//! migrations applied. Append new migrations; never edit a released one.

use rusqlite_migration::{M, Migrations};

/// Every migration, oldest first.
const MIGRATIONS: &[M<'static>] = &[
    // 1: users, the id counter, shared data.
    M::up(
        "CREATE TABLE users (
            id INTEGER PRIMARY KEY,
            username TEXT NOT NULL UNIQUE,
            displayname TEXT NOT NULL,
            superuser INTEGER NOT NULL CHECK (superuser IN (0, 1)),
            agent INTEGER NOT NULL CHECK (agent IN (0, 1)),
            password_hash TEXT NOT NULL
        ) STRICT;
        -- Above every user id ever given out, so a deleted user's id is
        -- never reused; kept apart from users because MAX(id) forgets
        -- deleted users.
        CREATE TABLE counters (
            name TEXT PRIMARY KEY,
            value INTEGER NOT NULL
        ) STRICT;
        INSERT INTO counters (name, value) VALUES ('next_user_id', 1);
        -- data_json: the value as tagged JSON (see encoding.rs), int dict
        -- keys kept (D4).
        CREATE TABLE shared_data (
            identificator TEXT PRIMARY KEY,
            data_json TEXT NOT NULL
        ) STRICT;",
    ),
];

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The migrations, ready to apply.
pub(crate) fn migrations() -> Migrations<'static> {
    Migrations::from_slice(MIGRATIONS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_valid() {
        super::migrations().validate().unwrap();
    }
}
