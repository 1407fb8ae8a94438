//! delt's own model scorers (plugins/lqs, plugins/perplexity) through SQL: tiny random models
//! written by the test for the mechanics and the bad inputs, the real MiniLM and SmolLM2 when
//! `tests/fetch_models.sh` has fetched them (CI does).

use std::path::Path;

use delt_models::candle_core::Device;
use delt_models::llama::LanguageModel;
use delt_models::lqs::{self, LqsScorer, ScorerConfig};
use delt_models::testing;

use crate::common::*;

const TEXTS: [Option<&str>; 7] = [
    Some("the model is in the data and the data is in the model"),
    Some("what do we train first"),
    None,
    Some(""),
    Some("a"),
    Some("how long will it take to find the order of the words"),
    Some("zzz qqq unknown words"),
];

/// A tiny encoder and a scorer directory over it, in `root`.
fn tiny_scorer(root: &Path) -> std::path::PathBuf {
    let encoder = root.join("encoder");
    testing::write_bert(&encoder, 21).unwrap();
    let weight: Vec<f32> = (0..32).map(|i| ((i * 7) % 11) as f32 / 5.0 - 1.0).collect();
    let config = ScorerConfig {
        format: lqs::FORMAT.into(),
        version: lqs::VERSION,
        encoder: "../encoder".into(),
        encoder_fingerprint: lqs::encoder_fingerprint(&encoder).unwrap(),
        head: "head.safetensors".into(),
        hidden_size: 32,
        max_tokens: 64,
        pooling: "mean".into(),
        training: serde_json::json!({"labels": "test"}),
    };
    let dir = root.join("scorer");
    lqs::save(&dir, &config, &weight, -0.5).unwrap();
    dir
}

fn create(name: &str, library: &str, function: &str, query: &str) -> String {
    format!(
        "CREATE FUNCTION {name}(text VARCHAR) RETURNS DOUBLE LANGUAGE delt AS '{}#{function}?{query}'",
        rust_plugin(library).display()
    )
}

#[test]
fn lqs_score_in_sql_equals_the_scorer_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let scorer_dir = tiny_scorer(dir.path());
    let input = dir.path().join("docs.jsonl");
    write_texts(&input, &TEXTS);
    let out = dir.path().join("scored.jsonl");
    run_sql(
        &[
            &create(
                "lqs",
                "delt_lqs",
                "lqs_score",
                &format!(
                    "scorer={}&forward_batch=2&batch_size=3",
                    scorer_dir.display()
                ),
            ),
            &format!(
                "COPY (SELECT id, lqs(text) AS s FROM '{}') TO '{}'",
                input.display(),
                out.display()
            ),
        ],
        &[],
    );
    let got = scores_of(&out, "s");
    let scorer = LqsScorer::load(&scorer_dir, None, &Device::Cpu).unwrap();
    for (i, text) in TEXTS.iter().enumerate() {
        match text {
            None => assert_eq!(got[i], None, "NULL text gives a NULL score"),
            Some(t) => {
                let want = f64::from(scorer.score(&[t], 1).unwrap()[0]);
                let g = got[i].unwrap();
                assert!((g - want).abs() < 1e-5, "row {i}: {g} vs {want}");
            }
        }
    }
    // The scores differ between documents: the function is not constant.
    assert!((got[0].unwrap() - got[1].unwrap()).abs() > 1e-3);
}

