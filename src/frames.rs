//! The Zarr v3 frame store beside each beamtime database. With `store_columns` (the run
//! groups' xarray layout, written from the rows), the only module that knows zarrs.
//!
//! The store is opened through one function that takes its location ([`location`], then
//! [`FrameStore::open`]): the filesystem store beside `beamtime.db` (the default), or, with
//! the `s3` feature, S3-compatible object storage (`s3`, docs/s3.md). Code above this
//! module does not care which, except that an S3 store names each version of a run's group
//! (`runs/{uid}@{version}`) where the filesystem store has `runs/{uid}`.
//!
//! Layout: `runs/{run_uid}/{stream}/{field}`, one array per field, shape `[n, *frame]`, one
//! chunk per frame. A run's frames are written into the run's own group, which is then a
//! complete Zarr hierarchy on its own (metadata holds no paths), so a replacement can be
//! written elsewhere and moved into place with one rename.
//!
//! Every frame is written, even one equal to the fill value (zarrs skips those by default):
//! `verify` tells "frame missing" from "frame all zero" by whether the chunk exists.
//!
//! Frames are encoded by zarrs' codec chain (so the format is zarrs'), but their chunk files
//! are written here, without the `fsync` that zarrs' filesystem store does after every file:
//! one fsync per frame made ingest wait on the disk for each frame in turn. Instead
//! [`RunFrames::finish`] makes every chunk and directory of the run durable in one parallel
//! pass, before any metadata is written and so before the run's rows can be committed.

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use zarrs::array::{
    Array, ArrayBytes, ArrayMetadata, ArrayMetadataV3, ArrayToBytesCodecTraits, CodecOptions,
};
use zarrs::filesystem::FilesystemStore;
use zarrs::group::GroupBuilder;

use crate::layout::{Layout, SafeName};
use crate::settings::{Compression, FramesSettings};

mod binding;
#[cfg(feature = "s3")]
pub mod s3;
pub use binding::{Bind, bind};

/// A frame-store operation that failed, with the path it was about.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file or folder could not be created, written, synced, renamed or removed.
    #[error("{path}: {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    /// zarrs refused an array, a group or a frame (metadata or codec): not the disk's doing.
    #[error("{path}: {message}")]
    Zarr { path: PathBuf, message: String },
    /// Group metadata that zarr-python cannot open: nothing is written into such a store.
    #[error(
        "{path}: damaged Zarr group metadata ({why}); beamdb writes nothing into a store that zarr-python cannot open: run `beamdb verify --repair`, which rewrites it (keeping the damaged file in the beamtime's quarantine folder), then run the ingest again"
    )]
    Damaged { path: PathBuf, why: String },
    /// Where the store's group belongs sits an array's metadata: not something beamdb wrote,
    /// so nothing rewrites it.
    #[error(
        "{path}: holds an array's metadata where beamdb's group belongs; zarr-python cannot open the store as beamdb's, and beamdb neither writes into it nor rewrites the file: move it away by hand, then run `beamdb verify --repair`"
    )]
    NotOurs { path: PathBuf },
    /// An interrupted `--replace` left two copies of a committed run's frames and neither is
    /// provably whole: both are kept, nothing is moved or deleted.
    #[error(
        "{run} and {old}: an interrupted ingest --replace left two copies of the run's frames and neither provably holds every committed frame ({why}); both are kept, nothing was moved or deleted: `beamdb verify --repair` quarantines the run (rows and both copies kept under the beamtime's quarantine folder), then re-ingest it from its documents"
    )]
    Undecided {
        run: PathBuf,
        old: PathBuf,
        why: String,
    },
    /// An S3 request failed after its retries (network, 5xx, timeout): a runtime failure.
    #[error("{url}: {action}: {message}")]
    Remote {
        url: String,
        action: &'static str,
        /// The client's message (with any request signature cut out).
        message: String,
    },
    /// The S3 store cannot be used as set up: a missing bucket, missing or refused
    /// credentials. A settings error (exit 2) naming what to fix.
    #[error("frame store {url}: {why} (setting: {setting})")]
    RemoteSetup {
        url: String,
        setting: &'static str,
        why: String,
    },
    /// What this command cannot do yet on an S3 frame store: refused before anything is
    /// touched, never done halfway.
    #[error(
        "frame store {url}: `beamdb {command}` does not work on an S3 frame store yet ({why}); docs/s3.md lists what does"
    )]
    RemoteUnsupported {
        url: String,
        command: &'static str,
        why: &'static str,
    },
    /// The beamtime's frames are in another store than the settings name: refused before a
    /// frame is looked at (a repair would otherwise quarantine or delete every run).
    #[error(
        "{db}: the beamtime's frames are in {recorded}, but the settings name {configured}; nothing was read or changed: run the command with the beamtime's own frame store in the settings (setting: [frames] url)"
    )]
    Elsewhere {
        db: PathBuf,
        recorded: String,
        configured: String,
    },
    /// The S3 store belongs to another beamtime database with the same id (another data
    /// root under the same `[frames] url`): nothing is written, repaired or deleted there.
    #[error(
        "frame store {url} belongs to another beamtime database with the same beamtime id (another data root under the same [frames] url), not to {db}; nothing was written or deleted there: give this data root's frames a [frames] url of their own (setting: [frames] url)"
    )]
    OwnedElsewhere { url: String, db: PathBuf },
    /// `beamtime_meta` could not be read or written while binding the store.
    #[error("{path}: beamtime_meta: {source}")]
    Meta {
        path: PathBuf,
        source: rusqlite::Error,
    },
}

impl StoreError {
    /// Whether an S3 request failed after its retries (the store, not the input, at
    /// fault; the run is rejected whole and ingest goes on with the next).
    pub fn is_remote_failure(&self) -> bool {
        matches!(self, StoreError::Remote { .. })
    }

    /// Whether the disk is full or a file-size limit (RLIMIT_FSIZE) was hit: decided by the
    /// error's kind and OS code, never by its text.
    pub fn is_storage_full(&self) -> bool {
        let StoreError::Io { source, .. } = self else {
            return false;
        };
        matches!(
            source.kind(),
            io::ErrorKind::StorageFull | io::ErrorKind::FileTooLarge | io::ErrorKind::QuotaExceeded
        ) || matches!(
            source.raw_os_error(),
            Some(libc_codes::ENOSPC | libc_codes::EFBIG | libc_codes::EDQUOT)
        )
    }

    /// A store that cannot be used as set up, or a command that refuses an S3 store, is a
    /// usage error (2); every other store failure is a runtime failure (1): the input was
    /// not at fault.
    pub fn exit_status(&self) -> crate::exit::ExitStatus {
        match self {
            StoreError::RemoteSetup { .. }
            | StoreError::RemoteUnsupported { .. }
            | StoreError::Elsewhere { .. }
            | StoreError::OwnedElsewhere { .. } => crate::exit::ExitStatus::Usage,
            _ => crate::exit::ExitStatus::Failure,
        }
    }
}

impl crate::exit::HasExitStatus for StoreError {
    fn exit_status(&self) -> crate::exit::ExitStatus {
        StoreError::exit_status(self)
    }
}

/// The Linux error numbers of a full disk, for io::Errors built without a kind.
mod libc_codes {
    pub const EFBIG: i32 = 27;
    pub const ENOSPC: i32 = 28;
    pub const EDQUOT: i32 = 122;
}

fn io_error<'a>(path: &'a Path, action: &'static str) -> impl Fn(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

fn zarr_error<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> StoreError + '_ {
    move |e| StoreError::Zarr {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// A zarrs storage failure: an I/O error keeps its kind (a full disk stays a full disk).
fn storage_error<'a>(
    path: &'a Path,
    action: &'static str,
) -> impl Fn(zarrs::storage::StorageError) -> StoreError + 'a {
    move |e| match e {
        zarrs::storage::StorageError::IOError(source) => StoreError::Io {
            path: path.to_path_buf(),
            action,
            source: io::Error::new(source.kind(), source.to_string()),
        },
        other => StoreError::Zarr {
            path: path.to_path_buf(),
            message: format!("{action}: {other}"),
        },
    }
}

fn filesystem_store(path: &Path) -> Result<Arc<FilesystemStore>, StoreError> {
    FilesystemStore::new(path)
        .map(Arc::new)
        .map_err(|e| match e {
            zarrs::filesystem::FilesystemStoreCreateError::IOError(source) => StoreError::Io {
                path: path.to_path_buf(),
                action: "cannot open the Zarr store",
                source,
            },
            other => zarr_error(path)(other),
        })
}

/// Writes a group's `zarr.json` with `attributes` into `store` at `path` (`dir` for messages).
fn write_group(
    store: Arc<FilesystemStore>,
    dir: &Path,
    path: &str,
    attributes: serde_json::Map<String, serde_json::Value>,
) -> Result<(), StoreError> {
    let group = GroupBuilder::new()
        .attributes(attributes)
        .build(store, path)
        .map_err(zarr_error(dir))?;
    group
        .store_metadata()
        .map_err(storage_error(dir, "cannot write group metadata"))
}

