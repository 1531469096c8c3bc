//! Documents of interleaved runs → one spool file per run → landing jobs.
//!
//! Each document is routed to its run by the uid it names (start: its own; descriptor,
//! resource, stream_resource, stop: `run_start`; event and event_page: their descriptor's run;
//! datum and datum_page: their resource's; stream_datum: its stream_resource's or descriptor's)
//! and appended at once to `{beamtime}/listen.spool/{uid}.jsonl` in suitcase-jsonl form. So
//! memory holds only the uids that route (never a document), an open run survives a restart,
//! and a run lands through exactly the code `beamdb ingest` uses: the spool is its input.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::ingest::documents::{Kind, Reader};
use crate::layout::{Layout, SafeName};

/// The spool folder of a beamtime.
pub fn spool_dir(layout: &Layout, beamtime: &SafeName) -> PathBuf {
    layout.beamtime_dir(beamtime).join("listen.spool")
}

/// Which beamtime a run goes to.
#[derive(Debug, Clone)]
pub enum BeamtimeChoice {
    Fixed(SafeName),
    /// The RunStart's value for this key.
    Key(String),
}

/// What the lander is asked to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Job {
    Land(Landing),
    /// A run that cannot be stored at all (no beamtime, unsafe uid, spool unwritable): said
    /// once, when its stop arrives or it falls silent.
    Refuse {
        uid: String,
        why: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Landing {
    pub uid: String,
    pub beamtime: SafeName,
    pub spool: PathBuf,
    /// How many bytes of the spool to ingest (the documents up to now; without the stop when
    /// documents were lost, so the run is stored as incomplete, never as complete).
    pub len: u64,
    /// The stop is within `len`: the run is complete.
    pub complete: bool,
    /// Why a run with a stop is stored incomplete: the stop's counts against what arrived.
    pub lost: Option<String>,
    /// The run is over for the router: remove the spool after landing.
    pub close: bool,
}

/// Why a document went nowhere (logged, rate-limited).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unroutable {
    #[error("{kind} document without a string `{field}`")]
    Missing {
        kind: &'static str,
        field: &'static str,
    },
    #[error(
        "{kind} document refers to {what} {uid:?}, which belongs to no open run (its start was not received, or the run ended)"
    )]
    Unknown {
        kind: &'static str,
        what: &'static str,
        uid: String,
    },
    #[error("start document of run {0:?}, which is open already: ignored")]
    DuplicateStart(String),
}

struct OpenRun {
    /// Where it goes, or why it cannot be stored.
    target: Result<(SafeName, PathBuf), String>,
    file: Option<File>,
    /// Bytes in the spool (before the stop).
    len: u64,
    last: Instant,
    /// `len` at the last landing as incomplete; documents after it make the run due again.
    landed_len: Option<u64>,
    descriptors: Vec<String>,
    resources: Vec<String>,
    stream_resources: Vec<String>,
    /// Stream name of each descriptor, and what arrived per stream name.
    stream_of: HashMap<String, String>,
    events: HashMap<String, u64>,
    stream_rows: HashMap<String, u64>,
    /// The connection dropped while this run was open.
    gap: bool,
}

pub struct Router {
    layout: Layout,
    choice: BeamtimeChoice,
    incomplete_after: Duration,
    forget_after: Duration,
    runs: HashMap<String, OpenRun>,
    descriptors: HashMap<String, String>,
    resources: HashMap<String, String>,
    stream_resources: HashMap<String, String>,
    /// The spool folders this listener holds (one listener per beamtime: two would append
    /// every document twice to the same spool and truncate each other's at each start).
    claimed: HashMap<PathBuf, Claim>,
}

/// A spool folder's lock, held by this listener. Its file is removed on release, while still
/// locked (a listener waiting on the old file sees that it is no longer the path's and opens
/// the new one), so a stopped listener leaves no file behind.
#[derive(Debug)]
pub struct Claim {
    path: PathBuf,
    _guard: crate::lock::LockGuard,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The lock file in a spool folder that the listener spooling into it holds.
pub const SPOOL_LOCK: &str = ".listener.lock";

fn str_field<'a>(
    kind: Kind,
    body: &'a Map<String, Value>,
    field: &'static str,
) -> Result<&'a str, Unroutable> {
    body.get(field)
        .and_then(Value::as_str)
        .ok_or(Unroutable::Missing {
            kind: kind.name(),
            field,
        })
}

