//! Frame handlers: how one datum (or one index of a stream_datum) becomes one frame's bytes.
//! Chosen by a resource's `spec` ([`for_resource`]) or a stream_resource's `mimetype`
//! ([`for_stream_resource`]); adding a format is one file here and one arm there.
//!
//! A handler is created once per resource (that is when its root is resolved, so a missing
//! root map is reported before any frame is written, and when an HDF5 file is opened, once)
//! and is then shared by the threads that read and compress frames.

mod eiger;
mod h5filters;
mod h5open;
mod hdf5;
mod npy_seq;
mod tiff;
mod zarr;

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
    /// `None` when the shape is too large to be one frame (see [`Dtype::frame_bytes`]).
    pub fn len_bytes(&self) -> Option<usize> {
        self.dtype.frame_bytes(&self.shape)
    }
}

/// Which frame of a resource a document points at.
#[derive(Debug, Clone)]
pub enum Locator {
    /// A datum's `datum_kwargs` (resource and datum documents).
    Kwargs(Map<String, Value>),
    /// Index `index` of a stream_resource, `rows` rows deep along its dataset's first axis
    /// (stream_datum: `rows` is the descriptor's `shape[0]`).
    Index { index: u64, rows: u64 },
}

impl Locator {
    /// The datum kwargs, for handlers of resource/datum documents.
    pub fn kwargs(&self, spec: &'static str) -> Result<&Map<String, Value>, FrameError> {
        match self {
            Locator::Kwargs(kwargs) => Ok(kwargs),
            Locator::Index { index, .. } => Err(FrameError::Datum {
                kwargs: format!("stream index {index}"),
                what: spec,
            }),
        }
    }
}

pub trait Handler: Send + Sync {
    /// The frame's type and shape, from its header only (to create its Zarr array before
    /// the pixels are read).
    fn probe(&self, at: &Locator) -> Result<FrameInfo, FrameError>;

    /// The frame's elements in C order, little-endian, after checking them against
    /// `expected`.
    fn read(&self, at: &Locator, expected: &FrameInfo) -> Result<Vec<u8>, FrameError>;

    /// How many rows the resource's dataset has now, when it is one dataset (HDF5), looked at
    /// again if fewer than `needed` (a file still being written): a stream_datum's range is
    /// checked against it before any frame is planned.
    fn extent(&self, _needed: u64) -> Option<u64> {
        None
    }
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
    #[error("{path}: a frame of shape {shape:?} is too large to read")]
    TooLarge { path: PathBuf, shape: Vec<u64> },
    #[error(transparent)]
    Root(#[from] RootError),
    #[error("datum_kwargs {kwargs}: {what}")]
    Datum { kwargs: String, what: &'static str },
    #[error("{path}: cannot open it as HDF5 ({message})")]
    Hdf5Open { path: PathBuf, message: String },
    #[error("{path}: has no dataset {dataset} ({message})")]
    NoDataset {
        path: PathBuf,
        dataset: String,
        message: String,
    },
    #[error(
        "{path} {dataset}: rows [{start}, {stop}) are asked for, but the dataset has {len} rows"
    )]
    OutOfRange {
        path: PathBuf,
        dataset: String,
        start: u64,
        stop: u64,
        len: u64,
    },
    #[error("{path} {dataset}: {what}")]
    Hdf5Layout {
        path: PathBuf,
        dataset: String,
        what: String,
    },
    #[error("{path} {dataset}: frame has shape {found:?}, but the descriptor says {expected:?}")]
    Hdf5Shape {
        path: PathBuf,
        dataset: String,
        found: Vec<u64>,
        expected: Vec<u64>,
    },
    #[error("{path} {dataset}: frame has dtype {found}, but {expected} was expected")]
    Hdf5Dtype {
        path: PathBuf,
        dataset: String,
        found: Dtype,
        expected: Dtype,
    },
    #[error("{path} {dataset}: its {kind} {target:?} {problem}")]
    Hdf5Source {
        path: PathBuf,
        dataset: String,
        /// "external link", "virtual dataset source", "external raw data file".
        kind: &'static str,
        target: String,
        problem: String,
    },
    #[error(
        "{path} {dataset}: compressed with HDF5 filter {id} ({name}; the file calls it {label:?}), which beamdb cannot decode (it decodes deflate, shuffle, fletcher32, szip, N-bit, scale-offset, bitshuffle, LZ4, Blosc and Zstandard); decompress the file where that filter is installed (h5repack -f NONE IN OUT, with HDF5_PLUGIN_PATH set) and ingest the copy, or ask for the filter to be built in"
    )]
    FilterUnavailable {
        path: PathBuf,
        dataset: String,
        id: i32,
        name: &'static str,
        label: String,
    },
    #[error(
        "{path}: the file is still open for writing (its writer has not closed it, or died before it could); ingest the run again once the detector has closed the file"
    )]
    OpenForWriting { path: PathBuf },
    #[error("{path} {dataset}: cannot read rows [{start}, {stop}): {message}")]
    Hdf5Read {
        path: PathBuf,
        dataset: String,
        start: u64,
        stop: u64,
        message: String,
    },
}

