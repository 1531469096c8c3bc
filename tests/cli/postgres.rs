//! The index on PostgreSQL: settings and secrets (every build), and with the `postgres`
//! feature the real server (see `pg_server`).

use crate::common::{Fixture, run};

/// What no output of beamdb may contain.
const SECRET: &str = "hunter2-Sekret";

fn assert_no_secret(stdout: &str, stderr: &str) {
    assert!(
        !stdout.contains(SECRET) && !stderr.contains(SECRET),
        "the password leaked:\n{stdout}\n{stderr}"
    );
}

#[test]
fn settings_bad_index_urls_exit_2_naming_the_key_without_the_password() {
    let fx = Fixture::new();
    for url in [
        format!("mysql://u:{SECRET}@h/db"),
        format!("postgresql://u:{SECRET}@h:99999/db"),
        format!("postgresql://u:{SECRET}@h/"),
        format!("postgresql://:{SECRET}@h/db"),
        format!("postgresql://u:{SECRET}@h/db?sslmode=require"),
        format!("postgresql://u:{SECRET}@h/db?options=-csearch_path%3Devil"),
        format!("postgresql://u:{SECRET}/db"),
        // Review #4: an unescaped #, ?, / or & in a password moves every boundary.
        format!("postgresql://u:Xy#{SECRET}@h:5432/db"),
        format!("postgresql://u:Xy?{SECRET}@h:5432/db"),
        format!("postgresql://u:Xy/{SECRET}@h:5432/db"),
        format!("postgresql://u@h:5432/db?password=Xy&{SECRET}"),
        format!("postgresql://u@h:5432/db?connect_timeout={SECRET}"),
        format!("/srv/{SECRET}/index.db"),
    ] {
        fx.write(
            "settings.toml",
            &format!("[index]\nurl = {}\n", toml_string(&url)),
        );
        let (code, out, err) = run(&mut fx.beamdb(&["runs"]));
        assert_eq!(code, 2, "{url}: {err}");
        assert!(
            err.contains("settings.toml:2") && err.contains("url"),
            "{url}: {err}"
        );
        if !url.starts_with('/') {
            assert_no_secret(&out, &err);
        }
        // The same URL from the environment: named by its variable.
        std::fs::remove_file(fx.path().join("settings.toml")).unwrap();
        let (code, out, err) = run(fx.beamdb(&["runs"]).env("BEAMDB_INDEX_URL", &url));
        assert_eq!(code, 2, "{url}: {err}");
        assert!(err.contains("$BEAMDB_INDEX_URL"), "{url}: {err}");
        if !url.starts_with('/') {
            assert_no_secret(&out, &err);
        }
    }
}

