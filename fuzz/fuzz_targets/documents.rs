//! The suitcase-jsonl reader: any bytes give documents or per-line errors, never a panic,
//! and reading always reaches the end.
#![no_main]

use beamdb::ingest::documents::{Fields, Reader, parse_line};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut reader = Reader::new(data, "fuzz.jsonl");
    let mut docs = 0usize;
    while let Some(next) = reader.next_doc() {
        docs += 1;
        // More documents than lines means the reader stopped advancing.
        assert!(docs <= data.len() + 1, "the reader does not advance");
        if let Ok(doc) = next {
            let f = Fields::of(&doc);
            let _ = f.str("uid");
            let _ = f.f64("time");
            let _ = f.i64("seq_num");
            let _ = f.object("data");
            let _ = f.column("seq_num", Some(3));
            let _ = doc.pos.to_string();
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        for line in text.lines() {
            if let Err(e) = parse_line(line) {
                let _ = e.to_string();
            }
        }
    }
});
