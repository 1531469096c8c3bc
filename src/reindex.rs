//! Beamtimes → the index: find every beamtime, read each in one snapshot, and replace its
//! rows in the index when (and only when) it changed.
//!
//! "Changed" is proven by a watermark, `{inode}:{schema version}:{generation}`, read inside
//! the same read transaction as the rows: the generation is bumped by every write
//! transaction of a beamtime, the version by every migration, and the inode by replacing the
//! file. Checking it costs one open and one small query per beamtime.
//!
//! Cheaper still, and as safe: the watermark also records the size and modification time of
//! `beamtime.db` and its `-wal` file, and when they were read. If the files are unchanged
//! *and* were last modified well before that read, no write can have happened since (a write
//! would have moved a modification time past the read), so the beamtime is skipped on two
//! `stat` calls. A file modified close to the read falls back to the generation check,
//! because file times are coarse and two writes in one tick could look alike.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rusqlite::{Connection, OptionalExtension};
use serde_json::Value as Json;

use crate::beamtime;
use crate::db::{self, Access, DbError};
use crate::index::{self, BeamtimeEntry, Index, IndexError, IndexedRun, Researcher, Scalar};
use crate::ingest::writer::{RESEARCHER_KEYS, json_to_sql};
use crate::layout::{Layout, SafeName};
use crate::lock::{self, LockError};
use crate::migrations::files::{self, MigrationFile};
use crate::migrations::runner::{self, RunnerError};
use crate::migrations::upgrade::{self, UpgradeError};
use crate::schema::DbKind;
use crate::schema::declared::{self, Promoted};
use crate::settings::{IndexLocation, Settings};

