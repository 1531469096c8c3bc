//! `runs --where` on any RunStart key and `runs --text` over the RunStart: index.db only.

use crate::common::{Fixture, run};
use crate::models::run_jsonl;

/// Five runs in bt-1 and one in bt-2, ingested and indexed.
fn indexed() -> Fixture {
    let fx = Fixture::new();
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
    ];
    let text: String = runs
        .iter()
        .enumerate()
        .map(|(i, (uid, extra))| run_jsonl(uid, 1_795_000_000.0 + i as f64 * 100.0, extra.clone()))
        .collect();
    let path = fx.write("runs.jsonl", &text);
    let (code, out, err) =
        run(&mut fx.beamdb(&["ingest", "--beamtime", "bt-1", path.to_str().unwrap()]));
    assert_eq!(code, 0, "{out}{err}");
    let other = fx.write(
        "other.jsonl",
        &run_jsonl(
            "f",
            1_795_001_000.0,
            serde_json::json!({"purpose": "anneal P3HT again", "temperature": 400}),
        ),
    );
    let (code, out, err) =
        run(&mut fx.beamdb(&["ingest", "--beamtime", "bt-2", other.to_str().unwrap()]));
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(&mut fx.beamdb(&["reindex"]));
    assert_eq!(code, 0, "{out}{err}");
    fx
}

/// The uids `runs --json ARGS` lists, in its order.
fn found(fx: &Fixture, args: &[&str]) -> Vec<String> {
    let mut all = vec!["runs", "--json"];
    all.extend_from_slice(args);
    let (code, out, err) = run(&mut fx.beamdb(&all));
    assert_eq!(code, 0, "runs {args:?}: {out}{err}");
    let runs: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    runs.iter()
        .map(|r| r["uid"].as_str().unwrap().to_string())
        .collect()
}

fn sorted(mut uids: Vec<String>) -> Vec<String> {
    uids.sort();
    uids
}

#[test]
fn runs_where_compares_numbers_as_numbers_and_quoted_values_as_text() {
    let fx = indexed();
    assert_eq!(
        sorted(found(&fx, &["--where", "temperature >= 300"])),
        ["a", "b", "f"]
    );
    assert_eq!(found(&fx, &["--where", "temperature=300"]), ["a"]);
    assert_eq!(found(&fx, &["--where", "temperature = 300.0"]), ["a"]);
    assert_eq!(found(&fx, &["--where", "temperature='300'"]), ["c"]);
    assert_eq!(found(&fx, &["--where", "temperature<300.5"]), ["a"]);
    assert_eq!(
        sorted(found(&fx, &["--where", "temperature!=300"])),
        ["b", "f"]
    );
    assert_eq!(found(&fx, &["--where", "cold=true"]), ["d"]);
    assert_eq!(found(&fx, &["--where", "proposal=p-1"]), ["a"]);
}

#[test]
fn runs_where_globs_dotted_keys_and_combines_with_and() {
    let fx = indexed();
    assert_eq!(
        sorted(found(&fx, &["--where", "sample.name=P3HT*"])),
        ["a", "c"]
    );
    assert_eq!(found(&fx, &["--where", "sample.name!=P3HT*"]), ["b"]);
    assert_eq!(found(&fx, &["--where", "sample.name=P3HT-?"]), ["c", "a"]);
    assert_eq!(
        found(
            &fx,
            &[
                "--where",
                "sample.name=P3HT*",
                "--where",
                "temperature < 400"
            ]
        ),
        ["a"]
    );
    assert_eq!(
        found(&fx, &["--where", "temperature>=300", "--beamtime", "bt-2"]),
        ["f"]
    );
    assert!(found(&fx, &["--where", "no.such.key=1"]).is_empty());
}

#[test]
fn runs_where_with_unknown_syntax_exits_2_with_the_expected_form() {
    let fx = indexed();
    for bad in [
        "temperature",
        "=300",
        "temperature=>300",
        "t <= ",
        "sample.=x",
        "t<P3HT*",
        "a b=1",
    ] {
        let (code, out, err) = run(&mut fx.beamdb(&["runs", "--where", bad]));
        assert_eq!(code, 2, "{bad:?}: {out}{err}");
        assert!(
            err.contains(&format!("--where {bad:?}"))
                && err.contains("write KEY OP VALUE as one argument"),
            "{bad:?}: {err}"
        );
        assert!(out.is_empty(), "{out}");
    }
}

#[test]
fn runs_text_finds_runs_by_words_of_their_metadata_ranked_and_combined() {
    let fx = indexed();
    assert_eq!(sorted(found(&fx, &["--text", "P3HT anneal"])), ["a", "f"]);
    assert_eq!(
        sorted(found(&fx, &["--text", "p3ht"])),
        ["a", "c", "d", "f"]
    );
    // Ranked: the run that says little else but "anneal" comes first.
    assert_eq!(found(&fx, &["--text", "anneal"])[0], "e");
    assert_eq!(
        sorted(found(
            &fx,
            &["--text", "anneal", "--where", "temperature > 300"]
        )),
        ["b", "f"]
    );
    assert_eq!(
        found(&fx, &["--text", "anneal", "--beamtime", "bt-2"]),
        ["f"]
    );
    assert_eq!(found(&fx, &["--text", "annea*", "--sample", "PS"]), ["b"]);
    // FTS5 syntax in the words is text, not an error.
    assert_eq!(found(&fx, &["--text", "p-1"]), ["a"]);
    assert!(found(&fx, &["--text", "\"NOT OR ("]).is_empty());
    let (code, _, err) = run(&mut fx.beamdb(&["runs", "--text", "  "]));
    assert_eq!(code, 2, "{err}");
}

#[test]
fn runs_columns_shows_promoted_and_runstart_keys_in_the_table() {
    let fx = indexed();
    let (code, out, err) = run(&mut fx.beamdb(&[
        "runs",
        "--beamtime",
        "bt-1",
        "--where",
        "temperature>=300",
        "--columns",
        "uid,sample.name,temperature,plan",
    ]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "UID  SAMPLE.NAME  TEMPERATURE  PLAN\nb    PS           350.5        count\na    P3HT-a       300          count\n"
    );
}
