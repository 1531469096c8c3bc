//! The index in PostgreSQL (feature `postgres`): one database that every beamline's reindex
//! writes into, each its own beamtimes.
//!
//! What it shares with the SQLite index, so that both answer a query alike: the same rows,
//! the same `--where` semantics (the RunStart's scalars in `beamdb_run_keys`, filled from
//! [`scalar_keys`]), and the same `--text` words ([`searchable_text`], split into tokens as
//! SQLite's FTS5 `unicode61` tokenizer splits them). What differs: the RunStart is JSONB,
//! text compares in the "C" collation (byte order, as SQLite's BINARY), and `--text` results
//! are ordered by time, not ranked.
//!
//! Concurrency: one transaction per beamtime, as in SQLite; a transaction-scoped advisory lock
//! per beamtime id serialises two writers of the same beamtime; the researcher clean-up takes
//! an exclusive advisory lock that every beamtime replacement holds shared, so a researcher a
//! concurrent reindex just referenced is never deleted under it. Reindex itself holds a
//! session advisory lock per data root ([`ReindexLock`]) in place of the lock file, which a
//! second host cannot see.

use std::collections::BTreeMap;
use std::time::Duration;

pub use postgres;
use postgres::error::SqlState;
use postgres::types::{ToSql, Type};
use postgres::{Client, NoTls};

use super::{
    BeamtimeEntry, CompareOp, Condition, ConditionValue, Index, IndexError, IndexedBeamtime,
    IndexedRun, KEYS_TABLE, METADATA_COLUMN, Replaced, Researcher, RunFilter, RunRow, Scalar,
    TEXT_TABLE, core_run_columns, core_value, scalar_keys, searchable_text,
};
use crate::db::Access;
use crate::pgurl::{Host, PgUrl};
use crate::schema::introspect::HISTORY_TABLE;

/// How long a connection attempt may take when the URL does not say.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Advisory-lock keys: a namespace (the first int) so beamdb's locks cannot collide with an
/// application sharing the database, and what it locks.
const LOCK_NAMESPACE: i32 = 0x6265_616d; // "beam"
const RESEARCHERS_LOCK: i32 = 1;

/// A PostgreSQL error with where it happened and what to do.
#[derive(Debug, thiserror::Error)]
#[error("PostgreSQL index {url}: {what}{cause}; {hint}")]
pub struct PgError {
    /// The URL without its password.
    pub url: String,
    pub what: String,
    /// `: ` and the server's or the driver's words, or nothing.
    cause: String,
    pub hint: String,
    #[source]
    pub source: Option<postgres::Error>,
    /// The index is newer than, or diverges from, this beamdb's migrations (exit 5).
    ahead: bool,
}

impl PgError {
    fn new(url: &PgUrl, what: impl Into<String>, source: postgres::Error) -> PgError {
        PgError {
            url: url.to_string(),
            what: what.into(),
            cause: match source.as_db_error() {
                Some(db) => format!(": {}: {}", db.severity(), db.message()),
                // The driver's own (an I/O error, a closed connection): one line.
                None => format!(": {}", source.to_string().replace('\n', " ")),
            },
            hint: hint(url, &source),
            source: Some(source),
            ahead: false,
        }
    }

    fn other(url: &PgUrl, what: impl Into<String>, hint: impl Into<String>) -> PgError {
        PgError {
            url: url.to_string(),
            what: what.into(),
            cause: String::new(),
            hint: hint.into(),
            source: None,
            ahead: false,
        }
    }
}

impl PgError {
    /// Whether the server (or the driver, binding a value) refused the data itself — a
    /// constraint, a value or cast it rejects — rather than the connection, the schema or
    /// the rights failing: the one beamtime is skipped and the others indexed.
    pub fn refused_data(&self) -> bool {
        let Some(error) = &self.source else {
            return false;
        };
        match error.code() {
            // Class 22: data exception; class 23: integrity constraint violation; class
            // 54: a program limit (a value too long for an index of the facility's).
            Some(code) => ["22", "23", "54"]
                .iter()
                .any(|c| code.code().starts_with(c)),
            // A value the driver could not serialize: never sent.
            None => !error.is_closed() && !io_cause(error),
        }
    }
}

impl crate::exit::HasExitStatus for PgError {
    fn exit_status(&self) -> crate::exit::ExitStatus {
        if self.ahead {
            crate::exit::ExitStatus::DatabaseAhead
        } else {
            crate::exit::ExitStatus::Failure
        }
    }
}

/// What to do when the index's history is ahead of, or differs from, this beamdb's.
const AHEAD_HINT: &str = "the index was migrated by another (newer) beamdb, or a migration file was edited after it was applied: use the beamdb that migrated it (or a newer one), or restore the migration file; nothing was changed";

/// The error when the history row (`version`, `name`, `checksum`) of the index is not one
/// of `files` as it is: `None` when it is.
fn history_mismatch(
    url: &PgUrl,
    files: &[crate::migrations::files::MigrationFile],
    version: i32,
    name: &str,
    checksum: &str,
) -> Option<PgError> {
    let stem = format!("V{version}__{name}");
    let shown = crate::escape::escape(&stem).into_owned();
    let Some(file) = files.iter().find(|f| f.version == version) else {
        return Some(PgError {
            ahead: true,
            ..PgError::other(
                url,
                format!("its history has migration {shown}, which this beamdb does not have"),
                AHEAD_HINT,
            )
        });
    };
    let ours = refinery::Migration::unapplied(&file.stem(), &file.sql)
        .map(|m| m.checksum().to_string())
        .ok();
    if file.name != name || ours.as_deref() != Some(checksum) {
        return Some(PgError {
            ahead: true,
            ..PgError::other(
                url,
                format!(
                    "its applied migration {shown} differs from this beamdb's {}",
                    file.stem()
                ),
                AHEAD_HINT,
            )
        });
    }
    None
}

