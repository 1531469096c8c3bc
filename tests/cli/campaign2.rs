//! Hostile campaign 2: settings files and paths, `runs --where` values (docs/fuzzing.md).

use crate::common::{Fixture, config_repo, run};

#[test]
fn settings_fifo_is_refused_not_waited_on() {
    let fx = Fixture::new();
    let fifo = fx.path().join("settings.fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let mut cmd = fx.beamdb(&["--settings", "settings.fifo", "runs"]);
    cmd.timeout(std::time::Duration::from_secs(20));
    let (code, out, err) = run(&mut cmd);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("is not a regular file"), "{err}");
    assert!(err.contains("settings.fifo"), "{err}");
}

#[test]
fn settings_device_is_refused_not_read_into_memory() {
    let fx = Fixture::new();
    let (code, out, err) = run(&mut fx.beamdb(&["--settings", "/dev/zero", "runs"]));
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("is not a regular file"), "{err}");
}

#[test]
fn settings_file_too_large_is_refused() {
    let fx = Fixture::new();
    let text = format!("data_root = \"d\"\n{}\n", "#".repeat(2 << 20));
    fx.write("settings.toml", &text);
    let (code, out, err) = run(&mut fx.beamdb(&["runs"]));
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("is larger than 1048576 bytes"), "{err}");
}

#[test]
fn settings_env_data_root_with_newline_is_refused_before_anything_is_created() {
    let fx = Fixture::new();
    let (code, out, err) = run(fx
        .beamdb(&["initdb"])
        .env("BEAMDB_DATA_ROOT", "root\nforged: line"));
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("contains a control character"), "{err}");
    assert!(!err.contains("root\nforged"), "{err}");
    assert_eq!(std::fs::read_dir(fx.path()).unwrap().count(), 0);
}

#[test]
fn settings_file_data_root_with_newline_names_file_and_line() {
    let fx = Fixture::new();
    fx.write("s.toml", "\ndata_root = \"root\\nforged\"\n");
    let (code, out, err) = run(&mut fx.beamdb(&["--settings", "s.toml", "initdb"]));
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("s.toml:2: key `data_root`"), "{err}");
    assert!(err.contains("contains a control character"), "{err}");
    assert!(!fx.path().join("root\nforged").exists());
}

