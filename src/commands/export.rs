//! `beamdb export`: runs' documents back out as suitcase-jsonl, on stdout or one file a run.
//! What could not be given back is said on stderr; the exit status is 4 then.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::Ctx;
use crate::cli::ExportArgs;
use crate::db::{self, Access};
use crate::escape::escape;
use crate::exit::{Context, ExitStatus, Result, fail};
use crate::export::{self, Source};
use crate::layout::Layout;
use crate::lookup;

pub fn run(ctx: &Ctx, args: &ExportArgs) -> Result<ExitStatus> {
    let layout = Layout::new(&ctx.settings.data_root);
    let id = lookup::find_beamtime(&layout, &args.beamtime)?;
    let location = crate::frames::location(&ctx.settings.frames, &layout, &id);
    if args.self_contained {
        // Its resources point readers at a store on this machine (BEAMDB_ZARR).
        location.filesystem(
            "export --self-contained",
            "its BEAMDB_ZARR resources name a store folder on this machine",
        )?;
    }
    // Inline frames are read back from the store, wherever it is.
    let frames = crate::frames::FrameStore::existing_at(&location)?;
    let db_path = layout.beamtime_db(&id);
    let conn = db::open(&db_path, Access::ReadOnly, &ctx.settings.sqlite)?;
    crate::frames::bind(
        &conn,
        &db_path,
        &location,
        &frames,
        crate::frames::Bind::Check,
    )?;
    let sql = |e| crate::exit::Error::from(e).context(format!("{}", db_path.display()));
    let all = export::run_uids(&conn).map_err(sql)?;
    let mut status = ExitStatus::Success;

    // Every name is checked before anything is written. A quarantined run is exported from
    // the file `verify --repair` saved its rows in.
    let mut uids: Vec<(String, Option<PathBuf>)> = Vec::new();
    if args.uids.is_empty() {
        uids.extend(all.iter().map(|u| (u.clone(), None)));
    }
    for uid in &args.uids {
        // A uid named twice is exported once (and its file written once).
        if uids.iter().any(|(u, _)| u == uid) {
            continue;
        }
        if all.contains(uid) {
            uids.push((uid.clone(), None));
        } else if let Some(file) = lookup::quarantined(&layout, uid, std::slice::from_ref(&id)) {
            uids.push((uid.clone(), Some(file)));
        } else {
            // A unique prefix names its run; anything else is exit 2 with the nearest uid.
            let found = lookup::find_run(&ctx.settings, uid, Some(id.as_str()))?;
            uids.push((found.uid.to_string(), None));
        }
    }

    let targets: Vec<Option<PathBuf>> = match &args.output {
        None => vec![None; uids.len()],
        Some(dir) => {
            let files: Vec<PathBuf> = uids
                .iter()
                .map(|(uid, _)| dir.join(format!("{uid}.jsonl")))
                .collect();
            let existing: Vec<String> = files
                .iter()
                .filter(|f| f.symlink_metadata().is_ok())
                .map(|f| f.display().to_string())
                .collect();
            // --force overwrites files; a folder in a file's place is never replaced.
            if let Some(folder) = files.iter().find(|f| f.is_dir()) {
                return Err(fail(
                    ExitStatus::Usage,
                    format!(
                        "{} is a folder; nothing was written: move it away or export to another folder",
                        folder.display()
                    ),
                ));
            }
            if let Some(first) = existing.first()
                && !args.force
            {
                let what = match existing.len() {
                    1 => format!("{first} exists already"),
                    n => format!("{n} of the files exist already ({first}, ...)"),
                };
                return Err(fail(
                    ExitStatus::Usage,
                    format!(
                        "{what}; nothing was written: export to another folder, or add --force to overwrite"
                    ),
                ));
            }
            std::fs::create_dir_all(dir)
                .with_context(|| format!("{}: cannot create the folder", dir.display()))?;
            files.into_iter().map(Some).collect()
        }
    };

    let store = layout.frames_store(&id);
    for ((uid, quarantine), target) in uids.iter().zip(targets) {
        if target.is_none() && super::output::is_closed() {
            break;
        }
        let saved;
        let (conn, db_path) = match quarantine {
            None => (&conn, db_path.as_path()),
            Some(file) => {
                saved = export::quarantined_run(file, uid)
                    .with_context(|| format!("beamtime {id}: run {uid}: quarantined"))?;
                (&saved, file.as_path())
            }
        };
        let source = Source {
            conn,
            db_path,
            store: &store,
            frames: &frames,
            self_contained: args.self_contained,
        };
        // One snapshot per run: an ingest --replace committing meanwhile is seen whole or
        // not at all.
        conn.execute_batch("BEGIN").map_err(sql)?;
        let result = match &target {
            None => export::run_documents(&source, uid, &mut |name, doc| {
                crate::outln!("{}", line(name, doc));
                if super::output::is_closed() {
                    // Nobody reads the rest (`| head`): stop, as for any command's output.
                    return Err(std::io::ErrorKind::BrokenPipe.into());
                }
                Ok(())
            }),
            Some(path) => to_file(&source, uid, path)?,
        };
        conn.execute_batch("COMMIT").map_err(sql)?;
        let result = result.map(|mut exported| {
            if let Some(file) = quarantine {
                exported.missing.insert(
                    0,
                    format!(
                        "the run is not in beamtime {id}: `verify --repair` quarantined it (its frames were missing or wrong); its documents are rebuilt from {}, its frames are not in the store: re-ingest it from its original documents (or from this export, once the frames' files are back)",
                        file.display()
                    ),
                );
            }
            exported
        });
        if let Err(export::ExportError::Write(e)) = &result
            && target.is_none()
            && e.kind() == std::io::ErrorKind::BrokenPipe
        {
            break;
        }
        let exported = result.with_context(|| format!("beamtime {id}: run {uid}"))?;
        for missing in &exported.missing {
            crate::errln!("warning: run {uid}: {}", escape(missing));
        }
        if !exported.missing.is_empty() {
            status = status.worst(ExitStatus::BadInput);
        }
        let whole = if exported.missing.is_empty() {
            ""
        } else {
            " (not whole: see the warnings above)"
        };
        match &target {
            Some(path) => ctx.note(format!(
                "exported run {uid}: {} documents to {}{whole}",
                exported.documents,
                path.display()
            )),
            None => ctx.note(format!(
                "exported run {uid}: {} documents{whole}",
                exported.documents
            )),
        }
    }
    Ok(status)
}

