//! `[frames]` settings, checked before anything is touched (no server needed).

use crate::common::{Fixture, run};

/// A hostile or mistaken settings file: each mistake is exit 2 naming the file, the line and
/// what to do.
#[test]
fn s3_settings_are_checked_with_file_line_and_key() {
    let fx = Fixture::new();
    let mut cases = vec![
        ("[frames]\nurl = \"file:///tmp/x\"\n", "not an S3 url"),
        (
            "[frames]\nendpoint = \"http://x\"\n",
            "only used with an S3 store",
        ),
        ("[frames]\nurl = \"s3://b/p\"\nsecret = \"x\"\n", "secret"),
    ];
    if cfg!(feature = "s3") {
        cases.extend([
            (
                "[frames]\nurl = \"s3://bucket/p\"\nendpoint = \"http://127.0.0.1:1\"\n",
                "allow_http",
            ),
            ("[frames]\nurl = \"s3://B_ad/p\"\n", "not an S3 bucket name"),
            ("[frames]\nurl = \"s3://bucket/../x\"\n", "prefix"),
        ]);
    }
    for (text, want) in cases {
        fx.write("settings.toml", text);
        let (code, out, err) = run(&mut fx.beamdb(&["runs"]));
        assert_eq!(code, 2, "{text}: {out}{err}");
        assert!(err.contains("settings.toml:"), "{err}");
        assert!(err.contains(want), "{text}: {err}");
    }
}

/// A build without the `s3` feature says so rather than writing frames somewhere else.
#[cfg(not(feature = "s3"))]
#[test]
fn s3_url_without_the_feature_is_exit_2_saying_the_build_lacks_it() {
    let fx = Fixture::new();
    fx.write("settings.toml", "[frames]\nurl = \"s3://bucket/prefix\"\n");
    for args in [&["runs"][..], &["initdb", "--beamtime", "bt"][..]] {
        let (code, out, err) = run(&mut fx.beamdb(args));
        assert_eq!(code, 2, "{out}{err}");
        assert!(
            err.contains("settings.toml:2") && err.contains("`s3` feature"),
            "{err}"
        );
    }
    assert!(!fx.data_root().exists(), "nothing created");
}