/// What to do about `error`, as the person running beamdb can act on it.
fn hint(url: &PgUrl, error: &postgres::Error) -> String {
    let server = match &url.host {
        Host::Tcp(h) => format!("{h}:{}", url.port),
        Host::Socket(dir) => format!("the socket in {}", dir.display()),
    };
    match error.code() {
        Some(c) if *c == SqlState::INVALID_PASSWORD => format!(
            "the password for user {} is wrong or missing: set it in ~/.pgpass (or $PGPASSFILE, or $PGPASSWORD); see docs/postgres.md",
            url.user
        ),
        Some(c) if *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION => format!(
            "the server refuses user {} (no such role, or pg_hba.conf has no line for this host): ask the database administrator; see docs/postgres.md",
            url.user
        ),
        Some(c) if *c == SqlState::INVALID_CATALOG_NAME => format!(
            "database {} does not exist on {server}: create it (createdb -O {} {}), or fix [index] url",
            url.dbname, url.user, url.dbname
        ),
        Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE => format!(
            "user {} may not do this: make it the database's owner (ALTER DATABASE {} OWNER TO {}); see docs/postgres.md",
            url.user, url.dbname, url.user
        ),
        Some(c)
            if *c == SqlState::ADMIN_SHUTDOWN
                || *c == SqlState::CRASH_SHUTDOWN
                || *c == SqlState::CANNOT_CONNECT_NOW =>
        {
            format!(
                "the server at {server} shut down or restarted: nothing half-written was kept; run the command again when it is up (a reindex re-reads what it missed)"
            )
        }
        Some(c) if *c == SqlState::UNDEFINED_TABLE => {
            "the database has no beamdb index yet: run `beamdb initdb` (or `beamdb reindex`)"
                .to_string()
        }
        None if password_missing(error) => format!(
            "no password for user {}: the server asks for one and beamdb found none in the URL, $PGPASSWORD or the password file: put it in ~/.pgpass (a line {}:{}:{}:{}:PASSWORD, chmod 0600), or $PGPASSFILE, or $PGPASSWORD; see docs/postgres.md",
            url.user,
            url.host_name(),
            url.port,
            url.dbname,
            url.user
        ),
        None if error.is_closed() || io_cause(error) => format!(
            "cannot reach the server at {server} (is it running, and does the firewall let this host in?); nothing half-written was kept: run the command again when it is reachable"
        ),
        _ => "see the server's log for more".to_string(),
    }
}

/// Column `i` of `row` as a `T`; a column of another type (a facility's migration changed
/// it) is an error naming the column, never a panic.
fn col<'a, T: postgres::types::FromSql<'a>>(
    url: &PgUrl,
    row: &'a postgres::Row,
    i: usize,
) -> Result<T, PgError> {
    row.try_get(i).map_err(|e| {
        let (name, ty) = row
            .columns()
            .get(i)
            .map_or(("?".to_string(), "?".to_string()), |c| {
                (c.name().to_string(), c.type_().to_string())
            });
        let why = std::error::Error::source(&e).map_or(e.to_string(), |s| s.to_string());
        PgError::other(
            url,
            format!("cannot read column {name} (PostgreSQL type {ty}) of the index: {why}"),
            "a migration of the index gave it a type beamdb does not read: give it back the type of beamdb's own migrations/index-postgres",
        )
    })
}

