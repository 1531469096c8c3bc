//! Parse → run → exit status. Errors print as `error: …` with their causes, never a backtrace.

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
            for line in err.lines() {
                eprintln!("{line}");
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
        .with_target(false)
        .without_time()
        .init();
}
