//! export: every sample run comes back equal to its documents (pages unpacked on both sides),
//! a re-ingest of the export is the same whole run, and the bad cases (unknown names, files
//! that exist, frames missing or quarantined, a beamtime from before V2, stdout closed).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{Map, Value};

use crate::common::{Fixture, count, path, repo, run};

/// Every sample run: (folder, the root in its documents, the real frames folder).
fn samples() -> Vec<(PathBuf, &'static str, PathBuf)> {
    vec![
        (
            repo("tests/data/bluesky"),
            "/srv/beamline/shared/frames",
            repo("tests/data/bluesky/frames"),
        ),
        (
            repo("tests/data/hidden"),
            "/tmp/gen/hidden/frames",
            repo("tests/data/hidden/frames"),
        ),
        (
            repo("tests/data/reconfigured"),
            "/tmp/gen/reconf/frames",
            repo("tests/data/reconfigured/frames"),
        ),
        (
            repo("tests/data/hdf5/shared"),
            "/srv/beamline/shared/hdf5",
            repo("tests/data/hdf5/shared/hdf5"),
        ),
        (
            repo("tests/data/hdf5/generated"),
            "/mnt/detectors/other-beamline/h5",
            repo("tests/data/hdf5/generated/hdf5"),
        ),
    ]
}

/// The sample runs' files, one per run.
fn sample_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for (dir, _, _) in samples() {
        for entry in std::fs::read_dir(dir).expect("sample folder") {
            let p = entry.expect("entry").path();
            if p.extension().is_some_and(|x| x == "jsonl") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

fn uid_of(file: &Path) -> String {
    file.file_stem()
        .and_then(|s| s.to_str())
        .expect("uid")
        .to_string()
}

/// `beamdb ingest --beamtime ID` with every sample's root map, then `inputs`.
fn ingest(fx: &Fixture, beamtime: &str, inputs: &[&str]) -> (i32, String, String) {
    let maps: Vec<String> = samples()
        .iter()
        .map(|(_, root, real)| format!("{root}={}", real.display()))
        .collect();
    let mut args = vec!["ingest", "--beamtime", beamtime];
    for m in &maps {
        args.extend(["--root-map", m.as_str()]);
    }
    args.extend_from_slice(inputs);
    run(fx
        .beamdb(&args)
        .env("BEAMDB_DATA_ROOT", path(&fx.data_root())))
}

fn ingest_samples(fx: &Fixture, beamtime: &str) {
    let dirs: Vec<PathBuf> = samples().into_iter().map(|(d, _, _)| d).collect();
    let inputs: Vec<&str> = dirs.iter().map(|d| path(d)).collect();
    let (code, out, err) = ingest(fx, beamtime, &inputs);
    assert_eq!(code, 0, "{out}{err}");
}

fn export(fx: &Fixture, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["export"];
    all.extend_from_slice(args);
    run(fx
        .beamdb(&all)
        .env("BEAMDB_DATA_ROOT", path(&fx.data_root())))
}

/// Documents of suitcase-jsonl text, pages unpacked as event_model unpacks them.
fn documents(text: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let pair: (String, Map<String, Value>) = serde_json::from_str(line).expect(line);
        let (name, doc) = pair;
        let column = |key: &str, i: usize| doc[key][i].clone();
        let transpose = |key: &str, i: usize| -> Value {
            Value::Object(
                doc.get(key)
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                    .map(|(k, c)| (k.clone(), c[i].clone()))
                    .collect(),
            )
        };
        match name.as_str() {
            "event_page" => {
                for i in 0..doc["uid"].as_array().expect("uids").len() {
                    let mut e = doc.clone();
                    for k in ["uid", "seq_num", "time"] {
                        e.insert(k.into(), column(k, i));
                    }
                    for k in ["data", "timestamps", "filled"] {
                        e.insert(k.into(), transpose(k, i));
                    }
                    out.push(("event".to_string(), Value::Object(e)));
                }
            }
            "datum_page" => {
                for i in 0..doc["datum_id"].as_array().expect("ids").len() {
                    let mut d = doc.clone();
                    d.insert("datum_id".into(), column("datum_id", i));
                    d.insert("datum_kwargs".into(), transpose("datum_kwargs", i));
                    out.push(("datum".to_string(), Value::Object(d)));
                }
            }
            _ => out.push((name, Value::Object(doc))),
        }
    }
    out
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).expect("read")
}

