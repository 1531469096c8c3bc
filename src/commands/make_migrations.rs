//! `beamdb make-migrations`: models (TOML) → Schema; migrations → replay → introspect →
//! Schema; compare → ops; plan (in place or rebuild) → render → `V{n}__{name}.sql`.

use std::path::Path;

use crate::exit::{Context, Result};

use super::Ctx;
use crate::cli::{MakeMigrationsArgs, RenameArg};
use crate::db::{self, Access};
use crate::diff::{self, CompareError, Op};
use crate::exit::{ExitStatus, fail};
use crate::migrations::files::{self, MigrationFile};
use crate::migrations::runner;
use crate::render;
use crate::schema::{DbKind, Renames, Schema, declared, introspect};

pub fn run(ctx: &Ctx, args: &MakeMigrationsArgs) -> Result<ExitStatus> {
    if let Some(path) = &args.database {
        return drift(ctx, args, path);
    }
    let kinds = match args.target {
        Some(kind) => vec![kind],
        None => DbKind::ALL.to_vec(),
    };
    let mut used = vec![false; args.renames.len()];
    let mut status = ExitStatus::Success;
    for kind in &kinds {
        status = status.worst(one_kind(ctx, args, *kind, &mut used)?);
    }
    if kinds.contains(&DbKind::Index) {
        status = status.worst(postgres_twins(ctx, args)?);
    }
    if let Some(unused) = args.renames.iter().zip(&used).find(|(_, used)| !**used) {
        return Err(fail(
            ExitStatus::Usage,
            format!(
                "--rename {}: no such table in the migrations{}",
                describe_flag(unused.0),
                args.target
                    .map(|k| format!(" of the {k} database"))
                    .unwrap_or_default()
            ),
        ));
    }
    Ok(status)
}

/// The index's PostgreSQL migrations (`{migrations_dir}/index-postgres/`), one for each
/// SQLite one and rendered from the same change: `--check` reports any missing or different
/// (exit 3); otherwise the missing ones are written (never over an existing file).
fn postgres_twins(ctx: &Ctx, args: &MakeMigrationsArgs) -> Result<ExitStatus> {
    use crate::index::pg_schema;
    let dir = ctx.settings.schema.migrations_dir.as_deref();
    // A facility's own migrations get PostgreSQL twins once it keeps them (the folder exists)
    // or uses a PostgreSQL index; a SQLite-only facility's folder stays as it was.
    let wanted = match dir {
        None => true,
        Some(d) => {
            d.join(pg_schema::DIR).is_dir()
                || matches!(
                    ctx.settings.index_location(),
                    crate::settings::IndexLocation::Postgres(_)
                )
        }
    };
    if !wanted {
        return Ok(ExitStatus::Success);
    }
    let sqlite = files::load(DbKind::Index, dir)?;
    let want = pg_schema::from_sqlite(&sqlite)
        .map_err(|why| fail(ExitStatus::Usage, format!("index (PostgreSQL): {why}")))?;
    let have = pg_schema::load(dir).map_err(|why| fail(ExitStatus::Failure, why))?;
    let differing: Vec<&MigrationFile> = want
        .iter()
        .filter(|w| !have.iter().any(|h| h.stem() == w.stem() && h.sql == w.sql))
        .collect();
    if differing.is_empty() {
        ctx.note("index (PostgreSQL): the migrations match the SQLite ones; nothing to write");
        return Ok(ExitStatus::Success);
    }
    let Some(dir) = dir.filter(|_| !args.check) else {
        crate::outln!(
            "index (PostgreSQL): the migrations in {} lack or differ from these, rendered from the SQLite ones; run `beamdb make-migrations --target index` to write them:",
            pg_schema::DIR
        );
        for file in differing {
            crate::outln!("  {}", file.stem());
        }
        return Ok(ExitStatus::CheckFailed);
    };
    let folder = dir.join(pg_schema::DIR);
    std::fs::create_dir_all(&folder)
        .with_context(|| format!("{}: cannot create it", folder.display()))?;
    for file in differing {
        let path = folder.join(format!("{}.sql", file.stem()));
        if path.exists() {
            return Err(fail(
                ExitStatus::Failure,
                format!(
                    "{}: already exists and differs from what the SQLite migration renders; beamdb never overwrites a migration: if it was never applied, move it aside and run again",
                    path.display()
                ),
            ));
        }
        std::fs::write(&path, &file.sql)
            .with_context(|| format!("{}: cannot write it", path.display()))?;
        crate::outln!("index (PostgreSQL): wrote {}", path.display());
    }
    Ok(ExitStatus::Success)
}

