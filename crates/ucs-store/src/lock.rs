//! One server per data dir: an exclusive advisory lock on `DATA_DIR/ucs.lock`.
//!
//! SQLite's own locking would let a second server open the same database and
//! interleave its writes with ours; the lock file makes it fail at start
//! instead. The lock is an `flock`, so the kernel drops it when the process
//! ends, however it ends (`kill -9` included): a stale lock file never blocks
//! a restart. The holder writes its pid into the file so the refused process
//! can name it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use fs4::{FileExt, TryLockError};
use ucs_core::StoreError;

/// The lock file's name inside the data dir.
pub const LOCK_FILE: &str = "ucs.lock";

/// Holds the data dir's lock until dropped.
#[derive(Debug)]
#[must_use = "the data dir is locked only while this guard lives"]
pub(crate) struct DataDirLock {
    /// The locked file; closing it releases the lock.
    _file: File,
}

impl DataDirLock {
    /// Takes the lock of `data_dir`, or says who holds it.
    pub(crate) fn take(data_dir: &Path) -> Result<Self, StoreError> {
        let unusable = |reason: String| StoreError::DataDirUnusable {
            path: data_dir.to_owned(),
            reason,
        };
        let path = data_dir.join(LOCK_FILE);
        // Not truncated on open: the holder's pid must stay readable.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|err| unusable(format!("cannot open {}: {err}", path.display())))?;
        // Called through the trait: `File::try_lock` of std is newer than
        // this workspace's minimum Rust.
        match FileExt::try_lock(&file) {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StoreError::InUse {
                    path: data_dir.to_owned(),
                    pid: read_pid(&mut file),
                });
            }
            Err(TryLockError::Error(err)) => {
                return Err(unusable(format!("cannot lock {}: {err}", path.display())));
            }
        }
        let pid = std::process::id().to_string();
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(pid.as_bytes()))
            .map_err(|err| unusable(format!("cannot write {}: {err}", path.display())))?;
        Ok(DataDirLock { _file: file })
    }
}

/// The pid the holder wrote, if it has written one yet.
fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}
