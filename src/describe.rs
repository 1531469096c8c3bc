//! What one stored run holds, read from its beamtime's database and checked against its frame
//! store: the start summary, each stream's descriptors, events and frames, each field's data
//! key and where its frames are. Reads only; `show` prints it.

use std::path::PathBuf;

use rusqlite::{Connection, OptionalExtension};
use serde_json::{Map, Value as Json};

use crate::db::{self, Access, DbError};
use crate::exit::{ExitStatus, HasExitStatus};
use crate::frames::{self, Inspector};
use crate::layout::{Layout, SafeName};
use crate::lookup::{self, RunLocation};
use crate::settings::Settings;

/// One run, as `show` prints it. Texts are as stored (unescaped): printers escape them.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub uid: String,
    pub beamtime: String,
    pub plan_name: String,
    pub scan_id: Option<i64>,
    pub sample_name: Option<String>,
    pub researcher: Option<String>,
    pub operator: Option<String>,
    pub time_start: f64,
    pub time_stop: Option<f64>,
    /// `success`, `abort`, `fail`; `None` while incomplete (no stop document).
    pub exit_status: Option<String>,
    /// The stop document's `reason`, when it gives one.
    pub reason: Option<String>,
    pub num_events: i64,
    pub location: RunLocation,
    /// Whether the run's group is in the store.
    pub group_exists: bool,
    /// Streams by name, in the order their first descriptor was created.
    pub streams: Vec<StreamInfo>,
    /// What is wrong or unfinished about the run (incomplete, frames missing, a replacement
    /// interrupted), one sentence each.
    pub problems: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct StreamInfo {
    pub name: String,
    pub events: i64,
    pub frames: i64,
    pub descriptors: Vec<DescriptorInfo>,
}

#[derive(Debug, Clone)]
pub struct DescriptorInfo {
    pub uid: String,
    pub time_created: f64,
    /// Its events (their distinct seq_nums), a fly scan's stream_datum points included, as
    /// `runs.num_events` counts them.
    pub events: i64,
    pub frames: i64,
    /// The descriptor's data keys, in its order.
    pub fields: Vec<FieldInfo>,
}

#[derive(Debug, Clone)]
pub struct FieldInfo {
    pub name: String,
    /// The data key as the descriptor gave it (dtype, dtype_str, shape, units, source, ...).
    pub data_key: Map<String, Json>,
    /// Where this field's frames are (none for a field kept in the events' JSON).
    pub frames: Vec<FramesInfo>,
    /// The field's array in the stream's group (`runs/{uid}/{stream}/{field}`) when the store
    /// has one: frames, or a column of a scalar field when the store keeps those.
    pub array: Option<String>,
}

impl FieldInfo {
    /// A text entry of the data key (`dtype`, `units`, `source`, ...).
    pub fn text(&self, key: &str) -> Option<&str> {
        self.data_key.get(key).and_then(Json::as_str)
    }

    /// `external` as given: a string (`FILESTORE:`, `STREAM:`), absent when the data was
    /// inline.
    pub fn external(&self) -> Option<String> {
        match self.data_key.get("external") {
            None | Some(Json::Null) => None,
            Some(Json::String(s)) => Some(s.clone()),
            Some(other) => Some(other.to_string()),
        }
    }
}

/// One array of a field's frames in the store.
#[derive(Debug, Clone)]
pub struct FramesInfo {
    /// The array's path inside the store (`runs/{uid}/{stream}/{field}`).
    pub array: String,
    /// The array's absolute path.
    pub path: PathBuf,
    /// `image_refs.compression_codec` (`zstd(level=3)`, `none`).
    pub codec: Option<String>,
    /// numpy notation (`<u2`).
    pub dtype: String,
    /// JSON list, as recorded.
    pub frame_shape: Option<String>,
    /// Frames of this descriptor in the array.
    pub count: i64,
    /// The first and last of their indexes along the array's axis 0.
    pub indexes: (i64, i64),
    /// What is wrong with the array, if anything.
    pub problem: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DescribeError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{path}: cannot read run {uid}: {source}")]
    Read {
        path: PathBuf,
        uid: String,
        source: rusqlite::Error,
    },
    #[error("{path}: run {uid} is not there any more (removed since it was looked up)")]
    Gone { path: PathBuf, uid: String },
}

impl HasExitStatus for DescribeError {
    fn exit_status(&self) -> ExitStatus {
        match self {
            DescribeError::Db(e) => e.exit_status(),
            DescribeError::Read { .. } => ExitStatus::Failure,
            DescribeError::Gone { .. } => ExitStatus::Usage,
        }
    }
}

