//! The run's group in the frame store as xarray reads it: every stream a Dataset along `time`.
//!
//! [`write_run_layout`] is the one home of this layout (docs/reading.md is its contract). It
//! reads the run's committed (or about to be committed) rows through the connection it is
//! given, per stream name in `(time, seq_num)` order, a bounded number of rows at a time, and
//! writes into `runs/{uid}`:
//! - `{stream}/time` (the events' times) and `{stream}/seq_num`, one entry per event of every
//!   descriptor of that stream name (a fly scan's points, which have no event, last, with a
//!   NaN time);
//! - one columnar array per scalar or 1-D data key (the values stay in `events.data` too);
//! - for each frame stack, `{leaf}.index`: the stack index of each entry's frame (-1: none);
//!   the stack's axis 0 is named `time` when it is aligned with the time index;
//! - `dimension_names` on every array, the data keys' attributes, the stream's configuration;
//! - consolidated metadata on each stream group and on the run group, and the layout marker
//!   (`attributes.beamdb.layout`) on the run group, written last: a run group without the
//!   marker is not converted yet (or was interrupted), and converting it again is safe.
//!
//! Ingest calls it inside the run's transaction, before the commit; `beamdb migrate` calls it
//! for each committed run of a store written before this layout.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Map, Value, json};
use zarrs::array::{
    Array, ArrayMetadata, ArrayMetadataV3, ArrayToBytesCodecTraits, CodecOptions, Element,
};
use zarrs::filesystem::FilesystemStore;

use crate::frames::{self, StoreError};
use crate::layout::SafeName;

/// The layout version the run group's marker records (`attributes.beamdb.layout`).
pub const LAYOUT_VERSION: u64 = 1;

/// Rows read and written at a time: memory stays flat however many events a run has.
const CHUNK_ROWS: usize = 8192;

/// Names the layout keeps for itself inside a stream group.
const RESERVED: [&str; 2] = ["time", "seq_num"];

/// What went wrong writing a run's layout.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("run {uid}: reading its rows from the beamtime database: {source}")]
    Db {
        uid: String,
        source: rusqlite::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The run's group holds something the layout cannot be written beside.
    #[error(
        "{path}: {why}; the run's store group is left as it was (xarray cannot open this stream): re-ingest the run with --replace"
    )]
    Conflict { path: PathBuf, why: String },
}

impl LayoutError {
    /// Whether the disk is full (see [`StoreError::is_storage_full`]).
    pub fn is_storage_full(&self) -> bool {
        match self {
            LayoutError::Store(e) => e.is_storage_full(),
            LayoutError::Db { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(rusqlite::ffi::ErrorCode::DiskFull)
            ),
            LayoutError::Conflict { .. } => false,
        }
    }
}

impl crate::exit::HasExitStatus for LayoutError {
    fn exit_status(&self) -> crate::exit::ExitStatus {
        crate::exit::ExitStatus::Failure
    }
}

fn db(uid: &str) -> impl Fn(rusqlite::Error) -> LayoutError + '_ {
    move |source| LayoutError::Db {
        uid: uid.to_string(),
        source,
    }
}

fn zarr(path: &Path) -> impl Fn(String) -> StoreError + '_ {
    move |message| StoreError::Zarr {
        path: path.to_path_buf(),
        message,
    }
}

/// The array name of data key `key` in its stream group: the key itself, except for the
/// names the layout keeps for itself (`time`, `seq_num`), which get `.field` appended.
pub fn array_name(key: &str) -> String {
    if RESERVED.contains(&key) {
        format!("{key}.field")
    } else {
        key.to_string()
    }
}

/// Whether run `uid`'s group in the store at `root` carries this layout's marker.
pub fn has_layout(root: &Path, uid: &str) -> bool {
    read_json(&root.join("runs").join(uid).join("zarr.json"))
        .is_some_and(|v| v["attributes"]["beamdb"]["layout"].as_u64() == Some(LAYOUT_VERSION))
}

fn read_json(path: &Path) -> Option<Value> {
    let text = std::fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
}

/// The element type of a columnar array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Elem {
    F64,
    I64,
    Bool,
    Str,
}

impl Elem {
    fn zarr(self) -> (&'static str, Value, Value) {
        let bytes = json!([{"name": "bytes", "configuration": {"endian": "little"}},
            {"name": "zstd", "configuration": {"level": 3, "checksum": false}}]);
        match self {
            Elem::F64 => ("float64", json!("NaN"), bytes),
            Elem::I64 => ("int64", json!(0), bytes),
            Elem::Bool => ("bool", json!(false), bytes),
            Elem::Str => (
                "string",
                json!(""),
                json!([{"name": "vlen-utf8", "configuration": {}},
                    {"name": "zstd", "configuration": {"level": 3, "checksum": false}}]),
            ),
        }
    }
}

/// Values collected for one chunk of a column.
enum Buf {
    F64(Vec<f64>),
    I64(Vec<i64>),
    Bool(Vec<bool>),
    Str(Vec<String>),
}

impl Buf {
    fn new(elem: Elem) -> Buf {
        match elem {
            Elem::F64 => Buf::F64(Vec::new()),
            Elem::I64 => Buf::I64(Vec::new()),
            Elem::Bool => Buf::Bool(Vec::new()),
            Elem::Str => Buf::Str(Vec::new()),
        }
    }

    /// Appends one element from a JSON value; anything that is not one is the fill value
    /// (NaN for floats, which is why a key some events lack is a float column).
    fn push(&mut self, v: Option<&Value>) {
        match self {
            Buf::F64(b) => b.push(match v {
                Some(Value::Bool(x)) => f64::from(u8::from(*x)),
                Some(v) => v.as_f64().unwrap_or(f64::NAN),
                None => f64::NAN,
            }),
            Buf::I64(b) => b.push(v.and_then(Value::as_i64).unwrap_or(0)),
            Buf::Bool(b) => b.push(v.and_then(Value::as_bool).unwrap_or(false)),
            Buf::Str(b) => b.push(match v {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            }),
        }
    }

