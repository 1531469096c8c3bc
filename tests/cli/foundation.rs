//! initdb, settings, migrate, make-migrations on the shipped models, --help.

use std::io::Read;
use std::process::Stdio;

use crate::common::{Fixture, count, counts, path, repo, run, shared_map};

#[test]
fn initdb_on_defaults_creates_index_beamtime_and_zarr_store() {
    let fx = Fixture::new();
    let (code, _, err) = run(&mut fx.beamdb(&["initdb", "--beamtime", "bt-1"]));
    assert_eq!(code, 0, "{err}");
    assert!(fx.data_root().join("index.db").is_file());
    assert!(fx.beamtime_db("bt-1").is_file());
    let zarr_json = fx.data_root().join("beamtimes/bt-1/frames.zarr/zarr.json");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(zarr_json).unwrap()).unwrap();
    assert_eq!(meta["zarr_format"], 3);
    assert_eq!(meta["node_type"], "group");
}

#[test]
fn initdb_is_idempotent() {
    let fx = Fixture::new();
    assert_eq!(run(&mut fx.beamdb(&["initdb", "--beamtime", "bt-1"])).0, 0);
    let conn = fx.open(&fx.beamtime_db("bt-1"));
    conn.execute("INSERT INTO samples (name) VALUES ('P3HT')", [])
        .unwrap();
    drop(conn);
    let (code, _, err) =
        run(&mut fx.beamdb(&["initdb", "--beamtime", "bt-1", "--beamtime", "bt-2"]));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("up to date"), "{err}");
    let conn = fx.open(&fx.beamtime_db("bt-1"));
    assert_eq!(count(&conn, "SELECT count(*) FROM samples"), 1);
    assert!(fx.beamtime_db("bt-2").is_file());
}

#[test]
fn initdb_files_are_wal_with_foreign_keys_declared() {
    let fx = Fixture::new();
    assert_eq!(run(&mut fx.beamdb(&["initdb", "--beamtime", "bt-1"])).0, 0);
    for path in [fx.data_root().join("index.db"), fx.beamtime_db("bt-1")] {
        let conn = fx.open(&path);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal", "{}", path.display());
        assert!(
            count(
                &conn,
                "SELECT count(*) FROM pragma_foreign_key_list('runs_index') UNION ALL SELECT count(*) FROM pragma_foreign_key_list('runs') ORDER BY 1 DESC LIMIT 1"
            ) > 0
        );
        assert_eq!(
            count(&conn, "SELECT count(*) FROM pragma_foreign_key_check"),
            0
        );
    }
    let conn = fx.open(&fx.beamtime_db("bt-1"));
    // ON DELETE actions are deliberate: deleting a run removes its streams.
    conn.execute_batch(
        "PRAGMA foreign_keys = ON;
         INSERT INTO runs (uid, plan_name, time_start, metadata) VALUES ('r1', 'count', 1.0, '{}');
         INSERT INTO streams (uid, run_uid, name, data_keys, time_created) VALUES ('s1', 'r1', 'primary', '{}', 1.0);
         DELETE FROM runs;",
    )
    .unwrap();
    assert_eq!(count(&conn, "SELECT count(*) FROM streams"), 0);
}

#[test]
fn initdb_refuses_unsafe_beamtime_ids_before_writing() {
    for bad in ["../evil", "a/b", "", "..", "with space"] {
        let fx = Fixture::new();
        let (code, _, err) =
            run(&mut fx.beamdb(&["initdb", "--beamtime", "ok", "--beamtime", bad]));
        assert_eq!(code, 2, "{bad:?}: {err}");
        assert!(err.contains("not a safe name"), "{err}");
        assert!(!fx.data_root().exists(), "{bad:?}: nothing may be written");
    }
}

