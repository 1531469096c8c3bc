//! A run's documents back out of its beamtime, for `beamdb export`: the start (`runs.metadata`),
//! the kept documents (descriptors, resources, datums, stream_resources, stream_datums) and the
//! events in the order they came, then the stop (`runs.stop_metadata`). An event is rebuilt
//! from its `events` row and its rest (`ingest::kept`): a frame's note gives back the datum_id
//! it replaced, an inline frame is read back from the Zarr store, a value a stream_datum
//! delivered into the row is left out again. Pages come out unpacked.
//!
//! What cannot be given back is said, not guessed: a run stored before beamdb kept every
//! document (a beamtime database before migration V2) has no resources, datums or stream
//! documents and no events' `filled`; its descriptors and events are rebuilt from their rows.
//! A frame missing from the store is named; an inline frame that cannot be read keeps its note.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension};
use serde_json::{Map, Value};

use crate::frames::Inspector;
use crate::ingest::dtype::Dtype;
use crate::ingest::kept::{self, Rest};
use crate::ingest::{inline, writer};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "{path}: run {uid}: {what}; the database was changed by hand or is damaged: `beamdb verify` says more"
    )]
    Damaged {
        path: PathBuf,
        uid: String,
        what: String,
    },
    #[error("{path}: cannot read it: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Writing a document failed (the caller's sink: a file, stdout).
    #[error("cannot write the documents: {0}")]
    Write(#[source] std::io::Error),
}

impl crate::exit::HasExitStatus for ExportError {
    fn exit_status(&self) -> crate::exit::ExitStatus {
        crate::exit::ExitStatus::Failure
    }
}

/// What one run's export gave back.
#[derive(Debug, Default)]
pub struct Exported {
    pub documents: u64,
    /// What the export could not give back, one line each (empty: every document, whole).
    pub missing: Vec<String>,
}

/// Where to find one beamtime's run.
pub struct Source<'a> {
    pub conn: &'a Connection,
    /// The database's path, for messages.
    pub db_path: &'a Path,
    /// The beamtime's frame store's folder (for `--self-contained`, a filesystem store).
    pub store: &'a Path,
    /// The beamtime's frame store, where inline frames are read back from (filesystem or S3).
    pub frames: &'a crate::frames::FrameStore,
    /// Point external frames at the store (`export --self-contained`): the resources and
    /// datums become BEAMDB_ZARR ones naming each frame's array and index.
    pub self_contained: bool,
}

/// An external frame of an event: where its datum_id's frame is in the store.
struct External {
    datum_id: Value,
    array: String,
    index: i64,
}

/// A descriptor as export needs it.
struct Stream {
    stream_keys: HashSet<String>,
    /// The rest its events share (`kept_documents.event_rest`).
    default_rest: Rest,
}

/// Whether the beamtime database keeps documents (migration V2 and later).
pub fn keeps_documents(conn: &Connection) -> rusqlite::Result<bool> {
    let n: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name IN ('kept_documents', 'kept_events')",
        [],
        |r| r.get(0),
    )?;
    Ok(n == 2)
}

/// Where documents go: (name, document), as one suitcase-jsonl line would carry them.
pub type Emit<'a> = dyn FnMut(&str, &Map<String, Value>) -> std::io::Result<()> + 'a;

