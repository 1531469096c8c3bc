//! The one place that opens an HDF5 file and a dataset in it on a document's behalf.
//!
//! A document may name only files inside its root (rootmap.rs); an HDF5 file can name others:
//! external links (on the dataset or on any group on the way to it, also behind soft links),
//! a virtual dataset's source files, and external raw-data files. Every one of them is resolved
//! as libhdf5 would (relative to the folder of the file that names it) and must exist, be a
//! regular file and stay inside the root, or the resource is refused before a pixel is read:
//! - external links: a traversal callback (`H5Pset_elink_cb`) on the dataset's access list sees
//!   every link libhdf5 follows, before it opens the target; after the open, the file the
//!   dataset really lives in is checked again;
//! - virtual datasets: every source file (`"."`: this file) is checked, and its source dataset
//!   opened and checked the same way, recursively; a missing source is refused (libhdf5 would
//!   read fill values in its place);
//! - external raw data: each file is checked, and the dataset opened again with the
//!   `${ORIGIN}` prefix, so that libhdf5 reads the names beside the file (not in the working
//!   directory).
//!
//! The environment variables `HDF5_EXT_PREFIX`, `HDF5_VDS_PREFIX` and `HDF5_EXTFILE_PREFIX`
//! would make libhdf5 look elsewhere first; while one is set, a file that needs it is refused
//! (beamdb could not tell which file would be read).
//!
//! The filters a dataset needs are checked here too: a chunk no filter can decode would fail
//! mid-run with libhdf5's plugin-folder noise, so it is refused at once with its id and name.

use std::ffi::{CStr, CString, c_char, c_uint, c_void};
use std::os::unix::ffi::OsStrExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hdf5_sys::h5d::H5Dopen2;
use hdf5_sys::h5f::{H5F_ACC_RDONLY, H5F_ACC_SWMR_READ, H5Fopen};
use hdf5_sys::h5i::hid_t;
use hdf5_sys::h5p::{
    H5P_DEFAULT, H5Pget_filter2, H5Pget_nfilters, H5Pget_virtual_count, H5Pget_virtual_dsetname,
    H5Pget_virtual_filename, H5Pset_efile_prefix, H5Pset_elink_cb,
};
use hdf5_sys::h5z::{H5Z_FILTER_CONFIG_DECODE_ENABLED, H5Zfilter_avail, H5Zget_filter_info};

use super::{FrameError, h5filters};
use crate::ingest::rootmap::{ResolvedRoot, RootError};

/// How deep virtual datasets may nest (a VDS whose source is a VDS ...): real files use 1.
const MAX_DEPTH: usize = 4;

/// An open dataset and what must live as long as it.
pub struct Opened {
    // Fields drop in order: the dataset before its file, both before the guard that libhdf5
    // may call back into while they are open.
    pub dataset: hdf5::Dataset,
    _file: hdf5::File,
    _sources: Vec<Opened>,
    _guard: Box<LinkGuard>,
}

/// What the external-link callback checks against, and why it refused.
struct LinkGuard {
    root: ResolvedRoot,
    refusal: Mutex<Option<(String, String)>>,
}

/// Opens `name` in the file at `path` (already resolved inside `root`), checking every file it
/// leads to and every filter it needs.
pub fn open(root: &ResolvedRoot, path: &Path, name: &str) -> Result<Opened, FrameError> {
    h5filters::register();
    open_checked(root, path, name, 0)
}

