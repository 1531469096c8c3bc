//! reindex and runs: the index cron keeps, and the queries scientists run.

use std::path::Path;

use crate::common::{Fixture, count, run};

/// Writes a run into a beamtime the way ingest does: rows and the generation bump in one
/// transaction.
fn add_run(
    fx: &Fixture,
    beamtime: &str,
    uid: &str,
    sample: &str,
    plan: &str,
    time: f64,
    researcher: Option<&str>,
) {
    let mut conn = fx.open(&fx.beamtime_db(beamtime));
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    let tx = conn.transaction().unwrap();
    tx.execute("INSERT OR IGNORE INTO samples (name) VALUES (?1)", [sample])
        .unwrap();
    let metadata =
        serde_json::json!({"uid": uid, "plan_name": plan, "sample_name": sample}).to_string();
    tx.execute(
        "INSERT INTO runs (uid, sample_id, scan_id, plan_name, time_start, time_stop, exit_status, num_events, researcher, metadata)
         VALUES (?1, (SELECT id FROM samples WHERE name = ?2), 1, ?3, ?4, ?4 + 10, 'success', 5, ?5, ?6)",
        rusqlite::params![uid, sample, plan, time, researcher, metadata],
    )
    .unwrap();
    tx.execute(
        "INSERT INTO beamtime_meta (key, value) VALUES ('generation', '1')
         ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
        [],
    )
    .unwrap();
    tx.commit().unwrap();
}

fn three_beamtimes(fx: &Fixture) {
    let (code, _, err) = run(&mut fx.beamdb(&[
        "initdb",
        "--beamtime",
        "bt-1",
        "--beamtime",
        "bt-2",
        "--beamtime",
        "bt-3",
    ]));
    assert_eq!(code, 0, "{err}");
    add_run(
        fx,
        "bt-1",
        "r1",
        "P3HT",
        "scan",
        1_795_000_000.0,
        Some("Ada Lovelace"),
    );
    add_run(
        fx,
        "bt-1",
        "r2",
        "PCBM",
        "count",
        1_795_000_100.0,
        Some("Ada Lovelace"),
    );
    add_run(
        fx,
        "bt-2",
        "r3",
        "P3HT",
        "count",
        1_795_100_000.0,
        Some("Grace Hopper"),
    );
    add_run(
        fx,
        "bt-3",
        "r4",
        "P3HT-annealed",
        "scan",
        1_795_200_000.0,
        None,
    );
}

fn index(fx: &Fixture) -> rusqlite::Connection {
    fx.open(&fx.data_root().join("index.db"))
}

#[test]
fn reindex_indexes_every_run_of_every_beamtime() {
    let fx = Fixture::new();
    three_beamtimes(&fx);
    let (code, out, err) = run(&mut fx.beamdb(&["reindex"]));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("scanned 3, changed 3, unchanged 0, removed 0, failed 0"),
        "{out}"
    );
    let conn = index(&fx);
    assert_eq!(count(&conn, "SELECT count(*) FROM runs_index"), 4);
    assert_eq!(count(&conn, "SELECT count(*) FROM beamtimes"), 3);
    assert_eq!(
        count(&conn, "SELECT num_runs FROM beamtimes WHERE id = 'bt-1'"),
        2
    );
    assert_eq!(count(&conn, "SELECT count(*) FROM researchers"), 2);
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM runs_index r JOIN researchers p ON p.id = r.researcher_id WHERE p.name = 'Ada Lovelace'"
        ),
        2
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM runs_index WHERE sample_name = 'P3HT'"
        ),
        2
    );
    let owner: String = conn
        .query_row("SELECT p.name FROM beamtimes b JOIN researchers p ON p.id = b.researcher_id WHERE b.id = 'bt-2'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(owner, "Grace Hopper");
}

#[test]
fn reindex_skips_unchanged_beamtimes_and_rereads_changed_ones() {
    let fx = Fixture::new();
    three_beamtimes(&fx);
    assert_eq!(run(&mut fx.beamdb(&["reindex"])).0, 0);
    let (code, out, _) = run(&mut fx.beamdb(&["reindex"]));
    assert_eq!(code, 0);
    assert!(out.contains("changed 0, unchanged 3"), "{out}");
    add_run(
        &fx,
        "bt-2",
        "r5",
        "P3HT",
        "scan",
        1_795_300_000.0,
        Some("Grace Hopper"),
    );
    let (code, out, _) = run(&mut fx.beamdb(&["reindex"]));
    assert_eq!(code, 0);
    assert!(out.contains("changed 1, unchanged 2"), "{out}");
    assert_eq!(
        count(
            &index(&fx),
            "SELECT count(*) FROM runs_index WHERE beamtime_id = 'bt-2'"
        ),
        2
    );
    let (_, out, _) = run(&mut fx.beamdb(&["reindex", "--full"]));
    assert!(out.contains("changed 3, unchanged 0"), "{out}");
}

