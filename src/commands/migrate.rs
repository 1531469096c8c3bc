//! `beamdb migrate`: apply pending migrations to index.db and the beamtimes.

use std::path::PathBuf;

use crate::exit::Result;

use super::Ctx;
use crate::cli::MigrateArgs;
use crate::exit::{ExitStatus, fail};
use crate::layout::{Layout, SafeName};
use crate::lock;
use crate::migrations::files::{self, MigrationFile};
use crate::migrations::upgrade::{self, Outcome};
use crate::schema::{DbKind, declared};

struct Target {
    kind: DbKind,
    label: String,
    path: PathBuf,
    /// The beamtime's id (its frame store is upgraded too).
    beamtime: Option<SafeName>,
}

pub fn run(ctx: &Ctx, args: &MigrateArgs) -> Result<ExitStatus> {
    let settings = &ctx.settings;
    let layout = Layout::new(&settings.data_root);
    #[cfg(feature = "postgres")]
    let mut server_status = ExitStatus::Success;
    #[cfg(not(feature = "postgres"))]
    let server_status = ExitStatus::Success;
    #[cfg(feature = "postgres")]
    if let crate::settings::IndexLocation::Postgres(url) = settings.index_location()
        && args.beamtimes.is_empty()
    {
        // The PostgreSQL index migrates in one transaction under the server's lock (no
        // backup: the server's own backups cover it).
        if args.dry_run || args.check {
            let pending =
                crate::index::pg::pending(&url, settings.schema.migrations_dir.as_deref())?;
            if pending.is_empty() {
                crate::outln!("index: PostgreSQL {url}: up to date");
            } else {
                crate::outln!("index: PostgreSQL {url}: pending {}", pending.join(", "));
                if args.check {
                    server_status = ExitStatus::CheckFailed;
                }
            }
        } else {
            let applied =
                crate::index::pg::migrate(&url, settings.schema.migrations_dir.as_deref())?;
            ctx.note(format_args!(
                "index: PostgreSQL {url}: {}",
                if applied.is_empty() {
                    "up to date".to_string()
                } else {
                    format!("applied {}", applied.join(", "))
                }
            ));
        }
    }
    let targets = targets(&layout, args)?;
    if targets.is_empty() {
        ctx.note(format_args!(
            "nothing to migrate under {} (run `beamdb initdb` first)",
            layout.root().display()
        ));
        return Ok(server_status);
    }
    let lock = if args.dry_run || args.check {
        None
    } else {
        Some(lock::migrate_exclusive(
            &layout.migrate_lock(),
            "migrate (or an ingest)",
            std::time::Duration::ZERO,
        )?)
    };

    let migrations_dir = settings.schema.migrations_dir.as_deref();
    let models_dir = settings.schema.models_dir.as_deref();
    let mut status = server_status;
    for kind in DbKind::ALL {
        let of_kind: Vec<&Target> = targets.iter().filter(|t| t.kind == kind).collect();
        if of_kind.is_empty() {
            continue;
        }
        let ours = files::load(kind, migrations_dir)?;
        if ours.is_empty() {
            return Err(fail(
                ExitStatus::Usage,
                format!("no {kind} migrations found (check `[schema] migrations_dir`)"),
            ));
        }
        let declared = declared::load(kind, models_dir)?;
        let progress =
            super::progress::bar(ctx, of_kind.len() as u64, &format!("migrating {kind}"));
        for target in of_kind {
            let migrated = migrate_one(ctx, args, target, &ours, &declared, lock.as_ref());
            status = status.worst(migrated);
            // A database left as it was (refused, failed) keeps its store as it is too.
            if let Some(id) = &target.beamtime
                && matches!(migrated, ExitStatus::Success | ExitStatus::CheckFailed)
            {
                status = status.worst(upgrade_store(ctx, args, &layout, id, target));
            }
            progress.inc(1);
        }
        progress.finish_and_clear();
    }
    Ok(status)
}

fn targets(layout: &Layout, args: &MigrateArgs) -> Result<Vec<Target>> {
    let mut targets = Vec::new();
    if args.beamtimes.is_empty() {
        if layout.index_db().exists() {
            targets.push(Target {
                kind: DbKind::Index,
                label: "index".into(),
                path: layout.index_db(),
                beamtime: None,
            });
        }
        let (ids, odd) = layout.beamtimes()?;
        for path in odd {
            tracing::warn!("{}: not a valid beamtime id; skipped", path.display());
        }
        targets.extend(ids.into_iter().map(|id| beamtime_target(layout, id)));
    } else {
        for id in &args.beamtimes {
            let id = SafeName::new("beamtime id", id)?;
            let target = beamtime_target(layout, id);
            if !target.path.exists() {
                return Err(fail(
                    ExitStatus::Usage,
                    format!(
                        "{}: no such beamtime (create it with `beamdb initdb --beamtime ...`)",
                        target.path.display()
                    ),
                ));
            }
            targets.push(target);
        }
    }
    Ok(targets)
}

