//! Finding a run, or a beamtime, from what a user typed: the one place that turns a uid (or a
//! unique prefix of one) and an optional beamtime id into the beamtime that holds the run.
//!
//! The API, for every command that names runs (`show`, `export`):
//! - [`find_beamtime`]: `--beamtime ID` → the beamtime, or exit 2 with "did you mean";
//! - [`find_run`]: a uid or a unique prefix of at least [`MIN_PREFIX`] characters, in one
//!   beamtime or in all → [`Found`], or exit 2 naming it (nearest match, candidates of an
//!   ambiguous prefix, the beamtimes of a uid stored in several, a quarantined run);
//! - [`locate`]: where a found run's rows and frames are (absolute paths).
//!
//! Without a beamtime, the index (`runs_index`: uid → beamtime) answers for every beamtime it
//! proves current: in it, and unchanged since the last reindex (file stamps, else the change
//! counter: what `reindex` itself checks). Every other beamtime's database is read (one
//! being written to right now, one never indexed), so a run ingested a second ago is found
//! and the cost stays one database open per changed beamtime. A uid stored in two beamtimes
//! has one `runs_index` row (the uid is its key), so a beamtime holding runs the index could
//! not list (`beamtimes.num_runs` larger than its indexed runs) is read too: a duplicate is
//! never missed. The found run is then read from its own database, which is the truth.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::db::{self, Access, DbError};
use crate::escape::escape;
use crate::exit::{ExitStatus, HasExitStatus};
use crate::index::{self, Index};
use crate::layout::{Layout, ListError, NameError, SafeName};
use crate::settings::{FramesSettings, Settings};

/// The shortest uid prefix accepted (as git's abbreviated hashes: long enough to be unique
/// in practice, short enough to type). A shorter text must be a whole uid.
pub const MIN_PREFIX: usize = 8;

/// At most this many candidates are read for a prefix (and listed when it is ambiguous).
const MAX_CANDIDATES: usize = 20;

/// How a run was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// The beamtime was given (`--beamtime`): only its database was read.
    Beamtime,
    /// The index named the beamtime (current for that beamtime).
    Index,
    /// The beamtime's database was read, not the index; why (the beamtime changed since the
    /// last reindex, there is no index, ...).
    Databases { why: String },
}

impl Via {
    /// A stable word for `--json`: `beamtime`, `index` or `databases`.
    pub fn key(&self) -> &'static str {
        match self {
            Via::Beamtime => "beamtime",
            Via::Index => "index",
            Via::Databases { .. } => "databases",
        }
    }
}

/// A run found by [`find_run`].
#[derive(Debug, Clone)]
pub struct Found {
    /// The run's whole uid (the query may have been a prefix).
    pub uid: SafeName,
    pub beamtime: SafeName,
    pub via: Via,
}

/// Where one run is stored, as absolute paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLocation {
    /// The beamtime's database (`beamtime.db`).
    pub database: PathBuf,
    /// The beamtime's Zarr store (`frames.zarr`).
    pub store: PathBuf,
    /// The run's group inside it (`frames.zarr/runs/{uid}`), whether or not it exists (a run
    /// without frames has none).
    pub run_group: PathBuf,
    /// On an S3 frame store: the store's and the run's group's `s3://` URLs (the paths
    /// above are then not where anything is).
    pub remote: Option<RemoteLocation>,
}

/// Where a run is on an S3 frame store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteLocation {
    /// `s3://bucket/prefix/{beamtime}/frames.zarr`.
    pub store: String,
    /// `{store}/runs/{uid}@{version}`: the version the committed rows name; `None` when no
    /// committed row names one (the run is not in the beamtime, or its database cannot be read).
    pub run_group: Option<String>,
}

impl RunLocation {
    /// The frame store as users are told about it: a path or an `s3://` URL.
    pub fn store_text(&self) -> String {
        match &self.remote {
            Some(remote) => remote.store.clone(),
            None => self.store.to_string_lossy().into_owned(),
        }
    }

    /// The run's group as users are told about it; `None` on S3 when no committed row names
    /// one.
    pub fn run_group_text(&self) -> Option<String> {
        match &self.remote {
            Some(remote) => remote.run_group.clone(),
            None => Some(self.run_group.to_string_lossy().into_owned()),
        }
    }
}

