//! Frames on S3-compatible storage (the `s3` feature, docs/s3.md), against a real server:
//! moto's server mode from the interop venv (tests/requirements.txt), one per test process,
//! on loopback and a private port, each test with a bucket of its own.
//!
//! Without the server (no venv, or moto missing) a test prints one line saying how to run it
//! and passes, unless `BEAMDB_REQUIRE_SERVERS` is set (CI), where it fails.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::{Fixture, count, path, python, repo, run, shared_map};

/// The test server: its endpoint; it is stopped by its watchdog when this process ends.
struct Server {
    endpoint: String,
    port: u16,
}

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();

/// The server, started on first use; `None` (after saying why) when it cannot be started
/// and servers are not required.
fn server() -> Option<&'static Server> {
    match SERVER.get_or_init(start_server) {
        Ok(server) => Some(server),
        Err(why) => {
            assert!(
                std::env::var_os("BEAMDB_REQUIRE_SERVERS").is_none(),
                "the S3 test server is required (BEAMDB_REQUIRE_SERVERS) but {why}"
            );
            eprintln!("skipped: {why}; run bash scripts/test (it installs and starts moto)");
            None
        }
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts `python -m moto.server` on a free loopback port under a watchdog shell that stops
/// it (by PID) as soon as this test process is gone, however it ended: nothing outlives the
/// tests, and a server leaked anyway listens only on loopback with throw-away data in memory.
fn start_server() -> Result<Server, String> {
    let python = match std::env::var("BEAMDB_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => p,
        _ => return Err("BEAMDB_TEST_PYTHON is not set".into()),
    };
    let has_moto = Command::new(&python)
        .args(["-c", "import moto.server"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_moto {
        return Err(format!("{python} cannot import moto.server"));
    }
    let port = free_port().map_err(|e| format!("no free port: {e}"))?;
    let log = std::env::temp_dir().join(format!("beamdb-moto-{}.log", std::process::id()));
    let watchdog = r#"
        "$0" -m moto.server -H 127.0.0.1 -p "$1" >"$2" 2>&1 &
        server=$!
        while kill -0 "$3" 2>/dev/null && kill -0 "$server" 2>/dev/null; do sleep 0.5; done
        kill "$server" 2>/dev/null
        rm -f "$2"
    "#;
    Command::new("sh")
        .args(["-c", watchdog, &python, &port.to_string()])
        .arg(&log)
        .arg(std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start sh: {e}"))?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if http(port, "GET", "/").is_ok() {
            return Ok(Server {
                endpoint: format!("http://127.0.0.1:{port}"),
                port,
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!(
        "moto did not answer on port {port} within 30 s ({})",
        std::fs::read_to_string(&log).unwrap_or_default()
    ))
}

/// One plain HTTP/1.0 request to moto (which does not check signatures in server mode):
/// (status, body).
fn http(port: u16, method: &str, target: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {target} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// A fixture whose settings put frames in a new bucket of the test server.
pub(crate) struct S3 {
    pub(crate) fx: Fixture,
    pub(crate) bucket: String,
    endpoint: String,
    port: u16,
}

const KEY: &str = "beamdb-test-key";
const SECRET: &str = "beamdb-test-secret-never-printed";

impl S3 {
    /// `None` when the server is not there (the test then passes after saying so).
    pub(crate) fn new(name: &str) -> Option<S3> {
        let server = server()?;
        let bucket = format!("t-{}", name.replace('_', "-"));
        let (status, body) =
            http(server.port, "PUT", &format!("/{bucket}")).expect("create bucket");
        assert_eq!(status, 200, "creating bucket {bucket}: {body}");
        let s3 = S3 {
            fx: Fixture::new(),
            bucket,
            endpoint: server.endpoint.clone(),
            port: server.port,
        };
        s3.settings(&s3.bucket.clone(), &s3.endpoint.clone());
        Some(s3)
    }

    /// Writes settings.toml pointing at `bucket` on `endpoint`, prefix `facility/frames`.
    fn settings(&self, bucket: &str, endpoint: &str) {
        self.fx.write(
            "settings.toml",
            &format!(
                "[frames]\nurl = \"s3://{bucket}/facility/frames\"\nendpoint = \"{endpoint}\"\nallow_http = true\n"
            ),
        );
    }

    /// `beamdb ARGS` with the test credentials in the standard AWS variables.
    pub(crate) fn beamdb(&self, args: &[&str]) -> assert_cmd::Command {
        let mut cmd = self.fx.beamdb(args);
        cmd.env("AWS_ACCESS_KEY_ID", KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            // The scratch folder in the fixture: a killed ingest leaves nothing in /tmp.
            .env("TMPDIR", self.fx.path());
        cmd
    }

    /// The beamtime's store URL.
    pub(crate) fn store_url(&self, bt: &str) -> String {
        format!("s3://{}/facility/frames/{bt}/frames.zarr", self.bucket)
    }

    /// Every object key in the bucket.
    pub(crate) fn keys(&self) -> Vec<String> {
        let (status, body) = http(
            self.port,
            "GET",
            &format!("/{}?list-type=2&max-keys=100000", self.bucket),
        )
        .expect("list bucket");
        assert_eq!(status, 200, "{body}");
        body.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.to_string()))
            .collect()
    }

    /// The run groups (names under runs/) that hold any object.
    pub(crate) fn groups(&self, bt: &str) -> Vec<String> {
        let prefix = format!("facility/frames/{bt}/frames.zarr/runs/");
        let mut groups: Vec<String> = self
            .keys()
            .iter()
            .filter_map(|k| k.strip_prefix(&prefix))
            .filter_map(|rest| rest.split_once('/').map(|(g, _)| g.to_string()))
            .collect();
        groups.sort();
        groups.dedup();
        groups
    }

    /// Runs `code` in Python with `c`, a boto3 client of the test server, and `bucket`.
    fn boto(&self, code: &str) {
        let script = format!(
            "import boto3, os\nc = boto3.client('s3', endpoint_url=os.environ['BEAMDB_TEST_S3_ENDPOINT'], region_name='us-east-1')\nbucket = '{}'\n{code}\n",
            self.bucket
        );
        let out = self.python().args(["-c", &script]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Python with the interop venv, the credentials and the endpoint (for s3fs).
    fn python(&self) -> Command {
        let mut cmd = Command::new(python());
        cmd.env("AWS_ACCESS_KEY_ID", KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .env("BEAMDB_TEST_S3_ENDPOINT", &self.endpoint);
        cmd
    }
}

/// The shared NPY runs and the HDF5 sample runs, with their root maps.
pub(crate) fn npy_and_hdf5() -> (Vec<String>, Vec<PathBuf>) {
    let data = repo("tests/data");
    let maps = vec![
        shared_map(),
        format!(
            "/srv/beamline/shared/hdf5={}",
            data.join("hdf5/shared/hdf5").display()
        ),
    ];
    let inputs = vec![data.join("bluesky"), data.join("hdf5/shared")];
    (maps, inputs)
}

pub(crate) fn ingest_args<'a>(
    maps: &'a [String],
    inputs: &'a [PathBuf],
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec!["ingest", "--beamtime", "bt"];
    args.extend_from_slice(extra);
    for m in maps {
        args.extend(["--root-map", m.as_str()]);
    }
    args.extend(inputs.iter().map(|p| path(p)));
    args
}

pub(crate) fn check_frames_over_s3(s3: &S3, maps: &[String], inputs: &[PathBuf]) {
    let out = s3
        .python()
        .arg(repo("tests/interop/check_frames.py"))
        .arg(s3.fx.beamtime_db("bt"))
        .arg(s3.store_url("bt"))
        .args(maps)
        .args(inputs)
        .output()
        .expect("run the interop check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("checked "), "{stdout}");
}

#[test]
fn s3_ingest_npy_and_hdf5_puts_every_frame_on_s3_and_nothing_in_the_local_frames_folder() {
    let Some(s3) = S3::new("ingest-npy-hdf5") else {
        return;
    };
    let (code, out, err) = run(&mut s3.beamdb(&["initdb", "--beamtime", "bt"]));
    assert_eq!(code, 0, "{out}{err}");
    let (maps, inputs) = npy_and_hdf5();
    let (code, out, err) = run(&mut s3.beamdb(&ingest_args(&maps, &inputs, &[])));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !out.contains("rejected 1") && out.contains("rejected 0"),
        "{out}"
    );
    let bt = s3.fx.data_root().join("beamtimes/bt");
    assert!(
        !bt.join("frames.zarr").exists(),
        "nothing may be written to the local frames folder"
    );
    let conn = s3.fx.open(&s3.fx.beamtime_db("bt"));
    let runs = count(&conn, "SELECT count(*) FROM runs");
    assert!(runs >= 4, "{out}");
    // Every committed run names its group, every group is named by a committed run, and
    // every image_ref points into its run's group.
    let groups = s3.groups("bt");
    assert_eq!(groups.len() as i64, runs, "{groups:?}");
    let mut stmt = conn
        .prepare("SELECT r.uid, m.value FROM runs r JOIN beamtime_meta m ON m.key = 'frames_group:' || r.uid")
        .unwrap();
    let named: Vec<(String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(named.len() as i64, runs);
    for (uid, group) in &named {
        assert!(group.starts_with(&format!("{uid}@")), "{group}");
        assert!(groups.contains(group), "{group} not in {groups:?}");
    }
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM image_refs i JOIN streams s ON s.uid = i.stream_uid
             JOIN beamtime_meta m ON m.key = 'frames_group:' || s.run_uid
             WHERE i.zarr_group NOT LIKE 'runs/' || m.value || '/%'"
        ),
        0
    );
    // The layout's objects: consolidated metadata with the marker, columns, dimension names.
    let keys = s3.keys();
    for (_, group) in &named {
        let run = format!("facility/frames/bt/frames.zarr/runs/{group}");
        assert!(keys.contains(&format!("{run}/zarr.json")), "{run}");
        assert!(
            keys.contains(&format!("{run}/primary/time/zarr.json")),
            "{run}"
        );
    }
    assert!(keys.contains(&"facility/frames/bt/frames.zarr/zarr.json".to_string()));
    assert!(keys.contains(&"facility/frames/bt/frames.zarr/runs/zarr.json".to_string()));
    check_frames_over_s3(&s3, &maps, &inputs);
    // Again: nothing to do, nothing written.
    let before = s3.keys().len();
    let (code, out, err) = run(&mut s3.beamdb(&ingest_args(&maps, &inputs, &[])));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("landed 0"), "{out}");
    assert_eq!(s3.keys().len(), before);
}

#[test]
fn s3_xarray_opens_a_stream_over_s3_from_the_url_runs_json_gives() {
    let Some(s3) = S3::new("xarray") else {
        return;
    };
    let (maps, inputs) = npy_and_hdf5();
    let (code, out, err) = run(&mut s3.beamdb(&ingest_args(&maps, &inputs, &[])));
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(&mut s3.beamdb(&["reindex"]));
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(&mut s3.beamdb(&["runs", "--json"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains(SECRET) && !err.contains(SECRET));
    let runs: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert!(!runs.is_empty(), "{out}");
    let script = r#"
import os, sys, json, sqlite3
import xarray as xr
opts = {"endpoint_url": os.environ["BEAMDB_TEST_S3_ENDPOINT"]}
db = sys.argv[1]
conn = sqlite3.connect(db)
checked = 0
for run in json.load(sys.stdin):
    url = run["frames"]
    assert url.startswith("s3://"), url
    n = conn.execute("SELECT count(*) FROM events e JOIN streams s ON s.uid = e.stream_uid WHERE s.run_uid = ? AND s.name = 'primary'", (run["uid"],)).fetchone()[0]
    if n == 0:
        continue
    ds = xr.open_zarr(url, group="primary", storage_options=opts)
    assert ds.sizes["time"] == n, (url, dict(ds.sizes), n)
    tree = xr.open_datatree(url, engine="zarr", storage_options=opts)
    assert "primary" in tree.children, list(tree.children)
    checked += 1
print(f"opened {checked}")
"#;
    let mut child = s3
        .python()
        .args(["-c", script])
        .arg(s3.fx.beamtime_db("bt"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(out.as_bytes())
        .unwrap();
    let done = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(
        done.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(
        stdout.starts_with("opened ") && !stdout.starts_with("opened 0"),
        "{stdout}"
    );
}

/// Settings that cannot work are exit 2 naming what to fix, before anything is created.
#[test]
fn s3_missing_bucket_or_credentials_is_exit_2_naming_the_setting() {
    let Some(s3) = S3::new("bad-setup") else {
        return;
    };
    let (maps, inputs) = npy_and_hdf5();
    // No credentials at all.
    let (code, out, err) = run(&mut s3.fx.beamdb(&ingest_args(&maps, &inputs, &[])));
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");
    assert!(!s3.fx.beamtime_db("bt").exists(), "nothing created");
    // A bucket that does not exist.
    s3.settings("no-such-bucket-here", &s3.endpoint);
    let (code, out, err) = run(&mut s3.beamdb(&ingest_args(&maps, &inputs, &[])));
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("no-such-bucket-here")
            && err.contains("frames] url")
            && err.contains("settings.toml:2"),
        "{err}"
    );
    assert!(!err.contains(SECRET), "{err}");
    assert!(!s3.fx.beamtime_db("bt").exists(), "nothing created");
}

/// A server that is gone: retried with backoff, then exit 1 naming the store; the secret
/// never appears.
#[test]
fn s3_server_gone_fails_after_retries_and_commits_nothing() {
    let Some(s3) = S3::new("server-gone") else {
        return;
    };
    let port = free_port().unwrap();
    s3.settings(&s3.bucket, &format!("http://127.0.0.1:{port}"));
    let (maps, inputs) = npy_and_hdf5();
    let started = Instant::now();
    let (code, out, err) = run(&mut s3.beamdb(&ingest_args(&maps, &inputs, &[])));
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains(&format!("s3://{}", s3.bucket)), "{err}");
    assert!(!err.contains(SECRET) && !out.contains(SECRET), "{err}");
    assert!(started.elapsed() < Duration::from_secs(120));
    assert!(!s3.fx.beamtime_db("bt").exists(), "nothing created");
}

/// The run whose frames are counted (5 NPY frames).
const COUNT_RUN: &str = "682a43b9-a2ae-49de-8435-1bc6638aee60";

/// `verify` checks every committed run's group and frames on S3; a version no committed row
/// owns (what a killed ingest leaves) is found and `verify --repair` deletes it, and a lost
/// chunk object is reported, not repaired by deleting anything.
#[test]
fn s3_verify_finds_unowned_versions_and_repair_deletes_them_but_no_committed_frame() {
    let Some(s3) = S3::new("verify") else {
        return;
    };
    let (maps, inputs) = npy_and_hdf5();
    let (code, out, err) = run(&mut s3.beamdb(&ingest_args(&maps, &inputs, &[])));
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(&mut s3.beamdb(&["verify"]));
    assert_eq!(code, 0, "{out}{err}");
    // --deep reads and decodes every frame over S3.
    let (code, out, err) = run(&mut s3.beamdb(&["verify", "--deep"]));
    assert_eq!(code, 0, "{out}{err}");
    let committed = s3.groups("bt");
    // A killed ingest's version of a committed run, and of a run never committed.
    let runs = format!("/{}/facility/frames/bt/frames.zarr/runs", s3.bucket);
    for planted in [
        format!("{runs}/{COUNT_RUN}@1234abcd/zarr.json"),
        format!("{runs}/{COUNT_RUN}@1234abcd/primary/ccd/c/0/0/0"),
        format!("{runs}/never-committed@99/zarr.json"),
    ] {
        assert_eq!(http(s3.port, "PUT", &planted).unwrap().0, 200);
    }
    let (code, out, err) = run(&mut s3.beamdb(&["verify"]));
    assert_eq!(code, 4, "{out}{err}");
    assert!(out.contains(&format!("{COUNT_RUN}@1234abcd")), "{out}");
    assert!(out.contains("never-committed@99"), "{out}");
    let (code, out, err) = run(&mut s3.beamdb(&["verify", "--repair"]));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(s3.groups("bt"), committed, "{out}");
    let (code, out, err) = run(&mut s3.beamdb(&["verify"]));
    assert_eq!(code, 0, "{out}{err}");
    // A committed frame lost from the store: reported with its array, nothing deleted.
    let group = committed
        .iter()
        .find(|g| g.starts_with(COUNT_RUN))
        .unwrap()
        .clone();
    let chunk = format!("facility/frames/bt/frames.zarr/runs/{group}/primary/ccd/c/2/0/0");
    s3.boto(&format!("c.delete_object(Bucket=bucket, Key='{chunk}')"));
    assert!(!s3.keys().contains(&chunk));
    // A damaged chunk (bytes that do not decode) is found by --deep only.
    let damaged = format!("facility/frames/bt/frames.zarr/runs/{group}/primary/ccd/c/3/0/0");
    s3.boto(&format!(
        "c.put_object(Bucket=bucket, Key='{damaged}', Body=b'not zstd')"
    ));
    let (_, out, err) = run(&mut s3.beamdb(&["verify"]));
    assert!(!out.contains("frame 3:"), "{out}{err}");
    let (code, out, err) = run(&mut s3.beamdb(&["verify", "--deep"]));
    assert_eq!(code, 4, "{out}{err}");
    assert!(out.contains("frame 3:"), "{out}");
    let (code, out, err) = run(&mut s3.beamdb(&["verify", "--repair"]));
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        out.contains("primary/ccd") && out.contains("missing (indexes 2)"),
        "{out}"
    );
    assert_eq!(s3.groups("bt"), committed);
}

/// `beamdb ingest` of the sample runs, as a process of its own (to be killed).
/// `beamdb` as a child of this test (to be killed, or fed on stdin), with only the test
/// credentials and the fixture's scratch folder in its environment.
fn beamdb_child(s3: &S3) -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("beamdb"));
    cmd.current_dir(s3.fx.path())
        .env_clear()
        .env("AWS_ACCESS_KEY_ID", KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("TMPDIR", s3.fx.path());
    cmd
}

pub(crate) fn spawn_ingest(s3: &S3, maps: &[String], inputs: &[PathBuf]) -> std::process::Child {
    beamdb_child(s3)
        .args(ingest_args(maps, inputs, &[]))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ingest")
}

/// `beamdb ingest --beamtime bt -` reading documents from this test through a pipe.
fn spawn_stdin_ingest(s3: &S3, map: &str) -> std::process::Child {
    beamdb_child(s3)
        .args(["ingest", "--beamtime", "bt", "--root-map", map, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// SIGKILL at several points of an S3 ingest: whatever it leaves, `verify --repair` cleans,
/// every committed run stays whole (verify is clean afterwards), and ingesting again
/// completes the beamtime with every frame equal to its source.
#[test]
fn s3_kill_during_ingest_leaves_nothing_that_verify_repair_does_not_clean() {
    let Some(s3) = S3::new("kill") else {
        return;
    };
    let (maps, inputs) = npy_and_hdf5();
    for delay in [30u64, 120, 250, 500, 900, 1400] {
        let mut child = spawn_ingest(&s3, &maps, &inputs);
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
        if !s3.fx.beamtime_db("bt").exists() {
            continue;
        }
        let (code, out, err) = run(&mut s3.beamdb(&["verify", "--repair"]));
        assert!(code == 0 || code == 4, "after {delay} ms: {out}{err}");
        let (code, out, err) = run(&mut s3.beamdb(&["verify"]));
        assert_eq!(code, 0, "after {delay} ms: verify after repair: {out}{err}");
        let conn = s3.fx.open(&s3.fx.beamtime_db("bt"));
        let runs = count(&conn, "SELECT count(*) FROM runs");
        assert_eq!(s3.groups("bt").len() as i64, runs, "after {delay} ms");
    }
    let (code, out, err) = run(&mut s3.beamdb(&ingest_args(&maps, &inputs, &[])));
    assert_eq!(code, 0, "{out}{err}");
    check_frames_over_s3(&s3, &maps, &inputs);
    let (code, out, err) = run(&mut s3.beamdb(&["verify"]));
    assert_eq!(code, 0, "{out}{err}");
    // Nothing local but the database: no frames.zarr, and no frame in a scratch folder a
    // killed ingest left (metadata only).
    assert!(!s3.fx.data_root().join("beamtimes/bt/frames.zarr").exists());
    for entry in std::fs::read_dir(s3.fx.path()).unwrap() {
        let dir = entry.unwrap().path();
        if dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("beamdb-frames-")
        {
            let found = Command::new("find")
                .arg(&dir)
                .args(["-path", "*/ccd/c/*", "-type", "f"])
                .output()
                .unwrap();
            assert!(
                found.stdout.is_empty(),
                "a frame in a scratch folder: {}",
                String::from_utf8_lossy(&found.stdout)
            );
        }
    }
}

/// `--replace` writes a new version, the commit switches to it, and the old version is
/// deleted after the commit; readers of the committed rows never see a missing object.
#[test]
fn s3_replace_writes_a_new_version_and_deletes_the_old_one_after_the_commit() {
    let Some(s3) = S3::new("replace") else {
        return;
    };
    let map = shared_map();
    let source = repo(&format!("tests/data/bluesky/{COUNT_RUN}.jsonl"));
    let args = |extra: &[&str], file: &PathBuf| -> Vec<String> {
        let mut a: Vec<String> = ["ingest", "--beamtime", "bt", "--root-map", &map]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a.push(file.display().to_string());
        a
    };
    let beamdb = |a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        run(&mut s3.beamdb(&a))
    };
    let (code, out, err) = beamdb(args(&[], &source));
    assert_eq!(code, 0, "{out}{err}");
    let first = s3.groups("bt");
    assert_eq!(first.len(), 1);
    let changed = s3.fx.edited_copy(&source, "changed.jsonl", |t| {
        t.replace("\"num_points\": 5", "\"num_points\": 6")
            .replace("\"index\": 4}", "\"index\": 0}")
    });
    let (code, out, err) = beamdb(args(&[], &changed));
    assert_eq!(code, 4, "{out}{err}");
    assert_eq!(s3.groups("bt"), first, "a refused run writes nothing");
    let (code, out, err) = beamdb(args(&["--replace"], &changed));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("replaced the stored run"), "{out}");
    let second = s3.groups("bt");
    assert_eq!(second.len(), 1, "the old version is deleted: {second:?}");
    assert_ne!(second, first);
    let conn = s3.fx.open(&s3.fx.beamtime_db("bt"));
    let named: String = conn
        .query_row(
            "SELECT value FROM beamtime_meta WHERE key = 'frames_group:' || ?1",
            [COUNT_RUN],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(named, second[0]);
    let (code, out, err) = run(&mut s3.beamdb(&["verify"]));
    assert_eq!(code, 0, "{out}{err}");
    // --replace of identical documents: one version stays, named by the rows.
    let (code, out, err) = beamdb(args(&["--replace"], &changed));
    assert_eq!(code, 0, "{out}{err}");
    let third = s3.groups("bt");
    assert_eq!(third.len(), 1, "{third:?}");
    let named: String = conn
        .query_row(
            "SELECT value FROM beamtime_meta WHERE key = 'frames_group:' || ?1",
            [COUNT_RUN],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(named, third[0]);
    let second = third;
    // The fifth frame is now a copy of the first, read back over S3.
    let check = format!(
        r#"
import os, zarr
opts = {{"endpoint_url": os.environ["BEAMDB_TEST_S3_ENDPOINT"]}}
a = zarr.open_array("{}/runs/{}/primary/ccd", mode="r", storage_options=opts)
assert (a[4] == a[0]).all() and a.shape[0] == 5, a.shape
print("ok")
"#,
        s3.store_url("bt"),
        second[0]
    );
    let out = s3.python().args(["-c", &check]).output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A moto server of one test's own, stopped (by PID) when dropped.
struct OwnServer {
    child: std::process::Child,
    port: u16,
}

impl OwnServer {
    fn start() -> OwnServer {
        Self::start_with(&[])
    }

    /// With `env` for moto (`INITIAL_NO_AUTH_ACTION_COUNT=0`: check every request's
    /// credentials, as a real server does).
    fn start_with(env: &[(&str, &str)]) -> OwnServer {
        let port = free_port().unwrap();
        let child = Command::new(python())
            .envs(env.iter().copied())
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto");
        let started = Instant::now();
        while http(port, "GET", "/").is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "moto did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        OwnServer { child, port }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The server goes away mid-ingest: the run being written is retried with backoff, then
/// rejected whole (exit 4) with a message naming the store; the run committed before it
/// stays, and nothing of the failed run is committed.
#[test]
fn s3_server_stopped_mid_ingest_rejects_the_run_whole_with_exit_4() {
    let Some(s3) = S3::new("stopped-mid-ingest") else {
        return;
    };
    let mut own = OwnServer::start();
    assert_eq!(http(own.port, "PUT", "/mid").unwrap().0, 200);
    s3.settings("mid", &format!("http://127.0.0.1:{}", own.port));
    let scalar = repo("tests/data/bluesky/7fbdf1df-8554-4a45-8123-cc03d61f67fc.jsonl");
    let frames = repo(&format!("tests/data/bluesky/{COUNT_RUN}.jsonl"));
    let map = shared_map();
    let mut child = spawn_stdin_ingest(&s3, &map);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&std::fs::read(&scalar).unwrap()).unwrap();
    stdin.flush().unwrap();
    // The first run lands (its stop commits it), then the server goes.
    let started = Instant::now();
    loop {
        let landed = s3.fx.beamtime_db("bt").exists() && {
            let conn = s3.fx.open(&s3.fx.beamtime_db("bt"));
            conn.query_row("SELECT count(*) FROM runs", [], |r| r.get::<_, i64>(0))
                .unwrap_or(0)
                == 1
        };
        if landed {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the first run never landed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    own.stop();
    stdin.write_all(&std::fs::read(&frames).unwrap()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(4), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("rejected  {COUNT_RUN}")),
        "{stdout}"
    );
    assert!(
        stdout.contains("s3://mid/facility/frames/bt/frames.zarr"),
        "{stdout}"
    );
    assert!(!stdout.contains(SECRET) && !stderr.contains(SECRET));
    let conn = s3.fx.open(&s3.fx.beamtime_db("bt"));
    assert_eq!(count(&conn, "SELECT count(*) FROM runs"), 1);
    assert_eq!(count(&conn, "SELECT count(*) FROM image_refs"), 0);
}

/// The run with an inline 10×10 image (read back from the store by export).
const INLINE_RUN: &str = "98786b6e-de87-4ab0-9fb5-338308b26fd2";

/// `export` reads the inline frames back over S3 and gives back every document as it went
/// in; `--self-contained` (resources naming a local store folder) is refused (exit 2, nothing
/// written); `migrate` has nothing to convert; `show` names the run's group by its URL.
#[test]
fn s3_export_reads_frames_back_over_s3_and_refuses_self_contained() {
    let Some(s3) = S3::new("export") else {
        return;
    };
    let map = shared_map();
    let source = repo(&format!("tests/data/bluesky/{INLINE_RUN}.jsonl"));
    let (code, out, err) = run(&mut s3.beamdb(&[
        "ingest",
        "--beamtime",
        "bt",
        "--root-map",
        &map,
        path(&source),
    ]));
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(&mut s3.beamdb(&["export", "--beamtime", "bt", INLINE_RUN]));
    assert_eq!(code, 0, "{out}{err}");
    let docs = |text: &str| -> Vec<serde_json::Value> {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let want = docs(&std::fs::read_to_string(&source).unwrap());
    assert_eq!(
        docs(&out),
        want,
        "the export differs from the documents that went in"
    );
    let (code, out, err) = run(&mut s3.beamdb(&[
        "export",
        "--beamtime",
        "bt",
        "--self-contained",
        "-o",
        "out",
    ]));
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("does not work on an S3 frame store"), "{err}");
    assert!(!s3.fx.path().join("out").exists());
    let (code, out, err) = run(&mut s3.beamdb(&["show", INLINE_RUN, "--json"]));
    assert_eq!(code, 0, "{out}{err}");
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    let group = &s3.groups("bt")[0];
    assert_eq!(
        shown["frames"],
        format!("{}/runs/{group}", s3.store_url("bt"))
    );
    assert_eq!(shown["frames_store"], s3.store_url("bt"));
    assert_eq!(shown["frames_exist"], true);
    assert_eq!(shown["problems"], serde_json::json!([]), "{out}");
    assert!(!out.contains(SECRET) && !err.contains(SECRET));
    // migrate: the databases at head; no store layout to convert on S3.
    for args in [&["migrate", "--check"][..], &["migrate"][..]] {
        let (code, out, err) = run(&mut s3.beamdb(args));
        assert_eq!(code, 0, "{args:?}: {out}{err}");
    }
    // The table names the run's group by its URL too.
    let (code, out, err) = run(&mut s3.beamdb(&["show", INLINE_RUN]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("{}/runs/{group}", s3.store_url("bt"))),
        "{out}"
    );
    assert!(
        !out.contains("MISSING") && !out.contains("PROBLEM"),
        "{out}"
    );
}

/// Hostile names cannot become S3 keys outside the run's own version group, nor forge a
/// version of another run: a uid with `@` (the version separator) or `/`, and a field named
/// like a path, are refused or skipped as on the filesystem; every key stays under the
/// beamtime's store and every group belongs to a committed run.
#[test]
fn s3_hostile_uid_and_field_names_never_become_keys_outside_the_runs_group() {
    let Some(s3) = S3::new("hostile") else {
        return;
    };
    let map = shared_map();
    let source = repo(&format!("tests/data/bluesky/{COUNT_RUN}.jsonl"));
    let forged = s3.fx.edited_copy(&source, "forged.jsonl", |t| {
        t.replace(COUNT_RUN, "682a43b9@1234abcd")
    });
    let slashed = s3.fx.edited_copy(&source, "slashed.jsonl", |t| {
        t.replace(COUNT_RUN, "../../other/frames.zarr/runs/x")
    });
    let field = s3.fx.edited_copy(&source, "field.jsonl", |t| {
        t.replace(COUNT_RUN, "field-run")
            .replace("\"ccd\"", "\"../../../../escape\"")
    });
    for file in [&source, &forged, &slashed, &field] {
        let (code, out, err) =
            run(&mut s3.beamdb(&["ingest", "--beamtime", "bt", "--root-map", &map, path(file)]));
        assert!(code == 0 || code == 4, "{out}{err}");
    }
    let (code, out, err) = run(&mut s3.beamdb(&["verify"]));
    assert_eq!(code, 0, "{out}{err}");
    for key in s3.keys() {
        assert!(
            key.starts_with("facility/frames/bt/frames.zarr/"),
            "{key} escaped the store"
        );
        assert!(!key.contains(".."), "{key}");
    }
    let conn = s3.fx.open(&s3.fx.beamtime_db("bt"));
    let runs = count(&conn, "SELECT count(*) FROM runs");
    assert_eq!(s3.groups("bt").len() as i64, runs);
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM runs WHERE uid LIKE '%@%' OR uid LIKE '%/%'"
        ),
        0
    );
}

/// Credentials the server refuses: exit 2 naming the AWS variables, before anything is
/// created, and the secret never printed.
#[test]
fn s3_refused_credentials_are_exit_2_naming_the_variables() {
    let Some(s3) = S3::new("refused-credentials") else {
        return;
    };
    let own = OwnServer::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]);
    s3.settings("locked", &format!("http://127.0.0.1:{}", own.port));
    let (maps, inputs) = npy_and_hdf5();
    let (code, out, err) = run(&mut s3.beamdb(&ingest_args(&maps, &inputs, &[])));
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("refused the credentials") && err.contains("AWS_ACCESS_KEY_ID"),
        "{err}"
    );
    assert!(!err.contains(SECRET) && !out.contains(SECRET), "{err}");
    assert!(!s3.fx.beamtime_db("bt").exists(), "nothing created");
}

/// A TCP proxy in front of the test server that, once told to, answers every request with
/// `503 Service Unavailable` (and drops the connections it was forwarding): a server that
/// fails mid-ingest, as an overloaded S3 gateway does.
struct FaultProxy {
    port: u16,
    failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FaultProxy {
    fn start(target: u16) -> FaultProxy {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = failing.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let flag = flag.clone();
                std::thread::spawn(move || {
                    if flag.load(Ordering::SeqCst) {
                        answer_503(client);
                        return;
                    }
                    let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                        return;
                    };
                    let pump = |mut from: TcpStream, mut to: TcpStream, flag: std::sync::Arc<std::sync::atomic::AtomicBool>| {
                        let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
                        let mut buf = [0u8; 65536];
                        loop {
                            if flag.load(Ordering::SeqCst) {
                                let _ = from.shutdown(std::net::Shutdown::Both);
                                let _ = to.shutdown(std::net::Shutdown::Both);
                                return;
                            }
                            match from.read(&mut buf) {
                                Ok(0) => {
                                    let _ = to.shutdown(std::net::Shutdown::Write);
                                    return;
                                }
                                Ok(n) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        return;
                                    }
                                }
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock
                                            | std::io::ErrorKind::TimedOut
                                    ) => {}
                                Err(_) => return,
                            }
                        }
                    };
                    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                    let f2 = flag.clone();
                    let up = std::thread::spawn(move || pump(c2, s2, f2));
                    pump(server, client, flag);
                    let _ = up.join();
                });
            }
        });
        FaultProxy { port, failing }
    }

    fn fail(&self) {
        self.failing
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn heal(&self) {
        self.failing
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Reads one request (headers and body) and answers 503.
fn answer_503(mut client: TcpStream) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(5)));
    let mut seen = Vec::new();
    let mut buf = [0u8; 65536];
    let body_start = loop {
        match client.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
        if let Some(at) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&seen[..body_start]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut have = seen.len() - body_start;
    while have < length {
        match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => have += n,
        }
    }
    let _ = client.write_all(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
}

/// The server answers 503 while a run's frames are being uploaded: the requests are retried
/// with backoff, then that run is rejected whole (exit 4) and nothing of it is committed; the
/// run before it stays; once the server is well, `verify --repair` deletes what the failed
/// run uploaded and the beamtime verifies clean.
#[test]
fn s3_a_5xx_mid_run_is_retried_then_the_run_is_rejected_whole() {
    let Some(s3) = S3::new("fault-5xx") else {
        return;
    };
    let proxy = FaultProxy::start(s3.port);
    s3.settings(&s3.bucket, &format!("http://127.0.0.1:{}", proxy.port));
    let scalar = repo("tests/data/bluesky/7fbdf1df-8554-4a45-8123-cc03d61f67fc.jsonl");
    let frames =
        std::fs::read_to_string(repo(&format!("tests/data/bluesky/{COUNT_RUN}.jsonl"))).unwrap();
    let (body, stop) = frames.trim_end().rsplit_once('\n').unwrap();
    let map = shared_map();
    let mut child = spawn_stdin_ingest(&s3, &map);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&std::fs::read(&scalar).unwrap()).unwrap();
    // The second run up to its stop: opened (its versions listed), frames not yet stored.
    stdin.write_all(body.as_bytes()).unwrap();
    stdin.write_all(b"\n").unwrap();
    stdin.flush().unwrap();
    let started = Instant::now();
    while !(s3.fx.beamtime_db("bt").exists()
        && s3
            .fx
            .open(&s3.fx.beamtime_db("bt"))
            .query_row("SELECT count(*) FROM runs", [], |r| r.get::<_, i64>(0))
            .unwrap_or(0)
            == 1)
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the first run never landed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    proxy.fail();
    stdin.write_all(stop.as_bytes()).unwrap();
    stdin.write_all(b"\n").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(4), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("rejected  {COUNT_RUN}")),
        "{stdout}"
    );
    assert!(
        stdout.contains("503") && stdout.contains("retries"),
        "{stdout}"
    );
    assert!(!stdout.contains(SECRET) && !stderr.contains(SECRET));
    let conn = s3.fx.open(&s3.fx.beamtime_db("bt"));
    assert_eq!(count(&conn, "SELECT count(*) FROM runs"), 1);
    assert_eq!(count(&conn, "SELECT count(*) FROM image_refs"), 0);
    proxy.heal();
    let (code, out, err) = run(&mut s3.beamdb(&["verify", "--repair"]));
    assert!(code == 0, "{out}{err}");
    let (code, out, err) = run(&mut s3.beamdb(&["verify"]));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(s3.groups("bt").len(), 1);
}

