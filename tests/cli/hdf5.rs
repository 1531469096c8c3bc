//! ingest of HDF5 frames: the five shared runs (AD_HDF5 with events and with pages,
//! stream_resource step scans and a fly scan), five runs generated under another root, and
//! every bad case the issue names; each bad case also checks that nothing half-written remains.

use std::path::PathBuf;

use crate::common::{Fixture, count, counts, path, python, repo, run, store};

const SHARED_ROOT: &str = "/srv/beamline/shared/hdf5";
const GENERATED_ROOT: &str = "/mnt/detectors/other-beamline/h5";
/// AD_HDF5, frame_per_point 1, plain events and datums.
const AD_COUNT: &str = "85cd65f3-aab4-4de1-973c-0b3b646d5056";
/// AD_HDF5, frame_per_point 2, event_page and datum_page.
const AD_PAGES: &str = "8e1b26b6-4f77-42ae-a85a-a69ec8225170";
/// stream_resource step scan: events carry no key for the frames.
const SR_SCAN: &str = "a8aaf3c9-26e5-4e21-acfa-98a2911ad338";
/// stream_resource fly scan: stream_datum and no events at all.
const SR_FLY: &str = "b6a82a9e-1e51-41d3-a3af-d506fe46eb68";
const FLY_DESCRIPTOR: &str = "d75ff3fc-1c5a-4d80-905e-e91bed7c31d4";

fn shared_dir() -> PathBuf {
    repo("tests/data/hdf5/shared")
}

fn generated_dir() -> PathBuf {
    repo("tests/data/hdf5/generated")
}

fn shared_map() -> String {
    format!("{SHARED_ROOT}={}", shared_dir().join("hdf5").display())
}

fn generated_map() -> String {
    format!(
        "{GENERATED_ROOT}={}",
        generated_dir().join("hdf5").display()
    )
}

fn shared_run(uid: &str) -> PathBuf {
    shared_dir().join(format!("{uid}.jsonl"))
}

/// `beamdb ingest --beamtime bt --root-map (shared) --root-map (generated) ARGS`.
fn ingest(fx: &Fixture, args: &[&str]) -> (i32, String, String) {
    let (shared, generated) = (shared_map(), generated_map());
    let mut all = vec![
        "ingest",
        "--beamtime",
        "bt",
        "--root-map",
        &shared,
        "--root-map",
        &generated,
    ];
    all.extend_from_slice(args);
    run(&mut fx.beamdb(&all))
}

/// A copy of a shared run with `edit` applied to its text, in the fixture's folder.
fn edited(fx: &Fixture, uid: &str, name: &str, edit: impl Fn(String) -> String) -> PathBuf {
    fx.edited_copy(&shared_run(uid), name, edit)
}

fn text(fx: &Fixture, sql: &str) -> String {
    fx.open(&fx.beamtime_db("bt"))
        .query_row(sql, [], |r| r.get(0))
        .expect(sql)
}

/// Nothing of a rejected run remains: no rows, no group in the store.
fn nothing_landed(fx: &Fixture, uid: &str) {
    assert_eq!(counts(fx), (0, 0, 0));
    assert!(!store(fx).join("runs").join(uid).exists());
}

