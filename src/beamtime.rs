//! One beamtime on disk: creating it, and its change counter.
//!
//! The change counter (`beamtime_meta.generation`) is how `reindex` proves a beamtime
//! unchanged without reading it: every transaction that changes a beamtime's runs bumps it in
//! the same transaction, so a reader sees the new rows and the new generation together or
//! neither. (`PRAGMA data_version` is per connection and file times miss WAL writes.)

use rusqlite::{Connection, OptionalExtension};

use crate::db::DbError;
use crate::frames::{self, StoreError};
use crate::layout::{Layout, SafeName};
use crate::lock::{self, LockGuard};
use crate::migrations::files::MigrationFile;
use crate::migrations::upgrade::{self, UpgradeError};
use crate::settings::{FramesSettings, SqliteSettings};

const GENERATION_KEY: &str = "generation";

pub use crate::migrations::upgrade::Ensured;

#[derive(Debug, thiserror::Error)]
pub enum BeamtimeError {
    #[error(transparent)]
    Upgrade(#[from] UpgradeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl crate::exit::HasExitStatus for BeamtimeError {
    fn exit_status(&self) -> crate::exit::ExitStatus {
        match self {
            BeamtimeError::Upgrade(e) => crate::exit::HasExitStatus::exit_status(e),
            BeamtimeError::Store(e) => crate::exit::HasExitStatus::exit_status(e),
            BeamtimeError::Db(e) => crate::exit::HasExitStatus::exit_status(e),
        }
    }
}

/// Makes sure beamtime `id` exists at the head of `migrations`: its folder, its database and
/// an empty frame store. Idempotent. Returns the migrate lock, held shared, for the caller
/// to keep while it writes (see [`upgrade::ensure`]: an upgrade happens only under the
/// exclusive lock, waited for up to `[sqlite] busy_timeout_ms`).
pub fn ensure(
    layout: &Layout,
    id: &SafeName,
    migrations: &[MigrationFile],
    sqlite: &SqliteSettings,
    frames: &FramesSettings,
) -> Result<(Ensured, LockGuard), BeamtimeError> {
    // The folder is created by upgrade::ensure, under the migrate lock.
    let (ensured, guard) = upgrade::ensure(
        &layout.migrate_lock(),
        &layout.beamtime_db(id),
        migrations,
        sqlite,
        lock::Wait::Yes,
        std::time::Duration::from_millis(u64::from(sqlite.busy_timeout_ms)),
    )?;
    frames::create_at(&frames::location(frames, layout, id))?;
    Ok((ensured, guard))
}

/// Removes beamtime `id`, which this process created and into which nothing landed, and
/// `data_root` too when this process created that: `ingest --beamtime typo` whose input is
/// all rejected leaves nothing behind. Only when no other beamdb process uses `data_root`
/// (the migrate lock, taken exclusively without waiting, after letting go of `shared`) and
/// the beamtime still has no runs; otherwise it stays. Returns whether it was removed.
pub fn discard_unused(
    layout: &Layout,
    id: &SafeName,
    created_root: bool,
    shared: LockGuard,
    sqlite: &SqliteSettings,
) -> bool {
    drop(shared);
    let Ok(_alone) =
        lock::migrate_exclusive(&layout.migrate_lock(), "ingest", std::time::Duration::ZERO)
    else {
        return false;
    };
    let runs = crate::db::open(&layout.beamtime_db(id), crate::db::Access::ReadOnly, sqlite)
        .ok()
        .and_then(|conn| {
            conn.query_row("SELECT count(*) FROM runs", [], |r| r.get::<_, i64>(0))
                .ok()
        });
    if runs != Some(0) {
        return false;
    }
    if std::fs::remove_dir_all(layout.beamtime_dir(id)).is_err() {
        return false;
    }
    // Not recursive: whatever else is there (another beamtime, an index) stays.
    let _ = std::fs::remove_dir(layout.beamtimes_dir());
    if created_root {
        let _ = std::fs::remove_file(layout.migrate_lock());
        let _ = std::fs::remove_dir(layout.root());
    }
    true
}

/// Bumps the change counter. Call inside every transaction that changes runs, streams,
/// events or image_refs.
pub fn bump_generation(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO beamtime_meta (key, value) VALUES (?1, '1')
         ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
        [GENERATION_KEY],
    )?;
    Ok(())
}

/// The change counter: 0 for a beamtime never written.
pub fn generation(conn: &Connection) -> rusqlite::Result<i64> {
    let value: Option<String> = conn
        .query_row(
            "SELECT value FROM beamtime_meta WHERE key = ?1",
            [GENERATION_KEY],
            |row| row.get(0),
        )
        .optional()?;
    Ok(value.and_then(|v| v.trim().parse().ok()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_counts_bumps() {
        let conn = crate::db::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE beamtime_meta (key TEXT NOT NULL PRIMARY KEY, value TEXT NOT NULL);",
        )
        .unwrap();
        assert_eq!(generation(&conn).unwrap(), 0);
        bump_generation(&conn).unwrap();
        bump_generation(&conn).unwrap();
        assert_eq!(generation(&conn).unwrap(), 2);
    }
}