    /// Appends a number the layout computes (no JSON on the way): `f` to a float column,
    /// `i` to an integer one.
    fn push_number(&mut self, f: f64, i: i64) {
        match self {
            Buf::F64(b) => b.push(f),
            Buf::I64(b) => b.push(i),
            Buf::Bool(b) => b.push(false),
            Buf::Str(b) => b.push(String::new()),
        }
    }

    /// Encodes the buffered rows as chunk `chunk` of `array` (padded with the fill value to
    /// the chunk's shape, as Zarr stores an edge chunk) and empties the buffer.
    fn encode(&mut self, array: &Array<FilesystemStore>, chunk: &[u64]) -> Result<Vec<u8>, String> {
        let shape = array.chunk_shape(chunk).map_err(|e| e.to_string())?;
        let elements: usize = shape.iter().map(|d| d.get() as usize).product();
        let dt = array.data_type();
        let bytes = match self {
            Buf::F64(b) => {
                b.resize(elements, f64::NAN);
                f64::into_array_bytes(dt, std::mem::take(b))
            }
            Buf::I64(b) => {
                b.resize(elements, 0);
                i64::into_array_bytes(dt, std::mem::take(b))
            }
            Buf::Bool(b) => {
                b.resize(elements, false);
                bool::into_array_bytes(dt, std::mem::take(b))
            }
            Buf::Str(b) => {
                b.resize(elements, String::new());
                String::into_array_bytes(dt, std::mem::take(b))
            }
        }
        .map_err(|e| e.to_string())?;
        array
            .codecs()
            .encode(
                bytes,
                &shape,
                dt,
                array.fill_value(),
                &CodecOptions::default(),
            )
            .map(|encoded| encoded.to_vec())
            .map_err(|e| e.to_string())
    }
}

/// Where a column's values come from, row by row.
enum Feed {
    /// The event's time.
    Time,
    /// The event's seq_num.
    SeqNum,
    /// A data key of `events.data`; `width` for a 1-D value.
    Key { key: String, width: Option<u64> },
    /// The index of the row's frame in stack `stack` of the stream (-1: none).
    StackIndex { stack: usize },
}

/// One columnar array being written.
struct Column {
    name: String,
    feed: Feed,
    array: Array<FilesystemStore>,
    buf: Buf,
}

/// A frame stack of the stream, as image_refs and its metadata describe it.
struct Stack {
    /// Its array path inside the store (`image_refs.zarr_group`).
    zarr_group: String,
    leaf: String,
    key: String,
    /// `[n_frames, *frame_shape]`, from its metadata.
    shape: Vec<u64>,
    frame_dims: Vec<String>,
    /// Whether frame `i` of the stack is the stream's row `i`, for every row.
    aligned: bool,
}

/// What a data key becomes in its stream group.
struct KeyPlan {
    key: String,
    /// First descriptor's data key, for attributes, shape and dims.
    spec: Map<String, Value>,
    /// How many of the stream's descriptors declare it.
    declared_by: usize,
    shapes_agree: bool,
}

/// Dimension names of one stream: unique per size, never a variable's name.
#[derive(Default)]
struct Dims {
    sizes: HashMap<String, u64>,
    counter: usize,
}

impl Dims {
    /// The dimension names of `var`'s extra axes: the descriptor's `dims` when it gives one
    /// per axis, else databroker's `dim_N` (counted across the stream's data keys). A name
    /// already used with another size, or one of `taken`, is prefixed with `{var}.`.
    fn name(
        &mut self,
        var: &str,
        spec: &Map<String, Value>,
        shape: &[u64],
        taken: &HashSet<String>,
    ) -> Vec<String> {
        let given: Option<Vec<String>> = spec.get("dims").and_then(Value::as_array).and_then(|d| {
            d.iter()
                .map(|x| x.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
        });
        let given = given.filter(|d| d.len() == shape.len());
        let mut names = Vec::new();
        for (i, &size) in shape.iter().enumerate() {
            let mut name = match &given {
                Some(d) => d[i].clone(),
                None => {
                    let n = format!("dim_{}", self.counter);
                    self.counter += 1;
                    n
                }
            };
            let clash = |n: &str, sizes: &HashMap<String, u64>| {
                RESERVED.contains(&n)
                    || taken.contains(n)
                    || sizes.get(n).is_some_and(|&s| s != size)
                    || n.is_empty()
            };
            if clash(&name, &self.sizes) {
                name = format!("{var}.{name}");
            }
            self.sizes.insert(name.clone(), size);
            names.push(name);
        }
        names
    }
}

/// What [`write_run_layout`] wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Written {
    /// Stream groups written.
    pub streams: usize,
    /// Data keys not written (name, why), also noted in their stream group's attributes.
    pub skipped: Vec<(String, String)>,
}

