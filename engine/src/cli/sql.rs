//! `delt sql`: run SQL statements from files (`-f`) and the command line (`-c`), in order.

use anyhow::anyhow;
use clap::{ArgMatches, ValueEnum};
use std::path::PathBuf;
use std::sync::Arc;

use super::allocator::{FreedMemory, tune_allocator};
use super::plugins::found_plugins;
use super::scratch::ScratchDir;
use crate::plugins::isolation::Isolation;
use crate::sql::resume::{ResumeMode, interrupted_job};
use crate::sql::runner::ResultFormat;
use crate::sql::session::parse_size;
use crate::{DeltSession, Runner};

#[derive(clap::Args, Debug)]
pub struct SqlArgs {
    /// A file of SQL statements to run (repeatable).
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    files: Vec<String>,

    /// SQL statements to run (repeatable).
    #[arg(short = 'c', long = "command", value_name = "SQL")]
    commands: Vec<String>,

    /// Bind VALUE to ${NAME} in the SQL as a literal (repeatable).
    ///
    /// Inside a plain '...' string, ${NAME} takes any text, its quotes doubled so that it
    /// cannot end the string: LOCATION '${input}'. Outside quotes it takes only a number
    /// (optional sign, digits, optional fraction and exponent) or true/false:
    /// fold_order(score, ${layers}). ${NAME} in a comment is left alone; inside a
    /// double-quoted identifier or another kind of string (E'...', $$...$$) it is an error.
    /// Every placeholder needs a --param and every --param must be used by one of the -f and
    /// -c sources; all of them are checked before anything runs.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,

    /// How query results are printed.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,

    /// Memory for sorts and DELT buffers, e.g. 2G; beyond it they spill to disk.
    #[arg(long, value_name = "SIZE")]
    memory_limit: Option<String>,

    /// Worker threads and partitions (default: all cores).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,

    /// Rows per batch inside the engine.
    #[arg(long, value_name = "ROWS")]
    batch_size: Option<usize>,

    /// Load a scorer plugin library and register its functions (repeatable); libraries in
    /// the directories of DELT_PLUGIN_PATH are loaded too.
    #[arg(long = "plugin", value_name = "PATH")]
    plugins: Vec<PathBuf>,

    /// Where plugin functions run: `in-process` (fastest; a crashing plugin ends delt, with a
    /// line naming it) or `process` (each instance in a child process: a crash fails the
    /// query). `CREATE FUNCTION ... AS 'lib#f?isolation=...'` decides for its function.
    #[arg(long, value_name = "WHERE", default_value = "in-process")]
    plugin_isolation: Isolation,

    /// Run each COPY that reads one table in units, one per input file, kept in a job
    /// directory beside its destination (`<destination>.delt-job`): a run that stops (Ctrl-C,
    /// a crash, SIGKILL) is resumed by the same command, which skips the finished units. A
    /// rerun whose SQL, parameters or input files changed is refused.
    #[arg(long, conflicts_with = "cluster")]
    resume: bool,

    /// Run the queries on the cluster whose scheduler is at this address (see `delt cluster`);
    /// statements, output files and their order are the same as in a local run.
    #[arg(long, value_name = "df://HOST:PORT", env = "DELT_CLUSTER")]
    cluster: Option<String>,

    /// As --resume, but first discard the job directories of earlier runs and start over.
    #[arg(long, conflicts_with_all = ["resume", "cluster"])]
    restart: bool,

    /// No progress line or summaries on stderr.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// The SQL sources in command-line order: (origin, text).
fn sources(args: &SqlArgs, matches: &ArgMatches) -> anyhow::Result<Vec<(String, String)>> {
    let mut sources: Vec<(usize, String, String)> = Vec::new();
    for (path, index) in args
        .files
        .iter()
        .zip(matches.indices_of("files").into_iter().flatten())
    {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow!("cannot read SQL file {path}: {e}"))?;
        sources.push((index, path.clone(), text));
    }
    for (sql, index) in args
        .commands
        .iter()
        .zip(matches.indices_of("commands").into_iter().flatten())
    {
        sources.push((index, "-c".into(), sql.clone()));
    }
    sources.sort_by_key(|(index, _, _)| *index);
    Ok(sources
        .into_iter()
        .map(|(_, origin, text)| (origin, text))
        .collect())
}

