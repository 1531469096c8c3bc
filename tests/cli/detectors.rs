//! Files as real detectors write them: every compression filter and layout beamlines use, the
//! AD_TIFF and AD_EIGER specs, and HDF5 files that point outside their root (external links,
//! virtual datasets, external raw storage). Each case is generated here by
//! tests/interop/make_detector_files.py (h5py + hdf5plugin), ingested by the real binary, and
//! read back bit for bit through zarr-python; each refused case names its reason and leaves
//! nothing behind.

use std::path::PathBuf;

use crate::common::{Fixture, counts, path, python, repo, run, store};

/// The root the generated documents name.
const ROOT: &str = "/srv/det";

/// The generated cases under `fx`/det: frame files under `det/root`, documents `det/CASE.jsonl`.
fn generate(fx: &Fixture, cases: &[&str]) -> PathBuf {
    let out = fx.path().join("det");
    let made = std::process::Command::new(python())
        .arg(repo("tests/interop/make_detector_files.py"))
        .arg(&out)
        .args(cases)
        .output()
        .expect("run make_detector_files.py");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    out
}

fn root_map(out: &std::path::Path) -> String {
    format!("{ROOT}={}", out.join("root").display())
}

fn ingest(fx: &Fixture, out: &std::path::Path, cases: &[&str]) -> (i32, String, String) {
    let map = root_map(out);
    let docs: Vec<PathBuf> = cases
        .iter()
        .map(|c| out.join(format!("{c}.jsonl")))
        .collect();
    let mut args = vec!["ingest", "--beamtime", "bt", "--root-map", &map];
    args.extend(docs.iter().map(|d| path(d)));
    run(&mut fx.beamdb(&args))
}

/// Every frame beamdb stored equals its source read by h5py + hdf5plugin (or tifffile).
fn read_back_bit_exact(fx: &Fixture, out: &std::path::Path, cases: &[&str], frames: usize) {
    let result = std::process::Command::new(python())
        .arg(repo("tests/interop/check_frames.py"))
        .arg(fx.beamtime_db("bt"))
        .arg(store(fx))
        .arg(root_map(out))
        .args(cases.iter().map(|c| out.join(format!("{c}.jsonl"))))
        .output()
        .expect("run the interop check");
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert_eq!(
        stdout.trim(),
        format!("checked {frames} frames and 0 values"),
        "{stdout}"
    );
}

/// Each case lands whole and reads back bit-exact.
fn lands(cases: &[&str], frames: usize) {
    let fx = Fixture::new();
    let out = generate(&fx, cases);
    let (code, stdout, stderr) = ingest(&fx, &out, cases);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("landed {}, unchanged 0, rejected 0", cases.len())),
        "{stdout}"
    );
    read_back_bit_exact(&fx, &out, cases, frames);
}

/// The case is rejected (exit 4) with every one of `messages`, and nothing of it is written.
fn refused(case: &str, messages: &[&str]) -> String {
    let fx = Fixture::new();
    let out = generate(&fx, &[case]);
    let (code, stdout, stderr) = ingest(&fx, &out, &[case]);
    assert_eq!(code, 4, "{case}: {stdout}{stderr}");
    for message in messages {
        assert!(
            stdout.contains(message),
            "{case}: want {message:?} in {stdout}"
        );
    }
    assert!(stdout.contains("rejected 1"), "{case}: {stdout}");
    assert_eq!(counts(&fx), (0, 0, 0), "{case}");
    let runs = store(&fx).join("runs");
    let left = std::fs::read_dir(&runs)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name() != "zarr.json")
                .count()
        })
        .unwrap_or(0);
    assert_eq!(left, 0, "{case}: a group was left in {}", runs.display());
    stdout
}

// ---- links, virtual datasets and external storage must stay inside the root ----

#[test]
fn ingest_detector_external_link_outside_the_root_is_refused() {
    for case in [
        "elink_outside",
        "elink_absolute",
        "elink_group",
        "soft_to_elink",
        "elink_chain",
    ] {
        refused(case, &["external link", "outside its root", "outside.h5"]);
    }
}

#[test]
fn ingest_detector_external_link_to_a_missing_file_is_refused() {
    refused(
        "elink_missing",
        &["external link", "nope.h5", "does not exist"],
    );
}

