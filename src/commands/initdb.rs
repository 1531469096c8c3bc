//! `beamdb initdb`: create data_root, index.db and beamtimes at head.

use anyhow::{Context, Result};

use super::Ctx;
use crate::cli::InitdbArgs;
use crate::exit::ExitStatus;
use crate::frames;
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
    let layout = Layout::new(&ctx.settings.data_root);
    std::fs::create_dir_all(layout.root())
        .with_context(|| format!("{}: cannot create data_root", layout.root().display()))?;
    let index = files::load(DbKind::Index, ctx.settings.schema.migrations_dir.as_deref())?;
    bring_up(ctx, "index", &layout.index_db(), &index)?;

    let beamtime = files::load(
        DbKind::Beamtime,
        ctx.settings.schema.migrations_dir.as_deref(),
    )?;
    for id in &ids {
        create_beamtime(ctx, &layout, id, &beamtime)?;
    }
    Ok(ExitStatus::Success)
}

/// Creates (or brings to head) one beamtime: its folder, database and empty frame store.
pub fn create_beamtime(
    ctx: &Ctx,
    layout: &Layout,
    id: &SafeName,
    migrations: &[files::MigrationFile],
) -> Result<()> {
    let dir = layout.beamtime_dir(id);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("{}: cannot create the beamtime folder", dir.display()))?;
    bring_up(
        ctx,
        &format!("beamtime {id}"),
        &layout.beamtime_db(id),
        migrations,
    )?;
    frames::create_store(&layout.frames_store(id))?;
    Ok(())
}

fn bring_up(
    ctx: &Ctx,
    what: &str,
    path: &std::path::Path,
    migrations: &[files::MigrationFile],
) -> Result<()> {
    let existed = path.exists();
    let options = upgrade::Options {
        dry_run: false,
        backup: true,
    };
    match upgrade::upgrade(path, migrations, &ctx.settings.sqlite, options)? {
        upgrade::Outcome::Applied { applied, backup } if existed => {
            if let Some(backup) = backup {
                ctx.note(format_args!(
                    "backed up {} to {}",
                    path.display(),
                    backup.display()
                ));
            }
            let stems: Vec<String> = applied.iter().map(|m| m.stem()).collect();
            ctx.note(format_args!(
                "{what}: migrated {} ({})",
                path.display(),
                stems.join(", ")
            ));
        }
        upgrade::Outcome::Applied { .. } => {
            ctx.note(format_args!("{what}: created {}", path.display()))
        }
        _ => ctx.note(format_args!("{what}: {} is up to date", path.display())),
    }
    Ok(())
}
