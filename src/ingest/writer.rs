//! The run's rows into `beamtime.db`, in one transaction, after its frames are on disk.
//!
//! A run's events do not wait in memory for its stop: as they arrive they go, in batches, to
//! a staging table in the connection's private temp database (a file: `temp_store = FILE`),
//! which holds no lock on `beamtime.db`. At the stop one short write transaction copies them
//! into `events` with the run's other rows, so readers never see half a run and another
//! ingest or `listen` waits only for that copy, as before. The events table's constraints
//! check repeated uids and seq_nums; `owners` turns a refusal into the documents' lines.

use rusqlite::{Connection, OptionalExtension, ToSql, params, types::Value as Sql};
use serde_json::Value;

use super::dtype::Dtype;
use super::rows::{self, RunRows};
use crate::beamtime;
use crate::frames::FrameRef;
use crate::schema::DbKind;
use crate::schema::declared::{self, Promoted};

/// The columns of `runs` that ingest fills itself: the built-in beamtime model's, so that the
/// list cannot drift from the model. Any other column is promoted metadata.
pub fn built_in_run_columns() -> &'static [String] {
    static BUILT_IN: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    BUILT_IN.get_or_init(|| {
        declared::builtin(DbKind::Beamtime)
            .ok()
            .and_then(|s| s.tables.get("runs").cloned())
            .map(|t| t.columns.into_iter().map(|c| c.name).collect())
            .unwrap_or_default()
    })
}

/// Where `runs.operator` comes from, first present key wins.
pub const OPERATOR_KEYS: &[&str] = &["operator"];
/// RunStart keys that name the responsible researcher, most specific first: `runs.researcher`
/// at ingest, and the index's researcher of a run stored without one.
pub const RESEARCHER_KEYS: &[&str] = &[
    "researcher",
    "principal_investigator",
    "pi_name",
    "pi",
    "PI",
];

/// The promoted columns of the live `runs` table, each with the RunStart key that fills it:
/// the model's `source` (`declared`, from `declared::promoted`), else the column's name.
pub fn promoted_columns(
    conn: &Connection,
    declared: &[Promoted],
) -> rusqlite::Result<Vec<Promoted>> {
    // Hidden 0: generated columns (2, 3) are computed, never written.
    let mut stmt =
        conn.prepare("SELECT name FROM pragma_table_xinfo('runs') WHERE hidden = 0 ORDER BY cid")?;
    let names = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let mut promoted = Vec::new();
    for name in names {
        let name = name?;
        if built_in_run_columns().contains(&name) {
            continue;
        }
        promoted.push(match declared.iter().find(|p| p.column == name) {
            Some(p) => p.clone(),
            None => Promoted {
                source: vec![name.clone()],
                column: name,
                sql_type: crate::schema::SqlType::Text,
            },
        });
    }
    Ok(promoted)
}

/// The committed digest of run `uid`: `Some(None)` for a run stored without one.
pub fn committed_digest(conn: &Connection, uid: &str) -> rusqlite::Result<Option<Option<String>>> {
    conn.query_row(
        "SELECT content_digest FROM runs WHERE uid = ?1",
        [uid],
        |r| r.get(0),
    )
    .optional()
}

/// The `beamtime_meta` key that records which run group of an S3 frame store the committed
/// run `uid` owns (`runs/{uid}@{version}`). Written in the run's own transaction, so the
/// commit is the switch from one version to the next; on the filesystem there is no such
/// row (the group is `runs/{uid}`). A key whose run is gone owns nothing.
fn group_key(uid: &str) -> String {
    format!("frames_group:{uid}")
}

/// The run group the committed run `uid` owns in an S3 frame store, if any.
pub fn committed_group(conn: &Connection, uid: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT m.value FROM beamtime_meta m JOIN runs r ON r.uid = ?2 WHERE m.key = ?1",
        params![group_key(uid), uid],
        |r| r.get(0),
    )
    .optional()
}

/// Records `group` as the run group of run `uid` (inside the run's transaction).
pub fn record_group(conn: &Connection, uid: &str, group: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO beamtime_meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![group_key(uid), group],
    )?;
    Ok(())
}