/// What is wrong with the group metadata (`zarr.json`) in `dir`, if anything: missing,
/// unreadable, not JSON, or not a Zarr v3 group. zarr-python cannot open such a group.
pub fn group_problem(dir: &Path) -> Option<String> {
    let path = dir.join("zarr.json");
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Some("zarr.json is missing".into());
        }
        Err(e) => return Some(format!("zarr.json cannot be read: {e}")),
    };
    if !meta.is_file() {
        return Some("zarr.json is not a regular file".into());
    }
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) => return Some(format!("zarr.json cannot be read: {e}")),
    };
    let value: serde_json::Value = match serde_json::from_slice(&text) {
        Ok(value) => value,
        Err(e) => return Some(format!("zarr.json is not JSON: {e}")),
    };
    if value["zarr_format"] != 3 {
        return Some("zarr.json does not say zarr_format 3".into());
    }
    if value["node_type"] != "group" {
        return Some(format!(
            "zarr.json has node_type {}, not \"group\"",
            value["node_type"]
        ));
    }
    None
}

/// Whether `dir/zarr.json` holds an array's metadata: not a group of beamdb's, so never
/// rewritten by a repair.
fn holds_array(dir: &Path) -> bool {
    std::fs::read(dir.join("zarr.json"))
        .ok()
        .and_then(|t| serde_json::from_slice::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v["node_type"] == "array")
}

/// The two groups every store has, with the attributes beamdb writes there (and nothing
/// else, which is why a damaged copy can be rewritten without losing anything).
const STORE_GROUPS: [(&str, &str); 2] = [
    (
        "",
        "beamdb frame store: runs/{run_uid}/{stream}/{field}, axis 0 = frame",
    ),
    ("runs", "one group per run uid"),
];

/// Writes one of the store's own groups. These two files are shared by every ingest into the
/// beamtime, and several may create the store at once: each writes the metadata to a file of
/// its own and renames it into place, so a reader sees no `zarr.json` or a whole one, never
/// the empty file another process is still writing (which it would refuse as damaged).
fn store_group(root: &Path, which: &str, description: &str) -> Result<(), StoreError> {
    let dir = root.join(which);
    std::fs::create_dir_all(&dir).map_err(io_error(&dir, "cannot create folder"))?;
    let metadata = serde_json::json!({
        "zarr_format": 3,
        "node_type": "group",
        "attributes": { "description": description },
    });
    // A hidden name of this process's own, renamed into place: a kill leaves at most that
    // file, which no reader of the store looks at (run groups are folders).
    write_json_durably(&dir.join("zarr.json"), &metadata)
}

/// Writes `value` as the JSON file `path` (a `zarr.json`), whole or not at all: to a hidden
/// file of its own first, synced, then renamed into place, so that a reader (or a crash)
/// sees the previous metadata or the new one, never half of one.
pub fn write_json_durably(path: &Path, value: &serde_json::Value) -> Result<(), StoreError> {
    let text = serde_json::to_vec_pretty(value).map_err(zarr_error(path))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let aside = dir.join(format!(
        ".zarr.json.{}.{nanos}.{:?}.tmp",
        std::process::id(),
        std::thread::current().id()
    ));
    let written = (|| {
        let mut file = std::fs::File::create_new(&aside)?;
        io::Write::write_all(&mut file, &text)?;
        file.sync_all()?;
        std::fs::rename(&aside, path)
    })();
    if let Err(source) = written {
        let _ = std::fs::remove_file(&aside);
        return Err(StoreError::Io {
            path: path.to_path_buf(),
            action: "cannot write metadata",
            source,
        });
    }
    sync_dir(dir).map_err(io_error(dir, "cannot sync"))
}

/// Writes the JSON file `path` whole (to a hidden file, renamed into place) but without
/// syncing: the caller makes it durable with [`sync_paths`], many files in one pass.
pub fn write_json_unsynced(path: &Path, value: &serde_json::Value) -> Result<(), StoreError> {
    let text = serde_json::to_vec_pretty(value).map_err(zarr_error(path))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let aside = dir.join(format!(".zarr.json.{}.tmp", std::process::id()));
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&aside, &text))
        .and_then(|()| std::fs::rename(&aside, path))
        .map_err(io_error(path, "cannot write metadata"))
}

/// Writes `bytes` to `path` (creating its folders) without syncing; see [`sync_paths`].
pub fn write_unsynced(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    write_file(path, bytes).map_err(io_error(path, "cannot write"))
}

/// Makes `files` durable, then every folder from theirs up to `top` (so that their names
/// are durable too), in one parallel pass: one fsync per file in turn made a small run's
/// layout wait on the disk dozens of times.
pub fn sync_paths(files: &[PathBuf], top: &Path) -> Result<(), StoreError> {
    files
        .par_iter()
        .try_for_each(|p| sync_path(p).map_err(io_error(p, "cannot sync to disk")))?;
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for file in files {
        let mut dir = file.parent();
        while let Some(d) = dir {
            if !dirs.insert(d.to_path_buf()) || d == top || !d.starts_with(top) {
                break;
            }
            dir = d.parent();
        }
    }
    dirs.par_iter()
        .try_for_each(|d| sync_path(d).map_err(io_error(d, "cannot sync to disk")))
}

/// fsyncs `dir` and its parent (a run group that was just created must be durable by name).
pub fn sync_dir_of(dir: &Path) -> Result<(), StoreError> {
    sync_dir(dir).map_err(io_error(dir, "cannot sync"))?;
    match dir.parent() {
        Some(parent) => sync_dir(parent).map_err(io_error(parent, "cannot sync")),
        None => Ok(()),
    }
}

/// Creates an empty Zarr v3 store (a root group and `runs/`) at `path`, unless one is there
/// already; refuses one whose group metadata is damaged (zarr-python could not open it).
pub fn create_store(path: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(path).map_err(io_error(path, "cannot create the Zarr store"))?;
    for (which, description) in STORE_GROUPS {
        let dir = path.join(which);
        match std::fs::symlink_metadata(dir.join("zarr.json")) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => store_group(path, which, description)?,
            _ => {
                if let Some(why) = group_problem(&dir) {
                    let path = dir.join("zarr.json");
                    return Err(if holds_array(&dir) {
                        StoreError::NotOurs { path }
                    } else {
                        StoreError::Damaged { path, why }
                    });
                }
            }
        }
    }
    Ok(())
}

/// The store's own group metadata (the root's and `runs/`'s) that zarr-python could not
/// open, as (path relative to the store, what is wrong, whether a repair may rewrite it:
/// not when it holds an array's metadata, which beamdb never writes there).
///
/// Missing metadata in a store that holds no run yet is not a problem: it is what an ingest
/// killed while creating the beamtime leaves (the database first, then the store), and the
/// next ingest writes it. Once a run has landed, the store's metadata was written first.
pub fn store_metadata_problems(root: &Path) -> Vec<(String, String, bool)> {
    let has_runs = run_groups(root).map_or(true, |groups| !groups.is_empty());
    STORE_GROUPS
        .iter()
        .filter_map(|(which, _)| {
            let missing = matches!(
                std::fs::symlink_metadata(root.join(which).join("zarr.json")),
                Err(e) if e.kind() == io::ErrorKind::NotFound
            );
            if missing && !has_runs {
                return None;
            }
            let relative = if which.is_empty() {
                "zarr.json".to_string()
            } else {
                format!("{which}/zarr.json")
            };
            let dir = root.join(which);
            group_problem(&dir).map(|why| (relative, why, !holds_array(&dir)))
        })
        .collect()
}

/// Rewrites the store's group metadata `relative` (`zarr.json` or `runs/zarr.json`) after
/// moving the damaged file to `keep`. Refuses a file that holds an array's metadata (not a
/// group beamdb wrote). Returns false when there was nothing to do.
pub fn rewrite_store_group(root: &Path, relative: &str, keep: &Path) -> Result<bool, StoreError> {
    let Some((which, description)) = STORE_GROUPS.iter().find(|(which, _)| {
        relative
            == if which.is_empty() {
                "zarr.json".to_string()
            } else {
                format!("{which}/zarr.json")
            }
    }) else {
        return Ok(false);
    };
    let dir = root.join(which);
    if group_problem(&dir).is_none() {
        return Ok(false);
    }
    let file = dir.join("zarr.json");
    if holds_array(&dir) {
        return Err(StoreError::NotOurs { path: file });
    }
    if std::fs::symlink_metadata(&file).is_ok() {
        if let Some(parent) = keep.parent() {
            std::fs::create_dir_all(parent).map_err(io_error(parent, "cannot create folder"))?;
        }
        std::fs::rename(&file, keep).map_err(io_error(&file, "cannot move aside"))?;
        if let Some(parent) = keep.parent() {
            sync_dir(parent).map_err(io_error(parent, "cannot sync"))?;
        }
    }
    std::fs::create_dir_all(&dir).map_err(io_error(&dir, "cannot create folder"))?;
    store_group(root, which, description)?;
    sync_dir(&dir).map_err(io_error(&dir, "cannot sync"))?;
    Ok(true)
}

