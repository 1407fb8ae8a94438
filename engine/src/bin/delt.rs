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
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Does the curated order train a better model? Trains a small LM on every arm (an SQL
    /// ordering or selection of the corpus) with paired seeds and compares the losses.
    Efficacy(EfficacyArgs),
}

#[derive(clap::Args, Debug)]
struct EfficacyArgs {
    /// The corpus (Parquet, JSON lines, CSV; local or s3://); the arms see it as table
    /// `corpus`, minus a held-out slice.
    #[arg(long)]
    corpus: String,
    /// A small high-quality target set, same formats.
    #[arg(long)]
    target: String,
    /// SQL file of arms: every `CREATE VIEW name AS SELECT text FROM corpus ORDER BY ...` is
    /// one arm, trained in the view's row order; other statements (CREATE FUNCTION, CREATE
    /// TABLE) run first.
    #[arg(long, default_value = "sql/efficacy_arms.sql")]
    arms: PathBuf,
    /// Substitute VALUE for ${NAME} in the arms file (repeatable).
    #[arg(long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// Output directory: report.md, results.json, loss_curves.png, target_loss.png.
    #[arg(long)]
    out: PathBuf,
    /// Column with the text.
    #[arg(long, default_value = "text")]
    text_column: String,
    /// Paired seeds: each trains every arm from the same initialisation.
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// Share of the corpus held out for evaluation (no arm sees it).
    #[arg(long, default_value_t = 0.05)]
    heldout: f64,
    /// The arm paired differences are taken against (default: the first).
    #[arg(long)]
    baseline: Option<String>,
    #[command(flatten)]
    shape: ShapeArgs,
    /// A tokenizer.json to use instead of training a BPE tokenizer on the training corpus.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Documents are cut to this many tokens.
    #[arg(long, default_value_t = 128)]
    seq_len: usize,
    /// Training tokens per run (default: one pass over the training corpus); an arm with
    /// fewer tokens repeats its order, one with more is cut.
    #[arg(long)]
    tokens: Option<usize>,
    /// Where the models train: cpu, cuda, cuda:N, auto (cuda needs a build with
    /// `--features cuda`).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Documents per optimiser step.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Peak AdamW learning rate.
    #[arg(long, default_value_t = 3e-3)]
    lr: f64,
    /// Share of the steps spent warming up linearly to the peak.
    #[arg(long, default_value_t = 0.05)]
    warmup: f64,
    /// The cosine decay ends at lr times this.
    #[arg(long, default_value_t = 0.1)]
    min_lr_ratio: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    /// Evaluations of the target and held-out losses per run (the loss curves' points).
    #[arg(long, default_value_t = 20)]
    evals: usize,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Subcommand, Debug)]
enum LqsCommand {
    /// Label proxy documents with LQS (gamma and its parts) from a proxy LM's trajectory.
    Annotate(AnnotateArgs),
    /// Fit the data scorer (frozen encoder, mean pooling, ridge head) on annotated labels and
    /// write the scorer directory that lqs_score loads.
    Fit(FitArgs),
}

/// The shape of a small Llama-architecture LM that delt trains.
#[derive(clap::Args, Debug)]
struct ShapeArgs {
    /// Vocabulary of the byte-level BPE tokenizer trained on the texts.
    #[arg(long, default_value_t = 4096)]
    vocab_size: usize,
    /// Model width.
    #[arg(long, default_value_t = 128)]
    hidden: usize,
    /// Transformer blocks.
    #[arg(long, default_value_t = 2)]
    layers: usize,
    /// Attention heads.
    #[arg(long, default_value_t = 4)]
    heads: usize,
}

