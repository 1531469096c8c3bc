//! beamdb: Bluesky runs in per-beamtime SQLite databases, frames in Zarr, and a master index.
//!
//! Data flows one way: `cli` (what the user typed) → `settings` (resolved once) →
//! `commands` (the only printers) → the library modules below them.

// stdout is written through `commands::output` only: `println!` panics on a closed pipe.
#![deny(clippy::print_stdout)]

pub mod beamtime;
pub mod cli;
pub mod commands;
pub mod db;
pub mod describe;
pub mod diff;
pub mod escape;
pub mod exit;
pub mod export;
pub mod frames;
pub mod index;
pub mod ingest;
pub mod layout;
pub mod listen;
pub mod localtime;
pub mod lock;
pub mod lookup;
pub mod migrations;
pub mod pgurl;
pub mod reindex;
pub mod render;
pub mod schema;
pub mod settings;
pub mod store_columns;
pub mod tomlfile;
pub mod verify;

use crate::exit::Result;

use cli::{Cli, Command};
use commands::Ctx;
pub use exit::ExitStatus;
use settings::{Env, Settings};

/// Runs one parsed command line to its exit status.
pub fn run(cli: Cli) -> Result<ExitStatus> {
    let env = Env::from_process()?;
    let settings = Settings::resolve(cli.settings.as_deref(), &env)?;
    // What each command needs of the settings, decided here for all of them: a new command
    // must say whether it reads an existing data_root (only initdb and ingest create one;
    // make-migrations does not use it) and whether it fills an empty migrations_dir.
    let (reads_data_root, fills_migrations_dir) = match &cli.command {
        Command::Initdb(_) | Command::Ingest(_) | Command::Listen(_) => (false, false),
        Command::MakeMigrations(args) => (false, !args.check),
        Command::Migrate(_)
        | Command::Reindex(_)
        | Command::Runs(_)
        | Command::Show(_)
        | Command::Verify(_)
        | Command::Export(_) => (true, false),
    };
    settings.check_schema_dirs(fills_migrations_dir)?;
    if reads_data_root {
        settings.existing_data_root()?;
    }
    tracing::debug!(?settings, "resolved settings");
    let ctx = Ctx {
        settings,
        quiet: cli.quiet,
    };
    let status = match &cli.command {
        Command::Initdb(args) => commands::initdb::run(&ctx, args),
        Command::MakeMigrations(args) => commands::make_migrations::run(&ctx, args),
        Command::Migrate(args) => commands::migrate::run(&ctx, args),
        Command::Ingest(args) => commands::ingest::run(&ctx, args),
        Command::Reindex(args) => commands::reindex::run(&ctx, args),
        Command::Runs(args) => commands::runs::run(&ctx, args),
        Command::Show(args) => commands::show::run(&ctx, args),
        Command::Verify(args) => commands::verify::run(&ctx, args),
        Command::Listen(args) => commands::listen::run(&ctx, args),
        Command::Export(args) => commands::export::run(&ctx, args),
    }?;
    Ok(status.worst(commands::output::finish()))
}
