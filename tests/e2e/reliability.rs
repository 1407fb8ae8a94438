//! Faults a long batch job meets: a plugin that crashes the process, Ctrl-C and SIGTERM in the
//! middle of a scored fold, SIGKILL, libraries in the plugin path that are not plugins, and a
//! layer count far beyond the rows. Each test runs the real binary and checks the exit code,
//! the message, and that nothing new is left where the user looks.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

#[test]
fn a_plugin_that_crashes_the_process_is_named() {
    let lib = rust_plugin("misbehaving");
    for (function, signal, name) in [
        ("segfault_on", libc::SIGSEGV, "SIGSEGV"),
        ("abort_on", libc::SIGABRT, "SIGABRT"),
    ] {
        let out = delt(&[
            "sql",
            "--plugin",
            lib.to_str().unwrap(),
            "-c",
            &format!("SELECT {function}(column1) FROM (VALUES ('a'), ('boom'), ('c'))"),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.signal(), Some(signal), "{function}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "error: plugin {} function {function} crashed delt with {name}",
                lib.display()
            )),
            "{function}: {stderr}"
        );
    }
}

#[test]
fn an_isolated_plugin_that_crashes_fails_the_query_and_delt_goes_on() {
    let lib = rust_plugin("misbehaving");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.parquet");
    for (function, name) in [("segfault_on", "SIGSEGV"), ("abort_on", "SIGABRT")] {
        let e = fail_sql(&[
            &format!(
                "CREATE FUNCTION f(t VARCHAR) RETURNS DOUBLE LANGUAGE delt \
                 AS '{}#{function}?isolation=process'",
                lib.display()
            ),
            &format!(
                "COPY (SELECT f(column1) AS n FROM (VALUES ('a'), ('boom'), ('c'))) TO '{}'",
                out.display()
            ),
        ]);
        assert!(
            e.contains(&format!(
                "plugin {} function {function} crashed: its isolated process was killed by {name} \
                 while scoring a batch of 3 rows (its first text: 'a')",
                lib.display()
            )),
            "{function}: {e}"
        );
        assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
    }
    // The flag isolates every plugin function; errors and scores are those of in-process calls.
    let query = "SELECT id, text_quality(text) AS q FROM 'examples/data/docs.jsonl' ORDER BY id";
    let text_quality = rust_plugin("text_quality");
    let run = |isolation: &str| {
        delt_command()
            .current_dir(repo())
            .args([
                "sql",
                "--quiet",
                "--format",
                "csv",
                "--plugin-isolation",
                isolation,
            ])
            .args(["--plugin", text_quality.to_str().unwrap(), "-c", query])
            .output()
            .unwrap()
    };
    let (isolated, in_process) = (run("process"), run("in-process"));
    assert!(
        isolated.status.success(),
        "{}",
        String::from_utf8_lossy(&isolated.stderr)
    );
    assert_eq!(isolated.stdout, in_process.stdout);
    assert!(isolated.stdout.len() > 1000);
    let e = fail_sql(&[
        &format!(
            "CREATE FUNCTION f(t VARCHAR) RETURNS DOUBLE LANGUAGE delt AS '{}#fail_on?isolation=process'",
            lib.display()
        ),
        "SELECT f(column1) FROM (VALUES ('a'), ('boom'))",
    ]);
    assert!(
        e.contains(&format!(
            "plugin {} function fail_on failed: cannot score 'boom'",
            lib.display()
        )),
        "{e}"
    );
}