#[test]
fn export_gives_back_every_sample_run_equal_to_its_documents() {
    let fx = Fixture::new();
    ingest_samples(&fx, "bt");
    let files = sample_files();
    assert!(files.len() >= 18, "{files:?}");
    for file in &files {
        let uid = uid_of(file);
        let (code, out, err) = export(&fx, &["--beamtime", "bt", &uid]);
        assert_eq!(code, 0, "{uid}: {err}");
        assert!(!err.contains("warning"), "{uid}: {err}");
        // Equal document by document, and in the order they came.
        assert_eq!(documents(&out), documents(&read(file)), "{uid}");
    }
}

#[test]
fn export_then_reingest_into_another_beamtime_is_the_same_whole_run() {
    let fx = Fixture::new();
    ingest_samples(&fx, "bt");
    let dir = fx.path().join("out");
    let (code, _, err) = export(&fx, &["--beamtime", "bt", "-o", path(&dir)]);
    assert_eq!(code, 0, "{err}");
    let files = sample_files();
    for file in &files {
        // suitcase-jsonl's name: the run uid.
        assert!(
            dir.join(format!("{}.jsonl", uid_of(file))).is_file(),
            "{file:?}"
        );
    }
    let (code, out, err) = ingest(&fx, "bt2", &[path(&dir)]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(fx
        .beamdb(&["verify", "--beamtime", "bt2"])
        .env("BEAMDB_DATA_ROOT", path(&fx.data_root())));
    assert_eq!(code, 0, "{out}{err}");
    let digests = |bt: &str| -> Vec<(String, String, i64)> {
        let conn = fx.open(&fx.beamtime_db(bt));
        let mut stmt = conn
            .prepare(
                "SELECT uid, content_digest, (SELECT count(*) FROM image_refs i JOIN streams s
                   ON s.uid = i.stream_uid WHERE s.run_uid = runs.uid) FROM runs ORDER BY uid",
            )
            .expect("runs");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("runs")
            .map(|r| r.expect("row"))
            .collect()
    };
    let (before, after) = (digests("bt"), digests("bt2"));
    assert_eq!(before.len(), files.len());
    for (b, a) in before.iter().zip(&after) {
        assert_eq!((&b.0, b.2), (&a.0, a.2), "same run, same frames");
        // The digest is over the documents as they came: the same unless pages were unpacked.
        let paged = files
            .iter()
            .find(|f| uid_of(f) == b.0)
            .is_some_and(|f| read(f).contains("\"event_page\""));
        if !paged {
            assert_eq!(b.1, a.1, "run {}", b.0);
        }
    }
    // Frames equal: every chunk of every run, byte for byte.
    for (uid, _, _) in &before {
        let chunks = |bt: &str| -> Vec<(String, Vec<u8>)> {
            let root = fx
                .data_root()
                .join(format!("beamtimes/{bt}/frames.zarr/runs/{uid}"));
            let mut found = Vec::new();
            let mut stack = vec![root.clone()];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).into_iter().flatten() {
                    let p = e.expect("entry").path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if p.file_name().is_some_and(|n| n != "zarr.json") {
                        let rel = p.strip_prefix(&root).expect("rel").display().to_string();
                        found.push((rel, std::fs::read(&p).expect("chunk")));
                    }
                }
            }
            found.sort();
            found
        };
        assert_eq!(chunks("bt"), chunks("bt2"), "frames of run {uid}");
    }
    // And the second export gives the same documents again.
    let dir2 = fx.path().join("out2");
    let (code, _, err) = export(&fx, &["--beamtime", "bt2", "-o", path(&dir2)]);
    assert_eq!(code, 0, "{err}");
    for file in &files {
        let name = format!("{}.jsonl", uid_of(file));
        assert_eq!(
            documents(&read(&dir2.join(&name))),
            documents(&read(file)),
            "{name}"
        );
    }
}