/// Writes run `uid`'s layout into the store at `root` from the rows `conn` sees (the run's
/// transaction during ingest; a read snapshot during `migrate`). The run group's marker is
/// written last; everything written before it is overwritten by the next call.
pub fn write_run_layout(
    conn: &Connection,
    root: &Path,
    uid: &str,
    group: &str,
) -> Result<Written, LayoutError> {
    let run_dir = root.join("runs").join(group);
    let digest: Option<Option<String>> = conn
        .query_row(
            "SELECT content_digest FROM runs WHERE uid = ?1",
            [uid],
            |r| r.get(0),
        )
        .optional()
        .map_err(db(uid))?;
    let Some(digest) = digest else {
        return Err(LayoutError::Conflict {
            path: run_dir,
            why: "no such run in the beamtime database".into(),
        });
    };
    std::fs::create_dir_all(&run_dir).map_err(|source| StoreError::Io {
        path: run_dir.clone(),
        action: "cannot create the run's group",
        source,
    })?;
    let store =
        Arc::new(FilesystemStore::new(&run_dir).map_err(|e| zarr(&run_dir)(e.to_string()))?);
    let mut names: Vec<String> = Vec::new();
    {
        let mut stmt = conn
            .prepare(
                "SELECT name FROM streams WHERE run_uid = ?1 GROUP BY name
                 ORDER BY min(time_created), name",
            )
            .map_err(db(uid))?;
        let rows = stmt
            .query_map([uid], |r| r.get::<_, String>(0))
            .map_err(db(uid))?;
        for name in rows {
            names.push(name.map_err(db(uid))?);
        }
    }
    let mut written = Written::default();
    // Every file written for the layout, made durable together before the marker.
    let mut unsynced: Vec<PathBuf> = Vec::new();
    let mut run_meta = Map::new();
    let mut skipped_streams = Map::new();
    for stream in &names {
        if SafeName::new("stream name", stream).is_err() {
            tracing::warn!(
                "run {uid}: stream {:?} is not a safe name; it has no group in the store (its events stay in the database)",
                stream
            );
            skipped_streams.insert(stream.clone(), "not a safe path component".into());
            continue;
        }
        let (group, children, skipped) =
            write_stream(conn, &store, &run_dir, (uid, group), stream, &mut unsynced)?;
        run_meta.insert(stream.clone(), {
            let mut g = group.clone();
            g["consolidated_metadata"]["metadata"] = json!({});
            g
        });
        for (child, meta) in children {
            run_meta.insert(format!("{stream}/{child}"), meta);
        }
        written.skipped.extend(skipped);
        written.streams += 1;
    }
    // The run group last: its marker says that everything above is whole.
    let path = run_dir.join("zarr.json");
    let mut attributes = read_json(&path)
        .and_then(|v| v.get("attributes").and_then(Value::as_object).cloned())
        .unwrap_or_default();
    if !attributes.contains_key("beamdb") {
        // A run without frames had no group: its attributes come from its row.
        let (plan, scan, time): (Option<String>, Option<i64>, Option<f64>) = conn
            .query_row(
                "SELECT plan_name, scan_id, time_start FROM runs WHERE uid = ?1",
                [uid],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(db(uid))?;
        attributes.insert("plan_name".into(), json!(plan));
        if let Some(scan) = scan {
            attributes.insert("scan_id".into(), json!(scan));
        }
        attributes.insert("time".into(), json!(time));
    }
    attributes.insert(
        "beamdb".into(),
        json!({"run_uid": uid, "content_digest": digest, "layout": LAYOUT_VERSION}),
    );
    if !skipped_streams.is_empty() {
        attributes.insert(
            "beamdb_skipped_streams".into(),
            Value::Object(skipped_streams),
        );
    }
    let group = json!({
        "zarr_format": 3,
        "node_type": "group",
        "attributes": attributes,
        "consolidated_metadata": {"kind": "inline", "must_understand": false, "metadata": run_meta},
    });
    frames::sync_paths(&unsynced, &root.join("runs"))?;
    frames::write_json_durably(&path, &group)?;
    frames::sync_dir_of(&run_dir)?;
    Ok(written)
}

/// One descriptor of a stream, as `streams` keeps it.
struct Descriptor {
    uid: String,
    data_keys: Map<String, Value>,
    configuration: Value,
}

/// The descriptors of `stream`, oldest first.
fn descriptors(conn: &Connection, uid: &str, stream: &str) -> rusqlite::Result<Vec<Descriptor>> {
    let mut stmt = conn.prepare(
        "SELECT uid, data_keys, configuration FROM streams WHERE run_uid = ?1 AND name = ?2
         ORDER BY time_created, uid",
    )?;
    let rows = stmt.query_map([uid, stream], |r| {
        let keys: Option<String> = r.get(1)?;
        let config: Option<String> = r.get(2)?;
        Ok(Descriptor {
            uid: r.get::<_, String>(0)?,
            data_keys: keys
                .and_then(|k| serde_json::from_str::<Map<String, Value>>(&k).ok())
                .unwrap_or_default(),
            configuration: config
                .and_then(|c| serde_json::from_str::<Value>(&c).ok())
                .unwrap_or(Value::Null),
        })
    })?;
    rows.collect()
}

/// The attributes a variable takes from its data key.
fn key_attributes(spec: &Map<String, Value>) -> Map<String, Value> {
    let mut attrs = Map::new();
    for key in [
        "units",
        "source",
        "precision",
        "dtype",
        "dtype_str",
        "dtype_numpy",
        "shape",
        "object_name",
        "external",
    ] {
        if let Some(v) = spec.get(key).filter(|v| !v.is_null()) {
            attrs.insert(key.into(), v.clone());
        }
    }
    attrs
}

/// The element type of a scalar or 1-D data key; `all` says whether every descriptor of the
/// stream declares it (else its missing values need NaN, so integers and booleans are floats).
fn elem_of(spec: &Map<String, Value>, all: bool) -> Elem {
    let numpy = spec
        .get("dtype_numpy")
        .or_else(|| spec.get("dtype_str"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = numpy
        .trim_start_matches(['<', '>', '|', '='])
        .chars()
        .next();
    let exact = |e: Elem| if all { e } else { Elem::F64 };
    match spec
        .get("dtype")
        .and_then(Value::as_str)
        .unwrap_or("number")
    {
        "string" => Elem::Str,
        "integer" => exact(Elem::I64),
        "boolean" => exact(Elem::Bool),
        "array" => match kind {
            Some('i' | 'u') => exact(Elem::I64),
            Some('b') => exact(Elem::Bool),
            Some('U' | 'S' | 'O') => Elem::Str,
            Some('f') => Elem::F64,
            _ if spec
                .get("shape")
                .and_then(Value::as_array)
                .is_some_and(|s| s.is_empty()) =>
            {
                Elem::Str
            }
            _ => Elem::F64,
        },
        _ => Elem::F64,
    }
}

/// What the stream's events hold under one data key, from one pass over `events.data`.
#[derive(Debug, Default)]
struct Seen {
    /// Events that have the key.
    count: u64,
    /// SQLite's `json_type` of its values (`integer`, `real`, `true`, `null`, `array`...).
    types: HashSet<String>,
    /// For arrays: their elements' types, and their lengths.
    elements: HashSet<String>,
    lengths: HashSet<i64>,
}

/// The stream's data keys as its events hold them, and its number of entries (events and a
/// fly scan's points). SQLite groups; only a few rows per key come back.
fn survey(
    conn: &Connection,
    uid: &str,
    stream: &str,
) -> rusqlite::Result<(HashMap<String, Seen>, u64)> {
    let streams = "SELECT uid FROM streams WHERE run_uid = ?1 AND name = ?2";
    let events: i64 = conn.query_row(
        &format!("SELECT count(*) FROM events WHERE stream_uid IN ({streams})"),
        [uid, stream],
        |r| r.get(0),
    )?;
    let fly: i64 = conn.query_row(
        &format!(
            "SELECT count(*) FROM (SELECT DISTINCT stream_uid, seq_num FROM image_refs
             WHERE event_uid IS NULL AND stream_uid IN ({streams}))"
        ),
        [uid, stream],
        |r| r.get(0),
    )?;
    let mut seen: HashMap<String, Seen> = HashMap::new();
    let mut stmt = conn.prepare(&format!(
        "SELECT j.key, j.type, count(*) FROM events e, json_each(e.data) j
         WHERE e.stream_uid IN ({streams}) GROUP BY j.key, j.type"
    ))?;
    let mut rows = stmt.query([uid, stream])?;
    while let Some(r) = rows.next()? {
        let s = seen.entry(r.get(0)?).or_default();
        s.types.insert(r.get(1)?);
        s.count += r.get::<_, i64>(2)? as u64;
    }
    // The element types of each value are gathered inside the value (a short list), never
    // by joining its elements to it: a join makes SQLite's sorter keep a copy of the whole
    // value per element (temporary space events x length^2; disk full on spectra).
    let mut stmt = conn.prepare(&format!(
        "SELECT j.key, json_array_length(j.value),
           (SELECT group_concat(t, ',') FROM (SELECT DISTINCT k.type AS t FROM json_each(j.value) k))
         FROM events e, json_each(e.data) j
         WHERE e.stream_uid IN ({streams}) AND j.type = 'array'
         GROUP BY 1, 2, 3"
    ))?;
    let mut rows = stmt.query([uid, stream])?;
    while let Some(r) = rows.next()? {
        let s = seen.entry(r.get(0)?).or_default();
        s.lengths.insert(r.get(1)?);
        if let Some(types) = r.get::<_, Option<String>>(2)? {
            // json_each's type names (null, true, false, integer, real, text, array,
            // object) hold no comma.
            s.elements.extend(types.split(',').map(str::to_string));
        }
    }
    Ok((seen, (events + fly) as u64))
}

/// The element type of a column from what its values are: integers stay integers and
/// booleans booleans only when every entry has one (else NaN marks the gaps in floats);
/// numbers are floats; anything else (text, objects, mixed) is text. A key no event holds
/// takes the descriptor's word.
fn decide(seen: Option<&Seen>, rows: u64, width: Option<u64>, spec: &Map<String, Value>) -> Elem {
    let Some(seen) = seen else {
        return elem_of(spec, false);
    };
    let mut gaps = seen.count < rows || seen.types.contains("null");
    let types: HashSet<&str> = match width {
        None => seen.types.iter().map(String::as_str).collect(),
        Some(w) => {
            gaps |= seen.types.iter().any(|t| t != "array")
                || seen.lengths.iter().any(|&n| n as u64 != w);
            seen.elements.iter().map(String::as_str).collect()
        }
    };
    gaps |= types.contains("null");
    let values: HashSet<&str> = types.into_iter().filter(|t| *t != "null").collect();
    let only = |allowed: &[&str]| values.iter().all(|t| allowed.contains(t));
    if values.is_empty() {
        elem_of(spec, !gaps)
    } else if only(&["integer"]) {
        if gaps { Elem::F64 } else { Elem::I64 }
    } else if only(&["true", "false"]) {
        if gaps { Elem::F64 } else { Elem::Bool }
    } else if only(&["integer", "real", "true", "false"]) {
        Elem::F64
    } else {
        Elem::Str
    }
}

fn shape_of(spec: &Map<String, Value>) -> Option<Vec<u64>> {
    match spec.get("shape") {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::Array(d)) => d.iter().map(Value::as_u64).collect(),
        Some(_) => None,
    }
}

/// Where a stream's arrays go.
struct StreamGroup<'a> {
    store: &'a Arc<FilesystemStore>,
    run_dir: &'a Path,
    stream: &'a str,
}

