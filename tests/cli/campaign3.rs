//! Hostile campaign 3: the read path (export, BEAMDB_ZARR re-ingest, show, the xarray
//! layout) attacked through the binary (docs/fuzzing.md, "Hostile campaign, read path").

use std::path::Path;

use crate::common::{Fixture, path, run};

/// A run of one event whose 2x2 uint16 frame is a BEAMDB_ZARR datum: array `a` of the store
/// mapped at `/hostile`, element `index`.
fn zarr_run(index: u64) -> String {
    format!(
        r#"["start", {{"uid": "zr", "time": 1}}]
["descriptor", {{"uid": "d", "run_start": "zr", "name": "primary", "time": 2, "data_keys": {{"img": {{"dtype": "array", "shape": [2, 2], "dtype_numpy": "<u2", "source": "s", "external": "FILESTORE:"}}}}}}]
["resource", {{"uid": "r", "run_start": "zr", "spec": "BEAMDB_ZARR", "root": "/hostile", "resource_path": "a", "resource_kwargs": {{}}, "path_semantics": "posix"}}]
["datum", {{"resource": "r", "datum_id": "r/0", "datum_kwargs": {{"index": {index}}}}}]
["event", {{"uid": "e", "descriptor": "d", "seq_num": 1, "time": 3, "data": {{"img": "r/0"}}, "timestamps": {{"img": 3}}, "filled": {{"img": false}}}}]
["stop", {{"uid": "s", "run_start": "zr", "time": 4, "exit_status": "success"}}]
"#
    )
}

/// A zarr v3 array `a` under `store`: 4 frames of 2x2 uint16, uncompressed, chunks of
/// `chunk` elements.
fn zarr_array(store: &Path, chunk: [u64; 3]) {
    std::fs::create_dir_all(store.join("a/c")).unwrap();
    std::fs::write(
        store.join("zarr.json"),
        r#"{"zarr_format": 3, "node_type": "group"}"#,
    )
    .unwrap();
    let meta = serde_json::json!({
        "zarr_format": 3, "node_type": "array", "shape": [4, 2, 2], "data_type": "uint16",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunk}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0, "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
    });
    std::fs::write(store.join("a/zarr.json"), meta.to_string()).unwrap();
}

fn ingest_hostile(fx: &Fixture, store: &Path, run_text: &str) -> (i32, String, String) {
    let file = fx.write("zr.jsonl", run_text);
    let map = format!("/hostile={}", path(store));
    run(fx
        .beamdb(&[
            "ingest",
            "--beamtime",
            "bt",
            "--root-map",
            &map,
            path(&file),
        ])
        .env("BEAMDB_DATA_ROOT", path(&fx.data_root())))
}

/// A BEAMDB_ZARR array whose chunks hold several frames (or part of one) is read from chunk
/// files other than the one checked against the root: a symbolic link there read a file
/// outside the mapped root into the store. Such an array is refused before any chunk is read.
#[test]
fn ingest_beamdb_zarr_with_chunks_not_one_frame_is_refused_without_reading_outside_the_root() {
    for chunk in [[4, 2, 2], [1, 1, 2]] {
        let fx = Fixture::new();
        let store = fx.path().join("store");
        zarr_array(&store, chunk);
        let secret = fx.path().join("secret.bin");
        std::fs::write(&secret, [0x53u8; 32]).unwrap();
        // The chunk that holds frame 0 (and, for [1, 1, 2], half of each frame) links out of
        // the root; the chunk key of frame 1 is a harmless regular file.
        for key in ["c/0/0/0", "c/1/0/0"] {
            let p = store.join("a").join(key);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        }
        std::os::unix::fs::symlink(&secret, store.join("a/c/0/0/0")).unwrap();
        std::fs::write(store.join("a/c/1/0/0"), [1u8; 8]).unwrap();
        let index = if chunk[0] == 4 { 1 } else { 0 };
        let (code, out, err) = ingest_hostile(&fx, &store, &zarr_run(index));
        assert_eq!(code, 4, "{chunk:?}: {out}{err}");
        let all = format!("{out}{err}");
        assert!(all.contains("zr.jsonl:3:"), "{all}");
        assert!(
            all.contains("is not one chunk per frame"),
            "{chunk:?}: {all}"
        );
        assert!(!fx.beamtime_db("bt").exists(), "nothing half-written");
    }
}