#[test]
fn reindex_notices_a_replaced_database_file() {
    let fx = Fixture::new();
    three_beamtimes(&fx);
    assert_eq!(run(&mut fx.beamdb(&["reindex"])).0, 0);
    // Replace bt-3's database with a copy of bt-1's (same generation, different file).
    let copy = fx.path().join("copy.db");
    fx.open(&fx.beamtime_db("bt-1"))
        .execute("VACUUM INTO ?1", [copy.to_str().unwrap()])
        .unwrap();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", fx.beamtime_db("bt-3").display()));
    }
    std::fs::rename(&copy, fx.beamtime_db("bt-3")).unwrap();
    let (code, out, err) = run(&mut fx.beamdb(&["reindex"]));
    assert_eq!(
        code, 4,
        "runs r1 and r2 are now in two beamtimes: {out}{err}"
    );
    assert!(err.contains("already indexed under beamtime bt-1"), "{err}");
    assert_eq!(
        count(
            &index(&fx),
            "SELECT count(*) FROM runs_index WHERE uid = 'r4'"
        ),
        0
    );
}

#[test]
fn reindex_removes_beamtimes_that_disappeared() {
    let fx = Fixture::new();
    three_beamtimes(&fx);
    assert_eq!(run(&mut fx.beamdb(&["reindex"])).0, 0);
    std::fs::remove_dir_all(fx.data_root().join("beamtimes/bt-1")).unwrap();
    let (code, out, _) = run(&mut fx.beamdb(&["reindex"]));
    assert_eq!(code, 0);
    assert!(
        out.contains("scanned 2, changed 0, unchanged 2, removed 1"),
        "{out}"
    );
    let conn = index(&fx);
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM runs_index WHERE beamtime_id = 'bt-1'"
        ),
        0
    );
    assert_eq!(count(&conn, "SELECT count(*) FROM beamtimes"), 2);
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM researchers WHERE name = 'Ada Lovelace'"
        ),
        0,
        "orphan researcher removed"
    );
}

#[test]
fn reindex_skips_a_corrupt_beamtime_and_indexes_the_rest() {
    let fx = Fixture::new();
    three_beamtimes(&fx);
    let bad = fx.beamtime_db("bt-2");
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", bad.display()));
    }
    std::fs::write(&bad, vec![b'x'; 8192]).unwrap();
    let (code, out, err) = run(&mut fx.beamdb(&["reindex"]));
    assert_eq!(code, 4, "{out}{err}");
    assert!(err.contains(&bad.display().to_string()), "{err}");
    assert!(err.contains("not an SQLite database"), "{err}");
    assert!(out.contains("failed 1"), "{out}");
    assert_eq!(count(&index(&fx), "SELECT count(*) FROM runs_index"), 3);
}

#[test]
fn reindex_skips_a_foreign_database_and_one_at_an_unknown_version() {
    let fx = Fixture::new();
    three_beamtimes(&fx);
    let foreign = fx.data_root().join("beamtimes/other/beamtime.db");
    std::fs::create_dir_all(foreign.parent().unwrap()).unwrap();
    fx.open(&foreign)
        .execute_batch("CREATE TABLE photos (id INTEGER);")
        .unwrap();
    fx.open(&fx.beamtime_db("bt-3"))
        .execute(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum)
             VALUES (99, 'future', '2030-01-01T00:00:00Z', '1')",
            [],
        )
        .unwrap();
    let (code, out, err) = run(&mut fx.beamdb(&["reindex"]));
    assert_eq!(code, 4, "{out}{err}");
    assert!(err.contains("not a beamdb beamtime database"), "{err}");
    assert!(
        err.contains("schema version this beamdb does not know"),
        "{err}"
    );
    assert_eq!(count(&index(&fx), "SELECT count(*) FROM runs_index"), 3);
}

#[test]
fn reindex_while_another_holds_the_lock_exits_75() {
    let fx = Fixture::new();
    three_beamtimes(&fx);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(fx.data_root().join(".reindex.lock"))
        .unwrap();
    lock.try_lock().unwrap();
    std::fs::write(fx.data_root().join(".reindex.lock"), "4242").unwrap();
    let (code, _, err) = run(&mut fx.beamdb(&["reindex"]));
    assert_eq!(code, 75, "{err}");
    assert!(
        err.contains("another beamdb reindex is running (pid 4242"),
        "{err}"
    );
    drop(lock);
    assert_eq!(run(&mut fx.beamdb(&["reindex"])).0, 0);
}

