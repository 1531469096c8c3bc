//! The index in SQLite: `index.db` under data_root, as a single host keeps it.
//!
//! The SQL stays portable where that costs nothing (upserts). Search is where it does not:
//! the RunStart is kept as SQLite's JSONB, `--text` uses FTS5 and `--where` an index of
//! RunStart scalars (`beamdb_run_keys`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::types::{FromSql, FromSqlResult, ToSql, ToSqlOutput, Value, ValueRef};
use rusqlite::{Connection, TransactionBehavior, params, params_from_iter};

use super::{
    BeamtimeEntry, CompareOp, Condition, ConditionValue, Index, IndexError, IndexedBeamtime,
    IndexedRun, KEYS_TABLE, Replaced, Researcher, RunFilter, RunRow, Scalar, TEXT_TABLE,
    core_run_columns, core_value, scalar_keys, searchable_text,
};
use crate::db::{self, Access, DbError};
use crate::schema::introspect;
use crate::settings::SqliteSettings;

impl ToSql for Scalar {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Scalar::Null => ToSqlOutput::Owned(Value::Null),
            Scalar::Int(i) => ToSqlOutput::Owned(Value::Integer(*i)),
            Scalar::Real(f) => ToSqlOutput::Owned(Value::Real(*f)),
            Scalar::Text(t) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
            Scalar::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

impl FromSql for Scalar {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        Ok(Scalar::from(Value::column_result(value)?))
    }
}

impl From<Value> for Scalar {
    fn from(value: Value) -> Scalar {
        match value {
            Value::Null => Scalar::Null,
            Value::Integer(i) => Scalar::Int(i),
            Value::Real(f) => Scalar::Real(f),
            Value::Text(t) => Scalar::Text(t),
            Value::Blob(b) => Scalar::Blob(b),
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

/// `index.db`, open.
pub struct IndexDb {
    conn: Connection,
    path: PathBuf,
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
            path: path.to_path_buf(),
            extra_columns,
            numeric_columns,
            has_text,
        })
    }

    /// Whether `runs_index` holds no run (a fresh `initdb`: nothing to search yet).
    fn has_no_runs_sql(&self) -> rusqlite::Result<bool> {
        self.conn
            .query_row("SELECT NOT EXISTS (SELECT 1 FROM runs_index)", [], |row| {
                row.get(0)
            })
    }

    /// Whether the index can answer `--text` and `--where` (reindex creates what it needs).
    fn has_text_inner(&self) -> bool {
        self.has_text
    }

