//! `ingest`: Bluesky documents (suitcase-jsonl) → frames in the Zarr store, rows in
//! `beamtime.db`, one run at a time.
//!
//! Data flows one way: `documents` (lines → documents with their `file:line`) → `run` (checks,
//! frames out through `handlers` and `frames`, rows collected) → `writer` (one transaction).
//! A run lands whole or not at all: its frames are written into its own group first, its rows
//! committed last; if anything fails the group is removed. This module drives that protocol
//! and reports each run's outcome to the caller, which prints.

pub mod documents;
pub mod dtype;
pub mod handlers;
pub mod inline;
pub mod kept;
pub mod npy;
pub mod owners;
pub mod rootmap;
pub mod rows;
pub mod run;
pub mod writer;

use std::io::Read;

use rusqlite::Connection;

use crate::frames::{Committed, FrameStore, Recovered, StoreError, Target};
use crate::layout::SafeName;
use crate::lock::{self, LockError, LockGuard};
use crate::settings::Compression;
use documents::{Doc, Kind, Pipe, Pos};
use rootmap::RootMap;
use run::{Context, Finished, Mode, Problem, Rejected, RunBuilder, RunError};

/// How one run ended.
#[derive(Debug)]
pub enum Outcome {
    Landed {
        uid: String,
        events: usize,
        frames: u64,
        bytes: u64,
        /// No stop document: stored with exit_status NULL.
        incomplete: bool,
        replaced: bool,
        recovered: Recovered,
    },
    Unchanged {
        uid: String,
    },
    Rejected {
        /// `None` for documents that belong to no run.
        uid: Option<String>,
        why: Rejected,
    },
}

/// What the caller hears about as ingest goes.
#[derive(Debug)]
pub enum Report {
    Run(Outcome),
    /// A document stream ended (or a new run began) before this run's stop.
    Incomplete {
        uid: String,
        at: Pos,
    },
    /// Frames and events written so far (for progress bars).
    Progress {
        events: u64,
        bytes: u64,
    },
}

pub struct Options {
    pub roots: RootMap,
    pub compression: Compression,
    pub replace: bool,
    /// The model's promoted metadata columns (`schema::declared::promoted`): which RunStart
    /// key fills each.
    pub promoted: Vec<crate::schema::declared::Promoted>,
}