/// `listen` lands runs from bluesky RunEngines (through the real 0MQ proxy) on S3 as ingest
/// does: every run whole, every frame read back over S3 equal to what the detector wrote,
/// nothing in the local frames folder, verify clean.
#[test]
fn s3_listen_lands_every_run_on_s3() {
    use crate::listen::{
        Killed, Listener, bluesky_python, proxy, publish, published, root_map, stored,
        wait_published,
    };
    let Some(s3) = S3::new("listen") else {
        return;
    };
    let Some(python) = bluesky_python() else {
        return;
    };
    let frames = s3.fx.path().join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    let record = s3.fx.path().join("published.jsonl");
    let ports = (free_port().unwrap(), free_port().unwrap());
    let map = root_map(&frames);
    let tmp = s3.fx.path().display().to_string();
    let listener = Listener::start_with(
        &s3.fx,
        ports.1,
        &["--beamtime", "bt", "--root-map", &map],
        None,
        &[
            ("AWS_ACCESS_KEY_ID", KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
            ("TMPDIR", &tmp),
        ],
    );
    let _proxy = proxy(&python, ports);
    listener.wait_stderr("connected to", Duration::from_secs(30));
    let mut publisher = Killed(publish(&python, ports.0, &frames, &record, "beamline"));
    assert_eq!(wait_published(&mut publisher.0).trim(), "published 5 runs");
    for line in listener.run_lines(5, Duration::from_secs(120)) {
        assert!(line.starts_with("landed "), "{line}");
    }
    let (code, _, stderr) = listener.terminate();
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains(SECRET));
    assert_eq!(stored(&s3.fx), published(&record));
    assert!(!s3.fx.data_root().join("beamtimes/bt/frames.zarr").exists());
    assert_eq!(s3.groups("bt").len(), 5);
    let out = s3
        .python()
        .arg(repo("tests/interop/check_frames.py"))
        .arg(s3.fx.beamtime_db("bt"))
        .arg(s3.store_url("bt"))
        .arg(&record)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("checked 12 frames"),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, out, err) = run(s3
        .beamdb(&["verify"])
        .env("BEAMDB_DATA_ROOT", s3.fx.data_root()));
    assert_eq!(code, 0, "{out}{err}");
}