/// Why a lookup failed. Everything a user can have mistyped is a usage error (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("no beamtime {id} in {dir}{hint}")]
    UnknownBeamtime {
        id: String,
        dir: PathBuf,
        /// "; did you mean …?" or what there is instead.
        hint: String,
    },
    #[error("no run {query} {place}{hint}")]
    UnknownRun {
        query: String,
        /// Where it was looked for ("in beamtime bt", "in any of the 3 beamtimes").
        place: String,
        hint: String,
    },
    #[error(
        "{query} is the start of {runs} runs; give more of the uid:\n{list}",
        runs = if .count > .shown { format!("more than {}", .shown) } else { .count.to_string() }
    )]
    Ambiguous {
        query: String,
        /// How many runs were found (reading stops after one more than `shown`).
        count: usize,
        shown: usize,
        /// One `  uid  (beamtime id)` line per candidate.
        list: String,
    },
    #[error(
        "run {uid} is stored in several beamtimes ({beamtimes}); say which with --beamtime {first}"
    )]
    SeveralBeamtimes {
        uid: String,
        beamtimes: String,
        first: String,
    },
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    List(#[from] ListError),
    #[error("{path}: cannot read its runs: {source}")]
    Read {
        path: PathBuf,
        source: rusqlite::Error,
    },
}

impl HasExitStatus for LookupError {
    fn exit_status(&self) -> ExitStatus {
        match self {
            LookupError::Name(e) => e.exit_status(),
            LookupError::UnknownBeamtime { .. }
            | LookupError::UnknownRun { .. }
            | LookupError::Ambiguous { .. }
            | LookupError::SeveralBeamtimes { .. } => ExitStatus::Usage,
            LookupError::Db(e) => e.exit_status(),
            LookupError::List(e) => e.exit_status(),
            LookupError::Read { .. } => ExitStatus::Failure,
        }
    }
}

/// Where run `uid` of beamtime `beamtime` is stored, as absolute paths. The one function
/// that says where a run's frames are: `runs --json` and `show` print what it returns, so
/// that a store elsewhere (object storage) changes this place only.
///
/// On an S3 store a run's group is the version its committed rows name, which is read from
/// the beamtime database (`sqlite`: how to open it); [`Locator`] reads each beamtime's once,
/// for many runs.
pub fn locate(
    layout: &Layout,
    frames: &FramesSettings,
    sqlite: &crate::settings::SqliteSettings,
    beamtime: &SafeName,
    uid: &SafeName,
) -> RunLocation {
    Locator::new(layout, frames, sqlite).locate(beamtime, uid)
}

/// [`locate`] for many runs: on an S3 store each beamtime's committed groups are read once.
pub struct Locator<'a> {
    layout: &'a Layout,
    frames: &'a FramesSettings,
    sqlite: &'a crate::settings::SqliteSettings,
    /// Beamtime id → run uid → its committed group (S3 only).
    groups: std::collections::HashMap<String, BTreeMap<String, String>>,
}

impl<'a> Locator<'a> {
    pub fn new(
        layout: &'a Layout,
        frames: &'a FramesSettings,
        sqlite: &'a crate::settings::SqliteSettings,
    ) -> Locator<'a> {
        Locator {
            layout,
            frames,
            sqlite,
            groups: std::collections::HashMap::new(),
        }
    }

    pub fn locate(&mut self, beamtime: &SafeName, uid: &SafeName) -> RunLocation {
        let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
        let store = absolute(self.layout.frames_store(beamtime));
        let database = absolute(self.layout.beamtime_db(beamtime));
        let remote = self.frames.s3.as_ref().map(|_| {
            let store = crate::frames::location(self.frames, self.layout, beamtime).display();
            let sqlite = self.sqlite;
            // A database that cannot be read names no group: `frames` is then null.
            let groups = self.groups.entry(beamtime.to_string()).or_insert_with(|| {
                db::open(&database, Access::ReadOnly, sqlite)
                    .ok()
                    .and_then(|conn| crate::ingest::writer::owned_groups(&conn).ok())
                    .unwrap_or_default()
            });
            RemoteLocation {
                run_group: groups
                    .get(uid.as_str())
                    .map(|g| format!("{store}/runs/{g}")),
                store,
            }
        });
        RunLocation {
            database,
            run_group: store.join("runs").join(uid.as_str()),
            store,
            remote,
        }
    }
}