fn beamtime_target(layout: &Layout, id: SafeName) -> Target {
    Target {
        kind: DbKind::Beamtime,
        label: format!("beamtime {id}"),
        path: layout.beamtime_db(&id),
        beamtime: Some(id),
    }
}

/// Migrates one database and reports; a failure here does not stop the others.
fn migrate_one(
    ctx: &Ctx,
    args: &MigrateArgs,
    target: &Target,
    ours: &[MigrationFile],
    declared: &crate::schema::Schema,
    lock: Option<&lock::MigrateExclusive>,
) -> ExitStatus {
    let options = upgrade::Options {
        backup: !args.no_backup,
    };
    let label = &target.label;
    let path = target.path.display();
    let outcome = match lock {
        Some(held) => upgrade::upgrade(&target.path, ours, &ctx.settings.sqlite, options, held),
        None => upgrade::plan(&target.path, ours, &ctx.settings.sqlite),
    };
    match outcome {
        Ok(Outcome::UpToDate { version }) => {
            ctx.note(format_args!(
                "{label}: {path} is up to date (V{})",
                version.unwrap_or(0)
            ));
            ExitStatus::Success
        }
        Ok(Outcome::WouldApply { pending }) => {
            let stems: Vec<String> = pending.iter().map(|m| m.stem()).collect();
            crate::outln!("{label}: {path}: pending {}", stems.join(", "));
            if args.dry_run {
                crate::out!("{}", upgrade::describe(&pending));
                ExitStatus::Success
            } else {
                ExitStatus::CheckFailed
            }
        }
        Ok(Outcome::Applied { applied, backup }) => {
            if let Some(backup) = backup {
                crate::outln!("{label}: backed up {path} to {}", backup.display());
            }
            let stems: Vec<String> = applied.iter().map(|m| m.stem()).collect();
            crate::outln!("{label}: {path}: applied {}", stems.join(", "));
            match upgrade::drift(&target.path, declared, &ctx.settings.sqlite) {
                Ok(lines) if lines.is_empty() => ExitStatus::Success,
                Ok(lines) => {
                    tracing::warn!(
                        "{label}: {path}: after migrating, the schema still differs from the declared models (run `beamdb make-migrations`):\n  {}",
                        lines.join("\n  ")
                    );
                    ExitStatus::Success
                }
                Err(err) => {
                    crate::errln!("error: {err}");
                    ExitStatus::Failure
                }
            }
        }
        Err(err) => {
            crate::errln!("error: {label}: {err}");
            crate::exit::HasExitStatus::exit_status(&err)
        }
    }
}

/// Brings the beamtime's frame store to the layout xarray reads (docs/reading.md): each run
/// whose group lacks the layout marker is converted from its committed rows, the marker
/// written last, so an interrupted upgrade is redone by the next `migrate`. With --dry-run
/// or --check, only says which runs would be.
fn upgrade_store(
    ctx: &Ctx,
    args: &MigrateArgs,
    layout: &Layout,
    id: &SafeName,
    target: &Target,
) -> ExitStatus {
    let label = &target.label;
    // An S3 store has no run group of an older layout: ingest writes every version of a run
    // there with the layout, and nothing older was ever written to S3.
    let location = crate::frames::location(&ctx.settings.frames, layout, id);
    let Ok((root, _)) = location.filesystem("migrate", "") else {
        return ExitStatus::Success;
    };
    let root = root.to_path_buf();
    let read_only = args.dry_run || args.check;
    let mut conn = match crate::db::open(
        &target.path,
        crate::db::Access::ReadOnly,
        &ctx.settings.sqlite,
    ) {
        Ok(conn) => conn,
        Err(err) => {
            crate::errln!("error: {label}: {err}");
            return ExitStatus::Failure;
        }
    };
    let upgrade = match crate::store_columns::upgrade_store(&mut conn, &root, read_only) {
        Ok(upgrade) => upgrade,
        Err(err) => {
            crate::errln!(
                "error: {label}: {err} (runs converted before it keep the new layout; run `beamdb migrate` again once the cause is fixed)"
            );
            return crate::exit::HasExitStatus::exit_status(&err);
        }
    };
    let mut status = ExitStatus::Success;
    for (uid, err) in &upgrade.failed {
        crate::errln!(
            "error: {label}: run {uid} was not brought to the xarray layout: {err} (the other runs were; `beamdb migrate` tries it again)"
        );
        status = status.worst(crate::exit::HasExitStatus::exit_status(err));
    }
    let uids = upgrade.done;
    if uids.is_empty() {
        return status;
    }
    if read_only {
        crate::outln!(
            "{label}: {}: {} run(s) to bring to the xarray layout: {}",
            root.display(),
            uids.len(),
            uids.join(", ")
        );
        if args.check {
            status = status.worst(ExitStatus::CheckFailed);
        }
    } else {
        crate::outln!(
            "{label}: {}: brought {} run(s) to the xarray layout",
            root.display(),
            uids.len()
        );
    }
    status
}
