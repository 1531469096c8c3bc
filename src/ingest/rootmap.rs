//! Where external files are now. A resource's `root` is where the detector wrote its files;
//! data moves, so `root_map` (as in databroker) rewrites the start of a root. Ingest reads
//! only under a root that the root map maps or that `[ingest] allowed_roots` lists (an
//! unmapped root is not a boundary of its own: a document could name `/`), and a resolved
//! file must stay inside that root even after `..` and symbolic links are followed, so a
//! document cannot make beamdb read `/etc/shadow` into a beamtime. A file must also be a
//! regular file: opening a FIFO would wait for a writer for ever.

use std::fs::File;
use std::path::{Component, Path, PathBuf};

/// Old root → new root, most specific first (as `settings::sort_root_map` orders them), and
/// the folders on this machine where an unmapped root may lie.
#[derive(Debug, Clone, Default)]
pub struct RootMap {
    entries: Vec<(String, PathBuf)>,
    allowed: Vec<PathBuf>,
}

/// A resource's root, found on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedRoot {
    /// The root as the document says it.
    pub original: String,
    /// Where it is now, canonical.
    pub dir: PathBuf,
    /// What files under it must stay inside, canonical: the new root of the mapping that
    /// applied, or the root itself when none did.
    pub boundary: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RootError {
    #[error(
        "frames root {root} does not exist on this machine; say where it is now with --root-map {root}=/where/the/files/are (or [ingest.root_map] in the settings)"
    )]
    Unmapped { root: String },
    #[error(
        "frames root {root} is neither mapped nor allowed: ingest reads files only under a root that the root map maps or that [ingest] allowed_roots lists, so that a document cannot make beamdb read any file on this machine; to read it where it is, add --root-map {root}={root} (or list it, or a folder above it, in [ingest] allowed_roots in the settings)"
    )]
    NotAllowed { root: String },
    #[error(
        "frames root {root} maps to {mapped} (root map {old}={new}), which does not exist; fix the root map"
    )]
    MappedMissing {
        root: String,
        mapped: PathBuf,
        old: String,
        new: PathBuf,
    },
    #[error("frames root {root} is not an absolute path")]
    Relative { root: String },
    #[error("{path} resolves to {resolved}, outside its root {boundary}; refusing to read it")]
    Escapes {
        path: PathBuf,
        resolved: PathBuf,
        boundary: PathBuf,
    },
    #[error(
        "{path}: not a regular file (a FIFO, device, socket or folder); frames are read only from regular files"
    )]
    NotRegular { path: PathBuf },
}

impl RootMap {
    pub fn new(entries: Vec<(String, PathBuf)>) -> RootMap {
        RootMap {
            entries,
            allowed: Vec::new(),
        }
    }

    /// Also reads unmapped roots that lie under one of `allowed` (`[ingest] allowed_roots`).
    pub fn with_allowed(mut self, allowed: Vec<PathBuf>) -> RootMap {
        self.allowed = allowed;
        self
    }

