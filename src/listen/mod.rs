//! `listen`: runs from bluesky's 0MQ proxy, stored as they end, through the same ingest as files.
//!
//! Two threads. The receiver reads the socket without pause (a subscriber that stops reading
//! makes the proxy drop messages): `zmtp` → `wire` → `router`, which appends each document to
//! its run's spool file. The lander (the caller's thread) takes the router's jobs and feeds
//! each spool through [`Ingester`], so a run lands exactly as `beamdb ingest` of that file
//! would: whole or not at all, with every check ingest makes. Frames are therefore written
//! when a run ends (or falls silent), not while it runs.

pub mod router;
pub mod wire;
pub mod zmtp;

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::beamtime::{self, Ensured};
use crate::db::{self, Access};
use crate::frames::FrameStore;
use crate::ingest::rootmap::RootMap;
use crate::ingest::run::Problem;
use crate::ingest::{Ingester, Options, Outcome, Report};
use crate::layout::Layout;
use crate::lock;
use crate::migrations::files::MigrationFile;
use crate::settings::{Compression, SqliteSettings};
use router::{BeamtimeChoice, Job, Landing, Router};
use zmtp::{Received, Subscriber};

/// Everything `listen` needs, resolved.
pub struct Config {
    /// `host:port` of the proxy's output.
    pub addr: String,
    pub prefix: Vec<u8>,
    pub beamtime: BeamtimeChoice,
    pub incomplete_after: Duration,
    pub layout: Layout,
    pub migrations: Vec<MigrationFile>,
    pub sqlite: SqliteSettings,
    /// `[frames]`: where the beamtimes' frame stores are.
    pub frames: crate::settings::FramesSettings,
    pub roots: RootMap,
    pub compression: Compression,
    /// The model's promoted metadata columns and the RunStart keys that fill them.
    pub promoted: Vec<crate::schema::declared::Promoted>,
}

/// A run whose spool is gone for good after this much silence (its last state is stored).
pub const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);
/// How long the receiver blocks on the socket before looking at the clock and the signals.
const TICK: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Malformed messages: the first is logged, then at most one summary per this interval.
const MALFORMED_EVERY: Duration = Duration::from_secs(60);

/// What the caller hears about, to print.
#[derive(Debug)]
pub enum Event {
    Listening {
        addr: String,
        reloaded: usize,
    },
    Connected {
        addr: String,
    },
    /// The proxy cannot be reached (or went away); the attempt number, and when next.
    Unreachable {
        error: String,
        attempt: u32,
        retry_in: Duration,
    },
    /// A message that is not a document, or a document that belongs to no run. `more`: how
    /// many were not logged since the last one.
    Malformed {
        what: String,
        more: u64,
    },
    /// Pickled documents: said once.
    Pickled {
        what: String,
    },
    /// A spool left by an earlier listener that cannot be read.
    BadSpool {
        what: String,
    },
    BeamtimeCreated {
        id: String,
        path: PathBuf,
    },
    BeamtimeMigrated {
        id: String,
        applied: Vec<String>,
    },
    Run(RunLine),
}

/// One run's outcome: the one log line per run.
#[derive(Debug)]
pub enum RunLine {
    Landed {
        beamtime: String,
        uid: String,
        events: usize,
        frames: u64,
        bytes: u64,
        complete: bool,
        replaced: bool,
        lost: Option<String>,
    },
    Unchanged {
        beamtime: String,
        uid: String,
        complete: bool,
    },
    Rejected {
        uid: String,
        why: String,
        /// Where the run's documents were kept, to ingest by hand once the cause is fixed.
        kept: Option<PathBuf>,
    },
}

enum Msg {
    Job(Job),
    Event(Event),
    /// Last: the spool locks, held by the lander until the last run has landed.
    Claims(Vec<router::Claim>),
}

