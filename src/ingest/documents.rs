//! Reading suitcase-jsonl: one `["name", {document}]` pair a line. Each document keeps where
//! it came from (`file:line`), because every message about bad input names it.

use std::borrow::Cow;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
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
    /// Empty for an event read on the fast path (`event` is `Some`).
    pub body: Map<String, Value>,
    pub pos: Pos,
    /// An event read without a `Value` tree (a [`Reader`] with [`Reader::fast_events`]).
    pub event: Option<Box<EventDoc>>,
    /// The document's canonical form (see [`digest_doc`]), when the reader made it.
    pub canonical: Vec<u8>,
}

impl Doc {
    /// Feeds the document into a run's digest: the same bytes `digest_doc` hashes.
    pub fn digest_into(&self, hasher: &mut impl sha2::Digest) {
        if self.canonical.is_empty() {
            digest_doc(hasher, self.kind, &self.body);
        } else {
            hasher.update(&self.canonical);
        }
    }
}

/// A plain event, parsed straight from its text: what the event table stores of it. An event
/// that does not fit (a field of another type, a `run_start`, repeated keys) is read as a
/// `Value` instead, so that its message is the same as ever.
#[derive(Debug, Clone, PartialEq)]
pub struct EventDoc {
    pub uid: String,
    pub descriptor: String,
    pub seq_num: i64,
    pub time: f64,
    /// A JSON object's text, as written but without whitespace between tokens.
    pub data: String,
    pub timestamps: Option<String>,
    /// The event's `filled` as its JSON text (RunEngine writes `{}` or `{"ccd": false}`):
    /// not a column of its row, so `kept` keeps it for `export`.
    pub filled: Option<String>,
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
    /// Events are read on the fast path, and every document's canonical form is made.
    fast: bool,
}

impl<R: BufRead> Reader<R> {
    pub fn new(input: R, source: &str) -> Reader<R> {
        Reader {
            input,
            source: source.into(),
            line: 0,
            buf: String::new(),
            failed: false,
            fast: false,
        }
    }

    /// Reads events without a `Value` tree (their rows' text straight from the line) and
    /// makes each document's canonical form for the run's digest: what ingest needs.
    pub fn fast_events(mut self) -> Reader<R> {
        self.fast = true;
        self
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
            if self.fast
                && let Some((event, canonical)) = parse_event(&self.buf)
            {
                return Some(Ok(Doc {
                    kind: Kind::Event,
                    body: Map::new(),
                    pos: self.pos(),
                    event: Some(Box::new(event)),
                    canonical,
                }));
            }
            match parse_line(&self.buf) {
                Ok(None) => continue,
                Ok(Some((kind, body))) => {
                    let canonical = if self.fast {
                        canonical(kind, &body)
                    } else {
                        Vec::new()
                    };
                    return Some(Ok(Doc {
                        kind,
                        body,
                        pos: self.pos(),
                        event: None,
                        canonical,
                    }));
                }
                Err(e) => return Some(Err((self.pos(), e))),
            }
        }
    }
}

/// What a reader gives for each document: the document, or where it is and what is wrong.
pub type Next = Result<Doc, (Pos, DocError)>;

/// Documents per hand-over from the reading thread.
const PIPE_DOCS: usize = 256;
/// Hand-overs in flight: the reading thread runs at most this far ahead.
const PIPE_DEPTH: usize = 8;

enum Batch {
    Docs(Vec<Next>),
    /// The input ended here.
    End(Pos),
}

/// Ingest's reader: lines are read and parsed (the events on the fast path, the canonical
/// forms made) on a thread of their own, while the caller's thread checks and stores the
/// documents before them. Documents are handed over in batches, and a batch goes as soon as
/// the input has no whole line buffered: a live producer's document is never held back
/// waiting for the next one.
pub struct Pipe {
    batches: Receiver<Batch>,
    ready: std::vec::IntoIter<Next>,
    end: Pos,
    thread: Option<JoinHandle<()>>,
    stopped: bool,
}

