//! Parse → run → exit status. Errors print as `error: …` with their causes, never a backtrace.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use beamdb::cli::Cli;
use beamdb::exit::ExitStatus;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            // --help and --version are successes; everything else is a usage error.
            return ExitCode::from(if err.use_stderr() {
                ExitStatus::Usage.code()
            } else {
                0
            });
        }
    };
    init_logging(&cli);
    match beamdb::run(cli) {
        Ok(status) => ExitCode::from(status.code()),
        Err(err) => {
            // Not eprintln!, which panics when stderr is a closed pipe (`2>&1 | head`).
            let mut stderr = std::io::stderr().lock();
            for line in err.lines() {
                let _ = writeln!(stderr, "{line}");
            }
            ExitCode::from(err.status().code())
        }
    }
}

fn init_logging(cli: &Cli) {
    let default = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("beamdb={default},warn")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour for people at a terminal; cron's log files get plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .init();
}
