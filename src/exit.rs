//! Exit statuses: the stable contract with cron and CI (docs/exit-codes.md).

use std::fmt;

/// How a beamdb process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExitStatus {
    /// 0: success, including "nothing to do".
    Success,
    /// 1: runtime failure: I/O, database error, bug.
    Failure,
    /// 2: usage or settings error (bad flag, bad key in settings.toml, bad model file).
    Usage,
    /// 3: `--check` found a difference.
    CheckFailed,
    /// 4: bad input data: some documents, runs or beamtimes were rejected or skipped.
    BadInput,
    /// 5: a database is newer than, or diverges from, this binary's migrations.
    DatabaseAhead,
    /// 75: another process holds the lock; try again later.
    Locked,
}

impl ExitStatus {
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::Failure => 1,
            ExitStatus::Usage => 2,
            ExitStatus::CheckFailed => 3,
            ExitStatus::BadInput => 4,
            ExitStatus::DatabaseAhead => 5,
            ExitStatus::Locked => 75,
        }
    }

    /// The more serious of two outcomes, for commands that go on after a non-fatal problem.
    /// Runtime failures outrank rejected input, which outranks success.
    pub fn worst(self, other: ExitStatus) -> ExitStatus {
        let rank = |s: ExitStatus| match s {
            ExitStatus::Success => 0,
            ExitStatus::CheckFailed => 1,
            ExitStatus::BadInput => 2,
            ExitStatus::Locked => 3,
            ExitStatus::DatabaseAhead => 4,
            ExitStatus::Usage => 5,
            ExitStatus::Failure => 6,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}

/// A library error that knows its exit status (STYLE habit 14). Every error type a command
/// can end with implements it; a wrapper (an enum with `#[error(transparent)]` variants)
/// implements it by asking the error it wraps, with an exhaustive `match`, so that a new
/// variant is a compile error until someone decides its status. Nothing finds a status by
/// downcasting or by matching on message text.
pub trait HasExitStatus: std::error::Error + Send + Sync + 'static {
    fn exit_status(&self) -> ExitStatus;
}

/// The error a command ends with: what to print and the exit status, decided when the library
/// error became this one (from its [`HasExitStatus`]), and kept through every `.context()`.
///
/// There is deliberately no `From<anyhow::Error>`: an error whose status is unknown cannot
/// reach `main`, so a status cannot be lost on the way (the bug class where a new wrapper
/// silently turned 75 or 5 into 1).
pub struct Error {
    status: ExitStatus,
    inner: anyhow::Error,
}

/// What commands return.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error with `status` and a message of its own.
    pub fn new(status: ExitStatus, message: impl Into<String>) -> Error {
        Error::from(Classified {
            status,
            message: message.into(),
        })
    }

    pub fn status(&self) -> ExitStatus {
        self.status
    }

    /// Adds what was being done; the status stays the cause's.
    pub fn context(self, context: impl fmt::Display + Send + Sync + 'static) -> Error {
        Error {
            status: self.status,
            inner: self.inner.context(context),
        }
    }

    /// The lines to print: the message, then each cause that says something the line above
    /// it did not. beamdb's error messages are whole sentences that already include their
    /// cause (`{path}: cannot read it: {source}`), because they are also printed inline
    /// (one line per skipped beamtime); `source()` still exposes the cause to programs. So a
    /// cause is printed only when the message above it does not already contain it, which
    /// is what a `.context()` line (which does not) needs.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![format!("error: {}", self.inner)];
        let mut above = self.inner.to_string();
        for cause in self.inner.chain().skip(1) {
            let text = cause.to_string();
            if !above.contains(&text) {
                lines.push(format!("  caused by: {text}"));
            }
            above = text;
        }
        lines
    }
}

impl<E: HasExitStatus> From<E> for Error {
    fn from(err: E) -> Error {
        Error {
            status: err.exit_status(),
            inner: anyhow::Error::new(err),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[exit {}] {:?}", self.status.code(), self.inner)
    }
}

/// `.context()` / `.with_context()` for commands, as anyhow's, but keeping the exit status
/// of the error they wrap.
pub trait Context<T> {
    fn context<C>(self, context: C) -> Result<T>
    where
        C: fmt::Display + Send + Sync + 'static;

    fn with_context<C, F>(self, f: F) -> Result<T>
    where
        C: fmt::Display + Send + Sync + 'static,
        F: FnOnce() -> C;
}

impl<T, E: HasExitStatus> Context<T> for std::result::Result<T, E> {
    fn context<C>(self, context: C) -> Result<T>
    where
        C: fmt::Display + Send + Sync + 'static,
    {
        self.map_err(|e| Error::from(e).context(context))
    }

