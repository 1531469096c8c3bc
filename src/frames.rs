//! The Zarr v3 frame store beside each beamtime database. The only module that knows zarrs.
//!
//! The store is opened through one function that takes its location, so that moving frames
//! to another store backend later touches this file only.
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

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use zarrs::array::{
    Array, ArrayBytes, ArrayMetadata, ArrayMetadataV3, ArrayToBytesCodecTraits, CodecOptions,
};
use zarrs::filesystem::FilesystemStore;
use zarrs::group::GroupBuilder;

use crate::layout::SafeName;
use crate::settings::Compression;

#[derive(Debug, thiserror::Error)]
#[error("{path}: cannot create the Zarr store: {message}")]
pub struct StoreError {
    pub path: String,
    pub message: String,
}

// TODO(lead): when the typed StoreError with its inherent `exit_status()` lands, call that.
impl crate::exit::HasExitStatus for StoreError {
    fn exit_status(&self) -> crate::exit::ExitStatus {
        crate::exit::ExitStatus::Failure
    }
}

fn store_error(path: &Path) -> impl Fn(String) -> StoreError + '_ {
    move |message| StoreError {
        path: path.display().to_string(),
        message,
    }
}

/// Writes a group's `zarr.json` with `attributes` into `store` at `path`.
fn write_group(
    store: Arc<FilesystemStore>,
    path: &str,
    attributes: serde_json::Map<String, serde_json::Value>,
) -> Result<(), String> {
    let group = GroupBuilder::new()
        .attributes(attributes)
        .build(store, path)
        .map_err(|e| e.to_string())?;
    group.store_metadata().map_err(|e| e.to_string())
}