/// A command run with the wrong `[frames]` settings refuses the beamtime (exit 2, naming
/// the recorded store, the configured one and the setting) before it touches anything: a
/// `verify --repair` without the S3 settings would otherwise quarantine every run whose
/// frames are on S3, and the next, correctly configured repair delete their frames.
#[test]
fn s3_a_beamtime_on_s3_is_refused_by_a_command_set_up_for_the_filesystem() {
    let Some(s3) = S3::new("elsewhere") else {
        return;
    };
    let (maps, inputs) = npy_and_hdf5();
    let (code, out, err) = run(&mut s3.beamdb(&ingest_args(&maps, &inputs, &[])));
    assert_eq!(code, 0, "{out}{err}");
    let committed = s3.groups("bt");
    let image_refs = || {
        let conn = rusqlite::Connection::open(s3.fx.beamtime_db("bt")).unwrap();
        count(&conn, "SELECT count(*) FROM image_refs")
    };
    let rows = image_refs();
    s3.fx.write("settings.toml", "");
    for args in [
        vec!["verify", "--repair"],
        vec!["verify"],
        ingest_args(&maps, &inputs, &["--replace"]),
    ] {
        let (code, out, err) = run(&mut s3.beamdb(&args));
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains(&s3.store_url("bt")), "{err}");
        assert!(err.contains("filesystem"), "{err}");
        assert!(err.contains("[frames] url"), "{err}");
    }
    assert!(!s3.fx.path().join("beamtimes/bt/quarantine").exists());
    assert_eq!(image_refs(), rows);
    s3.settings(&s3.bucket.clone(), &s3.endpoint.clone());
    let (code, out, err) = run(&mut s3.beamdb(&["verify", "--repair"]));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(s3.groups("bt"), committed);
}