impl Router {
    pub fn new(
        layout: Layout,
        choice: BeamtimeChoice,
        incomplete_after: Duration,
        forget_after: Duration,
    ) -> Router {
        Router {
            layout,
            choice,
            incomplete_after,
            forget_after,
            runs: HashMap::new(),
            descriptors: HashMap::new(),
            resources: HashMap::new(),
            stream_resources: HashMap::new(),
            claimed: HashMap::new(),
        }
    }

    /// Takes the spool folder `dir` for this listener (created when missing), or says which
    /// listener holds it. Held for the listener's life.
    pub fn claim(&mut self, dir: &Path) -> Result<(), crate::lock::LockError> {
        if self.claimed.contains_key(dir) {
            return Ok(());
        }
        std::fs::create_dir_all(dir).map_err(|source| crate::lock::LockError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(SPOOL_LOCK);
        let guard = crate::lock::try_exclusive(&path, "listen on this beamtime")?;
        self.claimed.insert(
            dir.to_path_buf(),
            Claim {
                path,
                _guard: guard,
            },
        );
        Ok(())
    }

    /// The spool folders' locks, for the lander to hold until the last run has landed.
    pub fn take_claims(&mut self) -> Vec<Claim> {
        self.claimed.drain().map(|(_, claim)| claim).collect()
    }

    /// With `--beamtime ID`: takes its spool folder before anything is read, so that a second
    /// listener on the same beamtime stops at once (exit 75) instead of corrupting spools.
    pub fn claim_fixed(&mut self) -> Result<(), crate::lock::LockError> {
        match &self.choice {
            BeamtimeChoice::Fixed(id) => {
                let dir = spool_dir(&self.layout, id);
                self.claim(&dir)
            }
            BeamtimeChoice::Key(_) => Ok(()),
        }
    }

    pub fn open_runs(&self) -> usize {
        self.runs.len()
    }

    /// Takes one document; a stop gives its run's landing job.
    pub fn accept(
        &mut self,
        kind: Kind,
        body: &Map<String, Value>,
        now: Instant,
    ) -> Result<Option<Job>, Unroutable> {
        self.route(kind, body, now, true)
    }

    fn route(
        &mut self,
        kind: Kind,
        body: &Map<String, Value>,
        now: Instant,
        write: bool,
    ) -> Result<Option<Job>, Unroutable> {
        let unknown = |what: &'static str, uid: &str| Unroutable::Unknown {
            kind: kind.name(),
            what,
            uid: uid.to_string(),
        };
        let run_uid = match kind {
            Kind::Start => {
                let uid = str_field(kind, body, "uid")?;
                if self.runs.contains_key(uid) {
                    return Err(Unroutable::DuplicateStart(uid.to_string()));
                }
                let target = self.target(uid, body);
                self.runs.insert(uid.to_string(), OpenRun::new(target, now));
                uid.to_string()
            }
            Kind::Descriptor | Kind::Resource | Kind::StreamResource | Kind::Stop => {
                let run = str_field(kind, body, "run_start")?;
                if !self.runs.contains_key(run) {
                    return Err(unknown("run", run));
                }
                run.to_string()
            }
            Kind::Event | Kind::EventPage => {
                let d = str_field(kind, body, "descriptor")?;
                self.descriptors
                    .get(d)
                    .cloned()
                    .ok_or_else(|| unknown("descriptor", d))?
            }
            Kind::Datum | Kind::DatumPage => {
                let r = str_field(kind, body, "resource")?;
                self.resources
                    .get(r)
                    .cloned()
                    .ok_or_else(|| unknown("resource", r))?
            }
            Kind::StreamDatum => {
                let by_resource = body
                    .get("stream_resource")
                    .and_then(Value::as_str)
                    .and_then(|r| self.stream_resources.get(r));
                let by_descriptor = body
                    .get("descriptor")
                    .and_then(Value::as_str)
                    .and_then(|d| self.descriptors.get(d));
                match by_resource.or(by_descriptor) {
                    Some(run) => run.clone(),
                    None => {
                        let r = str_field(kind, body, "stream_resource")?;
                        return Err(unknown("stream_resource", r));
                    }
                }
            }
        };
        let uid_of = |field| body.get(field).and_then(Value::as_str).map(str::to_string);
        // Registered before writing: a later document of the run must route even if this
        // one could not be spooled (the run is refused as a whole then).
        match kind {
            Kind::Descriptor => {
                if let Some(d) = uid_of("uid") {
                    let name = uid_of("name").unwrap_or_else(|| "primary".into());
                    self.descriptors.insert(d.clone(), run_uid.clone());
                    if let Some(run) = self.runs.get_mut(&run_uid) {
                        run.stream_of.insert(d.clone(), name);
                        run.descriptors.push(d);
                    }
                }
            }
            Kind::Resource => {
                if let Some(r) = uid_of("uid") {
                    self.resources.insert(r.clone(), run_uid.clone());
                    if let Some(run) = self.runs.get_mut(&run_uid) {
                        run.resources.push(r);
                    }
                }
            }
            Kind::StreamResource => {
                if let Some(r) = uid_of("uid") {
                    self.stream_resources.insert(r.clone(), run_uid.clone());
                    if let Some(run) = self.runs.get_mut(&run_uid) {
                        run.stream_resources.push(r);
                    }
                }
            }
            _ => {}
        }
        let Some(run) = self.runs.get_mut(&run_uid) else {
            return Ok(None);
        };
        run.count(kind, body);
        run.last = now;
        let before_stop = run.len;
        if write {
            run.append(kind, body);
        }
        if kind != Kind::Stop {
            return Ok(None);
        }
        let Some(run) = self.close(&run_uid) else {
            return Ok(None);
        };
        let lost = run.lost(body);
        let (beamtime, spool) = match run.target {
            Ok(target) => target,
            Err(why) => return Ok(Some(Job::Refuse { uid: run_uid, why })),
        };
        Ok(Some(Job::Land(Landing {
            uid: run_uid,
            beamtime,
            spool,
            len: if lost.is_some() { before_stop } else { run.len },
            complete: lost.is_none(),
            lost,
            close: true,
        })))
    }

