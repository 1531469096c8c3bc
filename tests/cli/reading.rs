//! The store as scientists read it (docs/reading.md): every stream of every run opens in
//! xarray with no beamdb, every value equal to the events', and `migrate` brings a store
//! written before this layout there, whole or not at all per run.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::common::{Fixture, path, python, repo, run, store};

/// Root maps of every sample run under tests/data.
fn sample_maps() -> Vec<String> {
    let data = repo("tests/data");
    vec![
        format!(
            "/srv/beamline/shared/hdf5={}",
            data.join("hdf5/shared/hdf5").display()
        ),
        format!(
            "/mnt/detectors/other-beamline/h5={}",
            data.join("hdf5/generated/hdf5").display()
        ),
        format!(
            "/srv/beamline/shared/frames={}",
            data.join("bluesky/frames").display()
        ),
        format!(
            "/tmp/gen/hidden/frames={}",
            data.join("hidden/frames").display()
        ),
        format!(
            "/tmp/gen/reconf/frames={}",
            data.join("reconfigured/frames").display()
        ),
    ]
}

/// Ingests every sample run: NPY and HDF5 frames, event pages, baseline streams, two
/// descriptors of one stream, stream_resource step and fly scans.
fn ingest_samples(fx: &Fixture) {
    let maps = sample_maps();
    let mut args: Vec<String> = vec!["ingest".into(), "--beamtime".into(), "bt".into()];
    for m in &maps {
        args.push("--root-map".into());
        args.push(m.clone());
    }
    for dir in [
        "hdf5/shared",
        "hdf5/generated",
        "bluesky",
        "hidden",
        "reconfigured",
    ] {
        args.push(repo("tests/data").join(dir).display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = run(&mut fx.beamdb(&args));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("landed 18, unchanged 0, rejected 0"), "{out}");
}

/// Runs a Python script of tests/interop on the beamtime `bt`: (success, stdout + stderr).
fn interop(fx: &Fixture, script: &str) -> (bool, String) {
    let out = Command::new(python())
        .arg(repo(&format!("tests/interop/{script}")))
        .arg(fx.beamtime_db("bt"))
        .arg(store(fx))
        .output()
        .expect("run python");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Every stream of every run opens in xarray and equals the events (check_xarray.py).
fn assert_reads(fx: &Fixture, want: &str) {
    let (ok, out) = interop(fx, "check_xarray.py");
    assert!(ok, "{out}");
    assert!(out.trim().ends_with(want), "{out}");
}

fn assert_verify_clean(fx: &Fixture) {
    let (code, out, err) = run(&mut fx.beamdb(&["verify", "--deep"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("0 problems"), "{out}{err}");
}

const SAMPLES: &str = "checked 18 runs, 22 streams, 251 values, 79 frames";

#[test]
fn reading_every_sample_stream_opens_in_xarray_with_the_events_values() {
    let fx = Fixture::new();
    ingest_samples(&fx);
    assert_reads(&fx, SAMPLES);
    assert_verify_clean(&fx);
}

/// Writes a run as suitcase-jsonl lines.
fn write_run(fx: &Fixture, name: &str, docs: &[(&str, Value)]) -> PathBuf {
    let text: String = docs
        .iter()
        .map(|(kind, body)| format!("{}\n", json!([kind, body])))
        .collect();
    fx.write(name, &text)
}

const ODD: &str = "0dd0dd00-0000-4000-8000-000000000001";

/// One stream `primary` from two descriptors with different data keys and frame shapes,
/// events out of time order in the file, a data key named `time`, one that is no safe
/// name, and a baseline stream.
fn odd_run(fx: &Fixture) -> PathBuf {
    let frame = |rows: usize, cols: usize, v: u64| {
        json!(
            (0..rows)
                .map(|r| (0..cols)
                    .map(|c| v * 100 + (r * cols + c) as u64)
                    .collect::<Vec<_>>())
                .collect::<Vec<_>>()
        )
    };
    let event = |uid: &str, desc: &str, seq: i64, time: f64, data: Value| {
        (
            "event",
            json!({"uid": uid, "descriptor": desc, "seq_num": seq, "time": time,
                   "data": data, "timestamps": {}}),
        )
    };
    let d1 = "0dd0dd00-0000-4000-8000-0000000000d1";
    let d2 = "0dd0dd00-0000-4000-8000-0000000000d2";
    let d3 = "0dd0dd00-0000-4000-8000-0000000000d3";
    write_run(
        fx,
        "odd.jsonl",
        &[
            (
                "start",
                json!({"uid": ODD, "time": 1.0, "plan_name": "odd", "scan_id": 7}),
            ),
            (
                "descriptor",
                json!({"uid": d1, "run_start": ODD, "name": "primary", "time": 1.0,
                "configuration": {"det": {"data": {"det_gain": 2}, "timestamps": {}, "data_keys": {}}},
                "data_keys": {
                    "motor": {"source": "SIM:motor", "dtype": "number", "shape": [], "units": "mm", "precision": 3},
                    "det": {"source": "SIM:det", "dtype": "integer", "shape": []},
                    "time": {"source": "SIM:clock", "dtype": "number", "shape": []},
                    "bad/key": {"source": "SIM:bad", "dtype": "number", "shape": []},
                    "spectrum": {"source": "SIM:spec", "dtype": "array", "shape": [3], "dims": ["energy"]},
                    "img": {"source": "SIM:img", "dtype": "array", "dtype_numpy": "<u2", "shape": [2, 3]}
                }}),
            ),
            (
                "descriptor",
                json!({"uid": d2, "run_start": ODD, "name": "primary", "time": 2.0,
                "data_keys": {
                    "motor": {"source": "SIM:motor", "dtype": "number", "shape": [], "units": "mm"},
                    "label": {"source": "SIM:label", "dtype": "string", "shape": []},
                    "img": {"source": "SIM:img", "dtype": "array", "dtype_numpy": "<u2", "shape": [3, 2]}
                }}),
            ),
            (
                "descriptor",
                json!({"uid": d3, "run_start": ODD, "name": "baseline", "time": 1.5,
                "data_keys": {"ring_current": {"source": "SIM:ring", "dtype": "number", "shape": []}}}),
            ),
            event(
                "0dd0dd00-0000-4000-8000-0000000000b1",
                d3,
                1,
                0.5,
                json!({"ring_current": 400.5}),
            ),
            event(
                "0dd0dd00-0000-4000-8000-0000000000e1",
                d1,
                1,
                10.0,
                json!({"motor": 1.5, "det": 11, "time": 100.0, "bad/key": 1.0,
                    "spectrum": [1.0, 2.0, 3.0], "img": frame(2, 3, 1)}),
            ),
            event(
                "0dd0dd00-0000-4000-8000-0000000000e2",
                d2,
                1,
                5.0,
                json!({"motor": 0.5, "label": "first", "img": frame(3, 2, 2)}),
            ),
            event(
                "0dd0dd00-0000-4000-8000-0000000000e3",
                d1,
                2,
                7.0,
                json!({"motor": 2.5, "det": 12, "time": 70.0, "bad/key": 2.0,
                    "spectrum": [4.0, 5.0, 6.0], "img": frame(2, 3, 3)}),
            ),
            event(
                "0dd0dd00-0000-4000-8000-0000000000e4",
                d2,
                2,
                12.0,
                json!({"motor": 3.5, "label": "second", "img": frame(3, 2, 4)}),
            ),
            event(
                "0dd0dd00-0000-4000-8000-0000000000e5",
                d1,
                3,
                3.0,
                json!({"motor": -1.0, "det": 13, "time": 30.0, "bad/key": 3.0,
                    "spectrum": [7.0, 8.0, 9.0], "img": frame(2, 3, 5)}),
            ),
            event(
                "0dd0dd00-0000-4000-8000-0000000000b2",
                d3,
                2,
                20.0,
                json!({"ring_current": 399.5}),
            ),
            (
                "stop",
                json!({"uid": "0dd0dd00-0000-4000-8000-0000000000ff", "run_start": ODD,
                "time": 21.0, "exit_status": "success"}),
            ),
        ],
    )
}

/// What xarray shows of the odd run, as JSON.
fn odd_view(fx: &Fixture) -> Value {
    let script = r#"
import json, sys, warnings
import xarray as xr
warnings.simplefilter("error", RuntimeWarning)
run = sys.argv[1]
ds = xr.open_zarr(run, group="primary")
base = xr.open_zarr(run, group="baseline")
def nan(v):
    return [None if x != x else x for x in v]
print(json.dumps({
    "time": ds["time"].values.tolist(),
    "seq_num": ds["seq_num"].values.tolist(),
    "motor": ds["motor"].values.tolist(),
    "det": nan(ds["det"].values.tolist()),
    "det_dtype": str(ds["det"].dtype),
    "label": [str(x) for x in ds["label"].values],
    "time_field": nan(ds["time.field"].values.tolist()),
    "spectrum_dims": list(ds["spectrum"].dims),
    "img_dims": list(ds["img"].dims),
    "img2_dims": list(ds["img.2"].dims),
    "img_index": ds["img.index"].values.tolist(),
    "img2_index": ds["img.2.index"].values.tolist(),
    "first_img": ds["img"].isel({"img.frame": int(ds["img.index"].values[0])}).values.tolist(),
    "motor_units": ds["motor"].attrs.get("units"),
    "skipped": ds.attrs.get("beamdb_skipped", {}),
    "config": ds.attrs["configuration"],
    "coords": sorted(ds.coords),
    "baseline": base["ring_current"].values.tolist(),
    "baseline_time": base["time"].values.tolist(),
}))
"#;
    let out = Command::new(python())
        .args(["-c", script])
        .arg(store(fx).join("runs").join(ODD))
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

#[test]
fn reading_a_stream_of_two_descriptors_out_of_time_order_is_one_dataset_in_time_order() {
    let fx = Fixture::new();
    let file = odd_run(&fx);
    let (code, out, err) = run(&mut fx.beamdb(&["ingest", "--beamtime", "bt", path(&file)]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("data key \"bad/key\" has no array in the store"),
        "{err}"
    );
    let v = odd_view(&fx);
    assert_eq!(v["time"], json!([3.0, 5.0, 7.0, 10.0, 12.0]));
    assert_eq!(v["seq_num"], json!([3, 1, 2, 1, 2]));
    assert_eq!(v["motor"], json!([-1.0, 0.5, 2.5, 1.5, 3.5]));
    // An integer key the second descriptor lacks: floats, NaN where it has no value.
    assert_eq!(v["det"], json!([13.0, null, 12.0, 11.0, null]));
    assert_eq!(v["det_dtype"], "float64");
    assert_eq!(v["label"], json!(["", "first", "", "", "second"]));
    // A data key named `time` keeps its values under `time.field`.
    assert_eq!(v["time_field"], json!([30.0, null, 70.0, 100.0, null]));
    assert_eq!(v["spectrum_dims"], json!(["time", "energy"]));
    // Frames arrived out of time order and from two shapes: stacks on their own axis, with
    // the index of each entry's frame.
    assert_eq!(v["img_dims"], json!(["img.frame", "dim_0", "dim_1"]));
    assert_eq!(v["img2_dims"], json!(["img.2.frame", "dim_2", "dim_3"]));
    assert_eq!(v["img_index"], json!([2, -1, 1, 0, -1]));
    assert_eq!(v["img2_index"], json!([-1, 0, -1, -1, 1]));
    assert_eq!(v["first_img"], json!([[500, 501, 502], [503, 504, 505]]));
    assert_eq!(v["motor_units"], "mm");
    assert_eq!(v["skipped"]["bad/key"], "not a safe path component", "{v}");
    assert_eq!(
        v["config"]["0dd0dd00-0000-4000-8000-0000000000d1"]["det"]["data"]["det_gain"],
        2
    );
    assert_eq!(v["coords"], json!(["seq_num", "time"]));
    assert_eq!(v["baseline"], json!([400.5, 399.5]));
    assert_eq!(v["baseline_time"], json!([0.5, 20.0]));
    assert_reads(&fx, "checked 1 runs, 2 streams, 18 values, 5 frames");
    assert_verify_clean(&fx);
}

/// Strips the store back to the layout before this one (only frame stacks).
fn strip(fx: &Fixture) {
    let (ok, out) = interop(fx, "strip_layout.py");
    assert!(ok, "{out}");
    let (ok, out) = interop(fx, "check_xarray.py");
    assert!(
        !ok,
        "the stripped store still reads as the new layout: {out}"
    );
}

fn migrate(fx: &Fixture, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["migrate"];
    all.extend_from_slice(args);
    run(&mut fx.beamdb(&all))
}

#[test]
fn migrate_brings_a_store_written_before_the_layout_to_it() {
    let fx = Fixture::new();
    ingest_samples(&fx);
    strip(&fx);
    // Old stores verify clean: nothing of theirs is a problem; a note says what to run.
    let (code, out, err) = run(&mut fx.beamdb(&["verify"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("18 run(s) without the xarray layout of frames.zarr (docs/reading.md): `beamdb migrate` converts them"),
        "{err}"
    );
    let (code, out, err) = migrate(&fx, &["--check"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        out.contains("18 run(s) to bring to the xarray layout"),
        "{out}{err}"
    );
    let (code, out, err) = migrate(&fx, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("brought 18 run(s) to the xarray layout"),
        "{out}"
    );
    assert_reads(&fx, SAMPLES);
    assert_verify_clean(&fx);
    let (_, _, err) = run(&mut fx.beamdb(&["verify"]));
    assert!(!err.contains("xarray layout"), "{err}");
    // Again: nothing left to do.
    let (code, out, err) = migrate(&fx, &["--check"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = migrate(&fx, &[]);
    assert_eq!(code, 0);
    assert!(!out.contains("xarray layout"), "{out}");
}

/// Puts a half-written conversion in place for `uid`'s primary stream: a `time` array
/// whose metadata says something else and a column with a chunk of garbage, under a run
/// group without the marker (as a crash before the marker leaves it).
fn half_convert(fx: &Fixture, uid: &str) {
    let primary = store(fx).join("runs").join(uid).join("primary");
    std::fs::create_dir_all(primary.join("time/c")).expect("mkdir");
    std::fs::write(primary.join("time/c/0"), b"garbage").expect("chunk");
    std::fs::write(
        primary.join("time/zarr.json"),
        json!({"zarr_format": 3, "node_type": "array", "shape": [99], "data_type": "int8",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [99]}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": 0, "codecs": [{"name": "bytes", "configuration": {}}],
            "dimension_names": ["time"]})
        .to_string(),
    )
    .expect("metadata");
}

fn unmark(fx: &Fixture, uid: &str) {
    let path = store(fx).join("runs").join(uid).join("zarr.json");
    let mut meta: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    meta["attributes"]["beamdb"]
        .as_object_mut()
        .expect("beamdb attributes")
        .remove("layout");
    std::fs::write(&path, meta.to_string()).expect("write");
}

#[test]
fn migrate_redoes_a_run_whose_upgrade_was_interrupted() {
    let fx = Fixture::new();
    ingest_samples(&fx);
    strip(&fx);
    let (code, out, err) = migrate(&fx, &[]);
    assert_eq!(code, 0, "{out}{err}");
    // A crash between the arrays and the marker: the marker is absent, the arrays are
    // anything. The next migrate converts the run again, whole.
    let uid = "8e1b26b6-4f77-42ae-a85a-a69ec8225170";
    unmark(&fx, uid);
    half_convert(&fx, uid);
    let (code, out, err) = migrate(&fx, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("brought 1 run(s) to the xarray layout"),
        "{out}"
    );
    assert_reads(&fx, SAMPLES);
    assert_verify_clean(&fx);
}

#[test]
fn migrate_killed_at_any_moment_leaves_runs_whole_or_unconverted() {
    let fx = Fixture::new();
    ingest_samples(&fx);
    let bin = assert_cmd::cargo::cargo_bin("beamdb");
    for trial in 0..4u64 {
        strip(&fx);
        let mut child = std::process::Command::new(&bin)
            .current_dir(fx.path())
            .env_clear()
            .args(["migrate"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn migrate");
        std::thread::sleep(std::time::Duration::from_millis(5 + 15 * trial));
        let _ = child.kill();
        let _ = child.wait();
        // Every run that carries the marker is whole; the rest are converted by the next run.
        let marked = marked_runs(&store(&fx));
        let (code, out, err) = migrate(&fx, &[]);
        assert_eq!(code, 0, "trial {trial}: {out}{err}");
        let redone = 18 - marked;
        if redone > 0 {
            assert!(
                out.contains(&format!("brought {redone} run(s) to the xarray layout")),
                "trial {trial}: {marked} marked: {out}"
            );
        }
        assert_reads(&fx, SAMPLES);
    }
    assert_verify_clean(&fx);
}

fn marked_runs(root: &Path) -> usize {
    std::fs::read_dir(root.join("runs"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| {
                    std::fs::read(e.path().join("zarr.json"))
                        .ok()
                        .and_then(|t| serde_json::from_slice::<Value>(&t).ok())
                        .is_some_and(|v| v["attributes"]["beamdb"]["layout"] == 1)
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn reading_frames_under_a_reserved_name_land_beside_the_time_coordinate() {
    let fx = Fixture::new();
    let file = reserved_run(&fx);
    let uid = RESERVED_RUN;
    let (code, out, err) = run(&mut fx.beamdb(&["ingest", "--beamtime", "bt", path(&file)]));
    assert_eq!(code, 0, "{out}{err}");
    let conn = fx.open(&fx.beamtime_db("bt"));
    let group: String = conn
        .query_row("SELECT zarr_group FROM image_refs", [], |r| r.get(0))
        .expect("image_ref");
    assert_eq!(group, format!("runs/{uid}/primary/time.field"));
    assert_reads(&fx, "checked 1 runs, 1 streams, 1 values, 1 frames");
    assert_verify_clean(&fx);
}

const RESERVED_RUN: &str = "0dd0dd00-0000-4000-8000-000000000002";

/// A run whose frame field and a scalar key are named like the layout's coordinates.
fn reserved_run(fx: &Fixture) -> PathBuf {
    let uid = RESERVED_RUN;
    let d = "0dd0dd00-0000-4000-8000-0000000002d1";
    write_run(
        fx,
        "reserved.jsonl",
        &[
            (
                "start",
                json!({"uid": uid, "time": 1.0, "plan_name": "reserved"}),
            ),
            (
                "descriptor",
                json!({"uid": d, "run_start": uid, "name": "primary", "time": 1.0,
                "data_keys": {
                    "time": {"source": "SIM:t", "dtype": "array", "dtype_numpy": "<u1", "shape": [2, 2]},
                    "seq_num": {"source": "SIM:s", "dtype": "integer", "shape": []}
                }}),
            ),
            (
                "event",
                json!({"uid": "0dd0dd00-0000-4000-8000-0000000002e1", "descriptor": d,
                "seq_num": 1, "time": 2.0, "data": {"time": [[1, 2], [3, 4]], "seq_num": 41},
                "timestamps": {}}),
            ),
            (
                "stop",
                json!({"uid": "0dd0dd00-0000-4000-8000-0000000002ff", "run_start": uid,
                "time": 3.0, "exit_status": "success"}),
            ),
        ],
    )
}

/// An old store whose frame stack sits where the layout's `time` goes (an earlier beamdb
/// named the stack after its field): that run is named and left unconverted, the others
/// are converted, and verify keeps saying which runs are left.
#[test]
fn migrate_names_a_run_it_cannot_convert_and_converts_the_others() {
    let fx = Fixture::new();
    let (reserved, odd) = (reserved_run(&fx), odd_run(&fx));
    let (code, out, err) =
        run(&mut fx.beamdb(&["ingest", "--beamtime", "bt", path(&reserved), path(&odd)]));
    assert_eq!(code, 0, "{out}{err}");
    strip(&fx);
    let primary = store(&fx).join("runs").join(RESERVED_RUN).join("primary");
    std::fs::rename(primary.join("time.field"), primary.join("time")).expect("rename");
    fx.open(&fx.beamtime_db("bt"))
        .execute(
            "UPDATE image_refs SET zarr_group = replace(zarr_group, 'time.field', 'time')",
            [],
        )
        .expect("update");
    let (code, out, err) = migrate(&fx, &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("brought 1 run(s) to the xarray layout"),
        "{out}"
    );
    assert!(
        err.contains(&format!(
            "run {RESERVED_RUN} was not brought to the xarray layout: {}: a frame array occupies \"time\", which the layout keeps for the stream's coordinate",
            primary.join("time").display()
        )),
        "{err}"
    );
    let (code, out, err) = run(&mut fx.beamdb(&["verify"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("1 run(s) without the xarray layout"), "{err}");
}
