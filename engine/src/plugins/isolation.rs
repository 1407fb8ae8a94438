//! Plugin calls in a child process, so that a plugin that crashes fails a query, not delt.
//!
//! With `isolation=process` (`CREATE FUNCTION ... AS 'lib#f?isolation=process'`, or
//! `delt sql --plugin-isolation process` for every plugin function), each instance of a
//! function is a child process: the `delt` executable itself, run as `delt plugin-worker LIB
//! FUNCTION OPTIONS` ([`serve`]). The parent ([`ChildInstance`]) sends each batch of arguments
//! as an Arrow IPC stream over the child's stdin and reads the scores back from its stdout, in
//! frames of `[kind: u8][length: u64 LE][payload]`. The batches are copied through the pipes:
//! isolation costs that copy and a context switch per batch (docs/reliability.md has figures).
//!
//! When the child dies, the parent's read ends: the query fails with the library, the function,
//! the signal and the first text of the batch that was being scored, and the child is reaped.

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::common::exec_err;
use datafusion::error::{DataFusionError, Result};
use delt_plugin::Options;

use super::host::{Instance, PluginLibrary, check_scores};

/// Where a plugin function's instances run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Isolation {
    /// In delt's process: fastest; a crash in the plugin ends delt (with one line naming it).
    #[default]
    InProcess,
    /// Each instance in a child process: a crash fails the query.
    Process,
}

impl std::str::FromStr for Isolation {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "in-process" => Ok(Self::InProcess),
            "process" => Ok(Self::Process),
            other => Err(format!(
                "unknown plugin isolation '{other}': use 'process' or 'in-process'"
            )),
        }
    }
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(match self {
            Self::InProcess => "in-process",
            Self::Process => "process",
        })
    }
}

/// The child answered with scores (or the parent sent arguments).
const DATA: u8 = 1;
/// The child failed to create the instance or to score; the payload is the message.
const ERROR: u8 = 2;
/// The child created its instance and waits for batches.
const READY: u8 = 3;

/// The subcommand of the `delt` executable that serves one instance.
pub const WORKER_COMMAND: &str = "plugin-worker";

/// One instance of a plugin function, living in a child process.
pub struct ChildInstance {
    child: Child,
    to_child: BufWriter<ChildStdin>,
    from_child: BufReader<ChildStdout>,
    library: PathBuf,
    function: String,
}

impl ChildInstance {
    /// Starts a child that creates `function` of `library` with `options`.
    pub fn start(library: &Path, function: &str, options: &Options) -> Result<Self> {
        let failed = |e: io::Error| {
            DataFusionError::Execution(format!(
                "cannot start an isolated process for plugin {} function {function}: {e}",
                library.display()
            ))
        };
        let exe = std::env::current_exe().map_err(failed)?;
        let mut child = Command::new(exe)
            .arg(WORKER_COMMAND)
            .arg(library)
            .arg(function)
            .arg(serde_json::Value::Object(options.clone()).to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(failed)?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return exec_err!("the isolated process of {function} has no pipes");
        };
        let mut instance = Self {
            child,
            to_child: BufWriter::new(stdin),
            from_child: BufReader::new(stdout),
            library: library.to_path_buf(),
            function: function.to_string(),
        };
        match read_frame(&mut instance.from_child) {
            Ok((READY, _)) => Ok(instance),
            Ok((ERROR, message)) => {
                datafusion::common::plan_err!("{}", String::from_utf8_lossy(&message))
            }
            _ => Err(instance.crashed("starting")),
        }
    }

    /// Scores `args` (`rows` rows) in the child; checks the result as an in-process call does.
    pub fn score(
        &mut self,
        args: &[ArrayRef],
        rows: usize,
        returns: &DataType,
    ) -> Result<ArrayRef> {
        let who = format!(
            "plugin {} function {}",
            self.library.display(),
            self.function
        );
        let batch = arguments(args, rows)?;
        let sent = encode(&batch)
            .and_then(|bytes| write_frame(&mut self.to_child, DATA, &bytes).map_err(Into::into));
        let answer = match sent {
            Ok(()) => read_frame(&mut self.from_child),
            Err(_) => Err(io::ErrorKind::BrokenPipe.into()),
        };
        let (kind, payload) = match answer {
            Ok(answer) => answer,
            Err(_) => return Err(self.crashed(&describe_batch(args, rows))),
        };
        if kind == ERROR {
            // The child's message names the plugin and function already.
            return exec_err!("{}", String::from_utf8_lossy(&payload));
        }
        check_scores(&who, decode(&payload)?.column(0).clone(), rows, returns)
    }

    /// The error for a child that ended while doing `what`; reaps it.
    fn crashed(&mut self, what: &str) -> DataFusionError {
        let how = match self.child.wait() {
            Ok(status) => match status.signal() {
                Some(signal) => format!("was killed by {}", signal_name(signal)),
                None => format!("exited with {status}"),
            },
            Err(e) => format!("cannot be waited for ({e})"),
        };
        DataFusionError::Execution(format!(
            "plugin {} function {} crashed: its isolated process {how} while {what}; the query \
             stopped and delt cleaned up: fix the plugin or leave out that input",
            self.library.display(),
            self.function
        ))
    }
}