/// Writes run `uid`'s documents to `emit` (name, document), in an order ingest accepts.
pub fn run_documents(
    src: &Source<'_>,
    uid: &str,
    emit: &mut Emit<'_>,
) -> Result<Exported, ExportError> {
    let sql = |source| ExportError::Sqlite {
        path: src.db_path.to_path_buf(),
        source,
    };
    let damaged = |what: String| ExportError::Damaged {
        path: src.db_path.to_path_buf(),
        uid: uid.to_string(),
        what,
    };
    let conn = src.conn;
    let mut out = Exported::default();
    let mut send = |name: &str, doc: &Map<String, Value>, out: &mut Exported| {
        out.documents += 1;
        emit(name, doc).map_err(ExportError::Write)
    };
    let keeps = keeps_documents(conn).map_err(sql)?;
    let (start, stop): (String, Option<String>) = conn
        .query_row(
            "SELECT metadata, stop_metadata FROM runs WHERE uid = ?1",
            [uid],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(sql)?;
    let object = |text: &str, what: &str| match serde_json::from_str(text) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(damaged(format!("{what} is not a JSON object"))),
    };
    let start = object(&start, "runs.metadata")?;
    let stop = stop.map(|s| object(&s, "runs.stop_metadata")).transpose()?;

    // The descriptors: their stream-delivered keys, and (kept) the rest their events share.
    let mut streams: HashMap<String, Stream> = HashMap::new();
    let mut rebuilt_descriptors = Vec::new();
    {
        let mut stmt = conn
            .prepare(
                "SELECT uid, name, data_keys, time_created, configuration FROM streams
                 WHERE run_uid = ?1 ORDER BY time_created, rowid",
            )
            .map_err(sql)?;
        let mut rows = stmt.query([uid]).map_err(sql)?;
        while let Some(r) = rows.next().map_err(sql)? {
            let s_uid: String = r.get(0).map_err(sql)?;
            let data_keys = object(&r.get::<_, String>(2).map_err(sql)?, "streams.data_keys")?;
            let stream_keys = data_keys
                .iter()
                .filter(|(_, k)| kept::is_stream_key(k))
                .map(|(name, _)| name.clone())
                .collect();
            let mut descriptor = Map::new();
            descriptor.insert("uid".into(), s_uid.clone().into());
            descriptor.insert("run_start".into(), uid.into());
            descriptor.insert("name".into(), r.get::<_, String>(1).map_err(sql)?.into());
            descriptor.insert("time".into(), r.get::<_, f64>(3).map_err(sql)?.into());
            descriptor.insert("data_keys".into(), Value::Object(data_keys));
            if let Some(c) = r.get::<_, Option<String>>(4).map_err(sql)? {
                let c = object(&c, "streams.configuration")?;
                descriptor.insert("configuration".into(), Value::Object(c));
            }
            rebuilt_descriptors.push(descriptor);
            streams.insert(
                s_uid,
                Stream {
                    stream_keys,
                    default_rest: Rest::default(),
                },
            );
        }
    }
    let mut kept_descriptors = 0usize;
    if keeps {
        let mut stmt = conn
            .prepare(
                "SELECT json_extract(document, '$.uid'), event_rest FROM kept_documents
                 WHERE run_uid = ?1 AND kind = 'descriptor'",
            )
            .map_err(sql)?;
        let mut rows = stmt.query([uid]).map_err(sql)?;
        while let Some(r) = rows.next().map_err(sql)? {
            let d_uid: Option<String> = r.get(0).map_err(sql)?;
            let rest: Option<String> = r.get(1).map_err(sql)?;
            kept_descriptors += 1;
            if let (Some(stream), Some(rest)) =
                (d_uid.and_then(|d| streams.get_mut(&d)), rest.as_deref())
            {
                stream.default_rest = Rest::parse(rest)
                    .ok_or_else(|| damaged("a descriptor's event_rest is not a rest".into()))?;
            }
        }
    }
    // Stored before documents were kept: descriptors and events from their rows, no more.
    let rebuilt = kept_descriptors == 0 && !streams.is_empty();
    if rebuilt {
        out.missing.push(
            "the run was stored before beamdb kept every document (beamtime database before migration V2): its resource, datum, stream_resource and stream_datum documents and its events' `filled` were not kept and are not in the export; descriptors and events are rebuilt from their rows (to keep them all, ingest the run again from its original documents with --replace)"
                .into(),
        );
    }

    let mut inspector = match Inspector::open_store(src.frames) {
        Ok(i) => Some(i),
        Err(e) => {
            out.missing
                .push(format!("the frame store cannot be opened: {e}"));
            None
        }
    };
    if let Some(inspector) = inspector.as_mut() {
        missing_frames(conn, uid, inspector, &mut out.missing).map_err(sql)?;
    }

    send("start", &start, &mut out)?;
    let mut rewrite = Rewrite::new(src, uid);
    let mut events_stmt = conn.prepare(&events_query(keeps)).map_err(sql)?;
    let mut events = events_stmt.query([uid]).map_err(sql)?;
    let mut emitted_events = 0i64;
    // The run's next event, rebuilt, after the documents a rewrite puts before it; `None`
    // after the last.
    type Docs = Vec<(&'static str, Map<String, Value>)>;
    let mut next_event =
        |rewrite: &mut Rewrite, missing: &mut Vec<String>| -> Result<Option<Docs>, ExportError> {
            let Some(row) = events.next().map_err(sql)? else {
                return Ok(None);
            };
            let row = event_row(row).map_err(sql)?;
            let (event, externals) =
                rebuild_event(row, &streams, &rewrite.inline_keys, &mut inspector, missing)
                    .map_err(damaged)?;
            let mut docs = rewrite.before_event(externals);
            docs.push(("event", event));
            Ok(Some(docs))
        };
    if rebuilt {
        for d in &rebuilt_descriptors {
            send("descriptor", d, &mut out)?;
        }
    } else if keeps {
        let mut stmt = conn
            .prepare(
                "SELECT events_before, kind, document FROM kept_documents
                 WHERE run_uid = ?1 ORDER BY position",
            )
            .map_err(sql)?;
        let mut rows = stmt.query([uid]).map_err(sql)?;
        while let Some(r) = rows.next().map_err(sql)? {
            let before: i64 = r.get(0).map_err(sql)?;
            let kind: String = r.get(1).map_err(sql)?;
            let doc = object(&r.get::<_, String>(2).map_err(sql)?, "a kept document")?;
            while emitted_events < before {
                let Some(docs) = next_event(&mut rewrite, &mut out.missing)? else {
                    break;
                };
                for (name, doc) in docs {
                    send(name, &doc, &mut out)?;
                }
                emitted_events += 1;
            }
            if let Some(doc) = rewrite
                .kept(conn, &kind, doc, &mut out.missing)
                .map_err(sql)?
            {
                send(&kind, &doc, &mut out)?;
            }
        }
    }
    while let Some(docs) = next_event(&mut rewrite, &mut out.missing)? {
        for (name, doc) in docs {
            send(name, &doc, &mut out)?;
        }
    }
    if let Some(stop) = &stop {
        send("stop", stop, &mut out)?;
    }
    Ok(out)
}

/// `--self-contained`: the run's resources and datums are replaced by BEAMDB_ZARR ones that
/// name each external frame's array and index in the store (the datum_ids, and so the events,
/// stay as they were); one resource per array, before its first event, and each datum just
/// before its event. A stream_resource whose values are in the store becomes one of the
/// store's array (`application/x-beamdb-zarr`), its stream_datums indices into that array; one
/// whose values are in the events' rows (scalars delivered alongside events) is dropped with
/// its stream_datums, and the values stay in the events.
struct Rewrite {
    on: bool,
    uid: String,
    store: String,
    arrays: HashSet<String>,
    /// stream_resource uid → what became of it.
    streams: HashMap<String, StreamRewrite>,
    /// Data keys whose values the events now carry themselves.
    inline_keys: HashSet<String>,
}

enum StreamRewrite {
    /// Points at `array` of the store; its data key.
    Store { data_key: String, array: String },
    /// Its values are in the events.
    Inline,
    /// Left as it was (said so).
    Kept,
}

/// The resource uid of a store array in a self-contained export.
fn zarr_resource_uid(array: &str) -> String {
    format!("beamdb-zarr/{array}")
}

impl Rewrite {
    fn new(src: &Source<'_>, uid: &str) -> Rewrite {
        let store = src
            .store
            .canonicalize()
            .unwrap_or_else(|_| src.store.to_path_buf());
        Rewrite {
            on: src.self_contained,
            uid: uid.to_string(),
            store: store.display().to_string(),
            arrays: HashSet::new(),
            streams: HashMap::new(),
            inline_keys: HashSet::new(),
        }
    }

    /// A kept document as it is written: as it is, rewritten, or not at all (`None`).
    fn kept(
        &mut self,
        conn: &Connection,
        kind: &str,
        mut doc: Map<String, Value>,
        missing: &mut Vec<String>,
    ) -> rusqlite::Result<Option<Map<String, Value>>> {
        if !self.on {
            return Ok(Some(doc));
        }
        let text = |doc: &Map<String, Value>, key: &str| {
            doc.get(key)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        match kind {
            "resource" | "datum" => Ok(None),
            "stream_resource" => {
                let (sr, data_key) = (text(&doc, "uid"), text(&doc, "data_key"));
                let mut stmt = conn.prepare_cached(
                    "SELECT DISTINCT i.zarr_group FROM image_refs i
                     JOIN streams s ON s.uid = i.stream_uid
                     WHERE s.run_uid = ?1 AND i.field_name = ?2 LIMIT 2",
                )?;
                let arrays: Vec<String> = stmt
                    .query_map([&self.uid, &data_key], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                match arrays.as_slice() {
                    [] => {
                        self.inline_keys.insert(data_key);
                        self.streams.insert(sr, StreamRewrite::Inline);
                        Ok(None)
                    }
                    [array] => {
                        let mut parameters = Map::new();
                        parameters.insert("array".into(), array.clone().into());
                        doc.insert(
                            "mimetype".into(),
                            crate::ingest::handlers::ZARR_MIMETYPE.into(),
                        );
                        doc.insert(
                            "uri".into(),
                            format!("file://localhost{}", self.store).into(),
                        );
                        doc.insert("parameters".into(), Value::Object(parameters));
                        self.streams.insert(
                            sr,
                            StreamRewrite::Store {
                                data_key,
                                array: array.clone(),
                            },
                        );
                        Ok(Some(doc))
                    }
                    _ => {
                        missing.push(format!(
                            "--self-contained: stream_resource {sr}: its {data_key} frames are in more than one array of the store (their shape changed mid-run); it is written as it is and still points at the original file"
                        ));
                        self.streams.insert(sr, StreamRewrite::Kept);
                        Ok(Some(doc))
                    }
                }
            }
            "stream_datum" => {
                let sr = text(&doc, "stream_resource");
                let (data_key, array) = match self.streams.get(&sr) {
                    Some(StreamRewrite::Inline) => return Ok(None),
                    Some(StreamRewrite::Store { data_key, array }) => {
                        (data_key.clone(), array.clone())
                    }
                    Some(StreamRewrite::Kept) | None => return Ok(Some(doc)),
                };
                let bound = |key: &str, end: &str| {
                    doc.get(key)
                        .and_then(|v| v.get(end))
                        .and_then(Value::as_i64)
                        .unwrap_or(0)
                };
                let (first, last) = (bound("seq_nums", "start"), bound("seq_nums", "stop"));
                let mut stmt = conn.prepare_cached(
                    "SELECT min(index_in_stack), max(index_in_stack), count(*) FROM image_refs
                     WHERE stream_uid = ?1 AND field_name = ?2 AND zarr_group = ?3
                       AND seq_num >= ?4 AND seq_num < ?5",
                )?;
                let (lo, hi, n): (Option<i64>, Option<i64>, i64) = stmt.query_row(
                    rusqlite::params![text(&doc, "descriptor"), data_key, array, first, last],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )?;
                match (lo, hi) {
                    (Some(lo), Some(hi)) if n == last - first && hi - lo + 1 == n => {
                        let mut indices = Map::new();
                        indices.insert("start".into(), lo.into());
                        indices.insert("stop".into(), (hi + 1).into());
                        doc.insert("indices".into(), Value::Object(indices));
                    }
                    _ => missing.push(format!(
                        "--self-contained: stream_datum {}: its frames are not one run of the store's array {array}; written as it is, its indices do not fit the rewritten stream_resource",
                        text(&doc, "uid")
                    )),
                }
                Ok(Some(doc))
            }
            _ => Ok(Some(doc)),
        }
    }

    /// The documents an event's external frames need before it.
    fn before_event(
        &mut self,
        externals: Vec<External>,
    ) -> Vec<(&'static str, Map<String, Value>)> {
        let mut docs = Vec::new();
        if !self.on {
            return docs;
        }
        for e in externals {
            let resource = zarr_resource_uid(&e.array);
            if self.arrays.insert(e.array.clone()) {
                let mut r = Map::new();
                r.insert("spec".into(), "BEAMDB_ZARR".into());
                r.insert("root".into(), self.store.clone().into());
                r.insert("resource_path".into(), e.array.clone().into());
                r.insert("resource_kwargs".into(), Value::Object(Map::new()));
                r.insert("path_semantics".into(), "posix".into());
                r.insert("uid".into(), resource.clone().into());
                r.insert("run_start".into(), self.uid.clone().into());
                docs.push(("resource", r));
            }
            let mut d = Map::new();
            d.insert("resource".into(), resource.into());
            d.insert("datum_id".into(), e.datum_id);
            let mut kwargs = Map::new();
            kwargs.insert("index".into(), e.index.into());
            d.insert("datum_kwargs".into(), Value::Object(kwargs));
            docs.push(("datum", d));
        }
        docs
    }
}

/// Frame indexes named in a line about missing frames.
const SHOWN_INDEXES: usize = 10;

/// Every committed frame of the run that is not in the store, one line per array.
fn missing_frames(
    conn: &Connection,
    uid: &str,
    inspector: &mut Inspector,
    missing: &mut Vec<String>,
) -> rusqlite::Result<()> {
    // Per array: the first problem, how many frames, the first few indexes.
    let mut by_array: BTreeMap<String, (String, usize, Vec<i64>)> = BTreeMap::new();
    // One frame at a time (a run may have millions): the same rows as
    // `writer::committed_frames`, which recovery holds in memory at once.
    let mut stmt = conn.prepare(
        "SELECT i.zarr_group, i.index_in_stack, i.dtype, i.frame_shape
         FROM image_refs i JOIN streams s ON s.uid = i.stream_uid
         WHERE s.run_uid = ?1 ORDER BY i.id",
    )?;
    let mut rows = stmt.query([uid])?;
    while let Some(r) = rows.next()? {
        let frame = writer::frame_ref(r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
        if let Some(problem) = inspector.frame_problem(&frame.array, &frame, 1, false) {
            let entry = by_array
                .entry(frame.array.clone())
                .or_insert_with(|| (problem, 0, Vec::new()));
            entry.1 += 1;
            if entry.2.len() < SHOWN_INDEXES {
                entry.2.push(frame.index);
            }
        }
    }
    for (array, (problem, n, indexes)) in by_array {
        let shown: Vec<String> = indexes.iter().map(i64::to_string).collect();
        let more = if n > indexes.len() { ", ..." } else { "" };
        missing.push(format!(
            "frames.zarr/{array}: {n} frames missing or unreadable (indexes {}{more}; {problem}); the documents still point at the original files, and `beamdb verify` says more",
            shown.join(", ")
        ));
    }
    Ok(())
}

/// An event's row as the export query gives it.
struct EventRow {
    uid: String,
    descriptor: String,
    seq_num: i64,
    time: f64,
    data: String,
    timestamps: Option<String>,
    rest: Option<String>,
    /// JSON: `[[field, zarr_group, index, dtype, frame_shape], ...]`.
    frames: String,
}

/// The run's events in the order they were stored (rowid: the order they came), one at a
/// time: memory stays flat in the run's length.
fn events_query(keeps: bool) -> String {
    let rest = if keeps {
        "(SELECT k.rest FROM kept_events k WHERE k.event_uid = e.uid)"
    } else {
        "NULL"
    };
    format!(
        "SELECT e.uid, e.stream_uid, e.seq_num, e.time, e.data, e.timestamps, {rest},
           (SELECT json_group_array(json_array(i.field_name, i.zarr_group, i.index_in_stack,
                                               i.dtype, i.frame_shape))
            FROM image_refs i WHERE i.event_uid = e.uid)
         FROM events e JOIN streams s ON s.uid = e.stream_uid
         WHERE s.run_uid = ?1
         ORDER BY e.rowid"
    )
}

fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventRow> {
    Ok(EventRow {
        uid: r.get(0)?,
        descriptor: r.get(1)?,
        seq_num: r.get(2)?,
        time: r.get(3)?,
        data: r.get(4)?,
        timestamps: r.get(5)?,
        rest: r.get(6)?,
        frames: r.get(7)?,
    })
}

/// An event document from its row and rest. Errors are rows that are not what ingest wrote.
fn rebuild_event(
    row: EventRow,
    streams: &HashMap<String, Stream>,
    inline_keys: &HashSet<String>,
    inspector: &mut Option<Inspector>,
    missing: &mut Vec<String>,
) -> Result<(Map<String, Value>, Vec<External>), String> {
    let mut externals = Vec::new();
    let stream = streams.get(&row.descriptor);
    let own_rest = row
        .rest
        .as_deref()
        .map(|r| Rest::parse(r).ok_or(format!("event {}: its kept rest is not a rest", row.uid)))
        .transpose()?;
    let rest = own_rest
        .as_ref()
        .or(stream.map(|s| &s.default_rest))
        .cloned()
        .unwrap_or_default();
    let Ok(Value::Object(mut data)) = serde_json::from_str::<Value>(&row.data) else {
        return Err(format!("event {}: its data is not a JSON object", row.uid));
    };
    let frames: Vec<(String, String, i64, String, Option<String>)> =
        serde_json::from_str(&row.frames)
            .map_err(|e| format!("event {}: its image_refs: {e}", row.uid))?;
    for (field, array, index, dtype, frame_shape) in frames {
        let Some(Value::Object(note)) = data.get(&field) else {
            continue;
        };
        if note.contains_key("stream_datum") {
            data.remove(&field);
        } else if let Some(datum_id) = note.get("datum_id").cloned() {
            externals.push(External {
                datum_id: datum_id.clone(),
                array,
                index,
            });
            data.insert(field, datum_id);
        } else {
            let value = inline_frame(inspector, &array, index, &dtype, frame_shape.as_deref()).map(
                |mut v| {
                    if rest.ints.contains(&field) {
                        kept::render_ints(&mut v);
                    }
                    v
                },
            );
            match value {
                Ok(v) => {
                    data.insert(field, v);
                }
                Err(problem) => missing.push(format!(
                    "event {} field {field}: its inline frame frames.zarr/{array}[{index}] cannot be read ({problem}); the event keeps beamdb's note in its place",
                    row.uid
                )),
            }
        }
    }
    if let Some(stream) = stream {
        data.retain(|k, _| !stream.stream_keys.contains(k) || inline_keys.contains(k));
    }
    data.extend(rest.data);
    let mut event = Map::new();
    event.insert("uid".into(), row.uid.into());
    event.insert("descriptor".into(), row.descriptor.into());
    event.insert("seq_num".into(), row.seq_num.into());
    // `kept::integral_time` made sure the float is the integer that was written.
    let time = if rest.int_time && row.time.fract() == 0.0 && row.time.abs() < 9.0e15 {
        Value::from(row.time as i64)
    } else {
        row.time.into()
    };
    event.insert("time".into(), time);
    event.insert("data".into(), Value::Object(data));
    if let Some(ts) = row.timestamps {
        let ts: Value = serde_json::from_str(&ts)
            .map_err(|e| format!("event {}: its timestamps: {e}", event["uid"]))?;
        event.insert("timestamps".into(), ts);
    }
    event.extend(rest.set);
    Ok((event, externals))
}

/// An inline frame read back from the store, as JSON numbers of its stored type.
fn inline_frame(
    inspector: &mut Option<Inspector>,
    array: &str,
    index: i64,
    dtype: &str,
    frame_shape: Option<&str>,
) -> Result<Value, String> {
    let inspector = inspector
        .as_mut()
        .ok_or("the frame store cannot be opened")?;
    let (dtype, _) = Dtype::parse_numpy(dtype).map_err(|e| e.to_string())?;
    let shape: Vec<u64> = match frame_shape {
        Some(text) => serde_json::from_str(text).map_err(|e| e.to_string())?,
        None => inspector
            .array_info(array)?
            .shape
            .get(1..)
            .map(<[u64]>::to_vec)
            .unwrap_or_default(),
    };
    let index = u64::try_from(index).map_err(|_| "negative frame index".to_string())?;
    let bytes = inspector.frame_bytes(array, index)?;
    if Some(bytes.len()) != dtype.frame_bytes(&shape) {
        return Err(format!(
            "{} bytes, not a frame of shape {shape:?}",
            bytes.len()
        ));
    }
    Ok(inline::to_json(&bytes, &shape, dtype))
}

/// The uids of a beamtime's runs, in the order they started.
pub fn run_uids(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT uid FROM runs ORDER BY time_start, uid")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    rows.collect()
}

/// Whether run `uid` is in the beamtime.
pub fn has_run(conn: &Connection, uid: &str) -> rusqlite::Result<bool> {
    conn.query_row("SELECT 1 FROM runs WHERE uid = ?1", [uid], |_| Ok(()))
        .optional()
        .map(|r| r.is_some())
}

/// The tables a quarantine file holds, parents first (as they are inserted back).
const QUARANTINED_TABLES: [&str; 7] = [
    "samples",
    "runs",
    "streams",
    "events",
    "image_refs",
    "kept_documents",
    "kept_events",
];

/// Run `uid`'s rows from the file `verify --repair` saved when it quarantined the run, in a
/// private in-memory database at the head of the built-in migrations, so that the same
/// export reads them. Columns the built-in model lacks (a facility's promoted metadata) are
/// left out: the RunStart keeps their values.
pub fn quarantined_run(file: &Path, uid: &str) -> Result<Connection, ExportError> {
    let damaged = |what: String| ExportError::Damaged {
        path: file.to_path_buf(),
        uid: uid.to_string(),
        what,
    };
    let sql = |source| ExportError::Sqlite {
        path: file.to_path_buf(),
        source,
    };
    let text = std::fs::read_to_string(file).map_err(|source| ExportError::Read {
        path: file.to_path_buf(),
        source,
    })?;
    let Ok(Value::Object(saved)) = serde_json::from_str::<Value>(&text) else {
        return Err(damaged("not a quarantine file (JSON object)".into()));
    };
    let builtin = crate::migrations::files::builtin(crate::schema::DbKind::Beamtime);
    let conn = crate::migrations::runner::replay(&builtin)
        .map_err(|e| damaged(format!("cannot build the database to read it into: {e}")))?;
    for table in QUARANTINED_TABLES {
        let Some(rows) = saved.get(table).and_then(Value::as_array) else {
            continue;
        };
        let columns: HashSet<String> = {
            let mut stmt = conn
                .prepare("SELECT name FROM pragma_table_info(?1)")
                .map_err(sql)?;
            stmt.query_map([table], |r| r.get(0))
                .map_err(sql)?
                .collect::<rusqlite::Result<_>>()
                .map_err(sql)?
        };
        for row in rows {
            let Some(row) = row.as_object() else {
                return Err(damaged(format!("a row of {table} is not an object")));
            };
            let (names, values): (Vec<String>, Vec<rusqlite::types::Value>) = row
                .iter()
                .filter(|(k, _)| columns.contains(*k))
                .map(|(k, v)| (format!("\"{k}\""), writer::json_to_sql(v)))
                .unzip();
            let marks = vec!["?"; names.len()].join(", ");
            conn.execute(
                &format!(
                    "INSERT INTO \"{table}\" ({}) VALUES ({marks})",
                    names.join(", ")
                ),
                rusqlite::params_from_iter(values),
            )
            .map_err(sql)?;
        }
    }
    Ok(conn)
}