#[derive(clap::Args, Debug)]
struct AnnotateArgs {
    /// Proxy documents: a sample of the corpus (Parquet, JSON lines, CSV; local or s3://).
    #[arg(long)]
    proxy: String,
    /// A small high-quality target set, same formats.
    #[arg(long)]
    target: String,
    /// Output Parquet file: id, text, gamma, raw_gamma, quality, learnability, reliability, tokens.
    #[arg(long)]
    out: PathBuf,
    /// Column with the text.
    #[arg(long, default_value = "text")]
    text_column: String,
    /// Column with the document id (default: the row number).
    #[arg(long)]
    id_column: Option<String>,
    /// A tokenizer.json to use instead of training a byte-level BPE on the proxy texts.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Tokens kept per document.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    #[command(flatten)]
    shape: ShapeArgs,
    /// SGD steps T.
    #[arg(long, default_value_t = 100)]
    steps: usize,
    /// Score every N-th step.
    #[arg(long, default_value_t = 10)]
    interval: usize,
    /// Constant SGD learning rate.
    #[arg(long, default_value_t = 0.008)]
    lr: f64,
    /// Proxy documents per SGD step.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// SGD steps before the recorded trajectory (a proxy LM that has learned something).
    #[arg(long, default_value_t = 0)]
    warmup_steps: usize,
    /// Learning rate of the warm-up steps.
    #[arg(long, default_value_t = 0.5)]
    warmup_lr: f64,
    /// Seed of the initialisation and the batch order.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Start from a proxy LM saved by an earlier run (--save-model) instead of fresh weights;
    /// its tokenizer.json and shape are used (--hidden, --layers, --heads are ignored).
    #[arg(long)]
    init_model: Option<PathBuf>,
    /// Save the proxy LM at the end of the trajectory (theta_T) and its tokenizer here.
    #[arg(long)]
    save_model: Option<PathBuf>,
    /// Gradient passes run at once (default: all cores); the labels do not depend on it.
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(clap::Args, Debug)]
struct FitArgs {
    /// Labels written by `delt lqs annotate`.
    #[arg(long)]
    labels: PathBuf,
    /// A BERT-family encoder directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    encoder: PathBuf,
    /// The scorer directory to write.
    #[arg(long)]
    out: PathBuf,
    /// Tokens the encoder reads per document.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// Ridge strengths to try (comma-separated); the best validation Spearman wins.
    #[arg(long, default_value = "0.0001,0.001,0.01,0.1,1", value_delimiter = ',')]
    ridge: Vec<f64>,
    /// Share of documents held out for validation.
    #[arg(long, default_value_t = 0.1)]
    validation: f64,
    /// Seed of the validation split.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
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

/// How much of the memory that the process frees it keeps for its own reuse (glibc only).
#[derive(Clone, Copy)]
enum FreedMemory {
    /// Every buffer from the heap, kept: candle allocates a fresh buffer for every tensor op,
    /// and with glibc's defaults buffers above 32 MB (the proxy LM's logits are 33.5 MB) are
    /// mapped from the kernel and unmapped on free, so each op zero-faulted every page anew:
    /// a third of LQS annotation's CPU time was system time, and 3% with this.
    All,
    /// Buffers below 32 MB (glibc's largest threshold) from a heap that is never trimmed;
    /// larger ones stay mappings. By default glibc moves the threshold as the program runs
    /// and hands freed heap back, so decoding and compressing pages kept faulting in fresh
    /// memory: this gave 11% fewer page faults and about 0.5 s off the 10M-row fold. `All`
    /// runs that fold as fast in memory, but slower when it spills (`--memory-limit 1G`:
    /// 16.9 s against 15.4 s, mean of three runs).
    BelowMapThreshold,
}

/// Applies `policy` before any other thread starts; the heap then does not shrink until exit.
/// With `arenas`, glibc keeps at most that many heaps (arenas) instead of up to eight per
/// core: each heap reuses only the memory freed into it, and the output stage's blocking
/// threads (gathers, encoders, file writes, a dozen at once) each took a heap of its own, so
/// buffers freed by one were not reused by the next, which faulted in fresh memory. One heap
/// per worker thread took the 1M-row JSON lines fold (2 threads) from 435-557 MB at peak to
/// 360-445 MB and from 100-112K page faults to 83-93K; its median wall time went from 0.60 s
/// to 0.45 s in one set of 8 alternating runs, and moved less than the noise in another.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator(policy: FreedMemory, arenas: Option<usize>) {
    use std::ffi::c_int;
    // From glibc's <malloc.h>.
    const M_TRIM_THRESHOLD: c_int = -1;
    const M_MMAP_THRESHOLD: c_int = -3;
    const M_MMAP_MAX: c_int = -4;
    const M_ARENA_MAX: c_int = -8;
    unsafe extern "C" {
        fn mallopt(param: c_int, value: c_int) -> c_int;
    }
    // SAFETY: mallopt only sets allocator parameters; it runs before any other thread starts.
    unsafe {
        match policy {
            FreedMemory::All => mallopt(M_MMAP_MAX, 0),
            FreedMemory::BelowMapThreshold => mallopt(M_MMAP_THRESHOLD, 32 << 20),
        };
        mallopt(M_TRIM_THRESHOLD, c_int::MAX);
        if let Some(arenas) = arenas {
            mallopt(M_ARENA_MAX, arenas.clamp(1, c_int::MAX as usize) as c_int);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator(_policy: FreedMemory, _arenas: Option<usize>) {}

/// LQS annotation runs one gradient pass per core itself (`delt_models::annotate`). candle
/// would also spread each elementwise op over a pool of spinning threads of its own, which
/// then compete with those passes for the cores (the annotation took 1.5x as long): each op
/// runs on its pass's thread instead, unless the user set `CANDLE_NUM_THREADS`.
fn candle_ops_on_the_calling_thread() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: no other thread has started yet, so none reads the environment meanwhile.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
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
    match &cli.command {
        Command::Lqs { .. } | Command::Bench { .. } => tune_allocator(FreedMemory::All, None),
        Command::Plugins { .. } => tune_allocator(FreedMemory::BelowMapThreshold, None),
        // One heap per worker thread: as many as the runtime below starts.
        Command::Sql(args) => tune_allocator(
            FreedMemory::BelowMapThreshold,
            Some(
                args.threads
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            ),
        ),
    }
    if matches!(
        cli.command,
        Command::Lqs {
            command: LqsCommand::Annotate(_)
        }
    ) {
        candle_ops_on_the_calling_thread();
    }
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
        Command::Lqs {
            command: LqsCommand::Annotate(args),
        } => lqs_annotate(args),
        Command::Lqs {
            command: LqsCommand::Fit(args),
        } => lqs_fit(args),
        Command::Bench {
            command: BenchCommand::Efficacy(args),
        } => bench_efficacy(args),
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

fn small_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow!("cannot start the async runtime: {e}"))
}

fn lqs_annotate(args: AnnotateArgs) -> anyhow::Result<()> {
    use delt::lqs::{AnnotateJob, annotate_texts, read_texts, write_labels};
    let started = std::time::Instant::now();
    let ctx = DeltSession::new().build()?;
    let (proxy, target) = small_runtime()?.block_on(async {
        let id = args.id_column.as_deref();
        let proxy = read_texts(&ctx, &args.proxy, id, &args.text_column).await?;
        let target = read_texts(&ctx, &args.target, None, &args.text_column).await?;
        Ok::<_, delt::DeltError>((proxy, target))
    })?;
    let job = AnnotateJob {
        options: delt_models::annotate::AnnotateOptions {
            steps: args.steps,
            interval: args.interval,
            lr: args.lr,
            batch_size: args.batch_size,
            seed: args.seed,
            warmup_steps: args.warmup_steps,
            warmup_lr: args.warmup_lr,
            threads: args
                .threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        },
        max_tokens: args.max_tokens,
        tokenizer: args.tokenizer,
        vocab_size: args.shape.vocab_size,
        hidden: args.shape.hidden,
        layers: args.shape.layers,
        heads: args.shape.heads,
        init_model: args.init_model,
        save_model: args.save_model,
        progress: !args.quiet,
    };
    let annotated = annotate_texts(&proxy, &target, &job)?;
    let (labels, tokens, params) = (annotated.labels, annotated.tokens, annotated.parameters);
    write_labels(&args.out, &proxy, &labels, &tokens)?;
    let seconds = started.elapsed().as_secs_f64();
    let scored = args.steps.div_ceil(args.interval) + 1;
    eprintln!(
        "labelled {} proxy documents against {} target documents in {seconds:.1} s \
         (proxy LM {params} parameters, {} steps, {scored} gradient passes: {:.2} ms per document per pass) -> {}",
        labels.len(),
        target.texts.len(),
        args.steps,
        seconds * 1e3 / (labels.len() * scored) as f64,
        args.out.display()
    );
    let stages: Vec<String> = annotated
        .stage_seconds
        .iter()
        .map(|(stage, s)| format!("{stage} {s:.1} s"))
        .collect();
    eprintln!("time by stage: {}", stages.join(", "));
    Ok(())
}

fn lqs_fit(args: FitArgs) -> anyhow::Result<()> {
    use datafusion::arrow::array::AsArray;
    use delt::lqs::{FitJob, fit, read_texts};
    let ctx = DeltSession::new().build()?;
    let labels = args.labels.display().to_string();
    let (texts, gamma) = small_runtime()?.block_on(async {
        let texts = read_texts(&ctx, &labels, Some("id"), "text").await?;
        let gamma = ctx
            .sql(&format!("SELECT gamma FROM '{labels}'"))
            .await?
            .collect()
            .await?;
        Ok::<_, delt::DeltError>((texts, gamma))
    })?;
    let gamma: Vec<f64> = gamma
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                .values()
                .to_vec()
        })
        .collect();
    let job = FitJob {
        labels_path: &args.labels,
        encoder_dir: &args.encoder,
        out: &args.out,
        max_tokens: args.max_tokens,
        lambdas: &args.ridge,
        validation_fraction: args.validation,
        seed: args.seed,
        progress: !args.quiet,
    };
    let report = fit(&job, &texts.texts, &gamma)?;
    for (lambda, rho) in &report.validation {
        eprintln!("ridge {lambda:<8} validation Spearman {rho:+.4}");
    }
    let best = report
        .validation
        .iter()
        .find(|(l, _)| *l == report.lambda)
        .map_or(0.0, |(_, r)| *r);
    eprintln!(
        "scorer {} (ridge {}, validation Spearman {best:+.4}, {} fit / {} validation documents)",
        args.out.display(),
        report.lambda,
        report.split.0,
        report.split.1
    );
    Ok(())
}