fn describe_flag(flag: &RenameArg) -> String {
    match flag {
        RenameArg::Table { from, to } => format!("{from}={to}"),
        RenameArg::Column { table, from, to } => format!("{table}.{from}={table}.{to}"),
    }
}

/// The `--rename` flags that concern a database whose migrations produce `live`; marks them
/// in `used`. A column flag may name its table by the old or the new name.
fn flags_for(live: &Schema, flags: &[RenameArg], used: &mut [bool]) -> Renames {
    let mut renames = Renames::default();
    for (flag, used) in flags.iter().zip(used.iter_mut()) {
        if let RenameArg::Table { from, to } = flag
            && live.table(from).is_some()
        {
            renames.tables.insert(to.clone(), from.clone());
            *used = true;
        }
    }
    for (flag, used) in flags.iter().zip(used.iter_mut()) {
        if let RenameArg::Column { table, from, to } = flag {
            let new_table = renames
                .tables
                .iter()
                .find(|(_, old)| *old == table)
                .map(|(new, _)| new.clone())
                .unwrap_or_else(|| table.clone());
            let old_table = renames.tables.get(&new_table).unwrap_or(&new_table);
            if live.table(old_table).is_some() {
                renames
                    .columns
                    .insert((new_table.clone(), to.clone()), from.clone());
                *used = true;
            }
            // A promoted column of `runs` lives on in `runs_index`: renaming it there keeps
            // the index's values (and needs no flag of its own).
            if table == "runs"
                && live
                    .table("runs_index")
                    .is_some_and(|t| t.column(from).is_some())
            {
                renames
                    .columns
                    .insert(("runs_index".to_string(), to.clone()), from.clone());
                *used = true;
            }
        }
    }
    renames
}

fn one_kind(
    ctx: &Ctx,
    args: &MakeMigrationsArgs,
    kind: DbKind,
    used: &mut [bool],
) -> Result<ExitStatus> {
    let schema_settings = &ctx.settings.schema;
    let (declared, declared_renames) =
        declared::load_with_renames(kind, schema_settings.models_dir.as_deref())?;
    let existing = files::load(kind, schema_settings.migrations_dir.as_deref())?;
    let live = replayed_schema(kind, &existing)?;
    let flags = flags_for(&live, &args.renames, used);
    let compared = diff::resolve_renames(&live, &declared, &flags, &declared_renames)
        .and_then(|renames| diff::compare(&live, &declared, &renames));
    let ops = match compared {
        Ok(ops) => ops,
        Err(err @ CompareError::UndeclaredRenames(_)) if args.check => {
            crate::outln!(
                "{kind}: the models differ from the migrations, and the difference needs a declared rename or two migrations:"
            );
            for line in err.lines() {
                crate::outln!("  {line}");
            }
            return Ok(ExitStatus::CheckFailed);
        }
        Err(err) => return Err(fail(ExitStatus::Usage, format!("{kind}: {err}"))),
    };

    if ops.is_empty() {
        ctx.note(format_args!(
            "{kind}: the migrations match the models; nothing to write"
        ));
        return Ok(ExitStatus::Success);
    }
    if args.check {
        crate::outln!(
            "{kind}: the models differ from the migrations; run `beamdb make-migrations` to write:"
        );
        for op in &ops {
            crate::outln!("  {op}");
        }
        return Ok(ExitStatus::CheckFailed);
    }
    let hazards: Vec<String> = ops.iter().filter_map(|op| op.hazard(&declared)).collect();
    if !hazards.is_empty() && !args.allow_destructive {
        return Err(fail(
            ExitStatus::Usage,
            format!(
                "{kind}: this migration would destroy data or fail on a populated database:\n  {}\nIf that is what you want, run again with --allow-destructive (the migration says so in its header, and `beamdb migrate` backs each database up first). To keep the data, declare renames (--rename) or defaults in the models instead.",
                hazards.join("\n  ")
            ),
        ));
    }
    let Some(dir) = schema_settings.migrations_dir.as_deref() else {
        return Err(fail(
            ExitStatus::Usage,
            format!(
                "{kind}: the models differ from the built-in migrations, and there is nowhere to write a new one: set `[schema] migrations_dir` in the settings (and `models_dir` to the models you edit)"
            ),
        ));
    };
    let plan = diff::plan(&live, &declared, &ops);
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
        &plan,
        &declared,
    );
    prove_round_trip(kind, &existing, &migration, &declared)?;
    let path = files::write(dir, kind, &migration)?;
    crate::outln!("{kind}: wrote {}", path.display());
    for op in &ops {
        ctx.note(format_args!("  {op}"));
    }
    Ok(ExitStatus::Success)
}

