//! NPY_SEQ (ophyd's simulated detectors): frame `i` of a resource is the file
//! `{root}/{resource_path}_{i}.npy`, with `i` from `datum_kwargs.index`.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{FrameError, FrameInfo, Handler, Locator};
use crate::ingest::npy::{self, NpyError, NpyHeader};
use crate::ingest::rootmap::{self, ResolvedRoot};

pub struct NpySeq {
    root: ResolvedRoot,
    resource_path: String,
}

impl NpySeq {
    pub fn new(root: ResolvedRoot, resource_path: &str) -> NpySeq {
        NpySeq {
            root,
            resource_path: resource_path.to_string(),
        }
    }

    fn path(&self, at: &Locator) -> Result<PathBuf, FrameError> {
        let kwargs = at.kwargs("NPY_SEQ frames come from datum documents")?;
        let index =
            kwargs
                .get("index")
                .and_then(Value::as_u64)
                .ok_or_else(|| FrameError::Datum {
                    kwargs: Value::Object(kwargs.clone()).to_string(),
                    what: "NPY_SEQ needs a non-negative integer `index`",
                })?;
        let relative = format!("{}_{index}.npy", self.resource_path);
        self.root
            .file(&relative)?
            .map_err(|path| FrameError::Missing { path })
    }
}

fn header(path: &Path, bytes: &[u8]) -> Result<NpyHeader, FrameError> {
    npy::parse_header(bytes).map_err(|source| FrameError::Npy {
        path: path.to_path_buf(),
        source,
    })
}

impl Handler for NpySeq {
    fn probe(&self, at: &Locator) -> Result<FrameInfo, FrameError> {
        let path = self.path(at)?;
        let io = |source| FrameError::Io {
            path: path.clone(),
            source,
        };
        let mut buf = Vec::with_capacity(npy::HEADER_PROBE);
        rootmap::open_regular(&path)
            .map_err(io)?
            .take(npy::HEADER_PROBE as u64)
            .read_to_end(&mut buf)
            .map_err(io)?;
        let h = header(&path, &buf)?;
        Ok(FrameInfo {
            dtype: h.dtype,
            shape: h.shape,
        })
    }

    fn read(&self, at: &Locator, expected: &FrameInfo) -> Result<Vec<u8>, FrameError> {
        let path = self.path(at)?;
        let want = expected.len_bytes().ok_or_else(|| FrameError::Npy {
            path: path.clone(),
            source: NpyError::Header(format!(
                "a frame of shape {:?} is too large",
                expected.shape
            )),
        })?;
        let io = |source| FrameError::Io {
            path: path.clone(),
            source,
        };
        let file = rootmap::open_regular(&path).map_err(io)?;
        // Never more than the frame and its header: a file far longer than the descriptor's
        // frame is refused before it is read into memory.
        let limit = want.saturating_add(npy::MAX_HEADER);
        let size = file.metadata().map_err(io)?.len();
        if size > limit as u64 {
            return Err(FrameError::Length {
                path,
                found: usize::try_from(size).unwrap_or(usize::MAX),
                expected: want,
            });
        }
        let mut bytes = Vec::new();
        file.take(limit as u64)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        let h = header(&path, &bytes)?;
        if h.shape != expected.shape {
            return Err(FrameError::Shape {
                path,
                found: h.shape,
                expected: expected.shape.clone(),
            });
        }
        if h.dtype != expected.dtype {
            return Err(FrameError::Dtype {
                path,
                found: h.dtype,
                expected: expected.dtype,
            });
        }
        let data = bytes.get(h.data_offset..).unwrap_or_default();
        if data.len() != want {
            return Err(FrameError::Length {
                path,
                found: data.len(),
                expected: want,
            });
        }
        let mut out = if h.fortran_order {
            npy::fortran_to_c(data, &h.shape, h.dtype.size).ok_or(FrameError::Length {
                path,
                found: data.len(),
                expected: want,
            })?
        } else {
            data.to_vec()
        };
        if h.big_endian {
            for element in out.chunks_exact_mut(h.dtype.size) {
                element.reverse();
            }
        }
        Ok(out)
    }
}
