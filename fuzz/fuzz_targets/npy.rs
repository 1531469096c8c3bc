//! `.npy` files as the NPY_SEQ handler reads them: any bytes as a header (`parse_header`),
//! and the same bytes as a frame file on disk read through the handler, probe then read.
//! Must hold: no panic, no allocation sized by the header instead of the file; a parsed
//! header's data offset lies within its header, its frame size does not overflow; a frame
//! that reads back has exactly the size its probe promised.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use beamdb::ingest::handlers::{self, FrameInfo, Handler, Locator};
use beamdb::ingest::npy;
use beamdb::ingest::rootmap::RootMap;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

struct World {
    file: PathBuf,
    handler: std::sync::Arc<dyn Handler>,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("beamdb-fuzz-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("fuzz dir");
        let file = dir.join("f_0.npy");
        std::fs::write(&file, b"").expect("frame file");
        let roots = RootMap::new(vec![("/f".into(), dir)]);
        let handler =
            handlers::for_resource("NPY_SEQ", "/f", "f", &Map::new(), &roots).expect("handler");
        World { file, handler }
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = npy::parse_header(data) {
        assert!(h.data_offset <= data.len());
        let bytes = h.dtype.frame_bytes(&h.shape).expect("a parsed header's size fits");
        let payload = &data[h.data_offset..];
        if h.fortran_order && payload.len() == bytes {
            let c = npy::fortran_to_c(payload, &h.shape, h.dtype.size).expect("sizes agree");
            assert_eq!(c.len(), bytes);
        }
    }
    let w = world();
    std::fs::write(&w.file, data).expect("frame file");
    let mut kwargs = Map::new();
    kwargs.insert("index".into(), Value::from(0));
    let at = Locator::Kwargs(kwargs);
    if let Ok(info) = w.handler.probe(&at) {
        let expected = FrameInfo {
            dtype: info.dtype,
            shape: info.shape,
        };
        if let Ok(frame) = w.handler.read(&at, &expected) {
            assert_eq!(Some(frame.len()), expected.len_bytes());
        }
    }
});