/// The beamtime `id` names, which must exist (a folder under `beamtimes/` with a
/// `beamtime.db`). Exit 2 for a name that is not a safe beamtime id, or one that does not
/// exist (naming the nearest existing one).
pub fn find_beamtime(layout: &Layout, id: &str) -> Result<SafeName, LookupError> {
    let name = SafeName::new("beamtime id", id)?;
    if layout.beamtime_db(&name).is_file() {
        return Ok(name);
    }
    let (ids, _) = layout.beamtimes()?;
    let hint = match nearest_name(id, ids.iter().map(SafeName::as_str)) {
        Some(near) => format!("; did you mean {near}?"),
        None if ids.is_empty() => "; there is no beamtime yet (`beamdb ingest` creates one)".into(),
        None => format!(
            "; there are {}: {}",
            ids.len(),
            list_some(ids.iter().map(SafeName::as_str))
        ),
    };
    Err(LookupError::UnknownBeamtime {
        id: escape(id).into_owned(),
        dir: layout.beamtimes_dir(),
        hint,
    })
}

/// The run `query` names: a whole uid, or a prefix of at least [`MIN_PREFIX`] characters of
/// exactly one uid. In `beamtime` when given (which must exist, see [`find_beamtime`]), else
/// in every beamtime (through the index for each beamtime it proves current). A whole uid wins over the runs it
/// is a prefix of. Exit 2 when there is no such run (with the nearest uid, and where the run
/// went when `verify --repair` quarantined it), when a prefix fits several runs (listing
/// them), and, without `beamtime`, when the uid is stored in several beamtimes.
pub fn find_run(
    settings: &Settings,
    query: &str,
    beamtime: Option<&str>,
) -> Result<Found, LookupError> {
    let layout = Layout::new(&settings.data_root);
    let (candidates, read, scope) = match beamtime {
        Some(id) => {
            let id = find_beamtime(&layout, id)?;
            let found = search_database(&layout, &id, query, settings)?;
            (found, BTreeMap::new(), Scope::One(id))
        }
        None => {
            let search = search_all(&layout, query, settings)?;
            (search.candidates, search.read, Scope::All)
        }
    };
    match choose(query, candidates)? {
        Some((uid, beamtime)) => {
            let via = match (&scope, read.get(&beamtime)) {
                (Scope::One(_), _) => Via::Beamtime,
                (Scope::All, Some(why)) => Via::Databases { why: why.clone() },
                (Scope::All, None) => Via::Index,
            };
            Ok(Found {
                uid: SafeName::new("run uid", &uid)?,
                beamtime: SafeName::new("beamtime id", &beamtime)?,
                via,
            })
        }
        None => Err(unknown_run(&layout, query, &scope, settings)),
    }
}

/// Where a lookup looked: one beamtime (`--beamtime`), or all.
enum Scope {
    One(SafeName),
    All,
}

/// Picks the run among `candidates` (uid, beamtime), the runs whose uid starts with `query`.
fn choose(
    query: &str,
    mut candidates: Vec<(String, String)>,
) -> Result<Option<(String, String)>, LookupError> {
    candidates.sort();
    candidates.dedup();
    let exact: Vec<&(String, String)> = candidates.iter().filter(|(u, _)| u == query).collect();
    let pool: Vec<&(String, String)> = if !exact.is_empty() {
        exact
    } else if query.chars().count() >= MIN_PREFIX {
        candidates.iter().collect()
    } else {
        Vec::new()
    };
    let Some((first_uid, first_bt)) = pool.first().map(|c| (c.0.clone(), c.1.clone())) else {
        return Ok(None);
    };
    if pool.iter().all(|(u, _)| *u == first_uid) {
        if pool.len() == 1 {
            return Ok(Some((first_uid, first_bt)));
        }
        return Err(LookupError::SeveralBeamtimes {
            uid: escape(&first_uid).into_owned(),
            beamtimes: list_some(pool.iter().map(|(_, b)| b.as_str())),
            first: escape(&first_bt).into_owned(),
        });
    }
    let shown = pool.len().min(MAX_CANDIDATES);
    let list = pool
        .iter()
        .take(shown)
        .map(|(u, b)| format!("  {}  (beamtime {})", escape(u), escape(b)))
        .collect::<Vec<_>>()
        .join("\n");
    Err(LookupError::Ambiguous {
        query: escape(query).into_owned(),
        count: pool.len(),
        shown,
        list,
    })
}

