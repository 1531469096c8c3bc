//! The master index: the one module that reads and writes it, behind the small [`Index`]
//! trait (replace one beamtime, forget beamtimes, query runs) with two implementations:
//! `index.db` under data_root ([`sqlite`]) and, with the `postgres` feature, a PostgreSQL
//! database (`pg`). Callers hold a `Box<dyn Index>` from [`open`] and never see a driver's
//! types: values are [`Scalar`]s and errors [`IndexError`]s.
//!
//! A trait rather than an enum over the two: the PostgreSQL side exists only in a build with
//! the feature, and a trait object keeps every `#[cfg]` inside [`open`] instead of in each
//! method's `match`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::db::{Access, DbError};
use crate::settings::{IndexLocation, Settings};

#[cfg(feature = "postgres")]
pub mod pg;
pub mod pg_schema;
pub mod sqlite;

/// The `runs_index` column that holds the RunStart (JSONB in both databases).
pub const METADATA_COLUMN: &str = "metadata";

pub use sqlite::IndexDb;

/// A researcher as found in runs or beamtime metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Researcher {
    pub name: String,
    pub email: Option<String>,
    pub orcid: Option<String>,
    pub affiliation: Option<String>,
}

/// One run as the index stores it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IndexedRun {
    pub uid: String,
    pub sample_name: Option<String>,
    pub plan_name: Option<String>,
    pub scan_id: Option<i64>,
    pub time_start: Option<f64>,
    pub time_stop: Option<f64>,
    pub exit_status: Option<String>,
    pub num_events: Option<i64>,
    pub researcher: Option<String>,
    /// Promoted metadata: extra `runs_index` columns, by name.
    pub extra: BTreeMap<String, Scalar>,
    /// The RunStart document as JSON text: what `runs --where` on an unpromoted key and
    /// `runs --text` search.
    pub metadata: Option<String>,
}

/// Everything the index keeps about one beamtime, read in one snapshot.
#[derive(Debug, Clone, Default)]
pub struct BeamtimeEntry {
    pub id: String,
    pub db_path: String,
    pub watermark: String,
    pub researcher: Option<String>,
    pub researchers: Vec<Researcher>,
    pub runs: Vec<IndexedRun>,
}

impl BeamtimeEntry {
    /// The beamtime's span in the `beamtimes` row: its first run's start to its last run's
    /// stop (a run without a stop counts by its start). Derived here, for both backends.
    pub fn time_span(&self) -> (Option<f64>, Option<f64>) {
        let start = self
            .runs
            .iter()
            .filter_map(|r| r.time_start)
            .reduce(f64::min);
        let stop = self
            .runs
            .iter()
            .filter_map(|r| r.time_stop.or(r.time_start))
            .reduce(f64::max);
        (start, stop)
    }
}

/// One beamtime as the index holds it, for readers that must know whether it is current.
#[derive(Debug, Clone)]
pub struct IndexedBeamtime {
    pub id: String,
    /// What reindex recorded (see `reindex::unchanged_since`); `None` forces a re-read.
    pub watermark: Option<String>,
    /// The runs its database held when it was read.
    pub num_runs: i64,
    /// The runs indexed under it. Fewer than `num_runs` when another beamtime already held
    /// some of their uids (`runs_index.uid` is unique): the index alone cannot name those.
    pub indexed_runs: i64,
}

/// What replacing a beamtime's rows did.
#[derive(Debug, Default)]
pub struct Replaced {
    /// Runs not indexed because another beamtime already holds the same uid: (uid, other).
    pub duplicates: Vec<(String, String)>,
    /// Promoted values the index cannot hold as their column's type (PostgreSQL has no
    /// SQLite affinity), indexed as NULL: (uid, column, why).
    pub nulled: Vec<(String, String, String)>,
}

/// Filters for [`Index::query_runs`]; `None` means "any".
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub beamtimes: Vec<String>,
    /// Exact name, or a glob when it contains `*`, `?` or `[`.
    pub sample: Option<String>,
    pub researcher: Option<String>,
    pub plan: Option<String>,
    pub since: Option<f64>,
    pub until: Option<f64>,
    /// `success`, `abort`, `fail`, or `incomplete` for runs with no stop document.
    pub exit_status: Option<String>,
    /// `--where` conditions on RunStart keys, all of which must hold.
    pub conditions: Vec<Condition>,
    /// `--text` words: full-text search over the RunStart; results are ranked by it.
    pub text: Option<String>,
    /// Promoted columns by the RunStart key that fills them (dotted), so that a condition on
    /// that key uses the column and its index.
    pub promoted: BTreeMap<String, String>,
    pub limit: Option<u64>,
}

