//! make-migrations and migrate on changed models: the "Done when" scenario, renames,
//! destructive changes, NULL guards, drift, locking and interrupted migrations.

use std::path::PathBuf;

use crate::common::{Fixture, config_repo, count, run};

/// A configuration repository: copies of the shipped models and migrations, and settings that
/// point at them.
fn config() -> Fixture {
    let fx = Fixture::new();
    config_repo(&fx);
    fx
}

/// Edits the beamtime model file: replaces `old` (which must be there) with `new`.
fn edit_model(fx: &Fixture, old: &str, new: &str) {
    let path = fx.path().join("models/beamtime.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(old), "model has no {old:?}");
    std::fs::write(&path, text.replacen(old, new, 1)).unwrap();
}

const PLAN_NAME: &str = "  { name = \"plan_name\", type = \"TEXT\" },\n";
const RUNS_INDEXES: &str = "indexes = [\n  { name = \"runs_time_start\"";

/// Rows in every beamtime table, by SQL.
const POPULATE: &str = include_str!("../fixtures/populate_beamtime.sql");

const TABLES: [&str; 5] = ["samples", "runs", "streams", "events", "image_refs"];

fn counts(fx: &Fixture, id: &str) -> Vec<i64> {
    let conn = fx.open(&fx.beamtime_db(id));
    TABLES
        .iter()
        .map(|t| count(&conn, &format!("SELECT count(*) FROM {t}")))
        .collect()
}

fn populated_beamtime(fx: &Fixture, id: &str) {
    let (code, _, err) = run(&mut fx.beamdb(&["initdb", "--beamtime", id]));
    assert_eq!(code, 0, "{err}");
    fx.open(&fx.beamtime_db(id))
        .execute_batch(POPULATE)
        .unwrap();
}

fn migration(fx: &Fixture, name: &str) -> PathBuf {
    fx.path().join("m/beamtime").join(name)
}

fn backups(fx: &Fixture, id: &str) -> Vec<String> {
    let dir = fx.data_root().join("beamtimes").join(id);
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains(".backup-"))
        .collect();
    names.sort();
    names
}

/// The edit of `runs`: a new nullable column, plan_name made nullable, a new index.
fn done_when_edits(fx: &Fixture) {
    edit_model(
        fx,
        PLAN_NAME,
        "  { name = \"plan_name\", type = \"TEXT\", nullable = true },\n  { name = \"proposal\", type = \"TEXT\", nullable = true },\n",
    );
    edit_model(
        fx,
        RUNS_INDEXES,
        "indexes = [\n  { name = \"runs_proposal\", columns = [\"proposal\"], unique = false },\n  { name = \"runs_time_start\"",
    );
}

