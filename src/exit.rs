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

/// An error that knows its exit status. Deep code returns typed errors; commands wrap the
/// ones whose status is not "runtime failure" in this, or return it directly.
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

/// An error with an exit status: `Err(fail(ExitStatus::Usage, "..."))?`.
pub fn fail(status: ExitStatus, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Classified {
        status,
        message: message.into(),
    })
}

/// The exit status for an error that ended a command: the first classified cause in its
/// chain decides; anything else is a runtime failure.
pub fn status_of(err: &anyhow::Error) -> ExitStatus {
    use crate::layout::NameError;
    use crate::lock::LockError;
    use crate::migrations::runner::{HistoryError, RunnerError};
    use crate::settings::SettingsError;
    use crate::tomlfile::TomlError;
    for cause in err.chain() {
        if let Some(c) = cause.downcast_ref::<Classified>() {
            return c.status;
        }
        if cause.is::<SettingsError>() || cause.is::<TomlError>() || cause.is::<NameError>() {
            return ExitStatus::Usage;
        }
        if matches!(
            cause.downcast_ref::<LockError>(),
            Some(LockError::Held { .. })
        ) {
            return ExitStatus::Locked;
        }
        if cause.is::<HistoryError>()
            || matches!(
                cause.downcast_ref::<RunnerError>(),
                Some(RunnerError::History(_))
            )
        {
            return ExitStatus::DatabaseAhead;
        }
    }
    ExitStatus::Failure
}

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