/// Creates (replacing any earlier attempt) a columnar array `name` of `stream`; nothing
/// is written until its chunks and, last, its metadata.
fn new_column(
    group: &StreamGroup<'_>,
    name: &str,
    elem: Elem,
    width: Option<u64>,
    dims: Vec<String>,
    attributes: Map<String, Value>,
) -> Result<Array<FilesystemStore>, StoreError> {
    let StreamGroup {
        store,
        run_dir,
        stream,
    } = *group;
    let path = run_dir.join(stream).join(name);
    remove_dir(&path)?;
    let (data_type, fill, codecs) = elem.zarr();
    let mut shape = vec![0u64];
    let mut chunk = vec![CHUNK_ROWS as u64];
    if let Some(w) = width {
        shape.push(w);
        chunk.push(w.max(1));
    }
    let metadata = json!({
        "zarr_format": 3,
        "node_type": "array",
        "shape": shape,
        "data_type": data_type,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunk}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": fill,
        "codecs": codecs,
        "attributes": attributes,
        "dimension_names": dims,
    });
    let metadata: ArrayMetadataV3 =
        serde_json::from_value(metadata).map_err(|e| zarr(&path)(e.to_string()))?;
    Array::new_with_metadata(
        store.clone(),
        &format!("/{stream}/{name}"),
        ArrayMetadata::V3(metadata),
    )
    .map_err(|e| zarr(&path)(e.to_string()))
}