#[test]
fn settings_unknown_key_names_file_line_and_key() {
    let fx = Fixture::new();
    fx.write(
        "settings.toml",
        "data_root = \"d\"\n[sqlite]\nbusy_timeout = 10\n",
    );
    let (code, _, err) = run(&mut fx.beamdb(&["initdb"]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("settings.toml:3: key `sqlite.busy_timeout`: unknown field"),
        "{err}"
    );
    assert!(!fx.path().join("d").exists());
}

#[test]
fn settings_wrong_type_names_file_line_and_key() {
    let fx = Fixture::new();
    let path = fx.write("conf/s.toml", "[ingest]\ncompression_level = \"high\"\n");
    let (code, _, err) = run(&mut fx.beamdb(&["--settings", path.to_str().unwrap(), "initdb"]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("s.toml:2: key `ingest.compression_level`: invalid type"),
        "{err}"
    );
}

#[test]
fn settings_from_env_and_data_root_override() {
    let fx = Fixture::new();
    fx.write("conf/s.toml", "data_root = \"from-file\"\n");
    let (code, _, err) = run(fx.beamdb(&["initdb"]).env("BEAMDB_SETTINGS", "conf/s.toml"));
    assert_eq!(code, 0, "{err}");
    assert!(fx.path().join("conf/from-file/index.db").is_file());
    let (code, _, err) = run(fx
        .beamdb(&["initdb"])
        .env("BEAMDB_SETTINGS", "conf/s.toml")
        .env("BEAMDB_DATA_ROOT", "elsewhere"));
    assert_eq!(code, 0, "{err}");
    assert!(fx.path().join("elsewhere/index.db").is_file());
}

#[test]
fn settings_missing_file_is_a_usage_error() {
    let fx = Fixture::new();
    let (code, _, err) = run(&mut fx.beamdb(&["--settings", "nope.toml", "initdb"]));
    assert_eq!(code, 2);
    assert!(
        err.contains("nope.toml (from --settings): cannot read it"),
        "{err}"
    );
}

#[test]
fn migrate_at_head_changes_nothing() {
    let fx = Fixture::new();
    assert_eq!(run(&mut fx.beamdb(&["initdb", "--beamtime", "bt-1"])).0, 0);
    let (code, out, err) = run(&mut fx.beamdb(&["migrate"]));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("up to date"), "{out}{err}");
    let (code, _, _) = run(&mut fx.beamdb(&["migrate", "--check"]));
    assert_eq!(code, 0);
}

#[test]
fn migrate_refuses_a_database_ahead_of_the_binary() {
    let fx = Fixture::new();
    assert_eq!(
        run(&mut fx.beamdb(&["initdb", "--beamtime", "bt-1", "--beamtime", "bt-2"])).0,
        0
    );
    let conn = fx.open(&fx.beamtime_db("bt-1"));
    conn.execute(
        "INSERT INTO refinery_schema_history (version, name, applied_on, checksum)
         VALUES (99, 'from_the_future', '2030-01-01T00:00:00Z', '1')",
        [],
    )
    .unwrap();
    drop(conn);
    let (code, _, err) = run(&mut fx.beamdb(&["migrate"]));
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("V99__from_the_future"), "{err}");
    assert!(err.contains("bt-1"), "{err}");
}

#[test]
fn migrate_refuses_a_diverged_history() {
    let fx = Fixture::new();
    assert_eq!(run(&mut fx.beamdb(&["initdb"])).0, 0);
    let conn = fx.open(&fx.data_root().join("index.db"));
    conn.execute(
        "UPDATE refinery_schema_history SET checksum = '42' WHERE version = 1",
        [],
    )
    .unwrap();
    drop(conn);
    let (code, _, err) = run(&mut fx.beamdb(&["migrate"]));
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("differs"), "{err}");
}

#[test]
fn migrate_unknown_beamtime_is_a_usage_error() {
    let fx = Fixture::new();
    assert_eq!(run(&mut fx.beamdb(&["initdb"])).0, 0);
    let (code, _, err) = run(&mut fx.beamdb(&["migrate", "--beamtime", "nope"]));
    assert_eq!(code, 2, "{err}");
}

