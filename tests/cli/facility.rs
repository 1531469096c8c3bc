//! Issue 16's "done when", whole: one beamdb built with `--features postgres,s3`, its index on
//! a real PostgreSQL and its frames on a real S3-compatible server (moto) at once.

use std::time::Duration;

use crate::common::{count, run};
use crate::pg_server::server as postgres;
use crate::s3::{S3, check_frames_over_s3, ingest_args, npy_and_hdf5, spawn_ingest};

/// A fixture whose frames go to a bucket of the S3 test server and whose index is a new
/// database of the PostgreSQL test server; `beamdb` runs with both servers' credentials.
struct Facility {
    s3: S3,
    index_url: String,
    password: String,
}

impl Facility {
    fn new(name: &str) -> Option<Facility> {
        let pg = postgres()?;
        let s3 = S3::new(name)?;
        let index_url = pg.url(&pg.database());
        let settings = std::fs::read_to_string(s3.fx.path().join("settings.toml")).unwrap();
        s3.fx.write(
            "settings.toml",
            &format!("{settings}\n[index]\nurl = \"{index_url}\"\n"),
        );
        Some(Facility {
            s3,
            index_url,
            password: pg.password.clone(),
        })
    }

    fn beamdb(&self, args: &[&str]) -> (i32, String, String) {
        let (code, out, err) = run(self.s3.beamdb(args).env("PGPASSWORD", &self.password));
        assert!(
            !out.contains(&self.password) && !err.contains(&self.password),
            "the index password leaked: {out}{err}"
        );
        (code, out, err)
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.beamdb(args);
        assert_eq!(code, 0, "beamdb {args:?}: {out}{err}");
        out
    }

    fn index_count(&self, sql: &str) -> i64 {
        let pg = postgres().expect("started by new()");
        let db = self.index_url.rsplit('/').next().unwrap();
        pg.admin(db).query_one(sql, &[]).unwrap().get(0)
    }
}

#[test]
fn facility_postgres_index_and_s3_frames_together() {
    let Some(f) = Facility::new("facility") else {
        return;
    };
    f.ok(&["initdb", "--beamtime", "bt"]);
    let (maps, inputs) = npy_and_hdf5();
    // A kill during the S3 ingest first: verify --repair cleans whatever it left (the
    // committed runs stay whole), and the next ingest completes the beamtime.
    let mut child = spawn_ingest(&f.s3, &maps, &inputs);
    std::thread::sleep(Duration::from_millis(600));
    let _ = child.kill();
    let _ = child.wait();
    let (code, out, err) = f.beamdb(&["verify", "--repair"]);
    assert!(code == 0 || code == 4, "{out}{err}");
    f.ok(&["verify"]);
    let conn = f.s3.fx.open(&f.s3.fx.beamtime_db("bt"));
    let survived = count(&conn, "SELECT count(*) FROM runs");
    assert_eq!(f.s3.groups("bt").len() as i64, survived);

    let out = f.ok(&ingest_args(&maps, &inputs, &[]));
    assert!(out.contains("rejected 0"), "{out}");
    f.ok(&["reindex"]);

    // Every run is a row of PostgreSQL's runs_index, and runs --json lists them all, each
    // with its frames on S3.
    let runs = count(&conn, "SELECT count(*) FROM runs");
    assert!(runs >= 4, "{out}");
    assert_eq!(
        f.index_count("SELECT count(*) FROM runs_index WHERE beamtime_id = 'bt'"),
        runs
    );
    let listed: Vec<serde_json::Value> = serde_json::from_str(&f.ok(&["runs", "--json"])).unwrap();
    assert_eq!(listed.len() as i64, runs);
    for run in &listed {
        let frames = run["frames"].as_str().unwrap_or_default();
        assert!(
            frames.starts_with(&f.s3.store_url("bt")),
            "{frames} is not in the beamtime's S3 store"
        );
    }

    // Nothing local but the beamtime database: no index.db, no frames folder.
    assert!(!f.s3.fx.data_root().join("index.db").exists());
    assert!(
        !f.s3
            .fx
            .data_root()
            .join("beamtimes/bt/frames.zarr")
            .exists()
    );
    check_frames_over_s3(&f.s3, &maps, &inputs);
    f.ok(&["verify"]);

    assert_eq!(f.s3.groups("bt").len() as i64, runs);
}