/// What one reindex did: the summary line cron keeps.
#[derive(Debug, Default)]
pub struct Report {
    pub scanned: usize,
    pub changed: usize,
    pub unchanged: usize,
    pub removed: Vec<String>,
    /// Beamtimes that could not be read, with why; their old index rows are kept.
    pub failed: Vec<(PathBuf, String)>,
    /// Runs whose uid another beamtime already holds: (beamtime, uid, other beamtime).
    pub duplicates: Vec<(String, String, String)>,
    /// Promoted values the index could not hold as their column's type, indexed as NULL:
    /// (beamtime, uid, column, why).
    pub nulled: Vec<(String, String, String, String)>,
    pub seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReindexError {
    #[error(transparent)]
    Locked(#[from] LockError),
    #[error(transparent)]
    Index(#[from] UpgradeError),
    #[error(transparent)]
    Open(#[from] DbError),
    #[error(transparent)]
    Migrations(#[from] files::FilesError),
    #[error(transparent)]
    Write(#[from] IndexError),
    #[error(
        "another beamdb reindex of data root {root} is running (it holds the lock in the PostgreSQL index {url}); try again later"
    )]
    ServerLocked { url: String, root: String },
    #[error("{path}: cannot create data_root: {source}")]
    DataRoot {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Beamtimes(#[from] crate::layout::ListError),
    #[error(transparent)]
    Model(#[from] crate::tomlfile::TomlError),
}

impl crate::exit::HasExitStatus for ReindexError {
    fn exit_status(&self) -> crate::exit::ExitStatus {
        match self {
            ReindexError::Locked(e) => crate::exit::HasExitStatus::exit_status(e),
            ReindexError::Index(e) => crate::exit::HasExitStatus::exit_status(e),
            ReindexError::Open(e) => crate::exit::HasExitStatus::exit_status(e),
            ReindexError::Migrations(e) => crate::exit::HasExitStatus::exit_status(e),
            ReindexError::Beamtimes(e) => crate::exit::HasExitStatus::exit_status(e),
            ReindexError::Model(e) => crate::exit::HasExitStatus::exit_status(e),
            ReindexError::Write(e) => crate::exit::HasExitStatus::exit_status(e),
            ReindexError::DataRoot { .. } => crate::exit::ExitStatus::Failure,
            ReindexError::ServerLocked { .. } => crate::exit::ExitStatus::Locked,
        }
    }
}

/// What one reindex holds to its end (never read: dropping it releases the locks).
#[allow(dead_code)]
enum Held {
    /// The reindex lock file, and the migrate lock shared.
    Files(lock::LockGuard, lock::LockGuard),
    /// A PostgreSQL session advisory lock for this data root.
    #[cfg(feature = "postgres")]
    Server(index::pg::ReindexLock),
}

/// Why one beamtime was skipped.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error(transparent)]
    Open(#[from] DbError),
    #[error("cannot read it: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("not a beamdb beamtime database (no `runs` table)")]
    Foreign,
    #[error("at a schema version this beamdb does not know: {0}")]
    Version(RunnerError),
    #[error("cannot stat it: {0}")]
    Stat(std::io::Error),
}

enum Read {
    Unchanged,
    Changed(Box<BeamtimeEntry>),
}

/// How much older than the previous read a file's modification time must be for its stamp
/// alone to prove "unchanged": far more than any filesystem's timestamp granularity.
const STAMP_MARGIN_NS: i128 = 2_000_000_000;

/// Size and modification time (ns since the epoch) of a file, or `None` when absent.
type FileStamp = Option<(u64, i128)>;

/// What a watermark records: the content proof and the files' stamps when it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Watermark {
    /// `{inode}:{schema version}:{generation}`.
    content: String,
    db: FileStamp,
    wal: FileStamp,
    read_at_ns: i128,
    /// The index's [`Index::signature`] when the beamtime was read into it.
    index: String,
}

impl Watermark {
    fn encode(&self) -> String {
        let stamp = |s: &FileStamp| s.map_or("-".to_string(), |(len, t)| format!("{len}/{t}"));
        format!(
            "{}|{}|{}|{}|{}",
            self.content,
            stamp(&self.db),
            stamp(&self.wal),
            self.read_at_ns,
            self.index
        )
    }

    fn decode(text: &str) -> Option<Watermark> {
        let mut parts = text.split('|');
        let content = parts.next()?.to_string();
        let stamp = |part: Option<&str>| -> Option<FileStamp> {
            match part? {
                "-" => Some(None),
                s => {
                    let (len, t) = s.split_once('/')?;
                    Some(Some((len.parse().ok()?, t.parse().ok()?)))
                }
            }
        };
        let db = stamp(parts.next())?;
        let wal = stamp(parts.next())?;
        let read_at_ns = parts.next()?.parse().ok()?;
        let index = parts.next()?.to_string();
        Some(Watermark {
            content,
            db,
            wal,
            read_at_ns,
            index,
        })
    }

    /// Whether files stamped `db` and `wal` now are proven unchanged since this watermark.
    fn files_prove_unchanged(&self, db: &FileStamp, wal: &FileStamp) -> bool {
        let old_enough =
            |s: &FileStamp| s.is_none_or(|(_, t)| t < self.read_at_ns - STAMP_MARGIN_NS);
        self.db == *db && self.wal == *wal && old_enough(db) && old_enough(wal)
    }
}

fn stamp(path: &Path) -> FileStamp {
    let meta = std::fs::metadata(path).ok()?;
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some((meta.len(), mtime.as_nanos() as i128))
}

fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// Reindexes everything under `settings.data_root`. `full` re-reads unchanged beamtimes too.
/// `progress` is called once per beamtime with (done, total).
pub fn reindex(
    settings: &Settings,
    full: bool,
    progress: &dyn Fn(usize, usize),
) -> Result<Report, ReindexError> {
    let started = Instant::now();
    let layout = Layout::new(&settings.data_root);
    std::fs::create_dir_all(layout.root()).map_err(|source| ReindexError::DataRoot {
        path: layout.root().to_path_buf(),
        source,
    })?;
    let _held = match settings.index_location() {
        IndexLocation::Sqlite(index_path) => {
            let one_at_a_time = lock::try_exclusive(&layout.reindex_lock(), "reindex")?;
            let index_migrations =
                files::load(DbKind::Index, settings.schema.migrations_dir.as_deref())?;
            // Held shared to the end (no migrate meanwhile); an upgrade of the index happens
            // before, under it exclusively.
            let (_, no_migrate) = upgrade::ensure(
                &layout.migrate_lock(),
                &index_path,
                &index_migrations,
                &settings.sqlite,
                lock::Wait::No,
                std::time::Duration::from_millis(u64::from(settings.sqlite.busy_timeout_ms)),
            )?;
            Held::Files(one_at_a_time, no_migrate)
        }
        // A lock file on one host is invisible to another: in a shared index, the server
        // holds the lock, one per data root, so two hosts' reindexes of their own data roots
        // run side by side and two of the same data root do not.
        #[cfg(feature = "postgres")]
        IndexLocation::Postgres(url) => {
            let root = std::fs::canonicalize(layout.root())
                .unwrap_or_else(|_| layout.root().to_path_buf())
                .display()
                .to_string();
            match index::pg::try_reindex_lock(&url, &root).map_err(IndexError::from)? {
                Some(lock) => Held::Server(lock),
                None => {
                    return Err(ReindexError::ServerLocked {
                        url: url.to_string(),
                        root,
                    });
                }
            }
        }
        #[cfg(not(feature = "postgres"))]
        IndexLocation::Postgres(_) => {
            unreachable!("settings refuse a postgresql:// url without the postgres feature")
        }
    };
    let mut index = index::open(settings, Access::ReadWrite)?;
    let promoted = declared::promoted(settings.schema.models_dir.as_deref())?;
    let sources: BTreeMap<String, String> = promoted
        .iter()
        .map(|p| (p.column.clone(), p.source_text()))
        .collect();
    let signature = index.signature(&sources)?;
    // A beamtime indexed under another index schema (a promoted column added or renamed, a
    // migration that rebuilt runs_index) is read again, all of them: the full-text rows of
    // every beamtime point at runs_index rows by rowid.
    // Only this data root's beamtimes: a shared PostgreSQL index holds other hosts' too,
    // indexed under their own models, which this reindex must neither judge nor clear.
    let (ids, odd) = layout.beamtimes()?;
    let present: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    let mine: std::collections::BTreeSet<&String> = present.iter().collect();
    let schema_changed = index
        .watermarks()?
        .iter()
        .filter(|(id, _)| mine.contains(id))
        .any(|(_, w)| {
            w.as_deref().and_then(Watermark::decode).map(|w| w.index) != Some(signature.clone())
        });
    if full || schema_changed {
        index.clear_watermarks(&present)?;
        index.clear_text()?;
    }
    let stored = index.watermarks()?;
    let beamtime_migrations =
        files::load(DbKind::Beamtime, settings.schema.migrations_dir.as_deref())?;

    let mut report = Report {
        scanned: ids.len(),
        ..Report::default()
    };
    for path in odd {
        report.failed.push((
            path,
            "the folder name is not a valid beamtime id; rename it".to_string(),
        ));
    }
    let total = ids.len();
    for (done, id) in ids.iter().enumerate() {
        let path = layout.beamtime_db(id);
        let watermark = stored.get(id.as_str()).cloned().flatten();
        let wanted = Wanted {
            index: index.as_ref(),
            promoted: &promoted,
            signature: &signature,
        };
        match read_beamtime(
            id,
            &path,
            watermark.as_deref(),
            &beamtime_migrations,
            &wanted,
            settings,
        ) {
            Ok(Read::Unchanged) => report.unchanged += 1,
            Ok(Read::Changed(entry)) => match index.replace_beamtime(&entry, now()) {
                Ok(replaced) => {
                    for (uid, other) in replaced.duplicates {
                        report.duplicates.push((id.to_string(), uid, other));
                    }
                    for (uid, column, why) in replaced.nulled {
                        report.nulled.push((id.to_string(), uid, column, why));
                    }
                    report.changed += 1;
                }
                // The server refused this beamtime's data (a value, a constraint): it is
                // reported and skipped, its previous rows kept, as for a beamtime that
                // cannot be read; the others are still indexed. A lost connection or a
                // broken schema stops the reindex (exit 1).
                Err(err) if err.refused_data() => report.failed.push((path, err.to_string())),
                Err(err) => return Err(err.into()),
            },
            Err(err) => report.failed.push((path, err.to_string())),
        }
        progress(done + 1, total);
    }
    let under = layout.beamtimes_dir().display().to_string();
    report.removed = index.forget_beamtimes_except(&present, &under)?;
    if report.changed > 0 || !report.removed.is_empty() {
        index.forget_unreferenced_researchers()?;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// What the index wants of each beamtime.
struct Wanted<'a> {
    index: &'a dyn Index,
    /// The model's promoted columns (their RunStart keys).
    promoted: &'a [Promoted],
    signature: &'a str,
}

/// Reads beamtime `id` in one read transaction, unless its watermark equals `stored`.
fn read_beamtime(
    id: &SafeName,
    path: &Path,
    stored: Option<&str>,
    migrations: &[MigrationFile],
    wanted: &Wanted<'_>,
    settings: &Settings,
) -> Result<Read, ReadError> {
    let stored = stored.and_then(Watermark::decode);
    // Stamps first, then the snapshot: a write in between is in the snapshot, and its newer
    // stamp only makes the next reindex look again.
    let read_at_ns = now_ns();
    let db_stamp = stamp(path);
    let wal_stamp = stamp(&wal_path(path));
    if let Some(stored) = &stored
        && stored.index == wanted.signature
        && stored.files_prove_unchanged(&db_stamp, &wal_stamp)
    {
        return Ok(Read::Unchanged);
    }
    let inode = std::fs::metadata(path).map_err(ReadError::Stat)?.ino();
    let mut conn = db::open(path, Access::ReadOnly, &settings.sqlite)?;
    // One read transaction: in WAL mode, a consistent snapshot that never blocks a writer.
    let tx = conn.transaction()?;
    if !has_table(&tx, "runs")? || !has_table(&tx, "beamtime_meta")? {
        return Err(ReadError::Foreign);
    }
    let watermark = Watermark {
        content: content_proof(&tx, inode)?,
        db: db_stamp,
        wal: wal_stamp,
        read_at_ns,
        index: wanted.signature.to_string(),
    };
    if stored.is_some_and(|s| s.content == watermark.content && s.index == watermark.index) {
        return Ok(Read::Unchanged);
    }
    runner::status(&tx, migrations).map_err(ReadError::Version)?;

    let meta = beamtime_meta(&tx)?;
    let have = promoted_columns(&tx, wanted.index.extra_columns())?;
    let runs = read_runs(&tx, &have, wanted.index.extra_columns(), wanted.promoted)?;
    tx.commit()?;

    let mut researchers: BTreeMap<String, Researcher> = BTreeMap::new();
    let mut indexed = Vec::with_capacity(runs.len());
    for (run, metadata) in runs {
        let found = researcher_of(&run.researcher, &metadata);
        let name = found.as_ref().map(|r| r.name.clone());
        if let Some(r) = found {
            merge_researcher(&mut researchers, r);
        }
        indexed.push(IndexedRun {
            researcher: name,
            ..run
        });
    }
    let beamtime_researcher = meta.get("researcher").map(|name| Researcher {
        name: name.clone(),
        email: meta.get("researcher_email").cloned(),
        orcid: meta.get("researcher_orcid").cloned(),
        affiliation: meta.get("researcher_affiliation").cloned(),
    });
    let researcher = match beamtime_researcher {
        Some(r) => {
            let name = r.name.clone();
            merge_researcher(&mut researchers, r);
            Some(name)
        }
        None => most_common_researcher(&indexed),
    };
    Ok(Read::Changed(Box::new(BeamtimeEntry {
        id: id.to_string(),
        db_path: path.display().to_string(),
        watermark: watermark.encode(),
        researcher,
        researchers: researchers.into_values().collect(),
        runs: indexed,
    })))
}

/// `{inode}:{schema version}:{generation}` of the beamtime database open in `conn`: what a
/// watermark's content must equal for the beamtime to be unchanged.
fn content_proof(conn: &Connection, inode: u64) -> rusqlite::Result<String> {
    let version = schema_version(conn)?;
    let generation = beamtime::generation(conn)?;
    Ok(format!("{inode}:{}:{generation}", version.unwrap_or(0)))
}

/// Whether the beamtime database at `path` is provably unchanged since the index stored
/// `watermark` for it, as reindex would judge: by the files' stamps when they are old enough,
/// else by its change counter (one read-only open). Anything unreadable counts as changed.
/// For readers of the index (`show`'s run lookup) that must know it is not stale.
pub fn unchanged_since(path: &Path, watermark: &str, settings: &Settings) -> bool {
    let Some(stored) = Watermark::decode(watermark) else {
        return false;
    };
    if stored.files_prove_unchanged(&stamp(path), &stamp(&wal_path(path))) {
        return true;
    }
    let Ok(inode) = std::fs::metadata(path).map(|m| m.ino()) else {
        return false;
    };
    let Ok(conn) = db::open(path, Access::ReadOnly, &settings.sqlite) else {
        return false;
    };
    has_table(&conn, "beamtime_meta").unwrap_or(false)
        && content_proof(&conn, inode).is_ok_and(|content| content == stored.content)
}

fn has_table(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1",
        [name],
        |_| Ok(()),
    )
    .optional()
    .map(|found| found.is_some())
}

fn schema_version(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    if !has_table(conn, crate::schema::introspect::HISTORY_TABLE)? {
        return Ok(None);
    }
    conn.query_row(
        &format!(
            "SELECT max(version) FROM {}",
            crate::schema::introspect::HISTORY_TABLE
        ),
        [],
        |row| row.get(0),
    )
}

fn beamtime_meta(conn: &Connection) -> rusqlite::Result<BTreeMap<String, String>> {
    let mut stmt = conn.prepare("SELECT key, value FROM beamtime_meta")?;
    let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    rows.collect()
}

/// The promoted metadata columns the index wants that this beamtime's `runs` has.
fn promoted_columns(conn: &Connection, wanted: &[String]) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('runs')")?;
    let have: Vec<String> = stmt
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(wanted
        .iter()
        .filter(|c| have.contains(c))
        .cloned()
        .collect())
}

/// The beamtime's runs with what the index keeps of them. A promoted column is copied from
/// the beamtime's `runs` when it holds a value there; otherwise (a run ingested before the
/// column existed) it is read from the RunStart key its `source` names.
fn read_runs(
    conn: &Connection,
    have: &[String],
    wanted: &[String],
    promoted: &[Promoted],
) -> rusqlite::Result<Vec<(IndexedRun, Option<Json>)>> {
    let extra: String = have
        .iter()
        .map(|c| format!(", r.{}", crate::render::ident(c)))
        .collect();
    let mut stmt = conn.prepare(&format!(
        "SELECT r.uid, s.name, r.plan_name, r.scan_id, r.time_start, r.time_stop, r.exit_status,
                r.num_events, r.researcher, r.metadata{extra}
         FROM runs r LEFT JOIN samples s ON s.id = r.sample_id"
    ))?;
    let rows = stmt.query_map([], |row| {
        let metadata: Option<String> = row.get(9)?;
        let doc: Option<Json> = metadata
            .as_deref()
            .and_then(|m| serde_json::from_str(m).ok());
        let mut extras = BTreeMap::new();
        for column in wanted {
            let stored = match have.iter().position(|c| c == column) {
                Some(i) => row.get::<_, rusqlite::types::Value>(10 + i)?,
                None => rusqlite::types::Value::Null,
            };
            let value = if stored == rusqlite::types::Value::Null {
                let from_doc = doc.as_ref().and_then(|d| {
                    match promoted.iter().find(|p| &p.column == column) {
                        Some(p) => p.lookup(d),
                        None => d.get(column).filter(|v| !v.is_null()),
                    }
                });
                from_doc.map_or(rusqlite::types::Value::Null, json_to_sql)
            } else {
                stored
            };
            extras.insert(column.clone(), Scalar::from(value));
        }
        Ok((
            IndexedRun {
                uid: row.get(0)?,
                sample_name: row.get(1)?,
                plan_name: row.get(2)?,
                scan_id: row.get(3)?,
                time_start: row.get(4)?,
                time_stop: row.get(5)?,
                exit_status: row.get(6)?,
                num_events: row.get(7)?,
                researcher: row.get(8)?,
                extra: extras,
                metadata,
            },
            doc,
        ))
    })?;
    rows.collect()
}

/// The run's researcher: the `runs.researcher` column, else a PI-style RunStart key; with
/// contact details from the RunStart when it has them.
fn researcher_of(column: &Option<String>, metadata: &Option<Json>) -> Option<Researcher> {
    let text = |keys: &[&str]| -> Option<String> {
        let doc = metadata.as_ref()?;
        keys.iter()
            .find_map(|k| doc.get(k).and_then(Json::as_str))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let name = column
        .as_ref()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| text(RESEARCHER_KEYS))?;
    Some(Researcher {
        name,
        email: text(&["researcher_email", "pi_email", "email"]),
        orcid: text(&["researcher_orcid", "orcid"]),
        affiliation: text(&["researcher_affiliation", "affiliation", "institution"]),
    })
}

fn merge_researcher(into: &mut BTreeMap<String, Researcher>, r: Researcher) {
    let entry = into.entry(r.name.clone()).or_insert_with(|| Researcher {
        name: r.name.clone(),
        ..Researcher::default()
    });
    entry.email = entry.email.take().or(r.email);
    entry.orcid = entry.orcid.take().or(r.orcid);
    entry.affiliation = entry.affiliation.take().or(r.affiliation);
}

fn most_common_researcher(runs: &[IndexedRun]) -> Option<String> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for name in runs.iter().filter_map(|r| r.researcher.as_deref()) {
        *counts.entry(name).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
        .map(|(name, _)| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_round_trips_and_needs_old_stamps() {
        let w = Watermark {
            content: "12:1:7".into(),
            db: Some((4096, 1_000_000_000_000)),
            wal: None,
            read_at_ns: 1_000_000_000_000 + STAMP_MARGIN_NS + 1,
            index: "0123456789abcdef".into(),
        };
        assert_eq!(Watermark::decode(&w.encode()), Some(w.clone()));
        assert!(w.files_prove_unchanged(&w.db, &w.wal));
        assert!(
            !w.files_prove_unchanged(&Some((4097, 1_000_000_000_000)), &None),
            "size changed"
        );
        assert!(
            !w.files_prove_unchanged(&w.db, &Some((0, 1))),
            "a WAL appeared"
        );
        let fresh = Watermark {
            read_at_ns: 1_000_000_000_000 + 1,
            ..w.clone()
        };
        assert!(
            !fresh.files_prove_unchanged(&w.db, &w.wal),
            "modified close to the read: check the generation"
        );
        assert_eq!(Watermark::decode("garbage"), None);
    }

    #[test]
    fn researcher_comes_from_column_then_runstart_keys() {
        let md: Option<Json> = Some(serde_json::json!({"pi_name": "Ada", "orcid": "0000-0001"}));
        let r = researcher_of(&None, &md).unwrap();
        assert_eq!(
            (r.name.as_str(), r.orcid.as_deref()),
            ("Ada", Some("0000-0001"))
        );
        let r = researcher_of(&Some("Grace".into()), &md).unwrap();
        assert_eq!(r.name, "Grace");
        assert!(researcher_of(&Some("  ".into()), &None).is_none());
    }

    #[test]
    fn most_common_researcher_breaks_ties_by_name() {
        let run = |name: &str| IndexedRun {
            researcher: Some(name.into()),
            ..IndexedRun::default()
        };
        let runs = [run("b"), run("a"), run("b"), run("a")];
        assert_eq!(most_common_researcher(&runs).as_deref(), Some("a"));
    }
}
