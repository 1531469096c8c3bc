//! HDF5 frames: an area detector's HDF5 plugin (resource spec `AD_HDF5`) and ophyd-async
//! devices (stream_resource, mimetype `application/x-hdf5`). Both name rows of one dataset: a
//! frame is rows `[start, stop)` of its first axis, read with a hyperslab selection, so a file
//! is never loaded whole.
//!
//! The file and its dataset are opened once, when the resource arrives (so a missing file or
//! dataset is reported at the resource's line), and shared by the threads that read frames:
//! hdf5-metno serialises every call into the C library behind one lock.

use std::path::PathBuf;

use hdf5::types::{FloatSize, IntSize, TypeDescriptor};
use hdf5::{Hyperslab, SliceOrIndex};
use serde_json::{Map, Value};

use super::{FrameError, FrameInfo, Handler, Locator, ResourceError, h5filters, h5open};
use crate::ingest::dtype::{Dtype, Kind};
use crate::ingest::rootmap::ResolvedRoot;

/// Where the HDF5 plugin of areaDetector writes its frames (the NeXus default layout).
const AD_DATASET: &str = "/entry/data/data";

/// One dataset of one open HDF5 file, read by rows.
pub(super) struct Rows {
    dataset: hdf5::Dataset,
    /// The file, and every file the dataset leads to, held open (and checked) by h5open.
    _opened: h5open::Opened,
    path: PathBuf,
    name: String,
    dtype: Dtype,
    /// The shape of one row (the dataset's shape without its first axis).
    row_shape: Vec<u64>,
    /// Opened for SWMR reading (its writer still has it open): only such a dataset can grow
    /// while it is read, and only such a dataset may be refreshed (see [`Rows::len_for`]).
    swmr: bool,
}

impl Rows {
    pub(super) fn open(root: &ResolvedRoot, path: PathBuf, name: &str) -> Result<Rows, FrameError> {
        let opened = h5open::open(root, &path, name)?;
        let dataset = opened.dataset.clone();
        let layout = |what: String| FrameError::Hdf5Layout {
            path: path.clone(),
            dataset: name.to_string(),
            what,
        };
        let descriptor = dataset
            .dtype()
            .and_then(|t| t.to_descriptor())
            .map_err(|e| {
                layout(format!(
                    "cannot read its element type: {}",
                    h5open::reason(&e)
                ))
            })?;
        let dtype = dtype_of(&descriptor).ok_or_else(|| {
            layout(format!(
                "its elements are {descriptor}; beamdb stores bool, integers and float32/64"
            ))
        })?;
        let shape = dataset.shape();
        let Some((_, row)) = shape.split_first() else {
            return Err(layout("it is a scalar; frames are rows of an array".into()));
        };
        let row_shape = row.iter().map(|&d| d as u64).collect();
        let swmr = opened_for_swmr(&dataset);
        Ok(Rows {
            swmr,
            dataset,
            _opened: opened,
            path,
            name: name.to_string(),
            dtype,
            row_shape,
        })
    }

    pub(super) fn len(&self) -> u64 {
        self.dataset.shape().first().map_or(0, |&n| n as u64)
    }

    /// The dataset's rows, looked at again when fewer than `needed` and the file is being
    /// written (SWMR): it may have grown since it was opened. Only then: H5Drefresh on a
    /// dataset of a file not opened for SWMR evicts its chunk index under the reads still to
    /// come, which then fail ("can't insert duplicate key", "can't retrieve B-tree's shared
    /// ref. count object").
    pub(super) fn len_for(&self, needed: u64) -> u64 {
        let len = self.len();
        if self.swmr && needed > len && self.dataset.refresh().is_ok() {
            return self.len();
        }
        len
    }

    /// What rows `[start, stop)` are, checked against the dataset's extent.
    pub(super) fn info(&self, start: u64, stop: u64) -> Result<FrameInfo, FrameError> {
        let len = self.len_for(stop);
        if start >= stop || stop > len {
            return Err(FrameError::OutOfRange {
                path: self.path.clone(),
                dataset: self.name.clone(),
                start,
                stop,
                len,
            });
        }
        let mut shape = vec![stop - start];
        shape.extend_from_slice(&self.row_shape);
        Ok(FrameInfo {
            dtype: self.dtype,
            shape,
        })
    }

