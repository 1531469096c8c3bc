//! Where things live under `data_root`, and which names may become part of a path.
//!
//! ```text
//! {data_root}/index.db
//! {data_root}/beamtimes/{beamtime_id}/beamtime.db
//! {data_root}/beamtimes/{beamtime_id}/frames.zarr/
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

/// A name that is safe as one path component: letters, digits, `-`, `_`, `.`; not empty, not
/// containing `..`, at most 255 bytes, and not a name the Zarr store keeps for itself.
/// Beamtime ids, run uids, stream and field names all become paths, and each is checked
/// before any file is touched.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SafeName(String);

#[derive(Debug, Clone, thiserror::Error)]
#[error("{what} {name:?} is not a safe name: {why}; use letters, digits, '-', '_' and '.' only")]
pub struct NameError {
    pub what: &'static str,
    pub name: String,
    pub why: &'static str,
}

impl crate::exit::HasExitStatus for NameError {
    fn exit_status(&self) -> crate::exit::ExitStatus {
        crate::exit::ExitStatus::Usage
    }
}

impl SafeName {
    /// Checks `name`; `what` says what it is in the error ("beamtime id", "stream name").
    pub fn new(what: &'static str, name: &str) -> Result<SafeName, NameError> {
        let why = if name.is_empty() {
            Some("it is empty")
        } else if name.len() > 255 {
            Some("it is longer than 255 bytes")
        } else if name.contains("..") || name == "." {
            Some("it contains '..' or is '.'")
        } else if name.contains('/') || name.contains('\\') {
            Some("it contains a path separator")
        } else if is_zarr_reserved(name) {
            Some(
                "Zarr keeps this name for its own metadata (zarr.json, .zarray, .zgroup, .zattrs, .zmetadata, and every name starting with \"__\")",
            )
        } else if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            Some("it contains a character other than a letter, digit, '-', '_' or '.'")
        } else {
            None
        };
        match why {
            None => Ok(SafeName(name.to_string())),
            Some(why) => Err(NameError {
                what,
                name: name.to_string(),
                why,
            }),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Names a Zarr store keeps for itself: v3's `zarr.json` and (reserved by the v3 spec) every
/// name starting with `__`; v2's metadata files, which zarr-python still looks for. A run,
/// stream or field of that name would overwrite a group's metadata or make it unreadable.
fn is_zarr_reserved(name: &str) -> bool {
    name.starts_with("__")
        || matches!(
            name.to_ascii_lowercase().as_str(),
            "zarr.json" | ".zarray" | ".zgroup" | ".zattrs" | ".zmetadata"
        )
}

impl fmt::Display for SafeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The beamtimes folder could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: cannot list beamtimes: {source}")]
pub struct ListError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

impl crate::exit::HasExitStatus for ListError {
    fn exit_status(&self) -> crate::exit::ExitStatus {
        crate::exit::ExitStatus::Failure
    }
}

/// The files under one `data_root`.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn index_db(&self) -> PathBuf {
        self.root.join("index.db")
    }

    /// Held exclusively by `migrate`, shared by writers that must not run during one.
    pub fn migrate_lock(&self) -> PathBuf {
        self.root.join(".migrate.lock")
    }

    /// Held exclusively by `reindex`: one at a time.
    pub fn reindex_lock(&self) -> PathBuf {
        self.root.join(".reindex.lock")
    }

    pub fn beamtimes_dir(&self) -> PathBuf {
        self.root.join("beamtimes")
    }

    pub fn beamtime_dir(&self, id: &SafeName) -> PathBuf {
        self.beamtimes_dir().join(id.as_str())
    }

    pub fn beamtime_db(&self, id: &SafeName) -> PathBuf {
        self.beamtime_dir(id).join("beamtime.db")
    }

    pub fn frames_store(&self, id: &SafeName) -> PathBuf {
        self.beamtime_dir(id).join("frames.zarr")
    }

    /// Where `ingest --replace` stages a run's frames and keeps the run locks, beside (not
    /// inside) the store, so that zarr-python never sees a half-written replacement.
    pub fn frames_staging(&self, id: &SafeName) -> PathBuf {
        self.beamtime_dir(id).join("frames.staging")
    }

    /// Where `verify --repair` moves what it takes out of a beamtime (never deletes).
    pub fn quarantine_dir(&self, id: &SafeName) -> PathBuf {
        self.beamtime_dir(id).join("quarantine")
    }

    /// Every beamtime that has a database, sorted by id. Folders whose name is not a safe
    /// beamtime id are returned separately so that callers can report them.
    pub fn beamtimes(&self) -> Result<(Vec<SafeName>, Vec<PathBuf>), ListError> {
        let dir = self.beamtimes_dir();
        let unlistable = |source| ListError {
            path: dir.clone(),
            source,
        };
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok((vec![], vec![])),
            Err(err) => return Err(unlistable(err)),
        };
        let mut ids = Vec::new();
        let mut odd = Vec::new();
        for entry in entries {
            let entry = entry.map_err(unlistable)?;
            if !entry.path().join("beamtime.db").is_file() {
                continue;
            }
            match entry
                .file_name()
                .to_str()
                .map(|n| SafeName::new("beamtime id", n))
            {
                Some(Ok(id)) => ids.push(id),
                _ => odd.push(entry.path()),
            }
        }
        ids.sort();
        odd.sort();
        Ok((ids, odd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_names() {
        for ok in [
            "bt-1",
            "2026_03.a",
            "4c25f8e6-90b0-4d43-a8f6-36e5dbd66ff9",
            "primary",
        ] {
            assert!(SafeName::new("x", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../x",
            "a..b",
            "a b",
            "é",
            "a\\b",
            "x\0",
            "zarr.json",
            "ZARR.JSON",
            "__init",
            "__",
            ".zarray",
            ".zgroup",
            ".zattrs",
            ".zmetadata",
        ] {
            assert!(SafeName::new("x", bad).is_err(), "{bad:?}");
        }
        assert!(SafeName::new("x", &"a".repeat(256)).is_err());
    }
}