impl Pipe {
    pub fn spawn<R: Read + Send + 'static>(input: R, source: &str) -> Pipe {
        let (tx, batches) = sync_channel(PIPE_DEPTH);
        let reader = Reader::new(BufReader::with_capacity(1 << 20, input), source).fast_events();
        let end = reader.pos();
        let thread = std::thread::Builder::new()
            .name("ingest-read".into())
            .spawn(move || Pipe::read(reader, &tx))
            .ok();
        Pipe {
            batches,
            ready: Vec::new().into_iter(),
            end,
            thread,
            stopped: false,
        }
    }

    fn read<R: Read>(mut reader: Reader<BufReader<R>>, tx: &SyncSender<Batch>) {
        let mut batch = Vec::with_capacity(PIPE_DOCS);
        while let Some(next) = reader.next_doc() {
            batch.push(next);
            if batch.len() >= PIPE_DOCS || !reader.input.buffer().contains(&b'\n') {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(PIPE_DOCS));
                // The caller stopped (an error ended its ingest): so does reading.
                if tx.send(Batch::Docs(full)).is_err() {
                    return;
                }
            }
        }
        if !batch.is_empty() && tx.send(Batch::Docs(batch)).is_err() {
            return;
        }
        let _ = tx.send(Batch::End(reader.pos()));
    }

    /// The next document, `None` at the end.
    pub fn next_doc(&mut self) -> Option<Next> {
        loop {
            if let Some(next) = self.ready.next() {
                return Some(next);
            }
            match self.batches.recv() {
                Ok(Batch::Docs(docs)) => self.ready = docs.into_iter(),
                Ok(Batch::End(pos)) => {
                    self.end = pos;
                    return None;
                }
                // The reading thread is gone without saying where the input ended: it could
                // not start, or it panicked. Said once; the rest of the input is not read.
                Err(_) => {
                    if self.stopped {
                        return None;
                    }
                    self.stopped = true;
                    if let Some(thread) = self.thread.take() {
                        let _ = thread.join();
                    }
                    return Some(Err((
                        self.end.clone(),
                        DocError::Read(
                            "the reading thread stopped before the end of the input; the rest is not read".into(),
                        ),
                    )));
                }
            }
        }
    }

    /// Where the input ended (after [`Pipe::next_doc`] returned `None`).
    pub fn pos(&self) -> Pos {
        self.end.clone()
    }
}

/// An `["event", {...}]` line as an [`EventDoc`] and its canonical form; `None` for any other
/// line, and for an event that does not fit the fast path (the `Value` path then reads it and
/// says what is wrong).
pub fn parse_event(line: &str) -> Option<(EventDoc, Vec<u8>)> {
    #[derive(Deserialize)]
    // Any key event-model does not define sends the event to the `Value` path, where `kept`
    // sees the whole document: `export` gives it back.
    #[serde(deny_unknown_fields)]
    struct Event<'a> {
        #[serde(borrow)]
        uid: Cow<'a, str>,
        #[serde(borrow)]
        descriptor: Cow<'a, str>,
        seq_num: i64,
        #[serde(borrow)]
        time: &'a RawValue,
        #[serde(borrow)]
        data: &'a RawValue,
        #[serde(borrow, default)]
        timestamps: Option<&'a RawValue>,
        /// Checked against the open run on the `Value` path.
        #[serde(borrow, default)]
        run_start: Option<&'a RawValue>,
        /// `Some("null")` for `"filled": null`: present, unlike a missing key.
        #[serde(borrow, default, deserialize_with = "present")]
        filled: Option<&'a RawValue>,
    }
    fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
        <&RawValue>::deserialize(d).map(Some)
    }
    // The pair's brackets and name by hand, the body in one typed pass: most lines of a long
    // run are events, and a second pass over each (as a `[name, RawValue]` pair) cost more
    // than the typed parse itself. Anything unusual (escapes in the name) takes the slow path.
    let rest = line
        .trim_start()
        .strip_prefix('[')?
        .trim_start()
        .strip_prefix("\"event\"")?
        .trim_start()
        .strip_prefix(',')?;
    let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<Event>();
    let event = stream.next()?.ok()?;
    let end = stream.byte_offset();
    if rest.get(end..)?.trim() != "]" {
        return None;
    }
    let body = rest.get(..end)?;
    let is_object = |raw: &RawValue| raw.get().starts_with('{');
    // The row gives back a float time and an object of timestamps exactly; an integer time
    // (which the REAL column makes a float) or a missing or null timestamps is for the
    // `Value` path, which keeps what the row cannot say.
    let time = event.time.get();
    if event.run_start.is_some()
        || !is_object(event.data)
        || !event.timestamps.is_some_and(is_object)
        || !time.contains(['.', 'e', 'E'])
    {
        return None;
    }
    let time: f64 = time.parse().ok()?;
    let canonical = canonical_text(Kind::Event, body)?;
    Some((
        EventDoc {
            uid: event.uid.into_owned(),
            descriptor: event.descriptor.into_owned(),
            seq_num: event.seq_num,
            time,
            data: compact(event.data.get()),
            timestamps: event.timestamps.map(|t| compact(t.get())),
            filled: event.filled.map(|f| f.get().to_string()),
        },
        canonical,
    ))
}

