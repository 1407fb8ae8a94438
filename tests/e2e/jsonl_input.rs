//! JSON lines input end to end: flat lines decoded by delt's own decoder, the lines it hands to
//! arrow-json, nested columns it skips, and files split into ranges read side by side.

use serde_json::{Value, json};

use crate::common::{p, run_sql};

/// (id, score, text) of every line of a JSON lines file.
fn rows_of(path: &std::path::Path) -> Vec<(i64, Option<f64>, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| {
            let row: Value = serde_json::from_str(line).unwrap();
            let text = row["text"].as_str().unwrap().to_string();
            (row["id"].as_i64().unwrap(), row["score"].as_f64(), text)
        })
        .collect()
}

#[test]
fn lines_of_every_kind_read_the_same_whatever_the_ranges_and_columns() {
    let dir = tempfile::tempdir().unwrap();
    let mut input = String::new();
    let mut expected = Vec::new();
    for id in 0..3000i64 {
        let text = match id % 5 {
            0 => format!("plain {id}"),
            1 => format!("quote \" backslash \\ newline \n tab \t control \u{1} {id}"),
            2 => format!("unicode é ✓ 😀 {id}"),
            3 => String::new(),
            _ => "x".repeat((id % 300) as usize),
        };
        let score = (id % 7 != 0).then(|| (id % 100) as f64 / 10.0);
        let mut object = json!({"id": id, "text": text});
        if let Some(score) = score {
            object["score"] = json!(score);
        }
        if id % 11 == 0 {
            // A nested column, not read by `SELECT id, score, text`: skipped unchecked.
            object["meta"] = json!({"tags": ["a", "}]\""], "n": {"deep": [1, 2]}});
        }
        let mut line = object.to_string();
        if id % 17 == 0 {
            // A key twice: the line goes to arrow-json, where the last value counts.
            line = line.replacen('{', "{\"id\": -1, ", 1);
        }
        if id % 13 == 0 {
            line = line.replace(',', " ,\t");
        }
        input.push_str(&line);
        input.push_str(if id % 19 == 0 { "\r\n" } else { "\n" });
        if id % 23 == 0 {
            input.push_str("  \n");
        }
        expected.push((id, score, text));
    }
    std::fs::write(dir.path().join("in.jsonl"), input).unwrap();
    let source = p(dir.path(), "in.jsonl");
    for (columns, threads) in [
        ("id, score, text", "1"),
        ("id, score, text", "3"),
        ("*", "3"),
    ] {
        let out = dir
            .path()
            .join(format!("out-{threads}-{}.jsonl", columns.len()));
        run_sql(
            &[
                // Files are split into ranges from 10 MB on by default; this one is 0.3 MB.
                "SET datafusion.optimizer.repartition_file_min_size = 1000",
                &format!(
                    "COPY (SELECT {columns} FROM '{source}' ORDER BY id) TO '{}'",
                    out.display()
                ),
            ],
            &["--threads", threads],
        );
        assert_eq!(
            rows_of(&out),
            expected,
            "SELECT {columns}, {threads} threads"
        );
    }
}

/// Strings of a local file large enough to be read in mapped pieces are views into it; a fold
/// written back as JSON lines gathers them. The output is byte for byte that of the same query
/// reading plain (copied) strings.
#[test]
fn strings_read_as_views_fold_as_copied_strings_do() {
    let dir = tempfile::tempdir().unwrap();
    let mut input = String::new();
    for id in 0..60_000i64 {
        let text = match id % 4 {
            0 => format!("escaped \"{id}\"\n"),
            1 => format!("short {}", id % 10),
            _ => format!(
                "{id} {}",
                "plain words of a document ".repeat((id % 9) as usize + 1)
            ),
        };
        let line = json!({"id": id, "score": (id * 7919 % 1000) as f64 / 10.0, "text": text});
        input.push_str(&line.to_string());
        input.push('\n');
    }
    // Two partitions of over 1 MiB each, read in mapped pieces: views span pieces and batches.
    assert!(input.len() > 6 << 20, "{} bytes", input.len());
    std::fs::write(dir.path().join("in.jsonl"), input).unwrap();
    let source = p(dir.path(), "in.jsonl");
    let fold = |name: &str, settings: &[&str]| {
        let out = dir.path().join(name);
        let copy = format!(
            "COPY (SELECT * FROM '{source}' ORDER BY fold_order(score, 3)) TO '{}'",
            out.display()
        );
        let types = format!("SELECT DISTINCT arrow_typeof(text) FROM '{source}'");
        let mut statements = vec!["SET datafusion.optimizer.repartition_file_min_size = 1000"];
        statements.extend(settings);
        statements.extend([copy.as_str(), types.as_str()]);
        let shown = run_sql(&statements, &["--threads", "2", "--format", "csv"]);
        (
            std::fs::read(out).unwrap(),
            String::from_utf8(shown.stdout).unwrap(),
        )
    };
    let (views, views_type) = fold("views.jsonl", &[]);
    let (copies, copies_type) = fold(
        "copies.jsonl",
        &["SET datafusion.execution.parquet.schema_force_view_types = false"],
    );
    assert!(views_type.contains("Utf8View"), "{views_type}");
    assert!(
        !copies_type.contains("Utf8View") && copies_type.contains("Utf8"),
        "{copies_type}"
    );
    assert_eq!(views.len(), copies.len());
    assert!(views == copies, "the two folds differ");
    let ids: Vec<i64> = String::from_utf8(views)
        .unwrap()
        .lines()
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap()["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(ids.len(), 60_000);
}
