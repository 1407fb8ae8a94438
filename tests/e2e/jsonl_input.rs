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
