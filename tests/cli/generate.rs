//! Runs generated in the test: many frames (NPY_SEQ files) or many events, in
//! suitcase-jsonl, for the crash and concurrency suites.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One `.npy` file (format 1.0) of `u16` values.
pub fn write_npy(path: &Path, shape: (usize, usize), seed: u64) {
    let header = format!(
        "{{'descr': '<u2', 'fortran_order': False, 'shape': ({}, {}), }}",
        shape.0, shape.1
    );
    // magic(6) + version(2) + len(2) + header + '\n', padded to a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    let pad = (64 - unpadded % 64) % 64;
    let header = format!("{header}{}\n", " ".repeat(pad));
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for _ in 0..shape.0 * shape.1 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        bytes.extend_from_slice(&((x % 4096) as u16).to_le_bytes());
    }
    std::fs::write(path, bytes).expect("write npy");
}

fn start(uid: &str, time: f64) -> String {
    format!(
        r#"["start", {{"uid": "{uid}", "time": {time}, "scan_id": 1, "plan_name": "count", "sample_name": "gen-sample", "researcher": "T. Est", "operator": "test"}}]"#
    )
}

fn stop(uid: &str, time: f64, primary: usize) -> String {
    format!(
        r#"["stop", {{"uid": "{uid}-stop", "run_start": "{uid}", "time": {time}, "exit_status": "success", "num_events": {{"primary": {primary}}}}}]"#
    )
}

/// `OLD=NEW` for `--root-map`: the identity mapping of the frames folder that
/// [`frames_run`] writes under `dir`, which is how ingest is allowed to read a root where it
/// is (an unmapped root is refused).
pub fn identity_map(dir: &Path) -> String {
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames).expect("mkdir");
    let frames = frames.canonicalize().expect("canonical frames dir");
    format!("{0}={0}", frames.display())
}

/// A run of `n` events, each with one external 2-D frame (NPY_SEQ files written under
/// `dir/frames`). Returns the jsonl path.
pub fn frames_run(dir: &Path, uid: &str, n: usize, shape: (usize, usize)) -> PathBuf {
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames).expect("mkdir");
    for i in 0..n {
        write_npy(&frames.join(format!("{uid}_{i}.npy")), shape, i as u64 + 1);
    }
    let mut text = String::new();
    let t = 1_795_000_000.0;
    let desc = format!("{uid}-d");
    let res = format!("{uid}-r");
    let root = frames.canonicalize().expect("canonical frames dir");
    writeln!(text, "{}", start(uid, t)).ok();
    writeln!(
        text,
        r#"["descriptor", {{"uid": "{desc}", "run_start": "{uid}", "name": "primary", "time": {t}, "data_keys": {{"det": {{"source": "SIM:det", "dtype": "array", "dtype_numpy": "<u2", "shape": [{}, {}], "external": "FILESTORE"}}, "x": {{"source": "SIM:x", "dtype": "number", "shape": []}}}}}}]"#,
        shape.0, shape.1
    )
    .ok();
    writeln!(
        text,
        r#"["resource", {{"uid": "{res}", "run_start": "{uid}", "spec": "NPY_SEQ", "root": "{}", "resource_path": "{uid}", "resource_kwargs": {{}}, "path_semantics": "posix"}}]"#,
        root.display()
    )
    .ok();
    for i in 0..n {
        writeln!(
            text,
            r#"["datum", {{"resource": "{res}", "datum_id": "{res}/{i}", "datum_kwargs": {{"index": {i}}}}}]"#
        )
        .ok();
        writeln!(
            text,
            r#"["event", {{"uid": "{uid}-e{i}", "descriptor": "{desc}", "seq_num": {}, "time": {}, "data": {{"det": "{res}/{i}", "x": {i}}}, "timestamps": {{"det": {t}, "x": {t}}}}}]"#,
            i + 1,
            t + i as f64
        )
        .ok();
    }
    writeln!(text, "{}", stop(uid, t + n as f64, n)).ok();
    let path = dir.join(format!("{uid}.jsonl"));
    std::fs::write(&path, text).expect("write jsonl");
    path
}

/// A run of `n` scalar events. Returns the jsonl path.
pub fn events_run(dir: &Path, uid: &str, n: usize) -> PathBuf {
    std::fs::create_dir_all(dir).expect("mkdir");
    let mut text = String::new();
    let t = 1_795_100_000.0;
    let desc = format!("{uid}-d");
    writeln!(text, "{}", start(uid, t)).ok();
    writeln!(
        text,
        r#"["descriptor", {{"uid": "{desc}", "run_start": "{uid}", "name": "primary", "time": {t}, "data_keys": {{"x": {{"source": "SIM:x", "dtype": "number", "shape": []}}, "I0": {{"source": "SIM:I0", "dtype": "number", "shape": []}}}}}}]"#
    )
    .ok();
    for i in 0..n {
        writeln!(
            text,
            r#"["event", {{"uid": "{uid}-e{i}", "descriptor": "{desc}", "seq_num": {}, "time": {}, "data": {{"x": {i}, "I0": {}}}, "timestamps": {{"x": {t}, "I0": {t}}}}}]"#,
            i + 1,
            t + i as f64,
            (i * 7919) % 1000
        )
        .ok();
    }
    writeln!(text, "{}", stop(uid, t + n as f64, n)).ok();
    let path = dir.join(format!("{uid}.jsonl"));
    std::fs::write(&path, text).expect("write jsonl");
    path
}