/// Runs the sources of `args` in one session.
pub(super) fn run(args: SqlArgs, matches: &ArgMatches) -> anyhow::Result<()> {
    // One heap per worker thread: as many as the runtime below starts.
    tune_allocator(
        FreedMemory::BelowMapThreshold,
        Some(
            args.threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        ),
    );
    let sources = sources(&args, matches)?;
    anyhow::ensure!(
        !sources.is_empty(),
        "nothing to run: pass -f FILE or -c SQL"
    );
    let scratch = ScratchDir::create()?;
    let params = crate::sql::params::Params::parse(args.params.iter().map(String::as_str))?;
    params.check_sources(sources.iter().map(|(_, text)| text.as_str()))?;
    let mut session = DeltSession::new();
    if let Some(limit) = &args.memory_limit {
        session = session
            .with_memory_limit(parse_size(limit).map_err(|e| anyhow!("--memory-limit: {e}"))?);
    }
    if let Some(threads) = args.threads {
        session = session.with_threads(threads);
    }
    if let Some(rows) = args.batch_size {
        session = session.with_batch_size(rows);
    }
    session = session.with_plugin_isolation(args.plugin_isolation);
    for plugin in found_plugins() {
        session = session.with_found_plugin(plugin);
    }
    for plugin in &args.plugins {
        session = session.with_plugin(plugin);
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads.max(1));
    }
    let runtime = runtime
        .enable_all()
        .build()
        .map_err(|e| anyhow!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        let format = match args.format {
            Format::Table => ResultFormat::Table,
            Format::Csv => ResultFormat::Csv,
            Format::Json => ResultFormat::Json,
        };
        let ctx = match &args.cluster {
            Some(url) => crate::cluster::client::connect(&session, url).await?,
            None => session.build()?,
        };
        let mut runner = Runner::new(ctx)
            .with_params(params)
            .with_format(format)
            .with_progress(!args.quiet)
            .with_resume(match (args.resume, args.restart) {
                (_, true) => Some(ResumeMode::Restart),
                (true, false) => Some(ResumeMode::Resume),
                (false, false) => None,
            });
        if args.cluster.is_some() {
            let report = !args.quiet;
            let writer = crate::cluster::fold_copy::DistributedFold { report };
            runner = runner.with_copy_writer(Arc::new(writer));
        }
        let running = runner.running();
        let run = async {
            for (origin, text) in &sources {
                runner.run_source(text, origin).await?;
            }
            Ok::<_, crate::DeltError>(())
        };
        let signal = tokio::select! {
            result = run => return Ok(result?),
            signal = stop_signal() => signal?,
        };
        // The statement was dropped above; what it was writing is not published, its
        // temporary files go with the scratch directory. Exit at once: threads still inside a
        // plugin call or a blocking write would hold up a normal shutdown for as long as they
        // take, and they hold nothing that must be finished.
        crate::io::output::remove_unfinished().await;
        drop(scratch);
        let stopped = running.get().unwrap_or_else(|| "between statements".into());
        let next = match interrupted_job().await {
            Some(kept) => format!("{kept}; to resume, run: {}", resume_command()),
            None => "run the command again to start over".into(),
        };
        eprintln!(
            "interrupted by {}: stopped {stopped}; nothing was published and its temporary \
             files were removed; {next}",
            signal.name
        );
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        // SAFETY: ends the process without running destructors or atexit handlers, which
        // could call into a plugin that another thread is still inside.
        unsafe { libc::_exit(128 + signal.number) }
    })
}

/// This process's command line with `--restart` turned into `--resume`, quoted for a shell.
fn resume_command() -> String {
    std::env::args()
        .map(|arg| match arg.as_str() {
            "--restart" => "--resume".to_string(),
            _ => shell_quoted(&arg),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `text` as one word for a POSIX shell.
fn shell_quoted(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b));
    if plain {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// A signal that stops a run.
struct StopSignal {
    name: &'static str,
    number: i32,
}

/// Waits for Ctrl-C (SIGINT) or SIGTERM.
async fn stop_signal() -> anyhow::Result<StopSignal> {
    use tokio::signal::unix::{SignalKind, signal};
    let listen = |kind| signal(kind).map_err(|e| anyhow!("cannot listen for signals: {e}"));
    let (mut interrupt, mut terminate) = (
        listen(SignalKind::interrupt())?,
        listen(SignalKind::terminate())?,
    );
    Ok(tokio::select! {
        _ = interrupt.recv() => StopSignal { name: "Ctrl-C (SIGINT)", number: libc::SIGINT },
        _ = terminate.recv() => StopSignal { name: "SIGTERM", number: libc::SIGTERM },
    })
}