/// One `--where KEY OP VALUE`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// The RunStart key, split at dots.
    pub key: Vec<String>,
    pub op: CompareOp,
    pub value: ConditionValue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ConditionValue {
    /// Compared as a number (an unquoted value that reads as one, or true/false as 1/0).
    Number(f64),
    Text(String),
    /// `*` and `?` in an unquoted value: SQLite GLOB (case-sensitive), with `=` or `!=`.
    Glob(String),
}

/// What `--where` accepts, for the message when it cannot read one.
pub const CONDITION_FORM: &str = "write KEY OP VALUE as one argument, e.g. --where proposal=p-1, --where 'temperature >= 300', --where 'sample.name=P3HT*' (OP is one of = != < <= > >=; KEY is a RunStart key, dotted for a nested one; * and ? in VALUE match any text and any one character, with = or !=; quote VALUE ('007') to compare it as text)";

impl Condition {
    /// Parses `KEY OP VALUE`; the error says what is wrong (the caller adds [`CONDITION_FORM`]).
    pub fn parse(text: &str) -> Result<Condition, String> {
        // The first operator character splits key from value; two-character operators first.
        let at = text
            .find(['=', '!', '<', '>'])
            .ok_or_else(|| "it has no operator".to_string())?;
        let (key, rest) = text.split_at(at);
        let (op, value) = [
            ("!=", CompareOp::Ne),
            ("<=", CompareOp::Le),
            (">=", CompareOp::Ge),
            ("==", CompareOp::Eq),
            ("=", CompareOp::Eq),
            ("<", CompareOp::Lt),
            (">", CompareOp::Gt),
        ]
        .into_iter()
        .find_map(|(symbol, op)| rest.strip_prefix(symbol).map(|v| (op, v)))
        .ok_or_else(|| format!("`{}` is not an operator", &rest[..1]))?;
        let key = key.trim();
        let parts: Vec<String> = key.split('.').map(str::to_string).collect();
        let plain = |p: &String| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | ':' | '@' | '/'))
        };
        if key.is_empty() {
            return Err("the key is empty".into());
        }
        if !parts.iter().all(plain) {
            return Err(format!(
                "`{key}` is not a RunStart key (letters, digits, _ - : @ /, dots between nested keys)"
            ));
        }
        let value = value.trim();
        if value.is_empty() {
            return Err("the value is empty (compare with '' to match an empty text)".into());
        }
        if value.starts_with(['=', '<', '>', '!']) {
            return Err(format!("`{value}` starts with a second operator"));
        }
        let quoted = value.len() >= 2
            && ((value.starts_with('\'') && value.ends_with('\''))
                || (value.starts_with('"') && value.ends_with('"')));
        let value = if quoted {
            ConditionValue::Text(value[1..value.len() - 1].to_string())
        } else if let Some(n) = value.parse::<f64>().ok().filter(|n| n.is_finite()) {
            ConditionValue::Number(n)
        } else if value.parse::<f64>().is_ok() && value.contains(|c: char| c.is_ascii_digit()) {
            // `1e999` reads as infinity: compared as text it would silently match nothing.
            return Err(format!(
                "`{value}` is a number too large to compare; quote it ('{value}') to compare it as text"
            ));
        } else if value.eq_ignore_ascii_case("true") || value.eq_ignore_ascii_case("false") {
            ConditionValue::Number(if value.eq_ignore_ascii_case("true") {
                1.0
            } else {
                0.0
            })
        } else if value.contains(['*', '?']) {
            if !matches!(op, CompareOp::Eq | CompareOp::Ne) {
                return Err(format!(
                    "`{value}` is a pattern (* or ?), which works only with = and !="
                ));
            }
            ConditionValue::Glob(value.to_string())
        } else {
            ConditionValue::Text(value.to_string())
        };
        Ok(Condition {
            key: parts,
            op,
            value,
        })
    }

    /// The SQL operator, with a pattern as SQLite's GLOB (PostgreSQL maps GLOB itself).
    pub(crate) fn sql_op(&self) -> &'static str {
        match (&self.value, self.op) {
            (ConditionValue::Glob(_), CompareOp::Ne) => "NOT GLOB",
            (ConditionValue::Glob(_), _) => "GLOB",
            (_, CompareOp::Eq) => "=",
            (_, CompareOp::Ne) => "<>",
            (_, CompareOp::Lt) => "<",
            (_, CompareOp::Le) => "<=",
            (_, CompareOp::Gt) => ">",
            (_, CompareOp::Ge) => ">=",
        }
    }
}

