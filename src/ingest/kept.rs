//! What `beamdb export` needs to give every document of a run back, beyond the rows ingest
//! writes anyway: fed each document of the run as it comes, it collects the rows of
//! `kept_documents` and `kept_events` (see config/models/beamtime.toml).
//!
//! - start and stop are `runs.metadata` and `runs.stop_metadata`, kept whole already;
//! - descriptors, resources, datums, stream_resources and stream_datums are kept whole, one
//!   row each, in the order they came (pages unpacked: one row per datum);
//! - an event is its `events` row (uid, descriptor, seq_num, time, data, timestamps; a frame's
//!   value is a note pointing at Zarr, with its datum_id when it came from a file) plus its
//!   *rest*: what that row cannot give back. The rest is computed here against the same rules
//!   `crate::export` rebuilds events by, so that export = row + rest, exactly. Most events of
//!   one descriptor share their rest (`filled: {"ccd": false}`); it is kept once on the
//!   descriptor's row and only an event whose rest differs gets a `kept_events` row, so a run of
//!   a million events adds rows for none of them in the common case.
//!
//! Nothing here rejects a document: `run` checks them and refuses the run; this collector
//! takes what it is given and never fails.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::documents::{Doc, Kind};
use super::dtype::Dtype;
use super::inline;

/// Keys of an event document that its `events` row holds.
const ROW_KEYS: [&str; 6] = ["uid", "descriptor", "seq_num", "time", "data", "timestamps"];

/// The rows for `kept_documents` and `kept_events`.
#[derive(Debug, Default)]
pub struct KeptRows {
    pub documents: Vec<KeptDocument>,
    pub events: Vec<KeptEvent>,
}

#[derive(Debug)]
pub struct KeptDocument {
    pub position: i64,
    /// Events of the run (pages unpacked) that came before it.
    pub events_before: i64,
    pub kind: &'static str,
    /// The document as JSON.
    pub document: String,
    /// A descriptor's only: the rest most of its events share.
    pub event_rest: Option<String>,
}

#[derive(Debug)]
pub struct KeptEvent {
    pub event_uid: String,
    pub rest: String,
}

/// What an event's document holds beyond its row.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Rest {
    /// Top-level keys, set over the rebuilt event (`filled`, keys with no column, a `time`
    /// written as an integer, `timestamps` that the row keeps as NULL).
    pub set: Map<String, Value>,
    /// Data values the row cannot give back (a value a stream_datum's delivery overwrote, an
    /// inline frame whose numbers Zarr's type does not render the same).
    pub data: Map<String, Value>,
    /// Inline frames stored as float64 whose numbers were written as integers.
    pub ints: Vec<String>,
    /// The event's `time` was written as an integer its REAL column holds exactly: a flag,
    /// not the value, so that a run of such events shares its descriptor's rest instead of
    /// keeping a row (in memory until the commit) for every event.
    pub int_time: bool,
}

impl Rest {
    pub fn to_json(&self) -> String {
        let mut out = Map::new();
        if !self.set.is_empty() {
            out.insert("set".into(), Value::Object(self.set.clone()));
        }
        if !self.data.is_empty() {
            out.insert("data".into(), Value::Object(self.data.clone()));
        }
        if !self.ints.is_empty() {
            out.insert("ints".into(), self.ints.clone().into());
        }
        if self.int_time {
            out.insert("int_time".into(), true.into());
        }
        Value::Object(out).to_string()
    }

    /// Parses a kept rest; `None` for text that is not one (a hand-edited row).
    pub fn parse(text: &str) -> Option<Rest> {
        let Value::Object(mut map) = serde_json::from_str(text).ok()? else {
            return None;
        };
        let mut object = |key: &str| match map.remove(key) {
            None => Some(Map::new()),
            Some(Value::Object(m)) => Some(m),
            Some(_) => None,
        };
        let set = object("set")?;
        let data = object("data")?;
        let ints = match map.remove("ints") {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<_>>()?,
            Some(_) => return None,
        };
        let int_time = match map.remove("int_time") {
            None => false,
            Some(Value::Bool(b)) => b,
            Some(_) => return None,
        };
        Some(Rest {
            set,
            data,
            ints,
            int_time,
        })
    }
}

