//! Promoted metadata declared once: a column added to `runs` in the beamtime model reaches
//! the index by itself (make-migrations writes both migrations), is filled by ingest from its
//! RunStart key (`source`), by the next plain reindex, and is found by `runs --where`.

use crate::common::{Fixture, config_repo, count, run};

/// A run's documents as suitcase-jsonl: start (with `extra` merged in), one event, stop.
pub fn run_jsonl(uid: &str, time: f64, extra: serde_json::Value) -> String {
    let mut start =
        serde_json::json!({"uid": uid, "time": time, "plan_name": "count", "scan_id": 1});
    if let (Some(start), Some(extra)) = (start.as_object_mut(), extra.as_object()) {
        start.extend(extra.clone());
    }
    let descriptor = serde_json::json!({
        "uid": format!("{uid}-d"), "run_start": uid, "time": time, "name": "primary",
        "data_keys": {"x": {"dtype": "number", "shape": [], "source": "sim"}}
    });
    let event = serde_json::json!({
        "uid": format!("{uid}-e"), "descriptor": format!("{uid}-d"), "time": time + 1.0,
        "seq_num": 1, "data": {"x": 1.0}, "timestamps": {"x": time + 1.0}
    });
    let stop = serde_json::json!({
        "uid": format!("{uid}-s"), "run_start": uid, "time": time + 2.0,
        "exit_status": "success", "num_events": {"primary": 1}
    });
    [
        ("start", start),
        ("descriptor", descriptor),
        ("event", event),
        ("stop", stop),
    ]
    .iter()
    .map(|(name, doc)| format!("{}\n", serde_json::json!([name, doc])))
    .collect()
}

fn ingest(fx: &Fixture, uid: &str, time: f64, extra: serde_json::Value) {
    let path = fx.write(&format!("{uid}.jsonl"), &run_jsonl(uid, time, extra));
    let (code, out, err) =
        run(&mut fx.beamdb(&["ingest", "--beamtime", "bt-1", path.to_str().unwrap()]));
    assert_eq!(code, 0, "{out}{err}");
}

fn edit_model(fx: &Fixture, old: &str, new: &str) {
    let path = fx.path().join("models/beamtime.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(old), "model has no {old:?}");
    std::fs::write(&path, text.replacen(old, new, 1)).unwrap();
}

const PLAN_NAME: &str = "  { name = \"plan_name\", type = \"TEXT\" },\n";

fn ok(fx: &Fixture, args: &[&str]) -> String {
    let (code, out, err) = run(&mut fx.beamdb(args));
    assert_eq!(code, 0, "beamdb {args:?}: {out}{err}");
    out
}

fn json_runs(fx: &Fixture, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["runs", "--json"];
    all.extend_from_slice(args);
    let out = ok(fx, &all);
    serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap()
}

fn uids(runs: &[serde_json::Value]) -> Vec<&str> {
    let mut uids: Vec<&str> = runs.iter().map(|r| r["uid"].as_str().unwrap()).collect();
    uids.sort();
    uids
}

#[test]
fn make_migrations_promoted_column_declared_once_reaches_the_index_and_runs_where() {
    let fx = Fixture::new();
    config_repo(&fx);
    // A run ingested before anyone declared `proposal`: its RunStart has the key.
    ingest(
        &fx,
        "r-1",
        1_795_000_000.0,
        serde_json::json!({"proposal": "p-1", "sample": {"name": "P3HT", "composition": "C10H14S"}}),
    );
    let out = ok(&fx, &["reindex"]);
    assert!(out.contains("changed 1"), "{out}");

    // Declared once, in the beamtime model only.
    edit_model(
        &fx,
        PLAN_NAME,
        &format!(
            "{PLAN_NAME}  {{ name = \"proposal\", type = \"TEXT\", nullable = true }},\n  {{ name = \"composition\", type = \"TEXT\", nullable = true, source = \"sample.composition\" }},\n"
        ),
    );
    let (code, out, err) = run(&mut fx.beamdb(&["make-migrations", "--check"]));
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        out.contains("add column runs_index.proposal TEXT NULL")
            && out.contains("create index runs_index_proposal on runs_index (proposal)")
            && out.contains("add column runs.composition TEXT NULL"),
        "the index migration is generated from the beamtime model: {out}"
    );
    let (code, out, err) =
        run(&mut fx.beamdb(&["make-migrations", "--target", "index", "--check"]));
    assert_eq!(code, 3, "--target index sees it too: {out}{err}");
    ok(&fx, &["make-migrations", "--name", "proposal"]);
    assert_eq!(run(&mut fx.beamdb(&["make-migrations", "--check"])).0, 0);
    ok(&fx, &["migrate"]);

    // The next plain reindex notices the index schema changed and fills the old run.
    let out = ok(&fx, &["reindex"]);
    assert!(out.contains("changed 1"), "{out}");
    let runs = json_runs(&fx, &[]);
    assert_eq!(runs[0]["proposal"], "p-1", "{runs:?}");
    assert_eq!(runs[0]["composition"], "C10H14S", "{runs:?}");

    // A run ingested now fills runs.proposal itself.
    ingest(
        &fx,
        "r-2",
        1_795_000_100.0,
        serde_json::json!({"proposal": "p-2", "sample": {"name": "PS", "composition": "C8H8"}}),
    );
    let conn = fx.open(&fx.beamtime_db("bt-1"));
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM runs WHERE uid = 'r-2' AND proposal = 'p-2' AND composition = 'C8H8'"
        ),
        1
    );
    drop(conn);
    ok(&fx, &["reindex"]);
    assert_eq!(uids(&json_runs(&fx, &["--where", "proposal=p-2"])), ["r-2"]);
    assert_eq!(
        uids(&json_runs(&fx, &["--where", "sample.composition=C1*"])),
        ["r-1"]
    );
    // The table shows it when asked.
    let out = ok(&fx, &["runs", "--columns", "uid,proposal"]);
    assert!(out.contains("UID  PROPOSAL\nr-2  p-2\nr-1  p-1\n"), "{out}");

    // Rename the promoted column: its source keeps it filled.
    edit_model(
        &fx,
        "{ name = \"proposal\", type = \"TEXT\", nullable = true }",
        "{ name = \"proposal_code\", type = \"TEXT\", nullable = true, source = \"proposal\" }",
    );
    ok(
        &fx,
        &[
            "make-migrations",
            "--rename",
            "runs.proposal=runs.proposal_code",
        ],
    );
    assert_eq!(run(&mut fx.beamdb(&["make-migrations", "--check"])).0, 0);
    ok(&fx, &["migrate"]);
    ingest(
        &fx,
        "r-3",
        1_795_000_200.0,
        serde_json::json!({"proposal": "p-3"}),
    );
    let conn = fx.open(&fx.beamtime_db("bt-1"));
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM runs WHERE proposal_code = 'p-' || substr(uid, 3)"
        ),
        2,
        "r-2's value kept, and r-3 filled from the RunStart key `proposal` (r-1 was ingested before the column existed: the index fills it from its RunStart)"
    );
    drop(conn);
    ok(&fx, &["reindex"]);
    let runs = json_runs(&fx, &[]);
    let codes: Vec<&str> = runs
        .iter()
        .map(|r| r["proposal_code"].as_str().unwrap_or("NULL"))
        .collect();
    assert_eq!(codes, ["p-3", "p-2", "p-1"], "{runs:?}");
    assert_eq!(uids(&json_runs(&fx, &["--where", "proposal=p-3"])), ["r-3"]);
}