    /// Rows `[start, stop)` as one frame of the `expected` type and shape. The descriptor may
    /// count the rows as the frame's first axis (`[fpp, H, W]`) or, for one row, leave it out
    /// (`[H, W]`), and may leave out (or add) length-1 axes, such as the one areaDetector adds
    /// (`(n, 1, H, W)` described as `[1, H, W]`): in C order the bytes are the same, and the
    /// frame is stored with the descriptor's shape (docs/detectors.md).
    pub(super) fn read(
        &self,
        start: u64,
        stop: u64,
        expected: &FrameInfo,
    ) -> Result<Vec<u8>, FrameError> {
        let found = self.info(start, stop)?;
        let squeezed = |shape: &[u64]| {
            shape
                .iter()
                .copied()
                .filter(|&d| d != 1)
                .collect::<Vec<_>>()
        };
        let fits = found.shape == expected.shape
            || (stop - start == 1 && found.shape[1..] == expected.shape[..])
            || squeezed(&found.shape) == squeezed(&expected.shape);
        if !fits {
            return Err(FrameError::Hdf5Shape {
                path: self.path.clone(),
                dataset: self.name.clone(),
                found: found.shape,
                expected: expected.shape.clone(),
            });
        }
        if found.dtype != expected.dtype {
            return Err(FrameError::Hdf5Dtype {
                path: self.path.clone(),
                dataset: self.name.clone(),
                found: found.dtype,
                expected: expected.dtype,
            });
        }
        self.read_bytes(start, stop)
            .map_err(|e| FrameError::Hdf5Read {
                path: self.path.clone(),
                dataset: self.name.clone(),
                start,
                stop,
                message: match h5filters::take_last_error() {
                    Some(why) => format!("{}: {why}", h5open::reason(&e)),
                    None => h5open::reason(&e),
                },
            })
    }

    fn read_bytes(&self, start: u64, stop: u64) -> hdf5::Result<Vec<u8>> {
        let mut slices = vec![SliceOrIndex::from(start as usize..stop as usize)];
        slices.extend(self.row_shape.iter().map(|_| SliceOrIndex::from(..)));
        let selection = Hyperslab::from(slices);
        let reader = self.dataset.as_reader();
        // The library converts the file's byte order to this machine's; the bytes are then
        // written little-endian, as every stored frame is.
        macro_rules! read_as {
            ($t:ty) => {
                reader
                    .read_slice::<$t, _, ndarray::IxDyn>(selection)?
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect()
            };
        }
        Ok(match (self.dtype.kind, self.dtype.size) {
            (Kind::Bool, _) => reader
                .read_slice::<bool, _, ndarray::IxDyn>(selection)?
                .iter()
                .map(|&b| u8::from(b))
                .collect(),
            (Kind::UInt, 1) => read_as!(u8),
            (Kind::UInt, 2) => read_as!(u16),
            (Kind::UInt, 4) => read_as!(u32),
            (Kind::UInt, _) => read_as!(u64),
            (Kind::Int, 1) => read_as!(i8),
            (Kind::Int, 2) => read_as!(i16),
            (Kind::Int, 4) => read_as!(i32),
            (Kind::Int, _) => read_as!(i64),
            (Kind::Float, 4) => read_as!(f32),
            (Kind::Float, _) => read_as!(f64),
        })
    }
}

/// Whether the file holding `dataset` was opened for SWMR reading.
fn opened_for_swmr(dataset: &hdf5::Dataset) -> bool {
    let Ok(file) = dataset.file() else {
        return false;
    };
    let mut intent: std::ffi::c_uint = 0;
    // SAFETY: a valid, open file id and a pointer to a local; the result is checked.
    let status =
        hdf5::sync::sync(|| unsafe { hdf5_sys::h5f::H5Fget_intent(file.id(), &mut intent) });
    status >= 0 && intent & hdf5_sys::h5f::H5F_ACC_SWMR_READ != 0
}

fn dtype_of(descriptor: &TypeDescriptor) -> Option<Dtype> {
    let int = |size: &IntSize| match size {
        IntSize::U1 => 1,
        IntSize::U2 => 2,
        IntSize::U4 => 4,
        IntSize::U8 => 8,
    };
    let (kind, size) = match descriptor {
        TypeDescriptor::Boolean => (Kind::Bool, 1),
        TypeDescriptor::Integer(size) => (Kind::Int, int(size)),
        TypeDescriptor::Unsigned(size) => (Kind::UInt, int(size)),
        TypeDescriptor::Float(FloatSize::U4) => (Kind::Float, 4),
        TypeDescriptor::Float(FloatSize::U8) => (Kind::Float, 8),
        _ => return None,
    };
    Some(Dtype { kind, size })
}

