//! ingest: the shared runs, runs made with the generators, and every bad input the issue
//! names; each checks both the message/exit code and that nothing half-written remains.

use std::path::{Path, PathBuf};

use crate::common::{Fixture, count, counts, path, python, repo, run, store};

const SHARED_ROOT: &str = "/srv/beamline/shared/frames";
const HIDDEN_ROOT: &str = "/tmp/gen/hidden/frames";
const RECONF_ROOT: &str = "/tmp/gen/reconf/frames";
/// The shared run with NPY_SEQ frames in plain events and datums.
const COUNT_RUN: &str = "682a43b9-a2ae-49de-8435-1bc6638aee60";
/// The shared run with event_page and datum_page documents.
const PAGED_RUN: &str = "4c25f8e6-90b0-4d43-a8f6-36e5dbd66ff9";
/// The shared run with an inline 10×10 image.
const INLINE_RUN: &str = "98786b6e-de87-4ab0-9fb5-338308b26fd2";
const SCALAR_RUN: &str = "7fbdf1df-8554-4a45-8123-cc03d61f67fc";

fn shared_map() -> String {
    format!(
        "{SHARED_ROOT}={}",
        repo("tests/data/bluesky/frames").display()
    )
}

fn shared_run(uid: &str) -> PathBuf {
    repo(&format!("tests/data/bluesky/{uid}.jsonl"))
}

/// `beamdb ingest --beamtime bt --root-map (shared) ARGS`.
fn ingest(fx: &Fixture, args: &[&str]) -> (i32, String, String) {
    let map = shared_map();
    let mut all = vec!["ingest", "--beamtime", "bt", "--root-map", &map];
    all.extend_from_slice(args);
    run(&mut fx.beamdb(&all))
}

/// A copy of a shared run with `edit` applied to its text, in the fixture's folder.
fn edited(fx: &Fixture, uid: &str, name: &str, edit: impl Fn(String) -> String) -> PathBuf {
    fx.edited_copy(&shared_run(uid), name, edit)
}

fn run_group(fx: &Fixture, uid: &str) -> PathBuf {
    store(fx).join("runs").join(uid)
}

fn text(conn: &rusqlite::Connection, sql: &str) -> String {
    conn.query_row(sql, [], |r| r.get(0)).expect(sql)
}

