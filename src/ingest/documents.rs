//! Reading suitcase-jsonl: one `["name", {document}]` pair a line. Each document keeps where
//! it came from (`file:line`), because every message about bad input names it.

use std::fmt;
use std::io::BufRead;
use std::sync::Arc;

use serde_json::{Map, Value};

/// Where a document is: `file:line` (`-` for stdin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pos {
    pub source: Arc<str>,
    pub line: u64,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.source, self.line)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Start,
    Descriptor,
    Event,
    EventPage,
    Resource,
    Datum,
    DatumPage,
    Stop,
    StreamResource,
    StreamDatum,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Start => "start",
            Kind::Descriptor => "descriptor",
            Kind::Event => "event",
            Kind::EventPage => "event_page",
            Kind::Resource => "resource",
            Kind::Datum => "datum",
            Kind::DatumPage => "datum_page",
            Kind::Stop => "stop",
            Kind::StreamResource => "stream_resource",
            Kind::StreamDatum => "stream_datum",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Some(match name {
            "start" => Kind::Start,
            "descriptor" => Kind::Descriptor,
            "event" => Kind::Event,
            "event_page" => Kind::EventPage,
            "resource" => Kind::Resource,
            "datum" => Kind::Datum,
            "datum_page" => Kind::DatumPage,
            "stop" => Kind::Stop,
            "stream_resource" => Kind::StreamResource,
            "stream_datum" => Kind::StreamDatum,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Doc {
    pub kind: Kind,
    pub body: Map<String, Value>,
    pub pos: Pos,
}

/// What is wrong with a line or a document. Shown after its `file:line`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocError {
    #[error("not valid JSON ({0}); each line must be [\"name\", {{document}}]")]
    Json(String),
    #[error("expected a [\"name\", {{document}}] pair, found {0}")]
    NotAPair(String),
    #[error(
        "unknown document type {0:?}; expected start, descriptor, event, event_page, resource, datum, datum_page, stream_resource, stream_datum or stop"
    )]
    UnknownKind(String),
    #[error("{kind} document: `{field}` is missing or not {expected}")]
    Field {
        kind: &'static str,
        field: String,
        expected: &'static str,
    },
    #[error("cannot read the input: {0}")]
    Read(String),
}

/// A document's type and body.
pub type Parsed = (Kind, Map<String, Value>);

/// Parses one line. `Ok(None)` for a blank line.
pub fn parse_line(line: &str) -> Result<Option<Parsed>, DocError> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    let value: Value = serde_json::from_str(line).map_err(|e| DocError::Json(e.to_string()))?;
    let Value::Array(mut pair) = value else {
        return Err(DocError::NotAPair(describe(&value)));
    };
    if pair.len() != 2 {
        return Err(DocError::NotAPair(format!(
            "an array of {} elements",
            pair.len()
        )));
    }
    let body = pair.pop();
    let name = pair.pop();
    match (name, body) {
        (Some(Value::String(name)), Some(Value::Object(body))) => {
            let kind = Kind::parse(&name).ok_or(DocError::UnknownKind(name))?;
            Ok(Some((kind, body)))
        }
        (name, body) => Err(DocError::NotAPair(format!(
            "[{}, {}]",
            name.as_ref().map_or("nothing".into(), describe),
            body.as_ref().map_or("nothing".into(), describe)
        ))),
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Number(_) => "a number".into(),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// Documents from a reader, one at a time (a live stream is never read to its end first).
pub struct Reader<R> {
    input: R,
    source: Arc<str>,
    line: u64,
    buf: String,
    /// A read error ends the stream: retrying a failing device would loop for ever.
    failed: bool,
}

impl<R: BufRead> Reader<R> {
    pub fn new(input: R, source: &str) -> Reader<R> {
        Reader {
            input,
            source: source.into(),
            line: 0,
            buf: String::new(),
            failed: false,
        }
    }

    pub fn pos(&self) -> Pos {
        Pos {
            source: self.source.clone(),
            line: self.line,
        }
    }

    /// The next document, `None` at the end, or an error for this line.
    pub fn next_doc(&mut self) -> Option<Result<Doc, (Pos, DocError)>> {
        loop {
            if self.failed {
                return None;
            }
            self.buf.clear();
            self.line += 1;
            match self.input.read_line(&mut self.buf) {
                Ok(0) => return None,
                Ok(_) => {}
                // Not UTF-8: the line was consumed, the next one can be read.
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    return Some(Err((self.pos(), DocError::Read(e.to_string()))));
                }
                Err(e) => {
                    self.failed = true;
                    return Some(Err((self.pos(), DocError::Read(e.to_string()))));
                }
            }
            match parse_line(&self.buf) {
                Ok(None) => continue,
                Ok(Some((kind, body))) => {
                    return Some(Ok(Doc {
                        kind,
                        body,
                        pos: self.pos(),
                    }));
                }
                Err(e) => return Some(Err((self.pos(), e))),
            }
        }
    }
}

