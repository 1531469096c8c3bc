//! `verify`: DESIGN.md's on-disk promises, checked on demand (as PostgreSQL's amcheck does),
//! and restored where that is safe.
//!
//! Checked per beamtime: SQLite's own integrity and foreign keys; that the live schema is what
//! the recorded migration history makes; that run, stream and event counts agree with the
//! stop documents; that every image_ref's frame is in the Zarr store with the recorded shape
//! and dtype; that every run group in the store belongs to a committed run; and that no
//! leftover of a killed ingest sits in the staging folder.
//!
//! Repairs never delete a committed run's data. Leftovers (groups no committed run owns,
//! staging folders) are removed, as the next ingest of that run would; of two copies of a
//! committed run's frames (an interrupted `--replace`), the one kept is the one the committed
//! rows prove whole, and when neither is, both are kept. The store's own group metadata is
//! rewritten when zarr-python could not open it (it holds only beamdb's description; the
//! damaged file is kept). A committed run whose
//! frames are missing breaks "every run whole or absent" in a way only its documents can
//! mend: it is *quarantined* — its rows are saved to a JSON file and whatever frames it still
//! has are moved beside it, under `{beamtime}/quarantine/`, then its rows are deleted in one
//! transaction — and the user re-ingests it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use rusqlite::Connection;
use rusqlite::types::ValueRef;
use serde_json::{Map, Value};

use crate::beamtime;
use crate::db::{self, Access, DbError};
use crate::diff;
use crate::frames::{self, Committed, FrameStore, Inspector, Recovered, Staged, StoreError};
use crate::ingest::writer;
use crate::layout::{Layout, SafeName};
use crate::lock::{self, LockError};
use crate::migrations::files::{self, FilesError, MigrationFile};
use crate::migrations::runner::{self, RunnerError};
use crate::schema::{DbKind, Renames, introspect};
use crate::settings::{Settings, SqliteSettings};

/// What `--repair` can do about a finding.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fix {
    /// Nothing automatic; the message says what to do.
    None,
    /// Remove what a killed ingest of run `uid` left (its group when no committed run owns
    /// it, its staging folders), exactly as the next ingest of that run would.
    Clean { uid: String },
    /// Move committed run `uid` out of the beamtime, rows and frames, into quarantine.
    Quarantine { uid: String },
    /// Rewrite the store's own group metadata at `path` (`zarr.json` or `runs/zarr.json`,
    /// inside `frames.zarr`), keeping the damaged file in quarantine. It holds nothing but a
    /// description beamdb always writes, so nothing is lost.
    StoreMetadata { path: String },
}

/// One problem, with where it is.
#[derive(Debug, Clone)]
pub struct Finding {
    /// A table and row, a Zarr path, or a file.
    pub location: String,
    pub message: String,
    pub fix: Fix,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// What checking one beamtime found.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// Worth saying, not a problem (an ingest in progress, pending migrations).
    pub notes: Vec<String>,
}

