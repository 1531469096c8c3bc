//! Advisory process locks (`flock`) on files under `data_root`.
//!
//! The kernel drops an flock when its holder dies, so a killed process never leaves a stale
//! lock behind. The holder writes its pid into the file so that the next one can say who holds it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Held while alive; the lock is released on drop (or when the process dies).
#[derive(Debug)]
pub struct LockGuard {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another beamdb {what} is running ({holder}; lock file {path}); try again later")]
    Held {
        what: &'static str,
        holder: String,
        path: PathBuf,
    },
    #[error("{path}: cannot open the lock file: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Takes the exclusive lock at `path` without waiting. `what` names the operation in the
/// message another process gets ("reindex", "migrate").
pub fn try_exclusive(path: &Path, what: &'static str) -> Result<LockGuard, LockError> {
    let mut file = open(path)?;
    match file.try_lock() {
        Ok(()) => {
            // Best effort: the pid is for messages only; the lock itself is the flock.
            let _ = file.set_len(0);
            let _ = file.seek(SeekFrom::Start(0));
            let _ = write!(file, "{}", std::process::id());
            let _ = file.flush();
            Ok(LockGuard { _file: file })
        }
        Err(std::fs::TryLockError::WouldBlock) => Err(LockError::Held {
            what,
            holder: holder(&mut file),
            path: path.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(LockError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Takes a shared lock at `path` without waiting: many holders at once, none while an
/// exclusive holder runs.
pub fn try_shared(path: &Path, what: &'static str) -> Result<LockGuard, LockError> {
    let mut file = open(path)?;
    match file.try_lock_shared() {
        Ok(()) => Ok(LockGuard { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => Err(LockError::Held {
            what,
            holder: holder(&mut file),
            path: path.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(LockError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Takes a shared lock at `path`, waiting for an exclusive holder to finish. Writers that
/// must not run during a `migrate` (ingest) hold this; `migrate` takes it exclusively.
pub fn shared_wait(path: &Path) -> Result<LockGuard, LockError> {
    let file = open(path)?;
    file.lock_shared().map_err(|source| LockError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(LockGuard { _file: file })
}

fn open(path: &Path) -> Result<File, LockError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|source| LockError::Io {
            path: path.to_path_buf(),
            source,
        })
}

fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    match text.trim().parse::<u32>() {
        Ok(pid) => format!("pid {pid}"),
        Err(_) => "pid unknown".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_exclusive_lock_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let _held = try_exclusive(&path, "reindex").unwrap();
        let err = try_exclusive(&path, "reindex").unwrap_err();
        let pid = std::process::id().to_string();
        assert!(err.to_string().contains(&pid), "{err}");
        assert!(try_shared(&path, "ingest").is_err());
    }

    #[test]
    fn shared_locks_coexist_and_block_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let _a = try_shared(&path, "ingest").unwrap();
        let _b = try_shared(&path, "ingest").unwrap();
        assert!(try_exclusive(&path, "migrate").is_err());
    }
}