/// Typed access to a document's fields, with errors that say which field.
pub struct Fields<'a> {
    pub kind: &'static str,
    pub body: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    pub fn of(doc: &'a Doc) -> Fields<'a> {
        Fields {
            kind: doc.kind.name(),
            body: &doc.body,
        }
    }

    fn err(&self, field: &str, expected: &'static str) -> DocError {
        DocError::Field {
            kind: self.kind,
            field: field.to_string(),
            expected,
        }
    }

    pub fn str(&self, field: &str) -> Result<&'a str, DocError> {
        self.body
            .get(field)
            .and_then(Value::as_str)
            .ok_or_else(|| self.err(field, "a string"))
    }

    pub fn opt_str(&self, field: &str) -> Result<Option<&'a str>, DocError> {
        match self.body.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.err(field, "a string")),
        }
    }

    pub fn f64(&self, field: &str) -> Result<f64, DocError> {
        self.body
            .get(field)
            .and_then(Value::as_f64)
            .ok_or_else(|| self.err(field, "a number"))
    }

    pub fn i64(&self, field: &str) -> Result<i64, DocError> {
        self.body
            .get(field)
            .and_then(Value::as_i64)
            .ok_or_else(|| self.err(field, "an integer"))
    }

    pub fn object(&self, field: &str) -> Result<&'a Map<String, Value>, DocError> {
        self.body
            .get(field)
            .and_then(Value::as_object)
            .ok_or_else(|| self.err(field, "an object"))
    }

    pub fn opt_object(&self, field: &str) -> Result<Option<&'a Map<String, Value>>, DocError> {
        match self.body.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(_) => Err(self.err(field, "an object")),
        }
    }

    pub fn array(&self, field: &str) -> Result<&'a Vec<Value>, DocError> {
        self.body
            .get(field)
            .and_then(Value::as_array)
            .ok_or_else(|| self.err(field, "an array"))
    }

    /// A field of a page: an array of exactly `len` elements (`len` None: any length).
    pub fn column(&self, field: &str, len: Option<usize>) -> Result<&'a Vec<Value>, DocError> {
        let column = self.array(field)?;
        match len {
            Some(len) if column.len() != len => Err(self.err(field, "as long as the page's uids")),
            _ => Ok(column),
        }
    }
}

/// Feeds a document into a digest in a canonical form (object keys sorted, no whitespace), so
/// that the same documents give the same digest however they were serialised.
pub fn digest_doc(hasher: &mut impl sha2::Digest, kind: Kind, body: &Map<String, Value>) {
    // One buffer per document, hashed once: formatting each key and number into its own
    // String cost more than the hashing.
    let mut canonical = Vec::with_capacity(1024);
    canonical.extend_from_slice(kind.name().as_bytes());
    canonical.push(0);
    canonical_object(&mut canonical, body);
    canonical.push(b'\n');
    hasher.update(&canonical);
}

/// `{"key":value,...,}` with keys sorted: the same document gives the same bytes whatever
/// order its writer put the keys in.
fn canonical_object(out: &mut Vec<u8>, map: &Map<String, Value>) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.push(b'{');
    for (key, value) in entries {
        json_into(out, key);
        out.push(b':');
        canonical_value(out, value);
        out.push(b',');
    }
    out.push(b'}');
}

fn canonical_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Object(map) => canonical_object(out, map),
        Value::Array(items) => {
            out.push(b'[');
            for item in items {
                canonical_value(out, item);
                out.push(b',');
            }
            out.push(b']');
        }
        scalar => json_into(out, scalar),
    }
}

