//! Applying migrations with refinery: the only module that knows refinery's runner.
//!
//! refinery drives; this module supplies a thin driver of its own around a rusqlite
//! connection instead of refinery's stock one, because SQLite needs three things the stock
//! driver does not do:
//! - foreign keys off while a migration runs: a table rebuild drops the old table, and with
//!   foreign keys on `DROP TABLE` deletes every row first and fires `ON DELETE CASCADE` in
//!   the child tables. `PRAGMA foreign_keys` is a no-op inside a transaction, so it is turned
//!   off on the connection before refinery opens one, and on again after;
//! - `PRAGMA foreign_key_check` before COMMIT, so a migration that would leave a dangling
//!   reference rolls back instead of committing it;
//! - one transaction for the migrations *and* their history rows (refinery's grouped mode):
//!   a crash can never leave a migration applied but unrecorded.
//!
//! It also reads the history without panicking on a row it cannot parse.

use refinery::Migrate;
use refinery::Migration;
use refinery::error::Kind;
use refinery_core::traits::sync::{Query, Transaction};
use rusqlite::{Connection, TransactionBehavior};

use super::files::MigrationFile;
use crate::schema::introspect::HISTORY_TABLE;

/// The database's history disagrees with this binary's migrations: exit status 5.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(
        "its history has migration {applied}, which this beamdb does not have: it was migrated by a newer beamdb or with other migrations; use that beamdb (or its migrations_dir), or restore a backup"
    )]
    Ahead { applied: String },
    #[error(
        "its history has migration {applied}, which differs from this beamdb's {ours} (edited after it was applied?); migrations are immutable once applied: restore the original file"
    )]
    Diverged { applied: String, ours: String },
}

impl crate::exit::HasExitStatus for HistoryError {
    fn exit_status(&self) -> crate::exit::ExitStatus {
        crate::exit::ExitStatus::DatabaseAhead
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("migration failed and was rolled back, nothing changed: {0}")]
    Failed(String),
}

impl crate::exit::HasExitStatus for RunnerError {
    fn exit_status(&self) -> crate::exit::ExitStatus {
        match self {
            RunnerError::History(e) => crate::exit::HasExitStatus::exit_status(e),
            RunnerError::Sqlite(_) | RunnerError::Failed(_) => crate::exit::ExitStatus::Failure,
        }
    }
}

/// What the database has applied, and what of `ours` it still needs.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub applied: Vec<String>,
    pub pending: Vec<MigrationFile>,
}

impl Status {
    pub fn current_version(&self) -> Option<i32> {
        self.applied
            .last()
            .and_then(|stem| super::files::parse_stem(stem))
            .map(|(v, _)| v)
    }
}

/// Compares the database's history with `ours` without writing anything.
pub fn status(conn: &Connection, ours: &[MigrationFile]) -> Result<Status, RunnerError> {
    let applied = read_history(conn)?;
    let ours_by_version: Vec<(MigrationFile, Migration)> = ours
        .iter()
        .map(|m| Ok((m.clone(), to_refinery(m)?)))
        .collect::<Result<_, RunnerError>>()?;
    for app in &applied {
        match ours_by_version
            .iter()
            .find(|(_, m)| m.version() == app.version())
        {
            None => {
                return Err(HistoryError::Ahead { applied: stem(app) }.into());
            }
            Some((file, m)) if m.checksum() != app.checksum() || m.name() != app.name() => {
                return Err(HistoryError::Diverged {
                    applied: stem(app),
                    ours: file.stem(),
                }
                .into());
            }
            Some(_) => {}
        }
    }
    let last = applied.iter().map(|m| m.version()).max().unwrap_or(0);
    let mut pending = Vec::new();
    for (file, _) in ours_by_version {
        let is_applied = applied.iter().any(|a| a.version() == file.version);
        if is_applied {
            continue;
        }
        if file.version < last {
            // A gap: an older migration this binary has was never applied. Refinery calls
            // this "missing"; applying it now, out of order, could do anything.
            return Err(HistoryError::Diverged {
                applied: format!("V{last}"),
                ours: format!("{} (never applied, but older)", file.stem()),
            }
            .into());
        }
        pending.push(file);
    }
    Ok(Status {
        applied: applied.iter().map(stem).collect(),
        pending,
    })
}

/// Applies every pending migration of `ours` in one transaction and returns the applied ones.
pub fn apply(
    conn: &mut Connection,
    ours: &[MigrationFile],
) -> Result<Vec<MigrationFile>, RunnerError> {
    let pending = status(conn, ours)?.pending;
    if pending.is_empty() {
        return Ok(pending);
    }
    let migrations: Vec<Migration> = ours.iter().map(to_refinery).collect::<Result<_, _>>()?;
    conn.pragma_update(None, "foreign_keys", false)?;
    let result = refinery::Runner::new(&migrations)
        .set_grouped(true)
        .set_abort_divergent(true)
        .set_abort_missing(true)
        .set_migration_table_name(HISTORY_TABLE)
        .run(&mut Driver { conn: &mut *conn });
    // Back on whatever happened: every connection runs with foreign keys on.
    conn.pragma_update(None, "foreign_keys", true)?;
    match result {
        // What refinery says it applied (all of `pending` or, grouped, nothing), so that
        // the report line names what really ran.
        Ok(report) => Ok(pending
            .into_iter()
            .filter(|m| {
                report
                    .applied_migrations()
                    .iter()
                    .any(|r| r.version() == m.version)
            })
            .collect()),
        Err(err) => Err(match map_refinery_error(err) {
            RunnerError::Failed(message) => {
                let stems: Vec<String> = pending.iter().map(MigrationFile::stem).collect();
                RunnerError::Failed(format!("applying {}: {message}", stems.join(", ")))
            }
            other => other,
        }),
    }
}

