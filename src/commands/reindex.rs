//! `beamdb reindex`: bring the master index up to date with the beamtimes.

use crate::exit::Result;

use super::Ctx;
use crate::cli::ReindexArgs;
use crate::exit::ExitStatus;
use crate::reindex;

pub fn run(ctx: &Ctx, args: &ReindexArgs) -> Result<ExitStatus> {
    let bar = super::progress::bar(ctx, 0, "reindexing");
    let result = reindex::reindex(&ctx.settings, args.full, &|done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    let report = result?;

    for (path, why) in &report.failed {
        crate::errln!("warning: skipped {}: {why}", path.display());
    }
    for (beamtime, uid, other) in &report.duplicates {
        crate::errln!(
            "warning: beamtime {beamtime}: run {uid} is already indexed under beamtime {other}; it is indexed once, under {other}"
        );
    }
    for (beamtime, uid, column, why) in &report.nulled {
        let uid = crate::escape::escape(uid);
        crate::errln!(
            "warning: beamtime {beamtime}: run {uid}: promoted column {column} is indexed as NULL: {why}; fix the value, or the column's type in the model"
        );
    }
    for id in &report.removed {
        ctx.note(format_args!(
            "removed beamtime {id} from the index (its database is gone)"
        ));
    }
    crate::outln!(
        "reindex: scanned {}, changed {}, unchanged {}, removed {}, failed {} in {:.2} s",
        report.scanned,
        report.changed,
        report.unchanged,
        report.removed.len(),
        report.failed.len(),
        report.seconds
    );
    Ok(
        if report.failed.is_empty() && report.duplicates.is_empty() && report.nulled.is_empty() {
            ExitStatus::Success
        } else {
            ExitStatus::BadInput
        },
    )
}