#[test]
fn make_migrations_source_on_a_table_other_than_runs_is_a_model_error_with_its_line() {
    let fx = Fixture::new();
    config_repo(&fx);
    edit_model(
        &fx,
        "  { name = \"formula\", type = \"TEXT\", nullable = true },\n",
        "  { name = \"formula\", type = \"TEXT\", nullable = true, source = \"formula\" },\n",
    );
    let (code, out, err) = run(&mut fx.beamdb(&["make-migrations", "--check"]));
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("beamtime.toml:16: table `samples`: column `formula` has `source`"),
        "{err}"
    );
}

#[test]
fn make_migrations_promoted_column_named_like_a_runs_index_column_is_a_model_error() {
    let fx = Fixture::new();
    config_repo(&fx);
    edit_model(
        &fx,
        PLAN_NAME,
        &format!("{PLAN_NAME}  {{ name = \"sample_name\", type = \"TEXT\", nullable = true }},\n"),
    );
    let (code, out, err) = run(&mut fx.beamdb(&["make-migrations", "--check"]));
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("beamtime.toml:32: table `runs`: promoted column `sample_name`")
            && err.contains("choose another name"),
        "{err}"
    );
}

#[test]
fn ingest_fills_researcher_from_every_key_reindex_knows() {
    // One list of researcher keys: `pi` names the researcher in the beamtime and the index.
    let fx = Fixture::new();
    ingest(
        &fx,
        "r-1",
        1_795_000_000.0,
        serde_json::json!({"pi": "Ada"}),
    );
    let conn = fx.open(&fx.beamtime_db("bt-1"));
    assert_eq!(
        count(&conn, "SELECT count(*) FROM runs WHERE researcher = 'Ada'"),
        1
    );
}

