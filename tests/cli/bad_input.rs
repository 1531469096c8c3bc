//! Bad input the other suites do not reach: a read-only data root, a full disk, a beamtime
//! database that is not SQLite or is truncated, a file cut off mid-document, documents of
//! another run inside a run, an unsupported stream_resource. Each checks the message, the
//! exit code, and that nothing half-written remains.

use std::os::unix::process::CommandExt;
use std::path::Path;

use crate::common::{Fixture, assert_whole, count, repo, run, shared_map};
use crate::crash::{command, finish};
use crate::generate;

const COUNT_RUN: &str = "682a43b9-a2ae-49de-8435-1bc6638aee60";
const SCALAR_RUN: &str = "7fbdf1df-8554-4a45-8123-cc03d61f67fc";

fn shared_run(uid: &str) -> String {
    repo(&format!("tests/data/bluesky/{uid}.jsonl"))
        .display()
        .to_string()
}

fn ingest(fx: &Fixture, files: &[&str]) -> (i32, String, String) {
    let map = shared_map();
    let mut args = vec!["ingest", "--beamtime", "bt", "--root-map", &map];
    args.extend_from_slice(files);
    run(&mut fx.beamdb(&args))
}

fn runs(fx: &Fixture) -> i64 {
    count(&fx.open(&fx.beamtime_db("bt")), "SELECT count(*) FROM runs")
}

fn verify(fx: &Fixture) -> (i32, String, String) {
    run(&mut fx.beamdb(&["verify", "--deep"]))
}

fn chmod_tree(path: &Path, writable: bool) {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(path).unwrap();
    let mode = meta.permissions().mode();
    let mode = if writable {
        mode | 0o200
    } else {
        mode & !0o222
    };
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            chmod_tree(&entry.unwrap().path(), writable);
        }
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The child runs without the capabilities that let root write where the modes forbid it,
/// so the test means the same as root (CI containers) and as a user.
fn without_dac_override(fx: &Fixture, args: &[&str]) -> (i32, String, String) {
    let mut cmd = command(fx, &fx.data_root(), args);
    unsafe {
        cmd.pre_exec(|| {
            // CAP_DAC_OVERRIDE (1) and CAP_DAC_READ_SEARCH (2) out of the bounding set: exec
            // then grants them to no one, root included. Fails harmlessly without CAP_SETPCAP.
            libc::prctl(libc::PR_CAPBSET_DROP, 1, 0, 0, 0);
            libc::prctl(libc::PR_CAPBSET_DROP, 2, 0, 0, 0);
            Ok(())
        });
    }
    finish(cmd.spawn().expect("spawn"))
}

#[test]
fn ingest_into_a_read_only_data_root_fails_clearly_and_verify_still_reads_it() {
    let fx = Fixture::new();
    let (code, out, err) = ingest(&fx, &[&shared_run(SCALAR_RUN)]);
    assert_eq!(code, 0, "{out}{err}");
    chmod_tree(&fx.data_root(), false);
    let map = shared_map();
    let args = [
        "ingest",
        "--beamtime",
        "bt",
        "--root-map",
        &map,
        &shared_run(COUNT_RUN),
    ];
    let (code, out, err) = without_dac_override(&fx, &args);
    let verified = without_dac_override(&fx, &["verify"]);
    chmod_tree(&fx.data_root(), true);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("Permission denied"), "{err}");
    assert!(err.contains(&fx.data_root().display().to_string()), "{err}");
    assert_eq!(runs(&fx), 1);
    assert_eq!(verified.0, 0, "verify on a read-only root: {verified:?}");
    let (code, out, err) = verify(&fx);
    assert_eq!(code, 0, "{out}{err}");
}