    fn target(
        &mut self,
        uid: &str,
        start: &Map<String, Value>,
    ) -> Result<(SafeName, PathBuf), String> {
        let uid = SafeName::new("run uid", uid).map_err(|e| e.to_string())?;
        let beamtime = match &self.choice {
            BeamtimeChoice::Fixed(id) => id.clone(),
            BeamtimeChoice::Key(key) => {
                let value = start.get(key).and_then(Value::as_str).ok_or_else(|| {
                    format!(
                        "the start document has no string `{key}` (--beamtime-key): the run has no beamtime"
                    )
                })?;
                SafeName::new("beamtime id", value).map_err(|e| e.to_string())?
            }
        };
        let dir = spool_dir(&self.layout, &beamtime);
        self.claim(&dir).map_err(|e| match e {
            crate::lock::LockError::Held { .. } => format!(
                "beamtime {}: another listener spools its runs ({e}); that one stores this run",
                beamtime.as_str()
            ),
            crate::lock::LockError::Io { path, source } => {
                format!(
                    "{}: cannot create the spool folder: {source}",
                    path.display()
                )
            }
        })?;
        Ok((beamtime, dir.join(format!("{}.jsonl", uid.as_str()))))
    }

    fn close(&mut self, uid: &str) -> Option<OpenRun> {
        let run = self.runs.remove(uid)?;
        for d in &run.descriptors {
            self.descriptors.remove(d);
        }
        for r in &run.resources {
            self.resources.remove(r);
        }
        for r in &run.stream_resources {
            self.stream_resources.remove(r);
        }
        Some(run)
    }

    /// The connection dropped: documents of the open runs may be lost.
    pub fn disconnected(&mut self) {
        for run in self.runs.values_mut() {
            run.gap = true;
        }
    }