/// An integer `time` that its REAL column gives back exactly (as a float that renders as the
/// same integer): [`Rest::int_time`] says so; any other integer is kept whole in `set`.
fn integral_time(value: &Value) -> bool {
    let Some(int) = value.as_i64() else {
        return false;
    };
    value
        .as_f64()
        .is_some_and(|f| f.fract() == 0.0 && f as i64 == int && f.abs() < 9.0e15)
}

/// Whether a data key is delivered by a stream_resource (ophyd-async marks it
/// `external: "STREAM:"`): its value in the `events` row comes from a stream_datum, so export
/// leaves it out of the rebuilt event unless the event itself carried it (kept in its rest).
pub fn is_stream_key(data_key: &Value) -> bool {
    data_key
        .get("external")
        .and_then(Value::as_str)
        .is_some_and(|e| e.starts_with("STREAM"))
}

/// An inline frame's numbers as export renders them: Zarr's type, with `ints` turning the
/// integral floats of a float64 frame back into the integers the document wrote.
pub fn render_ints(value: &mut Value) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(render_ints),
        Value::Number(n) if !n.is_i64() && !n.is_u64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f.abs() < 9.0e15
            {
                *value = Value::from(f as i64);
            }
        }
        _ => {}
    }
}

/// The events of an event_page, unpacked as event_model's `unpack_event_page` does (every
/// event gets `data`, `timestamps` and `filled`, `{}` when the page has none), with any other
/// key of the page copied to each event.
pub fn unpack_event_page(page: &Map<String, Value>) -> Vec<Map<String, Value>> {
    let uids = page.get("uid").and_then(Value::as_array);
    let n = uids.map_or(0, Vec::len);
    let column = |key: &str, i: usize| page.get(key).and_then(Value::as_array)?.get(i).cloned();
    let transpose = |key: &str, i: usize| -> Value {
        let columns = page.get(key).and_then(Value::as_object);
        Value::Object(
            columns
                .into_iter()
                .flatten()
                .map(|(k, c)| (k.clone(), c.get(i).cloned().unwrap_or(Value::Null)))
                .collect(),
        )
    };
    (0..n)
        .map(|i| {
            let mut event = Map::new();
            for (key, value) in page {
                let unpacked = match key.as_str() {
                    "uid" | "seq_num" | "time" => column(key, i).unwrap_or(Value::Null),
                    "data" | "timestamps" | "filled" => transpose(key, i),
                    _ => value.clone(),
                };
                event.insert(key.clone(), unpacked);
            }
            for key in ["data", "timestamps", "filled"] {
                event
                    .entry(key)
                    .or_insert_with(|| Value::Object(Map::new()));
            }
            event
        })
        .collect()
}

/// The datums of a datum_page, unpacked as event_model's `unpack_datum_page` does, with any
/// other key of the page copied to each datum.
pub fn unpack_datum_page(page: &Map<String, Value>) -> Vec<Map<String, Value>> {
    let ids = page.get("datum_id").and_then(Value::as_array);
    let kwargs = page.get("datum_kwargs").and_then(Value::as_object);
    (0..ids.map_or(0, Vec::len))
        .map(|i| {
            let mut datum = Map::new();
            for (key, value) in page {
                let unpacked = match key.as_str() {
                    "datum_id" => ids.and_then(|d| d.get(i)).cloned().unwrap_or(Value::Null),
                    "datum_kwargs" => Value::Object(
                        kwargs
                            .into_iter()
                            .flatten()
                            .map(|(k, c)| (k.clone(), c.get(i).cloned().unwrap_or(Value::Null)))
                            .collect(),
                    ),
                    _ => value.clone(),
                };
                datum.insert(key.clone(), unpacked);
            }
            datum
        })
        .collect()
}

struct DescriptorState {
    /// Its row in `rows.documents`.
    row: usize,
    /// Its data keys that a stream_resource delivers.
    stream_keys: HashSet<String>,
    /// The rest of its first event: the one its events share unless they say otherwise.
    default: Option<String>,
}

