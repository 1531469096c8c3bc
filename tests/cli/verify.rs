//! verify: clean beamtimes pass, every planted problem is found with its place, and --repair
//! fixes what it can without losing a committed run's data.

use std::path::{Path, PathBuf};

use crate::common::{Fixture, assert_whole, count, repo, run, shared_map};

const PAGED_RUN: &str = "4c25f8e6-90b0-4d43-a8f6-36e5dbd66ff9";
const COUNT_RUN: &str = "682a43b9-a2ae-49de-8435-1bc6638aee60";
const SCALAR_RUN: &str = "7fbdf1df-8554-4a45-8123-cc03d61f67fc";
const ORPHAN: &str = "0000aaaa-orphan";

fn ingest_shared(fx: &Fixture) {
    let map = shared_map();
    let dir = repo("tests/data/bluesky");
    let (code, out, err) = run(&mut fx.beamdb(&[
        "ingest",
        "--beamtime",
        "bt",
        "--root-map",
        &map,
        dir.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{out}{err}");
}

fn store(fx: &Fixture) -> PathBuf {
    fx.data_root().join("beamtimes/bt/frames.zarr")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn generation(fx: &Fixture) -> i64 {
    let conn = fx.open(&fx.beamtime_db("bt"));
    count(
        &conn,
        "SELECT CAST(value AS INTEGER) FROM beamtime_meta WHERE key = 'generation'",
    )
}

/// An orphan group (a copy of a run's group under a uid no run has, as a killed ingest
/// leaves it) and a dangling image_ref (a committed run's frame chunk removed).
fn plant_orphan_and_dangling(fx: &Fixture) {
    copy_dir(
        &store(fx).join("runs").join(COUNT_RUN),
        &store(fx).join("runs").join(ORPHAN),
    );
    let ccd = store(fx).join("runs").join(PAGED_RUN).join("primary/ccd");
    std::fs::remove_dir_all(ccd.join("c/2")).unwrap();
}

#[test]
fn verify_clean_beamtimes_exit_0_and_deep_reads_every_frame() {
    let fx = Fixture::new();
    ingest_shared(&fx);
    for args in [
        &["verify"][..],
        &["verify", "--deep"],
        &["verify", "--beamtime", "bt"],
    ] {
        let (code, out, err) = run(&mut fx.beamdb(args));
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        assert!(out.contains("verify: 1 beamtime, 0 problems"), "{out}");
    }
}

#[test]
fn verify_finds_and_repair_fixes_a_planted_orphan_group_and_a_dangling_image_ref() {
    let fx = Fixture::new();
    ingest_shared(&fx);
    plant_orphan_and_dangling(&fx);
    let before = generation(&fx);

    let (code, out, err) = run(&mut fx.beamdb(&["verify"]));
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        out.contains(&format!(
            "beamtime bt: frames.zarr/runs/{ORPHAN}: orphan group"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "beamtime bt: frames.zarr/runs/{PAGED_RUN}/primary/ccd (run {PAGED_RUN}): frame missing"
        )),
        "{out}"
    );
    assert!(out.contains("verify: 1 beamtime, 2 problems"), "{out}");
    // Read-only: nothing changed.
    assert!(store(&fx).join("runs").join(ORPHAN).is_dir());
    assert_eq!(generation(&fx), before);

    let (code, out, err) = run(&mut fx.beamdb(&["verify", "--repair"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("removed frames.zarr/runs/{ORPHAN}")),
        "{out}"
    );
    assert!(
        out.contains(&format!("quarantined run {PAGED_RUN}")),
        "{out}"
    );
    assert!(
        out.contains("2 problems found, 2 repairs, 0 problems left"),
        "{out}"
    );
    assert!(!store(&fx).join("runs").join(ORPHAN).exists());

    // The quarantined run: out of the database in one transaction (generation bumped), its
    // rows in the JSON file the message names, its remaining frames moved beside it.
    let conn = fx.open(&fx.beamtime_db("bt"));
    assert_whole(&conn);
    assert_eq!(
        count(
            &conn,
            &format!("SELECT count(*) FROM runs WHERE uid = '{PAGED_RUN}'")
        ),
        0
    );
    assert_eq!(count(&conn, "SELECT count(*) FROM runs"), 3);
    assert_eq!(generation(&fx), before + 1);
    let quarantine = fx.data_root().join("beamtimes/bt/quarantine");
    let mut names: Vec<String> = std::fs::read_dir(&quarantine)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names[0].starts_with(PAGED_RUN) && names[0].ends_with(".json"));
    assert!(names[1].ends_with(".zarr"));
    assert!(
        out.contains(&quarantine.join(&names[0]).display().to_string()),
        "{out}"
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(quarantine.join(&names[0])).unwrap())
            .unwrap();
    assert_eq!(saved["runs"][0]["uid"], PAGED_RUN);
    assert_eq!(saved["events"].as_array().unwrap().len(), 4);
    assert_eq!(saved["image_refs"].as_array().unwrap().len(), 4);
    assert!(quarantine.join(&names[1]).join("primary/ccd/c/0").exists());

    let (code, out, err) = run(&mut fx.beamdb(&["verify"]));
    assert_eq!(code, 0, "{out}{err}");
    // Re-ingesting its documents restores the run.
    ingest_shared(&fx);
    let (code, out, err) = run(&mut fx.beamdb(&["verify", "--deep"]));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(count(&conn, "SELECT count(*) FROM runs"), 4);
}

#[test]
fn verify_repair_leaves_a_run_being_ingested_alone() {
    let fx = Fixture::new();
    ingest_shared(&fx);
    copy_dir(
        &store(&fx).join("runs").join(COUNT_RUN),
        &store(&fx).join("runs").join(ORPHAN),
    );
    // Hold the run's ingest lock, as a running ingest does.
    let staging = fx.data_root().join("beamtimes/bt/frames.staging");
    std::fs::create_dir_all(&staging).unwrap();
    let lock = std::fs::File::create(staging.join(format!("{ORPHAN}.lock"))).unwrap();
    lock.lock().unwrap();
    let (code, out, err) = run(&mut fx.beamdb(&["verify", "--repair"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("an ingest of this run is running"), "{err}");
    assert!(store(&fx).join("runs").join(ORPHAN).is_dir());
    drop(lock);
    let (code, out, err) = run(&mut fx.beamdb(&["verify"]));
    assert_eq!(code, 4, "{out}{err}");
    assert!(out.contains("orphan group"), "{out}");
}

#[test]
fn verify_repair_cleans_up_an_interrupted_replace() {
    let fx = Fixture::new();
    ingest_shared(&fx);
    // Killed after swapping the new frames in, before the commit: the committed run's frames
    // wait in staging as {uid}.old, a group of other documents is in place.
    let staging = fx.data_root().join("beamtimes/bt/frames.staging");
    let runs = store(&fx).join("runs");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::rename(
        runs.join(COUNT_RUN),
        staging.join(format!("{COUNT_RUN}.old")),
    )
    .unwrap();
    copy_dir(&runs.join(PAGED_RUN), &runs.join(COUNT_RUN));
    let (code, out, err) = run(&mut fx.beamdb(&["verify"]));
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        out.contains(&format!("frames.staging/{COUNT_RUN}.old")),
        "{out}"
    );
    assert!(out.contains("interrupted --replace"), "{out}");
    let (code, out, err) = run(&mut fx.beamdb(&["verify", "--repair"]));
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(&mut fx.beamdb(&["verify", "--deep"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(!staging.join(format!("{COUNT_RUN}.old")).exists());
}

#[test]
fn verify_reports_counts_that_disagree_with_the_stop_document_and_schema_drift() {
    let fx = Fixture::new();
    ingest_shared(&fx);
    let conn = fx.open(&fx.beamtime_db("bt"));
    conn.execute_batch(&format!(
        "DELETE FROM events WHERE uid = (SELECT e.uid FROM events e JOIN streams s ON s.uid = e.stream_uid
           WHERE s.run_uid = '{SCALAR_RUN}' LIMIT 1);
         ALTER TABLE runs ADD COLUMN handmade TEXT;"
    ))
    .unwrap();
    let (code, out, err) = run(&mut fx.beamdb(&["verify"]));
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        out.contains(&format!(
            "beamtime bt: runs {SCALAR_RUN}: stream primary: the stop document says"
        )),
        "{out}"
    );
    assert!(
        out.contains("schema: differs from what its migration history"),
        "{out}"
    );
    assert!(out.contains("handmade"), "{out}");
    // Not repairable automatically: reported, and left.
    let (code, out, _) = run(&mut fx.beamdb(&["verify", "--repair"]));
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("0 repairs"), "{out}");
}

#[test]
fn verify_reports_a_database_that_is_not_sqlite_and_a_truncated_one() {
    let fx = Fixture::new();
    ingest_shared(&fx);
    let (code, _, err) = run(&mut fx.beamdb(&["initdb", "--beamtime", "bt2"]));
    assert_eq!(code, 0, "{err}");
    std::fs::write(
        fx.beamtime_db("bt2"),
        "not a database, a text file long enough".repeat(50),
    )
    .unwrap();
    // Truncated: the first pages of a real database and nothing more.
    let db = fx.beamtime_db("bt");
    let bytes = std::fs::read(&db).unwrap();
    std::fs::remove_file(db.with_extension("db-wal")).ok();
    std::fs::write(&db, &bytes[..bytes.len().min(8192)]).unwrap();
    let (code, out, err) = run(&mut fx.beamdb(&["verify"]));
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        out.contains("beamtime bt2: ") && out.contains("not an SQLite database"),
        "{out}"
    );
    assert!(out.contains("beamtime bt: "), "{out}");
}

#[test]
fn verify_unknown_beamtime_is_a_usage_error() {
    let fx = Fixture::new();
    assert_eq!(run(&mut fx.beamdb(&["initdb"])).0, 0);
    let (code, _, err) = run(&mut fx.beamdb(&["verify", "--beamtime", "nope"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no such beamtime"), "{err}");
    let (code, _, err) = run(&mut fx.beamdb(&["verify", "--beamtime", "../x"]));
    assert_eq!(code, 2, "{err}");
}

/// Every chunk file under `dir` (files inside a `c/` folder), relative to `dir`, sorted.
fn chunk_files(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, base, out);
            } else if path
                .components()
                .skip_while(|c| c.as_os_str() != "c")
                .count()
                >= 4
            {
                // A frame's chunk (`c/{i}/0/0`), not one of the layout's 1-D columns.
                out.push(path.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// What a SIGKILL during `ingest --replace`'s deletion of `{uid}.old` leaves when the
/// replacement had the same documents: a half-deleted copy in staging whose group metadata
/// (and so content digest) is still the committed run's. `keep` chunks of ccd survive.
fn plant_half_deleted_old(fx: &Fixture, uid: &str, keep: usize) -> PathBuf {
    let staging = fx.data_root().join("beamtimes/bt/frames.staging");
    let old = staging.join(format!("{uid}.old"));
    copy_dir(&store(fx).join("runs").join(uid), &old);
    let chunks = old.join("primary/ccd/c");
    let mut names: Vec<_> = std::fs::read_dir(&chunks)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for dir in names.iter().skip(keep) {
        std::fs::remove_dir_all(dir).unwrap();
    }
    old
}

#[test]
fn verify_repair_never_swaps_a_half_deleted_old_copy_over_the_whole_run() {
    let fx = Fixture::new();
    ingest_shared(&fx);
    let run = store(&fx).join("runs").join(PAGED_RUN);
    let whole = chunk_files(&run);
    assert_eq!(whole.len(), 4, "{whole:?}");
    let old = plant_half_deleted_old(&fx, PAGED_RUN, 1);

    let (code, out, err) = run_verify(&fx, &["verify"]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        out.contains(&format!("frames.staging/{PAGED_RUN}.old")),
        "{out}"
    );
    let (code, out, err) = run_verify(&fx, &["verify", "--repair"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        chunk_files(&run),
        whole,
        "the live group lost frames:\n{out}"
    );
    assert!(!old.exists(), "{out}");
    let (code, out, err) = run_verify(&fx, &["verify", "--deep"]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn ingest_again_never_swaps_a_half_deleted_old_copy_over_the_whole_run() {
    let fx = Fixture::new();
    ingest_shared(&fx);
    let group = store(&fx).join("runs").join(PAGED_RUN);
    let whole = chunk_files(&group);
    let old = plant_half_deleted_old(&fx, PAGED_RUN, 1);
    // A plain re-ingest (documents unchanged) and a --replace both recover first.
    for extra in [&[][..], &["--replace"]] {
        let map = shared_map();
        let file = repo(&format!("tests/data/bluesky/{PAGED_RUN}.jsonl"));
        let mut args = vec!["ingest", "--beamtime", "bt", "--root-map", &map];
        args.extend_from_slice(extra);
        args.push(file.to_str().unwrap());
        let (code, out, err) = run(&mut fx.beamdb(&args));
        assert_eq!(code, 0, "{out}{err}");
        assert_eq!(
            chunk_files(&group),
            whole,
            "{extra:?}: frames lost:\n{out}{err}"
        );
        assert!(!old.exists(), "{out}");
        let (code, out, err) = run_verify(&fx, &["verify", "--deep"]);
        assert_eq!(code, 0, "{extra:?}: {out}{err}");
        plant_half_deleted_old(&fx, PAGED_RUN, 2);
    }
}

/// Neither copy holds every committed frame: repair deletes no chunk of either; the run is
/// quarantined with both copies beside its rows, for re-ingest.
#[test]
fn verify_repair_keeps_both_copies_when_neither_is_whole() {
    let fx = Fixture::new();
    ingest_shared(&fx);
    let group = store(&fx).join("runs").join(PAGED_RUN);
    let old = plant_half_deleted_old(&fx, PAGED_RUN, 3);
    std::fs::remove_dir_all(group.join("primary/ccd/c/0")).unwrap();
    let bt = fx.data_root().join("beamtimes/bt");
    let before = chunk_files(&group).len() + chunk_files(&old).len();
    assert_eq!(before, 6);
    let (code, out, err) = run_verify(&fx, &["verify", "--repair"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("neither provably holds every committed frame"),
        "{out}"
    );
    assert!(
        out.contains(&format!("quarantined run {PAGED_RUN}")),
        "{out}"
    );
    assert!(!old.exists() && !group.exists());
    let quarantine = bt.join("quarantine");
    assert_eq!(
        chunk_files(&quarantine).len(),
        before,
        "a chunk was deleted:\n{out}"
    );
}

fn run_verify(fx: &Fixture, args: &[&str]) -> (i32, String, String) {
    run(&mut fx.beamdb(args))
}

/// Neither copy is whole: an ingest of the run stops (exit 1), names both copies and what to
/// do, and moves or deletes nothing.
#[test]
fn ingest_stops_and_keeps_both_copies_when_neither_is_whole() {
    let fx = Fixture::new();
    ingest_shared(&fx);
    let group = store(&fx).join("runs").join(PAGED_RUN);
    let old = plant_half_deleted_old(&fx, PAGED_RUN, 3);
    std::fs::remove_dir_all(group.join("primary/ccd/c/0")).unwrap();
    let (group_chunks, old_chunks) = (chunk_files(&group), chunk_files(&old));
    let map = shared_map();
    let file = repo(&format!("tests/data/bluesky/{PAGED_RUN}.jsonl"));
    let (code, out, err) = run(&mut fx.beamdb(&[
        "ingest",
        "--beamtime",
        "bt",
        "--root-map",
        &map,
        file.to_str().unwrap(),
    ]));
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("neither provably holds every committed frame")
            && err.contains(&format!("frames.staging/{PAGED_RUN}.old"))
            && err.contains("verify --repair"),
        "{err}"
    );
    assert_eq!(chunk_files(&group), group_chunks);
    assert_eq!(chunk_files(&old), old_chunks);
}

/// The store's own group metadata is garbage: zarr-python cannot open the store. verify says
/// so, ingest refuses to write into it, and `--repair` rewrites it, keeping the damaged file.
#[test]
fn verify_reports_and_repair_rewrites_damaged_store_metadata_that_ingest_refuses() {
    let fx = Fixture::new();
    ingest_shared(&fx);
    let root_meta = store(&fx).join("zarr.json");
    let runs_meta = store(&fx).join("runs/zarr.json");
    std::fs::write(&root_meta, "{\"zarr_format\": 3, \"node_t").unwrap();
    std::fs::write(&runs_meta, "garbage").unwrap();

    let (code, out, err) = run_verify(&fx, &["verify"]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        out.contains("beamtime bt: frames.zarr/zarr.json: damaged Zarr group metadata")
            && out.contains("beamtime bt: frames.zarr/runs/zarr.json: damaged Zarr group metadata"),
        "{out}"
    );
    let map = shared_map();
    let file = repo(&format!("tests/data/bluesky/{PAGED_RUN}.jsonl"));
    let ingest = [
        "ingest",
        "--beamtime",
        "bt",
        "--root-map",
        &map,
        file.to_str().unwrap(),
    ];
    let (code, out, err) = run(&mut fx.beamdb(&ingest));
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&root_meta.display().to_string())
            && err.contains("damaged Zarr group metadata")
            && err.contains("beamdb verify --repair"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&runs_meta).unwrap(), "garbage");

    let (code, out, err) = run_verify(&fx, &["verify", "--repair"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("rewrote frames.zarr/zarr.json"), "{out}");
    assert!(out.contains("rewrote frames.zarr/runs/zarr.json"), "{out}");
    let kept: Vec<String> = std::fs::read_dir(fx.data_root().join("beamtimes/bt/quarantine"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(kept.contains(&"garbage".to_string()), "{kept:?}");
    let (code, out, err) = run_verify(&fx, &["verify", "--deep"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(&mut fx.beamdb(&ingest));
    assert_eq!(code, 0, "{out}{err}");
    // zarr-python opens the store and a run in it again.
    let check = std::process::Command::new(crate::common::python())
        .arg("-c")
        .arg(format!(
            "import sys, zarr; g = zarr.open_group(sys.argv[1], mode='r'); print(g['runs/{PAGED_RUN}/primary/ccd'].shape)"
        ))
        .arg(store(&fx))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

/// A fly scan (stream_datum, no event documents): the stop's num_events counts its
/// seq_nums, and verify agrees with a clean ingest.
#[test]
fn verify_a_cleanly_ingested_fly_scan_is_clean() {
    let fx = Fixture::new();
    let shared = repo("tests/data/hdf5/shared");
    let map = format!(
        "/srv/beamline/shared/hdf5={}",
        shared.join("hdf5").display()
    );
    let (code, out, err) = run(&mut fx.beamdb(&[
        "ingest",
        "--beamtime",
        "bt",
        "--root-map",
        &map,
        shared.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run_verify(&fx, &["verify", "--deep"]);
    assert_eq!(code, 0, "{out}{err}");
    // A fly scan that lost one of its points is still found.
    let conn = fx.open(&fx.beamtime_db("bt"));
    conn.execute_batch(
        "DELETE FROM image_refs WHERE event_uid IS NULL AND seq_num = 3
           AND stream_uid IN (SELECT uid FROM streams WHERE run_uid = 'b6a82a9e-1e51-41d3-a3af-d506fe46eb68')",
    )
    .unwrap();
    let (code, out, err) = run_verify(&fx, &["verify"]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        out.contains("stream primary: the stop document says 3 events, the database has 2"),
        "{out}"
    );
}

/// A stream group's zarr.json is garbage: zarr-python cannot open that stream; verify finds
/// it with the frames that depend on it.
#[test]
fn verify_reports_a_damaged_stream_group() {
    let fx = Fixture::new();
    ingest_shared(&fx);
    let meta = store(&fx)
        .join("runs")
        .join(PAGED_RUN)
        .join("primary/zarr.json");
    std::fs::write(&meta, "{").unwrap();
    let (code, out, err) = run_verify(&fx, &["verify"]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        out.contains(&format!(
            "(run {PAGED_RUN}): group runs/{PAGED_RUN}/primary: zarr.json is not JSON"
        )),
        "{out}"
    );
}

/// A fly scan whose stop never came: stored incomplete, its num_events counts the points that
/// arrived, and verify agrees.
#[test]
fn verify_an_incomplete_fly_scan_is_clean() {
    let fx = Fixture::new();
    let shared = repo("tests/data/hdf5/shared");
    let map = format!(
        "/srv/beamline/shared/hdf5={}",
        shared.join("hdf5").display()
    );
    let cut = fx.edited_copy(
        &shared.join("b6a82a9e-1e51-41d3-a3af-d506fe46eb68.jsonl"),
        "fly-no-stop.jsonl",
        |t| {
            t.lines()
                .filter(|l| !l.starts_with("[\"stop\""))
                .map(|l| format!("{l}\n"))
                .collect()
        },
    );
    let (code, out, err) = run(&mut fx.beamdb(&[
        "ingest",
        "--beamtime",
        "bt",
        "--root-map",
        &map,
        cut.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{out}{err}");
    let conn = fx.open(&fx.beamtime_db("bt"));
    assert_eq!(count(&conn, "SELECT num_events FROM runs"), 3);
    let (code, out, err) = run_verify(&fx, &["verify", "--deep"]);
    assert_eq!(code, 0, "{out}{err}");
}

/// Where beamdb's `runs` group belongs sits an array's metadata: not provably beamdb's, so
/// `--repair` reports it and leaves it as it is.
#[test]
fn verify_repair_leaves_store_metadata_it_cannot_prove_is_its_own() {
    let fx = Fixture::new();
    ingest_shared(&fx);
    let runs_meta = store(&fx).join("runs/zarr.json");
    let array = r#"{"zarr_format": 3, "node_type": "array", "shape": [1]}"#;
    std::fs::write(&runs_meta, array).unwrap();
    let (code, out, err) = run_verify(&fx, &["verify", "--repair"]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        out.contains("it holds an array's metadata, which beamdb never writes there")
            && out.contains("move it away by hand")
            && out.contains("0 repairs"),
        "{out}"
    );
    assert!(
        out.contains(
            "left     beamtime bt: frames.zarr/runs/zarr.json: damaged Zarr group metadata"
        ),
        "{out}"
    );
    assert_eq!(std::fs::read_to_string(&runs_meta).unwrap(), array);
}

/// A replacement that never got committed (`{uid}.new`) beside a committed run: repair
/// removes it and says the committed frames were not touched (not "no committed run").
#[test]
fn verify_repair_removes_an_uncommitted_replacement_and_says_what_it_was() {
    let fx = Fixture::new();
    ingest_shared(&fx);
    let staging = fx.data_root().join("beamtimes/bt/frames.staging");
    let new = staging.join(format!("{PAGED_RUN}.new"));
    copy_dir(&store(&fx).join("runs").join(COUNT_RUN), &new);
    let group = store(&fx).join("runs").join(PAGED_RUN);
    let whole = chunk_files(&group);
    let (code, out, err) = run_verify(&fx, &["verify", "--repair"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!(
            "removed frames.staging/{PAGED_RUN}.new (left by an interrupted ingest of the run"
        )) && out.contains("the committed frames were not touched"),
        "{out}"
    );
    assert!(!new.exists());
    assert_eq!(chunk_files(&group), whole);
}

/// An ingest killed while creating the beamtime (database made, store metadata not yet):
/// nothing to open yet, so nothing to report; the next ingest writes the metadata.
#[test]
fn verify_a_new_store_without_metadata_or_runs_is_clean_and_ingest_completes_it() {
    let fx = Fixture::new();
    let (code, out, err) = run(&mut fx.beamdb(&["initdb", "--beamtime", "bt"]));
    assert_eq!(code, 0, "{out}{err}");
    std::fs::remove_file(store(&fx).join("runs/zarr.json")).unwrap();
    std::fs::remove_file(store(&fx).join("zarr.json")).unwrap();
    let (code, out, err) = run_verify(&fx, &["verify"]);
    assert_eq!(code, 0, "{out}{err}");
    ingest_shared(&fx);
    assert!(store(&fx).join("runs/zarr.json").is_file());
    let (code, out, err) = run_verify(&fx, &["verify", "--deep"]);
    assert_eq!(code, 0, "{out}{err}");
    // Once runs are there, missing metadata is damage.
    std::fs::remove_file(store(&fx).join("runs/zarr.json")).unwrap();
    let (code, out, err) = run_verify(&fx, &["verify"]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        out.contains(
            "frames.zarr/runs/zarr.json: damaged Zarr group metadata (zarr.json is missing)"
        ),
        "{out}"
    );
}
