//! Scorer plugins: real shared libraries (Rust and C), loaded through the CLI and through
//! CREATE FUNCTION, checked against direct calls through the ABI.
//!
//! The Rust plugins are workspace members built by `cargo build --workspace` (`.ci/run` does
//! it first); the C plugins are compiled here with the system C compiler.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, StringArray};
use datafusion::arrow::datatypes::{DataType, Float64Type};
use delt::plugins::host::PluginLibrary;

use crate::common::*;

/// Compiles a C file of the repository into a shared library in `dir`.
fn c_plugin(dir: &Path, source: &str) -> PathBuf {
    let out = dir.join(format!(
        "lib{}.so",
        Path::new(source).file_stem().unwrap().to_string_lossy()
    ));
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-I"])
        .arg(repo().join("plugins/sdk/include"))
        .arg(repo().join(source))
        .arg("-o")
        .arg(&out)
        .status()
        .expect("a C compiler (cc)");
    assert!(status.success(), "compiling {source}");
    out
}

/// Direct call through the ABI, in this process.
fn direct(
    library: &Path,
    function: &str,
    options: serde_json::Value,
    texts: &[Option<&str>],
) -> Vec<Option<f64>> {
    let library = PluginLibrary::load(library).unwrap();
    let options = options.as_object().unwrap().clone();
    let mut instance = library.instance(function, &options).unwrap();
    let args: Vec<ArrayRef> = vec![Arc::new(StringArray::from(texts.to_vec()))];
    let scores = instance
        .score(&args, texts.len(), &DataType::Float64)
        .unwrap();
    scores.as_primitive::<Float64Type>().iter().collect()
}

fn texts() -> Vec<Option<&'static str>> {
    vec![
        Some(
            "The history of the city is told in the stones of its old walls, and in the stories that the people who live there still tell.",
        ),
        Some("$$$ ### !!! click >>> http://x.y/z?=&& ### $$$"),
        None,
        Some("short"),
        Some(
            "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness.",
        ),
        Some(""),
        Some("aeiou xyz"),
    ]
}