const COUNT_RUN: &str = "682a43b9-a2ae-49de-8435-1bc6638aee60";
const INLINE_RUN: &str = "98786b6e-de87-4ab0-9fb5-338308b26fd2";
const SCALAR_RUN: &str = "7fbdf1df-8554-4a45-8123-cc03d61f67fc";

fn bluesky(uid: &str) -> PathBuf {
    repo(&format!("tests/data/bluesky/{uid}.jsonl"))
}

#[test]
fn export_never_overwrites_a_file_without_force() {
    let fx = Fixture::new();
    let (code, _, err) = ingest(&fx, "bt", &[path(&repo("tests/data/bluesky"))]);
    assert_eq!(code, 0, "{err}");
    let dir = fx.path().join("out");
    let mine = fx.write(&format!("out/{COUNT_RUN}.jsonl"), "my notes\n");
    let (code, _, err) = export(&fx, &["--beamtime", "bt", "-o", path(&dir)]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("{} exists already", mine.display())) && err.contains("--force"),
        "{err}"
    );
    assert_eq!(read(&mine), "my notes\n");
    // Nothing was written, not even the other runs.
    assert_eq!(std::fs::read_dir(&dir).expect("dir").count(), 1);
    let (code, _, err) = export(
        &fx,
        &["--beamtime", "bt", COUNT_RUN, "-o", path(&dir), "--force"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        documents(&read(&mine)),
        documents(&read(&bluesky(COUNT_RUN)))
    );
}

#[test]
fn export_of_an_unknown_run_or_beamtime_names_it_and_the_nearest_match() {
    let fx = Fixture::new();
    let (code, _, err) = ingest(&fx, "bt-2026", &[path(&bluesky(COUNT_RUN))]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = export(&fx, &["--beamtime", "bt-2062"]);
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty());
    assert!(
        err.contains("no beamtime bt-2062") && err.contains("did you mean bt-2026?"),
        "{err}"
    );
    // A unique prefix of 8 characters or more names its run, as for `show`.
    let (code, out, err) = export(&fx, &["--beamtime", "bt-2026", "682a43b9"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(documents(&out), documents(&read(&bluesky(COUNT_RUN))));
    let (code, out, err) = export(&fx, &["--beamtime", "bt-2026", "682a43b8-a2ae"]);
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty());
    assert!(
        err.contains("no run 682a43b8-a2ae in beamtime bt-2026")
            && err.contains(&format!("did you mean {COUNT_RUN}")),
        "{err}"
    );
    let (code, _, err) = export(&fx, &["--beamtime", "bt-2026", "nothing-like-it"]);
    assert_eq!(code, 2, "{err}");
    assert!(!err.contains("did you mean"), "{err}");
    // A name that cannot be a beamtime is refused as such.
    let (code, _, err) = export(&fx, &["--beamtime", "../etc"]);
    assert_eq!(code, 2, "{err}");
}

/// The frame chunks of `uid` in beamtime `bt` (every file but zarr.json).
fn remove_chunks(fx: &Fixture, uid: &str) -> usize {
    let root = fx
        .data_root()
        .join(format!("beamtimes/bt/frames.zarr/runs/{uid}"));
    let mut removed = 0;
    let mut stack = vec![root];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n != "zarr.json") {
                std::fs::remove_file(&p).expect("remove");
                removed += 1;
            }
        }
    }
    removed
}