/// The words of a RunStart that `--text` finds: every string and number in it (keys are left
/// out, or every run would match `sample`), nested values included.
pub fn searchable_text(metadata: &str) -> String {
    fn walk(value: &serde_json::Value, out: &mut String) {
        match value {
            serde_json::Value::String(s) => {
                out.push_str(s);
                out.push(' ');
            }
            serde_json::Value::Number(n) => {
                out.push_str(&n.to_string());
                out.push(' ');
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            serde_json::Value::Object(map) => map.values().for_each(|v| walk(v, out)),
            serde_json::Value::Bool(_) | serde_json::Value::Null => {}
        }
    }
    let mut out = String::new();
    if let Ok(doc) = serde_json::from_str::<serde_json::Value>(metadata) {
        walk(&doc, &mut out);
    }
    out
}

/// The full-text table over runs_index: beamdb's own (not in the models), derived data that
/// `reindex` keeps in step with `runs_index` (its rowid is the run's runs_index rowid).
pub const TEXT_TABLE: &str = "beamdb_run_text";

/// Every scalar of every RunStart, one row per (run, key, value), indexed by key and value:
/// `runs --where` on a key nobody promoted is an index lookup, not a scan of 100,000 JSON
/// documents. Derived data like [`TEXT_TABLE`]: `run` is the runs_index rowid.
pub const KEYS_TABLE: &str = "beamdb_run_keys";

/// At most this many values of one RunStart are kept in [`KEYS_TABLE`] (a document with a
/// huge array must not blow up the index).
const MAX_KEYS_PER_RUN: usize = 2000;

/// The RunStart's scalars as (dotted key, value): nested objects give dotted keys, the items
/// of an array of scalars each count under the array's key. Numbers and booleans (1/0) are
/// numbers, strings are text; null and nested arrays are left out.
pub fn scalar_keys(metadata: &str) -> Vec<(String, Scalar)> {
    fn walk(
        prefix: &str,
        value: &serde_json::Value,
        depth: usize,
        out: &mut Vec<(String, Scalar)>,
    ) {
        if out.len() >= MAX_KEYS_PER_RUN || depth > 8 {
            return;
        }
        let scalar = match value {
            serde_json::Value::Number(n) => n.as_f64().map(Scalar::Real),
            serde_json::Value::Bool(b) => Some(Scalar::Real(if *b { 1.0 } else { 0.0 })),
            serde_json::Value::String(s) => Some(Scalar::Text(s.clone())),
            serde_json::Value::Null => None,
            serde_json::Value::Array(items) => {
                for item in items.iter().filter(|i| !i.is_array() && !i.is_object()) {
                    walk(prefix, item, depth + 1, out);
                }
                None
            }
            serde_json::Value::Object(map) => {
                for (key, item) in map {
                    let path = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    walk(&path, item, depth + 1, out);
                }
                None
            }
        };
        if let Some(scalar) = scalar
            && !prefix.is_empty()
        {
            out.push((prefix.to_string(), scalar));
        }
    }
    let mut out = Vec::new();
    if let Ok(doc) = serde_json::from_str::<serde_json::Value>(metadata) {
        walk("", &doc, 0, &mut out);
    }
    out
}

/// One row of a query: the run and where it lives.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub beamtime: String,
    pub run: IndexedRun,
}

pub fn core_run_columns() -> &'static [String] {
    static CORE: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    CORE.get_or_init(|| {
        crate::schema::declared::builtin(crate::schema::DbKind::Index)
            .ok()
            .and_then(|s| s.tables.get("runs_index").cloned())
            .map(|t| t.columns.into_iter().map(|c| c.name).collect())
            .unwrap_or_default()
    })
}