#[test]
fn ingest_shared_runs_give_4_runs_22_events_11_image_refs() {
    let fx = Fixture::new();
    let dir = repo("tests/data/bluesky");
    let (code, out, err) = ingest(&fx, &[path(&dir)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("beamtime bt: created"), "{err}");
    assert_eq!(counts(&fx), (4, 22, 11));
    assert!(out.contains("landed 4, unchanged 0, rejected 0"), "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("landed ")).count(), 4);
    let conn = fx.open(&fx.beamtime_db("bt"));
    assert_eq!(count(&conn, "SELECT count(*) FROM samples"), 1);
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM runs r JOIN samples s ON s.id = r.sample_id
             WHERE s.name = 'PS-film' AND r.exit_status = 'success' AND r.researcher = 'A. Example'
               AND r.operator = 'sim' AND r.stop_metadata IS NOT NULL AND r.content_digest IS NOT NULL"
        ),
        4
    );
    assert_eq!(count(&conn, "SELECT sum(num_events) FROM runs"), 22);
    assert_eq!(count(&conn, "SELECT count(*) FROM streams"), 4);
    assert_eq!(
        count(&conn, "SELECT count(*) FROM pragma_foreign_key_check"),
        0
    );
    let generation: String = conn
        .query_row(
            "SELECT value FROM beamtime_meta WHERE key = 'generation'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(generation, "4");
    // Each frame row names an existing chunk file (all frames are written, even zero ones).
    let mut stmt = conn
        .prepare("SELECT zarr_group, index_in_stack, dtype, shape_x, shape_y FROM image_refs")
        .unwrap();
    let rows: Vec<(String, i64, String, i64, i64)> = stmt
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (group, index, dtype, x, y) in rows {
        let chunk = store(&fx).join(&group).join(format!("c/{index}/0/0"));
        assert!(chunk.is_file(), "{}", chunk.display());
        assert!(matches!(
            (dtype.as_str(), x, y),
            ("<u2", 64, 64) | ("<f8", 10, 10)
        ));
    }
    // A scalar-only run's group holds its xarray layout only: no frame, no image_ref.
    assert!(
        run_group(&fx, SCALAR_RUN)
            .join("primary/time/zarr.json")
            .is_file()
    );
}

fn check_with_zarr_python(fx: &Fixture, args: &[String]) {
    let out = std::process::Command::new(python())
        .arg(repo("tests/interop/check_frames.py"))
        .arg(fx.beamtime_db("bt"))
        .arg(store(fx))
        .args(args)
        .output()
        .expect("run the interop check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("checked "), "{stdout}");
}

/// Root maps of the runs made with the generators (tests/data/hidden, tests/data/reconfigured).
fn generated_maps() -> [String; 2] {
    [
        format!(
            "{HIDDEN_ROOT}={}",
            repo("tests/data/hidden/frames").display()
        ),
        format!(
            "{RECONF_ROOT}={}",
            repo("tests/data/reconfigured/frames").display()
        ),
    ]
}

/// Ingests the generated runs, after `before`.
fn ingest_generated(fx: &Fixture, before: &[&str]) -> (i32, String, String) {
    let [hidden, reconf] = generated_maps();
    let (h, r) = (repo("tests/data/hidden"), repo("tests/data/reconfigured"));
    let mut args = vec!["--root-map", &hidden, "--root-map", &reconf];
    args.extend_from_slice(before);
    args.extend([path(&h), path(&r)]);
    ingest(fx, &args)
}

#[test]
fn ingest_frames_read_back_bit_exact_through_zarr_python() {
    let fx = Fixture::new();
    let shared = repo("tests/data/bluesky");
    let hidden = repo("tests/data/hidden");
    let reconf = repo("tests/data/reconfigured");
    let (code, out, err) = ingest_generated(&fx, &[path(&shared)]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(counts(&fx).2, 11 + 15 + 5);
    let args: Vec<String> = [
        shared_map(),
        generated_maps()[0].clone(),
        generated_maps()[1].clone(),
    ]
    .into_iter()
    .chain([&shared, &hidden, &reconf].map(|p| p.display().to_string()))
    .collect();
    check_with_zarr_python(&fx, &args);
}

#[test]
fn ingest_every_compression_reads_back_bit_exact_through_zarr_python() {
    for (setting, label) in [
        (None, "blosc(cname=zstd,clevel=3,shuffle=bitshuffle)"),
        (
            Some("bitshuffle-lz4"),
            "blosc(cname=lz4,clevel=3,shuffle=bitshuffle)",
        ),
        (Some("zstd"), "zstd(level=3)"),
        (Some("none"), "none"),
    ] {
        let fx = Fixture::new();
        if let Some(codec) = setting {
            fx.write(
                "settings.toml",
                &format!("[ingest]\ncompression = \"{codec}\"\n"),
            );
        }
        let shared = repo("tests/data/bluesky");
        let (code, out, err) = ingest(&fx, &[path(&shared)]);
        assert_eq!(code, 0, "{setting:?}: {out}{err}");
        let conn = fx.open(&fx.beamtime_db("bt"));
        assert_eq!(
            text(
                &conn,
                "SELECT group_concat(DISTINCT compression_codec) FROM image_refs"
            ),
            label,
            "{setting:?}"
        );
        check_with_zarr_python(&fx, &[shared_map(), shared.display().to_string()]);
    }
}

#[test]
fn ingest_generated_runs_with_baseline_and_two_descriptors_of_one_stream() {
    let fx = Fixture::new();
    let (code, out, err) = ingest_generated(&fx, &[]);
    assert_eq!(code, 0, "{out}{err}");
    let conn = fx.open(&fx.beamtime_db("bt"));
    assert_eq!(count(&conn, "SELECT count(*) FROM runs"), 4);
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM streams WHERE name = 'baseline'"
        ),
        4
    );
    let reconf = "875f0766-ee45-4da8-80cc-11ca9f6cc882";
    assert_eq!(
        count(
            &conn,
            &format!(
                "SELECT count(*) FROM streams WHERE run_uid = '{reconf}' AND name = 'primary'"
            )
        ),
        2
    );
    // Both descriptors' frames share one array, indexed 0..5 in order.
    assert_eq!(
        text(
            &conn,
            &format!(
                "SELECT count(DISTINCT zarr_group) || ' ' || count(DISTINCT stream_uid) || ' '
                   || group_concat(index_in_stack, ',')
                 FROM (SELECT * FROM image_refs WHERE zarr_group LIKE 'runs/{reconf}/%'
                       ORDER BY seq_num)"
            )
        ),
        "1 2 0,1,2,3,4"
    );
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run_group(&fx, reconf).join("primary/waxs/zarr.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["shape"], serde_json::json!([5, 24, 32]));
    assert_eq!(meta["attributes"]["source"], "SIM:waxs");
    assert_eq!(
        meta["attributes"]["descriptor_uids"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // Samples: P3HT twice (one row, with the dict's details), PCBM, PS-film never.
    assert_eq!(count(&conn, "SELECT count(*) FROM samples"), 2);
    let formula: String = conn
        .query_row("SELECT formula FROM samples WHERE name = 'P3HT'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(formula, "C10H14S");
}

#[test]
fn ingest_event_pages_and_datum_pages_are_expanded() {
    let fx = Fixture::new();
    let (code, out, err) = ingest(&fx, &[path(&shared_run(PAGED_RUN))]);
    assert_eq!(code, 0, "{out}{err}");
    let conn = fx.open(&fx.beamtime_db("bt"));
    assert_eq!(
        text(
            &conn,
            "SELECT group_concat(e.seq_num || ':' || i.index_in_stack, ',')
             FROM (SELECT * FROM events ORDER BY seq_num) e JOIN image_refs i ON i.event_uid = e.uid"
        ),
        "1:0,2:1,3:2,4:3"
    );
    // Scalars stay in the JSON; the frame's value says where it went.
    let data: serde_json::Value =
        serde_json::from_str(&text(&conn, "SELECT data FROM events WHERE seq_num = 2")).unwrap();
    assert_eq!(data["motor"], 0.3333333333333333);
    assert_eq!(
        data["ccd"]["zarr_group"],
        format!("runs/{PAGED_RUN}/primary/ccd")
    );
    assert_eq!(data["ccd"]["index"], 1);
    assert_eq!(
        data["ccd"]["datum_id"],
        "a8ba1097-798b-4563-8c25-ccae6d01c2a0/1"
    );
}

#[test]
fn ingest_inline_arrays_go_to_zarr_as_float64() {
    let fx = Fixture::new();
    let (code, out, err) = ingest(&fx, &[path(&shared_run(INLINE_RUN))]);
    assert_eq!(code, 0, "{out}{err}");
    let conn = fx.open(&fx.beamtime_db("bt"));
    assert_eq!(
        text(
            &conn,
            "SELECT group_concat(field_name || ' ' || dtype || ' ' || frame_shape, ';') FROM image_refs"
        ),
        "img <f8 [10,10];img <f8 [10,10]"
    );
    let data = text(&conn, "SELECT data FROM events LIMIT 1");
    assert!(!data.contains("[["), "the pixels left the JSON: {data}");
    let meta =
        std::fs::read_to_string(run_group(&fx, INLINE_RUN).join("primary/img/zarr.json")).unwrap();
    assert!(meta.contains("\"float64\""), "{meta}");
}

#[test]
fn ingest_again_is_a_no_op_that_says_so() {
    let fx = Fixture::new();
    let dir = repo("tests/data/bluesky");
    assert_eq!(ingest(&fx, &[path(&dir)]).0, 0);
    let generation = |fx: &Fixture| {
        text(
            &fx.open(&fx.beamtime_db("bt")),
            "SELECT value FROM beamtime_meta WHERE key = 'generation'",
        )
    };
    let before = generation(&fx);
    let (code, out, err) = ingest(&fx, &[path(&dir)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("landed 0, unchanged 4, rejected 0"), "{out}");
    assert!(
        out.contains(&format!("unchanged {COUNT_RUN}: already stored")),
        "{out}"
    );
    assert_eq!(counts(&fx), (4, 22, 11));
    assert_eq!(generation(&fx), before);
}

#[test]
fn ingest_same_uid_with_different_documents_is_rejected_then_replace_replaces() {
    let fx = Fixture::new();
    assert_eq!(ingest(&fx, &[path(&shared_run(COUNT_RUN))]).0, 0);
    let changed = edited(&fx, COUNT_RUN, "changed.jsonl", |t| {
        t.replace("\"num_points\": 5", "\"num_points\": 6")
            .replace("\"index\": 4}", "\"index\": 0}")
    });
    let (code, out, err) = ingest(&fx, &[path(&changed)]);
    assert_eq!(code, 4, "{out}{err}");
    // Named by its start document, with what to do.
    assert!(
        out.contains(&format!(
            "rejected  {COUNT_RUN}: {}:1: run {COUNT_RUN} is already in this beamtime with different documents; to store these documents instead, run the same ingest with --replace",
            changed.display()
        )),
        "{out}"
    );
    let conn = fx.open(&fx.beamtime_db("bt"));
    assert!(text(&conn, "SELECT metadata FROM runs").contains("\"num_points\":5"));
    drop(conn);

    let (code, out, err) = ingest(&fx, &["--replace", path(&changed)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("replaced the stored run"), "{out}");
    assert_eq!(counts(&fx), (1, 5, 5));
    let conn = fx.open(&fx.beamtime_db("bt"));
    assert!(text(&conn, "SELECT metadata FROM runs").contains("\"num_points\":6"));
    // The staging area is empty again, and the fifth frame is now a copy of the first.
    let staging = fx.data_root().join("beamtimes/bt/frames.staging");
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
    let group = run_group(&fx, COUNT_RUN).join("primary/ccd");
    assert_eq!(
        std::fs::read(group.join("c/0/0/0")).unwrap(),
        std::fs::read(group.join("c/4/0/0")).unwrap()
    );
    // --replace of identical documents changes nothing.
    let (code, out, _) = ingest(&fx, &["--replace", path(&changed)]);
    assert_eq!(code, 0);
    assert!(out.contains("unchanged"), "{out}");
}

#[test]
fn ingest_without_root_map_rejects_only_the_runs_with_frames() {
    let fx = Fixture::new();
    let dir = repo("tests/data/bluesky");
    let (code, out, err) = run(&mut fx.beamdb(&["ingest", "--beamtime", "bt", path(&dir)]));
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        out.contains(&format!(
            "rejected  {COUNT_RUN}: {}:3: frames root {SHARED_ROOT} does not exist on this machine; say where it is now with --root-map {SHARED_ROOT}=",
            shared_run(COUNT_RUN).display()
        )),
        "{out}"
    );
    assert!(out.contains("landed 2, unchanged 0, rejected 2"), "{out}");
    let conn = fx.open(&fx.beamtime_db("bt"));
    assert_eq!(
        text(
            &conn,
            "SELECT group_concat(uid, ',') FROM (SELECT uid FROM runs ORDER BY uid)"
        ),
        format!("{SCALAR_RUN},{INLINE_RUN}")
    );
    assert_eq!(count(&conn, "SELECT count(*) FROM image_refs"), 2);
    assert!(!run_group(&fx, COUNT_RUN).exists());
    assert!(!run_group(&fx, PAGED_RUN).exists());
}

#[test]
fn ingest_malformed_line_names_file_and_line() {
    let fx = Fixture::new();
    let bad = edited(&fx, COUNT_RUN, "bad.jsonl", |t| {
        let mut lines: Vec<String> = t.lines().map(str::to_string).collect();
        lines[6].truncate(40);
        lines.join("\n") + "\n"
    });
    let (code, out, err) = ingest(&fx, &[path(&bad), path(&shared_run(SCALAR_RUN))]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        out.contains(&format!(
            "rejected  {COUNT_RUN}: {}:7: not valid JSON",
            bad.display()
        )),
        "{out}"
    );
    assert_eq!(counts(&fx), (1, 11, 0));
    assert!(!run_group(&fx, COUNT_RUN).exists());
}

#[test]
fn ingest_wrong_document_order_is_rejected_with_its_line() {
    let fx = Fixture::new();
    // The first event before its descriptor.
    let bad = edited(&fx, SCALAR_RUN, "order.jsonl", |t| {
        let mut lines: Vec<&str> = t.lines().collect();
        lines.swap(1, 2);
        lines.join("\n") + "\n"
    });
    let (code, out, _) = ingest(&fx, &[path(&bad)]);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains(&format!("{}:2: event refers to descriptor", bad.display()))
            && out.contains("documents missing or out of order"),
        "{out}"
    );
    // A document before any start.
    let stray = edited(&fx, SCALAR_RUN, "stray.jsonl", |t| {
        let mut lines: Vec<&str> = t.lines().collect();
        lines.swap(0, 1);
        lines.join("\n") + "\n"
    });
    let (code, out, _) = ingest(&fx, &[path(&stray)]);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains(&format!(
            "{}:1: descriptor document before any start document",
            stray.display()
        )),
        "{out}"
    );
    assert_eq!(counts(&fx), (0, 0, 0));
}

#[test]
fn ingest_duplicate_uids_and_missing_fields_are_rejected() {
    let fx = Fixture::new();
    let dup = edited(&fx, SCALAR_RUN, "dup.jsonl", |t| {
        t.replace(
            "762ca9b9-c629-4489-9599-c2ab05d48236",
            "97387c4a-217c-4dbf-ac84-675c63d38c6b",
        )
    });
    let (code, out, _) = ingest(&fx, &[path(&dup)]);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains(":4: event uid \"97387c4a-217c-4dbf-ac84-675c63d38c6b\" appears twice"),
        "{out}"
    );
    let missing = edited(&fx, SCALAR_RUN, "missing.jsonl", |t| {
        t.replacen("\"seq_num\": 1,", "", 1)
    });
    let (code, out, _) = ingest(&fx, &[path(&missing)]);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains(":3: event document: `seq_num` is missing or not an integer"),
        "{out}"
    );
    let no_datum = edited(&fx, COUNT_RUN, "nodatum.jsonl", |t| {
        t.replace(
            "\"data\": {\"ccd\": \"ad9fbb71-0183-461b-a0c4-5757f7a4340a/2\"}",
            "\"data\": {\"ccd\": \"nope/2\"}",
        )
    });
    let (code, out, _) = ingest(&fx, &[path(&no_datum)]);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains(":9: event refers to datum \"nope/2\""),
        "{out}"
    );
    assert_eq!(counts(&fx), (0, 0, 0));
    assert!(!run_group(&fx, COUNT_RUN).exists());
}

#[test]
fn ingest_frame_of_the_wrong_shape_is_rejected_and_removed() {
    let fx = Fixture::new();
    let bad = edited(&fx, COUNT_RUN, "shape.jsonl", |t| {
        t.replace("[64, 64]", "[32, 128]")
    });
    let (code, out, _) = ingest(&fx, &[path(&bad), path(&shared_run(INLINE_RUN))]);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains("ccd: ")
            && out.contains(
                "df4fa8_0.npy: frame has shape [64, 64], but the descriptor says [32, 128]"
            ),
        "{out}"
    );
    assert_eq!(counts(&fx), (1, 2, 2));
    assert!(!run_group(&fx, COUNT_RUN).exists());
}