#[test]
fn export_with_frames_missing_exits_4_names_them_and_still_writes_the_documents() {
    let fx = Fixture::new();
    let inputs = [bluesky(COUNT_RUN), bluesky(INLINE_RUN)];
    let (code, _, err) = ingest(&fx, "bt", &[path(&inputs[0]), path(&inputs[1])]);
    assert_eq!(code, 0, "{err}");
    assert!(remove_chunks(&fx, COUNT_RUN) > 0);
    assert!(remove_chunks(&fx, INLINE_RUN) > 0);

    // Frames from files: the documents are whole (they point at the files), the store is not.
    let (code, out, err) = export(&fx, &["--beamtime", "bt", COUNT_RUN]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains(&format!(
            "warning: run {COUNT_RUN}: frames.zarr/runs/{COUNT_RUN}/primary/ccd: 5 frames missing or unreadable (indexes 0, 1, 2, 3, 4; frame missing (no chunk on disk))"
        )),
        "{err}"
    );
    assert_eq!(documents(&out), documents(&read(&inputs[0])));

    // Inline frames live only in the store: their events keep beamdb's note, said on stderr.
    let dir = fx.path().join("out");
    let (code, _, err) = export(&fx, &["--beamtime", "bt", INLINE_RUN, "-o", path(&dir)]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("its inline frame frames.zarr/runs/") && err.contains("cannot be read"),
        "{err}"
    );
    let got = documents(&read(&dir.join(format!("{INLINE_RUN}.jsonl"))));
    let want = documents(&read(&inputs[1]));
    assert_eq!(got.len(), want.len(), "every document is still written");
    let names = |d: &[(String, Value)]| d.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&got), names(&want));
}

#[test]
fn export_of_a_quarantined_run_exits_4_and_still_writes_its_documents() {
    let fx = Fixture::new();
    let inputs = [bluesky(COUNT_RUN), bluesky(SCALAR_RUN)];
    let (code, _, err) = ingest(&fx, "bt", &[path(&inputs[0]), path(&inputs[1])]);
    assert_eq!(code, 0, "{err}");
    remove_chunks(&fx, COUNT_RUN);
    let (code, out, err) = run(fx
        .beamdb(&["verify", "--beamtime", "bt", "--repair"])
        .env("BEAMDB_DATA_ROOT", path(&fx.data_root())));
    assert!(out.contains("quarantined run"), "{code} {out}{err}");
    assert_eq!(
        count(&fx.open(&fx.beamtime_db("bt")), "SELECT count(*) FROM runs"),
        1
    );
    let (code, out, err) = export(&fx, &["--beamtime", "bt", COUNT_RUN, SCALAR_RUN]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains(&format!(
            "warning: run {COUNT_RUN}: the run is not in beamtime bt: `verify --repair` quarantined it"
        )) && err.contains("/quarantine/")
            && err.contains("5 frames missing"),
        "{err}"
    );
    // Its documents, rebuilt from the quarantine file, then the other run's.
    let mut want = documents(&read(&inputs[0]));
    want.extend(documents(&read(&inputs[1])));
    assert_eq!(documents(&out), want);
}

