//! `beamdb initdb`: create data_root, index.db and beamtimes at head.

use crate::exit::{Context, Result};

use super::Ctx;
use crate::beamtime::{self, Ensured};
use crate::cli::InitdbArgs;
use crate::exit::ExitStatus;
use crate::layout::{Layout, SafeName};
use crate::migrations::{files, upgrade};
use crate::schema::DbKind;

pub fn run(ctx: &Ctx, args: &InitdbArgs) -> Result<ExitStatus> {
    // Every id is checked before anything is written.
    let ids: Vec<SafeName> = args
        .beamtimes
        .iter()
        .map(|id| SafeName::new("beamtime id", id))
        .collect::<Result<_, _>>()?;
    let settings = &ctx.settings;
    let layout = Layout::new(&settings.data_root);
    std::fs::create_dir_all(layout.root())
        .with_context(|| format!("{}: cannot create data_root", layout.root().display()))?;

    let index = files::load(DbKind::Index, settings.schema.migrations_dir.as_deref())?;
    let index_path = layout.index_db();
    let existed = index_path.exists();
    let options = upgrade::Options {
        dry_run: false,
        backup: true,
    };
    match upgrade::upgrade(&index_path, &index, &settings.sqlite, options)? {
        upgrade::Outcome::Applied { .. } if !existed => {
            ctx.note(format_args!("index: created {}", index_path.display()))
        }
        upgrade::Outcome::Applied { applied, .. } => {
            let stems: Vec<String> = applied.iter().map(|m| m.stem()).collect();
            ctx.note(format_args!(
                "index: migrated {} ({})",
                index_path.display(),
                stems.join(", ")
            ))
        }
        _ => ctx.note(format_args!(
            "index: {} is up to date",
            index_path.display()
        )),
    }

    let migrations = files::load(DbKind::Beamtime, settings.schema.migrations_dir.as_deref())?;
    for id in &ids {
        let db = layout.beamtime_db(id);
        match beamtime::ensure(&layout, id, &migrations, &settings.sqlite)? {
            Ensured::Created => ctx.note(format_args!("beamtime {id}: created {}", db.display())),
            Ensured::UpToDate => ctx.note(format_args!(
                "beamtime {id}: {} is up to date",
                db.display()
            )),
            Ensured::Migrated { applied, backup } => {
                if let Some(backup) = backup {
                    ctx.note(format_args!(
                        "beamtime {id}: backed up to {}",
                        backup.display()
                    ));
                }
                ctx.note(format_args!(
                    "beamtime {id}: migrated {} ({})",
                    db.display(),
                    applied.join(", ")
                ));
            }
        }
    }
    Ok(ExitStatus::Success)
}