#[test]
fn make_migrations_done_when_scenario_rebuilds_runs_and_keeps_every_row() {
    let fx = config();
    populated_beamtime(&fx, "bt-1");
    let before = counts(&fx, "bt-1");
    done_when_edits(&fx);

    let (code, out, err) = run(&mut fx.beamdb(&["make-migrations", "--check"]));
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        out.contains("  add column runs.proposal TEXT NULL\n")
            && out.contains("  alter column runs.plan_name: nullable (was NOT NULL)\n")
            && out.contains("  create index runs_proposal on runs (proposal)\n"),
        "{out}"
    );
    assert!(!fx.path().join("m/beamtime/V3__x.sql").exists());
    assert_eq!(
        std::fs::read_dir(fx.path().join("m/beamtime"))
            .unwrap()
            .count(),
        2
    );

    let (code, out, err) = run(&mut fx.beamdb(&["make-migrations", "--name", "x"]));
    assert_eq!(code, 0, "{out}{err}");
    let sql = std::fs::read_to_string(migration(&fx, "V3__x.sql")).unwrap();
    assert!(sql.contains("table runs is rebuilt"), "{sql}");
    assert!(sql.contains("-- beamdb: rebuilds or drops"), "{sql}");
    assert!(!sql.contains("DESTRUCTIVE"), "{sql}");
    let (code, out, err) = run(&mut fx.beamdb(&["make-migrations", "--check"]));
    assert_eq!(code, 0, "{out}{err}");

    let (code, out, err) = run(&mut fx.beamdb(&["migrate"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("backed up"), "{out}");
    assert!(!err.contains("still differs"), "{err}");
    assert_eq!(backups(&fx, "bt-1").len(), 1);
    assert_eq!(counts(&fx, "bt-1"), before, "every table keeps every row");
    let conn = fx.open(&fx.beamtime_db("bt-1"));
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM pragma_table_info('runs') WHERE name = 'proposal'"
        ),
        1
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM pragma_index_list('runs') WHERE name = 'runs_proposal'"
        ),
        1
    );
    assert_eq!(
        count(&conn, "SELECT count(*) FROM pragma_foreign_key_check"),
        0
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM runs WHERE sample_id = 2 AND uid = 'r2'"
        ),
        1,
        "ON DELETE SET NULL did not fire"
    );
    drop(conn);
    let path = fx.beamtime_db("bt-1");
    let (code, out, err) = run(&mut fx.beamdb(&[
        "make-migrations",
        "--check",
        "--database",
        path.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{out}{err}");
    // The same change always renders the same bytes.
    let again = config();
    done_when_edits(&again);
    assert_eq!(
        run(&mut again.beamdb(&["make-migrations", "--name", "x"])).0,
        0
    );
    assert_eq!(
        std::fs::read(migration(&again, "V3__x.sql")).unwrap(),
        sql.as_bytes()
    );
}

/// Adds a nullable facility column `runs.proposal` (V3), creates bt-1 and fills it in.
fn with_proposal(fx: &Fixture) {
    with_proposal_migration_only(fx);
    let sql = std::fs::read_to_string(migration(fx, "V3__proposal.sql")).unwrap();
    assert!(
        sql.contains("ALTER TABLE \"runs\" ADD COLUMN \"proposal\" TEXT;"),
        "in place: {sql}"
    );
    populated_beamtime(fx, "bt-1");
    fx.open(&fx.beamtime_db("bt-1"))
        .execute_batch("UPDATE runs SET proposal = 'p-' || uid WHERE uid <> 'r3';")
        .unwrap();
}

#[test]
fn make_migrations_rename_flag_keeps_the_column_data() {
    let fx = config();
    with_proposal(&fx);
    edit_model(&fx, "{ name = \"proposal\",", "{ name = \"proposal_code\",");
    let (code, out, err) = run(&mut fx.beamdb(&["make-migrations"]));
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("--rename runs.proposal=runs.proposal_code"),
        "{err}"
    );
    assert!(!migration(&fx, "V4__rename_column_runs_proposal.sql").exists());
    let (code, _, _) = run(&mut fx.beamdb(&["make-migrations", "--check"]));
    assert_eq!(code, 3);

    let (code, out, err) = run(&mut fx.beamdb(&[
        "make-migrations",
        "--rename",
        "runs.proposal=runs.proposal_code",
    ]));
    assert_eq!(code, 0, "{out}{err}");
    let sql =
        std::fs::read_to_string(migration(&fx, "V4__rename_column_runs_proposal.sql")).unwrap();
    assert!(
        sql.contains("RENAME COLUMN \"proposal\" TO \"proposal_code\""),
        "{sql}"
    );
    let (code, out, err) = run(&mut fx.beamdb(&["migrate"]));
    assert_eq!(code, 0, "{out}{err}");
    let conn = fx.open(&fx.beamtime_db("bt-1"));
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM runs WHERE proposal_code = 'p-' || uid"
        ),
        2
    );
}

#[test]
fn make_migrations_renamed_from_in_the_model_keeps_the_data_and_then_is_ignored() {
    let fx = config();
    with_proposal(&fx);
    edit_model(
        &fx,
        "{ name = \"proposal\",",
        "{ name = \"proposal_code\", renamed_from = \"proposal\",",
    );
    let (code, out, err) = run(&mut fx.beamdb(&["make-migrations", "--name", "rename"]));
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(&mut fx.beamdb(&["migrate"]));
    assert_eq!(code, 0, "{out}{err}");
    let conn = fx.open(&fx.beamtime_db("bt-1"));
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM runs WHERE proposal_code = 'p-' || uid"
        ),
        2
    );
    // Carried out, the key stays in the model and changes nothing.
    let (code, out, err) = run(&mut fx.beamdb(&["make-migrations", "--check"]));
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn make_migrations_refuses_a_bad_rename_flag() {
    let fx = config();
    for (flag, expect) in [
        ("runs.nope=runs.other", "runs has no column nope"),
        ("nope=other", "no such table"),
        ("a.b=c.d", "keeps its table"),
        ("runs", "is not a rename"),
    ] {
        let (code, _, err) = run(&mut fx.beamdb(&["make-migrations", "--rename", flag]));
        assert_eq!(code, 2, "{flag}: {err}");
        assert!(err.contains(expect), "{flag}: {err}");
    }
}