/// How `image_refs.compression_codec` names a compression.
pub fn codec_label(compression: Compression) -> String {
    match compression {
        Compression::None => "none".into(),
        Compression::Zstd { level } => format!("zstd(level={level})"),
        Compression::BitshuffleZstd { level } => {
            format!(
                "blosc(cname=zstd,clevel={},shuffle=bitshuffle)",
                blosc_level(level)
            )
        }
        Compression::BitshuffleLz4 { level } => {
            format!(
                "blosc(cname=lz4,clevel={},shuffle=bitshuffle)",
                blosc_level(level)
            )
        }
    }
}

/// The Zarr v3 `blosc` codec with bit-shuffle, as zarr-python reads it.
fn blosc_codec(cname: &str, level: i32, item_size: usize) -> serde_json::Value {
    serde_json::json!({
        "name": "blosc",
        "configuration": {
            "cname": cname, "clevel": blosc_level(level), "shuffle": "bitshuffle",
            "typesize": item_size, "blocksize": 0
        }
    })
}

/// Blosc levels go to 9; the settings' zstd scale goes to 22.
fn blosc_level(level: i32) -> i32 {
    level.clamp(1, 9)
}

/// A beamtime's frame store and the staging folder beside it (for `--replace`).
///
/// The replace protocol, and why every crash point is recoverable without loss:
/// 1. the replacement is written to `staging/{uid}.new` (the committed frames untouched);
/// 2. `swap_in`: `runs/{uid}` → `staging/{uid}.old`, then `.new` → `runs/{uid}`, synced;
/// 3. the rows are committed (the digest in `runs` now names the replacement);
/// 4. `drop_old`: `.old` is renamed to `staging/{uid}.trash` (synced), then deleted; if the
///    commit failed, `swap_back` trashes `runs/{uid}` and renames `.old` back.
///
/// A `.trash` is never a candidate: a half-deleted tree only ever exists under that name.
/// [`FrameStore::recover`] still proves, from the committed rows, which of `runs/{uid}` and
/// `.old` holds every committed frame before it moves or deletes either, and keeps both when
/// neither is provably whole.
///
/// On S3 nothing is renamed (object stores cannot): every ingest of a run writes a version
/// group of its own (`runs/{uid}@{version}`, [`FrameStore::new_group`]), uploaded whole by
/// [`FrameStore::publish`] before the commit that records it (`ingest::writer::record_group`);
/// `swap_in` does nothing, and `recover`, `drop_old`, `swap_back` and `discard_uncommitted`
/// delete the run's versions that the committed rows do not name (docs/s3.md).
#[derive(Debug, Clone)]
pub struct FrameStore {
    /// The store's root folder; for an S3 store, the local scratch folder where a run's
    /// metadata and layout are put together before they are uploaded.
    root: PathBuf,
    /// The staging folder (replacements, run locks); for an S3 store, the run locks only.
    staging: PathBuf,
    #[cfg(feature = "s3")]
    remote: Option<RemoteStore>,
}

/// Where a beamtime's frame store is. [`location`] is the one place that decides it.
#[derive(Debug, Clone)]
pub enum Location {
    /// `frames.zarr` beside `beamtime.db`, and the staging folder beside it.
    Filesystem { root: PathBuf, staging: PathBuf },
    /// `{url}/{beamtime_id}/frames.zarr` on S3-compatible storage; run locks stay local.
    #[cfg(feature = "s3")]
    S3 {
        settings: crate::settings::S3Settings,
        beamtime: String,
        locks: PathBuf,
    },
}

/// Where beamtime `id`'s frame store is, by the `[frames]` settings.
pub fn location(frames: &FramesSettings, layout: &Layout, id: &SafeName) -> Location {
    match &frames.s3 {
        #[cfg(feature = "s3")]
        Some(settings) => Location::S3 {
            settings: settings.clone(),
            beamtime: id.to_string(),
            locks: layout.frames_staging(id),
        },
        _ => Location::Filesystem {
            root: layout.frames_store(id),
            staging: layout.frames_staging(id),
        },
    }
}

impl Location {
    /// The store as users are told about it: a path, or an `s3://` URL (never a secret).
    pub fn display(&self) -> String {
        match self {
            Location::Filesystem { root, .. } => root.display().to_string(),
            #[cfg(feature = "s3")]
            Location::S3 {
                settings, beamtime, ..
            } => format!("{}/{beamtime}/frames.zarr", settings.url()),
        }
    }

    /// The filesystem store's root and staging folder; an S3 store is refused (exit 2) for
    /// `command`, which does not work on one yet (`why`), before anything is touched.
    pub fn filesystem(
        &self,
        command: &'static str,
        why: &'static str,
    ) -> Result<(&Path, &Path), StoreError> {
        #[cfg(not(feature = "s3"))]
        let _ = (command, why);
        match self {
            Location::Filesystem { root, staging } => Ok((root, staging)),
            #[cfg(feature = "s3")]
            Location::S3 { .. } => Err(StoreError::RemoteUnsupported {
                url: self.display(),
                command,
                why,
            }),
        }
    }
}

/// Creates an empty store at `location` unless one is there (see [`create_store`]); for an
/// S3 store, checks the bucket and the credentials first (exit 2 naming what to fix).
pub fn create_at(location: &Location) -> Result<(), StoreError> {
    match location {
        Location::Filesystem { root, .. } => create_store(root),
        #[cfg(feature = "s3")]
        Location::S3 {
            settings, beamtime, ..
        } => {
            let client = s3::Remote::connect(settings)?;
            let key = client.store_key(beamtime);
            client.check(&key)?;
            create_remote_store(&client, &key)
        }
    }
}

/// The store's own two groups as objects, unless they are there.
#[cfg(feature = "s3")]
fn create_remote_store(client: &s3::Remote, key: &str) -> Result<(), StoreError> {
    for (which, description) in STORE_GROUPS {
        let object = if which.is_empty() {
            format!("{key}/zarr.json")
        } else {
            format!("{key}/{which}/zarr.json")
        };
        if !client.exists(&object)? {
            let metadata = serde_json::json!({
                "zarr_format": 3,
                "node_type": "group",
                "attributes": { "description": description },
            });
            let text =
                serde_json::to_vec_pretty(&metadata).map_err(zarr_error(Path::new(&object)))?;
            client.put(&object, text)?;
        }
    }
    Ok(())
}

/// An S3 store as a [`FrameStore`] holds it.
#[cfg(feature = "s3")]
#[derive(Debug, Clone)]
struct RemoteStore {
    client: Arc<s3::Remote>,
    /// `{prefix}/{beamtime}/frames.zarr`.
    key: String,
    /// Removed when the last clone of the store goes.
    _scratch: Arc<Scratch>,
}

/// A local folder of this process's own, removed when dropped.
#[cfg(feature = "s3")]
#[derive(Debug)]
struct Scratch(PathBuf);

#[cfg(feature = "s3")]
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(feature = "s3")]
impl RemoteStore {
    /// Deletes every version group of run `uid` but `keep` (the committed one, if any).
    /// Returns whether anything was deleted.
    fn collect(&self, uid: &str, keep: Option<&str>) -> Result<bool, StoreError> {
        let mut deleted = false;
        for group in self.client.list_dirs(&format!("{}/runs", self.key))? {
            if version_group_uid(&group) == Some(uid) && Some(group.as_str()) != keep {
                self.client
                    .delete_prefix(&format!("{}/runs/{group}", self.key))?;
                deleted = true;
            }
        }
        Ok(deleted)
    }
}

/// Where [`FrameStore::begin`] writes a run's frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Straight into `runs/{uid}`: the run is new.
    InPlace,
    /// Into the staging folder, moved into place by [`FrameStore::swap_in`]: a replacement.
    Staging,
}

/// What [`FrameStore::recover`] found and did about an interrupted ingest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovered {
    Nothing,
    /// A group no committed run owns (an ingest was killed before its commit): removed.
    RemovedLeftover,
    /// A replacement was killed after moving frames: the committed run's frames put back.
    RestoredReplaced,
    /// A replacement was killed after its commit: the old frames removed.
    FinishedReplace,
}

/// One committed frame (an `image_refs` row), as recovery and `verify` check it.
#[derive(Debug, Clone)]
pub struct FrameRef {
    /// The array's path inside the store (`runs/{uid}/{stream}/{field}`).
    pub array: String,
    pub index: i64,
    /// The dtype as recorded (numpy notation), for messages.
    pub dtype: String,
    /// The recorded dtype as a Zarr v3 data type name; `None` when it is not one beamdb knows.
    pub data_type: Option<String>,
    /// The recorded frame shape (JSON list), if any.
    pub frame_shape: Option<String>,
}

