//! Long runs: memory that does not grow with the run, repeated events found far apart, a
//! second writer beside a long run, and a live stdin run landing before its pipe closes.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{Fixture, assert_whole, count};
use crate::crash::{command, finish, spawn};
use crate::generate;

fn ingest_args(jsonl: &Path) -> Vec<&str> {
    vec![
        "-q",
        "ingest",
        "--beamtime",
        "bt",
        jsonl.to_str().expect("utf-8"),
    ]
}

/// Runs beamdb to its end: (exit code, peak resident set in KiB), from the kernel's
/// accounting of the child (wait4), not from sampling.
fn peak_rss_kib(fx: &Fixture, root: &Path, args: &[&str]) -> (i32, i64) {
    // Reaped by wait4 below, which also gives the child's rusage.
    #[allow(clippy::zombie_processes)]
    let child = command(fx, root, args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn beamdb");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4");
    (libc::WEXITSTATUS(status), usage.ru_maxrss)
}

/// The run's rows once waited for their stop in memory (~0.7 KB an event, +126 MB over the
/// 180,000 events between the two runs); now they wait in a staging table on disk. Checked as
/// flatness against the small run, with room for what a busy machine moves (malloc arenas of
/// the reading and frame threads, SQLite's caches: seen up to 18 MiB apart). The absolute
/// level is issue 13's goal, measured on the release build by `bench/run --only rss`; a debug
/// build's own size (bigger with `--all-features`) is no measure of it, so it is not asserted.
#[test]
fn scale_peak_memory_does_not_grow_with_the_number_of_events() {
    let fx = Fixture::new();
    let small = generate::events_run(&fx.path().join("in"), "small", 20_000);
    let large = generate::events_run(&fx.path().join("in"), "large", 200_000);
    let (code, small_kib) = peak_rss_kib(&fx, &fx.path().join("a"), &ingest_args(&small));
    assert_eq!(code, 0);
    let (code, large_kib) = peak_rss_kib(&fx, &fx.path().join("b"), &ingest_args(&large));
    assert_eq!(code, 0);
    eprintln!("peak RSS: 20,000 events {small_kib} KiB, 200,000 events {large_kib} KiB");
    assert!(
        large_kib < small_kib + 32 * 1024,
        "peak RSS grows with the run: {small_kib} KiB for 20,000 events, {large_kib} KiB for 200,000"
    );
    let conn = fx.open(&fx.path().join("b/beamtimes/bt/beamtime.db"));
    assert_eq!(count(&conn, "SELECT count(*) FROM events"), 200_000);
    assert_eq!(count(&conn, "SELECT num_events FROM runs"), 200_000);
}

/// Repeats far apart (more than a staging batch): found by the events table's constraints,
/// and named with both lines as before.
#[test]
fn scale_repeats_far_apart_in_a_long_run_are_named_with_their_lines() {
    let fx = Fixture::new();
    let jsonl = generate::events_run(fx.path(), "long", 3_000);
    let text = std::fs::read_to_string(&jsonl).unwrap();
    // Line 1 is the start, 2 the descriptor, event i (from 0) is line i + 3.
    let uid_twice = fx.write("uid.jsonl", &text.replace("\"long-e2500\"", "\"long-e10\""));
    let (code, out, err) = crate::common::run(&mut fx.beamdb(&ingest_args(&uid_twice)[1..]));
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        out.contains(&format!(
            "{}:2503: event uid \"long-e10\" appears twice",
            uid_twice.display()
        )),
        "{out}"
    );
    let seq_twice = fx.write(
        "seq.jsonl",
        &text.replace("\"seq_num\": 2601,", "\"seq_num\": 7,"),
    );
    let (code, out, err) = crate::common::run(&mut fx.beamdb(&ingest_args(&seq_twice)[1..]));
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        out.contains(&format!(
            "{0}:2603: seq_num 7 appears twice in stream \"long-d\" (its first event: {0}:9)",
            seq_twice.display()
        )),
        "{out}"
    );
    assert!(!out.contains("UNIQUE constraint"), "{out}");
    assert!(
        !fx.beamtime_db("bt").exists() || {
            let conn = fx.open(&fx.beamtime_db("bt"));
            count(&conn, "SELECT count(*) FROM events") == 0
        }
    );
}

/// A long run holds no lock on the beamtime while its events arrive: another ingest into the
/// same beamtime lands meanwhile, and readers see none of the long run until its commit.
#[test]
fn scale_a_second_ingest_lands_beside_a_long_run_and_readers_see_no_half_run() {
    let fx = Fixture::new();
    let root = fx.data_root();
    let long = generate::events_run(&fx.path().join("in"), "long", 150_000);
    let short = generate::events_run(&fx.path().join("in"), "short", 10);
    // The beamtime exists before the long run begins.
    let (code, out, err) = finish(spawn(&fx, &root, &ingest_args(&short)));
    assert_eq!(code, 0, "{out}{err}");
    let short2 = fx.write(
        "short2.jsonl",
        &std::fs::read_to_string(&short)
            .unwrap()
            .replace("short", "other"),
    );
    let mut long_child = spawn(&fx, &root, &ingest_args(&long));
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let (code, out, err) = finish(spawn(&fx, &root, &ingest_args(&short2)));
    assert_eq!(code, 0, "{out}{err}");
    let took = started.elapsed();
    let conn = fx.open(&fx.beamtime_db("bt"));
    let still_running = long_child.try_wait().expect("try_wait").is_none();
    eprintln!("the second ingest took {took:?}; the long run still running: {still_running}");
    if still_running {
        assert_eq!(
            count(&conn, "SELECT count(*) FROM runs WHERE uid = 'long'"),
            0
        );
        assert_eq!(
            count(
                &conn,
                "SELECT count(*) FROM events WHERE stream_uid = 'long-d'"
            ),
            0
        );
    }
    let (code, out, err) = finish(long_child);
    assert_eq!(code, 0, "{out}{err}");
    assert_whole(&conn);
    assert_eq!(count(&conn, "SELECT count(*) FROM runs"), 3);
    assert_eq!(count(&conn, "SELECT count(*) FROM events"), 150_020);
}

/// `ingest -` from a live producer: a run is committed at its stop, while the producer still
/// holds the pipe open, not when the input ends.
#[test]
fn scale_a_stdin_run_lands_before_the_pipe_closes() {
    let fx = Fixture::new();
    let root = fx.data_root();
    let jsonl = generate::events_run(&fx.path().join("in"), "live", 2_500);
    let text = std::fs::read_to_string(&jsonl).unwrap();
    let mut child = command(&fx, &root, &["ingest", "--beamtime", "bt", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn beamdb");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(text.as_bytes()).expect("write");
    stdin.flush().expect("flush");
    let db = fx.beamtime_db("bt");
    let deadline = Instant::now() + Duration::from_secs(60);
    let landed = loop {
        let landed = db.exists() && {
            let conn = fx.open(&db);
            conn.query_row("SELECT count(*) FROM runs", [], |r| r.get::<_, i64>(0))
                .unwrap_or(0)
                == 1
        };
        if landed || Instant::now() > deadline {
            break landed;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(landed, "the run did not land while its pipe stayed open");
    drop(stdin);
    let (code, out, err) = finish(child);
    assert_eq!(code, 0, "{out}{err}");
    let conn = fx.open(&db);
    assert_eq!(count(&conn, "SELECT count(*) FROM events"), 2_500);
}