#[test]
fn make_migrations_destructive_change_needs_allow_destructive_and_migrate_backs_up() {
    let fx = config();
    with_proposal(&fx);
    edit_model(
        &fx,
        "  { name = \"proposal\", type = \"TEXT\", nullable = true },\n",
        "",
    );
    let (code, out, err) = run(&mut fx.beamdb(&["make-migrations", "--name", "drop"]));
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("drops column runs.proposal and every value in it")
            && err.contains("--allow-destructive"),
        "{err}"
    );
    assert!(!migration(&fx, "V4__drop.sql").exists());

    let (code, out, err) =
        run(&mut fx.beamdb(&["make-migrations", "--name", "drop", "--allow-destructive"]));
    assert_eq!(code, 0, "{out}{err}");
    let sql = std::fs::read_to_string(migration(&fx, "V4__drop.sql")).unwrap();
    assert!(
        sql.contains("-- DESTRUCTIVE: drops column runs.proposal and every value in it"),
        "{sql}"
    );
    assert!(
        sql.contains("ALTER TABLE \"runs\" DROP COLUMN \"proposal\";"),
        "{sql}"
    );
    let before = counts(&fx, "bt-1");
    let (code, out, err) = run(&mut fx.beamdb(&["migrate"]));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(backups(&fx, "bt-1").len(), 1, "{out}");
    assert_eq!(counts(&fx, "bt-1"), before);

    // The backup is a whole database at the old version, with the dropped values.
    let backup = fx
        .data_root()
        .join("beamtimes/bt-1")
        .join(&backups(&fx, "bt-1")[0]);
    let conn = fx.open(&backup);
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM runs WHERE proposal IS NOT NULL"
        ),
        2
    );
}