#[test]
fn runs_where_overflowing_number_is_a_usage_error() {
    let fx = Fixture::new();
    let (code, out, err) = run(&mut fx.beamdb(&["initdb"]));
    assert_eq!(code, 0, "{out}{err}");
    for value in ["temperature<1e999", "temperature>-1e400"] {
        let (code, out, err) = run(&mut fx.beamdb(&["runs", "--where", value]));
        assert_eq!(code, 2, "{value}: {out}{err}");
        assert!(err.contains("a number too large to compare"), "{err}");
    }
    // Words that Rust reads as floats stay text: a sample may be called `inf`.
    let (code, out, err) = run(&mut fx.beamdb(&["runs", "--where", "sample=inf"]));
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn runs_where_and_text_on_a_fresh_index_find_nothing_and_exit_0() {
    let fx = Fixture::new();
    let (code, out, err) = run(&mut fx.beamdb(&["initdb", "--beamtime", "bt-1"]));
    assert_eq!(code, 0, "{out}{err}");
    for args in [
        ["runs", "--json", "--where", "temperature>=300"],
        ["runs", "--json", "--text", "anneal"],
    ] {
        let (code, out, err) = run(&mut fx.beamdb(&args));
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        assert_eq!(out.trim(), "[]", "{args:?}");
        assert!(!err.contains("SQL"), "{err}");
    }
}

/// Every place a model splices SQL text into a migration, with text that would end beamdb's
/// statement and run one of its own (`DROP TABLE runs`): make-migrations refuses the model
/// (exit 2, file:line and the key), writes nothing and runs nothing.
#[test]
fn make_migrations_refuses_model_sql_that_would_smuggle_a_statement() {
    let table = |column: &str, index: &str| {
        format!(
            "[tables.r]\ncolumns = [ {{ name = \"id\", type = \"INTEGER\", primary_key = true }}, {{ name = \"v\", type = \"REAL\", nullable = true{column} }} ]\n{index}"
        )
    };
    let cases = [
        (
            table(", check = \"v >= 0); DROP TABLE runs; --\"", ""),
            "closes a parenthesis",
        ),
        (table(", check = \"v >= 0 -- positive\"", ""), "comment"),
        (table(", default = \"0, x INT\"", ""), "outside parentheses"),
        (
            table(", generated = \"id) STORED, x INT); DROP TABLE runs; --\"", ""),
            "closes a parenthesis",
        ),
        (
            table(
                "",
                "indexes = [ { name = \"i\", columns = [\"v\"], where = \"v > 0; DROP TABLE runs\" } ]\n",
            ),
            "`;`",
        ),
        (
            table(
                "",
                "indexes = [ { name = \"i\", expressions = [\"v); DROP TABLE runs; --\"] } ]\n",
            ),
            "closes a parenthesis",
        ),
        (
            "[views.v]\nselect = \"SELECT 1; DROP TABLE runs\"\n".to_string(),
            "`;`",
        ),
        (
            "[triggers.t]\non = \"runs\"\nwhen = \"AFTER INSERT\"\nbody = \"SELECT 1; END; DROP TABLE runs; CREATE TRIGGER t2 AFTER INSERT ON runs BEGIN SELECT 1;\"\n".to_string(),
            "only a CASE's END",
        ),
    ];
    for (model, why) in cases {
        let fx = Fixture::new();
        config_repo(&fx);
        let path = fx.path().join("models/beamtime.toml");
        let base = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{base}\n{model}")).unwrap();
        let before = std::fs::read_dir(fx.path().join("m/beamtime"))
            .unwrap()
            .count();
        let (code, out, err) = run(&mut fx.beamdb(&["make-migrations", "--name", "x"]));
        assert_eq!(code, 2, "{model}: {out}{err}");
        assert!(err.contains("beamtime.toml:"), "{model}: {err}");
        assert!(err.contains(why), "{model}: {err}");
        let after = std::fs::read_dir(fx.path().join("m/beamtime"))
            .unwrap()
            .count();
        assert_eq!(before, after, "{model}: a migration was written");
    }
}

/// The same SQL with `;`, `--` and `)` inside strings, a CASE ... END in a trigger body: fine.
#[test]
fn make_migrations_keeps_model_sql_whose_odd_characters_are_inside_strings() {
    let fx = Fixture::new();
    config_repo(&fx);
    let path = fx.path().join("models/beamtime.toml");
    let base = std::fs::read_to_string(&path).unwrap();
    let model = "[tables.r]\ncolumns = [ { name = \"id\", type = \"INTEGER\", primary_key = true }, { name = \"v\", type = \"REAL\", nullable = true, check = \"v >= 0 AND v <> 'a;--)'\" } ]\n[views.v]\nselect = \"SELECT id FROM r WHERE v > 0\"\n[triggers.t]\non = \"r\"\nwhen = \"AFTER INSERT\"\nbody = \"UPDATE r SET v = CASE WHEN NEW.v > 0 THEN 1 ELSE 0 END WHERE id = NEW.id;\"\n";
    std::fs::write(&path, format!("{base}\n{model}")).unwrap();
    let (code, out, err) = run(&mut fx.beamdb(&["make-migrations", "--name", "x"]));
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(&mut fx.beamdb(&["initdb", "--beamtime", "bt-1"]));
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(&mut fx.beamdb(&["make-migrations", "--check"]));
    assert_eq!(code, 0, "{out}{err}");
}

/// A table past SQLite's column limit is a model error, not a failed replay (exit 1).
#[test]
fn make_migrations_refuses_a_table_with_more_columns_than_sqlite_allows() {
    let fx = Fixture::new();
    config_repo(&fx);
    let path = fx.path().join("models/beamtime.toml");
    let base = std::fs::read_to_string(&path).unwrap();
    let columns: String = (0..2001)
        .map(|i| format!("  {{ name = \"c{i}\", type = \"REAL\", nullable = true }},\n"))
        .collect();
    let model = format!(
        "[tables.wide]\ncolumns = [\n  {{ name = \"id\", type = \"INTEGER\", primary_key = true }},\n{columns}]\n"
    );
    std::fs::write(&path, format!("{base}\n{model}")).unwrap();
    let (code, out, err) = run(&mut fx.beamdb(&["make-migrations", "--name", "x"]));
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("beamtime.toml:"), "{err}");
    assert!(
        err.contains("2002 columns; SQLite allows at most 2000"),
        "{err}"
    );
}

