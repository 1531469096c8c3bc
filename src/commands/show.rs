//! `beamdb show UID`: one run, its streams and fields, and where it is stored.

use serde_json::{Map, Value as Json};

use super::Ctx;
use super::runs::{iso_time, local_time};
use crate::cli::ShowArgs;
use crate::describe::{self, FieldInfo, RunInfo};
use crate::escape::escape;
use crate::exit::{ExitStatus, Result};
use crate::lookup::{self, Via};

pub fn run(ctx: &Ctx, args: &ShowArgs) -> Result<ExitStatus> {
    let found = lookup::find_run(&ctx.settings, &args.uid, args.beamtime.as_deref())?;
    let info = describe::describe(&ctx.settings, &found.beamtime, &found.uid)?;
    let text = if args.json {
        to_json(&info, &found.via)
    } else {
        to_table(&info, &found.via)
    };
    crate::out!("{text}");
    Ok(ExitStatus::Success)
}

/// The `--json` object. Its keys are stable (docs/user-guide.md lists them); document text
/// is kept as it is (JSON escapes what must be).
fn to_json(info: &RunInfo, via: &Via) -> String {
    let mut o = Map::new();
    o.insert("uid".into(), info.uid.clone().into());
    o.insert("beamtime".into(), info.beamtime.clone().into());
    o.insert("found_via".into(), via.key().into());
    o.insert(
        "found_via_reason".into(),
        match via {
            Via::Databases { why } => why.clone().into(),
            Via::Beamtime | Via::Index => Json::Null,
        },
    );
    o.insert("plan_name".into(), info.plan_name.clone().into());
    o.insert("scan_id".into(), info.scan_id.into());
    o.insert("sample_name".into(), info.sample_name.clone().into());
    o.insert("researcher".into(), info.researcher.clone().into());
    o.insert("operator".into(), info.operator.clone().into());
    o.insert("time_start".into(), info.time_start.into());
    o.insert("time_start_iso".into(), iso_time(Some(info.time_start)));
    o.insert("time_stop".into(), info.time_stop.into());
    o.insert("time_stop_iso".into(), iso_time(info.time_stop));
    o.insert("exit_status".into(), info.exit_status.clone().into());
    o.insert("reason".into(), info.reason.clone().into());
    o.insert("num_events".into(), info.num_events.into());
    o.insert("database".into(), path_json(&info.location.database));
    o.insert("frames_store".into(), info.location.store_text().into());
    o.insert(
        "frames".into(),
        info.location
            .run_group_text()
            .map_or(Json::Null, Json::from),
    );
    o.insert("frames_exist".into(), info.group_exists.into());
    o.insert("problems".into(), info.problems.clone().into());
    let streams: Vec<Json> = info
        .streams
        .iter()
        .map(|stream| {
            let descriptors: Vec<Json> = stream
                .descriptors
                .iter()
                .map(|d| {
                    let mut o = Map::new();
                    o.insert("uid".into(), d.uid.clone().into());
                    o.insert("time_created".into(), d.time_created.into());
                    o.insert("events".into(), d.events.into());
                    o.insert("frames".into(), d.frames.into());
                    o.insert(
                        "fields".into(),
                        d.fields.iter().map(field_json).collect::<Vec<_>>().into(),
                    );
                    Json::Object(o)
                })
                .collect();
            let mut o = Map::new();
            o.insert("name".into(), stream.name.clone().into());
            o.insert("events".into(), stream.events.into());
            o.insert("frames".into(), stream.frames.into());
            o.insert("descriptors".into(), descriptors.into());
            Json::Object(o)
        })
        .collect();
    o.insert("streams".into(), streams.into());
    let mut text = serde_json::to_string_pretty(&Json::Object(o)).unwrap_or_else(|_| "{}".into());
    text.push('\n');
    text
}

fn path_json(path: &std::path::Path) -> Json {
    path.to_string_lossy().into_owned().into()
}

fn field_json(field: &FieldInfo) -> Json {
    let key = |k: &str| field.data_key.get(k).cloned().unwrap_or(Json::Null);
    let mut o = Map::new();
    o.insert("name".into(), field.name.clone().into());
    for k in [
        "dtype",
        "dtype_str",
        "shape",
        "dims",
        "units",
        "source",
        "precision",
    ] {
        o.insert(k.into(), key(k));
    }
    o.insert("external".into(), field.external().into());
    o.insert("array".into(), field.array.clone().into());
    o.insert("data_key".into(), Json::Object(field.data_key.clone()));
    let frames: Vec<Json> = field
        .frames
        .iter()
        .map(|f| {
            let mut o = Map::new();
            o.insert("array".into(), f.array.clone().into());
            o.insert("path".into(), path_json(&f.path));
            o.insert("codec".into(), f.codec.clone().into());
            o.insert("dtype".into(), f.dtype.clone().into());
            o.insert(
                "frame_shape".into(),
                f.frame_shape
                    .as_deref()
                    .and_then(|s| serde_json::from_str(s).ok())
                    .unwrap_or(Json::Null),
            );
            o.insert("count".into(), f.count.into());
            o.insert("problem".into(), f.problem.clone().into());
            Json::Object(o)
        })
        .collect();
    o.insert("frames".into(), frames.into());
    Json::Object(o)
}