    /// What the index's schema is, in one short string: a beamtime indexed under another
    /// signature is read again (a new promoted column must be filled, and a migration that
    /// rebuilt `runs_index` renumbered the rows the full-text table points at). `sources`
    /// are the promoted columns' RunStart keys.
    fn signature_sql(&self, sources: &BTreeMap<String, String>) -> rusqlite::Result<String> {
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
    fn clear_text_sql(&mut self) -> rusqlite::Result<()> {
        self.conn.execute_batch(&format!(
            "DELETE FROM {TEXT_TABLE}; DELETE FROM {KEYS_TABLE};"
        ))?;
        Ok(())
    }

    /// Promoted metadata columns of `runs_index`.
    fn extra_columns_inner(&self) -> &[String] {
        &self.extra_columns
    }

    /// The watermark stored for every indexed beamtime.
    fn watermarks_sql(&self) -> rusqlite::Result<BTreeMap<String, Option<String>>> {
        let mut stmt = self.conn.prepare("SELECT id, watermark FROM beamtimes")?;
        let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        rows.collect()
    }

    /// Replaces everything the index holds about `entry.id` in one transaction: a reader of
    /// the index sees the old beamtime or the new one, never half of it.
    fn replace_beamtime_sql(
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

        let (time_start, time_stop) = entry.time_span();
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
            let researcher_id = id_of(&run.researcher);
            let mut values: Vec<Scalar> = core_run_columns()
                .iter()
                .map(|c| core_value(c, run, &entry.id, researcher_id))
                .collect();
            for column in &self.extra_columns {
                values.push(run.extra.get(column).cloned().unwrap_or(Scalar::Null));
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
                    Scalar::Text(t) => (Scalar::Null, Scalar::Text(t)),
                    other => (other, Scalar::Null),
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

    /// Removes beamtimes (and, by cascade, their runs) that are not in `keep`; returns their
    /// ids. Every beamtime in index.db is this data root's (the file lives under it).
    fn forget_beamtimes_except_sql(&mut self, keep: &[String]) -> rusqlite::Result<Vec<String>> {
        let indexed: Vec<String> = self.watermarks_sql()?.into_keys().collect();
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
    fn clear_watermarks_sql(&mut self) -> rusqlite::Result<()> {
        self.conn
            .execute("UPDATE beamtimes SET watermark = NULL", [])?;
        Ok(())
    }

    /// Deletes researchers no run or beamtime refers to any more.
    fn forget_unreferenced_researchers_sql(&mut self) -> rusqlite::Result<usize> {
        self.conn.execute(
            "DELETE FROM researchers WHERE id NOT IN (
               SELECT researcher_id FROM runs_index WHERE researcher_id IS NOT NULL
               UNION SELECT researcher_id FROM beamtimes WHERE researcher_id IS NOT NULL)",
            [],
        )
    }

    /// Runs matching `filter`, newest first.
    fn query_runs_sql(&self, filter: &RunFilter) -> rusqlite::Result<Vec<RunRow>> {
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
                extra.insert(column.clone(), row.get::<_, Scalar>(11 + i)?);
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
    fn runs_with_prefix_sql(
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
    fn all_run_uids_sql(&self) -> rusqlite::Result<Vec<(String, String)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT uid, beamtime_id FROM runs_index")?;
        let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        rows.collect()
    }

    /// Each indexed beamtime, with its watermark and run counts, sorted by id.
    fn beamtime_runs_sql(&self) -> rusqlite::Result<Vec<IndexedBeamtime>> {
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
    fn counts_sql(&self) -> rusqlite::Result<(i64, i64)> {
        self.conn.query_row(
            "SELECT (SELECT count(*) FROM beamtimes), (SELECT count(*) FROM runs_index)",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
    }
}

impl IndexDb {
    fn err(&self, source: rusqlite::Error) -> IndexError {
        IndexError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }
}

impl Index for IndexDb {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn has_no_runs(&self) -> Result<bool, IndexError> {
        self.has_no_runs_sql().map_err(|e| self.err(e))
    }

    fn has_text(&self) -> bool {
        self.has_text_inner()
    }

    fn signature(&self, sources: &BTreeMap<String, String>) -> Result<String, IndexError> {
        self.signature_sql(sources).map_err(|e| self.err(e))
    }

    fn clear_text(&mut self) -> Result<(), IndexError> {
        self.clear_text_sql().map_err(|e| self.err(e))
    }

    fn extra_columns(&self) -> &[String] {
        self.extra_columns_inner()
    }

    fn watermarks(&self) -> Result<BTreeMap<String, Option<String>>, IndexError> {
        self.watermarks_sql().map_err(|e| self.err(e))
    }

    fn replace_beamtime(
        &mut self,
        entry: &BeamtimeEntry,
        now: f64,
    ) -> Result<Replaced, IndexError> {
        self.replace_beamtime_sql(entry, now)
            .map_err(|e| self.err(e))
    }

    fn forget_beamtimes_except(
        &mut self,
        keep: &[String],
        _under: &str,
    ) -> Result<Vec<String>, IndexError> {
        self.forget_beamtimes_except_sql(keep)
            .map_err(|e| self.err(e))
    }

    /// index.db belongs to one data root: every beamtime in it is this root's (`_ids`, and
    /// any that are gone, which this reindex removes).
    fn clear_watermarks(&mut self, _ids: &[String]) -> Result<(), IndexError> {
        self.clear_watermarks_sql().map_err(|e| self.err(e))
    }

    fn forget_unreferenced_researchers(&mut self) -> Result<usize, IndexError> {
        self.forget_unreferenced_researchers_sql()
            .map_err(|e| self.err(e))
    }

    fn query_runs(&self, filter: &RunFilter) -> Result<Vec<RunRow>, IndexError> {
        self.query_runs_sql(filter).map_err(|e| self.err(e))
    }

    fn runs_with_prefix(
        &self,
        query: &str,
        limit: usize,
    ) -> Result<Vec<(String, String)>, IndexError> {
        self.runs_with_prefix_sql(query, limit)
            .map_err(|e| self.err(e))
    }

    fn all_run_uids(&self) -> Result<Vec<(String, String)>, IndexError> {
        self.all_run_uids_sql().map_err(|e| self.err(e))
    }

    fn beamtime_runs(&self) -> Result<Vec<IndexedBeamtime>, IndexError> {
        self.beamtime_runs_sql().map_err(|e| self.err(e))
    }

    fn counts(&self) -> Result<(i64, i64), IndexError> {
        self.counts_sql().map_err(|e| self.err(e))
    }
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
    fn fts_query_quotes_every_word_and_keeps_prefixes() {
        assert_eq!(fts_query("P3HT anneal"), "\"P3HT\" \"anneal\"");
        assert_eq!(fts_query("anne* p-1 a\"b"), "\"anne\"* \"p-1\" \"a\"\"b\"");
        assert_eq!(fts_query("*"), "\"*\"");
    }
}
