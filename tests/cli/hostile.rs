//! Hostile documents: each is a few hundred bytes that once crashed, hung, or misled ingest.
//! Every case goes through the real binary with a time limit, is a clean rejection (exit 4)
//! naming `file:line`, leaves `verify` clean, and lets the valid run after it land.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::{Fixture, counts, path, repo, run, store};

const SHARED_ROOT: &str = "/srv/beamline/shared/frames";
const COUNT_RUN: &str = "682a43b9-a2ae-49de-8435-1bc6638aee60";
const INLINE_RUN: &str = "98786b6e-de87-4ab0-9fb5-338308b26fd2";
const SCALAR_RUN: &str = "7fbdf1df-8554-4a45-8123-cc03d61f67fc";
const HDF5_ROOT: &str = "/srv/beamline/shared/hdf5";
const SR_FLY: &str = "b6a82a9e-1e51-41d3-a3af-d506fe46eb68";
const AD_COUNT: &str = "85cd65f3-aab4-4de1-973c-0b3b646d5056";

/// Long enough for a debug build on a busy machine; the hangs this guards against never end.
const LIMIT: Duration = Duration::from_secs(60);

fn shared_run(uid: &str) -> PathBuf {
    repo(&format!("tests/data/bluesky/{uid}.jsonl"))
}

fn hdf5_run(uid: &str) -> PathBuf {
    repo(&format!("tests/data/hdf5/shared/{uid}.jsonl"))
}

fn scalar() -> String {
    path(&shared_run(SCALAR_RUN)).to_string()
}

/// `beamdb ARGS` with a time limit: a hang fails the test instead of the suite.
fn beamdb(fx: &Fixture, args: &[&str]) -> (i32, String, String) {
    let mut cmd = fx.beamdb(args);
    cmd.timeout(LIMIT);
    let (code, out, err) = run(&mut cmd);
    assert_ne!(
        code, -1,
        "killed after {LIMIT:?} (a hang?) or by a signal: {out}{err}"
    );
    (code, out, err)
}

/// ingest with the given root maps, then the inputs.
fn ingest(fx: &Fixture, maps: &[String], inputs: &[&str]) -> (i32, String, String) {
    let mut args = vec!["ingest", "--beamtime", "bt"];
    for map in maps {
        args.extend(["--root-map", map.as_str()]);
    }
    args.extend_from_slice(inputs);
    beamdb(fx, &args)
}

fn verify_clean(fx: &Fixture) {
    let (code, out, err) = beamdb(fx, &["verify", "--deep"]);
    assert_eq!(code, 0, "verify: {out}{err}");
}

/// The line of `text` (1-based) that contains `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{needle} not in the document"))
}

/// A `.npy` file (format 1.0) with any header dict and any payload: it may lie.
fn npy(path: &Path, descr: &str, shape: &str, payload: &[u8]) {
    let header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    let pad = (64 - (10 + header.len() + 1) % 64) % 64;
    let header = format!("{header}{}\n", " ".repeat(pad));
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(payload);
    std::fs::write(path, bytes).unwrap();
}

/// The shared NPY_SEQ run (5 frames of 64×64 u2) with its descriptor's shape and dtype set,
/// and its frames written by `frame` into a fresh folder; returns (jsonl, root map).
fn npy_run(
    fx: &Fixture,
    name: &str,
    shape: &str,
    frame: impl Fn(&Path, usize),
) -> (PathBuf, String) {
    let frames = fx.path().join(format!("{name}-frames"));
    std::fs::create_dir_all(&frames).unwrap();
    for i in 0..5 {
        frame(&frames.join(format!("df4fa8_{i}.npy")), i);
    }
    let jsonl = fx.edited_copy(&shared_run(COUNT_RUN), &format!("{name}.jsonl"), |t| {
        t.replace("\"shape\": [64, 64]", &format!("\"shape\": {shape}"))
    });
    (jsonl, format!("{SHARED_ROOT}={}", frames.display()))
}

#[test]
fn ingest_inline_array_with_a_huge_declared_shape_is_rejected_and_the_next_run_lands() {
    let fx = Fixture::new();
    let huge = fx.edited_copy(&shared_run(INLINE_RUN), "huge.jsonl", |t| {
        t.replace("\"shape\": [10, 10]", "\"shape\": [1048576, 1048576]")
    });
    let text = std::fs::read_to_string(&huge).unwrap();
    let (code, out, err) = ingest(&fx, &[], &[path(&huge), &scalar()]);
    assert_eq!(code, 4, "{out}{err}");
    let line = line_of(&text, "\"img\": [[");
    assert!(
        out.contains(&format!(
            "rejected  {INLINE_RUN}: {}:{line}: img:",
            huge.display()
        )),
        "{out}"
    );
    assert!(out.contains("landed 1, unchanged 0, rejected 1"), "{out}");
    assert_eq!(counts(&fx).0, 1);
    verify_clean(&fx);
}

