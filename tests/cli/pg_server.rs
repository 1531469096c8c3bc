//! One throw-away PostgreSQL server per test process (scripts/pg-server: loopback, a private
//! port, its socket and data in a temp dir, stopped by PID when this process exits), and a
//! database of its own for each test, so that tests stay parallel.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use beamdb::index::pg::postgres;

use crate::common::repo;

pub struct Server {
    /// Its data, socket and log (server.log), for a look after a failure.
    #[allow(dead_code)]
    pub dir: PathBuf,
    pub port: u16,
    /// The superuser `beamdb_admin`'s password.
    pub password: String,
}

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();

/// The server, or `None` (having printed why) when it cannot start and CI does not require
/// it. Under `BEAMDB_REQUIRE_SERVERS` a missing server fails the test.
pub fn server() -> Option<&'static Server> {
    match SERVER.get_or_init(start) {
        Ok(server) => Some(server),
        Err(why) if std::env::var_os("BEAMDB_REQUIRE_SERVERS").is_some() => {
            panic!("PostgreSQL could not be started and BEAMDB_REQUIRE_SERVERS is set: {why}")
        }
        Err(why) => {
            println!("skipped: {why}; run bash scripts/test (it installs and starts PostgreSQL)");
            None
        }
    }
}

/// A port nobody listens on now (the OS picks it; the server binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn start() -> Result<Server, String> {
    Server::start_private()
}

impl Server {
    /// A server of its own, for a test that stops it (the shared one must stay up).
    pub fn start_private() -> Result<Server, String> {
        start_in(free_port())
    }

    /// Stops the server (PostgreSQL's fast shutdown: open transactions roll back).
    pub fn stop(&self) {
        let status = std::process::Command::new("bash")
            .arg(repo("scripts/pg-server"))
            .arg("stop")
            .arg(&self.dir)
            .status()
            .expect("run scripts/pg-server stop");
        assert!(status.success(), "scripts/pg-server stop failed");
    }

    /// Starts it again, on the same port, with the same data.
    pub fn restart(&self) {
        let restarted = start_in_dir(&self.dir, self.port).expect("restart PostgreSQL");
        assert_eq!(restarted.port, self.port);
    }
}

fn start_in(port: u16) -> Result<Server, String> {
    let dir = tempfile::Builder::new()
        .prefix("beamdb-pg-")
        .tempdir()
        .map_err(|e| format!("no temp dir: {e}"))?
        // The watcher started by pg-server removes it when this process ends.
        .keep();
    start_in_dir(&dir, port)
}

fn start_in_dir(dir: &std::path::Path, port: u16) -> Result<Server, String> {
    let dir = dir.to_path_buf();
    let out = std::process::Command::new("bash")
        .arg(repo("scripts/pg-server"))
        .arg("start")
        .arg(&dir)
        .arg(port.to_string())
        .arg(std::process::id().to_string())
        .output()
        .map_err(|e| format!("cannot run scripts/pg-server: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "scripts/pg-server could not start PostgreSQL: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let password = std::fs::read_to_string(dir.join("password"))
        .map_err(|e| format!("no password file: {e}"))?
        .trim()
        .to_string();
    Ok(Server {
        dir,
        port,
        password,
    })
}

impl Server {
    /// A connection as the superuser to database `db`.
    pub fn admin(&self, db: &str) -> postgres::Client {
        postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user("beamdb_admin")
            .password(&self.password)
            .dbname(db)
            .connect(postgres::NoTls)
            .expect("connect as beamdb_admin")
    }

    /// A new, empty database for one test; its name.
    pub fn database(&self) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        self.admin("postgres")
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create database");
        name
    }

    /// The URL of database `db`, without a password (tests give it as PGPASSWORD).
    pub fn url(&self, db: &str) -> String {
        format!("postgresql://beamdb_admin@127.0.0.1:{}/{db}", self.port)
    }
}
