//! Concurrency suite: real processes at once on one data root. Never "database is locked",
//! never a half run; a second writer waits or exits 75, and nothing is lost.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{Fixture, assert_whole, config_repo, count, run};
use crate::crash::{finish, spawn};
use crate::generate;

/// `map`: the identity root map of the generated frames ([`generate::identity_map`]).
fn ingest_args<'a>(jsonl: &'a Path, map: &'a str) -> Vec<&'a str> {
    vec![
        "ingest",
        "--beamtime",
        "bt",
        "--root-map",
        map,
        jsonl.to_str().expect("utf-8"),
    ]
}

fn verify_clean(fx: &Fixture, root: &Path) {
    let (code, out, err) = finish(spawn(fx, root, &["verify", "--deep"]));
    assert_eq!(code, 0, "verify:\n{out}{err}");
}

#[test]
fn concurrency_reindex_in_a_loop_during_an_ingest_of_thousands_of_events() {
    let fx = Fixture::new();
    let map = generate::identity_map(fx.path());
    let root = fx.data_root();
    let small = generate::events_run(fx.path(), "small", 10);
    let big = generate::events_run(fx.path(), "big", 20_000);
    let (code, _, err) = finish(spawn(&fx, &root, &ingest_args(&small, &map)));
    assert_eq!(code, 0, "{err}");
    let mut ingest = spawn(&fx, &root, &ingest_args(&big, &map));
    let mut reindexes = 0;
    while ingest.try_wait().expect("try_wait").is_none() {
        let (code, out, err) = finish(spawn(&fx, &root, &["reindex"]));
        assert_eq!(code, 0, "reindex during ingest:\n{out}{err}");
        assert!(!err.contains("locked") && !err.contains("busy"), "{err}");
        reindexes += 1;
        // Every reader of the index sees whole beamtimes: the runs it lists are whole.
        let conn = fx.open(&root.join("index.db"));
        let indexed = count(&conn, "SELECT count(*) FROM runs_index");
        assert!(indexed == 1 || indexed == 2, "{indexed}");
    }
    let (code, out, err) = finish(ingest);
    assert_eq!(code, 0, "{out}{err}");
    assert!(reindexes >= 1);
    let (code, out, err) = finish(spawn(&fx, &root, &["reindex"]));
    assert_eq!(code, 0, "{out}{err}");
    let conn = fx.open(&root.join("index.db"));
    assert_eq!(count(&conn, "SELECT count(*) FROM runs_index"), 2);
    assert_eq!(
        count(&conn, "SELECT num_events FROM runs_index WHERE uid = 'big'"),
        20_000
    );
    eprintln!("{reindexes} reindexes ran during the ingest");
}

#[test]
fn concurrency_two_ingests_into_a_new_beamtime_at_once_both_land() {
    let fx = Fixture::new();
    let map = generate::identity_map(fx.path());
    let root = fx.data_root();
    let a = generate::frames_run(fx.path(), "run-a", 120, (32, 32));
    let b = generate::events_run(fx.path(), "run-b", 5_000);
    let first = spawn(&fx, &root, &ingest_args(&a, &map));
    let second = spawn(&fx, &root, &ingest_args(&b, &map));
    for child in [first, second] {
        let (code, out, err) = finish(child);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("landed 1"), "{out}");
    }
    let conn = fx.open(&fx.beamtime_db("bt"));
    assert_whole(&conn);
    assert_eq!(count(&conn, "SELECT count(*) FROM runs"), 2);
    assert_eq!(count(&conn, "SELECT count(*) FROM image_refs"), 120);
    verify_clean(&fx, &root);
}

/// The same run uid twice at once (a retry while the first still runs): the second waits for
/// the run's lock, then finds the run committed; before the lock it could remove the first's
/// frames as a "leftover" while the first went on to commit rows pointing at them.
#[test]
fn concurrency_the_same_run_twice_at_once_lands_once_and_whole() {
    let fx = Fixture::new();
    let map = generate::identity_map(fx.path());
    let jsonl = generate::frames_run(fx.path(), "same-run", 200, (32, 32));
    for trial in 0..3 {
        let root = fx.path().join(format!("trial-{trial}"));
        let first = spawn(&fx, &root, &ingest_args(&jsonl, &map));
        if trial > 0 {
            std::thread::sleep(Duration::from_millis(50 * trial));
        }
        let second = spawn(&fx, &root, &ingest_args(&jsonl, &map));
        let mut landed = 0;
        let mut unchanged = 0;
        for child in [first, second] {
            let (code, out, err) = finish(child);
            assert_eq!(code, 0, "trial {trial}: {out}{err}");
            landed += usize::from(out.contains("landed 1, unchanged 0"));
            unchanged += usize::from(out.contains("landed 0, unchanged 1"));
        }
        assert_eq!((landed, unchanged), (1, 1), "trial {trial}");
        let conn = fx.open(&root.join("beamtimes/bt/beamtime.db"));
        assert_whole(&conn);
        assert_eq!(count(&conn, "SELECT count(*) FROM image_refs"), 200);
        verify_clean(&fx, &root);
    }
}