/// Listens until `stop` is set; then stores the open runs as incomplete and returns. Fails
/// at once when another listener holds the `--beamtime`'s spool folder.
pub fn run(
    config: Config,
    stop: Arc<AtomicBool>,
    report: &mut dyn FnMut(Event),
) -> Result<(), lock::LockError> {
    let (tx, rx) = mpsc::channel();
    let mut router = Router::new(
        config.layout.clone(),
        config.beamtime.clone(),
        config.incomplete_after,
        FORGET_AFTER,
    );
    router.claim_fixed()?;
    let (reloaded, problems) = router.reload(Instant::now());
    for what in problems {
        report(Event::BadSpool { what });
    }
    report(Event::Listening {
        addr: config.addr.clone(),
        reloaded: router.open_runs() + reloaded.len(),
    });
    let lander = Lander { config: &config };
    for job in reloaded {
        lander.land(job, report);
    }
    let addr = config.addr.clone();
    let topic = {
        let mut t = config.prefix.clone();
        t.push(b' ');
        t
    };
    let prefix = config.prefix.clone();
    let mut held = Vec::new();
    std::thread::scope(|scope| {
        let receiver_stop = stop.clone();
        scope.spawn(move || receive(&addr, &topic, &prefix, router, &receiver_stop, &tx));
        for msg in rx {
            match msg {
                Msg::Job(job) => lander.land(job, report),
                Msg::Event(event) => report(event),
                Msg::Claims(claims) => held.extend(claims),
            }
        }
    });
    drop(held);
    Ok(())
}

/// The receiver thread: socket → router → spool; jobs and events to the lander.
fn receive(
    addr: &str,
    topic: &[u8],
    prefix: &[u8],
    mut router: Router,
    stop: &AtomicBool,
    tx: &mpsc::Sender<Msg>,
) {
    let send = |m: Msg| {
        // The lander only goes away after this thread ends.
        let _ = tx.send(m);
    };
    let mut malformed = RateLimit::default();
    let mut pickled = false;
    let mut attempt = 0u32;
    let mut last_tick = Instant::now();
    'connect: while !stop.load(Ordering::Relaxed) {
        let mut sub = match Subscriber::connect(addr, topic, TICK) {
            Ok(sub) => {
                attempt = 0;
                send(Msg::Event(Event::Connected {
                    addr: addr.to_string(),
                }));
                sub
            }
            Err(e) => {
                attempt = attempt.saturating_add(1);
                let retry_in = backoff(attempt);
                // Logged at attempts 1, 2, 4, 8, …: a proxy down for a night is a few lines.
                if attempt.is_power_of_two() {
                    send(Msg::Event(Event::Unreachable {
                        error: e.to_string(),
                        attempt,
                        retry_in,
                    }));
                }
                let until = Instant::now() + retry_in;
                while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    tick(&mut router, &mut last_tick, &send);
                }
                continue 'connect;
            }
        };
        while !stop.load(Ordering::Relaxed) {
            tick(&mut router, &mut last_tick, &send);
            let frames = match sub.recv() {
                Ok(None) => continue,
                Ok(Some(Received::Message(frames))) => frames,
                Ok(Some(Received::Oversized(size))) => {
                    let what = format!(
                        "a message of {size} bytes (more than {} MiB) was skipped",
                        zmtp::MAX_MESSAGE >> 20
                    );
                    if let Some(more) = malformed.hit(Instant::now()) {
                        send(Msg::Event(Event::Malformed { what, more }));
                    }
                    continue;
                }
                Err(e) => {
                    router.disconnected();
                    attempt = 1;
                    send(Msg::Event(Event::Unreachable {
                        error: e.to_string(),
                        attempt,
                        retry_in: backoff(attempt),
                    }));
                    std::thread::sleep(backoff(attempt));
                    continue 'connect;
                }
            };
            let problem = match wire::parse(&frames, prefix) {
                Ok(None) => continue,
                Ok(Some((kind, body))) => match router.accept(kind, &body, Instant::now()) {
                    Ok(Some(job)) => {
                        send(Msg::Job(job));
                        continue;
                    }
                    Ok(None) => continue,
                    Err(e) => e.to_string(),
                },
                Err(wire::WireError::Pickled) => {
                    if !pickled {
                        pickled = true;
                        send(Msg::Event(Event::Pickled {
                            what: wire::WireError::Pickled.to_string(),
                        }));
                    }
                    continue;
                }
                Err(e) => e.to_string(),
            };
            if let Some(more) = malformed.hit(Instant::now()) {
                send(Msg::Event(Event::Malformed {
                    what: problem,
                    more,
                }));
            }
        }
    }
    for job in router.shutdown() {
        send(Msg::Job(job));
    }
    send(Msg::Claims(router.take_claims()));
}

fn tick(router: &mut Router, last: &mut Instant, send: &impl Fn(Msg)) {
    let now = Instant::now();
    if now.duration_since(*last) < Duration::from_secs(1) {
        return;
    }
    *last = now;
    for job in router.tick(now) {
        send(Msg::Job(job));
    }
}

fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(200);
    base.saturating_mul(1u32 << attempt.saturating_sub(1).min(6))
        .min(BACKOFF_MAX)
}

/// Lets the first through, then one per [`MALFORMED_EVERY`] with the count of those held back.
#[derive(Default)]
struct RateLimit {
    last: Option<Instant>,
    held: u64,
}

impl RateLimit {
    fn hit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < MALFORMED_EVERY => {
                self.held += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held))
            }
        }
    }
}

struct Lander<'a> {
    config: &'a Config,
}

/// What one pass of a spool through the ingester said.
#[derive(Default)]
struct Pass {
    outcome: Option<Outcome>,
    differs: bool,
}

impl Lander<'_> {
    fn land(&self, job: Job, report: &mut dyn FnMut(Event)) {
        let landing = match job {
            Job::Land(landing) => landing,
            Job::Refuse { uid, why } => {
                report(Event::Run(RunLine::Rejected {
                    uid,
                    why,
                    kept: None,
                }));
                return;
            }
        };
        let line = match self.try_land(&landing, report) {
            Ok(line) => line,
            Err(e) => RunLine::Rejected {
                uid: landing.uid.clone(),
                why: format!(
                    "{}; the run was not stored, nothing of it is half-written (a full disk or a file size limit shows as an I/O error: free space or check the disk); the listener goes on",
                    with_causes(&e)
                ),
                kept: None,
            },
        };
        let line = match line {
            // An open run's spool stays where its next documents go; it is kept aside only
            // when the run is over.
            RunLine::Rejected { uid, why, .. } => RunLine::Rejected {
                uid,
                why,
                kept: landing
                    .close
                    .then(|| keep_rejected(&landing.spool))
                    .flatten(),
            },
            other => {
                if landing.close {
                    let _ = std::fs::remove_file(&landing.spool);
                }
                other
            }
        };
        report(Event::Run(line));
    }

    fn try_land(
        &self,
        landing: &Landing,
        report: &mut dyn FnMut(Event),
    ) -> Result<RunLine, LandError> {
        let config = self.config;
        let layout = &config.layout;
        let id = &landing.beamtime;
        // Per landing, not for the listener's life: a `migrate` may run between two runs.
        let (ensured, _lock) = beamtime::ensure(
            layout,
            id,
            &config.migrations,
            &config.sqlite,
            &config.frames,
        )?;
        match ensured {
            Ensured::Created => report(Event::BeamtimeCreated {
                id: id.to_string(),
                path: layout.beamtime_db(id),
            }),
            Ensured::Migrated { applied, .. } => report(Event::BeamtimeMigrated {
                id: id.to_string(),
                applied,
            }),
            Ensured::UpToDate => {}
        }
        let db_path = layout.beamtime_db(id);
        let mut conn = db::open(&db_path, Access::ReadWrite, &config.sqlite)?;
        let mut pass = self.pass(&mut conn, landing, false)?;
        if pass.differs && stored_incomplete(&conn, &landing.uid)? {
            // The stored run is an earlier, incomplete state of this one.
            pass = self.pass(&mut conn, landing, true)?;
        }
        let beamtime = id.to_string();
        let complete = landing.complete;
        let outcome = pass.outcome.ok_or_else(|| LandError::Empty {
            path: landing.spool.clone(),
        })?;
        Ok(match outcome {
            Outcome::Landed {
                uid,
                events,
                frames,
                bytes,
                replaced,
                incomplete,
                ..
            } => RunLine::Landed {
                beamtime,
                uid,
                events,
                frames,
                bytes,
                complete: !incomplete,
                replaced,
                lost: landing.lost.clone(),
            },
            Outcome::Unchanged { uid } => RunLine::Unchanged {
                beamtime,
                uid,
                complete,
            },
            Outcome::Rejected { uid, why } => RunLine::Rejected {
                uid: uid.unwrap_or_else(|| landing.uid.clone()),
                why: why.to_string(),
                kept: None,
            },
        })
    }

    fn pass(
        &self,
        conn: &mut rusqlite::Connection,
        landing: &Landing,
        replace: bool,
    ) -> Result<Pass, LandError> {
        let config = self.config;
        let layout = &config.layout;
        let id = &landing.beamtime;
        let location = crate::frames::location(&config.frames, layout, id);
        let store = FrameStore::open(&location)?;
        let db_path = layout.beamtime_db(id);
        crate::frames::bind(
            conn,
            &db_path,
            &location,
            &store,
            crate::frames::Bind::Claim,
        )?;
        let options = Options {
            roots: config.roots.clone(),
            compression: config.compression,
            replace,
            promoted: config.promoted.clone(),
        };
        let mut ingester = Ingester::new(conn, store, options)?;
        let file = std::fs::File::open(&landing.spool).map_err(|source| LandError::Spool {
            path: landing.spool.clone(),
            source,
        })?;
        let input = BufReader::with_capacity(1 << 20, file.take(landing.len));
        let mut pass = Pass::default();
        let name = landing.spool.display().to_string();
        ingester.ingest(input, &name, &mut |r| {
            if let Report::Run(outcome) = r {
                if let Outcome::Rejected { why, .. } = &outcome {
                    pass.differs = matches!(*why.problem, Problem::Differs { .. });
                }
                // A spool holds one run; its outcome is the last word.
                pass.outcome = Some(outcome);
            }
        })?;
        Ok(pass)
    }
}