#[test]
fn fold_by_a_model_score() {
    let dir = tempfile::tempdir().unwrap();
    let scorer_dir = tiny_scorer(dir.path());
    let words = testing::WORDS;
    let rows: Vec<String> = (0..40)
        .map(|i| {
            (0..(3 + i % 9))
                .map(|j| words[(i * 13 + j * 7) % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let texts: Vec<Option<&str>> = rows.iter().map(|s| Some(s.as_str())).collect();
    let input = dir.path().join("docs.jsonl");
    write_texts(&input, &texts);
    let (scored, folded) = (
        dir.path().join("scored.jsonl"),
        dir.path().join("folded.jsonl"),
    );
    let function = create(
        "lqs",
        "delt_lqs",
        "lqs_score",
        &format!("scorer={}", scorer_dir.display()),
    );
    run_sql(
        &[
            &function,
            &format!(
                "COPY (SELECT id, lqs(text) AS score FROM '{}') TO '{}'",
                input.display(),
                scored.display()
            ),
            &format!(
                "COPY (SELECT id, score FROM (SELECT id, lqs(text) AS score FROM '{}') ORDER BY fold_order(score, 3)) TO '{}'",
                input.display(),
                folded.display()
            ),
        ],
        &[],
    );
    let scores = scores_of(&scored, "score");
    let reference_rows: Vec<Row> = scores
        .iter()
        .enumerate()
        .map(|(i, s)| Row {
            id: i as i64,
            score: *s,
            text: String::new(),
        })
        .collect();
    assert_eq!(ids(&folded), reference_fold(&reference_rows, 3, "asc"));
}

#[test]
fn perplexity_in_sql_equals_the_model_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("lm");
    testing::write_llama(&model, 5).unwrap();
    let input = dir.path().join("docs.jsonl");
    write_texts(&input, &TEXTS);
    let out = dir.path().join("scored.jsonl");
    let query = format!("model={}&max_tokens=32&forward_batch=3", model.display());
    run_sql(
        &[
            &create("ppl", "delt_perplexity", "perplexity", &query),
            &create("nll", "delt_perplexity", "token_nll", &query),
            &format!(
                "COPY (SELECT id, ppl(text) AS p, nll(text) AS n FROM '{}') TO '{}'",
                input.display(),
                out.display()
            ),
        ],
        &[],
    );
    let (ppl, nll) = (scores_of(&out, "p"), scores_of(&out, "n"));
    let lm = LanguageModel::load(&model, 32, &Device::Cpu).unwrap();
    for (i, text) in TEXTS.iter().enumerate() {
        let want = text.and_then(|t| lm.token_losses(&[t], 1).unwrap()[0]);
        match want {
            None => assert_eq!(
                (ppl[i], nll[i]),
                (None, None),
                "row {i}: nothing to predict"
            ),
            Some(loss) => {
                assert!((nll[i].unwrap() - loss.mean()).abs() < 1e-5, "row {i}");
                assert!(
                    (ppl[i].unwrap() - loss.perplexity()).abs() < 1e-4 * loss.perplexity(),
                    "row {i}"
                );
            }
        }
    }
    assert_eq!(nll[3], None, "empty text: only <s>, nothing to predict");
    assert!(nll[4].is_some(), "one word after <s> is one prediction");
}

#[test]
fn a_huge_document_is_truncated_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let scorer_dir = tiny_scorer(dir.path());
    let huge = "the data model ".repeat(400_000);
    let prefix: String = "the data model ".repeat(30);
    let input = dir.path().join("docs.jsonl");
    write_texts(&input, &[Some(&huge), Some(&prefix)]);
    let out = dir.path().join("scored.jsonl");
    run_sql(
        &[
            &create(
                "lqs",
                "delt_lqs",
                "lqs_score",
                &format!("scorer={}&max_tokens=16", scorer_dir.display()),
            ),
            &format!(
                "COPY (SELECT id, lqs(text) AS s FROM '{}') TO '{}'",
                input.display(),
                out.display()
            ),
        ],
        &[],
    );
    let s = scores_of(&out, "s");
    assert!(
        (s[0].unwrap() - s[1].unwrap()).abs() < 1e-6,
        "both are the first 14 words: {s:?}"
    );
}

#[test]
fn bad_inputs_and_models_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let scorer_dir = tiny_scorer(dir.path());
    let lqs = |query: &str| create("lqs", "delt_lqs", "lqs_score", query);
    let scorer = format!("scorer={}", scorer_dir.display());

    // Binary that is not UTF-8.
    let e = fail_sql(&[
        &lqs(&scorer),
        "SELECT lqs(X'48656c6c6f') AS ok, lqs(CAST(X'41ff42' AS BYTEA)) AS bad",
    ]);
    assert!(
        e.contains("lqs: argument 1 is binary and not UTF-8")
            && e.contains("row 0")
            && e.contains("41 ff 42"),
        "{e}"
    );
    // Binary that is UTF-8 scores like the text.
    let out = run_sql(
        &[
            &lqs(&scorer),
            "SELECT lqs(X'7468652064617461') = lqs('the data') AS same",
        ],
        &["--format", "csv"],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("true"));

    // A model directory with a missing file.
    std::fs::remove_file(dir.path().join("encoder/tokenizer.json")).unwrap();
    let e = fail_sql(&[&lqs(&scorer)]);
    assert!(
        e.contains("encoder/tokenizer.json") && e.contains("missing"),
        "{e}"
    );
    testing::write_bert(&dir.path().join("encoder"), 21).unwrap();

    // A config the loader does not support.
    let lm = dir.path().join("lm");
    testing::write_llama(&lm, 1).unwrap();
    let config = std::fs::read_to_string(lm.join("config.json")).unwrap();
    std::fs::write(
        lm.join("config.json"),
        config.replace("\"llama\"", "\"gpt_neox\""),
    )
    .unwrap();
    let e = fail_sql(&[&create(
        "ppl",
        "delt_perplexity",
        "perplexity",
        &format!("model={}", lm.display()),
    )]);
    assert!(e.contains("gpt_neox") && e.contains("Llama"), "{e}");

    // CUDA in a CPU-only build; an unknown device; missing and unknown options.
    let e = fail_sql(&[&lqs(&format!("{scorer}&device=cuda"))]);
    assert!(
        e.contains("no CUDA support") && e.contains("--features cuda"),
        "{e}"
    );
    let e = fail_sql(&[&lqs(&format!("{scorer}&device=tpu"))]);
    assert!(e.contains("'tpu'"), "{e}");
    let e = fail_sql(&[&lqs("forward_batch=4")]);
    assert!(e.contains("scorer=<scorer directory>"), "{e}");
    let e = fail_sql(&[&lqs(&format!("{scorer}&temperature=2"))]);
    assert!(e.contains("temperature"), "{e}");
    let e = fail_sql(&[&lqs(&format!("{scorer}&forward_batch=0"))]);
    assert!(
        e.contains("forward_batch must be a positive integer"),
        "{e}"
    );
}

#[test]
fn device_auto_says_what_it_chose() {
    let dir = tempfile::tempdir().unwrap();
    let scorer_dir = tiny_scorer(dir.path());
    let out = run_sql(
        &[
            &create(
                "lqs",
                "delt_lqs",
                "lqs_score",
                &format!("scorer={}&device=auto", scorer_dir.display()),
            ),
            "SELECT lqs('the data') AS s",
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("lqs_score: device auto -> cpu (built without CUDA)"),
        "{stderr}"
    );
}

#[test]
fn real_models_score_real_text() {
    let (Some(minilm), Some(smollm)) = (
        testing::real_model("all-MiniLM-L6-v2"),
        testing::real_model("SmolLM2-135M-Instruct.Q4_1.gguf"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // A head that reads one direction of the embedding space: enough to exercise the path.
    let weight: Vec<f32> = (0..384)
        .map(|i| if i % 2 == 0 { 0.1 } else { -0.1 })
        .collect();
    let config = ScorerConfig {
        format: lqs::FORMAT.into(),
        version: lqs::VERSION,
        encoder: minilm.to_str().unwrap().into(),
        encoder_fingerprint: lqs::encoder_fingerprint(&minilm).unwrap(),
        head: "head.safetensors".into(),
        hidden_size: 384,
        max_tokens: 128,
        pooling: "mean".into(),
        training: serde_json::Value::Null,
    };
    let scorer_dir = dir.path().join("scorer");
    lqs::save(&scorer_dir, &config, &weight, 0.0).unwrap();
    let sample = repo().join("examples/data/docs.jsonl");
    let out = dir.path().join("scored.jsonl");
    let run = run_sql(
        &[
            &create(
                "lqs",
                "delt_lqs",
                "lqs_score",
                &format!("scorer={}", scorer_dir.display()),
            ),
            &create(
                "ppl",
                "delt_perplexity",
                "perplexity",
                &format!("model={}&max_tokens=64", smollm.display()),
            ),
            // Each document and the same words in reverse order: natural text must be the more predictable.
            &format!(
                "COPY (SELECT id, lqs(text) AS q, ppl(text) AS p, ppl(array_to_string(array_reverse(string_to_array(text, ' ')), ' ')) AS p_reversed \
                 FROM (SELECT * FROM '{}' WHERE domain = 'python_docs' AND length(text) > 300 ORDER BY id LIMIT 12)) TO '{}'",
                sample.display(),
                out.display()
            ),
        ],
        &[],
    );
    // The default path for GGUF weights on a CPU with memory to spare, said once although
    // every partition loads its own instance.
    let stderr = String::from_utf8_lossy(&run.stderr);
    let line = "perplexity: GGUF weights dequantized to float32 at load (";
    assert_eq!(stderr.matches(line).count(), 1, "{stderr}");
    assert!(
        stderr.contains("dequantize=false keeps them quantized)"),
        "{stderr}"
    );
    let kept = run_sql(
        &[
            &create(
                "nll",
                "delt_perplexity",
                "token_nll",
                &format!("model={}&max_tokens=16&dequantize=false", smollm.display()),
            ),
            "SELECT nll('the data and the model') AS s",
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&kept.stderr);
    assert!(
        stderr.contains("token_nll: GGUF weights kept quantized (dequantize=false)"),
        "{stderr}"
    );
    let (q, p, rev) = (
        scores_of(&out, "q"),
        scores_of(&out, "p"),
        scores_of(&out, "p_reversed"),
    );
    assert_eq!(q.len(), 12);
    assert!(q.iter().all(|s| s.is_some_and(f64::is_finite)));
    let better = p
        .iter()
        .zip(&rev)
        .filter(|(a, b)| a.unwrap() < b.unwrap())
        .count();
    assert!(
        better >= 11,
        "natural text less perplexing than reversed in only {better}/12: {p:?} vs {rev:?}"
    );
}
