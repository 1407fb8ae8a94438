//! COPY output: ordered shards, JSON lines, atomic replacement.

use std::path::Path;

use crate::common::*;

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn directory_output_is_ordered_zero_padded_shards() {
    let dir = tempfile::tempdir().unwrap();
    let rows = rows(10_500, 1, false);
    write_parquet_files(&dir.path().join("in"), &rows, 3);
    let input = p(dir.path(), "in/");
    let (single, shards, jsonl) = (
        p(dir.path(), "one.parquet"),
        p(dir.path(), "shards/"),
        p(dir.path(), "jsonl/"),
    );
    let query = format!("SELECT * FROM '{input}' ORDER BY fold_order(score, 3)");
    run_sql(
        &[
            &format!("COPY ({query}) TO '{single}'"),
            &format!(
                "COPY ({query}) TO '{shards}' STORED AS PARQUET OPTIONS (rows_per_shard 1000)"
            ),
            &format!("COPY ({query}) TO '{jsonl}' STORED AS JSON OPTIONS (rows_per_shard 4000)"),
        ],
        &["--threads", "2"],
    );
    let expected = reference_fold(&rows, 3, "asc");
    assert_eq!(ids(single.as_ref()), expected);
    let shard_names = names(shards.as_ref());
    assert_eq!(shard_names.len(), 11);
    assert_eq!(shard_names[0], "part-00000.parquet");
    assert_eq!(shard_names[10], "part-00010.parquet");
    for (i, file) in output_files(shards.as_ref()).iter().enumerate() {
        assert_eq!(
            read_output(file).len(),
            if i < 10 { 1000 } else { 500 },
            "{file:?}"
        );
    }
    assert_eq!(ids(shards.as_ref()), expected);
    assert_eq!(
        names(jsonl.as_ref()),
        ["part-00000.jsonl", "part-00001.jsonl", "part-00002.jsonl"]
    );
    assert_eq!(ids(jsonl.as_ref()), expected);
    // JSON lines: one object per line with the text, as the reference trainer reads them.
    let first = std::fs::read_to_string(dir.path().join("jsonl/part-00000.jsonl")).unwrap();
    let line: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    assert!(line["text"].as_str().is_some_and(|t| t.len() >= 50));
}

#[test]
fn rewriting_a_directory_replaces_the_whole_shard_set() {
    let dir = tempfile::tempdir().unwrap();
    let rows = rows(3000, 2, false);
    write_parquet_files(&dir.path().join("in"), &rows, 1);
    let (input, out) = (p(dir.path(), "in/"), p(dir.path(), "out/"));
    run_sql(
        &[&format!(
            "COPY (SELECT * FROM '{input}') TO '{out}' STORED AS PARQUET OPTIONS (rows_per_shard 500)"
        )],
        &[],
    );
    assert_eq!(names(out.as_ref()).len(), 6);
    std::fs::write(dir.path().join("out/notes.txt"), "kept").unwrap();
    run_sql(
        &[&format!(
            "COPY (SELECT * FROM '{input}' WHERE top_k(score, 1200)) TO '{out}' STORED AS PARQUET OPTIONS (rows_per_shard 500)"
        )],
        &[],
    );
    assert_eq!(
        names(out.as_ref()),
        [
            "notes.txt",
            "part-00000.parquet",
            "part-00001.parquet",
            "part-00002.parquet"
        ]
    );
    assert_eq!(ids(&dir.path().join("out/part-00000.parquet")).len(), 500);
    assert_eq!(names(dir.path()), ["in", "out"], "no staging left behind");
}

#[test]
fn empty_result_still_writes_its_schema() {
    let dir = tempfile::tempdir().unwrap();
    write_parquet_files(&dir.path().join("in"), &rows(100, 2, false), 1);
    let (input, out) = (p(dir.path(), "in/"), p(dir.path(), "out/"));
    run_sql(
        &[&format!(
            "COPY (SELECT * FROM '{input}' WHERE top_r(score, 0.001)) TO '{out}' STORED AS PARQUET"
        )],
        &[],
    );
    assert_eq!(names(out.as_ref()), ["part-00000.parquet"]);
    assert!(read_output(out.as_ref()).is_empty());
}