/// A fresh in-memory database with `ours` applied: the schema the migrations produce.
pub fn replay(ours: &[MigrationFile]) -> Result<Connection, RunnerError> {
    let mut conn = crate::db::open_in_memory()?;
    apply(&mut conn, ours)?;
    Ok(conn)
}

fn to_refinery(file: &MigrationFile) -> Result<Migration, RunnerError> {
    Migration::unapplied(&file.stem(), &file.sql)
        .map_err(|e| RunnerError::Failed(format!("{}: {e}", file.stem())))
}

fn stem(m: &Migration) -> String {
    format!("V{}__{}", m.version(), m.name())
}

fn map_refinery_error(err: refinery::Error) -> RunnerError {
    match err.kind() {
        Kind::MissingVersion(m) => HistoryError::Ahead { applied: stem(m) }.into(),
        Kind::DivergentVersion(applied, ours) => HistoryError::Diverged {
            applied: stem(applied),
            ours: stem(ours),
        }
        .into(),
        // The driver's error (the first cause) says what went wrong; refinery's own message
        // only repeats it, and the SQLite error code under it adds nothing for people.
        _ => RunnerError::Failed(
            std::error::Error::source(&err)
                .map(ToString::to_string)
                .unwrap_or_else(|| err.to_string()),
        ),
    }
}

fn history_exists(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1",
        [HISTORY_TABLE],
        |row| row.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

fn read_history(conn: &Connection) -> Result<Vec<Migration>, RunnerError> {
    if !history_exists(conn)? {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(&format!(
        "SELECT version, name, applied_on, checksum FROM {HISTORY_TABLE} ORDER BY version"
    ))?;
    let rows: Vec<(i32, String, String, String)> = stmt
        .query_map([], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })?
        .collect::<Result<_, _>>()?;
    rows.into_iter()
        .map(|(version, name, applied_on, checksum)| {
            let bad = |what: &str| {
                RunnerError::Failed(format!(
                    "{HISTORY_TABLE} row for version {version} has an unreadable {what}; the history table was edited by hand"
                ))
            };
            let applied_on = time::OffsetDateTime::parse(
                &applied_on,
                &time::format_description::well_known::Rfc3339,
            )
            .map_err(|_| bad("applied_on"))?;
            let checksum: u64 = checksum.parse().map_err(|_| bad("checksum"))?;
            Ok(Migration::applied(version, name, applied_on, checksum))
        })
        .collect()
}

/// refinery's view of a connection: see the module comment for why it is not the stock one.
struct Driver<'c> {
    conn: &'c mut Connection,
}

#[derive(Debug, thiserror::Error)]
enum DriverError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(
        "it would leave {0} row(s) whose foreign key points at nothing (PRAGMA foreign_key_check), e.g. {1}"
    )]
    ForeignKeys(i64, String),
    #[error("{0}")]
    History(String),
}

impl Transaction for Driver<'_> {
    type Error = DriverError;

    fn execute<'a, T: Iterator<Item = &'a str>>(
        &mut self,
        queries: T,
    ) -> Result<usize, DriverError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut count = 0;
        for query in queries {
            tx.execute_batch(query)?;
            count += 1;
        }
        let (violations, example): (i64, Option<String>) = tx.query_row(
            "SELECT count(*), min(\"table\" || ' rowid ' || rowid || ' -> ' || parent) FROM pragma_foreign_key_check",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        if violations > 0 {
            return Err(DriverError::ForeignKeys(
                violations,
                example.unwrap_or_default(),
            ));
        }
        tx.commit()?;
        Ok(count)
    }
}

impl Query<Vec<Migration>> for Driver<'_> {
    fn query(&mut self, _query: &str) -> Result<Vec<Migration>, DriverError> {
        // refinery asks for the applied migrations; both of its queries read the same table.
        read_history(self.conn).map_err(|e| DriverError::History(e.to_string()))
    }
}