const SMALL_RUN: &str = r#"["start", {"uid": "small", "time": 1}]
["descriptor", {"uid": "d", "run_start": "small", "name": "primary", "time": 2, "data_keys": {"x": {"dtype": "number", "shape": [], "source": "s"}}}]
["event", {"uid": "e", "descriptor": "d", "seq_num": 1, "time": 3, "data": {"x": 1.5}, "timestamps": {"x": 3}}]
["stop", {"uid": "s", "run_start": "small", "time": 4, "exit_status": "success"}]
"#;

fn ingest_small(fx: &Fixture) {
    let file = fx.write("small.jsonl", SMALL_RUN);
    let (code, out, err) = run(fx
        .beamdb(&["ingest", "--beamtime", "bt", path(&file)])
        .env("BEAMDB_DATA_ROOT", path(&fx.data_root())));
    assert_eq!(code, 0, "{out}{err}");
}

fn export(fx: &Fixture, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["export", "--beamtime", "bt"];
    all.extend_from_slice(args);
    run(fx
        .beamdb(&all)
        .env("BEAMDB_DATA_ROOT", path(&fx.data_root())))
}

/// The file export writes before renaming it into place is created, never opened through
/// whatever is at its name: a symbolic link left there (by anyone who can write the folder)
/// must not make export write through it to another file.
#[test]
fn export_never_writes_through_a_symlink_at_its_partial_file() {
    let fx = Fixture::new();
    ingest_small(&fx);
    let out_dir = fx.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let victim = fx.write("victim.txt", "precious\n");
    std::os::unix::fs::symlink(&victim, out_dir.join(".small.jsonl.partial")).unwrap();
    let (code, out, err) = export(&fx, &["small", "-o", path(&out_dir)]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    let written = std::fs::read_to_string(out_dir.join("small.jsonl")).unwrap();
    assert!(written.starts_with(r#"["start","#), "{written}");
    assert!(!out_dir.join(".small.jsonl.partial").exists());
}

/// `--force` overwrites a file; a folder where the run's file would go is not one: exit 2
/// naming it, before anything is written.
#[test]
fn export_force_onto_a_folder_named_like_the_file_exits_2_naming_it() {
    let fx = Fixture::new();
    ingest_small(&fx);
    let out_dir = fx.path().join("out");
    std::fs::create_dir_all(out_dir.join("small.jsonl")).unwrap();
    let (code, out, err) = export(&fx, &["small", "-o", path(&out_dir), "--force"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("out/small.jsonl is a folder"), "{err}");
    assert!(out_dir.join("small.jsonl").is_dir());
    assert_eq!(
        std::fs::read_dir(&out_dir).unwrap().count(),
        1,
        "nothing written"
    );
}

/// The layout's survey of 1-D values sorted a copy of each whole value for each of its
/// elements: temporary space grew as events x length^2 (a 1000-channel spectrum per event
/// needed ~20 MB per event in /var/tmp, and disk full rejected the run). With every file
/// limited to 8 MB (SIGXFSZ kills the process past it), a run of 40 events of a
/// 400-element 1-D key (~0.3 MB of input) must land.
#[test]
fn ingest_layout_of_long_1d_values_needs_temporary_space_linear_in_the_input() {
    let fx = Fixture::new();
    let mut text = String::from(
        r#"["start", {"uid": "spec", "time": 1}]
["descriptor", {"uid": "d", "run_start": "spec", "name": "primary", "time": 2, "data_keys": {"mca": {"dtype": "array", "shape": [400], "source": "s"}}}]
"#,
    );
    for i in 0..40 {
        let values: Vec<String> = (0..400)
            .map(|j| format!("{}", 0.123_456_789_f64 * f64::from(i * 400 + j)))
            .collect();
        text.push_str(&format!(
            "[\"event\", {{\"uid\": \"e{i}\", \"descriptor\": \"d\", \"seq_num\": {}, \"time\": {}, \"data\": {{\"mca\": [{}]}}, \"timestamps\": {{}}}}]\n",
            i + 1,
            3 + i,
            values.join(", ")
        ));
    }
    text.push_str(
        r#"["stop", {"uid": "s", "run_start": "spec", "time": 99, "exit_status": "success"}]
"#,
    );
    let file = fx.write("spec.jsonl", &text);
    let mut cmd = assert_cmd::Command::new("prlimit");
    cmd.current_dir(fx.path())
        .env_clear()
        .env("BEAMDB_DATA_ROOT", path(&fx.data_root()))
        .args(["--fsize=8000000", "--"])
        .arg(assert_cmd::cargo::cargo_bin("beamdb"))
        .args(["ingest", "--beamtime", "bt", path(&file)]);
    let (code, out, err) = run(&mut cmd);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("landed    spec: 40 events"), "{out}");
}

/// A BEAMDB_ZARR chunk file far larger than one frame (a sparse file costs nothing on disk)
/// was read whole into memory before its size was compared (6 GB of RAM for a 2x2 frame);
/// an array's zarr.json too. Both are refused by their size, before they are read.
#[test]
fn ingest_beamdb_zarr_huge_sparse_chunk_or_metadata_is_refused_by_its_size_before_reading() {
    for what in ["chunk", "zarr.json"] {
        let fx = Fixture::new();
        let store = fx.path().join("store");
        zarr_array(&store, [1, 2, 2]);
        let chunk = store.join("a/c/0/0/0");
        std::fs::create_dir_all(chunk.parent().unwrap()).unwrap();
        std::fs::write(&chunk, [1u8; 8]).unwrap();
        let victim = if what == "chunk" {
            chunk
        } else {
            store.join("a/zarr.json")
        };
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&victim)
            .unwrap();
        file.set_len(1 << 30).unwrap();
        let (code, out, err) = ingest_hostile(&fx, &store, &zarr_run(0));
        let all = format!("{out}{err}");
        assert_eq!(code, 4, "{what}: {all}");
        assert!(all.contains("zr.jsonl:"), "{all}");
        assert!(all.contains("1073741824 bytes"), "{what}: {all}");
        assert!(all.contains("larger than"), "{what}: {all}");
        assert!(!fx.beamtime_db("bt").exists(), "nothing half-written");
    }
}

/// A stream_datum over a BEAMDB_ZARR array is checked against the array's length before a
/// frame is planned, as over an HDF5 dataset: [0, 2^62) planned points until memory ran out
/// (7 GB in a minute) before the first missing chunk could be found.
#[test]
fn ingest_beamdb_zarr_stream_datum_past_the_array_is_refused_before_planning() {
    let fx = Fixture::new();
    let store = fx.path().join("store");
    zarr_array(&store, [1, 2, 2]);
    for i in 0..4 {
        let chunk = store.join(format!("a/c/{i}/0/0"));
        std::fs::create_dir_all(chunk.parent().unwrap()).unwrap();
        std::fs::write(&chunk, [1u8; 8]).unwrap();
    }
    let text = r#"["start", {"uid": "fly", "time": 1}]
["descriptor", {"uid": "d", "run_start": "fly", "name": "primary", "time": 2, "data_keys": {"img": {"dtype": "array", "shape": [2, 2], "dtype_numpy": "<u2", "source": "s", "external": "STREAM:"}}}]
["stream_resource", {"uid": "sr", "run_start": "fly", "data_key": "img", "mimetype": "application/x-beamdb-zarr", "uri": "file://localhost/hostile", "parameters": {"array": "a"}}]
["stream_datum", {"uid": "sr/0", "stream_resource": "sr", "descriptor": "d", "seq_nums": {"start": 1, "stop": 4611686018427387905}, "indices": {"start": 0, "stop": 4611686018427387904}}]
["stop", {"uid": "s", "run_start": "fly", "time": 4, "exit_status": "success"}]
"#;
    let file = fx.write("fly.jsonl", text);
    let map = format!("/hostile={}", path(&store));
    let mut cmd = fx.beamdb(&[
        "ingest",
        "--beamtime",
        "bt",
        "--root-map",
        &map,
        path(&file),
    ]);
    cmd.env("BEAMDB_DATA_ROOT", path(&fx.data_root()))
        .timeout(std::time::Duration::from_secs(30));
    let (code, out, err) = run(&mut cmd);
    let all = format!("{out}{err}");
    assert_eq!(code, 4, "{all}");
    assert!(all.contains("fly.jsonl:4:"), "{all}");
    assert!(all.contains("go past the end of its dataset"), "{all}");
    assert!(!fx.beamtime_db("bt").exists(), "nothing half-written");
    // The same run with the array's own range lands.
    let whole = text
        .replace("4611686018427387905", "5")
        .replace("4611686018427387904", "4");
    let file = fx.write("fly.jsonl", &whole);
    let (code, out, err) = run(fx
        .beamdb(&[
            "ingest",
            "--beamtime",
            "bt",
            "--root-map",
            &map,
            path(&file),
        ])
        .env("BEAMDB_DATA_ROOT", path(&fx.data_root())));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("4 frames"), "{out}");
}