/// The committed run that recovery must keep whole.
pub struct Committed<'a> {
    /// `runs.content_digest` (`None`: stored without one).
    pub digest: Option<&'a str>,
    /// The run group the committed rows name, on an S3 store (see [`committed_group`]).
    pub group: Option<&'a str>,
}

/// Whether `dir` is provably a whole copy of committed run `uid`: its group records the
/// committed digest, and every frame the committed rows name is there, readable and decodable,
/// with the recorded shape and dtype, inside groups zarr-python can open. `Err` says why not.
fn prove_whole(
    dir: &Path,
    uid: &SafeName,
    committed: &Committed<'_>,
    frames: &[FrameRef],
) -> Result<(), String> {
    if !dir.is_dir() {
        return Err(format!("{} is missing", dir.display()));
    }
    if let Some(why) = group_problem(dir) {
        return Err(format!("{}: {why}", dir.display()));
    }
    if FrameStore::digest_at(dir).as_deref() != committed.digest {
        return Err(format!(
            "{}: its content digest is not the committed run's",
            dir.display()
        ));
    }
    let mut inspector = Inspector::open(dir).map_err(|e| e.to_string())?;
    let prefix = format!("runs/{uid}/");
    for frame in frames {
        let Some(inside) = frame.array.strip_prefix(&prefix) else {
            return Err(format!(
                "image_ref {} points outside the run's group",
                frame.array
            ));
        };
        if let Some(problem) = inspector.frame_problem(inside, frame, 0, true) {
            return Err(format!(
                "{}/{inside} frame {}: {problem}",
                dir.display(),
                frame.index
            ));
        }
    }
    Ok(())
}

impl FrameStore {
    /// Opens the store at `root` (creating it when missing), with `staging` for replacements.
    /// A store whose group metadata zarr-python cannot open is refused, not written into.
    /// For an S3 store: checks the bucket and the credentials once, here (exit 2 naming
    /// the setting), and creates the store's own groups when missing.
    pub fn open(location: &Location) -> Result<FrameStore, StoreError> {
        Self::open_at(location, true)
    }

    /// The store at `location` as it is, creating nothing (for `verify`); an S3 store's
    /// bucket and credentials are still checked (exit 2 naming the setting).
    pub fn existing_at(location: &Location) -> Result<FrameStore, StoreError> {
        Self::open_at(location, false)
    }

    fn open_at(location: &Location, create: bool) -> Result<FrameStore, StoreError> {
        match location {
            Location::Filesystem { root, staging } if !create => {
                Ok(FrameStore::existing(root, staging))
            }
            Location::Filesystem { root, staging } => {
                create_store(root)?;
                Ok(FrameStore {
                    root: root.to_path_buf(),
                    staging: staging.to_path_buf(),
                    #[cfg(feature = "s3")]
                    remote: None,
                })
            }
            #[cfg(feature = "s3")]
            Location::S3 {
                settings,
                beamtime,
                locks,
            } => {
                let client = s3::Remote::connect(settings)?;
                let key = client.store_key(beamtime);
                client.check(&key)?;
                if create {
                    create_remote_store(&client, &key)?;
                }
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                let scratch = std::env::temp_dir()
                    .join(format!("beamdb-frames-{}-{nanos}", std::process::id()));
                std::fs::create_dir_all(scratch.join("runs"))
                    .map_err(io_error(&scratch, "cannot create a scratch folder"))?;
                Ok(FrameStore {
                    root: scratch.clone(),
                    staging: locks.clone(),
                    remote: Some(RemoteStore {
                        client,
                        key,
                        _scratch: Arc::new(Scratch(scratch)),
                    }),
                })
            }
        }
    }

    /// The store's root folder (`frames.zarr`); for an S3 store, the local folder where a
    /// run's metadata is put together before [`FrameStore::publish`] uploads it.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The name under `runs/` of the group a new ingest of `uid` writes: the uid itself on
    /// the filesystem (a replacement is staged and renamed into place), a version of its own
    /// on S3 (`{uid}@{version}`: nothing is ever renamed there).
    pub fn new_group(&self, uid: &SafeName) -> String {
        #[cfg(feature = "s3")]
        if self.remote.is_some() {
            return s3::group_name(uid.as_str());
        }
        uid.to_string()
    }

    /// Whether the store is on S3 (each ingest of a run a version of its own).
    pub fn is_remote(&self) -> bool {
        #[cfg(feature = "s3")]
        if self.remote.is_some() {
            return true;
        }
        false
    }

    /// Uploads run group `group`, which the run's frames and layout were written into under
    /// [`FrameStore::root`], to the S3 store: every object, then the run group's `zarr.json`
    /// (the marker) last; a no-op on the filesystem, where the group is in place already.
    /// Called before the commit: no committed row ever names an object that is not there.
    pub fn publish(&self, group: &str) -> Result<(), StoreError> {
        #[cfg(feature = "s3")]
        if let Some(remote) = &self.remote {
            let dir = self.root.join("runs").join(group);
            let mut files = Vec::new();
            list_files(&dir, &mut files).map_err(io_error(&dir, "cannot list"))?;
            let marker = dir.join("zarr.json");
            let key_of = |file: &Path| -> String {
                let inside = file.strip_prefix(&dir).unwrap_or(file);
                format!("{}/runs/{group}/{}", remote.key, inside.to_string_lossy())
            };
            let upload = |file: &PathBuf| -> Result<(), StoreError> {
                let bytes = std::fs::read(file).map_err(io_error(file, "cannot read"))?;
                remote.client.put(&key_of(file), bytes)
            };
            files
                .par_iter()
                .filter(|f| **f != marker)
                .try_for_each(upload)?;
            if marker.is_file() {
                upload(&marker)?;
            }
            return remove_tree(&dir);
        }
        let _ = group;
        Ok(())
    }

    /// On an S3 store, the names of the groups under `runs/` (each a version of a run);
    /// `None` for a filesystem store.
    pub fn remote_groups(&self) -> Result<Option<Vec<String>>, StoreError> {
        #[cfg(feature = "s3")]
        if let Some(remote) = &self.remote {
            return remote
                .client
                .list_dirs(&format!("{}/runs", remote.key))
                .map(Some);
        }
        Ok(None)
    }

    /// On an S3 store, every object under run group `group`, as keys relative to the group
    /// (`zarr.json`, `primary/det/c/0/0/0`); empty for a filesystem store.
    pub fn remote_objects(&self, group: &str) -> Result<Vec<String>, StoreError> {
        #[cfg(feature = "s3")]
        if let Some(remote) = &self.remote {
            let prefix = format!("{}/runs/{group}", remote.key);
            let keys = remote.client.list_keys(&prefix)?;
            return Ok(keys
                .iter()
                .filter_map(|k| k.strip_prefix(&prefix))
                .map(|k| k.trim_start_matches('/').to_string())
                .collect());
        }
        let _ = group;
        Ok(Vec::new())
    }

    /// On an S3 store, object `relative` of run group `group` (`None`: not there, or a
    /// filesystem store).
    pub fn remote_object(
        &self,
        group: &str,
        relative: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        #[cfg(feature = "s3")]
        if let Some(remote) = &self.remote {
            return remote
                .client
                .get(&format!("{}/runs/{group}/{relative}", remote.key));
        }
        let _ = (group, relative);
        Ok(None)
    }

    /// Run group `group` as users are told about it: its `s3://` URL, or its path.
    pub fn group_display(&self, group: &str) -> String {
        #[cfg(feature = "s3")]
        if let Some(remote) = &self.remote {
            return remote
                .client
                .url_of(&format!("{}/runs/{group}", remote.key));
        }
        self.root.join("runs").join(group).display().to_string()
    }

    /// The array path of a run's field inside the store (what `image_refs.zarr_group`
    /// holds), in run group `group` (see [`FrameStore::new_group`]).
    pub fn array_path(group: &str, stream: &SafeName, field: &str) -> String {
        format!("runs/{group}/{stream}/{field}")
    }

    /// The lock file of one run's ingest (see `lock::run_lock`).
    pub fn run_lock_path(&self, uid: &SafeName) -> PathBuf {
        self.staging.join(format!("{uid}.lock"))
    }

    fn run_dir(&self, uid: &SafeName) -> PathBuf {
        self.root.join("runs").join(uid.as_str())
    }

    fn new_dir(&self, uid: &SafeName) -> PathBuf {
        self.staging.join(format!("{uid}.{}", Staged::New.suffix()))
    }

    fn old_dir(&self, uid: &SafeName) -> PathBuf {
        self.staging.join(format!("{uid}.{}", Staged::Old.suffix()))
    }

    fn trash_dir(&self, uid: &SafeName) -> PathBuf {
        self.staging
            .join(format!("{uid}.{}", Staged::Trash.suffix()))
    }

    /// Whether an interrupted `--replace` of `uid` left the committed frames' previous copy
    /// (then [`FrameStore::recover`] needs the committed frames to decide).
    pub fn has_old(&self, uid: &SafeName) -> bool {
        std::fs::symlink_metadata(self.old_dir(uid)).is_ok()
    }