/// Why a resource cannot get a handler.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    #[error(
        "resource spec {0:?} is not supported yet (supported: NPY_SEQ, AD_HDF5, AD_TIFF, AD_EIGER, AD_EIGER2, BEAMDB_ZARR); this run is skipped"
    )]
    UnsupportedSpec(String),
    #[error(
        "stream_resource mimetype {0:?} is not supported yet (supported: application/x-hdf5, application/x-beamdb-zarr); this run is skipped"
    )]
    UnsupportedMimetype(String),
    #[error("{field} {kwargs}: {what}")]
    Kwargs {
        field: &'static str,
        kwargs: String,
        what: &'static str,
    },
    #[error("stream_resource uri {uri:?}: {what}")]
    Uri { uri: String, what: &'static str },
    #[error(transparent)]
    Root(#[from] RootError),
    #[error(transparent)]
    File(#[from] FrameError),
}

/// The stream_resource mimetype of an array of a beamdb frame store (`export --self-contained`).
pub const ZARR_MIMETYPE: &str = zarr::MIMETYPE;

/// The handler for a resource document's spec, root, path and kwargs.
pub fn for_resource(
    spec: &str,
    root: &str,
    resource_path: &str,
    resource_kwargs: &Map<String, Value>,
    roots: &RootMap,
) -> Result<Arc<dyn Handler>, ResourceError> {
    match spec {
        "NPY_SEQ" => Ok(Arc::new(npy_seq::NpySeq::new(
            roots.resolve(root)?,
            resource_path,
        ))),
        "AD_HDF5" => Ok(Arc::new(hdf5::AdHdf5::open(
            &roots.resolve(root)?,
            resource_path,
            resource_kwargs,
        )?)),
        "AD_TIFF" => Ok(Arc::new(tiff::AdTiff::open(
            roots.resolve(root)?,
            resource_path,
            resource_kwargs,
        )?)),
        "AD_EIGER" | "AD_EIGER2" => Ok(Arc::new(eiger::AdEiger::open(
            roots.resolve(root)?,
            resource_path,
            resource_kwargs,
        )?)),
        "BEAMDB_ZARR" => Ok(Arc::new(zarr::ZarrStack::open(
            roots.resolve(root)?,
            resource_path,
        )?)),
        other => Err(ResourceError::UnsupportedSpec(other.to_string())),
    }
}

/// The handler for a stream_resource document's mimetype, uri and parameters.
pub fn for_stream_resource(
    mimetype: &str,
    uri: &str,
    parameters: &Map<String, Value>,
    roots: &RootMap,
) -> Result<Arc<dyn Handler>, ResourceError> {
    match mimetype {
        "application/x-hdf5" => {
            let (root, file) = local_file(uri)?;
            Ok(Arc::new(hdf5::StreamHdf5::open(
                &roots.resolve(root)?,
                file,
                parameters,
            )?))
        }
        zarr::MIMETYPE => {
            let store = local_path(uri)?;
            let array = parameters
                .get("array")
                .and_then(Value::as_str)
                .ok_or_else(|| ResourceError::Kwargs {
                    field: "parameters",
                    kwargs: Value::Object(parameters.clone()).to_string(),
                    what: "needs `array`, the frame array's path inside the store",
                })?;
            Ok(Arc::new(zarr::ZarrStack::open(
                roots.resolve(store)?,
                array,
            )?))
        }
        other => Err(ResourceError::UnsupportedMimetype(other.to_string())),
    }
}

/// The absolute path of a `file://localhost/abs/path` (or `file:///abs/path`) uri.
fn local_path(uri: &str) -> Result<&str, ResourceError> {
    let bad = |what| ResourceError::Uri {
        uri: uri.to_string(),
        what,
    };
    let rest = uri
        .strip_prefix("file://")
        .ok_or_else(|| bad("only file:// uris can be read"))?;
    let path = rest.strip_prefix("localhost").unwrap_or(rest);
    if !path.starts_with('/') {
        return Err(bad(
            "expected file://localhost/<absolute path> (files on another host cannot be read)",
        ));
    }
    Ok(path)
}

/// Splits a `file://localhost/abs/dir/name.h5` (or `file:///abs/...`) uri into the folder,
/// which the root map then applies to as to a resource's root, and the file's name.
fn local_file(uri: &str) -> Result<(&str, &str), ResourceError> {
    let bad = |what| ResourceError::Uri {
        uri: uri.to_string(),
        what,
    };
    let rest = uri
        .strip_prefix("file://")
        .ok_or_else(|| bad("only file:// uris can be read"))?;
    let path = match rest.strip_prefix("localhost") {
        Some(path) => path,
        None => rest,
    };
    if !path.starts_with('/') {
        return Err(bad(
            "expected file://localhost/<absolute path> (files on another host cannot be read)",
        ));
    }
    match path.rsplit_once('/') {
        Some((dir, name)) if !name.is_empty() && name != ".." && name != "." => {
            Ok((if dir.is_empty() { "/" } else { dir }, name))
        }
        _ => Err(bad("names a folder, not a file")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_resource_uris_split_into_folder_and_file() {
        assert_eq!(
            local_file("file://localhost/srv/hdf5/blob/blob_00000.h5").unwrap(),
            ("/srv/hdf5/blob", "blob_00000.h5")
        );
        assert_eq!(local_file("file:///srv/b.h5").unwrap(), ("/srv", "b.h5"));
        assert_eq!(local_file("file:///b.h5").unwrap(), ("/", "b.h5"));
        for bad in [
            "/srv/b.h5",
            "http://localhost/srv/b.h5",
            "file://otherhost/srv/b.h5",
            "file://localhost/srv/",
            "file://localhost/srv/..",
        ] {
            assert!(local_file(bad).is_err(), "{bad}");
        }
    }
}
