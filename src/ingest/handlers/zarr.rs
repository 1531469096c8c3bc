//! BEAMDB_ZARR: a frame of a beamdb frame store, where `beamdb export --self-contained`
//! points a run's external frames: the resource's `root` is the store (`.../frames.zarr`,
//! mapped by the root map like any root), its `resource_path` the frame array
//! (`runs/{uid}/{stream}/{field}`), a datum's `index` the element of the array's axis 0.
//! The same for a stream_resource of mimetype `application/x-beamdb-zarr`: its `uri` is the
//! store (`file://localhost/.../frames.zarr`), `parameters.array` the array, and a
//! stream_datum's indices are elements of the array's axis 0.

use std::path::PathBuf;
use std::sync::Mutex;

use serde_json::Value;

use super::{FrameError, FrameInfo, Handler, Locator, ResourceError};
use crate::frames::Inspector;
use crate::ingest::dtype::Dtype;
use crate::ingest::rootmap::ResolvedRoot;

/// The stream_resource mimetype of a beamdb frame store's array.
pub const MIMETYPE: &str = "application/x-beamdb-zarr";

/// An array's zarr.json beamdb writes is a few kilobytes; far more is not one of its arrays.
const MAX_METADATA_BYTES: u64 = 16 << 20;

/// What a compressor may add to a frame beyond half its size (block and frame headers).
const CHUNK_SLACK_BYTES: u64 = 64 << 10;

/// Refuses `path` when it is larger than `limit` bytes (before anything reads it).
fn check_size(path: &std::path::Path, limit: u64, what: &str) -> Result<(), String> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("cannot stat it: {e}"))?
        .len();
    if size > limit {
        return Err(format!(
            "it is {size} bytes, larger than {what} can be ({limit} bytes); not read"
        ));
    }
    Ok(())
}

pub struct ZarrStack {
    root: ResolvedRoot,
    array: String,
    info: FrameInfo,
    /// The length of the array's axis 0: how many frames it holds.
    frames: u64,
    /// Reads are few and small next to the compression that follows; one at a time.
    inspector: Mutex<Inspector>,
}

impl ZarrStack {
    pub fn open(root: ResolvedRoot, resource_path: &str) -> Result<ZarrStack, ResourceError> {
        let array = resource_path.trim_matches('/').to_string();
        // Inside the root, as every file read on a document's behalf.
        let meta = root
            .file(&format!("{array}/zarr.json"))?
            .map_err(|path| FrameError::Missing { path })?;
        let unreadable = |what: String| FrameError::Io {
            path: meta.clone(),
            source: std::io::Error::other(what),
        };
        // Read whole by the zarr library: its size is checked first (a sparse file of
        // gigabytes costs nothing on disk).
        check_size(&meta, MAX_METADATA_BYTES, "an array's metadata").map_err(unreadable)?;
        let mut inspector = Inspector::open(&root.dir)
            .map_err(|e| unreadable(format!("cannot open the store: {e}")))?;
        let found = inspector.array_info(&array).map_err(unreadable)?;
        // A frame is read from the one chunk file that `read` checks against the root: an
        // array whose chunks hold several frames, or part of one, would read chunk files
        // that were never checked (a symbolic link among them reads outside the root).
        let one_frame: Vec<u64> = std::iter::once(1)
            .chain(found.shape.iter().skip(1).copied())
            .collect();
        if found.chunk_shape.as_deref() != Some(one_frame.as_slice()) {
            return Err(unreadable(format!(
                "chunk grid {} is not one chunk per frame (regular, chunk shape {one_frame:?}); \
                 beamdb reads BEAMDB_ZARR arrays only as its own store writes them",
                found
                    .chunk_shape
                    .as_ref()
                    .map_or_else(|| "(not regular)".to_string(), |c| format!("{c:?}"))
            ))
            .into());
        }
        let dtype = Dtype::from_zarr_name(&found.data_type).ok_or_else(|| {
            unreadable(format!(
                "data type {} is not one beamdb stores",
                found.data_type
            ))
        })?;
        let info = FrameInfo {
            dtype,
            shape: found
                .shape
                .get(1..)
                .map(<[u64]>::to_vec)
                .unwrap_or_default(),
        };
        let frames = found.shape.first().copied().unwrap_or(0);
        Ok(ZarrStack {
            root,
            array,
            info,
            frames,
            inspector: Mutex::new(inspector),
        })
    }

    fn index(&self, at: &Locator) -> Result<u64, FrameError> {
        // A stream_datum's index is an element of the array, whatever its rows.
        if let Locator::Index { index, .. } = at {
            return Ok(*index);
        }
        let kwargs = at.kwargs("BEAMDB_ZARR frames come from datum documents")?;
        kwargs
            .get("index")
            .and_then(Value::as_u64)
            .ok_or_else(|| FrameError::Datum {
                kwargs: Value::Object(kwargs.clone()).to_string(),
                what: "BEAMDB_ZARR needs a non-negative integer `index`",
            })
    }

    fn path(&self) -> PathBuf {
        self.root.dir.join(&self.array)
    }
}

impl Handler for ZarrStack {
    /// In the rows of a dataset, as a stream_datum's range is checked: one index is one
    /// frame, the frame's first axis its rows.
    fn extent(&self, _needed: u64) -> Option<u64> {
        let rows = self.info.shape.first().copied().unwrap_or(1);
        Some(self.frames.saturating_mul(rows))
    }

    fn probe(&self, at: &Locator) -> Result<FrameInfo, FrameError> {
        self.index(at)?;
        Ok(self.info.clone())
    }

    fn read(&self, at: &Locator, expected: &FrameInfo) -> Result<Vec<u8>, FrameError> {
        let index = self.index(at)?;
        if expected.shape != self.info.shape {
            return Err(FrameError::Shape {
                path: self.path(),
                found: self.info.shape.clone(),
                expected: expected.shape.clone(),
            });
        }
        if expected.dtype != self.info.dtype {
            return Err(FrameError::Dtype {
                path: self.path(),
                found: self.info.dtype,
                expected: expected.dtype,
            });
        }
        let io = |what: String| FrameError::Io {
            path: self.path(),
            source: std::io::Error::other(what),
        };
        let mut inspector = self
            .inspector
            .lock()
            .map_err(|_| io("a reader of this store failed".into()))?;
        let key = inspector.chunk_key(&self.array, index).map_err(io)?;
        // The chunk's file too stays inside the root (no symbolic link out of it), and is
        // no larger than one frame could encode to: the zarr library reads it whole before
        // it compares sizes.
        let chunk = self
            .root
            .file(&key)?
            .map_err(|path| FrameError::Missing { path })?;
        let frame = expected
            .len_bytes()
            .map_or(u64::MAX, |n| u64::try_from(n).unwrap_or(u64::MAX));
        let limit = frame
            .saturating_add(frame / 2)
            .saturating_add(CHUNK_SLACK_BYTES);
        check_size(&chunk, limit, "a chunk of one frame").map_err(|what| FrameError::Io {
            path: chunk.clone(),
            source: std::io::Error::other(what),
        })?;
        let bytes = inspector.frame_bytes(&self.array, index).map_err(io)?;
        if Some(bytes.len()) != expected.len_bytes() {
            return Err(io(format!(
                "frame {index} is {} bytes, not a frame of shape {:?}",
                bytes.len(),
                expected.shape
            )));
        }
        Ok(bytes)
    }
}