/// A COPY that fails after writing part of its output leaves the destination as it was.
#[test]
fn failure_midway_leaves_destination_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let rows = rows(20_000, 3, false);
    write_parquet_files(&dir.path().join("in"), &rows, 1);
    let input = p(dir.path(), "in/");
    let (single, shards) = (p(dir.path(), "out.parquet"), p(dir.path(), "out/"));
    run_sql(
        &[
            &format!("COPY (SELECT * FROM '{input}' WHERE id < 10) TO '{single}'"),
            &format!(
                "COPY (SELECT * FROM '{input}' WHERE id < 10) TO '{shards}' STORED AS PARQUET"
            ),
        ],
        &[],
    );
    let before = (
        std::fs::read(&single).unwrap(),
        names(shards.as_ref()),
        ids(shards.as_ref()),
    );
    // Rows after id 15000 fail to cast: the first shards are already written by then.
    let failing = format!(
        "SELECT id, CAST(CASE WHEN id > 15000 THEN 'x' ELSE '1' END AS INT) AS bad, score FROM '{input}'"
    );
    for target in [
        format!("COPY ({failing}) TO '{single}'"),
        format!("COPY ({failing}) TO '{shards}' STORED AS PARQUET OPTIONS (rows_per_shard 1000)"),
    ] {
        let stderr = fail_sql(&[&target]);
        assert!(stderr.contains("destination left untouched"), "{stderr}");
        assert!(stderr.contains("Cannot cast string 'x'"), "{stderr}");
    }
    let after = (
        std::fs::read(&single).unwrap(),
        names(shards.as_ref()),
        ids(shards.as_ref()),
    );
    assert!(before == after, "destination changed");
    assert_eq!(
        names(dir.path()),
        ["in", "out", "out.parquet"],
        "no staging or partial files left"
    );
}

#[test]
fn csv_output_has_one_header_even_when_empty() {
    let dir = tempfile::tempdir().unwrap();
    write_parquet_files(&dir.path().join("in"), &rows(3000, 4, false), 1);
    let input = p(dir.path(), "in/");
    let (full, empty) = (p(dir.path(), "full.csv"), p(dir.path(), "empty.csv"));
    run_sql(
        &[
            &format!(
                "COPY (SELECT id, score FROM '{input}' ORDER BY fold_order(score, 3)) TO '{full}'"
            ),
            &format!("COPY (SELECT id, score FROM '{input}' WHERE top_k(score, 0)) TO '{empty}'"),
        ],
        &["--batch-size", "700"],
    );
    let text = std::fs::read_to_string(&full).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3001);
    assert_eq!(lines.iter().filter(|l| **l == "id,score").count(), 1);
    assert_eq!(lines[0], "id,score");
    let ids: Vec<i64> = lines[1..]
        .iter()
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids, reference_fold(&rows(3000, 4, false), 3, "asc"));
    assert_eq!(std::fs::read_to_string(&empty).unwrap(), "id,score\n");
}

/// A local destination that cannot be created fails naming the file, without a panic, and
/// leaves no partial file.
#[test]
fn unwritable_destination_is_named() {
    let dir = tempfile::tempdir().unwrap();
    write_parquet_files(&dir.path().join("in"), &rows(100, 5, false), 1);
    let input = p(dir.path(), "in/");
    std::fs::write(dir.path().join("plain"), b"a file, not a directory").unwrap();
    let target = p(dir.path(), "plain/out.jsonl");
    let stderr = fail_sql(&[&format!("COPY (SELECT * FROM '{input}') TO '{target}'")]);
    assert!(stderr.contains("plain/out.jsonl"), "{stderr}");
    assert_eq!(names(dir.path()), ["in", "plain"]);
}