#[test]
fn ingest_path_escaping_its_root_is_refused() {
    let fx = Fixture::new();
    // A real .npy file outside the mapped root, reached by `..`.
    let outside = fx.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    for i in 0..5 {
        std::fs::copy(
            repo(&format!("tests/data/bluesky/frames/df4fa8_{i}.npy")),
            outside.join(format!("df4fa8_{i}.npy")),
        )
        .unwrap();
    }
    let frames = fx.path().join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    let bad = edited(&fx, COUNT_RUN, "escape.jsonl", |t| {
        t.replace(
            "\"resource_path\": \"df4fa8\"",
            "\"resource_path\": \"../outside/df4fa8\"",
        )
    });
    let map = format!("{SHARED_ROOT}={}", frames.display());
    let (code, out, _) =
        run(&mut fx.beamdb(&["ingest", "--beamtime", "bt", "--root-map", &map, path(&bad)]));
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains("outside its root") && out.contains("refusing to read it"),
        "{out}"
    );
    assert_eq!(counts(&fx), (0, 0, 0));
    assert!(!run_group(&fx, COUNT_RUN).exists());
}

#[test]
fn ingest_unsafe_names_are_refused_before_anything_is_written() {
    let fx = Fixture::new();
    let cases = [
        (
            "uid.jsonl",
            INLINE_RUN,
            "\"uid\": \"98786b6e-de87-4ab0-9fb5-338308b26fd2\", \"time\"",
            "\"uid\": \"../../evil\", \"time\"",
            "run uid \"../../evil\" is not a safe name",
        ),
        (
            "stream.jsonl",
            INLINE_RUN,
            "\"name\": \"primary\"",
            "\"name\": \"a/b\"",
            "stream name \"a/b\" is not a safe name",
        ),
        (
            "field.jsonl",
            INLINE_RUN,
            "\"img\"",
            "\"..\"",
            "field name \"..\" is not a safe name",
        ),
    ];
    for (name, uid, from, to, message) in cases {
        let bad = edited(&fx, uid, name, |t| t.replace(from, to));
        let (code, out, _) = ingest(&fx, &[path(&bad)]);
        assert_eq!(code, 4, "{name}: {out}");
        assert!(out.contains(message), "{name}: {out}");
    }
    assert_eq!(counts(&fx), (0, 0, 0));
    // Nothing landed, so the ingests that created the beamtime removed it again.
    assert!(!store(&fx).exists(), "no frame store left behind");
    assert!(!fx.path().join("evil").exists());
}