/// Two data roots with the same beamtime id under one `[frames] url` share one S3 prefix:
/// the store belongs to the beamtime database that created it (an owner token in both), and
/// the other data root's ingest and `verify --repair` refuse it (exit 2), deleting nothing.
#[test]
fn s3_a_store_owned_by_another_beamtime_database_is_refused_and_never_repaired() {
    let Some(s3) = S3::new("owner") else {
        return;
    };
    let (maps, inputs) = npy_and_hdf5();
    let (code, out, err) = run(&mut s3.beamdb(&ingest_args(&maps, &inputs, &[])));
    assert_eq!(code, 0, "{out}{err}");
    let committed = s3.groups("bt");
    let other = S3 {
        fx: Fixture::new(),
        bucket: s3.bucket.clone(),
        endpoint: s3.endpoint.clone(),
        port: s3.port,
    };
    other.settings(&other.bucket.clone(), &other.endpoint.clone());
    // The other data root's beamtime, with one run of its own (no frames), then a repair.
    let (code, out, err) = run(&mut other.beamdb(&ingest_args(&maps, &inputs, &[])));
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains(&s3.store_url("bt")), "{err}");
    assert!(err.contains("another beamtime database"), "{err}");
    for args in [["verify", "--repair"], ["verify", "--deep"]] {
        let (code, out, err) = run(&mut other.beamdb(&args));
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains("another beamtime database"), "{err}");
    }
    assert_eq!(s3.groups("bt"), committed);
    let (code, out, err) = run(&mut s3.beamdb(&["verify", "--deep"]));
    assert_eq!(code, 0, "{out}{err}");
}

