//! fold_order and shuffle_order against the reference semantics.

use crate::common::*;

/// Many small cases in one delt run per fold strategy: every N, L and mode, Parquet in several
/// files; without a memory limit (rows held, keys sorted) and with one (a spilling sort).
#[test]
fn fold_matches_reference_for_every_size_layer_count_and_mode() {
    let dir = tempfile::tempdir().unwrap();
    for (strategy, limit) in [("in-memory", None), ("sorted", Some("1G"))] {
        let mut statements = Vec::new();
        let mut expected = Vec::new();
        for (case, &(n, files)) in [(0, 1), (1, 1), (2, 2), (7, 3), (50, 2), (1000, 3)]
            .iter()
            .enumerate()
        {
            let rows = rows(n, case as u64, true);
            let input = dir.path().join(format!("in{case}"));
            write_parquet_files(&input, &rows, files);
            statements.push(format!(
                "CREATE EXTERNAL TABLE t{case} STORED AS PARQUET LOCATION '{}/'",
                input.display()
            ));
            for layers in [1, 2, 3, 5] {
                for mode in ["asc", "desc", "zigzag"] {
                    let out = p(
                        dir.path(),
                        &format!("{strategy}-{case}-{layers}-{mode}.parquet"),
                    );
                    statements.push(format!(
                        "COPY (SELECT * FROM t{case} ORDER BY fold_order(score, {layers}, '{mode}')) TO '{out}'"
                    ));
                    expected.push((out, reference_fold(&rows, layers, mode)));
                }
            }
        }
        let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
        let mut args = vec!["--threads", "2", "--batch-size", "64"];
        args.extend(limit.iter().flat_map(|l| ["--memory-limit", *l]));
        run_sql(&statements, &args);
        for (out, want) in expected {
            assert_eq!(ids(out.as_ref()), want, "{out}");
        }
    }
}

/// A fold costs one sort: of the keys alone without a memory limit, of the rows under one.
#[test]
fn fold_plans_one_sort() {
    let dir = tempfile::tempdir().unwrap();
    write_parquet_files(&dir.path().join("in"), &rows(100, 1, true), 2);
    let query = format!(
        "EXPLAIN SELECT * FROM '{}' ORDER BY fold_order(score, 3)",
        p(dir.path(), "in/")
    );
    for (limit, strategy, sorts) in [
        (None, "strategy=in memory", 0),
        (Some("1G"), "strategy=sorted stream", 1),
    ] {
        let mut args = vec!["--threads", "2"];
        args.extend(limit.iter().flat_map(|l| ["--memory-limit", *l]));
        let plan = run_sql(&[&query], &args);
        let plan = String::from_utf8_lossy(&plan.stdout);
        assert!(plan.contains(strategy), "{plan}");
        assert_eq!(plan.matches("SortExec").count(), sorts, "{plan}");
    }
}

#[test]
fn fold_matches_reference_at_100k_rows_over_four_files() {
    let dir = tempfile::tempdir().unwrap();
    let rows = rows(100_003, 42, true);
    write_parquet_files(&dir.path().join("in"), &rows, 4);
    let input = p(dir.path(), "in/");
    let cases = [
        (3, "asc", "fold3.parquet"),
        (5, "zigzag", "zigzag5.jsonl"),
        (2, "desc", "desc2/"),
    ];
    let statements: Vec<String> = cases
        .iter()
        .map(|(l, mode, out)| {
            let stored = if out.ends_with('/') { " STORED AS PARQUET OPTIONS (rows_per_shard 7000)" } else { "" };
            format!(
                "COPY (SELECT id, score, text FROM '{input}' ORDER BY fold_order(score, {l}, '{mode}')) TO '{}'{stored}",
                p(dir.path(), out)
            )
        })
        .collect();
    let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
    run_sql(&statements, &["--threads", "2"]);
    for (l, mode, out) in cases {
        assert_eq!(
            ids(&dir.path().join(out)),
            reference_fold(&rows, l, mode),
            "{mode} L={l}"
        );
    }
}