/// Every run group committed runs own in an S3 frame store, by run uid.
pub fn owned_groups(
    conn: &Connection,
) -> rusqlite::Result<std::collections::BTreeMap<String, String>> {
    let mut stmt = conn.prepare(
        "SELECT r.uid, m.value FROM beamtime_meta m JOIN runs r ON m.key = 'frames_group:' || r.uid",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// An `image_refs` row as the frame checks take it (`verify` and recovery): the recorded
/// numpy dtype is translated here, once, to the Zarr data type the array must hold.
pub fn frame_ref(
    array: String,
    index: i64,
    dtype: String,
    frame_shape: Option<String>,
) -> FrameRef {
    let data_type = Dtype::parse_numpy(&dtype)
        .ok()
        .map(|(d, _)| d.zarr_name().to_string());
    FrameRef {
        array,
        index,
        dtype,
        data_type,
        frame_shape,
    }
}

/// Every frame committed run `uid` stores (what recovery must find whole before it moves or
/// deletes a copy of the run's frames).
pub fn committed_frames(conn: &Connection, uid: &str) -> rusqlite::Result<Vec<FrameRef>> {
    let mut stmt = conn.prepare(
        "SELECT i.zarr_group, i.index_in_stack, i.dtype, i.frame_shape
         FROM image_refs i JOIN streams s ON s.uid = i.stream_uid
         WHERE s.run_uid = ?1 ORDER BY i.id",
    )?;
    let rows = stmt.query_map([uid], |r| {
        Ok(frame_ref(r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })?;
    rows.collect()
}

/// A JSON value as SQLite stores it: objects and arrays as JSON text.
pub fn json_to_sql(v: &Value) -> Sql {
    match v {
        Value::Null => Sql::Null,
        Value::Bool(b) => Sql::Integer(i64::from(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Sql::Integer(i),
            None => n.as_f64().map_or(Sql::Null, Sql::Real),
        },
        Value::String(s) => Sql::Text(s.clone()),
        other => Sql::Text(other.to_string()),
    }
}

/// Rows per INSERT statement: with one statement per row, SQLite's per-statement work
/// (bind, step, reset) cost more than the inserts themselves.
const ROWS_PER_INSERT: usize = 50;

/// The staging table of the open run's events (see the module's comment), with each event's
/// line in its input for messages.
pub const STAGED: &str = "temp.staged_events";

/// Makes the staging table empty for a new run. Its file is the temp database's: the pragma
/// keeps it out of memory (the bundled SQLite keeps temp tables in memory by default).
pub fn stage_begin(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "temp_store", "FILE")?;
    // Big pages and a few MiB of cache: the events go out and come back in a few thousand
    // large reads and writes instead of ~150,000 of 4 KiB per 100,000 events (the page size
    // takes when the temp database is first made). Its journal in memory: it is scratch, and
    // one staging batch changes at most a few hundred KiB of it.
    conn.execute_batch(
        "PRAGMA temp.page_size = 65536; PRAGMA temp.cache_size = -8192;
         PRAGMA temp.journal_mode = MEMORY",
    )?;
    conn.execute_batch(
        "DROP TABLE IF EXISTS temp.staged_events;
         CREATE TEMP TABLE staged_events (uid TEXT NOT NULL, stream_uid TEXT NOT NULL,
           seq_num INTEGER NOT NULL, time REAL NOT NULL, data TEXT NOT NULL, timestamps TEXT,
           line INTEGER NOT NULL)",
    )
}

/// Drops the staging table (its pages go back to the temp file's free list).
pub fn stage_end(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("DROP TABLE IF EXISTS temp.staged_events")
}

/// A batch of event rows into the staging table, in a transaction of the temp database
/// only (no lock on `beamtime.db`).
pub fn stage_events(conn: &Connection, events: &[rows::EventRow]) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    insert_many(
        &tx,
        "INSERT INTO temp.staged_events (uid, stream_uid, seq_num, time, data, timestamps, line)",
        events,
        |e| {
            [
                &e.uid,
                &e.stream_uid,
                &e.seq_num,
                &e.time,
                &e.data,
                &e.timestamps,
                &e.line,
            ]
        },
    )?;
    tx.commit()
}

/// Indexes the staging table by (stream, seq_num), for lookups of many events.
pub fn index_staged(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS temp.staged_events_seq ON staged_events (stream_uid, seq_num)",
    )
}

/// A staged event (the first with this stream and seq_num).
pub struct Staged {
    pub rowid: i64,
    pub uid: String,
    pub data: String,
}

pub fn staged_event(
    conn: &Connection,
    stream_uid: &str,
    seq_num: i64,
) -> rusqlite::Result<Option<Staged>> {
    conn.prepare_cached(
        "SELECT rowid, uid, data FROM temp.staged_events
         WHERE stream_uid = ?1 AND seq_num = ?2 ORDER BY rowid LIMIT 1",
    )?
    .query_row(params![stream_uid, seq_num], |r| {
        Ok(Staged {
            rowid: r.get(0)?,
            uid: r.get(1)?,
            data: r.get(2)?,
        })
    })
    .optional()
}

/// A staged event's data, with what a stream_datum delivered for it.
pub fn restage_data(conn: &Connection, rowid: i64, data: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE temp.staged_events SET data = ?2 WHERE rowid = ?1")?
        .execute(params![rowid, data])?;
    Ok(())
}

/// Inserts `rows` with `head` (`INSERT INTO t (a, b)`), `ROWS_PER_INSERT` rows a statement,
/// each row's `N` values given by `values`.
fn insert_many<'r, R, const N: usize>(
    tx: &Connection,
    head: &str,
    rows: &'r [R],
    values: impl Fn(&'r R) -> [&'r dyn ToSql; N],
) -> rusqlite::Result<()> {
    let sql = |n: usize| {
        let row = format!("({})", vec!["?"; N].join(", "));
        format!("{head} VALUES {}", vec![row; n].join(", "))
    };
    let full = sql(ROWS_PER_INSERT);
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let mut stmt = if chunk.len() == ROWS_PER_INSERT {
            tx.prepare_cached(&full)?
        } else {
            tx.prepare_cached(&sql(chunk.len()))?
        };
        let params: Vec<&dyn ToSql> = chunk.iter().flat_map(&values).collect();
        stmt.execute(params.as_slice())?;
    }
    Ok(())
}

