//! top_k, top_r and threshold selection against the reference semantics.

use crate::common::*;

fn run_selections(rows: &[Row], files: usize, cases: &[(&str, Vec<i64>)]) {
    let dir = tempfile::tempdir().unwrap();
    write_parquet_files(&dir.path().join("in"), rows, files);
    let statements: Vec<String> = std::iter::once(format!(
        "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '{}'",
        p(dir.path(), "in/")
    ))
    .chain(cases.iter().enumerate().map(|(i, (query, _))| {
        format!(
            "COPY ({query}) TO '{}'",
            p(dir.path(), &format!("out{i}.parquet"))
        )
    }))
    .collect();
    let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
    run_sql(&statements, &["--threads", "2", "--batch-size", "100"]);
    for (i, (query, want)) in cases.iter().enumerate() {
        assert_eq!(
            &ids(&dir.path().join(format!("out{i}.parquet"))),
            want,
            "{query}"
        );
    }
}

#[test]
fn top_k_keeps_the_best_and_the_later_of_ties() {
    let rows = rows(2000, 9, true);
    let cases: Vec<(String, Vec<i64>)> = [0, 1, 10, 777, 1999, 5000]
        .into_iter()
        .map(|k| {
            (
                format!("SELECT id, score FROM t WHERE top_k(score, {k})"),
                reference_top_k(&rows, k),
            )
        })
        .collect();
    let cases: Vec<(&str, Vec<i64>)> = cases.iter().map(|(q, w)| (q.as_str(), w.clone())).collect();
    run_selections(&rows, 3, &cases);
}

#[test]
fn top_r_counts_rows_after_earlier_filters_and_keeps_none_when_floor_is_zero() {
    let rows = rows(3001, 4, true);
    let even: Vec<Row> = rows.iter().filter(|r| r.id % 2 == 0).cloned().collect();
    let n = rows.len();
    let cases = vec![
        (
            "SELECT id, score FROM t WHERE top_r(score, 0.5)",
            reference_top_k(&rows, n / 2),
        ),
        (
            "SELECT id, score FROM t WHERE top_r(score, 0.1)",
            reference_top_k(&rows, (n as f64 * 0.1) as usize),
        ),
        (
            "SELECT id, score FROM t WHERE top_r(score, 1)",
            reference_top_k(&rows, n),
        ),
        // floor(3001 * 0.0003) = 0: nothing, unlike the reference which keeps everything.
        ("SELECT id, score FROM t WHERE top_r(score, 0.0003)", vec![]),
        (
            "SELECT id, score FROM t WHERE id % 2 = 0 AND top_r(score, 0.25)",
            reference_top_k(&even, (even.len() as f64 * 0.25) as usize),
        ),
    ];
    run_selections(&rows, 4, &cases);
}

#[test]
fn threshold_and_select_then_fold() {
    let rows = rows(4000, 6, true);
    let above: Vec<i64> = rows
        .iter()
        .filter(|r| r.score.is_some_and(|s| s > 1.0))
        .map(|r| r.id)
        .collect();
    let half = reference_top_k(&rows, rows.len() / 2);
    let selected: Vec<Row> = rows
        .iter()
        .filter(|r| half.contains(&r.id))
        .cloned()
        .collect();
    let cases = vec![
        ("SELECT id, score FROM t WHERE score > 1.0", above),
        (
            "SELECT id, score FROM t WHERE top_r(score, 0.5) ORDER BY fold_order(score, 3)",
            reference_fold(&selected, 3, "asc"),
        ),
    ];
    run_selections(&rows, 2, &cases);
}
