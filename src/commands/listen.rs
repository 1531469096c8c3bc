//! `beamdb listen`: runs from bluesky's 0MQ proxy into beamtimes until SIGTERM or SIGINT.
//! One line per run on stdout; connection trouble and bad messages on stderr.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::Ctx;
use super::ingest::root_map;
use crate::cli::ListenArgs;
use crate::escape::escape;
use crate::exit::{Context, ExitStatus, Result, fail};
use crate::layout::{Layout, SafeName};
use crate::listen::router::BeamtimeChoice;
use crate::listen::{self, Config, Event, RunLine};
use crate::migrations::files;
use crate::schema::DbKind;
use crate::schema::declared;

pub fn run(ctx: &Ctx, args: &ListenArgs) -> Result<ExitStatus> {
    let usage = |m: String| fail(ExitStatus::Usage, m);
    let addr = listen::parse_endpoint(&args.zmq).map_err(|e| usage(format!("--zmq {e}")))?;
    let beamtime = match (&args.beamtime, &args.beamtime_key) {
        (Some(id), None) => BeamtimeChoice::Fixed(SafeName::new("beamtime id", id)?),
        (None, Some(key)) if !key.is_empty() => BeamtimeChoice::Key(key.clone()),
        _ => {
            return Err(usage(
                "give --beamtime ID, or --beamtime-key KEY (the start document's key that names the beamtime)".into(),
            ));
        }
    };
    let prefix = args.prefix.clone().unwrap_or_default().into_bytes();
    if prefix.contains(&b' ') {
        return Err(usage(format!(
            "--prefix {:?}: bluesky's Publisher refuses a prefix with a space, so none can match",
            args.prefix.as_deref().unwrap_or_default()
        )));
    }
    let incomplete_after = listen::parse_duration(&args.incomplete_after)
        .map_err(|e| usage(format!("--incomplete-after {e}")))?;
    let roots = root_map(ctx, &args.root_map)?;
    let settings = &ctx.settings;
    let layout = Layout::new(&settings.data_root);
    std::fs::create_dir_all(layout.root())
        .with_context(|| format!("{}: cannot create data_root", layout.root().display()))?;
    let migrations = files::load(DbKind::Beamtime, settings.schema.migrations_dir.as_deref())?;
    let config = Config {
        addr,
        prefix,
        beamtime,
        incomplete_after,
        layout,
        migrations,
        sqlite: settings.sqlite.clone(),
        frames: settings.frames.clone(),
        roots,
        compression: settings.ingest.compression,
        promoted: declared::promoted(settings.schema.models_dir.as_deref())?,
    };

    // A signal only sets the flag; the receive loop sees it within a tick, stores the open
    // runs as incomplete, and `run` returns. A second signal exits at once (status 1): the
    // spools keep every document, and the next listen goes on with them.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register_conditional_shutdown(signal, 1, stop.clone())
            .and_then(|_| signal_hook::flag::register(signal, stop.clone()))
            .context("cannot install the SIGTERM/SIGINT handler")?;
    }
    listen::run(config, stop, &mut |event| print(ctx, event))?;
    ctx.note("listen: stopped; open runs were stored as incomplete");
    Ok(ExitStatus::Success)
}

fn print(ctx: &Ctx, event: Event) {
    match event {
        Event::Listening { addr, reloaded } => {
            let reloaded = if reloaded > 0 {
                format!(" ({reloaded} runs picked up from the spool of an earlier listener)")
            } else {
                String::new()
            };
            ctx.note(format_args!("listen: listening to tcp://{addr}{reloaded}"));
        }
        Event::Connected { addr } => ctx.note(format_args!("listen: connected to tcp://{addr}")),
        Event::Unreachable {
            error,
            attempt,
            retry_in,
        } => tracing::warn!(
            "listen: {error}; retrying in {:.1}s (attempt {attempt}; documents sent meanwhile are lost, their runs are stored as incomplete)",
            retry_in.as_secs_f64()
        ),
        Event::Malformed { what, more } => {
            let more = if more > 0 {
                format!(" ({more} more such messages since the last report)")
            } else {
                String::new()
            };
            tracing::warn!("listen: message skipped: {}{more}", escape(&what));
        }
        Event::Pickled { what } => {
            tracing::error!("listen: {what}; every pickled message is skipped (said once)")
        }
        Event::BadSpool { what } => tracing::warn!(
            "listen: a spool of an earlier listener cannot be read, left as it is: {}",
            escape(&what)
        ),
        Event::BeamtimeCreated { id, path } => {
            ctx.note(format_args!("beamtime {id}: created {}", path.display()))
        }
        Event::BeamtimeMigrated { id, applied } => ctx.note(format_args!(
            "beamtime {id}: migrated ({})",
            applied.join(", ")
        )),
        Event::Run(line) => crate::outln!("{}", run_line(line)),
    }
}

fn run_line(line: RunLine) -> String {
    match line {
        RunLine::Landed {
            beamtime,
            uid,
            events,
            frames,
            bytes,
            complete,
            replaced,
            lost,
        } => {
            let mut notes = Vec::new();
            if let Some(lost) = lost {
                notes.push(format!("incomplete: {lost}"));
            } else if !complete {
                notes.push("incomplete: no stop yet; stored whole when it comes".into());
            }
            if replaced {
                notes.push("replaced its earlier incomplete state".into());
            }
            let notes = if notes.is_empty() {
                String::new()
            } else {
                format!(" ({})", notes.join("; "))
            };
            let word = if complete { "landed    " } else { "incomplete" };
            format!(
                "{word} {}: beamtime {beamtime}, {events} events, {frames} frames, {:.1} MB{}",
                escape(&uid),
                bytes as f64 / 1e6,
                escape(&notes)
            )
        }
        RunLine::Unchanged {
            beamtime,
            uid,
            complete,
        } => format!(
            "unchanged {}: beamtime {beamtime}, already stored with the same documents{}",
            escape(&uid),
            if complete { "" } else { " (incomplete)" }
        ),
        RunLine::Rejected { uid, why, kept } => {
            let kept = kept
                .map(|p| {
                    format!(
                        "; its documents are kept in {} (fix the cause, then `beamdb ingest` that file)",
                        p.display()
                    )
                })
                .unwrap_or_default();
            format!("rejected  {}: {}{kept}", escape(&uid), escape(&why))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_text_cannot_forge_a_log_line() {
        let line = run_line(RunLine::Rejected {
            uid: "a\nlanded    b".into(),
            why: "x\r\ny".into(),
            kept: None,
        });
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(line.contains("a\\nlanded"), "{line}");
    }
}
