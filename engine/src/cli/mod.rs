//! The `delt` command line: one module per subcommand, each with its clap arguments and the
//! function that runs it; `bin/delt.rs` only parses and dispatches to [`run`].
//!
//! Owns: `sql` (`delt sql`), `plugins` (`delt plugins list|inspect`), `lqs` (`delt lqs
//! annotate|fit`), `bench` (`delt bench efficacy`), `cluster` (`delt cluster
//! scheduler|executor`), `allocator` (the process's heap
//! settings, applied before any thread starts) and `scratch` (the run's temporary files).
//! May import: every other module of the crate; nothing imports `cli`. Errors are `anyhow` here,
//! at the edge, and `DeltError` below it.

use std::path::PathBuf;

use anyhow::anyhow;
use clap::{ArgMatches, Parser, Subcommand};

mod allocator;
mod bench;
mod cluster;
mod lqs;
mod plugins;
mod scratch;
mod sql;

use bench::BenchCommand;
use cluster::ClusterCommand;
use lqs::LqsCommand;
use plugins::PluginsCommand;
use sql::SqlArgs;

/// Curate language-model training data with SQL: score, select and order documents (DELT).
#[derive(Parser, Debug)]
#[command(name = "delt", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run SQL statements from files (-f) and the command line (-c), in the order given.
    Sql(SqlArgs),
    /// Show what scorer plugin libraries provide.
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
    },
    /// Experiments around the pipeline.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Learnability-Quality Scoring: label proxy documents, fit the data scorer.
    Lqs {
        #[command(subcommand)]
        command: LqsCommand,
    },
    /// Run a cluster's scheduler or an executor (queries: delt sql --cluster df://HOST:PORT).
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Internal: one instance of a plugin function in its own process (isolation=process).
    #[command(name = "plugin-worker", hide = true)]
    PluginWorker(plugins::WorkerArgs),
}

/// Runs the parsed command line; `matches` are the arguments as clap matched them (`delt sql`
/// runs its `-f` and `-c` sources in the order given).
pub fn run(cli: Cli, matches: &ArgMatches) -> anyhow::Result<()> {
    match cli.command {
        Command::Sql(args) => sql::run(
            args,
            matches.subcommand_matches("sql").expect("sql command"),
        ),
        Command::Plugins { command } => plugins::run(command),
        Command::Lqs { command } => lqs::run(command, Process::Delt),
        Command::Bench { command } => bench::run(command, Process::Delt, &[]),
        Command::Cluster { command } => cluster::run(command),
        Command::PluginWorker(args) => plugins::serve(args),
    }
}

/// Runs a `delt lqs ...` or `delt bench ...` job from its command-line words without the
/// leading `delt` (`["lqs", "fit", "--labels", "labels.parquet", ...]`), with the options,
/// defaults and messages of the command line, for a program that embeds the library (the
/// Python module): its progress goes to the [`JobObserver`](crate::progress::JobObserver)
/// installed, if any, and the process's allocator and environment are left as they are.
/// `plugin_dirs` are where the job's `CREATE FUNCTION`s find libraries named without a path
/// (see [`DeltSession::with_plugin_dir`](crate::DeltSession::with_plugin_dir)). Other
/// commands are refused.
pub fn run_job<S: AsRef<str>>(words: &[S], plugin_dirs: &[PathBuf]) -> anyhow::Result<()> {
    let argv = std::iter::once("delt").chain(words.iter().map(AsRef::as_ref));
    match Cli::try_parse_from(argv)?.command {
        Command::Lqs { command } => lqs::run(command, Process::Embedded),
        Command::Bench { command } => bench::run(command, Process::Embedded, plugin_dirs),
        _ => Err(anyhow!(
            "not a delt job: {} (only `lqs ...` and `bench ...` are)",
            words
                .iter()
                .map(AsRef::as_ref)
                .collect::<Vec<_>>()
                .join(" ")
        )),
    }
}

/// The process a job runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Process {
    /// The `delt` command line, which owns the process: the job may tune the allocator and
    /// set environment variables before it starts threads.
    Delt,
    /// A program embedding the library: the process's settings are not the job's to change.
    Embedded,
}

/// A runtime for the jobs that only read their inputs through the engine.
fn small_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow!("cannot start the async runtime: {e}"))
}