#[test]
fn rust_plugin_via_flag_and_create_function_matches_direct_calls() {
    let dir = tempfile::tempdir().unwrap();
    let lib = rust_plugin("text_quality");
    let texts = texts();
    let input = dir.path().join("docs.jsonl");
    write_texts(&input, &texts);
    let (flag_out, created_out) = (
        dir.path().join("flag.jsonl"),
        dir.path().join("created.jsonl"),
    );
    let out = delt(&[
        "sql",
        "--plugin",
        lib.to_str().unwrap(),
        "-c",
        &format!(
            "COPY (SELECT id, text_quality(text) AS q FROM '{}') TO '{}'",
            input.display(),
            flag_out.display()
        ),
        "-c",
        &format!(
            "CREATE FUNCTION strict_quality(text VARCHAR) RETURNS DOUBLE LANGUAGE delt \
             AS '{}#text_quality?min_words=50&batch_size=2'",
            lib.display()
        ),
        "-c",
        &format!(
            "COPY (SELECT id, strict_quality(text) AS q FROM '{}') TO '{}'",
            input.display(),
            created_out.display()
        ),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let default = direct(&lib, "text_quality", serde_json::json!({}), &texts);
    let strict = direct(
        &lib,
        "text_quality",
        serde_json::json!({"min_words": 50}),
        &texts,
    );
    assert_eq!(scores_of(&flag_out, "q"), default);
    assert_eq!(scores_of(&created_out, "q"), strict);
    assert_ne!(default, strict, "the option changes the scores");
    assert_eq!(default[2], None, "NULL text, NULL score");
    assert!(
        default[0].unwrap() > 0.8 && default[1].unwrap() < 0.1,
        "{default:?}"
    );
}

#[test]
fn c_plugin_matches_an_independent_implementation() {
    let dir = tempfile::tempdir().unwrap();
    let lib = c_plugin(dir.path(), "examples/plugins/c/vowel_ratio.c");
    let texts = texts();
    let input = dir.path().join("docs.jsonl");
    write_texts(&input, &texts);
    let out_path = dir.path().join("out.jsonl");
    run_sql(
        &[
            &format!(
                "CREATE FUNCTION vowels(t VARCHAR) RETURNS DOUBLE LANGUAGE delt AS '{}'",
                lib.display()
            ),
            &format!(
                "COPY (SELECT id, vowels(text) AS v FROM '{}') TO '{}'",
                input.display(),
                out_path.display()
            ),
        ],
        &[],
    );
    let expected: Vec<Option<f64>> = texts
        .iter()
        .map(|t| {
            let letters: Vec<char> = (*t)?
                .chars()
                .filter(|c| c.is_ascii_alphabetic())
                .map(|c| c.to_ascii_lowercase())
                .collect();
            let vowels = letters.iter().filter(|c| "aeiou".contains(**c)).count();
            (!letters.is_empty()).then(|| vowels as f64 / letters.len() as f64)
        })
        .collect();
    assert_eq!(scores_of(&out_path, "v"), expected);
    assert_eq!(
        direct(&lib, "vowel_ratio", serde_json::json!({}), &texts),
        expected
    );
}

#[test]
fn plugin_scores_drive_filters_and_folding() {
    let dir = tempfile::tempdir().unwrap();
    let lib = rust_plugin("text_quality");
    let rows = rows(3000, 12, false);
    write_parquet_files(&dir.path().join("in"), &rows, 2);
    let (folded, filtered) = (
        dir.path().join("folded.parquet"),
        dir.path().join("filtered.parquet"),
    );
    run_sql(
        &[
            &format!(
                "COPY (SELECT id, text_bytes(text) AS score FROM '{}' ORDER BY fold_order(text_bytes(text), 3)) TO '{}'",
                p(dir.path(), "in/"),
                folded.display()
            ),
            &format!(
                "COPY (SELECT id, score FROM '{}' WHERE text_bytes(text) > 200) TO '{}'",
                p(dir.path(), "in/"),
                filtered.display()
            ),
        ],
        &["--plugin", lib.to_str().unwrap(), "--threads", "2"],
    );
    let by_length: Vec<Row> = rows
        .iter()
        .map(|r| Row {
            score: Some(r.text.len() as f64),
            ..r.clone()
        })
        .collect();
    assert_eq!(ids(&folded), reference_fold(&by_length, 3, "asc"));
    let long: Vec<i64> = rows
        .iter()
        .filter(|r| r.text.len() > 200)
        .map(|r| r.id)
        .collect();
    assert_eq!(ids(&filtered), long);
}

#[test]
fn plugins_list_and_inspect() {
    let lib = rust_plugin("text_quality");
    let delt = |args: &[&str]| delt_command().args(args).output().unwrap();
    let list = delt(&["plugins", "list", "--plugin", lib.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success());
    assert!(
        text.contains("text_quality(Utf8) -> Float64")
            && text.contains("text_bytes(Utf8View) -> Float64"),
        "{text}"
    );
    // DELT_PLUGIN_PATH: every library in the listed directories.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&lib, dir.path().join("libquality.so")).unwrap();
    let with_path = delt_command()
        .args([
            "sql",
            "--quiet",
            "--format",
            "csv",
            "-c",
            "SELECT text_bytes('four') AS n",
        ])
        .env("DELT_PLUGIN_PATH", dir.path())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&with_path.stdout),
        "n\n4.0\n",
        "{}",
        String::from_utf8_lossy(&with_path.stderr)
    );
    let inspect = delt(&["plugins", "inspect", lib.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        text.contains("option min_words:") && text.contains("abi:      1"),
        "{text}"
    );
}

fn fail_with_plugin(plugin: &Path, sql: &[&str]) -> String {
    let mut args = vec!["sql", "--plugin", plugin.to_str().unwrap()];
    for s in sql {
        args.extend(["-c", s]);
    }
    let out = delt(&args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // Functions a library could not create with default options are warned about first.
    let (warnings, errors): (Vec<&str>, Vec<&str>) = stderr
        .trim()
        .lines()
        .partition(|line| line.starts_with("warning: "));
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    assert!(
        warnings.iter().all(|w| w.contains("not registered")),
        "{stderr}"
    );
    errors[0].to_string()
}

#[test]
fn bad_libraries_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let e = fail_with_plugin(Path::new("/no/such/libscorer.so"), &["SELECT 1"]);
    assert!(e.contains("/no/such/libscorer.so: no such file"), "{e}");
    let libm = [
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/usr/lib/x86_64-linux-gnu/libm.so.6",
        "/lib64/libm.so.6",
        "/usr/lib/aarch64-linux-gnu/libm.so.6",
    ]
    .into_iter()
    .map(Path::new)
    .find(|p| p.exists())
    .expect("the system libm");
    let e = fail_with_plugin(libm, &["SELECT 1"]);
    assert!(
        e.contains("is not a delt plugin: it does not export delt_plugin_abi_version"),
        "{e}"
    );
    let future = c_plugin(dir.path(), "tests/fixtures/abi_mismatch.c");
    let e = fail_with_plugin(&future, &["SELECT 1"]);
    assert!(
        e.contains("built for delt plugin ABI 999, this delt speaks 1"),
        "{e}"
    );
}

#[test]
fn misbehaving_functions_become_sql_errors() {
    let lib = rust_plugin("misbehaving");
    let query =
        |function: &str| format!("SELECT {function}(column1) FROM (VALUES ('a'), ('boom'), ('c'))");
    let cases = [
        ("fail_on", "failed: cannot score 'boom'"),
        (
            "panic_on",
            "failed: plugin panicked: scorer exploded on 'boom'",
        ),
        ("short_on", "returned 2 values for 3 rows"),
        (
            "wrong_type",
            "returned Int64 values, its manifest promises Float64",
        ),
    ];
    for (function, expected) in cases {
        let e = fail_with_plugin(&lib, &[&query(function)]);
        assert!(
            e.contains(expected) && e.contains(function),
            "{function}: {e}"
        );
    }
    // The same functions behave where nothing triggers them.
    let ok = delt(&[
        "sql",
        "--plugin",
        lib.to_str().unwrap(),
        "--format",
        "csv",
        "-c",
        "SELECT fail_on('fine') AS n",
    ]);
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "n\n4.0\n");
    let e = fail_with_plugin(
        &lib,
        &[&format!(
            "CREATE FUNCTION f(t VARCHAR) RETURNS DOUBLE LANGUAGE delt AS '{}#fail_on?colour=red'",
            lib.display()
        )],
    );
    assert!(
        e.contains("unknown option 'colour' for fail_on (accepted: ms, on)"),
        "{e}"
    );
}

#[test]
fn malformed_plugin_arrays_blame_the_plugin_not_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let lib = c_plugin(dir.path(), "tests/fixtures/bad_arrays.c");
    let input = dir.path().join("docs.jsonl");
    write_texts(&input, &[Some("a"), Some("bb"), Some("ccc")]);
    for (function, reason) in [
        (
            "one_buffer",
            "Expected 1 buffers in array of type Float64, got 0",
        ),
        ("null_values", "The external buffer at position 1 is null"),
        ("null_count_lie", "null_count value (3) doesn't match"),
        ("wrong_length", "returned 4 values for 3 rows"),
    ] {
        let e = fail_with_plugin(
            &lib,
            &[&format!(
                "SELECT {function}(text) FROM '{}'",
                input.display()
            )],
        );
        // The statement is quoted first; what follows is the diagnosis.
        let (_, diagnosis) = e.split_once("Execution error: ").expect(&e);
        assert!(
            diagnosis.starts_with(&format!(
                "plugin {} function {function} returned",
                lib.display()
            )),
            "{function}: {e}"
        );
        assert!(diagnosis.contains(reason), "{function}: {e}");
        assert!(
            !diagnosis.contains("docs.jsonl"),
            "{function} blames the input: {e}"
        );
    }
}

