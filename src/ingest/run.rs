//! One run, document by document: checks what ingest relies on, sends frames to the Zarr
//! store as they come (in parallel batches), and collects the rows that are committed at the
//! end. The one table it writes is the connection's private staging table of events
//! (`writer::stage_events`): a long run's events wait there, on disk, not in memory, and are
//! copied into `events` with the run's other rows at its commit.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use rayon::prelude::*;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::documents::{Doc, DocError, EventDoc, Fields, Kind, Pos};
use super::dtype::Dtype;
use super::handlers::{self, FrameError, FrameInfo, Handler, Locator, ResourceError};
use super::inline;
use super::kept;
use super::rootmap::RootMap;
use super::rows::{EventRow, ImageRefRow, RunRows, StreamRow};
use super::writer;
use crate::frames::{self, FrameStore, RunFrames, StackSpec, StoreError, Target};
use crate::layout::{NameError, SafeName};
use crate::settings::Compression;

/// What is wrong with a run. Shown after the `file:line` of the document that showed it.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error(transparent)]
    Doc(#[from] DocError),
    #[error("{0}")]
    Order(String),
    #[error("{what} {uid:?} appears twice")]
    Duplicate { what: &'static str, uid: String },
    #[error(
        "{kind} refers to {what} {uid:?}, which has not appeared before it in this run (documents missing or out of order)"
    )]
    UnknownRef {
        kind: &'static str,
        what: &'static str,
        uid: String,
    },
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Resource(#[from] ResourceError),
    #[error("{field}: {source}")]
    Frame {
        field: String,
        // Boxed: HDF5 errors carry a file, a dataset and a range, and every Result here
        // carries a Problem.
        source: Box<FrameError>,
    },
    #[error("{field}: {what}")]
    Value { field: String, what: String },
    #[error(
        "run {uid} is already in this beamtime with different documents; to store these documents instead, run the same ingest with --replace"
    )]
    Differs { uid: String },
    #[error(
        "seq_num {seq_num} appears twice in stream {descriptor:?} (its first event: {first}); each event of a stream needs its own seq_num"
    )]
    SeqNumTwice {
        seq_num: i64,
        descriptor: String,
        first: Pos,
    },
    #[error(
        "{what} {uid:?} already belongs to run {owner} in this beamtime, and {what}s are unique in a beamtime; if these documents are a copy of run {owner}, they are stored already; otherwise the documents must give this run its own uids"
    )]
    Owned {
        what: &'static str,
        uid: String,
        owner: String,
    },
    #[error("the database refused the run: {0}")]
    Database(String),
    /// The S3 frame store failed mid-run after its retries (network, 5xx): the run is not
    /// stored. What it uploaded is deleted, or left for `verify --repair` when the store
    /// cannot be reached even for that.
    #[error(
        "{0}; the run is not stored (nothing of it is committed): ingest it again once the store answers; `beamdb verify --repair` deletes what it uploaded"
    )]
    Remote(StoreError),
    #[error(
        "the stop document's num_events says {says} for stream {stream:?}, but {has} arrived; the run is not whole (documents missing from the input, or rejected above), so it is not stored"
    )]
    Counts {
        stream: String,
        says: String,
        has: i64,
    },
}

/// A run that is not stored, and why.
#[derive(Debug, thiserror::Error)]
#[error("{}{problem}", at.as_ref().map(|p| format!("{p}: ")).unwrap_or_default())]
pub struct Rejected {
    pub at: Option<Pos>,
    pub problem: Box<Problem>,
}

impl Rejected {
    pub fn at(pos: &Pos, problem: impl Into<Problem>) -> Rejected {
        Rejected {
            at: Some(pos.clone()),
            problem: Box::new(problem.into()),
        }
    }

    pub fn without_position(problem: Problem) -> Rejected {
        Rejected {
            at: None,
            problem: Box::new(problem),
        }
    }
}

/// Why a run stopped: its input (the other runs go on) or the machine (ingest stops).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Rejected(#[from] Rejected),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The staging table of events (the connection's temp database) failed.
    #[error("beamtime database (staging the run's events): {0}")]
    Db(#[from] rusqlite::Error),
}

/// What the builder shares with every run of one ingest.
pub struct Context<'a> {
    pub store: &'a FrameStore,
    pub roots: &'a RootMap,
    pub compression: Compression,
    /// For the staging table of events only (the run's rows are committed by `writer`).
    pub conn: &'a rusqlite::Connection,
}

/// How the run's documents are used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Write frames (to `Target`) and collect rows.
    Write(Target),
    /// The run is in the database already: only compute the digest, to compare.
    Compare { committed: String },
}

/// A datum: its resource's handler and its kwargs.
type DatumRef = (Arc<dyn Handler>, Locator);

/// Where a frame's bytes come from.
enum Source {
    Bytes(Vec<u8>),
    Datum(Arc<dyn Handler>, Locator),
}

/// A stream_resource: its handler and the data key it feeds.
struct StreamResource {
    handler: Arc<dyn Handler>,
    data_key: String,
}

/// What a stream_datum delivered for one seq_num of one field. Its event (there may be none:
/// a fly scan has no events) is found when the run finishes, because a stream_datum comes
/// before the event of its seq_num.
struct Delivery {
    descriptor: String,
    seq_num: i64,
    field: String,
    what: Delivered,
}

enum Delivered {
    /// A frame, already on its way to Zarr: its image_refs row and its note for the event.
    Frame {
        image_ref: usize,
        note: Map<String, Value>,
    },
    /// A scalar or short 1-D value, read from the file: the event's JSON gets it; without an
    /// event it joins `stack` in Zarr.
    Value {
        stack: usize,
        bytes: Vec<u8>,
        pos: Pos,
    },
}

/// A frame about to get its image_refs row.
struct NewFrame<'a> {
    event_uid: Option<&'a str>,
    stream_uid: &'a str,
    seq_num: i64,
    field: &'a str,
    pos: &'a Pos,
}

struct FrameJob {
    stack: usize,
    index: u64,
    source: Source,
    field: String,
    pos: Pos,
}