#[test]
fn ingest_detector_virtual_dataset_outside_the_root_is_refused() {
    refused(
        "vds_outside",
        &["virtual dataset", "outside its root", "outside.h5"],
    );
    refused("vds_via_link", &["external link", "outside its root"]);
}

#[test]
fn ingest_detector_virtual_dataset_with_a_missing_source_is_refused() {
    refused(
        "vds_missing",
        &["virtual dataset", "vds_missing_gone.h5", "does not exist"],
    );
}

#[test]
fn ingest_detector_external_raw_storage_outside_the_root_is_refused() {
    refused(
        "external_storage",
        &["external raw data", "outside its root", "outside.raw"],
    );
}

#[test]
fn ingest_detector_links_and_sources_inside_the_root_land() {
    // An Odin-style VDS over two files, a VDS of its own file ("."), external raw data beside
    // the file, an Eiger master file's link to its data file.
    lands(
        &[
            "odin_vds",
            "vds_same_file",
            "external_storage_inside",
            "eiger_stream",
        ],
        6 + 4 + 4 + 3,
    );
}

// ---- compression filters, decoded in-process with no plugin installed ----

#[test]
fn ingest_detector_bitshuffle_lz4_and_zstd_frames_are_bit_exact() {
    // Eiger's bitshuffle+LZ4 (u16, u32, several frames a chunk, a big frame with small
    // blocks), bitshuffle+zstd, bitshuffle alone, LZ4 (one and several blocks), Zstandard.
    lands(
        &[
            "bslz4",
            "bslz4_u4",
            "bslz4_multi",
            "bslz4_big",
            "bszstd",
            "bsnone",
            "lz4",
            "lz4_blocks",
            "zstd",
        ],
        4 + 4 + 7 + 4 + 4 + 4 + 4 + 4 + 4,
    );
}

#[test]
fn ingest_detector_blosc_with_every_inner_codec_is_bit_exact() {
    let mut cases = Vec::new();
    for codec in ["blosclz", "lz4", "lz4hc", "snappy", "zlib", "zstd"] {
        for shuffle in ["noshuffle", "shuffle", "bitshuffle"] {
            cases.push(format!("blosc_{codec}_{shuffle}"));
        }
    }
    let cases: Vec<&str> = cases.iter().map(String::as_str).collect();
    lands(&cases, 4 * cases.len());
}

#[test]
fn ingest_detector_libhdf5_builtin_filters_are_bit_exact() {
    lands(
        &["deflate_shuffle", "scaleoffset", "szip", "nbit"],
        4 + 4 + 4 + 4,
    );
}

#[test]
fn ingest_detector_unavailable_filter_is_refused_at_its_resource_with_its_id_and_name() {
    let out = refused(
        "bzip2",
        &[
            "bzip2.jsonl:3: ",
            "bzip2.h5 /entry/data/data: compressed with HDF5 filter 307 (bzip2",
            "h5repack",
        ],
    );
    // libhdf5's plugin-folder search is noise, never the message.
    assert!(!out.contains("plugins"), "{out}");
}

// ---- layouts and types ----

#[test]
fn ingest_detector_layouts_and_types_are_bit_exact() {
    // Contiguous; chunks of several frames; tiles smaller than a frame; big-endian integers
    // and floats; float64.
    lands(
        &[
            "contiguous",
            "chunked_multi",
            "tiles",
            "big_endian",
            "big_endian_float",
            "float64",
        ],
        4 + 7 + 4 + 4 + 4 + 4,
    );
}

#[test]
fn ingest_detector_areadetector_stacks_are_bit_exact() {
    // frame_per_point 3; Xspress3 [n, channels, bins]; the (n, 1, y, x) length-1 axis.
    lands(&["ad_fpp3", "xspress3", "four_d"], 3 + 5 + 4);
}

#[test]
fn ingest_detector_stream_resource_of_a_bitshuffle_file_is_bit_exact() {
    lands(&["stream_bslz4"], 6);
}

#[test]
fn ingest_detector_file_left_open_by_a_swmr_writer_is_read() {
    lands(&["swmr"], 3);
}