/// Two listeners on one beamtime appended every document twice to the same spool (and each
/// truncated the other's at a start): every run was rejected, none stored. The second
/// listener now stops at once with exit 75 and leaves the first one's spools alone.
#[test]
fn listen_a_second_listener_on_the_same_beamtime_exits_75_and_leaves_the_spools_alone() {
    let fx = Fixture::new();
    let (code, out, err) = run(&mut fx.beamdb(&["initdb", "--beamtime", "bt"]));
    assert_eq!(code, 0, "{out}{err}");
    let spool = fx.data_root().join("beamtimes/bt/listen.spool");
    let mut first = std::process::Command::new(assert_cmd::cargo::cargo_bin("beamdb"))
        .current_dir(fx.path())
        .env_clear()
        .args(["listen", "--zmq", "tcp://127.0.0.1:1", "--beamtime", "bt"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lock = spool.join(".listener.lock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::read_to_string(&lock).unwrap_or_default().trim() != first.id().to_string() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first listener never took its lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // An open run of the first listener: the second must not touch it.
    let open = "[\"start\", {\"uid\": \"r1\", \"time\": 1795000000.0, \"plan_name\": \"count\"}]\n";
    std::fs::write(spool.join("r1.jsonl"), open).unwrap();
    let mut second = fx.beamdb(&["listen", "--zmq", "tcp://127.0.0.1:1", "--beamtime", "bt"]);
    second.timeout(std::time::Duration::from_secs(20));
    let (code, out, err) = run(&mut second);
    assert_eq!(code, 75, "{out}{err}");
    assert!(
        err.contains("another beamdb listen on this beamtime is running"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(spool.join("r1.jsonl")).unwrap(),
        open
    );
    // libc, not /bin/kill: a minimal Debian has no procps.
    // SAFETY: a signal to our own child, by its pid.
    let sent = unsafe { libc::kill(first.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(sent, 0);
    assert_eq!(first.wait().unwrap().code(), Some(0));
    assert!(
        !lock.exists(),
        "a stopped listener leaves its lock file behind"
    );
}

/// Spools edited by hand between two listeners: one renamed (its start's uid is another
/// run's) and two joined into one file. Both were "rejected ... cannot read the run's spool:
/// No such file" (the router looked for the file under the uid) and the joined file's first
/// run was dropped. Now both are reported as unreadable spools and left as they are; an
/// honest spool beside them lands. A spool torn part-way left its run open, and SIGTERM then
/// "rejected" it from the spool the listener had just said it left alone.
#[test]
fn listen_tampered_spools_are_left_as_they_are_and_an_honest_one_lands() {
    let fx = Fixture::new();
    let (code, out, err) = run(&mut fx.beamdb(&["initdb", "--beamtime", "bt"]));
    assert_eq!(code, 0, "{out}{err}");
    let spool = fx.data_root().join("beamtimes/bt/listen.spool");
    std::fs::create_dir_all(&spool).unwrap();
    let run_text = |uid: &str, t: f64| crate::models::run_jsonl(uid, t, serde_json::json!({}));
    let renamed = run_text("other", 1_795_000_000.0);
    let joined = run_text("two", 1_795_000_100.0) + &run_text("three", 1_795_000_200.0);
    std::fs::write(spool.join("victim.jsonl"), &renamed).unwrap();
    std::fs::write(spool.join("two.jsonl"), &joined).unwrap();
    std::fs::write(
        spool.join("honest.jsonl"),
        run_text("honest", 1_795_000_300.0),
    )
    .unwrap();
    // Good lines, then a torn one: the run it began must not stay open.
    let whole = run_text("torn", 1_795_000_400.0);
    let torn = &whole[..whole.len() - 30];
    std::fs::write(spool.join("torn.jsonl"), torn).unwrap();
    let out_path = fx.path().join("listen.out");
    let err_path = fx.path().join("listen.err");
    let mut listener = std::process::Command::new(assert_cmd::cargo::cargo_bin("beamdb"))
        .current_dir(fx.path())
        .env_clear()
        .args(["listen", "--zmq", "tcp://127.0.0.1:1", "--beamtime", "bt"])
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !std::fs::read_to_string(&out_path)
        .unwrap_or_default()
        .contains("honest")
    {
        assert!(std::time::Instant::now() < deadline, "honest never landed");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // libc, not /bin/kill: a minimal Debian has no procps.
    // SAFETY: a signal to our own child, by its pid.
    let sent = unsafe { libc::kill(listener.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(sent, 0);
    assert_eq!(listener.wait().unwrap().code(), Some(0));
    let out = std::fs::read_to_string(&out_path).unwrap();
    let err = std::fs::read_to_string(&err_path).unwrap();
    assert!(out.contains("landed     honest"), "{out}{err}");
    assert!(!out.contains("rejected"), "{out}{err}");
    assert!(
        err.contains("victim.jsonl") && err.contains("not the file's name"),
        "{err}"
    );
    assert!(
        err.contains("two.jsonl") && err.contains("a spool holds one run"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(spool.join("victim.jsonl")).unwrap(),
        renamed
    );
    assert_eq!(
        std::fs::read_to_string(spool.join("two.jsonl")).unwrap(),
        joined
    );
    assert!(err.contains("torn.jsonl:4: not valid JSON"), "{err}");
    assert_eq!(
        std::fs::read_to_string(spool.join("torn.jsonl")).unwrap(),
        torn
    );
    let conn = fx.open(&fx.beamtime_db("bt"));
    assert_eq!(
        crate::common::count(&conn, "SELECT count(*) FROM runs"),
        1,
        "only honest is stored"
    );
}
