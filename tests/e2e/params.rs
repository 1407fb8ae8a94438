//! `--param` values are bound as literals: text inside '...' strings, numbers outside quotes.
//! A value cannot add SQL, and a bad or unused parameter stops the run before anything runs.

use std::path::Path;

use crate::common::*;

/// Runs `delt` with `args`; returns (success, stderr).
fn run(args: &[&str]) -> (bool, String) {
    let out = delt(args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts that `delt` failed with one error line and no panic; returns that line.
fn failure(args: &[&str]) -> String {
    let out = delt(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "exit code; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one error line: {stderr}");
    stderr
}

#[test]
fn a_value_outside_quotes_cannot_add_statements() {
    let dir = tempfile::tempdir().unwrap();
    write_parquet_files(&dir.path().join("in"), &rows(50, 3, false), 1);
    let pwned = dir.path().join("pwned.csv");
    let sql = "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '${input}';
               SELECT id FROM t ORDER BY fold_order(score, ${x});";
    let input = format!("input={}", p(dir.path(), "in/"));
    let copy = format!("COPY (SELECT 1) TO '{}'", pwned.display());
    // The second value, spliced in as text, makes valid SQL that writes the file.
    for injection in [format!("x=1; {copy}"), format!("x=1); {copy}; SELECT (1")] {
        let e = failure(&["sql", "-c", sql, "--param", &input, "--param", &injection]);
        assert!(e.contains("parameter `x`"), "{e}");
        assert!(e.contains("COPY (SELECT 1)"), "names the value: {e}");
        assert!(e.contains("put '${x}' in quotes"), "says what to do: {e}");
        assert!(!pwned.exists(), "the injected COPY ran");
    }

    // The same SQL with a number runs.
    let (ok, stderr) = run(&["sql", "-c", sql, "--param", &input, "--param", "x=3"]);
    assert!(ok, "{stderr}");
}

#[test]
fn a_text_value_cannot_end_its_string() {
    let dir = tempfile::tempdir().unwrap();
    // Input and output paths with a quote in them: bound as text, the quote stays text.
    let input = dir.path().join("it's");
    write_parquet_files(&input, &rows(40, 5, false), 2);
    let output = dir.path().join("o'out.parquet");
    let sql = "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '${input}';
               COPY (SELECT * FROM t ORDER BY fold_order(score, ${layers})) TO '${output}';";
    let (ok, stderr) = run(&[
        "sql",
        "-c",
        sql,
        "--param",
        &format!("input={}/", input.display()),
        "--param",
        "layers=2",
        "--param",
        &format!("output={}", output.display()),
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(read_output(&output).len(), 40);

    // A value that tries to close the string and go on is just a file name that is not there.
    let pwned = dir.path().join("pwned.csv");
    let injection = format!(
        "input={}'; COPY (SELECT 1) TO '{}'; --",
        input.display(),
        pwned.display()
    );
    let e = failure(&[
        "sql",
        "-c",
        "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '${input}'",
        "--param",
        &injection,
    ]);
    assert!(e.contains("no such file"), "{e}");
    assert!(!pwned.exists(), "the injected COPY ran");
}

#[test]
fn an_unused_parameter_stops_the_run_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.parquet");
    let file = dir.path().join("copy.sql");
    // `${keep}` in a comment is not a use.
    std::fs::write(
        &file,
        "-- keep the best ${keep}\nCOPY (SELECT 1 AS a) TO '${out}';\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let out_param = format!("out={}", out.display());
    let e = failure(&[
        "sql", "-f", file, "--param", &out_param, "--param", "keep=0.5",
    ]);
    assert!(e.contains("unused --param `keep`"), "{e}");
    assert!(!out.exists(), "the COPY ran");

    // A parameter used by any source of the run is used: here by the -c after the file.
    let (ok, stderr) = run(&[
        "sql",
        "-f",
        file,
        "-c",
        "SELECT ${keep} AS keep",
        "--param",
        &out_param,
        "--param",
        "keep=0.5",
    ]);
    assert!(ok, "{stderr}");
    assert!(out.exists());
}

#[test]
fn every_source_is_checked_before_the_first_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.parquet");
    let copy = "COPY (SELECT 1 AS a) TO '${out}'";
    let out_param = format!("out={}", out.display());
    let e = failure(&[
        "sql",
        "-c",
        copy,
        "-c",
        "SELECT * FROM t LIMIT ${n}",
        "--param",
        &out_param,
        "--param",
        "n=ten",
    ]);
    assert!(e.contains("parameter `n`") && e.contains("\"ten\""), "{e}");
    assert!(!out.exists(), "the first source ran");
    let e = failure(&[
        "sql",
        "-c",
        copy,
        "-c",
        "SELECT '${missing}'",
        "--param",
        &out_param,
    ]);
    assert!(e.contains("--param missing=VALUE"), "{e}");
    assert!(!out.exists(), "the first source ran");
}

#[test]
fn placeholders_where_no_value_can_go_are_refused() {
    let e = failure(&["sql", "-c", "SELECT 1 AS \"${col}\"", "--param", "col=a"]);
    assert!(
        e.contains("parameter `col`") && e.contains("identifiers cannot be parameters"),
        "{e}"
    );
    let e = failure(&["sql", "-c", "SELECT E'${v}'", "--param", "v=a"]);
    assert!(
        e.contains("parameter `v`") && e.contains("opened by E'"),
        "{e}"
    );
}

/// `delt bench efficacy` with a tiny model on the corpus, target and arms `files`, its
/// output going to `out`, and `params`.
fn efficacy<'a>(files: &'a [String; 4], params: &[&'a str]) -> Vec<&'a str> {
    let [corpus, target, arms, out] = files;
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
        "1",
        "--seq-len",
        "16",
        "--batch-size",
        "8",
        "--evals",
        "2",
        "--heldout",
        "0.1",
    ];
    args.extend_from_slice(&TINY_LM);
    args.extend_from_slice(params);
    args
}

#[test]
fn efficacy_arms_take_parameters_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let files = ["corpus.jsonl", "target.jsonl", "arms.sql", "out"].map(|f| p(dir.path(), f));
    let [corpus, target, arms, out] = &files;
    write_jsonl(Path::new(corpus), &rows(60, 9, false));
    write_jsonl(Path::new(target), &rows(10, 10, false));
    std::fs::write(
        arms,
        "CREATE VIEW top AS SELECT text FROM corpus WHERE top_r(score, ${keep})
         ORDER BY fold_order(score, ${layers});",
    )
    .unwrap();

    let e = failure(&efficacy(
        &files,
        &[
            "--param", "keep=0.5", "--param", "layers=3", "--param", "scorer=x",
        ],
    ));
    assert!(e.contains("unused --param `scorer`"), "{e}");
    assert!(!Path::new(out).exists(), "no output on failure");
    let e = failure(&efficacy(
        &files,
        &["--param", "keep=half", "--param", "layers=3"],
    ));
    assert!(e.contains("parameter `keep`"), "{e}");

    let (ok, stderr) = run(&efficacy(
        &files,
        &["--param", "keep=0.5", "--param", "layers=3"],
    ));
    assert!(ok, "{stderr}");
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(out).join("results.json")).unwrap(),
    )
    .unwrap();
    // 6 of 60 documents held out; the arm keeps half of the other 54.
    assert_eq!(results["runs"][0]["documents"], 27, "{results}");
}