    /// Runs silent for `incomplete_after` are landed as incomplete (again, when documents
    /// came since); runs silent for `forget_after` are closed.
    pub fn tick(&mut self, now: Instant) -> Vec<Job> {
        let mut jobs = Vec::new();
        let uids: Vec<String> = self.runs.keys().cloned().collect();
        for uid in uids {
            let Some(run) = self.runs.get_mut(&uid) else {
                continue;
            };
            let silent = now.saturating_duration_since(run.last);
            if silent >= self.forget_after {
                if let Some(run) = self.close(&uid) {
                    jobs.extend(run.incomplete_job(uid, true, true));
                }
            } else if silent >= self.incomplete_after && run.landed_len != Some(run.len) {
                let first = run.landed_len.is_none();
                run.landed_len = Some(run.len);
                jobs.extend(run.incomplete_job(uid, false, first));
            }
        }
        jobs
    }

    /// Shutting down: every open run with documents not yet landed, as incomplete. Their
    /// spools stay, so a restart goes on with them.
    pub fn shutdown(&mut self) -> Vec<Job> {
        let mut jobs = Vec::new();
        for (uid, run) in self.runs.drain() {
            if run.landed_len != Some(run.len) {
                let first = run.landed_len.is_none();
                jobs.extend(run.incomplete_job(uid, false, first));
            }
        }
        jobs
    }

    /// Re-opens the runs spooled by an earlier listener (stopped or killed). Spools ending in
    /// a stop become landing jobs at once. Returns the jobs and the spools that could not be read.
    pub fn reload(&mut self, now: Instant) -> (Vec<Job>, Vec<String>) {
        let mut jobs = Vec::new();
        let mut problems = Vec::new();
        let dirs: Vec<PathBuf> = match &self.choice {
            BeamtimeChoice::Fixed(id) => vec![spool_dir(&self.layout, id)],
            BeamtimeChoice::Key(_) => match self.layout.beamtimes() {
                Ok((ids, _)) => ids.iter().map(|id| spool_dir(&self.layout, id)).collect(),
                Err(_) => Vec::new(),
            },
        };
        for dir in dirs {
            if !dir.is_dir() {
                continue;
            }
            // Another listener's spools are its own: reloading them would land its runs twice.
            if let Err(e) = self.claim(&dir) {
                problems.push(format!("{}: not reloaded: {e}", dir.display()));
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut spools: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "jsonl") && p.is_file())
                .collect();
            spools.sort();
            for spool in spools {
                match self.reload_one(&spool, now) {
                    Ok(job) => jobs.extend(job),
                    Err(why) => problems.push(format!("{}: {why}", spool.display())),
                }
            }
        }
        (jobs, problems)
    }

    /// [`Router::reload_spool`], undone when the spool turns out unreadable part-way: a run it
    /// opened would otherwise stay open and be "stored" at the next tick or stop from a spool
    /// the listener just said it left alone.
    fn reload_one(&mut self, spool: &Path, now: Instant) -> Result<Option<Job>, String> {
        let mut opened = None;
        let result = self.reload_spool(spool, now, &mut opened);
        if result.is_err()
            && let Some(uid) = opened
        {
            self.close(&uid);
        }
        result
    }

    fn reload_spool(
        &mut self,
        spool: &Path,
        now: Instant,
        opened: &mut Option<String>,
    ) -> Result<Option<Job>, String> {
        let file = File::open(spool).map_err(|e| format!("cannot open: {e}"))?;
        let name = spool.display().to_string();
        let mut reader = Reader::new(BufReader::new(file), &name);
        let mut job = None;
        let mut first = true;
        while let Some(doc) = reader.next_doc() {
            let doc = doc.map_err(|(pos, e)| format!("{pos}: {e}"))?;
            if first && doc.kind != Kind::Start {
                return Err("does not begin with a start document".into());
            }
            // A spool is named after its run and holds that run only: the router finds it
            // again by the run's uid, so a renamed or concatenated file would be landed from
            // the wrong file or not at all. Checked before routing, so nothing is opened.
            if first {
                let uid = doc.body.get("uid").and_then(Value::as_str);
                let stem = spool.file_stem().and_then(|s| s.to_str());
                if uid.is_none() || uid != stem {
                    return Err(format!(
                        "{}: its start document's uid is {}, not the file's name; a spool is named {{run uid}}.jsonl (renamed by hand?)",
                        doc.pos,
                        uid.map_or_else(|| "missing".to_string(), |u| format!("{u:?}"))
                    ));
                }
            }
            if job.is_some() {
                return Err(format!(
                    "{}: a document after the run's stop; a spool holds one run (two files joined by hand?)",
                    doc.pos
                ));
            }
            job = self
                .route(doc.kind, &doc.body, now, false)
                .map_err(|e| format!("{}: {e}", doc.pos))?;
            if first {
                *opened = doc
                    .body
                    .get("uid")
                    .and_then(Value::as_str)
                    .map(str::to_string);
            }
            first = false;
        }
        if let Some(Job::Land(landing)) = &mut job {
            // The stop was spooled: its documents are all in the file.
            landing.len = std::fs::metadata(spool).map(|m| m.len()).unwrap_or(0);
            if !landing.complete {
                // Lost documents: ingest without the stop line, which is the file's last.
                landing.len = spool_len_before_last_line(spool).unwrap_or(0);
            }
            return Ok(job);
        }
        // Still open: its spool takes the next documents.
        let len = std::fs::metadata(spool).map(|m| m.len()).unwrap_or(0);
        let open = self.runs.values_mut().find(|r| {
            r.target
                .as_ref()
                .is_ok_and(|(_, path)| path.as_path() == spool)
        });
        if let Some(run) = open {
            // The documents published while no listener ran are lost.
            run.gap = true;
            run.len = len;
            run.file = OpenOptions::new().append(true).open(spool).ok();
        }
        Ok(job)
    }
}