/// A proxy in front of the test server that answers every delete (`DELETE`, or the bulk
/// `POST ?delete`) with 503: a store that fails exactly when old objects are being removed.
fn no_delete_proxy(target: u16) -> u16 {
    refusing_proxy(target, |line| {
        line.starts_with("DELETE ") || (line.starts_with("POST ") && line.contains("?delete"))
    })
    .0
}

/// What [`refusing_proxy`] answers a refused request with: an S3 error whose request id
/// stands for what a message must not repeat (a response body is never printed whole).
const REFUSED_BODY: &str = "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message><RequestId>BODY-NEVER-PRINTED</RequestId></Error>";

/// A proxy in front of the test server that answers the requests whose request line
/// `refuse` picks with 503 and [`REFUSED_BODY`], and forwards every other request, one
/// request per connection to the server.
/// Returns the port and the count of refused requests.
fn refusing_proxy(
    target: u16,
    refuse: fn(&str) -> bool,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = refused.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { continue };
            let counter = counter.clone();
            std::thread::spawn(move || {
                let _ = client.set_read_timeout(Some(Duration::from_secs(10)));
                let mut seen: Vec<u8> = Vec::new();
                let mut buf = [0u8; 65536];
                loop {
                    // One request: headers, then Content-Length bytes of body.
                    let body_start = loop {
                        if let Some(at) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            break at + 4;
                        }
                        match client.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&seen[..body_start]).to_string();
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().to_string())
                        })
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let chunked = head
                        .to_ascii_lowercase()
                        .contains("transfer-encoding: chunked");
                    let end = loop {
                        if chunked {
                            if let Some(at) = seen[body_start..]
                                .windows(5)
                                .position(|w| w == b"0\r\n\r\n")
                            {
                                break body_start + at + 5;
                            }
                        } else if seen.len() >= body_start + length {
                            break body_start + length;
                        }
                        match client.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    };
                    let request: Vec<u8> = seen.drain(..end).collect();
                    let line = head.lines().next().unwrap_or("");
                    if refuse(line) {
                        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let _ = client.write_all(
                            format!(
                                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{REFUSED_BODY}",
                                REFUSED_BODY.len()
                            )
                            .as_bytes(),
                        );
                        continue;
                    }
                    // Forwarded with `Connection: close`: the answer is everything the
                    // server sends.
                    let text = String::from_utf8_lossy(&request[..body_start]).replacen(
                        "\r\n\r\n",
                        "\r\nConnection: close\r\n\r\n",
                        1,
                    );
                    let text = text
                        .lines()
                        .filter(|l| !l.to_ascii_lowercase().starts_with("connection: keep"))
                        .collect::<Vec<_>>()
                        .join("\r\n")
                        .trim_end()
                        .to_string();
                    let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)) else {
                        return;
                    };
                    let _ = server.write_all(text.as_bytes());
                    let _ = server.write_all(b"\r\n\r\n");
                    let _ = server.write_all(&request[body_start..]);
                    let mut answer = Vec::new();
                    let _ = server.read_to_end(&mut answer);
                    // The server closed its side: so does the proxy, once answered.
                    let _ = client.write_all(&answer);
                    return;
                }
            });
        }
    });
    (port, refused)
}

