//! `delt sql --resume`: a scored fold over 20 input files, stopped by SIGKILL, SIGINT or
//! SIGTERM after some of its units, then resumed; the output must be byte for byte that of an
//! uninterrupted run, and a rerun whose parameters or inputs changed must be refused.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// Input files of a job.
const FILES: usize = 20;

/// A job over `FILES` Parquet files in `dir/in`: a scorer that sleeps `ms` per batch of 50
/// rows, then a fold of `${layers}` layers by score, into shards at `${out}`.
struct Job {
    dir: PathBuf,
    rows: Vec<Row>,
}

impl Job {
    fn new() -> (tempfile::TempDir, Self) {
        let dir = tempfile::tempdir().unwrap();
        let rows = rows(6000, 31, true);
        write_parquet_files(&dir.path().join("in"), &rows, FILES);
        let pipeline = format!(
            "CREATE FUNCTION slow_len(t VARCHAR) RETURNS DOUBLE LANGUAGE delt \
             AS '{}#slow?ms=${{ms}}&batch_size=50';\n\
             COPY (SELECT id, score, slow_len(text) AS n FROM '{}/' \
             ORDER BY fold_order(score, ${{layers}})) TO '${{out}}' STORED AS PARQUET \
             OPTIONS (rows_per_shard 1500);\n",
            rust_plugin("misbehaving").display(),
            p(dir.path(), "in")
        );
        std::fs::write(dir.path().join("pipeline.sql"), pipeline).unwrap();
        let job = Self {
            dir: dir.path().to_path_buf(),
            rows,
        };
        (dir, job)
    }

    /// `delt sql FLAGS -f pipeline.sql` with the parameters, in `dir`.
    fn command(&self, flags: &[&str], out: &str, ms: u32, layers: u32) -> std::process::Command {
        let mut command = delt_command();
        command
            .current_dir(&self.dir)
            .arg("sql")
            .args(flags)
            .args(["-f", "pipeline.sql"])
            .args(["--param", &format!("out={out}")])
            .args(["--param", &format!("ms={ms}")])
            .args(["--param", &format!("layers={layers}")]);
        command
    }

    fn run(&self, flags: &[&str], out: &str, ms: u32, layers: u32) -> Output {
        self.command(flags, out, ms, layers).output().unwrap()
    }

    /// Starts a slow `--resume` run into `out` and stops it with `signal` once at least three
    /// of its units are finished; returns what it printed.
    fn interrupt(&self, out: &str, signal: i32) -> Output {
        let mut child = self
            .command(&["--resume"], out, 60, 3)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_units(&mut child, &self.dir.join(format!("{out}.delt-job")), 3);
        // SAFETY: signals a child process of this test.
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
        child.wait_with_output().unwrap()
    }

    /// The rows in the order the scan reads the files: by path, so `part-10` before `part-2`.
    fn scan_order(&self) -> Vec<Row> {
        let per_file = self.rows.len().div_ceil(FILES);
        let mut files: Vec<usize> = (0..FILES).collect();
        files.sort_by_key(|i| format!("part-{i}.parquet"));
        files
            .into_iter()
            .flat_map(|i| self.rows.chunks(per_file).nth(i).unwrap().to_vec())
            .collect()
    }
}