/// A facility's own migrations folder with `index-postgres/`: the promoted column of its
/// model becomes a migration in each dialect, and `--check` checks each.
pub fn facility_with_postgres_twins(fx: &Fixture) {
    crate::common::config_repo(fx);
    std::fs::create_dir_all(fx.path().join("m/index-postgres")).unwrap();
    let (code, out, err) =
        run(&mut fx.beamdb(&["make-migrations", "--target", "index", "--check"]));
    assert_eq!(code, 3, "the twins of V1 and V2 are missing: {out}{err}");
    assert!(
        out.contains("V1__initial") && out.contains("V2__runstart_metadata"),
        "{out}"
    );
    let (code, out, err) = run(&mut fx.beamdb(&["make-migrations"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("index (PostgreSQL): wrote"), "{out}");
    let path = fx.path().join("models/beamtime.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let plan = "  { name = \"plan_name\", type = \"TEXT\" },\n";
    assert!(text.contains(plan));
    std::fs::write(
        &path,
        text.replacen(
            plan,
            &format!("{plan}  {{ name = \"proposal\", type = \"TEXT\", nullable = true }},\n  {{ name = \"energy\", type = \"REAL\", nullable = true }},\n  {{ name = \"shift\", type = \"INTEGER\", nullable = true }},\n"),
            1,
        ),
    )
    .unwrap();
    let (code, out, err) = run(&mut fx.beamdb(&["make-migrations", "--check"]));
    assert_eq!(code, 3, "{out}{err}");
    let (code, out, err) = run(&mut fx.beamdb(&["make-migrations", "--name", "proposal"]));
    assert_eq!(code, 0, "{out}{err}");
    let twin = std::fs::read_to_string(fx.path().join("m/index-postgres/V3__proposal.sql"))
        .expect("the PostgreSQL twin of V3");
    assert!(
        twin.contains("ALTER TABLE \"runs_index\" ADD COLUMN \"proposal\" TEXT;")
            && twin.contains("ALTER TABLE \"runs_index\" ADD COLUMN \"energy\" DOUBLE PRECISION;")
            && twin.contains("CREATE INDEX \"runs_index_proposal\""),
        "{twin}"
    );
    let (code, out, err) = run(&mut fx.beamdb(&["make-migrations", "--check"]));
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn make_migrations_writes_and_checks_the_postgres_twins_of_index_migrations() {
    let fx = Fixture::new();
    facility_with_postgres_twins(&fx);
    // A twin gone: --check says which, exit 3; make-migrations writes it again.
    std::fs::remove_file(fx.path().join("m/index-postgres/V3__proposal.sql")).unwrap();
    let (code, out, err) = run(&mut fx.beamdb(&["make-migrations", "--check"]));
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.contains("V3__proposal"), "{out}");
    let (code, out, err) = run(&mut fx.beamdb(&["make-migrations"]));
    assert_eq!(code, 0, "{out}{err}");
    // A twin edited by hand is never overwritten.
    std::fs::write(
        fx.path().join("m/index-postgres/V3__proposal.sql"),
        "SELECT 1;\n",
    )
    .unwrap();
    let (code, out, err) = run(&mut fx.beamdb(&["make-migrations"]));
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("never overwrites"), "{err}");
    assert_eq!(
        std::fs::read_to_string(fx.path().join("m/index-postgres/V3__proposal.sql")).unwrap(),
        "SELECT 1;\n"
    );
}

#[cfg(not(feature = "postgres"))]
#[test]
fn settings_postgres_url_in_a_build_without_the_feature_exits_2() {
    let fx = Fixture::new();
    let url = format!("postgresql://beamdb:{SECRET}@127.0.0.1:5432/index");
    fx.write("settings.toml", &format!("[index]\nurl = \"{url}\"\n"));
    let (code, out, err) = run(&mut fx.beamdb(&["runs"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`postgres` feature"), "{err}");
    assert_no_secret(&out, &err);
    std::fs::remove_file(fx.path().join("settings.toml")).unwrap();
    let (code, out, err) = run(fx.beamdb(&["reindex"]).env("BEAMDB_INDEX_URL", &url));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`postgres` feature"), "{err}");
    assert_no_secret(&out, &err);
}

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(feature = "postgres")]
mod server {
    use super::{SECRET, assert_no_secret};
    use crate::common::{Fixture, run};
    use crate::models::run_jsonl;
    use crate::pg_server::{Server, free_port, server};

    /// A data root whose settings point the index at a fresh database of the test server.
    struct PgFixture {
        fx: Fixture,
        server: &'static Server,
        db: String,
    }

    impl PgFixture {
        fn new(server: &'static Server) -> PgFixture {
            let db = server.database();
            PgFixture::on(server, db)
        }

        fn on(server: &'static Server, db: String) -> PgFixture {
            let fx = Fixture::new();
            fx.write(
                "settings.toml",
                &format!("[index]\nurl = \"{}\"\n", server.url(&db)),
            );
            PgFixture { fx, server, db }
        }

        fn beamdb(&self, args: &[&str]) -> assert_cmd::Command {
            let mut cmd = self.fx.beamdb(args);
            cmd.env("PGPASSWORD", &self.server.password);
            cmd
        }

        /// `beamdb ARGS` started in the background, its output piped.
        fn spawn(&self, args: &[&str]) -> std::process::Child {
            std::process::Command::new(assert_cmd::cargo::cargo_bin("beamdb"))
                .current_dir(self.fx.path())
                .env_clear()
                .env("PGPASSWORD", &self.server.password)
                .args(args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn beamdb")
        }

        fn ok(&self, args: &[&str]) -> String {
            let (code, out, err) = run(&mut self.beamdb(args));
            assert_eq!(code, 0, "beamdb {args:?}: {out}{err}");
            out
        }

        fn count(&self, sql: &str) -> i64 {
            self.server
                .admin(&self.db)
                .query_one(sql, &[])
                .expect(sql)
                .get(0)
        }

        /// The uids `runs --json ARGS` lists, in its order.
        fn found(&self, args: &[&str]) -> Vec<String> {
            let mut all = vec!["runs", "--json"];
            all.extend_from_slice(args);
            uids(&self.ok(&all))
        }
    }

    fn uids(json: &str) -> Vec<String> {
        let runs: Vec<serde_json::Value> = serde_json::from_str(json).expect("runs --json");
        runs.iter()
            .map(|r| r["uid"].as_str().expect("uid").to_string())
            .collect()
    }

    /// The sample runs of tests/cli/search.rs, and two hostile ones, in bt-1 and bt-2.
    /// Runs beamdb with some arguments: (exit code, stdout, stderr).
    type Beamdb<'a> = &'a dyn Fn(&[&str]) -> (i32, String, String);

    fn ingest_sample(fx: &Fixture, beamdb: Beamdb<'_>) {
        let runs = [
            (
                "a",
                serde_json::json!({"temperature": 300, "sample": {"name": "P3HT-a"}, "purpose": "anneal the P3HT film", "proposal": "p-1"}),
            ),
            (
                "b",
                serde_json::json!({"temperature": 350.5, "sample": {"name": "PS"}, "purpose": "anneal PS"}),
            ),
            (
                "c",
                serde_json::json!({"temperature": "300", "sample": {"name": "P3HT-b"}, "purpose": "quench P3HT"}),
            ),
            ("d", serde_json::json!({"sample": "P3HT-c", "cold": true})),
            (
                "e",
                serde_json::json!({"purpose": "anneal anneal anneal", "notes": ["anneal", "again"]}),
            ),
            (
                "g",
                serde_json::json!({"purpose": "x'); DROP TABLE runs_index; --", "odd": "nul\u{0}byte", "sample": {"name": "50%_off"}}),
            ),
        ];
        let text: String = runs
            .iter()
            .enumerate()
            .map(|(i, (uid, extra))| {
                run_jsonl(uid, 1_795_000_000.0 + i as f64 * 100.0, extra.clone())
            })
            .collect();
        let path = fx.write("runs.jsonl", &text);
        let (code, out, err) = beamdb(&["ingest", "--beamtime", "bt-1", path.to_str().unwrap()]);
        assert_eq!(code, 0, "{out}{err}");
        let other = fx.write(
            "other.jsonl",
            &run_jsonl(
                "f",
                1_795_001_000.0,
                serde_json::json!({"purpose": "anneal P3HT again", "temperature": 400}),
            ),
        );
        let (code, out, err) = beamdb(&["ingest", "--beamtime", "bt-2", other.to_str().unwrap()]);
        assert_eq!(code, 0, "{out}{err}");
    }

    #[test]
    fn postgres_initdb_ingest_reindex_runs_json_and_verify_work() {
        let Some(server) = server() else { return };
        let pg = PgFixture::new(server);
        // Before initdb every migration is pending: --check says so (3), --dry-run writes nothing.
        std::fs::create_dir_all(pg.fx.data_root().join("beamtimes")).unwrap();
        let (code, out, err) = run(&mut pg.beamdb(&["migrate", "--check"]));
        assert_eq!(code, 3, "{out}{err}");
        assert!(
            out.contains("pending V1__initial, V2__runstart_metadata"),
            "{out}"
        );
        let (code, out, err) = run(&mut pg.beamdb(&["migrate", "--dry-run"]));
        assert_eq!(code, 0, "{out}{err}");
        assert_eq!(
            pg.count("SELECT count(*) FROM pg_tables WHERE tablename = 'runs_index'"),
            0
        );
        pg.ok(&["initdb"]);
        // Twice: the second finds it up to date.
        pg.ok(&["initdb"]);
        let (code, out, err) = run(&mut pg.beamdb(&["migrate", "--check"]));
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("up to date"), "{out}");
        pg.ok(&["migrate"]);
        ingest_sample(&pg.fx, &|args| run(&mut pg.beamdb(args)));
        pg.ok(&["reindex"]);
        let all = pg.found(&[]);
        assert_eq!(all.len(), 7, "{all:?}");
        assert_eq!(pg.count("SELECT count(*) FROM runs_index"), 7);
        assert_eq!(pg.count("SELECT count(*) FROM beamtimes"), 2);
        assert_eq!(
            pg.count(
                "SELECT count(*) FROM information_schema.columns WHERE table_name = 'runs_index' AND column_name = 'metadata' AND data_type = 'jsonb'"
            ),
            1
        );
        assert_eq!(
            pg.count(
                "SELECT count(*) FROM information_schema.columns WHERE table_name = 'runs_index' AND column_name = 'time_start' AND data_type = 'double precision'"
            ),
            1
        );
        assert!(
            !pg.fx.data_root().join("index.db").exists(),
            "a PostgreSQL index must not leave an index.db"
        );
        // Unchanged: the next reindex reads nothing again.
        let out = pg.ok(&["reindex"]);
        assert!(out.contains("scanned 2, changed 0, unchanged 2,"), "{out}");
        // One beamtime changed: only it is read again.
        let more = pg.fx.write(
            "more.jsonl",
            &run_jsonl("h", 1_795_002_000.0, serde_json::json!({"purpose": "late"})),
        );
        pg.ok(&["ingest", "--beamtime", "bt-2", more.to_str().unwrap()]);
        let out = pg.ok(&["reindex"]);
        assert!(out.contains("scanned 2, changed 1, unchanged 1,"), "{out}");
        assert_eq!(pg.count("SELECT count(*) FROM runs_index"), 8);
        pg.ok(&["verify"]);
        // show finds a run through the index.
        pg.ok(&["show", "a"]);
    }

    /// The filters of tests/cli/search.rs and more: PostgreSQL finds what SQLite finds.
    #[test]
    fn postgres_runs_filters_agree_with_sqlite_on_the_sample_data() {
        let Some(server) = server() else { return };
        let db = server.database();
        let fx = Fixture::new();
        let url = server.url(&db);
        let sqlite = |args: &[&str]| run(&mut fx.beamdb(args));
        let pg = |args: &[&str]| {
            run(fx
                .beamdb(args)
                .env("BEAMDB_INDEX_URL", &url)
                .env("PGPASSWORD", &server.password))
        };
        ingest_sample(&fx, &sqlite);
        for reindex in [&sqlite as Beamdb<'_>, &pg] {
            let (code, out, err) = reindex(&["reindex"]);
            assert_eq!(code, 0, "{out}{err}");
        }
        let filters: &[&[&str]] = &[
            &[],
            &["--where", "temperature >= 300"],
            &["--where", "temperature=300"],
            &["--where", "temperature='300'"],
            &["--where", "temperature<300.5"],
            &["--where", "temperature!=300"],
            &["--where", "sample.name=P3HT*"],
            &["--where", "sample.name!=P3HT*"],
            &["--where", "sample.name=P3HT-?"],
            &["--where", "sample.name=50%_off"],
            &["--where", "sample.name=50*"],
            // Review #18: a `[` first in a class (PostgreSQL would read `[:x:]` as a class
            // name).
            &["--where", "sample.name=[[:P]*"],
            &["--where", "purpose=[[:x:]]*"],
            &["--where", "sample.name > P"],
            &["--where", "sample.name < Q"],
            &["--where", "cold=true"],
            &["--where", "notes=again"],
            &["--where", "purpose=anneal*", "--where", "temperature>300"],
            &["--where", "proposal=p-1"],
            &["--where", "purpose=x'); DROP TABLE runs_index; --"],
            // (A NUL character: PostgreSQL's text cannot hold one, so there it is dropped
            // and `odd=nulbyte` would find g; docs/postgres.md says so.)
            &["--where", "nothing=here"],
            &["--text", "P3HT"],
            &["--text", "anneal P3HT"],
            &["--text", "anne*"],
            &["--text", "p-1"],
            &["--text", "film"],
            &["--text", "DROP"],
            &["--text", "50"],
            &["--text", "%"],
            &["--beamtime", "bt-2"],
            &["--plan", "count"],
            &["--plan", "c*"],
            &["--limit", "2"],
            &["--status", "success"],
            &["--status", "incomplete"],
            &["--since", "2026-11-20"],
        ];
        for filter in filters {
            let mut args = vec!["runs", "--json"];
            args.extend_from_slice(filter);
            let (code_s, out_s, err_s) = sqlite(&args);
            let (code_p, out_p, err_p) = pg(&args);
            assert_eq!(
                code_s, code_p,
                "{filter:?}: sqlite {err_s} / postgres {err_p}"
            );
            if code_s != 0 {
                continue;
            }
            let (mut s, mut p) = (uids(&out_s), uids(&out_p));
            if filter.first() == Some(&"--text") {
                // Ranked by relevance in SQLite, by time in PostgreSQL: the same runs.
                s.sort();
                p.sort();
            }
            assert_eq!(s, p, "{filter:?}");
            // And the same rows, field for field.
            if filter.first() != Some(&"--text") {
                let s: serde_json::Value = serde_json::from_str(&out_s).unwrap();
                let p: serde_json::Value = serde_json::from_str(&out_p).unwrap();
                assert_eq!(s, p, "{filter:?}");
            }
        }
        let (code, _, _) = pg(&["runs", "--where", "x=1"]);
        assert_eq!(code, 0);
        // The hostile value was data: every table is still there.
        assert_eq!(
            server
                .admin(&db)
                .query_one("SELECT count(*) FROM runs_index", &[])
                .unwrap()
                .get::<_, i64>(0),
            7
        );
    }

    #[test]
    fn postgres_where_keys_and_values_cannot_inject_sql() {
        let Some(server) = server() else { return };
        let pg = PgFixture::new(server);
        ingest_sample(&pg.fx, &|args| run(&mut pg.beamdb(args)));
        pg.ok(&["reindex"]);
        for bad_key in [
            "a\"b=1",
            "x;DROP TABLE runs_index=1",
            "a') OR 1=1 --=1",
            "a b=1",
        ] {
            let (code, out, err) = run(&mut pg.beamdb(&["runs", "--where", bad_key]));
            assert_eq!(code, 2, "{bad_key}: {out}{err}");
        }
        for value in [
            "x' OR '1'='1",
            "1; DROP TABLE runs_index",
            "$1",
            "\\",
            "[a-",
            "*'*",
        ] {
            let (code, out, err) =
                run(&mut pg.beamdb(&["runs", "--json", "--where", &format!("purpose={value}")]));
            assert_eq!(code, 0, "{value}: {out}{err}");
            let (code, out, err) = run(&mut pg.beamdb(&["runs", "--json", "--text", value]));
            assert_eq!(code, 0, "{value}: {out}{err}");
        }
        assert_eq!(pg.count("SELECT count(*) FROM runs_index"), 7);
    }

    /// Two beamlines, each its own data root, reindex into one database at the same time;
    /// each later forgets only its own beamtimes.
    #[test]
    fn postgres_two_data_roots_reindex_concurrently_into_one_database() {
        let Some(server) = server() else { return };
        let db = server.database();
        let one = PgFixture::on(server, db.clone());
        let two = PgFixture::on(server, db.clone());
        for (pg, prefix) in [(&one, "one"), (&two, "two")] {
            for n in 0..6 {
                let text = run_jsonl(
                    &format!("{prefix}-{n}"),
                    1_795_000_000.0 + n as f64,
                    serde_json::json!({"beamline": prefix}),
                );
                let path = pg.fx.write(&format!("{n}.jsonl"), &text);
                pg.ok(&[
                    "ingest",
                    "--beamtime",
                    &format!("{prefix}-bt-{n}"),
                    path.to_str().unwrap(),
                ]);
            }
        }
        one.ok(&["initdb"]);
        let mut children: Vec<std::process::Child> = [&one, &two]
            .iter()
            .map(|pg| pg.spawn(&["reindex"]))
            .collect();
        for child in children.drain(..) {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert_eq!(one.count("SELECT count(*) FROM runs_index"), 12);
        assert_eq!(one.found(&["--where", "beamline=two"]).len(), 6);
        // Beamline one loses a beamtime: its reindex forgets it, and nothing of two's.
        std::fs::remove_dir_all(one.fx.data_root().join("beamtimes/one-bt-0")).unwrap();
        one.ok(&["reindex"]);
        assert_eq!(one.count("SELECT count(*) FROM runs_index"), 11);
        assert_eq!(one.count("SELECT count(*) FROM beamtimes"), 11);
        assert_eq!(two.found(&["--where", "beamline=two"]).len(), 6);
        // Review #12: a full reindex of one clears nothing of two's: two reads nothing again.
        one.ok(&["reindex", "--full"]);
        let out = two.ok(&["reindex"]);
        assert!(out.contains("changed 0, unchanged 6,"), "{out}");
        // Nor does one's beamtime indexed under another schema (another facility model,
        // say) make two read everything again.
        one.server
            .admin(&one.db)
            .batch_execute("UPDATE beamtimes SET watermark = 'other' WHERE id = 'one-bt-1'")
            .unwrap();
        let out = two.ok(&["reindex"]);
        assert!(out.contains("changed 0, unchanged 6,"), "{out}");
        let out = one.ok(&["reindex"]);
        assert!(out.contains("changed 5, unchanged 0,"), "{out}");
    }

    /// The server restarts while a reindex writes: exit 1 saying so, no beamtime half
    /// replaced; once it is back, the next reindex indexes everything.
    #[test]
    fn postgres_server_restarted_mid_reindex_then_the_next_reindex_completes() {
        if server().is_none() {
            return;
        }
        let own: &'static Server = Box::leak(Box::new(
            Server::start_private().expect("a second PostgreSQL"),
        ));
        let pg = PgFixture::new(own);
        pg.ok(&["initdb"]);
        let beamtimes = 40;
        for n in 0..beamtimes {
            let text: String = (0..25)
                .map(|r| {
                    run_jsonl(
                        &format!("bt{n}-r{r}"),
                        1_795_000_000.0 + f64::from(r),
                        serde_json::json!({"purpose": "restart test", "n": n}),
                    )
                })
                .collect();
            let path = pg.fx.write(&format!("{n}.jsonl"), &text);
            pg.ok(&[
                "ingest",
                "--beamtime",
                &format!("bt-{n:02}"),
                path.to_str().unwrap(),
            ]);
        }
        let child = pg.spawn(&["reindex"]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if pg.count("SELECT count(*) FROM beamtimes") > 0 {
                own.stop();
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "reindex wrote nothing"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        own.restart();
        println!("reindex across the restart: {:?}: {err}", out.status.code());
        if !out.status.success() {
            assert_eq!(out.status.code(), Some(1), "{err}");
            assert!(
                err.contains("shut down or restarted") || err.contains("cannot reach"),
                "{err}"
            );
            assert!(!err.contains(&own.password), "{err}");
        }
        let half = pg.count(
            "SELECT count(*) FROM beamtimes b WHERE b.num_runs <> (SELECT count(*) FROM runs_index r WHERE r.beamtime_id = b.id)",
        );
        assert_eq!(half, 0, "a beamtime is half replaced");
        pg.ok(&["reindex"]);
        assert_eq!(pg.count("SELECT count(*) FROM beamtimes"), beamtimes);
        assert_eq!(pg.count("SELECT count(*) FROM runs_index"), beamtimes * 25);
        own.stop();
    }

    /// A facility's promoted columns reach the PostgreSQL index through its own migrations.
    #[test]
    fn postgres_promoted_columns_reach_the_index_through_the_facility_migrations() {
        let Some(server) = server() else { return };
        let db = server.database();
        let fx = Fixture::new();
        super::facility_with_postgres_twins(&fx);
        let settings = fx.path().join("settings.toml");
        let text = std::fs::read_to_string(&settings).unwrap();
        std::fs::write(
            &settings,
            format!("{text}\n[index]\nurl = \"{}\"\n", server.url(&db)),
        )
        .unwrap();
        let pg = PgFixture { fx, server, db };
        let run_text = run_jsonl(
            "r-1",
            1_795_000_000.0,
            serde_json::json!({"proposal": "p-1", "energy": 8.5, "shift": 300}),
        );
        let path = pg.fx.write("r.jsonl", &run_text);
        pg.ok(&["ingest", "--beamtime", "bt-1", path.to_str().unwrap()]);
        pg.ok(&["reindex"]);
        // Review #10: a non-whole number against an INTEGER column (was: exit 1).
        for (filter, found) in [
            ("shift>299.5", true),
            ("shift<300.5", true),
            ("shift=300", true),
            ("shift=300.5", false),
            ("shift>=300.25", false),
            ("energy<8.75", true),
        ] {
            let uids = pg.found(&["--where", filter]);
            assert_eq!(uids.len(), usize::from(found), "{filter}: {uids:?}");
        }
        let out = pg.ok(&[
            "runs",
            "--json",
            "--where",
            "proposal=p-1",
            "--where",
            "energy>8",
        ]);
        let runs: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        assert_eq!(runs.len(), 1, "{out}");
        assert_eq!(runs[0]["proposal"], "p-1", "{out}");
        assert_eq!(runs[0]["energy"], 8.5, "{out}");
        assert_eq!(
            pg.count(
                "SELECT count(*) FROM information_schema.columns WHERE table_name = 'runs_index' AND column_name = 'energy' AND data_type = 'double precision'"
            ),
            1
        );
    }

    /// Review #5: a promoted value PostgreSQL cannot hold as its column's type is indexed as
    /// NULL with a warning naming beamtime, run and column (never as the raw bytes of another
    /// type); one that converts exactly is converted; a beamtime the server refuses is
    /// reported and skipped (exit 4) and the others are indexed.
    #[test]
    fn postgres_promoted_values_of_another_type_are_converted_or_nulled_and_a_refused_beamtime_is_skipped()
     {
        let Some(server) = server() else { return };
        let db = server.database();
        let fx = Fixture::new();
        super::facility_with_postgres_twins(&fx);
        let settings = fx.path().join("settings.toml");
        let text = std::fs::read_to_string(&settings).unwrap();
        std::fs::write(
            &settings,
            format!("{text}\n[index]\nurl = \"{}\"\n", server.url(&db)),
        )
        .unwrap();
        let pg = PgFixture { fx, server, db };
        let ingest = |bt: &str, runs: &[(&str, serde_json::Value)]| {
            let text: String = runs
                .iter()
                .enumerate()
                .map(|(i, (uid, extra))| run_jsonl(uid, 1_795_000_000.0 + i as f64, extra.clone()))
                .collect();
            let path = pg.fx.write(&format!("{bt}.jsonl"), &text);
            pg.ok(&["ingest", "--beamtime", bt, path.to_str().unwrap()]);
        };
        ingest(
            "bt-1",
            &[
                (
                    "r-1",
                    serde_json::json!({"proposal": "p-1", "energy": "12.5 keV"}),
                ),
                ("r-2", serde_json::json!({"proposal": 17, "energy": "7.25"})),
                ("r-3", serde_json::json!({"proposal": "p-3", "energy": 9})),
            ],
        );
        ingest(
            "bt-2",
            &[("r-4", serde_json::json!({"proposal": "poison"}))],
        );
        ingest("bt-3", &[("r-5", serde_json::json!({"proposal": "p-5"}))]);
        pg.ok(&["initdb"]);
        // The server refuses bt-2's run (a facility's own constraint, say).
        pg.server
            .admin(&pg.db)
            .batch_execute(
                "ALTER TABLE runs_index ADD CONSTRAINT no_poison CHECK (proposal IS DISTINCT FROM 'poison')",
            )
            .unwrap();
        let (code, out, err) = run(&mut pg.beamdb(&["reindex"]));
        assert_eq!(code, 4, "{out}{err}");
        assert!(
            err.contains("bt-2") && err.contains("no_poison"),
            "the refused beamtime is named: {err}"
        );
        assert!(
            err.contains("bt-1") && err.contains("r-1") && err.contains("energy"),
            "the value not kept is named: {err}"
        );
        let json = pg.ok(&["runs", "--json"]);
        let runs: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
        let by_uid = |uid: &str| {
            runs.iter()
                .find(|r| r["uid"] == uid)
                .unwrap_or_else(|| panic!("{uid} not indexed: {json}"))
                .clone()
        };
        assert_eq!(by_uid("r-1")["energy"], serde_json::Value::Null, "{json}");
        assert_eq!(by_uid("r-1")["proposal"], "p-1", "{json}");
        assert_eq!(by_uid("r-2")["energy"], 7.25, "{json}");
        assert_eq!(by_uid("r-2")["proposal"], "17", "{json}");
        assert_eq!(by_uid("r-3")["energy"], 9.0, "{json}");
        assert_eq!(by_uid("r-5")["proposal"], "p-5", "{json}");
        assert!(runs.iter().all(|r| r["uid"] != "r-4"), "{json}");
        assert_eq!(pg.count("SELECT count(*) FROM beamtimes"), 2);
    }

    /// Review #6: a RunStart string (or key) longer than a btree index row can hold (about
    /// 2.7 kB) is indexed and found by --where, and the reindex goes on.
    #[test]
    fn postgres_long_runstart_strings_are_indexed_and_found() {
        let Some(server) = server() else { return };
        let pg = PgFixture::new(server);
        pg.ok(&["initdb"]);
        // Random-ish text: PostgreSQL compresses a repetitive one below the limit.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let long: String = (0..6000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                char::from(b'a' + (state % 26) as u8)
            })
            .collect();
        // Equal to `long` but for its last character, and greater.
        let near = format!("{}~", &long[..5999]);
        let long_key = format!("k{}", &long[..3000]);
        let text = run_jsonl(
            "long-1",
            1_795_000_000.0,
            serde_json::json!({"notes": long, long_key.clone(): 1}),
        ) + &run_jsonl(
            "long-2",
            1_795_000_100.0,
            serde_json::json!({"notes": near}),
        );
        let path = pg.fx.write("long.jsonl", &text);
        pg.ok(&["ingest", "--beamtime", "bt-1", path.to_str().unwrap()]);
        pg.ok(&["reindex"]);
        assert_eq!(pg.count("SELECT count(*) FROM runs_index"), 2);
        assert_eq!(pg.found(&["--where", &format!("notes={long}")]), ["long-1"]);
        assert_eq!(pg.found(&["--where", &format!("notes={near}")]), ["long-2"]);
        assert_eq!(pg.found(&["--where", &format!("notes<{near}")]), ["long-1"]);
        assert_eq!(
            pg.found(&["--where", &format!("notes>={long}")]),
            ["long-2", "long-1"]
        );
        assert_eq!(
            pg.found(&["--where", &format!("notes!={long}")]),
            ["long-2"]
        );
        assert_eq!(pg.found(&["--where", &format!("{long_key}=1")]), ["long-1"]);
        assert_eq!(
            pg.count("SELECT count(*) FROM pg_indexes WHERE indexname IN ('beamdb_run_keys_key_text', 'beamdb_run_keys_key_num', 'beamdb_run_keys_uid')"),
            3
        );
        assert_eq!(
            pg.count("SELECT count(*) FROM pg_indexes WHERE indexname = 'beamdb_run_keys_text'"),
            0
        );
    }

    /// Review #20: a core column of another type (a facility's own migration changed it)
    /// is an error naming the column, exit 1, never a panic.
    #[test]
    fn postgres_core_column_of_another_type_is_an_error_not_a_panic() {
        let Some(server) = server() else { return };
        let pg = PgFixture::new(server);
        pg.ok(&["initdb"]);
        pg.server
            .admin(&pg.db)
            .batch_execute("ALTER TABLE runs_index ALTER COLUMN scan_id TYPE TEXT")
            .unwrap();
        let path = pg.fx.write(
            "r.jsonl",
            &run_jsonl("r-1", 1_795_000_000.0, serde_json::json!({})),
        );
        pg.ok(&["ingest", "--beamtime", "bt-1", path.to_str().unwrap()]);
        pg.ok(&["reindex"]);
        let (code, out, err) = run(&mut pg.beamdb(&["runs", "--json"]));
        assert_eq!(code, 1, "{out}{err}");
        assert!(
            err.contains("scan_id") && !err.contains("panicked"),
            "{err}"
        );
    }

    /// Review #15: an index migrated by a newer beamdb (a version this one lacks), or whose
    /// applied migration differs from this beamdb's, exits 5 from `migrate --check`,
    /// `migrate` and `reindex`, as a SQLite database does.
    #[test]
    fn postgres_index_ahead_of_or_diverging_from_the_binary_exits_5() {
        let Some(server) = server() else { return };
        let pg = PgFixture::new(server);
        std::fs::create_dir_all(pg.fx.data_root().join("beamtimes")).unwrap();
        pg.ok(&["initdb"]);
        let admin = || pg.server.admin(&pg.db);
        admin()
            .batch_execute(
                "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) VALUES (99, 'future', '2030-01-01T00:00:00Z', '1')",
            )
            .unwrap();
        for args in [&["migrate", "--check"][..], &["migrate"], &["reindex"]] {
            let (code, out, err) = run(&mut pg.beamdb(args));
            assert_eq!(code, 5, "{args:?}: {out}{err}");
            assert!(
                err.contains("V99__future") || err.contains("99"),
                "{args:?}: {err}"
            );
        }
        admin()
            .batch_execute(
                "DELETE FROM refinery_schema_history WHERE version = 99; UPDATE refinery_schema_history SET checksum = '12345' WHERE version = 1",
            )
            .unwrap();
        for args in [&["migrate", "--check"][..], &["migrate"], &["reindex"]] {
            let (code, out, err) = run(&mut pg.beamdb(args));
            assert_eq!(code, 5, "{args:?}: {out}{err}");
        }
    }

    /// The lock is the server's, so a reindex on another host would see it too.
    #[test]
    fn postgres_second_reindex_of_one_data_root_exits_75() {
        let Some(server) = server() else { return };
        let pg = PgFixture::new(server);
        pg.ok(&["initdb"]);
        let root = std::fs::canonicalize(pg.fx.data_root()).unwrap();
        let (namespace, key) = beamdb::index::pg::reindex_lock_keys(&root.display().to_string());
        let mut other = server.admin(&pg.db);
        other
            .execute("SELECT pg_advisory_lock($1, $2)", &[&namespace, &key])
            .unwrap();
        let (code, out, err) = run(&mut pg.beamdb(&["reindex"]));
        assert_eq!(code, 75, "{out}{err}");
        assert!(err.contains("try again later"), "{err}");
        other
            .execute("SELECT pg_advisory_unlock($1, $2)", &[&namespace, &key])
            .unwrap();
        pg.ok(&["reindex"]);
    }

    #[test]
    fn postgres_unreachable_server_exits_1_naming_the_host_without_the_password() {
        let fx = Fixture::new();
        std::fs::create_dir_all(fx.data_root().join("beamtimes")).unwrap();
        let port = free_port();
        let url = format!("postgresql://beamdb:{SECRET}@127.0.0.1:{port}/index?connect_timeout=3");
        for args in [&["reindex"][..], &["runs"], &["initdb"], &["verify"]] {
            let (code, out, err) = run(fx.beamdb(args).env("BEAMDB_INDEX_URL", &url));
            assert_eq!(code, 1, "{args:?}: {out}{err}");
            assert!(
                err.contains(&format!("127.0.0.1:{port}")),
                "{args:?}: {err}"
            );
            assert!(err.contains("cannot reach"), "{args:?}: {err}");
            assert_no_secret(&out, &err);
        }
    }

    #[test]
    fn postgres_wrong_password_and_missing_database_exit_1_saying_what_to_do() {
        let Some(server) = server() else { return };
        let db = server.database();
        let fx = Fixture::new();
        std::fs::create_dir_all(fx.data_root().join("beamtimes")).unwrap();
        let wrong = format!(
            "postgresql://beamdb_admin:{SECRET}@127.0.0.1:{}/{db}",
            server.port
        );
        let (code, out, err) = run(fx.beamdb(&["reindex"]).env("BEAMDB_INDEX_URL", &wrong));
        assert_eq!(code, 1, "{out}{err}");
        assert!(err.contains("password") && err.contains(".pgpass"), "{err}");
        assert_no_secret(&out, &err);
        // The same wrong password from PGPASSWORD.
        let (code, out, err) = run(fx
            .beamdb(&["runs"])
            .env("BEAMDB_INDEX_URL", server.url(&db))
            .env("PGPASSWORD", SECRET));
        assert_eq!(code, 1, "{out}{err}");
        assert!(err.contains("password"), "{err}");
        assert_no_secret(&out, &err);
        // Review #17: no password anywhere (no URL password, $PGPASSWORD, password file):
        // the advice says where to put one, not "see the server's log".
        let (code, out, err) = run(fx
            .beamdb(&["runs"])
            .env("BEAMDB_INDEX_URL", server.url(&db))
            .env_remove("PGPASSWORD")
            .env("PGPASSFILE", fx.path().join("no-such-pgpass"))
            .env("HOME", fx.path()));
        assert_eq!(code, 1, "{out}{err}");
        assert!(
            err.contains("no password") && err.contains(".pgpass") && !err.contains("server's log"),
            "{err}"
        );
        // The right password from a password file.
        let passfile = fx.write(
            "pgpass",
            &format!(
                "127.0.0.1:{}:*:beamdb_admin:{}\n",
                server.port, server.password
            ),
        );
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (code, out, err) = run(fx
            .beamdb(&["initdb"])
            .env("BEAMDB_INDEX_URL", server.url(&db))
            .env("PGPASSFILE", &passfile));
        assert_eq!(code, 0, "{out}{err}");
        // A database that does not exist.
        let missing = server.url("no_such_db");
        let (code, out, err) = run(fx
            .beamdb(&["reindex"])
            .env("BEAMDB_INDEX_URL", &missing)
            .env("PGPASSWORD", &server.password));
        assert_eq!(code, 1, "{out}{err}");
        assert!(
            err.contains("no_such_db") && err.contains("createdb"),
            "{err}"
        );
        assert!(!err.contains(&server.password), "{err}");
    }

    /// The server drops the reindex's connection while it writes: exit 1, no beamtime half
    /// replaced, and the next reindex indexes everything.
    #[test]
    fn postgres_connection_killed_mid_reindex_leaves_no_half_beamtime() {
        let Some(server) = server() else { return };
        let pg = PgFixture::new(server);
        pg.ok(&["initdb"]);
        let beamtimes = 40;
        for n in 0..beamtimes {
            let text: String = (0..25)
                .map(|r| {
                    run_jsonl(
                        &format!("bt{n}-r{r}"),
                        1_795_000_000.0 + f64::from(r),
                        serde_json::json!({"purpose": "kill test", "n": n}),
                    )
                })
                .collect();
            let path = pg.fx.write(&format!("{n}.jsonl"), &text);
            pg.ok(&[
                "ingest",
                "--beamtime",
                &format!("bt-{n:02}"),
                path.to_str().unwrap(),
            ]);
        }
        let child = pg.spawn(&["reindex"]);
        // Kill its backends as soon as it has written something.
        let mut admin = server.admin(&pg.db);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let written: i64 = admin
                .query_one("SELECT count(*) FROM beamtimes", &[])
                .unwrap()
                .get(0);
            if written > 0 {
                admin
                    .execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'beamdb' AND datname = current_database()",
                        &[],
                    )
                    .unwrap();
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "reindex wrote nothing"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        println!("reindex across the kill: {:?}: {err}", out.status.code());
        if !out.status.success() {
            assert_eq!(out.status.code(), Some(1), "{err}");
            assert!(!err.contains(&server.password), "{err}");
            assert!(
                err.contains("run the command again") || err.contains("reindex"),
                "{err}"
            );
        }
        // Every beamtime in the index holds all of its runs.
        let half = pg.count(
            "SELECT count(*) FROM beamtimes b WHERE b.num_runs <> (SELECT count(*) FROM runs_index r WHERE r.beamtime_id = b.id)",
        );
        assert_eq!(half, 0, "a beamtime is half replaced");
        pg.ok(&["reindex"]);
        assert_eq!(pg.count("SELECT count(*) FROM beamtimes"), beamtimes);
        assert_eq!(pg.count("SELECT count(*) FROM runs_index"), beamtimes * 25);
    }
}