fn bench_efficacy(args: EfficacyArgs) -> anyhow::Result<()> {
    use delt::efficacy::{EfficacyJob, ModelShape, read_inputs, run_experiment, write_outputs};
    let started = std::time::Instant::now();
    anyhow::ensure!(args.seeds > 0, "--seeds must be at least 1");
    let arms_sql = std::fs::read_to_string(&args.arms)
        .map_err(|e| anyhow!("cannot read the arms file {}: {e}", args.arms.display()))?;
    let job = EfficacyJob {
        corpus: args.corpus,
        target: args.target,
        text_column: args.text_column,
        arms_sql,
        arms_origin: args.arms.display().to_string(),
        params: delt::params::Params::parse(args.params.iter().map(String::as_str))?,
        heldout: args.heldout,
        tokens: args.tokens,
        seeds: (1..=args.seeds).collect(),
        shape: ModelShape {
            hidden: args.shape.hidden,
            layers: args.shape.layers,
            heads: args.shape.heads,
            vocab_size: args.shape.vocab_size,
            tokenizer: args.tokenizer,
            seq_len: args.seq_len,
            device: args.device.parse()?,
        },
        train: delt_models::train::TrainOptions {
            batch_size: args.batch_size,
            lr: args.lr,
            warmup_steps: 0,
            min_lr_ratio: args.min_lr_ratio,
            weight_decay: args.weight_decay,
            eval_every: 1,
        },
        evals: args.evals,
        warmup: args.warmup,
        baseline: args.baseline,
        progress: !args.quiet,
    };
    let ctx = DeltSession::new().build()?;
    let inputs = small_runtime()?.block_on(read_inputs(&ctx, &job))?;
    let prepared = started.elapsed().as_secs_f64();
    let (runs, parameters) = run_experiment(&inputs, &job)?;
    let seconds = started.elapsed().as_secs_f64();
    let command: Vec<String> = std::env::args().collect();
    let preamble = format!(
        "`{}`\n\n{} training / {} held-out / {} target documents; model {parameters} \
         parameters; wall time {seconds:.0} s ({prepared:.0} s reading and running the arms' SQL).",
        command.join(" "),
        inputs.corpus.len(),
        inputs.heldout.len(),
        inputs.target.len()
    );
    let table = write_outputs(&args.out, &job, &inputs, &runs, parameters, &preamble)?;
    println!("{table}");
    eprintln!(
        "{} runs in {seconds:.1} s -> {}",
        runs.len(),
        args.out.display()
    );
    Ok(())
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