#[test]
fn make_migrations_integer_column_added_to_a_composite_primary_key_needs_allow_destructive() {
    // `c INTEGER` in a composite key is no rowid alias: it is NOT NULL with no value for the
    // rows a populated database has, so the migration would fail there.
    let fx = Fixture::new();
    config_repo(&fx);
    let path = fx.path().join("models/beamtime.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!("{text}\n[tables.pairs]\ncolumns = [\n  {{ name = \"a\", type = \"TEXT\", primary_key = true }},\n  {{ name = \"b\", type = \"TEXT\", primary_key = true }},\n]\n"),
    )
    .unwrap();
    ok(&fx, &["make-migrations", "--name", "pairs"]);
    edit_model(
        &fx,
        "  { name = \"b\", type = \"TEXT\", primary_key = true },\n",
        "  { name = \"b\", type = \"TEXT\", primary_key = true },\n  { name = \"c\", type = \"INTEGER\", primary_key = true },\n",
    );
    let (code, out, err) = run(&mut fx.beamdb(&["make-migrations", "--name", "c"]));
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("adds NOT NULL column pairs.c without a default")
            && err.contains("--allow-destructive"),
        "{err}"
    );
    assert!(!fx.path().join("m/beamtime/V4__c.sql").exists());
    // A lone INTEGER primary key is the rowid alias: SQLite numbers the rows, nothing is lost.
    let fx = Fixture::new();
    config_repo(&fx);
    let path = fx.path().join("models/beamtime.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!(
            "{text}\n[tables.tags]\ncolumns = [\n  {{ name = \"label\", type = \"TEXT\" }},\n]\n"
        ),
    )
    .unwrap();
    ok(&fx, &["make-migrations", "--name", "tags"]);
    edit_model(
        &fx,
        "  { name = \"label\", type = \"TEXT\" },\n",
        "  { name = \"id\", type = \"INTEGER\", primary_key = true },\n  { name = \"label\", type = \"TEXT\" },\n",
    );
    ok(&fx, &["make-migrations", "--name", "id"]);
}

fn append_model(fx: &Fixture, text: &str) {
    let path = fx.path().join("models/beamtime.toml");
    let model = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{model}\n{text}")).unwrap();
}

#[test]
fn make_migrations_case_only_table_rename_keeps_the_rows() {
    let fx = Fixture::new();
    config_repo(&fx);
    append_model(
        &fx,
        "[tables.Users]\ncolumns = [\n  { name = \"Name\", type = \"TEXT\" },\n]\nindexes = [ { name = \"Users_name\", columns = [\"Name\"], unique = true } ]\n",
    );
    ok(&fx, &["make-migrations", "--name", "users"]);
    ok(&fx, &["initdb", "--beamtime", "bt-1"]);
    fx.open(&fx.beamtime_db("bt-1"))
        .execute_batch("INSERT INTO \"Users\" VALUES ('ada'), ('grace');")
        .unwrap();
    let path = fx.path().join("models/beamtime.toml");
    let model = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        model
            .replace(
                "[tables.Users]\n",
                "[tables.users]\nrenamed_from = \"Users\"\n",
            )
            .replace(
                "name = \"Name\"",
                "name = \"name\", renamed_from = \"Name\"",
            )
            .replace(
                "\"Users_name\", columns = [\"Name\"]",
                "\"users_name\", columns = [\"name\"]",
            ),
    )
    .unwrap();
    ok(&fx, &["make-migrations", "--name", "lower_case"]);
    assert_eq!(run(&mut fx.beamdb(&["make-migrations", "--check"])).0, 0);
    ok(&fx, &["migrate"]);
    let conn = fx.open(&fx.beamtime_db("bt-1"));
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM sqlite_schema WHERE name IN ('users', 'users_name')"
        ),
        2
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM users WHERE name IN ('ada', 'grace')"
        ),
        2
    );
}

#[test]
fn make_migrations_names_differing_only_in_case_are_a_model_error_with_file_and_line() {
    for (extra, what) in [
        (
            "[tables.Samples]\ncolumns = [ { name = \"x\", type = \"TEXT\" } ]\n",
            "table `Samples`: SQLite names are case-insensitive, and table `samples` is declared too",
        ),
        (
            "[tables.t]\ncolumns = [\n  { name = \"a\", type = \"TEXT\" },\n  { name = \"A\", type = \"TEXT\" },\n]\n",
            "table `t`: column `A` is declared twice (SQLite names are case-insensitive: `a`)",
        ),
        (
            "[tables.t]\ncolumns = [ { name = \"a\", type = \"TEXT\" } ]\nindexes = [\n  { name = \"t_a\", columns = [\"a\"] },\n  { name = \"T_A\", columns = [\"a\"] },\n]\n",
            "table `t`: index name `T_A` is used twice (index names are database-wide and case-insensitive: `t_a`)",
        ),
    ] {
        let fx = Fixture::new();
        config_repo(&fx);
        append_model(&fx, extra);
        let (code, out, err) = run(&mut fx.beamdb(&["make-migrations", "--check"]));
        assert_eq!(code, 2, "{out}{err}");
        assert!(
            err.contains("beamtime.toml:") && err.contains(what),
            "{err}"
        );
    }
}

