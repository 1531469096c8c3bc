//! `beamdb ingest`: documents and frames into one beamtime; one summary line per run.

use std::path::{Path, PathBuf};

use crate::exit::{Context, Result};

use super::{Ctx, progress};
use crate::beamtime;
use crate::cli::IngestArgs;
use crate::db::{self, Access};
use crate::escape::escape;
use crate::exit::{ExitStatus, fail};
use crate::frames::{FrameStore, Recovered};
use crate::ingest::rootmap::RootMap;
use crate::ingest::{IngestError, Ingester, Options, Outcome, Report};
use crate::layout::{Layout, SafeName};
use crate::migrations::files;
use crate::schema::{DbKind, declared};
use crate::settings::sort_root_map;

pub fn run(ctx: &Ctx, args: &IngestArgs) -> Result<ExitStatus> {
    let id = SafeName::new("beamtime id", &args.beamtime)?;
    let roots = root_map(ctx, &args.root_map)?;
    let inputs = inputs(&args.paths)?;
    let settings = &ctx.settings;
    let layout = Layout::new(&settings.data_root);
    let created_root = !layout.root().exists();
    // `beamtimes/` with the root, in one go: a data root is recognised by it (or index.db),
    // and an ingest killed before its beamtime exists must not leave an empty folder that
    // every other command then refuses as "not a beamdb data root" (found by killing ingests
    // at random points in the hostile campaign).
    std::fs::create_dir_all(layout.beamtimes_dir())
        .with_context(|| format!("{}: cannot create data_root", layout.root().display()))?;
    let migrations = files::load(DbKind::Beamtime, settings.schema.migrations_dir.as_deref())?;
    // The migrate lock, held shared to the end: a migrate must not rebuild tables under an
    // ingest. An upgrade of the beamtime happens under it exclusively, before this.
    // The frame store first: an S3 bucket that is missing, or credentials it refuses, are
    // told (exit 2) before a beamtime database is created for nothing.
    // Only checked here, nothing created: the store is created by beamtime::ensure, under
    // the migrate lock, with the database (a failed ensure leaves no frames.zarr behind).
    let location = crate::frames::location(&settings.frames, &layout, &id);
    FrameStore::existing_at(&location)?;
    let (ensured, lock) = beamtime::ensure(
        &layout,
        &id,
        &migrations,
        &settings.sqlite,
        &settings.frames,
    )?;
    let created = matches!(ensured, beamtime::Ensured::Created);
    if let Some(line) = ensured.describe(&format!("beamtime {id}"), &layout.beamtime_db(&id)) {
        ctx.note(line);
    }
    let db_path = layout.beamtime_db(&id);
    let mut conn = db::open(&db_path, Access::ReadWrite, &settings.sqlite)?;
    let store = FrameStore::open(&location)?;
    // Frames recorded in another store, or an S3 store another beamtime database owns:
    // refused. Claimed (the store recorded, an unowned S3 store given this database's token)
    // once something landed: a beamtime this ingest discards claims nothing.
    crate::frames::bind(
        &conn,
        &db_path,
        &location,
        &store,
        crate::frames::Bind::Check,
    )?;
    let claim_store = store.clone();
    let options = Options {
        roots,
        compression: settings.ingest.compression,
        replace: args.replace,
        promoted: declared::promoted(settings.schema.models_dir.as_deref())?,
    };
    let mut ingester = Ingester::new(&mut conn, store, options)
        .with_context(|| format!("beamtime {id}: {}", db_path.display()))?;

    let bar = progress::bar(ctx, inputs.len() as u64, "ingest");
    let started = std::time::Instant::now();
    let mut tally = Tally::default();
    for input in &inputs {
        let mut on_report = |r: Report| tally.report(&bar, started, r);
        match input {
            Input::Stdin => {
                ingester
                    .ingest(std::io::stdin(), "-", &mut on_report)
                    .map_err(stopped)?;
            }
            Input::File(path) => {
                let file = std::fs::File::open(path)
                    .with_context(|| format!("{}: cannot open", path.display()))?;
                let name = path.display().to_string();
                ingester
                    .ingest(file, &name, &mut on_report)
                    .map_err(stopped)?;
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    crate::outln!(
        "beamtime {id}: landed {}, unchanged {}, rejected {}",
        tally.landed,
        tally.unchanged,
        tally.rejected
    );
    drop(ingester);
    if tally.landed > 0 {
        let claimed = crate::frames::bind(
            &conn,
            &db_path,
            &location,
            &claim_store,
            crate::frames::Bind::Claim,
        );
        match claimed {
            // The store stopped answering: what landed is stored; the next ingest, listen or
            // verify --repair records the owner.
            Err(e) if e.is_remote_failure() => tracing::warn!(
                "beamtime {id}: the frame store's owner could not be recorded ({}); the next ingest or `beamdb verify --repair` records it",
                escape(&e.to_string())
            ),
            claimed => claimed?,
        }
    }
    drop(claim_store);
    drop(conn);
    if created
        && tally.landed == 0
        && beamtime::discard_unused(&layout, &id, created_root, lock, &settings.sqlite)
    {
        ctx.note(format_args!(
            "beamtime {id}: nothing landed; removed the beamtime this ingest created"
        ));
    }
    Ok(if tally.rejected > 0 {
        ExitStatus::BadInput
    } else {
        ExitStatus::Success
    })
}

/// An ingest stopped by the machine, not by its input: what was kept and what to do.
fn stopped(err: IngestError) -> crate::exit::Error {
    use rusqlite::ffi::ErrorCode;
    let full = match &err {
        IngestError::Db(e) => matches!(
            e.sqlite_error_code(),
            Some(ErrorCode::DiskFull | ErrorCode::SystemIoFailure)
        ),
        IngestError::Store(e) => e.is_storage_full(),
        IngestError::Lock(_) => false,
        IngestError::Layout(e) => e.is_storage_full(),
    };
    let hint = if full {
        "writing failed (the disk is full, a file size limit was hit, or the disk failed): free space or check the disk, then run the same ingest again"
    } else {
        "fix the cause, then run the same ingest again"
    };
    crate::exit::Error::from(err).context(format!(
        "ingest stopped: the runs reported as landed are stored; the run in progress was not stored, nothing of it is half-written; {hint}"
    ))
}

#[derive(Default)]
struct Tally {
    landed: usize,
    unchanged: usize,
    rejected: usize,
}

impl Tally {
    fn report(
        &mut self,
        bar: &indicatif::ProgressBar,
        started: std::time::Instant,
        report: Report,
    ) {
        match report {
            Report::Progress { events, bytes } => {
                let secs = started.elapsed().as_secs_f64().max(1e-3);
                bar.set_message(format!(
                    "ingest: {} runs, {events} events, {:.1} MB/s",
                    self.landed,
                    bytes as f64 / 1e6 / secs
                ));
            }
            Report::Incomplete { uid, at } => bar.suspend(|| {
                tracing::warn!(
                    "run {}: no stop document (input ends at {}); stored as incomplete, exit_status NULL",
                    escape(&uid),
                    escape(&at.to_string())
                )
            }),
            Report::Run(outcome) => {
                let line = match outcome {
                    Outcome::Landed {
                        uid,
                        events,
                        frames,
                        bytes,
                        incomplete,
                        replaced,
                        recovered,
                    } => {
                        self.landed += 1;
                        let mut notes = Vec::new();
                        if incomplete {
                            notes.push("incomplete: no stop");
                        }
                        if replaced {
                            notes.push("replaced the stored run");
                        }
                        match recovered {
                            Recovered::Nothing => {}
                            Recovered::RemovedLeftover => {
                                notes.push("removed frames left by an interrupted ingest")
                            }
                            Recovered::RestoredReplaced | Recovered::FinishedReplace => {
                                notes.push("cleaned up an interrupted --replace")
                            }
                        }
                        let notes = if notes.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", notes.join("; "))
                        };
                        format!(
                            "landed    {}: {events} events, {frames} frames, {:.1} MB{notes}",
                            escape(&uid),
                            bytes as f64 / 1e6
                        )
                    }
                    Outcome::Unchanged { uid } => {
                        self.unchanged += 1;
                        format!(
                            "unchanged {}: already stored with the same documents",
                            escape(&uid)
                        )
                    }
                    Outcome::Rejected { uid, why } => {
                        self.rejected += 1;
                        // The message quotes the documents (names, paths, kwargs): escaped whole.
                        let why = why.to_string();
                        match uid {
                            Some(uid) => format!("rejected  {}: {}", escape(&uid), escape(&why)),
                            None => format!("rejected  (no run): {}", escape(&why)),
                        }
                    }
                };
                bar.suspend(|| crate::outln!("{line}"));
            }
        }
    }
}

enum Input {
    Stdin,
    File(PathBuf),
}

/// Files as given; folders become their `*.jsonl` files in name order. Checked before any
/// run is read, so a typo does not leave half an ingest behind.
fn inputs(paths: &[PathBuf]) -> Result<Vec<Input>> {
    let mut inputs = Vec::new();
    for path in paths {
        if path == Path::new("-") {
            inputs.push(Input::Stdin);
        } else if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("{}: cannot list the folder", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "jsonl") && p.is_file())
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(fail(
                    ExitStatus::Usage,
                    format!("{}: the folder has no *.jsonl files", path.display()),
                ));
            }
            inputs.extend(files.into_iter().map(Input::File));
        } else if path.is_file() {
            inputs.push(Input::File(path.clone()));
        } else {
            use std::os::unix::fs::FileTypeExt;
            // A pipe (`ingest <(zcat run.jsonl.gz)`, a named FIFO) is read like `-`: to its end.
            let kind = match std::fs::metadata(path) {
                Err(_) => None,
                Ok(meta) if meta.file_type().is_fifo() => {
                    inputs.push(Input::File(path.clone()));
                    continue;
                }
                Ok(meta) if meta.file_type().is_char_device() => Some("a character device"),
                Ok(meta) if meta.file_type().is_block_device() => Some("a block device"),
                Ok(meta) if meta.file_type().is_socket() => Some("a socket"),
                Ok(_) => Some("an unknown kind of file"),
            };
            let why = match kind {
                None => "no such file or folder".to_string(),
                Some(kind) => format!(
                    "not a file, a folder or a pipe ({kind}); give *.jsonl files, folders of them, or - for stdin"
                ),
            };
            return Err(fail(
                ExitStatus::Usage,
                format!("{}: {why}", path.display()),
            ));
        }
    }
    Ok(inputs)
}

/// The settings' root map with --root-map on top: the command line wins for the same OLD.
/// Shared with `listen`.
pub(crate) fn root_map(ctx: &Ctx, flags: &[String]) -> Result<RootMap> {
    let mut map = ctx.settings.ingest.root_map.clone();
    for flag in flags {
        let Some((old, new)) = flag.split_once('=') else {
            return Err(fail(
                ExitStatus::Usage,
                format!("--root-map {flag:?}: expected OLD=NEW"),
            ));
        };
        let old = old.trim_end_matches('/');
        if !old.starts_with('/') || new.is_empty() {
            return Err(fail(
                ExitStatus::Usage,
                format!(
                    "--root-map {flag:?}: OLD must be an absolute path as written in the documents, NEW a folder"
                ),
            ));
        }
        let new = std::env::current_dir()
            .map(|cwd| cwd.join(new))
            .unwrap_or_else(|_| PathBuf::from(new));
        map.retain(|(o, _)| o != old);
        map.push((old.to_string(), new));
    }
    Ok(RootMap::new(sort_root_map(map)).with_allowed(ctx.settings.ingest.allowed_roots.clone()))
}