    /// The content digest recorded in a run group's attributes, if the group is there.
    fn digest_at(dir: &Path) -> Option<String> {
        let text = std::fs::read_to_string(dir.join("zarr.json")).ok()?;
        let meta: serde_json::Value = serde_json::from_str(&text).ok()?;
        meta["attributes"]["beamdb"]["content_digest"]
            .as_str()
            .map(str::to_string)
    }

    /// Removes `dir` so that no half-deleted copy is ever left under a name recovery looks
    /// at: renamed to the run's trash name first (synced), then deleted.
    fn trash(&self, uid: &SafeName, dir: &Path) -> Result<bool, StoreError> {
        if std::fs::symlink_metadata(dir).is_err() {
            return Ok(false);
        }
        let trash = self.trash_dir(uid);
        remove_tree(&trash)?;
        std::fs::create_dir_all(&self.staging)
            .map_err(io_error(&self.staging, "cannot create the staging folder"))?;
        std::fs::rename(dir, &trash).map_err(io_error(dir, "cannot move to the trash name"))?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent).map_err(io_error(parent, "cannot sync"))?;
        }
        sync_dir(&self.staging).map_err(io_error(&self.staging, "cannot sync"))?;
        remove_tree(&trash)?;
        Ok(true)
    }

    /// Cleans up after an ingest of `uid` that was killed, given the committed run (`None`:
    /// no committed run). `frames` loads the committed run's frames; it is called only when
    /// two copies exist and the committed rows must decide which one is whole. Nothing that
    /// may be the committed frames is moved or deleted without that proof.
    pub fn recover<E: From<StoreError>>(
        &self,
        uid: &SafeName,
        committed: Option<Committed<'_>>,
        frames: impl FnOnce() -> Result<Vec<FrameRef>, E>,
    ) -> Result<Recovered, E> {
        // On S3 every version group but the committed one is a leftover: none was ever
        // committed, so deleting them cannot lose a committed frame.
        #[cfg(feature = "s3")]
        if let Some(remote) = &self.remote {
            let keep = committed.as_ref().and_then(|c| c.group);
            return Ok(if remote.collect(uid.as_str(), keep)? {
                Recovered::RemovedLeftover
            } else {
                Recovered::Nothing
            });
        }
        // Never committed frames, by the protocol: `.new` is renamed into place before the
        // commit, and `.trash` only ever holds what was already decided against.
        remove_tree(&self.new_dir(uid))?;
        remove_tree(&self.trash_dir(uid))?;
        let old = self.old_dir(uid);
        let run = self.run_dir(uid);
        let Some(committed) = committed else {
            // No committed run owns any of it (a quarantine moves `.old` along with the run).
            let mut done = Recovered::Nothing;
            if self.trash(uid, &old)? {
                done = Recovered::FinishedReplace;
            }
            if self.trash(uid, &run)? {
                done = Recovered::RemovedLeftover;
            }
            return Ok(done);
        };
        if !self.has_old(uid) {
            return Ok(Recovered::Nothing);
        }
        let frames = frames()?;
        let run_whole = prove_whole(&run, uid, &committed, &frames);
        if run_whole.is_ok() {
            self.trash(uid, &old)?;
            return Ok(Recovered::FinishedReplace);
        }
        let old_whole = prove_whole(&old, uid, &committed, &frames);
        if old_whole.is_ok() {
            self.trash(uid, &run)?;
            std::fs::rename(&old, &run).map_err(io_error(&old, "cannot move back into place"))?;
            sync_dir(&self.root.join("runs"))
                .map_err(io_error(&self.root.join("runs"), "cannot sync"))?;
            sync_dir(&self.staging).map_err(io_error(&self.staging, "cannot sync"))?;
            return Ok(Recovered::RestoredReplaced);
        }
        let why = [run_whole, old_whole]
            .into_iter()
            .filter_map(Result::err)
            .collect::<Vec<_>>()
            .join("; ");
        Err(StoreError::Undecided { run, old, why }.into())
    }

    /// Starts writing `uid`'s frames. Call [`FrameStore::recover`] first.
    pub fn begin(
        &self,
        uid: &SafeName,
        group: &str,
        target: Target,
        compression: Compression,
    ) -> Result<RunFrames, StoreError> {
        let dir = match target {
            _ if self.is_remote() => self.root.join("runs").join(group),
            Target::InPlace => self.run_dir(uid),
            Target::Staging => self.new_dir(uid),
        };
        std::fs::create_dir_all(&dir).map_err(io_error(&dir, "cannot create the run's group"))?;
        let store = filesystem_store(&dir)?;
        Ok(RunFrames {
            #[cfg(feature = "s3")]
            remote: self
                .remote
                .as_ref()
                .map(|r| (r.client.clone(), format!("{}/runs/{group}", r.key))),
            dir,
            store,
            arrays: Vec::new(),
            streams: Vec::new(),
            compression,
            options: CodecOptions::default().with_store_empty_chunks(true),
            written: Mutex::new(Vec::new()),
        })
    }

    /// Moves a staged replacement of `uid` into place; the old frames go to staging until
    /// [`FrameStore::drop_old`] (after the commit) or [`FrameStore::swap_back`] (if it failed).
    pub fn swap_in(&self, uid: &SafeName) -> Result<(), StoreError> {
        if self.is_remote() {
            // Nothing moves on S3: the commit that names the new version is the switch.
            return Ok(());
        }
        let run = self.run_dir(uid);
        let old = self.old_dir(uid);
        if std::fs::symlink_metadata(&run).is_ok() {
            std::fs::rename(&run, &old).map_err(io_error(&run, "cannot move aside"))?;
        }
        let new = self.new_dir(uid);
        if std::fs::symlink_metadata(&new).is_ok() {
            std::fs::rename(&new, &run).map_err(io_error(&new, "cannot move into place"))?;
        }
        // The renames must be on disk before the commit that relies on them.
        let runs = self.root.join("runs");
        sync_dir(&runs).map_err(io_error(&runs, "cannot sync"))?;
        sync_dir(&self.staging).map_err(io_error(&self.staging, "cannot sync"))
    }

    /// After a failed commit of a new run (no committed run of this uid): whatever was
    /// written into `runs/{uid}` goes (through the trash name).
    pub fn discard_uncommitted(&self, uid: &SafeName) -> Result<(), StoreError> {
        #[cfg(feature = "s3")]
        if let Some(remote) = &self.remote {
            return remote.collect(uid.as_str(), None).map(|_| ());
        }
        self.trash(uid, &self.run_dir(uid)).map(|_| ())
    }

    /// After the replacement's commit: the previous frames go (through the trash name; on
    /// S3, every version of the run but the committed `group`).
    pub fn drop_old(&self, uid: &SafeName, group: &str) -> Result<(), StoreError> {
        #[cfg(feature = "s3")]
        if let Some(remote) = &self.remote {
            return remote.collect(uid.as_str(), Some(group)).map(|_| ());
        }
        let _ = group;
        self.trash(uid, &self.old_dir(uid)).map(|_| ())
    }

    /// After a failed `swap_in` or a failed commit: the replacement goes (through the trash
    /// name) and the committed frames come back into place. `committed` is the committed
    /// run's digest, `replacement` the replacement's.
    pub fn swap_back(
        &self,
        uid: &SafeName,
        committed: Option<&str>,
        committed_group: Option<&str>,
        replacement: &str,
    ) -> Result<(), StoreError> {
        #[cfg(feature = "s3")]
        if let Some(remote) = &self.remote {
            return remote.collect(uid.as_str(), committed_group).map(|_| ());
        }
        let _ = committed_group;
        let run = self.run_dir(uid);
        let old = self.old_dir(uid);
        // Never committed, whether or not it was moved into place.
        remove_tree(&self.new_dir(uid))?;
        if std::fs::symlink_metadata(&old).is_err() {
            // Nothing was moved aside: either the committed run had no frames, and the group
            // in place (if any) is the replacement's, or swap_in failed before it moved the
            // committed frames, and the group in place is the committed one. Only the
            // replacement's digest tells them apart; a group that does not carry it stays.
            let digest = Self::digest_at(&run);
            if digest.as_deref() == Some(replacement) && digest.as_deref() != committed {
                self.trash(uid, &run)?;
            }
            return Ok(());
        }
        // swap_in moved the committed frames aside: what is in place is the replacement.
        self.trash(uid, &run)?;
        std::fs::rename(&old, &run).map_err(io_error(&old, "cannot move back into place"))?;
        let runs = self.root.join("runs");
        sync_dir(&runs).map_err(io_error(&runs, "cannot sync"))?;
        sync_dir(&self.staging).map_err(io_error(&self.staging, "cannot sync"))
    }
}

/// The staging folder's entries besides lock files, by suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Staged {
    /// A replacement being written.
    New,
    /// The committed frames moved aside by `swap_in`.
    Old,
    /// Being deleted.
    Trash,
}