fn remove_dir(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StoreError::Io {
            path: path.to_path_buf(),
            action: "cannot remove an earlier attempt's array",
            source,
        }),
    }
}

type StreamWritten = (Value, Vec<(String, Value)>, Vec<(String, String)>);

/// Writes one stream group; returns its group metadata, its children's metadata (for the
/// run group's consolidated metadata) and the data keys it skipped.
fn write_stream(
    conn: &Connection,
    store: &Arc<FilesystemStore>,
    run_dir: &Path,
    (uid, run_group): (&str, &str),
    stream: &str,
    unsynced: &mut Vec<PathBuf>,
) -> Result<StreamWritten, LayoutError> {
    let dir = run_dir.join(stream);
    std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
        path: dir.clone(),
        action: "cannot create the stream's group",
        source,
    })?;
    let group = StreamGroup {
        store,
        run_dir,
        stream,
    };
    let descs = descriptors(conn, uid, stream).map_err(db(uid))?;
    // The stream's data keys, in the order the descriptors give them.
    let mut plans: Vec<KeyPlan> = Vec::new();
    for d in &descs {
        let keys = &d.data_keys;
        for (key, spec) in keys {
            let spec = spec.as_object().cloned().unwrap_or_default();
            match plans.iter_mut().find(|p| p.key == *key) {
                Some(p) => {
                    p.declared_by += 1;
                    if shape_of(&p.spec) != shape_of(&spec) {
                        p.shapes_agree = false;
                    }
                }
                None => plans.push(KeyPlan {
                    key: key.clone(),
                    spec,
                    declared_by: 1,
                    shapes_agree: true,
                }),
            }
        }
    }
    // The frame stacks: every array image_refs points at in this stream.
    let mut stacks: Vec<Stack> = Vec::new();
    let mut missing: Vec<(String, String)> = Vec::new();
    {
        let mut stmt = conn
            .prepare(
                "SELECT i.zarr_group, min(i.field_name) FROM image_refs i
                 JOIN streams s ON s.uid = i.stream_uid
                 WHERE s.run_uid = ?1 AND s.name = ?2
                 GROUP BY i.zarr_group ORDER BY min(i.id)",
            )
            .map_err(db(uid))?;
        let rows = stmt
            .query_map([uid, stream], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(db(uid))?;
        let prefix = format!("runs/{run_group}/{stream}/");
        for row in rows {
            let (zarr_group, key) = row.map_err(db(uid))?;
            let Some(leaf) = zarr_group.strip_prefix(&prefix).map(str::to_string) else {
                return Err(LayoutError::Conflict {
                    path: dir.clone(),
                    why: format!("image_refs names {zarr_group}, outside the stream's group"),
                });
            };
            let meta_path = dir.join(&leaf).join("zarr.json");
            let shape: Option<Vec<u64>> = read_json(&meta_path)
                .filter(|m| m["node_type"] == "array")
                .and_then(|m| {
                    m["shape"]
                        .as_array()
                        .and_then(|s| s.iter().map(Value::as_u64).collect())
                });
            let Some(shape) = shape else {
                // Frames the store lost are `verify`'s to report; the rest of the stream
                // is still laid out.
                missing.push((key, leaf));
                continue;
            };
            stacks.push(Stack {
                zarr_group,
                leaf,
                key,
                shape,
                frame_dims: Vec::new(),
                aligned: true,
            });
        }
    }
    for s in &stacks {
        if RESERVED.contains(&s.leaf.as_str()) {
            return Err(LayoutError::Conflict {
                path: dir.join(&s.leaf),
                why: format!(
                    "a frame array occupies {:?}, which the layout keeps for the stream's coordinate",
                    s.leaf
                ),
            });
        }
    }
    let (survey, rows) = survey(conn, uid, stream).map_err(db(uid))?;
    // Every name in the group, so that no column or dimension takes one twice.
    let mut taken: HashSet<String> = RESERVED.iter().map(|s| s.to_string()).collect();
    taken.extend(stacks.iter().map(|s| s.leaf.clone()));
    taken.extend(stacks.iter().map(|s| format!("{}.index", s.leaf)));
    let mut skipped: Vec<(String, String)> = Vec::new();
    for (key, leaf) in &missing {
        tracing::warn!(
            "run {uid}: stream {stream}: the frame array {leaf} of data key {key:?} is missing from the store; the stream is laid out without it (`beamdb verify` reports the missing frames)"
        );
        skipped.push((
            leaf.clone(),
            "its frame array is missing from the store (`beamdb verify` reports it)".into(),
        ));
    }
    let mut dims = Dims::default();
    let mut columns: Vec<Column> = Vec::new();
    let mut var_meta: Vec<(String, Map<String, Value>)> = Vec::new();
    let time_attrs = json!({
        "description": "events.time of each event (Unix seconds), in time order over every descriptor of the stream; NaN for a fly scan's points (delivered by stream_datum, no event)",
    });
    columns.push(Column {
        name: "time".into(),
        feed: Feed::Time,
        array: new_column(
            &group,
            "time",
            Elem::F64,
            None,
            vec!["time".into()],
            time_attrs.as_object().cloned().unwrap_or_default(),
        )?,
        buf: Buf::new(Elem::F64),
    });
    columns.push(Column {
        name: "seq_num".into(),
        feed: Feed::SeqNum,
        array: new_column(
            &group,
            "seq_num",
            Elem::I64,
            None,
            vec!["time".into()],
            json!({"description": "events.seq_num of each entry", "coordinates": "seq_num"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        )?,
        buf: Buf::new(Elem::I64),
    });
    let coords = |mut m: Map<String, Value>| {
        m.insert("coordinates".into(), "seq_num".into());
        m
    };
    for plan in &plans {
        let frames: Vec<usize> = (0..stacks.len())
            .filter(|&i| stacks[i].key == plan.key)
            .collect();
        if frames.is_empty() && missing.iter().any(|(k, _)| *k == plan.key) {
            continue;
        }
        if !frames.is_empty() {
            for i in frames {
                let frame_shape = stacks[i].shape.get(1..).unwrap_or_default().to_vec();
                let leaf = stacks[i].leaf.clone();
                stacks[i].frame_dims = dims.name(&leaf, &plan.spec, &frame_shape, &taken);
                let name = format!("{leaf}.index");
                columns.push(Column {
                    feed: Feed::StackIndex { stack: i },
                    array: new_column(
&group,
                        &name,
                        Elem::I64,
                        None,
                        vec!["time".into()],
                        coords(
                            json!({"description": format!("index along axis 0 of {leaf} of each entry's frame (image_refs.index_in_stack); -1: the entry has no frame there")})
                                .as_object()
                                .cloned()
                                .unwrap_or_default(),
                        ),
                    )?,
                    name,
                    buf: Buf::new(Elem::I64),
                });
            }
            continue;
        }
        let key = &plan.key;
        let mut skip = |why: String| {
            tracing::warn!(
                "run {uid}: stream {stream}: data key {key:?} has no array in the store: {why} (its values stay in events.data)"
            );
            skipped.push((key.clone(), why));
        };
        let name = array_name(key);
        if SafeName::new("field name", &name).is_err() || name.contains('/') {
            skip("not a safe path component".into());
            continue;
        }
        if taken.contains(&name) {
            skip(format!(
                "its array name {name:?} is taken by another variable"
            ));
            continue;
        }
        if !plan.shapes_agree {
            skip("its shape differs between the stream's descriptors".into());
            continue;
        }
        let Some(shape) = shape_of(&plan.spec) else {
            skip("its shape is not a list of sizes".into());
            continue;
        };
        let width = match shape.as_slice() {
            [] => None,
            [0] => {
                skip("its shape is [0]".into());
                continue;
            }
            [w] => Some(*w),
            _ => {
                skip("an array of 2 or more dimensions with no frame stored".into());
                continue;
            }
        };
        let seen = survey.get(key.as_str());
        // The values decide the width when they all agree (a descriptor may say otherwise).
        let width = match (width, seen.map(|s| &s.lengths)) {
            (Some(_), Some(l)) if l.len() == 1 && l.iter().all(|&n| n > 0) => {
                l.iter().next().map(|&n| n as u64)
            }
            (w, _) => w,
        };
        taken.insert(name.clone());
        let elem = decide(seen, rows, width, &plan.spec);
        let mut names = vec!["time".to_string()];
        if let Some(w) = width {
            names.extend(dims.name(&name, &plan.spec, &[w], &taken));
        }
        let mut attrs = coords(key_attributes(&plan.spec));
        if name != *key {
            attrs.insert("data_key".into(), key.clone().into());
        }
        columns.push(Column {
            array: new_column(&group, &name, elem, width, names, attrs)?,
            name,
            feed: Feed::Key {
                key: key.clone(),
                width,
            },
            buf: Buf::new(elem),
        });
    }
    let rows = fill_columns(conn, uid, stream, &dir, &mut columns, &mut stacks, unsynced)?;
    for c in &columns {
        // Without zarrs' own `_zarrs` attribute, which xarray would show on every variable.
        let meta = c.array.metadata_opt(
            &zarrs::array::ArrayMetadataOptions::default().with_include_zarrs_metadata(false),
        );
        let meta = serde_json::to_value(meta)
            .map_err(|e| zarr(&dir)(format!("cannot write {} metadata: {e}", c.name)))?;
        let path = dir.join(&c.name).join("zarr.json");
        frames::write_json_unsynced(&path, &meta)?;
        unsynced.push(path);
        var_meta.push((c.name.clone(), Map::new()));
    }
    // Each stack's axis names: `time` when aligned with the time index.
    for s in &stacks {
        let path = dir.join(&s.leaf).join("zarr.json");
        let Some(mut meta) = read_json(&path) else {
            return Err(LayoutError::Conflict {
                path,
                why: "the frame array's metadata is missing or unreadable".into(),
            });
        };
        let aligned = s.aligned && s.shape.first() == Some(&rows);
        let axis0 = if aligned {
            "time".to_string()
        } else {
            format!("{}.frame", s.leaf)
        };
        let mut names = vec![axis0];
        names.extend(s.frame_dims.iter().cloned());
        meta["dimension_names"] = json!(names);
        if let Some(attrs) = meta["attributes"].as_object_mut() {
            attrs.insert("data_key".into(), s.key.clone().into());
            let spec = plans
                .iter()
                .find(|p| p.key == s.key)
                .map(|p| key_attributes(&p.spec));
            for (k, v) in spec.unwrap_or_default() {
                attrs.entry(k).or_insert(v);
            }
            attrs.insert(
                "beamdb_frame_index".into(),
                format!("{}.index", s.leaf).into(),
            );
        }
        frames::write_json_unsynced(&path, &meta)?;
        unsynced.push(path);
    }
    // The group's consolidated metadata: every child as it is on disk now.
    let mut children: Vec<(String, Value)> = Vec::new();
    let mut leaves: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
    leaves.extend(stacks.iter().map(|s| s.leaf.clone()));
    for leaf in leaves {
        let path = dir.join(&leaf).join("zarr.json");
        let meta = read_json(&path).ok_or_else(|| LayoutError::Conflict {
            path: path.clone(),
            why: "array metadata missing right after it was written".into(),
        })?;
        children.push((leaf, meta));
    }
    let mut attributes = Map::new();
    attributes.insert("stream".into(), stream.into());
    attributes.insert("run_uid".into(), uid.into());
    attributes.insert(
        "descriptor_uids".into(),
        json!(descs.iter().map(|d| d.uid.clone()).collect::<Vec<_>>()),
    );
    let configuration: Map<String, Value> = descs
        .iter()
        .filter(|d| !d.configuration.is_null())
        .map(|d| (d.uid.clone(), d.configuration.clone()))
        .collect();
    attributes.insert("configuration".into(), Value::Object(configuration));
    if !skipped.is_empty() {
        let notes: Map<String, Value> = skipped
            .iter()
            .map(|(k, why)| (k.clone(), why.clone().into()))
            .collect();
        attributes.insert("beamdb_skipped".into(), Value::Object(notes));
    }
    let consolidated: Map<String, Value> = children.iter().cloned().collect();
    let group = json!({
        "zarr_format": 3,
        "node_type": "group",
        "attributes": attributes,
        "consolidated_metadata": {"kind": "inline", "must_understand": false, "metadata": consolidated},
    });
    let path = dir.join("zarr.json");
    frames::write_json_unsynced(&path, &group)?;
    unsynced.push(path);
    Ok((group, children, skipped))
}

/// Reads the stream's rows in order, `CHUNK_ROWS` at a time, into the columns; marks the
/// stacks that are not aligned with the rows. Returns the number of rows.
fn fill_columns(
    conn: &Connection,
    uid: &str,
    stream: &str,
    dir: &Path,
    columns: &mut [Column],
    stacks: &mut [Stack],
    unsynced: &mut Vec<PathBuf>,
) -> Result<u64, LayoutError> {
    // Events with their frames, then a fly scan's points (stream_datum without an event).
    let sql = "SELECT t, seq, data, refs FROM (
          SELECT e.time AS t, e.seq_num AS seq, e.stream_uid AS su, e.data AS data,
            (SELECT json_group_array(json_array(i.zarr_group, i.index_in_stack))
             FROM image_refs i WHERE i.event_uid = e.uid) AS refs
          FROM events e
          WHERE e.stream_uid IN (SELECT uid FROM streams WHERE run_uid = ?1 AND name = ?2)
          UNION ALL
          SELECT NULL, i.seq_num, i.stream_uid, NULL,
            json_group_array(json_array(i.zarr_group, i.index_in_stack))
          FROM image_refs i
          WHERE i.event_uid IS NULL
            AND i.stream_uid IN (SELECT uid FROM streams WHERE run_uid = ?1 AND name = ?2)
          GROUP BY i.stream_uid, i.seq_num)
        ORDER BY t IS NULL, t, seq, su";
    let mut stmt = conn.prepare(sql).map_err(db(uid))?;
    let mut rows = stmt.query(params![uid, stream]).map_err(db(uid))?;
    let by_group: HashMap<String, usize> = stacks
        .iter()
        .enumerate()
        .map(|(i, s)| (s.zarr_group.clone(), i))
        .collect();
    let mut n: u64 = 0;
    let mut in_chunk: u64 = 0;
    let mut index_of: Vec<i64> = vec![-1; stacks.len()];
    loop {
        let row = rows.next().map_err(db(uid))?;
        let Some(row) = row else { break };
        let time: Option<f64> = row.get(0).map_err(db(uid))?;
        let seq: i64 = row.get(1).map_err(db(uid))?;
        let data: Option<String> = row.get(2).map_err(db(uid))?;
        let refs: Option<String> = row.get(3).map_err(db(uid))?;
        let data: Map<String, Value> = data
            .and_then(|d| serde_json::from_str(&d).ok())
            .unwrap_or_default();
        index_of.iter_mut().for_each(|x| *x = -1);
        if let Some(Value::Array(refs)) = refs.and_then(|r| serde_json::from_str(&r).ok()) {
            for r in refs {
                if let (Some(group), Some(index)) = (r[0].as_str(), r[1].as_i64())
                    && let Some(&i) = by_group.get(group)
                {
                    index_of[i] = index;
                }
            }
        }
        for (i, s) in stacks.iter_mut().enumerate() {
            if index_of[i] != n as i64 {
                s.aligned = false;
            }
        }
        for c in columns.iter_mut() {
            match &c.feed {
                Feed::Time => c.buf.push_number(time.unwrap_or(f64::NAN), 0),
                Feed::SeqNum => c.buf.push_number(f64::NAN, seq),
                Feed::StackIndex { stack } => c.buf.push_number(f64::NAN, index_of[*stack]),
                Feed::Key { key, width: None } => c.buf.push(data.get(key)),
                Feed::Key {
                    key,
                    width: Some(w),
                } => {
                    let value = data.get(key).and_then(Value::as_array);
                    let fits = value.filter(|v| v.len() as u64 == *w);
                    for j in 0..*w as usize {
                        c.buf.push(fits.and_then(|v| v.get(j)));
                    }
                }
            }
        }
        n += 1;
        in_chunk += 1;
        if in_chunk == CHUNK_ROWS as u64 {
            flush(columns, dir, n, in_chunk, unsynced)?;
            in_chunk = 0;
        }
    }
    if in_chunk > 0 {
        flush(columns, dir, n, in_chunk, unsynced)?;
    }
    Ok(n)
}

/// Grows every column to `n` rows and writes the last `count` rows from its buffer: one
/// chunk, since flushes fall on chunk boundaries. Nothing is synced here.
fn flush(
    columns: &mut [Column],
    dir: &Path,
    n: u64,
    count: u64,
    written: &mut Vec<PathBuf>,
) -> Result<(), StoreError> {
    let run_dir = dir.parent().unwrap_or(dir);
    let index = (n - count) / CHUNK_ROWS as u64;
    for c in columns.iter_mut() {
        let mut shape = c.array.shape().to_vec();
        shape[0] = n;
        c.array
            .set_shape(shape.clone())
            .map_err(|e| zarr(dir)(e.to_string()))?;
        let mut chunk = vec![index];
        chunk.extend(std::iter::repeat_n(0, shape.len() - 1));
        let encoded = c
            .buf
            .encode(&c.array, &chunk)
            .map_err(|e| zarr(dir)(format!("{}: {e}", c.name)))?;
        let path = run_dir.join(c.array.chunk_key(&chunk).as_str());
        frames::write_unsynced(&path, &encoded)?;
        written.push(path);
    }
    Ok(())
}

/// The committed runs whose store group lacks this layout's marker, oldest first. A run
/// with no stream (no descriptor) has nothing for xarray to show and is not counted: an
/// earlier beamdb wrote no group for it, and converting thousands of such runs would only
/// write empty groups.
pub fn to_convert(conn: &Connection, root: &Path) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT uid FROM runs WHERE EXISTS (SELECT 1 FROM streams s WHERE s.run_uid = runs.uid)
         ORDER BY time_start, uid",
    )?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let mut uids = Vec::new();
    for uid in rows {
        let uid = uid?;
        if SafeName::new("run uid", &uid).is_ok() && !has_layout(root, &uid) {
            uids.push(uid);
        }
    }
    Ok(uids)
}