/// Ingests document streams into one beamtime.
pub struct Ingester<'a> {
    conn: &'a mut Connection,
    store: FrameStore,
    options: Options,
    promoted: Vec<crate::schema::declared::Promoted>,
    events: u64,
    bytes: u64,
    /// The open run's lock: another ingest of the same uid waits for it instead of removing
    /// this one's frames as a killed ingest's leftover (and `verify --repair` leaves them).
    run_lock: Option<LockGuard>,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("beamtime database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The run's store layout (xarray's view) could not be written before its commit.
    #[error(transparent)]
    Layout(#[from] crate::store_columns::LayoutError),
}

impl crate::exit::HasExitStatus for IngestError {
    fn exit_status(&self) -> crate::exit::ExitStatus {
        match self {
            IngestError::Store(e) => crate::exit::HasExitStatus::exit_status(e),
            IngestError::Db(_) => crate::exit::ExitStatus::Failure,
            IngestError::Lock(e) => crate::exit::HasExitStatus::exit_status(e),
            IngestError::Layout(e) => crate::exit::HasExitStatus::exit_status(e),
        }
    }
}

enum State {
    Idle,
    Open(Box<RunBuilder>),
    /// The rest of a rejected run (or stray documents): skipped up to the next start.
    Skipping,
}

impl<'a> Ingester<'a> {
    pub fn new(
        conn: &'a mut Connection,
        store: FrameStore,
        options: Options,
    ) -> Result<Ingester<'a>, IngestError> {
        let promoted = writer::promoted_columns(conn, &options.promoted)?;
        Ok(Ingester {
            conn,
            store,
            options,
            promoted,
            events: 0,
            bytes: 0,
            run_lock: None,
        })
    }

    /// Ingests every run in one document stream (a file or stdin), committing each at its
    /// stop. Bad input rejects its run and goes on; an I/O or database failure stops here.
    pub fn ingest(
        &mut self,
        input: impl Read + Send + 'static,
        source: &str,
        report: &mut dyn FnMut(Report),
    ) -> Result<(), IngestError> {
        // Parsing on a thread of its own; checks, frames and rows on this one.
        let mut reader = Pipe::spawn(input, source);
        let mut state = State::Idle;
        while let Some(next) = reader.next_doc() {
            let doc = match next {
                Ok(doc) => doc,
                Err((pos, error)) => {
                    state = match state {
                        State::Open(mut run) => {
                            let uid = run.uid.to_string();
                            self.reject(&mut run, Some(uid), Rejected::at(&pos, error), report)?;
                            State::Skipping
                        }
                        State::Idle => {
                            report(Report::Run(Outcome::Rejected {
                                uid: None,
                                why: Rejected::at(&pos, error),
                            }));
                            State::Skipping
                        }
                        State::Skipping => State::Skipping,
                    };
                    self.run_lock = None;
                    continue;
                }
            };
            state = self.step(state, doc, report)?;
            if !matches!(state, State::Open(_)) {
                self.run_lock = None;
            }
        }
        if let State::Open(run) = state {
            report(Report::Incomplete {
                uid: run.uid.to_string(),
                at: reader.pos(),
            });
            self.finish(run, report)?;
        }
        self.run_lock = None;
        // The last run's staged events leave the temp file now, not when the connection
        // closes (`listen` keeps it open between runs).
        writer::stage_end(self.conn)?;
        Ok(())
    }

    fn step(
        &mut self,
        state: State,
        doc: Doc,
        report: &mut dyn FnMut(Report),
    ) -> Result<State, IngestError> {
        if doc.kind == Kind::Start {
            if let State::Open(run) = state {
                report(Report::Incomplete {
                    uid: run.uid.to_string(),
                    at: doc.pos.clone(),
                });
                self.finish(run, report)?;
            }
            return self.open(&doc, report);
        }
        match state {
            State::Open(mut run) => match run.feed(&doc, &self.context()) {
                Ok(true) => {
                    self.finish(run, report)?;
                    Ok(State::Idle)
                }
                Ok(false) => Ok(State::Open(run)),
                Err(RunError::Rejected(why)) => {
                    let uid = run.uid.to_string();
                    self.reject(&mut run, Some(uid), why, report)?;
                    Ok(if doc.kind == Kind::Stop {
                        State::Idle
                    } else {
                        State::Skipping
                    })
                }
                Err(RunError::Store(e)) if e.is_remote_failure() => {
                    self.reject_remote(&mut run, e, report);
                    Ok(State::Skipping)
                }
                Err(RunError::Store(e)) => {
                    run.discard()?;
                    Err(e.into())
                }
                Err(RunError::Db(e)) => {
                    run.discard()?;
                    Err(e.into())
                }
            },
            State::Skipping if doc.kind == Kind::Stop => Ok(State::Idle),
            State::Skipping => Ok(State::Skipping),
            State::Idle => {
                let what = format!(
                    "{} document before any start document (documents out of order, or the start is missing); the documents up to the next start are skipped",
                    doc.kind.name()
                );
                report(Report::Run(Outcome::Rejected {
                    uid: None,
                    why: Rejected::at(&doc.pos, Problem::Order(what)),
                }));
                Ok(State::Skipping)
            }
        }
    }

    fn context(&self) -> Context<'_> {
        Context {
            store: &self.store,
            roots: &self.options.roots,
            compression: self.options.compression,
            conn: self.conn,
        }
    }

    /// Opens a run: is it in the database already? Then cleans what a killed ingest of it
    /// may have left.
    fn open(&mut self, doc: &Doc, report: &mut dyn FnMut(Report)) -> Result<State, IngestError> {
        let uid = doc.body.get("uid").and_then(|v| v.as_str());
        // Before looking at the database: the other ingest may commit while this one waits.
        // One lock at a time, so two ingests can never wait for each other.
        self.run_lock = None;
        if let Some(safe) = uid.and_then(|u| SafeName::new("run uid", u).ok()) {
            let path = self.store.run_lock_path(&safe);
            self.run_lock = Some(lock::run_lock(&path, lock::Wait::Yes)?);
        }
        let committed = match uid {
            Some(uid) => writer::committed_digest(self.conn, uid)?,
            None => None,
        };
        let committed_group = match (uid, &committed) {
            (Some(uid), Some(_)) if self.store.is_remote() => {
                writer::committed_group(self.conn, uid)?
            }
            _ => None,
        };
        let mode = match (&committed, self.options.replace) {
            (None, _) => Mode::Write(Target::InPlace),
            (Some(_), true) => Mode::Write(Target::Staging),
            (Some(digest), false) => Mode::Compare {
                committed: digest.clone().unwrap_or_default(),
            },
        };
        match RunBuilder::start(doc, mode) {
            Ok(run) => {
                writer::stage_begin(self.conn)?;
                // The committed rows are the proof of which copy of the frames is whole.
                let conn = &*self.conn;
                let recovered = self.store.recover(
                    &run.uid,
                    committed.as_ref().map(|d| Committed {
                        digest: d.as_deref(),
                        group: committed_group.as_deref(),
                    }),
                    || writer::committed_frames(conn, run.uid.as_str()).map_err(IngestError::Db),
                );
                let recovered = match recovered {
                    Err(IngestError::Store(e)) if e.is_remote_failure() => {
                        let mut run = run;
                        self.reject_remote(&mut run, e, report);
                        return Ok(State::Skipping);
                    }
                    other => other?,
                };
                let mut run = Box::new(run);
                run.recovered = recovered;
                run.group = self.store.new_group(&run.uid);
                Ok(State::Open(run))
            }
            Err(why) => {
                report(Report::Run(Outcome::Rejected {
                    uid: uid.map(str::to_string),
                    why,
                }));
                Ok(State::Skipping)
            }
        }
    }

    fn reject(
        &mut self,
        run: &mut RunBuilder,
        uid: Option<String>,
        why: Rejected,
        report: &mut dyn FnMut(Report),
    ) -> Result<(), IngestError> {
        run.discard()?;
        report(Report::Run(Outcome::Rejected { uid, why }));
        Ok(())
    }

    /// Rejects a run whose S3 store failed after its retries (exit 4, the next run goes
    /// on). Deleting what it uploaded may fail too (the store is gone): that is left for the
    /// next ingest of the run or `verify --repair`, as a killed ingest's would be.
    fn reject_remote(
        &mut self,
        run: &mut RunBuilder,
        e: StoreError,
        report: &mut dyn FnMut(Report),
    ) {
        let _ = run.discard();
        report(Report::Run(Outcome::Rejected {
            uid: Some(run.uid.to_string()),
            why: Rejected::without_position(Problem::Remote(e)),
        }));
    }

    /// Puts the committed frames of `uid` back after a replacement (digest `replacement`)
    /// failed; the committed digest is read again, as the failed commit left it.
    fn swap_back(&mut self, uid: &SafeName, replacement: &str) -> Result<(), IngestError> {
        let committed = writer::committed_digest(self.conn, uid.as_str())?.flatten();
        let group = writer::committed_group(self.conn, uid.as_str())?;
        Ok(self
            .store
            .swap_back(uid, committed.as_deref(), group.as_deref(), replacement)?)
    }

    /// Frames out, then rows in; on any failure the run's frames are removed again.
    fn finish(
        &mut self,
        mut run: Box<RunBuilder>,
        report: &mut dyn FnMut(Report),
    ) -> Result<(), IngestError> {
        let uid = run.uid.clone();
        let incomplete = !run.stopped();
        let result = run.finish(&self.context());
        let finished = match result {
            Ok(finished) => finished,
            Err(RunError::Rejected(why)) => {
                return self.reject(&mut run, Some(uid.to_string()), why, report);
            }
            Err(RunError::Store(e)) if e.is_remote_failure() => {
                self.reject_remote(&mut run, e, report);
                return Ok(());
            }
            Err(RunError::Store(e)) => {
                run.discard()?;
                return Err(e.into());
            }
            Err(RunError::Db(e)) => {
                run.discard()?;
                return Err(e.into());
            }
        };
        let (rows, frames, bytes) = match finished {
            Finished::Unchanged => {
                run.discard()?;
                report(Report::Run(Outcome::Unchanged {
                    uid: uid.to_string(),
                }));
                return Ok(());
            }
            Finished::Ready {
                rows,
                frames,
                bytes,
            } => (rows, frames, bytes),
        };
        let staged = run.mode == Mode::Write(Target::Staging);
        if staged && let Err(e) = self.store.swap_in(&uid) {
            self.swap_back(&uid, &rows.content_digest)?;
            return Err(e.into());
        }
        let written = write(self.conn, &run, &rows, &self.promoted, &self.store);
        match written {
            Ok(Ok(())) => {
                if staged && let Err(e) = self.store.drop_old(&uid, &run.group) {
                    // On S3 the run is committed and whole in its new version: the old one
                    // is only a leftover no committed row names, which verify --repair (or
                    // the next ingest of the run) deletes. Not a reason to stop the ingest.
                    if !self.store.is_remote() {
                        return Err(e.into());
                    }
                    tracing::warn!(
                        "run {uid}: stored, but its old frames version could not be deleted ({}); `beamdb verify --repair` deletes it once the store answers",
                        crate::escape::escape(&e.to_string())
                    );
                }
            }
            Ok(Err(why)) => {
                if staged {
                    self.swap_back(&uid, &rows.content_digest)?;
                } else {
                    run.discard()?;
                }
                report(Report::Run(Outcome::Rejected {
                    uid: Some(uid.to_string()),
                    why,
                }));
                return Ok(());
            }
            Err(IngestError::Store(e)) if e.is_remote_failure() => {
                // Nothing was committed: the committed version (if any) stays, and this
                // version goes with the others no committed row owns.
                if staged {
                    let _ = self.swap_back(&uid, &rows.content_digest);
                } else {
                    let _ = self.store.discard_uncommitted(&uid);
                }
                self.reject_remote(&mut run, e, report);
                return Ok(());
            }
            Err(e) => {
                if staged {
                    self.swap_back(&uid, &rows.content_digest)?;
                } else {
                    run.discard()?;
                    // A run without frames: the group the layout hook made before the failure.
                    self.store.discard_uncommitted(&uid)?;
                }
                // A constraint (an event uid another run has) is the input's fault; anything
                // else is the database's.
                if let IngestError::Db(rusqlite::Error::SqliteFailure(err, _)) = &e
                    && err.code == rusqlite::ErrorCode::ConstraintViolation
                {
                    // A uid or seq_num the run repeats, or a uid another run owns, named with
                    // its document.
                    let why = owners::first_refused(self.conn, &rows)?.unwrap_or_else(|| {
                        Rejected::without_position(Problem::Database(e.to_string()))
                    });
                    report(Report::Run(Outcome::Rejected {
                        uid: Some(uid.to_string()),
                        why,
                    }));
                    return Ok(());
                }
                return Err(e);
            }
        }
        self.events += rows.event_count;
        self.bytes += bytes;
        report(Report::Progress {
            events: self.events,
            bytes: self.bytes,
        });
        report(Report::Run(Outcome::Landed {
            uid: uid.to_string(),
            events: rows.event_count as usize,
            frames,
            bytes,
            incomplete,
            replaced: staged,
            recovered: run.recovered.clone(),
        }));
        Ok(())
    }
}

/// The run's rows in one transaction: `Ok(Err(_))` when the run is refused (its counts), the
/// transaction rolled back. The store layout (`store_columns`: the `time` coordinate, columnar
/// scalars) is written from the rows inside it, after every row is in and before the commit,
/// so that a run lands with its layout or not at all; its error rolls the run back too. On
/// S3 the version is uploaded and recorded as the run's group before the commit, too.
fn write(
    conn: &mut Connection,
    run: &RunBuilder,
    rows: &rows::RunRows,
    promoted: &[crate::schema::declared::Promoted],
    store: &FrameStore,
) -> Result<Result<(), Rejected>, IngestError> {
    let tx = conn.transaction()?;
    writer::write_run(&tx, rows, promoted)?;
    if let Err(why) = run::check_counts(rows) {
        return Ok(Err(why));
    }
    crate::store_columns::write_run_layout(&tx, store.root(), run.uid.as_str(), &run.group)?;
    // On S3: every object of the version is uploaded before the commit that names it.
    store.publish(&run.group)?;
    if store.is_remote() {
        writer::record_group(&tx, run.uid.as_str(), &run.group)?;
    }
    tx.commit()?;
    Ok(Ok(()))
}
