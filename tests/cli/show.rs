//! `show UID` on the sample runs (NPY, HDF5 with events and pages, a fly scan, baseline
//! streams, several descriptors of one stream), checked field by field against the
//! documents that went in; the run lookup (prefixes, nearest matches, a uid in two
//! beamtimes, a stale index); runs whose frames are gone; hostile document text; and the
//! paths `runs --json` gives.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value as Json;

use crate::common::{Fixture, path, repo, run, shared_map};

const NPY_RUN: &str = "682a43b9-a2ae-49de-8435-1bc6638aee60";
const NPY_PAGES: &str = "4c25f8e6-90b0-4d43-a8f6-36e5dbd66ff9";
const SCALAR_RUN: &str = "7fbdf1df-8554-4a45-8123-cc03d61f67fc";
const INLINE_RUN: &str = "98786b6e-de87-4ab0-9fb5-338308b26fd2";
/// HDF5 (AD_HDF5), one frame per event.
const AD_COUNT: &str = "85cd65f3-aab4-4de1-973c-0b3b646d5056";
/// HDF5 with event_page and datum_page.
const AD_PAGES: &str = "8e1b26b6-4f77-42ae-a85a-a69ec8225170";
/// stream_resource fly scan: stream_datum and no events.
const SR_FLY: &str = "b6a82a9e-1e51-41d3-a3af-d506fe46eb68";
/// Scalars in a primary and a baseline stream.
const BASELINE_RUN: &str = "2d496cb0-3d6e-4160-916e-02ad99f94aee";
/// Three descriptors, two of them of one stream (configuration changed mid-run).
const RECONFIGURED: &str = "875f0766-ee45-4da8-80cc-11ca9f6cc882";

fn hdf5_map() -> String {
    format!(
        "/srv/beamline/shared/hdf5={}",
        repo("tests/data/hdf5/shared/hdf5").display()
    )
}

fn reconfigured_map() -> String {
    format!(
        "/tmp/gen/reconf/frames={}",
        repo("tests/data/reconfigured/frames").display()
    )
}

/// The source documents of every sample run, by uid.
fn source(uid: &str) -> PathBuf {
    for dir in [
        "tests/data/bluesky",
        "tests/data/hdf5/shared",
        "tests/data/hidden",
        "tests/data/reconfigured",
    ] {
        let file = repo(&format!("{dir}/{uid}.jsonl"));
        if file.exists() {
            return file;
        }
    }
    panic!("no sample run {uid}");
}

fn ingest(fx: &Fixture, beamtime: &str, files: &[&Path]) {
    let (shared, hdf5, reconf) = (shared_map(), hdf5_map(), reconfigured_map());
    let mut args = vec![
        "ingest",
        "--beamtime",
        beamtime,
        "--root-map",
        &shared,
        "--root-map",
        &hdf5,
        "--root-map",
        &reconf,
    ];
    args.extend(files.iter().map(|f| path(f)));
    let (code, out, err) = run(&mut fx.beamdb(&args));
    assert_eq!(code, 0, "{out}{err}");
}

fn beamdb(fx: &Fixture, args: &[&str]) -> (i32, String, String) {
    run(&mut fx.beamdb(args))
}

fn show_json(fx: &Fixture, args: &[&str]) -> Json {
    let mut all = vec!["show", "--json"];
    all.extend_from_slice(args);
    let (code, out, err) = beamdb(fx, &all);
    assert_eq!(code, 0, "{out}{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The documents of a suitcase-jsonl file.
fn documents(file: &Path) -> Vec<(String, Json)> {
    std::fs::read_to_string(file)
        .expect("sample run")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let doc: Json = serde_json::from_str(l).expect("jsonl");
            (doc[0].as_str().expect("name").to_string(), doc[1].clone())
        })
        .collect()
}

