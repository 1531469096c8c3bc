//! `beamdb verify`: check every beamtime against DESIGN.md's promises; `--repair` restores
//! what can be restored without losing data. One line per problem, on stdout.

use crate::exit::{Context, Result};

use super::Ctx;
use crate::cli::VerifyArgs;
use crate::escape::escape;
use crate::exit::{ExitStatus, fail};
use crate::layout::{Layout, SafeName};
use crate::lock;
use crate::verify::{self, Options, Report};

pub fn run(ctx: &Ctx, args: &VerifyArgs) -> Result<ExitStatus> {
    let settings = &ctx.settings;
    let layout = Layout::new(&settings.data_root);
    let options = Options { deep: args.deep };
    let mut status = ExitStatus::Success;
    let mut found = 0usize;
    let mut left = 0usize;
    let mut fixed = 0usize;

    let ids = if args.beamtimes.is_empty() {
        let (ids, odd) = layout.beamtimes()?;
        for path in odd {
            found += 1;
            left += 1;
            crate::outln!(
                "{}: not a valid beamtime id (letters, digits, '-', '_', '.'); beamdb ignores it: rename or move it",
                path.display()
            );
        }
        let index = verify::check_index(&layout, settings)?;
        found += index.findings.len();
        left += index.findings.len();
        print_report("index", &index);
        ids
    } else {
        let mut ids = Vec::new();
        for id in &args.beamtimes {
            let id = SafeName::new("beamtime id", id)?;
            if !layout.beamtime_db(&id).is_file() {
                return Err(fail(
                    ExitStatus::Usage,
                    format!("{}: no such beamtime", layout.beamtime_db(&id).display()),
                ));
            }
            ids.push(id);
        }
        ids
    };
    // Repairs write: not while a migrate rebuilds tables.
    let _lock = if args.repair {
        Some(lock::shared_wait(&layout.migrate_lock())?)
    } else {
        None
    };

    for id in &ids {
        let label = format!("beamtime {id}");
        let report = match verify::check(&layout, id, settings, options) {
            Ok(report) => report,
            Err(e) => {
                crate::errln!("error: {label}: {e}");
                // An S3 store that cannot be used as set up is a settings error (2).
                status = status.worst(match &e {
                    verify::VerifyError::Store(store) => store.exit_status(),
                    _ => ExitStatus::Failure,
                });
                continue;
            }
        };
        print_report(&label, &report);
        found += report.findings.len();
        if !args.repair || report.findings.is_empty() {
            left += report.findings.len();
            continue;
        }
        let repaired = verify::repair(&layout, id, settings, &report.findings)
            .with_context(|| format!("{label}: repair"))?;
        for line in &repaired.done {
            crate::outln!("repaired {label}: {}", escape(line));
        }
        for line in &repaired.skipped {
            crate::outln!("skipped  {label}: {}", escape(line));
        }
        fixed += repaired.done.len();
        let after = verify::check(&layout, id, settings, options)
            .with_context(|| format!("{label}: checking again after the repair"))?;
        for finding in &after.findings {
            crate::outln!("left     {label}: {}", escape(&finding.to_string()));
        }
        left += after.findings.len();
    }

    let what = if ids.len() == 1 {
        "beamtime"
    } else {
        "beamtimes"
    };
    if args.repair {
        crate::outln!(
            "verify: {} {what}, {found} problems found, {fixed} repairs, {left} problems left",
            ids.len()
        );
    } else {
        crate::outln!("verify: {} {what}, {found} problems", ids.len());
    }
    if left > 0 {
        status = status.worst(ExitStatus::BadInput);
    }
    Ok(status)
}

fn print_report(label: &str, report: &Report) {
    for note in &report.notes {
        crate::errln!("note: {label}: {note}");
    }
    for finding in &report.findings {
        // Findings quote names and uids from the documents.
        crate::outln!("{label}: {}", escape(&finding.to_string()));
    }
}