#[test]
fn migrate_no_backup_skips_the_backup() {
    let fx = config();
    with_proposal(&fx);
    edit_model(
        &fx,
        "{ name = \"proposal\", type = \"TEXT\"",
        "{ name = \"proposal\", type = \"BLOB\"",
    );
    let (code, out, err) = run(&mut fx.beamdb(&["make-migrations"]));
    assert_eq!(code, 0, "TEXT to BLOB keeps every value: {out}{err}");
    let (code, out, err) = run(&mut fx.beamdb(&["migrate", "--no-backup"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(backups(&fx, "bt-1").is_empty());
}

#[test]
fn migrate_stops_at_nulls_in_a_column_made_not_null_and_goes_on_with_other_beamtimes() {
    let fx = config();
    with_proposal(&fx);
    // bt-2 has runs, all with a proposal; bt-1's run r3 has none.
    populated_beamtime(&fx, "bt-2");
    fx.open(&fx.beamtime_db("bt-2"))
        .execute_batch("UPDATE runs SET proposal = 'p';")
        .unwrap();
    edit_model(
        &fx,
        "{ name = \"proposal\", type = \"TEXT\", nullable = true }",
        "{ name = \"proposal\", type = \"TEXT\" }",
    );
    let (code, _, err) = run(&mut fx.beamdb(&["make-migrations", "--name", "required"]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("makes runs.proposal NOT NULL without a default"),
        "{err}"
    );
    let (code, out, err) = run(&mut fx.beamdb(&[
        "make-migrations",
        "--name",
        "required",
        "--allow-destructive",
    ]));
    assert_eq!(code, 0, "{out}{err}");

    let before = counts(&fx, "bt-1");
    let (code, out, err) = run(&mut fx.beamdb(&["migrate"]));
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("bt-1") && err.contains("table runs, column proposal: 1 row(s) hold NULL"),
        "{err}"
    );
    assert!(
        out.contains("beamtime bt-2") && out.contains("applied V4__required"),
        "{out}"
    );
    assert_eq!(counts(&fx, "bt-1"), before);
    let conn = fx.open(&fx.beamtime_db("bt-1"));
    assert_eq!(
        count(&conn, "SELECT max(version) FROM refinery_schema_history"),
        3,
        "bt-1 stays at V3"
    );
    conn.execute_batch("UPDATE runs SET proposal = 'none' WHERE proposal IS NULL;")
        .unwrap();
    drop(conn);
    let (code, out, err) = run(&mut fx.beamdb(&["migrate"]));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(counts(&fx, "bt-1"), before);
}

#[test]
fn migrate_while_another_migrate_holds_the_lock_exits_75() {
    let fx = config();
    populated_beamtime(&fx, "bt-1");
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(fx.data_root().join(".migrate.lock"))
        .unwrap();
    lock.try_lock().unwrap();
    let (code, _, err) = run(&mut fx.beamdb(&["migrate"]));
    assert_eq!(code, 75, "{err}");
    assert!(
        err.contains("another beamdb migrate (or an ingest) is running"),
        "{err}"
    );
    drop(lock);
    assert_eq!(run(&mut fx.beamdb(&["migrate"])).0, 0);
}

#[test]
fn migrate_rerun_after_an_interrupted_migration_is_clean() {
    let fx = config();
    populated_beamtime(&fx, "bt-1");
    // Dies on its last statement, after it has created a table and changed rows.
    let broken = "CREATE TABLE proposals (id TEXT PRIMARY KEY);\n\
                  UPDATE runs SET operator = 'x';\n\
                  INSERT INTO no_such_table VALUES (1);\n";
    fx.write("m/beamtime/V3__proposals.sql", broken);
    let (code, _, err) = run(&mut fx.beamdb(&["migrate"]));
    assert_eq!(code, 1, "{err}");
    let conn = fx.open(&fx.beamtime_db("bt-1"));
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM sqlite_schema WHERE name = 'proposals'"
        ),
        0
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM runs WHERE operator IS NOT NULL"
        ),
        0
    );
    assert_eq!(
        count(&conn, "SELECT max(version) FROM refinery_schema_history"),
        2
    );
    drop(conn);

    fx.write(
        "m/beamtime/V3__proposals.sql",
        "CREATE TABLE proposals (id TEXT PRIMARY KEY);\nUPDATE runs SET operator = 'x';\n",
    );
    let (code, out, err) = run(&mut fx.beamdb(&["migrate"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("still differs"),
        "the models lack proposals: {err}"
    );
    let conn = fx.open(&fx.beamtime_db("bt-1"));
    assert_eq!(
        count(&conn, "SELECT count(*) FROM runs WHERE operator = 'x'"),
        3
    );
    assert_eq!(
        count(&conn, "SELECT count(*) FROM refinery_schema_history"),
        3
    );
}

#[test]
fn make_migrations_check_database_reports_drift() {
    let fx = config();
    populated_beamtime(&fx, "bt-1");
    let path = fx.beamtime_db("bt-1");
    let path = path.to_str().unwrap();
    let (code, out, err) = run(&mut fx.beamdb(&["make-migrations", "--check", "--database", path]));
    assert_eq!(code, 0, "{out}{err}");
    fx.open(&fx.beamtime_db("bt-1"))
        .execute_batch("CREATE INDEX by_hand ON runs (scan_id);")
        .unwrap();
    let (code, out, err) = run(&mut fx.beamdb(&["make-migrations", "--check", "--database", path]));
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        out.contains("drop index by_hand on runs (scan_id)"),
        "{out}"
    );
    // A file whose name does not say its kind needs --target.
    let copy = fx.path().join("copy.db");
    std::fs::copy(fx.beamtime_db("bt-1"), &copy).unwrap();
    let copy = copy.to_str().unwrap();
    let (code, _, err) = run(&mut fx.beamdb(&["make-migrations", "--check", "--database", copy]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("add --target beamtime"), "{err}");
    let args = [
        "make-migrations",
        "--check",
        "--target",
        "beamtime",
        "--database",
        copy,
    ];
    assert_eq!(run(&mut fx.beamdb(&args)).0, 3);
    // A database behind the migrations says so.
    with_proposal_migration_only(&fx);
    let (code, out, _) = run(&mut fx.beamdb(&["make-migrations", "--check", "--database", path]));
    assert_eq!(code, 3);
    assert!(out.contains("pending V3__proposal"), "{out}");
}

fn with_proposal_migration_only(fx: &Fixture) {
    edit_model(
        fx,
        PLAN_NAME,
        "  { name = \"plan_name\", type = \"TEXT\" },\n  { name = \"proposal\", type = \"TEXT\", nullable = true },\n",
    );
    let (code, out, err) = run(&mut fx.beamdb(&["make-migrations", "--name", "proposal"]));
    assert_eq!(code, 0, "{out}{err}");
}

/// A beamtime one migration behind the configuration's head: created at V2, then a V3 that
/// drops a table appears (so upgrading it makes a backup first). `events` scalar events in
/// one run make the upgrade's backup take a moment.
fn behind_head(fx: &Fixture, events: usize) {
    let run = crate::generate::events_run(fx.path(), "old-run", events);
    let (code, out, err) = run_ingest(fx, &run);
    assert_eq!(code, 0, "{out}{err}");
    std::fs::write(
        migration(fx, "V3__scratch.sql"),
        "CREATE TABLE scratch (x INTEGER);\nDROP TABLE scratch;\n",
    )
    .unwrap();
}

fn run_ingest(fx: &Fixture, jsonl: &std::path::Path) -> (i32, String, String) {
    run(&mut fx.beamdb(&["ingest", "--beamtime", "bt", crate::common::path(jsonl)]))
}

fn history_versions(fx: &Fixture) -> Vec<i64> {
    let conn = fx.open(&fx.beamtime_db("bt"));
    let mut stmt = conn
        .prepare("SELECT version FROM refinery_schema_history ORDER BY version")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

/// An ingest that must migrate its beamtime first needs the migrate lock exclusively; while
/// another process holds it (here shared, as a long ingest does) it waits `busy_timeout_ms`,
/// then exits 75 and touches nothing. The lock error reaches `main` through the beamtime and
/// upgrade error wrappers, which must not turn 75 into 1.
#[test]
fn ingest_that_must_migrate_while_the_migrate_lock_is_held_exits_75_and_changes_nothing() {
    let fx = config();
    behind_head(&fx, 10);
    fx.write(
        "settings.toml",
        "[schema]\nmodels_dir = \"models\"\nmigrations_dir = \"m\"\n[sqlite]\nbusy_timeout_ms = 300\n",
    );
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(fx.data_root().join(".migrate.lock"))
        .unwrap();
    lock.try_lock_shared().unwrap();
    let new_run = crate::generate::events_run(fx.path(), "new-run", 3);
    let (code, out, err) = run(fx
        .beamdb(&["ingest", "--beamtime", "bt", crate::common::path(&new_run)])
        .timeout(std::time::Duration::from_secs(60)));
    assert_eq!(code, 75, "{out}{err}");
    assert!(err.contains(".migrate.lock"), "{err}");
    assert!(err.contains("beamdb migrate"), "says what to do: {err}");
    assert_eq!(history_versions(&fx), [1, 2], "not migrated");
    assert!(backups(&fx, "bt").is_empty());
    drop(lock);
    let (code, out, err) = run_ingest(&fx, &new_run);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(history_versions(&fx), [1, 2, 3]);
}

/// A database whose history is ahead of this binary's migrations exits 5 whichever command
/// meets it: here ingest, through the beamtime and upgrade wrappers.
#[test]
fn ingest_into_a_beamtime_whose_history_is_ahead_exits_5() {
    let fx = config();
    behind_head(&fx, 3);
    std::fs::remove_file(migration(&fx, "V3__scratch.sql")).unwrap();
    fx.open(&fx.beamtime_db("bt"))
        .execute(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum)
             VALUES (99, 'from_the_future', '2030-01-01T00:00:00Z', '1')",
            [],
        )
        .unwrap();
    let new_run = crate::generate::events_run(fx.path(), "new-run", 3);
    let (code, out, err) = run_ingest(&fx, &new_run);
    assert_eq!(code, 5, "{out}{err}");
    assert!(err.contains("V99__from_the_future"), "{err}");
}

/// Two ingests into a beamtime behind head at once: the beamtime is migrated once (one backup,
/// one report naming the migration and the backup), both runs land.
#[test]
fn two_ingests_into_a_beamtime_behind_head_migrate_it_once() {
    for trial in 0..3 {
        let fx = config();
        behind_head(&fx, 20_000);
        let a = crate::generate::events_run(fx.path(), "run-a", 3);
        let b = crate::generate::events_run(fx.path(), "run-b", 3);
        let root = fx.data_root();
        let first = crate::crash::spawn(
            &fx,
            &root,
            &["ingest", "--beamtime", "bt", crate::common::path(&a)],
        );
        let second = crate::crash::spawn(
            &fx,
            &root,
            &["ingest", "--beamtime", "bt", crate::common::path(&b)],
        );
        let mut reports = 0;
        for child in [first, second] {
            let (code, out, err) = crate::crash::finish(child);
            assert_eq!(code, 0, "trial {trial}: {out}{err}");
            assert!(out.contains("landed 1"), "trial {trial}: {out}");
            let migrated: Vec<&str> = err.lines().filter(|l| l.contains("migrated")).collect();
            if !migrated.is_empty() {
                reports += 1;
                assert_eq!(migrated.len(), 1, "one line: {err}");
                assert!(migrated[0].contains("V3__scratch"), "{err}");
                assert!(
                    migrated[0].contains(".backup-V2-"),
                    "names the backup: {err}"
                );
            }
        }
        assert_eq!(reports, 1, "trial {trial}: exactly one ingest migrated");
        assert_eq!(
            backups(&fx, "bt").len(),
            1,
            "trial {trial}: {:?}",
            backups(&fx, "bt")
        );
        assert_eq!(history_versions(&fx), [1, 2, 3]);
        let conn = fx.open(&fx.beamtime_db("bt"));
        assert_eq!(count(&conn, "SELECT count(*) FROM runs"), 3);
    }
}
