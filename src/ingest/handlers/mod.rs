//! Frame handlers: how one datum becomes one frame's bytes. Chosen by a resource's `spec`
//! (or, later, a stream_resource's `mimetype`); adding a format (AD_HDF5, AD_TIFF) is one file
//! here and one arm in [`for_resource`].
//!
//! A handler is created once per resource (that is when its root is resolved, so a missing
//! root map is reported before any frame is written) and is then shared by the threads that
//! read and compress frames.

mod npy_seq;

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::dtype::Dtype;
use super::npy::NpyError;
use super::rootmap::{RootError, RootMap};

/// What a frame is: element type and shape (without the stack axis).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameInfo {
    pub dtype: Dtype,
    pub shape: Vec<u64>,
}

impl FrameInfo {
    pub fn len_bytes(&self) -> usize {
        self.shape.iter().map(|&d| d as usize).product::<usize>() * self.dtype.size
    }
}

pub trait Handler: Send + Sync {
    /// The frame's type and shape, from its header only (to create its Zarr array before
    /// the pixels are read).
    fn probe(&self, datum_kwargs: &Map<String, Value>) -> Result<FrameInfo, FrameError>;

    /// The frame's elements in C order, little-endian, after checking them against
    /// `expected`.
    fn read(
        &self,
        datum_kwargs: &Map<String, Value>,
        expected: &FrameInfo,
    ) -> Result<Vec<u8>, FrameError>;
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("{path}: frame file is missing")]
    Missing { path: PathBuf },
    #[error("{path}: cannot read the frame: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Npy { path: PathBuf, source: NpyError },
    #[error("{path}: frame has shape {found:?}, but the descriptor says {expected:?}")]
    Shape {
        path: PathBuf,
        found: Vec<u64>,
        expected: Vec<u64>,
    },
    #[error("{path}: frame has dtype {found}, but {expected} was expected")]
    Dtype {
        path: PathBuf,
        found: Dtype,
        expected: Dtype,
    },
    #[error("{path}: file is {found} bytes, its header promises {expected}")]
    Length {
        path: PathBuf,
        found: usize,
        expected: usize,
    },
    #[error(transparent)]
    Root(#[from] RootError),
    #[error("datum_kwargs {kwargs}: {what}")]
    Datum { kwargs: String, what: &'static str },
}

/// Why a resource cannot get a handler.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    #[error("resource spec {0:?} is not supported yet (supported: NPY_SEQ); this run is skipped")]
    UnsupportedSpec(String),
    #[error(transparent)]
    Root(#[from] RootError),
}

/// The handler for a resource document's spec, root, path and kwargs.
pub fn for_resource(
    spec: &str,
    root: &str,
    resource_path: &str,
    _resource_kwargs: &Map<String, Value>,
    roots: &RootMap,
) -> Result<Arc<dyn Handler>, ResourceError> {
    match spec {
        "NPY_SEQ" => Ok(Arc::new(npy_seq::NpySeq::new(
            roots.resolve(root)?,
            resource_path,
        ))),
        other => Err(ResourceError::UnsupportedSpec(other.to_string())),
    }
}
