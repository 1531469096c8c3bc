//! The fixture every test uses: a temp dir as the working directory, the environment cleared
//! (no stray BEAMDB_* or RUST_LOG), and the built binary.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use rusqlite::Connection;

pub struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_root(&self) -> PathBuf {
        self.path().join("beamdb-data")
    }

    /// `beamdb ARGS` in the temp dir with a clean environment.
    pub fn beamdb(&self, args: &[&str]) -> Command {
        let mut cmd = Command::cargo_bin("beamdb").expect("beamdb binary");
        cmd.current_dir(self.path()).env_clear().args(args);
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        cmd
    }

    pub fn write(&self, relative: &str, text: &str) -> PathBuf {
        let path = self.path().join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, text).expect("write");
        path
    }

    /// A copy of `source` with `edit` applied to its text, saved as `name` in the temp dir.
    pub fn edited_copy(
        &self,
        source: &Path,
        name: &str,
        edit: impl Fn(String) -> String,
    ) -> PathBuf {
        let text = std::fs::read_to_string(source).expect("test input");
        self.write(name, &edit(text))
    }

    pub fn beamtime_db(&self, id: &str) -> PathBuf {
        self.data_root()
            .join("beamtimes")
            .join(id)
            .join("beamtime.db")
    }

    pub fn open(&self, path: &Path) -> Connection {
        Connection::open(path).expect("open")
    }
}

/// Runs `cmd` and returns (exit code, stdout, stderr).
pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("run beamdb");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).expect(sql)
}

/// The repository's own files (models, migrations), for tests that copy them.
pub fn repo(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

pub fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The frame store of beamtime `bt`, which the ingest tests use.
pub fn store(fx: &Fixture) -> PathBuf {
    fx.data_root().join("beamtimes/bt/frames.zarr")
}

/// Rows in runs, events and image_refs of beamtime `bt`; none when an ingest that landed
/// nothing left no beamtime behind.
pub fn counts(fx: &Fixture) -> (i64, i64, i64) {
    if !fx.beamtime_db("bt").exists() {
        return (0, 0, 0);
    }
    let conn = fx.open(&fx.beamtime_db("bt"));
    (
        count(&conn, "SELECT count(*) FROM runs"),
        count(&conn, "SELECT count(*) FROM events"),
        count(&conn, "SELECT count(*) FROM image_refs"),
    )
}

/// The Python of the interop checks (zarr-python, h5py).
pub fn python() -> String {
    match std::env::var("BEAMDB_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => p,
        _ => panic!(
            "BEAMDB_TEST_PYTHON is not set: the zarr-python interop check needs it; run `bash scripts/test`, which sets up .venv from tests/requirements.txt"
        ),
    }
}
/// The ingest root map for the shared test runs.
pub fn shared_map() -> String {
    format!(
        "/srv/beamline/shared/frames={}",
        repo("tests/data/bluesky/frames").display()
    )
}

/// DESIGN's promise about one beamtime database, checked from outside beamdb: SQLite is
/// intact, foreign keys hold, and every run is whole: as many events per stream as its stop
/// document says, num_events agreeing, one image_ref per frame field of each event.
pub fn assert_whole(conn: &Connection) {
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(integrity, "ok");
    assert_eq!(
        count(conn, "SELECT count(*) FROM pragma_foreign_key_check"),
        0,
        "foreign keys"
    );
    let mut stmt = conn
        .prepare("SELECT uid, num_events, stop_metadata FROM runs")
        .expect("runs");
    let runs: Vec<(String, i64, Option<String>)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("runs")
        .map(|r| r.expect("row"))
        .collect();
    for (uid, num_events, stop) in runs {
        let stored: i64 = conn
            .query_row(
                "SELECT count(*) FROM events e JOIN streams s ON s.uid = e.stream_uid WHERE s.run_uid = ?1",
                [&uid],
                |r| r.get(0),
            )
            .expect("count");
        let stop: serde_json::Value =
            serde_json::from_str(stop.as_deref().unwrap_or("null")).expect("stop json");
        let said: i64 = stop["num_events"]
            .as_object()
            .map(|m| m.values().filter_map(serde_json::Value::as_i64).sum())
            .unwrap_or(stored);
        assert_eq!((stored, num_events), (said, said), "run {uid} is not whole");
    }
}

/// Turns `fx` into a configuration repository: copies of the shipped models and migrations,
/// and settings that point at them (models/, m/).
pub fn config_repo(fx: &Fixture) {
    for kind in ["beamtime", "index"] {
        fx.write(
            &format!("models/{kind}.toml"),
            &std::fs::read_to_string(repo(&format!("config/models/{kind}.toml"))).expect("model"),
        );
        // Every shipped migration, as a facility's copy would hold them.
        for entry in std::fs::read_dir(repo(&format!("migrations/{kind}"))).expect("migrations") {
            let name = entry.expect("migration").file_name();
            let name = name.to_string_lossy();
            fx.write(
                &format!("m/{kind}/{name}"),
                &std::fs::read_to_string(repo(&format!("migrations/{kind}/{name}")))
                    .expect("migration"),
            );
        }
    }
    fx.write(
        "settings.toml",
        "[schema]\nmodels_dir = \"models\"\nmigrations_dir = \"m\"\n",
    );
}
