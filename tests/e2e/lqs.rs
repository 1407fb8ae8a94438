//! `delt lqs annotate` and `delt lqs fit` through the real binary: labels on real text that
//! must rank the target's distribution above an unrelated domain and shuffled-word noise, the
//! annotate -> fit -> SQL workflow on tiny models, determinism, and bad input.

use std::path::Path;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::Float64Type;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use delt_models::testing;

use crate::common::*;

fn read_labels(path: &Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(path).unwrap();
    ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

fn column(batches: &[RecordBatch], name: &str) -> Vec<f64> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name(name)
                .unwrap()
                .as_primitive::<Float64Type>()
                .values()
                .to_vec()
        })
        .collect()
}

fn annotate_args<'a>(
    proxy: &'a str,
    target: &'a str,
    out: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "lqs", "annotate", "--proxy", proxy, "--target", target, "--out", out,
    ];
    args.extend_from_slice(extra);
    args
}

/// Sample documents of one domain, longer than 200 bytes.
fn sample_texts(domain: &str, n: usize) -> Vec<String> {
    std::fs::read_to_string(repo().join("examples/data/docs.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["domain"] == domain && v["text"].as_str().unwrap().len() > 200)
        .map(|v| v["text"].as_str().unwrap().to_string())
        .take(n)
        .collect()
}

/// The words of `text` in a fixed scrambled order: the vocabulary of real text, no language.
fn shuffled(text: &str, seed: usize) -> String {
    let mut words: Vec<&str> = text.split_whitespace().collect();
    for i in (1..words.len()).rev() {
        words.swap(i, (i * 7919 + seed * 104729) % (i + 1));
    }
    words.join(" ")
}

#[test]
fn target_like_documents_get_higher_gamma_than_another_domain_and_noise() {
    let dir = tempfile::tempdir().unwrap();
    let python = sample_texts("python_docs", 30);
    let fortunes = sample_texts("fortunes", 15);
    let noise: Vec<String> = sample_texts("devils_dictionary", 15)
        .iter()
        .enumerate()
        .map(|(i, t)| shuffled(t, i))
        .collect();
    let proxy: Vec<Option<&str>> = python
        .iter()
        .chain(&fortunes)
        .chain(&noise)
        .map(|s| Some(s.as_str()))
        .collect();
    let proxy_path = dir.path().join("proxy.jsonl");
    write_texts(&proxy_path, &proxy);
    let target = repo().join("examples/data/target_python_howto.jsonl");
    let out = dir.path().join("labels.parquet");
    let run = delt(&annotate_args(
        proxy_path.to_str().unwrap(),
        target.to_str().unwrap(),
        out.to_str().unwrap(),
        &[
            "--id-column",
            "id",
            "--vocab-size",
            "1024",
            "--max-tokens",
            "96",
            "--hidden",
            "64",
            "--layers",
            "2",
            "--heads",
            "4",
            "--warmup-steps",
            "60",
            "--warmup-lr",
            "0.5",
            "--steps",
            "20",
            "--interval",
            "10",
            "--lr",
            "0.05",
            "--batch-size",
            "8",
            "--seed",
            "7",
        ],
    ));
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let gamma = column(&read_labels(&out), "gamma");
    assert_eq!(gamma.len(), 60);
    // ROC AUC of gamma for "is a Python documentation paragraph" (the first 30).
    let (mut wins, mut pairs) = (0.0, 0.0);
    for a in &gamma[..30] {
        for b in &gamma[30..] {
            pairs += 1.0;
            wins += if a > b {
                1.0
            } else if a == b {
                0.5
            } else {
                0.0
            };
        }
    }
    let auc = wins / pairs;
    let mean = |r: std::ops::Range<usize>| gamma[r.clone()].iter().sum::<f64>() / r.len() as f64;
    eprintln!(
        "ROC AUC {auc:.3}; mean gamma: python docs {:.2}, fortunes {:.2}, shuffled noise {:.2}",
        mean(0..30),
        mean(30..45),
        mean(45..60)
    );
    assert!(auc >= 0.8, "ROC AUC {auc}");
    assert!(mean(0..30) > mean(30..45) && mean(0..30) > mean(45..60));
}

#[test]
fn annotate_fit_and_score_in_sql() {
    let dir = tempfile::tempdir().unwrap();
    let words = testing::WORDS;
    let docs: Vec<String> = (0..40)
        .map(|i| {
            (0..(6 + i % 7))
                .map(|j| words[(i * 13 + j * 7) % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let proxy: Vec<Option<&str>> = docs.iter().map(|s| Some(s.as_str())).collect();
    let (proxy_path, target_path) = (
        dir.path().join("proxy.jsonl"),
        dir.path().join("target.jsonl"),
    );
    write_texts(&proxy_path, &proxy);
    write_texts(&target_path, &proxy[..5]);
    let labels = dir.path().join("labels.parquet");
    let lm = dir.path().join("proxy-lm");
    // A tiny proxy LM; the first run also saves it.
    let mut tiny = TINY_LM.to_vec();
    tiny.extend([
        "--id-column",
        "id",
        "--max-tokens",
        "32",
        "--steps",
        "6",
        "--interval",
        "3",
        "--batch-size",
        "4",
    ]);
    let (p, t) = (proxy_path.to_str().unwrap(), target_path.to_str().unwrap());
    let mut first = tiny.to_vec();
    first.extend(["--save-model", lm.to_str().unwrap()]);
    let run = delt(&annotate_args(p, t, labels.to_str().unwrap(), &first));
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("labelled 40 proxy documents against 5 target documents"),
        "{stderr}"
    );
    // The same inputs and seed give the same labels, byte for byte.
    let again = dir.path().join("again.parquet");
    let run = delt(&annotate_args(p, t, again.to_str().unwrap(), &tiny));
    assert!(run.status.success());
    assert_eq!(
        std::fs::read(&labels).unwrap(),
        std::fs::read(&again).unwrap()
    );
    let batches = read_labels(&labels);
    let gamma = column(&batches, "gamma");
    assert_eq!(gamma.len(), 40);
    let mean = gamma.iter().sum::<f64>() / 40.0;
    assert!(mean.abs() < 1e-9 && gamma.iter().all(|g| (-3.0..=3.0).contains(g)));
    for name in ["raw_gamma", "quality", "learnability", "reliability"] {
        assert!(
            column(&batches, name).iter().all(|x| x.is_finite()),
            "{name}"
        );
    }

    // The saved proxy LM is a model the perplexity plugin loads.
    let ppl = run_sql(
        &[
            &format!(
                "CREATE FUNCTION ppl(text VARCHAR) RETURNS DOUBLE LANGUAGE delt AS 'delt_perplexity#perplexity?model={}&max_tokens=32'",
                lm.display()
            ),
            "SELECT ppl('the data and the model') AS p",
        ],
        &["--format", "csv"],
    );
    let value: f64 = String::from_utf8_lossy(&ppl.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(value > 1.0 && value.is_finite(), "{value}");

    // A later run continues from the saved proxy LM (theta_T of the first run): a different
    // starting point, so different labels.
    let resumed = dir.path().join("resumed.parquet");
    let mut from = tiny.to_vec();
    from.extend(["--init-model", lm.to_str().unwrap()]);
    let run = delt(&annotate_args(p, t, resumed.to_str().unwrap(), &from));
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_ne!(column(&read_labels(&resumed), "gamma"), gamma);
    let missing = dir.path().join("no-model");
    std::fs::create_dir(&missing).unwrap();
    let mut from = tiny.to_vec();
    from.extend(["--init-model", missing.to_str().unwrap()]);
    let run = delt(&annotate_args(p, t, resumed.to_str().unwrap(), &from));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && stderr.contains("no-model/tokenizer.json"),
        "{stderr}"
    );

    let encoder = dir.path().join("encoder");
    testing::write_bert(&encoder, 3).unwrap();
    let scorer = dir.path().join("scorer");
    let run = delt(&[
        "lqs",
        "fit",
        "--labels",
        labels.to_str().unwrap(),
        "--encoder",
        encoder.to_str().unwrap(),
        "--out",
        scorer.to_str().unwrap(),
        "--max-tokens",
        "32",
        "--validation",
        "0.3",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("validation Spearman"), "{stderr}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(scorer.join("scorer.json")).unwrap())
            .unwrap();
    assert!(config["training"]["validation_spearman"].is_number());

    let out = dir.path().join("folded.parquet");
    let run = delt(&[
        "sql",
        "-f",
        repo().join("sql/lqs_fold.sql").to_str().unwrap(),
        "--param",
        &format!("corpus={}", proxy_path.display()),
        "--param",
        &format!("scorer={}", scorer.display()),
        "--param",
        "keep=0.5",
        "--param",
        &format!("out={}", out.display()),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(read_output(&out).len(), 20, "half of 40, folded");
}

#[test]
fn bad_lqs_inputs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = dir.path().join("proxy.jsonl");
    write_texts(
        &proxy,
        &[
            Some("the data and the model"),
            Some("a model of the data"),
            Some(""),
        ],
    );
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let out = dir.path().join("labels.parquet");
    let mut small = TINY_LM.to_vec();
    small.extend(["--steps", "2", "--interval", "1"]);
    // Runs annotate expecting a clean failure; returns stderr.
    let fails = |target: &Path, args: &[&str]| -> String {
        let run = delt(&annotate_args(
            proxy.to_str().unwrap(),
            target.to_str().unwrap(),
            out.to_str().unwrap(),
            args,
        ));
        let stderr = String::from_utf8_lossy(&run.stderr).to_string();
        assert_eq!(run.status.code(), Some(1), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!out.exists(), "no half-written labels");
        stderr
    };
    let e = fails(&empty, &small);
    assert!(
        e.contains("target set is empty") || e.contains("empty.jsonl"),
        "{e}"
    );
    let e = fails(&proxy, &small);
    assert!(
        e.contains("proxy document 2 has fewer than two tokens"),
        "{e}"
    );
    let mut wild = small.to_vec();
    wild.extend(["--lr", "1e30"]);
    write_texts(
        &proxy,
        &[Some("the data and the model"), Some("a model of the data")],
    );
    let e = fails(&proxy, &wild);
    assert!(
        e.contains("diverged at trajectory step") || e.contains("non-finite at step"),
        "{e}"
    );
}
