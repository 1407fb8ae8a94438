//! Test data, a handle on the `delt` binary, and readers for what it writes.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// One input row: the id identifies it in outputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: i64,
    pub score: Option<f64>,
    pub text: String,
}

/// `n` rows with ids 0..n, scores drawn from few distinct values (many ties), a few NULL
/// scores when `nulls`, and 50-300 bytes of text.
pub fn rows(n: usize, seed: u64, nulls: bool) -> Vec<Row> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state >> 33
    };
    (0..n as i64)
        .map(|id| {
            let r = next();
            let score = if nulls && r % 17 == 0 {
                None
            } else {
                Some((r % 23) as f64 / 4.0 - 2.0)
            };
            let len = 50 + (next() % 250) as usize;
            let text: String = (0..len)
                .map(|i| (b'a' + ((id as usize + i) % 26) as u8) as char)
                .collect();
            Row { id, score, text }
        })
        .collect()
}

/// The rows as one Arrow batch (id, score, text).
pub fn batch(rows: &[Row]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("score", DataType::Float64, true),
        Field::new("text", DataType::Utf8, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.id))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.score))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.text.as_str()),
        )),
    ];
    RecordBatch::try_new(schema, columns).unwrap()
}

/// Writes `rows` as `files` Parquet files `part-N.parquet` under `dir`, in order, with small
/// row groups so that files split into several scan ranges.
pub fn write_parquet_files(dir: &Path, rows: &[Row], files: usize) {
    write_parquet_row_groups(dir, rows, files, 4096);
}

/// [`write_parquet_files`] with row groups of `row_group_rows` rows.
pub fn write_parquet_row_groups(dir: &Path, rows: &[Row], files: usize, row_group_rows: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let per_file = rows.len().div_ceil(files.max(1)).max(1);
    let chunks: Vec<&[Row]> = if rows.is_empty() {
        vec![rows]
    } else {
        rows.chunks(per_file).collect()
    };
    for (i, chunk) in chunks.into_iter().enumerate() {
        let b = batch(chunk);
        let props = datafusion::parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(row_group_rows))
            .build();
        let mut writer = ArrowWriter::try_new(
            File::create(dir.join(format!("part-{i}.parquet"))).unwrap(),
            b.schema(),
            Some(props),
        )
        .unwrap();
        writer.write(&b).unwrap();
        writer.close().unwrap();
    }
}

/// Writes `rows` as JSON lines, the way the reference DELT tools do (NULL score: no field).
pub fn write_jsonl(path: &Path, rows: &[Row]) {
    let mut text = String::new();
    for r in rows {
        let mut object = serde_json::json!({"id": r.id, "text": r.text});
        if let Some(score) = r.score {
            object["score"] = serde_json::json!(score);
        }
        text.push_str(&object.to_string());
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

/// The `delt` binary, with a temporary directory of its own: a run removes the temporary
/// files of killed runs it finds there (and says so), which must not show in another test.
pub fn delt_command() -> Command {
    let tmp = tempfile::Builder::new()
        .prefix("delt-e2e-")
        .tempdir()
        .expect("a temporary directory")
        .keep();
    let mut command = Command::new(env!("CARGO_BIN_EXE_delt"));
    command.env("TMPDIR", tmp);
    command
}

/// Runs `delt` with `args` (quiet), returning its output.
pub fn delt(args: &[&str]) -> Output {
    delt_command()
        .args(args)
        .arg("--quiet")
        .output()
        .expect("run delt")
}

/// Runs `delt sql -c` for each statement; panics with stderr on failure.
pub fn run_sql(statements: &[&str], extra: &[&str]) -> Output {
    let mut args = vec!["sql"];
    for s in statements {
        args.push("-c");
        args.push(s);
    }
    args.extend_from_slice(extra);
    let out = delt(&args);
    assert!(
        out.status.success(),
        "delt failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `delt sql -c ...` expecting failure; returns stderr.
pub fn fail_sql(statements: &[&str]) -> String {
    let mut args = vec!["sql"];
    for s in statements {
        args.push("-c");
        args.push(s);
    }
    let out = delt(&args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "delt should have failed; stderr: {stderr}"
    );
    assert_eq!(out.status.code(), Some(1), "exit code; stderr: {stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{stderr}"
    );
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "one error line expected: {stderr}"
    );
    stderr
}

/// The names in `dir`, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The files making up an output: the file itself, or a directory's files in name order.
pub fn output_files(path: &Path) -> Vec<PathBuf> {
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    }
}

/// (id, score) of every output row, in output order; Parquet or JSON lines by extension.
pub fn read_output(path: &Path) -> Vec<(i64, Option<f64>)> {
    output_files(path)
        .iter()
        .flat_map(|f| read_file(f))
        .collect()
}

fn read_file(path: &Path) -> Vec<(i64, Option<f64>)> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("parquet") => {
            let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
                .unwrap()
                .build()
                .unwrap();
            reader.flat_map(|b| ids_and_scores(&b.unwrap())).collect()
        }
        Some("jsonl") | Some("json") => std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                (v["id"].as_i64().unwrap(), v["score"].as_f64())
            })
            .collect(),
        other => panic!("unexpected output file {path:?} ({other:?})"),
    }
}

