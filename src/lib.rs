//! beamdb: Bluesky runs in per-beamtime SQLite databases, frames in Zarr, and a master index.
//!
//! Data flows one way: `cli` (what the user typed) → `settings` (resolved once) →
//! `commands` (the only printers) → the library modules below them.

pub mod beamtime;
pub mod cli;
pub mod commands;
pub mod db;
pub mod diff;
pub mod exit;
pub mod frames;
pub mod index;
pub mod ingest;
pub mod layout;
pub mod listen;
pub mod lock;
pub mod migrations;
pub mod reindex;
pub mod render;
pub mod schema;
pub mod settings;
pub mod tomlfile;
pub mod verify;

use anyhow::Result;

use cli::{Cli, Command};
use commands::Ctx;
pub use exit::ExitStatus;
use settings::{Env, Settings};

/// Runs one parsed command line to its exit status.
pub fn run(cli: Cli) -> Result<ExitStatus> {
    let env = Env::from_process()?;
    let settings = Settings::resolve(cli.settings.as_deref(), &env)?;
    tracing::debug!(?settings, "resolved settings");
    let ctx = Ctx {
        settings,
        quiet: cli.quiet,
    };
    match &cli.command {
        Command::Initdb(args) => commands::initdb::run(&ctx, args),
        Command::MakeMigrations(args) => commands::make_migrations::run(&ctx, args),
        Command::Migrate(args) => commands::migrate::run(&ctx, args),
        Command::Ingest(args) => commands::ingest::run(&ctx, args),
        Command::Reindex(args) => commands::reindex::run(&ctx, args),
        Command::Runs(args) => commands::runs::run(&ctx, args),
        Command::Verify(args) => commands::verify::run(&ctx, args),
        Command::Listen(args) => commands::listen::run(&ctx, args),
    }
}
