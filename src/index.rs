//! The master index database: the one module that reads and writes `index.db`.
//!
//! Its interface is small on purpose (replace one beamtime, forget beamtimes, query runs) so
//! that the index can move to another database server without touching its callers. The SQL
//! stays portable where that costs nothing (upserts, no SQLite-only functions in queries).

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
    pub limit: Option<u64>,
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
}

/// The columns of `runs_index` that reindex always writes.
pub const CORE_RUN_COLUMNS: [&str; 10] = [
    "uid",
    "beamtime_id",
    "researcher_id",
    "sample_name",
    "plan_name",
    "scan_id",
    "time_start",
    "time_stop",
    "exit_status",
    "num_events",
];

impl IndexDb {
    /// Opens `index.db`; `access` is `ReadOnly` for queries.
    pub fn open(path: &Path, access: Access, sqlite: &SqliteSettings) -> Result<IndexDb, DbError> {
        let conn = db::open(path, access, sqlite)?;
        let extra_columns = extra_run_columns(&conn).map_err(|source| DbError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(IndexDb {
            conn,
            extra_columns,
        })
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
        tx.execute("DELETE FROM runs_index WHERE beamtime_id = ?1", [&entry.id])?;

        let columns: Vec<String> = CORE_RUN_COLUMNS
            .iter()
            .map(|c| c.to_string())
            .chain(self.extra_columns.iter().cloned())
            .collect();
        let quoted: Vec<String> = columns.iter().map(|c| crate::render::ident(c)).collect();
        let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
        let mut insert = tx.prepare(&format!(
            "INSERT INTO runs_index ({}) VALUES ({}) ON CONFLICT (uid) DO NOTHING",
            quoted.join(", "),
            placeholders.join(", ")
        ))?;
        let mut owner = tx.prepare("SELECT beamtime_id FROM runs_index WHERE uid = ?1")?;
        for run in &entry.runs {
            use rusqlite::types::Value;
            let mut values: Vec<Value> = vec![
                Value::from(run.uid.clone()),
                Value::from(entry.id.clone()),
                id_of(&run.researcher).map_or(Value::Null, Value::from),
                opt(run.sample_name.clone()),
                opt(run.plan_name.clone()),
                run.scan_id.map_or(Value::Null, Value::from),
                run.time_start.map_or(Value::Null, Value::from),
                run.time_stop.map_or(Value::Null, Value::from),
                opt(run.exit_status.clone()),
                run.num_events.map_or(Value::Null, Value::from),
            ];
            for column in &self.extra_columns {
                values.push(run.extra.get(column).cloned().unwrap_or(Value::Null));
            }
            if insert.execute(params_from_iter(values))? == 0 {
                let other: String = owner.query_row([&run.uid], |row| row.get(0))?;
                replaced.duplicates.push((run.uid.clone(), other));
            }
        }
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
        let extra: String = self
            .extra_columns
            .iter()
            .map(|c| format!(", r.{}", crate::render::ident(c)))
            .collect();
        let mut sql = format!(
            "SELECT r.beamtime_id, r.uid, r.sample_name, r.plan_name, r.scan_id, r.time_start,
                    r.time_stop, r.exit_status, r.num_events, p.name{extra}
             FROM runs_index r LEFT JOIN researchers p ON p.id = r.researcher_id"
        );
        if !clauses.is_empty() {
            sql.push_str(&format!(" WHERE {}", clauses.join(" AND ")));
        }
        sql.push_str(" ORDER BY r.time_start DESC, r.uid");
        if let Some(limit) = filter.limit {
            sql.push_str(&format!(" LIMIT {limit}"));
        }
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(params_from_iter(values), |row| {
            let mut extra = BTreeMap::new();
            for (i, column) in self.extra_columns.iter().enumerate() {
                extra.insert(column.clone(), row.get::<_, Value>(10 + i)?);
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
                    extra,
                },
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

fn extra_run_columns(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let schema = introspect::introspect(conn)?;
    Ok(schema
        .table("runs_index")
        .map(|t| {
            t.columns
                .iter()
                .map(|c| c.name.clone())
                .filter(|c| !CORE_RUN_COLUMNS.contains(&c.as_str()))
                .collect()
        })
        .unwrap_or_default())
}