/// `ingest --replace` on S3 whose deletion of the old version fails after the commit: the
/// run is landed (the commit stands), a warning says the old version is left for
/// `verify --repair`, and the ingest goes on with the next run (exit 0).
#[test]
fn s3_a_failed_delete_of_the_old_version_after_the_commit_is_a_warning() {
    let Some(s3) = S3::new("drop-old") else {
        return;
    };
    let (maps, inputs) = npy_and_hdf5();
    let (code, out, err) = run(&mut s3.beamdb(&ingest_args(&maps, &inputs, &[])));
    assert_eq!(code, 0, "{out}{err}");
    let before = s3.groups("bt").len();
    let proxy = no_delete_proxy(s3.port);
    s3.settings(&s3.bucket, &format!("http://127.0.0.1:{proxy}"));
    let changed = s3.fx.edited_copy(
        &repo(&format!("tests/data/bluesky/{COUNT_RUN}.jsonl")),
        "changed.jsonl",
        |t| t.replace("\"num_points\": 5", "\"num_points\": 6"),
    );
    let scalar = repo("tests/data/bluesky/7fbdf1df-8554-4a45-8123-cc03d61f67fc.jsonl");
    let map = shared_map();
    let (code, out, err) = run(&mut s3.beamdb(&[
        "ingest",
        "--beamtime",
        "bt",
        "--replace",
        "--root-map",
        &map,
        path(&changed),
        path(&scalar),
    ]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("landed    {COUNT_RUN}")), "{out}");
    // The ingest went on with the next input.
    assert!(
        out.contains("7fbdf1df-8554-4a45-8123-cc03d61f67fc"),
        "{out}"
    );
    assert!(err.contains("verify --repair"), "{err}");
    assert!(s3.groups("bt").len() > before, "the old version is left");
    s3.settings(&s3.bucket.clone(), &s3.endpoint.clone());
    let (code, out, err) = run(&mut s3.beamdb(&["verify", "--repair"]));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(s3.groups("bt").len(), before);
}