/// What [`upgrade_store`] did.
#[derive(Debug, Default)]
pub struct Upgrade {
    /// Runs converted (or, with `dry_run`, to convert).
    pub done: Vec<String>,
    /// Runs that could not be: left without the marker, for the next `migrate`.
    pub failed: Vec<(String, LayoutError)>,
}

/// Converts every committed run of the beamtime database `conn` whose group in the store at
/// `root` does not carry this layout's marker, each in a read snapshot of its own; a run
/// that fails is left unmarked and the others are still converted. A store that cannot be
/// created or a database that cannot be read stops it.
pub fn upgrade_store(
    conn: &mut Connection,
    root: &Path,
    dry_run: bool,
) -> Result<Upgrade, LayoutError> {
    let uids = to_convert(conn, root).map_err(db(""))?;
    let mut upgrade = Upgrade::default();
    let mut store_made = dry_run;
    for uid in uids {
        if !store_made {
            // A beamtime whose runs had no frames may have no store yet.
            frames::create_store(root)?;
            store_made = true;
        }
        if !dry_run {
            let tx = conn.transaction().map_err(db(&uid))?;
            let written = write_run_layout(&tx, root, &uid, &uid);
            tx.rollback().map_err(db(&uid))?;
            if let Err(e) = written {
                upgrade.failed.push((uid, e));
                continue;
            }
        }
        upgrade.done.push(uid);
    }
    Ok(upgrade)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dimension_names_follow_databroker_and_never_clash() {
        let mut dims = Dims::default();
        let taken: HashSet<String> = ["det".to_string()].into();
        let none = Map::new();
        assert_eq!(dims.name("a", &none, &[3, 4], &taken), ["dim_0", "dim_1"]);
        assert_eq!(dims.name("b", &none, &[5], &taken), ["dim_2"]);
        let given = json!({"dims": ["y", "x"]})
            .as_object()
            .cloned()
            .unwrap_or_default();
        assert_eq!(dims.name("c", &given, &[3, 4], &taken), ["y", "x"]);
        // Same names, other sizes: made unique rather than failing xarray.
        assert_eq!(dims.name("d", &given, &[6, 4], &taken), ["d.y", "x"]);
        let bad = json!({"dims": ["time", "det"]})
            .as_object()
            .cloned()
            .unwrap_or_default();
        assert_eq!(dims.name("e", &bad, &[2, 2], &taken), ["e.time", "e.det"]);
    }

    #[test]
    fn element_types_come_from_the_data_key() {
        let spec = |v: Value| v.as_object().cloned().unwrap_or_default();
        assert_eq!(elem_of(&spec(json!({"dtype": "number"})), true), Elem::F64);
        assert_eq!(elem_of(&spec(json!({"dtype": "integer"})), true), Elem::I64);
        assert_eq!(
            elem_of(&spec(json!({"dtype": "integer"})), false),
            Elem::F64
        );
        assert_eq!(elem_of(&spec(json!({"dtype": "string"})), false), Elem::Str);
        assert_eq!(
            elem_of(
                &spec(json!({"dtype": "array", "dtype_numpy": "<i4", "shape": [3]})),
                true
            ),
            Elem::I64
        );
    }
}