#[test]
fn ingest_detector_file_still_open_for_writing_gets_its_own_message() {
    let out = refused(
        "open_for_writing",
        &["open_for_writing.h5: the file is still open for writing"],
    );
    assert!(!out.contains("h5clear"), "{out}");
}

// ---- AD_EIGER / AD_EIGER2: DECTRIS master files ----

#[test]
fn ingest_detector_eiger_master_and_data_files_are_bit_exact() {
    // AD_EIGER, one datum per frame_num across two data files; AD_EIGER2 without frame_num,
    // one datum per seq_id (the whole series); a stream_resource naming a master file's link.
    lands(&["eiger", "eiger_stack", "eiger_stream"], 6 + 2 + 3);
}

#[test]
fn ingest_detector_eiger_without_images_per_file_is_refused() {
    let fx = Fixture::new();
    let out = generate(&fx, &["eiger"]);
    let doc = out.join("eiger.jsonl");
    let text = std::fs::read_to_string(&doc).unwrap();
    std::fs::write(&doc, text.replace("\"images_per_file\": 3", "\"per\": 3")).unwrap();
    let (code, stdout, _) = ingest(&fx, &out, &["eiger"]);
    assert_eq!(code, 4, "{stdout}");
    assert!(
        stdout.contains("eiger.jsonl:3: ")
            && stdout.contains("AD_EIGER needs a positive integer `images_per_file`"),
        "{stdout}"
    );
    assert_eq!(counts(&fx), (0, 0, 0));
}

// ---- AD_TIFF: one file per frame ----

#[test]
fn ingest_detector_tiff_frames_are_bit_exact() {
    // frame_per_point 1 and 2 ([fpp, y, x] per datum).
    lands(&["tiff", "tiff_fpp2"], 3 + 3);
}

#[test]
fn ingest_detector_tiff_template_naming_a_file_outside_the_root_is_refused() {
    let fx = Fixture::new();
    let out = generate(&fx, &["tiff"]);
    std::fs::copy(
        out.join("root/tiff/tiff/scan7_000000.tiff"),
        out.join("scan7_000000.tiff"),
    )
    .unwrap();
    let doc = out.join("tiff.jsonl");
    let text = std::fs::read_to_string(&doc).unwrap();
    std::fs::write(
        &doc,
        text.replace("%s%s_%6.6d.tiff", "%s../../../%s_%6.6d.tiff"),
    )
    .unwrap();
    let (code, stdout, _) = ingest(&fx, &out, &["tiff"]);
    assert_eq!(code, 4, "{stdout}");
    assert!(
        stdout.contains("outside its root") && stdout.contains("refusing to read it"),
        "{stdout}"
    );
    assert_eq!(counts(&fx), (0, 0, 0));
}

#[test]
fn ingest_detector_tiff_bad_template_is_refused_at_its_resource() {
    let fx = Fixture::new();
    let out = generate(&fx, &["tiff"]);
    let doc = out.join("tiff.jsonl");
    let text = std::fs::read_to_string(&doc).unwrap();
    std::fs::write(&doc, text.replace("%s%s_%6.6d.tiff", "%s%s_%x.tiff")).unwrap();
    let (code, stdout, _) = ingest(&fx, &out, &["tiff"]);
    assert_eq!(code, 4, "{stdout}");
    assert!(
        stdout.contains("tiff.jsonl:3: ")
            && stdout.contains("AD_TIFF `template` may only use %s, %d"),
        "{stdout}"
    );
}

