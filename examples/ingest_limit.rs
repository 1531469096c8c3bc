//! The one-thread limit of event ingest on this machine, for `bench/run` (issue 13): parse a
//! suitcase-jsonl run with serde_json, borrowed (`data` and `timestamps` kept as the raw JSON
//! text they were written as), and insert the same `events` rows beamdb inserts (plus the run
//! and stream rows their foreign keys need) with rusqlite in one transaction.
//!
//! It is what beamdb's event path could cost if it did nothing else: no digest, no checks, no
//! frames, no index. The database is opened by beamdb's own `db::open` (its pragmas: WAL,
//! `synchronous = NORMAL`, `foreign_keys = ON`) and created by beamdb's own migration runner
//! from the beamtime migrations built into beamdb (`migrations/beamtime/`), so the limit's
//! tables, columns, types and indexes cannot drift from the database beamdb writes.
//!
//!   cargo build --release --example ingest_limit
//!   target/release/examples/ingest_limit OUT.db RUN.jsonl
//!
//! Prints `<events> events in <seconds> s`. Handles `start`, `descriptor`, `event` and `stop`
//! (what the benchmark's scan holds); anything else is skipped.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use beamdb::db::{self, Access};
use beamdb::migrations::{files, runner};
use beamdb::schema::DbKind;
use beamdb::settings::Settings;
use rusqlite::params;
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Deserialize)]
struct Start<'a> {
    #[serde(borrow)]
    uid: Cow<'a, str>,
    time: f64,
    #[serde(borrow, default)]
    plan_name: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Descriptor<'a> {
    #[serde(borrow)]
    uid: Cow<'a, str>,
    #[serde(borrow)]
    run_start: Cow<'a, str>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data_keys: &'a RawValue,
    time: f64,
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow)]
    uid: Cow<'a, str>,
    #[serde(borrow)]
    descriptor: Cow<'a, str>,
    seq_num: i64,
    time: f64,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(borrow, default)]
    timestamps: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Stop<'a> {
    #[serde(borrow)]
    run_start: Cow<'a, str>,
    time: f64,
    #[serde(borrow, default)]
    exit_status: Option<Cow<'a, str>>,
}

type Failure = Box<dyn std::error::Error>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [db, jsonl] = args.as_slice() else {
        eprintln!("usage: ingest_limit OUT.db RUN.jsonl");
        return ExitCode::from(2);
    };
    let started = Instant::now();
    match ingest(Path::new(db), Path::new(jsonl)) {
        Ok(events) => {
            println!(
                "{events} events in {:.3} s",
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("ingest_limit: {why}");
            ExitCode::FAILURE
        }
    }
}

fn ingest(out: &Path, jsonl: &Path) -> Result<i64, Failure> {
    let mut conn = db::open(out, Access::ReadWrite, &Settings::default().sqlite)?;
    runner::apply(&mut conn, &files::builtin(DbKind::Beamtime))?;

    let file = File::open(jsonl).map_err(|e| format!("{}: {e}", jsonl.display()))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let tx = conn.transaction()?;
    let mut events = 0i64;
    {
        let mut insert_event = tx.prepare(
            "INSERT INTO events (uid, stream_uid, seq_num, time, data, timestamps) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut line = String::new();
        let mut number = 0u64;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                break;
            }
            number += 1;
            let at = |e: serde_json::Error| format!("{}:{number}: {e}", jsonl.display());
            let (name, doc): (&str, &RawValue) = serde_json::from_str(&line).map_err(at)?;
            match name {
                "event" => {
                    let e: Event = serde_json::from_str(doc.get()).map_err(at)?;
                    insert_event.execute(params![
                        e.uid,
                        e.descriptor,
                        e.seq_num,
                        e.time,
                        e.data.get(),
                        e.timestamps.map(RawValue::get),
                    ])?;
                    events += 1;
                }
                "descriptor" => {
                    let d: Descriptor = serde_json::from_str(doc.get()).map_err(at)?;
                    tx.execute(
                        "INSERT INTO streams (uid, run_uid, name, data_keys, time_created) \
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![
                            d.uid,
                            d.run_start,
                            d.name.as_deref().unwrap_or("primary"),
                            d.data_keys.get(),
                            d.time
                        ],
                    )?;
                }
                "start" => {
                    let s: Start = serde_json::from_str(doc.get()).map_err(at)?;
                    tx.execute(
                        "INSERT INTO runs (uid, plan_name, time_start, metadata) \
                         VALUES (?1, ?2, ?3, ?4)",
                        params![
                            s.uid,
                            s.plan_name.as_deref().unwrap_or(""),
                            s.time,
                            doc.get()
                        ],
                    )?;
                }
                "stop" => {
                    let s: Stop = serde_json::from_str(doc.get()).map_err(at)?;
                    tx.execute(
                        "UPDATE runs SET time_stop = ?2, exit_status = ?3, num_events = ?4 \
                         WHERE uid = ?1",
                        params![s.run_start, s.time, s.exit_status, events],
                    )?;
                }
                _ => {}
            }
        }
    }
    tx.commit()?;
    Ok(events)
}