#[test]
fn ingest_hdf5_shared_runs_land_with_every_row() {
    let fx = Fixture::new();
    let (code, out, err) = ingest(&fx, &[path(&shared_dir())]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("landed 5, unchanged 0, rejected 0"), "{out}");
    // Events: 5 + 4 + 4 + 5 + 0; frames: 5 + 4 + 4 + 5 + 3, and the fly scan's 3 sums.
    assert_eq!(counts(&fx), (5, 18, 24));
    let conn = fx.open(&fx.beamtime_db("bt"));
    assert_eq!(count(&conn, "SELECT count(*) FROM streams"), 5);
    assert_eq!(
        count(&conn, "SELECT count(*) FROM pragma_foreign_key_check"),
        0
    );
    let per_field = text(
        &fx,
        "SELECT group_concat(line, ';') FROM (
           SELECT field_name || ' ' || count(*) || ' ' || min(frame_shape) || ' ' || dtype AS line
           FROM image_refs GROUP BY zarr_group ORDER BY zarr_group)",
    );
    assert_eq!(
        per_field,
        "blob 4 [1,64,64] |u1;ccd_image 5 [1,64,64] <u2;saxs_image 4 [2,32,32] <u2;\
         blob 5 [1,32,32] |u1;blobfly 3 [2,32,32] |u1;blobfly-sum 3 [2] <i8"
    );
    // Every frame of a run with events belongs to its event of the same seq_num.
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM image_refs i JOIN events e ON e.uid = i.event_uid
             WHERE e.seq_num = i.seq_num AND e.stream_uid = i.stream_uid"
        ),
        18
    );
    // Each image_refs row names an existing chunk.
    let mut stmt = conn
        .prepare("SELECT zarr_group, index_in_stack, frame_shape FROM image_refs")
        .unwrap();
    let rows: Vec<(String, i64, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (group, index, shape) in rows {
        let dims = serde_json::from_str::<Vec<u64>>(&shape).unwrap().len();
        let key = std::iter::once(index.to_string())
            .chain(std::iter::repeat_n("0".to_string(), dims))
            .collect::<Vec<_>>()
            .join("/");
        let chunk = store(&fx).join(&group).join("c").join(key);
        assert!(chunk.is_file(), "{}", chunk.display());
    }
}

#[test]
fn ingest_hdf5_fly_scan_frames_land_without_events() {
    let fx = Fixture::new();
    let (code, out, err) = ingest(&fx, &[path(&shared_run(SR_FLY))]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("landed    {SR_FLY}: 0 events, 6 frames")),
        "{out}"
    );
    assert_eq!(counts(&fx), (1, 0, 6));
    assert_eq!(
        text(
            &fx,
            "SELECT group_concat(line, ';') FROM (
               SELECT field_name || ' ' || seq_num || ' ' || index_in_stack || ' '
                 || coalesce(event_uid, 'NULL') || ' ' || stream_uid AS line
               FROM image_refs ORDER BY field_name, seq_num)"
        ),
        [
            "blobfly 1 0",
            "blobfly 2 1",
            "blobfly 3 2",
            "blobfly-sum 1 0",
            "blobfly-sum 2 1",
            "blobfly-sum 3 2",
        ]
        .map(|l| format!("{l} NULL {FLY_DESCRIPTOR}"))
        .join(";")
    );
    // The stop says 3 events in primary: that is what the run counts.
    assert_eq!(text(&fx, "SELECT num_events || '' FROM runs"), "3");
    let group = store(&fx).join("runs").join(SR_FLY).join("primary");
    let meta = |field: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(group.join(field).join("zarr.json")).unwrap())
            .unwrap()
    };
    assert_eq!(meta("blobfly")["shape"], serde_json::json!([3, 2, 32, 32]));
    assert_eq!(meta("blobfly-sum")["shape"], serde_json::json!([3, 2]));
    assert_eq!(meta("blobfly-sum")["data_type"], "int64");
}