/// AD_HDF5: datum `point_number` i is rows `[i*fpp, (i+1)*fpp)` of `/entry/data/data`, with
/// `fpp` the resource's `frame_per_point`.
pub struct AdHdf5 {
    rows: Rows,
    frame_per_point: u64,
}

impl AdHdf5 {
    pub fn open(
        root: &ResolvedRoot,
        resource_path: &str,
        kwargs: &Map<String, Value>,
    ) -> Result<AdHdf5, ResourceError> {
        let frame_per_point = kwargs
            .get("frame_per_point")
            .and_then(Value::as_u64)
            .filter(|&n| n > 0)
            .ok_or_else(|| ResourceError::Kwargs {
                field: "resource_kwargs",
                kwargs: Value::Object(kwargs.clone()).to_string(),
                what: "AD_HDF5 needs a positive integer `frame_per_point`",
            })?;
        let path = root
            .file(resource_path)?
            .map_err(|path| FrameError::Missing { path })?;
        Ok(AdHdf5 {
            rows: Rows::open(root, path, AD_DATASET)?,
            frame_per_point,
        })
    }
}

impl ByRows for AdHdf5 {
    fn rows(&self) -> &Rows {
        &self.rows
    }

    fn range(&self, at: &Locator) -> Result<(u64, u64), FrameError> {
        let kwargs = at.kwargs("AD_HDF5 frames come from datum documents")?;
        let point = kwargs
            .get("point_number")
            .and_then(Value::as_u64)
            .ok_or_else(|| FrameError::Datum {
                kwargs: Value::Object(kwargs.clone()).to_string(),
                what: "AD_HDF5 needs a non-negative integer `point_number`",
            })?;
        let start = point.saturating_mul(self.frame_per_point);
        Ok((start, start.saturating_add(self.frame_per_point)))
    }
}

/// stream_resource `application/x-hdf5`: index i of a stream_datum is rows
/// `[i*s0, (i+1)*s0)` of `parameters.dataset`, with s0 the descriptor's `shape[0]`.
pub struct StreamHdf5 {
    rows: Rows,
}

impl StreamHdf5 {
    pub fn open(
        root: &ResolvedRoot,
        file: &str,
        parameters: &Map<String, Value>,
    ) -> Result<StreamHdf5, ResourceError> {
        let dataset = parameters
            .get("dataset")
            .and_then(Value::as_str)
            .filter(|d| !d.is_empty())
            .ok_or_else(|| ResourceError::Kwargs {
                field: "parameters",
                kwargs: Value::Object(parameters.clone()).to_string(),
                what: "an HDF5 stream_resource needs `dataset`, the path of a dataset in the file",
            })?;
        let path = root
            .file(file)?
            .map_err(|path| FrameError::Missing { path })?;
        Ok(StreamHdf5 {
            rows: Rows::open(root, path, dataset)?,
        })
    }
}

impl ByRows for StreamHdf5 {
    fn rows(&self) -> &Rows {
        &self.rows
    }

    fn range(&self, at: &Locator) -> Result<(u64, u64), FrameError> {
        match at {
            Locator::Index { index, rows } => {
                let start = index.saturating_mul(*rows);
                Ok((start, start.saturating_add(*rows)))
            }
            Locator::Kwargs(kwargs) => Err(FrameError::Datum {
                kwargs: Value::Object(kwargs.clone()).to_string(),
                what: "stream_resource frames come from stream_datum documents",
            }),
        }
    }
}

/// The two HDF5 handlers differ only in how a document names its rows.
trait ByRows {
    fn rows(&self) -> &Rows;
    fn range(&self, at: &Locator) -> Result<(u64, u64), FrameError>;
}

impl<T: ByRows + Send + Sync> Handler for T {
    fn probe(&self, at: &Locator) -> Result<FrameInfo, FrameError> {
        let (start, stop) = self.range(at)?;
        self.rows().info(start, stop)
    }

    fn read(&self, at: &Locator, expected: &FrameInfo) -> Result<Vec<u8>, FrameError> {
        let (start, stop) = self.range(at)?;
        self.rows().read(start, stop, expected)
    }

    fn extent(&self, needed: u64) -> Option<u64> {
        Some(self.rows().len_for(needed))
    }
}
