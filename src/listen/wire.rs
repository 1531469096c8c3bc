//! One 0MQ message from bluesky's `Publisher` → one document.
//!
//! The Publisher sends a single frame, `prefix b' ' name b' ' serialized-document`
//! (bluesky.callbacks.zmq.Publisher.__call__); the serializer is pickle unless the beamline
//! profile says otherwise. beamdb reads only JSON: a pickle cannot be read safely (loading one
//! runs code) and is not meant to be read outside Python.

use serde_json::Value;

use crate::ingest::documents::{Kind, Parsed};

/// The profile line that makes the RunEngine publish JSON (docs/listen.md).
pub const PUBLISHER_HINT: &str = "Publisher(\"HOST:PORT\", serializer=lambda doc: json.dumps(doc, cls=event_model.NumpyEncoder).encode())";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error(
        "the document is pickled (the Publisher's default serializer); beamdb reads JSON only: in the beamline profile, publish with {PUBLISHER_HINT}"
    )]
    Pickled,
    #[error("a message of {0} frames; bluesky's Publisher sends one")]
    Frames(usize),
    #[error("not `prefix name document` (no two spaces in the message)")]
    Shape,
    #[error("the document name is not text")]
    Name,
    #[error(
        "unknown document type {0:?}; expected start, descriptor, event, event_page, resource, datum, datum_page, stream_resource, stream_datum or stop"
    )]
    UnknownKind(String),
    #[error("the {kind} document is not valid JSON ({why})")]
    Json { kind: &'static str, why: String },
    #[error("the {0} document is not a JSON object")]
    NotObject(&'static str),
}

/// The document in `frames`, or `None` when its prefix is another publisher's.
pub fn parse(frames: &[Vec<u8>], prefix: &[u8]) -> Result<Option<Parsed>, WireError> {
    let [message] = frames else {
        return Err(WireError::Frames(frames.len()));
    };
    let mut parts = message.splitn(3, |&b| b == b' ');
    let (Some(got_prefix), Some(name), Some(body)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(WireError::Shape);
    };
    if got_prefix != prefix {
        return Ok(None);
    }
    let name = std::str::from_utf8(name).map_err(|_| WireError::Name)?;
    let kind = Kind::parse(name).ok_or_else(|| WireError::UnknownKind(name.to_string()))?;
    // Pickle protocols 2 and later start with PROTO (0x80); JSON never does.
    if body.first() == Some(&0x80) {
        return Err(WireError::Pickled);
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(Some((kind, map))),
        Ok(_) => Err(WireError::NotObject(kind.name())),
        Err(e) => Err(WireError::Json {
            kind: kind.name(),
            why: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(bytes: &[u8]) -> Vec<Vec<u8>> {
        vec![bytes.to_vec()]
    }

    #[test]
    fn a_json_message_parses_and_a_pickled_one_names_the_setting() {
        let (kind, body) = parse(&msg(b" start {\"uid\": \"a b\"}"), b"")
            .unwrap()
            .unwrap();
        assert_eq!(kind, Kind::Start);
        assert_eq!(body["uid"], "a b");
        // What pickle.dumps({'uid': 'x'}) starts with.
        let err = parse(&msg(b" start \x80\x05\x95\x10\x00"), b"").unwrap_err();
        assert_eq!(err, WireError::Pickled);
        assert!(err.to_string().contains("serializer="), "{err}");
    }

    #[test]
    fn hostile_messages_are_errors_not_panics() {
        for (bytes, want) in [
            (&b""[..], WireError::Shape),
            (b"nospace", WireError::Shape),
            (b" start", WireError::Shape),
            (b" \xff\xfe {}", WireError::Name),
            (b" bogus {}", WireError::UnknownKind("bogus".into())),
            (b" event [1,2]", WireError::NotObject("event")),
        ] {
            assert_eq!(parse(&msg(bytes), b"").unwrap_err(), want, "{bytes:?}");
        }
        assert!(matches!(
            parse(&msg(b" stop {\"uid\": NaN}"), b""),
            Err(WireError::Json { kind: "stop", .. })
        ));
        assert_eq!(
            parse(&[b"a".to_vec(), b"b".to_vec()], b"").unwrap_err(),
            WireError::Frames(2)
        );
        assert_eq!(parse(&msg(b"other start {}"), b"").unwrap(), None);
        assert!(parse(&msg(b"mine start {}"), b"mine").unwrap().is_some());
    }
}