fn open_checked(
    root: &ResolvedRoot,
    path: &Path,
    name: &str,
    depth: usize,
) -> Result<Opened, FrameError> {
    let file = open_file(path)?;
    let guard = Box::new(LinkGuard {
        root: root.clone(),
        refusal: Mutex::new(None),
    });
    let mut dataset = open_dataset(&file, path, name, &guard, false)?;
    let refuse = |kind: &'static str, target: &str, problem: String| FrameError::Hdf5Source {
        path: path.to_path_buf(),
        dataset: name.to_string(),
        kind,
        target: target.to_string(),
        problem,
    };
    // Where the dataset really is, after every link: inside the root, or refused.
    let actual = PathBuf::from(dataset.filename());
    if let Err(e) = root.contain(&actual) {
        return Err(refuse(
            "external link",
            &actual.display().to_string(),
            e.to_string(),
        ));
    }
    let unreadable = |what: &str, e: hdf5::Error| FrameError::Hdf5Layout {
        path: path.to_path_buf(),
        dataset: name.to_string(),
        what: format!("cannot read its {what}: {}", reason(&e)),
    };
    let dcpl = dataset
        .dcpl()
        .map_err(|e| unreadable("creation properties", e))?;
    let folder = actual.parent().unwrap_or(Path::new("/")).to_path_buf();
    let externals = dcpl
        .get_external()
        .map_err(|e| unreadable("external raw data files", e))?;
    if !externals.is_empty() {
        for external in &externals {
            locate(root, &folder, &external.name, "HDF5_EXTFILE_PREFIX")
                .map_err(|problem| refuse("external raw data file", &external.name, problem))?;
        }
        // Opened again so that libhdf5 reads the names beside the file, where they were
        // checked, not in the working directory. Only here: with Debian's libhdf5 1.10.8 this
        // prefix on a virtual dataset's access list makes its sources read as fill values
        // (and libhdf5 refuses a second prefix while the first handle is open).
        drop(dataset);
        dataset = open_dataset(&file, path, name, &guard, true)?;
    }
    let mut opened = Opened {
        dataset,
        _file: file,
        _sources: Vec::new(),
        _guard: guard,
    };
    let mappings = if dcpl.layout() == hdf5::dataset::Layout::Virtual {
        virtual_sources(&dcpl).map_err(|e| unreadable("virtual dataset sources", e))?
    } else {
        Vec::new()
    };
    if !mappings.is_empty() && depth >= MAX_DEPTH {
        return Err(refuse(
            "virtual dataset",
            name,
            format!("nests virtual datasets more than {MAX_DEPTH} deep"),
        ));
    }
    let mut seen: Vec<(String, String)> = Vec::new();
    for mapping in mappings {
        let key = (mapping.src_filename.clone(), mapping.src_dataset.clone());
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        let source = if mapping.src_filename == "." {
            // The file itself; a source that maps back to this dataset ends at MAX_DEPTH.
            actual.clone()
        } else {
            if mapping.src_filename.contains('%') || mapping.src_dataset.contains('%') {
                return Err(refuse(
                    "virtual dataset source",
                    &mapping.src_filename,
                    "is a printf-style pattern, which beamdb does not follow".into(),
                ));
            }
            locate(root, &folder, &mapping.src_filename, "HDF5_VDS_PREFIX").map_err(|problem| {
                refuse("virtual dataset source", &mapping.src_filename, problem)
            })?
        };
        let inner =
            open_checked(root, &source, &mapping.src_dataset, depth + 1).map_err(|e| match e {
                FrameError::NoDataset { message, .. } => refuse(
                    "virtual dataset source",
                    &format!("{}:{}", mapping.src_filename, mapping.src_dataset),
                    format!("has no such dataset ({message}); it would be read as fill values"),
                ),
                other => other,
            })?;
        opened._sources.push(inner);
    }
    check_filters(&opened.dataset, path, name)?;
    Ok(opened)
}

/// One mapping of a virtual dataset: which file and dataset it reads.
struct VirtualSource {
    src_filename: String,
    src_dataset: String,
}

/// The sources of a virtual dataset, by name only (hdf5-metno's `virtual_map` also decodes
/// the selections, and fails on strided ones such as Odin's interleaving).
fn virtual_sources(dcpl: &hdf5::plist::DatasetCreate) -> hdf5::Result<Vec<VirtualSource>> {
    hdf5::sync::sync(|| {
        let plist = dcpl.id();
        let mut count: usize = 0;
        // SAFETY: a live creation property list; each string is read with the length the
        // library reports first.
        if unsafe { H5Pget_virtual_count(plist, &mut count) } < 0 {
            return Err(hdf5::Error::query()?);
        }
        let text = |get: &dyn Fn(*mut c_char, usize) -> isize| -> hdf5::Result<String> {
            let len = get(std::ptr::null_mut(), 0);
            if len < 0 {
                return Err(hdf5::Error::query()?);
            }
            let mut buf = vec![0 as c_char; len as usize + 1];
            if get(buf.as_mut_ptr(), buf.len()) < 0 {
                return Err(hdf5::Error::query()?);
            }
            Ok(unsafe { CStr::from_ptr(buf.as_ptr()) }
                .to_string_lossy()
                .into_owned())
        };
        (0..count)
            .map(|i| {
                Ok(VirtualSource {
                    src_filename: text(&|b, n| unsafe { H5Pget_virtual_filename(plist, i, b, n) })?,
                    src_dataset: text(&|b, n| unsafe { H5Pget_virtual_dsetname(plist, i, b, n) })?,
                })
            })
            .collect()
    })
}