fn spool_len_before_last_line(path: &Path) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    let trimmed = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    Some(
        trimmed
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i as u64 + 1),
    )
}

impl OpenRun {
    fn new(target: Result<(SafeName, PathBuf), String>, now: Instant) -> OpenRun {
        OpenRun {
            target,
            file: None,
            len: 0,
            last: now,
            landed_len: None,
            descriptors: Vec::new(),
            resources: Vec::new(),
            stream_resources: Vec::new(),
            stream_of: HashMap::new(),
            events: HashMap::new(),
            stream_rows: HashMap::new(),
            gap: false,
        }
    }

    fn count(&mut self, kind: Kind, body: &Map<String, Value>) {
        let stream = |field: &str| {
            body.get(field)
                .and_then(Value::as_str)
                .and_then(|d| self.stream_of.get(d))
                .cloned()
        };
        let (name, n, rows) = match kind {
            Kind::Event => (stream("descriptor"), 1, false),
            Kind::EventPage => {
                let n = body
                    .get("seq_num")
                    .and_then(Value::as_array)
                    .map_or(0, |a| a.len() as u64);
                (stream("descriptor"), n, false)
            }
            Kind::StreamDatum => {
                let seq = |k| {
                    body.get("seq_nums")
                        .and_then(|s| s.get(k))
                        .and_then(Value::as_u64)
                        .unwrap_or(0)
                };
                (
                    stream("descriptor"),
                    seq("stop").saturating_sub(seq("start")),
                    true,
                )
            }
            _ => return,
        };
        if let Some(name) = name {
            let counts = if rows {
                &mut self.stream_rows
            } else {
                &mut self.events
            };
            let c = counts.entry(name).or_insert(0);
            *c = c.saturating_add(n);
        }
    }

