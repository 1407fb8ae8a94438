//! `delt lqs annotate|fit`: label proxy documents with LQS, fit the data scorer.

use std::path::PathBuf;

use clap::Subcommand;

use super::allocator::{FreedMemory, tune_allocator};
use super::{Process, small_runtime};
use crate::DeltSession;

#[derive(Subcommand, Debug)]
pub enum LqsCommand {
    /// Label proxy documents with LQS (gamma and its parts) from a proxy LM's trajectory.
    Annotate(AnnotateArgs),
    /// Fit the data scorer (frozen encoder, mean pooling, ridge head) on annotated labels and
    /// write the scorer directory that lqs_score loads.
    Fit(FitArgs),
}

/// The shape of a small Llama-architecture LM that delt trains.
#[derive(clap::Args, Debug)]
pub struct ShapeArgs {
    /// Vocabulary of the byte-level BPE tokenizer trained on the texts.
    #[arg(long, default_value_t = 4096)]
    pub(super) vocab_size: usize,
    /// Model width.
    #[arg(long, default_value_t = 128)]
    pub(super) hidden: usize,
    /// Transformer blocks.
    #[arg(long, default_value_t = 2)]
    pub(super) layers: usize,
    /// Attention heads.
    #[arg(long, default_value_t = 4)]
    pub(super) heads: usize,
}

#[derive(clap::Args, Debug)]
pub struct AnnotateArgs {
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
pub struct FitArgs {
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

/// Runs `delt lqs <command>` in `process`.
pub(super) fn run(command: LqsCommand, process: Process) -> anyhow::Result<()> {
    if process == Process::Delt {
        tune_allocator(FreedMemory::All, None);
    }
    match command {
        LqsCommand::Annotate(args) => {
            if process == Process::Delt {
                candle_ops_on_the_calling_thread();
            }
            annotate(args)
        }
        LqsCommand::Fit(args) => fit(args),
    }
}

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

fn annotate(args: AnnotateArgs) -> anyhow::Result<()> {
    use crate::lqs::{AnnotateJob, annotate_texts, read_texts, write_labels};
    let started = std::time::Instant::now();
    let ctx = DeltSession::new().build()?;
    let (proxy, target) = small_runtime()?.block_on(async {
        let id = args.id_column.as_deref();
        let proxy = read_texts(&ctx, &args.proxy, id, &args.text_column).await?;
        let target = read_texts(&ctx, &args.target, None, &args.text_column).await?;
        Ok::<_, crate::DeltError>((proxy, target))
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

fn fit(args: FitArgs) -> anyhow::Result<()> {
    use crate::lqs::{FitJob, fit, read_texts};
    use datafusion::arrow::array::AsArray;
    let ctx = DeltSession::new().build()?;
    let labels = args.labels.display().to_string();
    let (texts, gamma) = small_runtime()?.block_on(async {
        let texts = read_texts(&ctx, &labels, Some("id"), "text").await?;
        let gamma = ctx
            .sql(&format!("SELECT gamma FROM '{labels}'"))
            .await?
            .collect()
            .await?;
        Ok::<_, crate::DeltError>((texts, gamma))
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