/// A string or scalar as JSON text. Serializing these into a Vec cannot fail.
fn json_into<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let _ = serde_json::to_writer(&mut *out, value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    /// A device that fails every read (a dying disk, a dropped NFS mount).
    struct Failing;

    impl std::io::Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("input/output error"))
        }
    }

    #[test]
    fn a_read_error_ends_the_stream_and_bad_utf8_skips_one_line() {
        let mut reader = Reader::new(std::io::BufReader::new(Failing), "dev");
        assert!(matches!(
            reader.next_doc(),
            Some(Err((_, DocError::Read(_))))
        ));
        assert!(reader.next_doc().is_none());

        let input: &[u8] = b"\xff\xfe not utf-8\n[\"stop\", {\"uid\": \"s\"}]\n";
        let mut reader = Reader::new(input, "a.jsonl");
        assert!(matches!(
            reader.next_doc(),
            Some(Err((_, DocError::Read(_))))
        ));
        let doc = reader
            .next_doc()
            .and_then(Result::ok)
            .map(|d| (d.kind, d.pos.line));
        assert_eq!(doc, Some((Kind::Stop, 2)));
        assert!(reader.next_doc().is_none());
    }

    #[test]
    fn lines_parse_into_documents_or_say_what_is_wrong() {
        let (kind, body) = parse_line(r#"["start", {"uid": "a"}]"#).unwrap().unwrap();
        assert_eq!((kind, body["uid"].as_str()), (Kind::Start, Some("a")));
        assert_eq!(parse_line("  \n").unwrap(), None);
        assert!(matches!(
            parse_line(r#"["start", {"uid""#),
            Err(DocError::Json(_))
        ));
        assert!(matches!(
            parse_line(r#"{"uid": 1}"#),
            Err(DocError::NotAPair(_))
        ));
        assert!(matches!(
            parse_line(r#"["start"]"#),
            Err(DocError::NotAPair(_))
        ));
        assert!(matches!(
            parse_line(r#"[1, {}]"#),
            Err(DocError::NotAPair(_))
        ));
        assert_eq!(
            parse_line(r#"["bulk_events", {}]"#),
            Err(DocError::UnknownKind("bulk_events".into()))
        );
    }

    #[test]
    fn reader_counts_lines_including_blank_ones() {
        let text = "[\"start\", {\"uid\": \"a\"}]\n\n[\"stop\", {\"uid\": \"b\"}]\nnot json\n";
        let mut r = Reader::new(text.as_bytes(), "run.jsonl");
        assert_eq!(r.next_doc().unwrap().unwrap().pos.line, 1);
        let stop = r.next_doc().unwrap().unwrap();
        assert_eq!(
            (stop.kind, stop.pos.to_string().as_str()),
            (Kind::Stop, "run.jsonl:3")
        );
        let (pos, _) = r.next_doc().unwrap().unwrap_err();
        assert_eq!(pos.line, 4);
        assert!(r.next_doc().is_none());
    }

    #[test]
    fn fields_name_what_is_missing() {
        let (_, body) = parse_line(r#"["event", {"seq_num": "x", "time": 1.5}]"#)
            .unwrap()
            .unwrap();
        let f = Fields {
            kind: "event",
            body: &body,
        };
        assert_eq!(f.f64("time"), Ok(1.5));
        let err = f.i64("seq_num").unwrap_err().to_string();
        assert_eq!(
            err,
            "event document: `seq_num` is missing or not an integer"
        );
        assert!(f.str("uid").is_err());
    }

    #[test]
    fn digest_ignores_key_order_and_whitespace() {
        let digest = |line: &str| {
            let (kind, body) = parse_line(line).unwrap().unwrap();
            let mut h = Sha256::new();
            digest_doc(&mut h, kind, &body);
            h.finalize()
        };
        let a = digest(r#"["start", {"uid": "a", "time": 1.0, "x": {"b": 1, "a": [1, 2]}}]"#);
        let b = digest(r#"["start",{"x":{"a":[1,2],"b":1},"time":1.0,"uid":"a"}]"#);
        let c = digest(r#"["start", {"uid": "a", "time": 1.0, "x": {"b": 2, "a": [1, 2]}}]"#);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