/// The runs of beamtime `id` whose uid starts with `query` (the whole uid included).
fn search_database(
    layout: &Layout,
    id: &SafeName,
    query: &str,
    settings: &Settings,
) -> Result<Vec<(String, String)>, LookupError> {
    let path = layout.beamtime_db(id);
    let conn = db::open(&path, Access::ReadOnly, &settings.sqlite)?;
    let read = |source| LookupError::Read {
        path: path.clone(),
        source,
    };
    let mut stmt = conn
        .prepare(
            "SELECT uid FROM runs WHERE uid >= ?1 AND uid < ?1 || char(1114111)
             ORDER BY uid LIMIT ?2",
        )
        .map_err(read)?;
    let uids = stmt
        .query_map(rusqlite::params![query, MAX_CANDIDATES as i64 + 1], |row| {
            row.get::<_, String>(0)
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
        .map_err(read)?;
    Ok(uids
        .into_iter()
        .filter(|u| u.starts_with(query))
        .map(|u| (u, id.to_string()))
        .collect())
}

/// The runs of every beamtime whose uid starts with a query.
struct Search {
    candidates: Vec<(String, String)>,
    /// The beamtimes whose database was read rather than trusting the index, with why.
    read: BTreeMap<String, String>,
}

/// [`search_database`] over every beamtime, through the index where it can answer: for each
/// beamtime the index proves current (see the module's comment), its rows are used; every
/// other beamtime's database is read. A database that cannot be read is skipped with a
/// warning: a damaged beamtime must not hide the runs of the others.
fn search_all(layout: &Layout, query: &str, settings: &Settings) -> Result<Search, LookupError> {
    let (ids, _) = layout.beamtimes()?;
    let mut search = Search {
        candidates: Vec::new(),
        read: BTreeMap::new(),
    };
    let index = open_index(settings);
    let mut fresh: Vec<&str> = Vec::new();
    for id in &ids {
        let why = match &index {
            Err(why) => Some(why.clone()),
            Ok((_, states)) => match states.iter().find(|s| s.id == id.as_str()) {
                None => Some(format!(
                    "beamtime {id} is not in the index yet (run `beamdb reindex`)"
                )),
                Some(state)
                    if !state.watermark.as_deref().is_some_and(|w| {
                        crate::reindex::unchanged_since(&layout.beamtime_db(id), w, settings)
                    }) =>
                {
                    Some(format!(
                        "beamtime {id} changed since the last `beamdb reindex`"
                    ))
                }
                Some(state) if state.num_runs > state.indexed_runs => Some(format!(
                    "beamtime {id} holds runs whose uids another beamtime holds too, which the index lists once"
                )),
                Some(_) => None,
            },
        };
        match why {
            None => fresh.push(id.as_str()),
            Some(why) => {
                match search_database(layout, id, query, settings) {
                    Ok(runs) => search.candidates.extend(runs),
                    Err(err) => tracing::warn!("skipped beamtime {id}: {err}"),
                }
                search.read.insert(id.to_string(), why);
            }
        }
    }
    if let Ok((index, _)) = &index
        && !fresh.is_empty()
    {
        match index.runs_with_prefix(query, MAX_CANDIDATES + 1) {
            // Rows of beamtimes read above (or gone from disk) are not trusted.
            Ok(rows) => search.candidates.extend(
                rows.into_iter()
                    .filter(|(u, b)| u.starts_with(query) && fresh.contains(&b.as_str())),
            ),
            Err(err) => {
                // Unreadable after all: read the rest too.
                let why = format!("the index cannot be read ({err})");
                for id in ids.iter().filter(|id| fresh.contains(&id.as_str())) {
                    if let Ok(runs) = search_database(layout, id, query, settings) {
                        search.candidates.extend(runs);
                    }
                    search.read.insert(id.to_string(), why.clone());
                }
            }
        }
    }
    Ok(search)
}

/// The index and what it holds about each beamtime, or why it cannot be used.
fn open_index(
    settings: &Settings,
) -> Result<(Box<dyn Index>, Vec<crate::index::IndexedBeamtime>), String> {
    if let crate::settings::IndexLocation::Sqlite(path) = settings.index_location()
        && !path.is_file()
    {
        return Err("there is no index.db".into());
    }
    let index = index::open(settings, Access::ReadOnly)
        .map_err(|e| format!("the index cannot be read ({e})"))?;
    let states = index
        .beamtime_runs()
        .map_err(|e| format!("the index cannot be read ({e})"))?;
    Ok((index, states))
}

/// The error for a query that matched no run: the nearest uid, and what happened to it when
/// `verify --repair` quarantined it.
fn unknown_run(layout: &Layout, query: &str, scope: &Scope, settings: &Settings) -> LookupError {
    let beamtimes: Vec<SafeName> = match scope {
        Scope::One(id) => vec![id.clone()],
        Scope::All => layout.beamtimes().map(|(ids, _)| ids).unwrap_or_default(),
    };
    let place = match scope {
        Scope::One(id) => format!("in beamtime {id}"),
        Scope::All if beamtimes.len() == 1 => format!("in the only beamtime, {}", beamtimes[0]),
        Scope::All => format!("in any of the {} beamtimes", beamtimes.len()),
    };
    let mut hint = String::new();
    if query.chars().count() < MIN_PREFIX {
        hint.push_str(&format!(
            " (a uid prefix needs at least {MIN_PREFIX} characters)"
        ));
    }
    if let Some(file) = quarantined(layout, query, &beamtimes) {
        hint.push_str(&format!(
            "; it was quarantined by `beamdb verify --repair` (its frames were missing or wrong): its rows are saved in {}; re-ingest its documents to restore it",
            file.display()
        ));
    } else {
        let mut uids: Vec<(String, String)> = Vec::new();
        for id in &beamtimes {
            uids.extend(all_uids(layout, id, settings));
        }
        if let Some((uid, bt)) = nearest_uid(query, &uids) {
            let r#where = match scope {
                Scope::One(_) => String::new(),
                Scope::All => format!(" (beamtime {})", escape(bt)),
            };
            hint.push_str(&format!("; did you mean {}{where}?", escape(uid)));
        }
        if let Scope::One(id) = scope
            && let Some(others) = elsewhere(layout, query, id, settings)
        {
            hint.push_str(&format!(
                "; it is in beamtime {others} (use --beamtime {others}, or leave --beamtime out)"
            ));
        }
    }
    LookupError::UnknownRun {
        query: escape(query).into_owned(),
        place,
        hint,
    }
}

/// The beamtime other than `not` whose database holds run `uid` exactly, if the index (when
/// there is one) names it; checked in that beamtime's database.
fn elsewhere(layout: &Layout, uid: &str, not: &SafeName, settings: &Settings) -> Option<String> {
    let index = index::open(settings, Access::ReadOnly).ok()?;
    let rows = index.runs_with_prefix(uid, 1).ok()?;
    let (found, bt) = rows.into_iter().next()?;
    let id = SafeName::new("beamtime id", &bt).ok()?;
    (found == uid && id != *not && layout.beamtime_db(&id).is_file())
        .then(|| search_database(layout, &id, uid, settings).ok())
        .flatten()
        .filter(|runs| runs.iter().any(|(u, _)| u == uid))
        .map(|_| escape(&bt).into_owned())
}

/// Every run uid of beamtime `id` (none when its database cannot be read).
fn all_uids(layout: &Layout, id: &SafeName, settings: &Settings) -> Vec<(String, String)> {
    let Ok(conn) = db::open(&layout.beamtime_db(id), Access::ReadOnly, &settings.sqlite) else {
        return Vec::new();
    };
    let Ok(mut stmt) = conn.prepare("SELECT uid FROM runs") else {
        return Vec::new();
    };
    stmt.query_map([], |row| row.get::<_, String>(0))
        .map(|rows| {
            rows.filter_map(Result::ok)
                .map(|u| (u, id.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// The quarantine file (`{beamtime}/quarantine/{uid}-{time}.json`) of run `uid`, the newest
/// when it was quarantined more than once.
pub fn quarantined(layout: &Layout, uid: &str, beamtimes: &[SafeName]) -> Option<PathBuf> {
    let prefix = format!("{uid}-");
    let mut files: Vec<PathBuf> = beamtimes
        .iter()
        .filter_map(|id| std::fs::read_dir(layout.quarantine_dir(id)).ok())
        .flat_map(|entries| entries.filter_map(Result::ok))
        .map(|entry| entry.path())
        .filter(|path| {
            path.extension().is_some_and(|e| e == "json")
                && path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix))
        })
        .collect();
    files.sort();
    files
        .pop()
        .map(|p| std::path::absolute(&p).unwrap_or(p.clone()))
}

/// The candidate nearest to a mistyped name (a beamtime id), as clap suggests flags: Jaro
/// similarity above 0.7, the most similar first.
pub fn nearest_name<'a>(
    query: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro(query, c), c))
        .filter(|(score, _)| *score > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// The (uid, beamtime) whose uid is nearest to a mistyped uid or uid prefix: at most one
/// edit in four (Damerau-Levenshtein, so a swapped pair is one), comparing a prefix with the
/// same number of leading characters of each uid. Jaro, right for short names, finds any two
/// random hexadecimal uids alike.
pub fn nearest_uid<'a>(query: &str, uids: &'a [(String, String)]) -> Option<&'a (String, String)> {
    let n = query.chars().count();
    uids.iter()
        .map(|candidate| {
            let whole = strsim::normalized_damerau_levenshtein(query, &candidate.0);
            let head: String = candidate.0.chars().take(n).collect();
            let start = if n >= MIN_PREFIX {
                strsim::normalized_damerau_levenshtein(query, &head)
            } else {
                0.0
            };
            (whole.max(start), candidate)
        })
        .filter(|(score, _)| *score >= 0.75)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// `a, b, c` or `a, b, c, … (12 in all)`, escaped.
fn list_some<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let items: Vec<&str> = items.collect();
    let shown: Vec<String> = items
        .iter()
        .take(8)
        .map(|s| escape(s).into_owned())
        .collect();
    if items.len() > shown.len() {
        format!("{}, … ({} in all)", shown.join(", "), items.len())
    } else {
        shown.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(uids: &[&str]) -> Vec<(String, String)> {
        uids.iter()
            .map(|u| (u.to_string(), "bt".to_string()))
            .collect()
    }

    #[test]
    fn nearest_uid_finds_typos_not_strangers() {
        let uids = pairs(&[
            "4c25f8e6-90b0-4d43-a8f6-36e5dbd66ff9",
            "682a43b9-a2ae-49de-8435-1bc6638aee60",
            "7fbdf1df-8554-4a45-8123-cc03d61f67fc",
        ]);
        let near = |q: &str| nearest_uid(q, &uids).map(|(u, _)| &u[..8]);
        assert_eq!(
            near("4c25f8e6-90b0-4d43-a8f6-36e5dbd66ff8"),
            Some("4c25f8e6")
        );
        assert_eq!(near("682a34b9"), Some("682a43b9"));
        assert_eq!(near("98786b6e-de87-4ab0-9fb5-338308b26fd2"), None);
        assert_eq!(near("deadbeef"), None);
    }

    #[test]
    fn nearest_name_is_clap_like() {
        let ids = ["bt-2026-03", "commissioning"];
        assert_eq!(nearest_name("bt-2026-3", ids), Some("bt-2026-03"));
        assert_eq!(nearest_name("comissioning", ids), Some("commissioning"));
        assert_eq!(nearest_name("xyz", ids), None);
    }

    #[test]
    fn a_whole_uid_wins_over_the_runs_it_starts() {
        let found = choose("abcdefgh", pairs(&["abcdefgh", "abcdefghij"])).unwrap();
        assert_eq!(found.unwrap().0, "abcdefgh");
        assert!(matches!(choose("abcdefg", pairs(&["abcdefgh"])), Ok(None)));
        assert!(matches!(
            choose("abcdefgh", pairs(&["abcdefgh1", "abcdefgh2"])),
            Err(LookupError::Ambiguous { count: 2, .. })
        ));
        let many: Vec<String> = (0..25).map(|i| format!("abcdefgh{i:02}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let err = choose("abcdefgh", pairs(&many)).unwrap_err().to_string();
        assert!(
            err.starts_with("abcdefgh is the start of more than 20 runs"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 21, "{err}");
        let two = vec![
            ("abcdefgh".to_string(), "a".to_string()),
            ("abcdefgh".to_string(), "b".to_string()),
        ];
        assert!(matches!(
            choose("abcdefgh", two),
            Err(LookupError::SeveralBeamtimes { .. })
        ));
    }
}
