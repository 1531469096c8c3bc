//! Whole document sequences through the run builder, as ingest drives it: a start opens a
//! run, every other document is fed to it, a stop or the end of the input finishes it, and
//! whatever it wrote is discarded. Any bytes must give a rejection or a finished run, never a
//! panic, an abort, or an allocation sized by a document's numbers instead of its payload
//! (libFuzzer's -rss_limit_mb and -malloc_limit_mb catch those).
//!
//! The frame store lives in /dev/shm (fsync there costs nothing); the shared runs' frames
//! root `/srv/beamline/shared/frames` is mapped to the repository's test frames, so seeds
//! taken from tests/data/bluesky read real NPY files.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use beamdb::frames::{FrameStore, Target};
use beamdb::ingest::documents::{Kind, Reader};
use beamdb::ingest::rootmap::RootMap;
use beamdb::ingest::run::{Context, Finished, Mode, RunBuilder, RunError};
use beamdb::settings::Compression;
use libfuzzer_sys::fuzz_target;

struct World {
    store: FrameStore,
    roots: RootMap,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("beamdb-fuzz-run-builder-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("fuzz dir");
        let store = FrameStore::open(&dir.join("frames.zarr"), &dir.join("frames.staging"))
            .expect("frame store");
        let frames = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/bluesky/frames");
        let roots = RootMap::new(vec![("/srv/beamline/shared/frames".into(), frames)]);
        World { store, roots }
    })
}

/// Ends a run: finish (for a stop or the end of input) or discard; either way nothing stays.
fn close(mut run: Box<RunBuilder>, cx: &Context<'_>, finish: bool) {
    if finish {
        match run.finish(cx) {
            Ok(Finished::Ready { rows, .. }) => {
                // Every frame row points into this run's own group.
                let prefix = format!("runs/{}/", run.uid);
                for r in &rows.image_refs {
                    assert!(r.zarr_group.starts_with(&prefix), "{}", r.zarr_group);
                }
            }
            Ok(Finished::Unchanged) | Err(RunError::Rejected(_)) => {}
            Err(RunError::Store(e)) => panic!("the store failed: {e}"),
        }
    }
    run.discard().expect("discard");
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let cx = Context {
        store: &w.store,
        roots: &w.roots,
        compression: Compression::None,
    };
    let mut reader = Reader::new(data, "fuzz.jsonl");
    let mut open: Option<Box<RunBuilder>> = None;
    while let Some(next) = reader.next_doc() {
        let Ok(doc) = next else {
            if let Some(run) = open.take() {
                close(run, &cx, false);
            }
            continue;
        };
        if doc.kind == Kind::Start {
            if let Some(run) = open.take() {
                close(run, &cx, true);
            }
            if let Ok(run) = RunBuilder::start(&doc, Mode::Write(Target::InPlace)) {
                open = Some(Box::new(run));
            }
            continue;
        }
        let Some(mut run) = open.take() else {
            continue;
        };
        match run.feed(&doc, &cx) {
            Ok(true) => close(run, &cx, true),
            Ok(false) => open = Some(run),
            Err(RunError::Rejected(why)) => {
                let _ = why.to_string();
                close(run, &cx, false);
            }
            Err(RunError::Store(e)) => panic!("the store failed: {e}"),
        }
    }
    if let Some(run) = open.take() {
        close(run, &cx, true);
    }
});