#[test]
fn ingest_detector_length_one_axis_left_out_by_the_descriptor_is_stored_as_described() {
    // File (n, 1, y, x); descriptor [1, y, x]; and (2n, 1, y, x) with frame_per_point 2,
    // descriptor [2, y, x]: the frames land with the descriptor's shape.
    let fx = Fixture::new();
    let cases = ["four_d_described_3d", "four_d_fpp2"];
    let out = generate(&fx, &cases);
    let (code, stdout, stderr) = ingest(&fx, &out, &cases);
    assert_eq!(code, 0, "{stdout}{stderr}");
    read_back_bit_exact(&fx, &out, &cases, 4 + 3);
    let shapes: String = fx
        .open(&fx.beamtime_db("bt"))
        .query_row(
            "SELECT group_concat(s, ' ') FROM (SELECT DISTINCT frame_shape AS s FROM image_refs ORDER BY s)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(shapes, "[1,37,53] [2,37,53]");
}

#[test]
fn ingest_detector_corrupt_compressed_chunk_is_rejected_not_a_crash() {
    // Garbage in an LZ4 stream (bitshuffle, LZ4); a Blosc header that lies about its length.
    for case in ["bslz4_corrupt", "lz4_corrupt", "blosc_corrupt"] {
        // At the event of the frame (line 7), with the decoder's own reason after libhdf5's.
        let out = refused(
            case,
            &[
                ".jsonl:7: img: ",
                "cannot read rows [1, 2)",
                "filter returned failure during read: ",
            ],
        );
        assert!(!out.contains("panicked"), "{out}");
    }
}

#[test]
fn ingest_detector_hdf5_prefix_variable_makes_linked_files_refused_not_guessed() {
    // With HDF5_EXT_PREFIX set, libhdf5 would look for a link's target there first: beamdb
    // cannot tell which file it would read, so an Eiger master's links are refused.
    let fx = Fixture::new();
    let out = generate(&fx, &["eiger_stream"]);
    let map = root_map(&out);
    let doc = out.join("eiger_stream.jsonl");
    let (code, stdout, _) = run(fx
        .beamdb(&["ingest", "--beamtime", "bt", "--root-map", &map, path(&doc)])
        .env("HDF5_EXT_PREFIX", fx.path()));
    assert_eq!(code, 4, "{stdout}");
    assert!(
        stdout.contains("HDF5_EXT_PREFIX is set") && stdout.contains("unset HDF5_EXT_PREFIX"),
        "{stdout}"
    );
    assert_eq!(counts(&fx), (0, 0, 0));
}

#[test]
fn ingest_detector_eiger_bad_datums_are_rejected() {
    for (name, from, to, message) in [
        (
            "range",
            "\"frame_num\": 5}",
            "\"frame_num\": 50}",
            "eiger_4_master.h5 /entry/data/data_*: rows [50, 51) are asked for, but the dataset has 6 rows",
        ),
        (
            "seq",
            "\"seq_id\": 4, \"frame_num\": 0}",
            "\"seq_id\": 9, \"frame_num\": 0}",
            "eiger_9_master.h5: frame file is missing",
        ),
        (
            "noseq",
            "\"seq_id\": 4, \"frame_num\": 2}",
            "\"frame_num\": 2}",
            "AD_EIGER needs a non-negative integer `seq_id`",
        ),
    ] {
        let fx = Fixture::new();
        let out = generate(&fx, &["eiger"]);
        let doc = out.join("eiger.jsonl");
        let text = std::fs::read_to_string(&doc).unwrap();
        assert!(text.contains(from), "{name}");
        std::fs::write(&doc, text.replace(from, to)).unwrap();
        let (code, stdout, _) = ingest(&fx, &out, &["eiger"]);
        assert_eq!(code, 4, "{name}: {stdout}");
        assert!(
            stdout.contains(message),
            "{name}: want {message} in {stdout}"
        );
        assert_eq!(counts(&fx), (0, 0, 0), "{name}");
    }
}

#[test]
fn ingest_detector_tiff_that_is_not_a_tiff_is_rejected_not_a_crash() {
    let fx = Fixture::new();
    let out = generate(&fx, &["tiff"]);
    // A header that promises a huge image, then garbage; and a file that is no TIFF at all.
    let mut lying = b"II*\0\x08\0\0\0\x01\0\x00\x01\x04\0\x01\0\0\0\xff\xff\xff\x7f".to_vec();
    lying.extend([0u8; 16]);
    std::fs::write(out.join("root/tiff/tiff/scan7_000001.tiff"), lying).unwrap();
    std::fs::write(out.join("root/tiff/tiff/scan7_000002.tiff"), "not a tiff").unwrap();
    let (code, stdout, _) = ingest(&fx, &out, &["tiff"]);
    assert_eq!(code, 4, "{stdout}");
    assert!(
        stdout.contains("scan7_000001.tiff: cannot read the frame: not a readable TIFF frame"),
        "{stdout}"
    );
    assert_eq!(counts(&fx), (0, 0, 0));
}
