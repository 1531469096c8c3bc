//! Bringing one database file to the head of its migrations: backup, apply, check.

use std::path::{Path, PathBuf};

use super::files::MigrationFile;
use super::runner::{self, RunnerError};
use crate::db::{self, Access, DbError};
use crate::diff;
use crate::lock::{self, LockError, LockGuard, MigrateExclusive};
use crate::schema::{Renames, Schema, introspect};
use crate::settings::SqliteSettings;

#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Back the file up before a migration that drops or rebuilds a table.
    pub backup: bool,
}

#[derive(Debug)]
pub enum Outcome {
    UpToDate {
        version: Option<i32>,
    },
    WouldApply {
        pending: Vec<MigrationFile>,
    },
    Applied {
        applied: Vec<MigrationFile>,
        backup: Option<PathBuf>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error(transparent)]
    Open(#[from] DbError),
    #[error("{path}: {source}")]
    Runner { path: PathBuf, source: RunnerError },
    #[error("{path}: cannot create the database: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: cannot back up before migrating: {source}")]
    Backup {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("{path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "{path}: must be migrated to this beamdb's migrations first ({pending}), which needs every other beamdb process on this data_root to finish: {source}; or run `beamdb migrate` when none is running"
    )]
    BehindAndLocked {
        path: PathBuf,
        pending: String,
        source: LockError,
    },
    #[error(transparent)]
    Locked(#[from] LockError),
}

impl crate::exit::HasExitStatus for UpgradeError {
    fn exit_status(&self) -> crate::exit::ExitStatus {
        match self {
            UpgradeError::Open(e) => crate::exit::HasExitStatus::exit_status(e),
            UpgradeError::Runner { source, .. } => crate::exit::HasExitStatus::exit_status(source),
            UpgradeError::BehindAndLocked { source, .. } => {
                crate::exit::HasExitStatus::exit_status(source)
            }
            UpgradeError::Locked(e) => crate::exit::HasExitStatus::exit_status(e),
            UpgradeError::Create { .. }
            | UpgradeError::Backup { .. }
            | UpgradeError::Sqlite { .. } => crate::exit::ExitStatus::Failure,
        }
    }
}

/// What [`upgrade`] would apply to the database at `path`, without writing anything (and
/// without the lock: `--dry-run` and `--check` read only).
pub fn plan(
    path: &Path,
    ours: &[MigrationFile],
    sqlite: &SqliteSettings,
) -> Result<Outcome, UpgradeError> {
    let runner_err = |source| UpgradeError::Runner {
        path: path.to_path_buf(),
        source,
    };
    if !path.exists() {
        return Ok(Outcome::WouldApply {
            pending: ours.to_vec(),
        });
    }
    let conn = db::open(path, Access::ReadOnly, sqlite)?;
    let status = runner::status(&conn, ours).map_err(runner_err)?;
    Ok(if status.pending.is_empty() {
        Outcome::UpToDate {
            version: status.current_version(),
        }
    } else {
        Outcome::WouldApply {
            pending: status.pending,
        }
    })
}

/// Applies `ours`' pending migrations to the database at `path` (created when missing).
/// Only under the exclusive migrate lock (`_held`): the status is read, the backup made and
/// the migrations applied by one process at a time, so a second one finds nothing to do.
pub fn upgrade(
    path: &Path,
    ours: &[MigrationFile],
    sqlite: &SqliteSettings,
    options: Options,
    _held: &MigrateExclusive,
) -> Result<Outcome, UpgradeError> {
    let runner_err = |source| UpgradeError::Runner {
        path: path.to_path_buf(),
        source,
    };
    if !path.exists()
        && let Some(applied) = create_whole(path, ours, sqlite)?
    {
        return Ok(Outcome::Applied {
            applied,
            backup: None,
        });
    }
    let mut conn = db::open(path, Access::ReadWrite, sqlite)?;
    let status = runner::status(&conn, ours).map_err(runner_err)?;
    if status.pending.is_empty() {
        return Ok(Outcome::UpToDate {
            version: status.current_version(),
        });
    }
    let backup = if options.backup
        && !status.applied.is_empty()
        && status.pending.iter().any(is_destructive)
    {
        Some(back_up(&conn, path, status.current_version())?)
    } else {
        None
    };
    let applied = runner::apply(&mut conn, ours).map_err(runner_err)?;
    Ok(Outcome::Applied { applied, backup })
}

/// What [`ensure`] found or did.
#[derive(Debug)]
pub enum Ensured {
    Created,
    UpToDate,
    Migrated {
        applied: Vec<String>,
        backup: Option<PathBuf>,
    },
}

impl Ensured {
    /// The one line that reports an implicit creation or upgrade (`None`: nothing happened).
    pub fn describe(&self, label: &str, path: &Path) -> Option<String> {
        match self {
            Ensured::Created => Some(format!("{label}: created {}", path.display())),
            Ensured::UpToDate => None,
            Ensured::Migrated { applied, backup } => Some(format!(
                "{label}: migrated {}: applied {}; {}",
                path.display(),
                applied.join(", "),
                match backup {
                    Some(backup) => format!("backup {}", backup.display()),
                    None => "no backup needed (nothing dropped)".to_string(),
                }
            )),
        }
    }
}

/// Brings the database at `path` to the head of `ours` for a command that writes to it
/// (ingest, initdb, reindex's index) and returns the migrate lock, held shared, that the
/// command keeps while it writes. A missing database is created whole under the shared lock
/// (creation is atomic, see [`create_whole`]); an existing one behind head is upgraded only
/// under the exclusive lock, re-checked after taking it, so that of two ingests that find
/// it behind, one migrates and the other finds it done. The exclusive lock is waited for up
/// to `patience`, then the command ends with exit 75. `shared` says whether to wait for a
/// running `migrate` (ingest) or give up at once (reindex).
pub fn ensure(
    lock_path: &Path,
    path: &Path,
    ours: &[MigrationFile],
    sqlite: &SqliteSettings,
    shared: lock::Wait,
    patience: std::time::Duration,
) -> Result<(Ensured, LockGuard), UpgradeError> {
    let take_shared = || match shared {
        lock::Wait::Yes => lock::shared_wait(lock_path),
        lock::Wait::No => lock::try_shared(lock_path, "migrate"),
    };
    let mut ensured = Ensured::UpToDate;
    loop {
        let guard = take_shared()?;
        // When another process created it first, theirs is checked like any existing one.
        if !path.exists() && create_whole(path, ours, sqlite)?.is_some() {
            return Ok((Ensured::Created, guard));
        }
        let pending = {
            let conn = db::open(path, Access::ReadOnly, sqlite)?;
            runner::status(&conn, ours)
                .map_err(|source| UpgradeError::Runner {
                    path: path.to_path_buf(),
                    source,
                })?
                .pending
        };
        if pending.is_empty() {
            return Ok((ensured, guard));
        }
        // flock cannot turn a shared lock into an exclusive one atomically: let go first,
        // so that two processes doing this do not wait for each other.
        drop(guard);
        let stems: Vec<String> = pending.iter().map(MigrationFile::stem).collect();
        let exclusive = lock::migrate_exclusive(lock_path, "ingest, reindex or migrate", patience)
            .map_err(|source| UpgradeError::BehindAndLocked {
                path: path.to_path_buf(),
                pending: stems.join(", "),
                source,
            })?;
        let options = Options { backup: true };
        if let Outcome::Applied { applied, backup } =
            upgrade(path, ours, sqlite, options, &exclusive)?
            && !applied.is_empty()
        {
            ensured = Ensured::Migrated {
                applied: applied.iter().map(MigrationFile::stem).collect(),
                backup,
            };
        }
        // Shared again, and checked again: a newer beamdb may have migrated in between.
    }
}

/// Creates the database at `path` whole: built under a temporary name, then linked into
/// place, so that a process killed while creating it leaves no empty database behind (which
/// reindex and verify would rightly call "not a beamdb database"). `link` never replaces:
/// when another process created the file first, theirs is kept and `None` returned.
fn create_whole(
    path: &Path,
    ours: &[MigrationFile],
    sqlite: &SqliteSettings,
) -> Result<Option<Vec<MigrationFile>>, UpgradeError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("db");
    let tmp = path.with_file_name(format!(".{name}.creating-{}", std::process::id()));
    let remove_tmp = || {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", tmp.display()));
        }
    };
    let io = |source: std::io::Error| UpgradeError::Create {
        path: path.to_path_buf(),
        source,
    };
    // The folder too (a new beamtime's), here under the caller's lock rather than before it:
    // an ingest that landed nothing removes the beamtime it created, under the lock.
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    remove_tmp();
    let applied = {
        let mut conn = db::open(&tmp, Access::ReadWrite, sqlite)?;
        let applied = runner::apply(&mut conn, ours).map_err(|source| UpgradeError::Runner {
            path: path.to_path_buf(),
            source,
        });
        // Everything into the main file before it is linked: its WAL stays behind.
        let checkpoint = conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(|source| UpgradeError::Sqlite {
                path: tmp.clone(),
                source,
            });
        match applied.and_then(|a| checkpoint.map(|()| a)) {
            Ok(applied) => applied,
            Err(e) => {
                drop(conn);
                remove_tmp();
                return Err(e);
            }
        }
    };
    let result = match std::fs::hard_link(&tmp, path) {
        Ok(()) => Ok(Some(applied)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(None),
        Err(e) => Err(io(e)),
    };
    remove_tmp();
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    result
}

/// Differences between the live schema at `path` and `declared`, one line each (empty when
/// they agree).
pub fn drift(
    path: &Path,
    declared: &Schema,
    sqlite: &SqliteSettings,
) -> Result<Vec<String>, UpgradeError> {
    let conn = db::open(path, Access::ReadOnly, sqlite)?;
    let live = introspect::introspect(&conn).map_err(|source| UpgradeError::Sqlite {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(match diff::compare(&live, declared, &Renames::default()) {
        Ok(ops) => ops.iter().map(ToString::to_string).collect(),
        Err(err) => err.lines(),
    })
}

/// A migration that drops a table (every rebuild does) or a column can lose data if it is
/// wrong; those get a backup first. make-migrations marks them in the header; a hand-written
/// migration is judged by its SQL (erring towards a backup).
pub fn is_destructive(migration: &MigrationFile) -> bool {
    if migration
        .sql
        .lines()
        .any(|line| line == crate::render::BACKUP_MARKER)
    {
        return true;
    }
    let sql = migration.sql.to_ascii_uppercase();
    sql.contains("DROP TABLE") || sql.contains("DROP COLUMN")
}

/// `VACUUM INTO` a file next to the database: a consistent copy even while others read.
fn back_up(
    conn: &rusqlite::Connection,
    path: &Path,
    version: Option<i32>,
) -> Result<PathBuf, UpgradeError> {
    let stamp = time::OffsetDateTime::now_utc()
        .format(&time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_else(|_| "now".to_string());
    let name = format!(
        "{}.backup-V{}-{stamp}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("db"),
        version.unwrap_or(0)
    );
    // A retry within the same second (after a failed attempt) gets its own file.
    let mut target = path.with_file_name(&name);
    let mut n = 1;
    while target.exists() {
        n += 1;
        target = path.with_file_name(format!("{name}-{n}"));
    }
    conn.execute("VACUUM INTO ?1", [target.to_string_lossy()])
        .map_err(|source| UpgradeError::Backup {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(target)
}

/// The SQL a dry run prints for `pending`.
pub fn describe(pending: &[MigrationFile]) -> String {
    let mut text = String::new();
    for m in pending {
        text.push_str(&format!("-- {}\n", m.stem()));
        text.push_str(&m.sql);
        if !m.sql.ends_with('\n') {
            text.push('\n');
        }
    }
    text
}
