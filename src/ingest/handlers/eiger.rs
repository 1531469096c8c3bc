//! AD_EIGER and AD_EIGER2 (DECTRIS Eiger through areaDetector), as area-detector-handlers'
//! `EigerHandler` reads them: the master file of acquisition `seq_id` is
//! `{root}/{resource_path}_{seq_id}_master.h5`; its `/entry/data/data_000001`,
//! `data_000002`, ... (external links to the data files beside it; `/entry` for firmware
//! before 1.3) hold the series in order. A datum with `frame_num` is that frame of the series;
//! one without it is the whole series (`[n, y, x]`). The resource must say `images_per_file`
//! (or the older `frame_per_point`), as the Python handler requires.
//!
//! Where the Python handler computes `stack[frame_num % images_per_file]`, it reads an
//! attribute that does not exist and never ran; here `frame_num` counts through the series.
//! The links to the data files obey the root rule of h5open (they are beside the master file).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

use super::hdf5::Rows;
use super::{FrameError, FrameInfo, Handler, Locator, ResourceError, h5open};
use crate::ingest::rootmap::ResolvedRoot;

pub struct AdEiger {
    root: ResolvedRoot,
    prefix: String,
    /// Each seq_id's series, opened once.
    series: Mutex<HashMap<u64, Arc<Series>>>,
}

/// The data datasets of one master file, in order.
struct Series {
    master: PathBuf,
    parts: Vec<Rows>,
}

impl Series {
    fn len(&self) -> u64 {
        self.parts.iter().map(Rows::len).sum()
    }

    /// The dataset that holds frame `index` of the series, and the frame's row in it.
    fn find(&self, index: u64) -> Result<(&Rows, u64), FrameError> {
        let mut row = index;
        for part in &self.parts {
            if row < part.len() {
                return Ok((part, row));
            }
            row -= part.len();
        }
        Err(FrameError::OutOfRange {
            path: self.master.clone(),
            dataset: "/entry/data/data_*".into(),
            start: index,
            stop: index + 1,
            len: self.len(),
        })
    }
}

impl AdEiger {
    pub fn open(
        root: ResolvedRoot,
        resource_path: &str,
        kwargs: &Map<String, Value>,
    ) -> Result<AdEiger, ResourceError> {
        let per_file = kwargs
            .get("images_per_file")
            .or_else(|| kwargs.get("frame_per_point"))
            .and_then(Value::as_u64)
            .filter(|&n| n > 0);
        if per_file.is_none() {
            return Err(ResourceError::Kwargs {
                field: "resource_kwargs",
                kwargs: Value::Object(kwargs.clone()).to_string(),
                what: "AD_EIGER needs a positive integer `images_per_file` (or `frame_per_point`)",
            });
        }
        Ok(AdEiger {
            root,
            prefix: resource_path.to_string(),
            series: Mutex::new(HashMap::new()),
        })
    }

    fn series(&self, seq_id: u64) -> Result<Arc<Series>, FrameError> {
        if let Some(found) = self
            .series
            .lock()
            .ok()
            .and_then(|s| s.get(&seq_id).cloned())
        {
            return Ok(found);
        }
        let path = self
            .root
            .file(&format!("{}_{seq_id}_master.h5", self.prefix))?
            .map_err(|path| FrameError::Missing { path })?;
        let names = data_datasets(&path)?;
        let parts = names
            .iter()
            .map(|name| Rows::open(&self.root, path.clone(), name))
            .collect::<Result<Vec<_>, _>>()?;
        let series = Arc::new(Series {
            master: path,
            parts,
        });
        if let Ok(mut all) = self.series.lock() {
            all.insert(seq_id, series.clone());
        }
        Ok(series)
    }

    /// seq_id and frame_num of a datum.
    fn locate(&self, at: &Locator) -> Result<(u64, Option<u64>), FrameError> {
        let kwargs = at.kwargs("AD_EIGER frames come from datum documents")?;
        let bad = |what| FrameError::Datum {
            kwargs: Value::Object(kwargs.clone()).to_string(),
            what,
        };
        let seq_id = kwargs
            .get("seq_id")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad("AD_EIGER needs a non-negative integer `seq_id`"))?;
        let frame = match kwargs.get("frame_num") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .ok_or_else(|| bad("AD_EIGER `frame_num` must be a non-negative integer"))?,
            ),
        };
        Ok((seq_id, frame))
    }
}

/// `/entry/data/data_NNNNNN` (or `/entry/data_NNNNNN`, older firmware), sorted.
fn data_datasets(path: &std::path::Path) -> Result<Vec<String>, FrameError> {
    let file = h5open::open_file(path)?;
    let (group, members) = match file.group("/entry/data") {
        Ok(g) => ("/entry/data", g.member_names()),
        Err(_) => (
            "/entry",
            file.group("/entry").and_then(|g| g.member_names()),
        ),
    };
    let mut names: Vec<String> = members
        .map_err(|e| FrameError::NoDataset {
            path: path.to_path_buf(),
            dataset: group.to_string(),
            message: h5open::reason(&e),
        })?
        .into_iter()
        .filter(|n| {
            n.strip_prefix("data_")
                .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|n| format!("{group}/{n}"))
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(FrameError::NoDataset {
            path: path.to_path_buf(),
            dataset: format!("{group}/data_000001"),
            message: "an Eiger master file links its frames there".into(),
        });
    }
    Ok(names)
}

impl Handler for AdEiger {
    fn probe(&self, at: &Locator) -> Result<FrameInfo, FrameError> {
        let (seq_id, frame) = self.locate(at)?;
        let series = self.series(seq_id)?;
        match frame {
            Some(index) => {
                let (rows, row) = series.find(index)?;
                let mut info = rows.info(row, row + 1)?;
                info.shape.remove(0);
                Ok(info)
            }
            None => {
                let first = &series.parts[0];
                let mut info = first.info(0, first.len().max(1))?;
                info.shape[0] = series.len();
                Ok(info)
            }
        }
    }

    fn read(&self, at: &Locator, expected: &FrameInfo) -> Result<Vec<u8>, FrameError> {
        let (seq_id, frame) = self.locate(at)?;
        let series = self.series(seq_id)?;
        match frame {
            Some(index) => {
                let (rows, row) = series.find(index)?;
                rows.read(row, row + 1, expected)
            }
            None => {
                let want = expected.len_bytes().ok_or_else(|| FrameError::TooLarge {
                    path: series.master.clone(),
                    shape: expected.shape.clone(),
                })?;
                let mut out = Vec::with_capacity(want);
                for part in &series.parts {
                    let n = part.len();
                    let mut shape = expected.shape.clone();
                    if let Some(first) = shape.first_mut() {
                        *first = n;
                    }
                    let mut bytes = part.read(
                        0,
                        n,
                        &FrameInfo {
                            dtype: expected.dtype,
                            shape,
                        },
                    )?;
                    out.append(&mut bytes);
                }
                if out.len() != want {
                    return Err(FrameError::Length {
                        path: series.master.clone(),
                        found: out.len(),
                        expected: want,
                    });
                }
                Ok(out)
            }
        }
    }
}
