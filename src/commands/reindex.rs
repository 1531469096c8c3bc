//! `beamdb reindex`: bring the master index up to date with the beamtimes.

use anyhow::Result;

use super::Ctx;
use crate::cli::ReindexArgs;
use crate::exit::{ExitStatus, fail};
use crate::lock::LockError;
use crate::reindex::{self, ReindexError};

pub fn run(ctx: &Ctx, args: &ReindexArgs) -> Result<ExitStatus> {
    let bar = super::progress::bar(ctx, 0, "reindexing");
    let result = reindex::reindex(&ctx.settings, args.full, &|done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    let report = result.map_err(classify)?;

    for (path, why) in &report.failed {
        eprintln!("warning: skipped {}: {why}", path.display());
    }
    for (beamtime, uid, other) in &report.duplicates {
        eprintln!(
            "warning: beamtime {beamtime}: run {uid} is already indexed under beamtime {other}; it is indexed once, under {other}"
        );
    }
    for id in &report.removed {
        ctx.note(format_args!(
            "removed beamtime {id} from the index (its database is gone)"
        ));
    }
    println!(
        "reindex: scanned {}, changed {}, unchanged {}, removed {}, failed {} in {:.2} s",
        report.scanned,
        report.changed,
        report.unchanged,
        report.removed.len(),
        report.failed.len(),
        report.seconds
    );
    Ok(
        if report.failed.is_empty() && report.duplicates.is_empty() {
            ExitStatus::Success
        } else {
            ExitStatus::BadInput
        },
    )
}

/// Gives the errors cron must tell apart their exit status.
fn classify(err: ReindexError) -> anyhow::Error {
    match &err {
        ReindexError::Locked(LockError::Held { .. }) => fail(ExitStatus::Locked, err.to_string()),
        ReindexError::Index(upgrade) if upgrade.is_history() => {
            fail(ExitStatus::DatabaseAhead, err.to_string())
        }
        ReindexError::Model(_) => fail(ExitStatus::Usage, err.to_string()),
        _ => err.into(),
    }
}