/// Creates an empty Zarr v3 store (a root group) at `path`, unless one is there already.
pub fn create_store(path: &Path) -> Result<(), StoreError> {
    let fail = store_error(path);
    if path.join("zarr.json").is_file() {
        return Ok(());
    }
    std::fs::create_dir_all(path).map_err(|e| fail(e.to_string()))?;
    let store = Arc::new(FilesystemStore::new(path).map_err(|e| fail(e.to_string()))?);
    let mut attributes = serde_json::Map::new();
    attributes.insert(
        "description".into(),
        "beamdb frame store: runs/{run_uid}/{stream}/{field}, axis 0 = frame".into(),
    );
    write_group(store, "/", attributes).map_err(fail)
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
#[derive(Debug, Clone)]
pub struct FrameStore {
    root: PathBuf,
    staging: PathBuf,
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

impl FrameStore {
    /// Opens the store at `root` (creating it when missing), with `staging` for replacements.
    pub fn open(root: &Path, staging: &Path) -> Result<FrameStore, StoreError> {
        create_store(root)?;
        let fail = store_error(root);
        if !root.join("runs/zarr.json").is_file() {
            let store = Arc::new(FilesystemStore::new(root).map_err(|e| fail(e.to_string()))?);
            let mut attributes = serde_json::Map::new();
            attributes.insert("description".into(), "one group per run uid".into());
            write_group(store, "/runs", attributes).map_err(&fail)?;
        }
        Ok(FrameStore {
            root: root.to_path_buf(),
            staging: staging.to_path_buf(),
        })
    }

    /// The array path of a run's field inside the store (what `image_refs.zarr_group` holds).
    pub fn array_path(uid: &SafeName, stream: &SafeName, field: &str) -> String {
        format!("runs/{uid}/{stream}/{field}")
    }

    /// The lock file of one run's ingest (see `lock::run_lock`).
    pub fn run_lock_path(&self, uid: &SafeName) -> PathBuf {
        self.staging.join(format!("{uid}.lock"))
    }

    fn run_dir(&self, uid: &SafeName) -> PathBuf {
        self.root.join("runs").join(uid.as_str())
    }

    fn new_dir(&self, uid: &SafeName) -> PathBuf {
        self.staging.join(format!("{uid}.new"))
    }

    fn old_dir(&self, uid: &SafeName) -> PathBuf {
        self.staging.join(format!("{uid}.old"))
    }

    /// The content digest recorded in a run group's attributes, if the group is there.
    fn digest_at(dir: &Path) -> Option<String> {
        let text = std::fs::read_to_string(dir.join("zarr.json")).ok()?;
        let meta: serde_json::Value = serde_json::from_str(&text).ok()?;
        meta["attributes"]["beamdb"]["content_digest"]
            .as_str()
            .map(str::to_string)
    }

    /// Cleans up after an ingest of `uid` that was killed, given the committed run's digest
    /// (`None`: no committed run). Each group records the digest of the documents it was
    /// written from, which is what tells a committed run's frames from a leftover.
    pub fn recover(
        &self,
        uid: &SafeName,
        committed: Option<&str>,
    ) -> Result<Recovered, StoreError> {
        let fail = store_error(&self.root);
        let remove = |dir: &Path| match std::fs::remove_dir_all(dir) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(fail(format!("cannot remove {}: {e}", dir.display()))),
        };
        let mut done = Recovered::Nothing;
        remove(&self.new_dir(uid))?;
        let old = self.old_dir(uid);
        let run = self.run_dir(uid);
        if old.exists() {
            if committed.is_some() && Self::digest_at(&old).as_deref() == committed {
                remove(&run)?;
                std::fs::rename(&old, &run).map_err(|e| fail(e.to_string()))?;
                return Ok(Recovered::RestoredReplaced);
            }
            remove(&old)?;
            done = Recovered::FinishedReplace;
        }
        if committed.is_none() && remove(&run)? {
            done = Recovered::RemovedLeftover;
        }
        Ok(done)
    }

    /// Starts writing `uid`'s frames. Call [`FrameStore::recover`] first.
    pub fn begin(
        &self,
        uid: &SafeName,
        target: Target,
        compression: Compression,
    ) -> Result<RunFrames, StoreError> {
        let dir = match target {
            Target::InPlace => self.run_dir(uid),
            Target::Staging => self.new_dir(uid),
        };
        let fail = |e: String| store_error(&dir)(e);
        std::fs::create_dir_all(&dir).map_err(|e| fail(e.to_string()))?;
        let store = Arc::new(FilesystemStore::new(&dir).map_err(|e| fail(e.to_string()))?);
        Ok(RunFrames {
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
        let fail = store_error(&self.root);
        let run = self.run_dir(uid);
        if run.exists() {
            std::fs::rename(&run, self.old_dir(uid)).map_err(|e| fail(e.to_string()))?;
        }
        let new = self.new_dir(uid);
        if new.exists() {
            std::fs::rename(&new, &run).map_err(|e| fail(e.to_string()))?;
        }
        // The renames must be on disk before the commit that relies on them.
        sync_dir(&self.root.join("runs")).map_err(|e| fail(e.to_string()))?;
        sync_dir(&self.staging).map_err(|e| fail(e.to_string()))
    }

    pub fn drop_old(&self, uid: &SafeName) -> Result<(), StoreError> {
        self.recover_removing(&self.old_dir(uid))
    }

    pub fn swap_back(&self, uid: &SafeName) -> Result<(), StoreError> {
        let fail = store_error(&self.root);
        let run = self.run_dir(uid);
        self.recover_removing(&run)?;
        let old = self.old_dir(uid);
        if old.exists() {
            std::fs::rename(&old, &run).map_err(|e| fail(e.to_string()))?;
        }
        Ok(())
    }

    fn recover_removing(&self, dir: &Path) -> Result<(), StoreError> {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(store_error(&self.root)(format!(
                "cannot remove {}: {e}",
                dir.display()
            ))),
        }
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
    fn fail(&self) -> impl Fn(String) -> StoreError + '_ {
        store_error(&self.dir)
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
            serde_json::from_value(metadata).map_err(|e| self.fail()(e.to_string()))?;
        let path = format!("/{}/{}", spec.stream, spec.field);
        let array =
            Array::new_with_metadata(self.store.clone(), &path, ArrayMetadata::V3(metadata))
                .map_err(|e| self.fail()(e.to_string()))?;
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
        let fail = store_error(&self.dir);
        let s = self
            .arrays
            .get_mut(stack)
            .ok_or_else(|| fail(format!("no stack {stack}")))?;
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
        let fail = self.fail();
        let s = self
            .arrays
            .get(stack)
            .ok_or_else(|| fail(format!("no stack {stack}")))?;
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
        let path = self.dir.join(array.chunk_key(&chunk).as_str());
        write_file(&path, &encoded).map_err(|e| fail(format!("{}: {e}", path.display())))?;
        if let Ok(mut written) = self.written.lock() {
            written.push(path);
        }
        Ok(())
    }

    /// Makes every chunk written so far durable: each file, then each directory that gained
    /// an entry (a new file's name is only durable once its directory is synced).
    fn sync_chunks(&self) -> Result<(), StoreError> {
        let fail = self.fail();
        let files = match self.written.lock() {
            Ok(mut written) => std::mem::take(&mut *written),
            Err(_) => return Err(fail("a frame writer panicked".into())),
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
            .try_for_each(|path| {
                sync_path(path).map_err(|e| fail(format!("{}: cannot sync: {e}", path.display())))
            })
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
        let fail = store_error(&self.dir);
        for (stack, &len) in self.arrays.iter_mut().zip(lens) {
            let mut shape = vec![len];
            shape.extend_from_slice(&stack.frame_shape);
            stack
                .array
                .set_shape(shape)
                .map_err(|e| fail(e.to_string()))?;
            stack
                .array
                .store_metadata()
                .map_err(|e| fail(e.to_string()))?;
        }
        for stream in &self.streams {
            write_group(
                self.store.clone(),
                &format!("/{stream}"),
                serde_json::Map::new(),
            )
            .map_err(&fail)?;
        }
        // The run group last: its digest is what marks the frames as complete.
        write_group(self.store.clone(), "/", attributes).map_err(&fail)?;
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
            .try_for_each(|d| sync_dir(d))
            .map_err(|e| fail(format!("cannot sync to disk: {e}")))
    }

    /// Removes everything written for this run.
    pub fn discard(&self) -> Result<(), StoreError> {
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(store_error(&self.dir)(format!("cannot remove it: {e}"))),
        }
    }
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
}

/// Read-only access to a beamtime's frame store for `verify`: opens nothing for writing and
/// creates nothing, so that it works on a read-only data root.
pub struct Inspector {
    root: PathBuf,
    store: Arc<FilesystemStore>,
    arrays: std::collections::HashMap<String, Result<Array<FilesystemStore>, String>>,
}

impl Inspector {
    pub fn open(root: &Path) -> Result<Inspector, StoreError> {
        let store = FilesystemStore::new(root).map_err(|e| store_error(root)(e.to_string()))?;
        Ok(Inspector {
            root: root.to_path_buf(),
            store: Arc::new(store),
            arrays: std::collections::HashMap::new(),
        })
    }

    fn array(&mut self, path: &str) -> Result<&Array<FilesystemStore>, String> {
        if !self.arrays.contains_key(path) {
            let opened = if self.root.join(path).join("zarr.json").is_file() {
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
        Ok(ArrayInfo {
            shape: array.shape().to_vec(),
            data_type: meta["data_type"]
                .as_str()
                .map_or_else(|| meta["data_type"].to_string(), str::to_string),
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
}

/// The run uids that have a group under `runs/`, sorted (the folders only).
pub fn run_groups(root: &Path) -> std::io::Result<Vec<String>> {
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
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    names.sort();
    Ok(names)
}

/// The content digest recorded in run `uid`'s group, if the group is complete.
pub fn group_digest(root: &Path, uid: &str) -> Option<String> {
    FrameStore::digest_at(&root.join("runs").join(uid))
}

/// What a killed ingest left in the staging folder: `{uid}.new` / `{uid}.old` entries, as
/// (uid, path). Lock files are not leftovers.
pub fn staging_leftovers(staging: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut found = Vec::new();
    match std::fs::read_dir(staging) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".lock") {
                    continue;
                }
                let uid = name
                    .strip_suffix(".new")
                    .or_else(|| name.strip_suffix(".old"))
                    .unwrap_or(&name)
                    .to_string();
                found.push((uid, entry.path()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    found.sort();
    Ok(found)
}

impl FrameStore {
    /// The store and staging folder as they are, creating nothing (for `verify --repair`).
    pub fn existing(root: &Path, staging: &Path) -> FrameStore {
        FrameStore {
            root: root.to_path_buf(),
            staging: staging.to_path_buf(),
        }
    }

    /// Moves run `uid`'s group (whatever is left of it) to `dest`; false when there is none.
    pub fn move_run(&self, uid: &SafeName, dest: &Path) -> Result<bool, StoreError> {
        let fail = store_error(&self.root);
        let run = self.run_dir(uid);
        if !run.exists() {
            return Ok(false);
        }
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| fail(e.to_string()))?;
        }
        std::fs::rename(&run, dest).map_err(|e| {
            fail(format!(
                "cannot move {} to {}: {e}",
                run.display(),
                dest.display()
            ))
        })?;
        sync_dir(&self.root.join("runs")).map_err(|e| fail(e.to_string()))?;
        if let Some(parent) = dest.parent() {
            sync_dir(parent).map_err(|e| fail(e.to_string()))?;
        }
        Ok(true)
    }
}
