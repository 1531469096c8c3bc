//! The master index database: the one module that reads and writes `index.db`.
//!
//! Its interface is small on purpose (replace one beamtime, forget beamtimes, query runs) so
//! that the index can move to another database server without touching its callers. The SQL
//! stays portable where that costs nothing (upserts). Search is where it does not: the
//! RunStart is kept as JSONB, `--text` uses FTS5 and `--where` an index of RunStart scalars
//! (`beamdb_run_keys`); a PostgreSQL index would use jsonb and tsvector behind the same
//! `query_runs`.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{Connection, TransactionBehavior, params, params_from_iter};

use crate::db::{self, Access, DbError};
use crate::schema::introspect;
use crate::settings::SqliteSettings;

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
    pub extra: BTreeMap<String, rusqlite::types::Value>,
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
}

/// Filters for [`IndexDb::query_runs`]; `None` means "any".
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

    fn sql_op(&self) -> &'static str {
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

/// FTS5 query text for `--text` words: each word a quoted string (so that `-`, `:` or a
/// quote in it is a character, not FTS5 syntax), all of them required; a trailing `*` keeps
/// its meaning (prefix search).
fn fts_query(words: &str) -> String {
    words
        .split_whitespace()
        .map(|w| {
            let (word, prefix) = match w.strip_suffix('*') {
                Some(stem) if !stem.is_empty() => (stem, "*"),
                _ => (w, ""),
            };
            format!("\"{}\"{prefix}", word.replace('"', "\"\""))
        })
        .collect::<Vec<_>>()
        .join(" ")
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
pub fn scalar_keys(metadata: &str) -> Vec<(String, rusqlite::types::Value)> {
    use rusqlite::types::Value;
    fn walk(prefix: &str, value: &serde_json::Value, depth: usize, out: &mut Vec<(String, Value)>) {
        if out.len() >= MAX_KEYS_PER_RUN || depth > 8 {
            return;
        }
        let scalar = match value {
            serde_json::Value::Number(n) => n.as_f64().map(Value::Real),
            serde_json::Value::Bool(b) => Some(Value::Real(if *b { 1.0 } else { 0.0 })),
            serde_json::Value::String(s) => Some(Value::Text(s.clone())),
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

pub struct IndexDb {
    conn: Connection,
    /// `runs_index` columns beyond the built-in ones (promoted metadata), in table order.
    extra_columns: Vec<String>,
    /// Promoted columns of numeric affinity (INTEGER, REAL, NUMERIC).
    numeric_columns: Vec<String>,
    /// Whether [`TEXT_TABLE`] exists (a read-only open of an index no reindex has filled
    /// since this beamdb may lack it).
    has_text: bool,
}

/// The columns of `runs_index` that reindex always writes, in this order: the built-in index
/// model's, so that the list cannot drift from the model (promoted columns come after them).
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
fn core_value(
    column: &str,
    run: &IndexedRun,
    beamtime: &str,
    researcher_id: Option<i64>,
) -> rusqlite::types::Value {
    use rusqlite::types::Value;
    match column {
        "uid" => Value::from(run.uid.clone()),
        "beamtime_id" => Value::from(beamtime.to_string()),
        "researcher_id" => researcher_id.map_or(Value::Null, Value::from),
        "sample_name" => opt(run.sample_name.clone()),
        "plan_name" => opt(run.plan_name.clone()),
        "scan_id" => run.scan_id.map_or(Value::Null, Value::from),
        "time_start" => run.time_start.map_or(Value::Null, Value::from),
        "time_stop" => run.time_stop.map_or(Value::Null, Value::from),
        "exit_status" => opt(run.exit_status.clone()),
        "num_events" => run.num_events.map_or(Value::Null, Value::from),
        "metadata" => opt(run.metadata.clone()),
        // A column added to the built-in model before reindex learns to fill it.
        _ => Value::Null,
    }
}

impl IndexDb {
    /// Opens `index.db`; `access` is `ReadOnly` for queries.
    pub fn open(path: &Path, access: Access, sqlite: &SqliteSettings) -> Result<IndexDb, DbError> {
        let conn = db::open(path, access, sqlite)?;
        let open_err = |source| DbError::Open {
            path: path.to_path_buf(),
            source,
        };
        let (extra_columns, numeric_columns) = extra_run_columns(&conn).map_err(open_err)?;
        if access == Access::ReadWrite {
            // Not part of the models: derived data, created where it is missing.
            conn.execute_batch(&format!(
                "CREATE VIRTUAL TABLE IF NOT EXISTS {TEXT_TABLE} USING fts5(uid UNINDEXED, body);
                 CREATE TABLE IF NOT EXISTS {KEYS_TABLE} (run INTEGER NOT NULL, uid TEXT NOT NULL, key TEXT NOT NULL, num REAL, text TEXT);
                 CREATE INDEX IF NOT EXISTS {KEYS_TABLE}_num ON {KEYS_TABLE} (key, num) WHERE num IS NOT NULL;
                 CREATE INDEX IF NOT EXISTS {KEYS_TABLE}_text ON {KEYS_TABLE} (key, text) WHERE text IS NOT NULL;
                 CREATE INDEX IF NOT EXISTS {KEYS_TABLE}_run_key ON {KEYS_TABLE} (run, key);"
            ))
            .map_err(open_err)?;
        }
        let has_text = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name IN (?1, ?2)",
                [TEXT_TABLE, KEYS_TABLE],
                |row| row.get::<_, i64>(0),
            )
            .map_err(open_err)?
            == 2;
        Ok(IndexDb {
            conn,
            extra_columns,
            numeric_columns,
            has_text,
        })
    }

    /// Whether `runs_index` holds no run (a fresh `initdb`: nothing to search yet).
    pub fn has_no_runs(&self) -> rusqlite::Result<bool> {
        self.conn
            .query_row("SELECT NOT EXISTS (SELECT 1 FROM runs_index)", [], |row| {
                row.get(0)
            })
    }

    /// Whether the index can answer `--text` and `--where` (reindex creates what it needs).
    pub fn has_text(&self) -> bool {
        self.has_text
    }

    /// What the index's schema is, in one short string: a beamtime indexed under another
    /// signature is read again (a new promoted column must be filled, and a migration that
    /// rebuilt `runs_index` renumbered the rows the full-text table points at). `sources`
    /// are the promoted columns' RunStart keys.
    pub fn signature(&self, sources: &BTreeMap<String, String>) -> rusqlite::Result<String> {
        let version: Option<i64> = if self.conn.query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name = ?1",
            [introspect::HISTORY_TABLE],
            |row| row.get::<_, i64>(0),
        )? > 0
        {
            self.conn.query_row(
                &format!("SELECT max(version) FROM {}", introspect::HISTORY_TABLE),
                [],
                |row| row.get(0),
            )?
        } else {
            None
        };
        let mut text = format!("v{}", version.unwrap_or(0));
        for column in &self.extra_columns {
            let source = sources.get(column).map_or(column.as_str(), String::as_str);
            text.push_str(&format!(";{column}={source}"));
        }
        // FNV-1a: short, and stable across builds (std's hasher is not promised to be).
        let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        Ok(format!("{hash:016x}"))
    }

    /// Empties the full-text table; every beamtime must then be read again.
    pub fn clear_text(&mut self) -> rusqlite::Result<()> {
        self.conn.execute_batch(&format!(
            "DELETE FROM {TEXT_TABLE}; DELETE FROM {KEYS_TABLE};"
        ))?;
        Ok(())
    }

    /// Promoted metadata columns of `runs_index`.
    pub fn extra_columns(&self) -> &[String] {
        &self.extra_columns
    }

    /// The watermark stored for every indexed beamtime.
    pub fn watermarks(&self) -> rusqlite::Result<BTreeMap<String, Option<String>>> {
        let mut stmt = self.conn.prepare("SELECT id, watermark FROM beamtimes")?;
        let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        rows.collect()
    }

    /// Replaces everything the index holds about `entry.id` in one transaction: a reader of
    /// the index sees the old beamtime or the new one, never half of it.
    pub fn replace_beamtime(
        &mut self,
        entry: &BeamtimeEntry,
        now: f64,
    ) -> rusqlite::Result<Replaced> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut replaced = Replaced::default();
        let mut researcher_ids = BTreeMap::new();
        for researcher in &entry.researchers {
            researcher_ids.insert(researcher.name.clone(), upsert_researcher(&tx, researcher)?);
        }
        let id_of =
            |name: &Option<String>| name.as_ref().and_then(|n| researcher_ids.get(n).copied());

        let time_start = entry
            .runs
            .iter()
            .filter_map(|r| r.time_start)
            .reduce(f64::min);
        let time_stop = entry
            .runs
            .iter()
            .filter_map(|r| r.time_stop.or(r.time_start))
            .reduce(f64::max);
        tx.execute(
            "INSERT INTO beamtimes (id, researcher_id, db_path, time_start, time_stop, num_runs, watermark, indexed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (id) DO UPDATE SET
               researcher_id = excluded.researcher_id, db_path = excluded.db_path,
               time_start = excluded.time_start, time_stop = excluded.time_stop,
               num_runs = excluded.num_runs, watermark = excluded.watermark,
               indexed_at = excluded.indexed_at",
            params![
                entry.id,
                id_of(&entry.researcher),
                entry.db_path,
                time_start,
                time_stop,
                entry.runs.len() as i64,
                entry.watermark,
                now
            ],
        )?;
        tx.execute(
            &format!(
                "DELETE FROM {TEXT_TABLE} WHERE rowid IN (SELECT rowid FROM runs_index WHERE beamtime_id = ?1)"
            ),
            [&entry.id],
        )?;
        tx.execute(
            &format!(
                "DELETE FROM {KEYS_TABLE} WHERE run IN (SELECT rowid FROM runs_index WHERE beamtime_id = ?1)"
            ),
            [&entry.id],
        )?;
        tx.execute("DELETE FROM runs_index WHERE beamtime_id = ?1", [&entry.id])?;

        let columns: Vec<String> = core_run_columns()
            .iter()
            .chain(self.extra_columns.iter())
            .cloned()
            .collect();
        let quoted: Vec<String> = columns.iter().map(|c| crate::render::ident(c)).collect();
        // The RunStart is kept as JSONB, SQLite's binary JSON: `--where` reads a key from it
        // without parsing text, several times faster over 100,000 runs. Text that is not
        // JSON (a hand-edited beamtime) is kept as NULL rather than failing the beamtime.
        let placeholders: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| match c.as_str() {
                "metadata" => format!("CASE WHEN json_valid(?{n}) THEN jsonb(?{n}) END", n = i + 1),
                _ => format!("?{}", i + 1),
            })
            .collect();
        let mut insert = tx.prepare(&format!(
            "INSERT INTO runs_index ({}) VALUES ({}) ON CONFLICT (uid) DO NOTHING",
            quoted.join(", "),
            placeholders.join(", ")
        ))?;
        let mut owner = tx.prepare("SELECT beamtime_id FROM runs_index WHERE uid = ?1")?;
        let mut text = tx.prepare(&format!(
            "INSERT INTO {TEXT_TABLE} (rowid, uid, body) VALUES (?1, ?2, ?3)"
        ))?;
        let mut keys = tx.prepare(&format!(
            "INSERT INTO {KEYS_TABLE} (run, uid, key, num, text) VALUES (?1, ?2, ?3, ?4, ?5)"
        ))?;
        for run in &entry.runs {
            use rusqlite::types::Value;
            let researcher_id = id_of(&run.researcher);
            let mut values: Vec<Value> = core_run_columns()
                .iter()
                .map(|c| core_value(c, run, &entry.id, researcher_id))
                .collect();
            for column in &self.extra_columns {
                values.push(run.extra.get(column).cloned().unwrap_or(Value::Null));
            }
            if insert.execute(params_from_iter(values))? == 0 {
                let other: String = owner.query_row([&run.uid], |row| row.get(0))?;
                replaced.duplicates.push((run.uid.clone(), other));
                continue;
            }
            let body = run
                .metadata
                .as_deref()
                .map(searchable_text)
                .unwrap_or_default();
            let rowid = tx.last_insert_rowid();
            text.execute(params![rowid, run.uid, body])?;
            for (key, value) in run.metadata.as_deref().map(scalar_keys).unwrap_or_default() {
                let (num, txt) = match value {
                    Value::Text(t) => (Value::Null, Value::Text(t)),
                    other => (other, Value::Null),
                };
                keys.execute(params![rowid, run.uid, key, num, txt])?;
            }
        }
        drop(text);
        drop(keys);
        drop(insert);
        drop(owner);
        tx.commit()?;
        Ok(replaced)
    }

    /// Removes beamtimes (and, by cascade, their runs) that are not in `keep`; returns their ids.
    pub fn forget_beamtimes_except(&mut self, keep: &[String]) -> rusqlite::Result<Vec<String>> {
        let indexed: Vec<String> = self.watermarks()?.into_keys().collect();
        let gone: Vec<String> = indexed
            .into_iter()
            .filter(|id| !keep.contains(id))
            .collect();
        if gone.is_empty() {
            return Ok(gone);
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for id in &gone {
            tx.execute(
                &format!(
                    "DELETE FROM {TEXT_TABLE} WHERE rowid IN (SELECT rowid FROM runs_index WHERE beamtime_id = ?1)"
                ),
                [id],
            )?;
            tx.execute(
                &format!(
                    "DELETE FROM {KEYS_TABLE} WHERE run IN (SELECT rowid FROM runs_index WHERE beamtime_id = ?1)"
                ),
                [id],
            )?;
            tx.execute("DELETE FROM runs_index WHERE beamtime_id = ?1", [id])?;
            tx.execute("DELETE FROM beamtimes WHERE id = ?1", [id])?;
        }
        tx.commit()?;
        Ok(gone)
    }

    /// Forces the next reindex to re-read every beamtime.
    pub fn clear_watermarks(&mut self) -> rusqlite::Result<()> {
        self.conn
            .execute("UPDATE beamtimes SET watermark = NULL", [])?;
        Ok(())
    }

    /// Deletes researchers no run or beamtime refers to any more.
    pub fn forget_unreferenced_researchers(&mut self) -> rusqlite::Result<usize> {
        self.conn.execute(
            "DELETE FROM researchers WHERE id NOT IN (
               SELECT researcher_id FROM runs_index WHERE researcher_id IS NOT NULL
               UNION SELECT researcher_id FROM beamtimes WHERE researcher_id IS NOT NULL)",
            [],
        )
    }

    /// Runs matching `filter`, newest first.
    pub fn query_runs(&self, filter: &RunFilter) -> rusqlite::Result<Vec<RunRow>> {
        use rusqlite::types::Value;
        let mut clauses: Vec<String> = Vec::new();
        let mut values: Vec<Value> = Vec::new();
        // Each clause has one `?`, numbered as its value is bound.
        let bind = |clause: &str, value: Value, values: &mut Vec<Value>| {
            values.push(value);
            clause.replace('?', &format!("?{}", values.len()))
        };
        if !filter.beamtimes.is_empty() {
            let marks: Vec<String> = filter
                .beamtimes
                .iter()
                .map(|b| bind("?", Value::from(b.clone()), &mut values))
                .collect();
            clauses.push(format!("r.beamtime_id IN ({})", marks.join(", ")));
        }
        if let Some(sample) = &filter.sample {
            clauses.push(bind(
                &text_match("r.sample_name", sample),
                Value::from(sample.clone()),
                &mut values,
            ));
        }
        if let Some(researcher) = &filter.researcher {
            clauses.push(bind(
                &text_match("p.name", researcher),
                Value::from(researcher.clone()),
                &mut values,
            ));
        }
        if let Some(plan) = &filter.plan {
            clauses.push(bind(
                &text_match("r.plan_name", plan),
                Value::from(plan.clone()),
                &mut values,
            ));
        }
        if let Some(since) = filter.since {
            clauses.push(bind("r.time_start >= ?", Value::from(since), &mut values));
        }
        if let Some(until) = filter.until {
            clauses.push(bind("r.time_start < ?", Value::from(until), &mut values));
        }
        match filter.exit_status.as_deref() {
            None => {}
            Some("incomplete") => clauses.push("r.exit_status IS NULL".into()),
            Some(status) => clauses.push(bind(
                "r.exit_status = ?",
                Value::from(status.to_string()),
                &mut values,
            )),
        }
        // One condition on the key table drives (an equality when there is one: few runs),
        // the others are checked per run it finds, through the (run, key) index.
        let driver = filter
            .conditions
            .iter()
            .position(|c| {
                c.op == CompareOp::Eq && self.promoted_target(c, &filter.promoted).is_none()
            })
            .or_else(|| {
                filter
                    .conditions
                    .iter()
                    .position(|c| self.promoted_target(c, &filter.promoted).is_none())
            });
        for (i, condition) in filter.conditions.iter().enumerate() {
            let value = match &condition.value {
                ConditionValue::Number(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => {
                    Value::Integer(*n as i64)
                }
                ConditionValue::Number(n) => Value::Real(*n),
                ConditionValue::Text(t) | ConditionValue::Glob(t) => Value::Text(t.clone()),
            };
            let op = condition.sql_op();
            match self.promoted_target(condition, &filter.promoted) {
                Some(column) => {
                    let clause = format!("{column} {op} ?");
                    clauses.push(bind(&clause, value, &mut values));
                }
                None => {
                    // Any other key: the runs (by rowid, and uid against a stale row) that
                    // have a value of it that compares so, found through the key index.
                    let side = match condition.value {
                        ConditionValue::Number(_) => "num",
                        _ => "text",
                    };
                    values.push(Value::from(condition.key.join(".")));
                    let key = values.len();
                    values.push(value);
                    let value = values.len();
                    clauses.push(if Some(i) == driver {
                        format!(
                            "(r.rowid, r.uid) IN (SELECT run, uid FROM {KEYS_TABLE} WHERE key = ?{key} AND {side} {op} ?{value})"
                        )
                    } else {
                        format!(
                            "EXISTS (SELECT 1 FROM {KEYS_TABLE} k INDEXED BY {KEYS_TABLE}_run_key WHERE k.run = r.rowid AND k.key = ?{key} AND k.uid = r.uid AND k.{side} {op} ?{value})"
                        )
                    });
                }
            }
        }
        let mut from = String::from("runs_index r");
        let mut order = String::from("r.time_start DESC, r.uid");
        if let Some(words) = filter.text.as_deref() {
            // The rowid join finds the run; the uid check makes a stale full-text row (one
            // left behind by a migration that renumbered runs_index) match nothing.
            from =
                format!("{TEXT_TABLE} t JOIN runs_index r ON r.rowid = t.rowid AND r.uid = t.uid");
            clauses.push(bind(
                &format!("{TEXT_TABLE} MATCH ?"),
                Value::from(fts_query(words)),
                &mut values,
            ));
            order = format!("t.rank, {order}");
        }
        let extra: String = self
            .extra_columns
            .iter()
            .map(|c| format!(", r.{}", crate::render::ident(c)))
            .collect();
        let mut sql = format!(
            "SELECT r.beamtime_id, r.uid, r.sample_name, r.plan_name, r.scan_id, r.time_start,
                    r.time_stop, r.exit_status, r.num_events, p.name, json(r.metadata){extra}
             FROM {from} LEFT JOIN researchers p ON p.id = r.researcher_id"
        );
        if !clauses.is_empty() {
            sql.push_str(&format!(" WHERE {}", clauses.join(" AND ")));
        }
        sql.push_str(&format!(" ORDER BY {order}"));
        if let Some(limit) = filter.limit {
            sql.push_str(&format!(" LIMIT {limit}"));
        }
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(params_from_iter(values), |row| {
            let mut extra = BTreeMap::new();
            for (i, column) in self.extra_columns.iter().enumerate() {
                extra.insert(column.clone(), row.get::<_, Value>(11 + i)?);
            }
            Ok(RunRow {
                beamtime: row.get(0)?,
                run: IndexedRun {
                    uid: row.get(1)?,
                    sample_name: row.get(2)?,
                    plan_name: row.get(3)?,
                    scan_id: row.get(4)?,
                    time_start: row.get(5)?,
                    time_stop: row.get(6)?,
                    exit_status: row.get(7)?,
                    num_events: row.get(8)?,
                    researcher: row.get(9)?,
                    metadata: row.get(10)?,
                    extra,
                },
            })
        })?;
        rows.collect()
    }

    /// The promoted column a `--where` condition compares, when its key is one's source and
    /// the column holds the value as the condition compares it: a TEXT column stores numbers
    /// as text, so a numeric comparison goes to the RunStart's keys, where the number kept
    /// its type.
    fn promoted_target(
        &self,
        condition: &Condition,
        promoted: &BTreeMap<String, String>,
    ) -> Option<String> {
        let key = condition.key.join(".");
        let column = promoted
            .get(&key)
            .filter(|c| self.extra_columns.contains(c))
            .or_else(|| {
                // An index column nobody declared a source for is filled from its own name.
                self.extra_columns
                    .iter()
                    .find(|c| **c == key && !promoted.values().any(|p| p == *c))
            })?;
        let numeric_column = self.numeric_columns.contains(column);
        (numeric_column || !matches!(condition.value, ConditionValue::Number(_)))
            .then(|| format!("r.{}", crate::render::ident(column)))
    }

    /// Runs whose uid is `query` or starts with it, as (uid, beamtime id), sorted, at most
    /// `limit` (the uid index is read as a range: cheap whatever the index's size).
    pub fn runs_with_prefix(
        &self,
        query: &str,
        limit: usize,
    ) -> rusqlite::Result<Vec<(String, String)>> {
        let mut stmt = self.conn.prepare(
            "SELECT uid, beamtime_id FROM runs_index
             WHERE uid >= ?1 AND uid < ?1 || char(1114111) ORDER BY uid LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![query, limit as i64], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?;
        rows.collect()
    }

    /// Every indexed run as (uid, beamtime id): the candidates of a "did you mean".
    pub fn all_run_uids(&self) -> rusqlite::Result<Vec<(String, String)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT uid, beamtime_id FROM runs_index")?;
        let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        rows.collect()
    }

    /// Each indexed beamtime, with its watermark and run counts, sorted by id.
    pub fn beamtime_runs(&self) -> rusqlite::Result<Vec<IndexedBeamtime>> {
        let mut stmt = self.conn.prepare(
            "SELECT b.id, b.watermark, coalesce(b.num_runs, 0),
                    (SELECT count(*) FROM runs_index r WHERE r.beamtime_id = b.id)
             FROM beamtimes b ORDER BY b.id",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok(IndexedBeamtime {
                id: row.get(0)?,
                watermark: row.get(1)?,
                num_runs: row.get(2)?,
                indexed_runs: row.get(3)?,
            })
        })?;
        rows.collect()
    }

    /// How many beamtimes and runs the index holds.
    pub fn counts(&self) -> rusqlite::Result<(i64, i64)> {
        self.conn.query_row(
            "SELECT (SELECT count(*) FROM beamtimes), (SELECT count(*) FROM runs_index)",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
    }
}

