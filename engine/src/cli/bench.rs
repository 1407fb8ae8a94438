//! `delt bench efficacy`: does the curated order train a better model?

use std::path::PathBuf;

use anyhow::anyhow;
use clap::Subcommand;

use super::allocator::{FreedMemory, tune_allocator};
use super::lqs::ShapeArgs;
use super::{Process, small_runtime};
use crate::DeltSession;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Does the curated order train a better model? Trains a small LM on every arm (an SQL
    /// ordering or selection of the corpus) with paired seeds and compares the losses.
    Efficacy(EfficacyArgs),
}

#[derive(clap::Args, Debug)]
pub struct EfficacyArgs {
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
    /// Bind VALUE to ${NAME} in the arms file, as `delt sql --param` does (repeatable).
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

/// Runs `delt bench <command>` in `process`; the arms' `CREATE FUNCTION`s also look for
/// libraries in `plugin_dirs`.
pub(super) fn run(
    command: BenchCommand,
    process: Process,
    plugin_dirs: &[PathBuf],
) -> anyhow::Result<()> {
    if process == Process::Delt {
        tune_allocator(FreedMemory::All, None);
    }
    match command {
        BenchCommand::Efficacy(args) => efficacy(args, plugin_dirs),
    }
}

fn efficacy(args: EfficacyArgs, plugin_dirs: &[PathBuf]) -> anyhow::Result<()> {
    use crate::efficacy::{EfficacyJob, ModelShape, read_inputs, run_experiment, write_outputs};
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
        params: crate::sql::params::Params::parse(args.params.iter().map(String::as_str))?,
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
    let session = plugin_dirs.iter().fold(DeltSession::new(), |session, dir| {
        session.with_plugin_dir(dir)
    });
    let ctx = session.build()?;
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
