//! Crash suite: the real binary killed with SIGKILL at random moments (as a power cut or the
//! OOM killer would), then DESIGN's promises checked from outside: SQLite intact, foreign
//! keys hold, every run whole or absent, every image_ref's frame readable (`verify --deep`),
//! and a re-run completes with `verify` clean afterwards.
//!
//! A few trials per scenario by default; `BEAMDB_CRASH_TRIALS=50` for many. The seed is
//! printed; `BEAMDB_CRASH_SEED=N` replays a failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Fixture, assert_whole, config_repo, count, repo, run};
use crate::generate;

/// splitmix64: small, seedable, good enough to spread kill times.
pub struct Rng(u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A duration in [0, max).
    pub fn below(&mut self, max: Duration) -> Duration {
        let nanos = max.as_nanos().max(1) as u64;
        Duration::from_nanos(self.next() % nanos)
    }
}

fn seeded(scenario: &str) -> Rng {
    let seed = std::env::var("BEAMDB_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("crash suite {scenario}: seed {seed} (BEAMDB_CRASH_SEED={seed} replays it)");
    Rng(seed)
}

fn trials() -> usize {
    std::env::var("BEAMDB_CRASH_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
}

/// `beamdb ARGS` with the fixture's clean environment and `data_root`, output captured.
pub fn command(fx: &Fixture, data_root: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin!("beamdb"));
    cmd.current_dir(fx.path())
        .env_clear()
        .env("BEAMDB_DATA_ROOT", data_root)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    cmd
}

/// `beamdb ARGS` as a child process.
pub fn spawn(fx: &Fixture, data_root: &Path, args: &[&str]) -> Child {
    command(fx, data_root, args).spawn().expect("spawn beamdb")
}

/// `beamdb ARGS` to completion: (exit code, stdout, stderr).
pub fn finish(child: Child) -> (i32, String, String) {
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// SIGKILLs `child` `delay` after `ready()` first holds, unless it ended first. `None` when
/// it was killed, else how long it ran.
fn kill_when(
    mut child: Child,
    mut ready: impl FnMut() -> bool,
    delay: Duration,
) -> Option<Duration> {
    let spawned = Instant::now();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return Some(spawned.elapsed());
        }
        if ready() {
            break;
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    let until = Instant::now() + delay;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
    let killed = matches!(child.try_wait(), Ok(None));
    // Child::kill is SIGKILL on Unix: no destructor, no atexit, no flush runs.
    let _ = child.kill();
    let _ = child.wait();
    if killed {
        None
    } else {
        Some(spawned.elapsed())
    }
}

/// The kills of one scenario. Kill times are drawn below the duration of a full run; a run
/// that ends before its kill time shows that a run is shorter than calibrated (the
/// calibration may have met a busier machine), and later kill times are drawn below that. A
/// scenario that killed nothing tested nothing: it runs extra trials (up to 10) until a
/// kill lands, and fails if none does.
struct Kills {
    full: Duration,
    killed: usize,
}

impl Kills {
    fn new(full: Duration) -> Kills {
        Kills { full, killed: 0 }
    }

    /// Kills `child` at a random moment; true when it was killed mid-way.
    fn at_random(&mut self, rng: &mut Rng, child: Child) -> bool {
        let delay = rng.below(self.full.mul_f64(1.2));
        let started = Instant::now();
        self.count(kill_when(
            child,
            || started.elapsed() >= delay,
            Duration::ZERO,
        ))
    }

    /// Counts what [`kill_when`] did.
    fn count(&mut self, outcome: Option<Duration>) -> bool {
        match outcome {
            None => {
                self.killed += 1;
                true
            }
            Some(took) => {
                self.full = self.full.min(took);
                false
            }
        }
    }

    /// Whether trial number `trial` runs.
    fn more(&self, trial: usize) -> bool {
        trial < trials() || (self.killed == 0 && trial < trials() + 10)
    }

    fn assert_some(&self, scenario: &str) {
        assert!(
            self.killed > 0,
            "{scenario}: no process was killed mid-way in {} trials",
            trials() + 10
        );
    }
}

/// How long a full run of `args` takes on this machine (kill times are drawn below it).
fn duration_of(fx: &Fixture, args: &[&str]) -> Duration {
    let root = fx.path().join("calibrate");
    let started = Instant::now();
    let (code, out, err) = finish(spawn(fx, &root, args));
    assert_eq!(code, 0, "{out}{err}");
    let took = started.elapsed();
    std::fs::remove_dir_all(&root).ok();
    took
}

fn beamtime_db(root: &Path) -> PathBuf {
    root.join("beamtimes/bt/beamtime.db")
}

/// `verify --deep` after a kill: no problem except what a killed ingest may leave (an
/// orphan group, or the trash of one it was deleting, removed by the next ingest of the run
/// or --repair).
fn verify_after_kill(fx: &Fixture, root: &Path) {
    let (code, out, err) = finish(spawn(fx, root, &["verify", "--deep"]));
    let problems: Vec<&str> = out
        .lines()
        .filter(|l| {
            l.starts_with("beamtime ")
                && !l.contains("orphan group")
                && !(l.contains(".trash: leftover of an interrupted ingest"))
        })
        .collect();
    assert!(
        (code == 0 || code == 4) && problems.is_empty(),
        "verify after a kill: exit {code}\n{out}{err}"
    );
}

fn verify_clean(fx: &Fixture, root: &Path) {
    let (code, out, err) = finish(spawn(fx, root, &["verify", "--deep"]));
    assert_eq!(code, 0, "verify after the re-run:\n{out}{err}");
}

/// Kills `ingest` of `inputs` at random moments; after each kill the beamtime holds every run
/// whole or not at all, and a re-run lands the rest.
fn ingest_scenario(scenario: &str, inputs: &[PathBuf], runs: i64, events: i64) {
    let fx = Fixture::new();
    // The generated frames are read where they are: an identity root map allows that.
    let frames = inputs
        .first()
        .and_then(|p| p.parent())
        .map(generate::identity_map);
    let mut args = vec!["ingest", "--beamtime", "bt", "-q"];
    if let Some(map) = &frames {
        args.extend(["--root-map", map.as_str()]);
    }
    args.extend(inputs.iter().map(|p| p.to_str().expect("utf-8 path")));
    let full = duration_of(&fx, &args);
    let mut rng = seeded(scenario);
    let mut kills = Kills::new(full);
    let mut trial = 0;
    while kills.more(trial) {
        let root = fx.path().join(format!("trial-{trial}"));
        // Half the trials kill a re-run over a beamtime a killed ingest already left behind.
        let attempts = 1 + (rng.next() % 2) as usize;
        for _ in 0..attempts {
            kills.at_random(&mut rng, spawn(&fx, &root, &args));
            if beamtime_db(&root).exists() {
                let conn = fx.open(&beamtime_db(&root));
                assert_whole(&conn);
                let landed = count(&conn, "SELECT count(*) FROM runs");
                assert!(landed <= runs, "{scenario} trial {trial}: {landed} runs");
                verify_after_kill(&fx, &root);
            }
        }
        let (code, out, err) = finish(spawn(&fx, &root, &args));
        assert_eq!(code, 0, "{scenario} trial {trial}: re-run\n{out}{err}");
        let conn = fx.open(&beamtime_db(&root));
        assert_whole(&conn);
        assert_eq!(count(&conn, "SELECT count(*) FROM runs"), runs);
        assert_eq!(count(&conn, "SELECT count(*) FROM events"), events);
        verify_clean(&fx, &root);
        std::fs::remove_dir_all(&root).ok();
        trial += 1;
    }
    eprintln!(
        "crash suite {scenario}: {trial} trials, {} processes killed mid-way (full run {:.2} s)",
        kills.killed,
        full.as_secs_f64()
    );
    kills.assert_some(scenario);
}

#[test]
fn crash_ingest_of_a_run_with_many_frames_leaves_it_whole_or_absent() {
    let fx = Fixture::new();
    let frames = generate::frames_run(fx.path(), "crash-frames", 300, (64, 64));
    let small = generate::frames_run(fx.path(), "crash-small", 20, (16, 16));
    ingest_scenario("ingest-frames", &[small, frames], 2, 320);
}

#[test]
fn crash_ingest_of_a_run_with_many_events_leaves_it_whole_or_absent() {
    let fx = Fixture::new();
    let events = generate::events_run(fx.path(), "crash-events", 20_000);
    let shared = repo("tests/data/bluesky/98786b6e-de87-4ab0-9fb5-338308b26fd2.jsonl");
    ingest_scenario("ingest-events", &[shared, events], 2, 20_002);
}

/// What comes after a killed `ingest --replace`.
#[derive(Clone, Copy)]
enum AfterReplace {
    Repair,
    Reingest,
}

/// Where a killed `--replace` was, judged from what it left in the staging folder.
fn replace_phase(staging: &Path, uid: &str) -> usize {
    let has = |suffix: &str| staging.join(format!("{uid}.{suffix}")).exists();
    if has("trash") {
        3 // deleting the previous copy
    } else if has("old") {
        2 // swapped, around the commit
    } else if has("new") {
        1 // writing the replacement
    } else {
        0 // before it began, or after it finished
    }
}

/// Every frame of every committed run equals its source, read through zarr-python, and the
/// rows are whole. `versions` are the two document sets the run may have been stored from
/// (told apart by frame shape).
fn assert_pixels(root: &Path, small: &Path, versions: &[(PathBuf, i64)], uid: &str) {
    let conn = rusqlite::Connection::open(beamtime_db(root)).expect("open");
    assert_whole(&conn);
    let shape: String = conn
        .query_row(
            "SELECT i.frame_shape FROM image_refs i JOIN streams s ON s.uid = i.stream_uid
             WHERE s.run_uid = ?1 LIMIT 1",
            [uid],
            |r| r.get(0),
        )
        .expect("the replaced run is committed with frames");
    let side: i64 = serde_json::from_str::<Vec<i64>>(&shape).expect("shape")[0];
    let (source, _) = versions
        .iter()
        .find(|(_, s)| *s == side)
        .expect("a known version");
    let out = Command::new(crate::common::python())
        .arg(repo("tests/interop/check_frames.py"))
        .arg(beamtime_db(root))
        .arg(root.join("beamtimes/bt/frames.zarr"))
        .arg(small)
        .arg(source)
        .output()
        .expect("run the interop check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("checked "),
        "pixels differ from the source:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ingest --replace` of a run with many frames, SIGKILLed at random moments: anywhere
/// (uniform over the run), just after the swap (around the commit), or while the previous
/// copy is being deleted. Half the replacements carry the same documents (the copies then
/// share a content digest: only the committed rows can tell a whole copy from a half-deleted
/// one), half different ones. Then `after`; every committed run's frames equal their source
/// and `verify --deep` is clean.
fn replace_scenario(scenario: &str, after: AfterReplace) {
    let fx = Fixture::new();
    const UID: &str = "crash-replace";
    let small = generate::frames_run(fx.path(), "crash-small", 20, (16, 16));
    let v1 = generate::frames_run(&fx.path().join("v1"), UID, 250, (48, 48));
    let v2 = generate::frames_run(&fx.path().join("v2"), UID, 250, (40, 40));
    let versions = [(v1.clone(), 48), (v2.clone(), 40)];
    // The generated frames are read where they are: identity root maps allow that.
    let maps = [
        generate::identity_map(fx.path()),
        generate::identity_map(&fx.path().join("v1")),
        generate::identity_map(&fx.path().join("v2")),
    ];
    let ingest = |root: &Path, file: &Path, replace: bool| {
        let mut args = vec!["ingest", "--beamtime", "bt", "-q"];
        for map in &maps {
            args.extend(["--root-map", map.as_str()]);
        }
        if replace {
            args.push("--replace");
        }
        args.push(file.to_str().expect("utf-8 path"));
        spawn(&fx, root, &args)
    };
    // Calibrate: a full replace on this machine.
    let calibrate = fx.path().join("calibrate");
    for file in [&small, &v1] {
        let (code, out, err) = finish(ingest(&calibrate, file, false));
        assert_eq!(code, 0, "{out}{err}");
    }
    let started = Instant::now();
    let (code, out, err) = finish(ingest(&calibrate, &v2, true));
    assert_eq!(code, 0, "{out}{err}");
    let full = started.elapsed();
    std::fs::remove_dir_all(&calibrate).ok();

    let mut rng = seeded(scenario);
    let mut kills = Kills::new(full);
    let mut phases = [0usize; 4];
    let mut trial = 0;
    while kills.more(trial) {
        let root = fx.path().join(format!("trial-{trial}"));
        let staging = root.join("beamtimes/bt/frames.staging");
        for file in [&small, &v1] {
            let (code, out, err) = finish(ingest(&root, file, false));
            assert_eq!(code, 0, "trial {trial}: {out}{err}");
        }
        let replacement = if rng.next().is_multiple_of(2) {
            &v1
        } else {
            &v2
        };
        let child = ingest(&root, replacement, true);
        let was_killed = match rng.next() % 3 {
            0 => kills.at_random(&mut rng, child),
            1 => {
                let delay = rng.below(Duration::from_millis(30));
                let old = staging.join(format!("{UID}.old"));
                kills.count(kill_when(child, || old.exists(), delay))
            }
            _ => {
                let delay = rng.below(Duration::from_micros(1500));
                let trash = staging.join(format!("{UID}.trash"));
                kills.count(kill_when(child, || trash.exists(), delay))
            }
        };
        if was_killed {
            phases[replace_phase(&staging, UID)] += 1;
        }
        // The committed run stays whole whatever the kill left behind.
        assert_whole(&fx.open(&beamtime_db(&root)));
        match after {
            AfterReplace::Repair => {
                let (code, out, err) = finish(spawn(&fx, &root, &["verify", "--repair"]));
                assert_eq!(
                    code, 0,
                    "{scenario} trial {trial}: verify --repair\n{out}{err}"
                );
            }
            AfterReplace::Reingest => {
                let (code, out, err) = finish(ingest(&root, replacement, false));
                // The replacement either landed before the kill (unchanged) or not (the
                // committed run differs: rejected as other documents, exit 4).
                assert!(
                    code == 0 || code == 4,
                    "{scenario} trial {trial}: re-ingest\n{out}{err}"
                );
                assert!(
                    out.contains("unchanged") || out.contains("rejected"),
                    "{out}"
                );
            }
        }
        assert_pixels(&root, &small, &versions, UID);
        verify_clean(&fx, &root);
        assert!(
            !staging.join(format!("{UID}.old")).exists()
                && !staging.join(format!("{UID}.trash")).exists(),
            "{scenario} trial {trial}: leftovers in staging"
        );
        std::fs::remove_dir_all(&root).ok();
        trial += 1;
    }
    eprintln!(
        "crash suite {scenario}: {trial} trials, {} processes killed mid-way (full replace {:.2} s); \
         killed before or after the replace {} times, writing it {}, around the commit {}, deleting the previous copy {}",
        kills.killed,
        full.as_secs_f64(),
        phases[0],
        phases[1],
        phases[2],
        phases[3],
    );
    kills.assert_some(scenario);
}

#[test]
fn crash_replace_then_verify_repair_keeps_every_committed_frame() {
    replace_scenario("replace-repair", AfterReplace::Repair);
}

#[test]
fn crash_replace_then_plain_reingest_keeps_every_committed_frame() {
    replace_scenario("replace-reingest", AfterReplace::Reingest);
}

/// A migration that rebuilds `runs` (plan_name made nullable, a column added), over a beamtime
/// with many runs, killed at random: the database is at V2 or V3, never between, no row lost.
#[test]
fn crash_migrate_mid_rebuild_leaves_the_old_or_the_new_version() {
    let fx = Fixture::new();
    config_repo(&fx);
    let model = fx.path().join("models/beamtime.toml");
    let text = std::fs::read_to_string(&model).unwrap();
    let plan = "  { name = \"plan_name\", type = \"TEXT\" },\n";
    assert!(text.contains(plan));
    std::fs::write(
        &model,
        text.replacen(
            plan,
            "  { name = \"plan_name\", type = \"TEXT\", nullable = true },\n  { name = \"proposal\", type = \"TEXT\", nullable = true },\n",
            1,
        ),
    )
    .unwrap();
    let (code, out, err) = run(&mut fx.beamdb(&["make-migrations", "--name", "proposal"]));
    assert_eq!(code, 0, "{out}{err}");

    const RUNS: i64 = 30_000;
    let populate = |root: &Path| {
        // initdb at the shipped V2 only: V3 is the migration under test.
        let v2 = fx.path().join("m/beamtime/V3__proposal.sql");
        let saved = std::fs::read_to_string(&v2).unwrap();
        std::fs::remove_file(&v2).unwrap();
        let (code, _, err) = finish(spawn(&fx, root, &["initdb", "--beamtime", "bt"]));
        std::fs::write(&v2, saved).unwrap();
        assert_eq!(code, 0, "{err}");
        let conn = fx.open(&beamtime_db(root));
        conn.execute_batch(&format!(
            "INSERT INTO samples (name) VALUES ('s');
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {RUNS})
             INSERT INTO runs (uid, sample_id, plan_name, time_start, metadata, operator)
             SELECT 'run-' || i, 1, 'count', i, '{{\"uid\": \"run-' || i || '\", \"padding\": \"' || hex(randomblob(64)) || '\"}}', 'op'
             FROM n;"
        ))
        .unwrap();
    };
    let version = |root: &Path| {
        let conn = fx.open(&beamtime_db(root));
        let v = count(&conn, "SELECT max(version) FROM refinery_schema_history");
        let has_proposal = count(
            &conn,
            "SELECT count(*) FROM pragma_table_info('runs') WHERE name = 'proposal'",
        );
        assert_eq!(
            has_proposal,
            i64::from(v == 3),
            "version {v} with the other schema"
        );
        assert_whole(&conn);
        assert_eq!(count(&conn, "SELECT count(*) FROM runs"), RUNS, "rows lost");
        v
    };

    let calibrate = fx.path().join("calibrate-migrate");
    populate(&calibrate);
    let started = Instant::now();
    let (code, out, err) = finish(spawn(&fx, &calibrate, &["migrate", "--no-backup"]));
    assert_eq!(code, 0, "{out}{err}");
    let full = started.elapsed();
    let mut rng = seeded("migrate");
    let mut seen = [0usize; 4];
    let mut kills = Kills::new(full);
    let mut trial = 0;
    while kills.more(trial) {
        let root = fx.path().join(format!("trial-{trial}"));
        populate(&root);
        // With a backup first half the time: a kill during VACUUM INTO must not matter either.
        let args: &[&str] = if trial % 2 == 0 {
            &["migrate", "--no-backup"]
        } else {
            &["migrate"]
        };
        kills.at_random(&mut rng, spawn(&fx, &root, args));
        let v = version(&root);
        seen[v as usize] += 1;
        let (code, out, err) = finish(spawn(&fx, &root, &["migrate"]));
        assert_eq!(code, 0, "trial {trial}: re-run\n{out}{err}");
        assert_eq!(version(&root), 3);
        let (code, out, err) = finish(spawn(&fx, &root, &["verify"]));
        assert_eq!(code, 0, "trial {trial}: verify\n{out}{err}");
        std::fs::remove_dir_all(&root).ok();
        trial += 1;
    }
    eprintln!(
        "crash suite migrate: {trial} trials, {} processes killed mid-way, left at V2 {} times, at V3 {} times (full run {:.2} s)",
        kills.killed,
        seen[2],
        seen[3],
        full.as_secs_f64()
    );
    kills.assert_some("migrate");
}

/// reindex killed at random over many beamtimes: the index holds each beamtime whole or not
/// at all, and the next reindex completes it.
#[test]
fn crash_reindex_midway_leaves_a_consistent_index() {
    let fx = Fixture::new();
    const BEAMTIMES: usize = 12;
    const RUNS: i64 = 2_000;
    let ids: Vec<String> = (0..BEAMTIMES).map(|i| format!("bt-{i:02}")).collect();
    let populate = |root: &Path| {
        let mut args = vec!["initdb"];
        for id in &ids {
            args.push("--beamtime");
            args.push(id);
        }
        let (code, _, err) = finish(spawn(&fx, root, &args));
        assert_eq!(code, 0, "{err}");
        for id in &ids {
            let conn = fx.open(&root.join("beamtimes").join(id).join("beamtime.db"));
            conn.execute_batch(&format!(
                "INSERT INTO samples (name) VALUES ('s');
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {RUNS})
                 INSERT INTO runs (uid, sample_id, plan_name, time_start, metadata, researcher)
                 SELECT '{id}-run-' || i, 1, 'count', i, '{{}}', 'R. Searcher' FROM n;
                 INSERT INTO beamtime_meta (key, value) VALUES ('generation', '1');"
            ))
            .unwrap();
        }
    };
    let consistent = |root: &Path| {
        let index = root.join("index.db");
        if !index.exists() {
            return;
        }
        let conn = fx.open(&index);
        assert_whole_index(&conn);
        let mut stmt = conn
            .prepare("SELECT beamtime_id, count(*) FROM runs_index GROUP BY beamtime_id")
            .unwrap();
        let per: Vec<(String, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for (id, n) in per {
            assert_eq!(n, RUNS, "beamtime {id} half indexed");
        }
    };
    let calibrate = fx.path().join("calibrate-reindex");
    populate(&calibrate);
    let started = Instant::now();
    let (code, out, err) = finish(spawn(&fx, &calibrate, &["reindex"]));
    assert_eq!(code, 0, "{out}{err}");
    let full = started.elapsed();
    let mut rng = seeded("reindex");
    let mut kills = Kills::new(full);
    let mut trial = 0;
    while kills.more(trial) {
        let root = fx.path().join(format!("trial-{trial}"));
        populate(&root);
        kills.at_random(&mut rng, spawn(&fx, &root, &["reindex"]));
        consistent(&root);
        let (code, out, err) = finish(spawn(&fx, &root, &["reindex"]));
        assert_eq!(code, 0, "trial {trial}: re-run\n{out}{err}");
        let conn = fx.open(&root.join("index.db"));
        assert_eq!(
            count(&conn, "SELECT count(*) FROM runs_index"),
            RUNS * BEAMTIMES as i64
        );
        let (code, out, err) = finish(spawn(&fx, &root, &["verify"]));
        assert_eq!(code, 0, "trial {trial}: verify\n{out}{err}");
        std::fs::remove_dir_all(&root).ok();
        trial += 1;
    }
    eprintln!(
        "crash suite reindex: {trial} trials, {} processes killed mid-way (full run {:.2} s)",
        kills.killed,
        full.as_secs_f64()
    );
    kills.assert_some("reindex");
}

fn assert_whole_index(conn: &rusqlite::Connection) {
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    assert_eq!(
        count(conn, "SELECT count(*) FROM pragma_foreign_key_check"),
        0
    );
}