#[test]
fn reindex_beside_a_writer_never_fails_and_ends_complete() {
    let fx = Fixture::new();
    assert_eq!(run(&mut fx.beamdb(&["initdb", "--beamtime", "busy"])).0, 0);
    let writer = {
        let db = fx.beamtime_db("busy");
        std::thread::spawn(move || {
            let mut conn = rusqlite::Connection::open(&db).unwrap();
            conn.busy_timeout(std::time::Duration::from_secs(10))
                .unwrap();
            for i in 0..200 {
                let tx = conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .unwrap();
                tx.execute(
                    "INSERT INTO runs (uid, plan_name, time_start, metadata) VALUES (?1, 'count', ?2, '{}')",
                    rusqlite::params![format!("run-{i}"), i as f64],
                )
                .unwrap();
                tx.execute(
                    "INSERT INTO beamtime_meta (key, value) VALUES ('generation', '1')
                     ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
                    [],
                )
                .unwrap();
                tx.commit().unwrap();
            }
        })
    };
    let mut passes = 0;
    while !writer.is_finished() {
        let (code, out, err) = run(&mut fx.beamdb(&["reindex"]));
        assert_eq!(code, 0, "{out}{err}");
        passes += 1;
    }
    writer.join().unwrap();
    assert_eq!(run(&mut fx.beamdb(&["reindex"])).0, 0);
    assert!(passes >= 1);
    assert_eq!(count(&index(&fx), "SELECT count(*) FROM runs_index"), 200);
    assert_eq!(count(&index(&fx), "SELECT num_runs FROM beamtimes"), 200);
}

fn runs_json(fx: &Fixture, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["runs", "--json"];
    all.extend_from_slice(args);
    let (code, out, err) = run(&mut fx.beamdb(&all));
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn uids(rows: &[serde_json::Value]) -> Vec<&str> {
    rows.iter().map(|r| r["uid"].as_str().unwrap()).collect()
}

#[test]
fn runs_filters_newest_first_with_stable_json_keys() {
    let fx = Fixture::new();
    three_beamtimes(&fx);
    assert_eq!(run(&mut fx.beamdb(&["reindex"])).0, 0);
    let all = runs_json(&fx, &[]);
    assert_eq!(uids(&all), ["r4", "r3", "r2", "r1"], "newest first");
    let keys: Vec<&String> = all[0].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "uid",
            "beamtime",
            "scan_id",
            "plan_name",
            "sample_name",
            "researcher",
            "time_start",
            "time_start_iso",
            "time_stop",
            "exit_status",
            "num_events",
            "database",
            "frames"
        ]
    );
    assert_eq!(uids(&runs_json(&fx, &["--sample", "P3HT"])), ["r3", "r1"]);
    assert_eq!(
        uids(&runs_json(&fx, &["--sample", "P3HT*"])),
        ["r4", "r3", "r1"]
    );
    assert_eq!(
        uids(&runs_json(&fx, &["--researcher", "Ada Lovelace"])),
        ["r2", "r1"]
    );
    assert_eq!(
        uids(&runs_json(&fx, &["--plan", "count", "--beamtime", "bt-2"])),
        ["r3"]
    );
    assert_eq!(
        uids(&runs_json(
            &fx,
            &["--since", "1795050000", "--until", "1795150000"]
        )),
        ["r3"]
    );
    assert_eq!(uids(&runs_json(&fx, &["--limit", "1"])), ["r4"]);
    assert_eq!(
        uids(&runs_json(&fx, &["--exit-status", "incomplete"])),
        Vec::<&str>::new()
    );
    assert_eq!(all[3]["researcher"], "Ada Lovelace");
    assert_eq!(all[3]["sample_name"], "P3HT");
    assert_eq!(all[3]["beamtime"], "bt-1");
}

#[test]
fn runs_prints_a_table_for_people() {
    let fx = Fixture::new();
    three_beamtimes(&fx);
    assert_eq!(run(&mut fx.beamdb(&["reindex"])).0, 0);
    let (code, out, _) = run(&mut fx.beamdb(&["runs", "--sample", "P3HT"]));
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("START") && lines[0].contains("SAMPLE"),
        "{out}"
    );
    assert!(
        lines[1].contains("bt-2") && lines[1].contains("r3"),
        "{out}"
    );
}

#[test]
fn runs_rejects_an_unreadable_time() {
    let fx = Fixture::new();
    three_beamtimes(&fx);
    assert_eq!(run(&mut fx.beamdb(&["reindex"])).0, 0);
    let (code, _, err) = run(&mut fx.beamdb(&["runs", "--since", "last blue moon"]));
    assert_eq!(code, 2);
    assert!(
        err.contains("cannot read \"last blue moon\" as a time"),
        "{err}"
    );
}