/// The text for people: a summary, then a table of streams and a table of fields.
/// Every text that came from a document is escaped (a field name must not forge a line or
/// repaint the terminal), before widths are measured so that columns stay aligned.
fn to_table(info: &RunInfo, via: &Via) -> String {
    let dash = |s: &Option<String>| s.as_deref().map_or("-".to_string(), esc);
    let found = match via {
        Via::Beamtime => String::new(),
        Via::Index => " (found through the index)".into(),
        Via::Databases { why } => format!(" (found by reading its database: {why})"),
    };
    let status = match (&info.exit_status, &info.reason) {
        (None, _) => "incomplete (no stop document)".to_string(),
        (Some(s), Some(r)) => format!("{}: {}", esc(s), esc(r)),
        (Some(s), None) => esc(s),
    };
    let stop = match info.time_stop {
        Some(t) => format!(
            "{} ({:.1} s after the start)",
            local_time(Some(t)),
            t - info.time_start
        ),
        None => "-".into(),
    };
    let group = info
        .location
        .run_group_text()
        .unwrap_or_else(|| format!("{}/runs/{}@?", info.location.store_text(), info.uid));
    let frames = if info.group_exists {
        group
    } else if info.streams.iter().any(|s| s.frames > 0) {
        format!("{group} (MISSING)")
    } else {
        format!("{group} (none: the run has no frames)")
    };
    let mut summary: Vec<(&str, String)> = vec![
        ("run", esc(&info.uid)),
        ("beamtime", format!("{}{found}", esc(&info.beamtime))),
        ("plan", esc(&info.plan_name)),
        ("scan", info.scan_id.map_or("-".into(), |s| s.to_string())),
        ("sample", dash(&info.sample_name)),
        ("researcher", dash(&info.researcher)),
        ("operator", dash(&info.operator)),
        ("start", local_time(Some(info.time_start))),
        ("stop", stop),
        ("status", status),
        ("events", info.num_events.to_string()),
        ("database", info.location.database.display().to_string()),
        ("frames", frames),
    ];
    for problem in &info.problems {
        summary.push(("PROBLEM", esc(problem)));
    }
    let mut text = String::new();
    for (label, value) in summary {
        text.push_str(&format!("{label:<10}  {value}\n"));
    }

    if info.streams.is_empty() {
        text.push_str("\n(no streams: the run has no descriptors)\n");
        return text;
    }
    let streams: Vec<Vec<String>> = info
        .streams
        .iter()
        .map(|s| {
            vec![
                esc(&s.name),
                s.descriptors.len().to_string(),
                s.events.to_string(),
                s.frames.to_string(),
            ]
        })
        .collect();
    text.push('\n');
    text.push_str(&table(
        &["STREAM", "DESCRIPTORS", "EVENTS", "FRAMES"],
        &streams,
    ));

    let run_group = format!("runs/{}/", info.uid);
    let mut fields = Vec::new();
    for stream in &info.streams {
        let several = stream.descriptors.len() > 1;
        for (n, descriptor) in stream.descriptors.iter().enumerate() {
            let name = if several {
                format!("{}#{}", esc(&stream.name), n + 1)
            } else {
                esc(&stream.name)
            };
            for field in &descriptor.fields {
                let dtype = match (field.text("dtype"), field.text("dtype_str")) {
                    (Some(d), Some(s)) => format!("{} {}", esc(d), esc(s)),
                    (Some(d), None) => esc(d),
                    (None, Some(s)) => esc(s),
                    (None, None) => "-".into(),
                };
                let shape = field
                    .data_key
                    .get("shape")
                    .map_or("-".into(), |s| esc(&s.to_string()));
                let frames: Vec<String> = field
                    .frames
                    .iter()
                    .map(|f| {
                        let array = f.array.strip_prefix(&run_group).unwrap_or(&f.array);
                        let mut cell = format!(
                            "{} x {} in {} ({})",
                            f.count,
                            esc(&f.dtype),
                            esc(array),
                            f.codec.as_deref().map_or("-".into(), esc)
                        );
                        if let Some(problem) = &f.problem {
                            cell.push_str(&format!(": MISSING OR WRONG: {}", esc(problem)));
                        }
                        cell
                    })
                    .collect();
                fields.push(vec![
                    name.clone(),
                    esc(&field.name),
                    dtype,
                    shape,
                    field.text("units").map_or("-".into(), esc),
                    field.text("source").map_or("-".into(), esc),
                    field.external().as_deref().map_or("-".into(), esc),
                    if frames.is_empty() {
                        match &field.array {
                            Some(array) => format!(
                                "- (in the events; column in {})",
                                esc(array.strip_prefix(&run_group).unwrap_or(array))
                            ),
                            None => "- (in the events)".into(),
                        }
                    } else {
                        frames.join("; ")
                    },
                ]);
            }
        }
    }
    text.push('\n');
    text.push_str(&table(
        &[
            "STREAM", "FIELD", "DTYPE", "SHAPE", "UNITS", "SOURCE", "EXTERNAL", "FRAMES",
        ],
        &fields,
    ));
    text
}

fn esc(text: &str) -> String {
    escape(text).into_owned()
}

/// Aligned columns under a header, as `runs` prints them (cells already escaped).
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let mut line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        text.push_str(padded.join("  ").trim_end());
        text.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    text
}