fn opt(text: Option<String>) -> rusqlite::types::Value {
    text.map_or(rusqlite::types::Value::Null, rusqlite::types::Value::from)
}

/// `column = ?`, or `column GLOB ?` when the pattern has glob characters.
fn text_match(column: &str, pattern: &str) -> String {
    let op = if pattern.contains(['*', '?', '[']) {
        "GLOB"
    } else {
        "="
    };
    format!("{column} {op} ?")
}

fn upsert_researcher(conn: &Connection, r: &Researcher) -> rusqlite::Result<i64> {
    conn.execute(
        "INSERT INTO researchers (name, email, orcid, affiliation) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (name) DO UPDATE SET
           email = COALESCE(excluded.email, researchers.email),
           orcid = COALESCE(excluded.orcid, researchers.orcid),
           affiliation = COALESCE(excluded.affiliation, researchers.affiliation)",
        params![r.name, r.email, r.orcid, r.affiliation],
    )?;
    conn.query_row(
        "SELECT id FROM researchers WHERE name = ?1",
        [&r.name],
        |row| row.get(0),
    )
}

/// The promoted columns of `runs_index` (beyond the built-in ones), in table order, and
/// those of them with numeric affinity.
fn extra_run_columns(conn: &Connection) -> rusqlite::Result<(Vec<String>, Vec<String>)> {
    use crate::schema::SqlType;
    let schema = introspect::introspect(conn)?;
    let extra: Vec<&crate::schema::Column> = schema
        .table("runs_index")
        .map(|t| {
            t.columns
                .iter()
                .filter(|c| !core_run_columns().contains(&c.name))
                .collect()
        })
        .unwrap_or_default();
    let numeric = extra
        .iter()
        .filter(|c| {
            matches!(
                c.sql_type,
                SqlType::Integer | SqlType::Real | SqlType::Numeric
            )
        })
        .map(|c| c.name.clone())
        .collect();
    Ok((extra.iter().map(|c| c.name.clone()).collect(), numeric))
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
                rusqlite::types::Value::Null,
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
    fn fts_query_quotes_every_word_and_keeps_prefixes() {
        assert_eq!(fts_query("P3HT anneal"), "\"P3HT\" \"anneal\"");
        assert_eq!(fts_query("anne* p-1 a\"b"), "\"anne\"* \"p-1\" \"a\"\"b\"");
        assert_eq!(fts_query("*"), "\"*\"");
    }

    #[test]
    fn scalar_keys_are_dotted_with_array_items_under_their_key() {
        use rusqlite::types::Value;
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