#[test]
fn runs_without_an_index_says_to_reindex() {
    let fx = Fixture::new();
    // A data root with beamtimes (as ingest leaves it) but no index yet. (A missing data
    // root is refused with exit 2 before: commands_refuse_a_missing_data_root_and_create_nothing.)
    std::fs::create_dir_all(fx.data_root().join("beamtimes")).unwrap();
    let (code, _, err) = run(&mut fx.beamdb(&["runs"]));
    assert_eq!(code, 1);
    assert!(err.contains("run `beamdb reindex` first"), "{err}");
    assert!(
        !Path::new(&fx.data_root().join("index.db")).exists(),
        "runs never creates the index"
    );
}

/// Sets the modification time of a beamtime's files an hour back, as if written long ago.
fn age_files(fx: &Fixture, beamtime: &str) {
    let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for suffix in ["", "-wal"] {
        let path = format!("{}{suffix}", fx.beamtime_db(beamtime).display());
        if let Ok(file) = std::fs::OpenOptions::new().write(true).open(&path) {
            file.set_modified(an_hour_ago).unwrap();
        }
    }
}

#[test]
fn reindex_skips_old_unchanged_files_on_stat_and_still_sees_the_next_write() {
    let fx = Fixture::new();
    three_beamtimes(&fx);
    for bt in ["bt-1", "bt-2", "bt-3"] {
        age_files(&fx, bt);
    }
    assert_eq!(run(&mut fx.beamdb(&["reindex"])).0, 0);
    let (_, out, _) = run(&mut fx.beamdb(&["reindex"]));
    assert!(out.contains("changed 0, unchanged 3"), "{out}");
    add_run(&fx, "bt-1", "r9", "P3HT", "scan", 1_795_400_000.0, None);
    let (_, out, _) = run(&mut fx.beamdb(&["reindex"]));
    assert!(out.contains("changed 1, unchanged 2"), "{out}");
    assert_eq!(
        count(
            &index(&fx),
            "SELECT count(*) FROM runs_index WHERE uid = 'r9'"
        ),
        1
    );
}

/// `--since`/`--until` read wall-clock times in the local zone (TZ) through the C library:
/// a whole day across a DST change is 23 or 25 hours, a skipped wall-clock time reads with the
/// offset before the change, a repeated one as its first occurrence.
#[test]
fn runs_reads_local_days_across_dst_changes_in_the_tz_zone() {
    let fx = Fixture::new();
    assert_eq!(run(&mut fx.beamdb(&["initdb", "--beamtime", "bt-1"])).0, 0);
    // Europe/Berlin: 2026-03-29 is [1774738800, 1774821600), 23 hours; 2026-10-25 is
    // [1792879200, 1792969200), 25 hours.
    let runs = [
        ("mar-before", 1_774_738_799.0),
        ("mar-first", 1_774_738_800.0),
        ("mar-skip-before", 1_774_747_799.0), // 01:29:59 UTC
        ("mar-skip", 1_774_747_800.0),        // 01:30 UTC = 03:30 CEST, "02:30" read
        ("mar-last", 1_774_821_599.0),
        ("mar-after", 1_774_821_600.0),
        ("oct-before", 1_792_879_199.0),
        ("oct-first", 1_792_879_200.0),
        ("oct-twice", 1_792_888_200.0), // 00:30 UTC = the first 02:30 (CEST)
        ("oct-last", 1_792_969_199.0),
        ("oct-after", 1_792_969_200.0),
    ];
    for (uid, time) in runs {
        add_run(&fx, "bt-1", uid, "S", "scan", time, None);
    }
    assert_eq!(run(&mut fx.beamdb(&["reindex"])).0, 0);
    let berlin = |args: &[&str]| {
        let mut all = vec!["runs", "--json"];
        all.extend_from_slice(args);
        let (code, out, err) = run(fx.beamdb(&all).env("TZ", "Europe/Berlin"));
        assert_eq!(code, 0, "{err}");
        let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        rows.iter()
            .map(|r| r["uid"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        berlin(&["--since", "2026-03-29", "--until", "2026-03-29"]),
        ["mar-last", "mar-skip", "mar-skip-before", "mar-first"]
    );
    assert_eq!(
        berlin(&["--since", "2026-03-29T02:30", "--until", "2026-03-29"]),
        ["mar-last", "mar-skip"]
    );
    assert_eq!(
        berlin(&["--since", "2026-10-25", "--until", "2026-10-25"]),
        ["oct-last", "oct-twice", "oct-first"]
    );
    assert_eq!(
        berlin(&[
            "--since",
            "2026-10-25 02:30",
            "--until",
            "2026-10-25T02:30:01"
        ]),
        ["oct-twice"]
    );
}