impl Staged {
    fn suffix(self) -> &'static str {
        match self {
            Staged::New => "new",
            Staged::Old => "old",
            Staged::Trash => "trash",
        }
    }

    fn parse(name: &str) -> Option<(&str, Staged)> {
        [Staged::New, Staged::Old, Staged::Trash]
            .into_iter()
            .find_map(|s| {
                name.strip_suffix(s.suffix())
                    .and_then(|n| n.strip_suffix('.'))
                    .map(|uid| (uid, s))
            })
    }
}

/// `remove_dir_all` where a missing path is fine.
fn remove_tree(dir: &Path) -> Result<(), StoreError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
            std::fs::remove_file(dir).map_err(io_error(dir, "cannot remove"))
        }
        Err(e) => Err(io_error(dir, "cannot remove")(e)),
    }
}

/// fsyncs a folder, so that the entries created or renamed in it survive a power cut.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::File::open(dir) {
        Ok(f) => f.sync_all(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// One field's stack of frames.
struct Stack {
    array: Array<FilesystemStore>,
    frame_shape: Vec<u64>,
    len: u64,
}

/// The frames of one run being written. Frames may be stored from many threads at once;
/// array metadata is written once, by [`RunFrames::finish`], when the final lengths are known.
pub struct RunFrames {
    /// On S3: the client, and the key of the run's version group, where each chunk is
    /// uploaded as it is encoded (the metadata is written in `dir`, then published).
    #[cfg(feature = "s3")]
    remote: Option<(Arc<s3::Remote>, String)>,
    dir: PathBuf,
    store: Arc<FilesystemStore>,
    arrays: Vec<Stack>,
    streams: Vec<String>,
    compression: Compression,
    options: CodecOptions,
    /// Chunk files written and not yet made durable (see the module comment).
    written: Mutex<Vec<PathBuf>>,
}

/// What a new stack is.
pub struct StackSpec<'a> {
    pub stream: &'a SafeName,
    pub field: &'a str,
    /// zarr v3 data type name (`uint16`).
    pub data_type: &'a str,
    pub item_size: usize,
    pub frame_shape: &'a [u64],
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

impl RunFrames {
    fn zarr(&self) -> impl Fn(String) -> StoreError + '_ {
        zarr_error(&self.dir)
    }

    /// Adds an array for a field; returns its number for [`RunFrames::store`].
    pub fn add_stack(&mut self, spec: StackSpec<'_>) -> Result<usize, StoreError> {
        let mut shape = vec![0u64];
        shape.extend_from_slice(spec.frame_shape);
        let mut chunk = vec![1u64];
        chunk.extend(spec.frame_shape.iter().map(|&d| d.max(1)));
        let mut codecs = vec![serde_json::json!({
            "name": "bytes", "configuration": {"endian": "little"}
        })];
        match self.compression {
            Compression::None => {}
            Compression::Zstd { level } => codecs.push(serde_json::json!({
                "name": "zstd", "configuration": {"level": level, "checksum": false}
            })),
            Compression::BitshuffleZstd { level } => {
                codecs.push(blosc_codec("zstd", level, spec.item_size))
            }
            Compression::BitshuffleLz4 { level } => {
                codecs.push(blosc_codec("lz4", level, spec.item_size))
            }
        }
        let fill_value = match spec.data_type {
            "bool" => serde_json::json!(false),
            t if t.starts_with("float") => serde_json::json!(0.0),
            _ => serde_json::json!(0),
        };
        let metadata = serde_json::json!({
            "zarr_format": 3,
            "node_type": "array",
            "shape": shape,
            "data_type": spec.data_type,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunk}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": fill_value,
            "codecs": codecs,
            "attributes": spec.attributes,
        });
        let metadata: ArrayMetadataV3 =
            serde_json::from_value(metadata).map_err(|e| self.zarr()(e.to_string()))?;
        let path = format!("/{}/{}", spec.stream, spec.field);
        let array =
            Array::new_with_metadata(self.store.clone(), &path, ArrayMetadata::V3(metadata))
                .map_err(|e| self.zarr()(e.to_string()))?;
        if !self.streams.iter().any(|s| s == spec.stream.as_str()) {
            self.streams.push(spec.stream.to_string());
        }
        self.arrays.push(Stack {
            array,
            frame_shape: spec.frame_shape.to_vec(),
            len: 0,
        });
        Ok(self.arrays.len() - 1)
    }

    /// Makes room for `len` frames in `stack` (in memory only; no metadata is written).
    pub fn reserve(&mut self, stack: usize, len: u64) -> Result<(), StoreError> {
        let fail = zarr_error(&self.dir);
        let s = self
            .arrays
            .get_mut(stack)
            .ok_or_else(|| fail(format!("internal error: no stack {stack}")))?;
        if len > s.len {
            let mut shape = vec![len];
            shape.extend_from_slice(&s.frame_shape);
            s.array.set_shape(shape).map_err(|e| fail(e.to_string()))?;
            s.len = len;
        }
        Ok(())
    }

    /// Encodes and writes frame `index` of `stack`. Safe to call from many threads. The chunk
    /// is durable only after [`RunFrames::finish`].
    pub fn store(&self, stack: usize, index: u64, bytes: Vec<u8>) -> Result<(), StoreError> {
        let fail = zarr_error(&self.dir);
        let s = self
            .arrays
            .get(stack)
            .ok_or_else(|| fail(format!("internal error: no stack {stack}")))?;
        let mut chunk = vec![index];
        chunk.extend(std::iter::repeat_n(0, s.frame_shape.len()));
        let array = &s.array;
        let shape = array.chunk_shape(&chunk).map_err(|e| fail(e.to_string()))?;
        let encoded = array
            .codecs()
            .encode(
                ArrayBytes::new_flen(bytes),
                &shape,
                array.data_type(),
                array.fill_value(),
                &self.options,
            )
            .map_err(|e| fail(e.to_string()))?;
        #[cfg(feature = "s3")]
        if let Some((client, key)) = &self.remote {
            let object = format!(
                "{key}/{}",
                array.chunk_key(&chunk).as_str().trim_start_matches('/')
            );
            return client.put(&object, encoded.to_vec());
        }
        let path = self.dir.join(array.chunk_key(&chunk).as_str());
        write_file(&path, &encoded).map_err(io_error(&path, "cannot write the frame"))?;
        if let Ok(mut written) = self.written.lock() {
            written.push(path);
        }
        Ok(())
    }

    /// Makes every chunk written so far durable: each file, then each directory that gained
    /// an entry (a new file's name is only durable once its directory is synced).
    fn sync_chunks(&self) -> Result<(), StoreError> {
        let files = match self.written.lock() {
            Ok(mut written) => std::mem::take(&mut *written),
            Err(_) => {
                return Err(self.zarr()(
                    "internal error: a frame writer panicked".into(),
                ));
            }
        };
        let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
        for file in &files {
            let mut dir = file.parent();
            while let Some(d) = dir {
                if !dirs.insert(d.to_path_buf()) || d == self.dir.parent().unwrap_or(&self.dir) {
                    break;
                }
                dir = d.parent();
            }
        }
        files
            .par_iter()
            .chain(dirs.par_iter())
            .try_for_each(|path| sync_path(path).map_err(io_error(path, "cannot sync to disk")))
    }

    /// Replaces an array attribute (e.g. the list of descriptors that fed it).
    pub fn set_attribute(&mut self, stack: usize, key: &str, value: serde_json::Value) {
        if let Some(s) = self.arrays.get_mut(stack) {
            s.array.attributes_mut().insert(key.to_string(), value);
        }
    }

    /// Writes the metadata: each array with its final length, each stream's group, and the
    /// run's group with `attributes` (which must carry the run's content digest).
    pub fn finish(
        &mut self,
        lens: &[u64],
        attributes: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), StoreError> {
        self.sync_chunks()?;
        let dir = &self.dir;
        for (stack, &len) in self.arrays.iter_mut().zip(lens) {
            let mut shape = vec![len];
            shape.extend_from_slice(&stack.frame_shape);
            stack.array.set_shape(shape).map_err(zarr_error(dir))?;
            stack
                .array
                .store_metadata()
                .map_err(storage_error(dir, "cannot write array metadata"))?;
        }
        for stream in &self.streams {
            write_group(
                self.store.clone(),
                &dir.join(stream),
                &format!("/{stream}"),
                serde_json::Map::new(),
            )?;
        }
        // The run group last: its digest is what marks the frames as complete.
        write_group(self.store.clone(), dir, "/", attributes)?;
        // On disk before the rows are committed: after a power cut, rows without frames would
        // break "no image_ref points at a missing frame"; frames without rows are only a
        // leftover that the next ingest or `verify --repair` removes. The chunks were synced
        // above and zarrs syncs each metadata file it writes; what is left is the folders
        // that gained a zarr.json, and the `runs/` folder that gained this run.
        let mut dirs: BTreeSet<PathBuf> = BTreeSet::from([self.dir.clone()]);
        dirs.extend(self.streams.iter().map(|s| self.dir.join(s)));
        dirs.extend(self.arrays.iter().map(|s| {
            self.dir
                .join(s.array.path().as_str().trim_start_matches('/'))
        }));
        dirs.extend(self.dir.parent().map(Path::to_path_buf));
        dirs.par_iter()
            .try_for_each(|d| sync_dir(d).map_err(io_error(d, "cannot sync to disk")))
    }

    /// Removes everything written for this run.
    pub fn discard(&self) -> Result<(), StoreError> {
        #[cfg(feature = "s3")]
        if let Some((client, key)) = &self.remote {
            remove_tree(&self.dir)?;
            return client.delete_prefix(key).map(|_| ());
        }
        remove_tree(&self.dir)
    }
}

