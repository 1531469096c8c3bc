//! The one writer of stdout. Commands print through [`outln!`](crate::outln) and
//! [`out!`](crate::out), never `println!`.
//!
//! `beamdb ingest … | head` closes the pipe after the first lines. `println!` panics on the
//! EPIPE that follows (Rust ignores SIGPIPE, so a write to a closed pipe returns an error),
//! which killed an ingest half-way. Here a closed stdout stops the printing, once, and the
//! work that does not need stdout goes on (every run is still ingested); the exit status is
//! the command's. Any other write error (a full disk behind `> file`) is reported once on
//! stderr and turns the exit status into a runtime failure, since the output is incomplete.

use std::fmt;
use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::exit::ExitStatus;

static CLOSED: AtomicBool = AtomicBool::new(false);
static FAILED: Mutex<Option<String>> = Mutex::new(None);

/// Writes `args` to stdout, then a newline when `newline`; does nothing once stdout is gone.
pub fn write(args: fmt::Arguments<'_>, newline: bool) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    let result = out.write_fmt(args).and_then(|()| {
        if newline {
            out.write_all(b"\n")
        } else {
            Ok(())
        }
    });
    if let Err(err) = result {
        closed(err);
    }
}

fn closed(err: std::io::Error) {
    CLOSED.store(true, Ordering::Relaxed);
    if err.kind() != std::io::ErrorKind::BrokenPipe
        && let Ok(mut failed) = FAILED.lock()
    {
        failed.get_or_insert_with(|| err.to_string());
    }
}

/// Whether stdout is gone (a closed pipe): a command whose only output is stdout stops.
pub fn is_closed() -> bool {
    CLOSED.load(Ordering::Relaxed)
}

/// Flushes stdout at the end of a command and says how printing went: `Success`, or
/// `Failure` after a write error other than a closed pipe (reported here, on stderr).
pub fn finish() -> ExitStatus {
    if !CLOSED.load(Ordering::Relaxed)
        && let Err(err) = std::io::stdout().lock().flush()
    {
        closed(err);
    }
    match FAILED.lock().ok().and_then(|f| f.clone()) {
        Some(err) => {
            let _ = writeln!(
                std::io::stderr(),
                "error: cannot write to stdout ({err}); the output above is incomplete"
            );
            ExitStatus::Failure
        }
        None => ExitStatus::Success,
    }
}

/// A line on stderr (a warning, an error a command goes on after). Unlike `eprintln!` it
/// does not panic when stderr is a closed pipe (`beamdb … 2>&1 | head`).
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// A line on stdout, through the one writer (see `commands::output`).
#[macro_export]
macro_rules! outln {
    () => {
        $crate::commands::output::write(format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::commands::output::write(format_args!($($arg)*), true)
    };
}

/// Text on stdout without a newline, through the one writer (see `commands::output`).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::commands::output::write(format_args!($($arg)*), false)
    };
}