/// migrate while an ingest runs exits 75 (the ingest holds the migrate lock shared); the
/// ingest lands; the migrate retried afterwards applies; no row is lost.
#[test]
fn concurrency_migrate_while_an_ingest_runs_exits_75_and_loses_nothing() {
    let fx = Fixture::new();
    let map = generate::identity_map(fx.path());
    config_repo(&fx);
    let root = fx.data_root();
    let big = generate::events_run(fx.path(), "big", 20_000);
    let mut ingest = spawn(&fx, &root, &ingest_args(&big, &map));
    // Wait until the ingest has created the beamtime (it holds the lock from before that).
    let started = Instant::now();
    while !fx.beamtime_db("bt").exists() && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(5));
    }
    // A new migration lands in the configuration while the ingest runs.
    let model = fx.path().join("models/beamtime.toml");
    let text = std::fs::read_to_string(&model).unwrap();
    let plan = "  { name = \"plan_name\", type = \"TEXT\" },\n";
    std::fs::write(
        &model,
        text.replacen(
            plan,
            "  { name = \"plan_name\", type = \"TEXT\", nullable = true },\n",
            1,
        ),
    )
    .unwrap();
    let (code, out, err) = run(&mut fx.beamdb(&["make-migrations", "--name", "nullable"]));
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = finish(spawn(&fx, &root, &["migrate"]));
    let still_running = ingest.try_wait().expect("try_wait").is_none();
    assert!(
        still_running,
        "the ingest ended before migrate ran; make it longer"
    );
    assert_eq!(code, 75, "{out}{err}");
    assert!(err.contains("migrate (or an ingest) is running"), "{err}");
    let (code, out, err) = finish(ingest);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = finish(spawn(&fx, &root, &["migrate"]));
    assert_eq!(code, 0, "{out}{err}");
    let conn = fx.open(&fx.beamtime_db("bt"));
    assert_whole(&conn);
    assert_eq!(count(&conn, "SELECT count(*) FROM events"), 20_000);
    assert_eq!(
        count(&conn, "SELECT max(version) FROM refinery_schema_history"),
        3
    );
    verify_clean(&fx, &root);
}

/// `verify --repair` in a loop while `ingest --replace` swaps a run's frames: the repair
/// takes each run's lock, so it never judges (or "recovers") a replacement in progress; the
/// replacement lands whole and nothing is quarantined.
#[test]
fn concurrency_verify_repair_during_a_replace_touches_nothing() {
    let fx = Fixture::new();
    let root = fx.data_root();
    let v1 = generate::frames_run(&fx.path().join("v1"), "replaced", 200, (40, 40));
    let v2 = generate::frames_run(&fx.path().join("v2"), "replaced", 200, (32, 32));
    let map1 = generate::identity_map(&fx.path().join("v1"));
    let map2 = generate::identity_map(&fx.path().join("v2"));
    let (code, out, err) = finish(spawn(&fx, &root, &ingest_args(&v1, &map1)));
    assert_eq!(code, 0, "{out}{err}");
    let mut args = ingest_args(&v2, &map2);
    args.insert(1, "--replace");
    let mut replace = spawn(&fx, &root, &args);
    let mut repairs = 0;
    while replace.try_wait().expect("try_wait").is_none() {
        let (code, out, err) = finish(spawn(&fx, &root, &["verify", "--repair"]));
        assert_eq!(code, 0, "verify --repair during the replace:\n{out}{err}");
        assert!(!out.contains("repaired"), "{out}");
        repairs += 1;
    }
    let (code, out, err) = finish(replace);
    assert_eq!(code, 0, "{out}{err}");
    assert!(repairs >= 1);
    let conn = fx.open(&fx.beamtime_db("bt"));
    assert_whole(&conn);
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM image_refs WHERE frame_shape = '[32,32]'"
        ),
        200
    );
    assert!(!root.join("beamtimes/bt/quarantine").exists());
    verify_clean(&fx, &root);
    eprintln!("{repairs} verify --repair ran during the replace");
}