/// A field's stack of frames in the run: shared by the descriptors of one stream name
/// whose shape and dtype agree.
struct Stack {
    stream: SafeName,
    field: String,
    zarr_path: String,
    shape: Vec<u64>,
    /// From the descriptor, or from the first frame when the descriptor does not say.
    dtype: Option<Dtype>,
    declared: Option<Dtype>,
    /// Its number in `RunFrames`, once created.
    created: Option<usize>,
    len: u64,
    descriptors: Vec<String>,
    data_key: Value,
}

enum Field {
    /// Stays in the event's JSON.
    Json,
    /// Goes to the Zarr store.
    Frame { stack: usize, external: bool },
    /// A scalar or 1-D value a stream_resource delivers (`external: "STREAM:"`): into the
    /// event's JSON like any scalar; into Zarr (`stack`) for a seq_num that has no event.
    StreamValue { stack: usize },
}

struct Descriptor {
    fields: Vec<(String, Field)>,
}

/// Frames batched before a parallel write: enough to keep every core busy, small enough that
/// a run of large frames never sits in memory.
const BATCH_FRAMES: usize = 64;
const BATCH_BYTES: usize = 64 << 20;
/// Event rows held before they go to the staging table: one statement's worth many times
/// over (fewer transactions), and a few hundred KiB at most.
const STAGE_ROWS: usize = 1000;

pub struct RunBuilder {
    pub uid: SafeName,
    pub mode: Mode,
    /// The run's group under `runs/` in the frame store (`FrameStore::new_group`): the uid,
    /// or on S3 a version of its own.
    pub group: String,
    start: Map<String, Value>,
    digest: Sha256,
    descriptors: HashMap<String, Descriptor>,
    resources: HashMap<String, Arc<dyn Handler>>,
    datums: HashMap<String, DatumRef>,
    stream_resources: HashMap<String, StreamResource>,
    stream_datums: HashSet<String>,
    delivered: Vec<Delivery>,
    delivered_keys: HashSet<(String, i64, String)>,
    /// Events per descriptor. Nothing per event stays in memory: a repeated event uid or
    /// seq_num is refused by the events table's constraints at the commit, and the staging
    /// table's `line` names both documents (`owners::first_refused`).
    event_counts: HashMap<String, i64>,
    /// Where the start document is: a run that differs from the stored one is named by it.
    start_pos: Pos,
    stacks: Vec<Stack>,
    frames: Option<RunFrames>,
    pending: Vec<FrameJob>,
    pending_bytes: usize,
    rows: RunRows,
    /// What export needs beyond `rows`, fed every document.
    kept: kept::Collector,
    stopped: bool,
    pub frames_written: u64,
    pub bytes_written: u64,
    /// What cleaning up after a killed ingest of this run did.
    pub recovered: frames::Recovered,
}

/// The finished run.
pub enum Finished {
    /// Frames are on disk (metadata written); rows ready to commit.
    Ready {
        rows: Box<RunRows>,
        frames: u64,
        bytes: u64,
    },
    /// Same documents as the committed run.
    Unchanged,
}

fn required_uid<'a>(fields: &Fields<'a>) -> Result<&'a str, DocError> {
    fields.str("uid")
}

impl RunBuilder {
    /// Starts a run from its start document. The run uid must be a safe name: it becomes a
    /// folder of the frame store.
    pub fn start(doc: &Doc, mode: Mode) -> Result<RunBuilder, Rejected> {
        let f = Fields::of(doc);
        let at = |p: Problem| Rejected::at(&doc.pos, p);
        let uid = required_uid(&f).map_err(|e| at(e.into()))?;
        let uid = SafeName::new("run uid", uid).map_err(|e| at(e.into()))?;
        f.f64("time").map_err(|e| at(e.into()))?;
        let mut digest = Sha256::new();
        doc.digest_into(&mut digest);
        Ok(RunBuilder {
            group: uid.to_string(),
            uid,
            mode,
            start: doc.body.clone(),
            digest,
            descriptors: HashMap::new(),
            resources: HashMap::new(),
            datums: HashMap::new(),
            stream_resources: HashMap::new(),
            stream_datums: HashSet::new(),
            delivered: Vec::new(),
            delivered_keys: HashSet::new(),
            event_counts: HashMap::new(),
            start_pos: doc.pos.clone(),
            stacks: Vec::new(),
            frames: None,
            pending: Vec::new(),
            pending_bytes: 0,
            rows: RunRows::default(),
            kept: kept::Collector::default(),
            stopped: false,
            frames_written: 0,
            bytes_written: 0,
            recovered: frames::Recovered::Nothing,
        })
    }

    /// Takes the run's next document. Returns true when it was the stop.
    pub fn feed(&mut self, doc: &Doc, cx: &Context<'_>) -> Result<bool, RunError> {
        doc.digest_into(&mut self.digest);
        let at = |p: Problem| RunError::Rejected(Rejected::at(&doc.pos, p));
        if let Some(run_start) = doc.body.get("run_start").and_then(Value::as_str)
            && run_start != self.uid.as_str()
        {
            return Err(at(Problem::Order(format!(
                "{} belongs to run {run_start:?}, but run {} is open (runs interleaved or a stop is missing)",
                doc.kind.name(),
                self.uid
            ))));
        }
        if matches!(self.mode, Mode::Compare { .. }) {
            return Ok(doc.kind == Kind::Stop);
        }
        // An event read on the fast path has no body: it tells `kept` itself (`fast_event`).
        if doc.event.is_none() {
            self.kept.feed(doc);
        }
        let f = Fields::of(doc);
        match doc.kind {
            // The driver ends a run before it opens the next one.
            Kind::Start => return Err(at(Problem::Order("a start inside an open run".into()))),
            Kind::Descriptor => self.descriptor(&f, &doc.pos).map_err(at)?,
            Kind::Resource => self.resource(&f, cx).map_err(at)?,
            Kind::Datum => {
                let resource = f.str("resource").map_err(|e| at(e.into()))?;
                let id = f.str("datum_id").map_err(|e| at(e.into()))?;
                let kwargs = f.object("datum_kwargs").map_err(|e| at(e.into()))?;
                self.datum(resource, id, kwargs.clone()).map_err(at)?;
            }
            Kind::DatumPage => self.datum_page(&f).map_err(at)?,
            Kind::Event => match &doc.event {
                Some(event) => self.fast_event(event, &doc.pos, cx)?,
                None => self.event(&f, &doc.pos, cx)?,
            },
            Kind::EventPage => self.event_page(&f, &doc.pos, cx)?,
            Kind::StreamResource => self.stream_resource(&f, cx).map_err(at)?,
            Kind::StreamDatum => self.stream_datum(&f, &doc.pos, cx)?,
            Kind::Stop => {
                let exit = f.str("exit_status").map_err(|e| at(e.into()))?;
                if !matches!(exit, "success" | "abort" | "fail") {
                    return Err(at(Problem::Value {
                        field: "exit_status".into(),
                        what: format!("{exit:?} is not success, abort or fail"),
                    }));
                }
                f.f64("time").map_err(|e| at(e.into()))?;
                self.rows.stop = Some(doc.body.clone());
                self.rows.stop_pos = Some(doc.pos.clone());
                self.stopped = true;
                return Ok(true);
            }
        }
        if self.pending.len() >= BATCH_FRAMES || self.pending_bytes >= BATCH_BYTES {
            self.flush()?;
        }
        Ok(false)
    }

