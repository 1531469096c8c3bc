//! Migration files on disk: `{migrations_dir}/{beamtime|index}/V{n}__{name}.sql`.
//!
//! Versions are sequential integers (refinery's `SchemaVersion` is `i32`), files are never
//! overwritten, and the built-in set is embedded in the binary.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::schema::DbKind;

/// One migration: its version, its name (the part after `__`), and its SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationFile {
    pub version: i32,
    pub name: String,
    pub sql: String,
}

impl MigrationFile {
    /// `V{n}__{name}`: the stem refinery records in its history.
    pub fn stem(&self) -> String {
        format!("V{}__{}", self.version, self.name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("{path}: cannot read the migrations folder: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: not a migration file name; name it V{{n}}__{{name}}.sql (name: letters, digits, '_')"
    )]
    BadName { path: PathBuf },
    #[error("{first} and {second} have the same version; give each migration its own")]
    RepeatedVersion { first: PathBuf, second: PathBuf },
    #[error("{path}: already exists; beamdb never overwrites a migration")]
    Exists { path: PathBuf },
    #[error("{path}: cannot write the migration: {source}")]
    Unwritable {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl crate::exit::HasExitStatus for FilesError {
    fn exit_status(&self) -> crate::exit::ExitStatus {
        crate::exit::ExitStatus::Failure
    }
}

mod embedded_beamtime {
    refinery::embed_migrations!("migrations/beamtime");
}
mod embedded_index {
    refinery::embed_migrations!("migrations/index");
}

/// The migrations built into the binary for `kind`, by version.
pub fn builtin(kind: DbKind) -> Vec<MigrationFile> {
    let runner = match kind {
        DbKind::Beamtime => embedded_beamtime::migrations::runner(),
        DbKind::Index => embedded_index::migrations::runner(),
    };
    let mut files: Vec<MigrationFile> = runner
        .get_migrations()
        .iter()
        .map(|m| MigrationFile {
            version: m.version(),
            name: m.name().to_string(),
            sql: m.sql().unwrap_or_default().to_string(),
        })
        .collect();
    files.sort_by_key(|m| m.version);
    files
}

/// The folder that holds `kind`'s migrations under `migrations_dir`.
pub fn kind_dir(migrations_dir: &Path, kind: DbKind) -> PathBuf {
    migrations_dir.join(kind.name())
}

/// The migrations of `kind` from `migrations_dir`, or the built-in ones when it is `None`.
/// A missing folder holds no migrations.
pub fn load(kind: DbKind, migrations_dir: Option<&Path>) -> Result<Vec<MigrationFile>, FilesError> {
    let Some(dir) = migrations_dir else {
        return Ok(builtin(kind));
    };
    let dir = kind_dir(dir, kind);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(FilesError::Unreadable { path: dir, source }),
    };
    let mut found: Vec<(MigrationFile, PathBuf)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| FilesError::Unreadable {
            path: dir.clone(),
            source,
        })?;
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("sql") {
            continue;
        }
        let (version, name) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(parse_stem)
            .ok_or_else(|| FilesError::BadName { path: path.clone() })?;
        let sql = std::fs::read_to_string(&path).map_err(|source| FilesError::Unreadable {
            path: path.clone(),
            source,
        })?;
        found.push((MigrationFile { version, name, sql }, path));
    }
    found.sort_by_key(|(m, _)| m.version);
    for pair in found.windows(2) {
        if pair[0].0.version == pair[1].0.version {
            return Err(FilesError::RepeatedVersion {
                first: pair[0].1.clone(),
                second: pair[1].1.clone(),
            });
        }
    }
    Ok(found.into_iter().map(|(m, _)| m).collect())
}

/// Parses `V{n}__{name}` into its version and name.
pub fn parse_stem(stem: &str) -> Option<(i32, String)> {
    let rest = stem.strip_prefix('V')?;
    let (version, name) = rest.split_once("__")?;
    let version: i32 = version.parse().ok().filter(|v| *v > 0)?;
    let plain = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    plain.then(|| (version, name.to_string()))
}

/// The version after the last of `existing`.
pub fn next_version(existing: &[MigrationFile]) -> i32 {
    existing.iter().map(|m| m.version).max().unwrap_or(0) + 1
}

/// A file-name-safe slug: lowercase letters, digits and single `_`.
pub fn slug(text: &str) -> String {
    let mut slug = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('_') && !slug.is_empty() {
            slug.push('_');
        }
    }
    let slug = slug.trim_end_matches('_');
    let slug: String = slug.chars().take(60).collect();
    if slug.is_empty() {
        "migration".to_string()
    } else {
        slug
    }
}

/// Writes `migration` into `{migrations_dir}/{kind}/`, refusing to overwrite anything.
pub fn write(
    migrations_dir: &Path,
    kind: DbKind,
    migration: &MigrationFile,
) -> Result<PathBuf, FilesError> {
    let dir = kind_dir(migrations_dir, kind);
    let path = dir.join(format!("{}.sql", migration.stem()));
    let unwritable = |source| FilesError::Unwritable {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(unwritable)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => FilesError::Exists { path: path.clone() },
            _ => unwritable(source),
        })?;
    file.write_all(migration.sql.as_bytes())
        .map_err(unwritable)?;
    file.sync_all().map_err(unwritable)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_and_slugs() {
        assert_eq!(
            parse_stem("V12__add_proposal"),
            Some((12, "add_proposal".into()))
        );
        assert_eq!(parse_stem("V0__x"), None);
        assert_eq!(parse_stem("V1__"), None);
        assert_eq!(parse_stem("V1_x"), None);
        assert_eq!(parse_stem("V1__a-b"), None);
        assert_eq!(slug("Add runs.proposal!"), "add_runs_proposal");
        assert_eq!(slug("--"), "migration");
    }

    #[test]
    fn load_sorts_and_refuses_repeated_versions() {
        let dir = tempfile::tempdir().unwrap();
        let sub = kind_dir(dir.path(), DbKind::Index);
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("V2__b.sql"), "SELECT 2;").unwrap();
        std::fs::write(sub.join("V1__a.sql"), "SELECT 1;").unwrap();
        let found = load(DbKind::Index, Some(dir.path())).unwrap();
        assert_eq!(found.iter().map(|m| m.version).collect::<Vec<_>>(), [1, 2]);
        std::fs::write(sub.join("V2__c.sql"), "SELECT 3;").unwrap();
        assert!(matches!(
            load(DbKind::Index, Some(dir.path())),
            Err(FilesError::RepeatedVersion { .. })
        ));
    }

    #[test]
    fn write_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let m = MigrationFile {
            version: 1,
            name: "x".into(),
            sql: "SELECT 1;\n".into(),
        };
        write(dir.path(), DbKind::Beamtime, &m).unwrap();
        assert!(matches!(
            write(dir.path(), DbKind::Beamtime, &m),
            Err(FilesError::Exists { .. })
        ));
    }
}