    /// Finds `root` on this machine.
    pub fn resolve(&self, root: &str) -> Result<ResolvedRoot, RootError> {
        let path = Path::new(root);
        if !path.is_absolute() {
            return Err(RootError::Relative { root: root.into() });
        }
        let mapping = self
            .entries
            .iter()
            .find_map(|(old, new)| path.strip_prefix(old).ok().map(|rest| (old, new, rest)));
        match mapping {
            Some((old, new, rest)) => {
                let mapped = new.join(rest);
                let missing = || RootError::MappedMissing {
                    root: root.into(),
                    mapped: mapped.clone(),
                    old: old.clone(),
                    new: new.clone(),
                };
                let boundary = new.canonicalize().map_err(|_| missing())?;
                let dir = mapped.canonicalize().map_err(|_| missing())?;
                if !dir.starts_with(&boundary) {
                    return Err(RootError::Escapes {
                        path: mapped,
                        resolved: dir,
                        boundary,
                    });
                }
                Ok(ResolvedRoot {
                    original: root.into(),
                    dir,
                    boundary,
                })
            }
            None => {
                // `..` in an unmapped root would let it name anything; a root is a plain path.
                if path.components().any(|c| c == Component::ParentDir) {
                    return Err(RootError::Escapes {
                        path: path.into(),
                        resolved: path.into(),
                        boundary: path.into(),
                    });
                }
                let dir = path
                    .canonicalize()
                    .map_err(|_| RootError::Unmapped { root: root.into() })?;
                // The allowed folder, not the root, is the boundary: files under the root
                // may not leave it by `..` or a symbolic link either. A listed folder that is
                // not there (an unmounted disk) allows nothing.
                let allowed: Vec<(&PathBuf, PathBuf)> = self
                    .allowed
                    .iter()
                    .filter_map(|a| a.canonicalize().ok().map(|c| (a, c)))
                    .collect();
                let Some((_, boundary)) = allowed.iter().find(|(_, c)| dir.starts_with(c)) else {
                    // Named under an allowed folder, but a symbolic link leads out of it.
                    if let Some((_, c)) = allowed
                        .iter()
                        .find(|(a, c)| path.starts_with(a) || path.starts_with(c))
                    {
                        return Err(RootError::Escapes {
                            path: path.into(),
                            resolved: dir,
                            boundary: c.clone(),
                        });
                    }
                    return Err(RootError::NotAllowed { root: root.into() });
                };
                let boundary = boundary.clone();
                Ok(ResolvedRoot {
                    original: root.into(),
                    dir,
                    boundary,
                })
            }
        }
    }
}

impl ResolvedRoot {
    /// `relative` under this root, canonical and checked to stay inside the boundary.
    /// `Ok(Err(path))` when the file does not exist (the caller says which frame it was).
    pub fn file(&self, relative: &str) -> Result<Result<PathBuf, PathBuf>, RootError> {
        let path = self.dir.join(relative);
        let resolved = match path.canonicalize() {
            Ok(resolved) => resolved,
            Err(_) => {
                // Missing: still refuse a path that would leave the root lexically.
                let escapes = Path::new(relative).is_absolute()
                    || Path::new(relative)
                        .components()
                        .any(|c| c == Component::ParentDir);
                if escapes {
                    return Err(RootError::Escapes {
                        resolved: path.clone(),
                        path,
                        boundary: self.boundary.clone(),
                    });
                }
                return Ok(Err(path));
            }
        };
        if !resolved.starts_with(&self.boundary) {
            return Err(RootError::Escapes {
                path,
                resolved,
                boundary: self.boundary.clone(),
            });
        }
        // stat does not open: a FIFO is refused here without waiting for a writer.
        if !std::fs::metadata(&resolved).is_ok_and(|m| m.is_file()) {
            return Err(RootError::NotRegular { path: resolved });
        }
        Ok(Ok(resolved))
    }

    /// `path`, a file that another file names (an HDF5 external link's target, a virtual
    /// dataset's source), canonical and checked to stay inside the boundary like [`Self::file`].
    /// `Ok(Err(path))` when it does not exist.
    pub fn contain(&self, path: &Path) -> Result<Result<PathBuf, PathBuf>, RootError> {
        match path.canonicalize() {
            Ok(resolved) if resolved.starts_with(&self.boundary) => Ok(Ok(resolved)),
            Ok(resolved) => Err(RootError::Escapes {
                path: path.into(),
                resolved,
                boundary: self.boundary.clone(),
            }),
            Err(_) => Ok(Err(path.into())),
        }
    }
}