#[test]
fn ingest_hdf5_stream_frames_and_sums_join_events_without_keys() {
    let fx = Fixture::new();
    let (code, out, err) = ingest(&fx, &[path(&shared_run(SR_SCAN))]);
    assert_eq!(code, 0, "{out}{err}");
    // The sum is a value, not a frame: only the blob frames have image_refs rows.
    assert_eq!(counts(&fx), (1, 5, 5));
    let data: serde_json::Value =
        serde_json::from_str(&text(&fx, "SELECT data FROM events WHERE seq_num = 3")).unwrap();
    assert_eq!(data["stage-x"], 0.0);
    assert_eq!(
        data["blob"]["zarr_group"],
        format!("runs/{SR_SCAN}/primary/blob")
    );
    assert_eq!(data["blob"]["index"], 2);
    assert_eq!(
        data["blob"]["stream_datum"],
        "e636aee9-0b2d-4ef1-94e0-4d211f763732/2"
    );
    // As the descriptor says: shape [1], int64, the file's value.
    assert_eq!(data["blob-sum"], serde_json::json!([40412]));
    // Not a stack: the events carry the sums, and the layout's column holds them along time.
    assert_eq!(
        text(
            &fx,
            "SELECT count(*) || '' FROM image_refs WHERE field_name = 'blob-sum'"
        ),
        "0"
    );
    let column: serde_json::Value = serde_json::from_slice(
        &std::fs::read(store(&fx).join(format!("runs/{SR_SCAN}/primary/blob-sum/zarr.json")))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(column["dimension_names"][0], "time");
}

#[test]
fn ingest_hdf5_pages_and_frame_per_point_two() {
    let fx = Fixture::new();
    let (code, out, err) = ingest(&fx, &[path(&shared_run(AD_PAGES))]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        text(
            &fx,
            "SELECT group_concat(e.seq_num || ':' || i.index_in_stack || ':' || i.frame_shape, ',')
             FROM (SELECT * FROM events ORDER BY seq_num) e JOIN image_refs i ON i.event_uid = e.uid"
        ),
        "1:0:[2,32,32],2:1:[2,32,32],3:2:[2,32,32],4:3:[2,32,32]"
    );
    let data: serde_json::Value =
        serde_json::from_str(&text(&fx, "SELECT data FROM events WHERE seq_num = 2")).unwrap();
    assert_eq!(
        data["saxs_image"]["datum_id"],
        "4daf9785-330f-4a8c-af56-5a54d36036fa/1"
    );
    assert_eq!(data["motor"], -0.33333333333333337);
}

#[test]
fn ingest_hdf5_frames_read_back_bit_exact_through_zarr_python() {
    let fx = Fixture::new();
    let (shared, generated) = (shared_dir(), generated_dir());
    let (code, out, err) = ingest(&fx, &[path(&shared), path(&generated)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("landed 10, unchanged 0, rejected 0"), "{out}");
    assert_eq!(counts(&fx), (10, 36, 48));
    let out = std::process::Command::new(python())
        .arg(repo("tests/interop/check_frames.py"))
        .arg(fx.beamtime_db("bt"))
        .arg(store(&fx))
        .args([shared_map(), generated_map()])
        .args([path(&shared), path(&generated)])
        .output()
        .expect("run the interop check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every frame, and the 9 + 9 sums that went to their events.
    assert_eq!(stdout.trim(), "checked 48 frames and 18 values");
}

#[test]
fn ingest_hdf5_again_is_a_no_op() {
    let fx = Fixture::new();
    assert_eq!(ingest(&fx, &[path(&shared_dir())]).0, 0);
    let (code, out, _) = ingest(&fx, &[path(&shared_dir())]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("landed 0, unchanged 5, rejected 0"), "{out}");
    assert_eq!(counts(&fx), (5, 18, 24));
}

#[test]
fn ingest_hdf5_without_root_map_says_which_root_to_map() {
    let fx = Fixture::new();
    let (code, out, _) =
        run(&mut fx.beamdb(&["ingest", "--beamtime", "bt", path(&shared_run(SR_FLY))]));
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains(&format!(
            "{}:3: frames root {SHARED_ROOT}/blobfly does not exist on this machine; say where it is now with --root-map",
            shared_run(SR_FLY).display()
        )),
        "{out}"
    );
    nothing_landed(&fx, SR_FLY);
}

/// Each bad case: the edited run is rejected with `message` (after its `file:line`), exit 4,
/// and leaves nothing behind.
fn rejected(
    fx: &Fixture,
    uid: &str,
    name: &str,
    line: u32,
    message: &str,
    edit: &dyn Fn(String) -> String,
) {
    let bad = edited(fx, uid, name, edit);
    let (code, out, _) = ingest(fx, &[path(&bad)]);
    assert_eq!(code, 4, "{name}: {out}");
    let want = format!("rejected  {uid}: {}:{line}: ", bad.display());
    assert!(
        out.contains(&want) && out.contains(message),
        "{name}: want {want}…{message} in {out}"
    );
    nothing_landed(fx, uid);
}

#[test]
fn ingest_hdf5_missing_file_and_missing_dataset_are_rejected_at_their_resource() {
    let fx = Fixture::new();
    rejected(
        &fx,
        AD_COUNT,
        "nofile.jsonl",
        3,
        "2a1b92cf-80b4-4c07-b63c_000009.h5: frame file is missing",
        &|t| t.replace("_000000.h5", "_000009.h5"),
    );
    rejected(
        &fx,
        SR_FLY,
        "nofile2.jsonl",
        3,
        "blobfly_00007.h5: frame file is missing",
        &|t| {
            t.replacen(
                "blobfly_00000.h5\", \"parameters\"",
                "blobfly_00007.h5\", \"parameters\"",
                1,
            )
        },
    );
    rejected(
        &fx,
        SR_SCAN,
        "nodataset.jsonl",
        4,
        "blob_00001.h5: has no dataset /entry/nope",
        &|t| {
            t.replace(
                "\"dataset\": \"/entry/sum\"",
                "\"dataset\": \"/entry/nope\"",
            )
        },
    );
    // A file that is there but is not HDF5.
    let junk = fx.path().join("junk");
    std::fs::create_dir_all(junk.join("blobfly")).unwrap();
    std::fs::write(junk.join("blobfly/blobfly_00000.h5"), "not hdf5").unwrap();
    let map = format!("{SHARED_ROOT}={}", junk.display());
    let (code, out, _) = run(&mut fx.beamdb(&[
        "ingest",
        "--beamtime",
        "bt",
        "--root-map",
        &map,
        path(&shared_run(SR_FLY)),
    ]));
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains(":3: ") && out.contains("blobfly_00000.h5: cannot open it as HDF5"),
        "{out}"
    );
    nothing_landed(&fx, SR_FLY);
}

#[test]
fn ingest_hdf5_index_out_of_range_is_rejected() {
    let fx = Fixture::new();
    // The fifth point of five, moved past the end.
    rejected(
        &fx,
        AD_COUNT,
        "range.jsonl",
        13,
        "/entry/data/data: rows [40, 41) are asked for, but the dataset has 5 rows",
        &|t| t.replace("\"point_number\": 4}", "\"point_number\": 40}"),
    );
    // The fly scan's one stream_datum asks for 4 indices of a file that has 3.
    rejected(
        &fx,
        SR_FLY,
        "range2.jsonl",
        5,
        "rows [6, 8) are asked for, but the dataset has 6 rows",
        &|t| {
            t.replacen("\"seq_nums\": {\"start\": 1, \"stop\": 4}, \"indices\": {\"start\": 0, \"stop\": 3}", "\"seq_nums\": {\"start\": 1, \"stop\": 5}, \"indices\": {\"start\": 0, \"stop\": 4}", 1)
        },
    );
}

#[test]
fn ingest_hdf5_shape_or_dtype_unlike_the_descriptor_is_rejected() {
    let fx = Fixture::new();
    rejected(
        &fx,
        AD_COUNT,
        "shape.jsonl",
        5,
        "frame has shape [1, 64, 64], but the descriptor says [1, 32, 128]",
        &|t| t.replace("\"shape\": [1, 64, 64]", "\"shape\": [1, 32, 128]"),
    );
    rejected(
        &fx,
        AD_COUNT,
        "dtype.jsonl",
        5,
        "frame has dtype <u2, but <f4 was expected",
        &|t| t.replace("\"dtype_numpy\": \"<u2\"", "\"dtype_numpy\": \"<f4\""),
    );
    // frame_per_point 2 where the descriptor says 1 frame per point.
    rejected(
        &fx,
        AD_COUNT,
        "fpp.jsonl",
        5,
        "frame has shape [2, 64, 64], but the descriptor says [1, 64, 64]",
        &|t| t.replace("\"frame_per_point\": 1", "\"frame_per_point\": 2"),
    );
    // The sums are int64; a descriptor that says float64 is refused at the stream_datum.
    rejected(
        &fx,
        SR_SCAN,
        "sumdtype.jsonl",
        6,
        "/entry/sum: frame has dtype <i8, but <f8 was expected",
        &|t| {
            t.replace(
                "\"shape\": [1], \"dtype\": \"number\", \"dtype_numpy\": \"<i8\"",
                "\"shape\": [1], \"dtype\": \"number\", \"dtype_numpy\": \"<f8\"",
            )
        },
    );
}

#[test]
fn ingest_hdf5_bad_stream_documents_are_rejected() {
    let fx = Fixture::new();
    rejected(
        &fx,
        SR_FLY,
        "mimetype.jsonl",
        3,
        "stream_resource mimetype \"image/tiff\" is not supported yet (supported: application/x-hdf5, application/x-beamdb-zarr)",
        &|t| t.replacen("application/x-hdf5", "image/tiff", 1),
    );
    rejected(
        &fx,
        SR_FLY,
        "uri.jsonl",
        3,
        "stream_resource uri \"file://otherhost/srv",
        &|t| {
            t.replacen("file://localhost/srv/beamline/shared/hdf5/blobfly/blobfly_00000.h5\", \"parameters\"", "file://otherhost/srv/beamline/shared/hdf5/blobfly/blobfly_00000.h5\", \"parameters\"", 1)
        },
    );
    rejected(
        &fx,
        SR_FLY,
        "lengths.jsonl",
        5,
        "seq_nums: [1, 3) is not as long as indices [0, 3)",
        &|t| {
            t.replacen(
                "\"seq_nums\": {\"start\": 1, \"stop\": 4}",
                "\"seq_nums\": {\"start\": 1, \"stop\": 3}",
                1,
            )
        },
    );
    let reversed = edited(&fx, SR_FLY, "reversed.jsonl", |t| {
        t.replacen(
            "\"seq_nums\": {\"start\": 1, \"stop\": 4}, \"indices\": {\"start\": 0, \"stop\": 3}",
            "\"seq_nums\": {\"start\": 4, \"stop\": 1}, \"indices\": {\"start\": 3, \"stop\": 0}",
            1,
        )
    });
    rejected_with(&fx, SR_FLY, &reversed, &[], "ends before it starts");
    let twice = edited(&fx, SR_SCAN, "twice.jsonl", |t| {
        let mut lines: Vec<String> = t.lines().map(str::to_string).collect();
        if let Some(i) = lines
            .iter()
            .position(|l| l.starts_with("[\"stream_datum\""))
        {
            // The same frames again under a new uid (a repeated uid is its own error).
            let again = lines[i].replace("/0\"", "/again\"");
            lines.insert(i + 1, again);
        }
        lines.join("\n") + "\n"
    });
    rejected_with(&fx, SR_SCAN, &twice, &[], "is delivered twice");
    rejected(
        &fx,
        SR_FLY,
        "nosr.jsonl",
        5,
        "stream_datum refers to stream_resource \"nope\"",
        &|t| {
            t.replacen(
                "\"stream_resource\": \"e54effd8-cf8c-4c79-9c1f-38a48f571506\"",
                "\"stream_resource\": \"nope\"",
                1,
            )
        },
    );
}

#[test]
fn ingest_hdf5_uri_escaping_its_root_is_refused() {
    let fx = Fixture::new();
    // A real HDF5 file outside the mapped root, reached by `..` in the uri.
    let root = fx.path().join("root");
    std::fs::create_dir_all(root.join("blobfly")).unwrap();
    std::fs::copy(
        shared_dir().join("hdf5/blobfly/blobfly_00000.h5"),
        fx.path().join("outside.h5"),
    )
    .unwrap();
    let bad = edited(&fx, SR_FLY, "escape.jsonl", |t| {
        t.replace(
            "hdf5/blobfly/blobfly_00000.h5",
            "hdf5/blobfly/../../outside.h5",
        )
    });
    let map = format!("{SHARED_ROOT}={}", root.display());
    let (code, out, _) =
        run(&mut fx.beamdb(&["ingest", "--beamtime", "bt", "--root-map", &map, path(&bad)]));
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains(":3: ")
            && out.contains("outside its root")
            && out.contains("refusing to read it"),
        "{out}"
    );
    nothing_landed(&fx, SR_FLY);
}

