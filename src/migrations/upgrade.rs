//! Bringing one database file to the head of its migrations: backup, apply, check.

use std::path::{Path, PathBuf};

use super::files::MigrationFile;
use super::runner::{self, RunnerError};
use crate::db::{self, Access, DbError};
use crate::diff;
use crate::schema::{Renames, Schema, introspect};
use crate::settings::SqliteSettings;

#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Only report what would be applied.
    pub dry_run: bool,
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
}

impl crate::exit::HasExitStatus for UpgradeError {
    fn exit_status(&self) -> crate::exit::ExitStatus {
        match self {
            UpgradeError::Open(e) => crate::exit::HasExitStatus::exit_status(e),
            UpgradeError::Runner { source, .. } => crate::exit::HasExitStatus::exit_status(source),
            UpgradeError::Create { .. }
            | UpgradeError::Backup { .. }
            | UpgradeError::Sqlite { .. } => crate::exit::ExitStatus::Failure,
        }
    }
}

impl UpgradeError {
    /// Whether the database's history disagrees with ours (exit status 5).
    pub fn is_history(&self) -> bool {
        matches!(
            self,
            UpgradeError::Runner {
                source: RunnerError::History(_),
                ..
            }
        )
    }
}

/// Applies `ours`' pending migrations to the database at `path` (created when missing).
pub fn upgrade(
    path: &Path,
    ours: &[MigrationFile],
    sqlite: &SqliteSettings,
    options: Options,
) -> Result<Outcome, UpgradeError> {
    let runner_err = |source| UpgradeError::Runner {
        path: path.to_path_buf(),
        source,
    };
    if options.dry_run {
        if !path.exists() {
            return Ok(Outcome::WouldApply {
                pending: ours.to_vec(),
            });
        }
        let conn = db::open(path, Access::ReadOnly, sqlite)?;
        let status = runner::status(&conn, ours).map_err(runner_err)?;
        return Ok(if status.pending.is_empty() {
            Outcome::UpToDate {
                version: status.current_version(),
            }
        } else {
            Outcome::WouldApply {
                pending: status.pending,
            }
        });
    }
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