#[test]
fn make_migrations_partial_index_round_trips_and_changes_in_place() {
    let fx = Fixture::new();
    config_repo(&fx);
    edit_model(
        &fx,
        "  { name = \"runs_plan_name\", columns = [\"plan_name\"], unique = false },\n",
        "  { name = \"runs_plan_name\", columns = [\"plan_name\"], unique = false },\n  { name = \"runs_failed\", columns = [\"time_start\"], where = \"exit_status <> 'success'\" },\n",
    );
    let (code, out, _) = run(&mut fx.beamdb(&["make-migrations", "--check"]));
    assert_eq!(code, 3);
    assert!(
        out.contains(
            "create index runs_failed on runs (time_start) where exit_status <> 'success'"
        ),
        "{out}"
    );
    ok(&fx, &["make-migrations", "--name", "failed"]);
    let sql = std::fs::read_to_string(fx.path().join("m/beamtime/V3__failed.sql")).unwrap();
    assert!(
        sql.contains("CREATE INDEX \"runs_failed\" ON \"runs\" (\"time_start\") WHERE exit_status <> 'success';"),
        "{sql}"
    );
    assert_eq!(run(&mut fx.beamdb(&["make-migrations", "--check"])).0, 0);
    ingest(&fx, "r-1", 1_795_000_000.0, serde_json::json!({}));
    let db = fx.beamtime_db("bt-1");
    let (code, out, err) = run(&mut fx.beamdb(&[
        "make-migrations",
        "--check",
        "--database",
        db.to_str().unwrap(),
    ]));
    assert_eq!(
        code, 0,
        "the live database has the partial index: {out}{err}"
    );
    // A changed predicate is a drop and a create, in place.
    edit_model(
        &fx,
        "where = \"exit_status <> 'success'\"",
        "where = \"exit_status IS NULL\"",
    );
    ok(&fx, &["make-migrations", "--name", "incomplete"]);
    let sql = std::fs::read_to_string(fx.path().join("m/beamtime/V4__incomplete.sql")).unwrap();
    assert!(!sql.contains("rebuilt"), "{sql}");
    ok(&fx, &["migrate"]);
    let conn = fx.open(&db);
    assert_eq!(count(&conn, "SELECT count(*) FROM runs"), 1);
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM sqlite_schema WHERE name = 'runs_failed' AND sql LIKE '%WHERE exit_status IS NULL'"
        ),
        1
    );
}

#[test]
fn migrate_making_a_table_strict_stops_at_values_of_another_type_and_changes_nothing() {
    let fx = Fixture::new();
    config_repo(&fx);
    append_model(
        &fx,
        "[tables.readings]\ncolumns = [\n  { name = \"id\", type = \"INTEGER\", primary_key = true },\n  { name = \"value\", type = \"REAL\", nullable = true },\n]\n",
    );
    ok(&fx, &["make-migrations", "--name", "readings"]);
    ok(&fx, &["initdb", "--beamtime", "bt-1", "--beamtime", "bt-2"]);
    fx.open(&fx.beamtime_db("bt-1"))
        .execute_batch(
            "INSERT INTO readings (value) VALUES (1.5), ('12'), ('n/a'), ('bad'), (NULL);",
        )
        .unwrap();
    fx.open(&fx.beamtime_db("bt-2"))
        .execute_batch("INSERT INTO readings (value) VALUES (1.5), ('7'), (NULL);")
        .unwrap();
    edit_model(
        &fx,
        "[tables.readings]\n",
        "[tables.readings]\nstrict = true\nwithout_rowid = true\n",
    );
    let (code, out, err) = run(&mut fx.beamdb(&["make-migrations", "--name", "strict"]));
    assert_eq!(code, 2, "a hazard: {out}{err}");
    assert!(err.contains("makes table readings STRICT"), "{err}");
    ok(
        &fx,
        &["make-migrations", "--name", "strict", "--allow-destructive"],
    );
    let sql = std::fs::read_to_string(fx.path().join("m/beamtime/V4__strict.sql")).unwrap();
    assert!(sql.contains(") STRICT, WITHOUT ROWID;"), "{sql}");
    assert_eq!(run(&mut fx.beamdb(&["make-migrations", "--check"])).0, 0);

    let (code, out, err) = run(&mut fx.beamdb(&["migrate"]));
    assert_eq!(
        code, 1,
        "as for NULLs in a column made NOT NULL: {out}{err}"
    );
    assert!(
        err.contains("table readings, column value: 2 row(s) hold a value that is not REAL, and this migration makes the table STRICT"),
        "{err}"
    );
    let conn = fx.open(&fx.beamtime_db("bt-1"));
    assert_eq!(
        count(&conn, "SELECT count(*) FROM readings"),
        5,
        "nothing changed"
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM pragma_table_list('readings') WHERE strict = 0"
        ),
        1
    );
    drop(conn);
    // The other beamtime's values fit: it is migrated, every row kept, '7' now 7.0.
    let conn = fx.open(&fx.beamtime_db("bt-2"));
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM pragma_table_list('readings') WHERE strict = 1 AND wr = 1"
        ),
        1
    );
    assert_eq!(count(&conn, "SELECT count(*) FROM readings"), 3);
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM readings WHERE typeof(value) = 'real'"
        ),
        2
    );
}