/// Writes the run into `tx` (replacing any run of the same uid): its row, streams, events
/// (from the staging table) and image_refs, and bumps the beamtime's change counter. The
/// caller commits.
pub fn write_run(
    tx: &rusqlite::Transaction<'_>,
    rows: &RunRows,
    promoted: &[Promoted],
) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM runs WHERE uid = ?1", [&rows.uid])?;
    let sample_id: Option<i64> = match rows::sample(&rows.start) {
        None => None,
        Some(s) => Some(tx.query_row(
            "INSERT INTO samples (name, formula, serial, tags, beamline_pos, extra)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (name) DO UPDATE SET
               formula = coalesce(samples.formula, excluded.formula),
               serial = coalesce(samples.serial, excluded.serial),
               tags = coalesce(samples.tags, excluded.tags),
               beamline_pos = coalesce(samples.beamline_pos, excluded.beamline_pos),
               extra = coalesce(samples.extra, excluded.extra)
             RETURNING id",
            params![s.name, s.formula, s.serial, s.tags, s.beamline_pos, s.extra],
            |r| r.get(0),
        )?),
    };
    let start = &rows.start;
    let stop = rows.stop.as_ref();
    // The stop's per-stream counts when it has them, else what arrived: a stream's events are
    // its seq_nums, with an event document or delivered by stream_datum alone (a fly scan),
    // as the stop counts them and as `verify` checks.
    let arrived: i64 = rows.arrived.values().sum();
    let num_events = stop
        .and_then(|s| s.get("num_events"))
        .and_then(Value::as_object)
        .map(|m| m.values().filter_map(Value::as_i64).sum::<i64>())
        .unwrap_or(arrived);
    let start_doc = Value::Object(start.clone());
    let mut values_by_name: Vec<(&str, Sql)> = vec![
        ("uid", Sql::Text(rows.uid.clone())),
        ("sample_id", sample_id.map_or(Sql::Null, Sql::Integer)),
        (
            "scan_id",
            start
                .get("scan_id")
                .and_then(Value::as_i64)
                .map_or(Sql::Null, Sql::Integer),
        ),
        (
            "plan_name",
            Sql::Text(
                start
                    .get("plan_name")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown")
                    .to_string(),
            ),
        ),
        (
            "time_start",
            start.get("time").map_or(Sql::Null, json_to_sql),
        ),
        (
            "time_stop",
            stop.and_then(|s| s.get("time"))
                .map_or(Sql::Null, json_to_sql),
        ),
        (
            "exit_status",
            stop.and_then(|s| s.get("exit_status"))
                .map_or(Sql::Null, json_to_sql),
        ),
        ("num_events", Sql::Integer(num_events)),
        (
            "operator",
            rows::first_string(start, OPERATOR_KEYS).map_or(Sql::Null, Sql::Text),
        ),
        (
            "researcher",
            rows::first_string(start, RESEARCHER_KEYS).map_or(Sql::Null, Sql::Text),
        ),
        ("metadata", Sql::Text(start_doc.to_string())),
        (
            "stop_metadata",
            stop.map_or(Sql::Null, |s| {
                Sql::Text(Value::Object(s.clone()).to_string())
            }),
        ),
        ("content_digest", Sql::Text(rows.content_digest.clone())),
    ];
    for p in promoted {
        if let Some(v) = p.lookup(&start_doc) {
            values_by_name.push((&p.column, json_to_sql(v)));
        }
    }
    let (columns, values): (Vec<&str>, Vec<Sql>) = values_by_name.into_iter().unzip();
    let quoted: Vec<String> = columns
        .iter()
        .map(|c| format!("\"{}\"", c.replace('"', "\"\"")))
        .collect();
    let marks: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
    let sql = format!(
        "INSERT INTO runs ({}) VALUES ({})",
        quoted.join(", "),
        marks.join(", ")
    );
    let params: Vec<&dyn ToSql> = values.iter().map(|v| v as &dyn ToSql).collect();
    tx.execute(&sql, params.as_slice())?;
    insert_streams(tx, rows)?;
    insert_events(tx)?;
    insert_image_refs(tx, rows)?;
    insert_kept(tx, rows)?;
    beamtime::bump_generation(tx)
}