/// Whether the driver refused to connect because the server asked for a password and none
/// was configured (the driver has no typed kind for it, only these words).
fn password_missing(error: &postgres::Error) -> bool {
    let mut cause: Option<&dyn std::error::Error> = Some(error);
    while let Some(c) = cause {
        if c.to_string().contains("password missing") {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Whether the driver's error comes from the network (refused, reset, timed out).
fn io_cause(error: &postgres::Error) -> bool {
    let mut cause = std::error::Error::source(error);
    while let Some(c) = cause {
        if c.is::<std::io::Error>() {
            return true;
        }
        cause = c.source();
    }
    // A connect timeout is the driver's own error, without an io::Error under it.
    error.to_string().contains("timeout") || error.to_string().contains("connecting")
}

/// The open index.
pub struct PgIndex {
    /// In a cell: `postgres::Client` needs `&mut` to send anything, the trait's readers
    /// take `&self`, and an index is used by one thread.
    client: std::cell::RefCell<Client>,
    url: PgUrl,
    extra_columns: Vec<String>,
    numeric_columns: Vec<String>,
}

/// A [`Scalar`] as a parameter of whatever type the server asks for: NULL fits any column,
/// a number fits an integer, float or text column, as SQLite's affinity would take it.
/// Anything else is an error, never the bytes of one type sent as another (the server
/// would read text bytes as a float8). Promoted values go through [`coerce`] first.
#[derive(Debug)]
struct Param<'a>(&'a Scalar);

impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::IsNull;
        let integral = |f: f64| {
            (f.fract() == 0.0 && f.abs() < 9.0e15)
                .then_some(f as i64)
                .ok_or_else(|| format!("{f} is not an integer, for a {ty} column"))
        };
        match (self.0, ty) {
            (Scalar::Null, _) => Ok(IsNull::Yes),
            (Scalar::Int(i), t) if *t == Type::INT8 => i.to_sql(ty, out),
            (Scalar::Int(i), t) if *t == Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
            (Scalar::Int(i), t) if *t == Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
            (Scalar::Int(i), t) if *t == Type::FLOAT8 => (*i as f64).to_sql(ty, out),
            (Scalar::Int(i), t) if *t == Type::FLOAT4 => (*i as f32).to_sql(ty, out),
            (Scalar::Real(f), t) if *t == Type::FLOAT8 => f.to_sql(ty, out),
            (Scalar::Real(f), t) if *t == Type::FLOAT4 => (*f as f32).to_sql(ty, out),
            (Scalar::Real(f), t) if *t == Type::INT8 => integral(*f)?.to_sql(ty, out),
            (Scalar::Real(f), t) if *t == Type::INT4 => {
                i32::try_from(integral(*f)?)?.to_sql(ty, out)
            }
            (Scalar::Int(i), t) if is_text(t) => i.to_string().to_sql(ty, out),
            (Scalar::Real(f), t) if is_text(t) => f.to_string().to_sql(ty, out),
            (Scalar::Text(t), ty) if is_text(ty) => t.to_sql(ty, out),
            (Scalar::Blob(b), t) if *t == Type::BYTEA => b.to_sql(ty, out),
            (Scalar::Blob(b), t) if is_text(t) => {
                String::from_utf8_lossy(b).into_owned().to_sql(ty, out)
            }
            (value, _) => Err(format!("a {} value cannot be sent as {ty}", kind(value)).into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// Whether a parameter of type `ty` takes a string's bytes as they are.
fn is_text(ty: &Type) -> bool {
    [
        Type::TEXT,
        Type::VARCHAR,
        Type::BPCHAR,
        Type::NAME,
        Type::UNKNOWN,
    ]
    .contains(ty)
}

/// Whether [`Param`] binds a value of type `ty` itself; any other column type gets its
/// value as text through a cast in the statement (`$n::text::numeric`).
fn binds_natively(ty: &Type) -> bool {
    is_text(ty)
        || [
            Type::INT2,
            Type::INT4,
            Type::INT8,
            Type::FLOAT4,
            Type::FLOAT8,
            Type::BYTEA,
        ]
        .contains(ty)
}

fn kind(value: &Scalar) -> &'static str {
    match value {
        Scalar::Null => "NULL",
        Scalar::Int(_) => "integer",
        Scalar::Real(_) => "real",
        Scalar::Text(_) => "text",
        Scalar::Blob(_) => "blob",
    }
}

/// A promoted value as a value of its PostgreSQL column's type `ty`, converted where the
/// conversion is exact (what SQLite's affinity would convert: `"42"` into an integer
/// column, `"7.25"` or `9` into a real one, a number into a text one); `Err` says why it
/// cannot be, and the caller indexes NULL and warns. PostgreSQL has no affinity: a value
/// of another type cannot be kept as it is, as SQLite keeps it.
fn coerce(value: Scalar, ty: &Type) -> Result<Scalar, String> {
    let shown = |t: &str| crate::escape::escape(t).into_owned();
    let number = |t: &str| t.trim().parse::<f64>().ok().filter(|f| f.is_finite());
    let integer = |f: f64| (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64);
    let (min, max) = if *ty == Type::INT2 {
        (i64::from(i16::MIN), i64::from(i16::MAX))
    } else if *ty == Type::INT4 {
        (i64::from(i32::MIN), i64::from(i32::MAX))
    } else {
        (i64::MIN, i64::MAX)
    };
    match value {
        Scalar::Null => Ok(Scalar::Null),
        Scalar::Blob(b) if *ty == Type::BYTEA => Ok(Scalar::Blob(b)),
        Scalar::Text(t) if *ty == Type::BYTEA => Ok(Scalar::Blob(t.into_bytes())),
        v if *ty == Type::BYTEA => Err(format!("a {} is not a blob", kind(&v))),
        v @ (Scalar::Int(_) | Scalar::Real(_) | Scalar::Text(_)) if is_text(ty) => Ok(v),
        Scalar::Blob(b) if is_text(ty) => Ok(Scalar::Text(String::from_utf8_lossy(&b).into())),
        v if [Type::INT2, Type::INT4, Type::INT8].contains(ty) => {
            let i = match &v {
                Scalar::Int(i) => Some(*i),
                Scalar::Real(f) => integer(*f),
                Scalar::Text(t) => t
                    .trim()
                    .parse::<i64>()
                    .ok()
                    .or_else(|| number(t).and_then(integer)),
                _ => None,
            };
            match i {
                Some(i) if (min..=max).contains(&i) => Ok(Scalar::Int(i)),
                Some(i) => Err(format!("{i} is out of range for its {ty} column")),
                None => Err(match v {
                    Scalar::Text(t) => format!("`{}` is not an integer", shown(&t)),
                    Scalar::Real(f) => format!("{f} is not a whole number, for its {ty} column"),
                    other => format!("a {} is not an integer", kind(&other)),
                }),
            }
        }
        v if [Type::FLOAT4, Type::FLOAT8].contains(ty) => match v {
            Scalar::Int(i) => Ok(Scalar::Real(i as f64)),
            Scalar::Real(f) => Ok(Scalar::Real(f)),
            Scalar::Text(t) => number(&t)
                .map(Scalar::Real)
                .ok_or_else(|| format!("`{}` is not a number", shown(&t))),
            other => Err(format!("a {} is not a number", kind(&other))),
        },
        // NUMERIC: sent as text and cast by the server; only a number is sent.
        v if *ty == Type::NUMERIC => match v {
            Scalar::Int(i) => Ok(Scalar::Text(i.to_string())),
            Scalar::Real(f) if f.is_finite() => Ok(Scalar::Text(f.to_string())),
            Scalar::Text(t) if number(&t).is_some() => Ok(Scalar::Text(t.trim().to_string())),
            Scalar::Text(t) => Err(format!("`{}` is not a number", shown(&t))),
            other => Err(format!("a {} is not a number", kind(&other))),
        },
        // Another type a facility's own migration chose: its text, cast by the server (a
        // cast it refuses fails the beamtime, which is reported and skipped).
        Scalar::Int(i) => Ok(Scalar::Text(i.to_string())),
        Scalar::Real(f) => Ok(Scalar::Text(f.to_string())),
        Scalar::Text(t) => Ok(Scalar::Text(t)),
        Scalar::Blob(_) => Err(format!("a blob cannot be sent as {ty}")),
    }
}

fn param(value: &Scalar) -> Param<'_> {
    Param(value)
}

/// Connects to the server `url` names.
pub fn connect(url: &PgUrl) -> Result<Client, PgError> {
    config(url)
        .connect(NoTls)
        .map_err(|source| PgError::new(url, "cannot connect", source))
}

/// How a silent network (a partition, a host gone) is noticed: TCP keepalives after a
/// minute idle, and unacknowledged data given up after two minutes. Without them a reindex
/// waits for the kernel's defaults (hours) holding its session lock, and every other
/// reindex of that data root exits 75 meanwhile. A long query sends nothing unacknowledged,
/// so it is not cut.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_RETRIES: u32 = 6;
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(120);

fn config(url: &PgUrl) -> postgres::Config {
    let mut config = postgres::Config::new();
    config
        .keepalives(true)
        .keepalives_idle(KEEPALIVE_IDLE)
        .keepalives_interval(KEEPALIVE_INTERVAL)
        .keepalives_retries(KEEPALIVE_RETRIES)
        .tcp_user_timeout(TCP_USER_TIMEOUT);
    config
        .user(&url.user)
        .dbname(&url.dbname)
        .port(url.port)
        .application_name("beamdb")
        .connect_timeout(
            url.connect_timeout_s
                .map_or(DEFAULT_CONNECT_TIMEOUT, Duration::from_secs),
        );
    match &url.host {
        Host::Tcp(h) => config.host(h),
        Host::Socket(dir) => config.host_path(dir),
    };
    if let Some(password) = url.password() {
        config.password(password.expose());
    }
    config
}

/// The migrations a PostgreSQL index lacks (all of them when it has none), as stems, read
/// without writing anything: `migrate --dry-run` and `--check`.
pub fn pending(
    url: &PgUrl,
    migrations_dir: Option<&std::path::Path>,
) -> Result<Vec<String>, PgError> {
    let files = super::pg_schema::load(migrations_dir)
        .map_err(|why| PgError::other(url, why, "fix [schema] migrations_dir"))?;
    let mut client = connect(url)?;
    type Applied = Vec<(i32, String, String)>;
    let read = |client: &mut Client| -> Result<Applied, postgres::Error> {
        let exists: Option<String> = client
            .query_one("SELECT to_regclass($1)::text", &[&HISTORY_TABLE])?
            .try_get(0)?;
        if exists.is_none() {
            return Ok(Vec::new());
        }
        let rows = client.query(
            &format!(
                "SELECT version, name::text, checksum::text FROM {HISTORY_TABLE} ORDER BY version"
            ),
            &[],
        )?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    };
    let history =
        read(&mut client).map_err(|e| PgError::new(url, "cannot read the index's history", e))?;
    // A version this beamdb lacks, or one it has otherwise: exit 5, as refinery refuses
    // to migrate it.
    if let Some(err) = history
        .iter()
        .find_map(|(v, name, sum)| history_mismatch(url, &files, *v, name, sum))
    {
        return Err(err);
    }
    let applied: Vec<i32> = history.iter().map(|(v, _, _)| *v).collect();
    Ok(files
        .iter()
        .filter(|f| !applied.contains(&f.version))
        .map(|f| f.stem())
        .collect())
}

/// What `initdb`/`migrate` did to a PostgreSQL index: the migrations applied.
/// `migrations_dir` is `[schema] migrations_dir` (its `index-postgres/`), `None` the
/// built-in migrations.
pub fn migrate(
    url: &PgUrl,
    migrations_dir: Option<&std::path::Path>,
) -> Result<Vec<String>, PgError> {
    let files = super::pg_schema::load(migrations_dir)
        .map_err(|why| PgError::other(url, why, "fix [schema] migrations_dir"))?;
    if files.is_empty() {
        return Err(PgError::other(
            url,
            format!(
                "[schema] migrations_dir has no {}/ migrations for a PostgreSQL index",
                super::pg_schema::DIR
            ),
            "run `beamdb make-migrations --target index`, which writes them beside the SQLite ones",
        ));
    }
    let migrations: Vec<refinery::Migration> = files
        .iter()
        .map(|f| {
            refinery::Migration::unapplied(&f.stem(), &f.sql).map_err(|e| {
                PgError::other(
                    url,
                    format!("{}: {e}", f.stem()),
                    "fix the migration's name",
                )
            })
        })
        .collect::<Result<_, _>>()?;
    let mut client = connect(url)?;
    // Two hosts starting at once must not both create the tables: the second waits here,
    // then finds them applied. (The lock ends with the session at the latest.)
    client
        .execute("SELECT pg_advisory_lock($1, 0)", &[&LOCK_NAMESPACE])
        .map_err(|e| PgError::new(url, "cannot take the migration lock", e))?;
    let mut runner = refinery::Runner::new(&migrations)
        .set_grouped(true)
        .set_abort_divergent(true)
        .set_abort_missing(true);
    runner.set_migration_table_name(HISTORY_TABLE);
    let report = runner.run(&mut client);
    let upkeep = match &report {
        Ok(_) => client.batch_execute(&super::pg_schema::search_index_upkeep_sql()),
        Err(_) => Ok(()),
    };
    let _ = client.execute("SELECT pg_advisory_unlock($1, 0)", &[&LOCK_NAMESPACE]);
    upkeep.map_err(|e| PgError::new(url, "cannot update the search indexes", e))?;
    match report {
        Ok(report) => Ok(report
            .applied_migrations()
            .iter()
            .map(|m| m.to_string())
            .collect()),
        Err(e) => {
            // refinery keeps the driver's error as text; a probe says whether the server went.
            if let Err(source) = client.simple_query("SELECT 1") {
                return Err(PgError::new(
                    url,
                    "cannot apply the index migrations",
                    source,
                ));
            }
            let ahead = matches!(
                e.kind(),
                refinery::error::Kind::DivergentVersion(..)
                    | refinery::error::Kind::MissingVersion(..)
            );
            Err(PgError {
                ahead,
                ..PgError::other(
                    url,
                    format!("cannot apply the index migrations: {e}"),
                    if ahead {
                        AHEAD_HINT
                    } else {
                        "if its refinery_schema_history names migrations this beamdb lacks or has otherwise, use the beamdb that migrated it; nothing was changed"
                    },
                )
            })
        }
    }
}

/// The session advisory lock one reindex of one data root holds: a second reindex of the same
/// data root, on any host, is refused (exit 75); reindexes of other data roots run alongside.
pub struct ReindexLock {
    _client: Box<Client>,
}

/// Takes the reindex lock for `data_root`, or `Ok(None)` when another process holds it.
pub fn try_reindex_lock(url: &PgUrl, data_root: &str) -> Result<Option<ReindexLock>, PgError> {
    let mut client = connect(url)?;
    let key = lock_key(data_root);
    let got: bool = client
        .query_one(
            "SELECT pg_try_advisory_lock($1, $2)",
            &[&LOCK_NAMESPACE, &key],
        )
        .and_then(|row| row.try_get(0))
        .map_err(|source| PgError::new(url, "cannot take the reindex lock", source))?;
    Ok(got.then(|| ReindexLock {
        _client: Box::new(client),
    }))
}

/// The two keys of the advisory lock a reindex of `data_root` (its canonical path) holds.
pub fn reindex_lock_keys(data_root: &str) -> (i32, i32) {
    (LOCK_NAMESPACE, lock_key(data_root))
}

/// A stable 31-bit key for `text` (FNV-1a), above the fixed keys.
fn lock_key(text: &str) -> i32 {
    let hash = text.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    (hash & 0x7fff_fff0) as i32 | 0x10
}

impl PgIndex {
    /// Connects; a read-write open first applies what migrations are pending.
    pub fn open(
        url: &PgUrl,
        access: Access,
        migrations_dir: Option<&std::path::Path>,
    ) -> Result<PgIndex, IndexError> {
        if access == Access::ReadWrite {
            migrate(url, migrations_dir)?;
        }
        let client = connect(url)?;
        let mut index = PgIndex {
            client: std::cell::RefCell::new(client),
            url: url.clone(),
            extra_columns: Vec::new(),
            numeric_columns: Vec::new(),
        };
        let core = core_run_columns();
        let rows = index
            .client
            .get_mut()
            .query(
                "SELECT column_name::text, data_type::text FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = 'runs_index'
                 ORDER BY ordinal_position",
                &[],
            )
            .map_err(|e| index.err("cannot read the index's columns", e))?;
        if rows.is_empty() {
            return Err(IndexError::Postgres(PgError::other(
                url,
                "the database has no beamdb index yet (no runs_index table)",
                "run `beamdb initdb` or `beamdb reindex` with this [index] url",
            )));
        }
        for row in rows {
            let name: String = col(url, &row, 0)?;
            let kind: String = col(url, &row, 1)?;
            if core.contains(&name) {
                continue;
            }
            if matches!(
                kind.as_str(),
                "bigint" | "integer" | "smallint" | "double precision" | "real" | "numeric"
            ) {
                index.numeric_columns.push(name.clone());
            }
            index.extra_columns.push(name);
        }
        Ok(index)
    }

    fn err(&self, what: &str, source: postgres::Error) -> IndexError {
        IndexError::Postgres(PgError::new(&self.url, what, source))
    }
}

/// `s` with each glob character made literal for LIKE (`\` is LIKE's escape).
fn like_literal(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// SQLite's GLOB pattern as a PostgreSQL regular expression matching the whole text, so a
/// pattern finds in PostgreSQL what it finds in SQLite: `*`, `?`, `[...]` and `[^...]`,
/// case-sensitive.
pub fn glob_to_regex(glob: &str) -> String {
    let mut out = String::from("^");
    let chars: Vec<char> = glob.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            '[' => {
                // A class runs to the next `]` that is not its first character.
                let start = i + 1;
                let mut j = start;
                if chars.get(j) == Some(&'^') {
                    j += 1;
                }
                if chars.get(j) == Some(&']') {
                    j += 1;
                }
                while j < chars.len() && chars[j] != ']' {
                    j += 1;
                }
                if j >= chars.len() {
                    // No closing bracket: SQLite's GLOB then matches nothing.
                    return "[^\\s\\S]".to_string();
                }
                out.push('[');
                // Every `[` is literal, the first too (`[[:x:]]` is the class `[`, `:`,
                // `x` in SQLite; unescaped, PostgreSQL reads a POSIX class name).
                for c in &chars[start..j] {
                    if *c == '\\' || *c == '[' {
                        out.push('\\');
                    }
                    out.push(*c);
                }
                out.push(']');
                i = j;
            }
            c if c.is_alphanumeric() || c == ' ' => out.push(c),
            c => {
                out.push('\\');
                out.push(c);
            }
        }
        i += 1;
    }
    out.push('$');
    out
}

/// The words of `text` as SQLite's FTS5 `unicode61` tokenizer reads them: runs of letters and
/// digits, lower-cased. `--text` matches these, in PostgreSQL as in SQLite.
pub fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// What `beamdb_run_text.body` holds for a run: its tokens between spaces, so that a word or
/// phrase is found as ` word ` and a prefix as ` pre`.
fn text_body(metadata: &str) -> String {
    let mut body = String::from(" ");
    for token in tokens(&searchable_text(metadata)) {
        body.push_str(&token);
        body.push(' ');
    }
    body
}

/// The LIKE patterns `--text` words become: each word a phrase of its tokens (as FTS5 reads a
/// quoted string), a trailing `*` a prefix. A word with no token (`--text -`) matches nothing,
/// as in FTS5.
fn text_patterns(words: &str) -> Vec<String> {
    words
        .split_whitespace()
        .map(|w| {
            let (word, prefix) = match w.strip_suffix('*') {
                Some(stem) if !stem.is_empty() => (stem, true),
                _ => (w, false),
            };
            let phrase = tokens(word).join(" ");
            if phrase.is_empty() {
                // Matches nothing: the body never holds two spaces in a row.
                return "%  %".to_string();
            }
            let end = if prefix { "%" } else { " %" };
            format!("% {}{end}", like_literal(&phrase))
        })
        .collect()
}

/// `k.text {op} {mark}` in the C collation, with the prefix the index holds: for equal
/// and ordered texts the first 256 characters compare the same way or equal (a prefix of
/// a smaller text is not greater), so the index narrows and the whole text decides.
fn text_side(op: &str, mark: &str) -> String {
    let prefix = |cmp: &str| {
        format!(
            "left(k.text, 256) COLLATE \"C\" {cmp} left({mark}, 256) AND k.text COLLATE \"C\" {op} {mark}"
        )
    };
    match op {
        "=" => prefix("="),
        "<" | "<=" => prefix("<="),
        ">" | ">=" => prefix(">="),
        _ => format!("k.text COLLATE \"C\" {op} {mark}"),
    }
}

fn sql_op(condition: &Condition) -> &'static str {
    match (&condition.value, condition.op) {
        (ConditionValue::Glob(_), CompareOp::Ne) => "!~",
        (ConditionValue::Glob(_), _) => "~",
        _ => condition.sql_op(),
    }
}