/// `name` as libhdf5 resolves a file another file names: absolute as it is, relative beside
/// `folder`; it must exist, be a regular file and stay inside the root. `prefix_var` is the
/// environment variable that would make libhdf5 look elsewhere first.
fn locate(
    root: &ResolvedRoot,
    folder: &Path,
    name: &str,
    prefix_var: &str,
) -> Result<PathBuf, String> {
    if std::env::var_os(prefix_var).is_some() {
        return Err(format!(
            "cannot be located: {prefix_var} is set, so libhdf5 would look for it there first; unset {prefix_var}"
        ));
    }
    let candidate = folder.join(name);
    match root.contain(&candidate) {
        Ok(Ok(resolved)) if resolved.is_file() => Ok(resolved),
        Ok(Ok(resolved)) => Err(format!(
            "is {}, which is not a regular file; refusing to read it",
            resolved.display()
        )),
        Ok(Err(missing)) => Err(format!(
            "names {}, which does not exist; put the file there (or fix the link) and ingest again",
            missing.display()
        )),
        Err(RootError::Escapes {
            resolved, boundary, ..
        }) => Err(format!(
            "resolves to {}, outside its root {}; refusing to read it",
            resolved.display(),
            boundary.display()
        )),
        Err(other) => Err(other.to_string()),
    }
}

/// Opens the file read-only; a file its writer still holds open (SWMR, or a writer that died
/// before closing it) is opened for SWMR reading, which is what SWMR is for, or refused with
/// a message that says so (not libhdf5's advice to run h5clear on a detector's file).
pub(super) fn open_file(path: &Path) -> Result<hdf5::File, FrameError> {
    let err = match hdf5::File::open(path) {
        Ok(file) => return Ok(file),
        Err(e) => e,
    };
    let why = reason(&err);
    let being_written = why.contains("already open for write")
        || why.contains("h5clear")
        || why.contains("unable to lock file");
    if !being_written {
        return Err(FrameError::Hdf5Open {
            path: path.to_path_buf(),
            message: why,
        });
    }
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| FrameError::Hdf5Open {
        path: path.to_path_buf(),
        message: "the path holds a NUL byte".into(),
    })?;
    let swmr = hdf5::sync::sync(|| {
        // SAFETY: a valid C string and flags; the id is checked.
        let id = unsafe { H5Fopen(c.as_ptr(), H5F_ACC_RDONLY | H5F_ACC_SWMR_READ, H5P_DEFAULT) };
        if id < 0 {
            None
        } else {
            // SAFETY: a fresh file id, owned from here on.
            unsafe { hdf5::from_id::<hdf5::File>(id) }.ok()
        }
    });
    swmr.ok_or_else(|| FrameError::OpenForWriting {
        path: path.to_path_buf(),
    })
}

fn open_dataset(
    file: &hdf5::File,
    path: &Path,
    name: &str,
    guard: &LinkGuard,
    beside_file: bool,
) -> Result<hdf5::Dataset, FrameError> {
    let no_dataset = |message: String| FrameError::NoDataset {
        path: path.to_path_buf(),
        dataset: name.to_string(),
        message,
    };
    let c_name = CString::new(name).map_err(|_| no_dataset("the name holds a NUL byte".into()))?;
    let dapl = hdf5::plist::DatasetAccess::try_new()
        .map_err(|e| no_dataset(format!("cannot make an access list: {}", reason(&e))))?;
    let opened = hdf5::sync::sync(|| {
        // SAFETY: the callback's data outlives every use: the guard is kept beside the
        // dataset (which keeps a copy of this access list) until after it closes.
        unsafe {
            if H5Pset_elink_cb(
                dapl.id(),
                Some(on_external_link),
                (guard as *const LinkGuard).cast_mut().cast::<c_void>(),
            ) < 0
                || (beside_file && H5Pset_efile_prefix(dapl.id(), c"${ORIGIN}".as_ptr()) < 0)
            {
                return Err(hdf5::Error::query().map_or_else(|e| e.to_string(), |e| reason(&e)));
            }
            let id = H5Dopen2(file.id(), c_name.as_ptr(), dapl.id());
            if id < 0 {
                return Err(hdf5::Error::query().map_or_else(|e| e.to_string(), |e| reason(&e)));
            }
            hdf5::from_id::<hdf5::Dataset>(id).map_err(|e| reason(&e))
        }
    });
    if let Some((target, problem)) = guard.refusal.lock().map(|mut r| r.take()).unwrap_or(None) {
        return Err(FrameError::Hdf5Source {
            path: path.to_path_buf(),
            dataset: name.to_string(),
            kind: "external link",
            target,
            problem,
        });
    }
    opened.map_err(no_dataset)
}

