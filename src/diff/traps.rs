// Test code only: diff/mod.rs declares this module under #[cfg(test)].
//! The SQLite traps a table rebuild walks into, each shown happening the naive way and each
//! avoided by beamdb's way (rendered rebuild + the runner's foreign-key handling).

use rusqlite::Connection;

use crate::migrations::files::{self, MigrationFile};
use crate::migrations::runner;
use crate::schema::{DbKind, Renames, Schema, declared, introspect};

/// A beamtime at V1 with a sample, runs, streams, events and image_refs below them.
pub(crate) fn populated_beamtime() -> Connection {
    let mut conn = crate::db::open_in_memory().unwrap();
    runner::apply(&mut conn, &files::builtin(DbKind::Beamtime)).unwrap();
    conn.execute_batch(POPULATE).unwrap();
    conn
}

pub(crate) const POPULATE: &str = include_str!("../../tests/fixtures/populate_beamtime.sql");

pub(crate) fn counts(conn: &Connection) -> Vec<(String, i64)> {
    ["samples", "runs", "streams", "events", "image_refs"]
        .iter()
        .map(|t| {
            let n = conn
                .query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))
                .unwrap();
            (t.to_string(), n)
        })
        .collect()
}

/// The built-in beamtime models with `runs.{column}` changed by `change`.
fn with_runs_column(column: &str, change: impl Fn(&mut crate::schema::Column)) -> Schema {
    let mut schema = declared::builtin(DbKind::Beamtime).unwrap();
    let runs = schema.tables.get_mut("runs").unwrap();
    runs.columns
        .iter_mut()
        .filter(|c| c.name == column)
        .for_each(change);
    schema
}

/// The built-in beamtime models with `runs.plan_name` made nullable: a rebuild of `runs`.
fn plan_name_nullable() -> Schema {
    with_runs_column("plan_name", |c| c.nullable = true)
}

/// The SQL beamdb writes for `to`, from the built-in migrations: the next one after them.
fn migration_to(to: &Schema) -> MigrationFile {
    let builtin = files::builtin(DbKind::Beamtime);
    let next = builtin.iter().map(|m| m.version).max().unwrap_or(0) + 1;
    let live = introspect::introspect(&runner::replay(&builtin).unwrap()).unwrap();
    let ops = crate::diff::compare(&live, to, &Renames::default()).unwrap();
    let plan = crate::diff::plan(&live, to, &ops);
    assert!(
        plan.iter()
            .any(|op| matches!(op, crate::diff::Op::RebuildTable(_))),
        "{plan:?}"
    );
    MigrationFile {
        version: next,
        name: "x".into(),
        sql: crate::render::render_migration(&format!("V{next}__x"), &ops, &plan, to),
    }
}