#[test]
fn ingest_npy_headers_whose_size_overflows_are_rejected() {
    // 2^62 × 4 one-byte elements: the product wraps to 0, which an empty payload "matches".
    for shape in ["[4611686018427387904, 4]", "[4294967296, 4294967296]"] {
        let fx = Fixture::new();
        let tuple = shape.replace('[', "(").replace(']', ")");
        let (jsonl, map) = npy_run(&fx, "overflow", shape, |p, _| npy(p, "|u1", &tuple, &[]));
        let jsonl = fx.edited_copy(&jsonl, "overflow.jsonl", |t| {
            t.replace(
                "\"dtype\": \"array\", \"shape\"",
                "\"dtype\": \"array\", \"dtype_numpy\": \"|u1\", \"shape\"",
            )
        });
        let text = std::fs::read_to_string(&jsonl).unwrap();
        let (code, out, err) = ingest(&fx, &[map], &[path(&jsonl), &scalar()]);
        assert_eq!(code, 4, "{shape}: {out}{err}");
        let line = line_of(&text, "\"descriptor\"");
        assert!(
            out.contains(&format!(
                "rejected  {COUNT_RUN}: {}:{line}: ccd:",
                jsonl.display()
            )),
            "{shape}: {out}"
        );
        assert!(out.contains("too large"), "{shape}: {out}");
        assert_eq!(counts(&fx), (1, 11, 0), "{shape}");
        verify_clean(&fx);
    }
}

#[test]
fn ingest_a_zero_dimension_is_rejected_with_its_line_and_later_runs_land() {
    let fx = Fixture::new();
    let inline = fx.edited_copy(&shared_run(INLINE_RUN), "zero-inline.jsonl", |t| {
        t.replace("\"shape\": [10, 10]", "\"shape\": [10, 0]")
    });
    let (npy_jsonl, map) = npy_run(&fx, "zero-npy", "[0, 64]", |p, _| {
        npy(p, "<u2", "(0, 64)", &[])
    });
    let (code, out, err) = ingest(&fx, &[map], &[path(&inline), path(&npy_jsonl), &scalar()]);
    assert_eq!(code, 4, "{out}{err}");
    for (file, field) in [(&inline, "img"), (&npy_jsonl, "ccd")] {
        let line = line_of(&std::fs::read_to_string(file).unwrap(), "\"descriptor\"");
        assert!(
            out.contains(&format!("{}:{line}: {field}: ", file.display()))
                && out.contains("a dimension of 0"),
            "{out}"
        );
    }
    assert!(out.contains("landed 1, unchanged 0, rejected 2"), "{out}");
    verify_clean(&fx);
}

#[test]
fn ingest_a_stream_datum_beyond_its_dataset_is_rejected_at_once() {
    let fx = Fixture::new();
    let map = format!(
        "{HDF5_ROOT}={}",
        repo("tests/data/hdf5/shared/hdf5").display()
    );
    for (name, stop) in [("huge", 1u64 << 40), ("million", 1_000_000)] {
        let bad = fx.edited_copy(&hdf5_run(SR_FLY), &format!("{name}.jsonl"), |t| {
            t.replace(
                "\"seq_nums\": {\"start\": 1, \"stop\": 4}, \"indices\": {\"start\": 0, \"stop\": 3}",
                &format!(
                    "\"seq_nums\": {{\"start\": 1, \"stop\": {}}}, \"indices\": {{\"start\": 0, \"stop\": {stop}}}",
                    stop + 1
                ),
            )
        });
        let started = std::time::Instant::now();
        let (code, out, err) = ingest(&fx, std::slice::from_ref(&map), &[path(&bad), &scalar()]);
        assert_eq!(code, 4, "{name}: {out}{err}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{name}: took {:?}",
            started.elapsed()
        );
        let line = line_of(&std::fs::read_to_string(&bad).unwrap(), "\"stream_datum\"");
        assert!(
            out.contains(&format!("{}:{line}: blobfly: ", bad.display()))
                && out.contains("but the dataset has 6 rows"),
            "{name}: {out}"
        );
    }
    assert_eq!(counts(&fx).0, 1);
    verify_clean(&fx);
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
}

