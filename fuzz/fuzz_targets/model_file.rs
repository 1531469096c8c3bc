//! The declared-models parser (a file staff edit by hand): any text gives a schema or an
//! error that starts with the file's name, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = beamdb::schema::declared::parse(text, "fuzz.toml") {
        let message = e.to_string();
        assert!(message.starts_with("fuzz.toml"), "{message}");
    }
});