    /// Appends the document to the spool. A run whose spool cannot be written is refused
    /// whole (a full disk): nothing of it is half-stored.
    fn append(&mut self, kind: Kind, body: &Map<String, Value>) {
        let Ok((_, path)) = &self.target else {
            return;
        };
        let path = path.clone();
        let mut line = match serde_json::to_string(&(kind.name(), body)) {
            Ok(line) => line,
            Err(e) => {
                self.target = Err(format!("cannot write the document as JSON: {e}"));
                return;
            }
        };
        line.push('\n');
        if self.file.is_none() {
            match OpenOptions::new().create(true).append(true).open(&path) {
                Ok(f) => {
                    // A spool left by a killed listener for the same uid is superseded: the
                    // start is being received again, so the whole run is.
                    if kind == Kind::Start
                        && let Err(e) = f.set_len(0)
                    {
                        self.target = Err(format!("{}: cannot write: {e}", path.display()));
                        return;
                    }
                    self.file = Some(f);
                }
                Err(e) => {
                    self.target = Err(format!("{}: cannot write: {e}", path.display()));
                    return;
                }
            }
        }
        if let Some(f) = &mut self.file {
            match f.write_all(line.as_bytes()) {
                Ok(()) => self.len += line.len() as u64,
                Err(e) => {
                    self.file = None;
                    self.target = Err(format!(
                        "{}: cannot write the spool ({e}); free space, then replay the run (it was not stored)",
                        path.display()
                    ));
                }
            }
        }
    }

    /// What the stop says arrived and did not.
    fn lost(&self, stop: &Map<String, Value>) -> Option<String> {
        let stated = stop.get("num_events").and_then(Value::as_object)?;
        let mut missing = Vec::new();
        for (stream, n) in stated {
            let Some(n) = n.as_u64() else { continue };
            let events = self.events.get(stream).copied().unwrap_or(0);
            let rows = self.stream_rows.get(stream).copied().unwrap_or(0);
            if events < n && rows < n {
                missing.push(format!(
                    "{}: {} of {n}",
                    stream.escape_debug(),
                    events.max(rows)
                ));
            }
        }
        if missing.is_empty() {
            return None;
        }
        let why = if self.gap {
            "documents lost while the connection to the proxy was down"
        } else {
            "documents lost (the proxy drops messages a slow subscriber cannot take)"
        };
        Some(format!(
            "the stop document counts more events than arrived ({}): {why}",
            missing.join(", ")
        ))
    }