#[test]
fn export_from_a_beamtime_stored_before_v2_rebuilds_what_it_can_and_exits_4() {
    let fx = Fixture::new();
    let inputs = [bluesky(COUNT_RUN), bluesky(SCALAR_RUN)];
    let (code, _, err) = ingest(&fx, "bt", &[path(&inputs[0]), path(&inputs[1])]);
    assert_eq!(code, 0, "{err}");
    // The beamtime as a beamdb before V2 left it: no kept tables, history at V1.
    {
        let conn = fx.open(&fx.beamtime_db("bt"));
        conn.execute_batch(
            "DROP TABLE kept_events; DROP TABLE kept_documents;
             DELETE FROM refinery_schema_history WHERE version = 2;",
        )
        .expect("back to V1");
    }
    let check = |fx: &Fixture| {
        let (code, out, err) = export(fx, &["--beamtime", "bt", COUNT_RUN, SCALAR_RUN]);
        assert_eq!(code, 4, "{err}");
        assert!(
            err.contains(&format!(
                "warning: run {COUNT_RUN}: the run was stored before beamdb kept every document"
            )) && err.contains("resource, datum, stream_resource and stream_datum documents"),
            "{err}"
        );
        let got = documents(&out);
        let mut want: Vec<(String, Value)> = documents(&read(&inputs[0]));
        want.extend(documents(&read(&inputs[1])));
        // What is rebuilt: start and stop whole; each event but its `filled`; each descriptor's
        // uid, name, time, data_keys and configuration.
        want.retain(|(n, _)| !matches!(n.as_str(), "resource" | "datum"));
        assert_eq!(got.len(), want.len(), "{out}");
        for ((gn, g), (wn, w)) in got.iter().zip(&want) {
            assert_eq!(gn, wn);
            match gn.as_str() {
                "start" | "stop" => assert_eq!(g, w),
                "event" => {
                    let mut w = w.clone();
                    w.as_object_mut().expect("event").remove("filled");
                    assert_eq!(g, &w);
                }
                "descriptor" => {
                    for k in [
                        "uid",
                        "name",
                        "time",
                        "data_keys",
                        "configuration",
                        "run_start",
                    ] {
                        assert_eq!(g[k], w[k], "{k}");
                    }
                }
                other => panic!("{other}"),
            }
        }
    };
    // Read as it is, then after `migrate` brings it to V2 (the runs stay as they were kept).
    check(&fx);
    let (code, out, err) = run(fx
        .beamdb(&["migrate"])
        .env("BEAMDB_DATA_ROOT", path(&fx.data_root())));
    assert_eq!(code, 0, "{out}{err}");
    let conn = fx.open(&fx.beamtime_db("bt"));
    assert_eq!(count(&conn, "SELECT count(*) FROM kept_documents"), 0);
    check(&fx);
    // --self-contained gives the old run resources and datums again (pointing at the store),
    // so that it re-ingests whole, frames and all, without the original files.
    let dir = fx.path().join("sc");
    let (code, _, err) = export(
        &fx,
        &[
            "--beamtime",
            "bt",
            "--self-contained",
            "-o",
            path(&dir),
            COUNT_RUN,
        ],
    );
    assert_eq!(code, 4, "{err}");
    let store_dir = fx
        .data_root()
        .join("beamtimes/bt/frames.zarr")
        .canonicalize()
        .expect("store");
    let map = format!("{0}={0}", store_dir.display());
    let (code, out, err) = run(fx
        .beamdb(&[
            "ingest",
            "--beamtime",
            "bt3",
            "--root-map",
            &map,
            path(&dir),
        ])
        .env("BEAMDB_DATA_ROOT", path(&fx.data_root())));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("5 frames"), "{out}");
    // A run ingested after the migration is kept whole.
    let hidden = repo("tests/data/hidden/2d496cb0-3d6e-4160-916e-02ad99f94aee.jsonl");
    let (code, _, err) = ingest(&fx, "bt", &[path(&hidden)]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = export(
        &fx,
        &["--beamtime", "bt", "2d496cb0-3d6e-4160-916e-02ad99f94aee"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(documents(&out), documents(&read(&hidden)));
}

#[test]
fn export_stops_quietly_when_stdout_closes() {
    let fx = Fixture::new();
    // A run long enough to fill the pipe many times over.
    let mut text = String::from(
        "[\"start\", {\"uid\": \"long-run\", \"time\": 1.0, \"plan_name\": \"count\"}]\n\
         [\"descriptor\", {\"uid\": \"d\", \"run_start\": \"long-run\", \"name\": \"primary\", \"time\": 1.0, \"data_keys\": {\"x\": {\"dtype\": \"number\", \"shape\": [], \"source\": \"s\"}}}]\n",
    );
    for i in 1..=20000 {
        text.push_str(&format!(
            "[\"event\", {{\"uid\": \"e{i}\", \"descriptor\": \"d\", \"seq_num\": {i}, \"time\": {i}.5, \"data\": {{\"x\": {i}}}, \"timestamps\": {{\"x\": {i}.5}}, \"filled\": {{}}}}]\n"
        ));
    }
    text.push_str("[\"stop\", {\"uid\": \"s\", \"run_start\": \"long-run\", \"time\": 9e5, \"exit_status\": \"success\", \"num_events\": {\"primary\": 20000}}]\n");
    let file = fx.write("long.jsonl", &text);
    let (code, _, err) = ingest(&fx, "bt", &[path(&file)]);
    assert_eq!(code, 0, "{err}");

    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin!("beamdb"))
        .current_dir(fx.path())
        .env_clear()
        .env("BEAMDB_DATA_ROOT", path(&fx.data_root()))
        .args(["export", "--beamtime", "bt"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("first line");
    assert!(first.starts_with("[\"start\""), "{first}");
    // The reader is gone (`| head -1`).
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Every events row of run `uid` in beamtime `bt`: (uid, seq_num, time, data, timestamps),
/// the JSON columns as values (key order aside).
fn event_rows(fx: &Fixture, bt: &str, uid: &str) -> Vec<(String, i64, f64, Value, Value)> {
    let conn = fx.open(&fx.beamtime_db(bt));
    let mut stmt = conn
        .prepare(
            "SELECT e.uid, e.seq_num, e.time, e.data, e.timestamps FROM events e
             JOIN streams s ON s.uid = e.stream_uid WHERE s.run_uid = ?1 ORDER BY e.uid",
        )
        .expect("events");
    let json = |t: Option<String>| -> Value {
        t.map_or(Value::Null, |t| serde_json::from_str(&t).expect("json"))
    };
    stmt.query_map([uid], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            json(r.get(3)?),
            json(r.get(4)?),
        ))
    })
    .expect("events")
    .map(|r| r.expect("row"))
    .collect()
}

/// Every chunk file of run `uid` in beamtime `bt`, with its bytes.
fn run_chunks(fx: &Fixture, bt: &str, uid: &str) -> Vec<(String, Vec<u8>)> {
    let root = fx
        .data_root()
        .join(format!("beamtimes/{bt}/frames.zarr/runs/{uid}"));
    let mut found = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten() {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n != "zarr.json") {
                let rel = p.strip_prefix(&root).expect("rel").display().to_string();
                found.push((rel, std::fs::read(&p).expect("chunk")));
            }
        }
    }
    found.sort();
    found
}

