//! `delt bench efficacy` end to end on a small corpus and a tiny model: arms run through the
//! SQL engine, every run trains, the report, JSON and plots are written, and two runs with
//! the same seeds give identical losses.

use std::path::Path;

use delt_models::testing::WORDS;
use serde_json::Value;

use crate::common::*;

/// 240 documents: half follow a rule (a fixed walk through the word list, like the target),
/// half are seeded noise; `score` says which (plus a small spread).
fn write_corpus(dir: &Path) -> (String, String) {
    let mut state = 7u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    let mut corpus = String::new();
    for id in 0..240 {
        let ruled = id % 2 == 0;
        let start = next() % WORDS.len();
        let words: Vec<&str> = (0..12 + id % 9)
            .map(|j| {
                if ruled {
                    WORDS[(start + 3 * j) % WORDS.len()]
                } else {
                    WORDS[next() % WORDS.len()]
                }
            })
            .collect();
        let score = if ruled { 1.0 } else { 0.0 } + (id % 10) as f64 / 100.0;
        corpus.push_str(
            &serde_json::json!({"id": id, "text": words.join(" "), "score": score}).to_string(),
        );
        corpus.push('\n');
    }
    let target: String = (0..20)
        .map(|i| {
            let words: Vec<&str> = (0..16)
                .map(|j| WORDS[(i * 5 + 3 * j) % WORDS.len()])
                .collect();
            format!("{}\n", serde_json::json!({ "text": words.join(" ") }))
        })
        .collect();
    let (c, t) = (p(dir, "corpus.jsonl"), p(dir, "target.jsonl"));
    std::fs::write(&c, corpus).unwrap();
    std::fs::write(&t, target).unwrap();
    (c, t)
}

const ARMS: &str = "
CREATE VIEW shuffle AS SELECT text FROM corpus ORDER BY shuffle_order(1);
CREATE VIEW sort_asc AS SELECT text FROM corpus ORDER BY score;
CREATE VIEW sort_desc AS SELECT text FROM corpus ORDER BY score DESC;
CREATE VIEW top50 AS SELECT text FROM corpus WHERE top_r(score, 0.5) ORDER BY fold_order(score, 3);
";

fn bench(
    corpus: &str,
    target: &str,
    arms: &str,
    out: &str,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "bench",
        "efficacy",
        "--corpus",
        corpus,
        "--target",
        target,
        "--arms",
        arms,
        "--out",
        out,
        "--seeds",
        "2",
        "--seq-len",
        "32",
        "--batch-size",
        "8",
        "--evals",
        "5",
        "--heldout",
        "0.1",
    ];
    args.extend_from_slice(&TINY_LM);
    args.extend_from_slice(extra);
    delt(&args)
}

/// Every run's losses (the wall time left out).
fn losses(out: &str) -> Vec<Value> {
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(out).join("results.json")).unwrap(),
    )
    .unwrap();
    json["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.as_object_mut().unwrap().remove("seconds");
            r
        })
        .collect()
}

#[test]
fn efficacy_bench_runs_every_arm_and_repeats_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (corpus, target) = write_corpus(dir.path());
    let arms = p(dir.path(), "arms.sql");
    std::fs::write(&arms, ARMS).unwrap();
    let (first, second) = (p(dir.path(), "first"), p(dir.path(), "second"));
    for out in [&first, &second] {
        let run = bench(&corpus, &target, &arms, out, &[]);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
    let runs = losses(&first);
    assert_eq!(runs.len(), 8, "4 arms x 2 seeds");
    assert_eq!(runs, losses(&second), "same seeds, same losses");

    let run = |arm: &str, seed: u64| {
        runs.iter()
            .find(|r| r["arm"] == arm && r["seed"] == seed)
            .unwrap_or_else(|| panic!("{arm} {seed}"))
    };
    // 24 of 240 documents held out; top50 keeps half and trains two passes over it.
    assert_eq!(run("shuffle", 1)["documents"], 216);
    assert_eq!(run("top50", 1)["documents"], 108);
    let tokens = |arm| run(arm, 1)["tokens"].as_u64().unwrap();
    assert!(tokens("top50") >= tokens("shuffle") && tokens("top50") < tokens("shuffle") + 40);
    assert_eq!(tokens("sort_asc"), tokens("shuffle"));
    // The order is really applied: same documents, same seed, different losses.
    assert_ne!(
        run("sort_asc", 1)["target_loss"],
        run("sort_desc", 1)["target_loss"]
    );
    // Paired seeds: the same initialisation, so every arm starts from the same losses.
    assert_eq!(
        run("sort_asc", 2)["curve"][0],
        run("shuffle", 2)["curve"][0]
    );
    assert_ne!(run("shuffle", 1)["curve"][0], run("shuffle", 2)["curve"][0]);
    for r in &runs {
        let (start, end) = (
            r["curve"][0]["heldout_loss"].as_f64().unwrap(),
            r["heldout_loss"].as_f64().unwrap(),
        );
        assert!(end < start, "training lowers the held-out loss: {r}");
    }

    // A token budget of its own: every arm stops once it has seen it.
    let budget = p(dir.path(), "budget");
    let run = bench(&corpus, &target, &arms, &budget, &["--tokens", "600"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for r in losses(&budget) {
        let tokens = r["tokens"].as_u64().unwrap();
        assert!((600..632).contains(&tokens), "{r}");
    }

    let report = std::fs::read_to_string(Path::new(&first).join("report.md")).unwrap();
    for arm in ["shuffle", "sort_asc", "sort_desc", "top50"] {
        assert!(report.contains(&format!("| {arm} |")), "{report}");
    }
    assert!(report.contains("Δ target vs shuffle"), "{report}");
    for png in ["loss_curves.png", "target_loss.png"] {
        let bytes = std::fs::read(Path::new(&first).join(png)).unwrap();
        assert!(
            bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
            "{png}"
        );
    }
}

#[test]
fn bad_efficacy_inputs_are_named_and_leave_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let (corpus, target) = write_corpus(dir.path());
    let arms = p(dir.path(), "arms.sql");
    let out = p(dir.path(), "out");
    let fails = |arms_sql: &str, extra: &[&str]| -> String {
        std::fs::write(&arms, arms_sql).unwrap();
        let run = bench(&corpus, &target, &arms, &out, extra);
        assert!(!run.status.success());
        assert!(!Path::new(&out).exists(), "no output on failure");
        String::from_utf8_lossy(&run.stderr).into_owned()
    };
    let err = fails("SELECT 1;", &[]);
    assert!(err.contains("arms.sql: no arms"), "{err}");
    let err = fails("CREATE VIEW a AS SELECT id FROM corpus;", &[]);
    assert!(err.contains("arm a: no column text"), "{err}");
    let err = fails(
        "CREATE VIEW a AS SELECT text FROM corpus WHERE id < 0;",
        &[],
    );
    assert!(err.contains("arm a has no documents"), "{err}");
    let err = fails(ARMS, &["--baseline", "nope"]);
    assert!(err.contains("--baseline nope: no such arm"), "{err}");
    let err = fails(ARMS, &["--device", "cuda"]);
    assert!(err.contains("no CUDA support"), "{err}");
    let err = fails(ARMS, &["--lr", "1e9"]);
    assert!(
        err.contains("diverged") || err.contains("non-finite"),
        "{err}"
    );
}