impl Index for PgIndex {
    fn location(&self) -> String {
        self.url.to_string()
    }

    fn has_no_runs(&self) -> Result<bool, IndexError> {
        let (_, runs) = self.counts()?;
        Ok(runs == 0)
    }

    fn has_text(&self) -> bool {
        // The search tables are in the first migration.
        true
    }

    fn signature(&self, sources: &BTreeMap<String, String>) -> Result<String, IndexError> {
        let mut client = self.client_mut();
        let version: Option<i32> = client
            .query_one(&format!("SELECT max(version) FROM {HISTORY_TABLE}"), &[])
            .and_then(|r| r.try_get(0))
            .map_err(|e| self.err("cannot read the index's version", e))?;
        let mut text = format!("pg-v{}", version.unwrap_or(0));
        for column in &self.extra_columns {
            let source = sources.get(column).map_or(column.as_str(), String::as_str);
            text.push_str(&format!(";{column}={source}"));
        }
        let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        Ok(format!("{hash:016x}"))
    }

    fn clear_text(&mut self) -> Result<(), IndexError> {
        // Keyed by uid, the search rows cannot go stale as SQLite's rowid-keyed ones can;
        // they are rewritten with each beamtime anyway.
        Ok(())
    }

    fn extra_columns(&self) -> &[String] {
        &self.extra_columns
    }