#[test]
fn fold_of_jsonl_files_as_the_reference_tools_write_them() {
    let dir = tempfile::tempdir().unwrap();
    let rows = rows(5000, 7, true);
    std::fs::create_dir(dir.path().join("jsonl")).unwrap();
    write_jsonl(&dir.path().join("jsonl/a.jsonl"), &rows[..2000]);
    write_jsonl(&dir.path().join("jsonl/b.jsonl"), &rows[2000..]);
    let out = p(dir.path(), "out.jsonl");
    run_sql(
        &[
            &format!(
                "CREATE EXTERNAL TABLE docs STORED AS JSONL LOCATION '{}'",
                p(dir.path(), "jsonl/")
            ),
            &format!("COPY (SELECT * FROM docs ORDER BY fold_order(score, 3)) TO '{out}'"),
        ],
        &["--threads", "2", "--batch-size", "500"],
    );
    assert_eq!(ids(out.as_ref()), reference_fold(&rows, 3, "asc"));
}

/// DataFusion drops the ORDER BY of a subquery or a view; delt keeps it.
#[test]
fn fold_in_a_view_or_subquery_keeps_its_order() {
    let dir = tempfile::tempdir().unwrap();
    let rows = rows(2000, 5, true);
    write_parquet_files(&dir.path().join("in"), &rows, 2);
    let input = p(dir.path(), "in/");
    let (view, sub) = (p(dir.path(), "view.parquet"), p(dir.path(), "sub.parquet"));
    run_sql(
        &[
            &format!(
                "CREATE VIEW folded AS SELECT id, score FROM '{input}' ORDER BY fold_order(score, 4)"
            ),
            &format!("COPY (SELECT id, score FROM folded) TO '{view}'"),
            &format!(
                "COPY (SELECT id, score FROM (SELECT * FROM '{input}' ORDER BY fold_order(score, 4))) TO '{sub}'"
            ),
        ],
        &[],
    );
    assert_eq!(ids(view.as_ref()), reference_fold(&rows, 4, "asc"));
    assert_eq!(ids(sub.as_ref()), reference_fold(&rows, 4, "asc"));
}

#[test]
fn fold_of_an_expression_equals_descending_fold() {
    let dir = tempfile::tempdir().unwrap();
    let rows = rows(3000, 3, true);
    write_parquet_files(&dir.path().join("in"), &rows, 2);
    let input = p(dir.path(), "in/");
    let (neg, desc) = (p(dir.path(), "neg.parquet"), p(dir.path(), "desc.parquet"));
    run_sql(
        &[
            &format!(
                "COPY (SELECT id, score FROM '{input}' ORDER BY fold_order(0 - score, 3)) TO '{neg}'"
            ),
            &format!(
                "COPY (SELECT id, score FROM '{input}' ORDER BY fold_order(score, 3, 'desc')) TO '{desc}'"
            ),
        ],
        &[],
    );
    assert_eq!(ids(neg.as_ref()), reference_fold(&rows, 3, "desc"));
    assert_eq!(ids(neg.as_ref()), ids(desc.as_ref()));
}

/// Same input and options give byte-identical files, whatever the threads, batch size or file
/// layout.
#[test]
fn output_bytes_do_not_depend_on_threads_or_file_split() {
    let dir = tempfile::tempdir().unwrap();
    let rows = rows(20_000, 11, true);
    write_parquet_files(&dir.path().join("one"), &rows, 1);
    write_parquet_files(&dir.path().join("five"), &rows, 5);
    let mut outputs = Vec::new();
    for (layout, threads, batch) in [
        ("one", "1", "1000"),
        ("one", "4", "8192"),
        ("five", "3", "777"),
    ] {
        let input = p(dir.path(), &format!("{layout}/"));
        let fold = p(dir.path(), &format!("fold-{layout}-{threads}.parquet"));
        let shuffle = p(dir.path(), &format!("shuffle-{layout}-{threads}.parquet"));
        run_sql(
            &[
                &format!(
                    "COPY (SELECT * FROM '{input}' ORDER BY fold_order(score, 3)) TO '{fold}'"
                ),
                &format!("COPY (SELECT * FROM '{input}' ORDER BY shuffle_order(7)) TO '{shuffle}'"),
            ],
            &["--threads", threads, "--batch-size", batch],
        );
        outputs.push((
            std::fs::read(&fold).unwrap(),
            std::fs::read(&shuffle).unwrap(),
        ));
    }
    assert!(
        outputs.windows(2).all(|w| w[0] == w[1]),
        "outputs differ between runs"
    );
}