/// A `delt sql` run of a fold over 20,000 rows (in `dir/in/`) scored by the misbehaving
/// plugin's `slow` function (200 ms per batch of 100 rows: about 20 s on 2 threads), into a
/// directory of shards `dir/out`; its temporary files go to `tmp`.
fn start_slow_fold(dir: &Path, tmp: &Path, memory_limit: Option<&str>) -> Child {
    let lib = rust_plugin("misbehaving");
    let input = dir.join("in");
    if !input.exists() {
        write_parquet_files(&input, &rows(20_000, 7, false), 2);
    }
    let mut command = delt_command();
    command.env("TMPDIR", tmp).args(["sql", "--quiet"]);
    if let Some(limit) = memory_limit {
        command.args(["--memory-limit", limit]);
    }
    command
        .args([
            "-c",
            &format!(
                "CREATE FUNCTION slow_len(t VARCHAR) RETURNS DOUBLE LANGUAGE delt \
                 AS '{}#slow?ms=200&batch_size=100'",
                lib.display()
            ),
            "-c",
            &format!(
                "COPY (SELECT id, score, slow_len(text) AS n FROM '{}/' \
                 ORDER BY fold_order(n, 3)) TO '{}' STORED AS PARQUET OPTIONS (rows_per_shard 1000)",
                input.display(),
                dir.join("out").display()
            ),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn ctrl_c_and_sigterm_stop_a_scored_fold_at_once_and_leave_nothing() {
    // The in-memory fold (no limit) holds the scored rows; the streaming one spills them.
    for (signal, code, name, memory_limit) in [
        (libc::SIGINT, 130, "Ctrl-C (SIGINT)", None),
        (libc::SIGTERM, 143, "SIGTERM", Some("64M")),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let child = start_slow_fold(dir.path(), tmp.path(), memory_limit);
        std::thread::sleep(Duration::from_millis(2500));
        // SAFETY: signals a child process of this test.
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
        let signalled = Instant::now();
        let out = child.wait_with_output().unwrap();
        let waited = signalled.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{name}: {stderr}");
        assert!(
            waited < Duration::from_secs(10),
            "{name}: exited {waited:?} after the signal"
        );
        assert!(
            stderr.contains(&format!(
                "interrupted by {name}: stopped statement 1 of -c (COPY (SELECT id, score, slow_len(text)"
            )) && stderr.contains("nothing was published"),
            "{name}: {stderr}"
        );
        assert_eq!(
            names(dir.path()),
            ["in"],
            "{name}: nothing beside the input"
        );
        assert!(
            names(tmp.path()).is_empty(),
            "{name}: temporary files left: {:?}",
            names(tmp.path())
        );
    }
}

#[test]
fn temporary_files_of_a_killed_run_are_removed_by_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut child = start_slow_fold(dir.path(), tmp.path(), None);
    std::thread::sleep(Duration::from_millis(2500));
    child.kill().unwrap();
    child.wait().unwrap();
    let left = names(tmp.path());
    assert_eq!(left.len(), 1, "{left:?}");
    let dead = left[0].clone();
    assert!(dead.starts_with("delt-run-"), "{dead}");
    // A directory whose owner runs (this test) stays.
    let alive = format!("delt-run-{}", delt::io::owner::Owner::current().tag());
    std::fs::create_dir(tmp.path().join(&alive)).unwrap();

    let out = delt_command()
        .env("TMPDIR", tmp.path())
        .args(["sql", "--quiet", "-c", "SELECT 1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "removed {}: temporary files of an interrupted delt run",
            tmp.path().join(&dead).display()
        )),
        "{stderr}"
    );
    assert_eq!(names(tmp.path()), [alive]);
}

#[test]
fn libraries_in_the_plugin_path_that_do_not_load_are_skipped_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("libjunk.so"), b"not a shared library").unwrap();
    std::fs::copy(
        rust_plugin("misbehaving"),
        dir.path().join("libmisbehaving.so"),
    )
    .unwrap();
    let out = delt_command()
        .env("DELT_PLUGIN_PATH", dir.path())
        .args([
            "sql",
            "--quiet",
            "--format",
            "csv",
            "-c",
            "SELECT fail_on('fine') AS n",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "n\n4.0\n");
    let warnings: Vec<&str> = stderr.lines().collect();
    assert_eq!(warnings.len(), 2, "{stderr}");
    assert!(
        warnings[0].starts_with("warning: skipped ")
            && warnings[0].contains("libjunk.so is not a delt plugin"),
        "{stderr}"
    );
    assert!(
        warnings[1].starts_with("warning: uncreatable not registered")
            && warnings[1].contains("cannot be created, on purpose"),
        "{stderr}"
    );
}

#[test]
fn a_layer_count_beyond_the_rows_folds_as_one_layer_per_row() {
    let dir = tempfile::tempdir().unwrap();
    let rows = rows(100_000, 3, true);
    write_parquet_files(&dir.path().join("in"), &rows, 2);
    let expected = reference_fold(&rows, rows.len(), "asc");
    for (mode, memory) in [
        ("asc", None),
        ("zigzag", Some("16M")),
        ("desc", Some("16M")),
    ] {
        let out = dir.path().join(format!("out-{mode}.parquet"));
        let mut extra = vec!["--threads", "2"];
        if let Some(limit) = memory {
            extra.extend(["--memory-limit", limit]);
        }
        run_sql(
            &[&format!(
                "COPY (SELECT id, score FROM '{}/' \
                 ORDER BY fold_order(score, 9223372036854775807, '{mode}')) TO '{}'",
                dir.path().join("in").display(),
                out.display()
            )],
            &extra,
        );
        let want = if mode == "desc" {
            reference_fold(&rows, rows.len(), "desc")
        } else {
            expected.clone()
        };
        assert_eq!(ids(&out), want, "{mode}");
    }
}