/// Ingests `bad` and checks the run is rejected with `message`, exit 4, nothing left.
fn rejected_with(fx: &Fixture, uid: &str, bad: &std::path::Path, extra: &[&str], message: &str) {
    let mut args: Vec<&str> = extra.to_vec();
    args.push(path(bad));
    let (code, out, _) = ingest(fx, &args);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains(&format!("rejected  {uid}: ")) && out.contains(message),
        "want {message} in {out}"
    );
    nothing_landed(fx, uid);
}

#[test]
fn ingest_hdf5_bad_kwargs_and_parameters_are_rejected() {
    let fx = Fixture::new();
    let no_fpp = edited(&fx, AD_COUNT, "nofpp.jsonl", |t| {
        t.replace(
            "\"resource_kwargs\": {\"frame_per_point\": 1}",
            "\"resource_kwargs\": {}",
        )
    });
    rejected_with(
        &fx,
        AD_COUNT,
        &no_fpp,
        &[],
        "AD_HDF5 needs a positive integer `frame_per_point`",
    );
    let no_point = edited(&fx, AD_COUNT, "nopoint.jsonl", |t| {
        t.replace(
            "\"datum_kwargs\": {\"point_number\": 2}",
            "\"datum_kwargs\": {\"point\": 2}",
        )
    });
    rejected_with(
        &fx,
        AD_COUNT,
        &no_point,
        &[],
        "AD_HDF5 needs a non-negative integer `point_number`",
    );
    let no_dataset = edited(&fx, SR_SCAN, "nodset.jsonl", |t| {
        t.replace(
            "\"dataset\": \"/entry/data/data\"",
            "\"dset\": \"/entry/data/data\"",
        )
    });
    rejected_with(
        &fx,
        SR_SCAN,
        &no_dataset,
        &[],
        "an HDF5 stream_resource needs `dataset`",
    );
}

