//! Bad input: one clear error line naming the culprit, exit code 1, no panic.

use crate::common::*;

#[test]
fn missing_file() {
    let e = fail_sql(&[
        "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '/no/such/dir/docs.parquet'",
    ]);
    assert!(
        e.contains("/no/such/dir/docs.parquet") && e.contains("no such file"),
        "{e}"
    );
    let e = fail_sql(&["SELECT * FROM '/no/such/file.parquet'"]);
    assert!(e.contains("/no/such/file.parquet: no such file"), "{e}");
}

#[test]
fn bad_columns_types_and_arguments() {
    let dir = tempfile::tempdir().unwrap();
    write_parquet_files(&dir.path().join("in"), &rows(10, 1, false), 1);
    let t = format!(
        "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '{}'",
        p(dir.path(), "in/")
    );
    let cases = [
        ("SELECT * FROM t ORDER BY fold_order(quality, 3)", "quality"),
        (
            "SELECT * FROM t ORDER BY fold_order(text, 3)",
            "score must be numeric",
        ),
        (
            "SELECT * FROM t ORDER BY fold_order(score, 0)",
            "L must be a positive integer literal",
        ),
        (
            "SELECT * FROM t ORDER BY fold_order(score, id)",
            "L must be a positive integer literal",
        ),
        (
            "SELECT * FROM t ORDER BY fold_order(score, 1.5)",
            "L must be a positive integer literal",
        ),
        (
            "SELECT * FROM t ORDER BY fold_order(score, 3, 'sideways')",
            "unknown fold mode 'sideways'",
        ),
        (
            "SELECT * FROM t ORDER BY fold_order(score, 3), id",
            "must be the only ORDER BY key",
        ),
        (
            "SELECT * FROM t ORDER BY fold_order(score, 3) DESC",
            "fold_order(score, L, 'desc')",
        ),
        (
            "SELECT fold_order(score, 3) FROM t",
            "use it as the only ORDER BY key",
        ),
        (
            "SELECT * FROM t ORDER BY shuffle_order(id)",
            "one integer literal seed",
        ),
        ("SELECT * FROM t WHERE top_r(score, 1.5)", "between 0 and 1"),
        (
            "SELECT * FROM t WHERE top_k(score, -1)",
            "non-negative integer literal",
        ),
        (
            "SELECT * FROM t WHERE top_k(score, 3) OR id = 1",
            "a condition of its own",
        ),
        (
            "SELECT * FROM t WHERE top_k(text, 3)",
            "score must be numeric",
        ),
    ];
    for (sql, expected) in cases {
        let e = fail_sql(&[&t, sql]);
        assert!(e.contains(expected), "{sql}: {e}");
        assert!(e.contains("statement 1"), "names the statement: {e}");
    }
}

#[test]
fn syntax_error() {
    let e = fail_sql(&["SELEC * FROM t"]);
    assert!(e.contains("SQL syntax error") && e.contains("SELEC"), "{e}");
}

#[test]
fn missing_parameter_names_the_flag() {
    let e = fail_sql(&["SELECT * FROM '${input}'"]);
    assert!(e.contains("--param input=VALUE"), "{e}");
}

#[test]
fn malformed_jsonl_line_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("docs.jsonl");
    let good = r#"{"id": 1, "score": 0.5, "text": "fine"}"#;
    std::fs::write(
        &path,
        format!("{good}\n{good}\n{{\"id\": 3, \"score\": 0.1, \"text\": \"cut off\n{good}\n"),
    )
    .unwrap();
    let e = fail_sql(&[
        &format!(
            "CREATE EXTERNAL TABLE docs STORED AS JSON LOCATION '{}'",
            path.display()
        ),
        "SELECT * FROM docs ORDER BY fold_order(score, 3)",
    ]);
    assert!(e.contains(&format!("{}: line 3", path.display())), "{e}");
}

#[test]
fn corrupt_parquet_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write_parquet_files(&dir.path().join("in"), &rows(100, 1, false), 1);
    let bad = dir.path().join("in/part-9.parquet");
    std::fs::write(&bad, b"PAR1 this is not really parquet PAR1").unwrap();
    let e = fail_sql(&[&format!("SELECT count(*) FROM '{}'", p(dir.path(), "in/"))]);
    assert!(
        e.contains(&bad.display().to_string()) && e.contains("Parquet"),
        "{e}"
    );
}

#[test]
fn every_read_path_names_the_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("empty.parquet"), b"").unwrap();
    write_parquet_files(&d.join("in"), &rows(100, 1, false), 1);
    let good = output_files(&d.join("in")).remove(0);
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(d.join("truncated.parquet"), &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(
        d.join("broken.jsonl"),
        "{\"id\": 1, \"score\": 0.5}\n{\"id\": 2, \"score\": 0.9\n",
    )
    .unwrap();
    std::fs::write(
        d.join("quoted.jsonl"),
        "{\"id\": 1, \"score\": 0.5}\n{\"id\": 2, \"score\": 0.7}\n{\"id\": 3, \"score\": \"0.9\"}\n",
    )
    .unwrap();
    let name = |file: &str| d.join(file).display().to_string();
    let cases = [
        (
            format!("SELECT * FROM '{}'", name("empty.parquet")),
            format!(
                "{}: empty file (0 bytes), not a Parquet file",
                name("empty.parquet")
            ),
        ),
        (
            format!(
                "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '{}'",
                name("empty.parquet")
            ),
            format!("{}: empty file (0 bytes)", name("empty.parquet")),
        ),
        (
            format!("SELECT count(*) FROM '{}'", name("truncated.parquet")),
            format!("{}: not a Parquet file", name("truncated.parquet")),
        ),
        (
            format!("SELECT * FROM '{}'", name("broken.jsonl")),
            format!("{}: line 2: malformed JSON", name("broken.jsonl")),
        ),
        // A quoted number is inferred as text, so the numbers are the odd ones out.
        (
            format!("SELECT * FROM '{}'", name("quoted.jsonl")),
            format!(
                "{}: line 1: field 'score' is 0.5 where the schema has Utf8",
                name("quoted.jsonl")
            ),
        ),
    ];
    for (sql, expected) in cases {
        let e = fail_sql(&[&sql]);
        assert!(e.contains(&expected), "{sql}: {e}");
    }
    // With a declared number column, the quoted value is an error, not a silent cast.
    let e = fail_sql(&[
        &format!(
            "CREATE EXTERNAL TABLE docs (id BIGINT, score DOUBLE) STORED AS JSON LOCATION '{}'",
            name("quoted.jsonl")
        ),
        "SELECT sum(score) FROM docs",
    ]);
    assert!(
        e.contains(&format!(
            "{}: line 3: field 'score' is the quoted value \"0.9\" where the schema has Float64",
            name("quoted.jsonl")
        )),
        "{e}"
    );
}

#[test]
fn lqs_jobs_name_a_missing_input() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("proxy.jsonl");
    let out = delt(&[
        "lqs",
        "annotate",
        "--proxy",
        missing.to_str().unwrap(),
        "--target",
        missing.to_str().unwrap(),
        "--out",
        dir.path().join("labels.parquet").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.trim(),
        format!(
            "error: {}: no such file or no files in that directory; check the path",
            missing.display()
        )
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
