//! `beamdb initdb`: create data_root, index.db and beamtimes at head.

use crate::exit::{Context, Result};

use super::Ctx;
use crate::beamtime::{self, Ensured};
use crate::cli::InitdbArgs;
use crate::exit::ExitStatus;
use crate::layout::{Layout, SafeName};
use crate::lock;
use crate::migrations::{files, upgrade};
use crate::schema::DbKind;
use crate::settings::IndexLocation;

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

    match settings.index_location() {
        IndexLocation::Sqlite(index_path) => {
            let patience =
                std::time::Duration::from_millis(u64::from(settings.sqlite.busy_timeout_ms));
            let index = files::load(DbKind::Index, settings.schema.migrations_dir.as_deref())?;
            let (ensured, _shared) = upgrade::ensure(
                &layout.migrate_lock(),
                &index_path,
                &index,
                &settings.sqlite,
                lock::Wait::Yes,
                patience,
            )?;
            report(ctx, "index", &index_path, &ensured);
        }
        #[cfg(feature = "postgres")]
        IndexLocation::Postgres(url) => {
            let applied =
                crate::index::pg::migrate(&url, settings.schema.migrations_dir.as_deref())?;
            // What marks a data root as beamdb's when there is no index.db in it.
            std::fs::create_dir_all(layout.beamtimes_dir()).with_context(|| {
                format!("{}: cannot create it", layout.beamtimes_dir().display())
            })?;
            if applied.is_empty() {
                ctx.note(format_args!("index: PostgreSQL {url} is up to date"));
            } else {
                ctx.note(format_args!(
                    "index: PostgreSQL {url}: applied {}",
                    applied.join(", ")
                ));
            }
        }
        #[cfg(not(feature = "postgres"))]
        IndexLocation::Postgres(_) => {
            unreachable!("settings refuse a postgresql:// url without the postgres feature")
        }
    }

    let migrations = files::load(DbKind::Beamtime, settings.schema.migrations_dir.as_deref())?;
    for id in &ids {
        let (ensured, _shared) =
            beamtime::ensure(&layout, id, &migrations, &settings.sqlite, &settings.frames)?;
        report(
            ctx,
            &format!("beamtime {id}"),
            &layout.beamtime_db(id),
            &ensured,
        );
    }
    Ok(ExitStatus::Success)
}

fn report(ctx: &Ctx, label: &str, path: &std::path::Path, ensured: &Ensured) {
    match ensured.describe(label, path) {
        Some(line) => ctx.note(line),
        None => ctx.note(format_args!("{label}: {} is up to date", path.display())),
    }
}