/// JSON text without the whitespace between its tokens (strings kept as they are). Bytes,
/// not chars: every byte it looks at (whitespace, `"`, `\\`) is ASCII, so what it keeps is
/// UTF-8 still.
fn compact(json: &str) -> String {
    let mut out = Vec::with_capacity(json.len());
    let mut in_string = false;
    let mut escaped = false;
    for &b in json.as_bytes() {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            in_string = b == b'"';
            out.push(b);
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| json.to_string())
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
    hasher.update(canonical(kind, body));
}

/// The bytes [`digest_doc`] hashes. One buffer per document, hashed once: formatting each key
/// and number into its own String cost more than the hashing.
pub fn canonical(kind: Kind, body: &Map<String, Value>) -> Vec<u8> {
    let mut canonical = Vec::with_capacity(1024);
    canonical.extend_from_slice(kind.name().as_bytes());
    canonical.push(0);
    canonical_object(&mut canonical, body);
    canonical.push(b'\n');
    canonical
}

/// [`canonical`] of a document given as JSON text, without building its `Value`: the same
/// bytes (a stored run's digest must still match), for a fraction of the allocations. `None`
/// when the text is not a JSON object.
pub fn canonical_text(kind: Kind, body: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len() + 16);
    out.extend_from_slice(kind.name().as_bytes());
    out.push(0);
    if !body.trim_start().starts_with('{') {
        return None;
    }
    let mut de = serde_json::Deserializer::from_str(body);
    Canonical(&mut out).deserialize(&mut de).ok()?;
    de.end().ok()?;
    out.push(b'\n');
    Some(out)
}

/// Writes the value it deserializes in canonical form, as `canonical_value` writes the
/// `Value` serde_json would have built: the same visitor calls, the same formatting.
struct Canonical<'o>(&'o mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for Canonical<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// An object key, borrowed from the text unless it has escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }
}