#[test]
fn make_migrations_strict_and_without_rowid_models_are_checked() {
    for (table, what) in [
        (
            "[tables.t]\nstrict = true\ncolumns = [\n  { name = \"a\", type = \"NUMERIC\" },\n]\n",
            "table `t`: column `a` is NUMERIC, which a STRICT table does not take",
        ),
        (
            "[tables.t]\nwithout_rowid = true\ncolumns = [\n  { name = \"a\", type = \"TEXT\" },\n]\n",
            "table `t`: is WITHOUT ROWID, which needs a primary key",
        ),
    ] {
        let fx = Fixture::new();
        config_repo(&fx);
        append_model(&fx, table);
        let (code, out, err) = run(&mut fx.beamdb(&["make-migrations", "--check"]));
        assert_eq!(code, 2, "{out}{err}");
        assert!(
            err.contains("beamtime.toml:") && err.contains(what),
            "{err}"
        );
    }
}

#[test]
fn migrate_adding_a_check_stops_at_rows_that_violate_it_and_collate_round_trips() {
    let fx = Fixture::new();
    config_repo(&fx);
    append_model(
        &fx,
        "[tables.readings]\ncolumns = [\n  { name = \"id\", type = \"INTEGER\", primary_key = true },\n  { name = \"value\", type = \"REAL\", nullable = true },\n  { name = \"label\", type = \"TEXT\", nullable = true },\n]\n",
    );
    ok(&fx, &["make-migrations", "--name", "readings"]);
    ok(&fx, &["initdb", "--beamtime", "bt-1"]);
    fx.open(&fx.beamtime_db("bt-1"))
        .execute_batch("INSERT INTO readings (value, label) VALUES (1.5, 'a'), (-2, 'b'), (-3, 'c'), (NULL, 'd');")
        .unwrap();
    edit_model(
        &fx,
        "{ name = \"value\", type = \"REAL\", nullable = true }",
        "{ name = \"value\", type = \"REAL\", nullable = true, check = \"value >= 0\" }",
    );
    edit_model(
        &fx,
        "{ name = \"label\", type = \"TEXT\", nullable = true }",
        "{ name = \"label\", type = \"TEXT\", nullable = true, collate = \"nocase\" }",
    );
    edit_model(
        &fx,
        "[tables.readings]\n",
        "[tables.readings]\nchecks = [\"length(label) < 10\"]\n",
    );
    let (code, out, _) = run(&mut fx.beamdb(&["make-migrations", "--check"]));
    assert_eq!(code, 3);
    assert!(
        out.contains(
            "alter table readings: checks CHECK (value >= 0), CHECK (length(label) < 10) (was none)"
        ) && out.contains("alter column readings.label: collate NOCASE (was BINARY)"),
        "{out}"
    );
    let (code, out, err) = run(&mut fx.beamdb(&["make-migrations", "--name", "checks"]));
    assert_eq!(code, 2, "adding a check is a hazard: {out}{err}");
    assert!(
        err.contains("adds CHECK (value >= 0), CHECK (length(label) < 10) to table readings"),
        "{err}"
    );
    ok(
        &fx,
        &["make-migrations", "--name", "checks", "--allow-destructive"],
    );
    let sql = std::fs::read_to_string(fx.path().join("m/beamtime/V4__checks.sql")).unwrap();
    assert!(
        sql.contains("\"label\" TEXT COLLATE NOCASE,\n    CHECK (value >= 0),\n    CHECK (length(label) < 10)\n);"),
        "{sql}"
    );
    assert_eq!(run(&mut fx.beamdb(&["make-migrations", "--check"])).0, 0);
    let (code, out, err) = run(&mut fx.beamdb(&["migrate"]));
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(
            "table readings: 2 row(s) violate CHECK (value >= 0), which this migration adds"
        ),
        "{err}"
    );
    let conn = fx.open(&fx.beamtime_db("bt-1"));
    assert_eq!(
        count(&conn, "SELECT count(*) FROM readings"),
        4,
        "nothing changed"
    );
    conn.execute_batch("UPDATE readings SET value = -value WHERE value < 0;")
        .unwrap();
    drop(conn);
    ok(&fx, &["migrate"]);
    let conn = fx.open(&fx.beamtime_db("bt-1"));
    assert_eq!(count(&conn, "SELECT count(*) FROM readings"), 4);
    assert_eq!(
        count(&conn, "SELECT count(*) FROM readings WHERE label = 'A'"),
        1,
        "NOCASE"
    );
    assert!(
        conn.execute("INSERT INTO readings (value) VALUES (-1)", [])
            .is_err()
    );
    drop(conn);
    let db = fx.beamtime_db("bt-1");
    let (code, out, err) = run(&mut fx.beamdb(&[
        "make-migrations",
        "--check",
        "--database",
        db.to_str().unwrap(),
    ]));
    assert_eq!(
        code, 0,
        "introspection reads the checks and the collation back: {out}{err}"
    );
}