/// A listing that keeps failing (503 after the retries) on a brand-new store, whose
/// `zarr.json` a HEAD then finds missing, is a store that cannot be reached (exit 1), not a
/// missing bucket (exit 2); the message gives the status and the S3 error's code and
/// message, never the response body otherwise.
#[test]
fn s3_a_failing_listing_is_not_a_missing_bucket_and_prints_no_response_body() {
    let Some(s3) = S3::new("flaky-list") else {
        return;
    };
    let (proxy, _) = refusing_proxy(s3.port, |line| line.contains("list-type=2"));
    s3.settings(&s3.bucket, &format!("http://127.0.0.1:{proxy}"));
    let (maps, inputs) = npy_and_hdf5();
    let (code, out, err) = run(&mut s3.beamdb(&ingest_args(&maps, &inputs, &[])));
    assert_eq!(code, 1, "{out}{err}");
    assert!(!err.contains("does not exist"), "{err}");
    assert!(err.contains("cannot reach the bucket"), "{err}");
    assert!(err.contains("503"), "{err}");
    assert!(
        err.contains("SlowDown") && err.contains("Please reduce your request rate."),
        "{err}"
    );
    assert!(
        !err.contains("BODY-NEVER-PRINTED") && !err.contains("<Error>"),
        "{err}"
    );
    assert!(!s3.fx.beamtime_db("bt").exists(), "nothing created");
}