#[test]
fn export_self_contained_reingests_from_the_store_without_the_original_files() {
    let fx = Fixture::new();
    let hdf5 = |uid: &str| repo(&format!("tests/data/hdf5/shared/{uid}.jsonl"));
    // NPY_SEQ with events and with pages, AD_HDF5 with events and with pages, and the
    // stream_resource runs: a count, a scan with scalars delivered beside events, a fly scan.
    let inputs = [
        bluesky(COUNT_RUN),
        bluesky("4c25f8e6-90b0-4d43-a8f6-36e5dbd66ff9"),
        hdf5("85cd65f3-aab4-4de1-973c-0b3b646d5056"),
        hdf5("8e1b26b6-4f77-42ae-a85a-a69ec8225170"),
        hdf5("7f0a1c83-b144-4792-aebf-80d812d8193f"),
        hdf5("a8aaf3c9-26e5-4e21-acfa-98a2911ad338"),
        hdf5("b6a82a9e-1e51-41d3-a3af-d506fe46eb68"),
    ];
    let args: Vec<&str> = inputs.iter().map(|p| path(p)).collect();
    let (code, _, err) = ingest(&fx, "bt", &args);
    assert_eq!(code, 0, "{err}");
    let dir = fx.path().join("out");
    let (code, _, err) = export(
        &fx,
        &["--beamtime", "bt", "--self-contained", "-o", path(&dir)],
    );
    assert_eq!(code, 0, "{err}");
    let text = read(&dir.join(format!("{COUNT_RUN}.jsonl")));
    assert!(text.contains("\"spec\":\"BEAMDB_ZARR\""), "{text}");
    assert!(!text.contains("NPY_SEQ"), "{text}");

    // Only the store is mapped: none of the original frame files can be reached.
    let store_dir = fx
        .data_root()
        .join("beamtimes/bt/frames.zarr")
        .canonicalize()
        .expect("store");
    let map = format!("{0}={0}", store_dir.display());
    let (code, out, err) = run(fx
        .beamdb(&[
            "ingest",
            "--beamtime",
            "bt2",
            "--root-map",
            &map,
            path(&dir),
        ])
        .env("BEAMDB_DATA_ROOT", path(&fx.data_root())));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("landed {}", inputs.len())), "{out}");
    let (code, out, err) = run(fx
        .beamdb(&["verify", "--beamtime", "bt2"])
        .env("BEAMDB_DATA_ROOT", path(&fx.data_root())));
    assert_eq!(code, 0, "{out}{err}");
    for file in &inputs {
        let uid = uid_of(file);
        // The same frames, bit for bit, and the same rows for every event.
        let before = run_chunks(&fx, "bt", &uid);
        assert!(!before.is_empty(), "{uid}");
        assert_eq!(before, run_chunks(&fx, "bt2", &uid), "frames of {uid}");
        assert_eq!(
            event_rows(&fx, "bt", &uid),
            event_rows(&fx, "bt2", &uid),
            "{uid}"
        );
        // Where the run had resources and datums only, every other document is unchanged.
        if !read(file).contains("stream_resource") {
            let (code, out, err) = export(&fx, &["--beamtime", "bt2", &uid]);
            assert_eq!(code, 0, "{err}");
            let keep = |docs: Vec<(String, Value)>| -> Vec<(String, Value)> {
                docs.into_iter()
                    .filter(|(n, _)| n != "resource" && n != "datum")
                    .collect()
            };
            assert_eq!(keep(documents(&out)), keep(documents(&read(file))), "{uid}");
        }
    }
}