#[test]
fn make_migrations_generated_columns_in_a_unique_index_round_trip_and_keep_rows() {
    // SDSS Astra keys results by a generated v_astra_major_minor = v_astra / 1000.
    let fx = Fixture::new();
    config_repo(&fx);
    append_model(
        &fx,
        "[tables.results]\ncolumns = [\n  { name = \"id\", type = \"INTEGER\", primary_key = true },\n  { name = \"sdss_id\", type = \"INTEGER\" },\n  { name = \"v_astra\", type = \"INTEGER\" },\n]\n",
    );
    ok(&fx, &["make-migrations", "--name", "results"]);
    ok(&fx, &["initdb", "--beamtime", "bt-1"]);
    fx.open(&fx.beamtime_db("bt-1"))
        .execute_batch(
            "INSERT INTO results (sdss_id, v_astra) VALUES (1, 4001), (1, 5002), (2, 4001);",
        )
        .unwrap();
    edit_model(
        &fx,
        "  { name = \"v_astra\", type = \"INTEGER\" },\n]\n",
        "  { name = \"v_astra\", type = \"INTEGER\" },\n  { name = \"v_astra_major_minor\", type = \"INTEGER\", nullable = true, generated = \"v_astra / 1000\" },\n  { name = \"label\", type = \"TEXT\", nullable = true, generated = \"'sdss-' || sdss_id\", stored = true },\n]\nindexes = [ { name = \"results_key\", columns = [\"v_astra_major_minor\", \"sdss_id\"], unique = true } ]\n",
    );
    let (code, out, _) = run(&mut fx.beamdb(&["make-migrations", "--check"]));
    assert_eq!(code, 3);
    assert!(
        out.contains("add column results.v_astra_major_minor INTEGER NULL GENERATED AS (v_astra / 1000) VIRTUAL"),
        "{out}"
    );
    ok(&fx, &["make-migrations", "--name", "generated"]);
    let sql = std::fs::read_to_string(fx.path().join("m/beamtime/V4__generated.sql")).unwrap();
    assert!(
        sql.contains("\"label\" TEXT GENERATED ALWAYS AS ('sdss-' || sdss_id) STORED")
            && sql.contains("add STORED or NOT NULL generated column label"),
        "the STORED one needs a rebuild: {sql}"
    );
    assert_eq!(run(&mut fx.beamdb(&["make-migrations", "--check"])).0, 0);
    ok(&fx, &["migrate"]);
    let conn = fx.open(&fx.beamtime_db("bt-1"));
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM results WHERE v_astra_major_minor = v_astra / 1000 AND label = 'sdss-' || sdss_id"
        ),
        3
    );
    assert!(
        conn.execute(
            "INSERT INTO results (sdss_id, v_astra) VALUES (1, 4999)",
            []
        )
        .is_err(),
        "unique on (v_astra_major_minor, sdss_id)"
    );
    drop(conn);
    let db = fx.beamtime_db("bt-1");
    let (code, out, err) = run(&mut fx.beamdb(&[
        "make-migrations",
        "--check",
        "--database",
        db.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{out}{err}");
    // A generated column that becomes plain keeps its values.
    edit_model(
        &fx,
        ", generated = \"'sdss-' || sdss_id\", stored = true",
        "",
    );
    ok(&fx, &["make-migrations", "--name", "plain"]);
    ok(&fx, &["migrate"]);
    let conn = fx.open(&fx.beamtime_db("bt-1"));
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM results WHERE label = 'sdss-' || sdss_id"
        ),
        3
    );
}