#[test]
fn make_migrations_check_is_clean_on_the_shipped_models() {
    let fx = Fixture::new();
    let (code, out, err) = run(&mut fx.beamdb(&["make-migrations", "--check"]));
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn make_migrations_on_an_empty_folder_writes_the_shipped_initial_migrations() {
    let fx = Fixture::new();
    fx.write("settings.toml", "[schema]\nmigrations_dir = \"m\"\n");
    let (code, out, err) = run(&mut fx.beamdb(&["make-migrations"]));
    assert_eq!(code, 0, "{out}{err}");
    // The written initial migration makes the schema the shipped ones make in steps.
    let schema = |sql: &[String]| -> Vec<(String, String, String, i64, i64)> {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        for step in sql {
            conn.execute_batch(step).unwrap();
        }
        let mut stmt = conn
            .prepare(
                "SELECT m.name, p.name, p.type, p.\"notnull\", p.pk FROM sqlite_schema m, pragma_table_info(m.name) p
                 WHERE m.type = 'table' ORDER BY m.name, p.name",
            )
            .unwrap();
        let mut rows: Vec<(String, String, String, i64, i64)> = stmt
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let mut indexes = conn
            .prepare("SELECT name, tbl_name, '', 0, 0 FROM sqlite_schema WHERE type = 'index' ORDER BY name")
            .unwrap();
        rows.extend(
            indexes
                .query_map([], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .unwrap()
                .map(Result::unwrap),
        );
        rows
    };
    for kind in ["beamtime", "index"] {
        let written =
            std::fs::read_to_string(fx.path().join(format!("m/{kind}/V1__initial.sql"))).unwrap();
        let mut shipped: Vec<_> = std::fs::read_dir(repo(&format!("migrations/{kind}")))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        shipped.sort_by_key(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            name[1..name.find("__").unwrap()].parse::<i32>().unwrap()
        });
        let shipped: Vec<String> = shipped
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        if shipped.len() == 1 {
            assert_eq!(
                written, shipped[0],
                "{kind}: the shipped migration is what make-migrations writes"
            );
        }
        assert_eq!(
            schema(&[written]),
            schema(&shipped),
            "{kind}: the shipped migrations make the models' schema"
        );
    }
    // A second run has nothing to write.
    let (code, _, err) = run(&mut fx.beamdb(&["make-migrations"]));
    assert_eq!(code, 0);
    assert!(err.contains("nothing to write"), "{err}");
    assert!(!fx.path().join("m/beamtime/V2__migration.sql").exists());
}

#[test]
fn make_migrations_check_exits_3_on_a_new_table_and_writes_nothing() {
    let fx = Fixture::new();
    let models = std::fs::read_to_string(repo("config/models/index.toml")).unwrap();
    fx.write("models/index.toml", &format!("{models}\n[tables.proposals]\ncolumns = [ {{ name = \"id\", type = \"TEXT\", primary_key = true }} ]\n"));
    fx.write(
        "models/beamtime.toml",
        &std::fs::read_to_string(repo("config/models/beamtime.toml")).unwrap(),
    );
    fx.write(
        "settings.toml",
        "[schema]\nmodels_dir = \"models\"\nmigrations_dir = \"m\"\n",
    );
    for kind in ["beamtime", "index"] {
        let dir = fx.path().join("m").join(kind);
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(repo(&format!("migrations/{kind}"))).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    let (code, out, _) = run(&mut fx.beamdb(&["make-migrations", "--check"]));
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("create table proposals"), "{out}");
    assert!(
        !fx.path()
            .join("m/index/V3__create_table_proposals.sql")
            .exists()
    );
    let (code, out, err) = run(&mut fx.beamdb(&["make-migrations", "--target", "index"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        fx.path()
            .join("m/index/V3__create_table_proposals.sql")
            .is_file(),
        "{out}"
    );
    assert_eq!(run(&mut fx.beamdb(&["make-migrations", "--check"])).0, 0);
}

#[test]
fn make_migrations_with_a_broken_model_names_file_and_table() {
    let fx = Fixture::new();
    fx.write(
        "models/index.toml",
        "[tables.x]\ncolumns = [\n  { name = \"a\", type = \"STRING\" },\n]\n",
    );
    fx.write("settings.toml", "[schema]\nmodels_dir = \"models\"\n");
    let (code, _, err) = run(&mut fx.beamdb(&["make-migrations", "--target", "index"]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("index.toml:3: table `x`: column `a` has unknown type `STRING`"),
        "{err}"
    );
}

#[test]
fn help_is_complete_for_every_subcommand() {
    let fx = Fixture::new();
    let (code, out, _) = run(&mut fx.beamdb(&["--help"]));
    assert_eq!(code, 0);
    assert!(out.contains("Exit status:") && out.contains("75"), "{out}");
    for sub in [
        "initdb",
        "make-migrations",
        "migrate",
        "ingest",
        "reindex",
        "runs",
        "export",
    ] {
        let (code, out, _) = run(&mut fx.beamdb(&[sub, "--help"]));
        assert_eq!(code, 0, "{sub}");
        assert!(out.contains("Usage: beamdb"), "{sub}: {out}");
        assert!(out.contains("Exit status:"), "{sub}: {out}");
    }
}

#[test]
fn bad_flag_is_a_usage_error() {
    let fx = Fixture::new();
    assert_eq!(run(&mut fx.beamdb(&["initdb", "--bogus"])).0, 2);
}

/// The shared run with scalar events only.
const SCALAR_RUN: &str = "7fbdf1df-8554-4a45-8123-cc03d61f67fc";

/// `beamdb ARGS` with stdout a pipe whose reading end is closed before beamdb writes to it,
/// as `beamdb ... | head -0` does. Returns (exit code, stderr).
fn with_stdout_closed(fx: &Fixture, args: &[&str]) -> (i32, String) {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin!("beamdb"));
    cmd.current_dir(fx.path())
        .env_clear()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn beamdb");
    drop(child.stdout.take());
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read stderr");
    let status = child.wait().expect("wait");
    (status.code().unwrap_or(-1), err)
}

/// `ingest … | head`: the reader goes away after the first line; beamdb stops printing, keeps
/// ingesting (every run lands) and exits with the command's status, not a panic's 101.
#[test]
fn ingest_into_a_closed_pipe_lands_every_run_and_exits_with_the_commands_status() {
    let fx = Fixture::new();
    let map = shared_map();
    let dir = repo("tests/data/bluesky");
    let (code, err) = with_stdout_closed(
        &fx,
        &["ingest", "--beamtime", "bt", "--root-map", &map, path(&dir)],
    );
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(counts(&fx), (4, 22, 11));
}

/// `verify | head` and `runs | head` alike: a closed stdout is not an error of the command.
#[test]
fn verify_and_runs_into_a_closed_pipe_exit_with_the_commands_status() {
    let fx = Fixture::new();
    let map = shared_map();
    let dir = repo("tests/data/bluesky");
    let ingest = ["ingest", "--beamtime", "bt", "--root-map", &map, path(&dir)];
    assert_eq!(run(&mut fx.beamdb(&ingest)).0, 0);
    assert_eq!(run(&mut fx.beamdb(&["reindex"])).0, 0);
    for args in [&["verify"][..], &["runs"][..], &["reindex"][..]] {
        let (code, err) = with_stdout_closed(&fx, args);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// cron's logs are files: no ANSI colour codes in them.
#[test]
fn warnings_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let fx = Fixture::new();
    let no_stop = fx.edited_copy(
        &repo(&format!("tests/data/bluesky/{SCALAR_RUN}.jsonl")),
        "no-stop.jsonl",
        |text| {
            text.lines()
                .filter(|l| !l.starts_with("[\"stop\""))
                .map(|l| format!("{l}\n"))
                .collect()
        },
    );
    let (code, out, err) = run(&mut fx.beamdb(&["ingest", "--beamtime", "bt", path(&no_stop)]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("WARN"), "a warning was printed: {err}");
    assert!(!err.contains('\u{1b}'), "no escape codes: {err:?}");
}

/// Each message line says something new: no cause repeats the line above it (a cause whose
/// text the error's own message already contains is not printed again).
#[test]
fn error_messages_never_repeat_a_line() {
    let fx = Fixture::new();
    fx.write(
        "bad.toml",
        "data_root = \"d\"\n[sqlite]\nbusy_timeout = 10\n",
    );
    fx.write("dir.toml/x", "");
    fx.write("typo.toml", "data_root = \"nowhere\"\n");
    fx.write("schema.toml", "[schema]\nmigrations_dir = \"nowhere\"\n");
    let cases: Vec<Vec<&str>> = vec![
        vec!["--settings", "typo.toml", "reindex"],
        vec!["--settings", "schema.toml", "initdb"],
        vec!["--settings", "bad.toml", "initdb"],
        vec!["--settings", "nope.toml", "initdb"],
        vec!["--settings", "dir.toml", "initdb"],
        vec!["initdb", "--beamtime", "a/b"],
        vec!["migrate", "--beamtime", "nope"],
    ];
    for args in cases {
        let (code, _, err) = run(&mut fx.beamdb(&args));
        assert_ne!(code, 0, "{args:?}");
        let lines: Vec<&str> = err
            .lines()
            .map(|l| {
                l.trim()
                    .trim_start_matches("error: ")
                    .trim_start_matches("caused by: ")
            })
            .collect();
        for pair in lines.windows(2) {
            assert!(
                !pair[0].contains(pair[1]),
                "{args:?}: a line repeats the one above it:\n{err}"
            );
        }
    }
}

/// A wrong data_root (a typo, an unmounted disk) is refused by every command that reads it,
/// naming the path and where the setting came from; nothing is created there.
#[test]
fn commands_refuse_a_missing_data_root_and_create_nothing() {
    let fx = Fixture::new();
    fx.write(
        "settings.toml",
        "# beamline settings\ndata_root = \"unmounted/beamdb\"\n",
    );
    for args in [
        &["reindex"][..],
        &["verify"][..],
        &["runs"][..],
        &["migrate"][..],
        &["migrate", "--check"][..],
    ] {
        let (code, out, err) = run(&mut fx.beamdb(args));
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains("unmounted/beamdb"), "{args:?}: {err}");
        assert!(!fx.path().join("unmounted").exists(), "{args:?}");
        assert!(
            err.contains("settings.toml:2"),
            "{args:?}: names the line: {err}"
        );
        assert!(err.contains("data_root"), "{args:?}: {err}");
    }
    let (code, _, err) = run(fx.beamdb(&["reindex"]).env("BEAMDB_DATA_ROOT", "typo"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("$BEAMDB_DATA_ROOT"), "{err}");
    assert!(!fx.path().join("typo").exists());
    std::fs::remove_file(fx.path().join("settings.toml")).unwrap();
    let (code, _, err) = run(&mut fx.beamdb(&["verify"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("default"), "{err}");
    assert!(!fx.data_root().exists());
    // initdb is the command that creates it.
    assert_eq!(run(&mut fx.beamdb(&["initdb"])).0, 0);
    assert_eq!(run(&mut fx.beamdb(&["reindex"])).0, 0);
}

/// `ingest --beamtime typo` whose input lands nothing leaves no beamtime folder behind, and
/// no data_root when it was the ingest that would have created it.
#[test]
fn ingest_that_lands_nothing_leaves_nothing_behind() {
    let fx = Fixture::new();
    let bad = fx.write(
        "bad.jsonl",
        "[\"event\", {\"uid\": \"e1\", \"descriptor\": \"d\", \"seq_num\": 1, \"time\": 1, \"data\": {}, \"timestamps\": {}}]\n",
    );
    let (code, out, err) = run(&mut fx.beamdb(&["ingest", "--beamtime", "typo", path(&bad)]));
    assert_eq!(code, 4, "{out}{err}");
    assert!(!fx.data_root().exists(), "no data_root created");
    assert_eq!(run(&mut fx.beamdb(&["initdb", "--beamtime", "bt"])).0, 0);
    let (code, out, err) = run(&mut fx.beamdb(&["ingest", "--beamtime", "typo", path(&bad)]));
    assert_eq!(code, 4, "{out}{err}");
    assert!(!fx.data_root().join("beamtimes/typo").exists(), "{err}");
    assert!(fx.beamtime_db("bt").is_file());
}

/// `[schema] migrations_dir` or `models_dir` set to a missing or empty folder is refused by
/// every command (exit 2, naming the key, the file and the line) instead of creating
/// databases with no tables or calling every table new.
#[test]
fn settings_schema_dirs_that_are_missing_or_empty_are_refused() {
    let fx = Fixture::new();
    std::fs::create_dir_all(fx.path().join("empty")).unwrap();
    for (key, value, line) in [
        ("migrations_dir", "nowhere", "settings.toml:3"),
        ("migrations_dir", "empty", "settings.toml:3"),
        ("models_dir", "nowhere", "settings.toml:3"),
        ("models_dir", "empty", "settings.toml:3"),
    ] {
        fx.write(
            "settings.toml",
            &format!("data_root = \"d\"\n[schema]\n{key} = \"{value}\"\n"),
        );
        for args in [
            &["initdb", "--beamtime", "bt"][..],
            &["make-migrations", "--check"][..],
            &["migrate"][..],
            &["reindex"][..],
        ] {
            let (code, out, err) = run(&mut fx.beamdb(args));
            assert_eq!(code, 2, "{key}={value} {args:?}: {out}{err}");
            assert!(err.contains(line), "{key}={value} {args:?}: {err}");
            assert!(
                err.contains(&format!("schema.{key}")),
                "{key}={value} {args:?}: {err}"
            );
        }
        assert!(!fx.path().join("d").exists(), "{key}={value}");
    }
}