#[test]
fn ingest_hdf5_datasets_that_are_not_frames_are_rejected() {
    let fx = Fixture::new();
    // A copy of the fly scan's file whose frame dataset is a scalar, then one of strings.
    let root = fx.path().join("odd");
    std::fs::create_dir_all(root.join("blobfly")).unwrap();
    let file = root.join("blobfly/blobfly_00000.h5");
    for (dataset, message) in [
        (
            "numpy.float64(1.0)",
            "it is a scalar; frames are rows of an array",
        ),
        ("numpy.array([b'a', b'b'] * 6)", "its elements are"),
    ] {
        let script = format!(
            "import h5py, numpy, shutil, sys\n\
             shutil.copy(sys.argv[1], sys.argv[2])\n\
             f = h5py.File(sys.argv[2], 'a')\n\
             del f['/entry/data/data']\n\
             f['/entry/data/data'] = {dataset}\n\
             f.close()\n"
        );
        let made = std::process::Command::new(python())
            .args(["-c", &script])
            .arg(shared_dir().join("hdf5/blobfly/blobfly_00000.h5"))
            .arg(&file)
            .output()
            .expect("run h5py");
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let map = format!("{SHARED_ROOT}={}", root.display());
        let (code, out, _) = run(&mut fx.beamdb(&[
            "ingest",
            "--beamtime",
            "bt",
            "--root-map",
            &map,
            path(&shared_run(SR_FLY)),
        ]));
        assert_eq!(code, 4, "{out}");
        assert!(out.contains(message), "want {message} in {out}");
        nothing_landed(&fx, SR_FLY);
    }
}