/// (id, score) pairs of a batch with `id` and `score` columns.
pub fn ids_and_scores(batch: &RecordBatch) -> Vec<(i64, Option<f64>)> {
    let ids = batch
        .column_by_name("id")
        .unwrap()
        .as_primitive::<Int64Type>()
        .clone();
    let scores = datafusion::arrow::compute::cast(
        batch.column_by_name("score").unwrap(),
        &DataType::Float64,
    )
    .unwrap();
    let scores = scores.as_primitive::<Float64Type>();
    (0..batch.num_rows())
        .map(|i| (ids.value(i), scores.is_valid(i).then(|| scores.value(i))))
        .collect()
}

/// Output ids only.
pub fn ids(path: &Path) -> Vec<i64> {
    read_output(path).into_iter().map(|(id, _)| id).collect()
}

/// A path inside `dir` as a string for SQL.
pub fn p(dir: &Path, name: &str) -> String {
    dir.join(name).to_string_lossy().into_owned()
}

/// Reference folding, straight from the method note: stable ascending (or descending) sort by
/// score, ties in input order, layers `sorted[l::L]` concatenated, odd layers reversed for
/// zigzag; rows without a score after all layers, in input order.
pub fn reference_fold(rows: &[Row], layers: usize, mode: &str) -> Vec<i64> {
    let mut scored: Vec<&Row> = rows.iter().filter(|r| r.score.is_some()).collect();
    match mode {
        "desc" => scored.sort_by(|a, b| b.score.unwrap().total_cmp(&a.score.unwrap())),
        _ => scored.sort_by(|a, b| a.score.unwrap().total_cmp(&b.score.unwrap())),
    }
    let mut out = Vec::with_capacity(rows.len());
    for layer in 0..layers {
        let mut ids: Vec<i64> = scored
            .iter()
            .skip(layer)
            .step_by(layers)
            .map(|r| r.id)
            .collect();
        if mode == "zigzag" && layer % 2 == 1 {
            ids.reverse();
        }
        out.extend(ids);
    }
    out.extend(rows.iter().filter(|r| r.score.is_none()).map(|r| r.id));
    out
}

/// Reference top-k: stable ascending sort by score, keep the last k; NULL scores never kept.
/// Returns the kept ids in input order.
pub fn reference_top_k(rows: &[Row], k: usize) -> Vec<i64> {
    let mut scored: Vec<&Row> = rows.iter().filter(|r| r.score.is_some()).collect();
    scored.sort_by(|a, b| a.score.unwrap().total_cmp(&b.score.unwrap()));
    let kept: std::collections::HashSet<i64> = scored.iter().rev().take(k).map(|r| r.id).collect();
    rows.iter()
        .filter(|r| kept.contains(&r.id))
        .map(|r| r.id)
        .collect()
}

/// A local TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A Rust plugin library built by `cargo build --workspace`.
pub fn rust_plugin(name: &str) -> PathBuf {
    let path = repo().join(format!("target/debug/lib{name}.so"));
    assert!(
        path.exists(),
        "{} missing: run `cargo build --workspace` first (.ci/run does)",
        path.display()
    );
    path
}

/// (id, text) rows as JSON lines.
pub fn write_texts(path: &Path, texts: &[Option<&str>]) {
    let lines: Vec<String> = texts
        .iter()
        .enumerate()
        .map(|(id, t)| serde_json::json!({"id": id, "text": t}).to_string())
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// Column `column` of every line of a JSON lines file, as numbers.
pub fn scores_of(path: &Path, column: &str) -> Vec<Option<f64>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()[column].as_f64())
        .collect()
}

/// A model shape small enough for tests (`delt lqs annotate`, `delt bench efficacy`).
pub const TINY_LM: [&str; 8] = [
    "--vocab-size",
    "300",
    "--hidden",
    "16",
    "--layers",
    "1",
    "--heads",
    "2",
];

/// This host's name, as delt records it in the names of its temporary files.
pub fn host() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let name = name.trim().to_string();
    assert!(
        name.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'),
        "delt would rewrite the host name {name:?}"
    );
    name
}

/// When process `pid` started, in clock ticks after boot (field 22 of /proc/<pid>/stat).
pub fn start_time(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = stat.rsplit_once(')').unwrap().1;
    after_name
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap()
}

/// The pid of a process that has ended.
pub fn ended_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    child.wait().unwrap();
    child.id()
}