#[test]
fn migrate_rebuilding_an_autoincrement_table_keeps_its_counter() {
    let fx = Fixture::new();
    config_repo(&fx);
    append_model(
        &fx,
        "[tables.log]\ncolumns = [\n  { name = \"id\", type = \"INTEGER\", primary_key = true, autoincrement = true },\n  { name = \"msg\", type = \"TEXT\" },\n]\n",
    );
    ok(&fx, &["make-migrations", "--name", "log"]);
    let sql = std::fs::read_to_string(fx.path().join("m/beamtime/V3__log.sql")).unwrap();
    assert!(
        sql.contains("\"id\" INTEGER PRIMARY KEY AUTOINCREMENT,"),
        "{sql}"
    );
    ok(&fx, &["initdb", "--beamtime", "bt-1"]);
    fx.open(&fx.beamtime_db("bt-1"))
        .execute_batch(
            "INSERT INTO log (msg) VALUES ('a'), ('b'), ('c'); DELETE FROM log WHERE id = 3;",
        )
        .unwrap();
    edit_model(
        &fx,
        "{ name = \"msg\", type = \"TEXT\" }",
        "{ name = \"msg\", type = \"TEXT\", nullable = true }",
    );
    ok(&fx, &["make-migrations", "--name", "msg_nullable"]);
    assert_eq!(run(&mut fx.beamdb(&["make-migrations", "--check"])).0, 0);
    ok(&fx, &["migrate"]);
    let conn = fx.open(&fx.beamtime_db("bt-1"));
    conn.execute_batch("INSERT INTO log (msg) VALUES ('d');")
        .unwrap();
    assert_eq!(
        count(&conn, "SELECT id FROM log WHERE msg = 'd'"),
        4,
        "3 was handed out before; AUTOINCREMENT never reuses it"
    );
    drop(conn);
    // Dropping AUTOINCREMENT is a change of its own (a rebuild), and so is a misplaced one.
    edit_model(&fx, ", autoincrement = true", "");
    let (code, out, _) = run(&mut fx.beamdb(&["make-migrations", "--check"]));
    assert_eq!(code, 3);
    assert!(
        out.contains("alter table log: no options (was AUTOINCREMENT)"),
        "{out}"
    );
    edit_model(
        &fx,
        "{ name = \"msg\", type = \"TEXT\", nullable = true }",
        "{ name = \"msg\", type = \"TEXT\", nullable = true, autoincrement = true }",
    );
    let (code, _, err) = run(&mut fx.beamdb(&["make-migrations", "--check"]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("column `msg` has autoincrement, which only the rowid alias takes"),
        "{err}"
    );
}

#[test]
fn make_migrations_names_that_need_quoting_round_trip() {
    let fx = Fixture::new();
    config_repo(&fx);
    append_model(
        &fx,
        "[tables.\"beam line's log\"]\ncolumns = [\n  { name = \"id\", type = \"INTEGER\", primary_key = true },\n  { name = \"the \\\"value\\\"\", type = \"REAL\", nullable = true, check = \"\\\"the \\\"\\\"value\\\"\\\"\\\" >= 0\" },\n]\nindexes = [ { name = \"by value\", columns = [\"the \\\"value\\\"\"], where = \"\\\"the \\\"\\\"value\\\"\\\"\\\" > 1\" } ]\n",
    );
    ok(&fx, &["make-migrations", "--name", "quoted"]);
    assert_eq!(run(&mut fx.beamdb(&["make-migrations", "--check"])).0, 0);
    ok(&fx, &["initdb", "--beamtime", "bt-1"]);
    fx.open(&fx.beamtime_db("bt-1"))
        .execute_batch("INSERT INTO \"beam line's log\" (\"the \"\"value\"\"\") VALUES (2), (3);")
        .unwrap();
    // A rename of the column with the quotes, through the command line.
    edit_model(&fx, "name = \"the \\\"value\\\"\"", "name = \"reading\"");
    edit_model(
        &fx,
        "columns = [\"the \\\"value\\\"\"]",
        "columns = [\"reading\"]",
    );
    let model = std::fs::read_to_string(fx.path().join("models/beamtime.toml")).unwrap();
    std::fs::write(
        fx.path().join("models/beamtime.toml"),
        model.replace("\\\"the \\\"\\\"value\\\"\\\"\\\"", "\\\"reading\\\""),
    )
    .unwrap();
    ok(
        &fx,
        &[
            "make-migrations",
            "--rename",
            "beam line's log.the \"value\"=beam line's log.reading",
        ],
    );
    assert_eq!(run(&mut fx.beamdb(&["make-migrations", "--check"])).0, 0);
    ok(&fx, &["migrate"]);
    let conn = fx.open(&fx.beamtime_db("bt-1"));
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM \"beam line's log\" WHERE reading >= 2"
        ),
        2
    );
    drop(conn);
    let fx = Fixture::new();
    config_repo(&fx);
    append_model(
        &fx,
        "[tables.t]\ncolumns = [ { name = \"a.b\", type = \"TEXT\" } ]\n",
    );
    let (code, _, err) = run(&mut fx.beamdb(&["make-migrations", "--check"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("contains '.'"), "{err}");
}

#[test]
fn make_migrations_views_and_triggers_survive_rebuilds_and_renames() {
    let fx = Fixture::new();
    config_repo(&fx);
    append_model(
        &fx,
        "[tables.readings]\ncolumns = [\n  { name = \"id\", type = \"INTEGER\", primary_key = true },\n  { name = \"value\", type = \"REAL\" },\n  { name = \"changed\", type = \"INTEGER\", default = \"0\" },\n]\n\n[views.positive]\nselect = \"SELECT id, value FROM readings WHERE value > 0\"\n\n[triggers.readings_touch]\non = \"readings\"\nwhen = \"AFTER UPDATE OF value\"\nbody = \"UPDATE readings SET changed = changed + 1 WHERE id = NEW.id;\"\n",
    );
    let (code, out, _) = run(&mut fx.beamdb(&["make-migrations", "--check"]));
    assert_eq!(code, 3);
    assert!(
        out.contains("create view positive") && out.contains("create trigger readings_touch"),
        "{out}"
    );
    ok(&fx, &["make-migrations", "--name", "readings"]);
    ok(&fx, &["initdb", "--beamtime", "bt-1"]);
    fx.open(&fx.beamtime_db("bt-1"))
        .execute_batch("INSERT INTO readings (value) VALUES (1.5), (-2);")
        .unwrap();
    // A rebuild of readings (value becomes nullable) and a rename of a column the view names.
    edit_model(
        &fx,
        "{ name = \"value\", type = \"REAL\" }",
        "{ name = \"reading\", type = \"REAL\", nullable = true }",
    );
    edit_model(
        &fx,
        "SELECT id, value FROM readings WHERE value > 0",
        "SELECT id, reading FROM readings WHERE reading > 0",
    );
    edit_model(&fx, "AFTER UPDATE OF value", "AFTER UPDATE OF reading");
    ok(
        &fx,
        &[
            "make-migrations",
            "--rename",
            "readings.value=readings.reading",
        ],
    );
    assert_eq!(run(&mut fx.beamdb(&["make-migrations", "--check"])).0, 0);
    ok(&fx, &["migrate"]);
    let conn = fx.open(&fx.beamtime_db("bt-1"));
    assert_eq!(count(&conn, "SELECT count(*) FROM positive"), 1);
    conn.execute_batch("UPDATE readings SET reading = 3 WHERE reading < 0;")
        .unwrap();
    assert_eq!(
        count(&conn, "SELECT count(*) FROM readings WHERE changed = 1"),
        1,
        "the trigger is back"
    );
    assert_eq!(count(&conn, "SELECT count(*) FROM positive"), 2);
    drop(conn);
    let db = fx.beamtime_db("bt-1");
    let (code, out, err) = run(&mut fx.beamdb(&[
        "make-migrations",
        "--check",
        "--database",
        db.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn make_migrations_expression_index_round_trips_and_enforces_uniqueness() {
    let fx = Fixture::new();
    config_repo(&fx);
    append_model(
        &fx,
        "[tables.people]\ncolumns = [\n  { name = \"id\", type = \"INTEGER\", primary_key = true },\n  { name = \"email\", type = \"TEXT\" },\n]\nindexes = [\n  { name = \"people_email\", expressions = [\"lower(email)\"], unique = true },\n  { name = \"people_recent\", expressions = [\"id DESC\", \"email COLLATE NOCASE\"] },\n]\n",
    );
    let (code, out, _) = run(&mut fx.beamdb(&["make-migrations", "--check"]));
    assert_eq!(code, 3);
    assert!(
        out.contains("create unique index people_email on people (lower(email))"),
        "{out}"
    );
    ok(&fx, &["make-migrations", "--name", "people"]);
    let sql = std::fs::read_to_string(fx.path().join("m/beamtime/V3__people.sql")).unwrap();
    assert!(
        sql.contains("CREATE UNIQUE INDEX \"people_email\" ON \"people\" (lower(email));"),
        "{sql}"
    );
    assert_eq!(run(&mut fx.beamdb(&["make-migrations", "--check"])).0, 0);
    ok(&fx, &["initdb", "--beamtime", "bt-1"]);
    let db = fx.beamtime_db("bt-1");
    let conn = fx.open(&db);
    conn.execute_batch("INSERT INTO people (email) VALUES ('Ada@x.org');")
        .unwrap();
    assert!(
        conn.execute("INSERT INTO people (email) VALUES ('ada@X.org')", [])
            .is_err()
    );
    drop(conn);
    let (code, out, err) = run(&mut fx.beamdb(&[
        "make-migrations",
        "--check",
        "--database",
        db.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{out}{err}");
    // A rebuild of the table (email nullable) recreates it.
    edit_model(
        &fx,
        "{ name = \"email\", type = \"TEXT\" }",
        "{ name = \"email\", type = \"TEXT\", nullable = true }",
    );
    ok(&fx, &["make-migrations", "--name", "nullable"]);
    ok(&fx, &["migrate"]);
    let (code, out, err) = run(&mut fx.beamdb(&[
        "make-migrations",
        "--check",
        "--database",
        db.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{out}{err}");
}