/// Reads run `uid` of beamtime `beamtime` in one read transaction (a consistent snapshot
/// while ingests write), then checks its frames' arrays in the store: each exists, holds the
/// recorded dtype and frame shape, and has the chunks of its first and last recorded frame
/// (`beamdb verify --deep` reads every frame).
pub fn describe(
    settings: &Settings,
    beamtime: &SafeName,
    uid: &SafeName,
) -> Result<RunInfo, DescribeError> {
    let layout = Layout::new(&settings.data_root);
    let location = lookup::locate(&layout, &settings.frames, &settings.sqlite, beamtime, uid);
    let mut conn = db::open(&location.database, Access::ReadOnly, &settings.sqlite)?;
    let read = |source| DescribeError::Read {
        path: location.database.clone(),
        uid: uid.to_string(),
        source,
    };
    let tx = conn.transaction().map_err(read)?;
    let mut info = read_run(&tx, beamtime, uid, location.clone())
        .map_err(read)?
        .ok_or_else(|| DescribeError::Gone {
            path: location.database.clone(),
            uid: uid.to_string(),
        })?;
    read_streams(&tx, &mut info).map_err(read)?;
    drop(tx);
    check_frames(&layout, beamtime, uid, &mut info);
    Ok(info)
}

fn read_run(
    conn: &Connection,
    beamtime: &SafeName,
    uid: &SafeName,
    location: RunLocation,
) -> rusqlite::Result<Option<RunInfo>> {
    conn.query_row(
        "SELECT r.plan_name, r.scan_id, s.name, r.researcher, r.operator, r.time_start,
                r.time_stop, r.exit_status, r.num_events, r.stop_metadata
         FROM runs r LEFT JOIN samples s ON s.id = r.sample_id WHERE r.uid = ?1",
        [uid.as_str()],
        |row| {
            let stop: Option<String> = row.get(9)?;
            let reason = stop
                .and_then(|s| serde_json::from_str::<Json>(&s).ok())
                .and_then(|doc| doc.get("reason").and_then(Json::as_str).map(str::to_string))
                .filter(|r| !r.is_empty());
            Ok(RunInfo {
                uid: uid.to_string(),
                beamtime: beamtime.to_string(),
                plan_name: row.get(0)?,
                scan_id: row.get(1)?,
                sample_name: row.get(2)?,
                researcher: row.get(3)?,
                operator: row.get(4)?,
                time_start: row.get(5)?,
                time_stop: row.get(6)?,
                exit_status: row.get(7)?,
                reason,
                num_events: row.get(8)?,
                group_exists: match &location.remote {
                    Some(remote) => remote.run_group.is_some(),
                    None => location.run_group.is_dir(),
                },
                location,
                streams: Vec::new(),
                problems: Vec::new(),
            })
        },
    )
    .optional()
}

fn read_streams(conn: &Connection, info: &mut RunInfo) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(
        "SELECT s.uid, s.name, s.data_keys, s.time_created,
                (SELECT count(*) FROM (SELECT seq_num FROM events e WHERE e.stream_uid = s.uid
                                       UNION SELECT seq_num FROM image_refs i
                                             WHERE i.stream_uid = s.uid))
         FROM streams s WHERE s.run_uid = ?1 ORDER BY s.time_created, s.rowid",
    )?;
    let rows = stmt.query_map([&info.uid], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, f64>(3)?,
            row.get::<_, i64>(4)?,
        ))
    })?;
    let mut frames = conn.prepare(
        "SELECT field_name, zarr_group, dtype, compression_codec, frame_shape, count(*),
                min(index_in_stack), max(index_in_stack)
         FROM image_refs WHERE stream_uid = ?1
         GROUP BY field_name, zarr_group, dtype, compression_codec, frame_shape
         ORDER BY min(id)",
    )?;
    for row in rows {
        let (uid, name, data_keys, time_created, events) = row?;
        let keys = match serde_json::from_str::<Json>(&data_keys) {
            Ok(Json::Object(map)) => map,
            _ => Map::new(),
        };
        let mut fields: Vec<FieldInfo> = keys
            .into_iter()
            .map(|(name, key)| FieldInfo {
                name,
                data_key: match key {
                    Json::Object(map) => map,
                    _ => Map::new(),
                },
                frames: Vec::new(),
                array: None,
            })
            .collect();
        let groups = frames.query_map([&uid], |r| {
            Ok((
                r.get::<_, String>(0)?,
                FramesInfo {
                    path: match &info.location.remote {
                        // On S3: the array's URL.
                        Some(remote) => {
                            PathBuf::from(format!("{}/{}", remote.store, r.get::<_, String>(1)?))
                        }
                        None => info.location.store.join(r.get::<_, String>(1)?),
                    },
                    array: r.get(1)?,
                    dtype: r.get(2)?,
                    codec: r.get(3)?,
                    frame_shape: r.get(4)?,
                    count: r.get(5)?,
                    indexes: (r.get(6)?, r.get(7)?),
                    problem: None,
                },
            ))
        })?;
        let mut descriptor_frames = 0;
        for group in groups {
            let (field, group) = group?;
            descriptor_frames += group.count;
            match fields.iter_mut().find(|f| f.name == field) {
                Some(f) => f.frames.push(group),
                // Frames of a field the descriptor does not declare (a hand-edited database).
                None => fields.push(FieldInfo {
                    name: field,
                    data_key: Map::new(),
                    frames: vec![group],
                    array: None,
                }),
            }
        }
        let descriptor = DescriptorInfo {
            uid,
            time_created,
            events,
            frames: descriptor_frames,
            fields,
        };
        match info.streams.iter_mut().find(|s| s.name == name) {
            Some(stream) => {
                stream.events += descriptor.events;
                stream.frames += descriptor.frames;
                stream.descriptors.push(descriptor);
            }
            None => info.streams.push(StreamInfo {
                name,
                events: descriptor.events,
                frames: descriptor.frames,
                descriptors: vec![descriptor],
            }),
        }
    }
    Ok(())
}