/// A run written to trip every rule of what a row gives back: integer times, a null
/// `configuration` and `timestamps`, keys beamdb has no column for, `filled` that differs
/// between events, a page without timestamps or `filled`, inline frames of integers stored
/// as float64 and of decimals stored as float32 (which do not read back as written).
const ODD_RUN: &str = r#"["start", {"uid": "odd-run", "time": 5, "plan_name": "count", "extra": {"nested": [1, 2.5, null, "x"]}}]
["descriptor", {"uid": "d1", "run_start": "odd-run", "name": "primary", "time": 6, "configuration": null, "hints": {"x": {"fields": ["x"]}}, "object_keys": {"x": ["x"]}, "data_keys": {"x": {"dtype": "number", "shape": [], "source": "s"}, "img": {"dtype": "array", "shape": [2, 3], "source": "s"}, "img32": {"dtype": "array", "shape": [2, 2], "dtype_numpy": "<f4", "source": "s"}}}]
["descriptor", {"uid": "d2", "run_start": "odd-run", "name": "baseline", "time": 6.5, "data_keys": {"t": {"dtype": "number", "shape": [], "source": "s"}}}]
["event", {"uid": "e1", "descriptor": "d2", "seq_num": 1, "time": 7, "data": {"t": 1}, "timestamps": {"t": 7.0}, "filled": {}}]
["event", {"uid": "e2", "descriptor": "d1", "seq_num": 1, "time": 7.5, "data": {"x": 1, "img": [[1, 2, 3], [4, 5, 6]], "img32": [[0.1, 0.2], [0.3, 0.4]]}, "timestamps": null, "filled": {}, "custom_key": "hello"}]
["event_page", {"descriptor": "d1", "uid": ["e3", "e4"], "seq_num": [2, 3], "time": [8.0, 9.0], "data": {"x": [2, 3], "img": [[[1.5, 2, 3], [4, 5, 6]], [[0.5, 0.25, 1e-3], [-1, -2.5, 3]]], "img32": [[[0.5, 0.25], [1, 2]], [[0.1, 0], [0, 0]]]}, "timestamps": {}}]
["event", {"uid": "e5", "descriptor": "d2", "seq_num": 2, "time": 10.0, "data": {"t": 2}, "timestamps": {"t": 10.0}}]
["stop", {"uid": "s", "run_start": "odd-run", "time": 11, "exit_status": "success", "num_events": {"primary": 3, "baseline": 2}}]
"#;