    /// `first`: the run was never reported before (a refused run is said once).
    fn incomplete_job(&self, uid: String, close: bool, first: bool) -> Option<Job> {
        match &self.target {
            Ok((beamtime, spool)) => Some(Job::Land(Landing {
                uid,
                beamtime: beamtime.clone(),
                spool: spool.clone(),
                len: self.len,
                complete: false,
                lost: None,
                close,
            })),
            Err(why) if first => Some(Job::Refuse {
                uid,
                why: why.clone(),
            }),
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn router(dir: &Path) -> Router {
        Router::new(
            Layout::new(dir),
            BeamtimeChoice::Fixed(SafeName::new("beamtime id", "bt").unwrap()),
            Duration::from_secs(600),
            Duration::from_secs(86_400),
        )
    }

    fn doc(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    fn feed(r: &mut Router, kind: Kind, v: Value, now: Instant) -> Result<Option<Job>, Unroutable> {
        r.accept(kind, &doc(v), now)
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn interleaved_runs_are_spooled_apart_and_land_at_their_stops() {
        let tmp = tempfile::tempdir().unwrap();
        let mut r = router(tmp.path());
        let t = Instant::now();
        for run in ["A", "B"] {
            feed(&mut r, Kind::Start, json!({"uid": run, "time": 1.0}), t).unwrap();
            feed(
                &mut r,
                Kind::Descriptor,
                json!({"uid": format!("d{run}"), "run_start": run, "name": "primary"}),
                t,
            )
            .unwrap();
            feed(
                &mut r,
                Kind::Resource,
                json!({"uid": format!("r{run}"), "run_start": run}),
                t,
            )
            .unwrap();
        }
        feed(
            &mut r,
            Kind::Datum,
            json!({"datum_id": "x", "resource": "rB"}),
            t,
        )
        .unwrap();
        feed(
            &mut r,
            Kind::Event,
            json!({"uid": "e1", "descriptor": "dA"}),
            t,
        )
        .unwrap();
        feed(
            &mut r,
            Kind::EventPage,
            json!({"descriptor": "dB", "seq_num": [1, 2]}),
            t,
        )
        .unwrap();
        let a = feed(
            &mut r,
            Kind::Stop,
            json!({"run_start": "A", "num_events": {"primary": 1}}),
            t,
        )
        .unwrap();
        let Some(Job::Land(a)) = a else {
            panic!("{a:?}")
        };
        assert!(a.complete && a.close && a.lost.is_none());
        assert_eq!(a.len, std::fs::metadata(&a.spool).unwrap().len());
        assert_eq!(lines(&a.spool).len(), 5);
        assert!(lines(&a.spool)[3].starts_with("[\"event\""));
        // Run A's uids no longer route; B's still do.
        assert!(feed(&mut r, Kind::Event, json!({"descriptor": "dA"}), t).is_err());
        let b = feed(
            &mut r,
            Kind::Stop,
            json!({"run_start": "B", "num_events": {"primary": 2}}),
            t,
        )
        .unwrap();
        let Some(Job::Land(b)) = b else { panic!() };
        assert_eq!(lines(&b.spool).len(), 6);
        assert_eq!(r.open_runs(), 0);
    }

    #[test]
    fn hostile_and_unknown_documents_are_unroutable_not_fatal() {
        let tmp = tempfile::tempdir().unwrap();
        let mut r = router(tmp.path());
        let t = Instant::now();
        for (kind, v) in [
            (Kind::Event, json!({"descriptor": "nobody"})),
            (Kind::Event, json!({"descriptor": 7})),
            (Kind::Start, json!({"uid": null})),
            (Kind::Stop, json!({"run_start": "never-started"})),
            (Kind::Datum, json!({})),
            (Kind::StreamDatum, json!({"descriptor": "x"})),
            (Kind::EventPage, json!({"descriptor": ["a"]})),
        ] {
            assert!(feed(&mut r, kind, v.clone(), t).is_err(), "{v}");
        }
        feed(&mut r, Kind::Start, json!({"uid": "A"}), t).unwrap();
        assert_eq!(
            feed(&mut r, Kind::Start, json!({"uid": "A"}), t).unwrap_err(),
            Unroutable::DuplicateStart("A".into())
        );
        // A uid that cannot be a file name: the run is refused once, at its stop.
        feed(&mut r, Kind::Start, json!({"uid": "../../etc"}), t).unwrap();
        let job = feed(&mut r, Kind::Stop, json!({"run_start": "../../etc"}), t).unwrap();
        assert!(matches!(job, Some(Job::Refuse { .. })), "{job:?}");
        assert!(!tmp.path().join("etc.jsonl").exists());
    }

    #[test]
    fn beamtime_key_sends_each_run_to_the_beamtime_its_start_names() {
        let tmp = tempfile::tempdir().unwrap();
        let mut r = Router::new(
            Layout::new(tmp.path()),
            BeamtimeChoice::Key("proposal_id".into()),
            Duration::from_secs(600),
            Duration::from_secs(86_400),
        );
        let t = Instant::now();
        for (uid, proposal) in [
            ("A", json!("p1")),
            ("B", json!("p2")),
            ("C", json!(7)),
            ("D", json!("../up")),
        ] {
            feed(
                &mut r,
                Kind::Start,
                json!({"uid": uid, "proposal_id": proposal}),
                t,
            )
            .unwrap();
        }
        feed(&mut r, Kind::Start, json!({"uid": "E"}), t).unwrap();
        let mut landed = Vec::new();
        let mut refused = Vec::new();
        for uid in ["A", "B", "C", "D", "E"] {
            match feed(&mut r, Kind::Stop, json!({"run_start": uid}), t).unwrap() {
                Some(Job::Land(l)) => landed.push((l.beamtime.to_string(), l.spool)),
                Some(Job::Refuse { uid, why }) => refused.push((uid, why)),
                None => panic!("{uid}: no job"),
            }
        }
        assert_eq!(landed.len(), 2);
        assert_eq!(landed[0].0, "p1");
        assert!(
            landed[1]
                .1
                .starts_with(tmp.path().join("beamtimes/p2/listen.spool"))
        );
        assert_eq!(refused.len(), 3, "{refused:?}");
        assert!(refused[0].1.contains("proposal_id"), "{refused:?}");
        assert!(!tmp.path().join("up").exists());
    }

    #[test]
    fn a_stop_that_counts_more_events_than_arrived_lands_the_run_incomplete() {
        let tmp = tempfile::tempdir().unwrap();
        let mut r = router(tmp.path());
        let t = Instant::now();
        feed(&mut r, Kind::Start, json!({"uid": "A"}), t).unwrap();
        feed(
            &mut r,
            Kind::Descriptor,
            json!({"uid": "d", "run_start": "A", "name": "primary"}),
            t,
        )
        .unwrap();
        feed(&mut r, Kind::Event, json!({"descriptor": "d"}), t).unwrap();
        r.disconnected();
        let job = feed(
            &mut r,
            Kind::Stop,
            json!({"run_start": "A", "num_events": {"primary": 3}}),
            t,
        )
        .unwrap();
        let Some(Job::Land(job)) = job else { panic!() };
        assert!(!job.complete);
        let lost = job.lost.unwrap();
        assert!(
            lost.contains("primary: 1 of 3") && lost.contains("connection"),
            "{lost}"
        );
        // The stop is in the spool, but not in what is landed.
        let all = std::fs::read(&job.spool).unwrap();
        assert!(all.len() as u64 > job.len);
        assert!(!String::from_utf8_lossy(&all[..job.len as usize]).contains("\"stop\""));
    }

    #[test]
    fn silence_lands_a_run_incomplete_once_and_again_after_new_documents() {
        let tmp = tempfile::tempdir().unwrap();
        let mut r = router(tmp.path());
        let t = Instant::now();
        feed(&mut r, Kind::Start, json!({"uid": "A"}), t).unwrap();
        assert!(r.tick(t + Duration::from_secs(599)).is_empty());
        let jobs = r.tick(t + Duration::from_secs(600));
        assert!(
            matches!(&jobs[..], [Job::Land(l)] if !l.complete && !l.close),
            "{jobs:?}"
        );
        assert!(r.tick(t + Duration::from_secs(1200)).is_empty());
        let t2 = t + Duration::from_secs(1300);
        feed(
            &mut r,
            Kind::Descriptor,
            json!({"uid": "d", "run_start": "A"}),
            t2,
        )
        .unwrap();
        assert_eq!(r.tick(t2 + Duration::from_secs(600)).len(), 1);
        // A day of silence: closed for good.
        let jobs = r.tick(t2 + Duration::from_secs(86_400));
        assert!(matches!(&jobs[..], [Job::Land(l)] if l.close), "{jobs:?}");
        assert_eq!(r.open_runs(), 0);
    }

    #[test]
    fn a_restarted_router_goes_on_with_the_spooled_runs() {
        let tmp = tempfile::tempdir().unwrap();
        let t = Instant::now();
        let spool;
        {
            let mut r = router(tmp.path());
            feed(&mut r, Kind::Start, json!({"uid": "A"}), t).unwrap();
            feed(
                &mut r,
                Kind::Descriptor,
                json!({"uid": "d", "run_start": "A"}),
                t,
            )
            .unwrap();
            feed(&mut r, Kind::Event, json!({"descriptor": "d"}), t).unwrap();
            let jobs = r.shutdown();
            let [Job::Land(l)] = &jobs[..] else { panic!() };
            spool = l.spool.clone();
        }
        let mut r = router(tmp.path());
        let (jobs, problems) = r.reload(t);
        assert!(
            jobs.is_empty() && problems.is_empty(),
            "{jobs:?} {problems:?}"
        );
        assert_eq!(r.open_runs(), 1);
        feed(&mut r, Kind::Event, json!({"descriptor": "d"}), t).unwrap();
        let job = feed(
            &mut r,
            Kind::Stop,
            json!({"run_start": "A", "num_events": {"primary": 2}}),
            t,
        )
        .unwrap();
        let Some(Job::Land(l)) = job else { panic!() };
        assert!(l.complete);
        assert_eq!(l.spool, spool);
        assert_eq!(lines(&spool).len(), 5);
        // A spool that is not one: reported, not fatal.
        std::fs::write(spool.with_file_name("junk.jsonl"), "not json\n").unwrap();
        let mut r = router(tmp.path());
        let (_, problems) = r.reload(t);
        assert_eq!(problems.len(), 1, "{problems:?}");
    }
}
