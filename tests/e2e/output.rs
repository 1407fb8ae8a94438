//! COPY output: ordered shards, JSON lines, atomic replacement, leftovers of killed runs.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;

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

/// A staging directory as a run of `pid` (started at `start`, on `host`) leaves it, with a
/// half-written shard in it.
fn fake_staging(dir: &Path, pid: u32, start: u64, host: &str) -> PathBuf {
    let staging = dir.join(format!(
        ".delt-staging-{pid}-{start}@{host}_1700000000000-out"
    ));
    std::fs::create_dir(&staging).unwrap();
    std::fs::write(staging.join("0000000000.parquet"), b"PAR1 half").unwrap();
    staging
}

/// A temporary file as a run of `pid` leaves it beside `out.jsonl`.
fn fake_partial(dir: &Path, pid: u32, start: u64, host: &str) -> PathBuf {
    let partial = dir.join(format!(".out.jsonl.delt-partial-{pid}-{start}@{host}_0"));
    std::fs::write(&partial, b"{\"id\": 1}\n{\"id").unwrap();
    partial
}

fn removal_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("removed leftover "))
        .collect()
}

/// Leftovers of processes that are gone (ended, or their pid now another process's) are
/// removed by the next COPY beside them, one line each on stderr.
#[test]
fn leftovers_of_ended_runs_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let rows = rows(3000, 6, false);
    write_parquet_files(&dir.path().join("in"), &rows, 1);
    let (host, me) = (host(), std::process::id());
    let ended = ended_pid();
    let gone = [
        (fake_staging(dir.path(), ended, 4242, &host), ended),
        (fake_partial(dir.path(), ended, 4242, &host), ended),
        // The test's own pid with another start time: a process that reused the pid.
        (fake_partial(dir.path(), me, start_time(me) + 1, &host), me),
    ];
    let (input, out) = (p(dir.path(), "in/"), p(dir.path(), "out/"));
    let output = run_sql(
        &[&format!(
            "COPY (SELECT * FROM '{input}' ORDER BY fold_order(score, 3)) TO '{out}' \
             STORED AS PARQUET OPTIONS (rows_per_shard 1000)"
        )],
        &[],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    for (path, pid) in &gone {
        assert!(!path.exists(), "{path:?} still there");
        let line = format!(
            "removed leftover {} of an interrupted run (pid {pid} on {host})",
            path.display()
        );
        assert!(
            stderr.lines().any(|l| l == line),
            "{line:?} not in {stderr}"
        );
    }
    assert_eq!(removal_lines(&stderr).len(), gone.len(), "{stderr}");
    assert_eq!(names(dir.path()), ["in", "out"]);
    assert_eq!(ids(out.as_ref()), reference_fold(&rows, 3, "asc"));
}

