//! `beamdb make-migrations`: models (TOML) → Schema; migrations → replay → introspect →
//! Schema; compare → ops; render → `V{n}__{name}.sql`.

use anyhow::{Context, Result};

use super::Ctx;
use crate::cli::MakeMigrationsArgs;
use crate::diff::{self, Op};
use crate::exit::{ExitStatus, fail};
use crate::migrations::files::{self, MigrationFile};
use crate::migrations::runner;
use crate::render;
use crate::schema::{DbKind, Schema, declared, introspect};

pub fn run(ctx: &Ctx, args: &MakeMigrationsArgs) -> Result<ExitStatus> {
    let kinds = match args.target {
        Some(kind) => vec![kind],
        None => DbKind::ALL.to_vec(),
    };
    let mut status = ExitStatus::Success;
    for kind in kinds {
        status = status.worst(one_kind(ctx, args, kind)?);
    }
    Ok(status)
}

fn one_kind(ctx: &Ctx, args: &MakeMigrationsArgs, kind: DbKind) -> Result<ExitStatus> {
    let schema_settings = &ctx.settings.schema;
    let declared = declared::load(kind, schema_settings.models_dir.as_deref())?;
    let existing = files::load(kind, schema_settings.migrations_dir.as_deref())?;
    let ops = pending_ops(kind, &existing, &declared)?;

    if ops.is_empty() {
        ctx.note(format_args!(
            "{kind}: the migrations match the models; nothing to write"
        ));
        return Ok(ExitStatus::Success);
    }
    if args.check {
        println!(
            "{kind}: the models differ from the migrations; run `beamdb make-migrations` to write:"
        );
        for op in &ops {
            println!("  {op}");
        }
        return Ok(ExitStatus::CheckFailed);
    }
    let Some(dir) = schema_settings.migrations_dir.as_deref() else {
        return Err(fail(
            ExitStatus::Usage,
            format!(
                "{kind}: the models differ from the built-in migrations, and there is nowhere to write a new one: set `[schema] migrations_dir` in the settings (and `models_dir` to the models you edit)"
            ),
        ));
    };
    let version = files::next_version(&existing);
    let name = match &args.name {
        Some(name) => files::slug(name),
        None if existing.is_empty() => "initial".to_string(),
        None => files::slug(&default_name(&ops)),
    };
    let mut migration = MigrationFile {
        version,
        name,
        sql: String::new(),
    };
    migration.sql = render::render_migration(
        &format!(
            "{}: {kind} database, written by `beamdb make-migrations`",
            migration.stem()
        ),
        &ops,
    );
    prove_round_trip(kind, &existing, &migration, &declared)?;
    let path = files::write(dir, kind, &migration)?;
    println!("{kind}: wrote {}", path.display());
    for op in &ops {
        ctx.note(format_args!("  {op}"));
    }
    Ok(ExitStatus::Success)
}

/// The operations that take the schema the migrations produce to the declared one.
fn pending_ops(kind: DbKind, existing: &[MigrationFile], declared: &Schema) -> Result<Vec<Op>> {
    let replayed = runner::replay(existing)
        .with_context(|| format!("{kind}: cannot replay the existing migrations"))?;
    let live = introspect::introspect(&replayed)?;
    diff::compare(&live, declared).map_err(|lines| {
        fail(
            ExitStatus::Failure,
            format!(
                "{kind}: these differences cannot be written as a migration by this beamdb:\n  {}",
                lines.join("\n  ")
            ),
        )
    })
}

/// Replays the migrations plus the new one and checks the result is exactly the declared
/// schema: a migration beamdb writes is known to do what it says before it is on disk.
fn prove_round_trip(
    kind: DbKind,
    existing: &[MigrationFile],
    new: &MigrationFile,
    declared: &Schema,
) -> Result<()> {
    let mut all = existing.to_vec();
    all.push(new.clone());
    let left = pending_ops(kind, &all, declared).with_context(|| {
        format!(
            "{kind}: the new migration {} does not apply cleanly (a beamdb bug)",
            new.stem()
        )
    })?;
    if !left.is_empty() {
        let lines: Vec<String> = left.iter().map(ToString::to_string).collect();
        anyhow::bail!(
            "{kind}: after the new migration {} the schema still differs from the models (a beamdb bug): {}",
            new.stem(),
            lines.join("; ")
        );
    }
    Ok(())
}

/// A name from the operations: the first one's words, "and_more" when there are several.
fn default_name(ops: &[Op]) -> String {
    let first = ops.first().map(ToString::to_string).unwrap_or_default();
    let first: String = first.split(" (").next().unwrap_or_default().to_string();
    if ops.len() > 1 {
        format!("{first} and more")
    } else {
        first
    }
}