/// A store that refuses every frame of a run: the run is rejected at the first frame that
/// fails after its retries, the frames not yet tried are skipped (not each retried in
/// turn, which takes minutes in an outage).
#[test]
fn s3_a_run_whose_frames_fail_stops_at_the_first_failed_frame() {
    let Some(s3) = S3::new("first-failure") else {
        return;
    };
    let (proxy, refused) = refusing_proxy(s3.port, |line| {
        line.starts_with("PUT ") && line.contains("/primary/ccd/c/")
    });
    s3.settings(&s3.bucket, &format!("http://127.0.0.1:{proxy}"));
    let map = shared_map();
    let source = repo(&format!("tests/data/bluesky/{COUNT_RUN}.jsonl"));
    let (code, out, err) = run(s3
        .beamdb(&[
            "ingest",
            "--beamtime",
            "bt",
            "--root-map",
            &map,
            path(&source),
        ])
        .env("RAYON_NUM_THREADS", "2"));
    assert_eq!(code, 4, "{out}{err}");
    assert!(out.contains(&format!("rejected  {COUNT_RUN}")), "{out}");
    // 5 frames, each tried 1 + 6 times: all of them would be 35 refused requests; two
    // threads stop after their first failed frames.
    let refused = refused.load(std::sync::atomic::Ordering::SeqCst);
    assert!(refused <= 3 * 7, "{refused} refused requests");
}