#[test]
fn export_gives_back_what_no_row_keeps_and_a_reingest_keeps_it_again() {
    let fx = Fixture::new();
    let file = fx.write("odd-run.jsonl", ODD_RUN);
    let (code, out, err) = ingest(&fx, "bt", &[path(&file)]);
    assert_eq!(code, 0, "{out}{err}");
    let conn = fx.open(&fx.beamtime_db("bt"));
    // Events whose rest differs from their descriptor's have their own row; no event data
    // is kept twice.
    assert!(count(&conn, "SELECT count(*) FROM kept_events") >= 2);
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM kept_events WHERE rest LIKE '%\"img\"%[[%'"
        ),
        0,
        "an inline float64 frame of integers is kept as a flag, not a copy"
    );
    let (code, out, err) = export(&fx, &["--beamtime", "bt", "odd-run"]);
    assert_eq!(code, 0, "{err}");
    let want = documents(ODD_RUN);
    assert_eq!(documents(&out), want);
    // Integers stay integers, the float32 frame its decimals as written.
    assert!(out.contains(r#""img":[[1,2,3],[4,5,6]]"#), "{out}");
    assert!(out.contains(r#""img32":[[0.1,0.2],[0.3,0.4]]"#), "{out}");

    let again = fx.write("again/odd-run.jsonl", &out);
    let (code, out, err) = ingest(&fx, "bt2", &[path(&again)]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = export(&fx, &["--beamtime", "bt2", "odd-run"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(documents(&out), want);
}

#[test]
fn export_after_ingest_replace_gives_the_replacing_documents_only() {
    let fx = Fixture::new();
    let (code, _, err) = ingest(&fx, "bt", &[path(&bluesky(COUNT_RUN))]);
    assert_eq!(code, 0, "{err}");
    let edited = fx.edited_copy(&bluesky(COUNT_RUN), "edited.jsonl", |t| {
        t.replace(
            "\"path_semantics\": \"posix\"",
            "\"path_semantics\": \"posix\", \"note\": \"moved\"",
        )
        .replace(
            "\"filled\": {\"ccd\": false}",
            "\"filled\": {\"ccd\": false}, \"tag\": 1",
        )
    });
    assert_ne!(read(&edited), read(&bluesky(COUNT_RUN)));
    let (code, out, err) = ingest(&fx, "bt", &["--replace", path(&edited)]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = export(&fx, &["--beamtime", "bt", COUNT_RUN]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(documents(&out), documents(&read(&edited)));
    let conn = fx.open(&fx.beamtime_db("bt"));
    assert_eq!(
        count(&conn, "SELECT count(*) FROM kept_documents"),
        7,
        "descriptor, resource, 5 datums: the first ingest's rows are gone"
    );
}

/// RunEngine writes `"filled": {}` on every event of a scalar scan; such events take ingest's
/// fast path (no `Value` tree), which must still keep `filled` (and a null `filled`, which
/// takes the `Value` path) for export, and land one `kept_events` row for none of them.
#[test]
fn export_gives_back_filled_of_events_read_on_the_fast_path() {
    let fx = Fixture::new();
    let edited = fx.edited_copy(&bluesky(SCALAR_RUN), "filled.jsonl", |t| {
        let mut n = 0;
        t.lines()
            .map(|l| {
                if !l.starts_with("[\"event\"") {
                    return l.to_string();
                }
                n += 1;
                let filled = if n == 3 { "null" } else { "{}" };
                format!(
                    "{}, \"filled\": {filled}}}]",
                    l.trim_end().trim_end_matches("}]")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    let (code, _, err) = ingest(&fx, "bt", &[path(&edited)]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = export(&fx, &["--beamtime", "bt", SCALAR_RUN]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(documents(&out), documents(&read(&edited)));
    assert!(
        out.contains("\"filled\":{}") && out.contains("\"filled\":null"),
        "{out}"
    );
    let conn = fx.open(&fx.beamtime_db("bt"));
    // Only the event with the null differs from its descriptor's rest.
    assert_eq!(count(&conn, "SELECT count(*) FROM kept_events"), 1);
}
