//! The Zarr v3 frame store beside each beamtime database. The only module that knows zarrs.
//!
//! The store is opened through one function that takes its location, so that moving frames
//! to another store backend later touches this file only.

use std::path::Path;
use std::sync::Arc;

use zarrs::filesystem::FilesystemStore;
use zarrs::group::GroupBuilder;

#[derive(Debug, thiserror::Error)]
#[error("{path}: cannot create the Zarr store: {message}")]
pub struct StoreError {
    pub path: String,
    pub message: String,
}

/// Creates an empty Zarr v3 store (a root group) at `path`, unless one is there already.
pub fn create_store(path: &Path) -> Result<(), StoreError> {
    let fail = |message: String| StoreError {
        path: path.display().to_string(),
        message,
    };
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
    let group = GroupBuilder::new()
        .attributes(attributes)
        .build(store, "/")
        .map_err(|e| fail(e.to_string()))?;
    group.store_metadata().map_err(|e| fail(e.to_string()))
}