/// The value of each core column for one run, by name (the names of [`core_run_columns`]).
pub(crate) fn core_value(
    column: &str,
    run: &IndexedRun,
    beamtime: &str,
    researcher_id: Option<i64>,
) -> Scalar {
    let text = |t: &Option<String>| t.clone().map_or(Scalar::Null, Scalar::Text);
    match column {
        "uid" => Scalar::Text(run.uid.clone()),
        "beamtime_id" => Scalar::Text(beamtime.to_string()),
        "researcher_id" => researcher_id.map_or(Scalar::Null, Scalar::Int),
        "sample_name" => text(&run.sample_name),
        "plan_name" => text(&run.plan_name),
        "scan_id" => run.scan_id.map_or(Scalar::Null, Scalar::Int),
        "time_start" => run.time_start.map_or(Scalar::Null, Scalar::Real),
        "time_stop" => run.time_stop.map_or(Scalar::Null, Scalar::Real),
        "exit_status" => text(&run.exit_status),
        "num_events" => run.num_events.map_or(Scalar::Null, Scalar::Int),
        "metadata" => text(&run.metadata),
        // A column added to the built-in model before reindex learns to fill it.
        _ => Scalar::Null,
    }
}

/// One value of a `runs_index` column or a RunStart scalar, whichever database holds it.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// Why the index could not be read or written. Each names where the index is (a path, or a
/// PostgreSQL URL without its password) so the message says which index failed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(transparent)]
    Open(#[from] DbError),
    #[error("{path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[cfg(feature = "postgres")]
    #[error(transparent)]
    Postgres(#[from] pg::PgError),
}

impl IndexError {
    /// Whether the index refused one beamtime's data (a value, a constraint) rather than
    /// failing as a whole: that beamtime is reported and skipped, the others indexed.
    pub fn refused_data(&self) -> bool {
        match self {
            #[cfg(feature = "postgres")]
            IndexError::Postgres(e) => e.refused_data(),
            _ => false,
        }
    }
}

impl crate::exit::HasExitStatus for IndexError {
    fn exit_status(&self) -> crate::exit::ExitStatus {
        match self {
            IndexError::Open(e) => crate::exit::HasExitStatus::exit_status(e),
            IndexError::Sqlite { .. } => crate::exit::ExitStatus::Failure,
            #[cfg(feature = "postgres")]
            IndexError::Postgres(e) => crate::exit::HasExitStatus::exit_status(e),
        }
    }
}

/// Everything beamdb does with the index, whatever database holds it.
pub trait Index {
    /// Where the index is, for messages: a path, or a URL without its password.
    fn location(&self) -> String;
    /// Whether `runs_index` holds no run (a fresh `initdb`: nothing to search yet).
    fn has_no_runs(&self) -> Result<bool, IndexError>;
    /// Whether the index can answer `--text` and `--where` (reindex creates what it needs).
    fn has_text(&self) -> bool;
    /// What the index's schema is, in one short string: a beamtime indexed under another
    /// signature is read again (a new promoted column must be filled, and a migration that
    /// rebuilt `runs_index` renumbered the rows the search tables point at). `sources` are
    /// the promoted columns' RunStart keys.
    fn signature(&self, sources: &BTreeMap<String, String>) -> Result<String, IndexError>;
    /// Empties the search tables; every beamtime must then be read again.
    fn clear_text(&mut self) -> Result<(), IndexError>;
    /// Promoted metadata columns of `runs_index`.
    fn extra_columns(&self) -> &[String];
    /// The watermark stored for every indexed beamtime.
    fn watermarks(&self) -> Result<BTreeMap<String, Option<String>>, IndexError>;
    /// Replaces everything the index holds about `entry.id` in one transaction: a reader of
    /// the index sees the old beamtime or the new one, never half of it.
    fn replace_beamtime(&mut self, entry: &BeamtimeEntry, now: f64)
    -> Result<Replaced, IndexError>;
    /// Removes beamtimes (and their runs) that are not in `keep`, among those whose database
    /// path starts with `under` (another host's beamtimes in a shared index are not this
    /// reindex's to forget); returns their ids.
    fn forget_beamtimes_except(
        &mut self,
        keep: &[String],
        under: &str,
    ) -> Result<Vec<String>, IndexError>;
    /// Forces the next reindex to re-read the beamtimes `ids` (this data root's: a shared
    /// PostgreSQL index also holds other hosts' beamtimes, which their reindexes own).
    fn clear_watermarks(&mut self, ids: &[String]) -> Result<(), IndexError>;
    /// Deletes researchers no run or beamtime refers to any more.
    fn forget_unreferenced_researchers(&mut self) -> Result<usize, IndexError>;
    /// Runs matching `filter`, newest first (by rank first with `--text`).
    fn query_runs(&self, filter: &RunFilter) -> Result<Vec<RunRow>, IndexError>;
    /// Runs whose uid is `query` or starts with it, as (uid, beamtime id), sorted, at most
    /// `limit`.
    fn runs_with_prefix(
        &self,
        query: &str,
        limit: usize,
    ) -> Result<Vec<(String, String)>, IndexError>;
    /// Every indexed run as (uid, beamtime id): the candidates of a "did you mean".
    fn all_run_uids(&self) -> Result<Vec<(String, String)>, IndexError>;
    /// Each indexed beamtime, with its watermark and run counts, sorted by id.
    fn beamtime_runs(&self) -> Result<Vec<IndexedBeamtime>, IndexError>;
    /// How many beamtimes and runs the index holds.
    fn counts(&self) -> Result<(i64, i64), IndexError>;
}

/// Whether the index exists yet (for readers: a missing index.db is "no index yet", not an
/// error). A PostgreSQL index is taken to exist; opening it says otherwise.
pub fn exists(settings: &Settings) -> bool {
    match settings.index_location() {
        IndexLocation::Sqlite(path) => path.exists(),
        IndexLocation::Postgres(_) => true,
    }
}

/// Opens the index the settings name; `access` is `ReadOnly` for queries.
pub fn open(settings: &Settings, access: Access) -> Result<Box<dyn Index>, IndexError> {
    match settings.index_location() {
        IndexLocation::Sqlite(path) => {
            Ok(Box::new(IndexDb::open(&path, access, &settings.sqlite)?))
        }
        #[cfg(feature = "postgres")]
        IndexLocation::Postgres(url) => Ok(Box::new(pg::PgIndex::open(
            &url,
            access,
            settings.schema.migrations_dir.as_deref(),
        )?)),
        #[cfg(not(feature = "postgres"))]
        IndexLocation::Postgres(_) => unreachable!(
            "settings refuse a postgresql:// url in a build without the postgres feature"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_core_column_has_a_value() {
        let run = IndexedRun {
            uid: "u".into(),
            sample_name: Some("s".into()),
            plan_name: Some("p".into()),
            scan_id: Some(1),
            time_start: Some(1.0),
            time_stop: Some(2.0),
            exit_status: Some("success".into()),
            num_events: Some(3),
            researcher: Some("r".into()),
            extra: BTreeMap::new(),
            metadata: Some("{}".into()),
        };
        assert!(core_run_columns().len() >= 11);
        for column in core_run_columns() {
            assert_ne!(
                core_value(column, &run, "bt", Some(7)),
                Scalar::Null,
                "reindex does not fill built-in column runs_index.{column}"
            );
        }
    }

    #[test]
    fn conditions_parse_numbers_text_patterns_and_dotted_keys() {
        let c = Condition::parse("temperature >= 300").unwrap();
        assert_eq!(
            (c.key, c.op, c.value),
            (
                vec!["temperature".to_string()],
                CompareOp::Ge,
                ConditionValue::Number(300.0)
            )
        );
        let c = Condition::parse("sample.name=P3HT*").unwrap();
        assert_eq!(c.key, ["sample", "name"]);
        assert_eq!(c.value, ConditionValue::Glob("P3HT*".into()));
        assert_eq!(c.sql_op(), "GLOB");
        assert_eq!(
            Condition::parse("code='007'").unwrap().value,
            ConditionValue::Text("007".into())
        );
        assert_eq!(Condition::parse("a!=b").unwrap().op, CompareOp::Ne);
        assert_eq!(
            Condition::parse("ok==true").unwrap().value,
            ConditionValue::Number(1.0)
        );
        for bad in ["x", "=1", "x=", "x=>1", "x<a*", "a..b=1", "a b=1"] {
            assert!(Condition::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scalar_keys_are_dotted_with_array_items_under_their_key() {
        use Scalar as Value;
        let mut keys = scalar_keys(
            r#"{"sample": {"name": "P3HT", "t": 300}, "detectors": ["det", "ccd", [1]], "ok": true, "none": null}"#,
        );
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            keys,
            [
                ("detectors".to_string(), Value::Text("det".into())),
                ("detectors".to_string(), Value::Text("ccd".into())),
                ("ok".to_string(), Value::Real(1.0)),
                ("sample.name".to_string(), Value::Text("P3HT".into())),
                ("sample.t".to_string(), Value::Real(300.0)),
            ]
        );
        assert!(scalar_keys("not json").is_empty());
    }

    #[test]
    fn searchable_text_has_values_not_keys() {
        let text = searchable_text(
            r#"{"sample": {"name": "P3HT"}, "t": 300, "tags": ["a", "b"], "ok": true}"#,
        );
        assert_eq!(text, "P3HT 300 a b ");
    }
}