fn fk_target(conn: &Connection, child: &str) -> String {
    conn.query_row(
        &format!("SELECT \"table\" FROM pragma_foreign_key_list('{child}')"),
        [],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn trap_drop_table_with_foreign_keys_on_cascades_and_pragma_in_a_transaction_is_ignored() {
    // What a stock driver does: the migration inside BEGIN ... COMMIT on a connection with
    // foreign keys on. Turning them off inside the migration does nothing (SQLite ignores
    // PRAGMA foreign_keys in a transaction), and DROP TABLE runs deletes every run first,
    // cascading to streams, events and image_refs.
    let conn = populated_beamtime();
    let sql = migration_to(&plan_name_nullable()).sql;
    conn.execute_batch(&format!("BEGIN; PRAGMA foreign_keys = OFF; {sql} COMMIT;"))
        .unwrap();
    let fk: i64 = conn
        .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
        .unwrap();
    assert_eq!(fk, 1, "the PRAGMA inside the transaction was ignored");
    let after = counts(&conn);
    assert_eq!(after[1], ("runs".into(), 3), "runs were copied");
    assert_eq!(after[2], ("streams".into(), 0), "the streams vanished");
    assert_eq!(
        after[4],
        ("image_refs".into(), 0),
        "the frames' rows vanished"
    );
}

#[test]
fn rebuilding_a_parent_through_the_runner_keeps_every_child_row() {
    // The fix: the runner turns foreign keys off on the connection before its transaction and
    // checks them before COMMIT. Without it this test loses the streams, as above.
    let mut conn = populated_beamtime();
    let before = counts(&conn);
    let mut ours = files::builtin(DbKind::Beamtime);
    ours.push(migration_to(&plan_name_nullable()));
    assert_eq!(runner::apply(&mut conn, &ours).unwrap().len(), 1);
    assert_eq!(counts(&conn), before);
    let sample: Option<i64> = conn
        .query_row("SELECT sample_id FROM runs WHERE uid = 'r2'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(sample, Some(2), "ON DELETE SET NULL did not fire either");
    let violations: i64 = conn
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(violations, 0);
    assert_eq!(fk_target(&conn, "streams"), "runs");
    let live = introspect::introspect(&conn).unwrap();
    assert!(
        crate::diff::compare(&live, &plan_name_nullable(), &Renames::default())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn trap_renaming_the_old_table_first_repoints_child_foreign_keys() {
    // The other common order (rename the old table away, create the new one under the real
    // name, copy, drop the old): SQLite rewrites the children's REFERENCES to follow the
    // rename, so they end up pointing at the dropped table.
    let conn = populated_beamtime();
    conn.pragma_update(None, "foreign_keys", false).unwrap();
    conn.execute_batch(
        "BEGIN;
         ALTER TABLE runs RENAME TO runs_old;
         CREATE TABLE runs (uid TEXT NOT NULL PRIMARY KEY, sample_id INTEGER, scan_id INTEGER,
           plan_name TEXT, time_start REAL NOT NULL, time_stop REAL, exit_status TEXT,
           num_events INTEGER NOT NULL DEFAULT (0), operator TEXT, researcher TEXT,
           metadata TEXT NOT NULL, stop_metadata TEXT, content_digest TEXT);
         INSERT INTO runs SELECT * FROM runs_old;
         DROP TABLE runs_old;
         COMMIT;",
    )
    .unwrap();
    assert_eq!(fk_target(&conn, "streams"), "runs_old");

    // beamdb's order (create under a temporary name, copy, drop, rename the new one) keeps
    // the children pointing at runs.
    let mut conn = populated_beamtime();
    let mut ours = files::builtin(DbKind::Beamtime);
    ours.push(migration_to(&plan_name_nullable()));
    runner::apply(&mut conn, &ours).unwrap();
    assert_eq!(fk_target(&conn, "streams"), "runs");
}

#[test]
fn a_null_in_a_column_made_not_null_stops_the_migration_before_any_change() {
    let mut conn = populated_beamtime();
    let to = with_runs_column("operator", |c| c.nullable = false);
    let mut ours = files::builtin(DbKind::Beamtime);
    ours.push(migration_to(&to));
    conn.execute("UPDATE runs SET operator = 'ana' WHERE uid = 'r1'", [])
        .unwrap();
    let err = runner::apply(&mut conn, &ours).unwrap_err().to_string();
    assert!(
        err.contains("table runs, column operator: 2 row(s) hold NULL"),
        "{err}"
    );
    let status = runner::status(&conn, &ours).unwrap();
    assert_eq!(status.pending.len(), 1, "nothing was recorded");
    let live = introspect::introspect(&conn).unwrap();
    assert!(
        live.table("runs")
            .unwrap()
            .column("operator")
            .unwrap()
            .nullable
    );

    // Filled in, the same migration goes through.
    conn.execute(
        "UPDATE runs SET operator = 'bob' WHERE operator IS NULL",
        [],
    )
    .unwrap();
    runner::apply(&mut conn, &ours).unwrap();
    assert_eq!(counts(&conn)[1], ("runs".into(), 3));
}

#[test]
fn a_declared_default_fills_the_nulls_of_a_column_made_not_null() {
    let mut conn = populated_beamtime();
    let to = with_runs_column("operator", |c| {
        c.nullable = false;
        c.default = Some("'unknown'".into());
    });
    let mut ours = files::builtin(DbKind::Beamtime);
    ours.push(migration_to(&to));
    runner::apply(&mut conn, &ours).unwrap();
    let unknown: i64 = conn
        .query_row(
            "SELECT count(*) FROM runs WHERE operator = 'unknown'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(unknown, 3);
}