impl Drop for ChildInstance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The arguments as one batch: columns `arg0`, `arg1`, ...
fn arguments(args: &[ArrayRef], rows: usize) -> Result<RecordBatch> {
    let fields: Vec<Field> = args
        .iter()
        .enumerate()
        .map(|(i, a)| Field::new(format!("arg{i}"), a.data_type().clone(), true))
        .collect();
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        args.to_vec(),
        &options,
    )?)
}

/// "scoring N rows (the first text: '...')".
fn describe_batch(args: &[ArrayRef], rows: usize) -> String {
    let first = args
        .iter()
        .find_map(|a| {
            let text = datafusion::arrow::compute::cast(&a.slice(0, 1), &DataType::Utf8).ok()?;
            let text = text.as_string::<i32>();
            (!text.is_empty() && text.is_valid(0)).then(|| text.value(0).to_string())
        })
        .map(|t| {
            let cut: String = t.chars().take(60).collect();
            format!(" (its first text: '{cut}')")
        })
        .unwrap_or_default();
    format!("scoring a batch of {rows} rows{first}")
}

fn encode(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut writer = StreamWriter::try_new(&mut bytes, &batch.schema())?;
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    Ok(bytes)
}

fn decode(bytes: &[u8]) -> Result<RecordBatch> {
    let mut reader = StreamReader::try_new(bytes, None)?;
    match reader.next() {
        Some(batch) => Ok(batch?),
        None => exec_err!("an isolated plugin process sent an empty answer"),
    }
}

fn write_frame(to: &mut impl Write, kind: u8, payload: &[u8]) -> io::Result<()> {
    to.write_all(&[kind])?;
    to.write_all(&(payload.len() as u64).to_le_bytes())?;
    to.write_all(payload)?;
    to.flush()
}

fn read_frame(from: &mut impl Read) -> io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 9];
    from.read_exact(&mut head)?;
    let len = u64::from_le_bytes(head[1..].try_into().expect("8 bytes")) as usize;
    let mut payload = vec![0u8; len];
    from.read_exact(&mut payload)?;
    Ok((head[0], payload))
}

fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGABRT => "SIGABRT".into(),
        libc::SIGBUS => "SIGBUS".into(),
        libc::SIGILL => "SIGILL".into(),
        libc::SIGFPE => "SIGFPE".into(),
        libc::SIGKILL => "SIGKILL".into(),
        other => format!("signal {other}"),
    }
}

/// The child's side: creates the instance and scores the batches that come on stdin until it
/// closes; returns the process's exit status. Everything the plugin prints to stdout goes to
/// stderr: stdout carries the answers.
pub fn serve(library: &Path, function: &str, options_json: &str) -> i32 {
    // The parent reports a crash, in words that fit isolation.
    super::fatal_signal::stay_silent();
    // SAFETY: dup and dup2 on the standard descriptors, before any other thread starts.
    let answers = unsafe {
        let answers = libc::dup(1);
        if answers < 0 || libc::dup2(2, 1) < 0 {
            return 1;
        }
        answers
    };
    // SAFETY: `answers` is a descriptor this process owns and nothing else uses.
    let mut to_parent =
        BufWriter::new(unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(answers) });
    let mut from_parent = BufReader::new(io::stdin().lock());
    let created = serde_json::from_str::<Options>(options_json)
        .map_err(|e| format!("invalid options for {function}: {e}"))
        .and_then(|options| {
            let library = PluginLibrary::load(library).map_err(|e| e.to_string())?;
            let returns = library
                .function(function)
                .map_err(|e| e.to_string())?
                .returns
                .data_type();
            let instance = library
                .instance(function, &options)
                .map_err(|e| strip_prefix(&e))?;
            Ok((instance, returns))
        });
    let (mut instance, returns): (Instance, DataType) = match created {
        Ok(created) => created,
        Err(message) => {
            let _ = write_frame(&mut to_parent, ERROR, message.as_bytes());
            return 1;
        }
    };
    if write_frame(&mut to_parent, READY, &[]).is_err() {
        return 1;
    }
    while let Ok((_, payload)) = read_frame(&mut from_parent) {
        let scored = decode(&payload).and_then(|batch| {
            let scores = instance.score(batch.columns(), batch.num_rows(), &returns)?;
            let field = Field::new("score", scores.data_type().clone(), true);
            encode(&RecordBatch::try_new(
                Arc::new(Schema::new(vec![field])),
                vec![scores],
            )?)
        });
        let written = match scored {
            Ok(bytes) => write_frame(&mut to_parent, DATA, &bytes),
            Err(e) => write_frame(&mut to_parent, ERROR, strip_prefix(&e).as_bytes()),
        };
        if written.is_err() {
            return 1;
        }
    }
    0
}

/// An error's message without DataFusion's "Execution error: " prefix (the parent adds its own).
fn strip_prefix(error: &DataFusionError) -> String {
    match error {
        DataFusionError::Execution(message) | DataFusionError::Plan(message) => message.clone(),
        other => other.to_string(),
    }
}
