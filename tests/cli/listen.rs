//! `beamdb listen` against the real thing: bluesky RunEngines with ophyd's simulated devices
//! (tests/interop/publish_runs.py) publish through a real `bluesky-0MQ-proxy` to the real
//! binary. What was published is recorded by the publisher itself and compared with what
//! beamdb stored (rows here, frames through zarr-python in check_frames.py).

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{Fixture, assert_whole, count, path, python, repo, run};

/// The venv's Python when it has bluesky and ophyd. Locally, a venv without them skips the
/// test with a message; under CI (scripts/test installs tests/requirements.txt) it fails.
pub(crate) fn bluesky_python() -> Option<String> {
    let python = python();
    let ok = Command::new(&python)
        .args(["-c", "import bluesky, ophyd, zmq, event_model"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{python} lacks bluesky/ophyd/pyzmq: install tests/requirements.txt (scripts/test does)"
    );
    eprintln!(
        "SKIPPED: {python} lacks bluesky/ophyd/pyzmq; `pip install -r tests/requirements.txt` (or run scripts/test) to run the listen tests"
    );
    None
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A child process killed when the test ends, whatever happens.
pub(crate) struct Killed(pub(crate) Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn proxy(python: &str, ports: (u16, u16)) -> Killed {
    let script = Path::new(python).with_file_name("bluesky-0MQ-proxy");
    let child = Command::new(script)
        .args([
            "--in-address",
            &ports.0.to_string(),
            "--out-address",
            &ports.1.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("bluesky-0MQ-proxy");
    Killed(child)
}

/// `beamdb listen` with its stdout lines on a channel and its stderr collected.
pub(crate) struct Listener {
    child: Killed,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Listener {
    fn start(fx: &Fixture, out_port: u16, extra: &[&str]) -> Listener {
        Listener::start_limited(fx, out_port, extra, None)
    }

    /// With a file size limit (bytes): past it a write fails with EFBIG, as on a full disk.
    fn start_limited(fx: &Fixture, out_port: u16, extra: &[&str], fsize: Option<u64>) -> Listener {
        Listener::start_with(fx, out_port, extra, fsize, &[])
    }

    /// With these environment variables too (the S3 tests' credentials).
    pub(crate) fn start_with(
        fx: &Fixture,
        out_port: u16,
        extra: &[&str],
        fsize: Option<u64>,
        env: &[(&str, &str)],
    ) -> Listener {
        let zmq = format!("tcp://127.0.0.1:{out_port}");
        let mut args = vec!["listen", "--zmq", &zmq];
        args.extend_from_slice(extra);
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("beamdb"));
        cmd.current_dir(fx.path())
            .env_clear()
            .env("BEAMDB_DATA_ROOT", fx.data_root())
            .envs(env.iter().copied())
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(limit) = fsize {
            use std::os::unix::process::CommandExt;
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    let limit = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().expect("beamdb listen");
        let stdout = child.stdout.take().expect("stdout");
        let mut err = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .expect("stderr")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Listener {
            child: Killed(child),
            lines,
            stderr,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr").clone()
    }

    pub(crate) fn wait_stderr(&self, needle: &str, within: Duration) {
        let until = Instant::now() + within;
        while !self.stderr().contains(needle) {
            assert!(
                Instant::now() < until,
                "no {needle:?} on listen's stderr within {within:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The next `n` run lines.
    pub(crate) fn run_lines(&self, n: usize, within: Duration) -> Vec<String> {
        let until = Instant::now() + within;
        let mut got = Vec::new();
        while got.len() < n {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => got.push(line),
                Err(_) => panic!(
                    "{} of {n} run lines within {within:?}: {got:#?}\nstderr:\n{}",
                    got.len(),
                    self.stderr()
                ),
            }
        }
        got
    }

    /// SIGTERM; the exit code and any run lines printed on the way out.
    pub(crate) fn terminate(mut self) -> (i32, Vec<String>, String) {
        let pid = self.child.0.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid, which has not been waited for yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let until = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.0.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < until, "listen did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        };
        std::thread::sleep(Duration::from_millis(100));
        let lines: Vec<String> = self.lines.try_iter().collect();
        (status.code().unwrap_or(-1), lines, self.stderr())
    }
}

pub(crate) fn publish(
    python: &str,
    in_port: u16,
    frames: &Path,
    record: &Path,
    scenario: &str,
) -> Child {
    Command::new(python)
        .arg(repo("tests/interop/publish_runs.py"))
        .args([&in_port.to_string(), path(frames), path(record), scenario])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("publish_runs.py")
}

pub(crate) fn wait_published(child: &mut Child) -> String {
    let mut out = String::new();
    let stdout = child.stdout.as_mut().expect("stdout");
    let mut reader = BufReader::new(stdout);
    reader.read_line(&mut out).expect("publisher output");
    assert!(out.starts_with("published"), "publisher said {out:?}");
    out
}

/// The published documents, by kind, per run uid: events per run and the stop's exit status.
pub(crate) fn published(record: &Path) -> Vec<(String, i64, Option<String>)> {
    let text = std::fs::read_to_string(record).expect("record");
    let mut runs: Vec<(String, i64, Option<String>)> = Vec::new();
    let mut run_of_descriptor = std::collections::HashMap::new();
    for line in text.lines() {
        let (name, doc): (String, serde_json::Value) = serde_json::from_str(line).expect("json");
        match name.as_str() {
            "start" => runs.push((doc["uid"].as_str().unwrap().to_string(), 0, None)),
            "descriptor" => {
                run_of_descriptor.insert(
                    doc["uid"].as_str().unwrap().to_string(),
                    doc["run_start"].as_str().unwrap().to_string(),
                );
            }
            "event" => {
                let run = &run_of_descriptor[doc["descriptor"].as_str().unwrap()];
                runs.iter_mut().find(|r| &r.0 == run).unwrap().1 += 1;
            }
            "stop" => {
                let run = doc["run_start"].as_str().unwrap();
                runs.iter_mut().find(|r| r.0 == run).unwrap().2 =
                    Some(doc["exit_status"].as_str().unwrap().to_string());
            }
            _ => {}
        }
    }
    runs.sort();
    runs
}

pub(crate) fn stored(fx: &Fixture) -> Vec<(String, i64, Option<String>)> {
    let conn = fx.open(&fx.beamtime_db("bt"));
    let mut stmt = conn
        .prepare(
            "SELECT r.uid, (SELECT count(*) FROM events e JOIN streams s ON s.uid = e.stream_uid WHERE s.run_uid = r.uid), r.exit_status FROM runs r ORDER BY r.uid",
        )
        .expect("runs");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("runs")
        .map(|r| r.expect("row"))
        .collect()
}

pub(crate) fn root_map(frames: &Path) -> String {
    format!("{}={}", path(frames), path(frames))
}

#[test]
fn listen_two_runengines_through_the_proxy_land_every_run_whole() {
    let Some(python) = bluesky_python() else {
        return;
    };
    let fx = Fixture::new();
    let frames = fx.path().join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    let record = fx.path().join("published.jsonl");
    let ports = (free_port(), free_port());
    let map = root_map(&frames);
    // The listener starts before the proxy: it must retry, say so, and connect.
    let listener = Listener::start(&fx, ports.1, &["--beamtime", "bt", "--root-map", &map]);
    listener.wait_stderr("cannot connect", Duration::from_secs(10));
    let _proxy = proxy(&python, ports);
    listener.wait_stderr("connected to", Duration::from_secs(30));

    let mut publisher = Killed(publish(&python, ports.0, &frames, &record, "beamline"));
    assert_eq!(wait_published(&mut publisher.0).trim(), "published 5 runs");
    let lines = listener.run_lines(5, Duration::from_secs(60));
    for line in &lines {
        assert!(line.starts_with("landed "), "{line}");
    }
    let (code, after, stderr) = listener.terminate();
    assert_eq!(code, 0, "{stderr}");
    assert!(after.is_empty(), "no open run to store: {after:?}");

    // Every run, with the events its documents carry and its exit status (the failing plan's too).
    let want = published(&record);
    assert_eq!(stored(&fx), want);
    assert!(want.iter().any(|r| r.2.as_deref() == Some("fail")));
    let conn = fx.open(&fx.beamtime_db("bt"));
    assert_whole(&conn);
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM streams WHERE name = 'baseline'"
        ),
        1
    );
    assert_eq!(count(&conn, "SELECT count(*) FROM image_refs"), 3 + 4 + 5);
    // Frames bit for bit, read through zarr-python, against the NPY files the detector wrote.
    let store = fx.data_root().join("beamtimes/bt/frames.zarr");
    let out = Command::new(&python)
        .arg(repo("tests/interop/check_frames.py"))
        .args([path(&fx.beamtime_db("bt")), path(&store), path(&record)])
        .output()
        .expect("check_frames.py");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("checked 12 frames"),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, stdout, stderr) = run(fx
        .beamdb(&["verify"])
        .env("BEAMDB_DATA_ROOT", fx.data_root()));
    assert_eq!(code, 0, "{stdout}{stderr}");
    // Spools of landed runs are gone.
    let spool = fx.data_root().join("beamtimes/bt/listen.spool");
    let left: Vec<PathBuf> = std::fs::read_dir(&spool)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn listen_pickled_messages_get_one_clear_message_naming_the_serializer() {
    let Some(python) = bluesky_python() else {
        return;
    };
    let fx = Fixture::new();
    let frames = fx.path().join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    let record = fx.path().join("published.jsonl");
    let ports = (free_port(), free_port());
    let _proxy = proxy(&python, ports);
    let listener = Listener::start(&fx, ports.1, &["--beamtime", "bt"]);
    listener.wait_stderr("connected to", Duration::from_secs(30));
    let mut publisher = Killed(publish(&python, ports.0, &frames, &record, "pickled"));
    wait_published(&mut publisher.0);
    std::thread::sleep(Duration::from_millis(500));
    let (code, lines, stderr) = listener.terminate();
    assert_eq!(code, 0, "{stderr}");
    assert!(lines.is_empty(), "{lines:?}");
    // Several pickled documents went by (start, descriptor, events, stop): said once.
    assert_eq!(stderr.matches("is pickled").count(), 1, "{stderr}");
    assert!(
        stderr.contains(
            "serializer=lambda doc: json.dumps(doc, cls=event_model.NumpyEncoder).encode()"
        ),
        "{stderr}"
    );
    assert!(!fx.beamtime_db("bt").exists());
}

#[test]
fn listen_a_silent_run_is_stored_incomplete_and_sigterm_and_restart_never_duplicate_it() {
    let Some(python) = bluesky_python() else {
        return;
    };
    let fx = Fixture::new();
    let frames = fx.path().join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    let record = fx.path().join("published.jsonl");
    let ports = (free_port(), free_port());
    let _proxy = proxy(&python, ports);
    let args = ["--beamtime", "bt", "--incomplete-after", "2s"];
    let listener = Listener::start(&fx, ports.1, &args);
    listener.wait_stderr("connected to", Duration::from_secs(30));
    // A plan that never ends: one event, then silence.
    let mut publisher = Killed(publish(&python, ports.0, &frames, &record, "open"));
    wait_published(&mut publisher.0);
    let lines = listener.run_lines(1, Duration::from_secs(30));
    assert!(lines[0].starts_with("incomplete "), "{lines:?}");
    assert!(lines[0].contains("1 events"), "{lines:?}");
    let (code, after, stderr) = listener.terminate();
    assert_eq!(code, 0, "{stderr}");
    assert!(after.is_empty(), "already stored, nothing new: {after:?}");
    let rows = stored(&fx);
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].1, rows[0].2.as_deref()), (1, None));

    // A restart picks the open run up from its spool; SIGTERM stores it again: unchanged.
    let listener = Listener::start(&fx, ports.1, &args);
    listener.wait_stderr("1 runs picked up", Duration::from_secs(30));
    let (code, after, stderr) = listener.terminate();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(after[0].starts_with("unchanged "), "{after:?}");
    assert_eq!(stored(&fx), rows);
}

#[test]
fn listen_restarted_mid_run_goes_on_with_it_and_stores_it_incomplete_when_documents_were_lost() {
    let Some(python) = bluesky_python() else {
        return;
    };
    let fx = Fixture::new();
    let frames = fx.path().join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    let record = fx.path().join("published.jsonl");
    let ports = (free_port(), free_port());
    let _proxy = proxy(&python, ports);
    let args = ["--beamtime", "bt"];
    let listener = Listener::start(&fx, ports.1, &args);
    listener.wait_stderr("connected to", Duration::from_secs(30));
    let mut publisher = Killed(publish(&python, ports.0, &frames, &record, "slow"));
    let mut out = BufReader::new(publisher.0.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("publisher");
    assert_eq!(line.trim(), "started");
    // A few events in, the listener goes down for a while: what is published meanwhile is lost.
    std::thread::sleep(Duration::from_secs(2));
    let (code, lines, stderr) = listener.terminate();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("incomplete "), "{lines:?}");
    std::thread::sleep(Duration::from_secs(1));
    let listener = Listener::start(&fx, ports.1, &args);
    listener.wait_stderr("1 runs picked up", Duration::from_secs(30));
    line.clear();
    out.read_line(&mut line).expect("publisher");
    assert_eq!(line.trim(), "published 1 runs");
    let lines = listener.run_lines(1, Duration::from_secs(30));
    assert!(
        lines[0].starts_with("incomplete ")
            && lines[0].contains("the stop document counts more events than arrived (primary: ")
            && lines[0].contains("of 30)")
            && lines[0].contains("replaced its earlier incomplete state"),
        "{lines:?}"
    );
    let (code, _, stderr) = listener.terminate();
    assert_eq!(code, 0, "{stderr}");
    // Stored, flagged by its NULL exit status, never as complete; the events that arrived.
    let rows = stored(&fx);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].2, None);
    assert!(rows[0].1 > 0 && rows[0].1 < 30, "{rows:?}");
    let (code, stdout, stderr) = run(fx
        .beamdb(&["verify"])
        .env("BEAMDB_DATA_ROOT", fx.data_root()));
    assert_eq!(code, 0, "{stdout}{stderr}");
}

#[test]
fn listen_survives_a_proxy_restart_mid_run_and_never_stores_a_short_run_as_complete() {
    let Some(python) = bluesky_python() else {
        return;
    };
    let fx = Fixture::new();
    let frames = fx.path().join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    let record = fx.path().join("published.jsonl");
    let ports = (free_port(), free_port());
    let first = proxy(&python, ports);
    let listener = Listener::start(&fx, ports.1, &["--beamtime", "bt"]);
    listener.wait_stderr("connected to", Duration::from_secs(30));
    let mut publisher = Killed(publish(&python, ports.0, &frames, &record, "slow"));
    let mut out = BufReader::new(publisher.0.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("publisher");
    std::thread::sleep(Duration::from_secs(2));
    drop(first);
    listener.wait_stderr("connection", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(1));
    let _second = proxy(&python, ports);
    let until = Instant::now() + Duration::from_secs(30);
    while listener.stderr().matches("connected to").count() < 2 {
        assert!(
            Instant::now() < until,
            "no reconnect:\n{}",
            listener.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    line.clear();
    out.read_line(&mut line).expect("publisher");
    assert_eq!(line.trim(), "published 1 runs");
    let lines = listener.run_lines(1, Duration::from_secs(30));
    let (code, _, stderr) = listener.terminate();
    assert_eq!(code, 0, "{stderr}");
    let rows = stored(&fx);
    assert_eq!(rows.len(), 1);
    // Complete only with every event; short, it is incomplete and its line says why.
    if rows[0].2.is_some() {
        assert_eq!(rows[0].1, 30, "{lines:?}");
        assert!(lines[0].starts_with("landed "), "{lines:?}");
    } else {
        assert!(rows[0].1 < 30);
        assert!(
            lines[0].contains("documents lost while the connection to the proxy was down"),
            "{lines:?}"
        );
    }
}

#[test]
fn listen_a_bad_run_or_a_full_disk_rejects_that_run_and_the_listener_goes_on() {
    let Some(python) = bluesky_python() else {
        return;
    };
    let fx = Fixture::new();
    let first = crate::generate::frames_run(fx.path(), "first", 2, (4, 4));
    let big = crate::generate::frames_run(fx.path(), "full-disk", 400, (32, 32));
    let last = crate::generate::frames_run(fx.path(), "last", 3, (4, 4));
    let bad = fx.write(
        "bad.jsonl",
        concat!(
            r#"["start", {"uid": "bad", "time": 1795000000.0, "plan_name": "count"}]"#,
            "\n",
            r#"["descriptor", {"uid": "bad-d", "run_start": "bad", "name": "primary", "time": 1795000000.0, "data_keys": {"x": {"source": "SIM:x", "dtype": "number", "shape": []}}}]"#,
            "\n",
            r#"["event", {"uid": "bad-e", "descriptor": "bad-d", "seq_num": 1, "time": 1795000000.1, "data": {"x": 1}, "timestamps": {"x": 1795000000.1}}]"#,
            "\n",
            r#"["event", {"uid": "bad-e", "descriptor": "bad-d", "seq_num": 2, "time": 1795000000.2, "data": {"x": 2}, "timestamps": {"x": 1795000000.2}}]"#,
            "\n",
            r#"["stop", {"uid": "bad-s", "run_start": "bad", "time": 1795000001.0, "exit_status": "success", "num_events": {"primary": 2}}]"#,
            "\n",
        ),
    );
    let frames = fx.path().join("frames").canonicalize().unwrap();
    let map = root_map(&frames);
    let ports = (free_port(), free_port());
    let _proxy = proxy(&python, ports);
    let listener = Listener::start_limited(
        &fx,
        ports.1,
        &["--beamtime", "bt", "--root-map", &map],
        Some(256 * 1024),
    );
    listener.wait_stderr("connected to", Duration::from_secs(30));
    let out = Command::new(&python)
        .arg(repo("tests/interop/publish_jsonl.py"))
        .arg(ports.0.to_string())
        .args([&first, &bad, &big, &last])
        .output()
        .expect("publish_jsonl.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = listener.run_lines(4, Duration::from_secs(60));
    eprintln!("listen said: {lines:#?}");
    assert!(lines[0].starts_with("landed     first:"), "{lines:#?}");
    assert!(
        lines[1].starts_with("rejected  bad:") && lines[1].contains("appears twice"),
        "{lines:#?}"
    );
    assert!(
        lines[1].contains("listen.spool/bad.jsonl:4") && lines[1].contains("rejected/bad.jsonl"),
        "names the spool's line and where the documents are kept: {lines:#?}"
    );
    assert!(
        lines[2].starts_with("rejected  full-disk:") && lines[2].contains("not stored"),
        "{lines:#?}"
    );
    assert!(lines[3].starts_with("landed     last:"), "{lines:#?}");
    let (code, _, stderr) = listener.terminate();
    assert_eq!(code, 0, "{stderr}");
    let rows = stored(&fx);
    let uids: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(uids, ["first", "last"]);
    assert_whole(&fx.open(&fx.beamtime_db("bt")));
    let (code, stdout, stderr) = run(fx
        .beamdb(&["verify"])
        .env("BEAMDB_DATA_ROOT", fx.data_root()));
    assert_eq!(code, 0, "nothing half-written: {stdout}{stderr}");
}

#[test]
fn listen_help_says_the_publisher_line_the_defaults_and_the_signals() {
    let fx = Fixture::new();
    let (code, out, _) = run(&mut fx.beamdb(&["listen", "--help"]));
    assert_eq!(code, 0);
    // Wrapped to the terminal: compare words, not lines.
    let out = out.split_whitespace().collect::<Vec<_>>().join(" ");
    for needle in [
        "Usage: beamdb listen",
        "serializer=lambda doc: json.dumps(doc, cls=event_model.NumpyEncoder).encode()",
        "[default: 10m]",
        "24 hours",
        "a second signal exits at once",
        "--beamtime-key",
        "--prefix",
        "SIGTERM",
        "listen.spool",
        "docs/listen.md",
        "Exit status:",
    ] {
        assert!(out.contains(needle), "{needle:?} not in:\n{out}");
    }
}

#[test]
fn listen_bad_arguments_are_usage_errors() {
    let fx = Fixture::new();
    for args in [
        &["listen", "--zmq", "localhost:5578", "--beamtime", "bt"][..],
        &["listen", "--zmq", "tcp://localhost:5578"],
        &[
            "listen",
            "--zmq",
            "tcp://h:1",
            "--beamtime",
            "bt",
            "--incomplete-after",
            "0s",
        ],
        &["listen", "--zmq", "tcp://h:1", "--beamtime", "../x"],
        &[
            "listen",
            "--zmq",
            "tcp://h:1",
            "--beamtime",
            "bt",
            "--prefix",
            "a b",
        ],
    ] {
        let (code, _, stderr) = run(&mut fx.beamdb(args));
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains("error"), "{stderr}");
    }
}