/// One suitcase-jsonl line.
fn line(name: &str, doc: &Map<String, Value>) -> String {
    Value::Array(vec![name.into(), Value::Object(doc.clone())]).to_string()
}

/// Writes run `uid` to `path` through a file beside it, renamed into place when whole: an
/// export that fails half-way leaves no half file under the run's name.
fn to_file(
    source: &Source<'_>,
    uid: &str,
    path: &Path,
) -> Result<std::result::Result<export::Exported, export::ExportError>> {
    let partial = path.with_file_name(format!(".{uid}.jsonl.partial"));
    // A partial left by an interrupted export, or a symbolic link anyone put at its name, is
    // removed (the link itself, never what it points at), then the file is created new:
    // nothing is ever written through a link.
    match std::fs::remove_file(&partial) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("{}: cannot remove", partial.display()));
        }
        _ => {}
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&partial)
        .with_context(|| format!("{}: cannot create", partial.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let result = export::run_documents(source, uid, &mut |name, doc| {
        serde_json::to_writer(&mut out, &(name, doc)).map_err(std::io::Error::other)?;
        out.write_all(b"\n")
    });
    let finished = match result {
        Ok(exported) => out
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .and_then(|()| std::fs::rename(&partial, path))
            .map(|()| exported)
            .map_err(export::ExportError::Write),
        Err(e) => Err(e),
    };
    if finished.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    Ok(finished)
}