    fn with_context<C, F>(self, f: F) -> Result<T>
    where
        C: fmt::Display + Send + Sync + 'static,
        F: FnOnce() -> C,
    {
        self.map_err(|e| Error::from(e).context(f()))
    }
}

impl<T> Context<T> for Result<T, Error> {
    fn context<C>(self, context: C) -> Result<T>
    where
        C: fmt::Display + Send + Sync + 'static,
    {
        self.map_err(|e| e.context(context))
    }

    fn with_context<C, F>(self, f: F) -> Result<T>
    where
        C: fmt::Display + Send + Sync + 'static,
        F: FnOnce() -> C,
    {
        self.map_err(|e| e.context(f()))
    }
}

/// A message with a status, for errors that commands decide themselves (a usage error).
#[derive(Debug)]
pub struct Classified {
    pub status: ExitStatus,
    pub message: String,
}

impl fmt::Display for Classified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Classified {}

impl HasExitStatus for Classified {
    fn exit_status(&self) -> ExitStatus {
        self.status
    }
}

/// An error with an exit status: `Err(fail(ExitStatus::Usage, "..."))?`.
pub fn fail(status: ExitStatus, message: impl Into<String>) -> Error {
    Error::new(status, message)
}

/// Errors from outside beamdb (I/O, SQLite, JSON) that reach a command bare are runtime
/// failures; a command that knows better wraps them in a typed error first.
macro_rules! runtime_failure {
    ($($t:ty),* $(,)?) => {$(
        impl HasExitStatus for $t {
            fn exit_status(&self) -> ExitStatus {
                ExitStatus::Failure
            }
        }
    )*};
}
runtime_failure!(std::io::Error, rusqlite::Error, serde_json::Error);

/// The table printed in `beamdb --help` and kept in docs/exit-codes.md.
pub const EXIT_CODES_HELP: &str = "\
Exit status:
  0   success (including \"nothing to do\")
  1   runtime failure: I/O, database error, bug
  2   usage or settings error (bad flag, bad key in settings.toml, bad model file)
  3   --check found a difference (models vs migrations, or pending migrations)
  4   bad input data: some documents, runs or beamtimes were rejected or skipped
  5   a database is newer than, or diverges from, this binary's migrations
  75  another process holds the lock (reindex, migrate); try again later";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::beamtime::BeamtimeError;
    use crate::ingest::IngestError;
    use crate::lock::LockError;
    use crate::migrations::runner::{HistoryError, RunnerError};
    use crate::migrations::upgrade::UpgradeError;
    use crate::reindex::ReindexError;

    fn held() -> LockError {
        LockError::Held {
            what: "migrate",
            holder: "pid 1".into(),
            path: "/d/.migrate.lock".into(),
        }
    }

    fn ahead() -> UpgradeError {
        UpgradeError::Runner {
            path: "/d/index.db".into(),
            source: RunnerError::History(HistoryError::Ahead {
                applied: "V9__x".into(),
            }),
        }
    }

    #[test]
    fn transparent_wrappers_keep_the_status_of_what_they_wrap() {
        assert_eq!(
            Error::from(IngestError::Lock(held())).status(),
            ExitStatus::Locked
        );
        assert_eq!(
            Error::from(ReindexError::Locked(held())).status(),
            ExitStatus::Locked
        );
        assert_eq!(
            Error::from(BeamtimeError::Upgrade(ahead())).status(),
            ExitStatus::DatabaseAhead
        );
        assert_eq!(
            Error::from(ReindexError::Index(ahead())).status(),
            ExitStatus::DatabaseAhead
        );
    }

    #[test]
    fn context_keeps_the_status() {
        let locked: std::result::Result<(), LockError> = Err(held());
        let err = locked
            .with_context(|| "ingest")
            .context("outer")
            .unwrap_err();
        assert_eq!(err.status(), ExitStatus::Locked);
        assert_eq!(err.lines()[0], "error: outer");
        let io: std::result::Result<(), std::io::Error> =
            Err(std::io::Error::other("disk on fire"));
        let err = io.context("writing x").unwrap_err();
        assert_eq!(err.status(), ExitStatus::Failure);
        assert_eq!(
            err.lines(),
            ["error: writing x", "  caused by: disk on fire"]
        );
    }
}
