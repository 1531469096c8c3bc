//! Why the events table refused a run. SQLite only says "UNIQUE constraint failed:
//! events.uid"; after such a refusal (rolled back) the run's rows are looked up again, in
//! the staging table (`writer::stage_events`) and the beamtime, so that the message names the
//! document (`file:line`), the uid, and the earlier document or the run that has it.

use rusqlite::{Connection, OptionalExtension};

use super::documents::Pos;
use super::rows::RunRows;
use super::run::{Problem, Rejected};
use super::writer;

/// The first refusal the run's rows meet, as a rejection at its document: an event uid or a
/// (stream, seq_num) the run repeats (the earliest repetition, as reading in order would
/// find it), else a descriptor or event uid another run of the beamtime owns. `None` when
/// none of these explains the refusal. Run after the commit was rolled back.
pub fn first_refused(conn: &Connection, rows: &RunRows) -> rusqlite::Result<Option<Rejected>> {
    let at = |line: i64| Pos {
        source: rows.source.clone(),
        line: u64::try_from(line).unwrap_or_default(),
    };
    writer::index_staged(conn)?;
    conn.execute_batch("CREATE INDEX IF NOT EXISTS temp.staged_events_uid ON staged_events (uid)")?;
    let uid_twice: Option<(i64, i64, String)> = conn
        .query_row(
            "SELECT b.rowid, b.line, b.uid FROM temp.staged_events b
             WHERE EXISTS (SELECT 1 FROM temp.staged_events a
                           WHERE a.uid = b.uid AND a.rowid < b.rowid)
             ORDER BY b.rowid LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let seq_twice: Option<(i64, i64, String, i64, i64)> = conn
        .query_row(
            "SELECT rowid, line, stream_uid, seq_num, first FROM (
               SELECT b.rowid, b.line, b.stream_uid, b.seq_num,
                 (SELECT a.line FROM temp.staged_events a
                  WHERE a.stream_uid = b.stream_uid AND a.seq_num = b.seq_num
                    AND a.rowid < b.rowid ORDER BY a.rowid LIMIT 1) AS first
               FROM temp.staged_events b)
             WHERE first IS NOT NULL ORDER BY rowid LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()?;
    match (uid_twice, seq_twice) {
        (Some((row, line, uid)), seq) if seq.as_ref().is_none_or(|s| row <= s.0) => {
            return Ok(Some(Rejected::at(
                &at(line),
                Problem::Duplicate {
                    what: "event uid",
                    uid,
                },
            )));
        }
        (_, Some((_, line, descriptor, seq_num, first))) => {
            return Ok(Some(Rejected::at(
                &at(line),
                Problem::SeqNumTwice {
                    seq_num,
                    descriptor,
                    first: at(first),
                },
            )));
        }
        _ => {}
    }
    let mut stream_owner = conn.prepare("SELECT run_uid FROM streams WHERE uid = ?1")?;
    for stream in &rows.streams {
        let owner: Option<String> = stream_owner
            .query_row([&stream.uid], |r| r.get(0))
            .optional()?;
        if let Some(owner) = owner.filter(|o| *o != rows.uid) {
            return Ok(Some(Rejected::at(
                &stream.pos,
                Problem::Owned {
                    what: "descriptor uid",
                    uid: stream.uid.clone(),
                    owner,
                },
            )));
        }
    }
    let owned: Option<(i64, String, String)> = conn
        .query_row(
            "SELECT r.line, r.uid, s.run_uid FROM temp.staged_events r
             JOIN events e ON e.uid = r.uid JOIN streams s ON s.uid = e.stream_uid
             WHERE s.run_uid <> ?1 ORDER BY r.rowid LIMIT 1",
            [&rows.uid],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    Ok(owned.map(|(line, uid, owner)| {
        Rejected::at(
            &at(line),
            Problem::Owned {
                what: "event uid",
                uid,
                owner,
            },
        )
    }))
}