/// Every file under `dir` (recursively) into `files`.
#[cfg(feature = "s3")]
fn list_files(dir: &Path, files: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            list_files(&entry.path(), files)?;
        } else {
            files.push(entry.path());
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` (creating its directories), without syncing.
fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)
}

/// `fsync` of a file or directory (opened read-only: Linux syncs through any descriptor).
/// Unlike [`sync_dir`], a missing path is an error: these are chunks this run just wrote.
fn sync_path(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

/// One frame array as `verify` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrayInfo {
    /// `[n_frames, *frame_shape]`.
    pub shape: Vec<u64>,
    /// The zarr v3 data type name (`uint16`).
    pub data_type: String,
    /// The shape of every chunk when the chunk grid is regular (`None` for any other grid).
    pub chunk_shape: Option<Vec<u64>>,
}

/// Read-only access to a frame store (or one run's group) for `verify` and recovery: opens
/// nothing for writing and creates nothing, so that it works on a read-only data root.
pub struct Inspector {
    root: PathBuf,
    store: zarrs::storage::ReadableStorage,
    /// Whether `root` is a folder on this machine (not an S3 store read through zarrs).
    local: bool,
    arrays: HashMap<String, Result<Array<dyn zarrs::storage::ReadableStorageTraits>, String>>,
    /// Group metadata already judged (path inside the store → problem).
    groups: HashMap<String, Option<String>>,
}

impl Inspector {
    pub fn open(root: &Path) -> Result<Inspector, StoreError> {
        Ok(Inspector {
            root: root.to_path_buf(),
            store: filesystem_store(root)?,
            local: true,
            arrays: HashMap::new(),
            groups: HashMap::new(),
        })
    }

    /// Read-only access to `store`'s frames wherever they are: on S3 through zarrs' object
    /// store adapter (group metadata is then judged by `verify`'s own S3 checks, not here).
    pub fn open_store(store: &FrameStore) -> Result<Inspector, StoreError> {
        #[cfg(feature = "s3")]
        if let Some(remote) = &store.remote {
            return Ok(Inspector {
                root: PathBuf::from(remote.client.url_of(&remote.key)),
                store: remote.client.zarrs_storage(&remote.key),
                local: false,
                arrays: HashMap::new(),
                groups: HashMap::new(),
            });
        }
        Inspector::open(&store.root)
    }

    fn array(
        &mut self,
        path: &str,
    ) -> Result<&Array<dyn zarrs::storage::ReadableStorageTraits>, String> {
        if !self.arrays.contains_key(path) {
            let opened = if !self.local || self.root.join(path).join("zarr.json").is_file() {
                Array::open(self.store.clone(), &format!("/{path}")).map_err(|e| e.to_string())
            } else {
                Err("no such array (its zarr.json is missing)".to_string())
            };
            self.arrays.insert(path.to_string(), opened);
        }
        match self.arrays.get(path) {
            Some(Ok(array)) => Ok(array),
            Some(Err(e)) => Err(e.clone()),
            None => Err("no such array".to_string()),
        }
    }

    /// The shape and data type of the array at `path` (relative to the store root).
    pub fn array_info(&mut self, path: &str) -> Result<ArrayInfo, String> {
        let array = self.array(path)?;
        let meta = serde_json::to_value(array.metadata()).map_err(|e| e.to_string())?;
        let grid = &meta["chunk_grid"];
        let chunk_shape = (grid["name"] == "regular")
            .then(|| {
                serde_json::from_value::<Vec<u64>>(grid["configuration"]["chunk_shape"].clone())
                    .ok()
            })
            .flatten();
        Ok(ArrayInfo {
            shape: array.shape().to_vec(),
            data_type: meta["data_type"]
                .as_str()
                .map_or_else(|| meta["data_type"].to_string(), str::to_string),
            chunk_shape,
        })
    }

    /// Whether frame `index` of the array at `path` is on disk. With `decode`, it is also
    /// read and decompressed (catches truncated or damaged chunks, at the cost of reading
    /// every byte).
    pub fn frame(&mut self, path: &str, index: u64, decode: bool) -> Result<bool, String> {
        use zarrs::storage::ReadableStorageTraits;
        let store = self.store.clone();
        let array = self.array(path)?;
        let mut chunk = vec![0u64; array.dimensionality()];
        if let Some(first) = chunk.first_mut() {
            *first = index;
        }
        if !decode {
            let key = array.chunk_key(&chunk);
            return store
                .size_key(&key)
                .map(|size| size.is_some())
                .map_err(|e| e.to_string());
        }
        array
            .retrieve_chunk_if_exists_opt::<ArrayBytes<'static>>(&chunk, &CodecOptions::default())
            .map(|bytes| bytes.is_some())
            .map_err(|e| e.to_string())
    }

    /// The store key (a path relative to the store's root) of the chunk that holds frame
    /// `index` of the array at `path`: a reader on a document's behalf checks that file stays
    /// inside its root before reading it.
    pub fn chunk_key(&mut self, path: &str, index: u64) -> Result<String, String> {
        let array = self.array(path)?;
        let mut chunk = vec![0u64; array.dimensionality()];
        if let Some(first) = chunk.first_mut() {
            *first = index;
        }
        Ok(array.chunk_key(&chunk).to_string())
    }

    /// Element `index` of axis 0 of the array at `path`: one frame's bytes, little-endian as
    /// ingest wrote them (for `export`, which renders an inline frame back into JSON). A frame
    /// whose chunk is not on disk is an error here, not the array's fill value.
    pub fn frame_bytes(&mut self, path: &str, index: u64) -> Result<Vec<u8>, String> {
        if !self.frame(path, index, false)? {
            return Err("frame missing (no chunk on disk)".into());
        }
        let array = self.array(path)?;
        let shape = array.shape().to_vec();
        let ranges: Vec<std::ops::Range<u64>> = std::iter::once(index..index.saturating_add(1))
            .chain(shape.iter().skip(1).map(|&n| 0..n))
            .collect();
        let subset = zarrs::array::ArraySubset::new_with_ranges(&ranges);
        let bytes: ArrayBytes<'static> = array
            .retrieve_array_subset(&subset)
            .map_err(|e| e.to_string())?;
        bytes
            .into_fixed()
            .map(|raw| raw.into_owned())
            .map_err(|e| e.to_string())
    }

    /// What is wrong with committed frame `frame`, stored in the array at `path` (relative to
    /// this inspector's root), if anything: the groups above it (those below the first
    /// `trusted` path components, which the caller judges itself) open in zarr-python, the
    /// array holds the recorded dtype and frame shape, and the frame's chunk is on disk (and,
    /// with `decode`, decodes).
    pub fn frame_problem(
        &mut self,
        path: &str,
        frame: &FrameRef,
        trusted: usize,
        decode: bool,
    ) -> Option<String> {
        let parts: Vec<&str> = path.split('/').collect();
        let judged = if self.local { parts.len() } else { 0 };
        for depth in trusted.max(1)..judged {
            let group = parts[..depth].join("/");
            let root = &self.root;
            let problem = self
                .groups
                .entry(group.clone())
                .or_insert_with(|| group_problem(&root.join(&group)));
            if let Some(problem) = problem {
                return Some(format!("group {group}: {problem}"));
            }
        }
        let info = match self.array_info(path) {
            Ok(info) => info,
            Err(e) => return Some(format!("frame array missing or unreadable ({e})")),
        };
        if frame.data_type.as_deref() != Some(info.data_type.as_str()) {
            return Some(format!(
                "dtype {} recorded, but the array holds {}",
                frame.dtype, info.data_type
            ));
        }
        if let Some(text) = &frame.frame_shape
            && let Ok(shape) = serde_json::from_str::<Vec<u64>>(text)
            && info.shape.get(1..) != Some(shape.as_slice())
        {
            return Some(format!(
                "frame shape {text} recorded, but the array's shape is {:?}",
                info.shape
            ));
        }
        let len = info.shape.first().copied().unwrap_or(0);
        let Ok(index) = u64::try_from(frame.index) else {
            return Some("negative frame index".into());
        };
        if index >= len {
            return Some(format!("frame index beyond the array's {len} frames"));
        }
        match self.frame(path, index, decode) {
            Ok(true) => None,
            Ok(false) => Some("frame missing (no chunk on disk)".into()),
            Err(e) => Some(format!("frame unreadable ({e})")),
        }
    }
}

/// The run uid of S3 run group `name` (`{uid}@{version}`), when it is one.
pub fn version_group_uid(name: &str) -> Option<&str> {
    let (uid, version) = name.rsplit_once('@')?;
    (!version.is_empty() && version.chars().all(|c| c.is_ascii_hexdigit())).then_some(uid)
}

/// The run uids that have a group under `runs/`, sorted (the folders only).
pub fn run_groups(root: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    match std::fs::read_dir(root.join("runs")) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry?;
                if entry.file_type()?.is_dir() {
                    names.push(entry.file_name().to_string_lossy().into_owned());
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    names.sort();
    Ok(names)
}

/// The content digest recorded in run `uid`'s group, if the group is complete.
pub fn group_digest(root: &Path, uid: &str) -> Option<String> {
    FrameStore::digest_at(&root.join("runs").join(uid))
}

/// What a killed ingest left in the staging folder: `{uid}.new` / `.old` / `.trash`
/// entries, as (uid, what, path). Lock files are not leftovers; an entry of any other name is
/// reported with `None`.
pub fn staging_leftovers(staging: &Path) -> io::Result<Vec<(String, Option<Staged>, PathBuf)>> {
    let mut found = Vec::new();
    match std::fs::read_dir(staging) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".lock") {
                    continue;
                }
                let (uid, what) = match Staged::parse(&name) {
                    Some((uid, what)) => (uid.to_string(), Some(what)),
                    None => (name.clone(), None),
                };
                found.push((uid, what, entry.path()));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    found.sort_by(|a, b| a.2.cmp(&b.2));
    Ok(found)
}

impl FrameStore {
    /// The store and staging folder as they are, creating nothing (for `verify --repair`).
    pub fn existing(root: &Path, staging: &Path) -> FrameStore {
        FrameStore {
            root: root.to_path_buf(),
            staging: staging.to_path_buf(),
            #[cfg(feature = "s3")]
            remote: None,
        }
    }

    /// Moves run `uid`'s group (whatever is left of it) to `dest`, and the previous copy an
    /// interrupted `--replace` left (if any) to `old_dest`: nothing of either is deleted.
    /// Returns what was moved.
    pub fn move_run(
        &self,
        uid: &SafeName,
        dest: &Path,
        old_dest: &Path,
    ) -> Result<Vec<PathBuf>, StoreError> {
        let mut moved = Vec::new();
        for (from, to) in [(self.run_dir(uid), dest), (self.old_dir(uid), old_dest)] {
            if std::fs::symlink_metadata(&from).is_err() {
                continue;
            }
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(io_error(parent, "cannot create folder"))?;
            }
            std::fs::rename(&from, to).map_err(io_error(&from, "cannot move to quarantine"))?;
            for dir in [from.parent(), to.parent()].into_iter().flatten() {
                sync_dir(dir).map_err(io_error(dir, "cannot sync"))?;
            }
            moved.push(to.to_path_buf());
        }
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(source: io::Error) -> StoreError {
        StoreError::Io {
            path: PathBuf::from("/x"),
            action: "cannot write the frame",
            source,
        }
    }

    /// Found by the hostile campaign: two ingests creating the same beamtime at once, one saw
    /// the other's `runs/zarr.json` while it was being written (empty) and refused the store
    /// as damaged, exit 1 and "run verify --repair". A reader must only ever see whole
    /// metadata, so the store's group metadata is written aside and renamed into place.
    #[test]
    fn creating_a_store_from_several_threads_at_once_never_sees_half_written_metadata() {
        let dir = tempfile::tempdir().unwrap();
        for trial in 0..50 {
            let root = dir.path().join(format!("s{trial}"));
            let errors: Vec<String> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..4)
                    .map(|_| scope.spawn(|| create_store(&root).err().map(|e| e.to_string())))
                    .collect();
                handles
                    .into_iter()
                    .filter_map(|h| h.join().unwrap())
                    .collect()
            });
            assert!(errors.is_empty(), "trial {trial}: {errors:?}");
            assert!(store_metadata_problems(&root).is_empty());
        }
    }

    #[test]
    fn a_full_disk_is_told_by_kind_and_errno_not_by_text() {
        assert!(io(io::Error::from(io::ErrorKind::StorageFull)).is_storage_full());
        assert!(io(io::Error::from(io::ErrorKind::FileTooLarge)).is_storage_full());
        assert!(io(io::Error::from_raw_os_error(28)).is_storage_full());
        assert!(io(io::Error::from_raw_os_error(27)).is_storage_full());
        // The words alone are not enough.
        assert!(!io(io::Error::other("No space left on device")).is_storage_full());
        assert!(!io(io::Error::from(io::ErrorKind::PermissionDenied)).is_storage_full());
        let zarr = StoreError::Zarr {
            path: PathBuf::from("/x"),
            message: "No space left on device".into(),
        };
        assert!(!zarr.is_storage_full());
        assert_eq!(zarr.exit_status(), crate::exit::ExitStatus::Failure);
    }

    /// A run group with `digest` in its attributes (enough for the swap logic).
    fn group_with_digest(dir: &Path, digest: &str) {
        std::fs::create_dir_all(dir.join("primary/det/c/0/0")).unwrap();
        std::fs::write(dir.join("primary/det/c/0/0/0"), b"frame").unwrap();
        let meta = serde_json::json!({
            "zarr_format": 3, "node_type": "group",
            "attributes": {"beamdb": {"content_digest": digest}}
        });
        std::fs::write(dir.join("zarr.json"), meta.to_string()).unwrap();
    }

    /// swap_in failed before it moved the committed frames aside (the rename out of `runs/`
    /// failed): undoing it must not take the committed group for the replacement.
    #[test]
    fn swap_back_after_a_swap_in_that_moved_nothing_keeps_the_committed_frames() {
        let dir = tempfile::tempdir().unwrap();
        let store = FrameStore::open(&Location::Filesystem {
            root: dir.path().join("frames.zarr"),
            staging: dir.path().join("st"),
        })
        .unwrap();
        let uid = SafeName::new("run uid", "r1").unwrap();
        let run = store.run_dir(&uid);
        group_with_digest(&run, "committed");
        group_with_digest(&store.new_dir(&uid), "replacement");
        store
            .swap_back(&uid, Some("committed"), None, "replacement")
            .unwrap();
        assert!(run.join("primary/det/c/0/0/0").is_file());
        assert_eq!(FrameStore::digest_at(&run).as_deref(), Some("committed"));
        assert!(!store.new_dir(&uid).exists());
        // The replacement in place of a run that had no frames goes.
        let uid = SafeName::new("run uid", "r2").unwrap();
        group_with_digest(&store.run_dir(&uid), "replacement");
        store
            .swap_back(&uid, Some("committed"), None, "replacement")
            .unwrap();
        assert!(!store.run_dir(&uid).exists());
        // Moved aside: the committed frames come back.
        let uid = SafeName::new("run uid", "r3").unwrap();
        group_with_digest(&store.old_dir(&uid), "committed");
        group_with_digest(&store.run_dir(&uid), "replacement");
        store
            .swap_back(&uid, Some("committed"), None, "replacement")
            .unwrap();
        assert_eq!(
            FrameStore::digest_at(&store.run_dir(&uid)).as_deref(),
            Some("committed")
        );
        assert!(!store.old_dir(&uid).exists() && !store.trash_dir(&uid).exists());
    }

    #[test]
    fn staging_names_parse_back_to_uid_and_kind() {
        assert_eq!(Staged::parse("r-1.old"), Some(("r-1", Staged::Old)));
        assert_eq!(Staged::parse("r.1.new"), Some(("r.1", Staged::New)));
        assert_eq!(Staged::parse("r.trash"), Some(("r", Staged::Trash)));
        assert_eq!(Staged::parse("r.lock"), None);
        assert_eq!(Staged::parse("rold"), None);
    }

    #[test]
    fn group_problems_are_named() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            group_problem(dir.path()).as_deref(),
            Some("zarr.json is missing")
        );
        std::fs::write(dir.path().join("zarr.json"), "{").unwrap();
        assert!(
            group_problem(dir.path())
                .unwrap()
                .starts_with("zarr.json is not JSON")
        );
        std::fs::write(
            dir.path().join("zarr.json"),
            r#"{"zarr_format": 3, "node_type": "array"}"#,
        )
        .unwrap();
        assert!(group_problem(dir.path()).unwrap().contains("node_type"));
        std::fs::write(
            dir.path().join("zarr.json"),
            r#"{"zarr_format": 3, "node_type": "group"}"#,
        )
        .unwrap();
        assert_eq!(group_problem(dir.path()), None);
    }
}
