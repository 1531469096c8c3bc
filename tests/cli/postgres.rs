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