/// A full disk, simulated with RLIMIT_FSIZE (writes past the limit fail with EFBIG, as on a
/// full disk with ENOSPC): the run that could not be committed is not there, not even its
/// frames, the message says what happened, and after "freeing space" the ingest completes.
#[test]
fn ingest_on_a_full_disk_stores_nothing_half_and_says_so() {
    let fx = Fixture::new();
    let (code, out, err) = ingest(&fx, &[&shared_run(SCALAR_RUN)]);
    assert_eq!(code, 0, "{out}{err}");
    let big = generate::frames_run(fx.path(), "full-disk", 400, (32, 32));
    let big = big.to_str().unwrap();
    let map = generate::identity_map(fx.path());
    let args = ["ingest", "--beamtime", "bt", "--root-map", &map, big];
    let mut cmd = command(&fx, &fx.data_root(), &args);
    unsafe {
        cmd.pre_exec(|| {
            // Past the limit, a write fails with EFBIG instead of killing the process.
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: 256 * 1024,
                rlim_max: 256 * 1024,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (code, out, err) = finish(cmd.spawn().expect("spawn"));
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("the disk is full") && err.contains("nothing of it is half-written"),
        "{err}"
    );
    let conn = fx.open(&fx.beamtime_db("bt"));
    assert_whole(&conn);
    assert_eq!(runs(&fx), 1);
    let (code, out, err) = verify(&fx);
    assert_eq!(code, 0, "nothing half-written: {out}{err}");
    let (code, out, err) = run(&mut fx.beamdb(&args));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(runs(&fx), 2);
    let (code, out, err) = verify(&fx);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn ingest_into_a_beamtime_database_that_is_not_sqlite_or_truncated_fails_and_writes_nothing() {
    let fx = Fixture::new();
    let (code, out, err) = ingest(&fx, &[&shared_run(SCALAR_RUN)]);
    assert_eq!(code, 0, "{out}{err}");
    let db = fx.beamtime_db("bt");
    let good = std::fs::read(&db).unwrap();
    for (what, bytes) in [
        ("text", b"just some text, not SQLite at all ".repeat(100)),
        ("truncated", good[..good.len().min(4096 + 100)].to_vec()),
    ] {
        std::fs::write(&db, &bytes).unwrap();
        let (code, out, err) = ingest(&fx, &[&shared_run(COUNT_RUN)]);
        assert_eq!(code, 1, "{what}: {out}{err}");
        assert!(
            err.contains(&db.display().to_string())
                && (err.contains("not an SQLite database") || err.contains("malformed")),
            "{what}: {err}"
        );
        // Untouched, and no frames written for a run that cannot be stored.
        assert_eq!(std::fs::read(&db).unwrap(), bytes, "{what}");
        assert!(
            !fx.data_root()
                .join("beamtimes/bt/frames.zarr/runs")
                .join(COUNT_RUN)
                .exists()
        );
        let (code, out, _) = verify(&fx);
        assert_eq!(code, 4, "{what}: {out}");
    }
}

#[test]
fn ingest_a_file_cut_off_mid_document_rejects_that_run_only() {
    let fx = Fixture::new();
    let text = std::fs::read_to_string(shared_run(COUNT_RUN)).unwrap();
    // A copy that stopped mid-way: the last line is half a document, with no newline.
    let cut = fx.write("cut.jsonl", &text[..text.len() - 60]);
    let (code, out, err) = ingest(&fx, &[cut.to_str().unwrap(), &shared_run(SCALAR_RUN)]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(out.contains(&format!("rejected  {COUNT_RUN}")), "{out}");
    assert!(out.contains("not valid JSON"), "{out}");
    assert_eq!(runs(&fx), 1);
    let (code, out, err) = verify(&fx);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn ingest_documents_of_another_run_inside_a_run_are_rejected() {
    let fx = Fixture::new();
    let text = std::fs::read_to_string(shared_run(SCALAR_RUN)).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    // The descriptor claims another run.
    lines[1] = lines[1].replace(SCALAR_RUN, "some-other-run");
    let bad = fx.write("interleaved.jsonl", &(lines.join("\n") + "\n"));
    let (code, out, err) = ingest(&fx, &[bad.to_str().unwrap()]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        out.contains("descriptor belongs to run \"some-other-run\""),
        "{out}"
    );
    assert!(
        out.contains("runs interleaved or a stop is missing"),
        "{out}"
    );
}

#[test]
fn ingest_an_unsupported_stream_resource_rejects_that_run() {
    let fx = Fixture::new();
    let text = std::fs::read_to_string(shared_run(SCALAR_RUN)).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.insert(
        2,
        format!(
            r#"["stream_resource", {{"uid": "sr1", "run_start": "{SCALAR_RUN}", "mimetype": "application/x-not-a-format", "uri": "file://localhost/x", "data_key": "det", "parameters": {{}}}}]"#
        ),
    );
    let bad = fx.write("sr.jsonl", &(lines.join("\n") + "\n"));
    // A data_root to verify afterwards: the ingest, which lands nothing, leaves none behind.
    assert_eq!(run(&mut fx.beamdb(&["initdb"])).0, 0);
    let (code, out, err) = ingest(&fx, &[bad.to_str().unwrap()]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(out.contains("application/x-not-a-format"), "{out}");
    assert!(out.contains("not supported"), "{out}");
    let (code, out, err) = verify(&fx);
    assert_eq!(code, 0, "{out}{err}");
}

/// Every row of docs/errors.md names tests that exist (they run in this same suite, so a
/// row's test passing is checked by the run itself).
#[test]
fn errors_catalogue_every_row_names_a_real_test() {
    fn sources(dir: &Path, text: &mut String) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, text);
            } else if path.extension().is_some_and(|e| e == "rs") {
                text.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut code = String::new();
    sources(&repo("src"), &mut code);
    sources(&repo("tests"), &mut code);
    let catalogue = std::fs::read_to_string(repo("docs/errors.md")).unwrap();
    let mut rows = 0;
    let mut missing = Vec::new();
    for line in catalogue.lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<&str> = line.split(" | ").collect();
        let Some(test_cell) = cells.last() else {
            continue;
        };
        if test_cell.trim_end_matches('|').trim() == "test" {
            continue;
        }
        rows += 1;
        let names: Vec<&str> = test_cell.split('`').skip(1).step_by(2).collect();
        if names.is_empty() {
            missing.push(format!("no test named: {line}"));
        }
        for name in names {
            let leaf = name.rsplit("::").next().unwrap_or(name);
            if !code.contains(&format!("fn {leaf}(")) {
                missing.push(format!("{name}: no such test"));
            }
        }
    }
    assert!(rows > 50, "{rows} rows");
    assert!(missing.is_empty(), "{missing:#?}");
}