impl<'de> Visitor<'de> for Canonical<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        json_into(self.0, &v);
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        json_into(self.0, &v);
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        json_into(self.0, &v);
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        // As `Value` keeps it: a number that is not finite would be null.
        match serde_json::Number::from_f64(v) {
            Some(n) => json_into(self.0, &n),
            None => self.0.extend_from_slice(b"null"),
        }
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        json_into(self.0, v);
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.extend_from_slice(b"null");
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.0.push(b'[');
        while seq.next_element_seed(Canonical(self.0))?.is_some() {
            self.0.push(b',');
        }
        self.0.push(b']');
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Values are written in the document's order, then emitted in the keys' order.
        let mut values = Vec::new();
        let mut entries: Vec<(Cow<'de, str>, std::ops::Range<usize>)> = Vec::new();
        while let Some(key) = map.next_key_seed(Key)? {
            let start = values.len();
            map.next_value_seed(Canonical(&mut values))?;
            entries.push((key, start..values.len()));
        }
        // A repeated key: the last value wins, as in a `Value` map.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        self.0.push(b'{');
        for (i, (key, range)) in entries.iter().enumerate() {
            if entries.get(i + 1).is_some_and(|next| next.0 == *key) {
                continue;
            }
            json_into(self.0, key.as_ref());
            self.0.push(b':');
            self.0.extend_from_slice(&values[range.clone()]);
            self.0.push(b',');
        }
        self.0.push(b'}');
        Ok(())
    }
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

    /// Stored runs carry digests made from `Value`s: the text path must give the same bytes.
    #[test]
    fn canonical_text_is_byte_for_byte_the_value_path() {
        let bodies = [
            r#"{"uid": "a", "time": 1.0, "x": {"b": 1, "a": [1, 2.5, -3, 1e5, 1E-7, 0.1]}}"#,
            r#"{"s": "é\u00e9\n\"\\/\u001f", "k\u00e9y": null, "t": true, "f": false}"#,
            r#"{"big": 18446744073709551615, "neg": -9223372036854775808, "huge": 1e308}"#,
            r#"{"z": -0.0, "m": -0, "d": 1795000000.001, "e": 12345678901234567890123}"#,
            r#"{"dup": 1, "a": 2, "dup": {"y": [], "x": {}}}"#,
            r#"{"nested": [[{"b": 2, "a": 1}], [], {}], "empty": ""}"#,
            "{ \"ws\" :\t[ 1 ,\n 2 ] }",
        ];
        for body in bodies {
            let map: Map<String, Value> = serde_json::from_str(body).unwrap();
            assert_eq!(
                canonical_text(Kind::Event, body).map(String::from_utf8),
                Some(String::from_utf8(canonical(Kind::Event, &map))),
                "{body}"
            );
        }
        assert_eq!(canonical_text(Kind::Event, "[1]"), None);
        assert_eq!(canonical_text(Kind::Event, "{} x"), None);
    }

    #[test]
    fn events_take_the_fast_path_only_when_they_fit_it() {
        let line = r#"["event", {"uid": "e1", "descriptor": "d", "seq_num": 3, "time": 2.0,
            "data": {"x": 1, "s": "a b"}, "timestamps": {"x": 1.5}, "filled": {}}]"#;
        let (event, canonical) = parse_event(line).unwrap();
        assert_eq!(
            event,
            EventDoc {
                uid: "e1".into(),
                descriptor: "d".into(),
                seq_num: 3,
                time: 2.0,
                data: r#"{"x":1,"s":"a b"}"#.into(),
                timestamps: Some(r#"{"x":1.5}"#.into()),
                filled: Some("{}".into()),
            }
        );
        let (kind, body) = parse_line(line).unwrap().unwrap();
        assert_eq!(canonical, super::canonical(kind, &body));
        // A null `filled` is there (kept for export as null), not missing.
        let null = r#"["event", {"uid": "e1", "descriptor": "d", "seq_num": 1, "time": 2.0,
            "data": {}, "timestamps": {}, "filled": null}]"#;
        assert_eq!(parse_event(null).unwrap().0.filled.as_deref(), Some("null"));
        let missing = r#"["event", {"uid": "e1", "descriptor": "d", "seq_num": 1, "time": 2.0,
            "data": {}, "timestamps": {}}]"#;
        assert_eq!(parse_event(missing).unwrap().0.filled, None);
        for slow in [
            r#"["event", {"uid": "e1", "descriptor": "d", "seq_num": 1.5, "time": 2, "data": {}}]"#,
            r#"["event", {"uid": "e1", "descriptor": "d", "seq_num": 1, "time": 2, "data": []}]"#,
            r#"["event", {"uid": "e1", "uid": "e2", "descriptor": "d", "seq_num": 1, "time": 2, "data": {}}]"#,
            r#"["event", {"uid": "e1", "descriptor": "d", "seq_num": 1, "time": 2, "data": {}, "run_start": "r"}]"#,
            r#"["event", {"uid": "e1", "descriptor": "d", "seq_num": 1, "time": 2, "data": {}, "timestamps": 5}]"#,
            r#"["descriptor", {"uid": "e1"}]"#,
            r#"["event", {"uid": "e1"}, 3]"#,
            // What the row cannot give back exactly, for `export` (the `Value` path keeps it):
            // another key, an integer time, timestamps missing or null.
            r#"["event", {"uid": "e1", "descriptor": "d", "seq_num": 1, "time": 2.0, "data": {}, "timestamps": {}, "other": {}}]"#,
            r#"["event", {"uid": "e1", "descriptor": "d", "seq_num": 1, "time": 2, "data": {}, "timestamps": {}}]"#,
            r#"["event", {"uid": "e1", "descriptor": "d", "seq_num": 1, "time": 2.0, "data": {}}]"#,
            r#"["event", {"uid": "e1", "descriptor": "d", "seq_num": 1, "time": 2.0, "data": {}, "timestamps": null}]"#,
        ] {
            assert_eq!(parse_event(slow), None, "{slow}");
        }
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