impl Migrate for Driver<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(version: i32, name: &str, sql: &str) -> MigrationFile {
        MigrationFile {
            version,
            name: name.into(),
            sql: sql.into(),
        }
    }

    #[test]
    fn applies_records_and_is_idempotent() {
        let ours = [
            m(1, "a", "CREATE TABLE a (x INTEGER);"),
            m(2, "b", "CREATE TABLE b (y INTEGER);"),
        ];
        let mut conn = crate::db::open_in_memory().unwrap();
        assert_eq!(apply(&mut conn, &ours).unwrap().len(), 2);
        assert!(apply(&mut conn, &ours).unwrap().is_empty());
        let st = status(&conn, &ours).unwrap();
        assert_eq!(st.applied, ["V1__a", "V2__b"]);
        assert_eq!(st.current_version(), Some(2));
        let fk: i64 = conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1, "foreign keys are back on after a migration");
    }

    #[test]
    fn a_database_ahead_of_us_is_a_history_error() {
        let mut conn = crate::db::open_in_memory().unwrap();
        apply(
            &mut conn,
            &[
                m(1, "a", "CREATE TABLE a (x);"),
                m(2, "b", "CREATE TABLE b (y);"),
            ],
        )
        .unwrap();
        let err = status(&conn, &[m(1, "a", "CREATE TABLE a (x);")]).unwrap_err();
        assert!(
            matches!(err, RunnerError::History(HistoryError::Ahead { .. })),
            "{err}"
        );
    }

    #[test]
    fn an_edited_migration_is_a_history_error() {
        let mut conn = crate::db::open_in_memory().unwrap();
        apply(&mut conn, &[m(1, "a", "CREATE TABLE a (x);")]).unwrap();
        let err = apply(&mut conn, &[m(1, "a", "CREATE TABLE a (x, y);")]).unwrap_err();
        assert!(
            matches!(err, RunnerError::History(HistoryError::Diverged { .. })),
            "{err}"
        );
    }

    #[test]
    fn a_failing_migration_changes_nothing() {
        let mut conn = crate::db::open_in_memory().unwrap();
        let ours = [
            m(1, "a", "CREATE TABLE a (x);"),
            m(2, "bad", "CREATE TABLE b (y); SELEKT;"),
        ];
        assert!(apply(&mut conn, &ours).is_err());
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name IN ('a', 'b')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 0, "grouped: V1 rolled back with V2");
    }

    #[test]
    fn a_crash_before_the_history_row_leaves_nothing_applied_and_a_rerun_is_clean() {
        let mut conn = crate::db::open_in_memory().unwrap();
        let v1 = m(1, "a", "CREATE TABLE a (x);");
        apply(&mut conn, std::slice::from_ref(&v1)).unwrap();
        // Stands in for the process dying after the migration's SQL ran and before its
        // history row was written. Grouped, both are one transaction: neither survives.
        conn.execute_batch(
            "CREATE TEMP TRIGGER crash BEFORE INSERT ON main.refinery_schema_history
             BEGIN SELECT RAISE(ABORT, 'simulated crash'); END;",
        )
        .unwrap();
        let ours = [
            v1,
            m(2, "b", "CREATE TABLE b (y); INSERT INTO a VALUES (1);"),
        ];
        let err = apply(&mut conn, &ours).unwrap_err();
        assert!(err.to_string().contains("simulated crash"), "{err}");
        let (tables, rows): (i64, i64) = conn
            .query_row(
                "SELECT (SELECT count(*) FROM sqlite_schema WHERE name = 'b'), (SELECT count(*) FROM a)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(
            (tables, rows),
            (0, 0),
            "the migration itself was rolled back"
        );
        assert_eq!(status(&conn, &ours).unwrap().pending.len(), 1);

        conn.execute_batch("DROP TRIGGER crash;").unwrap();
        assert_eq!(apply(&mut conn, &ours).unwrap().len(), 1);
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM a", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1, "applied exactly once");
    }

    #[test]
    fn a_migration_that_leaves_dangling_keys_rolls_back() {
        let mut conn = crate::db::open_in_memory().unwrap();
        let v1 = m(
            1,
            "a",
            "CREATE TABLE p (id INTEGER PRIMARY KEY); CREATE TABLE c (p INTEGER REFERENCES p (id));
             INSERT INTO p VALUES (1); INSERT INTO c VALUES (1);",
        );
        apply(&mut conn, std::slice::from_ref(&v1)).unwrap();
        let err = apply(&mut conn, &[v1, m(2, "b", "DELETE FROM p;")]).unwrap_err();
        assert!(err.to_string().contains("foreign_key_check"), "{err}");
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM p", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1);
    }

    #[test]
    fn drop_table_under_migration_does_not_cascade() {
        // The rebuild trap: with foreign keys on, DROP TABLE p would delete c's rows.
        let mut conn = crate::db::open_in_memory().unwrap();
        let v1 = m(
            1,
            "a",
            "CREATE TABLE p (id INTEGER PRIMARY KEY, n TEXT);
             CREATE TABLE c (p INTEGER REFERENCES p (id) ON DELETE CASCADE);
             INSERT INTO p VALUES (1, 'x'); INSERT INTO c VALUES (1);",
        );
        let v2 = m(
            2,
            "rebuild",
            "CREATE TABLE p_new (id INTEGER PRIMARY KEY, n TEXT NOT NULL);
             INSERT INTO p_new SELECT id, n FROM p; DROP TABLE p; ALTER TABLE p_new RENAME TO p;",
        );
        apply(&mut conn, &[v1.clone(), v2]).unwrap();
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM c", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1);
    }
}
