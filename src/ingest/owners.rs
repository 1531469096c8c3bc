//! Which run already owns a uid that a new run brings. SQLite only says "UNIQUE constraint
//! failed: events.uid"; after such a refusal the run's rows are looked up again, so that the
//! message names the document (`file:line`), the uid, and the run that has it.

use rusqlite::{Connection, OptionalExtension};

use super::rows::RunRows;
use super::run::{Problem, Rejected};

/// The first descriptor or event of `rows` whose uid another run of the beamtime owns, as a
/// rejection at that document; `None` when no other run owns any of them. Run after the
/// commit was rolled back, so the database is as it was before this run.
pub fn first_owned(conn: &Connection, rows: &RunRows) -> rusqlite::Result<Option<Rejected>> {
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
    let mut event_owner = conn.prepare(
        "SELECT s.run_uid FROM events e JOIN streams s ON s.uid = e.stream_uid WHERE e.uid = ?1",
    )?;
    for event in &rows.events {
        let owner: Option<String> = event_owner
            .query_row([&event.uid], |r| r.get(0))
            .optional()?;
        if let Some(owner) = owner.filter(|o| *o != rows.uid) {
            return Ok(Some(Rejected::at(
                &event.pos,
                Problem::Owned {
                    what: "event uid",
                    uid: event.uid.clone(),
                    owner,
                },
            )));
        }
    }
    Ok(None)
}