impl Report {
    fn find(&mut self, location: impl Into<String>, message: impl Into<String>, fix: Fix) {
        self.findings.push(Finding {
            location: location.into(),
            message: message.into(),
            fix,
        });
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Read and decode every frame, not only check that its chunk exists.
    pub deep: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Files(#[from] FilesError),
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl crate::exit::HasExitStatus for VerifyError {
    fn exit_status(&self) -> crate::exit::ExitStatus {
        match self {
            VerifyError::Db(e) => crate::exit::HasExitStatus::exit_status(e),
            VerifyError::Store(e) => crate::exit::HasExitStatus::exit_status(e),
            VerifyError::Lock(e) => crate::exit::HasExitStatus::exit_status(e),
            VerifyError::Files(e) => crate::exit::HasExitStatus::exit_status(e),
            VerifyError::Index(e) => crate::exit::HasExitStatus::exit_status(e),
            VerifyError::Sqlite { .. } | VerifyError::Io { .. } => crate::exit::ExitStatus::Failure,
        }
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> VerifyError + '_ {
    move |source| VerifyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Checks index.db's own integrity (it can always be rebuilt with `reindex --full`).
pub fn check_index(layout: &Layout, settings: &Settings) -> Result<Report, VerifyError> {
    let mut report = Report::default();
    if let crate::settings::IndexLocation::Postgres(_) = settings.index_location() {
        return check_server_index(settings).map(|()| report);
    }
    let path = layout.index_db();
    if !path.exists() {
        return Ok(report);
    }
    let location = path.display().to_string();
    match db::open(&path, Access::ReadOnly, &settings.sqlite) {
        Ok(conn) => {
            if let Err(e) = sqlite_checks(&conn, &location, &mut report) {
                report.find(&location, format!("cannot be read: {e}"), Fix::None);
            }
        }
        Err(e @ DbError::NotADatabase { .. }) => {
            report.find(
                &location,
                format!("{e}; `beamdb reindex --full` rebuilds it"),
                Fix::None,
            );
        }
        Err(e) => return Err(e.into()),
    }
    Ok(report)
}

/// A PostgreSQL index: the server keeps its own integrity; verify proves it can be reached
/// and read (a fault is exit 1, naming the server), as reindex and runs will need.
fn check_server_index(settings: &Settings) -> Result<(), VerifyError> {
    let index = crate::index::open(settings, Access::ReadOnly)?;
    index.counts()?;
    Ok(())
}

/// Checks one beamtime, reading only (its database is opened read-only, nothing is created).
pub fn check(
    layout: &Layout,
    id: &SafeName,
    settings: &Settings,
    options: Options,
) -> Result<Report, VerifyError> {
    let mut report = Report::default();
    let db_path = layout.beamtime_db(id);
    let location = db_path.display().to_string();
    let conn = match db::open(&db_path, Access::ReadOnly, &settings.sqlite) {
        Ok(conn) => conn,
        Err(e @ DbError::NotADatabase { .. }) => {
            report.find(&location, e.to_string(), Fix::None);
            return Ok(report);
        }
        Err(e) => return Err(e.into()),
    };
    let migrations = files::load(DbKind::Beamtime, settings.schema.migrations_dir.as_deref())?;
    // An S3 store is checked over the network: its bucket and credentials first (exit 2).
    let store_location = frames::location(&settings.frames, layout, id);
    let remote = FrameStore::existing_at(&store_location)?;
    // Frames in another store than the settings name: refused (exit 2) before a finding
    // (every run's frames would look missing, and a repair quarantine them all).
    frames::bind(
        &conn,
        &db_path,
        &store_location,
        &remote,
        frames::Bind::Check,
    )?;
    let checked = Beamtime {
        layout,
        id,
        conn: &conn,
        sqlite: &settings.sqlite,
        options,
        locked: false,
        remote: remote.is_remote().then_some(&remote),
    }
    .check(&migrations, &mut report);
    if let Err(e) = checked {
        // A database that cannot even be queried is a finding about it, not a crash of verify.
        report.find(&location, format!("cannot be read: {e}"), Fix::None);
    }
    Ok(report)
}

fn sqlite_checks(conn: &Connection, location: &str, report: &mut Report) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare("PRAGMA integrity_check(100)")?;
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for row in rows.iter().filter(|r| r.as_str() != "ok") {
        report.find(
            location,
            format!("integrity_check: {row}; restore the database from its backup"),
            Fix::None,
        );
    }
    let mut stmt =
        conn.prepare(r#"SELECT "table", rowid, parent FROM pragma_foreign_key_check"#)?;
    let rows: Vec<(String, Option<i64>, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    for (table, rowid, parent) in rows {
        report.find(
            format!(
                "{location}: {table} rowid {}",
                rowid.map_or("?".to_string(), |r| r.to_string())
            ),
            format!("foreign key: refers to a row of {parent} that does not exist"),
            Fix::None,
        );
    }
    Ok(())
}

struct Beamtime<'a> {
    layout: &'a Layout,
    id: &'a SafeName,
    conn: &'a Connection,
    sqlite: &'a SqliteSettings,
    options: Options,
    /// Set when the caller holds the run locks itself (repair).
    locked: bool,
    /// The beamtime's S3 frame store, when its frames are there.
    remote: Option<&'a FrameStore>,
}

/// One committed run, as far as the checks need it.
struct RunRow {
    num_events: i64,
    stop: Option<Value>,
    digest: Option<String>,
}

impl Beamtime<'_> {
    fn store_root(&self) -> PathBuf {
        self.layout.frames_store(self.id)
    }

    fn staging(&self) -> PathBuf {
        self.layout.frames_staging(self.id)
    }

    fn run_lock_path(&self, uid: &str) -> Option<PathBuf> {
        let uid = SafeName::new("run uid", uid).ok()?;
        Some(FrameStore::existing(&self.store_root(), &self.staging()).run_lock_path(&uid))
    }

    /// Whether an ingest of `uid` holds its lock right now.
    fn busy(&self, uid: &str) -> bool {
        !self.locked && self.run_lock_path(uid).is_some_and(|p| lock::is_held(&p))
    }

    fn check(&self, migrations: &[MigrationFile], report: &mut Report) -> rusqlite::Result<()> {
        let location = self.layout.beamtime_db(self.id).display().to_string();
        // One read transaction: a consistent snapshot while ingests commit.
        let tx = self.conn.unchecked_transaction()?;
        sqlite_checks(self.conn, &location, report)?;
        if !self.schema(migrations, &location, report)? {
            return Ok(());
        }
        let runs = self.runs()?;
        self.counts(&runs, report)?;
        if let Some(store) = self.remote {
            self.remote_frames(store, &runs, report)?;
            tx.finish()?;
            return Ok(());
        }
        self.store_metadata(report);
        let mut inspector = match Inspector::open(&self.store_root()) {
            Ok(i) => i,
            Err(e) => {
                report.find(
                    self.store_root().display().to_string(),
                    e.to_string(),
                    Fix::None,
                );
                return Ok(());
            }
        };
        self.image_refs(&mut inspector, None, report)?;
        self.groups(&runs, report)?;
        self.layout_marks(report)?;
        tx.finish()?;
        Ok(())
    }

    /// The live schema against the one its applied migrations make. False when the rest of
    /// the checks cannot run (no history: not a beamdb database).
    fn schema(
        &self,
        migrations: &[MigrationFile],
        location: &str,
        report: &mut Report,
    ) -> rusqlite::Result<bool> {
        let status = match runner::status(self.conn, migrations) {
            Ok(status) => status,
            Err(RunnerError::Sqlite(e)) => return Err(e),
            Err(e) => {
                report.find(
                    format!("{location}: migration history"),
                    e.to_string(),
                    Fix::None,
                );
                return Ok(false);
            }
        };
        if status.applied.is_empty() {
            report.find(
                location,
                "no migration history: not a beamdb beamtime database (or one never initialised); move it aside",
                Fix::None,
            );
            return Ok(false);
        }
        if !status.pending.is_empty() {
            report.notes.push(format!(
                "{location}: {} pending migration(s); `beamdb migrate` applies them",
                status.pending.len()
            ));
        }
        let applied: Vec<MigrationFile> = migrations
            .iter()
            .filter(|m| status.applied.contains(&m.stem()))
            .cloned()
            .collect();
        let expected = match runner::replay(&applied) {
            Ok(conn) => introspect::introspect(&conn)?,
            Err(e) => {
                report.find(
                    format!("{location}: migration history"),
                    format!("its migrations cannot be replayed: {e}"),
                    Fix::None,
                );
                return Ok(true);
            }
        };
        let live = introspect::introspect(self.conn)?;
        let lines = match diff::compare(&expected, &live, &Renames::default()) {
            Ok(ops) => ops.iter().map(ToString::to_string).collect(),
            Err(e) => e.lines(),
        };
        let last = status.applied.last().cloned().unwrap_or_default();
        for line in lines {
            report.find(
                format!("{location}: schema"),
                format!(
                    "differs from what its migration history (up to {last}) makes: {line}; the database was changed by hand"
                ),
                Fix::None,
            );
        }
        Ok(true)
    }

    /// The store's own group metadata opens in zarr-python (every run depends on it).
    fn store_metadata(&self, report: &mut Report) {
        let root = self.store_root();
        if !root.exists() {
            return;
        }
        for (path, why, rewritable) in frames::store_metadata_problems(&root) {
            let (what, fix) = if rewritable {
                (
                    "`verify --repair` rewrites it (it holds only beamdb's description) and keeps the damaged file in quarantine/",
                    Fix::StoreMetadata { path: path.clone() },
                )
            } else {
                (
                    "it holds an array's metadata, which beamdb never writes there, so nothing rewrites it: move it away by hand, then `verify --repair`",
                    Fix::None,
                )
            };
            report.find(
                format!("frames.zarr/{path}"),
                format!(
                    "damaged Zarr group metadata ({why}): zarr-python cannot open the store and ingest refuses to write into it; {what}"
                ),
                fix,
            );
        }
    }

    /// The frames of an S3 store: every version group under `runs/` is owned by a committed
    /// run (else it is a leftover that `--repair` deletes), and each committed run's group
    /// holds its layout marker with the committed digest, and every frame's chunk object and
    /// array metadata the run's image_refs name.
    fn remote_frames(
        &self,
        store: &FrameStore,
        runs: &BTreeMap<String, RunRow>,
        report: &mut Report,
    ) -> rusqlite::Result<()> {
        let owned = writer::owned_groups(self.conn)?;
        let unreachable = |report: &mut Report, at: String, e: StoreError| {
            report.find(
                at,
                format!("{e}; run `beamdb verify` again once the store answers"),
                Fix::None,
            );
        };
        let groups = match store.remote_groups() {
            Ok(groups) => groups.unwrap_or_default(),
            Err(e) => {
                unreachable(report, store.group_display(""), e);
                return Ok(());
            }
        };
        let owners: HashSet<&str> = owned.values().map(String::as_str).collect();
        for group in &groups {
            if owners.contains(group.as_str()) {
                continue;
            }
            let at = store.group_display(group);
            match frames::version_group_uid(group) {
                Some(uid) if self.busy(uid) => report
                    .notes
                    .push(format!("{at}: an ingest of run {uid} is writing it")),
                Some(uid) => report.find(
                    at,
                    "no committed run owns this version of the run's frames (an ingest was killed or failed before its commit, or a --replace was interrupted before deleting the version it replaced); `beamdb verify --repair` deletes it",
                    Fix::Clean {
                        uid: uid.to_string(),
                    },
                ),
                None => report.find(
                    at,
                    "not a group beamdb writes (runs/{uid}@{version}); beamdb leaves it alone: remove it by hand if nothing needs it",
                    Fix::None,
                ),
            }
        }
        // --deep: every frame is also read back and decoded, over S3.
        let mut inspector = match self.options.deep.then(|| Inspector::open_store(store)) {
            Some(Ok(inspector)) => Some(inspector),
            Some(Err(e)) => {
                unreachable(report, store.group_display(""), e);
                return Ok(());
            }
            None => None,
        };
        let db = self.layout.beamtime_db(self.id).display().to_string();
        for (uid, run) in runs {
            let Some(group) = owned.get(uid) else {
                report.find(
                    format!("{db}: run {uid}"),
                    "no version of the run's frames is recorded for the S3 store (the run was stored with frames on the filesystem); re-ingest it with --replace",
                    Fix::None,
                );
                continue;
            };
            let at = store.group_display(group);
            let objects: HashSet<String> = match store.remote_objects(group) {
                Ok(objects) => objects.into_iter().collect(),
                Err(e) => {
                    unreachable(report, at, e);
                    continue;
                }
            };
            let marker = match store.remote_object(group, "zarr.json") {
                Ok(bytes) => bytes.and_then(|b| serde_json::from_slice::<Value>(&b).ok()),
                Err(e) => {
                    unreachable(report, at, e);
                    continue;
                }
            };
            let beamdb = marker.as_ref().map(|m| &m["attributes"]["beamdb"]);
            let problem = match beamdb {
                None => Some("its group metadata (zarr.json) is missing or not JSON".to_string()),
                Some(b) if b["content_digest"].as_str() != run.digest.as_deref() => {
                    Some("its group does not carry the committed run's content digest".into())
                }
                Some(b) if b["layout"].as_u64() != Some(crate::store_columns::LAYOUT_VERSION) => {
                    Some("its group has no layout marker".into())
                }
                Some(_) => None,
            };
            if let Some(problem) = problem {
                report.find(
                    &at,
                    format!("{problem}; re-ingest the run with --replace"),
                    Fix::None,
                );
            }
            let prefix = format!("runs/{group}/");
            let mut missing: BTreeMap<String, Vec<i64>> = BTreeMap::new();
            for frame in writer::committed_frames(self.conn, uid)? {
                let Some(inside) = frame.array.strip_prefix(&prefix) else {
                    report.find(
                        format!("{db}: image_refs of run {uid}"),
                        format!(
                            "{} is not inside the run's group {group}; re-ingest the run with --replace",
                            frame.array
                        ),
                        Fix::None,
                    );
                    continue;
                };
                let dims = frame
                    .frame_shape
                    .as_deref()
                    .and_then(|t| serde_json::from_str::<Vec<u64>>(t).ok())
                    .map_or(0, |s| s.len());
                let chunk = format!("{inside}/c/{}{}", frame.index, "/0".repeat(dims));
                if !objects.contains(&chunk) || !objects.contains(&format!("{inside}/zarr.json")) {
                    missing
                        .entry(inside.to_string())
                        .or_default()
                        .push(frame.index);
                } else if let Some(problem) = inspector
                    .as_mut()
                    .and_then(|i| i.frame_problem(&frame.array, &frame, 0, true))
                {
                    report.find(
                        format!("{at}/{inside}"),
                        format!(
                            "frame {}: {problem}; re-ingest the run with --replace",
                            frame.index
                        ),
                        Fix::None,
                    );
                }
            }
            for (array, indexes) in missing {
                let shown: Vec<String> = indexes.iter().take(10).map(i64::to_string).collect();
                report.find(
                    format!("{at}/{array}"),
                    format!(
                        "{} frame(s) missing (indexes {}{}); the run's documents can restore them: re-ingest it with --replace",
                        indexes.len(),
                        shown.join(", "),
                        if indexes.len() > 10 { ", …" } else { "" }
                    ),
                    Fix::None,
                );
            }
        }
        Ok(())
    }

    fn runs(&self) -> rusqlite::Result<BTreeMap<String, RunRow>> {
        let mut stmt = self
            .conn
            .prepare("SELECT uid, num_events, stop_metadata, content_digest FROM runs")?;
        let rows = stmt.query_map([], |r| {
            let stop: Option<String> = r.get(2)?;
            Ok((
                r.get::<_, String>(0)?,
                RunRow {
                    num_events: r.get(1)?,
                    stop: stop.and_then(|s| serde_json::from_str(&s).ok()),
                    digest: r.get(3)?,
                },
            ))
        })?;
        rows.collect()
    }

    /// runs.num_events, the stop document's num_events and the events stored agree.
    fn counts(&self, runs: &BTreeMap<String, RunRow>, report: &mut Report) -> rusqlite::Result<()> {
        // A stream's events are its seq_nums: those with an event document, and those a
        // stream_datum delivered without one (a fly scan's frames and values, stored in
        // image_refs with no event_uid). The stop's num_events counts both.
        let mut stmt = self.conn.prepare(
            "SELECT s.run_uid, s.name, count(*) FROM (
               SELECT stream_uid, seq_num FROM events
               UNION
               SELECT stream_uid, seq_num FROM image_refs WHERE event_uid IS NULL
             ) p JOIN streams s ON s.uid = p.stream_uid GROUP BY s.run_uid, s.name",
        )?;
        let mut actual: HashMap<String, BTreeMap<String, i64>> = HashMap::new();
        for row in stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })? {
            let (run, stream, n) = row?;
            actual.entry(run).or_default().insert(stream, n);
        }
        let empty = BTreeMap::new();
        for (uid, run) in runs {
            let streams = actual.get(uid).unwrap_or(&empty);
            let stored: i64 = streams.values().sum();
            let location = format!("runs {uid}");
            let stop_counts = run
                .stop
                .as_ref()
                .and_then(|s| s.get("num_events"))
                .and_then(Value::as_object);
            let expected = match stop_counts {
                Some(counts) => {
                    let mut names: BTreeSet<&String> = counts.keys().collect();
                    names.extend(streams.iter().filter(|(_, n)| **n > 0).map(|(k, _)| k));
                    for name in names {
                        let said = counts.get(name).and_then(Value::as_i64).unwrap_or(0);
                        let has = streams.get(name).copied().unwrap_or(0);
                        if said != has {
                            report.find(
                                &location,
                                format!(
                                    "stream {name}: the stop document says {said} events, the database has {has}"
                                ),
                                Fix::None,
                            );
                        }
                    }
                    counts.values().filter_map(Value::as_i64).sum()
                }
                None => stored,
            };
            if run.num_events != expected {
                report.find(
                    &location,
                    format!(
                        "num_events is {}, but {expected} events {}",
                        run.num_events,
                        if stop_counts.is_some() {
                            "per the stop document"
                        } else {
                            "are stored"
                        }
                    ),
                    Fix::None,
                );
            }
        }
        Ok(())
    }

    /// Every image_ref's frame is in the store, as recorded. `only` limits it to one run.
    /// Problems are grouped per run, array and kind, so a lost run is a few lines, not
    /// thousands.
    fn image_refs(
        &self,
        inspector: &mut Inspector,
        only: Option<&str>,
        report: &mut Report,
    ) -> rusqlite::Result<()> {
        let mut stmt = self.conn.prepare(
            "SELECT i.id, s.run_uid, i.zarr_group, i.index_in_stack, i.dtype, i.frame_shape
             FROM image_refs i LEFT JOIN streams s ON s.uid = i.stream_uid
             WHERE ?1 IS NULL OR s.run_uid = ?1 ORDER BY i.id",
        )?;
        type Row = (i64, Option<String>, String, i64, String, Option<String>);
        let rows = stmt.query_map([only], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?;
        // (run, array, problem) → image_ref ids and frame indexes.
        let mut problems: BTreeMap<(String, String, String), Vec<(i64, i64)>> = BTreeMap::new();
        for row in rows {
            let (id, run, path, index, dtype, frame_shape): Row = row?;
            let Some(run) = run else {
                report.find(
                    format!("image_refs id {id}"),
                    "belongs to no stream (dangling stream_uid)",
                    Fix::None,
                );
                continue;
            };
            let problem = self.frame_problem(inspector, &run, &path, index, dtype, frame_shape);
            if let Some(problem) = problem {
                problems
                    .entry((run, path, problem))
                    .or_default()
                    .push((id, index));
            }
        }
        for ((run, path, problem), rows) in problems {
            let fix = if self.busy(&run) {
                report.notes.push(format!(
                    "run {run}: an ingest of it is running; its frames were not judged"
                ));
                continue;
            } else {
                Fix::Quarantine { uid: run.clone() }
            };
            let ids: Vec<String> = rows.iter().take(5).map(|(id, _)| id.to_string()).collect();
            let indexes: Vec<String> = rows.iter().take(5).map(|(_, i)| i.to_string()).collect();
            let more = if rows.len() > 5 { ", …" } else { "" };
            report.find(
                format!("frames.zarr/{path} (run {run})"),
                format!(
                    "{problem}: {} image_refs (ids {}{more}; frame indexes {}{more}); `verify --repair` quarantines the run for re-ingest",
                    rows.len(),
                    ids.join(", "),
                    indexes.join(", "),
                ),
                fix,
            );
        }
        Ok(())
    }

    fn frame_problem(
        &self,
        inspector: &mut Inspector,
        run: &str,
        path: &str,
        index: i64,
        dtype: String,
        frame_shape: Option<String>,
    ) -> Option<String> {
        if !path.starts_with(&format!("runs/{run}/")) {
            return Some("image_ref points outside its run's group".into());
        }
        let frame = writer::frame_ref(path.to_string(), index, dtype, frame_shape);
        // The store's own groups and the run's group are judged on their own (store metadata,
        // content digest); the stream groups here.
        inspector.frame_problem(path, &frame, 3, self.options.deep)
    }

    /// Every group under runs/ belongs to a committed run (and holds its frames); no
    /// leftovers in the staging folder.
    fn groups(&self, runs: &BTreeMap<String, RunRow>, report: &mut Report) -> rusqlite::Result<()> {
        let root = self.store_root();
        let groups = match frames::run_groups(&root) {
            Ok(groups) => groups,
            Err(e) => {
                report.find(
                    root.display().to_string(),
                    format!("cannot list runs/: {e}"),
                    Fix::None,
                );
                return Ok(());
            }
        };
        let staging = self.staging();
        let leftovers = match frames::staging_leftovers(&staging) {
            Ok(found) => found,
            Err(e) => {
                report.find(
                    staging.display().to_string(),
                    format!("cannot list the staging folder: {e}"),
                    Fix::None,
                );
                Vec::new()
            }
        };
        for uid in groups {
            let location = format!("frames.zarr/runs/{uid}");
            if SafeName::new("run uid", &uid).is_err() {
                report.find(
                    location,
                    "not a run uid (not a safe name); nothing beamdb wrote: move it away",
                    Fix::None,
                );
                continue;
            }
            match runs.get(&uid) {
                None => {
                    if self.busy(&uid) || self.committed_now(&uid)? {
                        report
                            .notes
                            .push(format!("{location}: an ingest of this run is running"));
                        continue;
                    }
                    report.find(
                        location,
                        "orphan group: no committed run owns it (left by an ingest killed before its commit); `verify --repair` removes it",
                        Fix::Clean { uid },
                    );
                }
                Some(run) => {
                    let digest = frames::group_digest(&root, &uid);
                    if run.digest.is_some() && digest != run.digest && !self.busy(&uid) {
                        let replaced = leftovers.iter().any(|(u, _, _)| *u == uid);
                        report.find(
                            location,
                            if replaced {
                                "frames of other documents than the committed run's (an interrupted --replace); `verify --repair` puts back the copy that provably holds every committed frame"
                            } else {
                                "the group's content digest is not the committed run's (incomplete or foreign frames); re-ingest the run with --replace"
                            },
                            if replaced {
                                Fix::Clean { uid }
                            } else {
                                Fix::None
                            },
                        );
                    }
                }
            }
        }
        for (uid, what, path) in leftovers {
            if self.busy(&uid) {
                continue;
            }
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let fix = if what.is_some() && SafeName::new("run uid", &uid).is_ok() {
                Fix::Clean { uid }
            } else {
                Fix::None
            };
            let message = match what {
                Some(Staged::Old) => {
                    "leftover of an interrupted ingest --replace (a copy of the run's frames); `verify --repair` keeps whichever copy provably holds every committed frame"
                }
                Some(Staged::New) => {
                    "leftover of an interrupted ingest --replace (a replacement never committed); `verify --repair` removes it"
                }
                Some(Staged::Trash) => {
                    "leftover of an interrupted ingest (frames it was deleting, already judged not needed by any committed run); `verify --repair` removes it"
                }
                None => "not something beamdb writes here; move it away",
            };
            report.find(format!("frames.staging/{name}"), message, fix);
        }
        Ok(())
    }

    /// Runs whose store group lacks the xarray layout (written by an earlier beamdb, or an
    /// interrupted conversion): not a broken promise of the data, one note for all of them.
    fn layout_marks(&self, report: &mut Report) -> rusqlite::Result<()> {
        let old = crate::store_columns::to_convert(self.conn, &self.store_root())?
            .iter()
            .filter(|uid| !self.busy(uid))
            .count();
        if old > 0 {
            report.notes.push(format!(
                "{old} run(s) without the xarray layout of frames.zarr (docs/reading.md): `beamdb migrate` converts them"
            ));
        }
        Ok(())
    }

    /// Whether run `uid` is committed now (outside the snapshot: an ingest may just have).
    fn committed_now(&self, uid: &str) -> rusqlite::Result<bool> {
        let db_path = self.layout.beamtime_db(self.id);
        let Ok(fresh) = db::open(&db_path, Access::ReadOnly, self.sqlite) else {
            return Ok(false);
        };
        Ok(writer::committed_digest(&fresh, uid)?.is_some())
    }
}

/// What `--repair` did (or left alone), one line each.
#[derive(Debug, Default)]
pub struct Repaired {
    pub done: Vec<String>,
    pub skipped: Vec<String>,
}

/// Repairs what [`check`] found and marked as fixable, taking each run's ingest lock first
/// (a run being ingested is left alone). The caller holds the migrate lock shared.
pub fn repair(
    layout: &Layout,
    id: &SafeName,
    settings: &Settings,
    findings: &[Finding],
) -> Result<Repaired, VerifyError> {
    let mut repaired = Repaired::default();
    let fixes: BTreeSet<&Fix> = findings
        .iter()
        .map(|f| &f.fix)
        .filter(|f| **f != Fix::None)
        .collect();
    if fixes.is_empty() {
        return Ok(repaired);
    }
    let db_path = layout.beamtime_db(id);
    let mut conn = db::open(&db_path, Access::ReadWrite, &settings.sqlite)?;
    let sql = |source| VerifyError::Sqlite {
        path: db_path.clone(),
        source,
    };
    let root = layout.frames_store(id);
    let staging = layout.frames_staging(id);
    let store_location = frames::location(&settings.frames, layout, id);
    let store = FrameStore::existing_at(&store_location)?;
    // Checked again, under the repair's own connection: nothing is deleted in a store
    // that is not this beamtime's (an unowned S3 store is claimed first).
    frames::bind(
        &conn,
        &db_path,
        &store_location,
        &store,
        frames::Bind::Claim,
    )?;
    for fix in fixes {
        if let Fix::StoreMetadata { path } = fix {
            let keep = layout.quarantine_dir(id).join(format!(
                "frames.zarr-{}-{}.damaged",
                path.replace('/', "-"),
                stamp()
            ));
            match frames::rewrite_store_group(&root, path, &keep) {
                Ok(true) => repaired.done.push(format!(
                    "rewrote frames.zarr/{path} (the damaged file is kept as {})",
                    keep.display()
                )),
                Ok(false) => {}
                Err(e @ StoreError::NotOurs { .. }) => repaired.skipped.push(e.to_string()),
                Err(e) => return Err(e.into()),
            }
            continue;
        }
        let (Fix::Clean { uid } | Fix::Quarantine { uid }) = fix else {
            continue;
        };
        let Ok(safe) = SafeName::new("run uid", uid) else {
            continue;
        };
        let _lock = match lock::run_lock(&store.run_lock_path(&safe), lock::Wait::No) {
            Ok(guard) => guard,
            Err(LockError::Held { .. }) => {
                repaired
                    .skipped
                    .push(format!("run {uid}: left alone, an ingest of it is running"));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let committed = writer::committed_digest(&conn, uid).map_err(sql)?;
        let committed_group = writer::committed_group(&conn, uid).map_err(sql)?;
        match fix {
            Fix::Clean { .. } => {
                let before = present(&store, &root, &staging, uid)?;
                let conn = &conn;
                let recovered = store.recover(
                    &safe,
                    committed.as_ref().map(|d| Committed {
                        digest: d.as_deref(),
                        group: committed_group.as_deref(),
                    }),
                    || writer::committed_frames(conn, uid).map_err(sql),
                );
                let recovered = match recovered {
                    Ok(recovered) => recovered,
                    Err(VerifyError::Store(e @ StoreError::Undecided { .. })) => {
                        repaired.skipped.push(format!("run {uid}: {e}"));
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let after = present(&store, &root, &staging, uid)?;
                let gone: Vec<String> = before.difference(&after).cloned().collect();
                if !gone.is_empty() {
                    // Only what recovery proved: the kept copy holds every committed frame.
                    let what = match recovered {
                        Recovered::RestoredReplaced => {
                            "(an interrupted --replace; the copy that holds every committed frame, checked frame by frame, is back in place)"
                        }
                        Recovered::FinishedReplace if committed.is_some() => {
                            "(an interrupted --replace; the group in place holds every committed frame, checked frame by frame)"
                        }
                        _ if committed.is_some() => {
                            "(left by an interrupted ingest of the run: a replacement never committed, or frames it was deleting; the committed frames were not touched)"
                        }
                        _ => "(no committed run owns them: left by a killed ingest)",
                    };
                    repaired
                        .done
                        .push(format!("removed {} {what}", gone.join(", ")));
                }
            }
            Fix::Quarantine { .. } => {
                if committed.is_none() {
                    continue;
                }
                // Re-judged under the lock: a --replace may have mended it since the check.
                let mut report = Report::default();
                let bt = Beamtime {
                    layout,
                    id,
                    conn: &conn,
                    sqlite: &settings.sqlite,
                    options: Options::default(),
                    locked: true,
                    remote: None,
                };
                let mut inspector = Inspector::open(&root)?;
                bt.image_refs(&mut inspector, Some(uid), &mut report)
                    .map_err(sql)?;
                if report.findings.is_empty() {
                    continue;
                }
                let why: Vec<String> = report.findings.iter().map(ToString::to_string).collect();
                let line = quarantine(layout, id, &store, &mut conn, &safe, &why.join("; "))?;
                repaired.done.push(line);
            }
            Fix::None | Fix::StoreMetadata { .. } => {}
        }
    }
    Ok(repaired)
}

/// The frame-store paths of run `uid` that exist (relative names, for messages; on S3, the
/// URLs of the run's version groups).
fn present(
    store: &FrameStore,
    root: &Path,
    staging: &Path,
    uid: &str,
) -> Result<BTreeSet<String>, StoreError> {
    if let Some(groups) = store.remote_groups()? {
        return Ok(groups
            .iter()
            .filter(|g| frames::version_group_uid(g) == Some(uid))
            .map(|g| store.group_display(g))
            .collect());
    }
    let mut found = BTreeSet::new();
    if root.join("runs").join(uid).exists() {
        found.insert(format!("frames.zarr/runs/{uid}"));
    }
    for suffix in ["new", "old", "trash"] {
        if staging.join(format!("{uid}.{suffix}")).exists() {
            found.insert(format!("frames.staging/{uid}.{suffix}"));
        }
    }
    Ok(found)
}

/// Saves run `uid`'s rows to a JSON file and moves its frames beside it (both under
/// `{beamtime}/quarantine/`), then deletes the rows in one transaction that bumps the change
/// counter. The order makes a crash at any point safe: the rows go last, so until then the
/// next `verify --repair` simply does it again; the frames are moved, never deleted.
fn quarantine(
    layout: &Layout,
    id: &SafeName,
    store: &FrameStore,
    conn: &mut Connection,
    uid: &SafeName,
    why: &str,
) -> Result<String, VerifyError> {
    let db_path = layout.beamtime_db(id);
    let sql = |source| VerifyError::Sqlite {
        path: db_path.clone(),
        source,
    };
    let dir = layout.quarantine_dir(id);
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let stamp = stamp();
    let mut base = format!("{uid}-{stamp}");
    let mut n = 1;
    while dir.join(format!("{base}.json")).exists() {
        n += 1;
        base = format!("{uid}-{stamp}-{n}");
    }
    let json_path = dir.join(format!("{base}.json"));
    let frames_path = dir.join(format!("{base}.zarr"));
    let old_frames_path = dir.join(format!("{base}.old.zarr"));

    let streams = "SELECT uid FROM streams WHERE run_uid = ?1";
    let mut doc = Map::new();
    doc.insert("beamdb_quarantine".into(), 1.into());
    doc.insert("beamtime".into(), id.as_str().into());
    doc.insert("run_uid".into(), uid.as_str().into());
    doc.insert("quarantined_at".into(), stamp.clone().into());
    doc.insert("reason".into(), why.into());
    doc.insert(
        "frames_moved_to".into(),
        frames_path.display().to_string().into(),
    );
    doc.insert(
        "restore".into(),
        "re-ingest the run from its documents: beamdb ingest --beamtime ID FILE".into(),
    );
    let mut tables = vec![
        ("runs", "SELECT * FROM runs WHERE uid = ?1".to_string()),
        (
            "samples",
            "SELECT * FROM samples WHERE id = (SELECT sample_id FROM runs WHERE uid = ?1)".into(),
        ),
        ("streams", "SELECT * FROM streams WHERE run_uid = ?1".into()),
        // In the order they came (rowid), which `export` of the quarantined run keeps.
        (
            "events",
            format!("SELECT * FROM events WHERE stream_uid IN ({streams}) ORDER BY rowid"),
        ),
        (
            "image_refs",
            format!("SELECT * FROM image_refs WHERE stream_uid IN ({streams}) ORDER BY id"),
        ),
    ];
    // What `export` needs to give the run's documents back from this file.
    if crate::export::keeps_documents(conn).map_err(sql)? {
        tables.push((
            "kept_documents",
            "SELECT * FROM kept_documents WHERE run_uid = ?1 ORDER BY position".into(),
        ));
        tables.push((
            "kept_events",
            format!(
                "SELECT k.* FROM kept_events k JOIN events e ON e.uid = k.event_uid
                 WHERE e.stream_uid IN ({streams}) ORDER BY e.rowid"
            ),
        ));
    }
    let mut counts = Vec::new();
    for (table, query) in &tables {
        let rows = rows_as_json(conn, query, uid.as_str()).map_err(sql)?;
        counts.push(format!("{} {table}", rows.len()));
        doc.insert((*table).into(), Value::Array(rows));
    }
    // The rows are deleted only once this file is whole on disk.
    let text = serde_json::to_string_pretty(&Value::Object(doc)).map_err(|e| VerifyError::Io {
        path: json_path.clone(),
        source: std::io::Error::other(e),
    })?;
    write_durably(&json_path, text.as_bytes())?;
    let moved = store.move_run(uid, &frames_path, &old_frames_path)?;

    let tx = conn.transaction().map_err(sql)?;
    tx.execute("DELETE FROM runs WHERE uid = ?1", [uid.as_str()])
        .map_err(sql)?;
    beamtime::bump_generation(&tx).map_err(sql)?;
    tx.commit().map_err(sql)?;
    Ok(format!(
        "quarantined run {uid} (its frames are missing or wrong): its rows ({}) are saved in {}{}; the run is removed from the beamtime: re-ingest it from its documents to restore it",
        counts.join(", "),
        json_path.display(),
        if moved.is_empty() {
            String::new()
        } else {
            format!(
                ", its remaining frames moved to {}",
                moved
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" and ")
            )
        }
    ))
}

/// A UTC time stamp for file names in quarantine/.
fn stamp() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_else(|_| "now".to_string())
}

fn rows_as_json(conn: &Connection, query: &str, uid: &str) -> rusqlite::Result<Vec<Value>> {
    let mut stmt = conn.prepare(query)?;
    let names: Vec<String> = stmt.column_names().map(str::to_string).collect();
    let mut rows = stmt.query([uid])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let mut obj = Map::new();
        for (i, name) in names.iter().enumerate() {
            let v = match row.get_ref(i)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(n) => n.into(),
                ValueRef::Real(f) => {
                    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
                }
                ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
                ValueRef::Blob(b) => b
                    .iter()
                    .map(|x| format!("{x:02x}"))
                    .collect::<String>()
                    .into(),
            };
            obj.insert(name.clone(), v);
        }
        out.push(Value::Object(obj));
    }
    Ok(out)
}

/// Writes `path` so that it is on disk, whole, before anything that relies on it.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), VerifyError> {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
    file.write_all(bytes).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
    }
    Ok(())
}