/// An error and its causes on one line, each said once.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let said = c.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = c.source();
    }
    text
}

/// Why a run could not be stored for a reason that is not its documents'.
#[derive(Debug, thiserror::Error)]
enum LandError {
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    #[error(transparent)]
    Beamtime(#[from] beamtime::BeamtimeError),
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error("beamtime database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error(transparent)]
    Store(#[from] crate::frames::StoreError),
    #[error(transparent)]
    Ingest(#[from] crate::ingest::IngestError),
    #[error("{}: cannot read the run's spool: {source}", path.display())]
    Spool {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: the spool holds no run (it was emptied by hand?)", path.display())]
    Empty { path: PathBuf },
}

fn stored_incomplete(conn: &rusqlite::Connection, uid: &str) -> rusqlite::Result<bool> {
    use rusqlite::OptionalExtension;
    conn.query_row(
        "SELECT exit_status IS NULL FROM runs WHERE uid = ?1",
        [uid],
        |row| row.get(0),
    )
    .optional()
    .map(|v| v.unwrap_or(false))
}

/// Moves a rejected run's spool to `rejected/` beside it (a rename: works on a full disk).
fn keep_rejected(spool: &Path) -> Option<PathBuf> {
    let dir = spool.parent()?.join("rejected");
    std::fs::create_dir_all(&dir).ok()?;
    let dest = dir.join(spool.file_name()?);
    std::fs::rename(spool, &dest).ok()?;
    Some(dest)
}

/// Parses `10m`, `90s`, `1h`, `600` (seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a number with s, m or h (e.g. 10m)"))?;
    let secs = match unit.trim() {
        "s" => Some(n),
        "m" | "min" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        _ => None,
    }
    .ok_or_else(|| format!("{text:?}: expected a number with s, m or h (e.g. 10m)"))?;
    if secs == 0 {
        return Err(format!("{text:?}: must be at least 1s"));
    }
    Ok(Duration::from_secs(secs))
}

/// A tcp://HOST:PORT endpoint → `HOST:PORT`.
pub fn parse_endpoint(text: &str) -> Result<String, String> {
    let rest = text.strip_prefix("tcp://").ok_or_else(|| {
        format!(
            "{text:?}: expected tcp://HOST:PORT (the proxy's output, e.g. tcp://localhost:5578)"
        )
    })?;
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(rest.to_string())
        }
        _ => Err(format!(
            "{text:?}: expected tcp://HOST:PORT with a port number"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_endpoints_parse_or_say_what_is_expected() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        for bad in ["", "m", "0s", "10x", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_endpoint("tcp://localhost:5578").as_deref(),
            Ok("localhost:5578")
        );
        for bad in ["localhost:5578", "tcp://localhost", "tcp://:1", "tcp://h:0"] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn malformed_messages_are_rate_limited() {
        let mut r = RateLimit::default();
        let t = Instant::now();
        assert_eq!(r.hit(t), Some(0));
        for i in 1..1000 {
            assert_eq!(r.hit(t + Duration::from_millis(i)), None);
        }
        assert_eq!(r.hit(t + MALFORMED_EVERY), Some(999));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(2), Duration::from_millis(400));
        assert_eq!(backoff(40), BACKOFF_MAX);
    }
}