    fn watermarks(&self) -> Result<BTreeMap<String, Option<String>>, IndexError> {
        let mut client = self.client_mut();
        let rows = client
            .query("SELECT id, watermark FROM beamtimes", &[])
            .map_err(|e| self.err("cannot read the index", e))?;
        rows.iter()
            .map(|r| Ok((col(&self.url, r, 0)?, col(&self.url, r, 1)?)))
            .collect()
    }

    fn replace_beamtime(
        &mut self,
        entry: &BeamtimeEntry,
        now: f64,
    ) -> Result<Replaced, IndexError> {
        let what = format!("cannot replace beamtime {}", entry.id);
        let extra = self.extra_columns.clone();
        let result = replace_in_transaction(self.client.get_mut(), entry, now, &extra);
        result.map_err(|e| self.err(&what, e))
    }

    fn forget_beamtimes_except(
        &mut self,
        keep: &[String],
        under: &str,
    ) -> Result<Vec<String>, IndexError> {
        // `under/` and not `under`: /data/beamtimes must not claim /data/beamtimes2/....
        let prefix = format!("{}/%", like_literal(under.trim_end_matches('/')));
        let result = (|| {
            let mut tx = self.client.get_mut().transaction()?;
            let rows = tx.query(
                "SELECT id FROM beamtimes WHERE db_path LIKE $1 AND NOT (id = ANY($2)) ORDER BY id",
                &[&prefix, &keep],
            )?;
            let gone: Vec<String> = rows
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?;
            for id in &gone {
                tx.execute(
                    "SELECT pg_advisory_xact_lock($1, $2)",
                    &[&LOCK_NAMESPACE, &lock_key(id)],
                )?;
                tx.execute("DELETE FROM beamtimes WHERE id = $1", &[id])?;
            }
            tx.commit()?;
            Ok(gone)
        })();
        result.map_err(|e| self.err("cannot remove beamtimes that are gone", e))
    }

    fn clear_watermarks(&mut self, ids: &[String]) -> Result<(), IndexError> {
        let result = self.client.get_mut().execute(
            "UPDATE beamtimes SET watermark = NULL WHERE id = ANY($1)",
            &[&ids],
        );
        result
            .map(|_| ())
            .map_err(|e| self.err("cannot clear the watermarks", e))
    }