#[test]
fn ingest_unsupported_spec_rejects_only_that_run() {
    let fx = Fixture::new();
    let bad = edited(&fx, COUNT_RUN, "tiff.jsonl", |t| {
        t.replace("NPY_SEQ", "AD_SPE")
    });
    let (code, out, _) = ingest(&fx, &[path(&bad), path(&shared_run(SCALAR_RUN))]);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains(":3: resource spec \"AD_SPE\" is not supported yet"),
        "{out}"
    );
    assert_eq!(counts(&fx), (1, 11, 0));
}

#[test]
fn ingest_from_stdin_commits_each_run_at_its_stop() {
    let fx = Fixture::new();
    let mut input = std::fs::read_to_string(shared_run(COUNT_RUN)).unwrap();
    input.push_str(&std::fs::read_to_string(shared_run(SCALAR_RUN)).unwrap());
    let map = shared_map();
    let (code, out, err) = run(fx
        .beamdb(&["ingest", "--beamtime", "bt", "--root-map", &map, "-"])
        .write_stdin(input));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(counts(&fx), (2, 16, 5));
}

#[test]
fn ingest_run_without_stop_is_stored_incomplete_with_a_warning() {
    let fx = Fixture::new();
    let cut = edited(&fx, COUNT_RUN, "cut.jsonl", |t| {
        let lines: Vec<&str> = t.lines().collect();
        lines[..lines.len() - 1].join("\n") + "\n"
    });
    let (code, out, err) = ingest(&fx, &[path(&cut)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains(&format!("run {COUNT_RUN}: no stop document")),
        "{err}"
    );
    assert!(out.contains("incomplete: no stop"), "{out}");
    let conn = fx.open(&fx.beamtime_db("bt"));
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM runs WHERE exit_status IS NULL AND time_stop IS NULL AND num_events = 5"
        ),
        1
    );
    assert_eq!(count(&conn, "SELECT count(*) FROM image_refs"), 5);
}

