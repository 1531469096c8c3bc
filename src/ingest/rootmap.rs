//! Where external files are now. A resource's `root` is where the detector wrote its files;
//! data moves, so `root_map` (as in databroker) rewrites the start of a root. A resolved file
//! must stay inside its mapped root even after `..` and symbolic links are followed, so a
//! document cannot make beamdb read `/etc/shadow` into a beamtime.

use std::path::{Component, Path, PathBuf};

/// Old root → new root, most specific first (as `settings::sort_root_map` orders them).
#[derive(Debug, Clone, Default)]
pub struct RootMap {
    entries: Vec<(String, PathBuf)>,
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
}

impl RootMap {
    pub fn new(entries: Vec<(String, PathBuf)>) -> RootMap {
        RootMap { entries }
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
                Ok(ResolvedRoot {
                    original: root.into(),
                    boundary: dir.clone(),
                    dir,
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