/// The C header declares what the Rust SDK implements.
#[test]
fn c_header_agrees_with_the_sdk() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("layout");
    let status = Command::new("cc")
        .arg("-I")
        .arg(repo().join("plugins/sdk/include"))
        .arg(repo().join("tests/fixtures/header_layout.c"))
        .arg("-o")
        .arg(&exe)
        .status()
        .unwrap();
    assert!(status.success());
    let out = String::from_utf8(Command::new(&exe).output().unwrap().stdout).unwrap();
    let value = |key: &str| -> usize {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{key} ")))
            .unwrap()
            .parse()
            .unwrap()
    };
    use datafusion::arrow::ffi::{FFI_ArrowArray, FFI_ArrowSchema};
    assert_eq!(value("abi_version") as u32, delt_plugin::ABI_VERSION);
    assert_eq!(value("schema_size"), std::mem::size_of::<FFI_ArrowSchema>());
    assert_eq!(value("array_size"), std::mem::size_of::<FFI_ArrowArray>());
    // The release callback and private data close both structs, as the Arrow spec lays out.
    let word = std::mem::size_of::<usize>();
    assert_eq!(value("schema_release"), value("schema_size") - 2 * word);
    assert_eq!(value("array_release"), value("array_size") - 2 * word);
    assert_eq!(value("array_buffers"), 5 * 8);
}