/// Fills each frames group's `problem` and the run's `problems`.
fn check_frames(layout: &Layout, beamtime: &SafeName, uid: &SafeName, info: &mut RunInfo) {
    if info.exit_status.is_none() {
        info.problems.push(
            "incomplete: no stop document was stored (the run may still be going, or was interrupted); its events so far are stored"
                .into(),
        );
    }
    let staging = layout.frames_staging(beamtime);
    for (owner, _, path) in frames::staging_leftovers(&staging).unwrap_or_default() {
        if owner == uid.as_str() {
            info.problems.push(format!(
                "an ingest --replace of this run was interrupted ({} is left); `beamdb verify --repair` finishes or undoes it",
                path.display()
            ));
        }
    }
    if info.location.remote.is_some() {
        // The frames of an S3 store are checked by `beamdb verify`, which reads them there;
        // show reads the rows only.
        if !info.group_exists {
            info.problems.push(
                "no committed row names the run's group in the S3 frame store; `beamdb verify` says more".into(),
            );
        }
        // The arrays the committed rows name (the store itself is `verify`'s to read).
        for stream in &mut info.streams {
            for descriptor in &mut stream.descriptors {
                for field in &mut descriptor.fields {
                    field.array = field.frames.first().map(|f| f.array.clone());
                }
            }
        }
        return;
    }
    let total: i64 = info.streams.iter().map(|s| s.frames).sum();
    if total > 0 && !info.group_exists {
        info.problems.push(format!(
            "frames missing: {total} frames are recorded, but the run's group {} is not in the store; `beamdb verify --repair` quarantines the run for re-ingest",
            info.location.run_group.display()
        ));
    }
    for stream in &mut info.streams {
        for descriptor in &mut stream.descriptors {
            for field in &mut descriptor.fields {
                let array = format!("runs/{}/{}/{}", info.uid, stream.name, field.name);
                // Names from the database: only a safe one may become a path.
                let safe = SafeName::new("stream name", &stream.name).is_ok()
                    && SafeName::new("field name", &field.name).is_ok();
                if safe && info.location.store.join(&array).join("zarr.json").is_file() {
                    field.array = Some(array);
                }
            }
        }
    }
    let mut inspector = Inspector::open(&info.location.store).ok();
    let mut bad = 0;
    for stream in &mut info.streams {
        for descriptor in &mut stream.descriptors {
            for field in &mut descriptor.fields {
                for group in &mut field.frames {
                    // A hand-edited image_ref must not send the probe outside the run.
                    let inside = group
                        .array
                        .strip_prefix(&format!("runs/{}/", info.uid))
                        .is_some_and(|rest| {
                            rest.split('/')
                                .all(|part| SafeName::new("path", part).is_ok())
                        });
                    if !inside {
                        group.problem = Some("the image_ref points outside the run's group".into());
                        bad += 1;
                        continue;
                    }
                    if !info.group_exists {
                        group.problem =
                            Some("missing (the run's group is not in the store)".into());
                        bad += 1;
                        continue;
                    }
                    let Some(inspector) = inspector.as_mut() else {
                        group.problem = Some("the store cannot be opened".into());
                        bad += 1;
                        continue;
                    };
                    let (first, last) = group.indexes;
                    group.problem = [first, last].into_iter().find_map(|index| {
                        let frame = crate::ingest::writer::frame_ref(
                            group.array.clone(),
                            index,
                            group.dtype.clone(),
                            group.frame_shape.clone(),
                        );
                        inspector
                            .frame_problem(&group.array, &frame, 0, false)
                            .map(|p| format!("frame {index}: {p}"))
                    });
                    if group.problem.is_some() {
                        bad += 1;
                    }
                }
            }
        }
    }
    if bad > 0 && info.group_exists {
        info.problems.push(format!(
            "frames missing or wrong in {bad} array(s) (see FRAMES below); `beamdb verify` checks every frame, `verify --repair` quarantines the run for re-ingest"
        ));
    }
}