#[test]
fn ingest_removes_the_group_left_by_a_killed_ingest() {
    let fx = Fixture::new();
    // What a killed ingest leaves: frames in the run's group, no committed run.
    assert_eq!(run(&mut fx.beamdb(&["initdb", "--beamtime", "bt"])).0, 0);
    let leftover = store(&fx)
        .join("runs")
        .join(COUNT_RUN)
        .join("primary/ccd/c/7/0");
    std::fs::create_dir_all(&leftover).unwrap();
    std::fs::write(leftover.join("0"), b"half a frame").unwrap();
    let (code, out, err) = ingest(&fx, &[path(&shared_run(COUNT_RUN))]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("removed frames left by an interrupted ingest"),
        "{out}"
    );
    assert!(!leftover.exists());
    assert!(
        run_group(&fx, COUNT_RUN)
            .join("primary/ccd/c/4/0/0")
            .is_file()
    );
}

#[test]
fn ingest_keeps_all_zero_frames_as_chunks() {
    let fx = Fixture::new();
    let frames = fx.path().join("zeros");
    std::fs::create_dir_all(&frames).unwrap();
    for i in 0..5 {
        let mut bytes =
            std::fs::read(repo(&format!("tests/data/bluesky/frames/df4fa8_{i}.npy"))).unwrap();
        let n = bytes.len();
        bytes[n - 64 * 64 * 2..].fill(0);
        std::fs::write(frames.join(format!("df4fa8_{i}.npy")), bytes).unwrap();
    }
    let map = format!("{SHARED_ROOT}={}", frames.display());
    let (code, out, _) = run(&mut fx.beamdb(&[
        "ingest",
        "--beamtime",
        "bt",
        "--root-map",
        &map,
        path(&shared_run(COUNT_RUN)),
    ]));
    assert_eq!(code, 0, "{out}");
    for i in 0..5 {
        assert!(
            run_group(&fx, COUNT_RUN)
                .join(format!("primary/ccd/c/{i}/0/0"))
                .is_file()
        );
    }
}

