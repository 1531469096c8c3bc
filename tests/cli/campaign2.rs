//! Hostile campaign 2: settings files and paths, `runs --where` values (docs/fuzzing.md).

use crate::common::{Fixture, run};

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
