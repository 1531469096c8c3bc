//! The one place that opens SQLite connections. Every connection gets the same pragmas:
//! SQLite resets `foreign_keys` at each open, so anything else would be a bug waiting.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::settings::{JournalMode, SqliteSettings};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read and write; the file is created when missing.
    ReadWrite,
    /// Read only; the file must exist. For reindex, `runs` and `verify`.
    ReadOnly,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{path}: cannot open the database: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "{path}: not an SQLite database, or a damaged one ({source}); restore it from its backup or move it aside"
    )]
    NotADatabase {
        path: PathBuf,
        source: rusqlite::Error,
    },
}

impl crate::exit::HasExitStatus for DbError {
    fn exit_status(&self) -> crate::exit::ExitStatus {
        match self {
            DbError::Open { .. } | DbError::NotADatabase { .. } => crate::exit::ExitStatus::Failure,
        }
    }
}

/// Opens `path` with beamdb's pragmas: `busy_timeout` (set first, so that switching to WAL
/// waits for other processes too), `journal_mode`, `foreign_keys = ON`, `synchronous = NORMAL`.
pub fn open(path: &Path, access: Access, sqlite: &SqliteSettings) -> Result<Connection, DbError> {
    let flags = match access {
        Access::ReadWrite => OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        Access::ReadOnly => OpenFlags::SQLITE_OPEN_READ_ONLY,
    } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|source| DbError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    match configure(&conn, access, sqlite) {
        Ok(()) => Ok(conn),
        Err(source) if access == Access::ReadOnly && cannot_share_memory(&source) => {
            open_immutable(path, sqlite).map_err(|_| classify(path, source))
        }
        Err(source) => Err(classify(path, source)),
    }
}

/// A reader of a WAL database needs its `-shm` file, and creates it when missing; in a
/// read-only folder (an archived beamtime, a read-only mount) it cannot.
fn cannot_share_memory(err: &rusqlite::Error) -> bool {
    use rusqlite::ffi::ErrorCode;
    matches!(
        err.sqlite_error_code(),
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen)
    )
}

/// Opens `path` as immutable: no `-shm` needed. Only reached when the `-shm` file does not
/// exist and cannot be created, which means no writer has the database open (a writer keeps
/// one) and none can (the folder is read-only to us): nothing can change under the reader.
fn open_immutable(path: &Path, sqlite: &SqliteSettings) -> rusqlite::Result<Connection> {
    let uri = format!(
        "file:{}?immutable=1",
        path.display()
            .to_string()
            .replace('%', "%25")
            .replace('?', "%3f")
            .replace('#', "%23")
    );
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(uri, flags)?;
    configure(&conn, Access::ReadOnly, sqlite)?;
    Ok(conn)
}

/// A private in-memory database with the same pragmas (for replaying migrations).
pub fn open_in_memory() -> rusqlite::Result<Connection> {
    let conn = Connection::open_in_memory()?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(conn)
}

fn configure(conn: &Connection, access: Access, sqlite: &SqliteSettings) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_millis(u64::from(sqlite.busy_timeout_ms)))?;
    // The first real read of the file: "file is not a database" surfaces here.
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))?;
    if access == Access::ReadWrite {
        let wanted = match sqlite.journal_mode {
            JournalMode::Wal => "wal",
            JournalMode::Delete => "delete",
        };
        let mode: String =
            conn.query_row(&format!("PRAGMA journal_mode = {wanted}"), [], |row| {
                row.get(0)
            })?;
        if !mode.eq_ignore_ascii_case(wanted) {
            tracing::warn!(
                "journal_mode is {mode}, not {wanted}: the filesystem may not support it"
            );
        }
        conn.pragma_update(None, "synchronous", "NORMAL")?;
    }
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(())
}

fn classify(path: &Path, source: rusqlite::Error) -> DbError {
    use rusqlite::ffi::ErrorCode;
    match source.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => DbError::NotADatabase {
            path: path.to_path_buf(),
            source,
        },
        _ => DbError::Open {
            path: path.to_path_buf(),
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;

    #[test]
    fn every_open_turns_on_foreign_keys_and_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let sqlite = Settings::default().sqlite;
        let conn = open(&path, Access::ReadWrite, &sqlite).unwrap();
        let fk: i64 = conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!((fk, mode.as_str()), (1, "wal"));
        drop(conn);
        let ro = open(&path, Access::ReadOnly, &sqlite).unwrap();
        let fk: i64 = ro
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
    }

    #[test]
    fn a_text_file_is_reported_as_not_a_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        std::fs::write(
            &path,
            "this is not sqlite, just a text file long enough to have a header",
        )
        .unwrap();
        let err = open(&path, Access::ReadOnly, &Settings::default().sqlite).unwrap_err();
        assert!(matches!(err, DbError::NotADatabase { .. }), "{err}");
    }
}