#[test]
fn ingest_a_fifo_where_a_frame_file_should_be_is_refused_not_waited_for() {
    let fx = Fixture::new();
    // NPY_SEQ: the third frame is a FIFO nobody writes to.
    let (jsonl, map) = npy_run(&fx, "fifo", "[64, 64]", |p, i| {
        if i == 2 {
            mkfifo(p);
        } else {
            std::fs::copy(
                repo(&format!("tests/data/bluesky/frames/df4fa8_{i}.npy")),
                p,
            )
            .unwrap();
        }
    });
    let (code, out, err) = ingest(&fx, &[map], &[path(&jsonl), &scalar()]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(out.contains("df4fa8_2.npy: not a regular file"), "{out}");
    // HDF5: the file itself is a FIFO.
    let h5 = fx.path().join("h5");
    std::fs::create_dir_all(h5.join("ccd")).unwrap();
    let source = repo("tests/data/hdf5/shared/hdf5");
    let text = std::fs::read_to_string(hdf5_run(AD_COUNT)).unwrap();
    let file = text
        .split("\"resource_path\": \"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    std::fs::create_dir_all(h5.join(&file).parent().unwrap()).unwrap();
    mkfifo(&h5.join(&file));
    assert!(source.join(&file).is_file());
    let map = format!("{HDF5_ROOT}={}", h5.display());
    let (code, out, err) = ingest(&fx, &[map], &[path(&hdf5_run(AD_COUNT))]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(out.contains("not a regular file"), "{out}");
    assert_eq!(counts(&fx).0, 1);
    verify_clean(&fx);
}

#[test]
fn ingest_names_zarr_reserves_are_refused_with_their_line() {
    let fx = Fixture::new();
    let cases = [
        (
            "uid",
            format!("\"uid\": \"{INLINE_RUN}\", \"time\""),
            "\"uid\": \"zarr.json\", \"time\"",
            "run uid \"zarr.json\"",
        ),
        (
            "dunder-uid",
            format!("\"uid\": \"{INLINE_RUN}\", \"time\""),
            "\"uid\": \"__pycache\", \"time\"",
            "run uid \"__pycache\"",
        ),
        (
            "stream",
            "\"name\": \"primary\"".into(),
            "\"name\": \"__meta\"",
            "stream name \"__meta\"",
        ),
        (
            "field",
            "\"img\"".into(),
            "\"zarr.json\"",
            "field name \"zarr.json\"",
        ),
        (
            "v2-field",
            "\"img\"".into(),
            "\".zattrs\"",
            "field name \".zattrs\"",
        ),
    ];
    for (name, from, to, message) in &cases {
        let bad = fx.edited_copy(&shared_run(INLINE_RUN), &format!("{name}.jsonl"), |t| {
            t.replace(from.as_str(), to)
        });
        let (code, out, err) = ingest(&fx, &[], &[path(&bad), &scalar()]);
        assert_eq!(code, 4, "{name}: {out}{err}");
        assert!(
            out.contains(&format!("{}:", bad.display()))
                && out.contains(message)
                && out.contains("Zarr keeps this name"),
            "{name}: {out}"
        );
        assert!(
            out.contains("landed 1") || out.contains("unchanged 1"),
            "{name}: {out}"
        );
    }
    assert_eq!(counts(&fx), (1, 11, 0));
    // runs/zarr.json and the landed run's group (its xarray layout): nothing of the others.
    assert_eq!(
        std::fs::read_dir(store(&fx).join("runs")).unwrap().count(),
        2
    );
    verify_clean(&fx);
}

/// A root that no root map maps is not a boundary of its own: a document could name `/`.
#[test]
fn ingest_an_unmapped_root_is_refused_unless_mapped_or_allowed() {
    let fx = Fixture::new();
    let frames = fx.path().join("detector/frames");
    std::fs::create_dir_all(&frames).unwrap();
    for i in 0..5 {
        std::fs::copy(
            repo(&format!("tests/data/bluesky/frames/df4fa8_{i}.npy")),
            frames.join(format!("df4fa8_{i}.npy")),
        )
        .unwrap();
    }
    let root = frames.display().to_string();
    let jsonl = fx.edited_copy(&shared_run(COUNT_RUN), "unmapped.jsonl", |t| {
        t.replace(SHARED_ROOT, &root)
    });
    let line = line_of(&std::fs::read_to_string(&jsonl).unwrap(), "\"resource\"");
    let (code, out, err) = ingest(&fx, &[], &[path(&jsonl)]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        out.contains(&format!(
            "rejected  {COUNT_RUN}: {}:{line}: frames root {root} is neither mapped nor allowed",
            jsonl.display()
        )) && out.contains(&format!("--root-map {root}={root}"))
            && out.contains("[ingest] allowed_roots"),
        "{out}"
    );
    assert_eq!(counts(&fx), (0, 0, 0));
    // `/` is no better, and neither is a root reached by `..` from an allowed one.
    let slash = fx.edited_copy(&shared_run(COUNT_RUN), "slash.jsonl", |t| {
        t.replace(SHARED_ROOT, "/")
            .replace("\"df4fa8\"", &format!("\"{}/df4fa8\"", &root[1..]))
    });
    let (code, out, _) = ingest(&fx, &[], &[path(&slash)]);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains("frames root / is neither mapped nor allowed"),
        "{out}"
    );

    // The identity mapping allows it explicitly.
    let (code, out, err) = ingest(&fx, &[format!("{root}={root}")], &[path(&jsonl)]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(counts(&fx), (1, 5, 5));
    verify_clean(&fx);
}

#[test]
fn ingest_allowed_roots_in_the_settings_admit_roots_under_them() {
    let fx = Fixture::new();
    let frames = fx.path().join("detector/frames");
    std::fs::create_dir_all(&frames).unwrap();
    for i in 0..5 {
        std::fs::copy(
            repo(&format!("tests/data/bluesky/frames/df4fa8_{i}.npy")),
            frames.join(format!("df4fa8_{i}.npy")),
        )
        .unwrap();
    }
    let jsonl = fx.edited_copy(&shared_run(COUNT_RUN), "allowed.jsonl", |t| {
        t.replace(SHARED_ROOT, &frames.display().to_string())
    });
    fx.write(
        "settings.toml",
        "[ingest]\nallowed_roots = [\"detector\"]\n",
    );
    // A symbolic link inside the allowed folder that leads out of it is no way out.
    let outside = fx.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::copy(frames.join("df4fa8_0.npy"), outside.join("df4fa8_0.npy")).unwrap();
    std::os::unix::fs::symlink(&outside, fx.path().join("detector/link")).unwrap();
    let linked = fx.edited_copy(&jsonl, "linked.jsonl", |t| {
        t.replace("detector/frames", "detector/link")
    });
    let (code, out, err) = ingest(&fx, &[], &[path(&linked)]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(out.contains("outside its root"), "{out}");
    let (code, out, err) = ingest(&fx, &[], &[path(&jsonl)]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(counts(&fx), (1, 5, 5));
    verify_clean(&fx);
}

#[test]
fn ingest_uids_another_run_owns_name_the_document_and_the_owner() {
    let fx = Fixture::new();
    let (code, out, err) = ingest(&fx, &[], &[&scalar()]);
    assert_eq!(code, 0, "{out}{err}");
    let text = std::fs::read_to_string(shared_run(SCALAR_RUN)).unwrap();
    // The same events under another run uid (a copied file whose start was edited).
    let copy = fx.write("copy.jsonl", &text.replace(SCALAR_RUN, "copied-run"));
    let (code, out, err) = ingest(&fx, &[], &[path(&copy)]);
    assert_eq!(code, 4, "{out}{err}");
    let descriptor = line_of(&text, "\"descriptor\"");
    assert!(
        out.contains(&format!(
            "rejected  copied-run: {}:{descriptor}: descriptor uid",
            copy.display()
        )) && out.contains(&format!("already belongs to run {SCALAR_RUN}")),
        "{out}"
    );
    assert!(!out.contains("UNIQUE constraint"), "{out}");
    // Only the events copied (their descriptor got a new uid): the first one is named.
    let descriptor_uid = text
        .lines()
        .nth(descriptor - 1)
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .and_then(|v| v[1]["uid"].as_str().map(String::from))
        .unwrap();
    let copy = fx.write(
        "events.jsonl",
        &text
            .replace(SCALAR_RUN, "copied-run")
            .replace(&descriptor_uid, "new-descriptor"),
    );
    let (code, out, err) = ingest(&fx, &[], &[path(&copy)]);
    assert_eq!(code, 4, "{out}{err}");
    let first_event = line_of(&text, "[\"event\"");
    assert!(
        out.contains(&format!("{}:{first_event}: event uid", copy.display()))
            && out.contains(&format!("already belongs to run {SCALAR_RUN}")),
        "{out}"
    );
    assert!(!out.contains("UNIQUE constraint"), "{out}");
    assert_eq!(counts(&fx).0, 1);
}

#[test]
fn ingest_a_seq_num_twice_in_one_stream_is_rejected_with_its_line() {
    let fx = Fixture::new();
    let text = std::fs::read_to_string(shared_run(SCALAR_RUN)).unwrap();
    let second = line_of(&text, "\"seq_num\": 2");
    let bad = fx.write(
        "seq.jsonl",
        &text.replace("\"seq_num\": 2", "\"seq_num\": 1"),
    );
    let (code, out, err) = ingest(&fx, &[], &[path(&bad), path(&shared_run(INLINE_RUN))]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        out.contains(&format!(
            "{}:{second}: seq_num 1 appears twice in stream",
            bad.display()
        )),
        "{out}"
    );
    assert!(!out.contains("UNIQUE constraint"), "{out}");
    assert_eq!(counts(&fx).0, 1);
}

#[test]
fn ingest_document_text_is_escaped_in_what_it_prints() {
    let fx = Fixture::new();
    let bad = fx.edited_copy(&shared_run(INLINE_RUN), "forge.jsonl", |t| {
        t.replacen(
            &format!("\"uid\": \"{INLINE_RUN}\""),
            "\"uid\": \"x\\nlanded    forged: 1 events, 0 frames\\u001b[2J\"",
            1,
        )
    });
    let (code, out, err) = ingest(&fx, &[], &[path(&bad)]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        !out.lines().any(|l| l.starts_with("landed    forged")),
        "a document forged a line: {out}"
    );
    assert!(!out.contains('\u{1b}'), "{out:?}");
    assert!(out.contains("rejected  x\\nlanded    forged"), "{out}");
    // Nothing landed, so the beamtime this ingest would have created is not left behind.
    assert!(!fx.beamtime_db("bt").exists());
}

/// Found by the mutation test: an event moved before its start is rejected as a stray, and
/// the run it belonged to then arrived without it. Stored, it was a run `verify` flags for
/// ever; it is refused at its stop instead.
#[test]
fn ingest_a_run_missing_events_its_stop_counts_is_rejected_at_the_stop() {
    let fx = Fixture::new();
    let text = std::fs::read_to_string(shared_run(INLINE_RUN)).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let event = lines.remove(2);
    lines.insert(0, event);
    let bad = fx.write("moved.jsonl", &(lines.join("\n") + "\n"));
    let stop = line_of(&lines.join("\n"), "[\"stop\"");
    let (code, out, err) = ingest(&fx, &[], &[path(&bad), &scalar()]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        out.contains(&format!(
            "rejected  {INLINE_RUN}: {}:{stop}: the stop document's num_events says 2 for stream \"primary\", but 1 arrived",
            bad.display()
        )),
        "{out}"
    );
    assert_eq!(counts(&fx).0, 1);
    verify_clean(&fx);
}

/// `runs` and `verify` print names and uids that came from documents: escaped there too.
#[test]
fn runs_document_text_is_escaped_in_what_it_prints() {
    let fx = Fixture::new();
    let forged = fx.edited_copy(&shared_run(SCALAR_RUN), "sample.jsonl", |t| {
        t.replace(
            "\"sample_name\": \"PS-film\"",
            "\"sample_name\": \"PS\\nlanded    forged: 1 events\\u001b[31m\"",
        )
    });
    let (code, out, err) = ingest(&fx, &[], &[path(&forged)]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = beamdb(&fx, &["reindex"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = beamdb(&fx, &["runs"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("PS\\nlanded    forged: 1 events\\u{1b}[31m"),
        "{out}"
    );
    assert!(
        !out.contains('\u{1b}') && out.lines().count() == 2,
        "{out:?}"
    );
}

/// Found by the hostile campaign: documents from a pipe (`ingest <(zcat run.jsonl.gz)`, a
/// named FIFO) were refused with "no such file or folder", which is false; and a device such
/// as /dev/null got the same false message. A pipe is read like `-`; anything else that is
/// neither a file nor a folder is refused saying what it is.
#[test]
fn ingest_reads_documents_from_a_pipe_and_names_what_else_it_refuses() {
    let fx = Fixture::new();
    let fifo = fx.path().join("docs.fifo");
    mkfifo(&fifo);
    let text = std::fs::read(shared_run(SCALAR_RUN)).unwrap();
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let _ = std::fs::write(&fifo, text);
        })
    };
    let (code, out, err) = ingest(&fx, &[], &[path(&fifo)]);
    // If ingest never opened the pipe, the writer still waits for a reader: give it one.
    if !writer.is_finished() {
        let _reader = std::fs::File::open(&fifo);
    }
    writer.join().unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("landed    {SCALAR_RUN}")), "{out}");
    let (code, out, err) = ingest(&fx, &[], &["/dev/null"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("/dev/null: not a file, a folder or a pipe (a character device)")
            && !err.contains("no such"),
        "{err}"
    );
    verify_clean(&fx);
}