#[test]
fn ingest_missing_frame_and_wrong_dtype_and_bad_stop_are_rejected() {
    let fx = Fixture::new();
    let frames = fx.path().join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    for i in 0..4 {
        std::fs::copy(
            repo(&format!("tests/data/bluesky/frames/df4fa8_{i}.npy")),
            frames.join(format!("df4fa8_{i}.npy")),
        )
        .unwrap();
    }
    let map = format!("{SHARED_ROOT}={}", frames.display());
    let ingest_here = |file: &Path| {
        run(&mut fx.beamdb(&["ingest", "--beamtime", "bt", "--root-map", &map, path(file)]))
    };
    let whole = shared_run(COUNT_RUN);
    let (code, out, _) = ingest_here(&whole);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("df4fa8_4.npy: frame file is missing"), "{out}");
    let dtype = edited(&fx, COUNT_RUN, "dtype.jsonl", |t| {
        t.replace(
            "\"external\": \"FILESTORE\", \"object_name\"",
            "\"external\": \"FILESTORE\", \"dtype_numpy\": \"<f4\", \"object_name\"",
        )
    });
    let (code, out, _) = ingest_here(&dtype);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains("frame has dtype <u2, but <f4 was expected"),
        "{out}"
    );
    let stop = edited(&fx, SCALAR_RUN, "stop.jsonl", |t| {
        t.replace("\"exit_status\": \"success\"", "\"exit_status\": \"ok\"")
    });
    let (code, out, _) = ingest_here(&stop);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains(":14: exit_status: \"ok\" is not success, abort or fail"),
        "{out}"
    );
    assert_eq!(counts(&fx), (0, 0, 0));
    // Nothing landed, so the ingests that created the beamtime removed it again.
    assert!(!store(&fx).exists(), "no frame store left behind");
}