/// Everything `show --json` says about a run, checked against the documents it came from
/// and against beamtime.db's image_refs: the start summary, every descriptor under its
/// stream with each data key exactly as given and in its order, events per stream as the
/// stop counts them, and each frame field's array, count, dtype and codec as recorded.
fn assert_matches_documents(fx: &Fixture, shown: &Json, file: &Path) {
    let docs = documents(file);
    let start = &docs.iter().find(|(n, _)| n == "start").expect("start").1;
    let stop = &docs.iter().find(|(n, _)| n == "stop").expect("stop").1;
    let uid = start["uid"].as_str().expect("uid");
    assert_eq!(shown["uid"], start["uid"]);
    assert_eq!(shown["plan_name"], start["plan_name"]);
    assert_eq!(shown["scan_id"], start["scan_id"]);
    assert_eq!(shown["time_start"], start["time"]);
    assert_eq!(shown["time_stop"], stop["time"]);
    assert_eq!(shown["exit_status"], stop["exit_status"]);
    assert_eq!(shown["problems"], serde_json::json!([]), "{shown:#}");
    let descriptors: Vec<&Json> = docs
        .iter()
        .filter(|(n, _)| n == "descriptor")
        .map(|(_, d)| d)
        .collect();
    let streams = shown["streams"].as_array().expect("streams");
    let names: std::collections::BTreeSet<&str> = descriptors
        .iter()
        .map(|d| d["name"].as_str().expect("name"))
        .collect();
    assert_eq!(streams.len(), names.len(), "{shown:#}");
    for stream in streams {
        let name = stream["name"].as_str().expect("name");
        assert_eq!(
            stream["events"], stop["num_events"][name],
            "events of stream {name}"
        );
        let of_stream: Vec<&&Json> = descriptors.iter().filter(|d| d["name"] == name).collect();
        let shown_descriptors = stream["descriptors"].as_array().expect("descriptors");
        assert_eq!(shown_descriptors.len(), of_stream.len());
        for (shown_d, doc) in shown_descriptors.iter().zip(of_stream) {
            assert_eq!(shown_d["uid"], doc["uid"]);
            let keys = doc["data_keys"].as_object().expect("data_keys");
            let fields = shown_d["fields"].as_array().expect("fields");
            let shown_names: Vec<&str> =
                fields.iter().map(|f| f["name"].as_str().unwrap()).collect();
            let doc_names: Vec<&str> = keys.keys().map(String::as_str).collect();
            assert_eq!(
                shown_names, doc_names,
                "fields of descriptor {}",
                doc["uid"]
            );
            for field in fields {
                let key = &keys[field["name"].as_str().unwrap()];
                assert_eq!(&field["data_key"], key);
                for k in [
                    "dtype",
                    "dtype_str",
                    "shape",
                    "units",
                    "source",
                    "precision",
                ] {
                    assert_eq!(field[k], *key.get(k).unwrap_or(&Json::Null), "{k}");
                }
                assert_eq!(
                    field["external"],
                    *key.get("external").unwrap_or(&Json::Null)
                );
                check_frames(fx, shown, doc["uid"].as_str().unwrap(), field);
                // The field's own array in the stream group: where its frames are (and,
                // when the store keeps scalars as columns, theirs).
                let own = format!("runs/{uid}/{name}/{}", field["name"].as_str().unwrap());
                let store = Path::new(shown["frames_store"].as_str().unwrap());
                if field["frames"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|f| f["array"] == own.as_str())
                {
                    assert_eq!(field["array"], own.as_str());
                }
                match field["array"].as_str() {
                    Some(array) => assert!(store.join(array).join("zarr.json").is_file()),
                    None => assert!(!store.join(&own).exists()),
                }
            }
        }
    }
    let frames: i64 = streams.iter().map(|s| s["frames"].as_i64().unwrap()).sum();
    let group = Path::new(shown["frames"].as_str().expect("frames"));
    assert!(group.is_absolute() && group.ends_with(format!("frames.zarr/runs/{uid}")));
    // A run with frames has its group (every run will, once scalars are columns too).
    if frames > 0 {
        assert_eq!(shown["frames_exist"], true, "{shown:#}");
        assert!(group.is_dir(), "{group:?}");
    }
    assert_eq!(shown["frames_exist"], group.is_dir());
    let database = Path::new(shown["database"].as_str().expect("database"));
    assert!(database.is_absolute() && database.is_file(), "{database:?}");
    assert_eq!(
        database,
        std::path::absolute(fx.beamtime_db(shown["beamtime"].as_str().unwrap())).unwrap()
    );
}