/// Collects a run's kept rows, one document at a time.
#[derive(Default)]
pub struct Collector {
    position: i64,
    events: i64,
    descriptors: HashMap<String, DescriptorState>,
    /// The events of the last document (one, or an event_page's), whose rest an inline frame
    /// may still add to: decided at the next document.
    pending: Vec<(String, String, Rest)>,
    /// Event uid → its place in `pending` (a page of many events with inline frames).
    pending_at: HashMap<String, usize>,
    rows: KeptRows,
}

impl Collector {
    /// Takes the run's next document (not the start or the stop: their rows keep them).
    pub fn feed(&mut self, doc: &Doc) {
        self.settle();
        match doc.kind {
            Kind::Start | Kind::Stop => {}
            Kind::Descriptor => {
                let uid = doc.body.get("uid").and_then(Value::as_str).unwrap_or("");
                let stream_keys = doc
                    .body
                    .get("data_keys")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                    .filter(|(_, key)| is_stream_key(key))
                    .map(|(name, _)| name.clone())
                    .collect();
                let row = self.rows.documents.len();
                self.keep(doc.kind, &doc.body);
                self.descriptors.insert(
                    uid.to_string(),
                    DescriptorState {
                        row,
                        stream_keys,
                        default: None,
                    },
                );
            }
            Kind::Resource | Kind::Datum | Kind::StreamResource | Kind::StreamDatum => {
                self.keep(doc.kind, &doc.body);
            }
            Kind::DatumPage => {
                for datum in unpack_datum_page(&doc.body) {
                    self.keep(Kind::Datum, &datum);
                }
            }
            Kind::Event => self.event(&doc.body, false),
            Kind::EventPage => {
                for event in unpack_event_page(&doc.body) {
                    self.event(&event, true);
                }
            }
        }
    }

    fn keep(&mut self, kind: Kind, body: &Map<String, Value>) {
        self.rows.documents.push(KeptDocument {
            position: self.position,
            events_before: self.events,
            kind: kind.name(),
            document: Value::Object(body.clone()).to_string(),
            event_rest: None,
        });
        self.position += 1;
    }

    /// An event (unpacked from a page when `from_page`) against the row `run` makes of it.
    fn event(&mut self, event: &Map<String, Value>, from_page: bool) {
        let uid = event.get("uid").and_then(Value::as_str).unwrap_or("");
        let descriptor = event
            .get("descriptor")
            .and_then(Value::as_str)
            .unwrap_or("");
        self.events += 1;
        let mut rest = Rest::default();
        for (key, value) in event {
            if key == "time" && integral_time(value) {
                rest.int_time = true;
                continue;
            }
            let kept_as_is = match key.as_str() {
                // An integer time comes back from its REAL column as a float.
                "time" => value.as_f64().map(Value::from).as_ref() == Some(value),
                // The row keeps an event's timestamps object as it is, but an event's null
                // and a page's empty timestamps as NULL, which gives back no key.
                "timestamps" => value
                    .as_object()
                    .is_some_and(|m| !(from_page && m.is_empty())),
                _ => ROW_KEYS.contains(&key.as_str()),
            };
            if !kept_as_is {
                rest.set.insert(key.clone(), value.clone());
            }
        }
        self.pending_event(
            uid,
            descriptor,
            rest,
            event.get("data").and_then(Value::as_object),
        );
    }

    /// An event ingest read on its fast path (`documents::parse_event`): only events whose
    /// every other key its row gives back exactly take that path, so its rest is its `filled`
    /// (JSON text) and the values of stream keys in `data` (given when the event was parsed
    /// further).
    pub fn fast_event(
        &mut self,
        uid: &str,
        descriptor: &str,
        filled: Option<&str>,
        data: Option<&Map<String, Value>>,
    ) {
        self.settle();
        self.events += 1;
        let mut rest = Rest::default();
        if let Some(filled) = filled.and_then(|f| serde_json::from_str::<Value>(f).ok()) {
            rest.set.insert("filled".into(), filled);
        }
        self.pending_event(uid, descriptor, rest, data);
    }