    fn forget_unreferenced_researchers(&mut self) -> Result<usize, IndexError> {
        let result = (|| {
            let mut tx = self.client.get_mut().transaction()?;
            tx.execute(
                "SELECT pg_advisory_xact_lock($1, $2)",
                &[&LOCK_NAMESPACE, &RESEARCHERS_LOCK],
            )?;
            let n = tx.execute(
                "DELETE FROM researchers WHERE id NOT IN (
                   SELECT researcher_id FROM runs_index WHERE researcher_id IS NOT NULL
                   UNION SELECT researcher_id FROM beamtimes WHERE researcher_id IS NOT NULL)",
                &[],
            )?;
            tx.commit()?;
            Ok(n as usize)
        })();
        result.map_err(|e| self.err("cannot remove unreferenced researchers", e))
    }

    fn query_runs(&self, filter: &RunFilter) -> Result<Vec<RunRow>, IndexError> {
        let (sql, values) = self.query_sql(filter);
        let params: Vec<Param<'_>> = values.iter().map(param).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        let mut client = self.client_mut();
        let rows = client
            .query(&sql, &refs)
            .map_err(|e| self.err("cannot query the index", e))?;
        rows.iter()
            .map(|row| {
                let mut extra = BTreeMap::new();
                for (i, column) in self.extra_columns.iter().enumerate() {
                    extra.insert(column.clone(), scalar_at(row, 11 + i));
                }
                let url = &self.url;
                Ok(RunRow {
                    beamtime: col(url, row, 0)?,
                    run: IndexedRun {
                        uid: col(url, row, 1)?,
                        sample_name: col(url, row, 2)?,
                        plan_name: col(url, row, 3)?,
                        scan_id: col(url, row, 4)?,
                        time_start: col(url, row, 5)?,
                        time_stop: col(url, row, 6)?,
                        exit_status: col(url, row, 7)?,
                        num_events: col(url, row, 8)?,
                        researcher: col(url, row, 9)?,
                        metadata: col(url, row, 10)?,
                        extra,
                    },
                })
            })
            .collect()
    }

    fn runs_with_prefix(
        &self,
        query: &str,
        limit: usize,
    ) -> Result<Vec<(String, String)>, IndexError> {
        let pattern = format!("{}%", like_literal(query));
        let limit = limit as i64;
        let mut this = self.client_mut();
        let rows = this
            .query(
                "SELECT uid, beamtime_id FROM runs_index WHERE uid LIKE $1 ORDER BY uid COLLATE \"C\" LIMIT $2",
                &[&pattern, &limit],
            )
            .map_err(|e| self.err("cannot read the index", e))?;
        rows.iter()
            .map(|r| Ok((col(&self.url, r, 0)?, col(&self.url, r, 1)?)))
            .collect()
    }

    fn all_run_uids(&self) -> Result<Vec<(String, String)>, IndexError> {
        let mut this = self.client_mut();
        let rows = this
            .query("SELECT uid, beamtime_id FROM runs_index", &[])
            .map_err(|e| self.err("cannot read the index", e))?;
        rows.iter()
            .map(|r| Ok((col(&self.url, r, 0)?, col(&self.url, r, 1)?)))
            .collect()
    }

    fn beamtime_runs(&self) -> Result<Vec<IndexedBeamtime>, IndexError> {
        let mut this = self.client_mut();
        let rows = this
            .query(
                "SELECT b.id, b.watermark, coalesce(b.num_runs, 0),
                        (SELECT count(*) FROM runs_index r WHERE r.beamtime_id = b.id)
                 FROM beamtimes b ORDER BY b.id COLLATE \"C\"",
                &[],
            )
            .map_err(|e| self.err("cannot read the index", e))?;
        let url = &self.url;
        rows.iter()
            .map(|r| {
                Ok(IndexedBeamtime {
                    id: col(url, r, 0)?,
                    watermark: col(url, r, 1)?,
                    num_runs: col(url, r, 2)?,
                    indexed_runs: col(url, r, 3)?,
                })
            })
            .collect()
    }

    fn counts(&self) -> Result<(i64, i64), IndexError> {
        let mut this = self.client_mut();
        let row = this
            .query_one(
                "SELECT (SELECT count(*) FROM beamtimes), (SELECT count(*) FROM runs_index)",
                &[],
            )
            .map_err(|e| self.err("cannot read the index", e))?;
        Ok((col(&self.url, &row, 0)?, col(&self.url, &row, 1)?))
    }
}

/// A promoted column's value, whatever its PostgreSQL type.
fn scalar_at(row: &postgres::Row, i: usize) -> Scalar {
    let column = &row.columns()[i];
    let ty = column.type_();
    let got = if *ty == Type::INT8 {
        row.try_get::<_, Option<i64>>(i).map(|v| v.map(Scalar::Int))
    } else if *ty == Type::INT4 {
        row.try_get::<_, Option<i32>>(i)
            .map(|v| v.map(|n| Scalar::Int(i64::from(n))))
    } else if *ty == Type::FLOAT8 {
        row.try_get::<_, Option<f64>>(i)
            .map(|v| v.map(Scalar::Real))
    } else if *ty == Type::BYTEA {
        row.try_get::<_, Option<Vec<u8>>>(i)
            .map(|v| v.map(Scalar::Blob))
    } else {
        row.try_get::<_, Option<String>>(i)
            .map(|v| v.map(Scalar::Text))
    };
    got.ok().flatten().unwrap_or(Scalar::Null)
}