/// A field's frames as `show` lists them equal its image_refs rows, and the arrays exist.
fn check_frames(fx: &Fixture, shown: &Json, descriptor: &str, field: &Json) {
    let conn = fx.open(&fx.beamtime_db(shown["beamtime"].as_str().unwrap()));
    let mut stmt = conn
        .prepare(
            "SELECT zarr_group, count(*), dtype, compression_codec FROM image_refs
             WHERE stream_uid = ?1 AND field_name = ?2 GROUP BY zarr_group, dtype, compression_codec",
        )
        .unwrap();
    let rows: Vec<(String, i64, String, Option<String>)> = stmt
        .query_map([descriptor, field["name"].as_str().unwrap()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let frames = field["frames"].as_array().expect("frames");
    assert_eq!(frames.len(), rows.len(), "{field:#}");
    for (f, (array, count, dtype, codec)) in frames.iter().zip(rows) {
        assert_eq!(f["array"], array.as_str());
        assert_eq!(f["count"], count);
        assert_eq!(f["dtype"], dtype.as_str());
        assert_eq!(f["codec"], codec.map_or(Json::Null, Json::from));
        assert_eq!(f["problem"], Json::Null);
        let on_disk = Path::new(f["path"].as_str().unwrap());
        assert!(on_disk.join("zarr.json").is_file(), "{on_disk:?}");
    }
}

#[test]
fn show_json_matches_the_documents_of_every_sample_run() {
    let fx = Fixture::new();
    let uids = [
        NPY_RUN,
        NPY_PAGES,
        SCALAR_RUN,
        INLINE_RUN,
        AD_COUNT,
        AD_PAGES,
        SR_FLY,
        BASELINE_RUN,
        RECONFIGURED,
    ];
    let files: Vec<PathBuf> = uids.iter().map(|u| source(u)).collect();
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    ingest(&fx, "bt", &refs);
    for (uid, file) in uids.iter().zip(&files) {
        let shown = show_json(&fx, &[uid]);
        assert_eq!(shown["beamtime"], "bt");
        assert_matches_documents(&fx, &shown, file);
    }
    // The fly scan has no event rows: its points are its stream_datum's.
    let fly = show_json(&fx, &[SR_FLY]);
    assert_eq!(fly["num_events"], 3);
    assert_eq!(fly["streams"][0]["events"], 3);
    // Two descriptors of one stream are both under it, in the order they came.
    let reconf = show_json(&fx, &[RECONFIGURED]);
    let counts: Vec<usize> = reconf["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["descriptors"].as_array().unwrap().len())
        .collect();
    assert!(counts.contains(&2), "{counts:?}");
}

#[test]
fn show_table_lists_the_summary_streams_and_fields() {
    let fx = Fixture::new();
    ingest(&fx, "bt", &[&source(NPY_RUN), &source(BASELINE_RUN)]);
    let (code, out, err) = beamdb(&fx, &["show", &NPY_RUN[..8]]);
    assert_eq!(code, 0, "{out}{err}");
    let root = std::path::absolute(fx.data_root()).unwrap();
    for needle in [
        format!("run         {NPY_RUN}"),
        "plan        count".to_string(),
        "sample      PS-film".to_string(),
        "status      success".to_string(),
        "events      5".to_string(),
        format!("database    {}/beamtimes/bt/beamtime.db", root.display()),
        format!(
            "frames      {}/beamtimes/bt/frames.zarr/runs/{NPY_RUN}",
            root.display()
        ),
        "STREAM   DESCRIPTORS  EVENTS  FRAMES".to_string(),
        "primary  1            5       5".to_string(),
    ] {
        assert!(out.contains(&needle), "{needle:?} not in\n{out}");
    }
    let field = out
        .lines()
        .find(|l| l.starts_with("primary  ccd"))
        .unwrap_or_else(|| panic!("{out}"));
    for part in [
        "array",
        "[64,64]",
        "SIM:ccd",
        "FILESTORE",
        "5 x <u2 in primary/ccd",
    ] {
        assert!(field.contains(part), "{part:?} not in {field:?}");
    }
    // The baseline stream and its scalars, which stay in the events.
    let (code, out, err) = beamdb(&fx, &["show", BASELINE_RUN]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.lines().any(|l| l.starts_with("baseline ")), "{out}");
    let motor = out
        .lines()
        .find(|l| l.starts_with("baseline  motor1 "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        motor.contains("number")
            && motor.contains("SIM:motor1")
            && motor.contains("- (in the events; column in baseline/motor1)"),
        "{motor}"
    );
}

#[test]
fn show_help_names_the_prefix_rule_and_the_exit_statuses() {
    let fx = Fixture::new();
    let (code, out, _) = beamdb(&fx, &["show", "--help"]);
    assert_eq!(code, 0);
    for needle in [
        "--beamtime",
        "--json",
        "at least 8 characters",
        "Exit status",
        "quarantined",
    ] {
        assert!(out.contains(needle), "{needle:?} not in\n{out}");
    }
}

#[test]
fn show_unknown_uid_or_beamtime_exits_2_naming_the_nearest() {
    let fx = Fixture::new();
    ingest(&fx, "bt-2026-03", &[&source(NPY_RUN), &source(SCALAR_RUN)]);
    // One character wrong in a whole uid, and two swapped in a prefix.
    let typo = NPY_RUN.replace("aee60", "aee61");
    let (code, out, err) = beamdb(&fx, &["show", &typo]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains(&format!("no run {typo}"))
            && err.contains(&format!("did you mean {NPY_RUN} (beamtime bt-2026-03)?")),
        "{err}"
    );
    let (code, _, err) = beamdb(&fx, &["show", "682a34b9"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("did you mean {NPY_RUN}")), "{err}");
    // Nothing like it: no suggestion.
    let (code, _, err) = beamdb(&fx, &["show", "ffffffff-0000"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no run ffffffff-0000") && !err.contains("did you mean"),
        "{err}"
    );
    // Too short to be a prefix, even of one run.
    let (code, _, err) = beamdb(&fx, &["show", &NPY_RUN[..7]]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("at least 8 characters"), "{err}");
    // An unknown beamtime.
    let (code, _, err) = beamdb(&fx, &["show", NPY_RUN, "--beamtime", "bt-2026-3"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no beamtime bt-2026-3") && err.contains("did you mean bt-2026-03?"),
        "{err}"
    );
    // A beamtime id that could not be one names the rule, and touches nothing.
    let (code, _, err) = beamdb(&fx, &["show", NPY_RUN, "--beamtime", "../x"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a safe name"), "{err}");
    // The right uid in the wrong beamtime says where it is.
    ingest(&fx, "other", &[&source(INLINE_RUN)]);
    assert_eq!(beamdb(&fx, &["reindex"]).0, 0);
    let (code, _, err) = beamdb(&fx, &["show", NPY_RUN, "--beamtime", "other"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("no run {NPY_RUN} in beamtime other"))
            && err.contains("it is in beamtime bt-2026-03"),
        "{err}"
    );
}

/// A copy of a sample run under another uid that shares the original's first `keep`
/// characters.
fn renamed(fx: &Fixture, uid: &str, keep: usize, name: &str) -> (String, PathBuf) {
    let new: String = uid[..keep].to_string() + &"0".repeat(uid.len() - keep);
    let file = fx.edited_copy(&source(uid), name, |t| t.replace(uid, &new));
    (new, file)
}

#[test]
fn show_an_ambiguous_prefix_lists_the_candidates() {
    let fx = Fixture::new();
    ingest(&fx, "bt", &[&source(INLINE_RUN)]);
    let (twin, file) = renamed(&fx, INLINE_RUN, 13, "twin.jsonl");
    ingest(&fx, "bt2", &[&file]);
    for indexed in [false, true] {
        if indexed {
            assert_eq!(beamdb(&fx, &["reindex"]).0, 0);
        }
        let (code, out, err) = beamdb(&fx, &["show", &INLINE_RUN[..8]]);
        assert_eq!(code, 2, "{out}{err}");
        assert!(
            err.contains(&format!("{} is the start of 2 runs", &INLINE_RUN[..8]))
                && err.contains(&format!("  {INLINE_RUN}  (beamtime bt)"))
                && err.contains(&format!("  {twin}  (beamtime bt2)")),
            "{err}"
        );
        // A longer prefix decides.
        let shown = show_json(&fx, &[&INLINE_RUN[..14]]);
        assert_eq!(shown["uid"], INLINE_RUN);
        assert_eq!(
            shown["found_via"],
            if indexed { "index" } else { "databases" }
        );
    }
}

#[test]
fn show_a_uid_in_two_beamtimes_needs_beamtime_even_through_the_index() {
    let fx = Fixture::new();
    ingest(&fx, "bt", &[&source(NPY_RUN)]);
    ingest(&fx, "bt2", &[&source(NPY_RUN)]);
    for indexed in [false, true] {
        if indexed {
            // The index keeps one row per uid: reindex reports the second as a duplicate.
            let (code, out, err) = beamdb(&fx, &["reindex"]);
            assert_eq!(code, 4, "{out}{err}");
        }
        let (code, out, err) = beamdb(&fx, &["show", NPY_RUN]);
        assert_eq!(code, 2, "indexed {indexed}: {out}{err}");
        assert!(
            err.contains(&format!(
                "run {NPY_RUN} is stored in several beamtimes (bt, bt2); say which with --beamtime bt"
            )),
            "{err}"
        );
        for bt in ["bt", "bt2"] {
            let shown = show_json(&fx, &[&NPY_RUN[..8], "--beamtime", bt]);
            assert_eq!(shown["beamtime"], bt);
            assert_eq!(shown["found_via"], "beamtime");
            assert_matches_documents(&fx, &shown, &source(NPY_RUN));
        }
    }
}

#[test]
fn show_reads_the_beamtimes_when_the_index_is_stale() {
    let fx = Fixture::new();
    // No index at all: every beamtime is read.
    ingest(&fx, "old", &[&source(NPY_RUN)]);
    ingest(&fx, "bt", &[&source(SCALAR_RUN)]);
    let shown = show_json(&fx, &[NPY_RUN]);
    assert_eq!(
        (&shown["found_via"], &shown["found_via_reason"]),
        (
            &Json::from("databases"),
            &Json::from("there is no index.db")
        )
    );
    assert_eq!(beamdb(&fx, &["reindex"]).0, 0);
    assert_eq!(show_json(&fx, &[SCALAR_RUN])["found_via"], "index");
    // Runs ingested since the reindex, into an indexed beamtime and into a new one: those two
    // beamtimes are read (the indexed runs of bt too), the unchanged one still comes from
    // the index.
    ingest(&fx, "bt", &[&source(INLINE_RUN)]);
    ingest(&fx, "new", &[&source(AD_COUNT)]);
    for (uid, bt, why) in [
        (
            SCALAR_RUN,
            "bt",
            "beamtime bt changed since the last `beamdb reindex`",
        ),
        (
            INLINE_RUN,
            "bt",
            "beamtime bt changed since the last `beamdb reindex`",
        ),
        (
            AD_COUNT,
            "new",
            "beamtime new is not in the index yet (run `beamdb reindex`)",
        ),
    ] {
        let shown = show_json(&fx, &[uid]);
        assert_eq!(shown["beamtime"], bt);
        assert_eq!(shown["found_via"], "databases");
        assert_eq!(shown["found_via_reason"], why);
        let (code, out, err) = beamdb(&fx, &["show", uid]);
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains(&format!(
                "beamtime    {bt} (found by reading its database: {why})"
            )),
            "{out}"
        );
    }
    let shown = show_json(&fx, &[NPY_RUN]);
    assert_eq!(shown["found_via"], "index");
    let (_, out, _) = beamdb(&fx, &["show", NPY_RUN]);
    assert!(
        out.contains("beamtime    old (found through the index)"),
        "{out}"
    );
    assert_eq!(beamdb(&fx, &["reindex"]).0, 0);
    assert_eq!(show_json(&fx, &[INLINE_RUN])["found_via"], "index");
    assert_eq!(show_json(&fx, &[AD_COUNT])["found_via"], "index");
}

#[test]
fn show_says_when_frames_are_missing_the_run_is_incomplete_or_its_replace_was_interrupted() {
    let fx = Fixture::new();
    let no_stop = fx.edited_copy(&source(NPY_PAGES), "no-stop.jsonl", |t| {
        t.lines()
            .filter(|l| !l.starts_with("[\"stop\""))
            .collect::<Vec<_>>()
            .join("\n")
    });
    ingest(&fx, "bt", &[&source(NPY_RUN), &source(AD_COUNT), &no_stop]);
    let root = fx.data_root().join("beamtimes/bt/frames.zarr/runs");
    // The whole group of one run gone; one array of another.
    std::fs::remove_dir_all(root.join(NPY_RUN)).unwrap();
    let (code, out, err) = beamdb(&fx, &["show", NPY_RUN]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("(MISSING)") && out.contains("PROBLEM     frames missing"),
        "{out}"
    );
    let shown = show_json(&fx, &[NPY_RUN]);
    assert_eq!(shown["frames_exist"], false);
    assert!(
        shown["problems"][0]
            .as_str()
            .unwrap()
            .starts_with("frames missing")
    );
    let field = &shown["streams"][0]["descriptors"][0]["fields"][0];
    assert!(
        field["frames"][0]["problem"]
            .as_str()
            .unwrap()
            .starts_with("missing")
    );

    let array = std::fs::read_dir(root.join(AD_COUNT).join("primary"))
        .unwrap()
        .map(|e| e.unwrap().path())
        // A frame stack (not the `time` coordinate or a scalar column): three dimensions or more.
        .find(|p| {
            std::fs::read_to_string(p.join("zarr.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|m| m["shape"].as_array().map(|s| s.len() >= 3))
                .unwrap_or(false)
        })
        .expect("a frame array");
    std::fs::remove_dir_all(&array).unwrap();
    let shown = show_json(&fx, &[AD_COUNT]);
    assert_eq!(shown["frames_exist"], true);
    assert!(
        shown["problems"][0]
            .as_str()
            .unwrap()
            .contains("frames missing or wrong in 1 array"),
        "{shown:#}"
    );
    let (_, out, _) = beamdb(&fx, &["show", AD_COUNT]);
    assert!(out.contains("MISSING OR WRONG"), "{out}");

    // What a killed `ingest --replace` leaves: the previous copy of the frames, staged.
    let staged = fx
        .data_root()
        .join(format!("beamtimes/bt/frames.staging/{NPY_PAGES}.old"));
    std::fs::create_dir_all(&staged).unwrap();
    let shown = show_json(&fx, &[NPY_PAGES]);
    assert!(
        shown["problems"].as_array().unwrap().iter().any(|p| p
            .as_str()
            .unwrap()
            .starts_with("an ingest --replace of this run was interrupted")),
        "{shown:#}"
    );
    std::fs::remove_dir(&staged).unwrap();

    let shown = show_json(&fx, &[NPY_PAGES]);
    assert_eq!(shown["exit_status"], Json::Null);
    assert!(
        shown["problems"][0]
            .as_str()
            .unwrap()
            .starts_with("incomplete")
    );
    let (_, out, _) = beamdb(&fx, &["show", NPY_PAGES]);
    assert!(
        out.contains("status      incomplete (no stop document)"),
        "{out}"
    );
}

#[test]
fn show_a_quarantined_run_names_its_quarantine_file() {
    let fx = Fixture::new();
    ingest(&fx, "bt", &[&source(NPY_RUN)]);
    std::fs::remove_dir_all(
        fx.data_root()
            .join("beamtimes/bt/frames.zarr/runs")
            .join(NPY_RUN),
    )
    .unwrap();
    let (code, out, err) = beamdb(&fx, &["verify", "--repair"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = beamdb(&fx, &["show", NPY_RUN]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("quarantined by `beamdb verify --repair`")
            && err.contains(&format!("/beamtimes/bt/quarantine/{NPY_RUN}-"))
            && err.contains("re-ingest"),
        "{err}"
    );
}

#[test]
fn show_document_text_is_escaped_in_the_table() {
    let fx = Fixture::new();
    let hostile = fx.edited_copy(&source(SCALAR_RUN), "hostile.jsonl", |t| {
        t.replace(
            "\"data_keys\": {\"det1\": {\"source\": \"SIM:det1\"",
            "\"data_keys\": {\"det1\": {\"units\": \"mm\\u001b[2J\\nprimary  forged\", \"source\": \"SIM:det1\\u202e\"",
        )
        .replace("\"sample_name\": \"PS-film\"", "\"sample_name\": \"PS\\r\\u001b[31m\"")
    });
    ingest(&fx, "bt", &[&hostile]);
    let (code, out, err) = beamdb(&fx, &["show", SCALAR_RUN]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !out.contains('\u{1b}') && !out.contains('\r') && !out.contains('\u{202e}'),
        "{out:?}"
    );
    assert!(out.contains("sample      PS\\r\\u{1b}[31m"), "{out}");
    let det1 = out
        .lines()
        .find(|l| l.starts_with("primary  det1 "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        det1.contains("mm\\u{1b}[2J\\nprimary  forged") && det1.contains("SIM:det1\\u{202e}"),
        "{det1}"
    );
    assert!(
        !out.lines().any(|l| l.starts_with("primary  forged")),
        "{out}"
    );
    // JSON keeps the text as it is.
    let shown = show_json(&fx, &[SCALAR_RUN]);
    let field = shown["streams"][0]["descriptors"][0]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "det1")
        .unwrap()
        .clone();
    assert_eq!(field["units"], "mm\u{1b}[2J\nprimary  forged");
}

/// `show … | head -0`: a closed stdout ends the printing, not the command (no panic).
#[test]
fn show_into_a_closed_pipe_exits_0() {
    let fx = Fixture::new();
    ingest(&fx, "bt", &[&source(NPY_RUN)]);
    for json in [false, true] {
        let mut args = vec!["show", NPY_RUN];
        if json {
            args.push("--json");
        }
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin!("beamdb"))
            .current_dir(fx.path())
            .env_clear()
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn beamdb");
        drop(child.stdout.take());
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn runs_json_gives_each_runs_database_and_frames_paths() {
    let fx = Fixture::new();
    ingest(&fx, "bt", &[&source(NPY_RUN), &source(SCALAR_RUN)]);
    ingest(&fx, "bt2", &[&source(AD_COUNT)]);
    assert_eq!(beamdb(&fx, &["reindex"]).0, 0);
    let (code, out, err) = beamdb(&fx, &["runs", "--json"]);
    assert_eq!(code, 0, "{err}");
    let runs: Json = serde_json::from_str(&out).unwrap();
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 3);
    let root = std::path::absolute(fx.data_root()).unwrap();
    for r in runs {
        let (uid, bt) = (r["uid"].as_str().unwrap(), r["beamtime"].as_str().unwrap());
        let database = Path::new(r["database"].as_str().unwrap());
        let frames = Path::new(r["frames"].as_str().unwrap());
        assert_eq!(database, root.join(format!("beamtimes/{bt}/beamtime.db")));
        assert_eq!(
            frames,
            root.join(format!("beamtimes/{bt}/frames.zarr/runs/{uid}"))
        );
        assert!(database.is_file());
        // A run with frames has its group (the scalar run has none yet).
        assert!(
            frames.join("zarr.json").is_file() || uid == SCALAR_RUN,
            "{uid}"
        );
        // show says the same.
        let shown = show_json(&fx, &[uid]);
        assert_eq!(shown["database"], r["database"]);
        assert_eq!(shown["frames"], r["frames"]);
    }
}

/// A hand-edited image_ref whose array path leaves the run's group is reported, not followed.
#[test]
fn show_an_image_ref_pointing_outside_the_run_is_a_problem_not_a_read() {
    let fx = Fixture::new();
    ingest(&fx, "bt", &[&source(NPY_RUN)]);
    fx.open(&fx.beamtime_db("bt"))
        .execute(
            &format!("UPDATE image_refs SET zarr_group = 'runs/{NPY_RUN}/../../../../etc'"),
            [],
        )
        .unwrap();
    let shown = show_json(&fx, &[NPY_RUN]);
    let frames = &shown["streams"][0]["descriptors"][0]["fields"][0]["frames"][0];
    assert_eq!(
        frames["problem"], "the image_ref points outside the run's group",
        "{shown:#}"
    );
    assert!(
        shown["problems"][0]
            .as_str()
            .unwrap()
            .contains("frames missing or wrong in 1 array"),
        "{shown:#}"
    );
}