/// libhdf5 calls this before it follows an external link, with the file that holds the link
/// and the target's name as written; a negative return stops the traversal.
extern "C" fn on_external_link(
    parent_file: *const c_char,
    _parent_group: *const c_char,
    child_file: *const c_char,
    _child_object: *const c_char,
    _acc_flags: *mut c_uint,
    _fapl: hid_t,
    data: *mut c_void,
) -> i32 {
    let verdict = catch_unwind(AssertUnwindSafe(|| {
        if data.is_null() || parent_file.is_null() || child_file.is_null() {
            return Err(("?".to_string(), "cannot be checked".to_string()));
        }
        // SAFETY: `data` is the LinkGuard set with this callback; the names are C strings
        // libhdf5 owns for the duration of the call.
        let guard = unsafe { &*data.cast::<LinkGuard>() };
        let parent = unsafe { CStr::from_ptr(parent_file) }
            .to_string_lossy()
            .into_owned();
        let child = unsafe { CStr::from_ptr(child_file) }
            .to_string_lossy()
            .into_owned();
        let folder = Path::new(&parent).parent().unwrap_or(Path::new("/"));
        match locate(&guard.root, folder, &child, "HDF5_EXT_PREFIX") {
            Ok(_) => Ok(()),
            Err(problem) => {
                if let Ok(mut slot) = guard.refusal.lock() {
                    slot.get_or_insert((child.clone(), problem.clone()));
                }
                Err((child, problem))
            }
        }
    }));
    match verdict {
        Ok(Ok(())) => 0,
        _ => -1,
    }
}

/// Every filter in the dataset's pipeline must be there to decode it.
fn check_filters(dataset: &hdf5::Dataset, path: &Path, name: &str) -> Result<(), FrameError> {
    let Ok(dcpl) = dataset.dcpl() else {
        return Ok(());
    };
    let missing = hdf5::sync::sync(|| {
        let plist = dcpl.id();
        // SAFETY: a live creation property list; buffers sized as passed.
        let count = unsafe { H5Pget_nfilters(plist) };
        for index in 0..count.max(0) as c_uint {
            let mut flags: c_uint = 0;
            let mut nelmts: usize = 0;
            let mut name_buf = [0 as c_char; 256];
            let mut config: c_uint = 0;
            let id = unsafe {
                H5Pget_filter2(
                    plist,
                    index,
                    &mut flags,
                    &mut nelmts,
                    std::ptr::null_mut(),
                    name_buf.len(),
                    name_buf.as_mut_ptr(),
                    &mut config,
                )
            };
            if id < 0 {
                continue;
            }
            let mut info: c_uint = 0;
            let usable = unsafe { H5Zfilter_avail(id) } > 0
                && unsafe { H5Zget_filter_info(id, &mut info) } >= 0
                && info & H5Z_FILTER_CONFIG_DECODE_ENABLED != 0;
            if !usable {
                let label = unsafe { CStr::from_ptr(name_buf.as_ptr()) }
                    .to_string_lossy()
                    .into_owned();
                return Some((id, label));
            }
        }
        None
    });
    match missing {
        None => Ok(()),
        Some((id, label)) => Err(FrameError::FilterUnavailable {
            path: path.to_path_buf(),
            dataset: name.to_string(),
            id,
            name: h5filters::name(id),
            label,
        }),
    }
}

/// libhdf5's reason for a failure: the top of its error stack (what failed) and the deepest
/// frame that says why, skipping the plugin-folder search that follows every failure to find
/// a filter and would otherwise be all the message says.
pub fn reason(e: &hdf5::Error) -> String {
    let Some(stack) = e.stack() else {
        return e.to_string();
    };
    let noise = |d: &str| {
        d.contains("can't open directory") || d.contains("plugin") || d.contains("search in paths")
    };
    let top = stack.top().map(|f| f.description().to_string());
    let cause = stack.iter().rev().map(|f| f.desc()).find(|d| !noise(d));
    match (top, cause) {
        (Some(top), Some(cause)) if !top.ends_with(cause) => format!("{top}: {cause}"),
        (Some(top), _) => top,
        (None, _) => e.to_string(),
    }
}