fn replace_in_transaction(
    client: &mut Client,
    entry: &BeamtimeEntry,
    now: f64,
    extra_columns: &[String],
) -> Result<Replaced, postgres::Error> {
    let mut tx = client.transaction()?;
    // Two writers of one beamtime (two hosts that both see it) take turns; the researcher
    // clean-up waits for every replacement in flight.
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2), pg_advisory_xact_lock_shared($1, $3)",
        &[&LOCK_NAMESPACE, &lock_key(&entry.id), &RESEARCHERS_LOCK],
    )?;
    let mut replaced = Replaced::default();
    let mut researcher_ids = BTreeMap::new();
    for researcher in &entry.researchers {
        researcher_ids.insert(
            researcher.name.clone(),
            upsert_researcher(&mut tx, researcher)?,
        );
    }
    let id_of = |name: &Option<String>| name.as_ref().and_then(|n| researcher_ids.get(n).copied());
    let (time_start, time_stop) = entry.time_span();
    let num_runs = entry.runs.len() as i64;
    tx.execute(
        "INSERT INTO beamtimes (id, researcher_id, db_path, time_start, time_stop, num_runs, watermark, indexed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (id) DO UPDATE SET
           researcher_id = excluded.researcher_id, db_path = excluded.db_path,
           time_start = excluded.time_start, time_stop = excluded.time_stop,
           num_runs = excluded.num_runs, watermark = excluded.watermark,
           indexed_at = excluded.indexed_at",
        &[
            &entry.id,
            &id_of(&entry.researcher),
            &entry.db_path,
            &time_start,
            &time_stop,
            &num_runs,
            &entry.watermark,
            &now,
        ],
    )?;
    // The search rows go with their runs (ON DELETE CASCADE).
    tx.execute(
        "DELETE FROM runs_index WHERE beamtime_id = $1",
        &[&entry.id],
    )?;

    let columns: Vec<String> = core_run_columns()
        .iter()
        .chain(extra_columns.iter())
        .cloned()
        .collect();
    let quoted: Vec<String> = columns.iter().map(|c| crate::render::ident(c)).collect();
    // Text that is not JSON (a hand-edited beamtime) is kept as NULL rather than failing the
    // beamtime, as in SQLite: the cast is done here, where serde_json already checked it.
    let placeholders: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if c == METADATA_COLUMN {
                format!("${}::text::jsonb", i + 1)
            } else {
                format!("${}", i + 1)
            }
        })
        .collect();
    let insert_sql = |placeholders: &[String]| {
        format!(
            "INSERT INTO runs_index ({}) VALUES ({}) ON CONFLICT (uid) DO NOTHING",
            quoted.join(", "),
            placeholders.join(", ")
        )
    };
    let mut insert = tx.prepare(&insert_sql(&placeholders))?;
    // The columns' own types, as the server inferred them from the statement.
    let types: Vec<Type> = insert.params().to_vec();
    let mut placeholders = placeholders;
    let mut cast = false;
    for (i, ty) in types.iter().enumerate() {
        if !binds_natively(ty) && columns[i] != METADATA_COLUMN {
            placeholders[i] = format!(
                "${}::text::{}.{}",
                i + 1,
                crate::render::ident(ty.schema()),
                crate::render::ident(ty.name())
            );
            cast = true;
        }
    }
    if cast {
        insert = tx.prepare(&insert_sql(&placeholders))?;
    }
    let owner = tx.prepare("SELECT beamtime_id FROM runs_index WHERE uid = $1")?;
    let text = tx.prepare(&format!(
        "INSERT INTO {TEXT_TABLE} (uid, body) VALUES ($1, $2)"
    ))?;
    let keys = tx.prepare(&format!(
        "INSERT INTO {KEYS_TABLE} (uid, key, num, text) SELECT $1, k, n, t FROM unnest($2::text[], $3::float8[], $4::text[]) AS u(k, n, t)"
    ))?;
    for run in &entry.runs {
        let researcher_id = id_of(&run.researcher);
        let mut values: Vec<Scalar> = core_run_columns()
            .iter()
            .map(|c| core_value(c, run, &entry.id, researcher_id))
            .collect();
        for column in extra_columns {
            let value = run.extra.get(column).cloned().unwrap_or(Scalar::Null);
            let value = match coerce(value, &types[values.len()]) {
                Ok(value) => value,
                Err(why) => {
                    replaced.nulled.push((run.uid.clone(), column.clone(), why));
                    Scalar::Null
                }
            };
            values.push(value);
        }
        // Only valid JSON goes into the JSONB column, and without \u0000, which jsonb
        // refuses (text cannot hold NUL): those strings lose their NUL characters.
        if let Some(i) = columns.iter().position(|c| c == METADATA_COLUMN)
            && let Scalar::Text(t) = &values[i]
        {
            values[i] = match serde_json::from_str::<serde_json::Value>(t) {
                Err(_) => Scalar::Null,
                Ok(_) if !t.contains("\\u0000") => values[i].clone(),
                Ok(mut doc) => {
                    strip_nul(&mut doc);
                    Scalar::Text(doc.to_string())
                }
            };
        }
        // JSON text may hold \u0000, which PostgreSQL's text and jsonb refuse.
        for value in &mut values {
            if let Scalar::Text(t) = value
                && t.contains('\0')
            {
                *t = t.replace('\0', "");
            }
        }
        let params: Vec<Param<'_>> = values.iter().map(param).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        if tx.execute(&insert, &refs)? == 0 {
            let other: String = tx.query_one(&owner, &[&run.uid])?.try_get(0)?;
            replaced.duplicates.push((run.uid.clone(), other));
            continue;
        }
        let Some(metadata) = run.metadata.as_deref() else {
            continue;
        };
        tx.execute(&text, &[&run.uid, &text_body(metadata).replace('\0', "")])?;
        let mut names = Vec::new();
        let mut nums: Vec<Option<f64>> = Vec::new();
        let mut texts: Vec<Option<String>> = Vec::new();
        for (key, value) in scalar_keys(metadata) {
            let (num, txt) = match value {
                Scalar::Text(t) => (None, Some(t.replace('\0', ""))),
                Scalar::Real(f) => (Some(f), None),
                Scalar::Int(i) => (Some(i as f64), None),
                Scalar::Null | Scalar::Blob(_) => continue,
            };
            names.push(key.replace('\0', ""));
            nums.push(num);
            texts.push(txt);
        }
        if !names.is_empty() {
            tx.execute(&keys, &[&run.uid, &names, &nums, &texts])?;
        }
    }
    tx.commit()?;
    Ok(replaced)
}

/// `doc` without NUL characters in its strings and keys.
fn strip_nul(doc: &mut serde_json::Value) {
    match doc {
        serde_json::Value::String(s) => *s = s.replace('\0', ""),
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_nul),
        serde_json::Value::Object(map) => {
            let entries: Vec<(String, serde_json::Value)> = std::mem::take(map)
                .into_iter()
                .map(|(k, mut v)| {
                    strip_nul(&mut v);
                    (k.replace('\0', ""), v)
                })
                .collect();
            map.extend(entries);
        }
        _ => {}
    }
}

fn upsert_researcher(
    tx: &mut postgres::Transaction<'_>,
    r: &Researcher,
) -> Result<i64, postgres::Error> {
    let row = tx.query_one(
        "INSERT INTO researchers (name, email, orcid, affiliation) VALUES ($1, $2, $3, $4)
         ON CONFLICT (name) DO UPDATE SET
           email = COALESCE(excluded.email, researchers.email),
           orcid = COALESCE(excluded.orcid, researchers.orcid),
           affiliation = COALESCE(excluded.affiliation, researchers.affiliation)
         RETURNING id",
        &[&r.name, &r.email, &r.orcid, &r.affiliation],
    )?;
    row.try_get(0)
}