#[test]
fn shuffle_is_a_seeded_permutation() {
    let dir = tempfile::tempdir().unwrap();
    let rows = rows(10_000, 5, false);
    write_parquet_files(&dir.path().join("in"), &rows, 2);
    let input = p(dir.path(), "in/");
    let out = |seed: u64| p(dir.path(), &format!("s{seed}.parquet"));
    run_sql(
        &[
            &format!(
                "COPY (SELECT * FROM '{input}' ORDER BY shuffle_order(1)) TO '{}'",
                out(1)
            ),
            &format!(
                "COPY (SELECT * FROM '{input}' ORDER BY shuffle_order(2)) TO '{}'",
                out(2)
            ),
        ],
        &[],
    );
    let (a, b) = (ids(out(1).as_ref()), ids(out(2).as_ref()));
    let mut sorted = a.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        (0..10_000).collect::<Vec<i64>>(),
        "a permutation of the input"
    );
    assert_ne!(a, b, "different seeds, different orders");
    // Far from the input order: few ids stay in place.
    assert!(
        a.iter()
            .enumerate()
            .filter(|(i, id)| *i as i64 == **id)
            .count()
            < 20
    );
}

/// Under a memory limit far below the data size, sorting, selection and folding spill, and
/// the output is byte for byte the in-memory one. The input has row groups of the size other
/// tools write (50,000 rows): with one sort per partition and a merge of their outputs, this
/// ran out of memory instead of spilling.
#[test]
fn spilling_gives_the_in_memory_output() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = rows(150_000, 8, true);
    // Texts that do not repeat, as in real corpora: dictionary-encoded pages would decode
    // into small shared buffers and hide the cost of plain ones.
    let mut state = 8u64;
    for row in &mut rows {
        row.text = (0..row.text.len())
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (b'a' + (state >> 59) as u8 % 26) as char
            })
            .collect();
    }
    write_parquet_row_groups(&dir.path().join("in"), &rows, 2, 50_000);
    let input = p(dir.path(), "in/");
    let kept = reference_top_k(&rows, rows.len() * 8 / 10);
    let selected: Vec<Row> = rows
        .iter()
        .filter(|r| kept.binary_search(&r.id).is_ok())
        .cloned()
        .collect();
    let plain = format!("SELECT * FROM '{input}' ORDER BY fold_order(score, 3)");
    let query = format!(
        "SELECT * FROM '{input}' WHERE top_r(score, 0.8) ORDER BY fold_order(score, 3, 'zigzag')"
    );
    for (name, sql, expected) in [
        ("plain", &plain, reference_fold(&rows, 3, "asc")),
        ("selected", &query, reference_fold(&selected, 3, "zigzag")),
    ] {
        let mem = p(dir.path(), &format!("{name}-mem.parquet"));
        let spill = p(dir.path(), &format!("{name}-spill.parquet"));
        run_sql(&[&format!("COPY ({sql}) TO '{mem}'")], &["--threads", "2"]);
        run_sql(
            &[&format!("COPY ({sql}) TO '{spill}'")],
            &["--threads", "2", "--memory-limit", "12M"],
        );
        assert!(
            std::fs::read(&mem).unwrap() == std::fs::read(&spill).unwrap(),
            "{name}: spilled output differs"
        );
        assert_eq!(ids(spill.as_ref()), expected, "{name}");
    }
    // The limit really forced the fold's layer buffers to disk.
    let plan = run_sql(
        &[&format!("EXPLAIN ANALYZE {query}")],
        &["--threads", "2", "--memory-limit", "12M"],
    );
    let plan = String::from_utf8_lossy(&plan.stdout);
    let fold = plan
        .lines()
        .find(|l| l.contains("FoldExec"))
        .expect("FoldExec in plan");
    let spills: usize = fold
        .split("spill_count=")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(spills > 0, "{fold}");
}