/// Waits until `job/units` holds at least `units` unit files (the child must still run).
fn wait_for_units(child: &mut Child, job: &Path, units: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if unit_files(job).len() >= units {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
            panic!("the job ended ({status}) before {units} units were done: {stderr}");
        }
        assert!(Instant::now() < deadline, "no {units} units in {job:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The unit files of a job directory.
fn unit_files(job: &Path) -> Vec<String> {
    let units = job.join("units");
    if !units.exists() {
        return Vec::new();
    }
    names(&units)
        .into_iter()
        .filter(|n| n.ends_with(".parquet") && !n.starts_with('.'))
        .collect()
}

/// The bytes of each file of an output directory, in name order.
fn output_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    names(dir)
        .into_iter()
        .map(|name| {
            let bytes = std::fs::read(dir.join(&name)).unwrap();
            (name, bytes)
        })
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_killed_job_resumes_and_writes_the_bytes_of_an_uninterrupted_run() {
    let (_tmp, job) = Job::new();
    // Uninterrupted: with --resume (one go), and a plain run.
    let whole = job.run(&["--resume", "--quiet"], "whole", 0, 3);
    assert!(whole.status.success(), "{}", stderr(&whole));
    let plain = job.run(&["--quiet"], "plain", 0, 3);
    assert!(plain.status.success(), "{}", stderr(&plain));
    assert_eq!(
        ids(&job.dir.join("whole")),
        reference_fold(&job.scan_order(), 3, "asc")
    );
    assert!(!job.dir.join("whole.delt-job").exists());

    let killed = job.interrupt("out", libc::SIGKILL);
    assert_eq!(killed.status.signal(), Some(libc::SIGKILL));
    assert!(!job.dir.join("out").exists(), "nothing at the destination");
    let kept = unit_files(&job.dir.join("out.delt-job")).len();
    assert!((3..FILES).contains(&kept), "{kept} units kept");

    // A unit file cut short (as a power cut may leave it) is not taken as done.
    let first = job.dir.join("out.delt-job/units/00000000.parquet");
    let bytes = std::fs::read(&first).unwrap();
    std::fs::write(&first, &bytes[..bytes.len() / 2]).unwrap();

    let resumed = job.run(&["--resume"], "out", 60, 3);
    let text = stderr(&resumed);
    assert!(resumed.status.success(), "{text}");
    assert!(
        text.contains(
            "removed out.delt-job/units/00000000.parquet: not a whole unit file; its unit runs again"
        ) && text.contains(&format!(
            "job out.delt-job: resuming, {} of {FILES} units done before, {} to run",
            kept - 1,
            FILES - kept + 1
        )),
        "{text}"
    );
    let bytes = output_bytes(&job.dir.join("out"));
    assert_eq!(bytes.len(), 4, "6000 rows in shards of 1500");
    assert!(bytes == output_bytes(&job.dir.join("whole")));
    assert!(bytes == output_bytes(&job.dir.join("plain")));
    assert!(!job.dir.join("out.delt-job").exists(), "the job is removed");
}

#[test]
fn sigint_and_sigterm_keep_the_finished_units_and_say_how_to_resume() {
    let (_tmp, job) = Job::new();
    let whole = job.run(&["--resume", "--quiet"], "whole", 0, 3);
    assert!(whole.status.success(), "{}", stderr(&whole));
    for (signal, code, name, out) in [
        (libc::SIGINT, 130, "Ctrl-C (SIGINT)", "int"),
        (libc::SIGTERM, 143, "SIGTERM", "term"),
    ] {
        let stopped = job.interrupt(out, signal);
        let text = stderr(&stopped);
        assert_eq!(stopped.status.code(), Some(code), "{text}");
        assert!(!job.dir.join(out).exists(), "{name}: nothing published");
        let job_dir = job.dir.join(format!("{out}.delt-job"));
        // Consistent: the record, finished units and nothing half-written.
        assert_eq!(names(&job_dir), ["job.json", "units"], "{name}");
        let units = names(&job_dir.join("units"));
        assert!(
            units
                .iter()
                .all(|u| u.len() == 16 && u.ends_with(".parquet")),
            "{name}: {units:?}"
        );
        let kept = units.len();
        assert!(
            text.contains(&format!(
                "interrupted by {name}: stopped statement 2 of pipeline.sql"
            )) && text.contains(&format!(
                "{kept} of {FILES} units are kept in {out}.delt-job; to resume, run: "
            )),
            "{name}: {text}"
        );
        // The printed command resumes the job.
        let command = text
            .split("to resume, run: ")
            .nth(1)
            .unwrap()
            .lines()
            .next()
            .unwrap();
        let resumed = std::process::Command::new("/bin/sh")
            .current_dir(&job.dir)
            .args(["-c", command])
            .output()
            .unwrap();
        let text = stderr(&resumed);
        assert!(resumed.status.success(), "{name}: {text}");
        assert!(
            text.contains(&format!("resuming, {kept} of {FILES} units done before")),
            "{name}: {text}"
        );
        assert!(
            output_bytes(&job.dir.join(out)) == output_bytes(&job.dir.join("whole")),
            "{name}: resumed output differs"
        );
    }
}

#[test]
fn a_job_is_not_resumed_with_other_parameters_or_inputs() {
    let (_tmp, job) = Job::new();
    let killed = job.interrupt("out", libc::SIGKILL);
    assert_eq!(killed.status.signal(), Some(libc::SIGKILL));

    let refused = job.run(&["--resume", "--quiet"], "out", 60, 4);
    let text = stderr(&refused);
    assert_eq!(refused.status.code(), Some(1), "{text}");
    assert!(
        text.contains("cannot resume the job in out.delt-job: parameters changed (--param layers was '3' and is '4')")
            && text.contains("--restart"),
        "{text}"
    );
    assert_eq!(text.trim().lines().count(), 1, "{text}");
    assert!(!job.dir.join("out").exists());

    // A changed input file.
    let first = job.dir.join("in/part-0.parquet");
    write_parquet_files(&job.dir.join("changed"), &rows(10, 5, false), 1);
    std::fs::rename(job.dir.join("changed/part-0.parquet"), &first).unwrap();
    let refused = job.run(&["--resume", "--quiet"], "out", 60, 3);
    let text = stderr(&refused);
    assert_eq!(refused.status.code(), Some(1), "{text}");
    assert!(
        text.contains("input file") && text.contains("in/part-0.parquet changed"),
        "{text}"
    );

    // --restart starts over with what is there now.
    let restarted = job.run(&["--restart", "--quiet"], "out", 0, 4);
    assert!(restarted.status.success(), "{}", stderr(&restarted));
    let plain = job.run(&["--quiet"], "plain", 0, 4);
    assert!(plain.status.success(), "{}", stderr(&plain));
    assert!(output_bytes(&job.dir.join("out")) == output_bytes(&job.dir.join("plain")));
    assert!(!job.dir.join("out.delt-job").exists());
}

#[test]
fn every_stage_writes_the_same_bytes_with_and_without_resume() {
    let dir = tempfile::tempdir().unwrap();
    write_parquet_files(&dir.path().join("in"), &rows(3000, 32, true), 12);
    let input = p(dir.path(), "in/");
    let queries = [
        format!(
            "SELECT id, text, text_quality(text) AS q FROM '{input}' ORDER BY fold_order(text_quality(text), 4, 'zigzag')"
        ),
        format!("SELECT * FROM '{input}' ORDER BY fold_order(score, 3, 'desc')"),
        format!("SELECT id, score FROM '{input}' WHERE top_k(text_quality(text), 500)"),
        format!("SELECT id, score FROM '{input}' WHERE top_r(score, 0.3) AND id % 2 = 0"),
        format!("SELECT * FROM '{input}' ORDER BY shuffle_order(7)"),
        format!("SELECT id, text_quality(text) AS q FROM '{input}' WHERE id > 100"),
        format!("SELECT score, count(*) AS n FROM '{input}' GROUP BY score ORDER BY score"),
    ];
    let plugin = rust_plugin("text_quality");
    for (i, query) in queries.iter().enumerate() {
        for (flags, out) in [(&[][..], "plain"), (&["--resume"][..], "resumed")] {
            let out = delt_command()
                .args(["sql", "--quiet"])
                .args(flags)
                .arg("--plugin")
                .arg(&plugin)
                .args([
                    "-c",
                    &format!(
                        "COPY ({query}) TO '{}' STORED AS PARQUET OPTIONS (rows_per_shard 700)",
                        p(dir.path(), &format!("{out}{i}"))
                    ),
                ])
                .output()
                .unwrap();
            let text = stderr(&out);
            assert!(out.status.success() && text.is_empty(), "{query}: {text}");
        }
        let plain = output_bytes(&dir.path().join(format!("plain{i}")));
        assert!(!plain.is_empty());
        assert!(
            plain == output_bytes(&dir.path().join(format!("resumed{i}"))),
            "{query}: the outputs differ"
        );
    }
    assert_eq!(
        names(dir.path())
            .iter()
            .filter(|n| n.ends_with(".delt-job"))
            .count(),
        0
    );
}

/// A trainer export resumes too: killed after some units, resumed, it writes the bytes of a
/// plain export (tokenized in the final step, over the unit files in order).
#[test]
fn a_killed_export_resumes_to_the_bytes_of_a_plain_export() {
    let (_tmp, job) = Job::new();
    let texts: Vec<&str> = job.rows.iter().map(|r| r.text.as_str()).collect();
    let tokenizer = job.dir.join("tokenizer.json");
    delt_models::tokenizer::train_bpe(&texts, 200)
        .unwrap()
        .save(&tokenizer, false)
        .unwrap();
    let export = format!(
        "CREATE FUNCTION slow_len(t VARCHAR) RETURNS DOUBLE LANGUAGE delt \
         AS '{}#slow?ms=${{ms}}&batch_size=50';\n\
         COPY (SELECT id, text, slow_len(text) AS n FROM '{}/' ORDER BY fold_order(score, 3)) \
         TO '${{out}}/' STORED AS MEGATRON \
         OPTIONS (tokenizer '{}', eos_token '<pad>', shard_tokens 40000);\n",
        rust_plugin("misbehaving").display(),
        p(&job.dir, "in"),
        tokenizer.display()
    );
    std::fs::write(job.dir.join("export.sql"), export).unwrap();
    let command = |flags: &[&str], out: &str, ms: u32| {
        let mut command = delt_command();
        command
            .current_dir(&job.dir)
            .arg("sql")
            .args(flags)
            .args(["-f", "export.sql"])
            .args(["--param", &format!("out={out}")])
            .args(["--param", &format!("ms={ms}")]);
        command
    };
    let plain = command(&["--quiet"], "plain", 0).output().unwrap();
    assert!(plain.status.success(), "{}", stderr(&plain));
    let mut child = command(&["--resume"], "out", 60)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_units(&mut child, &job.dir.join("out.delt-job"), 3);
    // SAFETY: signals a child process of this test.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGKILL) }, 0);
    child.wait().unwrap();
    assert!(!job.dir.join("out").exists(), "nothing at the destination");
    let resumed = command(&["--resume"], "out", 60).output().unwrap();
    let text = stderr(&resumed);
    assert!(resumed.status.success(), "{text}");
    assert!(text.contains("job out.delt-job: resuming"), "{text}");
    let bytes = output_bytes(&job.dir.join("out"));
    assert!(bytes.len() >= 6, "several shards of .bin, .idx and sidecar");
    assert!(bytes == output_bytes(&job.dir.join("plain")));
}
