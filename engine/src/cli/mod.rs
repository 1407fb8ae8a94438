//! The `delt` command line: one module per subcommand, each with its clap arguments and the
//! function that runs it; `bin/delt.rs` only parses and dispatches to [`run`].
//!
//! Owns: `sql` (`delt sql`), `plugins` (`delt plugins list|inspect`), `lqs` (`delt lqs
//! annotate|fit`), `bench` (`delt bench efficacy`), `cluster` (`delt cluster
//! scheduler|executor`), `allocator` (the process's heap
//! settings, applied before any thread starts) and `scratch` (the run's temporary files).
//! May import: every other module of the crate; nothing imports `cli`. Errors are `anyhow` here,
//! at the edge, and `DeltError` below it.

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
        Command::Lqs { command } => lqs::run(command),
        Command::Bench { command } => bench::run(command),
        Command::Cluster { command } => cluster::run(command),
        Command::PluginWorker(args) => plugins::serve(args),
    }
}

/// A runtime for the jobs that only read their inputs through the engine.
fn small_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow!("cannot start the async runtime: {e}"))
}