impl PgIndex {
    fn client_mut(&self) -> std::cell::RefMut<'_, Client> {
        self.client.borrow_mut()
    }

    /// The SELECT for `filter` and its parameters (every value from the user is a parameter;
    /// only column names beamdb read from the database itself are spliced in, quoted).
    fn query_sql(&self, filter: &RunFilter) -> (String, Vec<Scalar>) {
        let mut clauses: Vec<String> = Vec::new();
        let mut values: Vec<Scalar> = Vec::new();
        let bind = |value: Scalar, values: &mut Vec<Scalar>| {
            values.push(value);
            format!("${}", values.len())
        };
        if !filter.beamtimes.is_empty() {
            let marks: Vec<String> = filter
                .beamtimes
                .iter()
                .map(|b| bind(Scalar::Text(b.clone()), &mut values))
                .collect();
            clauses.push(format!("r.beamtime_id IN ({})", marks.join(", ")));
        }
        for (column, pattern) in [
            ("r.sample_name", &filter.sample),
            ("p.name", &filter.researcher),
            ("r.plan_name", &filter.plan),
        ] {
            if let Some(pattern) = pattern {
                if pattern.contains(['*', '?', '[']) {
                    let mark = bind(Scalar::Text(glob_to_regex(pattern)), &mut values);
                    clauses.push(format!("{column} ~ {mark}"));
                } else {
                    let mark = bind(Scalar::Text(pattern.clone()), &mut values);
                    clauses.push(format!("{column} = {mark}"));
                }
            }
        }
        if let Some(since) = filter.since {
            let mark = bind(Scalar::Real(since), &mut values);
            clauses.push(format!("r.time_start >= {mark}"));
        }
        if let Some(until) = filter.until {
            let mark = bind(Scalar::Real(until), &mut values);
            clauses.push(format!("r.time_start < {mark}"));
        }
        match filter.exit_status.as_deref() {
            None => {}
            Some("incomplete") => clauses.push("r.exit_status IS NULL".into()),
            Some(status) => {
                let mark = bind(Scalar::Text(status.to_string()), &mut values);
                clauses.push(format!("r.exit_status = {mark}"));
            }
        }
        for condition in &filter.conditions {
            let op = sql_op(condition);
            let value = match &condition.value {
                ConditionValue::Number(n) => Scalar::Real(*n),
                ConditionValue::Text(t) => Scalar::Text(t.clone()),
                ConditionValue::Glob(g) => Scalar::Text(glob_to_regex(g)),
            };
            let numeric = matches!(condition.value, ConditionValue::Number(_));
            match self.promoted_target(condition, &filter.promoted) {
                Some((column, column_numeric)) => {
                    let mark = bind(value, &mut values);
                    if numeric {
                        // As float8 on both sides, as SQLite compares numbers: 299.5 against
                        // an INTEGER (bigint) column must not be bound as a bigint.
                        clauses.push(format!("{column}::float8 {op} {mark}::float8"));
                    } else if column_numeric {
                        clauses.push(format!("{column} {op} {mark}"));
                    } else {
                        clauses.push(format!("{column} COLLATE \"C\" {op} {mark}"));
                    }
                }
                None => {
                    let key = bind(Scalar::Text(condition.key.join(".")), &mut values);
                    let mark = bind(value, &mut values);
                    let side = if numeric {
                        format!("k.num {op} {mark}")
                    } else {
                        text_side(op, &mark)
                    };
                    // The indexes hold the first 256 characters (see
                    // pg_schema::search_index_upkeep_sql): narrow by them, then compare
                    // the whole key.
                    clauses.push(format!(
                        "EXISTS (SELECT 1 FROM {KEYS_TABLE} k WHERE k.uid = r.uid AND left(k.key, 256) = left({key}, 256) AND k.key = {key} AND {side})"
                    ));
                }
            }
        }
        if let Some(words) = filter.text.as_deref() {
            for pattern in text_patterns(words) {
                let mark = bind(Scalar::Text(pattern), &mut values);
                clauses.push(format!(
                    "EXISTS (SELECT 1 FROM {TEXT_TABLE} t WHERE t.uid = r.uid AND t.body LIKE {mark})"
                ));
            }
        }
        let extra: String = self
            .extra_columns
            .iter()
            .map(|c| format!(", r.{}", crate::render::ident(c)))
            .collect();
        let mut sql = format!(
            "SELECT r.beamtime_id, r.uid, r.sample_name, r.plan_name, r.scan_id, r.time_start,
                    r.time_stop, r.exit_status, r.num_events, p.name, r.metadata::text{extra}
             FROM runs_index r LEFT JOIN researchers p ON p.id = r.researcher_id"
        );
        if !clauses.is_empty() {
            sql.push_str(&format!(" WHERE {}", clauses.join(" AND ")));
        }
        sql.push_str(" ORDER BY r.time_start DESC NULLS LAST, r.uid COLLATE \"C\"");
        if let Some(limit) = filter.limit {
            sql.push_str(&format!(" LIMIT {limit}"));
        }
        (sql, values)
    }

    /// The promoted column a condition compares (quoted), and whether it is numeric; as
    /// in SQLite, a numeric comparison never goes to a text column.
    fn promoted_target(
        &self,
        condition: &Condition,
        promoted: &BTreeMap<String, String>,
    ) -> Option<(String, bool)> {
        let key = condition.key.join(".");
        let column = promoted
            .get(&key)
            .filter(|c| self.extra_columns.contains(c))
            .or_else(|| {
                self.extra_columns
                    .iter()
                    .find(|c| **c == key && !promoted.values().any(|p| p == *c))
            })?;
        let numeric_column = self.numeric_columns.contains(column);
        let numeric_value = matches!(condition.value, ConditionValue::Number(_));
        if numeric_value && !numeric_column {
            return None;
        }
        if !numeric_value && numeric_column {
            // A text value against a number column: SQLite compares by affinity; here the
            // RunStart's keys answer, where the value kept its type.
            return None;
        }
        Some((
            format!("r.{}", crate::render::ident(column)),
            numeric_column,
        ))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn connections_notice_a_dead_network() {
        // Review #22: a partition mid-reindex must not hang for hours holding the lock.
        let url = crate::pgurl::PgUrl::parse_alone("postgresql://u@db:5432/idx").unwrap();
        let config = super::config(&url);
        assert!(config.get_keepalives());
        assert!(config.get_keepalives_idle() <= std::time::Duration::from_secs(60));
        assert!(config.get_keepalives_interval().is_some());
        assert!(config.get_keepalives_retries().is_some());
        assert!(
            config
                .get_tcp_user_timeout()
                .is_some_and(|t| *t <= std::time::Duration::from_secs(300))
        );
    }

    use super::*;

    #[test]
    fn globs_become_anchored_regexes() {
        assert_eq!(glob_to_regex("P3HT*"), "^P3HT.*$");
        assert_eq!(glob_to_regex("a?c"), "^a.c$");
        assert_eq!(glob_to_regex("x.y+(z)"), "^x\\.y\\+\\(z\\)$");
        assert_eq!(glob_to_regex("[a-c]1"), "^[a-c]1$");
        assert_eq!(glob_to_regex("[^a]"), "^[^a]$");
        assert_eq!(glob_to_regex("[]]"), "^[]]$");
        assert_eq!(glob_to_regex("[abc"), "[^\\s\\S]");
        // Review #18: a `[` first in a class is literal too (`[:x:]` would be a POSIX
        // class name to PostgreSQL, an error): the class is `[`, `:`, `x`, then `]*`.
        assert_eq!(glob_to_regex("[[:x:]]*"), "^[\\[:x:]\\].*$");
        assert_eq!(glob_to_regex("[^[]"), "^[^\\[]$");
    }

    #[test]
    fn text_words_are_phrases_of_fts5_tokens() {
        assert_eq!(tokens("P3HT anneal-2, ÉTÉ"), ["p3ht", "anneal", "2", "été"]);
        assert_eq!(text_patterns("P3HT anne*"), ["% p3ht %", "% anne%"]);
        assert_eq!(text_patterns("p-1"), ["% p 1 %"]);
        assert_eq!(text_patterns("100%_x"), ["% 100 x %"]);
        assert_eq!(text_patterns("-"), ["%  %"]);
        assert_eq!(text_body(r#"{"a": "P3HT film", "n": 3}"#), " p3ht film 3 ");
    }
}