fn insert_streams(tx: &Connection, rows: &RunRows) -> rusqlite::Result<()> {
    insert_many(
        tx,
        "INSERT INTO streams (uid, run_uid, name, data_keys, time_created, configuration)",
        &rows.streams,
        |s| {
            [
                &s.uid,
                &rows.uid,
                &s.name,
                &s.data_keys,
                &s.time_created,
                &s.configuration,
            ]
        },
    )
}

/// Page cache of `beamtime.db` while a run's events are copied in (KiB): the uid index takes
/// them in random order, and with SQLite's default 2 MiB its pages were spilled and read again.
const COPY_CACHE_KIB: i64 = 16 << 10;

/// The run's events, from the staging table, in the order they arrived.
fn insert_events(tx: &Connection) -> rusqlite::Result<()> {
    let before: i64 = tx.query_row("PRAGMA main.cache_size", [], |r| r.get(0))?;
    tx.pragma_update(Some("main"), "cache_size", -COPY_CACHE_KIB)?;
    let copied = tx.execute(
        "INSERT INTO events (uid, stream_uid, seq_num, time, data, timestamps)
         SELECT uid, stream_uid, seq_num, time, data, timestamps FROM temp.staged_events
         ORDER BY rowid",
        [],
    );
    tx.pragma_update(Some("main"), "cache_size", before)?;
    copied.map(|_| ())
}

fn insert_image_refs(tx: &Connection, rows: &RunRows) -> rusqlite::Result<()> {
    insert_many(
        tx,
        "INSERT INTO image_refs (event_uid, stream_uid, seq_num, field_name, zarr_group,
           index_in_stack, shape_x, shape_y, frame_shape, dtype, compression_codec)",
        &rows.image_refs,
        |i| {
            [
                &i.event_uid,
                &i.stream_uid,
                &i.seq_num,
                &i.field_name,
                &i.zarr_group,
                &i.index_in_stack,
                &i.shape_x,
                &i.shape_y,
                &i.frame_shape,
                &i.dtype,
                &i.codec,
            ]
        },
    )
}

/// The run's `kept_documents` and `kept_events` (what export needs beyond the other rows),
/// after its events.
fn insert_kept(tx: &rusqlite::Transaction<'_>, rows: &RunRows) -> rusqlite::Result<()> {
    insert_many(
        tx,
        "INSERT INTO kept_documents (run_uid, position, events_before, kind, document, event_rest)",
        &rows.kept.documents,
        |d| {
            [
                &rows.uid,
                &d.position,
                &d.events_before,
                &d.kind,
                &d.document,
                &d.event_rest,
            ]
        },
    )?;
    insert_many(
        tx,
        "INSERT INTO kept_events (event_uid, rest)",
        &rows.kept.events,
        |e| [&e.event_uid, &e.rest],
    )
}
