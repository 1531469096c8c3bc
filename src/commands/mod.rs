//! One module per subcommand. These are the only modules that print.

pub mod export;
pub mod ingest;
pub mod initdb;
pub mod listen;
pub mod make_migrations;
pub mod migrate;
pub mod output;
pub mod progress;
pub mod reindex;
pub mod runs;
pub mod show;
pub mod verify;

use crate::settings::Settings;

/// What every command gets: the resolved settings and how chatty to be.
#[derive(Debug)]
pub struct Ctx {
    pub settings: Settings,
    pub quiet: bool,
}

impl Ctx {
    /// A progress line for people (not for scripts): on stderr, silenced by --quiet.
    pub fn note(&self, line: impl std::fmt::Display) {
        if !self.quiet {
            crate::errln!("{line}");
        }
    }
}