    fn pending_event(
        &mut self,
        uid: &str,
        descriptor: &str,
        mut rest: Rest,
        data: Option<&Map<String, Value>>,
    ) {
        if let (Some(state), Some(data)) = (self.descriptors.get(descriptor), data) {
            for (field, value) in data {
                if state.stream_keys.contains(field) {
                    rest.data.insert(field.clone(), value.clone());
                }
            }
        }
        self.pending_at.insert(uid.to_string(), self.pending.len());
        self.pending
            .push((uid.to_string(), descriptor.to_string(), rest));
    }

    /// An inline frame of event `uid` went to Zarr as `bytes` of `dtype` and `shape`: when
    /// reading it back would not give `original`, the rest says how to (or keeps it).
    pub fn inline_frame(
        &mut self,
        uid: &str,
        field: &str,
        original: &Value,
        bytes: &[u8],
        shape: &[u64],
        dtype: Dtype,
    ) {
        let Some((_, _, rest)) = self
            .pending_at
            .get(uid)
            .and_then(|&i| self.pending.get_mut(i))
        else {
            return;
        };
        let mut stored = inline::to_json(bytes, shape, dtype);
        if &stored == original {
            return;
        }
        render_ints(&mut stored);
        if &stored == original {
            rest.ints.push(field.to_string());
        } else {
            rest.data.insert(field.to_string(), original.clone());
        }
    }

    /// Decides the pending events: a `kept_events` row for each whose rest is not its
    /// descriptor's.
    fn settle(&mut self) {
        self.pending_at.clear();
        for (uid, descriptor, rest) in std::mem::take(&mut self.pending) {
            let text = rest.to_json();
            let default = match self.descriptors.get_mut(&descriptor) {
                Some(state) => state.default.get_or_insert_with(|| text.clone()),
                None => continue,
            };
            if *default != text {
                self.rows.events.push(KeptEvent {
                    event_uid: uid,
                    rest: text,
                });
            }
        }
    }

    /// The rows, once the run's last document is in.
    pub fn finish(&mut self) -> KeptRows {
        self.settle();
        let mut rows = std::mem::take(&mut self.rows);
        for state in self.descriptors.values() {
            if let Some(doc) = rows.documents.get_mut(state.row) {
                doc.event_rest.clone_from(&state.default);
            }
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn pages_unpack_as_event_model_does() {
        let page = map(
            json!({"descriptor": "d", "uid": ["a", "b"], "seq_num": [1, 2],
            "time": [1.0, 2.0], "data": {"x": [1, 2]}, "timestamps": {"x": [3.0, 4.0]}}),
        );
        let events = unpack_event_page(&page);
        assert_eq!(
            Value::Object(events[1].clone()),
            json!({"descriptor": "d", "uid": "b", "seq_num": 2, "time": 2.0,
                "data": {"x": 2}, "timestamps": {"x": 4.0}, "filled": {}})
        );
        let datums = unpack_datum_page(&map(
            json!({"resource": "r", "datum_id": ["r/0", "r/1"], "datum_kwargs": {"index": [0, 1]}}),
        ));
        assert_eq!(
            Value::Object(datums[1].clone()),
            json!({"resource": "r", "datum_id": "r/1", "datum_kwargs": {"index": 1}})
        );
    }

    #[test]
    fn integral_floats_render_as_integers_and_rests_round_trip() {
        let mut v = json!([[1.0, 2.5], [-3.0, 0.0]]);
        render_ints(&mut v);
        assert_eq!(v, json!([[1, 2.5], [-3, 0]]));
        let rest = Rest {
            set: map(json!({"filled": {"ccd": false}})),
            data: map(json!({"x": 1})),
            ints: vec!["img".into()],
            int_time: true,
        };
        assert_eq!(Rest::parse(&rest.to_json()), Some(rest));
        assert_eq!(Rest::parse("{}"), Some(Rest::default()));
        assert_eq!(Rest::parse("[]"), None);
    }
}
