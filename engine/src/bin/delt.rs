//! The `delt` command line: run SQL curation pipelines.

use std::process::ExitCode;

use anyhow::anyhow;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

use delt::plugin_host::{PluginLibrary, libraries_in};
use delt::runner::ResultFormat;
use delt::session::parse_size;
use delt::{DeltSession, Runner};

/// Curate language-model training data with SQL: score, select and order documents (DELT).
#[derive(Parser, Debug)]
#[command(name = "delt", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run SQL statements from files (-f) and the command line (-c), in the order given.
    Sql(SqlArgs),
    /// Show what scorer plugin libraries provide.
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
    },
}

#[derive(Subcommand, Debug)]
enum PluginsCommand {
    /// List the functions of the libraries in DELT_PLUGIN_PATH and given with --plugin.
    List {
        /// A plugin library (repeatable).
        #[arg(long = "plugin", value_name = "PATH")]
        plugins: Vec<PathBuf>,
    },
    /// Print everything one library declares: functions, types, options.
    Inspect {
        /// The plugin library.
        library: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
struct SqlArgs {
    /// A file of SQL statements to run (repeatable).
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    files: Vec<String>,

    /// SQL statements to run (repeatable).
    #[arg(short = 'c', long = "command", value_name = "SQL")]
    commands: Vec<String>,

    /// Substitute VALUE for ${NAME} in the SQL (repeatable).
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

    /// No progress line or summaries on stderr.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Format {
    Table,
    Csv,
    Json,
}

fn main() -> ExitCode {
    // Panics inside dependencies (decoders fed corrupt files) are caught per statement and
    // reported as one error line; the default hook would print a backtrace first.
    std::panic::set_hook(Box::new(|_| {}));
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let outcome = match cli.command {
        Command::Sql(args) => run_sql(
            args,
            matches.subcommand_matches("sql").expect("sql command"),
        ),
        Command::Plugins {
            command: PluginsCommand::List { plugins },
        } => list_plugins(&plugins),
        Command::Plugins {
            command: PluginsCommand::Inspect { library },
        } => inspect_plugin(&library),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Every delt error carries its causes in its own message.
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
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

fn run_sql(args: SqlArgs, matches: &ArgMatches) -> anyhow::Result<()> {
    let sources = sources(&args, matches)?;
    anyhow::ensure!(
        !sources.is_empty(),
        "nothing to run: pass -f FILE or -c SQL"
    );
    let params = delt::params::Params::parse(args.params.iter().map(String::as_str))?;
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
    for plugin in plugin_paths(&args.plugins) {
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
        let mut runner = Runner::new(session.build()?)
            .with_params(params)
            .with_format(format)
            .with_progress(!args.quiet);
        let run = async {
            for (origin, text) in &sources {
                runner.run_source(text, origin).await?;
            }
            Ok::<_, delt::DeltError>(())
        };
        tokio::select! {
            result = run => Ok(result?),
            _ = tokio::signal::ctrl_c() => {
                delt::output::remove_unfinished().await;
                anyhow::bail!("interrupted; unfinished output was not published")
            }
        }
    })
}

/// Libraries from DELT_PLUGIN_PATH, then the ones given explicitly.
fn plugin_paths(explicit: &[PathBuf]) -> Vec<PathBuf> {
    let mut paths = std::env::var("DELT_PLUGIN_PATH")
        .map(|list| libraries_in(&list))
        .unwrap_or_default();
    paths.extend(explicit.iter().cloned());
    paths
}

fn list_plugins(explicit: &[PathBuf]) -> anyhow::Result<()> {
    let paths = plugin_paths(explicit);
    anyhow::ensure!(
        !paths.is_empty(),
        "no plugins: pass --plugin PATH or set DELT_PLUGIN_PATH"
    );
    for path in paths {
        let library = PluginLibrary::load(&path)?;
        let manifest = library.manifest();
        println!(
            "{} ({} {})",
            path.display(),
            manifest.name,
            manifest.version
        );
        for function in &manifest.functions {
            println!("  {}  {}", signature(function), function.doc);
        }
    }
    Ok(())
}

fn inspect_plugin(path: &std::path::Path) -> anyhow::Result<()> {
    let library = PluginLibrary::load(path)?;
    let manifest = library.manifest();
    println!("library:  {}", path.display());
    println!("plugin:   {} {}", manifest.name, manifest.version);
    println!("abi:      {}", delt_plugin::ABI_VERSION);
    for function in &manifest.functions {
        println!("\n{}\n  {}", signature(function), function.doc);
        if function.options.is_empty() {
            println!("  options: none");
        }
        for (name, doc) in &function.options {
            println!("  option {name}: {doc}");
        }
    }
    Ok(())
}

fn signature(function: &delt_plugin::FunctionSpec) -> String {
    let args: Vec<String> = function
        .args
        .iter()
        .map(|a| a.data_type().to_string())
        .collect();
    format!(
        "{}({}) -> {}",
        function.name,
        args.join(", "),
        function.returns.data_type()
    )
}