    fn descriptor(&mut self, f: &Fields<'_>, pos: &Pos) -> Result<(), Problem> {
        let uid = f.str("uid")?.to_string();
        if self.descriptors.contains_key(&uid) {
            return Err(Problem::Duplicate {
                what: "descriptor uid",
                uid,
            });
        }
        let name = f.str("name")?;
        let time = f.f64("time")?;
        let data_keys = f.object("data_keys")?;
        let mut fields = Vec::new();
        for (field, key) in data_keys {
            let plan = self.plan_field(&uid, name, field, key)?;
            fields.push((field.clone(), plan));
        }
        self.rows.streams.push(StreamRow {
            uid: uid.clone(),
            name: name.to_string(),
            data_keys: Value::Object(data_keys.clone()).to_string(),
            time_created: time,
            configuration: f
                .opt_object("configuration")?
                .map(|c| Value::Object(c.clone()).to_string()),
            pos: pos.clone(),
        });
        self.descriptors.insert(uid, Descriptor { fields });
        Ok(())
    }

    /// Decides where a data key's values go; frames get (or share) a stack.
    fn plan_field(
        &mut self,
        descriptor: &str,
        stream: &str,
        field: &str,
        key: &Value,
    ) -> Result<Field, Problem> {
        let bad = |what: &str| Problem::Value {
            field: field.to_string(),
            what: what.to_string(),
        };
        let key_obj = key
            .as_object()
            .ok_or_else(|| bad("data key is not an object"))?;
        let shape: Vec<u64> = match key_obj.get("shape") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(dims)) => dims
                .iter()
                .map(|d| d.as_u64())
                .collect::<Option<_>>()
                .ok_or_else(|| bad("shape is not a list of non-negative integers"))?,
            Some(_) => return Err(bad("shape is not a list")),
        };
        let external = key_obj.get("external").is_some_and(|v| !v.is_null());
        if !external && shape.len() < 2 {
            return Ok(Field::Json);
        }
        // ophyd-async marks what a stream_resource delivers "STREAM:"; its scalars are data
        // like any scalar, not frames.
        let stream_value = shape.len() < 2
            && key_obj
                .get("external")
                .and_then(Value::as_str)
                .is_some_and(|e| e.starts_with("STREAM"));
        // Its name becomes part of a path.
        let stream = SafeName::new("stream name", stream)?;
        SafeName::new("field name", field)?;
        let declared = key_obj
            .get("dtype_numpy")
            .or_else(|| key_obj.get("dtype_str"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(|s| Dtype::parse_numpy(s).map(|(d, _)| d))
            .transpose()
            .map_err(|e| bad(&e.to_string()))?;
        // Every frame of this field is a Zarr chunk of this shape: refused here, at the
        // descriptor's line, before a stack is created or a frame is read. Without a declared
        // type the widest (8 bytes) must fit.
        if shape.contains(&0) {
            return Err(bad(&format!(
                "shape {shape:?} has a dimension of 0; a frame holds at least one element"
            )));
        }
        let widest = declared.unwrap_or(Dtype::FLOAT64);
        if widest.frame_bytes(&shape).is_none() {
            return Err(bad(&format!(
                "shape {shape:?} is too large: one frame of {widest} would not fit in memory"
            )));
        }
        let shared = self.stacks.iter().position(|s| {
            s.stream == stream && s.field == field && s.shape == shape && s.declared == declared
        });
        let stack = match shared {
            Some(i) => i,
            None => {
                // A second stack of one field (its shape or dtype changed mid-run) gets a
                // suffix that no safe field name can collide with silently.
                let same_name = self
                    .stacks
                    .iter()
                    .filter(|s| s.stream == stream && s.field == field)
                    .count();
                // A field named like the stream's coordinates (`time`) is renamed, so
                // that its frames never take the coordinate's place (docs/reading.md).
                let base = crate::store_columns::array_name(field);
                let leaf = if same_name == 0 {
                    base
                } else {
                    format!("{base}.{}", same_name + 1)
                };
                if self
                    .stacks
                    .iter()
                    .any(|s| s.stream == stream && s.zarr_path.ends_with(&format!("/{leaf}")))
                {
                    return Err(bad(
                        "a field with this name and a changed shape collides with another field",
                    ));
                }
                self.stacks.push(Stack {
                    zarr_path: FrameStore::array_path(&self.group, &stream, &leaf),
                    stream,
                    field: field.to_string(),
                    shape,
                    dtype: declared,
                    declared,
                    created: None,
                    len: 0,
                    descriptors: Vec::new(),
                    data_key: key.clone(),
                });
                self.stacks.len() - 1
            }
        };
        self.stacks[stack].descriptors.push(descriptor.to_string());
        Ok(if stream_value {
            Field::StreamValue { stack }
        } else {
            Field::Frame { stack, external }
        })
    }

    fn resource(&mut self, f: &Fields<'_>, cx: &Context<'_>) -> Result<(), Problem> {
        let uid = f.str("uid")?.to_string();
        if self.resources.contains_key(&uid) {
            return Err(Problem::Duplicate {
                what: "resource uid",
                uid,
            });
        }
        let spec = f.str("spec")?;
        let root = f.opt_str("root")?.unwrap_or("");
        let path = f.str("resource_path")?;
        let empty = Map::new();
        let kwargs = f.opt_object("resource_kwargs")?.unwrap_or(&empty);
        let handler = handlers::for_resource(spec, root, path, kwargs, cx.roots)?;
        self.resources.insert(uid, handler);
        Ok(())
    }

    fn datum(
        &mut self,
        resource: &str,
        id: &str,
        kwargs: Map<String, Value>,
    ) -> Result<(), Problem> {
        let handler = self
            .resources
            .get(resource)
            .ok_or_else(|| Problem::UnknownRef {
                kind: "datum",
                what: "resource",
                uid: resource.to_string(),
            })?
            .clone();
        if self
            .datums
            .insert(id.to_string(), (handler, Locator::Kwargs(kwargs)))
            .is_some()
        {
            return Err(Problem::Duplicate {
                what: "datum_id",
                uid: id.to_string(),
            });
        }
        Ok(())
    }

    fn stream_resource(&mut self, f: &Fields<'_>, cx: &Context<'_>) -> Result<(), Problem> {
        let uid = f.str("uid")?.to_string();
        if self.stream_resources.contains_key(&uid) {
            return Err(Problem::Duplicate {
                what: "stream_resource uid",
                uid,
            });
        }
        let data_key = f.str("data_key")?.to_string();
        let mimetype = f.str("mimetype")?;
        let uri = f.str("uri")?;
        let empty = Map::new();
        let parameters = f.opt_object("parameters")?.unwrap_or(&empty);
        let handler = handlers::for_stream_resource(mimetype, uri, parameters, cx.roots)?;
        self.stream_resources
            .insert(uid, StreamResource { handler, data_key });
        Ok(())
    }

    /// A stream_datum: indices `[start, stop)` of its stream_resource are the values of its
    /// data key at seq_nums `[start, stop)`. Frames go to Zarr now, with image_refs rows that
    /// name their seq_num; scalars are read now; both meet their events at the end.
    fn stream_datum(
        &mut self,
        f: &Fields<'_>,
        pos: &Pos,
        cx: &Context<'_>,
    ) -> Result<(), RunError> {
        let at = |p: Problem| RunError::Rejected(Rejected::at(pos, p));
        let uid = f.str("uid").map_err(|e| at(e.into()))?;
        let resource = f.str("stream_resource").map_err(|e| at(e.into()))?;
        let descriptor = f.str("descriptor").map_err(|e| at(e.into()))?;
        let range = |field: &str| -> Result<(u64, u64), Problem> {
            let bound = |end: &str| {
                f.object(field)?
                    .get(end)
                    .and_then(Value::as_u64)
                    .ok_or_else(|| DocError::Field {
                        kind: "stream_datum",
                        field: format!("{field}.{end}"),
                        expected: "a non-negative integer",
                    })
            };
            let (start, stop) = (bound("start")?, bound("stop")?);
            if stop < start {
                return Err(Problem::Value {
                    field: field.to_string(),
                    what: format!("[{start}, {stop}) ends before it starts"),
                });
            }
            Ok((start, stop))
        };
        let (first, last) = range("indices").map_err(at)?;
        let (seq_first, seq_last) = range("seq_nums").map_err(at)?;
        if last - first != seq_last - seq_first {
            return Err(at(Problem::Value {
                field: "seq_nums".into(),
                what: format!(
                    "[{seq_first}, {seq_last}) is not as long as indices [{first}, {last})"
                ),
            }));
        }
        if !self.stream_datums.insert(uid.to_string()) {
            return Err(at(Problem::Duplicate {
                what: "stream_datum uid",
                uid: uid.to_string(),
            }));
        }
        let Some(sr) = self.stream_resources.get(resource) else {
            return Err(at(Problem::UnknownRef {
                kind: "stream_datum",
                what: "stream_resource",
                uid: resource.to_string(),
            }));
        };
        let (handler, field) = (sr.handler.clone(), sr.data_key.clone());
        let Some(desc) = self.descriptors.get(descriptor) else {
            return Err(at(Problem::UnknownRef {
                kind: "stream_datum",
                what: "descriptor",
                uid: descriptor.to_string(),
            }));
        };
        let plan = desc.fields.iter().find_map(|(name, plan)| match plan {
            _ if *name != field => None,
            Field::Frame { stack, .. } => Some(Ok((*stack, false))),
            Field::StreamValue { stack } => Some(Ok((*stack, true))),
            Field::Json => Some(Err("is not external in the descriptor")),
        });
        let (stack, is_value) = match plan {
            Some(Ok(plan)) => plan,
            Some(Err(what)) => {
                return Err(at(Problem::Value {
                    field,
                    what: what.into(),
                }));
            }
            None => {
                return Err(at(Problem::Value {
                    field,
                    what: format!(
                        "the stream_resource's data_key is not a data key of descriptor {descriptor}"
                    ),
                }));
            }
        };
        // s0: how many rows of the dataset one index covers.
        let rows = self.stacks[stack].shape.first().copied().unwrap_or(1);
        // Checked against the dataset as it is now, before a frame is planned: a document's
        // [0, 2^40) would otherwise plan a trillion frames before the first read failed.
        if let Some(len) = handler.extent(last.saturating_mul(rows))
            && last.checked_mul(rows).is_none_or(|n| n > len)
        {
            // The first index past the end, as reading it would have reported.
            let past = first.max(len.checked_div(rows).unwrap_or(first));
            return Err(at(Problem::Value {
                field,
                what: format!(
                    "stream_datum indices [{first}, {last}) go past the end of its dataset ({rows} rows an index): rows [{}, {}) are asked for, but the dataset has {len} rows",
                    past.saturating_mul(rows),
                    past.saturating_add(1).saturating_mul(rows)
                ),
            }));
        }
        let frame_err = |source| {
            at(Problem::Frame {
                field: field.clone(),
                source: Box::new(source),
            })
        };
        for (i, index) in (first..last).enumerate() {
            let seq_num = i64::try_from(seq_first + i as u64).map_err(|_| {
                at(Problem::Value {
                    field: "seq_nums".into(),
                    what: "too large".into(),
                })
            })?;
            if !self
                .delivered_keys
                .insert((descriptor.to_string(), seq_num, field.clone()))
            {
                return Err(at(Problem::Value {
                    field,
                    what: format!("seq_num {seq_num} is delivered twice"),
                }));
            }
            let locator = Locator::Index { index, rows };
            if self.stacks[stack].dtype.is_none() {
                let info = handler.probe(&locator).map_err(frame_err)?;
                self.stacks[stack].dtype = Some(info.dtype);
            }
            let what = if is_value {
                let s = &self.stacks[stack];
                let expected = FrameInfo {
                    dtype: s.dtype.unwrap_or(Dtype::FLOAT64),
                    shape: s.shape.clone(),
                };
                let bytes = handler.read(&locator, &expected).map_err(frame_err)?;
                Delivered::Value {
                    stack,
                    bytes,
                    pos: pos.clone(),
                }
            } else {
                let frame = NewFrame {
                    event_uid: None,
                    stream_uid: descriptor,
                    seq_num,
                    field: &field,
                    pos,
                };
                let mut note = Map::new();
                note.insert("stream_datum".into(), uid.into());
                let source = Source::Datum(handler.clone(), locator);
                let (note, image_ref) = self.add_frame(stack, frame, note, source, cx)?;
                Delivered::Frame { image_ref, note }
            };
            self.delivered.push(Delivery {
                descriptor: descriptor.to_string(),
                seq_num,
                field: field.clone(),
                what,
            });
        }
        Ok(())
    }

    /// Joins what stream_datums delivered to the events of the same descriptor and seq_num
    /// (in the staging table): a frame's image_refs row gets its event, the event's JSON the
    /// frame's note or the value. Values of a seq_num without an event (a fly scan) go to
    /// Zarr, as frames do. Returns the seq_nums delivered without an event, per descriptor.
    fn join_streams(&mut self, cx: &Context<'_>) -> Result<HashMap<String, i64>, RunError> {
        let mut without_event: HashMap<String, i64> = HashMap::new();
        if self.delivered.is_empty() {
            return Ok(without_event);
        }
        writer::index_staged(cx.conn)?;
        let mut seen: HashSet<(String, i64)> = HashSet::new();
        let mut additions: BTreeMap<i64, (String, Vec<(String, Value)>)> = BTreeMap::new();
        for d in std::mem::take(&mut self.delivered) {
            let event = writer::staged_event(cx.conn, &d.descriptor, d.seq_num)?;
            if event.is_none() && seen.insert((d.descriptor.clone(), d.seq_num)) {
                *without_event.entry(d.descriptor.clone()).or_default() += 1;
            }
            match (d.what, event) {
                (Delivered::Frame { image_ref, note }, Some(e)) => {
                    if let Some(row) = self.rows.image_refs.get_mut(image_ref) {
                        row.event_uid = Some(e.uid.clone());
                    }
                    additions
                        .entry(e.rowid)
                        .or_insert_with(|| (e.data, Vec::new()))
                        .1
                        .push((d.field, Value::Object(note)));
                }
                (Delivered::Frame { .. }, None) => {}
                (Delivered::Value { stack, bytes, .. }, Some(e)) => {
                    let s = &self.stacks[stack];
                    let dtype = s.dtype.unwrap_or(Dtype::FLOAT64);
                    let value = inline::to_json(&bytes, &s.shape, dtype);
                    additions
                        .entry(e.rowid)
                        .or_insert_with(|| (e.data, Vec::new()))
                        .1
                        .push((d.field, value));
                }
                (Delivered::Value { stack, bytes, pos }, None) => {
                    let frame = NewFrame {
                        event_uid: None,
                        stream_uid: &d.descriptor,
                        seq_num: d.seq_num,
                        field: &d.field,
                        pos: &pos,
                    };
                    self.add_frame(stack, frame, Map::new(), Source::Bytes(bytes), cx)?;
                }
            }
        }
        for (rowid, (text, fields)) in additions {
            let Ok(Value::Object(mut data)) = serde_json::from_str(&text) else {
                return Err(Rejected::without_position(Problem::Value {
                    field: "data".into(),
                    what: "an event's data is not a JSON object".into(),
                })
                .into());
            };
            data.extend(fields);
            writer::restage_data(cx.conn, rowid, &Value::Object(data).to_string())?;
        }
        Ok(without_event)
    }

    fn datum_page(&mut self, f: &Fields<'_>) -> Result<(), Problem> {
        let resource = f.str("resource")?;
        let ids = f.array("datum_id")?;
        let kwargs = f.object("datum_kwargs")?;
        for (key, column) in kwargs {
            if column.as_array().map(Vec::len) != Some(ids.len()) {
                return Err(DocError::Field {
                    kind: "datum_page",
                    field: format!("datum_kwargs.{key}"),
                    expected: "a list as long as datum_id",
                }
                .into());
            }
        }
        for (i, id) in ids.iter().enumerate() {
            let id = id.as_str().ok_or(DocError::Field {
                kind: "datum_page",
                field: "datum_id".into(),
                expected: "a list of strings",
            })?;
            let row: Map<String, Value> = kwargs
                .iter()
                .map(|(k, column)| (k.clone(), column[i].clone()))
                .collect();
            self.datum(resource, id, row)?;
        }
        Ok(())
    }

    /// An event read on the fast path: its data is stored as its text, unless the descriptor
    /// sends a field elsewhere (a frame), which needs the data as a `Value`.
    fn fast_event(&mut self, e: &EventDoc, pos: &Pos, cx: &Context<'_>) -> Result<(), RunError> {
        let plain = self
            .descriptors
            .get(&e.descriptor)
            .is_some_and(|d| d.fields.iter().all(|(_, f)| matches!(f, Field::Json)));
        if !plain {
            let data: Map<String, Value> = serde_json::from_str(&e.data)
                .map_err(|err| Rejected::at(pos, DocError::Json(err.to_string())))?;
            self.kept
                .fast_event(&e.uid, &e.descriptor, e.filled.as_deref(), Some(&data));
            return self.add_event(
                &e.uid,
                &e.descriptor,
                e.seq_num,
                e.time,
                data,
                e.timestamps.clone(),
                pos,
                cx,
            );
        }
        self.kept
            .fast_event(&e.uid, &e.descriptor, e.filled.as_deref(), None);
        self.push_event(
            EventRow {
                uid: e.uid.clone(),
                stream_uid: e.descriptor.clone(),
                seq_num: e.seq_num,
                time: e.time,
                data: e.data.clone(),
                timestamps: e.timestamps.clone(),
                line: i64::try_from(pos.line).unwrap_or(i64::MAX),
            },
            cx,
        )
    }

    /// Counts the event and adds its row to the batch for the staging table.
    fn push_event(&mut self, row: EventRow, cx: &Context<'_>) -> Result<(), RunError> {
        match self.event_counts.get_mut(&row.stream_uid) {
            Some(n) => *n += 1,
            None => {
                self.event_counts.insert(row.stream_uid.clone(), 1);
            }
        }
        self.rows.events.push(row);
        self.rows.event_count += 1;
        if self.rows.events.len() >= STAGE_ROWS {
            self.stage(cx)?;
        }
        Ok(())
    }

    /// The batch of event rows into the staging table.
    fn stage(&mut self, cx: &Context<'_>) -> Result<(), RunError> {
        writer::stage_events(cx.conn, &self.rows.events)?;
        self.rows.events.clear();
        Ok(())
    }

    fn event(&mut self, f: &Fields<'_>, pos: &Pos, cx: &Context<'_>) -> Result<(), RunError> {
        let at = |p: Problem| RunError::Rejected(Rejected::at(pos, p));
        let uid = f.str("uid").map_err(|e| at(e.into()))?;
        let descriptor = f.str("descriptor").map_err(|e| at(e.into()))?;
        let seq_num = f.i64("seq_num").map_err(|e| at(e.into()))?;
        let time = f.f64("time").map_err(|e| at(e.into()))?;
        let data = f.object("data").map_err(|e| at(e.into()))?.clone();
        let timestamps = f.opt_object("timestamps").map_err(|e| at(e.into()))?;
        let timestamps = timestamps.map(|t| Value::Object(t.clone()).to_string());
        self.add_event(uid, descriptor, seq_num, time, data, timestamps, pos, cx)
    }

    fn event_page(&mut self, f: &Fields<'_>, pos: &Pos, cx: &Context<'_>) -> Result<(), RunError> {
        let at = |p: Problem| RunError::Rejected(Rejected::at(pos, p));
        let descriptor = f.str("descriptor").map_err(|e| at(e.into()))?;
        let uids = f.array("uid").map_err(|e| at(e.into()))?;
        let n = Some(uids.len());
        let seq = f.column("seq_num", n).map_err(|e| at(e.into()))?;
        let times = f.column("time", n).map_err(|e| at(e.into()))?;
        let data = f.object("data").map_err(|e| at(e.into()))?;
        let empty = Map::new();
        let stamps = f
            .opt_object("timestamps")
            .map_err(|e| at(e.into()))?
            .unwrap_or(&empty);
        let column = |map: &Map<String, Value>, what: &str| -> Result<(), Problem> {
            for (key, col) in map {
                if col.as_array().map(Vec::len) != n {
                    return Err(DocError::Field {
                        kind: "event_page",
                        field: format!("{what}.{key}"),
                        expected: "a list as long as uid",
                    }
                    .into());
                }
            }
            Ok(())
        };
        column(data, "data").map_err(at)?;
        column(stamps, "timestamps").map_err(at)?;
        let field = |field: &str, expected: &'static str| {
            at(DocError::Field {
                kind: "event_page",
                field: field.into(),
                expected,
            }
            .into())
        };
        for i in 0..uids.len() {
            let uid = uids[i]
                .as_str()
                .ok_or_else(|| field("uid", "a list of strings"))?;
            let seq_num = seq[i]
                .as_i64()
                .ok_or_else(|| field("seq_num", "a list of integers"))?;
            let time = times[i]
                .as_f64()
                .ok_or_else(|| field("time", "a list of numbers"))?;
            let row: Map<String, Value> = data
                .iter()
                .map(|(k, c)| (k.clone(), c[i].clone()))
                .collect();
            let ts = (!stamps.is_empty()).then(|| {
                Value::Object(
                    stamps
                        .iter()
                        .map(|(k, c)| (k.clone(), c[i].clone()))
                        .collect(),
                )
                .to_string()
            });
            self.add_event(uid, descriptor, seq_num, time, row, ts, pos, cx)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn add_event(
        &mut self,
        uid: &str,
        descriptor: &str,
        seq_num: i64,
        time: f64,
        mut data: Map<String, Value>,
        timestamps: Option<String>,
        pos: &Pos,
        cx: &Context<'_>,
    ) -> Result<(), RunError> {
        let at = |p: Problem| RunError::Rejected(Rejected::at(pos, p));
        let Some(desc) = self.descriptors.get(descriptor) else {
            return Err(at(Problem::UnknownRef {
                kind: "event",
                what: "descriptor",
                uid: descriptor.to_string(),
            }));
        };
        let frame_fields: Vec<(String, usize, bool)> = desc
            .fields
            .iter()
            .filter_map(|(name, field)| match field {
                Field::Frame { stack, external } => Some((name.clone(), *stack, *external)),
                Field::Json | Field::StreamValue { .. } => None,
            })
            .collect();
        for (name, stack, external) in frame_fields {
            let Some(value) = data.get(&name) else {
                continue;
            };
            let frame_err = |source| {
                at(Problem::Frame {
                    field: name.clone(),
                    source: Box::new(source),
                })
            };
            let mut note = Map::new();
            let source = match value {
                Value::String(datum_id) if external => {
                    let (handler, locator) =
                        self.datums.get(datum_id).cloned().ok_or_else(|| {
                            at(Problem::UnknownRef {
                                kind: "event",
                                what: "datum",
                                uid: datum_id.clone(),
                            })
                        })?;
                    note.insert("datum_id".into(), value.clone());
                    if self.stacks[stack].dtype.is_none() {
                        let info = handler.probe(&locator).map_err(frame_err)?;
                        self.stacks[stack].dtype = Some(info.dtype);
                    }
                    Source::Datum(handler, locator)
                }
                Value::Array(_) => {
                    let s = &mut self.stacks[stack];
                    // JSON numbers carry no type: float64 unless the descriptor says.
                    let dtype = *s.dtype.get_or_insert(Dtype::FLOAT64);
                    let bytes = inline::to_bytes(value, &s.shape, dtype).map_err(|what| {
                        at(Problem::Value {
                            field: name.clone(),
                            what,
                        })
                    })?;
                    self.kept
                        .inline_frame(uid, &name, value, &bytes, &s.shape, dtype);
                    Source::Bytes(bytes)
                }
                other => {
                    return Err(at(Problem::Value {
                        field: name.clone(),
                        what: format!(
                            "expected {}, found {other}",
                            if external {
                                "a datum id"
                            } else {
                                "a nested list"
                            }
                        ),
                    }));
                }
            };
            let frame = NewFrame {
                event_uid: Some(uid),
                stream_uid: descriptor,
                seq_num,
                field: &name,
                pos,
            };
            let (note, _) = self.add_frame(stack, frame, note, source, cx)?;
            data.insert(name.clone(), Value::Object(note));
        }
        self.push_event(
            EventRow {
                uid: uid.to_string(),
                stream_uid: descriptor.to_string(),
                seq_num,
                time,
                data: Value::Object(data).to_string(),
                timestamps,
                line: i64::try_from(pos.line).unwrap_or(i64::MAX),
            },
            cx,
        )
    }

    /// Appends a frame to `stack`: its image_refs row now, its pixels with the next batch.
    /// Returns `note` with where the frame went (for the event's JSON) and the row's number.
    fn add_frame(
        &mut self,
        stack: usize,
        frame: NewFrame<'_>,
        mut note: Map<String, Value>,
        source: Source,
        cx: &Context<'_>,
    ) -> Result<(Map<String, Value>, usize), RunError> {
        let created = self.create_stack(stack, cx)?;
        let s = &mut self.stacks[stack];
        let index = s.len;
        s.len += 1;
        let dtype = s.dtype.unwrap_or(Dtype::FLOAT64);
        note.insert("zarr_group".into(), s.zarr_path.clone().into());
        note.insert("index".into(), index.into());
        let nd = s.shape.len();
        self.rows.image_refs.push(ImageRefRow {
            event_uid: frame.event_uid.map(str::to_string),
            stream_uid: frame.stream_uid.to_string(),
            seq_num: frame.seq_num,
            field_name: frame.field.to_string(),
            zarr_group: s.zarr_path.clone(),
            index_in_stack: index as i64,
            shape_x: nd.checked_sub(1).map(|i| s.shape[i] as i64),
            shape_y: nd.checked_sub(2).map(|i| s.shape[i] as i64),
            frame_shape: json!(s.shape).to_string(),
            dtype: dtype.to_string(),
            codec: frames::codec_label(cx.compression),
        });
        // The descriptor's shape was checked to fit (plan_field); the batch limit is a hint.
        let size = dtype.frame_bytes(&s.shape).unwrap_or(usize::MAX);
        self.pending_bytes = self.pending_bytes.saturating_add(size);
        self.pending.push(FrameJob {
            stack: created,
            index,
            source,
            field: frame.field.to_string(),
            pos: frame.pos.clone(),
        });
        Ok((note, self.rows.image_refs.len() - 1))
    }

    /// The stack's array in the store, created on its first frame (when its dtype is known).
    fn create_stack(&mut self, stack: usize, cx: &Context<'_>) -> Result<usize, RunError> {
        if let Some(n) = self.stacks[stack].created {
            return Ok(n);
        }
        let target = match &self.mode {
            Mode::Write(target) => *target,
            Mode::Compare { .. } => Target::Staging,
        };
        if self.frames.is_none() {
            self.frames = Some(
                cx.store
                    .begin(&self.uid, &self.group, target, cx.compression)?,
            );
        }
        let s = &self.stacks[stack];
        let dtype = s.dtype.unwrap_or(Dtype::FLOAT64);
        let mut attributes = Map::new();
        attributes.insert("run_uid".into(), self.uid.as_str().into());
        attributes.insert("stream".into(), s.stream.as_str().into());
        attributes.insert("field".into(), s.field.clone().into());
        for key in ["source", "units", "precision", "external", "object_name"] {
            if let Some(v) = s.data_key.get(key) {
                attributes.insert(key.into(), v.clone());
            }
        }
        attributes.insert(
            "description".into(),
            format!(
                "beamdb: axis 0 is the frame index (image_refs.index_in_stack) of field {} in stream {} of run {}",
                s.field, s.stream, self.uid
            )
            .into(),
        );
        let leaf = s
            .zarr_path
            .rsplit('/')
            .next()
            .unwrap_or(&s.field)
            .to_string();
        let frames = self.frames.as_mut().ok_or_else(|| StoreError::Zarr {
            path: std::path::PathBuf::new(),
            message: "internal error: frame writer missing".into(),
        })?;
        let n = frames.add_stack(StackSpec {
            stream: &s.stream,
            field: &leaf,
            data_type: dtype.zarr_name(),
            item_size: dtype.size,
            frame_shape: &s.shape,
            attributes,
        })?;
        self.stacks[stack].created = Some(n);
        Ok(n)
    }

    /// Reads, checks, compresses and writes the pending frames, in parallel.
    pub fn flush(&mut self) -> Result<(), RunError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let Some(frames) = self.frames.as_mut() else {
            return Ok(());
        };
        for s in &self.stacks {
            if let Some(n) = s.created {
                frames.reserve(n, s.len)?;
            }
        }
        let infos: HashMap<usize, FrameInfo> = self
            .stacks
            .iter()
            .filter_map(|s| {
                s.created.map(|n| {
                    (
                        n,
                        FrameInfo {
                            dtype: s.dtype.unwrap_or(Dtype::FLOAT64),
                            shape: s.shape.clone(),
                        },
                    )
                })
            })
            .collect();
        let jobs = std::mem::take(&mut self.pending);
        let frames = &*frames;
        // After a remote failure the run is rejected whole: the frames not yet tried are
        // skipped (`Ok(None)`), not each given its own retry budget (minutes in an outage).
        let remote_failed = std::sync::atomic::AtomicBool::new(false);
        let results: Vec<Result<Option<u64>, RunError>> = jobs
            .into_par_iter()
            .map(|job| {
                if remote_failed.load(std::sync::atomic::Ordering::Relaxed) {
                    return Ok(None);
                }
                let bytes = match job.source {
                    Source::Bytes(b) => b,
                    Source::Datum(handler, locator) => {
                        let info = infos.get(&job.stack).ok_or_else(|| StoreError::Zarr {
                            path: std::path::PathBuf::new(),
                            message: "internal error: stack without type".into(),
                        })?;
                        handler.read(&locator, info).map_err(|source| {
                            Rejected::at(
                                &job.pos,
                                Problem::Frame {
                                    field: job.field.clone(),
                                    source: Box::new(source),
                                },
                            )
                        })?
                    }
                };
                let n = bytes.len() as u64;
                frames.store(job.stack, job.index, bytes).inspect_err(|e| {
                    if e.is_remote_failure() {
                        remote_failed.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                })?;
                Ok(Some(n))
            })
            .collect();
        self.pending_bytes = 0;
        for result in results {
            if let Some(n) = result? {
                self.bytes_written += n;
                self.frames_written += 1;
            }
        }
        Ok(())
    }

    pub fn stopped(&self) -> bool {
        self.stopped
    }

    pub fn digest_hex(&self) -> String {
        let bytes = self.digest.clone().finalize();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Ends the run: the last frames, then the metadata (the run group last, carrying the
    /// digest). On an error the caller calls [`RunBuilder::discard`].
    pub fn finish(&mut self, cx: &Context<'_>) -> Result<Finished, RunError> {
        let digest = self.digest_hex();
        if let Mode::Compare { committed } = &self.mode {
            if *committed == digest {
                return Ok(Finished::Unchanged);
            }
            return Err(Rejected::at(
                &self.start_pos,
                Problem::Differs {
                    uid: self.uid.to_string(),
                },
            )
            .into());
        }
        if !self.rows.events.is_empty() {
            self.stage(cx)?;
        }
        let without_event = self.join_streams(cx)?;
        self.rows.arrived = self.arrived(without_event);
        self.flush()?;
        if let Some(frames) = self.frames.as_mut() {
            let mut lens = Vec::new();
            let mut created: Vec<&Stack> =
                self.stacks.iter().filter(|s| s.created.is_some()).collect();
            created.sort_by_key(|s| s.created);
            for s in &created {
                if let Some(n) = s.created {
                    frames.set_attribute(n, "descriptor_uids", json!(s.descriptors));
                }
                lens.push(s.len);
            }
            let mut attributes = Map::new();
            attributes.insert(
                "beamdb".into(),
                json!({"run_uid": self.uid.as_str(), "content_digest": digest}),
            );
            for key in ["plan_name", "scan_id", "sample_name", "time"] {
                if let Some(v) = self.start.get(key) {
                    attributes.insert(key.into(), v.clone());
                }
            }
            frames.finish(&lens, attributes)?;
        }
        let mut rows = std::mem::take(&mut self.rows);
        rows.kept = self.kept.finish();
        rows.start = std::mem::take(&mut self.start);
        rows.uid = self.uid.to_string();
        rows.source = self.start_pos.source.clone();
        rows.content_digest = digest;
        Ok(Finished::Ready {
            rows: Box::new(rows),
            frames: self.frames_written,
            bytes: self.bytes_written,
        })
    }

    /// What arrived of each stream (by name): its events, and the seq_nums a stream_datum
    /// delivered without an event (a fly scan). The events' seq_nums are distinct once the
    /// events table took them (UNIQUE(stream_uid, seq_num)), which [`check_counts`] relies on.
    fn arrived(&self, without_event: HashMap<String, i64>) -> BTreeMap<String, i64> {
        let mut arrived: BTreeMap<String, i64> = BTreeMap::new();
        let counts = self.event_counts.iter().chain(without_event.iter());
        for (descriptor, n) in counts {
            if let Some(s) = self.rows.streams.iter().find(|s| s.uid == *descriptor) {
                *arrived.entry(s.name.clone()).or_default() += n;
            }
        }
        arrived
    }

    /// Removes whatever this run wrote to the store.
    pub fn discard(&mut self) -> Result<(), StoreError> {
        self.pending.clear();
        match self.frames.take() {
            Some(frames) => frames.discard(),
            None => Ok(()),
        }
    }
}

/// The stop's `num_events` per stream name against what arrived: a run whose documents were
/// lost on the way (dropped from the file, or rejected before its start) is not whole, and is
/// refused at its stop rather than stored for `verify` to find. Called once the run's events
/// are in the events table (inside the commit's transaction), so that a repeated event is
/// named as such rather than as a miscount.
pub fn check_counts(rows: &RunRows) -> Result<(), Rejected> {
    let (Some(stop), Some(pos)) = (&rows.stop, &rows.stop_pos) else {
        return Ok(());
    };
    let Some(said) = stop.get("num_events").and_then(Value::as_object) else {
        return Ok(());
    };
    let mut all: BTreeSet<&str> = said.keys().map(String::as_str).collect();
    all.extend(rows.arrived.keys().map(String::as_str));
    for name in all {
        let says = said.get(name).and_then(Value::as_i64).unwrap_or(0);
        let has = rows.arrived.get(name).copied().unwrap_or(0);
        if says != has {
            return Err(Rejected::at(
                pos,
                Problem::Counts {
                    stream: name.to_string(),
                    says: said
                        .get(name)
                        .map_or_else(|| "nothing".into(), Value::to_string),
                    has,
                },
            ));
        }
    }
    Ok(())
}
