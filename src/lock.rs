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
    /// A per-run lock file, removed by its holder on release (see [`run_lock`]).
    remove: Option<PathBuf>,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // Unlinked while still locked: a waiter that opened the old file then finds that its
        // inode is no longer the path's and starts again (see `run_lock`).
        if let Some(path) = self.remove.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Whether [`run_lock`] waits for the holder or gives up at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    Yes,
    No,
}

/// Takes the exclusive lock of one run (`frames.staging/{uid}.lock`): held by the ingest that
/// writes the run's frames and by `verify --repair` while it removes them, so that neither
/// removes the other's work as a leftover. The file is removed on release, so the staging
/// folder does not fill up with one file per run ever ingested; removing a lock file is only
/// safe with a check that the locked inode is still the one at the path, which this does.
pub fn run_lock(path: &Path, wait: Wait) -> Result<LockGuard, LockError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| LockError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    }
    loop {
        let mut file = open(path)?;
        match wait {
            Wait::Yes => file.lock().map_err(|source| LockError::Io {
                path: path.to_path_buf(),
                source,
            })?,
            Wait::No => match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(LockError::Held {
                        what: "ingest of this run",
                        holder: holder(&mut file),
                        path: path.to_path_buf(),
                    });
                }
                Err(std::fs::TryLockError::Error(source)) => {
                    return Err(LockError::Io {
                        path: path.to_path_buf(),
                        source,
                    });
                }
            },
        }
        if same_file(&file, path) {
            let _ = file.set_len(0);
            let _ = file.seek(SeekFrom::Start(0));
            let _ = write!(file, "{}", std::process::id());
            let _ = file.flush();
            return Ok(LockGuard {
                _file: file,
                remove: Some(path.to_path_buf()),
            });
        }
        // The previous holder removed the file after we opened it: lock the new one.
    }
}

/// Whether someone holds the lock at `path`. Creates nothing (for a read-only `verify`): no
/// file means no holder, because holders create it.
pub fn is_held(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    matches!(
        file.try_lock_shared(),
        Err(std::fs::TryLockError::WouldBlock)
    )
}

/// Whether the locked `file` is still the one at `path`. An ingest that created a data_root
/// and landed nothing removes it, lock file included (`beamtime::discard_unused`); a process
/// that had opened that file and waited for it would otherwise hold a lock nobody else
/// sees. Every taker checks after locking and starts again on a mismatch.
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
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

impl crate::exit::HasExitStatus for LockError {
    fn exit_status(&self) -> crate::exit::ExitStatus {
        match self {
            LockError::Held { .. } => crate::exit::ExitStatus::Locked,
            LockError::Io { .. } => crate::exit::ExitStatus::Failure,
        }
    }
}

/// Takes the exclusive lock at `path` without waiting. `what` names the operation in the
/// message another process gets ("reindex", "migrate").
pub fn try_exclusive(path: &Path, what: &'static str) -> Result<LockGuard, LockError> {
    let mut file = open(path)?;
    match file.try_lock() {
        Ok(()) if !same_file(&file, path) => try_exclusive(path, what),
        Ok(()) => {
            // Best effort: the pid is for messages only; the lock itself is the flock.
            let _ = file.set_len(0);
            let _ = file.seek(SeekFrom::Start(0));
            let _ = write!(file, "{}", std::process::id());
            let _ = file.flush();
            Ok(LockGuard {
                _file: file,
                remove: None,
            })
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

/// Proof that this process holds `data_root`'s migrate lock exclusively. Every function that
/// applies migrations to an existing database takes one, so that no upgrade can run beside
/// an ingest, a reindex or another upgrade (two would each back up and migrate).
#[derive(Debug)]
pub struct MigrateExclusive {
    /// Held for its drop: the lock ends with it.
    _guard: LockGuard,
}

/// Takes the migrate lock at `path` exclusively, trying for up to `patience` (zero: once).
/// `what` names the operation in the message another process gets.
pub fn migrate_exclusive(
    path: &Path,
    what: &'static str,
    patience: std::time::Duration,
) -> Result<MigrateExclusive, LockError> {
    let until = std::time::Instant::now() + patience;
    loop {
        match try_exclusive(path, what) {
            Ok(guard) => return Ok(MigrateExclusive { _guard: guard }),
            Err(LockError::Held { .. }) if std::time::Instant::now() < until => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(err) => return Err(err),
        }
    }
}

/// Takes a shared lock at `path` without waiting: many holders at once, none while an
/// exclusive holder runs.
pub fn try_shared(path: &Path, what: &'static str) -> Result<LockGuard, LockError> {
    let mut file = open(path)?;
    match file.try_lock_shared() {
        Ok(()) if !same_file(&file, path) => try_shared(path, what),
        Ok(()) => Ok(LockGuard {
            _file: file,
            remove: None,
        }),
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
    loop {
        let file = open(path)?;
        file.lock_shared().map_err(|source| LockError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if same_file(&file, path) {
            return Ok(LockGuard {
                _file: file,
                remove: None,
            });
        }
        // The file was removed while we waited (see `same_file`): lock the one now there.
    }
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
    fn run_lock_is_exclusive_and_removed_on_release() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("staging/x.lock");
        let held = run_lock(&path, Wait::No).unwrap();
        assert!(matches!(
            run_lock(&path, Wait::No),
            Err(LockError::Held { .. })
        ));
        drop(held);
        assert!(!path.exists());
        let again = run_lock(&path, Wait::No).unwrap();
        drop(again);
    }

    #[test]
    fn a_waiter_on_a_removed_run_lock_takes_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let held = run_lock(&path, Wait::Yes).unwrap();
        let p = path.clone();
        let waiter = std::thread::spawn(move || run_lock(&p, Wait::Yes).map(|_| ()));
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(held);
        waiter.join().unwrap().unwrap();
    }

    #[test]
    fn a_waiter_on_a_removed_migrate_lock_takes_the_file_now_at_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let held = try_exclusive(&path, "ingest").unwrap();
        let p = path.clone();
        let waiter = std::thread::spawn(move || shared_wait(&p));
        std::thread::sleep(std::time::Duration::from_millis(50));
        std::fs::remove_file(&path).unwrap();
        drop(held);
        let _shared = waiter.join().unwrap().unwrap();
        assert!(
            try_exclusive(&path, "migrate").is_err(),
            "the waiter holds the file at the path, not the removed one"
        );
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