/// Leftovers of a process that still runs, of another host, or without an owner stay.
#[test]
fn leftovers_of_running_or_foreign_runs_stay() {
    let dir = tempfile::tempdir().unwrap();
    let rows = rows(500, 7, false);
    write_parquet_files(&dir.path().join("in"), &rows, 1);
    let (host, me) = (host(), std::process::id());
    let ended = ended_pid();
    let kept = [
        fake_staging(dir.path(), me, start_time(me), &host),
        fake_partial(dir.path(), me, start_time(me), &host),
        fake_staging(dir.path(), ended, 4242, "elsewhere.example"),
        fake_partial(dir.path(), ended, 4242, "elsewhere.example"),
    ];
    // As delt named its staging directories before it recorded the host.
    let unowned = dir
        .path()
        .join(format!(".delt-staging-{ended}-1700000000000-out"));
    std::fs::create_dir(&unowned).unwrap();
    let contents = |path: &Path| {
        if path.is_dir() {
            std::fs::read(path.join("0000000000.parquet")).unwrap()
        } else {
            std::fs::read(path).unwrap()
        }
    };
    let before: Vec<Vec<u8>> = kept.iter().map(|p| contents(p)).collect();
    let (input, single) = (p(dir.path(), "in/"), p(dir.path(), "out.jsonl"));
    let output = run_sql(
        &[&format!("COPY (SELECT * FROM '{input}') TO '{single}'")],
        &[],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(removal_lines(&stderr).is_empty(), "{stderr}");
    let after: Vec<Vec<u8>> = kept.iter().map(|p| contents(p)).collect();
    assert!(before == after, "a kept leftover changed");
    assert!(unowned.is_dir());
    assert_eq!(names(dir.path()).len(), 2 + kept.len() + 1);
    assert_eq!(ids(single.as_ref()), (0..500).collect::<Vec<i64>>());
}

/// A COPY killed with SIGKILL mid-write leaves its staging directory (a directory output) or
/// its temporary file (a single file); the next COPY beside them removes both.
#[test]
fn leftovers_of_a_killed_copy_are_removed_by_the_next() {
    let dir = tempfile::tempdir().unwrap();
    // A large input from one file linked many times: long enough a COPY to kill it mid-write.
    let big = dir.path().join("big");
    write_parquet_row_groups(&big, &rows(200_000, 8, false), 1, 8192);
    for i in 1..36 {
        std::fs::hard_link(
            big.join("part-0.parquet"),
            big.join(format!("part-{i}.parquet")),
        )
        .unwrap();
    }
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let big = p(dir.path(), "big/");
    // Both at once: a COPY that starts while the other runs leaves the other's files alone.
    let mut copies: Vec<_> = [
        ("shards/", ".delt-staging-"),
        ("one.jsonl", ".delt-partial-"),
    ]
    .into_iter()
    .map(|(target, marker)| {
        let copy = delt_command()
            .args(["sql", "--quiet", "--threads", "1", "-c"])
            .arg(format!(
                "COPY (SELECT * FROM '{big}') TO '{}' STORED AS JSON \
                 OPTIONS (rows_per_shard 50000)",
                p(&out_dir, target)
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        (copy, target, marker)
    })
    .collect();
    // Each COPY removes leftovers before it writes: once both have written, kill both.
    let deadline = Instant::now() + Duration::from_secs(60);
    let found = loop {
        let names = names(&out_dir);
        let found: Vec<_> = copies
            .iter()
            .filter_map(|(_, _, marker)| names.iter().find(|n| n.contains(*marker)))
            .collect();
        if found.len() == copies.len() {
            break found
                .into_iter()
                .map(|n| out_dir.join(n))
                .collect::<Vec<_>>();
        }
        for (copy, target, _) in &mut copies {
            assert!(
                copy.try_wait().unwrap().is_none(),
                "the COPY to {target} ended before it could be killed: make the input larger"
            );
        }
        assert!(
            Instant::now() < deadline,
            "no leftovers appeared: {names:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut leftovers = Vec::new();
    for ((mut copy, _, _), leftover) in copies.into_iter().zip(found) {
        copy.kill().unwrap(); // SIGKILL
        let status = copy.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
        assert!(leftover.exists(), "{leftover:?} is gone after SIGKILL");
        leftovers.push((leftover, copy.id()));
    }
    let rows = rows(2000, 9, false);
    write_parquet_files(&dir.path().join("small"), &rows, 1);
    let small = p(dir.path(), "small/");
    let output = run_sql(
        &[&format!(
            "COPY (SELECT * FROM '{small}' ORDER BY fold_order(score, 2)) TO '{}' \
             STORED AS JSON OPTIONS (rows_per_shard 700)",
            p(&out_dir, "shards/")
        )],
        &[],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let host = host();
    for (leftover, pid) in &leftovers {
        assert!(!leftover.exists(), "{leftover:?} still there");
        let line = format!(
            "removed leftover {} of an interrupted run (pid {pid} on {host})",
            leftover.display()
        );
        assert!(
            stderr.lines().any(|l| l == line),
            "{line:?} not in {stderr}"
        );
    }
    assert_eq!(names(&out_dir), ["shards"]);
    assert_eq!(
        names(&out_dir.join("shards")),
        ["part-00000.jsonl", "part-00001.jsonl", "part-00002.jsonl"]
    );
    assert_eq!(
        ids(&out_dir.join("shards")),
        reference_fold(&rows, 2, "asc")
    );
}
