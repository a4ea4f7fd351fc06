//! The data dir belongs to one process: a second node on it would recover (refund) the escrows
//! the live one still holds, and two writers would share one SQLite file and one key.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

use crate::{NodeError, Result};

/// An exclusive lock on `data_dir/verinet.lock` (an OS file lock: released when dropped or
/// when the process dies, so a killed node never leaves a stale lock). The file holds the
/// owner's pid, for the error a second process shows.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the lock of `dir`, or says which process holds it.
    pub fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join("verinet.lock");
        let mut file = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path)?;
        match file.try_lock() {
            Ok(()) => {
                file.set_len(0)?;
                file.rewind()?;
                writeln!(file, "{}", std::process::id())?;
                Ok(Self { _file: file })
            }
            Err(TryLockError::WouldBlock) => {
                let mut owner = String::new();
                let _ = file.read_to_string(&mut owner);
                let owner = owner.trim();
                let by = if owner.is_empty() { String::new() } else { format!(" (pid {owner})") };
                Err(NodeError::DataDirInUse(format!(
                    "{} is in use by another verinet process{by}; stop it, or give this one another --data-dir",
                    dir.display()
                )))
            }
            Err(TryLockError::Error(e)) => Err(e.into()),
        }
    }
}