/// The schema the migrations produce, by replaying them into an in-memory database.
fn replayed_schema(kind: DbKind, migrations: &[MigrationFile]) -> Result<Schema> {
    let replayed = runner::replay(migrations)
        .with_context(|| format!("{kind}: cannot replay the existing migrations"))?;
    Ok(introspect::introspect(&replayed)?)
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
    let live = replayed_schema(kind, &all).with_context(|| {
        format!(
            "{kind}: the new migration {} does not apply cleanly (a beamdb bug)",
            new.stem()
        )
    })?;
    let left = match diff::compare(&live, declared, &Renames::default()) {
        Ok(ops) => ops.iter().map(ToString::to_string).collect(),
        Err(err) => err.lines(),
    };
    if !left.is_empty() {
        return Err(fail(
            ExitStatus::Failure,
            format!(
                "{kind}: after the new migration {} the schema still differs from the models (a beamdb bug): {}",
                new.stem(),
                left.join("; ")
            ),
        ));
    }
    Ok(())
}

/// `--check --database PATH`: the live database against the models (drift) and its history
/// against the migrations (pending).
fn drift(ctx: &Ctx, args: &MakeMigrationsArgs, path: &Path) -> Result<ExitStatus> {
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let kind = match (args.target, file_name) {
        (Some(kind), _) => kind,
        (None, "beamtime.db") => DbKind::Beamtime,
        (None, "index.db") => DbKind::Index,
        (None, _) => {
            return Err(fail(
                ExitStatus::Usage,
                format!(
                    "{}: cannot tell whether this is a beamtime or an index database from its name; add --target beamtime or --target index",
                    path.display()
                ),
            ));
        }
    };
    if !path.is_file() {
        return Err(fail(
            ExitStatus::Usage,
            format!("{}: no such database file", path.display()),
        ));
    }
    let schema_settings = &ctx.settings.schema;
    let declared = declared::load(kind, schema_settings.models_dir.as_deref())?;
    let ours = files::load(kind, schema_settings.migrations_dir.as_deref())?;
    let conn = db::open(path, Access::ReadOnly, &ctx.settings.sqlite)?;
    let status = runner::status(&conn, &ours).with_context(|| path.display().to_string())?;
    let live = introspect::introspect(&conn)
        .with_context(|| format!("{}: cannot read the schema", path.display()))?;
    let lines = match diff::compare(&live, &declared, &Renames::default()) {
        Ok(ops) => ops.iter().map(ToString::to_string).collect(),
        Err(err) => err.lines(),
    };
    let path = path.display();
    let mut result = ExitStatus::Success;
    if !status.pending.is_empty() {
        let stems: Vec<String> = status.pending.iter().map(|m| m.stem()).collect();
        crate::outln!(
            "{path}: {kind} database at V{}, pending {} (run `beamdb migrate`)",
            status.current_version().unwrap_or(0),
            stems.join(", ")
        );
        result = ExitStatus::CheckFailed;
    }
    if !lines.is_empty() {
        crate::outln!("{path}: the live schema differs from the {kind} models:");
        for line in &lines {
            crate::outln!("  {line}");
        }
        result = ExitStatus::CheckFailed;
    }
    if result == ExitStatus::Success {
        ctx.note(format_args!(
            "{path}: at V{}, and its schema matches the {kind} models",
            status.current_version().unwrap_or(0)
        ));
    }
    Ok(result)
}

/// A name from the operations: the first one's leading words ("add column runs.proposal"),
/// "and more" when there are several.
fn default_name(ops: &[Op]) -> String {
    let first = ops.first().map(ToString::to_string).unwrap_or_default();
    let mut words = Vec::new();
    for word in first.split(' ').take(4) {
        if matches!(word, "on" | "to") || word.starts_with('(') {
            break;
        }
        words.push(word.trim_end_matches(':'));
        if word.ends_with(':') {
            break;
        }
    }
    let first = words.join(" ");
    if ops.len() > 1 {
        format!("{first} and more")
    } else {
        first
    }
}