/// Opens a file that [`ResolvedRoot::file`] returned, for reading. Non-blocking, then checked
/// again on the open file: the path may have become a FIFO since it was resolved, and opening
/// a FIFO blocks until someone writes to it. (O_NONBLOCK changes nothing for a regular file.)
pub fn open_regular(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (a FIFO, device, socket or folder)",
        ));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let frames = dir.path().join("frames");
        std::fs::create_dir_all(frames.join("sub")).unwrap();
        std::fs::write(frames.join("a_0.npy"), b"x").unwrap();
        std::fs::write(dir.path().join("secret"), b"x").unwrap();
        (dir, frames)
    }

    #[test]
    fn the_most_specific_mapping_wins_and_files_resolve_inside() {
        let (dir, frames) = setup();
        let map = RootMap::new(vec![
            ("/srv/beamline/shared/frames".into(), frames.clone()),
            ("/srv/beamline".into(), dir.path().into()),
        ]);
        let root = map.resolve("/srv/beamline/shared/frames").unwrap();
        assert_eq!(root.dir, frames.canonicalize().unwrap());
        assert!(root.file("a_0.npy").unwrap().is_ok());
        assert!(root.file("a_1.npy").unwrap().is_err());
        let sub = map.resolve("/srv/beamline/shared/frames/sub").unwrap();
        assert_eq!(sub.boundary, frames.canonicalize().unwrap());
        // Component-wise: /srv/beamline2 is not under /srv/beamline.
        assert!(matches!(
            map.resolve("/srv/beamline2/x"),
            Err(RootError::Unmapped { .. })
        ));
    }

    #[test]
    fn unmapped_roots_are_read_only_under_an_allowed_folder() {
        let (dir, frames) = setup();
        let root = frames.to_str().unwrap();
        let err = RootMap::default().resolve(root).unwrap_err();
        assert!(matches!(err, RootError::NotAllowed { .. }), "{err}");
        assert!(
            err.to_string()
                .contains(&format!("--root-map {root}={root}")),
            "{err}"
        );
        assert!(matches!(
            RootMap::default().resolve("/"),
            Err(RootError::NotAllowed { .. })
        ));
        let map = RootMap::default().with_allowed(vec![dir.path().into()]);
        let resolved = map.resolve(root).unwrap();
        assert_eq!(resolved.boundary, dir.path().canonicalize().unwrap());
        assert!(resolved.file("a_0.npy").unwrap().is_ok());
        let map = RootMap::default().with_allowed(vec![frames.join("sub")]);
        assert!(matches!(
            map.resolve(root),
            Err(RootError::NotAllowed { .. })
        ));
    }

    #[test]
    fn only_regular_files_are_read() {
        let (_dir, frames) = setup();
        let map = RootMap::new(vec![("/srv/f".into(), frames.clone())]);
        let root = map.resolve("/srv/f").unwrap();
        let fifo = frames.join("fifo_0.npy");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        assert!(matches!(
            root.file("fifo_0.npy"),
            Err(RootError::NotRegular { .. })
        ));
        assert!(matches!(
            root.file("sub"),
            Err(RootError::NotRegular { .. })
        ));
        // Opening the FIFO directly does not wait for a writer either.
        let err = open_regular(&fifo).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        assert!(open_regular(&frames.join("a_0.npy")).is_ok());
    }

    #[test]
    fn missing_roots_say_what_to_do() {
        let map = RootMap::default();
        let err = map.resolve("/srv/nowhere/frames").unwrap_err();
        assert!(
            err.to_string().contains("--root-map /srv/nowhere/frames="),
            "{err}"
        );
        let map = RootMap::new(vec![("/srv".into(), "/nonexistent/x".into())]);
        assert!(matches!(
            map.resolve("/srv/a"),
            Err(RootError::MappedMissing { .. })
        ));
        assert!(matches!(
            RootMap::default().resolve("relative/x"),
            Err(RootError::Relative { .. })
        ));
    }

    #[test]
    fn escapes_are_refused() {
        let (dir, frames) = setup();
        let map = RootMap::new(vec![("/srv/f".into(), frames.clone())]);
        let root = map.resolve("/srv/f").unwrap();
        assert!(matches!(
            root.file("../secret"),
            Err(RootError::Escapes { .. })
        ));
        assert!(matches!(
            root.file("../missing"),
            Err(RootError::Escapes { .. })
        ));
        let abs = dir.path().join("secret");
        assert!(matches!(
            root.file(abs.to_str().unwrap()),
            Err(RootError::Escapes { .. })
        ));
        assert!(matches!(
            map.resolve("/srv/f/.."),
            Err(RootError::Escapes { .. })
        ));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.path().join("secret"), frames.join("link_0.npy"))
                .unwrap();
            assert!(matches!(
                root.file("link_0.npy"),
                Err(RootError::Escapes { .. })
            ));
        }
    }
}
