//! The rows of one run, as plain data: built by `run`, committed by `writer`.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::documents::Pos;

#[derive(Debug, Default)]
pub struct RunRows {
    pub uid: String,
    /// The input the run's documents come from (its start's): the staging table keeps only
    /// each event's line.
    pub source: std::sync::Arc<str>,
    /// The start document (metadata, promoted columns, sample).
    pub start: Map<String, Value>,
    pub stop: Option<Map<String, Value>>,
    /// Where the stop document is: a run with fewer events than it counts is named by it.
    pub stop_pos: Option<Pos>,
    pub content_digest: String,
    pub streams: Vec<StreamRow>,
    /// The events not yet in the staging table (`writer::stage_events`): a batch, not the
    /// run; at the commit every event is in the staging table and this is empty.
    pub events: Vec<EventRow>,
    /// Events of the run, all told.
    pub event_count: u64,
    /// What arrived of each stream (by name), as the stop's `num_events` counts it.
    pub arrived: BTreeMap<String, i64>,
    pub image_refs: Vec<ImageRefRow>,
    /// What `export` needs beyond the rows above (`kept`).
    pub kept: super::kept::KeptRows,
}

#[derive(Debug)]
pub struct StreamRow {
    pub uid: String,
    pub name: String,
    pub data_keys: String,
    pub time_created: f64,
    pub configuration: Option<String>,
    /// The descriptor's `file:line`, for messages about this row.
    pub pos: Pos,
}

#[derive(Debug)]
pub struct EventRow {
    pub uid: String,
    pub stream_uid: String,
    pub seq_num: i64,
    pub time: f64,
    /// The event's data as JSON; a frame's value is `{"zarr_group", "index"[, "datum_id"]}`.
    pub data: String,
    pub timestamps: Option<String>,
    /// The event's line in its run's input (of its page, for an event_page), for messages
    /// about this row.
    pub line: i64,
}

#[derive(Debug)]
pub struct ImageRefRow {
    pub event_uid: Option<String>,
    pub stream_uid: String,
    pub seq_num: i64,
    pub field_name: String,
    pub zarr_group: String,
    pub index_in_stack: i64,
    pub shape_x: Option<i64>,
    pub shape_y: Option<i64>,
    pub frame_shape: String,
    pub dtype: String,
    pub codec: String,
}

/// A sample as the start document describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub name: String,
    pub formula: Option<String>,
    pub serial: Option<String>,
    /// JSON array.
    pub tags: Option<String>,
    pub beamline_pos: Option<String>,
    /// JSON object: the rest of a sample dict.
    pub extra: Option<String>,
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// The sample of a run: `sample_name`, else `sample` (a string, or a dict with `name`, whose
/// `formula`, `serial`, `tags` and `beamline_pos` get their own columns and the rest goes to
/// `extra`). `None` when the start names no sample.
pub fn sample(start: &Map<String, Value>) -> Option<Sample> {
    let dict = start.get("sample").and_then(Value::as_object);
    let name = start
        .get("sample_name")
        .and_then(Value::as_str)
        .or_else(|| start.get("sample").and_then(Value::as_str))
        .or_else(|| dict.and_then(|d| d.get("name")).and_then(Value::as_str))
        .filter(|n| !n.trim().is_empty())?;
    let mut sample = Sample {
        name: name.to_string(),
        formula: None,
        serial: None,
        tags: None,
        beamline_pos: None,
        extra: None,
    };
    if let Some(dict) = dict {
        let get = |k: &str| dict.get(k).and_then(text);
        sample.formula = get("formula");
        sample.serial = get("serial");
        sample.beamline_pos = get("beamline_pos");
        sample.tags = dict.get("tags").filter(|v| !v.is_null()).map(|v| match v {
            Value::Array(_) => v.to_string(),
            other => Value::Array(vec![other.clone()]).to_string(),
        });
        let rest: Map<String, Value> = dict
            .iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "name" | "formula" | "serial" | "tags" | "beamline_pos"
                )
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !rest.is_empty() {
            sample.extra = Some(Value::Object(rest).to_string());
        }
    }
    Some(sample)
}

/// The first of `keys` that the start document has as a non-empty string.
pub fn first_string(start: &Map<String, Value>, keys: &[&str]) -> Option<String> {
    keys.iter()
        .find_map(|k| start.get(*k).and_then(Value::as_str))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn samples_come_from_sample_name_or_sample() {
        assert_eq!(
            sample(&map(json!({"sample_name": "PS-film"})))
                .unwrap()
                .name,
            "PS-film"
        );
        assert_eq!(
            sample(&map(json!({"sample": "P3HT"}))).unwrap().name,
            "P3HT"
        );
        let s = sample(&map(
            json!({"sample": {"name": "P3HT", "formula": "C10H14S",
            "tags": ["polymer"], "serial": 17, "thickness_nm": 80}}),
        ))
        .unwrap();
        assert_eq!(s.formula.as_deref(), Some("C10H14S"));
        assert_eq!(s.serial.as_deref(), Some("17"));
        assert_eq!(s.tags.as_deref(), Some(r#"["polymer"]"#));
        assert_eq!(s.extra.as_deref(), Some(r#"{"thickness_nm":80}"#));
        assert_eq!(sample(&map(json!({"plan_name": "count"}))), None);
        assert_eq!(sample(&map(json!({"sample": {"formula": "x"}}))), None);
    }
}