#[test]
fn ingest_usage_errors_exit_2_before_anything_is_written() {
    let fx = Fixture::new();
    let (code, _, err) = run(&mut fx.beamdb(&["ingest", "--beamtime", "bt", "nope.jsonl"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nope.jsonl: no such file or folder"), "{err}");
    let file = shared_run(SCALAR_RUN);
    let (code, _, err) = run(&mut fx.beamdb(&[
        "ingest",
        "--beamtime",
        "bt",
        "--root-map",
        "nonsense",
        path(&file),
    ]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--root-map \"nonsense\": expected OLD=NEW"),
        "{err}"
    );
    let (code, _, err) = run(&mut fx.beamdb(&["ingest", "--beamtime", "../x", path(&file)]));
    assert_eq!(code, 2, "{err}");
    assert!(!fx.data_root().exists());
}

/// An ingest whose beamtime cannot be created (here a migration that is not SQL) leaves no
/// `frames.zarr` behind: the store is created with the database, under the migrate lock,
/// never before it.
#[test]
fn ingest_whose_beamtime_cannot_be_created_leaves_no_frame_store() {
    let fx = Fixture::new();
    for kind in ["beamtime", "index"] {
        for entry in std::fs::read_dir(repo(&format!("migrations/{kind}"))).unwrap() {
            let entry = entry.unwrap();
            let text = std::fs::read_to_string(entry.path()).unwrap();
            let name = entry.file_name().to_string_lossy().to_string();
            fx.write(&format!("m/{kind}/{name}"), &text);
        }
    }
    fx.write("m/beamtime/V9__broken.sql", "THIS IS NOT SQL;\n");
    fx.write("settings.toml", "[schema]\nmigrations_dir = \"m\"\n");
    let map = crate::common::shared_map();
    let (code, out, err) = run(&mut fx.beamdb(&[
        "ingest",
        "--beamtime",
        "bt",
        "--root-map",
        &map,
        path(&repo(
            "tests/data/bluesky/7fbdf1df-8554-4a45-8123-cc03d61f67fc.jsonl",
        )),
    ]));
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        !fx.path()
            .join("beamdb-data/beamtimes/bt/frames.zarr")
            .exists(),
        "{out}{err}"
    );
}
